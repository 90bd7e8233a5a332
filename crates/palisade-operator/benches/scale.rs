//! Scale benchmark: the whole operator (both controllers, as `palisade-operator
//! run` starts them) against the in-memory API server served over TCP, with
//! 1,000 tenants × 10 workloads.
//!
//! It measures what issue 14 asks for:
//! - time to converge from cold (every workload has its subnet and its
//!   Deployment) and the requests that took, by verb;
//! - requests per minute in steady state (the target is no LIST and no
//!   write);
//! - latency from a `TenantDeployment` spec change to its Deployment carrying
//!   the change (median and p99);
//! - time for 1,000 new workloads (one per tenant) to all get subnets;
//! - peak resident memory of the process (`VmHWM`). The in-memory API
//!   server lives in the same process, so this is an upper bound for the
//!   operator alone.
//!
//! `cargo bench -p palisade-operator --bench scale`. Sizes and limits come
//! from the environment: `PALISADE_BENCH_TENANTS` (1000),
//! `PALISADE_BENCH_WORKLOADS` (10 per tenant), `PALISADE_BENCH_CHANGES`
//! (100 spec changes), `PALISADE_BENCH_STEADY` (10 s of steady state) and
//! `PALISADE_BENCH_TIMEOUT` (600 s per phase; a phase that does not finish
//! in time is reported as such and the benchmark fails).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use palisade_operator::crd::API_VERSION as GV;
use palisade_operator::reconcile::Ctx;
use palisade_operator::run::{Health, controllers};
use palisade_operator::testing::{FakeApi, example_config};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn workload(tenant: usize, name: &str, image: &str) -> Value {
    json!({"apiVersion": GV, "kind": "TenantDeployment",
           "metadata": {"name": name, "namespace": format!("tenant-t{tenant}")},
           "spec": {"image": image, "replicas": 2, "ports": [80]}})
}

/// Requests in the log, by kind: LIST, WATCH, GET (one object), and each
/// write method.
fn by_verb(log: &[String]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
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

fn show(counts: &BTreeMap<&'static str, usize>) -> String {
    let total: usize = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("{total} requests ({})", parts.join(", "))
}

/// Polls `done` every `every` until it holds or `timeout` passes.
async fn wait_for(timeout: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return true;
        }
        tokio::time::sleep(every).await;
    }
    done()
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

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn bench() -> bool {
    let tenants = env_or("PALISADE_BENCH_TENANTS", 1000) as usize;
    let per_tenant = env_or("PALISADE_BENCH_WORKLOADS", 10) as usize;
    let changes = env_or("PALISADE_BENCH_CHANGES", 100) as usize;
    let steady = Duration::from_secs(env_or("PALISADE_BENCH_STEADY", 10));
    let timeout = Duration::from_secs(env_or("PALISADE_BENCH_TIMEOUT", 600));
    let total = tenants * per_tenant;
    println!("scale: {tenants} tenants x {per_tenant} workloads = {total} workloads");

    let api = FakeApi::new();
    for t in 0..tenants {
        api.add_tenant(&format!("t{t}"));
        for w in 0..per_tenant {
            api.insert(
                GV,
                "tenantdeployments",
                workload(t, &format!("w{w}"), "nginx:alpine"),
            );
        }
    }
    let (addr, server) = api.serve_tcp().await.unwrap();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let mut cfg = example_config();
    // No resync or garbage collection inside the measured windows.
    cfg.resync = Duration::from_secs(3600);
    cfg.gc_interval = Duration::from_secs(3600);
    let ctx = Arc::new(Ctx::new(client.clone(), cfg));
    let health = Arc::new(Health::default());
    api.clear_log();
    let start = Instant::now();
    let operator = tokio::spawn(controllers(ctx, health));

    // 1. Cold start.
    let converged = wait_for(timeout, Duration::from_millis(500), || {
        with_subnet(&api) == total && deployments(&api) == total
    })
    .await;
    let took = start.elapsed();
    if !converged {
        println!(
            "converge: NOT DONE after {:.1} s ({} of {total} with subnets, {} deployments)",
            took.as_secs_f64(),
            with_subnet(&api),
            deployments(&api)
        );
        for line in api.log().iter().take(20) {
            println!("  {line}");
        }
        operator.abort();
        server.abort();
        return false;
    }
    println!(
        "converge from cold: {:.1} s, {}",
        took.as_secs_f64(),
        show(&by_verb(&api.log()))
    );

    // 2. Steady state: let stragglers finish, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    api.clear_log();
    tokio::time::sleep(steady).await;
    let log = api.log();
    let per_min = 60.0 / steady.as_secs_f64();
    let counts = by_verb(&log);
    println!(
        "steady state over {} s: {:.0} requests/min; {}",
        steady.as_secs(),
        log.len() as f64 * per_min,
        show(&counts)
    );

    // 3. Spec change to applied Deployment.
    let mut latencies = Vec::with_capacity(changes);
    for i in 0..changes {
        let t = (i * 7919) % tenants;
        let ns = format!("tenant-t{t}");
        let name = format!("w{}", i % per_tenant);
        let image = format!("nginx:1.{i}");
        let tds: kube::Api<palisade_operator::crd::TenantDeployment> =
            kube::Api::namespaced(client.clone(), &ns);
        let patch = json!({"spec": {"image": image}});
        let begin = Instant::now();
        tds.patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
        let applied = wait_for(timeout, Duration::from_millis(2), || {
            api.get("apps/v1", "deployments", Some(&ns), &name)
                .and_then(|d| {
                    d.pointer("/spec/template/spec/containers/0/image")
                        .and_then(Value::as_str)
                        .map(|i| i == image)
                })
                .unwrap_or(false)
        })
        .await;
        if !applied {
            println!("change {i}: NOT APPLIED after {} s", timeout.as_secs());
            return false;
        }
        latencies.push(begin.elapsed());
    }
    latencies.sort();
    println!(
        "spec change to applied Deployment ({changes} changes, one at a time): median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );

    // 4. New workloads, one per tenant, all at once.
    api.clear_log();
    let start = Instant::now();
    for t in 0..tenants {
        api.insert(GV, "tenantdeployments", workload(t, "new", "nginx:alpine"));
    }
    let all = total + tenants;
    let done = wait_for(timeout, Duration::from_millis(100), || {
        with_subnet(&api) == all
    })
    .await;
    let took = start.elapsed();
    if !done {
        println!(
            "{tenants} new workloads: NOT DONE after {:.1} s ({} of {tenants})",
            took.as_secs_f64(),
            with_subnet(&api) - total
        );
        return false;
    }
    println!(
        "{tenants} new workloads to all have subnets: {:.1} s, {}",
        took.as_secs_f64(),
        show(&by_verb(&api.log()))
    );
    if let Some(mib) = peak_rss_mib() {
        println!("peak resident memory (operator + in-memory API server): {mib:.0} MiB");
    }
    operator.abort();
    server.abort();
    true
}

fn main() {
    // `PALISADE_LOG=debug` shows what the controllers do.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if !rt.block_on(bench()) {
        std::process::exit(1);
    }
}
