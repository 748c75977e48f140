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
}

pub use imp::reloading;
#[cfg(unix)]
pub use imp::stopping;

/// The status line last set, and a problem of the decision log's that is appended to it until
/// it is over: `STATUS=` shows both, whichever changed last.
static LAST_STATUS: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
static LOG_PROBLEM: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn composed(line: &str) -> String {
    if let Ok(mut last) = LAST_STATUS.lock() {
        line.clone_into(&mut last);
    }
    match LOG_PROBLEM.lock().ok().and_then(|p| p.clone()) {
        Some(problem) if !line.is_empty() => format!("{line}; DECISION LOG: {problem}"),
        Some(problem) => format!("DECISION LOG: {problem}"),
        None => line.to_owned(),
    }
}

/// READY=1 with the first status line.
pub fn ready_with_status(line: &str) {
    imp::ready(&composed(line));
}

/// STATUS= (with the decision log's problem, if it has one).
pub fn status(line: &str) {
    // One line whatever it quotes: a newline would be a second assignment (`STATUS=` again, or
    // `MAINPID=`) to the service manager.
    imp::status(&permission_broker_protocol::escape_unprintable(&composed(
        line,
    )));
}

/// Sets or clears the decision log's problem, and sends the status line again with it.
pub fn log_problem(problem: Option<String>) {
    if let Ok(mut slot) = LOG_PROBLEM.lock() {
        *slot = problem;
    }
    let last = LAST_STATUS.lock().map(|l| l.clone()).unwrap_or_default();
    imp::status(&permission_broker_protocol::escape_unprintable(&composed(
        &last,
    )));
}

/// READY=1 after a reload.
pub fn ready() {
    imp::ready_again();
}
