//! The command line, declared with clap.
//!
//! Positional shapes follow the seed scripts (`create <tenant> <deployment>
//! <image> [replicas]`) so their users can switch by changing one word.
//! Values are taken as strings and parsed by the model, so a bad name gets
//! the model's one-line explanation rather than clap's usage dump.

use crate::output::Format;
use clap::{Args, Parser, Subcommand, ValueEnum};
use palisade_core::Port;
use std::net::{IpAddr, SocketAddr};
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
    /// resources (every store verb but init, apply and lab).
    #[arg(long, global = true, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,

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
    Lab(LabArgs),
    /// Serve the web dashboard (tenants, pool, isolation matrix, egress) on 127.0.0.1:7474.
    Dashboard(DashboardArgs),
    /// Serve the egress demo page (run it in a tenant pod): which address does the internet see?
    EgressCheck(EgressCheckArgs),
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

// ---- render and apply ----

/// Which network-policy objects to render.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PolicyArg {
    /// CiliumNetworkPolicy (default).
    Cilium,
    /// Kubernetes NetworkPolicy.
    Kubernetes,
    /// Both.
    Both,
}

/// Rendering choices shared by `render` and `apply`.
#[derive(Debug, clap::Args)]
pub struct OutputFlags {
    /// Network-policy flavour.
    #[arg(long, value_enum, default_value = "cilium")]
    pub policy: PolicyArg,
    /// gatewayClassName of rendered Gateways.
    #[arg(long, default_value = "cilium")]
    pub gateway_class: String,
    /// Routes get host names <deployment>.<tenant>.<domain>.
    #[arg(long, default_value = "apps.example.com")]
    pub gateway_domain: String,
    /// maskSize of each deployment's CiliumPodIPPool (per-node slice).
    #[arg(long, default_value_t = 112)]
    pub pool_mask_size: u8,
    /// Egress proxy host or IP put into HTTP_PROXY (an IP is allowed by
    /// CIDR, a name is the in-cluster proxy in palisade-system).
    #[arg(long)]
    pub proxy_address: Option<String>,
    /// Egress proxy port.
    #[arg(long, default_value = "3128")]
    pub proxy_port: Port,
    /// Do not render Palisade's egress proxy (a Deployment on egress nodes,
    /// its config from the store); for a proxy --proxy-address names that
    /// runs some other way. A --proxy-address IP never renders it.
    #[arg(long)]
    pub no_proxy_deployment: bool,
    /// Container image of the in-cluster egress proxy.
    #[arg(long, value_name = "IMAGE")]
    pub proxy_image: Option<String>,
    /// Add seed 002's demo app (`palisade egress-check`: "which address does
    /// the internet see?") to every tenant with a deployment.
    #[arg(long)]
    pub egress_check: bool,
    /// Container image of the egress-check demo.
    #[arg(long, value_name = "IMAGE", requires = "egress_check")]
    pub egress_check_image: Option<String>,
    /// Replicas of the in-cluster egress proxy (one per egress node).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub proxy_replicas: u16,
    /// Run containers as non-root (only if every image supports it).
    #[arg(long)]
    pub non_root: bool,
    /// Mount container root file systems read-only.
    #[arg(long)]
    pub read_only_root_fs: bool,
    /// A user (as the API server names it, e.g.
    /// system:serviceaccount:NS:NAME) allowed to write palisade.io/ labels
    /// and ipam.cilium.io/ annotations in tenant namespaces; the rendered
    /// admission policy refuses them from everyone else. Repeatable; adds
    /// to the defaults (the operator's and Flux's service accounts). Add
    /// your own user to run `palisade apply`.
    #[arg(long = "trusted-writer", value_name = "USER")]
    pub trusted_writers: Vec<String>,
    /// Git repository Flux pulls the tree from (http://, https:// or
    /// ssh://). `render --out DIR` needs it the first time; later renders
    /// reuse the one recorded in DIR/.palisade-tree.
    #[arg(long, value_name = "URL")]
    pub git_url: Option<String>,
    /// Git branch Flux follows [default: the recorded one, else main].
    #[arg(long, value_name = "BRANCH")]
    pub git_branch: Option<String>,
    /// Directory of the tree inside the repository [default: the recorded
    /// one, else the root].
    #[arg(long, value_name = "PATH")]
    pub git_path: Option<String>,
    /// Write no Flux objects (clusters/): for applying the overlays
    /// yourself (`kubectl apply -k overlays/<env>`).
    #[arg(long, conflicts_with_all = ["git_url", "git_branch", "git_path"])]
    pub no_flux: bool,
}

