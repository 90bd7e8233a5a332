//! Gateway API objects read back from manifests: Gateways, HTTPRoutes,
//! ReferenceGrants and the Services routes name.
//!
//! Cilium gives every Gateway's Envoy the one `ingress` identity, so at
//! L3/L4 any gateway reaches every port a `fromEntities: [ingress]` rule
//! opens; what keeps a tenant's gateway to its own tenant is which routes
//! attach to it and which Services they may send to. That is decided by
//! these objects, so the evaluator reads them as a layer of its own
//! ([`super::reach`] answers the question). Field names and defaults are
//! those of the standard-channel CRDs pinned in
//! /work/shared/schemas/gateway-api (v1.2.1 with Cilium 1.17, v1.3.0 with
//! Cilium 1.18; the fields read here are the same in both).

use super::labels::{Label, RawSelector, SOURCE_K8S, Selector};
use super::{ObjectRef, Unsupported};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The Gateway API group: the default `group` of parent references and
/// route kinds (CRD: "When unspecified, "gateway.networking.k8s.io" is
/// inferred").
pub(super) const GROUP: &str = "gateway.networking.k8s.io";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawGatewaySpec {
    #[serde(default)]
    listeners: Vec<RawListener>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawListener {
    name: String,
    port: u16,
    protocol: String,
    hostname: Option<String>,
    allowed_routes: Option<RawAllowedRoutes>,
}

#[derive(Debug, Default, Deserialize)]
struct RawAllowedRoutes {
    namespaces: Option<RawRouteNamespaces>,
    kinds: Option<Vec<RawGroupKind>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRouteNamespaces {
    from: Option<String>,
    selector: Option<RawSelector>,
}

#[derive(Debug, Default, Deserialize)]
struct RawGroupKind {
    group: Option<String>,
    kind: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRouteSpec {
    #[serde(default)]
    parent_refs: Vec<RawParentRef>,
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawParentRef {
    group: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: String,
    section_name: Option<String>,
    port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    #[serde(default)]
    backend_refs: Vec<RawBackendRef>,
    #[serde(default)]
    filters: Vec<RawFilter>,
}

/// A route or backend filter: only its type matters here.
#[derive(Debug, Default, Deserialize)]
struct RawFilter {
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawBackendRef {
    #[serde(default)]
    filters: Vec<RawFilter>,
    group: Option<String>,
    kind: Option<String>,
    name: String,
    namespace: Option<String>,
    port: Option<u16>,
    weight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawGrantSpec {
    #[serde(default)]
    from: Vec<RawGrantFrom>,
    #[serde(default)]
    to: Vec<RawGrantTo>,
}

#[derive(Debug, Default, Deserialize)]
struct RawGrantFrom {
    #[serde(default)]
    group: String,
    kind: String,
    namespace: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawGrantTo {
    #[serde(default)]
    group: String,
    kind: String,
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawServiceSpec {
    selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    ports: Vec<RawServicePort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawServicePort {
    port: u16,
    target_port: Option<Value>,
    protocol: Option<String>,
}

/// Which namespaces a listener takes routes from
/// (`allowedRoutes.namespaces.from`).
#[derive(Debug, Clone)]
pub(super) enum From {
    /// `Same` (the default: "restricted to the namespace of this Gateway
    /// by default").
    Same,
    /// `All`.
    All,
    /// `Selector`: namespaces whose labels the selector matches.
    Selector(Selector),
    /// A selector the API server would refuse: no namespace.
    Invalid,
}

/// One listener of a Gateway.
#[derive(Debug, Clone)]
pub(super) struct Listener {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub hostname: Option<String>,
    pub from: From,
    /// `allowedRoutes.kinds` as (group, kind); `None` when unset or empty.
    pub kinds: Option<Vec<(String, String)>>,
}

/// A Gateway.
#[derive(Debug, Clone)]
pub(super) struct Gateway {
    pub object: ObjectRef,
    pub listeners: Vec<Listener>,
}

/// A parent reference with its defaults filled in.
#[derive(Debug, Clone)]
pub(super) struct ParentRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<u16>,
}

/// A backend reference with its defaults filled in.
#[derive(Debug, Clone)]
pub(super) struct BackendRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub port: Option<u16>,
    pub weight: i64,
}

/// An HTTPRoute.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub object: ObjectRef,
    pub parents: Vec<ParentRef>,
    pub hostnames: Vec<String>,
    /// Per rule, its backend references.
    pub rules: Vec<Vec<BackendRef>>,
}

/// A ReferenceGrant: (group, kind, namespace) it trusts, and the (group,
/// kind, name) it opens.
#[derive(Debug, Clone)]
pub(super) struct Grant {
    pub object: ObjectRef,
    pub from: Vec<(String, String, String)>,
    pub to: Vec<(String, String, Option<String>)>,
}

/// A Service port's target: a number or a container port's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TargetPort {
    Number(u16),
    Name(String),
}

/// A Service: the pods it selects and its ports.
#[derive(Debug, Clone)]
pub(super) struct Service {
    pub namespace: String,
    pub name: String,
    /// `None`: no selector, so no endpoints Kubernetes manages.
    pub selector: Option<BTreeMap<String, String>>,
    /// (port, target, protocol is TCP).
    pub ports: Vec<(u16, TargetPort, bool)>,
}

/// The Gateway API objects among a set of manifests.
#[derive(Debug, Clone, Default)]
pub struct GatewayApi {
    pub(super) gateways: Vec<Gateway>,
    pub(super) routes: Vec<Route>,
    pub(super) grants: Vec<Grant>,
    pub(super) services: Vec<Service>,
    /// Each rendered Namespace's labels as `k8s` labels (the namespace
    /// selectors of `allowedRoutes` match them).
    pub(super) namespaces: BTreeMap<String, Vec<Label>>,
    /// Indexes built once after reading, so a verdict costs lookups, not
    /// scans (verify asks one per gateway, pod and port).
    index: Index,
}

/// (namespace, name) of an object.
type Key = (String, String);

#[derive(Debug, Clone, Default)]
struct Index {
    gateways: HashMap<Key, usize>,
    services: HashMap<Key, usize>,
    services_by_ns: HashMap<String, Vec<usize>>,
    /// Per Service, every (route, rule, backend) naming it.
    backends: HashMap<Key, Vec<(usize, usize, usize)>>,
}

fn meta<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
}

fn oref(kind: &str, obj: &Value) -> ObjectRef {
    ObjectRef {
        kind: kind.into(),
        namespace: Some(meta(obj, "namespace").unwrap_or("default").to_owned()),
        name: meta(obj, "name").unwrap_or_default().to_owned(),
    }
}

impl GatewayApi {
    /// Reads the Gateways, HTTPRoutes, ReferenceGrants, Services and
    /// Namespaces among `objects`; what cannot be read is reported and the
    /// object left out (it would not be accepted by the API server).
    pub fn from_objects(objects: &[Value], unsupported: &mut Vec<Unsupported>) -> Self {
        let mut out = Self::default();
        for obj in objects {
            out.add(obj, unsupported);
        }
        out.index();
        out
    }

    fn index(&mut self) {
        let key = |o: &ObjectRef| (o.namespace.clone().unwrap_or_default(), o.name.clone());
        let mut ix = Index::default();
        for (i, g) in self.gateways.iter().enumerate() {
            ix.gateways.entry(key(&g.object)).or_insert(i);
        }
        for (i, svc) in self.services.iter().enumerate() {
            ix.services
                .entry((svc.namespace.clone(), svc.name.clone()))
                .or_insert(i);
            ix.services_by_ns
                .entry(svc.namespace.clone())
                .or_default()
                .push(i);
        }
        for (r, route) in self.routes.iter().enumerate() {
            for (i, rule) in route.rules.iter().enumerate() {
                for (j, b) in rule.iter().enumerate() {
                    let k = (b.namespace.clone(), b.name.clone());
                    ix.backends.entry(k).or_default().push((r, i, j));
                }
            }
        }
        self.index = ix;
    }

    /// The Services of namespace `ns`.
    pub(super) fn services_in(&self, ns: &str) -> impl Iterator<Item = &Service> + '_ {
        self.index
            .services_by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .map(|&i| &self.services[i])
    }

    /// Every (route, rule index, backend index) whose backend names the
    /// Service `namespace/name`, in route order.
    pub(super) fn backends_of(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Iterator<Item = (&Route, usize, usize)> + '_ {
        self.index
            .backends
            .get(&(namespace.to_owned(), name.to_owned()))
            .into_iter()
            .flatten()
            .map(|&(r, i, j)| (&self.routes[r], i, j))
    }

    fn add(&mut self, obj: &Value, unsupported: &mut Vec<Unsupported>) {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "Namespace" => self.namespace(obj),
            "Gateway" => {
                if let Some(spec) = spec::<RawGatewaySpec>(kind, obj, unsupported) {
                    self.gateways
                        .push(gateway(oref(kind, obj), spec, unsupported));
                }
            }
            "HTTPRoute" => {
                if let Some(spec) = spec::<RawRouteSpec>(kind, obj, unsupported) {
                    let object = oref(kind, obj);
                    unsupported.extend(unmodelled_filters(&object, &spec));
                    self.routes.push(route(object, spec));
                }
            }
            "GRPCRoute" | "TCPRoute" | "TLSRoute" | "UDPRoute" => unsupported.push(Unsupported {
                object: oref(kind, obj),
                path: "spec".into(),
                reason: "routes of this kind are not evaluated: their backends are not counted \
                         as reachable from any gateway"
                    .into(),
            }),
            "ReferenceGrant" => {
                if let Some(spec) = spec::<RawGrantSpec>(kind, obj, unsupported) {
                    self.grants.push(grant(oref(kind, obj), spec));
                }
            }
            "Service" => {
                if let Some(spec) = spec::<RawServiceSpec>(kind, obj, unsupported) {
                    self.services.push(service(&oref(kind, obj), spec));
                }
            }
            _ => {}
        }
    }

    /// Kubernetes labels every namespace with its name
    /// (`kubernetes.io/metadata.name`, GA in 1.22).
    fn namespace(&mut self, obj: &Value) {
        let Some(name) = meta(obj, "name") else {
            return;
        };
        let mut labels: Vec<Label> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some(Label::new(SOURCE_K8S, k, v.as_str()?)))
            .filter(|l| l.key != "kubernetes.io/metadata.name")
            .collect();
        labels.push(Label::new(SOURCE_K8S, "kubernetes.io/metadata.name", name));
        self.namespaces.insert(name.to_owned(), labels);
    }

    /// A namespace's labels: the rendered Namespace's, or only the name
    /// label Kubernetes sets on every namespace.
    pub(super) fn namespace_labels(&self, ns: &str) -> Vec<Label> {
        self.namespaces
            .get(ns)
            .cloned()
            .unwrap_or_else(|| vec![Label::new(SOURCE_K8S, "kubernetes.io/metadata.name", ns)])
    }

    /// The Gateway `namespace/name`.
    pub(super) fn gateway(&self, namespace: &str, name: &str) -> Option<&Gateway> {
        let i = self
            .index
            .gateways
            .get(&(namespace.to_owned(), name.to_owned()))?;
        self.gateways.get(*i)
    }

    /// The Service `namespace/name`.
    pub(super) fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        let i = self
            .index
            .services
            .get(&(namespace.to_owned(), name.to_owned()))?;
        self.services.get(*i)
    }

    /// Whether any Gateway was read.
    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
    }
}

