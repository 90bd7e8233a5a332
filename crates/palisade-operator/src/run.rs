//! The running operator: three controllers (tenants, workloads, claims)
//! fed by the shared caches of [`crate::cache`], leader election, and the
//! HTTP endpoints for health and metrics.
//!
//! Leader election (a `Lease`, by client-go's rules: [`crate::lease`]) keeps two replicas
//! from doing the same work twice; correctness does not depend on it,
//! because subnet claims are decided by the API server's name uniqueness
//! and every write is idempotent. A replica that loses the lease stops its
//! controllers at once and waits to lead again; its endpoints stay up, so
//! the standby replica is ready (it serves) but idle.

use crate::cache::Triggers;
use crate::crd::{SubnetClaim, Tenant, TenantDeployment};
use crate::desired::{self, FIELD_MANAGER};
use crate::lease;
use crate::metrics::Metrics;
use crate::reconcile::{self, Ctx};
use crate::{Config, Error};
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{applier, watcher};
use kube::{Api, Client, ResourceExt};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Name of the leader-election Lease.
pub const LEASE_NAME: &str = "palisade-operator";

/// How the process runs (besides [`Config`]).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Address of the health and metrics endpoints.
    pub listen: SocketAddr,
    /// Namespace of the Lease (the operator's own).
    pub lease_namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Run without a Lease (one replica only, e.g. on a laptop).
    pub leader_election: bool,
}

/// What `/healthz` and `/readyz` report: whether the controllers still
/// run, and whether their caches are synced (or this replica is standby).
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    broken: std::sync::Mutex<Option<String>>,
}

impl Health {
    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Records that the controllers stopped, and why: `/healthz` fails
    /// from now on, so the kubelet restarts the container.
    pub fn fail(&self, why: impl Into<String>) {
        let why = why.into();
        tracing::error!(reason = %why, "controllers stopped");
        *self
            .broken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
        self.set_ready(false);
    }

    /// Why the controllers stopped, if they did.
    pub fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Per-object exponential backoff with jitter
/// ([`crate::status::backoff_delay`]) instead of a fixed retry: a failing
/// object waits longer each time, and objects that failed together do
/// not retry together.
fn error_policy<K: kube::Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Ctx>,
) -> Action {
    let key = ObjectRef::from_obj(&*obj).to_string();
    let delay = ctx.failed(&key, desired::explain(error));
    tracing::warn!(object = %key, error = %desired::explain(error), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// How each controller's queue is worked (kube-runtime's
/// `controller::Config`): at most this many reconciles at once, and
/// requests for one object within the debounce window merged into one
/// (an apply's own watch events come in bursts).
fn tenant_config() -> controller::Config {
    controller::Config::default()
        .concurrency(16)
        .debounce(Duration::from_millis(100))
}

fn workload_config() -> controller::Config {
    controller::Config::default()
        .concurrency(32)
        .debounce(Duration::from_millis(20))
}

fn claim_config() -> controller::Config {
    controller::Config::default()
        .concurrency(8)
        .debounce(Duration::from_millis(100))
}

/// How long a graceful shutdown waits for in-flight reconciles.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs `reconcile` on its own task (both cores work), timed and counted;
/// aborted if the controller drops it.
fn spawned<F>(
    ctx: &Arc<Ctx>,
    controller: &'static str,
    key: String,
    reconcile: F,
) -> futures::future::BoxFuture<'static, Result<Action, Error>>
where
    F: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    let ctx = ctx.clone();
    let task = AbortOnDrop(tokio::spawn(async move {
        let start = Instant::now();
        let result = reconcile.await;
        ctx.metrics
            .observe(controller, start.elapsed().as_secs_f64(), result.is_ok());
        if result.is_ok() {
            ctx.succeeded(&key);
        }
        result
    }));
    Box::pin(async move {
        let mut task = task;
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => std::future::pending().await,
        }
    })
}

fn key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    ObjectRef::from_obj(obj).to_string()
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs what a controller's stream reports besides successes; failed
/// reconciles were logged by [`error_policy`].
fn log_result<K: kube::Resource, E: std::fmt::Display>(
    controller: &'static str,
    r: Result<(ObjectRef<K>, Action), controller::Error<E, Infallible>>,
) -> std::future::Ready<()> {
    use kube::runtime::controller::Error as C;
    match r {
        Ok(_) | Err(C::ReconcilerFailed(..)) => {}
        Err(C::ObjectNotFound(o)) => {
            tracing::debug!(controller, object = %o, "gone before its reconcile")
        }
        Err(e) => tracing::warn!(controller, error = %e, "controller error"),
    }
    std::future::ready(())
}

