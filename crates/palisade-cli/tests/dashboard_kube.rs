//! `palisade --store kubernetes dashboard`: the real binary serving the
//! cluster's custom resources from an in-memory API server on a real
//! socket (kubeconfig pointing at it), with the operator's reconcile run
//! in-process, compared with the same dashboard over SQLite after the same
//! script.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;
mod dashboard_support;
mod support;

use cluster_support::{BIN, Cluster, GV, comparable, operator, operator_config, palisade};
use dashboard_support::{Server, http, http_body, serve};
use palisade_operator::testing::{FakeApi, example_pool as pool};
use serde_json::{Value, json};

/// The in-memory API server on a socket, with the operator's ConfigMap
/// (its pool, the SQLite store's below) as deploy/ installs it.
async fn cluster() -> Cluster {
    let c = cluster_support::cluster().await;
    operator_config(&c.api);
    c
}

fn kubeconfig(c: &Cluster) -> String {
    c.kubeconfig.to_str().unwrap().to_owned()
}

/// `palisade --store kubernetes args...`, which must succeed.
async fn cli(c: &Cluster, args: &[&str]) {
    let out = palisade(c, args).await;
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
}

/// Two passes of both controllers over everything, as the watches would
/// trigger them.
async fn reconcile_all(api: &FakeApi) {
    let ctx = operator(api);
    for _ in 0..2 {
        cluster_support::reconcile_all(&ctx).await;
    }
}

/// `palisade --store kubernetes dashboard --listen 127.0.0.1:0 extra...`.
async fn cluster_dashboard(c: &Cluster, extra: &[&str]) -> Server {
    let kubeconfig = kubeconfig(c);
    let log = c.dir.path().join("dashboard.log");
    let mut args = vec![
        "--store",
        "kubernetes",
        "dashboard",
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        serve(&args, &[("KUBECONFIG", &kubeconfig)], log)
    })
    .await
    .unwrap()
}

/// `method url [body]` off the test's runtime; (status, JSON body).
async fn call(method: &str, url: String, body: Option<Value>) -> (u16, Value) {
    let method = method.to_owned();
    tokio::task::spawn_blocking(move || {
        let (status, text) = match body {
            Some(b) => http_body(&method, &url, &b.to_string()),
            None => http(&method, &url),
        };
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
        (status, v)
    })
    .await
    .unwrap()
}

