//! One connection: read a frame, validate it, decide, answer; any protocol fault closes the
//! connection without an answer (Deno then exits 87: fail closed).

use super::decision_log::{self, DecisionRecord, FaultRecord, Record};
use super::metrics;
use super::peer::{Facts, Peer, ProcDir};
use super::protected::Protected;
use super::reload::Snapshot;
use super::server::{NoSlot, Shared};
use super::symlinks::Kind;
use super::working_dirs::{self, WorkingDirs};
use permission_broker_policy::{DecidedBy, Decision, Policy, Resolved, Subject, needs_cwd};
use permission_broker_protocol::{
    Effect, FrameError, IdSequence, OutOfOrder, Permission, parse_request_ref, write_answer,
};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::sync::watch;

/// Why a connection was closed without an answer.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("frame exceeds {max} bytes")]
    Oversize { max: usize },
    #[error("frame not finished within {0:?}")]
    Timeout(Duration),
    #[error("answer not taken within {0:?}: the peer does not read")]
    WriteTimeout(Duration),
    #[error("connection closed in the middle of a frame ({0} bytes unread)")]
    Truncated(usize),
    #[error("{0}")]
    OutOfOrder(#[from] OutOfOrder),
    #[error("pid mismatch: {0}")]
    Pid(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    LogOverloaded(#[from] super::decision_log::Overloaded),
    #[error("peer uid {0:?} is not in allowed_uids")]
    NotAllowed(Option<u32>),
    #[error(
        "this uid already holds {held} connections, its share (max_connections_per_uid {limit})"
    )]
    OverShare { held: usize, limit: usize },
    #[error("handed over but not taken: {0}")]
    NotAdopted(String),
    /// Not a fault of the peer: the request's decision outlived the deadline on a connection
    /// thread, and the watchdog answered it and serves the connection now.
    #[error("taken over by the watchdog")]
    Rescued,
}

impl Fault {
    /// The kind a protocol fault is counted as; `None` for what is not the peer's fault on an
    /// open connection (a refusal at accept is counted as one; a rescue is no fault).
    fn kind(&self) -> Option<metrics::FaultKind> {
        use metrics::FaultKind as K;
        Some(match self {
            Fault::Frame(FrameError::NotUtf8 { .. }) => K::NotUtf8,
            Fault::Frame(FrameError::Blank) => K::Blank,
            Fault::Frame(FrameError::Json(_)) => K::Json,
            Fault::Frame(FrameError::Schema { .. }) => K::Schema,
            Fault::Oversize { .. } => K::Oversize,
            Fault::Timeout(_) => K::FrameTimeout,
            Fault::WriteTimeout(_) => K::WriteTimeout,
            Fault::Truncated(_) => K::Truncated,
            Fault::OutOfOrder(_) => K::IdOrder,
            Fault::Pid(_) => K::PidMismatch,
            Fault::Io(_) => K::Io,
            Fault::LogOverloaded(_) => K::LogOverloaded,
            Fault::NotAllowed(_)
            | Fault::OverShare { .. }
            | Fault::NotAdopted(_)
            | Fault::Rescued => return None,
        })
    }
}

/// A half of a connection's socket that a second frame loop can use too: how a connection whose
/// thread is stuck in a lookup goes on being served. `None` where that is not possible (the
/// Windows pipe, which is never served by a connection thread).
pub trait Duplicate: Sized {
    fn duplicate(&self) -> Option<Self>;
}

/// A request the watchdog answers (denied at the deadline) before the rescued connection reads
/// its next frame.
#[derive(Debug)]
struct Owed {
    id: u32,
    permission: Permission,
    value: Option<String>,
    started: Instant,
    snapshot: Arc<Snapshot>,
    reason: String,
}

/// A per-uid limit on fault warnings in the daemon's log: one local user sending 20,000 bad
/// frames a second must not flood it (journald drops past its burst, hiding everyone else's).
/// Locked only when a fault happens.
#[derive(Debug, Default)]
pub struct FaultWarnings(
    std::sync::Mutex<std::collections::HashMap<Option<u32>, (Instant, u32, u64)>>,
);

/// Whether a fault's warning is logged.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, after saying how many were left out before it.
    AfterSkipping(u64),
    No,
}

impl FaultWarnings {
    /// Warnings one uid may cause per window.
    pub const BURST: u32 = 20;
    pub const WINDOW: Duration = Duration::from_secs(5);

    pub fn admit(&self, uid: Option<u32>) -> Admit {
        self.admit_at(uid, Instant::now())
    }

    fn admit_at(&self, uid: Option<u32>, now: Instant) -> Admit {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: uids whose window has passed are forgotten once the map grows.
        if map.len() > 4096 {
            map.retain(|_, (start, _, skipped)| now - *start < Self::WINDOW || *skipped > 0);
        }
        let (start, count, skipped) = map.entry(uid).or_insert((now, 0, 0));
        if now - *start >= Self::WINDOW {
            let left_out = std::mem::take(skipped);
            *start = now;
            *count = 1;
            return if left_out > 0 {
                Admit::AfterSkipping(left_out)
            } else {
                Admit::Yes
            };
        }
        if *count < Self::BURST {
            *count += 1;
            Admit::Yes
        } else {
            *skipped += 1;
            Admit::No
        }
    }
}

/// Bytes read from the socket at a time. A Deno frame is about 150 bytes and only one is in
/// flight, so a small buffer costs nothing in speed and keeps an idle connection small; a
/// longer frame (up to `max_frame_bytes`) is read in several pieces.
const READ_BUFFER_BYTES: usize = 2 * 1024;

/// How a connection is told to stop while idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Close it (a stop without a successor).
    Close,
    /// Keep it open and give it back with its state, for the next process to go on serving it.
    #[cfg_attr(
        not(unix),
        expect(
            dead_code,
            reason = "handovers (upgrades, the descriptor store) are Unix-only"
        )
    )]
    Park,
}

