//! What the lab reads from the rendered objects: the pods the Deployments
//! would run and the identities Cilium would give them.
//!
//! The lab used to build pods from the store and rules from the policy
//! model, so it could only prove that the model compiles to nftables. Users
//! apply the rendered objects; a renderer mistake (a selector matching the
//! wrong pods, a missing deny, a port left out) lives only there. So the
//! lab's pods come from the rendered `Deployment`s (namespace, pod labels,
//! container ports, replicas, the address pool their annotation names) and
//! its rules from the rendered policies (see [`crate::nft`]); the model stays
//! the first of `lab verify`'s three verdicts.

use crate::{LabError, Result};
use ipnet::Ipv6Net;
use palisade_core::Snapshot;
use palisade_kube::RenderOptions;
use palisade_kube::eval::{
    ContainerPort, Endpoint, Identity, Label, Proto, RawSelector, SOURCE_K8S, Selector,
    container_ports,
};
use palisade_kube::options::InClusterProxy;
use palisade_kube::render::{DEPLOYMENT_LABEL, IP_POOL_ANNOTATION, TENANT_LABEL};
use serde_json::Value;
use std::collections::BTreeMap;

/// Cluster DNS's pod labels: CoreDNS as kubeadm and EKS deploy it
/// (`k8s-app: kube-dns` in kubeadm's CoreDNS Deployment and EKS's add-on),
/// in `kube-system`. Taken from the cluster, not from the policies, so a
/// policy selecting the wrong labels misses the stand-in.
pub const DNS_LABELS: [(&str, &str); 1] = [("k8s-app", "kube-dns")];
/// Cluster DNS's namespace.
pub const DNS_NAMESPACE: &str = "kube-system";

/// The render options the lab renders with: the defaults, with Palisade's
/// egress proxy in the cluster on egress nodes (host network, so Cilium
/// sees it as a `remote-node` carrying the egress nodes' labels; the lab
/// plays that node).
pub fn render_options() -> RenderOptions {
    let mut o = RenderOptions::default();
    o.proxy.in_cluster = Some(InClusterProxy::new(String::new()));
    o
}

/// Renders `snapshot` as the lab does. Egress addresses and per-tenant
/// proxy ports are left out as `eval::RenderedPolicy::new` does: they shape
/// no policy the lab enforces (the lab's egress addresses are IPv6, which
/// the egress gateway objects refuse), and the lab's model leg uses the
/// shared proxy port.
pub fn render(snapshot: &Snapshot) -> Result<Vec<Value>> {
    let mut policy_only = snapshot.clone();
    for t in &mut policy_only.tenants {
        t.egress.ip = None;
        t.proxy_port = 0;
    }
    let rendered =
        palisade_kube::render(&policy_only, &render_options()).map_err(LabError::Render)?;
    Ok(rendered.objects().map(|o| o.body.clone()).collect())
}

/// One rendered tenant Deployment, as the lab runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedDeployment {
    /// `palisade.io/tenant` of its pods.
    pub tenant: String,
    /// `palisade.io/deployment` of its pods.
    pub deployment: String,
    /// Its namespace.
    pub namespace: String,
    /// `spec.replicas` (Kubernetes' default: 1).
    pub replicas: u32,
    /// The first container's image.
    pub image: String,
    /// The pod template's labels.
    pub labels: BTreeMap<String, String>,
    /// Every container port.
    pub ports: Vec<ContainerPort>,
    /// The IPv6 pool its annotation names (a `CiliumPodIPPool`'s first CIDR).
    pub subnet: Ipv6Net,
}

