//! Who is on the other end of a connection, as the kernel reports it (never as the peer claims).

use std::fmt;

/// The peer of one connection. On Unix, from `SO_PEERCRED` at accept time; on Windows, from the
/// named pipe's client process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<u32>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        write!(
            f,
            "pid {} uid {} gid {}",
            show(self.pid),
            show(self.uid),
            show(self.gid)
        )
    }
}

impl Peer {
    /// Checks a frame's `pid` against the kernel's. A peer in another pid namespace knows itself
    /// by a different number: any pid in its `NSpid` list (outermost to innermost) is its own.
    pub fn check_claimed_pid(&self, claimed: u32) -> Result<(), String> {
        let Some(actual) = self.pid else {
            return Err(format!(
                "frame claims pid {claimed}, but the kernel did not report the peer's pid"
            ));
        };
        if claimed == actual {
            return Ok(());
        }
        let namespaced = namespace_pids(actual);
        if namespaced.contains(&claimed) {
            return Ok(());
        }
        Err(format!(
            "frame claims pid {claimed}, but the kernel reports pid {actual} (namespace pids {namespaced:?})"
        ))
    }
}

/// The peer's `/proc/<pid>` directory, opened once per connection (when a request first needs
/// it), so each relative path costs one `readlinkat` instead of a lookup from `/` (and the facts
/// and the symlink root are read through it too). The handle stays bound to the process: once
/// that process has exited, reads through it fail (and the request fails closed) even if the pid
/// is reused.
#[derive(Debug)]
pub struct ProcDir {
    pid: Option<u32>,
    #[cfg(target_os = "linux")]
    dir: Result<std::os::fd::OwnedFd, String>,
    /// The start time of the process that connected, read when the handle was opened: a peer
    /// that hands its socket on and exits is still named by it (see [`ProcDir::start_time`]).
    start: Option<u64>,
}

impl ProcDir {
    pub fn open(peer: &Peer) -> ProcDir {
        #[cfg(target_os = "linux")]
        {
            let dir = match peer.pid {
                Some(pid) => open_proc_dir(pid),
                None => Err("the kernel did not report the peer's pid".to_owned()),
            };
            let start = dir
                .as_ref()
                .ok()
                .and_then(|d| read_at(d, "stat"))
                .and_then(|stat| parse_start_time(&stat));
            ProcDir {
                pid: peer.pid,
                dir,
                start,
            }
        }
        #[cfg(not(target_os = "linux"))]
        ProcDir {
            pid: peer.pid,
            start: None,
        }
    }

    /// The peer's current working directory, for resolving relative paths. Read on each use:
    /// a script can change it with `Deno.chdir`.
    pub fn cwd(&self) -> Result<String, String> {
        let pid = self
            .pid
            .ok_or_else(|| "the kernel did not report the peer's pid".to_owned())?;
        #[cfg(target_os = "linux")]
        {
            let dir = self.dir.as_ref().map_err(Clone::clone)?;
            process_cwd(pid, dir)
        }
        #[cfg(not(target_os = "linux"))]
        Err(format!(
            "the working directory of process {pid} cannot be read on this platform"
        ))
    }

    /// A peer whose `/proc` entry could not be opened when it connected: it stays unknown in
    /// the next process too (not reopened by a pid that may since be another process's).
    pub fn unavailable(peer: &Peer) -> ProcDir {
        ProcDir {
            pid: peer.pid,
            #[cfg(target_os = "linux")]
            dir: Err(format!(
                "the /proc entry of process {} could not be opened when it connected",
                peer.pid.unwrap_or_default()
            )),
            start: None,
        }
    }

    /// When the process started, in clock ticks since boot (`/proc/<pid>/stat`, field 22): with
    /// the pid, it names one process for the life of the system.
    /// Read at accept, so it names the process that connected even once it has exited.
    pub fn start_time(&self) -> Option<u64> {
        self.start
    }

    /// Facts about the peer beyond its credentials, for `when` conditions; `None` where they
    /// cannot be read (rules fail closed on it).
    pub fn facts(&self) -> Facts {
        #[cfg(target_os = "linux")]
        if let Ok(dir) = &self.dir {
            return Facts {
                start_time: self.start_time(),
                ..read_facts(dir)
            };
        }
        Facts::default()
    }
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The start time of process `pid` now (`None`: it is gone, or this is not Linux).
pub fn start_time_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_start_time(&stat))
}

