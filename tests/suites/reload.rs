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

/// A deny rule moved from `00-base.toml` to a new `90-deny.toml`, the files written one at a
/// time as rsync, Ansible and Puppet do. Watching files served the revision in between (the
/// secret allowed); with `reload = "signal"` nothing is served until the deploy says it is done
/// (SIGHUP), and then the whole new revision is.
#[test]
fn with_reload_signal_a_deploy_written_file_by_file_is_served_only_when_signalled() {
    let base = |extra: &str| {
        format!(
            "version = 1\n[[rule]]\nid = \"srv\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/srv/**\"{extra}]\n"
        )
    };
    let deny = "version = 1\n[[rule]]\nid = \"secret\"\neffect = \"deny\"\npermissions = [\"read\"]\npaths = [\"/srv/secret\"]\n";
    let (dir, policy_dir) = setup(&[(
        "00-base.toml",
        base("")
            + "\n[[rule]]\nid = \"secret\"\neffect = \"deny\"\npermissions = [\"read\"]\npaths = [\"/srv/secret\"]\n",
    )]);
    let daemon = daemon_on(
        dir,
        &policy_dir.clone(),
        &["--reload", "signal", "--poll-interval", "0.1"],
    );
    daemon.wait_for_log(&["reload = \"signal\""]);
    let mut asker = Asker::open(&daemon);
    assert!(!asker.allowed("/srv/secret"));
    // First file of the deploy: the base without the deny rule (it moves to its own file).
    std::fs::write(policy_dir.join("00-base.toml"), base(", \"/opt/new/**\"")).unwrap();
    asker.stays("/srv/secret", false, SECOND);
    assert!(
        !asker.allowed("/opt/new/x"),
        "nothing of the new revision yet"
    );
    std::fs::write(policy_dir.join("90-deny.toml"), deny).unwrap();
    asker.stays("/srv/secret", false, Duration::from_millis(500));
    // The deploy is done: `systemctl reload`.
    common::signal(&daemon, nix::sys::signal::Signal::SIGHUP);
    asker.wait_until("/opt/new/x", true, SECOND);
    assert!(!asker.allowed("/srv/secret"));
}

/// With `reload = "signal"`, swapping the policy path whole is a commit too: a link re-pointed
/// at a new directory, and Kubernetes' `..data` link.
#[test]
fn with_reload_signal_a_swap_of_the_whole_policy_path_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir(root.join("rev1")).unwrap();
    std::fs::write(root.join("rev1/policy.toml"), policy(&["/v1"])).unwrap();
    std::os::unix::fs::symlink("rev1", root.join("current")).unwrap();
    let daemon = daemon_on(
        dir,
        &root.join("current"),
        &["--reload", "signal", "--poll-interval", "0.1"],
    );
    let mut asker = Asker::open(&daemon);
    assert!(asker.allowed("/v1/x"));
    // An edit in place is not a commit.
    std::fs::write(root.join("rev1/policy.toml"), policy(&["/v1", "/edited"])).unwrap();
    asker.stays("/edited/x", false, SECOND);
    // `ln -sfn rev2 current`: a new link renamed over the old one.
    std::fs::create_dir(root.join("rev2")).unwrap();
    std::fs::write(root.join("rev2/policy.toml"), policy(&["/v2"])).unwrap();
    std::os::unix::fs::symlink("rev2", root.join("current.tmp")).unwrap();
    std::fs::rename(root.join("current.tmp"), root.join("current")).unwrap();
    asker.wait_until("/v2/x", true, 2 * SECOND);
    assert!(!asker.allowed("/v1/x"));
}

#[test]
fn reload_in_the_configuration_file_is_watch_or_signal() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy(&["/x"])).unwrap();
    std::fs::write(
        &config,
        format!(
            "policy = \"{}\"\nsocket = \"{}\"\nreload = \"sometimes\"\n",
            policy_path.display(),
            dir.path().join("b.sock").display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(&*common::BROKER)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broker.toml:3:") && stderr.contains("reload `sometimes`"),
        "{stderr}"
    );
}

