//! A pure interpreter of Cilium network policy objects.
//!
//! The lab and the tests used to prove only the policy model; what users
//! apply are `CiliumNetworkPolicy` and `CiliumClusterwideNetworkPolicy`
//! objects, and a translation mistake (a selector that matches the wrong
//! pods, a forgeable label, a missing port) lives only there. This module
//! reads those objects the way Cilium 1.17/1.18 does and answers "may A
//! reach B on this port, and which object and rule decided?", so rendered
//! and hand-written policies can be checked against the model and against
//! the packets.
//!
//! Each rule of interpretation cites the Cilium documentation page or
//! source file it follows, next to the code. Kubernetes `NetworkPolicy`
//! objects, which Cilium enforces too, are read with the Kubernetes API's
//! semantics. Fields the evaluator does not
//! model (FQDN, L7, host policies, services, CIDR groups, requirements) are
//! returned as [`Unsupported`] entries, never silently dropped.
//!
//! Both directions decide a flow between two endpoints: egress at the
//! sender and ingress at the receiver ("policy must be configured on both
//! sides", docs "Layer 3 Examples"). An endpoint that is not a Cilium
//! endpoint (the world, a node without host policies, the API server, an
//! unmanaged pod) enforces nothing of its own: its side is
//! [`DecisionKind::NotEnforced`].

mod compile;
mod endpoint;
mod gateway_api;
mod labels;
mod model;
mod netpol;
mod parse;
mod reach;
mod rule;
mod workloads;

pub use compile::{ANY_PROTOCOLS, Compiled, DirPolicy, Grant, PortRange};
pub use endpoint::{ContainerPort, Endpoint, Identity, IdentityOptions, Proto, entity_selectors};
pub use gateway_api::GatewayApi;
pub use labels::{Label, RawSelector, SOURCE_K8S, Selector};
pub use model::{INTERNET_PROBE, RenderedPolicy};
pub use reach::{ANY_HOST, AttachedRoute, BackendTarget, RouteDecision, hostnames_intersect};
pub use rule::Dir;
pub use workloads::{container_ports, gateway_pods, pods_from_manifests};

use rule::{PeerRule, PeerView, Rule, Subject};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// A policy object: kind, namespace (none for clusterwide) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    /// `CiliumNetworkPolicy`, `CiliumClusterwideNetworkPolicy` or `NetworkPolicy`.
    pub kind: String,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Something in a policy object the evaluator does not model, or cannot
/// read; the rest of the object is still evaluated as the reason says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unsupported {
    /// The object.
    pub object: ObjectRef,
    /// Where in it (`spec.egress[0].toFQDNs`).
    pub path: String,
    /// Why, and how the evaluator treats it.
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.object, self.path, self.reason)
    }
}

/// The agent's policy enforcement mode (`enable-policy`, Helm
/// `policyEnforcementMode`; docs "Policy Enforcement Modes").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Enforcement {
    /// Default deny per direction once a policy selects the endpoint.
    #[default]
    Default,
    /// Default deny for every endpoint.
    Always,
    /// No enforcement.
    Never,
}

/// Agent settings that change verdicts; defaults are the Helm chart's for
/// 1.17.17 and 1.18.11 (/work/shared/schemas/cilium/*/helm/values.yaml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// `policyEnforcementMode` (default `default`).
    pub enforcement: Enforcement,
    /// How identities are formed.
    pub identity: IdentityOptions,
    /// `policyCIDRMatchMode` includes `nodes` (default: empty).
    pub cidr_match_nodes: bool,
    /// `allow-localhost` resolves to `always`: "AllowLocalhostAuto defaults
    /// to policy except when running in Kubernetes where it then defaults
    /// to always" (pkg/option/config.go).
    pub allow_localhost: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            enforcement: Enforcement::Default,
            identity: IdentityOptions {
                cluster_name: "default".into(),
                node_selector_labels: false,
                dual_stack: false,
            },
            cidr_match_nodes: false,
            allow_localhost: true,
        }
    }
}

