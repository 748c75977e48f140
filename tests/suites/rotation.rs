//! The decision log through rotation on a real host: the shipped logrotate configuration, run by
//! the real `logrotate` under load, keeps every record (records = answers); a reopen that fails
//! is loud and never leaves records in a file without a name.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::service_manager::ServiceManager;
use common::{Asker, BROKER, Daemon, RawConn, read_frame, sigterm_and_wait};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SHIPPED: &str = include_str!("../../config/logrotate/permission-broker");
const SHIPPED_LOG: &str = "/var/log/permission-broker/decisions.jsonl";
const SHIPPED_POSTROTATE: &str =
    "systemctl kill --kill-who=main --signal=USR1 permission-broker.service";
const ALLOW_TMP: &str = "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp/**\"]\n";

fn logrotate() -> &'static str {
    if Command::new("logrotate").arg("--version").output().is_ok() {
        return "logrotate";
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "logrotate is not installed (scripts/test.sh installs Debian's package)"
    );
    panic!("logrotate is not installed: run scripts/test.sh, or apt-get install logrotate");
}

/// The daemon under a played service manager, on `ALLOW_TMP`, logging to `root/decisions.jsonl`.
fn managed_with_log(root: &Path, extra: &[&str]) -> (ServiceManager, PathBuf) {
    let log = root.join("decisions.jsonl");
    let policy = root.join("policy.toml");
    std::fs::write(&policy, ALLOW_TMP).unwrap();
    let mut args: Vec<OsString> = vec![
        "serve".into(),
        "--policy".into(),
        policy.into(),
        "--decision-log".into(),
        log.clone().into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    let mut manager = ServiceManager::new(root, Path::new(&*BROKER), &args, 64);
    manager.start();
    (manager, log)
}

fn ask(conn: &mut RawConn, id: &mut u32) -> String {
    *id += 1;
    conn.send(read_frame(*id, None, "/tmp/x").as_bytes());
    conn.answer()
}

/// The directives of the shipped file that the promise rests on.
#[test]
fn the_shipped_configuration_renames_delays_compression_and_signals_the_main_process() {
    let directives: Vec<&str> = SHIPPED
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in [
        "nocreate",
        "nocopytruncate",
        "delaycompress",
        "sharedscripts",
        SHIPPED_POSTROTATE,
    ] {
        assert!(directives.contains(&needed), "missing `{needed}`");
    }
    assert!(!directives.contains(&"copytruncate"));
    assert_eq!(directives[0], format!("{SHIPPED_LOG} {{"));
    // The shipped unit writes the log the file rotates.
    let unit = include_str!("../../systemd/permission-broker.service");
    assert!(unit.contains(&format!("--decision-log {SHIPPED_LOG}")));
}

/// The shipped file with its log path moved into `dir` and its postrotate signalling `pid`
/// directly (no systemd runs here; `systemctl kill --kill-who=main` signals the main pid).
fn configuration_for(dir: &Path, log: &Path, pid: u32) -> PathBuf {
    let text = SHIPPED
        .replace(SHIPPED_LOG, log.to_str().unwrap())
        .replace(SHIPPED_POSTROTATE, &format!("kill -USR1 {pid}"));
    assert_ne!(text, SHIPPED);
    let path = dir.join("logrotate.conf");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every decision in the log's files, rotated and compressed ones included.
fn decisions_in(dir: &Path, name: &str) -> (u64, Vec<String>) {
    let mut files: Vec<String> = Vec::new();
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !file.starts_with(name) {
            continue;
        }
        let bytes = if file.ends_with(".gz") {
            let out = Command::new("gzip").arg("-dc").arg(&path).output().unwrap();
            assert!(out.status.success());
            out.stdout
        } else {
            std::fs::read(&path).unwrap()
        };
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{file} ends torn");
        for line in text.lines() {
            let record: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{file}: {e}: {line}"));
            if record["kind"] == "decision" {
                count += 1;
            }
        }
        files.push(file);
    }
    files.sort();
    (count, files)
}

#[test]
fn the_shipped_logrotate_configuration_under_load_keeps_every_record() {
    const CLIENTS: usize = 8;
    const ROTATIONS: usize = 6;
    let logrotate = logrotate();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("log");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("decisions.jsonl");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, ALLOW_TMP).unwrap();
    let state = dir.path().join("logrotate.state");
    let log_arg = log.to_str().unwrap().to_owned();
    let mut daemon = Daemon::start_in(dir, &policy, &["--decision-log", &log_arg]);
    let config = configuration_for(daemon.dir.path(), &log, daemon.child.id());

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (socket, stop, answered) = (daemon.socket.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut asker = Asker::open_path(&socket);
                while !stop.load(Ordering::Relaxed) {
                    assert!(asker.allowed("/tmp/x"));
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for round in 0..ROTATIONS {
        std::thread::sleep(Duration::from_millis(300));
        let out = Command::new(logrotate)
            .arg("--force")
            .arg("--state")
            .arg(&state)
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "logrotate round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        daemon.wait_for_logs(&["decision log reopened"], round + 1);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert!(sigterm_and_wait(&mut daemon).success());
    let answered = answered.load(Ordering::Relaxed);
    let (on_record, files) = decisions_in(&logs, "decisions.jsonl");
    assert!(answered > 1000, "the load was light: {answered} answers");
    assert_eq!(on_record, answered, "records = answers, across {files:?}");
    // Rotated and compressed as configured: the newest rotated file waits to be compressed.
    assert!(files.contains(&"decisions.jsonl.1".to_owned()), "{files:?}");
    assert!(
        files.iter().filter(|f| f.ends_with(".gz")).count() >= ROTATIONS - 2,
        "{files:?}"
    );
    daemon.wait_for_log(&[
        "decision log closed",
        &format!("written={answered}"),
        "write_errors=0",
    ]);
    // The daemon created each new file itself, not readable by every user.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&log).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640);
}

/// Rotation where the reopen fails (here the path became a directory): the daemon says so in its
/// error log and in `STATUS=`, goes on writing the renamed file, which still has a name. Once that
/// file is deleted too (a `compress` without `delaycompress`), no record goes into the void:
/// answers wait and fail closed until the path opens again, and then everything is written.
#[test]
fn a_failed_reopen_is_loud_and_no_record_goes_to_a_file_without_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let rotated = root.join("decisions.jsonl.1");
    let (mut manager, log) = managed_with_log(root, &["--decision-log-max-wait", "0.5"]);
    let mut conn = RawConn::open_path(&manager.socket);
    let mut id = 0;
    assert!(ask(&mut conn, &mut id).contains("allow"));

    std::fs::rename(&log, &rotated).unwrap();
    std::fs::create_dir(&log).unwrap();
    manager.signal(nix::sys::signal::Signal::SIGUSR1);
    manager.wait_for_log(&["ERROR", "cannot reopen", "decisions.jsonl.1"], 1);
    manager.wait_for_status("DECISION LOG: cannot reopen");
    // Still answered, and on record in the renamed file.
    assert!(ask(&mut conn, &mut id).contains("allow"));
    let in_rotated = || {
        std::fs::read_to_string(&rotated)
            .unwrap()
            .lines()
            .filter(|l| l.contains(r#""kind":"decision""#))
            .count()
    };
    assert_eq!(in_rotated(), 2);

    // The renamed file is deleted: a record written now would be lost with it.
    std::fs::remove_file(&rotated).unwrap();
    let started = Instant::now();
    assert_eq!(
        ask(&mut conn, &mut id),
        "",
        "answered with its record in a deleted file"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    manager.wait_for_log(&["ERROR", "was deleted"], 1);
    manager.wait_for_status("DECISION LOG: the file being written was deleted");

    // The path opens again: the waiting record is written, answers flow, the problem is over.
    std::fs::remove_dir(&log).unwrap();
    manager.wait_for_log(&["decision log reopened"], 1);
    let mut conn = RawConn::open_path(&manager.socket);
    id = 0;
    assert!(ask(&mut conn, &mut id).contains("allow"));
    manager.wait_for_log(&["problem resolved"], 1);
    // The cleared status follows the log line.
    manager.wait_for_status_without("DECISION LOG");
    assert!(manager.stop().success());
    // In the new file: the record of the request that went unanswered, the fault that closed its
    // connection (written late too), then the new connection's.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] != "log")
        .collect();
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (header["kind"].as_str(), header["opened"].as_str()),
        (Some("log"), Some("retry"))
    );
    let seen: Vec<(String, u64, u64)> = records
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["conn"].as_u64().unwrap(),
                r["id"].as_u64().or(r["last_id"].as_u64()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("decision".to_owned(), 1, 3),
            ("fault".to_owned(), 1, 3),
            ("decision".to_owned(), 2, 1)
        ],
        "{records:#?}"
    );
    manager.wait_for_log(&["decision log closed", "written=5"], 1);
}

/// `copytruncate` loses the records written between its copy and its truncate, and the daemon
/// cannot tell which: it cannot keep the promise, but it says so at the next write.
#[test]
fn a_log_cut_short_under_the_daemon_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, ALLOW_TMP).unwrap();
    let log_arg = log.to_str().unwrap().to_owned();
    let mut daemon = Daemon::start_in(dir, &policy, &["--decision-log", &log_arg]);
    let mut asker = Asker::open(&daemon);
    for _ in 0..3 {
        assert!(asker.allowed("/tmp/x"));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert!(asker.allowed("/tmp/x"));
    daemon.wait_for_log(&["ERROR", "cut short under the daemon", "copytruncate"]);
    assert!(sigterm_and_wait(&mut daemon).success());
    // What is left begins with a header again.
    let text = std::fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["kind"].as_str(), first["opened"].as_str()),
        (Some("log"), Some("truncated"))
    );
}

/// A failed reopen is tried again every second even when no request comes, so an idle daemon
/// does not go on writing the renamed file (and showing the error in `STATUS=`) until the next
/// request.
#[test]
fn a_failed_reopen_is_retried_while_the_daemon_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (mut manager, log) = managed_with_log(root, &[]);
    let mut conn = RawConn::open_path(&manager.socket);
    let mut id = 0;
    assert!(ask(&mut conn, &mut id).contains("allow"));
    std::fs::rename(&log, root.join("decisions.jsonl.1")).unwrap();
    std::fs::create_dir(&log).unwrap();
    manager.signal(nix::sys::signal::Signal::SIGUSR1);
    manager.wait_for_status("DECISION LOG: cannot reopen");
    // The path is free again; nothing is asked.
    std::fs::remove_dir(&log).unwrap();
    manager.wait_for_log(&["decision log reopened", "retry"], 1);
    // The cleared status follows the log line.
    manager.wait_for_status_without("DECISION LOG");
    assert!(log.is_file());
    assert!(manager.stop().success());
}
