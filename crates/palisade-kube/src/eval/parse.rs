//! From policy objects (JSON) to [`Rule`]s, reporting every field the
//! evaluator does not model instead of ignoring it.
//!
//! Field names are those of the CRDs pinned in /work/shared/schemas/cilium
//! (v1.17.17 and v1.18.11 carry the same rule fields; 1.18 adds `spec.log`).

use super::endpoint::{Proto, entity_selectors};
use super::labels::{
    NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, RawSelector, SOURCE_ANY, SOURCE_K8S, SOURCE_RESERVED,
    Selector,
};
use super::rule::{L3, L4, Peer, PeerRule, PortMatch, Rule, Subject};
use super::{ObjectRef, Unsupported};
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

type Rest = BTreeMap<String, Value>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    endpoint_selector: Option<RawSelector>,
    node_selector: Option<Value>,
    ingress: Option<Vec<RawIngress>>,
    ingress_deny: Option<Vec<RawIngress>>,
    egress: Option<Vec<RawEgress>>,
    egress_deny: Option<Vec<RawEgress>>,
    enable_default_deny: Option<RawDefaultDeny>,
    // Fields without effect on verdicts, named so they are not reported.
    #[serde(rename = "description")]
    _description: Option<Value>,
    #[serde(rename = "labels")]
    _labels: Option<Value>,
    #[serde(rename = "log")]
    _log: Option<Value>,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Debug, Default, Deserialize)]
struct RawDefaultDeny {
    ingress: Option<bool>,
    egress: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIngress {
    from_endpoints: Option<Vec<RawSelector>>,
    from_entities: Option<Vec<String>>,
    from_nodes: Option<Vec<RawSelector>>,
    #[serde(rename = "fromCIDR")]
    from_cidr: Option<Vec<String>>,
    #[serde(rename = "fromCIDRSet")]
    from_cidr_set: Option<Vec<RawCidrRule>>,
    to_ports: Option<Vec<RawPortRule>>,
    icmps: Option<Vec<Value>>,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEgress {
    to_endpoints: Option<Vec<RawSelector>>,
    to_entities: Option<Vec<String>>,
    to_nodes: Option<Vec<RawSelector>>,
    #[serde(rename = "toCIDR")]
    to_cidr: Option<Vec<String>>,
    #[serde(rename = "toCIDRSet")]
    to_cidr_set: Option<Vec<RawCidrRule>>,
    to_ports: Option<Vec<RawPortRule>>,
    icmps: Option<Vec<Value>>,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Debug, Default, Deserialize)]
struct RawCidrRule {
    cidr: Option<String>,
    #[serde(default)]
    except: Vec<String>,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Debug, Default, Deserialize)]
struct RawPortRule {
    ports: Option<Vec<RawPort>>,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPort {
    port: Option<String>,
    end_port: Option<i64>,
    protocol: Option<String>,
    #[serde(flatten)]
    rest: Rest,
}

/// The peer fields of one ingress or egress entry, whichever direction.
#[derive(Debug, Default)]
struct PeerFields<'a> {
    endpoints: Option<&'a [RawSelector]>,
    entities: Option<&'a [String]>,
    nodes: Option<&'a [RawSelector]>,
    cidr: Option<&'a [String]>,
    cidr_set: Option<&'a [RawCidrRule]>,
    to_ports: Option<&'a [RawPortRule]>,
    icmps: Option<&'a [Value]>,
    rest: Option<&'a Rest>,
}

