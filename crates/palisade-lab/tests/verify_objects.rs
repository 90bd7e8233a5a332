//! `lab verify`'s third verdict (the rendered objects) and `--manifests`.

use palisade_core::policy::Endpoint;
use palisade_core::{Policy, PolicyOptions, PortProto};
use palisade_kube::eval::RenderedPolicy;
use palisade_kube::{RenderOptions, fixtures};
use palisade_lab::serve::ProbeFailure;
use palisade_lab::verify::{self, Probe, ProbeKind};
use serde_json::{Value, json};
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
/// database, and on big-corp's gateway → acme-corp's api-backend: Cilium's
/// shared `ingress` identity lets it through at L3/L4, but no HTTPRoute
/// attached to big-corp's Gateway sends there, and the gateway's stand-in
/// answers such a probe with 404 (not reachable at L7).
#[test]
fn probes_carry_the_objects_verdict_including_the_routes() {
    let snap = fixtures::seed();
    let policy = Policy::compile_with(&snap, &PolicyOptions::default());
    let Ok(objects) = RenderedPolicy::new(&snap, &RenderOptions::default()) else {
        panic!("the seed renders")
    };
    let mut probes = vec![
        probe(
            ep("acme-corp/api-backend"),
            ep("acme-corp/database"),
            5432,
            &policy,
        ),
        gateway_probe(
            big_corp_gateway(),
            ep("acme-corp/api-backend"),
            8080,
            &policy,
        ),
    ];
    assert!(verify::attach_objects(&mut probes, &objects).is_ok());
    let connected: Result<(u16, String), ProbeFailure> = Ok((200, "{}".into()));
    let agree = verify::judge(&probes[0], &connected);
    assert!(agree.ok, "{agree:?}");
    assert_eq!(agree.objects.as_ref().map(|o| o.allowed), Some(true));
    let no_route = verify::judge(&probes[1], &not_routed());
    assert!(no_route.ok && !no_route.observed, "{no_route:?}");
    let v = no_route
        .objects
        .as_ref()
        .unwrap_or_else(|| panic!("judged"));
    assert!(!v.allowed, "{v:?}");
    assert!(
        v.egress
            .contains("not reachable at L7: HTTPRoute tenant-acme-corp/")
            && v.egress
                .contains("has no parentRef to Gateway palisade-gateways/tenant-big-corp"),
        "{v:?}"
    );
    assert!(
        v.ingress.starts_with("allow by CiliumNetworkPolicy"),
        "{v:?}"
    );
}

/// Plants a copy of the central gateway's api-backend route in big-corp's
/// namespace, attached to big-corp's gateway and sending to acme-corp's
/// Service, with the ReferenceGrant in acme-corp's namespace that allows it.
fn plant_granted_cross_tenant_route(objects: &mut Vec<Value>) {
    let mut route = objects
        .iter()
        .find(|o| o["kind"] == "HTTPRoute" && o["metadata"]["name"] == "central-api-backend")
        .cloned()
        .unwrap_or_else(|| panic!("the seed routes api-backend"));
    route["metadata"]["namespace"] = json!("tenant-big-corp");
    route["metadata"]["name"] = json!("stolen");
    route["spec"]["parentRefs"] =
        json!([{"name": "tenant-big-corp", "namespace": "palisade-gateways"}]);
    route["spec"]["hostnames"] = json!(["api.big-corp.apps.example.com"]);
    route["spec"]["rules"][0]["backendRefs"][0]["namespace"] = json!("tenant-acme-corp");
    objects.push(route);
    objects.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "let-big-corp-in", "namespace": "tenant-acme-corp"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                           "namespace": "tenant-big-corp"}],
                 "to": [{"group": "", "kind": "Service"}]},
    }));
}

/// A route in big-corp's namespace sending to acme-corp's Service, with a
/// ReferenceGrant in acme-corp's namespace: the objects let big-corp's
/// gateway reach acme-corp's api-backend, the model does not, and the
/// probe fails naming the HTTPRoute and the grant, whatever the packets.
#[test]
fn a_granted_cross_tenant_route_is_a_disagreement_naming_the_route() {
    let snap = fixtures::seed();
    let policy = Policy::compile_with(&snap, &PolicyOptions::default());
    let mut objects = palisade_lab::rendered::render(&snap).unwrap_or_default();
    plant_granted_cross_tenant_route(&mut objects);
    let rendered =
        RenderedPolicy::from_objects(&snap, &palisade_lab::rendered::render_options(), &objects);
    let mut probes = vec![gateway_probe(
        big_corp_gateway(),
        ep("acme-corp/api-backend"),
        8080,
        &policy,
    )];
    assert!(verify::attach_objects(&mut probes, &rendered).is_ok());
    let split = verify::judge(&probes[0], &not_routed());
    assert!(!split.ok, "model denies, objects allow: {split:?}");
    assert!(
        split.detail.contains("the rendered objects allow it")
            && split
                .detail
                .contains("routed by HTTPRoute tenant-big-corp/stolen")
            && split
                .detail
                .contains("ReferenceGrant tenant-acme-corp/let-big-corp-in"),
        "{split:?}"
    );
    let json = serde_json::to_value(&split).unwrap_or_default();
    assert_eq!(
        json["objects"]["allowed"],
        Value::Bool(true),
        "-o json keeps the third verdict"
    );
}

