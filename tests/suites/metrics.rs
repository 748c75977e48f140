//! The metrics endpoint against the built daemon: each counter after a known mix of allows,
//! denies, faults and reloads, checked by `promtool`; `/healthz` through a policy's life; the
//! socket the service manager passes as `metrics`; an upgrade in place that keeps it; and what a
//! hostile scraper can and cannot do.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{BROKER, Daemon, HttpResponse, RawConn, http_get, read_frame, samples};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const POLICY: &str = r#"version = 1

[[rule]]
id = "app"
effect = "allow"
permissions = ["read"]
paths = ["/srv/app"]

[[rule]]
id = "app-secrets"
effect = "deny"
permissions = ["read"]
paths = ["/srv/app/secrets"]
reason = "secrets stay secret"

[[rule]]
id = "env"
effect = "allow"
permissions = ["env"]
names = ["HOME"]
"#;

fn env_frame(id: u32, name: &str) -> String {
    format!(
        r#"{{"v":1,"id":{id},"datetime":"2026-11-23T16:30:45.262660275+00:00","permission":"env","value":"{name}"}}"#
    ) + "\n"
}

/// The samples of one scrape, and its text.
fn scrape(addr: SocketAddr) -> (BTreeMap<String, f64>, String) {
    let response = http_get(addr, "/metrics", None);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    (samples(&response.body), response.body)
}

