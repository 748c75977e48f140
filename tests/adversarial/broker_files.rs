//! Attack: a script removes the broker's socket, rewrites its policy, reads its decision log.
//!
//! Under a policy that lets scripts write where the broker keeps its files (the laptop example
//! allowed writes in `/tmp`, where `/tmp/perm.sock` lives), a script removed the socket: every
//! later Deno exited 87, and the daemon logged nothing and never recovered. Expected: writes to
//! the socket, the policy, the configuration file and the decision log (and to the directories
//! above them), and reads of the decision log, are denied whatever the policy says, through
//! symlinks too; and a daemon whose socket file vanishes anyway says so and exits non-zero so
//! that its supervisor starts it again. Fix: `crates/broker/src/daemon/protected.rs`, and the
//! socket watch in `crates/broker/src/daemon/unix_socket.rs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::world::{World, assert_success, stdout_lines};
use std::path::Path;
use std::time::{Duration, Instant};

/// Everything under the test's directory may be read and written: the broker's files included.
fn everything(app: &Path) -> String {
    let root = app.parent().unwrap().display();
    format!(
        r#"
version = 1
[[rule]]
id = "all-of-it"
effect = "allow"
permissions = ["read", "write", "net"]
paths = ["{root}"]
hosts = ["unix:{root}"]
"#
    )
}

const TRY: &str = r#"
const [op, path, other] = Deno.args;
try {
  if (op === "remove") Deno.removeSync(path, { recursive: true });
  if (op === "write") Deno.writeTextFileSync(path, "version = 1\n[defaults]\ndecision = \"allow\"\n");
  if (op === "read") Deno.readTextFileSync(path);
  if (op === "rename") Deno.renameSync(path, other);
  console.log("done");
} catch (e) { console.log("refused " + e.message); }
"#;

#[test]
fn the_broker_files_are_denied_whatever_the_policy_says() {
    // The log inside what the policy allows; given relative to the daemon's working directory.
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("decisions.jsonl");
    let world = World::with_policy(
        |app| {
            everything(app).replace(
                "\"]\nhosts",
                &format!("\", \"{}\"]\nhosts", log_dir.path().display()),
            )
        },
        &["--decision-log", log_path.to_str().unwrap()],
    );
    let root = world.root.display().to_string();
    let socket = world.daemon.socket.display().to_string();
    let log = log_path.display().to_string();
    let policy = format!("{root}/policy.toml");
    let cases: Vec<Vec<String>> = vec![
        vec!["remove".into(), socket.clone()],
        vec![
            "rename".into(),
            socket.clone(),
            format!("{root}/moved.sock"),
        ],
        vec!["write".into(), policy.clone()],
        vec!["remove".into(), root.clone()],
        vec!["read".into(), log.clone()],
        // A link to the log, made by someone else: followed.
        vec!["read".into(), format!("{root}/innocent")],
    ];
    std::os::unix::fs::symlink(&log, world.root.join("innocent")).unwrap();
    for case in &cases {
        let mut cmd = world.deno("2.9.6", "try.ts", TRY);
        cmd.args(case);
        let output =
            common::world::wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(60));
        assert_success(&output, "try");
        let line = stdout_lines(&output).pop().unwrap();
        assert!(
            line.starts_with("refused")
                && (line.contains("the permission broker's own")
                    || line.contains("decision log records other processes' requests")),
            "{case:?}: {line}"
        );
    }
    // Still there, still serving.
    let output = world.run(
        "2.9.6",
        "ok.ts",
        &format!(
            "console.log(Deno.readTextFileSync({:?}).length > 0)",
            policy
        ),
    );
    assert_success(&output, "after the attempts");
    assert_eq!(stdout_lines(&output), ["true"]);
}

/// A socket removed by someone outside the broker's reach (not a brokered script): the daemon
/// notices within a second, says why, and exits non-zero (69) for its supervisor to restart it.
#[test]
fn a_daemon_whose_socket_vanishes_says_so_and_exits_non_zero() {
    let mut world = World::with_policy(everything, &[]);
    std::fs::remove_file(&world.daemon.socket).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = world.daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "daemon still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(69));
    world
        .daemon
        .wait_for_log(&["was removed", "stopping so that the supervisor restarts it"]);
}

/// Red team: a policy drop-in that is a link into a tree scripts may write. The script rewrote
/// the link's target with an allow-everything rule, the poll reloaded it, and a `clearEnv` child
/// read the secret. Expected: the real files of the running policy are the broker's own.
#[test]
fn a_drop_in_linked_into_a_writable_tree_cannot_be_rewritten() {
    let world = World::with_policy(everything, &[]);
    let dir = world.root.join("policy.d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("00-base.toml"), everything(&world.app)).unwrap();
    let target = world.app.join("deploy.toml");
    std::fs::write(&target, "version = 1\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.join("50-app.toml")).unwrap();
    let mut daemon = common::Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &dir,
        &["--socket-mode", "600"],
    );
    let mut cmd = world.deno("2.9.6", "try.ts", TRY);
    cmd.env("DENO_PERMISSION_BROKER_PATH", &daemon.socket);
    cmd.args(["write".to_owned(), target.display().to_string()]);
    let output = common::world::wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(60));
    assert_success(&output, "try");
    let line = stdout_lines(&output).pop().unwrap();
    assert!(
        line.starts_with("refused") && line.contains("the permission broker's own"),
        "{line}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "version = 1\n");
    daemon.kill();
}

/// Red team: the rotated decision log (`decisions.log.1`, `.2.gz`) could be truncated, forged or
/// removed, though reading it was denied. Expected: written to never, like the live log.
#[test]
fn rotated_decision_logs_cannot_be_forged_or_removed() {
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("decisions.jsonl");
    let world = World::with_policy(
        |app| {
            everything(app).replace(
                "\"]\nhosts",
                &format!("\", \"{}\"]\nhosts", log_dir.path().display()),
            )
        },
        &["--decision-log", log_path.to_str().unwrap()],
    );
    let rotated = log_dir.path().join("decisions.jsonl.1");
    std::fs::write(&rotated, "{}\n").unwrap();
    for case in [
        vec!["write".to_owned(), rotated.display().to_string()],
        vec!["remove".to_owned(), rotated.display().to_string()],
        vec![
            "write".to_owned(),
            log_dir
                .path()
                .join("decisions.jsonl.2.gz")
                .display()
                .to_string(),
        ],
    ] {
        let mut cmd = world.deno("2.9.6", "try.ts", TRY);
        cmd.args(&case);
        let output =
            common::world::wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(60));
        let line = stdout_lines(&output).pop().unwrap();
        assert!(
            line.starts_with("refused") && line.contains("the permission broker's own"),
            "{case:?}: {line}"
        );
    }
    assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "{}\n");
}
