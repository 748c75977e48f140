//! Load generator: N emulated Deno processes against the daemon, side by side with a do-nothing
//! floor responder on the same kind of socket, in one run. See BENCHMARKS.md.
//!
//! The floor is the fastest honest responder: a thread per connection blocking in `read`, as a
//! minimal C broker would be (a tokio floor is kept as an extra row). The generator blocks too:
//! each emulated process is one thread and one connection with strictly one request outstanding,
//! blocked in `read` for its answer, as Deno waits on its socket. It sends real frames from Deno
//! 2.9.6 (`crates/protocol/tests/data/frames-2.9.6.jsonl`, pid rewritten to ours so the daemon's
//! pid check passes) and checks every answer's id.
//!
//!   loadgen [--connections 1,64,256] [--seconds 2] [--rounds 3] [--svg FILE]
//!   loadgen --deno PATH        real Deno: 20,000 Deno.statSync calls, no broker / floor / daemon
//!   loadgen --scale            memory (idle, 10,000 idle connections, 10 million requests), start time
//!   loadgen --reload           reload time for 100,000 rules, and latency under a reload every 100 ms
//!   loadgen --metrics          the daemon with metrics on (scraped every second) beside it off
//!
//! Traffic goes only to Unix sockets in a temporary directory; every run is bounded in time or count.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

const FRAMES: &str = include_str!("../../../crates/protocol/tests/data/frames-2.9.6.jsonl");

/// (permission, value) pairs from the captured frames.
fn workload() -> Vec<(String, serde_json::Value)> {
    FRAMES
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["permission"].as_str().unwrap().to_owned(),
                v["value"].clone(),
            )
        })
        .collect()
}

/// The id of a request line, as the floor reads it: the digits after `"id":`.
fn id_of(line: &str) -> &str {
    line.split("\"id\":")
        .nth(1)
        .map(|rest| {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .unwrap_or("")
}

/// The floor: a thread per connection, blocking in `read`; answers every line `allow` with the
/// request's id, nothing else.
fn floor_blocking(listener: std::os::unix::net::UnixListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let mut write = stream.try_clone().unwrap();
                let mut read = std::io::BufReader::new(stream);
                let mut line = String::with_capacity(512);
                let mut out = Vec::with_capacity(64);
                loop {
                    line.clear();
                    match read.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    out.clear();
                    out.extend_from_slice(b"{\"id\":");
                    out.extend_from_slice(id_of(&line).as_bytes());
                    out.extend_from_slice(b",\"result\":\"allow\"}\n");
                    if write.write_all(&out).is_err() {
                        break;
                    }
                }
            })
            .unwrap();
    }
}

