//! From a [`Snapshot`] to Kubernetes objects.
//!
//! Output is grouped the way it is stored and deleted: platform objects,
//! then per tenant its own objects and per deployment the deployment's.
//! Deleting a deployment must remove exactly its group, so every object
//! whose lifetime is the deployment's (its IP pool, policy, routes) lives in
//! the deployment's group, and nothing in another group names it except
//! through the policy model (an allow rule towards it).
//!
//! Network policies are not decided here: [`Policy`] decides, and this
//! module only translates each rule into Cilium or Kubernetes syntax, so
//! the cluster enforces what the lab and the dashboard show.

use crate::Error;
use crate::common::{
    Labels, PodTemplate, cpu_memory, deployment, labels, match_labels, meta, no_schedule,
    non_empty, pod_spec, q, resources, service_account, service_port, tcp_port,
};
use crate::crds::{
    AllowedRoutes, BackendRef, CiliumEgressGatewayPolicy, CiliumEgressGatewayPolicySpec,
    CiliumNetworkPolicy, CiliumNetworkPolicySpec, CiliumPodIPPool, CiliumPodIPPoolSpec,
    EgressDenyRule, EgressGateway, EgressRule, EgressSelector, Gateway as GatewayObj, GatewaySpec,
    HTTPRoute, HTTPRouteRule, HTTPRouteSpec, IngressRule, IpPoolFamily, Listener, ParentRef,
    PortProtocol, PortRule, RouteNamespaces, Selector, SelectorRequirement,
};
use crate::object::Object;
use crate::options::{RenderOptions, Resources};
use k8s_openapi::api::apps::v1::Deployment as K8sDeployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, Container, EnvVar, EnvVarSource, LimitRange, LimitRangeItem,
    LimitRangeSpec, Namespace, PodSpec, ResourceQuota, ResourceQuotaSpec, Service, ServiceSpec,
    Toleration, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::node::v1::{RuntimeClass, Scheduling};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use palisade_core::policy::{Endpoint, Ports, Reason, Rule};
use palisade_core::{
    Deployment, DeploymentName, EgressMode, GatewayScope, Policy, PolicyOptions, Snapshot, Tenant,
    TenantName,
};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::net::IpAddr;

mod admission;
mod egress_check;
mod workload;

pub use admission::RESERVED_KEYS_POLICY;

pub use crate::common::MANAGED_BY;
/// Label naming the tenant.
pub const TENANT_LABEL: &str = "palisade.io/tenant";
/// Label naming the deployment; the policy selectors use it because users
/// cannot set `palisade.io/` labels.
pub const DEPLOYMENT_LABEL: &str = "palisade.io/deployment";
/// Pod annotation choosing the Cilium IP pool of the IPv6 family only.
///
/// The family-less `ipam.cilium.io/ip-pool` would apply to IPv4 as well,
/// and the per-deployment pools hold no IPv4 range, so IPv4 allocation
/// would fail. Cilium reads `ipam.cilium.io/ipv6-pool` for IPv6 first and
/// falls back to `ip-pool`, then to the namespace, then to the `default`
/// pool, per family (`pkg/annotation/k8s.go` `IPAMIPv6PoolKey` and
/// `pkg/ipam/metadata/manager.go` in Cilium 1.17/1.18; documented in
/// "Multi-Pool IPAM": "You can specify different pools for IPv4 and IPv6
/// using the ipam.cilium.io/ipv4-pool and ipam.cilium.io/ipv6-pool
/// annotations"). IPv4 therefore comes from the `default` pool.
pub const IP_POOL_ANNOTATION: &str = "ipam.cilium.io/ipv6-pool";
/// Taint key of dedicated node pools (`palisade.io/tenant=<t>:NoSchedule`).
pub const NODE_POOL_TAINT: &str = "palisade.io/tenant";
/// Node label of dedicated node pools (`node-pool=<pool>`).
pub const NODE_POOL_LABEL: &str = "node-pool";
/// The cloud instance-metadata service (IMDS on AWS, also GCP and Azure):
/// node credentials live there, so no tenant may reach it.
pub const METADATA_V4: &str = "169.254.169.254/32";
/// IMDS over IPv6 on AWS Nitro instances.
pub const METADATA_V6: &str = "fd00:ec2::254/128";
/// The EKS Pod Identity agent on every node, over IPv4 and IPv6.
pub const POD_IDENTITY_AGENT: [&str; 2] = ["169.254.170.23/32", "fd00:ec2::23/128"];

/// Name of each tenant's egress ConfigMap.
pub const EGRESS_CONFIG: &str = "egress-proxy";
/// Name of each tenant's ServiceAccount, Role and RoleBinding.
pub const WORKLOAD_SA: &str = "workload";

/// Everything rendered for one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Cluster-wide objects: the runtime class, the central gateway.
    pub platform: Vec<Object>,
    /// Per tenant, sorted by name.
    pub tenants: Vec<TenantObjects>,
}

/// One tenant's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantObjects {
    /// The tenant.
    pub tenant: TenantName,
    /// Namespace, quota, RBAC, tenant-wide policies, tenant gateways.
    pub objects: Vec<Object>,
    /// The egress ConfigMap (proxy mode only). Kept apart because the
    /// GitOps tree turns it into a `configMapGenerator` that overlays
    /// replace.
    pub egress_config: Option<Object>,
    /// The tenant's egress-proxy port (proxy mode only).
    pub proxy_port: Option<u16>,
    /// Per deployment, sorted by name.
    pub deployments: Vec<DeploymentObjects>,
}

/// One deployment's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentObjects {
    /// The deployment.
    pub name: DeploymentName,
    /// IP pool, Deployment, Service, policies, routes.
    pub objects: Vec<Object>,
}

impl Rendered {
    /// Every object in a stable order: platform, then each tenant's own
    /// objects (ConfigMap included) followed by its deployments'.
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.platform
            .iter()
            .chain(self.tenants.iter().flat_map(|t| {
                t.objects
                    .iter()
                    .chain(t.egress_config.iter())
                    .chain(t.deployments.iter().flat_map(|d| d.objects.iter()))
            }))
    }
}

/// Renders `snapshot`. Tenants are rendered in parallel; the output order
/// does not depend on scheduling.
pub fn render(snapshot: &Snapshot, options: &RenderOptions) -> Result<Rendered, Error> {
    let r = Renderer::new(snapshot, options);
    Ok(Rendered {
        platform: r.platform()?,
        tenants: r.map_tenants(Ok)?,
    })
}

/// A snapshot prepared for rendering: sorted, with its policy compiled.
/// [`Renderer::map_tenants`] hands each tenant's objects to a callback and
/// drops them, so a large tree is written without holding it in memory.
#[derive(Debug)]
pub struct Renderer {
    snapshot: Snapshot,
    options: RenderOptions,
    /// The options as fingerprinted: without the proxy's config, which
    /// changes with every deployment but shapes no tenant's objects.
    options_key: String,
    policy: Policy,
    gateways: GatewayIndex,
}