impl RenderedDeployment {
    /// The pods' identity as Cilium sees it, with their namespace's labels.
    pub fn identity(&self, namespaces: &BTreeMap<String, BTreeMap<String, String>>) -> Endpoint {
        let mut ep = Endpoint::pod(
            &self.namespace,
            &format!("{}/{}", self.tenant, self.deployment),
            self.labels.clone(),
        );
        if let Identity::Pod {
            namespace_labels, ..
        } = &mut ep.identity
        {
            *namespace_labels = namespaces.get(&self.namespace).cloned().unwrap_or_default();
        }
        ep.ports = self.ports.clone();
        ep.addresses = vec![self.subnet.addr().into()];
        ep
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objects
        .iter()
        .filter(move |o| o.get("kind").and_then(Value::as_str) == Some(kind))
}

/// The tenant Deployments among `objects` (those whose pods carry the
/// tenant and deployment labels), in object order.
pub fn deployments(objects: &[Value]) -> Result<Vec<RenderedDeployment>> {
    let pools: BTreeMap<&str, &Value> = of_kind(objects, "CiliumPodIPPool")
        .filter_map(|p| Some((str_at(p, "/metadata/name")?, p)))
        .collect();
    let mut out = Vec::new();
    for d in of_kind(objects, "Deployment") {
        let labels = string_map(d.pointer("/spec/template/metadata/labels"));
        let (Some(tenant), Some(deployment)) =
            (labels.get(TENANT_LABEL), labels.get(DEPLOYMENT_LABEL))
        else {
            continue;
        };
        let name = format!("{tenant}/{deployment}");
        out.push(RenderedDeployment {
            tenant: tenant.clone(),
            deployment: deployment.clone(),
            namespace: str_at(d, "/metadata/namespace").unwrap_or("default").into(),
            replicas: d
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .map_or(1, |r| u32::try_from(r).unwrap_or(u32::MAX)),
            image: str_at(d, "/spec/template/spec/containers/0/image")
                .unwrap_or_default()
                .into(),
            ports: container_ports(d.pointer("/spec/template").unwrap_or(&Value::Null)),
            subnet: pool_subnet(d, &pools, &name)?,
            labels,
        });
    }
    Ok(out)
}

/// The IPv6 CIDR of the pool a Deployment's pods take addresses from:
/// Cilium's multi-pool IPAM reads `ipam.cilium.io/ipv6-pool` and allocates
/// from that `CiliumPodIPPool` (docs "Multi-Pool", v1.17/v1.18).
fn pool_subnet(d: &Value, pools: &BTreeMap<&str, &Value>, name: &str) -> Result<Ipv6Net> {
    let pointer = format!(
        "/spec/template/metadata/annotations/{}",
        IP_POOL_ANNOTATION.replace('/', "~1")
    );
    let pool = str_at(d, &pointer).ok_or_else(|| {
        LabError::Objects(format!("Deployment {name} names no {IP_POOL_ANNOTATION}"))
    })?;
    let cidr = pools
        .get(pool)
        .and_then(|p| str_at(p, "/spec/ipv6/cidrs/0"))
        .ok_or_else(|| {
            LabError::Objects(format!(
                "Deployment {name}: CiliumPodIPPool {pool} is not rendered or has no IPv6 CIDR"
            ))
        })?;
    cidr.parse().map_err(|_| {
        LabError::Objects(format!(
            "CiliumPodIPPool {pool}: {cidr:?} is not an IPv6 CIDR"
        ))
    })
}

/// Each rendered Namespace's labels (Cilium adds them to its pods'
/// identities as `io.cilium.k8s.namespace.labels.*`).
pub fn namespace_labels(objects: &[Value]) -> BTreeMap<String, BTreeMap<String, String>> {
    of_kind(objects, "Namespace")
        .filter_map(|n| {
            Some((
                str_at(n, "/metadata/name")?.to_owned(),
                string_map(n.pointer("/metadata/labels")),
            ))
        })
        .collect()
}

/// The labels of the nodes the rendered egress proxy runs on: its
/// Deployment's `nodeSelector` (the nodes carry at least those labels).
pub fn egress_node_labels(objects: &[Value], options: &RenderOptions) -> BTreeMap<String, String> {
    of_kind(objects, "Deployment")
        .find(|d| {
            str_at(d, "/metadata/namespace") == Some(options.proxy.namespace.as_str())
                && str_at(d, "/spec/template/metadata/labels/app.kubernetes.io~1name")
                    == Some(options.proxy.app.as_str())
        })
        .map(|d| string_map(d.pointer("/spec/template/spec/nodeSelector")))
        .unwrap_or_default()
}

/// Cluster DNS as a pod with [`DNS_LABELS`] in [`DNS_NAMESPACE`].
pub fn dns_identity() -> Endpoint {
    let labels = DNS_LABELS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut ep = Endpoint::pod(DNS_NAMESPACE, "coredns", labels);
    ep.ports = [Proto::Udp, Proto::Tcp]
        .into_iter()
        .map(|proto| ContainerPort {
            name: Some("dns".into()),
            port: 53,
            proto,
        })
        .collect();
    ep
}

/// What cluster DNS answers for the rendered Services: each Service's
/// `<name>.<namespace>.svc.cluster.local` (and `<name>.<namespace>.svc`)
/// with the addresses of the pods its selector picks, as CoreDNS answers
/// for a headless Service (the lab has no cluster IPs; Kubernetes docs "DNS
/// for Services and Pods"). `pods_of` gives a deployment's pod addresses.
pub fn dns_names<'a>(
    objects: &[Value],
    deployments: &'a [RenderedDeployment],
    pods_of: impl Fn(&'a RenderedDeployment) -> Vec<std::net::IpAddr>,
) -> crate::dns::Names {
    let mut out = crate::dns::Names::new();
    for svc in of_kind(objects, "Service") {
        let (Some(name), Some(ns)) = (
            str_at(svc, "/metadata/name"),
            str_at(svc, "/metadata/namespace"),
        ) else {
            continue;
        };
        let selector = string_map(svc.pointer("/spec/selector"));
        if selector.is_empty() {
            continue;
        }
        let addrs: Vec<std::net::IpAddr> = deployments
            .iter()
            .filter(|d| {
                d.namespace == ns && selector.iter().all(|(k, v)| d.labels.get(k) == Some(v))
            })
            .flat_map(&pods_of)
            .collect();
        for suffix in ["svc.cluster.local", "svc"] {
            out.insert(format!("{name}.{ns}.{suffix}"), addrs.clone());
        }
    }
    out
}

/// A rendered `CiliumEgressGatewayPolicy`: which pods it SNATs, towards
/// where, and to which address. Fields as in the CRD pinned in
/// /work/shared/schemas/cilium (v1.17.17 and v1.18.11; 1.18 adds
/// `egressGateways`, which "if this field has any entries the contents of
/// the egressGateway field will be ignored").
#[derive(Debug, Clone)]
pub struct EgressGatewayPolicy {
    /// Its name (the policy is cluster-scoped).
    pub name: String,
    /// Its `palisade.io/tenant` label: whose egress address it stands for.
    pub tenant: Option<String>,
    /// `spec.selectors`: (namespaceSelector, podSelector) pairs.
    selectors: Vec<(Option<Selector>, Option<Selector>)>,
    /// `spec.destinationCIDRs`.
    pub destination_cidrs: Vec<String>,
    /// The gateway's `egressIP`, if set.
    pub egress_ip: Option<std::net::IpAddr>,
}

impl EgressGatewayPolicy {
    /// Whether the policy selects the pods of `d` (in a namespace with
    /// `ns_labels`): some entry of `selectors` whose namespaceSelector
    /// matches the namespace's labels and whose podSelector matches the
    /// pod's identity labels (its labels and `io.kubernetes.pod.namespace`,
    /// as the CRD's docs example selects a namespace with); a selector
    /// left out constrains nothing ("if present but empty, it selects
    /// all").
    pub fn selects(&self, d: &RenderedDeployment, ns_labels: &BTreeMap<String, String>) -> bool {
        let k8s = |m: &BTreeMap<String, String>| -> Vec<Label> {
            m.iter()
                .map(|(k, v)| Label::new(SOURCE_K8S, k, v))
                .collect()
        };
        let mut ns = k8s(ns_labels);
        ns.push(Label::new(
            SOURCE_K8S,
            "kubernetes.io/metadata.name",
            &d.namespace,
        ));
        let mut pod = k8s(&d.labels);
        pod.push(Label::new(
            SOURCE_K8S,
            "io.kubernetes.pod.namespace",
            &d.namespace,
        ));
        self.selectors.iter().any(|(n, p)| {
            n.as_ref().is_none_or(|s| s.matches(&ns)) && p.as_ref().is_none_or(|s| s.matches(&pod))
        })
    }

