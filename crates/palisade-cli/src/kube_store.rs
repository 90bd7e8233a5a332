//! `palisade --store kubernetes ...`: the same verbs, with the cluster as
//! the store. Commands create or read the operator's custom resources; the
//! operator (in the cluster) allocates subnets and renders objects, so a
//! new deployment's subnet shows up in `list` once it has reconciled.
//!
//! Input is parsed by the same model as the SQLite path before anything is
//! sent, so bad input fails with the same one-line error and the cluster is
//! unchanged. The client is passed in ([`run_with`]), so tests drive these
//! commands against an in-memory API server.

use crate::cli::{
    Cli, Command, CreateArgs, DeploymentRef, ListArgs, TenantCommand, TenantCreateArgs,
};
use crate::output::{Format, fields, outln, print};
use anyhow::{Context, Result, anyhow, bail};
use palisade_core::model::parse_label;
use palisade_core::{DeploymentName, Image, Pool, Port, Replicas, TenantName};
use palisade_operator::crd::{
    EgressModeSpec, EgressSpec, QuotaSpec, SubnetClaim, Tenant, TenantDeployment,
    TenantDeploymentSpec, TenantSpec,
};
use palisade_operator::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use palisade_operator::kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Namespace and name of the operator's ConfigMap (its pool).
const OPERATOR_CONFIG: (&str, &str) = ("palisade-system", "palisade-operator");
/// Field manager of what the CLI writes.
const FIELD_MANAGER: &str = "palisade-cli";
const SUPPORTED: &str = "create, delete, list, stats, tenant create, tenant delete, tenant list";

fn unsupported(cmd: &Command) -> Option<&'static str> {
    Some(match cmd {
        Command::Create(_)
        | Command::Delete(_)
        | Command::List(_)
        | Command::Stats
        | Command::Tenant(
            TenantCommand::Create(_) | TenantCommand::List | TenantCommand::Delete { .. },
        )
        | Command::CreateTenant(_) => return None,
        Command::Init(_) => "init (the pool is the operator's PALISADE_POOL setting)",
        Command::Tenant(_) => "this tenant command",
        Command::Check => "check",
        Command::Render(_) | Command::Apply(_) => "render/apply (the operator applies)",
        _ => "this command",
    })
}

/// Runs `cli` against the cluster from `$KUBECONFIG` (or in-cluster).
pub fn run(cli: &Cli) -> Result<ExitCode> {
    if let Some(what) = unsupported(&cli.command) {
        bail!("--store kubernetes does not support {what}; it supports {SUPPORTED}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let client = Client::try_default()
            .await
            .map_err(|e| anyhow!("cannot connect to the cluster (check $KUBECONFIG): {e}"))?;
        run_with(client, cli).await
    })
}

fn tenant_ns(t: &TenantName) -> String {
    t.namespace()
}

