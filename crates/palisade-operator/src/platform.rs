//! The platform's objects in operator mode: what `palisade render` puts in
//! `base/platform/` (the egress proxy with its config, the RuntimeClass,
//! the admission policy, the gateways' namespace), rendered from every
//! tenant at once, because the egress proxy's config names every tenant's
//! subnets, listener port and egress address. Without it, a tenant's fixed
//! egress IP (seed 002) means nothing in operator mode.
//!
//! [`plan`] is pure: all tenants, workloads and claims in, objects out,
//! through the same functions as the CLI (`desired::core_tenant` and
//! `core_deployment` for the model, `palisade_kube::proxy_config` — which
//! is `palisade_proxy::compile::config` — for the proxy's file,
//! `palisade_kube::render::Renderer::platform` for the objects).
//! [`reconcile_platform`] does the I/O: allocate ports, then apply by
//! server-side apply what changed.
//!
//! # Proxy ports
//!
//! The proxy knows a tenant by the listener port it connects to, so two
//! tenants must never share a port, and a port must not move while pods
//! use it. The SQLite store hands out the lowest free port of
//! [`palisade_core::PROXY_PORTS`] in its write transaction; here the
//! ledger is one ConfigMap ([`PORT_LEDGER`], in the proxy's namespace)
//! mapping each port to the tenant's name and uid, written with the
//! `resourceVersion` it was read at: of two operators (or a leader and a
//! stale one) deciding at once, the API server accepts one write and
//! answers the other 409 (optimistic concurrency, Kubernetes API
//! Concepts, "Resource versions"), which re-reads and decides again. So a
//! port is the tenant's once the ledger says so, whoever wrote it.
//! The tenant then carries it in `spec.proxyPort` (written by the
//! operator when unset, as the API server fills a Service's
//! `spec.clusterIP`), which is what its own objects are rendered from
//! (`desired::core_tenant`) and what `palisade --store kubernetes` shows.
//! A port set by the user is claimed the same way; if another tenant holds
//! it, the tenant gets no listener of its own (it is still known by its
//! subnets on the shared port) and the conflict is reported. A port goes
//! back to the pool only when its tenant is gone from the API server (a
//! GET answers 404 or another uid), never because a list missed it.
//!
//! # The central gateway
//!
//! The one gateway in front of every tenant is a platform-wide setting, so
//! it lives in the [`crate::crd::Platform`] object (`centralGateway`), not
//! in any tenant. Its Gateway (and, for gateway classes with pods, their
//! policies) is rendered here, with the platform, as `palisade render`
//! puts it in `base/platform/`; its HTTPRoutes and the rules letting it
//! reach each workload are the tenant's objects
//! (`desired::plan_tenant_under`). The routes attach across namespaces
//! because the Gateway's listener allows routes from namespaces carrying
//! the tenant label (`allowedRoutes.namespaces.from: Selector`, "Routes in
//! namespaces selected by the selector may be used by this Gateway",
//! Support: Core, in the pinned Gateway API v1.2.1 standard CRD; Gateway
//! API "Cross-Namespace routing",
//! <https://gateway-api.sigs.k8s.io/guides/multiple-ns/>), no
//! ReferenceGrant needed for a parentRef.
//!
//! # Pruning
//!
//! The platform's objects have no owner a garbage collector or a
//! label-selected prune could go by (they are cluster-wide, most of them
//! cluster-scoped), and an object that looks like ours by its labels may
//! be someone's copy. So only what this operator created, recorded with its
//! uid in an inventory, is deleted once no longer rendered (the central
//! gateway after `gateway remove --central`, the gateways' namespace when
//! the last gateway goes): see [`inventory`]. With Cilium's gateway class,
//! the CiliumEnvoyConfig Cilium generates for a Gateway
//! (`cilium-gateway-<name>`) carries a controller owner reference to the
//! Gateway (cilium/cilium
//! `operator/pkg/model/translation/gateway-api/translator_fixture_test.go`),
//! so the garbage collector removes it with the Gateway. The egress proxy stays,
//! serving the tenants there are (possibly none).

pub mod inventory;

