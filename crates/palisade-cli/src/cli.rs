//! The command line, declared with clap.
//!
//! Positional shapes follow the seed scripts (`create <tenant> <deployment>
//! <image> [replicas]`) so their users can switch by changing one word.
//! Values are taken as strings and parsed by the model, so a bad name gets
//! the model's one-line explanation rather than clap's usage dump.

use crate::kube_cmds::{ApplyArgs, RenderArgs};
use crate::output::Format;
use crate::proxy_cmds::ProxyConfigArgs;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Palisade: isolated tenants on a shared Kubernetes cluster: per-deployment
/// IPv6 subnets with recycling, network policy, sandboxed runtime and fixed
/// egress IPs.
#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    propagate_version = true,
    after_help = "State lives in SQLite at --state, else $PALISADE_STATE, else \
                  $XDG_STATE_HOME/palisade/state.db, else ~/.local/state/palisade/state.db.\n\
                  Start with `palisade init`, then `palisade create acme-corp web nginx:alpine 3`."
)]
pub struct Cli {
    /// Path of the state database.
    #[arg(long, global = true, value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// Output format of listing commands.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Where state lives: the SQLite database, or the cluster's custom
    /// resources (create, delete, list, stats, tenant create/delete/list).
    #[arg(long, global = true, value_enum, default_value_t = crate::kube_store::StoreKind::Sqlite)]
    pub store: crate::kube_store::StoreKind,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up the subnet pool (generates a random ULA /48 without --pool).
    Init(InitArgs),
    /// Create a deployment and allocate its subnet (creates the tenant on first use).
    #[command(after_help = "Example: palisade create acme-corp web-frontend nginx:alpine 3")]
    Create(CreateArgs),
    /// Delete a deployment; its subnet is recycled.
    Delete(DeploymentRef),
    /// List deployments and their subnets.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show pool capacity and utilisation.
    Stats,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Same as `tenant create` (the seed's tenant-manager.sh verb).
    #[command(name = "create-tenant")]
    CreateTenant(TenantCreateArgs),
    /// Manage ingress gateways (central, per tenant, per deployment).
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Same as `gateway create` (the seed's tenant-manager.sh verb).
    #[command(name = "create-gateway", subcommand)]
    CreateGateway(GatewayTarget),
    /// Let one deployment reach another of the same tenant.
    #[command(after_help = "Example: palisade allow acme-corp api-backend database --port 5432")]
    Allow(RuleArgs),
    /// Remove an allow rule.
    Disallow(RuleArgs),
    /// List allow rules.
    Rules(ListArgs),
    /// Create many deployments at once from a YAML or JSON list (all or nothing).
    #[command(
        after_help = "FILE holds a list of {tenant, name, image, replicas, ports, labels}; `-` reads stdin.\n\
                            Example:\n  - {tenant: acme-corp, name: web, image: nginx:alpine, replicas: 3}"
    )]
    Import(ImportArgs),
    /// Verify the store's integrity; exits non-zero on any problem.
    Check,
    /// Render Kubernetes objects (a GitOps tree or one YAML stream).
    Render(RenderArgs),
    /// Apply the rendered objects to a cluster with server-side apply.
    Apply(ApplyArgs),
    /// Run the egress proxy: `palisade proxy --config FILE` (also `check`, `hash-password`).
    #[command(disable_help_flag = true)]
    Proxy {
        /// Arguments for the proxy (see docs/proxy.md).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Generate the egress proxy's config from the store (tenants, subnets, egress IPs).
    ProxyConfig(ProxyConfigArgs),
    /// The local Linux dataplane: namespaces, nftables and workloads from the store; verify isolation.
    Lab(crate::lab_cmds::LabArgs),
    /// Serve the web dashboard (tenants, pool, isolation matrix, egress) on 127.0.0.1:7474.
    Dashboard(crate::dashboard_cmds::DashboardArgs),
    /// Serve the egress demo page (run it in a tenant pod): which address does the internet see?
    EgressCheck(crate::dashboard_cmds::EgressCheckArgs),
    /// Print a shell completion script.
    #[command(after_help = "Example: palisade completions bash > /etc/bash_completion.d/palisade")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// IPv6 pool to carve subnets from, e.g. fd00:1234:5678::/48. Default: a random RFC 4193 ULA /48.
    #[arg(long, value_name = "CIDR")]
    pub pool: Option<String>,
    /// Prefix length of each deployment's subnet (64 to 120).
    #[arg(long, value_name = "N", default_value = "96")]
    pub prefix_len: String,
    /// Keep released subnets out of circulation this long (e.g. 10m, 1h). Default: reuse at once.
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub reuse_after: String,
    /// Replace an existing pool (only while no deployments exist).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Tenant name (created with default quotas if new).
    pub tenant: String,
    /// Deployment name, unique within the tenant.
    pub deployment: String,
    /// Container image, e.g. nginx:alpine.
    pub image: String,
    /// Number of pods.
    #[arg(default_value = "1")]
    pub replicas: String,
    /// Port the pods serve on (repeatable). Default: 80.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<String>,
    /// Label for the pods, key=value (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// What the container needs beyond its image: environment, command line,
/// writable directories and privilege.
#[derive(Debug, Args, Default)]
pub struct WorkloadArgs {
    /// Environment variable NAME=VALUE (repeatable). Names Palisade sets for
    /// the egress proxy (HTTP_PROXY, NO_PROXY, PROXY_ADDRESS, ...) are refused.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Environment variable read from a key of a Secret in the tenant's
    /// namespace when the pod starts, e.g. POSTGRES_PASSWORD=pg-auth:password
    /// (repeatable). The value never passes through Palisade.
    #[arg(long = "env-from-secret", value_name = "NAME=SECRET:KEY")]
    pub env_from_secret: Vec<String>,
    /// Replaces the image's entrypoint; repeat for each word, e.g.
    /// --command node --command server.js.
    #[arg(long = "command", value_name = "WORD", allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// Replaces the image's default arguments; repeat for each word.
    #[arg(long = "arg", value_name = "WORD", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// A writable empty directory (emptyDir) mounted at an absolute PATH,
    /// optionally capped at SIZE, e.g. /var/cache/nginx:64Mi (repeatable):
    /// where the image writes under a read-only root filesystem.
    #[arg(long = "scratch", value_name = "PATH[:SIZE]")]
    pub scratch: Vec<String>,
    /// Privilege of the container, named after the Pod Security Standards
    /// level it meets. restricted: runs as UID/GID 65532 (never root),
    /// read-only root filesystem, no capability but NET_BIND_SERVICE. baseline: may start as
    /// root, writable root filesystem, keeps CHOWN, DAC_OVERRIDE, FOWNER,
    /// NET_BIND_SERVICE, SETGID and SETUID so root-started images (nginx,
    /// postgres) can drop privileges. baseline-read-only: baseline with a
    /// read-only root filesystem (add --scratch where it writes). Default:
    /// the platform's --non-root/--read-only-root-fs render settings.
    #[arg(long, value_name = "PROFILE")]
    pub security: Option<String>,
}

impl WorkloadArgs {
    /// Parses every flag through the model; the first bad value is the error.
    pub fn spec(&self) -> Result<palisade_core::WorkloadSpec, palisade_core::ModelError> {
        use palisade_core::model::EnvVar;
        let env = self
            .env
            .iter()
            .map(|e| EnvVar::parse_literal(e))
            .chain(
                self.env_from_secret
                    .iter()
                    .map(|e| EnvVar::parse_secret_ref(e)),
            )
            .collect::<Result<_, _>>()?;
        palisade_core::WorkloadSpec::new(
            env,
            self.command.clone(),
            self.args.clone(),
            self.scratch
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_, _>>()?,
            self.security.as_deref().map(str::parse).transpose()?,
        )
    }
}

#[derive(Debug, Args)]
pub struct DeploymentRef {
    /// Tenant name.
    pub tenant: String,
    /// Deployment name.
    pub deployment: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant.
    #[arg(long, short)]
    pub tenant: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant with quotas, node pool and egress profile.
    Create(TenantCreateArgs),
    /// Delete a tenant (refused while it has deployments, unless --cascade).
    Delete {
        /// Tenant name.
        tenant: String,
        /// Also delete its deployments, allow rules and gateways.
        #[arg(long)]
        cascade: bool,
    },
    /// List tenants.
    #[command(visible_alias = "ls")]
    List,
    /// Show one tenant with its deployments.
    Show {
        /// Tenant name.
        tenant: String,
    },
}

#[derive(Debug, Args)]
pub struct TenantCreateArgs {
    /// Tenant name; its namespace is tenant-<name>.
    pub tenant: String,
    /// CPU quota for the namespace (e.g. 4, 500m).
    #[arg(long, default_value = "4")]
    pub cpu: String,
    /// Memory quota for the namespace (e.g. 8Gi).
    #[arg(long, default_value = "8Gi")]
    pub memory: String,
    /// Most pods the tenant may run.
    #[arg(long, default_value = "20")]
    pub pods: String,
    /// Dedicated node pool; pods get its toleration and nodeSelector.
    #[arg(long, value_name = "POOL")]
    pub node_pool: Option<String>,
    /// How egress leaves the cluster: proxy or cilium-egress-gateway.
    #[arg(long, default_value = "proxy", value_name = "MODE")]
    pub egress_mode: String,
    /// Source address the platform attaches to the tenant's egress gateway
    /// or proxy node (CiliumEgressGatewayPolicy egressIP). It must be on a
    /// node interface: on AWS the node's private address, not the Elastic IP.
    #[arg(long, value_name = "IP")]
    pub egress_ip: Option<String>,
    /// Public address the tenant's traffic appears from, which partners
    /// allow-list, when it differs from --egress-ip (e.g. the AWS Elastic IP
    /// NAT'ed to it). Shown by `tenant show` and the dashboard.
    #[arg(long, value_name = "IP")]
    pub egress_public_ip: Option<String>,
    /// Label for the namespace, key=value (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Create a gateway.
    #[command(subcommand)]
    Create(GatewayTarget),
    /// Delete a gateway.
    #[command(subcommand)]
    Delete(GatewayTarget),
    /// List gateways.
    #[command(visible_alias = "ls")]
    List,
}

/// The seed's three gateway patterns.
#[derive(Debug, Clone, Subcommand)]
pub enum GatewayTarget {
    /// One gateway for every tenant.
    Central,
    /// One gateway for all deployments of a tenant.
    PerTenant {
        /// Tenant name.
        tenant: String,
    },
    /// One gateway for a single deployment.
    PerDeployment {
        /// Tenant name.
        tenant: String,
        /// Deployment name.
        deployment: String,
    },
}

#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Tenant of both deployments.
    pub tenant: String,
    /// The client deployment.
    pub from: String,
    /// The server deployment.
    pub to: String,
    /// Only this port (default: every port the server serves).
    #[arg(long)]
    pub port: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// YAML or JSON file, or - for stdin.
    pub file: PathBuf,
}
