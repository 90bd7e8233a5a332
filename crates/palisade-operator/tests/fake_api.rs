//! The in-memory API server behaves like Kubernetes where the operator's
//! correctness depends on it; each test cites the documented behaviour it
//! checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use palisade_operator::testing::FakeApi;
use serde_json::{Value, json};

fn config_map(ns: &str, name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns}, "data": data}))
    .unwrap()
}

fn code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("not an API error: {other}"),
    }
}

/// The first event of a watch from `rv`.
async fn first_event<K>(api: &Api<K>, rv: &str) -> WatchEvent<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut events = api
        .watch(&WatchParams::default(), rv)
        .await
        .unwrap()
        .boxed();
    events.next().await.unwrap().unwrap()
}

// https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#namespacelifecycle:
// "enforces that a Namespace that is undergoing termination cannot have
// new objects created in it, and ensures that requests in a non-existent
// Namespace are rejected"; deleting a namespace makes it Terminating and
// deletes everything in it
// (https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/).
#[tokio::test]
async fn namespaces_must_exist_and_a_terminating_one_takes_nothing_new() {
    let api = FakeApi::new();
    let client = api.client();
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "tenant-ghost");
    let err = missing
        .create(
            &PostParams::default(),
            &config_map("tenant-ghost", "a", json!({})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(err).0, 404);
    // Server-side apply creates too, and is refused the same way.
    let err = missing
        .patch(
            "a",
            &PatchParams::apply("t"),
            &Patch::Apply(config_map("tenant-ghost", "a", json!({}))),
        )
        .await
        .unwrap_err();
    assert_eq!(code(err).0, 404);
    // A cluster's own namespaces exist.
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &config_map("default", "a", json!({})),
        )
        .await
        .unwrap();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "tenant-acme"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "tenant-acme");
    let mut held = config_map("tenant-acme", "held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.create(
        &PostParams::default(),
        &config_map("tenant-acme", "plain", json!({})),
    )
    .await
    .unwrap();

    namespaces
        .delete("tenant-acme", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = namespaces.get("tenant-acme").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert_eq!(code(cms.get("plain").await.unwrap_err()).0, 404);
    assert!(
        cms.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    let (status, message) = code(
        cms.create(
            &PostParams::default(),
            &config_map("tenant-acme", "new", json!({})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert!(
        message.contains("because it is being terminated"),
        "{message}"
    );

    // The last finalizer goes: the object, then the empty namespace, go.
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(code(cms.get("held").await.unwrap_err()).0, 404);
    assert_eq!(
        code(namespaces.get("tenant-acme").await.unwrap_err()).0,
        404
    );
}

// https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management:
// "If you remove a field from a manifest and apply that manifest,
// Server-Side Apply checks if there are any other field managers that also
// own the field. If the field is not owned by any other field managers, it
// is either deleted from the live object or reset to its default value";
// and #conflicts: changing a field another manager owns is a conflict
// unless forced, which takes the ownership.
#[tokio::test]
async fn apply_removes_fields_its_manager_no_longer_sets() {
    let api = FakeApi::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let apply = |manager: &'static str, force: bool, data: Value, labels: Value| {
        let cms = cms.clone();
        async move {
            let mut params = PatchParams::apply(manager);
            params.force = force;
            let mut cm = config_map("default", "c", data);
            cm.metadata.labels = serde_json::from_value(labels).unwrap();
            cms.patch("c", &params, &Patch::Apply(cm)).await
        }
    };
    let data = |cm: ConfigMap| cm.data.unwrap_or_default();

    apply(
        "op",
        true,
        json!({"x": "1", "y": "2"}),
        json!({"keep": "a", "drop": "b"}),
    )
    .await
    .unwrap();
    let cm = apply("op", true, json!({"x": "1"}), json!({"keep": "a"}))
        .await
        .unwrap();
    assert_eq!(data(cm.clone()).len(), 1, "y was removed");
    assert_eq!(
        cm.metadata.labels.unwrap().keys().collect::<Vec<_>>(),
        ["keep"],
        "the dropped label was removed"
    );

    // Another manager sharing a field keeps it alive.
    apply("user", false, json!({"x": "1", "z": "3"}), json!({}))
        .await
        .unwrap();
    let cm = apply("op", true, json!({}), json!({})).await.unwrap();
    assert_eq!(data(cm)["x"], "1", "x is still owned by user");

    // Changing another manager's field: a conflict, unless forced.
    let (status, message) = code(
        apply("op", false, json!({"z": "4"}), json!({}))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 409);
    assert!(message.contains("\"user\""), "{message}");
    let cm = apply("op", true, json!({"z": "4"}), json!({}))
        .await
        .unwrap();
    assert_eq!(data(cm)["z"], "4");
    // The forced apply took z: user omitting z no longer removes it ...
    apply("user", false, json!({"x": "1"}), json!({}))
        .await
        .unwrap();
    // ... and op omitting it does.
    let cm = apply("op", true, json!({}), json!({})).await.unwrap();
    assert!(!data(cm).contains_key("z"));
}

async fn tcp_client(api: &FakeApi) -> (Client, tokio::task::JoinHandle<()>) {
    let (addr, server) = api.serve_tcp().await.unwrap();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (Client::try_from(config).unwrap(), server)
}

fn name_of(e: &WatchEvent<ConfigMap>) -> String {
    match e {
        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
            o.metadata.name.clone().unwrap()
        }
        other => format!("{other:?}"),
    }
}

fn kind_of(e: &WatchEvent<ConfigMap>) -> &'static str {
    match e {
        WatchEvent::Added(_) => "ADDED",
        WatchEvent::Modified(_) => "MODIFIED",
        WatchEvent::Deleted(_) => "DELETED",
        WatchEvent::Bookmark(_) => "BOOKMARK",
        WatchEvent::Error(_) => "ERROR",
    }
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes:
// a watch from a resourceVersion receives every change after it; without
// one it starts with synthetic ADDED events; "When the requested watch
// operations fail because the historical version of that resource is not
// available, clients must handle the case by recognizing the status code
// 410 Gone, clearing their local cache, performing a new get or list
// operation, and starting the watch from the resourceVersion that was
// returned."
#[tokio::test]
async fn watches_resume_from_a_resource_version_and_a_compacted_one_is_gone() {
    let api = FakeApi::new();
    let (client, server) = tcp_client(&api).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms
        .create(
            &PostParams::default(),
            &config_map("default", "a", json!({})),
        )
        .await
        .unwrap();
    let rv = first.metadata.resource_version.unwrap();
    for name in ["b", "c"] {
        cms.create(
            &PostParams::default(),
            &config_map("default", name, json!({})),
        )
        .await
        .unwrap();
    }
    cms.delete("a", &DeleteParams::default()).await.unwrap();

    let events: Vec<WatchEvent<ConfigMap>> = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .take(3)
        .try_collect()
        .await
        .unwrap();
    let seen: Vec<String> = events
        .iter()
        .map(|e| format!("{} {}", kind_of(e), name_of(e)))
        .collect();
    assert_eq!(seen, ["ADDED b", "ADDED c", "DELETED a"]);

    // From "0": the current state as ADDED events.
    let events: Vec<WatchEvent<ConfigMap>> = cms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .take(2)
        .try_collect()
        .await
        .unwrap();
    let mut names: Vec<String> = events.iter().map(name_of).collect();
    names.sort();
    assert_eq!(names, ["b", "c"]);

    // Compacted: the old resourceVersion is gone.
    api.set_watch_history(1);
    let first = first_event(&cms, &rv).await;
    match first {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    server.abort();
}

fn deployment(image: &str, replicas: i32) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}}))
    .unwrap()
}

