//! The custom resources: what users (and `palisade --store kubernetes`)
//! write, and what the operator reports back.
//!
//! Spec fields are plain strings and numbers rather than the core's
//! newtypes. The schema refuses what is wrong in shape at `kubectl apply`
//! time, with the same bounds as the model (DNS-1123 names and their
//! lengths, port and replica ranges, quantities, unique ports and env
//! names, CEL rules for what one field cannot say); what only the model can
//! judge (an image reference, a domain, an egress address) the operator
//! explains in a status condition with the core's one-line error. The YAML
//! under `deploy/crds/` is generated from these types ([`crds_yaml`]) and a
//! test keeps it in sync; `tests/crd_schema.rs` checks it with tools we
//! did not write (kubernetes-validate, jsonschema, cel-python).

use kube::CustomResource;
use kube::CustomResourceExt;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API group of every Palisade custom resource.
pub const GROUP: &str = "palisade.io";
/// Their version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every Palisade custom resource.
pub const API_VERSION: &str = "palisade.io/v1alpha1";

/// A DNS-1123 label (`IsDNS1123Label`, k8s.io/apimachinery
/// `pkg/util/validation`), as the model's names (`palisade_core::model`).
pub const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain (`IsDNS1123Subdomain`): Secret names.
pub const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// An environment variable name (`IsEnvVarName`), as the model's `EnvName`.
pub const ENV_NAME: &str = "^[-._a-zA-Z][-._a-zA-Z0-9]*$";
/// A Secret key (`IsConfigMapKey`).
pub const SECRET_KEY: &str = "^[-._a-zA-Z0-9]+$";
/// A resource quantity (`100m`, `1.5Gi`, `1e3`): the pattern
/// controller-tools puts on `resource.Quantity` fields
/// (sigs.k8s.io/controller-tools `pkg/crd/known_types.go`).
pub const QUANTITY: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
/// A subnet in the canonical (lower-case, RFC 5952) text the operator writes.
pub const SUBNET: &str = "^[0-9a-f:]+/[0-9]{1,3}$";

/// A tenant: its namespace `tenant-<name>`, quota, node pool and egress.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "palisade.io",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "ptenant",
    category = "palisade",
    status = "TenantStatus",
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".status.namespace"}"#,
    printcolumn = r#"{"name":"Deployments","type":"integer","jsonPath":".status.deploymentCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // The namespace `tenant-<name>` must be a DNS-1123 label too
    // (`TenantName`: at most 56 characters).
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 56")
        .message("a tenant's name is a DNS-1123 label of at most 56 characters (its namespace is tenant-<name>)")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Resource ceiling of the namespace (its ResourceQuota).
    #[serde(default)]
    pub quota: QuotaSpec,
    /// Dedicated node pool: pods get its toleration and nodeSelector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS1123_LABEL))]
    pub node_pool: Option<String>,
    /// How the tenant's traffic leaves the cluster.
    #[serde(default)]
    pub egress: EgressSpec,
    /// A gateway fronting every workload of the tenant, as `palisade
    /// gateway create per-tenant` makes (a workload's `gateway: tenant`
    /// also asks for it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gateway: bool,
    /// Labels for the namespace (keys under palisade.io/ are reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The tenant's own egress-proxy listener port (20000-29999), by which
    /// the proxy knows the tenant; unique among tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 20000, max = 29999))]
    pub proxy_port: Option<u16>,
}

/// A namespace's quota.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSpec {
    /// CPU requests, e.g. `4` or `500m`.
    #[schemars(pattern(QUANTITY))]
    pub cpu: String,
    /// Memory requests, e.g. `8Gi`.
    #[schemars(pattern(QUANTITY))]
    pub memory: String,
    /// Most pods at once.
    pub pods: u32,
}

impl Default for QuotaSpec {
    fn default() -> Self {
        Self {
            cpu: "4".into(),
            memory: "8Gi".into(),
            pods: 20,
        }
    }
}

/// Egress mode, as the CLI spells it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EgressModeSpec {
    /// Through Palisade's egress proxy.
    #[default]
    Proxy,
    /// Through a CiliumEgressGatewayPolicy.
    CiliumEgressGateway,
}

/// Where and how a tenant's traffic leaves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressSpec {
    /// `proxy` or `cilium-egress-gateway`.
    #[serde(default)]
    pub mode: EgressModeSpec,
    /// The source address attached to the tenant's egress gateway or proxy
    /// node (CiliumEgressGatewayPolicy `egressIP`): on AWS the node's
    /// private address, not the Elastic IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The public address partners allow-list, when it differs from `ip`
    /// (an AWS Elastic IP NAT'ed to it). Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    /// Domains the egress proxy lets through (empty: all not denied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 253)))]
    pub allowed_domains: Vec<String>,
    /// Domains the egress proxy refuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 253)))]
    pub denied_domains: Vec<String>,
}

