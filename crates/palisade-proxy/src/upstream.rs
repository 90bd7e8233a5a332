//! Dialling upstreams from a tenant's egress address, and the upstream pool.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::metrics::{AccessRecord, Counters};

/// Open a TCP connection to `dest`, bound to `egress` if given.
///
/// The socket gets `IP_BIND_ADDRESS_NO_PORT` before `bind`, so binding to a fixed
/// source address does not reserve an ephemeral port until `connect` picks one for
/// the full 4-tuple: thousands of connections from one egress IP do not exhaust ports.
pub async fn dial(dest: SocketAddr, egress: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(dest), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(src) = egress {
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .map_err(io::Error::from)?;
        socket.bind(&SocketAddr::new(src, 0).into())?;
    }
    let std_stream: std::net::TcpStream = socket.into();
    TcpSocket::from_std_stream(std_stream).connect(dest).await
}

/// A request or response body that counts bytes into an [`AccessRecord`].
#[derive(Debug)]
pub struct Metered<B> {
    inner: B,
    counters: Arc<Counters>,
    up: bool,
    /// Held by the response body so the access line is written when it ends.
    _record: Option<AccessRecord>,
}

impl<B> Metered<B> {
    /// Count `inner`'s bytes as up (client to origin) or down; `record`, if any,
    /// is logged when this body is dropped.
    pub fn new(inner: B, counters: Arc<Counters>, up: bool, record: Option<AccessRecord>) -> Self {
        Metered {
            inner,
            counters,
            up,
            _record: record,
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
        {
            let counter: &AtomicU64 = if self.up {
                &self.counters.up
            } else {
                &self.counters.down
            };
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body type sent upstream.
pub type UpBody = Metered<Incoming>;

/// Pool key: a connection is reused only for the same tenant (policy), egress
/// address, scheme and authority, within one config generation.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct PoolKey {
    /// Config generation (a reload retires old connections).
    pub generation: u64,
    /// Tenant name (tenants have different address exceptions).
    pub tenant: Arc<str>,
    /// Egress address family configured for the tenant (v4, v6).
    pub egress: (Option<IpAddr>, Option<IpAddr>),
    /// `http`.
    pub scheme: &'static str,
    /// `host:port` as requested.
    pub authority: String,
}

impl PoolKey {
    /// Whether this key is the one for these request properties (no allocation).
    pub fn matches(
        &self,
        generation: u64,
        tenant: &str,
        egress: (Option<IpAddr>, Option<IpAddr>),
        authority: &str,
    ) -> bool {
        self.generation == generation
            && &*self.tenant == tenant
            && self.egress == egress
            && self.authority.eq_ignore_ascii_case(authority)
    }
}

/// An idle upstream connection.
#[derive(Debug)]
pub struct Pooled {
    /// Request sender.
    pub sender: SendRequest<UpBody>,
    /// The checked address it is connected to.
    pub peer: SocketAddr,
    /// Local (egress) address.
    pub local: Option<IpAddr>,
    idle_since: Instant,
}

impl Pooled {
    /// Wrap a fresh connection.
    pub fn new(sender: SendRequest<UpBody>, peer: SocketAddr, local: Option<IpAddr>) -> Self {
        Pooled {
            sender,
            peer,
            local,
            idle_since: Instant::now(),
        }
    }
}

/// Idle upstream HTTP/1.1 connections.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Pooled>>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// A pool keeping up to `max_idle` connections per key for `idle_timeout`.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// Take a usable idle connection.
    pub fn checkout(&self, key: &PoolKey) -> Option<Pooled> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some(p) = list.pop() {
            if p.sender.is_ready() && p.idle_since.elapsed() < self.idle_timeout {
                return Some(p);
            }
        }
        None
    }

    /// Return a connection once its current response is finished: at once if
    /// it is idle already, else from a task that waits for it.
    pub fn checkin_when_ready(self: &Arc<Self>, key: PoolKey, mut conn: Pooled) {
        if conn.sender.is_ready() {
            self.checkin(key, conn);
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if conn.sender.ready().await.is_ok() {
                pool.checkin(key, conn);
            }
        });
    }

    fn checkin(&self, key: PoolKey, mut conn: Pooled) {
        conn.idle_since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(key).or_default();
            if list.len() < self.max_idle {
                list.push(conn);
            }
        }
    }

    /// Drop closed, expired and retired connections.
    pub fn sweep(&self, generation: u64) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|k, list| {
                list.retain(|p| {
                    !p.sender.is_closed() && p.idle_since.elapsed() < self.idle_timeout
                });
                k.generation == generation && !list.is_empty()
            });
        }
    }

    /// Number of idle connections (for tests).
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}
