//! `palisade render` and `palisade apply`: the Kubernetes output (issue 3).
//!
//! Placeholder until the Kubernetes crate lands: both commands fail loudly.

use palisade_core::Snapshot;

/// Arguments of `palisade render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {}

/// Arguments of `palisade apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {}

/// Runs `palisade render`.
pub fn render(_args: &RenderArgs, _snapshot: &Snapshot) -> anyhow::Result<()> {
    anyhow::bail!("palisade render is not implemented yet")
}

/// Runs `palisade apply`.
pub fn apply(_args: &ApplyArgs, _snapshot: &Snapshot) -> anyhow::Result<()> {
    anyhow::bail!("palisade apply is not implemented yet")
}
