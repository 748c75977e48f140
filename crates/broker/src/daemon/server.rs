//! The accept loop: a bounded number of connections, each served by its own task, and a graceful
//! stop that lets every request already read be answered.

use super::connection::Connection;
use super::peer::Peer;
use super::reload::PolicyStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub frame_timeout: Duration,
    pub max_connections: usize,
}

/// What every connection shares: read-only during a connection's life.
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<PolicyStore>,
    pub limits: Limits,
    pub log: Option<super::decision_log::DecisionLog>,
    /// When set, only peers with these uids are served.
    pub allowed_uids: Option<Vec<u32>>,
    /// The broker's own files, denied whatever the policy says.
    pub protected: super::protected::Protected,
}

/// How long a stop waits for connections to finish the request in hand.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Something that yields connections with their kernel-reported peer.
pub trait Accept {
    type Read: tokio::io::AsyncRead + Unpin + Send + Sync + 'static;
    type Write: tokio::io::AsyncWrite + Unpin + Send + Sync + 'static;

    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(Peer, Self::Read, Self::Write)>> + Send;
}

/// One stop signal per open connection. A connection waits on its own receiver, so the frame
/// loop shares no lock with other connections; this map is locked only when a connection opens
/// or closes, and once at shutdown.
#[derive(Debug, Default)]
struct Closers(Mutex<HashMap<u64, oneshot::Sender<()>>>);

impl Closers {
    fn register(&self, id: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        rx
    }

    fn remove(&self, id: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Tells every open connection to close once idle.
    fn close_all(&self) {
        let all = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for tx in all.into_values() {
            let _ = tx.send(());
        }
    }
}

/// Serves connections from `listener` until `stop` resolves, then stops accepting, closes idle
/// connections, and waits (bounded) for the others to answer what they have read.
pub async fn run<L: Accept>(mut listener: L, shared: Arc<Shared>, stop: impl Future<Output = ()>) {
    let max = shared.limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let closers = Arc::new(Closers::default());
    let next_id = AtomicU64::new(1);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        match accepted {
            Ok((peer, reader, writer)) => {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let connection = Connection::new(id, peer, reader, writer, shared.clone());
                let shutdown = closers.register(id);
                let closers = closers.clone();
                tokio::spawn(async move {
                    connection.run(shutdown).await;
                    closers.remove(id);
                    drop(permit);
                });
            }
            Err(e) => {
                // Typically EMFILE/ENFILE: back off instead of spinning; connections that end
                // free descriptors.
                tracing::error!(error = %e, "accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::info!("stopping: no new connections; answering requests in hand");
    closers.close_all();
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
}

#[cfg(unix)]
pub mod unix {
    use super::Accept;
    use crate::daemon::peer::Peer;
    use tokio::net::UnixListener;
    use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

    impl Accept for UnixListener {
        type Read = OwnedReadHalf;
        type Write = OwnedWriteHalf;

        async fn accept(&mut self) -> std::io::Result<(Peer, OwnedReadHalf, OwnedWriteHalf)> {
            loop {
                let (stream, _) = UnixListener::accept(self).await?;
                // SO_PEERCRED: the credentials of the process that connected, from the kernel.
                match stream.peer_cred() {
                    Ok(cred) => {
                        let peer = Peer {
                            pid: cred
                                .pid()
                                .and_then(|p| u32::try_from(p).ok())
                                .filter(|p| *p != 0),
                            uid: Some(cred.uid()),
                            gid: Some(cred.gid()),
                        };
                        let (read, write) = stream.into_split();
                        return Ok((peer, read, write));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read peer credentials; dropping connection");
                    }
                }
            }
        }
    }
}

/// Windows: Deno connects to a named pipe. Compile-gated and NOT tested here (only Linux runs in
/// this project's CI); the pid check uses the pipe's client process id from the kernel.
#[cfg(windows)]
pub mod windows {
    use super::Accept;
    use crate::daemon::peer::Peer;
    use interprocess::os::windows::named_pipe::tokio::{
        DuplexPipeStream, PipeListener, PipeListenerOptionsExt,
    };
    use interprocess::os::windows::named_pipe::{PipeListenerOptions, PipeMode, pipe_mode};
    use tokio::io::{ReadHalf, WriteHalf};

    type Stream = DuplexPipeStream<pipe_mode::Bytes>;

    pub struct NamedPipe(PipeListener<pipe_mode::Bytes, pipe_mode::Bytes>);

    impl std::fmt::Debug for NamedPipe {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("NamedPipe")
        }
    }

    pub fn bind(name: &str) -> std::io::Result<NamedPipe> {
        PipeListenerOptions::new()
            .path(name)
            .mode(PipeMode::Bytes)
            .create_tokio_duplex::<pipe_mode::Bytes>()
            .map(NamedPipe)
    }

    impl Accept for NamedPipe {
        type Read = ReadHalf<Stream>;
        type Write = WriteHalf<Stream>;

        async fn accept(&mut self) -> std::io::Result<(Peer, Self::Read, Self::Write)> {
            let stream = self.0.accept().await?;
            let peer = Peer {
                pid: stream.client_process_id().ok(),
                uid: None,
                gid: None,
            };
            let (read, write) = tokio::io::split(stream);
            Ok((peer, read, write))
        }
    }
}
