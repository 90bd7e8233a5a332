//! Limits, timeouts, framing rejection and domain policy, seen from a client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use palisade_proxy::StaticResolver;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(port: u16) -> String {
    format!(
        r#"
timeouts: {{ header_read: 500ms, connect: 2s }}
tenants:
- name: rated
  sources: [{{ prefix: 127.0.0.7/32, deployment: web }}]
  allow_ports: [{port}]
  allow_cidrs: [127.0.0.10/32]
  limits: {{ requests_per_second: 1, burst: 2 }}
- name: narrow
  sources: [{{ prefix: 127.0.0.8/32, deployment: web }}]
  allow_ports: [{port}]
  allow_cidrs: [127.0.0.10/32]
  limits: {{ max_concurrent: 1 }}
- name: strict
  sources: [{{ prefix: 127.0.0.5/32, deployment: web }}]
  allow_ports: [{port}]
  allow_cidrs: [127.0.0.10/32]
  allow_domains: [good.test, '*.good.test']
  deny_domains: [bad.good.test]
- name: trial
  mode: report
  sources: [{{ prefix: 127.0.0.6/32, deployment: web }}]
  allow_ports: [{port}]
  allow_cidrs: [127.0.0.10/32]
  allow_domains: [good.test]
"#
    )
}

async fn setup() -> (Origin, Running) {
    let origin = Origin::start("127.0.0.10").await;
    let ip: IpAddr = "127.0.0.10".parse().unwrap();
    let names = ["good.test", "api.good.test", "bad.good.test", "other.test"];
    let resolver = StaticResolver::new(names.iter().map(|n| (n.to_string(), vec![ip])));
    let proxy = start_proxy(&config(origin.addr.port()), with_resolver(resolver)).await;
    (origin, proxy)
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let (origin, proxy) = setup().await;
    let url = origin.url("/");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let out = curl(&[
            "-x",
            &proxy.url(),
            "--interface",
            "127.0.0.7",
            "-D",
            "-",
            &url,
        ])
        .await;
        if out.status == 429 {
            retry_after = out
                .body
                .lines()
                .find_map(|l| l.strip_prefix("retry-after: ").map(str::to_string));
        }
        statuses.push(out.status);
    }
    assert_eq!(statuses, vec![200, 200, 429]);
    assert_eq!(retry_after.as_deref().map(str::trim), Some("1"));
}

