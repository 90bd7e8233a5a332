//! Reconcile as pure functions: from the custom resources the operator
//! read to the objects it wants, what to apply, what to prune, and what
//! status to report. No I/O here, so every decision is unit-tested; the
//! [`crate::reconcile`] module only moves data between these functions and
//! the API server.
//!
//! A tenant is the unit of rendering: a workload's network policy depends
//! on its siblings (who may reach whom), so the tenant controller renders
//! the whole tenant with `palisade_kube::render` — the same code as
//! `palisade render` — from a one-tenant [`Snapshot`].

use crate::claim::subnet_of;
use crate::crd::{
    Condition, EgressModeSpec, GatewayMode, PlatformSpec, SubnetClaim, Tenant, TenantDeployment,
    TenantDeploymentSpec, TenantDeploymentStatus, TenantSpec, TenantStatus,
};
use ipnet::Ipv6Net;
use kube::ResourceExt;
use palisade_core::allocator::Timestamp;
use palisade_core::model::parse_label;
use palisade_core::{
    AllowRule, Cpu, Deployment, DeploymentName, EgressMode, EgressProfile, Gateway, GatewayScope,
    Image, Labels, Memory, ModelError, NodePoolName, Pool, Port, Quota, Replicas, SecurityProfile,
    Snapshot, TenantName, WorkloadSpec,
};
use palisade_kube::render::{MANAGED_BY, TENANT_LABEL};
use palisade_kube::{Object, RenderOptions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "palisade-operator";
/// Value of `app.kubernetes.io/managed-by` on what the operator applies;
/// distinct from `palisade apply`'s, so neither prunes the other's objects.
pub const MANAGED_BY_OPERATOR: &str = "palisade-operator";
/// Annotation holding the hash of what was applied: equal hash, no write.
pub const HASH_ANNOTATION: &str = "palisade.io/applied-hash";
/// Annotation on a workload's Deployment: the `TenantDeployment`
/// generation it was rendered from, so the workload's status can say
/// when that generation is applied and rolled out.
pub const GENERATION_ANNOTATION: &str = "palisade.io/workload-generation";
/// Finalizer on tenants: their workloads go first.
pub const TENANT_FINALIZER: &str = "palisade.io/workloads";
/// Finalizer on workloads: their subnet claim goes with them.
pub const WORKLOAD_FINALIZER: &str = "palisade.io/subnet-claim";
/// Claim label naming the workload.
pub const DEPLOYMENT_LABEL: &str = "palisade.io/deployment";
/// Claim label naming the workload's uid.
pub const WORKLOAD_UID_LABEL: &str = "palisade.io/workload-uid";

/// Prefix of tenant namespaces (the core's `TenantName::namespace`).
pub const NAMESPACE_PREFIX: &str = "tenant-";

/// A spec the operator cannot act on: which field, and why (the model's
/// error as the source). Conditions and events carry the whole chain
/// ([`explain`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpecError {
    /// A field the model refuses (`field` is its path in the resource,
    /// e.g. `spec.quota.cpu`).
    #[error("invalid {field}")]
    Field {
        /// The field's path.
        field: String,
        /// The model's reason.
        #[source]
        source: ModelError,
    },
    /// The namespace does not name a tenant.
    #[error("namespace {namespace:?} is not a tenant namespace (tenant-<name>)")]
    NotTenantNamespace {
        /// The namespace.
        namespace: String,
    },
    /// An address field that is not an IP address.
    #[error("invalid {field} {value:?}")]
    Address {
        /// The field's path.
        field: &'static str,
        /// What it holds.
        value: String,
        /// The parser's reason.
        #[source]
        source: std::net::AddrParseError,
    },
    /// A proxy port outside the proxy's range.
    #[error("invalid spec.proxyPort {port}: must be between {min} and {max}")]
    ProxyPort {
        /// The port.
        port: u16,
        /// The lowest allowed.
        min: u16,
        /// The highest allowed.
        max: u16,
    },
    /// An environment variable name a container refuses.
    #[error("invalid env name {name:?}: letters, digits and _, not starting with a digit")]
    EnvName {
        /// The name.
        name: String,
    },
    /// The renderer refused the tenant.
    #[error("cannot render the tenant")]
    Render(#[source] std::sync::Arc<palisade_kube::Error>),
}

/// Equal when they say the same (the renderer's error has no equality).
impl PartialEq for SpecError {
    fn eq(&self, other: &Self) -> bool {
        explain(self) == explain(other)
    }
}

impl Eq for SpecError {}

/// The model's error for `field`.
fn at(field: impl Into<String>) -> impl FnOnce(ModelError) -> SpecError {
    let field = field.into();
    move |source| SpecError::Field { field, source }
}

/// An error's message followed by each of its causes (`: `-separated),
/// for conditions and events, which have only one text field.
pub fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The tenant a workload's namespace belongs to (`tenant-<name>`).
pub fn tenant_of_namespace(namespace: &str) -> Result<TenantName, SpecError> {
    let name =
        namespace
            .strip_prefix(NAMESPACE_PREFIX)
            .ok_or_else(|| SpecError::NotTenantNamespace {
                namespace: namespace.to_owned(),
            })?;
    name.parse().map_err(at("metadata.namespace"))
}

fn labels(map: &BTreeMap<String, String>) -> Result<Labels, SpecError> {
    map.iter()
        .map(|(k, v)| parse_label(&format!("{k}={v}")).map_err(at(format!("spec.labels.{k}"))))
        .collect()
}

/// The core's tenant for a `Tenant` resource.
pub fn core_tenant(name: &str, spec: &TenantSpec) -> Result<palisade_core::Tenant, SpecError> {
    let name: TenantName = name.parse().map_err(at("metadata.name"))?;
    let ip = match &spec.egress.ip {
        Some(ip) => Some(ip.parse().map_err(|source| SpecError::Address {
            field: "spec.egress.ip",
            value: ip.clone(),
            source,
        })?),
        None => None,
    };
    let public_ip = match &spec.egress.public_ip {
        Some(ip) => Some(ip.parse().map_err(|source| SpecError::Address {
            field: "spec.egress.publicIp",
            value: ip.clone(),
            source,
        })?),
        None => None,
    };
    let proxy_port = match spec.proxy_port {
        Some(p) if !palisade_core::PROXY_PORTS.contains(&p) => {
            return Err(SpecError::ProxyPort {
                port: p,
                min: *palisade_core::PROXY_PORTS.start(),
                max: *palisade_core::PROXY_PORTS.end(),
            });
        }
        // 0: not assigned yet.
        p => p.unwrap_or(0),
    };
    Ok(palisade_core::Tenant {
        quota: Quota {
            cpu: spec
                .quota
                .cpu
                .parse::<Cpu>()
                .map_err(at("spec.quota.cpu"))?,
            memory: spec
                .quota
                .memory
                .parse::<Memory>()
                .map_err(at("spec.quota.memory"))?,
            pods: spec.quota.pods,
        },
        node_pool: spec
            .node_pool
            .as_deref()
            .map(str::parse::<NodePoolName>)
            .transpose()
            .map_err(at("spec.nodePool"))?,
        egress: EgressProfile {
            mode: match spec.egress.mode {
                EgressModeSpec::Proxy => EgressMode::Proxy,
                EgressModeSpec::CiliumEgressGateway => EgressMode::CiliumEgressGateway,
            },
            ip,
            public_ip,
        },
        proxy_port,
        labels: labels(&spec.labels)?,
        created_at: Timestamp(0),
        name,
    })
}

fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks what the core model does not hold (env, resources) and builds
/// the core's deployment.
pub fn core_deployment(
    tenant: &TenantName,
    name: &str,
    spec: &TenantDeploymentSpec,
    subnet: Ipv6Net,
) -> Result<Deployment, SpecError> {
    let mut ports = spec
        .ports
        .iter()
        .map(|p| p.to_string().parse::<Port>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(at("spec.ports"))?;
    ports.sort();
    ports.dedup();
    for e in &spec.env {
        if !is_env_name(&e.name) {
            return Err(SpecError::EnvName {
                name: e.name.clone(),
            });
        }
    }
    if let Some(r) = &spec.resources {
        for (field, cpu) in [("cpuRequest", &r.cpu_request), ("cpuLimit", &r.cpu_limit)] {
            if let Some(cpu) = cpu {
                cpu.parse::<Cpu>()
                    .map_err(at(format!("spec.resources.{field}")))?;
            }
        }
        for (field, mem) in [
            ("memoryRequest", &r.memory_request),
            ("memoryLimit", &r.memory_limit),
        ] {
            if let Some(mem) = mem {
                mem.parse::<Memory>()
                    .map_err(at(format!("spec.resources.{field}")))?;
            }
        }
    }
    for a in &spec.allow_from {
        a.deployment
            .parse::<DeploymentName>()
            .map_err(at("spec.allowFrom.deployment"))?;
        if let Some(p) = a.port {
            p.to_string()
                .parse::<Port>()
                .map_err(at("spec.allowFrom.port"))?;
        }
    }
    Ok(Deployment {
        tenant: tenant.clone(),
        name: name.parse().map_err(at("metadata.name"))?,
        image: spec.image.parse::<Image>().map_err(at("spec.image"))?,
        replicas: spec
            .replicas
            .to_string()
            .parse::<Replicas>()
            .map_err(at("spec.replicas"))?,
        ports,
        subnet,
        labels: labels(&spec.labels)?,
        workload: workload_spec(spec)?,
        created_at: Timestamp(0),
    })
}

/// The model's workload spec from the resource's command, args, scratch,
/// security and Secret-sourced env. Literal env stays with
/// `overlay_container`.
fn workload_spec(spec: &TenantDeploymentSpec) -> Result<WorkloadSpec, SpecError> {
    use crate::crd::SecurityProfileSpec as S;
    use palisade_core::model::{EnvValue, EnvVar};
    let env = spec
        .env
        .iter()
        .filter_map(|e| e.value_from.as_ref().map(|r| (e, &r.secret_key_ref)))
        .map(|(e, r)| {
            Ok::<_, ModelError>(EnvVar {
                name: e.name.parse()?,
                value: EnvValue::SecretKey {
                    secret: r.name.parse()?,
                    key: r.key.parse()?,
                },
            })
        })
        .collect::<Result<_, _>>()
        .map_err(at("spec.env"))?;
    let scratch = spec
        .scratch
        .iter()
        .map(|s| {
            Ok::<_, ModelError>(palisade_core::model::ScratchVolume {
                path: s.path.parse()?,
                size_limit: s.size_limit.as_deref().map(str::parse).transpose()?,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(at("spec.scratch"))?;
    let security = spec.security.map(|s| match s {
        S::Restricted => SecurityProfile::Restricted,
        S::Baseline => SecurityProfile::Baseline,
        S::BaselineReadOnly => SecurityProfile::BaselineReadOnly,
    });
    WorkloadSpec::new(
        env,
        spec.command.clone(),
        spec.args.clone(),
        scratch,
        security,
    )
    .map_err(at("spec"))
}

/// The subnet of a workload: the claim carrying its uid (the lowest if,
/// after a crash, it has several).
pub fn subnet_for(workload_uid: &str, claims: &[SubnetClaim]) -> Option<Ipv6Net> {
    claims
        .iter()
        .filter(|c| {
            c.spec.workload_uid == workload_uid
                && c.spec.released_at.is_none()
                && c.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|c| subnet_of(&c.name_any()))
        .min()
}

/// What a tenant reconcile wants, and why some workloads are left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Every object of the tenant, in apply order, labelled, owned by the
    /// tenant and annotated with its hash.
    pub objects: Vec<Object>,
    /// Workloads rendered.
    pub rendered: Vec<String>,
    /// Workloads waiting for their subnet.
    pub pending: Vec<String>,
    /// Workloads whose spec is invalid, with the reason.
    pub invalid: Vec<(String, String)>,
}

/// The desired objects of `tenant` with its `workloads` (those in its
/// namespace) and the `claims` carrying its label, without platform-wide
/// settings.
pub fn plan_tenant(
    pool: &Pool,
    options: &RenderOptions,
    tenant: &Tenant,
    workloads: &[TenantDeployment],
    claims: &[SubnetClaim],
) -> Result<Plan, SpecError> {
    plan_tenant_under(pool, options, tenant, workloads, claims, None)
}

/// [`plan_tenant`] under the platform's settings: with the central
/// gateway, each workload with a port also gets its route to it and the
/// policy rules letting it in (`palisade render` puts those with the
/// tenant too).
pub fn plan_tenant_under(
    pool: &Pool,
    options: &RenderOptions,
    tenant: &Tenant,
    workloads: &[TenantDeployment],
    claims: &[SubnetClaim],
    platform: Option<&PlatformSpec>,
) -> Result<Plan, SpecError> {
    let core = core_tenant(&tenant.name_any(), &tenant.spec)?;
    let mut plan = Plan {
        objects: Vec::new(),
        rendered: Vec::new(),
        pending: Vec::new(),
        invalid: Vec::new(),
    };
    let mut snapshot = Snapshot {
        pool: pool.clone(),
        tenants: vec![core.clone()],
        deployments: Vec::new(),
        gateways: Vec::new(),
        allow_rules: Vec::new(),
    };
    // Central first: the renderer keeps the snapshot's order.
    if platform.is_some_and(|p| p.central_gateway) {
        snapshot.gateways.push(Gateway {
            scope: GatewayScope::Central,
            created_at: Timestamp(0),
        });
    }
    if tenant.spec.gateway {
        snapshot.gateways.push(Gateway {
            scope: GatewayScope::PerTenant {
                tenant: core.name.clone(),
            },
            created_at: Timestamp(0),
        });
    }
    let mut specs: BTreeMap<String, &TenantDeploymentSpec> = BTreeMap::new();
    let mut generations: BTreeMap<String, i64> = BTreeMap::new();
    let mut sorted: Vec<&TenantDeployment> = workloads
        .iter()
        .filter(|w| w.metadata.deletion_timestamp.is_none())
        .collect();
    sorted.sort_by_key(|w| w.name_any());
    // Claims by workload uid: `subnet_for` over all claims per workload
    // would be quadratic in a tenant's workloads.
    let mut held: HashMap<&str, Vec<SubnetClaim>> = HashMap::new();
    for c in claims {
        held.entry(&c.spec.workload_uid)
            .or_default()
            .push(c.clone());
    }
    for w in sorted {
        let name = w.name_any();
        let uid = w.uid().unwrap_or_default();
        let mine = held.get(uid.as_str()).map_or(&[][..], Vec::as_slice);
        let Some(subnet) = subnet_for(&uid, mine) else {
            plan.pending.push(name);
            continue;
        };
        match core_deployment(&core.name, &name, &w.spec, subnet) {
            Ok(d) => {
                match w.spec.gateway {
                    GatewayMode::None => {}
                    GatewayMode::Tenant => {
                        let scope = GatewayScope::PerTenant {
                            tenant: core.name.clone(),
                        };
                        if !snapshot.gateways.iter().any(|g| g.scope == scope) {
                            snapshot.gateways.push(Gateway {
                                scope,
                                created_at: Timestamp(0),
                            });
                        }
                    }
                    GatewayMode::Dedicated => snapshot.gateways.push(Gateway {
                        scope: GatewayScope::PerDeployment {
                            tenant: core.name.clone(),
                            deployment: d.name.clone(),
                        },
                        created_at: Timestamp(0),
                    }),
                }
                snapshot.deployments.push(d);
                specs.insert(name.clone(), &w.spec);
                generations.insert(name.clone(), w.metadata.generation.unwrap_or(0));
                plan.rendered.push(name);
            }
            Err(e) => plan.invalid.push((name, explain(&e))),
        }
    }
    // Allow rules between rendered workloads; a rule naming a workload
    // that does not exist (yet) opens nothing.
    for d in &snapshot.deployments {
        let Some(spec) = specs.get(d.name.as_str()) else {
            continue;
        };
        for a in &spec.allow_from {
            let Ok(from) = a.deployment.parse::<DeploymentName>() else {
                continue;
            };
            if !specs.contains_key(from.as_str()) {
                continue;
            }
            snapshot.allow_rules.push(AllowRule {
                tenant: core.name.clone(),
                from,
                to: d.name.clone(),
                port: a.port.and_then(|p| p.to_string().parse().ok()),
            });
        }
    }
    let rendered = palisade_kube::render(&snapshot, options)
        .map_err(|e| SpecError::Render(std::sync::Arc::new(e)))?;
    let owner = owner_reference(tenant);
    for t in rendered.tenants {
        let mut objects = t.objects;
        objects.extend(t.egress_config);
        for d in t.deployments {
            let spec = specs.get(d.name.as_str()).copied();
            for mut o in d.objects {
                if let (Some(spec), "Deployment", "apps/v1") =
                    (spec, o.kind.as_str(), o.api_version.as_str())
                {
                    overlay_container(&mut o.body, spec);
                    if let (Some(g), Some(meta)) = (
                        generations.get(d.name.as_str()),
                        o.body.get_mut("metadata").and_then(Value::as_object_mut),
                    ) {
                        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
                        if let Some(a) = ann.as_object_mut() {
                            a.insert(GENERATION_ANNOTATION.into(), g.to_string().into());
                        }
                    }
                }
                objects.push(o);
            }
        }
        for mut o in objects {
            finish(&mut o, &owner);
            plan.objects.push(o);
        }
    }
    Ok(plan)
}

fn owner_reference(tenant: &Tenant) -> Value {
    json!({
        "apiVersion": crate::crd::API_VERSION,
        "kind": "Tenant",
        "name": tenant.name_any(),
        "uid": tenant.uid().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Adds what the core model does not carry: the container's env (after
/// the proxy's, so a user can override `NO_PROXY`) and resources.
fn overlay_container(body: &mut Value, spec: &TenantDeploymentSpec) {
    let Some(container) = body
        .pointer_mut("/spec/template/spec/containers/0")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if !spec.env.is_empty() {
        let mut env: Vec<Value> = container
            .get("env")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // Secret-sourced entries are the renderer's (`workload_spec`).
        for e in spec.env.iter().filter(|e| e.value_from.is_none()) {
            env.retain(|v| v["name"] != e.name.as_str());
            env.push(json!({"name": e.name, "value": e.value}));
        }
        container.insert("env".into(), Value::Array(env));
    }
    if let Some(r) = &spec.resources {
        let set =
            |c: &mut serde_json::Map<String, Value>, group: &str, key: &str, v: &Option<String>| {
                let Some(v) = v else {
                    return;
                };
                if let Some(m) = c
                    .entry("resources")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .map(|r| r.entry(group).or_insert_with(|| json!({})))
                    .and_then(Value::as_object_mut)
                {
                    m.insert(key.into(), Value::String(v.clone()));
                }
            };
        set(container, "requests", "cpu", &r.cpu_request);
        set(container, "requests", "memory", &r.memory_request);
        set(container, "limits", "cpu", &r.cpu_limit);
        set(container, "limits", "memory", &r.memory_limit);
    }
}

/// Relabels `managed-by`, sets the owner, and stamps the hash of the
/// result (computed without the stamp).
fn finish(o: &mut Object, owner: &Value) {
    let Some(meta) = o.body.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(l) = meta.get_mut("labels").and_then(Value::as_object_mut) {
        l.insert(MANAGED_BY.0.into(), MANAGED_BY_OPERATOR.into());
    }
    meta.insert("ownerReferences".into(), json!([owner]));
    let hash = hash(&o.body);
    if let Some(meta) = o.body.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert(HASH_ANNOTATION.into(), hash.into());
        }
    }
}

/// A short, stable hash of a JSON value (sha256 of its compact text; keys
/// are sorted by serde_json's map).
pub fn hash(v: &Value) -> String {
    let digest = Sha256::digest(v.to_string().as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// A live object as far as apply and prune care.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Live {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Its [`HASH_ANNOTATION`].
    pub hash: Option<String>,
    /// Already being deleted.
    pub deleting: bool,
    /// Its `palisade.io/deployment` label: the workload it belongs to.
    pub workload: Option<String>,
}

impl Live {
    /// `Kind namespace/name`.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

fn key(kind: &str, ns: &Option<String>, name: &str) -> (String, Option<String>, String) {
    (kind.to_owned(), ns.clone(), name.to_owned())
}

fn stamped(o: &Object) -> Option<&str> {
    o.body
        .pointer(&format!(
            "/metadata/annotations/{}",
            HASH_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
}

/// The desired objects that are missing or differ from what was last
/// applied; unchanged objects are not written again.
pub fn to_apply<'a>(desired: &'a [Object], live: &[Live]) -> Vec<&'a Object> {
    let live: BTreeMap<_, _> = live
        .iter()
        .map(|l| (key(&l.kind, &l.namespace, &l.name), l))
        .collect();
    desired
        .iter()
        .filter(|o| match live.get(&key(&o.kind, &o.namespace, &o.name)) {
            Some(l) => l.deleting || l.hash.as_deref() != stamped(o),
            None => true,
        })
        .collect()
}

/// Owned live objects that are no longer desired (and not already going).
pub fn to_prune(desired: &[Object], live: &[Live]) -> Vec<Live> {
    let want: BTreeSet<_> = desired
        .iter()
        .map(|o| key(&o.kind, &o.namespace, &o.name))
        .collect();
    live.iter()
        .filter(|l| !l.deleting && !want.contains(&key(&l.kind, &l.namespace, &l.name)))
        .cloned()
        .collect()
}

/// What a tenant reconcile deletes: [`to_prune`], except the objects of
/// workloads that still exist but are not rendered: those whose spec just
/// became invalid (a typo in an image must not take down a running
/// workload) and those whose claim is missing (someone deleted the
/// SubnetClaim: the workload controller re-creates it for the subnet in
/// the workload's status, as Kubernetes' IPAddress repair loop re-creates
/// a Service's IPAddress from `spec.clusterIP`). They keep their objects
/// until fixed or deleted.
pub fn prunable(plan: &Plan, live: &[Live]) -> Vec<Live> {
    let invalid: BTreeSet<&str> = plan
        .invalid
        .iter()
        .map(|(w, _)| w.as_str())
        .chain(plan.pending.iter().map(String::as_str))
        .collect();
    to_prune(&plan.objects, live)
        .into_iter()
        .filter(|l| !l.workload.as_deref().is_some_and(|w| invalid.contains(w)))
        .collect()
}

/// Sets `new` in `conditions`, keeping the transition time when the
/// status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition, now: &str) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) => {
            new.last_transition_time = if c.status == new.status {
                c.last_transition_time.clone()
            } else {
                now.to_owned()
            };
            *c = new;
        }
        None => {
            new.last_transition_time = now.to_owned();
            conditions.push(new);
        }
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: String::new(),
        observed_generation: generation,
    }
}

/// A tenant's status after a reconcile that produced `plan` (or failed
/// to, with the spec error).
pub fn tenant_status(
    current: Option<&TenantStatus>,
    name: &str,
    generation: Option<i64>,
    plan: &Result<Plan, SpecError>,
    now: &str,
) -> TenantStatus {
    let mut s = current.cloned().unwrap_or_default();
    s.namespace = Some(format!("{NAMESPACE_PREFIX}{name}"));
    s.observed_generation = generation;
    let c = match plan {
        Err(e) => condition("Ready", false, "InvalidSpec", explain(e), generation),
        Ok(p) => {
            s.deployment_count = u32::try_from(p.rendered.len()).unwrap_or(u32::MAX);
            let mut problems = Vec::new();
            if !p.pending.is_empty() {
                problems.push(format!("waiting for a subnet: {}", p.pending.join(", ")));
            }
            for (w, why) in &p.invalid {
                problems.push(format!("{w}: {why}"));
            }
            if problems.is_empty() {
                condition(
                    "Ready",
                    true,
                    "Reconciled",
                    format!(
                        "{} objects applied for {} workloads",
                        p.objects.len(),
                        p.rendered.len()
                    ),
                    generation,
                )
            } else {
                let reason = if p.invalid.is_empty() {
                    "Pending"
                } else {
                    "InvalidWorkloads"
                };
                condition("Ready", false, reason, problems.join("; "), generation)
            }
        }
    };
    set_condition(&mut s.conditions, c, now);
    s
}

/// A tenant's status while its deletion waits for `remaining` workloads.
pub fn terminating_status(
    current: Option<&TenantStatus>,
    remaining: usize,
    now: &str,
) -> TenantStatus {
    let mut s = current.cloned().unwrap_or_default();
    let c = condition(
        "Ready",
        false,
        "Terminating",
        format!("deleting: waiting for {remaining} workloads to be deleted"),
        s.observed_generation,
    );
    set_condition(&mut s.conditions, c, now);
    s
}

/// Why a workload gets no subnet (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Its spec is invalid.
    InvalidSpec(SpecError),
    /// Its namespace's `Tenant` does not exist.
    TenantMissing(String),
    /// Its claim is gone and its subnet (from its status) cannot be
    /// claimed again: another claimant holds it, or the pool no longer
    /// contains it. The workload keeps its subnet; it is never renumbered
    /// behind its pods' back.
    SubnetLost(String),
}

impl Blocked {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Blocked::InvalidSpec(_) => "InvalidSpec",
            Blocked::TenantMissing(_) => "TenantMissing",
            Blocked::SubnetLost(_) => "SubnetConflict",
        }
    }

    /// The condition message.
    pub fn message(&self) -> String {
        match self {
            Blocked::InvalidSpec(e) => explain(e),
            Blocked::TenantMissing(t) => {
                format!("no Tenant {t}: create it (palisade --store kubernetes tenant create {t})")
            }
            Blocked::SubnetLost(why) => why.clone(),
        }
    }
}

/// A workload's status.
pub fn workload_status(
    current: Option<&TenantDeploymentStatus>,
    generation: Option<i64>,
    subnet: Result<Option<Ipv6Net>, &Blocked>,
    ready_replicas: i32,
    replicas: u32,
    now: &str,
) -> TenantDeploymentStatus {
    let mut s = current.cloned().unwrap_or_default();
    s.observed_generation = generation;
    s.ready_replicas = ready_replicas;
    let (alloc, ready) = match subnet {
        // The subnet in the status stays: it is what the workload's pods
        // use, and the claim repair needs it.
        Err(b) => (
            condition(
                "SubnetAllocated",
                false,
                b.reason(),
                b.message(),
                generation,
            ),
            condition("Ready", false, b.reason(), b.message(), generation),
        ),
        Ok(None) => {
            s.subnet = None;
            (
                condition(
                    "SubnetAllocated",
                    false,
                    "PoolExhausted",
                    "no free subnet in the pool".into(),
                    generation,
                ),
                condition(
                    "Ready",
                    false,
                    "PoolExhausted",
                    "no free subnet in the pool".into(),
                    generation,
                ),
            )
        }
        Ok(Some(net)) => {
            s.subnet = Some(net.to_string());
            let all = i64::from(ready_replicas) >= i64::from(replicas);
            (
                condition(
                    "SubnetAllocated",
                    true,
                    "Claimed",
                    format!("subnet {net}"),
                    generation,
                ),
                condition(
                    "Ready",
                    all,
                    if all { "PodsReady" } else { "PodsNotReady" },
                    format!("{ready_replicas}/{replicas} pods ready"),
                    generation,
                ),
            )
        }
    };
    set_condition(&mut s.conditions, alloc, now);
    set_condition(&mut s.conditions, ready, now);
    s
}

/// Claims to delete in a garbage-collection pass:
/// - released claims whose quarantine (`reuse_after`) is over;
/// - claims whose workload (by uid) no longer exists, older than `grace`
///   (a claim is created before its workload's status names it, so a young
///   claim may just not be visible in a stale workload list yet). Such a
///   claim was never released, so it is not quarantined.
pub fn orphaned_claims(
    claims: &[SubnetClaim],
    live_workload_uids: &HashSet<String>,
    now_secs: i64,
    grace: Duration,
    reuse_after: Duration,
) -> Vec<String> {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let (grace, reuse_after) = (secs(grace), secs(reuse_after));
    let older_than = |t: i64, age: i64| now_secs.saturating_sub(t) >= age;
    claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| match &c.spec.released_at {
            Some(at) => at
                .parse::<k8s_openapi::jiff::Timestamp>()
                // An unreadable stamp: treat as released long ago.
                .map_or(true, |t| older_than(t.as_second(), reuse_after)),
            None => {
                !live_workload_uids.contains(&c.spec.workload_uid)
                    && c.metadata
                        .creation_timestamp
                        .as_ref()
                        .is_some_and(|t| older_than(t.0.as_second(), grace))
            }
        })
        .map(ResourceExt::name_any)
        .collect()
}

/// Labels every claim carries, for label-selected lists.
pub fn claim_labels(tenant: &str, deployment: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY_OPERATOR.to_owned()),
        (TENANT_LABEL.to_owned(), tenant.to_owned()),
        (DEPLOYMENT_LABEL.to_owned(), deployment.to_owned()),
        (WORKLOAD_UID_LABEL.to_owned(), uid.to_owned()),
    ])
}

