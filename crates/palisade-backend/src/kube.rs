//! `palisade --store kubernetes ...`: the [`Backend`] whose store is the
//! cluster. It reads and writes the operator's custom resources; the
//! operator (in the cluster) allocates subnets and renders objects, so a
//! new deployment's subnet shows up once it has reconciled, and a delete
//! finishes when the operator has released what the object held.
//!
//! Where the model keeps a thing lives in the resources:
//! - a tenant: a `Tenant` (quota, node pool, egress, labels, `gateway` for
//!   its per-tenant gateway); a deployment: a `TenantDeployment` in
//!   `tenant-<name>`, its subnet in `status.subnet` (a `SubnetClaim`);
//! - a per-deployment gateway: `gateway: dedicated` on the workload; a
//!   per-tenant one: the Tenant's `gateway` (or a workload's `gateway:
//!   tenant`);
//! - the central gateway: `centralGateway` of the one `Platform` object;
//! - an allow rule `from -> to`: an `allowFrom` entry of `to`.
//!
//! Handlers parse input through the model before calling in here, so bad
//! input fails with the same one-line error as on SQLite and nothing is
//! sent; what needs the cluster's state (existence, duplicates) is
//! checked with reads before the first write, and refused with the
//! SQLite store's own errors.

mod check;
mod convert;
mod platform;

use crate::error::{Context, Error, Result};
use crate::{
    Backend, BackendError, CreatedRow, DeploymentRow, Health, NoHistory, Removal, TenantPage,
    TenantRow,
};
use convert::{TenantCr, deployment_row, tenant_row, tenant_spec, workload_spec};
use palisade_core::allocator::PoolUsage;
use palisade_core::{
    AllowRule, DeploymentName, Gateway, GatewayScope, Pool, Snapshot, Tenant, TenantName,
};
use palisade_operator::crd::{AllowFrom, GatewayMode, SubnetClaim, TenantDeployment};
use palisade_operator::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use palisade_operator::kube::{Client, ResourceExt};
use palisade_proxy::compile::DomainRules;
use palisade_store::{Event, NewDeployment, ObjectCounts, StoreError, TenantUsage};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Namespace and name of the operator's ConfigMap (its pool).
const OPERATOR_CONFIG: (&str, &str) = ("palisade-system", "palisade-operator");
/// Field manager of what the CLI writes.
const FIELD_MANAGER: &str = "palisade-cli";

/// The cluster from `$KUBECONFIG` (or in-cluster), connected on first use.
pub struct Kube {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl Kube {
    /// A backend with its own single-threaded runtime.
    pub fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Self { rt, client: None })
    }

    /// Runs `f` with the client, on the runtime.
    fn with<T, F>(&mut self, f: impl FnOnce(Client) -> F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = self
                    .rt
                    .block_on(Client::try_default())
                    .context("cannot connect to the cluster (check $KUBECONFIG)")?;
                self.client.insert(c).clone()
            }
        };
        self.rt.block_on(f(client))
    }
}

/// Everything the read verbs need, in one pass: tenants and workloads by
/// name.
struct State {
    tenants: Vec<TenantCr>,
    workloads: Vec<TenantDeployment>,
    /// The platform's settings (the central gateway).
    platform: Option<palisade_operator::crd::Platform>,
}

impl State {
    async fn read(c: &Client) -> Result<Self> {
        let mut tenants = list(Api::<TenantCr>::all(c.clone()), "Tenants").await?;
        tenants.sort_by_key(ResourceExt::name_any);
        let mut workloads =
            list(Api::<TenantDeployment>::all(c.clone()), "TenantDeployments").await?;
        workloads.sort_by_key(|w| (w.namespace(), w.name_any()));
        let platform = platform::read(c).await?;
        Ok(Self {
            tenants,
            workloads,
            platform,
        })
    }

    fn tenant(&self, name: &TenantName) -> Option<&TenantCr> {
        self.tenants.iter().find(|t| t.name_any() == name.as_str())
    }