/// How a gateway's stand-in answers a probe it relays: 404 is no route
/// (not reachable at L7), 503 no connection (blocked at L3/L4), 200 the
/// pod's answer.
#[test]
fn relayed_gateway_probes_read_the_stand_ins_answer() {
    let snap = fixtures::seed();
    let policy = Policy::compile_with(&snap, &PolicyOptions::default());
    let central = Endpoint::Gateway {
        scope: palisade_core::GatewayScope::Central,
    };
    let p = gateway_probe(central, ep("acme-corp/api-backend"), 8080, &policy);
    assert!(p.expected);
    let o = verify::judge(&p, &not_routed());
    assert!(!o.observed && !o.ok, "{o:?}");
    assert!(o.detail.starts_with("not reachable at L7"), "{o:?}");
    let blocked = Ok((
        503,
        r#"{"error":"[fd00::1]:8080: no connection: timed out"}"#.into(),
    ));
    let o = verify::judge(&p, &blocked);
    assert!(!o.observed && o.detail.starts_with("blocked ("), "{o:?}");
    let pod = r#"{"role":"pod","tenant":"acme-corp","deployment":"api-backend","pod":"api-backend-0","caller":"fd70:1ab:0:1::1"}"#;
    let o = verify::judge(&p, &Ok((200, pod.into())));
    assert!(o.observed && o.ok, "{o:?}");
}

fn big_corp_gateway() -> Endpoint {
    Endpoint::Gateway {
        scope: palisade_core::GatewayScope::PerTenant {
            tenant: "big-corp".parse().unwrap_or_else(|_| panic!("tenant")),
        },
    }
}

/// A gateway's probe as `expectations` plans it: relayed by the stand-in.
fn gateway_probe(from: Endpoint, to: Endpoint, port: u16, policy: &Policy) -> Probe {
    let (t, d) = to
        .to_string()
        .split_once('/')
        .map(|(t, d)| (t.to_owned(), d.to_owned()))
        .unwrap_or_default();
    Probe {
        proxy: Some(SocketAddr::from(([0xfd70, 0x1ab, 0, 1, 0, 0, 0, 1], 80))),
        expect_pod_of: Some((t, d)),
        ..probe(from, to, port, policy)
    }
}

/// The stand-in's answer when no route of its gateway sends there.
fn not_routed() -> Result<(u16, String), ProbeFailure> {
    Ok((
        404,
        r#"{"error":"not reachable at L7: no route of this gateway sends to [fd00::1]:8080"}"#
            .into(),
    ))
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
    let r = palisade_lab::manifests::plan(&objects, "t-")
        .unwrap()
        .report;
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

/// The `palisade` binary the lab runs its stand-ins with: `PALISADE_BIN`,
/// else target/{debug,release}/palisade beside this test (CI builds it
/// first: scripts/test.sh).
fn palisade_bin() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("PALISADE_BIN") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?.parent()?;
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("palisade"))
        .find(|p| p.exists())
}

/// Whether the lab can run here; prints `SKIPPED: <why>` when not, and
/// fails under `CI=true`.
fn lab_bin() -> Option<std::path::PathBuf> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    let bin = palisade_bin();
    let why = if !cfg!(target_os = "linux") {
        Some("the lab needs Linux".to_owned())
    } else if !root {
        Some("the lab needs root (network namespaces, nftables)".to_owned())
    } else if bin.is_none() {
        Some("no palisade binary (cargo build -p palisade-cli, or set PALISADE_BIN)".to_owned())
    } else {
        palisade_lab::apply::check_host()
            .err()
            .map(|e| e.to_string())
    };
    match why {
        None => bin,
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "CI=true but the lab cannot run: {why}");
            None
        }
    }
}

/// The seed with every gateway scope (central, big-corp's, acme-corp's
/// web-frontend's), one replica per deployment.
fn every_gateway_scope() -> palisade_core::Snapshot {
    let mut s = fixtures::seed();
    for d in &mut s.deployments {
        d.replicas = 1.try_into().unwrap_or_else(|_| panic!("replicas"));
    }
    s
}

