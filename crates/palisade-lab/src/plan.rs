//! The lab's layout, computed from the desired state alone.
//!
//! Everything the I/O layer creates is named and addressed here, so that a
//! plan can be diffed against what runs (`lab sync`) and unit-tested without
//! root. Every name starts with `pl-<lab id>-`, which is how `lab down` finds
//! what a crashed run left behind.
//!
//! Layout: one "node" router namespace; every pod, gateway, the egress proxy
//! and the internet stand-in is its own namespace attached to the router by a
//! routed veth pair (Cilium's native-routing model: a /128 per pod and a
//! default route to the node), so every packet between two of them crosses
//! the router's nftables `forward` hook and nothing else needs filtering.

use crate::{LabError, Result};
use ipnet::Ipv6Net;
use palisade_core::model::EgressMode;
use palisade_core::policy::{Endpoint, Policy, PolicyOptions, gateway_label};
use palisade_core::{GatewayScope, Snapshot};
use palisade_proxy::config::{
    EgressConfig, HumanDuration, ProxyConfig, SourcePrefix, TenantConfig,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// Prefix of every namespace any lab creates.
pub const NAME_PREFIX: &str = "pl-";
/// The one nftables table, inside the router namespace.
pub const TABLE: &str = "palisade_lab";
/// The port pods and gateways serve on when a deployment declares none.
pub const DEFAULT_PORT: u16 = 80;
/// The port the internet echo origin and the gateways listen on.
pub const HTTP_PORT: u16 = 80;
/// The router's address on every veth: each namespace's default gateway.
pub const ROUTER_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Lab-internal service prefix (proxy inside address, gateways).
pub const SERVICE_PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd70, 0x01ab, 0, 0, 0, 0, 0, 0);
/// The egress proxy's inside address (what `HTTP_PROXY` points at).
pub const PROXY_ADDR: Ipv6Addr = Ipv6Addr::new(0xfd70, 0x01ab, 0, 0, 0, 0, 0, 0x3128);
/// The internet echo origin (documentation range, which the proxy treats as public).
pub const ECHO_ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1ab, 0, 0, 0, 0, 0x80);
/// Default egress addresses are `2001:db8:e9::<hash of tenant>`.
pub const EGRESS_PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xe9, 0, 0, 0, 0, 0);

/// How pod workloads run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// Under gVisor (`runsc --rootless --network=host do`).
    Runsc,
    /// A plain process in the pod's namespace.
    #[default]
    Plain,
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Runtime::Runsc => "runsc",
            Runtime::Plain => "plain",
        })
    }
}

/// Settings of one lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabOptions {
    /// Short `[0-9a-f]` id that makes this lab's names unique on the host.
    pub lab_id: String,
    /// Runtime for pod workloads.
    pub runtime: Runtime,
    /// Refuse to plan more pods than this.
    pub max_pods: usize,
    /// Policy settings (the proxy port).
    pub policy: PolicyOptions,
}

impl LabOptions {
    /// Options for the lab kept in `lab_dir`.
    pub fn for_dir(lab_dir: &Path, runtime: Runtime) -> Self {
        Self {
            lab_id: lab_id_for(lab_dir),
            runtime,
            max_pods: 1000,
            policy: PolicyOptions::default(),
        }
    }

    /// `pl-<lab id>-`: the prefix of this lab's namespaces.
    pub fn prefix(&self) -> String {
        format!("{NAME_PREFIX}{}-", self.lab_id)
    }
}

/// The lab id of a lab directory: 6 hex digits of its path's SHA-256.
pub fn lab_id_for(lab_dir: &Path) -> String {
    let digest = Sha256::digest(lab_dir.as_os_str().as_encoded_bytes());
    hex(&digest[..3])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash32(s: &str) -> u32 {
    let d = Sha256::digest(s.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// `base` with its low 32 bits replaced by `low` (never 0).
fn with_low32(base: Ipv6Addr, low: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(base) | u128::from(low.max(1)))
}

/// The router-side name of the veth leading to namespace `netns`.
pub fn veth_name(netns: &str) -> String {
    format!("v{:08x}", hash32(netns))
}

/// One pod replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PodPlan {
    /// `<deployment>-<replica>`.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// Its deployment.
    pub deployment: String,
    /// The deployment's image (mapped to the built-in workload).
    pub image: String,
    /// Its network namespace.
    pub netns: String,
    /// The router-side veth.
    pub veth: String,
    /// Its address, from the deployment's subnet.
    pub addr: Ipv6Addr,
    /// Ports the workload listens on.
    pub ports: Vec<u16>,
    /// How it runs.
    pub runtime: Runtime,
    /// The deployment's env, command, scratch and security profile, shown
    /// by `lab status`; the lab runs its built-in stand-in, not the image.
    #[serde(
        default,
        skip_serializing_if = "palisade_core::WorkloadSpec::is_default"
    )]
    pub workload: palisade_core::WorkloadSpec,
}