/// What to render instead of the workloads.
#[derive(Debug, clap::Subcommand)]
pub enum RenderTarget {
    /// The cluster set-up: eksctl ClusterConfig, Cilium Helm values, gVisor installer.
    ///
    /// Support matrix: Kubernetes 1.31 to 1.34 on EKS with the default node
    /// image (Amazon Linux 2023: containerd 2, config version 3; containerd 1.x
    /// with config version 2 also works), Cilium 1.18.11 (default) or 1.17.17,
    /// Gateway API standard channel v1.2.1 or later (setup.sh installs v1.3.0
    /// for Cilium 1.18, v1.2.1 for 1.17), Flux 2.4 or later.
    ///
    /// Egress IPs (tenants in cilium-egress-gateway mode): Cilium requires the
    /// policy's egressIP to be an address on an interface of the gateway node.
    /// On AWS, assign a secondary private IP to the egress-gateway node's
    /// network interface and use it as egressIP; the Elastic IP associated
    /// with that private IP is the public address partners see. On platforms
    /// where public addresses sit on the node itself, use that address.
    #[command(verbatim_doc_comment)]
    Cluster(Box<ClusterArgs>),
}

/// Arguments of `palisade render cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Directory to write into.
    #[arg(long)]
    pub out: PathBuf,
    /// EKS cluster name.
    #[arg(long, default_value = "palisade")]
    pub name: String,
    /// AWS region.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Kubernetes version: 1.31, 1.32, 1.33 or 1.34.
    #[arg(long, default_value = "1.33")]
    pub kubernetes_version: String,
    /// EC2 instance type of every node group.
    #[arg(long, default_value = "m6i.large")]
    pub instance_type: String,
    /// Nodes per node group.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Cilium chart version: 1.18.11 or 1.17.17.
    #[arg(long, default_value = "1.18.11")]
    pub cilium_version: String,
    /// The VPC eksctl creates.
    #[arg(long, default_value = "192.168.0.0/16")]
    pub vpc_cidr: ipnet::Ipv4Net,
    /// The Kubernetes Service range (EKS: /12 to /24 inside RFC 1918).
    #[arg(long, default_value = "10.100.0.0/16")]
    pub service_cidr: ipnet::Ipv4Net,
    /// IPv4 range of Cilium's default pod pool.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub ipv4_pod_cidr: ipnet::Ipv4Net,
    /// IPv6 range of Cilium's default pod pool [default: a /96 beside the tenant pool].
    #[arg(long)]
    pub ipv6_pod_cidr: Option<ipnet::Ipv6Net>,
    /// gVisor release installed on every node (never "latest").
    #[arg(long, default_value = "20260817.0")]
    pub gvisor_release: String,
    /// sha512 of that release's runsc for the nodes' architecture, from a
    /// source you trust.
    #[arg(long)]
    pub gvisor_runsc_sha512: Option<String>,
    /// sha512 of that release's containerd-shim-runsc-v1.
    #[arg(long)]
    pub gvisor_shim_sha512: Option<String>,
}

/// Arguments of `palisade render`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RenderArgs {
    /// `cluster` renders the cluster set-up instead.
    #[command(subcommand)]
    pub target: Option<RenderTarget>,
    /// Write the GitOps tree (base/, overlays/, and Flux per cluster in
    /// clusters/<env>/) into this directory; needs --git-url or --no-flux
    /// the first time.
    #[arg(long, conflicts_with = "stdout", required_unless_present = "stdout")]
    pub out: Option<PathBuf>,
    /// Print every object as one multi-document YAML stream.
    #[arg(long)]
    pub stdout: bool,
    /// Render every tenant again, even those whose inputs and files are
    /// unchanged since the last write (recorded in DIR/.palisade-tree).
    #[arg(long, requires = "out")]
    pub full: bool,
    #[command(flatten)]
    pub flags: OutputFlags,
}

