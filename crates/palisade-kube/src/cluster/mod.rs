//! `palisade render cluster`: what seed 000's `setup.sh` did by hand.
//!
//! The cluster must match the objects rendered for it: a node group per
//! tenant node pool with the taint and label the Deployments tolerate and
//! select, multi-pool IPAM for the per-deployment `CiliumPodIPPool`s, the
//! egress gateway when a tenant uses it, and runsc on every node for the
//! `gvisor` RuntimeClass. Generating all of it from the same snapshot keeps
//! those pairs in step, and checking the address plan and versions here
//! turns a cluster that would never become ready into an error before
//! anything is written.

mod gvisor;
mod network;

pub use gvisor::{
    ContainerdConfig, GVISOR_READY_LABEL, GvisorPin, RUNSC_RUNTIME_TYPE, register_script,
    runsc_table,
};
pub use network::AddressPlan;

use crate::render::{NODE_POOL_LABEL, NODE_POOL_TAINT};
use crate::tree::Files;
use crate::{RenderOptions, yaml};
use palisade_core::{EgressMode, Snapshot};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Kubernetes minor versions Palisade targets (EKS standard support).
pub const KUBERNETES_VERSIONS: [&str; 4] = ["1.31", "1.32", "1.33", "1.34"];

/// Image of the gVisor installer: sh, curl with a CA bundle (so downloads
/// are TLS-verified) and busybox's sha512sum, awk and chroot.
pub const INSTALLER_IMAGE: &str = "curlimages/curl:8.11.1";

/// A Cilium release Palisade is tested against, with the Gateway API
/// release its Gateway controller is built for (Cilium's
/// Documentation/network/servicemesh/gateway-api/gateway-api.rst:
/// "the below CRDs from Gateway API v1.2.0 / v1.3.0 must be pre-installed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CiliumRelease {
    /// Cilium 1.17.17, Gateway API v1.2.1 (the v1.2 patch release).
    V1_17,
    /// Cilium 1.18.11, Gateway API v1.3.0.
    V1_18,
}

impl CiliumRelease {
    /// Every supported release, oldest first.
    pub const ALL: [CiliumRelease; 2] = [Self::V1_17, Self::V1_18];

    /// The Helm chart version pinned in `setup.sh`.
    pub fn chart_version(self) -> &'static str {
        match self {
            Self::V1_17 => "1.17.17",
            Self::V1_18 => "1.18.11",
        }
    }

    /// The standard-channel Gateway API release installed before Cilium.
    pub fn gateway_api(self) -> &'static str {
        match self {
            Self::V1_17 => "v1.2.1",
            Self::V1_18 => "v1.3.0",
        }
    }
}

impl std::str::FromStr for CiliumRelease {
    type Err = ClusterError;

    fn from_str(s: &str) -> Result<Self, ClusterError> {
        let s = s.trim_start_matches('v');
        Self::ALL
            .into_iter()
            .find(|r| r.chart_version() == s || r.chart_version().starts_with(&format!("{s}.")))
            .ok_or_else(|| ClusterError::UnsupportedCilium(s.into()))
    }
}

/// Why `render cluster` refused its options; nothing is written then.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Two address ranges of the cluster overlap.
    #[error("the {a_name} range {a} overlaps the {b_name} range {b}: choose disjoint ranges")]
    Overlap {
        /// First range's role.
        a_name: String,
        /// First range.
        a: ipnet::IpNet,
        /// Second range's role.
        b_name: String,
        /// Second range.
        b: ipnet::IpNet,
    },
    /// EKS refuses this Service range.
    #[error(
        "service range {0} is not accepted by EKS: it must lie in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 and be /12 to /24"
    )]
    ServiceRange(ipnet::Ipv4Net),
    /// A Kubernetes version outside the support matrix.
    #[error("Kubernetes {0} is not supported: use one of 1.31, 1.32, 1.33, 1.34")]
    UnsupportedKubernetes(String),
    /// A Cilium version outside the support matrix.
    #[error("Cilium {0} is not supported: use 1.18.11 (default) or 1.17.17")]
    UnsupportedCilium(String),
    /// No pinned checksum for a gVisor binary.
    #[error(
        "no sha512 given for gVisor's {0}: pass --gvisor-runsc-sha512 and --gvisor-shim-sha512 (see docs/kubernetes.md, Cluster set-up)"
    )]
    GvisorChecksumMissing(String),
    /// A checksum that is not 128 hex digits.
    #[error("the sha512 given for gVisor's {0} is not 128 hex digits")]
    GvisorChecksumInvalid(String),
    /// A release name that is not a pinned release.
    #[error("gVisor release {0:?} is not a release name such as 20260817.0 (never latest)")]
    GvisorRelease(String),
}

