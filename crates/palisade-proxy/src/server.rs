//! Listeners, the admin endpoint, reload and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, ProxyConfig};
use crate::metrics::Metrics;
use crate::proxy::{Shared, Sticky, handle};
use crate::resolve::{Resolver, SystemResolver};
use crate::runtime::Runtime;
use crate::sniff::Sniffer;
use crate::upstream::Pool;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener's local address could not be read.
    #[error("failed to read listener address: {0}")]
    Listener(#[source] std::io::Error),
}

/// A configured proxy, ready to serve.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    config_file: Option<PathBuf>,
    workers: Vec<Handle>,
}

/// A handle to a running (or about to run) proxy: reload and inspect it.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
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
            config_file: self.config_file.clone(),
        }
    }

    /// Serve clients on `listener` and the admin endpoint on `admin`, until
    /// `shutdown` completes; then stop accepting, let in-flight requests and
    /// tunnels finish for up to `timeouts.shutdown_grace`, and cut the rest.
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
        shared
            .runtime
            .store(Arc::new(Runtime::build(config.clone(), &own, None)));
        tracing::info!(
            listen = %own[0],
            admin = %own[1],
            tenants = config.tenants.len(),
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

        let cap = Arc::new(Semaphore::new(config.limits.max_connections));
        tokio::pin!(shutdown);
        let mut turn = 0usize;
        loop {
            let permit = tokio::select! {
                p = cap.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let draining = draining.clone();
            turn = (turn + 1) % (self.workers.len() + 1);
            let Some(worker) = turn.checked_sub(1).and_then(|i| self.workers.get(i)) else {
                connections.spawn(client_task(stream, peer, shared, draining, permit));
                continue;
            };
            // Re-register the socket with the worker's own reactor, so its
            // readiness events are handled on the thread that serves it.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(client = %peer, error = %e, "failed to hand a connection to a worker");
                    continue;
                }
            };
            worker.spawn(connections.track_future(async move {
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => client_task(stream, peer, shared, draining, permit).await,
                    Err(e) => tracing::warn!(client = %peer, error = %e, "worker failed to take a connection"),
                }
            }));
        }
        drop(listener);
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

async fn client_task(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    draining: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    shared.metrics.active_connections.inc();
    serve_client(stream, peer, shared.clone(), draining).await;
    shared.metrics.active_connections.dec();
    drop(permit);
}

async fn serve_client(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
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
            handle(shared.clone(), peer, flags.clone(), sticky.clone(), req)
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
    pub fn reload(&self, config: ProxyConfig) -> Result<(), ConfigError> {
        config.validate()?;
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
        tracing::info!(generation, "config reloaded");
        Ok(())
    }

    /// Reload from a file; logs and counts the outcome.
    pub fn reload_from_file(&self, path: &Path) -> Result<(), ConfigError> {
        let result = ProxyConfig::load(path).and_then(|c| self.reload(c));
        let outcome = match &result {
            Ok(()) => "ok",
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "config reload rejected; keeping the active config");
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
