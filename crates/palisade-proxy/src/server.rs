//! Listeners, the admin endpoint, reload and graceful shutdown.
//!
//! One accept loop owns every client listener: the shared one and each
//! tenant's own (`listen_port`). A reload binds the new tenant listeners
//! before it makes the new config active (so a taken port rejects the reload
//! and changes nothing), then hands them to the loop; a removed tenant's
//! listener closes without touching accepted connections. One loop, not one
//! task per listener, so `limits.max_connections` stays one cap: a permit is
//! taken before accepting on whichever listener is ready first.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, ProxyConfig};
use crate::metrics::Metrics;
use crate::proxy::{Shared, Sticky, handle};
use crate::resolve::{Resolver, SystemResolver};
use crate::runtime::{Entry, Runtime};
use crate::sniff::Sniffer;
use crate::upstream::Pool;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener's local address could not be read.
    #[error("failed to read listener address")]
    Listener(#[source] std::io::Error),
    /// A tenant's listener could not be opened at start.
    #[error("failed to open the tenant listeners")]
    TenantListener(#[source] ConfigError),
}

/// A configured proxy, ready to serve.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    doors: Arc<Doors>,
    config_file: Option<PathBuf>,
    workers: Vec<Handle>,
}

/// A handle to a running (or about to run) proxy: reload and inspect it.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    doors: Arc<Doors>,
    config_file: Option<PathBuf>,
}

impl Proxy {
    /// A proxy for an already validated `config`, using the system resolver.
    pub fn new(config: ProxyConfig) -> Self {
        let pool = Arc::new(Pool::new(
            config.limits.max_idle_per_upstream,
            Duration::from_secs(90),
        ));
        let runtime = Runtime::build(config, &[], None);
        Proxy {
            shared: Arc::new(Shared {
                runtime: ArcSwap::from_pointee(runtime),
                resolver: Arc::new(SystemResolver),
                metrics: Arc::new(Metrics::new()),
                pool,
                tunnels: TaskTracker::new(),
                abort: CancellationToken::new(),
                own: std::sync::Mutex::new(Vec::new()),
            }),
            doors: Arc::new(Doors::default()),
            config_file: None,
            workers: Vec::new(),
        }
    }

    /// Share new client connections, in turn, between the runtime that runs
    /// [`Proxy::serve`] and these (see [`crate::workers`]).
    pub fn with_workers(mut self, workers: Vec<Handle>) -> Self {
        self.workers = workers;
        self
    }

    /// Replace the resolver (tests inject answers this way).
    pub fn with_resolver(mut self, resolver: impl Resolver) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.resolver = Arc::new(resolver);
        }
        self
    }

    /// Watch `path` for changes (polled every `reload_poll`) and reload from it.
    pub fn with_config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// A handle for reloads.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
            doors: self.doors.clone(),
            config_file: self.config_file.clone(),
        }
    }

    /// Serve clients on `listener` (and on every tenant's own listener, bound
    /// on its address) and the admin endpoint on `admin`, until `shutdown`
    /// completes; then stop accepting, let in-flight requests and tunnels
    /// finish for up to `timeouts.shutdown_grace`, and cut the rest.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let own = vec![
            listener.local_addr().map_err(ServeError::Listener)?,
            admin.local_addr().map_err(ServeError::Listener)?,
        ];
        let handle = self.handle();
        if let Ok(mut o) = self.shared.own.lock() {
            o.clone_from(&own);
        }
        let shared = self.shared.clone();
        let config = shared.runtime.load().config.clone();
        let changes = self
            .doors
            .open(own[0].ip(), &config)
            .map_err(ServeError::TenantListener)?;
        shared
            .runtime
            .store(Arc::new(Runtime::build(config.clone(), &own, None)));
        tracing::info!(
            listen = %own[0],
            admin = %own[1],
            tenants = config.tenants.len(),
            tenant_listeners = config.tenants.iter().filter(|t| t.listen_port.is_some()).count(),
            workers = self.workers.len() + 1,
            "proxy listening"
        );

        let draining = CancellationToken::new();
        let connections = TaskTracker::new();
        let background = CancellationToken::new();

        // Admin endpoint.
        let admin_task = tokio::spawn(serve_admin(admin, shared.clone(), draining.clone()));
        // Pool sweeper.
        {
            let shared = shared.clone();
            let stop = background.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                        () = stop.cancelled() => return,
                    }
                    let generation = shared.runtime.load().generation;
                    shared.pool.sweep(generation);
                }
            });
        }
        // Config file watcher.
        if let Some(path) = self.config_file.clone() {
            tokio::spawn(watch_file(handle.clone(), path, background.clone()));
        }

        let acceptor = Acceptor {
            shared: shared.clone(),
            draining: draining.clone(),
            connections: connections.clone(),
            workers: self.workers.clone(),
            turn: 0,
        };
        acceptor
            .run(listener, changes, config.limits.max_connections, shutdown)
            .await;
        self.doors.close();
        tracing::info!("shutting down: draining connections and tunnels");
        draining.cancel();
        background.cancel();
        let grace = shared.runtime.load().config.timeouts.shutdown_grace.0;
        connections.close();
        shared.tunnels.close();
        let drained = tokio::time::timeout(grace, async {
            connections.wait().await;
            shared.tunnels.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                tunnels = shared.tunnels.len(),
                connections = connections.len(),
                "shutdown grace period over; cutting remaining work"
            );
            shared.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), shared.tunnels.wait()).await;
        }
        admin_task.abort();
        Ok(())
    }
}

