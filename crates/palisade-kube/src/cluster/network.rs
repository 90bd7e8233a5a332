//! The cluster's address plan, checked before anything is written.
//!
//! Four IPv4 ranges meet on an EKS cluster: the VPC, the Service range
//! EKS carves out, the default pod pool and, for IPv6, the tenant pool next
//! to the default pool. A pod range that overlaps the Service range makes
//! ClusterIPs unreachable from those pods, and one that overlaps the VPC
//! shadows node addresses; neither fails at install time, so the plan is
//! refused here instead. EKS picks 10.100.0.0/16 or 172.20.0.0/16 for
//! Services when none is given (EKS API reference,
//! `KubernetesNetworkConfigRequest.serviceIpv4Cidr`), so the plan always
//! names one explicitly.

use super::ClusterError;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Per-node block of the default IPv6 pool. Cilium's multi-pool allocator
/// hands out per-node blocks from a pool at most 16 bits longer than the
/// pool (the Kubernetes `cidrset` rule it reuses), hence /96 pools.
pub const IPV6_NODE_MASK: u8 = 112;
/// Length of the default IPv6 pool derived from the tenant pool.
pub const IPV6_DEFAULT_POOL_LEN: u8 = 96;

/// The ranges `render cluster` writes, after checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPlan {
    /// The VPC eksctl creates.
    pub vpc: Ipv4Net,
    /// Kubernetes Services.
    pub service: Ipv4Net,
    /// Cilium's default pool, IPv4.
    pub pod_v4: Ipv4Net,
    /// Cilium's default pool, IPv6.
    pub pod_v6: Ipv6Net,
    /// Tenants' per-deployment pools come from here.
    pub tenant_pool: Ipv6Net,
    /// Covers `pod_v6` and `tenant_pool`: traffic within it is not masqueraded.
    pub v6_native_routing: Ipv6Net,
}

impl AddressPlan {
    /// Checks the ranges and derives the default IPv6 pool when none is given.
    pub fn new(
        vpc: Ipv4Net,
        service: Ipv4Net,
        pod_v4: Ipv4Net,
        pod_v6: Option<Ipv6Net>,
        tenant_pool: Ipv6Net,
    ) -> Result<Self, ClusterError> {
        check_service_range(service)?;
        let v4 = [("VPC", vpc), ("service", service), ("IPv4 pod", pod_v4)];
        for (i, (a_name, a)) in v4.iter().enumerate() {
            for (b_name, b) in &v4[i + 1..] {
                overlap(a_name, (*a).into(), b_name, (*b).into())?;
            }
        }
        let pod_v6 = pod_v6.unwrap_or_else(|| default_v6_pool(tenant_pool));
        overlap("IPv6 pod", pod_v6.into(), "tenant pool", tenant_pool.into())?;
        Ok(Self {
            vpc,
            service,
            pod_v4,
            pod_v6,
            tenant_pool,
            v6_native_routing: covering(pod_v6, tenant_pool),
        })
    }
}

fn overlap(a_name: &str, a: IpNet, b_name: &str, b: IpNet) -> Result<(), ClusterError> {
    if a.contains(&b) || b.contains(&a) {
        return Err(ClusterError::Overlap {
            a_name: a_name.into(),
            a,
            b_name: b_name.into(),
            b,
        });
    }
    Ok(())
}

/// EKS accepts a Service range only inside RFC 1918 and between /12 and
/// /24 (EKS API reference, `KubernetesNetworkConfigRequest`).
fn check_service_range(service: Ipv4Net) -> Result<(), ClusterError> {
    let private: [Ipv4Net; 3] = [
        Ipv4Net::new_assert([10, 0, 0, 0].into(), 8),
        Ipv4Net::new_assert([172, 16, 0, 0].into(), 12),
        Ipv4Net::new_assert([192, 168, 0, 0].into(), 16),
    ];
    let in_private = private.iter().any(|p| p.contains(&service));
    if !in_private || !(12..=24).contains(&service.prefix_len()) {
        return Err(ClusterError::ServiceRange(service));
    }
    Ok(())
}

/// The first /96 of the tenant pool's sibling (same length, last prefix
/// bit flipped): disjoint from the pool by construction, and the two share
/// a parent one bit shorter, which becomes the native-routing range.
fn default_v6_pool(tenant_pool: Ipv6Net) -> Ipv6Net {
    let len = tenant_pool.prefix_len();
    if len == 0 {
        // No sibling exists; overlap() then refuses the plan.
        return tenant_pool;
    }
    let bit = 1u128 << (128 - u32::from(len));
    let sibling = u128::from(tenant_pool.network()) ^ bit;
    let pool_len = len.max(IPV6_DEFAULT_POOL_LEN);
    Ipv6Net::new_assert(sibling.into(), pool_len).trunc()
}

/// The shortest prefix covering both ranges.
fn covering(a: Ipv6Net, b: Ipv6Net) -> Ipv6Net {
    let mut len = a.prefix_len().min(b.prefix_len());
    loop {
        let n = Ipv6Net::new_assert(a.network(), len).trunc();
        if n.contains(&b) || len == 0 {
            return n;
        }
        len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(pod_v4: &str, service: &str) -> Result<AddressPlan, ClusterError> {
        AddressPlan::new(
            "192.168.0.0/16".parse().unwrap(),
            service.parse().unwrap(),
            pod_v4.parse().unwrap(),
            None,
            "fd00:10::/48".parse().unwrap(),
        )
    }

    #[test]
    fn default_v6_pool_is_beside_the_tenant_pool_and_routed_with_it() {
        let p = plan("10.244.0.0/16", "10.100.0.0/16").unwrap();
        assert_eq!(p.pod_v6.to_string(), "fd00:10:1::/96");
        assert_eq!(p.v6_native_routing.to_string(), "fd00:10::/47");
        assert!(p.v6_native_routing.contains(&p.tenant_pool));
    }

    #[test]
    fn pod_range_inside_the_service_range_is_refused() {
        let err = plan("10.100.0.0/16", "10.100.0.0/16").unwrap_err();
        assert!(matches!(err, ClusterError::Overlap { .. }), "{err}");
        let err = plan("10.0.0.0/8", "10.100.0.0/16").unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
    }

    #[test]
    fn service_range_outside_what_eks_accepts_is_refused() {
        for bad in ["100.64.0.0/16", "10.0.0.0/8", "10.100.0.0/25"] {
            let err = plan("10.244.0.0/16", bad).unwrap_err();
            assert!(matches!(err, ClusterError::ServiceRange(_)), "{bad}: {err}");
        }
    }
}
