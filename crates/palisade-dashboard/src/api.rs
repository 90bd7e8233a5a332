//! The HTTP surface: the JSON API and the embedded pages.

use crate::auth::layer::Gate;
use crate::auth::{Access, Caller};
use crate::error::ApiError;
use crate::error::error_chain;
use crate::matrix::{self, LabState};
use crate::{Config, MAX_MATRIX, Source, audit, auth, egress, lab, security, views};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use palisade_backend::{Backend, Sqlite};
use palisade_core::{DeploymentName, Policy, TenantName};
use palisade_store::NewDeployment;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

#[derive(Debug)]
struct AppState {
    config: Config,
    /// For the proxy's metrics: never through a proxy from the environment.
    http: reqwest::Client,
}

type Shared = State<Arc<AppState>>;
type Who = Extension<Caller>;
type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// The dashboard's router: pages, assets and `/api/*`.
pub fn router(config: Config) -> Router {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let host_check = config.loopback_host_only;
    let gate = Gate {
        auth: config.auth.clone(),
        public_read: config.public_read,
    };
    let log = config.audit.clone();
    let state = Arc::new(AppState { config, http });
    let api = Router::new()
        .route("/config", get(config_info))
        .route("/tenants", get(tenants))
        .route("/tenants/{tenant}", get(tenant))
        .route("/tenants/{tenant}/deployments", post(create_deployment))
        .route(
            "/tenants/{tenant}/deployments/{deployment}",
            delete(delete_deployment),
        )
        .route("/stats", get(stats))
        .route("/history", get(history))
        .route("/matrix", get(matrix))
        .route("/egress", get(egress_page))
        .fallback(|uri: Uri| async move { ApiError::no_route(&format!("/api{}", uri.path())) })
        // Outermost last: audit sees every write, the origin check runs
        // before authentication, authentication before the handlers.
        .layer(axum::middleware::from_fn_with_state(
            gate,
            auth::layer::layer,
        ))
        .layer(axum::middleware::from_fn(security::same_origin_writes))
        .layer(axum::middleware::from_fn(move |req, next| {
            audit::layer(log.clone(), req, next)
        }));
    let router = Router::new()
        .route("/", get(page))
        .route("/tenants/{tenant}", get(page))
        .route("/matrix", get(page))
        .route("/egress", get(page))
        .route("/login", get(page))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .nest("/api", api)
        .fallback(not_found_page)
        .with_state(state);
    let router = if host_check {
        router.layer(axum::middleware::from_fn(security::loopback_host_only))
    } else {
        router
    };
    router.layer(axum::middleware::from_fn(security::headers))
}

async fn page() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn not_found_page(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(format!(
            "<!doctype html><title>Not found</title><p>No page at <code>{}</code>. <a href=\"/\">Overview</a></p>",
            escape(uri.path())
        )),
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Runs `f` on the backend: SQLite freshly opened in a blocking task, the
/// cluster on its own thread.
async fn with_backend<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut dyn Backend) -> palisade_backend::Result<T> + Send + 'static,
) -> ApiResult<T> {
    match &state.config.store {
        Source::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || f(&mut Sqlite::at(path)))
                .await
                .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
                .map_err(|e| ApiError::from_backend(e, false))
        }
        Source::Kubernetes(thread) => thread
            .call(f)
            .await
            .map_err(|e| ApiError::from_backend(e, true)),
    }
}

