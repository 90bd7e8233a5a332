//! Tunnel relay (splice and copy), upstream timeouts, the client keep-alive
//! idle timeout and the per-client-connection upstream, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use palisade_proxy::StaticResolver;
use palisade_proxy::relay::{Mode, TunnelEnd, relay_with};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Deterministic bytes, different per `seed`, so a shifted, dropped or
/// duplicated chunk is detected.
fn pattern(seed: u8, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let x = offset + i as u64;
        *b = ((x / 4099) as u8) ^ ((x.wrapping_mul(31)) as u8) ^ seed;
    }
}

async fn send_pattern(s: &mut (impl AsyncWriteExt + Unpin), seed: u8, total: u64) {
    let mut buf = vec![0u8; 100_003];
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(buf.len() as u64) as usize;
        pattern(seed, sent, &mut buf[..n]);
        s.write_all(&buf[..n]).await.unwrap();
        sent += n as u64;
    }
}

/// Read until EOF, checking every byte of the first `total` against the pattern;
/// returns what followed the pattern.
async fn expect_pattern(s: &mut (impl AsyncReadExt + Unpin), seed: u8, total: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 65_521];
    let mut want = vec![0u8; 65_521];
    let mut got = 0u64;
    let mut rest = Vec::new();
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        let take = ((total - got) as usize).min(n);
        pattern(seed, got, &mut want[..take]);
        assert!(
            buf[..take] == want[..take],
            "byte mismatch near offset {got}"
        );
        got += take as u64;
        rest.extend_from_slice(&buf[take..n]);
    }
    assert_eq!(got, total, "stream ended early");
    rest
}

/// A connected pair of loopback sockets.
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (b, _) = l.accept().await.unwrap();
    (a, b)
}

