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
    // The device of the directory being walked, where known.
    let mut dir_dev: Option<u64> = None;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                // What was walked so far are directories.
                kind = Kind::Directory;
                dir_dev = None;
                continue;
            }
            _ => {}
        }
        let mut on_disk: PathBuf = root.to_path_buf();
        on_disk.extend(&resolved);
        on_disk.push(&component);
        let found = std::fs::symlink_metadata(&on_disk);
        // On a case-insensitive file system `SECRET.TXT` opens `Secret.txt`: continue with the
        // name as it is on disk, so that rules written for it apply. The directory's device is
        // the previous component's (one `stat` of the root per walk, not one per component).
        let component = match &found {
            Ok(_) => case::on_disk_name(&on_disk, component, &mut dir_dev),
            Err(_) => component,
        };
        #[cfg(unix)]
        if let Ok(m) = &found {
            dir_dev = Some(std::os::unix::fs::MetadataExt::dev(m));
        }
        let on_disk = on_disk.with_file_name(&component);
        match found {
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
                // The link's target is looked up from the link's directory (or the root).
                dir_dev = None;
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

/// Case-insensitive file systems (vfat on `/boot/efi` and USB sticks, exfat, NTFS, SMB shares):
/// a name may be asked for in any case, and rules compare bytes, so the walk uses the entry's
/// own name. Which file systems are so is asked once per device (`statfs`) and remembered.
#[cfg(target_os = "linux")]
mod case {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::{OnceLock, PoisonError, RwLock};

    /// `statfs` magic numbers of file systems that look names up without regard to case.
    const CASE_INSENSITIVE: &[i64] = &[
        0x4d44,      // msdos / vfat
        0x2011_bab0, // exfat
        0x7366_746e, // ntfs3
        0x5346_544e, // ntfs
        0xff53_4d42, // cifs
        0xfe53_4d42, // smb2
        0x786f_4256, // vboxsf
    ];

    fn devices() -> &'static RwLock<HashMap<u64, bool>> {
        static DEVICES: OnceLock<RwLock<HashMap<u64, bool>>> = OnceLock::new();
        DEVICES.get_or_init(RwLock::default)
    }

    fn case_insensitive(dir: &Path, dir_dev: &mut Option<u64>) -> bool {
        let dev = match *dir_dev {
            Some(dev) => dev,
            None => match std::fs::metadata(dir) {
                Ok(meta) => *dir_dev.insert(meta.dev()),
                Err(_) => return false,
            },
        };
        if let Some(known) = devices()
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&dev)
        {
            return *known;
        }
        // `fs_type_t` is i64 on some targets and u32 on others.
        #[allow(clippy::unnecessary_cast)]
        let insensitive = nix::sys::statfs::statfs(dir)
            .map(|s| CASE_INSENSITIVE.contains(&(s.filesystem_type().0 as i64)))
            .unwrap_or(false);
        devices()
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dev, insensitive);
        insensitive
    }

    /// The name `component` of the existing `path` has on disk.
    pub(super) fn on_disk_name(
        path: &Path,
        component: String,
        dir_dev: &mut Option<u64>,
    ) -> String {
        match path.parent() {
            Some(dir) if case_insensitive(dir, dir_dev) => name_in(dir, component),
            _ => component,
        }
    }

    /// The entry of `dir` that is `component` but for case, or `component` itself.
    pub(super) fn name_in(dir: &Path, component: String) -> String {
        let wanted = component.to_lowercase();
        std::fs::read_dir(dir)
            .ok()
            .and_then(|entries| {
                entries.filter_map(Result::ok).find_map(|entry| {
                    let name = entry.file_name().into_string().ok()?;
                    (name.to_lowercase() == wanted).then_some(name)
                })
            })
            .unwrap_or(component)
    }
}

#[cfg(not(target_os = "linux"))]
mod case {
    pub(super) fn on_disk_name(
        _: &std::path::Path,
        component: String,
        _: &mut Option<u64>,
    ) -> String {
        component
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// On a case-insensitive file system the walk continues with the entry's own name. (No
    /// kernel here mounts one -- no vfat, no casefold -- so the `statfs` detection itself is
    /// not run; the lookup of the on-disk name is.)
    #[cfg(target_os = "linux")]
    #[test]
    fn the_on_disk_name_is_found_whatever_the_case() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Secret.txt"), "s").unwrap();
        assert_eq!(
            case::name_in(dir.path(), "SECRET.TXT".to_owned()),
            "Secret.txt"
        );
        assert_eq!(
            case::name_in(dir.path(), "secret.txt".to_owned()),
            "Secret.txt"
        );
        assert_eq!(case::name_in(dir.path(), "Missing".to_owned()), "Missing");
        // Not case-insensitive (tmpfs, ext4): names as asked.
        let asked = dir.path().join("SECRET.TXT");
        assert_eq!(
            case::on_disk_name(&asked, "SECRET.TXT".to_owned(), &mut None),
            "SECRET.TXT"
        );
    }
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
