//! `permission-broker`: the daemon (`serve`) and the operators' tools (`check`, `ask`).

mod config;
mod connection;
mod decision_log;
mod notify;
mod peer;
mod policy_files;
mod reload;
mod server;
mod suggest;
mod symlinks;
mod tools;
#[cfg(unix)]
mod unix_socket;

use clap::{Parser, Subcommand};
use permission_broker_protocol::{DEFAULT_MAX_FRAME_BYTES, Permission};
use policy_files::LoadError;
use server::{Limits, Shared};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit code for a bad configuration or policy (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code when the socket cannot be taken: in use, or a path that must not be replaced
/// (sysexits EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

#[cfg(unix)]
const DEFAULT_SOCKET: &str = "/tmp/perm.sock";
#[cfg(windows)]
const DEFAULT_SOCKET: &str = r"\\.\pipe\permission-broker";

#[derive(Debug, Parser)]
#[command(
    name = "permission-broker",
    version,
    about = "The out-of-process permission broker for Deno"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker: listen on the socket and answer Deno's permission checks from the policy.
    Serve(ServeArgs),
    /// Validate a policy file or directory: exit 0 if it loads, 1 (with file:line:column
    /// messages) if not.
    Check {
        /// A policy file, or a directory whose `*.toml` files are read in lexical order.
        policy: PathBuf,
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
    },
    /// Turn a decision log recorded under an audit policy into a reviewable enforce-mode policy
    /// (printed on stdout; every entry commented with how often it was asked for).
    Suggest {
        /// A decision log (`serve --decision-log`), typically recorded with `mode = "audit"`.
        decision_log: PathBuf,
    },
    /// Send one permission check to a running broker and print the answer (exit 0 allow,
    /// 1 deny, 87 on a protocol fault).
    Ask {
        /// The broker's socket [default: $DENO_PERMISSION_BROKER_PATH, else the serve default].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Refuse (exit 87) unless the broker runs as this uid, as the kernel reports it.
        #[arg(long, value_name = "UID")]
        require_uid: Option<u32>,
        /// read, write, net, env, sys, run, ffi or import.
        permission: Permission,
        /// The value to ask about; omitted, the whole permission (null).
        value: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    /// A policy file, or a directory whose `*.toml` files are read in lexical order.
    #[arg(long)]
    policy: PathBuf,
    /// read, write, net, env, sys, run, ffi or import.
    #[arg(long)]
    permission: Permission,
    /// The value as Deno would send it; omitted, the whole permission (null).
    #[arg(long)]
    value: Option<String>,
    /// Working directory of the asking process, for relative paths.
    #[arg(long)]
    cwd: Option<String>,
    /// Pid of the asking process (only shown in messages).
    #[arg(long, default_value_t = 1)]
    pid: u32,
    /// Uid of the asking process.
    #[arg(long, conflicts_with = "user")]
    uid: Option<u32>,
    /// User name of the asking process (resolved to its uid).
    #[arg(long)]
    user: Option<String>,
    /// Primary gid of the asking process.
    #[arg(long)]
    gid: Option<u32>,
    /// Supplementary gids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<u32>>,
    /// Executable of the asking process.
    #[arg(long)]
    exe: Option<String>,
    /// systemd unit of the asking process.
    #[arg(long)]
    unit: Option<String>,
    /// Do not resolve symlinks on this machine's filesystem (take paths as written).
    #[arg(long)]
    lexical: bool,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML; see README). Command-line flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Socket path to listen on (a filesystem path; on Windows a named pipe)
    /// [default: /tmp/perm.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Policy file, or directory whose `*.toml` files are read in lexical order
    /// [default: /etc/permission-broker/policy.toml].
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Permissions of the socket file, in octal [default: 600]. Connecting needs write permission.
    #[arg(long, value_parser = parse_mode)]
    socket_mode: Option<u32>,
    /// Group that owns the socket file (with a mode such as 660).
    #[arg(long)]
    socket_group: Option<String>,
    /// Longest request line accepted, in bytes [default: 65536].
    #[arg(long)]
    max_frame_bytes: Option<usize>,
    /// Seconds a peer may take to finish a frame it has started [default: 10]; idle connections
    /// never time out.
    #[arg(long)]
    frame_timeout: Option<f64>,
    /// Connections served at once [default: 16384]; more wait in the kernel's accept queue.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds between checks of the policy files' revision [default: 5], the fallback for
    /// filesystems without change events (changes are otherwise picked up within about 100 ms).
    #[arg(long)]
    poll_interval: Option<f64>,
    /// Do not watch the policy directory for changes (reload on SIGHUP and polling only).
    #[arg(long)]
    no_watch: bool,
    /// Write one JSON line per decision and per protocol fault to this file (appended; reopened
    /// on SIGUSR1), or to stdout with `-`. Without it, decisions are only in debug logs.
    #[arg(long, value_name = "PATH|-")]
    decision_log: Option<String>,
    /// Seconds a decision may wait for room in a full decision-log queue before its connection
    /// is closed unanswered [default: 2] (fail closed; counted as `overloaded`).
    #[arg(long)]
    decision_log_max_wait: Option<f64>,
    /// Only serve peers with these uids (comma-separated; from the kernel, never the request).
    #[arg(long, value_delimiter = ',')]
    allowed_uids: Option<Vec<u32>>,
}

