//! The small programs that run inside the lab's namespaces.
//!
//! Container images cannot be pulled on a laptop or in CI, so every image
//! maps to one built-in workload, run by the `palisade` binary itself (a
//! hidden `palisade lab __serve` subcommand) under `ip netns exec`, optionally
//! inside gVisor. Answers are one JSON object naming who answered and whom
//! they saw calling, which is what `verify` checks.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// What a workload answers with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// `pod`, `internet-echo` or `gateway`.
    pub role: String,
    /// The pod's tenant (pods only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The pod's deployment (pods only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The pod's name (pods only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The caller's address as the server saw it.
    pub caller: String,
}

/// What `palisade lab __serve` runs: passed as one JSON argument.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServeSpec {
    /// The workload.
    pub workload: Workload,
    /// Where it listens (TCP).
    pub listen: Vec<SocketAddr>,
    /// Where a pod answers UDP datagrams ([`udp_answers`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udp: Vec<SocketAddr>,
}

/// Which workload to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum Workload {
    /// A pod: answers with its identity.
    Pod {
        /// Tenant.
        tenant: String,
        /// Deployment.
        deployment: String,
        /// Pod name.
        pod: String,
    },
    /// The internet echo origin: answers with the caller's address.
    Echo,
    /// Cluster DNS's stand-in: [`crate::dns::serve`] on UDP and
    /// [`crate::dns::serve_tcp`] on TCP at every listen address.
    Dns {
        /// A JSON file of the names it answers for ([`crate::dns::Names`]):
        /// thousands of names do not fit on a command line.
        names_file: std::path::PathBuf,
    },
    /// A gateway: forwards `Host: <deployment>.<tenant>` (or path
    /// `/<tenant>/<deployment>/...`) to that deployment's pods.
    Gateway {
        /// (host, backends).
        routes: Vec<(String, Vec<SocketAddr>)>,
    },
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves `workload` on every address of `listen` until killed.
pub async fn serve(
    workload: Workload,
    listen: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
) -> std::io::Result<()> {
    let workload = Arc::new(workload);
    let rr = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    // Bound before the TCP listeners: a workload listening on TCP (what
    // readiness checks) already answers UDP.
    if let Workload::Pod {
        tenant,
        deployment,
        pod,
    } = &*workload
    {
        for addr in udp {
            let socket = tokio::net::UdpSocket::bind(addr).await?;
            let who = (tenant.clone(), deployment.clone(), pod.clone());
            tasks.spawn(async move {
                if let Err(e) = udp_answers(socket, who).await {
                    tracing::error!(error = %e, "a pod's UDP port stopped");
                }
            });
        }
    }
    if let Workload::Dns { names_file } = &*workload {
        let text = std::fs::read_to_string(names_file)?;
        let names: crate::dns::Names = serde_json::from_str(&text)?;
        for addr in &listen {
            let socket = tokio::net::UdpSocket::bind(addr).await?;
            let listener = TcpListener::bind(addr).await?;
            let (udp, tcp) = (names.clone(), names.clone());
            tasks.spawn(async move {
                if let Err(e) = crate::dns::serve(socket, udp, std::future::pending()).await {
                    tracing::error!(error = %e, "the DNS stand-in stopped (UDP)");
                }
            });
            tasks.spawn(async move {
                if let Err(e) = crate::dns::serve_tcp(listener, tcp, std::future::pending()).await {
                    tracing::error!(error = %e, "the DNS stand-in stopped (TCP)");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        return Ok(());
    }
    for addr in listen {
        let listener = TcpListener::bind(addr).await?;
        let workload = workload.clone();
        let rr = rr.clone();
        tasks.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let workload = workload.clone();
                let rr = rr.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let workload = workload.clone();
                        let rr = rr.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                handle(&workload, &rr, peer, req).await,
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// A pod's UDP port: every datagram is answered with one datagram, the
/// pod's [`Answer`] (who answered, whom it saw calling), as its TCP ports
/// answer an HTTP request.
async fn udp_answers(
    socket: tokio::net::UdpSocket,
    (tenant, deployment, pod): (String, String, String),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2048];
    loop {
        let (_, peer) = socket.recv_from(&mut buf).await?;
        let answer = Answer {
            role: "pod".into(),
            tenant: Some(tenant.clone()),
            deployment: Some(deployment.clone()),
            pod: Some(pod.clone()),
            caller: peer.ip().to_canonical().to_string(),
        };
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        if let Err(e) = socket.send_to(&body, peer).await {
            tracing::warn!(%peer, error = %e, "failed to answer a UDP probe");
        }
    }
}

/// Sends one datagram to `addr` and waits `timeout` for one back: (0, the
/// answer). No answer in time (a dropped datagram) or an ICMP error (port
/// unreachable) is [`ProbeFailure::Connect`], as a dropped SYN is for TCP.
pub async fn udp_probe(addr: SocketAddr, timeout: Duration) -> Result<(u16, String), ProbeFailure> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let exchange = async {
        let socket = tokio::net::UdpSocket::bind(local).await?;
        socket.connect(addr).await?;
        socket.send(b"palisade lab probe").await?;
        let mut buf = vec![0u8; 2048];
        let n = socket.recv(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(ProbeFailure::Connect(format!(
            "no UDP answer within {timeout:?}"
        ))),
        Ok(Err(e)) => Err(ProbeFailure::Connect(e.to_string())),
        Ok(Ok(body)) => Ok((0, body)),
    }
}

async fn handle(
    workload: &Workload,
    rr: &AtomicUsize,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let caller = peer.ip().to_canonical().to_string();
    let answer = |role: &str, tenant: Option<&str>, deployment: Option<&str>, pod: Option<&str>| {
        let a = Answer {
            role: role.into(),
            tenant: tenant.map(Into::into),
            deployment: deployment.map(Into::into),
            pod: pod.map(Into::into),
            caller: caller.clone(),
        };
        json_response(
            StatusCode::OK,
            serde_json::to_string(&a).unwrap_or_default() + "\n",
        )
    };
    match workload {
        Workload::Pod {
            tenant,
            deployment,
            pod,
        } => answer("pod", Some(tenant), Some(deployment), Some(pod)),
        Workload::Echo => answer("internet-echo", None, None, None),
        // Served by `crate::dns`, never over HTTP.
        Workload::Dns { .. } => json_response(StatusCode::NOT_FOUND, String::new()),
        Workload::Gateway { routes } => {
            let host = req
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h).to_string())
                .unwrap_or_default();
            // Absolute form (`GET http://[pod]:port/`): verify asks the
            // gateway to open a connection to one backend, which it does
            // only if one of its routes sends there, as Envoy opens
            // connections only to its routes' backends.
            if let Some(authority) = req.uri().authority() {
                let target = authority.as_str().parse::<SocketAddr>().ok();
                return match target.filter(|t| routes.iter().any(|(_, b)| b.contains(t))) {
                    Some(backend) => relay(backend, authority.as_str()).await,
                    None => json_response(
                        StatusCode::NOT_FOUND,
                        format!(
                            "{{\"error\":\"not reachable at L7: no route of this gateway sends to {authority}\"}}\n"
                        ),
                    ),
                };
            }
            let path = req.uri().path().to_string();
            let route = routes.iter().find(|(h, _)| *h == host).or_else(|| {
                routes.iter().find(|(h, _)| {
                    // `<deployment>.<tenant>[.<domain>]`
                    let mut parts = h.split('.');
                    let (d, t) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    path.starts_with(&format!("/{t}/{d}/")) || path == format!("/{t}/{d}")
                })
            });
            let Some((_, backends)) = route.filter(|(_, b)| !b.is_empty()) else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    format!("{{\"error\":\"no route for host {host:?} path {path:?}\"}}\n"),
                );
            };
            let backend = backends[rr.fetch_add(1, Ordering::Relaxed) % backends.len()];
            relay(backend, &host).await
        }
    }
}

/// Forwards a GET to `backend`; a backend it cannot connect to is a 503,
/// one that does not answer HTTP a 502 (Envoy's "upstream connect error"
/// and bad-gateway answers).
async fn relay(backend: SocketAddr, host: &str) -> Response<Full<Bytes>> {
    match http_get(backend, None, host, "/", Duration::from_secs(2)).await {
        Ok((status, body)) => {
            let mut r = json_response(StatusCode::OK, body);
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            r
        }
        Err(e) => {
            let status = match e {
                ProbeFailure::Connect(_) => StatusCode::SERVICE_UNAVAILABLE,
                ProbeFailure::Http(_) => StatusCode::BAD_GATEWAY,
            };
            json_response(status, format!("{{\"error\":\"{backend}: {e}\"}}\n"))
        }
    }
}

/// Why an HTTP probe failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeFailure {
    /// The TCP connection was not established (dropped or refused).
    Connect(String),
    /// Connected, but no HTTP answer.
    Http(String),
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Connect(e) => write!(f, "no connection: {e}"),
            ProbeFailure::Http(e) => write!(f, "connected, but no HTTP answer: {e}"),
        }
    }
}