/// Scrapes until `ready` holds (a decision is counted just after its answer leaves), at most 10 s.
fn scrape_until(
    addr: SocketAddr,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> (BTreeMap<String, f64>, String) {
    let start = Instant::now();
    loop {
        let (samples, text) = scrape(addr);
        if ready(&samples) || start.elapsed() > Duration::from_secs(10) {
            return (samples, text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample `{key}` in {samples:#?}"))
}

fn decisions(permission: &str, decision: &str, answered: &str) -> String {
    format!(
        r#"permission_broker_decisions_total{{permission="{permission}",decision="{decision}",answered="{answered}",mode="enforce"}}"#
    )
}

fn rule(id: &str) -> String {
    format!(r#"permission_broker_rule_decisions_total{{rule="{id}"}}"#)
}

fn fault(kind: &str) -> String {
    format!(r#"permission_broker_protocol_faults_total{{kind="{kind}"}}"#)
}

/// `promtool check metrics` finds nothing to say about `text`.
fn assert_promtool_passes(text: &str) {
    let mut child = Command::new(common::promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is unpacked by scripts/test.sh (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

fn revision_of(samples: &BTreeMap<String, f64>) -> String {
    let info: Vec<&String> = samples
        .keys()
        .filter(|k| k.starts_with("permission_broker_policy_info{"))
        .collect();
    assert_eq!(info.len(), 1, "{info:?}");
    let rest = &info[0][info[0].find("revision=\"").unwrap() + 10..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[test]
fn a_scrape_counts_a_known_mix_of_decisions_faults_and_reloads_exactly() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let log_arg = log.display().to_string();
    let mut daemon = Daemon::start(
        POLICY,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--decision-log",
            &log_arg,
            "--reload",
            "signal",
        ],
    );
    let addr = common::metrics_addr(&daemon);
    let (before, text) = scrape(addr);
    assert_promtool_passes(&text);
    let first_revision = revision_of(&before);
    assert_eq!(value(&before, &decisions("read", "allow", "allow")), 0.0);

    // Allows, denies by a rule and by default, and an env check, on one connection.
    let mut conn = RawConn::open(&daemon);
    let asks = [
        ("/srv/app/a", true),
        ("/srv/app/b", true),
        ("/srv/app/c", true),
        ("/srv/app/secrets/key", false),
        ("/srv/app/secrets/other", false),
        ("/etc/passwd", false),
    ];
    for (i, (path, allowed)) in asks.iter().enumerate() {
        conn.send(read_frame(i as u32 + 1, None, path).as_bytes());
        let answer = conn.answer();
        assert_eq!(answer.contains("\"allow\""), *allowed, "{path}: {answer}");
    }
    conn.send(env_frame(7, "HOME").as_bytes());
    assert!(conn.answer().contains("\"allow\""));
    // One fault of each kind a peer can cause at once, each on its connection.
    let faults: [(&str, Vec<u8>); 6] = [
        ("json", b"not json\n".to_vec()),
        ("schema", b"{\"v\":1,\"id\":1}\n".to_vec()),
        ("not_utf8", b"\xff\xfe\n".to_vec()),
        ("blank", b"\n".to_vec()),
        (
            "pid_mismatch",
            read_frame(1, Some(1), "/srv/app/a").into_bytes(),
        ),
        (
            "id_order",
            (read_frame(5, None, "/srv/app/d") + &read_frame(3, None, "/srv/app/e")).into_bytes(),
        ),
    ];
    for (kind, bytes) in &faults {
        let mut bad = RawConn::open(&daemon);
        bad.send_hostile(bytes);
        if *kind == "id_order" {
            assert!(bad.answer().contains("\"allow\""), "id 5 is answered");
        }
        bad.assert_closed_unanswered(kind);
    }
    let (after, text) = scrape_until(addr, |s| {
        s.get("permission_broker_decision_duration_seconds_count") == Some(&8.0)
    });
    assert_promtool_passes(&text);
    assert_eq!(value(&after, &decisions("read", "allow", "allow")), 4.0);
    assert_eq!(value(&after, &decisions("read", "deny", "deny")), 3.0);
    assert_eq!(value(&after, &decisions("env", "allow", "allow")), 1.0);
    assert_eq!(value(&after, &decisions("net", "deny", "deny")), 0.0);
    assert_eq!(value(&after, &rule("app")), 4.0);
    assert_eq!(value(&after, &rule("app-secrets")), 2.0);
    assert_eq!(value(&after, &rule("default")), 1.0);
    assert_eq!(value(&after, &rule("env")), 1.0);
    assert_eq!(value(&after, &rule("other")), 0.0);
    assert_eq!(
        value(&after, "permission_broker_decision_duration_seconds_count"),
        8.0
    );
    assert_eq!(
        value(
            &after,
            r#"permission_broker_decision_duration_seconds_bucket{le="+Inf"}"#
        ),
        8.0
    );
    let sum = value(&after, "permission_broker_decision_duration_seconds_sum");
    assert!(sum > 0.0 && sum < 8.0 * 5.0, "{sum}");
    for (kind, _) in &faults {
        assert_eq!(value(&after, &fault(kind)), 1.0, "{kind}");
    }
    for kind in [
        "oversize",
        "frame_timeout",
        "write_timeout",
        "truncated",
        "io",
    ] {
        assert_eq!(value(&after, &fault(kind)), 0.0, "{kind}");
    }
    assert_eq!(
        value(&after, "permission_broker_connections_accepted_total"),
        7.0
    );
    assert_eq!(value(&after, "permission_broker_connections_open"), 1.0);
    // Every decision and fault is a record in the file, and counted written.
    let records = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""kind":"decision""#) || l.contains(r#""kind":"fault""#))
        .count();
    assert_eq!(records, 8 + faults.len());
    assert_eq!(
        value(
            &after,
            "permission_broker_decision_log_records_written_total"
        ),
        records as f64
    );
    assert_eq!(
        value(&after, "permission_broker_decision_log_overloaded_total"),
        0.0
    );
    assert_eq!(
        value(&after, "permission_broker_decision_log_queue_depth"),
        0.0
    );

    // A failed reload: the old revision serves, the failure is counted and shown.
    let policy = daemon.dir.path().join("policy.toml");
    std::fs::write(&policy, "version = 1\n[[rule]]\nid = \"broken\"\n").unwrap();
    common::signal(&daemon, Signal::SIGHUP);
    daemon.wait_for_log(&["policy reload failed"]);
    let (failed, text) = scrape(addr);
    assert_promtool_passes(&text);
    assert_eq!(
        value(
            &failed,
            r#"permission_broker_reloads_total{outcome="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &failed,
            r#"permission_broker_reloads_total{outcome="swapped"}"#
        ),
        0.0
    );
    assert_eq!(value(&failed, "permission_broker_reload_failing"), 1.0);
    assert_eq!(revision_of(&failed), first_revision);
    let health = http_get(addr, "/healthz", None);
    assert_eq!(health.status, 200, "the last good policy still serves");
    assert!(health.body.contains(&first_revision), "{}", health.body);
    assert!(
        health.body.contains("last reload FAILED"),
        "{}",
        health.body
    );

    // A good one: swapped in, and everything says the new revision.
    let loaded_at = value(
        &failed,
        "permission_broker_last_good_load_timestamp_seconds",
    );
    std::fs::write(
        &policy,
        format!("{POLICY}\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"write\"]\npaths = [\"/tmp\"]\n"),
    )
    .unwrap();
    common::signal(&daemon, Signal::SIGHUP);
    daemon.wait_for_log(&["policy restored", "the new revision serves"]);
    let (swapped, text) = scrape(addr);
    assert_promtool_passes(&text);
    let second_revision = revision_of(&swapped);
    assert_ne!(second_revision, first_revision);
    assert!(swapped.contains_key(&format!(
        r#"permission_broker_policy_info{{revision="{second_revision}",rules="4",mode="enforce"}}"#
    )));
    assert_eq!(
        value(
            &swapped,
            r#"permission_broker_reloads_total{outcome="swapped"}"#
        ),
        1.0
    );
    assert_eq!(value(&swapped, "permission_broker_reload_failing"), 0.0);
    assert!(
        value(
            &swapped,
            "permission_broker_last_good_load_timestamp_seconds"
        ) > loaded_at
    );
    let health = http_get(addr, "/healthz", None);
    assert_eq!(health.status, 200);
    assert!(health.body.contains(&second_revision), "{}", health.body);
    assert!(!health.body.contains("FAILED"), "{}", health.body);
    // The new rule has a label of its own; the counts so far are kept.
    assert_eq!(value(&swapped, &rule("tmp")), 0.0);
    assert_eq!(value(&swapped, &rule("app")), 4.0);

    drop(conn);
    let (closed, _) = scrape_until(addr, |s| {
        s.get("permission_broker_connections_open") == Some(&0.0)
    });
    assert_eq!(value(&closed, "permission_broker_connections_open"), 0.0);
    assert!(common::sigterm_and_wait(&mut daemon).success());
}

#[test]
fn prometheus_gets_openmetrics_and_everything_else_the_text_format() {
    let daemon = Daemon::start(POLICY, &["--metrics-listen", "127.0.0.1:0"]);
    let addr = common::metrics_addr(&daemon);
    // Prometheus's own Accept header.
    let open = http_get(
        addr,
        "/metrics",
        Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ),
    );
    assert_eq!(open.status, 200);
    assert_eq!(
        open.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    assert!(
        open.body
            .contains("# TYPE permission_broker_protocol_faults counter")
    );
    assert!(
        open.body
            .contains("# UNIT permission_broker_decision_duration_seconds seconds")
    );
    let plain = http_get(addr, "/metrics", Some("text/plain"));
    assert_eq!(
        plain.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(!plain.body.contains("# EOF"));
    assert!(
        plain
            .body
            .contains("# TYPE permission_broker_protocol_faults_total counter")
    );
    // The same series either way (bucket bounds are written `1e-05` in one, `0.00001` in the
    // other: compared as numbers).
    let keys = |r: &HttpResponse| {
        samples(&r.body)
            .into_keys()
            .map(|key| match key.split_once("{le=\"") {
                Some((name, le)) => {
                    let bound = le.trim_end_matches("\"}");
                    let bound: f64 = bound.replace("+Inf", "inf").parse().unwrap();
                    format!("{name}{{le={bound}}}")
                }
                None => key,
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(keys(&open), keys(&plain));
}

#[test]
fn only_two_paths_are_served_and_never_on_the_brokers_socket() {
    let daemon = Daemon::start(POLICY, &["--metrics-listen", "127.0.0.1:0"]);
    let addr = common::metrics_addr(&daemon);
    for path in [
        "/",
        "/metrics/",
        "/healthz/x",
        "/debug/pprof",
        "/../etc/passwd",
    ] {
        assert_eq!(http_get(addr, path, None).status, 404, "{path}");
    }
    let post = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&post.stdout), "405");
    // HEAD is served, without a body.
    let head = Command::new("curl")
        .args([
            "-sS",
            "-I",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
        ])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout), "200 0");
    // HTTP on the broker's socket is a protocol fault like any other bytes that are not a frame.
    let mut conn = RawConn::open(&daemon);
    conn.send_hostile(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.assert_closed_unanswered("HTTP on the broker's socket");
}

#[test]
fn healthz_says_503_while_the_first_policy_is_loading() {
    // The policy is on a mount that never answers: the first load waits on it.
    let (_root, mount) = common::StalledMount::open_to_everyone();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(&*BROKER)
        .args(["serve", "--metrics-listen", "127.0.0.1:0", "--socket"])
        .arg(dir.path().join("broker.sock"))
        .arg("--policy")
        .arg(mount.dir.join("policy.toml"))
        .env("RUST_LOG", "permission_broker=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("serving metrics on") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no metrics line");
    }
    let addr = common::metrics_addr_in(&line);
    let health = http_get(addr, "/healthz", None);
    assert_eq!(health.status, 503, "{}", health.body);
    assert!(
        health.body.contains("no policy is loaded yet"),
        "{}",
        health.body
    );
    // The counters are served meanwhile, and pass the checks.
    let metrics = http_get(addr, "/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(
        !metrics.body.contains("policy_info"),
        "no policy to describe"
    );
    assert_promtool_passes(&metrics.body);
    assert!(
        !dir.path().join("broker.sock").exists(),
        "the broker's socket waits for the policy"
    );
    // The mount goes away: the policy cannot be read, and the daemon does not start.
    drop(mount);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(64));
    let _ = child.stdout.take().unwrap().read_to_end(&mut Vec::new());
}

/// A free loopback port (bound and released: the tests that pass it on bind it again at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_socket_the_service_manager_passes_as_metrics_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let port = free_port();
    // Two socket units, as systemd passes them: the broker's (named after its unit) and the
    // metrics unit's (FileDescriptorName=metrics). --metrics-listen names another port: the
    // passed socket wins.
    let mut activator = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&socket)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--fdname=permission-broker.socket:metrics")
        .arg(&*BROKER)
        .args([
            "serve",
            "--socket",
            "/nonexistent/unused.sock",
            "--metrics-listen",
        ])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--policy")
        .arg(&policy)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd) is needed");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    common::capture_lines(activator.stderr.take().unwrap(), log.clone());
    common::wait_for_line(&log, &["Listening on", &port.to_string()]);
    // A scrape is what starts the service here: its connection waits in the socket's queue.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    let health = loop {
        let health = http_get(addr, "/healthz", None);
        if health.status == 200 || start.elapsed() > Duration::from_secs(10) {
            break health;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(health.status, 200, "{}", health.body);
    common::wait_for_line(&log, &["metrics_listen is ignored"]);
    let mut conn = RawConn::open_path(&socket);
    conn.send(read_frame(1, None, "/srv/app/x").as_bytes());
    assert!(conn.answer().contains("\"allow\""));
    let (samples, text) = scrape_until(addr, |s| {
        s.get(&decisions("read", "allow", "allow")) == Some(&1.0)
    });
    assert_eq!(value(&samples, &decisions("read", "allow", "allow")), 1.0);
    assert_promtool_passes(&text);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(activator.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert!(activator.wait().unwrap().success());
}

#[test]
fn an_upgrade_in_place_keeps_serving_metrics_on_the_same_socket() {
    let daemon = Daemon::start(POLICY, &["--metrics-listen", "127.0.0.1:0"]);
    let addr = common::metrics_addr(&daemon);
    let mut conn = RawConn::open(&daemon);
    conn.send(read_frame(1, None, "/srv/app/x").as_bytes());
    assert!(conn.answer().contains("\"allow\""));
    // Health checked all through the upgrade: never refused, and never "starting" (the new
    // image serves the socket once its policy loaded; scrapes wait in the queue meanwhile).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(http_get(addr, "/healthz", None).status);
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    common::signal(&daemon, Signal::SIGUSR2);
    daemon.wait_for_log(&["took over from the previous process"]);
    let lines = daemon.wait_for_logs(&["serving metrics on http://"], 2);
    assert_eq!(common::metrics_addr_in(&lines), addr, "the same socket");
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    assert!(seen.len() > 5, "{seen:?}");
    assert!(seen.iter().all(|s| *s == 200), "{seen:?}");
    let (samples, text) = scrape(addr);
    assert_promtool_passes(&text);
    // A new process: its counters start again (Prometheus reads that as a counter reset), and
    // the connection it took over is counted.
    assert_eq!(
        value(&samples, "permission_broker_connections_adopted_total"),
        1.0
    );
    assert_eq!(value(&samples, "permission_broker_connections_open"), 1.0);
    conn.send(read_frame(2, None, "/etc/shadow").as_bytes());
    assert!(conn.answer().contains("\"deny\""));
    let (samples, _) = scrape_until(addr, |s| {
        s.get(&decisions("read", "deny", "deny")) == Some(&1.0)
    });
    assert_eq!(value(&samples, &decisions("read", "deny", "deny")), 1.0);
    assert_eq!(value(&samples, &decisions("read", "allow", "allow")), 0.0);
}

#[test]
fn a_metrics_address_that_cannot_be_bound_costs_the_metrics_not_the_decisions() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let daemon = Daemon::start(POLICY, &["--metrics-listen", &addr]);
    daemon.wait_for_log(&[
        "cannot serve metrics on",
        "serving decisions without metrics",
    ]);
    let mut conn = RawConn::open(&daemon);
    conn.send(read_frame(1, None, "/srv/app/x").as_bytes());
    assert!(conn.answer().contains("\"allow\""));
    // A malformed address is a configuration error, like any other.
    let output = Command::new(&*BROKER)
        .args(["serve", "--metrics-listen", "localhost:9464", "--policy"])
        .arg(daemon.dir.path().join("policy.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--metrics-listen `localhost:9464` is not an IP address and port"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Attack: a local user opens hundreds of connections to the endpoint that send nothing or
/// half a request (any user can), and keeps them open. Before, each held one of 16 places until
/// its header timeout, and every scrape behind them timed out. Expected: decisions are answered
/// meanwhile (they never share a thread with the endpoint), a scraper is answered at once (the
/// oldest connection without a request gives up its place), and the idle ones are closed.
#[test]
fn a_scraper_that_stalls_the_endpoint_costs_only_the_metrics() {
    let daemon = Daemon::start(POLICY, &["--metrics-listen", "127.0.0.1:0"]);
    let addr = common::metrics_addr(&daemon);
    // Silent connections, and half-sent requests.
    let stalled: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
            }
            s
        })
        .collect();
    let mut conn = RawConn::open(&daemon);
    let start = Instant::now();
    for id in 1..=200 {
        conn.send(read_frame(id, None, "/srv/app/x").as_bytes());
        assert!(conn.answer().contains("\"allow\""));
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "200 decisions took {took:?} while the endpoint was stalled"
    );
    // A scraper gets through while they are all still open, well before any header timeout
    // (2 s) could have freed a place: three in a row.
    for _ in 0..3 {
        let start = Instant::now();
        let health = http_get(addr, "/healthz", None);
        assert_eq!(health.status, 200);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "a scrape behind 200 idle connections took {:?}",
            start.elapsed()
        );
    }
    // The idle ones were closed by the daemon, not left open.
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest);
        assert!(
            read.is_ok()
                || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "a stalled scrape was left open: {read:?}"
        );
    }
}

/// Runs `promtool ARGS` in config/prometheus/; its output, after asserting it succeeded.
fn promtool_in_config(args: &[&str]) -> String {
    let output = Command::new(common::promtool())
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/prometheus"))
        .output()
        .expect("promtool is unpacked by scripts/test.sh (Debian package prometheus)");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn the_example_alert_rules_pass_promtool_and_fire_when_they_should() {
    let checked = promtool_in_config(&["check", "rules", "permission-broker.rules.yml"]);
    assert!(checked.contains("SUCCESS: 3 rules found"), "{checked}");
    // Each alert fires on the series that should make it fire, and not before (the cases).
    let tested = promtool_in_config(&["test", "rules", "permission-broker.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    let config = promtool_in_config(&["check", "config", "prometheus.yml"]);
    assert!(config.contains("SUCCESS: 1 rule files found"), "{config}");
    // Every metric the rules use is one the daemon exports.
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/prometheus/permission-broker.rules.yml"),
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl").display().to_string();
    let daemon = Daemon::start(
        POLICY,
        &["--metrics-listen", "127.0.0.1:0", "--decision-log", &log],
    );
    let (exported, _) = scrape(common::metrics_addr(&daemon));
    for name in [
        "permission_broker_decisions_total",
        "permission_broker_reload_failing",
        "permission_broker_decision_log_overloaded_total",
        "permission_broker_rule_decisions_total",
    ] {
        assert!(rules.contains(name), "{name}");
        assert!(
            exported
                .keys()
                .any(|k| k == name || k.starts_with(&format!("{name}{{"))),
            "{name} is not exported"
        );
    }
}

#[test]
fn refused_connections_are_counted_by_reason() {
    // allowed_uids without the tests' uid (root): every connection is refused.
    let daemon = Daemon::start(
        POLICY,
        &["--metrics-listen", "127.0.0.1:0", "--allowed-uids", "12345"],
    );
    let addr = common::metrics_addr(&daemon);
    for _ in 0..3 {
        let mut conn = RawConn::open(&daemon);
        conn.send_hostile(read_frame(1, None, "/srv/app/x").as_bytes());
        conn.assert_closed_unanswered("a uid not in allowed_uids");
    }
    let (samples, _) = scrape(addr);
    let refused = |why: &str| {
        value(
            &samples,
            &format!(r#"permission_broker_connections_refused_total{{reason="{why}"}}"#),
        )
    };
    assert_eq!(refused("allowed_uids"), 3.0);
    assert_eq!(refused("per_uid_share"), 0.0);
    // One connection per uid: the second is refused at accept.
    let daemon = Daemon::start(
        POLICY,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-connections-per-uid",
            "1",
        ],
    );
    let addr = common::metrics_addr(&daemon);
    let mut first = RawConn::open(&daemon);
    first.send(read_frame(1, None, "/srv/app/x").as_bytes());
    assert!(first.answer().contains("\"allow\""));
    let mut second = RawConn::open(&daemon);
    second.send_hostile(read_frame(1, None, "/srv/app/x").as_bytes());
    second.assert_closed_unanswered("over the uid's share");
    let (samples, _) = scrape(addr);
    assert_eq!(
        value(
            &samples,
            r#"permission_broker_connections_refused_total{reason="per_uid_share"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "permission_broker_connections_accepted_total"),
        2.0
    );
    assert_eq!(value(&samples, "permission_broker_connections_open"), 1.0);
}

#[test]
fn a_full_log_disk_and_a_stalled_mount_show_in_their_counters() {
    // A decision log on a file system that is full: the answer waits decision_log_max_wait for
    // its record, then the connection is closed unanswered.
    let dir = tempfile::tempdir().unwrap();
    let fs = common::Tmpfs::new(&dir.path().join("full"), "64k");
    let log = fs.0.join("decisions.jsonl");
    std::fs::write(&log, "").unwrap();
    let filler = fs.0.join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        while file.write_all(&[0u8; 4096]).is_ok() {}
    }
    let (_root, mount) = common::StalledMount::open_to_everyone();
    let daemon = Daemon::start(
        POLICY,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--decision-log",
            log.to_str().unwrap(),
            "--decision-log-max-wait",
            "0.5",
            "--request-deadline",
            "0.5",
        ],
    );
    let addr = common::metrics_addr(&daemon);
    let mut conn = RawConn::open(&daemon);
    conn.send(read_frame(1, None, "/srv/app/x").as_bytes());
    conn.assert_closed_unanswered("a record that cannot be written");
    let (full, _) = scrape_until(addr, |s| {
        s.get("permission_broker_decision_log_overloaded_total") == Some(&1.0)
    });
    assert_eq!(
        value(&full, "permission_broker_decision_log_overloaded_total"),
        1.0
    );
    assert!(value(&full, "permission_broker_decision_log_write_errors_total") >= 1.0);
    assert_eq!(
        value(
            &full,
            "permission_broker_decision_log_records_written_total"
        ),
        0.0
    );
    assert_eq!(value(&full, &fault("log_overloaded")), 1.0);
    // Unanswered, so not counted as decided.
    assert_eq!(
        value(&full, "permission_broker_decision_duration_seconds_count"),
        0.0
    );
    // Space again: what waited is written, and the next decision is answered and on record.
    std::fs::remove_file(&filler).unwrap();
    let mut conn = RawConn::open(&daemon);
    conn.send(read_frame(1, None, "/srv/app/x").as_bytes());
    assert!(conn.answer().contains("\"allow\""));
    // A read on a mount that never answers: denied at the deadline, its lookup abandoned.
    let stalled = format!("{}/file", mount.dir.display());
    conn.send(read_frame(2, None, &stalled).as_bytes());
    let answer = conn.answer();
    assert!(
        answer.contains("\"deny\"") && answer.contains("deadline"),
        "{answer}"
    );
    let (stuck, text) = scrape_until(addr, |s| {
        s.get("permission_broker_decision_duration_seconds_count") == Some(&2.0)
    });
    assert_promtool_passes(&text);
    assert_eq!(
        value(&stuck, "permission_broker_deadline_denials_total"),
        1.0
    );
    assert_eq!(value(&stuck, "permission_broker_blocking_abandoned"), 1.0);
    assert_eq!(value(&stuck, &rule("unresolvable")), 1.0);
    assert_eq!(value(&stuck, &decisions("read", "deny", "deny")), 1.0);
    // The deadline's answer took the deadline (0.5 s) at least: above the 0.25 s bucket (the
    // allow before it may have waited for the log's retry too).
    assert!(value(&stuck, "permission_broker_decision_duration_seconds_sum") >= 0.5);
    assert!(
        value(
            &stuck,
            r#"permission_broker_decision_duration_seconds_bucket{le="0.25"}"#
        ) <= 1.0
    );
    let written = value(
        &stuck,
        "permission_broker_decision_log_records_written_total",
    );
    // The mount goes away: the abandoned lookup ends.
    drop(mount);
    let (after, _) = scrape_until(addr, |s| {
        s.get("permission_broker_blocking_abandoned") == Some(&0.0)
    });
    assert_eq!(value(&after, "permission_broker_blocking_abandoned"), 0.0);
    let records = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""kind":"decision""#) || l.contains(r#""kind":"fault""#))
        .count();
    assert_eq!(records as f64, written, "every record written is counted");
}

/// Runs `curl URL` and parses its JSON (Prometheus's API).
fn get_json(url: &str) -> serde_json::Value {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null)
}

/// The real consumer: Prometheus itself (the server from the same Debian package, run in a
/// temporary directory) scrapes the daemon with the shipped scrape configuration and rules.
#[test]
fn prometheus_scrapes_the_daemon_with_the_shipped_configuration() {
    let daemon = Daemon::start(POLICY, &["--metrics-listen", "127.0.0.1:0"]);
    let addr = common::metrics_addr(&daemon);
    let mut conn = RawConn::open(&daemon);
    for id in 1..=3 {
        conn.send(read_frame(id, None, "/srv/app/secrets/k").as_bytes());
        assert!(conn.answer().contains("\"deny\""));
    }
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/prometheus");
    let config = std::fs::read_to_string(shipped.join("prometheus.yml"))
        .unwrap()
        .replace("127.0.0.1:9464", &addr.to_string())
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        shipped.join("permission-broker.rules.yml"),
        dir.path().join("permission-broker.rules.yml"),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let server = common::promtool().with_file_name("prometheus");
    let mut prometheus = Command::new(&server)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the prometheus server is unpacked beside promtool by scripts/test.sh");
    let query = |q: &str| get_json(&format!("http://{web}/api/v1/query?query={q}"));
    let start = Instant::now();
    let scraped = loop {
        let result = query("sum(permission_broker_decisions_total%7Bdecision=%22deny%22%7D)");
        let value = result["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_owned);
        if value.is_some() || start.elapsed() > Duration::from_secs(30) {
            break value;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        scraped.as_deref(),
        Some("3"),
        "Prometheus read the three denies"
    );
    let up = query("up%7Bjob=%22permission-broker%22%7D");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    // Typed as the daemon says, and named as OpenMetrics names a counter's family (without
    // `_total`): Prometheus asked for OpenMetrics and got it.
    let metadata = get_json(&format!(
        "http://{web}/api/v1/metadata?metric=permission_broker_decisions"
    ));
    assert_eq!(
        metadata["data"]["permission_broker_decisions"][0]["type"], "counter",
        "{metadata}"
    );
    let rules = get_json(&format!("http://{web}/api/v1/rules"));
    let names: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "PermissionBrokerDenyRateSpike",
            "PermissionBrokerReloadFailing",
            "PermissionBrokerDecisionLogOverloaded"
        ]
    );
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

/// A TCP connection to `addr` started and not waited for (`None` if the kernel refused it).
fn connect_without_waiting(addr: SocketAddr) -> Option<std::os::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, connect, socket_with};
    let fd = socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    match connect(&fd, &addr) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => Some(fd),
        Err(_) => None,
    }
}

/// Attack: bursts of hundreds of connections opened at once and closed, again and again, while
/// a scraper scrapes. Before, the endpoint accepted a whole burst before the scraper's task
/// had read its request, and closed the scraper's connection as the oldest that had sent none
/// (a red-team pass measured 61% of scrapes succeeding). Expected: every scrape succeeds.
#[test]
fn bursts_of_silent_connections_never_close_a_scrapers_connection() {
    let daemon = Daemon::start(POLICY, &["--metrics-listen", "127.0.0.1:0"]);
    let addr = common::metrics_addr(&daemon);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bursts: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut opened = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && opened < 200_000 {
                    // Non-blocking connects: the burst is in the kernel's queue at once.
                    let burst: Vec<_> = (0..200)
                        .filter_map(|_| connect_without_waiting(addr))
                        .collect();
                    opened += burst.len();
                    std::thread::sleep(Duration::from_millis(2));
                    drop(burst);
                }
                opened
            })
        })
        .collect();
    let mut failed = Vec::new();
    for i in 0..20 {
        let output = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .arg(format!("http://{addr}/metrics"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&output.stdout).into_owned();
        if code != "200" {
            failed.push((
                i,
                code,
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened: usize = bursts.into_iter().map(|b| b.join().unwrap()).sum();
    assert!(
        opened > 2_000,
        "the bursts opened only {opened} connections"
    );
    assert!(
        failed.is_empty(),
        "scrapes failed during the bursts: {failed:?}"
    );
}

/// Whether the daemon has closed `stream` (EOF or reset) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => panic!("the daemon wrote to a connection that sent nothing"),
    }
}

/// The endpoint's limits as the README states them: a connection that sends nothing is closed
/// at the 2 s header timeout, not before; sixteen are held at once, and a seventeenth closes the
/// oldest idle one at once.
#[test]
fn sixteen_places_and_a_two_second_header_timeout() {
    let daemon = Daemon::start(POLICY, &["--metrics-listen", "127.0.0.1:0"]);
    let addr = common::metrics_addr(&daemon);
    let mut lone = TcpStream::connect(addr).unwrap();
    let start = Instant::now();
    assert!(closed_within(&mut lone, Duration::from_secs(10)));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "a silent connection was closed after {took:?}"
    );
    let mut held: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !closed_within(&mut held[0], Duration::from_millis(100)),
        "sixteen fit"
    );
    let _seventeenth = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut held[0], Duration::from_millis(1000)),
        "the seventeenth closes the oldest, before its header timeout"
    );
    assert!(
        !closed_within(&mut held[1], Duration::from_millis(100)),
        "and only the oldest"
    );
}
