//! Hosts for `net` and `import`: parsing into a canonical form, policy host patterns, and the
//! host index.
//!
//! Deno sends `host:port` with default ports filled in, names lowercased without a trailing dot,
//! IDN as punycode, IPv6 bracketed and compressed, IPv4-mapped IPv6 as IPv4, `unix:/path` for Unix
//! sockets, and (from `node:dns`) a bare host. Requests and policy entries go through the same
//! canonicalisation, so matching is hash lookups: the exact host, each parent domain for
//! `*.domain` entries, and each distinct CIDR prefix length for addresses.

use crate::FastMap as HashMap;
use crate::compile::RuleIndex;
use crate::path::{PathIndex, components};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A canonical host with an optional port, as a request names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Lowercase ASCII name without trailing dot (IDN as punycode), or an IP address in canonical
    /// text form (IPv6 compressed and without brackets, IPv4-mapped IPv6 as IPv4).
    pub host: String,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if matches!(self.ip, Some(IpAddr::V6(_))) {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Parses a request's `host`, `host:port`, `[v6]`, `[v6]:port` or bare IPv6 address.
pub fn parse_host(text: &str) -> Result<HostPort, String> {
    let Pieces { host, prefix, port } = split_port(text)?;
    if prefix.is_some() {
        return Err(format!("`{text}` is a network, not a host"));
    }
    let (host, ip) = canonical_host(host).map_err(|e| format!("{e} in `{text}`"))?;
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).map_err(|e| format!("{e} in `{text}`"))?),
    };
    Ok(HostPort { host, ip, port })
}

/// The pieces of `host[/prefix][:port]` or `[v6][/prefix][:port]`, IPv6 brackets removed.
struct Pieces<'a> {
    host: &'a str,
    prefix: Option<&'a str>,
    port: Option<&'a str>,
}