/// The tokio floor (an extra row): the same answers from an async task per connection.
async fn floor(listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut out = Vec::with_capacity(64);
            while let Ok(Some(line)) = lines.next_line().await {
                let id = line
                    .split("\"id\":")
                    .nth(1)
                    .map(|rest| {
                        rest.chars()
                            .take_while(char::is_ascii_digit)
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                out.clear();
                out.extend_from_slice(b"{\"id\":");
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(b",\"result\":\"allow\"}\n");
                if write.write_all(&out).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// When an emulated process stops: at `deadline`, or once `sent` reaches `limit` (all processes
/// together).
#[derive(Clone)]
struct Stop {
    warmup: Instant,
    deadline: Instant,
    sent: Arc<AtomicU64>,
    limit: u64,
}

/// What one emulated process saw.
#[derive(Default)]
struct Outcome {
    /// Latencies in ns, after warm-up.
    latencies: Vec<u32>,
    sent: u64,
    /// Requests not answered, or answered with the wrong id (the process stops at the first).
    failures: u64,
}

/// One emulated Deno process: sequential blocking requests until told to stop, on a thread of its
/// own (as Deno blocks its thread on the socket).
fn emulate(
    socket: &Path,
    offset: usize,
    work: &[(String, serde_json::Value)],
    stop: &Stop,
) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(stream) = std::os::unix::net::UnixStream::connect(socket) else {
        outcome.failures = 1;
        return outcome;
    };
    let mut write = stream.try_clone().unwrap();
    let mut read = std::io::BufReader::new(stream);
    let pid = std::process::id();
    let mut id: u32 = 0;
    let mut i = offset;
    let mut frame = String::with_capacity(256);
    let mut answer = String::with_capacity(256);
    let mut expected = String::with_capacity(32);
    while Instant::now() < stop.deadline && stop.sent.fetch_add(1, Ordering::Relaxed) < stop.limit {
        id += 1;
        let (permission, value) = &work[i % work.len()];
        i += 1;
        frame.clear();
        std::fmt::Write::write_fmt(
            &mut frame,
            format_args!(
                "{{\"v\":1,\"pid\":{pid},\"id\":{id},\"datetime\":\"2026-11-23T16:30:45.262660275+00:00\",\"permission\":\"{permission}\",\"value\":{value}}}\n"
            ),
        )
        .unwrap();
        answer.clear();
        let start = Instant::now();
        outcome.sent += 1;
        let answered = write.write_all(frame.as_bytes()).is_ok()
            && read.read_line(&mut answer).is_ok_and(|n| n > 0);
        let took = start.elapsed();
        expected.clear();
        std::fmt::Write::write_fmt(&mut expected, format_args!("{{\"id\":{id},")).unwrap();
        if !answered || !answer.starts_with(expected.as_str()) {
            outcome.failures += 1;
            break;
        }
        if start >= stop.warmup {
            outcome
                .latencies
                .push(u32::try_from(took.as_nanos()).unwrap_or(u32::MAX));
        }
    }
    outcome
}

struct Measured {
    connections: usize,
    requests: usize,
    seconds: f64,
    /// CPU time (user + system) the responder process spent per request sent, in µs.
    cpu_us: f64,
    failures: u64,
    p50: u32,
    p99: u32,
    p999: u32,
    max: u32,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// User + system CPU time of a process so far, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name (field 2) may contain spaces; the fields after it are fixed.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// `connections` emulated processes for `seconds` (after a 300 ms warm-up), or until `limit`
/// requests in all.
async fn measure(
    socket: &Path,
    responder: u32,
    connections: usize,
    seconds: f64,
    limit: u64,
) -> Measured {
    let work = Arc::new(workload());
    let cpu_before = cpu_ticks(responder);
    let warmup = Instant::now() + Duration::from_millis(300);
    let stop = Stop {
        warmup,
        deadline: warmup + Duration::from_secs_f64(seconds),
        sent: Arc::new(AtomicU64::new(0)),
        limit,
    };
    // One blocking thread per emulated process, started off the async threads.
    let socket = socket.to_path_buf();
    let (all, sent, failures) = tokio::task::spawn_blocking(move || {
        let threads: Vec<_> = (0..connections)
            .map(|c| {
                let (socket, work, stop) = (socket.clone(), work.clone(), stop.clone());
                std::thread::Builder::new()
                    .stack_size(128 << 10)
                    .spawn(move || emulate(&socket, c * 7, &work, &stop))
                    .unwrap()
            })
            .collect();
        let (mut all, mut sent, mut failures) = (Vec::new(), 0, 0);
        for t in threads {
            let outcome = t.join().unwrap();
            all.extend(outcome.latencies);
            sent += outcome.sent;
            failures += outcome.failures;
        }
        (all, sent, failures)
    })
    .await
    .unwrap();
    let mut all = all;
    let measured_for = warmup.elapsed().as_secs_f64().min(seconds);
    // Every request sent, warm-up included, cost the responder CPU; count them all.
    let cpu = (cpu_ticks(responder) - cpu_before) as f64 / ticks_per_second();
    if all.is_empty() {
        all.push(0);
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 - 1.0) * q) as usize];
    Measured {
        connections,
        cpu_us: cpu * 1e6 / sent.max(1) as f64,
        requests: all.len(),
        seconds: measured_for,
        failures,
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: *all.last().unwrap(),
    }
}

/// Writes the policy in `dir`: a fleet-like set of `rules` rules that also allows what the
/// captured frames ask, plus a `probe` rule that denies `/probe` with the reason `round <round>`,
/// so a client can tell which version of the file decided.
fn write_policy(dir: &Path, rules: usize, round: u64) -> PathBuf {
    // Generated once per size: writing a new round must not cost the machine a rule generation.
    static GENERATED: std::sync::Mutex<Vec<(usize, Arc<String>)>> =
        std::sync::Mutex::new(Vec::new());
    let toml = {
        let mut generated = GENERATED.lock().unwrap();
        match generated.iter().find(|(n, _)| *n == rules) {
            Some((_, toml)) => toml.clone(),
            None => {
                // The daemon is measured with the default settings, links resolved in the
                // peer's root (`realistic` writes `lexical` for the pure `decide` benchmark).
                let lexical = permission_broker_bench::realistic(rules).toml;
                let resolved = lexical.replacen("[defaults]\nsymlinks = \"lexical\"\n", "", 1);
                assert_ne!(resolved, lexical, "the workload's defaults changed");
                let toml = Arc::new(resolved);
                generated.push((rules, toml.clone()));
                toml
            }
        }
    };
    let policy = format!(
        "{}[[rule]]\nid = \"frames\"\neffect = \"allow\"\npermissions = [\"read\", \"write\"]\npaths = [\"/srv/app\", \"{}\", \"{}\"]\n\n[[rule]]\nid = \"probe\"\neffect = \"deny\"\npermissions = [\"read\"]\npaths = [\"/probe\"]\nreason = \"round {round}\"\n",
        toml,
        std::env::current_dir().unwrap().display(),
        dir.display()
    );
    // In a directory of its own: the daemon watches it, and files written beside the policy
    // (the decision log) would wake the watcher on every write.
    let policy_dir = dir.join("policy");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let path = policy_dir.join("policy.toml");
    let staged = policy_dir.join(".policy.toml.new");
    std::fs::write(&staged, policy).unwrap();
    std::fs::rename(&staged, &path).unwrap();
    path
}

/// The same policy with `symlinks = "lexical"`: no lookups in the peer's root. Measured beside
/// the default to show what the lookups cost (the kernel's part of the daemon's time).
fn lexical_policy(dir: &Path) -> PathBuf {
    let resolved = std::fs::read_to_string(write_policy(dir, 1000, 0)).unwrap();
    let at = resolved.find("[[rule]]").expect("a rule");
    let lexical = format!(
        "{}[defaults]\nsymlinks = \"lexical\"\n\n{}",
        &resolved[..at],
        &resolved[at..]
    );
    let lexical_dir = dir.join("lexical");
    std::fs::create_dir_all(&lexical_dir).unwrap();
    let path = lexical_dir.join("policy.toml");
    std::fs::write(&path, lexical).unwrap();
    path
}

struct Daemon {
    child: Child,
    ready_after: Duration,
}

/// Starts the daemon on `policy`; returns once it has printed its ready line.
/// The environment the shipped systemd unit gives the daemon (`Environment=` lines but
/// `FDSTORE`, which only a service manager's store gives meaning), so that what is measured is
/// the daemon as a fleet runs it.
fn unit_environment() -> Vec<(String, String)> {
    include_str!("../../../systemd/permission-broker.service")
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|l| l.split_once('='))
        .filter(|(name, _)| *name != "FDSTORE")
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

fn daemon(socket: &Path, policy: &Path, extra: &[&str], log: &str) -> Daemon {
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("permission-broker");
    let started = Instant::now();
    let mut child = Command::new(&binary)
        .args(["serve", "--socket"])
        .arg(socket)
        .arg("--policy")
        .arg(policy)
        .args(extra)
        .env("RUST_LOG", log)
        .envs(unit_environment())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo build --release -p permission-broker)",
                binary.display()
            )
        });
    let mut ready = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut ready).unwrap();
    let ready_after = started.elapsed();
    assert!(ready.contains("ready"), "{ready}");
    Daemon { child, ready_after }
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (`VmRSS`).
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a floor responder (`--floor`: blocking, thread per connection; `--floor-tokio`) in its
/// own process, so it pays the same cross-process wake-ups as the daemon.
fn floor_process(socket: &Path, kind: &str) -> Daemon {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(kind)
        .arg(socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    Daemon {
        child,
        ready_after: started.elapsed(),
    }
}

/// 20,000 `Deno.statSync` calls timed inside the script: µs per call.
fn deno_stat(deno: &Path, dir: &Path, broker: Option<&Path>) -> f64 {
    let script = dir.join("stat.ts");
    std::fs::write(dir.join("x.txt"), "x").unwrap();
    std::fs::write(
        &script,
        "const n = 20000;\nDeno.statSync('./x.txt');\nconst t0 = performance.now();\nfor (let i = 0; i < n; i++) Deno.statSync('./x.txt');\nconsole.log(((performance.now() - t0) * 1000 / n).toFixed(3));\n",
    )
    .unwrap();
    let mut cmd = Command::new(deno);
    cmd.arg("run")
        .arg("--no-config")
        .arg("--allow-read")
        .arg(&script)
        .current_dir(dir);
    cmd.env("DENO_DIR", dir.join("deno-dir"))
        .env("NO_COLOR", "1")
        .env_remove("DENO_PERMISSION_BROKER_PATH");
    if let Some(socket) = broker {
        cmd.env("DENO_PERMISSION_BROKER_PATH", socket);
    }
    let output = cmd.stderr(Stdio::null()).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN)
}

