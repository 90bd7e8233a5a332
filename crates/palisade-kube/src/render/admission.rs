//! What the API server must refuse so that policies keyed on labels mean
//! what they say.
//!
//! Rendered policies select tenant pods by `palisade.io/` labels, and a
//! pod's IPv6 pool (hence its /96, which the egress proxy reads as the
//! deployment's identity) comes from its `ipam.cilium.io/` annotations.
//! Palisade never sets either from user input, but in operator mode a
//! tenant with write access to its namespace could create a pod carrying
//! them and pass for another deployment. A `ValidatingAdmissionPolicy`
//! (admissionregistration.k8s.io/v1, GA since Kubernetes 1.30) refuses
//! those keys in tenant namespaces unless the writer is trusted: Palisade's
//! own writers and the built-in controllers that copy a Deployment's
//! template into ReplicaSets and Pods. A tenant's own Deployment carrying
//! the keys is refused at creation, so the controllers only ever copy
//! Palisade's.

use super::TENANT_LABEL;
use crate::Error;
use crate::common::{MANAGED_BY, labels, meta};
use crate::object::Object;
use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Name of the policy and of its binding.
pub const RESERVED_KEYS_POLICY: &str = "palisade-reserved-keys";

/// Users that copy pod templates on Palisade's behalf: the Deployment
/// controller writes ReplicaSets, the ReplicaSet controller writes Pods
/// (kube-controller-manager's per-controller service accounts, the default
/// with `--use-service-account-credentials`, which EKS and kubeadm set).
const TEMPLATE_COPIERS: [&str; 2] = [
    "system:serviceaccount:kube-system:deployment-controller",
    "system:serviceaccount:kube-system:replicaset-controller",
];

/// The policy and its binding.
pub(super) fn objects(trusted: &[String]) -> Result<Vec<Object>, Error> {
    let own = labels([MANAGED_BY]);
    let policy = ValidatingAdmissionPolicy {
        metadata: meta(RESERVED_KEYS_POLICY, None, &own),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".into()),
            match_constraints: Some(tenant_workloads()),
            variables: Some(vec![
                variable("tpl", POD_TEMPLATE),
                variable("meta", POD_META),
                variable("trusted", &trusted_expression(trusted)),
            ]),
            validations: Some(vec![Validation {
                expression: "variables.trusted || (\
                    !variables.meta.labels.exists(k, k.startsWith('palisade.io/')) && \
                    !variables.meta.annotations.exists(k, k.startsWith('ipam.cilium.io/')))"
                    .into(),
                message: Some(
                    "palisade.io/ labels and ipam.cilium.io/ annotations are set by Palisade \
                     only: they decide a pod's network policy and its address pool"
                        .into(),
                ),
                reason: Some("Forbidden".into()),
                ..Validation::default()
            }]),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        ..ValidatingAdmissionPolicy::default()
    };
    let binding = ValidatingAdmissionPolicyBinding {
        metadata: meta(RESERVED_KEYS_POLICY, None, &own),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(RESERVED_KEYS_POLICY.into()),
            validation_actions: Some(vec!["Deny".into()]),
            ..ValidatingAdmissionPolicyBindingSpec::default()
        }),
    };
    Ok(vec![Object::new(&policy)?, Object::new(&binding)?])
}

/// What an object makes pods from: itself for a Pod, its template for a
/// workload (a CronJob's through its job template).
const POD_TEMPLATE: &str = "object.kind == 'Pod' ? object : \
    (object.kind == 'CronJob' ? object.spec.jobTemplate.spec.template : object.spec.template)";

/// That template's labels and annotations, absent maps read as empty.
const POD_META: &str = "{\
    'labels': has(variables.tpl.metadata) && has(variables.tpl.metadata.labels) \
        ? variables.tpl.metadata.labels : {}, \
    'annotations': has(variables.tpl.metadata) && has(variables.tpl.metadata.annotations) \
        ? variables.tpl.metadata.annotations : {}}";

fn variable(name: &str, expression: &str) -> Variable {
    Variable {
        name: name.into(),
        expression: expression.into(),
    }
}

fn trusted_expression(trusted: &[String]) -> String {
    let users: Vec<String> = TEMPLATE_COPIERS
        .iter()
        .map(|u| (*u).to_owned())
        .chain(trusted.iter().cloned())
        // A CEL string literal: backslashes and quotes escaped.
        .map(|u| format!("'{}'", u.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    format!("request.userInfo.username in [{}]", users.join(", "))
}

/// Pods and every built-in kind with a pod template, in namespaces that
/// carry the tenant label.
fn tenant_workloads() -> MatchResources {
    let rule = |group: &str, resources: &[&str]| NamedRuleWithOperations {
        api_groups: Some(vec![group.into()]),
        api_versions: Some(vec!["v1".into()]),
        operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        ..NamedRuleWithOperations::default()
    };
    MatchResources {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: TENANT_LABEL.into(),
                operator: "Exists".into(),
                values: None,
            }]),
            ..LabelSelector::default()
        }),
        resource_rules: Some(vec![
            rule("", &["pods"]),
            rule(
                "apps",
                &["deployments", "replicasets", "statefulsets", "daemonsets"],
            ),
            rule("batch", &["jobs", "cronjobs"]),
        ]),
        ..MatchResources::default()
    }
}
