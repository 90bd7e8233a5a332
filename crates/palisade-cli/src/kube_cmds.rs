//! `palisade render` and `palisade apply`: flags to [`RenderOptions`], the
//! snapshot to objects, objects to a tree, a stream or a cluster.

use crate::cli::{ApplyArgs, ClusterArgs, OutputFlags, PolicyArg, RenderArgs, RenderTarget};
use crate::output::{StdoutError, out, outln};
use anyhow::Context as _;
use palisade_core::{EgressMode, Snapshot};
use palisade_kube::apply::{ApplyOptions, apply as apply_objects, default_client};
use palisade_kube::cluster::{self, ClusterOptions};
use palisade_kube::{
    EgressCheck, GitSource, InClusterProxy, PolicyFlavour, RenderOptions, render as render_objects,
    to_multi_doc, tree,
};
use std::io::Write as _;
use std::path::Path;

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
            let yaml = palisade_kube::proxy_config::yaml(snapshot, &o, Default::default())?;
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
        out!("{summary}")?;
        outln!(
            "next: review {0}/cilium-values.yaml, then run sh {0}/setup.sh",
            c.out.display()
        )?;
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
            out!("{summary}")?;
        }
        None => {
            let rendered = render_objects(snapshot, &options).context("failed to render")?;
            let objects: Vec<_> = rendered.objects().cloned().collect();
            std::io::stdout()
                .lock()
                .write_all(to_multi_doc(&objects).as_bytes())
                .map_err(StdoutError)?;
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
        outln!("{verb} {id}")?;
    }
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    for id in &report.pruned {
        outln!("{verb} {id}")?;
    }
    outln!(
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
    )?;
    Ok(())
}
