//! "May Gateway G send traffic to this pod on this port?", answered from
//! the Gateway API objects: the L7 layer of a gateway's verdict.
//!
//! A gateway's Envoy opens connections only to the backends of routes
//! attached to it, so a flow from a gateway needs both the L3/L4 verdict
//! of the policies and a route. Each rule below follows the standard
//! channel's CRD text (/work/shared/schemas/gateway-api/v1.3.0, same in
//! v1.2.1) and the spec's guides:
//!
//! - A route attaches to a Gateway through a `parentRef` naming it (group
//!   and kind default to the Gateway API's `Gateway`, namespace to the
//!   route's); `sectionName` and `port` narrow it to matching listeners
//!   (HTTPRoute `spec.parentRefs`).
//! - A listener admits the route only if `allowedRoutes.namespaces.from`
//!   admits the route's namespace (`Same`, the default; `All`; `Selector`
//!   over the namespace's labels) and `allowedRoutes.kinds` names
//!   HTTPRoute, or, unset, the listener's protocol carries it; "If no
//!   Gateway listeners accept attachment from this Route, the Route MUST
//!   be considered detached" (CRD `parentRefs.sectionName`; guide
//!   "Cross-Namespace routing", gateway-api.sigs.k8s.io/guides/multiple-ns).
//! - Where both set host names, at least one must intersect ("If both the
//!   Listener and HTTPRoute have specified hostnames, and none match ...
//!   the HTTPRoute is not accepted", CRD `hostnames`).
//! - A `backendRef` (group `""`, kind `Service` by default) to another
//!   namespace is valid only with a ReferenceGrant in that namespace whose
//!   `from` names HTTPRoute in the route's namespace and whose `to` names
//!   Service (that name, or every Service when unnamed): "Implementations
//!   that support ReferenceGrant MUST NOT permit cross-namespace
//!   references which have no grant" (CRD ReferenceGrant; GEP-709;
//!   gateway-api.sigs.k8s.io/api-types/referencegrant).
//! - `port` of a Service backend is "the service port number, not the
//!   target port": the Service's `targetPort` (a number or a container
//!   port's name) is where the packets go; a weight of 0 forwards nothing
//!   (CRD `backendRefs.weight`).

use super::ObjectRef;
use super::endpoint::{ContainerPort, Endpoint, Identity, Proto};
use super::gateway_api::{
    BackendRef, From, GROUP, Gateway, GatewayApi, Listener, Route, Service, TargetPort,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The L7 answer for one gateway flow, naming the route (and grant) that
/// sends the traffic, or why none does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteDecision {
    /// Whether an attached route sends the traffic there.
    pub allowed: bool,
    /// The HTTPRoute that does (or the nearest one that would have).
    pub route: Option<ObjectRef>,
    /// The ReferenceGrant that let a route cross namespaces.
    pub grant: Option<ObjectRef>,
    /// In words: which rule, listener and grant, or why not.
    pub detail: String,
}

impl RouteDecision {
    fn denied(detail: String, route: Option<ObjectRef>) -> Self {
        Self {
            allowed: false,
            route,
            grant: None,
            detail,
        }
    }
}

impl fmt::Display for RouteDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allowed {
            write!(f, "routed by {}", self.detail)
        } else {
            write!(f, "not reachable at L7: {}", self.detail)
        }
    }
}

/// Where a route's backend sends traffic: the pods a Service selects, on
/// its target port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTarget {
    /// The Service's namespace (its pods').
    pub namespace: String,
    /// The Service's selector.
    pub selector: BTreeMap<String, String>,
    target: TargetPort,
}

impl BackendTarget {
    /// Whether a pod in `namespace` with `labels` is one of the backends.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        namespace == self.namespace && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The TCP port the traffic reaches on a pod with `ports`: the target
    /// number, or the container port of the target's name.
    pub fn port_on(&self, ports: &[ContainerPort]) -> Option<u16> {
        match &self.target {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => ports
                .iter()
                .find(|c| c.name.as_deref() == Some(name) && c.proto == Proto::Tcp)
                .map(|c| c.port),
        }
    }
}

/// A route attached to a Gateway, as its Envoy would serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedRoute {
    /// The HTTPRoute.
    pub route: ObjectRef,
    /// Its host names that the accepting listener serves (exact names
    /// only: a wildcard host has no single name to ask for); a route with
    /// none serves the listener's name, or [`ANY_HOST`].
    pub hostnames: Vec<String>,
    /// The valid backends of its rules.
    pub backends: Vec<BackendTarget>,
}

