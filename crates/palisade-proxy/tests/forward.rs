//! End-to-end behaviour with real sockets and real curl: forwarding, tunnels,
//! tenant identification, egress binding and the SSRF deny rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;

use palisade_proxy::StaticResolver;
use support::*;

/// Tenants: alpha (127.0.0.2, egress .20, may reach all loopback but .99),
/// beta (127.0.0.3, egress .30, may reach only the two origins),
/// gamma (no prefix, Basic credentials ci:s3cret, egress .40).
fn config(ports: &[u16]) -> String {
    let ports = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // Argon2id hash of "s3cret".
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$O/Z81KLM/IgRWNuyyAMoGw$0fY4T6Tn2UG9C5TLLSnk/E7CE1KRYknnqXX6X77raCI";
    format!(
        r#"
timeouts: {{ connect: 2s, first_byte: 5s, header_read: 2s, idle: 30s, shutdown_grace: 2s }}
tenants:
- name: alpha
  sources: [{{ prefix: 127.0.0.2/32, deployment: web }}]
  egress: {{ ipv4: 127.0.0.20 }}
  allow_ports: [{ports}]
  allow_cidrs: [127.0.0.0/8]
  deny_cidrs: [127.0.0.99/32]
- name: beta
  sources: [{{ prefix: 127.0.0.3/32, deployment: api }}]
  egress: {{ ipv4: 127.0.0.30 }}
  allow_ports: [{ports}]
  allow_cidrs: [127.0.0.10/32, 127.0.0.11/32]
- name: gamma
  credentials: [{{ username: ci, password_hash: '{hash}' }}]
  egress: {{ ipv4: 127.0.0.40 }}
  allow_ports: [{ports}]
  allow_cidrs: [127.0.0.10/32]
"#
    )
}

async fn setup() -> (Origin, Running) {
    let origin = Origin::start("127.0.0.10").await;
    let proxy = start_proxy(
        &config(&[origin.addr.port()]),
        with_resolver(StaticResolver::new([
            (
                "origin.test".to_string(),
                vec!["127.0.0.10".parse::<IpAddr>().unwrap()],
            ),
            (
                "internal.test".to_string(),
                vec!["127.0.0.1".parse().unwrap()],
            ),
            (
                "mixed.test".to_string(),
                vec!["127.0.0.10".parse().unwrap(), "127.0.0.1".parse().unwrap()],
            ),
        ])),
    )
    .await;
    (origin, proxy)
}

#[tokio::test]
async fn tenants_are_identified_by_source_and_leave_from_their_own_egress_address() {
    let (origin, proxy) = setup().await;
    let url = origin.url("/peer");
    let a = curl(&["-x", &proxy.url(), "--interface", "127.0.0.2", &url]).await;
    assert_eq!((a.status, a.body.as_str()), (200, "127.0.0.20"), "{a:?}");
    let b = curl(&["-x", &proxy.url(), "--interface", "127.0.0.3", &url]).await;
    assert_eq!((b.status, b.body.as_str()), (200, "127.0.0.30"), "{b:?}");
    // Attribution shows in the metrics by tenant.
    let (_, metrics) = admin_get(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"tenant="alpha",decision="allow""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tenant="beta",decision="allow""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn connect_tunnel_reaches_a_tls_origin_from_the_tenant_egress_address() {
    let origin = Origin::start("127.0.0.10").await;
    let tls = TlsOrigin::start("127.0.0.11").await;
    let proxy = start_proxy(&config(&[origin.addr.port(), tls.addr.port()]), None).await;
    let url = format!("https://{}/peer", tls.addr);
    let a = curl(&["-k", "-x", &proxy.url(), "--interface", "127.0.0.2", &url]).await;
    assert_eq!((a.status, a.body.as_str()), (200, "127.0.0.20"), "{a:?}");
    let b = curl(&["-k", "-x", &proxy.url(), "--interface", "127.0.0.3", &url]).await;
    assert_eq!((b.status, b.body.as_str()), (200, "127.0.0.30"), "{b:?}");
    // Large download through the tunnel arrives intact.
    let big = curl(&[
        "-k",
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.2",
        &format!("https://{}/bytes/5000000", tls.addr),
    ])
    .await;
    assert_eq!(big.body.len(), 5_000_000, "{}", big.stderr);
}

#[tokio::test]
async fn keep_alive_reuses_the_client_connection_and_the_pooled_upstream() {
    let (origin, proxy) = setup().await;
    let url = origin.url("/peer");
    let out = curl(&[
        "-v",
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.2",
        &url,
        &url,
        &url,
    ])
    .await;
    assert!(
        out.stderr.contains("Re-using existing connection")
            || out.stderr.contains("Reusing existing"),
        "{}",
        out.stderr
    );
    assert_eq!(out.body.matches("127.0.0.20").count(), 3, "{out:?}");
    assert_eq!(
        origin.connections(),
        1,
        "three requests should share one upstream connection"
    );
}

#[tokio::test]
async fn pooled_connections_are_not_shared_between_tenants() {
    let (origin, proxy) = setup().await;
    let url = origin.url("/peer");
    for (src, want) in [
        ("127.0.0.2", "127.0.0.20"),
        ("127.0.0.3", "127.0.0.30"),
        ("127.0.0.2", "127.0.0.20"),
        ("127.0.0.3", "127.0.0.30"),
    ] {
        let out = curl(&["-x", &proxy.url(), "--interface", src, &url]).await;
        assert_eq!(out.body, want, "{out:?}");
    }
    assert_eq!(origin.connections(), 2, "one pooled upstream per tenant");
}

#[tokio::test]
async fn large_bodies_flow_both_ways_and_chunked_uploads_work() {
    let (origin, proxy) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("up.bin");
    std::fs::write(&file, vec![7u8; 20 * 1024 * 1024]).unwrap();
    let data = format!("@{}", file.display());
    let up = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.2",
        "--data-binary",
        &data,
        &origin.url("/echo"),
    ])
    .await;
    assert_eq!((up.status, up.body.as_str()), (200, "20971520"), "{up:?}");
    let chunked = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.2",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        &origin.url("/echo"),
    ])
    .await;
    assert_eq!(
        (chunked.status, chunked.body.as_str()),
        (200, "20971520"),
        "{chunked:?}"
    );
    let down = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.2",
        &origin.url("/bytes/20000000"),
    ])
    .await;
    assert_eq!(down.status, 200);
    assert_eq!(down.body.len(), 20_000_000);
}

