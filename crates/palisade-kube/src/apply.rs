//! `palisade apply`: the rendered objects to a live cluster.
//!
//! Server-side apply with one field manager (`palisade`) makes re-applying
//! idempotent and lets other controllers own other fields. Pruning is what
//! `kubectl apply --prune` does, restricted to what Palisade can prove it
//! owns: objects of the kinds it renders that carry its managed-by label
//! and are no longer rendered.
//!
//! The function takes a `kube::Client`, so tests drive it with a mock API
//! server and check the exact request sequence; nothing here needs a
//! cluster to be tested.

use crate::Error;
use crate::object::Object;
use crate::render::MANAGED_BY;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use std::collections::BTreeSet;

/// The field manager recorded on every applied field.
pub const FIELD_MANAGER: &str = "palisade";

/// Every kind Palisade renders, as (apiVersion, kind, namespaced). Prune
/// lists each of them, so a kind with nothing left to render is still
/// cleaned up. Order: dependants before what they depend on.
pub const KINDS: [(&str, &str, bool); 21] = [
    ("gateway.networking.k8s.io/v1", "HTTPRoute", true),
    ("gateway.networking.k8s.io/v1", "Gateway", true),
    ("cilium.io/v2", "CiliumNetworkPolicy", true),
    ("networking.k8s.io/v1", "NetworkPolicy", true),
    ("v1", "Service", true),
    ("policy/v1", "PodDisruptionBudget", true),
    ("apps/v1", "Deployment", true),
    ("v1", "ConfigMap", true),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", true),
    ("rbac.authorization.k8s.io/v1", "Role", true),
    ("v1", "ServiceAccount", true),
    ("v1", "LimitRange", true),
    ("v1", "ResourceQuota", true),
    ("cilium.io/v2alpha1", "CiliumPodIPPool", false),
    ("cilium.io/v2", "CiliumEgressGatewayPolicy", false),
    ("source.toolkit.fluxcd.io/v1", "GitRepository", true),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization", true),
    ("node.k8s.io/v1", "RuntimeClass", false),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
        false,
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
        false,
    ),
    ("v1", "Namespace", false),
];

/// How to apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Ask the server to validate and compute, but persist nothing, and
    /// delete nothing.
    pub dry_run: bool,
    /// Delete owned objects that are no longer rendered.
    pub prune: bool,
}

/// What `apply` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Objects applied, as `Kind namespace/name`.
    pub applied: Vec<String>,
    /// Objects deleted by pruning.
    pub pruned: Vec<String>,
}

fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn kube_err(action: &'static str, object: String) -> impl FnOnce(kube::Error) -> Error {
    move |e| Error::Kube {
        action,
        object,
        source: Box::new(e),
    }
}

/// A client from the usual places: `$KUBECONFIG`, `~/.kube/config`, or
/// the in-cluster service account.
pub async fn default_client() -> Result<Client, Error> {
    Client::try_default()
        .await
        .map_err(kube_err("connect to", "the cluster".to_owned()))
}