/// Which gateways can concern a tenant, as indices into the sorted
/// snapshot's gateways: scanning every gateway for every deployment is
/// quadratic when each of 10,000 tenants has one.
#[derive(Debug, Default)]
struct GatewayIndex {
    central: Vec<usize>,
    by_tenant: BTreeMap<TenantName, Vec<usize>>,
}

impl Renderer {
    /// Sorts `snapshot` and compiles its policy.
    pub fn new(snapshot: &Snapshot, options: &RenderOptions) -> Self {
        // Stores promise sorted lists, but output bytes must not depend on it.
        let mut sorted = snapshot.clone();
        sorted.tenants.sort_by(|a, b| a.name.cmp(&b.name));
        sorted
            .deployments
            .sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
        sorted.gateways.sort_by(|a, b| a.scope.cmp(&b.scope));
        sorted.allow_rules.sort();
        let policy = Policy::compile_with(&sorted, &policy_options(options));
        let mut gateways = GatewayIndex::default();
        for (i, g) in sorted.gateways.iter().enumerate() {
            match g.scope.tenant() {
                None => gateways.central.push(i),
                Some(t) => gateways.by_tenant.entry(t.clone()).or_default().push(i),
            }
        }
        let mut keyed = options.clone();
        if let Some(p) = &mut keyed.proxy.in_cluster {
            p.config.clear();
        }
        Self {
            snapshot: sorted,
            options: options.clone(),
            options_key: format!("{keyed:?}"),
            policy,
            gateways,
        }
    }

    fn cx(&self) -> Cx<'_> {
        Cx {
            snapshot: &self.snapshot,
            options: &self.options,
            options_key: &self.options_key,
            policy: &self.policy,
            gateways: &self.gateways,
        }
    }

    /// The cluster-wide objects.
    pub fn platform(&self) -> Result<Vec<Object>, Error> {
        self.cx().platform()
    }

    /// Renders every tenant in parallel and maps its objects through `f`;
    /// results come back in tenant-name order.
    pub fn map_tenants<R, F>(&self, f: F) -> Result<Vec<R>, Error>
    where
        R: Send,
        F: Fn(TenantObjects) -> Result<R, Error> + Sync,
    {
        self.map_tenant_inputs(|t| f(t.render()?))
    }

    /// Hands every tenant's inputs to `f` in parallel, before rendering, so
    /// a caller can skip tenants whose [`TenantInput::fingerprint`] it has
    /// seen; results come back in tenant-name order.
    pub fn map_tenant_inputs<R, F>(&self, f: F) -> Result<Vec<R>, Error>
    where
        R: Send,
        F: Fn(TenantInput<'_>) -> Result<R, Error> + Sync,
    {
        let deps = &self.snapshot.deployments;
        self.snapshot
            .tenants
            .par_iter()
            .map(|t| {
                // Deployments are sorted by (tenant, name): one slice each.
                let lo = deps.partition_point(|d| d.tenant < t.name);
                let hi = deps.partition_point(|d| d.tenant <= t.name);
                f(TenantInput {
                    cx: self.cx(),
                    tenant: t,
                    deployments: deps[lo..hi].iter().collect(),
                })
            })
            .collect()
    }
}

/// How the renderer asks the policy model: each tenant reaches the proxy on
/// its own listener port (`Tenant::proxy_port`), which Palisade's proxy
/// knows it by on every topology (docs/proxy.md, "Who is calling").
fn policy_options(options: &RenderOptions) -> PolicyOptions {
    PolicyOptions {
        proxy_port: options.proxy.port,
        tenant_ports: true,
    }
}

/// The port `t` reaches the egress proxy on, if its egress goes through it.
pub fn tenant_proxy_port(t: &Tenant, options: &RenderOptions) -> Option<u16> {
    (t.egress.mode == EgressMode::Proxy)
        .then(|| palisade_core::policy::proxy_port_of(t, &policy_options(options)).get())
}

/// Bumped whenever rendering changes, so fingerprints taken by an older
/// Palisade never match.
const RENDER_FORMAT: &str = concat!("palisade-kube ", env!("CARGO_PKG_VERSION"), " format 2");

/// One tenant, ready to render.
#[derive(Debug)]
pub struct TenantInput<'a> {
    cx: Cx<'a>,
    tenant: &'a Tenant,
    deployments: Vec<&'a Deployment>,
}

impl TenantInput<'_> {
    /// The tenant.
    pub fn name(&self) -> &TenantName {
        &self.tenant.name
    }

    /// The port the tenant reaches the egress proxy on, if its egress goes
    /// through the proxy (and so it has an egress ConfigMap).
    pub fn proxy_port(&self) -> Option<u16> {
        tenant_proxy_port(self.tenant, self.cx.options)
    }

    /// A digest of everything the tenant's objects are rendered from: the
    /// options, the tenant, its deployments, the gateways that may front
    /// them and every policy rule to or from its endpoints. Equal
    /// fingerprints mean byte-identical output, so an unchanged tenant
    /// need not be rendered again.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(RENDER_FORMAT);
        h.update(self.cx.options_key);
        feed(&mut h, &self.tenant);
        let mut endpoints = vec![Endpoint::EgressProxy {
            tenant: self.tenant.name.clone(),
        }];
        for d in &self.deployments {
            feed(&mut h, d);
            endpoints.push(Endpoint::deployment(&d.tenant, &d.name));
        }
        for g in self.cx.gateways_of(&self.tenant.name) {
            feed(&mut h, &g.scope);
            if g.scope.tenant().is_some() {
                endpoints.push(Endpoint::Gateway {
                    scope: g.scope.clone(),
                });
            }
        }
        for e in &endpoints {
            for r in self
                .cx
                .policy
                .rules_to(e)
                .chain(self.cx.policy.rules_from(e))
            {
                feed(&mut h, r);
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The tenant's objects.
    pub fn render(&self) -> Result<TenantObjects, Error> {
        self.cx.tenant(self.tenant, &self.deployments)
    }
}

/// Adds `value`'s JSON and a separator to a fingerprint. Serialising
/// model values cannot fail (no maps with non-string keys); if it did, the
/// digest would only differ, which costs a re-render.
fn feed<T: serde::Serialize>(h: &mut sha2::Sha256, value: &T) {
    use sha2::Digest;
    let _ = serde_json::to_writer(&mut *h, value);
    h.update([0u8]);
}

/// Shared read-only inputs.
#[derive(Debug, Clone, Copy)]
struct Cx<'a> {
    snapshot: &'a Snapshot,
    options: &'a RenderOptions,
    options_key: &'a str,
    policy: &'a Policy,
    gateways: &'a GatewayIndex,
}

/// The labels of every object of tenant `t`.
fn tenant_labels(t: &TenantName) -> Labels {
    labels([MANAGED_BY, (TENANT_LABEL, t.as_str())])
}

