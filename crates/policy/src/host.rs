//! Hosts for `net` and `import`: parsing into a canonical form, and the host index.
//!
//! Deno sends `host:port` with default ports filled in, names lowercased without a trailing dot,
//! IDN as punycode, IPv6 bracketed and compressed, IPv4-mapped IPv6 as IPv4, `unix:/path` for Unix
//! sockets, and (from `node:dns`) a bare host. Policy entries are parsed by the same function, so
//! both sides meet in one canonical form and matching is a hash lookup.

use crate::compile::RuleIndex;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A canonical host with an optional port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Lowercase name without trailing dot, or an IP address in canonical text form (IPv6
    /// compressed and without brackets, IPv4-mapped IPv6 as IPv4).
    pub host: String,
    pub port: Option<u16>,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
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

/// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
pub fn parse_host(text: &str) -> Result<HostPort, String> {
    let (host, port) = split_port(text)?;
    let host = canonical_host(host).map_err(|e| format!("{e} in `{text}`"))?;
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).map_err(|e| format!("{e} in `{text}`"))?),
    };
    Ok(HostPort { host, port })
}

fn split_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in `{text}`"))?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{inside}` is not an IPv6 address in `{text}`"));
        }
        return match after {
            "" => Ok((inside, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((inside, Some(port))),
                None => Err(format!("unexpected `{after}` after `]` in `{text}`")),
            },
        };
    }
    if text.matches(':').count() >= 2 {
        // A bare IPv6 address: it has no room for a port.
        return Ok((text, None));
    }
    Ok(match text.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    })
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port `{text}` is not a number from 0 to 65535"));
    }
    text.parse::<u16>()
        .map_err(|_| format!("port `{text}` is not a number from 0 to 65535"))
}

fn canonical_host(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("empty host".to_owned());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(canonical_ip(ip).to_string());
    }
    if !host.is_ascii() {
        return Err(format!(
            "host `{host}` is not ASCII: write internationalised names in punycode (`xn--…`), as Deno sends them"
        ));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(format!("host `{host}` has an empty label"));
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
    /// `unix:/path`: only unscoped rules match it for now.
    Unix(&'a str),
}

pub(crate) fn parse_net_value(value: &str) -> Result<NetTarget<'_>, String> {
    if let Some(path) = value.strip_prefix("unix:") {
        return Ok(NetTarget::Unix(path));
    }
    parse_host(value).map(NetTarget::Host)
}

/// Host entries by canonical host; each with the port it is limited to, if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostIndex {
    by_host: HashMap<Box<str>, Vec<(Option<u16>, RuleIndex)>>,
}

impl HostIndex {
    pub(crate) fn insert(&mut self, entry: &HostPort, rule: RuleIndex) {
        self.by_host
            .entry(entry.host.as_str().into())
            .or_default()
            .push((entry.port, rule));
    }

    /// An entry without a port matches every port and a request without a port; an entry with a
    /// port matches only that port.
    pub(crate) fn for_each_match(&self, target: &HostPort, f: &mut dyn FnMut(RuleIndex)) {
        if let Some(entries) = self.by_host.get(target.host.as_str()) {
            for &(port, rule) in entries {
                if port.is_none() || port == target.port {
                    f(rule);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: Option<u16>) -> HostPort {
        HostPort {
            host: host.to_owned(),
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
            "bücher.de",
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
    fn ports_in_the_index() {
        let mut index = HostIndex::default();
        index.insert(&parse_host("api.example.com:443").unwrap(), RuleIndex(0));
        index.insert(&parse_host("db.example.com").unwrap(), RuleIndex(1));
        let m = |v: &str| {
            let mut out = Vec::new();
            index.for_each_match(&parse_host(v).unwrap(), &mut |r| out.push(r.0));
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
        assert!(m("example.com:443").is_empty());
    }
}
