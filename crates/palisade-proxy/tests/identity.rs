//! Tenant identity by listener: a connection accepted on a tenant's own port
//! is that tenant's whatever its source address (a pod's IPv4 address, an
//! SNAT'ed node address), which is what makes the proxy usable on IPv4-only
//! and single-pool clusters; the shared port keeps source-prefix identity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use palisade_proxy::ProxyConfig;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port nothing listens on, below the kernel's ephemeral range (32768 and
/// up), so no outgoing connection of this or another test takes it between
/// the probe and the proxy's bind. Each call tries the next port.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) + std::process::id() * 97;
        let port = 20000 + (n % 10000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// alpha (127.0.0.2 = deployment web, egress .20, may reach all of
/// loopback) and beta (127.0.0.3 = deployment api, egress .30, may reach the
/// origins on 127.0.0.10 and .11), each with its own listener when given a
/// port; both may use the destination ports `allow`.
fn config(alpha: Option<u16>, beta: Option<u16>, allow: &[u16]) -> ProxyConfig {
    let port = |p: Option<u16>| p.map_or(String::new(), |p| format!("  listen_port: {p}\n"));
    let allow = format!("{allow:?}");
    ProxyConfig::from_yaml(&format!(
        "reload_poll: 0s\ntenants:\n\
         - name: alpha\n{}  sources: [{{ prefix: 127.0.0.2/32, deployment: web }}]\n  egress: {{ ipv4: 127.0.0.20 }}\n  allow_ports: {allow}\n  allow_cidrs: [127.0.0.0/8]\n\
         - name: beta\n{}  sources: [{{ prefix: 127.0.0.3/32, deployment: api }}]\n  egress: {{ ipv4: 127.0.0.30 }}\n  allow_ports: {allow}\n  allow_cidrs: [127.0.0.10/32, 127.0.0.11/32]\n",
        port(alpha),
        port(beta),
    ))
    .expect("test config is valid")
}

fn on(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Wait until `serve` has opened the tenant listeners on `ports` (it runs in
/// a task the test does not wait for).
async fn listening(ports: &[u16]) {
    within(5, "tenant listeners did not open", async {
        for &port in ports {
            while tokio::net::TcpStream::connect(on(port)).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    })
    .await;
}

/// GET `url` through the proxy at `proxy` from `source`: (status, reason header, body).
async fn get_from(source: &str, proxy: SocketAddr, url: &str) -> (u16, Option<String>, String) {
    let mut s = connect_from(source, proxy).await;
    s.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut all = Vec::new();
    within(
        10,
        "proxy did not finish its answer",
        s.read_to_end(&mut all),
    )
    .await
    .unwrap();
    let all = String::from_utf8_lossy(&all).to_string();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    (
        status_of(head),
        header_of(head, "x-palisade-reason"),
        body.to_string(),
    )
}

/// The origin's `/peer` answer through a CONNECT tunnel opened from `source`.
async fn peer_through_tunnel(source: &str, proxy: SocketAddr, origin: SocketAddr) -> String {
    let mut s = connect_from(source, proxy).await;
    open_tunnel(&mut s, origin).await;
    tunnel_peer(&mut s).await
}

/// Ask the origin at the other end of an open tunnel who is calling.
async fn tunnel_peer(s: &mut tokio::net::TcpStream) -> String {
    s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = within(10, "tunnel did not answer", s.read(&mut buf))
        .await
        .unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    reply.rsplit("\r\n\r\n").next().unwrap().to_string()
}

#[tokio::test]
async fn a_connection_on_a_tenants_listener_is_that_tenant_whatever_its_source() {
    let origin = Origin::start("127.0.0.10").await;
    let tls = TlsOrigin::start("127.0.0.11").await;
    let (pa, pb) = (free_port(), free_port());
    let allow = [origin.addr.port(), tls.addr.port(), pb];
    let proxy = start_proxy_with(config(Some(pa), Some(pb), &allow), None, None).await;
    listening(&[pa, pb]).await;
    let url = origin.url("/peer");

    // 127.0.0.1 is in no tenant's prefixes, like a pod's IPv4 address is in
    // no /96: on a tenant's port it is that tenant and leaves from its egress.
    assert_eq!(
        get_from("127.0.0.1", on(pa), &url).await,
        (200, None, "127.0.0.20".into())
    );
    assert_eq!(
        get_from("127.0.0.1", on(pb), &url).await,
        (200, None, "127.0.0.30".into())
    );
    // HTTPS (CONNECT) too.
    let https = format!("https://127.0.0.11:{}/peer", tls.addr.port());
    let out = curl(&[
        "-k",
        "-x",
        &format!("http://{}", on(pa)),
        "--interface",
        "127.0.0.1",
        &https,
    ])
    .await;
    assert_eq!(
        (out.status, out.body.as_str()),
        (200, "127.0.0.20"),
        "{out:?}"
    );
    assert_eq!(
        peer_through_tunnel("127.0.0.1", on(pb), origin.addr).await,
        "127.0.0.30"
    );

    // The same client on the shared port is nobody.
    let (status, reason, _) = get_from("127.0.0.1", proxy.addr, &url).await;
    assert_eq!((status, reason.as_deref()), (403, Some("unknown-caller")));
    // A source inside beta's prefix on alpha's port is refused, by name.
    let (status, reason, _) = get_from("127.0.0.3", on(pa), &url).await;
    assert_eq!((status, reason.as_deref()), (403, Some("foreign-source")));
    // alpha's own deployment on alpha's port, and on the shared port, is alpha.
    assert_eq!(
        get_from("127.0.0.2", on(pa), &url).await,
        (200, None, "127.0.0.20".into())
    );
    assert_eq!(
        get_from("127.0.0.2", proxy.addr, &url).await,
        (200, None, "127.0.0.20".into())
    );
    // A tenant's listener is one of the proxy's own addresses: no tenant may
    // use the proxy to reach it, even with loopback opened.
    let (status, reason, _) = get_from("127.0.0.2", on(pa), &format!("http://{}/", on(pb))).await;
    assert_eq!((status, reason.as_deref()), (403, Some("proxy-self")));
}

#[tokio::test]
async fn reload_opens_and_closes_tenant_listeners_and_keeps_accepted_connections() {
    let origin = Origin::start("127.0.0.10").await;
    let (pa, pb) = (free_port(), free_port());
    let allow = [origin.addr.port()];
    let proxy = start_proxy_with(config(None, Some(pb), &allow), None, None).await;
    listening(&[pb]).await;
    let url = origin.url("/peer");

    // beta's tunnel, accepted on beta's port before any reload.
    let mut beta = {
        let mut s = connect_from("127.0.0.1", on(pb)).await;
        open_tunnel(&mut s, origin.addr).await;
        s
    };
    assert_eq!(tunnel_peer(&mut beta).await, "127.0.0.30");
    assert!(
        tokio::net::TcpStream::connect(on(pa)).await.is_err(),
        "alpha has no listener yet"
    );

    // Adding alpha's port opens it; beta's connection is untouched.
    proxy
        .handle
        .reload(config(Some(pa), Some(pb), &allow))
        .unwrap();
    assert_eq!(
        get_from("127.0.0.1", on(pa), &url).await,
        (200, None, "127.0.0.20".into())
    );
    assert_eq!(tunnel_peer(&mut beta).await, "127.0.0.30");

    // Removing beta's port closes the listener, not what it accepted.
    proxy.handle.reload(config(Some(pa), None, &allow)).unwrap();
    within(5, "beta's listener still accepts", async {
        while tokio::net::TcpStream::connect(on(pb)).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(tunnel_peer(&mut beta).await, "127.0.0.30");
    assert_eq!(
        get_from("127.0.0.1", on(pa), &url).await,
        (200, None, "127.0.0.20".into())
    );

    // A port something else holds rejects the whole reload: nothing changes.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let generation = proxy.handle.generation();
    let err = proxy
        .handle
        .reload(config(Some(pa), Some(taken), &allow))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("failed to listen on 127.0.0.1:{taken} for tenant \"beta\"")
    );
    assert_eq!(proxy.handle.generation(), generation);
    assert_eq!(
        get_from("127.0.0.1", on(pa), &url).await,
        (200, None, "127.0.0.20".into())
    );
}

/// Every tenant listener deals its connections to the worker runtimes in turn,
/// like the shared listener: requests and tunnels work on each.
#[tokio::test]
async fn tenant_listeners_are_served_on_every_worker_runtime() {
    let origin = Origin::start("127.0.0.10").await;
    let workers = palisade_proxy::workers::Workers::start(2).unwrap();
    let handles = workers.handles();
    let (pa, pb) = (free_port(), free_port());
    let proxy = start_proxy_with(
        config(Some(pa), Some(pb), &[origin.addr.port()]),
        Some(Box::new(move |p: palisade_proxy::Proxy| {
            p.with_workers(handles)
        })),
        None,
    )
    .await;
    listening(&[pa, pb]).await;
    let url = origin.url("/peer");
    // Six connections over three runtimes, alternating listeners, so each
    // runtime serves both tenants' listeners and the shared one.
    for round in 0..6 {
        let (listener, egress) = match round % 3 {
            0 => (on(pa), "127.0.0.20"),
            1 => (on(pb), "127.0.0.30"),
            _ => (proxy.addr, "127.0.0.20"),
        };
        let source = if listener == proxy.addr {
            "127.0.0.2"
        } else {
            "127.0.0.1"
        };
        assert_eq!(
            get_from(source, listener, &url).await,
            (200, None, egress.into()),
            "round {round}"
        );
        let mut s = connect_from(source, listener).await;
        open_tunnel(&mut s, origin.addr).await;
        assert_eq!(tunnel_peer(&mut s).await, egress, "round {round}");
    }
    drop(workers);
}

/// The binary opens a tenant's listener when SIGHUP brings its port, and
/// its access lines name the tenant, and the deployment when the source /96
/// (here /32) says which.
#[test]
fn the_binary_opens_a_listener_on_sighup_and_logs_tenant_and_deployment() {
    use std::io::{BufRead, BufReader};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    let pa = free_port();
    let write = |port: &str| {
        std::fs::write(
            &path,
            format!("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nreload_poll: 0s\ntenants:\n- name: a\n{port}  sources: [{{prefix: 127.0.0.2/32, deployment: web}}]\n- name: b\n  sources: [{{prefix: 127.0.0.3/32, deployment: api}}]\n"),
        )
        .unwrap();
    };
    write("");
    let mut child = spawn_proxy(&path);
    // A log line that never comes must fail the test, not hang it: after a
    // minute the proxy is killed, its stdout ends and `next_json` panics.
    // `Finished` (dropped before `child` reaps the process) stops the
    // watchdog from killing a pid that is no longer ours.
    struct Finished(Arc<AtomicBool>);
    impl Drop for Finished {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let finished = Finished(Arc::new(AtomicBool::new(false)));
    let pid = child.0.id().to_string();
    {
        let (pid, done) = (pid.clone(), finished.0.clone());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(60));
            if !done.load(Ordering::SeqCst) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .status();
            }
        });
    }
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut next_json = |want: &str| -> serde_json::Value {
        for line in lines.by_ref() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["message"] == want {
                return v;
            }
        }
        panic!("proxy exited before logging {want:?}");
    };
    let started = next_json("proxy listening");
    assert_eq!(started["tenant_listeners"], 0, "{started}");
    let refused = std::net::TcpStream::connect(on(pa));
    assert!(refused.is_err(), "port {pa} open before the reload");

    write(&format!("  listen_port: {pa}\n"));
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    let opened = next_json("tenant listener");
    assert_eq!(
        (opened["port"].as_u64(), opened["tenant"].as_str()),
        (Some(u64::from(pa)), Some("a"))
    );
    next_json("config reloaded");

    // The destination (loopback) is refused by policy, after identity: the
    // access line says who the proxy took the caller for.
    let curl = |source: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--interface",
                source,
            ])
            .args(["-x", &format!("http://127.0.0.1:{pa}"), "http://127.0.0.1/"])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for (source, deployment) in [("127.0.0.1", "-"), ("127.0.0.2", "web")] {
        assert_eq!(curl(source), "403");
        let access = next_json("access");
        assert_eq!(
            (&access["tenant"], &access["deployment"], &access["reason"]),
            (&"a".into(), &deployment.into(), &"loopback".into()),
            "{access}"
        );
    }
    assert_eq!(curl("127.0.0.3"), "403");
    let warned = next_json("refused: source of another tenant on this tenant's listener");
    assert_eq!(
        (warned["listener"].as_str(), warned["owner"].as_str()),
        (Some("a"), Some("b")),
        "{warned}"
    );
    let access = next_json("access");
    assert_eq!(access["reason"], "foreign-source", "{access}");
}

async fn connect_from(source: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    sock.connect(to).await.unwrap()
}
