//! `permission-broker`: the daemon (`serve`, in `daemon/`) and the operators' tools (`check`,
//! `explain`, `test`, `suggest`, `reload`, `ask`, in `tools/`). This file parses and dispatches.

mod cli;
mod config_file;
mod daemon;
mod exit;
mod policy_files;
mod settings;
mod tools;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap's own exit code for a bad command line is 2; ours is 64 (sysexits EX_USAGE), the
    // same as for a bad value in the configuration file.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(exit::EXIT_CONFIG),
            };
        }
    };
    match cli.command {
        Command::Serve(args) => daemon::serve(args),
        Command::Check { policy, accounts } => tools::check::run(&policy, &accounts),
        Command::Explain(args) => tools::explain::run(args),
        Command::Test {
            policy,
            cases,
            accounts,
        } => tools::policy_test::run(&policy, &cases, &accounts),
        Command::Suggest {
            decision_log,
            policy,
            collapse,
        } => tools::suggest::run(&decision_log, policy.as_deref(), collapse),
        Command::Replay {
            policy,
            logs,
            accounts,
        } => tools::replay::run(&policy, &logs, &accounts),
        Command::Reload(args) => tools::reload::run(&args),
        Command::Ask {
            socket,
            require_uid,
            any_answer,
            permission,
            value,
        } => tools::ask::run(socket, require_uid, any_answer, permission, value),
    }
}
