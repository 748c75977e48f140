//! Test support: a real `permission-broker serve` on a temporary socket, and the pinned Deno
//! binaries installed by `scripts/install-deno.sh`.

#![allow(
    dead_code,
    missing_debug_implementations,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::new_without_default
)]

pub mod service_manager;
pub mod world;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The `permission-broker` binary under test, built from this workspace (see [`broker_binary`]).
pub static BROKER: LazyLock<String> = LazyLock::new(broker_binary);

/// Builds the daemon's binary as shipped (`cargo build -p permission-broker`, in this test run's
/// profile and target directory) and returns its path. This crate is not the binary's package, so
/// cargo does not build it for these tests; building it here, once per test process, means a
/// suite never runs a stale binary. (Cargo releases its build lock before it runs tests.)
fn broker_binary() -> String {
    let test_exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile dir>/deps/<test binary>
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let target = profile_dir.parent().expect("a target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("unexpected profile directory {}", profile_dir.display()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "permission-broker",
            "--bin",
        ])
        .arg("permission-broker")
        .arg("--profile")
        .arg(profile)
        .arg("--target-dir")
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo to build the broker");
    assert!(status.success(), "building permission-broker failed");
    let binary = profile_dir.join("permission-broker");
    assert!(binary.is_file(), "no binary at {}", binary.display());
    binary.display().to_string()
}

/// How to start a daemon, beyond its policy.
#[derive(Clone, Copy)]
pub struct Launch<'a> {
    /// Extra `serve` flags.
    pub extra: &'a [&'a str],
    /// The daemon's `RUST_LOG`.
    pub log_filter: &'a str,
    /// Run as this uid and gid (the tests run as root, which reads any file whatever its mode).
    pub user: Option<(u32, u32)>,
    /// Bind the socket in the test and pass it in with `LISTEN_FDS`, as systemd's socket unit
    /// does: it outlives the daemon, so a connection made while none runs waits for the next.
    pub socket_activated: bool,
    /// Run this binary instead of the one under test (a copy an upgrade replaces).
    pub program: Option<&'a Path>,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            extra: &[],
            log_filter: "permission_broker=debug",
            user: None,
            socket_activated: false,
            program: None,
        }
    }
}