fn labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|l| {
            let (k, v) = parse_label(l)?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn api_err(
    e: palisade_operator::kube::Error,
    what: impl FnOnce(u16) -> Option<String>,
) -> anyhow::Error {
    match &e {
        palisade_operator::kube::Error::Api(s) => match what(s.code) {
            Some(msg) => anyhow!(msg),
            None => anyhow::Error::new(e),
        },
        _ => anyhow::Error::new(e),
    }
}

/// A 404 on a list means the CRD is not installed.
fn crd_missing(e: palisade_operator::kube::Error, kind: &str) -> anyhow::Error {
    let missing = matches!(&e, palisade_operator::kube::Error::Api(s) if s.code == 404);
    if missing {
        anyhow!(
            "cannot list {kind}: the operator's CRDs are not installed \
             (kubectl apply -k deploy/crds)"
        )
    } else {
        anyhow::Error::new(e).context(format!("cannot list {kind}"))
    }
}

/// Runs `cli` with `client`: picks the handler of the command.
pub async fn run_with(client: Client, cli: &Cli) -> Result<ExitCode> {
    if let Some(what) = unsupported(&cli.command) {
        bail!("--store kubernetes does not support {what}; it supports {SUPPORTED}");
    }
    let format = cli.output;
    match &cli.command {
        Command::Create(a) => create(&client, a, format).await?,
        Command::Delete(d) => delete(client, d).await?,
        Command::List(a) => list(client, a, format).await?,
        Command::Stats => stats(&client, format).await?,
        Command::Tenant(TenantCommand::Create(a)) | Command::CreateTenant(a) => {
            tenant_create(&client, a).await?;
        }
        Command::Tenant(TenantCommand::Delete { tenant, cascade }) => {
            tenant_delete(&client, tenant, *cascade).await?;
        }
        Command::Tenant(TenantCommand::List) => tenant_list(client, format).await?,
        _ => bail!("--store kubernetes supports {SUPPORTED}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `delete`: removes the TenantDeployment; the operator releases its subnet.
async fn delete(client: Client, d: &DeploymentRef) -> Result<()> {
    let t: TenantName = d.tenant.parse()?;
    let name: DeploymentName = d.deployment.parse()?;
    Api::<TenantDeployment>::namespaced(client, &tenant_ns(&t))
        .delete(name.as_str(), &DeleteParams::default())
        .await
        .map_err(|e| {
            api_err(e, |c| {
                (c == 404).then(|| format!("no deployment {name} in tenant {t}"))
            })
        })?;
    outln!("deleting deployment {t}/{name}; the operator releases its subnet")?;
    Ok(())
}

/// `list`: the TenantDeployments, with the subnet the operator gave each.
async fn list(client: Client, a: &ListArgs, format: Format) -> Result<()> {
    let api: Api<TenantDeployment> = match &a.tenant {
        Some(t) => Api::namespaced(client, &tenant_ns(&t.parse()?)),
        None => Api::all(client),
    };
    let mut items = api
        .list(&ListParams::default())
        .await
        .map_err(|e| crd_missing(e, "TenantDeployments"))?
        .items;
    items.sort_by_key(|w| (w.namespace(), w.name_any()));
    let rows: Vec<DeploymentRow> = items.iter().map(DeploymentRow::new).collect();
    print(format, &rows, || {
        let header = vec![
            "TENANT",
            "DEPLOYMENT",
            "SUBNET",
            "IMAGE",
            "REPLICAS",
            "READY",
            "PORTS",
        ];
        (header, rows.iter().map(DeploymentRow::cells).collect())
    })
}

/// `tenant create`: the Tenant resource, then its namespace.
async fn tenant_create(client: &Client, a: &TenantCreateArgs) -> Result<()> {
    let (name, spec) = tenant_spec(a)?;
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), &Tenant::new(name.as_str(), spec))
        .await
        .map_err(|e| {
            api_err(e, |c| {
                (c == 409).then(|| format!("tenant {name} already exists"))
            })
        })?;
    ensure_namespace(client, &name).await?;
    outln!("created tenant {name} (namespace {})", name.namespace())?;
    Ok(())
}

/// `tenant delete`: refused while it has deployments, unless `cascade`; the
/// operator deletes them, then the namespace.
async fn tenant_delete(client: &Client, tenant: &str, cascade: bool) -> Result<()> {
    let name: TenantName = tenant.parse()?;
    let workloads = Api::<TenantDeployment>::namespaced(client.clone(), &tenant_ns(&name))
        .list(&ListParams::default())
        .await
        .map_err(|e| crd_missing(e, "TenantDeployments"))?
        .items;
    if !workloads.is_empty() && !cascade {
        bail!(
            "tenant {name} has {} deployments; delete them first or pass --cascade",
            workloads.len()
        );
    }
    Api::<Tenant>::all(client.clone())
        .delete(name.as_str(), &DeleteParams::default())
        .await
        .map_err(|e| api_err(e, |c| (c == 404).then(|| format!("no tenant {name}"))))?;
    outln!(
        "deleting tenant {name}: the operator deletes its {} deployments, then its namespace",
        workloads.len()
    )?;
    Ok(())
}

/// `tenant list`: the Tenant resources and their status.
async fn tenant_list(client: Client, format: Format) -> Result<()> {
    let mut items = Api::<Tenant>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| crd_missing(e, "Tenants"))?
        .items;
    items.sort_by_key(ResourceExt::name_any);
    let rows: Vec<TenantRow> = items.iter().map(TenantRow::new).collect();
    print(format, &rows, || {
        let header = vec!["TENANT", "NAMESPACE", "DEPLOYMENTS", "EGRESS", "READY"];
        (header, rows.iter().map(TenantRow::cells).collect())
    })
}

fn ready(conditions: Option<&[palisade_operator::crd::Condition]>) -> String {
    conditions
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map_or_else(|| "Unknown".into(), |c| c.status.clone())
}

/// One row of `list`. Fields in name order: the key order of the JSON
/// objects this output was first printed from.
#[derive(Serialize)]
struct DeploymentRow {
    deployment: String,
    image: String,
    ports: Vec<u16>,
    ready: String,
    ready_replicas: i32,
    replicas: u32,
    /// None until the operator has allocated it.
    subnet: Option<String>,
    tenant: String,
}

impl DeploymentRow {
    fn new(w: &TenantDeployment) -> Self {
        let ns = w.namespace().unwrap_or_default();
        Self {
            deployment: w.name_any(),
            image: w.spec.image.clone(),
            ports: w.spec.ports.clone(),
            ready: ready(w.status.as_ref().map(|s| s.conditions.as_slice())),
            ready_replicas: w.status.as_ref().map_or(0, |s| s.ready_replicas),
            replicas: w.spec.replicas,
            subnet: w.status.as_ref().and_then(|s| s.subnet.clone()),
            tenant: ns.strip_prefix("tenant-").unwrap_or(&ns).to_owned(),
        }
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.tenant.clone(),
            self.deployment.clone(),
            self.subnet.clone().unwrap_or_else(|| "<pending>".into()),
            self.image.clone(),
            self.replicas.to_string(),
            self.ready.clone(),
            self.ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ]
    }
}