/// Fields the CRDs define but the evaluator does not model, with why.
const NOT_MODELLED: &[(&str, &str)] = &[
    (
        "toFQDNs",
        "DNS-based peers (toFQDNs) depend on DNS answers; they select nothing here",
    ),
    (
        "toServices",
        "service-based peers (toServices) are not modelled; they select nothing here",
    ),
    (
        "toGroups",
        "cloud-provider groups are not modelled; they select nothing here",
    ),
    (
        "fromGroups",
        "cloud-provider groups are not modelled; they select nothing here",
    ),
    (
        "toRequires",
        "toRequires (deprecated in 1.17) is not modelled; the rule is evaluated without it",
    ),
    (
        "fromRequires",
        "fromRequires (deprecated in 1.17) is not modelled; the rule is evaluated without it",
    ),
    (
        "authentication",
        "mutual authentication is not modelled; the rule is evaluated as plain L3/L4",
    ),
    (
        "rules",
        "L7 rules are not modelled; the port is evaluated as an L4 allow",
    ),
    (
        "listener",
        "Envoy listeners are not modelled; the port is evaluated as an L4 allow",
    ),
    (
        "serverNames",
        "TLS SNI matching is not modelled; the port is evaluated as an L4 allow",
    ),
    (
        "originatingTLS",
        "TLS interception is not modelled; the port is evaluated as an L4 allow",
    ),
    (
        "terminatingTLS",
        "TLS interception is not modelled; the port is evaluated as an L4 allow",
    ),
    (
        "cidrGroupRef",
        "CiliumCIDRGroup references are not modelled; they select nothing here",
    ),
    (
        "cidrGroupSelector",
        "CiliumCIDRGroup selectors are not modelled; they select nothing here",
    ),
];

/// Parses policy objects into rules, reporting what it cannot model.
pub(crate) struct Parser<'a> {
    /// Index of the object being parsed.
    pub object: usize,
    /// Its reference.
    pub oref: &'a ObjectRef,
    /// Its namespace (`None`: clusterwide).
    pub ns: Option<&'a str>,
    /// `cluster-name`, for the `cluster` entity.
    pub cluster: &'a str,
    /// Where reports go.
    pub out: &'a mut Vec<Unsupported>,
}

