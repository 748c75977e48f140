//! Attack: absurd option values. `serve --frame-timeout 1e300` used to exit 101 (a panic in
//! `Duration::from_secs_f64`); a huge `--max-connections` overflowed the open-file arithmetic and
//! tokio's semaphore, and a huge `--max-frame-bytes` started a daemon whose first frame overflowed
//! `max + 1`. Whoever writes the unit file or the configuration file could crash or wedge the
//! daemon, and a crash loop under `Restart=always` is a denial of service for every Deno process.
//!
//! Expected refusal: every value outside its documented range — as a flag or as a configuration
//! file value — stops startup with exit 64 and a message naming the option (`--frame-timeout`
//! for a flag, `file:line:column: frame_timeout` for the file), never a panic (101), and nothing
//! is bound.
//!
//! Fix: `settings.rs` range-checks every numeric option before anything is bound: frame_timeout
//! and decision_log_max_wait more than 0 and at most 3600 s, poll_interval 0.1..=86400 s,
//! max_connections 1..=1,000,000, max_frame_bytes 256..=16 MiB; NaN and infinities refused.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::BROKER;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const GOOD: &str = "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp\"]\n";

/// Runs `serve` expecting it to refuse to start; a daemon still running after 5 s fails the
/// test (it accepted the value).
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
    let output = child.wait_with_output().unwrap();
    panic!(
        "serve {extra:?} kept running; expected it to refuse to start\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn assert_refused(output: &Output, socket: &Path, what: &str, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked"),
        "{what}: the daemon panicked:\n{stderr}"
    );
    assert_eq!(
        output.status.code(),
        Some(64),
        "{what}: exit code\n{stderr}"
    );
    assert!(
        stderr.contains(expected),
        "{what}: `{expected}` not in:\n{stderr}"
    );
    assert!(!socket.exists(), "{what}: nothing may be bound");
    assert!(output.stdout.is_empty(), "{what}: never announced ready");
}

#[test]
fn absurd_flag_values_exit_64_naming_the_flag_and_bind_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let socket = dir.path().join("s.sock");
    let log = dir.path().join("d.jsonl");
    let log = log.to_str().unwrap();
    let usize_max = usize::MAX.to_string();
    let semaphore_max = ((usize::MAX >> 3) + 1).to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--frame-timeout", "1e300"],
            "--frame-timeout 1e300 must be",
        ),
        (&["--frame-timeout", "inf"], "--frame-timeout inf must be"),
        (&["--frame-timeout", "NaN"], "--frame-timeout NaN must be"),
        (&["--frame-timeout", "3600.5"], "at most 3600"),
        (
            &["--poll-interval", "1e300"],
            "--poll-interval 1e300 must be",
        ),
        (&["--poll-interval", "inf"], "--poll-interval inf must be"),
        (&["--poll-interval", "86401"], "at most 86400"),
        (
            &["--decision-log-max-wait", "1e300", "--decision-log", log],
            "--decision-log-max-wait 1e300 must be",
        ),
        (
            &["--decision-log-max-wait", "1e300"],
            "--decision-log-max-wait 1e300 must be",
        ),
        (&["--decision-log-max-wait=-inf"], "--decision-log-max-wait"),
        (&["--max-connections", &usize_max], "--max-connections"),
        (&["--max-connections", &semaphore_max], "--max-connections"),
        (&["--max-connections", "1000001"], "at most 1000000"),
        (&["--max-frame-bytes", &usize_max], "--max-frame-bytes"),
        (&["--max-frame-bytes", "16777217"], "at most 16777216"),
    ];
    for (flags, expected) in cases {
        let output = serve_fails(&socket, &policy, flags);
        assert_refused(&output, &socket, &format!("{flags:?}"), expected);
    }
    // The bounds themselves start a daemon that serves (so the limits are not a panic either).
    for flags in [
        &["--frame-timeout", "3600"][..],
        &["--poll-interval", "86400"],
        &["--poll-interval", "0.1"],
        &["--decision-log-max-wait", "3600"],
        &["--max-connections", "1000000"],
        &["--max-frame-bytes", "16777216"],
        &["--max-frame-bytes", "256"],
    ] {
        let daemon = common::Daemon::start(GOOD, flags);
        assert!(
            common::Asker::open(&daemon).allowed("/tmp/x"),
            "{flags:?} serves"
        );
    }
}

#[test]
fn absurd_configuration_values_exit_64_located_in_the_file_and_bind_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let socket = dir.path().join("s.sock");
    let big = i64::MAX;
    let cases = [
        (
            "frame_timeout = 1e300\n",
            "1:17: frame_timeout 1e300 must be",
        ),
        ("frame_timeout = inf\n", "1:17: frame_timeout inf must be"),
        ("frame_timeout = nan\n", "1:17: frame_timeout NaN must be"),
        (
            "poll_interval = 1e300\n",
            "1:17: poll_interval 1e300 must be",
        ),
        ("poll_interval = -inf\n", "1:17: poll_interval -inf must be"),
        (
            "decision_log_max_wait = 1e300\n",
            "1:25: decision_log_max_wait 1e300 must be",
        ),
        (
            "decision_log_max_wait = 3601.0\n",
            "1:25: decision_log_max_wait 3601 must be",
        ),
        (
            &*format!("max_connections = {big}\n"),
            "1:19: max_connections",
        ),
        (
            &*format!("max_frame_bytes = {big}\n"),
            "1:19: max_frame_bytes",
        ),
        ("max_frame_bytes = 16777217\n", "1:19: max_frame_bytes"),
    ];
    for (text, expected) in cases {
        let config = dir.path().join("broker.toml");
        std::fs::write(&config, text).unwrap();
        let output = serve_fails(&socket, &policy, &["--config", config.to_str().unwrap()]);
        let expected = format!("{}:{expected}", config.display());
        assert_refused(&output, &socket, text.trim_end(), &expected);
    }
}
