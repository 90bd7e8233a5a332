//! `palisade dashboard` (the web UI over the store) and `palisade
//! egress-check` (seed 002's demo app, run inside a tenant pod).
//!
//! Both are servers from `palisade-dashboard`; this module parses their
//! flags, binds, prints where they listen and runs them until Ctrl-C or
//! SIGTERM.

use crate::cli::{DashboardArgs, EgressCheckArgs};
use crate::output::outln;
use anyhow::{Context, Result, anyhow};
use palisade_backend::kube::Kube;
use palisade_backend::{Backend, BackendThread};
use palisade_dashboard::egress_check::{self, CheckConfig};
use palisade_dashboard::{
    AuditLog, Config, KubeAuthenticator, TokenFile, check_exposure, listen_addr,
};
use palisade_store::Store;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// Runs `palisade dashboard` over the SQLite store at `state`, or, without
/// one, over the cluster (`--store kubernetes`).
pub fn dashboard(a: &DashboardArgs, state: Option<PathBuf>) -> Result<ExitCode> {
    if let Some(url) = &a.proxy_metrics {
        palisade_dashboard::validate_metrics_url(url).map_err(|e| anyhow!(e))?;
    }
    // Fail now rather than on the first page view.
    let mut config = match state {
        Some(state) => {
            // The store is then opened per request.
            Store::open(&state)?.pool()?;
            Config::new(state)
        }
        None => {
            // Reachable, CRDs installed, the operator's pool readable.
            let mut kube = Kube::new()?;
            kube.snapshot()?;
            let thread = BackendThread::spawn(kube)
                .context("failed to start the cluster backend's thread")?;
            Config::kubernetes(thread)
        }
    };
    let addr = listen_addr(a.listen);
    config.allow_writes = a.allow_writes;
    config.public_read = a.public_read;
    config.loopback_host_only = addr.ip().is_loopback();
    config.proxy_metrics = a.proxy_metrics.clone();
    if let Some(dir) = &a.lab_dir {
        config.lab_dir = Some(dir.clone());
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
        outln!("palisade dashboard: http://{local}/ ({mode})")?;
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
        outln!("palisade egress-check: http://{local}/")?;
        palisade_dashboard::serve(listener, router, palisade_dashboard::shutdown_signal())
            .await
            .context("egress-check server failed")
    })?;
    Ok(ExitCode::SUCCESS)
}
