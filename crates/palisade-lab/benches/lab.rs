//! Lab benchmarks (root, Linux; not run in CI). Prints figures:
//!
//! 1. `lab up` for 20 deployments x 3 replicas (60 pods), and `lab down`.
//! 2. `verify` of the full matrix of that lab (60 x 59 pod pairs plus
//!    egress and gateway probes: 3,600+ probes).
//! 3. Per-packet cost: the pod-to-pod request rate (a new connection per
//!    request, so every request crosses the ruleset's lookups) with 10
//!    deployments configured versus 5,000, the same two pods running.
//!
//! Everything runs from the rendered objects, as `palisade lab` does.
//!
//! Needs the `palisade` binary (it runs the workloads and probe agents):
//! `cargo build --release -p palisade-cli && cargo bench -p palisade-lab --bench lab`
//! (or set `PALISADE_BIN`). `LAB_BENCH_RUNTIME=plain|runsc` picks the pod
//! runtime (default: runsc when it works).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_core::allocator::Timestamp;
use palisade_core::model::{
    Deployment, EgressMode, EgressProfile, Gateway, GatewayScope, Image, Labels, Port, Quota,
    Replicas, Tenant,
};
use palisade_core::policy::Policy;
use palisade_core::{Pool, Snapshot, SubnetLen};
use palisade_kube::eval::RenderedPolicy;
use palisade_lab::apply::{Lab, Progress};
use palisade_lab::serve::{Load, LoadResult, ProbeBatch, ProbeRequest};
use palisade_lab::{Runtime, rendered, verify};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn palisade_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PALISADE_BIN") {
        return Some(p.into());
    }
    // target/<profile>/deps/lab-<hash> -> target/{release,debug}/palisade
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?.parent()?;
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("palisade"))
        .find(|p| p.exists())
}

fn tenant(name: &str) -> Tenant {
    Tenant {
        name: name.parse().unwrap(),
        quota: Quota::default(),
        node_pool: None,
        egress: EgressProfile {
            mode: EgressMode::Proxy,
            ip: None,
            public_ip: None,
        },
        proxy_port: 0,
        labels: Labels::new(),
        created_at: Timestamp(0),
    }
}

fn dep(pool: &Pool, tenant: &str, name: &str, index: u128, replicas: u32) -> Deployment {
    Deployment {
        tenant: tenant.parse().unwrap(),
        name: name.parse().unwrap(),
        image: "nginx:alpine".parse::<Image>().unwrap(),
        replicas: Replicas::try_from(replicas).unwrap(),
        ports: vec![Port::try_from(80).unwrap()],
        subnet: pool.subnet(index),
        labels: Labels::new(),
        workload: Default::default(),
        created_at: Timestamp(0),
    }
}

/// `deployments` deployments over `tenants` tenants; the first `running`
/// have `replicas` pods, the rest none.
fn snapshot(tenants: usize, deployments: usize, running: usize, replicas: u32) -> Snapshot {
    let pool = Pool::new(
        "fd00:beef::/48".parse().unwrap(),
        SubnetLen::default(),
        Duration::ZERO,
    )
    .unwrap();
    let names: Vec<String> = (0..tenants).map(|t| format!("tenant-{t}")).collect();
    let mut deps: Vec<Deployment> = (0..deployments)
        .map(|i| {
            dep(
                &pool,
                &names[i % tenants],
                &format!("app-{i}"),
                i as u128,
                if i < running { replicas } else { 0 },
            )
        })
        .collect();
    deps.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
    Snapshot {
        tenants: names.iter().map(|n| tenant(n)).collect(),
        deployments: deps,
        gateways: vec![Gateway {
            scope: GatewayScope::Central,
            created_at: Timestamp(0),
        }],
        allow_rules: Vec::new(),
        pool,
    }
}

fn quiet(_: Progress) {}

