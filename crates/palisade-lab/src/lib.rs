//! Palisade's embedded dataplane: the desired state that becomes Cilium
//! objects on a cluster becomes network namespaces, IPv6 addresses and one
//! nftables table on one Linux host, so isolation and egress can be shown for
//! real on a laptop or in CI.
//!
//! The crate is split the way the rest of Palisade is:
//! - [`plan`] and [`nft`] are pure: a [`palisade_core::Snapshot`] and its
//!   [`palisade_core::policy::Policy`] in, a complete [`plan::Plan`] (names,
//!   addresses, processes, the nftables ruleset text, the proxy config) out.
//!   They never decide policy; they translate the policy model's rules.
//! - [`verify::expectations`] is pure too: the probe matrix and the verdict
//!   the policy model expects for each probe.
//! - [`apply`] and [`verify`] do the I/O (`ip`, `nft -f`, process spawning,
//!   probe agents), and [`serve`] holds the small programs that run inside the
//!   namespaces (pod workload, internet echo, gateway reverse proxy, probe
//!   agent).

pub mod agents;
pub mod apply;
pub mod dns;
pub mod manifests;
pub mod nft;
pub mod plan;
pub mod progress;
pub mod rendered;
pub mod serve;
pub mod verify;

pub use apply::{Lab, LabState, Progress};
pub use plan::{LabOptions, Plan, Runtime};

/// Everything that can go wrong in the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab needs Linux and root (network namespaces, nftables).
    #[error("the lab needs {0}")]
    Unsupported(String),
    /// The store's state cannot be laid out as a lab.
    #[error("cannot plan the lab: {0}")]
    Plan(String),
    /// An external command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A workload did not start listening in time.
    #[error("{0} did not start listening within {1:?} (see its log in the lab directory)")]
    NotReady(String, std::time::Duration),
    /// No lab is running for this state.
    #[error("no lab is running (start one with `palisade lab up`)")]
    NotRunning,
    /// A lab is already running.
    #[error(
        "a lab is already running for this state (use `palisade lab sync`, or `palisade lab down` first)"
    )]
    AlreadyRunning,
    /// A value of the lab's state that the model rejects (the state file
    /// was edited by hand or written by another Palisade).
    #[error("the lab's state holds a value the model rejects")]
    Model(#[from] palisade_core::ModelError),
    /// The snapshot could not be rendered into the objects the lab runs.
    #[error("cannot render the objects the lab runs")]
    Render(#[source] palisade_kube::Error),
    /// The rendered objects cannot be laid out (a Deployment without its
    /// address pool, ...).
    #[error("the rendered objects cannot be run: {0}")]
    Objects(String),
    /// The proxy configuration could not be written out.
    #[error("failed to serialise the egress proxy's configuration")]
    ProxyConfig(#[source] palisade_proxy::ConfigError),
    /// The model does not make a proxy configuration (the proxy would refuse it).
    #[error("failed to compile the egress proxy's configuration")]
    ProxyCompile(#[from] palisade_proxy::compile::CompileError),
    /// A thread setting up network namespaces panicked (its message is on
    /// stderr, printed by the panic hook).
    #[error("a thread setting up the lab's network namespaces panicked")]
    SetupPanicked,
    /// Reading or writing the lab directory, or spawning a process.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// (De)serialising the lab's state or the probe protocol.
    #[error("{context}")]
    Json {
        /// What was being done.
        context: String,
        /// The cause.
        source: serde_json::Error,
    },
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| LabError::Io { context, source }
    }
    pub(crate) fn json(context: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Self {
        let context = context.into();
        move |source| LabError::Json { context, source }
    }
}

/// Result alias for the lab.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The chain `palisade` prints (`error: {e:#}`) names each cause once.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut line = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            line = format!("{line}: {c}");
            cause = c.source();
        }
        line
    }

    #[test]
    fn io_and_json_errors_say_their_cause_once() {
        let e = LabError::io("cannot write /lab/state.json")(std::io::Error::other("disk full"));
        assert_eq!(chain(&e), "cannot write /lab/state.json: disk full");
        let bad = serde_json::from_str::<u8>("x").unwrap_err();
        let said = bad.to_string();
        let e = LabError::json("lab state")(bad);
        assert_eq!(chain(&e), format!("lab state: {said}"));
    }

    #[test]
    fn a_bad_name_in_the_lab_state_is_a_typed_model_error() {
        let bad = "Not_A_Name"
            .parse::<palisade_core::TenantName>()
            .unwrap_err();
        let e = LabError::from(bad.clone());
        assert!(matches!(&e, LabError::Model(m) if *m == bad));
        assert_eq!(
            chain(&e),
            format!("the lab's state holds a value the model rejects: {bad}")
        );
    }
}
