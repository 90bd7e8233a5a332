//! Request handling: identify the caller, apply limits and policy, resolve and
//! check the destination, then forward (absolute-form HTTP) or tunnel (CONNECT).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Chain, ProxyError};
use crate::metrics::{AccessRecord, Metrics, UpstreamLabels};
use crate::relay::{TunnelEnd, forward_prefix, relay};
use crate::resolve::Resolver;
use crate::runtime::{AuthOutcome, Entry, Limited, Refusal, Runtime, Tenant, Verdict};
use crate::sniff::{HeadFlags, Sniffer};
use crate::target::{Host, Target, parse_authority};
use crate::upstream::{Metered, Pool, PoolKey, Pooled, dial};

/// Body type of responses to clients.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Header carrying the short reason of a refusal.
pub const REASON_HEADER: &str = "x-palisade-reason";

const VIA: &str = "1.1 palisade";

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The active compiled config.
    pub runtime: ArcSwap<Runtime>,
    /// Name resolution.
    pub resolver: Arc<dyn Resolver>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Upstream connection pool.
    pub pool: Arc<Pool>,
    /// Tracks tunnels so shutdown can wait for them.
    pub tunnels: TaskTracker,
    /// Cancelled when the shutdown grace period is over.
    pub abort: CancellationToken,
    /// The proxy's own listener addresses (denied as destinations).
    pub own: std::sync::Mutex<Vec<SocketAddr>>,
}

fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp
}

fn error_response(err: &ProxyError) -> Response<ProxyBody> {
    let mut resp = plain(err.status(), format!("palisade: {}\n", Chain(err)));
    let h = resp.headers_mut();
    h.insert(REASON_HEADER, HeaderValue::from_static(err.reason()));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    match err {
        ProxyError::AuthRequired => {
            h.insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"palisade\""),
            );
        }
        ProxyError::RateLimited(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        _ => {}
    }
    if err.closes_connection() {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Serve one request from `client`, which connected to `entry`.
pub async fn handle(
    shared: Arc<Shared>,
    client: SocketAddr,
    entry: Arc<Entry>,
    head: Arc<HeadFlags>,
    sticky: Arc<Sticky>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let rt = shared.runtime.load_full();
    let ambiguous = head.next_is_ambiguous();
    let mut rec = AccessRecord::new(shared.metrics.clone(), client, req.method().clone());
    let start = rec.start;
    let result = if ambiguous {
        Err(ProxyError::AmbiguousFraming)
    } else if req.method() == Method::CONNECT {
        connect(&shared, &rt, &entry, req, &mut rec).await
    } else {
        forward(&shared, &rt, &entry, &sticky, req, &mut rec).await
    };
    shared
        .metrics
        .latency
        .observe(start.elapsed().as_secs_f64());
    match result {
        Ok(Reply::Forwarded(resp)) => {
            rec.status = resp.status().as_u16();
            let counters = rec.counters.clone();
            Ok(resp.map(|b| Metered::new(b, counters, false, Some(rec)).boxed()))
        }
        Ok(Reply::Tunnel(resp)) => Ok(resp),
        Err(err) => {
            rec.status = err.status().as_u16();
            rec.decision = if err.is_upstream() { "error" } else { "deny" };
            rec.reason = err.reason();
            if err.is_upstream() {
                shared
                    .metrics
                    .upstream_errors
                    .get_or_create(&UpstreamLabels {
                        tenant: rec.tenant.to_string(),
                        reason: err.reason(),
                    })
                    .inc();
            }
            tracing::debug!(client = %client, error = %Chain(&err), "request refused");
            Ok(error_response(&err))
        }
    }
}

enum Reply {
    Forwarded(Response<Incoming>),
    Tunnel(Response<ProxyBody>),
}

/// Who `client` is: on a tenant's listener that tenant (its source address
/// only names the deployment); on the shared listener the owner of its source
/// prefix, else the tenant its credentials name.
fn caller(
    rt: &Runtime,
    entry: &Entry,
    headers: &HeaderMap,
    client: SocketAddr,
) -> Result<(usize, Arc<str>), ProxyError> {
    if let Entry::Tenant(name) = entry {
        return match rt.identify_on(name, client.ip()) {
            Ok(c) => Ok((c.tenant, c.deployment)),
            Err(Refusal::Gone) => Err(ProxyError::UnknownCaller),
            Err(Refusal::Foreign { owner }) => {
                tracing::warn!(listener = %name, client = %client, owner = %owner, "refused: source of another tenant on this tenant's listener");
                Err(ProxyError::ForeignSource)
            }
        };
    }
    if let Some(c) = rt.identify(client.ip()) {
        return Ok((c.tenant, c.deployment.clone()));
    }
    let auth = headers
        .get(header::PROXY_AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match rt.authenticate(auth) {
        AuthOutcome::Tenant(t) => Ok((t, Arc::from("-"))),
        AuthOutcome::Invalid => Err(ProxyError::AuthRequired),
        AuthOutcome::Missing if rt.has_credentials() => Err(ProxyError::AuthRequired),
        AuthOutcome::Missing => Err(ProxyError::UnknownCaller),
    }
}

/// Identify the caller, apply rate and concurrency limits and the tenant's domain
/// and port policy. Fills the record's tenant, deployment and decision.
fn admit<'rt>(
    rt: &'rt Runtime,
    entry: &Entry,
    headers: &HeaderMap,
    target: &Target,
    rec: &mut AccessRecord,
) -> Result<&'rt Tenant, ProxyError> {
    let (index, deployment) = caller(rt, entry, headers, rec.client)?;
    let tenant = rt.tenants.get(index).ok_or(ProxyError::UnknownCaller)?;
    rec.tenant = tenant.name.clone();
    rec.deployment = deployment;
    rec.handles = Some(tenant.handles(&rec.metrics));
    match tenant.limiter.admit() {
        Ok(permit) => rec.permit = permit,
        Err(Limited::Rate(wait)) => return Err(ProxyError::RateLimited(wait)),
        Err(Limited::Concurrency) => return Err(ProxyError::TooManyConcurrent),
    }
    match tenant.policy(&target.host, target.port) {
        Verdict::Allow => {}
        Verdict::Deny(reason) => return Err(ProxyError::Denied(reason)),
        Verdict::Report(reason) => {
            tracing::warn!(
                tenant = %tenant.name,
                dest = %target,
                reason,
                "report mode: request would be denied"
            );
            rec.decision = "report";
            rec.reason = reason;
        }
    }
    Ok(tenant)
}

