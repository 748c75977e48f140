//! The accept loop: a bounded number of connections, each served by its own task, and a graceful
//! stop that lets every request already read be answered.

use super::connection::{Carried, Connection, Duplicate, Ended, Fault, Shutdown, Stop};
use super::metrics;
use super::peer::Peer;
use super::reload::PolicyStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

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
    /// How many fault warnings each uid may cause in the daemon's log.
    pub fault_warnings: super::connection::FaultWarnings,
    /// The threads that serve busy connections.
    pub threads: Arc<super::serving::Threads>,
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
    /// Requests denied without a slot: `[share, exhausted]` (see [`NoSlot`]).
    pub no_slot_denials: [AtomicU64; 2],
    /// Abandoned lookups still running, by uid.
    stuck: Arc<Mutex<HashMap<u32, usize>>>,
    per_uid: usize,
    /// Lookups running, in the pool or in place.
    running: Arc<std::sync::atomic::AtomicUsize>,
    /// Abandoned lookups still running, of every uid (the sum of `stuck`).
    stuck_total: Arc<std::sync::atomic::AtomicUsize>,
    /// Each uid's lookups in flight: a burst of lookups that will never return (one per
    /// connection, all sent at once) holds that many, not every slot and every thread.
    in_flight: Mutex<HashMap<u32, Arc<UidLookups>>>,
    /// Rescues decisions made in place on a connection thread that outlive the deadline.
    pub watchdog: Arc<super::serving::Watchdog>,
}

/// Uids kept in `BlockingPool::in_flight` before the idle ones are dropped.
const UID_ENTRIES: usize = 1024;

/// One uid's lookups in flight: on the pool, at most a quarter of its slots; in place on
/// connection threads, at most a quarter of those (as many as the pool has slots), so that
/// healthy requests of one busy uid (every Deno of a laptop) rarely wait, and a burst that
/// never returns leaves three quarters of both to everyone else.
#[derive(Debug)]
struct UidLookups {
    pool: Arc<Semaphore>,
    in_place: Arc<Semaphore>,
}

