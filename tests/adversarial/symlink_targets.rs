//! Attacks through symlinks the log and `unix:` sockets did not follow.
//!
//! - The decision log showed only the path as asked (`resolved` is lexical): a read of a link
//!   recorded the link, not the file that was read and decided. Expected: the record carries the
//!   real `target` too. Fix: `target` in `crates/broker/src/daemon/decision_log.rs`.
//! - `unix:` targets skipped symlink resolution: a link in an allowed directory to a socket the
//!   policy denies was allowed. Expected: with `symlinks = "resolve"` a socket path is followed
//!   like any path. Fix: `evaluate` in `crates/policy/src/decide.rs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Daemon, RawConn};

fn frame(id: u32, permission: &str, value: &str) -> String {
    format!(
        r#"{{"v":1,"id":{id},"datetime":"2026-11-23T16:30:45.262660275+00:00","permission":"{permission}","value":"{value}"}}"#
    ) + "\n"
}

#[test]
fn a_read_through_a_link_is_recorded_with_its_target() {
    let files = tempfile::tempdir().unwrap();
    let root = files.path().canonicalize().unwrap();
    std::fs::write(root.join("real.txt"), "x").unwrap();
    std::os::unix::fs::symlink(root.join("real.txt"), root.join("link.txt")).unwrap();
    let log = root.join("decisions.jsonl");
    let policy = format!(
        "version = 1\n[[rule]]\nid = \"files\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{}\"]\n",
        root.display()
    );
    let mut daemon = Daemon::start(&policy, &["--decision-log", log.to_str().unwrap()]);
    let mut conn = RawConn::open(&daemon);
    conn.send(frame(1, "read", &format!("{}/link.txt", root.display())).as_bytes());
    assert!(conn.answer().contains("allow"));
    drop(conn);
    assert!(common::sigterm_and_wait(&mut daemon).success());
    let text = std::fs::read_to_string(&log).unwrap();
    let record: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["kind"] == "decision")
        .unwrap();
    assert_eq!(
        record["target"],
        root.join("real.txt").display().to_string(),
        "{record}"
    );
}

#[test]
fn a_unix_socket_link_to_a_denied_socket_is_denied() {
    let files = tempfile::tempdir().unwrap();
    let root = files.path().canonicalize().unwrap();
    std::fs::create_dir(root.join("open")).unwrap();
    std::fs::create_dir(root.join("closed")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(root.join("closed/db.sock")).unwrap();
    std::os::unix::fs::symlink(root.join("closed/db.sock"), root.join("open/db.sock")).unwrap();
    let policy = format!(
        r#"
version = 1
[[rule]]
id = "open"
effect = "allow"
permissions = ["net"]
hosts = ["unix:{root}/open"]

[[rule]]
id = "closed"
effect = "deny"
permissions = ["net"]
hosts = ["unix:{root}/closed"]
reason = "closed sockets"
"#,
        root = root.display()
    );
    let daemon = Daemon::start(&policy, &[]);
    let mut conn = RawConn::open(&daemon);
    conn.send(frame(1, "net", &format!("unix:{}/open/db.sock", root.display())).as_bytes());
    let answer = conn.answer();
    assert!(
        answer.contains("deny") && answer.contains("closed sockets"),
        "{answer}"
    );
}

/// Red team: with `symlinks = "lexical"`, `Deno.connect({transport: "unix", path: "\0name"})`
/// (an abstract socket: no file, no permissions) was joined to the working directory and allowed
/// under a `unix:` tree. Expected: an abstract socket is denied, in every mode.
#[test]
fn an_abstract_unix_socket_is_denied() {
    for symlinks in ["lexical", "resolve"] {
        let policy = format!(
            "version = 1\n[defaults]\nsymlinks = \"{symlinks}\"\n[[rule]]\nid = \"sockets\"\neffect = \"allow\"\npermissions = [\"net\"]\nhosts = [\"unix:/\"]\n"
        );
        let daemon = Daemon::start(&policy, &[]);
        let mut conn = RawConn::open(&daemon);
        conn.send(frame(1, "net", "unix:\\u0000rt-abstract").as_bytes());
        let answer = conn.answer();
        assert!(
            answer.contains("deny") && answer.contains("abstract Unix socket"),
            "{symlinks}: {answer}"
        );
    }
}