/// Applies `objects` in order, then prunes.
pub async fn apply(
    client: Client,
    objects: &[Object],
    options: ApplyOptions,
) -> Result<ApplyReport, Error> {
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = options.dry_run;
    let mut report = ApplyReport::default();
    let mut desired = BTreeSet::new();

    for o in objects {
        let ar = resource(&o.api_version, &o.kind);
        let api: Api<DynamicObject> = match &o.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        api.patch(&o.name, &params, &Patch::Apply(&o.body))
            .await
            .map_err(kube_err("apply", o.id()))?;
        tracing::debug!(object = %o.id(), dry_run = options.dry_run, "applied");
        report.applied.push(o.id());
        desired.insert((o.kind.clone(), o.namespace.clone(), o.name.clone()));
    }

    if !options.prune {
        return Ok(report);
    }
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    for (api_version, kind, _) in KINDS {
        let ar = resource(api_version, kind);
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let list = match all.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            // The kind's CRD is not installed (no Flux, no Gateway API):
            // nothing of it can exist, so nothing to prune.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => return Err(kube_err("list", kind.to_owned())(e)),
        };
        for item in list.items {
            let name = item.metadata.name.clone().unwrap_or_default();
            let ns = item.metadata.namespace.clone();
            if desired.contains(&(kind.to_owned(), ns.clone(), name.clone())) {
                continue;
            }
            let id = match &ns {
                Some(ns) => format!("{kind} {ns}/{name}"),
                None => format!("{kind} {name}"),
            };
            if !options.dry_run {
                let api: Api<DynamicObject> = match &ns {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                api.delete(&name, &DeleteParams::background())
                    .await
                    .map_err(kube_err("delete", id.clone()))?;
            }
            tracing::info!(object = %id, dry_run = options.dry_run, "pruned");
            report.pruned.push(id);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RenderOptions, fixtures, render};
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    type Log = Arc<Mutex<Vec<String>>>;

    /// A fake API server: echoes applies, lists one stale Palisade-owned
    /// Deployment (and a CRD kind that is not installed), accepts deletes,
    /// and records `METHOD path?query` of every request.
    fn mock() -> (Client, Log, tokio::task::JoinHandle<()>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let log: Log = Arc::default();
        let seen = log.clone();
        let server = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let uri = parts.uri.to_string();
                seen.lock().unwrap().push(format!("{} {uri}", parts.method));
                let path = parts.uri.path().to_owned();
                let (status, json) = match parts.method {
                    Method::PATCH => {
                        let bytes = body.collect_bytes().await.unwrap();
                        (StatusCode::OK, bytes.to_vec())
                    }
                    Method::GET if path.contains("/gitrepositories") => (
                        StatusCode::NOT_FOUND,
                        serde_json::to_vec(&serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": "not found",
                            "reason": "NotFound", "code": 404
                        }))
                        .unwrap(),
                    ),
                    Method::GET => {
                        let items = if path == "/apis/apps/v1/deployments" {
                            vec![
                                serde_json::json!({
                                    "apiVersion": "apps/v1", "kind": "Deployment",
                                    "metadata": {"name": "old", "namespace": "tenant-acme-corp"}
                                }),
                                serde_json::json!({
                                    "apiVersion": "apps/v1", "kind": "Deployment",
                                    "metadata": {"name": "database", "namespace": "tenant-acme-corp"}
                                }),
                            ]
                        } else {
                            Vec::new()
                        };
                        (
                            StatusCode::OK,
                            serde_json::to_vec(&serde_json::json!({
                                "apiVersion": "v1", "kind": "List",
                                "metadata": {"resourceVersion": "1"}, "items": items
                            }))
                            .unwrap(),
                        )
                    }
                    Method::DELETE => (
                        StatusCode::OK,
                        serde_json::to_vec(&serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "code": 200
                        }))
                        .unwrap(),
                    ),
                    _ => (StatusCode::METHOD_NOT_ALLOWED, Vec::new()),
                };
                send.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(json))
                        .unwrap(),
                );
            }
        });
        (Client::new(service, "default"), log, server)
    }

    fn seed_objects() -> Vec<Object> {
        render(&fixtures::seed(), &RenderOptions::default())
            .unwrap()
            .objects()
            .cloned()
            .collect()
    }

    async fn run(options: ApplyOptions) -> (ApplyReport, Vec<String>) {
        let (client, log, server) = mock();
        let objects = seed_objects();
        let report =
            tokio::time::timeout(Duration::from_secs(10), apply(client, &objects, options))
                .await
                .expect("apply hung: the mock server probably did not answer a request")
                .unwrap();
        server.abort();
        let log = log.lock().unwrap().clone();
        (report, log)
    }

    #[tokio::test]
    async fn apply_patches_every_object_then_prunes_only_stale_owned_ones() {
        let objects = seed_objects();
        let (report, log) = run(ApplyOptions {
            dry_run: false,
            prune: true,
        })
        .await;

        let patches: Vec<&String> = log.iter().filter(|l| l.starts_with("PATCH ")).collect();
        assert_eq!(patches.len(), objects.len());
        assert!(
            patches
                .iter()
                .all(|l| l.contains("fieldManager=palisade") && l.contains("force=true")),
            "{patches:?}"
        );
        assert!(!patches.iter().any(|l| l.contains("dryRun")));
        assert_eq!(
            patches[0],
            "PATCH /apis/node.k8s.io/v1/runtimeclasses/gvisor?&force=true&fieldManager=palisade"
        );
        assert!(patches.contains(
            &&"PATCH /apis/apps/v1/namespaces/tenant-acme-corp/deployments/database?&force=true&fieldManager=palisade".to_owned()
        ));
        assert!(patches.iter().any(|l| {
            l.starts_with("PATCH /apis/cilium.io/v2alpha1/ciliumpodippools/acme-corp.database?")
        }));

        let lists: Vec<&String> = log.iter().filter(|l| l.starts_with("GET ")).collect();
        assert_eq!(lists.len(), KINDS.len());
        assert!(
            lists
                .iter()
                .all(|l| l.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dpalisade")),
            "{lists:?}"
        );

        // Only the stale Deployment goes; the rendered one stays.
        let deletes: Vec<&String> = log.iter().filter(|l| l.starts_with("DELETE ")).collect();
        assert_eq!(deletes.len(), 1, "{deletes:?}");
        assert!(
            deletes[0]
                .starts_with("DELETE /apis/apps/v1/namespaces/tenant-acme-corp/deployments/old")
        );
        assert_eq!(report.pruned, ["Deployment tenant-acme-corp/old"]);
        assert_eq!(report.applied.len(), objects.len());
        // Requests happen in order: all applies, then lists and deletes.
        let first_get = log.iter().position(|l| l.starts_with("GET ")).unwrap();
        assert_eq!(first_get, objects.len());
    }

    #[tokio::test]
    async fn dry_run_asks_the_server_to_persist_nothing_and_deletes_nothing() {
        let (report, log) = run(ApplyOptions {
            dry_run: true,
            prune: true,
        })
        .await;
        assert!(
            log.iter()
                .filter(|l| l.starts_with("PATCH "))
                .all(|l| l.contains("dryRun=All"))
        );
        assert!(!log.iter().any(|l| l.starts_with("DELETE ")));
        assert_eq!(report.pruned, ["Deployment tenant-acme-corp/old"]);
    }

    #[tokio::test]
    async fn without_prune_nothing_is_listed() {
        let (_, log) = run(ApplyOptions::default()).await;
        assert!(log.iter().all(|l| l.starts_with("PATCH ")));
    }
}
