//! What sends and receives traffic, and the identity labels Cilium gives it.

use super::labels::{
    CLUSTER_KEY, Label, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, SERVICE_ACCOUNT_KEY, SOURCE_K8S,
    SOURCE_RESERVED, Selector,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A transport protocol of a flow (the CRDs' `TCP`, `UDP`, `SCTP`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl From<palisade_core::Protocol> for Proto {
    fn from(p: palisade_core::Protocol) -> Self {
        match p {
            palisade_core::Protocol::Tcp => Proto::Tcp,
            palisade_core::Protocol::Udp => Proto::Udp,
        }
    }
}

/// Who an endpoint is to Cilium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A Cilium-managed pod.
    Pod {
        /// Its namespace.
        namespace: String,
        /// Its labels.
        labels: BTreeMap<String, String>,
        /// Its namespace's labels (`io.cilium.k8s.namespace.labels.*`).
        namespace_labels: BTreeMap<String, String>,
        /// Its service account, when known.
        service_account: Option<String>,
    },
    /// A node: the local `host` of the pods it talks to, or a `remote-node`.
    Node {
        /// The node's labels (used by `toNodes`/`fromNodes`).
        labels: BTreeMap<String, String>,
        /// `host` when true, `remote-node` otherwise.
        local: bool,
    },
    /// Anything outside the cluster (`reserved:world`).
    World,
    /// The Kubernetes API server (`reserved:kube-apiserver`).
    KubeApiServer,
    /// Cilium's Envoy for Ingress and Gateway API (`reserved:ingress`).
    Ingress,
    /// Cilium's health endpoints (`reserved:health`).
    Health,
    /// A pod whose labels are not known yet (`reserved:init`).
    Init,
    /// A pod not managed by Cilium (`reserved:unmanaged`).
    Unmanaged,
}

/// A container port; `toPorts` may name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// Its name, if any.
    pub name: Option<String>,
    /// The number.
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
}

/// Something that sends or receives traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A display name (`ns/pod`, `world`, ...).
    pub name: String,
    /// Its identity.
    pub identity: Identity,
    /// Its addresses (CIDR rules match them).
    pub addresses: Vec<IpAddr>,
    /// Its container ports (named ports resolve against them).
    pub ports: Vec<ContainerPort>,
}

/// Cluster settings that change how identities are formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityOptions {
    /// `cluster-name` (Helm `cluster.name`, default `default`).
    pub cluster_name: String,
    /// Whether nodes carry their labels (`enable-node-selector-labels`,
    /// Helm `nodeSelectorLabels`, default false).
    pub node_selector_labels: bool,
    /// Dual-stack world identities (`world-ipv4`/`world-ipv6`).
    pub dual_stack: bool,
}

