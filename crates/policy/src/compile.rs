//! From sources to a compiled [`Policy`]: validate everything, collect every problem, and build
//! the per-permission indexes that `decide` uses.

use crate::diagnostic::{Diagnostic, Diagnostics, Severity, Source};
use crate::host::{HostIndex, HostPattern, parse_host_pattern};
use crate::lint;
use crate::message::DenyMessage;
use crate::model::{self, DefaultsSpec, RuleSpec, Text, TextList, WhenSpec};
use crate::name::{NameIndex, parse_name};
use crate::path::{PathIndex, classes_without_separator, compile_glob, components, is_glob, join};
use crate::subject::{Directory, When};
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
    pub when: Option<When>,
    pub file: String,
    pub line: usize,
    pub column: usize,
}

pub(crate) const FLAG_DENY: u8 = 1;
pub(crate) const FLAG_WHEN: u8 = 2;

/// `defaults.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Decisions are answered as made.
    Enforce,
    /// Every would-deny is recorded and answered with allow: observe before enforcing.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// `defaults.symlinks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// A path that exists is also resolved; the lexical and the resolved path must both pass.
    Resolve,
    /// Only the path as written (made absolute and normalised) counts.
    Lexical,
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
    /// What a deny says (`defaults.deny_message`).
    pub(crate) deny_message: DenyMessage,
    pub(crate) mode: Mode,
    pub(crate) symlinks: Symlinks,
    pub(crate) tables: [Table; 8],
    /// The trees that `read`/`write` deny rules protect from being renamed or removed.
    pub(crate) deny_trees: crate::path::TreeIndex,
    /// Per rule, what `decide` needs on the hot path, one byte each (so a 100,000-rule policy's
    /// flags stay in cache): [`FLAG_DENY`], [`FLAG_WHEN`].
    pub(crate) flags: Vec<u8>,
    /// Whether any rule has a `when`: if not, subject facts are never consulted.
    pub(crate) uses_subject: bool,
    /// Whether any rule names `users` or `groups`: only then are account names looked up.
    pub(crate) uses_names: bool,
}

impl Policy {
    /// A policy that denies everything: the fail-closed value by construction.
    pub fn deny_all(reason: &str) -> Policy {
        Policy {
            rules: Vec::new(),
            default_effect: Effect::Deny,
            default_reason: sanitize_reason(reason).into_owned(),
            deny_message: DenyMessage::default(),
            mode: Mode::Enforce,
            symlinks: Symlinks::Lexical,
            tables: Default::default(),
            deny_trees: Default::default(),
            flags: Vec::new(),
            uses_subject: false,
            uses_names: false,
        }
    }

