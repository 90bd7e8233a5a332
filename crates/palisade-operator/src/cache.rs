//! The operator's view of the cluster: one watcher per kind, each feeding
//! one reflector store that every controller reads.
//!
//! Reconcilers read from these stores instead of the API server, so a
//! cluster at rest costs no LIST and no write: after the initial LIST of
//! each kind, a watch (resumed from its last resourceVersion) brings every
//! change. The watchers also decide whom a change concerns ([`Triggers`]):
//! a workload's claim changing wakes that workload and its tenant, a pod
//! going away wakes the claims waiting for it. Cross-kind triggers pass
//! only changes of `metadata.generation` (kube-runtime's
//! `predicates::generation`), so a Deployment's status moving wakes its
//! workload (readiness) but not the tenant.
//!
//! The controllers run on kube-runtime's `applier` rather than
//! `Controller`: a `Controller` starts its own watcher for every `owns` and
//! `watches`, which would watch claims three times (once per controller),
//! and shared streams (`watches_shared_stream`) need kube's unstable
//! features and do not forward deletions. `applier` is the documented
//! "hard-mode" entry under `Controller`: a store plus a queue of object
//! references, with the same `Config` (debounce, concurrency) and the same
//! graceful shutdown (the queue ends, in-flight reconciles finish).
//!
//! The tenant's own objects are watched as metadata only
//! (`Api<PartialObjectMeta<_>>`: the server sends `metadata` alone), except
//! Deployments (their status is readiness) and `CiliumPodIPPool`s (their
//! CIDRs say which subnet is still in use), which are watched whole once
//! and serve both purposes.
//!
//! Without a running watcher (tests and one-shot reconciles through
//! [`crate::reconcile::Ctx::new`]), [`Caches::refresh`] runs every watcher
//! only up to the end of its initial LIST.

use crate::Error;
use crate::claim::ClaimLedger;
use crate::crd::{Platform, SubnetClaim, Tenant, TenantDeployment};
use crate::desired::{DEPLOYMENT_LABEL, MANAGED_BY_OPERATOR};
use futures::channel::mpsc::UnboundedSender;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment as K8sDeployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::predicates;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use palisade_core::Pool;
use palisade_kube::render::{MANAGED_BY, TENANT_LABEL};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Whether a kind's store can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindState {
    /// The initial LIST has not completed.
    Syncing,
    /// Listed, and watched since.
    Synced,
    /// The API server does not serve the kind (its CRD is not installed):
    /// nothing of it exists.
    Missing,
    /// The LIST or watch failed before the store was ever complete, with
    /// the API server's words.
    Failed(String),
}

type States = Arc<Mutex<BTreeMap<String, KindState>>>;

/// The work queues that cache changes feed.
#[derive(Clone)]
pub struct Triggers {
    /// The tenant controller's queue.
    pub tenants: UnboundedSender<ObjectRef<Tenant>>,
    /// The workload controller's queue.
    pub workloads: UnboundedSender<ObjectRef<TenantDeployment>>,
    /// The claim controller's queue.
    pub claims: UnboundedSender<ObjectRef<SubnetClaim>>,
    /// The platform's queue ([`crate::platform`]): its objects are
    /// rendered from every tenant, workload and claim at once.
    pub platform: UnboundedSender<()>,
}

impl Triggers {
    fn tenant(&self, name: &str) {
        let _ = self.tenants.unbounded_send(ObjectRef::new(name));
    }

    fn workload(&self, namespace: &str, name: &str) {
        let _ = self
            .workloads
            .unbounded_send(ObjectRef::new(name).within(namespace));
    }

    fn claim(&self, name: &str) {
        let _ = self.claims.unbounded_send(ObjectRef::new(name));
    }

    fn platform(&self) {
        let _ = self.platform.unbounded_send(());
    }
}

impl Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers").finish_non_exhaustive()
    }
}

/// One change seen by a watcher.
enum Change<'a, K> {
    /// Created or updated; `old` is what the store held before.
    Applied { old: Option<Arc<K>>, new: &'a K },
    /// Deleted.
    Deleted(&'a K),
}

impl<K: Resource> Change<'_, K> {
    fn object(&self) -> &K {
        match self {
            Change::Applied { new, .. } => new,
            Change::Deleted(o) => o,
        }
    }

    /// Whether the change is more than status or metadata: created,
    /// deleted, being deleted, or a new `metadata.generation` (kinds
    /// without generations: a new resourceVersion).
    fn spec_changed(&self) -> bool {
        match self {
            Change::Deleted(_) => true,
            Change::Applied { old: None, .. } => true,
            Change::Applied {
                old: Some(old),
                new,
            } => {
                let key =
                    |o: &K| predicates::generation(o).or_else(|| predicates::resource_version(o));
                key(old) != key(new)
                    || old.meta().deletion_timestamp.is_some()
                        != new.meta().deletion_timestamp.is_some()
            }
        }
    }
}

/// Claim names by workload uid, by workload (`namespace/name`) and by
/// tenant, kept beside the claim store from its watch events: a lookup
/// filtering the whole store would make each workload's reconcile linear
/// in the claims, and a cold start with n workloads quadratic.
#[derive(Debug, Default)]
struct ClaimIndex {
    by_uid: HashMap<String, BTreeSet<String>>,
    by_workload: HashMap<String, BTreeSet<String>>,
    by_tenant: HashMap<String, BTreeSet<String>>,
}

