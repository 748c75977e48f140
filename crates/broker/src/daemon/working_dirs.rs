//! The working directories a peer may have when it opens a relative path.
//!
//! Deno sends a relative path as written and opens it later, against the working directory the
//! process has *then*. The working directory is process-wide: a Worker's `Deno.chdir` changes it
//! for every thread, between the broker's answer and the main thread's `open`. So the directory
//! the broker reads from `/proc/<pid>/cwd` when a frame arrives proves nothing about where the
//! path will be opened.
//!
//! What the broker does know: every `Deno.chdir(dir)` is itself a `read` check of `dir`, sent
//! before the process changes directory. So the directories a process can ever be in are its
//! working directory when first seen, each one observed since, and every directory it has been
//! allowed to read.
//! A relative path is allowed only if it is allowed under **every** one of them; and a directory
//! newly allowed is refused if a relative path allowed earlier would reach a denied file from it
//! (the earlier `open` may still be in flight). Both sets are capped; past a cap relative paths
//! are denied, never decided on a partial set.

use std::sync::Arc;

/// Directories a connection keeps as possible working directories. A script that reads more
/// directories than this and then uses relative paths gets a deny asking for absolute paths.
pub const MAX_DIRS: usize = 128;
/// Distinct relative values a connection keeps (each is re-checked against every new directory).
pub const MAX_RELATIVES: usize = 256;

/// One connection's possible working directories and the relative values it was allowed.
///
/// Cloned for every decision made in place (what a rescue goes on with) and changed by few: the
/// lists are shared between clones and copied only when one of them changes.
#[derive(Debug, Default, Clone)]
pub struct WorkingDirs {
    /// Real, absolute directories; the first is the working directory when first seen.
    dirs: Arc<Vec<Box<str>>>,
    /// The relative values allowed so far, by permission.
    relatives: Arc<Vec<(permission_broker_protocol::Permission, Box<str>)>>,
    /// A directory could not be kept: relative paths are denied from then on.
    overflowed: bool,
}

impl WorkingDirs {
    /// The directories a relative path must be allowed under; `None` once a cap was passed.
    pub fn dirs(&self) -> Option<&[Box<str>]> {
        (!self.overflowed).then_some(self.dirs.as_slice())
    }

    /// The directories as they are now, whatever is added later (see [`WorkingDirs::dirs`] for
    /// whether they may be used).
    pub fn shared_dirs(&self) -> Arc<Vec<Box<str>>> {
        self.dirs.clone()
    }

    /// The relative values as they are now, whatever is added later.
    pub fn shared_relatives(&self) -> Arc<Vec<(permission_broker_protocol::Permission, Box<str>)>> {
        self.relatives.clone()
    }

    pub fn contains(&self, dir: &str) -> bool {
        self.dirs.iter().any(|d| &**d == dir)
    }

    /// Adds a directory the process may be in. Past [`MAX_DIRS`] it is not kept and relative
    /// paths are denied from then on.
    pub fn add_dir(&mut self, dir: &str) {
        if self.contains(dir) {
            return;
        }
        if self.dirs.len() >= MAX_DIRS {
            self.overflowed = true;
        } else {
            Arc::make_mut(&mut self.dirs).push(dir.into());
        }
    }

    /// Remembers an allowed relative value; `false` if it cannot be kept (the cap), in which
    /// case it must not be allowed.
    pub fn add_relative(
        &mut self,
        permission: permission_broker_protocol::Permission,
        value: &str,
    ) -> bool {
        if self
            .relatives
            .iter()
            .any(|(p, v)| *p == permission && &**v == value)
        {
            return true;
        }
        if self.relatives.len() >= MAX_RELATIVES {
            return false;
        }
        Arc::make_mut(&mut self.relatives).push((permission, value.into()));
        true
    }
}

/// [`WorkingDirs`] as carried across a handover.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    dirs: Vec<String>,
    /// `(permission, value)`.
    relatives: Vec<(String, String)>,
    overflowed: bool,
}

impl WorkingDirs {
    pub fn save(&self) -> Saved {
        Saved {
            dirs: self.dirs.iter().map(|d| d.to_string()).collect(),
            relatives: self
                .relatives
                .iter()
                .map(|(p, v)| (p.as_str().to_owned(), v.to_string()))
                .collect(),
            overflowed: self.overflowed,
        }
    }

    /// What a handover carried. Anything that does not fit (an unknown permission, a set past
    /// its cap) makes the set overflowed: relative paths are then denied, never decided on less
    /// than was known.
    pub fn restore(saved: Saved) -> WorkingDirs {
        let mut overflowed = saved.overflowed || saved.dirs.len() > MAX_DIRS;
        let mut relatives = Vec::with_capacity(saved.relatives.len());
        for (permission, value) in saved.relatives {
            match permission.parse::<permission_broker_protocol::Permission>() {
                Ok(p) if relatives.len() < MAX_RELATIVES => relatives.push((p, value.into())),
                _ => overflowed = true,
            }
        }
        WorkingDirs {
            dirs: Arc::new(
                saved
                    .dirs
                    .into_iter()
                    .take(MAX_DIRS)
                    .map(String::into_boxed_str)
                    .collect(),
            ),
            relatives: Arc::new(relatives),
            overflowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use permission_broker_protocol::Permission;

    #[test]
    fn directories_are_kept_once_and_capped() {
        let mut dirs = WorkingDirs::default();
        dirs.add_dir("/srv/a");
        dirs.add_dir("/srv/a");
        assert_eq!(dirs.dirs().map(<[_]>::len), Some(1));
        for i in 0..MAX_DIRS {
            dirs.add_dir(&format!("/d/{i}"));
        }
        assert_eq!(
            dirs.dirs(),
            None,
            "past the cap nothing is decided on a partial set"
        );
    }

    #[test]
    fn a_saved_set_comes_back_the_same() {
        let mut dirs = WorkingDirs::default();
        dirs.add_dir("/srv/a");
        dirs.add_dir("/srv/b");
        assert!(dirs.add_relative(Permission::Read, "x"));
        assert!(dirs.add_relative(Permission::Write, "y"));
        let back = WorkingDirs::restore(dirs.save());
        assert_eq!(back.save(), dirs.save());
        assert_eq!(*back.shared_relatives(), *dirs.shared_relatives());
        let mut overflowed = WorkingDirs::default();
        for i in 0..=MAX_DIRS {
            overflowed.add_dir(&format!("/d/{i}"));
        }
        assert_eq!(WorkingDirs::restore(overflowed.save()).dirs(), None);
    }

    #[test]
    fn a_saved_set_that_does_not_fit_denies_relative_paths() {
        let mut saved = WorkingDirs::default().save();
        saved.dirs.push("/srv".to_owned());
        saved
            .relatives
            .push(("teleport".to_owned(), "x".to_owned()));
        assert_eq!(WorkingDirs::restore(saved).dirs(), None);
    }

    #[test]
    fn relatives_are_kept_once_and_capped() {
        let mut dirs = WorkingDirs::default();
        assert!(dirs.add_relative(Permission::Read, "x"));
        assert!(dirs.add_relative(Permission::Read, "x"));
        assert!(dirs.add_relative(Permission::Write, "x"));
        assert_eq!(dirs.shared_relatives().len(), 2);
        for i in 0..MAX_RELATIVES - 2 {
            assert!(dirs.add_relative(Permission::Read, &format!("f{i}")));
        }
        assert!(!dirs.add_relative(Permission::Read, "one-more"));
        assert!(
            dirs.add_relative(Permission::Read, "x"),
            "a kept value stays allowed"
        );
    }
}
