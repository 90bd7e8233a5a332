//! What the reconcile tests share: a context over the in-memory API server
//! and one reconcile pass of a tenant or a workload, bounded in time so a
//! hang fails the test instead of stalling the suite.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use kube::api::Api;
use kube::runtime::controller::Action;
use palisade_operator::crd::{Tenant, TenantDeployment};
use palisade_operator::reconcile::{self, Ctx};
use palisade_operator::testing::{FakeApi, example_config};
use std::time::Duration;

/// A reconcile context on `api` with the example pool.
pub fn ctx(api: &FakeApi) -> Ctx {
    Ctx::new(api.client(), example_config())
}

/// The tenant `name` as the API server has it now.
pub async fn tenant(c: &Ctx, name: &str) -> Tenant {
    Api::<Tenant>::all(c.client.clone())
        .get(name)
        .await
        .unwrap()
}

/// The workload `tenant/name` as the API server has it now.
pub async fn workload(c: &Ctx, tenant: &str, name: &str) -> TenantDeployment {
    Api::<TenantDeployment>::namespaced(c.client.clone(), &format!("tenant-{tenant}"))
        .get(name)
        .await
        .unwrap()
}

/// One reconcile of the workload `t/name`.
pub async fn reconcile_workload(c: &Ctx, t: &str, name: &str) -> Action {
    let w = workload(c, t, name).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        reconcile::reconcile_workload(&w, c),
    )
    .await
    .expect("reconcile hung")
    .unwrap()
}

/// One reconcile of the tenant `name`.
pub async fn reconcile_tenant(c: &Ctx, name: &str) -> Action {
    let t = tenant(c, name).await;
    tokio::time::timeout(Duration::from_secs(10), reconcile::reconcile_tenant(&t, c))
        .await
        .expect("reconcile hung")
        .unwrap()
}