fn spec<T: DeserializeOwned + Default>(
    kind: &str,
    obj: &Value,
    unsupported: &mut Vec<Unsupported>,
) -> Option<T> {
    let Some(spec) = obj.get("spec") else {
        return Some(T::default());
    };
    match serde_json::from_value(spec.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            unsupported.push(Unsupported {
                object: oref(kind, obj),
                path: "spec".into(),
                reason: format!("cannot be read ({e}); left out"),
            });
            None
        }
    }
}

fn gateway(object: ObjectRef, spec: RawGatewaySpec, out: &mut Vec<Unsupported>) -> Gateway {
    let listeners = spec
        .listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let allowed = l.allowed_routes.unwrap_or_default();
            let ns = allowed.namespaces.unwrap_or_default();
            let from = match ns.from.as_deref().unwrap_or("Same") {
                "All" => From::All,
                "Selector" => {
                    let raw = ns.selector.unwrap_or_default();
                    match Selector::parse(&raw) {
                        Ok(s) => From::Selector(s),
                        Err(reason) => {
                            out.push(Unsupported {
                                object: object.clone(),
                                path: format!("spec.listeners[{i}].allowedRoutes.namespaces"),
                                reason: format!("{reason}; no namespace is selected"),
                            });
                            From::Invalid
                        }
                    }
                }
                _ => From::Same,
            };
            let kinds = allowed.kinds.filter(|k| !k.is_empty()).map(|ks| {
                ks.into_iter()
                    .map(|k| (k.group.unwrap_or_else(|| GROUP.into()), k.kind))
                    .collect()
            });
            Listener {
                name: l.name,
                port: l.port,
                protocol: l.protocol,
                hostname: l.hostname,
                from,
                kinds,
            }
        })
        .collect();
    Gateway { object, listeners }
}