fn us(ns: u32) -> f64 {
    f64::from(ns) / 1000.0
}

/// The measured columns of a table row: requests/s, percentiles, CPU, failures.
fn cells(r: &Measured) -> String {
    format!(
        "{:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {}",
        r.rate(),
        us(r.p50),
        us(r.p99),
        us(r.p999),
        us(r.max),
        r.cpu_us,
        r.failures
    )
}

fn row(name: &str, r: &Measured) {
    println!("| {} | {name} | {} |", r.connections, cells(r));
}

fn table_header() {
    println!(
        "| connections | target | requests/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU µs/request | failures |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
}

/// `x` over `base` in every column, as a table row.
fn ratio_row(n: usize, name: &str, x: &Measured, base: &Measured) {
    println!(
        "| {n} | {name} | {:.2}x | {:.2}x | {:.2}x | {:.2}x | | {:.2}x | |",
        x.rate() / base.rate(),
        f64::from(x.p50) / f64::from(base.p50),
        f64::from(x.p99) / f64::from(base.p99),
        f64::from(x.p999) / f64::from(base.p999),
        x.cpu_us / base.cpu_us
    );
}

/// A target measured: its name, its process, its socket.
type Target = (&'static str, Daemon, PathBuf);

/// Measures every target at `n` connections in `rounds` alternating rounds (`after_round` between
/// them), prints the round with the median throughput of each, and returns those.
async fn median_rounds(
    targets: &[Target],
    n: usize,
    seconds: f64,
    rounds: usize,
    after_round: &dyn Fn(),
) -> Vec<Measured> {
    let mut results: Vec<Vec<Measured>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (t, (_, process, socket)) in targets.iter().enumerate() {
            results[t].push(measure(socket, process.pid(), n, seconds, u64::MAX).await);
        }
        after_round();
    }
    let mut medians = Vec::new();
    for ((name, _, _), mut runs) in targets.iter().zip(results) {
        runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let median = runs.swap_remove(runs.len() / 2);
        row(name, &median);
        medians.push(median);
    }
    medians
}

/// The default mode: floor, daemon and daemon with a decision log, at each connection count,
/// in alternating rounds; the round with the median throughput is reported for each.
async fn throughput(
    dir: &Path,
    connections: &[usize],
    seconds: f64,
    rounds: usize,
    svg: Option<&Path>,
    quick: bool,
) {
    let policy = write_policy(dir, 1000, 0);
    let mut targets = vec![
        (
            "floor (blocking, thread per connection)",
            floor_process(&dir.join("floor.sock"), "--floor"),
            dir.join("floor.sock"),
        ),
        (
            "daemon",
            daemon(&dir.join("daemon.sock"), &policy, &[], "warn"),
            dir.join("daemon.sock"),
        ),
        (
            "daemon + decision log",
            daemon(
                &dir.join("logged.sock"),
                &policy,
                &[
                    "--decision-log",
                    dir.join("decisions.jsonl").to_str().unwrap(),
                ],
                "warn",
            ),
            dir.join("logged.sock"),
        ),
        (
            "daemon + decision log, fdatasync",
            daemon(
                &dir.join("synced.sock"),
                &policy,
                &[
                    "--decision-log",
                    dir.join("synced.jsonl").to_str().unwrap(),
                    "--decision-log-sync",
                ],
                "warn",
            ),
            dir.join("synced.sock"),
        ),
        (
            "daemon, symlinks = \"lexical\" (no lookups, for the profile)",
            daemon(&dir.join("lexical.sock"), &lexical_policy(dir), &[], "warn"),
            dir.join("lexical.sock"),
        ),
        (
            "floor (tokio, for scale)",
            floor_process(&dir.join("tokio-floor.sock"), "--floor-tokio"),
            dir.join("tokio-floor.sock"),
        ),
    ];
    if quick {
        // The blocking floor, the daemon, the daemon with a log, and without lookups.
        targets.truncate(5);
        targets.remove(3);
    }
    let lexical_at = targets
        .iter()
        .position(|(name, _, _)| name.contains("lexical"))
        .expect("the lexical daemon is measured");
    table_header();
    let mut plotted = Vec::new();
    for &n in connections {
        let medians = median_rounds(&targets, n, seconds, rounds, &|| {
            // The log grows by every decision; keep the disk out of it. Removed, not truncated:
            // the daemon opens the path again at once (a truncation is reported as an error).
            let _ = std::fs::remove_file(dir.join("decisions.jsonl"));
            let _ = std::fs::remove_file(dir.join("synced.jsonl"));
        })
        .await;
        let (f, d, l) = (&medians[0], &medians[1], &medians[2]);
        let lexical = &medians[lexical_at];
        for (name, x, base) in [
            ("daemon/floor", d, f),
            ("logged/floor", l, f),
            ("logged/daemon", l, d),
            ("lexical/floor", lexical, f),
        ] {
            ratio_row(n, name, x, base);
        }
        plotted.push(medians);
    }
    // Issue 17's targets, as ratios measured in this run (medians of alternating rounds).
    println!("\n| target | measured | met |\n| --- | ---: | --- |");
    let at = |n: usize| {
        connections
            .iter()
            .position(|c| *c == n)
            .map(|i| &plotted[i])
    };
    let verdict = |name: String, value: f64, met: bool| {
        println!(
            "| {name} | {value:.2}x | {} |",
            if met { "yes" } else { "**no**" }
        );
    };
    if let Some(m) = at(1) {
        let p50 = f64::from(m[1].p50) / f64::from(m[0].p50);
        let p99 = f64::from(m[1].p99) / f64::from(m[0].p99);
        verdict(
            "1 connection, p50 ≤ 1.25x floor".to_owned(),
            p50,
            p50 <= 1.25,
        );
        verdict("1 connection, p99 ≤ 1.5x floor".to_owned(), p99, p99 <= 1.5);
    }
    for n in [64, 256] {
        if let Some(m) = at(n) {
            let rate = m[1].rate() / m[0].rate();
            verdict(
                format!("{n} connections, throughput ≥ 0.8x floor"),
                rate,
                rate >= 0.8,
            );
            let logged = m[2].rate() / m[0].rate();
            verdict(
                format!("{n} connections with the decision log, throughput ≥ 0.8x floor"),
                logged,
                logged >= 0.8,
            );
        }
    }
    if let Some(m) = at(64) {
        let cost = m[1].rate() / m[2].rate();
        verdict(
            "64 connections, log on ≤ 1.15x log off (time per request)".to_owned(),
            cost,
            cost <= 1.15,
        );
    }
    // The same ratios for the daemon that makes no lookups in the peer's root: what is left
    // between the two rows is the kernel's path lookups.
    println!(
        "\n| without lookups (`symlinks = \"lexical\"`), for the profile | measured |\n| --- | ---: |"
    );
    if let Some(m) = at(1) {
        let x = &m[lexical_at];
        println!(
            "| 1 connection, p50 | {:.2}x |\n| 1 connection, p99 | {:.2}x |",
            f64::from(x.p50) / f64::from(m[0].p50),
            f64::from(x.p99) / f64::from(m[0].p99)
        );
    }
    for n in [64, 256] {
        if let Some(m) = at(n) {
            println!(
                "| {n} connections, throughput | {:.2}x |",
                m[lexical_at].rate() / m[0].rate()
            );
        }
    }
    if let Some(path) = svg {
        std::fs::write(path, plot(&plotted)).unwrap();
        println!("\nplot written to {}", path.display());
    }
}

/// Scrapes `GET /metrics` from `port` once a second until `stop`; returns how many it read and
/// their total bytes. (A bench tool's few lines of HTTP/1.0, not the product's.)
fn scraper(
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    use std::io::Read as _;
    std::thread::spawn(move || {
        let (mut scrapes, mut bytes) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
                .unwrap();
            let mut body = Vec::new();
            stream.read_to_end(&mut body).unwrap();
            assert!(body.starts_with(b"HTTP/1.0 200") || body.starts_with(b"HTTP/1.1 200"));
            scrapes += 1;
            bytes += body.len() as u64;
            std::thread::sleep(Duration::from_secs(1));
        }
        (scrapes, bytes)
    })
}

