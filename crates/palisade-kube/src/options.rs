//! Everything about the Kubernetes output that is a platform choice rather
//! than part of the model: one value, with defaults that reproduce the
//! seeds, so the CLI maps flags onto it and tests build it in one line.

use palisade_core::Port;
use std::net::IpAddr;

/// Which network-policy objects to render.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PolicyFlavour {
    /// `CiliumNetworkPolicy` only (the default: selectors, entities, CIDRs).
    #[default]
    Cilium,
    /// Plain `NetworkPolicy` only, for any CNI.
    Kubernetes,
    /// Both; they allow the same flows.
    Both,
}

impl PolicyFlavour {
    /// Whether Cilium policies are rendered.
    pub fn cilium(self) -> bool {
        matches!(self, PolicyFlavour::Cilium | PolicyFlavour::Both)
    }
    /// Whether Kubernetes policies are rendered.
    pub fn kubernetes(self) -> bool {
        matches!(self, PolicyFlavour::Kubernetes | PolicyFlavour::Both)
    }
}

/// The image of this Palisade release, for what runs the `palisade`
/// binary in the cluster (the egress proxy, the egress-check demo).
pub const PALISADE_IMAGE: &str =
    concat!("ghcr.io/palisade-dev/palisade:", env!("CARGO_PKG_VERSION"));

/// Where tenants' HTTP(S) traffic goes in `proxy` egress mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Host name or address put into `HTTP_PROXY`. An IP address is reached
    /// by CIDR (a proxy VM outside the cluster, as in seed 002); a name is
    /// taken to be the in-cluster proxy selected by `namespace`/`app`.
    pub address: String,
    /// Port.
    pub port: Port,
    /// Namespace of the in-cluster proxy.
    pub namespace: String,
    /// Value of the proxy pods' `app.kubernetes.io/name` label.
    pub app: String,
    /// `NO_PROXY`: destinations reached directly.
    pub no_proxy: String,
    /// Run Palisade's egress proxy in the cluster (rendered into
    /// `base/platform/`); `None` leaves running it to someone else.
    pub in_cluster: Option<InClusterProxy>,
}

/// Palisade's egress proxy as a Deployment on dedicated egress nodes.
///
/// Each tenant leaves from its own fixed address, which must be an address
/// of the machine the proxy runs on; in a cluster that means the egress
/// nodes' interfaces (the cloud's secondary or elastic IPs), so the proxy
/// pods use the host network and run only on nodes with `node_label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InClusterProxy {
    /// Container image holding the `palisade` binary.
    pub image: String,
    /// Replicas (at most one per egress node).
    pub replicas: u16,
    /// Label (and `NoSchedule` taint) of the egress nodes.
    pub node_label: (String, String),
    /// The proxy's YAML config (`palisade proxy-config`), put in its
    /// ConfigMap; the proxy reloads it when the kubelet updates the file.
    pub config: String,
}

impl InClusterProxy {
    /// The proxy's listen port inside its config; the admin port serves
    /// `/metrics`, `/healthz` and `/readyz`.
    pub const ADMIN_PORT: u16 = 9128;

    /// Defaults for everything but the config.
    pub fn new(config: String) -> Self {
        Self {
            image: PALISADE_IMAGE.into(),
            replicas: 2,
            node_label: ("palisade.io/egress-proxy".into(), "true".into()),
            config,
        }
    }
}

impl ProxyOptions {
    /// The address, if it is an IP (a proxy outside the cluster).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            address: "palisade-proxy.palisade-system.svc.cluster.local".into(),
            port: palisade_core::policy::default_proxy_port(),
            namespace: "palisade-system".into(),
            app: "palisade-proxy".into(),
            no_proxy: "localhost,127.0.0.1,::1,.svc,.cluster.local".into(),
            in_cluster: None,
        }
    }
}

/// CPU and memory of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// CPU request (Kubernetes quantity).
    pub cpu_request: String,
    /// Memory request.
    pub memory_request: String,
    /// CPU limit.
    pub cpu_limit: String,
    /// Memory limit.
    pub memory_limit: String,
}

impl Resources {
    /// Seed 002's small footprint: 50m/64Mi requested, 100m/128Mi limit.
    pub fn small() -> Self {
        Self {
            cpu_request: "50m".into(),
            memory_request: "64Mi".into(),
            cpu_limit: "100m".into(),
            memory_limit: "128Mi".into(),
        }
    }
}

impl Default for Resources {
    /// 100m/128Mi requested, 500m/512Mi limit.
    fn default() -> Self {
        Self {
            cpu_request: "100m".into(),
            memory_request: "128Mi".into(),
            cpu_limit: "500m".into(),
            memory_limit: "512Mi".into(),
        }
    }
}

/// What one environment overlay changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// Directory name under `overlays/` and value of `ENVIRONMENT`.
    pub name: String,
    /// Replicas for every deployment; `None` keeps each deployment's own.
    pub replicas: Option<u32>,
    /// Container resources; `None` keeps the base's.
    pub resources: Option<Resources>,
    /// Proxy address for this environment; `None` keeps the base's.
    pub proxy_address: Option<String>,
    /// Flux reconcile interval.
    pub interval: String,
    /// Flux apply timeout.
    pub timeout: Option<String>,
    /// Flux retry interval.
    pub retry_interval: Option<String>,
}

impl Environment {
    /// Seed 002's development: one replica, small resources, 5m interval.
    pub fn development() -> Self {
        Self {
            name: "development".into(),
            replicas: Some(1),
            resources: Some(Resources::small()),
            proxy_address: None,
            interval: "5m".into(),
            timeout: None,
            retry_interval: None,
        }
    }

