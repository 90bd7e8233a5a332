//! `lab verify --manifests`: hand-written (or generated) manifests proved
//! on packets, the pre-merge check a platform team can put in CI.
//!
//! The store's lab runs what Palisade renders; this runs what a user hands
//! in. The workloads among the manifests (Deployment, StatefulSet,
//! DaemonSet, ReplicaSet, Job, Pod: namespace, template labels, container
//! ports, service account, and the labels of any Namespace object among
//! them) become lab pods, their Cilium policies become the router's
//! nftables through the same `palisade_kube::eval::PolicySet::compile` the
//! store's lab uses, and real TCP connections (a datagram for a UDP port)
//! fill the matrix: every workload and the world to every workload's
//! ports, every workload to the world on 443. Each cell keeps the objects' verdict (with the deciding
//! object and rule) beside what the packets did; a cell where they differ
//! fails the run.
//!
//! [`plan`] is pure (names, addresses, ruleset, cells); [`run`] brings the
//! lab up in a directory of its own, measures through the probe agents
//! ([`crate::agents`]) and always takes it down again.
//!
//! Each workload runs two pods, so the cell from a workload to itself
//! crosses the node as traffic between two replicas does (a pod reaching
//! its own address never leaves it). The world stand-in carries an IPv4
//! and an IPv6 address ([`INTERNET_PROBE`] and the lab's echo origin), so a
//! `toCIDR`/`fromCIDR` rule of either family that covers the internet
//! covers it; its packets are IPv6, as the lab is.

use crate::apply::{Lab, Progress};
use crate::nft::{self, NftEndpoint, TableInput};
use crate::plan::{ECHO_ADDR, HTTP_PORT, InfraNames, PodPlan, Runtime, veth_name};
use crate::serve::{Answer, ProbeFailure, ProbeRequest};
use crate::verify::ObjectsVerdict;
use crate::{LabError, Result, rendered};
use ipnet::Ipv6Net;
use palisade_kube::eval::{
    Endpoint as Workload, INTERNET_PROBE, Identity, PolicySet, Proto, Unsupported,
    pods_from_manifests,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The manifests' pods live in `fd70:1ab:0:2::/64`, workload *i* in the
/// /112 at `fd70:1ab:0:2::<i>:0` (outside the store lab's addresses).
pub const WORKLOAD_PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd70, 0x01ab, 0, 2, 0, 0, 0, 0);
/// Pods per workload (see the module docs).
pub const PODS_PER_WORKLOAD: usize = 2;
/// The port every workload reaches the world on.
pub const WORLD_PORT: u16 = 443;
/// At most this many workloads (two pods each).
pub const MAX_WORKLOADS: usize = 500;

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cell {
    /// The client (`<namespace>/<workload>` or `world`).
    pub from: String,
    /// The server.
    pub to: String,
    /// The destination port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Proto,
    /// Whether Cilium would let it through, and who decided.
    pub verdict: ObjectsVerdict,
    /// What the packets did (none when not measured: objects only, or a
    /// protocol the lab does not probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<bool>,
    /// Whether the packets agree with the objects (when measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// What was seen, in a few words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How the packets are sent.
    #[serde(skip)]
    probe: Option<CellProbe>,
}

/// Where a cell's probe leaves from, goes to, and who must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CellProbe {
    netns: String,
    addr: SocketAddr,
    /// A UDP datagram instead of a TCP connection.
    udp: bool,
    /// `(namespace, workload)` of the pod that must answer; `None`: the
    /// world's echo origin.
    answer: Option<(String, String)>,
}

/// What `lab verify --manifests` prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestReport {
    /// The workloads found.
    pub workloads: Vec<String>,
    /// Every cell.
    pub cells: Vec<Cell>,
    /// What the evaluator did not model.
    pub unsupported: Vec<Unsupported>,
    /// What the lab did not model (ICMP rules, protocols it does not probe).
    pub notes: Vec<String>,
    /// Whether packets were sent.
    pub packets: bool,
}

impl ManifestReport {
    /// Cells where the packets disagree with the objects.
    pub fn mismatches(&self) -> impl Iterator<Item = &Cell> {
        self.cells.iter().filter(|c| c.ok == Some(false))
    }
}

