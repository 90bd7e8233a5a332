//! The objects `render` ships for a snapshot, evaluated for the policy
//! model's endpoints: the second of the three verdicts `lab verify` and the
//! tests compare (model, objects, packets).
//!
//! A flow from a gateway is judged twice: by the policies at L3/L4, and by
//! the Gateway API objects at L7 (a route attached to that Gateway must
//! send the traffic, [`GatewayApi::reach`]). Cilium's gateways share one
//! `ingress` identity, so for them the routes are the only thing that keeps
//! one tenant's gateway away from another tenant's pods.

use super::endpoint::{Endpoint, Identity};
use super::gateway_api::GatewayApi;
use super::labels::Label;
use super::workloads::{gateway_pods, pods_from_manifests};
use super::{EvalOptions, PolicySet, Proto, Unsupported, Verdict};
use crate::options::RenderOptions;
use crate::render::{DEPLOYMENT_LABEL, TENANT_LABEL};
use palisade_core::policy::{Endpoint as ModelEndpoint, PortProto};
use palisade_core::{EgressMode, GatewayScope, Snapshot};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// An address standing for "the internet" (TEST-NET-2, RFC 5737).
pub const INTERNET_PROBE: &str = "198.51.100.20";

/// A snapshot's rendered policy objects and the endpoint each model
/// endpoint is in the cluster.
#[derive(Debug, Clone)]
pub struct RenderedPolicy {
    set: PolicySet,
    unsupported: Vec<Unsupported>,
    /// Each model endpoint's cluster endpoint and its identity labels,
    /// computed once (a verdict used to recompute both sides' labels).
    endpoints: BTreeMap<ModelEndpoint, (Endpoint, Vec<Label>)>,
    /// The Gateway API objects (the L7 layer of gateway flows).
    api: GatewayApi,
    /// Each gateway scope's Gateway object: (namespace, name).
    gateways: BTreeMap<GatewayScope, (String, String)>,
}

impl RenderedPolicy {
    /// Renders `snapshot` with `options` and reads the result.
    ///
    /// Tenants' egress addresses are left out: they shape no network
    /// policy, and an address the cluster's egress gateway cannot use (the
    /// lab's are IPv6) would make rendering refuse the snapshot. So are
    /// their listener ports: the lab and the dashboard compile the model
    /// with the shared proxy port (`PolicyOptions::default`), and the
    /// objects must be asked the same question.
    pub fn new(snapshot: &Snapshot, options: &RenderOptions) -> Result<Self, crate::Error> {
        let mut policy_only = snapshot.clone();
        for t in &mut policy_only.tenants {
            t.egress.ip = None;
            t.proxy_port = 0;
        }
        let rendered = crate::render(&policy_only, options)?;
        let objects: Vec<Value> = rendered.objects().map(|o| o.body.clone()).collect();
        Ok(Self::from_objects(snapshot, options, &objects))
    }

    /// Reads already rendered `objects` of `snapshot`.
    pub fn from_objects(snapshot: &Snapshot, options: &RenderOptions, objects: &[Value]) -> Self {
        let mut eo = EvalOptions::default();
        // palisade_kube::cluster turns on `nodeSelectorLabels` exactly when
        // the proxy runs on egress nodes.
        eo.identity.node_selector_labels = options.proxy.in_cluster.is_some();
        let (set, mut unsupported) = PolicySet::from_objects_with(objects, eo);
        let api = GatewayApi::from_objects(objects, &mut unsupported);
        let gateways = snapshot
            .gateways
            .iter()
            .map(|g| {
                let (name, ns) = crate::render::gateway_object(&g.scope, options);
                (g.scope.clone(), (ns, name))
            })
            .collect();
        let endpoints = endpoints(snapshot, options, objects)
            .into_iter()
            .map(|(m, ep)| {
                let labels = set.labels_of(&ep);
                (m, (ep, labels))
            })
            .collect();
        Self {
            set,
            unsupported,
            endpoints,
            api,
            gateways,
        }
    }

    /// What Cilium would do with `from` → `to` on `port`, or `None` when an
    /// endpoint has no counterpart in the objects. From a gateway, a route
    /// attached to its Gateway object must also send the traffic.
    pub fn verdict(
        &self,
        from: &ModelEndpoint,
        to: &ModelEndpoint,
        port: PortProto,
    ) -> Option<Verdict> {
        let (f, t) = (self.endpoints.get(from)?, self.endpoints.get(to)?);
        let (port, proto) = (port.port.get(), Proto::from(port.protocol));
        let mut v = self
            .set
            .verdict_labeled((&f.0, &f.1), (&t.0, &t.1), port, proto);
        if let ModelEndpoint::Gateway { scope } = from
            && let Some((ns, name)) = self.gateways.get(scope)
        {
            let route = self.api.reach(ns, name, &t.0, port, proto);
            v.allowed &= route.allowed;
            v.route = Some(route);
        }
        Some(v)
    }

