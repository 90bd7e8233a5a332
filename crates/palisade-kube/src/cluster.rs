//! `palisade render cluster`: what seed 000's `setup.sh` did by hand.
//!
//! The cluster must match the objects rendered for it: a node group per
//! tenant node pool with the taint and label the Deployments tolerate and
//! select, multi-pool IPAM for the per-deployment `CiliumPodIPPool`s, the
//! egress gateway when a tenant uses it, and runsc on every node for the
//! `gvisor` RuntimeClass. Generating all of it from the same snapshot keeps
//! those pairs in step.

use crate::render::{NODE_POOL_LABEL, NODE_POOL_TAINT};
use crate::tree::Files;
use crate::{RenderOptions, yaml};
use palisade_core::{EgressMode, Snapshot};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Cluster-level choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// EKS cluster name.
    pub name: String,
    /// AWS region.
    pub region: String,
    /// Kubernetes version.
    pub version: String,
    /// Instance type of every node group.
    pub instance_type: String,
    /// Nodes per node group.
    pub nodes: u32,
    /// Cilium chart version the values are written for.
    pub cilium_version: String,
    /// IPv4 pod CIDR of Cilium's default pool (dual stack).
    pub ipv4_pod_cidr: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            name: "palisade".into(),
            region: "us-east-1".into(),
            version: "1.33".into(),
            instance_type: "m6i.large".into(),
            nodes: 2,
            cilium_version: "1.18.0".into(),
            ipv4_pod_cidr: "10.100.0.0/16".into(),
        }
    }
}

/// Every file of the cluster set-up, relative to the output directory.
pub fn files(snapshot: &Snapshot, render: &RenderOptions, cluster: &ClusterOptions) -> Files {
    let mut files = Files::new();
    files.insert(
        "eksctl-cluster.yaml".into(),
        yaml::to_string(&eksctl(snapshot, render, cluster)),
    );
    files.insert(
        "cilium-values.yaml".into(),
        yaml::to_string(&cilium_values(snapshot, render, cluster)),
    );
    let mut installer = String::new();
    for doc in gvisor_installer() {
        installer.push_str("---\n");
        yaml::emit(&mut installer, &doc);
    }
    files.insert("gvisor-installer.yaml".into(), installer);
    files.insert("setup.sh".into(), setup_script(cluster));
    files
}

fn node_group(name: &str, cluster: &ClusterOptions, labels: Value, taints: Value) -> Value {
    json!({
        "name": name,
        "instanceType": cluster.instance_type,
        "desiredCapacity": cluster.nodes,
        "minSize": cluster.nodes,
        "maxSize": cluster.nodes * 2,
        "amiFamily": "AmazonLinux2023",
        "labels": labels,
        // Pods must wait for Cilium, not start on the AWS CNI.
        "taints": [taints, { "key": "node.cilium.io/agent-not-ready", "value": "true", "effect": "NoExecute" }],
    })
}

fn eksctl(snapshot: &Snapshot, render: &RenderOptions, cluster: &ClusterOptions) -> Value {
    let mut groups = vec![json!({
        "name": "system",
        "instanceType": cluster.instance_type,
        "desiredCapacity": cluster.nodes,
        "minSize": cluster.nodes,
        "maxSize": cluster.nodes * 2,
        "amiFamily": "AmazonLinux2023",
        "taints": [{ "key": "node.cilium.io/agent-not-ready", "value": "true", "effect": "NoExecute" }],
    })];
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
            json!({ "key": NODE_POOL_TAINT, "value": tenant, "effect": "NoSchedule" }),
        ));
    }
    if snapshot
        .tenants
        .iter()
        .any(|t| t.egress.mode == EgressMode::CiliumEgressGateway)
    {
        let (k, v) = &render.egress_gateway_node_label;
        groups.push(node_group(
            "egress-gateway",
            cluster,
            json!({ k: v }),
            json!({ "key": k, "value": v, "effect": "NoSchedule" }),
        ));
    }
    if let Some(p) = &render.proxy.in_cluster {
        // Attach the tenants' egress addresses to these nodes' interfaces
        // (secondary private IPs with elastic IPs) after creating them.
        let (k, v) = &p.node_label;
        groups.push(node_group(
            "egress-proxy",
            cluster,
            json!({ k: v }),
            json!({ "key": k, "value": v, "effect": "NoSchedule" }),
        ));
    }
    json!({
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": { "name": cluster.name, "region": cluster.region, "version": cluster.version },
        "iam": { "withOIDC": true },
        // Cilium replaces the AWS CNI and kube-proxy.
        "addonsConfig": { "disableDefaultAddons": true },
        "addons": [{ "name": "coredns" }],
        "managedNodeGroups": groups,
    })
}

