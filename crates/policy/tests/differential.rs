//! The compiled, indexed evaluator against a deliberately naive one that scans every rule, over
//! generated policies and requests (as Cedar keeps its optimised engine honest).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_policy::{
    DecidedBy, Effect, HostPattern, NoDirectory, Permission, Policy, Ports, Source, Subject,
    lexical_only, normalize_absolute, parse_host, parse_host_pattern,
};
use proptest::prelude::*;
use std::net::IpAddr;

#[derive(Debug, Clone)]
struct GenRule {
    effect: Effect,
    permissions: Vec<Permission>,
    /// `None`: unscoped. Entries are for the kind of `permissions` (all of one kind).
    entries: Option<Vec<String>>,
    uids: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Paths,
    Hosts,
    Names,
}

fn kind(p: Permission) -> Kind {
    match p {
        Permission::Read | Permission::Write | Permission::Ffi => Kind::Paths,
        Permission::Net | Permission::Import => Kind::Hosts,
        _ => Kind::Names,
    }
}

const COMPONENTS: &[&str] = &["a", "b", "srv", "app", "x.pem", "é", "日本.pem"];
/// Request components that character classes can tell apart (one character between `a` and `b`),
/// next to `a` and `b` themselves, so `/a/b` tempts every class that could match `/`.
const CLASS_COMPONENTS: &[&str] = &[
    "a_b",
    "a-b",
    "a.b",
    "a0b",
    "a]b",
    "a!b",
    "a b",
    "ab",
    "a~b",
    "aéb",
    "a日b",
    "a\u{1F600}b",
];
const GLOB_COMPONENTS: &[&str] = &["*", "**", "{a,b}", "?", "*.pem", "a?b", "a*b"];
/// Characters a generated class lists one by one: never `/` (a class naming `/` is a load error),
/// `]` and `-` only where they are literal (first, last), no `!` or `^` (negation when first).
const CLASS_CHARS: &[char] = &[
    'a', 'b', '_', '.', '0', '9', '~', ' ', '*', '?', '[', '{', '}', ',', '\\', 'é', '日',
];
/// Range ends: most ranges between one below `/` and one above it span `/` (0x2F).
const RANGE_ENDS: &[char] = &[
    ' ', '!', '*', ',', '.', '0', '9', 'A', '_', 'a', 'b', 'z', '~',
];

/// A character class as text: `[`, an optional `!`/`^`, an optional leading `]`, singles and
/// ranges (many spanning `/`), an optional trailing `-`, `]`.
fn class_strategy() -> impl Strategy<Value = String> {
    let item = prop_oneof![
        prop::sample::select(CLASS_CHARS).prop_map(|c| c.to_string()),
        (
            prop::sample::select(RANGE_ENDS),
            prop::sample::select(RANGE_ENDS)
        )
            .prop_map(|(x, y)| format!("{}-{}", x.min(y), x.max(y))),
    ];
    (
        prop::sample::select(vec!["", "", "!", "^"]),
        any::<bool>(),
        prop::collection::vec(item, 0..3),
        any::<bool>(),
    )
        .prop_map(|(negation, bracket, items, dash)| {
            let mut body = String::new();
            if bracket {
                body.push(']');
            }
            body.push_str(&items.concat());
            if dash || body.is_empty() {
                body.push('-');
            }
            format!("[{negation}{body}]")
        })
}

