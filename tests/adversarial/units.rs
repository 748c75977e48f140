//! Attack: a unit of a user's own systemd manager named like a system unit.
//!
//! `when.units` took the innermost `.service`/`.scope` anywhere in the peer's cgroup path, so any
//! user could run `systemd-run --user --unit=reports.service deno run …` (cgroup
//! `/user.slice/user-1000.slice/user@1000.service/app.slice/reports.service`) and be granted what a
//! rule `when = { units = ["reports.service"] }` gives the system service. The same held for a
//! sub-cgroup that a delegated service (`Delegate=yes`) creates below itself and names after
//! another unit.
//!
//! Expected refusal: only the system manager's unit counts — the outermost `.service`/`.scope` of
//! the path below its slices. A process anywhere below `user@1000.service` is in unit
//! `user@1000.service`; a sub-cgroup of a service is in that service. The rule for `x.service`
//! does not apply to either, and Deno gets `NotCapable`.
//!
//! Fix: `systemd_unit` in `crates/broker/src/daemon/peer.rs` reads the outermost unit, and on a
//! hybrid host whose `0::` line names no unit (`0::/`) reads the `name=systemd` line instead
//! (where systemd's v1 tracking hierarchy names it). This host is such a hybrid: cgroup2 at
//! `/sys/fs/cgroup/unified`, `name=systemd` at `/sys/fs/cgroup/systemd`, and a process in a
//! cgroup of only one of them shows `/` for the other.
//!
//! The tests run real Deno 2.9.6 inside cgroups they create (as root) and remove afterwards.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::world::{World, stdout_lines, wait_with_timeout, wrapped};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const UNIFIED: &str = "/sys/fs/cgroup/unified";
const NAME_SYSTEMD: &str = "/sys/fs/cgroup/systemd";

/// The cgroup trees are shared by the tests of this binary: one at a time creates and removes.
static CGROUPS: Mutex<()> = Mutex::new(());

/// A unit name no other run on this host uses.
fn unit() -> String {
    format!("x-{}.service", std::process::id())
}

/// A cgroup made for one test: the directories it had to create are removed, innermost first,
/// when it is dropped (after every process in it has exited).
struct Cgroup {
    dir: PathBuf,
    created: Vec<PathBuf>,
}

impl Cgroup {
    fn create(hierarchy: &str, path: &str) -> Cgroup {
        assert!(
            nix::unistd::geteuid().is_root(),
            "creating cgroups needs root (CI runs as root)"
        );
        assert!(
            Path::new(hierarchy).join("cgroup.procs").is_file(),
            "no cgroup hierarchy mounted at {hierarchy}"
        );
        let mut dir = PathBuf::from(hierarchy);
        let mut created = Vec::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                created.push(dir.clone());
            }
        }
        Cgroup { dir, created }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn policy(app: &Path, unit: &str) -> String {
    format!(
        r#"
version = 1
[defaults]
decision = "deny"
reason = "not for this unit"

[[rule]]
id = "unit-read"
effect = "allow"
permissions = ["read"]
paths = ["{app}"]
when = {{ units = ["{unit}"] }}
"#,
        app = app.display()
    )
}

const SCRIPT: &str = r#"
try {
  console.log("read " + Deno.readTextFileSync("data/x.txt").trim());
} catch (e) {
  console.log("refused " + e.message);
}
"#;

/// A world whose daemon allows reads of the app directory to `unit` only, logging decisions.
fn world(unit: &str) -> (World, tempfile::TempDir) {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let log = log.to_str().unwrap();
    let world = World::with_policy(|app| policy(app, unit), &["--decision-log", log]);
    (world, logs)
}

