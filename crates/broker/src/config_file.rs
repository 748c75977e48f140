//! The daemon's configuration file (`serve --config FILE`): the same settings as the command-line
//! flags, which override it. Validated entirely before anything is bound; a mistake is reported
//! as `file:line:column: message` and the daemon exits 64.

use permission_broker_policy::{Diagnostic, Severity, Source};
use serde::Deserialize;
use std::path::Path;
use toml::Spanned;

/// Everything the file may set. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub socket: Option<Spanned<String>>,
    /// Octal, as a string: `"0660"`.
    pub socket_mode: Option<Spanned<String>>,
    /// Group that owns the socket file (name).
    pub socket_group: Option<Spanned<String>>,
    pub policy: Option<Spanned<String>>,
    /// A file path, or `-` for stdout.
    pub decision_log: Option<Spanned<String>>,
    pub decision_log_max_wait: Option<Spanned<f64>>,
    /// See `serve --decision-log-group`.
    pub decision_log_group: Option<Spanned<String>>,
    /// See `serve --status-file`.
    pub status_file: Option<Spanned<String>>,
    /// `fdatasync` each commit before answering.
    pub decision_log_sync: Option<bool>,
    pub max_connections: Option<Spanned<usize>>,
    pub max_frame_bytes: Option<Spanned<usize>>,
    pub frame_timeout: Option<Spanned<f64>>,
    pub request_deadline: Option<Spanned<f64>>,
    pub blocking_threads: Option<Spanned<usize>>,
    pub max_connections_per_uid: Option<Spanned<usize>>,
    pub poll_interval: Option<Spanned<f64>>,
    pub watch: Option<bool>,
    /// `"watch"` or `"signal"` (see `serve --reload`).
    pub reload: Option<Spanned<String>>,
    /// `false` serves policy files others could change (see `serve --no-strict-modes`).
    pub strict_modes: Option<bool>,
    /// See `serve --metrics-listen`: `"127.0.0.1:9464"`.
    pub metrics_listen: Option<Spanned<String>>,
    /// Only peers with these uids (from the kernel) are served; others are disconnected.
    pub allowed_uids: Option<Vec<u32>>,
}

/// A configuration mistake, located.
pub fn error_at(source: &Source, span: &std::ops::Range<usize>, message: String) -> String {
    Diagnostic::at(source, span, Severity::Error, message).to_string()
}

/// Reads and parses `path`. Returns the keys that read well, the source (for locating later
/// checks) and a `file:line:column: message` for every key that did not: each key is read on its
/// own, so an unknown key or a wrong type hides none of the others, nor the checks of the values
/// that did read.
pub fn read(path: &Path) -> Result<(ConfigFile, Source, Vec<String>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read configuration: {e}", path.display()))?;
    let source = Source::new(path.display().to_string(), text);
    let (file, errors) = parse(&source)?;
    Ok((file, source, errors))
}

/// [`read`]'s parse, each key on its own: the keys that read well, and a located error for each
/// one that did not. `Err` only for a document that is not TOML.
fn parse(source: &Source) -> Result<(ConfigFile, Vec<String>), String> {
    use toml::de::{DeTable, DeValue};
    let located = |e: toml::de::Error| {
        let span = e.span().unwrap_or(0..0);
        error_at(source, &span, e.message().trim_end().to_owned())
    };
    let (root, syntax) = DeTable::parse_recoverable(&source.text);
    if !syntax.is_empty() {
        // A broken document cannot be trusted to mean anything past its first break.
        return Err(syntax
            .into_iter()
            .map(located)
            .collect::<Vec<_>>()
            .join("\n"));
    }
    let whole = root.span();
    let table = |entries: DeTable<'_>| {
        let value = Spanned::new(whole.clone(), DeValue::Table(entries));
        ConfigFile::deserialize(serde::de::IntoDeserializer::into_deserializer(value))
    };
    let mut good = DeTable::new();
    let mut errors = Vec::new();
    for (key, value) in root.into_inner() {
        let mut one = DeTable::new();
        one.insert(key.clone(), value.clone());
        match table(one) {
            Ok(_) => {
                good.insert(key, value);
            }
            Err(e) => errors.push(located(e)),
        }
    }
    let file = table(good).map_err(located)?;
    Ok((file, errors))
}
