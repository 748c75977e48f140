//! The decision log: one JSON line per decision and per protocol fault.
//!
//! **The promise:** a decision's record is in the file -- written, accepted by the kernel, and
//! with `--decision-log-sync` also on the disk -- before its answer leaves; every line of the file
//! is one whole JSON record.
//!
//! How: a connection hands its record to one writer thread and waits for it to say the record
//! is written; only then is the answer sent. The writer commits everything queued in one write
//! (group commit: one syscall, and one `fdatasync` when asked, for every connection waiting), so
//! the cost is shared. A short write resumes from the bytes written; a failed one is retried from
//! there, never written twice, so no record is torn or glued to another. If a record cannot be
//! written within `max_wait` (the disk is full or stalled), its connection is closed without an
//! answer (Deno exits 87: fail closed) and counted as `overloaded`; once space returns, writing
//! resumes with nothing lost. A file whose last line was cut by a crash is truncated back to its
//! last whole line when it is opened (and says so). At exit, records not written are counted.

use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// Appended to; reopened on SIGUSR1 (log rotation).
    File(PathBuf),
}

impl Target {
    /// Whether this log can be opened as `serve` opens it, changing nothing in it (an upgrade's
    /// preflight: the running daemon is writing it).
    pub fn check_openable(&self) -> std::io::Result<()> {
        if let Target::File(path) = self {
            let mut options = std::fs::OpenOptions::new();
            options.create(true).append(true).read(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
            options.open(path)?;
        }
        Ok(())
    }

    pub fn parse(text: &str) -> Target {
        if text == "-" {
            Target::Stdout
        } else {
            Target::File(PathBuf::from(text))
        }
    }
}

/// One line of the log.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Decision(Box<DecisionRecord>),
    Fault(FaultRecord),
}

#[derive(Debug, Serialize)]
pub struct DecisionRecord {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub conn: u64,
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub exe: Option<String>,
    pub unit: Option<String>,
    pub id: u32,
    pub permission: &'static str,
    pub value: Option<String>,
    /// The value made absolute and normalised, where that changed it.
    pub resolved: Option<String>,
    /// Its real location with symlinks followed (inside the peer's root), where that differs:
    /// what the policy decided on too.
    pub target: Option<String>,
    /// The policy's verdict.
    pub decision: &'static str,
    /// What Deno was told (differs from `decision` in audit mode).
    pub answered: &'static str,
    pub mode: &'static str,
    pub rule: String,
    pub reason: Option<String>,
    pub revision: String,
    pub micros: u64,
}

#[derive(Debug, Serialize)]
pub struct FaultRecord {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub conn: u64,
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub last_id: Option<u32>,
    pub fault: String,
}

/// When a decision or fault happened. Taken on the connection's path (one clock read); it is
/// formatted as RFC 3339 only by the writer, off the path of the answer.
pub fn now() -> SystemTime {
    SystemTime::now()
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    let time: chrono::DateTime<chrono::Utc> = (*time).into();
    serializer.collect_str(&time.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// Counters an operator can read from the logs on shutdown.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records handed to the writer.
    pub received: AtomicU64,
    pub written: AtomicU64,
    /// Records that found the queue full and had to wait.
    pub waited: AtomicU64,
    /// Connections closed because their record was not written within `max_wait`.
    pub overloaded: AtomicU64,
    pub write_errors: AtomicU64,
}

impl Stats {
    /// Says what was written at exit, and loudly what was not.
    pub fn report_at_exit(&self) {
        let received = self.received.load(Ordering::Relaxed);
        let written = self.written.load(Ordering::Relaxed);
        let args = (
            written,
            self.waited.load(Ordering::Relaxed),
            self.overloaded.load(Ordering::Relaxed),
            self.write_errors.load(Ordering::Relaxed),
        );
        if received > written {
            tracing::error!(
                written = args.0,
                not_written = received - written,
                waited = args.1,
                overloaded = args.2,
                write_errors = args.3,
                "decision log closed with records not written (their connections were closed unanswered)"
            );
        } else {
            tracing::info!(
                written = args.0,
                waited = args.1,
                overloaded = args.2,
                write_errors = args.3,
                "decision log closed"
            );
        }
    }
}

/// The log could not write a record within `max_wait`.
#[derive(Debug, thiserror::Error)]
#[error("decision log overloaded: the record was not written within {0:?}")]
pub struct Overloaded(pub Duration);

/// What the writer thread is asked to do.
enum Message {
    Record(Record, oneshot::Sender<()>),
    Reopen,
}

/// The sending side, cloned into every connection.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    tx: mpsc::Sender<Message>,
    max_wait: Duration,
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Record(..) => "Record",
            Message::Reopen => "Reopen",
        })
    }
}

