//! systemd's file descriptor store (`FileDescriptorStoreMax=`): the service manager keeps a copy
//! of every connection, so that a restart closes none of them. Each accepted connection is
//! stored as `conn-<n>` and removed when it ends; a graceful stop stores the connections' state
//! as `state` (a memfd, see [`super::handover`]); the next start gets all of them back in
//! `LISTEN_FDS`/`LISTEN_FDNAMES` and goes on serving.
//!
//! On only when the service manager says the store exists: `$FDSTORE` (the store's size, set
//! by systemd 254 and later; with an older systemd set it in the unit, `Environment=FDSTORE=`)
//! and `$NOTIFY_SOCKET`.

use std::os::fd::BorrowedFd;

/// The name the state of a graceful stop is stored under.
pub const STATE_NAME: &str = "state";

/// The name a connection is stored under.
pub fn connection_name(conn: u64) -> String {
    format!("conn-{conn}")
}

/// The connection number of a stored name, if it is one.
pub fn connection_of(name: &str) -> Option<u64> {
    name.strip_prefix("conn-")?.parse().ok()
}

#[derive(Debug)]
pub struct FdStore {
    /// How many descriptors the store holds, as the service manager said.
    pub size: usize,
}

impl FdStore {
    pub fn from_env() -> Option<FdStore> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let size = std::env::var("FDSTORE").ok()?.parse().ok()?;
        (size > 0).then_some(FdStore { size })
    }

    /// Stores `fd` as `name`.
    pub fn keep(&self, name: &str, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        use sd_notify::NotifyState;
        sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(name)], &[fd])
    }

    /// Removes every descriptor stored as `name`.
    pub fn forget(&self, name: &str) -> std::io::Result<()> {
        use sd_notify::NotifyState;
        sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)])
    }

    pub fn keep_connection(&self, conn: u64, fd: BorrowedFd<'_>) {
        if let Err(e) = self.keep(&connection_name(conn), fd) {
            tracing::warn!(
                conn,
                "cannot store the connection with the service manager: a restart will close it: {e}"
            );
        }
    }

    pub fn forget_connection(&self, conn: u64) {
        if let Err(e) = self.forget(&connection_name(conn)) {
            tracing::warn!(
                conn,
                "cannot remove the connection from the service manager's store: {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_go_both_ways_and_nothing_else_is_one() {
        assert_eq!(connection_of(&connection_name(42)), Some(42));
        assert_eq!(connection_of("conn-"), None);
        assert_eq!(connection_of("conn-x"), None);
        assert_eq!(connection_of(STATE_NAME), None);
        assert_eq!(connection_of("permission-broker.socket"), None);
    }
}