impl ClaimIndex {
    fn keys(c: &SubnetClaim) -> [(String, By); 3] {
        [
            (c.spec.workload_uid.clone(), By::Uid),
            (
                workload_key(&c.spec.namespace, &c.spec.deployment),
                By::Workload,
            ),
            (c.spec.tenant.clone(), By::Tenant),
        ]
    }

    fn map(&mut self, which: By) -> &mut HashMap<String, BTreeSet<String>> {
        match which {
            By::Uid => &mut self.by_uid,
            By::Workload => &mut self.by_workload,
            By::Tenant => &mut self.by_tenant,
        }
    }

    fn insert(&mut self, c: &SubnetClaim) {
        for (key, which) in Self::keys(c) {
            self.map(which).entry(key).or_default().insert(c.name_any());
        }
    }

    fn remove(&mut self, c: &SubnetClaim) {
        for (key, which) in Self::keys(c) {
            let map = self.map(which);
            if let Some(names) = map.get_mut(&key) {
                names.remove(&c.name_any());
                if names.is_empty() {
                    map.remove(&key);
                }
            }
        }
    }

    fn update(&mut self, change: &Change<'_, SubnetClaim>) {
        match change {
            // Insert first: a claim whose keys did not change never
            // leaves the index.
            Change::Applied { old, new } => {
                self.insert(new);
                if let Some(old) = old.as_deref().filter(|o| Self::keys(o) != Self::keys(new)) {
                    self.remove(old);
                }
            }
            Change::Deleted(c) => self.remove(c),
        }
    }
}

/// The keys of [`ClaimIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Uid,
    Workload,
    Tenant,
}

fn workload_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The claims of the store whose names `index` lists under `key`, in
/// name order; `keep` guards against an index a moment behind the store.
fn indexed(
    store: &Store<SubnetClaim>,
    index: &Mutex<ClaimIndex>,
    which: By,
    key: &str,
    keep: impl Fn(&SubnetClaim) -> bool,
) -> Vec<Arc<SubnetClaim>> {
    let names: Vec<String> = lock(index)
        .map(which)
        .get(key)
        .map(|n| n.iter().cloned().collect())
        .unwrap_or_default();
    names
        .iter()
        .filter_map(|n| store.get(&ObjectRef::new(n)))
        .filter(|c| keep(c))
        .collect()
}

/// The operator's objects of the tenant kinds by their tenant label, as
/// (apiVersion, kind, metadata), kept from the watch events: a tenant pass
/// reads only its own objects instead of filtering every cached object of
/// 18 kinds (at 1,000 tenants x 10 workloads that filter was most of a cold
/// start's CPU in the scale bench's profile).
/// (apiVersion, kind, metadata) of one object.
type OwnedMeta = (String, String, ObjectMeta);

#[derive(Debug, Default)]
struct OwnedIndex {
    by_tenant: HashMap<String, BTreeMap<(String, String), OwnedMeta>>,
}

impl OwnedIndex {
    fn tenant_of(meta: &ObjectMeta) -> Option<&String> {
        meta.labels.as_ref()?.get(TENANT_LABEL)
    }

    /// (kind, namespace/name): unique within a tenant's objects.
    fn key(kind: &str, meta: &ObjectMeta) -> (String, String) {
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        (kind.to_owned(), format!("{ns}/{name}"))
    }

    fn remove(&mut self, kind: &str, meta: &ObjectMeta) {
        let Some(tenant) = Self::tenant_of(meta) else {
            return;
        };
        if let Some(objects) = self.by_tenant.get_mut(tenant) {
            objects.remove(&Self::key(kind, meta));
            if objects.is_empty() {
                self.by_tenant.remove(tenant);
            }
        }
    }

    /// Follows one watch event of a kind.
    fn follow<K: Resource>(&mut self, api_version: &str, kind: &str, change: &Change<'_, K>) {
        match change {
            Change::Applied { old, new } => {
                let new = new.meta();
                if let Some(old) = old
                    .as_deref()
                    .map(Resource::meta)
                    .filter(|o| Self::tenant_of(o) != Self::tenant_of(new))
                {
                    self.remove(kind, old);
                }
                if let Some(tenant) = Self::tenant_of(new) {
                    self.by_tenant.entry(tenant.clone()).or_default().insert(
                        Self::key(kind, new),
                        (api_version.to_owned(), kind.to_owned(), new.clone()),
                    );
                }
            }
            Change::Deleted(o) => self.remove(kind, o.meta()),
        }
    }
}

/// A watched kind's writer, shared by the watcher task and
/// [`Caches::refresh`], and the resourceVersion of the newest LIST a
/// refresh filled it from.
struct Feed<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    writer: Mutex<Writer<K>>,
    listed: Mutex<Option<String>>,
}

type Shared<K> = Arc<Feed<K>>;

/// A tenant kind watched as metadata only.
#[derive(Clone)]
struct MetaKind {
    resource: ApiResource,
    writer: Shared<PartialObjectMeta<DynamicObject>>,
}

/// The stores, and the watchers that fill them.
#[derive(Clone)]
pub struct Caches {
    /// Tenants.
    pub tenants: Store<Tenant>,
    /// Workloads.
    pub workloads: Store<TenantDeployment>,
    /// Subnet claims.
    pub claims: Store<SubnetClaim>,
    /// The operator's Deployments (labelled managed-by the operator).
    pub deployments: Store<K8sDeployment>,
    /// Pods of workloads (carrying the workload label).
    pub pods: Store<Pod>,
    /// The operator's `CiliumPodIPPool`s.
    pub pools: Store<DynamicObject>,
    /// The platform's settings ([`crate::crd::Platform`], one object).
    pub platforms: Store<Platform>,
    pool_resource: ApiResource,
    meta: Vec<MetaKind>,
    claim_index: Arc<Mutex<ClaimIndex>>,
    workload_index: Arc<Mutex<NamespaceIndex>>,
    ledger: Arc<Mutex<ClaimLedger>>,
    owned_index: Arc<Mutex<OwnedIndex>>,
    writers: Writers,
    states: States,
    watched: Arc<AtomicBool>,
}

