//! Test support: local origins (plain and TLS), a running proxy, and curl.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use palisade_proxy::{Proxy, ProxyConfig, ProxyHandle, Resolver};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Fail with `what` if `fut` takes longer than `secs`.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(s: impl Into<Bytes>) -> OriginBody {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

async fn origin_handler(
    peer: SocketAddr,
    requests: Arc<AtomicUsize>,
    req: Request<Incoming>,
) -> Result<Response<OriginBody>, hyper::Error> {
    requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    if path == "/peer" {
        return Ok(Response::new(full(peer.ip().to_string())));
    }
    if path == "/headers" {
        let mut names: Vec<String> = req
            .headers()
            .iter()
            .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("?")))
            .collect();
        names.sort();
        names.push(format!("target: {}", req.uri()));
        return Ok(Response::new(full(names.join("\n"))));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        // No Content-Length: exercises chunked responses through the proxy.
        return Ok(Response::new(BodyExt::boxed(Repeat(n))));
    }
    if path == "/echo" {
        let body = req.into_body().collect().await?.to_bytes();
        return Ok(Response::new(full(format!("{}", body.len()))));
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(800)).await;
        return Ok(Response::new(full("slow")));
    }
    Ok(Response::new(full("ok")))
}

/// `n` bytes of `x` in 64 KiB frames, length unknown (sent chunked).
pub struct Repeat(pub usize);

impl hyper::body::Body for Repeat {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        let len = self.0.min(65536);
        self.0 -= len;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; len])))))
    }
}

/// A plain HTTP origin.
pub struct Origin {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Requests received so far.
    pub requests: Arc<AtomicUsize>,
}

impl Origin {
    pub async fn start(ip: &str) -> Origin {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let served = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let served = served.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| origin_handler(peer, served.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            connections,
            requests,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A TLS origin with a self-signed certificate for `localhost` and its IP.
pub struct TlsOrigin {
    pub addr: SocketAddr,
}

impl TlsOrigin {
    pub async fn start(ip: &str) -> TlsOrigin {
        use tokio_rustls::rustls;
        let cert =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string(), ip.to_string()])
                .unwrap();
        let der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let requests = Arc::new(AtomicUsize::new(0));
                    let svc = service_fn(move |req| origin_handler(peer, requests.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsOrigin { addr }
    }
}

/// A proxy running in this test's runtime.
pub struct Running {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub handle: ProxyHandle,
    stop: Option<oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Trigger graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Start a proxy from YAML (listen addresses are replaced by port-0 loopback binds).
pub async fn start_proxy(yaml: &str, resolver: Option<Box<dyn FnOnce(Proxy) -> Proxy>>) -> Running {
    start_proxy_with(
        ProxyConfig::from_yaml(yaml).expect("test config is valid"),
        resolver,
        None,
    )
    .await
}

pub async fn start_proxy_with(
    config: ProxyConfig,
    customize: Option<Box<dyn FnOnce(Proxy) -> Proxy>>,
    file: Option<std::path::PathBuf>,
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let mut proxy = Proxy::new(config);
    if let Some(f) = customize {
        proxy = f(proxy);
    }
    if let Some(f) = file {
        proxy = proxy.with_config_file(f);
    }
    let handle = proxy.handle();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        proxy
            .serve(listener, admin, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        admin: admin_addr,
        handle,
        stop: Some(tx),
        done,
    }
}

/// Resolver injection helper.
pub fn with_resolver(r: impl Resolver) -> Option<Box<dyn FnOnce(Proxy) -> Proxy>> {
    Some(Box::new(move |p: Proxy| p.with_resolver(r)))
}

/// Result of a curl run.
#[derive(Debug)]
pub struct CurlOut {
    pub status: u16,
    pub body: String,
    pub stderr: String,
    pub success: bool,
}

/// Run curl with `args`; status is `%{http_code}` (for CONNECT failures, `%{http_connect}`).
pub async fn curl(args: &[&str]) -> CurlOut {
    let out = within(
        60,
        "curl did not finish (proxy hung?)",
        tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "-w",
                "\n%{http_code} %{http_connect}",
            ])
            .args(args)
            .output(),
    )
    .await
    .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, codes) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut it = codes.split_whitespace();
    let code: u16 = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let connect: u16 = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    CurlOut {
        status: if code == 0 { connect } else { code },
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        success: out.status.success(),
    }
}

/// Fetch a path from the admin listener.
pub async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let out = curl(&[&format!("http://{admin}{path}")]).await;
    (out.status, out.body)
}

