//! The JSON API against a real SQLite store populated through the store's
//! own API: every endpoint's status codes and shape, unknown and invalid
//! tenants, the read-only guard, the lab overlay from a fixture report and
//! the egress page against a real HTTP metrics endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use palisade_core::allocator::Timestamp;
use palisade_core::{AllowRule, EgressMode, EgressProfile, GatewayScope, Quota, Tenant};
use palisade_dashboard::Config;
use palisade_store::{NewDeployment, Store};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::{Call, Fixture, deployment, send};
use tower::ServiceExt;

/// acme (3 deployments, api -> db rule, egress IP, node pool) and globex
/// (1 deployment), one deployment created and deleted (recycled subnet).
fn fixture() -> Fixture {
    let (f, mut s) = Fixture::new();
    s.create_tenant(&Tenant {
        name: "acme".parse().unwrap(),
        quota: Quota {
            cpu: "8".parse().unwrap(),
            memory: "16Gi".parse().unwrap(),
            pods: 40,
        },
        node_pool: Some("acme-pool".parse().unwrap()),
        egress: EgressProfile {
            mode: EgressMode::Proxy,
            ip: Some("203.0.113.21".parse().unwrap()),
            public_ip: None,
        },
        proxy_port: 0,
        labels: Default::default(),
        created_at: Timestamp(1_001),
    })
    .unwrap();
    s.create_deployment(&deployment("acme", "web", 3, &[80]), Timestamp(1_010))
        .unwrap();
    s.create_deployment(&deployment("acme", "api", 2, &[8080]), Timestamp(1_020))
        .unwrap();
    s.create_deployment(&deployment("acme", "db", 1, &[5432]), Timestamp(1_030))
        .unwrap();
    s.create_deployment(&deployment("globex", "tmp", 1, &[]), Timestamp(1_040))
        .unwrap();
    s.delete_deployment(
        &"globex".parse().unwrap(),
        &"tmp".parse().unwrap(),
        Timestamp(1_050),
    )
    .unwrap();
    s.create_deployment(&deployment("globex", "shop", 2, &[]), Timestamp(1_060))
        .unwrap();
    s.allow(
        &AllowRule {
            tenant: "acme".parse().unwrap(),
            from: "api".parse().unwrap(),
            to: "db".parse().unwrap(),
            port: Some(5432.try_into().unwrap()),
        },
        Timestamp(1_070),
    )
    .unwrap();
    s.create_gateway(
        &GatewayScope::PerTenant {
            tenant: "acme".parse().unwrap(),
        },
        Timestamp(1_080),
    )
    .unwrap();
    f
}

fn app(f: &Fixture, writes: bool, metrics: Option<String>) -> Router {
    let mut c = f.config();
    assert_eq!(
        c.lab_dir,
        Some(f.lab.clone()),
        "lab dir defaults to lab/ beside the state"
    );
    c.allow_writes = writes;
    c.proxy_metrics = metrics;
    palisade_dashboard::router(c)
}

/// `method uri` with an optional JSON body; every answer is JSON.
async fn call(app: &Router, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut c = Call::new(method, uri);
    c.body = body;
    let r = send(app, c).await;
    assert!(
        r.content_type.starts_with("application/json"),
        "{uri}: content-type {}",
        r.content_type
    );
    (r.status, r.json)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    call(app, Method::GET, uri, None).await
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().len() > 5, "{v}");
}

#[tokio::test]
async fn tenants_lists_every_tenant_with_counts() {
    let f = fixture();
    let (status, v) = get(&app(&f, false, None), "/api/tenants").await;
    assert_eq!(status, StatusCode::OK);
    let t = v["tenants"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["name"], "acme");
    assert_eq!(t[0]["namespace"], "tenant-acme");
    assert_eq!(t[0]["deployments"], 3);
    assert_eq!(t[0]["replicas"], 6);
    assert_eq!(
        t[0]["quota"],
        json!({"cpu": "8", "memory": "16Gi", "pods": 40})
    );
    assert_eq!(t[0]["node_pool"], "acme-pool");
    assert_eq!(t[0]["egress_mode"], "proxy");
    assert_eq!(t[0]["egress_ip"], "203.0.113.21");
    assert_eq!(t[1]["name"], "globex");
    assert_eq!(t[1]["deployments"], 1);
    assert_eq!(t[1]["egress_ip"], Value::Null);
}

