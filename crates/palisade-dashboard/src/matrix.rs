//! The isolation matrix: deployments × deployments, each cell the policy
//! model's verdict on every port the server serves, and where the lab's
//! evidence disagrees with it.
//!
//! Verdicts come from [`Policy::allowed`], the same compiled model the
//! Kubernetes renderer and the lab translate, so the picture cannot drift
//! from what is enforced. When the lab has run `verify`, each probe brings
//! two more verdicts: what the rendered Cilium objects decide (naming the
//! object and rule) and what the packets did. A cell where either differs
//! from the model is a disagreement, and says which leg differs: the
//! objects point at the renderer, the dataplane at the lab's enforcement.
//! Pure: the report is passed in.

use crate::lab::{FileProbe, FileReport, ObjectsVerdict};
use palisade_core::{Endpoint, Policy, PortProto, Snapshot, TenantName, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;

/// What is known of the lab's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabState {
    /// No report: the lab has not run `verify` here.
    Absent,
    /// The last report.
    Present(FileReport),
    /// A report exists but could not be read.
    Unreadable(String),
}

/// The model's verdict on the ports a server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellState {
    /// Every served port allowed.
    Allowed,
    /// Some served ports allowed.
    Partial,
    /// Nothing allowed.
    Denied,
}

/// How the lab's evidence compares with the model, for a port or a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Agreement {
    /// The lab did not probe it.
    Unprobed,
    /// Model, objects and dataplane all allow.
    AgreeAllow,
    /// All three deny.
    AgreeDeny,
    /// All three agree; some ports are allowed, others denied (cells only).
    AgreePartial,
    /// The objects or the dataplane decided otherwise than the model.
    Disagree,
}

/// A verdict that differs from the policy model's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Leg {
    /// The rendered Cilium objects (a translation fault in the renderer).
    Objects,
    /// What the packets did in the lab.
    Dataplane,
}

/// Whether a lab report was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabStatus {
    /// The lab has not run `verify` here.
    Absent,
    /// A report was read.
    Present,
    /// A report exists but could not be read.
    Unreadable,
}

/// `/api/matrix`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixView {
    /// The tenant shown, or `null` for every deployment.
    pub tenant: Option<String>,
    /// Row and column labels, in order (`tenant/deployment`).
    pub endpoints: Vec<String>,
    /// `endpoints.len()²` cells, row-major: row = client, column = server.
    pub cells: Vec<Cell>,
    /// Cell counts by state.
    pub summary: Summary,
    /// The lab report, if any.
    pub lab: LabView,
}

/// Counts of cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Every served port allowed.
    pub allowed: usize,
    /// Some ports allowed.
    pub partial: usize,
    /// Nothing allowed.
    pub denied: usize,
    /// Cells where the objects or the dataplane differ from the model.
    pub disagreements: usize,
    /// Of those, cells where the objects differ.
    pub objects_differ: usize,
    /// Of those, cells where the dataplane differs.
    pub dataplane_differs: usize,
}

/// One (client, server) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// Client.
    pub from: String,
    /// Server.
    pub to: String,
    /// The model's verdict on the served ports.
    pub state: CellState,
    /// How the lab's evidence compares with it.
    pub agreement: Agreement,
    /// The legs that differ from the model on some port.
    pub differs: Vec<Leg>,
    /// Per-port verdicts: the server's ports, plus any other port the lab probed.
    pub ports: Vec<PortCell>,
}

/// The verdicts on one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortCell {
    /// TCP port.
    pub port: u16,
    /// The model's verdict.
    pub allowed: bool,
    /// The model's reason (`same deployment`, `allow rule ...`, `default deny`).
    pub reason: String,
    /// What the rendered objects decide, if the lab evaluated them; a
    /// disagreeing probe's verdict when pod pairs differ.
    pub objects: Option<bool>,
    /// The object and rule that decided each direction (`egress ...;
    /// ingress ...`), when the report names them.
    pub objects_rule: Option<String>,
    /// What the dataplane did, if the lab probed this port; a disagreeing
    /// probe's observation when pod pairs differ.
    pub observed: Option<bool>,
    /// What the lab expected when it ran; differs from `allowed` when the
    /// state changed since.
    pub lab_expected: Option<bool>,
    /// How many lab probes (pod pairs) tested this port.
    pub lab_probes: usize,
    /// How the lab's evidence compares with the model.
    pub agreement: Agreement,
    /// The legs that differ from the model.
    pub differs: Vec<Leg>,
}

