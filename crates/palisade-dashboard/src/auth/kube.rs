//! Kubernetes authentication: the cluster decides who may do what.
//!
//! A caller's bearer token (a ServiceAccount token, an OIDC id token the API
//! server trusts, ...) is sent in a `TokenReview` (authentication.k8s.io/v1:
//! `spec.token` in, `status.authenticated` and `status.user` {username, uid,
//! groups, extra} out). Each access is then a `SubjectAccessReview`
//! (authorization.k8s.io/v1: `spec.user/groups/uid/extra` and
//! `spec.resourceAttributes` {group, resource, verb, namespace, name} in,
//! `status.allowed` out) against the Palisade resource the operator serves
//! (group `palisade.io`, crates/palisade-operator/src/crd.rs), so a tenant's
//! RoleBinding in `tenant-<name>` grants exactly that tenant:
//!
//! | access | verb | resource | namespace | name |
//! |---|---|---|---|---|
//! | the whole platform | `list` | `tenants` (cluster-scoped) | — | — |
//! | one tenant | `list` | `tenantdeployments` | `tenant-<t>` | — |
//! | create a deployment | `create` | `tenantdeployments` | `tenant-<t>` | the deployment |
//! | delete a deployment | `delete` | `tenantdeployments` | `tenant-<t>` | the deployment |
//!
//! Shapes per https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-review-v1/
//! and https://kubernetes.io/docs/reference/kubernetes-api/authorization-resources/subject-access-review-v1/
//! (the k8s-openapi types are generated from the same OpenAPI). Answers are
//! cached for [`CACHE_TTL`], as the API server's own webhook authenticator
//! caches TokenReviews, so a page that lists many tenants does not ask twice.

use super::{Access, AuthError, Authenticator, BoxFuture, Identity};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// API group of the Palisade custom resources.
pub const GROUP: &str = "palisade.io";
/// How long a review's answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 4096;

/// Authenticates with TokenReview and authorises with SubjectAccessReview.
pub struct KubeAuthenticator {
    client: kube::Client,
    tokens: TtlCache<[u8; 32], Option<Identity>>,
    decisions: TtlCache<(Identity, String), bool>,
}

impl std::fmt::Debug for KubeAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAuthenticator").finish_non_exhaustive()
    }
}

impl KubeAuthenticator {
    /// Uses `client` (in a pod: `kube::Client::try_default()`, whose
    /// ServiceAccount needs `create` on `tokenreviews` and `subjectaccessreviews`).
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            tokens: TtlCache::default(),
            decisions: TtlCache::default(),
        }
    }

    /// Uses the in-cluster configuration, else the kubeconfig
    /// (`kube::Client::try_default`).
    pub async fn from_environment() -> Result<Self, kube::Error> {
        Ok(Self::new(kube::Client::try_default().await?))
    }

    async fn review_token(&self, token: &str) -> Result<Option<Identity>, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthError::Kube {
                what: "TokenReview",
                source,
            })?;
        let status = answer.status.ok_or(AuthError::NoStatus("TokenReview"))?;
        if status.authenticated != Some(true) {
            tracing::debug!(error = ?status.error, "TokenReview refused a token");
            return Ok(None);
        }
        let user = status.user.unwrap_or_default();
        Ok(user
            .username
            .filter(|u| !u.is_empty())
            .map(|name| Identity {
                user: name,
                uid: user.uid,
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            }))
    }

    async fn review_access(&self, who: &Identity, access: &Access) -> Result<bool, AuthError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                uid: who.uid.clone(),
                groups: Some(who.groups.clone()),
                extra: (!who.extra.is_empty()).then(|| who.extra.clone()),
                resource_attributes: Some(resource_attributes(access)),
                non_resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthError::Kube {
                what: "SubjectAccessReview",
                source,
            })?;
        let status = answer
            .status
            .ok_or(AuthError::NoStatus("SubjectAccessReview"))?;
        Ok(status.allowed && status.denied != Some(true))
    }
}

/// The SubjectAccessReview attributes for `access` (see the module table).
pub fn resource_attributes(access: &Access) -> ResourceAttributes {
    let (verb, resource, tenant, name) = match access {
        Access::ReadAll => ("list", "tenants", None, None),
        Access::Read(t) => ("list", "tenantdeployments", Some(t), None),
        Access::Create(t, d) => ("create", "tenantdeployments", Some(t), Some(d)),
        Access::Delete(t, d) => ("delete", "tenantdeployments", Some(t), Some(d)),
    };
    ResourceAttributes {
        group: Some(GROUP.into()),
        resource: Some(resource.into()),
        verb: Some(verb.into()),
        namespace: tenant.map(|t| format!("tenant-{t}")),
        name: name.map(ToString::to_string),
        ..ResourceAttributes::default()
    }
}

impl Authenticator for KubeAuthenticator {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move {
            let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Some(hit) = self.tokens.get(&key) {
                return Ok(hit);
            }
            let id = self.review_token(token).await?;
            self.tokens.put(key, id.clone());
            Ok(id)
        })
    }

    fn authorize<'a>(
        &'a self,
        who: &'a Identity,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let key = (who.clone(), access.to_string());
            if let Some(hit) = self.decisions.get(&key) {
                return Ok(hit);
            }
            let ok = self.review_access(who, access).await?;
            self.decisions.put(key, ok);
            Ok(ok)
        })
    }
}

/// A small map whose entries expire after [`CACHE_TTL`].
struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    fn get(&self, k: &K) -> Option<V> {
        let map = self.map.lock().ok()?;
        map.get(k)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(v, _)| v.clone())
    }

    fn put(&self, k: K, v: V) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CACHE_MAX {
                map.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                if map.len() >= CACHE_MAX {
                    map.clear();
                }
            }
            map.insert(k, (v, Instant::now()));
        }
    }
}
