//! From sources to a compiled [`Policy`]: validate everything, collect every problem, and build
//! the per-permission indexes that `decide` uses.

use crate::diagnostic::{Diagnostic, Diagnostics, Severity, Source};
use crate::host::{HostIndex, HostPort, parse_host};
use crate::model::{FileSpec, RuleSpec, Text};
use crate::name::{NameIndex, parse_name};
use crate::path::{PathIndex, components, normalize_absolute};
use permission_broker_protocol::{Effect, Permission, sanitize_reason};
use std::collections::HashMap;
use std::ops::Range;
use toml::Spanned;

/// A rule's position in file order (files in the order given, rules in the order written).
/// Lower is earlier: the first applicable deny gives the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleIndex(pub u32);

/// A compiled rule: what logs and `explain` show about it.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub effect: Effect,
    pub permissions: Vec<Permission>,
    /// Sanitised deny reason, if the rule has one.
    pub reason: Option<String>,
    /// `false` for a rule without a value matcher (it matches every value, null included).
    pub scoped: bool,
    pub file: String,
    pub line: usize,
}

/// Which value matcher a permission takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatcherKind {
    Paths,
    Hosts,
    Names,
}

impl MatcherKind {
    pub(crate) fn of(permission: Permission) -> MatcherKind {
        match permission {
            Permission::Read | Permission::Write | Permission::Ffi => MatcherKind::Paths,
            Permission::Net | Permission::Import => MatcherKind::Hosts,
            Permission::Env | Permission::Sys | Permission::Run => MatcherKind::Names,
        }
    }

    fn key(self) -> &'static str {
        match self {
            MatcherKind::Paths => "paths",
            MatcherKind::Hosts => "hosts",
            MatcherKind::Names => "names",
        }
    }

    fn permissions(self) -> &'static str {
        match self {
            MatcherKind::Paths => "read, write and ffi",
            MatcherKind::Hosts => "net and import",
            MatcherKind::Names => "env, sys and run",
        }
    }
}

/// Everything about one permission that `decide` needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    /// Rules without a value matcher, allow and deny.
    pub unscoped: Vec<RuleIndex>,
    /// Scoped deny rules: a null request ("the whole permission") is denied if any applies.
    pub scoped_deny: Vec<RuleIndex>,
    pub paths: PathIndex,
    pub hosts: HostIndex,
    pub names: NameIndex,
}

/// A compiled policy: immutable, cheap to share between connections.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) rules: Vec<Rule>,
    pub(crate) default_effect: Effect,
    pub(crate) default_reason: String,
    pub(crate) tables: [Table; 8],
}

impl Policy {
    /// A policy that denies everything: the fail-closed value by construction.
    pub fn deny_all(reason: &str) -> Policy {
        Policy {
            rules: Vec::new(),
            default_effect: Effect::Deny,
            default_reason: sanitize_reason(reason),
            tables: Default::default(),
        }
    }

    /// Compiles the given files, in the order given (the daemon passes a directory's `*.toml`
    /// files in lexical order). On success returns the policy and its warnings; otherwise every
    /// error and warning found.
    pub fn compile(sources: &[Source]) -> Result<(Policy, Diagnostics), Diagnostics> {
        let mut compiler = Compiler::default();
        for source in sources {
            compiler.file(source);
        }
        compiler.finish()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, index: RuleIndex) -> &Rule {
        &self.rules[index.0 as usize]
    }

    pub fn default_effect(&self) -> Effect {
        self.default_effect
    }

    pub fn default_reason(&self) -> &str {
        &self.default_reason
    }
}

/// A value matcher entry, checked and ready to index.
enum Entry {
    /// Normalised absolute path.
    Path(String),
    Host(HostPort),
    /// A validated `names` entry.
    Name(String),
}

struct PendingRule {
    rule: Rule,
    entries: Vec<Entry>,
}

#[derive(Default)]
struct Compiler {
    diagnostics: Diagnostics,
    defaults: Option<(Effect, Option<String>)>,
    /// Where `[defaults]` was first set, for the "set twice" message.
    defaults_at: Option<String>,
    ids: HashMap<String, String>,
    rules: Vec<PendingRule>,
}

impl Compiler {
    fn error(&mut self, source: &Source, span: &Range<usize>, message: String) {
        self.diagnostics
            .push(Diagnostic::at(source, span, Severity::Error, message));
    }

    fn warning(&mut self, source: &Source, span: &Range<usize>, message: String) {
        self.diagnostics
            .push(Diagnostic::at(source, span, Severity::Warning, message));
    }

