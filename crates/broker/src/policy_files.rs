//! Reading policy files from disk: one file, or every `*.toml` in a directory in lexical order.

use permission_broker_policy::{Diagnostics, Directory, Policy, Source};
use std::fmt;
use std::path::{Path, PathBuf};

/// A policy compiled from files, with the warnings it produced.
#[derive(Debug)]
pub struct LoadedPolicy {
    pub policy: Policy,
    pub files: Vec<PathBuf>,
    pub warnings: Diagnostics,
    /// Hash of the files' names and contents: the same files give the same revision.
    pub revision: String,
}

#[derive(Debug)]
pub enum LoadError {
    /// The files could not be read (missing, unreadable, an empty directory).
    Read(String),
    /// The files were read but do not compile.
    Invalid(Diagnostics),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read(message) => f.write_str(message),
            LoadError::Invalid(diagnostics) => write!(f, "{}", diagnostics.to_string().trim_end()),
        }
    }
}

impl std::error::Error for LoadError {}

/// Reads and compiles the policy at `path` (a file, or a directory of `*.toml` files), with this
/// host's accounts for the warnings about unknown `users`/`groups`.
pub fn load(path: &Path) -> Result<LoadedPolicy, LoadError> {
    load_with(path, &SystemDirectory)
}

/// [`load`], with the accounts of `directory` (a fleet's passwd and group files, for the tools).
pub fn load_with(path: &Path, directory: &dyn Directory) -> Result<LoadedPolicy, LoadError> {
    let (files, sources) = read_sources(path).map_err(LoadError::Read)?;
    let revision = revision(&sources);
    let (policy, mut warnings) =
        Policy::compile(&sources, directory).map_err(LoadError::Invalid)?;
    for skipped in lookalikes(path) {
        warnings.0.push(permission_broker_policy::Diagnostic {
            severity: permission_broker_policy::Severity::Warning,
            file: skipped.display().to_string(),
            line: 1,
            column: 1,
            message: "looks like a policy drop-in but is not read: only entries named `*.toml` (lowercase, a file or a link to one) are"
                .to_owned(),
        });
    }
    Ok(LoadedPolicy {
        policy,
        files,
        warnings,
        revision,
    })
}

/// [`load`], refusing (as sshd's `StrictModes` does) a policy that someone other than root or
/// this process's user could change: see [`insecure`]. `serve` and its reloads use this; a
/// refused reload keeps the last good policy.
pub fn load_strict(path: &Path, strict: bool) -> Result<LoadedPolicy, LoadError> {
    load_strict_for(path, strict, None)
}

/// [`load_strict`] as the daemon running as `uid` would load it (`None`: this process's user):
/// what `reload` checks before it signals the daemon.
pub fn load_strict_for(
    path: &Path,
    strict: bool,
    uid: Option<u32>,
) -> Result<LoadedPolicy, LoadError> {
    let loaded = load(path)?;
    if strict {
        let problems = insecure_for(path, &loaded.files, uid);
        if !problems.is_empty() {
            return Err(LoadError::Read(format!(
                "{}; the policy is not served (fix the owner or mode, or set strict_modes = false / --no-strict-modes on a machine with no other users)",
                problems.join("; ")
            )));
        }
    }
    Ok(loaded)
}

/// Why someone other than root or this process's user could change the policy at `path` (read
/// from `files`): each file (a link and its target), the directory holding it and the policy
/// directory must be owned by one of them and not writable by group or others.
pub fn insecure(path: &Path, files: &[PathBuf]) -> Vec<String> {
    insecure_for(path, files, None)
}

/// [`insecure`] for a daemon running as `uid` (`None`: this process's user).
#[cfg(unix)]
pub fn insecure_for(path: &Path, files: &[PathBuf], uid: Option<u32>) -> Vec<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let mut checked: Vec<PathBuf> = Vec::new();
    let mut problems = Vec::new();
    let mut check = |p: &Path, follow: bool| {
        if checked.iter().any(|c| c == p) {
            return;
        }
        checked.push(p.to_path_buf());
        let m = if follow {
            std::fs::metadata(p)
        } else {
            std::fs::symlink_metadata(p)
        };
        let Ok(m) = m else { return };
        if m.uid() != 0 && m.uid() != me {
            problems.push(format!(
                "`{}` is owned by uid {}, not by root or the daemon's user (uid {me})",
                p.display(),
                m.uid()
            ));
        } else if !m.file_type().is_symlink() && m.permissions().mode() & 0o022 != 0 {
            problems.push(format!(
                "`{}` is writable by its group or others (mode {:o})",
                p.display(),
                m.permissions().mode() & 0o7777
            ));
        }
    };
    let dir_of = |p: &Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    if path.is_dir() {
        check(path, true);
    }
    for file in files {
        check(file, false);
        check(&dir_of(file), true);
        if let Ok(real) = std::fs::canonicalize(file) {
            check(&real, true);
            check(&dir_of(&real), true);
        }
    }
    problems
}

