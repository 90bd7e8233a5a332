//! `palisade dashboard` (the web UI over the store) and `palisade
//! egress-check` (seed 002's demo app, run inside a tenant pod).
//!
//! Both are servers from `palisade-dashboard`; this module parses their
//! flags, binds, prints where they listen and runs them until Ctrl-C or
//! SIGTERM.

use anyhow::{Context, Result, anyhow};
use palisade_dashboard::egress_check::{self, CheckConfig};
use palisade_dashboard::{
    AuditLog, Config, KubeAuthenticator, TokenFile, check_exposure, listen_addr,
};
use palisade_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `palisade dashboard`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    palisade dashboard                                  # http://127.0.0.1:7474/, read-only\n  \
    palisade dashboard --proxy-metrics http://127.0.0.1:9128/metrics\n  \
    palisade dashboard --listen 127.0.0.1:0             # any free port; the URL is printed\n  \
    palisade dashboard --listen 0.0.0.0:7474 --token-file tokens --allow-writes\n  \
    palisade dashboard --listen [::]:7474 --kube-auth   # in a pod: cluster RBAC decides\n  \
    palisade dashboard --listen 0.0.0.0:7474 --public-read\n\
    Off loopback the dashboard refuses to start unless callers must authenticate\n\
    (--token-file or --kube-auth) or reads are explicitly public (--public-read;\n\
    writes always need authentication there). A token file has one `TOKEN TENANT[,TENANT...]|* [NAME]`\n\
    per line; the browser asks for the token at /login. Every write attempt is\n\
    logged as one JSON line (who, what, when, result) on stdout or --audit-log.\n\
    The JSON API behind the pages is documented in docs/dashboard.md.")]
pub struct DashboardArgs {
    /// Address to listen on. Default 127.0.0.1:7474; a non-loopback address is only ever used when given here, and only with --token-file, --kube-auth or --public-read.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Allow creating and deleting deployments from the web UI and API (off loopback: only with authentication).
    #[arg(long)]
    pub allow_writes: bool,
    /// Require a bearer token from this file: lines `TOKEN TENANT[,TENANT...]|* [NAME]`; a token sees and changes only its tenants (`*`: all).
    #[arg(long, value_name = "FILE", conflicts_with = "kube_auth")]
    pub token_file: Option<PathBuf>,
    /// Require a Kubernetes bearer token: TokenReview, then SubjectAccessReview on palisade.io tenants/tenantdeployments in tenant-<name> (in-cluster config or kubeconfig).
    #[arg(long)]
    pub kube_auth: bool,
    /// Let callers without a token read everything (never write); needed to serve a non-loopback address without authentication.
    #[arg(long)]
    pub public_read: bool,
    /// Append the audit log (one JSON line per write attempt) to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// The egress proxy's Prometheus endpoint, for the egress page (e.g. http://127.0.0.1:9128/metrics).
    #[arg(long, value_name = "URL")]
    pub proxy_metrics: Option<String>,
    /// Where the lab writes verify.json. Default: lab/ beside the state database.
    #[arg(long, value_name = "DIR")]
    pub lab_dir: Option<PathBuf>,
}

/// Arguments of `palisade egress-check`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs in a tenant pod: the buttons fetch each target from the pod, through the proxy in\n\
    HTTP_PROXY / HTTPS_PROXY (NO_PROXY honoured), and show the answer, the time and what went wrong.\n\
    Examples:\n  \
    palisade egress-check --listen [::]:8080\n  \
    palisade egress-check --target 'External IP=https://ifconfig.me/ip' --target https://httpbin.org/get\n\
    Default targets: External IP=https://ifconfig.me/ip, ipinfo.io=https://ipinfo.io/json, httpbin.org=https://httpbin.org/get."
)]
pub struct EgressCheckArgs {
    /// Address to listen on; in a pod use [::]:8080 (all addresses).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        env = "EGRESS_CHECK_LISTEN"
    )]
    pub listen: SocketAddr,
    /// A button: LABEL=URL (button "Test LABEL") or just URL. Repeatable; replaces the defaults.
    #[arg(
        long = "target",
        value_name = "[LABEL=]URL",
        env = "EGRESS_CHECK_TARGETS",
        value_delimiter = ','
    )]
    pub targets: Vec<String>,
    /// Time limit per test request (e.g. 10s, 1500ms).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub timeout: String,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// Runs `palisade dashboard` over the store at `state`.