/// Summary of the lab report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabView {
    /// Whether a report was read.
    pub status: LabStatus,
    /// When the lab ran (RFC 3339).
    pub generated_at: Option<String>,
    /// Probes in the report.
    pub probes: usize,
    /// Probes whose (from, to) is a cell of this matrix.
    pub probes_in_view: usize,
    /// Probes in the whole report where the dataplane or the objects
    /// differ from what the lab expected.
    pub report_disagreements: usize,
    /// Why the report could not be read.
    pub error: Option<String>,
}

/// (from, to) -> port -> every probe of it (one per pod pair).
type Probed<'a> = BTreeMap<(&'a str, &'a str), BTreeMap<u16, Vec<&'a FileProbe>>>;

/// The matrix of `tenant`'s deployments (all deployments when `None`).
pub fn build(
    snapshot: &Snapshot,
    policy: &Policy,
    tenant: Option<&TenantName>,
    lab: &LabState,
) -> MatrixView {
    let deployments: Vec<_> = snapshot
        .deployments
        .iter()
        .filter(|d| tenant.is_none_or(|t| &d.tenant == t))
        .collect();
    let endpoints: Vec<(Endpoint, String)> = deployments
        .iter()
        .map(|d| Endpoint::deployment(&d.tenant, &d.name))
        .map(|e| {
            let label = e.to_string();
            (e, label)
        })
        .collect();
    let probed = probes_by_pair(lab);
    let mut summary = Summary::default();
    let mut probes_in_view = 0;
    let mut cells = Vec::with_capacity(endpoints.len() * endpoints.len());
    for from in &endpoints {
        for (to, server) in endpoints.iter().zip(&deployments) {
            let seen = probed.get(&(from.1.as_str(), to.1.as_str()));
            probes_in_view += seen.map_or(0, |m| m.values().map(Vec::len).sum());
            let served: Vec<u16> = server.ports.iter().map(|p| p.get()).collect();
            let c = cell(policy, from, to, &served, seen);
            summary.count(&c);
            cells.push(c);
        }
    }
    MatrixView {
        tenant: tenant.map(ToString::to_string),
        endpoints: endpoints.into_iter().map(|(_, l)| l).collect(),
        cells,
        summary,
        lab: lab_view(lab, probes_in_view),
    }
}

fn probes_by_pair(lab: &LabState) -> Probed<'_> {
    let mut out: Probed<'_> = BTreeMap::new();
    if let LabState::Present(report) = lab {
        for p in &report.probes {
            out.entry((p.from.as_str(), p.to.as_str()))
                .or_default()
                .entry(p.port)
                .or_default()
                .push(p);
        }
    }
    out
}

/// One cell: every port the server serves, and every other port probed.
fn cell(
    policy: &Policy,
    (from, from_label): &(Endpoint, String),
    (to, to_label): &(Endpoint, String),
    served: &[u16],
    probed: Option<&BTreeMap<u16, Vec<&FileProbe>>>,
) -> Cell {
    let mut ports: BTreeMap<u16, PortCell> = BTreeMap::new();
    let extra = probed.into_iter().flat_map(|m| m.keys().copied());
    for port in served.iter().copied().chain(extra) {
        if ports.contains_key(&port) {
            continue;
        }
        let seen = probed
            .and_then(|m| m.get(&port))
            .map_or(&[][..], Vec::as_slice);
        ports.insert(port, port_cell(port, verdict(policy, from, to, port), seen));
    }
    let ports: Vec<PortCell> = ports.into_values().collect();
    // The state is judged on the ports the server serves, so a probe of
    // an unserved port does not turn "allowed" partial.
    let served_cells = ports.iter().filter(|p| served.contains(&p.port));
    let (open, all) = served_cells.fold((0, 0), |(o, a), p| (o + usize::from(p.allowed), a + 1));
    let state = match open {
        0 => CellState::Denied,
        n if n == all => CellState::Allowed,
        _ => CellState::Partial,
    };
    let mut differs: Vec<Leg> = ports
        .iter()
        .flat_map(|p| p.differs.iter().copied())
        .collect();
    differs.sort_unstable();
    differs.dedup();
    Cell {
        from: from_label.clone(),
        to: to_label.clone(),
        state,
        agreement: cell_agreement(&ports),
        differs,
        ports,
    }
}