/// The `CiliumPodIPPool` name of a deployment: unique cluster-wide because
/// neither name may contain a dot.
pub fn pool_name(tenant: &TenantName, deployment: &DeploymentName) -> String {
    format!("{tenant}.{deployment}")
}

/// The Service name of a deployment: Service names must start with a
/// letter (DNS-1035), deployment names need not.
pub fn service_name(deployment: &DeploymentName) -> Result<String, Error> {
    let name = deployment.as_str();
    if name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Ok(name.to_owned());
    }
    let prefixed = format!("svc-{name}");
    if prefixed.len() > 63 {
        return Err(Error::Unrepresentable {
            what: format!("deployment {name}"),
            reason: "a Service name must start with a letter and the prefixed name \
                     svc-<name> exceeds 63 characters; rename the deployment"
                .into(),
        });
    }
    Ok(prefixed)
}

/// The object name of a gateway and its namespace.
///
/// Every gateway lives in the platform's gateway namespace, which tenants
/// cannot write: where an implementation runs gateway pods there, policies
/// select them by that namespace plus the standard
/// `gateway.networking.k8s.io/gateway-name` label (GEP-1762), and no pod a
/// tenant creates in its own namespace can match. The name is a label
/// value, so it is kept to 63 characters.
pub fn gateway_object(scope: &GatewayScope, options: &RenderOptions) -> (String, String) {
    let name = match scope {
        GatewayScope::Central => "central".to_owned(),
        GatewayScope::PerTenant { tenant } => bounded_name(&format!("tenant-{tenant}")),
        GatewayScope::PerDeployment { tenant, deployment } => {
            bounded_name(&format!("deployment-{tenant}-{deployment}"))
        }
    };
    (name, options.gateway_namespace.clone())
}

/// `name` if it fits a label value (63 characters), else its first 54
/// characters and 8 hex digits of its SHA-256, so distinct long names stay
/// distinct.
fn bounded_name(name: &str) -> String {
    use sha2::{Digest, Sha256};
    if name.len() <= 63 {
        return name.to_owned();
    }
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", name[..54].trim_end_matches('-'))
}

/// The label implementations put on what they generate for a gateway,
/// its pods among it (GEP-1762, "In Cluster Gateway Deployments").
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The host name a deployment is served under on every gateway.
fn route_host(tenant: &TenantName, deployment: &DeploymentName, domain: &str) -> String {
    format!("{deployment}.{tenant}.{domain}")
}

/// Selects the namespace `ns` by the label Kubernetes sets on every
/// namespace, which nobody can change.
fn namespace_selector(ns: &str) -> Selector {
    Selector::labels([("kubernetes.io/metadata.name", ns)])
}

/// The policy-object name of a deployment; the prefix keeps it apart from
/// the tenant-wide `default-deny`.
fn policy_name(d: &DeploymentName) -> String {
    format!("deployment-{d}")
}

fn cilium_ports(ports: &Ports) -> Vec<PortRule> {
    match ports {
        Ports::Any => Vec::new(),
        Ports::Only(set) => vec![PortRule {
            ports: set
                .iter()
                .map(|p| PortProtocol {
                    port: p.port.to_string(),
                    protocol: p.protocol.as_k8s().into(),
                })
                .collect(),
        }],
    }
}

fn k8s_ports(ports: &Ports) -> Option<Vec<NetworkPolicyPort>> {
    match ports {
        Ports::Any => None,
        Ports::Only(set) => Some(
            set.iter()
                .map(|p| NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(p.port.get()))),
                    protocol: Some(p.protocol.as_k8s().into()),
                    ..NetworkPolicyPort::default()
                })
                .collect(),
        ),
    }
}

fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// The pods one policy object is about.
struct PolicyTarget<'a> {
    /// Their endpoint in the policy model.
    me: &'a Endpoint,
    /// Pods that only borrow `me`'s identity towards the egress proxy (the
    /// egress-check demo): they get `me`'s egress to the proxy, DNS or
    /// egress gateway, and nothing else. The value names them.
    egress_only: Option<&'a str>,
    /// The policy object's name.
    name: &'a str,
    /// Their namespace.
    ns: &'a str,
    /// Labels selecting them.
    selector: BTreeMap<String, String>,
    /// Labels of the policy object.
    labels: &'a BTreeMap<String, String>,
}

/// How an endpoint is addressed in a policy.
enum Peer {
    /// Pods by labels in a namespace (`None`: the policy's own namespace).
    Pods {
        namespace: Option<String>,
        labels: BTreeMap<String, String>,
    },
    /// Addresses outside the cluster.
    Cidr(String),
    /// Nodes by labels: the host-network egress proxy.
    Nodes(BTreeMap<String, String>),
    /// A gateway: with Cilium's own implementation the node's Envoy, whose
    /// traffic carries the reserved `ingress` identity; with any other
    /// implementation its pods in the gateway namespace.
    Gateway {
        namespace: String,
        labels: BTreeMap<String, String>,
    },
    /// Anything outside the cluster.
    World,
}