fn main() {
    let is_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    if !is_root {
        eprintln!("SKIPPED: the lab benchmark needs root");
        return;
    }
    let Some(bin) = palisade_bin() else {
        eprintln!(
            "SKIPPED: build the palisade binary first (cargo build --release -p palisade-cli) or set PALISADE_BIN"
        );
        return;
    };
    let runtime = match std::env::var("LAB_BENCH_RUNTIME").as_deref() {
        Ok("plain") => Some(Runtime::Plain),
        Ok("runsc") => Some(Runtime::Runsc),
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab {
        dir: dir.path().join("lab"),
        exe: bin.clone(),
    };
    println!("palisade binary: {}", bin.display());

    // 1 and 2: 60 pods.
    let s = snapshot(4, 20, 20, 3);
    let policy = Policy::compile(&s);
    // From rendered objects: rendering is part of what `lab up` costs.
    let t = Instant::now();
    let objects = rendered::render(&s).unwrap();
    let state = lab.up(&s, &objects, runtime, &quiet).unwrap();
    let up = t.elapsed();
    let runsc = state
        .pods
        .iter()
        .filter(|p| p.spec.runtime == Runtime::Runsc)
        .count();
    println!(
        "lab up: 20 deployments x 3 replicas = {} pods ({runsc} under gVisor) + 1 gateway in {:.2} s (target < 60 s)",
        state.pods.len(),
        up.as_secs_f64()
    );
    let mut probes = verify::expectations(&state, &policy).unwrap();
    let three_way = RenderedPolicy::from_objects(&s, &rendered::render_options(), &objects);
    verify::attach_objects(&mut probes, &three_way).unwrap();
    let t = Instant::now();
    let report = verify::run(&lab, &probes, Duration::from_millis(1500), 64, &quiet).unwrap();
    let took = t.elapsed();
    let bad = report.mismatches().count();
    println!(
        "lab verify: {} probes in {:.2} s ({:.0} probes/s), {bad} mismatches (target < 60 s)",
        report.probes.len(),
        took.as_secs_f64(),
        report.probes.len() as f64 / took.as_secs_f64()
    );
    let t = Instant::now();
    let removed = lab.down(&quiet).unwrap();
    println!(
        "lab down: {} namespaces in {:.2} s",
        removed.len(),
        t.elapsed().as_secs_f64()
    );

    // 3: per-packet cost with 10 vs 5,000 deployments in the maps.
    let mut rates = Vec::new();
    for deployments in [10usize, 5000] {
        let s = snapshot(10, deployments, 1, 2);
        let t = Instant::now();
        let objects = rendered::render(&s).unwrap();
        let state = lab.up(&s, &objects, Some(Runtime::Plain), &quiet).unwrap();
        let up = t.elapsed();
        let src = &state.pods[0].spec;
        let dst = &state.pods[1].spec;
        assert_eq!(src.deployment, dst.deployment);
        let mut best = 0.0f64;
        for _ in 0..3 {
            let r = load(&lab, &src.netns, SocketAddr::new(IpAddr::V6(dst.addr), 80));
            assert!(r.ok > 0 && r.failed == 0, "{r:?}");
            best = best.max(r.ok as f64 / r.seconds);
        }
        println!(
            "per-packet: {deployments} deployments configured (up in {:.2} s): {best:.0} requests/s pod -> pod, new connection each",
            up.as_secs_f64()
        );
        rates.push(best);
        lab.down(&quiet).unwrap();
    }
    println!(
        "per-packet: rate(5000) / rate(10) = {:.3} (target >= 0.9)",
        rates[1] / rates[0]
    );
}

fn load(lab: &Lab, netns: &str, target: SocketAddr) -> LoadResult {
    let batch = ProbeBatch {
        timeout_ms: 2000,
        requests: vec![ProbeRequest {
            id: 0,
            addr: target,
            proxy: None,
            host: target.to_string(),
            dns: None,
            udp: false,
        }],
        load: Some(Load {
            concurrency: 8,
            duration_ms: 3000,
        }),
    };
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(&lab.exe)
        .args(["lab", "__probe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&batch).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}
