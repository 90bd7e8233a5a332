//! Typed custom resources that `k8s-openapi` does not ship: Cilium, the
//! Gateway API and Flux.
//!
//! Only the fields Palisade writes are modelled. Deriving them with
//! `kube::CustomResource` gives each one its group, version and kind from
//! one place, so the renderer, `apply` and the schema tests agree; the
//! integration tests validate every rendered object against the official
//! CRD schemas, which is what keeps these hand-written structs honest.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A label selector (`matchLabels` / `matchExpressions`) as Cilium and the
/// Gateway API spell it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels that must all match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

impl Selector {
    /// A selector matching these labels.
    pub fn labels<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }
}

/// One set-based selector requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` / `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

// ---------------------------------------------------------------- Cilium

/// `CiliumNetworkPolicy` (cilium.io/v2): label-selector based L3/L4 policy.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "cilium.io",
    version = "v2",
    kind = "CiliumNetworkPolicy",
    namespaced,
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNetworkPolicySpec {
    /// What the policy says, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The endpoints the policy applies to.
    pub endpoint_selector: Selector,
    /// Allowed inbound traffic; present-but-`[{}]` denies all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    /// Allowed outbound traffic; present-but-`[{}]` denies all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
    /// Refused outbound traffic; a deny wins over every allow of every
    /// policy ("Deny Policies" in the Cilium docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_deny: Option<Vec<EgressDenyRule>>,
}

/// One Cilium egress deny rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressDenyRule {
    /// Peers by Cilium entity (`kube-apiserver`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_entities: Vec<String>,
    /// Peers by CIDR.
    #[serde(default, rename = "toCIDR", skip_serializing_if = "Vec::is_empty")]
    pub to_cidr: Vec<String>,
}

/// One Cilium ingress rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// Peers by labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_endpoints: Vec<Selector>,
    /// Peers by Cilium entity (`ingress`, `world`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_entities: Vec<String>,
    /// Ports; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
}

/// One Cilium egress rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Peers by labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_endpoints: Vec<Selector>,
    /// Peers by Cilium entity (`world`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_entities: Vec<String>,
    /// Peers outside the cluster by CIDR.
    #[serde(default, rename = "toCIDR", skip_serializing_if = "Vec::is_empty")]
    pub to_cidr: Vec<String>,
    /// Nodes by labels (host-network pods such as the egress proxy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_nodes: Vec<Selector>,
    /// Ports; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
}

/// A set of L4 ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortRule {
    /// The ports.
    pub ports: Vec<PortProtocol>,
}

/// One L4 port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortProtocol {
    /// The port number, as a string (Cilium also accepts names).
    pub port: String,
    /// `TCP`, `UDP` or `ANY`.
    pub protocol: String,
}

/// `CiliumPodIPPool`: a multi-pool IPAM pool; one per deployment, holding
/// its subnet.
///
/// Cilium 1.17 and 1.18 serve this kind only as `cilium.io/v2alpha1`
/// (`pkg/k8s/apis/cilium.io/client/crds/v2alpha1/ciliumpodippools.yaml` at
/// v1.17.17 and v1.18.11; there is no `v2` file for it), and there
/// `spec.ipv6.cidrs` is a list of CIDR strings. Under Flux one unknown
/// kind fails the whole Kustomization's dry run, so the version matters.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "cilium.io",
    version = "v2alpha1",
    kind = "CiliumPodIPPool",
    derive = "PartialEq",
    derive = "Default"
)]
pub struct CiliumPodIPPoolSpec {
    /// The IPv6 CIDRs and the per-node slice size.
    pub ipv6: IpPoolFamily,
}

/// One address family of a pod IP pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolFamily {
    /// The CIDRs of the pool.
    pub cidrs: Vec<String>,
    /// The prefix length of the piece handed to each node.
    pub mask_size: u8,
}