#[cfg(target_os = "linux")]
fn open_proc_dir(pid: u32) -> Result<std::os::fd::OwnedFd, String> {
    use nix::fcntl::OFlag;
    let path = format!("/proc/{pid}");
    nix::fcntl::open(
        path.as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open {path}: {e}"))
}

/// Reads the link `name` in a `/proc/<pid>` directory.
#[cfg(target_os = "linux")]
fn read_link_at(dir: &std::os::fd::OwnedFd, name: &str) -> Result<String, String> {
    nix::fcntl::readlinkat(dir, name)
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|_| "not valid UTF-8".to_owned())
}

/// Reads the file `name` in a `/proc/<pid>` directory.
#[cfg(target_os = "linux")]
fn read_at(dir: &std::os::fd::OwnedFd, name: &str) -> Option<String> {
    use nix::fcntl::OFlag;
    use std::io::Read as _;
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let mut text = String::new();
    std::fs::File::from(fd).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Facts about a peer beyond its credentials, for `when` conditions. Read once per connection,
/// when a policy first needs them. `None`: could not be read (rules fail closed on it).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The executable's path, only if that path in the daemon's view is the file the peer runs.
    pub exe: Option<String>,
    /// The system manager's unit (`Some("")`: in none); see [`systemd_unit`].
    pub unit: Option<String>,
    pub groups: Option<Vec<u32>>,
    /// The user name of the peer's uid (`Some("")`: the uid has none), for `users`.
    pub user: Option<String>,
    /// The name of the peer's primary group (`Some("")`: it has none), for `groups`.
    pub group: Option<String>,
    /// The names of the peer's supplementary groups, for `groups`.
    pub group_names: Option<Vec<String>>,
    /// Whether the names were looked up (once per connection, when a policy first needs them).
    pub names_read: bool,
    /// When the process started (see [`ProcDir::start_time`]), for the decision log.
    pub start_time: Option<u64>,
}

/// Looks up the peer's account names on this host (NSS), when a policy names `users` or
/// `groups`: names are matched where the request is decided, so a fleet policy may name accounts
/// only some hosts have, and a `DynamicUser=` account that exists only while its service runs.
/// A lookup that fails leaves the fact unknown (fail closed both ways).
#[cfg(unix)]
pub fn account_names(peer: &Peer, facts: &mut Facts) {
    use nix::unistd::{Gid, Group, Uid, User};
    facts.user = peer
        .uid
        .and_then(|uid| match User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(user)) => Some(user.name),
            Ok(None) => Some(String::new()),
            Err(_) => None,
        });
    let group_name = |gid: u32| Group::from_gid(Gid::from_raw(gid)).map(|g| g.map(|g| g.name));
    facts.group = peer
        .gid
        .and_then(|gid| group_name(gid).ok().map(Option::unwrap_or_default));
    facts.group_names = facts.groups.as_ref().and_then(|gids| {
        gids.iter()
            .map(|gid| group_name(*gid))
            .collect::<Result<Vec<Option<String>>, _>>()
            .ok()
            .map(|names| names.into_iter().flatten().collect())
    });
    facts.names_read = true;
}

/// Windows (compile-gated): no uids; `users` and `groups` are unknown facts.
#[cfg(not(unix))]
pub fn account_names(_: &Peer, facts: &mut Facts) {
    facts.names_read = true;
}

impl ProcDir {
    /// Resolves the symlinks of `path` as the peer sees it: inside its root directory
    /// (`/proc/<pid>/root`, which differs for a peer in a container or chroot), reached through
    /// this handle (`/proc/self/fd/<fd>/root`) so it is the root of the process that connected.
    /// What `path` is as the peer sees it, following links, in one `stat` (for policies that
    /// do not resolve symlinks: no walk, no real path).
    pub fn kind_of(&self, path: &str) -> super::symlinks::Kind {
        use super::symlinks::Kind;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            let Ok(dir) = self.dir.as_ref() else {
                return Kind::Missing;
            };
            match std::fs::metadata(format!("/proc/self/fd/{}/root{path}", dir.as_raw_fd())) {
                Ok(m) if m.is_dir() => Kind::Directory,
                Ok(_) => Kind::Other,
                Err(_) => Kind::Missing,
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            Kind::Missing
        }
    }