/// A path component with a class in it: `a[!_]b`, `[.-0]`, `x*[^a]`, `{a,[!b]}` ...
fn class_component_strategy() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", "a", "x", "a*", "{a,b"]),
        class_strategy(),
        prop::sample::select(vec!["", "b", ".pem", "?", "*"]),
    )
        .prop_map(|(before, class, after)| {
            let close = if before.starts_with('{') { "}" } else { "" };
            format!("{before}{class}{after}{close}")
        })
}
const HOSTS: &[&str] = &[
    "a.com",
    "b.a.com",
    "x.b.a.com",
    "10.0.0.1",
    "10.0.1.1",
    "[::1]",
    "[fd00::5]",
];
const HOST_ENTRIES: &[&str] = &[
    "a.com",
    "a.com:443",
    "*.a.com",
    "*.b.a.com:80-443",
    "10.0.0.0/16",
    "10.0.0.0/24:80",
    "10.0.0.1",
    "[::1]:80",
    "[fd00::]/8",
    "b.a.com:80",
];
const NAMES: &[&str] = &["HOME", "HOMEDIR", "AWS_X", "AWS_", "A"];
const NAME_ENTRIES: &[&str] = &["HOME", "AWS_*", "HOME*", "*", "A", "AWS_X"];
/// `run` entries: command paths (exact and `PREFIX*`) and bare names.
const RUN_ENTRIES: &[&str] = &[
    "/usr/bin/*",
    "/usr/bin/git",
    "/usr/bin/l*",
    "/usr/*",
    "/tmp/x",
    "/",
    "ls",
    "git",
    "l*",
    "*",
];
/// Components of generated commands: `.`, `..` and empty ones (`//`) among real ones.
const RUN_COMPONENTS: &[&str] = &[
    "usr", "bin", "git", "ls", "lib", "tmp", "x", "sub", "..", ".", "",
];
/// Working directories of the subject (`None` stands for an unknown one).
const CWDS: &[&str] = &["/", "/usr", "/usr/bin", "/usr/lib", "/tmp", "/home/u"];

/// A `run` value: a bare name, or a command with `/` in it, absolute or relative (`./x`,
/// `../usr/bin/git`, `sub/ls`), with `.`, `..` and `//` anywhere.
fn run_value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec!["ls", "git", "x", "l", "..", ".", "*", "usr"])
            .prop_map(str::to_owned),
        3 => (
            prop::sample::select(vec!["", "/", "/", "./", "../", "//", "/usr/bin/", "sub/"]),
            prop::collection::vec(prop::sample::select(RUN_COMPONENTS), 0..5),
            any::<bool>(),
        )
            .prop_map(|(lead, parts, trailing)| {
                let mut value = format!("{lead}{}", parts.join("/"));
                if trailing {
                    value.push('/');
                }
                value
            }),
    ]
}

/// A `run` request made from a rule's `names` entry, to land on its edges: the entry (without
/// its `*`, plus a component or not) written with `.`, `x/..` and `//` between components, or
/// relative to a working directory that is a prefix of it, or escaping it with `..`. `choices`
/// picks; it repeats when it runs out. Returns the value and the working directory.
fn run_near_miss(entry: &str, choices: &[u8]) -> (String, Option<&'static str>) {
    let mut picks = choices.iter().copied().cycle();
    let mut pick = |n: usize| usize::from(picks.next().unwrap_or(0)) % n;
    let stem = entry.strip_suffix('*').unwrap_or(entry);
    let Some(rest) = stem.strip_prefix('/') else {
        return (format!("{stem}{}", ["", "x", "/x"][pick(3)]), None);
    };
    let mut parts: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    match pick(3) {
        0 => parts.push("git"),
        1 => parts.extend(["..", "..", "tmp", "evil"]),
        _ => {}
    }
    // Each component, with a `.`, an `x/..` or an empty component before it, or as it is.
    let written: Vec<String> = parts
        .iter()
        .map(|part| {
            let before = ["./", "x/../", "/", "", ""][pick(5)];
            format!("{before}{part}")
        })
        .collect();
    // Relative to a working directory that is one of the entry's ancestors (if it is in CWDS).
    let path = format!("/{}/", parts.join("/"));
    let cwd = match pick(4) {
        0 => None,
        n => CWDS
            .iter()
            .copied()
            .filter(|c| *c == "/" || path.starts_with(&format!("{c}/")))
            .nth(n - 1),
    };
    let value = match cwd {
        None => format!("/{}", written.join("/")),
        Some(cwd) => {
            let depth = if cwd == "/" {
                0
            } else {
                cwd[1..].split('/').count()
            };
            let below = written.get(depth..).unwrap_or_default().join("/");
            match pick(3) {
                1 if depth > 0 => {
                    let last = cwd.rsplit('/').next().unwrap_or_default();
                    format!("../{last}/{below}")
                }
                2 if below.contains('/') => below,
                _ => format!("./{below}"),
            }
        }
    };
    (value, cwd)
}

fn path_strategy(globs: bool) -> impl Strategy<Value = String> {
    let component = if globs {
        prop_oneof![
            3 => prop::sample::select([COMPONENTS, GLOB_COMPONENTS].concat()).prop_map(str::to_owned),
            1 => class_component_strategy(),
        ]
        .boxed()
    } else {
        prop::sample::select([COMPONENTS, COMPONENTS, CLASS_COMPONENTS].concat())
            .prop_map(str::to_owned)
            .boxed()
    };
    prop::collection::vec(component, 0..4).prop_map(|parts| format!("/{}", parts.join("/")))
}