fn cilium_values(snapshot: &Snapshot, render: &RenderOptions, cluster: &ClusterOptions) -> Value {
    let pool = snapshot.pool.cidr().to_string();
    json!({
        "ipv4": { "enabled": true },
        "ipv6": { "enabled": true },
        "ipam": {
            "mode": "multi-pool",
            "operator": { "autoCreateCiliumPodIPPools": { "default": {
                "ipv4": { "cidrs": [cluster.ipv4_pod_cidr], "maskSize": 24 },
            }}},
        },
        "routingMode": "native",
        "autoDirectNodeRoutes": true,
        "ipv4NativeRoutingCIDR": cluster.ipv4_pod_cidr,
        "ipv6NativeRoutingCIDR": pool,
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

const INSTALL_SCRIPT: &str = r#"#!/bin/sh
set -eu
ARCH=$(uname -m)
URL=https://storage.googleapis.com/gvisor/releases/release/latest/${ARCH}
cd /host/usr/local/bin
for f in runsc containerd-shim-runsc-v1; do
  wget -q "${URL}/${f}" "${URL}/${f}.sha512"
  sha512sum -c "${f}.sha512"
  rm -f "${f}.sha512"
  chmod a+rx "${f}"
done
CONF=/host/etc/containerd/config.toml
if ! grep -q 'runtimes.runsc' "$CONF"; then
  printf '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n  runtime_type = "io.containerd.runsc.v1"\n' >> "$CONF"
  nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd
fi
echo "gVisor installed"
sleep infinity
"#;

fn gvisor_installer() -> Vec<Value> {
    vec![json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": "gvisor-install",
            "namespace": "kube-system",
            "labels": { "app.kubernetes.io/name": "gvisor-install", "app.kubernetes.io/managed-by": "palisade" },
        },
        "spec": {
            "selector": { "matchLabels": { "app.kubernetes.io/name": "gvisor-install" } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": "gvisor-install" } },
                "spec": {
                    "hostPID": true,
                    "tolerations": [{ "operator": "Exists" }],
                    "priorityClassName": "system-node-critical",
                    "containers": [{
                        "name": "install",
                        "image": "busybox:1.36",
                        "command": ["/bin/sh", "-c", INSTALL_SCRIPT],
                        "securityContext": { "privileged": true },
                        "resources": {
                            "requests": { "cpu": "10m", "memory": "16Mi" },
                            "limits": { "cpu": "200m", "memory": "64Mi" },
                        },
                        "volumeMounts": [
                            { "name": "bin", "mountPath": "/host/usr/local/bin" },
                            { "name": "containerd", "mountPath": "/host/etc/containerd" },
                        ],
                    }],
                    "volumes": [
                        { "name": "bin", "hostPath": { "path": "/usr/local/bin", "type": "Directory" } },
                        { "name": "containerd", "hostPath": { "path": "/etc/containerd", "type": "Directory" } },
                    ],
                },
            },
        },
    })]
}

fn setup_script(cluster: &ClusterOptions) -> String {
    format!(
        r#"#!/bin/sh
# Generated by `palisade render cluster`: creates the EKS cluster, installs
# Cilium and gVisor. Needs aws, eksctl, kubectl and helm.
set -eu
cd "$(dirname "$0")"
eksctl create cluster -f eksctl-cluster.yaml
API_SERVER=$(aws eks describe-cluster --name {name} --region {region} \
  --query cluster.endpoint --output text | sed 's#https://##')
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
        cilium = cluster.cilium_version,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn node_groups_match_what_deployments_tolerate_and_select() {
        let files = files(
            &fixtures::seed(),
            &RenderOptions::default(),
            &ClusterOptions::default(),
        );
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
        let files = files(
            &fixtures::seed(),
            &RenderOptions::default(),
            &ClusterOptions::default(),
        );
        let v: serde_json::Value = serde_yaml_ng::from_str(&files["cilium-values.yaml"]).unwrap();
        assert_eq!(v["ipam"]["mode"], "multi-pool");
        assert_eq!(v["ipv6"]["enabled"], true);
        assert_eq!(v["encryption"]["type"], "wireguard");
        assert_eq!(v["hubble"]["enabled"], true);
        assert_eq!(v["kubeProxyReplacement"], true);
        assert_eq!(v["socketLB"]["hostNamespaceOnly"], true);
        assert_eq!(v["egressGateway"]["enabled"], true);
        assert_eq!(v["ipv6NativeRoutingCIDR"], "fd00:10::/48");
    }
}
