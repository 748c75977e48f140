//! `permission-broker suggest DECISION_LOG [--policy AUDITED] [--collapse]`: turn what a fleet did
//! under an audit policy into a reviewable enforce-mode policy — the observe-then-enforce rollout.
//!
//! The suggestion grants what was observed, and nothing broader:
//!
//! - Only *candidates* are granted: requests the policy allowed, or denied by default (what the
//!   audit is for: not covered yet). A request that a rule denied — one of the policy's deny rules,
//!   `unresolvable` or `broker-files` — is never granted; it is listed in a comment and stays
//!   denied. With `--policy`, the audited policy's deny rules are carried into the suggestion as
//!   written; a denied request that an allowed directory would otherwise cover gets a deny rule of
//!   its own — or, where that rule would also deny something granted (a fact of the denied
//!   process was unknown; a granted write is above it, and a deny protects its tree from renames),
//!   the allow entry over it is left out instead, and listed.
//! - One allow rule per asking process and permission, whose `when` names exactly what was
//!   recorded about the process: its uid, and its executable and unit where they were recorded
//!   (the daemon reads those only for a policy with a `when`). A record with none of them is not
//!   granted: a rule without `when` would grant it to every process.
//! - Exact values. A path is written so that it matches only itself: a glob metacharacter in it
//!   becomes a one-character class (`[*]`, `[[]`), as the policy's glob compiler reads it. Like
//!   every policy path it still covers its subtree (the language has no "this file only"); that is
//!   the one way an entry reaches past what was asked. Hosts keep their port; names are exact. What
//!   no entry can name exactly — a host without a port (an entry without a port allows every
//!   port), a name containing `*` (a wildcard in `names`), a relative path, the whole permission
//!   (null) — is listed for a human to decide, never granted. A bare `run` name is granted as
//!   written, in a rule marked `trusts_path = true` for review (the script's PATH decides what
//!   it runs). Where symlinks are resolved, a path's recorded real location is granted with it.
//! - `--collapse` folds the files of a directory into the directory, only where more than one of
//!   them was used, and never over a path that a deny rule covers (one carried from the audited
//!   policy, or one a rule was observed to deny); each fold lists the entries it replaces.
//!
//! Before anything is printed the suggestion is compiled and every observed request decided
//! again, with the subject facts the log recorded: each granted request must be allowed and each
//! rule-denied one denied. Otherwise `suggest` fails rather than print a policy that does not do
//! what it says.

use crate::policy_files::{self, SystemDirectory};
use permission_broker_policy::{
    DecidedBy, Directory, Effect, Permission, Policy, Rule, Source, Subject, Symlinks, When,
    normalize_absolute, parse_host,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

/// What `suggest` takes besides the log.
#[derive(Debug, Default)]
pub struct Options {
    /// The policy the log was recorded under (`--policy`).
    pub audited: Option<Audited>,
    /// `--collapse`: fold the files of a directory into the directory where that is safe.
    pub collapse: bool,
}

/// The audited policy, as far as a suggestion needs it: its deny rules and its symlink mode.
#[derive(Debug)]
pub struct Audited {
    /// As given on the command line.
    pub name: String,
    pub symlinks: Symlinks,
    /// The deny rules, in file order.
    pub denies: Vec<Carried>,
}

/// A deny rule of the audited policy, carried into the suggestion as written.
#[derive(Debug, Clone)]
pub struct Carried {
    pub rule: Rule,
    /// Its `paths`, as written: what `--collapse` must not fold over.
    paths: Vec<String>,
    /// Its keys as TOML lines (`id = …`, `effect = …`, …).
    body: String,
}

impl Audited {
    /// Loads the policy at `path` the way the daemon does, then takes its deny rules' text from
    /// the same files.
    pub fn load(path: &Path) -> Result<Audited, String> {
        let loaded = policy_files::load(path).map_err(|e| e.to_string())?;
        let name = path.display().to_string();
        let changed = || {
            format!("`{name}`: the policy files changed while they were read; run `suggest` again")
        };
        // Rule ids are unique across the files: id -> (file, table).
        let mut written: BTreeMap<String, (String, toml::Table)> = BTreeMap::new();
        for file in &loaded.files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("{}: cannot read policy file: {e}", file.display()))?;
            let table: toml::Table = toml::from_str(&text).map_err(|_| changed())?;
            let Some(toml::Value::Array(rules)) = table.get("rule") else {
                continue;
            };
            for rule in rules {
                if let toml::Value::Table(rule) = rule
                    && let Some(id) = rule.get("id").and_then(toml::Value::as_str)
                {
                    written.insert(id.to_owned(), (file.display().to_string(), rule.clone()));
                }
            }
        }
        let mut denies = Vec::new();
        for rule in loaded.policy.rules() {
            if rule.effect != Effect::Deny {
                continue;
            }
            match written.get(&rule.id) {
                Some((file, table))
                    if *file == rule.file
                        && table.get("effect").and_then(toml::Value::as_str) == Some("deny") =>
                {
                    denies.push(Carried::new(rule.clone(), table));
                }
                _ => return Err(changed()),
            }
        }
        Ok(Audited {
            name,
            symlinks: loaded.policy.symlinks(),
            denies,
        })
    }
}

impl Carried {
    fn new(rule: Rule, table: &toml::Table) -> Carried {
        let mut body = String::new();
        for key in [
            "id",
            "effect",
            "permissions",
            "paths",
            "hosts",
            "names",
            "when",
        ] {
            if let Some(value) = table.get(key) {
                let _ = writeln!(body, "{key} = {}", toml_value(value));
            }
        }
        // The reason as the daemon sends it (sanitised when the policy compiled).
        if let Some(reason) = &rule.reason {
            let _ = writeln!(body, "reason = {}", toml_string(reason));
        }
        let paths = match table.get("paths") {
            Some(toml::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Carried { rule, paths, body }
    }

    /// Whether this rule may deny something at or below `dir` (or `dir` itself, from above) for
    /// `permission`, to a process an allow rule with `facts` applies to. Conservative: a glob
    /// counts from its literal prefix on.
    fn may_cover(&self, permission: Permission, facts: &Facts, dir: &str) -> bool {
        if !self.rule.permissions.contains(&permission)
            || !facts.deny_may_apply(self.rule.when.as_ref())
        {
            return false;
        }
        if !self.rule.scoped {
            return true;
        }
        self.paths.iter().any(|entry| {
            let prefix = literal_prefix(entry);
            path_covers(&prefix, dir) || path_covers(dir, &prefix)
        })
    }
}

/// What a suggestion does with an observed candidate it does not grant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Withheld {
    /// A request for the whole permission (null).
    Null,
    /// No entry names the value exactly (why).
    Value(String),
    /// No `when` names the asking process exactly (why).
    Subject(String),
    /// The audited policy's deny rule (this id) denies it: the log was recorded under another
    /// revision of the policy.
    DeniedByAudited(String),
    /// Granting it would also grant the request on this line of the log, which a rule denied,
    /// and a deny rule for that request would also deny one granted here: a fact of the denied
    /// process was unknown (a deny rule applies to unknown facts), or a granted write is at or
    /// above it (a `read`/`write` deny rule denies renaming or removing what holds its tree).
    WouldGrantDenied(usize),
}

impl Withheld {
    fn explain(&self) -> String {
        match self {
            Withheld::Null => "the whole permission (null)".to_owned(),
            Withheld::Value(why) | Withheld::Subject(why) => why.clone(),
            Withheld::DeniedByAudited(id) => format!(
                "the audited policy's deny rule `{id}` denies it (was the log recorded under another revision of the policy?)"
            ),
            Withheld::WouldGrantDenied(line) => format!(
                "granting it would also grant the request on line {line} of the log, which a rule denied, and a deny rule for that one would also deny a request granted here"
            ),
        }
    }
}

/// A suggested policy, with what became of every observed request.
#[derive(Debug)]
pub struct Suggestion {
    pub text: String,
    /// Log lines (1-based) of the candidates it grants.
    pub granted: Vec<usize>,
    /// Log lines of the candidates it does not grant, and why.
    pub withheld: Vec<(usize, Withheld)>,
    /// Log lines of the requests a rule denied (never granted).
    pub denied: Vec<usize>,
}

/// One decision record.
#[derive(Debug)]
struct Observation {
    line: usize,
    permission: Permission,
    /// The value made absolute and normalised where the daemon recorded that (`resolved`), else
    /// as sent; `None` for null.
    lexical: Option<String>,
    /// Its real location, symlinks followed, where that differs.
    target: Option<String>,
    decision: Effect,
    rule: String,
    reason: Option<String>,
    pid: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    exe: Option<String>,
    unit: Option<String>,
}

impl Observation {
    /// Denied by a rule (the policy's, `unresolvable` or `broker-files`), not by default.
    fn denied_by_rule(&self) -> bool {
        self.decision == Effect::Deny && self.rule != "default"
    }

    /// The value for an error message: in backticks, control characters escaped.
    fn ticked(&self) -> String {
        self.lexical
            .as_deref()
            .map_or_else(|| "null".to_owned(), |v| format!("`{}`", v.escape_debug()))
    }

    fn shown(&self) -> String {
        self.lexical
            .as_deref()
            .map_or_else(|| "null".to_owned(), quoted)
    }
}

/// What a `when` says about the asking process: its uid, executable and unit, each where known.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Facts {
    uid: Option<u32>,
    exe: Option<String>,
    unit: Option<String>,
}

impl Facts {
    /// For an allow rule: exactly what was recorded. An empty executable or unit (known to be in
    /// no unit) is nothing a `when` can name, so it is left out like an unknown one.
    fn for_allow(o: &Observation) -> Result<Facts, String> {
        let facts = Facts {
            uid: o.uid,
            exe: o.exe.clone().filter(|e| !e.is_empty()),
            unit: o.unit.clone().filter(|u| !u.is_empty()),
        };
        if let Some(exe) = &facts.exe
            && !executable_name(exe)
        {
            return Err(format!(
                "its executable {} is not a normalised absolute path, which `executables` cannot name",
                quoted(exe)
            ));
        }
        if let Some(unit) = &facts.unit
            && !unit_name(unit)
        {
            return Err(format!(
                "its unit {} is not a name `units` can hold",
                quoted(unit)
            ));
        }
        if facts == Facts::default() {
            return Err("no uid, executable or unit was recorded for the asking process: a rule without `when` would grant it to every process".to_owned());
        }
        Ok(facts)
    }

