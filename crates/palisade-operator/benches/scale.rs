//! Scale benchmark: an operator binary, as a child process, against the
//! in-memory API server served over TCP (a kubeconfig pointing at it), with
//! 1,000 tenants × 10 workloads; the same harness runs today's operator
//! (built from this workspace) and, beside it, the operator before the
//! rewrite (commit da3e73d, a binary built outside the tree), each against
//! a fresh API server holding the same objects, and prints them side by
//! side.
//!
//! It measures what issue 14 asks for, per operator:
//! - time to converge from cold (every workload has its subnet and its
//!   Deployment) and the requests that took, by verb;
//! - requests per minute at rest, by verb (the target is no LIST and no
//!   write), counted over one resync period after the work has settled;
//! - latency from a `TenantDeployment` spec change (a PATCH, as a user
//!   makes it) to its Deployment carrying the change (median and p99);
//! - time for N new workloads (one per tenant) to all get subnets;
//! - peak resident memory of the operator process (`VmHWM` of
//!   `/proc/<pid>/status`; the API server lives in the benchmark's process,
//!   not the operator's) and its CPU time.
//!
//! The API server rolls Deployments out at once
//! ([`FakeApi::roll_out_deployments`]): without a Deployment controller no
//! workload would ever be ready, and the old operator polls not-ready
//! workloads every 15 s. Both operators run with `--no-leader-election`
//! (no Lease renewals in the counts) and `--resync` = `--gc-interval` =
//! `PALISADE_BENCH_RESYNC`, so the window at rest covers one full resync
//! and one garbage collection; at the defaults (10 min, 5 min) the periodic
//! part of the rate is a tenth (resync) and a fifth (GC) of it.
//!
//! Run (release; the old binary from a worktree outside /work/main):
//! ```text
//! git worktree add /work/old-operator da3e73d
//! CARGO_TARGET_DIR=/work/old-operator/target cargo build --release \
//!     --manifest-path /work/old-operator/Cargo.toml -p palisade-operator --bin palisade-operator
//! PALISADE_BENCH_OLD_OPERATOR=/work/old-operator/target/release/palisade-operator \
//!     cargo bench -p palisade-operator --bench scale
//! ```
//! Without `PALISADE_BENCH_OLD_OPERATOR` the old operator is skipped, and
//! the benchmark says so. The environment sets the rest:
//! `PALISADE_BENCH_TENANTS` (1000), `PALISADE_BENCH_WORKLOADS` (10 per
//! tenant), `PALISADE_BENCH_CHANGES` (100 spec changes, one at a time),
//! `PALISADE_BENCH_RESYNC` (60 s: the operators' resync and GC interval,
//! and the window at rest), `PALISADE_BENCH_SETTLE` (20 s between
//! convergence and the window at rest), `PALISADE_BENCH_TIMEOUT` (900 s per
//! phase; a phase that does not finish in time is reported with how far it
//! got, the later phases of that operator are skipped, and the benchmark
//! exits 1), `PALISADE_BENCH_PEERS` (`new,old`), and
//! `PALISADE_BENCH_NEW_OPERATOR` (another build of today's operator
//! instead of the one cargo built with this benchmark).
//!
//! The figures, with the load of the machine when they were taken, are in
//! docs/operator.md ("Scale").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use palisade_operator::crd::API_VERSION as GV;
use palisade_operator::testing::FakeApi;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Today's operator, built with this benchmark.
const NEW_OPERATOR: &str = env!("CARGO_BIN_EXE_palisade-operator");
/// Where another build of today's operator may be named (a copy that
/// other builds in the shared target dir cannot replace mid-run).
const NEW_ENV: &str = "PALISADE_BENCH_NEW_OPERATOR";
/// Where the old operator's binary is named.
const OLD_ENV: &str = "PALISADE_BENCH_OLD_OPERATOR";
/// The verbs the tables show, in order.
const VERBS: [&str; 7] = ["LIST", "GET", "WATCH", "POST", "PATCH", "PUT", "DELETE"];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    tenants: usize,
    per_tenant: usize,
    changes: usize,
    resync: Duration,
    settle: Duration,
    timeout: Duration,
}