use crate::crd::{GatewayMode, PlatformSpec, SubnetClaim, Tenant, TenantDeployment};
use crate::desired::{
    self, FIELD_MANAGER, HASH_ANNOTATION, MANAGED_BY_OPERATOR, NAMESPACE_PREFIX, core_deployment,
    core_tenant, subnet_for,
};
use crate::reconcile::{Ctx, dynamic_api};
use crate::{Config, Error};
use inventory::{INVENTORY, Inventory, Seen};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use palisade_core::allocator::Timestamp;
use palisade_core::{Gateway, GatewayScope, PROXY_PORTS, Snapshot, TenantName};
use palisade_kube::render::{MANAGED_BY, Renderer};
use palisade_kube::{InClusterProxy, Object, RenderOptions};
use palisade_proxy::compile::DomainRules;
use palisade_proxy::config::DomainPattern;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Name of the ConfigMap that records which tenant holds which proxy port.
pub const PORT_LEDGER: &str = "palisade-proxy-ports";

/// A port's holder in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The tenant's name.
    pub tenant: String,
    /// The tenant's uid: a re-created tenant of the same name is another holder.
    pub uid: String,
}

/// The proxy-port ledger: port → holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports(pub BTreeMap<u16, Holder>);

impl Ports {
    /// The ledger stored in a ConfigMap's data (`"20000": "<tenant> <uid>"`);
    /// entries that do not parse are kept out (and so rewritten).
    pub fn from_data(data: &BTreeMap<String, String>) -> Self {
        let parse = |(k, v): (&String, &String)| {
            let port: u16 = k.parse().ok()?;
            let (tenant, uid) = v.split_once(' ')?;
            Some((
                port,
                Holder {
                    tenant: tenant.to_owned(),
                    uid: uid.to_owned(),
                },
            ))
        };
        Self(data.iter().filter_map(parse).collect())
    }

    /// As ConfigMap data.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(p, h)| (p.to_string(), format!("{} {}", h.tenant, h.uid)))
            .collect()
    }

    /// The port of the tenant with `uid`.
    pub fn of(&self, uid: &str) -> Option<u16> {
        self.0.iter().find(|(_, h)| h.uid == uid).map(|(p, _)| *p)
    }
}

/// What [`assign`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The ledger afterwards.
    pub ports: Ports,
    /// Whether it differs from the one read.
    pub changed: bool,
    /// Tenants whose `spec.proxyPort` another tenant holds, with a message.
    pub conflicts: Vec<(String, String)>,
}

/// Gives every live tenant a port: the one the ledger has for its uid,
/// else its `spec.proxyPort` if free, else the lowest free one (tenants
/// in creation order, then by name). `released` are uids whose tenant the
/// API server no longer has; their ports become free.
pub fn assign(ledger: &Ports, tenants: &[&Tenant], released: &BTreeSet<String>) -> Assignment {
    let mut ports = ledger.clone();
    ports.0.retain(|_, h| !released.contains(&h.uid));
    let mut conflicts = Vec::new();
    let mut order: Vec<&&Tenant> = tenants.iter().collect();
    order.sort_by_key(|t| (t.metadata.creation_timestamp.clone(), t.name_any()));
    for t in order {
        let uid = t.uid().unwrap_or_default();
        if uid.is_empty() {
            continue;
        }
        let current = ports.of(&uid);
        // Out of range: core_tenant refuses the spec, and says why.
        let wanted = t.spec.proxy_port.filter(|p| PROXY_PORTS.contains(p));
        let port = match (current, wanted) {
            (Some(_), None) => continue,
            (Some(c), Some(w)) if c == w => continue,
            (_, Some(w)) => match ports.0.get(&w) {
                Some(other) => {
                    conflicts.push((
                        t.name_any(),
                        format!(
                            "proxyPort {w} is tenant {:?}'s; this tenant has no listener of its own",
                            other.tenant
                        ),
                    ));
                    continue;
                }
                None => w,
            },
            (None, None) => match PROXY_PORTS.clone().find(|p| !ports.0.contains_key(p)) {
                Some(p) => p,
                None => {
                    conflicts.push((t.name_any(), "every proxy port is taken".into()));
                    continue;
                }
            },
        };
        if let Some(c) = current {
            ports.0.remove(&c);
        }
        ports.0.insert(
            port,
            Holder {
                tenant: t.name_any(),
                uid,
            },
        );
    }
    let changed = ports != *ledger;
    Assignment {
        ports,
        changed,
        conflicts,
    }
}

/// The platform's objects, and the tenants left out of the proxy's config.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformPlan {
    /// Labelled `managed-by: palisade-operator` and stamped with their hash.
    pub objects: Vec<Object>,
    /// Tenants the proxy does not serve, with the reason (an invalid spec
    /// or domain rule: the proxy refuses such a tenant's traffic rather
    /// than apply rules it cannot read).
    pub left_out: Vec<(String, String)>,
}