fn rule_strategy() -> impl Strategy<Value = GenRule> {
    let kinds = prop::sample::select(vec![Kind::Paths, Kind::Hosts, Kind::Names]);
    (
        any::<bool>(),
        kinds,
        any::<bool>(),
        prop::option::of(prop::collection::vec(0u32..3, 1..3)),
    )
        .prop_flat_map(|(allow, kind, scoped, uids)| {
            let names_permissions = prop::sample::select(vec![
                vec![Permission::Env],
                vec![Permission::Run],
                vec![Permission::Run],
                vec![Permission::Env, Permission::Run],
            ]);
            let permissions = match kind {
                Kind::Paths => Just(vec![Permission::Read, Permission::Write]).boxed(),
                Kind::Hosts => Just(vec![Permission::Net]).boxed(),
                Kind::Names => names_permissions.boxed(),
            };
            (
                Just(allow),
                permissions,
                Just(kind),
                Just(scoped),
                Just(uids),
            )
        })
        .prop_flat_map(|(allow, permissions, kind, scoped, uids)| {
            let names: Vec<&str> = [
                (Permission::Env, NAME_ENTRIES),
                (Permission::Run, RUN_ENTRIES),
            ]
            .iter()
            .filter(|(p, _)| permissions.contains(p))
            .flat_map(|(_, entries)| entries.iter().copied())
            .collect();
            let entries: BoxedStrategy<Option<Vec<String>>> = if !scoped {
                Just(None).boxed()
            } else {
                match kind {
                    Kind::Paths => prop::collection::vec(path_strategy(true), 1..3)
                        .prop_map(Some)
                        .boxed(),
                    Kind::Hosts => prop::collection::vec(
                        prop::sample::select(HOST_ENTRIES).prop_map(str::to_owned),
                        1..3,
                    )
                    .prop_map(Some)
                    .boxed(),
                    Kind::Names => prop::collection::vec(
                        prop::sample::select(names).prop_map(str::to_owned),
                        1..3,
                    )
                    .prop_map(Some)
                    .boxed(),
                }
            };
            (Just(allow), Just(permissions), entries, Just(uids))
        })
        .prop_map(|(allow, permissions, entries, uids)| GenRule {
            effect: if allow { Effect::Allow } else { Effect::Deny },
            permissions,
            entries,
            uids,
        })
}

fn toml(rules: &[GenRule], default_allow: bool) -> String {
    let mut out = format!(
        "version = 1\n[defaults]\ndecision = \"{}\"\nsymlinks = \"lexical\"\n",
        if default_allow { "allow" } else { "deny" }
    );
    for (i, r) in rules.iter().enumerate() {
        let perms: Vec<String> = r.permissions.iter().map(|p| format!("\"{p}\"")).collect();
        out += &format!(
            "[[rule]]\nid = \"r{i}\"\neffect = \"{}\"\npermissions = [{}]\n",
            r.effect,
            perms.join(", ")
        );
        if let Some(entries) = &r.entries {
            let key = match kind(r.permissions[0]) {
                Kind::Paths => "paths",
                Kind::Hosts => "hosts",
                Kind::Names => "names",
            };
            let list: Vec<String> = entries.iter().map(|e| format!("{e:?}")).collect();
            out += &format!("{key} = [{}]\n", list.join(", "));
            // Bare command names are allowed only knowingly (matching is the same).
            if r.permissions.contains(&Permission::Run)
                && entries.iter().any(|e| !e.contains('/') && e != "*")
            {
                out += "trusts_path = true\n";
            }
        }
        if let Some(uids) = &r.uids {
            out += &format!("when = {{ uids = {uids:?} }}\n");
        }
    }
    out
}

// ---- The naive reference: no index, no cleverness. ----

/// An entry with its trailing `**` components dropped: a path covers its subtree, so `/srv/**`
/// is `/srv` (its base included), and `/**` is `/`.
fn naive_entry(entry: &str) -> String {
    let mut entry = normalize_absolute(entry).unwrap();
    while entry == "/**" || entry.ends_with("/**") {
        entry.truncate(entry.len() - 3);
        if entry.is_empty() {
            entry.push('/');
        }
    }
    entry
}

