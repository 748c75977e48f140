//! The decision: which rules apply to a request, deny-overrides, and symlinks.

use crate::compile::{FLAG_DENY, FLAG_WHEN, MatcherKind, Mode, Policy, RuleIndex, Symlinks};
use crate::host::{NetTarget, parse_net_value};
use crate::path::{components, join};
use crate::subject::{Subject, Tri};
use permission_broker_protocol::{Effect, Permission};
use std::borrow::Cow;

/// Resolves the symlinks of an absolute, lexically normalised path as the peer would see it,
/// returning the real path. Called only when the policy says `symlinks = "resolve"`. The daemon
/// passes one that reads the filesystem inside the peer's root; tools and tests pass their own.
pub type Resolver<'r> = &'r mut dyn FnMut(&str) -> Result<String, String>;

/// A resolver for callers that do not look at the filesystem: every path is its own real path.
pub fn lexical_only(path: &str) -> Result<String, String> {
    Ok(path.to_owned())
}

/// What decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    Rule(RuleIndex),
    /// No rule applied: `defaults.decision`.
    Default,
    /// The value could not be interpreted (a relative path without a known working directory, a
    /// malformed host, an unresolvable symlink): denied whatever the rules say.
    Unresolvable,
}

/// The policy's verdict on a request (before `defaults.mode` is applied; see [`Policy::mode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    pub effect: Effect,
    pub decided_by: DecidedBy,
    /// The reason to send with a deny (`None` on allow).
    pub reason: Option<Cow<'p, str>>,
}

/// Whether deciding `value` needs the peer's working directory: a relative path for a
/// path-valued permission, or a relative `unix:` socket. The daemon reads `/proc/<pid>/cwd`
/// only then.
pub fn needs_cwd(permission: Permission, value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    match MatcherKind::of(permission) {
        MatcherKind::Paths => !value.starts_with('/') && value != TEMP_PLACEHOLDER,
        MatcherKind::Hosts => value
            .strip_prefix("unix:")
            .is_some_and(|p| !p.starts_with('/')),
        // A relative command is refused without looking at a working directory (see
        // `Policy::normalize`); names are names.
        MatcherKind::Names => false,
    }
}

/// What Deno sends as the path of `makeTempFile()`/`makeTempDir()` without `dir`.
const TEMP_PLACEHOLDER: &str = "<TMP>";

/// A request's value, normalised for matching (and for logs and `explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved<'v> {
    Null,
    Path(Vec<&'v str>),
    Host(crate::host::HostPort),
    Unix(Vec<&'v str>),
    Name(&'v str),
    /// A `run` value that contains a `/`: a path to an executable, made absolute and normalised
    /// like any path (`/usr/bin/../../tmp/evil.sh` is `/tmp/evil.sh`), matched against `names`.
    Command(String),
}

impl Resolved<'_> {
    /// The normalised value as text: an absolute path, a canonical `host:port`, a name.
    pub fn display(&self) -> Option<String> {
        match self {
            Resolved::Null => None,
            Resolved::Path(parts) => Some(join(parts)),
            Resolved::Host(host) => Some(host.to_string()),
            Resolved::Unix(parts) => Some(format!("unix:{}", join(parts))),
            Resolved::Name(name) => Some((*name).to_owned()),
            Resolved::Command(path) => Some(path.clone()),
        }
    }
}

/// Everything `explain` shows about one request.
#[derive(Debug, Clone)]
pub struct Explanation<'p> {
    pub decision: Decision<'p>,
    /// The value made absolute and normalised (`None` for null).
    pub normalized: Option<String>,
    /// The real path after resolving symlinks, when that was done and differs.
    pub resolved: Option<String>,
    /// Every rule that applied, to either path, in file order.
    pub applicable: Vec<RuleIndex>,
}

/// The first applicable allow and deny rules (lowest index = first in file order).
#[derive(Debug, Default, Clone, Copy)]
struct Firsts {
    allow: Option<RuleIndex>,
    deny: Option<RuleIndex>,
}