/// A slot of the pool, held by one decision (and by its thread, if abandoned, until it ends).
#[derive(Debug)]
pub struct BlockingSlot {
    /// `None` for a decision made in place on a connection thread.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The place among its uid's lookups in flight (`None` without a uid).
    uid_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    uid: Option<u32>,
    abandoned: Arc<std::sync::atomic::AtomicU8>,
    stuck: Arc<Mutex<HashMap<u32, usize>>>,
    stuck_total: Arc<std::sync::atomic::AtomicUsize>,
    running: Arc<std::sync::atomic::AtomicUsize>,
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
            no_slot_denials: Default::default(),
            stuck: Arc::default(),
            per_uid: (size / 4).max(1),
            running: Arc::default(),
            stuck_total: Arc::default(),
            in_flight: Mutex::default(),
            watchdog: super::serving::Watchdog::start(deadline),
        }
    }

    /// `uid`'s lookups in flight.
    fn uid_lookups(&self, uid: u32) -> Arc<UidLookups> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Bounded by the uids with lookups in flight or waiting: the rest go as it grows.
        if in_flight.len() >= UID_ENTRIES && !in_flight.contains_key(&uid) {
            in_flight.retain(|_, l| {
                Arc::strong_count(l) > 1
                    || Arc::strong_count(&l.pool) > 1
                    || Arc::strong_count(&l.in_place) > 1
            });
        }
        in_flight
            .entry(uid)
            .or_insert_with(|| {
                Arc::new(UidLookups {
                    pool: Arc::new(Semaphore::new(self.per_uid)),
                    in_place: Arc::new(Semaphore::new(self.size)),
                })
            })
            .clone()
    }

    /// Whether `uid` has its share of abandoned lookups still running.
    fn over_share(&self, uid: Option<u32>) -> bool {
        // Almost always nothing is abandoned: no lock shared by every connection then.
        if self.stuck_total.load(Ordering::SeqCst) == 0 {
            return false;
        }
        uid.is_some_and(|uid| {
            self.stuck
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&uid)
                .is_some_and(|stuck| *stuck >= self.per_uid)
        })
    }

    /// The slot of a decision made in place on a connection thread: no permit of the pool is
    /// taken (connection threads are bounded by their own count, and a thread waiting for a
    /// permit would hand its connection's turn to every other thread on a busy machine), but a
    /// uid past its share of abandoned lookups gets none, and the decision is abandoned and
    /// counted against its uid like one of the pool's.
    pub fn in_place_slot(&self, uid: Option<u32>) -> Option<BlockingSlot> {
        if self.over_share(uid) {
            return None;
        }
        let uid_permit = match uid {
            Some(uid) => Some(
                self.uid_lookups(uid)
                    .in_place
                    .clone()
                    .try_acquire_owned()
                    .ok()?,
            ),
            None => None,
        };
        Some(self.new_slot(None, uid_permit, uid))
    }

    /// Lookups running now, in the pool or in place, abandoned ones included. Once every
    /// connection has stopped, any left are stuck in the kernel (a mount that does not answer):
    /// a thread in such a call cannot be ended, and an `execve` waits for every thread to end.
    pub fn busy(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Lookups abandoned by their requests and still running.
    pub fn abandoned(&self) -> usize {
        self.stuck
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    fn new_slot(
        &self,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        uid_permit: Option<tokio::sync::OwnedSemaphorePermit>,
        uid: Option<u32>,
    ) -> BlockingSlot {
        self.running.fetch_add(1, Ordering::SeqCst);
        BlockingSlot {
            _permit: permit,
            uid_permit,
            uid,
            abandoned: Arc::default(),
            stuck: self.stuck.clone(),
            stuck_total: self.stuck_total.clone(),
            running: self.running.clone(),
        }
    }

    /// A slot for a decision of `uid`, waiting at most until `until`.
    pub async fn slot(
        &self,
        uid: Option<u32>,
        until: tokio::time::Instant,
    ) -> Result<BlockingSlot, NoSlot> {
        if self.over_share(uid) {
            return Err(NoSlot::Share(self.per_uid));
        }
        // Its uid's share of lookups in flight first: while they all wait on a mount that does
        // not answer, this one waits until its deadline and is denied, holding no slot.
        let uid_permit = match uid {
            None => None,
            Some(uid) => {
                let semaphore = self.uid_lookups(uid).pool.clone();
                let permit = match semaphore.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => match tokio::time::timeout_at(until, semaphore.acquire_owned()).await
                    {
                        Ok(Ok(permit)) => permit,
                        _ => return Err(NoSlot::Share(self.per_uid)),
                    },
                };
                Some(permit)
            }
        };
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                match tokio::time::timeout_at(until, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(NoSlot::Exhausted),
                }
            }
        };
        Ok(self.new_slot(Some(permit), uid_permit, uid))
    }
}

impl BlockingSlot {
    /// A handle to mark the slot abandoned after it has moved to its thread.
    pub fn abandon_handle(&self) -> SlotAbandon {
        SlotAbandon {
            uid: self.uid,
            abandoned: self.abandoned.clone(),
            stuck: self.stuck.clone(),
            stuck_total: self.stuck_total.clone(),
        }
    }
}

/// Marks a slot's lookup abandoned: it counts against its uid until its thread ends.
#[derive(Debug)]
pub struct SlotAbandon {
    uid: Option<u32>,
    abandoned: Arc<std::sync::atomic::AtomicU8>,
    stuck: Arc<Mutex<HashMap<u32, usize>>>,
    stuck_total: Arc<std::sync::atomic::AtomicUsize>,
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
            self.stuck_total.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for BlockingSlot {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        // The uid's place in flight is given back with the permit; its entry in `in_flight`
        // is left for the uid's next lookup (the map is pruned as it grows: `uid_lookups`).
        drop(self.uid_permit.take());
        let Some(uid) = self.uid else { return };
        // Only an abandoned lookup was counted (`abandon` counts it under the lock, once, and
        // only while it is running); a finished one touches no lock shared by all connections.
        if self.abandoned.swap(FINISHED, Ordering::SeqCst) == ABANDONED {
            let mut stuck = self.stuck.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = stuck.get_mut(&uid) {
                *count -= 1;
                self.stuck_total.fetch_sub(1, Ordering::SeqCst);
                if *count == 0 {
                    stuck.remove(&uid);
                }
            }
        }
    }
}

