//! Warnings about policies that load but do not mean what their author likely meant.
//!
//! Lints use the compiled indexes, so they cost about one decision per rule entry and stay fast on
//! large policies. They are conservative: a warning is only given when it is certain.

use crate::compile::{Entry, Policy, RuleIndex, RuleSite};
use crate::host::{HostPattern, HostPort, Ports};
use crate::path::{components, is_glob};
use permission_broker_protocol::{Effect, Permission};
use std::ops::Range;

/// The `sys` values Deno 2.9.6 sends (shared/deno/CLIENT-FACTS.md).
pub(crate) const KNOWN_SYS_KINDS: &[&str] = &[
    "hostname",
    "osRelease",
    "loadavg",
    "uid",
    "gid",
    "networkInterfaces",
    "systemMemoryInfo",
    "osUptime",
    "homedir",
    "cpus",
    "statfs",
    "umask",
    "inspector",
    "getPriority",
    "setPriority",
    "setgid",
    "userInfo",
];

/// Trees Deno never grants under a broker, whatever it answers.
const NEVER_GRANTED: &[&str] = &["/proc", "/sys"];

/// (source index, span, message) for each warning.
pub(crate) fn lint(policy: &Policy, rules: &[RuleSite]) -> Vec<(usize, Range<usize>, String)> {
    let mut out = Vec::new();
    for (i, pending) in rules.iter().enumerate() {
        let index = RuleIndex(u32::try_from(i).unwrap_or(u32::MAX));
        let rule = policy.rule(index);
        let id_span = pending.span.clone();
        if let Some(when) = &rule.when
            && let (Some(uids), Some(users)) = (&when.uids, &when.users)
            && !uids.iter().any(|u| users.contains(u))
        {
            let span = pending.when_spans.uids.clone().unwrap_or(id_span.clone());
            out.push((
                pending.source,
                span,
                format!(
                    "rule `{}` can never apply: no uid in `uids` is one of its `users`",
                    rule.id
                ),
            ));
        }
        if rule.effect != Effect::Allow {
            continue;
        }
        let paths: Vec<&str> = pending
            .entries
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Path { path, .. } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        if !paths.is_empty()
            && paths.iter().all(|p| {
                NEVER_GRANTED
                    .iter()
                    .any(|root| p == root || p.starts_with(&format!("{root}/")))
            })
        {
            out.push((
                pending.source,
                id_span.clone(),
                format!(
                    "rule `{}` can never take effect: Deno refuses /proc and /sys under a broker whatever it answers",
                    rule.id
                ),
            ));
        }
        if let Some(by) = covering_deny(policy, pending, index) {
            let deny = policy.rule(by);
            out.push((
                pending.source,
                id_span,
                format!(
                    "allow rule `{}` never allows anything: everything it grants is denied by `{}` ({}:{})",
                    rule.id, deny.id, deny.file, deny.line
                ),
            ));
        }
    }
    out
}

/// A deny rule that applies to everything `allow` grants, to every subject it grants it to.
fn covering_deny(policy: &Policy, allow: &RuleSite, index: RuleIndex) -> Option<RuleIndex> {
    let mut witness = None;
    for &p in &policy.rule(index).permissions {
        let by = covered_for(policy, allow, index, p)?;
        witness.get_or_insert(by);
    }
    witness
}

fn covered_for(
    policy: &Policy,
    allow: &RuleSite,
    index: RuleIndex,
    p: Permission,
) -> Option<RuleIndex> {
    let table = &policy.tables[p.index()];
    let allow_rule = policy.rule(index);
    let fits = |d: RuleIndex| {
        let deny = policy.rule(d);
        deny.effect == Effect::Deny && (deny.when.is_none() || deny.when == allow_rule.when)
    };
    if let Some(&d) = table.unscoped.iter().find(|d| fits(**d)) {
        return Some(d);
    }
    if !allow_rule.scoped {
        return None;
    }
    let mut witness = None;
    for (_, entry) in &allow.entries {
        let mut found = None;
        let mut take = |d: RuleIndex| {
            if found.is_none() && fits(d) {
                found = Some(d);
            }
        };
        match (crate::compile::MatcherKind::of(p), entry) {
            (crate::compile::MatcherKind::Paths, Entry::Path { path, .. }) => {
                // A deny at the entry's literal prefix (or above) covers everything below it.
                let parts = components(path).unwrap_or_default();
                let literal = parts.iter().take_while(|c| !is_glob(c)).count();
                table.paths.for_each_match(&parts[..literal], &mut take);
            }
            (
                crate::compile::MatcherKind::Hosts,
                Entry::Host(HostPattern::Exact { host, ports }),
            ) => {
                let port = match *ports {
                    Ports::Any => None,
                    Ports::Range(lo, hi) if lo == hi => Some(lo),
                    Ports::Range(..) => return None,
                };
                let target = HostPort {
                    host: host.clone(),
                    ip: host.parse().ok(),
                    port,
                };
                table.hosts.for_each_match(&target, &mut take);
            }
            (crate::compile::MatcherKind::Names, Entry::Name(name)) if !name.ends_with('*') => {
                table.names.for_each_match(name, &mut take);
            }
            (kind, entry) if kind == entry.kind() => return None,
            _ => continue,
        }
        witness.get_or_insert(found?);
    }
    witness
}