/// The host name of an attached route without an exact one of its own
/// on a listener without one: it matches any `Host` ("When unspecified,
/// all hostnames are matched"), and no request names it literally.
pub const ANY_HOST: &str = "*";

/// Whether two Gateway API host names intersect (CRD `hostnames`: a
/// `*.` label is a suffix match on one or more labels).
pub fn hostnames_intersect(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    match (a.strip_prefix("*."), b.strip_prefix("*.")) {
        (None, None) => a == b,
        (Some(s), None) => b.ends_with(&format!(".{s}")),
        (None, Some(s)) => a.ends_with(&format!(".{s}")),
        (Some(x), Some(y)) => {
            x == y || x.ends_with(&format!(".{y}")) || y.ends_with(&format!(".{x}"))
        }
    }
}

impl GatewayApi {
    /// Whether a route attached to the Gateway `namespace/name` sends
    /// traffic to `to` on `port`.
    pub fn reach(
        &self,
        namespace: &str,
        name: &str,
        to: &Endpoint,
        port: u16,
        proto: Proto,
    ) -> RouteDecision {
        let Some(gw) = self.gateway(namespace, name) else {
            let why = format!("no Gateway {namespace}/{name} among the objects");
            return RouteDecision::denied(why, None);
        };
        if proto != Proto::Tcp {
            let why = format!("{} carries HTTP over TCP only", gw.object);
            return RouteDecision::denied(why, None);
        }
        let mut miss = None;
        for (r, i, j) in self.candidates(to) {
            let b = &r.rules[i][j];
            if !self.sends_to(b, to, port) {
                continue;
            }
            let at = format!("{} spec.rules[{i}].backendRefs[{j}]", r.object);
            match self.admitted(r, b, gw) {
                Ok((how, grant)) => {
                    return RouteDecision {
                        allowed: true,
                        route: Some(r.object.clone()),
                        grant,
                        detail: format!("{at} {how}"),
                    };
                }
                Err(why) => {
                    miss.get_or_insert_with(|| {
                        (format!("{at} sends there, but {why}"), r.object.clone())
                    });
                }
            }
        }
        match miss {
            Some((why, route)) => RouteDecision::denied(why, Some(route)),
            None => RouteDecision::denied(
                format!(
                    "no HTTPRoute attached to {} sends to {} on port {port}",
                    gw.object, to.name
                ),
                None,
            ),
        }
    }

    /// Every (route, rule, backend) naming a Service that selects the pod
    /// `to`: only those can send there. Sorted by route, so the first miss
    /// reported does not depend on input order.
    fn candidates(&self, to: &Endpoint) -> Vec<(&Route, usize, usize)> {
        let Identity::Pod {
            namespace, labels, ..
        } = &to.identity
        else {
            return Vec::new();
        };
        let selects = |svc: &&Service| {
            svc.selector
                .as_ref()
                .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        };
        let mut out: Vec<(&Route, usize, usize)> = self
            .services_in(namespace)
            .filter(selects)
            .flat_map(|svc| self.backends_of(&svc.namespace, &svc.name))
            .collect();
        out.sort_by_key(|(r, i, j)| (&r.object, *i, *j));
        out
    }

