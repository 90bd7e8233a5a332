//! Palisade's web dashboard and the egress-check demo app.
//!
//! The dashboard is a window on the state store for people who would rather
//! look at their platform than read tables: tenants, the subnet pool, the
//! isolation matrix (from the same policy model every dataplane compiles)
//! and egress traffic (from the proxy's own metrics). Every page is a static
//! shell embedded in the binary that renders the JSON API behind it, so the
//! API is exactly what the pages show and nothing is fetched from outside.
//!
//! Every page reads (and the write endpoints write) through the one
//! [`palisade_backend::Backend`] the CLI's verbs use, so the dashboard shows
//! the SQLite store or the cluster's custom resources with the same rows.
//! SQLite is opened per request in a blocking task and each read is one
//! short deferred transaction: in WAL mode that never blocks the CLI's
//! writers, and the dashboard holds no connection between requests. The
//! cluster backend lives on a thread of its own
//! ([`palisade_backend::BackendThread`]): it blocks on a runtime of its
//! own, which tokio refuses on the server's async threads, and one thread
//! keeps that runtime and the connection from one request to the next.
//!
//! The store holds every tenant, so the API is guarded as a whole: off
//! loopback it needs an authenticator ([`auth`]) unless reads are made
//! public on purpose, a caller sees and changes only the tenants it is
//! authorised for, and every write attempt lands in the [`audit`] log.
//!
//! [`egress_check`] is the seed's demo web app: it runs inside a tenant pod
//! and shows, from the pod's point of view, which address the internet sees
//! when it goes out through `HTTP_PROXY`.

#![forbid(unsafe_code)]

mod api;
pub mod audit;
pub mod auth;
pub mod egress;
pub mod egress_check;
mod error;
pub mod lab;
pub mod matrix;
mod security;
pub mod views;

pub use api::router;
pub use audit::AuditLog;
pub use auth::{Access, Authenticator, Caller, Identity, KubeAuthenticator, TokenFile};
pub use error::ApiError;

use palisade_backend::BackendThread;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// Where the dashboard listens when `--listen` is not given.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7474);

/// Largest matrix served without a tenant filter (deployments per side).
pub const MAX_MATRIX: usize = 100;

/// Where the dashboard's state lives.
#[derive(Debug, Clone)]
pub enum Source {
    /// The SQLite state database at this path.
    Sqlite(PathBuf),
    /// The cluster's custom resources, through the cluster backend.
    Kubernetes(BackendThread),
}

/// How the dashboard runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the state lives.
    pub store: Source,
    /// Serve the create/delete endpoints.
    pub allow_writes: bool,
    /// The proxy's `/metrics` URL, if the egress page should show it.
    pub proxy_metrics: Option<String>,
    /// Where the lab writes `verify.json` (none: the matrix shows no lab
    /// results).
    pub lab_dir: Option<PathBuf>,
    /// Answer only requests whose `Host` is a loopback name (set when
    /// listening on loopback; defeats DNS rebinding).
    pub loopback_host_only: bool,
    /// Who may call the API. With one, every `/api` request needs a bearer
    /// token (reads too, unless `public_read`); without one, anyone who can
    /// reach the port may do anything the flags allow.
    pub auth: Option<Arc<dyn Authenticator>>,
    /// Callers without a token may read (never write).
    pub public_read: bool,
    /// Where every write attempt is recorded.
    pub audit: AuditLog,
}

impl Config {
    /// A read-only dashboard over `state`, with the lab directory next to it.
    pub fn new(state: PathBuf) -> Self {
        let lab_dir = Some(default_lab_dir(&state));
        Self::over(Source::Sqlite(state), lab_dir)
    }

    /// A read-only dashboard over the cluster `backend` serves; the lab
    /// (which runs the SQLite state on one host) is not consulted.
    pub fn kubernetes(backend: BackendThread) -> Self {
        Self::over(Source::Kubernetes(backend), None)
    }

