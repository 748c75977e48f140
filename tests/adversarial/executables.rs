//! Attack: another binary bind-mounted over an allowed executable, in the peer's own mount
//! namespace.
//!
//! `when.executables` compared the path of `/proc/<pid>/exe`, which the kernel writes as the path
//! in the peer's mount namespace. Anyone who can make a mount namespace (root, or any user where
//! unprivileged user namespaces are on: `unshare -rm`) can bind-mount any binary over the allowed
//! path and run it: `/proc/<pid>/exe` then reads as the allowed path, and the rule applied. Here
//! real Deno 2.9.6, bind-mounted over a path the policy grants to a tool, read what only the tool
//! may read.
//!
//! Expected refusal: the executable fact counts only if the file at that path in the daemon's own
//! view is the very file the peer runs (same device and inode); otherwise it is unknown, so the
//! allow rule does not apply (and a deny rule would) and Deno gets `NotCapable`. The honest tool,
//! and the same tool started inside a mount namespace of its own without a bind mount, still match.
//!
//! Fix: `read_facts` in `crates/broker/src/daemon/peer.rs` compares `fstatat(/proc/<pid>, "exe")`
//! (through the handle opened for the peer) with `stat(path)` and drops the fact on a mismatch.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::BROKER;
use common::world::{World, stdout_lines, wait_with_timeout, wrapped};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REASON: &str = "not for this executable";

fn policy(app: &Path, exe: &Path) -> String {
    format!(
        r#"
version = 1
[defaults]
decision = "deny"
reason = "{REASON}"

[[rule]]
id = "tool-read"
effect = "allow"
permissions = ["read"]
paths = ["{app}"]
when = {{ executables = ["{exe}"] }}
"#,
        app = app.display(),
        exe = exe.display()
    )
}

const SCRIPT: &str = r#"
try {
  console.log("read " + Deno.readTextFileSync("data/x.txt").trim());
} catch (e) {
  console.log("refused " + e.message);
}
"#;

/// A place for the allowed tool and the decision log, outside the watched policy directory.
struct Tool {
    _dir: tempfile::TempDir,
    path: PathBuf,
    log: PathBuf,
}

/// The allowed tool is the broker binary itself (its `ask` command connects and asks), under a
/// path of its own.
fn tool() -> Tool {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let path = root.join("allowed-tool");
    if std::fs::hard_link(&*BROKER, &path).is_err() {
        std::fs::copy(&*BROKER, &path).unwrap();
    }
    let log = root.join("decisions.jsonl");
    Tool {
        _dir: dir,
        path,
        log,
    }
}

/// The decision-log record of the request made by process `pid`, once it is written.
fn record_of(log: &Path, pid: u32) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(record) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["kind"] == "decision" && r["pid"] == pid)
        {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no decision of pid {pid} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `<tool> ask` run as `prefix… <tool> ask --socket S read <app>/data/x.txt`: its exit code (0
/// allow, 1 deny) and its decision record.
fn ask(world: &World, tool: &Tool, prefix: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(&tool.path);
            cmd
        }
        None => Command::new(&tool.path),
    };
    let child = cmd
        .arg("ask")
        .arg("--socket")
        .arg(&world.daemon.socket)
        .arg("read")
        .arg(world.app.join("data/x.txt"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = wait_with_timeout(child, Duration::from_secs(30));
    (output.status.code(), record_of(&tool.log, pid))
}

#[test]
fn a_binary_bind_mounted_over_an_allowed_executable_is_not_that_executable() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "unshare --mount and mount --bind need root (CI runs as root)"
    );
    let tool = tool();
    let log = tool.log.to_str().unwrap().to_owned();
    let world = World::with_policy(|app| policy(app, &tool.path), &["--decision-log", &log]);
    let allowed = tool.path.display().to_string();

    // The honest tool matches, directly and from a mount namespace of its own without a bind.
    let (code, record) = ask(&world, &tool, &[]);
    assert_eq!(code, Some(0), "the tool itself: {record}");
    assert_eq!(record["exe"], allowed.as_str(), "{record}");
    let (code, record) = ask(&world, &tool, &["unshare", "--mount", "--"]);
    assert_eq!(code, Some(0), "the tool in its own namespace: {record}");
    assert_eq!(record["exe"], allowed.as_str(), "{record}");

    // Deno bind-mounted over the tool's path, in a private mount namespace (the host's path is
    // untouched): /proc/<pid>/exe reads as the tool's path.
    let inner = world.deno("2.9.6", "exe.ts", SCRIPT);
    let shell = format!("mount --bind \"$0\" {allowed} && exec {allowed} \"$@\"");
    let child = wrapped("unshare", &["--mount", "--", "sh", "-c", &shell], &inner)
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let printed = stdout_lines(&output).join("\n");
    // unshare execs sh, which execs Deno: one pid throughout.
    let record = record_of(&tool.log, pid);
    assert_eq!(
        printed,
        format!(
            "refused read {}/data/x.txt: {REASON} (rule default)",
            world.app.display()
        ),
        "Deno bind-mounted over {allowed} passed as it\nrecord: {record}\nstderr: {stderr}"
    );
    assert_eq!(record["exe"], serde_json::Value::Null, "{record}");
    assert_eq!(
        std::fs::metadata(&tool.path).unwrap().len(),
        std::fs::metadata(&*BROKER).unwrap().len(),
        "the bind mount stayed in its namespace"
    );

    // Real Deno under a policy that names its real path matches, directly and from a mount
    // namespace of its own.
    let deno = common::deno("2.9.6").canonicalize().unwrap();
    let world = World::with_policy(|app| policy(app, &deno), &[]);
    let output = world.run("2.9.6", "exe.ts", SCRIPT);
    assert_eq!(stdout_lines(&output), ["read inside"], "{output:?}");
    let inner = world.deno("2.9.6", "exe.ts", SCRIPT);
    let child = wrapped("unshare", &["--mount", "--"], &inner)
        .spawn()
        .unwrap();
    let output = wait_with_timeout(child, Duration::from_secs(60));
    assert_eq!(stdout_lines(&output), ["read inside"], "{output:?}");
}