/// The literal part of an entry: its components before the first glob one.
fn naive_literal_base(entry: &str) -> Vec<String> {
    naive_entry(entry)
        .split('/')
        .filter(|c| !c.is_empty())
        .take_while(|c| !c.contains(['*', '?', '{', '[']))
        .map(str::to_owned)
        .collect()
}

/// A write of `request` renames or removes what is at or below it: does that hold `entry`'s tree?
fn naive_write_reaches(entry: &str, request: &str) -> bool {
    let base = naive_literal_base(entry);
    let request: Vec<&str> = request.split('/').filter(|c| !c.is_empty()).collect();
    request.len() <= base.len() && base.iter().zip(&request).all(|(b, r)| b == r)
}

fn naive_path_match(entry: &str, request: &str) -> bool {
    let entry = naive_entry(entry);
    let mut ancestors = vec![request.to_owned()];
    let mut p = request.to_owned();
    while let Some(cut) = p.rfind('/') {
        p.truncate(cut);
        ancestors.push(if p.is_empty() {
            "/".to_owned()
        } else {
            p.clone()
        });
        if p.is_empty() {
            break;
        }
    }
    if entry.contains(['*', '?', '{', '[']) {
        let glob: Vec<&str> = entry[1..].split('/').collect();
        ancestors.iter().any(|a| reference::matches(&glob, a))
    } else {
        ancestors.contains(&entry)
    }
}

/// Glob matching written from the language's rules, not with globset: a pattern is matched one
/// path component at a time, so nothing but `**` can ever take a `/`; within a component `*` is
/// any run of characters, `?` one character, `[...]` one character of the class (`!`/`^` negates,
/// `a-z` ranges, a leading `]` and a leading or trailing `-` are literal, `\` is literal), `{a,b}`
/// either branch, `\x` the character `x`. Generated patterns put no `/` inside a class or braces.
mod reference {
    /// `glob`: the pattern's components (after its leading `/`); `path`: a normalised absolute
    /// path. `**` spans any number of whole components, but at the end of a pattern at least one
    /// (`/srv/**` is what is below `/srv`, not `/srv`), except below the root, which is `/`.
    pub(super) fn matches(glob: &[&str], path: &str) -> bool {
        let parts: Vec<&str> = if path == "/" {
            Vec::new()
        } else {
            path[1..].split('/').collect()
        };
        components(glob, &parts, parts.is_empty())
    }

    fn components(glob: &[&str], parts: &[&str], root: bool) -> bool {
        match glob.split_first() {
            None => parts.is_empty(),
            Some((&"**", [])) => !parts.is_empty() || root,
            Some((&"**", rest)) => {
                (0..=parts.len()).any(|skip| components(rest, &parts[skip..], root))
            }
            // `/*` also matches the root `/`: its one component is then empty.
            Some((first, rest)) => match parts.split_first() {
                Some((part, more)) => component(first, part) && components(rest, more, false),
                None => root && rest.is_empty() && component(first, ""),
            },
        }
    }

    #[derive(Debug)]
    enum Token {
        Char(char),
        Star,
        One,
        Class {
            negated: bool,
            ranges: Vec<(char, char)>,
        },
        Either(Vec<Vec<Token>>),
    }

    fn component(pattern: &str, name: &str) -> bool {
        let chars: Vec<char> = pattern.chars().collect();
        let mut at = 0;
        let tokens = parse(&chars, &mut at, false);
        assert_eq!(
            at,
            chars.len(),
            "generated patterns are well formed: {pattern}"
        );
        let name: Vec<char> = name.chars().collect();
        sequence(&tokens, &name).contains(&name.len())
    }

    /// Tokens up to the end, or (inside braces) up to the `,` or `}` that ends a branch.
    fn parse(chars: &[char], at: &mut usize, in_braces: bool) -> Vec<Token> {
        let mut out = Vec::new();
        while let Some(&c) = chars.get(*at) {
            match c {
                ',' | '}' if in_braces => break,
                '*' => out.push(Token::Star),
                '?' => out.push(Token::One),
                '\\' => {
                    *at += 1;
                    out.push(Token::Char(chars[*at]));
                }
                '{' => {
                    let mut branches = Vec::new();
                    loop {
                        *at += 1;
                        branches.push(parse(chars, at, true));
                        if chars[*at] == '}' {
                            break;
                        }
                    }
                    out.push(Token::Either(branches));
                }
                '[' => out.push(class(chars, at)),
                c => out.push(Token::Char(c)),
            }
            *at += 1;
        }
        out
    }

