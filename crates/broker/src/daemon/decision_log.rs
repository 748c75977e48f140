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
    #[cfg(unix)]
    pub fn check_openable(&self) -> std::io::Result<()> {
        if let Target::File(path) = self {
            open_log_file(path)?;
        }
        Ok(())
    }

    fn path_text(&self) -> String {
        match self {
            Target::Stdout => "-".to_owned(),
            Target::File(path) => path.display().to_string(),
        }
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
    /// Every reload: what was served before and after, and how it went.
    Reload(Box<ReloadRecord>),
    /// The first line of every file the daemon opens: what names its records.
    Log(LogRecord),
}

#[derive(Debug, Serialize)]
pub struct LogRecord {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The daemon's run (see `forensics`): `conn` is unique within it.
    pub run: String,
    pub boot_id: Option<String>,
    pub host: Option<String>,
    /// The daemon's pid and version.
    pub daemon_pid: u32,
    pub version: &'static str,
    /// Why the file was opened: `start`, `SIGUSR1`, `retry`; `truncated`: it was cut short under
    /// the daemon, and what follows begins anew.
    pub opened: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ReloadRecord {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// What asked for it: `SIGHUP`, `file change`, `poll`, `the policy path swapped`.
    pub trigger: String,
    /// `swapped`, `unchanged` or `failed` (the last good revision goes on serving).
    pub outcome: &'static str,
    pub from: String,
    /// The revision serving after it.
    pub to: String,
    /// The files of the revision serving after it.
    pub files: Vec<String>,
    pub errors: usize,
    /// The first error of a failed reload.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DecisionRecord {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub conn: u64,
    pub pid: Option<u32>,
    /// When `pid` started, in clock ticks since boot (`/proc/<pid>/stat`): with the pid and
    /// the file's `boot_id`, it names one process.
    pub start_time: Option<u64>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Supplementary group ids (for `groups` rules, and for `replay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<u32>>,
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
    pub start_time: Option<u64>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub exe: Option<String>,
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
    /// A reopen is owed: the ticker wakes the writer once a second to try it, idle or not.
    retrying: std::sync::atomic::AtomicBool,
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
    /// A record no answer waits on (a reload): not counted with the answers' records.
    Detached(Record),
    /// SIGUSR1 (log rotation).
    #[cfg_attr(not(unix), expect(dead_code, reason = "SIGUSR1 is Unix-only"))]
    Reopen,
    /// Once a second while a reopen is owed: try it even when no record comes.
    Tick,
    /// The daemon is exiting: write what came before this, then stop (a lookup stuck on a
    /// mount that does not answer may still hold a sender; it must not hold the exit too).
    Finish,
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
            Message::Detached(..) => "Detached",
            Message::Reopen => "Reopen",
            Message::Tick => "Tick",
            Message::Finish => "Finish",
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
    /// The group each file is given (it reads; the daemon's user writes).
    pub group: Option<u32>,
}

impl DecisionLog {
    /// Opens the log and starts its writer thread. The returned receiver resolves once every
    /// sender is dropped and everything queued is written (or the writer gave up at exit).
    pub fn start(
        target: Target,
        options: Options,
    ) -> std::io::Result<(DecisionLog, oneshot::Receiver<()>)> {
        let sink = Sink::open(&target, options.group)?;
        let (tx, rx) = mpsc::channel(options.capacity);
        let stats = Arc::new(Stats::default());
        // Installed now, before the daemon is ready: an early SIGUSR1 must not kill it.
        spawn_reopen_on_signal(tx.clone());
        spawn_retry_ticker(tx.downgrade(), stats.clone());
        let (done_tx, done_rx) = oneshot::channel();
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("decision-log".to_owned())
            .spawn(move || {
                write_loop(
                    sink,
                    &target,
                    options.group,
                    rx,
                    &writer_stats,
                    options.sync,
                );
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
    /// not at all (its connection is then closed unanswered: counted as `overloaded`).
    pub async fn record(&self, record: Record) -> Result<(), Overloaded> {
        self.write(record, true).await
    }

    /// [`DecisionLog::record`] for a record of a connection closed anyway (a fault): not written
    /// in time, it closes no connection, so it is not counted as `overloaded` (it is still one
    /// received and not written).
    pub async fn record_closing(&self, record: Record) -> Result<(), Overloaded> {
        self.write(record, false).await
    }

    async fn write(&self, record: Record, answer_waits: bool) -> Result<(), Overloaded> {
        let overloaded = || match answer_waits {
            true => self.overloaded(),
            false => Overloaded(self.max_wait),
        };
        let (ack, written) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.max_wait;
        let message = Message::Record(record, ack);
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.stats.waited.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout_at(deadline, self.tx.send(message)).await {
                    Ok(Ok(())) => {}
                    _ => return Err(overloaded()),
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Overloaded(Duration::ZERO)),
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout_at(deadline, written).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(overloaded()),
        }
    }

    /// Records queued for the writer now.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity().saturating_sub(self.tx.capacity())
    }

    /// Records the queue holds.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// A handle for records no answer waits on (reloads): it never keeps the writer open.
    pub fn detached(&self) -> DetachedLog {
        DetachedLog(self.tx.downgrade())
    }

    /// A handle that ends the writer once everything queued before it is written.
    pub fn finisher(&self) -> Finisher {
        Finisher(self.tx.downgrade())
    }

    fn overloaded(&self) -> Overloaded {
        self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
        Overloaded(self.max_wait)
    }
}

/// Queues records that no answer waits on; does nothing once the log is closed.
#[derive(Debug, Clone)]
pub struct DetachedLog(mpsc::WeakSender<Message>);

/// Ends the writer at exit (see [`DecisionLog::finisher`]).
#[derive(Debug)]
pub struct Finisher(mpsc::WeakSender<Message>);

impl Finisher {
    /// Tells the writer to stop after what is queued now; nothing if it has stopped already.
    pub async fn finish(self) {
        if let Some(tx) = self.0.upgrade() {
            let _ = tx.send(Message::Finish).await;
        }
    }
}

impl DetachedLog {
    pub async fn record(&self, record: Record) {
        let Some(tx) = self.0.upgrade() else { return };
        if tx.send(Message::Detached(record)).await.is_err() {
            tracing::warn!("the decision log is closed: a reload was not recorded");
        }
    }
}

/// Wakes the writer once a second while a reopen is owed, so a failed reopen is retried (and its
/// error cleared from `STATUS=`) when the daemon is idle too.
fn spawn_retry_ticker(tx: mpsc::WeakSender<Message>, stats: Arc<Stats>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(tx) = tx.upgrade() else { break };
            if stats.retrying.load(Ordering::Relaxed) {
                // A full queue wakes the writer anyway.
                let _ = tx.try_send(Message::Tick);
            }
        }
    });
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
    fn open(target: &Target, group: Option<u32>) -> std::io::Result<Sink> {
        Ok(match target {
            Target::Stdout => Sink::Stdout(std::io::stdout()),
            Target::File(path) => {
                let mut file = open_log_file(path)?;
                #[cfg(unix)]
                if let Some(gid) = group {
                    std::os::unix::fs::fchown(&file, None, Some(gid)).map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot give it to group {gid} (is the daemon a member?): {e}"),
                        )
                    })?;
                }
                #[cfg(not(unix))]
                let _ = group;
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

    /// The name the file being written has now (it may have been rotated to another).
    fn current_name(&self) -> String {
        match self {
            Sink::Stdout(_) => "standard output".to_owned(),
            #[cfg(target_os = "linux")]
            Sink::File(file) => {
                use std::os::fd::AsRawFd;
                std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                    .map(|p| format!("`{}`", p.display()))
                    .unwrap_or_else(|_| "the old file".to_owned())
            }
            #[cfg(not(target_os = "linux"))]
            Sink::File(_) => "the old file".to_owned(),
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(_) => Ok(()),
            Sink::File(file) => file.sync_data(),
        }
    }
}

/// Opens (creating) the log for appending. It holds every process's requests, so it is kept
/// `0640` or tighter whatever the umask (the owner writes, a log shipper's group may read): a
/// file found looser is tightened and said so; one owned by another user (who could rewrite the
/// records) or a symbolic link (which could point anywhere) is refused.
fn open_log_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true).read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
        options
            .mode(0o640)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
        let file = options.open(path).map_err(|e| {
            if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                std::io::Error::other(format!(
                    "`{}` is a symbolic link: give the log's real path",
                    path.display()
                ))
            } else {
                e
            }
        })?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(std::io::Error::other(format!(
                "`{}` is not a regular file (a device, a pipe or a socket writes records nowhere the promise can hold)",
                path.display()
            )));
        }
        if meta.nlink() > 1 {
            return Err(std::io::Error::other(format!(
                "`{}` has {} names (hard links): records would also go into a file under another name; give the log a file of its own",
                path.display(),
                meta.nlink()
            )));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(std::io::Error::other(format!(
                "`{}` is owned by uid {}, not the daemon's uid {me}: its owner could rewrite the records; remove it or give it to the daemon's user",
                path.display(),
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o7777;
        if mode & !0o640 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o640))?;
            tracing::warn!(
                path = %path.display(),
                was = format!("{mode:o}"),
                now = format!("{:o}", mode & 0o640),
                "the decision log could be read or written by others; tightened its mode"
            );
        }
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
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
    group: Option<u32>,
    mut rx: mpsc::Receiver<Message>,
    stats: &Stats,
    sync: bool,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    let mut file = FileState {
        path: Some(target.path_text()),
        group,
        header_due: Some("start"),
        ..FileState::default()
    };
    let mut finishing = false;
    while let Some(first) = rx.blocking_recv() {
        // Everything queued now goes in one write: group commit.
        let mut next = Some(first);
        while let Some(message) = next.take().or_else(|| rx.try_recv().ok()) {
            match message {
                Message::Finish => {
                    finishing = true;
                    break;
                }
                Message::Tick => {
                    file.retry_due(&mut sink, target);
                }
                Message::Reopen => {
                    // Records before the reopen go to the old file.
                    commit(
                        &mut sink, target, &mut file, &mut batch, &mut acks, stats, sync,
                    );
                    file.reopen_now(&mut sink, target);
                }
                Message::Record(record, ack) => {
                    if append(&mut batch, &record) {
                        acks.push(ack);
                    }
                }
                Message::Detached(record) => {
                    append(&mut batch, &record);
                }
            }
            if batch.len() > 256 * 1024 {
                break;
            }
        }
        commit(
            &mut sink, target, &mut file, &mut batch, &mut acks, stats, sync,
        );
        stats.retrying.store(file.reopen_wanted, Ordering::Relaxed);
        if finishing {
            break;
        }
    }
}

/// Serializes `record` as one line at the end of `batch`; whether it could be.
fn append(batch: &mut Vec<u8>, record: &Record) -> bool {
    let mark = batch.len();
    if serde_json::to_writer(&mut *batch, record).is_ok() {
        batch.push(b'\n');
        true
    } else {
        batch.truncate(mark);
        false
    }
}

/// Writes `batch` whole (resuming after short writes, retrying failed ones from where they
/// stopped, never writing a byte twice) into a file that still has a name, syncs it when asked,
/// then acknowledges its records.
fn commit(
    sink: &mut Sink,
    target: &Target,
    file: &mut FileState,
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
        if let Err(e) = file.check(sink, target) {
            failing = retry(stats, &mut backoff, &e, acks.len(), failing);
            continue;
        }
        // A file just opened begins with its header, written as part of the batch (resumed and
        // retried like the records, so never torn or doubled).
        if let Some(opened) = file.header_due.take() {
            let line = header(opened);
            batch.splice(done..done, line);
        }
        match sink.write(&batch[done..]) {
            Ok(0) => failing = retry(stats, &mut backoff, "wrote nothing", acks.len(), failing),
            Ok(n) => {
                done += n;
                file.end += n as u64;
            }
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

/// The `kind:"log"` line that begins every file the daemon opens.
fn header(opened: &'static str) -> Vec<u8> {
    let record = Record::Log(LogRecord {
        time: now(),
        run: super::forensics::run().to_owned(),
        boot_id: super::forensics::boot_id().map(str::to_owned),
        host: super::forensics::host(),
        daemon_pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION"),
        opened,
    });
    let mut line = serde_json::to_vec(&record).unwrap_or_default();
    line.push(b'\n');
    line
}

/// What the writer knows of the file it writes, to keep the promise through rotation: a record
/// goes only into a file that still has a name, and a file cut short under the daemon is said.
#[derive(Default)]
struct FileState {
    /// Where the file ended after the daemon's last write.
    end: u64,
    /// A reopen failed (or the file lost its name): tried again at most once a second.
    reopen_wanted: bool,
    last_try: Option<std::time::Instant>,
    /// The problem last reported (so it is reported once, and its end too).
    problem: Option<String>,
    /// Why the last reopen failed.
    reopen_error: Option<String>,
    /// The file was opened (why): its first line, the `kind:"log"` record, is still owed.
    header_due: Option<&'static str>,
    /// The log's path, for messages.
    path: Option<String>,
    /// The group each opened file is given.
    group: Option<u32>,
}

impl FileState {
    /// Before each write: reopens when a reopen is owed, refuses a file whose last name is gone
    /// (its records would be lost with it), and reports a file truncated under the daemon.
    fn check(&mut self, sink: &mut Sink, target: &Target) -> Result<(), String> {
        self.retry_due(sink, target);
        let Sink::File(handle) = sink else {
            return Ok(());
        };
        let meta = handle.metadata().map_err(|e| e.to_string())?;
        #[cfg(unix)]
        if std::os::unix::fs::MetadataExt::nlink(&meta) == 0 {
            if !self.reopen_wanted {
                // Deleted without a rotation's signal: open the path again at once.
                self.reopen_wanted = true;
                self.last_try = None;
                return self.check(sink, target);
            }
            let problem = format!(
                "the file being written was deleted and `{}` cannot be opened ({}): records wait, and their answers fail closed, until it can",
                target.path_text(),
                self.reopen_error.as_deref().unwrap_or("unknown error")
            );
            self.report(Some(problem.clone()));
            return Err(problem);
        }
        if self.reopen_wanted {
            self.report(self.reopen_problem(sink));
        }
        if meta.len() < self.end {
            // What is left of the file no longer begins with its header: write it again.
            self.header_due = Some("truncated");
            tracing::error!(
                was = self.end,
                now = meta.len(),
                "the decision log was cut short under the daemon (copytruncate?): records written before may be lost; rotate by renaming and SIGUSR1 (config/logrotate/permission-broker)"
            );
        }
        self.end = meta.len();
        Ok(())
    }

    /// Opens the log's path again (rotation); whether it did. On failure the old file is kept
    /// while it has a name, and the reopen is tried again before each write, once a second.
    fn reopen(&mut self, sink: &mut Sink, target: &Target, why: &'static str) -> bool {
        self.last_try = Some(std::time::Instant::now());
        match Sink::open(target, self.group) {
            Ok(fresh) => {
                *sink = fresh;
                self.reopen_wanted = false;
                self.reopen_error = None;
                self.end = match sink {
                    Sink::File(f) => f.metadata().map(|m| m.len()).unwrap_or(0),
                    Sink::Stdout(_) => 0,
                };
                self.header_due = Some(why);
                tracing::info!(trigger = why, "decision log reopened");
                self.report(None);
                true
            }
            Err(e) => {
                self.reopen_wanted = true;
                self.reopen_error = Some(e.to_string());
                false
            }
        }
    }

    /// A reopen owed and due (once a second), tried without a record to write.
    fn retry_due(&mut self, sink: &mut Sink, target: &Target) {
        if self.reopen_wanted
            && self
                .last_try
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.reopen(sink, target, "retry");
        }
    }

    /// A SIGUSR1's reopen: a failure is said at once (the error log and `STATUS=`).
    fn reopen_now(&mut self, sink: &mut Sink, target: &Target) {
        if !self.reopen(sink, target, "SIGUSR1") {
            self.report(self.reopen_problem(sink));
        }
    }

    fn reopen_problem(&self, sink: &Sink) -> Option<String> {
        self.reopen_error.as_ref().map(|e| {
            format!(
                "cannot reopen `{}`: {e}; still writing {} (tried again every second)",
                self.path.as_deref().unwrap_or("-"),
                sink.current_name()
            )
        })
    }

    fn report(&mut self, problem: Option<String>) {
        if self.problem == problem {
            return;
        }
        match &problem {
            Some(p) => tracing::error!("decision log: {p}"),
            None if self.problem.is_some() => tracing::info!("decision log: problem resolved"),
            None => {}
        }
        self.problem = problem.clone();
        super::notify::log_problem(problem);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_rfc3339_utc_with_microseconds() {
        let record = Record::Fault(FaultRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_763_929_845_262_660),
            conn: 1,
            pid: None,
            start_time: None,
            uid: None,
            gid: None,
            exe: None,
            last_id: None,
            fault: String::new(),
        });
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["time"], "2025-11-23T20:30:45.262660Z");
    }
}
