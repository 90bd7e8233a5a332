//! Conversions between rows and model values.
//!
//! Everything read back goes through the model's parsers again, so a value
//! damaged on disk surfaces as a clear error instead of a wrong object.

use crate::ledger::blob_addr;
use crate::{Result, StoreError};
use ipnet::Ipv6Net;
use palisade_core::allocator::Timestamp;
use palisade_core::{
    AllowRule, Cpu, Deployment, DeploymentName, EgressMode, EgressProfile, Gateway, GatewayScope,
    Labels, Memory, NodePoolName, PROXY_PORTS, Pool, Port, Quota, Tenant, TenantName,
};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use std::net::IpAddr;
use std::time::Duration;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(crate) fn load_pool(tx: &Transaction<'_>) -> Result<Option<Pool>> {
    let row = tx
        .prepare_cached("SELECT cidr, subnet_len, reuse_after_secs FROM pool WHERE id = 1")?
        .query_row([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u8>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })
        .optional()?;
    let Some((cidr, len, reuse)) = row else {
        return Ok(None);
    };
    let cidr = Pool::parse_cidr(&cidr)?;
    Ok(Some(Pool::new(
        cidr,
        len.try_into()?,
        Duration::from_secs(reuse),
    )?))
}

pub(crate) fn tenant_exists(tx: &Transaction<'_>, name: &TenantName) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM tenants WHERE name = ?1")?
        .exists([name.as_str()])?)
}

fn labels_json(labels: &Labels) -> String {
    // Serialising a map of strings cannot fail.
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

fn parse_labels(json: &str) -> Result<Labels> {
    serde_json::from_str(json).map_err(|e| corrupt(format!("labels {json:?}: {e}")))
}

/// The lowest port of [`PROXY_PORTS`] no tenant holds: the range's start,
/// or one above a held port, found through the `proxy_port` index.
pub(crate) fn free_proxy_port(tx: &Transaction<'_>, tenant: &TenantName) -> Result<u16> {
    let (first, last) = (*PROXY_PORTS.start(), *PROXY_PORTS.end());
    let port: Option<u16> = tx
        .prepare_cached(
            "SELECT min(p + 1) FROM (
                 SELECT ?1 - 1 AS p
                 UNION ALL SELECT proxy_port FROM tenants WHERE proxy_port BETWEEN ?1 AND ?2
             )
             WHERE p + 1 <= ?2
               AND NOT EXISTS (SELECT 1 FROM tenants WHERE proxy_port = p + 1)",
        )?
        .query_row(params![first, last], |r| r.get(0))?;
    port.ok_or_else(|| StoreError::ProxyPortsExhausted {
        tenant: tenant.clone(),
        count: u32::from(last - first) + 1,
        first,
        last,
    })
}

/// Inserts a tenant with the lowest free egress-proxy port (whatever
/// `t.proxy_port` says) and returns that port.
pub(crate) fn insert_tenant(tx: &Transaction<'_>, t: &Tenant) -> Result<u16> {
    let port = free_proxy_port(tx, &t.name)?;
    tx.prepare_cached(
        "INSERT INTO tenants (name, cpu_millis, memory_bytes, pods, node_pool, egress_mode, egress_ip, labels, created_at, egress_public_ip, proxy_port)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        t.name.as_str(),
        t.quota.cpu.millis(),
        t.quota.memory.bytes(),
        t.quota.pods,
        t.node_pool.as_ref().map(NodePoolName::as_str),
        t.egress.mode.as_str(),
        t.egress.ip.map(|ip| ip.to_string()),
        labels_json(&t.labels),
        t.created_at.0,
        t.egress.public_ip.map(|ip| ip.to_string()),
        port,
    ])?;
    Ok(port)
}

const TENANT_COLUMNS: &str = "name, cpu_millis, memory_bytes, pods, node_pool, egress_mode, egress_ip, labels, created_at, egress_public_ip, proxy_port";

fn parse_ip(what: &str, ip: Option<String>) -> Result<Option<IpAddr>> {
    ip.map(|ip| {
        ip.parse::<IpAddr>()
            .map_err(|e| corrupt(format!("{what} {ip:?}: {e}")))
    })
    .transpose()
}

fn tenant_from_row(r: &Row<'_>) -> Result<Tenant> {
    let name: String = r.get(0)?;
    let node_pool: Option<String> = r.get(4)?;
    let mode: String = r.get(5)?;
    let ip: Option<String> = r.get(6)?;
    Ok(Tenant {
        name: name.parse()?,
        quota: Quota {
            cpu: Cpu::from_millis(r.get(1)?),
            memory: Memory::from_bytes(r.get(2)?),
            pods: r.get(3)?,
        },
        node_pool: node_pool.map(|p| p.parse()).transpose()?,
        egress: EgressProfile {
            mode: mode.parse::<EgressMode>()?,
            ip: parse_ip("egress ip", ip)?,
            public_ip: parse_ip("egress public ip", r.get(9)?)?,
        },
        proxy_port: r.get(10)?,
        labels: parse_labels(&r.get::<_, String>(7)?)?,
        created_at: Timestamp(r.get(8)?),
    })
}

