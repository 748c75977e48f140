//! systemd's side of a `Type=notify` service with a socket unit and a file descriptor store
//! (`FileDescriptorStoreMax=`), played for real: a `NOTIFY_SOCKET` that receives the service's
//! messages and the descriptors it stores, and a start that passes the socket unit's socket
//! and the stored descriptors back as fds 3.. with `LISTEN_FDS`, `LISTEN_FDNAMES` and
//! `LISTEN_PID` -- what systemd does on `systemctl restart` (systemd itself is never booted).

use super::{capture_lines, wait_for_lines};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name systemd gives the socket unit's descriptor (`FileDescriptorName=` defaults to the
/// unit's name).
pub const SOCKET_NAME: &str = "permission-broker.socket";

/// What the service manager holds for the service.
#[derive(Default)]
struct Held {
    /// The descriptor store, in the order stored.
    store: Vec<(String, OwnedFd)>,
    /// Every notify message, as sent.
    messages: Vec<String>,
    /// Descriptors refused because the store was full.
    refused: usize,
}

pub struct ServiceManager {
    /// The socket unit's path: what Deno connects to.
    pub socket: PathBuf,
    unit: UnixListener,
    notify: PathBuf,
    held: Arc<Mutex<Held>>,
    store_max: usize,
    program: PathBuf,
    args: Vec<OsString>,
    /// The service's log (stderr) across every start.
    pub log: Arc<Mutex<Vec<String>>>,
    child: Option<Child>,
}

