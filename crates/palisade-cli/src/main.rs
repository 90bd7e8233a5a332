//! The `palisade` binary: parse the command line, open the store, run one
//! command, print, exit. Also installable as `kubectl-palisade`.

mod cli;
mod dashboard_cmds;
mod kube_cmds;
mod kube_store;
mod lab_cmds;
mod output;
mod proxy_cmds;

use anyhow::{Context, Result, anyhow};
use clap::CommandFactory;
use cli::{Cli, Command, Format, GatewayCommand, GatewayTarget, TenantCommand};
use output::{columns, fields, print};
use palisade_core::allocator::Timestamp;
use palisade_core::model::parse_label;
use palisade_core::{
    AllowRule, DeploymentName, EgressMode, EgressProfile, GatewayScope, Labels, Pool, Quota,
    SubnetLen, Tenant, TenantName,
};
use palisade_store::{NewDeployment, Removed, Store};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `palisade list | head` closes stdout early; `print!` then panics.
/// Like other Unix tools, end quietly with the status of a SIGPIPE death.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
    let cli = Cli::command();
    // As a kubectl plugin, usage lines should read `kubectl palisade ...`.
    let invoked_as_plugin = std::env::args_os()
        .next()
        .and_then(|a| {
            PathBuf::from(a)
                .file_name()
                .map(|n| n.to_string_lossy().starts_with("kubectl-"))
        })
        .unwrap_or(false);
    let cli = if invoked_as_plugin {
        cli.bin_name("kubectl palisade")
    } else {
        cli
    };
    let matches = cli.get_matches();
    let args = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    if let Command::Proxy { args } = &args.command {
        // The proxy sets up its own JSON logging.
        return proxy_cmds::run_proxy(args);
    }
    init_tracing(args.verbose);
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

fn state_path(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.state {
        return Ok(p.clone());
    }
    palisade_store::default_path(|k| std::env::var_os(k)).ok_or_else(|| {
        anyhow!("no state location: pass --state PATH or set PALISADE_STATE or HOME")
    })
}

fn open(cli: &Cli) -> Result<Store> {
    Ok(Store::open(&state_path(cli)?)?)
}

fn tenant_name(s: &str) -> Result<TenantName> {
    Ok(s.parse()?)
}

fn deployment_name(s: &str) -> Result<DeploymentName> {
    Ok(s.parse()?)
}

fn labels(raw: &[String]) -> Result<Labels> {
    raw.iter()
        .map(|l| parse_label(l).map_err(Into::into))
        .collect()
}