/// Cluster-level choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// EKS cluster name.
    pub name: String,
    /// AWS region.
    pub region: String,
    /// Kubernetes version (one of [`KUBERNETES_VERSIONS`]).
    pub version: String,
    /// Instance type of every node group.
    pub instance_type: String,
    /// Nodes per node group.
    pub nodes: u32,
    /// Cilium release the values are written for and `setup.sh` installs.
    pub cilium: CiliumRelease,
    /// The VPC eksctl creates (eksctl's default is 192.168.0.0/16).
    pub vpc_cidr: ipnet::Ipv4Net,
    /// The Kubernetes Service range, written explicitly.
    pub service_cidr: ipnet::Ipv4Net,
    /// IPv4 range of Cilium's default pod pool.
    pub ipv4_pod_cidr: ipnet::Ipv4Net,
    /// IPv6 range of Cilium's default pod pool; `None` takes a /96 beside
    /// the tenant pool.
    pub ipv6_pod_cidr: Option<ipnet::Ipv6Net>,
    /// The gVisor release the installer puts on every node.
    pub gvisor: GvisorPin,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            name: "palisade".into(),
            region: "us-east-1".into(),
            version: "1.33".into(),
            instance_type: "m6i.large".into(),
            nodes: 2,
            cilium: CiliumRelease::V1_18,
            vpc_cidr: ipnet::Ipv4Net::new_assert([192, 168, 0, 0].into(), 16),
            service_cidr: ipnet::Ipv4Net::new_assert([10, 100, 0, 0].into(), 16),
            // Outside eksctl's default VPC and both ranges EKS picks for
            // Services (10.100.0.0/16, 172.20.0.0/16).
            ipv4_pod_cidr: ipnet::Ipv4Net::new_assert([10, 244, 0, 0].into(), 16),
            ipv6_pod_cidr: None,
            gvisor: GvisorPin::default(),
        }
    }
}

impl ClusterOptions {
    /// The checked address plan for this snapshot's tenant pool.
    pub fn address_plan(&self, snapshot: &Snapshot) -> Result<AddressPlan, ClusterError> {
        AddressPlan::new(
            self.vpc_cidr,
            self.service_cidr,
            self.ipv4_pod_cidr,
            self.ipv6_pod_cidr,
            snapshot.pool.cidr(),
        )
    }

    /// `uname -m` of the nodes: Graviton families (m7g, c6gn, t4g...) are arm64.
    pub fn node_arch(&self) -> &'static str {
        let family = self.instance_type.split('.').next().unwrap_or_default();
        let after_gen = family.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let suffix = after_gen.trim_start_matches(|c: char| c.is_ascii_digit());
        if suffix.starts_with('g') {
            "aarch64"
        } else {
            "x86_64"
        }
    }
}

/// Every file of the cluster set-up, relative to the output directory.
pub fn files(
    snapshot: &Snapshot,
    render: &RenderOptions,
    cluster: &ClusterOptions,
) -> Result<Files, ClusterError> {
    if !KUBERNETES_VERSIONS.contains(&cluster.version.as_str()) {
        return Err(ClusterError::UnsupportedKubernetes(cluster.version.clone()));
    }
    let plan = cluster.address_plan(snapshot)?;
    let installer_docs = gvisor::installer(&cluster.gvisor, cluster.node_arch(), INSTALLER_IMAGE)?;
    let mut files = Files::new();
    files.insert(
        "eksctl-cluster.yaml".into(),
        yaml::to_string(&eksctl(snapshot, render, cluster, &plan)),
    );
    files.insert(
        "cilium-values.yaml".into(),
        yaml::to_string(&cilium_values(render, &plan)),
    );
    let mut installer = String::new();
    for doc in installer_docs {
        installer.push_str("---\n");
        yaml::emit(&mut installer, &doc);
    }
    files.insert("gvisor-installer.yaml".into(), installer);
    files.insert("setup.sh".into(), setup_script(cluster));
    Ok(files)
}

