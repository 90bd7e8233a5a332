//! Reconcile against the API server: reads, then the pure decisions of
//! [`crate::desired`], then only the writes those decisions ask for.
//!
//! Every function takes a `kube::Client`, so the tests drive them with the
//! in-memory API server of [`crate::testing`] and assert exact request
//! sequences.

use crate::claim::{ClaimLedger, claim_name};
use crate::crd::{SubnetClaim, SubnetClaimSpec, Tenant, TenantDeployment};
use crate::desired::{
    self, Blocked, FIELD_MANAGER, Live, MANAGED_BY_OPERATOR, TENANT_FINALIZER, WORKLOAD_FINALIZER,
    WORKLOAD_UID_LABEL,
};
use crate::metrics::Metrics;
use crate::{Config, Error};
use futures::TryFutureExt;
use ipnet::Ipv6Net;
use k8s_openapi::api::apps::v1::Deployment as K8sDeployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use palisade_core::Pool;
use palisade_kube::render::{MANAGED_BY, TENANT_LABEL};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// What a reconcile needs.
#[derive(Clone)]
pub struct Ctx {
    /// The API client.
    pub client: Client,
    /// The configuration.
    pub config: Arc<Config>,
    /// Where counts go.
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes events; `None` in tests that count requests.
    pub recorder: Option<Recorder>,
    /// Serialises this process's allocations. Claims are race-free without
    /// it (409 decides), but concurrent reconciles would all try the same
    /// candidates: n claimants cost O(n²) failed creates. Across replicas
    /// the claim objects still decide.
    pub allocation: Arc<tokio::sync::Mutex<()>>,
    /// When each tenant's objects were last applied in full. Between full
    /// applies only objects whose hash changed are written (an unchanged
    /// tenant costs reads only); once per `resync` everything is applied
    /// again, which repairs edits made to the objects behind our back.
    pub full_apply: Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

impl Ctx {
    /// A context without events.
    pub fn new(client: Client, config: Config) -> Self {
        Self {
            client,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            recorder: None,
            allocation: Arc::default(),
            full_apply: Arc::default(),
        }
    }

    /// Whether `tenant` is due for a full apply (never applied by this
    /// process, or longer ago than `resync`).
    fn full_apply_due(&self, tenant: &str) -> bool {
        let seen = self
            .full_apply
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .copied();
        seen.is_none_or(|t| t.elapsed() >= self.config.resync)
    }

    fn full_apply_done(&self, tenant: &str) {
        self.full_apply
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant.to_owned(), std::time::Instant::now());
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How soon to look again at a workload whose pods are not ready yet
/// (their Deployment is not watched).
const NOT_READY_REQUEUE: Duration = Duration::from_secs(15);
/// How soon to look again at a tenant waiting for its workloads to go.
const TERMINATING_REQUEUE: Duration = Duration::from_secs(2);

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The kinds a tenant's objects can have, as (apiVersion, kind,
/// namespaced), dependants first (the prune order): what `palisade apply`
/// prunes, less the platform's and Flux's kinds.
pub fn tenant_kinds() -> impl Iterator<Item = (&'static str, &'static str, bool)> {
    palisade_kube::apply::KINDS
        .into_iter()
        .filter(|(_, kind, _)| !matches!(*kind, "RuntimeClass" | "GitRepository" | "Kustomization"))
}

fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn dynamic_api(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar = resource(api_version, kind);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// The live objects the operator owns for `tenant`.
pub async fn list_owned(client: &Client, tenant: &str) -> Result<Vec<Live>, Error> {
    let ns = format!("{}{tenant}", desired::NAMESPACE_PREFIX);
    let selector = format!(
        "{}={MANAGED_BY_OPERATOR},{TENANT_LABEL}={tenant}",
        MANAGED_BY.0
    );
    let mut out = Vec::new();
    for (api_version, kind, namespaced) in tenant_kinds() {
        let api = dynamic_api(client, api_version, kind, namespaced.then_some(ns.as_str()));
        let list = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            // The kind's CRD is not installed: nothing of it can exist.
            Err(e) if is_status(&e, 404) => continue,
            Err(e) => return Err(Error::kube("list", kind)(e)),
        };
        for item in list.items {
            out.push(Live {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                namespace: item.metadata.namespace.clone(),
                name: item.name_any(),
                hash: item.annotations().get(desired::HASH_ANNOTATION).cloned(),
                deleting: item.metadata.deletion_timestamp.is_some(),
                workload: item.labels().get(desired::DEPLOYMENT_LABEL).cloned(),
            });
        }
    }
    Ok(out)
}

async fn delete_live(client: &Client, l: &Live) -> Result<(), Error> {
    let api = dynamic_api(client, &l.api_version, &l.kind, l.namespace.as_deref());
    match api.delete(&l.name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(Error::kube("delete", l.id())(e)),
    }
}

/// Adds `finalizer` if missing, guarded by the resourceVersion so a
/// concurrent change is not overwritten. Returns whether it wrote.
pub async fn ensure_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let fins = obj.finalizers();
    if fins.iter().any(|f| f == finalizer) {
        return Ok(false);
    }
    let rv = obj.resource_version().unwrap_or_default();
    let add = if fins.is_empty() {
        json!({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]})
    } else {
        json!({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        add
    ]))
    .map_err(|e| Error::Config(format!("finalizer patch: {e}")))?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(Error::kube("add the finalizer to", obj.name_any()))?;
    Ok(true)
}