impl Settings {
    fn from_env() -> Self {
        Self {
            tenants: env_or("PALISADE_BENCH_TENANTS", 1000) as usize,
            per_tenant: env_or("PALISADE_BENCH_WORKLOADS", 10) as usize,
            changes: env_or("PALISADE_BENCH_CHANGES", 100) as usize,
            resync: Duration::from_secs(env_or("PALISADE_BENCH_RESYNC", 60)),
            settle: Duration::from_secs(env_or("PALISADE_BENCH_SETTLE", 20)),
            timeout: Duration::from_secs(env_or("PALISADE_BENCH_TIMEOUT", 900)),
        }
    }

    fn total(&self) -> usize {
        self.tenants * self.per_tenant
    }
}

type Counts = BTreeMap<&'static str, usize>;

/// What one operator achieved; `None` where a phase did not run or end.
#[derive(Debug, Default)]
struct Figures {
    converge: Option<(Duration, Counts)>,
    converge_cpu: Option<f64>,
    at_rest: Option<Counts>,
    change: Option<[Duration; 3]>,
    new_workloads: Option<(Duration, Counts)>,
    peak_rss_mib: Option<f64>,
    cpu_s: Option<f64>,
    failure: Option<String>,
}

fn workload(tenant: usize, name: &str, image: &str) -> Value {
    json!({"apiVersion": GV, "kind": "TenantDeployment",
           "metadata": {"name": name, "namespace": format!("tenant-t{tenant}")},
           "spec": {"image": image, "replicas": 2, "ports": [80]}})
}

/// Requests in the log, by kind: LIST, WATCH, GET (one object), and each
/// write method.
fn by_verb(log: &[String]) -> Counts {
    let mut out = Counts::new();
    for line in log {
        let (method, uri) = line.split_once(' ').unwrap_or((line, ""));
        let path = uri.split('?').next().unwrap_or_default();
        let verb = match method {
            "GET" if uri.contains("watch=true") || uri.contains("watch=1") => "WATCH",
            "GET" if is_collection(path) => "LIST",
            "GET" => "GET",
            "POST" => "POST",
            "PATCH" => "PATCH",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            _ => "other",
        };
        *out.entry(verb).or_insert(0) += 1;
    }
    out
}

/// `/api/v1/pods`, `/apis/g/v/namespaces/ns/plural`: a collection.
fn is_collection(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return false,
    };
    matches!(rest, [_] | ["namespaces", _, _])
}

/// The busiest (verb, resource) pairs of a log, e.g. `LIST subnetclaims 120`.
fn by_resource(log: &[String]) -> String {
    let mut out: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in log {
        let verb = by_verb(std::slice::from_ref(line));
        let verb = verb.keys().next().copied().unwrap_or("other");
        let path = line.split([' ', '?']).nth(1).unwrap_or_default();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let plural = match segs.as_slice() {
            ["api", _, "namespaces", _, p, ..] | ["apis", _, _, "namespaces", _, p, ..] => *p,
            ["api", _, p, ..] | ["apis", _, _, p, ..] => *p,
            _ => "?",
        };
        *out.entry((verb.to_owned(), plural.to_owned())).or_insert(0) += 1;
    }
    let mut pairs: Vec<_> = out.into_iter().collect();
    pairs.sort_by_key(|p| std::cmp::Reverse(p.1));
    let top: Vec<String> = pairs
        .iter()
        .take(8)
        .map(|((v, p), n)| format!("{v} {p} {n}"))
        .collect();
    top.join(", ")
}

fn show(counts: &Counts) -> String {
    let total: usize = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("{total} requests ({})", parts.join(", "))
}

fn with_subnet(api: &FakeApi) -> usize {
    api.count(GV, "tenantdeployments", |w| {
        w.pointer("/status/subnet").is_some()
    })
}