    fn over(store: Source, lab_dir: Option<PathBuf>) -> Self {
        Self {
            store,
            allow_writes: false,
            proxy_metrics: None,
            lab_dir,
            loopback_host_only: false,
            auth: None,
            public_read: false,
            audit: AuditLog::stdout(),
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
pub fn listen_addr(explicit: Option<SocketAddr>) -> SocketAddr {
    explicit.unwrap_or(DEFAULT_LISTEN)
}

/// Why the dashboard refuses to serve on an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExposureError {
    /// Writes reachable from other hosts without authentication.
    #[error(
        "refusing --allow-writes on {0}, which is not a loopback address, without authentication: pass --token-file FILE or --kube-auth"
    )]
    WritesWithoutAuth(SocketAddr),
    /// Reads reachable from other hosts without authentication or consent.
    #[error(
        "refusing to serve {0}, which is not a loopback address, without authentication: pass --token-file FILE or --kube-auth, or --public-read to let anyone who can reach it read every tenant"
    )]
    ReadsWithoutAuth(SocketAddr),
}

/// Whether `config` may be served on `addr`, and a warning to print if so.
///
/// Off loopback, writes need an authenticator, and so do reads unless
/// `public_read` says otherwise.
pub fn check_exposure(addr: SocketAddr, config: &Config) -> Result<Option<String>, ExposureError> {
    if addr.ip().is_loopback() {
        return Ok(None);
    }
    match (&config.auth, config.allow_writes, config.public_read) {
        (None, true, _) => Err(ExposureError::WritesWithoutAuth(addr)),
        (None, false, false) => Err(ExposureError::ReadsWithoutAuth(addr)),
        (None, false, true) => Ok(Some(format!(
            "listening on {addr}, which is not a loopback address, with --public-read: anyone who can reach it can read every tenant"
        ))),
        (Some(_), ..) => Ok(Some(format!(
            "listening on {addr} over plain HTTP: put TLS in front of it (an Ingress, or reach it with kubectl port-forward) so bearer tokens do not cross the network in clear text"
        ))),
    }
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
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
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
        assert!(listen_addr(None).ip().is_loopback());
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap_or(DEFAULT_LISTEN);
        assert_eq!(listen_addr(Some(any)), any);
    }

    #[test]
    fn off_loopback_writes_need_auth_and_reads_need_auth_or_consent() {
        let any: SocketAddr = "0.0.0.0:7474".parse().unwrap_or(DEFAULT_LISTEN);
        let config = |writes: bool, public: bool, auth: bool| {
            let mut c = Config::new(PathBuf::from("s.db"));
            c.allow_writes = writes;
            c.public_read = public;
            if auth {
                let tokens =
                    TokenFile::parse("0123456789abcdef0123 *\n", std::path::Path::new("t"))
                        .unwrap_or_else(|e| panic!("{e}"));
                c.auth = Some(Arc::new(tokens));
            }
            c
        };
        // Loopback: as before, whatever the flags.
        assert_eq!(
            check_exposure(DEFAULT_LISTEN, &config(true, false, false)),
            Ok(None)
        );
        assert_eq!(
            check_exposure(any, &config(true, true, false)),
            Err(ExposureError::WritesWithoutAuth(any))
        );
        assert_eq!(
            check_exposure(any, &config(false, false, false)),
            Err(ExposureError::ReadsWithoutAuth(any))
        );
        assert!(
            check_exposure(any, &config(false, true, false))
                .is_ok_and(|w| w.is_some_and(|w| w.contains("--public-read")))
        );
        assert!(
            check_exposure(any, &config(true, false, true))
                .is_ok_and(|w| w.is_some_and(|w| w.contains("TLS")))
        );
    }

    #[test]
    fn lab_dir_sits_beside_the_state() {
        assert_eq!(
            default_lab_dir(std::path::Path::new("/var/lib/palisade/state.db")),
            PathBuf::from("/var/lib/palisade/lab")
        );
    }
}
