//! Reconcile against the in-memory API server (`palisade_operator::testing`,
//! reached through tower-test's mock service): exact request sequences,
//! idempotence, finalizers, claim races, garbage collection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{ctx, reconcile_tenant, reconcile_workload, tenant, workload};

use k8s_openapi::api::apps::v1::Deployment as K8sDeployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use palisade_core::Pool;
use palisade_operator::Config;
use palisade_operator::claim::claim_name;
use palisade_operator::crd::{SubnetClaim, SubnetClaimSpec, Tenant, TenantDeployment};
use palisade_operator::desired::{TENANT_FINALIZER, WORKLOAD_FINALIZER};
use palisade_operator::metrics::Metrics;
use palisade_operator::reconcile::{self, Ctx};
use palisade_operator::testing::FakeApi;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const CRD_GV: &str = "palisade.io/v1alpha1";

use palisade_operator::testing::example_pool as pool;

fn add_tenant(api: &FakeApi, name: &str) {
    api.insert(
        CRD_GV,
        "tenants",
        json!({"apiVersion": CRD_GV, "kind": "Tenant", "metadata": {"name": name}, "spec": {}}),
    );
}

fn add_workload(api: &FakeApi, tenant: &str, name: &str, spec: serde_json::Value) {
    if api.get(CRD_GV, "tenants", None, tenant).is_none() {
        add_tenant(api, tenant);
    }
    api.insert(
        CRD_GV,
        "tenantdeployments",
        json!({"apiVersion": CRD_GV, "kind": "TenantDeployment",
               "metadata": {"name": name, "namespace": format!("tenant-{tenant}")},
               "spec": spec}),
    );
}

fn claims(api: &FakeApi) -> Vec<SubnetClaim> {
    api.all(CRD_GV, "subnetclaims")
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

#[tokio::test]
async fn workload_reconcile_claims_the_lowest_subnet_with_this_exact_request_sequence() {
    let api = FakeApi::new();
    add_workload(
        &api,
        "acme",
        "web",
        json!({"image": "nginx:alpine", "replicas": 3, "ports": [80]}),
    );
    let c = ctx(&api);
    let uid = workload(&c, "acme", "web").await.metadata.uid.unwrap();
    api.clear_log();

    reconcile_workload(&c, "acme", "web").await;
    let first = pool().subnet(0);
    // Reads come from the caches; the writes: the finalizer (kube-runtime's
    // helper), the claim, the status.
    assert_eq!(
        api.writes(),
        [
            "PATCH /apis/palisade.io/v1alpha1/namespaces/tenant-acme/tenantdeployments/web?".to_owned(),
            "POST /apis/palisade.io/v1alpha1/subnetclaims?".to_owned(),
            "PATCH /apis/palisade.io/v1alpha1/namespaces/tenant-acme/tenantdeployments/web/status?&force=true&fieldManager=palisade-operator".to_owned(),
        ],
    );
    let w = workload(&c, "acme", "web").await;
    assert_eq!(
        w.metadata.finalizers.as_deref(),
        Some(&[WORKLOAD_FINALIZER.to_owned()][..])
    );
    let status = w.status.unwrap();
    assert_eq!(status.subnet.as_deref(), Some(first.to_string().as_str()));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "PodsNotReady")
    );
    let all = claims(&api);
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].metadata.name.as_deref(),
        Some(claim_name(first).as_str())
    );
    assert_eq!(all[0].spec.workload_uid, uid);
    assert_eq!(all[0].spec.subnet, first.to_string());

    // Unchanged: the second reconcile only reads.
    api.clear_log();
    reconcile_workload(&c, "acme", "web").await;
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert_eq!(claims(&api).len(), 1);
}