/// Options of the decision log.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Records queued at most.
    pub capacity: usize,
    /// How long a decision waits for its record to be written.
    pub max_wait: Duration,
    /// `fdatasync` each commit before answering (audit evidence that survives a power cut).
    pub sync: bool,
}

impl DecisionLog {
    /// Opens the log and starts its writer thread. The returned receiver resolves once every
    /// sender is dropped and everything queued is written (or the writer gave up at exit).
    pub fn start(
        target: Target,
        options: Options,
    ) -> std::io::Result<(DecisionLog, oneshot::Receiver<()>)> {
        let sink = Sink::open(&target)?;
        let (tx, rx) = mpsc::channel(options.capacity);
        let stats = Arc::new(Stats::default());
        // Installed now, before the daemon is ready: an early SIGUSR1 must not kill it.
        spawn_reopen_on_signal(tx.clone());
        let (done_tx, done_rx) = oneshot::channel();
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("decision-log".to_owned())
            .spawn(move || {
                write_loop(sink, &target, rx, &writer_stats, options.sync);
                let _ = done_tx.send(());
            })?;
        Ok((
            DecisionLog {
                tx,
                max_wait: options.max_wait,
                stats,
            },
            done_rx,
        ))
    }

    /// Has the writer write `record`, and returns once it is in the file; within `max_wait` or
    /// not at all.
    pub async fn record(&self, record: Record) -> Result<(), Overloaded> {
        let (ack, written) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.max_wait;
        let message = Message::Record(record, ack);
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.stats.waited.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout_at(deadline, self.tx.send(message)).await {
                    Ok(Ok(())) => {}
                    _ => return Err(self.overloaded()),
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Overloaded(Duration::ZERO)),
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout_at(deadline, written).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(self.overloaded()),
        }
    }

    fn overloaded(&self) -> Overloaded {
        self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
        Overloaded(self.max_wait)
    }
}