#[cfg(not(unix))]
pub fn insecure_for(_path: &Path, _files: &[PathBuf], _uid: Option<u32>) -> Vec<String> {
    Vec::new()
}

/// The revision of the policy at `path` without compiling it, for the polling fallback.
pub fn current_revision(path: &Path) -> Result<String, String> {
    read_sources(path).map(|(_, sources)| revision(&sources))
}

/// How often a directory is read again when its files changed while it was being read.
const CONSISTENT_READ_ATTEMPTS: usize = 5;

/// The policy's files and their texts, in the order they form the policy: one revision. A
/// deploy that writes several files one after the other (rsync, Ansible) could otherwise be read
/// half old, half new -- a policy nobody wrote. So the directory is listed and every file read,
/// then listed and every file's identity (inode, size, change time) checked again; if anything
/// changed meanwhile it is read again, and after a few tries the read fails (the running policy
/// stays).
fn read_sources(path: &Path) -> Result<(Vec<PathBuf>, Vec<Source>), String> {
    read_sources_observed(path, &mut |_| {})
}

/// [`read_sources`], calling `after_read` with each file just read (a seam for the tests, which
/// rewrite another file at that moment, as a deploy would).
fn read_sources_observed(
    path: &Path,
    after_read: &mut dyn FnMut(&Path),
) -> Result<(Vec<PathBuf>, Vec<Source>), String> {
    for _ in 0..CONSISTENT_READ_ATTEMPTS {
        let files = policy_files(path)?;
        let before = identities(&files);
        let mut sources = Vec::with_capacity(files.len());
        for file in &files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("{}: cannot read policy file: {e}", file.display()))?;
            sources.push(Source::new(file.display().to_string(), text));
            after_read(file);
        }
        let again = policy_files(path)?;
        if again == files && identities(&again) == before {
            return Ok((files, sources));
        }
    }
    Err(format!(
        "{}: the policy files kept changing while they were read ({CONSISTENT_READ_ATTEMPTS} tries); not loading a mix of two revisions",
        path.display()
    ))
}

/// Inode, size, modification time (s, ns), change time (s, ns).
type Identity = (u64, u64, i64, i64, i64, i64);

/// What identifies a file's content without reading it: inode, size, modification and change
/// times (nanoseconds). A file replaced or rewritten between two looks differs in one of them.
fn identities(files: &[PathBuf]) -> Vec<Option<Identity>> {
    files
        .iter()
        .map(|file| {
            let m = std::fs::metadata(file).ok()?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                Some((
                    m.ino(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                ))
            }
            #[cfg(not(unix))]
            {
                let modified = m
                    .modified()
                    .ok()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?;
                Some((
                    0,
                    m.len(),
                    modified.as_secs() as i64,
                    i64::from(modified.subsec_nanos()),
                    0,
                    0,
                ))
            }
        })
        .collect()
}

