//! Faults outside the protocol: broken policy files at reload, a decision log that cannot be
//! written, and peers that vanish mid-request. In each, the daemon keeps serving what it served,
//! says what went wrong, and never answers more permissively than the last good policy.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Asker, Daemon, Launch, signal};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn policy(path: &str) -> String {
    format!(
        "version = 1\n[[rule]]\nid = \"r\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{path}\"]\n"
    )
}

/// Replaces `file` the way an editor or config tool would (write beside, rename over).
fn replace(file: &std::path::Path, text: &[u8]) {
    let staged = file.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, file).unwrap();
}

#[test]
fn a_truncated_half_written_or_deleted_policy_never_replaces_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policy.d");
    std::fs::create_dir(&policy_dir).unwrap();
    let file = policy_dir.join("p.toml");
    let good = policy("/a");
    std::fs::write(&file, &good).unwrap();
    let daemon = Daemon::start_in(dir, &file, &["--poll-interval", "3600"]);
    let mut asker = Asker::open(&daemon);
    assert!(asker.allowed("/a/x"));
    let broken: Vec<(&str, Vec<u8>)> = vec![
        // Cut in the middle of a rule: the rule is incomplete.
        ("truncated", good.as_bytes()[..good.len() - 12].to_vec()),
        // Cut in the middle of a string.
        ("half-written", good.as_bytes()[..good.len() - 5].to_vec()),
        // Cut in the middle of a multi-byte character.
        (
            "cut inside UTF-8",
            [
                &good.as_bytes()[..good.len() - 2],
                "é".as_bytes()[..1].as_ref(),
            ]
            .concat(),
        ),
        ("empty", Vec::new()),
        ("binary", vec![0, 159, 146, 150, 255]),
    ];
    let mut failures = 0;
    for (what, text) in broken {
        replace(&file, &text);
        failures += 1;
        // Each failed reload is reported; wait for this one.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while daemon
            .log()
            .iter()
            .filter(|l| l.contains("policy reload failed; still serving the last good policy"))
            .count()
            < failures
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: no reload failure logged"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            asker.allowed("/a/x"),
            "{what}: still serving the last good policy"
        );
        assert!(
            !asker.allowed("/etc/passwd"),
            "{what}: nothing more permissive"
        );
    }
    // Deleted (mid-reload, as a tool deleting then re-creating would leave it): still serving.
    std::fs::remove_file(&file).unwrap();
    daemon.wait_for_log(&["policy reload failed"]);
    asker.stays("/a/x", true, Duration::from_millis(300));
    // A good file again: reloaded.
    replace(&file, policy("/b").as_bytes());
    asker.wait_until("/b/x", true, Duration::from_secs(2));
    assert!(!asker.allowed("/a/x"));
}

