//! The command line: every subcommand and option, as clap types. Parsing only; what each
//! command does lives in `daemon` (serve) and `tools` (everything else).

use clap::{Parser, Subcommand};
use permission_broker_protocol::Permission;
use std::path::PathBuf;

/// What `--version` says: the broker, and the formats it speaks.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\npolicy format: version 1",
    "\nprotocol: Deno permission broker v1 (Deno 2.5.3 and later; tested with 2.5.3 to 2.9.6)"
);

#[derive(Debug, Parser)]
#[command(
    name = "permission-broker",
    version,
    long_version = LONG_VERSION,
    about = "The out-of-process permission broker for Deno"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker: listen on the socket and answer Deno's permission checks from the policy.
    Serve(ServeArgs),
    /// Validate a policy file or directory: exit 0 if it loads, 1 (with file:line:column
    /// messages) if not.
    Check {
        /// A policy file, or a directory whose `*.toml` files are read in lexical order.
        policy: PathBuf,
        #[command(flatten)]
        accounts: Accounts,
    },
    /// Show how a policy decides one request: the decision, the deciding rule, every rule that
    /// applied, and the value as normalised and resolved (exit 0 allow, 1 deny).
    Explain(ExplainArgs),
    /// Run policy unit tests: a TOML file of requests and the decisions they must get. Prints
    /// each failing case with expected and actual; exit 1 on any mismatch.
    Test {
        /// A policy file, or a directory whose `*.toml` files are read in lexical order.
        policy: PathBuf,
        /// The case file (format: docs/policy.md, "Testing a policy").
        cases: PathBuf,
        #[command(flatten)]
        accounts: Accounts,
    },
    /// Turn a decision log recorded under an audit policy into a reviewable enforce-mode policy
    /// (printed on stdout; every entry commented with how often it was asked for).
    Suggest {
        /// A decision log (`serve --decision-log`), typically recorded with `mode = "audit"`.
        decision_log: PathBuf,
        /// The policy the log was recorded under (a file or a directory): its deny rules are
        /// carried into the suggestion, and what they deny is never granted.
        #[arg(long, value_name = "AUDITED")]
        policy: Option<PathBuf>,
        /// Fold the files of a directory into the directory where more than one was used and no
        /// deny rule covers anything in it (each fold lists the entries it covers). Without it,
        /// exact values only.
        #[arg(long)]
        collapse: bool,
    },
    /// Decide every request recorded in decision logs again under a candidate policy, and report
    /// what would change: each flipped request (allow to deny, deny to allow) with its rule
    /// before and after, counted by rule, unit and executable. Exit 0: nothing changes; 1:
    /// something does; 64: the policy or a log does not load.
    Replay {
        /// The candidate policy (a file or a directory).
        #[arg(long, value_name = "CANDIDATE")]
        policy: PathBuf,
        /// Decision logs (`serve --decision-log`), rotated copies included.
        #[arg(required = true, value_name = "LOG")]
        logs: Vec<PathBuf>,
        #[command(flatten)]
        accounts: Accounts,
    },
    /// Reload a running broker and say whether the new revision serves (what `ExecReload=` runs):
    /// check the policy (64 and no signal if it does not load), SIGHUP the daemon, wait for its
    /// outcome in its status file. Exit 0: the checked revision serves; 1: the daemon refused it
    /// (still serving the last good one) or serves another; 69: the status file is not the
    /// running daemon's; 75: no outcome within --timeout.
    Reload(crate::tools::reload::ReloadArgs),
    /// Send one permission check to a running broker and print the answer (exit 0 allow,
    /// 1 deny, 87 on a protocol fault).
    Ask {
        /// The broker's socket [default: $DENO_PERMISSION_BROKER_PATH, else the serve default].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Refuse (exit 87) unless the broker runs as this uid, as the kernel reports it.
        #[arg(long, value_name = "UID")]
        require_uid: Option<u32>,
        /// Exit 0 on any answer, allow or deny: a health check (the broker answers); a fault
        /// still exits 87.
        #[arg(long)]
        any_answer: bool,
        /// read, write, net, env, sys, run, ffi or import.
        permission: Permission,
        /// The value to ask about; omitted, the whole permission (null).
        value: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// A policy file, or a directory whose `*.toml` files are read in lexical order.
    #[arg(long)]
    pub policy: PathBuf,
    #[command(flatten)]
    pub accounts: Accounts,
    /// read, write, net, env, sys, run, ffi or import.
    #[arg(long)]
    pub permission: Permission,
    /// The value as Deno would send it; omitted, the whole permission (null).
    #[arg(long)]
    pub value: Option<String>,
    /// Working directory of the asking process, for relative paths.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Pid of the asking process (only shown in messages).
    #[arg(long, default_value_t = 1)]
    pub pid: u32,
    /// Uid of the asking process.
    #[arg(long, conflicts_with = "user")]
    pub uid: Option<u32>,
    /// User name of the asking process (resolved to its uid).
    #[arg(long)]
    pub user: Option<String>,
    /// Primary gid of the asking process.
    #[arg(long)]
    pub gid: Option<u32>,
    /// Supplementary gids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub groups: Option<Vec<u32>>,
    /// Executable of the asking process.
    #[arg(long)]
    pub exe: Option<String>,
    /// systemd unit of the asking process.
    #[arg(long)]
    pub unit: Option<String>,
    /// Do not resolve symlinks on this machine's filesystem (take paths as written).
    #[arg(long)]
    pub lexical: bool,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML; see README). Command-line flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Socket path to listen on (a filesystem path; on Windows a named pipe)
    /// [default: /tmp/perm.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Policy file, or directory whose `*.toml` files are read in lexical order
    /// [default: /etc/permission-broker/policy.toml].
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Permissions of the socket file, in octal [default: 600]. Connecting needs write permission.
    #[arg(long, value_parser = parse_mode)]
    pub socket_mode: Option<u32>,
    /// Group that owns the socket file (with a mode such as 660).
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Longest request line accepted, in bytes, 256 to 16777216 (16 MiB) [default: 65536].
    #[arg(long)]
    pub max_frame_bytes: Option<usize>,
    /// Seconds a peer may take to finish a frame it has started, 0.001 to 3600 [default: 10];
    /// idle connections never time out.
    #[arg(long)]
    pub frame_timeout: Option<f64>,
    /// Connections served at once, 1 to 1000000 [default: 16384]; more wait in the kernel's
    /// accept queue.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Seconds one decision may take, 0.001 to 3600 [default: 5]: a request whose file-system
    /// or account lookups do not answer by then (a hung mount) is denied with a reason saying
    /// so, and the lookup is abandoned.
    #[arg(long)]
    pub request_deadline: Option<f64>,
    /// Decisions that may wait on a file system or account database at once on the blocking
    /// pool, 1 to 4096 [default: 64]; busy connections are served by threads of their own, up
    /// to four per worker, which decide in place. A uid may have a quarter of the workers and of the
    /// connection threads in lookups at once (the rest wait until their deadline); one whose
    /// abandoned lookups hold a quarter of the workers is denied at once.
    #[arg(long)]
    pub blocking_threads: Option<usize>,
    /// Connections one uid may hold at once, 1 to max_connections [default: a quarter of
    /// max_connections]; past it a new connection of that uid is closed at accept, so one
    /// user cannot take every connection.
    #[arg(long)]
    pub max_connections_per_uid: Option<usize>,
    /// Seconds between checks of the policy files' revision, 0.1 to 86400 [default: 5], the
    /// fallback for filesystems without change events (changes are otherwise picked up within
    /// about 100 ms).
    #[arg(long)]
    pub poll_interval: Option<f64>,
    /// Do not watch the policy directory for changes (reload on SIGHUP and polling only).
    #[arg(long)]
    pub no_watch: bool,
    /// When a changed policy is served [default: watch]. `watch`: a changed file within about
    /// 100 ms (directory events, then polling). `signal`: only on SIGHUP (`systemctl reload`), or
    /// when the policy path's link or directory is swapped whole (`ln -sfn`, `mv -T`, a `..data`
    /// link) -- never a file as it is written, so a deploy that writes files one at a time is
    /// never served half done. The fleet default.
    #[arg(long, value_enum)]
    pub reload: Option<ReloadMode>,
    /// Serve policy files that users other than root and the daemon's own could change (files or
    /// their directories owned by someone else, or group/world-writable). Off by default, as
    /// sshd's StrictModes: such a file lets its other writers grant themselves anything. For a
    /// laptop with one user.
    #[arg(long)]
    pub no_strict_modes: bool,
    /// Write one JSON line per decision and per protocol fault to this file (appended; reopened
    /// on SIGUSR1), or to stdout with `-`. Without it, decisions are only in debug logs.
    #[arg(long, value_name = "PATH|-")]
    pub decision_log: Option<String>,
    /// Keep a small JSON file here saying what is serving (pid, version, revision) and how the
    /// last reload went, replaced atomically on every reload: what `permission-broker reload`
    /// waits on to say whether a new revision serves.
    #[arg(long, value_name = "PATH")]
    pub status_file: Option<PathBuf>,
    /// The group the decision log file is given (it is created 0640: its owner writes, this group
    /// reads), such as a log shipper's. The daemon must be a member of it (under the unit,
    /// `SupplementaryGroups=`); otherwise the log does not open (exit 64).
    #[arg(long, value_name = "NAME")]
    pub decision_log_group: Option<String>,
    /// Seconds a decision may wait for its record to be written before its connection is
    /// closed unanswered, 0.001 to 3600 [default: 2] (fail closed; counted as `overloaded`).
    #[arg(long)]
    pub decision_log_max_wait: Option<f64>,
    /// Also `fdatasync` the decision log before answering (records that must survive a power
    /// cut, such as audit evidence); commits are grouped across connections.
    #[arg(long)]
    pub decision_log_sync: bool,
    /// Serve Prometheus metrics (`GET /metrics`) and a health check (`GET /healthz`) over HTTP
    /// on this address, such as 127.0.0.1:9464; never on the broker's socket. Under systemd,
    /// prefer a socket unit with `FileDescriptorName=metrics` (systemd/permission-broker-metrics.socket):
    /// a socket passed that way is served instead. Anyone who can reach the address can read
    /// the metrics (rule ids, the policy revision, rates): keep it on loopback or behind a
    /// firewall. If it cannot be bound, the error is logged and decisions are served without it.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<String>,
    /// Only serve peers with these uids (comma-separated; from the kernel, never the request).
    #[arg(long, value_delimiter = ',')]
    pub allowed_uids: Option<Vec<u32>>,
    /// Check that this binary can take over a running daemon started with these arguments:
    /// load the configuration and the policy, bind and open nothing, print the handover
    /// version, exit 0 (64 if they do not load). A daemon runs this before a SIGUSR2 upgrade.
    #[arg(long)]
    pub preflight: bool,
}

/// When a changed policy is served (`serve --reload`, `reload` in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReloadMode {
    Watch,
    Signal,
}

/// Parses an octal file mode (`600`, `0o660`).
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    // Octal digits only: `from_str_radix` would also take a sign (`+600`).
    Some(digits)
        .filter(|d| !d.is_empty() && d.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        .and_then(|d| u32::from_str_radix(d, 8).ok())
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{text}` is not an octal file mode such as 600 or 660"))
}

/// The accounts that `users`/`groups` names are looked up in: this host's (NSS), or a fleet's.
#[derive(Debug, Clone, clap::Args)]
pub struct Accounts {
    /// A passwd(5) file with the fleet's users, instead of this host's accounts (for `users`).
    #[arg(long, value_name = "FILE")]
    pub passwd: Option<PathBuf>,
    /// A group(5) file with the fleet's groups, instead of this host's (for `groups`).
    #[arg(long, value_name = "FILE")]
    pub group: Option<PathBuf>,
}
