//! Palisade's Kubernetes output.
//!
//! The core decides what the platform should look like; this crate says it
//! in Kubernetes: typed objects (`k8s-openapi` for built-in kinds, derived
//! custom resources for Cilium, the Gateway API and Flux), serialised to
//! byte-stable YAML, laid out as a Kustomize + Flux GitOps tree or streamed,
//! the cluster set-up (eksctl, Cilium Helm values, gVisor installer), and
//! server-side apply with pruning.
//!
//! Architecture invariant: nothing here decides policy. Who may talk to
//! whom comes from [`palisade_core::Policy`]; this crate only translates.
//! Everything except [`apply`] is pure computation plus file I/O, so it is
//! tested without a cluster; `apply` is tested against a mock API server.

#![forbid(unsafe_code)]

pub mod apply;
pub mod cluster;
mod common;
pub mod crds;
pub mod eval;
pub mod fixtures;
pub mod object;
pub mod options;
mod proxy;
pub mod proxy_config;
pub mod render;
pub mod tree;
pub mod yaml;

pub use object::{Object, to_multi_doc};
pub use options::{
    EgressCheck, Environment, GitSource, InClusterProxy, PolicyFlavour, ProxyOptions,
    RenderOptions, Resources,
};
pub use render::{Rendered, render};
pub use tree::{Reuse, TreeSummary, write_snapshot, write_snapshot_with, write_tree};

/// Why rendering, writing or applying failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An object could not be turned into JSON (a bug in a typed object).
    #[error("failed to serialize {kind} {name}")]
    Serialize {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The model holds something Kubernetes cannot express.
    #[error("failed to render {what}: {reason}")]
    Unrepresentable {
        /// What could not be rendered.
        what: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing the output tree failed.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done ("write", "remove", "read").
        action: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The previous tree's manifest lists a file outside the tree, which
    /// Palisade refuses to remove (a hand-edited or forged manifest).
    #[error(
        "failed to write the tree: {manifest} lists {entry:?}, which is outside the tree; refusing to remove it"
    )]
    OutsideTree {
        /// The manifest that lists it.
        manifest: std::path::PathBuf,
        /// The listed path.
        entry: String,
    },
    /// The in-cluster egress proxy's config could not be compiled.
    #[error("failed to compile the in-cluster egress proxy's config")]
    ProxyConfig(#[source] palisade_proxy::compile::CompileError),
    /// A call to the Kubernetes API failed (the cause is the `source`).
    #[error("failed to {action} {object}")]
    Kube {
        /// What was being done ("apply", "list", "delete", "connect to").
        action: &'static str,
        /// The object or kind.
        object: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
}
