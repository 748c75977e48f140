//! `serve`: the daemon. This file is the orchestration, in the order it happens: validate the
//! settings, load the policy, start the decision log and the reloader, install the signal
//! handlers, take the socket, announce readiness, serve until stopped, flush the log.
//!
//! Invariants (see ARCHITECTURE.md): nothing is bound before the settings are validated (the
//! metrics endpoint, if any, is served from then on, so that `/healthz` says 503 while the policy
//! loads; the broker's socket only once the policy loaded); a request
//! that has been read is answered or its connection closed; no answer leaves before its record is
//! queued; a policy that fails to load never replaces the running one.

pub mod connection;
pub mod decision_log;
mod descriptors;
#[cfg(unix)]
pub mod fd_store;
pub mod forensics;
#[cfg(unix)]
pub mod handover;
mod listener;
pub mod metrics;
mod metrics_endpoint;
pub mod notify;
pub mod peer;
mod protected;
pub mod reload;
pub mod server;
pub mod serving;
mod signals;
pub mod symlinks;
#[cfg(unix)]
pub mod unix_socket;
mod working_dirs;

use crate::cli::ServeArgs;
use crate::exit::EXIT_CONFIG;
use crate::policy_files::{self, LoadError};
use crate::settings::{self, Settings};
use server::Shared;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Records the decision log can queue before decisions wait for the writer.
const DECISION_LOG_CAPACITY: usize = 65_536;

