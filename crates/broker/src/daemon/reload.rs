//! The running policy and how it changes: a snapshot swapped whole, never edited in place.
//!
//! Connections read the current snapshot once per decision (`arc_swap`: no lock shared by all
//! connections), so a decision in flight finishes on the snapshot it started with. A reload builds
//! a complete new snapshot off to the side and swaps it in only if it compiled; a policy that does
//! not load never replaces the running one.

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
}

/// What operators see about the policy (systemd `STATUS=`, logs).
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub revision: String,
    pub rules: usize,
    /// The last failed reload's first error, until a reload succeeds.
    pub last_error: Option<String>,
}

impl Status {
    pub fn line(&self) -> String {
        match &self.last_error {
            None => format!("policy {} ({} rules)", self.revision, self.rules),
            Some(e) => format!(
                "policy {} ({} rules); last reload FAILED, still serving it: {e}",
                self.revision, self.rules
            ),
        }
    }
}

#[derive(Debug)]
pub struct PolicyStore {
    path: PathBuf,
    /// Refuse policy files others could change (`strict_modes`).
    strict: bool,
    current: ArcSwap<Snapshot>,
    status: Mutex<Status>,
}

/// How a reload went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    Swapped { from: String, to: String },
    Unchanged,
    Failed,
}

impl PolicyStore {
    pub fn new(path: PathBuf, loaded: LoadedPolicy, strict: bool) -> PolicyStore {
        let status = Status {
            revision: loaded.revision.clone(),
            rules: loaded.policy.rules().len(),
            last_error: None,
        };
        PolicyStore {
            path,
            strict,
            current: ArcSwap::from_pointee(Snapshot {
                files: super::protected::Protected::policy_files(&loaded.files),
                policy: loaded.policy,
                revision: loaded.revision,
            }),
            status: Mutex::new(status),
        }
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

    /// Loads the policy again and swaps it in if it compiled and differs. Blocking: run it off the
    /// async threads.
    pub fn reload(&self, why: &str) -> Reloaded {
        let outcome = match policy_files::load_strict(&self.path, self.strict) {
            Ok(loaded) => {
                for warning in loaded.warnings.warnings() {
                    tracing::warn!("{warning}");
                }
                let from = self.current.load().revision.clone();
                let rules = loaded.policy.rules().len();
                let outcome = if loaded.revision == from {
                    Reloaded::Unchanged
                } else {
                    let to = loaded.revision.clone();
                    self.current.store(Arc::new(Snapshot {
                        files: super::protected::Protected::policy_files(&loaded.files),
                        policy: loaded.policy,
                        revision: loaded.revision,
                    }));
                    tracing::info!(from = %from, to = %to, rules, trigger = why, "policy reloaded");
                    Reloaded::Swapped { from, to }
                };
                let revision = self.current.load().revision.clone();
                self.set_status(|s| {
                    s.revision = revision;
                    s.rules = rules;
                    s.last_error = None;
                });
                outcome
            }
            Err(e) => {
                let (count, first) = match &e {
                    LoadError::Read(message) => (1, message.clone()),
                    LoadError::Invalid(d) => (
                        d.errors().count(),
                        d.errors().next().map(|e| e.to_string()).unwrap_or_default(),
                    ),
                };
                match &e {
                    LoadError::Read(message) => tracing::error!("{message}"),
                    LoadError::Invalid(d) => {
                        for diagnostic in &d.0 {
                            tracing::error!("{diagnostic}");
                        }
                    }
                }
                let serving = self.current.load().revision.clone();
                tracing::error!(
                    errors = count,
                    serving = %serving,
                    trigger = why,
                    "policy reload failed; still serving the last good policy"
                );
                self.set_status(|s| s.last_error = Some(first));
                Reloaded::Failed
            }
        };
        super::notify::status(&self.status().line());
        outcome
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut status) = self.status.lock() {
            f(&mut status);
        }
    }
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
                        Ok(Ok(revision)) if revision != store.current().revision => "poll",
                        _ => continue,
                    }
                }
            }
            else => return,
        };
        let reloading = store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            super::notify::reloading();
            reloading.reload(why);
            super::notify::ready();
        })
        .await;
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
