//! What a backend call fails with. Callers tell failures apart by
//! variant (the dashboard answers each with its own status): the stores'
//! shared refusals are `palisade_store::StoreError`, which both backends
//! return where the stores agree, the cluster's own are [`BackendError`].
//! Messages say what failed; the cause is the `source`, so a caller that
//! prints the chain (`palisade`'s `error: a: b: c`) prints each once.

use palisade_core::{DeploymentName, ModelError, PoolError, TenantName};
use palisade_store::StoreError;

/// A backend call's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error, as a cause.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A refusal or failure of the SQLite store, or one the cluster
    /// shares with it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A refusal only the cluster makes.
    #[error(transparent)]
    Refused(#[from] BackendError),
    /// A value the model rejects (read back from the cluster).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A pool the model rejects (the operator's settings).
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A step that failed (a call to the API server, a value read back),
    /// and why.
    #[error("{what}")]
    Failed {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// Anything else, as it said (opening the store through the caller's
    /// opener, a value that did not parse).
    #[error(transparent)]
    Other(Cause),
}

impl Error {
    /// `what` failed because of `source`.
    pub fn failed(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Failed {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Any error, as it is.
    pub fn other(source: impl Into<Cause>) -> Self {
        Self::Other(source.into())
    }
}

/// Names what failed, keeping the error as its cause.
pub(crate) trait Context<T> {
    /// `what` failed because of the error.
    fn context(self, what: &str) -> Result<T>;
    /// The same, with the message built only on failure.
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Cause>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::failed(what, e))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::failed(what(), e))
    }
}

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
