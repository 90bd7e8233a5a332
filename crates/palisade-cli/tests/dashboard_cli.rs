//! `palisade dashboard` and `palisade egress-check` as processes on real
//! sockets: flag errors, the read-only server, and the demo app going out
//! through a real `palisade proxy` to a loopback origin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dashboard_support;

use dashboard_support::*;
use serde_json::Value;
use std::process::Command;

fn fails(args: &[&str], code: i32, needle: &str) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    if code == 1 {
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
}

fn init(dir: &std::path::Path) -> std::path::PathBuf {
    let state = dir.join("state.db");
    palisade(&state, &["init", "--pool", "fd00:7::/48"]);
    palisade(
        &state,
        &["tenant", "create", "acme", "--egress-ip", "127.0.0.33"],
    );
    palisade(&state, &["create", "acme", "web", "nginx:alpine", "2"]);
    palisade(
        &state,
        &["create", "acme", "db", "postgres:16", "1", "--port", "5432"],
    );
    state
}

#[test]
fn dashboard_flag_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = init(dir.path());
    let s = state.to_str().unwrap();
    fails(
        &[
            "--state",
            s,
            "dashboard",
            "--proxy-metrics",
            "127.0.0.1:9128",
        ],
        1,
        "invalid --proxy-metrics",
    );
    fails(
        &["--state", s, "dashboard", "--proxy-metrics", "ftp://x/"],
        1,
        "not http or https",
    );
    fails(
        &["--state", "/nonexistent/state.db", "dashboard"],
        1,
        "palisade init",
    );
    fails(
        &["--state", s, "dashboard", "--listen", "localhost"],
        2,
        "--listen",
    );
    fails(
        &["egress-check", "--target", "nonsense"],
        1,
        "invalid target URL",
    );
    fails(
        &[
            "egress-check",
            "--target",
            "a=http://x/",
            "--target",
            "A=http://y/",
        ],
        1,
        "two targets",
    );
    fails(
        &["egress-check", "--timeout", "soon"],
        1,
        "invalid --timeout",
    );
    fails(&["egress-check", "--timeout", "0s"], 1, "more than zero");
    // Something already listening: a clear error, not a panic.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    fails(
        &["--state", s, "dashboard", "--listen", &addr],
        1,
        "failed to listen on",
    );
    let help = Command::new(BIN)
        .args(["dashboard", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "Examples:",
        "--allow-writes",
        "--token-file",
        "--kube-auth",
        "--public-read",
        "--audit-log",
        "TOKEN TENANT[,TENANT...]|*",
    ] {
        assert!(help.contains(flag), "{flag} missing from: {help}");
    }
}

/// Like `fails`, but a server that starts anyway is killed and reported
/// instead of hanging the test.
fn refuses(args: &[&str], code: i32, needle: &str) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} started serving instead of refusing");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn off_loopback_the_dashboard_refuses_to_start_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let state = init(dir.path());
    let s = state.to_str().unwrap();
    // Port 0 on every address: nothing is bound if the check works, and the
    // test does not depend on a free port.
    refuses(
        &[
            "--state",
            s,
            "dashboard",
            "--listen",
            "0.0.0.0:0",
            "--allow-writes",
        ],
        1,
        "refusing --allow-writes on 0.0.0.0:0, which is not a loopback address, without authentication",
    );
    refuses(
        &[
            "--state",
            s,
            "dashboard",
            "--listen",
            "0.0.0.0:0",
            "--allow-writes",
            "--public-read",
        ],
        1,
        "pass --token-file FILE or --kube-auth",
    );
    refuses(
        &["--state", s, "dashboard", "--listen", "[::]:0"],
        1,
        "or --public-read to let anyone who can reach it read every tenant",
    );
    // A token file that cannot be used is a clear error too.
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "short *\n").unwrap();
    let t = tokens.to_str().unwrap();
    fails(
        &[
            "--state",
            s,
            "dashboard",
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            t,
        ],
        1,
        "line 1: the token is shorter than 16 characters",
    );
    fails(
        &[
            "--state",
            s,
            "dashboard",
            "--token-file",
            "/nonexistent/tokens",
        ],
        1,
        "could not read token file /nonexistent/tokens",
    );
    fails(
        &["--state", s, "dashboard", "--token-file", t, "--kube-auth"],
        2,
        "cannot be used with",
    );

    // With a token file it starts off loopback, and the API wants the token.
    std::fs::write(&tokens, "0123456789abcdef0123456789 * ops\n").unwrap();
    let server = serve(
        &[
            "--state",
            s,
            "dashboard",
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            t,
        ],
        &[],
        dir.path().join("dashboard.log"),
    );
    let port = server.url.rsplit(':').next().unwrap();
    let url = format!("http://127.0.0.1:{port}/api/tenants");
    let curl = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(extra)
            .arg(&url)
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    match curl(&[]) {
        Ok(code) => {
            assert_eq!(code, "401");
            assert_eq!(
                curl(&["-H", "Authorization: Bearer 0123456789abcdef0123456789"]).unwrap(),
                "200"
            );
        }
        Err(e) => skip_or_fail(&format!("curl is not available: {e}")),
    }
}