pub fn dashboard(a: &DashboardArgs, state: PathBuf) -> Result<ExitCode> {
    if let Some(url) = &a.proxy_metrics {
        palisade_dashboard::validate_metrics_url(url).map_err(|e| anyhow!(e))?;
    }
    // Fail now rather than on the first page view; the store is then opened per request.
    Store::open(&state)?.pool()?;
    let addr = listen_addr(a.listen);
    let mut config = Config::new(state);
    config.allow_writes = a.allow_writes;
    config.public_read = a.public_read;
    config.loopback_host_only = addr.ip().is_loopback();
    config.proxy_metrics = a.proxy_metrics.clone();
    if let Some(dir) = &a.lab_dir {
        config.lab_dir = dir.clone();
    }
    if let Some(path) = &a.token_file {
        config.auth = Some(Arc::new(TokenFile::load(path)?));
    }
    if let Some(path) = &a.audit_log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("failed to open the audit log {}", path.display()))?;
        config.audit = AuditLog::to_writer(file);
    }
    runtime()?.block_on(async {
        if a.kube_auth {
            let kube = KubeAuthenticator::from_environment().await.context(
                "--kube-auth: no Kubernetes API access (in-cluster config or kubeconfig)",
            )?;
            config.auth = Some(Arc::new(kube));
        }
        let warning = check_exposure(addr, &config)?;
        let mode = format!(
            "{}{}",
            if config.allow_writes {
                "writes enabled"
            } else {
                "read-only"
            },
            config
                .auth
                .as_ref()
                .map(|x| format!(", {} authentication", x.kind()))
                .unwrap_or_default()
        );
        let router = palisade_dashboard::router(config);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to listen on {addr}"))?;
        let local = listener
            .local_addr()
            .context("failed to read the bound address")?;
        if let Some(w) = warning {
            eprintln!("warning: {w}");
        }
        println!("palisade dashboard: http://{local}/ ({mode})");
        palisade_dashboard::serve(listener, router, palisade_dashboard::shutdown_signal())
            .await
            .context("dashboard server failed")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `palisade egress-check`.
pub fn egress_check(a: &EgressCheckArgs) -> Result<ExitCode> {
    let targets = if a.targets.is_empty() {
        egress_check::default_targets()
    } else {
        a.targets
            .iter()
            .map(|t| egress_check::parse_target(t).map_err(|e| anyhow!("--target: {e}")))
            .collect::<Result<_>>()?
    };
    let timeout = humantime::parse_duration(&a.timeout)
        .with_context(|| format!("invalid --timeout {:?} (try 10s, 1500ms)", a.timeout))?;
    if timeout.is_zero() {
        return Err(anyhow!(
            "invalid --timeout {:?}: must be more than zero",
            a.timeout
        ));
    }
    let config = CheckConfig {
        targets,
        timeout,
        env: egress_check::env_snapshot(),
    };
    let router = egress_check::router(config).map_err(|e| anyhow!(e))?;
    let addr = a.listen;
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to listen on {addr}"))?;
        let local = listener
            .local_addr()
            .context("failed to read the bound address")?;
        println!("palisade egress-check: http://{local}/");
        palisade_dashboard::serve(listener, router, palisade_dashboard::shutdown_signal())
            .await
            .context("egress-check server failed")
    })?;
    Ok(ExitCode::SUCCESS)
}
