//! `permission-broker explain`: how the policy decides one request -- loaded exactly as the
//! daemon loads it and decided by the same pure function, so what it says is what the daemon does.

use super::load_or_report;
use crate::cli::ExplainArgs;
use permission_broker_policy::{DecidedBy, Effect, Mode, Policy, Subject, lexical_only};
use std::path::Path;
use std::process::ExitCode;

fn rule_label(policy: &Policy, by: DecidedBy) -> String {
    match by {
        DecidedBy::Rule(i) => {
            let rule = policy.rule(i);
            format!("rule `{}` ({}:{})", rule.id, rule.file, rule.line)
        }
        DecidedBy::Default => "the default decision (no rule applied)".to_owned(),
        DecidedBy::Unresolvable => "the value could not be interpreted".to_owned(),
    }
}

/// `text` with control characters, line and paragraph separators and bidirectional overrides
/// written as escapes (`\n`, `\u{202e}`), everything else as it is.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    let odd = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !text.chars().any(odd) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if odd(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

pub fn run(args: ExplainArgs) -> ExitCode {
    let (loaded, directory) = match load_or_report(&args.policy, &args.accounts) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let policy = &loaded.policy;
    // A user given by name is that name (its uid, where the accounts know it); a uid has the
    // name the accounts give it. Groups likewise.
    let (uid, user) = match &args.user {
        None => (args.uid, args.uid.and_then(|uid| directory.user_name(uid))),
        Some(name) => match directory.user(name) {
            Some(uid) => (Some(uid), Some(name.clone())),
            // Deciding as if for nobody in particular would answer a question not asked.
            None => {
                let place = match &args.accounts.passwd {
                    Some(passwd) => passwd.display().to_string(),
                    None => "this host's accounts".to_owned(),
                };
                eprintln!(
                    "explain: no user `{name}` in {place}: give --uid, or the passwd file that names it (--passwd)"
                );
                return ExitCode::from(crate::exit::EXIT_CONFIG);
            }
        },
    };
    let group = args
        .gid
        .map(|gid| directory.group_name(gid).unwrap_or_default());
    let group_names: Option<Vec<String>> = args.groups.as_ref().map(|gids| {
        gids.iter()
            .filter_map(|g| directory.group_name(*g))
            .collect()
    });
    let subject = Subject {
        pid: args.pid,
        uid,
        gid: args.gid,
        groups: args.groups.as_deref(),
        // Known to have no name only where the uid is known.
        user: user.as_deref().or(uid.map(|_| "")),
        group: group.as_deref(),
        group_names: group_names.as_deref(),
        exe: args.exe.as_deref(),
        unit: args.unit.as_deref(),
        cwd: args.cwd.as_deref(),
    };
    let mut on_disk = |path: &str| crate::daemon::symlinks::resolve_in_root(Path::new("/"), path);
    let mut as_written = lexical_only;
    let resolve: permission_broker_policy::Resolver<'_> = if args.lexical {
        &mut as_written
    } else {
        &mut on_disk
    };
    let e = policy.explain(args.permission, args.value.as_deref(), &subject, resolve);
    // A link whose path as written would be allowed, denied for where it leads: the link's
    // target decided, and that is said in words (the rules that apply to each path, apart).
    let by_target = match (&e.resolved, e.decision.effect) {
        (Some(target), Effect::Deny) => {
            let mut lexical = lexical_only;
            let as_written = policy.explain(
                args.permission,
                args.value.as_deref(),
                &subject,
                &mut lexical,
            );
            (as_written.decision.effect == Effect::Allow).then(|| {
                let mut lexical = lexical_only;
                let there = policy.explain(args.permission, Some(target), &subject, &mut lexical);
                (target.clone(), as_written, there)
            })
        }
        _ => None,
    };
    let answer = policy.answer(args.permission, args.value.as_deref(), &e.decision);
    let answered = match (policy.mode(), e.decision.effect, answer) {
        (Mode::Audit, Effect::Deny, Effect::Allow) => {
            "deny (audit mode: answered allow, recorded as would-deny)".to_owned()
        }
        (Mode::Audit, verdict, Effect::Deny) => {
            format!("{verdict} (audit mode: answered deny, so that Deno names the command it runs)")
        }
        (_, effect, _) => effect.to_string(),
    };
    // Everything a request or a file name brought in is shown escaped: a value holding
    // `\ndecision:   allow` must not print a line of its own.
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "decision:   {answered}");
    match &by_target {
        None => {
            let _ = writeln!(
                out,
                "decided by: {}",
                shown(&rule_label(policy, e.decision.decided_by))
            );
        }
        Some((target, as_written, _)) => {
            let _ = writeln!(
                out,
                "decided by: {}, for where the link leads ({})",
                shown(&rule_label(policy, e.decision.decided_by)),
                shown(target)
            );
            let _ = writeln!(
                out,
                "because:    the path as written is a link; it alone would be allowed by {}, but where it leads is not, and with symlinks = \"resolve\" both must pass",
                shown(&rule_label(policy, as_written.decision.decided_by))
            );
        }
    }
    if let Some(reason) = &e.decision.reason {
        let _ = writeln!(out, "reason:     {}", shown(reason));
    }
    let _ = writeln!(
        out,
        "request:    {} {}",
        args.permission,
        args.value
            .as_deref()
            .map_or("null (the whole permission)".into(), shown)
    );
    if let Some(normalized) = &e.normalized
        && Some(normalized.as_str()) != args.value.as_deref()
    {
        let _ = writeln!(out, "normalized: {}", shown(normalized));
    }
    if let Some(resolved) = &e.resolved {
        let _ = writeln!(
            out,
            "resolved:   {} (symlinks followed; both paths must pass)",
            shown(resolved)
        );
    }
    let lists: Vec<(&str, &[permission_broker_policy::RuleIndex])> = match &by_target {
        None => vec![("applicable:", &e.applicable)],
        Some((_, as_written, there)) => vec![
            ("applicable to the path as written:", &as_written.applicable),
            ("applicable to where the link leads:", &there.applicable),
        ],
    };
    for (heading, applicable) in lists {
        if applicable.is_empty() {
            let _ = writeln!(out, "{heading} none");
            continue;
        }
        let _ = writeln!(out, "{heading}");
        for i in applicable {
            let rule = policy.rule(*i);
            let _ = writeln!(
                out,
                "  {} `{}` ({}:{})",
                rule.effect,
                rule.id,
                shown(&rule.file),
                rule.line
            );
        }
    }
    // A reader that went away (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    match e.decision.effect {
        Effect::Allow => ExitCode::SUCCESS,
        Effect::Deny => ExitCode::FAILURE,
    }
}