/// The first 16 hex digits of SHA-256 over each file's name and text.
fn revision(sources: &[Source]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for source in sources {
        let name = Path::new(&source.name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(source.text.as_bytes());
        hash.update([0]);
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The files that make up the policy at `path`. In a directory: entries named `*.toml` and not
/// hidden, sorted by name; each must be a regular file (or a link to one) that can be read.
/// Hidden entries are skipped so that editors' swap files and Kubernetes' `..data` machinery are
/// never read as policy. A `*.toml` entry that cannot be used -- a dangling link, one that cannot
/// be read, a directory, a socket -- is an error, never a smaller policy: a deny rule must not
/// vanish because its file did.
fn policy_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| format!("{}: cannot read policy: {e}", path.display()))?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| format!("{}: cannot list policy directory: {e}", path.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("{}: cannot list policy directory: {e}", path.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(format!(
                "{}: policy directory has an entry whose name is not UTF-8: {name:?}",
                path.display()
            ));
        };
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        let file = entry.path();
        match std::fs::metadata(&file) {
            Ok(m) if m.is_file() => files.push(file),
            Ok(_) => {
                return Err(format!(
                    "{}: policy drop-in is not a regular file",
                    file.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "{}: cannot read policy drop-in: {e}",
                    file.display()
                ));
            }
        }
    }
    if files.is_empty() {
        return Err(format!(
            "{}: policy directory has no `*.toml` files",
            path.display()
        ));
    }
    files.sort();
    Ok(files)
}

/// Entries of a policy directory that an operator may think are read but are not: `*.TOML`,
/// `x.toml~`, `x.toml.bak`, `x.toml.d/`. (Hidden entries are editors' and Kubernetes' own.)
fn lookalikes(path: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return false;
            };
            !name.starts_with('.')
                && !name.ends_with(".toml")
                && name.to_ascii_lowercase().contains(".toml")
        })
        .map(|entry| entry.path())
        .collect();
    out.sort();
    out
}

/// User and group names from the system's databases (NSS), resolved when a policy loads.
#[derive(Debug, Clone, Copy)]
pub struct SystemDirectory;

#[cfg(unix)]
impl Directory for SystemDirectory {
    fn user(&self, name: &str) -> Option<u32> {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }

    fn group(&self, name: &str) -> Option<u32> {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    }

    fn user_name(&self, uid: u32) -> Option<String> {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    }

    fn group_name(&self, gid: u32) -> Option<String> {
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .map(|g| g.name)
    }
}

/// The accounts the tools look names up in: a fleet's passwd/group files when given
/// (`--passwd`, `--group`), else this host's.
pub fn accounts(accounts: &crate::cli::Accounts) -> Result<Box<dyn Directory>, String> {
    if accounts.passwd.is_none() && accounts.group.is_none() {
        return Ok(Box::new(SystemDirectory));
    }
    let read = |path: &Option<PathBuf>| {
        path.as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map_err(|e| format!("{}: cannot read accounts: {e}", p.display()))
            })
            .transpose()
    };
    let (passwd, group) = (read(&accounts.passwd)?, read(&accounts.group)?);
    permission_broker_policy::StaticDirectory::from_files(passwd.as_deref(), group.as_deref())
        .map(|d| Box::new(d) as Box<dyn Directory>)
}

/// Windows has no uids: `users` and `groups` in a policy are load errors there.
#[cfg(windows)]
impl Directory for SystemDirectory {
    fn user(&self, _: &str) -> Option<u32> {
        None
    }

    fn group(&self, _: &str) -> Option<u32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deploy rewrites `90-deny.toml` while `00-base.toml` is being read: what is loaded is the
    /// directory as it was after the rewrite, both files of one revision, never the old deny file
    /// beside the new base.
    #[test]
    fn a_file_rewritten_while_the_directory_is_read_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00-base.toml"), "# rev 1\n").unwrap();
        std::fs::write(dir.path().join("90-deny.toml"), "# rev 1\n").unwrap();
        let mut deployed = false;
        let (_, sources) = read_sources_observed(dir.path(), &mut |file| {
            if !deployed && file.ends_with("00-base.toml") {
                deployed = true;
                std::fs::write(dir.path().join("00-base.toml"), "# rev 2\n").unwrap();
                std::fs::write(dir.path().join("90-deny.toml"), "# rev 2\n").unwrap();
            }
        })
        .unwrap();
        let texts: Vec<&str> = sources.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            ["# rev 2\n", "# rev 2\n"],
            "same sizes: told apart by their change times"
        );
    }

    /// A directory that never stops changing is not loaded at all.
    #[test]
    fn a_directory_that_keeps_changing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00-base.toml"), "# 0\n").unwrap();
        let mut n = 0;
        let err = read_sources_observed(dir.path(), &mut |file| {
            n += 1;
            std::fs::write(file, format!("# {n} {}\n", "x".repeat(n))).unwrap();
        })
        .unwrap_err();
        assert!(err.contains("kept changing"), "{err}");
    }
}
