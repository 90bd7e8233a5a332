//! The faults of issue 14, each as a user would meet it, against the
//! in-memory API server (which behaves as Kubernetes does where they
//! matter: finalizers hold deletion, owner references collect dependents,
//! a Service's clusterIP is immutable, webhooks and RBAC can refuse).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{ctx, reconcile_tenant, reconcile_workload, workload};

use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use palisade_core::Pool;
use palisade_operator::Config;
use palisade_operator::claim::claim_name;
use palisade_operator::crd::{Condition, SubnetClaim, Tenant, TenantDeployment};
use palisade_operator::desired::WORKLOAD_FINALIZER;
use palisade_operator::reconcile::{self, Ctx};
use palisade_operator::testing::{FakeApi, example_config, example_pool as pool};
use serde_json::json;
use std::time::Duration;

const CRD_GV: &str = "palisade.io/v1alpha1";

fn claims(api: &FakeApi) -> Vec<SubnetClaim> {
    api.all(CRD_GV, "subnetclaims")
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

fn condition(conditions: &[Condition], type_: &str) -> Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

fn pool_cidr(api: &FakeApi, name: &str) -> Option<String> {
    let p = api
        .all("cilium.io/v2alpha1", "ciliumpodippools")
        .into_iter()
        .chain(api.all("cilium.io/v2", "ciliumpodippools"))
        .find(|p| p["metadata"]["name"] == name)?;
    let cidr = &p["spec"]["ipv6"]["cidrs"][0];
    Some(cidr.as_str().or(cidr["cidr"].as_str())?.to_owned())
}

/// web (ports 80) and db, both claimed, the tenant applied.
async fn running() -> (FakeApi, Ctx) {
    let api = FakeApi::new();
    api.add_workload(
        "acme",
        "web",
        json!({"image": "nginx:alpine", "replicas": 2, "ports": [80]}),
    );
    api.add_workload(
        "acme",
        "db",
        json!({"image": "postgres:16", "ports": [5432]}),
    );
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "web").await;
    reconcile_workload(&c, "acme", "db").await;
    reconcile_tenant(&c, "acme").await;
    assert!(
        api.get("apps/v1", "deployments", Some("tenant-acme"), "web")
            .is_some()
    );
    (api, c)
}

// Fault 1: deleting a SubnetClaim must not delete a running workload.
#[tokio::test]
async fn a_deleted_claim_keeps_the_workload_running_and_is_recreated_for_the_same_subnet() {
    let (api, c) = running().await;
    let web_net = pool().subnet(0);
    let uid = workload(&c, "acme", "web").await.metadata.uid.unwrap();
    api.delete(CRD_GV, "subnetclaims", None, &claim_name(web_net));

    // The tenant controller sees the claim go first (it watches claims).
    reconcile_tenant(&c, "acme").await;
    assert!(
        api.get("apps/v1", "deployments", Some("tenant-acme"), "web")
            .is_some(),
        "the running workload was pruned"
    );
    assert_eq!(
        pool_cidr(&api, "acme.web").as_deref(),
        Some(web_net.to_string().as_str())
    );

    // A new workload allocated before the repair does not get web's subnet.
    api.add_workload("acme", "api", json!({"image": "nginx:alpine"}));
    reconcile_workload(&c, "acme", "api").await;
    let api_net = workload(&c, "acme", "api").await.status.unwrap().subnet;
    assert_eq!(api_net, Some(pool().subnet(2).to_string()));

    // The workload controller re-creates the claim for the same subnet.
    reconcile_workload(&c, "acme", "web").await;
    let repaired = claims(&api)
        .into_iter()
        .find(|c| c.spec.workload_uid == uid)
        .expect("claim re-created");
    assert_eq!(
        repaired.metadata.name.as_deref(),
        Some(claim_name(web_net).as_str())
    );
    let s = workload(&c, "acme", "web").await.status.unwrap();
    assert_eq!(s.subnet, Some(web_net.to_string()));
    assert_eq!(condition(&s.conditions, "SubnetAllocated").status, "True");
}