/// The kinds a tenant's objects can have, as (apiVersion, kind,
/// namespaced), dependants first (the prune order): what `palisade apply`
/// prunes, less the platform's and Flux's kinds.
pub fn tenant_kinds() -> impl Iterator<Item = (&'static str, &'static str, bool)> {
    palisade_kube::apply::KINDS
        .into_iter()
        .filter(|(_, kind, _)| !matches!(*kind, "RuntimeClass" | "GitRepository" | "Kustomization"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::claim::claim_name;
    use crate::crd::{AllowFrom, EnvVarSpec, ResourcesSpec, SubnetClaimSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use crate::testing::example_pool as pool;

    fn tenant() -> Tenant {
        let mut t = Tenant::new("acme", TenantSpec::default());
        t.metadata.uid = Some("tenant-uid".into());
        t
    }

    fn workload(name: &str, spec: TenantDeploymentSpec) -> TenantDeployment {
        let mut w = TenantDeployment::new(name, spec);
        w.metadata.namespace = Some("tenant-acme".into());
        w.metadata.uid = Some(format!("uid-{name}"));
        w
    }

    fn spec(image: &str, ports: &[u16]) -> TenantDeploymentSpec {
        TenantDeploymentSpec {
            image: image.into(),
            replicas: 2,
            ports: ports.to_vec(),
            ..TenantDeploymentSpec::default()
        }
    }

    fn claim(index: u128, w: &TenantDeployment, created: Option<&str>) -> SubnetClaim {
        let s = pool().subnet(index);
        let mut c = SubnetClaim::new(
            &claim_name(s),
            SubnetClaimSpec {
                subnet: s.to_string(),
                tenant: "acme".into(),
                namespace: "tenant-acme".into(),
                deployment: w.name_any(),
                workload_uid: w.uid().unwrap(),
                released_at: None,
            },
        );
        c.metadata.creation_timestamp = created.map(|t| Time(t.parse().unwrap()));
        c
    }

    fn ids(plan: &Plan) -> Vec<String> {
        plan.objects.iter().map(Object::id).collect()
    }

    #[test]
    fn plan_renders_the_tenant_with_the_same_renderer_as_palisade_render() {
        let web = workload(
            "web",
            TenantDeploymentSpec {
                env: vec![EnvVarSpec {
                    name: "NO_PROXY".into(),
                    value: "example.com".into(),
                    value_from: None,
                }],
                resources: Some(ResourcesSpec {
                    cpu_limit: Some("2".into()),
                    ..ResourcesSpec::default()
                }),
                gateway: GatewayMode::Dedicated,
                ..spec("nginx:alpine", &[80])
            },
        );
        let db = workload(
            "db",
            TenantDeploymentSpec {
                allow_from: vec![AllowFrom {
                    deployment: "web".into(),
                    port: Some(5432),
                }],
                ..spec("postgres:16", &[5432])
            },
        );
        let claims = [claim(0, &web, None), claim(1, &db, None)];
        let plan = plan_tenant(
            &pool(),
            &RenderOptions::default(),
            &tenant(),
            &[web.clone(), db.clone()],
            &claims,
        )
        .unwrap();
        assert_eq!(plan.rendered, ["db", "web"]);
        assert!(plan.pending.is_empty() && plan.invalid.is_empty());

        // Exactly what `palisade render` makes for the same snapshot, in the
        // same order, apart from the operator's label, owner and hash.
        let mut snapshot = Snapshot {
            pool: pool(),
            tenants: vec![core_tenant("acme", &TenantSpec::default()).unwrap()],
            deployments: vec![
                core_deployment(&"acme".parse().unwrap(), "db", &db.spec, pool().subnet(1))
                    .unwrap(),
                core_deployment(&"acme".parse().unwrap(), "web", &web.spec, pool().subnet(0))
                    .unwrap(),
            ],
            gateways: vec![Gateway {
                scope: GatewayScope::PerDeployment {
                    tenant: "acme".parse().unwrap(),
                    deployment: "web".parse().unwrap(),
                },
                created_at: Timestamp(0),
            }],
            allow_rules: vec![AllowRule {
                tenant: "acme".parse().unwrap(),
                from: "web".parse().unwrap(),
                to: "db".parse().unwrap(),
                port: Some("5432".parse().unwrap()),
            }],
        };
        snapshot.deployments.sort_by(|a, b| a.name.cmp(&b.name));
        let reference = palisade_kube::render(&snapshot, &RenderOptions::default()).unwrap();
        let reference: Vec<String> = reference.tenants[0]
            .objects
            .iter()
            .chain(reference.tenants[0].egress_config.iter())
            .chain(
                reference.tenants[0]
                    .deployments
                    .iter()
                    .flat_map(|d| d.objects.iter()),
            )
            .map(Object::id)
            .collect();
        assert_eq!(ids(&plan), reference);
        assert_eq!(ids(&plan)[0], "Namespace tenant-acme");
        assert!(ids(&plan).contains(&"Gateway palisade-gateways/deployment-acme-web".to_owned()));
        assert!(ids(&plan).contains(&"CiliumPodIPPool acme.web".to_owned()));

        for o in &plan.objects {
            let meta = &o.body["metadata"];
            assert_eq!(
                meta["labels"][MANAGED_BY.0],
                MANAGED_BY_OPERATOR,
                "{}",
                o.id()
            );
            assert_eq!(meta["ownerReferences"][0]["uid"], "tenant-uid");
            let stamp = meta["annotations"][HASH_ANNOTATION].as_str().unwrap();
            // The stamp is the hash of the body without the stamp.
            let mut bare = o.body.clone();
            bare["metadata"]["annotations"]
                .as_object_mut()
                .unwrap()
                .remove(HASH_ANNOTATION);
            if bare["metadata"]["annotations"]
                .as_object()
                .unwrap()
                .is_empty()
            {
                bare["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("annotations");
            }
            assert_eq!(stamp, hash(&bare), "{}", o.id());
        }
        let dep = plan
            .objects
            .iter()
            .find(|o| o.id() == "Deployment tenant-acme/web")
            .unwrap();
        let c = &dep.body["spec"]["template"]["spec"]["containers"][0];
        let no_proxy: Vec<&Value> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "NO_PROXY")
            .collect();
        assert_eq!(
            no_proxy.len(),
            1,
            "the user's NO_PROXY replaces the proxy's"
        );
        assert_eq!(no_proxy[0]["value"], "example.com");
        assert_eq!(c["resources"]["limits"]["cpu"], "2");
        assert_eq!(
            c["resources"]["requests"]["cpu"],
            RenderOptions::default().resources.cpu_request
        );
    }

    #[test]
    fn workloads_without_a_claim_wait_and_invalid_ones_are_reported() {
        let ok = workload("web", spec("nginx:alpine", &[80]));
        let waiting = workload("api", spec("nginx:alpine", &[80]));
        let bad = workload("bad", spec("Not An Image", &[]));
        let gone = {
            let mut w = workload("gone", spec("nginx:alpine", &[]));
            w.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
            w
        };
        let claims = [
            claim(0, &ok, None),
            claim(1, &bad, None),
            claim(2, &gone, None),
        ];
        let plan = plan_tenant(
            &pool(),
            &RenderOptions::default(),
            &tenant(),
            &[ok, waiting, bad, gone],
            &claims,
        )
        .unwrap();
        assert_eq!(plan.rendered, ["web"]);
        assert_eq!(plan.pending, ["api"]);
        assert_eq!(plan.invalid.len(), 1);
        assert_eq!(plan.invalid[0].0, "bad");
        assert!(plan.invalid[0].1.contains("invalid image reference"));
        let status = tenant_status(None, "acme", Some(3), &Ok(plan), "t0");
        assert_eq!(status.deployment_count, 1);
        assert_eq!(status.observed_generation, Some(3));
        let c = &status.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InvalidWorkloads")
        );
        assert!(
            c.message.contains("waiting for a subnet: api"),
            "{}",
            c.message
        );
    }

    #[test]
    fn an_invalid_tenant_is_an_error_with_the_models_explanation() {
        let mut t = tenant();
        t.spec.quota.memory = "lots".into();
        let err = plan_tenant(&pool(), &RenderOptions::default(), &t, &[], &[]).unwrap_err();
        assert_eq!(err.to_string(), "invalid spec.quota.memory");
        let s = tenant_status(None, "acme", Some(1), &Err(err), "t0");
        assert_eq!(s.conditions[0].reason, "InvalidSpec");
        // The condition carries the field and the model's reason.
        assert!(
            s.conditions[0]
                .message
                .starts_with("invalid spec.quota.memory: "),
            "{}",
            s.conditions[0].message
        );
        assert_eq!(s.deployment_count, 0);
    }

    #[test]
    fn spec_checks_cover_what_the_core_does_not_hold() {
        let t: TenantName = "acme".parse().unwrap();
        let net = pool().subnet(0);
        let mut s = spec("nginx:alpine", &[80, 80, 443]);
        assert_eq!(core_deployment(&t, "web", &s, net).unwrap().ports.len(), 2);
        s.env = vec![EnvVarSpec {
            name: "1BAD".into(),
            value: String::new(),
            value_from: None,
        }];
        assert!(matches!(
            core_deployment(&t, "web", &s, net).unwrap_err(),
            SpecError::EnvName { name } if name == "1BAD"
        ));
        s.env.clear();
        s.resources = Some(ResourcesSpec {
            memory_limit: Some("a lot".into()),
            ..ResourcesSpec::default()
        });
        assert!(core_deployment(&t, "web", &s, net).is_err());
        s.resources = None;
        s.ports = vec![0];
        assert!(core_deployment(&t, "web", &s, net).is_err());
        assert!(core_deployment(&t, "Web_1", &spec("nginx", &[]), net).is_err());
        assert_eq!(tenant_of_namespace("tenant-acme").unwrap().as_str(), "acme");
        assert!(tenant_of_namespace("default").is_err());
    }

    fn live(o: &Object) -> Live {
        Live {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            hash: stamped(o).map(str::to_owned),
            deleting: false,
            workload: o.body["metadata"]["labels"][DEPLOYMENT_LABEL]
                .as_str()
                .map(str::to_owned),
        }
    }

    #[test]
    fn apply_only_what_changed_and_prune_only_what_is_no_longer_wanted() {
        let web = workload("web", spec("nginx:alpine", &[80]));
        let db = workload("db", spec("postgres:16", &[5432]));
        let both = plan_tenant(
            &pool(),
            &RenderOptions::default(),
            &tenant(),
            &[web.clone(), db.clone()],
            &[claim(0, &web, None), claim(1, &db, None)],
        )
        .unwrap();
        let live_now: Vec<Live> = both.objects.iter().map(live).collect();
        assert!(to_apply(&both.objects, &live_now).is_empty());
        assert!(to_prune(&both.objects, &live_now).is_empty());
        // Nothing live yet: everything is applied.
        assert_eq!(to_apply(&both.objects, &[]).len(), both.objects.len());

        let mut scaled = web.clone();
        scaled.spec.replicas = 7;
        let only_web = plan_tenant(
            &pool(),
            &RenderOptions::default(),
            &tenant(),
            &[scaled],
            &[claim(0, &web, None)],
        )
        .unwrap();
        let applied: Vec<String> = to_apply(&only_web.objects, &live_now)
            .iter()
            .map(|o| o.id())
            .collect();
        // Only web's Deployment changed (no rule linked web and db).
        assert_eq!(applied, ["Deployment tenant-acme/web"]);
        let pruned: BTreeSet<String> = to_prune(&only_web.objects, &live_now)
            .iter()
            .map(Live::id)
            .collect();
        let want: BTreeSet<String> = [
            "CiliumPodIPPool acme.db",
            "Deployment tenant-acme/db",
            "Service tenant-acme/db",
            "CiliumNetworkPolicy tenant-acme/deployment-db",
        ]
        .map(String::from)
        .into();
        assert_eq!(pruned, want);
        // An object already being deleted is not deleted again, and is
        // re-applied if wanted.
        let mut going = live_now.clone();
        for l in &mut going {
            l.deleting = true;
        }
        assert!(to_prune(&[], &going).is_empty());
        assert_eq!(to_apply(&both.objects, &going).len(), both.objects.len());
    }

    #[test]
    fn a_workload_that_turns_invalid_keeps_its_objects() {
        let web = workload("web", spec("nginx:alpine", &[80]));
        let claims = [claim(0, &web, None)];
        let good = plan_tenant(
            &pool(),
            &RenderOptions::default(),
            &tenant(),
            std::slice::from_ref(&web),
            &claims,
        )
        .unwrap();
        let live: Vec<Live> = good.objects.iter().map(live).collect();
        let mut typo = web.clone();
        typo.spec.image = "nginx:alpine!".into();
        let bad = plan_tenant(
            &pool(),
            &RenderOptions::default(),
            &tenant(),
            &[typo],
            &claims,
        )
        .unwrap();
        assert_eq!(bad.invalid.len(), 1);
        // to_prune alone would remove the running workload...
        assert!(
            to_prune(&bad.objects, &live)
                .iter()
                .any(|l| l.id() == "Deployment tenant-acme/web")
        );
        // ...prunable keeps it.
        assert!(prunable(&bad, &live).is_empty());
        // Deleted (not just invalid): its objects go.
        let gone = plan_tenant(&pool(), &RenderOptions::default(), &tenant(), &[], &[]).unwrap();
        assert!(
            prunable(&gone, &live)
                .iter()
                .any(|l| l.id() == "Deployment tenant-acme/web")
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_until_their_status_changes() {
        let net = pool().subnet(3);
        let s1 = workload_status(None, Some(1), Ok(Some(net)), 0, 2, "t1");
        assert_eq!(s1.subnet.as_deref(), Some(net.to_string().as_str()));
        let ready = |s: &TenantDeploymentStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .unwrap()
        };
        assert_eq!(ready(&s1).last_transition_time, "t1");
        assert_eq!(ready(&s1).reason, "PodsNotReady");
        // One more pod ready, still not all: same status, same time.
        let s2 = workload_status(Some(&s1), Some(1), Ok(Some(net)), 1, 2, "t2");
        assert_eq!(ready(&s2).last_transition_time, "t1");
        assert_eq!(ready(&s2).message, "1/2 pods ready");
        let s3 = workload_status(Some(&s2), Some(1), Ok(Some(net)), 2, 2, "t3");
        assert_eq!(ready(&s3).status, "True");
        assert_eq!(ready(&s3).last_transition_time, "t3");
        // Same inputs, same status: the reconcile writes nothing.
        assert_eq!(
            workload_status(Some(&s3), Some(1), Ok(Some(net)), 2, 2, "t4"),
            s3
        );
        let full = workload_status(None, Some(1), Ok(None), 0, 2, "t1");
        assert_eq!(ready(&full).reason, "PoolExhausted");
        assert_eq!(full.subnet, None);
        let bad = Blocked::InvalidSpec(SpecError::EnvName { name: "1X".into() });
        assert_eq!(
            ready(&workload_status(None, Some(1), Err(&bad), 0, 2, "t1")).reason,
            "InvalidSpec"
        );
        let orphan = Blocked::TenantMissing("acme".into());
        let s = workload_status(None, Some(1), Err(&orphan), 0, 2, "t1");
        assert_eq!(ready(&s).reason, "TenantMissing");
        assert!(ready(&s).message.contains("tenant create acme"));
    }

    #[test]
    fn only_old_claims_without_a_workload_are_orphans() {
        let live = workload("web", spec("nginx", &[]));
        let dead = workload("dead", spec("nginx", &[]));
        let young = workload("young", spec("nginx", &[]));
        let now = "2026-01-01T01:00:00Z"
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_second();
        let claims = [
            claim(0, &live, Some("2026-01-01T00:00:00Z")),
            claim(1, &dead, Some("2026-01-01T00:00:00Z")),
            claim(2, &young, Some("2026-01-01T00:59:00Z")),
            claim(3, &dead, None),
        ];
        let uids: HashSet<String> = ["uid-web".to_owned()].into();
        let hour = Duration::from_secs(3600);
        let orphans = orphaned_claims(&claims, &uids, now, Duration::from_secs(600), hour);
        assert_eq!(orphans, [claim_name(pool().subnet(1))]);
        assert!(orphaned_claims(&claims, &uids, now, Duration::from_secs(7200), hour).is_empty());
    }

    #[test]
    fn released_claims_wait_out_the_quarantine_then_go() {
        let w = workload("web", spec("nginx", &[]));
        let now = "2026-01-01T01:00:00Z"
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_second();
        let mut released = claim(0, &w, Some("2026-01-01T00:00:00Z"));
        released.spec.released_at = Some("2026-01-01T00:30:00Z".into());
        // Its workload uid is even still live (a re-used uid cannot happen,
        // but the release decides): it does not count as the workload's.
        let uids: HashSet<String> = ["uid-web".to_owned()].into();
        let claims = [released];
        assert_eq!(subnet_for("uid-web", &claims), None);
        let grace = Duration::from_secs(60);
        assert!(orphaned_claims(&claims, &uids, now, grace, Duration::from_secs(3600)).is_empty());
        assert_eq!(
            orphaned_claims(&claims, &uids, now, grace, Duration::from_secs(1800)),
            [claim_name(pool().subnet(0))]
        );
    }

    #[test]
    fn a_workload_with_two_claims_uses_the_lowest() {
        let w = workload("web", spec("nginx", &[]));
        let mut going = claim(0, &w, None);
        going.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let claims = [claim(4, &w, None), claim(2, &w, None), going];
        assert_eq!(subnet_for("uid-web", &claims), Some(pool().subnet(2)));
        assert_eq!(subnet_for("uid-other", &claims), None);
    }
}
