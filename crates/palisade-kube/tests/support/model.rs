//! The policy model's side of the tests that compare it with the rendered
//! objects (`tests/eval.rs`, `tests/planted.rs`).

use palisade_core::policy::Endpoint as Model;
use palisade_core::{EgressMode, Snapshot};

/// The model's endpoints: deployments, gateways, DNS, each proxy tenant's
/// proxy, the internet.
pub fn model_endpoints(snap: &Snapshot) -> Vec<Model> {
    let mut out: Vec<Model> = snap
        .deployments
        .iter()
        .map(|d| Model::deployment(&d.tenant, &d.name))
        .collect();
    out.extend(snap.gateways.iter().map(|g| Model::Gateway {
        scope: g.scope.clone(),
    }));
    out.push(Model::ClusterDns);
    out.extend(
        snap.tenants
            .iter()
            .filter(|t| t.egress.mode == EgressMode::Proxy)
            .map(|t| Model::EgressProxy {
                tenant: t.name.clone(),
            }),
    );
    out.push(Model::Internet);
    out
}
