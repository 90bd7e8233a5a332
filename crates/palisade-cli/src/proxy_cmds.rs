//! `palisade proxy` (run the egress proxy) and `palisade proxy-config`
//! (generate its configuration from the store).
//!
//! The proxy knows nothing of the store: everything it needs — which source
//! prefix belongs to which tenant and deployment, and each tenant's egress
//! address — travels through its YAML config, which this module writes.

use crate::cli::ProxyConfigArgs;
use anyhow::{Context, Result};
use palisade_core::{Snapshot, TenantName};
use palisade_proxy::compile::{self, CompileOptions, DomainRules};
use palisade_proxy::config::ProxyConfig;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Runs the egress proxy with the given arguments (`--config FILE`, `check`,
/// `hash-password`); exits 64 on a bad config, as `palisade-proxy` does, and
/// starts its errors with `error:` as every `palisade` command does.
pub fn run_proxy(args: &[String]) -> ExitCode {
    palisade_proxy::cli::main_as(palisade_proxy::cli::Invocation::PALISADE, args)
}

/// The proxy configuration for `snapshot` with the flags' listeners,
/// cluster ranges and default egress: [`palisade_proxy::compile::config`],
/// the one compiler the lab, `palisade render` and the operator use too;
/// `domains` are the tenants' destination rules (the cluster's `Tenant`
/// resources hold them, the SQLite store none).
pub fn proxy_config(
    args: &ProxyConfigArgs,
    snapshot: &Snapshot,
    domains: BTreeMap<TenantName, DomainRules>,
) -> Result<ProxyConfig> {
    let options = CompileOptions {
        base: ProxyConfig {
            listen: args.listen,
            admin_listen: args.admin_listen,
            cluster_deny: args.cluster_deny.clone(),
            default_egress: compile::egress(args.default_egress.iter().copied()),
            ..ProxyConfig::default()
        },
        domains,
        ..CompileOptions::default()
    };
    Ok(compile::config(snapshot, &options)?)
}

/// Runs `palisade proxy-config`.
pub fn write_config(
    args: &ProxyConfigArgs,
    snapshot: &Snapshot,
    domains: BTreeMap<TenantName, DomainRules>,
) -> Result<()> {
    let yaml = proxy_config(args, snapshot, domains)?
        .to_yaml()
        .context("failed to serialise the proxy config")?;
    match &args.out {
        None => print!("{yaml}"),
        Some(path) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, yaml)
                .with_context(|| format!("failed to write {}", tmp.display()))?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("failed to replace {}", path.display()))?;
            println!(
                "wrote proxy config for {} tenants to {}",
                snapshot.tenants.len(),
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Args {
        #[command(flatten)]
        config: ProxyConfigArgs,
    }

    #[test]
    fn each_tenant_listens_on_its_stored_port_and_the_proxy_accepts_it() {
        let mut snapshot = palisade_kube::fixtures::seed();
        snapshot.tenants[0].proxy_port = 20000;
        snapshot.tenants[1].proxy_port = 0; // from a store before ports
        let args = Args::parse_from(["x"]).config;
        let yaml = proxy_config(&args, &snapshot, BTreeMap::new())
            .and_then(|c| Ok(c.to_yaml()?))
            .unwrap_or_default();
        let back = ProxyConfig::from_yaml(&yaml).unwrap_or_default();
        let ports: Vec<_> = back.tenants.iter().map(|t| t.listen_port).collect();
        assert_eq!(ports[..2], [Some(20000), None], "{yaml}");
    }
}
