//! Authentication, tenant scoping, the Origin check and the audit log,
//! driven through the real router over a real SQLite store.
//!
//! The Kubernetes authenticator is tested against a fake API server on a
//! real socket reached through a real `kube::Client`: it answers TokenReview
//! and SubjectAccessReview with the JSON shapes of authentication.k8s.io/v1
//! and authorization.k8s.io/v1 (https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-review-v1/,
//! https://kubernetes.io/docs/reference/kubernetes-api/authorization-resources/subject-access-review-v1/)
//! and decides SubjectAccessReviews from a small RBAC table, recording what
//! it was asked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use palisade_core::allocator::Timestamp;
use palisade_dashboard::{AuditLog, Config, KubeAuthenticator, TokenFile};
use palisade_store::Store;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use support::{Call, Fixture, deployment};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789abcdef";
const ACME: &str = "acme-token-0123456789abcdef";

/// acme (web, api) and globex (shop), one replica serving 80 each.
fn fixture() -> Fixture {
    let (f, mut s) = Fixture::new();
    for (i, (t, d)) in [("acme", "web"), ("acme", "api"), ("globex", "shop")]
        .into_iter()
        .enumerate()
    {
        s.create_deployment(&deployment(t, d, 1, &[80]), Timestamp(1_010 + i as u64))
            .unwrap();
    }
    f
}

fn deployments(state: &Path, tenant: &str) -> Vec<String> {
    let mut s = Store::open(state).unwrap();
    let snap = s.tenant_snapshot(&tenant.parse().unwrap()).unwrap();
    snap.deployments
        .iter()
        .map(|d| d.name.to_string())
        .collect()
}

/// An in-memory audit log.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn records(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn token_file() -> TokenFile {
    TokenFile::parse(
        &format!("# who may do what\n{ADMIN} * admin\n{ACME} acme acme-ops\n"),
        Path::new("tokens"),
    )
    .unwrap()
}

fn router(
    f: &Fixture,
    auth: Option<Arc<dyn palisade_dashboard::Authenticator>>,
    public_read: bool,
) -> (Router, Buf) {
    let mut c = f.config();
    c.allow_writes = true;
    c.auth = auth;
    c.public_read = public_read;
    let buf = Buf::default();
    c.audit = AuditLog::to_writer(buf.clone());
    (palisade_dashboard::router(c), buf)
}

fn get<'a>(uri: &str, token: Option<&'a str>) -> Call<'a> {
    let mut c = Call::new(Method::GET, uri);
    c.token = token;
    c
}

fn create<'a>(tenant: &str, name: &str, token: Option<&'a str>) -> Call<'a> {
    let mut c = Call::new(Method::POST, format!("/api/tenants/{tenant}/deployments"));
    c.token = token;
    c.body = Some(json!({"name": name, "image": "redis:7"}));
    c
}

fn delete<'a>(tenant: &str, name: &str, token: Option<&'a str>) -> Call<'a> {
    let mut c = Call::new(
        Method::DELETE,
        format!("/api/tenants/{tenant}/deployments/{name}"),
    );
    c.token = token;
    c
}