/// Resolve once, check every answer, then dial only checked addresses from the
/// tenant's egress address.
async fn connect_checked(
    shared: &Shared,
    rt: &Runtime,
    tenant: &Tenant,
    target: &Target,
    rec: &mut AccessRecord,
) -> Result<(TcpStream, SocketAddr, Option<IpAddr>), ProxyError> {
    let ips = match &target.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => shared
            .resolver
            .resolve(name)
            .await
            .map_err(ProxyError::Resolve)?,
    };
    let addrs: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| SocketAddr::new(ip.to_canonical(), target.port))
        .collect();
    for addr in &addrs {
        if let Err(reason) = tenant.guard.check(*addr) {
            rec.resolved = Some(*addr);
            tracing::warn!(
                tenant = %tenant.name,
                dest = %target,
                resolved = %addr,
                reason = reason.as_str(),
                "destination address denied"
            );
            return Err(ProxyError::Denied(reason.as_str()));
        }
    }
    let timeout = rt.config.timeouts.connect.0;
    let mut last = ProxyError::Resolve(std::io::ErrorKind::NotFound.into());
    for addr in addrs {
        let egress = rt.egress_for(tenant, addr.ip());
        match tokio::time::timeout(timeout, dial(addr, egress)).await {
            Ok(Ok(stream)) => {
                rec.resolved = Some(addr);
                rec.egress = egress;
                return Ok((stream, addr, egress));
            }
            Ok(Err(e)) => last = ProxyError::Connect(e),
            Err(_) => last = ProxyError::UpstreamTimeout,
        }
    }
    Err(last)
}

