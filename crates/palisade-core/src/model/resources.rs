//! Tenants, deployments and gateways: the records the store keeps and every
//! renderer reads.

use super::{
    Cpu, DeploymentName, Image, Labels, Memory, ModelError, NodePoolName, TenantName, WorkloadSpec,
};
use crate::allocator::Timestamp;
use ipnet::Ipv6Net;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// How many pods a deployment runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u32")]
pub struct Replicas(u32);

impl Replicas {
    /// The most replicas one deployment may ask for.
    pub const MAX: u32 = 10_000;

    /// The replica count.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for Replicas {
    /// One replica, as the seed's `create` defaults to.
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<u32> for Replicas {
    type Error = ModelError;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        if n > Self::MAX {
            return Err(ModelError::OutOfRange {
                kind: "replicas",
                value: n.to_string(),
                reason: format!("must be between 0 and {}", Self::MAX),
            });
        }
        Ok(Self(n))
    }
}

impl FromStr for Replicas {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u32 = s.parse().map_err(|_| ModelError::OutOfRange {
            kind: "replicas",
            value: s.to_owned(),
            reason: format!("must be a whole number between 0 and {}", Self::MAX),
        })?;
        n.try_into()
    }
}

impl From<Replicas> for u32 {
    fn from(r: Replicas) -> u32 {
        r.0
    }
}

impl fmt::Display for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A TCP port a deployment serves on (1-65535).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u16", into = "u16")]
pub struct Port(u16);

impl Port {
    /// Port 80, what the seed's nginx images serve.
    pub const HTTP: Port = Port(80);

    /// The port number.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u16> for Port {
    type Error = ModelError;
    fn try_from(n: u16) -> Result<Self, Self::Error> {
        if n == 0 {
            return Err(ModelError::OutOfRange {
                kind: "port",
                value: "0".into(),
                reason: "must be between 1 and 65535".into(),
            });
        }
        Ok(Self(n))
    }
}

impl FromStr for Port {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u16 = s.parse().map_err(|_| ModelError::OutOfRange {
            kind: "port",
            value: s.to_owned(),
            reason: "must be a whole number between 1 and 65535".into(),
        })?;
        n.try_into()
    }
}

impl From<Port> for u16 {
    fn from(p: Port) -> u16 {
        p.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A tenant's resource ceiling, rendered as its namespace's `ResourceQuota`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Quota {
    /// Total CPU requests across the tenant's pods.
    pub cpu: Cpu,
    /// Total memory requests across the tenant's pods.
    pub memory: Memory,
    /// Most pods the tenant may run at once.
    pub pods: u32,
}

impl Default for Quota {
    /// Room for a handful of small services: 4 cores, 8 GiB, 20 pods.
    fn default() -> Self {
        Self {
            cpu: Cpu::from_millis(4000),
            memory: Memory::from_bytes(8 << 30),
            pods: 20,
        }
    }
}

/// How a tenant's outbound traffic reaches the internet.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum EgressMode {
    /// Through Palisade's egress proxy (`HTTP_PROXY`), which logs and filters
    /// by domain; seed 002's design.
    #[default]
    Proxy,
    /// Through a `CiliumEgressGatewayPolicy`: a fixed source IP at L3, no
    /// domain rules or request logs.
    CiliumEgressGateway,
}

impl EgressMode {
    /// Every mode, for help texts.
    pub const ALL: [EgressMode; 2] = [EgressMode::Proxy, EgressMode::CiliumEgressGateway];

    /// The mode's name as typed and stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            EgressMode::Proxy => "proxy",
            EgressMode::CiliumEgressGateway => "cilium-egress-gateway",
        }
    }
}

impl FromStr for EgressMode {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| ModelError::OutOfRange {
                kind: "egress mode",
                value: s.to_owned(),
                reason: "must be proxy or cilium-egress-gateway".into(),
            })
    }
}

impl fmt::Display for EgressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a tenant's traffic leaves the platform from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EgressProfile {
    /// Proxy or L3 egress gateway.
    pub mode: EgressMode,
    /// The source address the platform attaches to the tenant's gateway or
    /// proxy node: CiliumEgressGatewayPolicy's `egressIP`, which must be on
    /// one of the node's interfaces (on AWS a private address, with the
    /// Elastic IP NAT'ed to it). `None` uses the platform's default.
    pub ip: Option<IpAddr>,
    /// The public address the tenant's traffic appears from and its partners
    /// allow-list, when it differs from `ip` (an AWS Elastic IP). For docs
    /// and the dashboard; nothing is configured from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<IpAddr>,
}

/// The egress proxy's per-tenant listener ports: the proxy knows a tenant by
/// the port its pods connect to, which works on IPv4-only paths where the
/// source address cannot tell tenants apart. The store hands out the lowest
/// free one when it creates a tenant.
pub const PROXY_PORTS: std::ops::RangeInclusive<u16> = 20000..=29999;

/// A customer of the platform: a namespace with its quota, node pool and
/// egress profile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tenant {
    /// Unique name; the namespace is `tenant-<name>`.
    pub name: TenantName,
    /// Resource ceiling for the namespace.
    pub quota: Quota,
    /// Dedicated node pool, if the tenant has one.
    pub node_pool: Option<NodePoolName>,
    /// How and from where its traffic leaves.
    pub egress: EgressProfile,
    /// Its own egress-proxy listener port, from [`PROXY_PORTS`], unique and
    /// stable while the tenant exists. 0 until assigned: the store assigns
    /// one when it creates the tenant (whatever the caller passed).
    #[serde(default)]
    pub proxy_port: u16,
    /// User labels, copied onto the namespace.
    pub labels: Labels,
    /// When the tenant was created.
    pub created_at: Timestamp,
}

