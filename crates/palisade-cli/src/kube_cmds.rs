//! `palisade render` and `palisade apply`: flags to [`RenderOptions`], the
//! snapshot to objects, objects to a tree, a stream or a cluster.

use crate::proxy_cmds::{ProxyConfigArgs, proxy_config};
use anyhow::Context as _;
use palisade_core::{EgressMode, Port, Snapshot};
use palisade_kube::apply::{ApplyOptions, apply as apply_objects, default_client};
use palisade_kube::cluster::{self, ClusterOptions};
use palisade_kube::{
    EgressCheck, GitSource, InClusterProxy, PolicyFlavour, RenderOptions, render as render_objects,
    to_multi_doc, tree,
};
use std::io::Write as _;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

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

impl OutputFlags {
    fn options(&self, snapshot: &Snapshot) -> anyhow::Result<RenderOptions> {
        let mut o = RenderOptions {
            policy: match self.policy {
                PolicyArg::Cilium => PolicyFlavour::Cilium,
                PolicyArg::Kubernetes => PolicyFlavour::Kubernetes,
                PolicyArg::Both => PolicyFlavour::Both,
            },
            pool_mask_size: self.pool_mask_size,
            gateway_class: self.gateway_class.clone(),
            gateway_domain: self.gateway_domain.clone(),
            run_as_non_root: self.non_root,
            read_only_root_fs: self.read_only_root_fs,
            ..RenderOptions::default()
        };
        o.trusted_writers
            .extend(self.trusted_writers.iter().cloned());
        if let Some(a) = &self.proxy_address {
            o.proxy.address = a.clone();
        }
        o.proxy.port = self.proxy_port;
        if self.egress_check {
            let mut demo = EgressCheck::default();
            if let Some(image) = &self.egress_check_image {
                demo.image = image.clone();
            }
            o.egress_check = Some(demo);
        }
        let proxied = snapshot
            .tenants
            .iter()
            .any(|t| t.egress.mode == EgressMode::Proxy);
        if proxied && o.proxy.ip().is_none() && !self.no_proxy_deployment {
            let port = self.proxy_port.get();
            let config = ProxyConfigArgs {
                out: None,
                listen: SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
                // The kubelet probes the admin port on the node's address.
                admin_listen: SocketAddr::from((Ipv6Addr::UNSPECIFIED, InClusterProxy::ADMIN_PORT)),
                // Pods must not use the proxy to reach other pods.
                cluster_deny: vec![snapshot.pool.cidr().into()],
                default_egress: Vec::new(),
            };
            let yaml = proxy_config(&config, snapshot)?
                .to_yaml()
                .context("failed to serialise the proxy config")?;
            let mut p = InClusterProxy::new(yaml);
            if let Some(image) = &self.proxy_image {
                p.image = image.clone();
            }
            p.replicas = self.proxy_replicas;
            o.proxy.in_cluster = Some(p);
        }
        Ok(o)
    }
}