fn domain_rules(t: &Tenant) -> Result<DomainRules, String> {
    let e = &t.spec.egress;
    for p in e.allowed_domains.iter().chain(&e.denied_domains) {
        DomainPattern::parse(p).map_err(|e| e.to_string())?;
    }
    Ok(DomainRules {
        allow: e.allowed_domains.clone(),
        deny: e.denied_domains.clone(),
    })
}

/// Every live tenant with its rendered workloads, the domain rules, and
/// the tenants left out.
fn snapshot(
    config: &Config,
    tenants: &[Tenant],
    workloads: &[TenantDeployment],
    claims: &[SubnetClaim],
    ports: &Ports,
    platform: Option<&PlatformSpec>,
) -> (
    Snapshot,
    BTreeMap<TenantName, DomainRules>,
    Vec<(String, String)>,
) {
    let mut s = Snapshot {
        pool: config.pool.clone(),
        tenants: Vec::new(),
        deployments: Vec::new(),
        gateways: Vec::new(),
        allow_rules: Vec::new(),
    };
    if platform.is_some_and(|p| p.central_gateway) {
        s.gateways.push(Gateway {
            scope: GatewayScope::Central,
            created_at: Timestamp(0),
        });
    }
    let (mut domains, mut left_out) = (BTreeMap::new(), Vec::new());
    // Claims by workload uid: `subnet_for` over all claims per workload
    // would be quadratic (10,000 workloads: 10^8 comparisons).
    let mut claims_of: BTreeMap<&str, Vec<SubnetClaim>> = BTreeMap::new();
    for c in claims {
        claims_of
            .entry(c.spec.workload_uid.as_str())
            .or_default()
            .push(c.clone());
    }
    let mut by_ns: BTreeMap<&str, Vec<&TenantDeployment>> = BTreeMap::new();
    for w in workloads {
        if w.metadata.deletion_timestamp.is_none() {
            by_ns
                .entry(w.metadata.namespace.as_deref().unwrap_or_default())
                .or_default()
                .push(w);
        }
    }
    let mut live: Vec<&Tenant> = tenants
        .iter()
        .filter(|t| t.metadata.deletion_timestamp.is_none())
        .collect();
    live.sort_by_key(|t| t.name_any());
    for t in live {
        let name = t.name_any();
        let rules = domain_rules(t);
        let mut core = match (core_tenant(&name, &t.spec), rules) {
            (Ok(core), Ok(rules)) => {
                domains.insert(core.name.clone(), rules);
                core
            }
            (Err(e), _) => {
                left_out.push((name, desired::explain(&e)));
                continue;
            }
            (_, Err(e)) => {
                left_out.push((name, e));
                continue;
            }
        };
        core.proxy_port = ports.of(&t.uid().unwrap_or_default()).unwrap_or(0);
        let mine = by_ns
            .get(format!("{NAMESPACE_PREFIX}{name}").as_str())
            .map_or(&[][..], Vec::as_slice);
        // The platform renders no tenant's gateway, only their namespace:
        // one gateway stands for any.
        if t.spec.gateway || mine.iter().any(|w| w.spec.gateway != GatewayMode::None) {
            s.gateways.push(Gateway {
                scope: GatewayScope::PerTenant {
                    tenant: core.name.clone(),
                },
                created_at: Timestamp(0),
            });
        }
        for w in mine {
            // A workload waiting for its subnet, or with an invalid spec,
            // has no pods yet; its tenant's status says why.
            let uid = w.uid().unwrap_or_default();
            let Some(subnet) = claims_of
                .get(uid.as_str())
                .and_then(|c| subnet_for(&uid, c))
            else {
                continue;
            };
            if let Ok(d) = core_deployment(&core.name, &w.name_any(), &w.spec, subnet) {
                s.deployments.push(d);
            }
        }
        s.tenants.push(core);
    }
    (s, domains, left_out)
}

/// Relabels `managed-by` (so `palisade apply`'s prune never takes the
/// operator's objects) and stamps the hash of the result.
fn finish(o: &mut Object) {
    let Some(meta) = o.body.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(l) = meta.get_mut("labels").and_then(Value::as_object_mut) {
        l.insert(MANAGED_BY.0.into(), MANAGED_BY_OPERATOR.into());
    }
    let h = desired::hash(&o.body);
    if let Some(meta) = o.body.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert(HASH_ANNOTATION.into(), h.into());
        }
    }
}