/// One host → backends route of a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GatewayRoute {
    /// `<deployment>.<tenant>` (the `Host` header), also served under the
    /// path prefix `/<tenant>/<deployment>/`.
    pub host: String,
    /// The deployment this route reaches.
    pub target: String,
    /// Its pods.
    pub backends: Vec<SocketAddr>,
}

/// One ingress gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GatewayPlan {
    /// Which gateway.
    pub scope: GatewayScope,
    /// `gateway/<label>`, as the policy model displays it.
    pub display: String,
    /// Its network namespace.
    pub netns: String,
    /// The router-side veth.
    pub veth: String,
    /// Its address.
    pub addr: Ipv6Addr,
    /// What it routes.
    pub routes: Vec<GatewayRoute>,
}

/// A tenant's egress as the lab realises it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantEgress {
    /// The tenant.
    pub tenant: String,
    /// Proxy or egress gateway.
    pub mode: EgressMode,
    /// The address the internet sees.
    pub ip: Ipv6Addr,
    /// Why not the stored one, if it is not.
    pub note: Option<String>,
}

/// The fixed namespaces of a lab.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InfraNames {
    /// The node: routes and filters.
    pub router: String,
    /// The egress proxy.
    pub proxy: String,
    /// The internet stand-in with the echo origin.
    pub internet: String,
}

/// Everything a lab consists of.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Options it was planned with.
    pub options: LabOptions,
    /// The subnet pool (routed to the proxy's inside interface).
    pub pool: Ipv6Net,
    /// Fixed namespaces.
    pub infra: InfraNames,
    /// Pods, by (tenant, deployment, replica).
    pub pods: Vec<PodPlan>,
    /// Gateways, by scope.
    pub gateways: Vec<GatewayPlan>,
    /// Tenant egress, by tenant.
    pub egress: Vec<TenantEgress>,
    /// Where each policy endpoint lives.
    pub endpoints: BTreeMap<Endpoint, Vec<Ipv6Net>>,
    /// The complete nftables ruleset for the router.
    pub ruleset: String,
    /// The egress proxy's config.
    pub proxy_config: ProxyConfig,
}

fn host_net(addr: Ipv6Addr) -> Ipv6Net {
    Ipv6Net::from(addr)
}

/// Lays out `snapshot` as a lab whose nftables ruleset translates `policy`.
pub fn plan(snapshot: &Snapshot, policy: &Policy, options: &LabOptions) -> Result<Plan> {
    let prefix = options.prefix();
    let pool = snapshot.pool.cidr();
    let service = Ipv6Net::new(SERVICE_PREFIX, 48).map_err(|e| LabError::Plan(e.to_string()))?;
    if pool.contains(&service) || service.contains(&pool) {
        return Err(LabError::Plan(format!(
            "the pool {pool} overlaps the lab's service prefix {service}"
        )));
    }
    let total: u64 = snapshot
        .deployments
        .iter()
        .map(|d| u64::from(d.replicas.get()))
        .sum();
    if total > options.max_pods as u64 {
        return Err(LabError::Plan(format!(
            "{total} pods requested but the lab runs at most {}",
            options.max_pods
        )));
    }

    let mut endpoints: BTreeMap<Endpoint, Vec<Ipv6Net>> = BTreeMap::new();
    let mut pods = Vec::new();
    for d in &snapshot.deployments {
        endpoints
            .entry(Endpoint::deployment(&d.tenant, &d.name))
            .or_default()
            .push(d.subnet);
        let hosts = 1u128 << (128 - u32::from(d.subnet.prefix_len())).min(127);
        let ports: Vec<u16> = if d.ports.is_empty() {
            vec![DEFAULT_PORT]
        } else {
            d.ports.iter().map(|p| p.get()).collect()
        };
        for i in 0..d.replicas.get() {
            if u128::from(i) + 2 > hosts {
                return Err(LabError::Plan(format!(
                    "{}/{}: subnet {} has no room for replica {i}",
                    d.tenant, d.name, d.subnet
                )));
            }
            let netns = format!("{prefix}p.{}.{}.{i}", d.tenant, d.name);
            pods.push(PodPlan {
                name: format!("{}-{i}", d.name),
                tenant: d.tenant.to_string(),
                deployment: d.name.to_string(),
                image: d.image.as_str().to_string(),
                veth: veth_name(&netns),
                netns,
                addr: Ipv6Addr::from(u128::from(d.subnet.network()) + u128::from(i) + 1),
                ports: ports.clone(),
                runtime: options.runtime,
                workload: d.workload.clone(),
            });
        }
    }

    let mut gateways = Vec::new();
    let gw_base = Ipv6Addr::from(u128::from(SERVICE_PREFIX) | (1u128 << 64));
    for g in &snapshot.gateways {
        if g.scope
            .tenant()
            .is_some_and(|t| snapshot.tenant(t).is_none())
        {
            continue;
        }
        let label = gateway_label(&g.scope);
        let netns = format!("{prefix}g.{}", label.replace('/', "."));
        let addr = with_low32(gw_base, hash32(&label));
        let routes = snapshot
            .deployments
            .iter()
            .filter(|d| g.scope.fronts(&d.tenant, &d.name))
            .map(|d| {
                let port = d.ports.first().map_or(DEFAULT_PORT, |p| p.get());
                GatewayRoute {
                    host: format!("{}.{}", d.name, d.tenant),
                    target: format!("{}/{}", d.tenant, d.name),
                    backends: pods
                        .iter()
                        .filter(|p| {
                            p.tenant == d.tenant.as_str() && p.deployment == d.name.as_str()
                        })
                        .map(|p| SocketAddr::new(IpAddr::V6(p.addr), port))
                        .collect(),
                }
            })
            .collect();
        let scope = g.scope.clone();
        endpoints
            .entry(Endpoint::Gateway {
                scope: scope.clone(),
            })
            .or_default()
            .push(host_net(addr));
        gateways.push(GatewayPlan {
            display: format!("gateway/{label}"),
            veth: veth_name(&netns),
            netns,
            addr,
            routes,
            scope,
        });
    }

    let mut egress = Vec::new();
    for t in &snapshot.tenants {
        let fallback = with_low32(EGRESS_PREFIX, hash32(t.name.as_str()));
        let (ip, note) = match t.egress.ip {
            Some(IpAddr::V6(v6)) => (v6, None),
            Some(IpAddr::V4(v4)) => (
                fallback,
                Some(format!(
                    "stored egress IP {v4} is IPv4; the IPv6-only lab uses {fallback}"
                )),
            ),
            None => (fallback, None),
        };
        egress.push(TenantEgress {
            tenant: t.name.to_string(),
            mode: t.egress.mode,
            ip,
            note,
        });
        endpoints
            .entry(Endpoint::EgressProxy {
                tenant: t.name.clone(),
            })
            .or_default()
            .push(host_net(PROXY_ADDR));
    }
    endpoints
        .entry(Endpoint::Internet)
        .or_default()
        .push(host_net(ECHO_ADDR));

    let infra = InfraNames {
        router: format!("{prefix}router"),
        proxy: format!("{prefix}proxy"),
        internet: format!("{prefix}internet"),
    };
    let ruleset = crate::nft::ruleset(snapshot, policy, &endpoints, &gateways, &egress);
    let proxy_config = proxy_config(snapshot, &egress, options, pool, service)?;
    Ok(Plan {
        options: options.clone(),
        pool,
        infra,
        pods,
        gateways,
        egress,
        endpoints,
        ruleset,
        proxy_config,
    })
}