/// A controller's queue: the triggers the caches send, until `shutdown`
/// (kube-runtime's graceful shutdown: the queue ends, reconciles in
/// flight finish, then the controller's stream ends).
fn queue<K: kube::Resource>(
    rx: mpsc::UnboundedReceiver<ObjectRef<K>>,
    shutdown: Shutdown,
) -> impl futures::Stream<Item = Result<ObjectRef<K>, Infallible>> {
    rx.map(Ok).take_until(shutdown)
}

type Shutdown = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// How long the platform controller collects changes before it renders:
/// its objects depend on every tenant, so a burst of changes (a start, a
/// batch of new workloads) makes one render, not one per change.
const PLATFORM_DEBOUNCE: Duration = Duration::from_millis(500);

/// The platform's controller ([`crate::platform`]): one key (the platform
/// is rendered from all tenants at once), triggered by the caches when a
/// tenant, workload or claim changes, debounced, retried with backoff.
async fn platform_controller(ctx: Arc<Ctx>, rx: mpsc::UnboundedReceiver<()>, shutdown: Shutdown) {
    const KEY: &str = "platform";
    let rx = rx.take_until(shutdown);
    futures::pin_mut!(rx);
    let mut retry: Option<Duration> = None;
    let mut state = crate::platform::PlatformState::default();
    loop {
        // The platform's objects are not watched: at each resync the
        // remembered hashes are dropped, so the next pass reads every
        // object back (single GETs) and repairs what was edited or deleted
        // behind the operator's back.
        let wait = retry.unwrap_or(ctx.config.resync);
        let next = match tokio::time::timeout(wait, rx.next()).await {
            Ok(next) => next,
            Err(_elapsed) => {
                if retry.is_none() {
                    state.forget();
                }
                Some(())
            }
        };
        if next.is_none() {
            return;
        }
        // Trailing debounce: what arrives meanwhile is part of this render.
        tokio::time::sleep(PLATFORM_DEBOUNCE).await;
        while let Some(Some(())) = rx.next().now_or_never() {}
        let tenants: Vec<Tenant> = ctx
            .caches
            .tenants
            .state()
            .iter()
            .map(|t| (**t).clone())
            .collect();
        let workloads: Vec<TenantDeployment> = ctx
            .caches
            .workloads
            .state()
            .iter()
            .map(|w| (**w).clone())
            .collect();
        let claims: Vec<SubnetClaim> = ctx
            .caches
            .claims
            .state()
            .iter()
            .map(|c| (**c).clone())
            .collect();
        let start = Instant::now();
        let result = match ctx.caches.platform() {
            Ok(platform) => {
                let inputs = crate::platform::Inputs {
                    tenants: &tenants,
                    workloads: &workloads,
                    claims: &claims,
                    platform: platform.as_deref().map(|p| &p.spec),
                };
                crate::platform::reconcile_platform(&ctx, &mut state, inputs).await
            }
            Err(e) => Err(e),
        };
        ctx.metrics
            .observe(KEY, start.elapsed().as_secs_f64(), result.is_ok());
        retry = match result {
            Ok(outcome) => {
                ctx.succeeded(KEY);
                if outcome.applied + outcome.pruned > 0 {
                    tracing::info!(
                        applied = outcome.applied,
                        pruned = outcome.pruned,
                        "platform reconciled"
                    );
                }
                None
            }
            Err(e) => {
                let delay = ctx.failed(KEY, desired::explain(&e));
                tracing::warn!(error = %desired::explain(&e), retry_in = ?delay, "platform reconcile failed");
                Some(delay)
            }
        };
    }
}

/// Runs the three controllers (tenants, workloads, claims) and the
/// watches that feed them until the future is dropped; marks `health`
/// ready once every cache is synced. Returns only if a controller or a
/// watch stops. This is what a benchmark runs.
pub async fn controllers(ctx: Arc<Ctx>, health: Arc<Health>) {
    controllers_until(ctx, health, std::future::pending()).await;
}