// Kubernetes API reference, DeploymentStatus
// (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/#DeploymentStatus):
// "observedGeneration: The generation observed by the deployment
// controller", "updatedReplicas: Total number of non-terminated pods
// targeted by this deployment that have the desired template spec". The
// controller writes them after the user's change, as a change of its own.
// Without a Deployment controller (the default here) nothing writes them.
#[tokio::test]
async fn deployments_roll_out_in_a_change_of_their_own_when_asked() {
    use k8s_openapi::api::apps::v1::Deployment;
    for roll_out in [false, true] {
        let api = FakeApi::new();
        if roll_out {
            api.roll_out_deployments();
        }
        let deployments: Api<Deployment> = Api::namespaced(api.client(), "default");
        let apply = PatchParams::apply("t");
        let created = deployments
            .patch("web", &apply, &Patch::Apply(deployment("nginx:1", 2)))
            .await
            .unwrap();
        assert!(
            created.status.is_none(),
            "the user's own write has no status"
        );
        let status = |d: &Deployment| {
            d.status.as_ref().map(|s| {
                (
                    s.observed_generation,
                    s.updated_replicas,
                    s.ready_replicas,
                    s.available_replicas,
                )
            })
        };
        let live = deployments.get("web").await.unwrap();
        if !roll_out {
            assert_eq!(status(&live), None);
            continue;
        }
        assert_eq!(status(&live), Some((Some(1), Some(2), Some(2), Some(2))));
        let rv = |d: &Deployment| d.metadata.resource_version.clone().unwrap();
        assert_ne!(
            rv(&live),
            rv(&created),
            "the rollout is a change of its own"
        );
        deployments
            .patch("web", &apply, &Patch::Apply(deployment("nginx:2", 3)))
            .await
            .unwrap();
        let live = deployments.get("web").await.unwrap();
        assert_eq!(live.metadata.generation, Some(2));
        assert_eq!(status(&live), Some((Some(2), Some(3), Some(3), Some(3))));
    }
}