/// The policy directory is a link swapped to a new revision (`ln -sfn`), then edited there. A
/// watch follows the directory it was put on: before, the swap took the poll (seconds) to be
/// seen, and edits in the new directory too, while edits in the old one still woke the daemon.
/// Now the swap is seen in the link's parent at once and the watch moves to the new directory.
#[test]
fn a_swapped_policy_directory_is_watched_where_it_resolves_now() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    for (rev, allowed) in [("rev1", "/v1"), ("rev2", "/v2")] {
        std::fs::create_dir(root.join(rev)).unwrap();
        std::fs::write(root.join(rev).join("policy.toml"), policy(&[allowed])).unwrap();
    }
    std::os::unix::fs::symlink("rev1", root.join("current")).unwrap();
    // Polling too slow to help: only the watch can make these reloads.
    let daemon = daemon_on(dir, &root.join("current"), &["--poll-interval", "3600"]);
    let mut asker = Asker::open(&daemon);
    assert!(asker.allowed("/v1/x"));
    std::os::unix::fs::symlink("rev2", root.join("current.tmp")).unwrap();
    std::fs::rename(root.join("current.tmp"), root.join("current")).unwrap();
    asker.wait_until("/v2/x", true, SECOND);
    daemon.wait_for_log(&["watching it there"]);
    std::fs::write(root.join("rev2/policy.toml"), policy(&["/v2", "/v2b"])).unwrap();
    asker.wait_until("/v2b/x", true, SECOND);
    assert!(!asker.allowed("/v1/x"));
}

/// A broken policy that stays broken is reported when it breaks, not at every poll; a new
/// breakage is reported again; the fix says the policy is restored; a SIGHUP's outcome is logged
/// under its trigger; a policy in audit mode says so when it starts serving.
#[test]
fn a_broken_policy_is_reported_once_and_its_repair_is_said() {
    let (dir, policy_dir) = setup(&[("p.toml", policy(&["/a"]))]);
    let file = policy_dir.join("p.toml");
    let daemon = daemon_on(dir, &file, &["--no-watch", "--poll-interval", "0.1"]);
    let mut asker = Asker::open(&daemon);
    let broken = "version = 1\n[[rule]]\nid = \"r\"\neffect = \"allow\"\npermissions = [\"reed\"]\npaths = [\"/b\"]\n";
    std::fs::write(&file, broken).unwrap();
    daemon.wait_for_log(&["policy reload failed; still serving the last good policy"]);
    // Twenty polls later: still one report of it.
    std::thread::sleep(Duration::from_secs(2));
    let count = |needle: &str| daemon.log().iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("unknown permission `reed`"), 1, "{:#?}", daemon.log());
    assert_eq!(count("reload failed"), 1, "{:#?}", daemon.log());
    // A SIGHUP on the same files: its outcome, said once, without the errors again.
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    };
    hup();
    daemon.wait_for_log(&[
        "reload failed again, the files unchanged",
        "trigger=\"SIGHUP\"",
    ]);
    assert_eq!(count("unknown permission `reed`"), 1, "{:#?}", daemon.log());
    // Broken differently: reported again.
    std::fs::write(&file, broken.replace("reed", "wrte")).unwrap();
    daemon.wait_for_log(&["unknown permission `wrte`"]);
    daemon.wait_for_logs(
        &["policy reload failed; still serving the last good policy"],
        2,
    );
    assert!(asker.allowed("/a/x"));
    // Repaired: said in words, and served.
    std::fs::write(&file, policy(&["/b"])).unwrap();
    asker.wait_until("/b/x", true, SECOND);
    daemon.wait_for_log(&["policy restored: the files load again, and the new revision serves"]);
    // Back to the revision that was serving all along: restored too.
    std::fs::write(&file, broken).unwrap();
    daemon.wait_for_logs(
        &["policy reload failed; still serving the last good policy"],
        3,
    );
    std::fs::write(&file, policy(&["/b"])).unwrap();
    daemon
        .wait_for_log(&["policy restored: the files load again, as the revision already serving"]);
    // Into audit mode: a warning that nothing is denied any more.
    std::fs::write(
        &file,
        format!(
            "version = 1\n[defaults]\nmode = \"audit\"\n{}",
            policy(&["/b"]).replace("version = 1\n", "")
        ),
    )
    .unwrap();
    let audit = daemon.wait_for_log(&["the policy is in AUDIT mode"]);
    assert!(audit.contains("WARN"), "{audit}");
    hup();
    daemon.wait_for_log(&["policy unchanged", "trigger=\"SIGHUP\""]);
}