    /// For a deny rule: what can be named. A fact that cannot is left out, so that the rule
    /// covers more processes rather than fewer.
    fn for_deny(o: &Observation) -> Facts {
        Facts {
            uid: o.uid,
            exe: o.exe.clone().filter(|e| executable_name(e)),
            unit: o.unit.clone().filter(|u| unit_name(u)),
        }
    }

    /// An allow rule with this `when` applies to `o`: every fact it names is known and equal.
    fn allow_applies(&self, o: &Observation) -> bool {
        self.uid.is_none_or(|u| o.uid == Some(u))
            && self.exe.as_ref().is_none_or(|e| o.exe.as_ref() == Some(e))
            && self
                .unit
                .as_ref()
                .is_none_or(|u| o.unit.as_ref() == Some(u))
    }

    /// A deny rule with this `when` applies to `o`: every fact it names is equal or unknown.
    fn deny_applies(&self, o: &Observation) -> bool {
        self.uid.is_none_or(|u| o.uid.is_none_or(|x| x == u))
            && self
                .exe
                .as_ref()
                .is_none_or(|e| o.exe.as_ref().is_none_or(|x| x == e))
            && self
                .unit
                .as_ref()
                .is_none_or(|u| o.unit.as_ref().is_none_or(|x| x == u))
    }

    /// Whether a deny rule with `when` may apply to some process an allow rule with these facts
    /// applies to: only a known fact that the `when` excludes rules that out. (`users`, `gids`
    /// and `groups` are not among these facts, so they never rule it out.)
    fn deny_may_apply(&self, when: Option<&When>) -> bool {
        let Some(when) = when else { return true };
        let excluded = |list: &Option<Vec<String>>, fact: &Option<String>| matches!((list, fact), (Some(list), Some(fact)) if !list.contains(fact));
        let uid_excluded =
            matches!((&when.uids, self.uid), (Some(uids), Some(uid)) if !uids.contains(&uid));
        !(uid_excluded
            || excluded(&when.executables, &self.exe)
            || excluded(&when.units, &self.unit))
    }

    /// `when = { … }`, or `None` for a process nothing is known about.
    fn when(&self) -> Option<String> {
        let mut keys = Vec::new();
        if let Some(uid) = self.uid {
            keys.push(format!("uids = [{uid}]"));
        }
        if let Some(exe) = &self.exe {
            keys.push(format!("executables = [{}]", toml_string(exe)));
        }
        if let Some(unit) = &self.unit {
            keys.push(format!("units = [{}]", toml_string(unit)));
        }
        (!keys.is_empty()).then(|| format!("when = {{ {} }}", keys.join(", ")))
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(uid) = self.uid {
            parts.push(format!("uid {uid}"));
        }
        if let Some(exe) = &self.exe {
            parts.push(format!("executable {}", quoted(exe)));
        }
        if let Some(unit) = &self.unit {
            parts.push(format!("unit {}", quoted(unit)));
        }
        if parts.is_empty() {
            "any process".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// What `executables` can name: an absolute path, already normalised (the policy normalises
/// its entries; the process's path is compared as recorded).
fn executable_name(exe: &str) -> bool {
    normalize_absolute(exe).as_deref() == Some(exe)
}

/// What `units` accepts.
fn unit_name(unit: &str) -> bool {
    !unit.is_empty() && !unit.contains('/') && !unit.chars().any(char::is_whitespace)
}

/// An observed value in the form an entry names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    /// A normalised absolute path (`read`, `write`, `ffi`).
    Path(String),
    /// A Unix socket's normalised absolute path (`net`, `import`).
    Unix(String),
    /// A canonical `host:port`.
    Host(String),
    /// An exact name, or a command's normalised absolute path.
    Name(String),
}

impl Key {
    /// Whether an entry for `self` matches `other`: a path its subtree, anything else itself.
    fn covers(&self, other: &Key) -> bool {
        match (self, other) {
            (Key::Path(a), Key::Path(b)) | (Key::Unix(a), Key::Unix(b)) => path_covers(a, b),
            (Key::Host(a), Key::Host(b)) | (Key::Name(a), Key::Name(b)) => a == b,
            _ => false,
        }
    }

    /// The policy entry that matches exactly this value (and, for a path, its subtree).
    fn entry(&self) -> String {
        match self {
            Key::Path(path) => literal_path(path),
            Key::Unix(path) => format!("unix:{path}"),
            Key::Host(text) | Key::Name(text) => text.clone(),
        }
    }

    /// The value as observed.
    fn shown(&self) -> String {
        match self {
            Key::Unix(path) => format!("unix:{path}"),
            Key::Path(text) | Key::Host(text) | Key::Name(text) => text.clone(),
        }
    }
}

/// The key an observed value is granted under, or why no entry names it exactly.
fn key_of(permission: Permission, value: &str) -> Result<Key, String> {
    match permission {
        Permission::Read | Permission::Write | Permission::Ffi => normalize_absolute(value)
            .map(Key::Path)
            .ok_or_else(|| "not an absolute path, which no path entry names".to_owned()),
        Permission::Net | Permission::Import => {
            if let Some(path) = value.strip_prefix("unix:") {
                return normalize_absolute(path)
                    .map(Key::Unix)
                    .ok_or_else(|| "a relative Unix socket path, which no entry names".to_owned());
            }
            let host = parse_host(value).map_err(|e| format!("not a host: {e}"))?;
            if host.port.is_none() {
                return Err("a host without a port (`node:dns` asks so): an entry without a port would allow every port, and no entry names the bare host alone".to_owned());
            }
            Ok(Key::Host(host.to_string()))
        }
        Permission::Env | Permission::Sys | Permission::Run => {
            if permission == Permission::Run && value.contains('/') {
                // A command given as a path is matched made absolute and normalised.
                let path = normalize_absolute(value)
                    .ok_or_else(|| "a relative command path, which no entry names".to_owned())?;
                return name_key(path);
            }
            name_key(value.to_owned())
        }
    }
}

fn name_key(name: String) -> Result<Key, String> {
    if name.is_empty() {
        return Err("an empty name, which no entry can hold".to_owned());
    }
    if name.contains('*') {
        return Err(
            "`*` in a name is a wildcard in `names` (`PREFIX*`), so no entry names it exactly"
                .to_owned(),
        );
    }
    if name.chars().any(char::is_control) {
        return Err("a control character, which no `names` entry may hold".to_owned());
    }
    Ok(Key::Name(name))
}

/// The key of a recorded real location (`target`), for the values that have one: paths, Unix
/// sockets and commands given as paths. With `symlinks = "resolve"` it must be allowed too.
fn target_key(permission: Permission, lexical: &str, target: &str) -> Option<Result<Key, String>> {
    let absolute = || {
        normalize_absolute(target)
            .ok_or_else(|| "its real location is not an absolute path".to_owned())
    };
    match permission {
        Permission::Read | Permission::Write | Permission::Ffi => Some(absolute().map(Key::Path)),
        Permission::Net | Permission::Import if lexical.starts_with("unix:") => {
            Some(absolute().map(Key::Unix))
        }
        Permission::Run if lexical.contains('/') => Some(absolute().and_then(name_key)),
        _ => None,
    }
}

/// Whether the policy path `ancestor` covers `path` (itself or its subtree).
fn path_covers(ancestor: &str, path: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The characters the policy's glob compiler reads specially: a component with one of the first
/// four makes the path a glob (`is_glob`), in which the rest are special too.
const GLOB_STARTS: [char; 4] = ['*', '?', '[', '{'];
const GLOB_SPECIAL: [char; 7] = ['*', '?', '[', ']', '{', '}', '\\'];

/// A normalised absolute path as a policy entry that matches only it (and its subtree). A path
/// without glob syntax is its own entry; otherwise every special character is written as a
/// one-character class (`[*]`, `[[]`, `[]]`, `[\]`): inside a class nothing is special, and none
/// of these classes names `/`.
fn literal_path(path: &str) -> String {
    if !path.contains(GLOB_STARTS) {
        return path.to_owned();
    }
    let mut out = String::with_capacity(path.len() * 2);
    for c in path.chars() {
        if GLOB_SPECIAL.contains(&c) {
            out.push('[');
            out.push(c);
            out.push(']');
        } else {
            out.push(c);
        }
    }
    out
}

/// The literal directory a policy path entry starts with: the components before the first that
/// is a glob (`/srv/app/**/*.pem` starts at `/srv/app`).
fn literal_prefix(entry: &str) -> String {
    let normalized = normalize_absolute(entry).unwrap_or_else(|| "/".to_owned());
    let literal: Vec<&str> = normalized
        .split('/')
        .filter(|c| !c.is_empty())
        .take_while(|c| !c.contains(GLOB_STARTS))
        .collect();
    format!("/{}", literal.join("/"))
}

fn parent_of(path: &str) -> Option<String> {
    match path.rfind('/') {
        None => None,
        Some(0) => Some("/".to_owned()),
        Some(i) => Some(path[..i].to_owned()),
    }
}

/// A candidate the suggestion grants: under its process's facts, the keys it needs allowed (its
/// value, and its real location where the policy resolves symlinks).
#[derive(Debug)]
struct Candidate<'o> {
    obs: &'o Observation,
    facts: Facts,
    keys: Vec<Key>,
}

fn candidate(o: &Observation, symlinks: Symlinks) -> Result<Candidate<'_>, Withheld> {
    let Some(value) = o.lexical.as_deref() else {
        return Err(Withheld::Null);
    };
    let facts = Facts::for_allow(o).map_err(Withheld::Subject)?;
    let mut keys = vec![key_of(o.permission, value).map_err(Withheld::Value)?];
    if symlinks == Symlinks::Resolve
        && let Some(target) = o.target.as_deref()
        && let Some(key) = target_key(o.permission, value, target)
    {
        let key = key.map_err(|e| Withheld::Value(format!("{e} ({})", quoted(target))))?;
        if key != keys[0] {
            keys.push(key);
        }
    }
    Ok(Candidate {
        obs: o,
        facts,
        keys,
    })
}

#[derive(Debug, Default)]
struct EntryInfo {
    hits: u64,
    notes: BTreeSet<String>,
    /// For a fold: the entries it replaces, with their hits.
    folds: BTreeMap<String, u64>,
}

/// A deny rule for denied requests that an allowed directory would otherwise cover.
#[derive(Debug, Default)]
struct AddedDeny {
    /// Key -> the ids of the rules that denied it during the audit.
    keys: BTreeMap<Key, BTreeSet<String>>,
    reason: Option<String>,
}

/// The suggestion being built.
#[derive(Debug)]
struct Draft<'a> {
    header: String,
    audited: Option<&'a Audited>,
    denies: BTreeMap<(Facts, Permission), AddedDeny>,
    allows: BTreeMap<(Facts, Permission), BTreeMap<Key, EntryInfo>>,
}

