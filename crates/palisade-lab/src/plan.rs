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

use crate::nft;
use crate::rendered::{self, RenderedDeployment};
use crate::{LabError, Result};
use ipnet::Ipv6Net;
use palisade_core::model::EgressMode;
use palisade_core::policy::{Endpoint, PolicyOptions, gateway_label};
use palisade_core::{GatewayScope, Snapshot};
use palisade_kube::eval::{
    self, AttachedRoute, EvalOptions, GatewayApi, Identity, PolicySet, Proto,
};
use palisade_proxy::compile::{self, CompileOptions};
use palisade_proxy::config::{HumanDuration, ProxyConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// Prefix of every namespace any lab creates.
pub const NAME_PREFIX: &str = "pl-";
pub use crate::nft::TABLE;
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
/// Cluster DNS's stand-in (`kube-system`, CoreDNS's labels).
pub const DNS_ADDR: Ipv6Addr = Ipv6Addr::new(0xfd70, 0x01ab, 0, 0, 0, 0, 0, 0x53);
/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// The API server's stand-in (`reserved:kube-apiserver`).
pub const APISERVER_ADDR: Ipv6Addr = Ipv6Addr::new(0xfd70, 0x01ab, 0, 0, 0, 0, 0, 0x443);
/// The port the API server stand-in serves on.
pub const APISERVER_PORT: u16 = 443;
/// Cloud metadata's IPv6 address (AWS IMDS, `palisade_kube::render::METADATA_V6`).
pub const METADATA_ADDR: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
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

/// One host → backends route of a gateway, from a rendered HTTPRoute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GatewayRoute {
    /// The HTTPRoute's host name, `<deployment>.<tenant>.<domain>` as
    /// rendered (the `Host` header), also served under the path prefix
    /// `/<tenant>/<deployment>/`.
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
    /// Cloud metadata's stand-in (an echo origin at [`METADATA_ADDR`]).
    #[serde(default)]
    pub metadata: String,
    /// The API server's stand-in (an echo origin at [`APISERVER_ADDR`]).
    #[serde(default)]
    pub apiserver: String,
    /// Cluster DNS's stand-in at [`DNS_ADDR`].
    #[serde(default)]
    pub dns: String,
}

impl InfraNames {
    fn new(prefix: &str) -> Self {
        Self {
            router: format!("{prefix}router"),
            proxy: format!("{prefix}proxy"),
            internet: format!("{prefix}internet"),
            metadata: format!("{prefix}metadata"),
            apiserver: format!("{prefix}apiserver"),
            dns: format!("{prefix}dns"),
        }
    }

    /// The stand-ins that run an echo origin: (namespace, address, port).
    pub fn echoes(&self) -> Vec<(&str, Ipv6Addr, u16)> {
        [
            (&self.internet, ECHO_ADDR, HTTP_PORT),
            (&self.metadata, METADATA_ADDR, HTTP_PORT),
            (&self.apiserver, APISERVER_ADDR, APISERVER_PORT),
            (&self.dns, DNS_ADDR, DNS_PORT),
        ]
        .into_iter()
        .filter(|(ns, _, _)| !ns.is_empty())
        .map(|(ns, a, p)| (ns.as_str(), a, p))
        .collect()
    }
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
    /// Every endpoint with its Cilium identity, as the ruleset knows them.
    pub lab_endpoints: Vec<LabEndpoint>,
    /// What the lab could not model in the rendered objects.
    pub notes: Vec<String>,
    /// What the cluster DNS stand-in answers for.
    pub dns_names: crate::dns::Names,
    /// The complete nftables ruleset for the router.
    pub ruleset: String,
    /// The egress proxy's config.
    pub proxy_config: ProxyConfig,
}

fn host_net(addr: Ipv6Addr) -> Ipv6Net {
    Ipv6Net::from(addr)
}

