//! `permission-broker test POLICY CASES`: policy unit tests, decided as the daemon decides.

use super::load_or_report;
use crate::cli::Accounts;
use crate::exit::EXIT_CONFIG;
use permission_broker_policy::{Source, run_cases};
use std::path::Path;
use std::process::ExitCode;

#[allow(clippy::print_stdout)]
pub fn run(policy_path: &Path, cases_path: &Path, accounts: &Accounts) -> ExitCode {
    let (loaded, directory) = match load_or_report(policy_path, accounts) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let text = match std::fs::read_to_string(cases_path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: cannot read cases: {e}", cases_path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let source = Source::new(cases_path.display().to_string(), text);
    let report = match run_cases(&loaded.policy, &source, directory.as_ref()) {
        Ok(report) => report,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for outcome in report.outcomes.iter().filter(|o| !o.passed) {
        println!(
            "{}: case `{}` failed: expected {}, got {}",
            outcome.location, outcome.name, outcome.expected, outcome.actual
        );
    }
    println!("{} passed, {} failed", report.passed(), report.failed());
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
