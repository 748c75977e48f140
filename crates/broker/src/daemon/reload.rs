//! The running policy and how it changes: a snapshot swapped whole, never edited in place.
//!
//! Connections read the current snapshot once per decision (`arc_swap`: no lock shared by all
//! connections), so a decision in flight finishes on the snapshot it started with. A reload builds
//! a complete new snapshot off to the side and swaps it in only if it compiled; a policy that does
//! not load never replaces the running one.

use super::decision_log::{self, DetachedLog, Record, ReloadRecord};
use crate::policy_files::{self, LoadError, LoadedPolicy};
use arc_swap::ArcSwap;
use permission_broker_policy::Policy;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// One loaded policy and its identity.
#[derive(Debug)]
pub struct Snapshot {
    pub policy: Policy,
    pub revision: String,
    /// The real paths of the files this policy was read from: protected like the broker's own
    /// files while it serves (see `protected`).
    pub files: Vec<String>,
    /// Each rule's label among the metrics, by rule index.
    pub rule_slots: Box<[super::metrics::RuleSlot]>,
}

impl Snapshot {
    fn new(loaded: LoadedPolicy) -> Snapshot {
        Snapshot {
            files: super::protected::Protected::policy_files(&loaded.files),
            rule_slots: super::metrics::rule_slots(&loaded.policy),
            policy: loaded.policy,
            revision: loaded.revision,
        }
    }
}

/// Reloads so far, by outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcomes {
    pub swapped: u64,
    pub unchanged: u64,
    pub failed: u64,
}

/// What operators see about the policy (systemd `STATUS=`, logs).
#[derive(Debug, Clone)]
pub struct Status {
    pub revision: String,
    pub rules: usize,
    /// The last failed reload's first error, until a reload succeeds.
    pub last_error: Option<String>,
    /// The serving policy is in audit mode: would-be denies are answered allow.
    pub audit: bool,
    /// Reloads tried since the daemon started.
    pub reloads: u64,
    pub outcomes: Outcomes,
    /// When a policy last loaded: at start, or a reload that swapped it or found it unchanged.
    pub last_good: std::time::SystemTime,
}

impl Default for Status {
    fn default() -> Status {
        Status {
            revision: String::new(),
            rules: 0,
            last_error: None,
            audit: false,
            reloads: 0,
            outcomes: Outcomes::default(),
            last_good: std::time::SystemTime::UNIX_EPOCH,
        }
    }
}

impl Status {
    pub fn line(&self) -> String {
        let serving = status_line(&self.revision, self.rules, self.audit);
        match &self.last_error {
            None => serving,
            Some(e) => format!("{serving}; last reload FAILED, still serving it: {e}"),
        }
    }
}

/// What is serving, as `STATUS=` and the logs say it: audit mode is said in words.
pub fn status_line(revision: &str, rules: usize, audit: bool) -> String {
    match audit {
        false => format!("policy {revision} ({rules} rules)"),
        true => format!(
            "policy {revision} ({rules} rules) in AUDIT mode: denies are logged and answered allow"
        ),
    }
}

/// Says, as a warning, that the policy now serving is in audit mode: nothing it denies is denied.
pub fn warn_if_audit(policy: &Policy, revision: &str) {
    if policy.mode() == permission_broker_policy::Mode::Audit {
        tracing::warn!(
            revision = %revision,
            "the policy is in AUDIT mode: every request it would deny is answered allow and only recorded"
        );
    }
}

#[derive(Debug)]
pub struct PolicyStore {
    path: PathBuf,
    /// Refuse policy files others could change (`strict_modes`).
    strict: bool,
    current: ArcSwap<Snapshot>,
    status: Mutex<Status>,
    /// The revision of the files whose failure to load was last reported: the same broken
    /// files are reported once, not at every poll or signal.
    broken: Mutex<Option<String>>,
}

impl PolicyStore {
    pub fn new(path: PathBuf, loaded: LoadedPolicy, strict: bool) -> PolicyStore {
        let status = Status {
            revision: loaded.revision.clone(),
            rules: loaded.policy.rules().len(),
            last_error: None,
            audit: loaded.policy.mode() == permission_broker_policy::Mode::Audit,
            reloads: 0,
            outcomes: Outcomes::default(),
            last_good: std::time::SystemTime::now(),
        };
        PolicyStore {
            path,
            strict,
            current: ArcSwap::from_pointee(Snapshot::new(loaded)),
            status: Mutex::new(status),
            broken: Mutex::new(None),
        }
    }

    /// The revision of the broken files last reported, if the last reload failed.
    pub fn broken_revision(&self) -> Option<String> {
        self.broken.lock().ok().and_then(|b| b.clone())
    }