    /// The routes attached to the Gateway `namespace/name`, each with its
    /// valid backends (what its Envoy would serve).
    pub fn attached(&self, namespace: &str, name: &str) -> Vec<AttachedRoute> {
        let Some(gw) = self.gateway(namespace, name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for r in &self.routes {
            let Ok(listener) = self.attach(r, gw) else {
                continue;
            };
            let backends = r
                .rules
                .iter()
                .flatten()
                .filter(|b| b.weight != 0 && self.grant(r, b).is_ok())
                .filter_map(|b| self.target(b))
                .collect();
            let mut hostnames: Vec<String> = r
                .hostnames
                .iter()
                .filter(|h| !h.starts_with("*."))
                .filter(|h| {
                    listener
                        .hostname
                        .as_deref()
                        .is_none_or(|l| hostnames_intersect(l, h))
                })
                .cloned()
                .collect();
            if hostnames.is_empty() {
                // No exact name of its own: it serves the listener's
                // (or any, [`ANY_HOST`]).
                let own = listener.hostname.clone().filter(|h| !h.starts_with("*."));
                hostnames.push(own.unwrap_or_else(|| ANY_HOST.to_owned()));
            }
            out.push(AttachedRoute {
                route: r.object.clone(),
                hostnames,
                backends,
            });
        }
        out
    }

    /// The Service a backend names, as a target; `None` for other kinds,
    /// an unknown Service or port, or a Service without a selector.
    fn target(&self, b: &BackendRef) -> Option<BackendTarget> {
        if !(b.group.is_empty() && b.kind == "Service") {
            return None;
        }
        let svc = self.service(&b.namespace, &b.name)?;
        let (_, target, _) = svc
            .ports
            .iter()
            .find(|(p, _, tcp)| Some(*p) == b.port && *tcp)?;
        Some(BackendTarget {
            namespace: svc.namespace.clone(),
            selector: svc.selector.clone()?,
            target: target.clone(),
        })
    }

    fn sends_to(&self, b: &BackendRef, to: &Endpoint, port: u16) -> bool {
        let Identity::Pod {
            namespace, labels, ..
        } = &to.identity
        else {
            return false;
        };
        self.target(b)
            .is_some_and(|t| t.selects(namespace, labels) && t.port_on(&to.ports) == Some(port))
    }

    /// Whether `b` of route `r` gets traffic from `gw`: a weight, an
    /// accepting listener, and a grant when it crosses namespaces.
    fn admitted(
        &self,
        r: &Route,
        b: &BackendRef,
        gw: &Gateway,
    ) -> Result<(String, Option<ObjectRef>), String> {
        if b.weight == 0 {
            return Err("its weight is 0, which forwards nothing".into());
        }
        let (k, l) = self.attach_at(r, gw)?;
        let grant = self.grant(r, b)?;
        let mut how = format!(
            "attached to {} spec.listeners[{k}] ({}, allowedRoutes from {})",
            gw.object,
            l.name,
            from_name(&l.from)
        );
        if let Some((g, f, t)) = &grant {
            how.push_str(&format!(
                ", across namespaces by {g} spec.from[{f}] spec.to[{t}]"
            ));
        }
        Ok((how, grant.map(|(g, _, _)| g)))
    }

    fn attach<'a>(&self, r: &Route, gw: &'a Gateway) -> Result<&'a Listener, String> {
        self.attach_at(r, gw).map(|(_, l)| l)
    }

    /// The first listener of `gw` that accepts `r`, or why none does.
    fn attach_at<'a>(&self, r: &Route, gw: &'a Gateway) -> Result<(usize, &'a Listener), String> {
        let mut why = format!("it has no parentRef to {}", gw.object);
        let parents = r.parents.iter().filter(|p| {
            p.group == GROUP
                && p.kind == "Gateway"
                && Some(p.namespace.as_str()) == gw.object.namespace.as_deref()
                && p.name == gw.object.name
        });
        for p in parents {
            for (k, l) in gw.listeners.iter().enumerate() {
                let named = p.section_name.as_ref().is_none_or(|s| *s == l.name);
                if !named || p.port.is_some_and(|x| x != l.port) {
                    why = format!(
                        "its parentRef's sectionName/port names no listener of {}",
                        gw.object
                    );
                    continue;
                }
                match self.admits(gw, l, r) {
                    Ok(()) => return Ok((k, l)),
                    Err(e) => why = format!("{} spec.listeners[{k}] ({}) {e}", gw.object, l.name),
                }
            }
        }
        Err(why)
    }

    /// Whether listener `l` of `gw` admits route `r` by kind, namespace
    /// and host name.
    fn admits(&self, gw: &Gateway, l: &Listener, r: &Route) -> Result<(), String> {
        match &l.kinds {
            Some(kinds) if !kinds.iter().any(|(g, k)| g == GROUP && k == "HTTPRoute") => {
                return Err("does not admit HTTPRoutes (allowedRoutes.kinds)".into());
            }
            None if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS") => {
                return Err(format!("takes no HTTPRoute on protocol {}", l.protocol));
            }
            _ => {}
        }
        let route_ns = r.object.namespace.as_deref().unwrap_or_default();
        let ns_ok = match &l.from {
            From::Same => gw.object.namespace.as_deref() == Some(route_ns),
            From::All => true,
            From::Selector(s) => s.matches(&self.namespace_labels(route_ns)),
            From::Invalid => false,
        };
        if !ns_ok {
            return Err(format!(
                "does not admit routes from namespace {route_ns} (allowedRoutes from {})",
                from_name(&l.from)
            ));
        }
        if let Some(h) = &l.hostname
            && !r.hostnames.is_empty()
            && !r.hostnames.iter().any(|rh| hostnames_intersect(h, rh))
        {
            return Err(format!(
                "serves {h}, which none of the route's hostnames match"
            ));
        }
        Ok(())
    }

    /// The grant a cross-namespace backend needs: (grant, from index, to
    /// index), `None` within the route's namespace.
    fn grant(&self, r: &Route, b: &BackendRef) -> Result<Option<GrantAt>, String> {
        let route_ns = r.object.namespace.as_deref().unwrap_or_default();
        if b.namespace == route_ns {
            return Ok(None);
        }
        for g in self
            .grants
            .iter()
            .filter(|g| g.object.namespace.as_deref() == Some(&b.namespace))
        {
            let from = g
                .from
                .iter()
                .position(|(grp, kind, ns)| grp == GROUP && kind == "HTTPRoute" && ns == route_ns);
            let to = g.to.iter().position(|(grp, kind, name)| {
                grp == &b.group && kind == &b.kind && name.as_ref().is_none_or(|n| *n == b.name)
            });
            if let (Some(f), Some(t)) = (from, to) {
                return Ok(Some((g.object.clone(), f, t)));
            }
        }
        Err(format!(
            "no ReferenceGrant in {} lets HTTPRoutes from {route_ns} reference {} {}",
            b.namespace, b.kind, b.name
        ))
    }
}

