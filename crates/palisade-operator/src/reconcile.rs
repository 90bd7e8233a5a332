//! Reconcile: reads from the shared caches ([`crate::cache`]), then the
//! pure decisions of [`crate::desired`], then only the writes those
//! decisions ask for. Three reconcilers: tenants (render, apply, prune),
//! workloads (finalizer, subnet claim and its repair, status) and claims
//! (orphans, quarantine, duplicates).
//!
//! The reconcilers never LIST: what they read is in the caches, kept
//! current by one watch per kind. Through [`Ctx::new`] (tests, one-shot
//! use) there is no watch, and every entry point first refreshes the
//! caches with one LIST per kind, so the tests drive these functions with
//! the in-memory API server of [`crate::testing`] and assert exact writes.

use crate::cache::Caches;
use crate::claim::{ClaimLedger, claim_name};
use crate::crd::{SubnetClaim, SubnetClaimSpec, Tenant, TenantDeployment};
use crate::desired::{
    self, Blocked, FIELD_MANAGER, Live, MANAGED_BY_OPERATOR, TENANT_FINALIZER, WORKLOAD_FINALIZER,
};
use crate::metrics::Metrics;
use crate::status::{self, Outcome, Refusal};
use crate::{Config, Error};
use futures::TryFutureExt;
use ipnet::Ipv6Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use palisade_core::Pool;
use palisade_kube::render::{MANAGED_BY, TENANT_LABEL};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
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
    /// What the reconcilers read.
    pub caches: Caches,
    /// Serialises this process's allocations. Claims are race-free without
    /// it (409 decides), but concurrent reconciles would all try the same
    /// candidates: n claimants cost O(n²) failed creates. Across replicas
    /// the claim objects still decide.
    pub allocation: Arc<tokio::sync::Mutex<()>>,
    /// Tenants whose objects this process has applied in full once. Until
    /// then every object is applied (edits made while the operator was
    /// down are repaired); after, only objects that changed.
    pub full_apply: Arc<std::sync::Mutex<HashMap<String, Instant>>>,
    /// Per object (`Kind namespace/name`): the versions our own writes
    /// produced. A cached object at another version was changed by someone
    /// else and is applied again (drift repair without periodic rewrites).
    pub applied: Arc<std::sync::Mutex<HashMap<String, Vec<String>>>>,
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

/// How many versions of an object's own writes are remembered.
const VERSIONS_KEPT: usize = 4;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ctx {
    /// A context without events and without watches: every reconcile
    /// refreshes the caches first ([`Caches::refresh`]).
    pub fn new(client: Client, config: Config) -> Self {
        Self {
            client,
            caches: Caches::new(config.pool.clone()),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            recorder: None,
            allocation: Arc::default(),
            full_apply: Arc::default(),
            applied: Arc::default(),
            backoff: Arc::default(),
        }
    }

    /// Makes the caches current when no watch does.
    pub async fn refresh(&self) {
        if !self.caches.watched() {
            self.caches.refresh(&self.client).await;
        }
    }

    /// Records a failure of `key`; returns how long until its next try
    /// (exponential, with jitter: [`status::backoff_delay`]).
    pub fn failed(&self, key: &str, message: String) -> Duration {
        let mut map = lock(&self.backoff);
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
        lock(&self.backoff).remove(key);
    }

    /// If `key` is backing off: how long still, and its last message.
    pub fn deferred(&self, key: &str) -> Option<(Duration, String)> {
        let map = lock(&self.backoff);
        let b = map.get(key)?;
        let left = b.until.checked_duration_since(Instant::now())?;
        Some((left, b.message.clone()))
    }

    /// Whether `tenant` was never applied in full by this process.
    fn full_apply_due(&self, tenant: &str) -> bool {
        !lock(&self.full_apply).contains_key(tenant)
    }

    fn full_apply_done(&self, tenant: &str) {
        lock(&self.full_apply).insert(tenant.to_owned(), Instant::now());
    }

    fn record_applied(&self, id: &str, meta: &ObjectMeta) {
        let Some(v) = version(meta) else { return };
        let mut map = lock(&self.applied);
        let seen = map.entry(id.to_owned()).or_default();
        if !seen.contains(&v) {
            seen.push(v);
            if seen.len() > VERSIONS_KEPT {
                seen.remove(0);
            }
        }
    }

    /// Whether the cached `version` of `id` is one our writes did not
    /// produce (unknown objects are not judged).
    fn drifted(&self, id: &str, version: Option<&str>) -> bool {
        let map = lock(&self.applied);
        match (map.get(id), version) {
            (Some(ours), Some(v)) => !ours.iter().any(|o| o == v),
            _ => false,
        }
    }

    /// The claims of workload uid `uid`: cached (from the claim index) or
    /// created by this process since.
    fn claims_of_uid(&self, uid: &str) -> Vec<Arc<SubnetClaim>> {
        self.with_reserved(self.caches.claims_of_uid(uid), |c| {
            c.spec.workload_uid == uid
        })
    }

    /// The claims of tenant `tenant`: cached or created since.
    fn claims_of_tenant(&self, tenant: &str) -> Vec<Arc<SubnetClaim>> {
        self.with_reserved(self.caches.claims_of_tenant(tenant), |c| {
            c.spec.tenant == tenant
        })
    }

    /// `cached` and this process's reservations that `keep` selects and
    /// `cached` lacks (the ledger drops a reservation once the claim is
    /// cached; the store is a moment ahead of it).
    fn with_reserved(
        &self,
        mut cached: Vec<Arc<SubnetClaim>>,
        keep: impl Fn(&SubnetClaim) -> bool,
    ) -> Vec<Arc<SubnetClaim>> {
        let names: HashSet<String> = cached.iter().map(|c| c.name_any()).collect();
        let reserved = lock(self.caches.ledger()).reserved_claims(Instant::now(), keep);
        cached.extend(
            reserved
                .into_iter()
                .filter(|c| !names.contains(&c.name_any()))
                .map(Arc::new),
        );
        cached
    }

    fn reserve(&self, claim: SubnetClaim) {
        lock(self.caches.ledger()).won(claim, Instant::now());
    }
}