/// The settings `serve` runs with: flags over the configuration file over defaults.
#[derive(Debug)]
struct Settings {
    socket: PathBuf,
    policy: PathBuf,
    socket_mode: u32,
    socket_group: Option<(String, u32)>,
    decision_log: Option<String>,
    decision_log_max_wait: f64,
    poll_interval: f64,
    watch: bool,
    limits: Limits,
    allowed_uids: Option<Vec<u32>>,
}

/// Merges flags, the configuration file and defaults, validating every value; the error is
/// ready to print (`file:line:column: message` for a value from the file).
fn settings(args: ServeArgs) -> Result<Settings, String> {
    let (file, source) = match &args.config {
        Some(path) => {
            let (file, source) = config::read(path)?;
            (file, Some(source))
        }
        None => (config::ConfigFile::default(), None),
    };
    // A value from the file that fails a check is reported at its place in the file.
    let at = |span: Option<std::ops::Range<usize>>, message: String| match (&source, span) {
        (Some(source), Some(span)) => config::error_at(source, &span, message),
        _ => message,
    };
    let pick_f64 = |flag: Option<f64>, file: &Option<toml::Spanned<f64>>, default: f64| match flag {
        Some(v) => (v, None),
        None => file
            .as_ref()
            .map_or((default, None), |v| (*v.get_ref(), Some(v.span()))),
    };
    let pick_usize =
        |flag: Option<usize>, file: &Option<toml::Spanned<usize>>, default: usize| match flag {
            Some(v) => (v, None),
            None => file
                .as_ref()
                .map_or((default, None), |v| (*v.get_ref(), Some(v.span()))),
        };
    let string = |flag: Option<String>, file: &Option<toml::Spanned<String>>| {
        flag.or_else(|| file.as_ref().map(|v| v.get_ref().clone()))
    };
    let socket = args
        .socket
        .or_else(|| file.socket.as_ref().map(|s| PathBuf::from(s.get_ref())))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let policy = args
        .policy
        .or_else(|| file.policy.as_ref().map(|s| PathBuf::from(s.get_ref())))
        .unwrap_or_else(|| PathBuf::from("/etc/permission-broker/policy.toml"));
    let socket_mode = match (args.socket_mode, &file.socket_mode) {
        (Some(mode), _) => mode,
        (None, Some(text)) => parse_mode(text.get_ref()).map_err(|e| at(Some(text.span()), e))?,
        (None, None) => 0o600,
    };
    let socket_group = match string(args.socket_group, &file.socket_group) {
        None => None,
        Some(name) => match group_id(&name) {
            Some(gid) => Some((name, gid)),
            None => {
                return Err(at(
                    file.socket_group.as_ref().map(|g| g.span()),
                    format!("unknown group `{name}`"),
                ));
            }
        },
    };
    let (max_frame_bytes, span) = pick_usize(
        args.max_frame_bytes,
        &file.max_frame_bytes,
        DEFAULT_MAX_FRAME_BYTES,
    );
    if max_frame_bytes < 256 {
        return Err(at(
            span,
            format!(
                "max_frame_bytes {max_frame_bytes} is too small for any real frame (at least 256)"
            ),
        ));
    }
    let (frame_timeout, span) = pick_f64(args.frame_timeout, &file.frame_timeout, 10.0);
    if !(frame_timeout.is_finite() && frame_timeout > 0.0) {
        return Err(at(
            span,
            format!("frame_timeout {frame_timeout} must be a positive number of seconds"),
        ));
    }
    let (max_connections, span) = pick_usize(args.max_connections, &file.max_connections, 16_384);
    if max_connections == 0 {
        return Err(at(span, "max_connections must be at least 1".to_owned()));
    }
    let (poll_interval, span) = pick_f64(args.poll_interval, &file.poll_interval, 5.0);
    if !(poll_interval.is_finite() && poll_interval >= 0.1) {
        return Err(at(
            span,
            format!("poll_interval {poll_interval} must be at least 0.1 seconds"),
        ));
    }
    let (decision_log_max_wait, span) =
        pick_f64(args.decision_log_max_wait, &file.decision_log_max_wait, 2.0);
    if !(decision_log_max_wait.is_finite() && decision_log_max_wait > 0.0) {
        return Err(at(
            span,
            format!(
                "decision_log_max_wait {decision_log_max_wait} must be a positive number of seconds"
            ),
        ));
    }
    Ok(Settings {
        socket,
        policy,
        socket_mode,
        socket_group,
        decision_log: string(args.decision_log, &file.decision_log),
        decision_log_max_wait,
        poll_interval,
        watch: !args.no_watch && file.watch.unwrap_or(true),
        limits: Limits {
            max_frame_bytes,
            frame_timeout: Duration::from_secs_f64(frame_timeout),
            max_connections,
        },
        allowed_uids: args.allowed_uids.or(file.allowed_uids),
    })
}