// https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/delete-options/:
// `preconditions` "must be fulfilled before a deletion is carried out"; a
// uid that is not the object's is a 409 Conflict ("Precondition failed:
// UID in precondition: ..., UID in object meta: ...", k8s.io/apiserver
// `pkg/storage/etcd3/store.go` `checkPreconditions`), which is what lets a
// prune refuse to delete an object re-created under a recorded name.
#[tokio::test]
async fn a_delete_with_another_objects_uid_is_a_conflict() {
    let api = FakeApi::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let made = cms
        .create(
            &PostParams::default(),
            &config_map("default", "a", json!({})),
        )
        .await
        .unwrap();
    let with_uid = |uid: &str| DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let (status, message) = code(cms.delete("a", &with_uid("not-its-uid")).await.unwrap_err());
    assert_eq!(status, 409);
    assert!(message.contains("Precondition failed"), "{message}");
    assert!(cms.get_opt("a").await.unwrap().is_some());
    let uid = made.metadata.uid.unwrap();
    cms.delete("a", &with_uid(&uid)).await.unwrap();
    assert!(cms.get_opt("a").await.unwrap().is_none());
}

// The API server keeps one watch cache per resource (kubernetes/apiserver
// pkg/storage/cacher; kube-apiserver's --watch-cache-sizes sizes it per
// resource), so how far back a watch can resume depends on the changes of
// its own resource only: a quiet kind stays resumable while another kind
// churns, and the churning kind's old resourceVersions are gone (410).
#[tokio::test]
async fn a_quiet_kind_stays_resumable_while_another_churns() {
    use k8s_openapi::api::core::v1::Secret;
    let api = FakeApi::new();
    api.set_watch_history(2);
    let (client, server) = tcp_client(&api).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let quiet: Secret =
        serde_json::from_value(json!({"metadata": {"name": "quiet", "namespace": "default"}}))
            .unwrap();
    let rv = secrets
        .create(&PostParams::default(), &quiet)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..5 {
        let cm = config_map("default", &format!("c{i}"), json!({}));
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let first = first_event(&cms, &rv).await;
    assert!(
        matches!(&first, WatchEvent::Error(e) if e.code == 410),
        "{first:?}"
    );
    secrets
        .patch(
            "quiet",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    let first = first_event(&secrets, &rv).await;
    match first {
        WatchEvent::Modified(s) => assert_eq!(s.metadata.name.as_deref(), Some("quiet")),
        other => panic!("expected the Secret's change, got {other:?}"),
    }
    server.abort();
}
