//! Handing the daemon's sockets to its next process, so that no connected Deno notices a
//! restart or an upgrade (the way nginx upgrades in place and journald keeps its streams).
//!
//! Two ways, one format:
//! - **`SIGUSR2`, in place.** The new binary at the path the daemon was started from is first
//!   run with `serve --preflight` and the same arguments: it must load this configuration and
//!   policy and speak this handover's version. Then every connection answers what it has read
//!   and stops reading; the daemon `execve`s that binary (same pid) with the listening socket,
//!   every connection and a memfd holding their [`State`] as inherited descriptors, passed the
//!   way systemd passes them (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, and
//!   `LISTEN_FDS_FIRST_FD` for where the block starts): `listener`, `conn-<n>`, `state`.
//! - **The service manager's descriptor store** ([`super::fd_store`]): a graceful stop stores
//!   the [`State`] memfd as `state`; the next start finds it beside the stored connections in
//!   `LISTEN_FDS`. Without it (the previous process crashed) the connections are closed: a
//!   request may have been read and never answered, and Deno waiting forever is worse than
//!   Deno exiting 87.
//!
//! What is carried per connection is [`Carried`]; the next process checks each against the
//! kernel (`SO_PEERCRED`, the peer's start time) before it serves it.

use super::connection::Carried;
use super::fd_store::{self, FdStore};
use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The version of [`State`]. A binary that does not say it speaks this one in its preflight is
/// not exec'd.
pub const VERSION: u32 = 1;
/// What a preflight prints when the new binary can take over.
pub const PREFLIGHT_OK: &str = "permission-broker preflight: handover version";
/// The name the listening socket is passed under across an `execve`.
pub const LISTENER_NAME: &str = "listener";
/// How long the new binary's preflight may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest state read back. 1,000 idle connections take about 300 KB; every connection of
/// the largest `max_connections` holding a longest frame half-read would take about 2 GiB.
const MAX_STATE_BYTES: u64 = 4 << 30;
/// The memfd's name, checked before the next process reads a passed `state`.
const MEMFD_NAME: &str = "permission-broker-handover";

/// What one process hands the next.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub version: u32,
    /// The process that wrote it (across an `execve`, the one reading it).
    pub pid: u32,
    /// The number the next accepted connection gets.
    pub next_conn: u64,
    /// The run the connections are numbered in (see `forensics`); absent from older releases.
    #[serde(default)]
    pub run: Option<String>,
    /// The policy revision that answered until the handover.
    pub revision: String,
    /// The socket file this daemon bound (path, device, inode): the next process removes it at
    /// its exit as its own.
    pub bound: Option<(PathBuf, u64, u64)>,
    /// Each connection, passed as `conn-<n>`.
    pub connections: Vec<Carried>,
}

/// The binary to upgrade to and its arguments: what the daemon was started with.
#[derive(Debug, Clone)]
pub struct Target {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl Target {
    /// The path this process was started from, made absolute now (before anything can change
    /// the working directory), not `/proc/self/exe` later: an upgrade replaces the file at the
    /// path, and `/proc/self/exe` goes on naming the old one. `argv[0]` is only a claim of
    /// whoever started the daemon: it is used only if it names the running file now; a bare
    /// name (which a `PATH` lookup could resolve to anyone's program) or any other name gives
    /// way to the running file's own path.
    pub fn of_this_process() -> Result<Target, String> {
        use std::os::unix::fs::MetadataExt;
        let mut args = std::env::args_os();
        let argv0 = args.next().ok_or("no argv[0]")?;
        let running = std::fs::metadata("/proc/self/exe")
            .map_err(|e| format!("cannot stat /proc/self/exe: {e}"))?;
        let exe = std::fs::read_link("/proc/self/exe")
            .map_err(|e| format!("cannot read /proc/self/exe: {e}"))?;
        let path = Path::new(&argv0);
        let claimed = path
            .as_os_str()
            .as_encoded_bytes()
            .contains(&b'/')
            .then(|| {
                if path.is_absolute() {
                    Some(path.to_path_buf())
                } else {
                    std::env::current_dir().ok().map(|d| d.join(path))
                }
            })
            .flatten()
            .filter(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| (m.dev(), m.ino()) == (running.dev(), running.ino()))
            });
        let program = match claimed {
            Some(program) => program,
            None => {
                if !path.as_os_str().is_empty() && path != exe {
                    tracing::info!(
                        argv0 = %path.display(),
                        program = %exe.display(),
                        "argv[0] does not name the running binary: upgrades in place use its own path"
                    );
                }
                exe
            }
        };
        Ok(Target {
            program,
            args: args.collect(),
        })
    }
}