/// Lays out `snapshot` as a lab: pods from the rendered Deployments among
/// `objects`, the nftables ruleset from the rendered policies among them
/// (see [`crate::rendered`] and [`crate::nft`]).
pub fn plan(snapshot: &Snapshot, objects: &[Value], options: &LabOptions) -> Result<Plan> {
    let prefix = options.prefix();
    let (pool, service) = address_plan(snapshot)?;
    let deployments = rendered::deployments(objects)?;
    check_size(&deployments, options)?;
    let pods = pods(snapshot, &deployments, options)?;
    let mut unsupported = Vec::new();
    let api = GatewayApi::from_objects(objects, &mut unsupported);
    let gateways = gateways(snapshot, &api, &deployments, &pods, &prefix);
    let egress = egress(snapshot);
    let lab_endpoints = lab_endpoints(objects, &deployments, &gateways, &egress);
    let (snat, snat_notes) = snat(objects, &deployments, &egress)?;
    let (ruleset, mut notes) = rules(objects, &lab_endpoints, snat);
    notes.extend(unsupported.iter().map(ToString::to_string));
    notes.extend(snat_notes);
    let infra = InfraNames::new(&prefix);
    let dns_names = rendered::dns_names(objects, &deployments, |d| {
        pods.iter()
            .filter(|p| p.tenant == d.tenant && p.deployment == d.deployment)
            .map(|p| IpAddr::V6(p.addr))
            .collect()
    });
    let proxy_config = proxy_config(snapshot, &egress, options, pool, service)?;
    Ok(Plan {
        options: options.clone(),
        pool,
        infra,
        pods,
        gateways,
        egress,
        endpoints: model_endpoints(&lab_endpoints),
        lab_endpoints,
        notes,
        dns_names,
        ruleset,
        proxy_config,
    })
}

/// The pool, and the lab's service prefix, which must not overlap it.
fn address_plan(snapshot: &Snapshot) -> Result<(Ipv6Net, Ipv6Net)> {
    let pool = snapshot.pool.cidr();
    let service = Ipv6Net::new(SERVICE_PREFIX, 48).map_err(|e| LabError::Plan(e.to_string()))?;
    if pool.contains(&service) || service.contains(&pool) {
        return Err(LabError::Plan(format!(
            "the pool {pool} overlaps the lab's service prefix {service}"
        )));
    }
    Ok((pool, service))
}

fn check_size(deployments: &[RenderedDeployment], options: &LabOptions) -> Result<()> {
    let total: u64 = deployments.iter().map(|d| u64::from(d.replicas)).sum();
    if total > options.max_pods as u64 {
        return Err(LabError::Plan(format!(
            "{total} pods requested but the lab runs at most {}",
            options.max_pods
        )));
    }
    Ok(())
}

/// The TCP ports the stand-in workload serves: the container ports, 80 when
/// there are none.
fn served_ports(d: &RenderedDeployment) -> Vec<u16> {
    let ports: Vec<u16> = d
        .ports
        .iter()
        .filter(|p| p.proto == Proto::Tcp)
        .map(|p| p.port)
        .collect();
    if ports.is_empty() {
        vec![DEFAULT_PORT]
    } else {
        ports
    }
}

/// One pod per replica of every rendered Deployment; replica *n* gets
/// address *n+1* of its pool.
fn pods(
    snapshot: &Snapshot,
    deployments: &[RenderedDeployment],
    options: &LabOptions,
) -> Result<Vec<PodPlan>> {
    let prefix = options.prefix();
    let mut out = Vec::new();
    for d in deployments {
        let hosts = 1u128 << (128 - u32::from(d.subnet.prefix_len())).min(127);
        let workload = snapshot
            .deployments
            .iter()
            .find(|s| s.tenant.as_str() == d.tenant && s.name.as_str() == d.deployment)
            .map(|s| s.workload.clone())
            .unwrap_or_default();
        for i in 0..d.replicas {
            if u128::from(i) + 2 > hosts {
                return Err(LabError::Plan(format!(
                    "{}/{}: subnet {} has no room for replica {i}",
                    d.tenant, d.deployment, d.subnet
                )));
            }
            let netns = format!("{prefix}p.{}.{}.{i}", d.tenant, d.deployment);
            out.push(PodPlan {
                name: format!("{}-{i}", d.deployment),
                tenant: d.tenant.clone(),
                deployment: d.deployment.clone(),
                image: d.image.clone(),
                veth: veth_name(&netns),
                netns,
                addr: Ipv6Addr::from(u128::from(d.subnet.network()) + u128::from(i) + 1),
                ports: served_ports(d),
                runtime: options.runtime,
                workload: workload.clone(),
            });
        }
    }
    Ok(out)
}