/// How long a stop waits for connections to finish the request in hand.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Something that yields connections with their kernel-reported peer.
pub trait Accept {
    type Read: tokio::io::AsyncRead + Unpin + Send + Sync + Duplicate + 'static;
    type Write: tokio::io::AsyncWrite + Unpin + Send + Sync + Duplicate + 'static;
    /// What closes a connection's socket from outside its task (for a stop that cannot wait).
    type Handle: Send + 'static;

    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(Peer, Self::Read, Self::Write)>> + Send;

    /// A connection is being served as number `conn` (the service manager may keep a copy).
    fn opened(&self, _conn: u64, _read: &Self::Read) {}

    fn handle(read: &Self::Read) -> Self::Handle;

    /// Closes a connection for good: every copy of its socket (one kept by the service manager
    /// too) sees it closed, so its peer is never left waiting on an answer.
    fn close(&self, _conn: u64, read: Self::Read, write: Self::Write) {
        drop((read, write));
    }

    /// Closes the socket of a connection whose task is about to be dropped.
    fn force_close(&self, _conn: u64, _handle: &Self::Handle) {}
}

/// A connection the previous process handed over, with its peer as the kernel reports it now.
#[derive(Debug)]
pub struct Resumed<R, W> {
    pub carried: Carried,
    pub peer: Peer,
    pub read: R,
    pub write: W,
}

/// What a stop leaves: the connections parked for a handover (none when closing), and the
/// number the next connection gets.
#[derive(Debug)]
#[cfg_attr(
    not(unix),
    expect(dead_code, reason = "read by the handovers, which are Unix-only")
)]
pub struct Stopped<R, W> {
    pub parked: Vec<(Box<Carried>, R, W)>,
    /// Connections that were still busy when the stop could wait no longer, and were closed.
    pub forced: usize,
    pub next_conn: u64,
}

/// One stop signal per open connection, and what closes its socket. A connection waits on its
/// own receiver, so the frame loop shares no lock with other connections; this map is locked
/// only when a connection opens or closes, and at shutdown.
#[derive(Debug)]
struct Closers<H>(Mutex<HashMap<u64, Closer<H>>>);

/// A connection's stop signal and what closes its socket.
type Closer<H> = (watch::Sender<Option<Stop>>, H);

impl<H> Closers<H> {
    fn new() -> Self {
        Closers(Mutex::new(HashMap::new()))
    }

    fn register(&self, id: u64, handle: H) -> Shutdown {
        let (tx, rx) = watch::channel(None);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (tx, handle));
        rx
    }

    fn remove(&self, id: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Tells every open connection to stop (close or park) once idle; the first stop sent
    /// stands.
    fn stop_all(&self, stop: Stop) {
        for (tx, _) in self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            tx.send_if_modified(|sent| sent.is_none() && sent.replace(stop).is_none());
        }
    }

    /// Closes every connection still registered (its task has not ended, so its socket is open).
    fn force_close_all(&self, close: impl Fn(u64, &H)) -> usize {
        let open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, (_, handle)) in open.iter() {
            close(*id, handle);
        }
        open.len()
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

/// A connection task's result: what its frame loop ended with.
type TaskEnd<L> = (u64, Ended<<L as Accept>::Read, <L as Accept>::Write>);