/// Whether `path` can be changed only by root or this process's user: the file, and every
/// directory above it (as written, and after symlinks), owned by one of them and not writable
/// by group or others -- except a sticky directory (`/tmp`), where others cannot replace an
/// entry they do not own. Whoever else could write there could run code as the daemon at the
/// next upgrade.
fn trusted(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = nix::unistd::geteuid().as_raw();
    let check = |p: &Path, is_file: bool| -> Result<(), String> {
        let m = std::fs::symlink_metadata(p).map_err(|e| format!("`{}`: {e}", p.display()))?;
        let mode = m.permissions().mode();
        let others_write = mode & 0o022 != 0;
        let sticky_dir = !is_file && m.is_dir() && mode & 0o1000 != 0;
        if m.uid() != 0 && m.uid() != me {
            return Err(format!(
                "`{}` is owned by uid {}, not by root or the daemon's user",
                p.display(),
                m.uid()
            ));
        }
        if others_write && !sticky_dir && !m.file_type().is_symlink() {
            return Err(format!(
                "`{}` is writable by its group or others (mode {:o})",
                p.display(),
                mode & 0o7777
            ));
        }
        Ok(())
    };
    let canonical =
        std::fs::canonicalize(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    check(&canonical, true)?;
    // The path as written too, itself included: a link there (in `/tmp`, say) is its owner's to
    // point elsewhere.
    if path != canonical {
        check(path, true)?;
    }
    for dir in canonical
        .ancestors()
        .skip(1)
        .chain(path.ancestors().skip(1))
    {
        if !dir.as_os_str().is_empty() {
            check(dir, false)?;
        }
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Environment variables that describe this process's descriptors and must not reach another.
const DESCRIPTOR_ENV: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "LISTEN_FDS_FIRST_FD",
];

/// Runs the new binary once, as `serve --preflight` with this daemon's arguments: it loads the
/// configuration and policy, binds nothing, and says which handover version it speaks. `Ok`
/// with what it printed, or why it cannot take over.
pub fn preflight(target: &Target) -> Result<String, String> {
    use std::process::{Command, Stdio};
    let program = target.program.display();
    if !is_executable(&target.program) {
        return Err(format!("`{program}` is not an executable file"));
    }
    trusted(&target.program).map_err(|e| {
        format!(
            "`{program}` could be replaced by another user, who would then run as the daemon: {e}"
        )
    })?;
    let mut command = Command::new(&target.program);
    command
        .args(&target.args)
        .arg("--preflight")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("FDSTORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in DESCRIPTOR_ENV {
        command.env_remove(name);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // Read on threads of their own, and waited for only briefly once the child has exited: a
    // process it left behind may hold the pipes open.
    let (out_tx, out) = std::sync::mpsc::channel();
    std::thread::spawn(move || out_tx.send(read_all(stdout)));
    let (err_tx, err) = std::sync::mpsc::channel();
    std::thread::spawn(move || err_tx.send(read_all(stderr)));
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PREFLIGHT_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program} serve --preflight` did not finish within {PREFLIGHT_TIMEOUT:?}"
                ));
            }
            Err(e) => return Err(format!("cannot wait for `{program}`: {e}")),
        }
    };
    let stdout = out.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    let stderr = err.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    let said = |text: &str| {
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .chars()
            .take(400)
            .collect::<String>()
    };
    if !status.success() {
        return Err(format!(
            "`{program} serve --preflight` failed ({status}): {}",
            said(&stderr)
        ));
    }
    let expected = format!("{PREFLIGHT_OK} {VERSION}");
    match stdout.lines().find(|l| l.starts_with(PREFLIGHT_OK)) {
        Some(line) if line.split(';').next() == Some(expected.as_str()) => Ok(line.to_owned()),
        Some(line) => Err(format!(
            "`{program}` speaks another handover version: {line}"
        )),
        None => Err(format!(
            "`{program}` does not say it can take over (no `{expected}` line): {}",
            said(&stdout)
        )),
    }
}

/// The first 64 KiB of what the child writes; the rest is read and dropped, so that a child that
/// writes more never blocks on a full pipe.
fn read_all(pipe: Option<impl Read>) -> String {
    let mut kept = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.by_ref().take(64 << 10).read_to_end(&mut kept);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The state in a memfd, ready to be passed on.
pub fn to_memfd(state: &State) -> std::io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(MEMFD_NAME, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    // One write, not one per JSON token.
    file.write_all(&serde_json::to_vec(state)?)?;
    file.rewind()?;
    Ok(file.into())
}

/// Reads a passed state memfd through `/proc/self/fd` (after checking it is one of ours), and
/// closes the descriptor.
fn read_state(fd: RawFd) -> Result<State, String> {
    let link = format!("/proc/self/fd/{fd}");
    let target = std::fs::read_link(&link).map_err(|e| format!("cannot read {link}: {e}"))?;
    let opened = if target
        .as_os_str()
        .as_encoded_bytes()
        .starts_with(format!("/memfd:{MEMFD_NAME}").as_bytes())
    {
        std::fs::File::open(&link).map_err(|e| format!("cannot open the handover state: {e}"))
    } else {
        Err(format!(
            "the descriptor passed as `state` is {}, not a handover memfd",
            target.display()
        ))
    };
    // The descriptor is this process's, passed for this alone; reading goes through the copy.
    let _ = nix::unistd::close(fd);
    let mut text = Vec::new();
    opened?
        .take(MAX_STATE_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read the handover state: {e}"))?;
    let state: State = serde_json::from_slice(&text)
        .map_err(|e| format!("the handover state does not parse: {e}"))?;
    if state.version != VERSION {
        return Err(format!(
            "the handover state is version {}, this binary reads version {VERSION}",
            state.version
        ));
    }
    Ok(state)
}

/// Copies of the descriptors to pass, in one block of free numbers from `start`, without
/// close-on-exec. `None` if another thread took a number in the block meanwhile (then nothing
/// is left open).
fn copy_block(fds: &[BorrowedFd<'_>], start: RawFd) -> std::io::Result<Option<Vec<RawFd>>> {
    use nix::fcntl::{FcntlArg, fcntl};
    let mut copies = Vec::with_capacity(fds.len());
    for (offset, fd) in fds.iter().enumerate() {
        let wanted = start + offset as RawFd;
        let copy = match fcntl(fd, FcntlArg::F_DUPFD(wanted)) {
            Ok(copy) => copy,
            Err(e) => {
                close_all(&copies);
                return Err(e.into());
            }
        };
        copies.push(copy);
        if copy != wanted {
            close_all(&copies);
            return Ok(None);
        }
    }
    Ok(Some(copies))
}

fn close_all(copies: &[RawFd]) {
    for copy in copies {
        let _ = nix::unistd::close(*copy);
    }
}

/// The highest descriptor number open in this process.
fn highest_open_fd() -> RawFd {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
                .max()
                .unwrap_or(2)
        })
        .unwrap_or(1024)
}

/// Replaces this process with `target`, handing it `state`, the listening socket and each
/// connection (`(number, socket)`), which stay open here. Returns only if that failed, with
/// nothing changed.
pub fn exec(
    target: &Target,
    state: &State,
    listener: BorrowedFd<'_>,
    connections: &[(u64, BorrowedFd<'_>)],
    metrics: Option<BorrowedFd<'_>>,
) -> std::io::Error {
    let memfd = match to_memfd(state) {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    let mut names = vec![LISTENER_NAME.to_owned()];
    let mut fds = vec![listener];
    for (conn, fd) in connections {
        names.push(fd_store::connection_name(*conn));
        fds.push(*fd);
    }
    if let Some(metrics) = metrics {
        names.push(METRICS_NAME.to_owned());
        fds.push(metrics);
    }
    names.push(fd_store::STATE_NAME.to_owned());
    fds.push(memfd.as_fd());
    // A block above every descriptor open now, with room for what other threads open meanwhile.
    let mut start = highest_open_fd() + 64;
    let copies = loop {
        match copy_block(&fds, start) {
            Ok(Some(copies)) => break copies,
            Ok(None) if start < highest_open_fd() + (1 << 16) => start += 1024,
            Ok(None) => return std::io::Error::other("no free block of descriptors"),
            Err(e) => return e,
        }
    };
    let mut env: Vec<std::ffi::CString> = std::env::vars_os()
        .filter(|(name, _)| !DESCRIPTOR_ENV.iter().any(|d| name == d))
        .filter_map(|(name, value)| {
            let mut pair = name.into_encoded_bytes();
            pair.push(b'=');
            pair.extend(value.into_encoded_bytes());
            std::ffi::CString::new(pair).ok()
        })
        .collect();
    for (name, value) in [
        ("LISTEN_FDS", copies.len().to_string()),
        ("LISTEN_PID", std::process::id().to_string()),
        ("LISTEN_FDS_FIRST_FD", start.to_string()),
        ("LISTEN_FDNAMES", names.join(":")),
    ] {
        env.extend(std::ffi::CString::new(format!("{name}={value}")));
    }
    let c = |s: &std::ffi::OsStr| std::ffi::CString::new(s.as_encoded_bytes().to_vec());
    let (Ok(program), Ok(args)) = (
        c(target.program.as_os_str()),
        std::iter::once(target.program.as_os_str())
            .chain(target.args.iter().map(OsString::as_os_str))
            .map(c)
            .collect::<Result<Vec<_>, _>>(),
    ) else {
        close_all(&copies);
        return std::io::Error::other("an argument holds a NUL byte");
    };
    super::signals::block_handled();
    let error = match nix::unistd::execve(&program, &args, &env) {
        Err(e) => std::io::Error::from(e),
        Ok(never) => match never {},
    };
    super::signals::unblock_handled();
    close_all(&copies);
    error
}

/// What the previous process handed over, and the service manager's own sockets.
#[derive(Debug, Default)]
pub struct Inherited {
    /// How, for the log: `"execve"` or `"the descriptor store"`; empty when nothing was.
    pub how: &'static str,
    /// The listening socket a previous process of this daemon handed over.
    pub listener: Option<UnixListener>,
    pub bound: Option<(PathBuf, u64, u64)>,
    pub connections: Vec<(Carried, UnixStream)>,
    pub next_conn: u64,
    pub run: Option<String>,
    pub revision: Option<String>,
    /// The service manager's sockets (socket units), by name.
    pub sockets: Vec<(String, UnixListener)>,
}

/// The name the metrics socket is passed under: by the service manager (a socket unit with
/// `FileDescriptorName=metrics`), and across an `execve`.
pub const METRICS_NAME: &str = "metrics";

/// What was passed in `LISTEN_FDS`, read once and early: `listenfd` takes the variables out of
/// the environment, and the metrics socket is served before the policy loads.
pub struct Passed {
    names: Vec<String>,
    first: RawFd,
    fds: listenfd::ListenFd,
}

impl std::fmt::Debug for Passed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passed")
            .field("names", &self.names)
            .field("first", &self.first)
            .field("count", &self.fds.len())
            .finish()
    }
}

impl Passed {
    pub fn from_env() -> Passed {
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|n| n.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        let first: RawFd = std::env::var("LISTEN_FDS_FIRST_FD")
            .ok()
            .and_then(|f| f.parse().ok())
            .unwrap_or(3);
        Passed {
            names,
            first,
            // Checks LISTEN_PID, and owns each descriptor once it is checked to be the right kind.
            fds: listenfd::ListenFd::from_env(),
        }
    }

    /// Whether a previous process of this daemon handed its state over (an upgrade in place, or
    /// a restart through the descriptor store): it was serving until a moment ago.
    pub fn is_takeover(&self) -> bool {
        self.names.iter().any(|n| n == fd_store::STATE_NAME)
    }

    /// The first descriptor passed as `metrics`, if it is a listening TCP socket (closed with
    /// the reason if it is not); the rest stay for [`take_passed`].
    pub fn take_metrics(&mut self) -> Option<Result<std::net::TcpListener, String>> {
        let idx = (0..self.fds.len())
            .find(|i| self.names.get(*i).map(String::as_str) == Some(METRICS_NAME))?;
        let fd = self.first + idx as RawFd;
        Some(match self.fds.take_tcp_listener(idx) {
            Ok(Some(listener)) => {
                match nix::sys::socket::getsockopt(&listener, nix::sys::socket::sockopt::AcceptConn)
                {
                    Ok(true) => Ok(listener),
                    _ => Err(format!(
                        "the descriptor passed as `metrics` (fd {fd}) is a TCP socket that does not listen; closed"
                    )),
                }
            }
            Ok(None) => Err(format!(
                "the descriptor passed as `metrics` (fd {fd}) is not there"
            )),
            Err(_) => {
                close_passed(&mut self.fds, idx);
                Err(format!(
                    "the descriptor passed as `metrics` (fd {fd}) is not a TCP socket; closed"
                ))
            }
        })
    }
}

/// Takes what was passed in `LISTEN_FDS` (by the service manager, or by the previous image of
/// this process): the service manager's sockets, and the connections and state of a handover.
/// Connections with no state (the previous process did not stop gracefully) are closed here and
/// removed from the store; a stored state is removed from the store before anything is served,
/// so that a later crash cannot adopt it again.
pub fn take_passed(passed: Passed, store: Option<&FdStore>) -> Result<Inherited, String> {
    let Passed {
        names,
        first,
        fds: mut passed,
    } = passed;
    let mut inherited = Inherited::default();
    let mut state: Option<Result<State, String>> = None;
    let mut stored = Vec::new();
    // Connection numbers passed with something that is not a connection, and how many other
    // descriptors were not sockets to listen on.
    let mut junk = Vec::new();
    let mut ignored = 0;
    for idx in 0..passed.len() {
        let name = names.get(idx).map_or("unknown", String::as_str);
        let what = || {
            format!(
                "the descriptor passed as `{name}` (fd {})",
                first + idx as RawFd
            )
        };
        if name == METRICS_NAME {
            // The first was taken before the policy loaded ([`Passed::take_metrics`]).
            if let Ok(Some(fd)) = passed.take_raw_fd(idx) {
                tracing::warn!("{} is a second metrics socket; closed", what());
                let _ = nix::unistd::close(fd);
            }
        } else if name == fd_store::STATE_NAME {
            let fd = passed
                .take_raw_fd(idx)
                .ok()
                .flatten()
                .ok_or_else(|| format!("{} is not there", what()));
            state = Some(match state {
                // Two states: neither can be told to be the last one written.
                Some(_) => fd.and_then(|fd| {
                    let _ = nix::unistd::close(fd);
                    Err("two handover states were passed".to_owned())
                }),
                None => fd.and_then(read_state),
            });
        } else if let Some(conn) = fd_store::connection_of(name) {
            match passed.take_custom::<UnixStream>(
                idx,
                nix::libc::AF_UNIX,
                nix::libc::SOCK_STREAM,
                "a Unix stream socket",
            ) {
                Ok(Some(stream)) if check_socket(stream.as_fd(), false).is_ok() => {
                    stored.push((conn, stream));
                }
                Ok(Some(_listening)) => {
                    // Never shut down: it may be the very socket this daemon listens on.
                    tracing::warn!(
                        "{} is a listening socket, not a connection; not used",
                        what()
                    );
                    junk.push(conn);
                }
                _ => {
                    tracing::warn!("{} is not a Unix stream socket; closed", what());
                    close_passed(&mut passed, idx);
                    junk.push(conn);
                }
            }
        } else {
            let listener = passed
                .take_unix_listener(idx)
                .ok()
                .flatten()
                .filter(|l| check_socket(l.as_fd(), true).is_ok());
            match listener {
                Some(listener) if name == LISTENER_NAME && inherited.listener.is_none() => {
                    inherited.listener = Some(listener);
                }
                Some(listener) => inherited.sockets.push((name.to_owned(), listener)),
                None => {
                    tracing::warn!("{} is not a listening Unix socket; closed", what());
                    close_passed(&mut passed, idx);
                    ignored += 1;
                }
            }
        }
    }
    if inherited.listener.is_none() && inherited.sockets.is_empty() && ignored > 0 {
        return Err(format!(
            "none of the {} descriptors passed is a listening Unix socket",
            passed.len()
        ));
    }
    let state = match state {
        Some(Ok(state)) if inherited.listener.is_some() => {
            // Across an execve: this process's own state.
            if state.pid != std::process::id() {
                tracing::error!(
                    "the handover state was written by pid {}, not this process; closing the connections",
                    state.pid
                );
                None
            } else {
                inherited.how = "execve";
                Some(state)
            }
        }
        Some(Ok(state)) => match store.map(|s| s.forget(fd_store::STATE_NAME)) {
            Some(Ok(())) => {
                inherited.how = "the descriptor store";
                Some(state)
            }
            Some(Err(e)) => {
                tracing::error!(
                    "cannot remove the handed-over state from the store: {e}; closing the stored connections"
                );
                None
            }
            None => {
                tracing::error!(
                    "a handover state was passed but this process has no descriptor store ($FDSTORE); closing the connections"
                );
                None
            }
        },
        Some(Err(e)) => {
            tracing::error!("{e}; closing the handed-over connections");
            if let Some(store) = store {
                let _ = store.forget(fd_store::STATE_NAME);
            }
            None
        }
        None if stored.is_empty() => None,
        None => {
            tracing::warn!(
                connections = stored.len(),
                "connections were passed without their state: the previous process did not stop gracefully (a request may have been read and never answered); closing them"
            );
            None
        }
    };
    let mut carried: std::collections::HashMap<u64, Carried> = Default::default();
    if let Some(state) = state {
        inherited.next_conn = state.next_conn;
        inherited.run = state.run;
        inherited.revision = Some(state.revision);
        inherited.bound = state.bound;
        carried = state.connections.into_iter().map(|c| (c.conn, c)).collect();
    }
    let mut adopted: std::collections::HashMap<u64, UnixStream> = Default::default();
    for (conn, stream) in stored {
        if let Some(first) = adopted.get(&conn) {
            // A second descriptor under an adopted connection's name: a copy of the same socket
            // is only closed here; another socket has no state of its own and is shut down.
            if !same_socket(first, &stream) {
                tracing::warn!(
                    conn,
                    "a second connection stored under the same name closed"
                );
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            junk.push(conn);
            continue;
        }
        let taken = match carried.remove(&conn) {
            None => Err("no state was recorded for it".to_owned()),
            Some(c) => Ok(c),
        };
        match taken {
            Ok(c) => {
                inherited
                    .connections
                    .push((c, stream.try_clone().map_err(|e| e.to_string())?));
                adopted.insert(conn, stream);
            }
            Err(why) => {
                tracing::warn!(conn, "handed-over connection closed: {why}");
                let _ = stream.shutdown(std::net::Shutdown::Both);
                if let Some(store) = store {
                    store.forget_connection(conn);
                }
            }
        }
    }
    // Names that held something besides the adopted connection: removed from the store, and
    // the adopted connection stored again under its name alone.
    if let Some(store) = store {
        junk.sort_unstable();
        junk.dedup();
        for conn in junk {
            store.forget_connection(conn);
            if let Some(stream) = adopted.get(&conn) {
                store.keep_connection(conn, stream.as_fd());
            }
        }
    }
    Ok(inherited)
}

/// Closes a passed descriptor that is not what its name says (left open by listenfd otherwise,
/// and without close-on-exec: it would reach the preflight child and the next image).
fn close_passed(passed: &mut listenfd::ListenFd, idx: usize) {
    if let Ok(Some(fd)) = passed.take_raw_fd(idx) {
        let _ = nix::unistd::close(fd);
    }
}

/// Whether two descriptors are the same socket (copies of one open file).
fn same_socket(a: &UnixStream, b: &UnixStream) -> bool {
    let id = |s: &UnixStream| {
        nix::sys::stat::fstat(s.as_fd())
            .ok()
            .map(|st| (st.st_dev, st.st_ino))
    };
    id(a).is_some() && id(a) == id(b)
}

fn socket_type(fd: BorrowedFd<'_>) -> Result<(bool, bool), String> {
    use nix::sys::socket::{
        AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
    };
    let kind = getsockopt(&fd, sockopt::SockType).map_err(|e| format!("not a socket: {e}"))?;
    let family = getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| a.family());
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    Ok((
        kind == SockType::Stream && family == Some(AddressFamily::Unix),
        listening,
    ))
}

/// Whether `fd` is a Unix stream socket, listening or connected as `listening` says.
fn check_socket(fd: BorrowedFd<'_>, listening: bool) -> Result<(), String> {
    match socket_type(fd)? {
        (true, l) if l == listening => Ok(()),
        _ if listening => Err("not a listening Unix stream socket".to_owned()),
        _ => Err("not a connected Unix stream socket".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    fn carried(conn: u64, pending: &[u8]) -> Carried {
        Carried {
            conn,
            pid: Some(4242),
            uid: Some(1000),
            gid: Some(1000),
            start_time: Some(123_456),
            last_id: Some(99),
            pending: pending.to_vec(),
            working_dirs: super::super::working_dirs::WorkingDirs::default().save(),
        }
    }

    #[test]
    fn a_state_comes_back_from_its_memfd_whole_with_any_bytes_pending() {
        let state = State {
            version: VERSION,
            pid: std::process::id(),
            next_conn: 17,
            run: Some("abc".to_owned()),
            revision: "abc".to_owned(),
            bound: Some(("/tmp/x.sock".into(), 1, 2)),
            connections: vec![
                carried(3, b"{\"v\":1,\"id\":"),
                carried(5, &[0, 0xff, b'\n', 0x80]),
            ],
        };
        let fd = to_memfd(&state).unwrap().into_raw_fd();
        let inode = |fd: RawFd| {
            std::os::unix::fs::MetadataExt::ino(
                &std::fs::metadata(format!("/proc/self/fd/{fd}")).ok()?,
            )
            .into()
        };
        let before: Option<u64> = inode(fd);
        let back = read_state(fd).unwrap();
        assert_eq!(back.connections, state.connections);
        assert_eq!((back.next_conn, back.bound), (17, state.bound));
        // The passed descriptor is closed once read. (Another test thread may have opened a file,
        // even a handover memfd of its own, under the same number since: not the same inode.)
        assert!(before.is_some());
        assert_ne!(inode(fd), before, "the state's descriptor is still open");
    }

    #[test]
    fn a_passed_descriptor_that_is_not_a_handover_memfd_is_refused() {
        let file = std::fs::File::open("/etc/hostname").unwrap();
        let error = read_state(file.into_raw_fd()).unwrap_err();
        assert!(error.contains("not a handover memfd"), "{error}");
        let other =
            nix::sys::memfd::memfd_create("other", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        let error = read_state(other.into_raw_fd()).unwrap_err();
        assert!(error.contains("not a handover memfd"), "{error}");
    }

    #[test]
    fn a_state_of_another_version_is_refused() {
        let mut state = State {
            version: VERSION + 1,
            pid: 1,
            next_conn: 1,
            run: None,
            revision: String::new(),
            bound: None,
            connections: Vec::new(),
        };
        let error = read_state(to_memfd(&state).unwrap().into_raw_fd()).unwrap_err();
        assert!(error.contains("version"), "{error}");
        state.version = VERSION;
        assert!(read_state(to_memfd(&state).unwrap().into_raw_fd()).is_ok());
    }
}