    /// Compiles the given files, in the order given (the daemon passes a directory's `*.toml`
    /// files in lexical order). `directory` resolves `users` and `groups` names. On success returns
    /// the policy and its warnings; otherwise every error and warning found.
    pub fn compile(
        sources: &[Source],
        directory: &dyn Directory,
    ) -> Result<(Policy, Diagnostics), Diagnostics> {
        let mut compiler = Compiler {
            directory,
            sources,
            diagnostics: Diagnostics::default(),
            defaults: None,
            ids: HashMap::new(),
            rules: Vec::new(),
            sites: Vec::new(),
        };
        for (index, source) in sources.iter().enumerate() {
            compiler.file(index, source);
        }
        compiler.finish(sources)
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

    /// What a deny says: the permission, the value, the reason and the rule, in the policy's
    /// shape.
    pub fn deny_message(&self) -> &DenyMessage {
        &self.deny_message
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn symlinks(&self) -> Symlinks {
        self.symlinks
    }

    /// Whether decisions depend on who asks (some rule has a `when`).
    pub fn uses_subject(&self) -> bool {
        self.uses_subject
    }

    /// Whether deciding needs the asking process's user and group names ([`Subject::user`],
    /// [`Subject::group_names`]).
    pub fn uses_names(&self) -> bool {
        self.uses_names
    }
}

/// A value matcher entry, checked and ready to index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    /// A normalised absolute path; with a glob when some component is a pattern.
    Path {
        path: String,
        glob: Option<globset::Glob>,
    },
    Host(HostPattern),
    /// A validated `names` entry.
    Name(String),
}

impl Entry {
    pub(crate) fn kind(&self) -> MatcherKind {
        match self {
            Entry::Path { .. } => MatcherKind::Paths,
            Entry::Host(_) => MatcherKind::Hosts,
            Entry::Name(_) => MatcherKind::Names,
        }
    }
}

/// Where a validated rule was written and its parsed entries: what the indexes and the lints
/// need beyond the [`Rule`] itself.
#[derive(Debug)]
pub(crate) struct RuleSite {
    pub source: usize,
    pub span: Range<usize>,
    pub entries: Vec<(Range<usize>, Entry)>,
}

/// A `[defaults]` table as compiled: where it was written, then decision, reason, mode,
/// symlinks and deny message.
type Defaults = (
    String,
    Effect,
    Option<String>,
    Mode,
    Symlinks,
    Option<DenyMessage>,
);

struct Compiler<'d> {
    directory: &'d dyn Directory,
    sources: &'d [Source],
    diagnostics: Diagnostics,
    /// The first `[defaults]`, with where it was written.
    defaults: Option<Defaults>,
    /// Each rule id with where it was first defined: (source index, byte offset).
    ids: HashMap<String, (usize, usize)>,
    rules: Vec<Rule>,
    /// Parallel to `rules`.
    sites: Vec<RuleSite>,
}

