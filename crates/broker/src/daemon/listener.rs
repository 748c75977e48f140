//! Taking the socket and serving on it: the one inherited from the service manager
//! (`LISTEN_FDS`), or one bound safely here; then the ready line, and serving until stopped.

#[cfg(unix)]
use super::handover;
use super::server::{self, Shared};
use super::{notify, signals};
use crate::exit::EXIT_UNAVAILABLE;
use crate::settings::Settings;
use std::process::ExitCode;
use std::sync::Arc;

/// How long a stop signal already taken may take to reach the serving loop, before an upgrade
/// commits to its execve.
#[cfg(unix)]
const SIGNAL_SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// Why the serving loop stopped.
#[cfg(unix)]
#[derive(Debug)]
enum Why {
    /// SIGTERM or SIGINT.
    Stop,
    /// The socket file was removed or replaced.
    Lost(String),
    /// SIGUSR2, and the new binary passed its preflight.
    Upgrade,
}

/// Where the listening socket came from, and what is owed to its file at exit.
#[cfg(unix)]
enum Socket {
    /// Bound here (or by the previous process, which handed it over): removed at exit.
    Bound(super::unix_socket::BoundSocket),
    /// The service manager's: its file is the manager's.
    Inherited(std::path::PathBuf),
}

#[cfg(unix)]
pub async fn serve_on_socket(
    settings: &Settings,
    shared: Arc<Shared>,
    status: &str,
    upgrade: Result<handover::Target, String>,
    passed: handover::Passed,
) -> ExitCode {
    use super::connection::Stop;
    use super::fd_store::FdStore;
    use super::server::unix::UnixAcceptor;

    let store = FdStore::from_env();
    if let Some(store) = &store {
        let needed = settings.limits.max_connections + 1;
        if store.size < needed {
            tracing::warn!(
                size = store.size,
                max_connections = settings.limits.max_connections,
                "the service manager's descriptor store holds {} descriptors: past that many connections, a restart closes the newest ones (set FileDescriptorStoreMax= to at least {needed})",
                store.size
            );
        } else {
            tracing::info!(
                size = store.size,
                "connections are kept in the service manager's descriptor store across restarts"
            );
        }
    }
    // What the previous process handed over: through execve (SIGUSR2), or through the service
    // manager's descriptor store (a restart); and the service manager's own sockets.
    let mut inherited = match handover::take_passed(passed, store.as_ref()) {
        Ok(inherited) => inherited,
        Err(e) => {
            tracing::error!("LISTEN_FDS is set but cannot be used: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    // Before the first record: the log's files name the run the connections are numbered in.
    super::forensics::adopt_run(inherited.run.take());
    let socket = match take_socket(settings, &mut inherited) {
        Ok(socket) => socket,
        Err(code) => return code,
    };
    let (listener, shown) = match &socket {
        Socket::Bound(bound) => (bound.listener.try_clone(), bound.path().to_path_buf()),
        Socket::Inherited(shown) => (
            match inherited.listener.take() {
                Some(listener) => Ok(listener),
                None => Err(std::io::Error::other("no inherited listener")),
            },
            shown.clone(),
        ),
    };
    let listener = match listener
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::UnixListener::from_std)
    {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot listen on `{}`: {e}", shown.display());
            remove_socket(&socket);
            return ExitCode::FAILURE;
        }
    };
    let linger = super::serving::linger(shared.limits.frame_timeout);
    let mut resumed = resume(std::mem::take(&mut inherited.connections), linger);
    if !inherited.how.is_empty() {
        tracing::info!(
            from = inherited.how,
            connections = resumed.len(),
            previous_revision = inherited.revision.as_deref().unwrap_or("?"),
            revision = %shared.store.current().revision,
            "took over from the previous process"
        );
        // A revision that changed across the handover is a reload like any other: on record.
        let current = shared.store.current();
        if let Some(previous) = inherited.revision.as_deref()
            && previous != current.revision
        {
            if settings.reload == crate::cli::ReloadMode::Signal {
                tracing::warn!(
                    previous,
                    revision = %current.revision,
                    "the policy files changed during the handover and reload = \"signal\": serving what is on disk now"
                );
            }
            if let Some(log) = &shared.log {
                let record = super::decision_log::ReloadRecord {
                    time: super::decision_log::now(),
                    trigger: format!("handover ({})", inherited.how),
                    outcome: "swapped",
                    from: previous.to_owned(),
                    to: current.revision.clone(),
                    files: current.files.clone(),
                    errors: 0,
                    error: None,
                };
                log.detached()
                    .record(super::decision_log::Record::Reload(Box::new(record)))
                    .await;
            }
        }
    }
    let mut acceptor = UnixAcceptor {
        listener,
        store,
        linger,
    };
    let (control, mut why_rx) = tokio::sync::mpsc::channel(4);
    let watchers = spawn_stop_watchers(&control, &socket);
    let commit_only = settings.reload == crate::cli::ReloadMode::Signal;
    spawn_upgrade_handler(
        control,
        upgrade.clone(),
        Arc::downgrade(&shared),
        commit_only,
    );
    // Every handler is installed: a signal an upgrade left pending is delivered now.
    signals::unblock_handled();
    announce_ready(&shown, settings.decision_log.as_deref() == Some("-"));
    notify::ready_with_status(status);
    let mut next_conn = inherited.next_conn.max(1);
    loop {
        let park_on_stop = acceptor.store.is_some();
        let mut why = None;
        let stopped = server::run(&mut acceptor, shared.clone(), resumed, next_conn, async {
            let w = why_rx.recv().await.unwrap_or(Why::Stop);
            let how = match &w {
                Why::Upgrade => Stop::Park,
                Why::Stop if park_on_stop => Stop::Park,
                Why::Stop | Why::Lost(_) => Stop::Close,
            };
            why = Some(w);
            how
        })
        .await;
        next_conn = stopped.next_conn;
        let mut why = why.unwrap_or(Why::Stop);
        if matches!(why, Why::Upgrade) {
            // A stop that came while the connections were parked must not be lost in the
            // execve: from here the handled signals wait (every thread blocks them, see
            // `serve`), and one already taken reaches the channel within the settle time.
            signals::block_handled();
            tokio::time::sleep(SIGNAL_SETTLE).await;
            if let Ok(stop @ (Why::Stop | Why::Lost(_))) = why_rx.try_recv() {
                tracing::info!("a stop came during the handover: stopping instead of upgrading");
                why = stop;
                signals::unblock_handled();
            }
        }
        match why {
            Why::Upgrade => {
                let Ok(target) = &upgrade else {
                    unreachable_upgrade();
                    return ExitCode::FAILURE;
                };
                let busy = shared.blocking.busy();
                let why = if busy > 0 {
                    // execve waits for every other thread to end, and a thread in a lookup on a
                    // mount that does not answer never does: the upgrade would never finish,
                    // and nothing would be answered meanwhile.
                    format!(
                        "{busy} file-system or account lookups are still running (stuck on a mount that does not answer?): an execve would wait for them forever"
                    )
                } else {
                    let e = exec_upgrade(target, &shared, &socket, &acceptor, next_conn, &stopped);
                    format!("cannot execute the new binary: {e}")
                };
                tracing::error!(
                    program = %target.program.display(),
                    "upgrade refused, serving on with this binary: {why}"
                );
                notify::status(&format!("upgrade refused: {why}"));
                notify::ready();
                resumed = stopped
                    .parked
                    .into_iter()
                    .map(|(carried, read, write)| server::Resumed {
                        peer: super::peer::Peer {
                            pid: carried.pid,
                            uid: carried.uid,
                            gid: carried.gid,
                        },
                        carried: *carried,
                        read,
                        write,
                    })
                    .collect();
            }
            Why::Stop => {
                watchers.iter().for_each(tokio::task::JoinHandle::abort);
                notify::stopping();
                if let Some(store) = &acceptor.store {
                    store_state(store, &shared, next_conn, &stopped.parked);
                    // Closed here without a shutdown (dropping tokio's write half would send
                    // one): the store's copies stay open for the next start.
                    for (_, read, write) in stopped.parked {
                        drop(super::serving::unix::reunite(read, write));
                    }
                } else {
                    // Parked for an upgrade that a stop overtook: nobody will take them.
                    for (carried, read, write) in stopped.parked {
                        server::Accept::close(&acceptor, carried.conn, read, write);
                    }
                }
                remove_socket(&socket);
                tracing::info!("stopped");
                return ExitCode::SUCCESS;
            }
            Why::Lost(why) => {
                watchers.iter().for_each(tokio::task::JoinHandle::abort);
                notify::stopping();
                for (carried, read, write) in stopped.parked {
                    server::Accept::close(&acceptor, carried.conn, read, write);
                }
                remove_socket(&socket);
                tracing::error!("stopped: {why}");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        }
        // The stop watchers are still running; the upgrade handler waits for the next SIGUSR2.
    }
}

/// Hands the socket and every parked connection to the new binary; returns only if that failed.
#[cfg(unix)]
fn exec_upgrade(
    target: &handover::Target,
    shared: &Shared,
    socket: &Socket,
    acceptor: &super::server::unix::UnixAcceptor,
    next_conn: u64,
    stopped: &server::Stopped<super::serving::unix::ConnRead, super::serving::unix::ConnWrite>,
) -> std::io::Error {
    use std::os::fd::AsFd;
    let state = handover::State {
        version: handover::VERSION,
        pid: std::process::id(),
        next_conn,
        run: Some(super::forensics::run().to_owned()),
        revision: shared.store.current().revision.to_string(),
        bound: bound_info(socket),
        connections: stopped
            .parked
            .iter()
            .map(|(carried, _, _)| (**carried).clone())
            .collect(),
    };
    // Each held still (locked) until the exec: a parked connection's future has ended.
    let held: Vec<(u64, super::serving::unix::Fd<'_>)> = stopped
        .parked
        .iter()
        .map(|(carried, read, _)| (carried.conn, read.fd()))
        .collect();
    let connections: Vec<(u64, std::os::fd::BorrowedFd<'_>)> =
        held.iter().map(|(conn, fd)| (*conn, fd.as_fd())).collect();
    tracing::info!(
        program = %target.program.display(),
        connections = connections.len(),
        closed = stopped.forced,
        "upgrading in place: handing the socket and every connection to the new binary"
    );
    handover::exec(
        target,
        &state,
        acceptor.listener.as_fd(),
        &connections,
        super::metrics_endpoint::handover_fd(),
    )
}

#[cfg(unix)]
fn unreachable_upgrade() {
    tracing::error!("an upgrade was started without a binary to upgrade to");
}

/// The listening socket: the one handed over by the previous process, the service manager's
/// (`LISTEN_FDS`), or one bound safely here.
#[cfg(unix)]
fn take_socket(
    settings: &Settings,
    inherited: &mut handover::Inherited,
) -> Result<Socket, ExitCode> {
    let path = settings.socket.as_path();
    if let Some(listener) = inherited.listener.take() {
        return Ok(match inherited.bound.take() {
            Some((path, dev, ino)) => Socket::Bound(super::unix_socket::BoundSocket::adopt(
                listener,
                path,
                (dev, ino),
            )),
            None => {
                let shown = shown_path(&listener).unwrap_or_else(|| path.to_path_buf());
                inherited.listener = Some(listener);
                Socket::Inherited(shown)
            }
        });
    }
    // Socket activation: systemd (or anything speaking LISTEN_FDS) already bound the socket.
    if !inherited.sockets.is_empty() {
        let (name, listener) = inherited.sockets.remove(0);
        let shown = shown_path(&listener).unwrap_or_else(|| path.to_path_buf());
        tracing::info!(socket = %shown.display(), name, "using the socket passed by the service manager");
        inherited.listener = Some(listener);
        return Ok(Socket::Inherited(shown));
    }
    let bound = match super::unix_socket::bind(path, settings.socket_mode) {
        Ok(bound) => bound,
        Err(e) => {
            tracing::error!("{e}");
            return Err(ExitCode::from(EXIT_UNAVAILABLE));
        }
    };
    if let Some((name, gid)) = &settings.socket_group
        && let Err(e) = nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(*gid)))
    {
        tracing::error!("cannot give the socket to group `{name}`: {e}");
        bound.remove();
        return Err(ExitCode::from(EXIT_UNAVAILABLE));
    }
    Ok(Socket::Bound(bound))
}

#[cfg(unix)]
fn shown_path(listener: &std::os::unix::net::UnixListener) -> Option<std::path::PathBuf> {
    listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(std::path::Path::to_path_buf))
}

#[cfg(unix)]
fn bound_info(socket: &Socket) -> Option<(std::path::PathBuf, u64, u64)> {
    match socket {
        Socket::Bound(bound) => {
            let (dev, ino) = bound.inode();
            Some((bound.path().to_path_buf(), dev, ino))
        }
        Socket::Inherited(_) => None,
    }
}

#[cfg(unix)]
fn remove_socket(socket: &Socket) {
    if let Socket::Bound(bound) = socket {
        bound.remove();
    }
}

/// Connections handed over, as the server resumes them: each with its peer as the kernel
/// reports it now.
#[cfg(unix)]
fn resume(
    connections: Vec<(super::connection::Carried, std::os::unix::net::UnixStream)>,
    linger: std::time::Duration,
) -> Vec<server::Resumed<super::serving::unix::ConnRead, super::serving::unix::ConnWrite>> {
    connections
        .into_iter()
        .filter_map(|(carried, stream)| {
            let conn = carried.conn;
            let taken = super::server::unix::peer_of(&stream).and_then(|peer| {
                let (read, write) = super::serving::unix::split(stream, linger)?;
                Ok((peer, read, write))
            });
            match taken {
                Ok((peer, read, write)) => Some(server::Resumed {
                    carried,
                    peer,
                    read,
                    write,
                }),
                Err(e) => {
                    tracing::warn!(conn, "handed-over connection cannot be used: {e}; closed");
                    None
                }
            }
        })
        .collect()
}

/// A graceful stop with the descriptor store: the connections stay in the store, open; their
/// state goes beside them, so that the next start goes on serving them.
#[cfg(unix)]
fn store_state(
    store: &super::fd_store::FdStore,
    shared: &Shared,
    next_conn: u64,
    parked: &[(
        Box<super::connection::Carried>,
        super::serving::unix::ConnRead,
        super::serving::unix::ConnWrite,
    )],
) {
    use std::os::fd::AsFd;
    let state = handover::State {
        version: handover::VERSION,
        pid: std::process::id(),
        next_conn,
        run: Some(super::forensics::run().to_owned()),
        revision: shared.store.current().revision.to_string(),
        bound: None,
        connections: parked
            .iter()
            .map(|(carried, _, _)| (**carried).clone())
            .collect(),
    };
    let stored = handover::to_memfd(&state).and_then(|memfd| {
        let _ = store.forget(super::fd_store::STATE_NAME);
        store.keep(super::fd_store::STATE_NAME, memfd.as_fd())
    });
    match stored {
        Ok(()) => tracing::info!(
            connections = parked.len(),
            "connections and their state left with the service manager for the next start"
        ),
        Err(e) => {
            tracing::error!("cannot store the connections' state: {e}; closing them");
            for (carried, read, _) in parked {
                super::serving::unix::shutdown(read.raw_fd());
                store.forget_connection(carried.conn);
            }
        }
    }
}

/// SIGTERM/SIGINT, or the socket file vanishing: a daemon nobody can reach through its path
/// stops (answering what it has read) and exits non-zero, so that its supervisor restarts it
/// and the path is served again.
#[cfg(unix)]
fn spawn_stop_watchers(
    control: &tokio::sync::mpsc::Sender<Why>,
    socket: &Socket,
) -> [tokio::task::JoinHandle<()>; 2] {
    let signal = signals::stop_signal();
    let tx = control.clone();
    let stop = tokio::spawn(async move {
        signal.await;
        let _ = tx.send(Why::Stop).await;
    });
    let vanished: std::pin::Pin<Box<dyn Future<Output = String> + Send>> = match socket {
        Socket::Bound(bound) => Box::pin(bound.vanished()),
        Socket::Inherited(shown) => Box::pin(super::unix_socket::watch_path(shown.clone(), None)),
    };
    let tx = control.clone();
    let lost = tokio::spawn(async move {
        let why = vanished.await;
        tracing::error!(
            "{why}: no new Deno process can reach this broker; stopping so that the supervisor restarts it"
        );
        let _ = tx.send(Why::Lost(why)).await;
    });
    [stop, lost]
}

/// SIGUSR2: upgrade in place, once the binary at the daemon's own path has passed its
/// preflight. A binary that fails it (or is not there, or not executable) leaves the daemon
/// serving, and says why.
#[cfg(unix)]
fn spawn_upgrade_handler(
    control: tokio::sync::mpsc::Sender<Why>,
    upgrade: Result<handover::Target, String>,
    // Weak: the decision log's writer ends when the last strong holder is gone.
    shared: std::sync::Weak<Shared>,
    // `reload = "signal"`: the upgrade must serve the revision that serves now.
    commit_only: bool,
) {
    let Some(mut usr2) = signals::upgrade_signal() else {
        return;
    };
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            let target = match &upgrade {
                Ok(target) => target.clone(),
                Err(why) => {
                    tracing::error!(
                        "SIGUSR2 received, but this daemon cannot upgrade in place: {why}"
                    );
                    continue;
                }
            };
            tracing::info!(program = %target.program.display(), "SIGUSR2 received: checking the new binary before upgrading");
            let abandoned = shared.upgrade().map_or(0, |s| s.blocking.abandoned());
            if abandoned > 0 {
                tracing::error!(
                    "upgrade refused, serving on with this binary: {abandoned} abandoned lookups are still stuck on a file system or account database that does not answer: an execve would wait for them forever; try again once they end (or the mount is aborted)"
                );
                notify::status("upgrade refused: lookups stuck on a mount that does not answer");
                continue;
            }
            notify::reloading();
            let checked = tokio::task::spawn_blocking(move || handover::preflight(&target))
                .await
                .unwrap_or_else(|e| Err(format!("the preflight failed: {e}")));
            // The new image loads the policy from the files again. With `reload = "signal"`,
            // files written since the last commit must not be served by an upgrade either.
            let checked = checked.and_then(|said| {
                let on_disk = said
                    .split("; policy ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or("")
                    .to_owned();
                let serving = shared
                    .upgrade()
                    .map(|s| s.store.current().revision.clone())
                    .unwrap_or_default();
                if commit_only && on_disk != serving {
                    Err(format!(
                        "the policy on disk is revision {on_disk}, not the serving {serving}, and reload = \"signal\": an upgrade would serve it uncommitted; commit it first (SIGHUP, systemctl reload) or finish the deploy"
                    ))
                } else {
                    Ok(said)
                }
            });
            match checked {
                Ok(said) => {
                    tracing::info!("preflight passed: {said}");
                    if control.send(Why::Upgrade).await.is_err() {
                        return;
                    }
                }
                Err(why) => {
                    tracing::error!("upgrade refused, serving on with this binary: {why}");
                    notify::status(&format!("upgrade refused: {why}"));
                    notify::ready();
                }
            }
        }
    });
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
    let mut listener = listener;
    let stop = signals::stop_signal();
    announce_ready(path, settings.decision_log.as_deref() == Some("-"));
    notify::ready_with_status(status);
    server::run(&mut listener, shared, Vec::new(), 1, async {
        stop.await;
        super::connection::Stop::Close
    })
    .await;
    ExitCode::SUCCESS
}

/// The one line on stdout that says the broker accepts connections, and how to use it.
#[allow(clippy::print_stdout)]
fn announce_ready(path: &std::path::Path, stdout_is_the_log: bool) {
    tracing::info!(socket = %path.display(), "ready");
    // Not println!: after an upgrade in place, whoever read the first ready line may be gone.
    // With `--decision-log -` stdout is the log's, pure JSON for a shipper: the line goes to
    // stderr.
    use std::io::Write;
    let line = format!(
        "permission-broker ready on {0}; run Deno with: DENO_PERMISSION_BROKER_PATH={0} deno run app.ts\n",
        path.display()
    );
    if stdout_is_the_log {
        let _ = std::io::stderr().write_all(line.as_bytes());
    } else {
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(line.as_bytes());
        let _ = stdout.flush();
    }
}