#[tokio::test]
async fn a_claim_conflict_moves_on_to_the_next_candidate() {
    let api = FakeApi::new();
    add_workload(&api, "acme", "web", json!({"image": "nginx:alpine"}));
    let c = ctx(&api);
    // Another replica creates the claim for subnet 0 between our list and
    // our create.
    let taken = pool().subnet(0);
    api.steal_on_create(
        &claim_name(taken),
        json!({"apiVersion": CRD_GV, "kind": "SubnetClaim",
               "metadata": {"name": claim_name(taken)},
               "spec": {"subnet": taken.to_string(), "tenant": "other", "namespace": "tenant-other",
                        "deployment": "x", "workloadUid": "someone-else"}}),
    );
    api.clear_log();
    reconcile_workload(&c, "acme", "web").await;
    let posts: Vec<String> = api
        .log()
        .into_iter()
        .filter(|l| l.starts_with("POST "))
        .collect();
    assert_eq!(posts.len(), 2, "{:?}", api.log());
    let w = workload(&c, "acme", "web").await;
    assert_eq!(w.status.unwrap().subnet, Some(pool().subnet(1).to_string()));
    assert_eq!(c.metrics.claim_conflicts.get(), 1);
    let mine: Vec<_> = claims(&api)
        .into_iter()
        .filter(|c| c.spec.deployment == "web")
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        mine[0].metadata.name.as_deref(),
        Some(claim_name(pool().subnet(1)).as_str())
    );
}

#[tokio::test]
async fn deleting_a_workload_releases_its_claim_and_removes_the_finalizer() {
    let api = FakeApi::new();
    add_workload(&api, "acme", "web", json!({"image": "nginx:alpine"}));
    add_workload(&api, "acme", "api", json!({"image": "nginx:alpine"}));
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "web").await;
    reconcile_workload(&c, "acme", "api").await;
    assert_eq!(claims(&api).len(), 2);

    Api::<TenantDeployment>::namespaced(c.client.clone(), "tenant-acme")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    // The finalizer holds it.
    assert!(
        workload(&c, "acme", "web")
            .await
            .metadata
            .deletion_timestamp
            .is_some()
    );
    api.clear_log();
    let action = reconcile_workload(&c, "acme", "web").await;
    assert_eq!(action, Action::await_change());
    let writes = api.writes();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert_eq!(
        writes[0],
        format!(
            "DELETE /apis/palisade.io/v1alpha1/subnetclaims/{}?",
            claim_name(pool().subnet(0))
        )
    );
    assert!(writes[1].starts_with(
        "PATCH /apis/palisade.io/v1alpha1/namespaces/tenant-acme/tenantdeployments/web?"
    ));
    assert!(
        api.get(CRD_GV, "tenantdeployments", Some("tenant-acme"), "web")
            .is_none()
    );
    let left: Vec<String> = claims(&api)
        .into_iter()
        .map(|c| c.spec.deployment)
        .collect();
    assert_eq!(left, ["api"]);

    // The released subnet is the lowest free one: the next workload gets it.
    add_workload(&api, "acme", "db", json!({"image": "postgres:16"}));
    reconcile_workload(&c, "acme", "db").await;
    let db = workload(&c, "acme", "db").await;
    assert_eq!(
        db.status.unwrap().subnet,
        Some(pool().subnet(0).to_string())
    );
}

#[tokio::test]
async fn an_invalid_workload_gets_a_condition_and_no_claim() {
    let api = FakeApi::new();
    add_workload(&api, "acme", "web", json!({"image": "NOT AN IMAGE"}));
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "web").await;
    assert!(claims(&api).is_empty());
    let s = workload(&c, "acme", "web").await.status.unwrap();
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("invalid image reference"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn a_workload_without_its_tenant_waits_without_a_claim() {
    let api = FakeApi::new();
    api.insert(
        CRD_GV,
        "tenantdeployments",
        json!({"apiVersion": CRD_GV, "kind": "TenantDeployment",
               "metadata": {"name": "web", "namespace": "tenant-ghost"},
               "spec": {"image": "nginx:alpine"}}),
    );
    let c = ctx(&api);
    let action = reconcile_workload(&c, "ghost", "web").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    assert!(claims(&api).is_empty());
    let s = workload(&c, "ghost", "web").await.status.unwrap();
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "TenantMissing");
    // Once the tenant exists, the next pass claims.
    add_tenant(&api, "ghost");
    reconcile_workload(&c, "ghost", "web").await;
    assert_eq!(claims(&api).len(), 1);
}

async fn seeded() -> (FakeApi, Ctx) {
    let api = FakeApi::new();
    add_tenant(&api, "acme");
    add_workload(
        &api,
        "acme",
        "web",
        json!({"image": "nginx:alpine", "replicas": 3, "ports": [80],
        "env": [{"name": "MODE", "value": "prod"}]}),
    );
    add_workload(
        &api,
        "acme",
        "db",
        json!({"image": "postgres:16", "ports": [5432],
        "allowFrom": [{"deployment": "web", "port": 5432}]}),
    );
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "web").await;
    reconcile_workload(&c, "acme", "db").await;
    (api, c)
}