impl Compiler<'_> {
    fn error(&mut self, source: &Source, span: &Range<usize>, message: String) {
        self.diagnostics
            .push(Diagnostic::at(source, span, Severity::Error, message));
    }

    fn warning(&mut self, source: &Source, span: &Range<usize>, message: String) {
        self.diagnostics
            .push(Diagnostic::at(source, span, Severity::Warning, message));
    }

    fn file(&mut self, index: usize, source: &Source) {
        let (spec, problems) = model::read(source);
        for (span, message) in problems {
            self.error(source, &span, message);
        }
        if let Some(version) = &spec.version
            && *version.get_ref() != 1
        {
            self.error(
                source,
                &version.span(),
                format!(
                    "unsupported policy version `{}` (this broker reads version 1)",
                    version.get_ref()
                ),
            );
            return;
        }
        if let Some(requires) = &spec.requires {
            self.requires(source, requires);
        }
        if let Some((span, defaults)) = &spec.defaults {
            self.defaults(source, span, defaults);
        }
        for rule in &spec.rules {
            self.rule(index, source, rule);
        }
    }

    /// `requires`: a policy rolled out ahead of the binaries says which broker may serve it; an
    /// older one refuses it (and, on a reload, goes on serving the last good policy).
    fn requires(&mut self, source: &Source, requires: &toml::Spanned<String>) {
        let running = crate::BROKER_VERSION;
        match semver::VersionReq::parse(requires.get_ref()) {
            Err(e) => self.error(
                source,
                &requires.span(),
                format!(
                    "`requires = \"{}\"` is not a version requirement such as \">= 0.2\": {e}",
                    requires.get_ref()
                ),
            ),
            Ok(req) => {
                let Ok(version) = semver::Version::parse(running) else {
                    return;
                };
                if !req.matches(&version) {
                    // Which way it misses: a lower bound above this version wants a newer
                    // broker; otherwise this broker is newer than the policy allows.
                    let too_old = req.comparators.iter().any(|c| {
                        let base = semver::Version::new(
                            c.major,
                            c.minor.unwrap_or(0),
                            c.patch.unwrap_or(0),
                        );
                        let alone = semver::VersionReq {
                            comparators: vec![c.clone()],
                        };
                        let lower_bound = !matches!(c.op, semver::Op::Less | semver::Op::LessEq);
                        lower_bound && !alone.matches(&version) && base >= version
                    });
                    let advice = if too_old {
                        "upgrade the broker before this policy"
                    } else {
                        "this broker is newer than the policy allows: widen the policy's `requires`"
                    };
                    self.error(
                        source,
                        &requires.span(),
                        format!(
                            "this policy requires permission-broker {req}; this is {running}: {advice}"
                        ),
                    );
                }
            }
        }
    }

    fn defaults(&mut self, source: &Source, span: &Range<usize>, defaults: &DefaultsSpec) {
        let (line, column) = source.line_column(span.start);
        let here = format!("{}:{line}:{column}", source.name);
        if let Some((first, ..)) = &self.defaults {
            let first = first.clone();
            self.error(
                source,
                span,
                format!(
                    "`[defaults]` is set again (first set at {first}); set it in one file only"
                ),
            );
            return;
        }
        let effect = self.choice(
            source,
            defaults.decision.as_ref(),
            "decision",
            &[("deny", Effect::Deny), ("allow", Effect::Allow)],
        );
        let mode = self.choice(
            source,
            defaults.mode.as_ref(),
            "mode",
            &[("enforce", Mode::Enforce), ("audit", Mode::Audit)],
        );
        let symlinks = self.choice(
            source,
            defaults.symlinks.as_ref(),
            "symlinks",
            &[
                ("resolve", Symlinks::Resolve),
                ("lexical", Symlinks::Lexical),
            ],
        );
        let reason = defaults
            .reason
            .as_ref()
            .map(|text| self.reason(source, text));
        let deny_message = defaults.deny_message.as_ref().and_then(|text| {
            DenyMessage::parse(text.get_ref())
                .map_err(|e| self.error(source, &text.span(), format!("deny_message: {e}")))
                .ok()
        });
        self.defaults = Some((here, effect, reason, mode, symlinks, deny_message));
    }

    /// One of a fixed set of words; the first is the default when the key is absent.
    fn choice<T: Copy>(
        &mut self,
        source: &Source,
        text: Option<&Text>,
        key: &str,
        options: &[(&str, T)],
    ) -> T {
        let default = options[0].1;
        let Some(text) = text else {
            return default;
        };
        match options.iter().find(|(word, _)| word == text.get_ref()) {
            Some((_, value)) => *value,
            None => {
                let expected: Vec<String> = options.iter().map(|(w, _)| format!("`{w}`")).collect();
                self.error(
                    source,
                    &text.span(),
                    format!(
                        "unknown {key} `{}` (expected {})",
                        text.get_ref(),
                        expected.join(" or ")
                    ),
                );
                default
            }
        }
    }

    fn reason(&mut self, source: &Source, text: &Text) -> String {
        let clean = sanitize_reason(text.get_ref()).into_owned();
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

    fn rule(&mut self, index: usize, source: &Source, spanned: &Spanned<RuleSpec>) {
        let spec = spanned.get_ref();
        let errors_before = self.diagnostics.errors().count();
        let id = spec.id.get_ref();
        if let Err(message) = check_rule_id(id) {
            self.error(source, &spec.id.span(), message);
        }
        // Logs and `explain` point at the rule's `[[rule]]` header.
        let (line, column) = source.line_column(spanned.span().start);
        if let Some(&(at_source, at)) = self.ids.get(id) {
            let first_source = &self.sources[at_source];
            let (first_line, first_column) = first_source.line_column(at);
            let first = format!("{}:{first_line}:{first_column}", first_source.name);
            self.error(
                source,
                &spec.id.span(),
                format!("duplicate rule id `{id}` (first defined at {first})"),
            );
        } else {
            self.ids.insert(id.clone(), (index, spec.id.span().start));
        }
        let effect = self.choice(
            source,
            Some(&spec.effect),
            "effect",
            &[("allow", Effect::Allow), ("deny", Effect::Deny)],
        );
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
        let when = spec.when.as_ref().map(|when| self.when(source, when, id));
        self.bare_commands(source, spec, id, effect, &permissions, &entries);
        if self.diagnostics.errors().count() > errors_before {
            return;
        }
        let scoped = spec.paths.is_some() || spec.hosts.is_some() || spec.names.is_some();
        self.rules.push(Rule {
            id: id.clone(),
            effect,
            permissions,
            reason,
            scoped,
            when,
            file: source.name.clone(),
            line,
            column,
        });
        self.sites.push(RuleSite {
            source: index,
            span: spanned.span(),
            entries,
        });
    }

    /// A bare command name (`git`, no `/`) is not a program: Deno runs whatever the child's PATH
    /// finds first, and the script chooses that PATH (`Deno.Command`'s `env`, with no check).
    /// So an allow rule may name one only with `trusts_path = true`, and `check` says so each
    /// time; a deny of a bare name does not deny the program by its path, which is a warning.
    fn bare_commands(
        &mut self,
        source: &Source,
        spec: &RuleSpec,
        id: &str,
        effect: Effect,
        permissions: &[Permission],
        entries: &[(Range<usize>, Entry)],
    ) {
        let runs = permissions.contains(&Permission::Run);
        let trusts = spec.trusts_path.as_ref();
        if let Some(flag) = trusts
            && !runs
        {
            self.error(
                source,
                &flag.span(),
                "`trusts_path` is only for rules with the `run` permission".to_owned(),
            );
            return;
        }
        if !runs {
            return;
        }
        let bare: Vec<(&Range<usize>, &str)> = entries
            .iter()
            .filter_map(|(span, entry)| match entry {
                Entry::Name(name) if !name.contains('/') && name != "*" => {
                    Some((span, name.as_str()))
                }
                _ => None,
            })
            .collect();
        match (effect, trusts.map(|t| *t.get_ref())) {
            (Effect::Allow, Some(true)) if !bare.is_empty() => {
                let names: Vec<String> = bare.iter().map(|(_, n)| format!("`{n}`")).collect();
                self.warning(
                    source,
                    &trusts.map_or_else(|| spec.id.span(), |t| t.span()),
                    format!(
                        "rule `{id}` trusts the script's PATH for {}: a script that sets PATH runs its own program by that name; prefer absolute paths",
                        names.join(", ")
                    ),
                );
            }
            (Effect::Allow, _) => {
                for (span, name) in bare {
                    self.error(
                        source,
                        span,
                        format!(
                            "`{name}` is a bare command name: Deno runs whichever `{name}` the script's PATH finds, and the script sets the child's PATH; name the program by its absolute path (such as `/usr/bin/{name}`), or set `trusts_path = true` on this rule to allow it knowingly"
                        ),
                    );
                }
            }
            (Effect::Deny, _) => {
                for (span, name) in bare {
                    self.warning(
                        source,
                        span,
                        format!(
                            "denying the bare command `{name}` does not deny the program by its path (`/usr/bin/{name}`) or under another name; deny its absolute path too"
                        ),
                    );
                }
            }
        }
    }

    fn permissions(&mut self, source: &Source, list: &TextList) -> Vec<Permission> {
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
    ) -> Vec<(Range<usize>, Entry)> {
        let given: Vec<(MatcherKind, &TextList)> = [
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
        // With no valid permission (each already reported), fit errors would only repeat them.
        let check_fit = !permissions.is_empty();
        for &(kind, list) in given.iter().filter(|_| check_fit) {
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
        let sys_only = permissions.iter().all(|p| *p == Permission::Sys);
        let mut entries: Vec<(Range<usize>, Entry)> = Vec::new();
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
            let first_of_kind = entries.len();
            for item in list.get_ref() {
                match parse_entry(kind, item.get_ref()) {
                    Ok(entry) => {
                        if entries[first_of_kind..]
                            .iter()
                            .any(|(_, seen)| *seen == entry)
                        {
                            self.warning(
                                source,
                                &item.span(),
                                format!("`{}` is listed twice in `{}`", item.get_ref(), kind.key()),
                            );
                            continue;
                        }
                        let text = item.get_ref();
                        if text.trim() != text {
                            self.warning(
                                source,
                                &item.span(),
                                format!(
                                    "`{}` begins or ends with white space, which is part of the value (no request will have it)",
                                    text.escape_debug()
                                ),
                            );
                        }
                        if kind == MatcherKind::Paths && !unicode_normalization::is_nfc(text) {
                            self.warning(
                                source,
                                &item.span(),
                                format!(
                                    "path `{text}` is not in Unicode NFC form (as macOS editors may write it): Linux file names are bytes, so it matches only a request written the same way, not the NFC name most programs use"
                                ),
                            );
                        }
                        if kind == MatcherKind::Names
                            && sys_only
                            && !item.get_ref().contains('*')
                            && !lint::KNOWN_SYS_KINDS.contains(&item.get_ref().as_str())
                        {
                            self.warning(
                                source,
                                &item.span(),
                                format!(
                                    "`{}` is not a sys kind Deno asks about (known: {})",
                                    item.get_ref(),
                                    lint::KNOWN_SYS_KINDS.join(", ")
                                ),
                            );
                        }
                        entries.push((item.span(), entry));
                    }
                    Err(message) => self.error(source, &item.span(), message),
                }
            }
        }
        entries
    }

    fn when(&mut self, source: &Source, spanned: &Spanned<WhenSpec>, rule_id: &str) -> When {
        let spec = spanned.get_ref();
        let mut when = When::default();
        let mut any = false;
        if let Some(list) = &spec.uids {
            any = true;
            when.uids = Some(self.non_empty(source, list, "uids", |_, v| Some(*v.get_ref())));
        }
        if let Some(list) = &spec.gids {
            any = true;
            when.gids = Some(self.non_empty(source, list, "gids", |_, v| Some(*v.get_ref())));
        }
        if let Some(list) = &spec.users {
            any = true;
            let directory = self.directory;
            when.users = Some(self.non_empty(source, list, "users", |c, name| {
                c.account_name(
                    source,
                    name,
                    "user",
                    directory.user(name.get_ref()).is_some(),
                )
            }));
            // Both `uids` and `users`, where this host knows the users: they must overlap.
            if let (Some(uids), Some(users)) = (&when.uids, &when.users) {
                let known: Option<Vec<u32>> = users.iter().map(|u| directory.user(u)).collect();
                if let Some(known) = known
                    && !known.iter().any(|u| uids.contains(u))
                {
                    self.warning(
                        source,
                        &spec.uids.as_ref().map_or(list.span(), |u| u.span()),
                        format!(
                            "rule `{rule_id}` can never apply: no uid in `uids` is one of its `users`"
                        ),
                    );
                }
            }
        }
        if let Some(list) = &spec.groups {
            any = true;
            let directory = self.directory;
            when.groups = Some(self.non_empty(source, list, "groups", |c, name| {
                c.account_name(
                    source,
                    name,
                    "group",
                    directory.group(name.get_ref()).is_some(),
                )
            }));
        }
        if let Some(list) = &spec.executables {
            any = true;
            when.executables = Some(self.non_empty(source, list, "executables", |c, exe| {
                let path = crate::path::normalize_absolute(exe.get_ref());
                if path.is_none() {
                    c.error(
                        source,
                        &exe.span(),
                        format!("executable `{}` must be an absolute path", exe.get_ref()),
                    );
                }
                path
            }));
        }
        if let Some(list) = &spec.units {
            any = true;
            when.units = Some(self.non_empty(source, list, "units", |c, unit| {
                let name = unit.get_ref();
                if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
                    c.error(
                        source,
                        &unit.span(),
                        format!("`{name}` is not a systemd unit name (such as `app.service`)"),
                    );
                    return None;
                }
                Some(name.clone())
            }));
        }
        if !any {
            self.error(
                source,
                &spanned.span(),
                "`when` is empty: give at least one of uids, gids, users, groups, executables, units"
                    .to_owned(),
            );
        }
        when
    }

    /// A `users`/`groups` name: kept as a name and matched when a process asks, on the host
    /// that decides. One the directory does not know is a warning, not an error: a fleet policy
    /// names accounts that only some hosts have (or that `DynamicUser=` creates while a service
    /// runs), and CI checks it on a host that has none of them.
    fn account_name(
        &mut self,
        source: &Source,
        name: &Spanned<String>,
        what: &str,
        known: bool,
    ) -> Option<String> {
        let text = name.get_ref();
        if text.is_empty() || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            self.error(
                source,
                &name.span(),
                format!(
                    "{what} name `{}` must be non-empty, without spaces or control characters",
                    text.escape_debug()
                ),
            );
            return None;
        }
        if !known {
            self.warning(
                source,
                &name.span(),
                format!(
                    "unknown {what} `{text}` on this host: the rule applies here only to processes of that {what} once it exists (it is looked up when a process asks; give `check` the fleet's accounts with --passwd/--group)"
                ),
            );
        }
        Some(text.clone())
    }

    fn non_empty<T, U>(
        &mut self,
        source: &Source,
        list: &Spanned<Vec<T>>,
        key: &str,
        mut each: impl FnMut(&mut Self, &T) -> Option<U>,
    ) -> Vec<U> {
        if list.get_ref().is_empty() {
            self.error(
                source,
                &list.span(),
                format!("`{key}` is empty: the rule could never apply"),
            );
        }
        list.get_ref()
            .iter()
            .filter_map(|item| each(self, item))
            .collect()
    }

    fn finish(self, sources: &[Source]) -> Result<(Policy, Diagnostics), Diagnostics> {
        let mut diagnostics = self.diagnostics;
        if diagnostics.has_errors() {
            diagnostics.sort();
            return Err(diagnostics);
        }
        let (default_effect, default_reason, mode, symlinks, deny_message) = match self.defaults {
            Some((_, effect, reason, mode, symlinks, message)) => {
                (effect, reason, mode, symlinks, message)
            }
            None => (Effect::Deny, None, Mode::Enforce, Symlinks::Resolve, None),
        };
        let mut tables: [Table; 8] = Default::default();
        for (i, (rule, site)) in self.rules.iter().zip(&self.sites).enumerate() {
            let index = RuleIndex(u32::try_from(i).unwrap_or(u32::MAX));
            for &p in &rule.permissions {
                let table = &mut tables[p.index()];
                if !rule.scoped {
                    table.unscoped.push(index);
                    continue;
                }
                if rule.effect == Effect::Deny {
                    table.scoped_deny.push(index);
                }
                for (_, entry) in &site.entries {
                    if entry.kind() != MatcherKind::of(p) {
                        continue;
                    }
                    match entry {
                        Entry::Path { path, glob } => {
                            let parts = components(path).unwrap_or_default();
                            let literal = parts.iter().take_while(|c| !is_glob(c)).count();
                            table.paths.insert(&parts[..literal], index, glob.clone());
                        }
                        Entry::Host(pattern) => table.hosts.insert(pattern, index),
                        Entry::Name(name) => {
                            if let Ok(pattern) = parse_name(name) {
                                table.names.insert(&pattern, index);
                            }
                        }
                    }
                }
            }
        }
        for table in &mut tables {
            if let Err(e) = table.paths.finish().and_then(|()| table.hosts.finish()) {
                diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    file: sources.first().map(|s| s.name.clone()).unwrap_or_default(),
                    line: 1,
                    column: 1,
                    message: format!("cannot build the glob index: {e}"),
                });
                return Err(diagnostics);
            }
        }
        let mut deny_trees = crate::path::TreeIndex::default();
        for (i, (rule, site)) in self.rules.iter().zip(&self.sites).enumerate() {
            let covers_files = rule
                .permissions
                .iter()
                .any(|p| matches!(p, Permission::Read | Permission::Write));
            if rule.effect != Effect::Deny || !covers_files {
                continue;
            }
            let index = RuleIndex(u32::try_from(i).unwrap_or(u32::MAX));
            for (_, entry) in &site.entries {
                if let Entry::Path { path, .. } = entry {
                    let parts = components(path).unwrap_or_default();
                    let literal = parts.iter().take_while(|c| !is_glob(c)).count();
                    deny_trees.insert(&parts[..literal], index);
                }
            }
        }
        deny_trees.finish();
        let rules = self.rules;
        let flags = rules
            .iter()
            .map(|r| {
                let deny = if r.effect == Effect::Deny {
                    FLAG_DENY
                } else {
                    0
                };
                let when = if r.when.is_some() { FLAG_WHEN } else { 0 };
                deny | when
            })
            .collect();
        let uses_subject = rules.iter().any(|r| r.when.is_some());
        let uses_names = rules
            .iter()
            .filter_map(|r| r.when.as_ref())
            .any(|w| w.users.is_some() || w.groups.is_some());
        let policy = Policy {
            rules,
            default_effect,
            default_reason: default_reason.unwrap_or_else(|| crate::DEFAULT_REASON.to_owned()),
            deny_message: deny_message.unwrap_or_default(),
            mode,
            symlinks,
            tables,
            flags,
            uses_subject,
            uses_names,
            deny_trees,
        };
        for (source, span, message) in lint::lint(&policy, &self.sites) {
            diagnostics.push(Diagnostic::at(
                &sources[source],
                &span,
                Severity::Warning,
                message,
            ));
        }
        diagnostics.sort();
        Ok((policy, diagnostics))
    }
}

