//! The open-file limit. Each connection holds descriptors; the usual soft default (1,024) would
//! cap the daemon at about 500 connections, far below the default `max_connections`: the limit
//! is raised to the hard one, and a default `max_connections` is fitted to what that holds
//! ([`crate::settings::Settings::fit_connections`]).

/// Descriptors a connection holds: its socket and its peer's `/proc/<pid>` handle.
#[cfg(unix)]
const DESCRIPTORS_PER_CONNECTION: u64 = 2;
/// Descriptors for everything else: listener, log, watcher, runtime, reloads.
#[cfg(unix)]
const DESCRIPTORS_RESERVED: u64 = 64;

/// Raises the soft open-file limit to the hard one, and says how many connections it holds
/// (`None` where it cannot be read).
#[cfg(unix)]
pub fn raise_limit() -> Option<usize> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(
            soft,
            hard,
            "cannot raise the open-file limit to its hard limit: {e}"
        );
    }
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(soft, _)| soft);
    let holds = limit.saturating_sub(DESCRIPTORS_RESERVED) / DESCRIPTORS_PER_CONNECTION;
    Some(usize::try_from(holds).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
pub fn raise_limit() -> Option<usize> {
    None
}
