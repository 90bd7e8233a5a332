//! Probe agents: one `palisade lab __probe` per source namespace, a few at
//! once.
//!
//! A probe must leave from its source's own network stack, so each batch
//! runs under `ip netns exec` as a separate process that makes all its
//! probes concurrently and prints one [`ProbeResult`] a line. Both the
//! store's lab (`verify::run`) and the manifests' lab (`manifests`) measure
//! through here, so a probe means the same thing in both.

use crate::apply::{Lab, Progress, run as run_cmd};
use crate::serve::{ProbeBatch, ProbeRequest, ProbeResult};
use crate::{LabError, Result};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One agent's work: the namespace it runs in and its requests.
pub type Batch = (String, Vec<ProbeRequest>);

/// Runs every batch (`parallel` agents at once) and returns what they
/// answered, in no particular order; a request an agent did not answer is
/// missing. The first agent that fails to run is the error.
pub fn run(
    lab: &Lab,
    batches: &[Batch],
    timeout: Duration,
    parallel: usize,
    phase: &str,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<ProbeResult>> {
    progress(Progress::Phase {
        name: phase.into(),
        total: batches.len() as u64,
    });
    let results: Mutex<Vec<ProbeResult>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<LabError>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let exe = lab.exe.to_string_lossy().into_owned();
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                while let Some((ns, requests)) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                    match agent(&exe, ns, requests, timeout) {
                        Ok(mut answered) => {
                            if let Ok(mut all) = results.lock() {
                                all.append(&mut answered);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut errs) = errors.lock() {
                                errs.push(e);
                            }
                        }
                    }
                    progress(Progress::Tick(format!("{ns}: {} probes", requests.len())));
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().ok().and_then(|mut v| v.pop()) {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_default())
}

/// One agent in `ns`: the batch on its stdin, its answers from stdout.
fn agent(
    exe: &str,
    ns: &str,
    requests: &[ProbeRequest],
    timeout: Duration,
) -> Result<Vec<ProbeResult>> {
    let batch = ProbeBatch {
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        load: None,
        requests: requests.to_vec(),
    };
    let input = serde_json::to_string(&batch).map_err(LabError::json("probe batch"))?;
    let out = run_cmd(
        "ip",
        &["netns", "exec", ns, exe, "lab", "__probe"],
        Some(&input),
    )?;
    Ok(out
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}