/// What a connection carries across a handover to the next process: enough that the peer sees
/// no difference -- its ids still strictly increase, the bytes it sent and nobody read yet are
/// read next, its relative paths are still checked under every directory it may be in, and
/// the log goes on numbering it the same.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Carried {
    /// The connection's number in the log.
    pub conn: u64,
    /// As the kernel reported them at accept (checked again against `SO_PEERCRED` on adoption).
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// When the peer process started (`/proc/<pid>/stat`, field 22): the `/proc/<pid>` reopened
    /// by the next process must be the same process, not a pid reused since.
    pub start_time: Option<u64>,
    /// The last id answered.
    pub last_id: Option<u32>,
    /// Bytes received and not yet taken as a frame (a frame's start, or frames sent ahead), in
    /// hex: at most `max_frame_bytes` and a read buffer.
    #[serde(with = "hex_bytes")]
    pub pending: Vec<u8>,
    pub working_dirs: working_dirs::Saved,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        use std::fmt::Write;
        let mut text = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(text, "{b:02x}");
        }
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if text.len() % 2 != 0 {
            return Err(D::Error::custom("odd hex length"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| D::Error::custom("not hex"))
            })
            .collect()
    }
}

/// How a connection's frame loop ended: closed (the server closes the socket), or parked for a
/// handover with its state.
#[derive(Debug)]
pub enum Ended<R, W> {
    Closed(R, W),
    Parked(Box<Carried>, R, W),
}

/// The reader a connection reads from: bytes carried over from the previous process first,
/// then the socket.
#[derive(Debug)]
pub struct Prefixed<R> {
    prefix: Vec<u8>,
    at: usize,
    inner: R,
}

