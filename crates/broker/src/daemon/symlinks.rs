//! Resolving symlinks the way the peer would, inside its root directory.
//!
//! `std::fs::canonicalize` would resolve an absolute link target against the daemon's root, which
//! is wrong for a peer in a container or chroot; it also fails on paths that do not exist yet,
//! such as a file about to be written through a linked directory. So the walk is done here, one
//! component at a time under the peer's root: links are followed (absolute targets restart at
//! the peer's root), and once a component does not exist the rest is taken as written.
//!
//! A path that exists is first asked of the kernel in one lookup ([`resolve_existing`]:
//! `openat2(RESOLVE_IN_ROOT)`, the same rules), which costs one walk where the component walk
//! costs one lookup per component; the component walk decides everything that lookup leaves
//! (`one_lookup_agrees_with_the_walk` holds them to one answer). Both start from one handle on
//! the peer's root ([`open_root`]), so neither goes through the `/proc` magic links (and their
//! ptrace access check) more than once per path.

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
    walk(&Root::Path(root), path)
}

/// The component walk under an open handle on the peer's root ([`open_root`]): each lookup is
/// made from the handle, not through `/proc/<pid>/root` again.
#[cfg(target_os = "linux")]
pub fn walk_in_root(root: &std::os::fd::OwnedFd, path: &str) -> Result<(String, Kind), String> {
    walk(&Root::Handle(root), path)
}

/// Where a walk looks names up: a directory named by a path, or (Linux) an open handle on it,
/// which spares each lookup the walk through the `/proc` magic links to the peer's root.
enum Root<'a> {
    Path(&'a Path),
    #[cfg(target_os = "linux")]
    Handle(&'a std::os::fd::OwnedFd),
}

/// What one lookup found (not following a link in the last component).
struct Found {
    link: bool,
    dir: bool,
    dev: u64,
}

impl Root<'_> {
    /// `rel` (relative to the root; empty for the root itself), not following a final link.
    fn lstat(&self, rel: &str) -> std::io::Result<Found> {
        match self {
            Root::Path(root) => {
                let m = std::fs::symlink_metadata(root.join(rel))?;
                #[cfg(unix)]
                let dev = std::os::unix::fs::MetadataExt::dev(&m);
                #[cfg(not(unix))]
                let dev = 0;
                Ok(Found {
                    link: m.file_type().is_symlink(),
                    dir: m.is_dir(),
                    dev,
                })
            }
            #[cfg(target_os = "linux")]
            Root::Handle(fd) => {
                use nix::sys::stat::SFlag;
                let rel = if rel.is_empty() { "." } else { rel };
                let st =
                    nix::sys::stat::fstatat(*fd, rel, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                Ok(Found {
                    link: kind == SFlag::S_IFLNK,
                    dir: kind == SFlag::S_IFDIR,
                    dev: st.st_dev,
                })
            }
        }
    }

    fn read_link(&self, rel: &str) -> std::io::Result<std::ffi::OsString> {
        match self {
            Root::Path(root) => std::fs::read_link(root.join(rel)).map(PathBuf::into_os_string),
            #[cfg(target_os = "linux")]
            Root::Handle(fd) => Ok(nix::fcntl::readlinkat(*fd, rel)?),
        }
    }

    /// A path naming `rel`, for messages and the (rare) case-insensitive lookups.
    fn shown(&self, rel: &str) -> PathBuf {
        match self {
            Root::Path(root) => root.join(rel),
            #[cfg(target_os = "linux")]
            Root::Handle(fd) => {
                use std::os::fd::AsRawFd as _;
                Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())).join(rel)
            }
        }
    }

    /// Fails if the root itself is gone (its process exited). A handle open on it is proof
    /// enough that it was there.
    fn check_alive(&self) -> Result<(), String> {
        match self {
            Root::Path(root) => std::fs::metadata(root)
                .map(drop)
                .map_err(|e| format!("cannot read the peer's root: {e}")),
            #[cfg(target_os = "linux")]
            Root::Handle(_) => Ok(()),
        }
    }
}

