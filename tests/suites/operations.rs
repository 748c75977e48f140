//! Running the broker on a host: the log file's mode, a configuration file in the wrong place,
//! peers writing into the daemon's own log, what `--version` says.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Asker, BROKER, Daemon, RawConn, sigterm_and_wait};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

const POLICY: &str = "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp\"]\n";

/// The decision log holds every process's requests: created 0640 whatever the umask (it was
/// 0644 outside systemd: world-readable).
#[test]
fn the_decision_log_is_created_0640_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let mut daemon = Daemon::start(POLICY, &["--decision-log", log.to_str().unwrap()]);
    assert!(Asker::open(&daemon).allowed("/tmp/x"));
    assert!(sigterm_and_wait(&mut daemon).success());
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "{mode:o}");
}

/// A log file that is already there is not taken as it is: one any user can write is tightened
/// to 0640 (and said so); one another user owns (who could rewrite the records) or a symbolic
/// link (which could point anywhere) is refused, and the daemon does not start.
#[test]
fn an_existing_decision_log_others_could_rewrite_is_tightened_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, PermissionsExt::from_mode(0o666)).unwrap();
    let mut daemon = Daemon::start(POLICY, &["--decision-log", log.to_str().unwrap()]);
    daemon.wait_for_log(&["tightened its mode", "was=\"666\"", "now=\"640\""]);
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(sigterm_and_wait(&mut daemon).success());

    let serve_with_log = |log: &std::path::Path| {
        let out = Command::new(&*BROKER)
            .args(["serve", "--policy"])
            .arg(dir.path().join("policy.toml"))
            .arg("--socket")
            .arg(dir.path().join("b.sock"))
            .arg("--decision-log")
            .arg(log)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    std::os::unix::fs::chown(&log, Some(common::nobody_uid()), None).unwrap();
    let (code, said) = serve_with_log(&log);
    assert_eq!(code, Some(64), "{said}");
    assert!(
        said.contains("its owner could rewrite the records"),
        "{said}"
    );
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(dir.path().join("elsewhere.jsonl"), &link).unwrap();
    let (code, said) = serve_with_log(&link);
    assert_eq!(code, Some(64), "{said}");
    assert!(said.contains("is a symbolic link"), "{said}");
    assert!(!dir.path().join("elsewhere.jsonl").exists());
    // A pipe (or a device) writes records nowhere; a hard link writes them into another file too.
    let fifo = dir.path().join("fifo.jsonl");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (code, said) = serve_with_log(&fifo);
    assert_eq!(code, Some(64), "{said}");
    assert!(said.contains("is not a regular file"), "{said}");
    let victim = dir.path().join("victim.conf");
    std::fs::write(&victim, "victim\n").unwrap();
    std::fs::set_permissions(&victim, PermissionsExt::from_mode(0o644)).unwrap();
    let hard = dir.path().join("hard.jsonl");
    std::fs::hard_link(&victim, &hard).unwrap();
    let (code, said) = serve_with_log(&hard);
    assert_eq!(code, Some(64), "{said}");
    assert!(said.contains("has 2 names"), "{said}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

/// A log shipper's group reads the log: `--decision-log-group` gives each file the daemon opens
/// (at start and after a rotation) to it. A daemon that is not a member cannot, and does not start
/// rather than write a log its shipper cannot read.
#[test]
fn the_decision_log_goes_to_its_group_and_a_group_the_daemon_is_not_in_is_refused() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let mut daemon = Daemon::start(
        POLICY,
        &[
            "--decision-log",
            log.to_str().unwrap(),
            "--decision-log-group",
            "adm",
        ],
    );
    assert!(Asker::open(&daemon).allowed("/tmp/x"));
    let adm = 4;
    assert_eq!(std::fs::metadata(&log).unwrap().gid(), adm);
    std::fs::rename(&log, dir.path().join("decisions.jsonl.1")).unwrap();
    common::signal(&daemon, nix::sys::signal::Signal::SIGUSR1);
    daemon.wait_for_log(&["decision log reopened"]);
    assert!(Asker::open(&daemon).allowed("/tmp/x"));
    let meta = std::fs::metadata(&log).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o777), (adm, 0o640));
    assert!(sigterm_and_wait(&mut daemon).success());

    // As nobody, who is not in adm.
    let nobody = common::nobody_uid();
    let logs = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(logs.path(), Some(nobody), None).unwrap();
    std::fs::set_permissions(logs.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let policy = logs.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let out = Command::new(&*BROKER)
        .args(["serve", "--socket"])
        .arg(logs.path().join("b.sock"))
        .arg("--policy")
        .arg(&policy)
        .arg("--decision-log")
        .arg(logs.path().join("d.jsonl"))
        .args(["--decision-log-group", "adm"])
        .uid(nobody)
        .gid(nobody)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(said.contains("cannot give it to group 4"), "{said}");
}