impl<R> Prefixed<R> {
    fn new(prefix: Vec<u8>, inner: R) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }

    fn rest(&self) -> &[u8] {
        &self.prefix[self.at..]
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Prefixed<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

pub struct Connection<R, W> {
    id: u64,
    peer: Peer,
    /// What deciding needs between requests.
    state: DecisionState,
    reader: BufReader<Prefixed<R>>,
    writer: W,
    ids: IdSequence,
    /// The frame being read; reused so a connection allocates once, not per request.
    line: Vec<u8>,
    out: Vec<u8>,
    shared: Arc<Shared>,
    /// The stop signal, kept for a rescue (which goes on with a copy of it).
    shutdown: Option<watch::Receiver<Option<Stop>>>,
    /// Answered first: set only on a connection the watchdog rescued.
    owed: Option<Owed>,
}

/// What a connection waits on for a stop: `None` until one is sent.
pub type Shutdown = watch::Receiver<Option<Stop>>;

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Duplicate + Send + Sync + 'static,
    W: AsyncWrite + Unpin + Duplicate + Send + Sync + 'static,
{
    pub fn new(id: u64, peer: Peer, reader: R, writer: W, shared: Arc<Shared>) -> Self {
        Connection {
            id,
            state: DecisionState::new(Arc::new(ProcDir::open(&peer))),
            peer,
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, Prefixed::new(Vec::new(), reader)),
            writer,
            ids: IdSequence::new(),
            line: Vec::with_capacity(512),
            out: Vec::with_capacity(256),
            shared,
            shutdown: None,
            owed: None,
        }
    }

    /// A connection handed over by the previous process, with the peer the kernel reports for
    /// its socket now. Refused (with why) if the peer is not the one recorded, or its process
    /// is not the one that connected.
    pub fn resume(
        carried: Carried,
        peer: Peer,
        reader: R,
        writer: W,
        shared: Arc<Shared>,
    ) -> Result<Self, (String, R, W)> {
        if (peer.pid, peer.uid, peer.gid) != (carried.pid, carried.uid, carried.gid) {
            return Err((
                format!(
                    "the kernel reports {peer}, but the handover recorded pid {:?} uid {:?} gid {:?}",
                    carried.pid, carried.uid, carried.gid
                ),
                reader,
                writer,
            ));
        }
        let proc = match carried.start_time {
            Some(_) => ProcDir::open(&peer),
            None => ProcDir::unavailable(&peer),
        };
        if carried.start_time.is_some() && proc.start_time() != carried.start_time {
            return Err((
                format!(
                    "process {} is not the one that connected (it started at another time): the peer has exited and its pid was reused",
                    peer.pid.unwrap_or_default()
                ),
                reader,
                writer,
            ));
        }
        let mut state = DecisionState::new(Arc::new(proc));
        state.working_dirs = WorkingDirs::restore(carried.working_dirs);
        Ok(Connection {
            id: carried.conn,
            state,
            peer,
            reader: BufReader::with_capacity(
                READ_BUFFER_BYTES,
                Prefixed::new(carried.pending, reader),
            ),
            writer,
            ids: IdSequence::resume(carried.last_id),
            line: Vec::with_capacity(512),
            out: Vec::with_capacity(256),
            shared,
            shutdown: None,
            owed: None,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The threads that may serve this connection while it is busy.
    pub fn threads(&self) -> Arc<super::serving::Threads> {
        self.shared.threads.clone()
    }

    /// The socket this connection reads from.
    pub fn reader(&self) -> &R {
        &self.reader.get_ref().inner
    }

    /// Ends the frame loop: closed, or parked with what the next process needs.
    fn end(self, stop: Stop) -> Ended<R, W> {
        let Connection {
            id,
            peer,
            state,
            reader,
            writer,
            ids,
            line,
            ..
        } = self;
        match stop {
            Stop::Close => Ended::Closed(reader.into_inner().inner, writer),
            Stop::Park => {
                // A frame cut short by the stop is in `line` (cleared once a frame is answered,
                // and by read_frame as it starts); then what the buffer holds; then what the
                // previous handover left unread.
                let mut pending = line;
                pending.extend_from_slice(reader.buffer());
                let prefixed = reader.into_inner();
                pending.extend_from_slice(prefixed.rest());
                let carried = Carried {
                    conn: id,
                    pid: peer.pid,
                    uid: peer.uid,
                    gid: peer.gid,
                    start_time: state.proc.start_time(),
                    last_id: ids.last(),
                    pending,
                    working_dirs: state.working_dirs.save(),
                };
                Ended::Parked(Box::new(carried), prefixed.inner, writer)
            }
        }
    }

    /// Serves requests until the peer hangs up, a fault occurs, or `shutdown` fires (or its
    /// sender is dropped) while the connection is idle. A request already read is always
    /// answered. The signal is this connection's own, so waiting for a frame touches no state
    /// shared with other connections.
    pub async fn run(mut self, mut shutdown: Shutdown) -> Ended<R, W> {
        self.shutdown = Some(shutdown.clone());
        if let Some(owed) = self.owed.take() {
            // A rescued connection: its request is answered (denied), then it goes on.
            let answered = self.respond_owed(owed).await;
            if let Err(fault) = answered {
                return self.fault(fault).await;
            }
        } else {
            tracing::debug!(conn = self.id, peer = %self.peer, "connection opened");
            if let Some(allowed) = &self.shared.allowed_uids
                && !self.peer.uid.is_some_and(|uid| allowed.contains(&uid))
            {
                let fault = Fault::NotAllowed(self.peer.uid);
                metrics::refused(metrics::Refusal::AllowedUids);
                self.record_fault(&fault).await;
                tracing::warn!(conn = self.id, peer = %self.peer, "{}; closing connection", fault.to_string().escape_debug());
                return self.end(Stop::Close);
            }
        }
        loop {
            let read = tokio::select! {
                // A stop is taken before another frame: a handover reads nothing new.
                biased;
                stop = shutdown.wait_for(Option::is_some) => {
                    Err(stop.ok().and_then(|stop| *stop).unwrap_or(Stop::Close))
                }
                read = self.read_frame() => Ok(read),
            };
            let read = match read {
                Ok(read) => read,
                Err(stop) => {
                    tracing::debug!(conn = self.id, ?stop, "idle connection stopped");
                    // Closing: frames already received whole (sent ahead, or behind one that
                    // waited on a lookup) are answered first. Parked, they go to the next
                    // process with the rest of the buffer.
                    if stop == Stop::Close
                        && let Err(fault) = self.answer_received().await
                    {
                        return self.fault(fault).await;
                    }
                    return self.end(stop);
                }
            };
            let outcome = match read {
                Ok(false) => {
                    tracing::debug!(conn = self.id, peer = %self.peer, "connection closed by peer");
                    return self.end(Stop::Close);
                }
                Ok(true) => {
                    let answered = self.answer().await;
                    // `line` holds only a frame still being read: a handover carries it over.
                    self.line.clear();
                    answered
                }
                Err(fault) => Err(fault),
            };
            if let Err(fault) = outcome {
                return self.fault(fault).await;
            }
        }
    }

    /// Answers every frame already received whole, reading nothing more from the socket.
    async fn answer_received(&mut self) -> Result<(), Fault> {
        loop {
            let whole = |bytes: &[u8]| memchr::memchr(b'\n', bytes).is_some();
            let buffered = self.reader.buffer();
            let received =
                whole(buffered) || (buffered.is_empty() && whole(self.reader.get_ref().rest()));
            if !received || !self.read_frame().await? {
                return Ok(());
            }
            let answered = self.answer().await;
            self.line.clear();
            answered?;
        }
    }

    /// Ends the connection for a fault: recorded, warned about (a few per uid), closed.
    async fn fault(self, fault: Fault) -> Ended<R, W> {
        if let Fault::Rescued = fault {
            // Served by the watchdog's frame loop now: this one leaves the socket alone.
            tracing::debug!(
                conn = self.id,
                "stale frame loop of a rescued connection ended"
            );
            return self.end(Stop::Close);
        }
        if let Some(kind) = fault.kind() {
            metrics::fault(kind);
        }
        self.record_fault(&fault).await;
        // Every fault is in the decision log; the daemon's own log takes a few per uid at a
        // time, and says how many it left out.
        match self.shared.fault_warnings.admit(self.peer.uid) {
            Admit::No => return self.end(Stop::Close),
            Admit::AfterSkipping(skipped) => tracing::warn!(
                uid = self.peer.uid,
                skipped,
                "{skipped} protocol faults from this uid were not logged here (more than {} in {:?}); each is in the decision log, if there is one",
                FaultWarnings::BURST,
                FaultWarnings::WINDOW
            ),
            Admit::Yes => {}
        }
        tracing::warn!(
            conn = self.id,
            pid = self.peer.pid,
            uid = self.peer.uid,
            gid = self.peer.gid,
            last_id = self.ids.last(),
            // A fault's text can hold what the peer sent (a JSON key): escaped, so that no peer
            // can write a line of its own into the daemon's log.
            fault = %fault.to_string().escape_debug(),
            "protocol fault; closing connection without an answer"
        );
        self.end(Stop::Close)
    }

    /// Closes a connection at accept, without reading from it: logged as a fault with the peer.
    pub async fn refuse(self, fault: Fault) -> Ended<R, W> {
        self.record_fault(&fault).await;
        tracing::warn!(conn = self.id, peer = %self.peer, "{}; closing connection", fault.to_string().escape_debug());
        self.end(Stop::Close)
    }

    async fn record_fault(&self, fault: &Fault) {
        if let Some(log) = &self.shared.log {
            // The facts if read; a fault never waits to read them (the exe check stats a path).
            let facts = self.state.facts.as_ref();
            let record = Record::Fault(FaultRecord {
                time: decision_log::now(),
                conn: self.id,
                pid: self.peer.pid,
                start_time: facts
                    .map(|f| f.start_time)
                    .unwrap_or_else(|| self.state.proc.start_time()),
                uid: self.peer.uid,
                gid: self.peer.gid,
                exe: facts.and_then(|f| f.exe.clone()),
                last_id: self.ids.last(),
                fault: fault.to_string(),
            });
            if log.record_closing(record).await.is_err() {
                tracing::error!(
                    conn = self.id,
                    "decision log overloaded: fault not recorded"
                );
            }
        }
    }

    /// Reads one `\n`-terminated frame into `self.line` (without the `\n`). Returns `false` on a
    /// clean end of stream between frames. Waiting for a frame to start is unbounded (idle
    /// connections are normal); once it has started it must end within `frame_timeout`.
    async fn read_frame(&mut self) -> Result<bool, Fault> {
        self.line.clear();
        let max = self.shared.limits.max_frame_bytes;
        let buffered = self.reader.fill_buf().await?;
        if buffered.is_empty() {
            return Ok(false);
        }
        // The common case: the whole frame arrived in one read. Take it without arming a timer.
        let window = &buffered[..buffered.len().min(max + 1)];
        if let Some(end) = memchr::memchr(b'\n', window) {
            self.line.extend_from_slice(&buffered[..end]);
            self.reader.consume(end + 1);
            return Ok(true);
        }
        let timeout = self.shared.limits.frame_timeout;
        let mut bounded = (&mut self.reader).take(max as u64 + 1);
        let line = &mut self.line;
        match tokio::time::timeout(timeout, bounded.read_until(b'\n', line)).await {
            Err(_) => return Err(Fault::Timeout(timeout)),
            Ok(read) => read?,
        };
        match self.line.last() {
            Some(b'\n') => {
                self.line.pop();
                Ok(true)
            }
            _ if self.line.len() > max => Err(Fault::Oversize { max }),
            _ => Err(Fault::Truncated(self.line.len())),
        }
    }

    async fn answer(&mut self) -> Result<(), Fault> {
        // Taken out while it is answered, so the request can borrow it beside `&mut self`.
        let line = std::mem::take(&mut self.line);
        let answered = self.answer_frame(&line).await;
        self.line = line;
        answered
    }

    async fn answer_frame(&mut self, line: &[u8]) -> Result<(), Fault> {
        let started = Instant::now();
        let request = parse_request_ref(line)?;
        self.ids.advance(request.id)?;
        if let Some(claimed) = request.pid {
            self.peer.check_claimed_pid(claimed).map_err(Fault::Pid)?;
        }
        let permission = request.permission;
        let value = request.value.as_deref();
        let snapshot = self.shared.store.current();
        let policy = &snapshot.policy;
        let ruling = if self
            .state
            .may_block(policy, self.shared.log.is_some(), permission, value)
        {
            match self.decide_in_place(request.id, &snapshot, permission, value, started) {
                InPlace::Decided(ruling) => ruling,
                InPlace::Rescued => return Err(Fault::Rescued),
                InPlace::NotHere => {
                    decide_off_loop(
                        &mut self.state,
                        &self.shared,
                        self.peer,
                        self.id,
                        &snapshot,
                        permission,
                        value,
                    )
                    .await
                }
            }
        } else {
            self.state
                .decide(&self.shared, &self.peer, &snapshot, permission, value)
        };
        self.respond(request.id, permission, value, &snapshot, ruling, started)
            .await
    }

    /// Decides a request that may block right here, on the connection's thread, with the
    /// watchdog armed to answer it (denied) and go on serving the connection if the lookup
    /// outlives the deadline. That is the blocking pool's isolation without its two thread
    /// hand-offs per request. Not here on the event loop, or with no slot free now.
    fn decide_in_place<'p>(
        &mut self,
        id: u32,
        snapshot: &'p Arc<Snapshot>,
        permission: Permission,
        value: Option<&str>,
        started: Instant,
    ) -> InPlace<'p> {
        let pool = &self.shared.blocking;
        if !super::serving::can_decide_in_place() || !pool.watchdog.alive() {
            return InPlace::NotHere;
        }
        let Some(slot) = pool.in_place_slot(self.peer.uid) else {
            return InPlace::NotHere;
        };
        let Some(rescue) = self.rescue(id, snapshot, permission, value, started, &slot) else {
            return InPlace::NotHere;
        };
        let deadline = Instant::now() + pool.deadline;
        let (state, shared, peer) = (&mut self.state, &self.shared, &self.peer);
        let decided = super::serving::in_place(&pool.watchdog, deadline, rescue, move || {
            // Held until the lookup returns, rescued or not: an abandoned one counts against
            // its uid's share until then.
            let _slot = slot;
            state.decide(shared, peer, snapshot, permission, value)
        });
        match decided {
            Some(ruling) => InPlace::Decided(ruling),
            None => InPlace::Rescued,
        }
    }

    /// What the watchdog does if the decision in place outlives the deadline: marks the lookup
    /// abandoned, and sends on a frame loop for this connection that answers the request
    /// (denied, as the blocking pool's deadline does) and goes on serving it, with what this one
    /// has now: the ids, the bytes read ahead, the working directories before this request.
    fn rescue(
        &self,
        id: u32,
        snapshot: &Arc<Snapshot>,
        permission: Permission,
        value: Option<&str>,
        started: Instant,
        slot: &super::server::BlockingSlot,
    ) -> Option<super::serving::Rescue> {
        let read = self.reader.get_ref().inner.duplicate()?;
        let write = self.writer.duplicate()?;
        let shutdown = self.shutdown.clone()?;
        let mut pending = self.reader.buffer().to_vec();
        pending.extend_from_slice(self.reader.get_ref().rest());
        let abandon = slot.abandon_handle();
        let (conn, peer, last_id) = (self.id, self.peer, self.ids.last());
        let (proc, working_dirs) = (self.state.proc.clone(), self.state.working_dirs.clone());
        // What was known of the peer goes on (shared, not copied: this is made per request).
        let facts = self.state.facts.clone();
        let (shared, snapshot) = (self.shared.clone(), snapshot.clone());
        let value = value.map(str::to_owned);
        Some(Box::new(move |send| {
            abandon.abandon();
            let deadline = shared.blocking.deadline;
            shared
                .blocking
                .deadline_denials
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(conn, peer = %peer, permission = %permission, value = ?value, ?deadline, "deciding took longer than the request deadline; denied, lookup abandoned");
            let mut state = DecisionState::new(proc);
            state.working_dirs = working_dirs;
            state.facts = facts;
            let rescued = Connection {
                id: conn,
                state,
                peer,
                reader: BufReader::with_capacity(READ_BUFFER_BYTES, Prefixed::new(pending, read)),
                writer: write,
                ids: IdSequence::resume(last_id),
                line: Vec::with_capacity(512),
                out: Vec::with_capacity(256),
                shared,
                shutdown: None,
                owed: Some(Owed {
                    id,
                    permission,
                    value,
                    started,
                    snapshot,
                    reason: deadline_reason(deadline),
                }),
            };
            let next: super::serving::Boxed<Ended<R, W>> = Box::pin(rescued.run(shutdown));
            send(Box::new(next));
        }))
    }

    /// Answers the request a rescue owes.
    async fn respond_owed(&mut self, owed: Owed) -> Result<(), Fault> {
        let ruling = Ruling::unresolvable(owed.reason);
        self.respond(
            owed.id,
            owed.permission,
            owed.value.as_deref(),
            &owed.snapshot,
            ruling,
            owed.started,
        )
        .await
    }

    /// Records the decision (before the answer leaves: no decision without a record) and
    /// writes the answer.
    async fn respond(
        &mut self,
        id: u32,
        permission: Permission,
        value: Option<&str>,
        snapshot: &Snapshot,
        ruling: Ruling<'_>,
        started: Instant,
    ) -> Result<(), Fault> {
        let policy = &snapshot.policy;
        let facts = self.state.facts.as_ref();
        let exe = facts.and_then(|f| f.exe.as_deref());
        let unit = facts.and_then(|f| f.unit.as_deref());
        let decision = &ruling.decision;
        // Audit mode records the verdict and (mostly) answers allow: `Policy::answer`. The
        // broker's own files are refused in every mode.
        let answered = if ruling.protected {
            Effect::Deny
        } else {
            policy.answer(permission, value, decision)
        };
        let rule = match (ruling.protected, decision.decided_by) {
            (true, _) => "broker-files",
            (_, DecidedBy::Rule(i)) => policy.rule(i).id.as_str(),
            (_, DecidedBy::Default) => "default",
            (_, DecidedBy::Unresolvable) => "unresolvable",
        };
        let micros = started.elapsed().as_micros() as u64;
        // What the user reads (Deno prints it instead of its own message): what was asked, as
        // resolved, and where a link led, then the policy's reason and rule.
        let message = (answered == Effect::Deny).then(|| {
            let shown = ruling.resolved.as_deref().or(value);
            let shown = match (shown, ruling.target.as_deref()) {
                (Some(shown), Some(target)) if target != shown => {
                    Some(Cow::Owned(format!("{shown} (a link to {target})")))
                }
                (shown, _) => shown.map(Cow::Borrowed),
            };
            policy.deny_message().render(
                permission.as_str(),
                shown.as_deref(),
                decision.reason.as_deref().unwrap_or(""),
                rule,
            )
        });
        // The record is queued before the answer leaves: no decision without a record.
        if let Some(log) = &self.shared.log {
            // Each shown only where it differs from what came before it.
            let target = ruling
                .target
                .filter(|t| Some(t) != ruling.resolved.as_ref());
            let resolved = ruling.resolved.filter(|r| Some(r.as_str()) != value);
            log.record(Record::Decision(Box::new(DecisionRecord {
                time: decision_log::now(),
                conn: self.id,
                pid: self.peer.pid,
                start_time: facts.and_then(|f| f.start_time),
                uid: self.peer.uid,
                gid: self.peer.gid,
                groups: facts.and_then(|f| f.groups.clone()),
                exe: exe.map(str::to_owned),
                unit: unit.map(str::to_owned),
                id,
                permission: permission.as_str(),
                value: value.map(str::to_owned),
                resolved,
                target,
                decision: decision.effect.as_str(),
                answered: answered.as_str(),
                mode: policy.mode().as_str(),
                rule: rule.to_owned(),
                reason: decision.reason.as_deref().map(str::to_owned),
                revision: snapshot.revision.clone(),
                micros,
            })))
            .await?;
        }
        self.out.clear();
        write_answer(
            &mut self.out,
            id,
            answered,
            message.as_deref().unwrap_or(""),
        );
        // A peer that does not take its answer within frame_timeout (it writes and never reads,
        // so its socket buffer is full) is disconnected: it must not pin the daemon.
        let timeout = self.shared.limits.frame_timeout;
        let written = tokio::time::timeout(timeout, async {
            self.writer.write_all(&self.out).await?;
            self.writer.flush().await
        })
        .await;
        match written {
            Ok(result) => result?,
            Err(_) => return Err(Fault::WriteTimeout(timeout)),
        }
        let slot = match ruling.protected {
            true => metrics::RuleSlot::BROKER_FILES,
            false => metrics::RuleSlot::of(decision.decided_by, &snapshot.rule_slots),
        };
        metrics::decided(
            permission,
            decision.effect,
            answered,
            policy.mode(),
            slot,
            started,
        );
        tracing::debug!(
            conn = self.id,
            pid = self.peer.pid,
            uid = self.peer.uid,
            id = id,
            permission = %permission,
            value = ?value,
            decision = %decision.effect,
            mode = policy.mode().as_str(),
            revision = %snapshot.revision,
            rule,
            micros,
            "decision"
        );
        Ok(())
    }
}

/// Why a request was denied at the deadline.
fn deadline_reason(deadline: Duration) -> String {
    format!(
        "denied: deciding took longer than the broker's request deadline ({deadline:?}): a file system or account lookup it needs is not answering"
    )
}

/// How a decision in place went.
enum InPlace<'p> {
    Decided(Ruling<'p>),
    /// The watchdog answered it and serves the connection now.
    Rescued,
    /// Not possible here: decide on the blocking pool.
    NotHere,
}

/// Decides on the blocking pool, within the request deadline. A request whose lookups
/// stall (a hung FUSE or NFS mount, a stuck NSS) is denied when the deadline passes and its
/// lookup abandoned, still holding its pool slot until the kernel lets it go; when every slot
/// is held, a request that needs one is denied at once instead of queueing behind them. Other
/// connections' requests never wait for any of it.
async fn decide_off_loop(
    state: &mut DecisionState,
    shared: &Arc<Shared>,
    peer: Peer,
    conn: u64,
    snapshot: &Arc<Snapshot>,
    permission: Permission,
    value: Option<&str>,
) -> Ruling<'static> {
    let pool = &shared.blocking;
    let until = tokio::time::Instant::now() + pool.deadline;
    let slot = match pool.slot(peer.uid, until).await {
        Ok(slot) => slot,
        Err(why) => {
            let counter = match why {
                NoSlot::Share(_) => &pool.no_slot_denials[0],
                NoSlot::Exhausted => &pool.no_slot_denials[1],
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(conn = conn, peer = %peer, permission = %permission, value = ?value, ?why, "no blocking slot for a decision that may block; denying");
            return Ruling::unresolvable(match why {
                NoSlot::Share(share) => format!(
                    "denied: {share} of this user's earlier requests are still waiting on file systems or account lookups that do not answer (a hung mount?); try again later"
                ),
                NoSlot::Exhausted => format!(
                    "denied: the broker's {} file-system workers stayed busy past the request deadline ({:?}): lookups are not answering (a hung mount?)",
                    pool.size, pool.deadline
                ),
            });
        }
    };
    let abandon = slot.abandon_handle();
    // A copy stays here: if the lookup is abandoned, the connection goes on with it.
    let kept = state.working_dirs.clone();
    let fresh = DecisionState::new(state.proc.clone());
    let mut moved = std::mem::replace(state, fresh);
    let (shared_job, snapshot) = (shared.clone(), snapshot.clone());
    let owned_value = value.map(str::to_owned);
    let job = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let ruling = moved
            .decide(
                &shared_job,
                &peer,
                &snapshot,
                permission,
                owned_value.as_deref(),
            )
            .into_owned();
        (ruling, moved)
    });
    match tokio::time::timeout_at(until, job).await {
        Ok(Ok((ruling, back))) => {
            *state = back;
            ruling
        }
        Ok(Err(e)) => {
            tracing::error!(conn = conn, "deciding failed: {e}");
            state.working_dirs = kept;
            Ruling::unresolvable("denied: the broker failed to decide this request".to_owned())
        }
        Err(_) => {
            abandon.abandon();
            pool.deadline_denials
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(conn = conn, peer = %peer, permission = %permission, value = ?value, deadline = ?pool.deadline, "deciding took longer than the request deadline; denied, lookup abandoned");
            state.working_dirs = kept;
            Ruling::unresolvable(deadline_reason(pool.deadline))
        }
    }
}

