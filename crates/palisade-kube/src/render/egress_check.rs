//! Seed 002's demo app in every proxied tenant: `palisade egress-check`, a
//! page whose "Test External IP" button shows the address the internet
//! sees for this tenant.
//!
//! The demo is not a deployment of the model, so it has no subnet of its
//! own; it borrows the IP pool of the tenant's first deployment, which is
//! what makes the proxy attribute its requests to the tenant (a pod from
//! the cluster's default pool would get 407). Its policy is that
//! deployment's egress to the proxy, DNS or egress gateway, and no ingress
//! (`kubectl port-forward` comes from the node, which Cilium allows).

use super::{
    Cx, IP_POOL_ANNOTATION, PolicyTarget, labels, meta, node_pool_placement,
    own_container_security, own_pod_security, pool_name, proxy_env, tenant_labels,
};
use crate::Error;
use crate::object::Object;
use k8s_openapi::api::apps::v1::{Deployment as K8sDeployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, Probe, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use palisade_core::policy::Endpoint;
use palisade_core::{Deployment, EgressMode, Tenant};
use std::collections::BTreeMap;

/// Label selecting the demo's pods.
const DEMO_LABEL: &str = "palisade.io/app";
/// Name of the demo's Deployment, Service, ServiceAccount and policy.
pub const NAME: &str = "egress-check";
const PORT: i32 = 8080;

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

impl Cx<'_> {
    /// The demo's objects for tenant `t`, whose first deployment is `first`.
    pub(super) fn egress_check(
        &self,
        t: &Tenant,
        first: &Deployment,
        image: &str,
        out: &mut Vec<Object>,
    ) -> Result<(), Error> {
        let opts = self.options;
        let ns = t.name.namespace();
        let ns = ns.as_str();
        let mut own = tenant_labels(&t.name);
        own.insert("app.kubernetes.io/name".into(), NAME.into());
        // Selected by a `palisade.io/` label, which Palisade refuses on
        // tenant workloads: `app.kubernetes.io/name` is a tenant's to set,
        // and its pods would then share this policy.
        own.insert(DEMO_LABEL.into(), NAME.into());
        let selector = labels([(DEMO_LABEL, NAME)]);

        out.push(Object::new(&ServiceAccount {
            metadata: meta(NAME, Some(ns), own.clone()),
            // It reads nothing from the API: no token, no Role.
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        })?);

        let mut env = vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("POD_IP", "status.podIP"),
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("HOST_IP", "status.hostIP"),
            field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        ];
        if t.egress.mode == EgressMode::Proxy {
            env.extend(proxy_env(&[self.snapshot.pool.cidr().to_string()]));
        }
        let (tolerations, node_selector) = node_pool_placement(t);
        let container = Container {
            name: NAME.into(),
            image: Some(image.to_owned()),
            args: Some(vec![NAME.into(), "--listen".into(), format!("[::]:{PORT}")]),
            ports: Some(vec![ContainerPort {
                container_port: PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]),
            env: Some(env),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/healthz".into()),
                    port: IntOrString::Int(PORT),
                    ..HTTPGetAction::default()
                }),
                ..Probe::default()
            }),
            resources: Some(super::resources(&opts.resources)),
            security_context: Some(own_container_security()),
            ..Container::default()
        };
        out.push(Object::new(&K8sDeployment {
            metadata: meta(NAME, Some(ns), own.clone()),
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector: LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(own.clone()),
                        annotations: Some(BTreeMap::from([(
                            IP_POOL_ANNOTATION.to_owned(),
                            pool_name(&t.name, &first.name),
                        )])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        runtime_class_name: Some(opts.runtime_class.clone()),
                        service_account_name: Some(NAME.into()),
                        automount_service_account_token: Some(false),
                        enable_service_links: Some(false),
                        security_context: Some(own_pod_security()),
                        tolerations,
                        node_selector,
                        containers: vec![container],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            ..K8sDeployment::default()
        })?);
        out.push(Object::new(&Service {
            metadata: meta(NAME, Some(ns), own.clone()),
            spec: Some(ServiceSpec {
                selector: Some(selector.clone()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    target_port: Some(IntOrString::Int(PORT)),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        })?);
        // Its labels carry no `palisade.io/deployment`, so the borrowed
        // deployment's own policy (and its peers' rules) never select it.
        self.policies_for(
            PolicyTarget {
                me: &Endpoint::deployment(&t.name, &first.name),
                egress_only: Some(&format!("{}/{NAME}", t.name)),
                name: NAME,
                ns,
                selector,
                labels: &own,
            },
            Vec::new(),
            out,
        )
    }
}