impl Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("states", &*lock(&self.states))
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Writers {
    tenants: Shared<Tenant>,
    workloads: Shared<TenantDeployment>,
    claims: Shared<SubnetClaim>,
    deployments: Shared<K8sDeployment>,
    pods: Shared<Pod>,
    pools: Shared<DynamicObject>,
    platforms: Shared<Platform>,
}

fn shared<K>(dyntype: K::DynamicType) -> (Store<K>, Shared<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let w = Writer::new(dyntype);
    let reader = w.as_reader();
    let feed = Feed {
        writer: Mutex::new(w),
        listed: Mutex::new(None),
    };
    (reader, Arc::new(feed))
}

/// The API resource of a kind, by apiVersion and kind.
pub(crate) fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn managed_selector() -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={MANAGED_BY_OPERATOR}", MANAGED_BY.0))
}

/// The kind of the operator's pools.
const POOL_KIND: &str = "CiliumPodIPPool";
/// The kind of the platform's settings.
const PLATFORM_KIND: &str = "Platform";

fn platform_incomplete(message: String) -> Error {
    Error::CacheIncomplete {
        object: "the platform".into(),
        kind: PLATFORM_KIND.into(),
        message,
    }
}

impl Caches {
    /// Empty stores, not yet watched; the claim ledger is over `pool`.
    pub fn new(pool: Pool) -> Self {
        let (tenants, tw) = shared(());
        let (workloads, ww) = shared(());
        let (claims, cw) = shared(());
        let (deployments, dw) = shared(());
        let (pods, pw) = shared(());
        let pool_resource = crate::desired::tenant_kinds()
            .find(|(_, k, _)| *k == POOL_KIND)
            .map_or_else(
                || resource("cilium.io/v2alpha1", POOL_KIND),
                |(v, k, _)| resource(v, k),
            );
        let (pools, pool_w) = shared(pool_resource.clone());
        let (platforms, platform_w) = shared(());
        let meta = crate::desired::tenant_kinds()
            .filter(|(_, k, _)| !matches!(*k, "Deployment" | POOL_KIND))
            .map(|(v, k, _)| {
                let resource = resource(v, k);
                // Only the writer: the metadata is read through the owned index.
                let (_, writer) = shared(resource.clone());
                MetaKind { resource, writer }
            })
            .collect();
        Self {
            tenants,
            workloads,
            claims,
            deployments,
            pods,
            pools,
            platforms,
            pool_resource,
            meta,
            claim_index: Arc::default(),
            workload_index: Arc::default(),
            ledger: Arc::new(Mutex::new(ClaimLedger::new(pool))),
            owned_index: Arc::default(),
            writers: Writers {
                tenants: tw,
                workloads: ww,
                claims: cw,
                deployments: dw,
                pods: pw,
                pools: pool_w,
                platforms: platform_w,
            },
            states: States::default(),
            watched: Arc::default(),
        }
    }

    /// The pool's used subnets, kept from the claim and workload events
    /// (allocation reads it instead of every claim and workload).
    pub fn ledger(&self) -> &Mutex<ClaimLedger> {
        &self.ledger
    }

    /// The cached claims carrying workload uid `uid`, in name order.
    pub fn claims_of_uid(&self, uid: &str) -> Vec<Arc<SubnetClaim>> {
        indexed(&self.claims, &self.claim_index, By::Uid, uid, |c| {
            c.spec.workload_uid == uid
        })
    }

    /// The cached claims of the workload `namespace/name` (of any uid), in
    /// name order.
    pub fn claims_of_workload(&self, namespace: &str, name: &str) -> Vec<Arc<SubnetClaim>> {
        let key = workload_key(namespace, name);
        indexed(&self.claims, &self.claim_index, By::Workload, &key, |c| {
            c.spec.namespace == namespace && c.spec.deployment == name
        })
    }

    /// The cached workloads in namespace `namespace`, in name order (from
    /// an index kept from the watch events: filtering every cached workload
    /// made each tenant pass linear in all workloads).
    pub fn workloads_in(&self, namespace: &str) -> Vec<Arc<TenantDeployment>> {
        let names: Vec<String> = lock(&self.workload_index)
            .get(namespace)
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default();
        names
            .iter()
            .filter_map(|n| self.workloads.get(&ObjectRef::new(n).within(namespace)))
            .collect()
    }

    /// The cached claims of tenant `tenant`, in name order.
    pub fn claims_of_tenant(&self, tenant: &str) -> Vec<Arc<SubnetClaim>> {
        indexed(&self.claims, &self.claim_index, By::Tenant, tenant, |c| {
            c.spec.tenant == tenant
        })
    }

    /// Whether watchers keep the stores current (else reconciles call
    /// [`Caches::refresh`] first).
    pub fn watched(&self) -> bool {
        self.watched.load(Ordering::Relaxed)
    }

    /// The state of `kind`'s store.
    pub fn state(&self, kind: &str) -> KindState {
        lock(&self.states)
            .get(kind)
            .cloned()
            .unwrap_or(KindState::Syncing)
    }