impl Draft<'_> {
    fn carried(&self) -> &[Carried] {
        self.audited.map_or(&[], |a| a.denies.as_slice())
    }

    fn add(&mut self, c: &Candidate<'_>) {
        let entries = self
            .allows
            .entry((c.facts.clone(), c.obs.permission))
            .or_default();
        for (i, key) in c.keys.iter().enumerate() {
            let info = entries.entry(key.clone()).or_default();
            info.hits += 1;
            if i > 0 {
                info.notes.insert(format!(
                    "the real location of {}",
                    quoted(&c.keys[0].shown())
                ));
            }
        }
    }

    /// `--collapse`: where more than one entry of a directory was used, the directory instead —
    /// unless a deny rule may cover something in it or above it: a carried one that may apply to
    /// the process, or a path a rule was observed to deny (to any process).
    fn collapse(&mut self, denied: &[&Observation]) {
        let carried: Vec<Carried> = self.carried().to_vec();
        for ((facts, permission), entries) in &mut self.allows {
            if !matches!(
                permission,
                Permission::Read | Permission::Write | Permission::Ffi
            ) {
                continue;
            }
            let observed: Vec<String> = denied
                .iter()
                .filter(|d| d.permission == *permission)
                .flat_map(|d| [d.lexical.as_deref(), d.target.as_deref()])
                .flatten()
                .filter_map(normalize_absolute)
                .collect();
            let mut by_parent: BTreeMap<String, Vec<Key>> = BTreeMap::new();
            for key in entries.keys() {
                if let Key::Path(path) = key
                    && let Some(parent) = parent_of(path)
                    && parent != "/"
                {
                    by_parent.entry(parent).or_default().push(key.clone());
                }
            }
            // Deepest first, so that a fold inside a folded directory joins it.
            let mut parents: Vec<(String, Vec<Key>)> = by_parent.into_iter().collect();
            parents.sort_by_key(|(dir, _)| std::cmp::Reverse(dir.matches('/').count()));
            for (dir, members) in parents {
                if members.len() < 2
                    || observed
                        .iter()
                        .any(|p| path_covers(p, &dir) || path_covers(&dir, p))
                    || carried
                        .iter()
                        .any(|c| c.may_cover(*permission, facts, &dir))
                {
                    continue;
                }
                let mut fold = entries.remove(&Key::Path(dir.clone())).unwrap_or_default();
                for member in members {
                    if let Some(info) = entries.remove(&member) {
                        fold.hits += info.hits;
                        if info.folds.is_empty() {
                            fold.folds.insert(member.shown(), info.hits);
                        } else {
                            fold.folds.extend(info.folds);
                        }
                    }
                }
                entries.insert(Key::Path(dir), fold);
            }
        }
    }

    fn render(&self, comments: &str) -> String {
        let mut out = self.header.clone();
        out.push_str(comments);
        let mut taken: BTreeSet<String> =
            self.carried().iter().map(|c| c.rule.id.clone()).collect();
        if let Some(audited) = self.audited
            && !audited.denies.is_empty()
        {
            let _ = writeln!(
                out,
                "\n# The deny rules of the audited policy {}, as written.",
                quoted(&audited.name)
            );
            for carried in &audited.denies {
                let _ = write!(
                    out,
                    "\n# {}, line {}\n[[rule]]\n{}",
                    quoted(&carried.rule.file),
                    carried.rule.line,
                    carried.body
                );
            }
        }
        let mut numbers: BTreeMap<&Facts, usize> = BTreeMap::new();
        for ((facts, permission), deny) in &self.denies {
            if deny.keys.is_empty() {
                continue;
            }
            let next = numbers.len() + 1;
            let n = *numbers.entry(facts).or_insert(next);
            let id = unique_id(format!("observed-denied-{n}-{permission}"), &mut taken);
            let _ = writeln!(
                out,
                "\n# Denied during the audit to {}; below a directory allowed here.\n[[rule]]\nid = \"{id}\"\neffect = \"deny\"\npermissions = [\"{permission}\"]",
                facts.describe()
            );
            if let Some(when) = facts.when() {
                let _ = writeln!(out, "{when}");
            }
            let _ = writeln!(out, "{} = [", matcher_key(*permission));
            for (key, rules) in &deny.keys {
                let rules: Vec<String> = rules.iter().map(|r| format!("`{r}`")).collect();
                let _ = writeln!(
                    out,
                    "  {},  # denied by {}",
                    toml_string(&key.entry()),
                    rules.join(", ")
                );
            }
            let _ = writeln!(out, "]");
            if let Some(reason) = &deny.reason {
                let _ = writeln!(out, "reason = {}", toml_string(reason));
            }
        }
        let mut numbers: BTreeMap<&Facts, usize> = BTreeMap::new();
        for ((facts, permission), entries) in &self.allows {
            if entries.is_empty() {
                continue;
            }
            let next = numbers.len() + 1;
            let n = *numbers.entry(facts).or_insert_with(|| {
                let _ = writeln!(out, "\n# Process {next}: {}.", facts.describe());
                next
            });
            let id = unique_id(format!("observed-{n}-{permission}"), &mut taken);
            let _ = writeln!(
                out,
                "\n[[rule]]\nid = \"{id}\"\neffect = \"allow\"\npermissions = [\"{permission}\"]"
            );
            if let Some(when) = facts.when() {
                let _ = writeln!(out, "{when}");
            }
            // A bare command name is the name as the script wrote it: what runs is whatever the
            // script's PATH finds. The language wants that trust said, and so does the reviewer.
            if *permission == Permission::Run
                && entries
                    .keys()
                    .any(|k| matches!(k, Key::Name(name) if !name.contains('/')))
            {
                let _ = writeln!(
                    out,
                    "trusts_path = true  # REVIEW: a bare name runs whatever the script's PATH finds; prefer absolute paths"
                );
            }
            let _ = writeln!(out, "{} = [", matcher_key(*permission));
            for (key, info) in entries {
                let entry = key.entry();
                if !info.folds.is_empty() {
                    let folded: Vec<String> = info
                        .folds
                        .iter()
                        .map(|(value, hits)| format!("{} ({hits})", quoted(value)))
                        .collect();
                    let _ = writeln!(
                        out,
                        "  # --collapse: the directory of the {} entries used: {}",
                        info.folds.len(),
                        folded.join(", ")
                    );
                }
                let mut comment = format!("{} request(s)", info.hits);
                if entry != key.shown() {
                    let _ = write!(comment, "; {} exactly", quoted(&key.shown()));
                }
                for note in &info.notes {
                    let _ = write!(comment, "; {note}");
                }
                let _ = writeln!(out, "  {},  # {comment}", toml_string(&entry));
            }
            let _ = writeln!(out, "]");
        }
        out
    }

    fn compile(&self, comments: &str) -> Result<Policy, String> {
        compile(&self.render(comments))
    }
}

fn matcher_key(permission: Permission) -> &'static str {
    match permission {
        Permission::Read | Permission::Write | Permission::Ffi => "paths",
        Permission::Net | Permission::Import => "hosts",
        Permission::Env | Permission::Sys | Permission::Run => "names",
    }
}

/// `base`, or `base-2`, `base-3`, … if a rule already has that id.
fn unique_id(base: String, taken: &mut BTreeSet<String>) -> String {
    let mut id = base.clone();
    let mut n = 2;
    while taken.contains(&id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(id.clone());
    id
}

fn compile(text: &str) -> Result<Policy, String> {
    Policy::compile(&[Source::new("suggested policy", text)], &SystemDirectory)
        .map(|(policy, _)| policy)
        .map_err(|e| {
            format!(
                "the suggested policy does not compile (a bug in `suggest`): {}\n{text}",
                e.to_string().trim_end()
            )
        })
}

/// User and group names on this host, looked up once per id.
#[derive(Debug, Default)]
struct Names {
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
}

impl Names {
    /// The name of `uid` (`""`: it has none), as the daemon and `test` give it to `users`.
    fn user(&mut self, uid: u32) -> &str {
        self.users
            .entry(uid)
            .or_insert_with(|| SystemDirectory.user_name(uid).unwrap_or_default())
    }

    fn group(&mut self, gid: u32) -> &str {
        self.groups
            .entry(gid)
            .or_insert_with(|| SystemDirectory.group_name(gid).unwrap_or_default())
    }
}

/// Decides an observed request again, as the daemon would have for the recorded process: its
/// uid, gid, executable and unit as recorded, its user and group names as this host has them,
/// its real location as recorded. The log does not hold supplementary groups: a rule-denied
/// request is decided with them unknown (a deny rule that needs them applies, as it may have), a
/// candidate with none (a deny rule that needs one did not deny it during the audit, so it was in
/// none that matter).
fn replay(
    policy: &Policy,
    o: &Observation,
    candidate: bool,
    names: &mut Names,
) -> (Effect, DecidedBy) {
    let user = o.uid.map(|uid| names.user(uid).to_owned());
    let group = o.gid.map(|gid| names.group(gid).to_owned());
    let no_ids: &[u32] = &[];
    let no_names: &[String] = &[];
    let subject = Subject {
        pid: o.pid.unwrap_or(0),
        uid: o.uid,
        gid: o.gid,
        groups: candidate.then_some(no_ids),
        user: user.as_deref(),
        group: group.as_deref(),
        group_names: candidate.then_some(no_names),
        exe: o.exe.as_deref(),
        unit: o.unit.as_deref(),
        ..Subject::default()
    };
    let lexical_path = o
        .lexical
        .as_deref()
        .map(|v| match o.permission {
            Permission::Net | Permission::Import => v.strip_prefix("unix:").unwrap_or(v),
            _ => v,
        })
        .and_then(normalize_absolute);
    let mut resolve = |path: &str| -> Result<String, String> {
        Ok(match (&o.target, &lexical_path) {
            (Some(target), Some(lexical)) if lexical == path => target.clone(),
            _ => path.to_owned(),
        })
    };
    let decision = policy.decide(o.permission, o.lexical.as_deref(), &subject, &mut resolve);
    (decision.effect, decision.decided_by)
}

/// Reads the log: every decision record, and the number of other records.
fn parse_log(log: &str, source_name: &str) -> Result<(Vec<Observation>, u64), String> {
    let mut observations = Vec::new();
    let mut skipped = 0u64;
    for (n, line) in log.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{source_name}:{}", n + 1);
        let record: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{at}: not a decision-log record: {e}"))?;
        if record["kind"] != "decision" {
            skipped += 1;
            continue;
        }
        let Some(permission) = record["permission"]
            .as_str()
            .and_then(|p| p.parse::<Permission>().ok())
        else {
            skipped += 1;
            continue;
        };
        let decision = match record["decision"].as_str() {
            Some("allow") => Effect::Allow,
            Some("deny") => Effect::Deny,
            _ => {
                return Err(format!(
                    "{at}: a decision record needs `decision`, `allow` or `deny`"
                ));
            }
        };
        let Some(rule) = record["rule"].as_str() else {
            return Err(format!(
                "{at}: a decision record needs `rule`, the id of the rule that decided (or `default`)"
            ));
        };
        let value = text_field(&record, "value", &at)?;
        let resolved = text_field(&record, "resolved", &at)?;
        observations.push(Observation {
            line: n + 1,
            permission,
            lexical: resolved.or(value),
            target: text_field(&record, "target", &at)?,
            decision,
            rule: rule.to_owned(),
            reason: text_field(&record, "reason", &at)?,
            pid: id_field(&record, "pid", &at)?,
            uid: id_field(&record, "uid", &at)?,
            gid: id_field(&record, "gid", &at)?,
            exe: text_field(&record, "exe", &at)?,
            unit: text_field(&record, "unit", &at)?,
        });
    }
    Ok((observations, skipped))
}