/// One namespace per gateway of the store, serving what the rendered
/// HTTPRoutes attached to its Gateway object send to (see
/// [`gateway_routes`]).
fn gateways(
    snapshot: &Snapshot,
    api: &GatewayApi,
    deployments: &[RenderedDeployment],
    pods: &[PodPlan],
    prefix: &str,
) -> Vec<GatewayPlan> {
    let gw_base = Ipv6Addr::from(u128::from(SERVICE_PREFIX) | (1u128 << 64));
    let options = rendered::render_options();
    let mut out = Vec::new();
    for g in &snapshot.gateways {
        if g.scope
            .tenant()
            .is_some_and(|t| snapshot.tenant(t).is_none())
        {
            continue;
        }
        let label = gateway_label(&g.scope);
        let netns = format!("{prefix}g.{}", label.replace('/', "."));
        let (name, ns) = palisade_kube::render::gateway_object(&g.scope, &options);
        out.push(GatewayPlan {
            display: format!("gateway/{label}"),
            veth: veth_name(&netns),
            netns,
            addr: with_low32(gw_base, hash32(&label)),
            routes: gateway_routes(&api.attached(&ns, &name), deployments, pods),
            scope: g.scope.clone(),
        });
    }
    out
}

/// The routes a gateway's Envoy would serve: for every HTTPRoute attached
/// to its Gateway ([`GatewayApi::attached`]: parentRef, `allowedRoutes`,
/// host names, ReferenceGrants) and each of its host names, the pods of
/// the deployments its backends' Services select, on the Service's target
/// port. A route whose backends select no deployment serves nothing.
fn gateway_routes(
    attached: &[AttachedRoute],
    deployments: &[RenderedDeployment],
    pods: &[PodPlan],
) -> Vec<GatewayRoute> {
    let mut out = Vec::new();
    for route in attached {
        for b in &route.backends {
            for d in deployments
                .iter()
                .filter(|d| b.selects(&d.namespace, &d.labels))
            {
                let Some(port) = b.port_on(&d.ports) else {
                    continue;
                };
                let backends: Vec<SocketAddr> = pods
                    .iter()
                    .filter(|p| p.tenant == d.tenant && p.deployment == d.deployment)
                    .map(|p| SocketAddr::new(IpAddr::V6(p.addr), port))
                    .collect();
                out.extend(route.hostnames.iter().map(|host| GatewayRoute {
                    host: host.clone(),
                    target: format!("{}/{}", d.tenant, d.deployment),
                    backends: backends.clone(),
                }));
            }
        }
    }
    out
}

/// Each tenant's egress address: its stored IPv6 one, else one derived
/// from its name (the lab is IPv6-only).
fn egress(snapshot: &Snapshot) -> Vec<TenantEgress> {
    snapshot
        .tenants
        .iter()
        .map(|t| {
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
            TenantEgress {
                tenant: t.name.to_string(),
                mode: t.egress.mode,
                ip,
                note,
            }
        })
        .collect()
}

/// Something in the lab with an address and the identity Cilium would
/// give it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabEndpoint {
    /// `acme/api`, `gateway/central`, `egress-proxy`, `internet`, ...
    pub name: String,
    /// The policy model's endpoints it stands for.
    pub model: Vec<Endpoint>,
    /// Its addresses.
    pub nets: Vec<Ipv6Net>,
    /// Its Cilium identity.
    pub identity: eval::Endpoint,
}

fn world(name: &str, addr: Ipv6Addr) -> eval::Endpoint {
    let mut ep = eval::Endpoint::reserved(name, Identity::World);
    ep.addresses = vec![IpAddr::V6(addr)];
    ep
}

