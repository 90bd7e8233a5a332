//! The store verbs, one handler each, over either store (a [`Backend`]:
//! SQLite or the cluster's custom resources).
//!
//! Every handler parses its arguments through the model before the backend
//! touches anything, so bad input leaves the state untouched and gets the
//! same one-line error on both stores; then it makes one backend call and
//! prints. `main`'s dispatch only picks the handler and the backend.

use crate::cli::{
    Cli, Command, CreateArgs, DeploymentRef, GatewayTarget, ImportArgs, InitArgs, ListArgs,
    RuleArgs, TenantCreateArgs,
};
use crate::output::{Format, columns, fields, outln, print};
use crate::state::{deployment_name, labels, now, state_path, tenant_name};
use anyhow::{Context, Result, bail};
use palisade_backend::{Backend, DeploymentRow, Removal, Rollout, TenantRow};
use palisade_core::{
    AllowRule, EgressMode, EgressProfile, GatewayScope, Pool, Quota, SubnetLen, Tenant,
};
use palisade_store::{NewDeployment, Store};
use serde::Serialize;
use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Refuses, with the reason, what `--store kubernetes` cannot serve.
pub fn refuse_unsupported(cmd: &Command) -> Result<()> {
    let what = match cmd {
        Command::Init(_) => {
            "init: the pool is the operator's setting (PALISADE_POOL in its ConfigMap)"
        }
        Command::Apply(_) => "apply: the operator applies what the custom resources describe",
        Command::Lab(_) => "lab: the lab runs the SQLite store's state on this host",
        _ => return Ok(()),
    };
    bail!("--store kubernetes does not support {what}")
}