    fn workloads_of<'a>(
        &'a self,
        tenant: &TenantName,
    ) -> impl Iterator<Item = &'a TenantDeployment> + use<'a> {
        let ns = tenant.namespace();
        self.workloads
            .iter()
            .filter(move |w| w.namespace().as_deref() == Some(ns.as_str()))
    }

    fn workload(&self, tenant: &TenantName, name: &DeploymentName) -> Option<&TenantDeployment> {
        self.workloads_of(tenant)
            .find(|w| w.name_any() == name.as_str())
    }

    fn require_tenant(&self, name: &TenantName) -> Result<&TenantCr> {
        self.tenant(name)
            .ok_or_else(|| StoreError::TenantNotFound(name.clone()).into())
    }

    fn require_workload(
        &self,
        tenant: &TenantName,
        name: &DeploymentName,
    ) -> Result<&TenantDeployment> {
        self.workload(tenant, name).ok_or_else(|| {
            StoreError::DeploymentNotFound {
                tenant: tenant.clone(),
                name: name.clone(),
            }
            .into()
        })
    }

    /// Rows of the workloads that parse; the others are skipped with a
    /// warning (the operator reports them in their status, `check` too).
    fn rows(&self, tenant: Option<&TenantName>) -> Vec<DeploymentRow> {
        self.workloads
            .iter()
            .filter(|w| tenant.is_none_or(|t| w.namespace() == Some(t.namespace())))
            .filter_map(|w| {
                deployment_row(w)
                    .inspect_err(|e| tracing::warn!("skipped: {e:#}"))
                    .ok()
            })
            .collect()
    }

    fn gateways(&self) -> Vec<Gateway> {
        let mut out: BTreeMap<String, Gateway> = BTreeMap::new();
        let mut add = |scope: GatewayScope, created_at| {
            out.entry(scope.id())
                .or_insert(Gateway { scope, created_at });
        };
        if let Some(g) = platform::central(self.platform.as_ref()) {
            add(g.scope, g.created_at);
        }
        for t in &self.tenants {
            if let (true, Ok(tenant)) = (t.spec.gateway, t.name_any().parse::<TenantName>()) {
                add(GatewayScope::PerTenant { tenant }, convert::created(t));
            }
        }
        for row in self.rows(None) {
            let Some(w) = self.workload(&row.tenant, &row.name) else {
                continue;
            };
            let (tenant, deployment) = (row.tenant, row.name);
            match w.spec.gateway {
                GatewayMode::None => {}
                GatewayMode::Tenant => add(GatewayScope::PerTenant { tenant }, row.created_at),
                GatewayMode::Dedicated => add(
                    GatewayScope::PerDeployment { tenant, deployment },
                    row.created_at,
                ),
            }
        }
        out.into_values().collect()
    }

    fn has_tenant_gateway(&self, tenant: &TenantName) -> bool {
        self.tenant(tenant).is_some_and(|t| t.spec.gateway)
            || self
                .workloads_of(tenant)
                .any(|w| w.spec.gateway == GatewayMode::Tenant)
    }

    fn rules(&self, tenant: Option<&TenantName>) -> Vec<AllowRule> {
        let mut out = BTreeSet::new();
        for w in &self.workloads {
            let Ok(row) = deployment_row(w) else { continue };
            if tenant.is_some_and(|t| *t != row.tenant) {
                continue;
            }
            for a in &w.spec.allow_from {
                match convert::allow_rule(&row.tenant, &row.name, a) {
                    Ok(r) => {
                        out.insert(r);
                    }
                    Err(e) => tracing::warn!("skipped an allowFrom of {}: {e:#}", row.name),
                }
            }
        }
        out.into_iter().collect()
    }
}

async fn list<K>(api: Api<K>, kind: &str) -> Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(|e| crd_missing(e, kind))?
        .items)
}

/// A 404 on a list means the CRD is not installed.
fn crd_missing(e: palisade_operator::kube::Error, kind: &str) -> Error {
    let missing = matches!(&e, palisade_operator::kube::Error::Api(s) if s.code == 404);
    if missing {
        BackendError::CrdsMissing { kind: kind.into() }.into()
    } else {
        Error::failed(format!("cannot list {kind}"), e)
    }
}

fn workloads_api(c: &Client, tenant: &TenantName) -> Api<TenantDeployment> {
    Api::namespaced(c.clone(), &tenant.namespace())
}

