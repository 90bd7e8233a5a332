//! Pure decisions about failure and release: what a partial apply reports,
//! how long an object waits before its next attempt, and whether a subnet
//! is still held by something in the cluster.
//!
//! They live apart from [`crate::desired`] (what the objects should be)
//! because they judge what the API server answered, not what users asked.

use crate::crd::Condition;
use crate::desired::set_condition;
use ipnet::Ipv6Net;
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;

/// One object the API server refused, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `Kind namespace/name`.
    pub object: String,
    /// The API server's message (or why the attempt was deferred).
    pub message: String,
}

/// What one apply pass achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Objects written.
    pub applied: usize,
    /// Objects deleted.
    pub pruned: usize,
    /// Objects that could not be applied (or pruned).
    pub refused: Vec<Refusal>,
    /// Why pruning was skipped this pass, if it was.
    pub prune_skipped: Option<String>,
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, g: Option<i64>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: String::new(),
        observed_generation: g,
    }
}

/// Sets `Applied` and `Stalled` from `outcome`, and turns `Ready` false
/// when something was refused. `Stalled` is kstatus' abnormal-true
/// condition ("the reconciler is not making progress",
/// sigs.k8s.io/cli-utils/pkg/kstatus README): Flux and Argo CD report the
/// object as failed while it is `True`.
pub fn record_outcome(
    conditions: &mut Vec<Condition>,
    outcome: &Outcome,
    generation: Option<i64>,
    now: &str,
) {
    let refused: Vec<String> = outcome
        .refused
        .iter()
        .map(|r| format!("{}: {}", r.object, r.message))
        .collect();
    let applied = if refused.is_empty() {
        condition(
            "Applied",
            true,
            "Applied",
            "every object applied".into(),
            generation,
        )
    } else {
        condition(
            "Applied",
            false,
            "ApplyFailed",
            refused.join("; "),
            generation,
        )
    };
    let stalled = match (&outcome.prune_skipped, refused.is_empty()) {
        (None, true) => condition("Stalled", false, "Progressing", String::new(), generation),
        (Some(why), true) => condition("Stalled", true, "PruneSkipped", why.clone(), generation),
        (_, false) => condition(
            "Stalled",
            true,
            "ApplyFailed",
            format!("{} objects refused: {}", refused.len(), refused.join("; ")),
            generation,
        ),
    };
    set_condition(conditions, applied, now);
    set_condition(conditions, stalled, now);
    if !refused.is_empty() {
        let ready = condition(
            "Ready",
            false,
            "ApplyFailed",
            refused.join("; "),
            generation,
        );
        set_condition(conditions, ready, now);
    }
}

/// Whether the workload's Deployment runs generation `generation` of the
/// workload, everywhere: `None` when it does, else what is still pending.
/// The tenant controller stamps each Deployment with the workload
/// generation it was rendered from ([`GENERATION_ANNOTATION`]); the
/// rollout checks are `kubectl rollout status`'s for a Deployment
/// (k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go: observed
/// generation, updated, old replicas gone, available).
pub fn rollout_pending(
    generation: Option<i64>,
    deployment: Option<&k8s_openapi::api::apps::v1::Deployment>,
    replicas: u32,
) -> Option<String> {
    let Some(d) = deployment else {
        return Some("the Deployment is not created yet".into());
    };
    let stamped = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GENERATION_ANNOTATION))
        .and_then(|g| g.parse::<i64>().ok());
    if let Some(g) = generation
        && stamped != Some(g)
    {
        return Some(format!("generation {g} is not applied yet"));
    }
    let st = d.status.clone().unwrap_or_default();
    if st.observed_generation < d.metadata.generation {
        return Some("the Deployment controller has not seen the change yet".into());
    }
    let want = i32::try_from(replicas).unwrap_or(i32::MAX);
    let updated = st.updated_replicas.unwrap_or(0);
    if updated < want {
        return Some(format!("{updated}/{want} pods updated"));
    }
    let old = st.replicas.unwrap_or(0) - updated;
    if old > 0 {
        return Some(format!("{old} old pods terminating"));
    }
    let available = st.available_replicas.unwrap_or(0);
    if available < updated {
        return Some(format!("{available}/{updated} updated pods available"));
    }
    None
}