/// `palisade init`: set up the subnet pool.
pub fn init(cli: &Cli, a: &InitArgs) -> Result<()> {
    // Parse everything before touching the disk.
    let (cidr, generated) = match &a.pool {
        Some(p) => (Pool::parse_cidr(p)?, false),
        None => (Pool::ula(rand::random()), true),
    };
    let len: SubnetLen = a.prefix_len.parse()?;
    let reuse_after: Duration = humantime::parse_duration(&a.reuse_after).with_context(|| {
        format!(
            "invalid --reuse-after {:?} (try 0s, 10m, 1h)",
            a.reuse_after
        )
    })?;
    let pool = Pool::new(cidr, len, reuse_after)?;
    let path = state_path(cli)?;
    let existed = path.exists();
    let result = Store::open_or_create(&path).and_then(|mut s| s.init(&pool, a.force, now()));
    if let Err(e) = result {
        if !existed {
            // Leave no empty database behind a failed first init.
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
        return Err(e.into());
    }
    if generated {
        outln!("generated RFC 4193 unique local pool {}", pool.cidr())?;
    }
    outln!(
        "initialised pool {} with {} subnets ({} of them)",
        pool.cidr(),
        pool.subnet_len(),
        pool.capacity()
    )?;
    if !pool.reuse_after().is_zero() {
        outln!(
            "released subnets are reused after {}",
            humantime::format_duration(pool.reuse_after())
        )?;
    }
    outln!("state: {}", path.display())?;
    Ok(())
}

/// `palisade create`: a deployment and its subnet (and its tenant, if new).
pub fn create(b: &mut dyn Backend, format: Format, a: &CreateArgs) -> Result<()> {
    let new = NewDeployment {
        tenant: tenant_name(&a.tenant)?,
        name: deployment_name(&a.deployment)?,
        image: a.image.parse()?,
        replicas: a.replicas.parse()?,
        ports: a
            .ports
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()?,
        labels: labels(&a.labels)?,
        workload: a.workload.spec()?,
    };
    let created = b
        .create_deployments(std::slice::from_ref(&new))?
        .pop()
        .context("the store created no deployment")?;
    let d = &created.deployment;
    if format != Format::Table {
        return print(format, d, || (vec![], vec![]));
    }
    if created.tenant_created {
        outln!(
            "created tenant {} (namespace {})",
            d.tenant,
            d.tenant.namespace()
        )?;
    }
    outln!(
        "{}",
        fields(&[
            ("tenant", d.tenant.to_string()),
            ("deployment", d.name.to_string()),
            ("subnet", subnet(d)),
            ("image", d.image.to_string()),
            ("replicas", d.replicas.to_string()),
        ])
    )?;
    Ok(())
}

/// A deployment's subnet, or why there is none yet.
fn subnet(d: &DeploymentRow) -> String {
    d.subnet.map_or_else(
        || "<pending: the operator allocates it>".into(),
        |s| s.to_string(),
    )
}

/// `palisade delete`: a deployment; its subnet is released.
pub fn delete(b: &mut dyn Backend, a: &DeploymentRef) -> Result<()> {
    let (tenant, name) = (tenant_name(&a.tenant)?, deployment_name(&a.deployment)?);
    let removed = b.delete_deployment(&tenant, &name)?;
    report_removed(&removed, b.deferred())
}

/// `palisade list`: deployments and their subnets (and, from the cluster,
/// whether the operator reports them ready).
pub fn list(b: &mut dyn Backend, format: Format, a: &ListArgs) -> Result<()> {
    let tenant = a.tenant.as_deref().map(tenant_name).transpose()?;
    let deployments = b.deployments(tenant.as_ref())?;
    print(format, &deployments, || {
        let with_rollout = deployments.iter().any(|d| d.rollout.is_some());
        let rows = deployments
            .iter()
            .map(|d| {
                let mut row = vec![
                    d.tenant.to_string(),
                    d.name.to_string(),
                    d.subnet
                        .map_or_else(|| "<pending>".into(), |s| s.to_string()),
                    d.image.to_string(),
                    d.replicas.to_string(),
                    join(&d.ports),
                ];
                if with_rollout {
                    row.push(ready(d.rollout.as_ref()));
                }
                row
            })
            .collect();
        let mut header = vec![
            "TENANT",
            "DEPLOYMENT",
            "SUBNET",
            "IMAGE",
            "REPLICAS",
            "PORTS",
        ];
        if with_rollout {
            header.push("READY");
        }
        (header, rows)
    })
}

fn ready(r: Option<&Rollout>) -> String {
    r.map_or_else(|| "-".into(), |r| r.ready.clone())
}

/// What `palisade stats -o json` prints. Fields in name order: the
/// output's key order since the first release.
#[derive(Serialize)]
struct Stats {
    allocated: u128,
    capacity: u128,
    never_used: u128,
    pool: String,
    prefix_len: u8,
    quarantined: u128,
    recycled_available: u128,
    reuse_after_seconds: u64,
    utilisation: f64,
}

/// `palisade stats`: pool capacity and utilisation.
pub fn stats(b: &mut dyn Backend, format: Format) -> Result<()> {
    let (pool, usage) = b.usage()?;
    if format != Format::Table {
        let stats = Stats {
            allocated: usage.allocated,
            capacity: usage.capacity,
            never_used: usage.never_used,
            pool: pool.cidr().to_string(),
            prefix_len: pool.subnet_len().get(),
            quarantined: usage.quarantined,
            recycled_available: usage.recycled_available,
            reuse_after_seconds: pool.reuse_after().as_secs(),
            utilisation: usage.utilisation(),
        };
        return print(format, &stats, || (vec![], vec![]));
    }
    outln!(
        "{}",
        fields(&[
            ("pool", pool.cidr().to_string()),
            ("prefix length", pool.subnet_len().to_string()),
            ("capacity", usage.capacity.to_string()),
            ("allocated", usage.allocated.to_string()),
            ("recycled available", usage.recycled_available.to_string()),
            ("quarantined", usage.quarantined.to_string()),
            ("never used", usage.never_used.to_string()),
            ("utilisation", format_share(usage.utilisation())),
        ])
    )?;
    Ok(())
}

/// `palisade tenant create` (and `create-tenant`): a tenant with its quota,
/// node pool and egress profile.
pub fn tenant_create(b: &mut dyn Backend, a: &TenantCreateArgs) -> Result<()> {
    let tenant = Tenant {
        name: tenant_name(&a.tenant)?,
        quota: Quota {
            cpu: a.cpu.parse()?,
            memory: a.memory.parse()?,
            pods: a
                .pods
                .parse()
                .with_context(|| format!("invalid --pods {:?}: expected a whole number", a.pods))?,
        },
        node_pool: a.node_pool.as_deref().map(str::parse).transpose()?,
        egress: EgressProfile {
            mode: a.egress_mode.parse::<EgressMode>()?,
            ip: ip_flag("--egress-ip", a.egress_ip.as_deref())?,
            public_ip: ip_flag("--egress-public-ip", a.egress_public_ip.as_deref())?,
        },
        proxy_port: 0,
        labels: labels(&a.labels)?,
        created_at: now(),
    };
    let (name, ns) = (&tenant.name, tenant.name.namespace());
    match b.create_tenant(&tenant)? {
        Some(port) => outln!("created tenant {name} (namespace {ns}, egress-proxy port {port})")?,
        None => outln!("created tenant {name} (namespace {ns})")?,
    }
    Ok(())
}

/// `palisade tenant delete`: refused while it has deployments, unless `cascade`.
pub fn tenant_delete(b: &mut dyn Backend, tenant: &str, cascade: bool) -> Result<()> {
    let name = tenant_name(tenant)?;
    let removed = b.delete_tenant(&name, cascade)?;
    report_removed(&removed, b.deferred())?;
    if b.deferred() {
        outln!("deleting tenant {name}: the operator deletes its deployments, then its namespace")?;
    } else {
        outln!("deleted tenant {name}")?;
    }
    Ok(())
}

/// `palisade tenant list`.
pub fn tenant_list(b: &mut dyn Backend, format: Format) -> Result<()> {
    let tenants = b.tenants()?;
    print(format, &tenants, || {
        let with_rollout = tenants.iter().any(|t| t.rollout.is_some());
        let rows = tenants
            .iter()
            .map(|row| {
                let t = &row.tenant;
                let mut cells = vec![
                    t.name.to_string(),
                    t.name.namespace(),
                    row.deployments.to_string(),
                    t.quota.cpu.to_string(),
                    t.quota.memory.to_string(),
                    t.quota.pods.to_string(),
                    t.node_pool.as_ref().map_or("-".into(), ToString::to_string),
                    egress(&t.egress),
                ];
                if with_rollout {
                    cells.push(ready(row.rollout.as_ref()));
                }
                cells
            })
            .collect();
        let mut header = vec![
            "TENANT",
            "NAMESPACE",
            "DEPLOYMENTS",
            "CPU",
            "MEMORY",
            "PODS",
            "NODE POOL",
            "EGRESS",
        ];
        if with_rollout {
            header.push("READY");
        }
        (header, rows)
    })
}

/// `palisade tenant show`: one tenant with its deployments.
pub fn tenant_show(b: &mut dyn Backend, format: Format, tenant: &str) -> Result<()> {
    let name = tenant_name(tenant)?;
    let t = b.tenant(&name)?;
    let deployments = b.deployments(Some(&name))?;
    if format != Format::Table {
        // Through a JSON value, whose maps sort their keys: the output's
        // key order since the first release.
        let value = serde_json::json!({ "tenant": t, "deployments": deployments });
        return print(format, &value, || (vec![], vec![]));
    }
    outln!("{}", fields(&tenant_fields(&t, deployments.len())))?;
    if !deployments.is_empty() {
        let rows = deployments
            .iter()
            .map(|d| {
                vec![
                    d.name.to_string(),
                    d.subnet
                        .map_or_else(|| "<pending>".into(), |s| s.to_string()),
                    d.image.to_string(),
                    d.replicas.to_string(),
                ]
            })
            .collect();
        outln!(
            "\n{}",
            columns(&["DEPLOYMENT", "SUBNET", "IMAGE", "REPLICAS"], rows)
        )?;
    }
    Ok(())
}

/// The `key: value` lines of `tenant show`.
fn tenant_fields(row: &TenantRow, deployments: usize) -> Vec<(&'static str, String)> {
    let t = &row.tenant;
    let labels = t
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let platform_default = || "- (platform default)".to_string();
    let mut out = vec![
        ("tenant", t.name.to_string()),
        ("namespace", t.name.namespace()),
        (
            "quota",
            format!(
                "cpu {}, memory {}, pods {}",
                t.quota.cpu, t.quota.memory, t.quota.pods
            ),
        ),
        (
            "node pool",
            t.node_pool.as_ref().map_or("-".into(), ToString::to_string),
        ),
        ("egress", egress(&t.egress)),
        (
            "egress source ip",
            t.egress
                .ip
                .map_or_else(platform_default, |ip| ip.to_string()),
        ),
        (
            "egress public ip",
            t.egress
                .public_ip
                .or(t.egress.ip)
                .map_or_else(platform_default, |ip| ip.to_string()),
        ),
        (
            "egress-proxy port",
            // 0: the operator has not assigned one yet.
            if t.proxy_port == 0 {
                "<pending>".into()
            } else {
                t.proxy_port.to_string()
            },
        ),
        (
            "labels",
            if labels.is_empty() {
                "-".into()
            } else {
                labels
            },
        ),
        ("deployments", deployments.to_string()),
    ];
    if let Some(r) = &row.rollout {
        out.push(("ready", r.ready.clone()));
    }
    out
}

/// `palisade gateway create` (and `create-gateway`).
pub fn gateway_create(b: &mut dyn Backend, target: &GatewayTarget) -> Result<()> {
    let scope = gateway_scope(target)?;
    b.create_gateway(&scope)?;
    outln!("created gateway {}", scope.id())?;
    Ok(())
}

/// `palisade gateway delete`.
pub fn gateway_delete(b: &mut dyn Backend, target: &GatewayTarget) -> Result<()> {
    let scope = gateway_scope(target)?;
    b.delete_gateway(&scope)?;
    outln!("deleted gateway {}", scope.id())?;
    Ok(())
}

/// `palisade gateway list`.
pub fn gateway_list(b: &mut dyn Backend, format: Format) -> Result<()> {
    let gateways = b.gateways()?;
    print(format, &gateways, || {
        let rows = gateways
            .iter()
            .map(|g| {
                let fronts = match &g.scope {
                    GatewayScope::Central => "all tenants".to_string(),
                    GatewayScope::PerTenant { tenant } => format!("{tenant}/*"),
                    GatewayScope::PerDeployment { tenant, deployment } => {
                        format!("{tenant}/{deployment}")
                    }
                };
                vec![g.scope.id(), g.scope.kind().to_string(), fronts]
            })
            .collect();
        (vec!["GATEWAY", "KIND", "FRONTS"], rows)
    })
}

/// `palisade allow`: one deployment may reach another of its tenant.
pub fn allow(b: &mut dyn Backend, a: &RuleArgs) -> Result<()> {
    let rule = allow_rule(a)?;
    b.allow(&rule)?;
    outln!("allowed {rule}")?;
    Ok(())
}

/// `palisade disallow`: remove an allow rule.
pub fn disallow(b: &mut dyn Backend, a: &RuleArgs) -> Result<()> {
    let rule = allow_rule(a)?;
    b.disallow(&rule)?;
    outln!("removed allow rule {rule}")?;
    Ok(())
}

/// `palisade rules`: the allow rules.
pub fn rules(b: &mut dyn Backend, format: Format, a: &ListArgs) -> Result<()> {
    let tenant = a.tenant.as_deref().map(tenant_name).transpose()?;
    let rules = b.allow_rules(tenant.as_ref())?;
    print(format, &rules, || {
        let rows = rules
            .iter()
            .map(|r| {
                vec![
                    r.tenant.to_string(),
                    r.from.to_string(),
                    r.to.to_string(),
                    r.port.map_or("all".into(), |p| p.to_string()),
                ]
            })
            .collect();
        (vec!["TENANT", "FROM", "TO", "PORT"], rows)
    })
}

/// `palisade import`: many deployments from a YAML or JSON list, all or nothing.
pub fn import(b: &mut dyn Backend, a: &ImportArgs) -> Result<()> {
    let text = if a.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("failed to read stdin")?;
        s
    } else {
        std::fs::read_to_string(&a.file)
            .with_context(|| format!("failed to read {}", a.file.display()))?
    };
    // YAML is a superset of JSON, so one parser reads both.
    let batch: Vec<NewDeployment> = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("invalid import file {}", a.file.display()))?;
    let started = Instant::now();
    let created = b.create_deployments(&batch)?;
    let tenants = created.iter().filter(|c| c.tenant_created).count();
    let secs = started.elapsed().as_secs_f64();
    outln!(
        "imported {} deployments ({tenants} new tenants) in {:.3} s ({:.0} per second)",
        created.len(),
        secs,
        created.len() as f64 / secs.max(1e-9)
    )?;
    Ok(())
}