/// Reject messages whose framing two parsers could disagree on.
fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(ProxyError::AmbiguousFraming);
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next()
        && lengths.any(|v| v != first)
    {
        return Err(ProxyError::AmbiguousFraming);
    }
    Ok(())
}

/// Whether `name` is hop-by-hop on its own (RFC 9110 section 7.6.1), or one of
/// the legacy `Keep-Alive` and `Proxy-Connection`.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Remove hop-by-hop headers (RFC 9110 section 7.6.1), including any named in
/// `Connection`. Transfer codings other than `chunked` stay named: hyper
/// decodes only `chunked`, so the body still carries the others, and RFC 9112
/// section 6.1 lets an intermediary remove only the codings it decoded
/// (hyper adds `chunked` back when it sends the message on).
///
/// One pass over the names finds what to remove, instead of looking up every
/// hop-by-hop name in the map: this runs twice per forwarded request.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    // Names listed in `Connection`, split from the raw bytes: a value with a
    // non-ASCII byte still names headers, and every one named must go.
    // (`headers.remove(&str)` matches case-insensitively and ignores tokens
    // that are not header names; a token that is not UTF-8 cannot be one.)
    let listed: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .cloned()
        .collect();
    for value in &listed {
        for token in value.as_bytes().split(|&b| b == b',') {
            if let Ok(name) = std::str::from_utf8(token.trim_ascii()) {
                headers.remove(name);
            }
        }
    }
    let codings = doomed
        .contains(&header::TRANSFER_ENCODING)
        .then(|| undecoded_codings(headers))
        .flatten();
    for name in doomed {
        headers.remove(name);
    }
    if let Some(codings) = codings {
        headers.insert(header::TRANSFER_ENCODING, codings);
    }
}

/// The transfer codings a message names other than `chunked`, in order.
fn undecoded_codings(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut kept = Vec::new();
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        for coding in value.as_bytes().split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if !coding.is_empty() && !coding.eq_ignore_ascii_case(b"chunked") {
                if !kept.is_empty() {
                    kept.extend_from_slice(b", ");
                }
                kept.extend_from_slice(coding);
            }
        }
    }
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&kept).ok()
}

/// Remove `Content-Length` from a message that also has `Transfer-Encoding`;
/// whether there was one. hyper's client frames such a response by its
/// chunked coding but leaves the origin's `Content-Length` in the map (hyper
/// 1.x, `proto/h1/role.rs`, `Client::decoder` checks `TRANSFER_ENCODING` first
/// and removes nothing); sent on, it would cut or corrupt the body. RFC 9112
/// section 6.3: an intermediary that forwards such a message must first remove
/// `Content-Length`.
fn drop_conflicting_length(headers: &mut HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        && headers.remove(header::CONTENT_LENGTH).is_some()
}

fn add_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, HeaderValue::from_static(VIA));
}