    /// Whether the destinations cover every address (`0.0.0.0/0` or `::/0`).
    pub fn to_everywhere(&self) -> bool {
        self.destination_cidrs
            .iter()
            .any(|c| c == "0.0.0.0/0" || c == "::/0")
    }
}

/// The rendered `CiliumEgressGatewayPolicy` objects; one that cannot be
/// read is an error (the API server would refuse it).
pub fn egress_gateway_policies(objects: &[Value]) -> Result<Vec<EgressGatewayPolicy>> {
    of_kind(objects, "CiliumEgressGatewayPolicy")
        .map(|p| {
            let name = str_at(p, "/metadata/name").unwrap_or_default().to_owned();
            let bad = |what: String| {
                LabError::Objects(format!("CiliumEgressGatewayPolicy {name}: {what}"))
            };
            let selector = |v: Option<&Value>| -> Result<Option<Selector>> {
                let Some(v) = v else { return Ok(None) };
                let raw: RawSelector =
                    serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
                Selector::parse(&raw).map(Some).map_err(bad)
            };
            let selectors = p
                .pointer("/spec/selectors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|s| {
                    Ok((
                        selector(s.get("namespaceSelector"))?,
                        selector(s.get("podSelector"))?,
                    ))
                })
                .collect::<Result<_>>()?;
            let gateway = p
                .pointer("/spec/egressGateways/0")
                .or_else(|| p.pointer("/spec/egressGateway"));
            let egress_ip = match gateway
                .and_then(|g| g.get("egressIP"))
                .and_then(Value::as_str)
            {
                Some(ip) => Some(
                    ip.parse()
                        .map_err(|_| bad(format!("egressIP {ip:?} is not an address")))?,
                ),
                None => None,
            };
            Ok(EgressGatewayPolicy {
                tenant: str_at(
                    p,
                    &format!("/metadata/labels/{}", TENANT_LABEL.replace('/', "~1")),
                )
                .map(str::to_owned),
                destination_cidrs: p
                    .pointer("/spec/destinationCIDRs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect(),
                name,
                selectors,
                egress_ip,
            })
        })
        .collect()
}