/// What identifies a version of an object's desired state: its
/// `metadata.generation` (status updates leave it alone), or, for kinds
/// without one, its resourceVersion.
fn version(meta: &ObjectMeta) -> Option<String> {
    meta.generation
        .map(|g| format!("g{g}"))
        .or_else(|| meta.resource_version.as_ref().map(|rv| format!("rv{rv}")))
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How soon to look again at a workload whose pods are not ready yet, in
/// case a Deployment event is missed.
const NOT_READY_REQUEUE: Duration = Duration::from_secs(15);
/// How soon to look again at a tenant waiting for its workloads to go.
const TERMINATING_REQUEUE: Duration = Duration::from_secs(2);

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The API of any kind, by apiVersion and kind.
pub(crate) fn dynamic_api(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar = crate::cache::resource(api_version, kind);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// The cached objects the operator owns for `tenant`, with their cached
/// versions by id, and the kinds whose cache cannot be trusted (never
/// listed, or the LIST failed). Labels only narrow: an object counts as
/// the tenant's only if its controller owner reference is the tenant (its
/// uid), so a copy carrying the same labels is never pruned. Owner
/// references are how Kubernetes itself decides what belongs to what
/// (<https://kubernetes.io/docs/concepts/overview/working-with-objects/owners-dependents/>).
/// Across namespaces: a tenant's objects are not all in its namespace (a
/// dedicated Gateway lives in the shared gateway namespace).
pub fn owned_live(
    caches: &Caches,
    tenant: &str,
    tenant_uid: &str,
) -> (Vec<Live>, HashMap<String, String>, Vec<Refusal>) {
    let failed: Vec<Refusal> = caches
        .untrusted()
        .into_iter()
        .filter(|(kind, _)| desired::tenant_kinds().any(|(_, k, _)| k == kind))
        .map(|(kind, message)| Refusal {
            object: format!("{kind} (list)"),
            message,
        })
        .collect();
    let (mut out, mut versions) = (Vec::new(), HashMap::new());
    let ours = |meta: &ObjectMeta| {
        label(meta, MANAGED_BY.0) == Some(MANAGED_BY_OPERATOR)
            && label(meta, TENANT_LABEL) == Some(tenant)
            && controlled_by(meta, tenant_uid)
    };
    for (api_version, kind, meta) in caches.owned_metas(tenant, ours) {
        let live = Live {
            api_version,
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            hash: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(desired::HASH_ANNOTATION))
                .cloned(),
            deleting: meta.deletion_timestamp.is_some(),
            workload: label(&meta, desired::DEPLOYMENT_LABEL).map(str::to_owned),
        };
        if let Some(v) = version(&meta) {
            versions.insert(live.id(), v);
        }
        out.push(live);
    }
    out.sort();
    (out, versions, failed)
}

/// Whether `meta`'s controller owner reference names `uid`.
fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    !uid.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
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

/// Our error from kube-runtime's finalizer helper.
fn from_finalizer(object: String) -> impl FnOnce(finalizer::Error<Error>) -> Error {
    move |e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) => Error::kube("add the finalizer to", object)(e),
        finalizer::Error::RemoveFinalizer(e) => Error::kube("remove the finalizer from", object)(e),
        other => Error::Finalizer {
            object,
            source: Box::new(other),
        },
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

/// Runs `pass` on `obj` under kube-runtime's finalizer helper. Without a
/// watch, the helper's first pass only adds the finalizer (the watch event
/// of that patch would start the next); the second pass stands in for it.
async fn with_finalizer<K, F, Fut>(
    ctx: &Ctx,
    api: Api<K>,
    name: &str,
    obj: &K,
    pass: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    F: Fn(finalizer::Event<K>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    let key = ObjectRef::from_obj(obj).to_string();
    let adds =
        obj.meta().deletion_timestamp.is_none() && !obj.finalizers().iter().any(|f| f == name);
    let action = finalizer(&api, name, Arc::new(obj.clone()), &pass)
        .await
        .map_err(from_finalizer(key))?;
    if !adds || ctx.caches.watched() {
        return Ok(action);
    }
    let Some(now) = api
        .get_opt(&obj.name_any())
        .await
        .map_err(Error::kube("read", obj.name_any()))?
    else {
        return Ok(action);
    };
    ctx.refresh().await;
    finalizer(&api, name, Arc::new(now), &pass)
        .await
        .map_err(from_finalizer(obj.name_any()))
}

/// Reconciles one tenant: the whole tenant rendered, applied and pruned;
/// when it is being deleted, its workloads first, then its objects, then
/// its finalizer (kube-runtime's finalizer helper).
pub async fn reconcile_tenant(tenant: &Tenant, ctx: &Ctx) -> Result<Action, Error> {
    ctx.refresh().await;
    if tenant.metadata.deletion_timestamp.is_some()
        && tenant.finalizers().iter().any(|f| f == TENANT_FINALIZER)
        && let Some(wait) = tenant_cleanup_pending(tenant, ctx).await?
    {
        return Ok(wait);
    }
    let api = Api::all(ctx.client.clone());
    with_finalizer(ctx, api, TENANT_FINALIZER, tenant, |event| async move {
        match event {
            finalizer::Event::Apply(t) => apply_tenant_pass(&t, ctx).await,
            finalizer::Event::Cleanup(t) => delete_tenant_objects(&t, ctx).await,
        }
    })
    .await
}

/// The workloads in `tenant`'s namespace, from the cache.
fn workloads_of(ctx: &Ctx, tenant: &str) -> Vec<TenantDeployment> {
    let ns = format!("{}{tenant}", desired::NAMESPACE_PREFIX);
    ctx.caches
        .workloads_in(&ns)
        .iter()
        .map(|w| (**w).clone())
        .collect()
}

async fn apply_tenant_pass(tenant: &Tenant, ctx: &Ctx) -> Result<Action, Error> {
    let name = tenant.name_any();
    let now = now_rfc3339();
    let workloads = workloads_of(ctx, &name);
    let claims: Vec<SubnetClaim> = ctx
        .claims_of_tenant(&name)
        .iter()
        .map(|c| (**c).clone())
        .collect();
    let platform = ctx.caches.platform()?;
    let plan = desired::plan_tenant_under(
        &ctx.config.pool,
        &ctx.config.render,
        tenant,
        &workloads,
        &claims,
        platform.as_deref().map(|p| &p.spec),
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
    write_tenant_status(&Api::all(ctx.client.clone()), tenant, &status).await?;
    report_tenant(ctx, tenant, &plan, &outcome).await;
    // Refused objects come back when their backoff ends; the rest when
    // something they depend on changes (the caches' watches), or at the
    // next resync.
    let retry = outcome
        .refused
        .iter()
        .filter_map(|r| ctx.deferred(&r.object).map(|(left, _)| left))
        .min();
    Ok(Action::requeue(retry.map_or(ctx.config.resync, |r| {
        r.max(Duration::from_millis(100))
    })))
}

async fn report_tenant(
    ctx: &Ctx,
    tenant: &Tenant,
    plan: &Result<desired::Plan, desired::SpecError>,
    outcome: &Outcome,
) {
    let name = tenant.name_any();
    let (applied, pruned) = (outcome.applied, outcome.pruned);
    match plan {
        Err(e) => {
            tracing::warn!(tenant = %name, error = %desired::explain(e), "invalid tenant");
            publish(
                ctx,
                tenant,
                EventType::Warning,
                "InvalidSpec",
                desired::explain(e),
            )
            .await;
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
}

/// Applies what `plan` wants (each object on its own: one refusal does
/// not stop the others), re-creating objects whose immutable fields
/// changed, then prunes what is no longer wanted unless a kind's cache
/// cannot be trusted. What is applied: everything the first time this
/// process sees the tenant; after that, objects that are missing, whose
/// rendered hash changed, or that someone else changed since our last
/// write (their cached version is not one our writes produced).
async fn apply_tenant(ctx: &Ctx, tenant: &Tenant, plan: &desired::Plan) -> Outcome {
    let client = &ctx.client;
    let name = tenant.name_any();
    let (live, versions, list_failures) =
        owned_live(&ctx.caches, &name, &tenant.uid().unwrap_or_default());
    let full = ctx.full_apply_due(&name);
    let writes: Vec<&palisade_kube::Object> = if full {
        plan.objects.iter().collect()
    } else {
        let changed: HashSet<String> = desired::to_apply(&plan.objects, &live)
            .iter()
            .map(|o| o.id())
            .collect();
        plan.objects
            .iter()
            .filter(|o| {
                let id = o.id();
                changed.contains(&id) || ctx.drifted(&id, versions.get(&id).map(String::as_str))
            })
            .collect()
    };
    let mut outcome = Outcome::default();
    for o in writes {
        apply_counted(ctx, &name, o, &mut outcome).await;
    }
    // Never prune from an incomplete picture: a kind not (yet) cached, or
    // an empty plan (a tenant always has at least its namespace), would
    // make everything look unwanted.
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
                    message: desired::explain(&e),
                }),
            }
        }
    }
    if full && outcome.refused.is_empty() {
        ctx.full_apply_done(&name);
    }
    outcome
}

