//! Restarts and upgrades that no connected Deno notices: `SIGUSR2` upgrades in place (same pid,
//! the binary at the daemon's path exec'd with every connection), and a restart under systemd
//! keeps every connection in the descriptor store. Real Deno processes in loops of checks
//! must keep running and exit 0; ids, the unread bytes and the decision log go on as if
//! nothing happened; a broken new binary leaves the daemon serving; a crash closes stored
//! connections instead of leaving Deno waiting forever.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::service_manager::ServiceManager;
use common::world::{World, deno_run};
use common::{BROKER, DENO_VERSIONS, Launch, RawConn, read_frame};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

/// A policy allowing reads under `/tmp`.
const ALLOW_TMP: &str = "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp\"]\n";

/// A daemon under a played service manager (with a descriptor store), and one connection that
/// has been answered once and is stored as `conn-1`.
fn managed_with_one_connection(dir: &Path) -> (ServiceManager, RawConn) {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, ALLOW_TMP).unwrap();
    let args: Vec<OsString> = vec!["serve".into(), "--policy".into(), policy.into()];
    let mut manager = ServiceManager::new(dir, Path::new(&*BROKER), &args, 64);
    manager.start();
    let mut conn = RawConn::open_path(&manager.socket);
    conn.send(read_frame(1, None, "/tmp/x").as_bytes());
    assert!(conn.answer().contains("allow"));
    manager.wait_for_store(vec!["conn-1".to_owned()]);
    (manager, conn)
}

/// A copy of the broker under test that an upgrade can replace.
fn installed_copy(dir: &Path) -> PathBuf {
    let path = dir.join("permission-broker");
    std::fs::copy(&*BROKER, &path).unwrap();
    path
}

/// Replaces the binary at `path` the way a package upgrade does: a new file renamed over it.
fn replace_binary(path: &Path, with: &Path) {
    let staged = path.with_extension("new");
    std::fs::copy(with, &staged).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// A Deno script that checks in a loop -- a relative stat of an allowed file, a denied read of
/// the secret -- until a file named `stop` appears, then prints how many rounds it made.
const LOOP: &str = r#"
let rounds = 0, denied = 0;
while (true) {
  try { Deno.statSync("stop"); break; } catch (e) { if (!(e instanceof Deno.errors.NotFound)) throw e; }
  Deno.statSync("data/x.txt");
  try { Deno.readTextFileSync("secret.txt"); throw new Error("the secret was read"); }
  catch (e) { if (e.name !== "NotCapable" && e.name !== "PermissionDenied") throw e; denied++; }
  rounds++;
  await new Promise((r) => setTimeout(r, 1));
}
console.log(`done ${rounds} ${denied}`);
"#;

/// The decisions and faults in a decision log (not its `log` headers).
fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A line the daemon is still writing is not a record yet: only whole lines are read.
    let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
    whole
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|r| r["kind"] == "decision" || r["kind"] == "fault")
        .collect()
}

/// Every decision record, by connection number, as (pid, id).
fn decisions_by_conn(log: &Path) -> BTreeMap<u64, Vec<(u64, u64)>> {
    let mut by_conn: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for record in records(log) {
        if record["kind"] == "decision" {
            by_conn
                .entry(record["conn"].as_u64().unwrap())
                .or_default()
                .push((
                    record["pid"].as_u64().unwrap_or(0),
                    record["id"].as_u64().unwrap(),
                ));
        }
    }
    by_conn
}

/// Each Deno's requests are on record once each, in order, under one connection number: its
/// ids are exactly 1, 2, 3, ... (none lost, none answered twice), and its pid has no other
/// connection.
fn assert_each_deno_on_record_once(log: &Path, denos: &[(u32, Output)]) {
    let by_conn = decisions_by_conn(log);
    for (pid, output) in denos {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let rounds: u64 = stdout
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("deno {pid} said {stdout:?}"));
        let conns: Vec<(&u64, &Vec<(u64, u64)>)> = by_conn
            .iter()
            .filter(|(_, records)| records.iter().any(|(p, _)| *p == u64::from(*pid)))
            .collect();
        assert_eq!(
            conns.len(),
            1,
            "deno {pid} has one connection number: {conns:?}"
        );
        let ids: Vec<u64> = conns[0].1.iter().map(|(_, id)| *id).collect();
        let expected: Vec<u64> = (1..=ids.len() as u64).collect();
        assert_eq!(ids, expected, "deno {pid}: ids on record");
        // Two checks a round, and the stat of `stop` each round and once more at the end.
        assert!(
            ids.len() as u64 > 3 * rounds,
            "deno {pid}: {} records for {rounds} rounds",
            ids.len()
        );
    }
}