/// `RequestMirror` sends a copy of the traffic to another backend, and an
/// `ExtensionRef` does what its implementation says: neither is modelled,
/// so a mirror's backend is not counted as reachable (CRD
/// `HTTPRouteFilter`).
fn unmodelled_filters(object: &ObjectRef, spec: &RawRouteSpec) -> Vec<Unsupported> {
    let mut out = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let backend_filters = rule.backend_refs.iter().enumerate().flat_map(|(j, b)| {
            b.filters
                .iter()
                .enumerate()
                .map(move |(k, f)| (format!("spec.rules[{i}].backendRefs[{j}].filters[{k}]"), f))
        });
        let rule_filters = rule
            .filters
            .iter()
            .enumerate()
            .map(|(k, f)| (format!("spec.rules[{i}].filters[{k}]"), f));
        for (path, f) in rule_filters.chain(backend_filters) {
            if matches!(f.kind.as_str(), "RequestMirror" | "ExtensionRef") {
                out.push(Unsupported {
                    object: object.clone(),
                    path,
                    reason: format!("{} filters are not evaluated", f.kind),
                });
            }
        }
    }
    out
}

fn route(object: ObjectRef, spec: RawRouteSpec) -> Route {
    let ns = object.namespace.clone().unwrap_or_default();
    let parents = spec
        .parent_refs
        .into_iter()
        .map(|p| ParentRef {
            group: p.group.unwrap_or_else(|| GROUP.into()),
            kind: p.kind.unwrap_or_else(|| "Gateway".into()),
            namespace: p.namespace.unwrap_or_else(|| ns.clone()),
            name: p.name,
            section_name: p.section_name.filter(|s| !s.is_empty()),
            port: p.port,
        })
        .collect();
    // backendRef defaults (CRD): group "" (core), kind "Service",
    // namespace the route's, weight 1.
    let rules = spec
        .rules
        .into_iter()
        .map(|r| {
            r.backend_refs
                .into_iter()
                .map(|b| BackendRef {
                    group: b.group.unwrap_or_default(),
                    kind: b.kind.unwrap_or_else(|| "Service".into()),
                    namespace: b.namespace.unwrap_or_else(|| ns.clone()),
                    name: b.name,
                    port: b.port,
                    weight: b.weight.unwrap_or(1),
                })
                .collect()
        })
        .collect();
    Route {
        object,
        parents,
        hostnames: spec.hostnames,
        rules,
    }
}

