//! Palisade's embedded state: SQLite in WAL mode.
//!
//! This replaces the seed's ConfigMap edited with jq. Every mutation is one
//! `BEGIN IMMEDIATE` transaction, so concurrent `palisade` processes queue
//! on SQLite's write lock instead of racing on a read-modify-write, and a
//! process killed at any instant leaves either the old state or the new one.
//!
//! Allocation decisions are not made here: the store implements the core's
//! [`Ledger`](palisade_core::Ledger) over its tables and calls
//! [`palisade_core::allocator::allocate`], the same function the in-memory
//! allocator uses.

#![forbid(unsafe_code)]

mod check;
mod error;
mod ledger;
mod queries;
mod rows;
mod schema;

pub use check::Problem;
pub use error::StoreError;
pub use queries::{ObjectCounts, TenantUsage};
pub use schema::VERSION as SCHEMA_VERSION;

use ledger::{Counters, SqlLedger, subnet_blob};
use palisade_core::allocator::{self, PoolUsage, Timestamp};
use palisade_core::{
    AllowRule, Deployment, DeploymentName, Gateway, GatewayScope, Image, Labels, Pool, Port,
    Replicas, Snapshot, Tenant, TenantName, WorkloadSpec,
};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior, params};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long a writer waits for another process's transaction to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the state lives when `--state` is not given: `$PALISADE_STATE`, else
/// `$XDG_STATE_HOME/palisade/state.db`, else
/// `~/.local/state/palisade/state.db`. `env` looks up a variable (the
/// process environment in production, a map in tests).
pub fn default_path(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(p) = set("PALISADE_STATE") {
        return Some(PathBuf::from(p));
    }
    if let Some(dir) = set("XDG_STATE_HOME") {
        return Some(PathBuf::from(dir).join("palisade").join("state.db"));
    }
    set("HOME").map(|home| {
        PathBuf::from(home)
            .join(".local")
            .join("state")
            .join("palisade")
            .join("state.db")
    })
}

/// A deployment to create: everything but its subnet and creation time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewDeployment {
    /// Owning tenant; created with default quotas if it does not exist.
    pub tenant: TenantName,
    /// Unique within the tenant.
    #[serde(alias = "deployment")]
    pub name: DeploymentName,
    /// What the pods run.
    pub image: Image,
    /// How many pods.
    #[serde(default)]
    pub replicas: Replicas,
    /// Ports served; empty means port 80.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// User labels.
    #[serde(default)]
    pub labels: Labels,
    /// Environment, command, scratch directories and security profile, as
    /// top-level keys (`env`, `command`, `args`, `scratch`, `security`).
    #[serde(flatten)]
    pub workload: WorkloadSpec,
}

/// What a `create` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The new deployment, with its subnet.
    pub deployment: Deployment,
    /// Whether its tenant was created on first use.
    pub tenant_created: bool,
}

/// What deleting a deployment removed besides it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removed {
    /// Deployments removed (their subnets are now recycled or quarantined).
    pub deployments: Vec<Deployment>,
    /// Allow rules that named a removed deployment.
    pub allow_rules: Vec<AllowRule>,
    /// Gateways that fronted only removed deployments.
    pub gateways: Vec<GatewayScope>,
}

