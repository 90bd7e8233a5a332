//! The store against a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken set-up.

use palisade_core::allocator::{SubnetAllocator, Timestamp};
use palisade_core::model::{EnvVar, ScratchVolume};
use palisade_core::{
    AllowRule, EgressMode, EgressProfile, GatewayScope, Pool, SecurityProfile, SubnetLen, Tenant,
    WorkloadSpec,
};
use palisade_store::{NewDeployment, Store, StoreError};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const NOW: Timestamp = Timestamp(1_700_000_000);

fn pool(cidr: &str, len: u8, reuse_after: u64) -> Pool {
    Pool::new(
        cidr.parse().unwrap(),
        SubnetLen::try_from(len).unwrap(),
        Duration::from_secs(reuse_after),
    )
    .unwrap()
}

fn fresh(dir: &tempfile::TempDir, p: &Pool) -> (Store, PathBuf) {
    let path = dir.path().join("state.db");
    let mut store = Store::open_or_create(&path).unwrap();
    store.init(p, false, NOW).unwrap();
    (store, path)
}

fn new(tenant: &str, name: &str) -> NewDeployment {
    NewDeployment {
        tenant: tenant.parse().unwrap(),
        name: name.parse().unwrap(),
        image: "nginx:alpine".parse().unwrap(),
        replicas: "2".parse().unwrap(),
        ports: vec![],
        labels: Default::default(),
        workload: Default::default(),
    }
}

#[test]
fn seed_recycling_scenario_reuses_the_deleted_subnet_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, path) = fresh(&dir, &pool("fd00:1::/48", 96, 0));
    let app1 = store
        .create_deployment(&new("test-tenant", "app1"), NOW)
        .unwrap();
    assert!(
        app1.tenant_created,
        "the seed creates the tenant on first use"
    );
    let app2 = store
        .create_deployment(&new("test-tenant", "app2"), NOW)
        .unwrap();
    assert!(!app2.tenant_created);
    assert_eq!(app1.deployment.subnet.to_string(), "fd00:1::/96");
    assert_eq!(app2.deployment.subnet.to_string(), "fd00:1::1:0:0/96");
    store
        .delete_deployment(
            &"test-tenant".parse().unwrap(),
            &"app1".parse().unwrap(),
            NOW,
        )
        .unwrap();
    assert_eq!(store.usage(NOW).unwrap().recycled_available, 1);
    drop(store);

    let mut store = Store::open(&path).unwrap();
    let app3 = store
        .create_deployment(&new("test-tenant", "app3"), NOW)
        .unwrap();
    assert_eq!(
        app3.deployment.subnet, app1.deployment.subnet,
        "app3 must reuse app1's subnet"
    );
    let usage = store.usage(NOW).unwrap();
    assert_eq!((usage.allocated, usage.recycled_available), (2, 0));
    assert!(store.check().unwrap().is_empty());
}

#[test]
fn quarantine_is_kept_by_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = fresh(&dir, &pool("fd00:1::/48", 96, 600));
    let a = store
        .create_deployment(&new("t", "a"), NOW)
        .unwrap()
        .deployment;
    store.delete_deployment(&a.tenant, &a.name, NOW).unwrap();
    let usage = store.usage(NOW).unwrap();
    assert_eq!((usage.quarantined, usage.recycled_available), (1, 0));
    let b = store
        .create_deployment(&new("t", "b"), NOW.plus_secs(599))
        .unwrap()
        .deployment;
    assert_ne!(b.subnet, a.subnet, "quarantined subnet reused early");
    assert_eq!(
        store.usage(NOW.plus_secs(600)).unwrap().recycled_available,
        1
    );
    let c = store
        .create_deployment(&new("t", "c"), NOW.plus_secs(600))
        .unwrap()
        .deployment;
    assert_eq!(c.subnet, a.subnet);
    assert!(store.check().unwrap().is_empty());
}