/// The tenant listeners the accept loop holds, as reloads want them.
#[derive(Debug, Default)]
struct Doors(Mutex<DoorState>);

#[derive(Debug, Default)]
struct DoorState {
    /// The shared listener's address, which tenant listeners bind too;
    /// `None` while the proxy is not serving.
    ip: Option<IpAddr>,
    /// Port → tenant, as handed to the accept loop.
    open: BTreeMap<u16, Arc<str>>,
    /// The accept loop's inbox.
    tx: Option<mpsc::UnboundedSender<DoorChange>>,
}

/// What the accept loop must change.
#[derive(Debug)]
enum DoorChange {
    /// Accept on this new listener for this tenant.
    Open(u16, Arc<str>, std::net::TcpListener),
    /// The port now belongs to another tenant (same socket).
    Retag(u16, Arc<str>),
    /// Stop accepting on this port.
    Close(u16),
}

impl Doors {
    /// Start serving on `ip`: the changes that open `config`'s tenant listeners,
    /// and the inbox the accept loop reads later changes from.
    fn open(
        &self,
        ip: IpAddr,
        config: &ProxyConfig,
    ) -> Result<mpsc::UnboundedReceiver<DoorChange>, ConfigError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = DoorState {
            ip: Some(ip),
            open: BTreeMap::new(),
            tx: Some(tx),
        };
        let changes = state.prepare(config)?;
        // One line at start ("proxy listening" counts them), one per change after.
        state.commit(changes, tracing::Level::DEBUG);
        Ok(rx)
    }

    /// Not serving any more: later reloads bind nothing.
    fn close(&self) {
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = DoorState::default();
    }
}

impl DoorState {
    /// Bind the listeners `config` adds (nothing changes on error, and the
    /// ones bound so far close again) and list every change.
    fn prepare(&self, config: &ProxyConfig) -> Result<Vec<DoorChange>, ConfigError> {
        let Some(ip) = self.ip else {
            return Ok(Vec::new());
        };
        let want: BTreeMap<u16, &str> = config
            .tenants
            .iter()
            .filter_map(|t| Some((t.listen_port?, t.name.as_str())))
            .collect();
        let mut changes: Vec<DoorChange> = self
            .open
            .keys()
            .filter(|port| !want.contains_key(port))
            .map(|&port| DoorChange::Close(port))
            .collect();
        for (&port, &tenant) in &want {
            match self.open.get(&port) {
                Some(t) if &**t == tenant => {}
                Some(_) => changes.push(DoorChange::Retag(port, Arc::from(tenant))),
                None => {
                    let addr = SocketAddr::new(ip, port);
                    let listener = bind(addr).map_err(|source| ConfigError::Listen {
                        tenant: tenant.to_owned(),
                        addr,
                        source,
                    })?;
                    changes.push(DoorChange::Open(port, Arc::from(tenant), listener));
                }
            }
        }
        Ok(changes)
    }

    /// Hand `changes` to the accept loop and remember them, logging each at `level`.
    fn commit(&mut self, changes: Vec<DoorChange>, level: tracing::Level) {
        for change in changes {
            match &change {
                DoorChange::Open(port, tenant, _) | DoorChange::Retag(port, tenant) => {
                    if level == tracing::Level::INFO {
                        tracing::info!(port, tenant = %tenant, "tenant listener");
                    } else {
                        tracing::debug!(port, tenant = %tenant, "tenant listener");
                    }
                    self.open.insert(*port, tenant.clone());
                }
                DoorChange::Close(port) => {
                    tracing::info!(port, "tenant listener closed");
                    self.open.remove(port);
                }
            }
            if let Some(tx) = &self.tx {
                let _ = tx.send(change);
            }
        }
    }
}