/// Applies one object unless it is backing off, and counts the result.
async fn apply_counted(ctx: &Ctx, tenant: &str, o: &palisade_kube::Object, outcome: &mut Outcome) {
    let id = o.id();
    if let Some((left, message)) = ctx.deferred(&id) {
        outcome.refused.push(Refusal {
            object: id,
            message: format!("{message}; next attempt in {}s", left.as_secs()),
        });
        return;
    }
    match apply_one(&ctx.client, o).await {
        Ok(written) => {
            ctx.succeeded(&id);
            ctx.record_applied(&id, &written.metadata);
            tracing::debug!(tenant, object = %id, "applied");
            outcome.applied += 1;
        }
        Err(e) => {
            let message = api_message(&e);
            let delay = ctx.failed(&id, message.clone());
            tracing::warn!(tenant, object = %id, error = %message, retry_in = ?delay, "apply refused");
            outcome.refused.push(Refusal {
                object: id,
                message,
            });
        }
    }
}

/// Server-side applies `o`; when the API server refuses because an
/// immutable field changed (a Service going headless changes its
/// clusterIP to `None`), deletes the object and applies it again.
async fn apply_one(
    client: &Client,
    o: &palisade_kube::Object,
) -> Result<DynamicObject, kube::Error> {
    let api = dynamic_api(client, &o.api_version, &o.kind, o.namespace.as_deref());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&o.name, &params, &Patch::Apply(&o.body)).await {
        Ok(written) => Ok(written),
        Err(e) if is_immutable_refusal(&e) => {
            tracing::info!(object = %o.id(), error = %api_message(&e), "immutable field changed; re-creating");
            match api.delete(&o.name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e),
            }
            api.patch(&o.name, &params, &Patch::Apply(&o.body)).await
        }
        Err(e) => Err(e),
    }
}

