//! The JSON shapes of the dashboard's pages, built from a [`Snapshot`].
//!
//! These are the API's contract (documented in docs/dashboard.md), kept
//! separate from the model's own serde shapes so the model can change
//! without silently changing what scripts reading the API see. Pure: no
//! I/O, no clock.

use palisade_backend::DeploymentRow;
use palisade_core::allocator::PoolUsage;
use palisade_core::{AllowRule, Gateway, Pool, Tenant};
use palisade_store::{Event, ObjectCounts, TenantUsage};
use serde::Serialize;

/// One row of `/api/tenants`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantSummary {
    /// Tenant name.
    pub name: String,
    /// Its Kubernetes namespace.
    pub namespace: String,
    /// How many deployments it has.
    pub deployments: u64,
    /// Sum of its deployments' replicas.
    pub replicas: u64,
    /// Quota, as typed (`4`, `8Gi`, pods).
    pub quota: QuotaView,
    /// Dedicated node pool, if any.
    pub node_pool: Option<String>,
    /// `proxy` or `cilium-egress-gateway`.
    pub egress_mode: String,
    /// Fixed egress address, if set.
    pub egress_ip: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
}

/// A tenant's quota.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaView {
    /// CPU, e.g. `4` or `500m`.
    pub cpu: String,
    /// Memory, e.g. `8Gi`.
    pub memory: String,
    /// Most pods.
    pub pods: u32,
}

/// One deployment on the tenant page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentView {
    /// Deployment name.
    pub name: String,
    /// Its IPv6 subnet; `null` while the operator has not allocated it
    /// (the cluster only).
    pub subnet: Option<String>,
    /// Container image.
    pub image: String,
    /// Pod count.
    pub replicas: u32,
    /// Ports served.
    pub ports: Vec<u16>,
    /// The tenant's node pool (deployments run on it).
    pub node_pool: Option<String>,
    /// The tenant's egress mode.
    pub egress_mode: String,
    /// The tenant's egress address.
    pub egress_ip: Option<String>,
    /// `key=value` labels.
    pub labels: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// The operator's `Ready` condition: `True`, `False` or `Unknown`
    /// (the cluster only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
}

/// `/api/tenants/{tenant}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantDetail {
    /// The tenant's own fields.
    #[serde(flatten)]
    pub summary: TenantSummary,
    /// `key=value` labels of the namespace.
    pub labels: Vec<String>,
    /// Its deployments, by name.
    pub deployment_list: Vec<DeploymentView>,
    /// Gateway ids fronting any of its deployments (including `central`).
    pub gateways: Vec<String>,
    /// Its allow rules, as `from -> to on port N|all ports`.
    pub allow_rules: Vec<RuleView>,
}

/// An allow rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    /// Client deployment.
    pub from: String,
    /// Server deployment.
    pub to: String,
    /// Port, or `null` for every port.
    pub port: Option<u16>,
}

/// `/api/stats`: pool counts (exact, as decimal strings: a pool can hold
/// more subnets than a JSON number represents exactly) and object counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsView {
    /// Pool CIDR.
    pub pool: String,
    /// Prefix length of each subnet.
    pub prefix_len: u8,
    /// Quarantine time for released subnets, seconds.
    pub reuse_after_secs: u64,
    /// Subnets in the pool.
    pub capacity: String,
    /// Held by deployments.
    pub allocated: String,
    /// Released and reusable now.
    pub recycled_available: String,
    /// Released, waiting out `reuse_after`.
    pub quarantined: String,
    /// Never handed out.
    pub never_used: String,
    /// allocated / capacity.
    pub utilisation: f64,
    /// Tenant count.
    pub tenants: u64,
    /// Deployment count.
    pub deployments: u64,
    /// Gateway count.
    pub gateways: u64,
    /// Allow rule count.
    pub allow_rules: u64,
}

/// One point of "allocations over time": deployments holding a subnet
/// right after the event at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HistoryPoint {
    /// Unix seconds.
    pub at: u64,
    /// Allocated subnets after the event.
    pub allocated: u128,
}

fn egress_ip(t: &Tenant) -> Option<String> {
    t.egress.ip.map(|ip| ip.to_string())
}