#[tokio::test]
async fn tenant_reconcile_applies_the_rendered_tenant_then_a_second_reconcile_writes_nothing() {
    let (api, c) = seeded().await;
    api.clear_log();
    reconcile_tenant(&c, "acme").await;
    // Reads come from the caches (here, without watches, one LIST per
    // kind); the writes: the finalizer, one server-side apply per object,
    // namespace first, then the status.
    let writes = api.writes();
    assert_eq!(writes[0], "PATCH /apis/palisade.io/v1alpha1/tenants/acme?");
    let applies = &writes[1..writes.len() - 1];
    assert!(
        applies.iter().all(|l| l.starts_with("PATCH ")
            && l.ends_with("?&force=true&fieldManager=palisade-operator")),
        "{applies:?}"
    );
    assert_eq!(
        applies[0],
        "PATCH /api/v1/namespaces/tenant-acme?&force=true&fieldManager=palisade-operator"
    );
    for want in [
        "PATCH /apis/apps/v1/namespaces/tenant-acme/deployments/web?",
        "PATCH /apis/apps/v1/namespaces/tenant-acme/deployments/db?",
        "PATCH /apis/cilium.io/v2alpha1/ciliumpodippools/acme.web?",
        "PATCH /apis/cilium.io/v2/namespaces/tenant-acme/ciliumnetworkpolicies/deployment-db?",
    ] {
        assert!(
            applies.iter().any(|l| l.starts_with(want)),
            "{want} not in {applies:?}"
        );
    }
    assert_eq!(
        writes[writes.len() - 1],
        "PATCH /apis/palisade.io/v1alpha1/tenants/acme/status?&force=true&fieldManager=palisade-operator"
    );
    // The only reads: one LIST per cached kind (a tenant's kinds by the
    // operator's label), and the tenant again after its finalizer.
    let reads: Vec<String> = api
        .log()
        .into_iter()
        .filter(|l| l.starts_with("GET "))
        .collect();
    assert!(
        reads
            .iter()
            .all(|l| l.contains("limit=500") || l == "GET /apis/palisade.io/v1alpha1/tenants/acme"),
        "{reads:?}"
    );
    assert!(reads.contains(&"GET /apis/apps/v1/deployments?&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dpalisade-operator&limit=500".to_owned()), "{reads:?}");

    // What was applied: the operator's label, the tenant as owner, the
    // user's env on the container, the claimed subnet in the pool.
    let dep = api
        .get("apps/v1", "deployments", Some("tenant-acme"), "web")
        .unwrap();
    assert_eq!(
        dep["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "palisade-operator"
    );
    assert_eq!(dep["metadata"]["ownerReferences"][0]["kind"], "Tenant");
    assert_eq!(dep["spec"]["replicas"], 3);
    let env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "MODE" && e["value"] == "prod")
    );
    assert!(env.iter().any(|e| e["name"] == "HTTP_PROXY"));
    let web_subnet = workload(&c, "acme", "web")
        .await
        .status
        .unwrap()
        .subnet
        .unwrap();
    let ippool = api
        .get("cilium.io/v2alpha1", "ciliumpodippools", None, "acme.web")
        .unwrap();
    assert_eq!(ippool["spec"]["ipv6"]["cidrs"][0], web_subnet);
    // The allow rule web -> db:5432 reached db's policy.
    let cnp = api
        .get(
            "cilium.io/v2",
            "ciliumnetworkpolicies",
            Some("tenant-acme"),
            "deployment-db",
        )
        .unwrap();
    assert!(
        cnp["spec"]["ingress"].to_string().contains("5432"),
        "{}",
        cnp["spec"]
    );

    let t = tenant(&c, "acme").await;
    assert_eq!(
        t.metadata.finalizers.as_deref(),
        Some(&[TENANT_FINALIZER.to_owned()][..])
    );
    let s = t.status.unwrap();
    assert_eq!(s.deployment_count, 2);
    assert_eq!(s.namespace.as_deref(), Some("tenant-acme"));
    assert_eq!(s.conditions[0].status, "True", "{:?}", s.conditions);

    // Unchanged: reads only.
    api.clear_log();
    reconcile_tenant(&c, "acme").await;
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn a_changed_workload_is_reapplied_and_a_removed_one_is_pruned() {
    let (api, c) = seeded().await;
    reconcile_tenant(&c, "acme").await;

    // Scale web: only its Deployment changes.
    let mut w = api
        .get(CRD_GV, "tenantdeployments", Some("tenant-acme"), "web")
        .unwrap();
    w["spec"]["replicas"] = json!(5);
    api.insert(CRD_GV, "tenantdeployments", w);
    api.clear_log();
    reconcile_tenant(&c, "acme").await;
    let writes = api.writes();
    assert_eq!(
        writes,
        [
            "PATCH /apis/apps/v1/namespaces/tenant-acme/deployments/web?&force=true&fieldManager=palisade-operator"
        ],
    );

    // Delete db: its objects go, web's policy loses its egress to db.
    Api::<TenantDeployment>::namespaced(c.client.clone(), "tenant-acme")
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    reconcile_workload(&c, "acme", "db").await;
    api.clear_log();
    reconcile_tenant(&c, "acme").await;
    let deletes: BTreeSet<String> = api
        .writes()
        .into_iter()
        .filter(|l| l.starts_with("DELETE "))
        .map(|l| l.split('?').next().unwrap().to_owned())
        .collect();
    let want: BTreeSet<String> = [
        "DELETE /apis/apps/v1/namespaces/tenant-acme/deployments/db",
        "DELETE /api/v1/namespaces/tenant-acme/services/db",
        "DELETE /apis/cilium.io/v2/namespaces/tenant-acme/ciliumnetworkpolicies/deployment-db",
        "DELETE /apis/cilium.io/v2alpha1/ciliumpodippools/acme.db",
    ]
    .map(String::from)
    .into();
    assert_eq!(deletes, want);
    assert!(api.writes().iter().any(|l| l.starts_with(
        "PATCH /apis/cilium.io/v2/namespaces/tenant-acme/ciliumnetworkpolicies/deployment-web?"
    )));
    assert!(
        api.get("apps/v1", "deployments", Some("tenant-acme"), "db")
            .is_none()
    );
    assert_eq!(tenant(&c, "acme").await.status.unwrap().deployment_count, 1);
}

