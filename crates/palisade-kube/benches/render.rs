//! Render benchmark: 10 000 tenants × 10 deployments to a GitOps tree, then
//! a re-render after one change. Prints seconds and peak RSS.
//!
//! `cargo bench -p palisade-kube --bench render [-- TENANTS PER_TENANT]`
//! (`BENCH_DIR` chooses where the tree goes; default a temp directory).

use palisade_kube::{RenderOptions, fixtures, tree};
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let tenants = args.first().copied().unwrap_or(10_000);
    let per = args.get(1).copied().unwrap_or(10);
    let tmp = tempfile::tempdir()?;
    let dir = std::env::var_os("BENCH_DIR").map_or_else(|| tmp.path().to_owned(), Into::into);
    let options = RenderOptions::default();

    let mut snap = fixtures::synthetic(tenants, per);
    println!("{tenants} tenants x {per} deployments -> {}", dir.display());

    let t = Instant::now();
    let summary = tree::write_snapshot(&dir, &snap, &options)?;
    println!(
        "first render: {:.2} s, {} files, peak RSS {:.0} MiB",
        t.elapsed().as_secs_f64(),
        summary.added.len(),
        peak_rss_mib()
    );

    let t = Instant::now();
    let summary = tree::write_snapshot(&dir, &snap, &options)?;
    println!(
        "unchanged re-render: {:.2} s, {} changed",
        t.elapsed().as_secs_f64(),
        summary.added.len() + summary.changed.len() + summary.removed.len()
    );

    snap.deployments[per / 2].replicas = 5u32.try_into()?;
    let t = Instant::now();
    let summary = tree::write_snapshot(&dir, &snap, &options)?;
    println!(
        "re-render after one change: {:.2} s, {} changed ({:?}), peak RSS {:.0} MiB",
        t.elapsed().as_secs_f64(),
        summary.changed.len(),
        summary.changed,
        peak_rss_mib()
    );
    Ok(())
}