/// What decided one direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    /// An allow rule matched.
    Allow,
    /// A deny rule matched (deny wins over allow).
    Deny,
    /// Policies put the endpoint in default deny and nothing allowed it.
    DefaultDeny,
    /// No policy puts the endpoint in default deny in this direction.
    NoPolicy,
    /// The endpoint enforces no policy of its own (world, nodes, ...).
    NotEnforced,
    /// Traffic from the local host, allowed by `allow-localhost`.
    LocalHost,
}

/// One direction's decision, naming the object and rule responsible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What kind of decision.
    pub kind: DecisionKind,
    /// The deciding object (for `DefaultDeny`: the first object that
    /// turned it on).
    pub object: Option<ObjectRef>,
    /// Index in the object's `specs`, `None` for `spec`.
    pub spec: Option<usize>,
    /// `ingress`, `ingressDeny`, `egress` or `egressDeny`.
    pub section: Option<&'static str>,
    /// Index of the rule in that section.
    pub rule: Option<usize>,
}

impl Decision {
    fn bare(kind: DecisionKind) -> Self {
        Self {
            kind,
            object: None,
            spec: None,
            section: None,
            rule: None,
        }
    }

    /// Whether this direction lets the flow through.
    pub fn allows(&self) -> bool {
        !matches!(self.kind, DecisionKind::Deny | DecisionKind::DefaultDeny)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = serde_json::to_value(self.kind).ok();
        f.write_str(kind.as_ref().and_then(Value::as_str).unwrap_or("?"))?;
        if let Some(o) = &self.object {
            write!(f, " by {o}")?;
            let spec = self
                .spec
                .map_or("spec".to_owned(), |i| format!("specs[{i}]"));
            if let (Some(s), Some(r)) = (self.section, self.rule) {
                write!(f, " {spec}.{s}[{r}]")?;
            }
        }
        Ok(())
    }
}

/// The answer for one flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether both directions let it through (and, from a gateway, a
    /// route sends it).
    pub allowed: bool,
    /// The sender's egress decision.
    pub egress: Decision,
    /// The receiver's ingress decision.
    pub ingress: Decision,
    /// From a gateway: whether a route attached to it sends the traffic
    /// (the L7 layer, [`RouteDecision`]); `None` for other senders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteDecision>,
}

/// Policy objects, parsed and indexed by namespace.
#[derive(Debug, Clone)]
pub struct PolicySet {
    objects: Vec<ObjectRef>,
    rules: Vec<Rule>,
    by_ns: HashMap<String, Vec<usize>>,
    clusterwide: Vec<usize>,
    options: EvalOptions,
}

const CNP: &str = "CiliumNetworkPolicy";
const CCNP: &str = "CiliumClusterwideNetworkPolicy";
const NP: &str = "NetworkPolicy";

impl PolicySet {
    /// Parses the policy objects among `objects` (other kinds are skipped)
    /// with the charts' default agent settings.
    pub fn from_objects(objects: &[Value]) -> (Self, Vec<Unsupported>) {
        Self::from_objects_with(objects, EvalOptions::default())
    }

    /// Parses the policy objects among `objects` with `options`.
    pub fn from_objects_with(objects: &[Value], options: EvalOptions) -> (Self, Vec<Unsupported>) {
        let mut set = Self {
            objects: Vec::new(),
            rules: Vec::new(),
            by_ns: HashMap::new(),
            clusterwide: Vec::new(),
            options,
        };
        let mut unsupported = Vec::new();
        for obj in objects {
            set.add(obj, &mut unsupported);
        }
        (set, unsupported)
    }