impl Tenant {
    /// A tenant with default quota, no node pool and proxy egress: what
    /// `palisade create` makes when a deployment names a new tenant.
    pub fn with_defaults(name: TenantName, created_at: Timestamp) -> Self {
        Self {
            name,
            quota: Quota::default(),
            node_pool: None,
            egress: EgressProfile::default(),
            proxy_port: 0,
            labels: Labels::new(),
            created_at,
        }
    }
}

/// A workload of a tenant with its own IPv6 subnet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deployment {
    /// Owning tenant.
    pub tenant: TenantName,
    /// Unique within the tenant.
    pub name: DeploymentName,
    /// What the pods run.
    pub image: Image,
    /// How many pods.
    pub replicas: Replicas,
    /// Ports the pods serve on, sorted and distinct.
    pub ports: Vec<Port>,
    /// The subnet its pods take addresses from.
    pub subnet: Ipv6Net,
    /// User labels, copied onto the pods.
    pub labels: Labels,
    /// Environment, command, scratch directories and security profile.
    #[serde(flatten)]
    pub workload: WorkloadSpec,
    /// When the deployment was created.
    pub created_at: Timestamp,
}

/// Which workloads a gateway fronts: the seed's three patterns.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(tag = "scope", rename_all = "kebab-case")]
pub enum GatewayScope {
    /// One gateway in front of every tenant.
    Central,
    /// One gateway per tenant, fronting all its deployments.
    PerTenant {
        /// The fronted tenant.
        tenant: TenantName,
    },
    /// One gateway in front of a single deployment.
    PerDeployment {
        /// The deployment's tenant.
        tenant: TenantName,
        /// The fronted deployment.
        deployment: DeploymentName,
    },
}

impl GatewayScope {
    /// A unique, unambiguous identifier derived from the scope, so each
    /// scope has at most one gateway: `central`, `per-tenant/<tenant>`,
    /// `per-deployment/<tenant>/<deployment>`.
    pub fn id(&self) -> String {
        match self {
            GatewayScope::Central => "central".into(),
            GatewayScope::PerTenant { tenant } => format!("per-tenant/{tenant}"),
            GatewayScope::PerDeployment { tenant, deployment } => {
                format!("per-deployment/{tenant}/{deployment}")
            }
        }
    }

    /// The scope's kind as the seed's `create-gateway` spells it.
    pub const fn kind(&self) -> &'static str {
        match self {
            GatewayScope::Central => "central",
            GatewayScope::PerTenant { .. } => "per-tenant",
            GatewayScope::PerDeployment { .. } => "per-deployment",
        }
    }

    /// The tenant this gateway belongs to, if any.
    pub fn tenant(&self) -> Option<&TenantName> {
        match self {
            GatewayScope::Central => None,
            GatewayScope::PerTenant { tenant } | GatewayScope::PerDeployment { tenant, .. } => {
                Some(tenant)
            }
        }
    }

    /// Whether this gateway fronts `deployment` of `tenant`.
    pub fn fronts(&self, tenant: &TenantName, deployment: &DeploymentName) -> bool {
        match self {
            GatewayScope::Central => true,
            GatewayScope::PerTenant { tenant: t } => t == tenant,
            GatewayScope::PerDeployment {
                tenant: t,
                deployment: d,
            } => t == tenant && d == deployment,
        }
    }
}

/// An ingress gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gateway {
    /// What it fronts.
    #[serde(flatten)]
    pub scope: GatewayScope,
    /// When it was created.
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_and_ports_have_bounds() {
        assert_eq!("3".parse::<Replicas>().unwrap().get(), 3);
        assert!("0".parse::<Replicas>().is_ok());
        for bad in ["-1", "x", "10001", "1.5"] {
            assert!(bad.parse::<Replicas>().is_err(), "{bad}");
        }
        assert!("0".parse::<Port>().is_err());
        assert!("65536".parse::<Port>().is_err());
        assert_eq!("8080".parse::<Port>().unwrap().get(), 8080);
    }

    #[test]
    fn gateway_scopes_front_what_the_seed_says() {
        let acme: TenantName = "acme-corp".parse().unwrap();
        let big: TenantName = "big-corp".parse().unwrap();
        let web: DeploymentName = "web-frontend".parse().unwrap();
        let api: DeploymentName = "api".parse().unwrap();
        assert!(GatewayScope::Central.fronts(&big, &api));
        let per_tenant = GatewayScope::PerTenant {
            tenant: acme.clone(),
        };
        assert!(per_tenant.fronts(&acme, &api) && !per_tenant.fronts(&big, &api));
        let per_dep = GatewayScope::PerDeployment {
            tenant: acme.clone(),
            deployment: web.clone(),
        };
        assert!(per_dep.fronts(&acme, &web) && !per_dep.fronts(&acme, &api));
        assert_eq!(per_dep.id(), "per-deployment/acme-corp/web-frontend");
    }

    #[test]
    fn egress_modes_parse_by_name() {
        assert_eq!(
            "cilium-egress-gateway".parse::<EgressMode>().unwrap(),
            EgressMode::CiliumEgressGateway
        );
        assert!("nat".parse::<EgressMode>().is_err());
    }
}
