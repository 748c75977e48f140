//! The settings `serve` runs with: command-line flags over the configuration file over
//! defaults, every value validated before anything is bound.

use crate::cli::{ServeArgs, parse_mode};
use crate::config_file;
use crate::daemon::server::Limits;
use permission_broker_protocol::DEFAULT_MAX_FRAME_BYTES;
use std::path::PathBuf;
use std::time::Duration;

/// Where `serve` listens unless told otherwise.
#[cfg(unix)]
pub const DEFAULT_SOCKET: &str = "/tmp/perm.sock";
/// Where `serve` listens unless told otherwise.
#[cfg(windows)]
pub const DEFAULT_SOCKET: &str = r"\\.\pipe\permission-broker";

/// The settings `serve` runs with: flags over the configuration file over defaults.
#[derive(Debug)]
pub struct Settings {
    pub socket: PathBuf,
    pub policy: PathBuf,
    pub socket_mode: u32,
    pub socket_group: Option<(String, u32)>,
    pub decision_log: Option<String>,
    pub decision_log_max_wait: f64,
    pub poll_interval: f64,
    pub watch: bool,
    pub limits: Limits,
    pub allowed_uids: Option<Vec<u32>>,
}

/// Merges flags, the configuration file and defaults, validating every value; the error is
/// ready to print (`file:line:column: message` for a value from the file).
pub fn merge(args: ServeArgs) -> Result<Settings, String> {
    let (file, source) = match &args.config {
        Some(path) => {
            let (file, source) = config_file::read(path)?;
            (file, Some(source))
        }
        None => (config_file::ConfigFile::default(), None),
    };
    // A value from the file that fails a check is reported at its place in the file.
    let at = |span: Option<std::ops::Range<usize>>, message: String| match (&source, span) {
        (Some(source), Some(span)) => config_file::error_at(source, &span, message),
        _ => message,
    };
    let pick_f64 = |flag: Option<f64>, file: &Option<toml::Spanned<f64>>, default: f64| match flag {
        Some(v) => (v, None),
        None => file
            .as_ref()
            .map_or((default, None), |v| (*v.get_ref(), Some(v.span()))),
    };
    let pick_usize =
        |flag: Option<usize>, file: &Option<toml::Spanned<usize>>, default: usize| match flag {
            Some(v) => (v, None),
            None => file
                .as_ref()
                .map_or((default, None), |v| (*v.get_ref(), Some(v.span()))),
        };
    let string = |flag: Option<String>, file: &Option<toml::Spanned<String>>| {
        flag.or_else(|| file.as_ref().map(|v| v.get_ref().clone()))
    };
    let socket = args
        .socket
        .or_else(|| file.socket.as_ref().map(|s| PathBuf::from(s.get_ref())))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let policy = args
        .policy
        .or_else(|| file.policy.as_ref().map(|s| PathBuf::from(s.get_ref())))
        .unwrap_or_else(|| PathBuf::from("/etc/permission-broker/policy.toml"));
    let socket_mode = match (args.socket_mode, &file.socket_mode) {
        (Some(mode), _) => mode,
        (None, Some(text)) => parse_mode(text.get_ref()).map_err(|e| at(Some(text.span()), e))?,
        (None, None) => 0o600,
    };
    let socket_group = match string(args.socket_group, &file.socket_group) {
        None => None,
        Some(name) => match group_id(&name) {
            Some(gid) => Some((name, gid)),
            None => {
                return Err(at(
                    file.socket_group.as_ref().map(|g| g.span()),
                    format!("unknown group `{name}`"),
                ));
            }
        },
    };
    let (max_frame_bytes, span) = pick_usize(
        args.max_frame_bytes,
        &file.max_frame_bytes,
        DEFAULT_MAX_FRAME_BYTES,
    );
    if max_frame_bytes < 256 {
        return Err(at(
            span,
            format!(
                "max_frame_bytes {max_frame_bytes} is too small for any real frame (at least 256)"
            ),
        ));
    }
    let (frame_timeout, span) = pick_f64(args.frame_timeout, &file.frame_timeout, 10.0);
    if !(frame_timeout.is_finite() && frame_timeout > 0.0) {
        return Err(at(
            span,
            format!("frame_timeout {frame_timeout} must be a positive number of seconds"),
        ));
    }
    let (max_connections, span) = pick_usize(args.max_connections, &file.max_connections, 16_384);
    if max_connections == 0 {
        return Err(at(span, "max_connections must be at least 1".to_owned()));
    }
    let (poll_interval, span) = pick_f64(args.poll_interval, &file.poll_interval, 5.0);
    if !(poll_interval.is_finite() && poll_interval >= 0.1) {
        return Err(at(
            span,
            format!("poll_interval {poll_interval} must be at least 0.1 seconds"),
        ));
    }
    let (decision_log_max_wait, span) =
        pick_f64(args.decision_log_max_wait, &file.decision_log_max_wait, 2.0);
    if !(decision_log_max_wait.is_finite() && decision_log_max_wait > 0.0) {
        return Err(at(
            span,
            format!(
                "decision_log_max_wait {decision_log_max_wait} must be a positive number of seconds"
            ),
        ));
    }
    Ok(Settings {
        socket,
        policy,
        socket_mode,
        socket_group,
        decision_log: string(args.decision_log, &file.decision_log),
        decision_log_max_wait,
        poll_interval,
        watch: !args.no_watch && file.watch.unwrap_or(true),
        limits: Limits {
            max_frame_bytes,
            frame_timeout: Duration::from_secs_f64(frame_timeout),
            max_connections,
        },
        allowed_uids: args.allowed_uids.or(file.allowed_uids),
    })
}

#[cfg(unix)]
fn group_id(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

#[cfg(not(unix))]
fn group_id(_: &str) -> Option<u32> {
    None
}
