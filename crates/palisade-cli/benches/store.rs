//! Store figures for the foundation issue, end to end through the real
//! binary: `palisade create` with 100,000 deployments stored (process start
//! to commit), `palisade stats` with 1,000,000 stored, and the bulk path.
//!
//! Run: `cargo bench -p palisade-cli --bench store` (takes about a minute).

// A benchmark should stop loudly if its setup is wrong.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use palisade_core::allocator::Timestamp;
use palisade_core::{Pool, SubnetLen};
use palisade_store::{NewDeployment, Store};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

fn batch(from: usize, to: usize) -> Vec<NewDeployment> {
    (from..to)
        .map(|i| NewDeployment {
            tenant: format!("tenant-{}", i % 1000).parse().unwrap(),
            name: format!("app-{i}").parse().unwrap(),
            image: "nginx:alpine".parse().unwrap(),
            replicas: "2".parse().unwrap(),
            ports: vec![],
            labels: Default::default(),
            workload: Default::default(),
        })
        .collect()
}

/// Bulk-loads deployments [from, to) and returns allocations per second.
fn bulk(store: &mut Store, from: usize, to: usize) -> f64 {
    let items = batch(from, to);
    let started = Instant::now();
    for chunk in items.chunks(50_000) {
        store.create_deployments(chunk, Timestamp(1)).unwrap();
    }
    (to - from) as f64 / started.elapsed().as_secs_f64()
}

fn timed_runs(state: &Path, runs: usize, args: impl Fn(usize) -> Vec<String>) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..runs)
        .map(|i| {
            let started = Instant::now();
            let out = Command::new(BIN)
                .arg("--state")
                .arg(state)
                .args(args(i))
                .output()
                .unwrap();
            let elapsed = started.elapsed();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            elapsed
        })
        .collect();
    times.sort();
    times
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let mut store = Store::open_or_create(&state).unwrap();
    let pool = Pool::new(
        Pool::ula([1, 2, 3, 4, 5]),
        SubnetLen::default(),
        Duration::ZERO,
    )
    .unwrap();
    store.init(&pool, false, Timestamp(0)).unwrap();

    let rate = bulk(&mut store, 0, 100_000);
    println!("bulk create (library batch API): {rate:.0} allocations/s (target >= 50,000)");

    let creates = timed_runs(&state, 200, |i| {
        vec![
            "create".into(),
            "bench".into(),
            format!("c{i}"),
            "nginx:alpine".into(),
            "2".into(),
        ]
    });
    println!(
        "palisade create with 100,000 stored: median {:.2} ms, p90 {:.2} ms, max {:.2} ms (target median < 15 ms)",
        ms(creates[creates.len() / 2]),
        ms(creates[creates.len() * 9 / 10]),
        ms(creates[creates.len() - 1])
    );
    // Half of them deleted, then re-created: the recycling path end to end.
    for i in 0..100 {
        Command::new(BIN)
            .arg("--state")
            .arg(&state)
            .args(["delete", "bench", &format!("c{i}")])
            .output()
            .unwrap();
    }
    let recycled = timed_runs(&state, 100, |i| {
        vec![
            "create".into(),
            "bench".into(),
            format!("r{i}"),
            "nginx:alpine".into(),
        ]
    });
    println!(
        "palisade create reusing a recycled subnet: median {:.2} ms",
        ms(recycled[recycled.len() / 2])
    );

    let rate = bulk(&mut store, 100_000, 1_000_000);
    println!("bulk create 100,000 -> 1,000,000: {rate:.0} allocations/s");
    let stats = timed_runs(&state, 50, |_| vec!["stats".into()]);
    println!(
        "palisade stats with 1,000,000 stored: median {:.2} ms, max {:.2} ms (target < 50 ms)",
        ms(stats[stats.len() / 2]),
        ms(stats[stats.len() - 1])
    );
    let creates = timed_runs(&state, 50, |i| {
        vec![
            "create".into(),
            "bench".into(),
            format!("m{i}"),
            "nginx:alpine".into(),
        ]
    });
    println!(
        "palisade create with 1,000,000 stored: median {:.2} ms",
        ms(creates[creates.len() / 2])
    );
    let size = std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0);
    println!(
        "database size at 1,000,000 deployments: {:.1} MiB ({:.0} bytes each)",
        size as f64 / 1048576.0,
        size as f64 / 1e6
    );
}
