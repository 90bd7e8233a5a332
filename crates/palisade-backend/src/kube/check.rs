//! `check` and `stats` with the cluster as store. The API server's name
//! uniqueness keeps two claims from holding one subnet, but not the rest:
//! a workload with two claims (two leaders raced), a claim whose workload
//! is gone (leaked), a subnet a workload reports without a claim behind
//! it, or a Cilium pool left with a subnet someone else now holds. Each is
//! a line of the report; `problems` is pure so each rule is unit-tested.

use super::{State, claims, operator_pool};
use crate::Health;
use crate::error::{Error, Result};
use ipnet::Ipv6Net;
use palisade_core::Pool;
use palisade_core::allocator::PoolUsage;
use palisade_kube::crds::CiliumPodIPPool;
use palisade_kube::render::TENANT_LABEL;
use palisade_operator::claim::subnet_of;
use palisade_operator::crd::{SubnetClaim, TenantDeployment};
use palisade_operator::kube::api::{Api, ListParams};
use palisade_operator::kube::{Client, ResourceExt};
use std::collections::BTreeMap;

/// The pool's use from its claims: a released claim holds its subnet
/// through the quarantine (until the operator deletes it), and the lowest
/// free index is reused first, so below the highest claim every gap is
/// reusable.
pub fn usage(pool: &Pool, claims: &[SubnetClaim]) -> PoolUsage {
    let mut taken = 0u128;
    let mut quarantined = 0u128;
    let mut high = 0u128;
    for c in claims {
        let Some(index) = claim_subnet(c).and_then(|s| pool.index_of(s).ok()) else {
            continue;
        };
        taken += 1;
        if c.spec.released_at.is_some() {
            quarantined += 1;
        }
        high = high.max(index + 1);
    }
    PoolUsage::new(pool, high, high - taken, quarantined)
}

fn claim_subnet(c: &SubnetClaim) -> Option<Ipv6Net> {
    c.spec.subnet.parse().ok()
}

/// Reads everything and reports.
pub async fn run(c: &Client) -> Result<Health> {
    let pool = operator_pool(c).await?;
    let claims = claims(c).await?;
    let state = State::read(c).await?;
    let pools = ip_pools(c).await?;
    let problems = problems(&pool, &claims, &state.workloads, &pools);
    Ok(Health {
        summary: Some((state.tenants.len(), usage(&pool, &claims))),
        problems,
        place: "the cluster".into(),
    })
}

