//! Startup: configuration is validated before anything is bound, and the socket path is taken
//! only when it is safe to.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Asker, BROKER, Daemon};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const GOOD: &str = "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp\"]\n";

/// Runs `serve` expecting it to exit (it must not become ready).
fn serve_fails(socket: &Path, policy: &Path, extra: &[&str]) -> Output {
    let mut child = Command::new(&*BROKER)
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .arg("--policy")
        .arg(policy)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    panic!("serve kept running; expected it to refuse to start");
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_invalid_policy_stops_startup_with_exit_64_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n\n[[rule]]\nid = \"a\"\neffect = \"allow\"\npermissions = [\"reed\"]\n",
    )
    .unwrap();
    let socket = dir.path().join("s.sock");
    let output = serve_fails(&socket, &policy, &[]);
    assert_eq!(output.status.code(), Some(64));
    let expected = format!("{}:6:16: unknown permission `reed`", policy.display());
    assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
    assert!(!socket.exists(), "nothing bound");
    assert!(output.stdout.is_empty(), "never announced ready");
}

#[test]
fn a_missing_policy_or_bad_limits_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let output = serve_fails(&socket, &dir.path().join("absent.toml"), &[]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("absent.toml: cannot read policy"),
        "{}",
        stderr(&output)
    );
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let output = serve_fails(&socket, &policy, &["--frame-timeout", "0"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(!socket.exists());
}

#[test]
fn a_live_daemon_on_the_path_is_not_replaced() {
    let first = Daemon::start(GOOD, &[]);
    let policy = first.dir.path().join("policy.toml");
    let output = serve_fails(&first.socket, &policy, &[]);
    assert_eq!(output.status.code(), Some(69));
    assert!(
        stderr(&output).contains("a broker is already listening on"),
        "{}",
        stderr(&output)
    );
    // The first daemon still serves.
    let ask = Command::new(&*BROKER)
        .arg("ask")
        .arg("--socket")
        .arg(&first.socket)
        .args(["read", "/tmp"])
        .output()
        .unwrap();
    assert_eq!(ask.status.code(), Some(0));
}

#[test]
fn a_non_socket_at_the_path_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let squatter = dir.path().join("perm.sock");
    std::fs::write(&squatter, "not a socket").unwrap();
    let output = serve_fails(&squatter, &policy, &[]);
    assert_eq!(output.status.code(), Some(69));
    assert!(
        stderr(&output).contains("exists and is not a socket"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&squatter).unwrap(), "not a socket");
    // A symlink is not followed either.
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&policy, &link).unwrap();
    assert_eq!(serve_fails(&link, &policy, &[]).status.code(), Some(69));
}

#[test]
fn a_socket_owned_by_another_user_is_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates a socket owned by another uid and needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let foreign = dir.path().join("perm.sock");
    drop(std::os::unix::net::UnixListener::bind(&foreign).unwrap());
    nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let output = serve_fails(&foreign, &policy, &[]);
    assert_eq!(output.status.code(), Some(69));
    assert!(
        stderr(&output).contains("owned by uid 65534"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::symlink_metadata(&foreign).unwrap().uid(),
        65534,
        "left in place"
    );
}

#[test]
fn a_stale_socket_of_ours_is_replaced_and_the_mode_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("broker.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let daemon = Daemon::start_in(dir, &policy, &[]);
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "default mode");
    daemon.wait_for_log(&["replacing stale socket"]);
    let group = Daemon::start(GOOD, &["--socket-mode", "660"]);
    let mode = std::fs::metadata(&group.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
}

/// Starts `serve --config config extra…` and waits until it says it is ready on `socket`.
fn serve_until_ready(config: &Path, extra: &[&str], socket: &Path) -> std::process::Child {
    let mut child = Command::new(&*BROKER)
        .args(["serve", "--config"])
        .arg(config)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut ready).unwrap();
    assert!(
        ready.contains(&format!("ready on {}", socket.display())),
        "{ready}"
    );
    child
}