/// A deleted tenant whose workloads still exist: they are deleted and
/// their objects pruned (their subnets are released only once those are
/// gone); `Some` (look again soon) until none is left.
async fn tenant_cleanup_pending(tenant: &Tenant, ctx: &Ctx) -> Result<Option<Action>, Error> {
    let name = tenant.name_any();
    let ns = format!("{}{name}", desired::NAMESPACE_PREFIX);
    let remaining = workloads_of(ctx, &name);
    if remaining.is_empty() {
        return Ok(None);
    }
    let (live, _, list_failures) =
        owned_live(&ctx.caches, &name, &tenant.uid().unwrap_or_default());
    if let Some(f) = list_failures.first() {
        return Err(Error::CacheIncomplete {
            object: format!("tenant {name}"),
            kind: f.object.clone(),
            message: f.message.clone(),
        });
    }
    let workloads: Api<TenantDeployment> = Api::namespaced(ctx.client.clone(), &ns);
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
        delete_live(&ctx.client, &l).await?;
    }
    let status =
        desired::terminating_status(tenant.status.as_ref(), remaining.len(), &now_rfc3339());
    write_tenant_status(&Api::all(ctx.client.clone()), tenant, &status).await?;
    Ok(Some(Action::requeue(TERMINATING_REQUEUE)))
}

