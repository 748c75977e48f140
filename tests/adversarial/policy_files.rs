//! Attack: a drop-in that cannot be read silently removes its rules.
//!
//! A `*.toml` entry in a policy directory that was a dangling symlink (or unreadable, or not a
//! regular file) was skipped: the policy loaded without its deny rules, at start and at reload.
//! Expected: such an entry is a load error naming it -- at start (exit 64), at reload (the last
//! good policy keeps serving) and in `check` (exit 1). Fix: `policy_files` in
//! `crates/broker/src/policy_files.rs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Asker, BROKER, Daemon};
use std::path::Path;
use std::process::Command;

const BASE: &str = r#"
version = 1
[[rule]]
id = "tmp"
effect = "allow"
permissions = ["read"]
paths = ["/tmp"]
"#;

const DENY: &str = r#"
version = 1
[[rule]]
id = "no-secret"
effect = "deny"
permissions = ["read"]
paths = ["/tmp/secret"]
"#;

fn check(dir: &Path) -> std::process::Output {
    Command::new(&*BROKER)
        .arg("check")
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn a_dangling_or_unusable_drop_in_is_an_error_never_a_smaller_policy() {
    for (what, make) in [
        (
            "dangling link",
            (|d: &Path| {
                std::os::unix::fs::symlink(d.join("gone.toml"), d.join("90-deny.toml")).unwrap()
            }) as fn(&Path),
        ),
        ("directory", |d: &Path| {
            std::fs::create_dir(d.join("90-deny.toml")).unwrap()
        }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00-base.toml"), BASE).unwrap();
        make(dir.path());
        let out = check(dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: check: {stderr}");
        assert!(
            stderr.contains("90-deny.toml"),
            "{what}: names the entry: {stderr}"
        );
        let serve = Command::new(&*BROKER)
            .arg("serve")
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .arg("--policy")
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(serve.status.code(), Some(64), "{what}: serve");
        assert!(String::from_utf8_lossy(&serve.stderr).contains("90-deny.toml"));
        assert!(!dir.path().join("s.sock").exists(), "{what}: nothing bound");
    }
}

#[test]
fn a_drop_in_that_breaks_at_reload_keeps_the_last_good_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.d");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(policy.join("00-base.toml"), BASE).unwrap();
    std::fs::write(dir.path().join("deny.toml"), DENY).unwrap();
    std::os::unix::fs::symlink(dir.path().join("deny.toml"), policy.join("90-deny.toml")).unwrap();
    let daemon = Daemon::start_in(dir, &policy, &[]);
    let mut asker = Asker::open(&daemon);
    assert!(!asker.allowed("/tmp/secret"));
    // The link's target goes away: the deny rule must not.
    std::fs::remove_file(daemon.dir.path().join("deny.toml")).unwrap();
    std::fs::write(
        policy.join("00-base.toml"),
        BASE.replace("/tmp\"", "/tmp\", \"/var/tmp\""),
    )
    .unwrap();
    daemon.wait_for_log(&["90-deny.toml", "cannot read policy drop-in"]);
    daemon.wait_for_log(&["policy reload failed; still serving the last good policy"]);
    asker.stays("/tmp/secret", false, std::time::Duration::from_millis(300));
}

/// A drop-in named almost right (`.TOML`, `x.toml~`, `x.toml.bak`, a `x.toml.d/` directory) is
/// silently skipped: an operator's deny rule in it would never load. Expected: `check` (and the
/// daemon at load) warns, naming each.
#[test]
fn drop_ins_named_almost_right_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-base.toml"), BASE).unwrap();
    for name in ["90-DENY.TOML", "90-deny.toml~", "90-deny.toml.bak"] {
        std::fs::write(dir.path().join(name), DENY).unwrap();
    }
    std::fs::create_dir(dir.path().join("91-more.toml.d")).unwrap();
    std::fs::write(dir.path().join(".90-deny.toml.swp"), "x").unwrap();
    let out = check(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for name in [
        "90-DENY.TOML",
        "90-deny.toml~",
        "90-deny.toml.bak",
        "91-more.toml.d",
    ] {
        assert!(
            stderr.contains(&format!(
                "{name}:1:1: warning: looks like a policy drop-in but is not read"
            )),
            "{name}: {stderr}"
        );
    }
    assert!(
        !stderr.contains(".swp"),
        "hidden files are editors' own: {stderr}"
    );
}

/// Attack (16.5): a world-writable drop-in, and one owned by `nobody`, passed `check` and were
/// served; `nobody` rewrote the deny rule away and 0.4 s later the secret was allowed.
/// Expected: as sshd's StrictModes, files and directories others could change are refused at
/// start (exit 64 naming the file) and at reload (the last good policy kept), and `check`
/// says so; `--no-strict-modes` serves them (a laptop with one user).
/// Fix: `load_strict`/`insecure` in `crates/broker/src/policy_files.rs`.
#[test]
fn policy_files_others_could_change_are_not_served() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.d");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(policy.join("00-base.toml"), BASE).unwrap();
    std::fs::write(policy.join("90-deny.toml"), DENY).unwrap();
    std::fs::set_permissions(
        policy.join("90-deny.toml"),
        PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let start = |extra: &[&str]| {
        Command::new(&*BROKER)
            .args(["serve", "--socket"])
            .arg(dir.path().join("refused.sock"))
            .arg("--policy")
            .arg(&policy)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = start(&[]);
    assert_eq!(refused.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("90-deny.toml` is writable by its group or others (mode 666)"),
        "{stderr}"
    );
    let checked = check(&policy);
    assert!(checked.status.success());
    assert!(
        String::from_utf8_lossy(&checked.stderr).contains("serve refuses this policy"),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // At reload: the drop-in handed to nobody, who rewrites the deny rule away.
    std::fs::set_permissions(
        policy.join("90-deny.toml"),
        PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let daemon = Daemon::start_in(dir, &policy.clone(), &["--poll-interval", "0.2"]);
    let mut asker = Asker::open(&daemon);
    assert!(!asker.allowed("/tmp/secret"));
    std::os::unix::fs::chown(
        policy.join("90-deny.toml"),
        Some(common::nobody_uid()),
        None,
    )
    .unwrap();
    std::fs::write(policy.join("90-deny.toml"), "version = 1\n").unwrap();
    daemon.wait_for_log(&["is owned by uid", "not served"]);
    asker.stays("/tmp/secret", false, std::time::Duration::from_secs(1));
    // Given back to root, the edit is served: the last good policy was kept, not frozen.
    std::os::unix::fs::chown(policy.join("90-deny.toml"), Some(0), None).unwrap();
    asker.wait_until("/tmp/secret", true, std::time::Duration::from_secs(3));
}

#[test]
fn no_strict_modes_serves_a_policy_others_could_change() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, BASE).unwrap();
    std::fs::set_permissions(&file, PermissionsExt::from_mode(0o666)).unwrap();
    let daemon = Daemon::start_in(dir, &file, &["--no-strict-modes"]);
    assert!(Asker::open(&daemon).allowed("/tmp/x"));
}