impl Firsts {
    fn add(&mut self, index: RuleIndex, effect: Effect) {
        let slot = match effect {
            Effect::Allow => &mut self.allow,
            Effect::Deny => &mut self.deny,
        };
        if slot.is_none_or(|first| index < first) {
            *slot = Some(index);
        }
    }
}

impl Policy {
    /// What Deno is told for `decision` under `defaults.mode`. Enforce: the verdict. Audit: allow —
    /// except `run` with null. Deno asks "may this process run anything?" first and names the
    /// command only when told no; answering allow there would keep every command out of the
    /// record. Denied, Deno asks again with the command, which audit then allows.
    pub fn answer(
        &self,
        permission: Permission,
        value: Option<&str>,
        decision: &Decision<'_>,
    ) -> Effect {
        match self.mode {
            Mode::Enforce => decision.effect,
            Mode::Audit if permission == Permission::Run && value.is_none() => Effect::Deny,
            Mode::Audit => Effect::Allow,
        }
    }

    /// Normalises a request's value: relative paths are joined to the subject's working
    /// directory, then paths are normalised lexically; hosts are put in canonical form.
    pub fn normalize<'v>(
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
            MatcherKind::Hosts => match parse_net_value(value) {
                Ok(NetTarget::Host(host)) => Ok(Resolved::Host(host)),
                Ok(NetTarget::Unix(path)) if path.starts_with('\0') => Err(
                    "denied: an abstract Unix socket (`unix:` with a NUL name) has no file and no permissions of its own, so no policy path can grant it"
                        .to_owned(),
                ),
                Ok(NetTarget::Unix(path)) => resolve_path(path, subject).map(Resolved::Unix),
                Err(e) => Err(format!("denied: cannot interpret {permission} target: {e}")),
            },
            MatcherKind::Names if permission == Permission::Run && value.contains('/') => {
                // Deno runs a relative command against the working directory of the spawn --
                // which the script may set with `cwd` and Deno does not send -- so no directory
                // the broker knows of is the one it runs from.
                if !value.starts_with('/') {
                    return Err(format!(
                        "denied: relative command `{value}`: Deno runs it from a working directory it does not report (the `cwd` option), so it cannot be checked; use the command's absolute path"
                    ));
                }
                resolve_path(value, subject).map(|parts| Resolved::Command(join(&parts)))
            }
            MatcherKind::Names => Ok(Resolved::Name(value)),
        }
    }

    /// Calls `f` for every rule that applies to the request: its value matcher matches and its
    /// `when` matches the subject (an unknown fact: allow rules do not apply, deny rules do).
    /// A rule may be reported more than once.
    pub fn for_each_applicable(
        &self,
        permission: Permission,
        value: &Resolved<'_>,
        subject: &Subject<'_>,
        f: &mut dyn FnMut(RuleIndex),
    ) {
        let table = &self.tables[permission.index()];
        let mut applies = |index: RuleIndex| {
            let flags = self.flags[index.0 as usize];
            let ok = flags & FLAG_WHEN == 0 || {
                let rule = &self.rules[index.0 as usize];
                match rule.when.as_ref().map(|w| w.matches(subject)) {
                    None | Some(Tri::Yes) => true,
                    Some(Tri::Unknown) => flags & FLAG_DENY != 0,
                    Some(Tri::No) => false,
                }
            };
            if ok {
                f(index);
            }
        };
        table.unscoped.iter().copied().for_each(&mut applies);
        match value {
            // The whole permission includes whatever a scoped deny rule denies.
            Resolved::Null => table.scoped_deny.iter().copied().for_each(&mut applies),
            Resolved::Path(parts) => {
                table.paths.for_each_match(parts, &mut applies);
                // Renaming or removing a directory moves or destroys everything below it: a
                // write at or above a tree a `read`/`write` deny rule protects is denied by it.
                if permission == Permission::Write {
                    self.deny_trees.for_each_at_or_below(parts, &mut applies);
                }
            }
            Resolved::Host(host) => {
                table.hosts.for_each_match(host, &mut applies);
                // The same destination written another way (`0.0.0.0`, `[::a9fe:a9fe]`,
                // `[64:ff9b::a9fe:a9fe]`) is still denied where its real address is.
                if host.ip.is_some() {
                    table.hosts.for_each_alias_match(host, &mut |index| {
                        if self.flags[index.0 as usize] & FLAG_DENY != 0 {
                            applies(index);
                        }
                    });
                }
            }
            Resolved::Unix(parts) => table.hosts.for_each_unix_match(parts, &mut applies),
            Resolved::Name(name) => table.names.for_each_match(name, &mut applies),
            Resolved::Command(path) => table.names.for_each_match(path, &mut applies),
        }
    }

    fn firsts(
        &self,
        permission: Permission,
        value: &Resolved<'_>,
        subject: &Subject<'_>,
    ) -> Firsts {
        let mut firsts = Firsts::default();
        self.for_each_applicable(permission, value, subject, &mut |index| {
            let deny = self.flags[index.0 as usize] & FLAG_DENY != 0;
            firsts.add(index, if deny { Effect::Deny } else { Effect::Allow });
        });
        firsts
    }

    /// Decides a request. Any applicable deny rule denies (the first in file order gives the
    /// reason); otherwise any applicable allow rule allows; otherwise `defaults.decision`. With
    /// `symlinks = "resolve"`, a path's real location (from `resolve`) must pass as well.
    pub fn decide<'p>(
        &'p self,
        permission: Permission,
        value: Option<&str>,
        subject: &Subject<'_>,
        resolve: Resolver<'_>,
    ) -> Decision<'p> {
        let normalized = self.normalize(permission, value, subject);
        self.evaluate(permission, &normalized, subject, resolve, None)
    }

    /// [`Policy::decide`] on what [`Policy::normalize`] returned for the request, for a caller
    /// that also uses the normalised value (the daemon's decision log) and should not compute it
    /// twice per request.
    pub fn decide_normalized<'p>(
        &'p self,
        permission: Permission,
        normalized: &Result<Resolved<'_>, String>,
        subject: &Subject<'_>,
        resolve: Resolver<'_>,
    ) -> Decision<'p> {
        self.evaluate(permission, normalized, subject, resolve, None)
    }

    /// [`Policy::decide`], with everything that went into it.
    pub fn explain<'p>(
        &'p self,
        permission: Permission,
        value: Option<&str>,
        subject: &Subject<'_>,
        resolve: Resolver<'_>,
    ) -> Explanation<'p> {
        let mut trace = Trace::default();
        let normalized = self.normalize(permission, value, subject);
        let decision = self.evaluate(permission, &normalized, subject, resolve, Some(&mut trace));
        trace.applicable.sort();
        trace.applicable.dedup();
        Explanation {
            decision,
            normalized: trace.normalized,
            resolved: trace.resolved,
            applicable: trace.applicable,
        }
    }

    fn evaluate<'p>(
        &'p self,
        permission: Permission,
        normalized: &Result<Resolved<'_>, String>,
        subject: &Subject<'_>,
        resolve: Resolver<'_>,
        mut trace: Option<&mut Trace>,
    ) -> Decision<'p> {
        let lexical = match normalized {
            Ok(lexical) => lexical,
            Err(reason) => return unresolvable(reason.clone()),
        };
        if let Some(trace) = trace.as_deref_mut() {
            trace.normalized = lexical.display();
            self.for_each_applicable(permission, lexical, subject, &mut |i| {
                trace.applicable.push(i);
            });
        }
        let mut firsts = self.firsts(permission, lexical, subject);
        // Paths, commands given as paths and `unix:` sockets name files: with `symlinks =
        // "resolve"` their real location must pass as well.
        let path = match (lexical, self.symlinks) {
            (Resolved::Path(parts) | Resolved::Unix(parts), Symlinks::Resolve) => Some(join(parts)),
            (Resolved::Command(path), Symlinks::Resolve) => Some(path.clone()),
            _ => None,
        };
        let real = match path {
            Some(path) => match resolve(&path) {
                Ok(real) if real != path => Some(real),
                Ok(_) => None,
                Err(e) => {
                    return unresolvable(format!(
                        "denied: cannot resolve symlinks in `{path}`: {e}"
                    ));
                }
            },
            None => None,
        };
        if let Some(real) = &real {
            let Some(parts) = components(real) else {
                return unresolvable(format!("denied: `{real}` is not an absolute path"));
            };
            let resolved = match lexical {
                Resolved::Unix(_) => Resolved::Unix(parts),
                Resolved::Command(_) => Resolved::Command(real.clone()),
                _ => Resolved::Path(parts),
            };
            let other = self.firsts(permission, &resolved, subject);
            if let Some(trace) = trace {
                trace.resolved = Some(match lexical {
                    Resolved::Unix(_) => format!("unix:{real}"),
                    _ => real.clone(),
                });
                self.for_each_applicable(permission, &resolved, subject, &mut |i| {
                    trace.applicable.push(i);
                });
            }
            // Both paths must be allowed and neither denied.
            if let Some(d) = other.deny {
                firsts.add(d, Effect::Deny);
            }
            if firsts.deny.is_none() && other.allow.is_none() && self.default_effect == Effect::Deny
            {
                return self.default_deny();
            }
        }
        if let Some(index) = firsts.deny {
            let reason = self.rules[index.0 as usize]
                .reason
                .as_deref()
                .unwrap_or(&self.default_reason);
            return Decision {
                effect: Effect::Deny,
                decided_by: DecidedBy::Rule(index),
                reason: Some(Cow::Borrowed(reason)),
            };
        }
        if let Some(index) = firsts.allow {
            return Decision {
                effect: Effect::Allow,
                decided_by: DecidedBy::Rule(index),
                reason: None,
            };
        }
        match self.default_effect {
            Effect::Deny => self.default_deny(),
            Effect::Allow => Decision {
                effect: Effect::Allow,
                decided_by: DecidedBy::Default,
                reason: None,
            },
        }
    }

    fn default_deny(&self) -> Decision<'_> {
        Decision {
            effect: Effect::Deny,
            decided_by: DecidedBy::Default,
            reason: Some(Cow::Borrowed(self.default_reason.as_str())),
        }
    }
}

