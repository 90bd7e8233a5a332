//! The pieces rendered objects are built from, said once.
//!
//! Palisade renders three kinds of pods — a tenant's deployments, the
//! egress-check demo and the in-cluster egress proxy — and they must agree
//! on what every Palisade object carries (the `managed-by` label `apply`
//! prunes by, no service-account token, the `RuntimeDefault` seccomp
//! profile). So metadata, selectors, ports, probes, security contexts and
//! the one Deployment builder live here, and both `render` and `proxy` build
//! from them; `proxy` no longer reaches into `render` for its pieces, so the
//! two do not import each other.

use crate::options::Resources;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccount,
    ServicePort, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Label on every object Palisade renders; `apply` prunes by it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "palisade");

/// The node label the installer sets once `runsc` is registered; the
/// `gvisor` RuntimeClass selects it (`scheduling.nodeSelector`), so no
/// sandboxed pod lands on a node that cannot run it. Here rather than in
/// `cluster`, which writes it, so that `render`, which selects it, does not
/// import `cluster` (which imports `render`'s node-pool names).
pub const GVISOR_READY_LABEL: (&str, &str) = ("palisade.io/gvisor", "ready");

/// Labels or annotations of an object.
pub(crate) type Labels = BTreeMap<String, String>;

/// A label map from string pairs.
pub(crate) fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Name, namespace (`None`: cluster-scoped) and labels of an object.
pub(crate) fn meta(name: &str, namespace: Option<&str>, labels: &Labels) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    }
}

/// A selector matching exactly `labels`.
pub(crate) fn match_labels(labels: Labels) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

/// A Kubernetes quantity (`500m`, `8Gi`).
pub(crate) fn q(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

/// `Some(list)` unless empty, as the API server stores an absent list.
pub(crate) fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// A ServiceAccount whose token is never mounted: no Palisade pod and no
/// tenant pod reads the API with it.
pub(crate) fn service_account(metadata: ObjectMeta) -> ServiceAccount {
    ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// A `{cpu, memory}` map: requests, limits, a LimitRange's defaults.
pub(crate) fn cpu_memory(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([("cpu".to_owned(), q(cpu)), ("memory".to_owned(), q(memory))])
}

/// A container's CPU and memory requests and limits.
pub(crate) fn resources(r: &Resources) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(cpu_memory(&r.cpu_request, &r.memory_request)),
        limits: Some(cpu_memory(&r.cpu_limit, &r.memory_limit)),
        ..ResourceRequirements::default()
    }
}

/// A TCP container port, optionally named.
pub(crate) fn tcp_port(name: Option<&str>, port: i32) -> ContainerPort {
    ContainerPort {
        name: name.map(str::to_owned),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// A TCP Service port forwarding `port` to the pods' `target`.
pub(crate) fn service_port(name: Option<String>, port: i32, target: i32) -> ServicePort {
    ServicePort {
        name,
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// A probe that GETs `path` on `port`.
pub(crate) fn http_probe(path: &str, port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

/// Tolerates the `key=value:NoSchedule` taint of dedicated nodes.
pub(crate) fn no_schedule(key: &str, value: &str) -> Toleration {
    Toleration {
        key: Some(key.to_owned()),
        operator: Some("Equal".into()),
        value: Some(value.to_owned()),
        effect: Some("NoSchedule".into()),
        ..Toleration::default()
    }
}

/// The pod security context of every rendered pod: the runtime's default
/// seccomp profile, and `runAsNonRoot` where the pod must not run as root.
pub(crate) fn pod_security(non_root: bool) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: non_root.then_some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The security context of Palisade's own containers (the proxy, the
/// egress-check demo): the image's non-root user, read-only root, no
/// capabilities. A tenant's container gets its profile's instead
/// (`render::workload::Privilege`).
pub(crate) fn own_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

/// What every rendered pod has: one container, its own ServiceAccount
/// without a token, the pod security context, and `volumes` if any. The
/// callers add placement and runtime.
pub(crate) fn pod_spec(
    service_account: &str,
    non_root: bool,
    container: Container,
    volumes: Vec<Volume>,
) -> PodSpec {
    PodSpec {
        service_account_name: Some(service_account.into()),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security(non_root)),
        containers: vec![container],
        volumes: non_empty(volumes),
        ..PodSpec::default()
    }
}

/// The pods of a Deployment: their labels, annotations and spec.
pub(crate) struct PodTemplate {
    /// The pods' labels; they must include the Deployment's selector.
    pub labels: Labels,
    /// The pods' annotations, if any.
    pub annotations: Option<Labels>,
    /// The pod spec.
    pub spec: PodSpec,
}

/// The one Deployment builder: `replicas` pods of `pod`, selected by
/// `selector`.
pub(crate) fn deployment(
    metadata: ObjectMeta,
    replicas: i32,
    selector: &Labels,
    pod: PodTemplate,
) -> Deployment {
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: match_labels(selector.clone()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod.labels),
                    annotations: pod.annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod.spec),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
