//! What names a daemon's records for the life of a fleet: the host and boot they were made on,
//! and the run they belong to. A run starts when a daemon starts with nothing handed over, and
//! goes on through every upgrade in place and every restart through the descriptor store (its
//! id is carried in the handover's state), so a connection's `conn` is unique within its run.
//! Every file of the decision log begins with a `kind:"log"` record naming all three.

use std::sync::OnceLock;

static RUN: OnceLock<String> = OnceLock::new();

/// This run's id: the one handed over, or a new one.
pub fn run() -> &'static str {
    RUN.get_or_init(new_run)
}

/// Goes on with the run a previous process handed over (before the first record is written).
#[cfg(unix)]
pub fn adopt_run(run: Option<String>) {
    if let Some(run) = run.filter(|r| !r.is_empty() && r.len() <= 64)
        && RUN.set(run.clone()).is_err()
        && self::run() != run
    {
        tracing::warn!(
            handed_over = run,
            run = self::run(),
            "a run id was handed over after records were written: the log names a new run"
        );
    }
}

fn new_run() -> String {
    // 122 random bits from the kernel; elsewhere, the time and pid.
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|u| u.trim().replace('-', ""))
        .ok()
        .filter(|u| u.len() == 32)
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("{nanos:x}{:x}", std::process::id())
        })
}

/// The kernel's id of this boot: with a pid and its start time, it names one process.
pub fn boot_id() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty())
    })
    .as_deref()
}

/// The host's name.
pub fn host() -> Option<String> {
    #[cfg(unix)]
    {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
    }
    // Windows (compile-gated): the computer name.
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_one_id_for_the_process_and_a_boot_id_is_the_kernels() {
        assert_eq!(run(), run());
        assert!(run().len() >= 16 && run().chars().all(|c| c.is_ascii_hexdigit()));
        #[cfg(target_os = "linux")]
        assert_eq!(boot_id().map(str::len), Some(36));
    }
}