/// An open state database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens an existing store. A missing file is
    /// [`StoreError::NotInitialised`]; nothing is created.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(StoreError::NotInitialised {
                path: path.to_owned(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Self::configure(conn, path)
    }

    /// Opens a store, creating the file and its directory if needed.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        Self::configure(conn, path)
    }

    fn configure(mut conn: Connection, path: &Path) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers never block the writer. synchronous=FULL: a reported
        // `create` survives power loss, not only a killed process.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // 64 MiB of page cache (allocated only as used): bulk imports into a
        // store of millions of rows otherwise thrash the default 2 MiB.
        conn.pragma_update(None, "cache_size", -65536)?;
        schema::migrate(&mut conn, path)?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// Where this store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one immediate transaction, committing only on success.
    fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>, &Path) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx, &self.path)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in one read transaction: a consistent view across queries.
    fn read<T>(&mut self, f: impl FnOnce(&Transaction<'_>, &Path) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        f(&tx, &self.path)
    }

    /// Sets up the pool. Fails if one exists, unless `force` and no
    /// deployment holds a subnet.
    pub fn init(&mut self, pool: &Pool, force: bool, now: Timestamp) -> Result<()> {
        self.write(|tx, path| {
            if let Some(existing) = rows::load_pool(tx)? {
                if !force {
                    return Err(StoreError::AlreadyInitialised {
                        path: path.to_owned(),
                        pool: existing.cidr().to_string(),
                    });
                }
                let count: u64 = tx.query_row("SELECT count(*) FROM deployments", [], |r| r.get(0))?;
                if count > 0 {
                    return Err(StoreError::PoolInUse {
                        pool: existing.cidr().to_string(),
                        count,
                    });
                }
                tx.execute_batch("DELETE FROM recycled; DELETE FROM quarantine; DELETE FROM pool;")?;
            }
            tx.execute(
                "INSERT INTO pool (id, cidr, subnet_len, reuse_after_secs, high_water, allocated, recycled, quarantined, created_at)
                 VALUES (1, ?1, ?2, ?3, ?4, 0, 0, 0, ?5)",
                params![
                    pool.cidr().to_string(),
                    pool.subnet_len().get(),
                    pool.reuse_after().as_secs(),
                    0u128.to_be_bytes().as_slice(),
                    now.0
                ],
            )?;
            rows::record(tx, now, "init", None, None, Some(&pool.cidr().to_string()))?;
            Ok(())
        })
    }

    /// The pool, or [`StoreError::NotInitialised`].
    pub fn pool(&mut self) -> Result<Pool> {
        self.read(require_pool)
    }

    /// Exact pool counts, from the counters (no scan).
    pub fn usage(&mut self, now: Timestamp) -> Result<PoolUsage> {
        self.read(|tx, path| {
            let pool = require_pool(tx, path)?;
            let c = Counters::load(tx)?.ok_or_else(|| not_initialised(path))?;
            // Quarantined subnets whose time has come count as recycled:
            // the next allocation will promote them.
            let due: u64 = if c.quarantined == 0 {
                0
            } else {
                tx.prepare_cached("SELECT count(*) FROM quarantine WHERE available_at <= ?1")?
                    .query_row([now.0], |r| r.get(0))?
            };
            Ok(PoolUsage::new(
                &pool,
                c.high_water,
                u128::from(c.recycled + due),
                u128::from(c.quarantined - due.min(c.quarantined)),
            ))
        })
    }

    /// Creates a tenant explicitly. Returns the egress-proxy port it was given (`tenant.proxy_port` is
    /// ignored).
    pub fn create_tenant(&mut self, tenant: &Tenant) -> Result<u16> {
        self.write(|tx, path| {
            require_pool(tx, path)?;
            if rows::tenant_exists(tx, &tenant.name)? {
                return Err(StoreError::TenantExists(tenant.name.clone()));
            }
            let port = rows::insert_tenant(tx, tenant)?;
            rows::record(
                tx,
                tenant.created_at,
                "create-tenant",
                Some(tenant.name.as_str()),
                None,
                None,
            )?;
            Ok(port)
        })
    }

    /// Deletes a tenant; with `cascade`, its deployments, rules and gateways
    /// first (their subnets are released).
    pub fn delete_tenant(
        &mut self,
        name: &TenantName,
        cascade: bool,
        now: Timestamp,
    ) -> Result<Removed> {
        self.write(|tx, path| {
            let pool = require_pool(tx, path)?;
            if !rows::tenant_exists(tx, name)? {
                return Err(StoreError::TenantNotFound(name.clone()));
            }
            let deployments = rows::deployments(tx, Some(name))?;
            if !deployments.is_empty() && !cascade {
                return Err(StoreError::TenantHasDeployments {
                    tenant: name.clone(),
                    count: deployments.len() as u64,
                });
            }
            let mut removed = Removed::default();
            for d in deployments {
                let r = delete_deployment_in(tx, &pool, &d.tenant, &d.name, now)?;
                removed.deployments.extend(r.deployments);
                removed.allow_rules.extend(r.allow_rules);
                removed.gateways.extend(r.gateways);
            }
            let scope = GatewayScope::PerTenant {
                tenant: name.clone(),
            };
            if tx.execute("DELETE FROM gateways WHERE name = ?1", [scope.id()])? > 0 {
                removed.gateways.push(scope);
            }
            tx.execute("DELETE FROM tenants WHERE name = ?1", [name.as_str()])?;
            rows::record(tx, now, "delete-tenant", Some(name.as_str()), None, None)?;
            Ok(removed)
        })
    }

    /// All tenants, by name.
    pub fn tenants(&mut self) -> Result<Vec<Tenant>> {
        self.read(|tx, path| {
            require_pool(tx, path)?;
            rows::tenants(tx)
        })
    }

    /// One tenant.
    pub fn tenant(&mut self, name: &TenantName) -> Result<Tenant> {
        self.read(|tx, path| {
            require_pool(tx, path)?;
            rows::tenant(tx, name)?.ok_or_else(|| StoreError::TenantNotFound(name.clone()))
        })
    }

    /// Creates a deployment and allocates its subnet, creating its tenant
    /// with default quotas on first use (as the seed does).
    pub fn create_deployment(&mut self, new: &NewDeployment, now: Timestamp) -> Result<Created> {
        let mut created = self.create_deployments(std::slice::from_ref(new), now)?;
        created
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no deployment created".into()))
    }

    /// Creates many deployments in one transaction: all or none. The bulk
    /// path behind `palisade import`.
    pub fn create_deployments(
        &mut self,
        batch: &[NewDeployment],
        now: Timestamp,
    ) -> Result<Vec<Created>> {
        self.write(|tx, path| {
            let pool = require_pool(tx, path)?;
            let counters = Counters::load(tx)?.ok_or_else(|| not_initialised(path))?;
            let mut ledger = SqlLedger {
                tx,
                pool: &pool,
                counters,
            };
            let mut out = Vec::with_capacity(batch.len());
            let mut known_tenants = std::collections::HashSet::new();
            for new in batch {
                let tenant_created = if known_tenants.contains(&new.tenant)
                    || rows::tenant_exists(tx, &new.tenant)?
                {
                    false
                } else {
                    rows::insert_tenant(tx, &Tenant::with_defaults(new.tenant.clone(), now))?;
                    true
                };
                known_tenants.insert(new.tenant.clone());
                if rows::deployment_exists(tx, &new.tenant, &new.name)? {
                    let subnet = rows::deployment(tx, &new.tenant, &new.name)?
                        .map_or_else(String::new, |d| d.subnet.to_string());
                    return Err(StoreError::DeploymentExists {
                        tenant: new.tenant.clone(),
                        name: new.name.clone(),
                        subnet,
                    });
                }
                let Some(index) = allocator::allocate(&pool, &mut ledger, now)? else {
                    return Err(StoreError::PoolExhausted {
                        pool: pool.cidr().to_string(),
                        capacity: pool.capacity(),
                        len: pool.subnet_len().get(),
                    });
                };
                let mut ports = new.ports.clone();
                if ports.is_empty() {
                    ports.push(Port::HTTP);
                }
                ports.sort();
                ports.dedup();
                let deployment = Deployment {
                    tenant: new.tenant.clone(),
                    name: new.name.clone(),
                    image: new.image.clone(),
                    replicas: new.replicas,
                    ports,
                    subnet: pool.subnet(index),
                    labels: new.labels.clone(),
                    workload: new.workload.clone(),
                    created_at: now,
                };
                rows::insert_deployment(tx, &deployment, &subnet_blob(&pool, index))?;
                ledger.counters.allocated += 1;
                rows::record(
                    tx,
                    now,
                    "create",
                    Some(deployment.tenant.as_str()),
                    Some(deployment.name.as_str()),
                    Some(&deployment.subnet.to_string()),
                )?;
                out.push(Created {
                    deployment,
                    tenant_created,
                });
            }
            ledger.counters.save(tx)?;
            Ok(out)
        })
    }

    /// Deletes a deployment and releases its subnet for recycling, with the
    /// allow rules and per-deployment gateway that named it.
    pub fn delete_deployment(
        &mut self,
        tenant: &TenantName,
        name: &DeploymentName,
        now: Timestamp,
    ) -> Result<Removed> {
        self.write(|tx, path| {
            let pool = require_pool(tx, path)?;
            if !rows::tenant_exists(tx, tenant)? {
                return Err(StoreError::TenantNotFound(tenant.clone()));
            }
            delete_deployment_in(tx, &pool, tenant, name, now)
        })
    }

    /// Deployments, by tenant and name; of one tenant if given.
    pub fn deployments(&mut self, tenant: Option<&TenantName>) -> Result<Vec<Deployment>> {
        self.read(|tx, path| {
            require_pool(tx, path)?;
            if let Some(t) = tenant {
                require_tenant(tx, t)?;
            }
            rows::deployments(tx, tenant)
        })
    }

    /// Adds a gateway for `scope`; its tenant and deployment must exist.
    pub fn create_gateway(&mut self, scope: &GatewayScope, now: Timestamp) -> Result<Gateway> {
        self.write(|tx, path| {
            require_pool(tx, path)?;
            match scope {
                GatewayScope::Central => {}
                GatewayScope::PerTenant { tenant } => require_tenant(tx, tenant)?,
                GatewayScope::PerDeployment { tenant, deployment } => {
                    require_deployment(tx, tenant, deployment)?;
                }
            }
            if rows::gateway_exists(tx, scope)? {
                return Err(StoreError::GatewayExists(scope.id()));
            }
            let gateway = Gateway {
                scope: scope.clone(),
                created_at: now,
            };
            rows::insert_gateway(tx, &gateway)?;
            rows::record(
                tx,
                now,
                "create-gateway",
                scope.tenant().map(TenantName::as_str),
                None,
                None,
            )?;
            Ok(gateway)
        })
    }

    /// Removes the gateway of `scope`.
    pub fn delete_gateway(&mut self, scope: &GatewayScope, now: Timestamp) -> Result<()> {
        self.write(|tx, path| {
            require_pool(tx, path)?;
            if tx.execute("DELETE FROM gateways WHERE name = ?1", [scope.id()])? == 0 {
                return Err(StoreError::GatewayNotFound(scope.id()));
            }
            rows::record(
                tx,
                now,
                "delete-gateway",
                scope.tenant().map(TenantName::as_str),
                None,
                None,
            )
        })
    }

    /// All gateways, by id.
    pub fn gateways(&mut self) -> Result<Vec<Gateway>> {
        self.read(|tx, path| {
            require_pool(tx, path)?;
            rows::gateways(tx)
        })
    }

    /// Lets `rule.from` reach `rule.to` (same tenant), on one port or all.
    pub fn allow(&mut self, rule: &AllowRule, now: Timestamp) -> Result<()> {
        self.write(|tx, path| {
            require_pool(tx, path)?;
            if rule.from == rule.to {
                return Err(StoreError::RuleToSelf(format!(
                    "{}/{}",
                    rule.tenant, rule.from
                )));
            }
            require_deployment(tx, &rule.tenant, &rule.from)?;
            require_deployment(tx, &rule.tenant, &rule.to)?;
            if rows::rule_exists(tx, rule)? {
                return Err(StoreError::RuleExists(rule.to_string()));
            }
            rows::insert_rule(tx, rule, now)?;
            rows::record(
                tx,
                now,
                "allow",
                Some(rule.tenant.as_str()),
                Some(rule.to.as_str()),
                None,
            )
        })
    }

    /// Removes an allow rule.
    pub fn disallow(&mut self, rule: &AllowRule, now: Timestamp) -> Result<()> {
        self.write(|tx, path| {
            require_pool(tx, path)?;
            require_tenant(tx, &rule.tenant)?;
            if rows::delete_rule(tx, rule)? == 0 {
                return Err(StoreError::RuleNotFound(rule.to_string()));
            }
            rows::record(
                tx,
                now,
                "disallow",
                Some(rule.tenant.as_str()),
                Some(rule.to.as_str()),
                None,
            )
        })
    }

    /// Allow rules, by tenant, from, to, port; of one tenant if given.
    pub fn allow_rules(&mut self, tenant: Option<&TenantName>) -> Result<Vec<AllowRule>> {
        self.read(|tx, path| {
            require_pool(tx, path)?;
            if let Some(t) = tenant {
                require_tenant(tx, t)?;
            }
            rows::rules(tx, tenant)
        })
    }

    /// The whole state in one consistent read, for the renderers.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.read(|tx, path| {
            Ok(Snapshot {
                pool: require_pool(tx, path)?,
                tenants: rows::tenants(tx)?,
                deployments: rows::deployments(tx, None)?,
                gateways: rows::gateways(tx)?,
                allow_rules: rows::rules(tx, None)?,
            })
        })
    }

    /// Allocation events (create and delete), oldest first: (time, action,
    /// tenant, deployment, subnet).
    pub fn history(&mut self, limit: usize) -> Result<Vec<rows::Event>> {
        self.read(|tx, _| rows::history(tx, limit))
    }

    /// Verifies the store's integrity; an empty list means it is sound.
    pub fn check(&mut self) -> Result<Vec<Problem>> {
        self.read(check::run)
    }
}

