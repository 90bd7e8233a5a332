//! The authentication layer over `/api`: `Authorization: Bearer` → [`Caller`].
//!
//! Runs before every handler; handlers then authorise the tenant they touch.
//! A refused token answers 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3).

use super::{Authenticator, Caller};
use crate::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What the layer needs from the dashboard's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    pub auth: Option<Arc<dyn Authenticator>>,
    pub public_read: bool,
}

/// 401 with the challenge header.
pub(crate) fn unauthorized(code: &'static str, message: impl Into<String>) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"palisade-dashboard\""),
    );
    resp
}

/// The layer: puts the [`Caller`] in the request's (and the response's) extensions.
pub(crate) async fn layer(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let caller = match resolve(&gate, req.headers(), write).await {
        Ok(c) => c,
        Err(Refusal::Unauthorized(code, message)) => return unauthorized(code, message),
        Err(Refusal::Unavailable(message)) => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable", message)
                .into_response();
        }
    };
    req.extensions_mut().insert(caller.clone());
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(caller);
    resp
}

/// Why a request gets no caller.
enum Refusal {
    /// 401 with this code and message.
    Unauthorized(&'static str, &'static str),
    /// The authenticator could not answer (503).
    Unavailable(String),
}

async fn resolve(gate: &Gate, headers: &HeaderMap, write: bool) -> Result<Caller, Refusal> {
    let Some(auth) = &gate.auth else {
        return Ok(Caller::Anonymous);
    };
    match bearer(headers)? {
        Some(token) => match auth.authenticate(token).await {
            Ok(Some(id)) => Ok(Caller::User(id)),
            Ok(None) => Err(Refusal::Unauthorized(
                "invalid_token",
                "the bearer token was not accepted; log in again",
            )),
            Err(e) => {
                let message = crate::error::error_chain(&e);
                tracing::warn!(error = %message, "authentication failed");
                Err(Refusal::Unavailable(message))
            }
        },
        None if !write && gate.public_read => Ok(Caller::Anonymous),
        None => Err(Refusal::Unauthorized(
            "unauthenticated",
            "this dashboard requires authentication: send Authorization: Bearer TOKEN (log in at /login)",
        )),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme is
/// case-insensitive (RFC 7235 §2.1). Another scheme or an empty token is refused.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        Refusal::Unauthorized(
            "invalid_token",
            "the Authorization header must be `Bearer TOKEN`",
        )
    };
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token))
}