async fn forward(
    shared: &Arc<Shared>,
    rt: &Runtime,
    entry: &Entry,
    sticky: &Sticky,
    req: Request<Incoming>,
    rec: &mut AccessRecord,
) -> Result<Reply, ProxyError> {
    check_framing(req.headers())?;
    let uri = req.uri();
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(ProxyError::BadRequest("unsupported-scheme")),
        None => return Err(ProxyError::BadRequest("not-a-proxy-request")),
    }
    let authority = uri
        .authority()
        .ok_or(ProxyError::BadRequest("missing-host"))?
        .clone();
    let target = parse_authority(authority.as_str(), Some(80))
        .map_err(|_| ProxyError::BadRequest("bad-target"))?;
    rec.dest = Some(target.clone());
    let tenant = admit(rt, entry, req.headers(), &target, rec)?;

    let (mut parts, body) = req.into_parts();
    // Origin-form target: the absolute URI without scheme and authority (no re-parse).
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = None;
    uri.authority = None;
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(hyper::http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("bad-target"))?;
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers);
    // `Host` must be exactly the target's authority, once. Clients almost
    // always send just that; only otherwise is a new value built.
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host_is_authority = hosts
        .next()
        .is_some_and(|h| h.as_bytes() == authority.as_str().as_bytes())
        && hosts.next().is_none();
    if !host_is_authority && let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        parts.headers.insert(header::HOST, host);
    }
    parts.version = hyper::Version::HTTP_11;
    let body = Metered::new(body, rec.counters.clone(), true, None);
    let mut request = Request::from_parts(parts, body);

    let egress = (
        rt.egress_for(tenant, IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        rt.egress_for(tenant, IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
    );
    let first_byte = rt.config.timeouts.first_byte.0;
    // The client connection's own upstream connection first (no pool lock, no
    // task to return it), then the shared pool, then a fresh dial.
    let mut cached = None;
    if let Some((key, mut conn)) = sticky.take() {
        if key.matches(rt.generation, &tenant.name, egress, authority.as_str()) {
            let ready = conn.sender.is_ready()
                || matches!(
                    tokio::time::timeout(first_byte, conn.sender.ready()).await,
                    Ok(Ok(()))
                );
            if ready {
                cached = Some((key, conn));
            }
        } else {
            shared.pool.checkin_when_ready(key, conn);
        }
    }
    let (key, mut cached) = match cached {
        Some((key, conn)) => (key, Some(conn)),
        None => {
            let key = PoolKey {
                generation: rt.generation,
                tenant: tenant.name.clone(),
                egress,
                scheme: "http",
                authority: authority.as_str().to_ascii_lowercase(),
            };
            let conn = shared.pool.checkout(&key);
            (key, conn)
        }
    };
    // A pooled connection may have been closed by the origin an instant ago; if
    // hyper hands the request back unsent, dial a fresh one.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut conn = match cached.take() {
            Some(c) if attempt == 1 => c,
            _ => {
                let (stream, peer, egress) =
                    connect_checked(shared, rt, tenant, &target, rec).await?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(ProxyError::Upstream)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "upstream connection ended");
                    }
                });
                Pooled::new(sender, peer, egress)
            }
        };
        rec.resolved = Some(conn.peer);
        rec.egress = conn.local;
        let sent = tokio::time::timeout(first_byte, conn.sender.try_send_request(request)).await;
        match sent {
            Err(_) => return Err(ProxyError::UpstreamTimeout),
            Ok(Ok(mut resp)) => {
                // A connection whose framing was in doubt is not reused: its
                // next bytes could be the rest of this response.
                if !drop_conflicting_length(resp.headers_mut()) {
                    sticky.put(key, conn);
                }
                strip_hop_by_hop(resp.headers_mut());
                add_via(resp.headers_mut());
                return Ok(Reply::Forwarded(resp));
            }
            Ok(Err(mut e)) => match e.take_message() {
                Some(back) if attempt == 1 => request = back,
                _ => return Err(ProxyError::Upstream(e.into_error())),
            },
        }
    }
}

/// The upstream connection last used by one client connection. HTTP/1.1 clients
/// usually send every request on a connection to the same origin, so keeping
/// that upstream with the client connection saves a pool lookup and a task per
/// request; it goes back to the shared pool when the client connection ends.
#[derive(Debug, Default)]
pub struct Sticky(std::sync::Mutex<Option<(PoolKey, Pooled)>>);

impl Sticky {
    fn take(&self) -> Option<(PoolKey, Pooled)> {
        self.0.lock().ok()?.take()
    }

    fn put(&self, key: PoolKey, conn: Pooled) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((key, conn));
        }
    }

    /// Return the held connection (if any) to `pool` once it is idle.
    pub fn release(&self, pool: &Arc<Pool>) {
        if let Some((key, conn)) = self.take() {
            pool.checkin_when_ready(key, conn);
        }
    }
}

