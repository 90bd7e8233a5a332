//! The dashboard and the egress-check demo app in headless Chromium.
//!
//! Starts the real servers — `palisade dashboard` over a store made with the
//! CLI, `palisade proxy` whose tenant `acme` is whoever connects from
//! 127.0.0.1 and leaves from 127.0.0.33, a loopback echo origin that
//! answers with the address it saw, and `palisade egress-check` with
//! `HTTP_PROXY` pointing at the proxy — then runs
//! `crates/palisade-dashboard/browser/dashboard.mjs` (Playwright driving
//! Debian's /usr/bin/chromium) and checks what it saw against the servers.
//! Screenshots land in `target/browser-screenshots/`.
//!
//! Needs node, the browser project's `npm ci` (scripts/test.sh runs it) and
//! chromium; without them it prints SKIPPED, and fails under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dashboard_support;

use dashboard_support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../palisade-dashboard/browser")
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("browser-screenshots")
}

fn prerequisites() -> Result<(), String> {
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Err("node is not installed (apt-get install nodejs npm)".into()),
    }
    if !Path::new(CHROMIUM).exists() {
        return Err(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            browser_dir().display()
        ));
    }
    Ok(())
}

#[test]
fn dashboard_and_egress_check_in_chromium() {
    if let Err(why) = prerequisites() {
        skip_or_fail(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let st = |args: &[&str]| palisade(&state, args);
    st(&["init", "--pool", "fd00:42::/48"]);
    st(&[
        "tenant",
        "create",
        "acme",
        "--egress-ip",
        "127.0.0.33",
        "--node-pool",
        "acme-pool",
    ]);
    st(&["create", "acme", "web", "nginx:alpine", "3"]);
    st(&["create", "acme", "api", "api:1", "2", "--port", "8080"]);
    st(&["create", "acme", "db", "postgres:16", "1", "--port", "5432"]);
    st(&["allow", "acme", "api", "db", "--port", "5432"]);
    st(&["allow", "acme", "web", "api"]);
    st(&["create", "globex", "shop", "shop:2"]);
    st(&["create", "globex", "tmp", "tmp:1"]);
    st(&["delete", "globex", "tmp"]);
    // A lab report with two disagreements: web reached db, which the model
    // denies (the dataplane differs); the rendered objects let db reach
    // api, which the model denies (the objects differ, naming the rule).
    let lab = dir.path().join("lab");
    std::fs::create_dir_all(&lab).unwrap();
    std::fs::write(
        lab.join("verify.json"),
        r#"{"generated_at": "2026-11-25T12:00:00Z", "probes": [
          {"from": "acme/api", "to": "acme/db", "port": 5432, "expected": true, "observed": true, "reason": "allow rule"},
          {"from": "acme/web", "to": "acme/db", "port": 5432, "expected": false, "observed": true, "reason": "default deny"},
          {"from": "acme/db", "to": "acme/api", "port": 8080, "expected": false, "observed": false, "reason": "default deny",
           "objects": {"allowed": true, "egress": "allow by CiliumNetworkPolicy tenant-acme/deployment-db spec.egress[0]", "ingress": "allow by CiliumNetworkPolicy tenant-acme/deployment-api spec.ingress[1]"}}
        ]}"#,
    )
    .unwrap();

    let echo = Echo::start();
    let proxy = start_proxy(dir.path(), "127.0.0.33", echo.addr.port());
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
    let target = format!("External IP=http://{}/ip", echo.addr);
    let proxy_url = format!("http://{}", proxy.listen);
    let app = serve(
        &[
            "egress-check",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &target,
        ],
        &[("HTTP_PROXY", proxy_url.as_str())],
        dir.path().join("egress-check.log"),
    );

    // The writable dashboard requires a token; this one may see and change acme only.
    let login_token = "acme-7d1c4f0e9b2a63d58e0f1a2b";
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# test tokens\n{login_token} acme acme-ops\nadmin-0123456789abcdef01 * admin\n"),
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    let writable = serve(
        &[
            "--state",
            state.to_str().unwrap(),
            "dashboard",
            "--listen",
            "127.0.0.1:0",
            "--allow-writes",
            "--token-file",
            tokens.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        &[],
        dir.path().join("dashboard-writes.log"),
    );
    let shots = screenshot_dir();
    let out = Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .current_dir(browser_dir())
        .env("DASHBOARD_URL", &dash.url)
        .env("EGRESS_CHECK_URL", &app.url)
        .env("TENANT", "acme")
        .env("EXPECT_TENANTS", "2")
        .env("EXPECT_DEPLOYMENTS", "3")
        .env("EXPECT_CELLS", "9")
        .env("EXPECT_DISAGREEMENTS", "2")
        .env("EXPECT_CAPACITY", "281474976710656")
        .env("SCREENSHOT_DIR", &shots)
        .env("WRITABLE_DASHBOARD_URL", &writable.url)
        .env("LOGIN_TOKEN", login_token)
        .env("CHROMIUM", CHROMIUM)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser checks failed:\n{stderr}\n{stdout}\ndashboard log: {}\negress-check log: {}",
        std::fs::read_to_string(&dash.log).unwrap_or_default(),
        std::fs::read_to_string(&app.log).unwrap_or_default()
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    // The matrix the browser drew is the policy model's: web->api allowed
    // (all ports), api->db allowed on db's only port, the rest denied
    // except each deployment to itself.
    assert_eq!(seen["matrix_cells"], 9);
    let states: Vec<&str> = seen["matrix_states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // Rows/columns: api, db, web.
    assert_eq!(
        states,
        [
            "allowed", "allowed", "denied", // api -> api, db, web
            "denied", "allowed", "denied", // db -> ...
            "allowed", "denied", "allowed", // web -> ...
        ]
    );
    assert_eq!(seen["matrix_disagreements"], 2);
    let agreements: Vec<&str> = seen["matrix_agreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        agreements,
        [
            "unprobed",
            "agree-allow",
            "unprobed", // api -> api, db, web
            "disagree",
            "unprobed",
            "unprobed", // db -> ...
            "unprobed",
            "disagree",
            "unprobed", // web -> ...
        ]
    );
    // The page lists each disagreement with the leg that differs, and the
    // objects' one names the object and rule.
    let list = seen["matrix_disagreement_list"].as_array().unwrap();
    let differs: Vec<&str> = list
        .iter()
        .map(|l| l["differs"].as_str().unwrap())
        .collect();
    assert_eq!(differs, ["objects", "dataplane"], "{list:?}");
    let objects = list[0]["text"].as_str().unwrap();
    assert!(
        objects.contains("acme/db → acme/api port 8080")
            && objects.contains(
                "ingress allow by CiliumNetworkPolicy tenant-acme/deployment-api spec.ingress[1]"
            ),
        "{objects}"
    );

    // The address the page showed is the one the origin saw: the tenant's
    // egress IP, not the pod's own 127.0.0.1.
    let origin_saw = echo.seen();
    assert_eq!(
        origin_saw.len(),
        1,
        "exactly one request reached the origin"
    );
    assert_eq!(seen["address"], origin_saw[0].to_string());
    assert_eq!(seen["address"], "127.0.0.33");
    assert_eq!(seen["proxy_shown"], proxy_url.as_str());

    // And the dashboard's egress page counted that request for acme.
    assert_eq!(seen["egress_requests"], 1);
    assert_eq!(seen["egress_allowed"], 1);

    // The UI's create and delete went through the store: the deployment
    // got the next subnet and is gone again, and the store is sound.
    assert!(
        seen["created_subnet"]
            .as_str()
            .unwrap()
            .starts_with("fd00:42:"),
        "{seen}"
    );
    assert_eq!(seen["deployments_after_delete"], 3);

    // The browser had to log in (a wrong token was refused), acted as the
    // token's holder, saw only its tenant, and the audit log says who did what.
    assert_eq!(seen["wrong_token_refused"], true);
    assert_eq!(seen["login_user"], "acme-ops");
    assert_eq!(seen["scoped_tenants"], serde_json::json!(["acme"]));
    assert_eq!(seen["logged_out"], true);
    let records: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{} {} {}/{} {}",
                r["who"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                r["tenant"].as_str().unwrap(),
                r["deployment"].as_str().unwrap(),
                r["status"]
            )
        })
        .collect();
    assert_eq!(
        done,
        [
            "acme-ops create_deployment acme/cache 201",
            "acme-ops delete_deployment acme/cache 200"
        ]
    );
    let list = palisade(&state, &["-o", "json", "list", "--tenant", "acme"]);
    assert!(!list.contains("cache"), "{list}");
    assert!(palisade(&state, &["check"]).starts_with("ok:"));

    for shot in [
        "overview",
        "tenant",
        "matrix",
        "egress-check",
        "egress",
        "tenant-writes",
        "scoped-overview",
    ] {
        let p = shots.join(format!("{shot}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", p.display());
    }
}
