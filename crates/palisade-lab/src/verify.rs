//! `lab verify`: the connectivity matrix, expected from the policy model and
//! measured for real.
//!
//! [`expectations`] is pure: for every ordered pair of pods, every gateway →
//! pod, and every pod → internet (direct, and through the tenant's proxy) it
//! asks [`Policy::allowed`] what must happen and why. [`run`] then measures
//! each probe with a real HTTP request from inside the source namespace (one
//! probe agent per namespace, all probes concurrent, bounded timeouts) and
//! compares. A mismatch names the pair and the rule that should have applied.
//!
//! The model is not what users apply: [`attach_objects`] adds a third
//! verdict per probe, what Cilium would do with the objects `render` ships
//! (`palisade_kube::eval`), and a probe is right only when all three agree.
//! Hand-written manifests get their own lab (`crate::manifests`).

use crate::apply::{Lab, LabState, Progress};
use crate::plan::{
    APISERVER_ADDR, APISERVER_PORT, DNS_ADDR, DNS_PORT, ECHO_ADDR, HTTP_PORT, METADATA_ADDR,
    PROXY_ADDR, PodPlan,
};
use crate::serve::{Answer, DNS_PROBE_NAME, ProbeFailure, ProbeRequest};
use crate::{LabError, Result};
use palisade_core::policy::{Endpoint, Policy, PortProto};
use palisade_core::{DeploymentName, Port, TenantName};
use palisade_kube::eval::{Endpoint as Workload, Identity, Proto, RenderedPolicy, Verdict};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// How a probe reaches its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeKind {
    /// A direct TCP connection and HTTP request.
    Direct,
    /// An HTTP request to the internet echo through the tenant's egress proxy.
    ViaProxy,
    /// An HTTP request from the internet side to a gateway, which forwards
    /// it to a pod of the deployment it names (`Host: <deployment>.<tenant>`).
    ViaGateway,
}

/// What a probe is addressed to: a model endpoint, or a stand-in the
/// model has no endpoint for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An endpoint of the policy model.
    Model(Endpoint),
    /// Cloud metadata ([`METADATA_ADDR`]).
    Metadata,
    /// The Kubernetes API server's stand-in ([`APISERVER_ADDR`]).
    ApiServer,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Model(e) => e.fmt(f),
            Target::Metadata => f.write_str("cloud-metadata"),
            Target::ApiServer => f.write_str("kube-apiserver"),
        }
    }
}

impl From<Endpoint> for Target {
    fn from(e: Endpoint) -> Self {
        Target::Model(e)
    }
}

/// Why no tenant pod may reach the cloud metadata service: the platform's
/// promise, which the renderer writes as a deny in every tenant's
/// default-deny policy (`palisade_kube::render::METADATA_V6`); the policy
/// model has no endpoint for it.
pub const METADATA_REASON: &str = "platform: cloud metadata is denied to every tenant pod";
/// Why no tenant pod may reach the API server (the default-deny policy's
/// `egressDeny` to `kube-apiserver`).
pub const APISERVER_REASON: &str = "platform: the API server is denied to every tenant pod";

/// One planned probe and what the policy model expects of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The client endpoint.
    pub from: Endpoint,
    /// The server.
    pub to: Target,
    /// The client pod (pods only).
    pub from_pod: Option<String>,
    /// The server pod (pods only).
    pub to_pod: Option<String>,
    /// The destination port (for proxy probes: the proxy's).
    pub port: u16,
    /// Direct or through the proxy.
    pub kind: ProbeKind,
    /// The namespace it runs in.
    pub netns: String,
    /// What to send.
    pub addr: SocketAddr,
    /// Through this proxy.
    pub proxy: Option<SocketAddr>,
    /// The `Host` header, if not the address.
    pub host: Option<String>,
    /// Whether the policy model allows it.
    pub expected: bool,
    /// The rule that allows it, or default deny.
    pub reason: String,
    /// The caller address the server must see (tenant egress IP).
    pub expect_caller: Option<Ipv6Addr>,
    /// The (tenant, deployment) that must answer.
    pub expect_pod_of: Option<(String, String)>,
    /// What the rendered objects decide ([`attach_objects`]).
    pub objects: Option<ObjectsVerdict>,
}

