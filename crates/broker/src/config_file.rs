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
    /// Only peers with these uids (from the kernel) are served; others are disconnected.
    pub allowed_uids: Option<Vec<u32>>,
}

/// A configuration mistake, located.
pub fn error_at(source: &Source, span: &std::ops::Range<usize>, message: String) -> String {
    Diagnostic::at(source, span, Severity::Error, message).to_string()
}

/// Reads and parses `path`. Returns the parsed file and its source (for locating later checks).
pub fn read(path: &Path) -> Result<(ConfigFile, Source), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read configuration: {e}", path.display()))?;
    let source = Source::new(path.display().to_string(), text);
    let file: ConfigFile = toml::from_str(&source.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        error_at(&source, &span, e.message().trim_end().to_owned())
    })?;
    Ok((file, source))
}