#[tokio::test]
async fn deleting_a_tenant_deletes_its_workloads_first_then_its_objects() {
    let (api, c) = seeded().await;
    reconcile_tenant(&c, "acme").await;
    Api::<Tenant>::all(c.client.clone())
        .delete("acme", &DeleteParams::default())
        .await
        .unwrap();

    // First pass: workloads are asked to go and their objects are deleted
    // (their finalizers wait for pools and pods to be gone); the tenant's
    // own objects (its namespace) wait.
    let action = reconcile_tenant(&c, "acme").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    let t = tenant(&c, "acme").await;
    assert_eq!(t.status.unwrap().conditions[0].reason, "Terminating");
    assert!(
        api.get("apps/v1", "deployments", Some("tenant-acme"), "web")
            .is_none()
    );
    assert!(api.get("v1", "namespaces", None, "tenant-acme").is_some());
    for name in ["web", "db"] {
        assert!(
            workload(&c, "acme", name)
                .await
                .metadata
                .deletion_timestamp
                .is_some()
        );
        reconcile_workload(&c, "acme", name).await;
    }
    assert!(claims(&api).is_empty());

    // Second pass: everything owned goes, then the finalizer.
    api.clear_log();
    let action = reconcile_tenant(&c, "acme").await;
    assert_eq!(action, Action::await_change());
    assert!(api.all("apps/v1", "deployments").is_empty());
    assert!(api.all("v1", "namespaces").is_empty());
    assert!(api.all("cilium.io/v2alpha1", "ciliumpodippools").is_empty());
    assert!(api.get(CRD_GV, "tenants", None, "acme").is_none());
    let last = api.writes().pop().unwrap();
    assert!(
        last.starts_with("PATCH /apis/palisade.io/v1alpha1/tenants/acme?"),
        "{last}"
    );
}

#[tokio::test]
async fn missing_crds_of_optional_kinds_are_skipped() {
    let (api, c) = seeded().await;
    api.without_kind("httproutes");
    api.without_kind("gateways");
    reconcile_tenant(&c, "acme").await;
    assert_eq!(tenant(&c, "acme").await.status.unwrap().deployment_count, 2);
}

