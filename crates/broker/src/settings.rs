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

/// Bounds of the numeric settings (a value outside them stops `serve` with exit 64). Wide enough for any real deployment, narrow enough that no arithmetic on them can
/// overflow: `Duration::from_secs_f64` panics on huge or NaN seconds, tokio's semaphore on more
/// than `usize::MAX >> 3` permits, and a frame buffer one byte longer than the limit is allocated.
/// Seconds a peer may take to finish a frame it has started.
pub const FRAME_TIMEOUT: std::ops::RangeInclusive<f64> = 0.001..=3600.0;
/// Seconds between revision checks of the policy files.
pub const POLL_INTERVAL: std::ops::RangeInclusive<f64> = 0.1..=86_400.0;
/// Seconds a decision may wait for room in the decision log's queue.
pub const DECISION_LOG_MAX_WAIT: std::ops::RangeInclusive<f64> = 0.001..=3600.0;
/// Connections served at once.
pub const MAX_CONNECTIONS: std::ops::RangeInclusive<usize> = 1..=1_000_000;
/// Seconds one decision may take before it is denied and its lookup abandoned.
pub const REQUEST_DEADLINE: std::ops::RangeInclusive<f64> = 0.001..=3600.0;
/// Decisions that may block at once.
pub const BLOCKING_THREADS: std::ops::RangeInclusive<usize> = 1..=4096;
/// Longest request line, in bytes.
pub const MAX_FRAME_BYTES: std::ops::RangeInclusive<usize> = 256..=16 * 1024 * 1024;

/// The settings `serve` runs with: flags over the configuration file over defaults.
#[derive(Debug)]
pub struct Settings {
    pub socket: PathBuf,
    pub policy: PathBuf,
    /// The socket file's mode and group (a named pipe has neither).
    #[cfg_attr(not(unix), expect(dead_code, reason = "a socket file's, Unix-only"))]
    pub socket_mode: u32,
    #[cfg_attr(not(unix), expect(dead_code, reason = "a socket file's, Unix-only"))]
    pub socket_group: Option<(String, u32)>,
    pub decision_log: Option<String>,
    pub decision_log_max_wait: f64,
    /// `fdatasync` every commit of the decision log before answering.
    pub decision_log_sync: bool,
    /// The group the decision log file is given (name, gid).
    pub decision_log_group: Option<(String, u32)>,
    /// Where what is serving and the last reload's outcome are kept.
    pub status_file: Option<PathBuf>,
    pub poll_interval: f64,
    pub watch: bool,
    /// When a changed policy is served.
    pub reload: crate::cli::ReloadMode,
    /// Refuse policy files that others than root and the daemon's user could change.
    pub strict_modes: bool,
    pub limits: Limits,
    pub allowed_uids: Option<Vec<u32>>,
    pub request_deadline: Duration,
    pub blocking_threads: usize,
    /// Where metrics are served over HTTP (unless the service manager passes a socket).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `max_connections` was given (a flag or the file), not the default.
    pub connections_asked: bool,
    /// `max_connections_per_uid` was given, not derived from `max_connections`.
    pub per_uid_asked: bool,
}

impl Settings {
    /// Fits the connection limits to `holds`, the connections the open-file limit leaves room
    /// for. Limits someone asked for are kept (and warned about); defaults are lowered quietly.
    pub fn fit_connections(&mut self, holds: usize) {
        let limits = &mut self.limits;
        if holds >= limits.max_connections {
            return;
        }
        if self.connections_asked {
            tracing::warn!(
                max_connections = limits.max_connections,
                holds,
                "the open-file limit holds only about {holds} connections (each needs a socket and a /proc handle); raise LimitNOFILE / ulimit -n or lower max_connections"
            );
            return;
        }
        let holds = holds.max(1);
        tracing::debug!(
            max_connections = holds,
            default = limits.max_connections,
            "max_connections fitted to the open-file limit"
        );
        limits.max_connections = holds;
        limits.max_connections_per_uid = if self.per_uid_asked {
            limits.max_connections_per_uid.min(holds)
        } else {
            (holds / 4).max(1)
        };
    }
}

