//! The open-file limit. Each connection holds descriptors; the usual soft default (1,024) would
//! cap the daemon at about 500 connections, far below `max_connections`.

/// Descriptors a connection holds: its socket and its peer's `/proc/<pid>` handle.
#[cfg(unix)]
const DESCRIPTORS_PER_CONNECTION: u64 = 2;
/// Descriptors for everything else: listener, log, watcher, runtime, reloads.
#[cfg(unix)]
const DESCRIPTORS_RESERVED: u64 = 64;

/// Raises the soft open-file limit to the hard one, and says so when even the hard limit cannot
/// hold `max_connections`: past it, accepting waits for a connection to close.
#[cfg(unix)]
pub fn raise_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
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
    let needed = max_connections as u64 * DESCRIPTORS_PER_CONNECTION + DESCRIPTORS_RESERVED;
    if limit < needed {
        tracing::warn!(
            max_connections,
            needed,
            limit,
            "the open-file limit holds only about {} connections (each needs a socket and a /proc handle); raise LimitNOFILE / ulimit -n or lower max_connections",
            limit.saturating_sub(DESCRIPTORS_RESERVED) / DESCRIPTORS_PER_CONNECTION
        );
    }
}

#[cfg(not(unix))]
pub fn raise_limit(_max_connections: usize) {}
