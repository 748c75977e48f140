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

    /// The peer's current working directory, for resolving relative paths. Read on each use:
    /// a script can change it with `Deno.chdir`.
    pub fn cwd(&self) -> Result<String, String> {
        let pid = self
            .pid
            .ok_or_else(|| "the kernel did not report the peer's pid".to_owned())?;
        process_cwd(pid)
    }
}

/// Facts about a peer beyond its credentials, for `when` conditions. Read once per connection,
/// when a policy first needs them. `None`: could not be read (rules fail closed on it).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub exe: Option<String>,
    pub unit: Option<String>,
    pub groups: Option<Vec<u32>>,
}

impl Peer {
    pub fn facts(&self) -> Facts {
        match self.pid {
            Some(pid) => read_facts(pid),
            None => Facts::default(),
        }
    }

    /// Resolves the symlinks of `path` as the peer sees it: inside its root directory
    /// (`/proc/<pid>/root`, which differs for a peer in a container or chroot).
    pub fn resolve_symlinks(&self, path: &str) -> Result<String, String> {
        let pid = self
            .pid
            .ok_or_else(|| "the kernel did not report the peer's pid".to_owned())?;
        crate::symlinks::resolve_in_root(std::path::Path::new(&format!("/proc/{pid}/root")), path)
    }
}

#[cfg(target_os = "linux")]
fn read_facts(pid: u32) -> Facts {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.into_os_string().into_string().ok())
        .filter(|p| !p.ends_with(" (deleted)"));
    let groups = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Groups:"))
                .map(|list| {
                    list.split_whitespace()
                        .filter_map(|g| g.parse().ok())
                        .collect()
                })
        });
    let unit = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .map(|cgroup| systemd_unit(&cgroup));
    Facts { exe, unit, groups }
}

#[cfg(not(target_os = "linux"))]
fn read_facts(_pid: u32) -> Facts {
    Facts::default()
}

/// The systemd unit of a process from its `/proc/<pid>/cgroup`: the innermost `.service` or
/// `.scope` in the unified (`0::`) hierarchy, or in the v1 `name=systemd` one. Empty if none.
pub fn systemd_unit(cgroup: &str) -> String {
    let path = cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .or_else(|| {
            cgroup
                .lines()
                .find_map(|line| line.split_once(":name=systemd:").map(|(_, p)| p))
        })
        .unwrap_or("");
    path.rsplit('/')
        .find(|part| part.ends_with(".service") || part.ends_with(".scope"))
        .unwrap_or("")
        .to_owned()
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
fn process_cwd(pid: u32) -> Result<String, String> {
    let link = format!("/proc/{pid}/cwd");
    let cwd = std::fs::read_link(&link).map_err(|e| format!("cannot read {link}: {e}"))?;
    let cwd = cwd
        .into_os_string()
        .into_string()
        .map_err(|_| format!("{link} is not valid UTF-8"))?;
    // The kernel appends " (deleted)" to a removed directory; such a base cannot be trusted.
    if cwd.ends_with(" (deleted)") && !std::path::Path::new(&cwd).exists() {
        return Err(format!(
            "the working directory of process {pid} was deleted"
        ));
    }
    Ok(cwd)
}

#[cfg(not(target_os = "linux"))]
fn process_cwd(pid: u32) -> Result<String, String> {
    Err(format!(
        "the working directory of process {pid} cannot be read on this platform"
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn units_from_cgroup_files() {
        assert_eq!(
            systemd_unit("0::/system.slice/reports.service\n"),
            "reports.service"
        );
        assert_eq!(
            systemd_unit(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope\n"
            ),
            "app-foo.scope"
        );
        assert_eq!(
            systemd_unit("12:pids:/x\n1:name=systemd:/system.slice/cron.service\n"),
            "cron.service"
        );
        assert_eq!(systemd_unit("0::/\n"), "");
        assert_eq!(systemd_unit(""), "");
    }

    #[test]
    fn own_facts() {
        let facts = me().facts();
        assert_eq!(
            facts.exe.as_deref(),
            std::env::current_exe().unwrap().to_str()
        );
        assert!(facts.groups.is_some());
        assert!(facts.unit.is_some());
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
            peer.cwd().unwrap(),
            std::env::current_dir().unwrap().to_str().unwrap()
        );
    }

    #[test]
    fn unknown_pid_fails_closed() {
        let peer = Peer {
            pid: None,
            uid: None,
            gid: None,
        };
        assert!(peer.check_claimed_pid(1).is_err());
        assert!(peer.cwd().is_err());
    }
}