/// Merge-patches `spec` of a workload, on the version read (a concurrent
/// change is a 409, not a lost update).
async fn patch_workload(c: &Client, w: &TenantDeployment, spec: Value) -> Result<()> {
    let tenant: TenantName = convert::tenant_of(w)?;
    let body = json!({"metadata": {"resourceVersion": w.resource_version()}, "spec": spec});
    workloads_api(c, &tenant)
        .patch(&w.name_any(), &PatchParams::default(), &Patch::Merge(&body))
        .await
        .with_context(|| format!("cannot update deployment {tenant}/{}", w.name_any()))?;
    Ok(())
}

async fn patch_tenant(c: &Client, t: &TenantCr, spec: Value) -> Result<()> {
    let body = json!({"metadata": {"resourceVersion": t.resource_version()}, "spec": spec});
    Api::<TenantCr>::all(c.clone())
        .patch(&t.name_any(), &PatchParams::default(), &Patch::Merge(&body))
        .await
        .with_context(|| format!("cannot update tenant {}", t.name_any()))?;
    Ok(())
}

/// A spec patch setting `allowFrom` (an empty list removes the field).
fn allow_from<T: serde::Serialize>(entries: &[T]) -> Value {
    if entries.is_empty() {
        json!({ "allowFrom": null })
    } else {
        json!({ "allowFrom": entries })
    }
}

/// The tenant's namespace, so its TenantDeployments can be created before
/// the operator first reconciles the tenant (which then adds its labels).
async fn ensure_namespace(c: &Client, t: &TenantName) -> Result<()> {
    let ns = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": t.namespace(), "labels": {"palisade.io/tenant": t.as_str()}}
    });
    Api::<palisade_operator::k8s_openapi::api::core::v1::Namespace>::all(c.clone())
        .patch(
            &t.namespace(),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&ns),
        )
        .await
        .with_context(|| format!("cannot create namespace {}", t.namespace()))?;
    Ok(())
}

/// Creates the Tenant (a 409 if it exists, which a read first reports
/// without a write) and its namespace.
async fn create_tenant(c: &Client, tenant: &Tenant) -> Result<()> {
    let api = Api::<TenantCr>::all(c.clone());
    let exists = api
        .get_opt(tenant.name.as_str())
        .await
        .with_context(|| format!("cannot read tenant {}", tenant.name))?;
    if exists.is_some() {
        return Err(StoreError::TenantExists(tenant.name.clone()).into());
    }
    let cr = TenantCr::new(tenant.name.as_str(), tenant_spec(tenant));
    api.create(&PostParams::default(), &cr)
        .await
        .map_err(|e| match e {
            palisade_operator::kube::Error::Api(s) if s.code == 409 => {
                StoreError::TenantExists(tenant.name.clone()).into()
            }
            e => Error::failed(format!("cannot create tenant {}", tenant.name), e),
        })?;
    ensure_namespace(c, &tenant.name).await
}

/// Checks a batch against the cluster before the first write: no name
/// twice, none taken. Returns the tenants to create.
fn plan_batch(state: &State, batch: &[NewDeployment]) -> Result<BTreeSet<TenantName>> {
    let mut seen = BTreeSet::new();
    let mut new_tenants = BTreeSet::new();
    for d in batch {
        if !seen.insert((d.tenant.clone(), d.name.clone())) {
            return Err(BackendError::DuplicateInBatch {
                tenant: d.tenant.clone(),
                name: d.name.clone(),
            }
            .into());
        }
        if let Some(w) = state.workload(&d.tenant, &d.name) {
            return Err(BackendError::DeploymentExists {
                tenant: d.tenant.clone(),
                name: d.name.clone(),
                subnet: w.status.as_ref().and_then(|s| s.subnet.clone()),
            }
            .into());
        }
        if state.tenant(&d.tenant).is_none() {
            new_tenants.insert(d.tenant.clone());
        }
    }
    Ok(new_tenants)
}

async fn create_batch(c: &Client, batch: &[NewDeployment]) -> Result<Vec<CreatedRow>> {
    let state = State::read(c).await?;
    let new_tenants = plan_batch(&state, batch)?;
    let mut done = Done::default();
    match write_batch(c, batch, &new_tenants, &mut done).await {
        Ok(()) => Ok(done.rows),
        Err(e) => {
            // All or nothing: take back what this batch created.
            undo(c, &done).await;
            Err(e)
        }
    }
}