fn list_permissions(permissions: &[Permission]) -> String {
    permissions
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn parse_entry(kind: MatcherKind, text: &str) -> Result<Entry, String> {
    match kind {
        MatcherKind::Paths => {
            // On the text as written: normalising splits it at every `/`, even inside a class.
            classes_without_separator(text)?;
            let mut parts = components(text).ok_or_else(|| {
                format!("path `{text}` is relative: policy paths must be absolute")
            })?;
            // A path covers its whole subtree, so a trailing `/**` adds nothing -- and must not
            // leave out the base: `/srv/secrets/**` denies `/srv/secrets` itself too (its
            // listing, its removal, its rename), as `/**` always covered `/`.
            while parts.last() == Some(&"**") {
                parts.pop();
            }
            let path = join(&parts);
            let glob = if parts.iter().any(|c| is_glob(c)) {
                Some(compile_glob(&path)?)
            } else {
                None
            };
            Ok(Entry::Path { path, glob })
        }
        MatcherKind::Hosts => parse_host_pattern(text).map(Entry::Host),
        MatcherKind::Names => parse_name(text).map(|_| Entry::Name(text.to_owned())),
    }
}

/// Words the decision log and `explain` use for what decided a request, and the metrics' label
/// for rules past their label limit: a rule may not be called that, or a log line or a metric
/// could not be told from the broker's own.
pub const RESERVED_RULE_IDS: &[&str] = &["default", "unresolvable", "broker-files", "other"];

/// The longest rule id, in bytes.
const MAX_RULE_ID_BYTES: usize = 128;

/// A rule id is what logs, `explain` and deny messages show to say who decided: plain ASCII
/// letters, digits, `.`, `_` and `-`, so that no id can look like another (a trailing zero-width
/// space, a right-to-left override) or like the broker's own words.
fn check_rule_id(id: &str) -> Result<(), String> {
    let shown = id.escape_debug();
    if id.is_empty() {
        return Err("rule id must not be empty".to_owned());
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "rule id `{shown}` may contain only ASCII letters, digits, `.`, `_` and `-` (found {})",
            bad.escape_unicode()
        ));
    }
    if id.len() > MAX_RULE_ID_BYTES {
        return Err(format!(
            "rule id `{shown}` is longer than {MAX_RULE_ID_BYTES} bytes"
        ));
    }
    if RESERVED_RULE_IDS.contains(&id) {
        let why = match id {
            "other" => "the metrics count the rules past their label limit under it",
            _ => "the decision log uses it for what no rule decided",
        };
        return Err(format!("rule id `{id}` is reserved: {why}"));
    }
    Ok(())
}
