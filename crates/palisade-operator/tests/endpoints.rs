//! The health and metrics endpoints over a real socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_operator::metrics::Metrics;
use palisade_operator::run::{Health, serve_endpoints};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let server = tokio::spawn(serve_endpoints(listener, metrics.clone(), health.clone()));

    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    health.set_ready(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    assert_eq!(get(addr, "/nope").await.0, 404);
    // Dead controllers are not healthy (the kubelet restarts the pod).
    health.fail("the tenant controller stopped");
    let (code, body) = get(addr, "/healthz").await;
    assert_eq!((code, body.trim()), (503, "the tenant controller stopped"));
    assert_eq!(get(addr, "/readyz").await.0, 503);

    metrics.observe("tenant", 0.02, true);
    metrics.observe("tenant", 0.5, false);
    metrics.claim_conflicts.inc();
    metrics.set_pool(1 << 48, 3);
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "palisade_operator_reconciles_total{controller=\"tenant\"} 2",
        "palisade_operator_reconcile_errors_total{controller=\"tenant\"} 1",
        "palisade_operator_reconcile_duration_seconds_count{controller=\"tenant\"} 2",
        "palisade_operator_claim_conflicts_total 1",
        "palisade_operator_subnets_allocated 3.0",
        "palisade_operator_subnets_free 281474976710653.0",
    ] {
        assert!(body.contains(line), "{line} not in:\n{body}");
    }
    server.abort();
}
