//! Resolving symlinks the way the peer would, inside its root directory.
//!
//! `std::fs::canonicalize` would resolve an absolute link target against the daemon's root, which
//! is wrong for a peer in a container or chroot; it also fails on paths that do not exist yet,
//! such as a file about to be written through a linked directory. So the walk is done here, one
//! component at a time under the peer's root: links are followed (absolute targets restart at
//! the peer's root), and once a component does not exist the rest is taken as written.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Linux's limit on links followed in one lookup.
const MAX_LINKS: usize = 40;

/// What the real path of a resolved path is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    /// Exists and is not a directory.
    Other,
    /// Does not exist (yet).
    Missing,
}

/// The real path of `path` (absolute, normalised) inside `root`.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<String, String> {
    resolve_in_root_with_kind(root, path).map(|(real, _)| real)
}

/// [`resolve_in_root`], and what the real path is: the walk has just looked at it.
pub fn resolve_in_root_with_kind(root: &Path, path: &str) -> Result<(String, Kind), String> {
    // The root itself, when `path` is `/`.
    let mut kind = Kind::Directory;
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_owned)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                // What was walked so far are directories.
                kind = Kind::Directory;
                continue;
            }
            _ => {}
        }
        let mut on_disk: PathBuf = root.to_path_buf();
        on_disk.extend(&resolved);
        on_disk.push(&component);
        match std::fs::symlink_metadata(&on_disk) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!("more than {MAX_LINKS} symlinks"));
                }
                let target = std::fs::read_link(&on_disk)
                    .map_err(|e| format!("cannot read link `{}`: {e}", on_disk.display()))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| format!("link `{}` is not valid UTF-8", on_disk.display()))?;
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(str::to_owned),
                );
            }
            Ok(m) => {
                kind = if m.is_dir() {
                    Kind::Directory
                } else {
                    Kind::Other
                };
                resolved.push(component);
            }
            // Nothing exists from here on: the rest cannot be a link. Unless the root itself is
            // gone (the process exited), which would make every path look new and "resolve" to
            // itself: checked here, where it matters, not on every walk.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                std::fs::metadata(root).map_err(|e| format!("cannot read the peer's root: {e}"))?;
                kind = Kind::Missing;
                resolved.push(component);
                while let Some(rest) = pending.pop() {
                    match rest.as_str() {
                        "." => {}
                        ".." => {
                            resolved.pop();
                        }
                        _ => resolved.push(rest),
                    }
                }
            }
            Err(e) => return Err(format!("cannot inspect `{}`: {e}", on_disk.display())),
        }
    }
    Ok((format!("/{}", resolved.join("/")), kind))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn follows_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("srv/app")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "x").unwrap();
        symlink("/etc", root.join("srv/app/abs")).unwrap();
        symlink("../../etc/passwd", root.join("srv/app/rel")).unwrap();
        symlink("loop2", root.join("srv/app/loop1")).unwrap();
        symlink("loop1", root.join("srv/app/loop2")).unwrap();
        let r = |p: &str| resolve_in_root(root, p);
        assert_eq!(
            r("/srv/app/abs/passwd").unwrap(),
            "/etc/passwd",
            "absolute target stays in the root"
        );
        assert_eq!(r("/srv/app/rel").unwrap(), "/etc/passwd");
        assert_eq!(
            r("/srv/app/abs/new.txt").unwrap(),
            "/etc/new.txt",
            "a new file through a link"
        );
        assert_eq!(r("/srv/app/missing/x/../y").unwrap(), "/srv/app/missing/y");
        assert_eq!(r("/srv/app").unwrap(), "/srv/app");
        assert_eq!(r("/").unwrap(), "/");
        assert!(
            r("/srv/app/loop1")
                .unwrap_err()
                .contains("more than 40 symlinks")
        );
        let gone = resolve_in_root(&root.join("no-such-root"), "/etc").unwrap_err();
        assert!(gone.contains("cannot read the peer's root"), "{gone}");
    }
}
