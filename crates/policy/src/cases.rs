//! Policy unit tests: a TOML file of requests with the decision each must get, like `opa test`
//! or `cedar run-tests`. The format is documented in docs/policy.md ("Testing a policy").

use crate::decide::DecidedBy;
use crate::diagnostic::{Diagnostic, Diagnostics, Severity, Source};
use crate::subject::{Directory, Subject};
use crate::{Effect, Permission, Policy};
use serde::Deserialize;
use toml::Spanned;

struct CaseFile {
    case: Vec<Spanned<CaseSpec>>,
}

/// Reads a case file, each case on its own: every mistake in it is reported at its place, not
/// only the first.
fn read_cases(cases: &Source) -> Result<CaseFile, Diagnostics> {
    use toml::de::{DeTable, DeValue};
    let error = |span: std::ops::Range<usize>, message: String| {
        Diagnostic::at(cases, &span, Severity::Error, message)
    };
    let located = |e: toml::de::Error, fallback: std::ops::Range<usize>| {
        error(
            e.span().unwrap_or(fallback),
            e.message().trim_end().to_owned(),
        )
    };
    let (root, syntax) = DeTable::parse_recoverable(&cases.text);
    if !syntax.is_empty() {
        return Err(Diagnostics(
            syntax.into_iter().map(|e| located(e, 0..0)).collect(),
        ));
    }
    let mut errors = Vec::new();
    let mut file = CaseFile { case: Vec::new() };
    let mut seen = false;
    for (key, value) in root.into_inner() {
        match (key.get_ref().as_ref(), value.into_inner()) {
            ("case", DeValue::Array(list)) => {
                seen = true;
                for one in list {
                    let span = one.span();
                    match CaseSpec::deserialize(serde::de::IntoDeserializer::into_deserializer(one))
                    {
                        Ok(case) => file.case.push(Spanned::new(span, case)),
                        Err(e) => errors.push(located(e, span)),
                    }
                }
            }
            ("case", _) => errors.push(error(
                key.span(),
                "`case` must be an array of tables (`[[case]]`)".to_owned(),
            )),
            (other, _) => errors.push(error(
                key.span(),
                format!("unknown key `{other}` (a case file has only `[[case]]` tables)"),
            )),
        }
    }
    if !seen && errors.is_empty() {
        errors.push(error(0..0, "no `[[case]]` in the file".to_owned()));
    }
    match errors.is_empty() {
        true => Ok(file),
        false => Err(Diagnostics(errors)),
    }
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
    /// Group names of the process beyond those the directory gives for `gid` and `groups`.
    group_names: Option<Vec<String>>,
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
    let file = read_cases(cases)?;
    // A user name the accounts do not know, or that names another uid than the case's, would
    // decide for a subject nobody meant: refused, every such case at its place.
    let mut errors = Vec::new();
    for spanned in &file.case {
        let case = spanned.get_ref();
        let Some(user) = &case.user else { continue };
        let known = directory.user(user.get_ref());
        let problem = match (known, case.uid) {
            (None, None) => Some(format!(
                "no user `{}` in the accounts (give `uid`, or the passwd file that names it with --passwd)",
                user.get_ref()
            )),
            (Some(known), Some(uid)) if known != uid => Some(format!(
                "user `{}` is uid {known} in the accounts, not uid {uid}",
                user.get_ref()
            )),
            _ => None,
        };
        if let Some(message) = problem {
            errors.push(Diagnostic::at(
                cases,
                &user.span(),
                Severity::Error,
                message,
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    let mut report = CaseReport::default();
    for spanned in &file.case {
        let case = spanned.get_ref();
        let (line, column) = cases.line_column(spanned.span().start);
        // Names as the directory has them (a fleet's accounts, with `--passwd`/`--group`): a
        // case may name a user this host does not have.
        let (uid, user) = match &case.user {
            None => (case.uid, case.uid.and_then(|uid| directory.user_name(uid))),
            Some(user) => (
                case.uid.or_else(|| directory.user(user.get_ref())),
                Some(user.get_ref().clone()),
            ),
        };
        let group = case
            .gid
            .map(|gid| directory.group_name(gid).unwrap_or_default());
        let group_names: Option<Vec<String>> = match (&case.groups, &case.group_names) {
            (None, None) => None,
            (gids, names) => Some(
                gids.iter()
                    .flatten()
                    .filter_map(|g| directory.group_name(*g))
                    .chain(names.iter().flatten().cloned())
                    .collect(),
            ),
        };
        let subject = Subject {
            pid: case.pid.unwrap_or(1),
            uid,
            gid: case.gid,
            groups: case.groups.as_deref(),
            // Known to have no name only where the uid is known.
            user: user.as_deref().or(uid.map(|_| "")),
            group: group.as_deref(),
            group_names: group_names.as_deref(),
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
        // A value the broker could not interpret (a malformed host, a relative path without a
        // working directory, a relative command) is denied whatever the rules say: a case that
        // expects a deny passes on it only if it says `rule = "unresolvable"`, or a typo in a
        // case would pass for the wrong reason.
        let unresolvable_unasked =
            d.decided_by == DecidedBy::Unresolvable && case.rule.as_deref() != Some("unresolvable");
        let passed = d.effect == case.expect
            && !unresolvable_unasked
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
                case.reason
                    .as_ref()
                    .or(unresolvable_unasked.then_some(&String::new()))
                    .and(actual_reason),
            ),
        });
    }
    Ok(report)
}
