//! Hot reload on one live connection: every way a policy file changes on disk, SIGHUP, polling,
//! and a bad edit that must change nothing.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Asker, Daemon};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A policy allowing reads of exactly `paths`.
fn policy(paths: &[&str]) -> String {
    let list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "version = 1\n[[rule]]\nid = \"r\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [{}]\n",
        list.join(", ")
    )
}

/// A daemon serving the policy directory `dir/policy.d` (or a file in it), with `extra` flags.
fn daemon_on(dir: tempfile::TempDir, policy: &Path, extra: &[&str]) -> Daemon {
    Daemon::start_in(dir, policy, extra)
}

fn setup(files: &[(&str, String)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policy.d");
    std::fs::create_dir(&policy_dir).unwrap();
    for (name, text) in files {
        std::fs::write(policy_dir.join(name), text).unwrap();
    }
    (dir, policy_dir)
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn rename_save_in_place_write_and_delete_recreate() {
    let (dir, policy_dir) = setup(&[("base.toml", policy(&["/a"]))]);
    let file = policy_dir.join("base.toml");
    let daemon = daemon_on(dir, &file, &["--poll-interval", "3600"]);
    let mut asker = Asker::open(&daemon);
    assert!(asker.allowed("/a/x"));
    assert!(!asker.allowed("/b/x"));

    // An editor's atomic save: write a temporary file, rename it over the policy.
    let tmp = policy_dir.join(".base.toml.swp");
    std::fs::write(&tmp, policy(&["/b"])).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let took = asker.wait_until("/b/x", true, SECOND);
    assert!(!asker.allowed("/a/x"), "the whole policy was replaced");
    eprintln!("rename-save picked up in {took:?}");

    // Truncate and write in place.
    std::fs::write(&file, policy(&["/c"])).unwrap();
    asker.wait_until("/c/x", true, SECOND);

    // Delete, then create again.
    std::fs::remove_file(&file).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        asker.allowed("/c/x"),
        "a missing policy never replaces the running one"
    );
    std::fs::write(&file, policy(&["/d"])).unwrap();
    asker.wait_until("/d/x", true, SECOND);
    daemon.wait_for_log(&["policy reloaded"]);
}

#[test]
fn a_new_drop_in_file_in_a_policy_directory() {
    let (dir, policy_dir) = setup(&[("00-base.toml", policy(&["/a"]))]);
    let daemon = daemon_on(dir, &policy_dir.clone(), &["--poll-interval", "3600"]);
    let mut asker = Asker::open(&daemon);
    assert!(!asker.allowed("/team/x"));
    std::fs::write(
        policy_dir.join("50-team.toml"),
        "version = 1\n[[rule]]\nid = \"team\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/team\"]\n",
    )
    .unwrap();
    asker.wait_until("/team/x", true, SECOND);
    assert!(asker.allowed("/a/x"), "the base policy still applies");
}

#[test]
fn a_kubernetes_configmap_data_symlink_swap() {
    // ConfigMap volume layout: policy.toml -> ..data/policy.toml, ..data -> ..<timestamp>/.
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("config");
    std::fs::create_dir_all(mount.join("..2026_01")).unwrap();
    std::fs::write(mount.join("..2026_01/policy.toml"), policy(&["/v1"])).unwrap();
    std::os::unix::fs::symlink("..2026_01", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/policy.toml", mount.join("policy.toml")).unwrap();
    let daemon = daemon_on(dir, &mount.clone(), &["--poll-interval", "3600"]);
    let mut asker = Asker::open(&daemon);
    assert!(asker.allowed("/v1/x"));
    // The kubelet writes a new timestamped directory and renames a new `..data` link over the old.
    std::fs::create_dir_all(mount.join("..2026_02")).unwrap();
    std::fs::write(mount.join("..2026_02/policy.toml"), policy(&["/v2"])).unwrap();
    std::os::unix::fs::symlink("..2026_02", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(mount.join("..2026_01")).unwrap();
    asker.wait_until("/v2/x", true, SECOND);
    assert!(!asker.allowed("/v1/x"));
}

#[test]
fn sighup_reloads_and_polling_catches_what_events_miss() {
    let (dir, policy_dir) = setup(&[("p.toml", policy(&["/a"]))]);
    let file = policy_dir.join("p.toml");
    let daemon = daemon_on(dir, &file, &["--no-watch", "--poll-interval", "3600"]);
    let mut asker = Asker::open(&daemon);
    std::fs::write(&file, policy(&["/b"])).unwrap();
    asker.stays("/b/x", false, Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    asker.wait_until("/b/x", true, SECOND);
    daemon.wait_for_log(&["policy reloaded", "trigger=\"SIGHUP\""]);

    let (dir, policy_dir) = setup(&[("p.toml", policy(&["/a"]))]);
    let file = policy_dir.join("p.toml");
    let polling = daemon_on(dir, &file, &["--no-watch", "--poll-interval", "0.2"]);
    let mut asker = Asker::open(&polling);
    std::fs::write(&file, policy(&["/b"])).unwrap();
    asker.wait_until("/b/x", true, SECOND);
    polling.wait_for_log(&["policy reloaded", "trigger=\"poll\""]);
}

#[test]
fn a_bad_edit_changes_nothing_and_is_reported_with_its_location() {
    let (dir, policy_dir) = setup(&[("p.toml", policy(&["/a"]))]);
    let file = policy_dir.join("p.toml");
    let daemon = daemon_on(dir, &file, &["--poll-interval", "3600"]);
    let mut asker = Asker::open(&daemon);
    assert!(asker.allowed("/a/x"));
    let tmp = policy_dir.join("p.toml.new");
    std::fs::write(&tmp, "version = 1\n[[rule]]\nid = \"r\"\neffect = \"allow\"\npermissions = [\"reed\"]\npaths = [\"/b\"]\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let error = daemon.wait_for_log(&["p.toml:5:16: unknown permission `reed`"]);
    assert!(error.contains("ERROR"), "{error}");
    daemon.wait_for_log(&["policy reload failed; still serving the last good policy"]);
    asker.stays("/a/x", true, Duration::from_millis(300));
    assert!(!asker.allowed("/b/x"));
    // Fixing the file recovers.
    std::fs::write(&file, policy(&["/b"])).unwrap();
    asker.wait_until("/b/x", true, SECOND);
}