/// `GET path` from `addr` (or through the proxy at `proxy`, for an absolute
/// URL) with a connect timeout and an overall timeout; returns (status, body).
pub async fn http_get(
    addr: SocketAddr,
    proxy: Option<SocketAddr>,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), ProbeFailure> {
    let dial = proxy.unwrap_or(addr);
    let stream = tokio::time::timeout(timeout, TcpStream::connect(dial))
        .await
        .map_err(|_| ProbeFailure::Connect(format!("timed out after {timeout:?}")))?
        .map_err(|e| ProbeFailure::Connect(e.to_string()))?;
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let uri = match proxy {
            Some(_) => format!("http://{addr}{path}"),
            None => path.to_string(),
        };
        let req = Request::get(uri)
            .header(hyper::header::HOST, host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout * 2, exchange)
        .await
        .map_err(|_| ProbeFailure::Http(format!("timed out after {:?}", timeout * 2)))?
        .map_err(ProbeFailure::Http)
}

/// What a DNS probe asks cluster DNS: the name of the cluster DNS Service
/// as kubeadm and EKS name it. The lab's stand-in answers for the rendered
/// Services only, so its answer is NXDOMAIN; any DNS answer shows the path
/// is open.
pub const DNS_PROBE_NAME: &str = "kube-dns.kube-system.svc.cluster.local";

