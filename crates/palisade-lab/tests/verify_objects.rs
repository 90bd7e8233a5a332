//! `lab verify`'s third verdict (the rendered objects) and `--manifests`.

use palisade_core::policy::Endpoint;
use palisade_core::{Policy, PolicyOptions, PortProto};
use palisade_kube::eval::RenderedPolicy;
use palisade_kube::{RenderOptions, fixtures};
use palisade_lab::serve::ProbeFailure;
use palisade_lab::verify::{self, Probe, ProbeKind};
use serde_json::Value;
use std::net::SocketAddr;

fn ep(s: &str) -> Endpoint {
    let (t, d) = s.split_once('/').unwrap_or_default();
    match (t.parse(), d.parse()) {
        (Ok(t), Ok(d)) => Endpoint::deployment(&t, &d),
        _ => panic!("bad endpoint {s}"),
    }
}

fn probe(from: Endpoint, to: Endpoint, port: u16, policy: &Policy) -> Probe {
    let pp = PortProto::tcp(port.try_into().unwrap_or(palisade_core::Port::HTTP));
    let v = policy.allowed(&from, &to, pp);
    Probe {
        from,
        to: to.into(),
        from_pod: None,
        to_pod: None,
        port,
        kind: ProbeKind::Direct,
        netns: "ns".into(),
        addr: SocketAddr::from(([0u16; 8], port)),
        proxy: None,
        host: None,
        expected: v.allowed,
        reason: v.reason.to_string(),
        expect_caller: None,
        expect_pod_of: None,
        objects: None,
    }
}

/// The seed's rendered objects agree with the model on api-backend →
/// database, and a gateway that shares Cilium's `ingress` identity with
/// the central one is a disagreement naming the deciding object.
#[test]
fn probes_carry_the_objects_verdict_and_fail_when_it_disagrees() {
    let snap = fixtures::seed();
    let policy = Policy::compile_with(&snap, &PolicyOptions::default());
    let Ok(objects) = RenderedPolicy::new(&snap, &RenderOptions::default()) else {
        panic!("the seed renders")
    };
    let gw = Endpoint::Gateway {
        scope: palisade_core::GatewayScope::PerTenant {
            tenant: "big-corp".parse().unwrap_or_else(|_| panic!("tenant")),
        },
    };
    let mut probes = vec![
        probe(
            ep("acme-corp/api-backend"),
            ep("acme-corp/database"),
            5432,
            &policy,
        ),
        probe(gw, ep("acme-corp/api-backend"), 8080, &policy),
    ];
    assert!(verify::attach_objects(&mut probes, &objects).is_ok());
    let connected: Result<(u16, String), ProbeFailure> = Ok((200, "{}".into()));
    let blocked = Err(ProbeFailure::Connect("timed out".into()));
    let agree = verify::judge(&probes[0], &connected);
    assert!(agree.ok, "{agree:?}");
    assert_eq!(agree.objects.as_ref().map(|o| o.allowed), Some(true));
    let split = verify::judge(&probes[1], &blocked);
    assert!(
        !split.ok,
        "model denies, packets blocked, objects allow: {split:?}"
    );
    assert!(
        split.detail.contains("the rendered objects allow it")
            && split
                .detail
                .contains("tenant-acme-corp/deployment-api-backend"),
        "{split:?}"
    );
    let json = serde_json::to_value(&split).unwrap_or_default();
    assert_eq!(
        json["objects"]["allowed"],
        Value::Bool(true),
        "-o json keeps the third verdict"
    );
}

/// `--manifests` on seed 000's hand-written policies: the gateway reaches
/// web-frontend, api-backend the database, nothing else reaches either —
/// not even their own replicas (Cilium: a selected endpoint accepts only
/// what a rule allows) — and unselected workloads stay open.
#[test]
fn manifest_matrix_of_the_seed_policies() {
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: t}\nspec:\n  template:\n    metadata: {labels: {deployment: web-frontend}}\n    spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}\n\
---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: t}\nspec:\n  template:\n    metadata: {labels: {deployment: api-backend}}\n    spec: {containers: [{name: c, image: i, ports: [{containerPort: 8080}]}]}\n\
---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: db, namespace: t}\nspec:\n  template:\n    metadata: {labels: {deployment: database}}\n    spec: {containers: [{name: c, image: i, ports: [{containerPort: 5432}]}]}\n\
---\napiVersion: v1\nkind: Pod\nmetadata: {name: gw, namespace: t, labels: {role: gateway}}\nspec: {containers: [{name: c, image: i}]}\n\
---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow-gateway, namespace: t}\nspec:\n  endpointSelector: {matchLabels: {deployment: web-frontend}}\n  ingress: [{fromEndpoints: [{matchLabels: {role: gateway}}]}]\n\
---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow-api-to-db, namespace: t}\nspec:\n  endpointSelector: {matchLabels: {deployment: database}}\n  ingress: [{fromEndpoints: [{matchLabels: {deployment: api-backend}}]}]\n";
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .collect();
    let r = verify::manifest_matrix(&objects);
    assert!(r.unsupported.is_empty());
    assert_eq!(r.workloads, ["t/web", "t/api", "t/db", "t/gw"]);
    let allowed: Vec<String> = r
        .cells
        .iter()
        .filter(|c| c.verdict.allowed && ["t/web", "t/db"].contains(&c.to.as_str()))
        .map(|c| format!("{} -> {} {}", c.from, c.to, c.port))
        .collect();
    assert_eq!(allowed, ["t/gw -> t/web 80", "t/api -> t/db 5432"]);
    let open = r
        .cells
        .iter()
        .filter(|c| c.to == "t/api" || c.to == "world");
    assert!(open.clone().all(|c| c.verdict.allowed), "unselected: open");
    assert_eq!(open.count(), 5 + 4);
}