    /// A class from its `[` to its `]` (left on the `]`).
    fn class(chars: &[char], at: &mut usize) -> Token {
        *at += 1;
        let negated = matches!(chars[*at], '!' | '^');
        if negated {
            *at += 1;
        }
        let mut ranges: Vec<(char, char)> = Vec::new();
        let mut first = true;
        let mut pending_dash = false;
        loop {
            let c = chars[*at];
            if c == ']' && !first {
                break;
            }
            if c == '-' && !first && !pending_dash {
                pending_dash = true;
            } else if pending_dash {
                ranges.last_mut().unwrap().1 = c;
                pending_dash = false;
            } else {
                ranges.push((c, c));
            }
            first = false;
            *at += 1;
        }
        if pending_dash {
            ranges.push(('-', '-'));
        }
        Token::Class { negated, ranges }
    }

    /// Every end offset in `name` that `tokens` can reach from offset 0.
    fn sequence(tokens: &[Token], name: &[char]) -> Vec<usize> {
        let mut ends = vec![0];
        for token in tokens {
            let mut next = Vec::new();
            for &start in &ends {
                for end in token_ends(token, name, start) {
                    if !next.contains(&end) {
                        next.push(end);
                    }
                }
            }
            ends = next;
        }
        ends
    }

    fn token_ends(token: &Token, name: &[char], start: usize) -> Vec<usize> {
        let one = |ok: bool| if ok { vec![start + 1] } else { Vec::new() };
        let rest = &name[start..];
        match token {
            Token::Char(c) => one(rest.first() == Some(c)),
            Token::One => one(rest.first().is_some_and(|&c| c != '/')),
            Token::Star => (start..=name.len())
                .take_while(|&end| name[start..end].iter().all(|&c| c != '/'))
                .collect(),
            Token::Class { negated, ranges } => one(rest.first().is_some_and(|&c| {
                c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            })),
            Token::Either(branches) => {
                let mut out = Vec::new();
                for branch in branches {
                    for end in sequence(branch, rest) {
                        if !out.contains(&(start + end)) {
                            out.push(start + end);
                        }
                    }
                }
                out
            }
        }
    }
}

fn naive_host_match(entry: &str, request: &str) -> bool {
    let target = parse_host(request).unwrap();
    let covers = |ports: Ports| match ports {
        Ports::Any => true,
        Ports::Range(lo, hi) => target.port.is_some_and(|p| lo <= p && p <= hi),
    };
    match parse_host_pattern(entry).unwrap() {
        HostPattern::Exact { host, ports } => host == target.host && covers(ports),
        HostPattern::Subdomains { domain, ports } => {
            target.ip.is_none() && target.host.ends_with(&format!(".{domain}")) && covers(ports)
        }
        HostPattern::Cidr {
            network,
            prefix,
            ports,
        } => {
            let inside = match (network, target.ip) {
                (IpAddr::V4(n), Some(IpAddr::V4(t))) => (0..prefix)
                    .all(|b| (u32::from(n) >> (31 - b)) & 1 == (u32::from(t) >> (31 - b)) & 1),
                (IpAddr::V6(n), Some(IpAddr::V6(t))) => (0..prefix)
                    .all(|b| (u128::from(n) >> (127 - b)) & 1 == (u128::from(t) >> (127 - b)) & 1),
                _ => false,
            };
            inside && covers(ports)
        }
        HostPattern::Unix { .. } => false,
    }
}

fn naive_name_match(entry: &str, request: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => request.starts_with(prefix),
        None => entry == request,
    }
}

/// A `run` value as the language defines it, written here without the crate's path code: with
/// no `/` it is a name, as written; with one it is a path: relative, it cannot be placed
/// (`None`: Deno runs it from a `cwd` it does not send); absolute, `.` and empty components
/// dropped and `..` taking the previous one (never above `/`).
fn naive_command(value: &str, _cwd: Option<&str>) -> Option<String> {
    if !value.contains('/') {
        return Some(value.to_owned());
    }
    if !value.starts_with('/') {
        return None;
    }
    let base = "";
    let mut stack: Vec<&str> = Vec::new();
    for part in base.split('/').chain(value.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            part => stack.push(part),
        }
    }
    Some(format!("/{}", stack.join("/")))
}