/// A status condition with the schema of `metav1.Condition`
/// (k8s.io/apimachinery/pkg/apis/meta/v1/types.go): `type`, `status`,
/// `reason`, `message` and `lastTransitionTime` required, so tools that
/// read conditions generically (kstatus in Flux and Argo CD, `kubectl
/// wait --for=condition=Ready`) read ours.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `SubnetAllocated`, `Reconciling`, `Stalled`, ...
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// One CamelCase word.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// For people.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// What the operator reports about a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// `Ready` and, while deleting, `Terminating`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Workloads rendered (with a subnet and a valid spec).
    #[serde(default)]
    pub deployment_count: u32,
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// How a workload is reached from outside the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayMode {
    /// Not at all.
    #[default]
    None,
    /// Through the tenant's gateway (which then fronts every workload of
    /// the tenant, as `palisade gateway create per-tenant` does).
    Tenant,
    /// Through a gateway of its own.
    Dedicated,
}

/// An environment variable of the workload's container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSpec {
    /// Name (`[-._a-zA-Z][-._a-zA-Z0-9]*`, as Kubernetes' `IsEnvVarName`).
    #[schemars(length(min = 1), pattern(ENV_NAME))]
    pub name: String,
    /// Value (empty when `valueFrom` is set).
    #[serde(default)]
    pub value: String,
    /// Read the value from a Secret of the tenant's namespace instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSourceSpec>,
}

/// Where an environment variable's value comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSourceSpec {
    /// A key of a Secret in the tenant's namespace.
    pub secret_key_ref: SecretKeyRefSpec,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRefSpec {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN))]
    pub name: String,
    /// The key.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY))]
    pub key: String,
}

/// A writable empty directory mounted into the container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScratchSpec {
    /// Absolute path, e.g. `/var/cache/nginx`.
    #[schemars(length(min = 2), pattern("^/"))]
    pub path: String,
    /// Most it may hold, e.g. `64Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUANTITY))]
    pub size_limit: Option<String>,
}

/// The container's privilege, named after the Pod Security Standards level
/// it meets (see `palisade create --help`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityProfileSpec {
    /// Runs as UID/GID 65532, read-only root filesystem, only NET_BIND_SERVICE.
    Restricted,
    /// May start as root; the few capabilities such images need.
    Baseline,
    /// `baseline` with a read-only root filesystem.
    BaselineReadOnly,
}

/// Container resources; unset fields take the operator's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// e.g. `100m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUANTITY))]
    pub cpu_request: Option<String>,
    /// e.g. `128Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUANTITY))]
    pub memory_request: Option<String>,
    /// e.g. `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUANTITY))]
    pub cpu_limit: Option<String>,
    /// e.g. `512Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUANTITY))]
    pub memory_limit: Option<String>,
}

/// Another workload of the same tenant allowed to connect.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct AllowFrom {
    /// The client workload's name.
    #[schemars(length(min = 1, max = 63), pattern(DNS1123_LABEL))]
    pub deployment: String,
    /// Only this port (default: every port this workload serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
}