#[test]
fn failed_operations_leave_the_store_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = fresh(&dir, &pool("fd00:1::/120", 120, 0));
    store.create_deployment(&new("t", "only"), NOW).unwrap();
    let before = store.snapshot().unwrap();
    let usage_before = store.usage(NOW).unwrap();

    let errors = [
        store.create_deployment(&new("t", "only"), NOW).unwrap_err(),
        store
            .create_deployment(&new("u", "second"), NOW)
            .unwrap_err(), // pool of one: exhausted
        store
            .delete_deployment(&"t".parse().unwrap(), &"nope".parse().unwrap(), NOW)
            .unwrap_err(),
        store
            .delete_deployment(&"nope".parse().unwrap(), &"only".parse().unwrap(), NOW)
            .unwrap_err(),
        store
            .delete_tenant(&"t".parse().unwrap(), false, NOW)
            .unwrap_err(),
        store
            .init(&pool("fd00:2::/48", 96, 0), false, NOW)
            .unwrap_err(),
        store
            .init(&pool("fd00:2::/48", 96, 0), true, NOW)
            .unwrap_err(),
        store
            .create_deployments(&[new("v", "x"), new("v", "y")], NOW)
            .unwrap_err(),
    ];
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        messages[0].contains("deployment t/only already exists"),
        "{messages:?}"
    );
    assert!(
        matches!(errors[1], StoreError::PoolExhausted { capacity: 1, .. }),
        "{messages:?}"
    );
    assert!(
        messages[2].contains("deployment t/nope not found"),
        "{messages:?}"
    );
    assert!(
        messages[3].contains("tenant nope not found"),
        "{messages:?}"
    );
    assert!(
        messages[4].contains("still has 1 deployment(s)"),
        "{messages:?}"
    );
    assert!(messages[5].contains("already initialised"), "{messages:?}");
    assert!(messages[6].contains("still hold subnets"), "{messages:?}");
    assert!(
        matches!(errors[7], StoreError::PoolExhausted { .. }),
        "{messages:?}"
    );

    assert_eq!(
        store.snapshot().unwrap(),
        before,
        "a failed command changed the state"
    );
    assert_eq!(store.usage(NOW).unwrap(), usage_before);
    assert!(store.check().unwrap().is_empty());
}

#[test]
fn deleting_a_deployment_takes_its_rules_and_gateway_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = fresh(&dir, &pool("fd00:1::/48", 96, 0));
    for d in ["api", "db", "web"] {
        store.create_deployment(&new("acme", d), NOW).unwrap();
    }
    let rule = |from: &str, to: &str| AllowRule {
        tenant: "acme".parse().unwrap(),
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        port: Some("5432".parse().unwrap()),
    };
    store.allow(&rule("api", "db"), NOW).unwrap();
    store.allow(&rule("web", "api"), NOW).unwrap();
    assert!(
        store
            .allow(&rule("api", "db"), NOW)
            .unwrap_err()
            .to_string()
            .contains("already exists")
    );
    assert!(
        store
            .allow(&rule("db", "db"), NOW)
            .unwrap_err()
            .to_string()
            .contains("always reach each other")
    );
    assert!(
        store
            .allow(&rule("api", "cache"), NOW)
            .unwrap_err()
            .to_string()
            .contains("acme/cache not found")
    );
    let per_dep = GatewayScope::PerDeployment {
        tenant: "acme".parse().unwrap(),
        deployment: "api".parse().unwrap(),
    };
    store.create_gateway(&per_dep, NOW).unwrap();
    store.create_gateway(&GatewayScope::Central, NOW).unwrap();
    assert!(store.create_gateway(&GatewayScope::Central, NOW).is_err());

    let removed = store
        .delete_deployment(&"acme".parse().unwrap(), &"api".parse().unwrap(), NOW)
        .unwrap();
    assert_eq!(removed.allow_rules.len(), 2);
    assert_eq!(removed.gateways, vec![per_dep]);
    let snap = store.snapshot().unwrap();
    assert!(snap.allow_rules.is_empty());
    assert_eq!(snap.gateways.len(), 1);
    assert!(store.check().unwrap().is_empty());

    let removed = store
        .delete_tenant(&"acme".parse().unwrap(), true, NOW)
        .unwrap();
    assert_eq!(removed.deployments.len(), 2);
    assert_eq!(store.usage(NOW).unwrap().allocated, 0);
    assert!(store.check().unwrap().is_empty());
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn check_finds_leaks_duplicates_strays_and_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, path) = fresh(&dir, &pool("fd00:1::/48", 96, 0));
    for d in ["a", "b", "c"] {
        store.create_deployment(&new("t", d), NOW).unwrap();
    }
    store
        .delete_deployment(&"t".parse().unwrap(), &"c".parse().unwrap(), NOW)
        .unwrap();
    assert!(store.check().unwrap().is_empty());
    drop(store);

    // b's subnet also sits in the recycled list: a double allocation waiting to happen.
    let db = raw(&path);
    db.execute(
        "INSERT INTO recycled SELECT subnet FROM deployments WHERE name = 'b'",
        [],
    )
    .unwrap();
    // A subnet from another pool.
    let stray = "fd99::".parse::<std::net::Ipv6Addr>().unwrap().octets();
    db.execute(
        "INSERT INTO deployments (tenant, name, image, replicas, ports, subnet, labels, created_at)
         VALUES ('t', 'stray', 'nginx', 1, '[80]', ?1, '{}', 0)",
        [stray.as_slice()],
    )
    .unwrap();
    // An orphan: a deployment whose tenant is gone.
    db.execute_batch("PRAGMA foreign_keys = OFF; INSERT INTO deployments SELECT 'ghost', name, image, replicas, ports, x'fd000001000000000000000500000000', labels, created_at, workload FROM deployments WHERE name = 'a';").unwrap();
    drop(db);

    let mut store = Store::open(&path).unwrap();
    let problems: Vec<String> = store
        .check()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    let all = problems.join("\n");
    assert!(
        all.contains("is held by both t/b and the recycled list"),
        "{all}"
    );
    assert!(
        all.contains("t/stray holds fd99::/96, outside pool"),
        "{all}"
    );
    assert!(all.contains("orphan row in deployments"), "{all}");
    assert!(all.contains("above the high-water mark"), "{all}");
    assert!(all.contains("the allocated counter says 2 but 4"), "{all}");
}