    /// The snapshot to decide with. Cheap; hold it for one decision, not longer.
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the policy again and swaps it in if it compiled and differs; says how it went.
    /// Blocking: run it off the async threads.
    pub fn reload(&self, why: &str) -> ReloadRecord {
        let from = self.current.load().revision.clone();
        let compiling = super::serving::StepAside::begin();
        let loaded = policy_files::load_strict(&self.path, self.strict);
        drop(compiling);
        let (outcome, errors, error) = match loaded {
            Ok(loaded) => {
                for warning in loaded.warnings.warnings() {
                    tracing::warn!("{warning}");
                }
                let rules = loaded.policy.rules().len();
                let audit = loaded.policy.mode() == permission_broker_policy::Mode::Audit;
                let was_broken = self.status().last_error.is_some();
                if let Ok(mut broken) = self.broken.lock() {
                    *broken = None;
                }
                let outcome = if loaded.revision == from {
                    match was_broken {
                        true => tracing::info!(
                            revision = %from,
                            trigger = why,
                            "policy restored: the files load again, as the revision already serving"
                        ),
                        false => {
                            tracing::info!(revision = %from, trigger = why, "policy unchanged")
                        }
                    }
                    "unchanged"
                } else {
                    let to = loaded.revision.clone();
                    self.current.store(Arc::new(Snapshot::new(loaded)));
                    match was_broken {
                        true => tracing::info!(
                            from = %from,
                            to = %to,
                            rules,
                            trigger = why,
                            "policy restored: the files load again, and the new revision serves"
                        ),
                        false => {
                            tracing::info!(from = %from, to = %to, rules, trigger = why, "policy reloaded")
                        }
                    }
                    warn_if_audit(&self.current.load().policy, &to);
                    "swapped"
                };
                let revision = self.current.load().revision.clone();
                self.set_status(|s| {
                    s.revision = revision;
                    s.rules = rules;
                    s.last_error = None;
                    s.audit = audit;
                    s.last_good = std::time::SystemTime::now();
                    match outcome {
                        "unchanged" => s.outcomes.unchanged += 1,
                        _ => s.outcomes.swapped += 1,
                    }
                });
                (outcome, 0, None)
            }
            Err(e) => {
                let (count, first) = match &e {
                    LoadError::Read(message) => (1, message.clone()),
                    LoadError::Invalid(d) => (
                        d.errors().count(),
                        d.errors().next().map(|e| e.to_string()).unwrap_or_default(),
                    ),
                };
                // The same broken files are reported once: again only when they change.
                let on_disk = policy_files::current_revision(&self.path).ok();
                let reported = self.broken.lock().ok().and_then(|mut broken| {
                    let same = on_disk.is_some() && *broken == on_disk;
                    *broken = on_disk;
                    same.then_some(())
                });
                match reported {
                    Some(()) => tracing::info!(
                        errors = count,
                        serving = %from,
                        trigger = why,
                        "policy reload failed again, the files unchanged since the errors above; still serving the last good policy"
                    ),
                    None => {
                        match &e {
                            LoadError::Read(message) => tracing::error!("{message}"),
                            LoadError::Invalid(d) => {
                                for diagnostic in &d.0 {
                                    tracing::error!("{diagnostic}");
                                }
                            }
                        }
                        tracing::error!(
                            errors = count,
                            serving = %from,
                            trigger = why,
                            "policy reload failed; still serving the last good policy"
                        );
                    }
                }
                self.set_status(|s| {
                    s.last_error = Some(first.clone());
                    s.outcomes.failed += 1;
                });
                ("failed", count, Some(first))
            }
        };
        self.set_status(|s| s.reloads += 1);
        super::notify::status(&self.status().line());
        let current = self.current.load();
        ReloadRecord {
            time: decision_log::now(),
            trigger: why.to_owned(),
            outcome,
            from,
            to: current.revision.clone(),
            files: current.files.clone(),
            errors,
            error,
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut status) = self.status.lock() {
            f(&mut status);
        }
    }
}

/// Where each reload is reported beyond the error log and `STATUS=`: the decision log (a
/// `kind:"reload"` record) and the status file.
#[derive(Debug, Clone, Default)]
pub struct Reporter {
    pub log: Option<DetachedLog>,
    pub status_file: Option<PathBuf>,
}