/// The script both stores run: two tenants, pinned egress, a label, an
/// allow rule and both kinds of per-tenant gateways.
const SCRIPT: &[&[&str]] = &[
    &[
        "tenant",
        "create",
        "acme",
        "--cpu",
        "2",
        "--egress-ip",
        "10.0.0.5",
    ],
    &[
        "create",
        "acme",
        "web",
        "nginx:alpine",
        "2",
        "--port",
        "8080",
        "--label",
        "team=web",
    ],
    &["create", "acme", "db", "postgres:16", "--port", "5432"],
    &["create", "beta", "worker", "busybox"],
    &["allow", "acme", "web", "db", "--port", "5432"],
    &["gateway", "create", "per-tenant", "acme"],
    &["gateway", "create", "per-deployment", "beta", "worker"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_dashboard_serves_the_same_rows_as_sqlite() {
    let c = cluster().await;
    let db = support::Env::new();
    db.run(&[
        "init",
        "--pool",
        "fd00:1234:5678::/48",
        "--prefix-len",
        "96",
    ])
    .ok();
    for args in SCRIPT {
        db.run(args).ok();
        cli(&c, args).await;
        reconcile_all(&c.api).await;
    }
    let local = {
        let state = db.state.to_str().unwrap().to_owned();
        let log = db.dir.path().join("dashboard.log");
        tokio::task::spawn_blocking(move || {
            serve(
                &["--state", &state, "dashboard", "--listen", "127.0.0.1:0"],
                &[],
                log,
            )
        })
        .await
        .unwrap()
    };
    let remote = cluster_dashboard(&c, &[]).await;
    for path in [
        "/api/tenants",
        "/api/tenants/acme",
        "/api/tenants/beta",
        "/api/stats",
        "/api/matrix",
        "/api/matrix?tenant=acme",
    ] {
        let (ls, lv) = call("GET", format!("{}{path}", local.url), None).await;
        let (rs, rv) = call("GET", format!("{}{path}", remote.url), None).await;
        assert_eq!((ls, rs), (200, 200), "{path}: {lv} {rv}");
        assert_eq!(comparable(rv), comparable(lv), "{path}");
    }
    // A tenant's page reads the cluster once (one LIST per kind), and reads
    // only.
    c.api.clear_log();
    call("GET", format!("{}/api/tenants/acme", remote.url), None).await;
    let log = c.api.log();
    assert!(log.iter().all(|l| l.starts_with("GET ")), "{log:?}");
    for kind in ["tenants?", "tenantdeployments?"] {
        let lists = log
            .iter()
            .filter(|l| l.ends_with(&format!("/{kind}")))
            .count();
        assert_eq!(lists, 1, "{kind}: {log:?}");
    }
    // What the pages are built from is really there (not two empty pages).
    let (_, acme) = call("GET", format!("{}/api/tenants/acme", remote.url), None).await;
    let subnets: Vec<&str> = acme["deployment_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["subnet"].as_str().unwrap())
        .collect();
    assert_eq!(subnets.len(), 2, "{acme}");
    assert!(
        subnets.contains(&pool().subnet(0).to_string().as_str()),
        "{acme}"
    );
    assert_eq!(acme["allow_rules"][0]["port"], 5432, "{acme}");
    assert_eq!(acme["gateways"], json!(["per-tenant/acme"]), "{acme}");
    // The operator's report, which only the cluster has.
    c.api.roll_out_deployments();
    reconcile_all(&c.api).await;
    let (_, acme) = call("GET", format!("{}/api/tenants/acme", remote.url), None).await;
    assert_eq!(acme["deployment_list"][0]["ready"], "True", "{acme}");
    let (_, matrix) = call("GET", format!("{}/api/matrix", remote.url), None).await;
    assert_eq!(
        matrix["endpoints"],
        json!(["acme/db", "acme/web", "beta/worker"]),
        "{matrix}"
    );
    // web may reach db on 5432 (the allow rule), db may not reach web.
    let cell = |from: &str, to: &str| {
        matrix["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["from"] == from && c["to"] == to)
            .map(|c| c["state"].clone())
    };
    assert_eq!(
        cell("acme/web", "acme/db"),
        Some(json!("allowed")),
        "{matrix}"
    );
    assert_eq!(
        cell("acme/db", "acme/web"),
        Some(json!("denied")),
        "{matrix}"
    );

    // History: SQLite's log of changes has no counterpart in the cluster,
    // and the answer says so instead of drawing an empty chart.
    let (status, history) = call("GET", format!("{}/api/history", remote.url), None).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["events"], json!([]));
    assert_eq!(history["points"], json!([]));
    assert!(
        history["unavailable"]
            .as_str()
            .is_some_and(|r| r.contains("no history of allocations")),
        "{history}"
    );
    let (_, history) = call("GET", format!("{}/api/history", local.url), None).await;
    assert!(history.get("unavailable").is_none(), "{history}");
    assert!(
        !history["events"].as_array().unwrap().is_empty(),
        "{history}"
    );
    let (_, config) = call("GET", format!("{}/api/config", remote.url), None).await;
    assert_eq!(config["store"], "kubernetes", "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_the_cluster_dashboard_creates_the_custom_resource() {
    let c = cluster().await;
    cli(&c, &["create", "acme", "web", "nginx:alpine"]).await;
    reconcile_all(&c.api).await;
    let dash = cluster_dashboard(&c, &["--allow-writes"]).await;
    let url = |path: &str| format!("{}{path}", dash.url);

    // Bad input is refused with the SQLite store's codes, and nothing is
    // written to the cluster.
    c.api.clear_log();
    let deployments = url("/api/tenants/acme/deployments");
    for (uri, body, status, code) in [
        (
            deployments.clone(),
            json!({"name": "Bad_Name", "image": "nginx"}),
            400,
            "invalid_body",
        ),
        (
            deployments.clone(),
            json!({"name": "api", "image": "nginx", "ports": [0]}),
            400,
            "invalid_body",
        ),
        (
            deployments.clone(),
            json!({"name": "api", "image": "nginx", "colour": "red"}),
            400,
            "invalid_body",
        ),
        (
            url("/api/tenants/Not_A_Tenant/deployments"),
            json!({"name": "api", "image": "nginx"}),
            400,
            "invalid_tenant_name",
        ),
        (
            url("/api/tenants/nope/deployments"),
            json!({"name": "api", "image": "nginx"}),
            404,
            "tenant_not_found",
        ),
        (
            deployments.clone(),
            json!({"name": "web", "image": "nginx"}),
            409,
            "deployment_exists",
        ),
    ] {
        let (got, reply) = call("POST", uri.clone(), Some(body)).await;
        assert_eq!(
            (got, reply["error"]["code"].as_str()),
            (status, Some(code)),
            "{uri}: {reply}"
        );
    }
    let (got, reply) = call("DELETE", url("/api/tenants/acme/deployments/nope"), None).await;
    assert_eq!(got, 404, "{reply}");
    assert_eq!(reply["error"]["code"], "deployment_not_found");
    assert!(c.api.writes().is_empty(), "{:?}", c.api.writes());

    // A good create: the TenantDeployment, its subnet pending until the
    // operator reconciles.
    let (got, created) = call(
        "POST",
        deployments.clone(),
        Some(json!({"name": "api", "image": "nginx:alpine", "replicas": 2, "ports": [9000]})),
    )
    .await;
    assert_eq!(got, 201, "{created}");
    assert_eq!(created["name"], "api");
    assert_eq!(created["subnet"], Value::Null, "{created}");
    let w = c
        .api
        .get(GV, "tenantdeployments", Some("tenant-acme"), "api")
        .expect("the dashboard created the TenantDeployment");
    assert_eq!(w["spec"]["image"], "nginx:alpine");
    assert_eq!(w["spec"]["replicas"], 2);
    assert_eq!(w["spec"]["ports"], json!([9000]));
    reconcile_all(&c.api).await;
    let (_, acme) = call("GET", url("/api/tenants/acme"), None).await;
    let api = acme["deployment_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "api")
        .cloned()
        .unwrap();
    assert_eq!(api["subnet"], pool().subnet(1).to_string(), "{acme}");

    // A delete removes it, naming the subnet the operator releases.
    let (got, removed) = call("DELETE", url("/api/tenants/acme/deployments/api"), None).await;
    assert_eq!(got, 200, "{removed}");
    assert_eq!(
        removed["deleted"][0]["subnet"],
        pool().subnet(1).to_string()
    );
    let gone = c
        .api
        .get(GV, "tenantdeployments", Some("tenant-acme"), "api")
        .is_none_or(|w| w["metadata"]["deletionTimestamp"].is_string());
    assert!(gone, "the TenantDeployment is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_dashboard_that_cannot_read_the_cluster_does_not_start() {
    let c = cluster().await;
    c.api.delete(
        "v1",
        "configmaps",
        Some("palisade-system"),
        "palisade-operator",
    );
    let kubeconfig = kubeconfig(&c);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args([
                "--store",
                "kubernetes",
                "dashboard",
                "--listen",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: the pool is unknown: no PALISADE_POOL in ConfigMap palisade-system/palisade-operator"),
        "{err}"
    );
}

/// What the browser check needs, or why it cannot run.
fn browser_prerequisites(dir: &std::path::Path) -> Result<(), String> {
    match std::process::Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Err("node is not installed (apt-get install nodejs npm)".into()),
    }
    if !std::path::Path::new(CHROMIUM).exists() {
        return Err(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            dir.display()
        ));
    }
    Ok(())
}

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_dashboard_in_chromium_shows_pending_subnets_and_why_there_is_no_history() {
    let browser =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../palisade-dashboard/browser");
    if let Err(why) = browser_prerequisites(&browser) {
        dashboard_support::skip_or_fail(&why);
        return;
    }
    let c = cluster().await;
    cli(&c, &["create", "acme", "web", "nginx:alpine"]).await;
    reconcile_all(&c.api).await;
    // Not reconciled yet: its subnet is pending.
    cli(&c, &["create", "acme", "api", "nginx:alpine"]).await;
    let dash = cluster_dashboard(&c, &[]).await;
    let shots =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-screenshots");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(browser.join("cluster.mjs"))
            .current_dir(&browser)
            .env("DASHBOARD_URL", &dash.url)
            .env("TENANT", "acme")
            .env("SCREENSHOT_DIR", shots)
            .env("CHROMIUM", CHROMIUM)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser checks failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["tenants"], json!(["acme"]), "{seen}");
    assert_eq!(seen["headings"][8], "Ready", "{seen}");
    // The operator's pool: a /48 of /96 subnets.
    assert_eq!(seen["capacity"], (1u64 << 48).to_string(), "{seen}");
    assert_eq!(seen["history_unavailable"], "true", "{seen}");
    assert!(
        seen["history"]
            .as_str()
            .unwrap()
            .starts_with("The cluster keeps no history of allocations"),
        "{seen}"
    );
    assert_eq!(
        seen["subnets"],
        json!([
            {"deployment": "api", "subnet": "pending (the operator allocates it)", "pending": "true", "ready": "Unknown"},
            {"deployment": "web", "subnet": pool().subnet(0).to_string(), "pending": null, "ready": "False"},
        ]),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failures_are_clear_json_errors() {
    let c = cluster().await;
    cli(&c, &["create", "acme", "web", "nginx:alpine"]).await;
    let dash = cluster_dashboard(&c, &[]).await;
    // The API server failing: 502, naming what failed.
    c.api.fail_lists("tenants", Some((500, "etcd is down")));
    let (status, reply) = call("GET", format!("{}/api/tenants", dash.url), None).await;
    assert_eq!(status, 502, "{reply}");
    assert_eq!(reply["error"]["code"], "cluster_error", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot list Tenants: ") && message.contains("etcd is down"),
        "{message}"
    );
    // The same line the CLI prints for the same failure.
    let kubeconfig = kubeconfig(&c);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["--store", "kubernetes", "tenant", "list"])
            .env("KUBECONFIG", kubeconfig)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().last(),
        Some(format!("error: {message}").as_str())
    );
    c.api.fail_lists("tenants", None);
    // The CRDs gone: 503, saying how to install them.
    c.api.without_kind("tenantdeployments");
    let (status, reply) = call("GET", format!("{}/api/tenants/acme", dash.url), None).await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "not_initialised", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CRDs are not installed (kubectl apply -k deploy/crds)"),
        "{reply}"
    );
}