/// The render options of the platform: the operator's, with the egress
/// proxy run in the cluster (unless it is an address outside it) from
/// `proxy_config`.
fn render_options(config: &Config, proxy_config: String) -> RenderOptions {
    let mut options = config.render.clone();
    if options.proxy.ip().is_none() {
        let mut p = options
            .proxy
            .in_cluster
            .take()
            .unwrap_or_else(|| InClusterProxy::new(String::new()));
        p.config = proxy_config;
        options.proxy.in_cluster = Some(p);
    }
    options
}

/// The platform's objects from every tenant, workload and claim, with the
/// proxy ports of `ports`, under the platform's settings.
pub fn plan(
    config: &Config,
    tenants: &[Tenant],
    workloads: &[TenantDeployment],
    claims: &[SubnetClaim],
    ports: &Ports,
    platform: Option<&PlatformSpec>,
) -> Result<PlatformPlan, palisade_kube::Error> {
    let (snapshot, domains, left_out) =
        snapshot(config, tenants, workloads, claims, ports, platform);
    let proxy_config = palisade_kube::proxy_config::yaml(&snapshot, &config.render, domains)?;
    let options = render_options(config, proxy_config);
    let mut objects = Renderer::new(&snapshot, &options).platform()?;
    objects.iter_mut().for_each(finish);
    Ok(PlatformPlan { objects, left_out })
}

/// What a platform reconcile remembers between passes, so that a pass
/// whose output did not change makes no request at all.
#[derive(Debug, Default)]
pub struct PlatformState {
    /// The ledger as last read or written.
    ledger: Option<Ports>,
    /// Object id → hash the API server is known to hold.
    live: BTreeMap<String, String>,
    /// The inventory as last read or written, with its resourceVersion.
    inventory: Option<(Inventory, Option<String>)>,
}

impl PlatformState {
    /// Forgets what is known of the cluster: the next pass reads every
    /// object again and repairs what was changed behind the operator's back.
    pub fn forget(&mut self) {
        *self = Self::default();
    }
}

fn hash_of(o: &Object) -> Option<&str> {
    o.body
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(HASH_ANNOTATION))
        .and_then(Value::as_str)
}

/// What [`apply_changed`] did.
#[derive(Debug, Default)]
struct Applied {
    /// Whether it wrote.
    written: bool,
    /// The live object's uid, and whether the write created it, when it
    /// was read (not known from an earlier pass).
    seen: Option<Seen>,
}

/// Server-side applies `o` unless the API server holds its hash (known
/// from an earlier pass, else read).
async fn apply_changed(
    client: &Client,
    state: &mut PlatformState,
    o: &Object,
) -> Result<Applied, Error> {
    let (id, want) = (o.id(), hash_of(o).unwrap_or_default().to_owned());
    if state.live.get(&id) == Some(&want) {
        return Ok(Applied::default());
    }
    let api = dynamic_api(client, &o.api_version, &o.kind, o.namespace.as_deref());
    let live = api
        .get_opt(&o.name)
        .await
        .map_err(Error::kube("read", id.clone()))?;
    let created = live.is_none();
    let mut uid = live.as_ref().and_then(ResourceExt::uid);
    let written = live.is_none_or(|l| l.annotations().get(HASH_ANNOTATION) != Some(&want));
    if written {
        let now = api
            .patch(
                &o.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&o.body),
            )
            .await
            .map_err(Error::kube("apply", id.clone()))?;
        uid = now.uid();
    }
    state.live.insert(id, want);
    let seen = uid.map(|uid| Seen {
        entry: inventory::Entry {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            uid,
        },
        created,
    });
    Ok(Applied { written, seen })
}

/// Uids in `ledger` whose tenant the API server no longer has.
async fn released(
    client: &Client,
    ledger: &Ports,
    live: &BTreeSet<String>,
) -> Result<BTreeSet<String>, Error> {
    let api: Api<Tenant> = Api::all(client.clone());
    let mut out = BTreeSet::new();
    for h in ledger.0.values().filter(|h| !live.contains(&h.uid)) {
        let now = api
            .get_opt(&h.tenant)
            .await
            .map_err(Error::kube("read tenant", h.tenant.clone()))?;
        if now.and_then(|t| t.uid()).as_deref() != Some(h.uid.as_str()) {
            out.insert(h.uid.clone());
        }
    }
    Ok(out)
}