/// What a connection keeps between requests to decide them: the peer's `/proc` handle, its
/// possible working directories, and its facts. Moved to the blocking pool and back for a
/// request that may block.
#[derive(Debug)]
struct DecisionState {
    /// The peer's `/proc/<pid>`, opened at accept: a handle bound to the process that
    /// connected, so a pid reused after it exits cannot lend another process's facts.
    proc: Arc<ProcDir>,
    /// Where this process may open relative paths from.
    working_dirs: WorkingDirs,
    /// Read from /proc the first time a policy with `when` rules needs them.
    facts: Option<Arc<Facts>>,
}

impl DecisionState {
    fn new(proc: Arc<ProcDir>) -> DecisionState {
        DecisionState {
            proc,
            working_dirs: WorkingDirs::default(),
            facts: None,
        }
    }

    /// Whether deciding this request may wait on a file system or an account database: a path
    /// (read, write, ffi, a command or socket path, a relative value), or facts not read yet.
    fn may_block(
        &self,
        policy: &Policy,
        logged: bool,
        permission: Permission,
        value: Option<&str>,
    ) -> bool {
        let facts_needed = (policy.uses_subject() || logged)
            && self
                .facts
                .as_ref()
                .is_none_or(|f| policy.uses_names() && !f.names_read);
        facts_needed
            || value.is_some_and(|value| match permission {
                Permission::Read | Permission::Write | Permission::Ffi => true,
                Permission::Net | Permission::Import => value.starts_with("unix:"),
                Permission::Run => value.contains('/'),
                Permission::Env | Permission::Sys => false,
            })
    }