/// Annotation on a workload's Deployment: the workload generation it was
/// rendered from.
pub const GENERATION_ANNOTATION: &str = crate::desired::GENERATION_ANNOTATION;

/// kstatus' view of a workload (sigs.k8s.io/cli-utils/pkg/kstatus: a
/// resource is Current when `status.observedGeneration` equals
/// `metadata.generation` and neither `Reconciling` nor `Stalled` is
/// True): `Ready` stays False while the rollout of this generation is
/// `pending`; `Reconciling` is True while it progresses; `Stalled` is True
/// when the workload is blocked (no subnet: invalid spec, missing tenant,
/// lost subnet, full pool). `prior` is the status before this pass, for
/// transition times.
pub fn record_rollout(
    conditions: &mut Vec<Condition>,
    prior: &[Condition],
    pending: Option<&str>,
    generation: Option<i64>,
    now: &str,
) {
    let find = |c: &[Condition], t: &str| c.iter().find(|x| x.type_ == t).cloned();
    let allocated = find(conditions, "SubnetAllocated").is_some_and(|c| c.status == "True");
    let ready = find(conditions, "Ready").unwrap_or_default();
    if let (Some(why), true) = (pending, ready.status == "True") {
        // Put the prior Ready back so its transition time is judged
        // against the last written status, not this pass's draft.
        conditions.retain(|c| c.type_ != "Ready");
        conditions.extend(find(prior, "Ready"));
        let c = condition(
            "Ready",
            false,
            "RolloutInProgress",
            why.to_owned(),
            generation,
        );
        set_condition(conditions, c, now);
    }
    let ready = find(conditions, "Ready").unwrap_or_default();
    let progressing = allocated && ready.status != "True";
    let reconciling = if progressing {
        condition(
            "Reconciling",
            true,
            &ready.reason,
            ready.message.clone(),
            generation,
        )
    } else {
        condition("Reconciling", false, "Idle", String::new(), generation)
    };
    let stalled = if allocated {
        condition("Stalled", false, "Progressing", String::new(), generation)
    } else {
        condition(
            "Stalled",
            true,
            &ready.reason,
            ready.message.clone(),
            generation,
        )
    };
    set_condition(conditions, reconciling, now);
    set_condition(conditions, stalled, now);
}

/// The first retry after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between retries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How long to wait after the `failures`-th consecutive failure:
/// exponential from [`BACKOFF_BASE`], capped at [`BACKOFF_MAX`], then
/// scaled by a jitter factor in [0.5, 1.0) taken from `random` (any u64),
/// so objects that failed together do not retry together (the "equal
/// jitter" of client-go's wait.Backoff and kube-runtime's
/// `ExponentialBackoff` with jitter).
pub fn backoff_delay(failures: u32, random: u64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let raw = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_MAX);
    // 53 random bits as a fraction in [0, 1).
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    raw.mul_f64(0.5 + unit / 2.0)
}

/// Whether `v` holds the string `needle` anywhere (a pool's CIDR list, in
/// whichever shape its API version spells it).
fn mentions(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s == needle,
        Value::Array(a) => a.iter().any(|x| mentions(x, needle)),
        Value::Object(m) => m.values().any(|x| mentions(x, needle)),
        _ => false,
    }
}

fn pod_ips(pod: &Value) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = pod
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("ip").and_then(Value::as_str))
        .filter_map(|s| s.parse().ok())
        .collect();
    if let Some(ip) = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