/// Reads the ledger, assigns ports, and writes the ledger back at the
/// version it was read (a 409 means someone else decided first: the
/// caller retries with a fresh read).
async fn allocate_ports(
    ctx: &Ctx,
    state: &mut PlatformState,
    tenants: &[Tenant],
    namespace: Option<&Object>,
) -> Result<Assignment, Error> {
    let ns = ctx.config.render.proxy.namespace.clone();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let current = api
        .get_opt(PORT_LEDGER)
        .await
        .map_err(Error::kube("read", PORT_LEDGER))?;
    let ledger = current
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .map(Ports::from_data)
        .unwrap_or_default();
    let live: Vec<&Tenant> = tenants
        .iter()
        .filter(|t| t.metadata.deletion_timestamp.is_none())
        .collect();
    let uids: BTreeSet<String> = tenants.iter().filter_map(|t| t.uid()).collect();
    let gone = released(&ctx.client, &ledger, &uids).await?;
    let assignment = assign(&ledger, &live, &gone);
    state.ledger = Some(ledger);
    if !assignment.changed {
        return Ok(assignment);
    }
    // The ledger lives in the proxy's namespace.
    if let Some(ns) = namespace {
        // The ledger's (and the inventory's) namespace is never pruned.
        apply_changed(&ctx.client, state, ns).await?;
    }
    let rv = current.and_then(|c| c.metadata.resource_version);
    if let Err(e) = write_at(&api, &ns, PORT_LEDGER, rv, assignment.ports.to_data()).await {
        // Someone else decided first (409), or the write failed: read again.
        state.ledger = None;
        return Err(e);
    }
    state.ledger = Some(assignment.ports.clone());
    Ok(assignment)
}

/// Writes `data` into the ConfigMap `ns/name` at the `resourceVersion` it
/// was read at (`None`: it did not exist). Of two writers deciding from
/// the same read, the API server accepts one and refuses the other 409 (a
/// JSON patch whose `test` fails, or a second create), which then reads
/// again and decides again. Returns what the API server holds.
async fn write_at(
    api: &Api<ConfigMap>,
    ns: &str,
    name: &str,
    rv: Option<String>,
    data: BTreeMap<String, String>,
) -> Result<ConfigMap, Error> {
    match rv {
        Some(rv) => {
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/data", "value": data}
            ]))
            .map_err(|e| Error::Config(format!("{name} patch: {e}")))?;
            api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
        }
        None => {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(name.into());
            cm.metadata.namespace = Some(ns.into());
            cm.metadata.labels = Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY_OPERATOR.to_owned(),
            )]));
            cm.data = Some(data);
            api.create(&PostParams::default(), &cm).await
        }
    }
    .map_err(Error::kube("write", name.to_owned()))
}

/// Writes each tenant's port into its `spec.proxyPort` where unset,
/// guarded by the resourceVersion it was read at.
async fn record_ports(ctx: &Ctx, tenants: &[Tenant], ports: &Ports) -> Result<(), Error> {
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    for t in tenants
        .iter()
        .filter(|t| t.spec.proxy_port.is_none() && t.metadata.deletion_timestamp.is_none())
    {
        let Some(port) = ports.of(&t.uid().unwrap_or_default()) else {
            continue;
        };
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": t.resource_version().unwrap_or_default()},
            {"op": "add", "path": "/spec/proxyPort", "value": port}
        ]))
        .map_err(|e| Error::Config(format!("proxy port patch: {e}")))?;
        match api
            .patch(
                &t.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
        {
            Ok(_) => {}
            // Changed since this copy (the cache is behind): the change
            // brings the tenant back here.
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {
                tracing::debug!(tenant = %t.name_any(), reason = %s.message, "proxy port not recorded yet");
            }
            Err(e) => return Err(Error::kube("record the proxy port of", t.name_any())(e)),
        }
    }
    Ok(())
}

/// What a platform reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformOutcome {
    /// Objects written (the others were up to date).
    pub applied: usize,
    /// Objects deleted: created by the operator, no longer rendered.
    pub pruned: usize,
    /// Tenants the proxy does not serve, or serves without a port of its
    /// own, with the reason.
    pub left_out: Vec<(String, String)>,
}