/// Removes `finalizer` if present, guarded like [`ensure_finalizer`].
pub async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(i) = obj.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(false);
    };
    let rv = obj.resource_version().unwrap_or_default();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")}
    ]))
    .map_err(|e| Error::Config(format!("finalizer patch: {e}")))?;
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 404) => Ok(true),
        Err(e) => Err(Error::kube("remove the finalizer from", obj.name_any())(e)),
    }
}

async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let Some(recorder) = &ctx.recorder else {
        return;
    };
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "failed to publish an event");
    }
}

/// Reconciles one tenant: its workloads first when it is being deleted,
/// else the whole tenant rendered, applied and pruned.
pub async fn reconcile_tenant(tenant: &Tenant, ctx: &Ctx) -> Result<Action, Error> {
    let client = &ctx.client;
    let name = tenant.name_any();
    let ns = format!("{}{name}", desired::NAMESPACE_PREFIX);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let workloads: Api<TenantDeployment> = Api::namespaced(client.clone(), &ns);
    let now = now_rfc3339();

    if tenant.metadata.deletion_timestamp.is_some() {
        if !tenant.finalizers().iter().any(|f| f == TENANT_FINALIZER) {
            return Ok(Action::await_change());
        }
        let remaining = workloads
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list workloads of", name.clone()))?
            .items;
        if !remaining.is_empty() {
            for w in remaining
                .iter()
                .filter(|w| w.metadata.deletion_timestamp.is_none())
            {
                match workloads
                    .delete(&w.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {
                        tracing::info!(tenant = %name, workload = %w.name_any(), "deleting workload of deleted tenant")
                    }
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => {
                        return Err(Error::kube(
                            "delete",
                            format!("workload {ns}/{}", w.name_any()),
                        )(e));
                    }
                }
            }
            let status = desired::terminating_status(tenant.status.as_ref(), remaining.len(), &now);
            write_tenant_status(&tenants, tenant, &status).await?;
            return Ok(Action::requeue(TERMINATING_REQUEUE));
        }
        for l in desired::to_prune(&[], &list_owned(client, &name).await?) {
            delete_live(client, &l).await?;
            tracing::info!(tenant = %name, object = %l.id(), "deleted with its tenant");
        }
        remove_finalizer(&tenants, tenant, TENANT_FINALIZER).await?;
        tracing::info!(tenant = %name, "tenant deleted");
        return Ok(Action::await_change());
    }

    ensure_finalizer(&tenants, tenant, TENANT_FINALIZER).await?;
    let items = workloads
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list workloads of", name.clone()))?
        .items;
    let claims = Api::<SubnetClaim>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{TENANT_LABEL}={name}")))
        .await
        .map_err(Error::kube("list subnet claims of", name.clone()))?
        .items;
    let plan = desired::plan_tenant(
        &ctx.config.pool,
        &ctx.config.render,
        tenant,
        &items,
        &claims,
    );
    let (mut applied, mut pruned) = (0usize, 0usize);
    if let Ok(plan) = &plan {
        let live = list_owned(client, &name).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let full = ctx.full_apply_due(&name);
        let writes: Vec<&palisade_kube::Object> = if full {
            plan.objects.iter().collect()
        } else {
            desired::to_apply(&plan.objects, &live)
        };
        for o in writes {
            dynamic_api(client, &o.api_version, &o.kind, o.namespace.as_deref())
                .patch(&o.name, &params, &Patch::Apply(&o.body))
                .await
                .map_err(Error::kube("apply", o.id()))?;
            tracing::debug!(tenant = %name, object = %o.id(), "applied");
            applied += 1;
        }
        for l in desired::prunable(plan, &live) {
            delete_live(client, &l).await?;
            tracing::info!(tenant = %name, object = %l.id(), "pruned");
            pruned += 1;
        }
        if full {
            ctx.full_apply_done(&name);
        }
    }
    let status = desired::tenant_status(
        tenant.status.as_ref(),
        &name,
        tenant.metadata.generation,
        &plan,
        &now,
    );
    write_tenant_status(&tenants, tenant, &status).await?;
    match &plan {
        Err(e) => {
            tracing::warn!(tenant = %name, error = %e, "invalid tenant");
            publish(ctx, tenant, EventType::Warning, "InvalidSpec", e.0.clone()).await;
        }
        Ok(_) if applied + pruned > 0 => {
            tracing::info!(tenant = %name, applied, pruned, "reconciled");
            publish(
                ctx,
                tenant,
                EventType::Normal,
                "Reconciled",
                format!("applied {applied}, pruned {pruned} objects"),
            )
            .await;
        }
        Ok(_) => tracing::debug!(tenant = %name, "up to date"),
    }
    Ok(Action::requeue(ctx.config.resync))
}