/// The lab of a set of manifests, computed from them alone.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestPlan {
    /// The router and the world's namespace (the other stand-ins are not
    /// part of this lab: their names are empty).
    pub infra: InfraNames,
    /// [`PODS_PER_WORKLOAD`] per workload, in workload order.
    pub pods: Vec<PodPlan>,
    /// The UDP ports each pod answers on (its workload's UDP container
    /// ports), by pod.
    pub udp_ports: Vec<Vec<u16>>,
    /// The nftables table.
    pub ruleset: String,
    /// The matrix, with the objects' verdicts and no observations yet.
    pub report: ManifestReport,
}

/// Lays out the workloads and policies among `objects` as a lab whose
/// namespaces start with `prefix`. Errors when there is no workload, or
/// more than [`MAX_WORKLOADS`].
pub fn plan(objects: &[Value], prefix: &str) -> Result<ManifestPlan> {
    let (set, unsupported) = PolicySet::from_objects(objects);
    let mut workloads = pods_from_manifests(objects);
    if workloads.is_empty() {
        return Err(LabError::Plan(
            "no workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, Pod)".into(),
        ));
    }
    if workloads.len() > MAX_WORKLOADS {
        return Err(LabError::Plan(format!(
            "{} workloads; the lab runs at most {MAX_WORKLOADS}",
            workloads.len()
        )));
    }
    let namespaces = rendered::namespace_labels(objects);
    let nets: Vec<Ipv6Net> = (0..workloads.len()).map(workload_net).collect();
    let mut pods = Vec::new();
    for (i, w) in workloads.iter_mut().enumerate() {
        if let Identity::Pod {
            namespace,
            namespace_labels,
            ..
        } = &mut w.identity
        {
            *namespace_labels = namespaces.get(namespace).cloned().unwrap_or_default();
        }
        pods.extend(workload_pods(w, i, nets[i], prefix));
        w.addresses = pods[i * PODS_PER_WORKLOAD..(i + 1) * PODS_PER_WORKLOAD]
            .iter()
            .map(|p| IpAddr::V6(p.addr))
            .collect();
    }
    let mut world = Workload::reserved("world", Identity::World);
    world.addresses = INTERNET_PROBE
        .parse()
        .into_iter()
        .chain([IpAddr::V6(ECHO_ADDR)])
        .collect();
    let infra = InfraNames {
        router: format!("{prefix}router"),
        proxy: String::new(),
        internet: format!("{prefix}internet"),
        metadata: String::new(),
        apiserver: String::new(),
        dns: String::new(),
    };
    let (ruleset, mut notes) = ruleset(&set, &workloads, &world, &nets);
    let cells = cells(&set, &workloads, &world, &pods, &infra);
    if cells.iter().any(|c| c.probe.is_none()) {
        notes.push("SCTP ports are evaluated but not probed: the lab probes TCP and UDP".into());
    }
    let udp_ports = workloads
        .iter()
        .flat_map(|w| {
            let udp: Vec<u16> = w
                .ports
                .iter()
                .filter(|p| p.proto == Proto::Udp)
                .map(|p| p.port)
                .collect();
            std::iter::repeat_n(udp, PODS_PER_WORKLOAD)
        })
        .collect();
    Ok(ManifestPlan {
        report: ManifestReport {
            workloads: workloads.iter().map(|w| w.name.clone()).collect(),
            cells,
            unsupported,
            notes,
            packets: false,
        },
        infra,
        pods,
        udp_ports,
        ruleset,
    })
}

/// Workload `i`'s /112.
fn workload_net(i: usize) -> Ipv6Net {
    let base = u128::from(WORKLOAD_PREFIX) | ((i as u128) << 16);
    Ipv6Net::new(Ipv6Addr::from(base), 112).unwrap_or_default()
}

/// The TCP ports a workload's pods serve: its TCP container ports, 80
/// when it declares none (as the matrix probes it) or only UDP/SCTP ones
/// (a workload process serves at least one port; nothing probes it there).
fn served_ports(w: &Workload) -> Vec<u16> {
    let tcp: Vec<u16> = w
        .ports
        .iter()
        .filter(|p| p.proto == Proto::Tcp)
        .map(|p| p.port)
        .collect();
    if tcp.is_empty() { vec![HTTP_PORT] } else { tcp }
}