/// Merges flags, the configuration file and defaults, validating every value; the error is
/// ready to print (`file:line:column: message` for a value from the file).
pub fn merge(args: ServeArgs) -> Result<Settings, String> {
    // Every mistake is reported, not only the first: a key that does not read is left out and
    // reported, and a value that fails a check is kept (never used: merge fails) so that the
    // checks after it still run.
    let (file, source, mut errors) = match &args.config {
        Some(path) => {
            let (file, source, errors) = config_file::read(path)?;
            (file, Some(source), errors)
        }
        None => (config_file::ConfigFile::default(), None, Vec::new()),
    };
    // A value from the file that fails a check is reported at its place in the file.
    let at = |span: Option<std::ops::Range<usize>>, message: String| match (&source, span) {
        (Some(source), Some(span)) => config_file::error_at(source, &span, message),
        _ => message,
    };
    // Where a value came from: a flag (named `--flag`) or the file (named `key`, located).
    let pick_f64 = |flag: Option<f64>, file: &Option<toml::Spanned<f64>>, default: f64| match flag {
        Some(v) => (v, Origin::Flag),
        None => file.as_ref().map_or((default, Origin::Default), |v| {
            (*v.get_ref(), Origin::File(v.span()))
        }),
    };
    let pick_usize =
        |flag: Option<usize>, file: &Option<toml::Spanned<usize>>, default: usize| match flag {
            Some(v) => (v, Origin::Flag),
            None => file.as_ref().map_or((default, Origin::Default), |v| {
                (*v.get_ref(), Origin::File(v.span()))
            }),
        };
    // An out-of-range value is reported under the name it was given by, at its place in the file.
    let out_of_range = |key: &str, origin: Origin, message: String| match origin {
        Origin::Flag => format!("--{} {message}", key.replace('_', "-")),
        Origin::File(span) => at(Some(span), format!("{key} {message}")),
        Origin::Default => format!("{key} {message}"),
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
        (None, Some(text)) => parse_mode(text.get_ref()).unwrap_or_else(|e| {
            errors.push(at(Some(text.span()), e));
            0o600
        }),
        (None, None) => 0o600,
    };
    let socket_group = match string(args.socket_group, &file.socket_group) {
        None => None,
        Some(name) => match group_id(&name) {
            Some(gid) => Some((name, gid)),
            None => {
                errors.push(at(
                    file.socket_group.as_ref().map(|g| g.span()),
                    format!("unknown group `{name}`"),
                ));
                None
            }
        },
    };
    let decision_log_group = match string(args.decision_log_group, &file.decision_log_group) {
        None => None,
        Some(name) => match group_id(&name) {
            Some(gid) => Some((name, gid)),
            None => {
                errors.push(at(
                    file.decision_log_group.as_ref().map(|g| g.span()),
                    format!("unknown group `{name}` (decision_log_group)"),
                ));
                None
            }
        },
    };
    let (max_frame_bytes, origin) = pick_usize(
        args.max_frame_bytes,
        &file.max_frame_bytes,
        DEFAULT_MAX_FRAME_BYTES,
    );
    if !MAX_FRAME_BYTES.contains(&max_frame_bytes) {
        errors.push(out_of_range(
            "max_frame_bytes",
            origin,
            format!(
                "{max_frame_bytes} must be at least {} (the shortest real frame) and at most {} (16 MiB)",
                MAX_FRAME_BYTES.start(),
                MAX_FRAME_BYTES.end()
            ),
        ));
    }
    let (frame_timeout, origin) = pick_f64(args.frame_timeout, &file.frame_timeout, 10.0);
    if !FRAME_TIMEOUT.contains(&frame_timeout) {
        errors.push(out_of_range(
            "frame_timeout",
            origin,
            format!(
                "{} must be a positive number of seconds, at least {} and at most {}",
                number(frame_timeout),
                FRAME_TIMEOUT.start(),
                FRAME_TIMEOUT.end()
            ),
        ));
    }
    // An empty path names no file: the daemon would serve with no status file, and `reload`
    // could never learn an outcome.
    if let Some(text) = &file.status_file
        && args.status_file.is_none()
        && text.get_ref().is_empty()
    {
        errors.push(at(
            Some(text.span()),
            "status_file is empty; give a path or leave it out".to_owned(),
        ));
    }
    if args
        .status_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        errors.push("--status-file is empty; give a path or leave it out".to_owned());
    }
    let (max_connections, origin) = pick_usize(args.max_connections, &file.max_connections, 16_384);
    let connections_asked = !matches!(origin, Origin::Default);
    if !MAX_CONNECTIONS.contains(&max_connections) {
        errors.push(out_of_range(
            "max_connections",
            origin,
            format!(
                "must be at least {} and at most {}, not {max_connections}",
                MAX_CONNECTIONS.start(),
                MAX_CONNECTIONS.end()
            ),
        ));
    }
    let (poll_interval, origin) = pick_f64(args.poll_interval, &file.poll_interval, 5.0);
    if !POLL_INTERVAL.contains(&poll_interval) {
        errors.push(out_of_range(
            "poll_interval",
            origin,
            format!(
                "{} must be at least {} seconds and at most {}",
                number(poll_interval),
                POLL_INTERVAL.start(),
                POLL_INTERVAL.end()
            ),
        ));
    }
    let (decision_log_max_wait, origin) =
        pick_f64(args.decision_log_max_wait, &file.decision_log_max_wait, 2.0);
    if !DECISION_LOG_MAX_WAIT.contains(&decision_log_max_wait) {
        errors.push(out_of_range(
            "decision_log_max_wait",
            origin,
            format!(
                "{} must be a positive number of seconds, at least {} and at most {}",
                number(decision_log_max_wait),
                DECISION_LOG_MAX_WAIT.start(),
                DECISION_LOG_MAX_WAIT.end()
            ),
        ));
    }
    let (request_deadline, origin) = pick_f64(args.request_deadline, &file.request_deadline, 5.0);
    if !REQUEST_DEADLINE.contains(&request_deadline) {
        errors.push(out_of_range(
            "request_deadline",
            origin,
            format!(
                "{} must be a positive number of seconds, at least {} and at most {}",
                number(request_deadline),
                REQUEST_DEADLINE.start(),
                REQUEST_DEADLINE.end()
            ),
        ));
    }
    let (blocking_threads, origin) = pick_usize(args.blocking_threads, &file.blocking_threads, 64);
    if !BLOCKING_THREADS.contains(&blocking_threads) {
        errors.push(out_of_range(
            "blocking_threads",
            origin,
            format!(
                "must be at least {} and at most {}, not {blocking_threads}",
                BLOCKING_THREADS.start(),
                BLOCKING_THREADS.end()
            ),
        ));
    }
    // A quarter of all connections by default: one user (or one runaway service) cannot lock
    // out the rest, and three more of its size still fit.
    let (max_connections_per_uid, origin) = pick_usize(
        args.max_connections_per_uid,
        &file.max_connections_per_uid,
        (max_connections / 4).max(1),
    );
    let per_uid_asked = !matches!(origin, Origin::Default);
    if !(1..=max_connections).contains(&max_connections_per_uid) {
        errors.push(out_of_range(
            "max_connections_per_uid",
            origin,
            format!(
                "must be at least 1 and at most max_connections ({max_connections}), not {max_connections_per_uid}"
            ),
        ));
    }
    // A configuration file in the policy directory is read as a policy drop-in (`*.toml`):
    // the layout an operator would write first must fail with the reason, not `unknown key`.
    if let Some(config) = &args.config
        && policy.is_dir()
        && let (Ok(config), Ok(dir)) = (
            std::fs::canonicalize(config),
            std::fs::canonicalize(&policy),
        )
        && config.starts_with(&dir)
    {
        errors.push(format!(
            "the configuration file `{}` is inside the policy directory `{}`, where every `*.toml` is read as policy; keep it outside (such as /etc/permission-broker.toml)",
            config.display(),
            dir.display()
        ));
    }
    let reload = match (args.reload, &file.reload) {
        (Some(mode), _) => mode,
        (None, None) => crate::cli::ReloadMode::Watch,
        (None, Some(text)) => match text.get_ref().as_str() {
            "watch" => crate::cli::ReloadMode::Watch,
            "signal" => crate::cli::ReloadMode::Signal,
            other => {
                errors.push(at(
                    Some(text.span()),
                    format!("reload `{other}` is not \"watch\" or \"signal\""),
                ));
                crate::cli::ReloadMode::Watch
            }
        },
    };
    let metrics_listen = match (args.metrics_listen, &file.metrics_listen) {
        (Some(text), _) => parse_listen(&text).unwrap_or_else(|e| {
            errors.push(format!("--metrics-listen {e}"));
            None
        }),
        (None, Some(text)) => parse_listen(text.get_ref()).unwrap_or_else(|e| {
            errors.push(at(Some(text.span()), format!("metrics_listen {e}")));
            None
        }),
        (None, None) => None,
    };
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    Ok(Settings {
        metrics_listen,
        socket,
        policy,
        socket_mode,
        socket_group,
        decision_log: string(args.decision_log, &file.decision_log),
        decision_log_max_wait,
        decision_log_sync: args.decision_log_sync || file.decision_log_sync.unwrap_or(false),
        decision_log_group,
        status_file: string(
            args.status_file.map(|p| p.display().to_string()),
            &file.status_file,
        )
        .map(PathBuf::from),
        poll_interval,
        watch: !args.no_watch
            && file.watch.unwrap_or(true)
            && reload == crate::cli::ReloadMode::Watch,
        reload,
        strict_modes: !args.no_strict_modes && file.strict_modes.unwrap_or(true),
        limits: Limits {
            max_frame_bytes,
            // In range (checked above), so this cannot panic.
            frame_timeout: Duration::from_secs_f64(frame_timeout),
            max_connections,
            max_connections_per_uid,
        },
        allowed_uids: args.allowed_uids.or(file.allowed_uids),
        // In range (checked above).
        request_deadline: Duration::from_secs_f64(request_deadline),
        blocking_threads,
        connections_asked,
        per_uid_asked,
    })
}

