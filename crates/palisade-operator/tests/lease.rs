//! Leader election against the in-memory API server (issue 14 fault 6):
//! one leader among candidates, and a leader that cannot renew steps down
//! within its renew deadline (before its lease can expire for others).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use palisade_operator::lease::{Timing, elect};
use palisade_operator::testing::FakeApi;
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn fast() -> Timing {
    Timing {
        lease_duration: Duration::from_millis(900),
        renew_deadline: Duration::from_millis(500),
        retry_period: Duration::from_millis(100),
    }
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn leads(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_candidate_leads_and_a_leader_that_cannot_renew_steps_down() {
    let api = FakeApi::new();
    let leases = |api: &FakeApi| Api::<Lease>::namespaced(api.client(), "palisade-system");
    let (a, ta) = elect(leases(&api), "op".into(), "a".into(), fast());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (b, tb) = elect(leases(&api), "op".into(), "b".into(), fast());
    until("a leader", Duration::from_secs(5), || {
        leads(&a) || leads(&b)
    })
    .await;
    // Over several renewals, never two leaders.
    for _ in 0..15 {
        assert!(!(leads(&a) && leads(&b)), "two leaders");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let (leader, standby) = if leads(&a) { (&a, &b) } else { (&b, &a) };
    // The API server refuses the lease from now on (etcd trouble, a
    // network partition): the leader stops acting within its deadline,
    // not when (or after) its lease expires for the others.
    api.reject("leases", "op", 500, "etcdserver: request timed out");
    let took = until("step down", Duration::from_secs(3), || !leads(leader)).await;
    assert!(
        took < fast().renew_deadline + fast().retry_period * 3,
        "stepped down after {took:?}"
    );
    assert!(!leads(standby));
    // Once the API works again, someone leads again.
    api.accept("leases", "op");
    until("a new leader", Duration::from_secs(5), || {
        leads(&a) || leads(&b)
    })
    .await;
    ta.abort();
    tb.abort();
}