impl Cx<'_> {
    /// The gateways that may concern `tenant` (central ones and its own),
    /// in the snapshot's sorted order.
    fn gateways_of(&self, tenant: &TenantName) -> impl Iterator<Item = &palisade_core::Gateway> {
        let own = self
            .gateways
            .by_tenant
            .get(tenant)
            .map_or(&[][..], Vec::as_slice);
        // Central scopes sort first, so this keeps the snapshot's order.
        self.gateways
            .central
            .iter()
            .chain(own)
            .map(|&i| &self.snapshot.gateways[i])
    }

    fn peer(&self, ep: &Endpoint, own_ns: &str) -> Peer {
        let opts = self.options;
        match ep {
            Endpoint::Deployment { tenant, deployment } => {
                let ns = tenant.namespace();
                Peer::Pods {
                    namespace: (ns != own_ns).then_some(ns),
                    labels: labels([(DEPLOYMENT_LABEL, deployment.as_str())]),
                }
            }
            Endpoint::Gateway { scope } => {
                let (name, namespace) = gateway_object(scope, opts);
                Peer::Gateway {
                    namespace,
                    labels: labels([(GATEWAY_NAME_LABEL, name.as_str())]),
                }
            }
            Endpoint::EgressProxy { .. } => match (opts.proxy.ip(), &opts.proxy.in_cluster) {
                (Some(ip), _) => Peer::Cidr(host_cidr(ip)),
                (None, Some(p)) => {
                    Peer::Nodes(labels([(p.node_label.0.as_str(), p.node_label.1.as_str())]))
                }
                (None, None) => Peer::Pods {
                    namespace: Some(opts.proxy.namespace.clone()),
                    labels: labels([("app.kubernetes.io/name", opts.proxy.app.as_str())]),
                },
            },
            Endpoint::ClusterDns => Peer::Pods {
                namespace: Some("kube-system".into()),
                labels: labels([("k8s-app", "kube-dns")]),
            },
            Endpoint::Internet => Peer::World,
        }
    }

    /// What deployment `d` reaches without the proxy, for its `NO_PROXY`:
    /// the pool its peers' addresses come from (for clients that read
    /// CIDRs) and the short and namespace-qualified Service names of every
    /// deployment it may call. The platform list already covers the fully
    /// qualified names (`.svc`, `.cluster.local`); without the short ones
    /// `http://api-backend:3000` goes to the proxy, which refuses it.
    fn direct_peers(&self, d: &Deployment) -> Result<Vec<String>, Error> {
        let mut out = vec![self.snapshot.pool.cidr().to_string()];
        let me = Endpoint::deployment(&d.tenant, &d.name);
        for rule in self.policy.rules_from(&me) {
            let Endpoint::Deployment { tenant, deployment } = &rule.to else {
                continue;
            };
            if (tenant, deployment) == (&d.tenant, &d.name) {
                continue;
            }
            let svc = service_name(deployment)?;
            if tenant == &d.tenant {
                out.push(svc.clone());
            }
            out.push(format!("{svc}.{}", tenant.namespace()));
        }
        out.dedup();
        Ok(out)
    }

    fn cilium_selector(peer_ns: &Option<String>, l: &BTreeMap<String, String>) -> Selector {
        let mut s = Selector::labels(l.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(ns) = peer_ns {
            s.match_labels
                .insert("k8s:io.kubernetes.pod.namespace".into(), ns.clone());
        }
        s
    }

    /// Whether gateways are Cilium's own implementation, whose traffic
    /// comes from the node's Envoy with the reserved `ingress` identity
    /// rather than from gateway pods ("Gateway API Support" and "Ingress
    /// and Network Policy" in the Cilium 1.17/1.18 docs).
    fn cilium_gateways(&self) -> bool {
        self.options.gateway_class == "cilium"
    }

    fn cilium_ingress(&self, rule: &Rule, own_ns: &str) -> IngressRule {
        let to_ports = cilium_ports(&rule.ports);
        match self.peer(&rule.from, own_ns) {
            Peer::Pods { namespace, labels } => IngressRule {
                from_endpoints: vec![Self::cilium_selector(&namespace, &labels)],
                to_ports,
                ..IngressRule::default()
            },
            // Cilium's gateways have no pods: the shared `ingress` identity
            // is the only thing to admit. Routes decide which backends each
            // gateway sends to (see docs/kubernetes.md, "Gateways").
            Peer::Gateway { .. } if self.cilium_gateways() => IngressRule {
                from_entities: vec!["ingress".into()],
                to_ports,
                ..IngressRule::default()
            },
            Peer::Gateway { namespace, labels } => IngressRule {
                from_endpoints: vec![Self::cilium_selector(&Some(namespace), &labels)],
                to_ports,
                ..IngressRule::default()
            },
            Peer::Nodes(_) => IngressRule {
                from_entities: vec!["host".into(), "remote-node".into()],
                to_ports,
                ..IngressRule::default()
            },
            Peer::Cidr(_) | Peer::World => IngressRule {
                from_entities: vec!["world".into()],
                to_ports,
                ..IngressRule::default()
            },
        }
    }

    fn cilium_egress(&self, rule: &Rule, own_ns: &str) -> EgressRule {
        let to_ports = cilium_ports(&rule.ports);
        match self.peer(&rule.to, own_ns) {
            Peer::Pods { namespace, labels } => EgressRule {
                to_endpoints: vec![Self::cilium_selector(&namespace, &labels)],
                to_ports,
                ..EgressRule::default()
            },
            Peer::Gateway { .. } if self.cilium_gateways() => EgressRule {
                to_entities: vec!["ingress".into()],
                to_ports,
                ..EgressRule::default()
            },
            Peer::Gateway { namespace, labels } => EgressRule {
                to_endpoints: vec![Self::cilium_selector(&Some(namespace), &labels)],
                to_ports,
                ..EgressRule::default()
            },
            Peer::Cidr(c) => EgressRule {
                to_cidr: vec![c],
                to_ports,
                ..EgressRule::default()
            },
            Peer::Nodes(l) => EgressRule {
                to_nodes: vec![Selector::labels(l)],
                to_ports,
                ..EgressRule::default()
            },
            Peer::World => EgressRule {
                to_entities: vec!["world".into()],
                to_ports,
                ..EgressRule::default()
            },
        }
    }

    fn k8s_peers(&self, ep: &Endpoint, own_ns: &str) -> Vec<NetworkPolicyPeer> {
        let pods = |namespace: Option<String>, labels| NetworkPolicyPeer {
            namespace_selector: namespace.map(|ns| {
                match_labels(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    ns,
                )]))
            }),
            pod_selector: Some(match_labels(labels)),
            ..NetworkPolicyPeer::default()
        };
        let block = |cidr: &str, except: &[&str]| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.into(),
                except: (!except.is_empty()).then(|| except.iter().map(|&e| e.into()).collect()),
            }),
            ..NetworkPolicyPeer::default()
        };
        match self.peer(ep, own_ns) {
            Peer::Pods { namespace, labels } => vec![pods(namespace, labels)],
            // NetworkPolicy has no `ingress` identity: it can only name the
            // gateway's pods, wherever an implementation runs them.
            Peer::Gateway { namespace, labels } => vec![pods(Some(namespace), labels)],
            Peer::Cidr(c) => vec![block(&c, &[])],
            // NetworkPolicy has no notion of "outside the cluster", and
            // cannot select nodes: the rule's port is all that narrows it.
            // It has no deny either, so the metadata addresses are cut out
            // of the world blocks here.
            Peer::World | Peer::Nodes(_) => vec![
                block("0.0.0.0/0", &[METADATA_V4, POD_IDENTITY_AGENT[0]]),
                block("::/0", &[METADATA_V6, POD_IDENTITY_AGENT[1]]),
            ],
        }
    }

    /// The Cilium and/or Kubernetes policy objects for the pods `me`,
    /// selected by `selector` in `ns`.
    fn policies_for(
        &self,
        target: PolicyTarget<'_>,
        extra_ingress: Vec<IngressRule>,
        out: &mut Vec<Object>,
    ) -> Result<(), Error> {
        let (ingress, egress) = self.rules_of(&target);
        let rules = (ingress.as_slice(), egress.as_slice());
        if self.options.policy.cilium() {
            out.push(Object::new(&self.cilium_policy(
                &target,
                extra_ingress,
                rules,
            ))?);
        }
        if self.options.policy.kubernetes() {
            out.push(Object::new(&self.k8s_policy(&target, rules))?);
        }
        Ok(())
    }

    /// The rules towards and from `target`'s pods; pods that only borrow
    /// an identity get none towards them and only its way out.
    fn rules_of<'r>(&'r self, target: &PolicyTarget<'r>) -> (Vec<&'r Rule>, Vec<&'r Rule>) {
        let me = target.me;
        match target.egress_only {
            None => (
                self.policy.rules_to(me).collect(),
                self.policy.rules_from(me).collect(),
            ),
            Some(_) => (
                Vec::new(),
                self.policy
                    .rules_from(me)
                    .filter(|r| {
                        matches!(
                            r.reason,
                            Reason::EgressProxy | Reason::ClusterDns | Reason::EgressGateway
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// `target`'s CiliumNetworkPolicy: `extra_ingress`, then the
    /// (ingress, egress) rules translated.
    fn cilium_policy(
        &self,
        target: &PolicyTarget<'_>,
        extra_ingress: Vec<IngressRule>,
        (ingress, egress): (&[&Rule], &[&Rule]),
    ) -> CiliumNetworkPolicy {
        let ns = target.ns;
        let mut ing = extra_ingress;
        for rule in ingress.iter().map(|r| self.cilium_ingress(r, ns)) {
            // Several gateways add the same `ingress` entity rule.
            if !ing.contains(&rule) {
                ing.push(rule);
            }
        }
        let eg: Vec<EgressRule> = egress.iter().map(|r| self.cilium_egress(r, ns)).collect();
        let who = target
            .egress_only
            .map_or_else(|| target.me.to_string(), str::to_owned);
        CiliumNetworkPolicy {
            metadata: meta(target.name, Some(ns), target.labels),
            spec: CiliumNetworkPolicySpec {
                description: Some(describe(&who, ingress, egress)),
                endpoint_selector: Selector::labels(target.selector.clone()),
                ingress: (!ing.is_empty()).then_some(ing),
                egress: (!eg.is_empty()).then_some(eg),
                egress_deny: None,
            },
        }
    }

    /// `target`'s NetworkPolicy: the (ingress, egress) rules translated.
    fn k8s_policy(
        &self,
        target: &PolicyTarget<'_>,
        (ingress, egress): (&[&Rule], &[&Rule]),
    ) -> NetworkPolicy {
        let ns = target.ns;
        let ing: Vec<NetworkPolicyIngressRule> = ingress
            .iter()
            .map(|r| NetworkPolicyIngressRule {
                from: Some(self.k8s_peers(&r.from, ns)),
                ports: k8s_ports(&r.ports),
            })
            .collect();
        let eg: Vec<NetworkPolicyEgressRule> = egress
            .iter()
            .map(|r| NetworkPolicyEgressRule {
                to: Some(self.k8s_peers(&r.to, ns)),
                ports: k8s_ports(&r.ports),
            })
            .collect();
        NetworkPolicy {
            metadata: meta(target.name, Some(ns), target.labels),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(match_labels(target.selector.clone())),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: (!ing.is_empty()).then_some(ing),
                egress: (!eg.is_empty()).then_some(eg),
            }),
        }
    }

    fn platform(&self) -> Result<Vec<Object>, Error> {
        let (key, value) = crate::common::GVISOR_READY_LABEL;
        let mut out = vec![Object::new(&RuntimeClass {
            metadata: meta(&self.options.runtime_class, None, &labels([MANAGED_BY])),
            handler: "runsc".into(),
            // Pods of this class land only on nodes where the installer has
            // registered runsc and set the label: the RuntimeClass admission
            // controller merges `scheduling.nodeSelector` into each pod's
            // (Kubernetes docs, "Runtime Class", Scheduling).
            scheduling: Some(Scheduling {
                node_selector: Some(labels([(key, value)])),
                tolerations: None,
            }),
            ..RuntimeClass::default()
        })?];
        out.extend(admission::objects(&self.options.trusted_writers)?);
        // Every gateway lives in the gateway namespace (see `gateway_object`).
        if !self.snapshot.gateways.is_empty() {
            let ns = &self.options.gateway_namespace;
            out.push(Object::new(&Namespace {
                metadata: meta(ns, None, &labels([MANAGED_BY])),
                ..Namespace::default()
            })?);
        }
        if self
            .snapshot
            .gateways
            .iter()
            .any(|g| g.scope == GatewayScope::Central)
        {
            self.gateway(&GatewayScope::Central, &labels([MANAGED_BY]), &mut out)?;
        }
        if let Some(p) = &self.options.proxy.in_cluster {
            out.extend(crate::proxy::objects(p, self.options)?);
        }
        Ok(out)
    }

    fn gateway(
        &self,
        scope: &GatewayScope,
        obj_labels: &BTreeMap<String, String>,
        out: &mut Vec<Object>,
    ) -> Result<(), Error> {
        let (name, ns) = gateway_object(scope, self.options);
        if self.cilium_gateways() && !self.options.policy.cilium() {
            // Cilium's gateway traffic has the reserved `ingress` identity,
            // which a NetworkPolicy cannot name: every route would be cut.
            return Err(Error::Unrepresentable {
                what: format!("gateway {ns}/{name}"),
                reason: "a Kubernetes NetworkPolicy cannot admit Cilium's gateway traffic \
                         (the reserved `ingress` identity); render with --policy cilium or \
                         both, or use another --gateway-class"
                    .into(),
            });
        }
        let gw = GatewayObj {
            metadata: meta(&name, Some(&ns), obj_labels),
            spec: GatewaySpec {
                gateway_class_name: self.options.gateway_class.clone(),
                infrastructure: None,
                listeners: vec![self.listener(scope)],
            },
        };
        out.push(Object::new(&gw)?);
        if self.cilium_gateways() {
            // Cilium's gateways run in the node's Envoy: there are no
            // gateway pods for a policy to select.
            return Ok(());
        }
        // The gateway's own pods: reachable from anywhere on the listener,
        // and reaching only what the policy model lets the gateway reach.
        let http = Ports::Only([palisade_core::PortProto::tcp(palisade_core::Port::HTTP)].into());
        let from_anywhere = IngressRule {
            from_entities: vec!["world".into(), "cluster".into()],
            to_ports: cilium_ports(&http),
            ..IngressRule::default()
        };
        self.policies_for(
            PolicyTarget {
                me: &Endpoint::Gateway {
                    scope: scope.clone(),
                },
                egress_only: None,
                name: &format!("gateway-{name}"),
                ns: &ns,
                selector: labels([(GATEWAY_NAME_LABEL, name.as_str())]),
                labels: obj_labels,
            },
            vec![from_anywhere],
            out,
        )
    }

    /// A gateway's one HTTP listener, limited to the host names and route
    /// namespaces of what it fronts, so that no tenant's route can attach
    /// to another tenant's gateway or claim another tenant's host name on
    /// the central one: a route is accepted only where its host names
    /// intersect the listener's (Gateway API `Listener.hostname`, standard
    /// channel v1.2.1+: `*.example.com` matches `foo.test.example.com`).
    fn listener(&self, scope: &GatewayScope) -> Listener {
        let domain = &self.options.gateway_domain;
        let (hostname, selector) = match scope {
            GatewayScope::Central => (
                format!("*.{domain}"),
                Selector {
                    match_labels: BTreeMap::new(),
                    match_expressions: vec![SelectorRequirement {
                        key: TENANT_LABEL.into(),
                        operator: "Exists".into(),
                        values: Vec::new(),
                    }],
                },
            ),
            GatewayScope::PerTenant { tenant } => (
                format!("*.{tenant}.{domain}"),
                namespace_selector(&tenant.namespace()),
            ),
            GatewayScope::PerDeployment { tenant, deployment } => (
                route_host(tenant, deployment, domain),
                namespace_selector(&tenant.namespace()),
            ),
        };
        Listener {
            name: "http".into(),
            protocol: "HTTP".into(),
            port: 80,
            hostname: Some(hostname),
            allowed_routes: Some(AllowedRoutes {
                namespaces: RouteNamespaces {
                    from: "Selector".into(),
                    selector: Some(selector),
                },
            }),
        }
    }

    /// SNATs the tenant's IPv4 traffic to its egress address on a gateway
    /// node. Cilium requires `egressIP` to be an address assigned to an
    /// interface of the gateway node ("Egress Gateway", Preliminary
    /// Considerations, Cilium 1.17/1.18 docs): on AWS that is a secondary
    /// private IP, and the Elastic IP associated with it (the tenant's
    /// `public_ip`) is what partners see. Cilium 1.17 accepts only IPv4
    /// `destinationCIDRs` (the CRD's pattern), so IPv6 egress of these
    /// tenants is not fixed: docs/kubernetes.md says so.
    fn egress_gateway_policy(
        &self,
        t: &Tenant,
        own: &BTreeMap<String, String>,
    ) -> Result<Object, Error> {
        if let Some(IpAddr::V6(ip)) = t.egress.ip {
            return Err(Error::Unrepresentable {
                what: format!("tenant {}", t.name),
                reason: format!(
                    "egress address {ip} is IPv6, but Cilium's egress gateway SNATs IPv4 only; \
                     give the IPv4 address attached to the gateway node"
                ),
            });
        }
        let ns = t.name.namespace();
        let (k, v) = &self.options.egress_gateway_node_label;
        Object::new(&CiliumEgressGatewayPolicy {
            metadata: meta(&ns, None, own),
            spec: CiliumEgressGatewayPolicySpec {
                selectors: vec![EgressSelector {
                    namespace_selector: Some(namespace_selector(&ns)),
                    pod_selector: None,
                }],
                destination_cidrs: vec!["0.0.0.0/0".into()],
                egress_gateway: EgressGateway {
                    node_selector: Selector::labels([(k.as_str(), v.as_str())]),
                    egress_ip: t.egress.ip.map(|ip| ip.to_string()),
                },
            },
        })
    }

    fn tenant(&self, t: &Tenant, deps: &[&Deployment]) -> Result<TenantObjects, Error> {
        let ns = t.name.namespace();
        let ns = ns.as_str();
        let own = tenant_labels(&t.name);
        let mut out = vec![
            Object::new(&self.namespace(t, deps))?,
            Object::new(&quota(t, ns, &own))?,
            Object::new(&limit_range(&self.options.resources, ns, &own))?,
        ];
        out.extend(workload_rbac(ns, &own)?);
        out.extend(self.default_deny(t, ns, &own)?);
        if t.egress.mode == EgressMode::CiliumEgressGateway {
            out.push(self.egress_gateway_policy(t, &own)?);
        }
        // Per-deployment gateways live with their deployment.
        for g in self.gateways_of(&t.name) {
            if matches!(&g.scope, GatewayScope::PerTenant { tenant } if tenant == &t.name) {
                self.gateway(&g.scope, &own, &mut out)?;
            }
        }
        let proxy_port = tenant_proxy_port(t, self.options);
        let egress_config = proxy_port
            .map(|port| self.egress_config(ns, &own, port))
            .transpose()?;
        if let (Some(demo), Some(first)) = (&self.options.egress_check, deps.first()) {
            self.egress_check(t, first, &demo.image, &mut out)?;
        }
        let deployments = deps
            .iter()
            .map(|d| {
                Ok(DeploymentObjects {
                    name: d.name.clone(),
                    objects: self.deployment(t, d)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(TenantObjects {
            tenant: t.name.clone(),
            objects: out,
            egress_config,
            proxy_port,
            deployments,
        })
    }

    /// The tenant's namespace, labelled with the tenant's own labels, its
    /// egress mode and the Pod Security level its pods meet.
    fn namespace(&self, t: &Tenant, deps: &[&Deployment]) -> Namespace {
        let mut l: Labels = t
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.extend(tenant_labels(&t.name));
        l.insert("tenant".into(), t.name.to_string());
        let isolation = match t.egress.mode {
            EgressMode::Proxy => "egress-proxy",
            EgressMode::CiliumEgressGateway => "egress-gateway",
        };
        l.insert("network/isolation".into(), isolation.into());
        // `restricted` admission would refuse a pod that may run as root.
        let non_root = deps
            .iter()
            .all(|d| workload::Privilege::of(d, self.options).non_root);
        let level = if non_root { "restricted" } else { "baseline" };
        l.insert("pod-security.kubernetes.io/enforce".into(), level.into());
        Namespace {
            metadata: meta(t.name.namespace().as_str(), None, &l),
            ..Namespace::default()
        }
    }

    /// The tenant-wide default deny, in each rendered flavour; the
    /// deployments' policies open what the policy model allows.
    fn default_deny(&self, t: &Tenant, ns: &str, own: &Labels) -> Result<Vec<Object>, Error> {
        let mut out = Vec::new();
        if self.options.policy.cilium() {
            out.push(Object::new(&CiliumNetworkPolicy {
                metadata: meta("default-deny", Some(ns), own),
                spec: CiliumNetworkPolicySpec {
                    description: Some(
                        "Default deny: every pod of the tenant, ingress and egress; \
                         the deployment-* policies open what the policy model allows."
                            .into(),
                    ),
                    endpoint_selector: Selector::default(),
                    ingress: Some(vec![IngressRule::default()]),
                    egress: Some(vec![EgressRule::default()]),
                    egress_deny: Some(self.tenant_deny(t)),
                },
            })?);
        }
        if self.options.policy.kubernetes() {
            out.push(Object::new(&NetworkPolicy {
                metadata: meta("default-deny", Some(ns), own),
                spec: Some(NetworkPolicySpec {
                    pod_selector: Some(LabelSelector::default()),
                    policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                    ..NetworkPolicySpec::default()
                }),
            })?);
        }
        Ok(out)
    }

    /// The tenant's egress ConfigMap: where its pods reach the proxy.
    fn egress_config(&self, ns: &str, own: &Labels, port: u16) -> Result<Object, Error> {
        Object::new(&ConfigMap {
            metadata: meta(EGRESS_CONFIG, Some(ns), own),
            data: Some(egress_literals(self.options, None, port)),
            ..ConfigMap::default()
        })
    }

    fn deployment(&self, t: &Tenant, d: &Deployment) -> Result<Vec<Object>, Error> {
        let ns = t.name.namespace();
        let ns = ns.as_str();
        let mut own = tenant_labels(&t.name);
        own.insert(DEPLOYMENT_LABEL.into(), d.name.to_string());
        let selector = labels([(DEPLOYMENT_LABEL, d.name.as_str())]);
        let pool = pool_name(&t.name, &d.name);
        let mut out = vec![
            Object::new(&self.ip_pool(d, &pool, &own))?,
            Object::new(&self.workload(t, d, &own, &selector, pool)?)?,
        ];
        let svc_name = service_name(&d.name)?;
        out.push(Object::new(&workload_service(
            d, &svc_name, ns, &own, &selector,
        ))?);
        self.policies_for(
            PolicyTarget {
                me: &Endpoint::deployment(&t.name, &d.name),
                egress_only: None,
                name: &policy_name(&d.name),
                ns,
                selector,
                labels: &own,
            },
            Vec::new(),
            &mut out,
        )?;
        for g in self.gateways_of(&t.name) {
            if matches!(&g.scope, GatewayScope::PerDeployment { tenant, deployment }
                if tenant == &t.name && deployment == &d.name)
            {
                self.gateway(&g.scope, &own, &mut out)?;
            }
        }
        self.routes(t, d, &svc_name, &own, &mut out)?;
        Ok(out)
    }

    /// The deployment's `CiliumPodIPPool`: its subnet, handed out to nodes
    /// in slices of the configured mask size.
    fn ip_pool(&self, d: &Deployment, pool: &str, own: &Labels) -> CiliumPodIPPool {
        let prefix = d.subnet.prefix_len();
        let mask = if self.options.pool_mask_size > prefix {
            self.options.pool_mask_size
        } else {
            // A pool whose mask equals its prefix goes to one node only.
            prefix.saturating_add(16).min(128)
        };
        CiliumPodIPPool {
            metadata: meta(pool, None, own),
            spec: CiliumPodIPPoolSpec {
                ipv6: IpPoolFamily {
                    cidrs: vec![d.subnet.to_string()],
                    mask_size: mask,
                },
            },
        }
    }

    /// The deployment's Kubernetes Deployment.
    fn workload(
        &self,
        t: &Tenant,
        d: &Deployment,
        own: &Labels,
        selector: &Labels,
        pool: String,
    ) -> Result<K8sDeployment, Error> {
        let privilege = workload::Privilege::of(d, self.options);
        let (volumes, mounts) = workload::scratch(d);
        let container = self.workload_container(t, d, privilege, mounts)?;
        let mut pod_labels: Labels = d
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        pod_labels.extend(own.clone());
        pod_labels.insert("app.kubernetes.io/name".into(), d.name.to_string());
        pod_labels.insert("tenant".into(), t.name.to_string());
        pod_labels.insert("deployment".into(), d.name.to_string());
        let spec = pod_spec(WORKLOAD_SA, privilege.non_root, container, volumes);
        Ok(deployment(
            meta(d.name.as_str(), Some(t.name.namespace().as_str()), own),
            i32::try_from(d.replicas.get()).unwrap_or(i32::MAX),
            selector,
            self.tenant_pod(t, pod_labels, pool, spec),
        ))
    }

    /// The deployment's container: its image, ports and workload spec, the
    /// proxy's variables in proxy mode, the platform's resources.
    fn workload_container(
        &self,
        t: &Tenant,
        d: &Deployment,
        privilege: workload::Privilege,
        mounts: Vec<VolumeMount>,
    ) -> Result<Container, Error> {
        let mut env = match t.egress.mode {
            EgressMode::Proxy => proxy_env(&self.direct_peers(d)?),
            EgressMode::CiliumEgressGateway => Vec::new(),
        };
        env.extend(workload::env(d));
        let ports = d.ports.iter().map(|p| tcp_port(None, i32::from(p.get())));
        Ok(Container {
            name: d.name.to_string(),
            image: Some(d.image.to_string()),
            ports: non_empty(ports.collect()),
            env: non_empty(env),
            command: non_empty(d.workload.command().to_vec()),
            args: non_empty(d.workload.args().to_vec()),
            volume_mounts: non_empty(mounts),
            resources: Some(resources(&self.options.resources)),
            security_context: Some(privilege.container()),
            ..Container::default()
        })
    }

    /// A tenant's pods (its deployments', the egress-check demo's): in the
    /// sandboxed runtime class, on the tenant's node pool if it has one,
    /// without service links, with IPv6 addresses from `pool`.
    fn tenant_pod(&self, t: &Tenant, labels: Labels, pool: String, spec: PodSpec) -> PodTemplate {
        let (tolerations, node_selector) = node_pool_placement(t);
        PodTemplate {
            labels,
            annotations: Some(BTreeMap::from([(IP_POOL_ANNOTATION.to_owned(), pool)])),
            spec: PodSpec {
                runtime_class_name: Some(self.options.runtime_class.clone()),
                enable_service_links: Some(false),
                tolerations,
                node_selector,
                ..spec
            },
        }
    }

    /// One HTTPRoute per gateway fronting the deployment, to its first port.
    fn routes(
        &self,
        t: &Tenant,
        d: &Deployment,
        svc_name: &str,
        own: &Labels,
        out: &mut Vec<Object>,
    ) -> Result<(), Error> {
        let Some(port) = d.ports.first() else {
            return Ok(());
        };
        let ns = t.name.namespace();
        for g in self.gateways_of(&t.name) {
            if !g.scope.fronts(&t.name, &d.name) {
                continue;
            }
            let (gw_name, gw_ns) = gateway_object(&g.scope, self.options);
            let route_name = match &g.scope {
                GatewayScope::Central => format!("central-{}", d.name),
                GatewayScope::PerTenant { .. } => format!("tenant-{}", d.name),
                GatewayScope::PerDeployment { .. } => format!("deployment-{}", d.name),
            };
            out.push(Object::new(&HTTPRoute {
                metadata: meta(&route_name, Some(ns.as_str()), own),
                spec: HTTPRouteSpec {
                    parent_refs: vec![ParentRef {
                        name: gw_name,
                        namespace: Some(gw_ns),
                    }],
                    hostnames: vec![route_host(&t.name, &d.name, &self.options.gateway_domain)],
                    rules: vec![HTTPRouteRule {
                        backend_refs: vec![BackendRef {
                            name: svc_name.to_owned(),
                            port: port.get(),
                        }],
                    }],
                },
            })?);
        }
        Ok(())
    }
}

/// The tenant's ResourceQuota: its CPU, memory and pod quota.
fn quota(t: &Tenant, ns: &str, own: &Labels) -> ResourceQuota {
    ResourceQuota {
        metadata: meta("tenant-quota", Some(ns), own),
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([
                ("requests.cpu".to_owned(), q(&t.quota.cpu.to_string())),
                ("requests.memory".to_owned(), q(&t.quota.memory.to_string())),
                ("pods".to_owned(), q(&t.quota.pods.to_string())),
            ])),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

/// The tenant's LimitRange: the platform's resources as every container's
/// default.
fn limit_range(r: &Resources, ns: &str, own: &Labels) -> LimitRange {
    LimitRange {
        metadata: meta("tenant-limits", Some(ns), own),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(cpu_memory(&r.cpu_limit, &r.memory_limit)),
                default_request: Some(cpu_memory(&r.cpu_request, &r.memory_request)),
                ..LimitRangeItem::default()
            }],
        }),
    }
}

/// The ServiceAccount of the tenant's workloads (no token) and the Role
/// and RoleBinding that let it read pods, services and endpoints.
fn workload_rbac(ns: &str, own: &Labels) -> Result<Vec<Object>, Error> {
    let role = Role {
        metadata: meta(WORKLOAD_SA, Some(ns), own),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into(), "services".into(), "endpoints".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta(WORKLOAD_SA, Some(ns), own),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: WORKLOAD_SA.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: WORKLOAD_SA.into(),
            namespace: Some(ns.to_owned()),
            ..Subject::default()
        }]),
    };
    Ok(vec![
        Object::new(&service_account(meta(WORKLOAD_SA, Some(ns), own)))?,
        Object::new(&role)?,
        Object::new(&binding)?,
    ])
}

