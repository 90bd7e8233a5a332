//! One policy rule after parsing, and how it matches a peer and a port.

use super::endpoint::{Endpoint, Identity, Proto};
use super::labels::{Label, Selector};
use ipnet::IpNet;

/// Which way traffic is judged at a subject endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dir {
    /// Traffic the subject receives.
    Ingress,
    /// Traffic the subject sends.
    Egress,
}

/// Who a rule section applies to.
#[derive(Debug, Clone)]
pub(crate) enum Subject {
    /// `endpointSelector`, already scoped to the policy's namespace.
    Endpoints(Selector),
    /// `nodeSelector`: a host policy, not modelled (reported).
    Nodes,
}

/// One parsed rule (`spec` or one of `specs`) of a policy object.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Index of the object in the set.
    pub object: usize,
    /// Index in `specs`, or `None` for `spec`.
    pub spec: Option<usize>,
    /// Who it applies to.
    pub subject: Subject,
    /// Whether it turns on default deny at ingress / egress.
    pub default_deny_ingress: bool,
    /// See `default_deny_ingress`.
    pub default_deny_egress: bool,
    /// `ingress`.
    pub ingress: Vec<PeerRule>,
    /// `ingressDeny`.
    pub ingress_deny: Vec<PeerRule>,
    /// `egress`.
    pub egress: Vec<PeerRule>,
    /// `egressDeny`.
    pub egress_deny: Vec<PeerRule>,
}

impl Rule {
    /// The (allow, deny) sections for `dir`.
    pub fn sections(&self, dir: Dir) -> (&[PeerRule], &[PeerRule]) {
        match dir {
            Dir::Ingress => (&self.ingress, &self.ingress_deny),
            Dir::Egress => (&self.egress, &self.egress_deny),
        }
    }

    /// Whether it turns on default deny in `dir`.
    pub fn default_deny(&self, dir: Dir) -> bool {
        match dir {
            Dir::Ingress => self.default_deny_ingress,
            Dir::Egress => self.default_deny_egress,
        }
    }

    /// Whether the rule applies to an endpoint with `labels`.
    pub fn selects(&self, labels: &[Label]) -> bool {
        match &self.subject {
            Subject::Endpoints(s) => s.matches(labels),
            Subject::Nodes => false,
        }
    }
}

/// One entry of `ingress`, `ingressDeny`, `egress` or `egressDeny`.
#[derive(Debug, Clone)]
pub(crate) struct PeerRule {
    /// Its index in its list.
    pub index: usize,
    /// The peers.
    pub l3: L3,
    /// The ports.
    pub l4: L4,
}

/// The peers of a rule.
#[derive(Debug, Clone)]
pub(crate) enum L3 {
    /// No peer field at all, but ports: every peer ("Layer 4 Examples":
    /// "to any layer 3 destination").
    Any,
    /// These peers (empty: none).
    Peers(Vec<Peer>),
}

/// One peer selector.
#[derive(Debug, Clone)]
pub(crate) enum Peer {
    /// `fromEndpoints`/`toEndpoints` (namespace-scoped) and entities.
    Labels(Selector),
    /// `fromNodes`/`toNodes`.
    Nodes(Selector),
    /// `fromCIDR`/`toCIDR`/`…CIDRSet`.
    Cidr { net: IpNet, except: Vec<IpNet> },
}

/// How a flow's peer is seen when rules are matched.
#[derive(Debug)]
pub(crate) struct PeerView<'a> {
    /// The peer.
    pub ep: &'a Endpoint,
    /// Its identity labels.
    pub labels: &'a [Label],
    /// `enable-node-selector-labels`.
    pub node_labels: bool,
    /// `policy-cidr-match-mode: nodes`.
    pub cidr_nodes: bool,
}

impl Peer {
    pub(crate) fn matches(&self, p: &PeerView<'_>) -> bool {
        match self {
            Peer::Labels(s) => s.matches(p.labels),
            // "Node based" (docs, v1.17/v1.18): fromNodes/toNodes take
            // effect only with enable-node-selector-labels=true.
            Peer::Nodes(s) => {
                p.node_labels
                    && matches!(p.ep.identity, Identity::Node { .. })
                    && s.matches(p.labels)
            }
            Peer::Cidr { net, except } => Self::cidr_applies(p) && Self::in_cidr(p.ep, net, except),
        }
    }

    /// "IP/CIDR based" (docs, v1.17/v1.18): CIDR rules apply only where
    /// Cilium cannot map the peer to a label identity (the world), and to
    /// node addresses only with `policy-cidr-match-mode: nodes`.
    fn cidr_applies(p: &PeerView<'_>) -> bool {
        match p.ep.identity {
            Identity::World => true,
            Identity::Node { .. } => p.cidr_nodes,
            _ => false,
        }
    }

    fn in_cidr(ep: &Endpoint, net: &IpNet, except: &[IpNet]) -> bool {
        ep.addresses
            .iter()
            .any(|a| net.contains(a) && !except.iter().any(|e| e.contains(a)))
    }
}

impl L3 {
    pub fn matches(&self, p: &PeerView<'_>) -> bool {
        match self {
            L3::Any => true,
            L3::Peers(v) => v.iter().any(|x| x.matches(p)),
        }
    }
}

/// The ports of a rule.
#[derive(Debug, Clone)]
pub(crate) enum L4 {
    /// No `toPorts` and no `icmps`: every port of every protocol.
    All,
    /// Any of these.
    Only(Vec<PortMatch>),
}

/// One `ports[]` entry (or an ICMP type, which no TCP/UDP/SCTP flow
/// matches).
#[derive(Debug, Clone)]
pub(crate) enum PortMatch {
    /// `port`..=`endPort` (0 means every port), `protocol` (None: ANY).
    Range {
        lo: u16,
        hi: u16,
        proto: Option<Proto>,
    },
    /// A named port, resolved against the destination's container ports.
    Named { name: String, proto: Option<Proto> },
    /// An `icmps` entry.
    Icmp,
}

impl L4 {
    /// Whether the flow's destination port/protocol is covered; named
    /// ports resolve against `dest` (the flow's destination).
    pub fn matches(&self, port: u16, proto: Proto, dest: &Endpoint) -> bool {
        match self {
            L4::All => true,
            L4::Only(v) => v.iter().any(|m| m.matches(port, proto, dest)),
        }
    }
}

impl PortMatch {
    fn matches(&self, port: u16, proto: Proto, dest: &Endpoint) -> bool {
        let proto_ok = |want: &Option<Proto>| want.is_none_or(|w| w == proto);
        match self {
            PortMatch::Range { lo, hi, proto: p } => {
                proto_ok(p) && (*lo == 0 || (*lo..=*hi).contains(&port))
            }
            PortMatch::Named { name, proto: p } => {
                proto_ok(p)
                    && dest.ports.iter().any(|n| {
                        n.name.as_ref() == Some(name) && n.port == port && n.proto == proto
                    })
            }
            PortMatch::Icmp => false,
        }
    }
}