#[tokio::test]
async fn garbage_collection_deletes_old_orphaned_claims_only() {
    let api = FakeApi::new();
    add_workload(&api, "acme", "web", json!({"image": "nginx:alpine"}));
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "web").await;
    let orphan = |i: u128, created: &str| {
        let s = pool().subnet(i);
        json!({"apiVersion": CRD_GV, "kind": "SubnetClaim",
               "metadata": {"name": claim_name(s), "creationTimestamp": created},
               "spec": {"subnet": s.to_string(), "tenant": "acme", "namespace": "tenant-acme",
                        "deployment": "gone", "workloadUid": format!("gone-{i}")}})
    };
    api.insert(CRD_GV, "subnetclaims", orphan(5, "2020-01-01T00:00:00Z"));
    // Young: its workload may just not be listed yet.
    api.insert(
        CRD_GV,
        "subnetclaims",
        orphan(6, &k8s_openapi::jiff::Timestamp::now().to_string()),
    );
    let gone = reconcile::collect_garbage(&c).await.unwrap();
    assert_eq!(gone, [claim_name(pool().subnet(5))]);
    let left: BTreeSet<String> = claims(&api).into_iter().map(|c| c.spec.subnet).collect();
    assert_eq!(
        left,
        [pool().subnet(0), pool().subnet(6)]
            .map(|s| s.to_string())
            .into()
    );
    assert_eq!(c.metrics.claims_collected.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_allocations_get_distinct_subnets() {
    let api = FakeApi::new();
    let metrics = Arc::new(Metrics::default());
    let n = 64;
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = api.client();
        let metrics = metrics.clone();
        tasks.push(tokio::spawn(async move {
            let spec = SubnetClaimSpec {
                subnet: String::new(),
                tenant: "acme".into(),
                namespace: "tenant-acme".into(),
                deployment: format!("w{i}"),
                workload_uid: format!("uid-w{i}"),
                released_at: None,
            };
            reconcile::allocate(&client, &pool(), &spec, &metrics)
                .await
                .unwrap()
                .unwrap()
        }));
    }
    let mut got = BTreeSet::new();
    for t in tasks {
        assert!(
            got.insert(t.await.unwrap()),
            "a subnet was handed out twice"
        );
    }
    assert_eq!(got.len(), n);
    let stored = claims(&api);
    assert_eq!(stored.len(), n);
    // Every claim names its own subnet, and the pool is filled densely.
    for c in &stored {
        assert_eq!(
            c.metadata.name.as_deref(),
            Some(claim_name(c.spec.subnet.parse().unwrap()).as_str())
        );
    }
    let want: BTreeSet<_> = (0..n as u128).map(|i| pool().subnet(i)).collect();
    assert_eq!(got, want);
    eprintln!(
        "{} conflicts resolved among {n} concurrent allocations",
        metrics.claim_conflicts.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reconciles_in_one_process_take_turns_and_never_conflict() {
    let api = FakeApi::new();
    let n = 32;
    for i in 0..n {
        add_workload(
            &api,
            "acme",
            &format!("w{i}"),
            json!({"image": "nginx:alpine"}),
        );
    }
    let c = Arc::new(ctx(&api));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { reconcile_workload(&c, "acme", &format!("w{i}")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let subnets: BTreeSet<String> = claims(&api).into_iter().map(|c| c.spec.subnet).collect();
    assert_eq!(subnets.len(), n);
    assert_eq!(c.metrics.claim_conflicts.get(), 0);
    assert_eq!(c.metrics.claims_created.get(), n as u64);
}

#[tokio::test]
async fn edits_behind_the_operators_back_are_repaired_at_the_next_reconcile_and_only_they() {
    let (api, c) = seeded().await;
    reconcile_tenant(&c, "acme").await;
    // Nothing changed: nothing is written.
    api.clear_log();
    reconcile_tenant(&c, "acme").await;
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    // Someone scales the Deployment by hand; the hash annotation stays, but
    // the API server gives the object a new generation (metadata.generation
    // moves with every spec change), which no write of ours produced.
    Api::<K8sDeployment>::namespaced(c.client.clone(), "tenant-acme")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    api.clear_log();
    reconcile_tenant(&c, "acme").await;
    let dep = api
        .get("apps/v1", "deployments", Some("tenant-acme"), "web")
        .unwrap();
    assert_eq!(dep["spec"]["replicas"], 3);
    // That object only.
    let writes = api.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].starts_with("PATCH /apis/apps/v1/namespaces/tenant-acme/deployments/web?"));
}

#[tokio::test]
async fn with_a_quarantine_a_released_subnet_waits_before_reuse() {
    let api = FakeApi::new();
    add_workload(&api, "acme", "web", json!({"image": "nginx:alpine"}));
    let base = ctx(&api);
    let quarantine = Pool::new(pool().cidr(), pool().subnet_len(), Duration::from_secs(1)).unwrap();
    let c = Ctx::new(
        base.client.clone(),
        Config {
            pool: quarantine,
            gc_grace: Duration::from_secs(600),
            ..(*base.config).clone()
        },
    );
    reconcile_workload(&c, "acme", "web").await;
    Api::<TenantDeployment>::namespaced(c.client.clone(), "tenant-acme")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    api.clear_log();
    reconcile_workload(&c, "acme", "web").await;
    // Released, not deleted: one merge patch on the claim, then the finalizer.
    let writes = api.writes();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes[0].starts_with(&format!(
        "PATCH /apis/palisade.io/v1alpha1/subnetclaims/{}?",
        claim_name(pool().subnet(0))
    )));
    let held = claims(&api);
    assert_eq!(held.len(), 1);
    assert!(held[0].spec.released_at.is_some());

    // While quarantined, the next workload gets the next subnet.
    add_workload(&api, "acme", "api", json!({"image": "nginx:alpine"}));
    reconcile_workload(&c, "acme", "api").await;
    let api_subnet = workload(&c, "acme", "api").await.status.unwrap().subnet;
    assert_eq!(api_subnet, Some(pool().subnet(1).to_string()));
    assert!(reconcile::collect_garbage(&c).await.unwrap().is_empty());

    // After the quarantine, garbage collection frees it for the one after.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        reconcile::collect_garbage(&c).await.unwrap(),
        [claim_name(pool().subnet(0))]
    );
    add_workload(&api, "acme", "db", json!({"image": "postgres:16"}));
    reconcile_workload(&c, "acme", "db").await;
    let db_subnet = workload(&c, "acme", "db").await.status.unwrap().subnet;
    assert_eq!(db_subnet, Some(pool().subnet(0).to_string()));
}

