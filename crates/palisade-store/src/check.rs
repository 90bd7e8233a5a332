//! `palisade check`: does the database still mean what the allocator thinks?
//!
//! Unlike every other read, this one scans. It trusts nothing it reads:
//! each problem becomes a line of the report instead of an error, so one
//! damaged row does not hide the rest.

use crate::ledger::{Counters, blob_addr, index_from_blob};
use crate::{Result, rows};
use ipnet::Ipv6Net;
use palisade_core::{PROXY_PORTS, Pool};
use rusqlite::Transaction;
use std::collections::HashMap;
use std::path::Path;

/// One integrity problem, described for a person.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem(pub String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a subnet blob was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Deployment,
    Recycled,
    Quarantine,
}

pub(crate) fn run(tx: &Transaction<'_>, path: &Path) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(Problem(p));

    let integrity: String = tx.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        problem(format!("SQLite integrity check failed: {integrity}"));
    }
    {
        let mut stmt = tx.prepare("PRAGMA foreign_key_check")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let table: String = r.get(0)?;
            let parent: String = r.get(2)?;
            problem(format!(
                "orphan row in {table}: refers to a missing row of {parent}"
            ));
        }
    }

    let pool = match rows::load_pool(tx) {
        Ok(Some(pool)) => pool,
        Ok(None) => {
            problem(format!("no pool: {} is not initialised", path.display()));
            return Ok(problems);
        }
        Err(e) => {
            problem(format!("the pool row is invalid: {e}"));
            return Ok(problems);
        }
    };
    let Some(counters) = Counters::load(tx)? else {
        problem("the pool row vanished during the check".into());
        return Ok(problems);
    };

    // Every subnet blob in every table, each checked against the pool.
    let mut seen: HashMap<Vec<u8>, (Holder, String)> = HashMap::new();
    let mut counts = [0u64; 3];
    for (holder, sql) in [
        (
            Holder::Deployment,
            "SELECT subnet, tenant || '/' || name FROM deployments",
        ),
        (
            Holder::Recycled,
            "SELECT subnet, 'the recycled list' FROM recycled",
        ),
        (
            Holder::Quarantine,
            "SELECT subnet, 'the quarantine' FROM quarantine",
        ),
    ] {
        let mut stmt = tx.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let blob: Vec<u8> = r.get(0)?;
            let owner: String = r.get(1)?;
            counts[holder as usize] += 1;
            match subnet_of(&pool, &blob) {
                Err(why) => problem(format!("{owner} holds {why}")),
                Ok((subnet, index)) if index >= counters.high_water => problem(format!(
                    "{owner} holds {subnet}, above the high-water mark (index {index} >= {})",
                    counters.high_water
                )),
                Ok(_) => {}
            }
            if let Some((_, other)) = seen.insert(blob.clone(), (holder, owner.clone())) {
                let shown = blob_addr(&blob).map_or_else(|| "a subnet".into(), |a| a.to_string());
                problem(format!("{shown} is held by both {other} and {owner}"));
            }
        }
    }

    // Rows in deployments, for example, are also checked by parsing them all.
    for (what, result) in [
        ("tenants", rows::tenants(tx).map(|_| ())),
        ("deployments", rows::deployments(tx, None).map(|_| ())),
        ("gateways", rows::gateways(tx).map(|_| ())),
        ("allow rules", rows::rules(tx, None).map(|_| ())),
    ] {
        if let Err(e) = result {
            problem(format!("{what}: {e}"));
        }
    }

    let [allocated, recycled, quarantined] = counts;
    for (name, counter, actual) in [
        ("allocated", counters.allocated, allocated),
        ("recycled", counters.recycled, recycled),
        ("quarantined", counters.quarantined, quarantined),
    ] {
        if counter != actual {
            problem(format!(
                "the {name} counter says {counter} but {actual} subnets are {name}"
            ));
        }
    }
    let accounted = u128::from(allocated) + u128::from(recycled) + u128::from(quarantined);
    if accounted != counters.high_water {
        problem(format!(
            "{} subnets were handed out but {accounted} are allocated, recycled or quarantined: {} leaked",
            counters.high_water,
            counters.high_water.abs_diff(accounted)
        ));
    }
    if counters.high_water > pool.capacity() {
        problem(format!(
            "the high-water mark {} exceeds the pool's capacity {}",
            counters.high_water,
            pool.capacity()
        ));
    }
    let high_water: Vec<u8> = tx.query_row("SELECT high_water FROM pool", [], |r| r.get(0))?;
    if high_water.len() != 16 || index_from_blob(&high_water) != counters.high_water {
        problem("the high-water mark is not a 16-byte index".into());
    }
    proxy_ports(tx, &mut problem)?;
    Ok(problems)
}

/// Each tenant's egress-proxy port must be its own (the proxy knows the
/// tenant by it) and inside [`PROXY_PORTS`]. The unique index keeps this
/// true unless someone dropped it or edited rows by hand.
fn proxy_ports(tx: &Transaction<'_>, problem: &mut impl FnMut(String)) -> Result<()> {
    let mut stmt = tx.prepare(
        "SELECT proxy_port, group_concat(name, ', ') FROM
             (SELECT proxy_port, name FROM tenants WHERE proxy_port IS NOT NULL ORDER BY name)
         GROUP BY proxy_port HAVING count(*) > 1 ORDER BY proxy_port",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (port, names): (i64, String) = (r.get(0)?, r.get(1)?);
        problem(format!(
            "egress-proxy port {port} is held by several tenants: {names}"
        ));
    }
    let (first, last) = (*PROXY_PORTS.start(), *PROXY_PORTS.end());
    let mut stmt = tx.prepare(
        "SELECT name, proxy_port FROM tenants
         WHERE proxy_port IS NULL OR proxy_port NOT BETWEEN ?1 AND ?2 ORDER BY name",
    )?;
    let mut rows = stmt.query([first, last])?;
    while let Some(r) = rows.next()? {
        let (name, port): (String, Option<i64>) = (r.get(0)?, r.get(1)?);
        let port = port.map_or_else(|| "none".into(), |p| p.to_string());
        problem(format!(
            "tenant {name} has egress-proxy port {port}, outside {first}-{last}"
        ));
    }
    Ok(())
}

/// The subnet a blob names, and its index, if the pool could have made it.
fn subnet_of(pool: &Pool, blob: &[u8]) -> std::result::Result<(Ipv6Net, u128), String> {
    let addr =
        blob_addr(blob).ok_or_else(|| format!("a malformed subnet ({} bytes)", blob.len()))?;
    let subnet = Ipv6Net::new(addr, pool.subnet_len().get()).map_err(|e| e.to_string())?;
    let index = pool.index_of(subnet).map_err(|_| {
        format!(
            "{addr}/{}, outside pool {} or misaligned",
            pool.subnet_len().get(),
            pool.cidr()
        )
    })?;
    Ok((subnet, index))
}