/// One row of `tenant list`, fields in name order as for [`DeploymentRow`].
#[derive(Serialize)]
struct TenantRow {
    deployments: u32,
    egress_ip: Option<String>,
    egress_mode: &'static str,
    egress_public_ip: Option<String>,
    namespace: String,
    proxy_port: Option<u16>,
    ready: String,
    tenant: String,
}

impl TenantRow {
    fn new(t: &Tenant) -> Self {
        Self {
            deployments: t.status.as_ref().map_or(0, |s| s.deployment_count),
            egress_ip: t.spec.egress.ip.clone(),
            egress_mode: match t.spec.egress.mode {
                EgressModeSpec::Proxy => "proxy",
                EgressModeSpec::CiliumEgressGateway => "cilium-egress-gateway",
            },
            egress_public_ip: t.spec.egress.public_ip.clone(),
            namespace: format!("tenant-{}", t.name_any()),
            proxy_port: t.spec.proxy_port,
            ready: ready(t.status.as_ref().map(|s| s.conditions.as_slice())),
            tenant: t.name_any(),
        }
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.tenant.clone(),
            self.namespace.clone(),
            self.deployments.to_string(),
            self.egress_mode.into(),
            self.ready.clone(),
        ]
    }
}

fn tenant_spec(a: &TenantCreateArgs) -> Result<(TenantName, TenantSpec)> {
    let name: TenantName = a.tenant.parse()?;
    // Parse as the SQLite path does, then keep the user's spelling.
    a.cpu.parse::<palisade_core::Cpu>()?;
    a.memory.parse::<palisade_core::Memory>()?;
    let pods: u32 = a
        .pods
        .parse()
        .with_context(|| format!("invalid --pods {:?}: expected a whole number", a.pods))?;
    let node_pool = a
        .node_pool
        .as_deref()
        .map(|p| {
            p.parse::<palisade_core::NodePoolName>()
                .map(|p| p.to_string())
        })
        .transpose()?;
    let mode = match a.egress_mode.parse::<palisade_core::EgressMode>()? {
        palisade_core::EgressMode::Proxy => EgressModeSpec::Proxy,
        palisade_core::EgressMode::CiliumEgressGateway => EgressModeSpec::CiliumEgressGateway,
    };
    let ip_flag = |flag: &str, value: Option<&str>| {
        value
            .map(|ip| {
                ip.parse::<std::net::IpAddr>()
                    .map(|ip| ip.to_string())
                    .with_context(|| {
                        format!("invalid {flag} {ip:?}: expected an IPv4 or IPv6 address")
                    })
            })
            .transpose()
    };
    let ip = ip_flag("--egress-ip", a.egress_ip.as_deref())?;
    let public_ip = ip_flag("--egress-public-ip", a.egress_public_ip.as_deref())?;
    Ok((
        name,
        TenantSpec {
            quota: QuotaSpec {
                cpu: a.cpu.clone(),
                memory: a.memory.clone(),
                pods,
            },
            node_pool,
            egress: EgressSpec {
                mode,
                ip,
                public_ip,
                ..EgressSpec::default()
            },
            labels: labels(&a.labels)?,
            // The operator assigns it.
            proxy_port: None,
        },
    ))
}