    /// Reads what the request needs and decides it.
    fn decide<'p>(
        &mut self,
        shared: &Shared,
        peer: &Peer,
        snapshot: &'p Snapshot,
        permission: Permission,
        value: Option<&str>,
    ) -> Ruling<'p> {
        let policy = &snapshot.policy;
        let relative = needs_cwd(permission, value);
        // The directory it is in now is one it may open a relative path from.
        let current = if relative {
            self.proc
                .cwd()
                .inspect(|cwd| self.working_dirs.add_dir(cwd))
                .inspect_err(|e| tracing::warn!(peer = %peer, "{e}"))
                .ok()
        } else {
            None
        };
        // Read once per connection: for `when` rules, and for the decision log's forensics.
        if (policy.uses_subject() || shared.log.is_some()) && self.facts.is_none() {
            self.facts = Some(Arc::new(self.proc.facts()));
        }
        if policy.uses_names()
            && let Some(facts) = &mut self.facts
            && !facts.names_read
        {
            super::peer::account_names(peer, Arc::make_mut(facts));
        }
        let facts = self.facts.as_ref();
        let subject = Subject {
            pid: peer.pid.unwrap_or(0),
            uid: peer.uid,
            gid: peer.gid,
            groups: facts.and_then(|f| f.groups.as_deref()),
            user: facts.and_then(|f| f.user.as_deref()),
            group: facts.and_then(|f| f.group.as_deref()),
            group_names: facts.and_then(|f| f.group_names.as_deref()),
            exe: facts.and_then(|f| f.exe.as_deref()),
            unit: facts.and_then(|f| f.unit.as_deref()),
            cwd: None,
        };
        let mut decider = Decider {
            proc: &self.proc,
            working_dirs: &mut self.working_dirs,
            protected: &shared.protected,
            policy_files: &snapshot.files,
        };
        decider.decide(
            policy,
            permission,
            value,
            relative,
            current.as_deref(),
            &subject,
        )
    }
}

