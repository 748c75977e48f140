//! Taking the socket and serving on it: the one inherited from the service manager
//! (`LISTEN_FDS`), or one bound safely here; then the ready line, and serving until stopped.

use super::server::{self, Shared};
use super::{notify, signals};
use crate::exit::EXIT_UNAVAILABLE;
use crate::settings::Settings;
use std::process::ExitCode;
use std::sync::Arc;

#[cfg(unix)]
pub async fn serve_on_socket(settings: &Settings, shared: Arc<Shared>, status: &str) -> ExitCode {
    let path = settings.socket.as_path();
    // Socket activation: systemd (or anything speaking LISTEN_FDS) already bound the socket.
    match listenfd::ListenFd::from_env().take_unix_listener(0) {
        Ok(Some(inherited)) => {
            let shown = inherited
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(std::path::Path::to_path_buf))
                .unwrap_or_else(|| path.to_path_buf());
            let listener = match inherited
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixListener::from_std(inherited))
            {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!("cannot use the inherited socket: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(socket = %shown.display(), "using the socket passed by the service manager");
            let vanished = super::unix_socket::watch_path(shown.clone(), None);
            let (stop, lost) = stop_or_lost(vanished);
            announce_ready(&shown);
            notify::ready_with_status(status);
            server::run(listener, shared, stop).await;
            notify::stopping();
            return stopped(&lost);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!("LISTEN_FDS is set but fd 3 is not a Unix stream socket: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    }
    let bound = match super::unix_socket::bind(path, settings.socket_mode) {
        Ok(bound) => bound,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    if let Some((name, gid)) = &settings.socket_group
        && let Err(e) = nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(*gid)))
    {
        tracing::error!("cannot give the socket to group `{name}`: {e}");
        bound.remove();
        return ExitCode::from(EXIT_UNAVAILABLE);
    }
    let listener = match bound
        .listener
        .try_clone()
        .and_then(tokio::net::UnixListener::from_std)
    {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot listen on `{}`: {e}", path.display());
            bound.remove();
            return ExitCode::FAILURE;
        }
    };
    let (stop, lost) = stop_or_lost(bound.vanished());
    announce_ready(bound.path());
    notify::ready_with_status(status);
    server::run(listener, shared, stop).await;
    notify::stopping();
    bound.remove();
    stopped(&lost)
}

/// Why the daemon stopped on its own: its socket file was lost.
#[cfg(unix)]
type Lost = Arc<std::sync::Mutex<Option<String>>>;

/// The stop signal, or the socket file vanishing: a daemon nobody can reach through its path
/// stops (answering what it has read) and exits non-zero, so that its supervisor restarts it
/// and the path is served again.
#[cfg(unix)]
fn stop_or_lost(vanished: impl Future<Output = String>) -> (impl Future<Output = ()>, Lost) {
    let lost = Lost::default();
    let signal = signals::stop_signal();
    let record = lost.clone();
    let stop = async move {
        tokio::select! {
            () = signal => {}
            why = vanished => {
                tracing::error!("{why}: no new Deno process can reach this broker; stopping so that the supervisor restarts it");
                *record.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
            }
        }
    };
    (stop, lost)
}

#[cfg(unix)]
fn stopped(lost: &Lost) -> ExitCode {
    match lost
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        Some(why) => {
            tracing::error!("stopped: {why}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        None => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
    }
}

#[cfg(windows)]
pub async fn serve_on_socket(settings: &Settings, shared: Arc<Shared>, status: &str) -> ExitCode {
    let path = settings.socket.as_path();
    let name = path.to_string_lossy();
    let listener = match server::windows::bind(&name) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot create named pipe `{name}`: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let stop = signals::stop_signal();
    announce_ready(path);
    notify::ready_with_status(status);
    server::run(listener, shared, stop).await;
    ExitCode::SUCCESS
}

/// The one line on stdout that says the broker accepts connections, and how to use it.
#[allow(clippy::print_stdout)]
fn announce_ready(path: &std::path::Path) {
    tracing::info!(socket = %path.display(), "ready");
    println!(
        "permission-broker ready on {0}; run Deno with: DENO_PERMISSION_BROKER_PATH={0} deno run app.ts",
        path.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