#[test]
fn an_unreadable_policy_at_reload_never_replaces_the_running_one() {
    // Root reads any file whatever its mode: as root, run the daemon as nobody, owning its
    // directory and policy, so that taking the read permission away is felt.
    let user = nix::unistd::geteuid().is_root().then_some((65534, 65534));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    // Lexical: a daemon running as nobody cannot look into a root peer's /proc/<pid>/root.
    let lexical = |path: &str| {
        policy(path).replace(
            "version = 1\n",
            "version = 1\n[defaults]\nsymlinks = \"lexical\"\n",
        )
    };
    std::fs::write(&file, lexical("/a")).unwrap();
    if let Some((uid, gid)) = user {
        for path in [dir.path(), file.as_path()] {
            nix::unistd::chown(path, Some(uid.into()), Some(gid.into())).unwrap();
        }
    }
    let daemon = Daemon::launch(
        dir,
        &file,
        Launch {
            extra: &["--poll-interval", "3600"],
            user,
            ..Launch::default()
        },
    );
    let mut asker = Asker::open(&daemon);
    assert!(asker.allowed("/a/x"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    signal(&daemon, nix::sys::signal::Signal::SIGHUP);
    let error = daemon.wait_for_log(&["cannot read policy file"]);
    assert!(
        error.contains(&file.display().to_string()) && error.contains("Permission denied"),
        "names the file and why: {error}"
    );
    daemon.wait_for_log(&["policy reload failed; still serving the last good policy"]);
    assert!(asker.allowed("/a/x"), "still serving the last good policy");
    assert!(!asker.allowed("/etc/passwd"), "nothing more permissive");
    // Readable again, with a new rule: reloaded.
    replace(&file, lexical("/b").as_bytes());
    asker.wait_until("/b/x", true, Duration::from_secs(2));
    assert!(!asker.allowed("/a/x"));
}

#[test]
fn a_decision_whose_record_cannot_be_written_is_never_answered() {
    // A file system that is full: every write fails with ENOSPC. A record must be in the file
    // before its answer leaves, so the answer waits decision_log_max_wait and the connection is
    // closed unanswered (Deno exits 87: fail closed). The daemon stays up, says why, and counts
    // what it could not write when it exits. (Not /dev/full: the log must be a regular file.)
    let dir = tempfile::tempdir().unwrap();
    let fs = common::Tmpfs::new(&dir.path().join("full"), "64k");
    let log = fs.0.join("decisions.jsonl");
    std::fs::write(&log, "").unwrap();
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(fs.0.join("filler")).unwrap();
        while filler.write_all(&[0u8; 4096]).is_ok() {}
    }
    let mut daemon = Daemon::start(
        &policy("/tmp"),
        &[
            "--decision-log",
            log.to_str().unwrap(),
            "--decision-log-max-wait",
            "0.5",
        ],
    );
    let mut asker = Asker::open(&daemon);
    assert_eq!(asker.ask("/tmp/x"), None, "answered without a record");
    let error = daemon.wait_for_log(&["cannot write the decision log; retrying"]);
    assert!(error.contains("No space left on device"), "{error}");
    daemon.wait_for_log(&[
        "decision log overloaded",
        "closing connection without an answer",
    ]);
    let mut again = Asker::open(&daemon);
    assert_eq!(
        again.ask("/tmp/y"),
        None,
        "a second connection is not answered either"
    );
    assert!(daemon.is_running());
    common::signal(&daemon, nix::sys::signal::Signal::SIGTERM);
    let _ = daemon.child.wait();
    daemon.wait_for_log(&["decision log closed with records not written"]);
}

#[test]
fn a_decision_log_that_cannot_be_reopened_keeps_the_old_file_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let rotated = dir.path().join("decisions.jsonl.1");
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, policy("/tmp")).unwrap();
    let log_arg = log.to_str().unwrap().to_owned();
    let mut daemon = Daemon::start_in(dir, &file, &["--decision-log", &log_arg]);
    let mut asker = Asker::open(&daemon);
    for _ in 0..10 {
        assert!(asker.allowed("/tmp/before"));
    }
    // A rotation gone wrong: the old file moved away, and a directory where the new one should
    // be created.
    std::fs::rename(&log, &rotated).unwrap();
    std::fs::create_dir(&log).unwrap();
    signal(&daemon, nix::sys::signal::Signal::SIGUSR1);
    let error = daemon.wait_for_log(&["decision log: cannot reopen", "still writing"]);
    assert!(error.contains("Is a directory"), "{error}");
    assert!(
        error.contains("decisions.jsonl.1"),
        "names the file it still writes: {error}"
    );
    for _ in 0..10 {
        assert!(asker.allowed("/tmp/after"), "still answering");
    }
    assert!(common::sigterm_and_wait(&mut daemon).success());
    let records = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(
        records
            .lines()
            .filter(|l| l.contains(r#""kind":"decision""#))
            .count(),
        20,
        "every decision, in the old file"
    );
    assert_eq!(records.matches("/tmp/after").count(), 10);
}

#[test]
fn a_peer_that_exits_mid_request_costs_nothing_but_its_connection() {
    let daemon = Daemon::start(&policy("/tmp"), &[]);
    let mut bystander = Asker::open(&daemon);
    assert!(bystander.allowed("/tmp/a"));
    for _ in 0..20 {
        // Send a request and hang up without reading the answer: the daemon's write fails.
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        let frame = common::read_frame(1, Some(std::process::id()), "/tmp/x");
        stream.write_all(frame.as_bytes()).unwrap();
        drop(stream);
        // Half a frame, then gone.
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        stream.write_all(&frame.as_bytes()[..30]).unwrap();
        drop(stream);
    }
    assert!(
        bystander.allowed("/tmp/b"),
        "the bystander is still answered"
    );
    daemon.wait_for_log(&["connection closed in the middle of a frame (30 bytes unread)"]);
}
