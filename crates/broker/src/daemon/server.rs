//! The accept loop: a bounded number of connections, each served by its own task, and a graceful
//! stop that lets every request already read be answered.

use super::connection::{Connection, Fault};
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
    /// Connections one uid may hold at once.
    pub max_connections_per_uid: usize,
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
    /// Where decisions that may block run, and how long they may take.
    pub blocking: BlockingPool,
}

/// The bounded pool for decisions that may wait on a file system or an account database.
///
/// A decision waits for a slot at most until its deadline, then runs on it within what is left
/// of the deadline. Any user can make a lookup that never returns (a FUSE mount of their own that
/// does not answer), and an abandoned lookup holds its slot until the kernel lets it go; so each
/// uid may have at most a quarter of the slots held by abandoned lookups. Past that its requests
/// that need a slot are denied at once: one user's stalled mount costs that user, never everyone,
/// while healthy requests of any one user may use every slot.
#[derive(Debug)]
pub struct BlockingPool {
    slots: Arc<Semaphore>,
    pub size: usize,
    /// How long one decision may take, waiting for a slot included, before it is denied.
    pub deadline: Duration,
    /// Requests denied because their decision outlived the deadline.
    pub deadline_denials: AtomicU64,
    /// Abandoned lookups still running, by uid.
    stuck: Arc<Mutex<HashMap<u32, usize>>>,
    per_uid: usize,
}

/// A slot of the pool, held by one decision (and by its thread, if abandoned, until it ends).
#[derive(Debug)]
pub struct BlockingSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    uid: Option<u32>,
    abandoned: Arc<std::sync::atomic::AtomicU8>,
    stuck: Arc<Mutex<HashMap<u32, usize>>>,
}

/// Why no slot could be had.
#[derive(Debug)]
pub enum NoSlot {
    /// Every slot stayed held until the deadline.
    Exhausted,
    /// This uid already has its share of abandoned lookups still running.
    Share(usize),
}

impl BlockingPool {
    pub fn new(size: usize, deadline: Duration) -> BlockingPool {
        BlockingPool {
            slots: Arc::new(Semaphore::new(size)),
            size,
            deadline,
            deadline_denials: AtomicU64::new(0),
            stuck: Arc::default(),
            per_uid: (size / 4).max(1),
        }
    }

    /// A slot for a decision of `uid`, waiting at most until `until`.
    pub async fn slot(
        &self,
        uid: Option<u32>,
        until: tokio::time::Instant,
    ) -> Result<BlockingSlot, NoSlot> {
        if let Some(uid) = uid
            && self
                .stuck
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&uid)
                .is_some_and(|stuck| *stuck >= self.per_uid)
        {
            return Err(NoSlot::Share(self.per_uid));
        }
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                match tokio::time::timeout_at(until, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(NoSlot::Exhausted),
                }
            }
        };
        Ok(BlockingSlot {
            _permit: permit,
            uid,
            abandoned: Arc::default(),
            stuck: self.stuck.clone(),
        })
    }
}

impl BlockingSlot {
    /// A handle to mark the slot abandoned after it has moved to its thread.
    pub fn abandon_handle(&self) -> SlotAbandon {
        SlotAbandon {
            uid: self.uid,
            abandoned: self.abandoned.clone(),
            stuck: self.stuck.clone(),
        }
    }
}

/// Marks a slot's lookup abandoned: it counts against its uid until its thread ends.
#[derive(Debug)]
pub struct SlotAbandon {
    uid: Option<u32>,
    abandoned: Arc<std::sync::atomic::AtomicU8>,
    stuck: Arc<Mutex<HashMap<u32, usize>>>,
}

/// A slot's lookup: running, abandoned by its request, or finished.
const RUNNING: u8 = 0;
const ABANDONED: u8 = 1;
const FINISHED: u8 = 2;

impl SlotAbandon {
    pub fn abandon(&self) {
        let Some(uid) = self.uid else { return };
        // Under the lock, as the slot's drop: counted up only if still running, down once.
        let mut stuck = self.stuck.lock().unwrap_or_else(PoisonError::into_inner);
        if self
            .abandoned
            .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            *stuck.entry(uid).or_default() += 1;
        }
    }
}

impl Drop for BlockingSlot {
    fn drop(&mut self) {
        let Some(uid) = self.uid else { return };
        let mut stuck = self.stuck.lock().unwrap_or_else(PoisonError::into_inner);
        if self.abandoned.swap(FINISHED, Ordering::SeqCst) == ABANDONED
            && let Some(count) = stuck.get_mut(&uid)
        {
            *count -= 1;
            if *count == 0 {
                stuck.remove(&uid);
            }
        }
    }
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

/// How many connections each uid holds. One user opening `max_connections` idle sockets would
/// otherwise lock every other user out (idle connections are never timed out: Deno processes
/// live for hours). Locked only when a connection opens or closes.
#[derive(Debug)]
struct UidShares {
    held: Mutex<HashMap<u32, usize>>,
    limit: usize,
}

/// One connection's place in its uid's share; given back when dropped.
#[derive(Debug)]
struct UidShare {
    shares: Arc<UidShares>,
    uid: u32,
}

impl UidShares {
    fn new(limit: usize) -> UidShares {
        UidShares {
            held: Mutex::new(HashMap::new()),
            limit,
        }
    }

    /// A place for a connection of `uid`, or how many that uid already holds. A peer whose uid
    /// the kernel did not report (the Windows pipe) is not counted.
    fn take(self: &Arc<Self>, uid: Option<u32>) -> Result<Option<UidShare>, usize> {
        let Some(uid) = uid else { return Ok(None) };
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(uid).or_default();
        if *count >= self.limit {
            return Err(*count);
        }
        *count += 1;
        Ok(Some(UidShare {
            shares: self.clone(),
            uid,
        }))
    }
}

impl Drop for UidShare {
    fn drop(&mut self) {
        let mut held = self
            .shares
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

/// Serves connections from `listener` until `stop` resolves, then stops accepting, closes idle
/// connections, and waits (bounded) for the others to answer what they have read.
pub async fn run<L: Accept>(mut listener: L, shared: Arc<Shared>, stop: impl Future<Output = ()>) {
    let max = shared.limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let closers = Arc::new(Closers::default());
    let shares = Arc::new(UidShares::new(shared.limits.max_connections_per_uid));
    let next_id = AtomicU64::new(1);
    // Every connection's task, so that a stop can end the ones that do not finish in time.
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            Some(_) = tasks.join_next() => continue,
            () = &mut stop => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = tasks.join_next() => continue,
            () = &mut stop => break,
        };
        match accepted {
            Ok((peer, reader, writer)) => {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let connection = Connection::new(id, peer, reader, writer, shared.clone());
                let share = match shares.take(peer.uid) {
                    Ok(share) => share,
                    Err(held) => {
                        let limit = shared.limits.max_connections_per_uid;
                        tasks.spawn(connection.refuse(Fault::OverShare { held, limit }));
                        continue;
                    }
                };
                let shutdown = closers.register(id);
                let closers = closers.clone();
                tasks.spawn(async move {
                    connection.run(shutdown).await;
                    closers.remove(id);
                    drop(share);
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
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // A peer that does not read its answer, or a decision past its deadline: what is left
        // is closed, so that the stop is bounded (systemd's TimeoutStopSec is 20 s).
        tracing::warn!(
            connections = tasks.len(),
            "connections still busy after {DRAIN_TIMEOUT:?}; closing them"
        );
        tasks.shutdown().await;
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