/// What still holds `subnet`: IP pools that carve it, and pods that have
/// an address in it or no address yet (a pod being set up may be getting
/// one from it) and have not finished. Empty: the subnet may be released.
pub fn holders(subnet: Ipv6Net, pools: &[Value], pods: &[Value]) -> Vec<String> {
    let text = subnet.to_string();
    let name = |v: &Value| {
        v.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut out: Vec<String> = pools
        .iter()
        .filter(|p| p.get("spec").is_some_and(|s| mentions(s, &text)))
        .map(|p| format!("CiliumPodIPPool {}", name(p)))
        .collect();
    for pod in pods {
        let ips = pod_ips(pod);
        let finished = matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        let in_subnet = ips.iter().any(|ip| match ip {
            IpAddr::V6(a) => subnet.contains(a),
            IpAddr::V4(_) => false,
        });
        if in_subnet || (ips.is_empty() && !finished) {
            out.push(format!("Pod {}", name(pod)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half_to_full() {
        assert_eq!(backoff_delay(1, 0), Duration::from_millis(500));
        let top = backoff_delay(1, u64::MAX);
        assert!(top > Duration::from_millis(999) && top <= Duration::from_secs(1));
        assert_eq!(backoff_delay(4, 0), Duration::from_secs(4));
        assert_eq!(backoff_delay(40, 0), BACKOFF_MAX / 2);
        assert!(backoff_delay(40, u64::MAX) <= BACKOFF_MAX);
        // Different random draws spread the same failure count.
        assert_ne!(backoff_delay(3, 1 << 62), backoff_delay(3, 3 << 62));
    }

    #[test]
    fn a_subnet_is_held_by_its_pool_and_by_pods_with_addresses_in_it() {
        let net: Ipv6Net = "fd00:1234:5678::/96".parse().unwrap();
        let pool = json!({"metadata": {"name": "acme.web"},
                          "spec": {"ipv6": {"cidrs": ["fd00:1234:5678::/96"], "maskSize": 112}}});
        let other = json!({"metadata": {"name": "acme.db"},
                           "spec": {"ipv6": {"cidrs": [{"cidr": "fd00:1234:5678::1:0:0/96"}]}}});
        let pod = |name: &str, ip: Option<&str>, phase: &str| {
            let mut p = json!({"metadata": {"name": name}, "status": {"phase": phase}});
            if let Some(ip) = ip {
                p["status"]["podIPs"] = json!([{"ip": "10.0.0.1"}, {"ip": ip}]);
            }
            p
        };
        let pods = [
            pod("old", Some("fd00:1234:5678::a"), "Running"),
            pod("new", Some("fd00:1234:5678::1:0:a"), "Running"),
            pod("starting", None, "Pending"),
            pod("done", None, "Succeeded"),
        ];
        assert_eq!(
            holders(net, &[pool, other.clone()], &pods),
            ["CiliumPodIPPool acme.web", "Pod old", "Pod starting"]
        );
        assert!(holders(net, &[other], &pods[1..2]).is_empty());
    }

    #[test]
    fn refusals_make_applied_false_stalled_true_and_ready_false() {
        let mut c = Vec::new();
        let bad = Outcome {
            applied: 3,
            refused: vec![Refusal {
                object: "CiliumNetworkPolicy tenant-acme/deployment-db".into(),
                message: "admission webhook denied".into(),
            }],
            ..Outcome::default()
        };
        record_outcome(&mut c, &bad, Some(2), "t1");
        let get = |c: &[Condition], t: &str| c.iter().find(|x| x.type_ == t).cloned().unwrap();
        assert_eq!(get(&c, "Applied").status, "False");
        assert!(
            get(&c, "Applied")
                .message
                .contains("deployment-db: admission")
        );
        assert_eq!(get(&c, "Stalled").status, "True");
        assert_eq!(get(&c, "Ready").reason, "ApplyFailed");
        record_outcome(&mut c, &Outcome::default(), Some(2), "t2");
        assert_eq!(get(&c, "Applied").status, "True");
        assert_eq!(get(&c, "Stalled").status, "False");
        assert_eq!(get(&c, "Stalled").last_transition_time, "t2");
    }
}