#[tokio::test]
async fn proxy_authorization_is_never_forwarded_and_via_is_added() {
    let (origin, proxy) = setup().await;
    let out = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.2",
        "-U",
        "someone:else",
        "-H",
        "Connection: x-hop",
        "-H",
        "X-Hop: 1",
        "-H",
        "X-Keep: 1",
        &origin.url("/headers"),
    ])
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    let body = out.body.to_ascii_lowercase();
    assert!(!body.contains("proxy-authorization"), "{body}");
    assert!(!body.contains("x-hop"), "{body}");
    assert!(!body.contains("proxy-connection"), "{body}");
    assert!(body.contains("x-keep: 1"), "{body}");
    assert!(body.contains("via: 1.1 palisade"), "{body}");
    assert!(
        body.contains("target: /headers"),
        "origin must get origin-form: {body}"
    );
}

#[tokio::test]
async fn the_origin_gets_the_target_authority_as_its_only_host() {
    let (origin, proxy) = setup().await;
    let authority = origin.addr.to_string();
    for host in ["elsewhere.test", authority.as_str()] {
        let out = curl(&[
            "-x",
            &proxy.url(),
            "--interface",
            "127.0.0.2",
            "-H",
            &format!("Host: {host}"),
            &origin.url("/headers"),
        ])
        .await;
        assert_eq!(out.status, 200, "{out:?}");
        let hosts: Vec<&str> = out
            .body
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
            .collect();
        assert_eq!(
            hosts,
            [format!("host: {authority}")],
            "client sent Host: {host}"
        );
    }
}

#[tokio::test]
async fn strangers_get_407_and_valid_credentials_select_the_tenant() {
    let (origin, proxy) = setup().await;
    let url = origin.url("/peer");
    let none = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.4",
        "-D",
        "-",
        &url,
    ])
    .await;
    assert_eq!(none.status, 407, "{none:?}");
    assert!(
        none.body
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic"),
        "{none:?}"
    );
    let wrong = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.4",
        "-U",
        "ci:nope",
        &url,
    ])
    .await;
    assert_eq!(wrong.status, 407);
    let ok = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.4",
        "-U",
        "ci:s3cret",
        &url,
    ])
    .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "127.0.0.40"), "{ok:?}");
    let tunnel = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.4",
        "-U",
        "ci:s3cret",
        "-p",
        &url,
    ])
    .await;
    assert_eq!(
        (tunnel.status, tunnel.body.as_str()),
        (200, "127.0.0.40"),
        "{tunnel:?}"
    );
}

#[tokio::test]
async fn strangers_get_403_when_no_tenant_has_credentials() {
    let origin = Origin::start("127.0.0.10").await;
    let proxy = start_proxy(
        "tenants:\n- name: a\n  sources: [{prefix: 127.0.0.2/32}]\n  allow_cidrs: [127.0.0.10/32]\n",
        None,
    )
    .await;
    let out = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.4",
        &origin.url("/peer"),
    ])
    .await;
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(origin.connections(), 0);
}

