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

/// Red team (issue 17): a link to `/proc/self/cwd`. The broker followed `/proc/self` as the
/// daemon's own process: after `Deno.chdir("/etc")`, a read of `link/shadow` was decided as
/// `<the daemon's cwd>/shadow` and allowed, while the kernel opened `/etc/shadow` for Deno.
/// Expected: a path through a procfs link (`/proc/self`, `/proc/<pid>/cwd`, `fd/N`) is denied,
/// since the daemon cannot follow it as the peer would; other reads are unaffected.
#[test]
fn a_link_through_proc_self_is_denied() {
    let files = tempfile::tempdir().unwrap();
    let root = files.path().canonicalize().unwrap();
    std::os::unix::fs::symlink("/proc/self/cwd", root.join("here")).unwrap();
    let secret_dir = root.join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("key"), "s3cret").unwrap();
    // The file is denied, its directory is not (a chdir into it is allowed).
    let policy = format!(
        "version = 1\n[[rule]]\nid = \"all\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/\"]\n\n[[rule]]\nid = \"secret\"\neffect = \"deny\"\npermissions = [\"read\"]\npaths = [\"{}/key\"]\n",
        secret_dir.display()
    );
    let mut daemon = Daemon::start(&policy, &[]);
    let script = root.join("try.ts");
    std::fs::write(
        &script,
        format!(
            r#"const tryRead = (p: string) => {{ try {{ return "read " + Deno.readTextFileSync(p); }} catch (e) {{ return "refused " + e; }} }};
console.log(tryRead("{secret}/key"));
Deno.chdir("{secret}");
console.log(tryRead("{root}/here/key"));
console.log(tryRead("/proc/self/cwd/key"));
"#,
            secret = secret_dir.display(),
            root = root.display()
        ),
    )
    .unwrap();
    let output = common::world::wait_with_timeout(
        std::process::Command::new(common::deno("2.9.6"))
            .args(["run", "--no-config"])
            .arg(&script)
            .env("DENO_PERMISSION_BROKER_PATH", &daemon.socket)
            .env("DENO_DIR", root.join("deno-dir"))
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        std::time::Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(lines.iter().all(|l| l.starts_with("refused")), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    // The same through raw frames, and a read that needs no procfs link is still allowed.
    let mut conn = RawConn::open(&daemon);
    conn.send(frame(1, "read", &format!("{}/here/key", root.display())).as_bytes());
    let answer = conn.answer();
    assert!(
        answer.contains("deny") && answer.contains("procfs link"),
        "{answer}"
    );
    conn.send(frame(2, "read", "/proc/self/status").as_bytes());
    assert!(conn.answer().contains("deny"));
    conn.send(frame(3, "read", &format!("{}/try.ts", root.display())).as_bytes());
    assert!(conn.answer().contains("allow"));
    conn.send(frame(4, "read", "/proc/cpuinfo").as_bytes());
    assert!(conn.answer().contains("allow"));
    daemon.kill();
}