// Fault 1: never renumber; if the subnet is taken, say so.
#[tokio::test]
async fn a_deleted_claim_whose_subnet_was_taken_blocks_the_workload_without_renumbering() {
    let (api, c) = running().await;
    let web_net = pool().subnet(0);
    api.delete(CRD_GV, "subnetclaims", None, &claim_name(web_net));
    api.insert(
        CRD_GV,
        "subnetclaims",
        json!({"apiVersion": CRD_GV, "kind": "SubnetClaim",
               "metadata": {"name": claim_name(web_net)},
               "spec": {"subnet": web_net.to_string(), "tenant": "other",
                        "namespace": "tenant-other", "deployment": "x", "workloadUid": "intruder"}}),
    );
    let action = reconcile_workload(&c, "acme", "web").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    let s = workload(&c, "acme", "web").await.status.unwrap();
    assert_eq!(s.subnet, Some(web_net.to_string()), "renumbered");
    let ready = condition(&s.conditions, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SubnetConflict")
    );
    assert!(
        ready.message.contains("tenant-other/x"),
        "{}",
        ready.message
    );
    // Only the intruder's claim for that subnet; web got no other one.
    assert_eq!(
        claims(&api)
            .iter()
            .filter(|c| c.spec.deployment == "web")
            .count(),
        0
    );
    reconcile_tenant(&c, "acme").await;
    assert!(
        api.get("apps/v1", "deployments", Some("tenant-acme"), "web")
            .is_some()
    );
}

// Fault 2: a subnet is released only after its pool and pods are gone.
#[tokio::test]
async fn a_deleted_workloads_subnet_is_released_only_after_its_pool_and_pods_are_gone() {
    let (api, c) = running().await;
    let web_net = pool().subnet(0);
    let pod_ip = format!("{}", web_net.network()).replace("::", "::a");
    api.add_pod("acme", "web", "web-abc", &pod_ip);
    Api::<TenantDeployment>::namespaced(c.client.clone(), "tenant-acme")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();

    // The workload controller runs before the tenant pruned the pool.
    let action = reconcile_workload(&c, "acme", "web").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    assert!(claims(&api).iter().any(|c| c.spec.deployment == "web"));
    assert_eq!(
        workload(&c, "acme", "web").await.metadata.finalizers,
        Some(vec![WORKLOAD_FINALIZER.to_owned()])
    );

    // The tenant prunes pool and Deployment; the pod is still terminating.
    reconcile_tenant(&c, "acme").await;
    assert_eq!(pool_cidr(&api, "acme.web"), None);
    reconcile_workload(&c, "acme", "web").await;
    assert!(
        claims(&api).iter().any(|c| c.spec.deployment == "web"),
        "released while a pod still has an address in the subnet"
    );
    // Meanwhile a new workload does not get the subnet.
    api.add_workload("acme", "next", json!({"image": "nginx:alpine"}));
    reconcile_workload(&c, "acme", "next").await;
    assert_eq!(
        workload(&c, "acme", "next").await.status.unwrap().subnet,
        Some(pool().subnet(2).to_string())
    );

    api.delete("v1", "pods", Some("tenant-acme"), "web-abc");
    assert_eq!(
        reconcile_workload(&c, "acme", "web").await,
        Action::await_change()
    );
    assert!(!claims(&api).iter().any(|c| c.spec.deployment == "web"));
    assert!(
        api.get(CRD_GV, "tenantdeployments", Some("tenant-acme"), "web")
            .is_none()
    );
}

// Fault 2: orphaned claims go through the quarantine too.
#[tokio::test]
async fn an_orphaned_claim_is_quarantined_not_deleted() {
    let api = FakeApi::new();
    let quarantine = Pool::new(
        pool().cidr(),
        pool().subnet_len(),
        Duration::from_secs(3600),
    )
    .unwrap();
    let c = Ctx::new(
        api.client(),
        Config {
            pool: quarantine,
            ..example_config()
        },
    );
    let s = pool().subnet(5);
    api.insert(
        CRD_GV,
        "subnetclaims",
        json!({"apiVersion": CRD_GV, "kind": "SubnetClaim",
               "metadata": {"name": claim_name(s), "creationTimestamp": "2020-01-01T00:00:00Z"},
               "spec": {"subnet": s.to_string(), "tenant": "acme", "namespace": "tenant-acme",
                        "deployment": "gone", "workloadUid": "gone-5"}}),
    );
    let acted = reconcile::collect_garbage(&c).await.unwrap();
    assert_eq!(acted, [claim_name(s)]);
    let held = claims(&api);
    assert_eq!(held.len(), 1, "deleted without quarantine");
    assert!(held[0].spec.released_at.is_some());
}

