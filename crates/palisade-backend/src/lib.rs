//! One model over two stores. Every CLI verb's handler (the CLI's
//! `store_cmds.rs`) and the dashboard parse their input through the core
//! model, make one call on a [`Backend`] and show what comes back. The
//! SQLite store ([`Sqlite`]) and the cluster's custom resources
//! ([`kube::Kube`]) both implement it and return the same rows, so
//! `--store kubernetes` cannot drift into a second, smaller product: a
//! verb exists once, with one parser and one printer.
//!
//! The trait is synchronous: the cluster implementation owns a
//! current-thread runtime and blocks on each call, which keeps the
//! handlers and the SQLite path free of async; an async caller (the
//! dashboard) goes through [`BackendThread`].

mod error;
pub mod kube;
mod thread;

pub use error::{BackendError, Error, Result};
pub use thread::BackendThread;

use ipnet::Ipv6Net;
use palisade_core::allocator::{PoolUsage, Timestamp};
use palisade_core::{
    AllowRule, Deployment, DeploymentName, Gateway, GatewayScope, Image, Labels, Pool, Port,
    Replicas, Snapshot, Tenant, TenantName, WorkloadSpec,
};
use palisade_proxy::compile::DomainRules;
use palisade_store::{Event, NewDeployment, ObjectCounts, Removed, Store, StoreError, TenantUsage};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in the store's seconds.
pub fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// Where state lives, as the verbs need it. Inputs are already parsed by
/// the model: an implementation only checks what needs the stored state
/// (existence, uniqueness) and refuses with the store's one-line errors.
pub trait Backend {
    /// Whether changes finish later, when the operator reconciles (the
    /// cluster), rather than when the call returns (SQLite).
    fn deferred(&self) -> bool;
    /// Creates a tenant; the egress-proxy port it got, if assigned now.
    fn create_tenant(&mut self, tenant: &Tenant) -> Result<Option<u16>>;
    /// Deletes a tenant (with `cascade`, its deployments, rules, gateways).
    fn delete_tenant(&mut self, name: &TenantName, cascade: bool) -> Result<Removal>;
    /// Every tenant, by name.
    fn tenants(&mut self) -> Result<Vec<TenantRow>>;
    /// One tenant.
    fn tenant(&mut self, name: &TenantName) -> Result<TenantRow>;
    /// Creates deployments (and tenants on first use): all or nothing.
    fn create_deployments(&mut self, batch: &[NewDeployment]) -> Result<Vec<CreatedRow>>;
    /// Deletes a deployment with the rules and gateway that named it.
    fn delete_deployment(&mut self, tenant: &TenantName, name: &DeploymentName) -> Result<Removal>;
    /// Deployments by tenant and name; of one tenant if given.
    fn deployments(&mut self, tenant: Option<&TenantName>) -> Result<Vec<DeploymentRow>>;
    /// Adds the gateway of `scope`.
    fn create_gateway(&mut self, scope: &GatewayScope) -> Result<()>;
    /// Removes the gateway of `scope`.
    fn delete_gateway(&mut self, scope: &GatewayScope) -> Result<()>;
    /// Every gateway, by id.
    fn gateways(&mut self) -> Result<Vec<Gateway>>;
    /// Adds an allow rule.
    fn allow(&mut self, rule: &AllowRule) -> Result<()>;
    /// Removes an allow rule.
    fn disallow(&mut self, rule: &AllowRule) -> Result<()>;
    /// Allow rules by tenant, from, to, port; of one tenant if given.
    fn allow_rules(&mut self, tenant: Option<&TenantName>) -> Result<Vec<AllowRule>>;
    /// The pool and how it is used.
    fn usage(&mut self) -> Result<(Pool, PoolUsage)>;
    /// Integrity: every problem found, and the counts when there is none.
    fn check(&mut self) -> Result<Health>;
    /// Everything, for the compilers (render, proxy-config).
    fn snapshot(&mut self) -> Result<Snapshot>;
    /// Each tenant's egress-proxy destination domain rules, which the
    /// model does not hold (none on SQLite).
    fn domain_rules(&mut self) -> Result<BTreeMap<TenantName, DomainRules>>;

    /// Every tenant, by name, with its deployment count (pending ones
    /// too) and their replicas.
    fn tenant_usage(&mut self) -> Result<Vec<TenantUsage>> {
        let deployments = self.deployments(None)?;
        Ok(self
            .tenants()?
            .into_iter()
            .map(|row| usage_of(row.tenant, &deployments))
            .collect())
    }

