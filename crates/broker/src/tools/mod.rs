//! The operators' and security team's tools. Each loads a policy exactly as the daemon does
//! (`policy_files`) and decides with the same pure function (`permission-broker-policy`), so
//! what a tool says is what the daemon does. No tool binds a socket or touches the daemon's
//! state; `ask` is a client of a running daemon.

pub mod ask;
pub mod check;
pub mod explain;
pub mod policy_test;
pub mod reload;
pub mod replay;
pub mod suggest;

use crate::exit::EXIT_CONFIG;
use crate::policy_files::{self, LoadedPolicy};
use permission_broker_policy::Directory;
use std::path::Path;
use std::process::ExitCode;

/// Loads a policy for a tool with the accounts it was given, printing why it does not load
/// (exit 64).
fn load_or_report(
    path: &Path,
    accounts: &crate::cli::Accounts,
) -> Result<(LoadedPolicy, Box<dyn Directory>), ExitCode> {
    let directory = policy_files::accounts(accounts).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let loaded = policy_files::load_with(path, directory.as_ref()).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    Ok((loaded, directory))
}
