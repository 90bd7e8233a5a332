//! `palisade egress-check`: seed 002's demo web app.
//!
//! It runs in a tenant pod and answers the one question a tenant asks about
//! egress: "which address does the internet see when my pod goes out?". The
//! page shows the pod's identity (hostname, addresses, downward-API
//! variables, proxy settings) and buttons that make the request *server
//! side*, from the pod, through `HTTP_PROXY`/`HTTPS_PROXY` exactly as any
//! other program in the pod would (reqwest reads the same variables), then
//! shows the answer, the time it took and, on failure, what most likely
//! went wrong.

use crate::error::error_chain;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE_HTML: &str = include_str!("../assets/egress-check.html");
const PAGE_JS: &str = include_str!("../assets/egress-check.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The proxy variables shown and honoured, in the order shown.
pub const PROXY_VARS: [&str; 7] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Variables a Kubernetes manifest sets from the downward API.
pub const POD_VARS: [&str; 6] = [
    "POD_NAME",
    "POD_NAMESPACE",
    "POD_IP",
    "NODE_NAME",
    "HOST_IP",
    "SERVICE_ACCOUNT",
];

/// One button: a label and the URL it fetches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Stable id used in `/api/check/{id}`.
    pub id: String,
    /// Button text is `Test <label>`.
    pub label: String,
    /// What is fetched.
    pub url: String,
}

/// The seed's three buttons.
pub fn default_targets() -> Vec<Target> {
    [
        "External IP=https://ifconfig.me/ip",
        "ipinfo.io=https://ipinfo.io/json",
        "httpbin.org=https://httpbin.org/get",
    ]
    .iter()
    .filter_map(|s| parse_target(s).ok())
    .collect()
}

/// Parses `LABEL=URL` (the label becomes the button text `Test LABEL`)
/// or a bare `URL` (labelled by its host).
pub fn parse_target(s: &str) -> Result<Target, String> {
    let (label, url) = match s.split_once('=') {
        Some((l, u)) if !l.contains("://") => (l.trim().to_owned(), u.trim().to_owned()),
        _ => (String::new(), s.trim().to_owned()),
    };
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| format!("invalid target URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "invalid target URL {url:?}: only http and https are supported"
        ));
    }
    let label = if label.is_empty() {
        parsed.host_str().unwrap_or("target").to_owned()
    } else {
        label
    };
    let id: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if id.is_empty() {
        return Err(format!(
            "invalid target label {label:?}: needs a letter or digit"
        ));
    }
    Ok(Target { id, label, url })
}

/// How the app runs.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// The buttons (ids must be distinct).
    pub targets: Vec<Target>,
    /// Per-request time limit.
    pub timeout: Duration,
    /// The environment as seen at start (proxy and pod variables).
    pub env: Vec<(String, String)>,
}

impl CheckConfig {
    /// Checks the targets: at least one, distinct ids.
    pub fn validate(&self) -> Result<(), String> {
        if self.targets.is_empty() {
            return Err("at least one --target is needed".into());
        }
        for (i, t) in self.targets.iter().enumerate() {
            if self.targets[..i].iter().any(|o| o.id == t.id) {
                return Err(format!("two targets are labelled {:?}", t.label));
            }
        }
        Ok(())
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The proxy a request to `url` goes through according to the
    /// environment (curl's and reqwest's precedence), redacted.
    pub fn proxy_for(&self, url: &str) -> Option<String> {
        let https = url.starts_with("https:");
        let found = if https {
            self.var("HTTPS_PROXY").or_else(|| self.var("https_proxy"))
        } else {
            self.var("HTTP_PROXY").or_else(|| self.var("http_proxy"))
        }
        .or_else(|| self.var("ALL_PROXY"))
        .or_else(|| self.var("all_proxy"));
        found.map(redact)
    }
}

/// Reads the proxy and pod variables from the process environment.
pub fn env_snapshot() -> Vec<(String, String)> {
    PROXY_VARS
        .iter()
        .chain(POD_VARS.iter())
        .chain(["all_proxy"].iter())
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect()
}

/// Hides the password of a `scheme://user:password@host` URL.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// The address an IP-echo service answered with: a bare address
/// (`ifconfig.me/ip`), or the `ip` / `origin` field of a JSON answer
/// (ipinfo.io, httpbin.org).
pub fn extract_address(body: &str) -> Option<String> {
    let trimmed = body.trim();
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let v: Value = serde_json::from_str(trimmed).ok()?;
    ["ip", "origin"].iter().find_map(|k| {
        let s = v.get(k)?.as_str()?;
        // httpbin lists every hop: "client, proxy".
        let first = s.split(',').next()?.trim();
        first.parse::<IpAddr>().ok().map(|ip| ip.to_string())
    })
}

/// A failure, classified, with a sentence on what to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explained {
    /// `proxy_unreachable`, `connect`, `timeout`, `proxy_denied`,
    /// `proxy_auth`, `upstream`, `http_status`, `tls`, `request`.
    pub kind: &'static str,
    /// What happened (the error chain or the status).
    pub message: String,
    /// What it most likely means.
    pub explanation: String,
}

