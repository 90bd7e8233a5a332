//! Leader election on a `coordination.k8s.io/v1` Lease, by client-go's
//! rules (k8s.io/client-go/tools/leaderelection/leaderelection.go):
//!
//! - expiry is judged from *locally observed* time: a candidate notes when
//!   it last saw the lease record change and takes the lease only after
//!   `lease_duration` without a change. The holder-written `renewTime` is
//!   never compared with the local clock, so clock skew between replicas
//!   cannot make two leaders ("tolerant to arbitrary clock skew", the
//!   package doc says);
//! - every write carries the read `resourceVersion`, so of two candidates
//!   one gets a 409 and stays standby;
//! - a leader that has not renewed within `renew_deadline` steps down
//!   (stops its controllers) before its lease can expire for the others.
//!
//! Correctness of allocation does not rest on this: claims are unique by
//! name. Leader election avoids duplicate work (and duplicate claims,
//! which the workload controller releases).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Timing of the election, as client-go's `LeaderElectionConfig`.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long a lease is valid after its record last changed.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// client-go's and controller-runtime's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The part of a lease record whose change proves its holder alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew: Option<String>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: Option<&LeaseSpec>) -> Self {
        Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            renew: spec
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.to_string()),
            transitions: spec.and_then(|s| s.lease_transitions),
        }
    }
}

/// What a candidate has seen of the lease, with local times only.
#[derive(Debug, Default)]
pub struct Observer {
    record: Option<Record>,
    observed_at: Option<Instant>,
}

impl Observer {
    /// Notes the lease as read at `now`. The clock restarts only when the
    /// record changed (client-go's `observedRecord` / `observedTime`).
    fn observe(&mut self, record: Record, now: Instant) {
        if self.record.as_ref() != Some(&record) {
            self.record = Some(record);
            self.observed_at = Some(now);
        }
    }

    /// Whether someone other than `me` holds a lease that is still valid
    /// at `now` by local observation.
    fn held_by_other(&self, me: &str, duration: Duration, now: Instant) -> bool {
        match (&self.record, self.observed_at) {
            (Some(r), Some(at)) => {
                r.holder.as_deref().is_some_and(|h| h != me) && at + duration > now
            }
            _ => false,
        }
    }
}

fn spec_for(me: &str, timing: &Timing, prior: Option<&LeaseSpec>) -> LeaseSpec {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let mine = prior.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    let transitions = prior.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(
            i32::try_from(timing.lease_duration.as_secs()).unwrap_or(i32::MAX),
        ),
        acquire_time: if mine {
            prior.and_then(|s| s.acquire_time.clone())
        } else {
            Some(now.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(if mine || prior.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// One round of client-go's `tryAcquireOrRenew`: whether `me` holds the
/// lease named `name` after it.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    timing: &Timing,
    observer: &mut Observer,
) -> Result<bool, kube::Error> {
    let Some(lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(spec_for(me, timing, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let now = Instant::now();
    observer.observe(Record::of(lease.spec.as_ref()), now);
    if observer.held_by_other(me, timing.lease_duration, now) {
        return Ok(false);
    }
    // The read resourceVersion is a precondition: a concurrent writer
    // makes this a 409, never a silent overwrite.
    let patch = json!({
        "metadata": {"resourceVersion": lease.metadata.resource_version},
        "spec": spec_for(me, timing, lease.spec.as_ref()),
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the election for `me` until the task is aborted: the receiver
/// says whether this replica leads. A leader whose renewals fail for
/// `renew_deadline` steps down at once.
pub fn elect(
    api: Api<Lease>,
    name: String,
    me: String,
    timing: Timing,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut observer = Observer::default();
        let mut renewed: Option<Instant> = None;
        loop {
            // A hung API call must not hold a leader past its deadline.
            let attempt = try_acquire_or_renew(&api, &name, &me, &timing, &mut observer);
            let result = tokio::time::timeout(timing.retry_period * 2, attempt).await;
            let leading = match result {
                Ok(Ok(true)) => {
                    renewed = Some(Instant::now());
                    true
                }
                Ok(Ok(false)) => false,
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(error = %why, "cannot renew or acquire the lease");
                    renewed.is_some_and(|t| t.elapsed() < timing.renew_deadline)
                }
            };
            if !leading && *tx.borrow() {
                tracing::warn!(identity = %me, "renew deadline passed or lease lost; stepping down");
                renewed = None;
            }
            tx.send_if_modified(|l| std::mem::replace(l, leading) != leading);
            tokio::time::sleep(timing.retry_period).await;
        }
    });
    (rx, task)
}

/// Gives the lease up (client-go's `ReleaseOnCancel`) so a standby takes
/// over at once instead of after `lease_duration`.
pub async fn release(api: &Api<Lease>, name: &str, me: &str) -> Result<(), kube::Error> {
    let Some(lease) = api.get_opt(name).await? else {
        return Ok(());
    };
    if lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        != Some(me)
    {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"resourceVersion": lease.metadata.resource_version},
        "spec": {"holderIdentity": null, "leaseDurationSeconds": 1},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, renew: &str) -> Record {
        Record {
            holder: Some(holder.into()),
            renew: Some(renew.into()),
            transitions: Some(0),
        }
    }

    #[test]
    fn expiry_is_judged_from_local_observation_not_the_holders_clock() {
        let d = Duration::from_secs(15);
        let t0 = Instant::now();
        let mut o = Observer::default();
        // The holder's clock is an hour ahead: its renewTime says nothing
        // to us. Unchanged for 15 s of our time, the lease is free.
        o.observe(rec("a", "2099-01-01T00:00:00Z"), t0);
        assert!(o.held_by_other("b", d, t0 + Duration::from_secs(14)));
        o.observe(
            rec("a", "2099-01-01T00:00:00Z"),
            t0 + Duration::from_secs(14),
        );
        assert!(!o.held_by_other("b", d, t0 + Duration::from_secs(16)));
        // The holder's clock is an hour behind, but it keeps renewing:
        // each change restarts our clock, so the lease stays held.
        o.observe(
            rec("a", "2000-01-01T00:00:01Z"),
            t0 + Duration::from_secs(20),
        );
        o.observe(
            rec("a", "2000-01-01T00:00:03Z"),
            t0 + Duration::from_secs(30),
        );
        assert!(o.held_by_other("b", d, t0 + Duration::from_secs(40)));
        // Our own lease is never "held by another".
        assert!(!o.held_by_other("a", d, t0 + Duration::from_secs(40)));
    }
}
