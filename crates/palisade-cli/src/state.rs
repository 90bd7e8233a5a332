//! Where the state database is, and the model's parsers the handlers share.
//!
//! Kept apart from `main` so handler modules depend on it and `main` on
//! them, never in a circle.

use crate::cli::Cli;
use anyhow::{Result, anyhow};
use palisade_core::model::parse_label;
use palisade_core::{DeploymentName, Labels, TenantName};
use palisade_store::Store;
use std::path::PathBuf;

pub use palisade_backend::now;

/// The state database: --state, else the default location.
pub fn state_path(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.state {
        return Ok(p.clone());
    }
    palisade_store::default_path(|k| std::env::var_os(k)).ok_or_else(|| {
        anyhow!("no state location: pass --state PATH or set PALISADE_STATE or HOME")
    })
}

/// Opens the state database.
pub fn open(cli: &Cli) -> Result<Store> {
    Ok(Store::open(&state_path(cli)?)?)
}

/// A tenant name, parsed by the model.
pub fn tenant_name(s: &str) -> Result<TenantName> {
    Ok(s.parse()?)
}

/// A deployment name, parsed by the model.
pub fn deployment_name(s: &str) -> Result<DeploymentName> {
    Ok(s.parse()?)
}

/// `key=value` labels, parsed by the model.
pub fn labels(raw: &[String]) -> Result<Labels> {
    raw.iter()
        .map(|l| parse_label(l).map_err(Into::into))
        .collect()
}
