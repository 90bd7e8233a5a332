//! End to end on a real cluster (kind + Cilium, see docs/operator.md):
//! `cargo test -p palisade-operator --test cluster -- --ignored` with
//! `$KUBECONFIG` pointing at it and the CRDs installed
//! (`kubectl apply -k deploy/crds`). The controllers run in this process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use palisade_core::Pool;
use palisade_kube::RenderOptions;
use palisade_operator::crd::{
    SubnetClaim, Tenant, TenantDeployment, TenantDeploymentSpec, TenantSpec,
};
use palisade_operator::reconcile::Ctx;
use palisade_operator::{Config, run};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cluster"]
async fn tenant_workloads_claims_and_deletion_on_a_real_cluster() {
    let client = Client::try_default().await.unwrap();
    let ctx = Arc::new(Ctx::new(
        client.clone(),
        Config {
            pool: Pool::new(
                "fd00:e2e::/48".parse().unwrap(),
                "96".parse().unwrap(),
                Duration::ZERO,
            )
            .unwrap(),
            render: RenderOptions::default(),
            gc_grace: Duration::from_secs(600),
            gc_interval: Duration::from_secs(300),
            resync: Duration::from_secs(60),
        },
    ));
    let controllers = tokio::spawn(run::controllers(ctx, Default::default()));

    let name = format!("e2e{}", std::process::id());
    let ns = format!("tenant-{name}");
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &Tenant::new(&name, TenantSpec::default()),
        )
        .await
        .unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    eventually("the tenant namespace", || async {
        namespaces.get_opt(&ns).await.unwrap().is_some()
    })
    .await;

    let workloads: Api<TenantDeployment> = Api::namespaced(client.clone(), &ns);
    for w in ["web", "api", "db", "cache"] {
        let spec = TenantDeploymentSpec {
            image: "nginx:alpine".into(),
            replicas: 1,
            ports: vec![80],
            ..Default::default()
        };
        workloads
            .create(&PostParams::default(), &TenantDeployment::new(w, spec))
            .await
            .unwrap();
    }
    let mut subnets = BTreeSet::new();
    for w in ["web", "api", "db", "cache"] {
        eventually("a subnet", || async {
            workloads
                .get(w)
                .await
                .unwrap()
                .status
                .and_then(|s| s.subnet)
                .is_some()
        })
        .await;
        subnets.insert(
            workloads
                .get(w)
                .await
                .unwrap()
                .status
                .unwrap()
                .subnet
                .unwrap(),
        );
    }
    assert_eq!(subnets.len(), 4, "distinct subnets");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns);
    eventually("the Deployment", || async {
        deployments.get_opt("web").await.unwrap().is_some()
    })
    .await;

    let claims: Api<SubnetClaim> = Api::all(client.clone());
    let web_subnet = workloads
        .get("web")
        .await
        .unwrap()
        .status
        .unwrap()
        .subnet
        .unwrap();
    workloads
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the claim released", || async {
        !claims
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|c| c.spec.subnet == web_subnet)
    })
    .await;
    eventually("the Deployment pruned", || async {
        deployments.get_opt("web").await.unwrap().is_none()
    })
    .await;

    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the tenant gone", || async {
        tenants.get_opt(&name).await.unwrap().is_none()
    })
    .await;
    assert!(
        !claims
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|c| c.spec.tenant == name)
    );
    controllers.abort();
}
