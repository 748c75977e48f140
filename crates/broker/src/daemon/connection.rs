//! One connection: read a frame, validate it, decide, answer; any protocol fault closes the
//! connection without an answer (Deno then exits 87: fail closed).

use super::decision_log::{self, DecisionRecord, FaultRecord, Record};
use super::peer::{Facts, Peer, ProcDir};
use super::server::Shared;
use permission_broker_policy::{DecidedBy, Resolved, Subject, needs_cwd};
use permission_broker_protocol::{
    FrameError, IdSequence, OutOfOrder, parse_request_ref, write_answer,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

/// Why a connection was closed without an answer.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("frame exceeds {max} bytes")]
    Oversize { max: usize },
    #[error("frame not finished within {0:?}")]
    Timeout(Duration),
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
}

/// Bytes read from the socket at a time. A Deno frame is about 150 bytes and only one is in
/// flight, so a small buffer costs nothing in speed and keeps an idle connection small; a
/// longer frame (up to `max_frame_bytes`) is read in several pieces.
const READ_BUFFER_BYTES: usize = 2 * 1024;

pub struct Connection<R, W> {
    id: u64,
    peer: Peer,
    /// The peer's `/proc/<pid>`, opened when a request first needs it (a relative path, `when`
    /// facts, symlink resolution) and held from then on; a connection that never needs it holds
    /// one descriptor, not two.
    proc: Option<ProcDir>,
    reader: BufReader<R>,
    writer: W,
    ids: IdSequence,
    /// Read from /proc the first time a policy with `when` rules needs them.
    facts: Option<Facts>,
    /// The frame being read; reused so a connection allocates once, not per request.
    line: Vec<u8>,
    out: Vec<u8>,
    shared: Arc<Shared>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    pub fn new(id: u64, peer: Peer, reader: R, writer: W, shared: Arc<Shared>) -> Self {
        Connection {
            id,
            proc: None,
            peer,
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, reader),
            writer,
            ids: IdSequence::new(),
            facts: None,
            line: Vec::with_capacity(512),
            out: Vec::with_capacity(256),
            shared,
        }
    }

    /// Serves requests until the peer hangs up, a fault occurs, or `shutdown` fires (or its
    /// sender is dropped) while the connection is idle. A request already read is always
    /// answered. The signal is this connection's own, so waiting for a frame touches no state
    /// shared with other connections.
    pub async fn run(mut self, mut shutdown: oneshot::Receiver<()>) {
        tracing::debug!(conn = self.id, peer = %self.peer, "connection opened");
        if let Some(allowed) = &self.shared.allowed_uids
            && !self.peer.uid.is_some_and(|uid| allowed.contains(&uid))
        {
            let fault = Fault::NotAllowed(self.peer.uid);
            self.record_fault(&fault).await;
            tracing::warn!(conn = self.id, peer = %self.peer, "{fault}; closing connection");
            return;
        }
        loop {
            let read = tokio::select! {
                read = self.read_frame() => read,
                _ = &mut shutdown => {
                    tracing::debug!(conn = self.id, "closing idle connection for shutdown");
                    return;
                }
            };
            let outcome = match read {
                Ok(false) => {
                    tracing::debug!(conn = self.id, peer = %self.peer, "connection closed by peer");
                    return;
                }
                Ok(true) => self.answer().await,
                Err(fault) => Err(fault),
            };
            if let Err(fault) = outcome {
                self.record_fault(&fault).await;
                tracing::warn!(
                    conn = self.id,
                    pid = self.peer.pid,
                    uid = self.peer.uid,
                    gid = self.peer.gid,
                    last_id = self.ids.last(),
                    %fault,
                    "protocol fault; closing connection without an answer"
                );
                return;
            }
        }
    }

    async fn record_fault(&self, fault: &Fault) {
        if let Some(log) = &self.shared.log {
            let record = Record::Fault(FaultRecord {
                time: decision_log::now(),
                conn: self.id,
                pid: self.peer.pid,
                uid: self.peer.uid,
                gid: self.peer.gid,
                last_id: self.ids.last(),
                fault: fault.to_string(),
            });
            if log.record(record).await.is_err() {
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
        let started = Instant::now();
        let request = parse_request_ref(&self.line)?;
        self.ids.advance(request.id)?;
        if let Some(claimed) = request.pid {
            self.peer.check_claimed_pid(claimed).map_err(Fault::Pid)?;
        }
        let value = request.value.as_deref();
        let peer = self.peer;
        let cwd = if needs_cwd(request.permission, value) {
            self.proc
                .get_or_insert_with(|| ProcDir::open(&peer))
                .cwd()
                .inspect_err(|e| tracing::warn!(conn = self.id, peer = %self.peer, "{e}"))
                .ok()
        } else {
            None
        };
        let snapshot = self.shared.store.current();
        let policy = &snapshot.policy;
        if policy.uses_subject() && self.facts.is_none() {
            let proc = self.proc.get_or_insert_with(|| ProcDir::open(&peer));
            self.facts = Some(proc.facts());
        }
        let facts = self.facts.as_ref();
        let subject = Subject {
            pid: self.peer.pid.unwrap_or(0),
            uid: self.peer.uid,
            gid: self.peer.gid,
            groups: facts.and_then(|f| f.groups.as_deref()),
            exe: facts.and_then(|f| f.exe.as_deref()),
            unit: facts.and_then(|f| f.unit.as_deref()),
            cwd: cwd.as_deref(),
        };
        let proc = &mut self.proc;
        let mut resolve = |path: &str| {
            proc.get_or_insert_with(|| ProcDir::open(&peer))
                .resolve_symlinks(path)
        };
        // Normalised once: for the decision, and for the log's `resolved`.
        let normalized = policy.normalize(request.permission, value, &subject);
        let decision =
            policy.decide_normalized(request.permission, &normalized, &subject, &mut resolve);
        // Audit mode records the verdict and (mostly) answers allow: `Policy::answer`.
        let answered = policy.answer(request.permission, value, &decision);
        let rule = match decision.decided_by {
            DecidedBy::Rule(i) => policy.rule(i).id.as_str(),
            DecidedBy::Default => "default",
            DecidedBy::Unresolvable => "unresolvable",
        };
        let micros = started.elapsed().as_micros() as u64;
        // The record is queued before the answer leaves: no decision without a record.
        if let Some(log) = &self.shared.log {
            let resolved = normalized
                .as_ref()
                .ok()
                .and_then(Resolved::display)
                .filter(|r| Some(r.as_str()) != value);
            log.record(Record::Decision(Box::new(DecisionRecord {
                time: decision_log::now(),
                conn: self.id,
                pid: self.peer.pid,
                uid: self.peer.uid,
                gid: self.peer.gid,
                exe: subject.exe.map(str::to_owned),
                unit: subject.unit.map(str::to_owned),
                id: request.id,
                permission: request.permission.as_str(),
                value: value.map(str::to_owned),
                resolved,
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
            request.id,
            answered,
            decision.reason.as_deref().unwrap_or(""),
        );
        self.writer.write_all(&self.out).await?;
        self.writer.flush().await?;
        tracing::debug!(
            conn = self.id,
            pid = self.peer.pid,
            uid = self.peer.uid,
            id = request.id,
            permission = %request.permission,
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