/// The deployment's Service: dual-stack on its ports, or headless (for
/// DNS) when it serves none.
fn workload_service(
    d: &Deployment,
    name: &str,
    ns: &str,
    own: &Labels,
    selector: &Labels,
) -> Service {
    let spec = if d.ports.is_empty() {
        ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector.clone()),
            ..ServiceSpec::default()
        }
    } else {
        let port = |p: &palisade_core::Port| {
            let n = i32::from(p.get());
            service_port(Some(format!("tcp-{p}")), n, n)
        };
        ServiceSpec {
            ip_family_policy: Some("PreferDualStack".into()),
            selector: Some(selector.clone()),
            ports: Some(d.ports.iter().map(port).collect()),
            ..ServiceSpec::default()
        }
    };
    Service {
        metadata: meta(name, Some(ns), own),
        spec: Some(spec),
        ..Service::default()
    }
}

/// The egress ConfigMap's data for a tenant reaching the proxy on `port`;
/// `environment` adds `ENVIRONMENT`.
pub fn egress_literals(
    options: &RenderOptions,
    environment: Option<(&str, Option<&str>)>,
    port: u16,
) -> BTreeMap<String, String> {
    let address = environment
        .and_then(|(_, a)| a)
        .unwrap_or(&options.proxy.address);
    // An IPv6 literal must be bracketed inside a proxy URL.
    let address = match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("[{a}]"),
        _ => address.to_owned(),
    };
    let mut m = BTreeMap::from([
        ("PROXY_ADDRESS".to_owned(), address),
        ("PROXY_PORT".to_owned(), port.to_string()),
        ("NO_PROXY".to_owned(), options.proxy.no_proxy.clone()),
    ]);
    if let Some((env, _)) = environment {
        m.insert("ENVIRONMENT".into(), env.to_owned());
    }
    m
}

