//! The proxy's configuration file: types, parsing and whole-file validation.
//!
//! The file is YAML. Every struct denies unknown fields and every field has a
//! default, so a control plane can emit only what it means. [`ProxyConfig::from_yaml`]
//! parses *and* validates; nothing is bound before it returns `Ok`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
pub use palisade_core::TenantName;
use serde::{Deserialize, Serialize};

/// Errors found while loading or validating a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config file {path}")]
    Read {
        /// Path that was read.
        path: String,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML did not parse into the schema (unknown field, wrong type...).
    #[error("failed to parse config")]
    Parse(#[from] serde_yaml_ng::Error),
    /// The file parsed but a value is not acceptable; `field` is a path such as `tenants[1].sources[0].prefix`.
    #[error("invalid config: {field}: {message}")]
    Invalid {
        /// Where in the file the problem is.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A tenant's listener could not be opened (its port is taken, say); the
    /// config that asked for it is not made active.
    #[error("failed to listen on {addr} for tenant {tenant:?}")]
    Listen {
        /// The tenant whose `listen_port` it is.
        tenant: String,
        /// The address that could not be bound.
        addr: SocketAddr,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A duration written the human way in YAML (`5s`, `250ms`, `1m 30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(pub Duration);

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration {s:?}: {e}"))
    }
}

impl From<HumanDuration> for String {
    fn from(d: HumanDuration) -> String {
        humantime::format_duration(d.0).to_string()
    }
}

/// A destination domain rule: an exact name (`api.example.com`) or a suffix
/// wildcard (`*.example.com`, which matches subdomains but not `example.com` itself).
/// Stored lower-case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainPattern {
    /// Lower-case name, without the `*.` prefix for wildcards.
    name: String,
    /// Whether this is a `*.suffix` pattern.
    wildcard: bool,
}

impl DomainPattern {
    /// Whether `host` (already lower-case, no trailing dot) matches this pattern.
    pub fn matches(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.name.len()
                && host.ends_with(self.name.as_str())
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
        } else {
            host == self.name
        }
    }
}

/// A string that is not a domain pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid domain pattern {0:?}: want a DNS name or *.suffix")]
pub struct InvalidDomain(pub String);

impl DomainPattern {
    /// Parses `name` or `*.suffix`, case-insensitively, ignoring a trailing dot.
    pub fn parse(s: &str) -> Result<Self, InvalidDomain> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(InvalidDomain(s.to_owned()));
        }
        Ok(DomainPattern { name, wildcard })
    }
}

impl TryFrom<String> for DomainPattern {
    type Error = InvalidDomain;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<DomainPattern> for String {
    fn from(p: DomainPattern) -> String {
        if p.wildcard {
            format!("*.{}", p.name)
        } else {
            p.name
        }
    }
}

/// Whether a tenant's domain and port rules are enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Requests that break the rules are refused with 403.
    #[default]
    Enforce,
    /// Requests that break the rules are allowed and logged with `decision=report`.
    /// Address (SSRF) rules are enforced in both modes.
    Report,
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the proxy listens on for clients.
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// Egress source addresses for tenants that configure none.
    pub default_egress: EgressConfig,
    /// Cluster ranges (pod and service CIDRs) that no tenant may reach.
    pub cluster_deny: Vec<IpNet>,
    /// Timeouts.
    pub timeouts: TimeoutConfig,
    /// Global caps.
    pub limits: GlobalLimits,
    /// How often the config file is checked for changes (0s disables polling; SIGHUP still reloads).
    pub reload_poll: HumanDuration,
    /// The tenants.
    pub tenants: Vec<TenantConfig>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3128)),
            admin_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9128)),
            default_egress: EgressConfig::default(),
            cluster_deny: Vec::new(),
            timeouts: TimeoutConfig::default(),
            limits: GlobalLimits::default(),
            reload_poll: HumanDuration(Duration::from_secs(2)),
            tenants: Vec::new(),
        }
    }
}

/// Source addresses outgoing connections are bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// IPv4 source address for IPv4 destinations; unset lets the kernel choose.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 source address for IPv6 destinations; unset lets the kernel choose.
    pub ipv6: Option<Ipv6Addr>,
}

/// Timeouts applied to clients and upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Time allowed to establish the upstream TCP connection (then 504).
    pub connect: HumanDuration,
    /// Time allowed between sending a request upstream and its response headers (then 504).
    pub first_byte: HumanDuration,
    /// Time a client has to send a complete request header block (then the connection is closed).
    pub header_read: HumanDuration,
    /// A tunnel with no traffic in either direction for this long is closed.
    pub idle: HumanDuration,
    /// On shutdown, how long in-flight requests and tunnels may run before they are cut.
    pub shutdown_grace: HumanDuration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            connect: HumanDuration(Duration::from_secs(10)),
            first_byte: HumanDuration(Duration::from_secs(60)),
            header_read: HumanDuration(Duration::from_secs(10)),
            idle: HumanDuration(Duration::from_secs(300)),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// Process-wide caps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlobalLimits {
    /// Maximum client connections open at once; further connections wait in the accept queue.
    pub max_connections: usize,
    /// Maximum size of a request header block in bytes (at least 8192).
    pub max_header_bytes: usize,
    /// Maximum idle pooled upstream connections kept per (tenant, egress, scheme, authority).
    pub max_idle_per_upstream: usize,
}

impl Default for GlobalLimits {
    fn default() -> Self {
        GlobalLimits {
            max_connections: 50_000,
            max_header_bytes: 16 * 1024,
            max_idle_per_upstream: 32,
        }
    }
}

/// One tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant name: the model's rule (`palisade_core::TenantName`, a DNS-1123
    /// label short enough for the `tenant-` namespace), also used in logs and metrics.
    pub name: TenantName,
    /// The port of this tenant's own listener, on `listen`'s address: every
    /// connection accepted there is this tenant's, whatever its source
    /// address (see docs/proxy.md, "Who is calling"). Unset: the tenant is
    /// known on `listen` only, by source prefix or credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Source prefixes that identify this tenant's clients, each with its deployment.
    pub sources: Vec<SourcePrefix>,
    /// Egress source addresses for this tenant; unset families fall back to `default_egress`.
    pub egress: EgressConfig,
    /// Basic proxy credentials accepted for clients outside `sources`.
    pub credentials: Vec<Credential>,
    /// If non-empty, only these destination domains are allowed.
    pub allow_domains: Vec<DomainPattern>,
    /// Destination domains always refused (wins over `allow_domains`).
    pub deny_domains: Vec<DomainPattern>,
    /// Destination ports allowed.
    pub allow_ports: Vec<u16>,
    /// Exceptions to the built-in address deny ranges (e.g. a partner's private range).
    pub allow_cidrs: Vec<IpNet>,
    /// Extra destination ranges refused; a more specific deny inside an allowed range wins.
    pub deny_cidrs: Vec<IpNet>,
    /// `enforce` or `report` for domain and port rules.
    pub mode: Mode,
    /// Per-tenant limits.
    pub limits: TenantLimits,
}

/// The name of a tenant whose entry names none.
#[allow(clippy::expect_used)] // a constant that satisfies the rule; a test parses it
fn unnamed() -> TenantName {
    "unnamed"
        .parse()
        .expect("\"unnamed\" is a valid tenant name")
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            name: unnamed(),
            listen_port: None,
            sources: Vec::new(),
            egress: EgressConfig::default(),
            credentials: Vec::new(),
            allow_domains: Vec::new(),
            deny_domains: Vec::new(),
            allow_ports: vec![80, 443],
            allow_cidrs: Vec::new(),
            deny_cidrs: Vec::new(),
            mode: Mode::Enforce,
            limits: TenantLimits::default(),
        }
    }
}

/// A source prefix and the deployment it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePrefix {
    /// The prefix (IPv4 or IPv6 CIDR, host bits zero).
    pub prefix: IpNet,
    /// Deployment name reported in logs.
    #[serde(default)]
    pub deployment: String,
}

/// A Basic proxy credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// User name (unique across all tenants).
    pub username: String,
    /// Argon2 PHC hash of the password (`$argon2id$v=19$...`), e.g. from `palisade-proxy hash-password`.
    pub password_hash: String,
}

/// Per-tenant limits. Zero means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    /// Maximum concurrent requests plus tunnels for the tenant (then 429).
    pub max_concurrent: usize,
    /// Sustained requests per second (then 429 with `Retry-After`).
    pub requests_per_second: u32,
    /// Burst size above the sustained rate (defaults to the rate).
    pub burst: u32,
}

impl ProxyConfig {
    /// Parse and validate a YAML document.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: ProxyConfig = serde_yaml_ng::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Render as YAML (what a control plane writes).
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        Ok(serde_yaml_ng::to_string(self)?)
    }

    /// Validate the configuration as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.limits.max_header_bytes < 8192 {
            return Err(invalid(
                "limits.max_header_bytes",
                format!(
                    "{} is below the minimum of 8192",
                    self.limits.max_header_bytes
                ),
            ));
        }
        if self.limits.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(invalid(
                "admin_listen",
                format!("same address as listen ({})", self.listen),
            ));
        }
        for (i, net) in self.cluster_deny.iter().enumerate() {
            check_prefix(&format!("cluster_deny[{i}]"), net)?;
        }
        let t = &self.timeouts;
        for (name, d) in [
            ("timeouts.connect", t.connect),
            ("timeouts.first_byte", t.first_byte),
            ("timeouts.header_read", t.header_read),
            ("timeouts.idle", t.idle),
        ] {
            if d.0.is_zero() {
                return Err(invalid(name, "must be greater than zero"));
            }
        }
        self.validate_ports()?;
        let mut names = BTreeSet::new();
        let mut prefixes: BTreeMap<IpNet, (String, String)> = BTreeMap::new();
        let mut users: BTreeMap<&str, &str> = BTreeMap::new();
        for (ti, tenant) in self.tenants.iter().enumerate() {
            let at = format!("tenants[{ti}]");
            if !names.insert(tenant.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("duplicate tenant name {:?}", tenant.name.as_str()),
                ));
            }
            for (si, src) in tenant.sources.iter().enumerate() {
                let f = format!("{at}.sources[{si}].prefix");
                check_prefix(&f, &src.prefix)?;
                if let Some((other, dep)) = prefixes.insert(
                    src.prefix,
                    (tenant.name.to_string(), src.deployment.clone()),
                ) {
                    return Err(invalid(
                        f,
                        format!(
                            "prefix {} is already claimed by tenant {other:?} deployment {dep:?}",
                            src.prefix
                        ),
                    ));
                }
            }
            for (ci, cred) in tenant.credentials.iter().enumerate() {
                let f = format!("{at}.credentials[{ci}]");
                if cred.username.is_empty() || cred.username.contains(':') {
                    return Err(invalid(
                        format!("{f}.username"),
                        "must be non-empty and contain no ':'",
                    ));
                }
                if let Some(other) = users.insert(&cred.username, tenant.name.as_str()) {
                    return Err(invalid(
                        format!("{f}.username"),
                        format!(
                            "user {:?} is already defined for tenant {other:?}",
                            cred.username
                        ),
                    ));
                }
                if let Err(e) = argon2::PasswordHash::new(&cred.password_hash) {
                    return Err(invalid(
                        format!("{f}.password_hash"),
                        format!("not a PHC password hash: {e}"),
                    ));
                }
            }
            if tenant.allow_ports.contains(&0) {
                return Err(invalid(format!("{at}.allow_ports"), "port 0 is not a port"));
            }
            for (i, net) in tenant.allow_cidrs.iter().enumerate() {
                check_prefix(&format!("{at}.allow_cidrs[{i}]"), net)?;
            }
            for (i, net) in tenant.deny_cidrs.iter().enumerate() {
                check_prefix(&format!("{at}.deny_cidrs[{i}]"), net)?;
            }
            let l = &tenant.limits;
            if l.burst != 0 && l.requests_per_second == 0 {
                return Err(invalid(
                    format!("{at}.limits.burst"),
                    "set requests_per_second too (burst alone limits nothing)",
                ));
            }
        }
        Ok(())
    }

    /// Every tenant listener port is a port, used once, and neither the
    /// shared nor the admin listener's.
    fn validate_ports(&self) -> Result<(), ConfigError> {
        let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
        for (ti, tenant) in self.tenants.iter().enumerate() {
            let Some(port) = tenant.listen_port else {
                continue;
            };
            let f = format!("tenants[{ti}].listen_port");
            if port == 0 {
                return Err(invalid(
                    f,
                    "port 0 is not a port (leave it out for no listener)",
                ));
            }
            for (what, addr) in [("listen", self.listen), ("admin_listen", self.admin_listen)] {
                if addr.port() == port {
                    return Err(invalid(f, format!("port {port} is {what}'s ({addr})")));
                }
            }
            if let Some(other) = ports.insert(port, tenant.name.as_str()) {
                return Err(invalid(
                    f,
                    format!("port {port} is already tenant {other:?}'s listener"),
                ));
            }
        }
        Ok(())
    }
}

fn check_prefix(field: &str, net: &IpNet) -> Result<(), ConfigError> {
    if net.trunc() != *net {
        return Err(invalid(
            field,
            format!("{net} has host bits set; did you mean {}?", net.trunc()),
        ));
    }
    Ok(())
}

/// The configured egress address for a destination family, tenant first then default.
pub(crate) fn pick_egress(
    tenant: &EgressConfig,
    default: &EgressConfig,
    dest: IpAddr,
) -> Option<IpAddr> {
    match dest {
        IpAddr::V4(_) => tenant.ipv4.or(default.ipv4).map(IpAddr::V4),
        IpAddr::V6(_) => tenant.ipv6.or(default.ipv6).map(IpAddr::V6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(yaml: &str) -> String {
        match ProxyConfig::from_yaml(yaml) {
            Ok(_) => panic!("config unexpectedly valid: {yaml}"),
            Err(e) => crate::error::Chain(&e).to_string(),
        }
    }

    #[test]
    fn empty_document_gives_defaults() {
        let c = ProxyConfig::from_yaml("{}").unwrap();
        assert_eq!(c.listen.port(), 3128);
        assert_eq!(c.timeouts.connect.0, Duration::from_secs(10));
    }

    #[test]
    fn unknown_field_is_named_with_its_location() {
        let e = err_of("listen: 127.0.0.1:1\nlisen: 1\n");
        assert!(e.contains("unknown field `lisen`"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn duplicate_prefix_across_tenants_is_rejected_with_both_owners() {
        let e = err_of(
            "tenants:\n- name: a\n  sources: [{prefix: 10.0.0.0/24, deployment: web}]\n- name: b\n  sources: [{prefix: 10.0.0.0/24, deployment: api}]\n",
        );
        assert!(e.contains("tenants[1].sources[0].prefix"), "{e}");
        assert!(e.contains("\"a\" deployment \"web\""), "{e}");
    }

    #[test]
    fn host_bits_in_prefix_are_rejected() {
        let e = err_of("tenants:\n- name: a\n  sources: [{prefix: 10.0.0.1/24}]\n");
        assert!(e.contains("did you mean 10.0.0.0/24"), "{e}");
    }

    #[test]
    fn bad_tenant_name_and_duration_are_rejected() {
        assert!(err_of("tenants: [{name: Bad_Name}]").contains("invalid tenant name"));
        // The model's rule: `tenant-<name>` must fit a 63-character label.
        let long = format!("tenants: [{{name: {}}}]", "a".repeat(57));
        assert!(err_of(&long).contains("at most 56"), "{}", err_of(&long));
        let unnamed = ProxyConfig::from_yaml("tenants: [{}]").unwrap();
        assert_eq!(unnamed.tenants[0].name.as_str(), "unnamed");
        assert!(err_of("timeouts: {connect: soon}").contains("invalid duration"));
        assert!(err_of("timeouts: {connect: 0s}").contains("timeouts.connect"));
    }

    #[test]
    fn bad_password_hash_is_rejected() {
        let e =
            err_of("tenants:\n- name: a\n  credentials: [{username: u, password_hash: plain}]\n");
        assert!(e.contains("tenants[0].credentials[0].password_hash"), "{e}");
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let p = DomainPattern::try_from("*.Example.com.".to_string()).unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        let e = DomainPattern::try_from("example.com".to_string()).unwrap();
        assert!(e.matches("example.com") && !e.matches("a.example.com"));
    }

    #[test]
    fn tenant_listener_ports_are_unique_and_not_the_shared_or_admin_port() {
        let two = |a: u16, b: u16| {
            format!(
                "listen: '[::]:3128'\ntenants:\n- {{name: a, listen_port: {a}}}\n- {{name: b, listen_port: {b}}}\n"
            )
        };
        assert!(ProxyConfig::from_yaml(&two(20000, 20001)).is_ok());
        let e = err_of(&two(20000, 20000));
        assert!(e.contains("tenants[1].listen_port"), "{e}");
        assert!(e.contains("already tenant \"a\"'s listener"), "{e}");
        let e = err_of(&two(20000, 3128));
        assert!(
            e.contains("tenants[1].listen_port: port 3128 is listen's"),
            "{e}"
        );
        let e = err_of(&two(9128, 20001));
        assert!(
            e.contains("tenants[0].listen_port: port 9128 is admin_listen's"),
            "{e}"
        );
        let e = err_of(&two(0, 20001));
        assert!(e.contains("port 0 is not a port"), "{e}");
        // Leaving the port out is how a tenant has no listener of its own.
        let c = ProxyConfig::from_yaml("tenants: [{name: a}]").unwrap();
        assert_eq!(c.tenants[0].listen_port, None);
        assert!(!c.to_yaml().unwrap().contains("listen_port"));
    }

    #[test]
    fn yaml_round_trips() {
        let c = ProxyConfig::from_yaml(
            "tenants:\n- name: a\n  listen_port: 20000\n  sources: [{prefix: '2001:db8::/96', deployment: web}]\n  allow_domains: ['*.example.com']\n  mode: report\n",
        )
        .unwrap();
        let again = ProxyConfig::from_yaml(&c.to_yaml().unwrap()).unwrap();
        assert_eq!(c, again);
    }
}
