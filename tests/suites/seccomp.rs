//! The shipped unit's system-call filter, loaded for real: its `SystemCallFilter=` lines are
//! expanded as systemd expands them (`systemd-analyze syscall-filter`), loaded with libseccomp
//! (`seccomp-exec`) the way systemd's exec loads them (everything else fails with EPERM, native
//! architecture only), and the daemon serves real Deno under it through everything it does: relative
//! paths and symlinks through `/proc`, a reload, a log rotation, an upgrade in place, a stop. Under
//! the same filter, every call that reaches into another process fails.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::BROKER;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT: &str = include_str!("../../systemd/permission-broker.service");

/// The calls a `SystemCallFilter=` entry names: a call, or a group expanded as systemd does.
fn expand(entry: &str) -> BTreeSet<String> {
    if !entry.starts_with('@') {
        return BTreeSet::from([entry.to_owned()]);
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", entry])
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed");
    assert!(out.status.success(), "{entry}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut calls = BTreeSet::new();
    for line in text.lines().skip(1).map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        calls.extend(expand(line));
    }
    assert!(!calls.is_empty(), "{entry} expanded to nothing");
    calls
}

/// What the unit's filter lines allow: the first line's allow list, less every `~` line after.
fn allowed_by_the_unit() -> BTreeSet<String> {
    let lines: Vec<&str> = UNIT
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
        .collect();
    assert!(
        !lines[0].starts_with('~'),
        "the filter starts with an allow list"
    );
    let mut allowed: BTreeSet<String> = lines[0].split_whitespace().flat_map(expand).collect();
    for line in &lines[1..] {
        let denied = line.strip_prefix('~').expect("later lines deny");
        for call in denied.split_whitespace().flat_map(expand) {
            allowed.remove(&call);
        }
    }
    assert!(UNIT.contains("SystemCallErrorNumber=EPERM"));
    assert!(UNIT.contains("SystemCallArchitectures=native"));
    allowed
}

fn seccomp_exec() -> &'static str {
    env!("CARGO_BIN_EXE_seccomp-exec")
}

fn write_allowed(dir: &Path) -> PathBuf {
    let path = dir.join("allowed.txt");
    let allowed = allowed_by_the_unit();
    for call in [
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "kcmp",
        "pidfd_getfd",
    ] {
        assert!(!allowed.contains(call), "{call} is allowed");
    }
    std::fs::write(&path, allowed.into_iter().collect::<Vec<_>>().join("\n")).unwrap();
    path
}