/// Workload `i`'s pods. A pod's `tenant` and `deployment` hold the
/// workload's namespace and name: what its built-in workload answers with,
/// and what a probe checks.
fn workload_pods(w: &Workload, i: usize, net: Ipv6Net, prefix: &str) -> Vec<PodPlan> {
    let (ns, name) = w.name.split_once('/').unwrap_or(("default", &w.name));
    (0..PODS_PER_WORKLOAD)
        .map(|r| {
            let netns = format!("{prefix}w{i}.{r}");
            PodPlan {
                name: format!("{name}-{r}"),
                tenant: ns.to_owned(),
                deployment: name.to_owned(),
                image: String::new(),
                veth: veth_name(&netns),
                netns,
                addr: Ipv6Addr::from(u128::from(net.network()) + r as u128 + 1),
                ports: served_ports(w),
                runtime: Runtime::Plain,
                workload: palisade_core::WorkloadSpec::default(),
            }
        })
        .collect()
}

/// The table: the workloads' policies compiled for the workloads and the
/// world, and what the lab cannot enforce of them.
fn ruleset(
    set: &PolicySet,
    workloads: &[Workload],
    world: &Workload,
    nets: &[Ipv6Net],
) -> (String, Vec<String>) {
    let mut identities = workloads.to_vec();
    identities.push(world.clone());
    let compiled = set.compile(&identities);
    let world_net = [Ipv6Net::from(ECHO_ADDR)];
    let mut endpoints: Vec<NftEndpoint<'_>> = workloads
        .iter()
        .zip(nets)
        .map(|(w, n)| NftEndpoint {
            name: &w.name,
            nets: std::slice::from_ref(n),
        })
        .collect();
    endpoints.push(NftEndpoint {
        name: "world",
        nets: &world_net,
    });
    let notes = compiled
        .icmp_entries
        .iter()
        .map(|(o, section, i)| format!("{o} {section}[{i}].icmps: the lab compiles no ICMP rules"))
        .collect();
    let input = TableInput {
        endpoints,
        compiled: &compiled,
        world: world_net.to_vec(),
        snat: Vec::new(),
    };
    (nft::ruleset(&input), notes)
}

/// Every workload and the world to every workload's ports (80/TCP when it
/// declares none), then every workload to the world on 443/TCP.
fn cells(
    set: &PolicySet,
    workloads: &[Workload],
    world: &Workload,
    pods: &[PodPlan],
    infra: &InfraNames,
) -> Vec<Cell> {
    let first_pod = |i: usize| &pods[i * PODS_PER_WORKLOAD];
    let mut out = Vec::new();
    let mut cell = |from: &Workload, to: &Workload, (port, protocol), probe| {
        out.push(Cell {
            from: from.name.clone(),
            to: to.name.clone(),
            port,
            protocol,
            verdict: set.verdict(from, to, port, protocol).into(),
            observed: None,
            ok: None,
            detail: None,
            probe: (protocol != Proto::Sctp).then_some(CellProbe {
                udp: protocol == Proto::Udp,
                ..probe
            }),
        });
    };
    for (j, to) in workloads.iter().enumerate() {
        let ports: Vec<(u16, Proto)> = match to.ports.as_slice() {
            [] => vec![(HTTP_PORT, Proto::Tcp)],
            ps => ps.iter().map(|p| (p.port, p.proto)).collect(),
        };
        let sources = workloads.iter().enumerate().map(Some).chain([None]);
        for source in sources {
            // A workload to itself: its first pod to its second.
            let (from, netns, target) = match source {
                Some((i, from)) => (
                    from,
                    &first_pod(i).netns,
                    &pods[j * PODS_PER_WORKLOAD + usize::from(i == j)],
                ),
                None => (world, &infra.internet, first_pod(j)),
            };
            for &port in &ports {
                let probe = CellProbe {
                    netns: netns.clone(),
                    addr: SocketAddr::new(IpAddr::V6(target.addr), port.0),
                    udp: false,
                    answer: Some((target.tenant.clone(), target.deployment.clone())),
                };
                cell(from, to, port, probe);
            }
        }
    }
    for (i, from) in workloads.iter().enumerate() {
        let probe = CellProbe {
            netns: first_pod(i).netns.clone(),
            addr: SocketAddr::new(IpAddr::V6(ECHO_ADDR), WORLD_PORT),
            udp: false,
            answer: None,
        };
        cell(from, world, (WORLD_PORT, Proto::Tcp), probe);
    }
    out
}

