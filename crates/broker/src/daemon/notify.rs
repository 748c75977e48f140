//! systemd's notify protocol (`Type=notify`): READY=1 after the first policy loaded,
//! RELOADING=1/READY=1 around reloads, STATUS= with the policy revision. Without
//! `$NOTIFY_SOCKET` (not under systemd) every call does nothing.

#[cfg(unix)]
mod imp {
    use sd_notify::NotifyState;

    fn send(states: &[NotifyState<'_>]) {
        if std::env::var_os("NOTIFY_SOCKET").is_some()
            && let Err(e) = sd_notify::notify(states)
        {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    pub fn ready(status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn reloading() {
        send(&[NotifyState::Reloading]);
    }

    pub fn ready_again() {
        send(&[NotifyState::Ready]);
    }

    pub fn status(line: &str) {
        send(&[NotifyState::Status(line)]);
    }

    pub fn stopping() {
        send(&[NotifyState::Stopping]);
    }
}

#[cfg(not(unix))]
mod imp {
    pub fn ready(_: &str) {}
    pub fn reloading() {}
    pub fn ready_again() {}
    pub fn status(_: &str) {}
    pub fn stopping() {}
}

pub use imp::{ready as ready_with_status, reloading, status, stopping};

/// READY=1 after a reload.
pub fn ready() {
    imp::ready_again();
}
