//! Policies compiled for a fixed set of endpoints.
//!
//! [`PolicySet::verdict`] answers one flow; a dataplane needs the whole
//! answer at once: for each endpoint and direction, which peers it may
//! reach (or must not) on which ports. The lab turns this into nftables
//! sets, so the packets are judged by the same reading of the objects as
//! the verdicts, never by a second interpretation.
//!
//! The result mirrors `PolicySet::decide` step by step: deny entries of
//! every selecting rule first (docs "Deny Policies": deny takes precedence),
//! then local-host traffic (`allow-localhost`), then allow entries, and
//! default deny when a selecting rule turns it on (docs "Policy Enforcement
//! Modes"). A flow matches a deny grant → dropped; else an allow grant →
//! passes this direction; else `default_deny` decides.

use super::endpoint::{Endpoint, Proto};
use super::labels::{Label, Op, Selector};
use super::rule::{Dir, L3, L4, Peer, PeerRule, PeerView, PortMatch, Rule, Subject};
use super::{Decision, DecisionKind, Enforcement, ObjectRef, PolicySet};
use std::collections::HashMap;

/// The transport protocols a rule without a protocol (`ANY`) or without
/// `toPorts` covers: CRD `PortProtocol` "ANY" is TCP, UDP and SCTP.
pub const ANY_PROTOCOLS: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

/// One protocol's port range (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// The protocol.
    pub proto: Proto,
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

/// A peer and the ports a rule entry opens (or closes) towards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Index of the peer in the endpoint list.
    pub peer: usize,
    /// The ports.
    pub ports: Vec<PortRange>,
    /// The rule entry, for comments (`allow by ... spec.egress[1]`).
    pub rule: Decision,
}

/// One endpoint's policy in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirPolicy {
    /// Flows matching these are dropped.
    pub deny: Vec<Grant>,
    /// Flows matching these pass (unless denied).
    pub allow: Vec<Grant>,
    /// When set, everything else is dropped; names what turned it on.
    pub default_deny: Option<Decision>,
}

/// Every endpoint's policy; `None` where the endpoint enforces nothing of
/// its own (world, nodes without host policies, the API server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// Egress policy by endpoint index.
    pub egress: Vec<Option<DirPolicy>>,
    /// Ingress policy by endpoint index.
    pub ingress: Vec<Option<DirPolicy>>,
    /// ICMP entries: no TCP/UDP/SCTP flow matches them, and the lab
    /// compiles no ICMP rules (`icmps` is reported, not enforced).
    pub icmp_entries: Vec<(ObjectRef, &'static str, usize)>,
}