#[tokio::test]
async fn tenant_detail_has_deployments_rules_gateways() {
    let f = fixture();
    let (status, v) = get(&app(&f, false, None), "/api/tenants/acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["name"], "acme");
    let d = v["deployment_list"].as_array().unwrap();
    let names: Vec<&str> = d.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "db", "web"]);
    let web = &d[2];
    assert_eq!(web["image"], "nginx:alpine");
    assert_eq!(web["replicas"], 3);
    assert_eq!(web["ports"], json!([80]));
    assert_eq!(web["node_pool"], "acme-pool");
    assert_eq!(web["egress_mode"], "proxy");
    assert_eq!(web["egress_ip"], "203.0.113.21");
    assert!(
        web["subnet"]
            .as_str()
            .unwrap()
            .starts_with("fd00:1234:5678:")
    );
    assert!(web["subnet"].as_str().unwrap().ends_with("/96"));
    assert_eq!(
        v["allow_rules"],
        json!([{"from": "api", "to": "db", "port": 5432}])
    );
    assert_eq!(v["gateways"], json!(["per-tenant/acme"]));
}

#[tokio::test]
async fn unknown_and_invalid_tenants_are_json_errors() {
    let f = fixture();
    let app = app(&f, false, None);
    let (status, v) = get(&app, "/api/tenants/nosuch").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&v, "tenant_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("nosuch"));
    let (status, v) = get(&app, "/api/tenants/Not_A_Name").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_tenant_name");
    let (status, v) = get(&app, "/api/matrix?tenant=nosuch").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&v, "tenant_not_found");
    let (status, v) = get(&app, "/api/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
}

