//! API errors: a status code and a JSON body `{"error": {"code", "message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use palisade_backend::BackendError;
use palisade_store::StoreError;

/// The `code` of an error response, kept in the response's extensions for
/// the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// An error answered as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`tenant_not_found`, ...).
    pub code: &'static str,
    /// One line for people.
    pub message: String,
}

impl ApiError {
    /// An error with the given parts.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for an unknown API path.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no API endpoint {path}; see docs/dashboard.md"),
        )
    }

    /// 500 for a failure inside the dashboard.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// What a backend call failed with: the store's own errors keep their
    /// codes (on both stores); anything else is the store failing, and on
    /// the `cluster` a 502, since the API server behind it did.
    pub fn from_backend(e: palisade_backend::Error, cluster: bool) -> Self {
        use palisade_backend::Error;
        let e = match e {
            Error::Store(e) => return e.into(),
            e => e,
        };
        let (status, code) = match &e {
            Error::Refused(BackendError::CrdsMissing { .. } | BackendError::PoolUnknown { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "not_initialised")
            }
            Error::Refused(BackendError::DeploymentExists { .. }) => {
                (StatusCode::CONFLICT, "deployment_exists")
            }
            Error::Refused(BackendError::DuplicateInBatch { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid_body")
            }
            Error::Model(_) | Error::Pool(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_state")
            }
            _ if cluster => (StatusCode::BAD_GATEWAY, "cluster_error"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        };
        Self::new(status, code, chain(&e))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::NotInitialised { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "not_initialised")
            }
            StoreError::TenantNotFound(_) => (StatusCode::NOT_FOUND, "tenant_not_found"),
            StoreError::DeploymentNotFound { .. } => {
                (StatusCode::NOT_FOUND, "deployment_not_found")
            }
            StoreError::DeploymentExists { .. } => (StatusCode::CONFLICT, "deployment_exists"),
            StoreError::PoolExhausted { .. } => (StatusCode::CONFLICT, "pool_exhausted"),
            StoreError::Model(_) => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_state"),
            StoreError::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_state"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        };
        Self::new(status, code, chain(&e))
    }
}

/// An error and its causes on one line, outermost first: messages say what
/// failed and leave the cause to `source()`, so the reply walks the chain.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut resp = (self.status, Json(body)).into_response();
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_reply_names_its_cause_once() {
        let e = StoreError::CreateDir {
            path: "/state".into(),
            source: std::io::Error::other("disk on fire"),
        };
        let reply = ApiError::from(e);
        assert_eq!(reply.code, "store_error");
        assert_eq!(
            reply.message,
            "failed to create the state directory /state: disk on fire"
        );
    }
}
