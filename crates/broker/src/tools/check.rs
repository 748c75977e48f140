//! `permission-broker check FILE_OR_DIR`: does the policy load, and what do its lints say.

use crate::policy_files;
use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path) -> ExitCode {
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