/// What Cilium would do with the rendered objects, and which object and
/// rule decided each direction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectsVerdict {
    /// Whether both directions allow it.
    pub allowed: bool,
    /// The sender's egress decision.
    pub egress: String,
    /// The receiver's ingress decision.
    pub ingress: String,
}

/// A gateway's route decision is its sending side at L7, so it is kept
/// with the egress decision (`no-policy; not reachable at L7: ...`): the
/// schema of `verify.json` stays the same for the dashboard.
impl From<Verdict> for ObjectsVerdict {
    fn from(v: Verdict) -> Self {
        let egress = match &v.route {
            Some(route) => format!("{}; {route}", v.egress),
            None => v.egress.to_string(),
        };
        Self {
            allowed: v.allowed,
            egress,
            ingress: v.ingress.to_string(),
        }
    }
}

/// One measured probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// Client endpoint (`acme/web`, `gateway/central`).
    pub from: String,
    /// Server endpoint (`acme/db`, `internet`, `egress-proxy/acme`).
    pub to: String,
    /// Client pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_pod: Option<String>,
    /// Server pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_pod: Option<String>,
    /// Destination port.
    pub port: u16,
    /// Direct or via the proxy.
    pub kind: ProbeKind,
    /// What the policy model expects.
    pub expected: bool,
    /// What happened.
    pub observed: bool,
    /// The rule that should apply (or `default deny`).
    pub reason: String,
    /// Whether expectation and observation agree (and the answer was right).
    pub ok: bool,
    /// What was seen, in a few words.
    pub detail: String,
    /// What the rendered objects decide, when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectsVerdict>,
}

/// The result of one `verify`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// When (RFC 3339).
    pub generated_at: String,
    /// Every probe, in plan order.
    pub probes: Vec<Outcome>,
}

impl Report {
    /// The probes that disagree with the policy model.
    pub fn mismatches(&self) -> impl Iterator<Item = &Outcome> {
        self.probes.iter().filter(|o| !o.ok)
    }
}

/// The file name of [`FileReport`] in the lab directory.
pub const VERIFY_FILE: &str = "verify.json";

impl Lab {
    /// Where `verify` writes its last report.
    pub fn verify_path(&self) -> std::path::PathBuf {
        self.dir.join(VERIFY_FILE)
    }
}

/// `<lab dir>/verify.json`: the last `verify`, one record per probe with
/// its three verdicts (model, objects, dataplane). The dashboard reads the
/// file with this type, so its schema is declared once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileReport {
    /// When the lab ran (RFC 3339).
    pub generated_at: String,
    /// Every probe, in plan order.
    pub probes: Vec<FileProbe>,
}

/// One probe of [`FileReport`]: did `from` reach `to` on `port`?
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileProbe {
    /// Client, as [`Endpoint`]'s Display (`acme/web`).
    pub from: String,
    /// Server, same form (or a stand-in: `cloud-metadata`, `kube-apiserver`).
    pub to: String,
    /// Destination port.
    pub port: u16,
    /// What the policy model expected when the lab ran.
    pub expected: bool,
    /// What the dataplane did.
    pub observed: bool,
    /// The model's reason for the expectation.
    #[serde(default)]
    pub reason: String,
    /// What the rendered objects decide, and which object and rule did.
    /// Reports written before the rules were named carry only `true` or
    /// `false` here; they read with empty decisions.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "objects_or_bool"
    )]
    pub objects: Option<ObjectsVerdict>,
}

