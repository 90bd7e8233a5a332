//! The pods a set of manifests would run, as evaluator endpoints: what
//! `lab verify --manifests` and the three-way check evaluate policies on.

use super::endpoint::{ContainerPort, Endpoint, Identity, Proto};
use crate::render::GATEWAY_NAME_LABEL;
use serde_json::Value;
use std::collections::BTreeMap;

/// One endpoint per workload (Deployment, StatefulSet, DaemonSet, ReplicaSet,
/// Job, Pod) with the pod template's labels, container ports and service
/// account; a namespaced object without a namespace lands in `default`.
/// Each is named `<namespace>/<object name>`.
pub fn pods_from_manifests(objects: &[Value]) -> Vec<Endpoint> {
    objects.iter().filter_map(workload).collect()
}

fn workload(obj: &Value) -> Option<Endpoint> {
    let kind = obj.get("kind")?.as_str()?;
    let pod = match kind {
        "Pod" => obj,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            obj.pointer("/spec/template")?
        }
        _ => return None,
    };
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut ep = Endpoint::pod(ns, name, string_map(pod.pointer("/metadata/labels")));
    if let Identity::Pod {
        service_account, ..
    } = &mut ep.identity
    {
        *service_account = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    ep.ports = container_ports(pod);
    Some(ep)
}

/// The pods a Gateway's implementation runs, labelled with the Gateway's
/// `spec.infrastructure.labels` ("Labels that SHOULD be applied to any
/// resources created in response to this Gateway", Gateway API v1.2+) and
/// [`GATEWAY_NAME_LABEL`]. Cilium's own implementation runs no such pods:
/// its traffic carries the `ingress` identity instead.
pub fn gateway_pods(objects: &[Value]) -> Vec<Endpoint> {
    objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Gateway"))
        .map(|g| {
            let ns = g
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let name = g
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut labels = string_map(g.pointer("/spec/infrastructure/labels"));
            labels.insert(GATEWAY_NAME_LABEL.into(), name.into());
            Endpoint::pod(ns, &format!("gateway/{name}"), labels)
        })
        .collect()
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The container ports of a pod, or of a pod template (a Deployment's
/// `spec.template`): both keep their containers under `spec.containers`.
pub fn container_ports(pod: &Value) -> Vec<ContainerPort> {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    containers
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("ports")?.as_array())
        .flatten()
        .filter_map(|p| {
            let proto = match p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") {
                "UDP" => Proto::Udp,
                "SCTP" => Proto::Sctp,
                _ => Proto::Tcp,
            };
            Some(ContainerPort {
                name: p.get("name").and_then(Value::as_str).map(str::to_owned),
                port: u16::try_from(p.get("containerPort")?.as_u64()?).ok()?,
                proto,
            })
        })
        .collect()
}