#[test]
fn dashboard_serves_the_store_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = init(dir.path());
    let dash = serve(
        &[
            "--state",
            state.to_str().unwrap(),
            "dashboard",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
        dir.path().join("dashboard.log"),
    );
    assert!(dash.url.starts_with("http://127.0.0.1:"), "{}", dash.url);
    let (status, body) = http("GET", &format!("{}/api/tenants", dash.url));
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tenants"][0]["name"], "acme");
    assert_eq!(v["tenants"][0]["deployments"], 2);
    // The CLI writes while the dashboard serves: not blocked, and seen.
    palisade(&state, &["create", "acme", "api", "api:1", "1"]);
    let (_, body) = http("GET", &format!("{}/api/tenants/acme", dash.url));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["deployments"], 3);
    let (status, body) = http(
        "DELETE",
        &format!("{}/api/tenants/acme/deployments/web", dash.url),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read_only"));
    let (status, body) = http("GET", &format!("{}/", dash.url));
    assert_eq!(status, 200);
    assert!(body.contains("/assets/app.js"));
    // SIGTERM (what Kubernetes sends) stops it cleanly.
    let pid = dash.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut dash = dash;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = dash.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dashboard ignored SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn egress_check_goes_out_through_the_real_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let echo = Echo::start();
    let proxy = start_proxy(dir.path(), "127.0.0.33", echo.addr.port());
    let closed = free_port();
    let ip_target = format!("External IP=http://{}/ip", echo.addr);
    let denied_target = format!("Denied=http://127.0.0.1:{closed}/");
    let tunnel_target = format!("Tunnel=https://127.0.0.1:{closed}/");
    let proxy_url = format!("http://{}", proxy.listen);
    let app = serve(
        &[
            "egress-check",
            "--listen",
            "127.0.0.1:0",
            "--timeout",
            "5s",
            "--target",
            &ip_target,
            "--target",
            &denied_target,
            "--target",
            &tunnel_target,
        ],
        &[
            ("HTTP_PROXY", proxy_url.as_str()),
            ("HTTPS_PROXY", "http://acme:s3cret@127.0.0.1:1"),
            ("POD_NAME", "egress-check-7d9f"),
        ],
        dir.path().join("egress-check.log"),
    );

    assert_eq!(
        http("GET", &format!("{}/healthz", app.url)),
        (200, "ok\n".into())
    );
    let (status, body) = http("GET", &format!("{}/", app.url));
    assert_eq!(status, 200);
    assert!(body.contains("egress-check.js"));
    let (status, body) = http("GET", &format!("{}/api/info", app.url));
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["proxy"]["HTTP_PROXY"], proxy_url.as_str());
    assert_eq!(
        info["proxy"]["HTTPS_PROXY"], "http://acme:***@127.0.0.1:1",
        "password hidden"
    );
    assert_eq!(info["pod"]["POD_NAME"], "egress-check-7d9f");
    assert!(!info["hostname"].as_str().unwrap().is_empty());
    assert!(
        info["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["address"] == "127.0.0.1")
    );
    assert_eq!(info["targets"].as_array().unwrap().len(), 3);

    let (status, body) = http("POST", &format!("{}/api/check/external-ip", app.url));
    assert_eq!(status, 200);
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["status"], 200);
    assert_eq!(r["proxy"], proxy_url.as_str());
    // The origin saw the tenant's egress address, and the app reports it.
    assert_eq!(
        echo.seen(),
        ["127.0.0.33".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(r["address"], "127.0.0.33");
    assert!(r["elapsed_ms"].as_f64().unwrap() > 0.0);

    // A port the tenant may not use: the proxy's 403, explained with its reason.
    let (_, body) = http("POST", &format!("{}/api/check/denied", app.url));
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["ok"], false);
    assert_eq!(r["status"], 403);
    assert_eq!(r["error"]["kind"], "proxy_denied", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("port-not-allowed"),
        "{r}"
    );

    // HTTPS goes to HTTPS_PROXY, which is not listening.
    let (_, body) = http("POST", &format!("{}/api/check/tunnel", app.url));
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["error"]["kind"], "proxy_unreachable", "{r}");
    assert_eq!(r["proxy"], "http://acme:***@127.0.0.1:1");
    assert!(
        r["error"]["explanation"]
            .as_str()
            .unwrap()
            .contains("NetworkPolicy")
    );

    let (status, body) = http("POST", &format!("{}/api/check/nope", app.url));
    assert_eq!(status, 404, "{body}");
    assert_eq!(echo.seen().len(), 1, "nothing else reached the origin");

    // The proxy counted it, and the dashboard's egress page reads that.
    let state = init(dir.path());
    let metrics = format!("http://{}/metrics", proxy.admin);
    let dash = serve(
        &[
            "--state",
            state.to_str().unwrap(),
            "dashboard",
            "--listen",
            "127.0.0.1:0",
            "--proxy-metrics",
            &metrics,
        ],
        &[],
        dir.path().join("dashboard.log"),
    );
    let (status, body) = http("GET", &format!("{}/api/egress", dash.url));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let acme = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "acme")
        .unwrap();
    assert_eq!(acme["allowed"], 1, "{v}");
    assert_eq!(acme["denied"], 1, "{v}");
    assert_eq!(acme["denials"][0]["reason"], "port-not-allowed");
}

