//! Kubernetes `NetworkPolicy` objects, which Cilium enforces alongside its
//! own (docs "Deny Policies": precedence holds "regardless of whether they
//! are a Cilium Network Policy, a Clusterwide Cilium Network Policy or even
//! a Kubernetes Network Policy"), read with the Kubernetes API's semantics
//! (networking.k8s.io/v1 `NetworkPolicySpec`, kubernetes.io "Network
//! Policies").

use super::endpoint::Proto;
use super::labels::{NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, RawSelector, SOURCE_K8S, Selector};
use super::rule::{L3, L4, Peer, PeerRule, PortMatch, Rule, Subject};
use super::{ObjectRef, Unsupported};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    pod_selector: Option<RawSelector>,
    policy_types: Option<Vec<String>>,
    ingress: Option<Vec<IngressRule>>,
    egress: Option<Vec<EgressRule>>,
}

#[derive(Debug, Default, Deserialize)]
struct IngressRule {
    from: Option<Vec<NpPeer>>,
    ports: Option<Vec<NpPort>>,
}

#[derive(Debug, Default, Deserialize)]
struct EgressRule {
    to: Option<Vec<NpPeer>>,
    ports: Option<Vec<NpPort>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NpPeer {
    pod_selector: Option<RawSelector>,
    namespace_selector: Option<RawSelector>,
    ip_block: Option<IpBlock>,
}

#[derive(Debug, Default, Deserialize)]
struct IpBlock {
    cidr: String,
    #[serde(default)]
    except: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NpPort {
    protocol: Option<String>,
    port: Option<Value>,
    end_port: Option<u16>,
}

/// Parses one NetworkPolicy into a rule; `None` (reported) when invalid.
pub(crate) fn parse(
    object: usize,
    oref: &ObjectRef,
    obj: &Value,
    out: &mut Vec<Unsupported>,
) -> Option<Rule> {
    let ns = oref.namespace.as_deref().unwrap_or("default");
    let mut report = |path: &str, reason: String| {
        out.push(Unsupported {
            object: oref.clone(),
            path: path.into(),
            reason,
        });
    };
    let spec: Spec = match serde_json::from_value(obj.get("spec").cloned().unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => {
            report("spec", format!("invalid: {e}"));
            return None;
        }
    };
    let mut subject = match Selector::parse(&spec.pod_selector.unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => {
            report("spec.podSelector", format!("invalid: {e}"));
            return None;
        }
    };
    // "podSelector … selects the pods in the policy's namespace".
    subject.add_match(SOURCE_K8S, NAMESPACE_KEY, ns);
    // policyTypes: when absent, Ingress always and Egress if there are
    // egress rules (NetworkPolicySpec.policyTypes).
    let types = spec.policy_types.unwrap_or_else(|| {
        let mut t = vec!["Ingress".to_owned()];
        if spec.egress.is_some() {
            t.push("Egress".to_owned());
        }
        t
    });
    let ingress = spec.ingress.unwrap_or_default();
    let egress = spec.egress.unwrap_or_default();
    Some(Rule {
        object,
        spec: None,
        subject: Subject::Endpoints(subject),
        default_deny_ingress: types.iter().any(|t| t == "Ingress"),
        default_deny_egress: types.iter().any(|t| t == "Egress"),
        ingress: ingress
            .iter()
            .enumerate()
            .map(|(i, r)| {
                entry(
                    i,
                    r.from.as_deref(),
                    r.ports.as_deref(),
                    ns,
                    &format!("spec.ingress[{i}]"),
                    &mut report,
                )
            })
            .collect(),
        egress: egress
            .iter()
            .enumerate()
            .map(|(i, r)| {
                entry(
                    i,
                    r.to.as_deref(),
                    r.ports.as_deref(),
                    ns,
                    &format!("spec.egress[{i}]"),
                    &mut report,
                )
            })
            .collect(),
        ingress_deny: Vec::new(),
        egress_deny: Vec::new(),
    })
}

/// One rule: no (or empty) peers means every peer, no (or empty) ports
/// every port ("If this field is empty or missing, this rule matches all
/// sources/destinations … all ports").
fn entry(
    index: usize,
    peers: Option<&[NpPeer]>,
    ports: Option<&[NpPort]>,
    ns: &str,
    path: &str,
    report: &mut impl FnMut(&str, String),
) -> PeerRule {
    let l3 = match peers {
        None | Some([]) => L3::Any,
        Some(v) => L3::Peers(
            v.iter()
                .enumerate()
                .filter_map(|(i, p)| peer(p, ns, &format!("{path}.peers[{i}]"), report))
                .collect(),
        ),
    };
    let l4 = match ports {
        None | Some([]) => L4::All,
        Some(v) => L4::Only(
            v.iter()
                .enumerate()
                .filter_map(|(i, p)| port(p, &format!("{path}.ports[{i}]"), report))
                .collect(),
        ),
    };
    PeerRule { index, l3, l4 }
}

/// A peer: `podSelector` alone selects in the policy's namespace;
/// `namespaceSelector` selects namespaces by their labels (Cilium matches
/// them as `io.cilium.k8s.namespace.labels.*`), ANDed with `podSelector`;
/// `ipBlock` is a CIDR with exceptions.
fn peer(p: &NpPeer, ns: &str, path: &str, report: &mut impl FnMut(&str, String)) -> Option<Peer> {
    if let Some(b) = &p.ip_block {
        let net = cidr(&b.cidr, path, report)?;
        let except = b
            .except
            .iter()
            .filter_map(|e| cidr(e, path, report))
            .collect();
        return Some(Peer::Cidr { net, except });
    }
    let mut sel = match Selector::parse(p.pod_selector.as_ref().unwrap_or(&RawSelector::default()))
    {
        Ok(s) => s,
        Err(e) => {
            report(path, format!("invalid: {e}"));
            return None;
        }
    };
    match &p.namespace_selector {
        None => sel.add_match(SOURCE_K8S, NAMESPACE_KEY, ns),
        Some(raw) => {
            let nss = match Selector::parse(raw) {
                Ok(s) => s,
                Err(e) => {
                    report(path, format!("invalid: {e}"));
                    return None;
                }
            };
            sel.add_exists(SOURCE_K8S, NAMESPACE_KEY);
            for mut r in nss.reqs {
                r.source = SOURCE_K8S.into();
                r.key = format!("{NAMESPACE_LABELS_PREFIX}{}", r.key);
                r.from_match_labels = false;
                sel.reqs.push(r);
            }
        }
    }
    Some(Peer::Labels(sel))
}

fn cidr(c: &str, path: &str, report: &mut impl FnMut(&str, String)) -> Option<IpNet> {
    let n = c.parse::<IpNet>().ok();
    if n.is_none() {
        report(path, format!("invalid: {c:?} is not a CIDR"));
    }
    n
}

/// `protocol` defaults to TCP; `port` is a number or a named port; absent
/// means every port of the protocol; `endPort` extends a numeric port.
fn port(p: &NpPort, path: &str, report: &mut impl FnMut(&str, String)) -> Option<PortMatch> {
    let proto = match p.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Proto::Tcp,
        "UDP" => Proto::Udp,
        "SCTP" => Proto::Sctp,
        other => {
            report(path, format!("invalid: protocol {other:?}"));
            return None;
        }
    };
    match &p.port {
        None => Some(PortMatch::Range {
            lo: 0,
            hi: 0,
            proto: Some(proto),
        }),
        Some(Value::Number(n)) => {
            let lo = n.as_u64().and_then(|v| u16::try_from(v).ok())?;
            let hi = p.end_port.filter(|e| *e > lo).unwrap_or(lo);
            Some(PortMatch::Range {
                lo,
                hi,
                proto: Some(proto),
            })
        }
        Some(Value::String(name)) => Some(PortMatch::Named {
            name: name.clone(),
            proto: Some(proto),
        }),
        Some(other) => {
            report(path, format!("invalid: port {other}"));
            None
        }
    }
}