// Fault 4: pruning trusts owner references, not labels.
#[tokio::test]
async fn objects_that_only_carry_the_labels_are_never_pruned() {
    let (api, c) = running().await;
    let labels = json!({"app.kubernetes.io/managed-by": "palisade-operator",
                        "palisade.io/tenant": "acme", "palisade.io/deployment": "gone"});
    // Someone copied a namespace's and a pool's labels (kubectl get -o yaml
    // | edit | apply): no owner reference, or another owner's.
    api.insert(
        "v1",
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "copied", "labels": labels}}),
    );
    api.insert(
        "v1",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "precious", "namespace": "copied"}}),
    );
    api.insert(
        "apps/v1",
        "deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "theirs", "namespace": "tenant-acme", "labels": labels,
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Foo",
                              "name": "foo", "uid": "someone-else", "controller": true}]}}),
    );
    reconcile_tenant(&c, "acme").await;
    assert!(api.get("v1", "namespaces", None, "copied").is_some());
    assert!(
        api.get("v1", "configmaps", Some("copied"), "precious")
            .is_some()
    );
    assert!(
        api.get("apps/v1", "deployments", Some("tenant-acme"), "theirs")
            .is_some()
    );
}

// Fault 4: never prune on a failed LIST.
#[tokio::test]
async fn a_failed_list_stops_pruning_and_says_so() {
    let (api, c) = running().await;
    Api::<TenantDeployment>::namespaced(c.client.clone(), "tenant-acme")
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    api.fail_lists(
        "services",
        Some((403, "services is forbidden: User cannot list resource")),
    );
    reconcile_tenant(&c, "acme").await;
    assert!(
        api.get("apps/v1", "deployments", Some("tenant-acme"), "db")
            .is_some()
    );
    let t: Tenant =
        serde_json::from_value(api.get(CRD_GV, "tenants", None, "acme").unwrap()).unwrap();
    let stalled = condition(&t.status.unwrap().conditions, "Stalled");
    assert_eq!(stalled.status, "True");
    assert!(stalled.message.contains("forbidden"), "{}", stalled.message);
    // Once the list works again, the pass prunes.
    api.fail_lists("services", None);
    reconcile_tenant(&c, "acme").await;
    assert!(
        api.get("apps/v1", "deployments", Some("tenant-acme"), "db")
            .is_none()
    );
}

// Fault 3: one failing object does not stall the tenant silently.
#[tokio::test]
async fn one_refused_object_leaves_the_others_applied_and_is_reported() {
    let api = FakeApi::new();
    api.add_workload(
        "acme",
        "web",
        json!({"image": "nginx:alpine", "ports": [80]}),
    );
    api.add_workload(
        "acme",
        "db",
        json!({"image": "postgres:16", "ports": [5432]}),
    );
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "web").await;
    reconcile_workload(&c, "acme", "db").await;
    let denied = "admission webhook \"policy.example.com\" denied the request: no";
    // The namespace exists (the CLI creates it with the workload); its
    // update is refused. It sorts first: today's loop stops there.
    api.insert(
        "v1",
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-acme"}}),
    );
    api.reject("namespaces", "tenant-acme", 403, denied);
    let action = reconcile_tenant(&c, "acme").await;
    for name in ["web", "db"] {
        assert!(
            api.get("apps/v1", "deployments", Some("tenant-acme"), name)
                .is_some(),
            "{name} not applied"
        );
    }
    let t: Tenant =
        serde_json::from_value(api.get(CRD_GV, "tenants", None, "acme").unwrap()).unwrap();
    let conditions = t.status.unwrap().conditions;
    let applied = condition(&conditions, "Applied");
    assert_eq!(applied.status, "False");
    assert!(
        applied.message.contains("Namespace tenant-acme") && applied.message.contains(denied),
        "{}",
        applied.message
    );
    assert_eq!(condition(&conditions, "Stalled").status, "True");
    assert_eq!(condition(&conditions, "Ready").status, "False");
    // Retried on its own backoff (at most a second for the first failure).
    match action {
        a if a == Action::requeue(c.config.resync) => panic!("no retry scheduled"),
        _ => {}
    }
    // While backing off, the refused object is not hammered.
    api.clear_log();
    reconcile_tenant(&c, "acme").await;
    assert!(
        !api.writes()
            .iter()
            .any(|w| w.starts_with("PATCH /api/v1/namespaces/tenant-acme?")),
        "{:?}",
        api.writes()
    );
    // Accepted again: the next attempt after the backoff succeeds.
    api.accept("namespaces", "tenant-acme");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    reconcile_tenant(&c, "acme").await;
    let t: Tenant =
        serde_json::from_value(api.get(CRD_GV, "tenants", None, "acme").unwrap()).unwrap();
    let conditions = t.status.unwrap().conditions;
    assert_eq!(condition(&conditions, "Applied").status, "True");
    assert_eq!(condition(&conditions, "Ready").status, "True");
    assert!(api.get("v1", "namespaces", None, "tenant-acme").is_some());
}