/// The ports from the ledger this process knows, if it needs no change
/// (no tenant without a port, no holder missing from `tenants`): then
/// nothing needs reading.
fn known_ports(state: &PlatformState, tenants: &[Tenant]) -> Option<Assignment> {
    let ledger = state.ledger.as_ref()?;
    let uids: BTreeSet<String> = tenants.iter().filter_map(|t| t.uid()).collect();
    if ledger.0.values().any(|h| !uids.contains(&h.uid)) {
        return None;
    }
    let live: Vec<&Tenant> = tenants
        .iter()
        .filter(|t| t.metadata.deletion_timestamp.is_none())
        .collect();
    let a = assign(ledger, &live, &BTreeSet::new());
    (!a.changed).then_some(a)
}

/// What a pass is rendered from: every tenant, workload and claim (from
/// the caches: this makes no LIST) and the platform's settings.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Every tenant.
    pub tenants: &'a [Tenant],
    /// Every workload.
    pub workloads: &'a [TenantDeployment],
    /// Every claim.
    pub claims: &'a [SubnetClaim],
    /// The [`crate::crd::Platform`]'s spec, if there is one.
    pub platform: Option<&'a PlatformSpec>,
}

/// Renders the platform from `inputs`, applies what changed and prunes
/// what it created and no longer renders; a pass whose result `state`
/// already knows to be live makes no request. Call it after any input
/// changed.
pub async fn reconcile_platform(
    ctx: &Ctx,
    state: &mut PlatformState,
    inputs: Inputs<'_>,
) -> Result<PlatformOutcome, Error> {
    let Inputs {
        tenants,
        workloads,
        claims,
        platform,
    } = inputs;
    let render = |ports: &Ports| {
        plan(&ctx.config, tenants, workloads, claims, ports, platform).map_err(Error::Platform)
    };
    let assignment = match known_ports(state, tenants) {
        Some(a) => a,
        None => {
            let first = render(state.ledger.as_ref().unwrap_or(&Ports::default()))?;
            let ns = &ctx.config.render.proxy.namespace;
            let namespace = first
                .objects
                .iter()
                .find(|o| o.kind == "Namespace" && &o.name == ns);
            allocate_ports(ctx, state, tenants, namespace).await?
        }
    };
    record_ports(ctx, tenants, &assignment.ports).await?;
    let plan = render(&assignment.ports)?;
    let (mut applied, mut seen) = (0, Vec::new());
    for o in &plan.objects {
        let a = apply_changed(&ctx.client, state, o).await?;
        applied += usize::from(a.written);
        seen.extend(a.seen);
    }
    let pruned = prune(ctx, state, &plan.objects, &seen).await?;
    let mut left_out = plan.left_out;
    left_out.extend(assignment.conflicts);
    for (tenant, reason) in &left_out {
        tracing::warn!(tenant, reason, "not served by the egress proxy as asked");
    }
    Ok(PlatformOutcome {
        applied,
        pruned,
        left_out,
    })
}

/// Reads the inventory (unless known) with its resourceVersion.
async fn read_inventory(api: &Api<ConfigMap>) -> Result<(Inventory, Option<String>), Error> {
    let cm = api
        .get_opt(INVENTORY)
        .await
        .map_err(Error::kube("read", INVENTORY))?;
    let rv = cm
        .as_ref()
        .and_then(|c| c.metadata.resource_version.clone());
    let data = cm.and_then(|c| c.data).unwrap_or_default();
    Ok((Inventory::from_data(&data), rv))
}