/// A daemon process with its socket, policy and captured log; killed on drop.
pub struct Daemon {
    pub child: Child,
    ready: String,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    /// What [`Daemon::restart`] starts again.
    policy_path: PathBuf,
    extra: Vec<String>,
    log_filter: String,
    user: Option<(u32, u32)>,
    /// The listening socket held across restarts when socket-activated.
    unit: Option<UnixListener>,
    program: PathBuf,
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
        Daemon::launch(
            dir,
            policy_path,
            Launch {
                extra,
                ..Launch::default()
            },
        )
    }

    /// Starts a daemon on the policy at `policy_path` with its socket in `dir`, as `launch`
    /// says, and waits for its ready line.
    pub fn launch(dir: tempfile::TempDir, policy_path: &Path, launch: Launch) -> Daemon {
        let socket = dir.path().join("broker.sock");
        let unit = launch
            .socket_activated
            .then(|| UnixListener::bind(&socket).unwrap());
        let mut daemon = Daemon {
            // Replaced at once by the first spawn.
            child: Command::new("true").spawn().unwrap(),
            ready: String::new(),
            dir,
            socket,
            log: Arc::new(Mutex::new(Vec::new())),
            policy_path: policy_path.to_path_buf(),
            extra: launch.extra.iter().map(|s| (*s).to_owned()).collect(),
            log_filter: launch.log_filter.to_owned(),
            user: launch.user,
            unit,
            program: launch
                .program
                .map_or_else(|| PathBuf::from(&*BROKER), Path::to_path_buf),
        };
        let _ = daemon.child.wait();
        daemon.spawn();
        daemon
    }

    /// Starts the daemon again after it was killed: with socket activation, on the same listening
    /// socket (what systemd does when the next connection arrives).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The `serve` command; with socket activation, `passed` is a copy of the listening socket
    /// that the child inherits.
    fn command(&self, passed: Option<RawFd>) -> Command {
        let mut cmd = match passed {
            None => Command::new(&self.program),
            Some(fd) => {
                // systemd sets LISTEN_PID to the service's pid, and passes the socket as fd 3: a
                // shell that execs the daemon knows its pid and can move the descriptor.
                let moved = if fd == 3 {
                    String::new()
                } else {
                    format!(" 3<&{fd} {fd}<&-")
                };
                let mut cmd = Command::new("bash");
                cmd.arg("-c")
                    .arg(format!("LISTEN_PID=$$ exec \"$0\" \"$@\"{moved}"))
                    .arg(&self.program)
                    .env("LISTEN_FDS", "1");
                cmd
            }
        };
        cmd.arg("serve")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--policy")
            .arg(&self.policy_path)
            .args(&self.extra)
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.user {
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        cmd
    }

    fn spawn(&mut self) {
        // dup() leaves close-on-exec off, so the child inherits the copy; it is closed here once
        // the child has it. (Any process spawned by another thread meanwhile inherits it too: the
        // socket-activated tests live in their own test binaries, one test each.)
        let passed = self.unit.as_ref().map(|l| nix::unistd::dup(l).unwrap());
        let mut child = self
            .command(passed.as_ref().map(AsRawFd::as_raw_fd))
            .spawn()
            .unwrap();
        drop(passed);
        capture_lines(child.stderr.take().unwrap(), self.log.clone());
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        assert!(
            ready.starts_with("permission-broker ready on "),
            "daemon did not become ready: {ready:?}\nlog:\n{}",
            self.log.lock().unwrap().join("\n")
        );
        self.child = child;
        self.ready = ready;
    }

    /// With socket activation: blocks until a connection waits on the held socket (what makes
    /// systemd start the service), at most `limit`.
    pub fn wait_for_connection(&self, limit: Duration) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let listener = self.unit.as_ref().expect("a socket-activated daemon");
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(limit).unwrap();
        poll(&mut fds, timeout).unwrap() == 1
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
        wait_for_line(&self.log, needles)
    }

    /// Waits until `count` log lines contain every one of `needles`; returns the last.
    pub fn wait_for_logs(&self, needles: &[&str], count: usize) -> String {
        wait_for_lines(&self.log, needles, count)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, and reap.
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

/// Collects the lines of `pipe` (a daemon's log) into `sink` as they come, until it closes.
pub fn capture_lines(pipe: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
}

/// Waits until `lines` holds a line containing every one of `needles`, at most 10 s; returns it.
pub fn wait_for_line(lines: &Mutex<Vec<String>>, needles: &[&str]) -> String {
    wait_for_lines(lines, needles, 1)
}

/// Waits until `lines` holds `count` lines containing every one of `needles`, at most 10 s;
/// returns the last of them.
pub fn wait_for_lines(lines: &Mutex<Vec<String>>, needles: &[&str], count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .cloned()
            .collect();
        if found.len() >= count {
            return found[count - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {count} lines with {needles:?} in:\n{}",
            lines.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The uid of `nobody`, the unprivileged user the attack tests play.
pub fn nobody_uid() -> u32 {
    let out = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The Deno releases the end-to-end tests run against: [`PINNED_DENO_VERSIONS`], or the
/// releases listed in `PB_DENO_VERSIONS` (comma- or space-separated), which is how
/// `scripts/deno-matrix.sh` points the same suites at any release. It reads as a slice
/// (`for v in DENO_VERSIONS`, `DENO_VERSIONS[0]`, `.iter()`); the list is read once per process.
pub const DENO_VERSIONS: DenoVersions = DenoVersions;

/// The releases `scripts/install-deno.sh` installs and the tests run against by default: the
/// current one first, then 2.5.3 (the first with a broker; its frames carry no `pid`).
pub const PINNED_DENO_VERSIONS: &[&str] = &["2.9.6", "2.5.3"];

/// Where `scripts/install-deno.sh` installs the pinned releases, as `deno-<version>/deno`.
fn pinned_deno_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/deno/node_modules")
}

/// See [`DENO_VERSIONS`].
#[derive(Clone, Copy, Debug)]
pub struct DenoVersions;

static SELECTED_DENO_VERSIONS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| match std::env::var("PB_DENO_VERSIONS") {
        Ok(list) => {
            let versions: Vec<&'static str> = list
                .split([',', ' '])
                .filter(|v| !v.is_empty())
                .map(|v| &*Box::leak(v.to_owned().into_boxed_str()))
                .collect();
            assert!(
                !versions.is_empty(),
                "PB_DENO_VERSIONS is set but names no Deno release: {list:?}"
            );
            versions
        }
        Err(std::env::VarError::NotPresent) => PINNED_DENO_VERSIONS.to_vec(),
        Err(std::env::VarError::NotUnicode(list)) => {
            panic!("PB_DENO_VERSIONS is not UTF-8: {list:?}")
        }
    });

impl std::ops::Deref for DenoVersions {
    type Target = [&'static str];
    fn deref(&self) -> &[&'static str] {
        &SELECTED_DENO_VERSIONS
    }
}

impl IntoIterator for DenoVersions {
    type Item = &'static &'static str;
    type IntoIter = std::slice::Iter<'static, &'static str>;
    fn into_iter(self) -> Self::IntoIter {
        SELECTED_DENO_VERSIONS.iter()
    }
}

/// The Deno binary of `version`: `$PB_DENO_DIR/deno-<version>/deno` when `PB_DENO_DIR` is set
/// and has it (scripts/deno-matrix.sh's cache), else the pinned install in
/// `tools/deno/node_modules/deno-<version>/deno`. A missing binary fails the test: the test
/// command installs it, and a suite that quietly skipped its real client would prove nothing.
pub fn deno(version: &str) -> PathBuf {
    let pinned = pinned_deno_dir()
        .join(format!("deno-{version}"))
        .join("deno");
    let Some(dir) = std::env::var_os("PB_DENO_DIR") else {
        assert!(
            pinned.is_file(),
            "Deno {version} is not installed at {}: run scripts/install-deno.sh (scripts/test.sh does)",
            pinned.display()
        );
        return pinned;
    };
    let chosen = Path::new(&dir).join(format!("deno-{version}")).join("deno");
    if chosen.is_file() {
        return chosen;
    }
    assert!(
        pinned.is_file(),
        "Deno {version} is installed neither at {} (PB_DENO_DIR) nor at {}: run \
         scripts/deno-matrix.sh {version}, or scripts/install-deno.sh for a pinned release",
        chosen.display(),
        pinned.display()
    );
    pinned
}

/// A v1 `read` request for `value` (written into the JSON as is), newline-terminated. Deno
/// 2.5.5 and later send `pid`; 2.5.3 does not.
pub fn read_frame(id: u32, pid: Option<u32>, value: &str) -> String {
    let pid = pid.map(|p| format!(r#""pid":{p},"#)).unwrap_or_default();
    format!(
        r#"{{"v":1,{pid}"id":{id},"datetime":"2026-11-23T16:30:45.262660275+00:00","permission":"read","value":"{value}"}}"#
    ) + "\n"
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
        let frame = read_frame(self.id, None, path);
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
        RawConn::open_path(&daemon.socket)
    }

    pub fn open_path(socket: &Path) -> RawConn {
        let stream = UnixStream::connect(socket).unwrap();
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

/// A tmpfs of `size` mounted at `dir` for one test (root), unmounted when dropped: a disk that
/// fills up, for real.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn new(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat`, field 22): what
/// the daemon records and checks.
pub fn start_time_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

/// A FUSE file system that never answers: every lookup under `dir` blocks until `Drop`, which
/// kills the process holding `/dev/fuse` (the kernel then fails the blocked calls) and detaches
/// the mount.
pub struct StalledMount {
    pub dir: PathBuf,
    holder: Child,
}

impl StalledMount {
    pub fn new(dir: &Path) -> StalledMount {
        std::fs::create_dir_all(dir).unwrap();
        let mut holder = Command::new("bash")
            .arg("-c")
            .arg(r#"exec 3<>/dev/fuse && mount -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0,allow_other stalled "$0" && echo mounted && exec sleep 600"#)
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "mounted", "could not mount a FUSE file system");
        StalledMount {
            dir: dir.to_path_buf(),
            holder,
        }
    }
}

impl StalledMount {
    /// A stalled mount in a directory of its own that every user may enter.
    pub fn open_to_everyone() -> (tempfile::TempDir, StalledMount) {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            root.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mount = StalledMount::new(&root.path().join("stalled"));
        (root, mount)
    }
}

impl Drop for StalledMount {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// An HTTP response, as curl received it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET http://addr/path` with curl (a real client; the tests hand-write no HTTP), with an
/// `Accept` header if given.
pub fn http_get(addr: std::net::SocketAddr, path: &str, accept: Option<&str>) -> HttpResponse {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{content_type}",
    ]);
    if let Some(accept) = accept {
        cmd.arg("-H").arg(format!("Accept: {accept}"));
    }
    let output = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl (Debian package curl) is needed");
    assert!(
        output.status.success(),
        "curl http://{addr}{path}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, trailer) = text.rsplit_once('\n').unwrap();
    let (status, content_type) = trailer.split_once(' ').unwrap();
    HttpResponse {
        status: status.parse().unwrap(),
        content_type: content_type.to_owned(),
        body: body.to_owned(),
    }
}

/// Where a daemon serves metrics, from its log line.
pub fn metrics_addr(daemon: &Daemon) -> std::net::SocketAddr {
    let line = daemon.wait_for_log(&["serving metrics on http://"]);
    metrics_addr_in(&line)
}

/// The address in a "serving metrics on http://ADDR/metrics" line.
pub fn metrics_addr_in(line: &str) -> std::net::SocketAddr {
    let rest = &line[line.find("http://").unwrap() + "http://".len()..];
    rest[..rest.find("/metrics").unwrap()].parse().unwrap()
}

/// Each sample of a Prometheus text exposition, keyed as written (`name{labels}`).
pub fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The `promtool` that scripts/test.sh unpacks from Debian's `prometheus` package.
pub fn promtool() -> PathBuf {
    // As scripts/test.sh sees it: relative to the workspace root (an absolute one stays).
    let target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()));
    let unpacked = target.join("tools/prometheus/usr/bin/promtool");
    if unpacked.is_file() {
        return unpacked;
    }
    // One on PATH (an operator's own install).
    PathBuf::from("promtool")
}
