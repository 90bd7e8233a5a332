//! The allocator's [`Ledger`] over the SQLite tables.
//!
//! The pool row (high-water mark and counters) is read once per transaction
//! and written back once at the end; the free lists are touched only when
//! their counters say they are non-empty, so the common `create` with no
//! recycled subnets costs two indexed statements.

use palisade_core::Pool;
use palisade_core::allocator::{Ledger, SubnetIndex, Timestamp};
use rusqlite::{Transaction, params};
use std::net::Ipv6Addr;

/// The mutable part of the pool row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    pub high_water: u128,
    pub allocated: u64,
    pub recycled: u64,
    pub quarantined: u64,
}

impl Counters {
    pub(crate) fn load(tx: &Transaction<'_>) -> rusqlite::Result<Option<Self>> {
        let mut stmt = tx.prepare_cached(
            "SELECT high_water, allocated, recycled, quarantined FROM pool WHERE id = 1",
        )?;
        let mut rows = stmt.query([])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        Ok(Some(Self {
            high_water: index_from_blob(&row.get::<_, Vec<u8>>(0)?),
            allocated: row.get(1)?,
            recycled: row.get(2)?,
            quarantined: row.get(3)?,
        }))
    }

    pub(crate) fn save(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.prepare_cached(
            "UPDATE pool SET high_water = ?1, allocated = ?2, recycled = ?3, quarantined = ?4 WHERE id = 1",
        )?
        .execute(params![
            self.high_water.to_be_bytes().as_slice(),
            self.allocated,
            self.recycled,
            self.quarantined
        ])?;
        Ok(())
    }
}

/// A 16-byte big-endian blob as an index; anything else reads as 0 and is
/// reported by `check`.
pub(crate) fn index_from_blob(blob: &[u8]) -> u128 {
    <[u8; 16]>::try_from(blob)
        .map(u128::from_be_bytes)
        .unwrap_or(0)
}

/// The stored form of the subnet at `index`: its network address.
pub(crate) fn subnet_blob(pool: &Pool, index: SubnetIndex) -> [u8; 16] {
    pool.subnet(index).network().octets()
}

/// The network address stored in a subnet blob.
pub(crate) fn blob_addr(blob: &[u8]) -> Option<Ipv6Addr> {
    <[u8; 16]>::try_from(blob).ok().map(Ipv6Addr::from)
}

pub(crate) struct SqlLedger<'a, 't> {
    pub tx: &'a Transaction<'t>,
    pub pool: &'a Pool,
    pub counters: Counters,
}

impl SqlLedger<'_, '_> {
    fn index_of(&self, blob: &[u8]) -> rusqlite::Result<SubnetIndex> {
        blob_addr(blob)
            .and_then(|addr| {
                let net = ipnet::Ipv6Net::new(addr, self.pool.subnet_len().get()).ok()?;
                self.pool.index_of(net).ok()
            })
            .ok_or_else(|| {
                rusqlite::Error::InvalidColumnType(0, "subnet".into(), rusqlite::types::Type::Blob)
            })
    }
}

impl Ledger for SqlLedger<'_, '_> {
    type Error = rusqlite::Error;

    fn promote_due(&mut self, now: Timestamp) -> rusqlite::Result<()> {
        if self.counters.quarantined == 0 {
            return Ok(());
        }
        let moved = self.tx.prepare_cached(
            "INSERT INTO recycled (subnet) SELECT subnet FROM quarantine WHERE available_at <= ?1",
        )?
        .execute([now.0])?;
        if moved > 0 {
            self.tx
                .prepare_cached("DELETE FROM quarantine WHERE available_at <= ?1")?
                .execute([now.0])?;
            self.counters.quarantined -= moved as u64;
            self.counters.recycled += moved as u64;
        }
        Ok(())
    }

    fn pop_lowest_recycled(&mut self) -> rusqlite::Result<Option<SubnetIndex>> {
        if self.counters.recycled == 0 {
            return Ok(None);
        }
        let blob: Vec<u8> = self.tx.prepare_cached(
            "DELETE FROM recycled WHERE subnet = (SELECT min(subnet) FROM recycled) RETURNING subnet",
        )?
        .query_row([], |r| r.get(0))?;
        self.counters.recycled -= 1;
        self.index_of(&blob).map(Some)
    }

    fn high_water(&mut self) -> rusqlite::Result<SubnetIndex> {
        Ok(self.counters.high_water)
    }

    fn set_high_water(&mut self, next: SubnetIndex) -> rusqlite::Result<()> {
        self.counters.high_water = next;
        Ok(())
    }

    fn recycle(
        &mut self,
        index: SubnetIndex,
        now: Timestamp,
        available_at: Timestamp,
    ) -> rusqlite::Result<()> {
        let blob = subnet_blob(self.pool, index);
        if available_at <= now {
            self.tx
                .prepare_cached("INSERT INTO recycled (subnet) VALUES (?1)")?
                .execute([blob.as_slice()])?;
            self.counters.recycled += 1;
        } else {
            self.tx
                .prepare_cached("INSERT INTO quarantine (subnet, available_at) VALUES (?1, ?2)")?
                .execute(params![blob.as_slice(), available_at.0])?;
            self.counters.quarantined += 1;
        }
        Ok(())
    }
}
