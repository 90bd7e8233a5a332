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
use crate::common::{
    Labels, MANAGED_BY, PodTemplate, deployment, http_probe, labels, match_labels, meta,
    no_schedule, own_container_security, pod_spec, service_account, service_port, tcp_port,
};
use crate::object::Object;
use crate::options::{InClusterProxy, RenderOptions};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, Namespace, PodAffinityTerm,
    PodAntiAffinity, PodSpec, Probe, Service, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The API server refuses ConfigMaps above 1 MiB.
const CONFIG_MAP_LIMIT: usize = 1 << 20;
/// Where the config is mounted.
const CONFIG_DIR: &str = "/etc/palisade";
/// The admin listener (`/metrics`, `/healthz`, `/readyz`).
const ADMIN_PORT: i32 = InClusterProxy::ADMIN_PORT as i32;

/// What every proxy object shares: where it lives and how it is labelled.
struct Names<'a> {
    /// Namespace of every object but the Namespace itself.
    ns: &'a str,
    /// Name of every object but the Namespace.
    name: &'a str,
    /// Labels of the objects and the pods.
    own: Labels,
    /// Labels selecting the proxy pods.
    selector: Labels,
    /// The shared listener's port.
    port: i32,
}

/// Namespace, ServiceAccount, ConfigMap, Deployment, PodDisruptionBudget
/// and Service of the in-cluster proxy.
pub(crate) fn objects(p: &InClusterProxy, options: &RenderOptions) -> Result<Vec<Object>, Error> {
    check_size(&p.config)?;
    let app = options.proxy.app.as_str();
    let n = Names {
        ns: options.proxy.namespace.as_str(),
        name: app,
        own: labels([MANAGED_BY, ("app.kubernetes.io/name", app)]),
        selector: labels([("app.kubernetes.io/name", app)]),
        port: i32::from(options.proxy.port.get()),
    };
    Ok(vec![
        Object::new(&namespace(n.ns))?,
        Object::new(&service_account(meta(n.name, Some(n.ns), &n.own)))?,
        Object::new(&config_map(&n, &p.config))?,
        Object::new(&deployment(
            meta(n.name, Some(n.ns), &n.own),
            i32::from(p.replicas),
            &n.selector,
            PodTemplate {
                labels: n.own.clone(),
                annotations: None,
                spec: pod(&n, p),
            },
        ))?,
        Object::new(&disruption_budget(&n, p.replicas))?,
        Object::new(&service(&n))?,
    ])
}

/// Refuses a config the API server would refuse as a ConfigMap.
fn check_size(config: &str) -> Result<(), Error> {
    if config.len() <= CONFIG_MAP_LIMIT {
        return Ok(());
    }
    Err(Error::Unrepresentable {
        what: "the in-cluster egress proxy".into(),
        reason: format!(
            "its config is {} KiB, above the 1 MiB ConfigMap limit; run the proxy \
             outside the cluster and pass its address with --proxy-address IP",
            config.len() / 1024
        ),
    })
}

/// The proxy's namespace.
fn namespace(ns: &str) -> Namespace {
    Namespace {
        metadata: meta(
            ns,
            None,
            // Host networking is what lets the proxy own egress IPs.
            &labels([
                MANAGED_BY,
                ("pod-security.kubernetes.io/enforce", "privileged"),
            ]),
        ),
        ..Namespace::default()
    }
}

/// The ConfigMap holding the proxy's YAML config.
fn config_map(n: &Names<'_>, config: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(n.name, Some(n.ns), &n.own),
        data: Some(BTreeMap::from([(
            "proxy.yaml".to_owned(),
            config.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

/// A probe of the admin listener.
fn admin_probe(path: &str) -> Probe {
    Probe {
        period_seconds: Some(10),
        ..http_probe(path, ADMIN_PORT)
    }
}

/// The proxy container: `palisade proxy` on the mounted config.
fn container(n: &Names<'_>, image: &str) -> Container {
    Container {
        name: "proxy".into(),
        image: Some(image.to_owned()),
        args: Some(vec![
            "proxy".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/proxy.yaml"),
        ]),
        ports: Some(vec![
            tcp_port(Some("proxy"), n.port),
            tcp_port(Some("admin"), ADMIN_PORT),
        ]),
        readiness_probe: Some(admin_probe("/readyz")),
        liveness_probe: Some(admin_probe("/healthz")),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        security_context: Some(own_container_security()),
        ..Container::default()
    }
}

/// The proxy pods: on the host network of the egress nodes, one per node.
fn pod(n: &Names<'_>, p: &InClusterProxy) -> PodSpec {
    let (node_key, node_value) = &p.node_label;
    let config = Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: n.name.into(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    PodSpec {
        host_network: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".into()),
        node_selector: Some(BTreeMap::from([(node_key.clone(), node_value.clone())])),
        tolerations: Some(vec![no_schedule(node_key, node_value)]),
        affinity: Some(one_per_node(&n.selector)),
        // Draining: the proxy stops accepting on SIGTERM and finishes
        // in-flight requests and tunnels.
        termination_grace_period_seconds: Some(60),
        ..pod_spec(n.name, true, container(n, &p.image), vec![config])
    }
}

/// Two proxies on one node would fight over its ports.
fn one_per_node(selector: &Labels) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(match_labels(selector.clone())),
                topology_key: "kubernetes.io/hostname".into(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// Keeps all but one proxy up during voluntary disruptions (at least one).
fn disruption_budget(n: &Names<'_>, replicas: u16) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(n.name, Some(n.ns), &n.own),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(i32::from(
                replicas.saturating_sub(1).max(1),
            ))),
            selector: Some(match_labels(n.selector.clone())),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The proxy's Service.
fn service(n: &Names<'_>) -> Service {
    Service {
        metadata: meta(n.name, Some(n.ns), &n.own),
        spec: Some(ServiceSpec {
            // Headless: the name resolves to the ready proxy pods' addresses,
            // which on the host network are the egress nodes' (Kubernetes
            // "DNS for Services and Pods", A/AAAA records of headless
            // Services). Tenants dial their own port there; the ports below
            // only name the shared and admin listeners.
            cluster_ip: Some("None".into()),
            selector: Some(n.selector.clone()),
            ports: Some(vec![
                service_port(Some("proxy".into()), n.port, n.port),
                service_port(Some("admin".into()), ADMIN_PORT, ADMIN_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
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
