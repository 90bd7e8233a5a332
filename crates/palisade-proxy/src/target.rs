//! Request targets: parsing `host[:port]` from absolute-form URIs and CONNECT
//! authorities, and classifying destination addresses (the SSRF deny ranges).
//!
//! Host strings are never classified as addresses by their text: anything that
//! is not a plain IP literal is a *name* and goes to the resolver, whose answers
//! are then checked with [`AddressGuard::check`]. That is what makes decimal,
//! hex, octal and short IPv4 notations end up classified by their value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// A parsed destination host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP literal (`10.0.0.1` or `[::1]`).
    Ip(IpAddr),
    /// A name, lower-case, without trailing dot. May still be an odd IP
    /// notation (`2130706433`); the resolver decides what it means.
    Name(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// A destination: host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host.
    pub host: Host,
    /// The port.
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a target string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No host.
    #[error("empty host")]
    EmptyHost,
    /// The port is missing where required, zero, or not a number.
    #[error("invalid port")]
    BadPort,
    /// The host has characters no DNS name or IP literal has.
    #[error("invalid host")]
    BadHost,
}

/// Parse `host[:port]` (`[v6]:port` for IPv6). `default_port` is used when the
/// port is absent; `None` makes the port mandatory (CONNECT).
pub fn parse_authority(authority: &str, default_port: Option<u16>) -> Result<Target, TargetError> {
    if authority.contains('@') {
        return Err(TargetError::BadHost);
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or(TargetError::BadHost)?;
        let inner = &rest[..end];
        let ip: Ipv6Addr = inner.parse().map_err(|_| TargetError::BadHost)?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None if after.is_empty() => None,
            None => return Err(TargetError::BadHost),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (h, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (authority, None),
        };
        (parse_host(h)?, port)
    };
    let port = port.or(default_port).ok_or(TargetError::BadPort)?;
    Ok(Target { host, port })
}

fn parse_port(p: &str) -> Result<u16, TargetError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::BadPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(TargetError::BadPort),
        Ok(n) => Ok(n),
    }
}

fn parse_host(h: &str) -> Result<Host, TargetError> {
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.is_empty() {
        return Err(TargetError::EmptyHost);
    }
    if let Ok(ip) = h.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    if h.len() > 253
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        || h.split('.').any(|l| l.is_empty() || l.len() > 63)
    {
        return Err(TargetError::BadHost);
    }
    Ok(Host::Name(h.to_ascii_lowercase()))
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// A built-in special-purpose range (loopback, private, metadata...).
    Builtin(&'static str),
    /// One of the cluster's pod/service ranges.
    Cluster,
    /// The tenant's own `deny_cidrs`.
    Tenant,
    /// The proxy's own listener.
    SelfAddress,
}

impl DenyReason {
    /// Short machine-readable reason, used in the `x-palisade-reason` header and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            DenyReason::Builtin(name) => name,
            DenyReason::Cluster => "cluster-range",
            DenyReason::Tenant => "tenant-deny-cidr",
            DenyReason::SelfAddress => "proxy-self",
        }
    }
}

/// Ranges that are always refused, even inside a tenant's `allow_cidrs`.
const ALWAYS: &[(&str, &str)] = &[
    ("169.254.169.254/32", "cloud-metadata"),
    ("fd00:ec2::254/128", "cloud-metadata"),
];

/// Built-in deny ranges; a tenant's `allow_cidrs` may open them.
const BUILTIN: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "ietf-protocol"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/96", "ipv4-compatible"),
    ("::1/128", "loopback"),
    ("64:ff9b::/96", "nat64"),
    ("64:ff9b:1::/48", "nat64"),
    ("2001::/32", "teredo"),
    ("2002::/16", "6to4"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Deny(DenyReason),
    Allow,
}

/// The compiled address policy for one tenant.
#[derive(Debug, Clone)]
pub struct AddressGuard {
    always: Vec<(IpNet, DenyReason)>,
    /// Allow and deny rules; see [`AddressGuard::check`] for precedence.
    rules: Vec<(IpNet, Rule)>,
    /// Proxy listeners: (address, port); an unspecified address matches any address.
    own: Vec<SocketAddr>,
}

