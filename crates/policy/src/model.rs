//! The policy file as written: serde types that keep each value's span, so every later check can
//! point at the exact text. Nothing here is interpreted; see `compile`.

use serde::Deserialize;
use toml::Spanned;

pub(crate) type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSpec {
    pub version: Spanned<i64>,
    #[serde(default)]
    pub defaults: Option<DefaultsSpec>,
    #[serde(default)]
    pub rule: Vec<Spanned<RuleSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DefaultsSpec {
    pub decision: Option<Text>,
    pub reason: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    pub id: Text,
    pub effect: Text,
    pub permissions: Spanned<Vec<Text>>,
    pub paths: Option<Spanned<Vec<Text>>>,
    pub hosts: Option<Spanned<Vec<Text>>>,
    pub names: Option<Spanned<Vec<Text>>>,
    pub reason: Option<Text>,
}