/// The tenant's namespace, so its TenantDeployments can be created before
/// the operator first reconciles the tenant (which then adds its labels).
async fn ensure_namespace(client: &Client, t: &TenantName) -> Result<()> {
    let ns = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": t.namespace(), "labels": {"palisade.io/tenant": t.as_str()}}
    });
    Api::<palisade_operator::k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            &t.namespace(),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&ns),
        )
        .await
        .with_context(|| format!("cannot create namespace {}", t.namespace()))?;
    Ok(())
}

/// `create`: the tenant if new, its namespace, then the TenantDeployment;
/// the operator allocates the subnet.
async fn create(client: &Client, a: &CreateArgs, format: Format) -> Result<()> {
    // Everything is parsed before the first request.
    let (tenant, name, spec) = deployment_spec(a)?;
    let created_tenant = ensure_tenant(client, &tenant).await?;
    ensure_namespace(client, &tenant).await?;
    let w = Api::<TenantDeployment>::namespaced(client.clone(), &tenant.namespace())
        .create(
            &PostParams::default(),
            &TenantDeployment::new(name.as_str(), spec),
        )
        .await
        .map_err(|e| {
            api_err(e, |c| {
                (c == 409).then(|| format!("deployment {name} already exists in tenant {tenant}"))
            })
        })?;
    if format != Format::Table {
        return print(format, &DeploymentRow::new(&w), || (vec![], vec![]));
    }
    if created_tenant {
        outln!("created tenant {tenant} (namespace {})", tenant.namespace())?;
    }
    outln!(
        "{}",
        fields(&[
            ("tenant", tenant.to_string()),
            ("deployment", name.to_string()),
            ("subnet", "<pending: the operator allocates it>".into()),
            ("image", w.spec.image.clone()),
            ("replicas", w.spec.replicas.to_string()),
        ])
    )?;
    Ok(())
}

/// `create`'s arguments parsed by the model into the resource's spec.
fn deployment_spec(a: &CreateArgs) -> Result<(TenantName, DeploymentName, TenantDeploymentSpec)> {
    let tenant: TenantName = a.tenant.parse()?;
    let name: DeploymentName = a.deployment.parse()?;
    let image: Image = a.image.parse()?;
    let replicas: Replicas = a.replicas.parse()?;
    let mut ports: Vec<u16> = a
        .ports
        .iter()
        .map(|p| p.parse::<Port>().map(Port::get))
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        ports.push(Port::HTTP.get());
    }
    ports.sort_unstable();
    ports.dedup();
    let labels = labels(&a.labels)?;
    let workload = workload_fields(&a.workload.spec()?);
    let spec = TenantDeploymentSpec {
        image: image.to_string(),
        replicas: replicas.get(),
        ports,
        labels,
        ..workload
    };
    Ok((tenant, name, spec))
}