impl Parser<'_> {
    fn report(&mut self, path: &str, reason: impl Into<String>) {
        self.out.push(Unsupported {
            object: self.oref.clone(),
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn report_rest(&mut self, rest: &Rest, path: &str) {
        for key in rest.keys() {
            let reason = NOT_MODELLED
                .iter()
                .find(|(k, _)| k == key)
                .map_or("unknown field (not in the v1.17/v1.18 CRDs)", |(_, r)| r);
            self.report(&format!("{path}.{key}"), reason);
        }
    }

    fn typed<T: DeserializeOwned>(&mut self, v: &Value, path: &str) -> Option<T> {
        match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.report(path, format!("invalid: {e}"));
                None
            }
        }
    }

    /// The object's `spec` and `specs[]` as rules.
    pub fn object(&mut self, obj: &Value) -> Vec<Rule> {
        let mut rules = Vec::new();
        if let Some(spec) = obj.get("spec") {
            rules.extend(self.rule(spec, None, "spec"));
        }
        if let Some(specs) = obj.get("specs").and_then(Value::as_array) {
            for (i, s) in specs.iter().enumerate() {
                rules.extend(self.rule(s, Some(i), &format!("specs[{i}]")));
            }
        }
        rules
    }

    fn rule(&mut self, v: &Value, spec: Option<usize>, path: &str) -> Option<Rule> {
        let raw: RawSpec = self.typed(v, path)?;
        self.report_rest(&raw.rest, path);
        let subject = self.subject(&raw, path)?;
        let ing = raw.ingress.as_deref().unwrap_or_default();
        let ing_deny = raw.ingress_deny.as_deref().unwrap_or_default();
        let eg = raw.egress.as_deref().unwrap_or_default();
        let eg_deny = raw.egress_deny.as_deref().unwrap_or_default();
        // CRD `enableDefaultDeny`: "If not specified, the default is true for
        // each traffic direction that has rules" — Rule.Sanitize uses
        // len(Ingress) > 0 || len(IngressDeny) > 0 (pkg/policy/api/rule_validation.go).
        let dd = raw.enable_default_deny.unwrap_or_default();
        Some(Rule {
            object: self.object,
            spec,
            default_deny_ingress: dd
                .ingress
                .unwrap_or(!ing.is_empty() || !ing_deny.is_empty()),
            default_deny_egress: dd.egress.unwrap_or(!eg.is_empty() || !eg_deny.is_empty()),
            ingress: self.entries(ing, &subject, &format!("{path}.ingress"), ingress_fields),
            ingress_deny: self.entries(
                ing_deny,
                &subject,
                &format!("{path}.ingressDeny"),
                ingress_fields,
            ),
            egress: self.entries(eg, &subject, &format!("{path}.egress"), egress_fields),
            egress_deny: self.entries(
                eg_deny,
                &subject,
                &format!("{path}.egressDeny"),
                egress_fields,
            ),
            subject,
        })
    }

    /// `endpointSelector`, scoped as `ParseToCiliumRule` does
    /// (pkg/k8s/apis/cilium.io/utils/utils.go): in a CiliumNetworkPolicy it
    /// always gets `k8s:io.kubernetes.pod.namespace=<policy namespace>`,
    /// replacing any namespace the author wrote; clusterwide it is kept.
    fn subject(&mut self, raw: &RawSpec, path: &str) -> Option<Subject> {
        match (&raw.endpoint_selector, &raw.node_selector) {
            (Some(es), None) => {
                let mut s = self.selector(es, &format!("{path}.endpointSelector"))?;
                if let Some(ns) = self.ns {
                    s.add_match(SOURCE_K8S, NAMESPACE_KEY, ns);
                }
                Some(Subject::Endpoints(s))
            }
            (None, Some(_)) => {
                self.report(
                    &format!("{path}.nodeSelector"),
                    "host policies (nodeSelector) are not modelled; this rule enforces nothing here",
                );
                Some(Subject::Nodes)
            }
            _ => {
                self.report(
                    path,
                    "invalid: a rule needs exactly one of endpointSelector and nodeSelector",
                );
                None
            }
        }
    }

    fn selector(&mut self, raw: &RawSelector, path: &str) -> Option<Selector> {
        match Selector::parse(raw) {
            Ok(s) => Some(s),
            Err(e) => {
                self.report(path, format!("invalid: {e}"));
                None
            }
        }
    }

    fn entries<T>(
        &mut self,
        list: &[T],
        subject: &Subject,
        path: &str,
        fields: fn(&T) -> PeerFields<'_>,
    ) -> Vec<PeerRule> {
        list.iter()
            .enumerate()
            .map(|(i, e)| self.entry(i, &fields(e), subject, &format!("{path}[{i}]")))
            .collect()
    }

    fn entry(
        &mut self,
        index: usize,
        f: &PeerFields<'_>,
        subject: &Subject,
        path: &str,
    ) -> PeerRule {
        if let Some(rest) = f.rest {
            self.report_rest(rest, path);
        }
        let l4 = self.l4(f, path);
        let has_l3 = f.endpoints.is_some()
            || f.entities.is_some()
            || f.nodes.is_some()
            || f.cidr.is_some()
            || f.cidr_set.is_some()
            || f.rest.is_some_and(|r| {
                r.keys()
                    .any(|k| k.starts_with("to") || k.starts_with("from"))
            });
        let l3 = if !has_l3 && matches!(l4, L4::All) {
            // An entry with neither peers nor ports ("egress: [{}]") allows
            // nothing; it only puts the endpoint in default deny (docs
            // "Layer 3 Examples", "Ingress/Egress Default Deny",
            // examples/policies/l3/egress-default-deny).
            L3::Peers(Vec::new())
        } else if !has_l3 {
            L3::Any
        } else {
            L3::Peers(self.peers(f, subject, path))
        };
        PeerRule { index, l3, l4 }
    }

    /// Every peer field; a field present but empty selects nothing
    /// (`mergeEndpointSelectors`: "empty non-nil slices … should not result
    /// in any identity being selected").
    fn peers(&mut self, f: &PeerFields<'_>, subject: &Subject, path: &str) -> Vec<Peer> {
        let mut out = Vec::new();
        for (i, raw) in f.endpoints.unwrap_or_default().iter().enumerate() {
            let p = format!("{path}.endpoints[{i}]");
            if let Some(s) = self.selector(raw, &p) {
                out.push(Peer::Labels(self.scope_peer(s, subject, &p)));
            }
        }
        for (i, e) in f.entities.unwrap_or_default().iter().enumerate() {
            match entity_selectors(e, self.cluster) {
                Some(v) => out.extend(v.into_iter().map(Peer::Labels)),
                None => self.report(
                    &format!("{path}.entities[{i}]"),
                    format!("invalid: unknown entity {e:?}"),
                ),
            }
        }
        for (i, raw) in f.nodes.unwrap_or_default().iter().enumerate() {
            if let Some(s) = self.selector(raw, &format!("{path}.nodes[{i}]")) {
                out.push(Peer::Nodes(s));
            }
        }
        for (i, c) in f.cidr.unwrap_or_default().iter().enumerate() {
            if let Some(net) = self.cidr(c, &format!("{path}.cidr[{i}]")) {
                out.push(Peer::Cidr {
                    net,
                    except: Vec::new(),
                });
            }
        }
        for (i, r) in f.cidr_set.unwrap_or_default().iter().enumerate() {
            out.extend(self.cidr_rule(r, &format!("{path}.cidrSet[{i}]")));
        }
        out
    }

    /// Namespace scoping of `fromEndpoints`/`toEndpoints`, as
    /// `getEndpointSelector` in pkg/k8s/apis/cilium.io/utils/utils.go:
    /// selectors on `reserved:` keys are kept; otherwise, unless the author
    /// named `k8s:`/`any:io.kubernetes.pod.namespace`, a namespaced policy
    /// adds its own namespace and a clusterwide one adds "has a namespace"
    /// (so it never selects reserved identities). Neither is added when
    /// the subject selects `reserved:init` pods (they have no labels yet).
    fn scope_peer(&mut self, mut s: Selector, subject: &Subject, path: &str) -> Selector {
        if s.has_key_prefix(SOURCE_RESERVED, "") {
            return s;
        }
        if s.has_key(SOURCE_K8S, NAMESPACE_KEY) || s.has_key(SOURCE_ANY, NAMESPACE_KEY) {
            return s;
        }
        let matches_init =
            matches!(subject, Subject::Endpoints(e) if e.has_key(SOURCE_RESERVED, "init"));
        if matches_init {
            return s;
        }
        match self.ns {
            None => s.add_exists(SOURCE_K8S, NAMESPACE_KEY),
            Some(ns) => {
                if s.has_key_prefix(SOURCE_K8S, NAMESPACE_LABELS_PREFIX)
                    || s.has_key_prefix(SOURCE_ANY, NAMESPACE_LABELS_PREFIX)
                {
                    self.report(
                        path,
                        "namespace labels in a CiliumNetworkPolicy peer: documented for 1.17/1.18 as \
                         CiliumClusterwideNetworkPolicy-only, changed later (cilium/cilium#30149, #44532); \
                         evaluated with the policy's namespace added",
                    );
                }
                s.add_match(SOURCE_K8S, NAMESPACE_KEY, ns);
            }
        }
        s
    }

    fn cidr(&mut self, c: &str, path: &str) -> Option<IpNet> {
        let parsed = c
            .parse::<IpNet>()
            .ok()
            .or_else(|| c.parse::<IpAddr>().ok().map(IpNet::from));
        if parsed.is_none() {
            self.report(path, format!("invalid: {c:?} is not a CIDR"));
        }
        parsed
    }

    fn cidr_rule(&mut self, r: &RawCidrRule, path: &str) -> Option<Peer> {
        self.report_rest(&r.rest, path);
        let net = self.cidr(r.cidr.as_deref()?, &format!("{path}.cidr"))?;
        let except = r
            .except
            .iter()
            .enumerate()
            .filter_map(|(i, e)| self.cidr(e, &format!("{path}.except[{i}]")))
            .collect();
        Some(Peer::Cidr { net, except })
    }

    fn l4(&mut self, f: &PeerFields<'_>, path: &str) -> L4 {
        if f.to_ports.is_none() && f.icmps.is_none() {
            return L4::All;
        }
        let mut out = Vec::new();
        for (i, pr) in f.to_ports.unwrap_or_default().iter().enumerate() {
            let p = format!("{path}.toPorts[{i}]");
            self.report_rest(&pr.rest, &p);
            match pr.ports.as_deref() {
                // A port rule without ports covers every port (L7-only).
                None | Some([]) => out.push(PortMatch::Range {
                    lo: 0,
                    hi: 0,
                    proto: None,
                }),
                Some(ports) => {
                    for (j, port) in ports.iter().enumerate() {
                        out.extend(self.port(port, &format!("{p}.ports[{j}]")));
                    }
                }
            }
        }
        out.extend(f.icmps.unwrap_or_default().iter().map(|_| PortMatch::Icmp));
        L4::Only(out)
    }

    /// One `ports[]` entry: `port` is a number (0 = every port) or a
    /// container-port name, `endPort` extends it to a range, `protocol` is
    /// TCP, UDP, SCTP or ANY (default ANY) — CRD `PortProtocol`.
    fn port(&mut self, p: &RawPort, path: &str) -> Option<PortMatch> {
        self.report_rest(&p.rest, path);
        let proto = match p.protocol.as_deref() {
            None | Some("ANY") => None,
            Some("TCP") => Some(Proto::Tcp),
            Some("UDP") => Some(Proto::Udp),
            Some("SCTP") => Some(Proto::Sctp),
            Some(other) => {
                self.report(
                    &format!("{path}.protocol"),
                    format!("invalid: protocol {other:?}"),
                );
                return None;
            }
        };
        let text = p.port.as_deref().unwrap_or("0");
        if let Ok(lo) = text.parse::<u16>() {
            let hi = p
                .end_port
                .and_then(|e| u16::try_from(e).ok())
                .filter(|e| *e > lo)
                .unwrap_or(lo);
            return Some(PortMatch::Range { lo, hi, proto });
        }
        if is_port_name(text) {
            return Some(PortMatch::Named {
                name: text.into(),
                proto,
            });
        }
        self.report(&format!("{path}.port"), format!("invalid: port {text:?}"));
        None
    }
}

