//! The platform's nouns, parsed once at the edge.
//!
//! Every value here is a newtype that can only be built from input that
//! Kubernetes (and the rest of Palisade) will accept, so code past the CLI or
//! the store never re-checks a name, an image or a quantity. Errors carry the
//! offending input and say what would have been accepted.

/// A string newtype that only `$check` lets in.
///
/// `$check` (a `fn(&str) -> Result<(), ModelError>` or a closure) is the
/// type's parse rule; `FromStr`, `TryFrom<String>` and serde's
/// deserialisation all go through it, so no path builds an unchecked value.
/// The value is kept as given and printed as is.
macro_rules! checked_string {
    ($(#[$doc:meta])* $ty:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
        )]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// The value as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::model::ModelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                ($check)(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $ty {
            type Error = $crate::model::ModelError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                ($check)(s.as_str())?;
                Ok(Self(s))
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

mod image;
mod labels;
mod names;
mod quantity;
mod resources;
mod workload;

pub use image::Image;
pub use labels::{LabelKey, LabelValue, Labels, parse_label};
pub use names::{DeploymentName, NodePoolName, TenantName};
pub use quantity::{Cpu, Memory};
pub use resources::{
    Deployment, EgressMode, EgressProfile, Gateway, GatewayScope, PROXY_PORTS, Port, Quota,
    Replicas, Tenant,
};
pub use workload::{
    EnvName, EnvValue, EnvVar, MountPath, RESERVED_ENV, ScratchVolume, SecretKey, SecretName,
    SecurityProfile, WorkloadSpec,
};

/// Why a value was not accepted into the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A tenant, deployment or node-pool name breaks the DNS-1123 label rules.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What was being named ("tenant", "deployment", ...).
        kind: &'static str,
        /// The rejected input.
        name: String,
        /// What rule it broke.
        reason: String,
    },
    /// An image reference that a container runtime would not pull.
    #[error("invalid image reference {image:?}: {reason}")]
    InvalidImage {
        /// The rejected input.
        image: String,
        /// What rule it broke.
        reason: &'static str,
    },
    /// A CPU or memory quantity that is not a Kubernetes quantity.
    #[error("invalid {kind} quantity {value:?}: {reason}")]
    InvalidQuantity {
        /// "cpu" or "memory".
        kind: &'static str,
        /// The rejected input.
        value: String,
        /// What would have been accepted.
        reason: &'static str,
    },
    /// A label key or value that Kubernetes would reject.
    #[error("invalid label {label:?}: {reason}")]
    InvalidLabel {
        /// The rejected input.
        label: String,
        /// What rule it broke.
        reason: String,
    },
    /// A number outside its allowed range (replicas, ports, pods).
    #[error("invalid {kind} {value:?}: {reason}")]
    OutOfRange {
        /// What the number counts.
        kind: &'static str,
        /// The rejected input.
        value: String,
        /// The accepted range.
        reason: String,
    },
    /// A deployment's environment, scratch directory or security profile
    /// that Kubernetes would reject or that would undo Palisade's isolation.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidWorkload {
        /// What was being given ("environment variable name", "scratch path", ...).
        what: &'static str,
        /// The rejected input.
        value: String,
        /// What rule it broke.
        reason: String,
    },
}