fn verdict(policy: &Policy, from: &Endpoint, to: &Endpoint, port: u16) -> Verdict {
    match palisade_core::Port::try_from(port) {
        Ok(p) => policy.allowed(from, to, PortProto::tcp(p)),
        // Port 0 cannot be served; nothing allows it.
        Err(_) => Verdict {
            allowed: false,
            reason: palisade_core::Reason::DefaultDeny,
        },
    }
}

/// The three verdicts on one port. One pod pair disagreeing with the
/// model is a disagreement, whatever the others did.
fn port_cell(port: u16, model: Verdict, seen: &[&FileProbe]) -> PortCell {
    let allowed = model.allowed;
    let dataplane_off = seen.iter().find(|p| p.observed != allowed);
    let verdicts = seen.iter().filter_map(|p| p.objects.as_ref());
    let objects_off = verdicts.clone().find(|o| o.allowed != allowed);
    let objects = objects_off.or_else(|| verdicts.clone().next());
    let differs: Vec<Leg> = [
        objects_off.map(|_| Leg::Objects),
        dataplane_off.map(|_| Leg::Dataplane),
    ]
    .into_iter()
    .flatten()
    .collect();
    let agreement = match (seen.is_empty(), differs.is_empty(), allowed) {
        (true, ..) => Agreement::Unprobed,
        (false, false, _) => Agreement::Disagree,
        (false, true, true) => Agreement::AgreeAllow,
        (false, true, false) => Agreement::AgreeDeny,
    };
    PortCell {
        port,
        allowed,
        reason: model.reason.to_string(),
        objects: objects.map(|o| o.allowed),
        objects_rule: objects.and_then(rule_of),
        observed: seen
            .first()
            .map(|p| dataplane_off.map_or(p.observed, |d| d.observed)),
        lab_expected: seen.first().map(|p| p.expected),
        lab_probes: seen.len(),
        agreement,
        differs,
    }
}

/// `egress ...; ingress ...`, or `None` for a report that names no rule.
fn rule_of(o: &ObjectsVerdict) -> Option<String> {
    (!o.egress.is_empty() || !o.ingress.is_empty())
        .then(|| format!("egress {}; ingress {}", o.egress, o.ingress))
}

fn cell_agreement(ports: &[PortCell]) -> Agreement {
    let probed: Vec<&PortCell> = ports
        .iter()
        .filter(|p| p.agreement != Agreement::Unprobed)
        .collect();
    if probed.is_empty() {
        Agreement::Unprobed
    } else if probed.iter().any(|p| p.agreement == Agreement::Disagree) {
        Agreement::Disagree
    } else if probed.iter().all(|p| p.allowed) {
        Agreement::AgreeAllow
    } else if probed.iter().all(|p| !p.allowed) {
        Agreement::AgreeDeny
    } else {
        Agreement::AgreePartial
    }
}

impl Summary {
    fn count(&mut self, c: &Cell) {
        match c.state {
            CellState::Allowed => self.allowed += 1,
            CellState::Partial => self.partial += 1,
            CellState::Denied => self.denied += 1,
        }
        if c.agreement == Agreement::Disagree {
            self.disagreements += 1;
        }
        self.objects_differ += usize::from(c.differs.contains(&Leg::Objects));
        self.dataplane_differs += usize::from(c.differs.contains(&Leg::Dataplane));
    }
}