/// Connect to `proxy` from `source`, send `request` verbatim, return the response head.
pub async fn raw(source: &str, proxy: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let mut stream = sock.connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    within(20, "proxy did not answer a raw request", async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&buf).to_string()
}

/// CONNECT from 127.0.0.2 to `target`, returning the tunnel after the 200.
pub async fn connect_tunnel(proxy: SocketAddr, target: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = sock.connect(proxy).await.unwrap();
    open_tunnel(&mut s, target).await;
    s
}

/// Sends CONNECT for `target` on `s` and reads the head, which must be a 200.
pub async fn open_tunnel(s: &mut tokio::net::TcpStream, target: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "proxy closed during CONNECT"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert_eq!(status_of(&head), 200, "{head}");
}

/// The `palisade-proxy` binary, killed and reaped when dropped so a failed
/// test leaves no process behind.
pub struct ProxyProcess(pub std::process::Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on `config` with two workers, stdout (its JSON log)
/// piped.
pub fn spawn_proxy(config: &std::path::Path) -> ProxyProcess {
    ProxyProcess(
        std::process::Command::new(env!("CARGO_BIN_EXE_palisade-proxy"))
            .args(["--config", config.to_str().unwrap(), "--workers", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Status code of a raw response head (0 if none).
pub fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Value of header `name` in a raw response head.
pub fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// An origin that answers every request head it reads with the same bytes,
/// verbatim: for responses no well-behaved HTTP library would send.
pub struct RawOrigin {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

impl RawOrigin {
    pub async fn start(ip: &str, response: &'static [u8]) -> RawOrigin {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Requests through the proxy carry no body here.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if stream.write_all(response).await.is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        RawOrigin { addr, connections }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// One response as read off the wire by [`raw_exchange`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head, lossily decoded, for [`header_of`] and messages.
    pub head: String,
    /// The body, de-chunked if it was sent chunked.
    pub body: Vec<u8>,
}

/// Connect to `proxy` from `source`, write `request` in one `write`, and read
/// responses until `want` have arrived or the proxy closes the connection.
/// Returns the responses and whether the connection was closed after them.
pub async fn raw_exchange(
    source: &str,
    proxy: SocketAddr,
    request: &[u8],
    want: usize,
) -> (Vec<RawResponse>, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let mut stream = sock.connect(proxy).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut responses = Vec::new();
    let mut chunk = [0u8; 4096];
    within(20, "proxy did not answer a raw exchange", async {
        loop {
            while let Some((resp, used)) = parse_response(&buf) {
                responses.push(resp);
                buf.drain(..used);
            }
            if responses.len() >= want {
                // Closed right after the last response, or kept open?
                let closed = matches!(
                    tokio::time::timeout(Duration::from_millis(300), stream.read(&mut chunk)).await,
                    Ok(Ok(0) | Err(_))
                );
                return (responses, closed);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return (responses, true),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

/// Parse one complete response (Content-Length or chunked body) from the
/// start of `buf`: the response and the bytes it used.
fn parse_response(buf: &[u8]) -> Option<(RawResponse, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = status_of(&head);
    let rest = &buf[end..];
    let chunked = header_of(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size_text = String::from_utf8_lossy(&rest[at..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // No trailers from these peers: just the final CRLF.
                (rest.len() >= at + 2).then_some(())?;
                return Some((RawResponse { status, head, body }, end + at + 2));
            }
            (rest.len() >= at + size + 2).then_some(())?;
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
    }
    let len: usize = header_of(&head, "content-length").map_or(0, |v| v.parse().unwrap());
    (rest.len() >= len).then_some(())?;
    let body = rest[..len].to_vec();
    Some((RawResponse { status, head, body }, end + len))
}
