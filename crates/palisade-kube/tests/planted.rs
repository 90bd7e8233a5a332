//! Planted translation faults are caught at the object level (issue 17).
//!
//! The seed is rendered, one fault a renderer could make is planted in the
//! rendered objects (edited as JSON, the way a bug would have written them),
//! and every probe of the seed's scenario is asked twice: of the policy
//! model (`Policy::allowed`, plus the platform's own denies the model does
//! not hold: cloud metadata and the API server) and of the objects, read
//! with Cilium's semantics by `palisade_kube::eval`. Each fault must show
//! up as a disagreement the unmodified objects do not have, naming the
//! object and rule that decided.
//!
//! Two gateway classes are used. With `cilium`, every Gateway is Cilium's
//! Envoy with the one `ingress` identity, whose egress no policy restricts,
//! so a wrong tenant-side ingress grant is visible from it; what keeps one
//! tenant's gateway from another tenant's pods there is the Gateway API
//! objects (route attachment and ReferenceGrants), which the objects'
//! verdict reads as its L7 layer, so faults in them are caught too. With
//! another class (`istio` here), gateways are pods selected by the
//! GEP-1762 name label. With either, the unmodified objects agree with the
//! model everywhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use palisade_core::policy::Endpoint as Model;
use palisade_core::{Policy, PolicyOptions, PortProto, Protocol, Snapshot};
use palisade_kube::eval::{Endpoint, Identity, Proto, RenderedPolicy, Verdict};
use palisade_kube::{RenderOptions, fixtures};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use support::model::model_endpoints;

/// Where a probe goes: a model endpoint, or a platform address the model
/// has no endpoint for (every tenant pod is denied it).
#[derive(Debug, Clone)]
enum Target {
    Model(Model),
    /// Cloud metadata at this address (`render::METADATA_V4`/`_V6`).
    Metadata(IpAddr),
    /// The Kubernetes API server (the `kube-apiserver` entity).
    ApiServer,
}

/// One probe: who, to what, on which port.
#[derive(Debug, Clone)]
struct Probe {
    from: Model,
    to: Target,
    port: PortProto,
}

impl Probe {
    fn name(&self) -> String {
        let to = match &self.to {
            Target::Model(m) => m.to_string(),
            Target::Metadata(ip) => format!("cloud-metadata {ip}"),
            Target::ApiServer => "kube-apiserver".into(),
        };
        let (port, proto) = (self.port.port.get(), self.port.protocol.as_k8s());
        format!("{} -> {to} {port}/{proto}", self.from)
    }
}

/// A probe the model and the objects answer differently.
#[derive(Debug, Clone)]
struct Disagreement {
    model: (bool, String),
    objects: Verdict,
}

impl Disagreement {
    /// Both directions' decisions, as `lab verify` prints them, and the
    /// route decision of a gateway's flow.
    fn decisions(&self) -> String {
        let mut out = format!(
            "egress {}; ingress {}",
            self.objects.egress, self.objects.ingress
        );
        if let Some(r) = &self.objects.route {
            out.push_str(&format!("; {r}"));
        }
        out
    }
}

/// The seed, rendered with `options`, as the objects `render` ships.
/// Tenants' egress addresses and listener ports are left out as
/// `RenderedPolicy::new` does (they shape no policy the model is asked about).
fn seed(options: &RenderOptions) -> (Snapshot, Vec<Value>) {
    let mut snap = fixtures::seed();
    for t in &mut snap.tenants {
        t.egress.ip = None;
        t.proxy_port = 0;
    }
    let rendered = palisade_kube::render(&snap, options).expect("the seed renders");
    let objects = rendered.objects().map(|o| o.body.clone()).collect();
    (snap, objects)
}

fn istio() -> RenderOptions {
    RenderOptions {
        gateway_class: "istio".into(),
        ..RenderOptions::default()
    }
}

/// Every port a deployment serves, DNS, the proxy, HTTP, and ports
/// nothing opens (9/TCP, 5432/UDP).
fn ports(snap: &Snapshot, options: &RenderOptions) -> BTreeSet<PortProto> {
    let mut out: BTreeSet<(u16, Protocol)> = [
        (80, Protocol::Tcp),
        (443, Protocol::Tcp),
        (53, Protocol::Udp),
        (53, Protocol::Tcp),
        (9, Protocol::Tcp),
        (5432, Protocol::Udp),
        (options.proxy.port.get(), Protocol::Tcp),
    ]
    .into();
    for d in &snap.deployments {
        out.extend(d.ports.iter().map(|p| (p.get(), Protocol::Tcp)));
    }
    out.into_iter()
        .map(|(port, protocol)| PortProto {
            protocol,
            port: port.try_into().unwrap(),
        })
        .collect()
}