#[tokio::test]
async fn claims_and_invalid_specs_are_reported_as_events() {
    use kube::runtime::events::{Recorder, Reporter};
    let api = FakeApi::new();
    // A workload lives in an existing namespace, where its events go.
    api.insert(
        "v1",
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-acme"}}),
    );
    add_workload(&api, "acme", "web", json!({"image": "nginx:alpine"}));
    let base = ctx(&api);
    let c = Ctx {
        recorder: Some(Recorder::new(
            base.client.clone(),
            Reporter {
                controller: "palisade-operator".into(),
                instance: Some("test".into()),
            },
        )),
        ..base
    };
    reconcile_workload(&c, "acme", "web").await;
    let mut t = api.get(CRD_GV, "tenants", None, "acme").unwrap();
    t["spec"]["quota"] = json!({"cpu": "lots", "memory": "8Gi", "pods": 20});
    api.insert(CRD_GV, "tenants", t);
    reconcile_tenant(&c, "acme").await;

    let events = api.all("events.k8s.io/v1", "events");
    let find = |reason: &str| {
        events
            .iter()
            .find(|e| e["reason"] == reason)
            .unwrap_or_else(|| panic!("no {reason} event in {events:?}"))
            .clone()
    };
    let claimed = find("SubnetClaimed");
    assert_eq!(claimed["type"], "Normal");
    assert_eq!(claimed["regarding"]["name"], "web");
    assert!(
        claimed["note"]
            .as_str()
            .unwrap()
            .contains(&pool().subnet(0).to_string())
    );
    let invalid = find("InvalidSpec");
    assert_eq!(invalid["type"], "Warning");
    assert_eq!(invalid["regarding"]["kind"], "Tenant");
    assert!(
        invalid["note"].as_str().unwrap().contains("cpu"),
        "{invalid}"
    );
}
