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
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    // 1: the foundation.
    r#"
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
    "#,
];

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
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tracing::info!(version = i + 1, "migrating state database");
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}