#[tokio::test]
async fn stats_are_exact_strings() {
    let f = fixture();
    let (status, v) = get(&app(&f, false, None), "/api/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["pool"], "fd00:1234:5678::/48");
    assert_eq!(v["prefix_len"], 96);
    // 2^(96-48) subnets.
    assert_eq!(v["capacity"], "281474976710656");
    assert_eq!(v["allocated"], "4");
    // tmp's subnet was released, then reused by shop (lowest recycled first).
    assert_eq!(v["recycled_available"], "0");
    assert_eq!(v["quarantined"], "0");
    assert_eq!(v["never_used"], (281474976710656u64 - 4).to_string());
    assert_eq!(
        (v["tenants"].as_u64(), v["deployments"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(
        (v["gateways"].as_u64(), v["allow_rules"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(v["utilisation"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn history_replays_allocations() {
    let f = fixture();
    let app = app(&f, false, None);
    let (status, v) = get(&app, "/api/history").await;
    assert_eq!(status, StatusCode::OK);
    let counts: Vec<&str> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["allocated"].as_str().unwrap())
        .collect();
    // start, web, api, db, tmp, -tmp, shop
    assert_eq!(counts, ["0", "1", "2", "3", "4", "3", "4"]);
    assert_eq!(v["points"][1]["at"], 1_010);
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "allow")
    );
    // A window of the last 3 events (shop, allow, gateway) is replayed
    // backwards from the present count.
    let (_, v) = get(&app, "/api/history?limit=3").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 3);
    let counts: Vec<&str> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["allocated"].as_str().unwrap())
        .collect();
    assert_eq!(counts, ["3", "4"]);
    let (status, v) = get(&app, "/api/history?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_limit");
}

#[tokio::test]
async fn matrix_comes_from_the_policy_model() {
    let f = fixture();
    let app = app(&f, false, None);
    let (status, v) = get(&app, "/api/matrix?tenant=acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["endpoints"], json!(["acme/api", "acme/db", "acme/web"]));
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 9);
    let cell = |from: &str, to: &str| {
        cells
            .iter()
            .find(|c| c["from"] == from && c["to"] == to)
            .unwrap()
            .clone()
    };
    assert_eq!(cell("acme/api", "acme/db")["state"], "allowed");
    assert_eq!(
        cell("acme/api", "acme/db")["ports"][0]["reason"],
        "allow rule acme: api -> db port 5432"
    );
    assert_eq!(cell("acme/db", "acme/api")["state"], "denied");
    assert_eq!(cell("acme/web", "acme/web")["state"], "allowed");
    assert_eq!(
        v["summary"],
        json!({"allowed": 4, "partial": 0, "denied": 5, "disagreements": 0, "objects_differ": 0, "dataplane_differs": 0})
    );
    assert_eq!(v["lab"]["status"], "absent");
    assert_eq!(cell("acme/api", "acme/db")["agreement"], "unprobed");
    // Without a tenant: every deployment, cross-tenant denied.
    let (_, v) = get(&app, "/api/matrix").await;
    assert_eq!(v["cells"].as_array().unwrap().len(), 16);
    assert_eq!(v["tenant"], Value::Null);
}

/// The lab's report as `lab verify` writes it: each probe with the model's
/// expectation, the rendered objects' verdict naming the deciding object
/// and rule per direction, and what the packets did.
const THREE_WAY_REPORT: &str = r#"{"generated_at": "2026-11-25T12:00:00Z", "probes": [
    {"from": "acme/api", "to": "acme/db", "port": 5432, "expected": true, "observed": true, "reason": "allow rule",
     "objects": {"allowed": true, "egress": "allow by CiliumNetworkPolicy tenant-acme/deployment-api spec.egress[1]", "ingress": "allow by CiliumNetworkPolicy tenant-acme/deployment-db spec.ingress[0]"}},
    {"from": "acme/web", "to": "acme/db", "port": 5432, "expected": false, "observed": true, "reason": "default deny",
     "objects": {"allowed": false, "egress": "default-deny by CiliumNetworkPolicy tenant-acme/default-deny", "ingress": "default-deny by CiliumNetworkPolicy tenant-acme/default-deny"}},
    {"from": "acme/db", "to": "acme/api", "port": 8080, "expected": false, "observed": false, "reason": "default deny",
     "objects": {"allowed": true, "egress": "allow by CiliumNetworkPolicy tenant-acme/deployment-db spec.egress[0]", "ingress": "allow by CiliumNetworkPolicy tenant-acme/deployment-api spec.ingress[2]"}},
    {"from": "acme/db", "to": "acme/web", "port": 80, "expected": false, "observed": false, "reason": "default deny"},
    {"from": "acme/web", "to": "cloud-metadata", "port": 80, "expected": false, "observed": false, "reason": "platform",
     "objects": {"allowed": false, "egress": "deny by CiliumNetworkPolicy tenant-acme/default-deny spec.egressDeny[0]", "ingress": "not-enforced"}}
]}"#;

#[tokio::test]
async fn matrix_shows_where_model_objects_and_dataplane_disagree() {
    let f = fixture();
    std::fs::create_dir_all(&f.lab).unwrap();
    std::fs::write(f.lab.join("verify.json"), THREE_WAY_REPORT).unwrap();
    let app = app(&f, false, None);
    let (status, v) = get(&app, "/api/matrix?tenant=acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["lab"]["status"], "present");
    assert_eq!(v["lab"]["generated_at"], "2026-11-25T12:00:00Z");
    assert_eq!(v["lab"]["probes"], 5);
    assert_eq!(v["lab"]["probes_in_view"], 4, "metadata is no cell");
    assert_eq!(v["lab"]["report_disagreements"], 2);
    assert_eq!(v["summary"]["disagreements"], 2);
    assert_eq!(v["summary"]["objects_differ"], 1);
    assert_eq!(v["summary"]["dataplane_differs"], 1);
    let cells = v["cells"].as_array().unwrap();
    let cell = |from: &str, to: &str| {
        cells
            .iter()
            .find(|c| c["from"] == from && c["to"] == to)
            .unwrap()
    };
    // All three allow.
    let good = cell("acme/api", "acme/db");
    assert_eq!(good["agreement"], "agree-allow");
    assert_eq!(good["differs"], json!([]));
    // The packets got through where model and objects deny.
    let leak = cell("acme/web", "acme/db");
    assert_eq!(
        (&leak["state"], &leak["agreement"]),
        (&json!("denied"), &json!("disagree"))
    );
    assert_eq!(leak["differs"], json!(["dataplane"]));
    let p = &leak["ports"][0];
    assert_eq!(
        (&p["allowed"], &p["objects"], &p["observed"]),
        (&json!(false), &json!(false), &json!(true))
    );
    // The objects allow what the model denies; the cell names the rule.
    let fault = cell("acme/db", "acme/api");
    assert_eq!(fault["agreement"], "disagree");
    assert_eq!(fault["differs"], json!(["objects"]));
    let p = &fault["ports"][0];
    assert_eq!(
        (&p["allowed"], &p["objects"], &p["observed"]),
        (&json!(false), &json!(true), &json!(false))
    );
    assert_eq!(
        p["objects_rule"],
        "egress allow by CiliumNetworkPolicy tenant-acme/deployment-db spec.egress[0]; \
         ingress allow by CiliumNetworkPolicy tenant-acme/deployment-api spec.ingress[2]"
    );
    // A probe without the objects' verdict agrees on what it has.
    assert_eq!(cell("acme/db", "acme/web")["agreement"], "agree-deny");
    assert_eq!(cell("acme/web", "acme/web")["agreement"], "unprobed");

    // A broken report is reported, not fatal.
    std::fs::write(f.lab.join("verify.json"), "{").unwrap();
    let (status, v) = get(&app, "/api/matrix?tenant=acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["lab"]["status"], "unreadable");
    assert!(
        v["lab"]["error"]
            .as_str()
            .unwrap()
            .contains("invalid lab report")
    );
}

#[tokio::test]
async fn writes_are_refused_unless_allowed() {
    let f = fixture();
    let ro = app(&f, false, None);
    let body = json!({"name": "cache", "image": "redis:7", "replicas": 2});
    let (status, v) = call(
        &ro,
        Method::POST,
        "/api/tenants/acme/deployments",
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&v, "read_only");
    let (status, v) = call(
        &ro,
        Method::DELETE,
        "/api/tenants/acme/deployments/web",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&v, "read_only");
    let before = Store::open(&f.state).unwrap().snapshot().unwrap();
    assert_eq!(before.deployments.len(), 4, "nothing changed");

    let rw = app(&f, true, None);
    let (status, v) = call(
        &rw,
        Method::POST,
        "/api/tenants/acme/deployments",
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "cache");
    assert_eq!(v["replicas"], 2);
    assert_eq!(v["ports"], json!([80]));
    let (status, v) = call(
        &rw,
        Method::POST,
        "/api/tenants/acme/deployments",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&v, "deployment_exists");
    let (status, v) = call(
        &rw,
        Method::POST,
        "/api/tenants/nosuch/deployments",
        Some(json!({"name": "x", "image": "nginx"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&v, "tenant_not_found");
    let (status, v) = call(
        &rw,
        Method::POST,
        "/api/tenants/acme/deployments",
        Some(json!({"name": "Bad Name", "image": "nginx"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_body");
    let (status, v) = call(
        &rw,
        Method::DELETE,
        "/api/tenants/acme/deployments/web",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["deleted"][0]["name"], "web");
    let (status, v) = call(
        &rw,
        Method::DELETE,
        "/api/tenants/acme/deployments/web",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&v, "deployment_not_found");
    let after = Store::open(&f.state).unwrap().snapshot().unwrap();
    let names: Vec<String> = after
        .deployments
        .iter()
        .map(|d| format!("{}/{}", d.tenant, d.name))
        .collect();
    assert_eq!(names, ["acme/api", "acme/cache", "acme/db", "globex/shop"]);
    assert!(Store::open(&f.state).unwrap().check().unwrap().is_empty());
}

#[tokio::test]
async fn egress_says_when_not_configured() {
    let f = fixture();
    let (status, v) = get(&app(&f, false, None), "/api/egress").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["configured"], false);
    assert!(v["message"].as_str().unwrap().contains("--proxy-metrics"));
}

/// A one-route HTTP server on a real socket serving `body` at /metrics.
async fn metrics_server(body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/metrics")
}

#[tokio::test]
async fn egress_reads_the_proxy_metrics_endpoint() {
    let f = fixture();
    let url = metrics_server(
        "# TYPE palisade_proxy_requests counter\n\
         palisade_proxy_requests_total{tenant=\"acme\",decision=\"allow\",reason=\"\"} 4\n\
         palisade_proxy_requests_total{tenant=\"acme\",decision=\"deny\",reason=\"deny_domain\"} 2\n\
         # TYPE palisade_proxy_bytes counter\n\
         palisade_proxy_bytes_total{tenant=\"acme\",direction=\"down\"} 2048\n\
         # EOF\n",
    )
    .await;
    let (status, v) = get(&app(&f, false, Some(url.clone())), "/api/egress").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["configured"], true);
    assert_eq!(v["source"], url);
    assert_eq!(v["tenants"][0]["tenant"], "acme");
    assert_eq!(v["tenants"][0]["requests"], 6);
    assert_eq!(v["tenants"][0]["denied"], 2);
    assert_eq!(v["tenants"][0]["bytes_down"], 2048);
    assert_eq!(
        v["tenants"][0]["denials"],
        json!([{"reason": "deny_domain", "count": 2}])
    );

    // Nothing listening: 502 with an explanation.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/metrics", l.local_addr().unwrap())
    };
    let (status, v) = get(&app(&f, false, Some(dead)), "/api/egress").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_error(&v, "proxy_metrics_unavailable");
}

#[tokio::test]
async fn config_and_uninitialised_store() {
    let f = fixture();
    let (status, v) = get(&app(&f, true, None), "/api/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["allow_writes"], true);
    assert_eq!(v["proxy_metrics"], Value::Null);
    let missing =
        palisade_dashboard::router(Config::new(Path::new("/nonexistent/state.db").into()));
    let (status, v) = get(&missing, "/api/tenants").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&v, "not_initialised");
}

#[tokio::test]
async fn pages_and_assets_are_embedded() {
    let f = fixture();
    let app = app(&f, false, None);
    for path in [
        "/",
        "/tenants/acme",
        "/matrix",
        "/egress",
        "/assets/app.js",
        "/assets/style.css",
    ] {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            !text.contains("http://") && !text.contains("https://") || path.ends_with(".js"),
            "{path} fetches nothing from outside"
        );
    }
    let resp = app
        .clone()
        .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// The router on a real socket, while the store is being written by
/// another connection: reads are not blocked and see committed state.
#[tokio::test]
async fn real_socket_reads_do_not_block_writers() {
    let f = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(&f, false, None);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for i in 0..20 {
        let state = f.state.clone();
        // A CLI-like writer in a blocking thread, interleaved with reads.
        let writer = tokio::task::spawn_blocking(move || {
            Store::open(&state)
                .unwrap()
                .create_deployment(
                    &deployment("globex", &format!("w{i}"), 1, &[]),
                    Timestamp(2_000 + i),
                )
                .unwrap();
        });
        let resp = client
            .get(format!("http://{addr}/api/tenants/globex"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert!(v["deployments"].as_u64().unwrap() > i);
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("writer blocked by the dashboard")
            .unwrap();
    }
    let resp = client
        .get(format!("http://{addr}/api/stats"))
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["allocated"], "24");
}

#[tokio::test]
async fn whole_platform_matrix_is_refused_when_too_large() {
    let f = fixture();
    let batch: Vec<NewDeployment> = (0..palisade_dashboard::MAX_MATRIX)
        .map(|i| deployment("bulk", &format!("d{i}"), 1, &[]))
        .collect();
    Store::open(&f.state)
        .unwrap()
        .create_deployments(&batch, Timestamp(3_000))
        .unwrap();
    let app = app(&f, false, None);
    let (status, v) = get(&app, "/api/matrix").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&v, "matrix_too_large");
    assert!(v["error"]["message"].as_str().unwrap().contains("?tenant="));
    // One tenant at the limit is still served.
    let (status, v) = get(&app, "/api/matrix?tenant=bulk").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["cells"].as_array().unwrap().len(), 100 * 100);
    let (status, v) = get(&app, "/api/tenants").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["tenants"][0]["name"], "acme");
    assert_eq!(v["tenants"][1]["name"], "bulk");
    assert_eq!(v["tenants"][1]["deployments"], 100);
}

#[tokio::test]
async fn loopback_dashboard_refuses_foreign_host_names() {
    let f = fixture();
    let mut c = Config::new(f.state.clone());
    c.loopback_host_only = true;
    let app = palisade_dashboard::router(c);
    let req = |host: &str| {
        Request::get("/api/tenants")
            .header("host", host)
            .body(Body::empty())
            .unwrap()
    };
    // DNS rebinding: a foreign name pointed at 127.0.0.1.
    let resp = app.clone().oneshot(req("evil.example:7474")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_error(&v, "host_not_allowed");
    for host in ["127.0.0.1:7474", "localhost:7474", "[::1]:7474"] {
        let resp = app.clone().oneshot(req(host)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    }
}