/// A listening socket as tokio's `TcpListener::bind` makes it (address reuse,
/// backlog 1024), but bound synchronously so a reload can fail before it commits.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A tenant's listener inside the accept loop.
struct Door {
    port: u16,
    entry: Arc<Entry>,
    listener: TcpListener,
}

/// The accept loop: every listener, one connection cap, connections dealt
/// to the worker runtimes in turn.
struct Acceptor {
    shared: Arc<Shared>,
    draining: CancellationToken,
    connections: TaskTracker,
    workers: Vec<Handle>,
    turn: usize,
}

/// What woke the accept loop.
enum Wake {
    Shutdown,
    Change(DoorChange),
    Accepted(std::io::Result<(TcpStream, SocketAddr, Arc<Entry>)>),
}

impl Acceptor {
    async fn run(
        mut self,
        listener: TcpListener,
        mut changes: mpsc::UnboundedReceiver<DoorChange>,
        max_connections: usize,
        shutdown: impl Future<Output = ()>,
    ) {
        let cap = Arc::new(Semaphore::new(max_connections));
        let shared_entry = Arc::new(Entry::Shared);
        let mut doors: Vec<Door> = Vec::new();
        let mut next = 0usize;
        tokio::pin!(shutdown);
        'serve: loop {
            let permit = tokio::select! {
                p = cap.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (stream, peer, entry) = loop {
                let wake = tokio::select! {
                    () = &mut shutdown => Wake::Shutdown,
                    Some(c) = changes.recv() => Wake::Change(c),
                    r = accept_any(&listener, &shared_entry, &doors, &mut next) => Wake::Accepted(r),
                };
                match wake {
                    Wake::Shutdown => break 'serve,
                    Wake::Change(c) => apply(&mut doors, c),
                    Wake::Accepted(Ok(x)) => break x,
                    Wake::Accepted(Err(e)) => {
                        // Out of descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            self.dispatch(stream, peer, entry, permit);
        }
    }

    /// Serve the connection here or on the next worker runtime.
    fn dispatch(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        entry: Arc<Entry>,
        permit: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let shared = self.shared.clone();
        let draining = self.draining.clone();
        self.turn = (self.turn + 1) % (self.workers.len() + 1);
        let Some(worker) = self.turn.checked_sub(1).and_then(|i| self.workers.get(i)) else {
            self.connections
                .spawn(client_task(stream, peer, entry, shared, draining, permit));
            return;
        };
        // Re-register the socket with the worker's own reactor, so its
        // readiness events are handled on the thread that serves it.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(client = %peer, error = %e, "failed to hand a connection to a worker");
                return;
            }
        };
        worker.spawn(self.connections.track_future(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => client_task(stream, peer, entry, shared, draining, permit).await,
                Err(e) => {
                    tracing::warn!(client = %peer, error = %e, "worker failed to take a connection")
                }
            }
        }));
    }
}

/// Apply one change to the loop's tenant listeners.
fn apply(doors: &mut Vec<Door>, change: DoorChange) {
    match change {
        DoorChange::Open(port, tenant, listener) => match TcpListener::from_std(listener) {
            Ok(listener) => doors.push(Door {
                port,
                entry: Arc::new(Entry::Tenant(tenant)),
                listener,
            }),
            Err(e) => {
                tracing::error!(port, tenant = %tenant, error = %e, "failed to register a tenant listener")
            }
        },
        DoorChange::Retag(port, tenant) => {
            if let Some(d) = doors.iter_mut().find(|d| d.port == port) {
                d.entry = Arc::new(Entry::Tenant(tenant));
            }
        }
        DoorChange::Close(port) => doors.retain(|d| d.port != port),
    }
}

/// The next connection on any listener, starting after the one that last had
/// one, so a busy listener cannot starve the others.
fn accept_any<'a>(
    listener: &'a TcpListener,
    shared_entry: &'a Arc<Entry>,
    doors: &'a [Door],
    next: &'a mut usize,
) -> impl Future<Output = std::io::Result<(TcpStream, SocketAddr, Arc<Entry>)>> + 'a {
    std::future::poll_fn(move |cx| {
        let n = doors.len() + 1;
        for k in 0..n {
            let i = (*next + k) % n;
            let (l, entry) = match i.checked_sub(1) {
                None => (listener, shared_entry),
                Some(d) => (&doors[d].listener, &doors[d].entry),
            };
            if let Poll::Ready(r) = l.poll_accept(cx) {
                *next = (i + 1) % n;
                return Poll::Ready(r.map(|(stream, peer)| (stream, peer, entry.clone())));
            }
        }
        Poll::Pending
    })
}