fn walk(root: &Root, path: &str) -> Result<(String, Kind), String> {
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
        let dir = resolved.join("/");
        let rel = if dir.is_empty() {
            component.clone()
        } else {
            format!("{dir}/{component}")
        };
        let found = root.lstat(&rel);
        // On a case-insensitive file system `SECRET.TXT` opens `Secret.txt`: continue with the
        // name as it is on disk, so that rules written for it apply. The directory's device is
        // the previous component's (one lookup of the directory per walk, not one per
        // component).
        let component = match &found {
            Ok(_) => {
                if dir_dev.is_none() {
                    dir_dev = root.lstat(&dir).ok().map(|d| d.dev);
                }
                case::on_disk_name(&root.shown(&rel), component, &mut dir_dev)
            }
            Err(_) => component,
        };
        if let Ok(found) = &found {
            dir_dev = Some(found.dev);
        }
        let rel = if dir.is_empty() {
            component.clone()
        } else {
            format!("{dir}/{component}")
        };
        match found {
            Ok(found) if found.link => {
                // A link of procfs names what the daemon has, not the peer (`/proc/self` is the
                // daemon's pid, `/proc/<pid>/cwd` is read as a path in the daemon's view): the
                // kernel follows it for the peer to somewhere the daemon cannot tell. (A link's
                // device is its directory's: links are never mount points.)
                if case::on_procfs(&root.shown(&dir), Some(found.dev)) {
                    return Err(format!(
                        "`{}` goes through the procfs link `/{rel}`, which the broker cannot follow as the asking process would: pass the real path",
                        path
                    ));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!("more than {MAX_LINKS} symlinks"));
                }
                let target = root.read_link(&rel).map_err(|e| {
                    format!("cannot read link `{}`: {e}", root.shown(&rel).display())
                })?;
                let target = target.to_str().ok_or_else(|| {
                    format!("link `{}` is not valid UTF-8", root.shown(&rel).display())
                })?;
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
            Ok(found) => {
                kind = if found.dir {
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
                root.check_alive()?;
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
            Err(e) => {
                return Err(format!(
                    "cannot inspect `{}`: {e}",
                    root.shown(&rel).display()
                ));
            }
        }
    }
    Ok((format!("/{}", resolved.join("/")), kind))
}

/// An `O_PATH` handle on the peer's root, `proc_dir/root`: opened per lookup, so that a peer
/// that has exited fails here (`None`; the caller's walk through the path then says why).
#[cfg(target_os = "linux")]
pub fn open_root(proc_dir: &std::os::fd::OwnedFd) -> Option<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    nix::fcntl::openat(
        proc_dir,
        "root",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
}

/// A path that exists, resolved by the kernel in one `openat2(RESOLVE_IN_ROOT)` under the peer's
/// root (the handle from [`open_root`]): links are followed as the peer's own open follows them
/// (absolute targets restart at its root, `..` stops there), then the real path is read back
/// from the handle. `None` wherever the component walk must decide instead: a component that
/// does not exist (the walk takes the rest as written), a case-insensitive file system (the walk
/// uses the names on disk), or a real path the kernel names outside the root. One lookup, where
/// the walk makes one per component.
#[cfg(target_os = "linux")]
pub fn resolve_existing(root: &std::os::fd::OwnedFd, path: &str) -> Option<(String, Kind)> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    use std::os::fd::AsRawFd as _;
    let relative = path.trim_start_matches('/');
    if relative.is_empty() || !path.starts_with('/') {
        return None;
    }
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let found = nix::fcntl::openat2(root, relative, how).ok()?;
    let meta = nix::sys::stat::fstat(&found).ok()?;
    // On procfs it may have been reached through `/proc/self`, which the kernel followed as the
    // daemon's: the walk decides (and refuses procfs links).
    if case::on_case_insensitive_fs(&found, meta.st_dev) || case::fd_on_procfs(&found, meta.st_dev)
    {
        return None;
    }
    let name = |fd: &std::os::fd::OwnedFd| {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .ok()?
            .into_os_string()
            .into_string()
            .ok()
    };
    let (real, base) = (name(&found)?, name(root)?);
    if real.ends_with(" (deleted)") || !real.starts_with('/') {
        return None;
    }
    let inside = if base == "/" {
        real
    } else {
        match real.strip_prefix(base.as_str()) {
            Some("") => "/".to_owned(),
            Some(rest) if rest.starts_with('/') => rest.to_owned(),
            _ => return None,
        }
    };
    use nix::sys::stat::SFlag;
    let kind = if SFlag::from_bits_truncate(meta.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        Kind::Directory
    } else {
        Kind::Other
    };
    Some((inside, kind))
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

    /// procfs: its links (`/proc/self`, `/proc/<pid>/cwd`, `fd/N`) name what the process
    /// *reading* them has, so the daemon cannot follow them as the peer would.
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;

    /// The file system type (`statfs` magic) of each device seen.
    fn devices() -> &'static RwLock<HashMap<u64, i64>> {
        static DEVICES: OnceLock<RwLock<HashMap<u64, i64>>> = OnceLock::new();
        DEVICES.get_or_init(RwLock::default)
    }

    /// Whether the directory `dir` (on device `dev`) is on procfs; where that cannot be told,
    /// it is taken as one (the caller then refuses to follow the link).
    pub(super) fn on_procfs(dir: &Path, dev: Option<u64>) -> bool {
        let Some(dev) = dev else { return true };
        magic(dev, || nix::sys::statfs::statfs(dir).ok()).is_none_or(|m| m == PROC_SUPER_MAGIC)
    }

    /// Whether the file `fd` (on device `dev`) is on procfs; taken as one where unknown.
    pub(super) fn fd_on_procfs(fd: &std::os::fd::OwnedFd, dev: u64) -> bool {
        magic(dev, || nix::sys::statfs::fstatfs(fd).ok()).is_none_or(|m| m == PROC_SUPER_MAGIC)
    }

    fn case_insensitive(dir: &Path, dir_dev: &mut Option<u64>) -> bool {
        let dev = match *dir_dev {
            Some(dev) => dev,
            None => match std::fs::metadata(dir) {
                Ok(meta) => *dir_dev.insert(meta.dev()),
                Err(_) => return false,
            },
        };
        remembered(dev, || nix::sys::statfs::statfs(dir).ok()).unwrap_or(false)
    }

    /// Whether the file `fd` is on a case-insensitive file system (asked once per device); where
    /// that cannot be told, it is taken as one, so the walk decides.
    pub(super) fn on_case_insensitive_fs(fd: &std::os::fd::OwnedFd, dev: u64) -> bool {
        remembered(dev, || nix::sys::statfs::fstatfs(fd).ok()).unwrap_or(true)
    }

    /// Whether device `dev` looks names up without regard to case: remembered, or asked with
    /// `statfs` (an answer that cannot be had is not remembered).
    fn remembered(
        dev: u64,
        statfs: impl FnOnce() -> Option<nix::sys::statfs::Statfs>,
    ) -> Option<bool> {
        magic(dev, statfs).map(|m| CASE_INSENSITIVE.contains(&m))
    }

    /// Device `dev`'s file system type: remembered, or asked with `statfs` (an answer that
    /// cannot be had is not remembered).
    fn magic(dev: u64, statfs: impl FnOnce() -> Option<nix::sys::statfs::Statfs>) -> Option<i64> {
        if let Some(known) = devices()
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&dev)
        {
            return Some(*known);
        }
        // `fs_type_t` is i64 on some targets and u32 on others.
        #[allow(clippy::unnecessary_cast)]
        let magic = statfs()?.filesystem_type().0 as i64;
        devices()
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dev, magic);
        Some(magic)
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
    /// Only Linux has procfs links that name the reader.
    pub(super) fn on_procfs(_: &std::path::Path, _: Option<u64>) -> bool {
        false
    }

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

    /// The kernel's one-lookup resolution says what the component walk says, wherever it answers:
    /// links absolute and relative, chained, through `..`, to directories and files, and loops
    /// (which neither resolves); a missing component is left to the walk.
    #[cfg(target_os = "linux")]
    #[test]
    fn one_lookup_agrees_with_the_walk() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(d.join("a/b/c")).unwrap();
        std::fs::write(d.join("a/b/c/file"), "x").unwrap();
        symlink(d.join("a/b"), d.join("abs")).unwrap();
        symlink("a/b/c", d.join("rel")).unwrap();
        symlink("../../a", d.join("a/b/up")).unwrap();
        symlink(d.join("rel"), d.join("chain")).unwrap();
        symlink("loop2", d.join("loop1")).unwrap();
        symlink("loop1", d.join("loop2")).unwrap();
        symlink("/", d.join("slash")).unwrap();
        let me = nix::fcntl::open(
            "/proc/self",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let root = Path::new("/proc/self/root");
        let base = d.display().to_string();
        let mut answered = 0;
        for rel in [
            "a",
            "a/b/c/file",
            "abs",
            "abs/c/file",
            "rel/file",
            "a/b/up/b/c",
            "chain/file",
            "chain/../c/file",
            "abs/..",
            "slash",
            "slash/tmp",
            "a/./b//c",
            "missing",
            "a/missing/x",
            "rel/file/x",
            "loop1",
            "abs/c/../../b/c/file",
        ] {
            let path = format!("{base}/{rel}");
            let walked = resolve_in_root_with_kind(root, &path);
            let handle = open_root(&me).unwrap();
            // The walk from a handle says what the walk through the path says.
            assert_eq!(walk_in_root(&handle, &path), walked, "{rel}");
            match resolve_existing(&handle, &path) {
                Some(fast) => {
                    answered += 1;
                    assert_eq!(Ok(fast), walked, "{rel}");
                }
                None => assert!(
                    !matches!(walked, Ok((_, Kind::Directory | Kind::Other))),
                    "{rel}: the walk found {walked:?} but one lookup did not"
                ),
            }
        }
        assert!(answered >= 12, "one lookup answered only {answered}");
    }

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