/// Every probe of the scenario: each pair of model endpoints with a
/// deployment on at least one side (flows among platform parts alone are
/// outside the model), on every port; and each deployment to cloud
/// metadata (both families) on 80 and to the API server on 443.
fn probes(snap: &Snapshot, options: &RenderOptions) -> Vec<Probe> {
    let eps = model_endpoints(snap);
    let ports = ports(snap, options);
    let is_dep = |m: &Model| matches!(m, Model::Deployment { .. });
    let mut out = Vec::new();
    for from in &eps {
        for to in eps.iter().filter(|to| is_dep(from) || is_dep(to)) {
            for &port in &ports {
                out.push(Probe {
                    from: from.clone(),
                    to: Target::Model(to.clone()),
                    port,
                });
            }
        }
    }
    let tcp = |p: u16| PortProto::tcp(p.try_into().unwrap());
    for from in eps.iter().filter(|m| is_dep(m)) {
        for ip in ["169.254.169.254", "fd00:ec2::254"] {
            out.push(Probe {
                from: from.clone(),
                to: Target::Metadata(ip.parse().unwrap()),
                port: tcp(80),
            });
        }
        out.push(Probe {
            from: from.clone(),
            to: Target::ApiServer,
            port: tcp(443),
        });
    }
    out
}

/// The model's verdict: `Policy::allowed`, or the platform's deny for
/// metadata and the API server (the renderer's default-deny `egressDeny`).
fn model_verdict(policy: &Policy, p: &Probe) -> (bool, String) {
    match &p.to {
        Target::Model(to) => {
            let v = policy.allowed(&p.from, to, p.port);
            (v.allowed, v.reason.to_string())
        }
        Target::Metadata(_) => (false, "platform: cloud metadata is denied".into()),
        Target::ApiServer => (false, "platform: the API server is denied".into()),
    }
}

/// The objects' verdict on one probe.
fn objects_verdict(objects: &RenderedPolicy, p: &Probe) -> Verdict {
    let stand_in = match &p.to {
        Target::Model(to) => {
            return objects
                .verdict(&p.from, to, p.port)
                .unwrap_or_else(|| panic!("{} has no counterpart in the objects", p.name()));
        }
        Target::Metadata(ip) => {
            let mut ep = Endpoint::reserved("cloud-metadata", Identity::World);
            ep.addresses = vec![*ip];
            ep
        }
        Target::ApiServer => Endpoint::reserved("kube-apiserver", Identity::KubeApiServer),
    };
    let from = objects
        .endpoint(&p.from)
        .expect("a deployment has its pods");
    objects.set().verdict(
        from,
        &stand_in,
        p.port.port.get(),
        Proto::from(p.port.protocol),
    )
}

/// Every probe where the model and `objects` (the seed's, rendered with
/// `options`, perhaps with a fault planted) disagree: probe → details.
fn disagreements(options: &RenderOptions, objects: &[Value]) -> BTreeMap<String, Disagreement> {
    let snap = seed(options).0;
    let rendered = RenderedPolicy::from_objects(&snap, options, objects);
    assert!(
        rendered.unsupported().is_empty(),
        "{:?}",
        rendered.unsupported()
    );
    let policy = Policy::compile_with(
        &snap,
        &PolicyOptions {
            proxy_port: options.proxy.port,
            tenant_ports: false,
        },
    );
    let mut out = BTreeMap::new();
    for p in probes(&snap, options) {
        let model = model_verdict(&policy, &p);
        let objects = objects_verdict(&rendered, &p);
        if model.0 != objects.allowed {
            out.insert(p.name(), Disagreement { model, objects });
        }
    }
    out
}

/// The disagreements `plant` adds to the seed rendered with `options`.
fn planted(
    options: &RenderOptions,
    plant: impl FnOnce(&mut Vec<Value>),
) -> Vec<(String, Disagreement)> {
    let (_, mut objects) = seed(options);
    let before = disagreements(options, &objects);
    plant(&mut objects);
    let after = disagreements(options, &objects);
    after
        .into_iter()
        .filter(|(k, _)| !before.contains_key(k))
        .collect()
}