async fn client_task(
    stream: TcpStream,
    peer: SocketAddr,
    entry: Arc<Entry>,
    shared: Arc<Shared>,
    draining: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    shared.metrics.active_connections.inc();
    serve_client(stream, peer, entry, shared.clone(), draining).await;
    shared.metrics.active_connections.dec();
    drop(permit);
}

async fn serve_client(
    stream: TcpStream,
    peer: SocketAddr,
    entry: Arc<Entry>,
    shared: Arc<Shared>,
    draining: CancellationToken,
) {
    let config = shared.runtime.load().config.clone();
    let io = Sniffer::new(stream);
    let flags = io.flags();
    let sticky = Arc::new(Sticky::default());
    let svc = {
        let shared = shared.clone();
        let sticky = sticky.clone();
        service_fn(move |req: Request<Incoming>| {
            handle(
                shared.clone(),
                peer,
                entry.clone(),
                flags.clone(),
                sticky.clone(),
                req,
            )
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.header_read.0)
        .max_buf_size(config.limits.max_header_bytes)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(client = %peer, error = %e, "client connection error");
            }
        }
        () = draining.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shared.abort.cancelled() => {}
            }
        }
    }
    sticky.release(&shared.pool);
}

async fn serve_admin(listener: TcpListener, shared: Arc<Shared>, draining: CancellationToken) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let draining = draining.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                let draining = draining.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (StatusCode::OK, shared.metrics.encode()),
                        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
                        "/readyz" if draining.is_cancelled() => {
                            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string())
                        }
                        "/readyz" => (StatusCode::OK, "ready\n".to_string()),
                        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn watch_file(handle: ProxyHandle, path: PathBuf, stop: CancellationToken) {
    let mut last = tokio::fs::read(&path).await.ok();
    loop {
        let every = handle.shared.runtime.load().config.reload_poll.0;
        if every.is_zero() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let now = tokio::fs::read(&path).await.ok();
        if now.is_some() && now != last {
            last = now;
            let _ = handle.reload_from_file(&path);
        }
    }
}

impl ProxyHandle {
    /// Validate `config` and make it active. In-flight requests and open tunnels
    /// keep running; new requests see the new config. On error the old config stays.
    ///
    /// Tenant listeners follow the config: new ones are bound before anything
    /// changes (a port that cannot be bound rejects the reload), removed ones
    /// stop accepting; connections already accepted keep their tenant.
    pub fn reload(&self, config: ProxyConfig) -> Result<(), ConfigError> {
        config.validate()?;
        // Held until the new runtime is active, so reloads apply in order.
        let mut doors = self
            .doors
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changes = doors.prepare(&config)?;
        let old = self.shared.runtime.load_full();
        if config.listen != old.config.listen || config.admin_listen != old.config.admin_listen {
            tracing::warn!("listen addresses changed; the change takes effect on restart");
        }
        let own = self
            .shared
            .own
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        let new = Runtime::build(config, &own, Some(&old));
        let generation = new.generation;
        self.shared.runtime.store(Arc::new(new));
        doors.commit(changes, tracing::Level::INFO);
        tracing::info!(generation, "config reloaded");
        Ok(())
    }

    /// Reload from a file; logs and counts the outcome.
    pub fn reload_from_file(&self, path: &Path) -> Result<(), ConfigError> {
        let result = ProxyConfig::load(path).and_then(|c| self.reload(c));
        let outcome = match &result {
            Ok(()) => "ok",
            Err(e) => {
                tracing::error!(path = %path.display(), error = %crate::error::Chain(e), "config reload rejected; keeping the active config");
                "rejected"
            }
        };
        self.shared
            .metrics
            .reloads
            .get_or_create(&vec![("result".to_string(), outcome.to_string())])
            .inc();
        result
    }

    /// Reload from the file given to [`Proxy::with_config_file`], if any.
    pub fn reload_config_file(&self) -> Option<Result<(), ConfigError>> {
        self.config_file
            .as_deref()
            .map(|p| self.reload_from_file(p))
    }

    /// The active config generation (starts at 1, +1 per reload).
    pub fn generation(&self) -> u64 {
        self.shared.runtime.load().generation
    }

    /// Prometheus text of the current metrics.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.encode()
    }
}

/// Serve `config` on the given listeners until `shutdown` completes.
pub async fn serve(
    config: ProxyConfig,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    Proxy::new(config)
        .serve(listener, admin_listener, shutdown)
        .await
}