/// What deciding one request needs of its connection.
struct Decider<'c> {
    proc: &'c ProcDir,
    working_dirs: &'c mut WorkingDirs,
    protected: &'c Protected,
    /// The real paths of the running policy's files.
    policy_files: &'c [String],
}

impl Decider<'_> {
    /// Decides one request: the built-in protection of the broker's files, then the policy --
    /// for a relative path, under every working directory the process may have
    /// ([`WorkingDirs`]); and keeps that set up to date with what was allowed.
    fn decide<'p>(
        &mut self,
        policy: &'p Policy,
        permission: Permission,
        value: Option<&str>,
        relative: bool,
        current: Option<&str>,
        subject: &Subject<'_>,
    ) -> Ruling<'p> {
        if relative {
            let Some(dirs) = self.working_dirs.dirs() else {
                return Ruling::unresolvable(format!(
                    "denied: relative path `{}`: this process may have had more than {} working directories, so where it opens a relative path cannot be known; pass an absolute path",
                    value.unwrap_or_default(),
                    working_dirs::MAX_DIRS
                ));
            };
            if dirs.is_empty() {
                return Ruling::unresolvable(format!(
                    "denied: relative path `{}` cannot be resolved: the working directory of process {} is unknown",
                    value.unwrap_or_default(),
                    subject.pid
                ));
            }
        }
        let mut targets: Vec<(String, Kind)> = Vec::new();
        if !relative {
            let ruling = self.decide_one(policy, permission, value, subject, &mut targets);
            return self.admit(policy, permission, value, false, subject, ruling, &targets);
        }
        // Under each possible working directory, the current one first: the first deny
        // decides; all allowed, the current directory's decision stands.
        // Shared, not copied: deciding may add to the set, and what is walked is the set as it
        // was when the request came.
        let all = self.working_dirs.shared_dirs();
        let dirs: &[Box<str>] = &all;
        let first = current.and_then(|c| dirs.iter().position(|d| &**d == c));
        let order = first
            .into_iter()
            .chain((0..dirs.len()).filter(|i| Some(*i) != first));
        let mut outcome: Option<Ruling<'p>> = None;
        for dir in order.map(|i| &dirs[i]) {
            let subject = Subject {
                cwd: Some(dir),
                ..*subject
            };
            let ruling = self.decide_one(policy, permission, value, &subject, &mut targets);
            if ruling.decision.effect == Effect::Deny {
                outcome = Some(match outcome {
                    Some(_) => ruling.denied_from_other_dir(value.unwrap_or_default(), dir),
                    None => ruling,
                });
                break;
            }
            outcome.get_or_insert(ruling);
        }
        let Some(ruling) = outcome else {
            return Ruling::unresolvable("denied: no working directory".to_owned());
        };
        self.admit(policy, permission, value, true, subject, ruling, &targets)
    }

    /// Keeps track of an allowed request: a relative value is remembered (every new directory
    /// is checked against it), and a directory it was allowed to read or create becomes a
    /// possible working directory -- unless from there an earlier relative path would reach a
    /// denied file, in which case this request is denied instead.
    #[allow(clippy::too_many_arguments)]
    fn admit<'p>(
        &mut self,
        policy: &'p Policy,
        permission: Permission,
        value: Option<&str>,
        relative: bool,
        subject: &Subject<'_>,
        ruling: Ruling<'p>,
        targets: &[(String, Kind)],
    ) -> Ruling<'p> {
        if ruling.decision.effect == Effect::Deny {
            return ruling;
        }
        // A `Deno.chdir` is a read check of its directory: a directory read is one the process
        // may be in. (A path read while missing or a file and made a directory in the moment
        // before the chdir is not counted: SECURITY.md, known limits.)
        for (dir, kind) in targets.iter().filter(|_| permission == Permission::Read) {
            if *kind != Kind::Directory || self.working_dirs.contains(dir) {
                continue;
            }
            let earlier = self.working_dirs.shared_relatives();
            for (earlier_permission, earlier_value) in earlier.iter() {
                let from_dir = Subject {
                    cwd: Some(dir),
                    ..*subject
                };
                let mut ignored = Vec::new();
                let check = self.decide_one(
                    policy,
                    *earlier_permission,
                    Some(earlier_value),
                    &from_dir,
                    &mut ignored,
                );
                if check.decision.effect == Effect::Deny {
                    return check.denied_as_new_dir(dir, earlier_value);
                }
            }
            self.working_dirs.add_dir(dir);
        }
        if relative
            && let Some(value) = value
            && !self.working_dirs.add_relative(permission, value)
        {
            return Ruling::unresolvable(format!(
                "denied: relative path `{value}`: this process has used more than {} relative paths; pass an absolute path",
                working_dirs::MAX_RELATIVES
            ));
        }
        ruling
    }

    /// The policy's decision on one value under one working directory, after the built-in
    /// protection. Collects the real locations looked at (with what they are on disk) in
    /// `targets`.
    fn decide_one<'p>(
        &mut self,
        policy: &'p Policy,
        permission: Permission,
        value: Option<&str>,
        subject: &Subject<'_>,
        targets: &mut Vec<(String, Kind)>,
    ) -> Ruling<'p> {
        let normalized = policy.normalize(permission, value, subject);
        let lexical = normalized.as_ref().ok().and_then(Resolved::display);
        let proc = &self.proc;
        let first_target = targets.len();
        let decision = {
            let mut resolve = |path: &str| {
                proc.resolve_with_kind(path).map(|(real, kind)| {
                    targets.push((real.clone(), kind));
                    real
                })
            };
            policy.decide_normalized(permission, &normalized, subject, &mut resolve)
        };
        // Lexical policies do not look at the filesystem; the working directories still need to
        // know whether a read is of a directory: one `stat`, no walk.
        if targets.len() == first_target
            && let Some(path) = lexical.as_deref().and_then(file_path)
            && permission == Permission::Read
        {
            targets.push((path.to_owned(), self.proc.kind_of(path)));
        }
        let target = targets.get(first_target).map(|(real, _)| real.clone());
        let protected = lexical
            .as_deref()
            .and_then(file_path)
            .into_iter()
            .chain(target.as_deref())
            .find_map(|path| {
                self.protected
                    .check(permission, path)
                    .or_else(|| Protected::check_policy_files(self.policy_files, permission, path))
            });
        match protected {
            Some(reason) => Ruling {
                decision: Decision {
                    effect: Effect::Deny,
                    decided_by: DecidedBy::Unresolvable,
                    reason: Some(Cow::Borrowed(reason)),
                },
                protected: true,
                resolved: lexical,
                target,
            },
            None => Ruling {
                decision,
                protected: false,
                resolved: lexical,
                target,
            },
        }
    }
}

