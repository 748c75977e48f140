//! Attack: an audit hands out more than it saw, through `permission-broker suggest`.
//!
//! A job runs under an audit policy (every request answered allow, each recorded with the
//! policy's own verdict); `suggest` turns the log into the enforce policy. It wrote a policy
//! broader than what was observed: a read the audited policy's deny rule decided came out as an
//! allow (and the deny rules were dropped); two files of a directory became the directory; a file
//! named like a glob (`w/**`) became that glob; a bare host (`node:dns`) allowed every port; and
//! what one process did was granted to every process.
//!
//! Expected: the suggestion, enforced by the real daemon, allows exactly what was observed — to
//! the process that did it (`when`), values written so they match only themselves (a path still
//! covers its subtree: that is the language) — and denies what a rule denied, and everything the
//! audited policy's deny rules deny (`--policy` carries them); `--collapse` folds a directory
//! only where no deny rule reaches into it. Fix: `crates/broker/src/tools/suggest.rs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Asker, BROKER, Daemon, RawConn};
use std::path::Path;
use std::process::Command;

fn frame(id: u32, permission: &str, value: &str) -> String {
    format!(
        r#"{{"v":1,"id":{id},"datetime":"2026-11-23T16:30:45.262660275+00:00","permission":"{permission}","value":"{value}"}}"#
    ) + "\n"
}

/// Asks `permission` `value` on a connection of its own: allowed or not.
fn allowed(daemon: &Daemon, permission: &str, value: &str) -> bool {
    let mut conn = RawConn::open(daemon);
    conn.send(frame(1, permission, value).as_bytes());
    let answer = conn.answer();
    assert!(answer.contains("\"id\":1"), "{answer}");
    answer.contains("\"allow\"")
}

