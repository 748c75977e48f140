//! The decision: which rules apply to a request, and deny-overrides.

use crate::compile::{MatcherKind, Policy, RuleIndex};
use crate::host::{NetTarget, parse_net_value};
use crate::path::{components, join};
use permission_broker_protocol::{Effect, Permission};
use std::borrow::Cow;

/// The process asking, as the kernel reports it. Facts the daemon could not establish are `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The working directory of the process (`/proc/<pid>/cwd`), needed for relative paths.
    pub cwd: Option<&'a str>,
}

/// What decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    Rule(RuleIndex),
    /// No rule applied: `defaults.decision`.
    Default,
    /// The value could not be interpreted (a relative path without a known working directory, a
    /// malformed host): denied whatever the rules say.
    Unresolvable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    pub effect: Effect,
    pub decided_by: DecidedBy,
    /// The reason to send with a deny (`None` on allow).
    pub reason: Option<Cow<'p, str>>,
}

/// Whether deciding `value` needs the peer's working directory: a relative path for a
/// path-valued permission. The daemon reads `/proc/<pid>/cwd` only then.
pub fn needs_cwd(permission: Permission, value: Option<&str>) -> bool {
    MatcherKind::of(permission) == MatcherKind::Paths
        && value.is_some_and(|v| !v.starts_with('/') && v != TEMP_PLACEHOLDER)
}

/// What Deno sends as the path of `makeTempFile()`/`makeTempDir()` without `dir`.
const TEMP_PLACEHOLDER: &str = "<TMP>";

/// A request's value, normalised for matching (and for logs and `explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved<'v> {
    Null,
    Path(Vec<&'v str>),
    Net(NetTarget<'v>),
    Name(&'v str),
}

impl Resolved<'_> {
    /// The normalised value as text: an absolute path, a canonical `host:port`, a name.
    pub fn display(&self) -> Option<String> {
        match self {
            Resolved::Null => None,
            Resolved::Path(parts) => Some(join(parts)),
            Resolved::Net(NetTarget::Host(host)) => Some(host.to_string()),
            Resolved::Net(NetTarget::Unix(path)) => Some(format!("unix:{path}")),
            Resolved::Name(name) => Some((*name).to_owned()),
        }
    }
}

impl Policy {
    /// Normalises a request's value: relative paths are joined to the subject's working
    /// directory, then paths are normalised lexically; hosts are put in canonical form.
    pub fn resolve<'v>(
        &self,
        permission: Permission,
        value: Option<&'v str>,
        subject: &Subject<'v>,
    ) -> Result<Resolved<'v>, String> {
        let Some(value) = value else {
            return Ok(Resolved::Null);
        };
        match MatcherKind::of(permission) {
            MatcherKind::Paths => resolve_path(value, subject).map(Resolved::Path),
            MatcherKind::Hosts => parse_net_value(value)
                .map(Resolved::Net)
                .map_err(|e| format!("denied: cannot interpret {permission} target: {e}")),
            MatcherKind::Names => Ok(Resolved::Name(value)),
        }
    }

    /// Calls `f` for every rule that applies to the request (each once), in no particular order.
    pub fn for_each_applicable(
        &self,
        permission: Permission,
        resolved: &Resolved<'_>,
        f: &mut dyn FnMut(RuleIndex),
    ) {
        let table = &self.tables[permission.index()];
        table.unscoped.iter().copied().for_each(&mut *f);
        match resolved {
            // The whole permission includes whatever a scoped deny rule denies.
            Resolved::Null => table.scoped_deny.iter().copied().for_each(&mut *f),
            Resolved::Path(parts) => table.paths.for_each_match(parts, f),
            Resolved::Net(NetTarget::Host(host)) => table.hosts.for_each_match(host, f),
            Resolved::Net(NetTarget::Unix(_)) => {}
            Resolved::Name(name) => table.names.for_each_match(name, f),
        }
    }

    /// Decides a request. Any applicable deny rule denies (the first in file order gives the
    /// reason); otherwise any applicable allow rule allows; otherwise `defaults.decision`.
    pub fn decide<'p>(
        &'p self,
        permission: Permission,
        value: Option<&str>,
        subject: &Subject<'_>,
    ) -> Decision<'p> {
        match self.resolve(permission, value, subject) {
            Ok(resolved) => self.decide_resolved(permission, &resolved),
            Err(reason) => Decision {
                effect: Effect::Deny,
                decided_by: DecidedBy::Unresolvable,
                reason: Some(Cow::Owned(reason)),
            },
        }
    }

    pub fn decide_resolved<'p>(
        &'p self,
        permission: Permission,
        resolved: &Resolved<'_>,
    ) -> Decision<'p> {
        let mut first_allow: Option<RuleIndex> = None;
        let mut first_deny: Option<RuleIndex> = None;
        self.for_each_applicable(permission, resolved, &mut |index| {
            let slot = match self.rule(index).effect {
                Effect::Allow => &mut first_allow,
                Effect::Deny => &mut first_deny,
            };
            if slot.is_none_or(|first| index < first) {
                *slot = Some(index);
            }
        });
        if let Some(index) = first_deny {
            let reason = self
                .rule(index)
                .reason
                .as_deref()
                .unwrap_or(&self.default_reason);
            return Decision {
                effect: Effect::Deny,
                decided_by: DecidedBy::Rule(index),
                reason: Some(Cow::Borrowed(reason)),
            };
        }
        if let Some(index) = first_allow {
            return Decision {
                effect: Effect::Allow,
                decided_by: DecidedBy::Rule(index),
                reason: None,
            };
        }
        Decision {
            effect: self.default_effect,
            decided_by: DecidedBy::Default,
            reason: (self.default_effect == Effect::Deny)
                .then_some(Cow::Borrowed(self.default_reason.as_str())),
        }
    }
}

fn resolve_path<'v>(value: &'v str, subject: &Subject<'v>) -> Result<Vec<&'v str>, String> {
    if value == TEMP_PLACEHOLDER {
        return Err(
            "denied: a temporary file or directory without `dir` cannot be checked, because Deno does not say where it will be created; pass `dir`"
                .to_owned(),
        );
    }
    if let Some(parts) = components(value) {
        return Ok(parts);
    }
    if value.is_empty() {
        return Err("denied: empty path".to_owned());
    }
    let Some(cwd) = subject.cwd else {
        return Err(format!(
            "denied: relative path `{value}` cannot be resolved: the working directory of process {} is unknown",
            subject.pid
        ));
    };
    let Some(mut parts) = components(cwd) else {
        return Err(format!(
            "denied: relative path `{value}` cannot be resolved: the working directory of process {} is not absolute",
            subject.pid
        ));
    };
    for part in value.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    Ok(parts)
}