    /// One tenant's part of the state: it, its deployments that have a
    /// subnet, its rules, its gateways and the central one. The
    /// isolation verdicts between its deployments are those of the whole.
    fn tenant_snapshot(&mut self, name: &TenantName) -> Result<Snapshot> {
        let all = self.snapshot()?;
        if all.tenant(name).is_none() {
            return Err(StoreError::TenantNotFound(name.clone()).into());
        }
        Ok(scope_snapshot(all, name))
    }

    /// What a tenant's page shows, read together.
    fn tenant_page(&mut self, name: &TenantName) -> Result<TenantPage> {
        Ok(TenantPage {
            tenant: self.tenant(name)?,
            deployments: self.deployments(Some(name))?,
            gateways: self.gateways()?,
            allow_rules: self.allow_rules(Some(name))?,
        })
    }

    /// How many objects of each kind there are (pending deployments too).
    fn object_counts(&mut self) -> Result<ObjectCounts> {
        Ok(ObjectCounts {
            tenants: self.tenants()?.len() as u64,
            deployments: self.deployments(None)?.len() as u64,
            gateways: self.gateways()?.len() as u64,
            allow_rules: self.allow_rules(None)?.len() as u64,
        })
    }

    /// The last `limit` changes, oldest first; `Err(reason)` inside when
    /// this store keeps no history.
    fn history(&mut self, limit: usize) -> Result<Result<Vec<Event>, NoHistory>> {
        let _ = limit;
        Ok(Err(NoHistory(
            "this store keeps no history of changes".into(),
        )))
    }
}

/// One tenant with its deployments (pending ones too), every gateway and
/// its allow rules.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantPage {
    /// The tenant.
    pub tenant: TenantRow,
    /// Its deployments, by name.
    pub deployments: Vec<DeploymentRow>,
    /// Every gateway (the page picks those fronting the tenant).
    pub gateways: Vec<Gateway>,
    /// Its allow rules.
    pub allow_rules: Vec<AllowRule>,
}

/// Why a store cannot answer [`Backend::history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoHistory(pub String);

/// `tenant`'s totals over `deployments` (of every tenant).
pub fn usage_of(tenant: Tenant, deployments: &[DeploymentRow]) -> TenantUsage {
    let mine = deployments.iter().filter(|d| d.tenant == tenant.name);
    let (count, replicas) = mine.fold((0, 0), |(n, r), d| (n + 1, r + u64::from(d.replicas.get())));
    TenantUsage {
        tenant,
        deployments: count,
        replicas,
    }
}

/// The part of `all` that concerns `name`, as the SQLite store's
/// `tenant_snapshot` cuts it.
pub fn scope_snapshot(all: Snapshot, name: &TenantName) -> Snapshot {
    Snapshot {
        pool: all.pool,
        tenants: all
            .tenants
            .into_iter()
            .filter(|t| t.name == *name)
            .collect(),
        deployments: all
            .deployments
            .into_iter()
            .filter(|d| d.tenant == *name)
            .collect(),
        gateways: all
            .gateways
            .into_iter()
            .filter(|g| matches!(g.scope, GatewayScope::Central) || g.scope.tenant() == Some(name))
            .collect(),
        allow_rules: all
            .allow_rules
            .into_iter()
            .filter(|r| r.tenant == *name)
            .collect(),
    }
}

/// One row of `list` (and of `create -o json`, `tenant show`): the stored
/// deployment, plus what only the cluster knows. Fields in the order of
/// the core `Deployment` this output was first printed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentRow {
    /// Owning tenant.
    pub tenant: TenantName,
    /// Unique within the tenant.
    pub name: DeploymentName,
    /// What the pods run.
    pub image: Image,
    /// How many pods.
    pub replicas: Replicas,
    /// Ports, sorted and distinct.
    pub ports: Vec<Port>,
    /// None while the operator has not allocated it yet.
    pub subnet: Option<Ipv6Net>,
    /// User labels.
    pub labels: Labels,
    /// Environment, command, scratch directories and security profile.
    #[serde(flatten)]
    pub workload: WorkloadSpec,
    /// When the deployment was created.
    pub created_at: Timestamp,
    /// The operator's report (the cluster only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// What the operator reports about a deployment or tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// The `Ready` condition's status: `True`, `False` or `Unknown`.
    pub ready: String,
    /// Pods ready (deployments only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
}