/// What a probe agent measured for one probe.
type Measured = std::result::Result<(u16, String), ProbeFailure>;

/// Fills in what the packets did for `cell` from what its probe measured.
fn judge(cell: &mut Cell, measured: &Measured) {
    let Some(probe) = &cell.probe else {
        return;
    };
    let (observed, detail) = match measured {
        Err(ProbeFailure::Connect(e)) => (false, Ok(format!("blocked ({e})"))),
        Err(e @ ProbeFailure::Http(_)) => (true, Err(e.to_string())),
        Ok((_, body)) => {
            let answer: Option<Answer> = serde_json::from_str(body.trim()).ok();
            let right = answer.as_ref().is_some_and(|a| match &probe.answer {
                Some((ns, name)) => {
                    a.role == "pod"
                        && a.tenant.as_deref() == Some(ns)
                        && a.deployment.as_deref() == Some(name)
                }
                None => a.role == "internet-echo",
            });
            match answer {
                Some(a) if right => (
                    true,
                    Ok(format!(
                        "{} answered",
                        a.pod.as_deref().unwrap_or("the world's echo")
                    )),
                ),
                _ => (
                    true,
                    Err(format!("the wrong workload answered: {}", body.trim())),
                ),
            }
        }
    };
    cell.observed = Some(observed);
    cell.ok = Some(observed == cell.verdict.allowed && detail.is_ok());
    cell.detail = Some(detail.unwrap_or_else(|problem| problem));
}