fn grant(object: ObjectRef, spec: RawGrantSpec) -> Grant {
    Grant {
        object,
        from: spec
            .from
            .into_iter()
            .map(|f| (f.group, f.kind, f.namespace))
            .collect(),
        to: spec
            .to
            .into_iter()
            .map(|t| (t.group, t.kind, t.name.filter(|n| !n.is_empty())))
            .collect(),
    }
}

/// A Service port's `targetPort` defaults to its `port` (Kubernetes API,
/// ServicePort: "If this is not specified, the value of the 'port' field is
/// used"); `protocol` defaults to TCP.
fn service(object: &ObjectRef, spec: RawServiceSpec) -> Service {
    let ports = spec
        .ports
        .into_iter()
        .map(|p| {
            let target = match &p.target_port {
                Some(Value::String(name)) => match name.parse::<u16>() {
                    Ok(n) => TargetPort::Number(n),
                    Err(_) => TargetPort::Name(name.clone()),
                },
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .map_or(TargetPort::Number(p.port), TargetPort::Number),
                None => TargetPort::Number(p.port),
            };
            let tcp = p.protocol.as_deref().unwrap_or("TCP") == "TCP";
            (p.port, target, tcp)
        })
        .collect();
    Service {
        namespace: object.namespace.clone().unwrap_or_default(),
        name: object.name.clone(),
        selector: spec.selector.filter(|s| !s.is_empty()),
        ports,
    }
}