/// What the status file says (`serve --status-file`): read by `permission-broker reload`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StatusFile {
    pub pid: u32,
    /// The daemon's start time (clock ticks since boot): with the pid, it names the daemon, so a
    /// file left behind names no process that has reused its pid.
    pub start_time: Option<u64>,
    pub version: String,
    pub policy: PathBuf,
    pub strict_modes: bool,
    pub revision: String,
    pub rules: usize,
    /// Reloads tried since the daemon started; the last one's outcome.
    pub reloads: u64,
    pub last_reload: Option<LastReload>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LastReload {
    pub trigger: String,
    pub outcome: String,
    pub from: String,
    pub to: String,
    pub error: Option<String>,
}

impl Reporter {
    /// Replaces the status file (a new file renamed over it: a reader never sees half of one).
    /// Blocking.
    pub fn write_status(&self, store: &PolicyStore, last: Option<&ReloadRecord>) {
        let Some(path) = &self.status_file else {
            return;
        };
        let status = store.status();
        let file = StatusFile {
            pid: std::process::id(),
            start_time: super::peer::start_time_of(std::process::id()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            policy: std::path::absolute(&store.path).unwrap_or_else(|_| store.path.clone()),
            strict_modes: store.strict,
            revision: status.revision,
            rules: status.rules,
            reloads: status.reloads,
            last_reload: last.map(|r| LastReload {
                trigger: r.trigger.clone(),
                outcome: r.outcome.to_owned(),
                from: r.from.clone(),
                to: r.to.clone(),
                error: r.error.clone(),
            }),
        };
        if let Err(e) = replace_file(path, &serde_json::to_vec_pretty(&file).unwrap_or_default()) {
            tracing::error!(status_file = %path.display(), "cannot write the status file: {e}");
        }
    }
}

/// Removes the status file at a stop, if it is still this process's: a file left behind would
/// name a pid that another process may take.
pub fn remove_status_file(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<StatusFile>(&t).ok())
        .is_some_and(|s| s.pid == std::process::id());
    if ours && let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(status_file = %path.display(), "cannot remove the status file: {e}");
    }
}

/// Why the status file's directory cannot be trusted, if it cannot: someone other than root or
/// `uid` could replace the file (or squat its temporary name) there. The daemon refuses such a
/// directory at start; `reload` refuses a status file in one.
#[cfg(unix)]
pub fn untrusted_status_dir(path: &Path, uid: u32) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let m = match std::fs::metadata(dir) {
            Ok(m) => m,
            Err(e) => return Some(format!("its directory `{}`: {e}", dir.display())),
        };
        if m.uid() != 0 && m.uid() != uid {
            return Some(format!(
                "its directory `{}` is owned by uid {}, neither root nor the daemon's uid {uid}",
                dir.display(),
                m.uid()
            ));
        }
        if m.mode() & 0o022 != 0 {
            return Some(format!(
                "its directory `{}` is writable by others (mode {:o}): keep it where only the daemon's user can write, such as /run/permission-broker/status",
                dir.display(),
                m.mode() & 0o7777
            ));
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = (path, uid);
        None
    }
}

/// Writes `bytes` to a new file beside `path` and renames it over `path`.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
    let _ = std::fs::remove_file(&temp);
    let mut file = options.open(&temp)?;
    file.write_all(bytes)?;
    file.write_all(b"\n")?;
    drop(file);
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

/// How the reloader learns that the policy may have changed.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// Quiet time after the last filesystem event before reloading (editors write in bursts).
    pub debounce: Duration,
    /// Slow fallback for filesystems without change events: compare revisions this often.
    pub poll: Duration,
    /// Watch the policy directory for changes.
    pub events: bool,
    /// `reload = "signal"`: no file as it is written is ever picked up; polling looks only for
    /// the policy path swapped whole (its link re-pointed, its directory renamed over).
    pub commit_only: bool,
}

/// What the policy path is now, as a swap changes it: where it (and a `..data` link inside
/// it, the Kubernetes convention) resolves to, with device and inode.
fn root_identity(path: &Path) -> Vec<(PathBuf, u64, u64)> {
    [path.to_path_buf(), path.join("..data")]
        .iter()
        .filter_map(|p| {
            let real = std::fs::canonicalize(p).ok()?;
            let m = std::fs::metadata(&real).ok()?;
            #[cfg(unix)]
            let (dev, ino) = {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            };
            // Windows (compile-gated): the resolved path alone.
            #[cfg(not(unix))]
            let (dev, ino) = {
                let _ = m;
                (0, 0)
            };
            Some((real, dev, ino))
        })
        .collect()
}