/// Arguments of `palisade apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Ask the API server to validate only (server-side dry run); delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not delete Palisade-owned objects that are no longer rendered.
    #[arg(long)]
    pub no_prune: bool,
    #[command(flatten)]
    pub flags: OutputFlags,
}

// ---- lab ----

/// `palisade lab`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sudo palisade lab up                 # namespaces, addresses, nftables, workloads\n  \
    sudo palisade lab verify             # the connectivity matrix against the policy model\n  \
    sudo palisade lab sync               # after create/delete/allow: apply the change\n  \
    sudo palisade lab status\n  \
    sudo palisade lab down               # removes everything the lab created\n\
    Needs Linux and root. See docs/lab.md.")]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

/// Which runtime pods use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// gVisor when `runsc` works on this host, else plain.
    Auto,
    /// gVisor (`runsc --rootless do`); a pod it cannot start falls back to plain.
    Runsc,
    /// Plain processes in the pod namespaces.
    Plain,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create the lab from the store: namespaces, addresses, nftables, workloads.
    Up {
        /// Pod runtime.
        #[arg(long, value_enum, default_value_t = RuntimeArg::Auto)]
        runtime: RuntimeArg,
    },
    /// Apply store changes to the running lab (pods added/removed, rules replaced atomically).
    Sync,
    /// Probe every pair and compare with the policy model; exits 1 on any mismatch.
    #[command(after_help = "Writes the report to <lab dir>/verify.json as well.\n\
                            Example: sudo palisade lab verify -o json | jq '.probes[] | select(.ok == false)'")]
    Verify {
        /// Connect timeout per probe (a blocked probe takes this long).
        #[arg(long, default_value = "1500ms")]
        timeout: String,
        /// Probe agents (one per source namespace) running at once.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        /// Print every probe, not only a summary per pair of endpoints.
        #[arg(long)]
        all: bool,
        /// Instead of probing the store's lab: run the workloads these
        /// manifests define (a file, or a directory of .yaml/.yml/.json
        /// files) as lab pods behind their Cilium policies, send packets, and
        /// print the reachability matrix (the objects' verdict beside what
        /// the packets did; exit 1 where they differ). Runs its own lab and
        /// takes it down; needs root.
        #[arg(long, value_name = "PATH")]
        manifests: Option<std::path::PathBuf>,
        /// With --manifests: evaluate the policies only, no lab, no packets
        /// (needs no root).
        #[arg(long, requires = "manifests")]
        objects_only: bool,
    },
    /// What runs: pods with their address, runtime and process.
    Status,
    /// Remove every namespace, link, rule and process of this lab (idempotent).
    Down {
        /// Remove every lab on this host (all `pl-` namespaces), not only this state's.
        #[arg(long)]
        all: bool,
    },
    /// (internal) Run a workload inside a lab namespace.
    #[command(name = "__serve", hide = true)]
    Serve {
        /// The workload spec (JSON), or `@FILE` holding it.
        spec: String,
    },
    /// (internal) Run probes from inside a lab namespace (JSON on stdin).
    #[command(name = "__probe", hide = true)]
    Probe,
}

// ---- dashboard and egress-check ----

/// Arguments of `palisade dashboard`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    palisade dashboard                                  # http://127.0.0.1:7474/, read-only\n  \
    palisade dashboard --proxy-metrics http://127.0.0.1:9128/metrics\n  \
    palisade dashboard --listen 127.0.0.1:0             # any free port; the URL is printed\n  \
    palisade dashboard --listen 0.0.0.0:7474 --token-file tokens --allow-writes\n  \
    palisade dashboard --listen [::]:7474 --kube-auth   # in a pod: cluster RBAC decides\n  \
    palisade dashboard --listen 0.0.0.0:7474 --public-read\n  \
    palisade --store kubernetes dashboard               # the cluster's custom resources ($KUBECONFIG)\n\
    Off loopback the dashboard refuses to start unless callers must authenticate\n\
    (--token-file or --kube-auth) or reads are explicitly public (--public-read;\n\
    writes always need authentication there). A token file has one `TOKEN TENANT[,TENANT...]|* [NAME]`\n\
    per line; the browser asks for the token at /login. Every write attempt is\n\
    logged as one JSON line (who, what, when, result) on stdout or --audit-log.\n\
    The JSON API behind the pages is documented in docs/dashboard.md.")]
