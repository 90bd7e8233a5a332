//! The running operator: two controllers (tenants, workloads), the
//! garbage-collection loop, leader election, and the HTTP endpoints for
//! health and metrics.
//!
//! Leader election (a `Lease` via `kube-lease-manager`) keeps two replicas
//! from doing the same work twice; correctness does not depend on it,
//! because subnet claims are decided by the API server's name uniqueness
//! and every write is idempotent. A replica that loses the lease stops its
//! controllers at once and waits to lead again; its endpoints stay up, so
//! the standby replica is ready (it serves) but idle.

use crate::crd::{SubnetClaim, Tenant, TenantDeployment};
use crate::desired::{self, FIELD_MANAGER};
use crate::metrics::Metrics;
use crate::reconcile::{self, Ctx};
use crate::{Config, Error};
use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
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

fn error_policy<K>(_: Arc<K>, error: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn timed<F>(ctx: &Ctx, controller: &str, fut: F) -> Result<Action, Error>
where
    F: std::future::Future<Output = Result<Action, Error>>,
{
    let start = Instant::now();
    let result = fut.await;
    ctx.metrics
        .observe(controller, start.elapsed().as_secs_f64(), result.is_ok());
    result
}

fn tenant_ref_of_namespace(ns: Option<String>) -> Option<ObjectRef<Tenant>> {
    let t = desired::tenant_of_namespace(&ns?).ok()?;
    Some(ObjectRef::new(t.as_str()))
}

/// Runs both controllers and the garbage collector until the future is
/// dropped.
pub async fn controllers(ctx: Arc<Ctx>) {
    let client = ctx.client.clone();
    let tenants = Controller::new(
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
    )
    .run(
        |t, ctx| async move { timed(&ctx, "tenant", reconcile::reconcile_tenant(&t, &ctx)).await },
        error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "tenant controller");
        }
    });
    let workloads =
        Controller::new(
            Api::<TenantDeployment>::all(client.clone()),
            watcher::Config::default(),
        )
        // A deleted claim is repaired at once (not at the next requeue).
        .watches(
            Api::<SubnetClaim>::all(client.clone()),
            watcher::Config::default(),
            |c| {
                Some(
                    ObjectRef::<TenantDeployment>::new(&c.spec.deployment)
                        .within(&c.spec.namespace),
                )
            },
        )
        .run(
            |w, ctx| async move {
                timed(&ctx, "workload", reconcile::reconcile_workload(&w, &ctx)).await
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "workload controller");
            }
        });
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
    tokio::join!(tenants, workloads, gc);
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
    let ready = Arc::new(AtomicBool::new(false));
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
    tokio::spawn(serve_endpoints(listener, metrics.clone(), ready.clone()));

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
        ready.store(true, Ordering::Relaxed);
        metrics.leader.set(1);
        tokio::select! {
            () = controllers(ctx) => {}
            () = &mut shutdown => tracing::info!("shutting down"),
        }
        return Ok(());
    }

    let manager = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(&options.lease_namespace)
        .with_identity(&options.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|e| Error::Config(format!("cannot set up leader election: {e}")))?;
    let (mut leading, lease_task) = manager.watch().await;
    ready.store(true, Ordering::Relaxed);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            changed = leading.changed() => if changed.is_err() {
                return Err(Error::Config("leader election stopped".into()));
            },
        }
        if !*leading.borrow_and_update() {
            continue;
        }
        tracing::info!(identity = %options.identity, "leading");
        metrics.leader.set(1);
        let work = tokio::spawn(controllers(ctx.clone()));
        let lost = async {
            while *leading.borrow_and_update() {
                if leading.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = lost => tracing::warn!("lost the lease; stopping controllers"),
            () = &mut shutdown => {
                work.abort();
                metrics.leader.set(0);
                break;
            }
        }
        work.abort();
        metrics.leader.set(0);
    }
    tracing::info!("shutting down; releasing the lease");
    drop(leading);
    if let Ok(Ok(m)) = lease_task.await {
        drop(m);
    }
    Ok(())
}

/// Serves `/healthz` (the process is alive), `/readyz` (endpoints up and leader
/// election started), `/metrics`.
pub async fn serve_endpoints(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
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
pub fn endpoint(path: &str, metrics: &Metrics, ready: &AtomicBool) -> Response<Full<Bytes>> {
    let (code, ct, body) = match path {
        "/healthz" | "/livez" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "text/plain", "ok\n".to_owned())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "starting\n".to_owned(),
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
