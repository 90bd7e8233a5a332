//! Reload, shutdown, admin endpoints and the binary's exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use palisade_proxy::ProxyConfig;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(port: u16, egress: &str) -> String {
    format!(
        "reload_poll: 50ms\ntimeouts: {{ shutdown_grace: 3s }}\ntenants:\n- name: alpha\n  sources: [{{ prefix: 127.0.0.2/32, deployment: web }}]\n  egress: {{ ipv4: {egress} }}\n  allow_ports: [{port}]\n  allow_cidrs: [127.0.0.10/32]\n"
    )
}

/// A keep-alive client from 127.0.0.2 that sends absolute-form GETs through the proxy.
async fn client(
    proxy: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = sock.connect(proxy).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    url: &str,
) -> Result<(u16, String), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = hyper::Request::get(url)
        .header("host", "x")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

#[tokio::test]
async fn reload_during_a_request_stream_loses_nothing_and_a_bad_file_is_refused() {
    let origin = Origin::start("127.0.0.10").await;
    let port = origin.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, config(port, "127.0.0.20")).unwrap();
    let proxy = start_proxy_with(ProxyConfig::load(&path).unwrap(), None, Some(path.clone())).await;

    // An open tunnel from before the reload.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut tunnel = sock.connect(proxy.addr).await.unwrap();
    tunnel
        .write_all(format!("CONNECT {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tunnel.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let url = origin.url("/peer");
    let stream = {
        let url = url.clone();
        let addr = proxy.addr;
        tokio::spawn(async move {
            let mut sender = client(addr).await;
            let mut seen = Vec::new();
            let mut failures = Vec::new();
            for _ in 0..400 {
                match get(&mut sender, &url).await {
                    Ok((200, body)) => seen.push(body),
                    other => failures.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (seen, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&path, config(port, "127.0.0.21")).unwrap();
    let (seen, failures) = within(60, "request stream stalled", stream).await.unwrap();
    assert!(
        failures.is_empty(),
        "failed requests during reload: {failures:?}"
    );
    assert_eq!(seen.first().map(String::as_str), Some("127.0.0.20"));
    assert_eq!(
        seen.last().map(String::as_str),
        Some("127.0.0.21"),
        "the new egress took effect"
    );
    assert!(proxy.handle.generation() >= 2);

    // The tunnel opened before the reload still carries traffic.
    tunnel
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = within(5, "tunnel died on reload", tunnel.read(&mut buf))
        .await
        .unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("127.0.0.20"),
        "{reply}"
    );

    // A broken file is refused and the active config stays.
    let generation = proxy.handle.generation();
    std::fs::write(&path, "tenants: [{name: BAD}]\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.handle.generation(), generation);
    assert!(proxy.handle.reload_from_file(&path).is_err());
    let mut sender = client(proxy.addr).await;
    assert_eq!(
        get(&mut sender, &url).await.unwrap(),
        (200, "127.0.0.21".to_string())
    );
    let (_, metrics) = admin_get(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"palisade_proxy_config_reloads_total{result="rejected"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_stops_accepting() {
    let origin = Origin::start("127.0.0.10").await;
    let mut proxy = start_proxy(&config(origin.addr.port(), "127.0.0.20"), None).await;
    let (status, _) = admin_get(proxy.admin, "/readyz").await;
    assert_eq!(status, 200);
    let (status, body) = admin_get(proxy.admin, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    let slow = {
        let proxy_url = proxy.url();
        let url = origin.url("/slow");
        tokio::spawn(
            async move { curl(&["-x", &proxy_url, "--interface", "127.0.0.2", &url]).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.shutdown();
    let out = within(10, "in-flight request not drained", slow)
        .await
        .unwrap();
    assert_eq!((out.status, out.body.as_str()), (200, "slow"), "{out:?}");
    within(10, "serve() did not return after drain", &mut proxy.done)
        .await
        .unwrap();
    let refused = tokio::net::TcpStream::connect(proxy.addr).await;
    assert!(refused.is_err(), "listener still accepting after shutdown");
}

/// With worker threads, each new client connection goes to the next runtime in
/// turn; requests and tunnels on every one of them are served, and shutdown
/// drains them all.
#[tokio::test]
async fn connections_on_worker_threads_are_served_and_drained() {
    let origin = Origin::start("127.0.0.10").await;
    let workers = palisade_proxy::workers::Workers::start(2).unwrap();
    let handles = workers.handles();
    let mut proxy = start_proxy(
        &config(origin.addr.port(), "127.0.0.20"),
        Some(Box::new(move |p: palisade_proxy::Proxy| {
            p.with_workers(handles)
        })),
    )
    .await;
    // Three connections: one per runtime (the serving one and two workers).
    let mut senders = Vec::new();
    for _ in 0..3 {
        senders.push(client(proxy.addr).await);
    }
    for sender in &mut senders {
        for _ in 0..3 {
            let got = get(sender, &origin.url("/")).await;
            assert_eq!(got.as_ref().map(|(s, _)| *s), Ok(200), "{got:?}");
        }
    }
    // A CONNECT tunnel on each runtime: the splice relay's pipes are per thread.
    for _ in 0..3 {
        let mut tunnel = connect_tunnel(proxy.addr, origin.addr).await;
        tunnel
            .write_all(b"GET /tunnelled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        within(
            10,
            "tunnel on a worker did not answer",
            tunnel.read_to_end(&mut got),
        )
        .await
        .unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("ok"),
            "{got}"
        );
    }
    let in_flight: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let url = origin.url("/slow");
            tokio::spawn(async move { get(&mut sender, &url).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.shutdown();
    for request in in_flight {
        let got = within(10, "in-flight request not drained", request)
            .await
            .unwrap();
        assert_eq!(got, Ok((200, "slow".to_string())));
    }
    within(10, "serve() did not return after drain", &mut proxy.done)
        .await
        .unwrap();
    drop(workers);
}

#[test]
fn the_binary_exits_64_on_bad_input_with_a_precise_message_and_0_on_help() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "tenants:\n- name: a\n  sources: [{prefix: 10.0.0.0/24}]\n- name: b\n  sources: [{prefix: 10.0.0.0/24}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-proxy"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    // The standalone binary names itself, as Unix tools do.
    assert!(err.starts_with("palisade-proxy: "), "{err}");
    assert!(
        err.contains("tenants[1].sources[0].prefix")
            && err.contains("already claimed by tenant \"a\""),
        "{err}"
    );

    std::fs::write(
        &path,
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nlisten_typo: 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-proxy"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `listen_typo`"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-proxy"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--workers N"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-proxy"))
        .args(["--config", path.to_str().unwrap(), "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--workers takes a number of threads from 1 to 1024, not \"0\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_binary_reloads_on_sighup_and_drains_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    let write = |egress: &str| {
        std::fs::write(
            &path,
            format!("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nreload_poll: 0s\ntenants:\n- name: a\n  sources: [{{prefix: 127.0.0.2/32}}]\n  egress: {{ipv4: {egress}}}\n"),
        )
        .unwrap();
    };
    write("127.0.0.20");
    let mut child = spawn_proxy(&path);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut next_json = |want: &str| -> serde_json::Value {
        for line in lines.by_ref() {
            let line = line.unwrap();
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            if v["message"] == want {
                return v;
            }
        }
        panic!("proxy exited before logging {want:?}");
    };
    let started = next_json("proxy listening");
    assert_eq!(started["workers"], 2, "{started}");
    assert!(
        started["listen"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    // One JSON access line per request, with the destination as requested,
    // or empty when the request was refused before it named one.
    let listen = started["listen"].as_str().unwrap().to_string();
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let proxy_url = format!("http://{listen}");
    let denied = [
        "-x",
        &proxy_url,
        "--interface",
        "127.0.0.2",
        "http://127.0.0.1/",
    ];
    assert_eq!(curl(&denied), "403");
    let access = next_json("access");
    assert_eq!(access["tenant"], "a", "{access}");
    assert_eq!(access["dest"], "127.0.0.1:80", "{access}");
    assert_eq!(access["status"], 403, "{access}");
    assert_eq!(access["decision"], "deny", "{access}");
    assert_eq!(access["reason"], "loopback", "{access}");
    assert!(access["duration_ms"].as_f64().is_some(), "{access}");
    assert_eq!(curl(&[&proxy_url]), "400");
    let access = next_json("access");
    assert_eq!(access["dest"], "", "{access}");
    assert_eq!(access["reason"], "not-a-proxy-request", "{access}");

    let pid = child.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    let reloaded = next_json("config reloaded");
    assert_eq!(reloaded["generation"], 2);
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    next_json("shutting down: draining connections and tunnels");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
