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

const COMPONENTS: &[&str] = &["a", "b", "srv", "app", "x.pem"];
const GLOB_COMPONENTS: &[&str] = &["*", "**", "{a,b}", "?", "*.pem"];
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

fn path_strategy(globs: bool) -> impl Strategy<Value = String> {
    let component = if globs {
        prop::sample::select([COMPONENTS, GLOB_COMPONENTS].concat()).boxed()
    } else {
        prop::sample::select(COMPONENTS.to_vec()).boxed()
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
            let permissions = match kind {
                Kind::Paths => vec![Permission::Read, Permission::Write],
                Kind::Hosts => vec![Permission::Net],
                Kind::Names => vec![Permission::Env],
            };
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
                        prop::sample::select(NAME_ENTRIES).prop_map(str::to_owned),
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
        }
        if let Some(uids) = &r.uids {
            out += &format!("when = {{ uids = {uids:?} }}\n");
        }
    }
    out
}

// ---- The naive reference: no index, no cleverness. ----

fn naive_path_match(entry: &str, request: &str) -> bool {
    let entry = normalize_absolute(entry).unwrap();
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
        let glob = globset::GlobBuilder::new(&entry)
            .literal_separator(true)
            .build()
            .unwrap()
            .compile_matcher();
        ancestors.iter().any(|a| glob.is_match(a))
    } else {
        ancestors.contains(&entry)
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

/// (verdict, deciding rule index or None for default)
fn naive(
    rules: &[GenRule],
    default_allow: bool,
    p: Permission,
    value: Option<&str>,
    uid: Option<u32>,
) -> (Effect, Option<usize>) {
    let value = value.map(|v| match kind(p) {
        Kind::Paths => normalize_absolute(v).unwrap(),
        _ => v.to_owned(),
    });
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
    if let Some(i) = rules
        .iter()
        .position(|r| r.effect == Effect::Deny && applies(r))
    {
        return (Effect::Deny, Some(i));
    }
    if let Some(i) = rules
        .iter()
        .position(|r| r.effect == Effect::Allow && applies(r))
    {
        return (Effect::Allow, Some(i));
    }
    (
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
        (
            Just(Permission::Read),
            prop::option::weighted(0.9, path_strategy(false))
        ),
        (
            Just(Permission::Write),
            prop::option::weighted(0.9, path_strategy(false))
        ),
        (
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
        (
            Just(Permission::Env),
            prop::option::weighted(0.9, prop::sample::select(NAMES).prop_map(str::to_owned))
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_agrees_with_naive(
        rules in prop::collection::vec(rule_strategy(), 0..12),
        default_allow in any::<bool>(),
        requests in prop::collection::vec((request_strategy(), prop::option::of(0u32..3)), 1..16),
    ) {
        let text = toml(&rules, default_allow);
        let (policy, _) = Policy::compile(&[Source::new("gen.toml", text.clone())], &NoDirectory)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        for ((permission, value), uid) in requests {
            let subject = Subject { uid, ..Subject::default() };
            let d = policy.decide(permission, value.as_deref(), &subject, &mut lexical_only);
            let got = (d.effect, match d.decided_by {
                DecidedBy::Rule(i) => Some(i.0 as usize),
                DecidedBy::Default => None,
                DecidedBy::Unresolvable => panic!("generated values are all resolvable"),
            });
            let want = naive(&rules, default_allow, permission, value.as_deref(), uid);
            // The deciding rule of an allow may be any applicable allow; of a deny, the first.
            let same = match (got, want) {
                ((Effect::Allow, Some(_)), (Effect::Allow, Some(_))) => true,
                _ => got == want,
            };
            prop_assert!(same, "{permission} {value:?} uid {uid:?}: compiled {got:?}, naive {want:?}\n{text}");
        }
    }
}