/// `--metrics`: the same daemon with metrics off and on (and scraped every second, far more
/// often than Prometheus's 15 s), beside the floor, in alternating rounds of one run.
async fn metrics_cost(dir: &Path, connections: &[usize], seconds: f64, rounds: usize) {
    let policy = write_policy(dir, 1000, 0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let targets = [
        (
            "floor (blocking, thread per connection)",
            floor_process(&dir.join("floor.sock"), "--floor"),
            dir.join("floor.sock"),
        ),
        (
            "daemon, metrics off",
            daemon(&dir.join("off.sock"), &policy, &[], "warn"),
            dir.join("off.sock"),
        ),
        (
            "daemon, metrics on, scraped every 1 s",
            daemon(
                &dir.join("on.sock"),
                &policy,
                &["--metrics-listen", &listen],
                "warn",
            ),
            dir.join("on.sock"),
        ),
    ];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraping = scraper(port, stop.clone());
    table_header();
    let mut ratios = Vec::new();
    for &n in connections {
        let medians = median_rounds(&targets, n, seconds, rounds, &|| {}).await;
        let (f, off, on) = (&medians[0], &medians[1], &medians[2]);
        for (name, x, base) in [
            ("off/floor", off, f),
            ("on/floor", on, f),
            ("on/off", on, off),
        ] {
            ratio_row(n, name, x, base);
        }
        ratios.push((n, on.rate() / off.rate(), on.cpu_us / off.cpu_us));
    }
    stop.store(true, Ordering::Relaxed);
    let (scrapes, bytes) = scraping.join().unwrap();
    println!(
        "\n{scrapes} scrapes of {} bytes on average during the run",
        bytes / scrapes.max(1)
    );
    println!(
        "\n| connections | throughput, metrics on / off | CPU per request, on / off |\n| ---: | ---: | ---: |"
    );
    for (n, rate, cpu) in ratios {
        println!("| {n} | {rate:.3}x | {cpu:.3}x |");
    }
}

/// Latency percentiles against connection count, log-log, floor dashed and daemon solid.
fn plot(results: &[Vec<Measured>]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 460.0, 70.0, 210.0, 40.0, 50.0);
    let xs: Vec<f64> = results
        .iter()
        .map(|r| (r[0].connections as f64).log10())
        .collect();
    let (x0, x1) = (
        xs.first().copied().unwrap_or(0.0),
        xs.last().copied().unwrap_or(1.0).max(0.1),
    );
    let all_us = results
        .iter()
        .flatten()
        .flat_map(|m| [us(m.p50), us(m.p999)]);
    let (lo, hi) = all_us.fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y0, y1) = (lo.max(1.0).log10().floor(), hi.max(10.0).log10().ceil());
    let px = |x: f64| left + (x - x0) / (x1 - x0).max(1e-9) * (w - left - right);
    let py = |y: f64| top + (1.0 - (y.log10() - y0) / (y1 - y0)) * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"15\">Latency per request against connections (daemon solid, floor dashed)</text>\n"
    );
    for d in (y0 as i32)..=(y1 as i32) {
        let y = py(10f64.powi(d));
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            w - right,
            left - 6.0,
            y + 4.0,
            10f64.powi(d)
        );
    }
    for (r, x) in results.iter().zip(&xs) {
        let x = px(*x);
        svg += &format!(
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            h - bottom,
            h - bottom + 18.0,
            r[0].connections
        );
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">connections (one request outstanding each)</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">latency, µs (log)</text>\n",
        (left + w - right) / 2.0,
        h - 12.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    type Pick = fn(&Measured) -> u32;
    let series: [(&str, Pick, &str); 3] = [
        ("p50", |m| m.p50, "#1f77b4"),
        ("p99", |m| m.p99, "#ff7f0e"),
        ("p99.9", |m| m.p999, "#d62728"),
    ];
    let mut legend_y = top + 10.0;
    for (target, dash) in [(1usize, ""), (0, " stroke-dasharray=\"6 4\"")] {
        for (name, pick, colour) in series {
            let points: Vec<String> = results
                .iter()
                .zip(&xs)
                .map(|(r, x)| format!("{:.1},{:.1}", px(*x), py(us(pick(&r[target])).max(1.0))))
                .collect();
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
                points.join(" ")
            );
            let label = if target == 1 { "daemon" } else { "floor" };
            let lx = w - right + 15.0;
            svg += &format!(
                "<line x1=\"{lx}\" x2=\"{}\" y1=\"{legend_y}\" y2=\"{legend_y}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{label} {name}</text>\n",
                lx + 30.0,
                lx + 36.0,
                legend_y + 4.0
            );
            legend_y += 20.0;
        }
    }
    svg += "</svg>\n";
    svg
}