// Fault 3: an immutable field change is a delete and re-create.
#[tokio::test]
async fn a_service_going_headless_is_recreated() {
    let (api, c) = running().await;
    let svc = api
        .get("v1", "services", Some("tenant-acme"), "web")
        .unwrap();
    assert_ne!(svc["spec"]["clusterIP"], "None");
    let mut w = api
        .get(CRD_GV, "tenantdeployments", Some("tenant-acme"), "web")
        .unwrap();
    w["spec"]["ports"] = json!([]);
    api.insert(CRD_GV, "tenantdeployments", w);
    reconcile_tenant(&c, "acme").await;
    let svc = api
        .get("v1", "services", Some("tenant-acme"), "web")
        .unwrap();
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let t: Tenant =
        serde_json::from_value(api.get(CRD_GV, "tenants", None, "acme").unwrap()).unwrap();
    assert_eq!(
        condition(&t.status.unwrap().conditions, "Applied").status,
        "True"
    );
}

// Fault 8: claims of another prefix length stop allocation.
#[tokio::test]
async fn a_pool_change_overlapping_live_claims_is_refused() {
    let api = FakeApi::new();
    // A /96 claim made under the old settings.
    let old = pool().subnet(0);
    api.insert(
        CRD_GV,
        "subnetclaims",
        json!({"apiVersion": CRD_GV, "kind": "SubnetClaim",
               "metadata": {"name": claim_name(old)},
               "spec": {"subnet": old.to_string(), "tenant": "acme", "namespace": "tenant-acme",
                        "deployment": "web", "workloadUid": "u1"}}),
    );
    api.add_workload("acme", "api", json!({"image": "nginx:alpine"}));
    let now_112 = Pool::new(pool().cidr(), "112".parse().unwrap(), Duration::ZERO).unwrap();
    let c = Ctx::new(
        api.client(),
        Config {
            pool: now_112,
            ..example_config()
        },
    );
    let w = workload(&c, "acme", "api").await;
    let err = reconcile::reconcile_workload(&w, &c).await.unwrap_err();
    assert!(err.to_string().contains(&old.to_string()), "{err}");
    assert_eq!(
        claims(&api).len(),
        1,
        "a /112 was allocated inside a live /96"
    );
}

/// Sets the Deployment's status as its controller would after rolling out
/// `replicas` pods of its current generation.
fn roll_out(api: &FakeApi, name: &str, replicas: i64) {
    let mut d = api
        .get("apps/v1", "deployments", Some("tenant-acme"), name)
        .unwrap();
    let g = d["metadata"]["generation"].clone();
    d["status"] = json!({"observedGeneration": g, "replicas": replicas, "updatedReplicas": replicas,
                         "readyReplicas": replicas, "availableReplicas": replicas});
    api.insert("apps/v1", "deployments", d);
}