fn labels(l: &palisade_core::Labels) -> Vec<String> {
    l.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The summary of `tenant`, which has `deployments` deployments running
/// `replicas` pods in all.
pub fn tenant_summary(tenant: &Tenant, deployments: u64, replicas: u64) -> TenantSummary {
    TenantSummary {
        name: tenant.name.to_string(),
        namespace: tenant.name.namespace(),
        deployments,
        replicas,
        quota: QuotaView {
            cpu: tenant.quota.cpu.to_string(),
            memory: tenant.quota.memory.to_string(),
            pods: tenant.quota.pods,
        },
        node_pool: tenant.node_pool.as_ref().map(ToString::to_string),
        egress_mode: tenant.egress.mode.to_string(),
        egress_ip: egress_ip(tenant),
        created_at: tenant.created_at.0,
    }
}

/// Every tenant, by name, from the store's per-tenant totals.
pub fn tenants(usage: &[TenantUsage]) -> Vec<TenantSummary> {
    usage
        .iter()
        .map(|u| tenant_summary(&u.tenant, u.deployments, u.replicas))
        .collect()
}

/// A deployment of `tenant` on its page.
pub fn deployment_view(tenant: &Tenant, d: &DeploymentRow) -> DeploymentView {
    DeploymentView {
        name: d.name.to_string(),
        subnet: d.subnet.map(|s| s.to_string()),
        image: d.image.to_string(),
        replicas: d.replicas.get(),
        ports: d.ports.iter().map(|p| p.get()).collect(),
        node_pool: tenant.node_pool.as_ref().map(ToString::to_string),
        egress_mode: tenant.egress.mode.to_string(),
        egress_ip: egress_ip(tenant),
        labels: labels(&d.labels),
        created_at: d.created_at.0,
        ready: d.rollout.as_ref().map(|r| r.ready.clone()),
    }
}

fn rule_view(r: &AllowRule) -> RuleView {
    RuleView {
        from: r.from.to_string(),
        to: r.to.to_string(),
        port: r.port.map(|p| p.get()),
    }
}

/// The page of `tenant` from its `deployments` (pending ones too), every
/// gateway and its allow rules.
pub fn tenant_detail(
    tenant: &Tenant,
    deployments: &[DeploymentRow],
    gateways: &[Gateway],
    rules: &[AllowRule],
) -> TenantDetail {
    let name = &tenant.name;
    let gateways = gateways
        .iter()
        .filter(|g| {
            deployments.iter().any(|d| g.scope.fronts(name, &d.name))
                || g.scope.tenant() == Some(name)
        })
        .map(|g| g.scope.id())
        .collect();
    let replicas = deployments
        .iter()
        .map(|d| u64::from(d.replicas.get()))
        .sum();
    TenantDetail {
        summary: tenant_summary(tenant, deployments.len() as u64, replicas),
        labels: labels(&tenant.labels),
        deployment_list: deployments
            .iter()
            .map(|d| deployment_view(tenant, d))
            .collect(),
        gateways,
        allow_rules: rules
            .iter()
            .filter(|r| &r.tenant == name)
            .map(rule_view)
            .collect(),
    }
}

/// `/api/stats` from the pool, its exact counts and the object counts.
pub fn stats(pool: &Pool, usage: &PoolUsage, counts: &ObjectCounts) -> StatsView {
    StatsView {
        pool: pool.cidr().to_string(),
        prefix_len: pool.subnet_len().get(),
        reuse_after_secs: pool.reuse_after().as_secs(),
        capacity: usage.capacity.to_string(),
        allocated: usage.allocated.to_string(),
        recycled_available: usage.recycled_available.to_string(),
        quarantined: usage.quarantined.to_string(),
        never_used: usage.never_used.to_string(),
        utilisation: usage.utilisation(),
        tenants: counts.tenants,
        deployments: counts.deployments,
        gateways: counts.gateways,
        allow_rules: counts.allow_rules,
    }
}

/// Allocated subnets over time, from the most recent `events` (oldest
/// first) and the count now.
///
/// The history table may be cut to its last N rows, so the series is
/// reconstructed backwards from the present: each `create` before now added
/// one, each `delete` removed one. The first point is the count just before
/// the oldest event shown.
pub fn allocation_series(events: &[Event], allocated_now: u128) -> Vec<HistoryPoint> {
    let relevant: Vec<&Event> = events
        .iter()
        .filter(|e| e.action == "create" || e.action == "delete")
        .collect();
    let mut points = Vec::with_capacity(relevant.len() + 1);
    let mut count = allocated_now;
    for e in relevant.iter().rev() {
        points.push(HistoryPoint {
            at: e.at.0,
            allocated: count,
        });
        count = if e.action == "create" {
            count.saturating_sub(1)
        } else {
            count + 1
        };
    }
    if let Some(first) = relevant.first() {
        points.push(HistoryPoint {
            at: first.at.0,
            allocated: count,
        });
    }
    points.reverse();
    points
}
