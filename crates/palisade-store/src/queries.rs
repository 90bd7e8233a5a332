//! Read-only summaries for the dashboard, so a page about one tenant or a
//! table of counts does not load every deployment of the platform.

use crate::{Result, Store, StoreError, require_pool, rows};
use palisade_core::{GatewayScope, Snapshot, Tenant, TenantName};
use std::collections::HashMap;

/// A tenant with its deployment and replica totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantUsage {
    /// The tenant.
    pub tenant: Tenant,
    /// How many deployments it has.
    pub deployments: u64,
    /// Sum of their replicas.
    pub replicas: u64,
}

/// How many objects of each kind the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Tenants.
    pub tenants: u64,
    /// Deployments.
    pub deployments: u64,
    /// Gateways.
    pub gateways: u64,
    /// Allow rules.
    pub allow_rules: u64,
}

impl Store {
    /// Every tenant, by name, with its totals (one grouped scan).
    pub fn tenant_usage(&mut self) -> Result<Vec<TenantUsage>> {
        self.read(|tx, path| {
            require_pool(tx, path)?;
            let mut totals: HashMap<String, (u64, u64)> = HashMap::new();
            let mut stmt = tx.prepare_cached(
                "SELECT tenant, count(*), coalesce(sum(replicas), 0) FROM deployments GROUP BY tenant",
            )?;
            let mut q = stmt.query([])?;
            while let Some(r) = q.next()? {
                totals.insert(r.get(0)?, (r.get(1)?, r.get(2)?));
            }
            Ok(rows::tenants(tx)?
                .into_iter()
                .map(|tenant| {
                    let (deployments, replicas) =
                        totals.get(tenant.name.as_str()).copied().unwrap_or((0, 0));
                    TenantUsage {
                        tenant,
                        deployments,
                        replicas,
                    }
                })
                .collect())
        })
    }

    /// Object counts (no rows loaded).
    pub fn object_counts(&mut self) -> Result<ObjectCounts> {
        self.read(|tx, path| {
            require_pool(tx, path)?;
            Ok(tx.query_row(
                "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM deployments),
                        (SELECT count(*) FROM gateways), (SELECT count(*) FROM allow_rules)",
                [],
                |r| {
                    Ok(ObjectCounts {
                        tenants: r.get(0)?,
                        deployments: r.get(1)?,
                        gateways: r.get(2)?,
                        allow_rules: r.get(3)?,
                    })
                },
            )?)
        })
    }

    /// The part of the state that concerns one tenant, in one consistent
    /// read: the pool, the tenant, its deployments and allow rules, and the
    /// gateways that can front them (central, its own, its deployments').
    /// The policy compiled from it gives the same verdicts as the whole
    /// snapshot's for flows between the tenant's deployments.
    pub fn tenant_snapshot(&mut self, name: &TenantName) -> Result<Snapshot> {
        self.read(|tx, path| {
            let pool = require_pool(tx, path)?;
            let tenant =
                rows::tenant(tx, name)?.ok_or_else(|| StoreError::TenantNotFound(name.clone()))?;
            let gateways = rows::gateways(tx)?
                .into_iter()
                .filter(|g| {
                    matches!(g.scope, GatewayScope::Central) || g.scope.tenant() == Some(name)
                })
                .collect();
            Ok(Snapshot {
                pool,
                tenants: vec![tenant],
                deployments: rows::deployments(tx, Some(name))?,
                gateways,
                allow_rules: rows::rules(tx, Some(name))?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::{NewDeployment, Store};
    use palisade_core::allocator::Timestamp;
    use palisade_core::{AllowRule, GatewayScope, Policy, Pool};
    use std::time::Duration;

    fn new(tenant: &str, name: &str, replicas: u32) -> NewDeployment {
        NewDeployment {
            tenant: tenant.parse().unwrap(),
            name: name.parse().unwrap(),
            image: "nginx:alpine".parse().unwrap(),
            replicas: replicas.try_into().unwrap(),
            ports: vec![],
            labels: Default::default(),
            workload: Default::default(),
        }
    }

    #[test]
    fn summaries_agree_with_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open_or_create(&dir.path().join("s.db")).unwrap();
        let pool = Pool::new(
            Pool::parse_cidr("fd00:5::/48").unwrap(),
            "96".parse().unwrap(),
            Duration::ZERO,
        )
        .unwrap();
        s.init(&pool, false, Timestamp(0)).unwrap();
        for (t, d, r) in [("a", "web", 3), ("a", "db", 1), ("b", "web", 2)] {
            s.create_deployment(&new(t, d, r), Timestamp(1)).unwrap();
        }
        s.create_tenant(&palisade_core::Tenant::with_defaults(
            "c".parse().unwrap(),
            Timestamp(2),
        ))
        .unwrap();
        s.allow(
            &AllowRule {
                tenant: "a".parse().unwrap(),
                from: "web".parse().unwrap(),
                to: "db".parse().unwrap(),
                port: None,
            },
            Timestamp(3),
        )
        .unwrap();
        s.create_gateway(&GatewayScope::Central, Timestamp(4))
            .unwrap();
        s.create_gateway(
            &GatewayScope::PerTenant {
                tenant: "b".parse().unwrap(),
            },
            Timestamp(4),
        )
        .unwrap();

        let usage = s.tenant_usage().unwrap();
        let got: Vec<(String, u64, u64)> = usage
            .iter()
            .map(|u| (u.tenant.name.to_string(), u.deployments, u.replicas))
            .collect();
        assert_eq!(
            got,
            [("a".into(), 2, 4), ("b".into(), 1, 2), ("c".into(), 0, 0)]
        );

        let c = s.object_counts().unwrap();
        assert_eq!(
            (c.tenants, c.deployments, c.gateways, c.allow_rules),
            (3, 3, 2, 1)
        );

        let full = s.snapshot().unwrap();
        let a = s.tenant_snapshot(&"a".parse().unwrap()).unwrap();
        assert_eq!(a.deployments.len(), 2);
        assert_eq!(a.gateways.len(), 1, "central only");
        assert_eq!(a.allow_rules.len(), 1);
        // Same verdicts between a's deployments as the whole state's policy.
        let (pf, pa) = (Policy::compile(&full), Policy::compile(&a));
        let mine: Vec<_> = pf.flows().into_iter().filter(|f| a.deployments.iter().any(|d| {
            f.from == palisade_core::Endpoint::deployment(&d.tenant, &d.name)
        }) && matches!(&f.to, palisade_core::Endpoint::Deployment { tenant, .. } if tenant.as_str() == "a")).collect();
        let scoped: Vec<_> = pa
            .flows()
            .into_iter()
            .filter(|f| {
                matches!(&f.from, palisade_core::Endpoint::Deployment { .. })
                    && matches!(&f.to, palisade_core::Endpoint::Deployment { .. })
            })
            .collect();
        assert_eq!(mine, scoped);
        assert!(s.tenant_snapshot(&"zz".parse().unwrap()).is_err());
    }
}
