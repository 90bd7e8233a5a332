use palisade_core::{DeploymentName, ModelError, PoolError, TenantName};
use std::path::PathBuf;

/// Why a store operation failed. Every variant leaves the store as it was:
/// mutations run in one transaction that rolls back on any error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No state database at the path, or one without a pool.
    #[error("no Palisade state at {path}: run `palisade init` first (or pass --state)")]
    NotInitialised {
        /// Where the state was looked for.
        path: PathBuf,
    },
    /// `init` on a store that already has a pool.
    #[error(
        "the store at {path} is already initialised with pool {pool}; pass --force to replace it (only allowed while no deployments exist)"
    )]
    AlreadyInitialised {
        /// Where the state is.
        path: PathBuf,
        /// The existing pool.
        pool: String,
    },
    /// `init --force` while deployments hold subnets of the old pool.
    #[error(
        "cannot re-initialise: {count} deployment(s) still hold subnets of pool {pool}; delete them first"
    )]
    PoolInUse {
        /// The existing pool.
        pool: String,
        /// How many deployments exist.
        count: u64,
    },
    /// A tenant that does not exist.
    #[error("tenant {0} not found")]
    TenantNotFound(TenantName),
    /// A tenant created twice.
    #[error("tenant {0} already exists")]
    TenantExists(TenantName),
    /// Deleting a tenant that still has deployments, without `--cascade`.
    #[error("tenant {tenant} still has {count} deployment(s); delete them first or pass --cascade")]
    TenantHasDeployments {
        /// The tenant.
        tenant: TenantName,
        /// How many deployments it has.
        count: u64,
    },
    /// A deployment that does not exist.
    #[error("deployment {tenant}/{name} not found")]
    DeploymentNotFound {
        /// Its tenant.
        tenant: TenantName,
        /// Its name.
        name: DeploymentName,
    },
    /// A deployment created twice.
    #[error("deployment {tenant}/{name} already exists (subnet {subnet})")]
    DeploymentExists {
        /// Its tenant.
        tenant: TenantName,
        /// Its name.
        name: DeploymentName,
        /// The subnet it holds.
        subnet: String,
    },
    /// Every subnet of the pool is allocated or quarantined.
    #[error(
        "subnet pool {pool} is exhausted: all {capacity} /{len} subnets are allocated or quarantined"
    )]
    PoolExhausted {
        /// The pool.
        pool: String,
        /// How many subnets it holds.
        capacity: u128,
        /// The subnet prefix length.
        len: u8,
    },
    /// Every per-tenant egress-proxy listener port is taken.
    #[error(
        "no egress-proxy port left for tenant {tenant}: all {count} ports {first}-{last} belong to other tenants; delete a tenant first"
    )]
    ProxyPortsExhausted {
        /// The tenant being created.
        tenant: TenantName,
        /// How many ports the range holds.
        count: u32,
        /// The range's first port.
        first: u16,
        /// The range's last port.
        last: u16,
    },
    /// A gateway created twice.
    #[error("gateway {0} already exists")]
    GatewayExists(String),
    /// A gateway that does not exist.
    #[error("gateway {0} not found")]
    GatewayNotFound(String),
    /// An allow rule added twice.
    #[error("allow rule {0} already exists")]
    RuleExists(String),
    /// An allow rule that does not exist.
    #[error("allow rule {0} not found")]
    RuleNotFound(String),
    /// An allow rule from a deployment to itself.
    #[error(
        "pods of {0} may always reach each other; an allow rule is only needed between two deployments"
    )]
    RuleToSelf(String),
    /// A database written by a newer Palisade.
    #[error(
        "the state at {path} has schema version {found}, newer than this palisade understands ({supported}); upgrade palisade"
    )]
    NewerSchema {
        /// Where the state is.
        path: PathBuf,
        /// The database's version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A stored value that no longer parses: the database was edited by hand
    /// or damaged. `palisade check` lists every such problem.
    #[error("the state database holds an invalid value ({0}); run `palisade check`")]
    Corrupt(String),
    /// A value read back from the database that the model rejects.
    #[error("the state database holds an invalid value")]
    Model(#[from] ModelError),
    /// A pool read back from the database that the model rejects.
    #[error("the state database holds an invalid pool")]
    Pool(#[from] PoolError),
    /// The state directory could not be created.
    #[error("failed to create the state directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// SQLite itself failed (disk full, locked past the busy timeout, ...).
    #[error("failed to access the state database")]
    Sqlite(#[from] rusqlite::Error),
}
