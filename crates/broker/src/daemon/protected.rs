//! The broker's own files, protected whatever the policy says.
//!
//! A policy that lets scripts write in `/tmp` (the laptop example) would otherwise let any of them
//! remove `/tmp/perm.sock` -- after which every new Deno exits 87 -- or rewrite the policy it is
//! judged by, or read the decision log, which holds every other process's requests. So, built in
//! and before the policy: **write** (and `net` to a `unix:` socket) of the socket, the policy file
//! or any file in the policy directory, the configuration file and the decision log, or of any
//! directory above one of them (removing or renaming a parent removes the file), and **read** of
//! the decision log (and of its rotated copies beside it: `decisions.log.1`, `decisions.log.2.gz`)
//! are denied with a reason that says so. Both the path as asked and its real location (symlinks
//! followed) are checked, so a link to the log is no way around it.

use permission_broker_protocol::Permission;
use std::path::{Component, Path, PathBuf};

pub const REASON_WRITE: &str = "denied: this path is the permission broker's own (its socket, policy, configuration or decision log)";
pub const REASON_READ_LOG: &str =
    "denied: the permission broker's decision log records other processes' requests";

/// The files the daemon protects, as absolute paths (each both as configured and canonical).
#[derive(Debug, Default, Clone)]
pub struct Protected {
    /// Written to: never. A policy directory covers everything inside it.
    write: Vec<String>,
    /// Written to or read: never (the decision log; its rotated copies share the prefix:
    /// `decisions.log.1` holds records too, and must not be forged or removed either).
    log_prefixes: Vec<String>,
}

impl Protected {
    pub fn new(
        socket: &Path,
        policy: &Path,
        config: Option<&Path>,
        decision_log: Option<&Path>,
    ) -> Protected {
        let mut protected = Protected::default();
        for path in [Some(socket), Some(policy), config, decision_log]
            .into_iter()
            .flatten()
        {
            protected.write.extend(forms(path));
        }
        if let Some(log) = decision_log {
            protected.log_prefixes.extend(forms(log));
        }
        protected.write.sort();
        protected.write.dedup();
        protected.log_prefixes.sort();
        protected.log_prefixes.dedup();
        protected
    }

    /// Why `path` (absolute, normalised) may not be asked for with `permission`, if it may not.
    pub fn check(&self, permission: Permission, path: &str) -> Option<&'static str> {
        match permission {
            Permission::Write | Permission::Net => (self
                .write
                .iter()
                .any(|p| within(path, p) || within(p, path))
                || self.is_log(path))
            .then_some(REASON_WRITE),
            Permission::Read => self.is_log(path).then_some(REASON_READ_LOG),
            _ => None,
        }
    }
}

impl Protected {
    /// The decision log or one of its rotated copies.
    fn is_log(&self, path: &str) -> bool {
        self.log_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }

    /// The files a loaded policy was read from, as they really are (a drop-in may be a link into
    /// a tree scripts can write: its target is what must not be written).
    pub fn policy_files(files: &[PathBuf]) -> Vec<String> {
        let mut out: Vec<String> = files.iter().flat_map(|file| forms(file)).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Why writing `path` would change the running policy's own files, if it would.
    pub fn check_policy_files(
        files: &[String],
        permission: Permission,
        path: &str,
    ) -> Option<&'static str> {
        matches!(permission, Permission::Write | Permission::Net)
            .then(|| files.iter().any(|f| within(path, f) || within(f, path)))
            .filter(|hit| *hit)
            .map(|_| REASON_WRITE)
    }
}

/// `path` is `base` or inside it.
fn within(path: &str, base: &str) -> bool {
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || base == "/",
        None => false,
    }
}

/// `path` made absolute (against the daemon's working directory) and normalised, and its
/// canonical form: the parent resolved, so a socket or log that does not exist yet is covered.
fn forms(path: &Path) -> Vec<String> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let lexical = normalize(&absolute);
    let canonical = match (lexical.parent(), lexical.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| lexical.clone()),
        _ => lexical.clone(),
    };
    let canonical = std::fs::canonicalize(&canonical).unwrap_or(canonical);
    [lexical, canonical]
        .into_iter()
        .filter_map(|p| p.to_str().map(str::to_owned))
        .collect()
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_files_their_parents_and_the_log_copies() {
        let p = Protected::new(
            Path::new("/tmp/perm.sock"),
            Path::new("/etc/permission-broker/policy.d"),
            Some(Path::new("/etc/permission-broker/broker.toml")),
            Some(Path::new("/var/log/pb/decisions.log")),
        );
        for denied in [
            "/tmp/perm.sock",
            "/tmp",
            "/",
            "/etc/permission-broker/policy.d",
            "/etc/permission-broker/policy.d/00-base.toml",
            "/etc/permission-broker/broker.toml",
            "/var/log/pb/decisions.log",
            "/var/log/pb",
        ] {
            assert_eq!(
                p.check(Permission::Write, denied),
                Some(REASON_WRITE),
                "{denied}"
            );
        }
        for allowed in [
            "/tmp/perm.sock.d",
            "/tmp/perm.sockx",
            "/tmp/other",
            "/etc/permission-broker/broker.toml.bak",
            "/var/log/pbx",
        ] {
            assert_eq!(p.check(Permission::Write, allowed), None, "{allowed}");
        }
        for denied in ["/var/log/pb/decisions.log", "/var/log/pb/decisions.log.1"] {
            assert_eq!(p.check(Permission::Read, denied), Some(REASON_READ_LOG));
        }
        assert_eq!(p.check(Permission::Read, "/tmp/perm.sock"), None);
        assert_eq!(p.check(Permission::Env, "/var/log/pb/decisions.log"), None);
    }

    #[test]
    fn relative_configuration_is_made_absolute() {
        let p = Protected::new(
            Path::new("perm.sock"),
            Path::new("./a/../policy.toml"),
            None,
            None,
        );
        let cwd = std::env::current_dir().unwrap();
        let sock = cwd.join("perm.sock");
        assert!(p.check(Permission::Write, sock.to_str().unwrap()).is_some());
        let policy = cwd.join("policy.toml");
        assert!(
            p.check(Permission::Write, policy.to_str().unwrap())
                .is_some()
        );
    }
}
