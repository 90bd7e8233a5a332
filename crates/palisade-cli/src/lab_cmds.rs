//! `palisade lab ...`: the local Linux dataplane (see docs/lab.md).
//!
//! This module only parses, loads the store's snapshot, compiles the policy
//! once, hands both to `palisade-lab`, and prints. The hidden `__serve` and
//! `__probe` subcommands are the programs the lab runs inside its namespaces;
//! they live in this binary so a lab needs nothing but `palisade`.

use crate::cli::{Cli, LabArgs, LabCommand, RuntimeArg};
use crate::output::{Format, columns, outln, print};
use anyhow::{Context, Result, bail};
use palisade_core::policy::{Policy, PolicyOptions};
use palisade_lab::apply::{self, Lab};
use palisade_lab::progress::Reporter;
use palisade_lab::{Runtime, manifests, verify};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

fn lab(cli: &Cli) -> Result<Lab> {
    let exe = std::env::current_exe().context("cannot find the palisade binary")?;
    Ok(Lab::for_state(&crate::state::state_path(cli)?, exe))
}

fn snapshot_and_policy(cli: &Cli) -> Result<(palisade_core::Snapshot, Policy)> {
    let snapshot = crate::state::open(cli)?.snapshot()?;
    let policy = Policy::compile_with(&snapshot, &PolicyOptions::default());
    Ok((snapshot, policy))
}

/// The snapshot and the objects the lab runs: its rendered Deployments
/// and policies (`palisade_lab::rendered`).
fn snapshot_and_objects(cli: &Cli) -> Result<(palisade_core::Snapshot, Vec<serde_json::Value>)> {
    let snapshot = crate::state::open(cli)?.snapshot()?;
    let objects = palisade_lab::rendered::render(&snapshot)?;
    Ok((snapshot, objects))
}

/// What the lab could not model in the objects it runs.
fn print_notes(state: &palisade_lab::LabState) {
    for n in &state.notes {
        eprintln!("note: not modelled by the lab: {n}");
    }
}