/// Every lab endpoint: the rendered deployments' pods, and stand-ins with
/// the identities Cilium gives their counterparts — gateways are Cilium's
/// Envoy (`ingress`, docs "Layer 3 Examples": "the Cilium Envoy instance
/// which handles ingress L7 traffic"), the proxy a host-network pod on an
/// egress node (`remote-node` with the node's labels, docs "Node based"),
/// the echo origin and cloud metadata the `world` (docs "IP/CIDR based"),
/// the API server `kube-apiserver`, cluster DNS a `kube-system` pod.
fn lab_endpoints(
    objects: &[Value],
    deployments: &[RenderedDeployment],
    gateways: &[GatewayPlan],
    egress: &[TenantEgress],
) -> Vec<LabEndpoint> {
    let ns_labels = rendered::namespace_labels(objects);
    let mut out: Vec<LabEndpoint> = deployments
        .iter()
        .map(|d| LabEndpoint {
            name: format!("{}/{}", d.tenant, d.deployment),
            model: model_deployment(d).into_iter().collect(),
            nets: vec![d.subnet],
            identity: d.identity(&ns_labels),
        })
        .collect();
    out.extend(gateways.iter().map(|g| LabEndpoint {
        name: g.display.clone(),
        model: vec![Endpoint::Gateway {
            scope: g.scope.clone(),
        }],
        nets: vec![host_net(g.addr)],
        identity: eval::Endpoint::reserved(&g.display, Identity::Ingress),
    }));
    out.extend(stand_ins(objects, egress));
    out
}

fn model_deployment(d: &RenderedDeployment) -> Option<Endpoint> {
    Some(Endpoint::deployment(
        &d.tenant.parse().ok()?,
        &d.deployment.parse().ok()?,
    ))
}

fn stand_ins(objects: &[Value], egress: &[TenantEgress]) -> Vec<LabEndpoint> {
    let node_labels = rendered::egress_node_labels(objects, &rendered::render_options());
    let mut proxy_nets: Vec<Ipv6Net> = vec![host_net(PROXY_ADDR)];
    proxy_nets.extend(egress.iter().map(|e| host_net(e.ip)));
    proxy_nets.sort_unstable();
    proxy_nets.dedup();
    let proxy_models = egress
        .iter()
        .filter(|e| e.mode == EgressMode::Proxy)
        .filter_map(|e| e.tenant.parse().ok())
        .map(|tenant| Endpoint::EgressProxy { tenant })
        .collect();
    let node = Identity::Node {
        labels: node_labels,
        local: false,
    };
    let mut dns = rendered::dns_identity();
    dns.addresses = vec![IpAddr::V6(DNS_ADDR)];
    let ep = |name: &str, model: Vec<Endpoint>, addr: Ipv6Addr, identity| LabEndpoint {
        name: name.into(),
        model,
        nets: vec![host_net(addr)],
        identity,
    };
    vec![
        LabEndpoint {
            name: "egress-proxy".into(),
            model: proxy_models,
            nets: proxy_nets,
            identity: eval::Endpoint::reserved("egress-proxy", node),
        },
        ep(
            "internet",
            vec![Endpoint::Internet],
            ECHO_ADDR,
            world("internet", ECHO_ADDR),
        ),
        ep(
            "metadata",
            Vec::new(),
            METADATA_ADDR,
            world("metadata", METADATA_ADDR),
        ),
        ep(
            "kube-apiserver",
            Vec::new(),
            APISERVER_ADDR,
            eval::Endpoint::reserved("kube-apiserver", Identity::KubeApiServer),
        ),
        ep("cluster-dns", vec![Endpoint::ClusterDns], DNS_ADDR, dns),
    ]
}

/// Where each model endpoint lives (for `lab status` and tooling).
fn model_endpoints(eps: &[LabEndpoint]) -> BTreeMap<Endpoint, Vec<Ipv6Net>> {
    let mut out: BTreeMap<Endpoint, Vec<Ipv6Net>> = BTreeMap::new();
    for e in eps {
        for m in &e.model {
            out.entry(m.clone()).or_default().extend(&e.nets);
        }
    }
    out
}

/// Agent settings as the lab's cluster would have them: the charts'
/// defaults, with node labels on when the proxy runs on egress nodes
/// (`palisade_kube::cluster` turns `nodeSelectorLabels` on exactly then).
fn eval_options() -> EvalOptions {
    let mut o = EvalOptions::default();
    o.identity.node_selector_labels = rendered::render_options().proxy.in_cluster.is_some();
    o
}