    /// Also says whether the real path is a directory, another file or missing.
    pub fn resolve_with_kind(&self, path: &str) -> Result<(String, super::symlinks::Kind), String> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            let dir = self.dir.as_ref().map_err(Clone::clone)?;
            // One trip through the `/proc` magic links per path: both lookups start here.
            if let Some(root) = super::symlinks::open_root(dir) {
                if let Some(found) = super::symlinks::resolve_existing(&root, path) {
                    return Ok(found);
                }
                return super::symlinks::walk_in_root(&root, path);
            }
            // The root cannot be opened (the peer has exited?): the walk through its path says
            // what is wrong.
            let root = format!("/proc/self/fd/{}/root", dir.as_raw_fd());
            super::symlinks::resolve_in_root_with_kind(std::path::Path::new(&root), path)
        }
        #[cfg(not(target_os = "linux"))]
        Err(format!(
            "symlinks of `{path}` cannot be resolved on this platform"
        ))
    }
}

#[cfg(target_os = "linux")]
fn read_facts(dir: &std::os::fd::OwnedFd) -> Facts {
    let exe = read_link_at(dir, "exe")
        .ok()
        .filter(|p| !p.ends_with(" (deleted)"))
        .filter(|p| runs_the_file_at(dir, p));
    let groups = read_at(dir, "status").and_then(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Groups:"))
            .map(|list| {
                list.split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            })
    });
    let unit = read_at(dir, "cgroup").and_then(|cgroup| systemd_unit(&cgroup));
    Facts {
        exe,
        unit,
        groups,
        user: None,
        group: None,
        group_names: None,
        names_read: false,
        start_time: None,
    }
}

/// Whether the peer's executable is the file at `path` in the daemon's own view of the
/// filesystem (same device and inode). `/proc/<pid>/exe` reads as the path in the peer's mount
/// namespace: a peer with a namespace of its own can bind-mount any binary over an allowed path,
/// and the link then names that path. The link itself, followed through the handle opened for
/// the peer, is the file it runs.
#[cfg(target_os = "linux")]
fn runs_the_file_at(dir: &std::os::fd::OwnedFd, path: &str) -> bool {
    use nix::fcntl::AtFlags;
    let Ok(running) = nix::sys::stat::fstatat(dir, "exe", AtFlags::empty()) else {
        return false;
    };
    let Ok(named) = nix::sys::stat::stat(path) else {
        return false;
    };
    running.st_dev == named.st_dev && running.st_ino == named.st_ino
}

/// The unit of the system's service manager that a process runs in, from its
/// `/proc/<pid>/cgroup`: `Some("")` if it is in none, `None` if that cannot be told.
///
/// Only the system manager's units count. Its unit is the outermost `.service` or `.scope` of
/// the cgroup path, below its slices: everything under `user@1000.service` belongs to that
/// user's own manager (which runs any unit name the user likes), and a delegated service may
/// name its sub-cgroups as it likes, so a unit name deeper in the path proves nothing. The path
/// is the unified hierarchy's (`0::`); where that names no unit (a hybrid host, whose `0::` line
/// is `0::/`), systemd's v1 `name=systemd` hierarchy. A path outside the daemon's cgroup
/// namespace (`/../…`) cannot be told.
#[cfg(unix)]
pub fn systemd_unit(cgroup: &str) -> Option<String> {
    let unified = cgroup.lines().find_map(|line| line.strip_prefix("0::"));
    let legacy = cgroup
        .lines()
        .find_map(|line| line.split_once(":name=systemd:").map(|(_, path)| path));
    match unified.map(outermost_unit) {
        Some(Some(unit)) if unit.is_empty() => legacy.map_or(Some(unit), outermost_unit),
        Some(known) => known,
        None => legacy.map_or_else(|| Some(String::new()), outermost_unit),
    }
}