/// Starts `per_version` looping Deno processes of each tested release against `socket`.
fn start_denos(world_root: &Path, app: &Path, socket: &Path, per_version: usize) -> Vec<Child> {
    std::fs::write(app.join("loop.ts"), LOOP).unwrap();
    let mut denos = Vec::new();
    for version in DENO_VERSIONS {
        for _ in 0..per_version {
            denos.push(
                deno_run(version, world_root, app, socket, "loop.ts")
                    .spawn()
                    .unwrap(),
            );
        }
    }
    denos
}

/// Waits until every Deno has made `at_least` requests on record.
fn wait_for_requests(log: &Path, pids: &[u32], at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let by_conn = decisions_by_conn(log);
        let ready = pids.iter().all(|pid| {
            by_conn
                .values()
                .any(|r| r.iter().filter(|(p, _)| *p == u64::from(*pid)).count() >= at_least)
        });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Deno processes {pids:?} made fewer than {at_least} requests: {:?}",
            by_conn
                .iter()
                .map(|(c, r)| (c, r.first(), r.len()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lets the loops finish and collects every Deno's output; each must exit 0 having said done.
fn finish_denos(app: &Path, denos: Vec<Child>) -> Vec<(u32, Output)> {
    std::fs::write(app.join("stop"), "").unwrap();
    denos
        .into_iter()
        .map(|child| {
            let pid = child.id();
            let output = common::world::wait_with_timeout(child, Duration::from_secs(60));
            common::world::assert_success(&output, "a looping Deno across the handover");
            assert!(String::from_utf8_lossy(&output.stdout).starts_with("done "));
            (pid, output)
        })
        .collect()
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn deno_keeps_running_across_two_upgrades_in_place_with_the_binary_replaced() {
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let log_arg = log.display().to_string();
    let world = World::with_launch(
        World::default_policy,
        Launch {
            extra: &["--decision-log", &log_arg],
            program: Some(&program),
            ..Launch::default()
        },
    );
    let daemon_pid = world.daemon.child.id();
    let denos = start_denos(&world.root, &world.app, &world.daemon.socket, 3);
    let pids: Vec<u32> = denos.iter().map(Child::id).collect();
    wait_for_requests(&log, &pids, 10);
    common::signal(&world.daemon, Signal::SIGUSR2);
    world
        .daemon
        .wait_for_logs(&["took over from the previous process", "execve"], 1);
    // The package manager replaces the file: the daemon now runs a deleted one.
    replace_binary(&program, Path::new(&*BROKER));
    assert!(exe_of(daemon_pid).ends_with(" (deleted)"));
    wait_for_requests(&log, &pids, 60);
    common::signal(&world.daemon, Signal::SIGUSR2);
    world
        .daemon
        .wait_for_logs(&["took over from the previous process", "execve"], 2);
    assert_eq!(
        exe_of(daemon_pid),
        program.display().to_string(),
        "the daemon runs the new file at its path, under the same pid"
    );
    wait_for_requests(&log, &pids, 110);
    let done = finish_denos(&world.app, denos);
    assert_each_deno_on_record_once(&log, &done);
    let log_text = world.daemon.log().join("\n");
    assert!(!log_text.contains("protocol fault"), "{log_text}");
    let mut daemon = world.daemon;
    assert!(daemon.is_running(), "the same process serves throughout");
    assert!(common::sigterm_and_wait(&mut daemon).success());
}

#[test]
fn deno_keeps_running_across_restarts_through_the_descriptor_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let app = root.join("app");
    std::fs::create_dir_all(app.join("data")).unwrap();
    std::fs::write(app.join("data/x.txt"), "inside\n").unwrap();
    std::fs::write(app.join("secret.txt"), "s3cr3t\n").unwrap();
    let policy = root.join("policy.toml");
    std::fs::write(&policy, World::default_policy(&app)).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let args: Vec<OsString> = vec![
        "serve".into(),
        "--socket".into(),
        root.join("unused.sock").into(),
        "--policy".into(),
        policy.into(),
        "--decision-log".into(),
        log.clone().into(),
    ];
    let mut manager = ServiceManager::new(&root, Path::new(&*BROKER), &args, 64);
    manager.start();
    let denos = start_denos(&root, &app, &manager.socket, 2);
    let pids: Vec<u32> = denos.iter().map(Child::id).collect();
    wait_for_requests(&log, &pids, 10);
    // Every connection is in the store while it is open.
    assert_eq!(
        manager
            .stored()
            .iter()
            .filter(|n| n.starts_with("conn-"))
            .count(),
        pids.len(),
        "{:?}",
        manager.stored()
    );
    for restart in 1..=2 {
        // `systemctl restart`: SIGTERM, then a start with the socket and the store passed back.
        let status = manager.stop();
        assert!(status.success(), "{status:?}\n{}", manager.log_text());
        assert!(
            manager.stored().iter().any(|n| n == "state"),
            "a graceful stop leaves the state: {:?}",
            manager.stored()
        );
        manager.start();
        manager.wait_for_log(
            &["took over from the previous process", "descriptor store"],
            restart,
        );
        assert!(
            !manager.stored().iter().any(|n| n == "state"),
            "the state is taken out of the store before anything is served"
        );
        wait_for_requests(&log, &pids, 10 + 50 * restart);
        if restart == 1 {
            // An upgrade in place under the store: the connections stay stored under their names.
            manager.signal(Signal::SIGUSR2);
            manager.wait_for_log(&["took over from the previous process", "execve"], 1);
            manager.wait_for_message("READY=1", 3);
            let messages = manager.messages();
            let reloading = messages.iter().rposition(|m| m.contains("RELOADING=1"));
            let ready = messages.iter().rposition(|m| m.contains("READY=1"));
            assert!(
                reloading.is_some() && reloading < ready,
                "RELOADING=1 then READY=1 around the upgrade: {messages:?}"
            );
            assert_eq!(
                manager
                    .stored()
                    .iter()
                    .filter(|n| n.starts_with("conn-"))
                    .count(),
                pids.len(),
                "{:?}",
                manager.stored()
            );
            wait_for_requests(&log, &pids, 40);
        }
    }
    let done = finish_denos(&app, denos);
    assert_each_deno_on_record_once(&log, &done);
    // One run across both restarts and the upgrade: each process that opened the log said so
    // in a header naming the same run, so a connection's `conn` names it for the whole run.
    let headers: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "log")
        .collect();
    assert_eq!(
        headers.len(),
        4,
        "start, restart, upgrade, restart: {headers:#?}"
    );
    assert!(
        headers.iter().all(|h| h["run"] == headers[0]["run"]),
        "{headers:#?}"
    );
    let pids_of_daemon: std::collections::HashSet<u64> = headers
        .iter()
        .map(|h| h["daemon_pid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        pids_of_daemon.len(),
        3,
        "the upgrade kept its pid: {headers:#?}"
    );
    // Each Deno's connection left the store when it closed.
    manager.wait_for_store(Vec::new());
    assert!(!manager.log_text().contains("protocol fault"));
    assert!(manager.stop().success());
}

#[test]
fn a_failed_upgrade_leaves_the_daemon_serving() {
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let good = ALLOW_TMP;
    std::fs::write(&policy, good).unwrap();
    let daemon = common::Daemon::launch(
        dir,
        &policy,
        Launch {
            extra: &["--no-watch"],
            program: Some(&program),
            ..Launch::default()
        },
    );
    let pid = daemon.child.id();
    let mut conn = RawConn::open(&daemon);
    let mut id = 0;
    let mut ask = |conn: &mut RawConn, value: &str| {
        id += 1;
        conn.send(read_frame(id, None, value).as_bytes());
        conn.answer()
    };
    assert!(ask(&mut conn, "/tmp/x").contains("allow"));
    let script = |text: &str| {
        let staged = program.with_extension("new");
        std::fs::write(&staged, text).unwrap();
        std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::rename(&staged, &program).unwrap();
    };
    type Breakage<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Breakage)> = vec![
        (
            "a binary that fails",
            Box::new(|| script("#!/bin/sh\necho 'error: the new build is broken' >&2\nexit 3\n")),
        ),
        (
            "a binary that floods its output and leaves a process holding it",
            Box::new(|| {
                script("#!/bin/sh\nsleep 60 &\nhead -c 300000 /dev/zero | tr '\\0' x\nexit 1\n")
            }),
        ),
        (
            "a binary that does not speak the handover",
            Box::new(|| script("#!/bin/sh\nexit 0\n")),
        ),
        (
            "a binary of another handover version",
            Box::new(|| {
                script(
                    "#!/bin/sh\necho 'permission-broker preflight: handover version 2; policy x'\n",
                )
            }),
        ),
        (
            "a file that is not executable",
            Box::new(|| {
                std::fs::write(&program, "not a program").unwrap();
                std::fs::set_permissions(
                    &program,
                    std::os::unix::fs::PermissionsExt::from_mode(0o644),
                )
                .unwrap();
            }),
        ),
        (
            "no file at the path",
            Box::new(|| std::fs::remove_file(&program).unwrap()),
        ),
        (
            "a policy on disk that does not load",
            Box::new(|| {
                std::fs::copy(&*BROKER, &program).unwrap();
                std::fs::write(&policy, "version = 1\n[[rule]]\nid = \"broken\"\n").unwrap();
            }),
        ),
    ];
    for (refused, (what, break_it)) in cases.iter().enumerate() {
        break_it();
        common::signal(&daemon, Signal::SIGUSR2);
        daemon.wait_for_logs(&["upgrade refused"], refused + 1);
        assert!(
            ask(&mut conn, "/tmp/x").contains("allow"),
            "{what}: the same connection is still served"
        );
        assert!(ask(&mut conn, "/etc/passwd").contains("deny"), "{what}");
        assert_eq!(daemon.child.id(), pid);
    }
    let log = daemon.log().join("\n");
    for said in [
        "the new build is broken",
        "does not say it can take over",
        "speaks another handover version",
        "is not an executable file",
        "failed (exit status: 64)",
    ] {
        assert!(log.contains(said), "the log says why ({said}):\n{log}");
    }
    assert!(!log.contains("took over"), "{log}");
    // Fixed, the upgrade goes through on the same connection.
    std::fs::write(&policy, good).unwrap();
    common::signal(&daemon, Signal::SIGUSR2);
    daemon.wait_for_log(&["took over from the previous process"]);
    assert!(ask(&mut conn, "/tmp/x").contains("allow"));
}

#[test]
fn a_connection_keeps_its_ids_its_unread_bytes_and_its_number_across_an_upgrade() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let log_arg = log.display().to_string();
    let daemon = common::Daemon::start(ALLOW_TMP, &["--decision-log", &log_arg]);
    let mut conn = RawConn::open(&daemon);
    conn.send(read_frame(7, None, "/tmp/a").as_bytes());
    assert!(conn.answer().contains(r#""id":7,"result":"allow""#));
    // Half a frame, then the upgrade, then the rest: the half is carried over, not lost.
    let frame = read_frame(8, None, "/etc/shadow");
    let (head, tail) = frame.split_at(20);
    conn.send(head.as_bytes());
    std::thread::sleep(Duration::from_millis(100));
    common::signal(&daemon, Signal::SIGUSR2);
    daemon.wait_for_log(&["took over from the previous process"]);
    conn.send(tail.as_bytes());
    assert!(conn.answer().contains(r#""id":8,"result":"deny""#));
    // Two frames in one write, answered in order.
    conn.send(
        format!(
            "{}{}",
            read_frame(9, None, "/tmp/b"),
            read_frame(10, None, "/tmp/c")
        )
        .as_bytes(),
    );
    assert!(conn.answer().contains(r#""id":9,"#));
    assert!(conn.answer().contains(r#""id":10,"#));
    // Idle after answering, then handed over: only what was not read yet is carried.
    common::signal(&daemon, Signal::SIGUSR2);
    daemon.wait_for_logs(&["took over from the previous process"], 2);
    conn.send(read_frame(11, None, "/tmp/d").as_bytes());
    assert!(conn.answer().contains(r#""id":11,"result":"allow""#));
    // An id reused after the handover is still a fault: closed without an answer.
    conn.send(read_frame(11, None, "/tmp/d").as_bytes());
    conn.assert_closed_unanswered("a reused id after two handovers");
    let all = records(&log);
    let conns: Vec<u64> = all.iter().map(|r| r["conn"].as_u64().unwrap()).collect();
    assert!(
        conns.iter().all(|c| *c == conns[0]),
        "one connection number: {conns:?}"
    );
    let ids: Vec<u64> = all
        .iter()
        .filter(|r| r["kind"] == "decision")
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![7, 8, 9, 10, 11], "each answer on record once");
    let fault = all.last().unwrap();
    assert_eq!(fault["kind"], "fault");
    assert_eq!(fault["last_id"], 11);
    assert!(
        fault["fault"]
            .as_str()
            .unwrap()
            .contains("request id 11 is not greater than the previous id 11"),
        "{fault}"
    );
    // A connection opened after the handovers gets the next number, not a reused one.
    let mut next = RawConn::open(&daemon);
    next.send(read_frame(1, None, "/tmp/e").as_bytes());
    assert!(next.answer().contains("allow"));
    let last = records(&log).last().unwrap()["conn"].as_u64().unwrap();
    assert!(last > conns[0], "{last} after {}", conns[0]);
}

#[test]
fn after_a_crash_stored_connections_are_closed_not_left_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, mut conn) = managed_with_one_connection(dir.path());
    // A crash: no graceful stop, no state. The store still holds the connection open.
    manager.kill();
    conn.send(read_frame(2, None, "/tmp/y").as_bytes());
    manager.start();
    // The next start closes it: the request it sent may never be answered by anyone.
    conn.assert_closed_unanswered("a stored connection without state after a crash");
    manager.wait_for_store(Vec::new());
    assert!(manager.log_text().contains("did not stop gracefully"));
    // New connections are served as usual.
    let mut fresh = RawConn::open_path(&manager.socket);
    fresh.send(read_frame(1, None, "/tmp/z").as_bytes());
    assert!(fresh.answer().contains("allow"));
}

#[test]
fn connections_made_during_a_handover_wait_in_the_queue_and_are_served() {
    let daemon = common::Daemon::start(ALLOW_TMP, &[]);
    let socket = daemon.socket.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    // One fresh connection after another, each asking once, while the daemon upgrades.
    let client = std::thread::spawn(move || {
        let mut served = 0;
        let mut slowest = Duration::ZERO;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            let started = Instant::now();
            let mut conn = RawConn::open_path(&socket);
            conn.send(read_frame(1, None, "/tmp/x").as_bytes());
            let answer = conn.answer();
            assert!(answer.contains("allow"), "connection {served}: {answer:?}");
            slowest = slowest.max(started.elapsed());
            served += 1;
        }
        (served, slowest)
    });
    for upgrade in 1..=3 {
        std::thread::sleep(Duration::from_millis(200));
        common::signal(&daemon, Signal::SIGUSR2);
        daemon.wait_for_logs(&["took over from the previous process"], upgrade);
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (served, slowest) = client.join().unwrap();
    eprintln!("{served} connections served across 3 upgrades; the slowest took {slowest:?}");
    assert!(served > 10);
}

/// Percentile `p` (0..=100) of sorted `values`.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

/// 1,000 connections each with a request always in flight (8 blocking client threads, one
/// request outstanding per connection, as Deno) across two upgrades: every request is answered
/// with its own id, none is lost, no connection closes. Prints what a request that spans a
/// handover waits (BENCHMARKS.md records a release run).
#[test]
fn a_thousand_connections_survive_upgrades_under_load() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const CONNECTIONS: usize = 1000;
    const THREADS: usize = 8;
    common::service_manager::raise_open_file_limit();
    let daemon = common::Daemon::start(ALLOW_TMP, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let clients: Vec<_> = (0..THREADS)
        .map(|_| {
            let conns: Vec<BufReader<UnixStream>> = (0..CONNECTIONS / THREADS)
                .map(|_| BufReader::new(UnixStream::connect(&daemon.socket).unwrap()))
                .collect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conns = conns;
                let mut ids = vec![0u32; conns.len()];
                // (start, end) of every request, from `origin`.
                let mut spans = Vec::new();
                let mut line = String::new();
                while !stop.load(Ordering::Relaxed) {
                    for (conn, id) in conns.iter_mut().zip(ids.iter_mut()) {
                        *id += 1;
                        let started = origin.elapsed();
                        conn.get_mut()
                            .write_all(read_frame(*id, None, "/tmp/x").as_bytes())
                            .unwrap();
                        line.clear();
                        conn.read_line(&mut line).unwrap();
                        assert_eq!(
                            line,
                            format!("{{\"id\":{id},\"result\":\"allow\"}}\n"),
                            "request {id}"
                        );
                        spans.push((started, origin.elapsed()));
                    }
                }
                spans
            })
        })
        .collect();
    let mut windows = Vec::new();
    for upgrade in 1..=2 {
        std::thread::sleep(Duration::from_millis(700));
        let signalled = origin.elapsed();
        common::signal(&daemon, Signal::SIGUSR2);
        daemon.wait_for_logs(
            &["took over from the previous process", "connections=1000"],
            upgrade,
        );
        windows.push((signalled, origin.elapsed()));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let spans: Vec<(Duration, Duration)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let mut all: Vec<Duration> = spans.iter().map(|(s, e)| *e - *s).collect();
    all.sort();
    let mut spanning: Vec<Duration> = spans
        .iter()
        .filter(|(s, e)| windows.iter().any(|(from, to)| s < to && e > from))
        .map(|(s, e)| *e - *s)
        .collect();
    spanning.sort();
    assert!(!spanning.is_empty());
    eprintln!(
        "{} requests on {CONNECTIONS} connections, 2 upgrades: all requests p50 {:?} p99 {:?}; \
         the {} requests in flight across a handover: p50 {:?} p99 {:?} max {:?}",
        all.len(),
        percentile(&all, 50),
        percentile(&all, 99),
        spanning.len(),
        percentile(&spanning, 50),
        percentile(&spanning, 99),
        spanning.last().unwrap()
    );
    let log = daemon.log().join("\n");
    assert!(!log.contains("protocol fault"), "{log}");
    assert!(!log.contains("closing them"), "{log}");
}

/// Signals sent while an upgrade is under way -- `SIGUSR2` again, `SIGTERM` -- must not land in
/// the new image before it has installed its handlers (their default action kills the daemon
/// and every connection): they wait, blocked across the `execve`, and are handled after.
#[test]
fn signals_during_an_upgrade_wait_for_the_new_image() {
    let daemon = common::Daemon::start(ALLOW_TMP, &[]);
    let mut conn = RawConn::open(&daemon);
    let mut id = 0;
    let started = Instant::now();
    // A burst of upgrades, one signal every 3 ms for 1.5 s: many land mid-handover.
    while started.elapsed() < Duration::from_millis(1500) {
        common::signal(&daemon, Signal::SIGUSR2);
        std::thread::sleep(Duration::from_millis(3));
    }
    let upgrades = daemon
        .log()
        .iter()
        .filter(|l| l.contains("took over from the previous process"))
        .count();
    assert!(upgrades >= 2, "{}", daemon.log().join("\n"));
    id += 1;
    conn.send(read_frame(id, None, "/tmp/x").as_bytes());
    assert!(
        conn.answer().contains("allow"),
        "{}",
        daemon.log().join("\n")
    );
    // A stop sent as an upgrade execs is a graceful stop, by the next image.
    std::thread::sleep(Duration::from_millis(500));
    let execs = daemon
        .log()
        .iter()
        .filter(|l| l.contains("upgrading in place"))
        .count();
    common::signal(&daemon, Signal::SIGUSR2);
    daemon.wait_for_logs(&["upgrading in place"], execs + 1);
    let mut daemon = daemon;
    let status = common::sigterm_and_wait(&mut daemon);
    assert!(status.success(), "{status:?}\n{}", daemon.log().join("\n"));
}

/// The new image opens the decision log again; where it could not (the path is now a directory),
/// it would exit and take every connection with it. The preflight opens it first, changing
/// nothing in it, and the upgrade is refused.
#[test]
fn an_upgrade_whose_decision_log_cannot_be_opened_is_refused() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let log_arg = log.display().to_string();
    let daemon = common::Daemon::start(ALLOW_TMP, &["--decision-log", &log_arg]);
    let mut conn = RawConn::open(&daemon);
    conn.send(read_frame(1, None, "/tmp/a").as_bytes());
    assert!(conn.answer().contains("allow"));
    // Rotated away (the running daemon goes on writing the renamed file), and the path taken.
    std::fs::rename(&log, logs.path().join("decisions.jsonl.1")).unwrap();
    std::fs::create_dir(&log).unwrap();
    common::signal(&daemon, Signal::SIGUSR2);
    let refused = daemon.wait_for_log(&["upgrade refused"]);
    assert!(
        refused.contains("cannot open the decision log"),
        "{refused}"
    );
    conn.send(read_frame(2, None, "/tmp/b").as_bytes());
    assert!(conn.answer().contains(r#""id":2,"result":"allow""#));
    // Put back, the upgrade goes through and the log goes on in the file at the path.
    std::fs::remove_dir(&log).unwrap();
    common::signal(&daemon, Signal::SIGUSR2);
    daemon.wait_for_log(&["took over from the previous process"]);
    conn.send(read_frame(3, None, "/tmp/c").as_bytes());
    assert!(conn.answer().contains(r#""id":3,"result":"allow""#));
    let after = records(&log);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], 3);
    let before: Vec<Value> = records(&logs.path().join("decisions.jsonl.1"));
    assert_eq!(
        before.iter().map(|r| r["id"].as_u64()).collect::<Vec<_>>(),
        [Some(1), Some(2)]
    );
}

/// The daemon started under a bare name (`exec -a permission-broker`, systemd's `@path name`)
/// with a `PATH` whose first directory another user owns: an upgrade must not run what that
/// lookup finds, nor anything `argv[0]` claims, only the running binary's own path. And a
/// binary another user could replace is not run.
#[test]
fn an_upgrade_runs_only_the_daemons_own_binary_and_only_if_no_other_user_can_replace_it() {
    use std::os::unix::process::CommandExt;
    let uid: u32 = common::nobody_uid();
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    let ran = dir.path().join("evil-ran");
    std::fs::write(
        evil.join("permission-broker"),
        format!(
            "#!/bin/sh\ntouch {}\necho 'permission-broker preflight: handover version 1; policy x'\n",
            ran.display()
        ),
    )
    .unwrap();
    for path in [evil.clone(), evil.join("permission-broker")] {
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n").unwrap();
    let mut child = std::process::Command::new(&program)
        .arg0("permission-broker")
        .args(["serve", "--socket"])
        .arg(dir.path().join("b.sock"))
        .arg("--policy")
        .arg(&policy)
        .env("PATH", format!("{}:/usr/bin:/bin", evil.display()))
        .env("RUST_LOG", "permission_broker=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    common::capture_lines(child.stderr.take().unwrap(), log.clone());
    common::wait_for_line(&log, &["ready"]);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGUSR2).unwrap();
    let took = common::wait_for_line(&log, &["took over from the previous process"]);
    assert!(!took.is_empty());
    assert!(!ran.exists(), "the PATH lookup's program ran");
    assert_eq!(exe_of(child.id()), program.display().to_string());
    // Now the binary's directory is another user's: whoever owns it could swap the file.
    std::os::unix::fs::chown(bin.path(), Some(uid), Some(uid)).unwrap();
    nix::sys::signal::kill(pid, Signal::SIGUSR2).unwrap();
    let refused = common::wait_for_line(&log, &["upgrade refused"]);
    assert!(
        refused.contains("could be replaced by another user"),
        "{refused}"
    );
    std::os::unix::fs::chown(bin.path(), Some(0), Some(0)).unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

/// A store holding what it should not: the daemon's own listening socket under a connection's
/// name, a pipe under a connection's name and under a name of its own, a second socket under
/// an adopted connection's name. Before, the listener was shut down (every new Deno refused, the
/// accept loop spinning), a stray pipe made the start fail (exit 69), and removing a duplicate
/// removed the adopted connection from the store too. Now each is closed or left alone, the
/// adopted connection is stored once under its name, and the daemon serves.
#[test]
fn a_confused_descriptor_store_costs_only_what_does_not_belong() {
    use std::os::fd::{AsFd, OwnedFd};
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, mut conn) = managed_with_one_connection(dir.path());
    assert!(manager.stop().success());
    // What a confused store might hold beside the connection and its state.
    manager.put(
        "conn-9",
        manager.unit().as_fd().try_clone_to_owned().unwrap(),
    );
    let (pipe_read, _pipe_write) = std::io::pipe().unwrap();
    manager.put("conn-5", OwnedFd::from(pipe_read.try_clone().unwrap()));
    manager.put("metrics", OwnedFd::from(pipe_read));
    let (stray, mut stray_peer) = std::os::unix::net::UnixStream::pair().unwrap();
    manager.put("conn-1", OwnedFd::from(stray));
    manager.start();
    manager.wait_for_log(&["took over from the previous process", "connections=1"], 1);
    // The adopted connection goes on; the stray's peer is told it is closed.
    conn.send(read_frame(2, None, "/tmp/y").as_bytes());
    assert!(conn.answer().contains(r#""id":2,"result":"allow""#));
    stray_peer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        std::io::Read::read_to_end(&mut stray_peer, &mut rest).unwrap(),
        0
    );
    // New connections are still accepted on the listener that was stored as a connection.
    let mut fresh = RawConn::open_path(&manager.socket);
    fresh.send(read_frame(1, None, "/tmp/z").as_bytes());
    assert!(fresh.answer().contains("allow"));
    manager.wait_for_store(vec![
        "conn-1".to_owned(),
        "conn-2".to_owned(),
        "metrics".to_owned(),
    ]);
    let started = Instant::now();
    assert!(manager.stop().success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stop took {:?}",
        started.elapsed()
    );
}

/// Started through a link in a sticky directory (`/tmp`) that another user owns: that user can
/// point the link elsewhere between the preflight and the execve. Refused.
#[test]
fn an_upgrade_through_a_link_another_user_owns_is_refused() {
    let uid: u32 = common::nobody_uid();
    let sticky = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        sticky.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let link = sticky.path().join("permission-broker");
    std::os::unix::fs::symlink(&program, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(uid), Some(uid)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n").unwrap();
    let daemon = common::Daemon::launch(
        dir,
        &policy,
        Launch {
            program: Some(&link),
            ..Launch::default()
        },
    );
    common::signal(&daemon, Signal::SIGUSR2);
    let refused = daemon.wait_for_log(&["upgrade refused"]);
    assert!(refused.contains("is owned by uid"), "{refused}");
    // The same link, root's: the upgrade goes through.
    std::os::unix::fs::lchown(&link, Some(0), Some(0)).unwrap();
    common::signal(&daemon, Signal::SIGUSR2);
    daemon.wait_for_log(&["took over from the previous process"]);
}

/// With `reload = "signal"` a file written in place is served only when committed; an upgrade
/// loaded the files again and served it uncommitted (with no reload on record). Now the upgrade
/// is refused while the files on disk are not the serving revision; committed, it goes through.
/// Without commit mode a revision that changed across an upgrade is on record as a reload.
#[test]
fn an_upgrade_serves_only_what_is_committed_and_a_changed_revision_is_on_record() {
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let log_arg = log.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n").unwrap();
    let daemon = common::Daemon::launch(
        dir,
        &policy,
        Launch {
            extra: &["--reload", "signal", "--decision-log", &log_arg],
            program: Some(&program),
            ..Launch::default()
        },
    );
    let mut conn = RawConn::open(&daemon);
    let mut id = 0;
    let mut ask = |conn: &mut RawConn| {
        id += 1;
        conn.send(read_frame(id, None, "/tmp/x").as_bytes());
        conn.answer()
    };
    assert!(ask(&mut conn).contains("deny"));
    // Written in place, not committed.
    std::fs::write(&policy, ALLOW_TMP).unwrap();
    common::signal(&daemon, Signal::SIGUSR2);
    let refused = daemon.wait_for_log(&["upgrade refused"]);
    assert!(refused.contains("not the serving"), "{refused}");
    assert!(ask(&mut conn).contains("deny"), "served uncommitted");
    // Committed: served, and then the upgrade goes through.
    common::signal(&daemon, Signal::SIGHUP);
    daemon.wait_for_log(&["policy reloaded"]);
    assert!(ask(&mut conn).contains("allow"));
    common::signal(&daemon, Signal::SIGUSR2);
    daemon.wait_for_log(&["took over from the previous process"]);
    assert!(ask(&mut conn).contains("allow"));
    drop(conn);
    let mut daemon = daemon;
    assert!(common::sigterm_and_wait(&mut daemon).success());

    // Watch mode without a watcher: the upgrade is what loads the edit, and says so.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n").unwrap();
    let log2 = logs.path().join("watch.jsonl");
    let log2_arg = log2.display().to_string();
    let daemon = common::Daemon::launch(
        dir,
        &policy,
        Launch {
            extra: &[
                "--no-watch",
                "--poll-interval",
                "3600",
                "--decision-log",
                &log2_arg,
            ],
            program: Some(&program),
            ..Launch::default()
        },
    );
    std::fs::write(&policy, ALLOW_TMP).unwrap();
    common::signal(&daemon, Signal::SIGUSR2);
    daemon.wait_for_log(&["took over from the previous process"]);
    let mut asker = common::Asker::open(&daemon);
    assert!(asker.allowed("/tmp/x"));
    let mut daemon = daemon;
    assert!(common::sigterm_and_wait(&mut daemon).success());
    let reloads: Vec<Value> = std::fs::read_to_string(&log2)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "reload")
        .collect();
    assert_eq!(reloads.len(), 1, "{reloads:#?}");
    assert_eq!(reloads[0]["trigger"], "handover (execve)");
    assert_ne!(reloads[0]["from"], reloads[0]["to"]);
}