async fn write_tenant_status(
    api: &Api<Tenant>,
    tenant: &Tenant,
    status: &crate::crd::TenantStatus,
) -> Result<(), Error> {
    if tenant.status.as_ref() == Some(status) {
        return Ok(());
    }
    let body = json!({"apiVersion": crate::crd::API_VERSION, "kind": "Tenant",
                      "metadata": {"name": tenant.name_any()}, "status": status});
    api.patch_status(
        &tenant.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(
        "update the status of tenant",
        tenant.name_any(),
    ))?;
    Ok(())
}

/// Claims a subnet for a workload: the core rule's candidate, created as a
/// claim object; on a name conflict (someone else was faster) the next
/// candidate. `None` when the pool is full.
pub async fn allocate(
    client: &Client,
    pool: &Pool,
    spec: &SubnetClaimSpec,
    metrics: &Metrics,
) -> Result<Option<Ipv6Net>, Error> {
    let api: Api<SubnetClaim> = Api::all(client.clone());
    let existing = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "subnet claims"))?;
    let names: Vec<String> = existing.items.iter().map(ResourceExt::name_any).collect();
    let mut ledger = ClaimLedger::from_names(pool, names.iter().map(String::as_str));
    while let Some(index) = ledger.next_candidate(pool) {
        let subnet = pool.subnet(index);
        let claim = SubnetClaim {
            metadata: ObjectMeta {
                name: Some(claim_name(subnet)),
                labels: Some(desired::claim_labels(
                    &spec.tenant,
                    &spec.deployment,
                    &spec.workload_uid,
                )),
                ..ObjectMeta::default()
            },
            spec: SubnetClaimSpec {
                subnet: subnet.to_string(),
                ..spec.clone()
            },
        };
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {
                metrics.claims_created.inc();
                metrics.set_pool(pool.capacity(), ledger.len());
                tracing::info!(subnet = %subnet, namespace = %spec.namespace, workload = %spec.deployment, "subnet claimed");
                return Ok(Some(subnet));
            }
            Err(e) if is_status(&e, 409) => {
                metrics.claim_conflicts.inc();
                tracing::debug!(subnet = %subnet, "claim lost a race; trying the next subnet");
            }
            Err(e) => return Err(Error::kube("create the claim for", subnet.to_string())(e)),
        }
    }
    Ok(None)
}