impl ServiceManager {
    /// A socket unit at `dir/broker.sock` and a notify socket for the service `program args`.
    pub fn new(dir: &Path, program: &Path, args: &[OsString], store_max: usize) -> ServiceManager {
        raise_open_file_limit();
        let socket = dir.join("broker.sock");
        let unit = UnixListener::bind(&socket).unwrap();
        let notify = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&notify).unwrap();
        let held = Arc::new(Mutex::new(Held::default()));
        let sink = held.clone();
        std::thread::spawn(move || receive(&receiver, &sink, store_max));
        ServiceManager {
            socket,
            unit,
            notify,
            held,
            store_max,
            program: program.to_path_buf(),
            args: args.to_vec(),
            log: Arc::default(),
            child: None,
        }
    }

    /// Starts the service: the socket unit's socket as fd 3, then the stored descriptors in the
    /// order stored; returns once it sent READY=1.
    pub fn start(&mut self) {
        let readies = self.count("READY=1");
        let mut passed: Vec<(String, OwnedFd)> = vec![(
            SOCKET_NAME.to_owned(),
            self.unit.as_fd().try_clone_to_owned().unwrap(),
        )];
        {
            let held = self.held.lock().unwrap();
            for (name, fd) in &held.store {
                passed.push((name.clone(), fd.try_clone().unwrap()));
            }
        }
        // Each descriptor is copied above the block 3..3+n it must land in, without
        // close-on-exec; the shell moves them into place, closes the copies and execs the
        // service with its own pid in LISTEN_PID, as systemd's exec does.
        let base = 3 + passed.len() as i32 + 64;
        let copies: Vec<OwnedFd> = passed
            .iter()
            .map(|(_, fd)| {
                let copy = rustix::io::fcntl_dupfd_cloexec(fd, base).unwrap();
                rustix::io::fcntl_setfd(&copy, rustix::io::FdFlags::empty()).unwrap();
                copy
            })
            .collect();
        let moves: Vec<String> = copies
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}<&{}", 3 + i, c.as_raw_fd()))
            .collect();
        let closes: Vec<String> = copies
            .iter()
            .map(|c| format!("{}<&-", c.as_raw_fd()))
            .collect();
        let names: Vec<&str> = passed.iter().map(|(n, _)| n.as_str()).collect();
        let script = format!(
            "exec {}; exec {}; LISTEN_PID=$$ exec \"$0\" \"$@\"",
            moves.join(" "),
            closes.join(" ")
        );
        let mut child = {
            let _one_at_a_time = SPAWN.lock().unwrap();
            Command::new("bash")
                .arg("-c")
                .arg(script)
                .arg(&self.program)
                .args(&self.args)
                .env("LISTEN_FDS", passed.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"))
                .env("NOTIFY_SOCKET", &self.notify)
                .env("FDSTORE", self.store_max.to_string())
                .env("RUST_LOG", "permission_broker=debug")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        drop(copies);
        drop(passed);
        capture_lines(child.stderr.take().unwrap(), self.log.clone());
        self.child = Some(child);
        self.wait_for_message("READY=1", readies + 1);
    }

    /// SIGTERM, as `systemctl stop` / the stop half of `systemctl restart`; waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("a running service");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        self.settle();
        status
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.settle();
        }
    }

    /// Waits until every message the service sent before it exited has been handled: a marker
    /// sent now is queued behind them on the notify socket, and handled after them. Without it
    /// a test that looks at the store right after the exit could miss the last thing stored.
    fn settle(&self) {
        const MARKER: &str = "X_PERMISSION_BROKER_TEST_SETTLED=1";
        let before = self.count(MARKER);
        std::os::unix::net::UnixDatagram::unbound()
            .unwrap()
            .send_to(MARKER.as_bytes(), &self.notify)
            .unwrap();
        self.wait_for_message(MARKER, before + 1);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running service").id()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Puts `fd` in the store as `name`: a store confused by something else.
    pub fn put(&self, name: &str, fd: OwnedFd) {
        self.held.lock().unwrap().store.push((name.to_owned(), fd));
    }

    /// The listening socket of the socket unit.
    pub fn unit(&self) -> &UnixListener {
        &self.unit
    }

    /// The names in the descriptor store, in the order stored.
    pub fn stored(&self) -> Vec<String> {
        let held = self.held.lock().unwrap();
        held.store.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn refused(&self) -> usize {
        self.held.lock().unwrap().refused
    }

    pub fn messages(&self) -> Vec<String> {
        self.held.lock().unwrap().messages.clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.messages()
            .iter()
            .filter(|m| m.lines().any(|l| l == needle))
            .count()
    }

    /// Waits (at most 20 s) until `count` messages held the line `needle`.
    pub fn wait_for_message(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count(needle) < count {
            assert!(
                Instant::now() < deadline,
                "no {count} `{needle}` messages: {:?}\nlog:\n{}",
                self.messages(),
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (at most 20 s) until a `STATUS=` line containing `needle` was sent; returns it.
    pub fn wait_for_status(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.messages().iter().find_map(|m| {
                m.lines()
                    .find(|l| l.starts_with("STATUS=") && l.contains(needle))
                    .map(str::to_owned)
            });
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no STATUS= with `{needle}`: {:?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (at most 10 s) until the last `STATUS=` line sent no longer contains `needle`.
    pub fn wait_for_status_without(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.last_status().is_some_and(|s| s.contains(needle)) {
            assert!(Instant::now() < deadline, "{:?}", self.last_status());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last `STATUS=` line sent.
    pub fn last_status(&self) -> Option<String> {
        self.messages()
            .iter()
            .flat_map(|m| {
                m.lines()
                    .filter(|l| l.starts_with("STATUS="))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .next_back()
    }

    /// Waits until the store holds exactly `names` (in any order), at most 10 s.
    pub fn wait_for_store(&self, mut names: Vec<String>) {
        names.sort();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut stored = self.stored();
            stored.sort();
            if stored == names {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "store holds {stored:?}, not {names:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_for_log(&self, needles: &[&str], count: usize) -> String {
        wait_for_lines(&self.log, needles, count)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for ServiceManager {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns that pass descriptors without close-on-exec, one at a time: a child spawned by
/// another thread meanwhile would inherit them too.
static SPAWN: Mutex<()> = Mutex::new(());

/// The notify socket: each datagram's lines, and the descriptors it carries (`FDSTORE=1`,
/// `FDNAME=`), or the removal of a name (`FDSTOREREMOVE=1`), as systemd handles them.
fn receive(socket: &UnixDatagram, held: &Mutex<Held>, store_max: usize) {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    use std::mem::MaybeUninit;
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut buf = vec![0u8; 65536];
        let Ok(got) = recvmsg(
            socket,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) else {
            return;
        };
        let text = String::from_utf8_lossy(&buf[..got.bytes]).into_owned();
        let mut fds: Vec<OwnedFd> = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("FDNAME="))
            .unwrap_or("stored")
            .to_owned();
        let mut held = held.lock().unwrap();
        if text.lines().any(|l| l == "FDSTOREREMOVE=1") {
            held.store.retain(|(n, _)| *n != name);
        } else if text.lines().any(|l| l == "FDSTORE=1") {
            for fd in fds {
                if held.store.len() < store_max {
                    held.store.push((name.clone(), fd));
                } else {
                    held.refused += 1;
                }
            }
        }
        held.messages.push(text);
    }
}

/// Many descriptors are passed: the soft open-file limit is raised to the hard one.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
