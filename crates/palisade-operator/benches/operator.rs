//! Operator benchmark: the costs that grow with the cluster.
//!
//! - choosing a candidate subnet from N existing claims (parse every claim
//!   name, then the core rule);
//! - allocating through the in-memory API server, sequentially and with 64
//!   concurrent claimants fighting over the same candidates;
//! - planning a tenant with W workloads (render + hash) and deciding that
//!   nothing needs writing.
//!
//! `cargo bench -p palisade-operator --bench operator`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_kube::RenderOptions;
use palisade_operator::claim::{ClaimLedger, claim_name};
use palisade_operator::crd::{
    SubnetClaim, SubnetClaimSpec, Tenant, TenantDeployment, TenantDeploymentSpec, TenantSpec,
};
use palisade_operator::desired::{self, Live};
use palisade_operator::metrics::Metrics;
use palisade_operator::reconcile;
use palisade_operator::testing::FakeApi;
use std::sync::Arc;
use std::time::Instant;

use palisade_operator::testing::example_pool as pool;

fn spec(i: usize) -> SubnetClaimSpec {
    SubnetClaimSpec {
        subnet: String::new(),
        tenant: "acme".into(),
        namespace: "tenant-acme".into(),
        deployment: format!("w{i}"),
        workload_uid: format!("uid-{i}"),
        released_at: None,
    }
}

fn candidate(n: u128) {
    let p = pool();
    // Every other subnet claimed: the first hole is at index 1.
    let names: Vec<String> = (0..n).map(|i| claim_name(p.subnet(i * 2))).collect();
    let start = Instant::now();
    let mut ledger = ClaimLedger::from_names(&p, names.iter().map(String::as_str));
    let first = ledger.next_candidate(&p);
    let took = start.elapsed();
    assert_eq!(first, Some(1));
    println!(
        "candidate from {n:>7} claims: {:>8.2} ms ({:.0} ns per claim)",
        took.as_secs_f64() * 1e3,
        took.as_nanos() as f64 / n as f64
    );
}

async fn allocate_sequential(n: usize) {
    let api = FakeApi::new();
    let client = api.client();
    let metrics = Metrics::default();
    let start = Instant::now();
    for i in 0..n {
        reconcile::allocate(&client, &pool(), &spec(i), &metrics)
            .await
            .unwrap()
            .unwrap();
    }
    let took = start.elapsed();
    println!(
        "sequential allocations: {n} in {:.2} s ({:.2} ms each, list + create through the mock API)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e3 / n as f64
    );
}

async fn allocate_concurrent(n: usize, one_process: bool) {
    let api = FakeApi::new();
    let metrics = Arc::new(Metrics::default());
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = api.client();
            let metrics = metrics.clone();
            let lock = lock.clone();
            tokio::spawn(async move {
                // One process's reconciles share `Ctx::allocation`; separate
                // replicas do not.
                let _turn = if one_process {
                    Some(lock.lock().await)
                } else {
                    None
                };
                reconcile::allocate(&client, &pool(), &spec(i), &metrics)
                    .await
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    let mut got = std::collections::BTreeSet::new();
    for t in tasks {
        assert!(got.insert(t.await.unwrap()));
    }
    let took = start.elapsed();
    println!(
        "concurrent allocations: {n} claimants ({}) in {:.2} s, {} conflicts (409) resolved, all distinct",
        if one_process {
            "one process, taking turns"
        } else {
            "separate claimants"
        },
        took.as_secs_f64(),
        metrics.claim_conflicts.get()
    );
}

fn plan(workloads: usize) {
    let p = pool();
    let mut tenant = Tenant::new("acme", TenantSpec::default());
    tenant.metadata.uid = Some("t".into());
    let mut ws = Vec::new();
    let mut claims = Vec::new();
    for i in 0..workloads {
        let mut w = TenantDeployment::new(
            &format!("w{i}"),
            TenantDeploymentSpec {
                image: "nginx:alpine".into(),
                replicas: 2,
                ports: vec![80],
                ..TenantDeploymentSpec::default()
            },
        );
        w.metadata.namespace = Some("tenant-acme".into());
        w.metadata.uid = Some(format!("uid-{i}"));
        let s = p.subnet(i as u128);
        claims.push(SubnetClaim::new(
            &claim_name(s),
            SubnetClaimSpec {
                subnet: s.to_string(),
                ..spec(i)
            },
        ));
        ws.push(w);
    }
    let options = RenderOptions::default();
    let start = Instant::now();
    let planned = desired::plan_tenant(&p, &options, &tenant, &ws, &claims).unwrap();
    let plan_took = start.elapsed();
    let live: Vec<Live> = planned
        .objects
        .iter()
        .map(|o| Live {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            hash: o.body["metadata"]["annotations"][desired::HASH_ANNOTATION]
                .as_str()
                .map(str::to_owned),
            deleting: false,
            workload: None,
        })
        .collect();
    let start = Instant::now();
    assert!(desired::to_apply(&planned.objects, &live).is_empty());
    assert!(desired::to_prune(&planned.objects, &live).is_empty());
    let diff_took = start.elapsed();
    println!(
        "plan a tenant of {workloads:>4} workloads: {} objects in {:>7.2} ms; unchanged-diff {:.2} ms",
        planned.objects.len(),
        plan_took.as_secs_f64() * 1e3,
        diff_took.as_secs_f64() * 1e3
    );
}

fn main() {
    for n in [1_000, 10_000, 100_000] {
        candidate(n);
    }
    for w in [10, 100, 1_000] {
        plan(w);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(allocate_sequential(1_000));
    rt.block_on(allocate_concurrent(64, false));
    rt.block_on(allocate_concurrent(256, false));
    rt.block_on(allocate_concurrent(256, true));
}