impl From<Deployment> for DeploymentRow {
    fn from(d: Deployment) -> Self {
        Self {
            tenant: d.tenant,
            name: d.name,
            image: d.image,
            replicas: d.replicas,
            ports: d.ports,
            subnet: Some(d.subnet),
            labels: d.labels,
            workload: d.workload,
            created_at: d.created_at,
            rollout: None,
        }
    }
}

impl DeploymentRow {
    /// The core deployment, once it has a subnet.
    pub fn deployment(&self) -> Option<Deployment> {
        Some(Deployment {
            tenant: self.tenant.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            replicas: self.replicas,
            ports: self.ports.clone(),
            subnet: self.subnet?,
            labels: self.labels.clone(),
            workload: self.workload.clone(),
            created_at: self.created_at,
        })
    }
}

/// One row of `tenant list`: the stored tenant, its deployment count (for
/// the table) and what only the cluster knows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantRow {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: Tenant,
    /// How many deployments it has.
    #[serde(skip)]
    pub deployments: usize,
    /// The operator's report (the cluster only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// What creating one deployment did.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedRow {
    /// The new deployment (its subnet pending on the cluster).
    pub deployment: DeploymentRow,
    /// Whether its tenant was created on first use.
    pub tenant_created: bool,
}

/// What a delete removed (or, on the cluster, what the operator removes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removal {
    /// Deployments with their subnet (none if never allocated).
    pub deployments: Vec<(TenantName, DeploymentName, Option<Ipv6Net>)>,
    /// Allow rules that named a removed deployment.
    pub allow_rules: Vec<AllowRule>,
    /// Gateways that went with it.
    pub gateways: Vec<GatewayScope>,
}

impl From<Removed> for Removal {
    fn from(r: Removed) -> Self {
        Self {
            deployments: r
                .deployments
                .into_iter()
                .map(|d| (d.tenant, d.name, Some(d.subnet)))
                .collect(),
            allow_rules: r.allow_rules,
            gateways: r.gateways,
        }
    }
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Each problem, for a person; empty when sound.
    pub problems: Vec<String>,
    /// Tenants counted and the pool's use, when sound.
    pub summary: Option<(usize, PoolUsage)>,
    /// What was checked (a file, a cluster).
    pub place: String,
}

/// How [`Sqlite`] opens its store, when first needed.
type Opener<'a> = Box<dyn FnMut() -> Result<Store> + Send + 'a>;

/// What an opener may fail with (the caller's own errors, kept as they are).
type OpenError = Box<dyn std::error::Error + Send + Sync>;

/// The SQLite store, opened on first use, so a handler's parse errors come
/// before any file is touched.
pub struct Sqlite<'a> {
    open: Opener<'a>,
    store: Option<Store>,
}

impl std::fmt::Debug for Sqlite<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite")
            .field("open", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Sqlite<'a> {
    /// The store `open` opens, on first use (its error comes then, as
    /// [`Error::Other`]).
    pub fn new<E: Into<OpenError>>(
        mut open: impl FnMut() -> std::result::Result<Store, E> + Send + 'a,
    ) -> Self {
        Self {
            open: Box::new(move || open().map_err(Error::other)),
            store: None,
        }
    }

    /// The store at `path`.
    pub fn at(path: std::path::PathBuf) -> Sqlite<'static> {
        Sqlite {
            open: Box::new(move || Ok(Store::open(&path)?)),
            store: None,
        }
    }

    fn store(&mut self) -> Result<&mut Store> {
        if self.store.is_none() {
            self.store = Some((self.open)()?);
        }
        self.store
            .as_mut()
            .ok_or_else(|| Error::other("the state database is not open"))
    }
}

