//! Warnings about policies that load but do not mean what their author likely meant.
//!
//! Lints use the compiled indexes, so they cost about one decision per rule entry and stay fast on
//! large policies. They are conservative: a warning is only given when it is certain.

use crate::compile::{Entry, Policy, Rule, RuleIndex, RuleSite};
use crate::host::{HostPattern, HostPort, Ports};
use crate::path::{components, is_glob};
use permission_broker_protocol::{Effect, Permission};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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
    // Added in Deno 2.6.0 (setuid, seteuid, setegid) and 2.8.0 (ca).
    "setuid",
    "seteuid",
    "setegid",
    "ca",
];

/// Programs that run any command they are given: allowing one allows everything, including a
/// `deno` with `clearEnv`, which runs with no broker at all.
const RUNS_ANYTHING: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox", "env", "xargs",
    "sudo", "su", "nohup", "timeout", "deno", "node", "python", "python3", "perl", "ruby",
];

/// Where such programs live on a usual host: a `names` prefix that covers one of these covers it.
const RUNS_ANYTHING_DIRS: &[&str] = &[
    "/bin/",
    "/usr/bin/",
    "/usr/local/bin/",
    "/sbin/",
    "/usr/sbin/",
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
        if let Some((span, message)) = address_only_deny(rule, pending) {
            out.push((pending.source, span, message));
        }
        if rule.effect != Effect::Allow {
            continue;
        }
        footguns(rule, pending, &mut |span, message| {
            out.push((pending.source, span, message))
        });
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

/// The allow rules whose cost is easy to miss: each grants far more than it seems to.
fn footguns(rule: &Rule, site: &RuleSite, warn: &mut dyn FnMut(Range<usize>, String)) {
    let id = &rule.id;
    let all = rule.permissions.len() == Permission::ALL.len();
    if all && !rule.scoped && rule.when.is_none() {
        warn(
            site.span.clone(),
            format!(
                "rule `{id}` allows every permission to every process: the broker decides nothing"
            ),
        );
        return;
    }
    let runs = rule.permissions.contains(&Permission::Run);
    if runs && !rule.scoped {
        warn(
            site.span.clone(),
            format!(
                "rule `{id}` allows `run` unscoped, so also the whole permission (Deno's first question, `run` null): a script can run anything, including a `deno` with `clearEnv`, which runs with no broker"
            ),
        );
    }
    for (span, entry) in &site.entries {
        match entry {
            Entry::Name(name) if runs => {
                if let Some(what) = runs_anything(name) {
                    warn(
                        span.clone(),
                        format!(
                            "rule `{id}` allows running {what}, which runs any command it is given (a `deno` with `clearEnv` included: no broker)"
                        ),
                    );
                }
            }
            Entry::Path { path, .. }
                if path == "/" && rule.permissions.contains(&Permission::Write) =>
            {
                warn(
                    span.clone(),
                    format!(
                        "rule `{id}` allows writing anywhere (`/`): every file the process may write, in every other service's data too"
                    ),
                );
            }
            _ => {}
        }
    }
}

/// What in `name` (a `run` names entry) runs anything: a shell or `deno` by name or path, `*`,
/// or a prefix that covers the directories they live in.
fn runs_anything(name: &str) -> Option<String> {
    if name == "*" {
        return Some("every command (`*`)".to_owned());
    }
    if let Some(prefix) = name.strip_suffix('*') {
        let covered: Vec<String> = RUNS_ANYTHING_DIRS
            .iter()
            .filter(|dir| {
                dir.starts_with(prefix)
                    || prefix.starts_with(**dir) && !prefix[dir.len()..].contains('/')
            })
            .flat_map(|dir| {
                RUNS_ANYTHING
                    .iter()
                    .map(move |p| format!("{dir}{p}"))
                    .filter(|full| full.starts_with(prefix))
            })
            .take(3)
            .collect();
        return (!covered.is_empty())
            .then(|| format!("`{}` and the like through `{name}`", covered.join("`, `")));
    }
    let base = name.rsplit('/').next().unwrap_or(name);
    RUNS_ANYTHING.contains(&base).then(|| format!("`{name}`"))
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

/// The local host: loopback, and `0.0.0.0/8` and `::`, which connect to it. `localhost` (and,
/// with systemd's resolver, `*.localhost`) reaches it.
const LOOPBACK: &[(IpAddr, u8)] = &[
    (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
    (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8),
    (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
];

/// Cloud metadata services (link-local IPv4; EC2's IPv6 endpoint), which the names below reach.
const METADATA: &[(IpAddr, u8)] = &[
    (IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 32),
    (
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
        128,
    ),
];

/// A deny rule on `net`/`import` whose `hosts` are all IP addresses or networks (`unix:` entries
/// aside): the broker never resolves host names, so a name that reaches the same address
/// (`169.254.169.254.nip.io`, `localhost`) is not denied by it. A rule that lists a host name as
/// well is left alone: its author thought of names. Located at the first address.
fn address_only_deny(rule: &Rule, site: &RuleSite) -> Option<(Range<usize>, String)> {
    if rule.effect != Effect::Deny
        || !rule
            .permissions
            .iter()
            .any(|p| matches!(p, Permission::Net | Permission::Import))
    {
        return None;
    }
    let mut addresses: Vec<(&Range<usize>, IpAddr, u8)> = Vec::new();
    for (span, entry) in &site.entries {
        match entry {
            Entry::Host(HostPattern::Exact { host, .. }) => match host.parse::<IpAddr>() {
                Ok(ip) => addresses.push((span, ip, if ip.is_ipv4() { 32 } else { 128 })),
                Err(_) => return None,
            },
            Entry::Host(HostPattern::Cidr {
                network, prefix, ..
            }) => addresses.push((span, *network, *prefix)),
            Entry::Host(HostPattern::Subdomains { .. }) => return None,
            _ => {}
        }
    }
    let &(span, first, prefix) = addresses.first()?;
    let reaches = |networks: &[(IpAddr, u8)]| {
        addresses.iter().any(|&(_, ip, len)| {
            networks
                .iter()
                .any(|&(net, net_len)| overlaps(ip, len, net, net_len))
        })
    };
    let mut names = Vec::new();
    if reaches(LOOPBACK) {
        names.extend(["`localhost`", "`*.localhost`"]);
    }
    if reaches(METADATA) {
        names.extend(["`metadata.google.internal`", "`metadata`"]);
    }
    let deny = if names.is_empty() {
        "deny the names that point at these addresses too".to_owned()
    } else {
        format!("deny names too ({})", names.join(", "))
    };
    Some((
        span.clone(),
        format!(
            "deny rule `{}` lists only IP addresses in `hosts`, and the broker never resolves host names: a name that reaches the same address, such as `{}`, is not denied; {deny}, and since any name can be pointed at an address, the robust choice is a default deny that allows only the hosts scripts need",
            rule.id,
            wildcard_dns_name(first, prefix)
        ),
    ))
}

/// Whether two networks share an address (one contains the other); never across families.
fn overlaps(a: IpAddr, a_len: u8, b: IpAddr, b_len: u8) -> bool {
    let (a, b, len) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            u128::from(u32::from(a)) << 96,
            u128::from(u32::from(b)) << 96,
            a_len.min(b_len),
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), a_len.min(b_len)),
        _ => return false,
    };
    // The top `len` bits agree (`len` 0: shifting by 128 is `None`, and every address agrees).
    (a ^ b).checked_shr(128 - u32::from(len)).unwrap_or(0) == 0
}

/// A public wildcard-DNS name that resolves to the network's first host: `10.0.0.1.nip.io`,
/// `--1.sslip.io` (IPv6, `:` written `-`).
fn wildcard_dns_name(network: IpAddr, prefix: u8) -> String {
    match network {
        IpAddr::V4(v4) => {
            let host = if prefix < 32 {
                Ipv4Addr::from(u32::from(v4).wrapping_add(1))
            } else {
                v4
            };
            format!("{host}.nip.io")
        }
        IpAddr::V6(v6) => {
            let host = if prefix < 128 {
                Ipv6Addr::from(u128::from(v6).wrapping_add(1))
            } else {
                v6
            };
            format!("{}.sslip.io", host.to_string().replace(':', "-"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn overlapping_networks() {
        let cases = [
            ("127.0.0.1", 32, "127.0.0.0", 8, true),
            ("127.0.0.0", 8, "127.0.0.1", 32, true),
            ("128.0.0.0", 8, "127.0.0.0", 8, false),
            ("0.0.0.0", 0, "169.254.169.254", 32, true),
            ("169.254.0.0", 16, "169.254.169.254", 32, true),
            ("169.254.169.255", 32, "169.254.169.254", 32, false),
            ("::", 0, "::1", 128, true),
            ("::1", 128, "::1", 128, true),
            ("::2", 127, "::1", 128, false),
            ("fd00::", 8, "fd00:ec2::254", 128, true),
            ("0.0.0.0", 0, "::1", 128, false),
        ];
        for (a, a_len, b, b_len, expected) in cases {
            assert_eq!(
                overlaps(ip(a), a_len, ip(b), b_len),
                expected,
                "{a}/{a_len} {b}/{b_len}"
            );
        }
    }

    #[test]
    fn wildcard_dns_names() {
        assert_eq!(
            wildcard_dns_name(ip("169.254.169.254"), 32),
            "169.254.169.254.nip.io"
        );
        assert_eq!(wildcard_dns_name(ip("127.0.0.0"), 8), "127.0.0.1.nip.io");
        assert_eq!(wildcard_dns_name(ip("::1"), 128), "--1.sslip.io");
        assert_eq!(wildcard_dns_name(ip("fd00::"), 8), "fd00--1.sslip.io");
    }
}
