//! The operators' and security team's tools. Each loads a policy exactly as the daemon does
//! (`policy_files`) and decides with the same pure function (`permission-broker-policy`), so
//! what a tool says is what the daemon does. No tool binds a socket or touches the daemon's
//! state; `ask` is a client of a running daemon.

pub mod ask;
pub mod check;
pub mod explain;
pub mod policy_test;
pub mod suggest;

use crate::exit::EXIT_CONFIG;
use crate::policy_files::{self, LoadedPolicy};
use std::path::Path;
use std::process::ExitCode;

/// Loads a policy for a tool, printing why it does not load (exit 64).
fn load_or_report(path: &Path) -> Result<LoadedPolicy, ExitCode> {
    policy_files::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}
