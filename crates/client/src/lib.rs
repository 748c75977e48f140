//! A client for the Deno permission broker protocol v1, for Rust runtimes that want the same
//! fail-closed broker as Deno.
//!
//! It speaks exactly what Deno 2.9.6 speaks: one request line per check, `pid` included, ids from
//! 1, strictly one request outstanding, and Deno's rules for reading answers. On ANY protocol
//! fault (cannot connect, I/O error, malformed or non-UTF-8 reply, wrong id, unknown result,
//! closed connection) it writes one line to stderr and terminates the process with exit code
//! [`FAULT_EXIT_CODE`]. There is no error value to ignore: a process that cannot ask the broker
//! must not go on unbrokered.
//!
//! ```no_run
//! use permission_broker_client::{Client, Permission};
//! let broker = Client::connect("/tmp/perm.sock");
//! let decision = broker.check(Permission::Read, Some("/etc/passwd"));
//! if !decision.is_allowed() {
//!     eprintln!("denied: {}", decision.reason.as_deref().unwrap_or("no reason given"));
//! }
//! ```

use permission_broker_protocol::{Effect, Request, parse_response};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Mutex;

pub use permission_broker_protocol::Permission;

/// The environment variable Deno reads the broker's path from.
pub const BROKER_PATH_VAR: &str = "DENO_PERMISSION_BROKER_PATH";

/// Deno's exit code for a broker fault; this crate uses the same.
pub const FAULT_EXIT_CODE: i32 = 87;

/// Longest reply line accepted; a broker that sends more is faulty.
const MAX_REPLY_BYTES: usize = 64 * 1024;

#[cfg(unix)]
type Stream = std::os::unix::net::UnixStream;
/// Windows: a named pipe through `interprocess`. Compile-gated and not tested in this project's
/// (Linux-only) CI.
#[cfg(windows)]
type Stream = interprocess::os::windows::named_pipe::DuplexPipeStream<
    interprocess::os::windows::named_pipe::pipe_mode::Bytes,
>;

/// The broker's answer to one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    /// The deny reason, sanitised to one printable line; `None` on allow or when none was given.
    pub reason: Option<String>,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

/// A connection to the broker. Share it between threads: checks are serialised, one request
/// outstanding at a time, as in Deno.
#[derive(Debug)]
pub struct Client {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    reader: BufReader<Stream>,
    next_id: u32,
    /// Set once the broker closed the connection after a final reply; the next check faults.
    closed: bool,
    line: Vec<u8>,
}

/// Reports a protocol fault and terminates the process. Never returns.
fn fault(message: std::fmt::Arguments<'_>) -> ! {
    eprintln!("error: permission broker fault: {message}");
    std::process::exit(FAULT_EXIT_CODE)
}

impl Client {
    /// Connects to the broker named by `DENO_PERMISSION_BROKER_PATH`. Returns `None` if the
    /// variable is unset; if it is set but empty or the broker cannot be reached, that is a fault.
    pub fn from_env() -> Option<Client> {
        let path = std::env::var_os(BROKER_PATH_VAR)?;
        if path.is_empty() {
            fault(format_args!("{BROKER_PATH_VAR} is set but empty"));
        }
        Some(Client::connect(path))
    }

    /// Connects to the broker at `path` (a Unix socket; on Windows a named pipe path).
    pub fn connect(path: impl AsRef<Path>) -> Client {
        Client::open(path.as_ref(), None)
    }

    /// As [`Client::connect`], and the process at the other end must run as `uid`, as the
    /// kernel reports it (`SO_PEERCRED`), or the process terminates with exit code 87 before
    /// anything is sent. A squatter that bound the socket path first (another local user, on a
    /// shared `/tmp`) can then neither read the checks nor answer them. Unix only: on Windows
    /// the named pipe has no uid to ask, so requiring one is a fault.
    pub fn connect_requiring_uid(path: impl AsRef<Path>, uid: u32) -> Client {
        Client::open(path.as_ref(), Some(uid))
    }