/// Explains an HTTP status the request ended with (`proxy` is the proxy
/// that was used, if any).
pub fn explain_status(status: u16, proxy: Option<&str>) -> Explained {
    let message = format!("HTTP {status}");
    let (kind, explanation) = match (status, proxy) {
        (407, Some(p)) => (
            "proxy_auth",
            format!(
                "the proxy {p} asks for credentials: this pod's address is not among the tenant's sources; check that the pod runs in the tenant's subnet, or put credentials in the proxy URL (http://user:password@host:port)"
            ),
        ),
        (403, Some(p)) => (
            "proxy_denied",
            format!(
                "refused (403), most likely by the proxy {p}: the destination is outside what this tenant may reach (allowed domains and ports, private address ranges), or the pod is not recognised as a tenant"
            ),
        ),
        (502 | 504, Some(p)) => (
            "upstream",
            format!(
                "the proxy {p} could not reach the destination ({status}): the name does not resolve, the host refuses connections, or it did not answer in time"
            ),
        ),
        _ => (
            "http_status",
            format!("the destination answered {status}, which is not a success"),
        ),
    };
    Explained {
        kind,
        message,
        explanation,
    }
}

/// Explains a request that got no HTTP answer.
pub fn explain_error(
    chain: &str,
    is_timeout: bool,
    is_connect: bool,
    proxy: Option<&str>,
) -> Explained {
    let lower = chain.to_ascii_lowercase();
    // A refused CONNECT through the proxy surfaces as an error, not a
    // status, and reqwest does not always say which status it was.
    if lower.contains("tunnel") {
        for code in [407u16, 403, 502, 504] {
            if lower.contains(&code.to_string()) {
                let mut e = explain_status(code, proxy);
                e.message = chain.to_owned();
                return e;
            }
        }
        if let (Some(p), true) = (proxy, lower.contains("unsuccessful")) {
            return Explained {
                kind: "proxy_denied",
                message: chain.to_owned(),
                explanation: format!(
                    "the proxy {p} refused to open a tunnel (CONNECT) to the destination: it is outside what this tenant may reach (allowed domains and ports, private address ranges), the proxy could not reach it, or it wants credentials"
                ),
            };
        }
    }
    let (kind, explanation) = if is_timeout {
        (
            "timeout",
            match proxy {
                Some(p) => format!("no answer in time through the proxy {p}: the proxy or the destination is slow or silently dropping traffic"),
                None => "no answer in time: with no HTTP_PROXY set the pod tried to go out directly, which the tenant's network policy is expected to block".to_owned(),
            },
        )
    } else if is_connect {
        match proxy {
            Some(p) => (
                "proxy_unreachable",
                format!("could not connect to the proxy {p}: is it running, is the address right, and does the namespace's NetworkPolicy allow egress to it?"),
            ),
            None => (
                "connect",
                "could not connect to the destination directly (no HTTP_PROXY/HTTPS_PROXY set): tenant pods are expected to go out through the egress proxy".to_owned(),
            ),
        }
    } else if lower.contains("certificate") || lower.contains("tls") {
        (
            "tls",
            "the TLS handshake with the destination failed: a certificate problem, or something in the path intercepting HTTPS".to_owned(),
        )
    } else if lower.contains("dns") || lower.contains("resolve") {
        (
            "dns",
            "the name did not resolve: with a proxy, the proxy resolves names, so this points at a direct request without a proxy".to_owned(),
        )
    } else {
        (
            "request",
            "the request failed before any HTTP answer".to_owned(),
        )
    };
    Explained {
        kind,
        message: chain.to_owned(),
        explanation,
    }
}