fn tenant_name(raw: &str) -> ApiResult<TenantName> {
    raw.parse().map_err(|e| {
        ApiError::bad_request(
            "invalid_tenant_name",
            format!("invalid tenant name {raw:?}: {e}"),
        )
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> ApiResult {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError::internal(format!("failed to encode JSON: {e}")))
}

async fn config_info(State(s): Shared, Extension(who): Who) -> ApiResult {
    let all_tenants = may(&s, &who, &Access::ReadAll).await?;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "allow_writes": s.config.allow_writes,
        "auth": s.config.auth.as_ref().map_or("none", |a| a.kind()),
        "public_read": s.config.public_read,
        "user": match &who { Caller::User(id) => Some(&id.user), Caller::Anonymous => None },
        "all_tenants": all_tenants,
        "proxy_metrics": s.config.proxy_metrics,
        "lab_dir": s.config.lab_dir.as_ref().map(|d| d.display().to_string()),
        "store": match &s.config.store { Source::Sqlite(_) => "sqlite", Source::Kubernetes(_) => "kubernetes" },
        "state": match &s.config.store {
            Source::Sqlite(path) => Some(path.display().to_string()),
            Source::Kubernetes(_) => None,
        },
    })))
}

/// Whether `who` may do `access`; `Err` only when that cannot be decided.
async fn may(s: &AppState, who: &Caller, access: &Access) -> ApiResult<bool> {
    match (who, &s.config.auth) {
        // Public read is read-only; otherwise an anonymous caller exists
        // only where no authenticator is configured (loopback).
        (Caller::Anonymous, _) => Ok(!(access.is_write() && s.config.public_read)),
        (Caller::User(id), Some(auth)) => auth.authorize(id, access).await.map_err(|e| {
            tracing::warn!(error = %error_chain(&e), "authorization failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                error_chain(&e),
            )
        }),
        (Caller::User(_), None) => Ok(false),
    }
}

/// Answers 403 `forbidden` unless `who` may do `access`.
async fn authorize(s: &AppState, who: &Caller, access: Access) -> ApiResult<()> {
    if may(s, who, &access).await? {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("{} may not {access}", who.name()),
    ))
}

/// The tenants among `names` that `who` may read; `None` means all of them
/// (and the platform-wide views).
async fn visible(
    s: &AppState,
    who: &Caller,
    names: Vec<String>,
) -> ApiResult<Option<BTreeSet<String>>> {
    if may(s, who, &Access::ReadAll).await? {
        return Ok(None);
    }
    // One review per tenant; a Kubernetes authenticator asks the API server,
    // so a few at a time rather than one after another.
    let checks = names.into_iter().map(|name| async move {
        let Ok(t) = name.parse() else {
            return ApiResult::Ok(None);
        };
        Ok(may(s, who, &Access::Read(t)).await?.then_some(name))
    });
    let seen: Vec<Option<String>> = futures::stream::iter(checks)
        .buffered(16)
        .try_collect()
        .await?;
    Ok(Some(seen.into_iter().flatten().collect()))
}

async fn tenants(State(s): Shared, Extension(who): Who) -> ApiResult {
    let usage = with_backend(&s, |b| b.tenant_usage()).await?;
    let mut rows = views::tenants(&usage);
    if let Some(seen) = visible(&s, &who, rows.iter().map(|r| r.name.clone()).collect()).await? {
        rows.retain(|r| seen.contains(&r.name));
    }
    Ok(Json(json!({ "tenants": rows })))
}

async fn tenant(State(s): Shared, Extension(who): Who, Path(raw): Path<String>) -> ApiResult {
    let name = tenant_name(&raw)?;
    authorize(&s, &who, Access::Read(name.clone())).await?;
    let page = with_backend(&s, move |b| b.tenant_page(&name)).await?;
    to_json(&views::tenant_detail(
        &page.tenant.tenant,
        &page.deployments,
        &page.gateways,
        &page.allow_rules,
    ))
}