pub use rows::Event;

fn not_initialised(path: &Path) -> StoreError {
    StoreError::NotInitialised {
        path: path.to_owned(),
    }
}

fn require_pool(tx: &Transaction<'_>, path: &Path) -> Result<Pool> {
    rows::load_pool(tx)?.ok_or_else(|| not_initialised(path))
}

fn require_tenant(tx: &Transaction<'_>, tenant: &TenantName) -> Result<()> {
    if rows::tenant_exists(tx, tenant)? {
        Ok(())
    } else {
        Err(StoreError::TenantNotFound(tenant.clone()))
    }
}

fn require_deployment(
    tx: &Transaction<'_>,
    tenant: &TenantName,
    name: &DeploymentName,
) -> Result<()> {
    require_tenant(tx, tenant)?;
    if rows::deployment_exists(tx, tenant, name)? {
        Ok(())
    } else {
        Err(StoreError::DeploymentNotFound {
            tenant: tenant.clone(),
            name: name.clone(),
        })
    }
}

fn delete_deployment_in(
    tx: &Transaction<'_>,
    pool: &Pool,
    tenant: &TenantName,
    name: &DeploymentName,
    now: Timestamp,
) -> Result<Removed> {
    let Some(deployment) = rows::deployment(tx, tenant, name)? else {
        return Err(StoreError::DeploymentNotFound {
            tenant: tenant.clone(),
            name: name.clone(),
        });
    };
    let index = pool.index_of(deployment.subnet)?;
    let mut removed = Removed {
        allow_rules: rows::rules_naming(tx, tenant, name)?,
        ..Removed::default()
    };
    for rule in &removed.allow_rules {
        rows::delete_rule(tx, rule)?;
    }
    let scope = GatewayScope::PerDeployment {
        tenant: tenant.clone(),
        deployment: name.clone(),
    };
    if tx.execute("DELETE FROM gateways WHERE name = ?1", [scope.id()])? > 0 {
        removed.gateways.push(scope);
    }
    tx.prepare_cached("DELETE FROM deployments WHERE tenant = ?1 AND name = ?2")?
        .execute([tenant.as_str(), name.as_str()])?;
    let counters =
        Counters::load(tx)?.ok_or_else(|| StoreError::Corrupt("pool row vanished".into()))?;
    let mut ledger = SqlLedger { tx, pool, counters };
    allocator::release(pool, &mut ledger, index, now)?;
    ledger.counters.allocated = ledger.counters.allocated.saturating_sub(1);
    ledger.counters.save(tx)?;
    rows::record(
        tx,
        now,
        "delete",
        Some(tenant.as_str()),
        Some(name.as_str()),
        Some(&deployment.subnet.to_string()),
    )?;
    removed.deployments.push(deployment);
    Ok(removed)
}