/// Records what this pass created, deletes (uid precondition) what the
/// inventory holds and `objects` no longer has, and writes the inventory
/// back at the version read. Nothing to record or delete: no request.
async fn prune(
    ctx: &Ctx,
    state: &mut PlatformState,
    objects: &[Object],
    seen: &[Seen],
) -> Result<usize, Error> {
    let ns = ctx.config.render.proxy.namespace.clone();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let (recorded, rv) = match state.inventory.take() {
        Some(known) => known,
        None => read_inventory(&api).await?,
    };
    let desired: BTreeSet<String> = objects.iter().map(Object::id).collect();
    let decision = inventory::decide(&recorded, &desired, seen, &ns);
    if decision.prune.is_empty() && decision.keep == recorded {
        state.inventory = Some((recorded, rv));
        return Ok(0);
    }
    let (mut keep, mut failure, mut pruned) = (decision.keep, None, 0);
    for e in &decision.prune {
        state.live.remove(&e.id());
        match inventory::delete(&ctx.client, e).await {
            Ok(deleted) => pruned += usize::from(deleted),
            Err(err) => {
                keep.0.insert(e.id(), e.clone());
                failure.get_or_insert(err);
            }
        }
    }
    let written = write_at(&api, &ns, INVENTORY, rv, keep.to_data()).await?;
    state.inventory = Some((keep, written.metadata.resource_version));
    failure.map_or(Ok(pruned), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TenantSpec;

    fn tenant(name: &str, port: Option<u16>) -> Tenant {
        let mut t = Tenant::new(
            name,
            TenantSpec {
                proxy_port: port,
                ..TenantSpec::default()
            },
        );
        t.metadata.uid = Some(format!("uid-{name}"));
        t
    }

    fn ports(a: &Assignment) -> Vec<(u16, &str)> {
        a.ports
            .0
            .iter()
            .map(|(p, h)| (*p, h.tenant.as_str()))
            .collect()
    }

    #[test]
    fn ports_stay_with_their_tenant_and_new_ones_take_the_lowest_free() {
        let (a, b, c) = (tenant("a", None), tenant("b", None), tenant("c", None));
        let first = assign(&Ports::default(), &[&b, &a], &BTreeSet::new());
        assert_eq!(ports(&first), [(20000, "a"), (20001, "b")]);
        assert!(first.changed);
        // a's tenant is gone: its port is free again, b keeps its own.
        let gone = BTreeSet::from(["uid-a".to_owned()]);
        let next = assign(&first.ports, &[&b, &c], &gone);
        assert_eq!(ports(&next), [(20000, "c"), (20001, "b")]);
        // Nothing new: nothing to write.
        assert!(!assign(&next.ports, &[&b, &c], &BTreeSet::new()).changed);
        // A missing tenant that is not known to be gone keeps its port.
        let kept = assign(&next.ports, &[&b], &BTreeSet::new());
        assert_eq!(ports(&kept), [(20000, "c"), (20001, "b")]);
    }

    #[test]
    fn a_users_port_is_claimed_if_free_and_a_taken_one_is_a_conflict() {
        let a = tenant("a", None);
        let b = tenant("b", Some(20000));
        let first = assign(&Ports::default(), &[&a], &BTreeSet::new());
        let next = assign(&first.ports, &[&a, &b], &BTreeSet::new());
        assert_eq!(ports(&next), [(20000, "a")]);
        assert_eq!(next.conflicts.len(), 1);
        assert!(
            next.conflicts[0].1.contains("tenant \"a\"'s"),
            "{:?}",
            next.conflicts
        );
        // Moving to a free port moves the tenant's entry.
        let b = tenant("b", Some(20005));
        let moved = assign(&next.ports, &[&a, &b], &BTreeSet::new());
        assert_eq!(ports(&moved), [(20000, "a"), (20005, "b")]);
        let b = tenant("b", Some(20006));
        let again = assign(&moved.ports, &[&a, &b], &BTreeSet::new());
        assert_eq!(ports(&again), [(20000, "a"), (20006, "b")]);
    }

    #[test]
    fn a_tenant_with_a_bad_domain_rule_is_left_out_and_the_others_served() {
        let mut bad = tenant("bad", None);
        bad.spec.egress.denied_domains = vec!["not a domain".into()];
        let good = tenant("good", None);
        let config = crate::testing::example_config();
        let p = plan(&config, &[bad, good], &[], &[], &Ports::default(), None).unwrap();
        assert_eq!(p.left_out.len(), 1);
        assert_eq!(p.left_out[0].0, "bad");
        assert!(
            p.left_out[0].1.contains("\"not a domain\""),
            "{:?}",
            p.left_out
        );
        let cm = p.objects.iter().find(|o| o.kind == "ConfigMap").unwrap();
        let yaml = cm.body["data"]["proxy.yaml"].as_str().unwrap();
        let proxy = palisade_proxy::ProxyConfig::from_yaml(yaml).unwrap();
        let names: Vec<&str> = proxy.tenants.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["good"]);
    }

    #[test]
    fn the_ledger_round_trips_through_config_map_data() {
        let a = tenant("a", None);
        let p = assign(&Ports::default(), &[&a], &BTreeSet::new()).ports;
        let data = p.to_data();
        assert_eq!(data["20000"], "a uid-a");
        assert_eq!(Ports::from_data(&data), p);
    }
}
