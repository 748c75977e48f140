//! `permission-broker check FILE_OR_DIR`: does the policy load, and what do its lints say.

use crate::cli::Accounts;
use crate::policy_files;
use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path, accounts: &Accounts) -> ExitCode {
    let directory = match policy_files::accounts(accounts) {
        Ok(directory) => directory,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(crate::exit::EXIT_CONFIG);
        }
    };
    match policy_files::load_with(path, directory.as_ref()) {
        Ok(loaded) => {
            for warning in loaded.warnings.warnings() {
                eprintln!("{warning}");
            }
            // What `serve` refuses (it runs as root or its own user; this check, as whoever runs
            // it, says what it sees).
            for problem in policy_files::insecure(path, &loaded.files) {
                eprintln!(
                    "warning: {problem}: serve refuses this policy unless strict_modes = false"
                );
            }
            eprintln!(
                "{}: ok ({} rules from {} file(s)), revision {}, {} mode; checked by permission-broker {}",
                path.display(),
                loaded.policy.rules().len(),
                loaded.files.len(),
                loaded.revision,
                loaded.policy.mode().as_str(),
                env!("CARGO_PKG_VERSION")
            );
            if loaded.policy.mode() == permission_broker_policy::Mode::Audit {
                eprintln!(
                    "note: this policy is in AUDIT mode: served, every request it would deny is answered allow and only recorded in the decision log"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