/// A string field, absent or null meaning unknown. Any other type is refused: taking it for
/// unknown would widen a rule.
fn text_field(record: &serde_json::Value, key: &str, at: &str) -> Result<Option<String>, String> {
    match &record[key] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(text) => Ok(Some(text.clone())),
        _ => Err(format!("{at}: `{key}` is neither a string nor null")),
    }
}

fn id_field(record: &serde_json::Value, key: &str, at: &str) -> Result<Option<u32>, String> {
    match &record[key] {
        serde_json::Value::Null => Ok(None),
        value => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                format!("{at}: `{key}` is neither a number from 0 to 4294967295 nor null")
            }),
    }
}

/// Builds the suggested policy from decision-log lines. Lines that are not decision records are
/// skipped and counted.
pub fn suggest(log: &str, source_name: &str, options: &Options) -> Result<Suggestion, String> {
    let (observations, skipped) = parse_log(log, source_name)?;
    if observations.is_empty() {
        return Err(format!("{source_name}: no decision records to learn from"));
    }
    let audited = options.audited.as_ref();
    let symlinks = audited.map_or(Symlinks::Resolve, |a| a.symlinks);
    let mut draft = Draft {
        header: header(source_name, observations.len(), skipped, symlinks),
        audited,
        denies: BTreeMap::new(),
        allows: BTreeMap::new(),
    };
    let (denied, candidates): (Vec<&Observation>, Vec<&Observation>) =
        observations.iter().partition(|o| o.denied_by_rule());
    let mut withheld: Vec<(usize, Withheld)> = Vec::new();
    let mut granted: Vec<Candidate<'_>> = Vec::new();
    let mut names = Names::default();
    for o in candidates {
        match candidate(o, symlinks) {
            Ok(c) => granted.push(c),
            Err(why) => withheld.push((o.line, why)),
        }
    }
    // What the audited policy's own deny rules deny is not granted (a log of another revision).
    if !draft.carried().is_empty() {
        let policy = draft.compile("")?;
        granted.retain(|c| match replay(&policy, c.obs, true, &mut names) {
            (Effect::Deny, DecidedBy::Rule(i)) => {
                let id = policy.rule(i).id.clone();
                withheld.push((c.obs.line, Withheld::DeniedByAudited(id)));
                false
            }
            _ => true,
        });
    }
    for c in &granted {
        draft.add(c);
    }
    if options.collapse {
        draft.collapse(&denied);
    }
    keep_denied(&mut draft, &denied, &mut granted, &mut withheld, &mut names)?;

    withheld.sort();
    let text = draft.render(&comments(&denied, &withheld, &observations));
    let policy = compile(&text)?;
    for c in &granted {
        if replay(&policy, c.obs, true, &mut names).0 != Effect::Allow {
            return Err(format!(
                "{source_name}:{}: the suggested policy would deny {} {} to {}, which it means to grant; not printing a policy that does not do what it says",
                c.obs.line,
                c.obs.permission,
                c.obs.ticked(),
                c.facts.describe()
            ));
        }
    }
    for d in &denied {
        if replay(&policy, d, false, &mut names).0 != Effect::Deny {
            return Err(format!(
                "{source_name}:{}: the suggested policy would allow {} {} to {}, which rule `{}` denied; not printing a policy that does not do what it says",
                d.line,
                d.permission,
                d.ticked(),
                Facts::for_deny(d).describe(),
                d.rule
            ));
        }
    }
    Ok(Suggestion {
        text,
        granted: granted.iter().map(|c| c.obs.line).collect(),
        withheld,
        denied: denied.iter().map(|d| d.line).collect(),
    })
}

/// Keeps every rule-denied request denied where an allowed directory (or the same value
/// granted to a process whose facts it shares) would grant it: a deny rule naming it for that
/// process's facts — or, where that rule would also deny a granted request (a fact of the denied
/// process was unknown, and a deny rule applies to unknown facts), no allow entry over it.
fn keep_denied<'o>(
    draft: &mut Draft<'_>,
    denied: &[&'o Observation],
    granted: &mut Vec<Candidate<'o>>,
    withheld: &mut Vec<(usize, Withheld)>,
    names: &mut Names,
) -> Result<(), String> {
    let policy = draft.compile("")?;
    let mut dropped: Vec<(Facts, Permission, Key, usize)> = Vec::new();
    let overlapping: Vec<&Observation> = denied
        .iter()
        .copied()
        .filter(|d| replay(&policy, d, false, names).0 == Effect::Allow)
        .collect();
    for d in overlapping {
        let when = Facts::for_deny(d);
        let key = d
            .lexical
            .as_deref()
            .and_then(|v| key_of(d.permission, v).ok());
        // Whether a deny rule for `key` would deny a granted request: one it covers, or a write
        // at or above the tree (renaming or removing that directory would take the tree with
        // it, so a `read`/`write` deny rule denies such a write too).
        let protects_tree = matches!(d.permission, Permission::Read | Permission::Write);
        let conflicts = |key: &Key| {
            granted.iter().any(|c| {
                when.deny_applies(c.obs)
                    && ((c.obs.permission == d.permission && c.keys.iter().any(|k| key.covers(k)))
                        || (protects_tree
                            && c.obs.permission == Permission::Write
                            && c.keys.iter().any(|k| k.covers(key))))
            })
        };
        match key {
            Some(key) if !conflicts(&key) => {
                let deny = draft.denies.entry((when, d.permission)).or_default();
                deny.keys.entry(key).or_default().insert(d.rule.clone());
                if deny.reason.is_none() {
                    deny.reason.clone_from(&d.reason);
                }
            }
            _ => {
                let keys = denied_keys(d);
                for ((facts, permission), entries) in &mut draft.allows {
                    if *permission != d.permission || !facts.allow_applies(d) {
                        continue;
                    }
                    entries.retain(|entry, _| {
                        let hit = keys.iter().any(|k| entry.covers(k));
                        if hit {
                            dropped.push((facts.clone(), *permission, entry.clone(), d.line));
                        }
                        !hit
                    });
                }
            }
        }
    }
    granted.retain(|c| {
        let lost = dropped.iter().find(|(facts, permission, entry, _)| {
            *facts == c.facts
                && *permission == c.obs.permission
                && c.keys.iter().any(|k| entry.covers(k))
        });
        if let Some((.., line)) = lost {
            withheld.push((c.obs.line, Withheld::WouldGrantDenied(*line)));
        }
        lost.is_none()
    });
    Ok(())
}

/// The keys of a denied request: its value and its real location, where entries can name them.
fn denied_keys(d: &Observation) -> Vec<Key> {
    let Some(value) = d.lexical.as_deref() else {
        return Vec::new();
    };
    let target = d
        .target
        .as_deref()
        .and_then(|t| target_key(d.permission, value, t))
        .and_then(Result::ok);
    key_of(d.permission, value)
        .ok()
        .into_iter()
        .chain(target)
        .collect()
}

fn header(source_name: &str, decisions: usize, skipped: u64, symlinks: Symlinks) -> String {
    let mut out = format!(
        "# Suggested by `permission-broker suggest` from {decisions} decisions in {}\n\
         # ({skipped} other records skipped). Review every entry before enforcing it.\n\
         # Each rule grants one process (its `when`) exactly the values it was seen to use; a path\n\
         # entry also covers everything below it, as every policy path does.\n\
         version = 1\n\n[defaults]\ndecision = \"deny\"\nmode = \"enforce\"\n\
         reason = \"not observed during the audit; not permitted\"\n",
        quoted(source_name)
    );
    if symlinks == Symlinks::Lexical {
        out.push_str("symlinks = \"lexical\"  # as in the audited policy\n");
    }
    out
}

