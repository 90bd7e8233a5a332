//! The isolation matrix: deployments × deployments, each cell the policy
//! model's verdict on every port the server serves.
//!
//! Verdicts come from [`Policy::allowed`], the same compiled model the
//! Kubernetes renderer and the lab translate, so the picture cannot drift
//! from what is enforced. When the lab has run `verify`, its observed
//! results are laid over the cells and any disagreement with the model is a
//! mismatch. Pure: the report is passed in.

use crate::lab::VerifyReport;
use palisade_core::{Endpoint, Policy, PortProto, Snapshot, TenantName};
use serde::Serialize;
use std::collections::BTreeMap;

/// What is known of the lab's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabState {
    /// No report: the lab has not run `verify` here.
    Absent,
    /// The last report.
    Present(VerifyReport),
    /// A report exists but could not be read.
    Unreadable(String),
}

/// Port -> every (lab expected, lab observed) for one (from, to): a
/// deployment with several pods is probed once per pod pair.
type Observations = BTreeMap<u16, Vec<(bool, bool)>>;

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
    /// Cells where the lab observed something other than the model's verdict.
    pub mismatches: usize,
}

/// One (client, server) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// Client.
    pub from: String,
    /// Server.
    pub to: String,
    /// `allowed`, `partial` or `denied`.
    pub state: &'static str,
    /// `none` (not probed), `match` or `mismatch`.
    pub observed: &'static str,
    /// Per-port verdicts: the server's ports, plus any other port the lab probed.
    pub ports: Vec<PortCell>,
}

/// The verdict on one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortCell {
    /// TCP port.
    pub port: u16,
    /// The model's verdict.
    pub allowed: bool,
    /// The model's reason (`same deployment`, `allow rule ...`, `default deny`).
    pub reason: String,
    /// What the lab observed, if it probed this port.
    pub observed: Option<bool>,
    /// What the lab expected when it ran; differs from `allowed` when the
    /// state changed since.
    pub lab_expected: Option<bool>,
    /// How many lab probes (pod pairs) tested this port.
    pub lab_probes: usize,
    /// Some probe observed other than the model's verdict; `observed` is
    /// then the disagreeing observation.
    pub mismatch: bool,
}