/// `CiliumEgressGatewayPolicy` (cilium.io/v2): SNAT a tenant's outbound
/// traffic to its fixed egress IP on a gateway node.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "cilium.io",
    version = "v2",
    kind = "CiliumEgressGatewayPolicy",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct CiliumEgressGatewayPolicySpec {
    /// Which pods the policy applies to.
    pub selectors: Vec<EgressSelector>,
    /// Destinations whose traffic is redirected (IPv4 only in Cilium).
    #[serde(rename = "destinationCIDRs")]
    pub destination_cidrs: Vec<String>,
    /// The gateway node(s) and the address to SNAT to.
    pub egress_gateway: EgressGateway,
}

/// Pod and namespace selectors of an egress gateway policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressSelector {
    /// Namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    /// Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<Selector>,
}

/// Where an egress gateway policy sends traffic out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressGateway {
    /// The gateway nodes.
    pub node_selector: Selector,
    /// The source address; omitted, Cilium uses the node's first address.
    #[serde(default, rename = "egressIP", skip_serializing_if = "Option::is_none")]
    pub egress_ip: Option<String>,
}

// ----------------------------------------------------------- Gateway API

/// `Gateway` (gateway.networking.k8s.io/v1).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    namespaced,
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The implementation (`cilium`, ...).
    pub gateway_class_name: String,
    /// Labels the implementation puts on what it creates (pods, services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<GatewayInfrastructure>,
    /// Listeners.
    pub listeners: Vec<Listener>,
}

/// Labels and annotations for a gateway's generated resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GatewayInfrastructure {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One gateway listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Listener name.
    pub name: String,
    /// `HTTP`, `HTTPS`, ...
    pub protocol: String,
    /// Port.
    pub port: u16,
    /// Host names served; `*.` prefixes match any deeper name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Which routes may attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// Which routes may attach to a listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AllowedRoutes {
    /// By namespace.
    pub namespaces: RouteNamespaces,
}

/// Route namespaces allowed on a listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RouteNamespaces {
    /// `Same`, `All` or `Selector`.
    pub from: String,
    /// For `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
}

/// `HTTPRoute` (gateway.networking.k8s.io/v1).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    namespaced,
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    /// The gateways the route attaches to.
    pub parent_refs: Vec<ParentRef>,
    /// Host names matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Routing rules.
    pub rules: Vec<HTTPRouteRule>,
}

/// A route's parent gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParentRef {
    /// Gateway name.
    pub name: String,
    /// Gateway namespace, when not the route's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One HTTP routing rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    /// Where matching requests go.
    pub backend_refs: Vec<BackendRef>,
}

/// A route backend (a Service).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackendRef {
    /// Service name.
    pub name: String,
    /// Service port.
    pub port: u16,
}

// ------------------------------------------------------------------ Flux

/// `GitRepository` (source.toolkit.fluxcd.io/v1).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "GitRepository",
    namespaced,
    derive = "PartialEq",
    derive = "Default"
)]
pub struct GitRepositorySpec {
    /// How often to fetch.
    pub interval: String,
    /// Repository URL.
    pub url: String,
    /// What to check out.
    #[serde(rename = "ref")]
    pub git_ref: GitRef,
}

/// A Git reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GitRef {
    /// Branch name.
    pub branch: String,
}

/// `Kustomization` (kustomize.toolkit.fluxcd.io/v1).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kustomize.toolkit.fluxcd.io",
    version = "v1",
    kind = "Kustomization",
    root = "FluxKustomization",
    namespaced,
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct FluxKustomizationSpec {
    /// How often to reconcile.
    pub interval: String,
    /// Path inside the repository.
    pub path: String,
    /// Delete what disappears from the source.
    pub prune: bool,
    /// The source.
    pub source_ref: SourceRef,
    /// How long one apply may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry interval after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
}

/// A Flux source reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SourceRef {
    /// `GitRepository`.
    pub kind: String,
    /// Its name.
    pub name: String,
}