/// A ReferenceGrant and the indices of its matching `from` and `to`.
type GrantAt = (ObjectRef, usize, usize);

fn from_name(f: &From) -> &'static str {
    match f {
        From::Same => "Same",
        From::All => "All",
        From::Selector(_) | From::Invalid => "Selector",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn api(objects: &[Value]) -> GatewayApi {
        let mut unsupported = Vec::new();
        let api = GatewayApi::from_objects(objects, &mut unsupported);
        assert!(unsupported.is_empty(), "{unsupported:?}");
        api
    }

    fn gateway(listener: Value) -> Value {
        json!({"kind": "Gateway", "metadata": {"name": "gw", "namespace": "infra"},
               "spec": {"gatewayClassName": "cilium", "listeners": [listener]}})
    }

    fn route(ns: &str, backend: Value) -> Value {
        json!({"kind": "HTTPRoute", "metadata": {"name": "r", "namespace": ns},
               "spec": {"parentRefs": [{"name": "gw", "namespace": "infra"}],
                        "hostnames": ["app.example.com"],
                        "rules": [{"backendRefs": [backend]}]}})
    }

    fn service(ns: &str) -> Value {
        json!({"kind": "Service", "metadata": {"name": "app", "namespace": ns},
               "spec": {"selector": {"app": "app"},
                        "ports": [{"port": 80, "targetPort": "http"}]}})
    }

    fn pod(ns: &str) -> Endpoint {
        let mut ep = Endpoint::pod(ns, "app", [("app".to_owned(), "app".to_owned())].into());
        ep.ports = vec![ContainerPort {
            name: Some("http".into()),
            port: 8080,
            proto: Proto::Tcp,
        }];
        ep
    }

    fn http(allowed_routes: Value) -> Value {
        json!({"name": "http", "protocol": "HTTP", "port": 80,
               "hostname": "*.example.com", "allowedRoutes": allowed_routes})
    }

    /// `allowedRoutes` defaults to the Gateway's own namespace (CRD:
    /// "restricted to the namespace of this Gateway by default"); `All`
    /// admits every namespace. The Service port 80 targets the container
    /// port named `http` (8080), which is where the traffic goes.
    #[test]
    fn routes_attach_only_where_allowed_routes_admits_their_namespace() {
        let backend = json!({"name": "app", "port": 80});
        let same = api(&[
            gateway(http(json!({}))),
            route("app", backend.clone()),
            service("app"),
        ]);
        let d = same.reach("infra", "gw", &pod("app"), 8080, Proto::Tcp);
        assert!(!d.allowed, "{d}");
        assert!(d.to_string().contains("allowedRoutes from Same"), "{d}");

        let all = json!({"namespaces": {"from": "All"}});
        let all = api(&[gateway(http(all)), route("app", backend), service("app")]);
        let d = all.reach("infra", "gw", &pod("app"), 8080, Proto::Tcp);
        assert!(d.allowed, "{d}");
        assert!(
            !all.reach("infra", "gw", &pod("app"), 80, Proto::Tcp)
                .allowed
        );
        let attached = all.attached("infra", "gw");
        assert_eq!(attached.len(), 1);
        assert_eq!(attached[0].hostnames, ["app.example.com"]);
        assert_eq!(
            attached[0].backends[0].port_on(&pod("app").ports),
            Some(8080)
        );
    }

    /// A listener's `Selector` matches the route namespace's labels,
    /// including `kubernetes.io/metadata.name`; a listener host name the
    /// route's names do not intersect detaches it.
    #[test]
    fn namespace_selectors_and_host_names_decide_attachment() {
        let sel = json!({"namespaces": {"from": "Selector",
            "selector": {"matchLabels": {"kubernetes.io/metadata.name": "app"}}}});
        let backend = json!({"name": "app", "port": 80});
        let objs = [
            gateway(http(sel.clone())),
            route("app", backend.clone()),
            service("app"),
        ];
        assert!(
            api(&objs)
                .reach("infra", "gw", &pod("app"), 8080, Proto::Tcp)
                .allowed
        );
        // No host names of its own: it serves whatever the listener does.
        let mut any_host = route("app", backend.clone());
        any_host["spec"]["hostnames"] = json!([]);
        let objs = [gateway(http(sel.clone())), any_host, service("app")];
        let attached = api(&objs).attached("infra", "gw");
        assert_eq!(attached[0].hostnames, [ANY_HOST]);
        let mut other_host = route("app", backend);
        other_host["spec"]["hostnames"] = json!(["app.example.net"]);
        let objs = [gateway(http(sel)), other_host, service("app")];
        let d = api(&objs).reach("infra", "gw", &pod("app"), 8080, Proto::Tcp);
        assert!(
            !d.allowed && d.to_string().contains("serves *.example.com"),
            "{d}"
        );
    }

    /// A backendRef to another namespace needs a ReferenceGrant there from
    /// HTTPRoute in the route's namespace to that Service (or every
    /// Service); a grant naming another Service does not count.
    #[test]
    fn cross_namespace_backends_need_a_matching_reference_grant() {
        let all = json!({"namespaces": {"from": "All"}});
        let backend = json!({"name": "app", "namespace": "other", "port": 80});
        let grant = |to: Value| {
            json!({"kind": "ReferenceGrant", "metadata": {"name": "g", "namespace": "other"},
                   "spec": {"from": [{"group": "gateway.networking.k8s.io",
                                      "kind": "HTTPRoute", "namespace": "app"}],
                            "to": [to]}})
        };
        let base = [gateway(http(all)), route("app", backend), service("other")];
        let none = api(&base).reach("infra", "gw", &pod("other"), 8080, Proto::Tcp);
        assert!(
            !none.allowed && none.to_string().contains("no ReferenceGrant in other"),
            "{none}"
        );
        let mut wrong = base.to_vec();
        wrong.push(grant(json!({"group": "", "kind": "Service", "name": "db"})));
        assert!(
            !api(&wrong)
                .reach("infra", "gw", &pod("other"), 8080, Proto::Tcp)
                .allowed
        );
        let mut right = base.to_vec();
        right.push(grant(json!({"group": "", "kind": "Service"})));
        let d = api(&right).reach("infra", "gw", &pod("other"), 8080, Proto::Tcp);
        assert!(d.allowed && d.grant.is_some(), "{d}");
    }

    /// What the evaluator does not model is reported, not dropped: a
    /// mirror filter (a second backend) and other route kinds.
    #[test]
    fn mirrors_and_other_route_kinds_are_reported() {
        let mut r = route("app", json!({"name": "app", "port": 80}));
        r["spec"]["rules"][0]["filters"] = json!([{"type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": "other", "port": 80}}}]);
        let tcp = json!({"kind": "TCPRoute", "metadata": {"name": "t", "namespace": "app"},
                         "spec": {}});
        let mut unsupported = Vec::new();
        GatewayApi::from_objects(&[r, tcp], &mut unsupported);
        let paths: Vec<String> = unsupported
            .iter()
            .map(|u| format!("{} {}", u.object, u.path))
            .collect();
        assert_eq!(
            paths,
            [
                "HTTPRoute app/r spec.rules[0].filters[0]",
                "TCPRoute app/t spec"
            ]
        );
    }

    /// The CRD's examples: `*.example.com` matches `test.example.com` and
    /// `foo.test.example.com` but not `example.com`.
    #[test]
    fn host_names_intersect_as_the_crd_describes() {
        assert!(hostnames_intersect("*.example.com", "test.example.com"));
        assert!(hostnames_intersect("*.example.com", "foo.test.example.com"));
        assert!(hostnames_intersect("test.example.com", "*.example.com"));
        assert!(!hostnames_intersect("*.example.com", "example.com"));
        assert!(!hostnames_intersect("test.example.com", "test.example.net"));
    }
}