#[test]
fn bulk_create_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = fresh(&dir, &pool("fd00:1::/48", 96, 0));
    let batch: Vec<_> = (0..1000)
        .map(|i| new(&format!("t{}", i % 7), &format!("d{i}")))
        .collect();
    let created = store.create_deployments(&batch, NOW).unwrap();
    assert_eq!(created.len(), 1000);
    assert_eq!(created.iter().filter(|c| c.tenant_created).count(), 7);
    let mut again = batch[..10].to_vec();
    again[0] = new("fresh", "ok");
    assert!(store.create_deployments(&again, NOW).is_err());
    assert!(
        store.tenant(&"fresh".parse().unwrap()).is_err(),
        "a failed batch left a tenant behind"
    );
    assert_eq!(store.usage(NOW).unwrap().allocated, 1000);
    assert!(store.check().unwrap().is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Create,
    Delete(usize),
    Wait(u64),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The SQLite ledger and the in-memory one make the same decisions:
    /// the same subnet for every create, the same counts after every step.
    #[test]
    fn sqlite_and_memory_allocators_agree(
        ops in proptest::collection::vec(prop_oneof![
            3 => Just(Op::Create),
            2 => any::<usize>().prop_map(Op::Delete),
            1 => (0u64..30).prop_map(Op::Wait),
        ], 1..120),
        reuse_after in prop_oneof![Just(0u64), 1u64..20],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = pool("fd00:9::/112", 116, reuse_after);
        let (mut store, _) = fresh(&dir, &p);
        let mut memory = SubnetAllocator::new(p.clone());
        let mut live: Vec<(String, ipnet::Ipv6Net)> = Vec::new();
        let mut now = NOW;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Create => {
                    let name = format!("d{i}");
                    match (store.create_deployment(&new("t", &name), now), memory.allocate(now)) {
                        (Ok(c), Ok(s)) => {
                            prop_assert_eq!(c.deployment.subnet, s);
                            live.push((name, s));
                        }
                        (Err(StoreError::PoolExhausted { .. }), Err(_)) => {}
                        (a, b) => prop_assert!(false, "store {:?} vs memory {:?}", a.map(|c| c.deployment.subnet), b),
                    }
                }
                Op::Delete(n) if !live.is_empty() => {
                    let (name, subnet) = live.swap_remove(n % live.len());
                    store.delete_deployment(&"t".parse().unwrap(), &name.parse().unwrap(), now).unwrap();
                    memory.release(subnet, now).unwrap();
                }
                Op::Delete(_) => {}
                Op::Wait(s) => now = now.plus_secs(s),
            }
            prop_assert_eq!(store.usage(now).unwrap(), memory.usage(now));
        }
        prop_assert!(store.check().unwrap().is_empty());
    }
}