/// Reloads the policy on filesystem changes in its directory, on each message on `requests`
/// (SIGHUP), and when polling finds a new revision. Runs until the daemon stops.
pub async fn run(
    store: Arc<PolicyStore>,
    config: WatchConfig,
    mut requests: mpsc::Receiver<&'static str>,
    report: Reporter,
) {
    let (events_tx, mut events) = mpsc::channel::<()>(1);
    // Kept alive for the life of this task: dropping the watcher stops the events. Armed again
    // whenever the policy path resolves somewhere else (a swapped link or directory): a watch
    // follows the directory it was put on, not the name.
    let arm = |events_tx: &mpsc::Sender<()>| {
        config
            .events
            .then(|| watch_directory(store.path(), events_tx.clone()))
            .flatten()
    };
    let mut watcher = arm(&events_tx);
    let mut watched = std::fs::canonicalize(store.path()).ok();
    let mut poll = tokio::time::interval(config.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    let mut swapped_from = if config.commit_only {
        let path = store.path().to_path_buf();
        tokio::task::spawn_blocking(move || root_identity(&path))
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    loop {
        let why = tokio::select! {
            Some(()) = events.recv() => {
                // Let a burst of writes (write temp, rename, chmod) settle, but never wait more
                // than a few debounce periods: a directory that keeps changing must still reload.
                let deadline = tokio::time::Instant::now() + config.debounce * 5;
                loop {
                    tokio::select! {
                        Some(()) = events.recv() => {
                            if tokio::time::Instant::now() >= deadline {
                                break;
                            }
                        }
                        () = tokio::time::sleep(config.debounce) => break,
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
                "file change"
            }
            Some(why) = requests.recv() => why,
            _ = poll.tick() => {
                let path = store.path().to_path_buf();
                if config.commit_only {
                    let now = tokio::task::spawn_blocking(move || root_identity(&path)).await.unwrap_or_default();
                    if now == swapped_from {
                        continue;
                    }
                    swapped_from = now;
                    "the policy path swapped"
                } else {
                    let on_disk = tokio::task::spawn_blocking(move || policy_files::current_revision(&path)).await;
                    match on_disk {
                        // Files that changed from what serves, or back to it after a failed
                        // reload (the failure is then over, and said to be); never the same
                        // broken files again.
                        Ok(Ok(revision)) if {
                            let broken = store.broken_revision();
                            (revision != store.current().revision || broken.is_some())
                                && Some(&revision) != broken.as_ref()
                        } => "poll",
                        _ => continue,
                    }
                }
            }
            else => return,
        };
        let reloading = store.clone();
        let reported = report.clone();
        if let Ok(record) = tokio::task::spawn_blocking(move || {
            super::notify::reloading();
            let record = reloading.reload(why);
            reported.write_status(&reloading, Some(&record));
            super::notify::ready();
            record
        })
        .await
            && let Some(log) = &report.log
        {
            log.record(Record::Reload(Box::new(record))).await;
        }
        let now = std::fs::canonicalize(store.path()).ok();
        if config.events && now != watched {
            tracing::info!(
                policy = %store.path().display(),
                now = ?now,
                "the policy path resolves somewhere else now: watching it there"
            );
            drop(watcher);
            watcher = arm(&events_tx);
            watched = now;
        }
    }
}

/// Watches the directory that holds the policy (not the file: editors replace files by rename,
/// Kubernetes swaps a `..data` symlink), reporting any change but reads.
fn watch_directory(policy: &Path, events: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let dir = if policy.is_dir() {
        policy.to_path_buf()
    } else {
        policy
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    let policy_name = policy.file_name().map(|n| n.to_os_string());
    // Only entries that can change the policy: `*.toml` files, the policy file itself, and the
    // `..data`-style entries Kubernetes swaps. Not a decision log or an editor's swap file that
    // happen to live in the same directory.
    let relevant = move |path: &Path| {
        let Some(name) = path.file_name() else {
            return false;
        };
        let text = name.to_string_lossy();
        text.ends_with(".toml") || text.starts_with("..") || Some(name) == policy_name.as_deref()
    };
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, EventKind::Access(_))
            && event.paths.iter().any(|p| relevant(p))
        {
            // A full channel already holds a pending reload.
            let _ = events.try_send(());
        }
    };
    // A directory policy is also watched from its parent, for the name itself: `ln -sfn` and
    // `mv -T` swap it there, where a watch on the directory cannot see it.
    let parent = policy
        .is_dir()
        .then(|| policy.parent().filter(|p| !p.as_os_str().is_empty()))
        .flatten()
        .map(Path::to_path_buf);
    match notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&dir, RecursiveMode::NonRecursive)?;
        if let Some(parent) = &parent {
            w.watch(parent, RecursiveMode::NonRecursive)?;
        }
        Ok(w)
    }) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the policy directory; relying on polling and SIGHUP");
            None
        }
    }
}