/// Summary of the lab report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabView {
    /// `absent`, `present` or `unreadable`.
    pub status: &'static str,
    /// When the lab ran (RFC 3339).
    pub generated_at: Option<String>,
    /// Probes in the report.
    pub probes: usize,
    /// Probes whose (from, to) is a cell of this matrix.
    pub probes_in_view: usize,
    /// Probes in the whole report where observed ≠ the lab's expectation.
    pub report_mismatches: usize,
    /// Why the report could not be read.
    pub error: Option<String>,
}

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
    let endpoints: Vec<Endpoint> = deployments
        .iter()
        .map(|d| Endpoint::deployment(&d.tenant, &d.name))
        .collect();
    let labels: Vec<String> = endpoints.iter().map(ToString::to_string).collect();

    // (from, to) -> port -> every probe's (expected, observed).
    let mut probes: BTreeMap<(&str, &str), Observations> = BTreeMap::new();
    if let LabState::Present(report) = lab {
        for p in &report.probes {
            probes
                .entry((p.from.as_str(), p.to.as_str()))
                .or_default()
                .entry(p.port)
                .or_default()
                .push((p.expected, p.observed));
        }
    }

    let mut summary = Summary::default();
    let mut probes_in_view = 0;
    let mut cells = Vec::with_capacity(endpoints.len() * endpoints.len());
    for (from, from_label) in endpoints.iter().zip(&labels) {
        for ((to, to_label), server) in endpoints.iter().zip(&labels).zip(&deployments) {
            let probed = probes.get(&(from_label.as_str(), to_label.as_str()));
            let mut ports: BTreeMap<u16, PortCell> = BTreeMap::new();
            let served = server.ports.iter().map(|p| p.get());
            let extra = probed.into_iter().flat_map(|m| m.keys().copied());
            for port in served.chain(extra) {
                if ports.contains_key(&port) {
                    continue;
                }
                let verdict = match palisade_core::Port::try_from(port) {
                    Ok(p) => policy.allowed(from, to, PortProto::tcp(p)),
                    // Port 0 cannot be served; nothing allows it.
                    Err(_) => palisade_core::Verdict {
                        allowed: false,
                        reason: palisade_core::Reason::DefaultDeny,
                    },
                };
                let seen = probed
                    .and_then(|m| m.get(&port))
                    .map_or(&[][..], Vec::as_slice);
                // One pod pair disagreeing with the model is a mismatch,
                // whatever the others did.
                let mismatch = seen.iter().any(|(_, o)| *o != verdict.allowed);
                ports.insert(
                    port,
                    PortCell {
                        port,
                        allowed: verdict.allowed,
                        reason: verdict.reason.to_string(),
                        observed: (!seen.is_empty()).then_some(verdict.allowed != mismatch),
                        lab_expected: seen.first().map(|(e, _)| *e),
                        lab_probes: seen.len(),
                        mismatch,
                    },
                );
            }
            let ports: Vec<PortCell> = ports.into_values().collect();
            // The state is judged on the ports the server serves, so a
            // probe of an unserved port does not turn "allowed" partial.
            let served_cells: Vec<&PortCell> = ports
                .iter()
                .filter(|p| server.ports.iter().any(|s| s.get() == p.port))
                .collect();
            let open = served_cells.iter().filter(|p| p.allowed).count();
            let state = if open == 0 {
                summary.denied += 1;
                "denied"
            } else if open == served_cells.len() {
                summary.allowed += 1;
                "allowed"
            } else {
                summary.partial += 1;
                "partial"
            };
            let observed = if probed.is_none() {
                "none"
            } else if ports.iter().any(|p| p.mismatch) {
                summary.mismatches += 1;
                "mismatch"
            } else {
                "match"
            };
            probes_in_view += probed.map_or(0, |m| m.values().map(Vec::len).sum());
            cells.push(Cell {
                from: from_label.clone(),
                to: to_label.clone(),
                state,
                observed,
                ports,
            });
        }
    }

    let lab = match lab {
        LabState::Absent => LabView {
            status: "absent",
            generated_at: None,
            probes: 0,
            probes_in_view: 0,
            report_mismatches: 0,
            error: None,
        },
        LabState::Present(r) => LabView {
            status: "present",
            generated_at: Some(r.generated_at.clone()),
            probes: r.probes.len(),
            probes_in_view,
            report_mismatches: r.probes.iter().filter(|p| p.expected != p.observed).count(),
            error: None,
        },
        LabState::Unreadable(e) => LabView {
            status: "unreadable",
            generated_at: None,
            probes: 0,
            probes_in_view: 0,
            report_mismatches: 0,
            error: Some(e.clone()),
        },
    };
    MatrixView {
        tenant: tenant.map(ToString::to_string),
        endpoints: labels,
        cells,
        summary,
        lab,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lab::Probe;
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
        assert_eq!(cell(&m, "acme/api", "acme/api").state, "allowed");
        assert_eq!(
            cell(&m, "acme/api", "acme/api").ports[0].reason,
            "same deployment"
        );
        assert_eq!(cell(&m, "acme/api", "acme/db").state, "allowed");
        assert_eq!(cell(&m, "acme/db", "acme/api").state, "denied");
        assert_eq!(
            cell(&m, "acme/db", "acme/api").ports[0].reason,
            "default deny"
        );
        // web -> api only on 80 of api's 80 and 8080.
        assert_eq!(cell(&m, "acme/web", "acme/api").state, "partial");
        assert_eq!(m.summary.allowed + m.summary.partial + m.summary.denied, 9);
        assert_eq!(m.lab.status, "absent");
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
        assert_eq!(cell(&m, "acme/web", "globex/web").state, "denied");
        assert_eq!(cell(&m, "globex/web", "acme/web").state, "denied");
    }

    #[test]
    fn lab_observations_are_laid_over_and_mismatches_flagged() {
        let s = snapshot();
        let probe = |from: &str, to: &str, port, expected, observed| Probe {
            from: from.into(),
            to: to.into(),
            port,
            expected,
            observed,
            reason: String::new(),
        };
        let report = VerifyReport {
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
        assert_eq!(cell(&m, "acme/api", "acme/db").observed, "match");
        let bad = cell(&m, "acme/db", "acme/api");
        assert_eq!(bad.observed, "mismatch");
        assert_eq!(bad.state, "denied");
        let p80 = bad.ports.iter().find(|p| p.port == 80).unwrap();
        assert!(p80.mismatch && p80.observed == Some(true) && !p80.allowed);
        let web_db = cell(&m, "acme/web", "acme/db");
        assert_eq!(web_db.ports.len(), 2, "5432 served, 22 probed");
        assert_eq!(web_db.observed, "match");
        assert_eq!(cell(&m, "acme/web", "acme/web").observed, "none");
        let pods = cell(&m, "acme/web", "acme/api");
        assert_eq!(pods.observed, "mismatch");
        let p8080 = pods.ports.iter().find(|p| p.port == 8080).unwrap();
        assert_eq!((p8080.lab_probes, p8080.observed), (2, Some(true)));
        assert_eq!(m.summary.mismatches, 2);
        assert_eq!(m.lab.probes, 6);
        assert_eq!(m.lab.probes_in_view, 5);
        assert_eq!(m.lab.report_mismatches, 2);
    }
}