    /// Kinds whose store cannot be trusted yet (syncing or failed), with
    /// the reason.
    pub fn untrusted(&self) -> Vec<(String, String)> {
        let states = lock(&self.states);
        self.kinds()
            .into_iter()
            .filter_map(|k| match states.get(&k) {
                Some(KindState::Synced | KindState::Missing) => None,
                Some(KindState::Failed(why)) => Some((k, why.clone())),
                Some(KindState::Syncing) | None => Some((k, "not listed yet".into())),
            })
            .collect()
    }

    fn kinds(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            "Tenant",
            "TenantDeployment",
            "SubnetClaim",
            "Deployment",
            "Pod",
            POOL_KIND,
            PLATFORM_KIND,
        ]
        .map(str::to_owned)
        .into();
        out.extend(self.meta.iter().map(|m| m.resource.kind.clone()));
        out
    }

    /// Completes when every store has completed its initial LIST (or its
    /// kind is not served).
    pub async fn synced(&self) {
        while !self.untrusted().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Completes when the kinds every decision rests on (tenants,
    /// workloads, claims) are listed: before that, a tenant would look
    /// like it has no workloads.
    pub async fn core_synced(&self) {
        let core = ["Tenant", "TenantDeployment", "SubnetClaim"];
        while !core.iter().all(|k| self.state(k) == KindState::Synced) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Completes when every kind's first LIST has ended (listed, not
    /// served, or failed): once watches are established, the operator's
    /// own writes come back as events instead of slipping between a LIST
    /// and its watch.
    pub async fn settled(&self) {
        loop {
            let pending = {
                let states = lock(&self.states);
                self.kinds()
                    .iter()
                    .any(|k| matches!(states.get(k), None | Some(KindState::Syncing)))
            };
            if !pending {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The metadata, with (apiVersion, kind), of the cached objects of
    /// every tenant kind labelled as `tenant`'s that `keep` accepts.
    pub fn owned_metas(&self, tenant: &str, keep: impl Fn(&ObjectMeta) -> bool) -> Vec<OwnedMeta> {
        lock(&self.owned_index)
            .by_tenant
            .get(tenant)
            .into_iter()
            .flat_map(|objects| objects.values())
            .filter(|(_, _, meta)| keep(meta))
            .cloned()
            .collect()
    }

    /// Every store filled from one LIST per kind; no watch. For reconciles
    /// run without [`Caches::run`] (tests, one-shot use).
    pub async fn refresh(&self, client: &Client) {
        futures::future::join_all(self.feeds(client, None)).await;
    }

    /// Watches every kind until dropped, sending changes to `triggers`.
    /// Returns only if a watcher stream ends.
    pub async fn run(&self, client: &Client, triggers: Triggers) {
        self.watched.store(true, Ordering::Relaxed);
        futures::future::select_all(self.feeds(client, Some(triggers))).await;
    }

    fn feeds(&self, client: &Client, triggers: Option<Triggers>) -> Vec<BoxFuture<'static, ()>> {
        let once = triggers.is_none();
        let t = triggers.clone();
        let mut feeds = vec![
            self.feed(
                "Tenant",
                Api::all(client.clone()),
                watcher::Config::default(),
                &self.writers.tenants,
                (),
                move |c| {
                    if let Some(t) = &t {
                        t.tenant(&c.object().name_any());
                        if c.spec_changed() {
                            t.platform();
                        }
                    }
                },
            ),
            self.feed(
                "TenantDeployment",
                Api::all(client.clone()),
                watcher::Config::default(),
                &self.writers.workloads,
                (),
                workload_triggers(triggers.clone(), self.clone()),
            ),
            self.feed(
                "SubnetClaim",
                Api::all(client.clone()),
                watcher::Config::default(),
                &self.writers.claims,
                (),
                claim_triggers(
                    triggers.clone(),
                    self.claim_index.clone(),
                    self.ledger.clone(),
                ),
            ),
            self.feed(
                "Deployment",
                Api::all(client.clone()),
                managed_selector(),
                &self.writers.deployments,
                (),
                owned(
                    self.owned_index.clone(),
                    &resource("apps/v1", "Deployment"),
                    deployment_triggers(triggers.clone()),
                ),
            ),
            self.feed(
                "Pod",
                Api::all(client.clone()),
                watcher::Config::default().labels(DEPLOYMENT_LABEL),
                &self.writers.pods,
                (),
                pod_triggers(triggers.clone(), self.clone()),
            ),
            self.feed(
                POOL_KIND,
                Api::all_with(client.clone(), &self.pool_resource),
                managed_selector(),
                &self.writers.pools,
                self.pool_resource.clone(),
                owned(
                    self.owned_index.clone(),
                    &self.pool_resource,
                    pool_triggers(triggers.clone(), self.clone()),
                ),
            ),
        ];
        feeds.push(self.platform_feed(client, triggers.clone()));
        for m in &self.meta {
            let t = triggers.clone();
            feeds.push(self.feed(
                &m.resource.kind,
                Api::all_with(client.clone(), &m.resource),
                managed_selector(),
                &m.writer,
                m.resource.clone(),
                owned(
                    self.owned_index.clone(),
                    &m.resource,
                    move |c: Change<'_, PartialObjectMeta<DynamicObject>>| {
                        if let Some(t) = &t
                            && c.spec_changed()
                            && let Some(owner) = tenant_owner(&c.object().metadata)
                        {
                            t.tenant(&owner);
                        }
                    },
                ),
            ));
        }
        if once {
            lock(&self.states).clear();
        }
        feeds
    }

    /// The platform's settings, read by the platform pass and by every
    /// tenant's (the central gateway's routes and policies): `None` when
    /// there are none (no object, or the CRD is not installed), an error
    /// while the store is not complete, since acting then would prune
    /// what a later view still wants.
    pub fn platform(&self) -> Result<Option<Arc<Platform>>, Error> {
        match self.state(PLATFORM_KIND) {
            KindState::Synced => Ok(self
                .platforms
                .get(&ObjectRef::new(crate::crd::PLATFORM_NAME))),
            KindState::Missing => Ok(None),
            KindState::Syncing => Err(platform_incomplete("not listed yet".into())),
            KindState::Failed(why) => Err(platform_incomplete(why)),
        }
    }

    /// Feeds the platform store; a settings change concerns the platform
    /// and every tenant.
    fn platform_feed(&self, client: &Client, t: Option<Triggers>) -> BoxFuture<'static, ()> {
        let tenants = self.tenants.clone();
        self.feed(
            PLATFORM_KIND,
            Api::all(client.clone()),
            watcher::Config::default(),
            &self.writers.platforms,
            (),
            move |c: Change<'_, Platform>| {
                if let Some(t) = &t
                    && c.spec_changed()
                {
                    t.platform();
                    for tenant in tenants.state() {
                        t.tenant(&tenant.name_any());
                    }
                }
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn feed<K>(
        &self,
        kind: &str,
        api: Api<K>,
        config: watcher::Config,
        writer: &Shared<K>,
        dyntype: K::DynamicType,
        on_change: impl Fn(Change<'_, K>) + Send + Sync + 'static,
    ) -> BoxFuture<'static, ()>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let kind = kind.to_owned();
        let writer = writer.clone();
        let states = self.states.clone();
        let once = !self.watched();
        async move {
            if once {
                match list_all(&api, &config).await {
                    Ok((version, items)) => {
                        apply_list(&writer, &dyntype, version, items, &on_change);
                        set_state(&states, &kind, KindState::Synced);
                    }
                    Err(e) => watch_failed(&states, &kind, &watcher::Error::InitialListFailed(e)),
                }
                return;
            }
            let stream = watcher::watcher(api, config).default_backoff();
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        let done = matches!(event, Event::InitDone);
                        apply(&writer, &dyntype, &event, &on_change);
                        if done {
                            set_state(&states, &kind, KindState::Synced);
                        }
                    }
                    Err(e) => watch_failed(&states, &kind, &e),
                }
            }
        }
        .boxed()
    }
}

/// One LIST of a kind (every page), with the list's resourceVersion.
async fn list_all<K>(
    api: &Api<K>,
    config: &watcher::Config,
) -> Result<(Option<String>, Vec<K>), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut params = ListParams {
        label_selector: config.label_selector.clone(),
        field_selector: config.field_selector.clone(),
        limit: config.page_size,
        ..ListParams::default()
    };
    let mut items = Vec::new();
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) => params.continue_token = Some(token),
            None => {
                let version = page.metadata.resource_version.filter(|v| !v.is_empty());
                return Ok((version, items));
            }
        }
    }
}