/// The object of `kind` named `name` in `namespace` (`None`: cluster-scoped).
fn object<'a>(
    objects: &'a mut [Value],
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> &'a mut Value {
    objects
        .iter_mut()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str() == namespace
        })
        .unwrap_or_else(|| panic!("the seed renders {kind} {namespace:?}/{name}"))
}

fn cnp<'a>(objects: &'a mut [Value], namespace: &str, name: &str) -> &'a mut Value {
    object(objects, "CiliumNetworkPolicy", Some(namespace), name)
}

fn report(found: &[(String, Disagreement)]) -> String {
    found
        .iter()
        .map(|(k, d)| format!("{k}: model {:?}, objects {}", d.model, d.decisions()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every disagreement `found` names `names` (object and rule) in the
/// deciding direction, and `flow` is among them.
fn assert_caught(found: &[(String, Disagreement)], flow: &str, names: &str) {
    assert!(
        found.iter().any(|(k, _)| k == flow),
        "{flow} is not reported; found:\n{}",
        report(found)
    );
    for (k, d) in found {
        assert!(
            d.decisions().contains(names),
            "{k} does not name {names}:\n{}",
            report(found)
        );
    }
}

/// The control: nothing planted, nothing reported, platform denies
/// included, with label-selected gateways and with Cilium's Envoy (whose
/// shared `ingress` identity the routes separate, `tests/eval.rs`).
#[test]
fn the_unmodified_render_agrees_with_the_model() {
    for options in [istio(), RenderOptions::default()] {
        let (_, objects) = seed(&options);
        let d = disagreements(&options, &objects);
        assert!(d.is_empty(), "{}: {d:#?}", options.gateway_class);
    }
}

/// Fault (a): `deployment-database`'s endpointSelector matches
/// api-backend's pods instead of the database's, so the database keeps
/// only the tenant's default deny and the allowed api-backend → database
/// on 5432 is dropped. Cilium's docs ("Endpoint Selector"): a rule applies
/// to every endpoint its endpointSelector matches, and to no other.
///
/// The flavour where web-frontend's policy also selects api-backend opens
/// api-backend's port 80 to the gateways' `ingress` identity at L3/L4, but
/// no HTTPRoute sends a gateway's traffic there, so no flow changes: the
/// objects' verdict shows the L3/L4 allow and the L7 denial.
#[test]
fn a_selector_matching_another_deployments_pods_is_caught() {
    let found = planted(&RenderOptions::default(), |objects| {
        let p = cnp(objects, "tenant-acme-corp", "deployment-database");
        p["spec"]["endpointSelector"] = json!({"matchLabels": {
            "palisade.io/deployment": "api-backend",
        }});
    });
    assert_caught(
        &found,
        "acme-corp/api-backend -> acme-corp/database 5432/TCP",
        "default-deny by CiliumNetworkPolicy tenant-acme-corp/default-deny",
    );

    let options = RenderOptions::default();
    let (snap, mut objects) = seed(&options);
    let p = cnp(&mut objects, "tenant-acme-corp", "deployment-web-frontend");
    p["spec"]["endpointSelector"] = json!({"matchExpressions": [{
        "key": "palisade.io/deployment",
        "operator": "In",
        "values": ["web-frontend", "api-backend"],
    }]});
    let rendered = RenderedPolicy::from_objects(&snap, &options, &objects);
    let probe = Probe {
        from: Model::Gateway {
            scope: palisade_core::GatewayScope::Central,
        },
        to: Target::Model(Model::deployment(
            &"acme-corp".parse().unwrap(),
            &"api-backend".parse().unwrap(),
        )),
        port: PortProto::tcp(80.try_into().unwrap()),
    };
    let v = objects_verdict(&rendered, &probe);
    assert_eq!(
        v.ingress.to_string(),
        "allow by CiliumNetworkPolicy tenant-acme-corp/deployment-web-frontend spec.ingress[1]"
    );
    let route = v.route.expect("a gateway's flow has a route decision");
    assert!(!v.allowed && !route.allowed, "{route}");
}

/// Fault (b): a tenant workload carries the label a gateway's policy
/// selects its pods by, and that policy is clusterwide, so the label alone
/// (not the gateway namespace) decides: the tenant's web-frontend pods
/// become "the gateway" and the world reaches them on 80. The clusterwide
/// policy without the carried label changes nothing: the label is the
/// fault's trigger.
#[test]
fn a_tenant_workload_carrying_a_gateway_label_is_caught() {
    // The gateway's policy, clusterwide: its endpointSelector
    // (`gateway.networking.k8s.io/gateway-name: central`) now matches pods
    // in every namespace, not only in palisade-gateways.
    let clusterwide = |objects: &mut Vec<Value>| {
        let p = cnp(objects, "palisade-gateways", "gateway-central");
        p["kind"] = json!("CiliumClusterwideNetworkPolicy");
        p["metadata"].as_object_mut().unwrap().remove("namespace");
    };
    let alone = planted(&istio(), clusterwide);
    assert!(alone.is_empty(), "{}", report(&alone));

    let found = planted(&istio(), |objects| {
        clusterwide(objects);
        let web = object(
            objects,
            "Deployment",
            Some("tenant-acme-corp"),
            "web-frontend",
        );
        web["spec"]["template"]["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] =
            json!("central");
    });
    assert_caught(
        &found,
        "internet -> acme-corp/web-frontend 80/TCP",
        "allow by CiliumClusterwideNetworkPolicy gateway-central spec.ingress[0]",
    );
}

/// Fault (c): big-corp's default-deny loses its cloud-metadata deny. Its
/// pods may reach the world (`toEntities: [world]`, egress-gateway mode),
/// which covers 169.254.169.254 and fd00:ec2::254: only the deny kept them
/// out ("Deny Policies": deny takes precedence). The same fault for
/// acme-corp, whose pods reach only the proxy, changes no verdict.
#[test]
fn a_missing_metadata_deny_for_a_world_egress_tenant_is_caught() {
    let drop_metadata = |ns: &'static str| {
        move |objects: &mut Vec<Value>| {
            let p = cnp(objects, ns, "default-deny");
            let denies = p["spec"]["egressDeny"].as_array_mut().unwrap();
            denies.retain(|r| r.get("toCIDR").is_none());
        }
    };
    let acme = planted(&istio(), drop_metadata("tenant-acme-corp"));
    assert!(acme.is_empty(), "{}", report(&acme));

    let found = planted(&istio(), drop_metadata("tenant-big-corp"));
    assert_caught(
        &found,
        "big-corp/database -> cloud-metadata 169.254.169.254 80/TCP",
        "egress allow by CiliumNetworkPolicy tenant-big-corp/deployment-database spec.egress[2]",
    );
    assert!(
        found
            .iter()
            .any(|(k, _)| k == "big-corp/database -> cloud-metadata fd00:ec2::254 80/TCP"),
        "{}",
        report(&found)
    );
}

/// Fault (d): the allow rule `api-backend -> database port 5432` is
/// rendered without its port, on both sides (the sender's egress and the
/// receiver's ingress come from the same rule): every port opens. Cilium's
/// docs ("Layer 4 Examples"): a rule without `toPorts` allows all ports.
#[test]
fn an_allow_rule_without_its_port_is_caught() {
    let found = planted(&istio(), |objects| {
        let api = cnp(objects, "tenant-acme-corp", "deployment-api-backend");
        api["spec"]["egress"][1]
            .as_object_mut()
            .unwrap()
            .remove("toPorts");
        let db = cnp(objects, "tenant-acme-corp", "deployment-database");
        db["spec"]["ingress"][0]
            .as_object_mut()
            .unwrap()
            .remove("toPorts");
    });
    for flow in [
        "acme-corp/api-backend -> acme-corp/database 9/TCP",
        "acme-corp/api-backend -> acme-corp/database 5432/UDP",
    ] {
        assert_caught(
            &found,
            flow,
            "egress allow by CiliumNetworkPolicy tenant-acme-corp/deployment-api-backend spec.egress[1]; \
             ingress allow by CiliumNetworkPolicy tenant-acme-corp/deployment-database spec.ingress[0]",
        );
    }
}

/// The seed's rendered HTTPRoute `central-api-backend` (tenant-acme-corp),
/// copied into big-corp's namespace, attached to big-corp's own gateway,
/// with its backend still acme-corp's Service: what a tenant could write,
/// or a renderer bug could emit.
fn stolen_route(objects: &[Value]) -> Value {
    let mut r = objects
        .iter()
        .find(|o| o["kind"] == "HTTPRoute" && o["metadata"]["name"] == "central-api-backend")
        .cloned()
        .expect("the seed routes api-backend through the central gateway");
    r["metadata"]["namespace"] = json!("tenant-big-corp");
    r["metadata"]["name"] = json!("stolen");
    r["spec"]["parentRefs"] =
        json!([{"name": "tenant-big-corp", "namespace": "palisade-gateways"}]);
    r["spec"]["hostnames"] = json!(["api.big-corp.apps.example.com"]);
    r["spec"]["rules"][0]["backendRefs"][0]["namespace"] = json!("tenant-acme-corp");
    r
}

/// Fault (e): big-corp's route sends its gateway's traffic to acme-corp's
/// api-backend, and a ReferenceGrant in tenant-acme-corp lets HTTPRoutes
/// from tenant-big-corp reference Services there. Gateway API
/// (ReferenceGrant, GEP-709): a cross-namespace backendRef is valid only
/// with such a grant in the referent's namespace; with it, Cilium's Envoy
/// for big-corp's Gateway forwards to acme-corp's pods, and the shared
/// `ingress` identity lets the packets through. The same route without
/// the grant changes nothing: the grant is the fault's trigger.
#[test]
fn a_cross_tenant_backend_with_a_reference_grant_is_caught() {
    let cilium = RenderOptions::default();
    let alone = planted(&cilium, |objects| {
        let r = stolen_route(objects);
        objects.push(r);
    });
    assert!(
        alone
            .iter()
            .all(|(k, _)| !k.starts_with("gateway/big-corp")),
        "{}",
        report(&alone)
    );

    let found = planted(&cilium, |objects| {
        let r = stolen_route(objects);
        objects.push(r);
        objects.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "let-big-corp-in", "namespace": "tenant-acme-corp"},
            "spec": {
                "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                          "namespace": "tenant-big-corp"}],
                "to": [{"group": "", "kind": "Service"}],
            },
        }));
    });
    assert_caught(
        &found,
        "gateway/big-corp -> acme-corp/api-backend 8080/TCP",
        "routed by HTTPRoute tenant-big-corp/stolen spec.rules[0].backendRefs[0] attached to \
         Gateway palisade-gateways/tenant-big-corp spec.listeners[0] (http, allowedRoutes from \
         Selector), across namespaces by ReferenceGrant tenant-acme-corp/let-big-corp-in \
         spec.from[0] spec.to[0]",
    );
}