/// Runs a lab of `snap` from `objects`, verifies it three ways, takes it
/// down.
fn verify_lab(
    exe: std::path::PathBuf,
    snap: &palisade_core::Snapshot,
    objects: &[Value],
) -> verify::Report {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let lab = palisade_lab::Lab {
        dir: dir.path().join("lab"),
        exe,
    };
    let state = lab.up(snap, objects, Some(palisade_lab::Runtime::Plain), &|_| {});
    let state = state.unwrap_or_else(|e| {
        let _ = lab.down(&|_| {});
        panic!("lab up: {e}")
    });
    let policy = Policy::compile_with(snap, &PolicyOptions::default());
    let probes = verify::expectations(&state, &policy);
    let rendered =
        RenderedPolicy::from_objects(snap, &palisade_lab::rendered::render_options(), objects);
    let report = probes.and_then(|mut probes| {
        verify::attach_objects(&mut probes, &rendered)?;
        verify::run(
            &lab,
            &probes,
            std::time::Duration::from_millis(1500),
            16,
            &|_| {},
        )
    });
    let down = lab.down(&|_| {});
    let report = report.unwrap_or_else(|e| panic!("verify: {e}"));
    down.unwrap_or_else(|e| panic!("lab down: {e}"));
    report
}

/// On packets: with per-tenant and per-deployment gateways of Cilium's
/// class the seed agrees three ways. Every gateway's stand-in carries the
/// one `ingress` identity, so the nftables let big-corp's gateway open
/// acme-corp's ports; its stand-in, serving only the rendered HTTPRoutes
/// attached to its Gateway, has no route there and answers 404, as the
/// objects' L7 layer says.
#[test]
fn per_tenant_and_per_deployment_gateways_agree_three_ways_on_packets() {
    let Some(exe) = lab_bin() else { return };
    let s = every_gateway_scope();
    let objects = palisade_lab::rendered::render(&s).unwrap_or_else(|e| panic!("{e}"));
    let report = verify_lab(exe, &s, &objects);
    let bad: Vec<_> = report.mismatches().collect();
    assert!(bad.is_empty(), "{bad:#?}");
    let cross = report
        .probes
        .iter()
        .find(|o| o.from == "gateway/big-corp" && o.to == "acme-corp/api-backend")
        .unwrap_or_else(|| panic!("big-corp's gateway is probed towards acme-corp"));
    assert!(
        !cross.observed && cross.detail.starts_with("not reachable at L7"),
        "{cross:?}"
    );
    let own = report
        .probes
        .iter()
        .filter(|o| o.from == "gateway/big-corp" && o.to == "big-corp/database");
    assert!(own.clone().count() >= 2, "direct and via the gateway");
    assert!(
        own.clone().all(|o| o.observed && o.ok),
        "{:?}",
        own.collect::<Vec<_>>()
    );
}

/// On packets: a rendered route in big-corp's namespace sending to
/// acme-corp's Service, granted by a ReferenceGrant, makes big-corp's
/// gateway stand-in forward to acme-corp's pods: the packets follow the
/// objects, and verify fails naming the route and the grant.
#[test]
fn a_granted_cross_tenant_route_is_caught_on_packets() {
    let Some(exe) = lab_bin() else { return };
    let s = every_gateway_scope();
    let mut objects = palisade_lab::rendered::render(&s).unwrap_or_else(|e| panic!("{e}"));
    plant_granted_cross_tenant_route(&mut objects);
    let report = verify_lab(exe, &s, &objects);
    let bad: Vec<_> = report.mismatches().collect();
    assert!(!bad.is_empty(), "the planted route went unnoticed");
    for o in &bad {
        assert_eq!(
            (o.from.as_str(), o.to.as_str(), o.port),
            ("gateway/big-corp", "acme-corp/api-backend", 8080),
            "{o:?}"
        );
        assert!(
            o.observed && !o.expected,
            "the packets follow the objects: {o:?}"
        );
        assert!(
            o.detail
                .contains("routed by HTTPRoute tenant-big-corp/stolen")
                && o.detail
                    .contains("ReferenceGrant tenant-acme-corp/let-big-corp-in"),
            "{o:?}"
        );
    }
}

/// On packets: the egress-gateway SNAT is the rendered
/// `CiliumEgressGatewayPolicy`'s. With its namespace selector naming a
/// namespace that does not exist, big-corp's pods leave un-SNATed and the
/// internet echo reports their own address: verify fails on exactly
/// big-corp's direct internet probe, naming the egress IP it expected.
#[test]
fn an_egress_gateway_policy_missing_its_tenant_is_caught_on_packets() {
    let Some(exe) = lab_bin() else { return };
    let s = every_gateway_scope();
    let mut objects = palisade_lab::rendered::render(&s).unwrap_or_else(|e| panic!("{e}"));
    let policy = objects
        .iter_mut()
        .find(|o| o["kind"] == "CiliumEgressGatewayPolicy")
        .unwrap_or_else(|| panic!("big-corp leaves through the egress gateway"));
    policy["spec"]["selectors"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] =
        json!("tenant-nobody");
    let report = verify_lab(exe, &s, &objects);
    let bad: Vec<_> = report.mismatches().collect();
    assert!(!bad.is_empty(), "the missing SNAT went unnoticed");
    for o in &bad {
        assert_eq!(
            (o.from.as_str(), o.to.as_str()),
            ("big-corp/database", "internet"),
            "{o:?}"
        );
        assert!(
            o.detail.contains("instead of the tenant's egress IP"),
            "{o:?}"
        );
    }
}