fn node_group(name: &str, cluster: &ClusterOptions, labels: Value, taints: Vec<Value>) -> Value {
    let mut taints = taints;
    // Pods must wait for Cilium, not start on the AWS CNI.
    taints.push(
        json!({ "key": "node.cilium.io/agent-not-ready", "value": "true", "effect": "NoExecute" }),
    );
    json!({
        "name": name,
        "instanceType": cluster.instance_type,
        "desiredCapacity": cluster.nodes,
        "minSize": cluster.nodes,
        "maxSize": cluster.nodes * 2,
        "amiFamily": "AmazonLinux2023",
        "labels": labels,
        "taints": taints,
        // Pods must not borrow the node's IAM role: eksctl blocks IMDS for
        // non-host-network pods and requires IMDSv2 tokens (eksctl docs,
        // "Security": disablePodIMDS; schema: disableIMDSv1).
        "disableIMDSv1": true,
        "disablePodIMDS": true,
    })
}

fn pool_group(name: &str, cluster: &ClusterOptions, (k, v): (&str, &str)) -> Value {
    node_group(
        name,
        cluster,
        json!({ k: v }),
        vec![json!({ "key": k, "value": v, "effect": "NoSchedule" })],
    )
}

fn eksctl(
    snapshot: &Snapshot,
    render: &RenderOptions,
    cluster: &ClusterOptions,
    plan: &AddressPlan,
) -> Value {
    let mut groups = vec![node_group("system", cluster, json!({}), vec![])];
    let mut pools: BTreeMap<String, String> = BTreeMap::new();
    for t in &snapshot.tenants {
        if let Some(pool) = &t.node_pool {
            pools.insert(pool.to_string(), t.name.to_string());
        }
    }
    for (pool, tenant) in &pools {
        groups.push(node_group(
            pool,
            cluster,
            json!({ NODE_POOL_LABEL: pool, NODE_POOL_TAINT: tenant }),
            vec![json!({ "key": NODE_POOL_TAINT, "value": tenant, "effect": "NoSchedule" })],
        ));
    }
    if snapshot
        .tenants
        .iter()
        .any(|t| t.egress.mode == EgressMode::CiliumEgressGateway)
    {
        let (k, v) = &render.egress_gateway_node_label;
        let mut g = pool_group("egress-gateway", cluster, (k, v));
        // The egress IPs are secondary private addresses of these nodes'
        // interfaces with Elastic IPs associated: the group must not scale
        // (a new node has none), and sits in public subnets so the Elastic
        // IPs route.
        g["maxSize"] = json!(cluster.nodes);
        g["privateNetworking"] = json!(false);
        groups.push(g);
    }
    if let Some(p) = &render.proxy.in_cluster {
        // Attach the tenants' egress addresses to these nodes' interfaces
        // (secondary private IPs with elastic IPs) after creating them.
        let (k, v) = &p.node_label;
        groups.push(pool_group("egress-proxy", cluster, (k, v)));
    }
    json!({
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": { "name": cluster.name, "region": cluster.region, "version": cluster.version },
        "iam": { "withOIDC": true },
        "vpc": { "cidr": plan.vpc.to_string() },
        "kubernetesNetworkConfig": { "ipFamily": "IPv4", "serviceIPv4CIDR": plan.service.to_string() },
        // Cilium replaces the AWS CNI and kube-proxy.
        "addonsConfig": { "disableDefaultAddons": true },
        "addons": [{ "name": "coredns" }],
        "managedNodeGroups": groups,
    })
}

fn cilium_values(render: &RenderOptions, plan: &AddressPlan) -> Value {
    json!({
        "ipv4": { "enabled": true },
        "ipv6": { "enabled": true },
        "ipam": {
            "mode": "multi-pool",
            // The agent waits for every pre-allocated pool in every enabled
            // family before it serves pods (cilium pkg/ipam/multipool.go,
            // waitForAllPools), so the default pool has both families.
            "operator": { "autoCreateCiliumPodIPPools": { "default": {
                "ipv4": { "cidrs": [plan.pod_v4.to_string()], "maskSize": 24 },
                "ipv6": { "cidrs": [plan.pod_v6.to_string()], "maskSize": network::IPV6_NODE_MASK },
            }}},
        },
        "routingMode": "native",
        "autoDirectNodeRoutes": true,
        // Multi-pool IPAM needs per-endpoint routes (Cilium multi-pool
        // docs, Limitations).
        "endpointRoutes": { "enabled": true },
        "ipv4NativeRoutingCIDR": plan.pod_v4.to_string(),
        "ipv6NativeRoutingCIDR": plan.v6_native_routing.to_string(),
        "enableIPv4Masquerade": true,
        "enableIPv6Masquerade": true,
        "bpf": { "masquerade": true },
        "encryption": { "enabled": true, "type": "wireguard" },
        "hubble": { "enabled": true, "relay": { "enabled": true }, "ui": { "enabled": true } },
        "kubeProxyReplacement": true,
        // Set with --set k8sServiceHost=... (see setup.sh): with no
        // kube-proxy, Cilium must reach the API server directly.
        "k8sServiceHost": "REPLACE_WITH_API_SERVER_HOST",
        "k8sServicePort": 443,
        // gVisor's netstack bypasses the socket-level load balancer, so it
        // must only serve the host namespace; pods use the tc-level one.
        "socketLB": { "hostNamespaceOnly": true },
        "egressGateway": { "enabled": true },
        "gatewayAPI": { "enabled": true },
        // Tenants reach the host-network egress proxy through `toNodes`
        // selectors, which match node labels only when this is on.
        "nodeSelectorLabels": render.proxy.in_cluster.is_some(),
    })
}