/// Fills a kind's store from one LIST, as a watcher's relist would,
/// unless the store already holds a newer LIST: concurrent refreshes can
/// finish out of order, and an older LIST would take back claims a newer
/// one showed (after their reservations were dropped). Returns whether the
/// LIST was applied.
fn apply_list<K>(
    feed: &Shared<K>,
    dyntype: &K::DynamicType,
    version: Option<String>,
    items: Vec<K>,
    on_change: &(impl Fn(Change<'_, K>) + ?Sized),
) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    // Held to the end: one LIST of a kind is applied at a time.
    let mut listed = lock(&feed.listed);
    if let (Some(new), Some(old)) = (&version, &*listed)
        && older(new, old)
    {
        return false;
    }
    apply(feed, dyntype, &Event::Init, on_change);
    for o in items {
        apply(feed, dyntype, &Event::InitApply(o), on_change);
    }
    apply(feed, dyntype, &Event::InitDone, on_change);
    *listed = version;
    true
}

/// Whether resourceVersion `a` is older than `b` (both of one resource
/// type). Kubernetes API Concepts, "Resource versions" (since 1.35,
/// KEP-5504): kube-apiserver's resource versions of one resource type are
/// orderable as monotonically increasing integers, compared as
/// apimachinery's `resourceversion.CompareResourceVersion` does (positive
/// decimal integers without leading zeros, by length, then digit by
/// digit); before 1.35, and for extension API servers, clients may only
/// compare them for equality. So a version that is not such an integer is
/// never called older.
fn older(a: &str, b: &str) -> bool {
    let integer =
        |v: &str| !v.is_empty() && !v.starts_with('0') && v.bytes().all(|c| c.is_ascii_digit());
    integer(a) && integer(b) && (a.len(), a) < (b.len(), b)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn set_state(states: &States, kind: &str, state: KindState) {
    lock(states).insert(kind.to_owned(), state);
}

/// Records a watcher error; a refused LIST or watch (403: RBAC, 404: CRD
/// missing) is logged loudly, since the operator is blind to that kind.
fn watch_failed(states: &States, kind: &str, e: &watcher::Error) {
    let status = match e {
        watcher::Error::WatchError(s) => Some((s.code, s.message.clone())),
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some((s.code, s.message.clone())),
        _ => None,
    };
    let mut states = lock(states);
    let before = states.get(kind).cloned();
    match status {
        Some((404, _)) => {
            if before != Some(KindState::Missing) {
                tracing::info!(
                    kind,
                    "kind not served (CRD not installed?); treated as empty"
                );
            }
            states.insert(kind.to_owned(), KindState::Missing);
        }
        Some((403, message)) => {
            tracing::error!(kind, error = %e, "watch forbidden: the operator's RBAC rules lack list/watch on this kind");
            if before != Some(KindState::Synced) {
                states.insert(
                    kind.to_owned(),
                    KindState::Failed(format!("{message} (403)")),
                );
            }
        }
        other => {
            tracing::warn!(kind, error = %e, "watch failed; retrying");
            if before != Some(KindState::Synced) {
                let why = other.map_or_else(|| e.to_string(), |(code, m)| format!("{m} ({code})"));
                states.insert(kind.to_owned(), KindState::Failed(why));
            }
        }
    }
}

/// Applies one watcher event to the store, then tells `on_change` what
/// changed. Objects of an initial LIST are announced when the LIST is
/// complete (the store swaps them in only then, and a reconcile must find
/// them), together with the objects the new LIST no longer has.
fn apply<K>(
    writer: &Shared<K>,
    dyntype: &K::DynamicType,
    event: &Event<K>,
    on_change: &(impl Fn(Change<'_, K>) + ?Sized),
) where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut w = lock(&writer.writer);
    let reader = w.as_reader();
    match event {
        Event::Apply(o) => {
            let old = reader.get(&ObjectRef::from_obj_with(o, dyntype.clone()));
            w.apply_watcher_event(event);
            drop(w);
            on_change(Change::Applied { old, new: o });
        }
        Event::Delete(o) => {
            w.apply_watcher_event(event);
            drop(w);
            on_change(Change::Deleted(o));
        }
        Event::Init | Event::InitApply(_) => w.apply_watcher_event(event),
        Event::InitDone => {
            let before: BTreeMap<String, Arc<K>> = reader
                .state()
                .into_iter()
                .map(|o| {
                    (
                        ObjectRef::from_obj_with(&*o, dyntype.clone()).to_string(),
                        o,
                    )
                })
                .collect();
            w.apply_watcher_event(event);
            drop(w);
            let mut gone = before.clone();
            for o in reader.state() {
                let key = ObjectRef::from_obj_with(&*o, dyntype.clone()).to_string();
                gone.remove(&key);
                on_change(Change::Applied {
                    old: before.get(&key).cloned(),
                    new: &o,
                });
            }
            for o in gone.values() {
                on_change(Change::Deleted(o));
            }
        }
    }
}

/// The tenant an object belongs to: its controller owner reference of
/// kind `Tenant`.
fn tenant_owner(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "Tenant")
        .map(|o| o.name.clone())
}

/// `then`, after the change has reached the owned-object index.
fn owned<K: Resource>(
    index: Arc<Mutex<OwnedIndex>>,
    resource: &ApiResource,
    then: impl Fn(Change<'_, K>) + Send + Sync + 'static,
) -> impl Fn(Change<'_, K>) + Send + Sync + 'static {
    let (api_version, kind) = (resource.api_version.clone(), resource.kind.clone());
    move |c| {
        lock(&index).follow(&api_version, &kind, &c);
        then(c);
    }
}

fn workload_triggers(
    triggers: Option<Triggers>,
    caches: Caches,
) -> impl Fn(Change<'_, TenantDeployment>) + Send + Sync + 'static {
    move |c| {
        follow_status(&caches.ledger, &c);
        index_namespace(&caches.workload_index, &c);
        let Some(t) = &triggers else { return };
        let w = c.object();
        let ns = w.namespace().unwrap_or_default();
        t.workload(&ns, &w.name_any());
        if c.spec_changed() {
            t.platform();
            if let Some(tenant) = ns.strip_prefix(crate::desired::NAMESPACE_PREFIX) {
                t.tenant(tenant);
            }
            // A workload going away: its claims are the claim controller's.
            let uid = w.uid().unwrap_or_default();
            for claim in caches.claims_of_uid(&uid) {
                t.claim(&claim.name_any());
            }
        }
    }
}

/// Names of objects by namespace.
type NamespaceIndex = HashMap<String, BTreeSet<String>>;

/// Keeps `index` in step with one event (a namespace never changes).
fn index_namespace<K: Resource>(index: &Mutex<NamespaceIndex>, c: &Change<'_, K>) {
    let o = c.object();
    let ns = o.namespace().unwrap_or_default();
    let mut index = lock(index);
    match c {
        Change::Applied { .. } => {
            index.entry(ns).or_default().insert(o.name_any());
        }
        Change::Deleted(_) => {
            if let Some(names) = index.get_mut(&ns) {
                names.remove(&o.name_any());
                if names.is_empty() {
                    index.remove(&ns);
                }
            }
        }
    }
}

/// The subnet a workload's status names, into the claim ledger.
fn follow_status(ledger: &Mutex<ClaimLedger>, c: &Change<'_, TenantDeployment>) {
    let w = c.object();
    let key = workload_key(&w.namespace().unwrap_or_default(), &w.name_any());
    let subnet = match c {
        Change::Deleted(_) => None,
        Change::Applied { new, .. } => new
            .status
            .as_ref()
            .and_then(|s| s.subnet.as_deref())
            .and_then(|s| s.parse().ok()),
    };
    lock(ledger).workload_subnet(&key, subnet);
}

fn claim_triggers(
    triggers: Option<Triggers>,
    index: Arc<Mutex<ClaimIndex>>,
    ledger: Arc<Mutex<ClaimLedger>>,
) -> impl Fn(Change<'_, SubnetClaim>) + Send + Sync + 'static {
    move |c| {
        lock(&index).update(&c);
        match &c {
            Change::Applied { new, .. } => lock(&ledger).claim_seen(&new.name_any()),
            Change::Deleted(gone) => lock(&ledger).claim_gone(&gone.name_any()),
        }
        let Some(t) = &triggers else { return };
        let claim = c.object();
        t.claim(&claim.name_any());
        if c.spec_changed() {
            t.platform();
            // A deleted claim is repaired by its workload at once.
            t.workload(&claim.spec.namespace, &claim.spec.deployment);
            t.tenant(&claim.spec.tenant);
        }
    }
}

fn deployment_triggers(
    triggers: Option<Triggers>,
) -> impl Fn(Change<'_, K8sDeployment>) + Send + Sync + 'static {
    move |c| {
        let Some(t) = &triggers else { return };
        let d = c.object();
        // Rollouts move readiness: every change, status included.
        t.workload(&d.namespace().unwrap_or_default(), &d.name_any());
        if c.spec_changed()
            && let Some(owner) = tenant_owner(&d.metadata)
        {
            t.tenant(&owner);
        }
    }
}

fn pod_triggers(
    triggers: Option<Triggers>,
    caches: Caches,
) -> impl Fn(Change<'_, Pod>) + Send + Sync + 'static {
    move |c| {
        let Some(t) = &triggers else { return };
        let finished = match &c {
            Change::Deleted(_) => true,
            Change::Applied { new, .. } => matches!(
                new.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ),
        };
        let pod = c.object();
        let (Some(ns), Some(deployment)) = (pod.namespace(), pod.labels().get(DEPLOYMENT_LABEL))
        else {
            return;
        };
        // A release waits for the workload's pods: wake it when one goes.
        if finished {
            t.workload(&ns, deployment);
            for claim in caches.claims_of_workload(&ns, deployment) {
                t.claim(&claim.name_any());
            }
        }
    }
}

fn pool_triggers(
    triggers: Option<Triggers>,
    caches: Caches,
) -> impl Fn(Change<'_, DynamicObject>) + Send + Sync + 'static {
    move |c| {
        let Some(t) = &triggers else { return };
        if !c.spec_changed() {
            return;
        }
        let pool = c.object();
        if let Some(owner) = tenant_owner(&pool.metadata) {
            t.tenant(&owner);
        }
        let labels = pool.labels();
        if let (Some(tenant), Some(deployment)) =
            (labels.get(TENANT_LABEL), labels.get(DEPLOYMENT_LABEL))
        {
            let ns = format!("{}{tenant}", crate::desired::NAMESPACE_PREFIX);
            t.workload(&ns, deployment);
            for claim in caches.claims_of_workload(&ns, deployment) {
                t.claim(&claim.name_any());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::claim_name;
    use crate::crd::SubnetClaimSpec;
    use crate::testing::example_pool;
    use std::time::Instant;

    fn claim(name: &str, uid: &str, deployment: &str) -> SubnetClaim {
        SubnetClaim::new(
            name,
            SubnetClaimSpec {
                subnet: String::new(),
                tenant: "acme".into(),
                namespace: "tenant-acme".into(),
                deployment: deployment.into(),
                workload_uid: uid.into(),
                released_at: None,
            },
        )
    }

    fn names<K: Resource>(objects: &[Arc<K>]) -> Vec<String> {
        objects.iter().map(|o| o.name_any()).collect()
    }

    /// Feeds `events` to the claim store the way its watcher does.
    fn feed(caches: &Caches, events: Vec<Event<SubnetClaim>>) {
        let on_change = claim_triggers(None, caches.claim_index.clone(), caches.ledger.clone());
        for e in events {
            apply(&caches.writers.claims, &(), &e, &on_change);
        }
    }

    fn caches() -> Caches {
        Caches::new(example_pool())
    }

    /// The name of the pool's `i`-th subnet's claim.
    fn nth(i: u128) -> String {
        claim_name(example_pool().subnet(i))
    }

    fn next(caches: &Caches) -> Option<u128> {
        lock(&caches.ledger).reserve_next(Instant::now())
    }

    #[test]
    fn claim_lookups_follow_watch_events_and_relists() {
        let caches = caches();
        feed(
            &caches,
            vec![
                Event::Init,
                Event::InitApply(claim("a", "u1", "web")),
                Event::InitApply(claim("b", "u1", "web")),
                Event::InitApply(claim("c", "u2", "db")),
                Event::InitDone,
            ],
        );
        assert_eq!(names(&caches.claims_of_uid("u1")), ["a", "b"]);
        assert_eq!(
            names(&caches.claims_of_workload("tenant-acme", "db")),
            ["c"]
        );
        assert_eq!(names(&caches.claims_of_tenant("acme")), ["a", "b", "c"]);
        // A deletion, and a claim edited onto another workload.
        feed(
            &caches,
            vec![
                Event::Delete(claim("a", "u1", "web")),
                Event::Apply(claim("b", "u3", "api")),
            ],
        );
        assert!(caches.claims_of_uid("u1").is_empty());
        assert_eq!(names(&caches.claims_of_uid("u3")), ["b"]);
        assert!(caches.claims_of_workload("tenant-acme", "web").is_empty());
        // A relist that no longer has `b` (deleted while the watch was down).
        feed(
            &caches,
            vec![
                Event::Init,
                Event::InitApply(claim("c", "u2", "db")),
                Event::InitDone,
            ],
        );
        assert!(caches.claims_of_uid("u3").is_empty());
        assert_eq!(names(&caches.claims_of_tenant("acme")), ["c"]);
        assert!(lock(&caches.claim_index).by_workload.len() == 1);
    }

    #[test]
    fn the_ledger_follows_claim_and_workload_events() {
        let caches = caches();
        let list = [0, 1, 3].map(|i| Event::InitApply(claim(&nth(i), "u", "web")));
        feed(
            &caches,
            [vec![Event::Init], list.into(), vec![Event::InitDone]].concat(),
        );
        // A workload whose status names subnet 2 (its claim about to be
        // repaired) holds it too.
        let mut w = TenantDeployment::new(
            "api",
            serde_json::from_value(serde_json::json!({"image": "nginx:alpine"})).unwrap(),
        );
        w.metadata.namespace = Some("tenant-acme".into());
        w.status = Some(
            serde_json::from_value(serde_json::json!(
            {"subnet": example_pool().subnet(2).to_string()}))
            .unwrap(),
        );
        follow_status(&caches.ledger, &Change::Applied { old: None, new: &w });
        assert_eq!(next(&caches), Some(4));
        feed(&caches, vec![Event::Delete(claim(&nth(1), "u", "web"))]);
        assert_eq!(next(&caches), Some(1));
        follow_status(&caches.ledger, &Change::Deleted(&w));
        assert_eq!(next(&caches), Some(2));
        // A /112 inside the pool of /96s: allocation must refuse while it
        // lives (fault 8), and may go on once it is gone.
        let small = claim_name("fd00:1234:5678::1:0/112".parse().unwrap());
        feed(&caches, vec![Event::Apply(claim(&small, "v", "old"))]);
        assert_eq!(lock(&caches.ledger).foreign().len(), 1);
        feed(
            &caches,
            vec![
                Event::Init,
                Event::InitApply(claim(&nth(0), "u", "web")),
                Event::InitDone,
            ],
        );
        assert!(lock(&caches.ledger).foreign().is_empty());
        // The relist dropped 3 and the /112; the reservations made above
        // (4, 1, 2) still hold theirs until the cache shows their claims.
        assert_eq!(next(&caches), Some(3));
    }

    fn workload_in(namespace: &str, name: &str) -> TenantDeployment {
        let mut w = TenantDeployment::new(
            name,
            serde_json::from_value(serde_json::json!({"image": "nginx:alpine"})).unwrap(),
        );
        w.metadata.namespace = Some(namespace.into());
        w
    }

    /// A tenant pass reads its namespace's workloads from the index, which
    /// follows applies, deletes and relists (one that drops an object
    /// included), so a pass never sees a workload that is gone.
    #[test]
    fn workloads_by_namespace_follow_the_events() {
        let caches = caches();
        let on_change = workload_triggers(None, caches.clone());
        let events = [
            Event::Init,
            Event::InitApply(workload_in("tenant-a", "web")),
            Event::InitApply(workload_in("tenant-a", "api")),
            Event::InitApply(workload_in("tenant-b", "web")),
            Event::InitDone,
        ];
        for e in &events {
            apply(&caches.writers.workloads, &(), e, &on_change);
        }
        assert_eq!(names(&caches.workloads_in("tenant-a")), ["api", "web"]);
        assert_eq!(names(&caches.workloads_in("tenant-b")), ["web"]);
        let delete = Event::Delete(workload_in("tenant-a", "api"));
        apply(&caches.writers.workloads, &(), &delete, &on_change);
        assert_eq!(names(&caches.workloads_in("tenant-a")), ["web"]);
        let relist = [
            Event::Init,
            Event::InitApply(workload_in("tenant-a", "web")),
            Event::InitDone,
        ];
        for e in &relist {
            apply(&caches.writers.workloads, &(), e, &on_change);
        }
        assert_eq!(names(&caches.workloads_in("tenant-a")), ["web"]);
        assert!(caches.workloads_in("tenant-b").is_empty());
        assert!(lock(&caches.workload_index).get("tenant-b").is_none());
    }

    /// The flaky `concurrent_reconciles_in_one_process_take_turns_and_never_conflict`,
    /// step by step: this process creates claim 0; a refresh's LIST at
    /// resourceVersion 12 shows it (its reservation is dropped); a refresh
    /// that started earlier finishes last with its LIST at 10, from before
    /// the create. Replacing the store with it would free subnet 0 and
    /// hand it out again (a 409 at best).
    #[test]
    fn an_older_list_never_replaces_a_newer_one() {
        let caches = caches();
        let on_change = claim_triggers(None, caches.claim_index.clone(), caches.ledger.clone());
        let created = claim(&nth(0), "u", "web");
        assert_eq!(next(&caches), Some(0));
        lock(&caches.ledger).won(created.clone(), Instant::now());
        let list = |version: &str, items| {
            apply_list(
                &caches.writers.claims,
                &(),
                Some(version.into()),
                items,
                &on_change,
            )
        };
        assert!(list("12", vec![created]));
        let applied = list("10", vec![]);
        assert_eq!(next(&caches), Some(1), "subnet 0 handed out twice");
        assert_eq!(caches.claims.state().len(), 1);
        assert!(!applied);
        // A newer LIST without it: deleted meanwhile.
        assert!(list("13", vec![]));
        assert_eq!(next(&caches), Some(0));
    }

    #[test]
    fn resource_versions_are_ordered_only_when_both_are_integers() {
        assert!(older("9", "10"));
        assert!(older("99", "100"));
        assert!(older("123", "124"));
        assert!(!older("10", "9"));
        assert!(!older("12", "12"));
        for opaque in ["", "010", "abc", "1a", "-1"] {
            assert!(!older(opaque, "5") && !older("5", opaque), "{opaque}");
        }
    }
}