/// SIGUSR1 reopens the log (rotation). The handler holds only a weak sender: the writer ends
/// (and a stop finishes) once the connections' senders are gone, not 5 s later.
fn spawn_reopen_on_signal(tx: mpsc::Sender<Message>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let tx = tx.downgrade();
        match signal(SignalKind::user_defined1()) {
            Ok(mut usr1) => {
                tokio::spawn(async move {
                    while usr1.recv().await.is_some() {
                        let Some(tx) = tx.upgrade() else { break };
                        if tx.send(Message::Reopen).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::error!("cannot install the SIGUSR1 handler: {e}"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
}

enum Sink {
    Stdout(std::io::Stdout),
    File(std::fs::File),
}

impl Sink {
    fn open(target: &Target) -> std::io::Result<Sink> {
        Ok(match target {
            Target::Stdout => Sink::Stdout(std::io::stdout()),
            Target::File(path) => {
                let mut options = std::fs::OpenOptions::new();
                options.create(true).append(true).read(true);
                // The log holds every process's requests: not readable by every user, whatever
                // the umask (0640: the owner writes, a log shipper's group may read).
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
                let mut file = options.open(path)?;
                repair_torn_tail(&mut file, path)?;
                Sink::File(file)
            }
        })
    }

    /// One `write(2)`; how many bytes it took.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                let n = out.write(bytes)?;
                out.flush()?;
                Ok(n)
            }
            Sink::File(file) => file.write(bytes),
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(_) => Ok(()),
            Sink::File(file) => file.sync_data(),
        }
    }
}

/// A file whose last line has no newline was cut by a crash in the middle of a record: cut it
/// back to its last whole line, so that every line is one whole record (and say how much went).
fn repair_torn_tail(file: &mut std::fs::File, path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 || !file.metadata()?.is_file() {
        return Ok(());
    }
    let mut last = [0u8];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the last newline, reading backwards in blocks.
    let mut end = len;
    let mut keep = 0;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(at) = chunk.iter().rposition(|b| *b == b'\n') {
            keep = start + at as u64 + 1;
            break;
        }
        end = start;
    }
    file.set_len(keep)?;
    tracing::warn!(
        path = %path.display(),
        removed = len - keep,
        "the decision log ended in a cut record (a crash while writing it); removed that partial line"
    );
    Ok(())
}

/// The writer thread: commit what is queued, acknowledge it, repeat until every sender is gone.
fn write_loop(
    mut sink: Sink,
    target: &Target,
    mut rx: mpsc::Receiver<Message>,
    stats: &Stats,
    sync: bool,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        // Everything queued now goes in one write: group commit.
        let mut next = Some(first);
        while let Some(message) = next.take().or_else(|| rx.try_recv().ok()) {
            match message {
                Message::Reopen => {
                    // Records before the reopen go to the old file.
                    commit(&mut sink, &mut batch, &mut acks, stats, sync);
                    reopen_sink(&mut sink, target);
                }
                Message::Record(record, ack) => {
                    let mark = batch.len();
                    if serde_json::to_writer(&mut batch, &record).is_ok() {
                        batch.push(b'\n');
                        acks.push(ack);
                    } else {
                        batch.truncate(mark);
                    }
                }
            }
            if batch.len() > 256 * 1024 {
                break;
            }
        }
        commit(&mut sink, &mut batch, &mut acks, stats, sync);
    }
}

/// Writes `batch` whole (resuming after short writes, retrying failed ones from where they
/// stopped, never writing a byte twice), syncs it when asked, then acknowledges its records.
fn commit(
    sink: &mut Sink,
    batch: &mut Vec<u8>,
    acks: &mut Vec<oneshot::Sender<()>>,
    stats: &Stats,
    sync: bool,
) {
    if batch.is_empty() {
        return;
    }
    let mut done = 0;
    let mut backoff = Duration::from_millis(10);
    let mut failing = false;
    while done < batch.len() {
        match sink.write(&batch[done..]) {
            Ok(0) => failing = retry(stats, &mut backoff, "wrote nothing", acks.len(), failing),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => failing = retry(stats, &mut backoff, &e.to_string(), acks.len(), failing),
        }
    }
    while sync && let Err(e) = sink.sync() {
        failing = retry(stats, &mut backoff, &e.to_string(), acks.len(), failing);
    }
    if failing {
        tracing::info!("the decision log is written again");
    }
    stats
        .written
        .fetch_add(acks.len() as u64, Ordering::Relaxed);
    for ack in acks.drain(..) {
        // A connection that gave up waiting has closed; its record is in the file anyway.
        let _ = ack.send(());
    }
    batch.clear();
}

/// Counts a write error, says so once per outage, and waits before the next try. Meanwhile the
/// waiting connections fail closed after `max_wait`.
fn retry(
    stats: &Stats,
    backoff: &mut Duration,
    error: &str,
    records: usize,
    failing: bool,
) -> bool {
    stats.write_errors.fetch_add(1, Ordering::Relaxed);
    if !failing {
        tracing::error!(
            error,
            records,
            "cannot write the decision log; retrying (answers wait, and fail closed after decision_log_max_wait)"
        );
    }
    std::thread::sleep(*backoff);
    *backoff = (*backoff * 2).min(Duration::from_secs(1));
    true
}

fn reopen_sink(sink: &mut Sink, target: &Target) {
    match Sink::open(target) {
        Ok(fresh) => {
            *sink = fresh;
            tracing::info!("decision log reopened (SIGUSR1)");
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot reopen the decision log; still writing the old file")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_rfc3339_utc_with_microseconds() {
        let record = Record::Fault(FaultRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_763_929_845_262_660),
            conn: 1,
            pid: None,
            uid: None,
            gid: None,
            last_id: None,
            fault: String::new(),
        });
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["time"], "2025-11-23T20:30:45.262660Z");
    }
}