/// Sends `c` through the router; the status, the JSON body and the
/// `WWW-Authenticate` header.
async fn send(app: &Router, c: Call<'_>) -> (StatusCode, Value, Option<String>) {
    let r = support::send(app, c).await;
    (r.status, r.json, r.challenge)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn tenant_names(v: &Value) -> Vec<&str> {
    v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn with_a_token_file_every_api_call_needs_a_valid_token() {
    let f = fixture();
    let (app, _) = router(&f, Some(Arc::new(token_file())), false);
    for uri in [
        "/api/config",
        "/api/tenants",
        "/api/stats",
        "/api/tenants/acme",
        "/api/matrix?tenant=acme",
    ] {
        let (status, v, challenge) = send(&app, get(uri, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {v}");
        assert_eq!(code(&v), "unauthenticated", "{uri}");
        // RFC 6750 §3: a 401 names the scheme to use.
        assert!(challenge.is_some_and(|c| c.starts_with("Bearer ")), "{uri}");
    }
    let (status, v, _) = send(
        &app,
        get("/api/tenants", Some("admin-token-0123456789abcdeX")),
    )
    .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    // The pages themselves hold no data: the login page must load without one.
    let resp = app
        .clone()
        .oneshot(
            Request::get("/login")
                .header("host", "x")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let (status, v, _) = send(&app, get("/api/config", Some(ADMIN))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["auth"], "token-file");
    assert_eq!(v["user"], "admin");
    assert_eq!(v["all_tenants"], true);
    let (_, v, _) = send(&app, get("/api/tenants", Some(ADMIN))).await;
    assert_eq!(tenant_names(&v), ["acme", "globex"]);
}

#[tokio::test]
async fn a_tenant_token_sees_and_changes_only_its_tenant() {
    let f = fixture();
    let (app, _) = router(&f, Some(Arc::new(token_file())), false);
    let t = Some(ACME);
    let (_, v, _) = send(&app, get("/api/config", t)).await;
    assert_eq!(
        (v["user"].as_str(), v["all_tenants"].as_bool()),
        (Some("acme-ops"), Some(false))
    );
    let (status, v, _) = send(&app, get("/api/tenants", t)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tenant_names(&v), ["acme"]);
    let (status, v, _) = send(&app, get("/api/tenants/acme", t)).await;
    assert_eq!(
        (status, v["deployments"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    let (status, v, _) = send(&app, get("/api/matrix?tenant=acme", t)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.as_str().unwrap().starts_with("acme/")),
        "{v}"
    );
    // Another tenant, and the platform-wide views: refused.
    for uri in [
        "/api/tenants/globex",
        "/api/matrix?tenant=globex",
        "/api/matrix",
        "/api/stats",
        "/api/history",
    ] {
        let (status, v, _) = send(&app, get(uri, t)).await;
        assert_eq!(
            (status, code(&v)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{uri}: {v}"
        );
    }
    // Writes: its own tenant yes, another no, and the store shows it.
    let (status, v, _) = send(&app, create("acme", "cache", t)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v, _) = send(&app, create("globex", "cache", t)).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{v}"
    );
    let (status, _, _) = send(&app, delete("globex", "shop", t)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(deployments(&f.state, "globex"), ["shop"]);
    let (status, _, _) = send(&app, delete("acme", "cache", t)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deployments(&f.state, "acme").len(), 2);
}

#[tokio::test]
async fn egress_rows_are_scoped_to_the_callers_tenants() {
    let f = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = "palisade_proxy_requests_total{tenant=\"acme\",decision=\"allow\",reason=\"\"} 3\n\
                   palisade_proxy_requests_total{tenant=\"globex\",decision=\"allow\",reason=\"\"} 5\n\
                   palisade_proxy_requests_total{tenant=\"-\",decision=\"deny\",reason=\"unknown-source\"} 1\n";
    let origin = Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { metrics }),
    );
    tokio::spawn(async move { axum::serve(listener, origin).await });
    let mut c = Config::new(f.state.clone());
    c.auth = Some(Arc::new(token_file()));
    c.proxy_metrics = Some(format!("http://{addr}/metrics"));
    let app = palisade_dashboard::router(c);
    let rows = |v: &Value| -> Vec<String> {
        v["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tenant"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, v, _) = send(&app, get("/api/egress", Some(ACME))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(rows(&v), ["acme"]);
    let (_, v, _) = send(&app, get("/api/egress", Some(ADMIN))).await;
    assert_eq!(rows(&v), ["-", "acme", "globex"]);
}

#[tokio::test]
async fn public_read_opens_reads_but_never_writes() {
    let f = fixture();
    let (app, _) = router(&f, Some(Arc::new(token_file())), true);
    let (status, v, _) = send(&app, get("/api/tenants", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tenant_names(&v), ["acme", "globex"]);
    let (status, v, _) = send(&app, create("acme", "cache", None)).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    // A token still scopes its holder.
    let (_, v, _) = send(&app, get("/api/tenants", Some(ACME))).await;
    assert_eq!(tenant_names(&v), ["acme"]);
    // Without an authenticator, public read is still read-only.
    let (open, _) = router(&f, None, true);
    let (status, v, _) = send(&open, create("acme", "cache", None)).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{v}"
    );
    assert_eq!(deployments(&f.state, "acme").len(), 2);
}

#[tokio::test]
async fn writes_from_another_origin_are_refused() {
    let f = fixture();
    let (app, _) = router(&f, Some(Arc::new(token_file())), false);
    let mut c = create("acme", "cache", Some(ADMIN));
    c.origin = Some("http://evil.example");
    let (status, v, _) = send(&app, c).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::FORBIDDEN, "origin_not_allowed"),
        "{v}"
    );
    let mut c = delete("acme", "web", Some(ADMIN));
    c.origin = Some("null");
    assert_eq!(send(&app, c).await.0, StatusCode::FORBIDDEN);
    assert_eq!(deployments(&f.state, "acme").len(), 2);
    // The dashboard's own origin (what a browser sends from its pages) passes.
    let mut c = create("acme", "cache", Some(ADMIN));
    c.origin = Some("http://dash.example:7474");
    assert_eq!(send(&app, c).await.0, StatusCode::CREATED);
    // And a body that is not JSON is still refused, token or not.
    let req = Request::post("/api/tenants/acme/deployments")
        .header("host", "dash.example:7474")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("name=x&image=y"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_write_attempt_is_in_the_audit_log() {
    let f = fixture();
    let (app, log) = router(&f, Some(Arc::new(token_file())), false);
    send(&app, get("/api/tenants", Some(ADMIN))).await;
    send(&app, create("acme", "cache", Some(ACME))).await;
    send(&app, create("globex", "cache", Some(ACME))).await;
    send(&app, delete("acme", "web", None)).await;
    let mut evil = delete("acme", "web", Some(ADMIN));
    evil.origin = Some("http://evil.example");
    send(&app, evil).await;
    send(&app, delete("acme", "cache", Some(ADMIN))).await;
    let records = log.records();
    // Reads are not audited; each write attempt is, allowed or not.
    let got: Vec<(&str, &str, &str, &str, u64, &str)> = records
        .iter()
        .map(|r| {
            (
                r["who"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                r["tenant"].as_str().unwrap(),
                r["deployment"].as_str().unwrap(),
                r["status"].as_u64().unwrap(),
                r["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("acme-ops", "create_deployment", "acme", "cache", 201, "ok"),
            (
                "acme-ops",
                "create_deployment",
                "globex",
                "cache",
                403,
                "forbidden"
            ),
            (
                "unauthenticated",
                "delete_deployment",
                "acme",
                "web",
                401,
                "unauthenticated"
            ),
            (
                "unauthenticated",
                "delete_deployment",
                "acme",
                "web",
                403,
                "origin_not_allowed"
            ),
            ("admin", "delete_deployment", "acme", "cache", 200, "ok"),
        ]
    );
    for r in &records {
        let at = r["at"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");
        // The token itself is never logged.
        assert!(!r.to_string().contains("token-0123"), "{r}");
    }
}

#[tokio::test]
async fn loopback_without_authentication_works_as_before() {
    let f = fixture();
    let (app, log) = router(&f, None, false);
    let (_, v, _) = send(&app, get("/api/config", None)).await;
    assert_eq!(
        (v["auth"].as_str(), v["all_tenants"].as_bool()),
        (Some("none"), Some(true))
    );
    assert_eq!(send(&app, get("/api/stats", None)).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, create("globex", "cache", None)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(log.records()[0]["who"], "anonymous");
}

// ---------- Kubernetes ----------

/// What the fake API server was asked, and its RBAC: alice administers
/// tenant-acme; root may do anything.
#[derive(Clone, Default)]
struct FakeApi {
    reviews: Arc<Mutex<Vec<Value>>>,
}

fn rbac_allows(user: &str, attrs: &Value) -> bool {
    if user == "root" {
        return true;
    }
    user == "alice"
        && attrs["group"] == "palisade.io"
        && attrs["resource"] == "tenantdeployments"
        && attrs["namespace"] == "tenant-acme"
        && ["list", "create", "delete"].contains(&attrs["verb"].as_str().unwrap_or(""))
}

async fn token_review(
    axum::extract::State(api): axum::extract::State<FakeApi>,
    axum::Json(req): axum::Json<Value>,
) -> axum::Json<Value> {
    api.reviews.lock().unwrap().push(req.clone());
    let user = match req["spec"]["token"].as_str() {
        Some("alice-sa-token") => Some(("alice", "4a1f-uid")),
        Some("root-sa-token") => Some(("root", "0000-uid")),
        _ => None,
    };
    // As the API server answers: the spec echoed, a status.
    let status = match user {
        Some((name, uid)) => json!({"authenticated": true, "user": {
            "username": name, "uid": uid,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/pod-name": ["dash-0"]}},
            "audiences": ["https://kubernetes.default.svc.cluster.local"]}),
        None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
    };
    axum::Json(
        json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null}, "spec": req["spec"], "status": status}),
    )
}

async fn subject_access_review(
    axum::extract::State(api): axum::extract::State<FakeApi>,
    axum::Json(req): axum::Json<Value>,
) -> axum::Json<Value> {
    api.reviews.lock().unwrap().push(req.clone());
    let spec = &req["spec"];
    let allowed = rbac_allows(
        spec["user"].as_str().unwrap_or(""),
        &spec["resourceAttributes"],
    );
    let status = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"acme-admins/tenant-acme\""})
    } else {
        json!({"allowed": false})
    };
    axum::Json(
        json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null}, "spec": spec, "status": status}),
    )
}

async fn fake_api_server() -> (FakeApi, String) {
    let api = FakeApi::default();
    let router = Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            axum::routing::post(token_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            axum::routing::post(subject_access_review),
        )
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (api, url)
}

fn kube_client(url: &str) -> kube::Client {
    let config = kube::Config::new(url.parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn kubernetes_auth_asks_token_review_then_subject_access_review() {
    let f = fixture();
    let (api, url) = fake_api_server().await;
    let auth = KubeAuthenticator::new(kube_client(&url));
    let (app, log) = router(&f, Some(Arc::new(auth)), false);
    let alice = Some("alice-sa-token");

    let (status, v, _) = send(&app, get("/api/tenants", Some("stolen-token"))).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    let (status, v, _) = send(&app, get("/api/tenants", alice)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(tenant_names(&v), ["acme"]);
    assert_eq!(
        send(&app, get("/api/stats", alice)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, create("acme", "cache", alice)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        send(&app, delete("globex", "shop", alice)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(deployments(&f.state, "globex"), ["shop"]);
    let (_, v, _) = send(&app, get("/api/tenants", Some("root-sa-token"))).await;
    assert_eq!(tenant_names(&v), ["acme", "globex"]);

    // What the API server was asked: the token once (then cached), and
    // per access the caller's identity and the Palisade resource.
    let reviews = api.reviews.lock().unwrap().clone();
    let token_reviews: Vec<&Value> = reviews
        .iter()
        .filter(|r| r["kind"] == "TokenReview")
        .collect();
    assert_eq!(token_reviews.len(), 3, "stolen, alice once, root");
    assert_eq!(token_reviews[1]["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(token_reviews[1]["spec"]["token"], "alice-sa-token");
    let sars: Vec<&Value> = reviews
        .iter()
        .filter(|r| r["kind"] == "SubjectAccessReview")
        .collect();
    let attrs = |r: &Value| {
        let a = &r["spec"]["resourceAttributes"];
        (
            r["spec"]["user"].as_str().unwrap().to_owned(),
            a["verb"].as_str().unwrap().to_owned(),
            a["resource"].as_str().unwrap().to_owned(),
            a["namespace"].as_str().unwrap_or("").to_owned(),
            a["name"].as_str().unwrap_or("").to_owned(),
        )
    };
    let asked: Vec<_> = sars.iter().map(|r| attrs(r)).collect();
    let s = |u: &str, v: &str, r: &str, n: &str, name: &str| {
        (
            u.to_owned(),
            v.to_owned(),
            r.to_owned(),
            n.to_owned(),
            name.to_owned(),
        )
    };
    assert_eq!(
        asked,
        [
            s("alice", "list", "tenants", "", ""),
            s("alice", "list", "tenantdeployments", "tenant-acme", ""),
            s("alice", "list", "tenantdeployments", "tenant-globex", ""),
            // /api/stats: list tenants again, from the cache.
            s(
                "alice",
                "create",
                "tenantdeployments",
                "tenant-acme",
                "cache"
            ),
            s(
                "alice",
                "delete",
                "tenantdeployments",
                "tenant-globex",
                "shop"
            ),
            s("root", "list", "tenants", "", ""),
        ]
    );
    for r in &sars {
        assert_eq!(r["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(r["spec"]["resourceAttributes"]["group"], "palisade.io");
        // The authenticated user's groups, uid and extra go to the authorizer.
        assert_eq!(
            r["spec"]["groups"],
            json!(["system:serviceaccounts", "system:authenticated"])
        );
        assert!(r["spec"]["uid"].as_str().unwrap().ends_with("-uid"));
        assert_eq!(
            r["spec"]["extra"]["authentication.kubernetes.io/pod-name"],
            json!(["dash-0"])
        );
    }
    let who: Vec<String> = log
        .records()
        .iter()
        .map(|r| format!("{} {}", r["who"], r["status"]))
        .collect();
    assert_eq!(who, ["\"alice\" 201", "\"alice\" 403"]);
}

#[tokio::test]
async fn kubernetes_auth_fails_closed_when_the_api_server_is_unreachable() {
    let f = fixture();
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (app, _) = router(
        &f,
        Some(Arc::new(KubeAuthenticator::new(kube_client(&url)))),
        false,
    );
    let (status, v, _) = send(&app, get("/api/tenants", Some("alice-sa-token"))).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable"),
        "{v}"
    );
    let (status, _, _) = send(&app, create("acme", "cache", Some("alice-sa-token"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(deployments(&f.state, "acme").len(), 2);
}