    /// Seed 002's production: the model's replicas, 1m interval, 5m
    /// timeout, 1m retry.
    pub fn production() -> Self {
        Self {
            name: "production".into(),
            replicas: None,
            resources: None,
            proxy_address: None,
            interval: "1m".into(),
            timeout: Some("5m".into()),
            retry_interval: Some("1m".into()),
        }
    }
}

/// The Git repository Flux pulls the tree from.
///
/// There is no default URL: Flux objects pointing at a placeholder would
/// be applied and then fail on every reconcile, so the user names the
/// repository (`--git-url`) or the tree gets no Flux objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// Object name of the `GitRepository`.
    pub name: String,
    /// Repository URL.
    pub url: String,
    /// Branch.
    pub branch: String,
    /// Where the tree lives inside the repository (`.` = the root).
    pub path: String,
    /// Fetch interval.
    pub interval: String,
}

impl GitSource {
    /// Branch `main`, the tree at the repository's root, fetched every
    /// minute.
    ///
    /// The URL must be `http://`, `https://` or `ssh://`: the pattern of
    /// `GitRepository.spec.url` in source-controller v1.4.0 (Flux 2.4)
    /// and v1.9.1 is `^(http|https|ssh)://.*$`, so the API server refuses
    /// the scp-like `git@host:org/repo`.
    pub fn new(url: &str) -> Result<Self, crate::Error> {
        let bad = |reason: &str| crate::Error::Unrepresentable {
            what: format!("the GitRepository for git URL {url:?}"),
            reason: reason.into(),
        };
        if !["http://", "https://", "ssh://"]
            .iter()
            .any(|s| url.starts_with(s) && url.len() > s.len())
        {
            return Err(bad(
                "Flux accepts only http://, https:// or ssh:// URLs (write git@host:org/repo as ssh://git@host/org/repo)",
            ));
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("it contains white space or control characters"));
        }
        Ok(Self {
            name: "palisade".into(),
            url: url.into(),
            branch: "main".into(),
            path: ".".into(),
            interval: "1m".into(),
        })
    }

    /// Sets the branch; refuses an empty name or white space.
    pub fn with_branch(mut self, branch: &str) -> Result<Self, crate::Error> {
        if branch.is_empty() || branch.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(crate::Error::Unrepresentable {
                what: format!("the GitRepository for git branch {branch:?}"),
                reason: "a branch name is not empty and has no white space".into(),
            });
        }
        self.branch = branch.into();
        Ok(self)
    }

    /// Sets the tree's directory inside the repository; refuses absolute
    /// paths and `..`, which Flux cannot resolve inside the source.
    pub fn with_path(mut self, path: &str) -> Result<Self, crate::Error> {
        let trimmed = path.trim_start_matches("./").trim_end_matches('/');
        if path.starts_with('/')
            || trimmed.split('/').any(|c| c == "..")
            || path.chars().any(char::is_control)
        {
            return Err(crate::Error::Unrepresentable {
                what: format!("the Flux Kustomization for git path {path:?}"),
                reason: "the path is relative to the repository's root, without `..`".into(),
            });
        }
        self.path = if trimmed.is_empty() {
            ".".into()
        } else {
            trimmed.into()
        };
        Ok(self)
    }
}

/// All rendering choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Which policy objects.
    pub policy: PolicyFlavour,
    /// `maskSize` of each deployment's `CiliumPodIPPool`; raised past the
    /// subnet's prefix length when it is not longer.
    pub pool_mask_size: u8,
    /// `gatewayClassName` of rendered gateways.
    pub gateway_class: String,
    /// Namespace of the central gateway.
    pub gateway_namespace: String,
    /// Routes get host names `<deployment>.<tenant>.<domain>`.
    pub gateway_domain: String,
    /// The egress proxy.
    pub proxy: ProxyOptions,
    /// Runtime class of every tenant pod.
    pub runtime_class: String,
    /// Base container resources.
    pub resources: Resources,
    /// Run containers as non-root (only if the images allow it).
    pub run_as_non_root: bool,
    /// Mount the root file system read-only.
    pub read_only_root_fs: bool,
    /// Label that selects egress-gateway nodes in `cilium-egress-gateway` mode.
    pub egress_gateway_node_label: (String, String),
    /// Overlays.
    pub environments: Vec<Environment>,
    /// Flux source; `None` writes no Flux objects.
    pub git: Option<GitSource>,
    /// Run seed 002's demo app (`palisade egress-check`) in every tenant
    /// with at least one deployment.
    pub egress_check: Option<EgressCheck>,
    /// Users allowed to write `palisade.io/` labels and `ipam.cilium.io/`
    /// annotations into tenant namespaces (the rendered admission policy):
    /// whoever applies Palisade's objects, e.g. the operator's or Flux's
    /// service account, or your own user for `palisade apply`.
    pub trusted_writers: Vec<String>,
}

/// The egress-check demo app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressCheck {
    /// Container image holding the `palisade` binary.
    pub image: String,
}

impl Default for EgressCheck {
    fn default() -> Self {
        Self {
            image: PALISADE_IMAGE.into(),
        }
    }
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            policy: PolicyFlavour::default(),
            pool_mask_size: 112,
            gateway_class: "cilium".into(),
            gateway_namespace: "palisade-gateways".into(),
            gateway_domain: "apps.example.com".into(),
            proxy: ProxyOptions::default(),
            runtime_class: "gvisor".into(),
            resources: Resources::default(),
            run_as_non_root: false,
            read_only_root_fs: false,
            egress_gateway_node_label: ("palisade.io/egress-gateway".into(), "true".into()),
            environments: vec![Environment::development(), Environment::production()],
            git: None,
            egress_check: None,
            trusted_writers: vec![
                "system:serviceaccount:palisade-system:palisade-operator".into(),
                "system:serviceaccount:flux-system:kustomize-controller".into(),
            ],
        }
    }
}