impl AddressGuard {
    /// Build from the cluster ranges, the tenant's exceptions and the proxy's listeners.
    pub fn new(cluster: &[IpNet], allow: &[IpNet], deny: &[IpNet], own: &[SocketAddr]) -> Self {
        let parse = |list: &[(&str, &'static str)]| -> Vec<(IpNet, DenyReason)> {
            list.iter()
                .filter_map(|(net, name)| net.parse().ok().map(|n| (n, DenyReason::Builtin(name))))
                .collect()
        };
        let mut rules: Vec<(IpNet, Rule)> = parse(BUILTIN)
            .into_iter()
            .map(|(n, r)| (n, Rule::Deny(r)))
            .collect();
        rules.extend(
            cluster
                .iter()
                .map(|n| (*n, Rule::Deny(DenyReason::Cluster))),
        );
        rules.extend(allow.iter().map(|n| (*n, Rule::Allow)));
        rules.extend(deny.iter().map(|n| (*n, Rule::Deny(DenyReason::Tenant))));
        AddressGuard {
            always: parse(ALWAYS),
            rules,
            own: own.to_vec(),
        }
    }

    /// Check one resolved destination. Mapped IPv4 (`::ffff:a.b.c.d`) is checked
    /// as the IPv4 address it is.
    pub fn check(&self, dest: SocketAddr) -> Result<(), DenyReason> {
        let ip = dest.ip().to_canonical();
        if let Some((_, r)) = self.always.iter().find(|(n, _)| n.contains(&ip)) {
            return Err(*r);
        }
        if ip.is_unspecified() {
            return Err(DenyReason::Builtin("unspecified"));
        }
        for own in &self.own {
            if own.port() == dest.port()
                && (own.ip().is_unspecified() || own.ip().to_canonical() == ip)
            {
                return Err(DenyReason::SelfAddress);
            }
        }
        // Most specific prefix wins; at equal length a tenant deny beats a tenant
        // allow, which beats a built-in or cluster range.
        let mut best: Option<((u8, u8), Rule)> = None;
        for (net, rule) in &self.rules {
            if !net.contains(&ip) {
                continue;
            }
            let rank = match rule {
                Rule::Deny(DenyReason::Tenant) => 2,
                Rule::Allow => 1,
                Rule::Deny(_) => 0,
            };
            let key = (net.prefix_len(), rank);
            if best.is_none_or(|(b, _)| key > b) {
                best = Some((key, *rule));
            }
        }
        match best {
            Some((_, Rule::Deny(r))) => Err(r),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> AddressGuard {
        AddressGuard::new(
            &[
                "10.96.0.0/12".parse().unwrap(),
                "203.0.113.0/24".parse().unwrap(),
            ],
            &[],
            &[],
            &["127.0.0.1:3128".parse().unwrap()],
        )
    }

    fn denied(g: &AddressGuard, s: &str) -> Option<&'static str> {
        let ip: IpAddr = s.parse().unwrap();
        g.check(SocketAddr::new(ip, 443)).err().map(|r| r.as_str())
    }

    #[test]
    fn every_builtin_class_is_denied_including_mapped_forms() {
        let g = guard();
        for (addr, reason) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "cgnat"),
            ("169.254.1.1", "link-local"),
            ("169.254.169.254", "cloud-metadata"),
            ("fd00:ec2::254", "cloud-metadata"),
            ("224.0.0.1", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("ff02::1", "multicast"),
            ("64:ff9b::a00:1", "nat64"),
            ("2002:a00:1::", "6to4"),
            ("2001:0:a00:1::", "teredo"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "cloud-metadata"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::10.0.0.1", "ipv4-compatible"),
            ("203.0.113.7", "cluster-range"),
            ("10.96.0.1", "cluster-range"),
        ] {
            assert_eq!(denied(&g, addr), Some(reason), "{addr}");
        }
        for ok in ["93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34"] {
            assert_eq!(denied(&g, ok), None, "{ok}");
        }
    }

    #[test]
    fn tenant_exception_opens_a_range_but_a_narrower_deny_wins() {
        let g = AddressGuard::new(
            &[],
            &[
                "10.20.0.0/16".parse().unwrap(),
                "169.254.0.0/16".parse().unwrap(),
            ],
            &["10.20.0.5/32".parse().unwrap()],
            &[],
        );
        assert_eq!(denied(&g, "10.20.3.4"), None);
        assert_eq!(denied(&g, "10.20.0.5"), Some("tenant-deny-cidr"));
        assert_eq!(denied(&g, "10.21.0.1"), Some("private"));
        assert_eq!(denied(&g, "169.254.169.254"), Some("cloud-metadata"));
    }

    #[test]
    fn own_listener_is_denied_on_its_port_only() {
        let g = AddressGuard::new(
            &[],
            &["127.0.0.0/8".parse().unwrap()],
            &[],
            &["127.0.0.1:3128".parse().unwrap()],
        );
        assert!(g.check("127.0.0.1:3128".parse().unwrap()).is_err());
        assert!(g.check("[::ffff:127.0.0.1]:3128".parse().unwrap()).is_err());
        assert!(g.check("127.0.0.1:8080".parse().unwrap()).is_ok());
    }

    #[test]
    fn authorities_parse() {
        let t = parse_authority("Example.COM.:8443", None).unwrap();
        assert_eq!(t.host, Host::Name("example.com".into()));
        assert_eq!(t.port, 8443);
        let t = parse_authority("[::ffff:10.0.0.1]:443", None).unwrap();
        assert_eq!(t.host, Host::Ip("::ffff:10.0.0.1".parse().unwrap()));
        assert_eq!(parse_authority("example.com", Some(80)).unwrap().port, 80);
        assert_eq!(
            parse_authority("example.com", None),
            Err(TargetError::BadPort)
        );
        assert_eq!(parse_authority("a:0", None), Err(TargetError::BadPort));
        assert_eq!(parse_authority("a:99999", None), Err(TargetError::BadPort));
        assert_eq!(parse_authority("user@a:1", None), Err(TargetError::BadHost));
        assert_eq!(parse_authority("a b:1", None), Err(TargetError::BadHost));
        assert_eq!(parse_authority(":1", None), Err(TargetError::EmptyHost));
        // Odd notations stay names: the resolver gives them meaning.
        assert_eq!(
            parse_authority("2130706433:80", None).unwrap().host,
            Host::Name("2130706433".into())
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_authority_never_panics(s in "\\PC{0,40}") {
            let _ = parse_authority(&s, Some(80));
        }
    }
}