/// A deleted tenant without workloads: everything else it owns goes; the
/// finalizer helper then removes the finalizer.
async fn delete_tenant_objects(tenant: &Tenant, ctx: &Ctx) -> Result<Action, Error> {
    let name = tenant.name_any();
    let (live, _, list_failures) =
        owned_live(&ctx.caches, &name, &tenant.uid().unwrap_or_default());
    if let Some(f) = list_failures.first() {
        return Err(Error::CacheIncomplete {
            object: format!("tenant {name}"),
            kind: f.object.clone(),
            message: f.message.clone(),
        });
    }
    for l in desired::to_prune(&[], &live) {
        delete_live(&ctx.client, &l).await?;
        tracing::info!(tenant = %name, object = %l.id(), "deleted with its tenant");
    }
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

/// Claims a subnet for a workload from a fresh LIST of the claims (no
/// cache): the core rule's candidate, created as a claim object; on a name
/// conflict (someone else was faster) the next candidate. `None` when the
/// pool is full. The controllers use the cached ledger instead
/// ([`Caches::ledger`]).
pub async fn allocate(
    client: &Client,
    pool: &Pool,
    spec: &SubnetClaimSpec,
    metrics: &Metrics,
) -> Result<Option<Ipv6Net>, Error> {
    let names = claim_names(client).await?;
    let ledger = ClaimLedger::from_names(pool, names.iter().map(String::as_str));
    let ledger = std::sync::Mutex::new(ledger);
    Ok(claim_first_free(client, spec, &ledger, metrics)
        .await?
        .map(|(net, _)| net))
}

/// Creates the claim for the ledger's next candidate until one create
/// succeeds; returns the subnet and the created claim, which the ledger
/// keeps as this process's until its cache shows it. A candidate lost to
/// another claimant (409) stays marked used.
async fn claim_first_free(
    client: &Client,
    spec: &SubnetClaimSpec,
    ledger: &std::sync::Mutex<ClaimLedger>,
    metrics: &Metrics,
) -> Result<Option<(Ipv6Net, SubnetClaim)>, Error> {
    let api: Api<SubnetClaim> = Api::all(client.clone());
    while let Some(subnet) = next_candidate(ledger)? {
        match api
            .create(&PostParams::default(), &claim_for(spec, subnet))
            .await
        {
            Ok(created) => {
                let mut l = lock(ledger);
                l.won(created.clone(), Instant::now());
                metrics.claims_created.inc();
                metrics.set_pool(l.pool().capacity(), l.len());
                tracing::info!(subnet = %subnet, namespace = %spec.namespace, workload = %spec.deployment, "subnet claimed");
                return Ok(Some((subnet, created)));
            }
            Err(e) if is_status(&e, 409) => {
                metrics.claim_conflicts.inc();
                tracing::debug!(subnet = %subnet, "claim lost a race; trying the next subnet");
            }
            Err(e) => {
                lock(ledger).unreserve(&claim_name(subnet));
                return Err(Error::kube("create the claim for", subnet.to_string())(e));
            }
        }
    }
    Ok(None)
}

/// The ledger's next candidate, reserved; `None` when the pool is full.
/// Refused while claims of another shape overlap the pool.
fn next_candidate(ledger: &std::sync::Mutex<ClaimLedger>) -> Result<Option<Ipv6Net>, Error> {
    let mut l = lock(ledger);
    refuse_overlaps(l.pool(), &l.foreign())?;
    let index = l.reserve_next(Instant::now());
    Ok(index.map(|i| l.pool().subnet(i)))
}

/// Claims a subnet with the cached ledger: taken are the cached and
/// reserved claims and the subnets named in workload statuses (in use even
/// while their claim is missing, about to be repaired).
async fn allocate_cached(ctx: &Ctx, spec: &SubnetClaimSpec) -> Result<Option<Ipv6Net>, Error> {
    let _one_at_a_time = ctx.allocation.lock().await;
    let got = claim_first_free(&ctx.client, spec, ctx.caches.ledger(), &ctx.metrics).await?;
    Ok(got.map(|(net, _)| net))
}

/// Reconciles one workload under its finalizer: its subnet claim (created,
/// or repaired) and its status; when it is deleted, its claims are
/// released once nothing uses their subnets. Its objects are the tenant's
/// business.
pub async fn reconcile_workload(w: &TenantDeployment, ctx: &Ctx) -> Result<Action, Error> {
    ctx.refresh().await;
    if w.metadata.deletion_timestamp.is_some()
        && w.finalizers().iter().any(|f| f == WORKLOAD_FINALIZER)
        && let Some(wait) = release_pending(w, ctx).await?
    {
        return Ok(wait);
    }
    let api = Api::namespaced(ctx.client.clone(), &w.namespace().unwrap_or_default());
    with_finalizer(ctx, api, WORKLOAD_FINALIZER, w, |event| async move {
        match event {
            finalizer::Event::Apply(w) => workload_pass(&w, ctx).await,
            // Every claim is released by now (release_pending).
            finalizer::Event::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await
}

/// The claims of the workload `uid` (cached or just created).
fn held_by(ctx: &Ctx, uid: &str) -> Vec<SubnetClaim> {
    ctx.claims_of_uid(uid)
        .iter()
        .map(|c| (**c).clone())
        .collect()
}

/// A deleted workload whose claims still hold subnets: each is released
/// once nothing holds it; `Some` (look again soon; the pool's or a pod's
/// deletion also wakes the workload) while something does. The finalizer
/// stays until then.
async fn release_pending(w: &TenantDeployment, ctx: &Ctx) -> Result<Option<Action>, Error> {
    let id = format!("{}/{}", w.namespace().unwrap_or_default(), w.name_any());
    let mut waiting = Vec::new();
    for c in held_by(ctx, &w.uid().unwrap_or_default())
        .iter()
        .filter(|c| c.spec.released_at.is_none() && c.metadata.deletion_timestamp.is_none())
    {
        if let Some(holders) = release_claim(ctx, c).await? {
            waiting.push(holders);
        }
    }
    if waiting.is_empty() {
        return Ok(None);
    }
    tracing::info!(workload = %id, held_by = %waiting.join("; "), "subnet still in use; release waits");
    Ok(Some(Action::requeue(TERMINATING_REQUEUE)))
}

/// Whether the workload's spec and tenant allow a subnet.
fn check_workload(ctx: &Ctx, w: &TenantDeployment) -> Result<palisade_core::TenantName, Blocked> {
    let ns = w.namespace().unwrap_or_default();
    let tenant = desired::tenant_of_namespace(&ns)
        .and_then(|t| {
            // Validate with any subnet of the pool; the real one comes next.
            desired::core_deployment(&t, &w.name_any(), &w.spec, ctx.config.pool.subnet(0))
                .map(|_| t)
        })
        .map_err(Blocked::InvalidSpec)?;
    if ctx
        .caches
        .tenants
        .get(&ObjectRef::new(tenant.as_str()))
        .is_none()
    {
        return Err(Blocked::TenantMissing(tenant.to_string()));
    }
    Ok(tenant)
}

/// The workload's subnet: its claim's, or a repaired claim's (the subnet
/// of its status), or a new claim's.
async fn subnet_of_workload(
    ctx: &Ctx,
    w: &TenantDeployment,
    tenant: &palisade_core::TenantName,
) -> Result<Result<Option<Ipv6Net>, Blocked>, Error> {
    let uid = w.uid().unwrap_or_default();
    let spec = SubnetClaimSpec {
        subnet: String::new(),
        tenant: tenant.to_string(),
        namespace: w.namespace().unwrap_or_default(),
        deployment: w.name_any(),
        workload_uid: uid.clone(),
        released_at: None,
    };
    let known = w
        .status
        .as_ref()
        .and_then(|s| s.subnet.as_deref())
        .and_then(|s| s.parse::<Ipv6Net>().ok());
    match (desired::subnet_for(&uid, &held_by(ctx, &uid)), known) {
        (Some(net), _) => Ok(Ok(Some(net))),
        (None, Some(net)) => Ok(repair_claim(ctx, w, &spec, net).await?.map(Some)),
        (None, None) => Ok(Ok(allocate_for(ctx, w, &spec).await?)),
    }
}

async fn workload_pass(w: &TenantDeployment, ctx: &Ctx) -> Result<Action, Error> {
    let ns = w.namespace().unwrap_or_default();
    let name = w.name_any();
    let subnet = match check_workload(ctx, w) {
        Err(b) => Err(b),
        Ok(tenant) => subnet_of_workload(ctx, w, &tenant).await?,
    };
    let deployment = matches!(subnet, Ok(Some(_)))
        .then(|| {
            ctx.caches
                .deployments
                .get(&ObjectRef::new(&name).within(&ns))
        })
        .flatten();
    let ready = deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let pending = matches!(subnet, Ok(Some(_)))
        .then(|| {
            status::rollout_pending(
                w.metadata.generation,
                deployment.as_deref(),
                w.spec.replicas,
            )
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
        Api::<TenantDeployment>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
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

/// A new workload's first claim, announced as an event.
async fn allocate_for(
    ctx: &Ctx,
    w: &TenantDeployment,
    spec: &SubnetClaimSpec,
) -> Result<Option<Ipv6Net>, Error> {
    let got = allocate_cached(ctx, spec).await?;
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
        Ok(created) => {
            ctx.reserve(created);
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
        // Ours after all (the cache was behind): fine.
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

/// What still holds `claim`'s subnet, from the caches: the workload's IP
/// pool and its pods (by label, then by address).
fn subnet_holders(caches: &Caches, claim: &SubnetClaim) -> Vec<String> {
    let Ok(net) = claim.spec.subnet.parse::<Ipv6Net>() else {
        return Vec::new();
    };
    let pools: Vec<Value> = caches
        .pools
        .state()
        .iter()
        .filter_map(|p| serde_json::to_value(&**p).ok())
        .collect();
    let pods: Vec<Value> = caches
        .pods
        .state()
        .iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(claim.spec.namespace.as_str())
                && p.labels().get(desired::DEPLOYMENT_LABEL) == Some(&claim.spec.deployment)
        })
        .filter_map(|p| serde_json::to_value(&**p).ok())
        .collect();
    status::holders(net, &pools, &pods)
}

/// Releases `claim` once nothing holds its subnet: deleted, or, with a
/// quarantine, marked released (the claim controller deletes it when the
/// quarantine ends). Returns what still holds it instead, if anything.
/// Releasing earlier would let the allocator hand the subnet (the lowest
/// free one) to a new workload whose pool then overlaps live pods.
async fn release_claim(ctx: &Ctx, claim: &SubnetClaim) -> Result<Option<String>, Error> {
    let holders = subnet_holders(&ctx.caches, claim);
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
    lock(ctx.caches.ledger()).unreserve(&claim.name_any());
    Ok(None)
}

/// What the claim controller did to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Nothing to do (yet).
    Kept,
    /// Released (deleted, or marked released for the quarantine).
    Released,
    /// Its quarantine ended: deleted.
    Deleted,
}

/// The claim controller: a claim whose workload is gone (older than the
/// grace period), or a second claim of one workload (two leaders, or a
/// crash between a create and the status write), is released like a
/// deleted workload's: after nothing holds the subnet, through the
/// quarantine; a released claim is deleted when its quarantine ends. It
/// looks again exactly when the grace period or the quarantine ends, and
/// when the pool or a pod that holds the subnet goes.
pub async fn reconcile_claim(claim: &SubnetClaim, ctx: &Ctx) -> Result<Action, Error> {
    Ok(settle_claim(claim, ctx).await?.1)
}

fn seconds_left(since_secs: i64, period: Duration, now_secs: i64) -> Duration {
    let elapsed = u64::try_from(now_secs.saturating_sub(since_secs)).unwrap_or(0);
    period.saturating_sub(Duration::from_secs(elapsed))
}

async fn settle_claim(claim: &SubnetClaim, ctx: &Ctx) -> Result<(ClaimOutcome, Action), Error> {
    let name = claim.name_any();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let kept = |a| Ok((ClaimOutcome::Kept, a));
    if claim.metadata.deletion_timestamp.is_some() {
        return kept(Action::await_change());
    }
    if let Some(at) = &claim.spec.released_at {
        // An unreadable stamp: treat as released long ago.
        let since = at
            .parse::<k8s_openapi::jiff::Timestamp>()
            .map_or(0, |t| t.as_second());
        let left = seconds_left(since, ctx.config.pool.reuse_after(), now);
        if !left.is_zero() {
            return kept(Action::requeue(left + Duration::from_secs(1)));
        }
        match Api::<SubnetClaim>::all(ctx.client.clone())
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => tracing::info!(claim = %name, "quarantine over; claim deleted"),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(Error::kube("delete claim", name.clone())(e)),
        }
        ctx.metrics.claims_collected.inc();
        return Ok((ClaimOutcome::Deleted, Action::await_change()));
    }
    let owner = ctx
        .caches
        .workloads
        .get(&ObjectRef::new(&claim.spec.deployment).within(&claim.spec.namespace))
        .filter(|w| w.uid().as_deref() == Some(claim.spec.workload_uid.as_str()));
    let why = match owner {
        Some(_) => {
            let keep = desired::subnet_for(
                &claim.spec.workload_uid,
                &held_by(ctx, &claim.spec.workload_uid),
            );
            if keep.is_none_or(|k| k.to_string() == claim.spec.subnet) {
                return kept(Action::await_change());
            }
            "duplicate"
        }
        None => {
            let created = claim
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(now, |t| t.0.as_second());
            let left = seconds_left(created, ctx.config.gc_grace, now);
            if !left.is_zero() {
                return kept(Action::requeue(left + Duration::from_secs(1)));
            }
            "orphaned"
        }
    };
    if let Some(held) = release_claim(ctx, claim).await? {
        tracing::info!(claim = %name, held = %held, "{why} claim still in use");
        return kept(Action::requeue(ctx.config.gc_interval));
    }
    tracing::info!(claim = %name, "{why} claim released");
    ctx.metrics.claims_collected.inc();
    let quarantine = ctx.config.pool.reuse_after();
    let next = if quarantine.is_zero() {
        Action::await_change()
    } else {
        Action::requeue(quarantine + Duration::from_secs(1))
    };
    Ok((ClaimOutcome::Released, next))
}

/// One pass of the claim controller over every claim (for tests and
/// one-shot use; the running operator reacts to each claim instead).
/// Returns the names released or deleted.
pub async fn collect_garbage(ctx: &Ctx) -> Result<Vec<String>, Error> {
    ctx.refresh().await;
    let mut done = Vec::new();
    for claim in ctx.caches.claims.state() {
        if settle_claim(&claim, ctx).await?.0 != ClaimOutcome::Kept {
            done.push(claim.name_any());
        }
    }
    let left = ctx.caches.claims.len().saturating_sub(done.len());
    ctx.metrics.set_pool(ctx.config.pool.capacity(), left);
    Ok(done)
}

/// Refuses a pool that overlaps live claims it does not contain (the
/// settings changed while subnets are in use: a /112 could be handed out
/// inside a live /96). Run before the controllers start.
pub async fn check_pool(client: &Client, pool: &Pool) -> Result<(), Error> {
    let names = claim_names(client).await?;
    refuse_overlaps(
        pool,
        &ClaimLedger::foreign_overlaps(pool, names.iter().map(String::as_str)),
    )
}

/// Every subnet claim's name, from one metadata LIST (a claim's name is
/// its subnet).
async fn claim_names(client: &Client) -> Result<Vec<String>, Error> {
    Ok(Api::<SubnetClaim>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(Error::kube("list", "subnet claims"))?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect())
}

fn refuse_overlaps(pool: &Pool, foreign: &[Ipv6Net]) -> Result<(), Error> {
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