/// The ruleset compiled from the rendered policies, and what the lab could
/// not model in them.
fn rules(objects: &[Value], eps: &[LabEndpoint], snat: Snat) -> (String, Vec<String>) {
    let (set, unsupported) = PolicySet::from_objects_with(objects, eval_options());
    let identities: Vec<eval::Endpoint> = eps.iter().map(|e| e.identity.clone()).collect();
    let compiled = set.compile(&identities);
    let mut notes: Vec<String> = unsupported.iter().map(ToString::to_string).collect();
    notes.extend(compiled.icmp_entries.iter().map(|(o, section, i)| {
        format!("{o} {section}[{i}].icmps: the lab compiles no ICMP rules")
    }));
    notes.push(format!(
        "{}: IPv4 addresses are not in the IPv6-only lab; only {METADATA_ADDR} stands for cloud metadata",
        palisade_kube::render::METADATA_V4
    ));
    let input = nft::TableInput {
        endpoints: eps
            .iter()
            .map(|e| nft::NftEndpoint {
                name: &e.name,
                nets: &e.nets,
            })
            .collect(),
        compiled: &compiled,
        world: eps
            .iter()
            .filter(|e| e.identity.identity == Identity::World)
            .flat_map(|e| e.nets.iter().copied())
            .collect(),
        snat,
    };
    (nft::ruleset(&input), notes)
}

/// The SNAT of the rendered `CiliumEgressGatewayPolicy` objects: the
/// subnet of every deployment a policy selects, to the policy's
/// `egressIP` when it is IPv6, else to the lab's egress address of the
/// tenant the policy is labelled with (the rendered policies carry no
/// address: the lab's are IPv6, which Cilium's egress gateway does not
/// take, and without `egressIP` Cilium uses the gateway node's own
/// address, which the lab's proxy namespace plays). Cilium applies a
/// policy to traffic towards its `destinationCIDRs` that leaves the
/// cluster ("Egress Gateway", Cilium 1.17/1.18 docs); the lab models
/// policies towards every address (`0.0.0.0/0` stands for the IPv6-only
/// lab's world), and notes the others as not modelled.
/// SNAT entries: pod subnet → egress address.
type Snat = Vec<(Ipv6Net, Ipv6Addr)>;

fn snat(
    objects: &[Value],
    deployments: &[RenderedDeployment],
    egress: &[TenantEgress],
) -> Result<(Snat, Vec<String>)> {
    let ns_labels = rendered::namespace_labels(objects);
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for p in rendered::egress_gateway_policies(objects)? {
        let object = format!("CiliumEgressGatewayPolicy {}", p.name);
        if !p.to_everywhere() {
            notes.push(format!(
                "{object}: destinationCIDRs {:?}: the lab SNATs only policies towards every address",
                p.destination_cidrs
            ));
            continue;
        }
        let tenant_ip = || {
            let t = p.tenant.as_deref()?;
            egress.iter().find(|e| e.tenant == t).map(|e| e.ip)
        };
        let ip = match p.egress_ip {
            Some(IpAddr::V6(ip)) => ip,
            _ => match tenant_ip() {
                Some(ip) => ip,
                None => {
                    notes.push(format!("{object}: no IPv6 egressIP and no tenant label"));
                    continue;
                }
            },
        };
        let empty = BTreeMap::new();
        out.extend(
            deployments
                .iter()
                .filter(|d| p.selects(d, ns_labels.get(&d.namespace).unwrap_or(&empty)))
                .map(|d| (d.subnet, ip)),
        );
    }
    out.sort_unstable();
    out.dedup_by_key(|(net, _)| *net);
    Ok((out, notes))
}

/// The proxy's config: [`palisade_proxy::compile::config`], as `palisade
/// proxy-config` compiles it, with the lab's listeners and each tenant
/// leaving from its lab egress address (one of the proxy's namespace).
fn proxy_config(
    snapshot: &Snapshot,
    egress: &[TenantEgress],
    options: &LabOptions,
    pool: Ipv6Net,
    service: Ipv6Net,
) -> Result<ProxyConfig> {
    let base = ProxyConfig {
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
    let egress = snapshot
        .tenants
        .iter()
        .zip(egress)
        .map(|(t, e)| (t.name.clone(), compile::egress([IpAddr::V6(e.ip)])))
        .collect();
    let options = CompileOptions {
        base,
        egress,
        ..CompileOptions::default()
    };
    Ok(compile::config(snapshot, &options)?)
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
            self.infra.metadata.clone(),
            self.infra.apiserver.clone(),
            self.infra.dns.clone(),
        ];
        out.extend(self.gateways.iter().map(|g| g.netns.clone()));
        out.extend(self.pods.iter().map(|p| p.netns.clone()));
        out
    }
}