/// What a batch has created so far.
#[derive(Default)]
struct Done {
    tenants: Vec<TenantName>,
    rows: Vec<CreatedRow>,
}

async fn write_batch(
    c: &Client,
    batch: &[NewDeployment],
    new_tenants: &BTreeSet<TenantName>,
    done: &mut Done,
) -> Result<()> {
    for t in new_tenants {
        create_tenant(c, &Tenant::with_defaults(t.clone(), crate::now())).await?;
        done.tenants.push(t.clone());
    }
    let tenants: BTreeSet<&TenantName> = batch.iter().map(|d| &d.tenant).collect();
    for t in tenants.into_iter().filter(|t| !new_tenants.contains(*t)) {
        ensure_namespace(c, t).await?;
    }
    for d in batch {
        let cr = TenantDeployment::new(d.name.as_str(), workload_spec(d));
        let w = workloads_api(c, &d.tenant)
            .create(&PostParams::default(), &cr)
            .await
            .with_context(|| format!("cannot create deployment {}/{}", d.tenant, d.name))?;
        let first_of_tenant = !done.rows.iter().any(|o| o.deployment.tenant == d.tenant);
        done.rows.push(CreatedRow {
            deployment: deployment_row(&w)?,
            tenant_created: new_tenants.contains(&d.tenant) && first_of_tenant,
        });
    }
    Ok(())
}

/// Best effort: deletes what a failed batch created.
async fn undo(c: &Client, done: &Done) {
    for row in &done.rows {
        let d = &row.deployment;
        let _ = workloads_api(c, &d.tenant)
            .delete(d.name.as_str(), &DeleteParams::default())
            .await;
    }
    for t in &done.tenants {
        let _ = Api::<TenantCr>::all(c.clone())
            .delete(t.as_str(), &DeleteParams::default())
            .await;
    }
}

/// The allow rules that name `name`, from it or to it.
fn rules_naming(state: &State, tenant: &TenantName, name: &DeploymentName) -> Vec<AllowRule> {
    state
        .rules(Some(tenant))
        .into_iter()
        .filter(|r| r.from == *name || r.to == *name)
        .collect()
}

async fn delete_workload(
    c: &Client,
    tenant: &TenantName,
    name: &DeploymentName,
) -> Result<Removal> {
    let state = State::read(c).await?;
    state.require_tenant(tenant)?;
    let w = state.require_workload(tenant, name)?;
    let subnet = w
        .status
        .as_ref()
        .and_then(|s| s.subnet.as_deref())
        .and_then(|s| s.parse().ok());
    let allow_rules = rules_naming(&state, tenant, name);
    // Siblings forget it first, so a later deployment of the same name
    // does not inherit its access.
    for sibling in state.workloads_of(tenant) {
        if sibling
            .spec
            .allow_from
            .iter()
            .any(|a| a.deployment == name.as_str())
        {
            let kept: Vec<&AllowFrom> = sibling
                .spec
                .allow_from
                .iter()
                .filter(|a| a.deployment != name.as_str())
                .collect();
            patch_workload(c, sibling, allow_from(&kept)).await?;
        }
    }
    let gateways = match w.spec.gateway {
        GatewayMode::Dedicated => vec![GatewayScope::PerDeployment {
            tenant: tenant.clone(),
            deployment: name.clone(),
        }],
        _ => Vec::new(),
    };
    workloads_api(c, tenant)
        .delete(name.as_str(), &DeleteParams::default())
        .await
        .with_context(|| format!("cannot delete deployment {tenant}/{name}"))?;
    Ok(Removal {
        deployments: vec![(tenant.clone(), name.clone(), subnet)],
        allow_rules,
        gateways,
    })
}