    /// As [`Client::from_env`], requiring the broker's uid as [`Client::connect_requiring_uid`].
    pub fn from_env_requiring_uid(uid: u32) -> Option<Client> {
        let path = std::env::var_os(BROKER_PATH_VAR)?;
        if path.is_empty() {
            fault(format_args!("{BROKER_PATH_VAR} is set but empty"));
        }
        Some(Client::open(Path::new(&path), Some(uid)))
    }

    fn open(path: &Path, uid: Option<u32>) -> Client {
        let stream = connect(path).unwrap_or_else(|e| {
            fault(format_args!(
                "cannot connect to the broker at `{}`: {e}",
                path.display()
            ))
        });
        if let Some(required) = uid {
            match peer_uid(&stream) {
                Ok(actual) if actual == required => {}
                Ok(actual) => fault(format_args!(
                    "the broker at `{}` runs as uid {actual}, not the required uid {required}",
                    path.display()
                )),
                Err(e) => fault(format_args!(
                    "cannot tell which uid the broker at `{}` runs as: {e}",
                    path.display()
                )),
            }
        }
        Client {
            inner: Mutex::new(Inner {
                reader: BufReader::new(stream),
                next_id: 1,
                closed: false,
                line: Vec::with_capacity(256),
            }),
        }
    }

    /// Asks the broker whether `permission` may be used for `value` (`None`: the whole
    /// permission). Blocks until the broker answers; terminates the process on any fault.
    pub fn check(&self, permission: Permission, value: Option<&str>) -> Decision {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|_| fault(format_args!("a previous check panicked mid-request")));
        inner.check(permission, value)
    }
}

impl Inner {
    fn check(&mut self, permission: Permission, value: Option<&str>) -> Decision {
        if self.closed {
            fault(format_args!("the broker closed the connection"));
        }
        let id = self.next_id;
        self.next_id = id
            .checked_add(1)
            .unwrap_or_else(|| fault(format_args!("request ids exhausted")));
        let request = Request {
            v: 1,
            pid: Some(std::process::id()),
            id,
            datetime: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, false),
            permission,
            value: value.map(str::to_owned),
        };
        let mut frame = serde_json::to_vec(&request)
            .unwrap_or_else(|e| fault(format_args!("cannot encode request: {e}")));
        frame.push(b'\n');
        let stream = self.reader.get_mut();
        if let Err(e) = stream.write_all(&frame).and_then(|()| stream.flush()) {
            fault(format_args!("cannot send request {id}: {e}"));
        }
        self.line.clear();
        let read = (&mut self.reader)
            .take(MAX_REPLY_BYTES as u64 + 1)
            .read_until(b'\n', &mut self.line);
        match read {
            Err(e) => fault(format_args!("cannot read the answer to request {id}: {e}")),
            Ok(0) => fault(format_args!(
                "the broker closed the connection before answering request {id}"
            )),
            Ok(_) if self.line.len() > MAX_REPLY_BYTES => fault(format_args!(
                "the answer to request {id} exceeds {MAX_REPLY_BYTES} bytes"
            )),
            // Like Deno: a final reply without `\n` before close is honoured; the next check faults.
            Ok(_) if self.line.last() != Some(&b'\n') => self.closed = true,
            Ok(_) => {}
        }
        let response = parse_response(&self.line)
            .unwrap_or_else(|e| fault(format_args!("invalid answer to request {id}: {e}")));
        if response.id() != id {
            fault(format_args!(
                "answer carries id {} but request {id} is outstanding",
                response.id()
            ));
        }
        Decision {
            effect: response.result(),
            reason: response.reason().map(str::to_owned),
        }
    }
}

#[cfg(unix)]
fn connect(path: &Path) -> std::io::Result<Stream> {
    Stream::connect(path)
}

#[cfg(windows)]
fn connect(path: &Path) -> std::io::Result<Stream> {
    Stream::connect_by_path(path)
}

/// The uid of the process that created the listening socket, from the kernel.
#[cfg(unix)]
fn peer_uid(stream: &Stream) -> std::io::Result<u32> {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map(|cred| cred.uid())
        .map_err(std::io::Error::from)
}

#[cfg(windows)]
fn peer_uid(_stream: &Stream) -> std::io::Result<u32> {
    Err(std::io::Error::other("a named pipe has no uid"))
}