#[test]
fn under_the_units_filter_nothing_reaches_into_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = write_allowed(dir.path());
    let mut target = Command::new("sleep").arg("30").spawn().unwrap();
    let probe = |filter: &Path| {
        let out = Command::new(seccomp_exec())
            .arg(filter)
            .arg("--probe")
            .arg(target.id().to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Without the filter (as root) every one of them works: the probe can tell.
    let open = probe(Path::new("-"));
    for call in [
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "pidfd_getfd",
    ] {
        assert!(open.contains(&format!("{call}: ok")), "{open}");
    }
    let _ = target.kill();
    let _ = target.wait();
    let mut target = Command::new("sleep").arg("30").spawn().unwrap();
    let out = Command::new(seccomp_exec())
        .arg(&allowed)
        .arg("--probe")
        .arg(target.id().to_string())
        .output()
        .unwrap();
    let filtered = String::from_utf8(out.stdout).unwrap();
    for call in [
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "pidfd_getfd",
    ] {
        assert!(
            filtered.contains(&format!("{call}: Operation not permitted")),
            "{filtered}"
        );
    }
    let _ = target.kill();
    let _ = target.wait();
}

#[test]
fn the_daemon_serves_deno_through_everything_it_does_under_the_units_filter() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let allowed = write_allowed(&root);
    let app = root.join("app");
    std::fs::create_dir_all(app.join("data")).unwrap();
    std::fs::write(app.join("data/x.txt"), "inside\n").unwrap();
    std::fs::write(app.join("secret.txt"), "s3cr3t\n").unwrap();
    std::os::unix::fs::symlink(app.join("secret.txt"), app.join("data/link")).unwrap();
    std::fs::write(
        app.join("main.ts"),
        "console.log(Deno.readTextFileSync('./data/x.txt').trim());\n\
         for (const p of ['./secret.txt', './data/link']) {\n\
           try { Deno.readTextFileSync(p); console.log('LEAK ' + p); } catch (e) { console.log(e.name); }\n\
         }\n",
    )
    .unwrap();
    let policy = root.join("policy.toml");
    let allow_data = format!(
        "version = 1\n[[rule]]\nid = \"data\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{}/**\"]\n",
        app.join("data").display()
    );
    std::fs::write(&policy, &allow_data).unwrap();
    // The daemon under the filter, started the way the unit's exec would start it.
    let wrapper = root.join("broker-under-filter");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' '{}' -- '{}' \"$@\"\n",
            seccomp_exec(),
            allowed.display(),
            &*BROKER
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let log = root.join("decisions.jsonl");
    let status = root.join("status.json");
    let log_arg = log.display().to_string();
    let status_arg = status.display().to_string();
    let extra = [
        "--decision-log",
        log_arg.as_str(),
        "--status-file",
        status_arg.as_str(),
        "--reload",
        "signal",
    ];
    let run_dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::launch(
        run_dir,
        &policy,
        common::Launch {
            extra: &extra,
            program: Some(&wrapper),
            log_filter: "permission_broker=info",
            ..common::Launch::default()
        },
    );
    daemon.wait_for_log(&["ready"]);
    let filter_line = daemon.wait_for_log(&["seccomp-exec: filter loaded"]);
    assert!(filter_line.contains("calls allowed"), "{filter_line}");
    let deno = |daemon: &common::Daemon| {
        let out = common::world::deno_run("2.9.6", &root, &app, &daemon.socket, "main.ts")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}\ndaemon:\n{}",
            String::from_utf8_lossy(&out.stderr),
            daemon.log().join("\n")
        );
        assert_eq!(
            said.lines().collect::<Vec<_>>(),
            ["inside", "NotCapable", "NotCapable"]
        );
    };
    deno(&daemon);

    // A reload, through the command the unit runs.
    std::fs::write(&policy, format!("# v2\n{allow_data}")).unwrap();
    let reload = Command::new(&*BROKER)
        .args(["reload", "--status-file", &status_arg])
        .output()
        .unwrap();
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    // A rotation.
    std::fs::rename(&log, root.join("decisions.jsonl.1")).unwrap();
    common::signal(&daemon, Signal::SIGUSR1);
    daemon.wait_for_log(&["decision log reopened"]);
    deno(&daemon);
    // An upgrade in place: the preflight child and the execve, both under the filter.
    common::signal(&daemon, Signal::SIGUSR2);
    daemon.wait_for_log(&["took over from the previous process"]);
    deno(&daemon);
    let status = common::sigterm_and_wait(&mut daemon);
    assert!(status.success(), "{status:?}\n{}", daemon.log().join("\n"));
    let text = daemon.log().join("\n");
    for bad in ["Operation not permitted", "os error 1)", "ERROR"] {
        assert!(!text.contains(bad), "`{bad}` under the filter:\n{text}");
    }
}

/// Docker's default profile lets a container with `CAP_SYS_PTRACE` call `ptrace` and
/// `process_vm_readv/writev`: the image's documented run line loads the unit's own filter instead,
/// shipped as a Docker profile. It allows exactly what the unit allows, plus what Docker itself
/// calls after loading it (this test regenerates nothing: on a difference it prints the list).
/// `docker.rs` runs the image's entrypoint under it.
#[test]
fn the_docker_profile_allows_exactly_what_the_unit_allows() {
    let profile: serde_json::Value =
        serde_json::from_str(include_str!("../../config/docker/seccomp.json")).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(
        profile["defaultErrnoRet"], 1,
        "EPERM, as SystemCallErrorNumber=EPERM"
    );
    let rules = profile["syscalls"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["action"], "SCMP_ACT_ALLOW");
    let names: BTreeSet<String> = rules[0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    // Docker loads the profile before it drops to `--user` and sets the capabilities: the calls
    // that takes are allowed too (the daemon holds no capability to use them).
    let mut unit = allowed_by_the_unit();
    for call in [
        "capset",
        "setgroups",
        "setresgid",
        "setresuid",
        "setgid",
        "setuid",
    ] {
        unit.insert(call.to_owned());
    }
    assert!(
        names == unit,
        "config/docker/seccomp.json differs from the unit; the unit allows:\n{}",
        serde_json::to_string(&unit).unwrap()
    );
    for doc in [
        include_str!("../../Dockerfile"),
        include_str!("../../README.md"),
    ] {
        assert!(doc.contains("--security-opt seccomp=config/docker/seccomp.json"));
    }
}