/// Creates the tenant with default quotas unless it exists; whether it
/// was created.
async fn ensure_tenant(client: &Client, tenant: &TenantName) -> Result<bool> {
    let created = Api::<Tenant>::all(client.clone())
        .create(
            &PostParams::default(),
            &Tenant::new(tenant.as_str(), TenantSpec::default()),
        )
        .await;
    match created {
        Ok(_) => Ok(true),
        Err(palisade_operator::kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot create tenant {tenant}"))),
    }
}

/// The resource's fields for a parsed workload spec (everything else default).
fn workload_fields(w: &palisade_core::WorkloadSpec) -> TenantDeploymentSpec {
    use palisade_core::model::EnvValue;
    use palisade_operator::crd::{
        EnvVarSourceSpec, EnvVarSpec, ScratchSpec, SecretKeyRefSpec, SecurityProfileSpec,
    };
    let env = w
        .env()
        .iter()
        .map(|e| match &e.value {
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
        })
        .collect();
    let scratch = w
        .scratch()
        .iter()
        .map(|s| ScratchSpec {
            path: s.path.to_string(),
            size_limit: s.size_limit.map(|m| m.to_string()),
        })
        .collect();
    let security = w.security().map(|p| match p {
        palisade_core::SecurityProfile::Restricted => SecurityProfileSpec::Restricted,
        palisade_core::SecurityProfile::Baseline => SecurityProfileSpec::Baseline,
        palisade_core::SecurityProfile::BaselineReadOnly => SecurityProfileSpec::BaselineReadOnly,
    });
    TenantDeploymentSpec {
        env,
        command: w.command().to_vec(),
        args: w.args().to_vec(),
        scratch,
        security,
        ..TenantDeploymentSpec::default()
    }
}

/// `stats` with the cluster as store: the operator's pool (from its
/// ConfigMap) and the SubnetClaims inside it.
async fn stats(client: &Client, format: Format) -> Result<()> {
    let claims = Api::<SubnetClaim>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| crd_missing(e, "SubnetClaims"))?
        .items;
    let pool = operator_pool(client).await?;
    let stats = ClusterStats::new(pool.as_ref(), &claims);
    if format != Format::Table {
        return print(format, &stats, || (vec![], vec![]));
    }
    let unknown = || {
        format!(
            "unknown (no ConfigMap {}/{})",
            OPERATOR_CONFIG.0, OPERATOR_CONFIG.1
        )
    };
    let known = |v: Option<String>| v.unwrap_or_else(unknown);
    outln!(
        "{}",
        fields(&[
            ("pool", known(stats.pool.clone())),
            (
                "prefix length",
                known(stats.prefix_len.map(|l| format!("/{l}")))
            ),
            ("capacity", known(stats.capacity.map(|c| c.to_string()))),
            ("allocated", stats.allocated.to_string()),
            ("quarantined", stats.quarantined.to_string()),
            ("free", known(stats.free.map(|f| f.to_string()))),
            (
                "utilisation",
                known(stats.utilisation.map(|u| format!("{:.3e}%", u * 100.0)))
            ),
        ])
    )?;
    Ok(())
}

/// The pool in the operator's ConfigMap; none without the ConfigMap.
async fn operator_pool(client: &Client) -> Result<Option<Pool>> {
    let cm: Api<palisade_operator::k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), OPERATOR_CONFIG.0);
    let data = cm
        .get_opt(OPERATOR_CONFIG.1)
        .await
        .context("cannot read the operator's ConfigMap")?
        .and_then(|c| c.data)
        .unwrap_or_default();
    Ok(
        match (data.get("PALISADE_POOL"), data.get("PALISADE_PREFIX_LEN")) {
            (Some(cidr), len) => {
                let cidr = Pool::parse_cidr(cidr)?;
                let len = len.map_or("96", String::as_str).parse()?;
                Some(Pool::new(cidr, len, std::time::Duration::ZERO)?)
            }
            (None, _) => None,
        },
    )
}

/// What `stats -o json` prints with the cluster as store. Fields in name
/// order: the key order of the JSON object this output was first printed
/// from. Unknown without the operator's ConfigMap: pool, prefix length,
/// capacity, free, utilisation.
#[derive(Serialize)]
struct ClusterStats {
    allocated: usize,
    capacity: Option<u128>,
    free: Option<u128>,
    pool: Option<String>,
    prefix_len: Option<u8>,
    quarantined: usize,
    utilisation: Option<f64>,
}

impl ClusterStats {
    fn new(pool: Option<&Pool>, claims: &[SubnetClaim]) -> Self {
        let in_pool: Vec<&SubnetClaim> = claims
            .iter()
            .filter(|c| match pool {
                Some(p) => c
                    .spec
                    .subnet
                    .parse()
                    .ok()
                    .is_some_and(|s| p.index_of(s).is_ok()),
                None => true,
            })
            .collect();
        // Released claims hold their subnet through its quarantine.
        let quarantined = in_pool
            .iter()
            .filter(|c| c.spec.released_at.is_some())
            .count();
        let taken = in_pool.len();
        let capacity = pool.map(Pool::capacity);
        // Precision loss above 2^53 does not matter for a percentage.
        #[allow(clippy::cast_precision_loss)]
        let utilisation = capacity.map(|c| taken as f64 / c as f64);
        Self {
            allocated: taken - quarantined,
            capacity,
            free: capacity.map(|c| c - taken as u128),
            pool: pool.map(|p| p.cidr().to_string()),
            prefix_len: pool.map(|p| p.subnet_len().get()),
            quarantined,
            utilisation,
        }
    }
}