pub(crate) fn tenant(tx: &Transaction<'_>, name: &TenantName) -> Result<Option<Tenant>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = ?1"
    ))?;
    let mut rows = stmt.query([name.as_str()])?;
    rows.next()?.map(tenant_from_row).transpose()
}

pub(crate) fn tenants(tx: &Transaction<'_>) -> Result<Vec<Tenant>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(tenant_from_row(r)?);
    }
    Ok(out)
}

const DEPLOYMENT_COLUMNS: &str =
    "tenant, name, image, replicas, ports, subnet, labels, created_at, workload";

fn deployment_from_row(r: &Row<'_>, pool_len: u8) -> Result<Deployment> {
    let tenant: String = r.get(0)?;
    let name: String = r.get(1)?;
    let image: String = r.get(2)?;
    let ports: String = r.get(4)?;
    let subnet: Vec<u8> = r.get(5)?;
    let workload: String = r.get(8)?;
    let addr = blob_addr(&subnet).ok_or_else(|| corrupt(format!("subnet of {tenant}/{name}")))?;
    Ok(Deployment {
        tenant: tenant.parse()?,
        name: name.parse()?,
        image: image.parse()?,
        replicas: r.get::<_, u32>(3)?.try_into()?,
        ports: serde_json::from_str::<Vec<Port>>(&ports)
            .map_err(|e| corrupt(format!("ports {ports:?}: {e}")))?,
        subnet: Ipv6Net::new(addr, pool_len).map_err(|e| corrupt(format!("subnet: {e}")))?,
        labels: parse_labels(&r.get::<_, String>(6)?)?,
        workload: serde_json::from_str(&workload)
            .map_err(|e| corrupt(format!("workload of {tenant}/{name} {workload:?}: {e}")))?,
        created_at: Timestamp(r.get(7)?),
    })
}

fn subnet_len(tx: &Transaction<'_>) -> Result<u8> {
    Ok(tx
        .prepare_cached("SELECT subnet_len FROM pool WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

pub(crate) fn deployment_exists(
    tx: &Transaction<'_>,
    tenant: &TenantName,
    name: &DeploymentName,
) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM deployments WHERE tenant = ?1 AND name = ?2")?
        .exists([tenant.as_str(), name.as_str()])?)
}

pub(crate) fn deployment(
    tx: &Transaction<'_>,
    tenant: &TenantName,
    name: &DeploymentName,
) -> Result<Option<Deployment>> {
    let len = subnet_len(tx)?;
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant = ?1 AND name = ?2"
    ))?;
    let mut rows = stmt.query([tenant.as_str(), name.as_str()])?;
    rows.next()?
        .map(|r| deployment_from_row(r, len))
        .transpose()
}

pub(crate) fn deployments(
    tx: &Transaction<'_>,
    tenant: Option<&TenantName>,
) -> Result<Vec<Deployment>> {
    let len = subnet_len(tx)?;
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, name"
    ))?;
    let mut rows = stmt.query([tenant.map(TenantName::as_str)])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(deployment_from_row(r, len)?);
    }
    Ok(out)
}

pub(crate) fn insert_deployment(
    tx: &Transaction<'_>,
    d: &Deployment,
    subnet: &[u8; 16],
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO deployments (tenant, name, image, replicas, ports, subnet, labels, created_at, workload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        d.tenant.as_str(),
        d.name.as_str(),
        d.image.as_str(),
        d.replicas.get(),
        serde_json::to_string(&d.ports).unwrap_or_else(|_| "[]".into()),
        subnet.as_slice(),
        labels_json(&d.labels),
        d.created_at.0,
        // Serialising validated strings cannot fail.
        serde_json::to_string(&d.workload).unwrap_or_else(|_| "{}".into()),
    ])?;
    Ok(())
}

pub(crate) fn gateway_exists(tx: &Transaction<'_>, scope: &GatewayScope) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM gateways WHERE name = ?1")?
        .exists([scope.id()])?)
}