/// What the naive evaluator says: the verdict and the deciding rule (`None`: the default).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Decided(Effect, Option<usize>),
    /// The value cannot be interpreted (a relative command without a working directory).
    Unresolvable,
}

fn naive(
    rules: &[GenRule],
    default_allow: bool,
    p: Permission,
    value: Option<&str>,
    uid: Option<u32>,
    cwd: Option<&str>,
) -> Outcome {
    let value = match value {
        None => None,
        Some(v) => Some(match kind(p) {
            Kind::Paths => normalize_absolute(v).unwrap(),
            Kind::Names if p == Permission::Run => match naive_command(v, cwd) {
                Some(command) => command,
                None => return Outcome::Unresolvable,
            },
            _ => v.to_owned(),
        }),
    };
    let applies = |r: &GenRule| {
        if !r.permissions.contains(&p) {
            return false;
        }
        let subject_ok = match (&r.uids, uid) {
            (None, _) => true,
            (Some(uids), Some(uid)) => uids.contains(&uid),
            (Some(_), None) => r.effect == Effect::Deny,
        };
        if !subject_ok {
            return false;
        }
        match (&r.entries, &value) {
            (None, _) => true,
            (Some(_), None) => r.effect == Effect::Deny,
            (Some(entries), Some(v)) => entries.iter().any(|e| match kind(p) {
                Kind::Paths => naive_path_match(e, v),
                Kind::Hosts => naive_host_match(e, v),
                Kind::Names => naive_name_match(e, v),
            }),
        }
    };
    // A write at or above the tree of a deny rule on read or write (a rename, a removal).
    let reaches = |r: &GenRule| {
        p == Permission::Write
            && r.effect == Effect::Deny
            && r.permissions
                .iter()
                .any(|q| matches!(q, Permission::Read | Permission::Write))
            && match (&r.uids, uid) {
                (None, _) | (Some(_), None) => true,
                (Some(uids), Some(uid)) => uids.contains(&uid),
            }
            && match (&r.entries, &value) {
                (Some(entries), Some(v)) => entries
                    .iter()
                    .filter(|e| e.starts_with('/'))
                    .any(|e| naive_write_reaches(e, v)),
                _ => false,
            }
    };
    let applies = |r: &GenRule| applies(r) || reaches(r);
    if let Some(i) = rules
        .iter()
        .position(|r| r.effect == Effect::Deny && applies(r))
    {
        return Outcome::Decided(Effect::Deny, Some(i));
    }
    if let Some(i) = rules
        .iter()
        .position(|r| r.effect == Effect::Allow && applies(r))
    {
        return Outcome::Decided(Effect::Allow, Some(i));
    }
    Outcome::Decided(
        if default_allow {
            Effect::Allow
        } else {
            Effect::Deny
        },
        None,
    )
}

fn request_strategy() -> impl Strategy<Value = (Permission, Option<String>)> {
    prop_oneof![
        2 => (
            Just(Permission::Read),
            prop::option::weighted(0.9, path_strategy(false))
        ),
        2 => (
            Just(Permission::Write),
            prop::option::weighted(0.9, path_strategy(false))
        ),
        2 => (
            Just(Permission::Net),
            prop::option::weighted(
                0.9,
                (
                    prop::sample::select(HOSTS),
                    prop::option::of(prop::sample::select(vec![22u16, 80, 443]))
                )
                    .prop_map(|(h, port)| match port {
                        Some(p) => format!("{h}:{p}"),
                        None => h.to_owned(),
                    })
            )
        ),
        2 => (
            Just(Permission::Env),
            prop::option::weighted(
                0.9,
                prop_oneof![
                    4 => prop::sample::select(NAMES).prop_map(str::to_owned),
                    // An env name is never a path, whatever it looks like.
                    1 => run_value_strategy(),
                ]
            )
        ),
        3 => (
            Just(Permission::Run),
            prop::option::weighted(0.9, run_value_strategy())
        ),
    ]
}