/// Reconciles one workload: its finalizer and subnet claim, and its
/// status. Its objects are the tenant's business.
pub async fn reconcile_workload(w: &TenantDeployment, ctx: &Ctx) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = w.namespace().unwrap_or_default();
    let name = w.name_any();
    let uid = w.uid().unwrap_or_default();
    let api: Api<TenantDeployment> = Api::namespaced(client.clone(), &ns);
    let claims: Api<SubnetClaim> = Api::all(client.clone());
    let mine = || ListParams::default().labels(&format!("{WORKLOAD_UID_LABEL}={uid}"));

    if w.metadata.deletion_timestamp.is_some() {
        if w.finalizers().iter().any(|f| f == WORKLOAD_FINALIZER) {
            let held = claims
                .list(&mine())
                .await
                .map_err(Error::kube("list the claims of", format!("{ns}/{name}")))?;
            let quarantine = ctx.config.pool.reuse_after();
            for c in held.items.iter().filter(|c| c.spec.released_at.is_none()) {
                let result = if quarantine.is_zero() {
                    claims
                        .delete(&c.name_any(), &DeleteParams::default())
                        .await
                        .map(|_| ())
                } else {
                    // The claim stays, keeping the subnet out of circulation;
                    // garbage collection deletes it when the quarantine ends.
                    let patch = json!({"spec": {"releasedAt": now_rfc3339()}});
                    claims
                        .patch(
                            &c.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .map_ok(|_| ())
                        .await
                };
                match result {
                    Ok(()) => tracing::info!(
                        subnet = %c.spec.subnet,
                        workload = %format!("{ns}/{name}"),
                        quarantine_secs = quarantine.as_secs(),
                        "subnet released"
                    ),
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(Error::kube("release claim", c.name_any())(e)),
                }
            }
            remove_finalizer(&api, w, WORKLOAD_FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }

    ensure_finalizer(&api, w, WORKLOAD_FINALIZER).await?;
    let checked: Result<palisade_core::TenantName, Blocked> = desired::tenant_of_namespace(&ns)
        .and_then(|t| {
            // Validate with any subnet of the pool; the real one comes next.
            desired::core_deployment(&t, &name, &w.spec, ctx.config.pool.subnet(0)).map(|_| t)
        })
        .map_err(Blocked::InvalidSpec);
    let checked = match checked {
        Ok(t) => {
            let exists = Api::<Tenant>::all(client.clone())
                .get_opt(t.as_str())
                .await
                .map_err(Error::kube("read tenant", t.to_string()))?
                .is_some();
            if exists {
                Ok(t)
            } else {
                Err(Blocked::TenantMissing(t.to_string()))
            }
        }
        Err(b) => Err(b),
    };
    let subnet = match &checked {
        Err(e) => Err(e),
        Ok(tenant) => {
            let held = claims
                .list(&mine())
                .await
                .map_err(Error::kube("list the claims of", format!("{ns}/{name}")))?
                .items;
            match desired::subnet_for(&uid, &held) {
                Some(net) => Ok(Some(net)),
                None => {
                    let spec = SubnetClaimSpec {
                        subnet: String::new(),
                        tenant: tenant.to_string(),
                        namespace: ns.clone(),
                        deployment: name.clone(),
                        workload_uid: uid.clone(),
                        released_at: None,
                    };
                    let got = {
                        let _one_at_a_time = ctx.allocation.lock().await;
                        allocate(client, &ctx.config.pool, &spec, &ctx.metrics).await?
                    };
                    match got {
                        Some(net) => {
                            publish(
                                ctx,
                                w,
                                EventType::Normal,
                                "SubnetClaimed",
                                format!("subnet {net}"),
                            )
                            .await
                        }
                        None => {
                            publish(
                                ctx,
                                w,
                                EventType::Warning,
                                "PoolExhausted",
                                "no free subnet in the pool".into(),
                            )
                            .await
                        }
                    }
                    Ok(got)
                }
            }
        }
    };
    let ready = if matches!(subnet, Ok(Some(_))) {
        Api::<K8sDeployment>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(Error::kube("read", format!("Deployment {ns}/{name}")))?
            .and_then(|d| d.status)
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    } else {
        0
    };
    if let Err(e) = &subnet {
        tracing::warn!(workload = %format!("{ns}/{name}"), reason = e.reason(), error = %e.message(), "workload blocked");
    }
    let status = desired::workload_status(
        w.status.as_ref(),
        w.metadata.generation,
        subnet.as_ref().map(|s| *s).map_err(|e| *e),
        ready,
        w.spec.replicas,
        &now_rfc3339(),
    );
    if w.status.as_ref() != Some(&status) {
        let body = json!({"apiVersion": crate::crd::API_VERSION, "kind": "TenantDeployment",
                          "metadata": {"name": name, "namespace": ns}, "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube("update the status of", format!("{ns}/{name}")))?;
    }
    Ok(match subnet {
        Ok(Some(_)) if i64::from(ready) < i64::from(w.spec.replicas) => {
            Action::requeue(NOT_READY_REQUEUE)
        }
        Ok(None) | Err(Blocked::TenantMissing(_)) => Action::requeue(NOT_READY_REQUEUE),
        _ => Action::requeue(ctx.config.resync),
    })
}

/// Deletes claims whose workload is gone (older than the grace period);
/// returns their names.
pub async fn collect_garbage(ctx: &Ctx) -> Result<Vec<String>, Error> {
    let claims_api: Api<SubnetClaim> = Api::all(ctx.client.clone());
    let claims = claims_api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "subnet claims"))?
        .items;
    let workloads = Api::<TenantDeployment>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "workloads"))?
        .items;
    let uids: HashSet<String> = workloads.iter().filter_map(|w| w.uid()).collect();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let orphans = desired::orphaned_claims(
        &claims,
        &uids,
        now,
        ctx.config.gc_grace,
        ctx.config.pool.reuse_after(),
    );
    for name in &orphans {
        match claims_api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.metrics.claims_collected.inc();
                tracing::info!(claim = %name, "orphaned claim deleted");
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(Error::kube("delete claim", name.clone())(e)),
        }
    }
    ctx.metrics.set_pool(
        ctx.config.pool.capacity(),
        claims.len().saturating_sub(orphans.len()),
    );
    Ok(orphans)
}
