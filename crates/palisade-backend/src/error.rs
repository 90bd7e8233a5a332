//! The refusals of the cluster backend that a caller may want to tell
//! apart (the dashboard answers each with its own status); the SQLite
//! store's refusals are `palisade_store::StoreError`, which both backends
//! return where the stores agree.

use palisade_core::{DeploymentName, TenantName};

/// A refusal of the cluster backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// A list answered 404: the operator's CRDs are not installed.
    #[error(
        "cannot list {kind}: the operator's CRDs are not installed (kubectl apply -k deploy/crds)"
    )]
    CrdsMissing {
        /// The kind listed (plural).
        kind: String,
    },
    /// The operator's ConfigMap names no pool.
    #[error("the pool is unknown: no PALISADE_POOL in ConfigMap {namespace}/{name}")]
    PoolUnknown {
        /// The ConfigMap's namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A deployment named twice in one batch.
    #[error("deployment {tenant}/{name} appears twice in the batch")]
    DuplicateInBatch {
        /// Its tenant.
        tenant: TenantName,
        /// Its name.
        name: DeploymentName,
    },
    /// A deployment that exists already, its subnet maybe still pending.
    #[error("deployment {tenant}/{name} already exists (subnet {})", subnet.as_deref().unwrap_or("<pending>"))]
    DeploymentExists {
        /// Its tenant.
        tenant: TenantName,
        /// Its name.
        name: DeploymentName,
        /// Its subnet, once allocated (as the resource's status says).
        subnet: Option<String>,
    },
}
