//! The audit log: one JSON line per write attempt — who, what, when, result.
//!
//! Every `POST`/`DELETE` under `/api` is recorded, including the ones refused
//! before they reach a handler (no token, wrong origin), so the log answers
//! "who tried to change what" and not only "what changed". The records go to
//! their own writer (stdout by default, the pod's log) rather than through
//! `tracing`, whose level and format the operator may have turned down; a
//! `tracing` event at `info` carries the same fields.

use crate::auth::Caller;
use crate::error::ErrorCode;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Largest request body the audit layer reads (the API's bodies are tiny).
const MAX_BODY: usize = 64 * 1024;

/// Where audit records are written, one JSON object per line.
#[derive(Clone)]
pub struct AuditLog(Arc<Mutex<Box<dyn Write + Send>>>);

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

impl AuditLog {
    /// Records to standard output.
    pub fn stdout() -> Self {
        Self::to_writer(std::io::stdout())
    }

    /// Records to `w` (a file opened for appending, a test buffer).
    pub fn to_writer(w: impl Write + Send + 'static) -> Self {
        Self(Arc::new(Mutex::new(Box::new(w))))
    }

    /// Writes one record and flushes it.
    pub fn record(&self, record: &Value) {
        tracing::info!(target: "palisade_dashboard::audit", %record, "write");
        if let Ok(mut w) = self.0.lock() {
            // A full disk must not take the dashboard down; tracing has it too.
            let _ = writeln!(w, "{record}").and_then(|()| w.flush());
        }
    }
}

/// The layer: records every request that is not `GET`/`HEAD`.
pub(crate) async fn layer(log: AuditLog, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let method = req.method().to_string();
    // Inside `/api` the router sees the path without its prefix.
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path().to_owned(), |u| u.path().to_owned());
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        let resp = crate::ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        )
        .into_response();
        log.record(&entry(&method, &path, remote, None, &resp));
        return resp;
    };
    // The deployment a POST creates is named in its body.
    let named = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("name")?.as_str().map(str::to_owned));
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    log.record(&entry(&method, &path, remote, named, &resp));
    resp
}

fn entry(
    method: &str,
    path: &str,
    remote: Option<String>,
    named: Option<String>,
    resp: &Response,
) -> Value {
    let caller = resp.extensions().get::<Caller>();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (action, tenant, deployment) = match (method, segments.as_slice()) {
        ("POST", ["api", "tenants", t, "deployments"]) => {
            ("create_deployment", Some(*t), named.as_deref())
        }
        ("DELETE", ["api", "tenants", t, "deployments", d]) => {
            ("delete_deployment", Some(*t), Some(*d))
        }
        _ => ("other", None, None),
    };
    let status = resp.status();
    json!({
        "audit": true,
        "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "who": caller.map_or("unauthenticated", Caller::name),
        "groups": match caller { Some(Caller::User(id)) => id.groups.clone(), _ => Vec::new() },
        "remote": remote,
        "action": action,
        "method": method,
        "path": path,
        "tenant": tenant,
        "deployment": deployment,
        "status": status.as_u16(),
        "result": if status.is_success() { "ok" } else { resp.extensions().get::<ErrorCode>().map_or("error", |c| c.0) },
    })
}
