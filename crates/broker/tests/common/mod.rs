//! Test support: a real `permission-broker serve` on a temporary socket, and the pinned Deno
//! binaries installed by `scripts/install-deno.sh`.

#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BROKER: &str = env!("CARGO_BIN_EXE_permission-broker");

/// A daemon process with its socket, policy and captured log; killed on drop.
pub struct Daemon {
    pub child: Child,
    ready: String,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts a daemon on `policy` (TOML text) with extra `serve` flags and waits for its ready
    /// line.
    pub fn start(policy: &str, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("policy.toml");
        std::fs::write(&policy_path, policy).unwrap();
        Daemon::start_in(dir, &policy_path, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, policy_path: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_logging(dir, policy_path, extra, "permission_broker=debug")
    }

    /// Like [`Daemon::start_in`] with its own `RUST_LOG` filter (a load test keeps the captured
    /// log to what it reads, not a debug line per decision).
    pub fn start_logging(
        dir: tempfile::TempDir,
        policy_path: &Path,
        extra: &[&str],
        filter: &str,
    ) -> Daemon {
        let socket = dir.path().join("broker.sock");
        let mut child = Command::new(BROKER)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--policy")
            .arg(policy_path)
            .args(extra)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        assert!(
            ready.starts_with("permission-broker ready on "),
            "daemon did not become ready: {ready:?}\nlog:\n{}",
            log.lock().unwrap().join("\n")
        );
        Daemon {
            child,
            ready,
            dir,
            socket,
            log,
        }
    }

    /// The line the daemon printed when it became ready.
    pub fn ready_line(&self) -> &str {
        &self.ready
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains every one of `needles`; returns it.
    pub fn wait_for_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .log()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} in:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Deno releases the end-to-end tests run against.
pub const DENO_VERSIONS: &[&str] = &["2.9.6", "2.5.3"];

/// The pinned Deno binary. A missing binary fails the test: the test command installs it, and a
/// suite that quietly skipped its real client would prove nothing.
pub fn deno(version: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/deno/node_modules")
        .join(format!("deno-{version}"))
        .join("deno");
    assert!(
        path.is_file(),
        "Deno {version} is not installed at {}: run scripts/install-deno.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// One connection that keeps asking about reads, like a long-running Deno process.
pub struct Asker {
    reader: BufReader<UnixStream>,
    id: u32,
}

impl Asker {
    pub fn open(daemon: &Daemon) -> Asker {
        Asker::open_path(&daemon.socket)
    }

    pub fn open_path(socket: &Path) -> Asker {
        let stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Asker {
            reader: BufReader::new(stream),
            id: 0,
        }
    }

    /// Asks whether `path` may be read; `None` if the connection was closed instead.
    pub fn ask(&mut self, path: &str) -> Option<bool> {
        self.id += 1;
        let frame = format!(
            "{{\"v\":1,\"id\":{},\"datetime\":\"2026-11-23T16:30:45.262660275+00:00\",\"permission\":\"read\",\"value\":\"{path}\"}}\n",
            self.id
        );
        self.reader.get_mut().write_all(frame.as_bytes()).ok()?;
        let mut line = String::new();
        self.reader.read_line(&mut line).ok()?;
        (!line.is_empty()).then(|| line.contains("\"allow\""))
    }

    pub fn allowed(&mut self, path: &str) -> bool {
        self.ask(path).expect("connection closed")
    }

    /// Asks until the answer for `path` is `allowed`, within `limit`; returns how long it took.
    pub fn wait_until(&mut self, path: &str, allowed: bool, limit: Duration) -> Duration {
        let start = Instant::now();
        while self.allowed(path) != allowed {
            assert!(
                start.elapsed() < limit,
                "{path} still not {} after {limit:?}",
                if allowed { "allowed" } else { "denied" }
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        start.elapsed()
    }

    /// The answer stays `allowed` for `period`.
    pub fn stays(&mut self, path: &str, allowed: bool, period: Duration) {
        let start = Instant::now();
        while start.elapsed() < period {
            assert_eq!(self.allowed(path), allowed, "{path} changed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn sigterm_and_wait(daemon: &mut Daemon) -> std::process::ExitStatus {
    signal(daemon, nix::sys::signal::Signal::SIGTERM);
    daemon.child.wait().unwrap()
}

pub fn signal(daemon: &Daemon, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.child.id() as i32), signal).unwrap();
}

/// A raw client connection to the daemon: bytes out, lines in, no protocol of its own.
pub struct RawConn(pub BufReader<UnixStream>);

impl RawConn {
    pub fn open(daemon: &Daemon) -> RawConn {
        let stream = UnixStream::connect(&daemon.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawConn(BufReader::new(stream))
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).unwrap();
    }

    /// Sends what the daemon may refuse before reading it all (the write may then fail).
    pub fn send_hostile(&mut self, bytes: &[u8]) {
        let _ = self.0.get_mut().write_all(bytes);
    }

    /// The next answer line; empty if the daemon closed (or reset) the connection.
    pub fn answer(&mut self) -> String {
        let mut line = String::new();
        match self.0.read_line(&mut line) {
            Ok(_) => line,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => String::new(),
            Err(e) => panic!("read: {e}"),
        }
    }

    /// The daemon closed the connection without writing anything.
    pub fn assert_closed_unanswered(&mut self, what: &str) {
        let mut rest = Vec::new();
        let read = std::io::Read::read_to_end(&mut self.0, &mut rest);
        assert!(
            matches!(read, Ok(0))
                || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{what}: expected a close without an answer, got {read:?} {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}
