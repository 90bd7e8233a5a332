//! `palisade --store kubernetes ...`: the real binary against an in-memory
//! API server on a real socket (kubeconfig pointing at it), with the
//! operator's reconcile run in-process in between, as it would in a
//! cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_operator::crd::{Tenant, TenantDeployment};
use palisade_operator::kube::Api;
use palisade_operator::reconcile::{self, Ctx};
use palisade_operator::testing::FakeApi;
use serde_json::{Value, json};
use std::path::PathBuf;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const GV: &str = "palisade.io/v1alpha1";

struct Cluster {
    api: FakeApi,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn cluster() -> Cluster {
    let api = FakeApi::new();
    let (addr, server) = api.serve_tcp().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeApi::kubeconfig(addr)).unwrap();
    Cluster {
        api,
        kubeconfig,
        _dir: dir,
        server,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn palisade(c: &Cluster, args: &[&str]) -> Out {
    let kubeconfig = c.kubeconfig.clone();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(BIN)
            .arg("--store")
            .arg("kubernetes")
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

#[track_caller]
fn one_line_error(out: &Out, needle: &str) {
    assert_ne!(out.code, 0, "should fail: {}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{}",
        lines[0]
    );
}

use palisade_operator::testing::example_pool as pool;

fn operator(api: &FakeApi) -> Ctx {
    Ctx::new(api.client(), palisade_operator::testing::example_config())
}

/// One pass of both controllers over everything, as the watches would
/// trigger them.
async fn reconcile_all(ctx: &Ctx) {
    let ws = Api::<TenantDeployment>::all(ctx.client.clone())
        .list(&Default::default())
        .await
        .unwrap();
    for w in ws.items {
        reconcile::reconcile_workload(&w, ctx).await.unwrap();
    }
    let ts = Api::<Tenant>::all(ctx.client.clone())
        .list(&Default::default())
        .await
        .unwrap();
    for t in ts.items {
        reconcile::reconcile_tenant(&t, ctx).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_stats_delete_through_the_custom_resources() {
    let c = cluster().await;
    let out = palisade(&c, &["create", "acme", "web", "nginx:alpine", "3"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("created tenant acme"), "{}", out.stdout);
    assert!(out.stdout.contains("<pending"), "{}", out.stdout);

    let w = c
        .api
        .get(GV, "tenantdeployments", Some("tenant-acme"), "web")
        .unwrap();
    assert_eq!(w["spec"]["image"], "nginx:alpine");
    assert_eq!(w["spec"]["replicas"], 3);
    assert_eq!(w["spec"]["ports"], json!([80]));
    assert!(c.api.get(GV, "tenants", None, "acme").is_some());
    assert!(c.api.get("v1", "namespaces", None, "tenant-acme").is_some());

    // Before the operator ran: no subnet yet.
    let out = palisade(&c, &["list", "-o", "json"]).await;
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows[0]["subnet"], Value::Null);

    let ctx = operator(&c.api);
    reconcile_all(&ctx).await;

    let out = palisade(&c, &["list", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["tenant"], "acme");
    assert_eq!(rows[0]["deployment"], "web");
    assert_eq!(rows[0]["subnet"], pool().subnet(0).to_string());
    let table = palisade(&c, &["list"]).await.stdout;
    assert!(table.starts_with("TENANT"), "{table}");
    assert!(table.contains(&pool().subnet(0).to_string()), "{table}");

    // A second deployment of the same tenant, and the tenant listing.
    let out = palisade(
        &c,
        &["create", "acme", "api", "nginx:alpine", "--port", "8080"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("created tenant"), "{}", out.stdout);
    reconcile_all(&ctx).await;
    let tenants: Value =
        serde_json::from_str(&palisade(&c, &["tenant", "list", "-o", "json"]).await.stdout)
            .unwrap();
    assert_eq!(tenants[0]["tenant"], "acme");
    assert_eq!(tenants[0]["deployments"], 2);
    assert_eq!(tenants[0]["ready"], "True");

    // stats: the pool from the operator's ConfigMap, the claims counted.
    c.api.insert(
        "v1",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "palisade-operator", "namespace": "palisade-system"},
               "data": {"PALISADE_POOL": "fd00:1234:5678::/48", "PALISADE_PREFIX_LEN": "96"}}),
    );
    let out = palisade(&c, &["stats", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stats: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(stats["pool"], "fd00:1234:5678::/48");
    assert_eq!(stats["allocated"], 2);
    assert_eq!(stats["quarantined"], 0);
    assert_eq!(stats["capacity"], json!(1u64 << 48));
    let table = palisade(&c, &["stats"]).await.stdout;
    assert!(
        table.contains("allocated:") && table.contains('2'),
        "{table}"
    );

    // delete: the workload goes once the operator released its claim,
    // which waits until the tenant pass pruned its pool (and its pods).
    let out = palisade(&c, &["delete", "acme", "web"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    reconcile_all(&ctx).await;
    reconcile_all(&ctx).await;
    assert!(
        c.api
            .get(GV, "tenantdeployments", Some("tenant-acme"), "web")
            .is_none()
    );
    let stats: Value =
        serde_json::from_str(&palisade(&c, &["stats", "-o", "json"]).await.stdout).unwrap();
    assert_eq!(stats["allocated"], 1);

    // tenant delete: refused while deployments exist, unless --cascade;
    // the operator then deletes the workloads first, then the tenant.
    one_line_error(
        &palisade(&c, &["tenant", "delete", "acme"]).await,
        "tenant acme has 1 deployments; delete them first or pass --cascade",
    );
    let out = palisade(&c, &["tenant", "delete", "acme", "--cascade"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for _ in 0..3 {
        reconcile_all(&ctx).await;
    }
    assert!(c.api.get(GV, "tenants", None, "acme").is_none());
    assert!(c.api.all(GV, "tenantdeployments").is_empty());
    assert!(c.api.all(GV, "subnetclaims").is_empty());
    one_line_error(
        &palisade(&c, &["tenant", "delete", "acme"]).await,
        "no tenant acme",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_one_line_error_and_sends_nothing() {
    let c = cluster().await;
    for (args, needle) in [
        (
            &["create", "acme", "Web_1", "nginx:alpine", "3"][..],
            "invalid deployment name",
        ),
        (
            &["create", "acme", "web", "nginx:alpine", "many"][..],
            "replicas",
        ),
        (
            &["create", "acme", "web", "NOT AN IMAGE"][..],
            "invalid image reference",
        ),
        (
            &["create", "acme", "web", "nginx", "--port", "0"][..],
            "port",
        ),
        (&["check"][..], "supports create, delete, list, stats"),
        (&["init", "--pool", "fd00::/48"][..], "PALISADE_POOL"),
    ] {
        let out = palisade(&c, args).await;
        one_line_error(&out, needle);
    }
    assert!(c.api.log().is_empty(), "{:?}", c.api.log());

    let ok = palisade(&c, &["create", "acme", "web", "nginx:alpine"]).await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    one_line_error(
        &palisade(&c, &["create", "acme", "web", "nginx:alpine"]).await,
        "deployment web already exists in tenant acme",
    );
    one_line_error(
        &palisade(&c, &["delete", "acme", "nope"]).await,
        "no deployment nope in tenant acme",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeApi::kubeconfig(addr)).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--store", "kubernetes", "list"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    // kube's client also logs the failed connection; the last line is ours.
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot list TenantDeployments"),
        "{err}"
    );
    assert!(last.contains("Connection refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_say_how_to_install_them() {
    let c = cluster().await;
    c.api.without_kind("tenantdeployments");
    one_line_error(
        &palisade(&c, &["list"]).await,
        "CRDs are not installed (kubectl apply -k deploy/crds)",
    );
}