    /// The Gateway API objects read.
    pub fn gateway_api(&self) -> &GatewayApi {
        &self.api
    }

    /// The Gateway object (namespace, name) of a gateway scope.
    pub fn gateway_object(&self, scope: &GatewayScope) -> Option<(&str, &str)> {
        self.gateways
            .get(scope)
            .map(|(ns, name)| (ns.as_str(), name.as_str()))
    }

    /// The cluster endpoint of a model endpoint.
    pub fn endpoint(&self, ep: &ModelEndpoint) -> Option<&Endpoint> {
        self.endpoints.get(ep).map(|(e, _)| e)
    }

    /// The evaluated objects.
    pub fn set(&self) -> &PolicySet {
        &self.set
    }

    /// What the evaluator could not model in them.
    pub fn unsupported(&self) -> &[Unsupported] {
        &self.unsupported
    }
}

/// Deployments are their rendered pods (matched by the tenant and
/// deployment labels); every gateway of the `cilium` class is Cilium's
/// Envoy with the `ingress` identity ("Layer 3 Examples", entity
/// `ingress`: "the Cilium Envoy instance which handles ingress L7
/// traffic"); cluster DNS is CoreDNS as kubeadm and EKS label it; the
/// proxy is what the options say; the internet is a world address.
/// Gateways of other classes are the pods their implementation runs in the
/// gateway namespace with the GEP-1762 name label ([`gateway_pods`]).
fn endpoints(
    snap: &Snapshot,
    options: &RenderOptions,
    objects: &[Value],
) -> BTreeMap<ModelEndpoint, Endpoint> {
    let mut out = BTreeMap::new();
    for ep in pods_from_manifests(objects) {
        if let Some(m) = deployment_of(&ep) {
            out.insert(m, ep);
        }
    }
    let scopes: BTreeSet<_> = snap.gateways.iter().map(|g| g.scope.clone()).collect();
    let pods = gateway_pods(objects);
    for scope in scopes {
        let ep = if options.gateway_class == "cilium" {
            Some(Endpoint::reserved("ingress", Identity::Ingress))
        } else {
            let (name, ns) = crate::render::gateway_object(&scope, options);
            pods.iter()
                .find(|p| p.name == format!("{ns}/gateway/{name}"))
                .cloned()
        };
        if let Some(ep) = ep {
            out.insert(ModelEndpoint::Gateway { scope }, ep);
        }
    }
    out.insert(
        ModelEndpoint::ClusterDns,
        Endpoint::pod(
            "kube-system",
            "coredns",
            [("k8s-app".to_owned(), "kube-dns".to_owned())].into(),
        ),
    );
    let proxy = proxy_endpoint(options);
    for t in snap
        .tenants
        .iter()
        .filter(|t| t.egress.mode == EgressMode::Proxy)
    {
        out.insert(
            ModelEndpoint::EgressProxy {
                tenant: t.name.clone(),
            },
            proxy.clone(),
        );
    }
    let mut world = Endpoint::reserved("internet", Identity::World);
    world.addresses = INTERNET_PROBE.parse().into_iter().collect();
    out.insert(ModelEndpoint::Internet, world);
    out
}

fn deployment_of(ep: &Endpoint) -> Option<ModelEndpoint> {
    let Identity::Pod { labels, .. } = &ep.identity else {
        return None;
    };
    Some(ModelEndpoint::Deployment {
        tenant: labels.get(TENANT_LABEL)?.parse().ok()?,
        deployment: labels.get(DEPLOYMENT_LABEL)?.parse().ok()?,
    })
}

/// The proxy as the renderer addresses it: an outside address (world), a
/// host-network pod on egress nodes (a remote node with their label), or
/// pods in its namespace.
fn proxy_endpoint(options: &RenderOptions) -> Endpoint {
    let p = &options.proxy;
    match (p.ip(), &p.in_cluster) {
        (Some(ip), _) => {
            let mut ep = Endpoint::reserved("egress-proxy", Identity::World);
            ep.addresses = vec![ip];
            ep
        }
        (None, Some(c)) => Endpoint::reserved(
            "egress-proxy",
            Identity::Node {
                labels: [c.node_label.clone()].into(),
                local: false,
            },
        ),
        (None, None) => Endpoint::pod(
            &p.namespace,
            "palisade-proxy",
            [("app.kubernetes.io/name".to_owned(), p.app.clone())].into(),
        ),
    }
}
