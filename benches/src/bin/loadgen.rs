//! Load generator: N emulated Deno processes against a broker socket, side by side with a
//! do-nothing floor responder on the same kind of socket, in one run.
//!
//! Each emulated process is one connection with strictly one request outstanding (as Deno), sending
//! real frames from Deno 2.9.6 (`crates/protocol/tests/data/frames-2.9.6.jsonl`, pid rewritten to
//! ours so the daemon's pid check passes) and checking every answer's id.
//!
//!   cargo run --release -p permission-broker-bench --bin loadgen -- [--connections 1,16,256,4096] [--seconds 3]
//!
//! Traffic goes only to Unix sockets in a temporary directory; every run is bounded in time.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The floor: answers every line `allow` with the request's id, nothing else.
async fn floor(listener: UnixListener, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
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

/// One emulated Deno process: sequential requests until `deadline`; returns latencies in ns.
async fn emulate(
    socket: PathBuf,
    offset: usize,
    work: Arc<Vec<(String, serde_json::Value)>>,
    warmup: Instant,
    deadline: Instant,
) -> (Vec<u32>, u64) {
    let stream = UnixStream::connect(&socket).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let pid = std::process::id();
    let mut latencies = Vec::with_capacity(4096);
    let mut id: u32 = 0;
    let mut i = offset;
    while Instant::now() < deadline {
        id += 1;
        let (permission, value) = &work[i % work.len()];
        i += 1;
        let frame = format!(
            "{{\"v\":1,\"pid\":{pid},\"id\":{id},\"datetime\":\"2026-11-23T16:30:45.262660275+00:00\",\"permission\":\"{permission}\",\"value\":{value}}}\n"
        );
        let start = Instant::now();
        write.write_all(frame.as_bytes()).await.expect("write");
        let line = lines
            .next_line()
            .await
            .expect("read")
            .expect("connection closed by the broker");
        let took = start.elapsed();
        let expected = format!("{{\"id\":{id},");
        assert!(
            line.starts_with(&expected),
            "answer {line} for request {id}"
        );
        if start >= warmup {
            latencies.push(u32::try_from(took.as_nanos()).unwrap_or(u32::MAX));
        }
    }
    (latencies, u64::from(id))
}

struct Result {
    requests: usize,
    seconds: f64,
    /// CPU time (user + system) the responder process spent per answered request, in µs.
    cpu_us: f64,
    p50: u32,
    p99: u32,
    p999: u32,
    max: u32,
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

async fn measure(socket: &Path, responder: u32, connections: usize, seconds: f64) -> Result {
    let work = Arc::new(workload());
    let cpu_before = cpu_ticks(responder);
    let warmup = Instant::now() + Duration::from_millis(300);
    let deadline = warmup + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            tokio::spawn(emulate(
                socket.to_path_buf(),
                c * 7,
                work.clone(),
                warmup,
                deadline,
            ))
        })
        .collect();
    let mut all = Vec::new();
    let mut sent = 0;
    for t in tasks {
        let (latencies, count) = t.await.unwrap();
        all.extend(latencies);
        sent += count;
    }
    // Every request sent, warm-up included, cost the responder CPU; count them all.
    let cpu_ticks_used = cpu_ticks(responder) - cpu_before;
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 - 1.0) * q) as usize];
    Result {
        cpu_us: cpu_ticks_used as f64 / ticks_per_second * 1e6 / sent as f64,
        requests: all.len(),
        seconds,
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: *all.last().unwrap(),
    }
}

fn daemon(dir: &Path, socket: &Path) -> Child {
    let set = permission_broker_bench::realistic(1000);
    // A fleet-like policy of about 1,000 rules that also allows what the captured frames ask.
    let policy = format!(
        "{}[[rule]]\nid = \"frames\"\neffect = \"allow\"\npermissions = [\"read\", \"write\"]\npaths = [\"/srv/app\", \"{}\", \"{}\"]\n",
        set.toml,
        std::env::current_dir().unwrap().display(),
        dir.display()
    );
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("permission-broker");
    let mut child = Command::new(&binary)
        .args(["serve", "--socket"])
        .arg(socket)
        .arg("--policy")
        .arg(&path)
        .env("RUST_LOG", "warn")
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
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert!(ready.contains("ready"), "{ready}");
    child
}

/// Runs the floor responder in its own process, so it pays the same cross-process wake-ups as
/// the daemon.
fn floor_process(socket: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--floor")
        .arg(socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    child
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--floor") {
        let socket = PathBuf::from(&args[i + 1]);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = UnixListener::bind(&socket).unwrap();
            println!("ready");
            floor(listener, Arc::new(AtomicBool::new(false))).await;
        });
        return;
    }
    let value = |flag: &str, default: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    let connections: Vec<usize> = value("--connections", "1,16,256,4096")
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    let seconds: f64 = value("--seconds", "3").parse().unwrap();
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let dir = tempfile_dir();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let floor_socket = dir.join("floor.sock");
    let daemon_socket = dir.join("daemon.sock");
    let stop = Arc::new(AtomicBool::new(false));
    // Killed on drop, panic included: no orphaned daemon or floor after a failed run.
    let _daemon = KillOnDrop(daemon(&dir, &daemon_socket));
    let _floor = KillOnDrop(floor_process(&floor_socket));
    let (daemon_pid, floor_pid) = (_daemon.0.id(), _floor.0.id());
    if let Some(i) = args.iter().position(|a| a == "--deno") {
        // Real Deno end to end, best of three runs each, in alternation.
        let deno = PathBuf::from(&args[i + 1])
            .canonicalize()
            .expect("the Deno binary");
        let (mut none, mut floor_us, mut daemon_us) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..3 {
            none = none.min(deno_stat(&deno, &dir, None));
            floor_us = floor_us.min(deno_stat(&deno, &dir, Some(&floor_socket)));
            daemon_us = daemon_us.min(deno_stat(&deno, &dir, Some(&daemon_socket)));
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
    runtime.block_on(async {
        println!("| connections | target | requests/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU µs/request |");
        println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for &n in &connections {
            let mut rows = Vec::new();
            for (name, socket, pid) in [
                ("floor", &floor_socket, floor_pid),
                ("daemon", &daemon_socket, daemon_pid),
            ] {
                let r = measure(socket, pid, n, seconds).await;
                let us = |ns: u32| ns as f64 / 1000.0;
                println!(
                    "| {n} | {name} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
                    r.requests as f64 / r.seconds,
                    us(r.p50),
                    us(r.p99),
                    us(r.p999),
                    us(r.max),
                    r.cpu_us
                );
                rows.push(r);
            }
            let (f, d) = (&rows[0], &rows[1]);
            println!(
                "| {n} | daemon/floor | {:.2}x | {:.2}x | {:.2}x | {:.2}x | | {:.2}x |",
                d.requests as f64 / f.requests as f64,
                d.p50 as f64 / f.p50 as f64,
                d.p99 as f64 / f.p99 as f64,
                d.p999 as f64 / f.p999 as f64,
                d.cpu_us / f.cpu_us
            );
        }
    });
    stop.store(true, Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&dir);
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pb-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
