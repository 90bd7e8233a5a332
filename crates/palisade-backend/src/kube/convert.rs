//! Between the operator's custom resources and the model's records. Reads
//! go through the model's parsers again (an object someone edited with
//! kubectl may hold anything); writes keep the model's canonical spelling.

use crate::error::{Context, Error, Result};
use crate::{DeploymentRow, Rollout, TenantRow};
use palisade_core::allocator::Timestamp;
use palisade_core::model::{EnvValue, EnvVar, ScratchVolume, parse_label};
use palisade_core::{
    AllowRule, DeploymentName, EgressMode, Port, Replicas, SecurityProfile, Tenant, TenantName,
    WorkloadSpec,
};
use palisade_operator::crd::{
    AllowFrom, Condition, EgressModeSpec, EgressSpec, EnvVarSourceSpec, EnvVarSpec, QuotaSpec,
    ScratchSpec, SecretKeyRefSpec, SecurityProfileSpec, TenantDeployment, TenantDeploymentSpec,
    TenantSpec,
};
use palisade_operator::desired::{core_tenant, tenant_of_namespace};
use palisade_operator::kube::{Resource, ResourceExt};
use palisade_store::NewDeployment;

/// The `Tenant` custom resource (the model's `Tenant` keeps the name).
pub type TenantCr = palisade_operator::crd::Tenant;

/// When the object was created, in the model's seconds.
pub fn created(o: &impl Resource) -> Timestamp {
    let secs = o
        .meta()
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    Timestamp(u64::try_from(secs).unwrap_or(0))
}

/// The tenant whose namespace holds `w`.
pub fn tenant_of(w: &TenantDeployment) -> Result<TenantName> {
    tenant_of_namespace(&w.namespace().unwrap_or_default()).map_err(Error::other)
}

fn ready(conditions: Option<&[Condition]>) -> String {
    conditions
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map_or_else(|| "Unknown".into(), |c| c.status.clone())
}

/// A workload as the model's row, with the operator's report.
pub fn deployment_row(w: &TenantDeployment) -> Result<DeploymentRow> {
    let what = || {
        format!(
            "TenantDeployment {}/{}",
            w.namespace().unwrap_or_default(),
            w.name_any()
        )
    };
    let tenant = tenant_of(w).with_context(what)?;
    deployment_row_in(tenant, w).with_context(what)
}