impl From<&Outcome> for FileProbe {
    fn from(o: &Outcome) -> Self {
        Self {
            from: o.from.clone(),
            to: o.to.clone(),
            port: o.port,
            expected: o.expected,
            observed: o.observed,
            reason: o.reason.clone(),
            objects: o.objects.clone(),
        }
    }
}

/// `objects` as written now (a verdict) or before (a bare boolean).
fn objects_or_bool<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<ObjectsVerdict>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Field {
        Verdict(ObjectsVerdict),
        Allowed(bool),
    }
    let field = <Option<Field> as serde::Deserialize>::deserialize(d)?;
    Ok(field.map(|f| match f {
        Field::Verdict(v) => v,
        Field::Allowed(allowed) => ObjectsVerdict {
            allowed,
            egress: String::new(),
            ingress: String::new(),
        },
    }))
}

fn endpoint_of(p: &PodPlan) -> Result<Endpoint> {
    let t: TenantName = p.tenant.parse().map_err(LabError::Model)?;
    let d: DeploymentName = p.deployment.parse().map_err(LabError::Model)?;
    Ok(Endpoint::deployment(&t, &d))
}

fn tcp(port: u16) -> Result<PortProto> {
    Port::try_from(port)
        .map(PortProto::tcp)
        .map_err(LabError::Model)
}

/// Every probe of the lab in `state` and the verdict `policy` expects.
pub fn expectations(state: &LabState, policy: &Policy) -> Result<Vec<Probe>> {
    let mut out = Vec::new();
    let echo = SocketAddr::new(IpAddr::V6(ECHO_ADDR), HTTP_PORT);
    let proxy = SocketAddr::new(IpAddr::V6(PROXY_ADDR), state.proxy_port);
    // `relay`: a gateway's probes are asked of the gateway's stand-in,
    // which opens the connection only where one of its routes sends.
    let to_pods = |from: &Endpoint,
                   netns: &str,
                   from_pod: Option<&str>,
                   relay: Option<SocketAddr>,
                   out: &mut Vec<Probe>|
     -> Result<()> {
        for dst in state.pods.iter().map(|r| &r.spec) {
            if dst.netns == netns {
                continue;
            }
            let to = endpoint_of(dst)?;
            for &port in &dst.ports {
                let v = policy.allowed(from, &to, tcp(port)?);
                out.push(Probe {
                    from: from.clone(),
                    to: to.clone().into(),
                    from_pod: from_pod.map(Into::into),
                    to_pod: Some(dst.name.clone()),
                    port,
                    kind: ProbeKind::Direct,
                    netns: netns.to_string(),
                    addr: SocketAddr::new(IpAddr::V6(dst.addr), port),
                    proxy: relay,
                    host: None,
                    expected: v.allowed,
                    reason: v.reason.to_string(),
                    expect_caller: None,
                    expect_pod_of: Some((dst.tenant.clone(), dst.deployment.clone())),
                    objects: None,
                });
            }
        }
        Ok(())
    };
    for src in state.pods.iter().map(|r| &r.spec) {
        let from = endpoint_of(src)?;
        to_pods(&from, &src.netns, Some(&src.name), None, &mut out)?;
        let egress_ip = state
            .egress
            .iter()
            .find(|e| e.tenant == src.tenant)
            .map(|e| e.ip);
        let direct = policy.allowed(&from, &Endpoint::Internet, tcp(HTTP_PORT)?);
        out.extend(stand_in_probes(state, policy, src)?);
        out.push(Probe {
            from: from.clone(),
            to: Endpoint::Internet.into(),
            from_pod: Some(src.name.clone()),
            to_pod: None,
            port: HTTP_PORT,
            kind: ProbeKind::Direct,
            netns: src.netns.clone(),
            addr: echo,
            proxy: None,
            host: None,
            expected: direct.allowed,
            reason: direct.reason.to_string(),
            expect_caller: egress_ip,
            expect_pod_of: None,
            objects: None,
        });
        let to = Endpoint::EgressProxy {
            tenant: src.tenant.parse().map_err(LabError::Model)?,
        };
        let via = policy.allowed(&from, &to, tcp(state.proxy_port)?);
        out.push(Probe {
            from,
            to: to.into(),
            from_pod: Some(src.name.clone()),
            to_pod: None,
            port: state.proxy_port,
            kind: ProbeKind::ViaProxy,
            netns: src.netns.clone(),
            addr: echo,
            proxy: Some(proxy),
            host: None,
            expected: via.allowed,
            reason: via.reason.to_string(),
            expect_caller: egress_ip,
            expect_pod_of: None,
            objects: None,
        });
    }
    for g in state.gateways.iter().map(|r| &r.spec) {
        let from = Endpoint::Gateway {
            scope: g.scope.clone(),
        };
        let relay = SocketAddr::new(IpAddr::V6(g.addr), HTTP_PORT);
        to_pods(&from, &g.netns, None, Some(relay), &mut out)?;
    }
    // Ingress as a user sees it: from the internet, through each gateway,
    // to every deployment it routes.
    for g in state.gateways.iter().map(|r| &r.spec) {
        let from = Endpoint::Gateway {
            scope: g.scope.clone(),
        };
        for route in &g.routes {
            let Some(pod) = state
                .pods
                .iter()
                .map(|r| &r.spec)
                .find(|p| format!("{}/{}", p.tenant, p.deployment) == route.target)
            else {
                continue;
            };
            let to = endpoint_of(pod)?;
            let port = route.backends.first().map_or(HTTP_PORT, |b| b.port());
            let v = policy.allowed(&from, &to, tcp(port)?);
            out.push(Probe {
                from: from.clone(),
                to: to.into(),
                from_pod: None,
                to_pod: None,
                port,
                kind: ProbeKind::ViaGateway,
                netns: state.infra.internet.clone(),
                addr: SocketAddr::new(IpAddr::V6(g.addr), HTTP_PORT),
                proxy: None,
                host: Some(route.host.clone()),
                expected: v.allowed,
                reason: v.reason.to_string(),
                expect_caller: None,
                expect_pod_of: Some((pod.tenant.clone(), pod.deployment.clone())),
                objects: None,
            });
        }
    }
    Ok(out)
}