/// Real Deno end to end, best of three runs each, in alternation.
fn real_deno(dir: &Path, deno: &Path) {
    let policy = write_policy(dir, 1000, 0);
    let floor = dir.join("floor.sock");
    let socket = dir.join("daemon.sock");
    let _floor = floor_process(&floor, "--floor");
    let _daemon = daemon(&socket, &policy, &[], "warn");
    let (mut none, mut floor_us, mut daemon_us) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..3 {
        none = none.min(deno_stat(deno, dir, None));
        floor_us = floor_us.min(deno_stat(deno, dir, Some(&floor)));
        daemon_us = daemon_us.min(deno_stat(deno, dir, Some(&socket)));
    }
    println!("| Deno.statSync, µs per call (best of 3 x 20,000) | value |");
    println!("| --- | ---: |");
    println!("| no broker, --allow-read | {none:.2} |");
    println!("| floor responder | {floor_us:.2} |");
    println!("| daemon (about 1,000 rules) | {daemon_us:.2} |");
    println!(
        "| daemon's extra cost over the floor | {:.2} |",
        daemon_us - floor_us
    );
}

/// Memory and start-up: idle RSS, RSS with 10,000 idle connections, RSS every million requests
/// over 10 million, and time from start to ready.
async fn scale(dir: &Path, idle_connections: usize, total: u64) {
    println!("| start to ready (median of 5) | value |");
    println!("| --- | ---: |");
    for rules in [1_000, 100_000] {
        let policy = write_policy(dir, rules, 0);
        let mut times: Vec<Duration> = (0..5)
            .map(|_| daemon(&dir.join("start.sock"), &policy, &[], "warn").ready_after)
            .collect();
        times.sort();
        println!(
            "| {rules} rules | {:.1} ms |",
            times[2].as_secs_f64() * 1000.0
        );
    }
    let policy = write_policy(dir, 1000, 0);
    let socket = dir.join("scale.sock");
    // Every connection is this process's uid: its share must hold them all.
    let d = daemon(
        &socket,
        &policy,
        &["--max-connections-per-uid", "16384"],
        "warn",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = d.rss_kib();
    let mut held = Vec::with_capacity(idle_connections);
    for _ in 0..idle_connections {
        let stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        held.push(stream);
    }
    // The daemon accepts asynchronously: wait until its memory stops moving.
    let mut with_idle = d.rss_kib();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = d.rss_kib();
        if now == with_idle {
            break;
        }
        with_idle = now;
    }
    // Every held connection is still served: ask on the last one.
    let mut last = held.last().unwrap();
    writeln!(
        last,
        "{{\"v\":1,\"id\":1,\"datetime\":\"2026-11-23T16:30:45.262660+00:00\",\"permission\":\"env\",\"value\":\"HOME\"}}"
    )
    .unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(last)
        .read_line(&mut answer)
        .expect("the last of the idle connections is served (was the open-file limit reached?)");
    assert!(answer.starts_with("{\"id\":1,"), "{answer}");
    let descriptors = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count();
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_close = d.rss_kib();
    println!();
    println!("| daemon memory (about 1,000 rules) | RSS |");
    println!("| --- | ---: |");
    println!("| idle | {idle} KiB |");
    println!(
        "| with {idle_connections} idle connections | {with_idle} KiB ({:.1} KiB per connection) |",
        (with_idle.saturating_sub(idle)) as f64 / idle_connections as f64
    );
    println!("| after closing them | {after_close} KiB |");
    println!("| descriptors open with the idle connections | {descriptors} |");
    println!();
    println!("| requests answered (256 connections) | RSS | failures |");
    println!("| ---: | ---: | ---: |");
    let step = total / 10;
    let mut done = 0;
    while done < total {
        let r = measure(&socket, d.pid(), 256, 3600.0, step).await;
        done += step;
        println!("| {done} | {} KiB | {} |", d.rss_kib(), r.failures);
    }
}

