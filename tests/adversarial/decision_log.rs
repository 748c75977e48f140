//! Attacks on the decision log's promise: a record is in the file before its answer leaves, and
//! every line is one whole record.
//!
//! Before: records were queued in memory before the answer left (a SIGKILL after an answer
//! could lose its record), and after a short write the whole batch was written again, gluing a
//! partial record to a whole one (a nearly full tmpfs: 40 answered, 39 valid lines, one corrupt,
//! `written=40`). Fix: the writer thread in `crates/broker/src/daemon/decision_log.rs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Asker, Daemon, Tmpfs, sigterm_and_wait};
use std::collections::HashSet;
use std::path::Path;

const POLICY: &str = "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp\"]\n";

/// Every line parses; returns the (conn, id) of each decision record.
fn records(log: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let record: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {} is not a whole record ({e}): {line:?}", n + 1));
            (record["kind"] == "decision").then(|| {
                (
                    record["conn"].as_u64().unwrap(),
                    record["id"].as_u64().unwrap(),
                )
            })
        })
        .collect()
}

/// A log on a tiny tmpfs fills up (answers stop: their connections are closed unanswered), then
/// space returns (writing resumes, nothing lost). Every line is one whole record, and every
/// answer has its record.
#[test]
fn a_full_disk_that_frees_up_loses_and_tears_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::new(&dir.path().join("logfs"), "64k");
    // Leave about 12 KB: room for a few dozen records, then full.
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; 52 * 1024]).unwrap();
    let log = fs.0.join("decisions.jsonl");
    let mut daemon = Daemon::start(
        POLICY,
        &[
            "--decision-log",
            log.to_str().unwrap(),
            "--decision-log-max-wait",
            "0.5",
        ],
    );
    let mut answered: Vec<(usize, u32)> = Vec::new();
    let mut conn = 0;
    let mut asker = Asker::open(&daemon);
    let mut id = 0u32;
    // Until the disk is full: a request gets no answer.
    loop {
        id += 1;
        match asker.ask(&format!("/tmp/file-{id:06}-{}", "x".repeat(100))) {
            Some(true) => answered.push((conn, id)),
            Some(false) => panic!("denied"),
            None => break,
        }
        assert!(id < 10_000, "the disk never filled");
    }
    assert!(
        answered.len() > 10,
        "only {} answered before full",
        answered.len()
    );
    daemon.wait_for_log(&["cannot write the decision log; retrying"]);
    // Space returns; the record that was waiting is written, and new requests are answered.
    std::fs::remove_file(&filler).unwrap();
    daemon.wait_for_log(&["the decision log is written again"]);
    conn += 1;
    let mut asker = Asker::open(&daemon);
    for id in 1..=50u32 {
        assert_eq!(asker.ask("/tmp/after"), Some(true));
        answered.push((conn, id));
    }
    drop(asker);
    assert!(sigterm_and_wait(&mut daemon).success());
    let records = records(&log);
    // Connection numbers in the log are the daemon's: the first connection is 1, the second 2.
    let recorded: HashSet<(u64, u64)> = records.iter().copied().collect();
    for (c, id) in &answered {
        assert!(
            recorded.contains(&(*c as u64 + 1, u64::from(*id))),
            "answered request {id} on connection {} has no record",
            c + 1
        );
    }
    assert!(records.len() >= answered.len());
    assert_eq!(recorded.len(), records.len(), "a record written twice");
}

/// SIGKILL right after a burst of answers: every answer's record is already in the file; a line
/// cut by the kill (a record not yet answered) is removed when the log is next opened.
#[test]
fn a_sigkill_after_a_burst_finds_every_answered_record_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let mut daemon = Daemon::start(POLICY, &["--decision-log", log.to_str().unwrap()]);
    let socket = daemon.socket.clone();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut asker = Asker::open_path(&socket);
                (1..=300u32)
                    .filter(|_| asker.ask("/tmp/burst") == Some(true))
                    .count()
            })
        })
        .collect();
    let answered: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    daemon.kill();
    assert_eq!(answered, 8 * 300);
    // Parse what the kill left, tolerating only a cut final line.
    let text = std::fs::read_to_string(&log).unwrap();
    let whole = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count();
    assert!(
        whole >= answered,
        "{whole} whole records for {answered} answers"
    );
    // Opening the log again repairs any cut tail: every line whole.
    let mut again = Daemon::start(POLICY, &["--decision-log", log.to_str().unwrap()]);
    assert!(sigterm_and_wait(&mut again).success());
    assert!(records(&log).len() >= answered);
}