fn suggest(log: &Path, extra: &[&str]) -> String {
    let out = Command::new(&*BROKER)
        .arg("suggest")
        .arg(log)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "suggest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn check(policy_text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("suggested.toml");
    std::fs::write(&path, policy_text).unwrap();
    let out = Command::new(&*BROKER)
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{policy_text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_suggestion_enforces_what_the_audit_saw_and_nothing_a_rule_denied() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let r = root.display().to_string();
    let uid = nix::unistd::getuid().as_raw();
    // The deny rule names a uid, so the daemon records each process's executable and unit too.
    let audit_policy = format!(
        r#"version = 1
[defaults]
mode = "audit"

[[rule]]
id = "no-secrets"
effect = "deny"
permissions = ["read", "write"]
paths = ["{r}/app/secret"]
when = {{ uids = [{uid}] }}
reason = "secrets stay secret"
"#
    );
    let policy_dir = tempfile::tempdir().unwrap();
    let audit_path = policy_dir.path().join("audit.toml");
    std::fs::write(&audit_path, &audit_policy).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let log_arg = log.to_str().unwrap().to_owned();

    let mut audit = Daemon::start_in(policy_dir, &audit_path, &["--decision-log", &log_arg]);
    let observed_reads = [
        format!("{r}/app"),
        format!("{r}/app/data/x.txt"),
        format!("{r}/lib/x/one"),
        format!("{r}/lib/x/two"),
        format!("{r}/etc/hosts"),
        format!("{r}/etc/resolv.conf"),
        format!("{r}/files/w/**"),
        format!("{r}/files/c/[id]"),
    ];
    let denied_read = format!("{r}/app/secret/key.pem");
    let mut asker = Asker::open(&audit);
    for path in observed_reads.iter().chain([&denied_read]) {
        assert!(asker.allowed(path), "audit answers allow: {path}");
    }
    for (permission, value) in [
        ("net", "db.internal"),
        ("net", "api.example.com:443"),
        ("env", "*"),
        ("env", "HOME"),
    ] {
        assert!(allowed(&audit, permission, value), "audit: {value}");
    }
    drop(asker);
    assert!(common::sigterm_and_wait(&mut audit).success());
    let recorded = std::fs::read_to_string(&log).unwrap();
    assert!(
        recorded
            .contains(r#""decision":"deny","answered":"allow","mode":"audit","rule":"no-secrets""#),
        "the secret's read is recorded as the rule's deny:\n{recorded}"
    );

    // Exact, with the audited policy's deny rules.
    let policy_arg = audit_path.to_str().unwrap();
    let exact = suggest(&log, &["--policy", policy_arg]);
    check(&exact);
    assert!(
        exact.contains("id = \"no-secrets\""),
        "the deny rule is carried:\n{exact}"
    );
    assert!(
        exact.contains("\"db.internal\"") && exact.contains("a host without a port"),
        "the bare host is listed, not granted:\n{exact}"
    );
    let enforcing = Daemon::start(&exact, &[]);
    let mut asker = Asker::open(&enforcing);
    for path in &observed_reads {
        assert!(asker.allowed(path), "observed: {path}\n{exact}");
    }
    for path in [
        denied_read.clone(),
        format!("{r}/app/secret/other.pem"),
        format!("{r}/etc/shadow"),
        format!("{r}/etc"),
        format!("{r}/files/w/secret"),
        format!("{r}/files/c/i"),
        format!("{r}/lib/x/three"),
    ] {
        assert!(
            !asker.allowed(&path),
            "never observed, or denied: {path}\n{exact}"
        );
    }
    // Below what was observed: a path entry covers its subtree, as every policy path does.
    assert!(asker.allowed(&format!("{r}/lib/x/one/inner")));
    assert!(allowed(&enforcing, "net", "api.example.com:443"), "{exact}");
    assert!(!allowed(&enforcing, "net", "api.example.com:80"), "{exact}");
    assert!(!allowed(&enforcing, "net", "db.internal:5432"), "{exact}");
    assert!(!allowed(&enforcing, "net", "db.internal"), "{exact}");
    assert!(allowed(&enforcing, "env", "HOME"), "{exact}");
    assert!(
        !allowed(&enforcing, "env", "PATH"),
        "the name `*` is not a wildcard\n{exact}"
    );
    drop(asker);
    drop(enforcing);

    // --collapse: `lib/x` and `etc` fold; `app/secret` is under a deny rule and nothing folds
    // over it.
    let collapsed = suggest(&log, &["--policy", policy_arg, "--collapse"]);
    check(&collapsed);
    let enforcing = Daemon::start(&collapsed, &[]);
    let mut asker = Asker::open(&enforcing);
    assert!(asker.allowed(&format!("{r}/lib/x/three")), "{collapsed}");
    assert!(asker.allowed(&format!("{r}/etc/shadow")), "{collapsed}");
    for path in [
        denied_read,
        format!("{r}/app/secret/other.pem"),
        format!("{r}/files/w/secret"),
    ] {
        assert!(!asker.allowed(&path), "{path}\n{collapsed}");
    }
    assert!(
        collapsed.contains(&format!(
            "# --collapse: the directory of the 2 entries used: \"{r}/etc/hosts\" (1), \"{r}/etc/resolv.conf\" (1)"
        )),
        "{collapsed}"
    );
}

/// Without `--policy`, what the audited rule denied stays denied anyway, and a suggestion that
/// would not do what it says is refused rather than printed.
#[test]
fn without_the_audited_policy_the_observed_denials_stay_denied() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let r = root.display().to_string();
    let audit_policy = format!(
        r#"version = 1
[defaults]
mode = "audit"

[[rule]]
id = "no-secrets"
effect = "deny"
permissions = ["read"]
paths = ["{r}/app/secret"]
"#
    );
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let log_arg = log.to_str().unwrap().to_owned();
    let mut audit = Daemon::start(&audit_policy, &["--decision-log", &log_arg]);
    let mut asker = Asker::open(&audit);
    assert!(asker.allowed(&format!("{r}/app")));
    assert!(asker.allowed(&format!("{r}/app/secret/key.pem")));
    drop(asker);
    assert!(common::sigterm_and_wait(&mut audit).success());

    let text = suggest(&log, &[]);
    check(&text);
    let enforcing = Daemon::start(&text, &[]);
    let mut asker = Asker::open(&enforcing);
    assert!(asker.allowed(&format!("{r}/app")), "{text}");
    assert!(
        !asker.allowed(&format!("{r}/app/secret/key.pem")),
        "a deny rule of its own keeps it denied under the allowed directory\n{text}"
    );

    // A log whose values are not what a decision record holds is refused, naming the line.
    std::fs::write(
        &log,
        r#"{"kind":"decision","permission":"read","value":"/x","decision":"maybe","rule":"default"}"#,
    )
    .unwrap();
    let out = Command::new(&*BROKER)
        .arg("suggest")
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "{}:1: a decision record needs `decision`, `allow` or `deny`",
            log.display()
        )
    );
    assert!(out.stdout.is_empty());
}
