//! Policy unit tests: a TOML file of requests with the decision each must get, like `opa test`
//! or `cedar run-tests`. The format is documented in docs/policy.md ("Testing a policy").

use crate::decide::DecidedBy;
use crate::diagnostic::{Diagnostic, Diagnostics, Severity, Source};
use crate::subject::{Directory, Subject};
use crate::{Effect, Permission, Policy};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    case: Vec<Spanned<CaseSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    permission: Permission,
    /// Omitted: null, the whole permission.
    value: Option<String>,
    cwd: Option<String>,
    pid: Option<u32>,
    uid: Option<u32>,
    user: Option<Spanned<String>>,
    gid: Option<u32>,
    groups: Option<Vec<u32>>,
    exe: Option<String>,
    unit: Option<String>,
    /// What resolving the path's symlinks gives (default: the path itself).
    resolved: Option<String>,
    expect: Effect,
    /// The deciding rule's id, `default` or `unresolvable`.
    rule: Option<String>,
    reason: Option<String>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub name: String,
    /// `file:line:column` of the case.
    pub location: String,
    pub passed: bool,
    pub expected: String,
    pub actual: String,
}

#[derive(Debug, Clone, Default)]
pub struct CaseReport {
    pub outcomes: Vec<CaseOutcome>,
}

impl CaseReport {
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }
}

/// Runs every case in `cases` against `policy`. A case file that does not parse is reported as
/// diagnostics, like a policy.
pub fn run_cases(
    policy: &Policy,
    cases: &Source,
    directory: &dyn Directory,
) -> Result<CaseReport, Diagnostics> {
    let file: CaseFile = toml::from_str(&cases.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        Diagnostics(vec![Diagnostic::at(
            cases,
            &span,
            Severity::Error,
            e.message().trim_end().to_owned(),
        )])
    })?;
    let mut report = CaseReport::default();
    let mut problems = Diagnostics::default();
    for spanned in &file.case {
        let case = spanned.get_ref();
        let (line, column) = cases.line_column(spanned.span().start);
        let uid = match &case.user {
            None => case.uid,
            Some(user) => match directory.user(user.get_ref()) {
                Some(uid) => Some(uid),
                None => {
                    problems.push(Diagnostic::at(
                        cases,
                        &user.span(),
                        Severity::Error,
                        format!("unknown user `{}`", user.get_ref()),
                    ));
                    continue;
                }
            },
        };
        let subject = Subject {
            pid: case.pid.unwrap_or(1),
            uid,
            gid: case.gid,
            groups: case.groups.as_deref(),
            exe: case.exe.as_deref(),
            unit: case.unit.as_deref(),
            cwd: case.cwd.as_deref(),
        };
        let mut resolve = |path: &str| Ok(case.resolved.clone().unwrap_or_else(|| path.to_owned()));
        let d = policy.decide(
            case.permission,
            case.value.as_deref(),
            &subject,
            &mut resolve,
        );
        let actual_rule = match d.decided_by {
            DecidedBy::Rule(i) => policy.rule(i).id.as_str(),
            DecidedBy::Default => "default",
            DecidedBy::Unresolvable => "unresolvable",
        };
        let actual_reason = d.reason.as_deref();
        let passed = d.effect == case.expect
            && case.rule.as_deref().is_none_or(|r| r == actual_rule)
            && case
                .reason
                .as_deref()
                .is_none_or(|r| Some(r) == actual_reason);
        let describe = |effect: Effect, rule: Option<&str>, reason: Option<&str>| {
            let mut text = effect.to_string();
            if let Some(rule) = rule {
                text.push_str(&format!(" by `{rule}`"));
            }
            if let Some(reason) = reason {
                text.push_str(&format!(" ({reason:?})"));
            }
            text
        };
        report.outcomes.push(CaseOutcome {
            name: case.name.clone(),
            location: format!("{}:{line}:{column}", cases.name),
            passed,
            expected: describe(case.expect, case.rule.as_deref(), case.reason.as_deref()),
            actual: describe(
                d.effect,
                Some(actual_rule),
                case.reason.as_ref().and(actual_reason),
            ),
        });
    }
    if problems.has_errors() {
        return Err(problems);
    }
    Ok(report)
}
