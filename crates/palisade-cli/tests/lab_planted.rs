//! Translation faults planted in the rendered objects are caught by the
//! packets: the lab compiles its nftables from the objects it is given, so
//! a fault edited into them changes what the packets do, and `lab verify`
//! names the probe where they part from the policy model. (Eval-level
//! planted faults are in palisade-kube's tests/planted.rs; these run real
//! namespaces, nftables and workloads.) Needs Linux and root; otherwise
//! each test prints `SKIPPED: <why>`, and fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_core::policy::{Policy, PolicyOptions};
use palisade_core::{Port, Snapshot};
use palisade_kube::eval::RenderedPolicy;
use palisade_lab::apply::Lab;
use palisade_lab::verify::{self, Outcome, Report};
use palisade_lab::{Runtime, rendered};
use serde_json::Value;
use std::time::Duration;

fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    let why = if !cfg!(target_os = "linux") {
        Some("the lab needs Linux".to_owned())
    } else if !root {
        Some("the lab needs root (network namespaces, nftables)".to_owned())
    } else {
        palisade_lab::apply::check_host()
            .err()
            .map(|e| e.to_string())
    };
    match why {
        None => true,
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "CI=true but the lab cannot run: {why}");
            false
        }
    }
}

/// The seeds' tenants, deployments and gateways of all three kinds (their
/// shared `ingress` identity is told apart by the Gateway API layer);
/// acme-corp's database also serves metrics on 9187, which no rule opens.
fn snapshot() -> Snapshot {
    let mut s = palisade_kube::fixtures::seed();
    for d in &mut s.deployments {
        d.replicas = 1.try_into().unwrap();
        if d.tenant.as_str() == "acme-corp" && d.name.as_str() == "database" {
            d.ports.push(Port::try_from(9187).unwrap());
        }
    }
    s
}

/// Runs a lab of `snap` from `objects`, verifies it three ways and takes
/// it down.
fn verify_lab(snap: &Snapshot, objects: &[Value]) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab {
        dir: dir.path().join("lab"),
        exe: env!("CARGO_BIN_EXE_palisade").into(),
    };
    let state = lab.up(snap, objects, Some(Runtime::Plain), &|_| {});
    let state = state.unwrap_or_else(|e| {
        let _ = lab.down(&|_| {});
        panic!("lab up: {e}")
    });
    let policy = Policy::compile_with(snap, &PolicyOptions::default());
    let mut probes = verify::expectations(&state, &policy).unwrap();
    let rendered = RenderedPolicy::from_objects(snap, &rendered::render_options(), objects);
    verify::attach_objects(&mut probes, &rendered).unwrap();
    let report = verify::run(&lab, &probes, Duration::from_millis(1500), 16, &|_| {});
    lab.down(&|_| {}).unwrap();
    report.unwrap()
}

fn policy_mut<'a>(objects: &'a mut [Value], ns: &str, name: &str) -> &'a mut Value {
    objects
        .iter_mut()
        .find(|o| {
            o["kind"] == "CiliumNetworkPolicy"
                && o["metadata"]["namespace"] == ns
                && o["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no policy {ns}/{name}"))
}

fn bad(report: &Report) -> Vec<&Outcome> {
    report.mismatches().collect()
}

/// The only disagreements are `from -> to` on `port`, observed as `observed`
/// and with the objects' verdict naming `object`.
#[track_caller]
fn caught(report: &Report, from: &str, to: &str, port: u16, observed: bool, object: &str) {
    let bad = bad(report);
    assert!(!bad.is_empty(), "the planted fault went unnoticed");
    for o in &bad {
        assert_eq!(
            (o.from.as_str(), o.to.as_str(), o.port),
            (from, to, port),
            "{o:?}"
        );
        assert_eq!(
            o.observed, observed,
            "the packets follow the objects: {o:?}"
        );
        assert_ne!(o.expected, observed, "{o:?}");
        let v = o.objects.as_ref().unwrap();
        assert_eq!(v.allowed, observed, "{o:?}");
        assert!(
            format!("{} {}", v.egress, v.ingress).contains(object),
            "the verdict names {object}: {o:?}"
        );
    }
}

#[test]
fn the_unplanted_seed_agrees_three_ways() {
    if !can_run() {
        return;
    }
    let s = snapshot();
    let report = verify_lab(&s, &rendered::render(&s).unwrap());
    assert!(bad(&report).is_empty(), "{:#?}", bad(&report));
    // Every probe the objects can judge carries their verdict.
    let judged = report.probes.iter().filter(|o| o.objects.is_some()).count();
    assert!(
        judged * 10 >= report.probes.len() * 9,
        "{judged} of {}",
        report.probes.len()
    );
}

/// The database's policy selects another deployment's pods (api-backend's):
/// the database keeps only the tenant's default deny, so the allowed
/// api-backend → database:5432 is dropped.
#[test]
fn a_policy_selecting_another_deployments_pods_is_caught() {
    if !can_run() {
        return;
    }
    let s = snapshot();
    let mut objects = rendered::render(&s).unwrap();
    let p = policy_mut(&mut objects, "tenant-acme-corp", "deployment-database");
    p["spec"]["endpointSelector"]["matchLabels"]["palisade.io/deployment"] = "api-backend".into();
    let report = verify_lab(&s, &objects);
    let bad = bad(&report);
    assert!(
        bad.iter().any(|o| o.from == "acme-corp/api-backend"
            && o.to == "acme-corp/database"
            && o.port == 5432
            && o.expected
            && !o.observed
            && o.detail.contains("tenant-acme-corp/default-deny")),
        "{bad:#?}"
    );
}

/// big-corp leaves for the world directly; without the metadata deny in
/// its default-deny policy, its pods reach cloud metadata.
#[test]
fn a_missing_metadata_deny_for_a_world_egress_tenant_is_caught() {
    if !can_run() {
        return;
    }
    let s = snapshot();
    let mut objects = rendered::render(&s).unwrap();
    let p = policy_mut(&mut objects, "tenant-big-corp", "default-deny");
    let deny = p["spec"]["egressDeny"].as_array_mut().unwrap();
    deny.retain(|r| r.get("toCIDR").is_none());
    let report = verify_lab(&s, &objects);
    caught(
        &report,
        "big-corp/database",
        "cloud-metadata",
        80,
        true,
        "tenant-big-corp/deployment-database",
    );
}

/// The allow rule api-backend → database:5432 rendered without its port,
/// on both sides: the database's metrics port opens to api-backend.
#[test]
fn an_allow_rule_rendered_without_its_port_is_caught() {
    if !can_run() {
        return;
    }
    let s = snapshot();
    let mut objects = rendered::render(&s).unwrap();
    let strip = |p: &mut Value, section: &str, peer: &str, dep: &str| {
        for rule in p["spec"][section].as_array_mut().unwrap() {
            if rule[peer][0]["matchLabels"]["palisade.io/deployment"] == dep
                && rule.get("toPorts").is_some()
            {
                rule.as_object_mut().unwrap().remove("toPorts");
            }
        }
    };
    let api = policy_mut(&mut objects, "tenant-acme-corp", "deployment-api-backend");
    strip(api, "egress", "toEndpoints", "database");
    let db = policy_mut(&mut objects, "tenant-acme-corp", "deployment-database");
    strip(db, "ingress", "fromEndpoints", "api-backend");
    let report = verify_lab(&s, &objects);
    caught(
        &report,
        "acme-corp/api-backend",
        "acme-corp/database",
        9187,
        true,
        "deployment-api-backend spec.egress[1]",
    );
}
