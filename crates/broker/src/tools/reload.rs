//! `permission-broker reload --status-file FILE`: what `systemctl reload` runs (`ExecReload=`),
//! so that its exit status says whether the new revision serves.
//!
//! 1. Check the policy the daemon serves, as it would load it (64, and no signal, if it does not
//!    load).
//! 2. Read the daemon's status file, and make sure it is the running daemon's: its pid is alive,
//!    runs as the file's owner (or the file is root's), and is `--pid` when given (`$MAINPID`).
//! 3. SIGHUP it and wait until the status file says a reload happened after the signal.
//! 4. Exit 0 if the checked revision serves; 1 if the daemon refused the reload (its first error
//!    is printed) or serves another revision (the files changed since the check); 69 if the
//!    status file is not the running daemon's; 75 if no outcome came within `--timeout`.

use crate::daemon::reload::StatusFile;
use crate::exit::{EXIT_CONFIG, EXIT_UNAVAILABLE};
use crate::policy_files;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// No outcome in time (sysexits EX_TEMPFAIL).
const EXIT_TIMEOUT: u8 = 75;

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// The daemon's status file (`serve --status-file`).
    #[arg(long, value_name = "FILE")]
    pub status_file: PathBuf,
    /// The policy to check [default: the one the status file says the daemon serves].
    #[arg(long, value_name = "FILE_OR_DIR")]
    pub policy: Option<PathBuf>,
    /// The daemon's pid, as the service manager knows it (`$MAINPID`): the status file must be
    /// that process's.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Seconds to wait for the daemon's outcome, 0.1 to 3600 [default: 30].
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

pub fn run(args: &ReloadArgs) -> ExitCode {
    if !(0.1..=3600.0).contains(&args.timeout) {
        eprintln!("--timeout {} is not between 0.1 and 3600", args.timeout);
        return ExitCode::from(EXIT_CONFIG);
    }
    let (before, daemon_uid) = match read_status(&args.status_file, args.pid) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("{}: {e}", args.status_file.display());
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let policy = args.policy.clone().unwrap_or_else(|| before.policy.clone());
    // As the daemon loads it: strict modes judged for the daemon's user, not this one's.
    let checked = match policy_files::load_strict_for(&policy, before.strict_modes, daemon_uid) {
        Ok(loaded) => loaded.revision,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "{}: does not load; the daemon was not signalled and serves {}",
                policy.display(),
                before.revision
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = hangup(before.pid) {
        eprintln!("cannot signal the daemon (pid {}): {e}", before.pid);
        return ExitCode::from(EXIT_UNAVAILABLE);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let after = loop {
        match read_status(&args.status_file, Some(before.pid)) {
            Ok((status, _)) if status.reloads > before.reloads => break status,
            Ok(_) => {}
            Err(e) => {
                eprintln!("{}: {e}", args.status_file.display());
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "the daemon (pid {}) reported no reload within {} s; it serves {}",
                before.pid, args.timeout, before.revision
            );
            return ExitCode::from(EXIT_TIMEOUT);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    match after.last_reload {
        Some(last) if last.outcome == "failed" => {
            eprintln!(
                "the daemon refused the reload and still serves {}: {}",
                after.revision,
                last.error.as_deref().unwrap_or("(no error recorded)")
            );
            ExitCode::FAILURE
        }
        _ if after.revision != checked => {
            eprintln!(
                "the daemon serves {}, not the checked {checked}: the policy changed since the check; run the reload again",
                after.revision
            );
            ExitCode::FAILURE
        }
        _ => {
            eprintln!(
                "serving {} ({} rules); was {}",
                after.revision, after.rules, before.revision
            );
            ExitCode::SUCCESS
        }
    }
}

/// The status file, if it is the running daemon's (its pid and start time name a live process,
/// which owns the file, in a directory only it or root can write), and the daemon's uid.
fn read_status(path: &Path, pid: Option<u32>) -> Result<(StatusFile, Option<u32>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let status: StatusFile =
        serde_json::from_str(&text).map_err(|e| format!("not a status file: {e}"))?;
    if let Some(pid) = pid
        && pid != status.pid
    {
        return Err(format!(
            "written by pid {}, not the daemon's pid {pid}",
            status.pid
        ));
    }
    #[cfg(unix)]
    if pid.is_none() {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::symlink_metadata(path)
            .map_err(|e| e.to_string())?
            .uid();
        if owner != 0 {
            return Err(format!(
                "owned by uid {owner}: a status file that is not root's is believed only for the pid you name (`--pid`, such as `systemctl show -p MainPID --value permission-broker`), since any user can write one naming a process of their own"
            ));
        }
    }
    let uid = owned_by_the_daemon(path, status.pid)?;
    #[cfg(target_os = "linux")]
    {
        let now = crate::daemon::peer::start_time_of(status.pid);
        if status.start_time.is_none() || now != status.start_time {
            return Err(format!(
                "pid {} is not the process that wrote it (started at {:?}, the file says {:?}): a file left by a daemon that is gone",
                status.pid, now, status.start_time
            ));
        }
        if let Some(why) = crate::daemon::reload::untrusted_status_dir(path, uid.unwrap_or(0)) {
            return Err(why);
        }
    }
    Ok((status, uid))
}

/// The file's owner is root or the daemon's user, and the daemon runs; its uid, from the kernel.
#[cfg(target_os = "linux")]
fn owned_by_the_daemon(path: &Path, pid: u32) -> Result<Option<u32>, String> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let process = std::fs::metadata(format!("/proc/{pid}"))
        .map_err(|_| format!("its daemon (pid {pid}) is not running"))?;
    if file.uid() != 0 && file.uid() != process.uid() {
        return Err(format!(
            "owned by uid {}, neither root nor the daemon's uid {}",
            file.uid(),
            process.uid()
        ));
    }
    if file.mode() & 0o022 != 0 {
        return Err("writable by others than its owner".to_owned());
    }
    Ok(Some(process.uid()))
}

// Other platforms (compile-gated): no /proc to check the daemon against.
#[cfg(not(target_os = "linux"))]
fn owned_by_the_daemon(_path: &Path, _pid: u32) -> Result<Option<u32>, String> {
    Ok(None)
}

#[cfg(unix)]
fn hangup(pid: u32) -> Result<(), String> {
    let pid = i32::try_from(pid).map_err(|e| e.to_string())?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| e.to_string())
}

// Windows (compile-gated): no signals; the daemon reloads on its own there.
#[cfg(not(unix))]
fn hangup(_pid: u32) -> Result<(), String> {
    Err("reload by signal is not available on this platform".to_owned())
}