async fn delete_tenant(c: &Client, name: &TenantName, cascade: bool) -> Result<Removal> {
    let state = State::read(c).await?;
    state.require_tenant(name)?;
    let rows = state.rows(Some(name));
    let count = state.workloads_of(name).count();
    if count > 0 && !cascade {
        return Err(StoreError::TenantHasDeployments {
            tenant: name.clone(),
            count: count as u64,
        }
        .into());
    }
    let mut gateways: Vec<GatewayScope> = state
        .gateways()
        .into_iter()
        .map(|g| g.scope)
        .filter(|s| s.tenant() == Some(name))
        .collect();
    gateways.sort();
    Api::<TenantCr>::all(c.clone())
        .delete(name.as_str(), &DeleteParams::default())
        .await
        .with_context(|| format!("cannot delete tenant {name}"))?;
    Ok(Removal {
        deployments: rows
            .into_iter()
            .map(|d| (d.tenant, d.name, d.subnet))
            .collect(),
        allow_rules: state.rules(Some(name)),
        gateways,
    })
}

async fn create_gateway(c: &Client, scope: &GatewayScope) -> Result<()> {
    let state = State::read(c).await?;
    let exists = || StoreError::GatewayExists(scope.id()).into();
    match scope {
        GatewayScope::Central => match platform::central(state.platform.as_ref()) {
            Some(_) => Err(exists()),
            None => platform::set_central(c, state.platform.as_ref(), true).await,
        },
        GatewayScope::PerTenant { tenant } => {
            let t = state.require_tenant(tenant)?;
            if state.has_tenant_gateway(tenant) {
                return Err(exists());
            }
            patch_tenant(c, t, json!({"gateway": true})).await
        }
        GatewayScope::PerDeployment { tenant, deployment } => {
            state.require_tenant(tenant)?;
            let w = state.require_workload(tenant, deployment)?;
            match w.spec.gateway {
                GatewayMode::Dedicated => Err(exists()),
                GatewayMode::Tenant => {
                    // The workload asked for the tenant's gateway; the
                    // Tenant keeps it when the workload's mode changes.
                    patch_tenant(c, state.require_tenant(tenant)?, json!({"gateway": true}))
                        .await?;
                    patch_workload(c, w, json!({"gateway": "dedicated"})).await
                }
                GatewayMode::None => patch_workload(c, w, json!({"gateway": "dedicated"})).await,
            }
        }
    }
}

async fn delete_gateway(c: &Client, scope: &GatewayScope) -> Result<()> {
    let state = State::read(c).await?;
    let missing = || StoreError::GatewayNotFound(scope.id()).into();
    match scope {
        GatewayScope::Central => match platform::central(state.platform.as_ref()) {
            Some(_) => platform::set_central(c, state.platform.as_ref(), false).await,
            None => Err(missing()),
        },
        GatewayScope::PerTenant { tenant } => {
            if !state.has_tenant_gateway(tenant) {
                return Err(missing());
            }
            let t = state.require_tenant(tenant)?;
            if t.spec.gateway {
                patch_tenant(c, t, json!({"gateway": null})).await?;
            }
            for w in state.workloads_of(tenant) {
                if w.spec.gateway == GatewayMode::Tenant {
                    patch_workload(c, w, json!({"gateway": "none"})).await?;
                }
            }
            Ok(())
        }
        GatewayScope::PerDeployment { tenant, deployment } => {
            match state.workload(tenant, deployment) {
                Some(w) if w.spec.gateway == GatewayMode::Dedicated => {
                    patch_workload(c, w, json!({"gateway": "none"})).await
                }
                _ => Err(missing()),
            }
        }
    }
}

async fn allow(c: &Client, rule: &AllowRule) -> Result<()> {
    if rule.from == rule.to {
        return Err(StoreError::RuleToSelf(format!("{}/{}", rule.tenant, rule.from)).into());
    }
    let state = State::read(c).await?;
    state.require_workload(&rule.tenant, &rule.from)?;
    let to = state.require_workload(&rule.tenant, &rule.to)?;
    if state.rules(Some(&rule.tenant)).contains(rule) {
        return Err(StoreError::RuleExists(rule.to_string()).into());
    }
    let mut entries = to.spec.allow_from.clone();
    entries.push(AllowFrom {
        deployment: rule.from.to_string(),
        port: rule.port.map(palisade_core::Port::get),
    });
    patch_workload(c, to, allow_from(&entries)).await
}