pub(crate) fn insert_gateway(tx: &Transaction<'_>, g: &Gateway) -> Result<()> {
    let (tenant, deployment) = match &g.scope {
        GatewayScope::Central => (None, None),
        GatewayScope::PerTenant { tenant } => (Some(tenant.as_str()), None),
        GatewayScope::PerDeployment { tenant, deployment } => {
            (Some(tenant.as_str()), Some(deployment.as_str()))
        }
    };
    tx.prepare_cached(
        "INSERT INTO gateways (name, kind, tenant, deployment, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![g.scope.id(), g.scope.kind(), tenant, deployment, g.created_at.0])?;
    Ok(())
}

pub(crate) fn gateways(tx: &Transaction<'_>) -> Result<Vec<Gateway>> {
    let mut stmt = tx.prepare_cached(
        "SELECT kind, tenant, deployment, created_at FROM gateways ORDER BY name",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let kind: String = r.get(0)?;
        let tenant: Option<String> = r.get(1)?;
        let deployment: Option<String> = r.get(2)?;
        let scope = match (kind.as_str(), tenant, deployment) {
            ("central", None, None) => GatewayScope::Central,
            ("per-tenant", Some(t), None) => GatewayScope::PerTenant { tenant: t.parse()? },
            ("per-deployment", Some(t), Some(d)) => GatewayScope::PerDeployment {
                tenant: t.parse()?,
                deployment: d.parse()?,
            },
            (kind, ..) => return Err(corrupt(format!("gateway of kind {kind:?}"))),
        };
        out.push(Gateway {
            scope,
            created_at: Timestamp(r.get(3)?),
        });
    }
    Ok(out)
}

fn port_column(rule: &AllowRule) -> u16 {
    rule.port.map_or(0, Port::get)
}

pub(crate) fn rule_exists(tx: &Transaction<'_>, rule: &AllowRule) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT 1 FROM allow_rules WHERE tenant = ?1 AND from_deployment = ?2 AND to_deployment = ?3 AND port = ?4",
        )?
        .exists(params![rule.tenant.as_str(), rule.from.as_str(), rule.to.as_str(), port_column(rule)])?)
}

pub(crate) fn insert_rule(tx: &Transaction<'_>, rule: &AllowRule, now: Timestamp) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO allow_rules (tenant, from_deployment, to_deployment, port, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![rule.tenant.as_str(), rule.from.as_str(), rule.to.as_str(), port_column(rule), now.0])?;
    Ok(())
}

pub(crate) fn delete_rule(tx: &Transaction<'_>, rule: &AllowRule) -> Result<usize> {
    Ok(tx
        .prepare_cached(
            "DELETE FROM allow_rules WHERE tenant = ?1 AND from_deployment = ?2 AND to_deployment = ?3 AND port = ?4",
        )?
        .execute(params![rule.tenant.as_str(), rule.from.as_str(), rule.to.as_str(), port_column(rule)])?)
}

fn rules_where(
    tx: &Transaction<'_>,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<AllowRule>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT tenant, from_deployment, to_deployment, port FROM allow_rules WHERE {filter}
         ORDER BY tenant, from_deployment, to_deployment, port"
    ))?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let port: u16 = r.get(3)?;
        out.push(AllowRule {
            tenant: r.get::<_, String>(0)?.parse()?,
            from: r.get::<_, String>(1)?.parse()?,
            to: r.get::<_, String>(2)?.parse()?,
            port: if port == 0 {
                None
            } else {
                Some(port.try_into()?)
            },
        });
    }
    Ok(out)
}

pub(crate) fn rules(tx: &Transaction<'_>, tenant: Option<&TenantName>) -> Result<Vec<AllowRule>> {
    rules_where(
        tx,
        "?1 IS NULL OR tenant = ?1",
        &[&tenant.map(TenantName::as_str)],
    )
}

pub(crate) fn rules_naming(
    tx: &Transaction<'_>,
    tenant: &TenantName,
    deployment: &DeploymentName,
) -> Result<Vec<AllowRule>> {
    rules_where(
        tx,
        "tenant = ?1 AND (from_deployment = ?2 OR to_deployment = ?2)",
        &[&tenant.as_str(), &deployment.as_str()],
    )
}

/// One line of the store's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// When.
    pub at: Timestamp,
    /// `init`, `create`, `delete`, `create-tenant`, ...
    pub action: String,
    /// The tenant concerned, if any.
    pub tenant: Option<String>,
    /// The deployment concerned, if any.
    pub deployment: Option<String>,
    /// The subnet allocated or released, if any.
    pub subnet: Option<String>,
}

pub(crate) fn record(
    tx: &Transaction<'_>,
    at: Timestamp,
    action: &str,
    tenant: Option<&str>,
    deployment: Option<&str>,
    subnet: Option<&str>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO history (at, action, tenant, deployment, subnet) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![at.0, action, tenant, deployment, subnet])?;
    Ok(())
}

pub(crate) fn history(tx: &Transaction<'_>, limit: usize) -> Result<Vec<Event>> {
    let mut stmt = tx.prepare_cached(
        "SELECT at, action, tenant, deployment, subnet FROM
           (SELECT * FROM history ORDER BY id DESC LIMIT ?1) ORDER BY id",
    )?;
    let mut rows = stmt.query([limit as i64])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(Event {
            at: Timestamp(r.get(0)?),
            action: r.get(1)?,
            tenant: r.get(2)?,
            deployment: r.get(3)?,
            subnet: r.get(4)?,
        });
    }
    Ok(out)
}