/// The outermost `.service` or `.scope` of a cgroup path, below its slices (`Some("")`: the
/// path is in no unit).
#[cfg(unix)]
fn outermost_unit(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    for part in path.split('/').filter(|part| !part.is_empty()) {
        if part == ".." || part == "." {
            return None;
        }
        if part.ends_with(".slice") {
            continue;
        }
        if part.ends_with(".service") || part.ends_with(".scope") {
            return Some(part.to_owned());
        }
        // A cgroup the system manager did not make (created by root, or a container runtime's).
        break;
    }
    Some(String::new())
}

#[cfg(target_os = "linux")]
fn namespace_pids(pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(not(target_os = "linux"))]
fn namespace_pids(_pid: u32) -> Vec<u32> {
    Vec::new()
}

#[cfg(target_os = "linux")]
fn process_cwd(pid: u32, dir: &std::os::fd::OwnedFd) -> Result<String, String> {
    let cwd = read_link_at(dir, "cwd").map_err(|e| format!("cannot read /proc/{pid}/cwd: {e}"))?;
    // The kernel appends " (deleted)" to a removed directory; such a base cannot be trusted.
    if cwd.ends_with(" (deleted)") && !std::path::Path::new(&cwd).exists() {
        return Err(format!(
            "the working directory of process {pid} was deleted"
        ));
    }
    Ok(cwd)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn peer(pid: u32) -> Peer {
        Peer {
            pid: Some(pid),
            uid: Some(0),
            gid: Some(0),
        }
    }

    #[test]
    fn a_start_time_names_one_process() {
        let me = ProcDir::open(&peer(std::process::id()));
        let mine = me.start_time().expect("this process's start time");
        assert_eq!(
            ProcDir::open(&peer(std::process::id())).start_time(),
            Some(mine)
        );
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let theirs = ProcDir::open(&peer(child.id())).start_time().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(theirs >= mine);
        assert_ne!((child.id(), theirs), (std::process::id(), mine));
        assert_eq!(
            ProcDir::unavailable(&peer(std::process::id())).start_time(),
            None
        );
    }

    #[test]
    fn units_from_cgroup_files() {
        let unit = |cgroup: &str| systemd_unit(cgroup);
        let known = |name: &str| Some(name.to_owned());
        // The system manager's units.
        assert_eq!(
            unit("0::/system.slice/reports.service\n"),
            known("reports.service")
        );
        assert_eq!(unit("0::/init.scope\n"), known("init.scope"));
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/session-4.scope\n"),
            known("session-4.scope")
        );
        assert_eq!(
            unit("0::/system.slice/system-getty.slice/getty@tty1.service\n"),
            known("getty@tty1.service")
        );
        // Below a user's manager: the unit is that manager, whatever the user named theirs.
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service/app.slice/reports.service\n"),
            known("user@1000.service")
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope\n"),
            known("user@1000.service")
        );
        // A delegated service's sub-cgroups are not units.
        assert_eq!(
            unit("0::/system.slice/ci.service/reports.service\n"),
            known("ci.service")
        );
        assert_eq!(
            unit("0::/system.slice/ci.service/payload/system.slice/reports.service\n"),
            known("ci.service")
        );
        assert_eq!(
            unit("0::/machine.slice/machine-c1.scope/system.slice/reports.service\n"),
            known("machine-c1.scope")
        );
        // In no unit: the root, a slice, a cgroup the manager did not make.
        assert_eq!(unit("0::/\n"), known(""));
        assert_eq!(unit("0::/system.slice\n"), known(""));
        assert_eq!(unit("0::/process_api/reports.service\n"), known(""));
        assert_eq!(unit(""), known(""));
        assert_eq!(unit("4:memory:/system.slice/reports.service\n"), known(""));
        // Outside the daemon's cgroup namespace: cannot be told.
        assert_eq!(unit("0::/../../system.slice/reports.service\n"), None);
        assert_eq!(unit("0::relative.service\n"), None);
    }

    #[test]
    fn hybrid_hosts_fall_back_to_the_name_systemd_line() {
        let unit = |cgroup: &str| systemd_unit(cgroup);
        let known = |name: &str| Some(name.to_owned());
        // This host's layout: a process in a v1 `name=systemd` cgroup only.
        let hybrid = "9:name=systemd:/system.slice/cron.service\n8:pids:/\n\
                      4:memory:/process_api/381f2fdad4bc\n1:cpu:/\n0::/\n";
        assert_eq!(unit(hybrid), known("cron.service"));
        assert_eq!(
            unit("12:pids:/x\n1:name=systemd:/system.slice/cron.service\n"),
            known("cron.service")
        );
        assert_eq!(
            unit(
                "1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice/cron.service\n0::/\n"
            ),
            known("user@1000.service")
        );
        assert_eq!(unit("1:name=systemd:/\n0::/\n"), known(""));
        // A unit on the unified line wins; the v1 line is only the fallback.
        assert_eq!(
            unit("1:name=systemd:/system.slice/other.service\n0::/system.slice/cron.service\n"),
            known("cron.service")
        );
        assert_eq!(
            unit(
                "1:name=systemd:/system.slice/cron.service\n0::/user.slice/user-1000.slice/user@1000.service/cron.service\n"
            ),
            known("user@1000.service")
        );
        assert_eq!(
            unit("1:name=systemd:/../system.slice/cron.service\n0::/\n"),
            None
        );
    }

    #[test]
    fn own_facts() {
        let facts = ProcDir::open(&me()).facts();
        assert_eq!(
            facts.exe.as_deref(),
            std::env::current_exe().unwrap().to_str()
        );
        assert!(facts.groups.is_some());
        assert!(facts.unit.is_some());
    }

    #[test]
    fn an_executable_counts_only_if_the_daemon_sees_the_same_file_there() {
        let dir = open_proc_dir(std::process::id()).unwrap();
        let me = std::env::current_exe().unwrap();
        assert!(runs_the_file_at(&dir, me.to_str().unwrap()));
        // Another file at the path (what a bind mount in the peer's namespace amounts to).
        assert!(!runs_the_file_at(&dir, "/bin/sh"));
        assert!(!runs_the_file_at(&dir, "/nonexistent/binary"));
    }

    fn me() -> Peer {
        Peer {
            pid: Some(std::process::id()),
            uid: None,
            gid: None,
        }
    }

    #[test]
    fn own_pid_and_cwd() {
        let peer = me();
        assert!(peer.check_claimed_pid(std::process::id()).is_ok());
        let err = peer.check_claimed_pid(std::process::id() + 1).unwrap_err();
        assert!(err.contains("kernel reports pid"), "{err}");
        assert_eq!(
            ProcDir::open(&peer).cwd().unwrap(),
            std::env::current_dir().unwrap().to_str().unwrap()
        );
        // `/proc/self` names whoever reads it: never followed for a peer, not even for one
        // that is the daemon itself.
        let refused = ProcDir::open(&peer)
            .resolve_with_kind("/proc/self")
            .unwrap_err();
        assert!(refused.contains("procfs link"), "{refused}");
    }

    #[test]
    fn a_handle_stays_with_the_process_that_connected() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir("/tmp")
            .spawn()
            .unwrap();
        let dir = ProcDir::open(&Peer {
            pid: Some(child.id()),
            uid: None,
            gid: None,
        });
        assert_eq!(dir.cwd().unwrap(), "/tmp");
        assert!(dir.facts().exe.is_some_and(|exe| exe.ends_with("sleep")));
        child.kill().unwrap();
        child.wait().unwrap();
        // Gone: whatever process gets this pid next, the handle no longer answers for it.
        let err = dir.cwd().unwrap_err();
        assert!(err.contains(&format!("/proc/{}/cwd", child.id())), "{err}");
        assert!(dir.resolve_with_kind("/etc").is_err());
        assert_eq!(dir.facts().exe, None);
    }

    #[test]
    fn unknown_pid_fails_closed() {
        let peer = Peer {
            pid: None,
            uid: None,
            gid: None,
        };
        assert!(peer.check_claimed_pid(1).is_err());
        assert!(ProcDir::open(&peer).cwd().is_err());
        assert!(ProcDir::open(&peer).resolve_with_kind("/etc").is_err());
        assert_eq!(ProcDir::open(&peer).facts().exe, None);
    }
}