#[tokio::test]
async fn concurrency_limit_counts_open_tunnels() {
    let (origin, proxy) = setup().await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.8:0".parse().unwrap()).unwrap();
    let mut tunnel = sock.connect(proxy.addr).await.unwrap();
    tunnel
        .write_all(format!("CONNECT {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = within(5, "CONNECT answer", tunnel.read(&mut buf))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let busy = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.8",
        &origin.url("/"),
    ])
    .await;
    assert_eq!(busy.status, 429, "{busy:?}");
    drop(tunnel);
    // The permit comes back once the tunnel is torn down.
    let mut status = 0;
    for _ in 0..50 {
        status = curl(&[
            "-x",
            &proxy.url(),
            "--interface",
            "127.0.0.8",
            &origin.url("/"),
        ])
        .await
        .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_slow_header_client_is_cut_off_while_others_are_served() {
    let (origin, proxy) = setup().await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.5:0".parse().unwrap()).unwrap();
    let mut slow = sock.connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET http://good.test/ HTTP/1.1\r\nHost: good")
        .await
        .unwrap();
    let started = Instant::now();
    let quick = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.5",
        &format!("http://good.test:{}/", origin.addr.port()),
    ])
    .await;
    assert_eq!(quick.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "normal client waited {:?}",
        started.elapsed()
    );
    let mut buf = Vec::new();
    within(
        5,
        "slow-header client was never timed out",
        slow.read_to_end(&mut buf),
    )
    .await
    .ok();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn ambiguous_framing_and_obsolete_folding_are_rejected_with_400() {
    let (origin, proxy) = setup().await;
    let target = format!("http://good.test:{}/echo", origin.addr.port());
    for (what, req) in [
        (
            "CL+TE",
            format!(
                "POST {target} HTTP/1.1\r\nHost: good.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "two CL",
            format!(
                "POST {target} HTTP/1.1\r\nHost: good.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            ),
        ),
        (
            "obs-fold",
            format!("GET {target} HTTP/1.1\r\nHost: good.test\r\nX-A: a\r\n b\r\n\r\n"),
        ),
        (
            // RFC 9112 section 2.2: a server ignores empty lines before the
            // request line (httparse does), so the sniffer must too.
            "CRLF, then CL+TE",
            format!(
                "\r\n\r\nPOST {target} HTTP/1.1\r\nHost: good.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
    ] {
        let head = raw("127.0.0.5", proxy.addr, &req).await;
        assert_eq!(status_of(&head), 400, "{what}: {head}");
    }
    assert_eq!(
        origin.connections(),
        0,
        "nothing ambiguous reached the origin"
    );
}

/// Requests a client may pipeline before an ambiguous one, each sent with the
/// ambiguous one in a single `write` (so the proxy reads them together).
fn leaders(target: &str) -> [(&'static str, String); 4] {
    [
        (
            "GET",
            format!("GET {target} HTTP/1.1\r\nHost: good.test\r\n\r\n"),
        ),
        (
            // The body imitates a head: it must be skipped, not judged.
            "POST with a Content-Length body",
            format!(
                "POST {target} HTTP/1.1\r\nHost: good.test\r\nContent-Length: 40\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: x"
            ),
        ),
        (
            "POST with a chunked body and a trailer",
            format!(
                "POST {target} HTTP/1.1\r\nHost: good.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;ext=1\r\nhello\r\n3\r\n\r\n\n\r\n0\r\nX-Trailer: 1\r\n\r\n"
            ),
        ),
        (
            "two GETs",
            format!(
                "GET {target} HTTP/1.1\r\nHost: good.test\r\n\r\n\
                 GET {target} HTTP/1.1\r\nHost: good.test\r\n\r\n"
            ),
        ),
    ]
}

#[tokio::test]
async fn a_pipelined_ambiguous_request_is_refused_like_one_sent_alone() {
    let (origin, proxy) = setup().await;
    let target = format!("http://good.test:{}/echo", origin.addr.port());
    let ambiguous = [
        format!(
            "POST {target} HTTP/1.1\r\nHost: good.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!(
            "POST {target} HTTP/1.1\r\nHost: good.test\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n0\r\n\r\n"
        ),
        format!(
            "\r\nPOST {target} HTTP/1.1\r\nHost: good.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!(
            "POST {target} HTTP/1.1\r\nHost: good.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        ),
        format!("GET {target} HTTP/1.1\r\nHost: good.test\r\nX-A: a\r\n b\r\n\r\n"),
    ];
    for (what, leader) in leaders(&target) {
        let good = leader.matches(" HTTP/1.1").count();
        for bad in &ambiguous {
            let before = origin.requests();
            let stream = format!("{leader}{bad}");
            let (resps, closed) =
                raw_exchange("127.0.0.5", proxy.addr, stream.as_bytes(), good + 1).await;
            let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
            let mut want = vec![200; good];
            want.push(400);
            assert_eq!(statuses, want, "{what} then {bad:?}: {resps:?}");
            assert!(
                closed,
                "{what} then {bad:?}: the connection must close after the 400"
            );
            assert_eq!(
                origin.requests() - before,
                good,
                "{what} then {bad:?}: only the leaders reach the origin"
            );
        }
    }
}

#[tokio::test]
async fn a_request_pipelined_behind_a_refused_connect_is_judged_too() {
    let (origin, proxy) = setup().await;
    let port = origin.addr.port();
    // other.test is outside the tenant's domains: the CONNECT is refused and
    // hyper goes on reading HTTP requests from the connection.
    let stream = format!(
        "CONNECT other.test:{port} HTTP/1.1\r\nHost: other.test:{port}\r\n\r\n\
         POST http://good.test:{port}/echo HTTP/1.1\r\nHost: good.test\r\n\
         Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    let (resps, closed) = raw_exchange("127.0.0.5", proxy.addr, stream.as_bytes(), 2).await;
    let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [403, 400], "{resps:?}");
    assert!(closed);
    assert_eq!(origin.requests(), 0);
}

#[tokio::test]
async fn pipelined_well_framed_requests_are_all_forwarded() {
    let (origin, proxy) = setup().await;
    let target = format!("http://good.test:{}/echo", origin.addr.port());
    let mut stream = String::new();
    for (_, leader) in leaders(&target) {
        stream.push_str(&leader);
    }
    let want = stream.matches(" HTTP/1.1").count();
    let (resps, closed) = raw_exchange("127.0.0.5", proxy.addr, stream.as_bytes(), want).await;
    let bodies: Vec<String> = resps
        .iter()
        .map(|r| format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
        .collect();
    // `/echo` answers with the length of the body it received.
    assert_eq!(
        bodies,
        ["200 0", "200 40", "200 8", "200 0", "200 0"],
        "{resps:?}"
    );
    assert!(!closed, "a clean pipeline keeps the connection");
    assert_eq!(origin.requests(), want);
}

#[tokio::test]
async fn enforce_mode_denies_by_domain_and_port_while_report_mode_only_logs() {
    let (origin, proxy) = setup().await;
    let port = origin.addr.port();
    let get = |src: &'static str, host: &'static str, port: u16| {
        let proxy = proxy.url();
        async move {
            curl(&[
                "-x",
                &proxy,
                "--interface",
                src,
                "-D",
                "-",
                &format!("http://{host}:{port}/"),
            ])
            .await
        }
    };
    assert_eq!(get("127.0.0.5", "good.test", port).await.status, 200);
    assert_eq!(get("127.0.0.5", "api.good.test", port).await.status, 200);
    let bad = get("127.0.0.5", "bad.good.test", port).await;
    assert_eq!(bad.status, 403);
    assert!(
        bad.body.contains("x-palisade-reason: domain-denied"),
        "{bad:?}"
    );
    let other = get("127.0.0.5", "other.test", port).await;
    assert!(
        other.body.contains("x-palisade-reason: domain-not-allowed"),
        "{other:?}"
    );
    let wrong_port = get("127.0.0.5", "good.test", 1).await;
    assert!(
        wrong_port
            .body
            .contains("x-palisade-reason: port-not-allowed"),
        "{wrong_port:?}"
    );
    // Report mode lets the same request through and counts it as a report.
    assert_eq!(get("127.0.0.6", "other.test", port).await.status, 200);
    let (_, metrics) = admin_get(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"tenant="trial",decision="report",reason="domain-not-allowed""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tenant="strict",decision="deny",reason="domain-denied""#),
        "{metrics}"
    );
}