/// `permission-broker replay` over a generated log of `records` decision records: the 642
/// captured requests, from 50 processes of 5 uids and 3 executables, each record written the
/// way the daemon writes it (about 450 bytes). Prints records per second, on one core (replay
/// is single-threaded).
fn replay(dir: &Path, records: usize) {
    use std::io::Write as _;
    let policy = write_policy(dir, 1000, 0);
    let log = dir.join("replay.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
    // Each record says what the policy decided (the daemon's record would), so that a replay
    // under the same policy changes nothing and measures the common case: reading.
    let (compiled, _) = permission_broker_policy::Policy::compile(
        &[permission_broker_policy::Source::new(
            "policy.toml",
            std::fs::read_to_string(&policy).unwrap(),
        )],
        &permission_broker_policy::NoDirectory,
    )
    .unwrap();
    let requests = workload();
    let exes = [
        "/usr/bin/deno",
        "/opt/deno/2.9.6/deno",
        "/home/ci/.deno/bin/deno",
    ];
    for n in 0..records {
        let (permission, value) = &requests[n % requests.len()];
        let process = (n / requests.len()) % 50;
        // A relative path is recorded as the daemon resolved it, from the app's directory.
        let resolved = value
            .as_str()
            .filter(|v| {
                !v.starts_with('/') && matches!(permission.as_str(), "read" | "write" | "ffi")
            })
            .map(|v| format!("/srv/app/{v}"));
        let decided = resolved
            .clone()
            .or_else(|| value.as_str().map(str::to_owned));
        let subject = permission_broker_policy::Subject {
            pid: 0,
            uid: Some(1000 + (process % 5) as u32),
            gid: Some(1000),
            groups: None,
            user: Some(""),
            group: None,
            group_names: None,
            exe: Some(exes[process % 3]),
            unit: None,
            cwd: None,
        };
        let unit = format!("app{}.service", process % 4);
        let subject = permission_broker_policy::Subject {
            unit: Some(&unit),
            ..subject
        };
        let decision = compiled.decide(
            permission.parse().unwrap(),
            decided.as_deref(),
            &subject,
            &mut permission_broker_policy::lexical_only,
        );
        let rule = match decision.decided_by {
            permission_broker_policy::DecidedBy::Rule(i) => compiled.rule(i).id.clone(),
            permission_broker_policy::DecidedBy::Default => "default".to_owned(),
            permission_broker_policy::DecidedBy::Unresolvable => "unresolvable".to_owned(),
        };
        let resolved = resolved
            .map(|r| format!(",\"resolved\":{}", serde_json::to_string(&r).unwrap()))
            .unwrap_or_default();
        // In the daemon's field order (`DecisionRecord`), which replay's fast path relies on.
        writeln!(
            out,
            r#"{{"kind":"decision","time":"2026-12-01T10:00:{:02}.123456Z","conn":{process},"pid":{},"start_time":123456,"uid":{},"gid":1000,"exe":{},"unit":"app{}.service","id":{n},"permission":{},"value":{value}{resolved},"decision":"{decision}","answered":"{decision}","mode":"enforce","rule":{},"reason":null,"revision":"0123456789abcdef","micros":{}}}"#,
            n % 60,
            4000 + process,
            1000 + process % 5,
            serde_json::to_string(exes[process % 3]).unwrap(),
            process % 4,
            serde_json::to_string(permission).unwrap(),
            serde_json::to_string(&rule).unwrap(),
            10 + n % 7,
            decision = decision.effect,
        )
        .unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let bytes = std::fs::metadata(&log).unwrap().len();
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("permission-broker");
    // CPU time as well as wall time: on a shared machine the wall time says how busy it is.
    let children_cpu = || {
        use nix::sys::resource::{UsageWho, getrusage};
        let usage = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
        let (user, system) = (usage.user_time(), usage.system_time());
        user.tv_sec() as f64
            + user.tv_usec() as f64 / 1e6
            + system.tv_sec() as f64
            + system.tv_usec() as f64 / 1e6
    };
    let mut times = Vec::new();
    let mut cpus = Vec::new();
    let mut said = String::new();
    for _ in 0..3 {
        let cpu_before = children_cpu();
        let started = Instant::now();
        let output = Command::new(&binary)
            .arg("replay")
            .arg("--policy")
            .arg(&policy)
            .arg(&log)
            .output()
            .unwrap();
        times.push(started.elapsed());
        cpus.push(children_cpu() - cpu_before);
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        said = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    // What replay said, first line: how many of the generated records it would change.
    if let Some(first) = said.lines().next() {
        println!("{first}");
    }
    times.sort();
    cpus.sort_by(f64::total_cmp);
    let (median, cpu) = (times[1].as_secs_f64(), cpus[1]);
    println!(
        "| records | log size | wall (median of 3) | CPU (median of 3) | records per CPU second | MB per CPU second |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {records} | {:.1} MB | {median:.2} s | {cpu:.2} s | {:.0} | {:.0} |",
        bytes as f64 / 1e6,
        records as f64 / cpu,
        bytes as f64 / 1e6 / cpu
    );
}

/// Sends `SIGHUP` to a process.
fn hup(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

/// A connection that asks about `/probe`; the answer's reason names the policy round.
struct Probe {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
    id: u32,
}

impl Probe {
    async fn open(socket: &Path) -> Probe {
        let (read, write) = UnixStream::connect(socket).await.unwrap().into_split();
        Probe {
            lines: BufReader::new(read).lines(),
            write,
            id: 0,
        }
    }

    /// The round of the policy that answered, or `None` if the connection failed.
    async fn round(&mut self) -> Option<u64> {
        self.id += 1;
        let frame = format!(
            "{{\"v\":1,\"id\":{},\"datetime\":\"2026-11-23T16:30:45.262660+00:00\",\"permission\":\"read\",\"value\":\"/probe\"}}\n",
            self.id
        );
        self.write.write_all(frame.as_bytes()).await.ok()?;
        let line = self.lines.next_line().await.ok()??;
        let (_, rest) = line.split_once("round ")?;
        rest.trim_end_matches("\"}").parse().ok()
    }

    /// Asks until the answer comes from `round`; returns how long that took.
    async fn until(&mut self, round: u64) -> Duration {
        let started = Instant::now();
        while self.round().await != Some(round) {
            assert!(started.elapsed() < Duration::from_secs(60), "no reload");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        started.elapsed()
    }
}

/// Reload time for 100,000 rules, and the latency of 256 connections without reloads and then
/// with the policy rewritten and reloaded (`SIGHUP`) every 100 ms.
async fn reload(dir: &Path, rules: usize, seconds: f64) {
    let policy = write_policy(dir, rules, 0);
    let socket = dir.join("reload.sock");
    let d = daemon(&socket, &policy, &["--no-watch"], "warn");
    let mut probe = Probe::open(&socket).await;
    let mut times = Vec::new();
    for round in 1..=5 {
        write_policy(dir, rules, round);
        hup(d.pid());
        times.push(probe.until(round).await);
    }
    times.sort();
    println!(
        "reload of {rules} rules (SIGHUP to the first answer under the new policy, median of 5): {:.0} ms",
        times[2].as_secs_f64() * 1000.0
    );
    let quiet = measure(&socket, d.pid(), 256, seconds, u64::MAX).await;
    let writes = Arc::new(AtomicU64::new(0));
    let reloader = {
        let (dir, writes) = (dir.to_path_buf(), writes.clone());
        let pid = d.pid();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(100));
            for round in 100.. {
                ticker.tick().await;
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || write_policy(&dir, rules, round))
                    .await
                    .unwrap();
                hup(pid);
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Which policy versions answered while the load ran: each new round seen is a swap.
    let watcher = tokio::spawn(async move {
        let (mut seen, mut last) = (0u64, 5);
        while let Some(round) = probe.round().await {
            if round != last {
                seen += 1;
                last = round;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen
    });
    let busy = measure(&socket, d.pid(), 256, seconds, u64::MAX).await;
    reloader.abort();
    drop(d);
    let swaps = watcher.await.unwrap();
    println!();
    println!(
        "| 256 connections, {rules} rules | requests/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU µs/request | failures |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, r) in [("no reloads", &quiet), ("reload every 100 ms", &busy)] {
        println!("| {name} | {} |", cells(r));
    }
    println!(
        "policy files written and SIGHUPs sent: {}; policy swaps seen by a probe connection: {swaps}; p99 with reloads / without: {:.2}x",
        writes.load(Ordering::Relaxed),
        f64::from(busy.p99) / f64::from(quiet.p99)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(i) = args.iter().position(|a| a == "--floor") {
        let listener = std::os::unix::net::UnixListener::bind(&args[i + 1]).unwrap();
        println!("ready");
        floor_blocking(listener);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--floor-tokio") {
        let socket = PathBuf::from(&args[i + 1]);
        runtime.block_on(async {
            let listener = UnixListener::bind(&socket).unwrap();
            println!("ready");
            floor(listener).await;
        });
        return;
    }
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    let connections: Vec<usize> = value("--connections", "1,64,256")
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    let seconds: f64 = value("--seconds", "2").parse().unwrap();
    let rounds: usize = value("--rounds", "3").parse().unwrap();
    // 10,000 idle connections need 10,000 descriptors here and 20,000 in the daemon (a socket
    // and a /proc handle each), which inherits this limit. Raising the hard limit needs root.
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let wanted = hard.max(65_536);
            if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_err() {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("pb-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = args
        .iter()
        .position(|a| a == "--svg")
        .map(|i| PathBuf::from(&args[i + 1]));
    for (name, value) in unit_environment() {
        println!("daemon environment (systemd/permission-broker.service): {name}={value}");
    }
    runtime.block_on(async {
        if let Some(i) = args.iter().position(|a| a == "--deno") {
            let deno = PathBuf::from(&args[i + 1])
                .canonicalize()
                .expect("the Deno binary");
            real_deno(&dir, &deno);
        } else if flag("--scale") {
            let idle = value("--idle-connections", "10000").parse().unwrap();
            let total = value("--requests", "10000000").parse().unwrap();
            scale(&dir, idle, total).await;
        } else if let Some(i) = args.iter().position(|a| a == "--replay") {
            replay(&dir, args[i + 1].parse().unwrap());
        } else if flag("--metrics") {
            metrics_cost(&dir, &connections, seconds, rounds).await;
        } else if flag("--reload") {
            let rules = value("--rules", "100000").parse().unwrap();
            reload(&dir, rules, seconds).await;
        } else {
            throughput(
                &dir,
                &connections,
                seconds,
                rounds,
                svg.as_deref(),
                flag("--quick"),
            )
            .await;
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
