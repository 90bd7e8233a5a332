//! The running operator: two controllers (tenants, workloads), the
//! garbage-collection loop, leader election, and the HTTP endpoints for
//! health and metrics.
//!
//! Leader election (a `Lease`, by client-go's rules: [`crate::lease`]) keeps two replicas
//! from doing the same work twice; correctness does not depend on it,
//! because subnet claims are decided by the API server's name uniqueness
//! and every write is idempotent. A replica that loses the lease stops its
//! controllers at once and waits to lead again; its endpoints stay up, so
//! the standby replica is ready (it serves) but idle.

use crate::crd::{SubnetClaim, Tenant, TenantDeployment};
use crate::desired::{self, FIELD_MANAGER};
use crate::lease;
use crate::metrics::Metrics;
use crate::reconcile::{self, Ctx};
use crate::{Config, Error};
use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use k8s_openapi::api::apps::v1::Deployment as K8sDeployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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
    let delay = ctx.failed(&key, error.to_string());
    tracing::warn!(object = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn timed<K, F>(ctx: &Ctx, controller: &str, obj: &K, fut: F) -> Result<Action, Error>
where
    K: kube::Resource<DynamicType = ()>,
    F: std::future::Future<Output = Result<Action, Error>>,
{
    let start = Instant::now();
    let result = fut.await;
    ctx.metrics
        .observe(controller, start.elapsed().as_secs_f64(), result.is_ok());
    if result.is_ok() {
        ctx.succeeded(&ObjectRef::from_obj(obj).to_string());
    }
    result
}

/// Logs a controller's stream error at the level it deserves: a watch or
/// list refused with 403 (RBAC) or 404 (CRD missing) means the controller
/// is blind and is an error; what the reconciler returned was logged by
/// [`error_policy`].
fn log_stream_error<E: std::fmt::Display>(
    controller: &str,
    e: &kube::runtime::controller::Error<E, watcher::Error>,
) {
    use kube::runtime::controller::Error as C;
    let code = match e {
        C::QueueError(watcher::Error::WatchError(s)) => Some(s.code),
        C::QueueError(
            watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s)),
        ) => Some(s.code),
        _ => None,
    };
    match (e, code) {
        (_, Some(403)) => {
            tracing::error!(controller, error = %e, "watch forbidden: the operator's RBAC rules lack list/watch on this kind")
        }
        (_, Some(404)) => {
            tracing::error!(controller, error = %e, "watch failed: the kind is not served (CRD not installed?)")
        }
        (C::QueueError(_) | C::RunnerError(_), _) => {
            tracing::warn!(controller, error = %e, "controller stream error")
        }
        _ => tracing::debug!(controller, error = %e, "controller"),
    }
}

fn tenant_ref_of_namespace(ns: Option<String>) -> Option<ObjectRef<Tenant>> {
    let t = desired::tenant_of_namespace(&ns?).ok()?;
    Some(ObjectRef::new(t.as_str()))
}

/// Runs both controllers and the garbage collector until the future is
/// dropped; marks `health` ready once both controllers' caches are
/// synced. Returns only if a controller's stream ends.
pub async fn controllers(ctx: Arc<Ctx>, health: Arc<Health>) {
    let client = ctx.client.clone();
    let tenant_controller = Controller::new(
        Api::<Tenant>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<TenantDeployment>::all(client.clone()),
        watcher::Config::default(),
        |w| tenant_ref_of_namespace(w.namespace()),
    )
    .watches(
        Api::<SubnetClaim>::all(client.clone()),
        watcher::Config::default(),
        |c| Some(ObjectRef::<Tenant>::new(&c.spec.tenant)),
    );
    let tenant_store = tenant_controller.store();
    let tenants = tenant_controller
        .run(
            |t, ctx| async move {
                timed(&ctx, "tenant", &*t, reconcile::reconcile_tenant(&t, &ctx)).await
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                log_stream_error("tenant", &e);
            }
        });
    let workload_controller = Controller::new(
        Api::<TenantDeployment>::all(client.clone()),
        watcher::Config::default(),
    )
    // Rollouts move readiness (kstatus): the workload's Deployment is
    // watched, not polled.
    .watches(
        Api::<K8sDeployment>::all(client.clone()),
        watcher::Config::default().labels(&format!(
            "{}={}",
            palisade_kube::render::MANAGED_BY.0,
            desired::MANAGED_BY_OPERATOR
        )),
        |d| Some(ObjectRef::<TenantDeployment>::new(&d.name_any()).within(&d.namespace()?)),
    )
    // A deleted claim is repaired at once (not at the next requeue).
    .watches(
        Api::<SubnetClaim>::all(client.clone()),
        watcher::Config::default(),
        |c| Some(ObjectRef::<TenantDeployment>::new(&c.spec.deployment).within(&c.spec.namespace)),
    );
    let workload_store = workload_controller.store();
    let workloads = workload_controller
        .run(
            |w, ctx| async move {
                timed(
                    &ctx,
                    "workload",
                    &*w,
                    reconcile::reconcile_workload(&w, &ctx),
                )
                .await
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                log_stream_error("workload", &e);
            }
        });
    let synced = async {
        let (t, w) = tokio::join!(
            tenant_store.wait_until_ready(),
            workload_store.wait_until_ready()
        );
        if t.is_ok() && w.is_ok() {
            tracing::info!("caches synced");
            health.set_ready(true);
        }
        std::future::pending::<()>().await;
    };
    let gc = {
        let ctx = ctx.clone();
        async move {
            loop {
                match reconcile::collect_garbage(&ctx).await {
                    Ok(gone) if !gone.is_empty() => {
                        tracing::info!(count = gone.len(), "garbage collection")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
                }
                tokio::time::sleep(ctx.config.gc_interval).await;
            }
        }
    };
    tokio::select! {
        () = tenants => health.fail("the tenant controller stopped"),
        () = workloads => health.fail("the workload controller stopped"),
        () = gc => {}
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
        tokio::select! {
            () = controllers(ctx, health.clone()) => {
                return Err(Error::Config(health.broken().unwrap_or_else(|| "controllers stopped".into())));
            }
            why = &mut config_changed => return Err(Error::Config(why)),
            () = &mut shutdown => tracing::info!("shutting down"),
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
        let mut work = tokio::spawn(controllers(ctx.clone(), health.clone()));
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
                work.abort();
                return Err(Error::Config(why));
            }
            () = &mut shutdown => {
                work.abort();
                metrics.leader.set(0);
                break;
            }
        }
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