impl Endpoint {
    /// A pod endpoint.
    pub fn pod(namespace: &str, name: &str, labels: BTreeMap<String, String>) -> Self {
        Self {
            name: format!("{namespace}/{name}"),
            identity: Identity::Pod {
                namespace: namespace.into(),
                labels,
                namespace_labels: BTreeMap::new(),
                service_account: None,
            },
            addresses: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// A reserved identity with no address.
    pub fn reserved(name: &str, identity: Identity) -> Self {
        Self {
            name: name.into(),
            identity,
            addresses: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// The pod's namespace.
    pub fn namespace(&self) -> Option<&str> {
        match &self.identity {
            Identity::Pod { namespace, .. } => Some(namespace),
            _ => None,
        }
    }

    /// Whether the endpoint runs its own policy (a Cilium endpoint with
    /// network policy: pods, the Ingress Envoy, health endpoints, pods in
    /// init). Nodes only through host policies, which are not modelled.
    pub fn enforces(&self) -> bool {
        matches!(
            self.identity,
            Identity::Pod { .. } | Identity::Ingress | Identity::Health | Identity::Init
        )
    }

    /// The identity labels Cilium derives. Pods: every pod label with source
    /// `k8s`, plus `io.kubernetes.pod.namespace`, `io.cilium.k8s.policy.cluster`,
    /// `io.cilium.k8s.policy.serviceaccount` and `io.cilium.k8s.namespace.labels.*`
    /// (docs "Using Kubernetes Constructs In Policy", v1.17/v1.18). Reserved
    /// identities: `reserved:<name>` (pkg/labels, "Special Identities").
    pub fn labels(&self, o: &IdentityOptions) -> Vec<Label> {
        let reserved = |n: &str| vec![Label::new(SOURCE_RESERVED, n, "")];
        match &self.identity {
            Identity::Pod {
                namespace,
                labels,
                namespace_labels,
                service_account,
            } => {
                let mut out: Vec<Label> = labels
                    .iter()
                    .map(|(k, v)| Label::new(SOURCE_K8S, k, v))
                    .collect();
                out.push(Label::new(SOURCE_K8S, NAMESPACE_KEY, namespace));
                out.push(Label::new(SOURCE_K8S, CLUSTER_KEY, &o.cluster_name));
                if let Some(sa) = service_account {
                    out.push(Label::new(SOURCE_K8S, SERVICE_ACCOUNT_KEY, sa));
                }
                // Kubernetes labels every namespace with its name
                // (`kubernetes.io/metadata.name`, GA in 1.22).
                out.push(Label::new(
                    SOURCE_K8S,
                    &format!("{NAMESPACE_LABELS_PREFIX}kubernetes.io/metadata.name"),
                    namespace,
                ));
                out.extend(
                    namespace_labels
                        .iter()
                        .filter(|(k, _)| *k != "kubernetes.io/metadata.name")
                        .map(|(k, v)| {
                            Label::new(SOURCE_K8S, &format!("{NAMESPACE_LABELS_PREFIX}{k}"), v)
                        }),
                );
                out
            }
            Identity::Node { labels, local } => {
                let mut out = reserved(if *local { "host" } else { "remote-node" });
                if o.node_selector_labels {
                    out.extend(labels.iter().map(|(k, v)| Label::new(SOURCE_K8S, k, v)));
                }
                out
            }
            Identity::World => reserved(self.world_name(o)),
            Identity::KubeApiServer => reserved("kube-apiserver"),
            Identity::Ingress => reserved("ingress"),
            Identity::Health => reserved("health"),
            Identity::Init => reserved("init"),
            Identity::Unmanaged => reserved("unmanaged"),
        }
    }

    /// In dual-stack clusters Cilium splits `world` by address family.
    fn world_name(&self, o: &IdentityOptions) -> &'static str {
        match (o.dual_stack, self.addresses.first()) {
            (true, Some(IpAddr::V4(_))) => "world-ipv4",
            (true, Some(IpAddr::V6(_))) => "world-ipv6",
            _ => "world",
        }
    }
}

/// The selectors an entity stands for: Cilium's `EntitySelectorMapping`
/// and `InitEntities` (pkg/policy/api/entity.go, v1.17/v1.18): `world` is
/// `reserved:world` (and `world-ipv4`/`world-ipv6`); `cluster` is host,
/// remote-node, init, ingress, health, unmanaged, kube-apiserver and every
/// pod labelled with the local cluster name; `all` is the wildcard; `none`
/// selects nothing. `None` for a name outside the CRD's enum.
pub fn entity_selectors(entity: &str, cluster_name: &str) -> Option<Vec<Selector>> {
    let r = |n: &str| Selector::equals(SOURCE_RESERVED, n, "");
    let out = match entity {
        "all" => vec![Selector::default()],
        "world" => vec![r("world"), r("world-ipv4"), r("world-ipv6")],
        "host" | "init" | "ingress" | "remote-node" | "health" | "unmanaged" | "kube-apiserver"
        | "none" => vec![r(entity)],
        "cluster" => {
            let mut v: Vec<Selector> = [
                "host",
                "remote-node",
                "init",
                "ingress",
                "health",
                "unmanaged",
                "kube-apiserver",
            ]
            .iter()
            .map(|n| r(n))
            .collect();
            v.push(Selector::equals(SOURCE_K8S, CLUSTER_KEY, cluster_name));
            v
        }
        _ => return None,
    };
    Some(out)
}