fn lab_view(lab: &LabState, probes_in_view: usize) -> LabView {
    let empty = |status, error| LabView {
        status,
        generated_at: None,
        probes: 0,
        probes_in_view: 0,
        report_disagreements: 0,
        error,
    };
    match lab {
        LabState::Absent => empty(LabStatus::Absent, None),
        LabState::Unreadable(e) => empty(LabStatus::Unreadable, Some(e.clone())),
        LabState::Present(r) => LabView {
            status: LabStatus::Present,
            generated_at: Some(r.generated_at.clone()),
            probes: r.probes.len(),
            probes_in_view,
            report_disagreements: r
                .probes
                .iter()
                .filter(|p| {
                    p.observed != p.expected
                        || p.objects.as_ref().is_some_and(|o| o.allowed != p.expected)
                })
                .count(),
            error: None,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use palisade_core::allocator::Timestamp;
    use palisade_core::{AllowRule, Deployment, Pool, Tenant};
    use std::time::Duration;

    fn snapshot() -> Snapshot {
        let pool = Pool::new(
            Pool::parse_cidr("fd00:1::/48").unwrap(),
            "96".parse().unwrap(),
            Duration::ZERO,
        )
        .unwrap();
        let t = |n: &str| Tenant::with_defaults(n.parse().unwrap(), Timestamp(0));
        let d = |tenant: &str, name: &str, i: u128, ports: &[u16]| Deployment {
            tenant: tenant.parse().unwrap(),
            name: name.parse().unwrap(),
            image: "nginx:alpine".parse().unwrap(),
            replicas: "1".parse().unwrap(),
            ports: ports.iter().map(|p| (*p).try_into().unwrap()).collect(),
            subnet: pool.subnet(i),
            labels: Default::default(),
            workload: Default::default(),
            created_at: Timestamp(0),
        };
        Snapshot {
            tenants: vec![t("acme"), t("globex")],
            deployments: vec![
                d("acme", "api", 0, &[80, 8080]),
                d("acme", "db", 1, &[5432]),
                d("acme", "web", 2, &[80]),
                d("globex", "web", 3, &[80]),
            ],
            gateways: vec![],
            allow_rules: vec![
                AllowRule {
                    tenant: "acme".parse().unwrap(),
                    from: "api".parse().unwrap(),
                    to: "db".parse().unwrap(),
                    port: Some(5432.try_into().unwrap()),
                },
                AllowRule {
                    tenant: "acme".parse().unwrap(),
                    from: "web".parse().unwrap(),
                    to: "api".parse().unwrap(),
                    port: Some(80.try_into().unwrap()),
                },
            ],
            pool,
        }
    }

    fn cell<'a>(m: &'a MatrixView, from: &str, to: &str) -> &'a Cell {
        m.cells
            .iter()
            .find(|c| c.from == from && c.to == to)
            .unwrap()
    }

    #[test]
    fn cells_follow_the_policy_model() {
        let s = snapshot();
        let policy = Policy::compile(&s);
        let m = build(
            &s,
            &policy,
            Some(&"acme".parse().unwrap()),
            &LabState::Absent,
        );
        assert_eq!(m.endpoints, ["acme/api", "acme/db", "acme/web"]);
        assert_eq!(m.cells.len(), 9);
        assert_eq!(cell(&m, "acme/api", "acme/api").state, CellState::Allowed);
        assert_eq!(
            cell(&m, "acme/api", "acme/api").ports[0].reason,
            "same deployment"
        );
        assert_eq!(cell(&m, "acme/api", "acme/db").state, CellState::Allowed);
        assert_eq!(cell(&m, "acme/db", "acme/api").state, CellState::Denied);
        assert_eq!(
            cell(&m, "acme/db", "acme/api").ports[0].reason,
            "default deny"
        );
        // web -> api only on 80 of api's 80 and 8080.
        assert_eq!(cell(&m, "acme/web", "acme/api").state, CellState::Partial);
        assert_eq!(m.summary.allowed + m.summary.partial + m.summary.denied, 9);
        assert_eq!(m.lab.status, LabStatus::Absent);
        // Every cell agrees with Policy::allowed on every port.
        for c in &m.cells {
            for p in &c.ports {
                let (ft, fd) = c.from.split_once('/').unwrap();
                let (tt, td) = c.to.split_once('/').unwrap();
                let v = policy.allowed(
                    &Endpoint::deployment(&ft.parse().unwrap(), &fd.parse().unwrap()),
                    &Endpoint::deployment(&tt.parse().unwrap(), &td.parse().unwrap()),
                    PortProto::tcp(p.port.try_into().unwrap()),
                );
                assert_eq!(v.allowed, p.allowed, "{c:?}");
            }
        }
    }

    #[test]
    fn all_tenants_cross_tenant_is_denied() {
        let s = snapshot();
        let m = build(&s, &Policy::compile(&s), None, &LabState::Absent);
        assert_eq!(m.cells.len(), 16);
        assert_eq!(cell(&m, "acme/web", "globex/web").state, CellState::Denied);
        assert_eq!(cell(&m, "globex/web", "acme/web").state, CellState::Denied);
    }

    fn probe(from: &str, to: &str, port: u16, expected: bool, observed: bool) -> FileProbe {
        FileProbe {
            from: from.into(),
            to: to.into(),
            port,
            expected,
            observed,
            reason: String::new(),
            objects: None,
        }
    }

    fn port(c: &Cell, port: u16) -> &PortCell {
        c.ports.iter().find(|p| p.port == port).unwrap()
    }

    #[test]
    fn dataplane_observations_are_laid_over_and_disagreements_flagged() {
        let s = snapshot();
        let report = FileReport {
            generated_at: "2026-11-25T12:00:00Z".into(),
            probes: vec![
                probe("acme/api", "acme/db", 5432, true, true),
                // The dataplane let through what the model denies.
                probe("acme/db", "acme/api", 80, false, true),
                // An unserved port, probed to confirm denial.
                probe("acme/web", "acme/db", 22, false, false),
                probe("globex/web", "acme/web", 80, false, false),
                // Two pod pairs: one agrees, the other does not.
                probe("acme/web", "acme/api", 8080, false, false),
                probe("acme/web", "acme/api", 8080, false, true),
            ],
        };
        let m = build(
            &s,
            &Policy::compile(&s),
            Some(&"acme".parse().unwrap()),
            &LabState::Present(report),
        );
        assert_eq!(
            cell(&m, "acme/api", "acme/db").agreement,
            Agreement::AgreeAllow
        );
        let bad = cell(&m, "acme/db", "acme/api");
        assert_eq!(bad.agreement, Agreement::Disagree);
        assert_eq!(bad.differs, [Leg::Dataplane]);
        assert_eq!(bad.state, CellState::Denied);
        let p80 = port(bad, 80);
        assert!(p80.observed == Some(true) && !p80.allowed);
        assert_eq!(p80.agreement, Agreement::Disagree);
        // db -> api 8080 was not probed.
        assert_eq!(port(bad, 8080).agreement, Agreement::Unprobed);
        let web_db = cell(&m, "acme/web", "acme/db");
        assert_eq!(web_db.ports.len(), 2, "5432 served, 22 probed");
        assert_eq!(web_db.agreement, Agreement::AgreeDeny);
        assert_eq!(
            cell(&m, "acme/web", "acme/web").agreement,
            Agreement::Unprobed
        );
        let pods = cell(&m, "acme/web", "acme/api");
        assert_eq!(pods.agreement, Agreement::Disagree);
        let p8080 = port(pods, 8080);
        assert_eq!((p8080.lab_probes, p8080.observed), (2, Some(true)));
        assert_eq!(m.summary.disagreements, 2);
        assert_eq!(m.summary.dataplane_differs, 2);
        assert_eq!(m.summary.objects_differ, 0);
        assert_eq!(m.lab.probes, 6);
        assert_eq!(m.lab.probes_in_view, 5);
        assert_eq!(m.lab.report_disagreements, 2);
    }

    /// The objects' verdict is the third leg: a rendered object that allows
    /// what the model denies is a disagreement naming the object and rule,
    /// even where the packets did what the model says.
    #[test]
    fn objects_verdicts_are_a_leg_of_their_own_and_name_the_rule() {
        let s = snapshot();
        let rule = "allow by CiliumNetworkPolicy tenant-acme/deployment-web spec.ingress[1]";
        let objects = |allowed: bool, ingress: &str| ObjectsVerdict {
            allowed,
            egress: "no-policy".into(),
            ingress: ingress.into(),
        };
        let with = |mut p: FileProbe, o: ObjectsVerdict| {
            p.objects = Some(o);
            p
        };
        let report = FileReport {
            generated_at: "2026-11-25T12:00:00Z".into(),
            probes: vec![
                // All three allow.
                with(
                    probe("acme/api", "acme/db", 5432, true, true),
                    objects(
                        true,
                        "allow by CiliumNetworkPolicy tenant-acme/deployment-db spec.ingress[0]",
                    ),
                ),
                // The objects allow what the model denies; the packets agree with the model.
                with(
                    probe("acme/db", "acme/web", 80, false, false),
                    objects(true, rule),
                ),
                // Objects and packets both differ.
                with(
                    probe("acme/db", "acme/api", 80, false, true),
                    objects(true, rule),
                ),
                // web -> api: 80 allowed, 8080 denied, all agree.
                with(
                    probe("acme/web", "acme/api", 80, true, true),
                    objects(true, "allow"),
                ),
                with(
                    probe("acme/web", "acme/api", 8080, false, false),
                    ObjectsVerdict {
                        allowed: false,
                        egress: String::new(),
                        ingress: String::new(),
                    },
                ),
            ],
        };
        let m = build(
            &s,
            &Policy::compile(&s),
            Some(&"acme".parse().unwrap()),
            &LabState::Present(report),
        );
        let good = cell(&m, "acme/api", "acme/db");
        assert_eq!(good.agreement, Agreement::AgreeAllow);
        assert_eq!(port(good, 5432).objects, Some(true));
        let objects_only = cell(&m, "acme/db", "acme/web");
        assert_eq!(objects_only.agreement, Agreement::Disagree);
        assert_eq!(objects_only.differs, [Leg::Objects]);
        let p80 = port(objects_only, 80);
        assert_eq!(
            (p80.allowed, p80.objects, p80.observed),
            (false, Some(true), Some(false))
        );
        assert_eq!(
            p80.objects_rule.as_deref(),
            Some(format!("egress no-policy; ingress {rule}").as_str())
        );
        let both = cell(&m, "acme/db", "acme/api");
        assert_eq!(both.differs, [Leg::Objects, Leg::Dataplane]);
        let mixed = cell(&m, "acme/web", "acme/api");
        assert_eq!(mixed.state, CellState::Partial);
        assert_eq!(mixed.agreement, Agreement::AgreePartial);
        // An old report's bare boolean names no rule.
        let old = port(mixed, 8080);
        assert_eq!(
            (old.objects, old.objects_rule.as_deref()),
            (Some(false), None)
        );
        assert_eq!(m.summary.disagreements, 2);
        assert_eq!(m.summary.objects_differ, 2);
        assert_eq!(m.summary.dataplane_differs, 1);
        assert_eq!(m.lab.report_disagreements, 2);
    }

    /// What the JSON API says: states are kebab-case words.
    #[test]
    fn states_serialise_as_words() {
        let json = |v: serde_json::Result<String>| v.unwrap();
        assert_eq!(
            json(serde_json::to_string(&CellState::Partial)),
            r#""partial""#
        );
        assert_eq!(
            json(serde_json::to_string(&Agreement::AgreeDeny)),
            r#""agree-deny""#
        );
        assert_eq!(
            json(serde_json::to_string(&Leg::Dataplane)),
            r#""dataplane""#
        );
        assert_eq!(
            json(serde_json::to_string(&LabStatus::Unreadable)),
            r#""unreadable""#
        );
    }
}