// Fault 7: Ready and observedGeneration mean generation N is applied and
// rolled out (kstatus).
#[tokio::test]
async fn ready_means_this_generation_is_applied_and_rolled_out() {
    let (api, c) = running().await;
    roll_out(&api, "web", 2);
    reconcile_workload(&c, "acme", "web").await;
    let s = workload(&c, "acme", "web").await.status.unwrap();
    assert_eq!(condition(&s.conditions, "Ready").status, "True");
    assert_eq!(condition(&s.conditions, "Reconciling").status, "False");
    assert_eq!(s.observed_generation, Some(1));

    // A new image: generation 2. The old pods are all ready, but they are
    // generation 1's.
    Api::<TenantDeployment>::namespaced(c.client.clone(), "tenant-acme")
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"image": "nginx:1.27"}})),
        )
        .await
        .unwrap();
    reconcile_workload(&c, "acme", "web").await;
    let s = workload(&c, "acme", "web").await.status.unwrap();
    assert_eq!(s.observed_generation, Some(2));
    let ready = condition(&s.conditions, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "RolloutInProgress"),
        "{ready:?}"
    );
    assert_eq!(condition(&s.conditions, "Reconciling").status, "True");
    assert!(!ready.last_transition_time.is_empty());

    // Applied, but the Deployment controller has not rolled it out yet.
    reconcile_tenant(&c, "acme").await;
    reconcile_workload(&c, "acme", "web").await;
    let s = workload(&c, "acme", "web").await.status.unwrap();
    assert_eq!(condition(&s.conditions, "Ready").status, "False");

    roll_out(&api, "web", 2);
    reconcile_workload(&c, "acme", "web").await;
    let s = workload(&c, "acme", "web").await.status.unwrap();
    assert_eq!(condition(&s.conditions, "Ready").status, "True");
    assert_eq!(condition(&s.conditions, "Reconciling").status, "False");
    assert_eq!(condition(&s.conditions, "Stalled").status, "False");
}

// Fault 7: the conditions schema is metav1.Condition's, a map keyed by type.
#[test]
fn conditions_have_the_metav1_condition_schema() {
    for crd in palisade_operator::crd::crds().into_iter().take(2) {
        let v = serde_json::to_value(&crd).unwrap();
        let conditions = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
        let required = conditions["items"]["required"].as_array().unwrap();
        for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
            assert!(required.contains(&json!(field)), "{field} not required");
        }
    }
}

// Fault 6: two leaders may each claim a subnet for one new workload; the
// claim controller releases the extra claim, the workload keeps the lowest.
#[tokio::test]
async fn a_duplicate_claim_from_a_second_leader_is_released() {
    let api = FakeApi::new();
    api.add_workload("acme", "web", json!({"image": "nginx:alpine"}));
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "web").await;
    let w = workload(&c, "acme", "web").await;
    let uid = w.metadata.uid.clone().unwrap();
    // The other leader's claim for the same workload.
    let extra = pool().subnet(1);
    api.insert(
        CRD_GV,
        "subnetclaims",
        json!({"apiVersion": CRD_GV, "kind": "SubnetClaim",
               "metadata": {"name": claim_name(extra),
                            "labels": {"palisade.io/tenant": "acme", "palisade.io/deployment": "web",
                                       "palisade.io/workload-uid": uid}},
               "spec": {"subnet": extra.to_string(), "tenant": "acme", "namespace": "tenant-acme",
                        "deployment": "web", "workloadUid": uid}}),
    );
    assert_eq!(
        palisade_operator::reconcile::collect_garbage(&c)
            .await
            .unwrap(),
        [claim_name(extra)]
    );
    reconcile_workload(&c, "acme", "web").await;
    let left: Vec<String> = claims(&api).into_iter().map(|c| c.spec.subnet).collect();
    assert_eq!(left, [pool().subnet(0).to_string()]);
    assert_eq!(
        workload(&c, "acme", "web").await.status.unwrap().subnet,
        Some(pool().subnet(0).to_string())
    );
}

// Pruning finds a tenant's objects outside its namespace too: a dedicated
// Gateway lives in the shared gateway namespace.
#[tokio::test]
async fn a_dedicated_gateway_outside_the_tenant_namespace_is_pruned_when_dropped() {
    let api = FakeApi::new();
    api.add_workload(
        "acme",
        "web",
        json!({"image": "nginx:alpine", "ports": [80], "gateway": "dedicated"}),
    );
    // The shared gateway namespace is the platform's (`palisade render`);
    // the API server refuses objects in a namespace that does not exist.
    api.insert(
        "v1",
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "palisade-gateways"}}),
    );
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "web").await;
    reconcile_tenant(&c, "acme").await;
    let gw = || {
        api.all("gateway.networking.k8s.io/v1", "gateways")
            .into_iter()
            .map(|g| g["metadata"]["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(gw(), ["deployment-acme-web"]);
    let mut w = api
        .get(CRD_GV, "tenantdeployments", Some("tenant-acme"), "web")
        .unwrap();
    w["spec"]["gateway"] = json!("none");
    api.insert(CRD_GV, "tenantdeployments", w);
    reconcile_tenant(&c, "acme").await;
    assert!(gw().is_empty(), "{:?}", gw());
}
