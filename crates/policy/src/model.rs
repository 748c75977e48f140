//! The policy file as written: serde types that keep each value's span, so every later check can
//! point at the exact text. Nothing here is interpreted; see `compile`.
//!
//! A file is parsed once into a spanned TOML tree, then `[defaults]` and each `[[rule]]` are
//! deserialised on their own, so a mistake in one rule does not hide the mistakes in the others.

use crate::diagnostic::Source;
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub(crate) type Text = Spanned<String>;
pub(crate) type TextList = Spanned<Vec<Text>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DefaultsSpec {
    pub decision: Option<Text>,
    pub reason: Option<Text>,
    pub mode: Option<Text>,
    pub symlinks: Option<Text>,
    pub deny_message: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    pub id: Text,
    pub effect: Text,
    pub permissions: TextList,
    pub paths: Option<TextList>,
    pub hosts: Option<TextList>,
    pub names: Option<TextList>,
    pub reason: Option<Text>,
    pub when: Option<Spanned<WhenSpec>>,
    /// For `run`: the rule knowingly allows bare command names, which the script's PATH resolves.
    pub trusts_path: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WhenSpec {
    pub uids: Option<Spanned<Vec<Spanned<u32>>>>,
    pub gids: Option<Spanned<Vec<Spanned<u32>>>>,
    pub users: Option<TextList>,
    pub groups: Option<TextList>,
    pub executables: Option<TextList>,
    pub units: Option<TextList>,
}

/// One file, as far as it could be read.
#[derive(Debug, Default)]
pub(crate) struct FileSpec {
    pub version: Option<Spanned<i64>>,
    /// The broker versions this file may be served by (a semver requirement).
    pub requires: Option<Spanned<String>>,
    pub defaults: Option<(Range<usize>, DefaultsSpec)>,
    pub rules: Vec<Spanned<RuleSpec>>,
}

/// A located message, before it becomes a `Diagnostic`.
pub(crate) type Problem = (Range<usize>, String);

/// Reads a file into a [`FileSpec`], collecting every problem that can be found.
pub(crate) fn read(source: &Source) -> (FileSpec, Vec<Problem>) {
    let mut problems = Vec::new();
    let (root, syntax) = DeTable::parse_recoverable(&source.text);
    if !syntax.is_empty() {
        // A broken document cannot be trusted to mean anything: report, and read no further.
        for e in syntax {
            problems.push(toml_problem(source, &e));
        }
        return (FileSpec::default(), problems);
    }
    let mut spec = FileSpec::default();
    let root_span = root.span();
    for (key, value) in root.into_inner() {
        let span = value.span();
        match key.get_ref().as_ref() {
            "version" => match value.get_ref() {
                DeValue::Integer(_) => match deserialize::<i64>(source, value) {
                    Ok(v) => spec.version = Some(Spanned::new(span, v)),
                    Err(p) => problems.push(p),
                },
                _ => problems.push((span, "`version` must be the integer 1".to_owned())),
            },
            "requires" => match value.get_ref() {
                DeValue::String(text) => {
                    spec.requires = Some(Spanned::new(span, text.to_string()));
                }
                _ => problems.push((
                    span,
                    "`requires` must be a version requirement as a string, such as \">= 0.2\""
                        .to_owned(),
                )),
            },
            "defaults" => match deserialize::<DefaultsSpec>(source, value) {
                Ok(d) => spec.defaults = Some((key.span(), d)),
                Err(p) => problems.push(p),
            },
            "rule" => match value.into_inner() {
                DeValue::Array(rules) => {
                    for result in deserialize_rules(source, rules.into_iter().collect()) {
                        match result {
                            Ok(r) => spec.rules.push(r),
                            Err(p) => problems.push(p),
                        }
                    }
                }
                _ => problems.push((
                    span,
                    "`rule` must be an array of tables (`[[rule]]`)".to_owned(),
                )),
            },
            other => problems.push((
                key.span(),
                format!(
                    "unknown key `{other}` (expected `version`, `requires`, `defaults` or `rule`)"
                ),
            )),
        }
    }
    if spec.version.is_none() && !problems.iter().any(|(_, m)| m.contains("`version`")) {
        problems.push((
            root_span.start..root_span.start,
            "missing `version = 1` at the top of the file".to_owned(),
        ));
    }
    (spec, problems)
}

/// Rules are independent of each other: large files deserialise them on every core, in order.
fn deserialize_rules(
    source: &Source,
    rules: Vec<Spanned<DeValue<'_>>>,
) -> Vec<Result<Spanned<RuleSpec>, Problem>> {
    let one = |rule: Spanned<DeValue<'_>>| {
        let span = rule.span();
        deserialize::<RuleSpec>(source, rule).map(|r| Spanned::new(span, r))
    };
    if rules.len() < 4096 {
        return rules.into_iter().map(one).collect();
    }
    // Asked only for large files: on Linux it reads the cgroup's CPU quota from disk.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 {
        return rules.into_iter().map(one).collect();
    }
    let chunk = rules.len().div_ceil(threads);
    let mut chunks: Vec<Vec<Spanned<DeValue<'_>>>> = Vec::with_capacity(threads);
    let mut rest = rules;
    while rest.len() > chunk {
        let tail = rest.split_off(chunk);
        chunks.push(rest);
        rest = tail;
    }
    chunks.push(rest);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn deserialize<T: serde::de::DeserializeOwned>(
    source: &Source,
    value: Spanned<DeValue<'_>>,
) -> Result<T, Problem> {
    let span = value.span();
    T::deserialize(serde::de::IntoDeserializer::into_deserializer(value)).map_err(
        |e: toml::de::Error| {
            let at = e.span().unwrap_or(span);
            (at.clone(), describe(source, &at, e.message()))
        },
    )
}

fn toml_problem(source: &Source, e: &toml::de::Error) -> Problem {
    let at = e.span().unwrap_or(0..0);
    (at.clone(), describe(source, &at, e.message()))
}

/// A serde/TOML message, quoting the offending text when the message does not already.
fn describe(source: &Source, at: &Range<usize>, message: &str) -> String {
    let message = message.trim_end().to_owned();
    let excerpt = source.excerpt(at);
    if excerpt.is_empty() || message.contains(excerpt) {
        message
    } else {
        format!("{message} (at `{excerpt}`)")
    }
}