/// A pod's probes to the stand-ins (when the lab runs them): cluster DNS
/// on TCP 53 (the model's verdict), cloud metadata and the API server (the
/// platform's denies, which the model does not hold).
fn stand_in_probes(state: &LabState, policy: &Policy, src: &PodPlan) -> Result<Vec<Probe>> {
    let from = endpoint_of(src)?;
    let mut out = Vec::new();
    let mut push = |to: Target, addr, port, (expected, reason): (bool, String)| {
        out.push(Probe {
            from: from.clone(),
            to,
            from_pod: Some(src.name.clone()),
            to_pod: None,
            port,
            kind: ProbeKind::Direct,
            netns: src.netns.clone(),
            addr: SocketAddr::new(IpAddr::V6(addr), port),
            proxy: None,
            host: None,
            expected,
            reason,
            expect_caller: None,
            expect_pod_of: None,
            objects: None,
        });
    };
    let infra = &state.infra;
    if !infra.dns.is_empty() {
        let v = policy.allowed(&from, &Endpoint::ClusterDns, tcp(DNS_PORT)?);
        let dns = Target::Model(Endpoint::ClusterDns);
        push(dns, DNS_ADDR, DNS_PORT, (v.allowed, v.reason.to_string()));
    }
    if !infra.metadata.is_empty() {
        let why = (false, METADATA_REASON.to_owned());
        push(Target::Metadata, METADATA_ADDR, HTTP_PORT, why);
    }
    if !infra.apiserver.is_empty() {
        let why = (false, APISERVER_REASON.to_owned());
        push(Target::ApiServer, APISERVER_ADDR, APISERVER_PORT, why);
    }
    Ok(out)
}