#[derive(Debug, Default)]
struct Trace {
    normalized: Option<String>,
    resolved: Option<String>,
    applicable: Vec<RuleIndex>,
}

fn unresolvable<'p>(reason: String) -> Decision<'p> {
    Decision {
        effect: Effect::Deny,
        decided_by: DecidedBy::Unresolvable,
        reason: Some(Cow::Owned(reason)),
    }
}

/// Linux's limit on a path handed to a system call (`PATH_MAX`, bytes, with its NUL).
pub const PATH_MAX: usize = 4096;
/// Linux's limit on one path component (`NAME_MAX`, bytes).
pub const NAME_MAX: usize = 255;

/// A path no system call would take is refused before it is matched: Deno could not open it,
/// and deciding it would only spend the broker's time.
fn check_path_limits(path: &str) -> Result<(), String> {
    if path.len() >= PATH_MAX {
        return Err(format!(
            "denied: a path of {} bytes is longer than the system allows ({} bytes)",
            path.len(),
            PATH_MAX - 1
        ));
    }
    if let Some(long) = path.split('/').find(|c| c.len() > NAME_MAX) {
        return Err(format!(
            "denied: a path component of {} bytes is longer than the system allows ({NAME_MAX} bytes)",
            long.len()
        ));
    }
    Ok(())
}

fn resolve_path<'v>(value: &'v str, subject: &Subject<'v>) -> Result<Vec<&'v str>, String> {
    check_path_limits(value)?;
    // The system stops a path at its first NUL: what the rules see would not be what is opened.
    if value.contains('\0') {
        return Err("denied: a path with a NUL byte in it names no file".to_owned());
    }
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
    // Joined to its working directory, the path must still be one the system takes.
    let joined: usize = parts.iter().map(|p| p.len() + 1).sum();
    if joined >= PATH_MAX {
        return Err(format!(
            "denied: relative path made absolute is {joined} bytes, longer than the system allows ({} bytes)",
            PATH_MAX - 1
        ));
    }
    Ok(parts)
}
