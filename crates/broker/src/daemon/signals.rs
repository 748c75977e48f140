//! Signals: SIGHUP reloads, SIGTERM/SIGINT stop, SIGUSR1 reopens the log, SIGUSR2 upgrades. Every handler is installed when these functions
//! are called -- before the daemon says it is ready -- or an early signal would kill it.

/// SIGHUP reloads the policy (`systemctl reload`, `kill -HUP`).
pub fn spawn_hangup_handler(reload: tokio::sync::mpsc::Sender<&'static str>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler; reload by editing the policy");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // The outcome is the reload's own line ("policy reloaded", "unchanged",
                // "restored", "reload failed"), each with `trigger=SIGHUP`.
                match reload.try_send("SIGHUP") {
                    Ok(()) => tracing::info!("SIGHUP received: reloading the policy"),
                    Err(_) => tracing::info!(
                        "SIGHUP received while a reload is pending: that reload reads the files as they are now, and its outcome answers this one too"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(reload);
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when the
/// future is first polled.
#[cfg(unix)]
pub fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Windows (compile-gated; only Linux runs here): resolves on Ctrl-C.
#[cfg(windows)]
pub async fn stop_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// SIGUSR1 reopens the decision log; without one it must not kill the daemon (its default
/// action): it is logged and otherwise ignored.
pub fn ignore_reopen_without_a_log() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::user_defined1()) {
            Ok(mut usr1) => {
                tokio::spawn(async move {
                    while usr1.recv().await.is_some() {
                        tracing::info!("SIGUSR1 received: there is no decision log to reopen");
                    }
                });
            }
            Err(e) => tracing::error!("cannot install the SIGUSR1 handler: {e}"),
        }
    }
}

/// SIGUSR2 (upgrade in place), installed now so that an early SIGUSR2 cannot kill the daemon
/// (its default action). `None` if it cannot be installed.
#[cfg(unix)]
pub fn upgrade_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::user_defined2()) {
        Ok(usr2) => Some(usr2),
        Err(e) => {
            tracing::error!("cannot install the SIGUSR2 handler (upgrades in place): {e}");
            None
        }
    }
}

/// The signals the daemon handles. An upgrade blocks them across its `execve` (the signal mask
/// survives it, handlers do not): one that arrives before the new image has installed its
/// handlers then waits instead of killing the daemon with every connection it holds.
#[cfg(unix)]
fn handled() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(signal);
    }
    set
}

/// Blocks the handled signals in this thread (the one that will `execve`).
#[cfg(unix)]
pub fn block_handled() {
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&handled()),
        None,
    );
}

/// Unblocks them once every handler is installed (on the thread that runs the serve loop, so a
/// signal left pending by an upgrade is delivered now, to its handler).
#[cfg(unix)]
pub fn unblock_handled() {
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
        Some(&handled()),
        None,
    );
}

/// Runs `f` (which starts a thread) with the handled signals blocked, then restores this
/// thread's mask: the thread inherits the block, so the handled signals never reach it -- and an
/// upgrade's pending ones stay pending for the thread that will take them.
pub fn with_handled_blocked<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(unix)]
    {
        use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
        let mut old = SigSet::empty();
        let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), Some(&mut old));
        let out = f();
        if blocked.is_ok() {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        }
        out
    }
    #[cfg(not(unix))]
    f()
}
