//! Snapshots for tests, golden files and the benchmark.
//!
//! Kept in the library (not under `tests/`) so the integration tests, the
//! benchmark binary and the unit tests share one definition of "the seed
//! scenario" instead of three drifting copies.

use palisade_core::{
    AllowRule, Deployment, EgressMode, EgressProfile, Gateway, GatewayScope, Labels, Pool, Quota,
    Replicas, Snapshot, SubnetLen, Tenant, Timestamp,
};
use std::time::Duration;

/// Parses a literal that the fixture author wrote; a typo is a bug in the
/// fixture, reported with the offending text.
fn p<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    match s.parse() {
        Ok(v) => v,
        #[allow(clippy::panic)] // Fixture literals are constants of this file.
        Err(e) => panic!("fixture literal {s:?} does not parse: {e:?}"),
    }
}

fn pool() -> Pool {
    match Pool::new(p("fd00:10::/48"), SubnetLen::default(), Duration::ZERO) {
        Ok(pool) => pool,
        #[allow(clippy::panic)] // A constant, valid pool.
        Err(e) => panic!("fixture pool: {e}"),
    }
}

fn tenant(name: &str, node_pool: Option<&str>, mode: EgressMode, ip: Option<&str>) -> Tenant {
    Tenant {
        name: p(name),
        quota: Quota::default(),
        node_pool: node_pool.map(p),
        egress: EgressProfile {
            mode,
            ip: ip.map(p),
            public_ip: None,
        },
        proxy_port: 0,
        labels: Labels::new(),
        created_at: Timestamp(0),
    }
}

fn deployment(
    pool: &Pool,
    index: u128,
    tenant: &str,
    name: &str,
    image: &str,
    replicas: u32,
    ports: &[&str],
) -> Deployment {
    Deployment {
        tenant: p(tenant),
        name: p(name),
        image: p(image),
        replicas: Replicas::try_from(replicas).unwrap_or_default(),
        ports: ports.iter().map(|s| p(s)).collect(),
        subnet: pool.subnet(index),
        labels: Labels::new(),
        workload: Default::default(),
        created_at: Timestamp(0),
    }
}

/// The seeds' example: acme-corp (dedicated node pool `acme-pool`, egress
/// through the proxy) runs web-frontend, api-backend and database with
/// api-backend → database allowed on 5432 and a per-deployment gateway in
/// front of web-frontend; big-corp (egress gateway with a fixed IP) runs a
/// database behind its per-tenant gateway; a central gateway fronts all.
pub fn seed() -> Snapshot {
    let pool = pool();
    let mut labels = Labels::new();
    labels.insert(p("team"), p("payments"));
    let mut acme = tenant("acme-corp", Some("acme-pool"), EgressMode::Proxy, None);
    acme.labels = labels;
    Snapshot {
        tenants: vec![
            acme,
            tenant(
                "big-corp",
                None,
                EgressMode::CiliumEgressGateway,
                Some("203.0.113.10"),
            ),
        ],
        deployments: vec![
            deployment(
                &pool,
                1,
                "acme-corp",
                "api-backend",
                "node:18-alpine",
                2,
                &["8080"],
            ),
            deployment(
                &pool,
                2,
                "acme-corp",
                "database",
                "postgres:14",
                1,
                &["5432"],
            ),
            deployment(
                &pool,
                0,
                "acme-corp",
                "web-frontend",
                "nginx:alpine",
                3,
                &["80"],
            ),
            deployment(
                &pool,
                3,
                "big-corp",
                "database",
                "postgres:14",
                1,
                &["5432"],
            ),
        ],
        gateways: vec![
            Gateway {
                scope: GatewayScope::Central,
                created_at: Timestamp(0),
            },
            Gateway {
                scope: GatewayScope::PerTenant {
                    tenant: p("big-corp"),
                },
                created_at: Timestamp(0),
            },
            Gateway {
                scope: GatewayScope::PerDeployment {
                    tenant: p("acme-corp"),
                    deployment: p("web-frontend"),
                },
                created_at: Timestamp(0),
            },
        ],
        allow_rules: vec![AllowRule {
            tenant: p("acme-corp"),
            from: p("api-backend"),
            to: p("database"),
            port: Some(p("5432")),
        }],
        pool,
    }
}

/// `tenants` tenants with `per_tenant` deployments each (every fifth
/// tenant with a node pool, every tenant's `d1 → d0` allowed, one
/// per-tenant gateway every tenth): the benchmark's shape.
pub fn synthetic(tenants: usize, per_tenant: usize) -> Snapshot {
    let pool = pool();
    let mut snap = Snapshot {
        pool: pool.clone(),
        tenants: Vec::with_capacity(tenants),
        deployments: Vec::with_capacity(tenants * per_tenant),
        gateways: Vec::new(),
        allow_rules: Vec::new(),
    };
    let mut index = 0u128;
    for t in 0..tenants {
        let tn = format!("t{t:05}");
        let np = format!("pool-{t:05}");
        snap.tenants.push(tenant(
            &tn,
            (t % 5 == 0).then_some(np.as_str()),
            EgressMode::Proxy,
            None,
        ));
        for d in 0..per_tenant {
            snap.deployments.push(deployment(
                &pool,
                index,
                &tn,
                &format!("d{d}"),
                "nginx:alpine",
                2,
                &["80"],
            ));
            index += 1;
        }
        if per_tenant >= 2 {
            snap.allow_rules.push(AllowRule {
                tenant: p(&tn),
                from: p("d1"),
                to: p("d0"),
                port: Some(p("80")),
            });
        }
        if t % 10 == 0 {
            snap.gateways.push(Gateway {
                scope: GatewayScope::PerTenant { tenant: p(&tn) },
                created_at: Timestamp(0),
            });
        }
    }
    snap
}
