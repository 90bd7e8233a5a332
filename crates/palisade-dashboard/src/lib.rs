//! Palisade's web dashboard and the egress-check demo app.
//!
//! The dashboard is a window on the state store for people who would rather
//! look at their platform than read tables: tenants, the subnet pool, the
//! isolation matrix (from the same policy model every dataplane compiles)
//! and egress traffic (from the proxy's own metrics). Every page is a static
//! shell embedded in the binary that renders the JSON API behind it, so the
//! API is exactly what the pages show and nothing is fetched from outside.
//!
//! The store is opened per request in a blocking task and read in one
//! short deferred transaction: in WAL mode that never blocks the CLI's
//! writers, and the dashboard holds no connection between requests.
//!
//! [`egress_check`] is the seed's demo web app: it runs inside a tenant pod
//! and shows, from the pod's point of view, which address the internet sees
//! when it goes out through `HTTP_PROXY`.

#![forbid(unsafe_code)]

mod api;
pub mod egress;
pub mod egress_check;
mod error;
pub mod lab;
pub mod matrix;
mod security;
pub mod views;

pub use api::router;
pub use error::ApiError;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Where the dashboard listens when `--listen` is not given.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7474);

/// Largest matrix served without a tenant filter (deployments per side).
pub const MAX_MATRIX: usize = 100;

/// How the dashboard runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The state database.
    pub state: PathBuf,
    /// Serve the create/delete endpoints.
    pub allow_writes: bool,
    /// The proxy's `/metrics` URL, if the egress page should show it.
    pub proxy_metrics: Option<String>,
    /// Where the lab writes `verify.json`.
    pub lab_dir: PathBuf,
    /// Answer only requests whose `Host` is a loopback name (set when
    /// listening on loopback; defeats DNS rebinding).
    pub loopback_host_only: bool,
}

impl Config {
    /// A read-only dashboard over `state`, with the lab directory next to it.
    pub fn new(state: PathBuf) -> Self {
        let lab_dir = default_lab_dir(&state);
        Self {
            state,
            allow_writes: false,
            proxy_metrics: None,
            lab_dir,
            loopback_host_only: false,
        }
    }
}

/// `<directory of the state db>/lab`.
pub fn default_lab_dir(state: &std::path::Path) -> PathBuf {
    state
        .parent()
        .map_or_else(|| PathBuf::from("lab"), |d| d.join("lab"))
}

/// The address to bind: `explicit` if given, else [`DEFAULT_LISTEN`]; a
/// non-loopback address therefore only ever comes from an explicit flag.
/// The second value is a warning to print when the address is reachable
/// from other hosts.
pub fn listen_addr(explicit: Option<SocketAddr>) -> (SocketAddr, Option<String>) {
    let addr = explicit.unwrap_or(DEFAULT_LISTEN);
    let warning = (!addr.ip().is_loopback()).then(|| {
        format!(
            "listening on {addr}, which is not a loopback address: anyone who can reach it can read the platform's tenants and subnets"
        )
    });
    (addr, warning)
}

/// Checks a `--proxy-metrics` URL: absolute http or https.
pub fn validate_metrics_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(u) => Err(format!(
            "invalid --proxy-metrics {url:?}: scheme {} is not http or https",
            u.scheme()
        )),
        Err(e) => Err(format!(
            "invalid --proxy-metrics {url:?}: {e} (expected e.g. http://127.0.0.1:9128/metrics)"
        )),
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// open requests finish. Taking a bound listener lets callers (and tests)
/// bind port 0 and print the real address.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on Ctrl-C or SIGTERM (what Kubernetes sends a pod).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_url_must_be_http() {
        assert!(validate_metrics_url("http://127.0.0.1:9128/metrics").is_ok());
        assert!(validate_metrics_url("ftp://x/").is_err());
        assert!(validate_metrics_url("127.0.0.1:9128").is_err());
    }

    #[test]
    fn default_listen_is_loopback_and_explicit_wins() {
        let (addr, warn) = listen_addr(None);
        assert!(addr.ip().is_loopback());
        assert!(warn.is_none());
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap_or(DEFAULT_LISTEN);
        let (addr, warn) = listen_addr(Some(any));
        assert_eq!(addr, any);
        assert!(warn.is_some_and(|w| w.contains("not a loopback")));
    }

    #[test]
    fn lab_dir_sits_beside_the_state() {
        assert_eq!(
            default_lab_dir(std::path::Path::new("/var/lib/palisade/state.db")),
            PathBuf::from("/var/lib/palisade/lab")
        );
    }
}
