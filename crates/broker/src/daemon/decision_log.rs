//! The decision log: one JSON line per decision and per protocol fault.
//!
//! Records go through a bounded queue to one writer task. A connection queues its record
//! *before* it writes the answer, so no decision is ever answered without a record. If the queue
//! stays full for longer than `max_wait` (the disk cannot keep up, or is full), the connection is
//! closed without an answer — Deno then exits 87, failing closed — and the overload is counted.
//! Nothing is dropped: a failed write is retried until it succeeds, and the queue is drained on
//! shutdown.

use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// Appended to; reopened on SIGUSR1 (log rotation).
    File(PathBuf),
}

impl Target {
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
    pub written: AtomicU64,
    /// Records that found the queue full and had to wait.
    pub waited: AtomicU64,
    /// Connections closed because the queue stayed full past `max_wait`.
    pub overloaded: AtomicU64,
    pub write_errors: AtomicU64,
}

/// The log could not take a record within `max_wait`.
#[derive(Debug, thiserror::Error)]
#[error("decision log overloaded: no room for a record within {0:?}")]
pub struct Overloaded(pub Duration);

/// The sending side, cloned into every connection.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    tx: mpsc::Sender<Record>,
    max_wait: Duration,
    pub stats: Arc<Stats>,
}

impl DecisionLog {
    /// Starts the writer. The returned handle finishes once every sender is dropped and every
    /// record is written.
    pub fn start(
        target: Target,
        capacity: usize,
        max_wait: Duration,
    ) -> std::io::Result<(DecisionLog, tokio::task::JoinHandle<()>)> {
        let sink = Sink::open(&target)?;
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(Stats::default());
        // Installed now, before the daemon is ready: an early SIGUSR1 must not kill it.
        let reopen = reopen_signal();
        let handle = tokio::spawn(write_loop(sink, target, rx, stats.clone(), reopen));
        Ok((
            DecisionLog {
                tx,
                max_wait,
                stats,
            },
            handle,
        ))
    }

    /// Queues a record, waiting at most `max_wait` for room.
    pub async fn record(&self, record: Record) -> Result<(), Overloaded> {
        match self.tx.try_send(record) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(record)) => {
                self.stats.waited.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout(self.max_wait, self.tx.send(record)).await {
                    Ok(Ok(())) => Ok(()),
                    _ => {
                        self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                        Err(Overloaded(self.max_wait))
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Overloaded(Duration::ZERO)),
        }
    }
}

enum Sink {
    Stdout(std::io::Stdout),
    File(std::fs::File),
}

impl Sink {
    fn open(target: &Target) -> std::io::Result<Sink> {
        Ok(match target {
            Target::Stdout => Sink::Stdout(std::io::stdout()),
            Target::File(path) => Sink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File(file) => file.write_all(bytes),
        }
    }
}

async fn write_loop(
    mut sink: Sink,
    target: Target,
    mut rx: mpsc::Receiver<Record>,
    stats: Arc<Stats>,
    mut reopen: Reopen,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let first = tokio::select! {
            record = rx.recv() => match record {
                Some(record) => record,
                None => break,
            },
            Some(()) = next(&mut reopen) => {
                reopen_sink(&mut sink, &target);
                continue;
            }
        };
        // Write what is queued in one go: one syscall per batch, not per record.
        let mut count = 0u64;
        let mut pending = Some(first);
        while let Some(record) = pending.take().or_else(|| rx.try_recv().ok()) {
            if serde_json::to_writer(&mut batch, &record).is_ok() {
                batch.push(b'\n');
                count += 1;
            }
            if batch.len() > 256 * 1024 {
                break;
            }
        }
        let mut backoff = Duration::from_millis(10);
        while let Err(e) = sink.write_all(&batch) {
            // Never drop: keep the batch and try again. Meanwhile the queue fills and new
            // decisions fail closed after `max_wait`.
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, records = count, "cannot write the decision log; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        batch.clear();
        stats.written.fetch_add(count, Ordering::Relaxed);
    }
    tracing::info!(
        written = stats.written.load(Ordering::Relaxed),
        waited = stats.waited.load(Ordering::Relaxed),
        overloaded = stats.overloaded.load(Ordering::Relaxed),
        write_errors = stats.write_errors.load(Ordering::Relaxed),
        "decision log closed"
    );
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

#[cfg(unix)]
type Reopen = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Reopen = Option<()>;

#[cfg(unix)]
fn reopen_signal() -> Reopen {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok()
}

#[cfg(not(unix))]
fn reopen_signal() -> Reopen {
    None
}

#[cfg(unix)]
async fn next(signal: &mut Reopen) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next(_: &mut Reopen) -> Option<()> {
    std::future::pending().await
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
