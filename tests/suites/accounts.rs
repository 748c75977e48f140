//! `users` and `groups` are names, matched where the request is decided: a fleet policy names
//! accounts that this host (or CI) does not have, `check`/`test` take a fleet's passwd and group
//! files, and the daemon matches the asking process's own names.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{BROKER, Daemon};
use std::process::Command;

const FLEET: &str = r#"
version = 1
[[rule]]
id = "reports-write"
effect = "allow"
permissions = ["write"]
paths = ["/var/lib/reports"]
when = { users = ["reports"] }

[[rule]]
id = "ops-read"
effect = "allow"
permissions = ["read"]
paths = ["/var/log"]
when = { groups = ["ops"] }
"#;

const CASES: &str = r#"
[[case]]
name = "reports writes its data"
permission = "write"
value = "/var/lib/reports/x.csv"
user = "reports"
expect = "allow"
rule = "reports-write"

[[case]]
name = "by uid, named by the fleet's passwd"
permission = "write"
value = "/var/lib/reports/x.csv"
uid = 1500
expect = "allow"

[[case]]
name = "another user does not"
permission = "write"
value = "/var/lib/reports/x.csv"
uid = 1000
expect = "deny"

[[case]]
name = "a supplementary group by the fleet's group file"
permission = "read"
value = "/var/log/syslog"
uid = 1000
gid = 1000
groups = [1600]
expect = "allow"
rule = "ops-read"
"#;

fn broker(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(&*BROKER).args(args).output().unwrap()
}

#[test]
fn a_fleet_policy_naming_accounts_this_host_lacks_checks_and_tests_with_the_fleets_files() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("fleet.toml");
    std::fs::write(&policy, FLEET).unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(&cases, CASES).unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "reports:x:1500:1500::/var/lib/reports:/usr/sbin/nologin\napp:x:1000:1000::/home/app:/bin/sh\n").unwrap();
    let group = dir.path().join("group");
    std::fs::write(&group, "reports:x:1500:\napp:x:1000:\nops:x:1600:app\n").unwrap();

    // This host has no `reports`: a warning naming it, and the policy loads.
    let out = broker(&["check".as_ref(), policy.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: unknown user `reports` on this host"),
        "{stderr}"
    );
    // With the fleet's accounts: no warning.
    let out = broker(&[
        "check".as_ref(),
        policy.as_os_str(),
        "--passwd".as_ref(),
        passwd.as_os_str(),
        "--group".as_ref(),
        group.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("unknown user"), "{stderr}");
    assert!(!stderr.contains("unknown group"), "{stderr}");
    let out = broker(&[
        "test".as_ref(),
        policy.as_os_str(),
        cases.as_os_str(),
        "--passwd".as_ref(),
        passwd.as_os_str(),
        "--group".as_ref(),
        group.as_os_str(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "4 passed, 0 failed\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A passwd file that is not one is an error naming the line.
    std::fs::write(&passwd, "reports:x:not-a-number\n").unwrap();
    let out = broker(&[
        "check".as_ref(),
        policy.as_os_str(),
        "--passwd".as_ref(),
        passwd.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("passwd:1:"));
}

/// The daemon looks up the asking process's own user name: `nobody` (uid 65534 here) is allowed
/// by a rule naming `nobody`, root is not.
#[test]
fn the_daemon_matches_the_asking_processs_user_name() {
    let uid = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_owned();
    let policy = r#"
version = 1
[[rule]]
id = "nobody-env"
effect = "allow"
permissions = ["env"]
names = ["HOME"]
when = { users = ["nobody"] }
"#;
    let daemon = Daemon::start(policy, &["--socket-mode", "666"]);
    std::fs::set_permissions(
        daemon.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ask = |as_nobody: bool| {
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", &uid, "--regid", &uid, "--clear-groups"])
                .arg(&*BROKER);
            c
        } else {
            Command::new(&*BROKER)
        };
        cmd.arg("ask")
            .arg("--socket")
            .arg(&daemon.socket)
            .args(["env", "HOME"]);
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(ask(true), "allow");
    assert!(ask(false).starts_with("deny"));
}