async fn stats(State(s): Shared, Extension(who): Who) -> ApiResult {
    authorize(&s, &who, Access::ReadAll).await?;
    let (pool, usage, counts) = with_backend(&s, |b| {
        let (pool, usage) = b.usage()?;
        Ok((pool, usage, b.object_counts()?))
    })
    .await?;
    to_json(&views::stats(&pool, &usage, &counts))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(
    State(s): Shared,
    Extension(who): Who,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    authorize(&s, &who, Access::ReadAll).await?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > 100_000 {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and 100000, not {limit}"),
        ));
    }
    let answer = with_backend(&s, move |b| match b.history(limit)? {
        Ok(events) => Ok(Ok((events, b.usage()?.1))),
        Err(none) => Ok(Err(none)),
    })
    .await?;
    let (events, usage) = match answer {
        Ok(found) => found,
        // Said, not faked: the page shows why there is no chart.
        Err(none) => {
            return Ok(Json(
                json!({ "points": [], "events": [], "unavailable": none.0 }),
            ));
        }
    };
    Ok(Json(json!({
        "points": views::allocation_series(&events, usage.allocated)
            .iter()
            .map(|p| json!({ "at": p.at, "allocated": p.allocated.to_string() }))
            .collect::<Vec<_>>(),
        "events": events,
    })))
}

#[derive(Debug, Deserialize)]
struct MatrixQuery {
    tenant: Option<String>,
}

async fn matrix(State(s): Shared, Extension(who): Who, Query(q): Query<MatrixQuery>) -> ApiResult {
    let tenant = q
        .tenant
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(tenant_name)
        .transpose()?;
    match &tenant {
        Some(t) => authorize(&s, &who, Access::Read(t.clone())).await?,
        None if !may(&s, &who, &Access::ReadAll).await? => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{} may not see every tenant's matrix; pass ?tenant=NAME",
                    who.name()
                ),
            ));
        }
        None => {}
    }
    let too_large = |size: u64| {
        ApiError::bad_request(
            "matrix_too_large",
            format!(
                "the matrix would have {size}×{size} cells (at most {MAX_MATRIX} deployments per side); pass ?tenant=NAME"
            ),
        )
    };
    // One tenant's part of the state gives the same verdicts between its
    // deployments as the whole; the whole is loaded only when small.
    let scoped = tenant.clone();
    let snapshot = with_backend(&s, move |b| match &scoped {
        Some(t) => Ok(Ok(b.tenant_snapshot(t)?)),
        None => {
            let size = b.object_counts()?.deployments;
            if size > MAX_MATRIX as u64 {
                return Ok(Err(size));
            }
            Ok(Ok(b.snapshot()?))
        }
    })
    .await?
    .map_err(too_large)?;
    if snapshot.deployments.len() > MAX_MATRIX {
        return Err(too_large(snapshot.deployments.len() as u64));
    }
    let dir = s.config.lab_dir.clone();
    let lab = tokio::task::spawn_blocking(move || match dir.map(|d| lab::load(&d)) {
        None | Some(Ok(None)) => LabState::Absent,
        Some(Ok(Some(r))) => LabState::Present(r),
        Some(Err(e)) => LabState::Unreadable(crate::error::chain(&e)),
    })
    .await
    .map_err(|e| ApiError::internal(format!("lab task failed: {e}")))?;
    let policy = Policy::compile(&snapshot);
    to_json(&matrix::build(&snapshot, &policy, tenant.as_ref(), &lab))
}

async fn egress_page(State(s): Shared, Extension(who): Who) -> ApiResult {
    let Some(url) = &s.config.proxy_metrics else {
        return Ok(Json(json!({
            "configured": false,
            "message": "proxy metrics are not configured: start the dashboard with --proxy-metrics http://<proxy admin address>/metrics",
        })));
    };
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "proxy_metrics_unavailable",
            format!("could not read the proxy's metrics from {url}: {why}"),
        )
    };
    let response = s
        .http
        .get(url)
        .send()
        .await
        .map_err(|e| unavailable(error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(unavailable(format!("HTTP {status}")));
    }
    let text = response
        .text()
        .await
        .map_err(|e| unavailable(error_chain(&e)))?;
    let mut summary = egress::summarise(&text).map_err(|e| unavailable(crate::error::chain(&e)))?;
    // Tenant `-` (callers the proxy did not recognise) is platform-wide.
    if let Some(seen) = visible(
        &s,
        &who,
        summary.tenants.iter().map(|t| t.tenant.clone()).collect(),
    )
    .await?
    {
        summary.tenants.retain(|t| seen.contains(&t.tenant));
    }
    let mut v = serde_json::to_value(&summary)
        .map_err(|e| ApiError::internal(format!("failed to encode JSON: {e}")))?;
    if let Value::Object(m) = &mut v {
        m.insert("configured".into(), json!(true));
        m.insert("source".into(), json!(url));
    }
    Ok(Json(v))
}