    fn add(&mut self, obj: &Value, unsupported: &mut Vec<Unsupported>) {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let meta = |k: &str| {
            obj.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
        };
        let ns = match kind {
            // A namespaced object without a namespace lands in `default`.
            CNP | NP => Some(meta("namespace").unwrap_or("default").to_owned()),
            CCNP => None,
            _ => return,
        };
        let oref = ObjectRef {
            kind: kind.into(),
            namespace: ns.clone(),
            name: meta("name").unwrap_or_default().into(),
        };
        if kind == NP {
            let rules = netpol::parse(self.objects.len(), &oref, obj, unsupported);
            self.push(ns, rules.into_iter().collect(), oref);
            return;
        }
        let mut parser = parse::Parser {
            object: self.objects.len(),
            oref: &oref,
            ns: ns.as_deref(),
            cluster: &self.options.identity.cluster_name,
            out: unsupported,
        };
        let rules = parser.object(obj);
        self.push(ns, rules, oref);
    }

    fn push(&mut self, ns: Option<String>, rules: Vec<Rule>, oref: ObjectRef) {
        for r in rules {
            let i = self.rules.len();
            match &ns {
                Some(n) => self.by_ns.entry(n.clone()).or_default().push(i),
                None => self.clusterwide.push(i),
            }
            self.rules.push(r);
        }
        self.objects.push(oref);
    }

    /// The policy objects read, in input order.
    pub fn objects(&self) -> &[ObjectRef] {
        &self.objects
    }

    /// The agent settings in use.
    pub fn options(&self) -> &EvalOptions {
        &self.options
    }