impl OutputFlags {
    /// The Git source of the tree in `dir`: the flags, else what the last
    /// render there recorded. Refuses when neither names a repository, so
    /// no Flux object ever points at a placeholder.
    fn git_source(&self, dir: &Path) -> anyhow::Result<Option<GitSource>> {
        if self.no_flux {
            return Ok(None);
        }
        let recorded = tree::recorded_source(dir)
            .with_context(|| format!("failed to read {}", dir.join(tree::MANIFEST).display()))?;
        let mut git = match (&self.git_url, recorded) {
            (Some(url), recorded) => {
                let mut g = GitSource::new(url)?;
                if let Some(r) = recorded {
                    (g.branch, g.path) = (r.branch, r.path);
                }
                g
            }
            (None, Some(recorded)) => recorded,
            (None, None) => anyhow::bail!(
                "{} has no GitOps tree with a recorded Git repository: pass --git-url URL \
                 (the repository Flux pulls this tree from; later renders reuse it), \
                 or --no-flux to write no Flux objects",
                dir.display()
            ),
        };
        if let Some(branch) = &self.git_branch {
            git = git.with_branch(branch)?;
        }
        if let Some(path) = &self.git_path {
            git = git.with_path(path)?;
        }
        Ok(Some(git))
    }
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

impl ClusterArgs {
    fn options(&self) -> anyhow::Result<ClusterOptions> {
        Ok(ClusterOptions {
            name: self.name.clone(),
            region: self.region.clone(),
            version: self.kubernetes_version.clone(),
            instance_type: self.instance_type.clone(),
            nodes: self.nodes,
            cilium: self.cilium_version.parse()?,
            vpc_cidr: self.vpc_cidr,
            service_cidr: self.service_cidr,
            ipv4_pod_cidr: self.ipv4_pod_cidr,
            ipv6_pod_cidr: self.ipv6_pod_cidr,
            gvisor: cluster::GvisorPin {
                release: self.gvisor_release.clone(),
                runsc_sha512: self.gvisor_runsc_sha512.clone(),
                shim_sha512: self.gvisor_shim_sha512.clone(),
            },
        })
    }
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

/// Runs `palisade render`.
pub fn render(args: &RenderArgs, snapshot: &Snapshot) -> anyhow::Result<()> {
    let options = args.flags.options(snapshot)?;
    if let Some(RenderTarget::Cluster(c)) = &args.target {
        let cluster = c.options()?;
        let files = cluster::files(snapshot, &options, &cluster)
            .context("refusing to write the cluster set-up")?;
        let summary = tree::write_files(&c.out, &files).with_context(|| {
            format!("failed to write the cluster set-up to {}", c.out.display())
        })?;
        print!("{summary}");
        println!(
            "next: review {0}/cilium-values.yaml, then run sh {0}/setup.sh",
            c.out.display()
        );
        return Ok(());
    }
    match &args.out {
        Some(dir) => {
            let mut options = options;
            options.git = args.flags.git_source(dir)?;
            if options.git.is_none() {
                eprintln!("note: --no-flux: writing no Flux objects (clusters/)");
            }
            let reuse = if args.full {
                tree::Reuse::Nothing
            } else {
                tree::Reuse::Unchanged
            };
            let summary = tree::write_snapshot_with(dir, snapshot, &options, reuse)
                .with_context(|| format!("failed to write the GitOps tree to {}", dir.display()))?;
            print!("{summary}");
        }
        None => {
            let rendered = render_objects(snapshot, &options).context("failed to render")?;
            let objects: Vec<_> = rendered.objects().cloned().collect();
            std::io::stdout()
                .lock()
                .write_all(to_multi_doc(&objects).as_bytes())
                .context("failed to write to stdout")?;
        }
    }
    Ok(())
}

/// Runs `palisade apply`.
pub fn apply(args: &ApplyArgs, snapshot: &Snapshot) -> anyhow::Result<()> {
    let options = args.flags.options(snapshot)?;
    let rendered = render_objects(snapshot, &options).context("failed to render")?;
    let objects: Vec<_> = rendered.objects().cloned().collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let report = runtime.block_on(async {
        let client = default_client()
            .await
            .context("failed to find a cluster (KUBECONFIG, ~/.kube/config or in-cluster)")?;
        apply_objects(
            client,
            &objects,
            ApplyOptions {
                dry_run: args.dry_run,
                prune: !args.no_prune,
            },
        )
        .await
        .context("failed to apply")
    })?;
    let verb = if args.dry_run {
        "would apply"
    } else {
        "applied"
    };
    for id in &report.applied {
        println!("{verb} {id}");
    }
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    for id in &report.pruned {
        println!("{verb} {id}");
    }
    println!(
        "{} objects {}, {} {}",
        report.applied.len(),
        if args.dry_run {
            "validated (dry run)"
        } else {
            "applied"
        },
        report.pruned.len(),
        if args.dry_run {
            "would be pruned"
        } else {
            "pruned"
        }
    );
    Ok(())
}