    fn file(&mut self, source: &Source) {
        let spec: FileSpec = match toml::from_str(&source.text) {
            Ok(spec) => spec,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let message = e.message().trim_end().to_owned();
                let excerpt = source.excerpt(&span);
                let message = if excerpt.is_empty() || message.contains(excerpt) {
                    message
                } else {
                    format!("{message} (at `{excerpt}`)")
                };
                self.error(source, &span, message);
                return;
            }
        };
        if *spec.version.get_ref() != 1 {
            let span = spec.version.span();
            self.error(
                source,
                &span,
                format!(
                    "unsupported policy version `{}` (this broker reads version 1)",
                    spec.version.get_ref()
                ),
            );
            return;
        }
        if let Some(defaults) = &spec.defaults {
            self.defaults(source, defaults);
        }
        for rule in &spec.rule {
            self.rule(source, rule);
        }
    }

    fn defaults(&mut self, source: &Source, defaults: &crate::model::DefaultsSpec) {
        let here = defaults
            .decision
            .as_ref()
            .or(defaults.reason.as_ref())
            .map(|t| t.span())
            .unwrap_or(0..0);
        if let Some(first) = &self.defaults_at {
            let first = first.clone();
            self.error(
                source,
                &here,
                format!(
                    "`[defaults]` is set again (first set at {first}); set it in one file only"
                ),
            );
            return;
        }
        let (line, column) = source.line_column(here.start);
        self.defaults_at = Some(format!("{}:{line}:{column}", source.name));
        let effect = match &defaults.decision {
            None => Effect::Deny,
            Some(text) => match parse_effect(text.get_ref()) {
                Some(effect) => effect,
                None => {
                    self.error(
                        source,
                        &text.span(),
                        format!(
                            "unknown decision `{}` (expected `allow` or `deny`)",
                            text.get_ref()
                        ),
                    );
                    Effect::Deny
                }
            },
        };
        let reason = defaults
            .reason
            .as_ref()
            .map(|text| self.reason(source, text));
        self.defaults = Some((effect, reason));
    }

    fn reason(&mut self, source: &Source, text: &Text) -> String {
        let clean = sanitize_reason(text.get_ref());
        if clean != *text.get_ref() {
            self.warning(
                source,
                &text.span(),
                "reason contains control characters or line breaks; it is sent as one printable line"
                    .to_owned(),
            );
        }
        clean
    }

    fn rule(&mut self, source: &Source, spanned: &Spanned<RuleSpec>) {
        let spec = spanned.get_ref();
        let errors_before = self.diagnostics.errors().count();
        let id = spec.id.get_ref();
        if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            self.error(
                source,
                &spec.id.span(),
                format!(
                    "rule id `{}` must be non-empty and contain no spaces or control characters",
                    id.escape_debug()
                ),
            );
        }
        let (line, column) = source.line_column(spec.id.span().start);
        let here = format!("{}:{line}:{column}", source.name);
        if let Some(first) = self.ids.get(id) {
            let first = first.clone();
            self.error(
                source,
                &spec.id.span(),
                format!("duplicate rule id `{id}` (first defined at {first})"),
            );
        } else {
            self.ids.insert(id.clone(), here);
        }
        let effect = parse_effect(spec.effect.get_ref()).unwrap_or_else(|| {
            self.error(
                source,
                &spec.effect.span(),
                format!(
                    "unknown effect `{}` (expected `allow` or `deny`)",
                    spec.effect.get_ref()
                ),
            );
            Effect::Deny
        });
        let permissions = self.permissions(source, &spec.permissions);
        let reason = spec.reason.as_ref().map(|text| {
            if effect == Effect::Allow {
                self.warning(
                    source,
                    &text.span(),
                    format!("rule `{id}` allows: its reason is never sent"),
                );
            }
            self.reason(source, text)
        });
        let entries = self.matchers(source, spec, &permissions);
        if self.diagnostics.errors().count() > errors_before {
            return;
        }
        let scoped = spec.paths.is_some() || spec.hosts.is_some() || spec.names.is_some();
        self.rules.push(PendingRule {
            rule: Rule {
                id: id.clone(),
                effect,
                permissions,
                reason,
                scoped,
                file: source.name.clone(),
                line,
            },
            entries,
        });
    }

    fn permissions(&mut self, source: &Source, list: &Spanned<Vec<Text>>) -> Vec<Permission> {
        if list.get_ref().is_empty() {
            self.error(
                source,
                &list.span(),
                "`permissions` is empty: the rule could never apply".to_owned(),
            );
            return Vec::new();
        }
        let mut out: Vec<Permission> = Vec::new();
        for item in list.get_ref() {
            let name = item.get_ref();
            if name == "*" {
                if list.get_ref().len() > 1 {
                    self.error(
                        source,
                        &item.span(),
                        "`*` stands for every permission and must be the only entry".to_owned(),
                    );
                }
                out.extend(Permission::ALL);
                continue;
            }
            match name.parse::<Permission>() {
                Ok(p) if out.contains(&p) => self.warning(
                    source,
                    &item.span(),
                    format!("permission `{name}` is listed twice"),
                ),
                Ok(p) => out.push(p),
                Err(e) => self.error(source, &item.span(), e.to_string()),
            }
        }
        out
    }

    /// Checks that the rule's matchers fit its permissions and parses every entry.
    fn matchers(
        &mut self,
        source: &Source,
        spec: &RuleSpec,
        permissions: &[Permission],
    ) -> Vec<Entry> {
        let given: Vec<(MatcherKind, &Spanned<Vec<Text>>)> = [
            (MatcherKind::Paths, spec.paths.as_ref()),
            (MatcherKind::Hosts, spec.hosts.as_ref()),
            (MatcherKind::Names, spec.names.as_ref()),
        ]
        .into_iter()
        .filter_map(|(kind, list)| list.map(|l| (kind, l)))
        .collect();
        if given.is_empty() {
            return Vec::new();
        }
        for &(kind, list) in &given {
            if !permissions.iter().any(|p| MatcherKind::of(*p) == kind) {
                self.error(
                    source,
                    &list.span(),
                    format!(
                        "`{}` does not fit this rule's permissions ({}): it is for {}",
                        kind.key(),
                        list_permissions(permissions),
                        kind.permissions()
                    ),
                );
            }
        }
        for &p in permissions {
            let kind = MatcherKind::of(p);
            if !given.iter().any(|(k, _)| *k == kind) {
                self.error(
                    source,
                    &spec.permissions.span(),
                    format!(
                        "permission `{p}` needs `{}` in a rule scoped by `{}`; split the rule, or drop the matcher to make it unscoped",
                        kind.key(),
                        given[0].0.key()
                    ),
                );
            }
        }
        let mut entries = Vec::new();
        for (kind, list) in given {
            if list.get_ref().is_empty() {
                self.error(
                    source,
                    &list.span(),
                    format!(
                        "`{}` is empty: the rule could never apply (remove it to make the rule unscoped)",
                        kind.key()
                    ),
                );
            }
            for item in list.get_ref() {
                match parse_entry(kind, item.get_ref()) {
                    Ok(entry) => entries.push(entry),
                    Err(message) => self.error(source, &item.span(), message),
                }
            }
        }
        entries
    }

    fn finish(self) -> Result<(Policy, Diagnostics), Diagnostics> {
        let mut diagnostics = self.diagnostics;
        if diagnostics.has_errors() {
            return Err(diagnostics);
        }
        if self.rules.len() > u32::MAX as usize {
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: String::new(),
                line: 0,
                column: 0,
                message: "too many rules".to_owned(),
            });
            return Err(diagnostics);
        }
        let (default_effect, default_reason) = self.defaults.unwrap_or((Effect::Deny, None));
        let mut tables: [Table; 8] = Default::default();
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, pending) in self.rules.into_iter().enumerate() {
            let index = RuleIndex(i as u32);
            for &p in &pending.rule.permissions {
                let table = &mut tables[p.index()];
                if !pending.rule.scoped {
                    table.unscoped.push(index);
                    continue;
                }
                if pending.rule.effect == Effect::Deny {
                    table.scoped_deny.push(index);
                }
                for entry in &pending.entries {
                    match (MatcherKind::of(p), entry) {
                        (MatcherKind::Paths, Entry::Path(path)) => table
                            .paths
                            .insert(&components(path).unwrap_or_default(), index),
                        (MatcherKind::Hosts, Entry::Host(host)) => table.hosts.insert(host, index),
                        (MatcherKind::Names, Entry::Name(name)) => {
                            if let Ok(pattern) = parse_name(name) {
                                table.names.insert(&pattern, index)
                            }
                        }
                        _ => {}
                    }
                }
            }
            rules.push(pending.rule);
        }
        let policy = Policy {
            rules,
            default_effect,
            default_reason: default_reason.unwrap_or_else(|| crate::DEFAULT_REASON.to_owned()),
            tables,
        };
        Ok((policy, diagnostics))
    }
}

fn parse_effect(text: &str) -> Option<Effect> {
    match text {
        "allow" => Some(Effect::Allow),
        "deny" => Some(Effect::Deny),
        _ => None,
    }
}

fn list_permissions(permissions: &[Permission]) -> String {
    permissions
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_entry(kind: MatcherKind, text: &str) -> Result<Entry, String> {
    match kind {
        MatcherKind::Paths => {
            if text.contains(['*', '?', '[', '{']) {
                return Err(format!(
                    "glob patterns are not supported yet: `{text}` (give a directory; it covers its whole subtree)"
                ));
            }
            normalize_absolute(text)
                .map(Entry::Path)
                .ok_or_else(|| format!("path `{text}` is relative: policy paths must be absolute"))
        }
        MatcherKind::Hosts => {
            if text.starts_with("unix:") || text.contains(['*', '/']) {
                return Err(format!(
                    "`{text}`: wildcards, CIDR ranges and `unix:` sockets are not supported yet; give a host or host:port"
                ));
            }
            parse_host(text).map(Entry::Host)
        }
        MatcherKind::Names => parse_name(text).map(|_| Entry::Name(text.to_owned())),
    }
}