fn require_writes(s: &AppState) -> ApiResult<()> {
    if s.config.allow_writes {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "the dashboard is read-only; start it with --allow-writes to create or delete deployments",
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    image: String,
    #[serde(default)]
    replicas: Option<u32>,
    #[serde(default)]
    ports: Vec<u16>,
    // The same optional workload keys as `palisade import`.
    #[serde(default)]
    env: Vec<palisade_core::model::EnvVar>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    scratch: Vec<palisade_core::model::ScratchVolume>,
    #[serde(default)]
    security: Option<palisade_core::SecurityProfile>,
}

async fn create_deployment(
    State(s): Shared,
    Extension(who): Who,
    Path(raw): Path<String>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> ApiResult<Response> {
    require_writes(&s)?;
    let tenant = tenant_name(&raw)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    let invalid = |what: &str, e: palisade_core::ModelError| {
        ApiError::bad_request("invalid_body", format!("invalid {what}: {e}"))
    };
    let new = NewDeployment {
        tenant: tenant.clone(),
        name: body.name.parse().map_err(|e| invalid("name", e))?,
        image: body.image.parse().map_err(|e| invalid("image", e))?,
        replicas: body
            .replicas
            .unwrap_or(1)
            .try_into()
            .map_err(|e| invalid("replicas", e))?,
        ports: body
            .ports
            .iter()
            .map(|p| (*p).try_into())
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("ports", e))?,
        labels: Default::default(),
        workload: palisade_core::WorkloadSpec::new(
            body.env,
            body.command,
            body.args,
            body.scratch,
            body.security,
        )
        .map_err(|e| invalid("workload", e))?,
    };
    authorize(&s, &who, Access::Create(tenant.clone(), new.name.clone())).await?;
    let (tenant, created) = with_backend(&s, move |b| {
        // Tenants are created explicitly (CLI); the dashboard only adds
        // deployments to existing ones.
        let tenant = b.tenant(&tenant)?.tenant;
        Ok((tenant, b.create_deployments(std::slice::from_ref(&new))?))
    })
    .await?;
    let created = created
        .first()
        .ok_or_else(|| ApiError::internal("the store created no deployment"))?;
    let view = views::deployment_view(&tenant, &created.deployment);
    Ok((StatusCode::CREATED, to_json(&view)?).into_response())
}

async fn delete_deployment(
    State(s): Shared,
    Extension(who): Who,
    Path((raw_tenant, raw_deployment)): Path<(String, String)>,
) -> ApiResult {
    require_writes(&s)?;
    let tenant = tenant_name(&raw_tenant)?;
    let name: DeploymentName = raw_deployment.parse().map_err(|e| {
        ApiError::bad_request(
            "invalid_deployment_name",
            format!("invalid deployment name {raw_deployment:?}: {e}"),
        )
    })?;
    authorize(&s, &who, Access::Delete(tenant.clone(), name.clone())).await?;
    let removed = with_backend(&s, move |b| b.delete_deployment(&tenant, &name)).await?;
    Ok(Json(json!({
        "deleted": removed.deployments.iter().map(|(tenant, name, subnet)| json!({
            "tenant": tenant.to_string(),
            "name": name.to_string(),
            "subnet": subnet.map(|s| s.to_string()),
        })).collect::<Vec<_>>(),
        "allow_rules_removed": removed.allow_rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "gateways_removed": removed.gateways.iter().map(|g| g.id()).collect::<Vec<_>>(),
    })))
}