/// [`controllers`] with a graceful shutdown: when `shutdown` completes,
/// no new reconcile starts, those in flight finish, and this returns.
pub async fn controllers_until(
    ctx: Arc<Ctx>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shutdown: Shutdown = shutdown.boxed().shared();
    let (tenant_tx, tenant_rx) = mpsc::unbounded();
    let (workload_tx, workload_rx) = mpsc::unbounded();
    let (claim_tx, claim_rx) = mpsc::unbounded();
    let (platform_tx, platform_rx) = mpsc::unbounded();
    let triggers = Triggers {
        tenants: tenant_tx,
        workloads: workload_tx,
        claims: claim_tx,
        platform: platform_tx,
    };
    let caches = ctx.caches.clone();
    let client = ctx.client.clone();
    let watch = async move { caches.run(&client, triggers).await };
    let appliers = {
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        async move {
            // Act only on a complete picture: a tenant reconciled before
            // the workloads and claims are listed would prune them.
            ctx.caches.core_synced().await;
            ctx.caches.settled().await;
            let tenants = applier(
                |t: Arc<Tenant>, ctx: Arc<Ctx>| {
                    let c = ctx.clone();
                    spawned(&ctx, "tenant", key(&*t), async move {
                        reconcile::reconcile_tenant(&t, &c).await
                    })
                },
                error_policy,
                ctx.clone(),
                ctx.caches.tenants.clone(),
                queue(tenant_rx, shutdown.clone()),
                tenant_config(),
            )
            .for_each(|r| log_result("tenant", r));
            let workloads = applier(
                |w: Arc<TenantDeployment>, ctx: Arc<Ctx>| {
                    let c = ctx.clone();
                    spawned(&ctx, "workload", key(&*w), async move {
                        reconcile::reconcile_workload(&w, &c).await
                    })
                },
                error_policy,
                ctx.clone(),
                ctx.caches.workloads.clone(),
                queue(workload_rx, shutdown.clone()),
                workload_config(),
            )
            .for_each(|r| log_result("workload", r));
            let claims = applier(
                |cl: Arc<SubnetClaim>, ctx: Arc<Ctx>| {
                    let c = ctx.clone();
                    spawned(&ctx, "claim", key(&*cl), async move {
                        reconcile::reconcile_claim(&cl, &c).await
                    })
                },
                error_policy,
                ctx.clone(),
                ctx.caches.claims.clone(),
                queue(claim_rx, shutdown.clone()),
                claim_config(),
            )
            .for_each(|r| log_result("claim", r));
            let platform = platform_controller(ctx.clone(), platform_rx, shutdown.clone());
            let (_, which, rest) = futures::future::select_all([
                tenants.map(|()| "tenant").boxed(),
                workloads.map(|()| "workload").boxed(),
                claims.map(|()| "claim").boxed(),
                platform.map(|()| "platform").boxed(),
            ])
            .await;
            futures::future::join_all(rest).await;
            which
        }
    };
    let synced = async {
        ctx.caches.synced().await;
        tracing::info!("caches synced");
        health.set_ready(true);
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = watch => health.fail("a watch stopped"),
        which = appliers => {
            if shutdown.peek().is_none() {
                health.fail(format!("the {which} controller stopped"));
            }
        }
        () = synced => {}
    }
}