/// Runs `palisade lab ...`: picks the handler of the subcommand.
pub fn run(cli: &Cli, args: &LabArgs) -> Result<ExitCode> {
    let reporter = Reporter::stderr(cli.output != Format::Table);
    match &args.command {
        LabCommand::Serve { spec } => palisade_lab::serve::serve_main(spec)?,
        LabCommand::Probe => palisade_lab::serve::probe_main()?,
        LabCommand::Up { runtime } => up(cli, *runtime, &reporter)?,
        LabCommand::Sync => sync(cli, &reporter)?,
        LabCommand::Verify {
            timeout,
            parallel,
            all,
            manifests,
            objects_only,
        } => {
            let timeout = parse_timeout(timeout)?;
            if let Some(path) = manifests {
                let packets = (!*objects_only).then_some((timeout, *parallel));
                return verify_manifests(cli.output, path, packets, &reporter);
            }
            return verify_lab(cli, timeout, *parallel, *all, &reporter);
        }
        LabCommand::Status => status(cli)?,
        LabCommand::Down { all } => down(cli, *all, &reporter)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `lab up`: namespaces, addresses, nftables and workloads from the store.
fn up(cli: &Cli, runtime: RuntimeArg, reporter: &Reporter) -> Result<()> {
    apply::check_host()?;
    let lab = lab(cli)?;
    let (snapshot, objects) = snapshot_and_objects(cli)?;
    let runtime = match runtime {
        RuntimeArg::Auto => None,
        RuntimeArg::Runsc => Some(Runtime::Runsc),
        RuntimeArg::Plain => Some(Runtime::Plain),
    };
    let started = std::time::Instant::now();
    let state = lab.up(&snapshot, &objects, runtime, &|p| reporter.event(p));
    reporter.finish();
    let state = state?;
    print_notes(&state);
    outln!(
        "lab {} up in {:.1}s: {} pods ({}), {} gateway(s), egress proxy and internet echo; state in {}",
        state.lab_id,
        started.elapsed().as_secs_f64(),
        state.pods.len(),
        runtime_summary(&state),
        state.gateways.len(),
        lab.dir.display()
    )?;
    Ok(())
}

/// `lab sync`: apply the store's changes to the running lab.
fn sync(cli: &Cli, reporter: &Reporter) -> Result<()> {
    apply::check_host()?;
    let lab = lab(cli)?;
    let (snapshot, objects) = snapshot_and_objects(cli)?;
    let result = lab.sync(&snapshot, &objects, &|p| reporter.event(p));
    reporter.finish();
    let (added, removed, state) = result?;
    print_notes(&state);
    outln!(
        "lab {} synced: {added} pods added, {removed} removed, {} running; nftables replaced",
        state.lab_id,
        state.pods.len()
    )?;
    Ok(())
}

/// `lab verify`: probe every pair, compare with the policy model (and the
/// rendered Cilium objects); failure on any mismatch.
fn verify_lab(
    cli: &Cli,
    timeout: Duration,
    parallel: usize,
    all: bool,
    reporter: &Reporter,
) -> Result<ExitCode> {
    apply::check_host()?;
    let lab = lab(cli)?;
    let state = lab.require()?;
    // What the packets cannot show (the IPv4 metadata address, ICMP, ...).
    print_notes(&state);
    let (snapshot, policy) = snapshot_and_policy(cli)?;
    let objects = palisade_lab::rendered::render(&snapshot)?;
    if !lab.in_sync(&state, &snapshot, &objects)? {
        eprintln!(
            "note: the store changed since the lab was last synced; expectations follow the store (run `palisade lab sync`)"
        );
    }
    let mut probes = verify::expectations(&state, &policy)?;
    // The objects the lab runs, so the second and third verdicts judge the
    // same objects.
    let objects = palisade_kube::eval::RenderedPolicy::from_objects(
        &snapshot,
        &palisade_lab::rendered::render_options(),
        &objects,
    );
    for u in objects.unsupported() {
        eprintln!("note: not evaluated: {u}");
    }
    verify::attach_objects(&mut probes, &objects)?;
    let report = verify::run(&lab, &probes, timeout, parallel, &|p| reporter.event(p));
    reporter.finish();
    let report = report?;
    verify::write_report(&lab.verify_path(), &report)?;
    print_report(cli.output, &report, all)?;
    let bad: Vec<_> = report.mismatches().collect();
    if let Some(first) = bad.first() {
        eprintln!(
            "error: {} of {} probes disagree with the policy model; first: {}",
            bad.len(),
            report.probes.len(),
            mismatch(first)
        );
        return Ok(ExitCode::FAILURE);
    }
    if cli.output == Format::Table {
        outln!(
            "all {} probes agree with the policy model (report: {})",
            report.probes.len(),
            lab.verify_path().display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--timeout`, between 1ms and 60s.
fn parse_timeout(timeout: &str) -> Result<Duration> {
    let parsed = humantime::parse_duration(timeout)
        .with_context(|| format!("invalid --timeout {timeout:?} (try 1500ms, 2s)"))?;
    if parsed.is_zero() || parsed > Duration::from_secs(60) {
        bail!("--timeout must be between 1ms and 60s");
    }
    Ok(parsed)
}

/// One disagreeing probe, for the error line.
fn mismatch(o: &verify::Outcome) -> String {
    format!(
        "{} -> {} port {}: expected {} ({}), observed {} ({})",
        endpoint(&o.from, o.from_pod.as_deref()),
        endpoint(&o.to, o.to_pod.as_deref()),
        o.port,
        verdict(o.expected),
        o.reason,
        verdict(o.observed),
        o.detail
    )
}

/// A probe's endpoint, with its pod when it has one: `acme/web [web-0]`.
fn endpoint(name: &impl std::fmt::Display, pod: Option<&str>) -> String {
    match pod {
        Some(p) => format!("{name} [{p}]"),
        None => name.to_string(),
    }
}

/// What `lab status -o json` prints. Fields in name order, as the JSON
/// object this replaced sorted its keys.
#[derive(Serialize)]
struct Status {
    /// Each tenant's egress, in the key order of a JSON value.
    egress: serde_json::Value,
    lab_id: String,
    runtime: String,
    started_at: String,
    synced_at: String,
    workloads: Vec<WorkloadRow>,
}

/// One row of `lab status`: a pod, a gateway, the egress proxy or the echo.
#[derive(Serialize)]
struct WorkloadRow {
    address: String,
    image: String,
    kind: &'static str,
    name: String,
    namespace: String,
    pid: u32,
    ports: Vec<u16>,
    running: bool,
    runtime: String,
    /// A pod's workload spec (in the key order of a JSON value); none for
    /// the lab's own processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    workload: Option<serde_json::Value>,
}

impl WorkloadRow {
    /// A process the lab runs itself (gateway, proxy, echo): plain runtime,
    /// no workload spec.
    fn builtin(
        kind: &'static str,
        name: &str,
        namespace: &str,
        address: impl ToString,
        port: u16,
        image: &str,
        pid: u32,
    ) -> Self {
        Self {
            address: address.to_string(),
            image: image.into(),
            kind,
            name: name.into(),
            namespace: namespace.into(),
            pid,
            ports: vec![port],
            running: apply::alive(pid),
            runtime: "plain".into(),
            workload: None,
        }
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.kind.into(),
            self.name.clone(),
            self.address.clone(),
            self.ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.runtime.clone(),
            self.pid.to_string(),
            if self.running { "running" } else { "exited" }.into(),
        ]
    }
}

/// Every process of the lab: pods, gateways, the egress proxy, the echo.
fn workload_rows(state: &palisade_lab::LabState) -> Result<Vec<WorkloadRow>> {
    use palisade_lab::plan::{ECHO_ADDR, HTTP_PORT, PROXY_ADDR};
    let mut rows = Vec::new();
    for p in &state.pods {
        rows.push(WorkloadRow {
            address: p.spec.addr.to_string(),
            image: p.spec.image.clone(),
            kind: "pod",
            name: format!("{}/{}", p.spec.tenant, p.spec.name),
            namespace: p.spec.netns.clone(),
            pid: p.pid,
            ports: p.spec.ports.clone(),
            running: apply::alive(p.pid),
            runtime: p.spec.runtime.to_string(),
            workload: Some(serde_json::to_value(&p.spec.workload)?),
        });
    }
    for g in &state.gateways {
        let (s, image) = (&g.spec, "built-in reverse proxy");
        rows.push(WorkloadRow::builtin(
            "gateway", &s.display, &s.netns, s.addr, HTTP_PORT, image, g.pid,
        ));
    }
    let infra = &state.infra;
    rows.push(WorkloadRow::builtin(
        "egress-proxy",
        "egress-proxy",
        &infra.proxy,
        PROXY_ADDR,
        state.proxy_port,
        "palisade proxy",
        state.proxy_pid,
    ));
    rows.push(WorkloadRow::builtin(
        "internet-echo",
        "internet",
        &infra.internet,
        ECHO_ADDR,
        HTTP_PORT,
        "built-in echo",
        state.echo_pid,
    ));
    Ok(rows)
}

/// `lab status`: what runs, with address, runtime and process.
fn status(cli: &Cli) -> Result<()> {
    let lab = lab(cli)?;
    let Some(state) = lab.load()? else {
        bail!("no lab is running for this state (start one with `palisade lab up`)");
    };
    let status = Status {
        egress: serde_json::to_value(&state.egress)?,
        lab_id: state.lab_id.clone(),
        runtime: state.runtime.to_string(),
        started_at: state.started_at.clone(),
        synced_at: state.synced_at.clone(),
        workloads: workload_rows(&state)?,
    };
    print(cli.output, &status, || {
        let header = vec![
            "KIND", "NAME", "ADDRESS", "PORTS", "RUNTIME", "PID", "STATE",
        ];
        (
            header,
            status.workloads.iter().map(WorkloadRow::cells).collect(),
        )
    })?;
    if cli.output == Format::Table {
        for e in &state.egress {
            let note = e.note.as_ref().map(|n| format!(" ({n})"));
            outln!(
                "tenant {}: egress {} via {}{}",
                e.tenant,
                e.ip,
                e.mode.as_str(),
                note.unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

/// `lab down`: remove this lab (every lab on the host with `all`).
fn down(cli: &Cli, all: bool, reporter: &Reporter) -> Result<()> {
    apply::check_host()?;
    let lab = lab(cli)?;
    let progress = |p| reporter.event(p);
    let mut removed = lab.down(&progress)?;
    if all {
        removed.extend(apply::down_all(&progress)?);
    }
    reporter.finish();
    outln!("lab down: removed {} namespaces", removed.len())?;
    Ok(())
}

/// `lab verify --manifests`: the manifests' workloads as lab pods behind
/// their policies, the matrix measured with packets (`packets`: timeout and
/// parallel agents) or, without, the evaluator's verdicts alone; what the
/// evaluator or the lab cannot model is printed as a warning. Exit 1 where
/// packets and objects disagree.
fn verify_manifests(
    format: Format,
    path: &std::path::Path,
    packets: Option<(Duration, usize)>,
    reporter: &Reporter,
) -> Result<ExitCode> {
    let objects = read_manifests(path)?;
    let plan = manifests::plan(&objects, "pl-manifests-")
        .with_context(|| format!("cannot run the manifests in {}", path.display()))?;
    let report = match packets {
        None => plan.report,
        Some((timeout, parallel)) => {
            apply::check_host().context(
                "sending packets needs a lab (`--objects-only` evaluates the manifests without one)",
            )?;
            let report = run_manifests(&objects, timeout, parallel, reporter);
            reporter.finish();
            report?
        }
    };
    for u in &report.unsupported {
        eprintln!("warning: not evaluated: {u}");
    }
    for n in report.notes.iter().filter(|_| report.packets) {
        eprintln!("note: not modelled by the lab: {n}");
    }
    print(format, &report, || {
        let header = vec![
            "FROM", "TO", "PORT", "OBJECTS", "PACKETS", "RESULT", "EGRESS", "INGRESS",
        ];
        (header, report.cells.iter().map(manifest_cells).collect())
    })?;
    let bad: Vec<_> = report.mismatches().collect();
    if let Some(first) = bad.first() {
        eprintln!(
            "error: {} of {} cells: the packets disagree with the objects; first: {} -> {} port {}: objects say {}, packets {}",
            bad.len(),
            report.cells.len(),
            first.from,
            first.to,
            first.port,
            verdict(first.verdict.allowed),
            first.detail.as_deref().unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    if report.packets && format == Format::Table {
        let probed = report.cells.iter().filter(|c| c.ok.is_some()).count();
        outln!(
            "packets agree with the objects in all {probed} probed cells ({} not probed)",
            report.cells.len() - probed
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the manifests' lab in a directory of its own (its own lab id, so
/// it never meets the store's lab or another run), removed afterwards
/// unless the run failed (its logs say why).
fn run_manifests(
    objects: &[serde_json::Value],
    timeout: Duration,
    parallel: usize,
    reporter: &Reporter,
) -> Result<manifests::ManifestReport> {
    let exe = std::env::current_exe().context("cannot find the palisade binary")?;
    let dir = std::env::temp_dir().join(format!("palisade-manifests-{}", std::process::id()));
    let lab = Lab { dir, exe };
    let plan = manifests::plan(objects, &lab.prefix())?;
    let report = manifests::run(&lab, plan, timeout, parallel, &|p| reporter.event(p))
        .with_context(|| format!("the lab's logs are kept in {}", lab.dir.display()))?;
    let _ = std::fs::remove_dir_all(&lab.dir);
    Ok(report)
}

/// One cell's row of the table.
fn manifest_cells(c: &manifests::Cell) -> Vec<String> {
    let proto = serde_json::to_value(c.protocol).ok();
    let proto = proto.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
    let (packets, result) = match (c.observed, c.ok) {
        (Some(seen), Some(ok)) => (verdict(seen), if ok { "ok" } else { "MISMATCH" }),
        _ => ("-", "not probed"),
    };
    vec![
        c.from.clone(),
        c.to.clone(),
        format!("{}/{proto}", c.port),
        verdict(c.verdict.allowed).into(),
        packets.into(),
        result.into(),
        c.verdict.egress.clone(),
        c.verdict.ingress.clone(),
    ]
}

/// Every document of `path` (a file, or the .yaml/.yml/.json files of a
/// directory in name order); `kind: List` items are unpacked.
fn read_manifests(path: &std::path::Path) -> Result<Vec<serde_json::Value>> {
    let files = if path.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("{} is not valid YAML", f.display()))?;
            match v.get("items").and_then(|i| i.as_array()) {
                Some(items) if v.get("kind").and_then(|k| k.as_str()) == Some("List") => {
                    out.extend(items.iter().cloned())
                }
                _ if v.is_null() => {}
                _ => out.push(v),
            }
        }
    }
    Ok(out)
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "blocked" }
}

fn runtime_summary(state: &palisade_lab::LabState) -> String {
    let runsc = state
        .pods
        .iter()
        .filter(|p| p.spec.runtime == Runtime::Runsc)
        .count();
    let plain = state.pods.len() - runsc;
    match (runsc, plain) {
        (0, _) => "plain processes".into(),
        (_, 0) => "all under gVisor".into(),
        _ => format!("{runsc} under gVisor, {plain} plain"),
    }
}

/// Prints the report: per (from, to, port) endpoint pair by default, every
/// probe with `all`, always every mismatch.
fn print_report(format: Format, report: &verify::Report, all: bool) -> Result<()> {
    if format != Format::Table {
        return print(format, report, || (vec![], vec![]));
    }
    let rows: Vec<Vec<String>> = report
        .probes
        .iter()
        .filter(|o| all || !o.ok)
        .map(probe_cells)
        .collect();
    if !all {
        outln!(
            "{}",
            columns(
                &[
                    "FROM", "TO", "PORT", "KIND", "EXPECTED", "AGREE", "RESULT", "RULE"
                ],
                pair_summary(report)
            )
        )?;
        if !rows.is_empty() {
            outln!("\nmismatches:")?;
        }
    }
    if !rows.is_empty() {
        outln!(
            "{}",
            columns(
                &[
                    "FROM", "TO", "PORT", "KIND", "EXPECTED", "OBSERVED", "RESULT", "RULE",
                    "DETAIL"
                ],
                rows
            )
        )?;
    }
    Ok(())
}

fn probe_kind(kind: verify::ProbeKind) -> &'static str {
    match kind {
        verify::ProbeKind::Direct => "direct",
        verify::ProbeKind::ViaProxy => "via proxy",
        verify::ProbeKind::ViaGateway => "via gateway",
    }
}

/// One probe's row of the table.
fn probe_cells(o: &verify::Outcome) -> Vec<String> {
    vec![
        endpoint(&o.from, o.from_pod.as_deref()),
        endpoint(&o.to, o.to_pod.as_deref()),
        o.port.to_string(),
        probe_kind(o.kind).into(),
        verdict(o.expected).into(),
        verdict(o.observed).into(),
        if o.ok { "ok" } else { "MISMATCH" }.into(),
        o.reason.clone(),
        o.detail.clone(),
    ]
}

/// One row per (from, to, port, kind): how many of its probes agree, with
/// the first probe's expectation and rule.
fn pair_summary(report: &verify::Report) -> Vec<Vec<String>> {
    // (from, to, port, kind) -> (probes, agreeing, first probe)
    let mut groups = std::collections::BTreeMap::new();
    for o in &report.probes {
        let key = (o.from.clone(), o.to.clone(), o.port, probe_kind(o.kind));
        let e = groups.entry(key).or_insert((0usize, 0usize, o));
        e.0 += 1;
        if o.ok {
            e.1 += 1;
        }
    }
    groups
        .into_iter()
        .map(|((from, to, port, kind), (n, ok, o))| {
            vec![
                from,
                to,
                port.to_string(),
                kind.into(),
                verdict(o.expected).into(),
                format!("{ok}/{n}"),
                if ok == n { "ok" } else { "MISMATCH" }.into(),
                o.reason.clone(),
            ]
        })
        .collect()
}