/// A workload of a tenant with its own IPv6 subnet. Lives in the tenant's
/// namespace `tenant-<tenant>`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "palisade.io",
    version = "v1alpha1",
    kind = "TenantDeployment",
    plural = "tenantdeployments",
    shortname = "tdep",
    category = "palisade",
    namespaced,
    status = "TenantDeploymentStatus",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Subnet","type":"string","jsonPath":".status.subnet"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // Object names may be DNS-1123 subdomains; the workload's name becomes
    // a Deployment, a Service and label values, so a label (`DeploymentName`).
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63")
        .message("a workload's name is a DNS-1123 label of at most 63 characters")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantDeploymentSpec {
    /// Container image, e.g. `nginx:alpine`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Number of pods (at most `palisade_core::model::Replicas::MAX`).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: u32,
    /// Ports the pods serve on (none: a headless Service); each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), inner(range(min = 1)))]
    pub ports: Vec<u16>,
    /// Environment of the container; each name once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVarSpec>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's default arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Writable scratch directories (emptyDir volumes); each path once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["path"]))]
    pub scratch: Vec<ScratchSpec>,
    /// `restricted`, `baseline` or `baseline-read-only`; unset: the
    /// operator's render settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityProfileSpec>,
    /// Workloads of the same tenant allowed to connect to this one; each
    /// entry once. A set of atomic entries rather than a map keyed by
    /// `deployment`: one client may be allowed on several ports, and an
    /// optional `port` cannot be a list-map key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allow_from: Vec<AllowFrom>,
    /// Ingress gateway: `none`, `tenant` or `dedicated`.
    #[serde(default)]
    pub gateway: GatewayMode,
    /// Labels for the pods (keys under palisade.io/ are reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// What the operator reports about a workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantDeploymentStatus {
    /// `SubnetAllocated` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The allocated subnet in canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Pods ready, from the apps/v1 Deployment.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One allocated subnet. The object's name encodes the subnet (canonical
/// text with `-` for `:`, then `-` and the prefix length), so the API
/// server's name uniqueness is the allocation lock: whoever creates the
/// object first owns the subnet.
///
/// The schema holds what allocation relies on: the name is the subnet's
/// (`claim::claim_name`, checked by CEL: Kubernetes' strings library
/// `replace`), and a claim never changes hands or subnet (`self ==
/// oldSelf` on each field). `releasedAt` is the one field written after
/// creation (release with a quarantine), so the spec as a whole cannot be
/// immutable; once set it stays.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "palisade.io",
    version = "v1alpha1",
    kind = "SubnetClaim",
    plural = "subnetclaims",
    shortname = "psc",
    category = "palisade",
    printcolumn = r#"{"name":"Subnet","type":"string","jsonPath":".spec.subnet"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.namespace"}"#,
    printcolumn = r#"{"name":"Deployment","type":"string","jsonPath":".spec.deployment"}"#,
    printcolumn = r#"{"name":"Released","type":"date","jsonPath":".spec.releasedAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new(CLAIM_NAME_RULE).message("a claim's name is its subnet with '-' for ':' and '/' (fd00:1234:5678::/96 is fd00-1234-5678---96; ::/64 is 0---64)")
)]
#[serde(rename_all = "camelCase")]
pub struct SubnetClaimSpec {
    /// The subnet in canonical form (RFC 5952), e.g. `fd00:1234:5678::/96`.
    #[schemars(length(min = 3, max = 43), pattern(SUBNET))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a claim's subnet is immutable"))]
    pub subnet: String,
    /// The tenant.
    #[schemars(length(min = 1, max = 56), pattern(DNS1123_LABEL))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a claim's tenant is immutable"))]
    pub tenant: String,
    /// The workload's namespace.
    #[schemars(length(min = 1, max = 63), pattern(DNS1123_LABEL))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a claim's namespace is immutable"))]
    pub namespace: String,
    /// The workload's name.
    #[schemars(length(min = 1, max = 63), pattern(DNS1123_LABEL))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a claim's deployment is immutable"))]
    pub deployment: String,
    /// The workload's uid: a re-created workload of the same name is a
    /// different claimant.
    // Bounded, as every string a CEL rule reads, so the API server's cost
    // estimate stays small.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a claim's workloadUid is immutable"))]
    pub workload_uid: String,
    /// When the workload was deleted (RFC 3339), if the pool quarantines
    /// released subnets: the claim then keeps the subnet out of circulation
    /// until garbage collection deletes it `reuseAfter` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("format" = "date-time"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a claim's releasedAt is immutable once set"))]
    pub released_at: Option<String>,
}

/// The CEL rule tying a claim's name to its subnet: the subnet's text with
/// `-` for `:` and `/`, a leading `::` written `0::`
/// ([`crate::claim::claim_name`]).
pub const CLAIM_NAME_RULE: &str = "self.metadata.name == (self.spec.subnet.startsWith('::') ? '0' + self.spec.subnet : self.spec.subnet).replace(':', '-').replace('/', '-')";

/// The name of the one [`Platform`] object.
pub const PLATFORM_NAME: &str = "palisade";

/// Platform-wide settings: what the SQLite store keeps for every tenant
/// at once and no tenant owns (today the central gateway, `palisade
/// gateway add --central`). Cluster-scoped and one object named
/// `palisade` (CEL on `metadata.name`, which Kubernetes lets root rules
/// read), because what it stands for exists once per cluster; no object,
/// or `centralGateway: false`, means no central gateway.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "palisade.io",
    version = "v1alpha1",
    kind = "Platform",
    plural = "platforms",
    shortname = "pplatform",
    category = "palisade",
    printcolumn = r#"{"name":"Central-Gateway","type":"boolean","jsonPath":".spec.centralGateway"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name == 'palisade'").message("the platform's settings are one object, named 'palisade'")
)]
#[serde(rename_all = "camelCase")]
pub struct PlatformSpec {
    /// One gateway in front of every tenant's workloads (with ports), in
    /// the gateways' namespace, serving `<deployment>.<tenant>.<domain>`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub central_gateway: bool,
}

/// The CRDs, in the order they are installed.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        Tenant::crd(),
        TenantDeployment::crd(),
        SubnetClaim::crd(),
        Platform::crd(),
    ]
}

/// The committed files under `deploy/crds/`: (file name, YAML).
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_yaml_ng::Error> {
    let mut out = Vec::new();
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let body = serde_yaml_ng::to_string(&crd)?;
        out.push((
            format!("{name}.yaml"),
            format!("# Generated by `palisade-operator crds`; do not edit.\n---\n{body}"),
        ));
    }
    Ok(out)
}
