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
use crate::status::{self, Outcome, Refusal};
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
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Per object (`Kind namespace/name`, or a reconciled resource's key):
    /// consecutive failures and when the next attempt is due.
    pub backoff: Arc<std::sync::Mutex<HashMap<String, Backoff>>>,
}

/// An object's failure streak.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Consecutive failures.
    pub failures: u32,
    /// No attempt before this.
    pub until: Instant,
    /// The last failure's message.
    pub message: String,
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
            backoff: Arc::default(),
        }
    }

    fn backoffs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Backoff>> {
        self.backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a failure of `key`; returns how long until its next try
    /// (exponential, with jitter: [`status::backoff_delay`]).
    pub fn failed(&self, key: &str, message: String) -> Duration {
        let mut map = self.backoffs();
        let failures = map.get(key).map_or(0, |b| b.failures) + 1;
        let random = std::collections::hash_map::RandomState::new().hash_one((key, failures));
        let delay = status::backoff_delay(failures, random);
        map.insert(
            key.to_owned(),
            Backoff {
                failures,
                until: Instant::now() + delay,
                message,
            },
        );
        delay
    }

    /// Forgets `key`'s failures.
    pub fn succeeded(&self, key: &str) {
        self.backoffs().remove(key);
    }

    /// If `key` is backing off: how long still, and its last message.
    pub fn deferred(&self, key: &str) -> Option<(Duration, String)> {
        let map = self.backoffs();
        let b = map.get(key)?;
        let left = b.until.checked_duration_since(Instant::now())?;
        Some((left, b.message.clone()))
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

/// The live objects the operator owns for `tenant`, and the kinds whose
/// LIST failed. Labels only narrow the LIST: an object counts as the
/// tenant's only if its controller owner reference is the tenant (its
/// uid), so a copy carrying the same labels is never pruned. Owner
/// references are how Kubernetes itself decides what belongs to what
/// (<https://kubernetes.io/docs/concepts/overview/working-with-objects/owners-dependents/>).
pub async fn list_owned(
    client: &Client,
    tenant: &str,
    tenant_uid: &str,
) -> (Vec<Live>, Vec<Refusal>) {
    let selector = format!(
        "{}={MANAGED_BY_OPERATOR},{TENANT_LABEL}={tenant}",
        MANAGED_BY.0
    );
    let (mut out, mut failed) = (Vec::new(), Vec::new());
    // Across namespaces: a tenant's objects are not all in its namespace
    // (a dedicated Gateway lives in the shared gateway namespace).
    for (api_version, kind, _) in tenant_kinds() {
        let api = dynamic_api(client, api_version, kind, None);
        let list = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            // The kind's CRD is not installed: nothing of it can exist.
            Err(e) if is_status(&e, 404) => continue,
            Err(e) => {
                tracing::error!(tenant, kind, error = %e, "cannot list owned objects; pruning is off for this pass");
                failed.push(Refusal {
                    object: format!("{kind} (list)"),
                    message: api_message(&e),
                });
                continue;
            }
        };
        for item in list
            .items
            .into_iter()
            .filter(|i| controlled_by(i, tenant_uid))
        {
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
    (out, failed)
}

/// Whether `obj`'s controller owner reference names `uid`.
fn controlled_by(obj: &DynamicObject, uid: &str) -> bool {
    !uid.is_empty()
        && obj
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// The API server's own words for a failed call.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

/// Whether the API server refused a change to an immutable field (a
/// Service's clusterIP, a Deployment's selector): only deleting and
/// re-creating the object gets the new value in. The messages are
/// apimachinery's `FieldImmutableErrorMsg` and the Service validation's
/// "may not change once set" / "can not be unset".
fn is_immutable_refusal(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422
        && ["field is immutable", "may not change once set", "can not be unset"]
            .iter()
            .any(|m| s.message.contains(m)))
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
    if tenant.metadata.deletion_timestamp.is_some() {
        return finalize_tenant(tenant, ctx).await;
    }
    let client = &ctx.client;
    let name = tenant.name_any();
    let ns = format!("{}{name}", desired::NAMESPACE_PREFIX);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let workloads: Api<TenantDeployment> = Api::namespaced(client.clone(), &ns);
    let now = now_rfc3339();

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
    let mut outcome = Outcome::default();
    if let Ok(plan) = &plan {
        outcome = apply_tenant(ctx, tenant, plan).await;
    }
    let mut status = desired::tenant_status(
        tenant.status.as_ref(),
        &name,
        tenant.metadata.generation,
        &plan,
        &now,
    );
    if plan.is_ok() {
        status::record_outcome(
            &mut status.conditions,
            &outcome,
            tenant.metadata.generation,
            &now,
        );
    }
    write_tenant_status(&tenants, tenant, &status).await?;
    let (applied, pruned) = (outcome.applied, outcome.pruned);
    match &plan {
        Err(e) => {
            tracing::warn!(tenant = %name, error = %e, "invalid tenant");
            publish(ctx, tenant, EventType::Warning, "InvalidSpec", e.0.clone()).await;
        }
        Ok(_) if !outcome.refused.is_empty() => {
            let note: Vec<String> = outcome
                .refused
                .iter()
                .map(|r| format!("{}: {}", r.object, r.message))
                .collect();
            tracing::warn!(tenant = %name, applied, pruned, refused = %note.join("; "), "reconciled in part");
            publish(
                ctx,
                tenant,
                EventType::Warning,
                "ApplyFailed",
                note.join("; "),
            )
            .await;
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
    // Refused objects come back when their backoff ends; the rest at the
    // next resync (or when something it watches changes).
    let retry = outcome
        .refused
        .iter()
        .filter_map(|r| ctx.deferred(&r.object).map(|(left, _)| left))
        .min();
    Ok(Action::requeue(retry.map_or(ctx.config.resync, |r| {
        r.max(Duration::from_millis(100))
    })))
}

/// Applies what `plan` wants (each object on its own: one refusal does
/// not stop the others), re-creating objects whose immutable fields
/// changed, then prunes what is no longer wanted unless a LIST failed.
async fn apply_tenant(ctx: &Ctx, tenant: &Tenant, plan: &desired::Plan) -> Outcome {
    let client = &ctx.client;
    let name = tenant.name_any();
    let (live, list_failures) = list_owned(client, &name, &tenant.uid().unwrap_or_default()).await;
    let full = ctx.full_apply_due(&name);
    let writes: Vec<&palisade_kube::Object> = if full {
        plan.objects.iter().collect()
    } else {
        desired::to_apply(&plan.objects, &live)
    };
    let mut outcome = Outcome::default();
    for o in writes {
        let id = o.id();
        if let Some((left, message)) = ctx.deferred(&id) {
            outcome.refused.push(Refusal {
                object: id,
                message: format!("{message}; next attempt in {}s", left.as_secs()),
            });
            continue;
        }
        match apply_one(client, o).await {
            Ok(()) => {
                ctx.succeeded(&id);
                tracing::debug!(tenant = %name, object = %id, "applied");
                outcome.applied += 1;
            }
            Err(e) => {
                let message = api_message(&e);
                let delay = ctx.failed(&id, message.clone());
                tracing::warn!(tenant = %name, object = %id, error = %message, retry_in = ?delay, "apply refused");
                outcome.refused.push(Refusal {
                    object: id,
                    message,
                });
            }
        }
    }
    // Never prune from an incomplete picture: a failed LIST, or an empty
    // plan (a tenant always has at least its namespace), would make
    // everything look unwanted.
    if !list_failures.is_empty() {
        outcome.prune_skipped = Some(format!(
            "not pruning: cannot list {}",
            list_failures
                .iter()
                .map(|r| format!("{} ({})", r.object, r.message))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        outcome.refused.extend(list_failures);
    } else if plan.objects.is_empty() {
        outcome.prune_skipped = Some("not pruning: nothing rendered".into());
    } else {
        for l in desired::prunable(plan, &live) {
            match delete_live(client, &l).await {
                Ok(()) => {
                    tracing::info!(tenant = %name, object = %l.id(), "pruned");
                    outcome.pruned += 1;
                }
                Err(e) => outcome.refused.push(Refusal {
                    object: l.id(),
                    message: e.to_string(),
                }),
            }
        }
    }
    if full && outcome.refused.is_empty() {
        ctx.full_apply_done(&name);
    }
    outcome
}

/// Server-side applies `o`; when the API server refuses because an
/// immutable field changed (a Service going headless changes its
/// clusterIP to `None`), deletes the object and applies it again.
async fn apply_one(client: &Client, o: &palisade_kube::Object) -> Result<(), kube::Error> {
    let api = dynamic_api(client, &o.api_version, &o.kind, o.namespace.as_deref());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&o.name, &params, &Patch::Apply(&o.body)).await {
        Ok(_) => Ok(()),
        Err(e) if is_immutable_refusal(&e) => {
            tracing::info!(object = %o.id(), error = %api_message(&e), "immutable field changed; re-creating");
            match api.delete(&o.name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e),
            }
            api.patch(&o.name, &params, &Patch::Apply(&o.body))
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// A deleted tenant: its workloads are deleted and their objects pruned
/// (their subnets are released only once those are gone), then, when no
/// workload is left, everything else it owns, then its finalizer.
async fn finalize_tenant(tenant: &Tenant, ctx: &Ctx) -> Result<Action, Error> {
    let client = &ctx.client;
    let name = tenant.name_any();
    let ns = format!("{}{name}", desired::NAMESPACE_PREFIX);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let workloads: Api<TenantDeployment> = Api::namespaced(client.clone(), &ns);
    if !tenant.finalizers().iter().any(|f| f == TENANT_FINALIZER) {
        return Ok(Action::await_change());
    }
    let remaining = workloads
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list workloads of", name.clone()))?
        .items;
    let (live, list_failures) = list_owned(client, &name, &tenant.uid().unwrap_or_default()).await;
    if let Some(f) = list_failures.first() {
        return Err(Error::Config(format!(
            "cannot delete tenant {name}: cannot list {}: {}",
            f.object, f.message
        )));
    }
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
        // The workloads' finalizers wait for their pools and pods: those go now.
        for l in desired::to_prune(&[], &live)
            .into_iter()
            .filter(|l| l.workload.is_some())
        {
            delete_live(client, &l).await?;
        }
        let now = now_rfc3339();
        let status = desired::terminating_status(tenant.status.as_ref(), remaining.len(), &now);
        write_tenant_status(&tenants, tenant, &status).await?;
        return Ok(Action::requeue(TERMINATING_REQUEUE));
    }
    for l in desired::to_prune(&[], &live) {
        delete_live(client, &l).await?;
        tracing::info!(tenant = %name, object = %l.id(), "deleted with its tenant");
    }
    remove_finalizer(&tenants, tenant, TENANT_FINALIZER).await?;
    tracing::info!(tenant = %name, "tenant deleted");
    Ok(Action::await_change())
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
    pool_conflicts(pool, &names)?;
    let mut ledger = ClaimLedger::from_names(pool, names.iter().map(String::as_str));
    // Subnets named in workload statuses are in use even while their
    // claim is missing (deleted by hand, about to be repaired): never
    // hand them to someone else.
    let workloads = Api::<TenantDeployment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "workloads"))?;
    for w in &workloads.items {
        let known = w.status.as_ref().and_then(|s| s.subnet.as_deref());
        if let Some(i) = known
            .and_then(|s| s.parse::<Ipv6Net>().ok())
            .and_then(|n| pool.index_of(n).ok())
        {
            ledger.mark_used(i);
        }
    }
    while let Some(index) = ledger.next_candidate(pool) {
        let subnet = pool.subnet(index);
        let claim = claim_for(spec, subnet);
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
        if !w.finalizers().iter().any(|f| f == WORKLOAD_FINALIZER) {
            return Ok(Action::await_change());
        }
        let held = claims
            .list(&mine())
            .await
            .map_err(Error::kube("list the claims of", format!("{ns}/{name}")))?;
        let mut waiting = Vec::new();
        for c in held.items.iter().filter(|c| c.spec.released_at.is_none()) {
            match release_claim(ctx, c).await? {
                None => {}
                Some(holders) => waiting.push(holders),
            }
        }
        if !waiting.is_empty() {
            tracing::info!(workload = %format!("{ns}/{name}"), held_by = %waiting.join("; "), "subnet still in use; release waits");
            return Ok(Action::requeue(TERMINATING_REQUEUE));
        }
        remove_finalizer(&api, w, WORKLOAD_FINALIZER).await?;
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
    let subnet = match checked {
        Err(e) => Err(e),
        Ok(tenant) => {
            let held = claims
                .list(&mine())
                .await
                .map_err(Error::kube("list the claims of", format!("{ns}/{name}")))?
                .items;
            let spec = SubnetClaimSpec {
                subnet: String::new(),
                tenant: tenant.to_string(),
                namespace: ns.clone(),
                deployment: name.clone(),
                workload_uid: uid.clone(),
                released_at: None,
            };
            let known = w
                .status
                .as_ref()
                .and_then(|s| s.subnet.as_deref())
                .and_then(|s| s.parse::<Ipv6Net>().ok());
            match (desired::subnet_for(&uid, &held), known) {
                (Some(net), _) => {
                    release_duplicates(ctx, &held, &uid, net).await?;
                    Ok(Some(net))
                }
                (None, Some(net)) => repair_claim(ctx, w, &spec, net).await?.map(Some),
                (None, None) => Ok(allocate_for(ctx, w, &spec).await?),
            }
        }
    };
    let deployment = if matches!(subnet, Ok(Some(_))) {
        Api::<K8sDeployment>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(Error::kube("read", format!("Deployment {ns}/{name}")))?
    } else {
        None
    };
    let ready = deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let pending = matches!(subnet, Ok(Some(_)))
        .then(|| {
            status::rollout_pending(w.metadata.generation, deployment.as_ref(), w.spec.replicas)
        })
        .flatten();
    if let Err(e) = &subnet {
        tracing::warn!(workload = %format!("{ns}/{name}"), reason = e.reason(), error = %e.message(), "workload blocked");
    }
    let now = now_rfc3339();
    let mut status = desired::workload_status(
        w.status.as_ref(),
        w.metadata.generation,
        subnet.as_ref().map(|s| *s),
        ready,
        w.spec.replicas,
        &now,
    );
    let prior = w
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    status::record_rollout(
        &mut status.conditions,
        &prior,
        pending.as_deref(),
        w.metadata.generation,
        &now,
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
        Ok(Some(_)) if i64::from(ready) < i64::from(w.spec.replicas) || pending.is_some() => {
            Action::requeue(NOT_READY_REQUEUE)
        }
        Ok(None) | Err(Blocked::TenantMissing(_) | Blocked::SubnetLost(_)) => {
            Action::requeue(NOT_READY_REQUEUE)
        }
        _ => Action::requeue(ctx.config.resync),
    })
}

/// Two replicas that both believe they lead (or a crash between a create
/// and the status write) can claim two subnets for one workload; the
/// create conflict keeps every subnet unique, but the extra claim would
/// hold its subnet forever. The workload uses the lowest
/// ([`desired::subnet_for`]); the others are released like a deleted
/// workload's, once nothing holds them.
async fn release_duplicates(
    ctx: &Ctx,
    held: &[SubnetClaim],
    uid: &str,
    keep: Ipv6Net,
) -> Result<(), Error> {
    let keep = keep.to_string();
    for extra in held.iter().filter(|c| {
        c.spec.workload_uid == uid
            && c.spec.released_at.is_none()
            && c.metadata.deletion_timestamp.is_none()
            && c.spec.subnet != keep
    }) {
        match release_claim(ctx, extra).await? {
            None => {
                tracing::warn!(claim = %extra.name_any(), kept = %keep, "duplicate claim released")
            }
            Some(held) => {
                tracing::warn!(claim = %extra.name_any(), held = %held, "duplicate claim still in use")
            }
        }
    }
    Ok(())
}

/// A new workload's first claim, announced as an event.
async fn allocate_for(
    ctx: &Ctx,
    w: &TenantDeployment,
    spec: &SubnetClaimSpec,
) -> Result<Option<Ipv6Net>, Error> {
    let got = {
        let _one_at_a_time = ctx.allocation.lock().await;
        allocate(&ctx.client, &ctx.config.pool, spec, &ctx.metrics).await?
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

/// A workload with a subnet in its status but no claim for it (someone
/// deleted the claim): the claim is created again for that same subnet,
/// as Kubernetes' IPAddress repair loop re-creates a Service's IPAddress
/// from `spec.clusterIP` (KEP-1880, pkg/registry/core/service/ipallocator/controller/repairip.go).
/// If another claimant holds the subnet by now, or the pool no longer
/// contains it, the workload is blocked, never renumbered.
async fn repair_claim(
    ctx: &Ctx,
    w: &TenantDeployment,
    spec: &SubnetClaimSpec,
    net: Ipv6Net,
) -> Result<Result<Ipv6Net, Blocked>, Error> {
    let api: Api<SubnetClaim> = Api::all(ctx.client.clone());
    let workload = format!("{}/{}", spec.namespace, spec.deployment);
    if ctx.config.pool.index_of(net).is_err() {
        return Ok(Err(Blocked::SubnetLost(format!(
            "subnet {net} of the status is not a subnet of the pool {} /{}; the claim cannot be re-created",
            ctx.config.pool.cidr(),
            ctx.config.pool.subnet_len()
        ))));
    }
    let claim = claim_for(spec, net);
    match api.create(&PostParams::default(), &claim).await {
        Ok(_) => {
            tracing::warn!(subnet = %net, workload = %workload, "claim was missing; re-created");
            publish(
                ctx,
                w,
                EventType::Warning,
                "SubnetClaimRepaired",
                format!("the claim for subnet {net} was missing and has been re-created"),
            )
            .await;
            return Ok(Ok(net));
        }
        Err(e) if is_status(&e, 409) => {}
        Err(e) => return Err(Error::kube("re-create the claim for", net.to_string())(e)),
    }
    let holder = api
        .get_opt(&claim_name(net))
        .await
        .map_err(Error::kube("read claim", claim_name(net)))?;
    match holder {
        // Ours after all (a stale list): fine.
        Some(c) if c.spec.workload_uid == spec.workload_uid && c.spec.released_at.is_none() => {
            Ok(Ok(net))
        }
        Some(c) => Ok(Err(Blocked::SubnetLost(format!(
            "the claim for subnet {net} was deleted and the subnet is now held by {}/{}{}; \
             delete this workload or that one",
            c.spec.namespace,
            c.spec.deployment,
            if c.spec.released_at.is_some() {
                " (released, in quarantine)"
            } else {
                ""
            }
        )))),
        None => Ok(Err(Blocked::SubnetLost(format!(
            "the claim for subnet {net} is being deleted; retrying"
        )))),
    }
}

/// What still holds `claim`'s subnet in the cluster: the workload's IP
/// pool and its pods (by label, then by address).
async fn subnet_holders(client: &Client, claim: &SubnetClaim) -> Result<Vec<String>, Error> {
    let Ok(net) = claim.spec.subnet.parse::<Ipv6Net>() else {
        return Ok(Vec::new());
    };
    let pools = match palisade_kube::apply::KINDS
        .into_iter()
        .find(|(_, kind, _)| *kind == "CiliumPodIPPool")
    {
        Some((api_version, kind, _)) => {
            match dynamic_api(client, api_version, kind, None)
                .list(&ListParams::default())
                .await
            {
                Ok(l) => l.items,
                Err(e) if is_status(&e, 404) => Vec::new(),
                Err(e) => return Err(Error::kube("list", "CiliumPodIPPools")(e)),
            }
        }
        None => Vec::new(),
    };
    let pods =
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &claim.spec.namespace)
            .list(&ListParams::default().labels(&format!(
                "{}={}",
                desired::DEPLOYMENT_LABEL,
                claim.spec.deployment
            )))
            .await
            .map_err(Error::kube(
                "list the pods of",
                claim.spec.deployment.clone(),
            ))?
            .items;
    let pools: Vec<Value> = pools
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    let pods: Vec<Value> = pods
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    Ok(status::holders(net, &pools, &pods))
}

/// Releases `claim` once nothing holds its subnet: deleted, or, with a
/// quarantine, marked released (garbage collection deletes it when the
/// quarantine ends). Returns what still holds it instead, if anything.
/// Releasing earlier would let the allocator hand the subnet (the lowest
/// free one) to a new workload whose pool then overlaps live pods.
async fn release_claim(ctx: &Ctx, claim: &SubnetClaim) -> Result<Option<String>, Error> {
    let holders = subnet_holders(&ctx.client, claim).await?;
    if !holders.is_empty() {
        return Ok(Some(format!(
            "{} held by {}",
            claim.spec.subnet,
            holders.join(", ")
        )));
    }
    let claims: Api<SubnetClaim> = Api::all(ctx.client.clone());
    let quarantine = ctx.config.pool.reuse_after();
    let result = if quarantine.is_zero() {
        claims
            .delete(&claim.name_any(), &DeleteParams::default())
            .await
            .map(|_| ())
    } else {
        let patch = json!({"spec": {"releasedAt": now_rfc3339()}});
        claims
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .map_ok(|_| ())
            .await
    };
    match result {
        Ok(()) => tracing::info!(
            subnet = %claim.spec.subnet,
            workload = %format!("{}/{}", claim.spec.namespace, claim.spec.deployment),
            quarantine_secs = quarantine.as_secs(),
            "subnet released"
        ),
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(Error::kube("release claim", claim.name_any())(e)),
    }
    Ok(None)
}

/// Garbage collection: claims whose workload is gone (older than the
/// grace period) are released like a deleted workload's (after nothing
/// holds the subnet, through the quarantine); released claims whose
/// quarantine is over are deleted. Returns the names acted on.
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
    let mut done = Vec::new();
    for name in orphans {
        let Some(claim) = claims.iter().find(|c| c.name_any() == name) else {
            continue;
        };
        if claim.spec.released_at.is_none() {
            if let Some(held) = release_claim(ctx, claim).await? {
                tracing::info!(claim = %name, held = %held, "orphaned claim still in use");
                continue;
            }
            tracing::info!(claim = %name, "orphaned claim released");
        } else {
            match claims_api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(claim = %name, "quarantine over; claim deleted"),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(Error::kube("delete claim", name.clone())(e)),
            }
        }
        ctx.metrics.claims_collected.inc();
        done.push(name);
    }
    let left = claims.len().saturating_sub(done.len());
    ctx.metrics.set_pool(ctx.config.pool.capacity(), left);
    Ok(done)
}

/// Refuses a pool that overlaps live claims it does not contain (the
/// settings changed while subnets are in use: a /112 could be handed out
/// inside a live /96). Run before the controllers start.
pub async fn check_pool(client: &Client, pool: &Pool) -> Result<(), Error> {
    let names: Vec<String> = Api::<SubnetClaim>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(Error::kube("list", "subnet claims"))?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    pool_conflicts(pool, &names)
}

fn pool_conflicts(pool: &Pool, names: &[String]) -> Result<(), Error> {
    let foreign = ClaimLedger::foreign_overlaps(pool, names.iter().map(String::as_str));
    if foreign.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = foreign.iter().map(ToString::to_string).collect();
    Err(Error::Config(format!(
        "the pool {} /{} overlaps live claims that are not its subnets ({}): \
         the pool settings changed while subnets are in use; restore them",
        pool.cidr(),
        pool.subnet_len(),
        list.join(", ")
    )))
}

/// The claim object for `subnet` on behalf of the workload `spec` names:
/// creating it is the allocation (or its repair).
fn claim_for(spec: &SubnetClaimSpec, subnet: Ipv6Net) -> SubnetClaim {
    SubnetClaim {
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
    }
}