/// Endpoints with their identity labels, computed once, and indexed by
/// label so that a selector looks only at endpoints carrying one of the
/// values it requires (thousands of policies each selecting one deployment
/// would otherwise each scan every endpoint).
struct Indexed<'a> {
    eps: &'a [Endpoint],
    labels: Vec<Vec<Label>>,
    /// (key, value) → endpoints with a label of that key and value, any
    /// source (the selector's own source is checked when it is matched).
    by_label: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'a> Indexed<'a> {
    fn new(eps: &'a [Endpoint], labels: &'a [Vec<Label>]) -> Self {
        let mut by_label: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (i, ls) in labels.iter().enumerate() {
            for l in ls {
                by_label
                    .entry((l.key.as_str(), l.value.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        Self {
            eps,
            labels: labels.to_vec(),
            by_label,
        }
    }

    /// Endpoints `s` may match: those carrying a value of its most
    /// selective `In` requirement, or every endpoint.
    fn candidates(&self, s: &Selector) -> Vec<usize> {
        let narrowest = s
            .reqs
            .iter()
            .filter(|r| r.op == Op::In)
            .map(|r| {
                let mut v: Vec<usize> = r
                    .values
                    .iter()
                    .flat_map(|val| {
                        let key = (r.key.as_str(), val.as_str());
                        self.by_label.get(&key).into_iter().flatten()
                    })
                    .copied()
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            })
            .min_by_key(Vec::len);
        narrowest.unwrap_or_else(|| (0..self.eps.len()).collect())
    }

    /// The endpoints `s` selects.
    fn select(&self, s: &Selector) -> Vec<usize> {
        self.candidates(s)
            .into_iter()
            .filter(|&i| s.matches(&self.labels[i]))
            .collect()
    }
}

/// Key of one rule entry: (rule index, direction, deny, entry index).
type EntryKey = (usize, bool, bool, usize);

impl PolicySet {
    /// Compiles the set for `endpoints` (see the module docs).
    pub fn compile(&self, endpoints: &[Endpoint]) -> Compiled {
        let labels: Vec<Vec<Label>> = endpoints.iter().map(|e| self.labels_of(e)).collect();
        let idx = Indexed::new(endpoints, &labels);
        let selecting = self.selecting(&idx);
        let mut memo: HashMap<EntryKey, Vec<usize>> = HashMap::new();
        let mut icmp_entries = Vec::new();
        let mut one =
            |dir: Dir, i: usize| self.compile_one(&idx, dir, (i, &selecting[i]), &mut memo);
        let egress = (0..endpoints.len()).map(|i| one(Dir::Egress, i)).collect();
        let ingress = (0..endpoints.len()).map(|i| one(Dir::Ingress, i)).collect();
        for r in &self.rules {
            for (dir, name) in [(Dir::Ingress, "ingress"), (Dir::Egress, "egress")] {
                let (allow, deny) = r.sections(dir);
                for pr in allow.iter().chain(deny) {
                    if matches!(&pr.l4, L4::Only(v) if v.iter().any(|m| matches!(m, PortMatch::Icmp)))
                    {
                        icmp_entries.push((self.objects[r.object].clone(), name, pr.index));
                    }
                }
            }
        }
        Compiled {
            egress,
            ingress,
            icmp_entries,
        }
    }

    /// For each endpoint, the indices of the rules selecting it, in rule
    /// order: a namespaced rule only for endpoints of its namespace.
    fn selecting(&self, idx: &Indexed<'_>) -> Vec<Vec<usize>> {
        let mut ns_of: Vec<Option<&str>> = vec![None; self.rules.len()];
        for (ns, rules) in &self.by_ns {
            for &r in rules {
                ns_of[r] = Some(ns.as_str());
            }
        }
        let mut out = vec![Vec::new(); idx.eps.len()];
        for (ri, r) in self.rules.iter().enumerate() {
            let Subject::Endpoints(sel) = &r.subject else {
                continue;
            };
            for i in idx.select(sel) {
                if ns_of[ri].is_none_or(|ns| idx.eps[i].namespace() == Some(ns)) {
                    out[i].push(ri);
                }
            }
        }
        out
    }

    fn compile_one(
        &self,
        idx: &Indexed<'_>,
        dir: Dir,
        (subject, rules): (usize, &[usize]),
        memo: &mut HashMap<EntryKey, Vec<usize>>,
    ) -> Option<DirPolicy> {
        let ep = &idx.eps[subject];
        if !ep.enforces() || self.options.enforcement == Enforcement::Never {
            return None;
        }
        let selecting: Vec<(usize, &Rule)> = rules.iter().map(|&i| (i, &self.rules[i])).collect();
        let names = super::section_names(dir);
        let mut out = DirPolicy {
            deny: Vec::new(),
            allow: Vec::new(),
            default_deny: None,
        };
        for &(ri, r) in &selecting {
            let deny = r.sections(dir).1;
            let kind = (DecisionKind::Deny, names.1);
            out.deny
                .extend(self.grants(idx, dir, subject, (ri, r), deny, kind, memo));
        }
        if dir == Dir::Ingress && self.options.allow_localhost {
            out.allow.extend(local_host_grants(idx));
        }
        for &(ri, r) in &selecting {
            let allow = r.sections(dir).0;
            let kind = (DecisionKind::Allow, names.0);
            out.allow
                .extend(self.grants(idx, dir, subject, (ri, r), allow, kind, memo));
        }
        out.default_deny = match selecting.iter().find(|(_, r)| r.default_deny(dir)) {
            Some((_, r)) => Some(self.decision(DecisionKind::DefaultDeny, r, names.0, None)),
            None if self.options.enforcement == Enforcement::Always => {
                Some(Decision::bare(DecisionKind::DefaultDeny))
            }
            None => None,
        };
        Some(out)
    }

    /// The grants of one section of one rule for `subject`.
    #[allow(clippy::too_many_arguments)]
    fn grants(
        &self,
        idx: &Indexed<'_>,
        dir: Dir,
        subject: usize,
        (ri, rule): (usize, &Rule),
        entries: &[PeerRule],
        (kind, section): (DecisionKind, &'static str),
        memo: &mut HashMap<EntryKey, Vec<usize>>,
    ) -> Vec<Grant> {
        let mut out = Vec::new();
        for pr in entries {
            let key = (ri, dir == Dir::Egress, kind == DecisionKind::Deny, pr.index);
            let peers = memo
                .entry(key)
                .or_insert_with(|| self.matching_peers(idx, &pr.l3));
            for &peer in peers.iter() {
                let dest = if dir == Dir::Egress { peer } else { subject };
                let ports = port_ranges(&pr.l4, &idx.eps[dest]);
                if !ports.is_empty() {
                    out.push(Grant {
                        peer,
                        ports,
                        rule: self.decision(kind, rule, section, Some(pr.index)),
                    });
                }
            }
        }
        out
    }

    fn matching_peers(&self, idx: &Indexed<'_>, l3: &L3) -> Vec<usize> {
        let o = &self.options;
        let view = |i: usize| PeerView {
            ep: &idx.eps[i],
            labels: &idx.labels[i],
            node_labels: o.identity.node_selector_labels,
            cidr_nodes: o.cidr_match_nodes,
        };
        let mut out: Vec<usize> = match l3 {
            L3::Any => (0..idx.eps.len()).collect(),
            L3::Peers(peers) => peers
                .iter()
                .flat_map(|p| {
                    let candidates = match p {
                        Peer::Labels(s) => idx.candidates(s),
                        _ => (0..idx.eps.len()).collect(),
                    };
                    candidates
                        .into_iter()
                        .filter(|&i| p.matches(&view(i)))
                        .collect::<Vec<_>>()
                })
                .collect(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn local_host_grants(idx: &Indexed<'_>) -> Vec<Grant> {
    (0..idx.eps.len())
        .filter(|&i| super::is_local_host(&idx.eps[i]))
        .map(|peer| Grant {
            peer,
            ports: all_ports(None),
            rule: Decision::bare(DecisionKind::LocalHost),
        })
        .collect()
}

fn all_ports(proto: Option<Proto>) -> Vec<PortRange> {
    protos(proto)
        .map(|proto| PortRange {
            proto,
            lo: 0,
            hi: u16::MAX,
        })
        .collect()
}

fn protos(p: Option<Proto>) -> impl Iterator<Item = Proto> {
    ANY_PROTOCOLS
        .into_iter()
        .filter(move |x| p.is_none_or(|w| w == *x))
}

/// The port ranges of an entry's `toPorts` towards `dest` (named ports
/// resolve against the destination's container ports, as `L4::matches`).
fn port_ranges(l4: &L4, dest: &Endpoint) -> Vec<PortRange> {
    let L4::Only(matches) = l4 else {
        return all_ports(None);
    };
    let mut out = Vec::new();
    for m in matches {
        match m {
            PortMatch::Range { lo: 0, proto, .. } => out.extend(all_ports(*proto)),
            PortMatch::Range { lo, hi, proto } => {
                out.extend(protos(*proto).map(|proto| PortRange {
                    proto,
                    lo: *lo,
                    hi: *hi,
                }))
            }
            PortMatch::Named { name, proto } => out.extend(
                dest.ports
                    .iter()
                    .filter(|c| c.name.as_ref() == Some(name))
                    .filter(|c| proto.is_none_or(|p| p == c.proto))
                    .map(|c| PortRange {
                        proto: c.proto,
                        lo: c.port,
                        hi: c.port,
                    }),
            ),
            PortMatch::Icmp => {}
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

impl DirPolicy {
    /// Whether this direction lets a flow with `peer` on `port`/`proto`
    /// through: what a dataplane built from the grants does.
    pub fn allows(&self, peer: usize, port: u16, proto: Proto) -> bool {
        let hit = |grants: &[Grant]| {
            grants.iter().any(|g| {
                g.peer == peer
                    && g.ports
                        .iter()
                        .any(|r| r.proto == proto && (r.lo..=r.hi).contains(&port))
            })
        };
        if hit(&self.deny) {
            return false;
        }
        hit(&self.allow) || self.default_deny.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Identity, pods_from_manifests};
    use serde_json::Value;

    /// The seed's rendered objects (with the proxy on egress nodes, as the
    /// lab renders them), compiled for its pods and the cluster's other
    /// identities, answer every flow exactly as `PolicySet::decide` does:
    /// the dataplane and the verdicts are one reading of the objects.
    #[test]
    fn compiled_grants_agree_with_every_verdict() {
        let mut options = crate::RenderOptions::default();
        options.proxy.in_cluster = Some(crate::options::InClusterProxy::new(String::new()));
        let mut snap = crate::fixtures::seed();
        for t in &mut snap.tenants {
            t.egress.ip = None;
        }
        let Ok(rendered) = crate::render(&snap, &options) else {
            panic!("the seed renders")
        };
        let objects: Vec<Value> = rendered.objects().map(|o| o.body.clone()).collect();
        let mut eo = crate::eval::EvalOptions::default();
        eo.identity.node_selector_labels = true;
        let (set, _) = PolicySet::from_objects_with(&objects, eo);
        let mut eps = pods_from_manifests(&objects);
        let mut world = Endpoint::reserved("world", Identity::World);
        world.addresses = vec![
            "2001:db8::80"
                .parse()
                .unwrap_or(std::net::Ipv6Addr::LOCALHOST.into()),
        ];
        let mut metadata = Endpoint::reserved("metadata", Identity::World);
        metadata.addresses = vec![
            "fd00:ec2::254"
                .parse()
                .unwrap_or(std::net::Ipv6Addr::LOCALHOST.into()),
        ];
        let node = Identity::Node {
            labels: [("palisade.io/egress-proxy".to_owned(), "true".to_owned())].into(),
            local: false,
        };
        eps.extend([
            world,
            metadata,
            Endpoint::reserved("apiserver", Identity::KubeApiServer),
            Endpoint::reserved("ingress", Identity::Ingress),
            Endpoint::reserved("proxy", node),
            Endpoint::pod(
                "kube-system",
                "coredns",
                [("k8s-app".to_owned(), "kube-dns".to_owned())].into(),
            ),
        ]);
        let compiled = set.compile(&eps);
        let mut checked = 0;
        for (a, ea) in eps.iter().enumerate() {
            for (b, eb) in eps.iter().enumerate() {
                for port in [53, 80, 443, 3128, 5432, 8080, 9187] {
                    for proto in [Proto::Tcp, Proto::Udp] {
                        let v = set.verdict(ea, eb, port, proto);
                        let eg = compiled.egress[a]
                            .as_ref()
                            .is_none_or(|p| p.allows(b, port, proto));
                        let ing = compiled.ingress[b]
                            .as_ref()
                            .is_none_or(|p| p.allows(a, port, proto));
                        assert_eq!(
                            (eg, ing),
                            (v.egress.allows(), v.ingress.allows()),
                            "{} -> {} {port}/{proto:?}: {v:?}",
                            ea.name,
                            eb.name
                        );
                        checked += usize::from(v.allowed);
                    }
                }
            }
        }
        assert!(
            checked > 20,
            "only {checked} allowed flows: the fixture is too closed to prove much"
        );
    }
}