#[test]
fn a_configuration_file_with_flags_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let from_file = dir.path().join("file.sock");
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\npolicy = \"{}\"\nsocket_mode = \"0640\"\nsocket_group = \"nogroup\"\nframe_timeout = 3.5\n",
            from_file.display(),
            policy.display()
        ),
    )
    .unwrap();
    let mut child = serve_until_ready(&config, &[], &from_file);
    let meta = std::fs::metadata(&from_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(meta.gid(), nogroup);
    child.kill().unwrap();
    let _ = child.wait();

    // A flag overrides the file.
    let from_flag = dir.path().join("flag.sock");
    let flag = from_flag.to_str().unwrap();
    let mut child = serve_until_ready(&config, &["--socket", flag], &from_flag);
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn configuration_mistakes_are_located_and_stop_startup() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let socket = dir.path().join("s.sock");
    let cases = [
        ("soket = \"/tmp/x.sock\"\n", "1:1: unknown field `soket`"),
        (
            "socket_mode = \"0999\"\n",
            "1:15: `0999` is not an octal file mode",
        ),
        (
            "frame_timeout = -1.0\n",
            "1:17: frame_timeout -1 must be a positive number of seconds",
        ),
        (
            "max_connections = 0\n",
            "1:19: max_connections must be at least 1",
        ),
        (
            "socket_group = \"no-such-group\"\n",
            "1:16: unknown group `no-such-group`",
        ),
        (
            "max_frame_bytes = \"big\"\n",
            "1:19: invalid type: string \"big\"",
        ),
    ];
    for (text, expected) in cases {
        let config = dir.path().join("broker.toml");
        std::fs::write(&config, text).unwrap();
        let output = serve_fails(&socket, &policy, &["--config", config.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(64), "{text}");
        let expected = format!("{}:{expected}", config.display());
        assert!(
            stderr(&output).contains(&expected),
            "{expected}\nnot in:\n{}",
            stderr(&output)
        );
        assert!(!socket.exists(), "nothing bound for {text}");
    }
}

#[test]
fn peers_outside_allowed_uids_are_disconnected() {
    let me = nix::unistd::getuid().as_raw();
    let allowed = Daemon::start(GOOD, &["--allowed-uids", &format!("{me},4242")]);
    assert!(common::Asker::open(&allowed).allowed("/tmp/x"));
    let refused = Daemon::start(GOOD, &["--allowed-uids", "4242"]);
    assert_eq!(
        common::Asker::open(&refused).ask("/tmp/x"),
        None,
        "closed unanswered"
    );
    refused.wait_for_log(&[&format!("peer uid Some({me}) is not in allowed_uids")]);
}

#[test]
fn signals_right_after_ready_are_handled_not_fatal() {
    // Handlers exist before the ready line: an early SIGHUP, SIGUSR1 or SIGTERM must not hit the
    // default action (which would kill the daemon).
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("d.jsonl");
        let log = log.to_str().unwrap().to_owned();
        let mut daemon = Daemon::start(GOOD, &["--decision-log", &log]);
        common::signal(&daemon, nix::sys::signal::Signal::SIGHUP);
        common::signal(&daemon, nix::sys::signal::Signal::SIGUSR1);
        assert!(
            common::Asker::open(&daemon).allowed("/tmp/x"),
            "still serving"
        );
        let status = common::sigterm_and_wait(&mut daemon);
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
    for _ in 0..5 {
        let mut daemon = Daemon::start(GOOD, &[]);
        let status = common::sigterm_and_wait(&mut daemon);
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM at once: graceful exit, {status:?}"
        );
    }
}

/// Starts `serve` under `prlimit --nofile=SOFT:HARD` until ready; returns its stderr so far and
/// its open-file limit as the kernel reports it.
fn serve_with_nofile(soft: u64, hard: u64, extra: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n").unwrap();
    let socket = dir.path().join("s.sock");
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={soft}:{hard}"))
        .arg(&*BROKER)
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--policy")
        .arg(&policy)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux; scripts/test.sh installs it)");
    let mut ready = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut ready).unwrap();
    assert!(ready.contains("ready"), "{ready}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    (String::from_utf8_lossy(&output.stderr).into_owned(), nofile)
}

#[test]
fn the_open_file_limit_is_raised_and_a_too_small_one_is_named() {
    // A low soft limit under a roomy hard one: raised, and nothing to say.
    let (stderr, nofile) = serve_with_nofile(128, 4096, &["--max-connections", "1000"]);
    assert!(
        nofile.split_whitespace().filter(|w| *w == "4096").count() == 2,
        "{nofile}"
    );
    assert!(!stderr.contains("open-file limit"), "{stderr}");
    // A hard limit too small for max_connections (a socket and a /proc handle each): named.
    let (stderr, _) = serve_with_nofile(128, 256, &["--max-connections", "1000"]);
    assert!(
        stderr.contains("the open-file limit holds only about 96 connections")
            && stderr.contains("max_connections=1000")
            && stderr.contains("holds=96"),
        "{stderr}"
    );
}

#[test]
fn a_decision_log_inside_the_watched_policy_directory_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n").unwrap();
    let log = dir.path().join("decisions.jsonl");
    let (stderr, _) = {
        let socket = dir.path().join("s.sock");
        let mut child = Command::new(&*BROKER)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--policy")
            .arg(&policy)
            .arg("--decision-log")
            .arg(&log)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut stdout, &mut ready).unwrap();
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        (String::from_utf8_lossy(&output.stderr).into_owned(), ready)
    };
    assert!(
        stderr.contains("the decision log is inside the watched policy directory"),
        "{stderr}"
    );
}

