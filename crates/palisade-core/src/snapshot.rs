//! Everything a renderer needs, in one value.
//!
//! Stores (SQLite, the Kubernetes API) produce a [`Snapshot`]; compilers (the
//! Kubernetes renderer, the lab's nftables, the proxy's config, the dashboard)
//! consume one. Neither side knows about the other.

use crate::model::{Deployment, DeploymentName, Gateway, Port, Tenant, TenantName};
use crate::pool::Pool;

/// An explicit permission for one deployment to reach another of the same
/// tenant (the seed's `api → db`), optionally on one port only.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct AllowRule {
    /// The tenant both deployments belong to.
    pub tenant: TenantName,
    /// The client deployment.
    pub from: DeploymentName,
    /// The server deployment.
    pub to: DeploymentName,
    /// Only this port; `None` allows every port `to` serves.
    pub port: Option<Port>,
}

impl std::fmt::Display for AllowRule {
    /// `acme: api -> db on port 5432`, or `on all ports`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {} on ", self.tenant, self.from, self.to)?;
        match self.port {
            Some(p) => write!(f, "port {p}"),
            None => f.write_str("all ports"),
        }
    }
}

/// The whole desired state at one instant, sorted by name so that every
/// compiler's output is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The subnet pool.
    pub pool: Pool,
    /// Tenants, by name.
    pub tenants: Vec<Tenant>,
    /// Deployments, by (tenant, name).
    pub deployments: Vec<Deployment>,
    /// Gateways, by scope.
    pub gateways: Vec<Gateway>,
    /// Allow rules, by (tenant, from, to, port).
    pub allow_rules: Vec<AllowRule>,
}

impl Snapshot {
    /// The deployments of one tenant.
    pub fn deployments_of<'a>(
        &'a self,
        tenant: &'a TenantName,
    ) -> impl Iterator<Item = &'a Deployment> + 'a {
        self.deployments.iter().filter(move |d| &d.tenant == tenant)
    }

    /// A tenant by name.
    pub fn tenant(&self, name: &TenantName) -> Option<&Tenant> {
        self.tenants.iter().find(|t| &t.name == name)
    }
}
