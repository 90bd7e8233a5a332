//! Who is calling, and may they do this?
//!
//! A dashboard reachable from other hosts must not let anyone who can reach
//! the port read every tenant or delete deployments. Authentication is one
//! axum layer over `/api` ([`layer`]) that turns an `Authorization: Bearer`
//! token into a [`Caller`]; every handler then asks [`Authenticator::authorize`]
//! about the tenant it is about to show or change, so a caller authorised for
//! one tenant sees and changes only that tenant.
//!
//! Two authenticators exist: a token file (each token lists the tenants it
//! may see) and the Kubernetes API server (TokenReview, then
//! SubjectAccessReview against the Palisade resource, so cluster RBAC
//! decides). Without one, the dashboard only runs on loopback (or with an
//! explicit `--public-read`, read-only), as before.

pub mod kube;
pub(crate) mod layer;
pub mod token_file;

use palisade_core::{DeploymentName, TenantName};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use self::kube::KubeAuthenticator;
pub use token_file::{TokenFile, TokenFileError};

/// A boxed future, so [`Authenticator`] can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An authenticated user, as the authenticator describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Identity {
    /// The user name (Kubernetes `username`, or the token file entry's name).
    pub user: String,
    /// The user's uid, when the authenticator has one.
    pub uid: Option<String>,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
    /// Extra attributes (Kubernetes `user.extra`), passed back to the authorizer.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Read the whole platform: every tenant, the pool, the history.
    ReadAll,
    /// Read one tenant: its page, its matrix, its egress row.
    Read(TenantName),
    /// Create a deployment in a tenant.
    Create(TenantName, DeploymentName),
    /// Delete a deployment of a tenant.
    Delete(TenantName, DeploymentName),
}

impl Access {
    /// Whether this access changes state.
    pub fn is_write(&self) -> bool {
        matches!(self, Self::Create(..) | Self::Delete(..))
    }

    /// The tenant concerned, if one.
    pub fn tenant(&self) -> Option<&TenantName> {
        match self {
            Self::ReadAll => None,
            Self::Read(t) | Self::Create(t, _) | Self::Delete(t, _) => Some(t),
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadAll => write!(f, "read every tenant"),
            Self::Read(t) => write!(f, "read tenant {t}"),
            Self::Create(t, d) => write!(f, "create deployment {d} in tenant {t}"),
            Self::Delete(t, d) => write!(f, "delete deployment {d} of tenant {t}"),
        }
    }
}

/// An authenticator could not give an answer (as opposed to saying no).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The Kubernetes API server could not be asked.
    #[error("could not ask the Kubernetes API server ({what})")]
    Kube {
        /// Which review failed.
        what: &'static str,
        /// Why.
        #[source]
        source: ::kube::Error,
    },
    /// The API server answered without a status.
    #[error("the Kubernetes API server returned a {0} without a status")]
    NoStatus(&'static str),
}

/// Checks bearer tokens and decides what their holders may do.
///
/// Implementations answer "no" with `Ok(None)` / `Ok(false)`; `Err` means
/// no answer could be had, and the request fails closed (503).
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// Short name for `/api/config` and the audit log: `token-file`, `kubernetes`.
    fn kind(&self) -> &'static str;
    /// Who holds `token`, or `None` when it is not a valid token.
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>>;
    /// Whether `who` may do `access`.
    fn authorize<'a>(
        &'a self,
        who: &'a Identity,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;
}

/// The caller of one request, put in the request's extensions by [`layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credential, and none needed for this request: a loopback dashboard
    /// without an authenticator (may do anything), or `--public-read` (reads only).
    Anonymous,
    /// A caller whose bearer token the authenticator accepted.
    User(Identity),
}

impl Caller {
    /// The name written to the audit log.
    pub fn name(&self) -> &str {
        match self {
            Self::Anonymous => "anonymous",
            Self::User(id) => &id.user,
        }
    }
}
