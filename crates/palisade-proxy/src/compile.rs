//! The proxy's configuration compiled from Palisade's model, in one place.
//!
//! `palisade proxy-config` (from the SQLite store), the lab's plan, the
//! in-cluster proxy's ConfigMap (`palisade render`) and the operator (from
//! the custom resources) all hand a core [`Snapshot`] to [`config`], so a
//! tenant means the same thing to the proxy whichever of them wrote the
//! file. What is not in the model — where the proxy listens, which ranges
//! are the cluster's, the lab's own egress addresses, the operator's
//! per-tenant domain rules — comes in [`CompileOptions`].
//!
//! The proxy may depend on the core (pure, no I/O); it still imports
//! neither the store nor Kubernetes.

use crate::config::{
    ConfigError, DomainPattern, EgressConfig, InvalidDomain, ProxyConfig, SourcePrefix,
    TenantConfig,
};
use palisade_core::{Deployment, Snapshot, TenantName};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What the model does not say about the proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompileOptions {
    /// Process-wide settings (`listen`, `admin_listen`, `cluster_deny`,
    /// `default_egress`, timeouts, `reload_poll`); its `tenants` are
    /// replaced by the snapshot's.
    pub base: ProxyConfig,
    /// Egress addresses that replace a tenant's stored ones (the lab's,
    /// which must be addresses of its own namespace).
    pub egress: BTreeMap<TenantName, EgressConfig>,
    /// Destination domain rules per tenant (the `Tenant` resource's
    /// `allowedDomains`/`deniedDomains`); the store holds none.
    pub domains: BTreeMap<TenantName, DomainRules>,
}

/// A tenant's destination domain rules, as written by a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainRules {
    /// If non-empty, only these domains (`name` or `*.suffix`).
    pub allow: Vec<String>,
    /// Always refused.
    pub deny: Vec<String>,
}

/// Why a snapshot does not make a proxy configuration.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A tenant's domain rule is not a domain pattern.
    #[error("invalid domain rule of tenant {tenant}")]
    Domain {
        /// The tenant.
        tenant: TenantName,
        /// The pattern and what is wrong with it.
        #[source]
        source: InvalidDomain,
    },
    /// The compiled file would not load (two tenants on one listener
    /// port, a tenant port equal to `listen`'s): the proxy would refuse it
    /// and keep running its old config.
    #[error("the compiled proxy config is invalid")]
    Invalid(#[source] ConfigError),
    /// The config could not be written as YAML.
    #[error("failed to serialise the proxy config")]
    Serialize(#[source] ConfigError),
}

/// An egress config from stored addresses: one per family.
pub fn egress(ips: impl IntoIterator<Item = IpAddr>) -> EgressConfig {
    let mut e = EgressConfig::default();
    for ip in ips {
        match ip {
            IpAddr::V4(v4) => e.ipv4 = Some(v4),
            IpAddr::V6(v6) => e.ipv6 = Some(v6),
        }
    }
    e
}

fn patterns(tenant: &TenantName, raw: &[String]) -> Result<Vec<DomainPattern>, CompileError> {
    raw.iter()
        .map(|p| {
            DomainPattern::parse(p).map_err(|source| CompileError::Domain {
                tenant: tenant.clone(),
                source,
            })
        })
        .collect()
}

/// The proxy configuration for `snapshot`: one tenant per model tenant, in
/// the snapshot's order, known on its own listener port (`proxy_port`,
/// whatever the caller's address: an IPv4 pod is still its tenant) and on
/// the shared port by its deployments' subnets, leaving from its egress
/// IP. The result is validated as the proxy would on load.
pub fn config(snapshot: &Snapshot, options: &CompileOptions) -> Result<ProxyConfig, CompileError> {
    let mut by_tenant: BTreeMap<&TenantName, Vec<&Deployment>> = BTreeMap::new();
    for d in &snapshot.deployments {
        by_tenant.entry(&d.tenant).or_default().push(d);
    }
    let mut config = ProxyConfig {
        tenants: Vec::with_capacity(snapshot.tenants.len()),
        ..options.base.clone()
    };
    for tenant in &snapshot.tenants {
        let rules = options.domains.get(&tenant.name);
        config.tenants.push(TenantConfig {
            name: tenant.name.clone(),
            // 0: not assigned (a store from before ports were); the tenant
            // is then known on the shared port only.
            listen_port: (tenant.proxy_port != 0).then_some(tenant.proxy_port),
            sources: by_tenant
                .get(&tenant.name)
                .into_iter()
                .flatten()
                .map(|d| SourcePrefix {
                    prefix: d.subnet.into(),
                    deployment: d.name.to_string(),
                })
                .collect(),
            egress: options
                .egress
                .get(&tenant.name)
                .cloned()
                .unwrap_or_else(|| egress(tenant.egress.ip)),
            allow_domains: patterns(&tenant.name, rules.map_or(&[][..], |r| &r.allow))?,
            deny_domains: patterns(&tenant.name, rules.map_or(&[][..], |r| &r.deny))?,
            ..TenantConfig::default()
        });
    }
    config.validate().map_err(CompileError::Invalid)?;
    Ok(config)
}

/// [`config`] as the YAML file the proxy reads.
pub fn config_yaml(snapshot: &Snapshot, options: &CompileOptions) -> Result<String, CompileError> {
    config(snapshot, options)?
        .to_yaml()
        .map_err(CompileError::Serialize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::allocator::Timestamp;
    use palisade_core::{Pool, SubnetLen, Tenant};
    use std::time::Duration;

    fn snapshot() -> Snapshot {
        let tenant = |name: &str, port: u16| {
            let mut t = Tenant::with_defaults(name.parse().unwrap(), Timestamp(0));
            t.proxy_port = port;
            t
        };
        Snapshot {
            pool: Pool::new(
                "fd00::/48".parse().unwrap(),
                SubnetLen::default(),
                Duration::ZERO,
            )
            .unwrap(),
            tenants: vec![tenant("a", 20000), tenant("b", 20000)],
            deployments: Vec::new(),
            gateways: Vec::new(),
            allow_rules: Vec::new(),
        }
    }

    #[test]
    fn a_config_the_proxy_would_refuse_is_an_error_not_a_file() {
        let e = config(&snapshot(), &CompileOptions::default()).unwrap_err();
        let chain = crate::error::Chain(&e).to_string();
        assert!(chain.contains("already tenant \"a\"'s listener"), "{chain}");
    }

    #[test]
    fn domain_rules_are_parsed_and_a_bad_one_names_its_tenant() {
        let mut s = snapshot();
        s.tenants[1].proxy_port = 20001;
        let b: TenantName = "b".parse().unwrap();
        let mut options = CompileOptions::default();
        options.domains.insert(
            b.clone(),
            DomainRules {
                allow: vec!["*.Example.com".into()],
                deny: vec!["evil.example.com".into()],
            },
        );
        let c = config(&s, &options).unwrap();
        assert!(c.tenants[0].allow_domains.is_empty());
        assert!(c.tenants[1].allow_domains[0].matches("api.example.com"));
        assert!(c.tenants[1].deny_domains[0].matches("evil.example.com"));
        options.domains.get_mut(&b).unwrap().deny = vec!["not a domain".into()];
        let e = config(&s, &options).unwrap_err();
        let chain = crate::error::Chain(&e).to_string();
        assert!(chain.contains("tenant b"), "{chain}");
        assert!(chain.contains("\"not a domain\""), "{chain}");
    }
}