fn run(cli: Cli) -> Result<ExitCode> {
    if cli.store == kube_store::StoreKind::Kubernetes {
        return kube_store::run(&cli);
    }
    let format = cli.output;
    match &cli.command {
        Command::Init(a) => {
            // Parse everything before touching the disk.
            let (cidr, generated) = match &a.pool {
                Some(p) => (Pool::parse_cidr(p)?, false),
                None => (Pool::ula(rand::random()), true),
            };
            let len: SubnetLen = a.prefix_len.parse()?;
            let reuse_after: Duration =
                humantime::parse_duration(&a.reuse_after).with_context(|| {
                    format!(
                        "invalid --reuse-after {:?} (try 0s, 10m, 1h)",
                        a.reuse_after
                    )
                })?;
            let pool = Pool::new(cidr, len, reuse_after)?;
            let path = state_path(&cli)?;
            let existed = path.exists();
            let result =
                Store::open_or_create(&path).and_then(|mut s| s.init(&pool, a.force, now()));
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
                println!("generated RFC 4193 unique local pool {}", pool.cidr());
            }
            println!(
                "initialised pool {} with {} subnets ({} of them)",
                pool.cidr(),
                pool.subnet_len(),
                pool.capacity()
            );
            if !pool.reuse_after().is_zero() {
                println!(
                    "released subnets are reused after {}",
                    humantime::format_duration(pool.reuse_after())
                );
            }
            println!("state: {}", path.display());
        }
        Command::Create(a) => {
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
            let created = open(&cli)?.create_deployment(&new, now())?;
            let d = &created.deployment;
            match format {
                Format::Table => {
                    if created.tenant_created {
                        println!(
                            "created tenant {} (namespace {})",
                            d.tenant,
                            d.tenant.namespace()
                        );
                    }
                    println!(
                        "{}",
                        fields(&[
                            ("tenant", d.tenant.to_string()),
                            ("deployment", d.name.to_string()),
                            ("subnet", d.subnet.to_string()),
                            ("image", d.image.to_string()),
                            ("replicas", d.replicas.to_string()),
                        ])
                    );
                }
                _ => print(format, d, || (vec![], vec![]))?,
            }
        }
        Command::Delete(a) => {
            let removed = open(&cli)?.delete_deployment(
                &tenant_name(&a.tenant)?,
                &deployment_name(&a.deployment)?,
                now(),
            )?;
            report_removed(&removed);
        }
        Command::List(a) => {
            let tenant = a.tenant.as_deref().map(tenant_name).transpose()?;
            let deployments = open(&cli)?.deployments(tenant.as_ref())?;
            print(format, &deployments, || {
                let rows = deployments
                    .iter()
                    .map(|d| {
                        vec![
                            d.tenant.to_string(),
                            d.name.to_string(),
                            d.subnet.to_string(),
                            d.image.to_string(),
                            d.replicas.to_string(),
                            d.ports
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(","),
                        ]
                    })
                    .collect();
                (
                    vec![
                        "TENANT",
                        "DEPLOYMENT",
                        "SUBNET",
                        "IMAGE",
                        "REPLICAS",
                        "PORTS",
                    ],
                    rows,
                )
            })?;
        }
        Command::Stats => {
            let mut store = open(&cli)?;
            let pool = store.pool()?;
            let usage = store.usage(now())?;
            let stats = serde_json::json!({
                "pool": pool.cidr().to_string(),
                "prefix_len": pool.subnet_len().get(),
                "reuse_after_seconds": pool.reuse_after().as_secs(),
                "capacity": usage.capacity,
                "allocated": usage.allocated,
                "recycled_available": usage.recycled_available,
                "quarantined": usage.quarantined,
                "never_used": usage.never_used,
                "utilisation": usage.utilisation(),
            });
            match format {
                Format::Table => println!(
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
                ),
                _ => print(format, &stats, || (vec![], vec![]))?,
            }
        }
        Command::Tenant(TenantCommand::Create(a)) | Command::CreateTenant(a) => {
            let tenant = Tenant {
                name: tenant_name(&a.tenant)?,
                quota: Quota {
                    cpu: a.cpu.parse()?,
                    memory: a.memory.parse()?,
                    pods: a.pods.parse().with_context(|| {
                        format!("invalid --pods {:?}: expected a whole number", a.pods)
                    })?,
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
            let port = open(&cli)?.create_tenant(&tenant)?;
            println!(
                "created tenant {} (namespace {}, egress-proxy port {port})",
                tenant.name,
                tenant.name.namespace()
            );
        }
        Command::Tenant(TenantCommand::Delete { tenant, cascade }) => {
            let name = tenant_name(tenant)?;
            let removed = open(&cli)?.delete_tenant(&name, *cascade, now())?;
            report_removed(&removed);
            println!("deleted tenant {name}");
        }
        Command::Tenant(TenantCommand::List) => {
            let snapshot = open(&cli)?.snapshot()?;
            print(format, &snapshot.tenants, || {
                let rows = snapshot
                    .tenants
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.to_string(),
                            t.name.namespace(),
                            snapshot.deployments_of(&t.name).count().to_string(),
                            t.quota.cpu.to_string(),
                            t.quota.memory.to_string(),
                            t.quota.pods.to_string(),
                            t.node_pool.as_ref().map_or("-".into(), ToString::to_string),
                            egress(&t.egress),
                        ]
                    })
                    .collect();
                (
                    vec![
                        "TENANT",
                        "NAMESPACE",
                        "DEPLOYMENTS",
                        "CPU",
                        "MEMORY",
                        "PODS",
                        "NODE POOL",
                        "EGRESS",
                    ],
                    rows,
                )
            })?;
        }
        Command::Tenant(TenantCommand::Show { tenant }) => {
            let name = tenant_name(tenant)?;
            let mut store = open(&cli)?;
            let t = store.tenant(&name)?;
            let deployments = store.deployments(Some(&name))?;
            match format {
                Format::Table => {
                    let labels = t
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    println!(
                        "{}",
                        fields(&[
                            ("tenant", t.name.to_string()),
                            ("namespace", t.name.namespace()),
                            (
                                "quota",
                                format!(
                                    "cpu {}, memory {}, pods {}",
                                    t.quota.cpu, t.quota.memory, t.quota.pods
                                )
                            ),
                            (
                                "node pool",
                                t.node_pool.as_ref().map_or("-".into(), ToString::to_string)
                            ),
                            ("egress", egress(&t.egress)),
                            (
                                "egress source ip",
                                t.egress
                                    .ip
                                    .map_or("- (platform default)".into(), |ip| { ip.to_string() })
                            ),
                            (
                                "egress public ip",
                                t.egress
                                    .public_ip
                                    .or(t.egress.ip)
                                    .map_or("- (platform default)".into(), |ip| ip.to_string())
                            ),
                            ("egress-proxy port", t.proxy_port.to_string()),
                            (
                                "labels",
                                if labels.is_empty() {
                                    "-".into()
                                } else {
                                    labels
                                }
                            ),
                            ("deployments", deployments.len().to_string()),
                        ])
                    );
                    if !deployments.is_empty() {
                        let rows = deployments
                            .iter()
                            .map(|d| {
                                vec![
                                    d.name.to_string(),
                                    d.subnet.to_string(),
                                    d.image.to_string(),
                                    d.replicas.to_string(),
                                ]
                            })
                            .collect();
                        println!(
                            "\n{}",
                            columns(&["DEPLOYMENT", "SUBNET", "IMAGE", "REPLICAS"], rows)
                        );
                    }
                }
                _ => print(
                    format,
                    &serde_json::json!({ "tenant": t, "deployments": deployments }),
                    || (vec![], vec![]),
                )?,
            }
        }
        Command::Gateway(GatewayCommand::Create(target)) | Command::CreateGateway(target) => {
            let scope = gateway_scope(target)?;
            open(&cli)?.create_gateway(&scope, now())?;
            println!("created gateway {}", scope.id());
        }
        Command::Gateway(GatewayCommand::Delete(target)) => {
            let scope = gateway_scope(target)?;
            open(&cli)?.delete_gateway(&scope, now())?;
            println!("deleted gateway {}", scope.id());
        }
        Command::Gateway(GatewayCommand::List) => {
            let gateways = open(&cli)?.gateways()?;
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
            })?;
        }
        Command::Allow(a) => {
            let rule = allow_rule(a)?;
            open(&cli)?.allow(&rule, now())?;
            println!("allowed {}", rule);
        }
        Command::Disallow(a) => {
            let rule = allow_rule(a)?;
            open(&cli)?.disallow(&rule, now())?;
            println!("removed allow rule {}", rule);
        }
        Command::Rules(a) => {
            let tenant = a.tenant.as_deref().map(tenant_name).transpose()?;
            let rules = open(&cli)?.allow_rules(tenant.as_ref())?;
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
            })?;
        }
        Command::Import(a) => {
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
            let created = open(&cli)?.create_deployments(&batch, now())?;
            let tenants = created.iter().filter(|c| c.tenant_created).count();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "imported {} deployments ({tenants} new tenants) in {:.3} s ({:.0} per second)",
                created.len(),
                secs,
                created.len() as f64 / secs.max(1e-9)
            );
        }
        Command::Check => {
            let mut store = open(&cli)?;
            let problems = store.check()?;
            if problems.is_empty() {
                let usage = store.usage(now())?;
                let tenants = store.tenants()?.len();
                println!(
                    "ok: {} tenants, {} deployments, {} recycled and {} quarantined subnets, no problems",
                    tenants, usage.allocated, usage.recycled_available, usage.quarantined
                );
            } else {
                for p in &problems {
                    eprintln!("problem: {p}");
                }
                eprintln!(
                    "error: {} problem(s) found in {}",
                    problems.len(),
                    store.path().display()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Render(a) => kube_cmds::render(a, &open(&cli)?.snapshot()?)?,
        Command::Apply(a) => kube_cmds::apply(a, &open(&cli)?.snapshot()?)?,
        Command::Proxy { args } => return Ok(proxy_cmds::run_proxy(args)),
        Command::ProxyConfig(a) => proxy_cmds::write_config(a, &open(&cli)?.snapshot()?)?,
        Command::Lab(a) => return lab_cmds::run(&cli, a),
        Command::Dashboard(a) => return dashboard_cmds::dashboard(a, state_path(&cli)?),
        Command::EgressCheck(a) => return dashboard_cmds::egress_check(a),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "palisade", &mut std::io::stdout());
        }
    }
    Ok(ExitCode::SUCCESS)
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

fn allow_rule(a: &cli::RuleArgs) -> Result<AllowRule> {
    Ok(AllowRule {
        tenant: tenant_name(&a.tenant)?,
        from: deployment_name(&a.from)?,
        to: deployment_name(&a.to)?,
        port: a.port.as_deref().map(str::parse).transpose()?,
    })
}

fn report_removed(removed: &Removed) {
    for d in &removed.deployments {
        println!(
            "deleted deployment {}/{}; subnet {} released for recycling",
            d.tenant, d.name, d.subnet
        );
    }
    for r in &removed.allow_rules {
        println!("removed allow rule {}", r);
    }
    for g in &removed.gateways {
        println!("removed gateway {}", g.id());
    }
}