/// Fault (f): big-corp's Gateway admits routes from every namespace
/// (`allowedRoutes.namespaces.from: All`), so a route acme-corp writes
/// naming big-corp's Gateway attaches to it, and big-corp's gateway
/// forwards to acme-corp's pods. Gateway API (`allowedRoutes`, guide
/// "Cross-Namespace routing"): `All` admits routes from all namespaces;
/// the rendered `Selector` admits only the tenant's own, so the same route
/// under the unmodified Gateway changes nothing.
#[test]
fn a_gateway_admitting_routes_from_all_namespaces_is_caught() {
    let cilium = RenderOptions::default();
    // acme-corp's own route to its api-backend, naming big-corp's Gateway.
    let foreign = |objects: &mut Vec<Value>| {
        let mut r = stolen_route(objects);
        r["metadata"]["namespace"] = json!("tenant-acme-corp");
        r["spec"]["rules"][0]["backendRefs"][0]
            .as_object_mut()
            .unwrap()
            .remove("namespace");
        objects.push(r);
    };
    let alone = planted(&cilium, foreign);
    assert!(alone.is_empty(), "{}", report(&alone));

    let found = planted(&cilium, |objects| {
        foreign(objects);
        let gw = object(
            objects,
            "Gateway",
            Some("palisade-gateways"),
            "tenant-big-corp",
        );
        gw["spec"]["listeners"][0]["allowedRoutes"] = json!({"namespaces": {"from": "All"}});
    });
    assert_caught(
        &found,
        "gateway/big-corp -> acme-corp/api-backend 8080/TCP",
        "attached to Gateway palisade-gateways/tenant-big-corp spec.listeners[0] (http, \
         allowedRoutes from All)",
    );
}
