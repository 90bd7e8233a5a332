//! `palisade-operator`: runs the operator in a cluster, or prints its CRDs.

use clap::{Parser, Subcommand};
use palisade_core::Pool;
use palisade_kube::{InClusterProxy, PolicyFlavour, ProxyOptions, RenderOptions};
use palisade_operator::run::{RunOptions, run};
use palisade_operator::{Config, crd};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Palisade's Kubernetes operator: reconciles Tenant and TenantDeployment
/// resources into namespaces, workloads and policies, with race-free
/// subnet claims.
#[derive(Debug, Parser)]
#[command(
    name = "palisade-operator",
    version,
    after_help = "Examples:\n  palisade-operator run --pool fd00:1234:5678::/48\n  \
                  palisade-operator crds > crds.yaml\nSee docs/operator.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the controllers (in-cluster or with $KUBECONFIG).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// IPv6 pool to carve subnets from.
    #[arg(long, env = "PALISADE_POOL", value_name = "CIDR")]
    pool: String,
    /// Prefix length of each workload's subnet (64 to 120).
    #[arg(long, env = "PALISADE_PREFIX_LEN", default_value = "96")]
    prefix_len: String,
    /// Keep a released subnet out of circulation this long (e.g. 10m, 1h).
    #[arg(long, env = "PALISADE_REUSE_AFTER", default_value = "0s")]
    reuse_after: String,
    /// Network-policy objects: cilium, kubernetes or both.
    #[arg(long, env = "PALISADE_POLICY", default_value = "cilium")]
    policy: String,
    /// Health and metrics endpoints.
    #[arg(long, env = "PALISADE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Release a claim whose workload is gone after this long.
    #[arg(long, env = "PALISADE_GC_GRACE", default_value = "10m")]
    gc_grace: String,
    /// How soon to look again at a claim whose subnet is still in use
    /// (besides the pool's and pods' deletion events).
    #[arg(long, env = "PALISADE_GC_INTERVAL", default_value = "5m")]
    gc_interval: String,
    /// Reconcile every object at least this often (reads the caches;
    /// writes only what changed).
    #[arg(long, env = "PALISADE_RESYNC", default_value = "10m")]
    resync: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "palisade-system")]
    lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Run without leader election (one replica only).
    #[arg(long)]
    no_leader_election: bool,
}

fn duration(flag: &str, v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v).map_err(|_| format!("invalid --{flag} {v:?} (try 30s, 10m, 1h)"))
}

fn config(a: &RunArgs) -> Result<Config, String> {
    let cidr = Pool::parse_cidr(&a.pool).map_err(|e| e.to_string())?;
    let len = a
        .prefix_len
        .parse()
        .map_err(|e: palisade_core::PoolError| e.to_string())?;
    let reuse_after = duration("reuse-after", &a.reuse_after)?;
    let pool = Pool::new(cidr, len, reuse_after).map_err(|e| e.to_string())?;
    let policy = match a.policy.as_str() {
        "cilium" => PolicyFlavour::Cilium,
        "kubernetes" => PolicyFlavour::Kubernetes,
        "both" => PolicyFlavour::Both,
        other => {
            return Err(format!(
                "invalid --policy {other:?}: cilium, kubernetes or both"
            ));
        }
    };
    Ok(Config {
        pool,
        render: RenderOptions {
            policy,
            // The operator runs the egress proxy in the cluster (its
            // config is the platform's: `platform.rs`), so tenants reach
            // it on the egress nodes, as `palisade render` renders it.
            proxy: ProxyOptions {
                in_cluster: Some(InClusterProxy::new(String::new())),
                ..ProxyOptions::default()
            },
            ..RenderOptions::default()
        },
        gc_grace: duration("gc-grace", &a.gc_grace)?,
        gc_interval: duration("gc-interval", &a.gc_interval)?,
        resync: duration("resync", &a.resync)?,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Crds => match crd::crds_yaml() {
            Ok(files) => {
                for (_, yaml) in files {
                    print!("{yaml}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run(args) => {
            tracing_subscriber::fmt()
                .json()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let config = match config(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(64);
                }
            };
            let identity = args
                .identity
                .clone()
                .unwrap_or_else(|| format!("palisade-operator-{}", std::process::id()));
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = rt.block_on(async {
                let client = kube::Client::try_default()
                    .await
                    .map_err(|e| format!("cannot connect to the cluster: {e}"))?;
                run(
                    client,
                    config,
                    RunOptions {
                        listen: args.listen,
                        lease_namespace: args.lease_namespace.clone(),
                        identity,
                        leader_election: !args.no_leader_election,
                    },
                    palisade_operator::run::signal(),
                )
                .await
                // The error, then its causes (they are not in its message).
                .map_err(|e| palisade_operator::desired::explain(&e))
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