/// The reference normalisation of commands on hand-checked cases.
#[test]
fn reference_command_by_hand() {
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        ("git", None, Some("git")),
        ("..", None, Some("..")),
        ("/usr/bin/git", None, Some("/usr/bin/git")),
        ("/usr/bin/../../tmp/evil", None, Some("/tmp/evil")),
        ("/../../usr//bin/./git/", None, Some("/usr/bin/git")),
        ("./git", None, None),
        ("./git", Some("/usr/bin"), None),
        ("../usr/bin/git", Some("/tmp"), None),
        ("../../..", Some("/usr/lib"), None),
        ("sub/ls", Some("/"), None),
        ("sub//./ls", Some("/home/u"), None),
    ];
    for &(value, cwd, expected) in cases {
        assert_eq!(
            naive_command(value, cwd).as_deref(),
            expected,
            "{value} in {cwd:?}"
        );
    }
}

/// The near-miss builder for commands gives what it is meant to, relative ones with their cwd.
#[test]
fn run_near_miss_by_hand() {
    // (entry, choices, value, cwd)
    let cases: &[(&str, &[u8], &str, Option<&str>)] = &[
        // As it is, absolute.
        ("/usr/bin/*", &[2, 3, 3, 0], "/usr/bin", None),
        // A component added; `.`, `x/..` and `//` before components.
        ("/usr/bin/*", &[0, 0, 1, 2, 0], "/./usr/x/../bin//git", None),
        // Escaping with `..`.
        (
            "/usr/bin/git",
            &[1, 3, 3, 3, 3, 3, 3, 3, 0],
            "/usr/bin/git/../../tmp/evil",
            None,
        ),
        // Relative to an ancestor: `./`, `../<last>/`, or as it is when it has a `/`.
        ("/usr/bin/*", &[0, 3, 3, 3, 3, 0], "./git", Some("/usr/bin")),
        (
            "/usr/bin/*",
            &[0, 3, 3, 3, 3, 1],
            "../bin/git",
            Some("/usr/bin"),
        ),
        ("/usr/bin/*", &[0, 3, 3, 3, 2, 2], "bin/git", Some("/usr")),
        (
            "/usr/bin/git",
            &[2, 3, 3, 3, 1, 2],
            "usr/bin/git",
            Some("/"),
        ),
        // A bare name stays one, or gains a `/`.
        ("l*", &[1], "lx", None),
        ("ls", &[2], "ls/x", None),
    ];
    for &(entry, choices, value, cwd) in cases {
        assert_eq!(
            run_near_miss(entry, choices),
            (value.to_owned(), cwd),
            "{entry} {choices:?}"
        );
    }
}

/// The reference matcher on hand-checked cases, so the comparison is not against a tautology.
#[test]
fn reference_matcher_by_hand() {
    let cases: &[(&str, &str, bool)] = &[
        ("/a*[!-]?", "/a/a", false),
        ("/a*[!-]?", "/abxy", true),
        ("/a*[!-]?", "/ab-y", false),
        ("/a[!_]b", "/a/b", false),
        ("/a[!_]b", "/axb", true),
        ("/a[^_]b", "/a_b", false),
        ("/a[.-0]b", "/a/b", false),
        ("/a[.-0]b", "/a.b", true),
        ("/a[.-0]b", "/a0b", true),
        ("/a[]-]b", "/a]b", true),
        ("/a[]-]b", "/a-b", true),
        ("/a[]-]b", "/axb", false),
        ("/a[!]]b", "/a]b", false),
        ("/a[--0]b", "/a-b", true),
        ("/{a,[!b]}", "/c", true),
        ("/{a,[!b]}", "/b", false),
        ("/a?b", "/a/b", false),
        ("/a*b", "/a/b", false),
        ("/a*b", "/ab", true),
        ("/**", "/", true),
        ("/**", "/a/b", true),
        ("/a/**", "/a", false),
        ("/a/**", "/a/b/c", true),
        ("/**/b", "/b", true),
        ("/**/b", "/a/a/b", true),
        ("/**/**", "/", true),
        ("/*", "/", true),
        ("/*/b", "/b", false),
    ];
    for &(glob, path, expected) in cases {
        let parts: Vec<&str> = glob[1..].split('/').collect();
        assert_eq!(
            reference::matches(&parts, path),
            expected,
            "{glob} on {path}"
        );
    }
}