/// Compares one measurement with its expectation.
pub fn judge(probe: &Probe, outcome: &Result<(u16, String), ProbeFailure>) -> Outcome {
    let (observed, mut problem, detail) = match outcome {
        Err(ProbeFailure::Connect(e)) => (false, None, format!("blocked ({e})")),
        Err(e @ ProbeFailure::Http(_)) => (true, Some(e.to_string()), e.to_string()),
        Ok((status, body)) => {
            let answer: Option<Answer> = serde_json::from_str(body.trim()).ok();
            match probe.kind {
                ProbeKind::ViaProxy => {
                    let reached = *status == 200
                        && answer.as_ref().is_some_and(|a| a.role == "internet-echo");
                    let detail = match &answer {
                        Some(a) if reached => format!("echo saw {}", a.caller),
                        _ => format!("proxy answered {status}"),
                    };
                    (reached, None, detail)
                }
                ProbeKind::ViaGateway => {
                    let reached =
                        *status == 200 && answer.as_ref().is_some_and(|a| a.role == "pod");
                    let detail = match &answer {
                        Some(a) if reached => format!(
                            "{} answered through the gateway",
                            a.pod.as_deref().unwrap_or_default()
                        ),
                        _ => format!("gateway answered {status}: {}", body.trim()),
                    };
                    (reached, None, detail)
                }
                // A gateway's probe, asked of its stand-in: 404 is no
                // route, 503 no connection (see `serve::Workload::Gateway`).
                ProbeKind::Direct if probe.proxy.is_some() && !(200..300).contains(status) => {
                    let error = serde_json::from_str::<serde_json::Value>(body.trim())
                        .ok()
                        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                        .unwrap_or_else(|| body.trim().to_owned());
                    match *status {
                        404 => (false, None, error),
                        503 => (false, None, format!("blocked ({error})")),
                        _ => (true, None, format!("gateway answered {status}: {error}")),
                    }
                }
                ProbeKind::Direct => (
                    true,
                    None,
                    match &answer {
                        Some(a) => format!(
                            "{} answered, saw {}",
                            a.pod.as_deref().unwrap_or(&a.role),
                            a.caller
                        ),
                        // A DNS probe's agent describes the DNS answer.
                        None if probe.to == Target::Model(Endpoint::ClusterDns) => {
                            body.trim().to_owned()
                        }
                        None => format!("HTTP {status}"),
                    },
                ),
            }
        }
    };
    if observed && let Ok((_, body)) = outcome {
        let answer: Option<Answer> = serde_json::from_str(body.trim()).ok();
        if let (Some(want), Some(a)) = (probe.expect_caller, &answer)
            && a.role == "internet-echo"
            && a.caller != want.to_string()
        {
            problem = Some(format!(
                "the internet saw {} instead of the tenant's egress IP {want}",
                a.caller
            ));
        }
        if let Some((t, d)) = &probe.expect_pod_of {
            let right = answer.as_ref().is_some_and(|a| {
                a.tenant.as_deref() == Some(t) && a.deployment.as_deref() == Some(d)
            });
            if !right {
                problem = Some(format!("the wrong workload answered: {}", body.trim()));
            }
        }
    }
    if let Some(o) = probe
        .objects
        .as_ref()
        .filter(|o| o.allowed != probe.expected)
    {
        problem = Some(format!(
            "the rendered objects {} it (egress {}; ingress {})",
            if o.allowed { "allow" } else { "deny" },
            o.egress,
            o.ingress
        ));
    }
    let ok = observed == probe.expected && problem.is_none();
    Outcome {
        from: probe.from.to_string(),
        to: probe.to.to_string(),
        from_pod: probe.from_pod.clone(),
        to_pod: probe.to_pod.clone(),
        port: probe.port,
        kind: probe.kind,
        expected: probe.expected,
        observed,
        reason: probe.reason.clone(),
        ok,
        detail: problem.unwrap_or(detail),
        objects: probe.objects.clone(),
    }
}