/// The comments that list what is not granted: what a rule denied, and the candidates withheld.
fn comments(
    denied: &[&Observation],
    withheld: &[(usize, Withheld)],
    observations: &[Observation],
) -> String {
    let mut out = String::new();
    let mut counts: BTreeMap<(Permission, String, String, String), u64> = BTreeMap::new();
    for d in denied {
        let by = match d.rule.as_str() {
            "unresolvable" => "`unresolvable` (the value could not be interpreted)".to_owned(),
            "broker-files" => "`broker-files` (the broker's own files)".to_owned(),
            rule => format!("rule `{rule}`"),
        };
        *counts
            .entry((d.permission, d.shown(), Facts::for_deny(d).describe(), by))
            .or_default() += 1;
    }
    if !counts.is_empty() {
        out.push_str(
            "\n# Denied during the audit by a rule, and NOT granted here (deny rules below keep them\n# denied where an allowed directory would cover them):\n",
        );
        for ((permission, value, who, by), n) in &counts {
            let _ = writeln!(
                out,
                "#   {permission} {value} to {who}: {by}, {n} request(s)"
            );
        }
    }
    let by_line: BTreeMap<usize, &Observation> = observations.iter().map(|o| (o.line, o)).collect();
    let mut nulls: BTreeMap<Permission, u64> = BTreeMap::new();
    let mut counts: BTreeMap<(Permission, String, String, String), u64> = BTreeMap::new();
    for (line, why) in withheld {
        let Some(o) = by_line.get(line) else { continue };
        if *why == Withheld::Null {
            *nulls.entry(o.permission).or_default() += 1;
            continue;
        }
        let who = Facts::for_deny(o).describe();
        *counts
            .entry((o.permission, o.shown(), who, why.explain()))
            .or_default() += 1;
    }
    if !nulls.is_empty() || !counts.is_empty() {
        out.push_str("\n# Observed, and NOT granted: decide these by hand.\n");
    }
    for (permission, n) in &nulls {
        let _ = writeln!(
            out,
            "# {permission}: {n} request(s) for the whole permission (null) were observed and are NOT granted."
        );
    }
    for ((permission, value, who, why), n) in &counts {
        let _ = writeln!(
            out,
            "#   {permission} {value} by {who}, {n} request(s): {why}"
        );
    }
    out
}

/// Text as a TOML basic string: `"` and `\` escaped, control characters as `\uXXXX` (TOML
/// allows none of them raw, DEL included).
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value quoted for a comment: never a line break, so it cannot end the comment.
fn quoted(text: &str) -> String {
    toml_string(text)
}

/// A TOML value as inline text (a carried rule's keys).
fn toml_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => toml_string(text),
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(table) => {
            let keys: Vec<String> = table
                .iter()
                .map(|(key, value)| format!("{} = {}", toml_key(key), toml_value(value)))
                .collect();
            if keys.is_empty() {
                "{}".to_owned()
            } else {
                format!("{{ {} }}", keys.join(", "))
            }
        }
        other => other.to_string(),
    }
}

fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_owned()
    } else {
        toml_string(key)
    }
}