/// Serves connections from `listener` -- first the ones `resumed` from a previous process --
/// until `stop` resolves; then stops accepting, and waits (bounded) for every connection to
/// answer what it has read: closed for [`Stop::Close`], given back for [`Stop::Park`].
/// Connections not yet accepted stay in the listening socket's queue.
pub async fn run<L: Accept>(
    listener: &mut L,
    shared: Arc<Shared>,
    resumed: Vec<Resumed<L::Read, L::Write>>,
    first_conn: u64,
    stop: impl Future<Output = Stop>,
) -> Stopped<L::Read, L::Write> {
    let max = shared.limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let closers = Arc::new(Closers::<L::Handle>::new());
    let shares = Arc::new(UidShares::new(shared.limits.max_connections_per_uid));
    let mut next_conn = first_conn;
    // Every connection's task, so that a stop can end the ones that do not finish in time.
    let mut tasks: tokio::task::JoinSet<TaskEnd<L>> = tokio::task::JoinSet::new();
    let mut closed_early = Vec::new();
    for resumed in resumed {
        let conn = resumed.carried.conn;
        next_conn = next_conn.max(conn + 1);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::refused(metrics::Refusal::Limit);
            closed_early.push((conn, resumed, format!("max_connections ({max}) reached")));
            continue;
        };
        let share = match shares.take(resumed.peer.uid) {
            Ok(share) => share,
            Err(held) => {
                metrics::refused(metrics::Refusal::PerUidShare);
                let limit = shared.limits.max_connections_per_uid;
                closed_early.push((
                    conn,
                    resumed,
                    format!("the uid holds {held} connections, its share (max_connections_per_uid {limit})"),
                ));
                continue;
            }
        };
        let Resumed {
            carried,
            peer,
            read,
            write,
        } = resumed;
        match Connection::resume(carried, peer, read, write, shared.clone()) {
            Ok(connection) => {
                metrics::adopted();
                spawn_connection::<L>(&mut tasks, &closers, connection, share, permit);
            }
            Err((why, read, write)) => {
                tracing::warn!(conn, peer = %peer, "handed-over connection not taken: {why}; closing it");
                listener.close(conn, read, write);
            }
        }
    }
    for (conn, resumed, why) in closed_early {
        let connection = Connection::new(
            conn,
            resumed.peer,
            resumed.read,
            resumed.write,
            shared.clone(),
        );
        tasks.spawn(async move { (conn, connection.refuse(Fault::NotAdopted(why)).await) });
    }
    tokio::pin!(stop);
    let how = loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break Stop::Close,
            },
            Some(ended) = tasks.join_next() => {
                finish(listener, ended);
                continue;
            }
            how = &mut stop => break how,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(ended) = tasks.join_next() => {
                finish(listener, ended);
                continue;
            }
            how = &mut stop => break how,
        };
        match accepted {
            Ok((peer, reader, writer)) => {
                metrics::accepted();
                let id = next_conn;
                next_conn += 1;
                let connection = Connection::new(id, peer, reader, writer, shared.clone());
                let share = match shares.take(peer.uid) {
                    Ok(share) => share,
                    Err(held) => {
                        metrics::refused(metrics::Refusal::PerUidShare);
                        let limit = shared.limits.max_connections_per_uid;
                        tasks.spawn(async move {
                            (
                                id,
                                connection.refuse(Fault::OverShare { held, limit }).await,
                            )
                        });
                        continue;
                    }
                };
                listener.opened(id, connection.reader());
                spawn_connection::<L>(&mut tasks, &closers, connection, share, permit);
            }
            Err(e) => {
                // Typically EMFILE/ENFILE: back off instead of spinning; connections that end
                // free descriptors.
                tracing::error!(error = %e, "accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    match how {
        Stop::Close => tracing::info!("stopping: no new connections; answering requests in hand"),
        Stop::Park => tracing::info!(
            connections = tasks.len(),
            "handing over: no new frames read; answering requests in hand"
        ),
    }
    closers.stop_all(how);
    let mut parked = Vec::new();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(ended) = tasks.join_next().await {
            if let Some(p) = finish(listener, ended) {
                parked.push(p);
            }
        }
    })
    .await;
    let mut forced = 0;
    if drained.is_err() {
        // A peer that does not read its answer, or a decision past its deadline: what is left
        // is closed, so that the stop is bounded (systemd's TimeoutStopSec is 20 s).
        forced = closers.force_close_all(|conn, handle| listener.force_close(conn, handle));
        tracing::warn!(
            connections = forced,
            "connections still busy after {DRAIN_TIMEOUT:?}; closing them"
        );
        tasks.shutdown().await;
    }
    Stopped {
        parked,
        forced,
        next_conn,
    }
}

/// A connection's task: its frame loop, then its slot and share given back.
fn spawn_connection<L: Accept>(
    tasks: &mut tokio::task::JoinSet<TaskEnd<L>>,
    closers: &Arc<Closers<L::Handle>>,
    connection: Connection<L::Read, L::Write>,
    share: Option<UidShare>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let id = connection.id();
    let shutdown = closers.register(id, L::handle(connection.reader()));
    let closers = closers.clone();
    let threads = connection.threads();
    let open = metrics::Open::new();
    tasks.spawn(async move {
        let _open = open;
        let ended = super::serving::drive(Box::pin(connection.run(shutdown)), &threads).await;
        closers.remove(id);
        drop(share);
        drop(permit);
        (id, ended)
    });
}