/// A fake Kubernetes API server on a real socket, one request per
/// connection (`Connection: close`): TokenReview knows `alice-token`
/// (user alice), SubjectAccessReview allows alice in `tenant-acme` only.
/// Returns its URL and the `Authorization` headers it was sent.
fn fake_api_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "authorization" => record.lock().unwrap().push(value.trim().to_owned()),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer = if path.contains("/tokenreviews") {
                let ok = req["spec"]["token"] == "alice-token";
                serde_json::json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {}, "spec": req["spec"],
                    "status": if ok { serde_json::json!({"authenticated": true,
                        "user": {"username": "alice", "uid": "1", "groups": ["system:authenticated"]}}) }
                        else { serde_json::json!({"error": "invalid bearer token"}) }})
            } else {
                let a = &req["spec"]["resourceAttributes"];
                let ok = req["spec"]["user"] == "alice" && a["namespace"] == "tenant-acme";
                serde_json::json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                    "metadata": {}, "spec": req["spec"], "status": {"allowed": ok}})
            };
            let text = answer.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

#[test]
fn kube_auth_asks_the_cluster_named_by_the_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let state = init(dir.path());
    palisade(&state, &["create", "globex", "shop", "shop:1"]);
    let s = state.to_str().unwrap();
    // No cluster at all: a clear error.
    let out = Command::new(BIN)
        .args(["--state", s, "dashboard", "--kube-auth"])
        .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--kube-auth: no Kubernetes API access"),
        "{err}"
    );

    let (api, asked_with) = fake_api_server();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {api}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: dashboard\n\
             current-context: fake\nusers:\n- name: dashboard\n  user:\n    token: dashboard-sa-token\n"
        ),
    )
    .unwrap();
    let server = serve(
        &[
            "--state",
            s,
            "dashboard",
            "--listen",
            "127.0.0.1:0",
            "--kube-auth",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        dir.path().join("dashboard.log"),
    );
    let curl = |token: &str| {
        Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("{}/api/tenants", server.url))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let answer = match curl("alice-token") {
        Ok(a) => a,
        Err(e) => return skip_or_fail(&format!("curl is not available: {e}")),
    };
    let (body, status) = answer.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{body}");
    let v: Value = serde_json::from_str(body).unwrap();
    let names: Vec<&str> = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme"], "alice sees only her tenant");
    assert!(curl("stolen-token").unwrap().ends_with("\n401"));
    // The reviews were made with the dashboard's own credentials.
    let asked = asked_with.lock().unwrap().clone();
    assert!(!asked.is_empty());
    assert!(
        asked.iter().all(|a| a == "Bearer dashboard-sa-token"),
        "{asked:?}"
    );
}