async fn disallow(c: &Client, rule: &AllowRule) -> Result<()> {
    let state = State::read(c).await?;
    state.require_tenant(&rule.tenant)?;
    let not_found = || StoreError::RuleNotFound(rule.to_string());
    let to = state
        .workload(&rule.tenant, &rule.to)
        .ok_or_else(not_found)?;
    let kept: Vec<&AllowFrom> = to
        .spec
        .allow_from
        .iter()
        .filter(|a| convert::allow_rule(&rule.tenant, &rule.to, a).ok().as_ref() != Some(rule))
        .collect();
    if kept.len() == to.spec.allow_from.len() {
        return Err(not_found().into());
    }
    patch_workload(c, to, allow_from(&kept)).await
}

/// The pool in the operator's ConfigMap, with its quarantine.
async fn operator_pool(c: &Client) -> Result<Pool> {
    let cm: Api<palisade_operator::k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(c.clone(), OPERATOR_CONFIG.0);
    let data = cm
        .get_opt(OPERATOR_CONFIG.1)
        .await
        .context("cannot read the operator's ConfigMap")?
        .and_then(|c| c.data)
        .unwrap_or_default();
    let (ns, name) = OPERATOR_CONFIG;
    let cidr = data
        .get("PALISADE_POOL")
        .ok_or_else(|| BackendError::PoolUnknown {
            namespace: ns.into(),
            name: name.into(),
        })?;
    let cidr = Pool::parse_cidr(cidr)?;
    let len = data
        .get("PALISADE_PREFIX_LEN")
        .map_or("96", String::as_str)
        .parse()?;
    let reuse = data
        .get("PALISADE_REUSE_AFTER")
        .map_or("0s", String::as_str);
    let reuse = humantime::parse_duration(reuse)
        .with_context(|| format!("invalid PALISADE_REUSE_AFTER {reuse:?} in {ns}/{name}"))?;
    Ok(Pool::new(cidr, len, reuse)?)
}

async fn claims(c: &Client) -> Result<Vec<SubnetClaim>> {
    list(Api::<SubnetClaim>::all(c.clone()), "SubnetClaims").await
}

async fn snapshot(c: &Client) -> Result<Snapshot> {
    let pool = operator_pool(c).await?;
    let state = State::read(c).await?;
    let tenants = state
        .tenants
        .iter()
        .filter_map(|t| {
            tenant_row(t, 0)
                .inspect_err(|e| tracing::warn!("skipped: {e:#}"))
                .ok()
                .map(|r| r.tenant)
        })
        .collect();
    Ok(Snapshot {
        pool,
        tenants,
        deployments: state
            .rows(None)
            .iter()
            .filter_map(DeploymentRow::deployment)
            .collect(),
        gateways: state.gateways(),
        allow_rules: state.rules(None),
    })
}

impl Backend for Kube {
    fn deferred(&self) -> bool {
        true
    }

    fn tenant_usage(&mut self) -> Result<Vec<TenantUsage>> {
        let state = self.with(|c| async move { State::read(&c).await })?;
        let rows = state.rows(None);
        Ok(state
            .tenants
            .iter()
            .filter_map(|t| {
                tenant_row(t, 0)
                    .inspect_err(|e| tracing::warn!("skipped: {e:#}"))
                    .ok()
            })
            .map(|row| crate::usage_of(row.tenant, &rows))
            .collect())
    }

    fn object_counts(&mut self) -> Result<ObjectCounts> {
        let state = self.with(|c| async move { State::read(&c).await })?;
        Ok(ObjectCounts {
            tenants: state.tenants.len() as u64,
            deployments: state.rows(None).len() as u64,
            gateways: state.gateways().len() as u64,
            allow_rules: state.rules(None).len() as u64,
        })
    }

    fn history(&mut self, _limit: usize) -> Result<Result<Vec<Event>, NoHistory>> {
        Ok(Err(NoHistory(
            "the cluster keeps no history of allocations: its custom resources hold the \
             current state only (the SQLite store records each change)"
                .into(),
        )))
    }

    fn create_tenant(&mut self, tenant: &Tenant) -> Result<Option<u16>> {
        self.with(|c| async move { create_tenant(&c, tenant).await })?;
        // The operator assigns the egress-proxy port.
        Ok(None)
    }