/// The README's first layout, `broker.toml` beside the drop-ins in `/etc/permission-broker`, was
/// read as a policy drop-in (`unknown key socket`). Expected: refused with the reason, exit 64.
#[test]
fn a_configuration_file_inside_the_policy_directory_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-base.toml"), POLICY).unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "socket = \"/tmp/never.sock\"\n").unwrap();
    let out = Command::new(&*BROKER)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--policy")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("is inside the policy directory"),
        "{stderr}"
    );
}

/// Attack: a local user injects lines into the daemon's own log: a JSON key holding
/// `\n<timestamp> ERROR …` appeared as a line of its own. Expected: what a peer sent is escaped.
#[test]
fn a_peer_cannot_write_lines_into_the_daemons_log() {
    let daemon = Daemon::start(POLICY, &[]);
    let mut conn = RawConn::open(&daemon);
    conn.send_hostile(
        b"{\"v\":1,\"id\":1,\"x\\n2026-12-01T00:00:00Z ERROR permission_broker: forged\":1}\n",
    );
    conn.assert_closed_unanswered("unknown key");
    daemon.wait_for_log(&["protocol fault"]);
    assert!(
        !daemon
            .log()
            .iter()
            .any(|l| l.starts_with("2026-12-01T00:00:00Z ERROR")),
        "{:#?}",
        daemon.log()
    );
}

#[test]
fn version_names_the_formats_it_speaks() {
    let out = Command::new(&*BROKER).arg("--version").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("policy format: version 1"), "{stdout}");
    assert!(
        stdout.contains("protocol: Deno permission broker v1"),
        "{stdout}"
    );
    assert!(stdout.contains("Deno 2.5.3"), "{stdout}");
}

/// What is running, and what a check approved: the start log and `check` name the revision and
/// the broker's version, so a fleet's logs say which policy each host serves, and under which
/// binary.
#[test]
fn the_start_log_and_check_name_the_revision_and_the_version() {
    let version = String::from_utf8(
        Command::new(&*BROKER)
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let version = version.split_whitespace().nth(1).unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("version = 1\nrequires = \">= {version}\"\n"),
    )
    .unwrap();
    let check = Command::new(&*BROKER)
        .arg("check")
        .arg(&policy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr).into_owned();
    assert!(check.status.success(), "{said}");
    let revision = said
        .split("revision ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("{said}"))
        .to_owned();
    assert_eq!(revision.len(), 16, "{said}");
    assert!(
        said.contains(&format!("permission-broker {version}")),
        "{said}"
    );
    let daemon = common::Daemon::start_in(dir, &policy, &[]);
    daemon.wait_for_log(&[
        "policy loaded",
        &format!("revision={revision}"),
        &format!("version=\"{version}\""),
    ]);
    // A policy for a later broker: refused with its reason, here and by `check`.
    let later = daemon.dir.path().join("later.toml");
    std::fs::write(&later, "version = 1\nrequires = \">= 999\"\n").unwrap();
    let check = Command::new(&*BROKER)
        .arg("check")
        .arg(&later)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr).into_owned();
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(
        said.contains("later.toml:2:12: this policy requires permission-broker >=999"),
        "{said}"
    );
}

/// Under systemd, stderr is the journal's stream (`$JOURNAL_STREAM` names it): every line
/// carries journald's `<N>` priority and no second timestamp, so `journalctl -p err` shows a
/// failed reload. A stderr that is not the named stream keeps the usual format.
#[test]
fn under_journald_each_line_carries_its_priority() {
    use std::io::BufRead;
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n").unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let st = nix::sys::stat::fstat(writer.as_fd()).unwrap();
    let mut daemon = std::process::Command::new(&*common::BROKER)
        .args(["serve", "--no-watch", "--socket"])
        .arg(dir.path().join("b.sock"))
        .arg("--policy")
        .arg(&policy)
        .env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .env("RUST_LOG", "permission_broker=info")
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(reader).lines();
    let mut next_with = |needle: &str| loop {
        let line = lines.next().expect("the daemon's log").unwrap();
        if line.contains(needle) {
            return line;
        }
    };
    let ready = next_with("ready");
    assert!(ready.starts_with("<6>"), "{ready}");
    std::fs::write(&policy, "version = 1\n[[rule]]\nid = \"broken\"\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let failed = next_with("policy reload failed");
    assert!(failed.starts_with("<3>"), "{failed}");
    assert!(!failed.contains("Z "), "no timestamp of its own: {failed}");
    let _ = daemon.kill();
    let _ = daemon.wait();
    // Not the named stream: the usual lines, timestamp first.
    let (reader, writer) = std::io::pipe().unwrap();
    let mut daemon = std::process::Command::new(&*common::BROKER)
        .args(["serve", "--no-watch", "--socket"])
        .arg(dir.path().join("c.sock"))
        .arg("--policy")
        .arg(dir.path().join("missing.toml"))
        .env("JOURNAL_STREAM", "1:2")
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    let first = std::io::BufReader::new(reader)
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(first.starts_with("20"), "{first}");
    let _ = daemon.wait();
}