async fn connect(
    shared: &Arc<Shared>,
    rt: &Runtime,
    entry: &Entry,
    mut req: Request<Incoming>,
    rec: &mut AccessRecord,
) -> Result<Reply, ProxyError> {
    let authority = req
        .uri()
        .authority()
        .ok_or(ProxyError::BadRequest("bad-connect-target"))?
        .clone();
    let target = parse_authority(authority.as_str(), None)
        .map_err(|_| ProxyError::BadRequest("bad-connect-target"))?;
    rec.dest = Some(target.clone());
    let tenant = admit(rt, entry, req.headers(), &target, rec)?;
    let (upstream, _, _) = connect_checked(shared, rt, tenant, &target, rec).await?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let idle = rt.config.timeouts.idle.0;
    let metrics = shared.metrics.clone();
    let abort = shared.abort.clone();
    let mut tunnel_rec = std::mem::replace(
        rec,
        AccessRecord::new(shared.metrics.clone(), rec.client, Method::CONNECT),
    );
    // The placeholder left in `rec` must not be logged.
    rec.silent = true;
    tunnel_rec.status = 200;
    shared.tunnels.spawn(async move {
        metrics.active_tunnels.inc();
        let end = tokio::select! {
            r = run_tunnel(on_upgrade, upstream, idle, &tunnel_rec) => r,
            () = abort.cancelled() => Ok(TunnelEnd::Closed),
        };
        if let Err(e) = end {
            tracing::debug!(error = %e, "tunnel ended with error");
        }
        metrics.active_tunnels.dec();
        drop(tunnel_rec);
    });
    let resp = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    Ok(Reply::Tunnel(resp))
}

async fn run_tunnel(
    on_upgrade: hyper::upgrade::OnUpgrade,
    upstream: TcpStream,
    idle: Duration,
    rec: &AccessRecord,
) -> std::io::Result<TunnelEnd> {
    let upgraded = on_upgrade.await.map_err(std::io::Error::other)?;
    match upgraded.downcast::<TokioIo<Sniffer<TcpStream>>>() {
        Ok(parts) => {
            let client = parts.io.into_inner().into_inner();
            if !parts.read_buf.is_empty() {
                forward_prefix(&upstream, &parts.read_buf).await?;
                rec.counters.up.fetch_add(
                    parts.read_buf.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            relay(
                &client,
                &upstream,
                idle,
                &rec.counters.up,
                &rec.counters.down,
            )
            .await
        }
        Err(upgraded) => {
            let mut client = TokioIo::new(upgraded);
            let mut upstream = upstream;
            let (up, down) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            rec.counters
                .up
                .fetch_add(up, std::sync::atomic::Ordering::Relaxed);
            rec.counters
                .down
                .fetch_add(down, std::sync::atomic::Ordering::Relaxed);
            Ok(TunnelEnd::Closed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn every_connection_value_counts_and_other_headers_stay() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("X-One"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" x-two ,, not a name"),
        );
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.append(header::ACCEPT, HeaderValue::from_static("a"));
        h.append(header::ACCEPT, HeaderValue::from_static("b"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host", "accept"], "{h:?}");
        assert_eq!(h.get_all(header::ACCEPT).iter().count(), 2);

        // Nothing hop-by-hop: nothing changes, even names a Connection would list.
        let mut h = HeaderMap::new();
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn connection_values_are_read_from_raw_bytes() {
        // RFC 9110 section 7.6.1: every header named in `Connection` goes, even
        // when the value also carries an obs-text byte (0xE9).
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-secret, caf\xe9,\tX-Other ")
                .unwrap_or(HeaderValue::from_static("")),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-keep"], "{h:?}");
    }

    #[test]
    fn transfer_codings_hyper_does_not_decode_stay_named() {
        let mut h = HeaderMap::new();
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, Chunked"),
        );
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static(" br ,chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.get_all(header::TRANSFER_ENCODING)
                .iter()
                .collect::<Vec<_>>(),
            ["gzip, br"]
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn content_length_is_dropped_only_beside_transfer_encoding() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        assert!(!drop_conflicting_length(&mut h));
        assert!(h.contains_key(header::CONTENT_LENGTH));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(drop_conflicting_length(&mut h));
        assert!(!h.contains_key(header::CONTENT_LENGTH));
        assert!(!drop_conflicting_length(&mut h));
    }

    #[test]
    fn both_length_headers_or_differing_lengths_are_ambiguous() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(check_framing(&h).is_ok());
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert!(check_framing(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(check_framing(&h).is_err());
    }
}
