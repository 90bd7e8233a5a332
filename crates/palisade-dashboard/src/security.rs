//! Response headers and the Host check shared by both servers.
//!
//! The pages load nothing from elsewhere, so a strict Content-Security-Policy
//! costs nothing and turns any injected markup into an inert string. The Host
//! check defeats DNS rebinding: a web page on another site cannot make a
//! browser read a loopback-only dashboard by pointing its own name at
//! 127.0.0.1, because the request then carries that name, not a loopback one.
//!
//! State-changing requests must also come from the dashboard's own origin.
//! Browsers send `Origin` on every request whose method is neither GET nor
//! HEAD (Fetch standard, "append a request `Origin` header"), so a write
//! whose `Origin` names another site is a cross-site request and refused; a
//! request without `Origin` comes from a non-browser client (curl, scripts),
//! which needs the bearer token anyway. This sits on top of requiring
//! `application/json` bodies, which cross-site forms cannot send.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Adds the security headers to every response.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// Whether a `Host` header names this machine's loopback: `localhost`, a
/// loopback IP, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:7474
        rest.split(']').next().unwrap_or("")
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or("")
    } else {
        host
    };
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses requests whose `Host` is not a loopback name (421), for servers
/// bound to loopback only.
pub async fn loopback_host_only(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    match host {
        Some(h) if !is_loopback_host(&h) => {
            let body = serde_json::json!({"error": {
                "code": "host_not_allowed",
                "message": format!("this dashboard listens on loopback only and does not answer for host {h:?}; start it with an explicit --listen to serve other names"),
            }});
            (StatusCode::MISDIRECTED_REQUEST, axum::Json(body)).into_response()
        }
        _ => next.run(req).await,
    }
}

/// Whether a browser's `Origin` names the same host and port as `Host`.
/// `Origin: null` (sandboxed frames, some redirects) never matches.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(origin) else {
        return false;
    };
    let (Some(o_host), Some(o_port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") || url.path() != "/" {
        return false;
    }
    // Host is `name[:port]`; without a port, the origin scheme's default.
    let Ok(h) = reqwest::Url::parse(&format!("{}://{host}/", url.scheme())) else {
        return false;
    };
    h.host_str().is_some_and(|n| n.eq_ignore_ascii_case(o_host))
        && h.port_or_known_default() == Some(o_port)
        && h.path() == "/"
        && h.username().is_empty()
}

fn cross_site(headers: &axum::http::HeaderMap) -> Option<Response> {
    let get = |name| headers.get(name).and_then(|h| h.to_str().ok());
    let origin = get(header::ORIGIN)?;
    let host = get(header::HOST).unwrap_or("");
    (!same_origin(origin, host)).then(|| {
        crate::ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("a write from origin {origin:?} to host {host:?} is cross-site and refused"),
        )
        .into_response()
    })
}

/// Refuses writes (403 `origin_not_allowed`) whose `Origin` is another site.
pub async fn same_origin_writes(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    if let Some(refusal) = cross_site(req.headers()) {
        return refusal;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_match_the_host() {
        for (origin, host) in [
            ("http://127.0.0.1:7474", "127.0.0.1:7474"),
            ("http://dash.example", "dash.example"),
            ("https://dash.example", "dash.example"),
            ("https://dash.example", "dash.example:443"),
            ("http://[::1]:7474", "[::1]:7474"),
            ("http://Dash.Example:8080", "dash.example:8080"),
        ] {
            assert!(same_origin(origin, host), "{origin} {host}");
        }
        for (origin, host) in [
            ("http://evil.example", "dash.example"),
            ("http://dash.example:8080", "dash.example:7474"),
            ("http://dash.example", "dash.example:8080"),
            ("null", "dash.example"),
            ("ftp://dash.example", "dash.example"),
            ("http://dash.example", ""),
            ("http://dash.example", "dash.example/x"),
            ("http://dash.example", "user@dash.example"),
        ] {
            assert!(!same_origin(origin, host), "{origin} {host}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:7474",
            "127.0.0.1:7474",
            "127.0.0.1",
            "[::1]:7474",
            "::1",
            "LOCALHOST",
            "app.localhost:1",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7474",
            "10.0.0.1:7474",
            "[2001:db8::1]:80",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