fn deployment_row_in(tenant: TenantName, w: &TenantDeployment) -> Result<DeploymentRow> {
    let s = &w.spec;
    let mut ports = s
        .ports
        .iter()
        .map(|p| p.to_string().parse::<Port>())
        .collect::<Result<Vec<_>, _>>()?;
    ports.sort();
    ports.dedup();
    let status = w.status.as_ref();
    Ok(DeploymentRow {
        tenant,
        name: w.name_any().parse()?,
        image: s.image.parse()?,
        replicas: s.replicas.to_string().parse::<Replicas>()?,
        ports,
        subnet: status
            .and_then(|st| st.subnet.as_deref())
            .map(str::parse)
            .transpose()
            .map_err(Error::other)?,
        labels: s
            .labels
            .iter()
            .map(|(k, v)| parse_label(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        workload: workload(s)?,
        created_at: created(w),
        rollout: Some(Rollout {
            ready: ready(status.map(|st| st.conditions.as_slice())),
            ready_replicas: Some(status.map_or(0, |st| st.ready_replicas)),
        }),
    })
}

/// The model's workload spec from the resource's env, command, args,
/// scratch and security.
fn workload(s: &TenantDeploymentSpec) -> Result<WorkloadSpec> {
    let env = s
        .env
        .iter()
        .map(|e| {
            Ok(EnvVar {
                name: e.name.parse()?,
                value: match &e.value_from {
                    None => EnvValue::Literal(e.value.clone()),
                    Some(from) => EnvValue::SecretKey {
                        secret: from.secret_key_ref.name.parse()?,
                        key: from.secret_key_ref.key.parse()?,
                    },
                },
            })
        })
        .collect::<Result<_, palisade_core::ModelError>>()?;
    let scratch = s
        .scratch
        .iter()
        .map(|v| {
            Ok(ScratchVolume {
                path: v.path.parse()?,
                size_limit: v.size_limit.as_deref().map(str::parse).transpose()?,
            })
        })
        .collect::<Result<_, palisade_core::ModelError>>()?;
    let security = s.security.map(|p| match p {
        SecurityProfileSpec::Restricted => SecurityProfile::Restricted,
        SecurityProfileSpec::Baseline => SecurityProfile::Baseline,
        SecurityProfileSpec::BaselineReadOnly => SecurityProfile::BaselineReadOnly,
    });
    Ok(WorkloadSpec::new(
        env,
        s.command.clone(),
        s.args.clone(),
        scratch,
        security,
    )?)
}

/// A `Tenant` resource as the model's row, with the operator's report.
pub fn tenant_row(t: &TenantCr, deployments: usize) -> Result<TenantRow> {
    let mut tenant =
        core_tenant(&t.name_any(), &t.spec).with_context(|| format!("Tenant {}", t.name_any()))?;
    tenant.created_at = created(t);
    Ok(TenantRow {
        tenant,
        deployments,
        rollout: Some(Rollout {
            ready: ready(t.status.as_ref().map(|s| s.conditions.as_slice())),
            ready_replicas: None,
        }),
    })
}

/// The resource's spec for a model tenant; the operator assigns the port.
pub fn tenant_spec(t: &Tenant) -> TenantSpec {
    TenantSpec {
        quota: QuotaSpec {
            cpu: t.quota.cpu.to_string(),
            memory: t.quota.memory.to_string(),
            pods: t.quota.pods,
        },
        node_pool: t.node_pool.as_ref().map(ToString::to_string),
        egress: EgressSpec {
            mode: match t.egress.mode {
                EgressMode::Proxy => EgressModeSpec::Proxy,
                EgressMode::CiliumEgressGateway => EgressModeSpec::CiliumEgressGateway,
            },
            ip: t.egress.ip.map(|ip| ip.to_string()),
            public_ip: t.egress.public_ip.map(|ip| ip.to_string()),
            ..EgressSpec::default()
        },
        labels: t
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..TenantSpec::default()
    }
}

/// The resource's spec for a model deployment (no ports: port 80, as the
/// store does).
pub fn workload_spec(d: &NewDeployment) -> TenantDeploymentSpec {
    let mut ports: Vec<u16> = d.ports.iter().map(|p| p.get()).collect();
    if ports.is_empty() {
        ports.push(Port::HTTP.get());
    }
    ports.sort_unstable();
    ports.dedup();
    let w = &d.workload;
    TenantDeploymentSpec {
        image: d.image.to_string(),
        replicas: d.replicas.get(),
        ports,
        env: w.env().iter().map(env_var).collect(),
        command: w.command().to_vec(),
        args: w.args().to_vec(),
        scratch: w
            .scratch()
            .iter()
            .map(|s| ScratchSpec {
                path: s.path.to_string(),
                size_limit: s.size_limit.map(|m| m.to_string()),
            })
            .collect(),
        security: w.security().map(|p| match p {
            SecurityProfile::Restricted => SecurityProfileSpec::Restricted,
            SecurityProfile::Baseline => SecurityProfileSpec::Baseline,
            SecurityProfile::BaselineReadOnly => SecurityProfileSpec::BaselineReadOnly,
        }),
        labels: d
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..TenantDeploymentSpec::default()
    }
}

fn env_var(e: &EnvVar) -> EnvVarSpec {
    match &e.value {
        EnvValue::Literal(v) => EnvVarSpec {
            name: e.name.to_string(),
            value: v.clone(),
            value_from: None,
        },
        EnvValue::SecretKey { secret, key } => EnvVarSpec {
            name: e.name.to_string(),
            value: String::new(),
            value_from: Some(EnvVarSourceSpec {
                secret_key_ref: SecretKeyRefSpec {
                    name: secret.to_string(),
                    key: key.to_string(),
                },
            }),
        },
    }
}

/// The rule an `allowFrom` entry of `to` states.
pub fn allow_rule(tenant: &TenantName, to: &DeploymentName, a: &AllowFrom) -> Result<AllowRule> {
    Ok(AllowRule {
        tenant: tenant.clone(),
        from: a.deployment.parse()?,
        to: to.clone(),
        port: a.port.map(|p| p.to_string().parse()).transpose()?,
    })
}
