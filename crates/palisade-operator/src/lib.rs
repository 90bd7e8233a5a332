//! Palisade as a Kubernetes operator.
//!
//! Where the CLI keeps state in SQLite, the operator keeps it in the
//! Kubernetes API: `Tenant` and `TenantDeployment` custom resources say what
//! users want, `SubnetClaim` objects record which subnet each workload holds.
//! Because the API server refuses a second object of one name, creating a
//! claim named after its subnet is an atomic allocation, so any number of
//! replicas, reconciles and CLI users can act at once without handing out a
//! subnet twice. Leader election only avoids duplicate work.
//!
//! Layout: [`crd`] declares the resources; [`cache`] holds what the
//! controllers read (one watch per kind); [`claim`] names claims and picks
//! candidates with the core's allocation rule; [`desired`] is reconcile as
//! pure functions (what to render, apply, prune, report); [`status`]
//! judges what the API server answered (refusals, backoff, rollouts, what
//! still holds a subnet); [`reconcile`] moves data between those functions
//! and the API server; [`lease`] is leader election by client-go's rules;
//! [`run`] wires the controllers, leader election, metrics and health
//! endpoints.
//! `testing` (feature `testing`, off in the released binary) is an
//! in-memory API server used by the tests of this crate and of the CLI.

#![forbid(unsafe_code)]

pub mod cache;
pub mod claim;
pub mod crd;
pub mod desired;
pub mod lease;
pub mod metrics;
pub mod platform;
pub mod reconcile;
pub mod run;
pub mod status;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use palisade_core::Pool;
use palisade_kube::RenderOptions;
use std::time::Duration;

/// Why an operation against the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("failed to {action} {object}")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// The object or kind.
        object: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// kube-runtime's finalizer helper refused the object (no name, or a
    /// finalizer name that is not a JSON pointer segment).
    #[error("failed to run the finalizer of {object}")]
    Finalizer {
        /// The object.
        object: String,
        /// The helper's error.
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
    /// A kind the operator must see is not (yet) in its cache, so acting
    /// now could delete what it cannot see.
    #[error("cannot act on {object}: {kind} is not cached: {message}")]
    CacheIncomplete {
        /// What was to be done.
        object: String,
        /// The kind.
        kind: String,
        /// Why (the API server's words, or "not listed yet").
        message: String,
    },
    /// The platform's objects could not be rendered (see [`platform`]).
    #[error("failed to render the platform's objects")]
    Platform(#[source] palisade_kube::Error),
    /// Bad configuration (flags, environment).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The metrics/health listener failed.
    #[error("failed to serve {what}: {source}")]
    Io {
        /// What was being served.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn kube(
        action: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error {
        let object = object.into();
        move |e| Error::Kube {
            action,
            object,
            source: Box::new(e),
        }
    }
}

/// Everything the operator is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The subnet pool (the same `--pool` / `--prefix-len` as `palisade init`).
    pub pool: Pool,
    /// How objects are rendered (as `palisade render`'s flags).
    pub render: RenderOptions,
    /// A claim without a workload is released after this long.
    pub gc_grace: Duration,
    /// How soon the claim controller looks again at a claim whose subnet
    /// is still held (a pool or pods), besides their deletion events.
    pub gc_interval: Duration,
    /// Reconcile every object at least this often (drift repair).
    pub resync: Duration,
}

/// The kube and k8s-openapi versions the CRD types are built with, for
/// callers (the CLI) that must use the same ones.
pub use {k8s_openapi, kube};