fn split_port(text: &str) -> Result<Pieces<'_>, String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in `{text}`"))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{host}` is not an IPv6 address in `{text}`"));
        }
        let (prefix, after) = match after.strip_prefix('/') {
            Some(tail) => {
                let end = tail.find(':').unwrap_or(tail.len());
                (Some(&tail[..end]), &tail[end..])
            }
            None => (None, after),
        };
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{after}` after `]` in `{text}`"))?,
            ),
        };
        return Ok(Pieces { host, prefix, port });
    }
    if text.matches(':').count() >= 2 {
        // A bare IPv6 address: it has no room for a port.
        return Ok(Pieces {
            host: text,
            prefix: None,
            port: None,
        });
    }
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let (host, prefix) = match host.split_once('/') {
        Some((host, prefix)) => (host, Some(prefix)),
        None => (host, None),
    };
    Ok(Pieces { host, prefix, port })
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port `{text}` is not a number from 0 to 65535"));
    }
    text.parse::<u16>()
        .map_err(|_| format!("port `{text}` is not a number from 0 to 65535"))
}

/// The canonical text of a host and, if it is one, its IP address.
fn canonical_host(host: &str) -> Result<(String, Option<IpAddr>), String> {
    if host.is_empty() {
        return Err("empty host".to_owned());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let ip = canonical_ip(ip);
        return Ok((ip.to_string(), Some(ip)));
    }
    let name = canonical_name(host)?;
    // What the system resolver takes for an IPv4 address is one, whatever it looks like: a
    // trailing dot (`10.0.0.1.`), fullwidth digits (mapped by IDNA), inet_aton's shorthand
    // (`127.1`, `0x7f.1`, `2130706433`, octal `0177.0.0.1`). Otherwise a CIDR rule would not
    // see the address a script connects to.
    if let Some(v4) = inet_aton(&name) {
        let ip = IpAddr::V4(v4);
        return Ok((ip.to_string(), Some(ip)));
    }
    Ok((name, None))
}

/// The IPv4 address `text` means to `inet_aton(3)`: one to four parts, each decimal, octal
/// (leading `0`) or hexadecimal (`0x`); the last part fills the remaining bytes.
fn inet_aton(text: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        values.push(u64::from_str_radix(digits, radix).ok()?);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|v| *v > 255) || *last >= 1u64 << (8 * (4 - leading.len())) {
        return None;
    }
    let mut address = *last as u32;
    for (i, v) in leading.iter().enumerate() {
        address |= (*v as u32) << (24 - 8 * i);
    }
    Some(std::net::Ipv4Addr::from(address))
}

/// The longest host name DNS carries, in bytes (RFC 1035, without the trailing dot).
const MAX_HOST_NAME: usize = 253;
/// The longest label.
const MAX_LABEL: usize = 63;

/// Lowercase ASCII without trailing dot; Unicode names become punycode (UTS 46), as Deno sends them.
fn canonical_name(host: &str) -> Result<String, String> {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    // DNS's limits: a longer name resolves nowhere, and matching it (each parent domain is a
    // lookup) would only spend the broker's time.
    if trimmed.len() > MAX_HOST_NAME {
        return Err(format!(
            "host name of {} bytes is longer than DNS allows ({MAX_HOST_NAME})",
            trimmed.len()
        ));
    }
    let name = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(trimmed)
            .map_err(|_| format!("host `{host}` is not a valid internationalised domain name"))?
    };
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(format!("host `{host}` has an empty label"));
    }
    if name.len() > MAX_HOST_NAME || name.split('.').any(|label| label.len() > MAX_LABEL) {
        return Err(format!(
            "host `{host}` is longer than DNS allows ({MAX_HOST_NAME} bytes, {MAX_LABEL} per label)"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("host `{host}` contains `{}`", bad.escape_debug()));
    }
    Ok(name)
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is the IPv4 address; Deno sends it that way too.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// What a `net`/`import` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetTarget<'a> {
    Host(HostPort),
    /// `unix:/path` (the path as sent; resolved against the cwd when relative).
    Unix(&'a str),
}

pub(crate) fn parse_net_value(value: &str) -> Result<NetTarget<'_>, String> {
    if let Some(path) = value.strip_prefix("unix:") {
        return Ok(NetTarget::Unix(path));
    }
    parse_host(value).map(NetTarget::Host)
}

/// Which ports an entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// No port given: every port, and requests without a port.
    Any,
    /// `:443` or `:8000-8100`, inclusive.
    Range(u16, u16),
}

impl Ports {
    fn parse(text: Option<&str>) -> Result<Ports, String> {
        let Some(text) = text else {
            return Ok(Ports::Any);
        };
        match text.split_once('-') {
            None => parse_port(text).map(|p| Ports::Range(p, p)),
            Some((lo, hi)) => {
                let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
                if lo > hi {
                    return Err(format!("port range `{text}` is empty (it runs backwards)"));
                }
                Ok(Ports::Range(lo, hi))
            }
        }
    }

    pub(crate) fn covers(self, port: Option<u16>) -> bool {
        match (self, port) {
            (Ports::Any, _) => true,
            (Ports::Range(lo, hi), Some(p)) => lo <= p && p <= hi,
            (Ports::Range(..), None) => false,
        }
    }
}

/// A `hosts` entry of a policy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// A name or address, exactly.
    Exact { host: String, ports: Ports },
    /// `*.example.com`: subdomains of `example.com` at any depth, not `example.com` itself.
    Subdomains { domain: String, ports: Ports },
    /// `10.0.0.0/8`, `[fd00::]/8`: every address in the network.
    Cidr {
        network: IpAddr,
        prefix: u8,
        ports: Ports,
    },
    /// `unix:/run/app.sock`: a Unix socket path and, like every path, its subtree.
    Unix { path: String },
}

/// Parses a policy `hosts` entry.
pub fn parse_host_pattern(text: &str) -> Result<HostPattern, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        return match components(path) {
            Some(parts) => Ok(HostPattern::Unix {
                path: crate::path::join(&parts),
            }),
            None => Err(format!(
                "`{text}`: a Unix socket path in a policy must be absolute"
            )),
        };
    }
    if text == "*" || text.starts_with("*:") {
        return Err(
            "`*` alone is not a host: leave out `hosts` to make the rule cover every host"
                .to_owned(),
        );
    }
    let Pieces { host, prefix, port } = split_port(text)?;
    let ports = Ports::parse(port).map_err(|e| format!("{e} in `{text}`"))?;
    if let Some(domain) = host.strip_prefix("*.") {
        let domain = canonical_name(domain).map_err(|e| format!("{e} in `{text}`"))?;
        return Ok(HostPattern::Subdomains { domain, ports });
    }
    if host.contains('*') {
        return Err(format!(
            "`{text}`: `*` may only stand as the first label (`*.example.com`)"
        ));
    }
    if let Some(prefix) = prefix {
        let address = host;
        let network = address
            .parse::<IpAddr>()
            .map_err(|_| format!("`{address}` is not an IP address in `{text}`"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("prefix length `/{prefix}` is not 0 to {max} in `{text}`")
            })?;
        // An IPv4-mapped IPv6 network is the IPv4 network: requests arrive as IPv4.
        let (network, prefix) = match network {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
                (canonical_ip(network), prefix - 96)
            }
            other => (other, prefix),
        };
        let masked = mask(network, prefix);
        if masked != network {
            return Err(format!(
                "`{text}` has host bits set; the network is `{masked}/{prefix}`"
            ));
        }
        return Ok(HostPattern::Cidr {
            network,
            prefix,
            ports,
        });
    }
    let (host, _) = canonical_host(host).map_err(|e| format!("{e} in `{text}`"))?;
    Ok(HostPattern::Exact { host, ports })
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(mask_v4(u32::from(v4), prefix).into()),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(v6), prefix))),
    }
}

/// The first `prefix` bits of `bits` (a /0 network masks everything away).
fn mask_v4(bits: u32, prefix: u8) -> u32 {
    bits & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(bits: u128, prefix: u8) -> u128 {
    bits & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

type Entries = Vec<(Ports, RuleIndex)>;

/// Host entries indexed so that a lookup costs a few hash probes, whatever the number of rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostIndex {
    exact: HashMap<Box<str>, Entries>,
    subdomains: HashMap<Box<str>, Entries>,
    /// Per distinct prefix length, networks by masked address.
    v4: Vec<(u8, HashMap<u32, Entries>)>,
    v6: Vec<(u8, HashMap<u128, Entries>)>,
    unix: PathIndex,
}

impl HostIndex {
    pub(crate) fn insert(&mut self, pattern: &HostPattern, rule: RuleIndex) {
        match pattern {
            HostPattern::Exact { host, ports } => self
                .exact
                .entry(host.as_str().into())
                .or_default()
                .push((*ports, rule)),
            HostPattern::Subdomains { domain, ports } => self
                .subdomains
                .entry(domain.as_str().into())
                .or_default()
                .push((*ports, rule)),
            HostPattern::Cidr {
                network,
                prefix,
                ports,
            } => match network {
                IpAddr::V4(v4) => table(&mut self.v4, *prefix)
                    .entry(u32::from(*v4))
                    .or_default()
                    .push((*ports, rule)),
                IpAddr::V6(v6) => table(&mut self.v6, *prefix)
                    .entry(u128::from(*v6))
                    .or_default()
                    .push((*ports, rule)),
            },
            HostPattern::Unix { path } => {
                self.unix
                    .insert(&components(path).unwrap_or_default(), rule, None)
            }
        }
    }

    pub(crate) fn finish(&mut self) -> Result<(), String> {
        self.unix.finish()
    }

    pub(crate) fn for_each_match(&self, target: &HostPort, f: &mut dyn FnMut(RuleIndex)) {
        let mut emit = |entries: Option<&Entries>| {
            for &(ports, rule) in entries.into_iter().flatten() {
                if ports.covers(target.port) {
                    f(rule);
                }
            }
        };
        emit(self.exact.get(target.host.as_str()));
        match target.ip {
            None => {
                let mut rest = target.host.as_str();
                while let Some((_, parent)) = rest.split_once('.') {
                    emit(self.subdomains.get(parent));
                    rest = parent;
                }
            }
            Some(IpAddr::V4(v4)) => {
                for (prefix, networks) in &self.v4 {
                    emit(networks.get(&mask_v4(u32::from(v4), *prefix)));
                }
            }
            Some(IpAddr::V6(v6)) => {
                for (prefix, networks) in &self.v6 {
                    emit(networks.get(&mask_v6(u128::from(v6), *prefix)));
                }
            }
        }
    }

    /// Deny rules must also see the addresses a request really reaches ([`reached_addresses`]).
    pub(crate) fn for_each_alias_match(&self, target: &HostPort, f: &mut dyn FnMut(RuleIndex)) {
        let Some(ip) = target.ip else { return };
        for alias in reached_addresses(ip) {
            let alias = HostPort {
                host: alias.to_string(),
                ip: Some(alias),
                port: target.port,
            };
            self.for_each_match(&alias, f);
        }
    }

    pub(crate) fn for_each_unix_match(&self, parts: &[&str], f: &mut dyn FnMut(RuleIndex)) {
        self.unix.for_each_match(parts, f);
    }
}

fn table<K>(tables: &mut Vec<(u8, HashMap<K, Entries>)>, prefix: u8) -> &mut HashMap<K, Entries> {
    let at = match tables.binary_search_by_key(&prefix, |(p, _)| *p) {
        Ok(at) => at,
        Err(at) => {
            tables.insert(at, (prefix, HashMap::default()));
            at
        }
    };
    &mut tables[at].1
}

/// Other addresses a connection to `ip` reaches, for deny rules: a rule denying the metadata
/// address or loopback must not be walked around by writing the same destination another way.
///
/// - `0.0.0.0/8` and `::` (the unspecified address) connect to the local host: loopback, both
///   families.
/// - IPv4-compatible `::a.b.c.d` (deprecated; `[::a9fe:a9fe]`), NAT64 `64:ff9b::a.b.c.d` and
///   `64:ff9b:1::/48`, and 6to4 `2002:aabb:ccdd::/48` embed an IPv4 address that a translator or
///   relay delivers to. (IPv4-mapped `::ffff:a.b.c.d` is already that IPv4 address: canonical form.)
pub(crate) fn reached_addresses(ip: IpAddr) -> Vec<IpAddr> {
    use std::net::Ipv4Addr;
    let loopback = || {
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    };
    match ip {
        IpAddr::V4(v4) if v4.octets()[0] == 0 => loopback(),
        IpAddr::V4(_) => Vec::new(),
        IpAddr::V6(v6) if v6.is_unspecified() => loopback(),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
            let segments = v6.segments();
            let embedded = if bits >> 32 == 0 && bits > 1 {
                // ::a.b.c.d (not :: or ::1)
                Some(low32)
            } else if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000
                || segments[..3] == [0x64, 0xff9b, 1]
            {
                Some(low32)
            } else if segments[0] == 0x2002 {
                Some(Ipv4Addr::new(
                    (segments[1] >> 8) as u8,
                    segments[1] as u8,
                    (segments[2] >> 8) as u8,
                    segments[2] as u8,
                ))
            } else {
                None
            };
            match embedded {
                Some(v4) if v4.octets()[0] == 0 => {
                    let mut all = vec![IpAddr::V4(v4)];
                    all.extend(loopback());
                    all
                }
                Some(v4) => vec![IpAddr::V4(v4)],
                None => Vec::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn what_the_resolver_takes_for_an_ipv4_address_is_one() {
        for text in [
            "1.0.255.255.:5353",
            "127.1:80",
            "0x7f.1:80",
            "0x7F.0.0.1:80",
            "2130706433:80",
            "0177.0.0.1:80",
            "127.0.1:80",
            "\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}:80",
        ] {
            let parsed = parse_host(text).unwrap();
            let expected = if text.starts_with("1.0") {
                "1.0.255.255"
            } else {
                "127.0.0.1"
            };
            assert_eq!(parsed.host, expected, "{text}");
            assert!(parsed.ip.is_some(), "{text}");
            // Canonical: printing and parsing again gives the same.
            assert_eq!(parse_host(&parsed.to_string()).unwrap(), parsed, "{text}");
        }
        for name in [
            "1.2.3.256",
            "0x",
            "08.1",
            "1.2.3.4.5",
            "example.com",
            "a1.2",
        ] {
            assert_eq!(parse_host(name).unwrap().ip, None, "{name}");
        }
    }

    use super::*;

    fn hp(host: &str, port: Option<u16>) -> HostPort {
        HostPort {
            host: host.to_owned(),
            ip: host.parse().ok(),
            port,
        }
    }

    #[test]
    fn deno_value_forms() {
        let cases: &[(&str, HostPort)] = &[
            ("localhost:80", hp("localhost", Some(80))),
            ("example.com:443", hp("example.com", Some(443))),
            ("Example.COM.:443", hp("example.com", Some(443))),
            (
                "xn--bcher-kva.invalid:59999",
                hp("xn--bcher-kva.invalid", Some(59999)),
            ),
            (
                "bücher.invalid:59999",
                hp("xn--bcher-kva.invalid", Some(59999)),
            ),
            ("[::1]:59999", hp("::1", Some(59999))),
            ("[0:0:0:0:0:0:0:1]:9", hp("::1", Some(9))),
            ("[::ffff:10.0.0.1]:5432", hp("10.0.0.1", Some(5432))),
            ("0.0.0.0:0", hp("0.0.0.0", Some(0))),
            ("10.255.255.53:53", hp("10.255.255.53", Some(53))),
            ("example.com", hp("example.com", None)),
            ("::1", hp("::1", None)),
            ("[fd00::1]", hp("fd00::1", None)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_host(input).as_ref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn malformed_hosts() {
        for bad in [
            "",
            ":80",
            "host:",
            "host:port",
            "host:65536",
            "host:-1",
            "[::1",
            "[nope]:1",
            "[::1]x",
            "a..b",
            "a b",
            "host:+80",
            "a/b",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_is_deno_form() {
        assert_eq!(parse_host("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert_eq!(
            parse_host("Example.com.").unwrap().to_string(),
            "example.com"
        );
    }

    #[test]
    fn patterns() {
        use HostPattern::*;
        let cases: &[(&str, HostPattern)] = &[
            (
                "api.example.com:443",
                Exact {
                    host: "api.example.com".into(),
                    ports: Ports::Range(443, 443),
                },
            ),
            (
                "API.example.com.",
                Exact {
                    host: "api.example.com".into(),
                    ports: Ports::Any,
                },
            ),
            (
                "[::1]:8000-8100",
                Exact {
                    host: "::1".into(),
                    ports: Ports::Range(8000, 8100),
                },
            ),
            (
                "*.internal.example.com",
                Subdomains {
                    domain: "internal.example.com".into(),
                    ports: Ports::Any,
                },
            ),
            (
                "*.Bücher.de:443",
                Subdomains {
                    domain: "xn--bcher-kva.de".into(),
                    ports: Ports::Range(443, 443),
                },
            ),
            (
                "10.0.0.0/8:5432",
                Cidr {
                    network: "10.0.0.0".parse().unwrap(),
                    prefix: 8,
                    ports: Ports::Range(5432, 5432),
                },
            ),
            (
                "[fd00::]/8",
                Cidr {
                    network: "fd00::".parse().unwrap(),
                    prefix: 8,
                    ports: Ports::Any,
                },
            ),
            (
                "[fd00::]/8:1-2",
                Cidr {
                    network: "fd00::".parse().unwrap(),
                    prefix: 8,
                    ports: Ports::Range(1, 2),
                },
            ),
            (
                "[::ffff:10.0.0.0]/104",
                Cidr {
                    network: "10.0.0.0".parse().unwrap(),
                    prefix: 8,
                    ports: Ports::Any,
                },
            ),
            (
                "0.0.0.0/0",
                Cidr {
                    network: "0.0.0.0".parse().unwrap(),
                    prefix: 0,
                    ports: Ports::Any,
                },
            ),
            (
                "unix:/run/app/../app.sock",
                Unix {
                    path: "/run/app.sock".into(),
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_host_pattern(input).as_ref(), Ok(expected), "{input}");
        }
        for bad in [
            "*",
            "*:443",
            "a.*.com",
            "*example.com",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "[fd00::]/129",
            "x:9000-8000",
            "x:1-",
            "unix:relative.sock",
            "bad host",
            "10.0.0.0/x",
        ] {
            assert!(parse_host_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn index_lookups() {
        let mut index = HostIndex::default();
        let entries = [
            "api.example.com:443",
            "db.example.com",
            "*.internal.example.com",
            "10.0.0.0/8:5432",
            "10.1.0.0/16",
            "[fd00::]/8",
            "[::1]:8000-8100",
            "unix:/run/app",
        ];
        for (i, e) in entries.iter().enumerate() {
            index.insert(&parse_host_pattern(e).unwrap(), RuleIndex(i as u32));
        }
        index.finish().unwrap();
        let m = |v: &str| {
            let mut out = Vec::new();
            index.for_each_match(&parse_host(v).unwrap(), &mut |r| out.push(r.0));
            out.sort();
            out
        };
        assert_eq!(m("api.example.com:443"), [0]);
        assert!(m("api.example.com:80").is_empty());
        assert!(
            m("api.example.com").is_empty(),
            "a portless request is not port 443"
        );
        assert_eq!(m("db.example.com:5432"), [1]);
        assert_eq!(m("db.example.com"), [1]);
        assert_eq!(m("a.internal.example.com:1"), [2]);
        assert_eq!(m("a.b.internal.example.com"), [2]);
        assert!(m("internal.example.com:1").is_empty(), "subdomains only");
        assert!(m("xinternal.example.com:1").is_empty());
        assert_eq!(m("10.2.3.4:5432"), [3]);
        assert!(m("10.2.3.4:5433").is_empty());
        assert_eq!(m("10.1.3.4:5432"), [3, 4]);
        assert_eq!(
            m("[::ffff:10.1.0.1]:80"),
            [4],
            "IPv4-mapped arrives as IPv4"
        );
        assert!(m("11.0.0.1:5432").is_empty());
        assert_eq!(m("[fd12::1]:1"), [5]);
        assert_eq!(m("[::1]:8050"), [6]);
        assert!(m("[::1]:8101").is_empty());
        let mut unix = Vec::new();
        index.for_each_unix_match(&components("/run/app/x.sock").unwrap(), &mut |r| {
            unix.push(r.0)
        });
        assert_eq!(unix, [7]);
    }
}