/// Runs the operator until `shutdown` completes (the binary passes
/// SIGTERM/SIGINT).
pub async fn run(
    client: Client,
    config: Config,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Io {
            what: options.listen.to_string(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_or_else(|_| options.listen.to_string(), |a| a.to_string());
    tracing::info!(listen = %bound, "health and metrics endpoints");
    tokio::spawn(serve_endpoints(listener, metrics.clone(), health.clone()));
    reconcile::check_pool(&client, &config.pool).await?;
    let config_changed = config_changes(client.clone(), options.lease_namespace.clone()).await?;
    tokio::pin!(config_changed);

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(options.identity.clone()),
        },
    );
    let ctx = Arc::new(Ctx {
        metrics: metrics.clone(),
        recorder: Some(recorder),
        ..Ctx::new(client.clone(), config)
    });
    tokio::pin!(shutdown);

    if !options.leader_election {
        metrics.leader.set(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut work = tokio::spawn(controllers_until(ctx, health.clone(), stopped.map(|_| ())));
        tokio::select! {
            _ = &mut work => {
                return Err(Error::Config(health.broken().unwrap_or_else(|| "controllers stopped".into())));
            }
            why = &mut config_changed => {
                stop_gracefully(stop, work).await;
                return Err(Error::Config(why));
            }
            () = &mut shutdown => {
                tracing::info!("shutting down");
                stop_gracefully(stop, work).await;
            }
        }
        return Ok(());
    }

    let leases: Api<Lease> = Api::namespaced(client.clone(), &options.lease_namespace);
    let (mut leading, lease_task) = lease::elect(
        leases.clone(),
        LEASE_NAME.to_owned(),
        options.identity.clone(),
        lease::Timing::default(),
    );
    // A standby replica is ready: it serves and waits to lead.
    health.set_ready(true);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            why = &mut config_changed => return Err(Error::Config(why)),
            changed = leading.changed() => if changed.is_err() {
                return Err(Error::Config("leader election stopped".into()));
            },
        }
        if !*leading.borrow_and_update() {
            continue;
        }
        tracing::info!(identity = %options.identity, "leading");
        metrics.leader.set(1);
        // Not ready again until the leader's caches are synced.
        health.set_ready(false);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut work = tokio::spawn(controllers_until(
            ctx.clone(),
            health.clone(),
            stopped.map(|_| ()),
        ));
        let lost = async {
            while *leading.borrow_and_update() {
                if leading.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = lost => tracing::warn!("lost the lease; stopping controllers"),
            ended = &mut work => {
                metrics.leader.set(0);
                let why = match ended {
                    Err(e) if e.is_panic() => "a controller panicked".to_owned(),
                    _ => health.broken().unwrap_or_else(|| "controllers stopped".into()),
                };
                health.fail(why.clone());
                return Err(Error::Config(why));
            }
            why = &mut config_changed => {
                stop_gracefully(stop, work).await;
                return Err(Error::Config(why));
            }
            () = &mut shutdown => {
                stop_gracefully(stop, work).await;
                metrics.leader.set(0);
                break;
            }
        }
        // The lease is lost: another replica may act already; stop now.
        drop(stop);
        work.abort();
        metrics.leader.set(0);
        health.set_ready(true);
    }
    tracing::info!("shutting down; releasing the lease");
    lease_task.abort();
    if let Err(e) = lease::release(&leases, LEASE_NAME, &options.identity).await {
        tracing::warn!(error = %e, "cannot release the lease");
    }
    Ok(())
}

/// Ends the controllers gracefully (reconciles in flight finish), or
/// after [`SHUTDOWN_GRACE`] at once.
async fn stop_gracefully(
    stop: tokio::sync::oneshot::Sender<()>,
    mut work: tokio::task::JoinHandle<()>,
) {
    let _ = stop.send(());
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut work)
        .await
        .is_err()
    {
        tracing::warn!("reconciles still running after the grace period; stopping them");
        work.abort();
    }
}

/// Name of the operator's ConfigMap (its settings, read as environment).
pub const CONFIG_MAP: &str = "palisade-operator";

/// Completes (with a reason) when the operator's ConfigMap in `namespace`
/// changes after start. Its values reach the process as environment
/// variables, which Kubernetes never updates in a running container
/// (<https://kubernetes.io/docs/concepts/configuration/configmap/#configmaps-consumed-as-environment-variables>:
/// "require a pod restart"), so the operator exits and the kubelet starts
/// it again with the new settings; a changed pool is then checked against
/// the live claims ([`reconcile::check_pool`]) before anything runs.
/// Pending forever when there is no such ConfigMap (run outside a cluster).
async fn config_changes(
    client: Client,
    namespace: String,
) -> Result<impl std::future::Future<Output = String>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let initial = match api.get_opt(CONFIG_MAP).await {
        Ok(cm) => cm.map(|c| c.data.unwrap_or_default()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the operator's ConfigMap; not watching it");
            None
        }
    };
    Ok(async move {
        let Some(initial) = initial else {
            return std::future::pending().await;
        };
        let stream = watcher::watcher(
            api,
            watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}")),
        )
        .default_backoff()
        .applied_objects();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(cm)
                    if cm.name_any() == CONFIG_MAP
                        && cm.data.clone().unwrap_or_default() != initial =>
                {
                    return format!(
                        "ConfigMap {namespace}/{CONFIG_MAP} changed; exiting so the new settings take effect"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watching the operator's ConfigMap"),
            }
        }
        std::future::pending().await
    })
}

/// Serves `/healthz` (the controllers run), `/readyz` (a leader's
/// caches are synced, or a standby waits), `/metrics`.
pub async fn serve_endpoints(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<Health>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                let ready = ready.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(endpoint(req.uri().path(), &metrics, &ready))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

/// The response of one endpoint.
pub fn endpoint(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let (code, ct, body) = match path {
        "/healthz" | "/livez" => match health.broken() {
            None => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        "/readyz" if health.is_ready() => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "caches not synced\n".to_owned(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = http::HeaderValue::from_str(ct) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// Completes on SIGTERM or SIGINT.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