    fn delete_tenant(&mut self, name: &TenantName, cascade: bool) -> Result<Removal> {
        self.with(|c| async move { delete_tenant(&c, name, cascade).await })
    }

    fn tenants(&mut self) -> Result<Vec<TenantRow>> {
        let state = self.with(|c| async move { State::read(&c).await })?;
        Ok(state
            .tenants
            .iter()
            .filter_map(|t| {
                let name = t.name_any().parse::<TenantName>().ok()?;
                tenant_row(t, state.workloads_of(&name).count())
                    .inspect_err(|e| tracing::warn!("skipped: {e:#}"))
                    .ok()
            })
            .collect())
    }

    fn tenant(&mut self, name: &TenantName) -> Result<TenantRow> {
        let state = self.with(|c| async move { State::read(&c).await })?;
        let t = state.require_tenant(name)?;
        tenant_row(t, state.workloads_of(name).count())
    }

    fn tenant_page(&mut self, name: &TenantName) -> Result<TenantPage> {
        // One read of the cluster, not one per part.
        let state = self.with(|c| async move { State::read(&c).await })?;
        let t = state.require_tenant(name)?;
        Ok(TenantPage {
            tenant: tenant_row(t, state.workloads_of(name).count())?,
            deployments: state.rows(Some(name)),
            gateways: state.gateways(),
            allow_rules: state.rules(Some(name)),
        })
    }

    fn create_deployments(&mut self, batch: &[NewDeployment]) -> Result<Vec<CreatedRow>> {
        self.with(|c| async move { create_batch(&c, batch).await })
    }

    fn delete_deployment(&mut self, tenant: &TenantName, name: &DeploymentName) -> Result<Removal> {
        self.with(|c| async move { delete_workload(&c, tenant, name).await })
    }

    fn deployments(&mut self, tenant: Option<&TenantName>) -> Result<Vec<DeploymentRow>> {
        let state = self.with(|c| async move { State::read(&c).await })?;
        if let Some(t) = tenant {
            state.require_tenant(t)?;
        }
        Ok(state.rows(tenant))
    }

    fn create_gateway(&mut self, scope: &GatewayScope) -> Result<()> {
        self.with(|c| async move { create_gateway(&c, scope).await })
    }

    fn delete_gateway(&mut self, scope: &GatewayScope) -> Result<()> {
        self.with(|c| async move { delete_gateway(&c, scope).await })
    }

    fn gateways(&mut self) -> Result<Vec<Gateway>> {
        let state = self.with(|c| async move { State::read(&c).await })?;
        Ok(state.gateways())
    }

    fn allow(&mut self, rule: &AllowRule) -> Result<()> {
        self.with(|c| async move { allow(&c, rule).await })
    }

    fn disallow(&mut self, rule: &AllowRule) -> Result<()> {
        self.with(|c| async move { disallow(&c, rule).await })
    }

    fn allow_rules(&mut self, tenant: Option<&TenantName>) -> Result<Vec<AllowRule>> {
        let state = self.with(|c| async move { State::read(&c).await })?;
        if let Some(t) = tenant {
            state.require_tenant(t)?;
        }
        Ok(state.rules(tenant))
    }

    fn usage(&mut self) -> Result<(Pool, PoolUsage)> {
        self.with(|c| async move {
            let claims = claims(&c).await?;
            let pool = operator_pool(&c).await?;
            let usage = check::usage(&pool, &claims);
            Ok((pool, usage))
        })
    }

    fn check(&mut self) -> Result<Health> {
        self.with(|c| async move { check::run(&c).await })
    }

    fn snapshot(&mut self) -> Result<Snapshot> {
        self.with(|c| async move { snapshot(&c).await })
    }

    fn domain_rules(&mut self) -> Result<BTreeMap<TenantName, DomainRules>> {
        let state = self.with(|c| async move { State::read(&c).await })?;
        Ok(state
            .tenants
            .iter()
            .filter_map(|t| {
                let name = t.name_any().parse().ok()?;
                let e = &t.spec.egress;
                let rules = DomainRules {
                    allow: e.allowed_domains.clone(),
                    deny: e.denied_domains.clone(),
                };
                Some((name, rules))
            })
            .collect())
    }
}