    /// Rules that may select `ep`: its namespace's and the clusterwide ones
    /// (a CiliumNetworkPolicy's endpointSelector always names its namespace).
    fn candidates<'a>(&'a self, ep: &Endpoint) -> impl Iterator<Item = &'a Rule> + 'a {
        self.candidate_indices(ep).map(|i| &self.rules[i])
    }

    /// Indices of the rules [`Self::candidates`] yields.
    fn candidate_indices<'a>(&'a self, ep: &Endpoint) -> impl Iterator<Item = usize> + 'a {
        let own = ep
            .namespace()
            .and_then(|ns| self.by_ns.get(ns))
            .map_or(&[][..], Vec::as_slice);
        own.iter().chain(&self.clusterwide).copied()
    }

    /// The identity labels of `ep` under this set's agent settings; pass
    /// them to [`Self::verdict_labeled`] to judge many flows of one
    /// endpoint without recomputing them.
    pub fn labels_of(&self, ep: &Endpoint) -> Vec<Label> {
        ep.labels(&self.options.identity)
    }

    /// The objects with a rule selecting `ep`, in input order, each once.
    pub fn selected_by(&self, ep: &Endpoint) -> Vec<ObjectRef> {
        let labels = ep.labels(&self.options.identity);
        let idx: BTreeSet<usize> = self
            .candidates(ep)
            .filter(|r| r.selects(&labels))
            .map(|r| r.object)
            .collect();
        idx.into_iter().map(|i| self.objects[i].clone()).collect()
    }

    /// Whether `from` may open a connection to `to` on `port`/`proto`.
    pub fn verdict(&self, from: &Endpoint, to: &Endpoint, port: u16, proto: Proto) -> Verdict {
        let (fl, tl) = (self.labels_of(from), self.labels_of(to));
        self.verdict_labeled((from, &fl), (to, &tl), port, proto)
    }

    /// [`Self::verdict`] with each endpoint's labels from [`Self::labels_of`].
    pub fn verdict_labeled(
        &self,
        from: (&Endpoint, &[Label]),
        to: (&Endpoint, &[Label]),
        port: u16,
        proto: Proto,
    ) -> Verdict {
        let egress = self.decide_labeled(Dir::Egress, from, to, port, proto);
        let ingress = self.decide_labeled(Dir::Ingress, to, from, port, proto);
        Verdict {
            allowed: egress.allows() && ingress.allows(),
            egress,
            ingress,
            route: None,
        }
    }

    /// The decision at `subject` for traffic with `peer` in direction `dir`.
    pub fn decide(
        &self,
        dir: Dir,
        subject: &Endpoint,
        peer: &Endpoint,
        port: u16,
        proto: Proto,
    ) -> Decision {
        let (sl, pl) = (self.labels_of(subject), self.labels_of(peer));
        self.decide_labeled(dir, (subject, &sl), (peer, &pl), port, proto)
    }

    fn decide_labeled(
        &self,
        dir: Dir,
        (subject, labels): (&Endpoint, &[Label]),
        (peer, peer_labels): (&Endpoint, &[Label]),
        port: u16,
        proto: Proto,
    ) -> Decision {
        if !subject.enforces() || self.options.enforcement == Enforcement::Never {
            return Decision::bare(DecisionKind::NotEnforced);
        }
        let o = &self.options;
        let view = PeerView {
            ep: peer,
            labels: peer_labels,
            node_labels: o.identity.node_selector_labels,
            cidr_nodes: o.cidr_match_nodes,
        };
        let dest = if dir == Dir::Egress { peer } else { subject };
        let hit = |list: &[PeerRule]| {
            list.iter()
                .find(|pr| pr.l3.matches(&view) && pr.l4.matches(port, proto, dest))
                .map(|pr| pr.index)
        };
        let selecting: Vec<&Rule> = self
            .candidates(subject)
            .filter(|r| r.selects(labels))
            .collect();
        let names = section_names(dir);
        // Docs "Deny Policies": deny takes precedence over allow.
        for r in &selecting {
            if let Some(i) = hit(r.sections(dir).1) {
                return self.decision(DecisionKind::Deny, r, names.1, Some(i));
            }
        }
        if dir == Dir::Ingress && o.allow_localhost && is_local_host(peer) {
            return Decision::bare(DecisionKind::LocalHost);
        }
        for r in &selecting {
            if let Some(i) = hit(r.sections(dir).0) {
                return self.decision(DecisionKind::Allow, r, names.0, Some(i));
            }
        }
        // Docs "Policy Enforcement Modes": default deny once a policy
        // (with default deny in this direction) selects the endpoint.
        match selecting.iter().find(|r| r.default_deny(dir)) {
            Some(r) => self.decision(DecisionKind::DefaultDeny, r, names.0, None),
            None if o.enforcement == Enforcement::Always => {
                Decision::bare(DecisionKind::DefaultDeny)
            }
            None => Decision::bare(DecisionKind::NoPolicy),
        }
    }

    fn decision(
        &self,
        kind: DecisionKind,
        r: &Rule,
        section: &'static str,
        rule: Option<usize>,
    ) -> Decision {
        Decision {
            kind,
            object: Some(self.objects[r.object].clone()),
            spec: r.spec,
            section: rule.map(|_| section),
            rule,
        }
    }

    /// Every `source:key` any endpoint or peer selector constrains: the
    /// labels whose forgery could change a verdict.
    pub fn selector_keys(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for r in &self.rules {
            if let Subject::Endpoints(s) = &r.subject {
                out.extend(s.keys());
            }
            for pr in r
                .ingress
                .iter()
                .chain(&r.ingress_deny)
                .chain(&r.egress)
                .chain(&r.egress_deny)
            {
                if let rule::L3::Peers(v) = &pr.l3 {
                    for p in v {
                        if let rule::Peer::Labels(s) | rule::Peer::Nodes(s) = p {
                            out.extend(s.keys());
                        }
                    }
                }
            }
        }
        out
    }
}

fn section_names(dir: Dir) -> (&'static str, &'static str) {
    match dir {
        Dir::Ingress => ("ingress", "ingressDeny"),
        Dir::Egress => ("egress", "egressDeny"),
    }
}

fn is_local_host(ep: &Endpoint) -> bool {
    matches!(ep.identity, Identity::Node { local: true, .. })
}