#[test]
fn workloads_egress_addresses_and_proxy_ports_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, path) = fresh(&dir, &pool("fd00:1::/48", 96, 0));
    let mut acme = Tenant::with_defaults("acme".parse().unwrap(), NOW);
    acme.egress = EgressProfile {
        mode: EgressMode::CiliumEgressGateway,
        ip: Some("10.0.1.5".parse().unwrap()),
        public_ip: Some("203.0.113.7".parse().unwrap()),
    };
    acme.proxy_port = 1; // The store picks the port, not the caller.
    assert_eq!(store.create_tenant(&acme).unwrap(), 20000);
    let workload = WorkloadSpec::new(
        vec![
            EnvVar::parse_literal("PGDATA=/var/lib/postgresql/data/pg").unwrap(),
            EnvVar::parse_secret_ref("POSTGRES_PASSWORD=pg-auth:password").unwrap(),
        ],
        vec!["docker-entrypoint.sh".into()],
        vec!["postgres".into(), "-c".into(), "max_connections=50".into()],
        vec!["/var/run/postgresql:16Mi".parse::<ScratchVolume>().unwrap()],
        Some(SecurityProfile::BaselineReadOnly),
    )
    .unwrap();
    let mut db = new("acme", "db");
    db.workload = workload.clone();
    store.create_deployment(&db, NOW).unwrap();
    // A tenant made on first use gets the next port.
    store.create_deployment(&new("globex", "web"), NOW).unwrap();
    drop(store);

    let mut store = Store::open(&path).unwrap();
    let stored = store.tenant(&"acme".parse().unwrap()).unwrap();
    assert_eq!(stored.egress, acme.egress);
    assert_eq!(stored.proxy_port, 20000);
    assert_eq!(
        store.tenant(&"globex".parse().unwrap()).unwrap().proxy_port,
        20001
    );
    let deps = store.deployments(Some(&"acme".parse().unwrap())).unwrap();
    assert_eq!(deps[0].workload, workload);
    assert!(store.check().unwrap().is_empty());

    // A deleted tenant's port is free again; the others keep theirs.
    store
        .delete_tenant(&"acme".parse().unwrap(), true, NOW)
        .unwrap();
    let next = Tenant::with_defaults("initech".parse().unwrap(), NOW);
    assert_eq!(store.create_tenant(&next).unwrap(), 20000);
    assert_eq!(
        store.tenant(&"globex".parse().unwrap()).unwrap().proxy_port,
        20001
    );
}

#[test]
fn proxy_ports_run_out_with_a_clear_error_and_check_finds_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = fresh(&dir, &pool("fd00:1::/48", 96, 0));
    drop(store);
    // Every port of 20000-29999 taken, by hand: one row per port.
    raw(&path)
        .execute_batch(
            "WITH RECURSIVE p(n) AS (SELECT 20000 UNION ALL SELECT n + 1 FROM p WHERE n < 29999)
             INSERT INTO tenants (name, cpu_millis, memory_bytes, pods, egress_mode, labels, created_at, proxy_port)
             SELECT 't' || n, 1000, 1073741824, 10, 'proxy', '{}', 0, n FROM p;",
        )
        .unwrap();
    let mut store = Store::open(&path).unwrap();
    let err = store
        .create_tenant(&Tenant::with_defaults("late".parse().unwrap(), NOW))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::ProxyPortsExhausted { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("all 10000 ports 20000-29999"),
        "{err}"
    );
    let err = store
        .create_deployment(&new("late", "web"), NOW)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::ProxyPortsExhausted { .. }),
        "{err}"
    );
    assert_eq!(store.tenants().unwrap().len(), 10_000);
    assert_eq!(store.usage(NOW).unwrap().allocated, 0);
    assert!(store.check().unwrap().is_empty());
    drop(store);

    // Without the unique index, hand edits can give two tenants one port.
    raw(&path)
        .execute_batch(
            "DROP INDEX tenants_by_proxy_port;
             UPDATE tenants SET proxy_port = 20000 WHERE name = 't20001';
             UPDATE tenants SET proxy_port = 7 WHERE name = 't20002';",
        )
        .unwrap();
    let mut store = Store::open(&path).unwrap();
    let all: Vec<String> = store
        .check()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        all,
        [
            "egress-proxy port 20000 is held by several tenants: t20000, t20001",
            "tenant t20002 has egress-proxy port 7, outside 20000-29999"
        ]
    );
}
