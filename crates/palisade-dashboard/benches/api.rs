//! Dashboard API latency over a large store: builds a store of
//! `BENCH_DEPLOYMENTS` deployments (default 100000) across 1000 tenants,
//! then serves each endpoint in-process and prints median and p95 times;
//! then the same behind a token file of one token per tenant (plus one for
//! everything), to show what authentication and tenant scoping cost.
//!
//! `cargo bench -p palisade-dashboard --bench api`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use palisade_core::Pool;
use palisade_core::allocator::Timestamp;
use palisade_dashboard::{Config, TokenFile};
use palisade_store::{NewDeployment, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn main() {
    let n: usize = std::env::var("BENCH_DEPLOYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tenants = 1000.min(n.max(1));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let started = Instant::now();
    {
        let mut s = Store::open_or_create(&state).unwrap();
        let pool = Pool::new(
            Pool::parse_cidr("fd00:9::/40").unwrap(),
            "96".parse().unwrap(),
            Duration::ZERO,
        )
        .unwrap();
        s.init(&pool, false, Timestamp(0)).unwrap();
        let batch: Vec<NewDeployment> = (0..n)
            .map(|i| NewDeployment {
                tenant: format!("t{}", i % tenants).parse().unwrap(),
                name: format!("d{i}").parse().unwrap(),
                image: "nginx:alpine".parse().unwrap(),
                replicas: 2u32.try_into().unwrap(),
                ports: vec![],
                labels: Default::default(),
                workload: Default::default(),
            })
            .collect();
        for chunk in batch.chunks(50_000) {
            s.create_deployments(chunk, Timestamp(1)).unwrap();
        }
    }
    println!(
        "store: {n} deployments in {tenants} tenants ({:.1} s to build)",
        started.elapsed().as_secs_f64()
    );
    let app = palisade_dashboard::router(Config::new(state.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "endpoint", "median ms", "p95 ms", "bytes"
    );
    for path in [
        "/api/stats",
        "/api/tenants",
        "/api/tenants/t7",
        "/api/matrix?tenant=t7",
        "/api/history?limit=1000",
        "/",
    ] {
        measure(&rt, &app, path, None);
    }

    // One token per tenant and one for everything: the file's size is what
    // the constant-time lookup scans on every request.
    let mut text = String::from("platform-token-0123456789 * platform\n");
    for t in 0..tenants {
        text.push_str(&format!("tenant-token-{t:06}-0123456789 t{t} t{t}-ops\n"));
    }
    let tokens = TokenFile::parse(&text, Path::new("bench")).unwrap();
    lookup_times(&rt, &tokens, tenants);
    let mut config = Config::new(state);
    config.auth = Some(Arc::new(tokens));
    let authed = palisade_dashboard::router(config);
    let scoped = "tenant-token-000007-0123456789";
    println!("with --token-file ({} tokens):", tenants + 1);
    for (path, token, who) in [
        ("/api/stats", "platform-token-0123456789", "platform"),
        ("/api/tenants", "platform-token-0123456789", "platform"),
        ("/api/tenants", scoped, "t7 only"),
        ("/api/tenants/t7", scoped, "t7 only"),
        ("/api/matrix?tenant=t7", scoped, "t7 only"),
    ] {
        print!("{who:<9} ");
        measure(&rt, &authed, path, Some(token));
    }
}

fn measure(rt: &tokio::runtime::Runtime, app: &axum::Router, path: &str, token: Option<&str>) {
    let mut times = Vec::new();
    let mut bytes = 0;
    // A matrix above MAX_MATRIX deployments is refused (400) by design.
    let mut status = 0;
    for _ in 0..25 {
        let t = Instant::now();
        let resp = rt
            .block_on(app.clone().oneshot(request(path, token)))
            .unwrap();
        status = resp.status().as_u16();
        bytes = rt
            .block_on(resp.into_body().collect())
            .unwrap()
            .to_bytes()
            .len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{path:<28} {:>10.2} {:>10.2} {bytes:>10}  HTTP {status}",
        times[times.len() / 2],
        times[times.len() * 95 / 100]
    );
}

/// The token lookup alone: the first entry, the last, and no entry at all
/// should take the same time, since every entry is compared every time.
fn lookup_times(rt: &tokio::runtime::Runtime, tokens: &TokenFile, tenants: usize) {
    use palisade_dashboard::Authenticator;
    let last = format!("tenant-token-{:06}-0123456789", tenants - 1);
    for (what, token) in [
        ("first entry", "platform-token-0123456789"),
        ("last entry", last.as_str()),
        ("no entry", "platform-token-0123456780"),
    ] {
        let rounds = 2000;
        let t = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(rt.block_on(tokens.authenticate(token)).unwrap());
        }
        println!(
            "token lookup, {what:<12} {:>8.1} µs",
            t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
        );
    }
}

fn request(path: &str, token: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::empty()).unwrap()
}
