//! `palisade lab ...`: the local Linux dataplane (see docs/lab.md).
//!
//! This module only parses, loads the store's snapshot, compiles the policy
//! once, hands both to `palisade-lab`, and prints. The hidden `__serve` and
//! `__probe` subcommands are the programs the lab runs inside its namespaces;
//! they live in this binary so a lab needs nothing but `palisade`.

use crate::cli::Cli;
use crate::output::{Format, columns, print};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use palisade_core::policy::{Policy, PolicyOptions};
use palisade_lab::apply::{self, Lab};
use palisade_lab::progress::Reporter;
use palisade_lab::{Runtime, verify};
use std::process::ExitCode;
use std::time::Duration;

/// `palisade lab`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sudo palisade lab up                 # namespaces, addresses, nftables, workloads\n  \
    sudo palisade lab verify             # the connectivity matrix against the policy model\n  \
    sudo palisade lab sync               # after create/delete/allow: apply the change\n  \
    sudo palisade lab status\n  \
    sudo palisade lab down               # removes everything the lab created\n\
    Needs Linux and root. See docs/lab.md.")]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

/// Which runtime pods use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// gVisor when `runsc` works on this host, else plain.
    Auto,
    /// gVisor (`runsc --rootless do`); a pod it cannot start falls back to plain.
    Runsc,
    /// Plain processes in the pod namespaces.
    Plain,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create the lab from the store: namespaces, addresses, nftables, workloads.
    Up {
        /// Pod runtime.
        #[arg(long, value_enum, default_value_t = RuntimeArg::Auto)]
        runtime: RuntimeArg,
    },
    /// Apply store changes to the running lab (pods added/removed, rules replaced atomically).
    Sync,
    /// Probe every pair and compare with the policy model; exits 1 on any mismatch.
    #[command(after_help = "Writes the report to <lab dir>/verify.json as well.\n\
                            Example: sudo palisade lab verify -o json | jq '.probes[] | select(.ok == false)'")]
    Verify {
        /// Connect timeout per probe (a blocked probe takes this long).
        #[arg(long, default_value = "1500ms")]
        timeout: String,
        /// Probe agents (one per source namespace) running at once.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        /// Print every probe, not only a summary per pair of endpoints.
        #[arg(long)]
        all: bool,
        /// Instead of probing the lab: evaluate the Cilium policies in these
        /// manifests (a file, or a directory of .yaml/.yml/.json files) on the
        /// workloads they define, and print the reachability matrix.
        #[arg(long, value_name = "PATH")]
        manifests: Option<std::path::PathBuf>,
    },
    /// What runs: pods with their address, runtime and process.
    Status,
    /// Remove every namespace, link, rule and process of this lab (idempotent).
    Down {
        /// Remove every lab on this host (all `pl-` namespaces), not only this state's.
        #[arg(long)]
        all: bool,
    },
    /// (internal) Run a workload inside a lab namespace.
    #[command(name = "__serve", hide = true)]
    Serve {
        /// The workload spec (JSON).
        spec: String,
    },
    /// (internal) Run probes from inside a lab namespace (JSON on stdin).
    #[command(name = "__probe", hide = true)]
    Probe,
}

fn lab(cli: &Cli) -> Result<Lab> {
    let exe = std::env::current_exe().context("cannot find the palisade binary")?;
    Ok(Lab::for_state(&crate::state_path(cli)?, exe))
}

fn snapshot_and_policy(cli: &Cli) -> Result<(palisade_core::Snapshot, Policy)> {
    let snapshot = crate::open(cli)?.snapshot()?;
    let policy = Policy::compile_with(&snapshot, &PolicyOptions::default());
    Ok((snapshot, policy))
}

