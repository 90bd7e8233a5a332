//! Palisade's egress proxy as cluster objects.
//!
//! A tenant's traffic must leave from the tenant's fixed address, and only
//! a machine that owns an address can send from it. So the proxy runs on
//! the host network of dedicated egress nodes (whose interfaces carry the
//! tenants' addresses), and the tenants' policies allow exactly those nodes
//! (see `Peer::Nodes` in the renderer). The config travels in a ConfigMap;
//! the proxy reloads it when the kubelet swaps the file, so a new tenant or
//! deployment needs no restart.
//!
//! Each tenant has its own listener port (`tenants[].listen_port`, from the
//! store's `proxy_port`) that only its pods may reach, because a pod's
//! source address does not say who it is on every topology (an IPv4-only
//! service network, no per-deployment pools). The Service is headless, so
//! its name resolves to the proxy nodes' own addresses and a pod connects to
//! `<node>:<its port>` directly: no Service port per tenant (an
//! EndpointSlice holds at most 100 ports, kubernetes/kubernetes#99382), and
//! no address translation between the pod and the `toNodes` rule that
//! decides. See docs/proxy.md, "Who is calling".

use crate::Error;
use crate::object::Object;
use crate::options::{InClusterProxy, RenderOptions};
use crate::render::{MANAGED_BY, own_container_security, own_pod_security};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, Namespace,
    PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, Probe, Service, ServiceAccount,
    ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The API server refuses ConfigMaps above 1 MiB.
const CONFIG_MAP_LIMIT: usize = 1 << 20;
/// Where the config is mounted.
const CONFIG_DIR: &str = "/etc/palisade";

fn meta(name: &str, ns: Option<&str>, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: ns.map(str::to_owned),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(InClusterProxy::ADMIN_PORT)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

/// Namespace, ServiceAccount, ConfigMap, Deployment, PodDisruptionBudget
/// and Service of the in-cluster proxy.
pub(crate) fn objects(p: &InClusterProxy, options: &RenderOptions) -> Result<Vec<Object>, Error> {
    if p.config.len() > CONFIG_MAP_LIMIT {
        return Err(Error::Unrepresentable {
            what: "the in-cluster egress proxy".into(),
            reason: format!(
                "its config is {} KiB, above the 1 MiB ConfigMap limit; run the proxy \
                 outside the cluster and pass its address with --proxy-address IP",
                p.config.len() / 1024
            ),
        });
    }
    let ns = options.proxy.namespace.as_str();
    let app = options.proxy.app.as_str();
    let name = app;
    let own: BTreeMap<String, String> = [MANAGED_BY, ("app.kubernetes.io/name", app)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let selector = BTreeMap::from([("app.kubernetes.io/name".to_owned(), app.to_owned())]);
    let port = i32::from(options.proxy.port.get());
    let admin = i32::from(InClusterProxy::ADMIN_PORT);
    let (node_key, node_value) = &p.node_label;

    let mut out = vec![Object::new(&Namespace {
        metadata: meta(
            ns,
            None,
            &BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                // Host networking is what lets the proxy own egress IPs.
                (
                    "pod-security.kubernetes.io/enforce".to_owned(),
                    "privileged".to_owned(),
                ),
            ]),
        ),
        ..Namespace::default()
    })?];
    out.push(Object::new(&ServiceAccount {
        metadata: meta(name, Some(ns), &own),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })?);
    out.push(Object::new(&ConfigMap {
        metadata: meta(name, Some(ns), &own),
        data: Some(BTreeMap::from([(
            "proxy.yaml".to_owned(),
            p.config.clone(),
        )])),
        ..ConfigMap::default()
    })?);

    let container = Container {
        name: "proxy".into(),
        image: Some(p.image.clone()),
        args: Some(vec![
            "proxy".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/proxy.yaml"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("proxy".into()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: admin,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        security_context: Some(own_container_security()),
        ..Container::default()
    };
    let deployment = Deployment {
        metadata: meta(name, Some(ns), &own),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::from(p.replicas)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(own.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    service_account_name: Some(name.into()),
                    automount_service_account_token: Some(false),
                    node_selector: Some(BTreeMap::from([(node_key.clone(), node_value.clone())])),
                    tolerations: Some(vec![Toleration {
                        key: Some(node_key.clone()),
                        operator: Some("Equal".into()),
                        value: Some(node_value.clone()),
                        effect: Some("NoSchedule".into()),
                        ..Toleration::default()
                    }]),
                    // Two proxies on one node would fight over its ports.
                    affinity: Some(Affinity {
                        pod_anti_affinity: Some(PodAntiAffinity {
                            required_during_scheduling_ignored_during_execution: Some(vec![
                                PodAffinityTerm {
                                    label_selector: Some(LabelSelector {
                                        match_labels: Some(selector.clone()),
                                        ..LabelSelector::default()
                                    }),
                                    topology_key: "kubernetes.io/hostname".into(),
                                    ..PodAffinityTerm::default()
                                },
                            ]),
                            ..PodAntiAffinity::default()
                        }),
                        ..Affinity::default()
                    }),
                    security_context: Some(own_pod_security()),
                    // Draining: the proxy stops accepting on SIGTERM and
                    // finishes in-flight requests and tunnels.
                    termination_grace_period_seconds: Some(60),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: name.into(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    out.push(Object::new(&deployment)?);
    out.push(Object::new(&PodDisruptionBudget {
        metadata: meta(name, Some(ns), &own),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(i32::from(
                p.replicas.saturating_sub(1).max(1),
            ))),
            selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })?);
    out.push(Object::new(&Service {
        metadata: meta(name, Some(ns), &own),
        spec: Some(ServiceSpec {
            // Headless: the name resolves to the ready proxy pods' addresses,
            // which on the host network are the egress nodes' (Kubernetes
            // "DNS for Services and Pods", A/AAAA records of headless
            // Services). Tenants dial their own port there; the ports below
            // only name the shared and admin listeners.
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            ports: Some(vec![
                ServicePort {
                    name: Some("proxy".into()),
                    port,
                    target_port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("admin".into()),
                    port: admin,
                    target_port: Some(IntOrString::Int(admin)),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(objects: &[Object]) -> serde_json::Value {
        objects
            .iter()
            .find(|o| o.kind == "Service")
            .map(|o| o.body.clone())
            .unwrap_or_default()
    }

    #[test]
    fn the_service_is_headless_so_each_tenant_dials_its_own_port_on_the_nodes() {
        let config = "listen: '[::]:3128'\ntenants:\n- {name: a, listen_port: 20000}\n";
        let objects = objects(
            &InClusterProxy::new(config.into()),
            &RenderOptions::default(),
        )
        .unwrap_or_default();
        let svc = service(&objects);
        assert_eq!(svc["spec"]["clusterIP"], "None", "{svc}");
        // No port per tenant: an EndpointSlice could not hold more than 100.
        let ports: Vec<_> = svc["spec"]["ports"]
            .as_array()
            .map(|p| p.iter().map(|p| p["name"].clone()).collect())
            .unwrap_or_default();
        assert_eq!(ports, ["proxy", "admin"]);
    }
}