/// Raw request from beta (which may reach only 127.0.0.10/.11) for `host`.
async fn beta_get(proxy: &Running, host_port: &str) -> String {
    raw(
        "127.0.0.3",
        proxy.addr,
        &format!("GET http://{host_port}/peer HTTP/1.1\r\nHost: {host_port}\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn loopback_in_every_notation_is_denied_after_resolution() {
    let (origin, proxy) = setup().await;
    let port = origin.addr.port();
    // Sanity: the allowed origin works for beta.
    let ok = beta_get(&proxy, &format!("127.0.0.10:{port}")).await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    for host in [
        "127.0.0.1".to_string(),
        "2130706433".to_string(),         // decimal
        "0x7f000001".to_string(),         // hex
        "0177.0.0.1".to_string(),         // octal
        "127.1".to_string(),              // short form
        "[::ffff:127.0.0.1]".to_string(), // IPv4-mapped
        "[::ffff:7f00:1]".to_string(),
        "[::127.0.0.1]".to_string(), // IPv4-compatible
        "[::1]".to_string(),
        "internal.test".to_string(), // name resolving to loopback
        "mixed.test".to_string(),    // one good and one bad answer
    ] {
        let head = beta_get(&proxy, &format!("{host}:{port}")).await;
        assert_eq!(status_of(&head), 403, "{host}: {head}");
        assert!(
            header_of(&head, "x-palisade-reason").is_some(),
            "{host}: {head}"
        );
    }
    let ok = beta_get(&proxy, &format!("origin.test:{port}")).await;
    assert_eq!(
        status_of(&ok),
        200,
        "a name resolving to an allowed address works: {ok}"
    );
    let tunnel = raw(
        "127.0.0.3",
        proxy.addr,
        &format!("CONNECT 2130706433:{port} HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert_eq!(status_of(&tunnel), 403, "{tunnel}");
    assert_eq!(
        origin.connections(),
        2,
        "only the two allowed requests (two authorities) reached the origin"
    );
}

#[tokio::test]
async fn a_narrow_tenant_deny_wins_inside_an_allowed_range_and_the_proxy_never_calls_itself() {
    let (origin, proxy) = setup().await;
    let port = origin.addr.port();
    let head = raw(
        "127.0.0.2",
        proxy.addr,
        &format!("GET http://127.0.0.99:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert_eq!(status_of(&head), 403, "{head}");
    assert_eq!(
        header_of(&head, "x-palisade-reason").as_deref(),
        Some("tenant-deny-cidr")
    );
    let self_port = proxy.addr.port();
    let config = config(&[port, self_port]);
    proxy
        .handle
        .reload(palisade_proxy::ProxyConfig::from_yaml(&config).unwrap())
        .unwrap();
    let head = raw(
        "127.0.0.2",
        proxy.addr,
        &format!("GET http://127.0.0.1:{self_port}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert_eq!(status_of(&head), 403, "{head}");
    assert_eq!(
        header_of(&head, "x-palisade-reason").as_deref(),
        Some("proxy-self")
    );
}

#[tokio::test]
async fn upstream_failures_map_to_502() {
    let (_origin, proxy) = setup().await;
    // Nothing listens on this port of an allowed address.
    let closed = std::net::TcpListener::bind("127.0.0.10:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cfg = config(&[port]);
    proxy
        .handle
        .reload(palisade_proxy::ProxyConfig::from_yaml(&cfg).unwrap())
        .unwrap();
    let out = curl(&[
        "-x",
        &proxy.url(),
        "--interface",
        "127.0.0.2",
        &format!("http://127.0.0.10:{port}/"),
    ])
    .await;
    assert_eq!(out.status, 502, "{out:?}");
    // The body says what failed, then the OS's cause once (ECONNREFUSED,
    // "Connection refused" in Linux's strerror).
    assert!(
        out.body
            .starts_with("palisade: failed to connect upstream: "),
        "{out:?}"
    );
    assert_eq!(out.body.matches("Connection refused").count(), 1, "{out:?}");
}

#[tokio::test]
async fn ipv6_clients_are_identified_and_leave_from_the_tenant_ipv6_egress() {
    // Origin and proxy on ::1 (this machine has it; CI machines are the same kind).
    let origin = Origin::start("::1").await;
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let yaml = format!(
        "tenants:\n- name: six\n  sources: [{{prefix: '::1/128', deployment: v6}}]\n  egress: {{ipv6: '::1'}}\n  allow_ports: [{}]\n  allow_cidrs: ['::1/128']\n",
        origin.addr.port()
    );
    let proxy = palisade_proxy::Proxy::new(palisade_proxy::ProxyConfig::from_yaml(&yaml).unwrap());
    let handle = proxy.handle();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(proxy.serve(listener, admin, async {
        let _ = rx.await;
    }));
    let out = curl(&[
        "-x",
        &format!("http://{addr}"),
        "--interface",
        "::1",
        &origin.url("/peer"),
    ])
    .await;
    assert_eq!((out.status, out.body.as_str()), (200, "::1"), "{out:?}");
    let metrics = handle.metrics_text();
    assert!(
        metrics.contains(r#"tenant="six",decision="allow""#),
        "{metrics}"
    );
    let _ = tx.send(());
    within(10, "proxy did not stop", done)
        .await
        .unwrap()
        .unwrap();
}

/// Alpha (127.0.0.2) may reach `origin` and a raw origin answering `response`.
async fn with_raw_origin(response: &'static [u8]) -> (Origin, RawOrigin, Running) {
    let origin = Origin::start("127.0.0.10").await;
    let rogue = RawOrigin::start("127.0.0.12", response).await;
    let proxy = start_proxy(
        &config(&[origin.addr.port(), rogue.addr.port()]),
        with_resolver(StaticResolver::new([])),
    )
    .await;
    (origin, rogue, proxy)
}

#[tokio::test]
async fn headers_named_in_a_connection_value_with_non_ascii_bytes_are_removed_both_ways() {
    // RFC 9110 section 7.6.1: a proxy MUST remove every header named in
    // `Connection`. A value with an obs-text byte (0xE9) is still a list of tokens.
    let (origin, rogue, proxy) = with_raw_origin(
        b"HTTP/1.1 200 OK\r\nConnection: x-leak, caf\xe9\r\nX-Leak: 1\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let mut up = format!(
        "GET http://{0}/headers HTTP/1.1\r\nHost: {0}\r\n",
        origin.addr
    )
    .into_bytes();
    up.extend_from_slice(b"Connection: x-secret, caf\xe9\r\nX-Secret: 1\r\nX-Kept: 1\r\n\r\n");
    let (resps, _) = raw_exchange("127.0.0.2", proxy.addr, &up, 1).await;
    assert_eq!(resps[0].status, 200, "{resps:?}");
    let seen = String::from_utf8_lossy(&resps[0].body).to_ascii_lowercase();
    assert!(!seen.contains("x-secret"), "request direction: {seen}");
    assert!(seen.contains("x-kept: 1"), "{seen}");

    let down = format!("GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\n\r\n", rogue.addr);
    let (resps, _) = raw_exchange("127.0.0.2", proxy.addr, down.as_bytes(), 1).await;
    let head = &resps[0].head;
    assert_eq!(resps[0].status, 200, "{resps:?}");
    assert_eq!(
        header_of(head, "x-leak"),
        None,
        "response direction: {head}"
    );
    assert_eq!(header_of(head, "x-kept").as_deref(), Some("1"), "{head}");
}

#[tokio::test]
async fn a_response_with_both_length_headers_reaches_the_client_whole_without_its_content_length() {
    // hyper's client decodes such a body as chunked but leaves the origin's
    // `Content-Length` in the header map (hyper 1.x, proto/h1/role.rs,
    // `Client::decoder`); RFC 9112 section 6.3 says an intermediary must drop it.
    let (_origin, rogue, proxy) = with_raw_origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let one = format!("GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\n\r\n", rogue.addr);
    let (resps, closed) = raw_exchange("127.0.0.2", proxy.addr, one.repeat(2).as_bytes(), 2).await;
    assert_eq!(resps.len(), 2, "{resps:?} (closed: {closed})");
    for resp in &resps {
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.body, b"hello world", "{resp:?}");
        assert_eq!(header_of(&resp.head, "content-length"), None, "{resp:?}");
    }
    assert_eq!(
        rogue.connections(),
        2,
        "an upstream connection that sent such a response is not reused"
    );
}

#[tokio::test]
async fn a_transfer_coding_the_proxy_does_not_decode_stays_named_for_the_client() {
    // hyper decodes only `chunked`; the body still carries the gzip coding,
    // so RFC 9112 section 6.1 requires `Transfer-Encoding` to keep naming it.
    let (_origin, rogue, proxy) = with_raw_origin(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n",
    )
    .await;
    let req = format!("GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\n\r\n", rogue.addr);
    let (resps, _) = raw_exchange("127.0.0.2", proxy.addr, req.as_bytes(), 1).await;
    let resp = &resps[0];
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        header_of(&resp.head, "transfer-encoding").as_deref(),
        Some("gzip, chunked"),
        "{resp:?}"
    );
    assert_eq!(resp.body, b"\x1f\x8b\x08\x00", "{resp:?}");
}