/// The proxy variables of a tenant pod. `NO_PROXY` is the platform's list
/// (the egress ConfigMap's, which overlays may replace) followed by
/// `direct`: what this pod reaches without the proxy.
pub(crate) fn proxy_env(direct: &[String]) -> Vec<EnvVar> {
    let from_config = |name: &str, key: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: EGRESS_CONFIG.into(),
                key: key.into(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let value = |name: &str, v: &str| EnvVar {
        name: name.into(),
        value: Some(v.into()),
        ..EnvVar::default()
    };
    let url = "http://$(PROXY_ADDRESS):$(PROXY_PORT)";
    // Kubernetes expands `$(VAR)` from variables defined earlier in the list.
    let no_proxy = std::iter::once("$(PLATFORM_NO_PROXY)")
        .chain(direct.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        from_config("PROXY_ADDRESS", "PROXY_ADDRESS"),
        from_config("PROXY_PORT", "PROXY_PORT"),
        from_config("PLATFORM_NO_PROXY", "NO_PROXY"),
        value("NO_PROXY", &no_proxy),
        value("HTTP_PROXY", url),
        value("HTTPS_PROXY", url),
        // curl and many other tools read only the lower-case names.
        value("http_proxy", url),
        value("https_proxy", url),
        value("no_proxy", "$(NO_PROXY)"),
    ]
}

/// Tolerations and nodeSelector that put a tenant's pods on its dedicated
/// node pool, if it has one.
type Placement = (Option<Vec<Toleration>>, Option<BTreeMap<String, String>>);

fn node_pool_placement(t: &Tenant) -> Placement {
    match &t.node_pool {
        Some(pool) => (
            Some(vec![no_schedule(NODE_POOL_TAINT, t.name.as_str())]),
            Some(BTreeMap::from([(
                NODE_POOL_LABEL.to_owned(),
                pool.to_string(),
            )])),
        ),
        None => (None, None),
    }
}

impl Cx<'_> {
    /// [`platform_deny`], and for a tenant whose egress is the `world`
    /// (egress gateway), a proxy outside the cluster: Cilium sees that
    /// address as part of the world, and the proxy knows a caller by the
    /// tenant listener it connects to, so such a tenant could otherwise
    /// connect to another tenant's listener and leave as that tenant.
    fn tenant_deny(&self, t: &Tenant) -> Vec<EgressDenyRule> {
        let mut deny = platform_deny();
        if let (EgressMode::CiliumEgressGateway, Some(ip)) =
            (t.egress.mode, self.options.proxy.ip())
        {
            deny[0].to_cidr.push(host_cidr(ip));
        }
        deny
    }
}