pub fn run(log: &Path, audited: Option<&Path>, collapse: bool) -> ExitCode {
    let text = match std::fs::read_to_string(log) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: cannot read the decision log: {e}", log.display());
            return ExitCode::from(crate::exit::EXIT_CONFIG);
        }
    };
    let audited = match audited.map(Audited::load).transpose() {
        Ok(audited) => audited,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(crate::exit::EXIT_CONFIG);
        }
    };
    let options = Options { audited, collapse };
    match suggest(&text, &log.display().to_string(), &options) {
        Ok(suggestion) => {
            // A stdout that cannot take it (a full disk, `/dev/full`) is said, not a panic.
            if let Err(e) =
                std::io::Write::write_all(&mut std::io::stdout().lock(), suggestion.text.as_bytes())
                    .and_then(|()| std::io::Write::flush(&mut std::io::stdout().lock()))
            {
                eprintln!("suggest: cannot write the suggestion: {e}");
                return ExitCode::from(crate::exit::EXIT_IO);
            }
            eprintln!(
                "suggest: {} request(s) granted, {} observed but not granted, {} denied by a rule (each listed in the policy's comments)",
                suggestion.granted.len(),
                suggestion.withheld.len(),
                suggestion.denied.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_what_it_does_not_grant_and_counts_requests() {
        let log = [
            rec("read", Some("./a.txt")),
            rec("read", Some("/srv/app/b.txt")),
            rec("read", Some("/srv/app/b.txt")),
            rec("run", None),
            rec("run", Some("ls")),
            rec("run", Some("/usr/bin/ls")),
            rec("net", Some("api.example.com:443")),
            json!({"kind": "fault", "fault": "x"}),
        ];
        let log = [
            with(log[0].clone(), "resolved", json!("/srv/app/a.txt")),
            log[1].clone(),
            log[2].clone(),
            log[3].clone(),
            log[4].clone(),
            log[5].clone(),
            log[6].clone(),
            log[7].clone(),
        ];
        let policy = suggested(&log, None, false);
        assert!(
            policy.contains("\"/srv/app/b.txt\",  # 2 request(s)"),
            "{policy}"
        );
        assert!(
            policy.contains("\"/srv/app/a.txt\",  # 1 request(s)"),
            "relative paths as the daemon resolved them:\n{policy}"
        );
        assert!(policy.contains(
            "# run: 1 request(s) for the whole permission (null) were observed and are NOT granted."
        ));
        assert!(
            policy.contains("trusts_path = true  # REVIEW: a bare name runs whatever the script's PATH finds; prefer absolute paths\nnames = [\n  \"/usr/bin/ls\",  # 1 request(s)\n  \"ls\",  # 1 request(s)\n]"),
            "a bare name, exactly as asked, in a rule that says it trusts PATH\n{policy}"
        );
        assert!(policy.contains("\"api.example.com:443\""));
        assert!(policy.contains("from 7 decisions"), "{policy}");
        assert!(policy.contains("(1 other records skipped)"));
        let none = Options::default();
        assert!(suggest("", "empty", &none).is_err());
        assert!(
            suggest("not json", "bad", &none)
                .unwrap_err()
                .starts_with("bad:1: not a decision-log record")
        );
        let err = suggest(
            r#"{"kind":"decision","permission":"read","value":"/x","rule":"default"}"#,
            "old",
            &none,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "old:1: a decision record needs `decision`, `allow` or `deny`"
        );
        let err = suggest(
            &with(rec("read", Some("/x")), "uid", json!("0")).to_string(),
            "l",
            &none,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "l:1: `uid` is neither a number from 0 to 4294967295 nor null"
        );
    }
    // ---- The problems, one named test each: each failed on the suggester before this fix. ----

    use permission_broker_policy::{
        Effect, Policy, Source, StaticDirectory, Subject, lexical_only,
    };
    use serde_json::{Value, json};

    /// A decision record as the daemon writes it: uid 1000, audit mode, denied by default.
    fn rec(permission: &str, value: Option<&str>) -> Value {
        json!({
            "kind": "decision", "time": "2025-01-01T00:00:00.000000Z", "conn": 1, "pid": 42,
            "uid": 1000, "gid": 1000, "exe": null, "unit": null, "id": 1,
            "permission": permission, "value": value, "resolved": null, "target": null,
            "decision": "deny", "answered": "allow", "mode": "audit", "rule": "default",
            "reason": "would be denied", "revision": "0123456789abcdef", "micros": 3
        })
    }

    fn with(mut record: Value, key: &str, value: Value) -> Value {
        record[key] = value;
        record
    }

    fn denied_by(record: Value, rule: &str) -> Value {
        with(record, "rule", json!(rule))
    }

    fn log_text(records: &[Value]) -> String {
        records
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The suggestion for `records`, the audited policy's text given as a file when present.
    fn suggested(records: &[Value], audited: Option<&str>, collapse: bool) -> String {
        suggestion(records, audited, collapse).text
    }

    fn suggestion(records: &[Value], audited: Option<&str>, collapse: bool) -> Suggestion {
        let audited = audited.map(|text| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.toml");
            std::fs::write(&path, text).unwrap();
            Audited::load(&path).unwrap()
        });
        let options = Options { audited, collapse };
        match suggest(&log_text(records), "log.jsonl", &options) {
            Ok(suggestion) => suggestion,
            Err(e) => panic!("{e}"),
        }
    }

    fn compiled(text: &str) -> Policy {
        match Policy::compile(
            &[Source::new("suggested.toml", text)],
            &StaticDirectory::default(),
        ) {
            Ok((policy, _)) => policy,
            Err(e) => panic!("the suggestion does not compile: {e}\n{text}"),
        }
    }

    #[derive(Clone, Copy)]
    struct Who<'a> {
        uid: Option<u32>,
        exe: Option<&'a str>,
        unit: Option<&'a str>,
    }

    const UID_1000: Who<'static> = Who {
        uid: Some(1000),
        exe: None,
        unit: None,
    };

    fn effect(policy: &Policy, permission: &str, value: Option<&str>, who: Who<'_>) -> Effect {
        let subject = Subject {
            pid: 42,
            uid: who.uid,
            gid: who.uid,
            groups: Some(&[]),
            exe: who.exe,
            unit: who.unit,
            ..Subject::default()
        };
        policy
            .decide(
                permission.parse().unwrap(),
                value,
                &subject,
                &mut lexical_only,
            )
            .effect
    }

    fn assert_effects(text: &str, cases: &[(&str, &str, Who<'_>, Effect)]) {
        let policy = compiled(text);
        for &(permission, value, who, expected) in cases {
            assert_eq!(
                effect(&policy, permission, Some(value), who),
                expected,
                "{permission} `{value}` (uid {:?}, exe {:?}, unit {:?})\n{text}",
                who.uid,
                who.exe,
                who.unit
            );
        }
    }

    use Effect::{Allow, Deny};

    /// Problem 1: in audit mode every request is answered allow, but one the policy's own deny
    /// rule decided is recorded `decision = "deny"` with that rule: it must not come out as an
    /// allow, neither as an entry nor under a directory allowed around it.
    #[test]
    fn a_request_a_deny_rule_decided_is_never_granted() {
        let records = [
            denied_by(rec("read", Some("/srv/app/secret")), "no-secrets"),
            rec("read", Some("/srv/app/data")),
            rec("read", Some("/srv/app/secret")),
        ];
        // The third record is the same request again: still denied by the rule in the first.
        let records = [
            records[0].clone(),
            records[1].clone(),
            denied_by(records[2].clone(), "no-secrets"),
        ];
        let text = suggested(&records, None, false);
        assert_effects(
            &text,
            &[
                ("read", "/srv/app/secret", UID_1000, Deny),
                ("read", "/srv/app/data", UID_1000, Allow),
            ],
        );
        assert!(text.contains("no-secrets"), "listed in a comment:\n{text}");
        // A directory the job listed, around a file a rule denied: the file stays denied.
        let records = [
            rec("read", Some("/srv/app")),
            denied_by(rec("read", Some("/srv/app/secret")), "no-secrets"),
        ];
        let text = suggested(&records, None, false);
        assert_effects(
            &text,
            &[
                ("read", "/srv/app", UID_1000, Allow),
                ("read", "/srv/app/secret", UID_1000, Deny),
            ],
        );
    }

    /// Problem 1, second half: the audited policy's deny rules are dropped, so what they deny
    /// and the audit never tried is allowed under an observed directory.
    #[test]
    fn the_audited_policys_deny_rules_are_carried_into_the_suggestion() {
        let audited = r#"
version = 1
[defaults]
mode = "audit"

[[rule]]
id = "no-secrets"
effect = "deny"
permissions = ["read", "write"]
paths = ["/srv/app/secret"]
reason = "secrets stay secret"
"#;
        let records = [rec("read", Some("/srv/app"))];
        let text = suggested(&records, Some(audited), false);
        assert_effects(
            &text,
            &[
                ("read", "/srv/app", UID_1000, Allow),
                ("read", "/srv/app/secret", UID_1000, Deny),
                ("read", "/srv/app/secret/key.pem", UID_1000, Deny),
                ("write", "/srv/app/secret/key.pem", UID_1000, Deny),
            ],
        );
    }

    /// Problem 2: two files of `/etc` became `/etc`, which allows `/etc/shadow`.
    #[test]
    fn two_files_of_a_directory_do_not_grant_the_directory() {
        let records = [
            rec("read", Some("/etc/hosts")),
            rec("read", Some("/etc/resolv.conf")),
        ];
        assert_effects(
            &suggested(&records, None, false),
            &[
                ("read", "/etc/hosts", UID_1000, Allow),
                ("read", "/etc/resolv.conf", UID_1000, Allow),
                ("read", "/etc/shadow", UID_1000, Deny),
                ("read", "/etc", UID_1000, Deny),
            ],
        );
    }

    /// Problem 3: values were written unescaped, so an env name `*` allowed every variable and a
    /// file named like a glob allowed what the glob matches.
    #[test]
    fn observed_values_match_only_themselves() {
        let files = [
            ("/srv/w/**", "/srv/w/secret"),
            ("/srv/s/a*b", "/srv/s/axxb"),
            ("/srv/q/x?", "/srv/q/xy"),
            ("/srv/c/[id]", "/srv/c/i"),
            ("/srv/b/{a,b}", "/srv/b/a"),
            ("/srv/e/x\\*", "/srv/e/x\\y"),
            ("/srv/r/a]b}", "/srv/r/a"),
        ];
        let mut records: Vec<Value> = files
            .iter()
            .map(|(file, _)| rec("read", Some(file)))
            .collect();
        records.push(rec("env", Some("*")));
        records.push(rec("env", Some("AWS_*")));
        records.push(rec("env", Some("HOME")));
        let text = suggested(&records, None, false);
        let mut cases = Vec::new();
        for (file, matched_by_the_glob) in files {
            cases.push(("read", file, UID_1000, Allow));
            cases.push(("read", matched_by_the_glob, UID_1000, Deny));
        }
        cases.extend([
            ("env", "HOME", UID_1000, Allow),
            ("env", "PATH", UID_1000, Deny),
            ("env", "AWS_SECRET_ACCESS_KEY", UID_1000, Deny),
        ]);
        assert_effects(&text, &cases);
        assert!(
            text.contains("\"*\""),
            "the left-out name is listed:\n{text}"
        );
    }

    /// Problem 4: `node:dns` sends a bare host; as an entry without a port it allowed every port.
    #[test]
    fn a_host_without_a_port_does_not_grant_every_port() {
        let records = [
            rec("net", Some("db.internal")),
            rec("net", Some("api.example.com:443")),
            rec("net", Some("[::1]:8080")),
        ];
        let text = suggested(&records, None, false);
        assert_effects(
            &text,
            &[
                ("net", "api.example.com:443", UID_1000, Allow),
                ("net", "[::1]:8080", UID_1000, Allow),
                ("net", "api.example.com:80", UID_1000, Deny),
                ("net", "db.internal:5432", UID_1000, Deny),
                ("net", "db.internal:22", UID_1000, Deny),
            ],
        );
        assert!(text.contains("db.internal"), "listed for review:\n{text}");
    }

    /// Problem 5: `when` facts were dropped, so what one unit's executable did as one uid was
    /// granted to every process.
    #[test]
    fn what_one_subject_did_is_granted_to_that_subject_only() {
        let reports = Who {
            uid: Some(1000),
            exe: Some("/usr/bin/deno"),
            unit: Some("reports.service"),
        };
        let record = with(
            with(
                rec("read", Some("/srv/reports/q1.csv")),
                "exe",
                json!(reports.exe),
            ),
            "unit",
            json!(reports.unit),
        );
        let other = with(rec("read", Some("/srv/web/index.html")), "uid", json!(1001));
        let text = suggested(&[record, other], None, false);
        let q1 = "/srv/reports/q1.csv";
        assert_effects(
            &text,
            &[
                ("read", q1, reports, Allow),
                (
                    "read",
                    q1,
                    Who {
                        uid: Some(1001),
                        ..reports
                    },
                    Deny,
                ),
                (
                    "read",
                    q1,
                    Who {
                        exe: Some("/usr/bin/python3"),
                        ..reports
                    },
                    Deny,
                ),
                (
                    "read",
                    q1,
                    Who {
                        exe: None,
                        ..reports
                    },
                    Deny,
                ),
                (
                    "read",
                    q1,
                    Who {
                        unit: Some("other.service"),
                        ..reports
                    },
                    Deny,
                ),
                (
                    "read",
                    q1,
                    Who {
                        unit: Some(""),
                        ..reports
                    },
                    Deny,
                ),
                ("read", q1, UID_1000, Deny),
                (
                    "read",
                    "/srv/web/index.html",
                    Who {
                        uid: Some(1001),
                        exe: None,
                        unit: None,
                    },
                    Allow,
                ),
                ("read", "/srv/web/index.html", UID_1000, Deny),
                ("read", "/srv/web/index.html", reports, Deny),
            ],
        );
    }

    // ---- The options, and what the property test found. ----

    /// `--collapse` folds only a directory more than one of whose entries was used, lists them,
    /// and never folds where a deny rule (carried, or observed) reaches.
    #[test]
    fn collapse_folds_only_where_no_deny_reaches() {
        let audited = r#"
version = 1
[defaults]
mode = "audit"

[[rule]]
id = "no-keys"
effect = "deny"
permissions = ["read"]
paths = ["/srv/**/*.pem"]
"#;
        let records = [
            rec("read", Some("/etc/hosts")),
            rec("read", Some("/etc/resolv.conf")),
            rec("read", Some("/srv/app/a.txt")),
            rec("read", Some("/srv/app/b.txt")),
            rec("read", Some("/var/lib/x/one")),
            rec("read", Some("/var/lib/x/two")),
            denied_by(rec("read", Some("/var/lib/x/secret")), "no-x-secret"),
            rec("read", Some("/opt/lone/file")),
        ];
        let text = suggested(&records, Some(audited), true);
        assert!(
            text.contains(
                "  # --collapse: the directory of the 2 entries used: \"/etc/hosts\" (1), \"/etc/resolv.conf\" (1)\n  \"/etc\",  # 2 request(s)"
            ),
            "{text}"
        );
        assert_effects(
            &text,
            &[
                ("read", "/etc/shadow", UID_1000, Allow),
                // The carried glob's literal part is `/srv`: no fold at or below it.
                ("read", "/srv/app/c.txt", UID_1000, Deny),
                ("read", "/srv/app/a.txt", UID_1000, Allow),
                // An observed denial in the directory: no fold.
                ("read", "/var/lib/x/three", UID_1000, Deny),
                ("read", "/var/lib/x/secret", UID_1000, Deny),
                // One entry of a directory is not a directory.
                ("read", "/opt/lone/other", UID_1000, Deny),
            ],
        );
        // Without `--collapse`, nothing folds.
        let exact = suggested(&records, Some(audited), false);
        assert_effects(&exact, &[("read", "/etc/shadow", UID_1000, Deny)]);
    }

    /// Found by the property test: a deny rule on `read` or `write` also denies a `write` at or
    /// above its tree (a rename or removal of what holds it). A deny added for a denied read
    /// below an allowed directory would then take away a granted write of that directory; the
    /// read of the directory is left out instead, and the write stays granted.
    #[test]
    fn a_deny_added_below_an_allowed_directory_does_not_take_a_granted_write() {
        let who = |unit: Value| {
            move |r: Value| {
                with(
                    with(with(r, "uid", json!(1001)), "exe", json!("/usr/bin/deno")),
                    "unit",
                    unit.clone(),
                )
            }
        };
        let unknown_unit = who(Value::Null);
        let no_unit = who(json!(""));
        let records = [
            unknown_unit(rec("read", Some("/e"))),
            unknown_unit(denied_by(rec("read", Some("/e/b")), "r0")),
            no_unit(rec("write", Some("/e"))),
        ];
        let s = suggestion(&records, None, false);
        assert_eq!(s.granted, [3]);
        assert_eq!(s.withheld, [(1, Withheld::WouldGrantDenied(2))]);
        let deno = Who {
            uid: Some(1001),
            exe: Some("/usr/bin/deno"),
            unit: None,
        };
        assert_effects(
            &s.text,
            &[
                ("write", "/e", deno, Allow),
                ("read", "/e/b", deno, Deny),
                ("read", "/e", deno, Deny),
            ],
        );
    }

    /// A path's recorded real location is granted with it where the policy resolves symlinks
    /// (both must be allowed), and not where the audited policy is lexical.
    #[test]
    fn a_real_location_is_granted_with_its_path_where_symlinks_are_resolved() {
        let record = with(
            with(
                rec("read", Some("./link")),
                "resolved",
                json!("/srv/app/link"),
            ),
            "target",
            json!("/data/real"),
        );
        let text = suggested(std::slice::from_ref(&record), None, false);
        assert!(
            text.contains(
                "\"/data/real\",  # 1 request(s); the real location of \"/srv/app/link\""
            ),
            "{text}"
        );
        let policy = compiled(&text);
        let mut resolve = |p: &str| -> Result<String, String> {
            Ok(if p == "/srv/app/link" {
                "/data/real".to_owned()
            } else {
                p.to_owned()
            })
        };
        let subject = Subject {
            uid: Some(1000),
            ..Subject::default()
        };
        let decide = |value: &str, resolve: &mut dyn FnMut(&str) -> Result<String, String>| {
            policy
                .decide(Permission::Read, Some(value), &subject, resolve)
                .effect
        };
        assert_eq!(decide("/srv/app/link", &mut resolve), Allow);
        assert_eq!(decide("/srv/app/other", &mut resolve), Deny);
        let lexical = "version = 1\n[defaults]\nmode = \"audit\"\nsymlinks = \"lexical\"\n";
        let text = suggested(&[record], Some(lexical), false);
        assert!(text.contains("symlinks = \"lexical\""), "{text}");
        assert!(!text.contains("/data/real\","), "{text}");
    }

    /// What the broker refused as its own files, or could not interpret, is never granted either.
    #[test]
    fn broker_files_and_unresolvable_requests_are_never_granted() {
        let records = [
            rec("read", Some("/var/log/broker")),
            denied_by(
                rec("read", Some("/var/log/broker/decisions.log")),
                "broker-files",
            ),
            denied_by(rec("read", Some("./x")), "unresolvable"),
        ];
        let s = suggestion(&records, None, false);
        assert_eq!(s.denied, [2, 3]);
        assert_effects(
            &s.text,
            &[
                ("read", "/var/log/broker", UID_1000, Allow),
                ("read", "/var/log/broker/decisions.log", UID_1000, Deny),
            ],
        );
        assert!(
            s.text.contains("`broker-files` (the broker's own files)"),
            "{}",
            s.text
        );
    }

    /// The audited policy's deny rules are carried with their ids, `when` and reason; a suggested
    /// rule never takes a carried id.
    #[test]
    fn carried_rules_keep_their_text_and_ids_stay_unique() {
        let audited = r#"
version = 1
[defaults]
mode = "audit"

[[rule]]
id = "observed-1-read"
effect = "deny"
permissions = ["*"]
when = { uids = [0], units = ["x.service"] }
reason = "not for root in x"
"#;
        let text = suggested(&[rec("read", Some("/srv/a"))], Some(audited), false);
        assert!(
            text.contains(
                "id = \"observed-1-read\"\neffect = \"deny\"\npermissions = [\"*\"]\nwhen = { uids = [0], units = [\"x.service\"] }\nreason = \"not for root in x\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("id = \"observed-1-read-2\""), "{text}");
        assert_effects(&text, &[("read", "/srv/a", UID_1000, Allow)]);
    }

    // ---- The property: for generated logs, the suggestion grants exactly what was observed. ----

    /// Logs are generated the way the daemon writes them: a random audited policy (deny and allow
    /// rules on paths, hosts and names, some with a `when`, in audit mode) decides random requests
    /// of random processes, so decisions mix allow, deny by default and deny by a rule, and every
    /// record is one the daemon could have written. Then, with and without `--policy`, with and
    /// without `--collapse`, over every value in the log (and look-alikes: what a glob-looking
    /// name would match unescaped, other ports, children, parents, null) times every process in
    /// the log (and a few more):
    ///
    /// - a granted candidate is allowed to its process; a rule-denied request is denied to its
    ///   process; with `--policy`, whatever the audited policy's deny rules deny is denied;
    /// - whatever is allowed is covered by an observed candidate of a process whose recorded
    ///   facts the asking process has: the same value, or (for paths, by the language's design:
    ///   a path rule covers its subtree) a path below it — with `--collapse`, below its directory;
    /// - every candidate not granted is one no entry can name exactly (null, a bare host, a name
    ///   with `*`) or, without `--policy`, one whose grant would reach a rule-denied request.
    mod generated {
        use super::*;
        use permission_broker_policy::DecidedBy;
        use proptest::prelude::*;
        use std::collections::{BTreeMap, BTreeSet};

        /// Path components: mostly a few plain ones, so that paths collide, nest and share
        /// directories; some that look like globs.
        const PLAIN: &[&str] = &["a", "b", "s"];
        const GLOBBY: &[&str] = &["w*", "**", "q?", "[id]", "{a,b}", "x\\y", "b]", "c}", "i"];
        /// What the glob-looking components would match if written unescaped, and plain names.
        const LOOKALIKES: &[&str] = &["zz", "i", "a", "b", "s", "w", "wzz", "q1", "xy"];
        const HOSTS: &[&str] = &["api.example.com", "db.internal", "10.0.0.1", "[::1]"];
        const PORTS: &[Option<u16>] = &[None, Some(443), Some(5432)];
        const NAMES: &[&str] = &["HOME", "*", "AWS_*", "A*B", "PATH", "AWS_KEY"];
        const UIDS: &[u32] = &[1000, 1001];
        const EXES: &[Option<&str>] = &[None, Some("/usr/bin/deno"), Some("/opt/deno")];
        const UNITS: &[Option<&str>] = &[None, Some(""), Some("app.service")];
        const RULE_PATHS: &[&str] = &[
            "/d/a/b", "/d/a/s", "/d/s", "/d/b/s", "/d/s/a", "/e/b", "/d/**/s", "/e/*/a", "/d",
        ];
        const RULE_HOSTS: &[&str] = &["api.example.com:443", "db.internal", "10.0.0.0/8:5432"];
        const RULE_NAMES: &[&str] = &["HOME", "AWS_*", "PATH"];

        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        struct Proc {
            uid: Option<u32>,
            exe: Option<&'static str>,
            unit: Option<&'static str>,
        }

        #[derive(Debug, Clone)]
        struct Ask {
            proc: Proc,
            permission: Permission,
            value: Option<String>,
        }

        fn proc() -> impl Strategy<Value = Proc> {
            (
                prop::sample::select(UIDS),
                prop::sample::select(EXES),
                prop::sample::select(UNITS),
            )
                .prop_map(|(uid, exe, unit)| Proc {
                    uid: Some(uid),
                    exe,
                    unit,
                })
        }

        fn path() -> impl Strategy<Value = String> {
            let component = prop_oneof![
                3 => prop::sample::select(PLAIN),
                1 => prop::sample::select(GLOBBY),
            ];
            (
                prop::sample::select(&["/d", "/d", "/e"][..]),
                prop::collection::vec(component, 0..4),
            )
                .prop_map(|(root, parts)| {
                    let mut path = root.to_owned();
                    for part in parts {
                        path.push('/');
                        path.push_str(part);
                    }
                    path
                })
        }

        fn host_port(host: &str, port: Option<u16>) -> String {
            match port {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }
        }

        fn ask(procs: Vec<Proc>) -> impl Strategy<Value = Ask> {
            let request = prop_oneof![
                6 => (prop::sample::select(&[Permission::Read, Permission::Write][..]), path())
                    .prop_map(|(p, v)| (p, Some(v))),
                2 => (prop::sample::select(HOSTS), prop::sample::select(PORTS))
                    .prop_map(|(h, p)| (Permission::Net, Some(host_port(h, p)))),
                2 => prop::sample::select(NAMES).prop_map(|v| (Permission::Env, Some(v.to_owned()))),
                1 => prop::sample::select(&[Permission::Env, Permission::Read, Permission::Run][..])
                    .prop_map(|p| (p, None)),
            ];
            (prop::sample::select(procs), request).prop_map(|(proc, (permission, value))| Ask {
                proc,
                permission,
                value,
            })
        }

        /// One audited rule, without its id.
        fn rule() -> impl Strategy<Value = String> {
            let matcher = prop_oneof![
                prop::sample::select(RULE_PATHS).prop_map(|p| format!(
                    "permissions = [\"read\", \"write\"]\npaths = [\"{p}\"]\n"
                )),
                prop::sample::select(RULE_HOSTS)
                    .prop_map(|h| format!("permissions = [\"net\"]\nhosts = [\"{h}\"]\n")),
                prop::sample::select(RULE_NAMES)
                    .prop_map(|n| format!("permissions = [\"env\"]\nnames = [\"{n}\"]\n")),
            ];
            let when = prop::sample::select(
                &[
                    "",
                    "",
                    "when = { uids = [1000] }\n",
                    "when = { executables = [\"/usr/bin/deno\"] }\n",
                    "when = { executables = [\"/opt/deno\"] }\n",
                    "when = { units = [\"app.service\"] }\n",
                    "when = { uids = [1001], units = [\"app.service\"] }\n",
                ][..],
            );
            (prop::bool::weighted(0.7), matcher, when).prop_map(|(deny, matcher, when)| {
                let effect = if deny { "deny" } else { "allow" };
                format!("effect = \"{effect}\"\n{matcher}{when}")
            })
        }

        fn audited_text(rules: &[String]) -> String {
            let mut out = "version = 1\n[defaults]\nmode = \"audit\"\n".to_owned();
            for (i, rule) in rules.iter().enumerate() {
                out.push_str(&format!("\n[[rule]]\nid = \"r{i}\"\n{rule}"));
            }
            out
        }

        fn subject(p: &Proc) -> Subject<'static> {
            Subject {
                pid: 42,
                uid: p.uid,
                gid: p.uid,
                groups: Some(&[]),
                group_names: Some(&[]),
                exe: p.exe,
                unit: p.unit,
                ..Subject::default()
            }
        }

        /// What the daemon would have written for `ask` under the audited policy.
        fn record(audited: &Policy, ask: &Ask) -> Value {
            let d = audited.decide(
                ask.permission,
                ask.value.as_deref(),
                &subject(&ask.proc),
                &mut lexical_only,
            );
            let rule = match d.decided_by {
                DecidedBy::Rule(i) => audited.rule(i).id.clone(),
                DecidedBy::Default => "default".to_owned(),
                DecidedBy::Unresolvable => "unresolvable".to_owned(),
            };
            let r = rec(ask.permission.as_str(), ask.value.as_deref());
            let r = with(r, "uid", json!(ask.proc.uid));
            let r = with(r, "gid", json!(ask.proc.uid));
            let r = with(r, "exe", json!(ask.proc.exe));
            let r = with(r, "unit", json!(ask.proc.unit));
            let r = with(r, "decision", json!(d.effect.as_str()));
            let r = with(r, "reason", json!(d.reason.as_deref()));
            with(r, "rule", json!(rule))
        }

        /// The values to ask about: everything in the log, and what an over-broad suggestion
        /// would wrongly allow.
        fn universe(asks: &[Ask]) -> BTreeSet<(Permission, Option<String>)> {
            let mut out = BTreeSet::new();
            for p in [
                Permission::Read,
                Permission::Write,
                Permission::Net,
                Permission::Env,
                Permission::Run,
            ] {
                out.insert((p, None));
            }
            for host in HOSTS {
                for port in [None, Some(443), Some(5432), Some(80)] {
                    out.insert((Permission::Net, Some(host_port(host, port))));
                }
            }
            for name in NAMES.iter().chain(&["OTHER", "AWS_SECRET", "A"]) {
                out.insert((Permission::Env, Some((*name).to_owned())));
            }
            for ask in asks {
                let (Permission::Read | Permission::Write, Some(path)) =
                    (ask.permission, &ask.value)
                else {
                    continue;
                };
                let parent = parent_of(path).unwrap_or_else(|| "/".to_owned());
                let base = if parent == "/" { "" } else { parent.as_str() };
                for p in [Permission::Read, Permission::Write] {
                    out.insert((p, Some(path.clone())));
                    out.insert((p, Some(format!("{path}/zz"))));
                    out.insert((p, Some(parent.clone())));
                    for other in LOOKALIKES {
                        out.insert((p, Some(format!("{base}/{other}"))));
                        out.insert((p, Some(format!("{path}/{other}"))));
                    }
                }
            }
            out
        }

        /// An allow rule for what `granted` did applies to `asking`: every fact it names.
        fn facts_cover(granted: &Proc, asking: &Proc) -> bool {
            granted.uid.is_none_or(|u| asking.uid == Some(u))
                && granted
                    .exe
                    .is_none_or(|e| e.is_empty() || asking.exe == Some(e))
                && granted
                    .unit
                    .is_none_or(|u| u.is_empty() || asking.unit == Some(u))
        }

        fn below(dir: &str, path: &str) -> bool {
            path == dir || path.starts_with(&format!("{dir}/"))
        }

        /// The facts an allow rule for `p` names: the uid, and the executable and unit where
        /// recorded non-empty.
        fn group(p: &Proc) -> Proc {
            Proc {
                uid: p.uid,
                exe: p.exe.filter(|e| !e.is_empty()),
                unit: p.unit.filter(|u| !u.is_empty()),
            }
        }

        /// An entry for the observed `granted` value matches `asked` (a path: its subtree).
        fn value_covers(permission: Permission, granted: &str, asked: &str) -> bool {
            match permission {
                Permission::Read | Permission::Write => below(granted, asked),
                Permission::Net => match (parse_host(granted), parse_host(asked)) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => false,
                },
                _ => granted == asked,
            }
        }

        /// Allowing everything except deny rules: what the suggestion's allow rules grant alone.
        fn allow_rules_only(text: &str) -> String {
            let mut blocks = text.split("\n[[rule]]\n");
            let mut out = blocks.next().unwrap_or_default().to_owned();
            for block in blocks.filter(|b| !b.contains("effect = \"deny\"")) {
                out.push_str("\n[[rule]]\n");
                out.push_str(block);
            }
            out
        }

        fn check(rules: &[String], asks: &[Ask]) {
            let audited_text = audited_text(rules);
            let audited = compiled(&audited_text);
            let records: Vec<Value> = asks.iter().map(|a| record(&audited, a)).collect();
            let candidate = |r: &Value| r["decision"] == "allow" || r["rule"] == "default";
            let mut procs: BTreeSet<Proc> = asks.iter().map(|a| a.proc).collect();
            procs.extend([
                Proc {
                    uid: Some(1000),
                    exe: None,
                    unit: None,
                },
                Proc {
                    uid: Some(1002),
                    exe: Some("/usr/bin/deno"),
                    unit: Some("app.service"),
                },
                Proc {
                    uid: Some(1001),
                    exe: Some("/opt/deno"),
                    unit: Some("other.service"),
                },
                Proc {
                    uid: None,
                    exe: Some("/usr/bin/deno"),
                    unit: Some("app.service"),
                },
            ]);
            let universe = universe(asks);
            for with_policy in [false, true] {
                for collapse in [false, true] {
                    let audited_arg = with_policy.then_some(audited_text.as_str());
                    let s = suggestion(&records, audited_arg, collapse);
                    let context = || {
                        format!(
                            "--policy {with_policy} --collapse {collapse}\naudited:\n{audited_text}\nlog:\n{}\nsuggested:\n{}",
                            log_text(&records),
                            s.text
                        )
                    };
                    let policy = compiled(&s.text);
                    let allows_only = compiled(&allow_rules_only(&s.text));
                    // Directories `--collapse` may fold into: more than one candidate value of
                    // one process group (and permission) in them.
                    let mut used: BTreeMap<(Proc, Permission, String), BTreeSet<&str>> =
                        BTreeMap::new();
                    for (r, a) in records.iter().zip(asks) {
                        if let (true, Some(v)) = (collapse && candidate(r), a.value.as_deref())
                            && let Some(dir) = parent_of(v)
                            && dir != "/"
                        {
                            used.entry((group(&a.proc), a.permission, dir))
                                .or_default()
                                .insert(v);
                        }
                    }
                    let folds: Vec<(Proc, Permission, String)> = used
                        .into_iter()
                        .filter(|(_, values)| values.len() > 1)
                        .map(|(key, _)| key)
                        .collect();
                    // What became of each record.
                    let granted: BTreeSet<usize> = s.granted.iter().copied().collect();
                    let withheld: BTreeSet<usize> = s.withheld.iter().map(|(l, _)| *l).collect();
                    let denied: BTreeSet<usize> = s.denied.iter().copied().collect();
                    for (i, r) in records.iter().enumerate() {
                        let line = i + 1;
                        if candidate(r) {
                            assert!(
                                granted.contains(&line) != withheld.contains(&line),
                                "line {line} is a candidate: granted or withheld\n{}",
                                context()
                            );
                        } else {
                            assert!(denied.contains(&line), "line {line}\n{}", context());
                        }
                    }
                    for (line, why) in &s.withheld {
                        let r = &records[line - 1];
                        let value = r["value"].as_str();
                        let fine = match why {
                            Withheld::Null => value.is_none(),
                            Withheld::Value(_) => value.is_some_and(|v| {
                                v.contains('*') || parse_host(v).is_ok_and(|h| h.port.is_none())
                            }),
                            Withheld::WouldGrantDenied(other) => {
                                !with_policy
                                    && !candidate(&records[other - 1])
                                    && records[other - 1]["permission"] == r["permission"]
                            }
                            Withheld::Subject(_) | Withheld::DeniedByAudited(_) => false,
                        };
                        assert!(fine, "line {line} withheld: {why:?}\n{}", context());
                    }
                    for &(permission, ref value) in &universe {
                        for asking in &procs {
                            let got = policy
                                .decide(
                                    permission,
                                    value.as_deref(),
                                    &subject(asking),
                                    &mut lexical_only,
                                )
                                .effect;
                            let same = |r: &Value, a: &Ask| {
                                a.permission == permission
                                    && a.value == *value
                                    && a.proc == *asking
                                    && r["value"].as_str() == value.as_deref()
                            };
                            for (i, (r, a)) in records.iter().zip(asks).enumerate() {
                                if !same(r, a) {
                                    continue;
                                }
                                if granted.contains(&(i + 1)) {
                                    assert_eq!(
                                        got,
                                        Effect::Allow,
                                        "granted line {}: {permission} {value:?} {asking:?}\n{}",
                                        i + 1,
                                        context()
                                    );
                                }
                                if !candidate(r) {
                                    assert_eq!(
                                        got,
                                        Effect::Deny,
                                        "rule-denied line {}: {permission} {value:?} {asking:?}\n{}",
                                        i + 1,
                                        context()
                                    );
                                }
                            }
                            if with_policy {
                                let d = audited.decide(
                                    permission,
                                    value.as_deref(),
                                    &subject(asking),
                                    &mut lexical_only,
                                );
                                if d.effect == Effect::Deny
                                    && matches!(d.decided_by, DecidedBy::Rule(_))
                                {
                                    assert_eq!(
                                        got,
                                        Effect::Deny,
                                        "the audited policy denies {permission} {value:?} to {asking:?}\n{}",
                                        context()
                                    );
                                }
                            }
                            // Covered by an observed candidate's value, of a process whose
                            // recorded facts the asking one has.
                            let exactly = records.iter().zip(asks).any(|(r, a)| {
                                candidate(r)
                                    && a.permission == permission
                                    && facts_cover(&a.proc, asking)
                                    && match (&a.value, value) {
                                        (Some(granted), Some(asked)) => {
                                            value_covers(permission, granted, asked)
                                        }
                                        _ => false,
                                    }
                            });
                            let folded = value.as_deref().is_some_and(|v| {
                                folds.iter().any(|(g, p, dir)| {
                                    *p == permission && facts_cover(g, asking) && below(dir, v)
                                })
                            });
                            if got == Effect::Allow {
                                assert!(
                                    exactly || folded,
                                    "allowed, but nothing observed covers {permission} {value:?} for {asking:?}\n{}",
                                    context()
                                );
                            }
                            // No fold over what a deny rule covers: what the allow rules alone
                            // grant beyond the observed values is nothing a rule denied (the
                            // audited policy's, or one observed).
                            let rule_denied = records.iter().zip(asks).any(|(r, a)| {
                                !candidate(r)
                                    && a.permission == permission
                                    && a.proc == *asking
                                    && a.value == *value
                            }) || (with_policy && {
                                let d = audited.decide(
                                    permission,
                                    value.as_deref(),
                                    &subject(asking),
                                    &mut lexical_only,
                                );
                                d.effect == Effect::Deny
                                    && matches!(d.decided_by, DecidedBy::Rule(_))
                            });
                            if rule_denied && !exactly {
                                let alone = allows_only
                                    .decide(
                                        permission,
                                        value.as_deref(),
                                        &subject(asking),
                                        &mut lexical_only,
                                    )
                                    .effect;
                                assert_eq!(
                                    alone,
                                    Effect::Deny,
                                    "a fold grants {permission} {value:?} to {asking:?}, which a deny rule covers\n{}",
                                    context()
                                );
                            }
                        }
                    }
                }
            }
        }

        fn log_strategy() -> impl Strategy<Value = (Vec<String>, Vec<Ask>)> {
            (
                prop::collection::vec(rule(), 0..6),
                prop::collection::vec(proc(), 1..4),
            )
                .prop_flat_map(|(rules, procs)| {
                    (Just(rules), prop::collection::vec(ask(procs), 1..40))
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 128,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn suggest_grants_exactly_what_was_observed((rules, asks) in log_strategy()) {
                check(&rules, &asks);
            }
        }
    }
}