/// The path part of a normalised value that names a file: a path, or a `unix:` socket.
fn file_path(normalized: &str) -> Option<&str> {
    let path = normalized.strip_prefix("unix:").unwrap_or(normalized);
    path.starts_with('/').then_some(path)
}

/// A decision with what went into it, for the answer and the record.
#[derive(Debug)]
struct Ruling<'p> {
    decision: Decision<'p>,
    /// Denied by the built-in protection of the broker's own files.
    protected: bool,
    /// The value made absolute and normalised.
    resolved: Option<String>,
    /// Its real location, symlinks followed.
    target: Option<String>,
}

impl<'p> Ruling<'p> {
    /// The same ruling, owning its reason: for one decided on the blocking pool.
    fn into_owned(self) -> Ruling<'static> {
        Ruling {
            decision: Decision {
                effect: self.decision.effect,
                decided_by: self.decision.decided_by,
                reason: self.decision.reason.map(|r| Cow::Owned(r.into_owned())),
            },
            protected: self.protected,
            resolved: self.resolved,
            target: self.target,
        }
    }

    fn unresolvable(reason: String) -> Ruling<'p> {
        Ruling {
            decision: Decision {
                effect: Effect::Deny,
                decided_by: DecidedBy::Unresolvable,
                reason: Some(Cow::Owned(reason)),
            },
            protected: false,
            resolved: None,
            target: None,
        }
    }

    /// This deny came from a working directory other than the current one: say so.
    fn denied_from_other_dir(mut self, value: &str, dir: &str) -> Ruling<'p> {
        let reason = self.decision.reason.as_deref().unwrap_or_default();
        self.decision.reason = Some(Cow::Owned(format!(
            "{reason} (relative path `{value}` from `{dir}`, a working directory this process may have)"
        )));
        self
    }

    /// This request would make `dir` a working directory from which the earlier relative
    /// `value` is denied.
    fn denied_as_new_dir(mut self, dir: &str, value: &str) -> Ruling<'p> {
        let reason = self.decision.reason.as_deref().unwrap_or_default();
        self.decision.reason = Some(Cow::Owned(format!(
            "denied: `{dir}` could become this process's working directory, and the relative path `{value}` allowed earlier would then be denied there: {reason}"
        )));
        self.resolved = Some(dir.to_owned());
        self.target = None;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_fault_warnings_is_cut_and_what_was_cut_is_counted_once() {
        let warnings = FaultWarnings::default();
        let t0 = Instant::now();
        for _ in 0..FaultWarnings::BURST {
            assert_eq!(warnings.admit_at(Some(7), t0), Admit::Yes);
        }
        for _ in 0..30 {
            assert_eq!(warnings.admit_at(Some(7), t0), Admit::No);
        }
        assert_eq!(
            warnings.admit_at(Some(8), t0),
            Admit::Yes,
            "another uid is not cut"
        );
        let later = t0 + FaultWarnings::WINDOW;
        assert_eq!(warnings.admit_at(Some(7), later), Admit::AfterSkipping(30));
        assert_eq!(warnings.admit_at(Some(7), later), Admit::Yes);
    }
}
