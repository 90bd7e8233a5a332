//! Many processes at once, and processes killed mid-write.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{BIN, Env};

#[test]
fn eight_concurrent_processes_never_share_a_subnet() {
    const WORKERS: usize = 8;
    const EACH: usize = 200;
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:10::/48"]).ok();
    let state = env.state.clone();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let state = state.clone();
            std::thread::spawn(move || {
                let mut subnets = Vec::with_capacity(EACH);
                for i in 0..EACH {
                    let out = Command::new(BIN)
                        .arg("--state")
                        .arg(&state)
                        .args([
                            "-o",
                            "json",
                            "create",
                            &format!("tenant-{}", w % 3),
                            &format!("w{w}-d{i}"),
                            "nginx:alpine",
                        ])
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "worker {w} create {i}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    subnets.push(d["subnet"].as_str().unwrap().to_owned());
                }
                subnets
            })
        })
        .collect();
    let reported: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let distinct: HashSet<&String> = reported.iter().collect();
    assert_eq!(reported.len(), WORKERS * EACH);
    assert_eq!(
        distinct.len(),
        WORKERS * EACH,
        "two processes were handed the same subnet"
    );
    let stored = env.json(&["list"]);
    let stored: HashSet<String> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["subnet"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, reported.into_iter().collect::<HashSet<_>>());
    assert!(
        env.run(&["check"])
            .ok()
            .starts_with("ok: 3 tenants, 1600 deployments")
    );
}

#[test]
fn killing_the_cli_at_random_moments_loses_nothing_reported() {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:11::/48"]).ok();
    // Some recycling in the mix, so kills also land inside releases.
    // Kill within the time a create normally takes on this machine, so kills
    // land before, during and after the transaction.
    let started = std::time::Instant::now();
    for i in 0..5 {
        env.run(&["create", "warmup", &format!("w{i}"), "nginx"])
            .ok();
    }
    let typical = (started.elapsed() / 5).as_micros().max(500) as u64;
    let mut reported: Vec<(String, String)> = Vec::new();
    let mut killed_creates = 0;
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..150 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delete = i % 5 == 4 && !reported.is_empty();
        let mut cmd = Command::new(BIN);
        cmd.arg("--state")
            .arg(&env.state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let name = format!("d{i}");
        if delete {
            let (_, victim) = &reported[(seed as usize) % reported.len()];
            cmd.args(["delete", "crash", victim]);
        } else {
            cmd.args(["-o", "json", "create", "crash", &name, "nginx:alpine"]);
        }
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_micros(seed % (typical * 3 / 2)));
        let _ = child.kill(); // SIGKILL; it may already have finished.
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if delete {
            // Whether or not it printed, the delete may have committed: the
            // victim is no longer promised to be present.
            let (_, victim) = &reported[(seed as usize) % reported.len()];
            let victim = victim.clone();
            reported.retain(|(_, n)| *n != victim);
        } else if let Ok(d) = serde_json::from_str::<serde_json::Value>(&stdout) {
            reported.push((d["subnet"].as_str().unwrap().to_owned(), name));
        } else {
            killed_creates += 1;
        }
    }
    let check = env.run(&["check"]);
    assert_eq!(
        check.code, 0,
        "check failed after crashes: {}",
        check.stderr
    );
    let stored = env.json(&["list"]);
    let stored: HashSet<(String, String)> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["subnet"].as_str().unwrap().to_owned(),
                d["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for r in &reported {
        assert!(
            stored.contains(r),
            "{r:?} was reported created but is missing after crashes"
        );
    }
    assert!(
        !reported.is_empty(),
        "every create was killed before it finished; the test proved nothing"
    );
    assert!(
        killed_creates > 0,
        "no create was killed; the test proved nothing"
    );
}