/// Palisade's `CiliumPodIPPool`s (name, CIDRs); none where Cilium's CRD
/// is not installed.
async fn ip_pools(c: &Client) -> Result<Vec<(String, Vec<String>)>> {
    let listed = Api::<CiliumPodIPPool>::all(c.clone())
        .list(&ListParams::default().labels(TENANT_LABEL))
        .await;
    match listed {
        Ok(l) => Ok(l
            .items
            .into_iter()
            .map(|p| (p.name_any(), p.spec.ipv6.cidrs))
            .collect()),
        Err(palisade_operator::kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(Error::failed("cannot list CiliumPodIPPools", e)),
    }
}

fn live(c: &SubnetClaim) -> bool {
    c.spec.released_at.is_none() && c.metadata.deletion_timestamp.is_none()
}

/// Every problem among claims, workloads and pools, one line each.
pub fn problems(
    pool: &Pool,
    claims: &[SubnetClaim],
    workloads: &[TenantDeployment],
    pools: &[(String, Vec<String>)],
) -> Vec<String> {
    let mut out = claim_problems(pool, claims);
    let by_uid: BTreeMap<String, &TenantDeployment> = workloads
        .iter()
        .filter_map(|w| Some((w.uid()?, w)))
        .collect();
    let mut held: BTreeMap<String, Vec<&SubnetClaim>> = BTreeMap::new();
    for c in claims.iter().filter(|c| live(c)) {
        if by_uid.contains_key(&c.spec.workload_uid) {
            held.entry(c.spec.workload_uid.clone()).or_default().push(c);
        } else {
            out.push(format!(
                "leaked claim {}: its deployment {}/{} (uid {}) is gone",
                c.name_any(),
                c.spec.tenant,
                c.spec.deployment,
                c.spec.workload_uid
            ));
        }
    }
    out.extend(workload_problems(workloads, &held));
    out.extend(pool_problems(workloads, pools));
    out
}

fn claim_problems(pool: &Pool, claims: &[SubnetClaim]) -> Vec<String> {
    let mut out = Vec::new();
    for c in claims {
        let name = c.name_any();
        match claim_subnet(c) {
            Some(s) if subnet_of(&name) != Some(s) => out.push(format!(
                "claim {name} holds subnet {s}, not the one its name encodes"
            )),
            Some(s) if pool.index_of(s).is_err() => out.push(format!(
                "claim {name}: subnet {s} is not a {} of pool {}",
                pool.subnet_len(),
                pool.cidr()
            )),
            Some(_) => {}
            None => out.push(format!(
                "claim {name} holds an invalid subnet {:?}",
                c.spec.subnet
            )),
        }
    }
    out
}

fn workload_id(w: &TenantDeployment) -> String {
    let ns = w.namespace().unwrap_or_default();
    format!(
        "{}/{}",
        ns.strip_prefix("tenant-").unwrap_or(&ns),
        w.name_any()
    )
}

fn workload_problems(
    workloads: &[TenantDeployment],
    held: &BTreeMap<String, Vec<&SubnetClaim>>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut reported: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for w in workloads {
        let id = workload_id(w);
        let mine = held.get(&w.uid().unwrap_or_default());
        if let Some(cs) = mine.filter(|cs| cs.len() > 1) {
            let names: Vec<String> = cs.iter().map(|c| c.name_any()).collect();
            out.push(format!(
                "duplicate claims: deployment {id} holds {} subnets ({})",
                cs.len(),
                names.join(", ")
            ));
        }
        let Some(subnet) = w.status.as_ref().and_then(|s| s.subnet.clone()) else {
            continue;
        };
        reported.entry(subnet.clone()).or_default().push(id.clone());
        let claimed = mine.is_some_and(|cs| cs.iter().any(|c| c.spec.subnet == subnet));
        if !claimed {
            out.push(format!(
                "deployment {id} reports subnet {subnet}, but no claim of it holds that subnet"
            ));
        }
    }
    for (subnet, ids) in reported.into_iter().filter(|(_, ids)| ids.len() > 1) {
        out.push(format!(
            "subnet {subnet} is reported by {} deployments: {}",
            ids.len(),
            ids.join(", ")
        ));
    }
    out
}

fn pool_problems(workloads: &[TenantDeployment], pools: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut by_cidr: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, cidrs) in pools {
        for cidr in cidrs {
            by_cidr.entry(cidr).or_default().push(name);
        }
        // The renderer names a deployment's pool `<tenant>.<deployment>`.
        let owner = workloads.iter().find(|w| {
            let id = workload_id(w);
            id.replacen('/', ".", 1) == *name
        });
        let Some(w) = owner else {
            out.push(format!(
                "leaked CiliumPodIPPool {name} ({}): no deployment of that name",
                cidrs.join(",")
            ));
            continue;
        };
        let subnet = w.status.as_ref().and_then(|s| s.subnet.as_deref());
        if let Some(s) = subnet.filter(|s| cidrs.iter().any(|c| c != s)) {
            out.push(format!(
                "CiliumPodIPPool {name} has {}, but deployment {} holds {s}",
                cidrs.join(","),
                workload_id(w)
            ));
        }
    }
    for (cidr, names) in by_cidr.into_iter().filter(|(_, n)| n.len() > 1) {
        out.push(format!(
            "{} CiliumPodIPPools share {cidr}: {}",
            names.len(),
            names.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use palisade_operator::claim::claim_name;
    use palisade_operator::crd::{SubnetClaimSpec, TenantDeploymentSpec, TenantDeploymentStatus};
    use palisade_operator::testing::example_pool;

    fn claim(index: u128, uid: &str, released: bool) -> SubnetClaim {
        let subnet = example_pool().subnet(index);
        SubnetClaim::new(
            &claim_name(subnet),
            SubnetClaimSpec {
                subnet: subnet.to_string(),
                tenant: "acme".into(),
                namespace: "tenant-acme".into(),
                deployment: uid.trim_start_matches("uid-").into(),
                workload_uid: uid.into(),
                released_at: released.then(|| "2026-01-01T00:00:00Z".into()),
            },
        )
    }

    fn workload(name: &str, subnet: Option<u128>) -> TenantDeployment {
        let mut w = TenantDeployment::new(name, TenantDeploymentSpec::default());
        w.metadata.namespace = Some("tenant-acme".into());
        w.metadata.uid = Some(format!("uid-{name}"));
        w.status = Some(TenantDeploymentStatus {
            subnet: subnet.map(|i| example_pool().subnet(i).to_string()),
            ..TenantDeploymentStatus::default()
        });
        w
    }

    #[test]
    fn usage_counts_gaps_below_the_highest_claim_as_recycled() {
        // Indices 0 and 3 live, 1 released (quarantined), 2 free.
        let claims = [
            claim(0, "uid-a", false),
            claim(1, "uid-b", true),
            claim(3, "uid-c", false),
        ];
        let u = usage(&example_pool(), &claims);
        assert_eq!(
            (u.allocated, u.quarantined, u.recycled_available),
            (2, 1, 1)
        );
        assert_eq!(u.never_used, example_pool().capacity() - 4);
    }

    #[test]
    fn a_sound_cluster_has_no_problems() {
        let claims = [claim(0, "uid-web", false), claim(1, "uid-db", false)];
        let workloads = [workload("web", Some(0)), workload("db", Some(1))];
        let pools = [
            (
                "acme.web".to_owned(),
                vec![example_pool().subnet(0).to_string()],
            ),
            (
                "acme.db".to_owned(),
                vec![example_pool().subnet(1).to_string()],
            ),
        ];
        assert_eq!(
            problems(&example_pool(), &claims, &workloads, &pools),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_inconsistency_is_one_line() {
        let mut renamed = claim(4, "uid-x", false);
        renamed.metadata.name = Some(claim_name(example_pool().subnet(5)));
        let mut outside = claim(0, "uid-y", false);
        outside.spec.subnet = "fd99::/96".into();
        outside.metadata.name = Some(claim_name("fd99::/96".parse().unwrap()));
        let claims = [claim(0, "uid-web", false), renamed, outside];
        // db reports web's subnet, and no claim of its own holds it.
        let workloads = [workload("web", Some(0)), workload("db", Some(0))];
        let pools = [(
            "acme.web".to_owned(),
            vec![example_pool().subnet(2).to_string()],
        )];
        let found = problems(&example_pool(), &claims, &workloads, &pools);
        let has = |needle: &str| found.iter().any(|p| p.contains(needle));
        assert!(has("not the one its name encodes"), "{found:#?}");
        assert!(
            has("is not a /96 of pool fd00:1234:5678::/48"),
            "{found:#?}"
        );
        assert!(
            has("deployment acme/db reports subnet fd00:1234:5678::/96, but no claim"),
            "{found:#?}"
        );
        assert!(
            has("is reported by 2 deployments: acme/web, acme/db"),
            "{found:#?}"
        );
        assert!(
            has(
                "CiliumPodIPPool acme.web has fd00:1234:5678::2:0:0/96, but deployment acme/web holds"
            ),
            "{found:#?}"
        );
    }
}