pub struct DashboardArgs {
    /// Address to listen on. Default 127.0.0.1:7474; a non-loopback address is only ever used when given here, and only with --token-file, --kube-auth or --public-read.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Allow creating and deleting deployments from the web UI and API (off loopback: only with authentication).
    #[arg(long)]
    pub allow_writes: bool,
    /// Require a bearer token from this file: lines `TOKEN TENANT[,TENANT...]|* [NAME]`; a token sees and changes only its tenants (`*`: all).
    #[arg(long, value_name = "FILE", conflicts_with = "kube_auth")]
    pub token_file: Option<PathBuf>,
    /// Require a Kubernetes bearer token: TokenReview, then SubjectAccessReview on palisade.io tenants/tenantdeployments in tenant-<name> (in-cluster config or kubeconfig).
    #[arg(long)]
    pub kube_auth: bool,
    /// Let callers without a token read everything (never write); needed to serve a non-loopback address without authentication.
    #[arg(long)]
    pub public_read: bool,
    /// Append the audit log (one JSON line per write attempt) to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// The egress proxy's Prometheus endpoint, for the egress page (e.g. http://127.0.0.1:9128/metrics).
    #[arg(long, value_name = "URL")]
    pub proxy_metrics: Option<String>,
    /// Where the lab writes verify.json. Default: lab/ beside the state database.
    #[arg(long, value_name = "DIR")]
    pub lab_dir: Option<PathBuf>,
}

/// Arguments of `palisade egress-check`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs in a tenant pod: the buttons fetch each target from the pod, through the proxy in\n\
    HTTP_PROXY / HTTPS_PROXY (NO_PROXY honoured), and show the answer, the time and what went wrong.\n\
    Examples:\n  \
    palisade egress-check --listen [::]:8080\n  \
    palisade egress-check --target 'External IP=https://ifconfig.me/ip' --target https://httpbin.org/get\n\
    Default targets: External IP=https://ifconfig.me/ip, ipinfo.io=https://ipinfo.io/json, httpbin.org=https://httpbin.org/get."
)]
pub struct EgressCheckArgs {
    /// Address to listen on; in a pod use [::]:8080 (all addresses).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        env = "EGRESS_CHECK_LISTEN"
    )]
    pub listen: SocketAddr,
    /// A button: LABEL=URL (button "Test LABEL") or just URL. Repeatable; replaces the defaults.
    #[arg(
        long = "target",
        value_name = "[LABEL=]URL",
        env = "EGRESS_CHECK_TARGETS",
        value_delimiter = ','
    )]
    pub targets: Vec<String>,
    /// Time limit per test request (e.g. 10s, 1500ms).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub timeout: String,
}

// ---- store ----

/// Where state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The local SQLite database (--state).
    #[default]
    Sqlite,
    /// The cluster's API server ($KUBECONFIG), via the operator's custom resources.
    Kubernetes,
}

/// Arguments of `palisade proxy-config`.
#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    /// Write the config here instead of stdout (atomically, so a running proxy reloads a whole file).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Address the proxy listens on.
    #[arg(long, default_value = "0.0.0.0:3128")]
    pub listen: SocketAddr,
    /// Address of the proxy's admin listener (/metrics, /healthz).
    #[arg(long, default_value = "127.0.0.1:9128")]
    pub admin_listen: SocketAddr,
    /// Cluster pod/service CIDR no tenant may reach (repeatable).
    #[arg(long = "cluster-deny", value_name = "CIDR")]
    pub cluster_deny: Vec<ipnet::IpNet>,
    /// Default egress source address for tenants without one (repeatable: one IPv4, one IPv6).
    #[arg(long = "default-egress", value_name = "IP")]
    pub default_egress: Vec<IpAddr>,
}
