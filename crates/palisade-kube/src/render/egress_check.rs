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

use super::{Cx, PolicyTarget, pool_name, proxy_env, tenant_labels};
use crate::Error;
use crate::common::{
    Labels, deployment, http_probe, labels, meta, own_container_security, pod_spec, resources,
    service_account, service_port, tcp_port,
};
use crate::object::Object;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Service, ServiceSpec,
};
use palisade_core::policy::Endpoint;
use palisade_core::{Deployment, EgressMode, Tenant};

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
        let ns = t.name.namespace();
        let ns = ns.as_str();
        let mut own = tenant_labels(&t.name);
        own.insert("app.kubernetes.io/name".into(), NAME.into());
        // Selected by a `palisade.io/` label, which Palisade refuses on
        // tenant workloads: `app.kubernetes.io/name` is a tenant's to set,
        // and its pods would then share this policy.
        own.insert(DEMO_LABEL.into(), NAME.into());
        let selector = labels([(DEMO_LABEL, NAME)]);
        // It reads nothing from the API: no token, no Role.
        out.push(Object::new(&service_account(meta(NAME, Some(ns), &own)))?);
        let spec = pod_spec(NAME, true, self.demo_container(t, image), Vec::new());
        out.push(Object::new(&deployment(
            meta(NAME, Some(ns), &own),
            1,
            &selector,
            self.tenant_pod(t, own.clone(), pool_name(&t.name, &first.name), spec),
        ))?);
        out.push(Object::new(&demo_service(ns, &own, &selector))?);
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

    /// `palisade egress-check`, told about its pod through the downward
    /// API and, in proxy mode, given the tenant's proxy variables.
    fn demo_container(&self, t: &Tenant, image: &str) -> Container {
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
        Container {
            name: NAME.into(),
            image: Some(image.to_owned()),
            args: Some(vec![NAME.into(), "--listen".into(), format!("[::]:{PORT}")]),
            ports: Some(vec![tcp_port(None, PORT)]),
            env: Some(env),
            readiness_probe: Some(http_probe("/healthz", PORT)),
            resources: Some(resources(&self.options.resources)),
            security_context: Some(own_container_security()),
            ..Container::default()
        }
    }
}

/// The demo's Service, on port 80 for `kubectl port-forward`.
fn demo_service(ns: &str, own: &Labels, selector: &Labels) -> Service {
    Service {
        metadata: meta(NAME, Some(ns), own),
        spec: Some(ServiceSpec {
            selector: Some(selector.clone()),
            ports: Some(vec![service_port(None, 80, PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