#[cfg(unix)]
fn group_id(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

#[cfg(not(unix))]
fn group_id(_: &str) -> Option<u32> {
    None
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{text}` is not an octal file mode such as 600 or 660"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging();
            serve(args)
        }
        Command::Check { policy } => check(&policy),
        Command::Explain(args) => tools::explain(args),
        Command::Test { policy, cases } => tools::test(&policy, &cases),
        Command::Suggest { decision_log } => tools::suggest(&decision_log),
        Command::Ask {
            socket,
            require_uid,
            permission,
            value,
        } => ask(socket, require_uid, permission, value),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn check(path: &std::path::Path) -> ExitCode {
    match policy_files::load(path) {
        Ok(loaded) => {
            for warning in loaded.warnings.warnings() {
                eprintln!("{warning}");
            }
            eprintln!(
                "{}: ok ({} rules from {} file(s))",
                path.display(),
                loaded.policy.rules().len(),
                loaded.files.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn ask(
    socket: Option<PathBuf>,
    require_uid: Option<u32>,
    permission: Permission,
    value: Option<String>,
) -> ExitCode {
    use permission_broker_client::{BROKER_PATH_VAR, Client};
    let path = socket
        .or_else(|| std::env::var_os(BROKER_PATH_VAR).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let client = match require_uid {
        Some(uid) => Client::connect_requiring_uid(path, uid),
        None => Client::connect(path),
    };
    let decision = client.check(permission, value.as_deref());
    match (decision.is_allowed(), decision.reason) {
        (true, _) => {
            println!("allow");
            ExitCode::SUCCESS
        }
        (false, Some(reason)) => {
            println!("deny: {reason}");
            ExitCode::FAILURE
        }
        (false, None) => {
            println!("deny");
            ExitCode::FAILURE
        }
    }
}

/// Descriptors a connection holds: its socket and its peer's `/proc/<pid>` handle.
const DESCRIPTORS_PER_CONNECTION: u64 = 2;
/// Descriptors for everything else: listener, log, watcher, runtime, reloads.
const DESCRIPTORS_RESERVED: u64 = 64;

/// Raises the soft open-file limit to the hard one (the soft default, often 1,024, would cap
/// the daemon at about 500 connections), and says so when even the hard limit cannot hold
/// `max_connections`: past it, accepting waits for a connection to close.
#[cfg(unix)]
fn raise_descriptor_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        tracing::warn!(
            soft,
            hard,
            "cannot raise the open-file limit to its hard limit"
        );
    }
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(soft, _)| soft);
    let needed = max_connections as u64 * DESCRIPTORS_PER_CONNECTION + DESCRIPTORS_RESERVED;
    if limit < needed {
        tracing::warn!(
            max_connections,
            needed,
            limit,
            "the open-file limit holds only about {} connections (each needs a socket and a /proc handle); raise LimitNOFILE / ulimit -n or lower max_connections",
            limit.saturating_sub(DESCRIPTORS_RESERVED) / DESCRIPTORS_PER_CONNECTION
        );
    }
}

#[cfg(not(unix))]
fn raise_descriptor_limit(_max_connections: usize) {}

/// A decision log inside the watched policy directory wakes the watcher on every record.
fn warn_if_log_beside_policy(settings: &Settings) {
    let Some(log) = settings.decision_log.as_deref().filter(|t| *t != "-") else {
        return;
    };
    let dir_of = |p: &std::path::Path| {
        let dir = if p.is_dir() {
            p
        } else {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
        };
        std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
    };
    let log_dir = dir_of(std::path::Path::new(log));
    if settings.watch && log_dir.starts_with(dir_of(&settings.policy)) {
        tracing::warn!(
            decision_log = log,
            policy = %settings.policy.display(),
            "the decision log is inside the watched policy directory: every record written wakes the policy watcher; keep it elsewhere (such as /var/log/permission-broker)"
        );
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    // Everything is validated before anything is bound.
    let settings = match settings(args) {
        Ok(settings) => settings,
        Err(message) => {
            tracing::error!("invalid configuration; not starting");
            eprintln!("{message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let loaded = match policy_files::load(&settings.policy) {
        Ok(loaded) => loaded,
        Err(e) => {
            let what = match e {
                LoadError::Read(_) => "cannot read the policy",
                LoadError::Invalid(_) => "the policy does not load",
            };
            tracing::error!("{what}; not starting");
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in loaded.warnings.warnings() {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        rules = loaded.policy.rules().len(),
        files = loaded.files.len(),
        policy = %settings.policy.display(),
        "policy loaded"
    );
    let status = format!(
        "policy {} ({} rules)",
        loaded.revision,
        loaded.policy.rules().len()
    );
    raise_descriptor_limit(settings.limits.max_connections);
    warn_if_log_beside_policy(&settings);
    let store = Arc::new(reload::PolicyStore::new(settings.policy.clone(), loaded));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let watch = reload::WatchConfig {
        debounce: Duration::from_millis(100),
        poll: Duration::from_secs_f64(settings.poll_interval),
        events: settings.watch,
    };
    runtime.block_on(async move {
        let (log, writer) = match &settings.decision_log {
            None => (None, None),
            Some(target) => match decision_log::DecisionLog::start(
                decision_log::Target::parse(target),
                DECISION_LOG_CAPACITY,
                Duration::from_secs_f64(settings.decision_log_max_wait),
            ) {
                Ok((log, writer)) => (Some(log), Some(writer)),
                Err(e) => {
                    tracing::error!("cannot open the decision log `{target}`: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
        };
        let shared = Arc::new(Shared {
            store: store.clone(),
            limits: settings.limits,
            log,
            allowed_uids: settings.allowed_uids.clone(),
        });
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(reload::run(store, watch, reload_rx));
        spawn_hangup_handler(reload_tx);
        let code = serve_on_socket(&settings, shared, &status).await;
        // Every connection has finished; the last senders are gone once `shared` is. Write
        // what is queued before exiting.
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        code
    })
}

/// Records the decision log can queue before decisions wait for the writer.
const DECISION_LOG_CAPACITY: usize = 65_536;

/// SIGHUP reloads the policy (`systemctl reload`, `kill -HUP`). The handler is installed before
/// this returns -- before the daemon says it is ready -- or an early SIGHUP would kill it.
fn spawn_hangup_handler(reload: tokio::sync::mpsc::Sender<&'static str>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler; reload by editing the policy");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading the policy");
                let _ = reload.try_send("SIGHUP");
            }
        });
    }
    #[cfg(not(unix))]
    drop(reload);
}

#[cfg(unix)]
async fn serve_on_socket(settings: &Settings, shared: Arc<Shared>, status: &str) -> ExitCode {
    let path = settings.socket.as_path();
    raise_fd_limit();
    // Socket activation: systemd (or anything speaking LISTEN_FDS) already bound the socket.
    match listenfd::ListenFd::from_env().take_unix_listener(0) {
        Ok(Some(inherited)) => {
            let shown = inherited
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(std::path::Path::to_path_buf))
                .unwrap_or_else(|| path.to_path_buf());
            let listener = match inherited
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixListener::from_std(inherited))
            {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!("cannot use the inherited socket: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(socket = %shown.display(), "using the socket passed by the service manager");
            let stop = stop_signal();
            announce_ready(&shown);
            notify::ready_with_status(status);
            server::run(listener, shared, stop).await;
            notify::stopping();
            tracing::info!("stopped");
            return ExitCode::SUCCESS;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!("LISTEN_FDS is set but fd 3 is not a Unix stream socket: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    }
    let bound = match unix_socket::bind(path, settings.socket_mode) {
        Ok(bound) => bound,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    if let Some((name, gid)) = &settings.socket_group
        && let Err(e) = nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(*gid)))
    {
        tracing::error!("cannot give the socket to group `{name}`: {e}");
        bound.remove();
        return ExitCode::from(EXIT_UNAVAILABLE);
    }
    let listener = match bound
        .listener
        .try_clone()
        .and_then(tokio::net::UnixListener::from_std)
    {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot listen on `{}`: {e}", path.display());
            bound.remove();
            return ExitCode::FAILURE;
        }
    };
    let stop = stop_signal();
    announce_ready(bound.path());
    notify::ready_with_status(status);
    server::run(listener, shared, stop).await;
    notify::stopping();
    bound.remove();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

#[cfg(windows)]
async fn serve_on_socket(settings: &Settings, shared: Arc<Shared>, status: &str) -> ExitCode {
    let path = settings.socket.as_path();
    let name = path.to_string_lossy();
    let listener = match server::windows::bind(&name) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot create named pipe `{name}`: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let stop = stop_signal();
    announce_ready(path);
    notify::ready_with_status(status);
    server::run(listener, shared, stop).await;
    ExitCode::SUCCESS
}

/// The one line on stdout that says the broker accepts connections, and how to use it.
#[allow(clippy::print_stdout)]
fn announce_ready(path: &std::path::Path) {
    tracing::info!(socket = %path.display(), "ready");
    println!(
        "permission-broker ready on {0}; run Deno with: DENO_PERMISSION_BROKER_PATH={0} deno run app.ts",
        path.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when the
/// future is first polled: the daemon calls it before announcing ready.
#[cfg(unix)]
fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Resolves on Ctrl-C (Windows; untested here).
#[cfg(windows)]
fn stop_signal() -> impl Future<Output = ()> {
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Each connection is a descriptor; the default soft limit (1024) would cap the broker far below
/// `--max-connections`. Raise the soft limit to the hard one.
#[cfg(unix)]
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("cannot raise the open-file limit from {soft}: {e}");
    }
}
