//! The platform's settings in the cluster: the one `Platform` object
//! (`palisade.io/v1alpha1`, cluster-scoped, named `palisade`) holds what
//! no tenant owns, the central gateway; the operator renders it (its
//! Gateway with the platform, its routes with each tenant). No object, or
//! no CRD for it, reads as no settings; a write names the missing CRD.

use super::convert;
use crate::error::{Context, Error, Result};
use palisade_core::{Gateway, GatewayScope};
use palisade_operator::crd::{PLATFORM_NAME, Platform, PlatformSpec};
use palisade_operator::kube::api::{Api, Patch, PatchParams, PostParams};
use palisade_operator::kube::{Client, ResourceExt};
use serde_json::json;

/// The Platform object, if there is one.
pub(super) async fn read(c: &Client) -> Result<Option<Platform>> {
    Api::<Platform>::all(c.clone())
        .get_opt(PLATFORM_NAME)
        .await
        .context("cannot read the platform's settings")
}

/// The central gateway `p` holds, created when the object was (the
/// cluster keeps no separate time for the setting).
pub(super) fn central(p: Option<&Platform>) -> Option<Gateway> {
    p.filter(|p| p.spec.central_gateway).map(|p| Gateway {
        scope: GatewayScope::Central,
        created_at: convert::created(p),
    })
}

/// Sets `spec.centralGateway`: creates the object, or merge-patches the
/// one read at the `resourceVersion` it was read at (a change in between
/// is a 409, reported rather than overwritten).
pub(super) async fn set_central(c: &Client, current: Option<&Platform>, on: bool) -> Result<()> {
    let api = Api::<Platform>::all(c.clone());
    let written = match current {
        None => {
            let spec = PlatformSpec {
                central_gateway: on,
            };
            api.create(&PostParams::default(), &Platform::new(PLATFORM_NAME, spec))
                .await
        }
        Some(p) => {
            let body = json!({"metadata": {"resourceVersion": p.resource_version()},
                              "spec": {"centralGateway": on}});
            api.patch(PLATFORM_NAME, &PatchParams::default(), &Patch::Merge(&body))
                .await
        }
    };
    match written {
        Ok(_) => Ok(()),
        Err(palisade_operator::kube::Error::Api(s)) if s.code == 404 && current.is_none() => {
            Err(Error::other(
                "cannot write the platform's settings: the Platform CRD is not installed \
                 (kubectl apply -k deploy/crds)",
            ))
        }
        Err(e) => Err(Error::failed("cannot write the platform's settings", e)),
    }
}