/// Asks `name` (AAAA) of the DNS server at `addr` over TCP (RFC 1035
/// §4.2.2: a two-byte length, then the message) and describes the answer:
/// (its response code, `DNS over TCP: NOERROR, 3 records`).
pub async fn dns_over_tcp(
    addr: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<(u16, String), ProbeFailure> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ProbeFailure::Connect(format!("timed out after {timeout:?}")))?
        .map_err(|e| ProbeFailure::Connect(e.to_string()))?;
    let exchange = async {
        let asked = name;
        let name = Name::from_ascii(name).map_err(|e| e.to_string())?;
        let mut query = Message::query();
        query.add_query(Query::query(name, RecordType::AAAA));
        let bytes = query.to_vec().map_err(|e| e.to_string())?;
        let len = u16::try_from(bytes.len()).map_err(|e| e.to_string())?;
        let mut frame = len.to_be_bytes().to_vec();
        frame.extend_from_slice(&bytes);
        stream.write_all(&frame).await.map_err(|e| e.to_string())?;
        let len = stream.read_u16().await.map_err(|e| e.to_string())?;
        let mut reply = vec![0u8; usize::from(len)];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        let reply = Message::from_vec(&reply).map_err(|e| e.to_string())?;
        let code = reply.metadata.response_code;
        let said = format!(
            "DNS over TCP: {code} for {asked}, {} records",
            reply.answers.len()
        );
        Ok::<_, String>((u16::from(code), said))
    };
    tokio::time::timeout(timeout * 2, exchange)
        .await
        .map_err(|_| ProbeFailure::Http(format!("no DNS answer within {:?}", timeout * 2)))?
        .map_err(|e| ProbeFailure::Http(format!("no DNS answer: {e}")))
}

/// One request a probe agent makes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeRequest {
    /// Correlates the answer.
    pub id: usize,
    /// Where to (the origin, also when going through a proxy).
    pub addr: SocketAddr,
    /// Through this HTTP proxy.
    pub proxy: Option<SocketAddr>,
    /// The `Host` header.
    pub host: String,
    /// Instead of an HTTP request: ask this name over DNS over TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// Instead of an HTTP request: one UDP datagram ([`udp_probe`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub udp: bool,
}

/// A probe agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// The request's id.
    pub id: usize,
    /// Status and body, or why not.
    pub outcome: Result<(u16, String), ProbeFailure>,
}