/// What an ended task leaves: a closed connection is closed for good; a parked one is given
/// back. A task that panicked or was cancelled has dropped its socket already.
fn finish<L: Accept>(
    listener: &L,
    ended: Result<TaskEnd<L>, tokio::task::JoinError>,
) -> Option<(Box<Carried>, L::Read, L::Write)> {
    match ended {
        Ok((conn, Ended::Closed(read, write))) => {
            listener.close(conn, read, write);
            None
        }
        Ok((_, Ended::Parked(carried, read, write))) => Some((carried, read, write)),
        Err(e) => {
            if e.is_panic() {
                tracing::error!("a connection task panicked: {e}");
            }
            None
        }
    }
}

#[cfg(unix)]
pub mod unix {
    use super::Accept;
    use crate::daemon::fd_store::FdStore;
    use crate::daemon::peer::Peer;
    use crate::daemon::serving::unix::{ConnRead, ConnWrite, shutdown, split};
    use std::os::fd::{AsFd, RawFd};
    use std::time::Duration;
    use tokio::net::UnixListener;

    /// The listening Unix socket, and the service manager's descriptor store when it keeps a
    /// copy of every connection (so that a restart does not close them).
    #[derive(Debug)]
    pub struct UnixAcceptor {
        pub listener: UnixListener,
        pub store: Option<FdStore>,
        /// How long a connection thread waits for a connection's next frame.
        pub linger: Duration,
    }

    /// The peer of a Unix connection, as the kernel reports it (`SO_PEERCRED`: the process
    /// that connected, fixed at `connect`).
    pub fn peer_of(stream: &impl AsFd) -> std::io::Result<Peer> {
        let cred =
            nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
        Ok(Peer {
            pid: u32::try_from(cred.pid()).ok().filter(|p| *p != 0),
            uid: Some(cred.uid()),
            gid: Some(cred.gid()),
        })
    }

    impl super::Duplicate for ConnRead {
        fn duplicate(&self) -> Option<Self> {
            Some(ConnRead::duplicate(self))
        }
    }

    impl super::Duplicate for ConnWrite {
        fn duplicate(&self) -> Option<Self> {
            Some(ConnWrite::duplicate(self))
        }
    }

    impl Accept for UnixAcceptor {
        type Read = ConnRead;
        type Write = ConnWrite;
        type Handle = RawFd;

        async fn accept(&mut self) -> std::io::Result<(Peer, ConnRead, ConnWrite)> {
            loop {
                let (stream, _) = self.listener.accept().await?;
                // Registered again by `split`, with the descriptor made blocking.
                let taken = stream.into_std().and_then(|stream| {
                    let peer = peer_of(&stream)?;
                    let (read, write) = split(stream, self.linger)?;
                    Ok((peer, read, write))
                });
                match taken {
                    Ok(taken) => return Ok(taken),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take a connection (its peer credentials?); dropping it");
                    }
                }
            }
        }

        fn opened(&self, conn: u64, read: &ConnRead) {
            if let Some(store) = &self.store {
                store.keep_connection(conn, read.fd().as_fd());
            }
        }

        fn handle(read: &ConnRead) -> RawFd {
            read.raw_fd()
        }

        fn close(&self, conn: u64, read: ConnRead, write: ConnWrite) {
            // Shut down, not only closed here: the service manager's copy would keep it open.
            shutdown(read.raw_fd());
            if let Some(store) = &self.store {
                store.forget_connection(conn);
            }
            drop((read, write));
        }

        fn force_close(&self, conn: u64, fd: &RawFd) {
            // The connection's task still owns the descriptor: it is open.
            shutdown(*fd);
            if let Some(store) = &self.store {
                store.forget_connection(conn);
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
    use interprocess::os::windows::named_pipe::tokio::{DuplexPipeStream, PipeListener};
    use interprocess::os::windows::named_pipe::{PipeListenerOptions, PipeMode, pipe_mode};
    use tokio::io::{ReadHalf, WriteHalf};

    type Stream = DuplexPipeStream<pipe_mode::Bytes>;

    /// A pipe is never served by a connection thread (its reads do not block there), so it
    /// is never rescued from one.
    impl super::Duplicate for ReadHalf<Stream> {
        fn duplicate(&self) -> Option<Self> {
            None
        }
    }

    impl super::Duplicate for WriteHalf<Stream> {
        fn duplicate(&self) -> Option<Self> {
            None
        }
    }

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
        /// A pipe instance is closed by dropping its task (no copy is kept anywhere else).
        type Handle = ();

        fn handle(_: &Self::Read) {}

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