pub fn serve(args: ServeArgs) -> ExitCode {
    init_logging();
    let config_file = args.config.clone();
    let preflight = args.preflight;
    // Where an upgrade's binary is: the path this process was started from, read before
    // anything else can change what it means.
    #[cfg(unix)]
    let upgrade = handover::Target::of_this_process();
    // Everything is validated before anything is bound.
    let mut settings = match settings::merge(args) {
        Ok(settings) => settings,
        Err(message) => {
            tracing::error!("invalid configuration; not starting");
            eprintln!("{message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // What the service manager or the previous process passed, read once; the metrics socket
    // among it is served now, so that `/healthz` says 503 while the policy loads (never by a
    // preflight, which binds nothing). Taking over from a process that was serving a moment ago,
    // it is served once the policy loaded: scrapes wait in its queue for those milliseconds
    // rather than see the host's broker "starting" at every upgrade.
    #[cfg(unix)]
    let mut passed = handover::Passed::from_env();
    #[cfg(unix)]
    let takeover = passed.is_takeover();
    #[cfg(not(unix))]
    let takeover = false;
    let exporter = Arc::new(metrics::Exporter::default());
    let mut metrics_later = None;
    if !preflight {
        #[cfg(unix)]
        let metrics_socket = passed.take_metrics();
        #[cfg(not(unix))]
        let metrics_socket = None;
        let endpoint = open_metrics(&settings, metrics_socket);
        match (endpoint, takeover) {
            (Some(endpoint), true) => metrics_later = Some(endpoint),
            (Some(endpoint), false) => metrics_endpoint::start(endpoint, exporter.clone()),
            (None, _) => {}
        }
    }
    let loaded = match policy_files::load_strict(&settings.policy, settings.strict_modes) {
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
    #[cfg(unix)]
    if preflight {
        if let Some(target) = &settings.decision_log
            && let Err(e) = decision_log::Target::parse(target).check_openable()
        {
            tracing::error!("cannot open the decision log `{target}`: {e}; not starting");
            eprintln!("cannot open the decision log `{target}`: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        #[allow(clippy::print_stdout)]
        {
            println!(
                "{} {}; policy {} ({} rules)",
                handover::PREFLIGHT_OK,
                handover::VERSION,
                loaded.revision,
                loaded.policy.rules().len()
            );
        }
        return ExitCode::SUCCESS;
    }
    #[cfg(not(unix))]
    if preflight {
        eprintln!("--preflight: upgrades in place are not available on this platform");
        return ExitCode::from(EXIT_CONFIG);
    }
    if settings.reload == crate::cli::ReloadMode::Signal {
        tracing::info!(
            "reload = \"signal\": a changed policy is served only on SIGHUP or when the policy path is swapped whole"
        );
    }
    tracing::info!(
        rules = loaded.policy.rules().len(),
        files = loaded.files.len(),
        policy = %settings.policy.display(),
        revision = %loaded.revision,
        mode = loaded.policy.mode().as_str(),
        version = env!("CARGO_PKG_VERSION"),
        "policy loaded"
    );
    reload::warn_if_audit(&loaded.policy, &loaded.revision);
    let status = reload::status_line(
        &loaded.revision,
        loaded.policy.rules().len(),
        loaded.policy.mode() == permission_broker_policy::Mode::Audit,
    );
    #[cfg(unix)]
    if let Some(status_file) = &settings.status_file
        && let Some(why) =
            reload::untrusted_status_dir(status_file, nix::unistd::geteuid().as_raw())
    {
        tracing::error!(
            "the status file `{}` cannot be trusted: {why}; not starting",
            status_file.display()
        );
        eprintln!(
            "the status file `{}` cannot be trusted: {why}",
            status_file.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some(holds) = descriptors::raise_limit() {
        settings.fit_connections(holds);
    }
    warn_if_log_beside_policy(&settings);
    let store = Arc::new(reload::PolicyStore::new(
        settings.policy.clone(),
        loaded,
        settings.strict_modes,
    ));
    // Every thread the daemon starts blocks the handled signals (they inherit this thread's
    // mask); only this one, the thread that would execve an upgrade, unblocks them once the
    // handlers are in place. So an upgrade can hold every signal pending across its execve.
    #[cfg(unix)]
    signals::block_handled();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The connection threads, the decision pool's slots, and room for the reloader's and
        // the log's own work.
        .max_blocking_threads(
            connection_threads(settings.blocking_threads) + settings.blocking_threads + 16,
        )
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
        commit_only: settings.reload == crate::cli::ReloadMode::Signal,
    };
    let code = runtime.block_on(async move {
        let (log, writer) = match &settings.decision_log {
            None => (None, None),
            Some(target) => match decision_log::DecisionLog::start(
                decision_log::Target::parse(target),
                decision_log::Options {
                    capacity: DECISION_LOG_CAPACITY,
                    max_wait: Duration::from_secs_f64(settings.decision_log_max_wait),
                    sync: settings.decision_log_sync,
                    group: settings.decision_log_group.as_ref().map(|(_, gid)| *gid),
                },
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
            fault_warnings: connection::FaultWarnings::default(),
            threads: serving::Threads::new(connection_threads(settings.blocking_threads)),
            blocking: server::BlockingPool::new(
                settings.blocking_threads,
                settings.request_deadline,
            ),
            protected: protected::Protected::new(
                &settings.socket,
                &settings.policy,
                config_file.as_deref(),
                settings
                    .decision_log
                    .as_deref()
                    .filter(|log| *log != "-")
                    .map(std::path::Path::new),
            ),
        });
        exporter.serving(&shared);
        if let Some(endpoint) = metrics_later {
            metrics_endpoint::start(endpoint, exporter.clone());
        }
        if writer.is_none() {
            signals::ignore_reopen_without_a_log();
        }
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        let report = reload::Reporter {
            log: shared.log.as_ref().map(decision_log::DecisionLog::detached),
            status_file: settings.status_file.clone(),
        };
        {
            let (report, store) = (report.clone(), store.clone());
            let _ = tokio::task::spawn_blocking(move || report.write_status(&store, None)).await;
        }
        tokio::spawn(reload::run(store, watch, reload_rx, report));
        signals::spawn_hangup_handler(reload_tx);
        let stats = shared.log.as_ref().map(|log| log.stats.clone());
        let finisher = shared.log.as_ref().map(decision_log::DecisionLog::finisher);
        #[cfg(unix)]
        let code = listener::serve_on_socket(&settings, shared, &status, upgrade, passed).await;
        #[cfg(not(unix))]
        let code = listener::serve_on_socket(&settings, shared, &status).await;
        // Every connection has finished. Write what is queued, within a bound, before exiting;
        // the writer is told to stop after it, since a decision abandoned on a stalled mount
        // may still hold a sender.
        if let Some(finisher) = finisher {
            finisher.finish().await;
        }
        if let Some(writer) = writer
            && tokio::time::timeout(LOG_FLUSH_TIMEOUT, writer)
                .await
                .is_err()
        {
            tracing::error!(
                "the decision log did not finish writing within {LOG_FLUSH_TIMEOUT:?}; exiting"
            );
        }
        if let Some(stats) = stats {
            stats.report_at_exit();
        }
        if let Some(status_file) = &settings.status_file {
            reload::remove_status_file(status_file);
        }
        code
    });
    // Threads stuck in a stalled lookup are not waited for.
    runtime.shutdown_background();
    code
}

/// The metrics socket: the one the service manager passed, or one bound at `metrics_listen`.
fn open_metrics(
    settings: &Settings,
    passed: Option<Result<std::net::TcpListener, String>>,
) -> Option<metrics_endpoint::Endpoint> {
    let endpoint = metrics_endpoint::open(settings.metrics_listen, passed)?;
    if let Some(addr) = endpoint.addr()
        && !addr.ip().is_loopback()
    {
        tracing::warn!(
            "metrics are served on {addr}, beyond this host's loopback: anyone who can reach it reads them without authentication (rule ids, the policy revision, rates); restrict it with a firewall or the socket unit's IPAddressAllow="
        );
    }
    Some(endpoint)
}

/// How long the exit waits for the decision log to write what is queued.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How many connections may be served by a thread of their own at once: four for each slot of
/// the decision pool (a connection thread decides in place while it holds a slot). Connections
/// past that are served from the event loop.
fn connection_threads(blocking_threads: usize) -> usize {
    blocking_threads.saturating_mul(4)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if stderr_is_the_journal() {
        // journald takes the priority from a `<N>` prefix (sd-daemon(3)) and stamps the time
        // itself: `journalctl -p err` then shows a failed reload.
        builder
            .with_ansi(false)
            .without_time()
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// Whether stderr is the journal's stream: `$JOURNAL_STREAM` names its device and inode
/// (systemd.exec(5)), and a stderr redirected elsewhere since does not match.
fn stderr_is_the_journal() -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
            return false;
        };
        stream.to_string_lossy() == format!("{}:{}", st.st_dev, st.st_ino)
    }
    #[cfg(not(unix))]
    false
}

/// A log line with journald's `<N>` priority prefix in front.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

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