/// A request path made from a rule's glob, to land on the glob's edges: each class, `?` and `*`
/// becomes `/` or an ordinary character (`**`: nothing, one or two components), and braces
/// are dropped (`,` becomes `/` or nothing). `choices` picks; it repeats when it runs out.
fn near_miss(glob: &str, choices: &[u8]) -> String {
    const ONE: &[&str] = &[
        "/", "_", "-", ".", "0", "x", "]", "!", "a", "b", "~", " ", "\\",
    ];
    const MANY: &[&str] = &["", "/", "x", "a/b", ".pem", "/a"];
    let mut picks = choices.iter().copied().cycle();
    let mut pick = |from: &[&'static str]| -> &'static str {
        from[usize::from(picks.next().unwrap_or(0)) % from.len()]
    };
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::new();
    let mut at = 0;
    while let Some(&c) = chars.get(at) {
        match c {
            '[' => {
                // To the class's `]`: a `]` right after `[`, `[!` or `[^` is literal.
                at += 1;
                if matches!(chars.get(at), Some('!' | '^')) {
                    at += 1;
                }
                at += 1;
                while chars.get(at).is_some_and(|&c| c != ']') {
                    at += 1;
                }
                out.push_str(pick(ONE));
            }
            '?' => out.push_str(pick(ONE)),
            '*' if chars.get(at + 1) == Some(&'*') => {
                at += 1;
                out.push_str(pick(&["", "x", "x/y"]));
            }
            '*' => out.push_str(pick(MANY)),
            '{' | '}' => {}
            ',' => out.push_str(pick(&["", "/"])),
            '\\' => {
                at += 1;
                out.extend(chars.get(at));
            }
            c => out.push(c),
        }
        at += 1;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_agrees_with_naive(
        rules in prop::collection::vec(rule_strategy(), 0..12),
        default_allow in any::<bool>(),
        requests in prop::collection::vec(
            (
                request_strategy(),
                prop::option::of(0u32..3),
                prop::option::weighted(0.7, prop::sample::select(CWDS)),
            ),
            1..16,
        ),
        near_misses in prop::collection::vec(
            (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..8), any::<bool>()),
            0..16,
        ),
        run_near_misses in prop::collection::vec(
            (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..12)),
            0..8,
        ),
    ) {
        let text = toml(&rules, default_allow);
        let (policy, _) = Policy::compile(&[Source::new("gen.toml", text.clone())], &NoDirectory)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let globs: Vec<&String> = rules
            .iter()
            .filter(|r| kind(r.permissions[0]) == Kind::Paths)
            .flat_map(|r| r.entries.iter().flatten())
            .collect();
        let derived = near_misses.into_iter().filter(|_| !globs.is_empty()).map(|(glob, choices, write)| {
            let permission = if write { Permission::Write } else { Permission::Read };
            ((permission, Some(near_miss(glob.get(&globs).as_str(), &choices))), None, None)
        });
        let commands: Vec<&String> = rules
            .iter()
            .filter(|r| r.permissions.contains(&Permission::Run))
            .flat_map(|r| r.entries.iter().flatten())
            .collect();
        let derived_commands = run_near_misses
            .into_iter()
            .filter(|_| !commands.is_empty())
            .map(|(entry, choices)| {
                let (value, cwd) = run_near_miss(entry.get(&commands).as_str(), &choices);
                ((Permission::Run, Some(value)), None, cwd)
            });
        for ((permission, value), uid, cwd) in requests.into_iter().chain(derived).chain(derived_commands) {
            let subject = Subject { uid, cwd, ..Subject::default() };
            let d = policy.decide(permission, value.as_deref(), &subject, &mut lexical_only);
            let got = match d.decided_by {
                DecidedBy::Rule(i) => Outcome::Decided(d.effect, Some(i.0 as usize)),
                DecidedBy::Default => Outcome::Decided(d.effect, None),
                DecidedBy::Unresolvable => {
                    prop_assert_eq!(d.effect, Effect::Deny);
                    Outcome::Unresolvable
                }
            };
            let want = naive(&rules, default_allow, permission, value.as_deref(), uid, cwd);
            // The deciding rule of an allow may be any applicable allow; of a deny, the first.
            let same = match (got, want) {
                (
                    Outcome::Decided(Effect::Allow, Some(_)),
                    Outcome::Decided(Effect::Allow, Some(_)),
                ) => true,
                _ => got == want,
            };
            prop_assert!(
                same,
                "{permission} {value:?} uid {uid:?} cwd {cwd:?}: compiled {got:?}, naive {want:?}\n{text}"
            );
        }
    }
}