/// `palisade check`: the store's integrity; failure on any problem.
pub fn check(b: &mut dyn Backend) -> Result<ExitCode> {
    let health = b.check()?;
    if let Some((tenants, usage)) = health.summary.filter(|_| health.problems.is_empty()) {
        outln!(
            "ok: {} tenants, {} deployments, {} recycled and {} quarantined subnets, no problems",
            tenants,
            usage.allocated,
            usage.recycled_available,
            usage.quarantined
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    for p in &health.problems {
        eprintln!("problem: {p}");
    }
    eprintln!(
        "error: {} problem(s) found in {}",
        health.problems.len(),
        health.place
    );
    Ok(ExitCode::FAILURE)
}

fn join(items: &[impl ToString]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn format_share(share: f64) -> String {
    // Tiny shares of huge pools are the normal case; show them, not "0.00%".
    if share > 0.0 && share < 0.0001 {
        format!("{:.3e}%", share * 100.0)
    } else {
        format!("{:.2}%", share * 100.0)
    }
}

fn egress(e: &EgressProfile) -> String {
    match (e.ip, e.public_ip) {
        (Some(ip), Some(public)) => format!("{} via {ip} (public {public})", e.mode),
        (Some(ip), None) => format!("{} via {ip}", e.mode),
        (None, Some(public)) => format!("{} (public {public})", e.mode),
        (None, None) => e.mode.to_string(),
    }
}

/// An optional address flag, or an error naming the flag and the value.
fn ip_flag(flag: &str, value: Option<&str>) -> Result<Option<std::net::IpAddr>> {
    value
        .map(|ip| {
            ip.parse()
                .with_context(|| format!("invalid {flag} {ip:?}: expected an IPv4 or IPv6 address"))
        })
        .transpose()
}

fn gateway_scope(target: &GatewayTarget) -> Result<GatewayScope> {
    Ok(match target {
        GatewayTarget::Central => GatewayScope::Central,
        GatewayTarget::PerTenant { tenant } => GatewayScope::PerTenant {
            tenant: tenant_name(tenant)?,
        },
        GatewayTarget::PerDeployment { tenant, deployment } => GatewayScope::PerDeployment {
            tenant: tenant_name(tenant)?,
            deployment: deployment_name(deployment)?,
        },
    })
}

fn allow_rule(a: &RuleArgs) -> Result<AllowRule> {
    Ok(AllowRule {
        tenant: tenant_name(&a.tenant)?,
        from: deployment_name(&a.from)?,
        to: deployment_name(&a.to)?,
        port: a.port.as_deref().map(str::parse).transpose()?,
    })
}

fn report_removed(removed: &Removal, deferred: bool) -> Result<()> {
    for (tenant, name, subnet) in &removed.deployments {
        match (deferred, subnet) {
            (false, Some(s)) => {
                outln!("deleted deployment {tenant}/{name}; subnet {s} released for recycling")?;
            }
            (_, Some(s)) => {
                outln!("deleting deployment {tenant}/{name}; the operator releases subnet {s}")?;
            }
            (_, None) => outln!("deleting deployment {tenant}/{name} (no subnet allocated yet)")?,
        }
    }
    for r in &removed.allow_rules {
        outln!("removed allow rule {r}")?;
    }
    for g in &removed.gateways {
        outln!("removed gateway {}", g.id())?;
    }
    Ok(())
}