/// Runs every probe concurrently from the current namespace.
pub async fn run_probes(requests: Vec<ProbeRequest>, timeout: Duration) -> Vec<ProbeResult> {
    let mut set = tokio::task::JoinSet::new();
    for r in requests {
        set.spawn(async move {
            let outcome = match &r.dns {
                Some(name) => dns_over_tcp(r.addr, name, timeout).await,
                None if r.udp => udp_probe(r.addr, timeout).await,
                None => http_get(r.addr, r.proxy, &r.host, "/", timeout).await,
            };
            ProbeResult { id: r.id, outcome }
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            out.push(r);
        }
    }
    out.sort_by_key(|r| r.id);
    out
}

/// What `palisade lab __probe` reads on stdin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeBatch {
    /// Connect timeout (the exchange gets twice this).
    pub timeout_ms: u64,
    /// The probes.
    pub requests: Vec<ProbeRequest>,
    /// Instead of probing once: load the first request's target for a while
    /// (for benchmarks) and report the rate.
    #[serde(default)]
    pub load: Option<Load>,
}

/// A load run: `concurrency` clients, each opening a new connection per
/// request (so every request crosses the ruleset's lookups), for `duration_ms`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Load {
    /// Clients at once.
    pub concurrency: usize,
    /// How long.
    pub duration_ms: u64,
}

/// What a load run measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadResult {
    /// Requests answered with 200.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Seconds measured.
    pub seconds: f64,
}

async fn load(target: ProbeRequest, load: Load, timeout: Duration) -> LoadResult {
    let started = std::time::Instant::now();
    let until = started + Duration::from_millis(load.duration_ms);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..load.concurrency.max(1) {
        let t = target.clone();
        set.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while std::time::Instant::now() < until {
                match http_get(t.addr, t.proxy, &t.host, "/", timeout).await {
                    Ok((200, _)) => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = set.join_next().await {
        if let Ok((o, f)) = r {
            ok += o;
            failed += f;
        }
    }
    LoadResult {
        ok,
        failed,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// The spec of `__serve`: inline JSON, or `@FILE` holding it (a gateway
/// with thousands of routes exceeds the kernel's 128 KiB limit on one
/// argument, `MAX_ARG_STRLEN` in execve(2)).
pub fn read_spec(arg: &str) -> crate::Result<ServeSpec> {
    let json = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(crate::LabError::io(format!(
            "cannot read the workload spec {path}"
        )))?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&json).map_err(crate::LabError::json("workload spec"))
}

/// Entry point of `palisade lab __serve SPEC|@FILE`: serves until killed.
pub fn serve_main(arg: &str) -> crate::Result<()> {
    let spec = read_spec(arg)?;
    runtime()
        .and_then(|rt| rt.block_on(serve(spec.workload, spec.listen, spec.udp)))
        .map_err(crate::LabError::io("workload"))
}

/// Entry point of `palisade lab __probe`: a [`ProbeBatch`] on stdin, one
/// [`ProbeResult`] per line on stdout.
pub fn probe_main() -> crate::Result<()> {
    use std::io::{Read, Write};
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(crate::LabError::io("probe input"))?;
    let batch: ProbeBatch =
        serde_json::from_str(&input).map_err(crate::LabError::json("probe input"))?;
    let rt = runtime().map_err(crate::LabError::io("probe runtime"))?;
    if let (Some(l), Some(target)) = (batch.load.clone(), batch.requests.first().cloned()) {
        let r = rt.block_on(load(target, l, Duration::from_millis(batch.timeout_ms)));
        let line = serde_json::to_string(&r).map_err(crate::LabError::json("load output"))?;
        println!("{line}");
        return Ok(());
    }
    let results = rt.block_on(run_probes(
        batch.requests,
        Duration::from_millis(batch.timeout_ms),
    ));
    let mut out = std::io::stdout().lock();
    for r in results {
        let line = serde_json::to_string(&r).map_err(crate::LabError::json("probe output"))?;
        writeln!(out, "{line}").map_err(crate::LabError::io("probe output"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A gateway fronting 5,000 deployments: its spec is far over the
    /// 128 KiB one argument may hold, so it travels as `@FILE`.
    #[test]
    fn a_spec_is_read_inline_or_from_a_file() {
        let backend: SocketAddr = "[fd00::1]:8080".parse().unwrap();
        let spec = ServeSpec {
            workload: Workload::Gateway {
                routes: (0..5000)
                    .map(|i| (format!("d{i}.tenant.apps.example.com"), vec![backend]))
                    .collect(),
            },
            listen: vec!["[fd00::2]:80".parse().unwrap()],
            udp: Vec::new(),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.len() > 128 * 1024);
        assert_eq!(read_spec(&json).unwrap(), spec);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.spec.json");
        std::fs::write(&path, &json).unwrap();
        assert_eq!(read_spec(&format!("@{}", path.display())).unwrap(), spec);
        let missing = read_spec("@/nonexistent/spec.json").unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/spec.json"));
    }
}