/// What no tenant pod may reach, whatever else allows it: `world` includes
/// the instance-metadata and Pod Identity addresses (node credentials), and,
/// where the API server runs outside the cluster (EKS), the API server. The
/// `kube-apiserver` entity names it wherever it runs ("Layer 3 Examples",
/// entities, in the Cilium 1.17/1.18 docs). Deny wins over allow.
fn platform_deny() -> Vec<EgressDenyRule> {
    let mut cidrs = vec![METADATA_V4.to_owned(), METADATA_V6.to_owned()];
    cidrs.extend(POD_IDENTITY_AGENT.map(str::to_owned));
    vec![
        EgressDenyRule {
            to_cidr: cidrs,
            ..EgressDenyRule::default()
        },
        EgressDenyRule {
            to_entities: vec!["kube-apiserver".into()],
            ..EgressDenyRule::default()
        },
    ]
}

/// A one-line summary of what a policy object allows, for `kubectl describe`.
fn describe(me: &str, ingress: &[&Rule], egress: &[&Rule]) -> String {
    let reasons = |rules: &[&Rule]| {
        let mut v: Vec<String> = rules.iter().map(|r| r.reason.to_string()).collect();
        v.dedup();
        v.join("; ")
    };
    format!(
        "{me}: ingress [{}]; egress [{}]",
        reasons(ingress),
        reasons(egress)
    )
}
