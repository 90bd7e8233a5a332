//! The schema, as an ordered list of migrations.
//!
//! `PRAGMA user_version` records how many have run. A migration is appended,
//! never edited, once it has shipped; each runs inside the same immediate
//! transaction that checks the version, so concurrent first opens cannot
//! apply one twice.
//!
//! Subnets are stored as their 16-byte network address. SQLite compares
//! BLOBs with memcmp, so `min(subnet)` is the lowest address, which is the
//! lowest index: the allocator's "lowest recycled first" is one index probe.

use crate::StoreError;
use palisade_core::{PROXY_PORTS, TenantName};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::Path;

/// A data fix-up run after a migration's SQL, in the same transaction.
type FixUp = fn(&Transaction<'_>) -> Result<(), StoreError>;

/// One schema step: SQL, then an optional data fix-up in code.
struct Migration {
    sql: &'static str,
    then: Option<FixUp>,
}

const MIGRATIONS: &[Migration] = &[
    // 1: the foundation.
    Migration {
        sql: FOUNDATION,
        then: None,
    },
    // 2: per-deployment workload spec (JSON, parsed by the model on read),
    // the tenant's public egress address, and its egress-proxy port.
    Migration {
        sql: r#"
    ALTER TABLE deployments ADD COLUMN workload TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE tenants ADD COLUMN egress_public_ip TEXT;
    ALTER TABLE tenants ADD COLUMN proxy_port INTEGER;
    CREATE UNIQUE INDEX tenants_by_proxy_port ON tenants (proxy_port);
    "#,
        then: Some(assign_proxy_ports),
    },
];

/// Gives the existing tenants, in name order, the ports from the start of
/// [`PROXY_PORTS`]: what `create_tenant`'s lowest-free rule would have
/// handed out had they been created in that order.
fn assign_proxy_ports(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let names: Vec<String> = tx
        .prepare("SELECT name FROM tenants ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare("UPDATE tenants SET proxy_port = ?1 WHERE name = ?2")?;
    for (name, port) in names
        .iter()
        .zip(PROXY_PORTS.map(Some).chain(std::iter::repeat(None)))
    {
        let Some(port) = port else {
            return Err(StoreError::ProxyPortsExhausted {
                tenant: name.parse::<TenantName>()?,
                count: u32::from(PROXY_PORTS.end() - PROXY_PORTS.start()) + 1,
                first: *PROXY_PORTS.start(),
                last: *PROXY_PORTS.end(),
            });
        };
        update.execute(rusqlite::params![port, name])?;
    }
    Ok(())
}

const FOUNDATION: &str = r#"
    CREATE TABLE pool (
        id                INTEGER PRIMARY KEY CHECK (id = 1),
        cidr              TEXT    NOT NULL,
        subnet_len        INTEGER NOT NULL,
        reuse_after_secs  INTEGER NOT NULL,
        -- Lowest never-used subnet index, 16-byte big-endian.
        high_water        BLOB    NOT NULL,
        -- Counters kept in step with the tables below so `stats` reads one row.
        allocated         INTEGER NOT NULL,
        recycled          INTEGER NOT NULL,
        quarantined       INTEGER NOT NULL,
        created_at        INTEGER NOT NULL
    );
    CREATE TABLE tenants (
        name          TEXT    PRIMARY KEY,
        cpu_millis    INTEGER NOT NULL,
        memory_bytes  INTEGER NOT NULL,
        pods          INTEGER NOT NULL,
        node_pool     TEXT,
        egress_mode   TEXT    NOT NULL,
        egress_ip     TEXT,
        labels        TEXT    NOT NULL,
        created_at    INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE deployments (
        tenant      TEXT    NOT NULL REFERENCES tenants (name),
        name        TEXT    NOT NULL,
        image       TEXT    NOT NULL,
        replicas    INTEGER NOT NULL,
        ports       TEXT    NOT NULL,
        subnet      BLOB    NOT NULL UNIQUE,
        labels      TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (tenant, name)
    ) WITHOUT ROWID;
    CREATE TABLE recycled (
        subnet BLOB PRIMARY KEY
    ) WITHOUT ROWID;
    CREATE TABLE quarantine (
        subnet        BLOB    PRIMARY KEY,
        available_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX quarantine_by_time ON quarantine (available_at);
    CREATE TABLE gateways (
        name        TEXT    PRIMARY KEY,
        kind        TEXT    NOT NULL CHECK (kind IN ('central', 'per-tenant', 'per-deployment')),
        tenant      TEXT    REFERENCES tenants (name),
        deployment  TEXT,
        created_at  INTEGER NOT NULL,
        FOREIGN KEY (tenant, deployment) REFERENCES deployments (tenant, name)
    ) WITHOUT ROWID;
    CREATE TABLE allow_rules (
        tenant           TEXT    NOT NULL,
        from_deployment  TEXT    NOT NULL,
        to_deployment    TEXT    NOT NULL,
        -- 0: every port the target serves.
        port             INTEGER NOT NULL,
        created_at       INTEGER NOT NULL,
        PRIMARY KEY (tenant, from_deployment, to_deployment, port),
        FOREIGN KEY (tenant, from_deployment) REFERENCES deployments (tenant, name),
        FOREIGN KEY (tenant, to_deployment) REFERENCES deployments (tenant, name)
    ) WITHOUT ROWID;
    CREATE INDEX allow_rules_to ON allow_rules (tenant, to_deployment);
    -- What happened when: the dashboard's "allocations over time".
    CREATE TABLE history (
        id          INTEGER PRIMARY KEY,
        at          INTEGER NOT NULL,
        action      TEXT    NOT NULL,
        tenant      TEXT,
        deployment  TEXT,
        subnet      TEXT
    );
    "#;

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`VERSION`].
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current == VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: current,
            supported: VERSION,
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tracing::info!(version = i + 1, "migrating state database");
        tx.execute_batch(m.sql)?;
        if let Some(then) = m.then {
            then(&tx)?;
        }
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on broken set-up.

    use super::*;
    use crate::{NewDeployment, Store};
    use palisade_core::allocator::Timestamp;

    /// A database as version 1 left it, filled by hand: one pool, three
    /// tenants inserted out of name order, one deployment.
    fn version_one(path: &Path) {
        let db = Connection::open(path).unwrap();
        db.execute_batch(FOUNDATION).unwrap();
        let subnet = "fd00:1::".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let mut high_water = [0u8; 16];
        high_water[15] = 1;
        db.execute(
            "INSERT INTO pool VALUES (1, 'fd00:1::/48', 96, 0, ?1, 1, 0, 0, 0)",
            [high_water.as_slice()],
        )
        .unwrap();
        for name in ["zeta", "alpha", "mid"] {
            db.execute(
                "INSERT INTO tenants VALUES (?1, 4000, 8589934592, 20, NULL, 'cilium-egress-gateway', '10.0.1.5', '{}', 7)",
                [name],
            )
            .unwrap();
        }
        db.execute(
            "INSERT INTO deployments VALUES ('mid', 'db', 'postgres:14', 1, '[5432]', ?1, '{}', 9)",
            [subnet.as_slice()],
        )
        .unwrap();
        db.pragma_update(None, "user_version", 1).unwrap();
    }

    #[test]
    fn an_old_database_keeps_its_data_and_gets_ports_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        version_one(&path);

        let mut store = Store::open(&path).unwrap();
        let tenants = store.tenants().unwrap();
        let ports: Vec<(&str, u16)> = tenants
            .iter()
            .map(|t| (t.name.as_str(), t.proxy_port))
            .collect();
        assert_eq!(ports, [("alpha", 20000), ("mid", 20001), ("zeta", 20002)]);
        let mid = &tenants[1];
        assert_eq!(mid.egress.ip, Some("10.0.1.5".parse().unwrap()));
        assert_eq!(mid.egress.public_ip, None);
        assert_eq!(mid.created_at, Timestamp(7));
        let deployments = store.deployments(None).unwrap();
        assert_eq!(deployments.len(), 1);
        assert_eq!(deployments[0].image.as_str(), "postgres:14");
        assert_eq!(deployments[0].subnet.to_string(), "fd00:1::/96");
        assert!(deployments[0].workload.is_default());
        assert!(store.check().unwrap().is_empty());

        // The next tenant takes the next port; the old deployment's subnet
        // is still taken.
        let new = NewDeployment {
            tenant: "beta".parse().unwrap(),
            name: "web".parse().unwrap(),
            image: "nginx:1.25".parse().unwrap(),
            replicas: Default::default(),
            ports: vec![],
            labels: Default::default(),
            workload: Default::default(),
        };
        let created = store.create_deployment(&new, Timestamp(10)).unwrap();
        assert_eq!(created.deployment.subnet.to_string(), "fd00:1::1:0:0/96");
        let beta = store.tenant(&"beta".parse().unwrap()).unwrap();
        assert_eq!(beta.proxy_port, 20003);
        drop(store);
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
    }
}