/// The CRD's pattern for a named port: letters, digits and single dashes,
/// at least one letter.
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && s.chars().any(|c| c.is_ascii_alphabetic())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn ingress_fields(r: &RawIngress) -> PeerFields<'_> {
    PeerFields {
        endpoints: r.from_endpoints.as_deref(),
        entities: r.from_entities.as_deref(),
        nodes: r.from_nodes.as_deref(),
        cidr: r.from_cidr.as_deref(),
        cidr_set: r.from_cidr_set.as_deref(),
        to_ports: r.to_ports.as_deref(),
        icmps: r.icmps.as_deref(),
        rest: (!r.rest.is_empty()).then_some(&r.rest),
    }
}

fn egress_fields(r: &RawEgress) -> PeerFields<'_> {
    PeerFields {
        endpoints: r.to_endpoints.as_deref(),
        entities: r.to_entities.as_deref(),
        nodes: r.to_nodes.as_deref(),
        cidr: r.to_cidr.as_deref(),
        cidr_set: r.to_cidr_set.as_deref(),
        to_ports: r.to_ports.as_deref(),
        icmps: r.icmps.as_deref(),
        rest: (!r.rest.is_empty()).then_some(&r.rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_the_crd_pattern() {
        for ok in ["http", "http-8080", "a1", "pg"] {
            assert!(is_port_name(ok), "{ok}");
        }
        for bad in ["", "8080", "-http", "http-", "ht--tp", "h_t"] {
            assert!(!is_port_name(bad), "{bad}");
        }
    }

    #[test]
    fn invalid_ports_and_protocols_are_reported_with_their_path() {
        let oref = ObjectRef {
            kind: "CiliumNetworkPolicy".into(),
            namespace: Some("n".into()),
            name: "p".into(),
        };
        let mut out = Vec::new();
        let mut p = Parser {
            object: 0,
            oref: &oref,
            ns: Some("n"),
            cluster: "default",
            out: &mut out,
        };
        let spec = serde_json::json!({"spec": {"endpointSelector": {}, "egress": [{"toPorts": [{"ports": [
            {"port": "80", "protocol": "ICMP"}, {"port": "-x-"}, {"port": "443", "endPort": 400}
        ]}]}]}});
        let rules = p.object(&spec);
        assert_eq!(rules.len(), 1);
        let paths: Vec<&str> = out.iter().map(|u| u.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.egress[0].toPorts[0].ports[0].protocol",
                "spec.egress[0].toPorts[0].ports[1].port"
            ]
        );
        // An endPort below the port leaves the single port.
        let L4::Only(ports) = &rules[0].egress[0].l4 else {
            panic!("ports expected")
        };
        assert!(matches!(
            ports[..],
            [PortMatch::Range {
                lo: 443,
                hi: 443,
                proto: None
            }]
        ));
    }
}