/// A metrics address: an IP address and a port (`127.0.0.1:9464`, `[::1]:9464`); no host names,
/// which would be looked up before anything is validated.
fn parse_listen(text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    text.parse::<std::net::SocketAddr>().map(Some).map_err(|_| {
        format!(
            "`{}` is not an IP address and port such as 127.0.0.1:9464 or [::1]:9464",
            text.escape_debug()
        )
    })
}

/// Where a setting's value came from.
#[derive(Debug, Clone)]
enum Origin {
    Flag,
    File(std::ops::Range<usize>),
    Default,
}

/// A number as a person wrote it: `-1`, `0.5`, `3601`; exponent form (`1e300`, `1e-300`) where
/// the plain decimal would run to hundreds of digits; `NaN`, `inf`, `-inf`.
fn number(v: f64) -> String {
    let plain = v.to_string();
    if plain.len() <= 24 {
        plain
    } else {
        format!("{v:?}")
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn serve(flags: &[&str]) -> Result<Settings, String> {
        let cli = Cli::try_parse_from(["permission-broker", "serve"].iter().chain(flags))
            .map_err(|e| e.to_string())?;
        let Command::Serve(args) = cli.command else {
            return Err("not serve".to_owned());
        };
        merge(args)
    }

    #[test]
    fn defaults_are_inside_the_bounds() {
        let settings = serve(&[]).unwrap();
        assert_eq!(settings.limits.frame_timeout, Duration::from_secs(10));
        assert!(MAX_FRAME_BYTES.contains(&settings.limits.max_frame_bytes));
        assert!(MAX_CONNECTIONS.contains(&settings.limits.max_connections));
        assert!(POLL_INTERVAL.contains(&settings.poll_interval));
    }

    #[test]
    fn out_of_range_flags_name_the_flag() {
        let cases = [
            (
                &["--frame-timeout", "1e300"][..],
                "--frame-timeout 1e300 must be a positive number of seconds, at least 0.001 and at most 3600",
            ),
            (&["--frame-timeout", "0"], "--frame-timeout 0 must be"),
            (&["--frame-timeout", "NaN"], "--frame-timeout NaN must be"),
            (&["--frame-timeout=-inf"], "--frame-timeout -inf must be"),
            (
                &["--frame-timeout", "1e-300"],
                "--frame-timeout 1e-300 must be",
            ),
            (
                &["--poll-interval", "0.05"],
                "--poll-interval 0.05 must be at least 0.1 seconds and at most 86400",
            ),
            (&["--poll-interval", "inf"], "--poll-interval inf must be"),
            (
                &["--decision-log-max-wait", "3600.001"],
                "--decision-log-max-wait 3600.001 must be",
            ),
            (
                &["--max-connections", "0"],
                "--max-connections must be at least 1 and at most 1000000, not 0",
            ),
            (
                &["--max-connections", "18446744073709551615"],
                "not 18446744073709551615",
            ),
            (
                &["--max-frame-bytes", "255"],
                "--max-frame-bytes 255 must be at least 256",
            ),
            (
                &["--max-frame-bytes", "16777217"],
                "and at most 16777216 (16 MiB)",
            ),
        ];
        for (flags, expected) in cases {
            let err = serve(flags).unwrap_err();
            assert!(err.contains(expected), "{flags:?}: {err}");
        }
    }

    #[test]
    fn the_bounds_themselves_are_accepted() {
        for flags in [
            &["--frame-timeout", "3600"][..],
            &["--frame-timeout", "0.001"],
            &["--poll-interval", "0.1"],
            &["--poll-interval", "86400"],
            &["--decision-log-max-wait", "3600"],
            &["--max-connections", "1"],
            &["--max-connections", "1000000"],
            &["--max-frame-bytes", "256"],
            &["--max-frame-bytes", "16777216"],
        ] {
            assert!(serve(flags).is_ok(), "{flags:?}");
        }
    }
}