/// Brings the lab of `plan` up in `lab`'s directory, measures every cell
/// it can probe (a cell that disagrees is measured once more with twice
/// the timeout, as `verify` does), takes the lab down and returns the
/// report. The lab is taken down also when a step fails.
pub fn run(
    lab: &Lab,
    mut plan: ManifestPlan,
    timeout: Duration,
    parallel: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<ManifestReport> {
    let measured = lab
        .up_bare(
            &plan.infra,
            &plan.ruleset,
            &plan.pods,
            &plan.udp_ports,
            progress,
        )
        .and_then(|()| measure(lab, &mut plan.report.cells, timeout, parallel, progress));
    let down = lab.down(progress);
    measured?;
    down?;
    plan.report.packets = true;
    Ok(plan.report)
}

/// Measures `cells` (all, then again those that disagree).
fn measure(
    lab: &Lab,
    cells: &mut [Cell],
    timeout: Duration,
    parallel: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<()> {
    let all: Vec<usize> = (0..cells.len()).collect();
    measure_some(lab, cells, &all, timeout, parallel, "verify", progress)?;
    let again: Vec<usize> = (0..cells.len())
        .filter(|&i| cells[i].ok == Some(false))
        .collect();
    if !again.is_empty() {
        measure_some(
            lab,
            cells,
            &again,
            timeout * 2,
            parallel,
            "re-check",
            progress,
        )?;
    }
    Ok(())
}

fn measure_some(
    lab: &Lab,
    cells: &mut [Cell],
    which: &[usize],
    timeout: Duration,
    parallel: usize,
    phase: &str,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<()> {
    let mut by_ns: BTreeMap<&str, Vec<ProbeRequest>> = BTreeMap::new();
    for &i in which {
        let Some(p) = &cells[i].probe else {
            continue;
        };
        by_ns.entry(&p.netns).or_default().push(ProbeRequest {
            id: i,
            addr: p.addr,
            proxy: None,
            host: p.addr.to_string(),
            dns: None,
            udp: p.udp,
        });
    }
    let batches: Vec<crate::agents::Batch> = by_ns
        .into_iter()
        .map(|(ns, requests)| (ns.to_owned(), requests))
        .collect();
    let mut results: BTreeMap<usize, Measured> =
        crate::agents::run(lab, &batches, timeout, parallel, phase, progress)?
            .into_iter()
            .map(|r| (r.id, r.outcome))
            .collect();
    for &i in which {
        let measured = results
            .remove(&i)
            .unwrap_or_else(|| Err(ProbeFailure::Http("the probe agent gave no answer".into())));
        judge(&mut cells[i], &measured);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MANIFESTS: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: t}\nspec:\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: i, ports: [{containerPort: 8080}, {containerPort: 53, protocol: UDP}]}]}\n\
---\napiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: t}\nspec: {containers: [{name: c, image: i}]}\n\
---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: web, namespace: t}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEntities: [world]}]\n";

    fn objects() -> Vec<Value> {
        serde_yaml_ng::Deserializer::from_str(MANIFESTS)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect()
    }

    fn cell<'a>(p: &'a ManifestPlan, from: &str, to: &str, port: u16) -> &'a Cell {
        p.report
            .cells
            .iter()
            .find(|c| c.from == from && c.to == to && c.port == port)
            .unwrap()
    }

    #[test]
    fn pods_addresses_and_probes_follow_the_workloads() {
        let p = plan(&objects(), "pl-abc123-").unwrap();
        assert_eq!(p.report.workloads, ["t/web", "t/client"]);
        assert_eq!(p.pods.len(), 4);
        assert_eq!(p.pods[0].netns, "pl-abc123-w0.0");
        assert_eq!(
            p.pods[0].addr,
            "fd70:1ab:0:2::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            p.pods[3].addr,
            "fd70:1ab:0:2::1:2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(p.pods[0].ports, [8080]);
        assert_eq!(p.pods[2].ports, [80], "a workload without ports serves 80");
        // To itself: from the first pod to the second.
        let own = cell(&p, "t/web", "t/web", 8080).probe.clone().unwrap();
        assert_eq!(
            (own.netns.as_str(), own.addr.ip()),
            ("pl-abc123-w0.0", p.pods[1].addr.into())
        );
        // The world's cells leave from the internet namespace.
        let world = cell(&p, "world", "t/web", 8080);
        assert_eq!(world.probe.as_ref().unwrap().netns, "pl-abc123-internet");
        assert!(world.verdict.allowed);
        assert!(!cell(&p, "t/client", "t/web", 8080).verdict.allowed);
        // UDP is probed with a datagram to the pod's UDP port.
        assert!(
            cell(&p, "t/client", "t/web", 53)
                .probe
                .as_ref()
                .unwrap()
                .udp
        );
        assert_eq!(p.udp_ports[0], [53]);
        assert!(p.report.notes.is_empty(), "{:?}", p.report.notes);
        assert!(
            p.ruleset.contains("2001:db8:1ab::80 . tcp . 0-65535"),
            "{}",
            p.ruleset
        );
    }

    #[test]
    fn a_cell_is_ok_only_when_the_packets_do_what_the_objects_say() {
        let p = plan(&objects(), "pl-abc123-").unwrap();
        let mut denied = cell(&p, "t/client", "t/web", 8080).clone();
        judge(&mut denied, &Err(ProbeFailure::Connect("timed out".into())));
        assert_eq!((denied.observed, denied.ok), (Some(false), Some(true)));
        let pod = r#"{"role":"pod","tenant":"t","deployment":"web","pod":"web-0","caller":"x"}"#;
        let mut leaked = cell(&p, "t/client", "t/web", 8080).clone();
        judge(&mut leaked, &Ok((200, pod.into())));
        assert_eq!((leaked.observed, leaked.ok), (Some(true), Some(false)));
        let mut wrong = cell(&p, "world", "t/web", 8080).clone();
        let other = pod.replace("\"web\"", "\"client\"");
        judge(&mut wrong, &Ok((200, other)));
        assert_eq!(wrong.ok, Some(false));
        assert!(wrong.detail.unwrap().contains("wrong workload"));
    }

    #[test]
    fn a_workload_with_only_udp_ports_still_serves_a_tcp_port() {
        let udp = "apiVersion: v1\nkind: Pod\nmetadata: {name: syslog}\nspec: {containers: [{name: c, image: i, ports: [{containerPort: 514, protocol: UDP}]}]}\n";
        let objects = [serde_yaml_ng::from_str(udp).unwrap()];
        let p = plan(&objects, "pl-x-").unwrap();
        assert_eq!(p.pods[0].ports, [80]);
        assert_eq!(p.report.workloads, ["default/syslog"]);
        assert!(p.report.cells.iter().all(|c| c.port != 80));
    }

    #[test]
    fn no_workloads_is_an_error() {
        let policies: Vec<Value> = objects().into_iter().skip(2).collect();
        let e = plan(&policies, "pl-x-").unwrap_err();
        assert!(e.to_string().contains("no workloads"), "{e}");
    }
}