fn proxy_config(
    snapshot: &Snapshot,
    egress: &[TenantEgress],
    options: &LabOptions,
    pool: Ipv6Net,
    service: Ipv6Net,
) -> Result<ProxyConfig> {
    let mut config = ProxyConfig {
        // Every address of the proxy's namespace, both families: tenant
        // listeners bind where `listen` does, and a pod may reach its
        // tenant's port over IPv4 (the router's nftables decide who may).
        listen: SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            options.policy.proxy_port.get(),
        ),
        admin_listen: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9128),
        cluster_deny: vec![pool.into(), service.into()],
        reload_poll: HumanDuration(Duration::from_millis(500)),
        ..ProxyConfig::default()
    };
    for (t, e) in snapshot.tenants.iter().zip(egress) {
        config.tenants.push(TenantConfig {
            name: t
                .name
                .to_string()
                .try_into()
                .map_err(|e: String| LabError::Plan(e))?,
            // As `palisade proxy-config` does: the tenant's own port.
            listen_port: (t.proxy_port != 0).then_some(t.proxy_port),
            sources: snapshot
                .deployments_of(&t.name)
                .map(|d| SourcePrefix {
                    prefix: d.subnet.into(),
                    deployment: d.name.to_string(),
                })
                .collect(),
            egress: EgressConfig {
                ipv4: None,
                ipv6: Some(e.ip),
            },
            ..TenantConfig::default()
        });
    }
    Ok(config)
}

impl Plan {
    /// The pods of one deployment.
    pub fn pods_of<'a>(
        &'a self,
        tenant: &'a str,
        deployment: &'a str,
    ) -> impl Iterator<Item = &'a PodPlan> + 'a {
        self.pods
            .iter()
            .filter(move |p| p.tenant == tenant && p.deployment == deployment)
    }

    /// The egress of one tenant.
    pub fn egress_of(&self, tenant: &str) -> Option<&TenantEgress> {
        self.egress.iter().find(|e| e.tenant == tenant)
    }

    /// Every namespace the plan needs, infrastructure first.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out = vec![
            self.infra.router.clone(),
            self.infra.proxy.clone(),
            self.infra.internet.clone(),
        ];
        out.extend(self.gateways.iter().map(|g| g.netns.clone()));
        out.extend(self.pods.iter().map(|p| p.netns.clone()));
        out
    }
}