/// The unit the daemon recorded for the request of process `pid`.
fn recorded_unit(logs: &tempfile::TempDir, pid: u32) -> serde_json::Value {
    let log = logs.path().join("decisions.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(record) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["kind"] == "decision" && r["pid"] == pid)
        {
            return record["unit"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no decision of pid {pid} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs Deno 2.9.6 inside `cgroup` (the shell moves itself there, then execs Deno); returns what
/// the script printed, the cgroup lines the process had and the unit the daemon recorded.
fn deno_in(
    world: &(World, tempfile::TempDir),
    cgroup: &Cgroup,
) -> (String, String, serde_json::Value) {
    let (world, logs) = world;
    let inner = world.deno("2.9.6", "unit.ts", SCRIPT);
    let shell = format!(
        "echo $$ > {procs} && cat /proc/$$/cgroup >&2 && echo ---- >&2 && exec \"$0\" \"$@\"",
        procs = cgroup.dir.join("cgroup.procs").display()
    );
    let child = wrapped("sh", &["-c", &shell], &inner).spawn().unwrap();
    // sh execs Deno: one pid throughout.
    let pid = child.id();
    let output = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let (lines, rest) = stderr.split_once("----\n").unwrap_or(("", &stderr));
    let printed = stdout_lines(&output).join("\n");
    assert!(
        printed.starts_with("read ") || printed.starts_with("refused "),
        "deno in {}: {:?}\nstdout: {printed}\nstderr: {rest}",
        cgroup.dir.display(),
        output.status
    );
    (printed, lines.to_owned(), recorded_unit(logs, pid))
}

fn cgroup_line<'a>(lines: &'a str, prefix: &str) -> &'a str {
    lines
        .lines()
        .find(|l| l.starts_with(prefix) || l.contains(prefix))
        .unwrap_or("")
}

#[test]
fn a_user_manager_unit_named_like_a_system_unit_is_refused() {
    let _one = CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
    let unit = unit();
    let world = world(&unit);

    let system = Cgroup::create(UNIFIED, &format!("system.slice/{unit}"));
    let (printed, lines, recorded) = deno_in(&world, &system);
    assert_eq!(
        cgroup_line(&lines, "0::"),
        format!("0::/system.slice/{unit}")
    );
    assert_eq!(printed, "read inside", "the system unit itself\n{lines}");
    assert_eq!(recorded, unit.as_str());

    let user = Cgroup::create(
        UNIFIED,
        &format!("user.slice/user-1000.slice/user@1000.service/app.slice/{unit}"),
    );
    let (printed, lines, recorded) = deno_in(&world, &user);
    assert_eq!(
        cgroup_line(&lines, "0::"),
        format!("0::/user.slice/user-1000.slice/user@1000.service/app.slice/{unit}")
    );
    assert_eq!(
        printed,
        format!(
            "refused read {}/data/x.txt: not for this unit (rule default)",
            world.0.app.display()
        ),
        "a unit of user 1000's own manager is not the system's `{unit}`\n{lines}"
    );
    assert_eq!(recorded, "user@1000.service");
}

#[test]
fn a_sub_cgroup_of_a_delegated_service_is_not_a_unit() {
    let _one = CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
    let unit = unit();
    let world = world(&unit);
    // A service with `Delegate=yes` owns its subtree and may name sub-cgroups as it likes.
    let delegated = format!("delegated-{}.service", std::process::id());
    let inside = Cgroup::create(UNIFIED, &format!("system.slice/{delegated}/{unit}"));
    let (printed, lines, recorded) = deno_in(&world, &inside);
    assert_eq!(
        cgroup_line(&lines, "0::"),
        format!("0::/system.slice/{delegated}/{unit}")
    );
    assert_eq!(
        printed,
        format!(
            "refused read {}/data/x.txt: not for this unit (rule default)",
            world.0.app.display()
        ),
        "a process of `{delegated}` is not in `{unit}`\n{lines}"
    );
    assert_eq!(recorded, delegated.as_str());
}

#[test]
fn on_a_hybrid_host_the_name_systemd_line_names_the_unit() {
    let _one = CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
    let unit = unit();
    let world = world(&unit);

    // Only in the v1 `name=systemd` hierarchy: the unified line stays `0::/` (names no unit).
    let system = Cgroup::create(NAME_SYSTEMD, &format!("system.slice/{unit}"));
    let (printed, lines, recorded) = deno_in(&world, &system);
    assert_eq!(cgroup_line(&lines, "0::"), "0::/", "{lines}");
    assert!(
        cgroup_line(&lines, ":name=systemd:")
            .ends_with(&format!(":name=systemd:/system.slice/{unit}")),
        "{lines}"
    );
    assert_eq!(
        printed, "read inside",
        "the system unit, from name=systemd\n{lines}"
    );
    assert_eq!(recorded, unit.as_str());

    let user = Cgroup::create(
        NAME_SYSTEMD,
        &format!("user.slice/user-1000.slice/user@1000.service/app.slice/{unit}"),
    );
    let (printed, lines, recorded) = deno_in(&world, &user);
    assert_eq!(
        printed,
        format!(
            "refused read {}/data/x.txt: not for this unit (rule default)",
            world.0.app.display()
        ),
        "a user manager's unit, from name=systemd\n{lines}"
    );
    assert_eq!(recorded, "user@1000.service");
}