/// Adds to each probe what the rendered objects decide for it.
pub fn attach_objects(probes: &mut [Probe], objects: &RenderedPolicy) -> Result<()> {
    let mut metadata = Workload::reserved("cloud-metadata", Identity::World);
    metadata.addresses = vec![IpAddr::V6(METADATA_ADDR)];
    let apiserver = Workload::reserved("kube-apiserver", Identity::KubeApiServer);
    for p in probes {
        let stand_in = match &p.to {
            Target::Model(to) => {
                p.objects = objects.verdict(&p.from, to, tcp(p.port)?).map(Into::into);
                continue;
            }
            Target::Metadata => &metadata,
            Target::ApiServer => &apiserver,
        };
        p.objects = objects.endpoint(&p.from).map(|from| {
            objects
                .set()
                .verdict(from, stand_in, p.port, Proto::Tcp)
                .into()
        });
    }
    Ok(())
}

/// What a probe agent measured for one probe.
type Measured = std::result::Result<(u16, String), ProbeFailure>;

/// Measures every probe (one agent per source namespace, `parallel` agents
/// at once) and judges it. A probe that disagrees is measured once more,
/// with twice the timeout, before it is reported: a loaded host can delay
/// one handshake, but a wrong rule fails both times.
pub fn run(
    lab: &Lab,
    probes: &[Probe],
    timeout: Duration,
    parallel: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report> {
    let mut outcomes = measure(lab, probes, timeout, parallel, "verify", progress)?;
    let again: Vec<usize> = (0..outcomes.len()).filter(|&i| !outcomes[i].ok).collect();
    if !again.is_empty() {
        let retry: Vec<Probe> = again.iter().map(|&i| probes[i].clone()).collect();
        let second = measure(lab, &retry, timeout * 2, parallel, "re-check", progress)?;
        for (i, o) in again.into_iter().zip(second) {
            outcomes[i] = o;
        }
    }
    Ok(Report {
        generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        probes: outcomes,
    })
}

fn measure(
    lab: &Lab,
    probes: &[Probe],
    timeout: Duration,
    parallel: usize,
    phase: &str,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<Outcome>> {
    let mut batches: Vec<crate::agents::Batch> = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        let request = ProbeRequest {
            id: i,
            addr: p.addr,
            proxy: p.proxy,
            host: p.host.clone().unwrap_or_else(|| p.addr.to_string()),
            // Cluster DNS answers DNS on TCP 53: the probe asks it a question.
            dns: (p.to == Target::Model(Endpoint::ClusterDns)).then(|| DNS_PROBE_NAME.to_owned()),
            udp: false,
        };
        match batches.last_mut() {
            Some((ns, requests)) if *ns == p.netns => requests.push(request),
            _ => batches.push((p.netns.clone(), vec![request])),
        }
    }
    let mut results: Vec<Option<Measured>> = vec![None; probes.len()];
    for r in crate::agents::run(lab, &batches, timeout, parallel, phase, progress)? {
        if let Some(slot) = results.get_mut(r.id) {
            *slot = Some(r.outcome);
        }
    }
    Ok(probes
        .iter()
        .zip(results)
        .map(|(p, r)| {
            let r = r.unwrap_or_else(|| {
                Err(ProbeFailure::Http("the probe agent gave no answer".into()))
            });
            judge(p, &r)
        })
        .collect())
}

/// Writes `report` to `path` in the dashboard's shape, atomically.
pub fn write_report(path: &std::path::Path, report: &Report) -> Result<()> {
    let file = FileReport {
        generated_at: report.generated_at.clone(),
        probes: report.probes.iter().map(FileProbe::from).collect(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(LabError::json("verify report"))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(LabError::io(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(LabError::io(format!("cannot replace {}", path.display())))
}
