//! Attack: a recycled pid lends another process's facts.
//!
//! The daemon opened `/proc/<pid>` when a request first needed it, not at accept. A process that
//! connects, hands its connection to a child and exits frees its pid; once another process gets
//! that pid, the first relative path (or `when` fact) read `/proc/<pid>` of the newcomer -- its
//! working directory, its executable, its unit. Expected: the handle is opened at accept and
//! stays bound to the process that connected; once that process is gone, what needs it is denied.
//! Fix: `ProcDir::open` in `Connection::new` (`crates/broker/src/daemon/connection.rs`).
//!
//! The pid is recycled for real: as root, `/proc/sys/kernel/ns_last_pid` makes the next process
//! get it (retried a few times, in case another process on the host takes it first).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::Daemon;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

/// The first process: connects, asks one absolute path (so the daemon has accepted it), forks a
/// child that keeps the connection, prints its own pid and exits. The child waits for `go`, then
/// asks a relative path and prints the answer.
const HANDOFF: &str = r#"
import os, socket, sys, time
sock_path, go = sys.argv[1], sys.argv[2]
def frame(i, v):
    return ('{"v":1,"id":%d,"datetime":"2026-11-23T16:30:45.262660275+00:00","permission":"read","value":"%s"}\n' % (i, v)).encode()
s = socket.socket(socket.AF_UNIX)
s.connect(sock_path)
s.sendall(frame(1, "/nowhere"))
s.recv(4096)
if os.fork() == 0:
    while not os.path.exists(go):
        time.sleep(0.01)
    s.sendall(frame(2, "file.txt"))
    print(s.recv(4096).decode().strip(), flush=True)
    os._exit(0)
print(os.getpid(), flush=True)
os._exit(0)
"#;

/// A connection whose process has exited, held by its child, and a newcomer (with an allowed
/// working directory) that got the exited process's pid; `before_go` runs before the child asks
/// its relative path. Returns what the child read back.
fn relative_path_after_the_pid_is_recycled(before_go: impl FnOnce(&Daemon)) -> (Daemon, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    for sub in ["first", "newcomer"] {
        std::fs::create_dir(root.join(sub)).unwrap();
        std::fs::write(root.join(sub).join("file.txt"), sub).unwrap();
    }
    // Only the newcomer's directory is allowed: the connection's own process never was there.
    let policy = format!(
        "version = 1\n[defaults]\nsymlinks = \"lexical\"\n[[rule]]\nid = \"newcomer\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{}/newcomer\"]\n",
        root.display()
    );
    let policy_path = root.join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let daemon = Daemon::start_in(dir, &policy_path, &[]);
    let go = root.join("go");
    let mut first = Command::new("python3")
        .arg("-c")
        .arg(HANDOFF)
        .arg(&daemon.socket)
        .arg(&go)
        .current_dir(root.join("first"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    assert!(first.wait().unwrap().success());
    // Give the pid to a newcomer whose working directory is allowed.
    let mut newcomer = None;
    // Anything else forking between the write and the spawn (the other test of this file, the
    // rest of the machine) takes the pid first: try until one lands on it.
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let child = Command::new("sleep")
            .arg("30")
            .current_dir(root.join("newcomer"))
            .spawn()
            .unwrap();
        if child.id() == pid {
            newcomer = Some(child);
            break;
        }
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let mut newcomer = newcomer.expect("could not recycle the pid");
    before_go(&daemon);
    std::fs::write(&go, "").unwrap();
    let mut answer = String::new();
    out.read_to_string(&mut answer).unwrap();
    newcomer.kill().unwrap();
    newcomer.wait().unwrap();
    (daemon, answer)
}

#[test]
fn a_recycled_pid_lends_nothing_to_a_connection_it_did_not_make() {
    let (_daemon, answer) = relative_path_after_the_pid_is_recycled(|_| {});
    assert!(
        answer.contains(r#""result":"deny""#),
        "the relative path was decided with the newcomer's working directory: {answer}"
    );
}

/// Attack: an upgrade in place reopens `/proc/<pid>` in the new process. Had it reopened it by
/// the pid alone, the recycled pid's newcomer would now lend its working directory. Expected:
/// a peer whose process was gone at the handover stays unknown (what needs it is denied), and
/// one whose pid names another process (a different start time) is not taken over.
/// Fix: `Carried::start_time` and `ProcDir::unavailable` (`crates/broker/src/daemon/connection.rs`).
#[test]
fn an_upgrade_in_place_does_not_rebind_a_connection_to_a_recycled_pid() {
    let (daemon, answer) = relative_path_after_the_pid_is_recycled(|daemon| {
        common::signal(daemon, nix::sys::signal::Signal::SIGUSR2);
        daemon.wait_for_log(&["took over from the previous process"]);
    });
    assert!(
        !answer.contains(r#""result":"allow""#),
        "after the upgrade the relative path was decided with the newcomer's working directory: {answer}"
    );
    assert!(
        answer.contains(r#""result":"deny""#) || answer.is_empty(),
        "{answer}"
    );
    drop(daemon);
}