impl Backend for Sqlite<'_> {
    fn deferred(&self) -> bool {
        false
    }

    fn create_tenant(&mut self, tenant: &Tenant) -> Result<Option<u16>> {
        Ok(Some(self.store()?.create_tenant(tenant)?))
    }

    fn delete_tenant(&mut self, name: &TenantName, cascade: bool) -> Result<Removal> {
        Ok(self.store()?.delete_tenant(name, cascade, now())?.into())
    }

    fn tenants(&mut self) -> Result<Vec<TenantRow>> {
        let snapshot = self.store()?.snapshot()?;
        Ok(snapshot
            .tenants
            .iter()
            .map(|t| TenantRow {
                deployments: snapshot.deployments_of(&t.name).count(),
                tenant: t.clone(),
                rollout: None,
            })
            .collect())
    }

    fn tenant(&mut self, name: &TenantName) -> Result<TenantRow> {
        let store = self.store()?;
        let tenant = store.tenant(name)?;
        let deployments = store.deployments(Some(name))?.len();
        Ok(TenantRow {
            tenant,
            deployments,
            rollout: None,
        })
    }

    fn create_deployments(&mut self, batch: &[NewDeployment]) -> Result<Vec<CreatedRow>> {
        let created = self.store()?.create_deployments(batch, now())?;
        Ok(created
            .into_iter()
            .map(|c| CreatedRow {
                deployment: c.deployment.into(),
                tenant_created: c.tenant_created,
            })
            .collect())
    }

    fn delete_deployment(&mut self, tenant: &TenantName, name: &DeploymentName) -> Result<Removal> {
        Ok(self.store()?.delete_deployment(tenant, name, now())?.into())
    }

    fn deployments(&mut self, tenant: Option<&TenantName>) -> Result<Vec<DeploymentRow>> {
        let rows = self.store()?.deployments(tenant)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    fn create_gateway(&mut self, scope: &GatewayScope) -> Result<()> {
        self.store()?.create_gateway(scope, now())?;
        Ok(())
    }

    fn delete_gateway(&mut self, scope: &GatewayScope) -> Result<()> {
        Ok(self.store()?.delete_gateway(scope, now())?)
    }

    fn gateways(&mut self) -> Result<Vec<Gateway>> {
        Ok(self.store()?.gateways()?)
    }

    fn allow(&mut self, rule: &AllowRule) -> Result<()> {
        Ok(self.store()?.allow(rule, now())?)
    }

    fn disallow(&mut self, rule: &AllowRule) -> Result<()> {
        Ok(self.store()?.disallow(rule, now())?)
    }

    fn allow_rules(&mut self, tenant: Option<&TenantName>) -> Result<Vec<AllowRule>> {
        Ok(self.store()?.allow_rules(tenant)?)
    }

    fn usage(&mut self) -> Result<(Pool, PoolUsage)> {
        let store = self.store()?;
        Ok((store.pool()?, store.usage(now())?))
    }

    fn check(&mut self) -> Result<Health> {
        let store = self.store()?;
        let problems: Vec<String> = store.check()?.into_iter().map(|p| p.0).collect();
        let summary = if problems.is_empty() {
            Some((store.tenants()?.len(), store.usage(now())?))
        } else {
            None
        };
        Ok(Health {
            problems,
            summary,
            place: store.path().display().to_string(),
        })
    }

    fn snapshot(&mut self) -> Result<Snapshot> {
        Ok(self.store()?.snapshot()?)
    }

    fn domain_rules(&mut self) -> Result<BTreeMap<TenantName, DomainRules>> {
        Ok(BTreeMap::new())
    }

    fn tenant_usage(&mut self) -> Result<Vec<TenantUsage>> {
        Ok(self.store()?.tenant_usage()?)
    }

    fn tenant_snapshot(&mut self, name: &TenantName) -> Result<Snapshot> {
        Ok(self.store()?.tenant_snapshot(name)?)
    }

    fn tenant_page(&mut self, name: &TenantName) -> Result<TenantPage> {
        // One transaction: the tenant's part of the state holds all of it.
        let part = self.store()?.tenant_snapshot(name)?;
        let tenant = part
            .tenants
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::TenantNotFound(name.clone()))?;
        Ok(TenantPage {
            tenant: TenantRow {
                tenant,
                deployments: part.deployments.len(),
                rollout: None,
            },
            deployments: part.deployments.into_iter().map(Into::into).collect(),
            gateways: part.gateways,
            allow_rules: part.allow_rules,
        })
    }

    fn object_counts(&mut self) -> Result<ObjectCounts> {
        Ok(self.store()?.object_counts()?)
    }

    fn history(&mut self, limit: usize) -> Result<Result<Vec<Event>, NoHistory>> {
        Ok(Ok(self.store()?.history(limit)?))
    }
}