#[test]
fn a_decision_log_that_cannot_be_opened_stops_startup_with_exit_64_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let socket = dir.path().join("s.sock");
    // A directory where the file should be, and a directory that does not exist: neither can be
    // opened for appending, whoever runs the daemon.
    let in_the_way = dir.path().join("decisions.jsonl");
    std::fs::create_dir(&in_the_way).unwrap();
    let missing = dir.path().join("no/such/dir/decisions.jsonl");
    for log in [&in_the_way, &missing] {
        let output = serve_fails(&socket, &policy, &["--decision-log", log.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
        assert!(
            stderr(&output).contains(&format!("cannot open the decision log `{}`", log.display())),
            "names the log: {}",
            stderr(&output)
        );
        assert!(!socket.exists(), "nothing bound");
        assert!(output.stdout.is_empty(), "never announced ready");
    }
}

/// Every signal the daemon documents is handled in every configuration: with and without a
/// decision log, SIGHUP, SIGUSR1 and SIGUSR2 leave it serving the same connection (SIGUSR1
/// without a log once killed it, exit 138), and SIGTERM stops it with exit 0.
#[test]
fn every_documented_signal_is_handled_with_and_without_a_decision_log() {
    use nix::sys::signal::Signal;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let log_arg = log.display().to_string();
    for extra in [vec![], vec!["--decision-log", log_arg.as_str()]] {
        let mut daemon = Daemon::start(
            "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp\"]\n",
            &extra,
        );
        let mut asker = Asker::open(&daemon);
        for signal in [Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2] {
            common::signal(&daemon, signal);
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(daemon.is_running(), "{signal} with {extra:?}");
            assert!(asker.allowed("/tmp/x"), "{signal} with {extra:?}");
        }
        daemon.wait_for_log(&["took over from the previous process"]);
        let status = common::sigterm_and_wait(&mut daemon);
        assert!(status.success(), "{status:?} with {extra:?}");
    }
}

/// `serve` under an open-file limit of 1,024 (a laptop's usual one) until it is ready, then
/// stopped: what it wrote to stderr.
fn serve_under_a_low_file_limit(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let laptop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/laptop.toml");
    let mut child = Command::new("prlimit")
        .arg("--nofile=1024:1024")
        .arg(&*BROKER)
        .arg("serve")
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--policy")
        .arg(&laptop)
        .args(extra)
        .env("RUST_LOG", "permission_broker=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert!(ready.contains("ready"), "{ready}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    stderr(&output)
}

#[test]
fn the_first_command_warns_about_the_file_limit_only_when_a_limit_was_asked_for() {
    // The README's first command on an ordinary machine: no warning, the default fitted.
    let quiet = serve_under_a_low_file_limit(&[]);
    assert!(!quiet.contains("WARN"), "{quiet}");
    assert!(
        quiet.contains("max_connections fitted to the open-file limit")
            && quiet.contains("max_connections=480"),
        "{quiet}"
    );
    // Asked for explicitly, and more than the limit holds: said, and kept.
    let asked = serve_under_a_low_file_limit(&["--max-connections", "16384"]);
    assert!(
        asked.contains("WARN") && asked.contains("the open-file limit holds only about 480"),
        "{asked}"
    );
    // Asked for, and within what it holds: nothing to say.
    let fits = serve_under_a_low_file_limit(&["--max-connections", "400"]);
    assert!(!fits.contains("WARN") && !fits.contains("fitted"), "{fits}");
}

#[test]
fn every_mistake_in_the_configuration_file_is_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\nfrazme_timeout = 3\nframe_timeout = \"abc\"\nsocket_mode = \"9999\"\npoll_interval = 0.01\nreload = \"sometimes\"\n",
            dir.path().join("s.sock").display()
        ),
    )
    .unwrap();
    let output = serve_fails(
        &dir.path().join("s.sock"),
        &policy,
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(64));
    let said = stderr(&output);
    let at = config.display();
    for line in [
        format!("{at}:2:1: unknown field `frazme_timeout`"),
        format!("{at}:3:17: invalid type: string \"abc\", expected f64"),
        format!("{at}:4:15: `9999` is not an octal file mode"),
        format!("{at}:5:17: poll_interval 0.01 must be at least 0.1 seconds"),
        format!("{at}:6:10: reload `sometimes` is not \"watch\" or \"signal\""),
    ] {
        assert!(said.contains(&line), "{line:?} in:\n{said}");
    }
    assert!(!dir.path().join("s.sock").exists(), "nothing bound");
}

#[test]
fn an_empty_status_file_and_a_signed_mode_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "status_file = \"\"\nsocket_mode = \"+600\"\n").unwrap();
    let socket = dir.path().join("s.sock");
    let output = serve_fails(&socket, &policy, &["--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(64));
    let said = stderr(&output);
    let at = config.display();
    for line in [
        format!("{at}:1:15: status_file is empty"),
        format!("{at}:2:15: `+600` is not an octal file mode"),
    ] {
        assert!(said.contains(&line), "{line:?} in:\n{said}");
    }
    let output = serve_fails(&socket, &policy, &["--socket-mode", "+600"]);
    assert_eq!(output.status.code(), Some(64));
}