/// Runs `palisade lab ...`.
pub fn run(cli: &Cli, args: &LabArgs) -> Result<ExitCode> {
    let format = cli.output;
    let reporter = Reporter::stderr(format != Format::Table);
    let progress = |p| reporter.event(p);
    match &args.command {
        LabCommand::Serve { spec } => {
            palisade_lab::serve::serve_main(spec)?;
        }
        LabCommand::Probe => palisade_lab::serve::probe_main()?,
        LabCommand::Up { runtime } => {
            apply::check_host()?;
            let lab = lab(cli)?;
            let (snapshot, policy) = snapshot_and_policy(cli)?;
            let runtime = match runtime {
                RuntimeArg::Auto => None,
                RuntimeArg::Runsc => Some(Runtime::Runsc),
                RuntimeArg::Plain => Some(Runtime::Plain),
            };
            let started = std::time::Instant::now();
            let state = lab.up(&snapshot, &policy, runtime, &progress);
            reporter.finish();
            let state = state?;
            println!(
                "lab {} up in {:.1}s: {} pods ({}), {} gateway(s), egress proxy and internet echo; state in {}",
                state.lab_id,
                started.elapsed().as_secs_f64(),
                state.pods.len(),
                runtime_summary(&state),
                state.gateways.len(),
                lab.dir.display()
            );
        }
        LabCommand::Sync => {
            apply::check_host()?;
            let lab = lab(cli)?;
            let (snapshot, policy) = snapshot_and_policy(cli)?;
            let result = lab.sync(&snapshot, &policy, &progress);
            reporter.finish();
            let (added, removed, state) = result?;
            println!(
                "lab {} synced: {added} pods added, {removed} removed, {} running; nftables replaced",
                state.lab_id,
                state.pods.len()
            );
        }
        LabCommand::Verify {
            timeout,
            parallel,
            all,
            manifests,
        } => {
            if let Some(path) = manifests {
                return verify_manifests(format, path);
            }
            let timeout = humantime::parse_duration(timeout)
                .with_context(|| format!("invalid --timeout {timeout:?} (try 1500ms, 2s)"))?;
            if timeout.is_zero() || timeout > Duration::from_secs(60) {
                bail!("--timeout must be between 1ms and 60s");
            }
            apply::check_host()?;
            let lab = lab(cli)?;
            let state = lab.require()?;
            let (snapshot, policy) = snapshot_and_policy(cli)?;
            if !lab.in_sync(&state, &snapshot, &policy)? {
                eprintln!(
                    "note: the store changed since the lab was last synced; expectations follow the store (run `palisade lab sync`)"
                );
            }
            let mut probes = verify::expectations(&state, &policy)?;
            let objects = palisade_kube::eval::RenderedPolicy::new(
                &snapshot,
                &palisade_kube::RenderOptions::default(),
            )
            .context("failed to render the snapshot's policy objects")?;
            for u in objects.unsupported() {
                eprintln!("note: not evaluated: {u}");
            }
            verify::attach_objects(&mut probes, &objects)?;
            let report = verify::run(&lab, &probes, timeout, *parallel, &progress);
            reporter.finish();
            let report = report?;
            verify::write_report(&lab.verify_path(), &report)?;
            print_report(format, &report, *all)?;
            let bad: Vec<_> = report.mismatches().collect();
            if !bad.is_empty() {
                let first = bad[0];
                eprintln!(
                    "error: {} of {} probes disagree with the policy model; first: {}{} -> {}{} port {}: expected {} ({}), observed {} ({})",
                    bad.len(),
                    report.probes.len(),
                    first.from,
                    first
                        .from_pod
                        .as_ref()
                        .map(|p| format!(" [{p}]"))
                        .unwrap_or_default(),
                    first.to,
                    first
                        .to_pod
                        .as_ref()
                        .map(|p| format!(" [{p}]"))
                        .unwrap_or_default(),
                    first.port,
                    verdict(first.expected),
                    first.reason,
                    verdict(first.observed),
                    first.detail
                );
                return Ok(ExitCode::FAILURE);
            }
            if format == Format::Table {
                println!(
                    "all {} probes agree with the policy model (report: {})",
                    report.probes.len(),
                    lab.verify_path().display()
                );
            }
        }
        LabCommand::Status => {
            let lab = lab(cli)?;
            let Some(state) = lab.load()? else {
                bail!("no lab is running for this state (start one with `palisade lab up`)");
            };
            let rows: Vec<serde_json::Value> = state
                .pods
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "kind": "pod",
                        "name": format!("{}/{}", p.spec.tenant, p.spec.name),
                        "namespace": p.spec.netns,
                        "address": p.spec.addr.to_string(),
                        "ports": p.spec.ports,
                        "image": p.spec.image,
                        "runtime": p.spec.runtime.to_string(),
                        "workload": p.spec.workload,
                        "pid": p.pid,
                        "running": apply::alive(p.pid),
                    })
                })
                .chain(state.gateways.iter().map(|g| {
                    serde_json::json!({
                        "kind": "gateway",
                        "name": g.spec.display,
                        "namespace": g.spec.netns,
                        "address": g.spec.addr.to_string(),
                        "ports": [palisade_lab::plan::HTTP_PORT],
                        "image": "built-in reverse proxy",
                        "runtime": "plain",
                        "pid": g.pid,
                        "running": apply::alive(g.pid),
                    })
                }))
                .chain([
                    serde_json::json!({
                        "kind": "egress-proxy", "name": "egress-proxy", "namespace": state.infra.proxy,
                        "address": palisade_lab::plan::PROXY_ADDR.to_string(), "ports": [state.proxy_port],
                        "image": "palisade proxy", "runtime": "plain", "pid": state.proxy_pid,
                        "running": apply::alive(state.proxy_pid),
                    }),
                    serde_json::json!({
                        "kind": "internet-echo", "name": "internet", "namespace": state.infra.internet,
                        "address": palisade_lab::plan::ECHO_ADDR.to_string(), "ports": [palisade_lab::plan::HTTP_PORT],
                        "image": "built-in echo", "runtime": "plain", "pid": state.echo_pid,
                        "running": apply::alive(state.echo_pid),
                    }),
                ])
                .collect();
            let value = serde_json::json!({
                "lab_id": state.lab_id,
                "started_at": state.started_at,
                "synced_at": state.synced_at,
                "runtime": state.runtime.to_string(),
                "egress": state.egress,
                "workloads": rows,
            });
            print(format, &value, || {
                let header = vec![
                    "KIND", "NAME", "ADDRESS", "PORTS", "RUNTIME", "PID", "STATE",
                ];
                let rows = rows
                    .iter()
                    .map(|r| {
                        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                        vec![
                            s("kind"),
                            s("name"),
                            s("address"),
                            r["ports"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .map(|p| p.to_string())
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default(),
                            s("runtime"),
                            r["pid"].to_string(),
                            if r["running"].as_bool() == Some(true) {
                                "running".into()
                            } else {
                                "exited".into()
                            },
                        ]
                    })
                    .collect();
                (header, rows)
            })?;
            if format == Format::Table {
                for e in &state.egress {
                    println!(
                        "tenant {}: egress {} via {}{}",
                        e.tenant,
                        e.ip,
                        e.mode.as_str(),
                        e.note
                            .as_ref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        LabCommand::Down { all } => {
            apply::check_host()?;
            let lab = lab(cli)?;
            let removed = if *all {
                let mut r = lab.down(&progress)?;
                r.extend(apply::down_all(&progress)?);
                r
            } else {
                lab.down(&progress)?
            };
            reporter.finish();
            println!("lab down: removed {} namespaces", removed.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `lab verify --manifests`: the evaluator's matrix for hand-written
/// policies; what it cannot model is printed as a warning.
fn verify_manifests(format: Format, path: &std::path::Path) -> Result<ExitCode> {
    let objects = read_manifests(path)?;
    let report = verify::manifest_matrix(&objects);
    for u in &report.unsupported {
        eprintln!("warning: not evaluated: {u}");
    }
    if report.workloads.is_empty() {
        bail!(
            "no workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, Pod) in {}",
            path.display()
        );
    }
    print(format, &report, || {
        let rows = report
            .cells
            .iter()
            .map(|c| {
                let proto = serde_json::to_value(c.protocol).ok();
                let proto = proto.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
                vec![
                    c.from.clone(),
                    c.to.clone(),
                    format!("{}/{proto}", c.port),
                    verdict(c.verdict.allowed).into(),
                    c.verdict.egress.clone(),
                    c.verdict.ingress.clone(),
                ]
            })
            .collect();
        (
            vec!["FROM", "TO", "PORT", "VERDICT", "EGRESS", "INGRESS"],
            rows,
        )
    })?;
    Ok(ExitCode::SUCCESS)
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
    // (from, to, port, kind) -> (probes, agreeing, first probe)
    type Groups<'a> = std::collections::BTreeMap<
        (String, String, u16, String),
        (usize, usize, &'a verify::Outcome),
    >;
    let mut groups = Groups::new();
    let mut rows = Vec::new();
    for o in &report.probes {
        let kind = match o.kind {
            verify::ProbeKind::Direct => "direct",
            verify::ProbeKind::ViaProxy => "via proxy",
            verify::ProbeKind::ViaGateway => "via gateway",
        };
        if all || !o.ok {
            rows.push(vec![
                format!(
                    "{}{}",
                    o.from,
                    o.from_pod
                        .as_ref()
                        .map(|p| format!(" [{p}]"))
                        .unwrap_or_default()
                ),
                format!(
                    "{}{}",
                    o.to,
                    o.to_pod
                        .as_ref()
                        .map(|p| format!(" [{p}]"))
                        .unwrap_or_default()
                ),
                o.port.to_string(),
                kind.into(),
                verdict(o.expected).into(),
                verdict(o.observed).into(),
                if o.ok { "ok".into() } else { "MISMATCH".into() },
                o.reason.clone(),
                o.detail.clone(),
            ]);
        }
        let e = groups
            .entry((o.from.clone(), o.to.clone(), o.port, kind.to_string()))
            .or_insert((0, 0, o));
        e.0 += 1;
        if o.ok {
            e.1 += 1;
        }
    }
    if !all {
        let summary: Vec<Vec<String>> = groups
            .iter()
            .map(|((from, to, port, kind), (n, ok, o))| {
                vec![
                    from.clone(),
                    to.clone(),
                    port.to_string(),
                    kind.clone(),
                    verdict(o.expected).into(),
                    format!("{ok}/{n}"),
                    if ok == n {
                        "ok".into()
                    } else {
                        "MISMATCH".into()
                    },
                    o.reason.clone(),
                ]
            })
            .collect();
        println!(
            "{}",
            columns(
                &[
                    "FROM", "TO", "PORT", "KIND", "EXPECTED", "AGREE", "RESULT", "RULE"
                ],
                summary
            )
        );
        if !rows.is_empty() {
            println!("\nmismatches:");
        }
    }
    if !rows.is_empty() {
        println!(
            "{}",
            columns(
                &[
                    "FROM", "TO", "PORT", "KIND", "EXPECTED", "OBSERVED", "RESULT", "RULE",
                    "DETAIL"
                ],
                rows
            )
        );
    }
    Ok(())
}