fn setup_script(cluster: &ClusterOptions) -> String {
    format!(
        r#"#!/bin/sh
# Generated by `palisade render cluster`: creates the EKS cluster, installs
# the Gateway API CRDs, Cilium and gVisor. Needs aws, eksctl, kubectl and helm.
set -eu
cd "$(dirname "$0")"
eksctl create cluster -f eksctl-cluster.yaml
API_SERVER=$(aws eks describe-cluster --name {name} --region {region} \
  --query cluster.endpoint --output text | sed 's#https://##')
# Cilium's operator looks for the Gateway API CRDs when it starts and
# leaves its Gateway controller off if they are missing.
kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/{gateway_api}/standard-install.yaml
kubectl wait --for condition=Established --timeout=2m crd/gateways.gateway.networking.k8s.io
helm repo add cilium https://helm.cilium.io/ >/dev/null
helm upgrade --install cilium cilium/cilium --version {cilium} \
  --namespace kube-system -f cilium-values.yaml --set k8sServiceHost="$API_SERVER"
kubectl -n kube-system rollout status ds/cilium --timeout=10m
kubectl apply -f gvisor-installer.yaml
kubectl -n kube-system rollout status ds/gvisor-install --timeout=10m
echo "cluster {name} ready: now apply the GitOps tree or run palisade apply"
"#,
        name = cluster.name,
        region = cluster.region,
        cilium = cluster.cilium.chart_version(),
        gateway_api = cluster.cilium.gateway_api(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    /// Options with (made-up) gVisor checksums, which have no default.
    pub(crate) fn pinned() -> ClusterOptions {
        let mut o = ClusterOptions::default();
        o.gvisor.runsc_sha512 = Some("1".repeat(128));
        o.gvisor.shim_sha512 = Some("2".repeat(128));
        o
    }

    #[test]
    fn node_groups_match_what_deployments_tolerate_and_select() {
        let files = files(&fixtures::seed(), &RenderOptions::default(), &pinned()).unwrap();
        let cfg: serde_json::Value =
            serde_yaml_ng::from_str(&files["eksctl-cluster.yaml"]).unwrap();
        let groups = cfg["managedNodeGroups"].as_array().unwrap();
        let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["system", "acme-pool", "egress-gateway"]);
        let acme = &groups[1];
        assert_eq!(acme["labels"]["node-pool"], "acme-pool");
        assert_eq!(acme["taints"][0]["key"], "palisade.io/tenant");
        assert_eq!(acme["taints"][0]["value"], "acme-corp");
        assert_eq!(acme["taints"][0]["effect"], "NoSchedule");
        assert_eq!(groups[2]["labels"]["palisade.io/egress-gateway"], "true");
    }

    #[test]
    fn cilium_values_enable_what_the_rendered_objects_need() {
        let files = files(&fixtures::seed(), &RenderOptions::default(), &pinned()).unwrap();
        let v: serde_json::Value = serde_yaml_ng::from_str(&files["cilium-values.yaml"]).unwrap();
        assert_eq!(v["ipam"]["mode"], "multi-pool");
        assert_eq!(v["ipv6"]["enabled"], true);
        assert_eq!(v["encryption"]["type"], "wireguard");
        assert_eq!(v["hubble"]["enabled"], true);
        assert_eq!(v["kubeProxyReplacement"], true);
        assert_eq!(v["socketLB"]["hostNamespaceOnly"], true);
        assert_eq!(v["egressGateway"]["enabled"], true);
        assert_eq!(v["ipv6NativeRoutingCIDR"], "fd00:10::/47");
        assert_eq!(v["endpointRoutes"]["enabled"], true);
    }
}