/// Workloads' Deployments (the platform's egress proxy is not one).
fn deployments(api: &FakeApi) -> usize {
    api.count("apps/v1", "deployments", |d| {
        d.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .is_some_and(|ns| ns.starts_with("tenant-"))
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// An operator process; killed when dropped.
struct Operator {
    child: Child,
    /// The last lines it wrote to stderr.
    stderr: Arc<Mutex<VecDeque<String>>>,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Starts `bin run` against the API server at `addr`.
    fn start(bin: &std::path::Path, addr: std::net::SocketAddr, s: &Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, FakeApi::kubeconfig(addr)).unwrap();
        let every = format!("{}s", s.resync.as_secs());
        let mut child = Command::new(bin)
            .args(["run", "--pool", "fd00:1234:5678::/48", "--prefix-len", "96"])
            .args(["--listen", "127.0.0.1:0", "--no-leader-election"])
            .args(["--resync", &every, "--gc-interval", &every])
            .env("KUBECONFIG", &kubeconfig)
            .env("PALISADE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let pipe = child.stderr.take().unwrap();
        let tail = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut t = tail.lock().unwrap();
                t.push_back(line);
                if t.len() > 20 {
                    t.pop_front();
                }
            }
        });
        Self {
            child,
            stderr,
            _dir: dir,
        }
    }

    fn proc_file(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.child.id())).ok()
    }

    /// Peak resident memory so far (`VmHWM`), MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = self.proc_file("status")?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// User + system CPU time so far, seconds (`/proc/<pid>/stat` counts
    /// in USER_HZ, 100 on Linux).
    fn cpu_s(&self) -> Option<f64> {
        let stat = self.proc_file("stat")?;
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    }

    /// Why it is gone, if it exited.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        let tail: Vec<String> = self.stderr.lock().unwrap().iter().cloned().collect();
        Some(format!(
            "exited with {status}; stderr:\n  {}",
            tail.join("\n  ")
        ))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` every `every` until it holds; `Err` when `timeout` passes
/// or the operator exits first.
async fn wait_for(
    op: &mut Operator,
    timeout: Duration,
    every: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        if let Some(why) = op.exited() {
            return Err(why);
        }
        if start.elapsed() >= timeout {
            return Err(format!("not done after {} s", timeout.as_secs()));
        }
        tokio::time::sleep(every).await;
    }
}

/// The API server with `s.tenants` × `s.per_tenant` workloads, and
/// Deployments that roll out.
fn populated(s: &Settings) -> FakeApi {
    let api = FakeApi::new();
    api.roll_out_deployments();
    for t in 0..s.tenants {
        api.add_tenant(&format!("t{t}"));
        for w in 0..s.per_tenant {
            api.insert(
                GV,
                "tenantdeployments",
                workload(t, &format!("w{w}"), "nginx:alpine"),
            );
        }
    }
    api
}

/// Phase 1: from start to every workload with subnet and Deployment.
async fn converge(api: &FakeApi, op: &mut Operator, s: &Settings, f: &mut Figures) -> bool {
    let start = Instant::now();
    let total = s.total();
    let done = wait_for(op, s.timeout, Duration::from_millis(250), || {
        with_subnet(api) == total && deployments(api) == total
    })
    .await;
    let took = start.elapsed();
    f.converge_cpu = op.cpu_s();
    if let Err(why) = done {
        f.failure = Some(format!(
            "converge: {why} ({:.0} s: {} of {total} with subnets, {} Deployments)",
            took.as_secs_f64(),
            with_subnet(api),
            deployments(api)
        ));
        return false;
    }
    let counts = by_verb(&api.log());
    println!(
        "  converge from cold: {:.1} s, {}",
        took.as_secs_f64(),
        show(&counts)
    );
    f.converge = Some((took, counts));
    true
}

/// Phase 2: requests over one resync period, after `settle`.
async fn at_rest(api: &FakeApi, op: &mut Operator, s: &Settings, f: &mut Figures) -> bool {
    tokio::time::sleep(s.settle).await;
    api.clear_log();
    tokio::time::sleep(s.resync).await;
    if let Some(why) = op.exited() {
        f.failure = Some(format!("at rest: {why}"));
        return false;
    }
    let log = api.log();
    let counts = by_verb(&log);
    println!(
        "  at rest over {} s (after {} s to settle): {}",
        s.resync.as_secs(),
        s.settle.as_secs(),
        show(&counts)
    );
    println!("    by resource: {}", by_resource(&log));
    f.at_rest = Some(counts);
    true
}

/// Phase 3: spec changes, one at a time, each until its Deployment has it.
async fn changes(
    api: &FakeApi,
    client: &kube::Client,
    op: &mut Operator,
    s: &Settings,
    f: &mut Figures,
) -> bool {
    let mut latencies = Vec::with_capacity(s.changes);
    for i in 0..s.changes {
        let ns = format!("tenant-t{}", (i * 7919) % s.tenants);
        let name = format!("w{}", i % s.per_tenant);
        let image = format!("nginx:1.{i}");
        let tds: kube::Api<palisade_operator::crd::TenantDeployment> =
            kube::Api::namespaced(client.clone(), &ns);
        let patch = json!({"spec": {"image": image}});
        let begin = Instant::now();
        tds.patch(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
        let applied = wait_for(op, s.timeout, Duration::from_millis(2), || {
            api.get("apps/v1", "deployments", Some(&ns), &name)
                .and_then(|d| {
                    d.pointer("/spec/template/spec/containers/0/image")
                        .and_then(Value::as_str)
                        .map(|i| i == image)
                })
                .unwrap_or(false)
        })
        .await;
        if let Err(why) = applied {
            f.failure = Some(format!("change {i} of {ns}/{name}: {why}"));
            return false;
        }
        latencies.push(begin.elapsed());
    }
    latencies.sort();
    let at = |p| percentile(&latencies, p);
    let figures = [at(0.5), at(0.99), at(1.0)];
    println!(
        "  spec change to applied Deployment ({} changes): median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        s.changes,
        ms(figures[0]),
        ms(figures[1]),
        ms(figures[2])
    );
    f.change = Some(figures);
    true
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Phase 4: one new workload per tenant, all at once, until all have
/// subnets.
async fn new_workloads(api: &FakeApi, op: &mut Operator, s: &Settings, f: &mut Figures) -> bool {
    api.clear_log();
    let start = Instant::now();
    for t in 0..s.tenants {
        api.insert(GV, "tenantdeployments", workload(t, "new", "nginx:alpine"));
    }
    let all = s.total() + s.tenants;
    let done = wait_for(op, s.timeout, Duration::from_millis(100), || {
        with_subnet(api) == all
    })
    .await;
    let took = start.elapsed();
    if let Err(why) = done {
        f.failure = Some(format!(
            "new workloads: {why} ({} of {} with subnets)",
            with_subnet(api).saturating_sub(s.total()),
            s.tenants
        ));
        return false;
    }
    let counts = by_verb(&api.log());
    println!(
        "  {} new workloads to all have subnets: {:.1} s, {}",
        s.tenants,
        took.as_secs_f64(),
        show(&counts)
    );
    f.new_workloads = Some((took, counts));
    true
}

/// Runs one operator binary through the four phases against a fresh API
/// server.
async fn measure(label: &str, bin: &std::path::Path, s: &Settings) -> Figures {
    println!(
        "{label}: {} ({} load {})",
        bin.display(),
        s.describe(),
        load_average()
    );
    let api = populated(s);
    let (addr, server) = api.serve_tcp().await.unwrap();
    let client = FakeApi::tcp_client(addr).unwrap();
    api.clear_log();
    let mut op = Operator::start(bin, addr, s);
    let mut f = Figures::default();
    let _ = converge(&api, &mut op, s, &mut f).await
        && at_rest(&api, &mut op, s, &mut f).await
        && changes(&api, &client, &mut op, s, &mut f).await
        && new_workloads(&api, &mut op, s, &mut f).await;
    f.peak_rss_mib = op.peak_rss_mib();
    f.cpu_s = op.cpu_s();
    if let Some(why) = &f.failure {
        println!("  {label} FAILED: {why}");
    }
    println!(
        "  peak RSS {:.0} MiB, CPU {:.1} s (load {})",
        f.peak_rss_mib.unwrap_or(0.0),
        f.cpu_s.unwrap_or(0.0),
        load_average()
    );
    drop(op);
    server.abort();
    f
}

impl Settings {
    fn describe(&self) -> String {
        format!(
            "{} tenants x {} workloads = {}, resync {} s,",
            self.tenants,
            self.per_tenant,
            self.total(),
            self.resync.as_secs()
        )
    }
}

/// The operators to run: today's, and the old one when its binary is
/// named.
fn peers() -> Vec<(&'static str, PathBuf)> {
    let wanted = std::env::var("PALISADE_BENCH_PEERS").unwrap_or_else(|_| "new,old".into());
    let mut out = Vec::new();
    for peer in wanted.split(',').map(str::trim) {
        match peer {
            "new" => {
                let bin = std::env::var_os(NEW_ENV).unwrap_or_else(|| NEW_OPERATOR.into());
                out.push(("new", PathBuf::from(bin)));
            }
            "old" => match std::env::var_os(OLD_ENV) {
                Some(path) => out.push(("old", PathBuf::from(path))),
                None => println!(
                    "\n!!! PEER SKIPPED: the old operator (da3e73d) is not measured: set {OLD_ENV} \
                     to its binary (see this benchmark's header) !!!\n"
                ),
            },
            other => println!("unknown peer {other:?} in PALISADE_BENCH_PEERS (new, old)"),
        }
    }
    out
}

/// One table row: a label and a figure per operator, with old ÷ new when
/// both exist.
fn row(
    label: &str,
    results: &[(&str, Figures)],
    figure: impl Fn(&Figures) -> Option<f64>,
    unit: &str,
) {
    let cell = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{}{unit}", fmt(v)));
    let values: Vec<Option<f64>> = results.iter().map(|(_, f)| figure(f)).collect();
    let mut line = format!("| {label} |");
    for v in &values {
        line.push_str(&format!(" {} |", cell(*v)));
    }
    if results.len() == 2 {
        let ratio = match (values[0], values[1]) {
            (Some(old), Some(new)) if new > 0.0 => format!("{:.1}×", old / new),
            (Some(old), Some(_)) if old > 0.0 => "∞ (new: 0)".into(),
            (Some(_), Some(_)) => "= (both 0)".into(),
            _ => "—".into(),
        };
        line.push_str(&format!(" {ratio} |"));
    }
    println!("{line}");
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn verb(counts: Option<&Counts>, verb: &str, scale: f64) -> Option<f64> {
    counts.map(|c| c.get(verb).copied().unwrap_or(0) as f64 * scale)
}

/// The side-by-side table (markdown), old first.
fn table(results: &[(&str, Figures)], s: &Settings) {
    let per_min = 60.0 / s.resync.as_secs_f64().max(1e-9);
    println!("\n{} tenants x {} workloads:\n", s.tenants, s.per_tenant);
    let names: Vec<&str> = results.iter().map(|(n, _)| *n).collect();
    let ratio = if results.len() == 2 {
        " old ÷ new |"
    } else {
        ""
    };
    println!("| figure | {} |{ratio}", names.join(" | "));
    println!(
        "|---|{}{}",
        "---|".repeat(names.len()),
        if ratio.is_empty() { "" } else { "---|" }
    );
    let secs = |d: Duration| d.as_secs_f64();
    row(
        "converge from cold",
        results,
        |f| f.converge.as_ref().map(|c| secs(c.0)),
        " s",
    );
    row(
        "  requests to converge",
        results,
        |f| {
            f.converge
                .as_ref()
                .map(|c| c.1.values().sum::<usize>() as f64)
        },
        "",
    );
    row(
        "  operator CPU to converge",
        results,
        |f| f.converge.as_ref().and(f.converge_cpu),
        " s",
    );
    row(
        "at rest: requests/min",
        results,
        |f| {
            f.at_rest
                .as_ref()
                .map(|c| c.values().sum::<usize>() as f64 * per_min)
        },
        "",
    );
    for v in VERBS {
        row(
            &format!("  {v}/min"),
            results,
            |f| verb(f.at_rest.as_ref(), v, per_min),
            "",
        );
    }
    row(
        "change → applied, median",
        results,
        |f| f.change.map(|c| ms(c[0])),
        " ms",
    );
    row(
        "change → applied, p99",
        results,
        |f| f.change.map(|c| ms(c[1])),
        " ms",
    );
    let label = format!("{} new workloads → all have subnets", s.tenants);
    row(
        &label,
        results,
        |f| f.new_workloads.as_ref().map(|c| secs(c.0)),
        " s",
    );
    row(
        "  requests for them",
        results,
        |f| {
            f.new_workloads
                .as_ref()
                .map(|c| c.1.values().sum::<usize>() as f64)
        },
        "",
    );
    row(
        "peak RSS of the operator",
        results,
        |f| f.peak_rss_mib,
        " MiB",
    );
    row("operator CPU, whole run", results, |f| f.cpu_s, " s");
}

fn main() {
    let s = Settings::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results = Vec::new();
    for (label, bin) in peers() {
        let figures = rt.block_on(measure(label, &bin, &s));
        results.push((label, figures));
    }
    // Old first, so the ratio reads old ÷ new.
    results.sort_by_key(|(label, _)| *label != "old");
    table(&results, &s);
    if results.iter().any(|(_, f)| f.failure.is_some()) {
        std::process::exit(1);
    }
}
