//! The running controllers against the in-memory API server over TCP
//! (with watches): once everything is reconciled, the operator works from
//! its caches, so a cluster at rest costs no LIST, no GET and no write;
//! a change still reaches the objects through the watches, without a LIST.
//!
//! The request log of [`FakeApi`] is what the API server saw; a watch is
//! a GET with `watch=true` (Kubernetes API Concepts, "Efficient detection
//! of changes": a LIST then a WATCH from its resourceVersion).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_operator::crd::API_VERSION as GV;
use palisade_operator::reconcile::Ctx;
use palisade_operator::run::{Health, controllers};
use palisade_operator::testing::{FakeApi, example_config};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the API server has seen no write for `quiet`.
async fn settled(api: &FakeApi, quiet: Duration) {
    let start = Instant::now();
    loop {
        let before = api.writes().len();
        tokio::time::sleep(quiet).await;
        if api.writes().len() == before {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never settled: {:?}",
            api.writes().iter().rev().take(10).collect::<Vec<_>>()
        );
    }
}

fn is_watch(line: &str) -> bool {
    line.starts_with("GET ") && line.contains("watch=true")
}

/// A LIST: a GET of a collection (`/api/v1/<plural>`,
/// `/apis/<group>/<version>/<plural>`, or either within a namespace), not
/// a watch.
fn is_list(line: &str) -> bool {
    let Some(path) = line.strip_prefix("GET ") else {
        return false;
    };
    let path = path.split('?').next().unwrap_or_default();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") => &segs[2.min(segs.len())..],
        Some(&"apis") => &segs[3.min(segs.len())..],
        _ => return false,
    };
    !is_watch(line) && matches!(rest, [_] | ["namespaces", _, _])
}

fn subnet(api: &FakeApi, name: &str) -> Option<String> {
    api.get(GV, "tenantdeployments", Some("tenant-acme"), name)?
        .pointer("/status/subnet")?
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_rest_the_controllers_make_no_list_and_no_write_and_still_see_changes() {
    let api = FakeApi::new();
    api.add_tenant("acme");
    for name in ["web", "api", "db"] {
        api.add_workload(
            "acme",
            name,
            json!({"image": "nginx:alpine", "ports": [80]}),
        );
    }
    let (addr, server) = api.serve_tcp().await.unwrap();
    let client = FakeApi::tcp_client(addr).unwrap();
    let ctx = Arc::new(Ctx::new(client, example_config()));
    let health = Arc::new(Health::default());
    let operator = tokio::spawn(controllers(ctx, health.clone()));

    eventually("ready, subnets and Deployments", || {
        health.is_ready()
            && ["web", "api", "db"].iter().all(|w| {
                subnet(&api, w).is_some()
                    && api
                        .get("apps/v1", "deployments", Some("tenant-acme"), w)
                        .is_some()
            })
    })
    .await;
    settled(&api, Duration::from_millis(500)).await;
    let warm = api.log();
    let count = |log: &[String], f: &dyn Fn(&str) -> bool| log.iter().filter(|l| f(l)).count();
    println!(
        "start: {} LISTs, {} watches, {} GETs of one object, {} writes",
        count(&warm, &|l| is_list(l)),
        count(&warm, &|l| is_watch(l)),
        count(&warm, &|l| l.starts_with("GET ")
            && !is_list(l)
            && !is_watch(l)),
        count(&warm, &|l| !l.starts_with("GET ")),
    );
    assert!(
        warm.iter().any(|l| is_list(l)),
        "the start lists every kind once: {warm:?}"
    );

    api.clear_log();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rest = api.log();
    println!("at rest for 3 s: {} requests", rest.len());
    let not_watches: Vec<&String> = rest.iter().filter(|l| !is_watch(l)).collect();
    assert!(
        not_watches.is_empty(),
        "requests at rest besides watches: {not_watches:?}"
    );

    // A change still arrives, through the watch, without a LIST.
    api.clear_log();
    let mut web = api
        .get(GV, "tenantdeployments", Some("tenant-acme"), "web")
        .unwrap();
    web["spec"]["image"] = json!("nginx:1.27");
    web["metadata"]["generation"] = json!(2);
    api.insert(GV, "tenantdeployments", web);
    eventually("the new image in the Deployment", || {
        api.get("apps/v1", "deployments", Some("tenant-acme"), "web")
            .and_then(|d| {
                d.pointer("/spec/template/spec/containers/0/image")
                    .and_then(Value::as_str)
                    .map(|i| i == "nginx:1.27")
            })
            .unwrap_or(false)
    })
    .await;
    settled(&api, Duration::from_millis(500)).await;
    let lists: Vec<String> = api.log().into_iter().filter(|l| is_list(l)).collect();
    assert!(lists.is_empty(), "a change needs no LIST: {lists:?}");
    operator.abort();
    server.abort();
}

/// The platform's objects are not watched, so what is deleted behind the
/// operator's back comes back at the next resync (single GETs, no LIST).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_platform_object_is_restored_at_the_next_resync() {
    let api = FakeApi::new();
    api.add_tenant("acme");
    api.add_workload(
        "acme",
        "web",
        json!({"image": "nginx:alpine", "ports": [80]}),
    );
    let (addr, server) = api.serve_tcp().await.unwrap();
    let client = FakeApi::tcp_client(addr).unwrap();
    let mut config = example_config();
    config.resync = Duration::from_secs(2);
    let ctx = Arc::new(Ctx::new(client, config));
    let health = Arc::new(Health::default());
    let operator = tokio::spawn(controllers(ctx, health.clone()));
    let proxy_cm = |api: &FakeApi| {
        api.get(
            "v1",
            "configmaps",
            Some("palisade-system"),
            "palisade-proxy",
        )
    };

    eventually("the proxy's ConfigMap", || proxy_cm(&api).is_some()).await;
    settled(&api, Duration::from_millis(500)).await;
    api.delete(
        "v1",
        "configmaps",
        Some("palisade-system"),
        "palisade-proxy",
    );
    assert!(proxy_cm(&api).is_none());
    api.clear_log();
    eventually("the ConfigMap restored", || proxy_cm(&api).is_some()).await;
    let lists: Vec<String> = api.log().into_iter().filter(|l| is_list(l)).collect();
    assert!(lists.is_empty(), "the repair needs no LIST: {lists:?}");
    operator.abort();
    server.abort();
}