#[derive(Debug)]
struct AppState {
    config: CheckConfig,
    client: reqwest::Client,
}

/// The demo app's router.
pub fn router(config: CheckConfig) -> Result<Router, String> {
    config.validate()?;
    // reqwest picks HTTP_PROXY/HTTPS_PROXY/NO_PROXY up from the process
    // environment, as curl in the seed's demo did.
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .user_agent(concat!("palisade-egress-check/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("failed to set up the HTTP client: {e}"))?;
    let state = Arc::new(AppState { config, client });
    Ok(Router::new()
        .route("/", get(|| async { Html(PAGE_HTML) }))
        .route(
            "/assets/egress-check.js",
            get(|| async { asset("text/javascript; charset=utf-8", PAGE_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/info", get(info))
        .route("/api/check/{id}", post(check))
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::security::headers)))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The host's interface addresses, as `(interface, address)`.
fn addresses() -> Vec<(String, String)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = addrs
        .filter_map(|a| {
            let addr = a.address?;
            let ip: IpAddr = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                return None;
            };
            Some((a.interface_name, ip.to_string()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

async fn info(State(s): State<Arc<AppState>>) -> Json<Value> {
    let hostname = nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let addresses = tokio::task::spawn_blocking(addresses)
        .await
        .unwrap_or_default();
    let vars = |names: &[&str]| -> Value {
        names
            .iter()
            .map(|k| {
                let v = s.config.var(k).map(|v| {
                    if PROXY_VARS.contains(k) {
                        redact(v)
                    } else {
                        v.to_owned()
                    }
                });
                ((*k).to_owned(), json!(v))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    Json(json!({
        "hostname": hostname,
        "addresses": addresses.iter().map(|(i, a)| json!({"interface": i, "address": a})).collect::<Vec<_>>(),
        "proxy": vars(&PROXY_VARS),
        "pod": vars(&POD_VARS),
        "targets": s.config.targets,
        "timeout_ms": s.config.timeout.as_millis() as u64,
    }))
}

/// The result of one button press.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Target id.
    pub target: String,
    /// URL fetched.
    pub url: String,
    /// Proxy used according to the environment (redacted), or `null`.
    pub proxy: Option<String>,
    /// Whether a 2xx answer came back.
    pub ok: bool,
    /// HTTP status, if any answer came back.
    pub status: Option<u16>,
    /// Wall time from sending to the end of the body.
    pub elapsed_ms: f64,
    /// The address an IP-echo service reported, if the body holds one.
    pub address: Option<String>,
    /// The first 4 KiB of the body.
    pub body: String,
    /// Why it failed.
    pub error: Option<Explained>,
}

const BODY_LIMIT: usize = 4096;

async fn check(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Some(target) = s.config.targets.iter().find(|t| t.id == id) else {
        let body =
            json!({"error": {"code": "unknown_target", "message": format!("no target {id:?}")}});
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    };
    let proxy = s.config.proxy_for(&target.url);
    let started = Instant::now();
    let outcome = async {
        let resp = s.client.get(&target.url).send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, bytes))
    }
    .await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let result = match outcome {
        Ok((status, bytes)) => {
            let cut = &bytes[..bytes.len().min(BODY_LIMIT)];
            let body = String::from_utf8_lossy(cut).into_owned();
            let ok = (200..300).contains(&status);
            CheckResult {
                target: target.id.clone(),
                url: target.url.clone(),
                address: if ok { extract_address(&body) } else { None },
                error: (!ok).then(|| {
                    let mut e = explain_status(status, proxy.as_deref());
                    // The proxy says why in its body's first line.
                    if let Some(line) = body.lines().next().filter(|l| !l.trim().is_empty()) {
                        let line: String = line.chars().take(200).collect();
                        e.message = format!("{}: {line}", e.message);
                    }
                    e
                }),
                proxy,
                ok,
                status: Some(status),
                elapsed_ms,
                body,
            }
        }
        Err(e) => {
            let chain = error_chain(&e);
            tracing::info!(target = %target.url, error = %chain, "egress check failed");
            CheckResult {
                target: target.id.clone(),
                url: target.url.clone(),
                error: Some(explain_error(
                    &chain,
                    e.is_timeout(),
                    e.is_connect(),
                    proxy.as_deref(),
                )),
                proxy,
                ok: false,
                status: e.status().map(|s| s.as_u16()),
                elapsed_ms,
                address: None,
                body: String::new(),
            }
        }
    };
    Json(result).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_parse_with_and_without_label() {
        let t = parse_target("External IP=http://127.0.0.1:9/ip").unwrap();
        assert_eq!(
            (t.id.as_str(), t.label.as_str()),
            ("external-ip", "External IP")
        );
        assert_eq!(t.url, "http://127.0.0.1:9/ip");
        let t = parse_target("https://httpbin.org/get?a=b").unwrap();
        assert_eq!(t.label, "httpbin.org");
        assert!(parse_target("ftp://x").is_err());
        assert!(parse_target("nonsense").is_err());
        assert!(parse_target("!!=http://x/").is_err());
        assert_eq!(default_targets().len(), 3);
        assert_eq!(default_targets()[0].id, "external-ip");
    }

    #[test]
    fn duplicate_or_missing_targets_are_refused() {
        let mut c = CheckConfig {
            targets: vec![],
            timeout: Duration::from_secs(1),
            env: vec![],
        };
        assert!(c.validate().is_err());
        c.targets = vec![
            parse_target("a=http://x/").unwrap(),
            parse_target("A=http://y/").unwrap(),
        ];
        assert!(c.validate().unwrap_err().contains("two targets"));
    }

    #[test]
    fn addresses_are_found_in_plain_and_json_bodies() {
        assert_eq!(
            extract_address(" 203.0.113.7\n").as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            extract_address("2001:db8::1").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            extract_address(r#"{"ip":"198.51.100.2","city":"x"}"#).as_deref(),
            Some("198.51.100.2")
        );
        assert_eq!(
            extract_address(r#"{"origin":"192.0.2.1, 10.0.0.1"}"#).as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(extract_address("<html>hello</html>"), None);
    }

    #[test]
    fn proxy_choice_follows_scheme_and_redacts() {
        let c = CheckConfig {
            targets: default_targets(),
            timeout: Duration::from_secs(1),
            env: vec![
                ("HTTP_PROXY".into(), "http://10.0.0.8:3128".into()),
                (
                    "https_proxy".into(),
                    "http://acme:s3cret@10.0.0.9:3128".into(),
                ),
            ],
        };
        assert_eq!(
            c.proxy_for("http://x/").as_deref(),
            Some("http://10.0.0.8:3128")
        );
        assert_eq!(
            c.proxy_for("https://x/").as_deref(),
            Some("http://acme:***@10.0.0.9:3128")
        );
        let none = CheckConfig { env: vec![], ..c };
        assert_eq!(none.proxy_for("http://x/"), None);
    }

    #[test]
    fn failures_are_explained() {
        assert_eq!(
            explain_status(403, Some("http://p:3128")).kind,
            "proxy_denied"
        );
        assert_eq!(
            explain_status(407, Some("http://p:3128")).kind,
            "proxy_auth"
        );
        assert_eq!(explain_status(502, Some("http://p:3128")).kind, "upstream");
        assert_eq!(explain_status(404, None).kind, "http_status");
        let e = explain_error(
            "error sending request: client error (Connect): tcp connect error: Connection refused",
            false,
            true,
            Some("http://p:3128"),
        );
        assert_eq!(e.kind, "proxy_unreachable");
        assert!(e.explanation.contains("NetworkPolicy"));
        assert_eq!(explain_error("x", false, true, None).kind, "connect");
        assert_eq!(explain_error("x", true, false, None).kind, "timeout");
        let e = explain_error(
            "error sending request: unsuccessful tunnel (403 Forbidden)",
            false,
            false,
            Some("http://p:3128"),
        );
        assert_eq!(e.kind, "proxy_denied");
        // What reqwest 0.12 says for a refused CONNECT (seen against palisade proxy).
        let e = explain_error(
            "error sending request for url (https://x/): client error (Connect): tunnel error: unsuccessful",
            false,
            true,
            Some("http://p:3128"),
        );
        assert_eq!(e.kind, "proxy_denied");
        assert!(e.explanation.contains("CONNECT"));
    }
}