async fn relay_exact_both_ways_with_half_close(mode: Mode) {
    const UP: u64 = 40 * 1024 * 1024 + 17;
    const DOWN: u64 = 24 * 1024 * 1024 + 5;
    const TAIL: &[u8] = b"sent after the client's half-close";
    let (mut client, client_inner) = pair().await;
    let (upstream_inner, mut origin) = pair().await;
    let up = std::sync::Arc::new(AtomicU64::new(0));
    let down = std::sync::Arc::new(AtomicU64::new(0));
    let relay = {
        let (up, down) = (up.clone(), down.clone());
        tokio::spawn(async move {
            relay_with(
                mode,
                &client_inner,
                &upstream_inner,
                Duration::from_secs(30),
                &up,
                &down,
            )
            .await
        })
    };
    let origin_side = tokio::spawn(async move {
        let (mut r, mut w) = origin.split();
        // The origin sends while it receives, then answers once more after the
        // client has half-closed: the tunnel must still carry that.
        let ((), rest) = tokio::join!(
            send_pattern(&mut w, 0xa5, DOWN),
            expect_pattern(&mut r, 0x3c, UP)
        );
        assert!(rest.is_empty(), "extra bytes upstream");
        w.write_all(TAIL).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let (mut r, mut w) = client.split();
    let ((), rest) = within(60, "relay transfer", async {
        tokio::join!(
            async {
                send_pattern(&mut w, 0x3c, UP).await;
                w.shutdown().await.unwrap();
            },
            expect_pattern(&mut r, 0xa5, DOWN)
        )
    })
    .await;
    assert_eq!(rest, TAIL, "the answer after the half-close was lost");
    within(10, "origin side", origin_side).await.unwrap();
    let end = within(10, "relay end", relay).await.unwrap().unwrap();
    assert_eq!(end, TunnelEnd::Closed);
    assert_eq!(up.load(Ordering::Relaxed), UP);
    assert_eq!(down.load(Ordering::Relaxed), DOWN + TAIL.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_relay_moves_large_transfers_exactly_both_ways_and_honours_half_close() {
    relay_exact_both_ways_with_half_close(Mode::Splice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_relay_moves_large_transfers_exactly_both_ways_and_honours_half_close() {
    relay_exact_both_ways_with_half_close(Mode::Copy).await;
}

#[tokio::test]
async fn a_silent_tunnel_ends_after_the_idle_timeout_and_not_before() {
    let (_client, client_inner) = pair().await;
    let (upstream_inner, _origin) = pair().await;
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let start = Instant::now();
    let end = within(
        5,
        "idle tunnel",
        relay_with(
            Mode::Splice,
            &client_inner,
            &upstream_inner,
            Duration::from_millis(400),
            &up,
            &down,
        ),
    )
    .await
    .unwrap();
    assert_eq!(end, TunnelEnd::Idle);
    assert!(
        start.elapsed() >= Duration::from_millis(380),
        "{:?}",
        start.elapsed()
    );
}

/// Tenant `t` (source 127.0.0.2) may reach 127.0.0.10 to 127.0.0.13.
fn config(extra_timeouts: &str, ports: &[u16]) -> String {
    let ports = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
timeouts: {{ {extra_timeouts} }}
tenants:
- name: t
  sources: [{{ prefix: 127.0.0.2/32, deployment: web }}]
  allow_ports: [{ports}]
  allow_cidrs: [127.0.0.10/31, 127.0.0.12/31]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnel_echoes_32_mib_exactly_with_half_close_and_counts_bytes() {
    const N: u64 = 32 * 1024 * 1024 + 3;
    // An echo origin that half-closes after the client did.
    let echo = TcpListener::bind("127.0.0.11:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let proxy = start_proxy(&config("idle: 30s", &[echo_addr.port()]), None).await;
    let mut tunnel = connect_tunnel(proxy.addr, echo_addr).await;
    let (mut r, mut w) = tunnel.split();
    let ((), rest) = within(60, "echo through the tunnel", async {
        tokio::join!(
            async {
                send_pattern(&mut w, 7, N).await;
                w.shutdown().await.unwrap();
            },
            expect_pattern(&mut r, 7, N)
        )
    })
    .await;
    assert!(rest.is_empty());
    drop(tunnel);
    // The tunnel's bytes are counted for the tenant when it ends.
    let up = format!("palisade_proxy_bytes_total{{tenant=\"t\",direction=\"up\"}} {N}");
    let down = format!("palisade_proxy_bytes_total{{tenant=\"t\",direction=\"down\"}} {N}");
    within(10, "tunnel byte metrics", async {
        loop {
            let (_, text) = admin_get(proxy.admin, "/metrics").await;
            if text.contains(&up) && text.contains(&down) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Send `request` from tenant a's address and expect a 504 `upstream-timeout`
/// after the configured one-second timeout, not before and not much later.
async fn assert_504_after_about_a_second(proxy: &Running, request: &str) {
    let start = Instant::now();
    let head = raw("127.0.0.2", proxy.addr, request).await;
    let took = start.elapsed();
    assert_eq!(status_of(&head), 504, "{head}");
    assert_eq!(
        header_of(&head, "x-palisade-reason").as_deref(),
        Some("upstream-timeout")
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn an_origin_that_never_answers_gets_504_after_the_first_byte_timeout() {
    // Accepts and reads, never answers.
    let mute = TcpListener::bind("127.0.0.12:0").await.unwrap();
    let mute_addr = mute.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut s, _) = mute.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            held.push(s);
        }
    });
    let proxy = start_proxy(
        &config("first_byte: 1s, connect: 2s", &[mute_addr.port()]),
        None,
    )
    .await;
    let request = format!("GET http://{mute_addr}/ HTTP/1.1\r\nHost: {mute_addr}\r\n\r\n");
    assert_504_after_about_a_second(&proxy, &request).await;
}

#[tokio::test]
async fn a_destination_that_never_completes_the_handshake_gets_504_after_the_connect_timeout() {
    // A listener with a full accept queue: the kernel drops further SYNs, so a
    // connect neither succeeds nor is refused.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.13:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let full: SocketAddr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    let mut saturated = false;
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(full)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filler connect failed: {e}"),
            Err(_) => {
                saturated = true;
                break;
            }
        }
    }
    assert!(saturated, "could not fill the accept queue of {full}");
    let proxy = start_proxy(
        &config("connect: 1s, first_byte: 10s", &[full.port()]),
        None,
    )
    .await;
    let request = format!("CONNECT {full} HTTP/1.1\r\nHost: {full}\r\n\r\n");
    assert_504_after_about_a_second(&proxy, &request).await;
    drop(fillers);
}

#[tokio::test]
async fn an_idle_keep_alive_client_connection_is_closed_after_header_read() {
    let origin = Origin::start("127.0.0.10").await;
    let proxy = start_proxy(&config("header_read: 1s", &[origin.addr.port()]), None).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = sock.connect(proxy.addr).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url("/"),
        origin.addr
    );
    // Two requests 600 ms apart keep the connection (each within the window).
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"ok") {
            let n = within(5, "response", s.read(&mut buf)).await.unwrap();
            assert!(n > 0, "closed while in use");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(status_of(&String::from_utf8_lossy(&got)), 200);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // Then silence: the proxy closes it once header_read has passed.
    let idle_from = Instant::now() - Duration::from_millis(600);
    let n = within(5, "idle close", s.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "expected the proxy to close the idle connection");
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(900),
        "closed too early: {idle:?}"
    );
}

#[tokio::test]
async fn one_client_connection_alternating_origins_gets_the_right_answers() {
    let a = Origin::start("127.0.0.10").await;
    let b = Origin::start("127.0.0.11").await;
    let resolver = StaticResolver::new([
        (
            "a.test".to_string(),
            vec!["127.0.0.10".parse::<IpAddr>().unwrap()],
        ),
        (
            "b.test".to_string(),
            vec!["127.0.0.11".parse::<IpAddr>().unwrap()],
        ),
    ]);
    let proxy = start_proxy(
        &config("", &[a.addr.port(), b.addr.port()]),
        with_resolver(resolver),
    )
    .await;
    let url_a = format!("http://a.test:{}/headers", a.addr.port());
    let url_b = format!("http://b.test:{}/headers", b.addr.port());
    let out = curl(&[
        "-v",
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.2",
        &url_a,
        &url_b,
        &url_a,
        &url_b,
    ])
    .await;
    let reused = out.stderr.matches("Re-using existing connection").count()
        + out.stderr.matches("Reusing existing").count();
    assert!(
        reused >= 3,
        "curl should reuse its proxy connection: {}",
        out.stderr
    );
    let hosts: Vec<&str> = out
        .body
        .lines()
        .filter(|l| l.starts_with("host: "))
        .collect();
    assert_eq!(
        hosts,
        [
            format!("host: a.test:{}", a.addr.port()),
            format!("host: b.test:{}", b.addr.port()),
            format!("host: a.test:{}", a.addr.port()),
            format!("host: b.test:{}", b.addr.port()),
        ],
        "{out:?}"
    );
    // Each origin's connection went back to the pool and was picked up again.
    assert_eq!(a.connections(), 1);
    assert_eq!(b.connections(), 1);
}
