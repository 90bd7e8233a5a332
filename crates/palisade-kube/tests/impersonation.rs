//! No rendered policy grants anything on a label a tenant can set
//! (issue 15). Every label key any rendered policy selects on is listed;
//! a tenant workload then carries each key with each value a policy wants,
//! and the rendered objects (read by `palisade_kube::eval`, Cilium's
//! semantics) must treat it exactly like the same workload without it.
//! Keys a tenant cannot set through Palisade must be refused by the model
//! (CLI, import, CRD and dashboard all parse labels through it) and, for
//! pods written directly, by the rendered admission policy
//! (`tests/admission.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_core::{Deployment, LabelKey, Labels};
use palisade_kube::eval::{
    Endpoint, Identity, PolicySet, Proto, gateway_pods, pods_from_manifests,
};
use palisade_kube::render::render;
use palisade_kube::{InClusterProxy, RenderOptions, fixtures};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Every `key → values` a selector of a Cilium policy names (endpoint and
/// peer selectors; `Exists` requirements get a placeholder value). Keys
/// are given without Cilium's `k8s:`/`any:` source prefix.
fn selected_pairs(objects: &[Value]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |sel: &Value| {
        for (k, v) in sel["matchLabels"].as_object().into_iter().flatten() {
            let key = k.trim_start_matches("k8s:").trim_start_matches("any:");
            out.entry(key.to_owned())
                .or_default()
                .insert(v.as_str().unwrap_or_default().to_owned());
        }
        for e in sel["matchExpressions"].as_array().into_iter().flatten() {
            let key = e["key"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("k8s:")
                .to_owned();
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let entry = out.entry(key).or_default();
            if values.is_empty() {
                entry.insert("x".into());
            }
            entry.extend(values);
        }
    };
    for p in objects.iter().filter(|o| {
        o["kind"]
            .as_str()
            .is_some_and(|k| k.starts_with("Cilium") && k.ends_with("NetworkPolicy"))
    }) {
        add(&p["spec"]["endpointSelector"]);
        for section in ["ingress", "ingressDeny", "egress", "egressDeny"] {
            for rule in p["spec"][section].as_array().into_iter().flatten() {
                for peers in ["fromEndpoints", "toEndpoints"] {
                    for sel in rule[peers].as_array().into_iter().flatten() {
                        add(sel);
                    }
                }
            }
        }
    }
    out
}

/// Labels Cilium derives from where a pod runs, not from what it says:
/// `io.kubernetes.pod.namespace` and the namespace's own labels
/// (`io.cilium.k8s.namespace.labels.*`), and the service account.
fn set_by_cilium(key: &str) -> bool {
    key == "io.kubernetes.pod.namespace"
        || key.starts_with("io.cilium.k8s.namespace.labels.")
        || key == "io.cilium.k8s.policy.serviceaccount"
        || key.starts_with("reserved:")
}

fn intruder(labels: Labels) -> Deployment {
    let mut snap = fixtures::seed();
    let mut d = snap
        .deployments
        .iter()
        .find(|d| d.tenant.as_str() == "acme-corp")
        .cloned()
        .unwrap();
    d.name = "intruder".parse().unwrap();
    d.subnet = snap.pool.subnet(9);
    d.ports = vec!["8080".parse().unwrap()];
    d.labels = labels;
    snap.deployments.clear();
    d
}

/// The rendered policies and every endpoint they could concern.
struct World {
    objects: Vec<Value>,
    set: PolicySet,
    endpoints: Vec<Endpoint>,
}

fn world(options: &RenderOptions, extra: Deployment) -> World {
    let mut snap = fixtures::seed();
    snap.deployments.push(extra);
    let objects: Vec<Value> = render(&snap, options)
        .unwrap()
        .objects()
        .map(|o| o.body.clone())
        .collect();
    let (set, _) = PolicySet::from_objects(&objects);
    let mut endpoints = pods_from_manifests(&objects);
    endpoints.extend(gateway_pods(&objects));
    for (name, identity) in [("world", Identity::World), ("ingress", Identity::Ingress)] {
        endpoints.push(Endpoint::reserved(name, identity));
    }
    // The cluster's parts the policies name: cluster DNS and the proxy.
    for (ns, name, key, value) in [
        ("kube-system", "coredns", "k8s-app", "kube-dns"),
        (
            "palisade-system",
            "palisade-proxy",
            "app.kubernetes.io/name",
            "palisade-proxy",
        ),
    ] {
        let labels = BTreeMap::from([(key.to_owned(), value.to_owned())]);
        endpoints.push(Endpoint::pod(ns, name, labels));
    }
    World {
        objects,
        set,
        endpoints,
    }
}

/// What `me` may reach and be reached by, and which objects select it.
fn reach(set: &PolicySet, endpoints: &[Endpoint], me: &str) -> (Vec<String>, BTreeSet<String>) {
    let me = endpoints
        .iter()
        .find(|e| e.name == me)
        .unwrap_or_else(|| panic!("no endpoint {me}"));
    let selected = set
        .selected_by(me)
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut flows = BTreeSet::new();
    for other in endpoints.iter().filter(|e| e.name != me.name) {
        let ports: BTreeSet<u16> = other
            .ports
            .iter()
            .chain(&me.ports)
            .map(|p| p.port)
            .chain([53, 80, 443, 3128])
            .collect();
        for port in ports {
            if set.verdict(me, other, port, Proto::Tcp).allowed {
                flows.insert(format!("-> {} {port}", other.name));
            }
            if set.verdict(other, me, port, Proto::Tcp).allowed {
                flows.insert(format!("<- {} {port}", other.name));
            }
        }
    }
    (selected, flows)
}

fn variants() -> Vec<(&'static str, RenderOptions)> {
    vec![
        (
            "defaults (Cilium gateways, proxy by name)",
            RenderOptions::default(),
        ),
        (
            "another gateway implementation",
            RenderOptions {
                gateway_class: "istio".into(),
                ..RenderOptions::default()
            },
        ),
        (
            "in-cluster proxy and the egress-check demo",
            RenderOptions {
                proxy: palisade_kube::ProxyOptions {
                    in_cluster: Some(InClusterProxy::new(String::new())),
                    ..palisade_kube::ProxyOptions::default()
                },
                egress_check: Some(palisade_kube::EgressCheck::default()),
                ..RenderOptions::default()
            },
        ),
    ]
}

#[test]
fn a_tenant_workload_carrying_any_selected_label_gains_nothing() {
    let me = "tenant-acme-corp/intruder";
    let mut checked = 0;
    for (variant, options) in variants() {
        let base = world(&options, intruder(Labels::new()));
        let control = reach(&base.set, &base.endpoints, me);
        // The control is an ordinary workload: it resolves names and the
        // central gateway fronts it.
        assert!(
            control.1.contains("-> kube-system/coredns 53"),
            "{variant}: {control:?}"
        );
        assert!(
            control
                .1
                .iter()
                .any(|f| f.starts_with("<- ") && f.ends_with(" 8080")),
            "{variant}: no gateway reaches it: {control:?}"
        );
        for (key, values) in selected_pairs(&base.objects) {
            if set_by_cilium(&key) {
                continue;
            }
            let Ok(parsed) = key.parse::<LabelKey>() else {
                // Refused everywhere a tenant names labels.
                assert!(
                    key.starts_with("palisade.io/"),
                    "{variant}: {key} is refused but not reserved"
                );
                continue;
            };
            for value in values {
                let mut labels = Labels::new();
                labels.insert(parsed.clone(), value.parse().unwrap());
                let forged = world(&options, intruder(labels));
                let forged = reach(&forged.set, &forged.endpoints, me);
                assert_eq!(
                    forged.0, control.0,
                    "{variant}: {key}={value} changes which policies select the workload"
                );
                assert_eq!(
                    forged.1, control.1,
                    "{variant}: {key}={value} changes what the workload may reach or be reached by"
                );
                checked += 1;
            }
        }
    }
    // Selectors on tenant-settable keys exist (kube-dns's `k8s-app`, the
    // gateway-name label, the proxy's `app.kubernetes.io/name`): each was
    // tried.
    assert!(checked >= 3, "only {checked} forgeable pairs tried");
}

#[test]
fn the_keys_palisade_selects_tenant_pods_by_are_refused_as_user_labels() {
    for key in [
        "palisade.io/deployment",
        "palisade.io/tenant",
        "palisade.io/app",
    ] {
        let err = key.parse::<LabelKey>().expect_err(key);
        assert!(err.to_string().contains("reserved"), "{key}: {err}");
    }
}
