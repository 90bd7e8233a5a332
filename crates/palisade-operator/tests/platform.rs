//! Seed 002 in operator mode: a tenant with a node pool and a fixed egress
//! IP. The operator renders the platform (the egress proxy's ConfigMap
//! among it) from the custom resources; the real proxy, run with that
//! config on real sockets, sends the tenant's request from the tenant's
//! egress IP, as a stand-in for `curl ifconfig.me` sees it. The platform's
//! objects are checked against the pinned Kubernetes schemas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../palisade-kube/tests/support/mod.rs"]
mod kube_support;

use common::{ctx, reconcile_tenant, reconcile_workload, tenant};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use palisade_operator::crd::{
    API_VERSION, PLATFORM_NAME, Platform, PlatformSpec, SubnetClaim, Tenant, TenantDeployment,
};
use palisade_operator::platform::{self, PORT_LEDGER, PlatformState};
use palisade_operator::reconcile::Ctx;
use palisade_operator::testing::FakeApi;
use palisade_proxy::config::ProxyConfig;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The tenant's fixed egress IP: a loopback address, which this host owns
/// (all of 127.0.0.0/8 is local on Linux), as an egress node owns its
/// secondary IPs.
const EGRESS_IP: &str = "127.0.0.7";

fn seed_002(api: &FakeApi) {
    let tenant = |name: &str, spec: Value| {
        api.insert(
            API_VERSION,
            "tenants",
            json!({"apiVersion": API_VERSION, "kind": "Tenant",
                   "metadata": {"name": name}, "spec": spec}),
        );
    };
    tenant(
        "acme",
        json!({"nodePool": "acme-pool", "egress": {"ip": EGRESS_IP},
               "gateway": true}),
    );
    tenant(
        "big",
        json!({"egress": {"deniedDomains": ["*.example.net"]}}),
    );
    let workload = |t: &str, name: &str| {
        api.insert(
            API_VERSION,
            "tenantdeployments",
            json!({"apiVersion": API_VERSION, "kind": "TenantDeployment",
                   "metadata": {"name": name, "namespace": format!("tenant-{t}")},
                   "spec": {"image": "nginx:alpine", "replicas": 1, "ports": [80]}}),
        );
    };
    workload("acme", "egress-check");
    workload("big", "db");
}

type Inputs = (
    Vec<Tenant>,
    Vec<TenantDeployment>,
    Vec<SubnetClaim>,
    Option<Platform>,
);

/// What the operator's caches would hold.
async fn inputs(c: &Ctx) -> Inputs {
    let lp = ListParams::default();
    let tenants = Api::<Tenant>::all(c.client.clone())
        .list(&lp)
        .await
        .unwrap();
    let workloads = Api::<TenantDeployment>::all(c.client.clone())
        .list(&lp)
        .await
        .unwrap();
    let claims = Api::<SubnetClaim>::all(c.client.clone())
        .list(&lp)
        .await
        .unwrap();
    let platform = Api::<Platform>::all(c.client.clone())
        .get_opt(PLATFORM_NAME)
        .await
        .unwrap();
    (tenants.items, workloads.items, claims.items, platform)
}

async fn reconcile(c: &Ctx, state: &mut PlatformState, i: &Inputs) -> platform::PlatformOutcome {
    let inputs = platform::Inputs {
        tenants: &i.0,
        workloads: &i.1,
        claims: &i.2,
        platform: i.3.as_ref().map(|p| &p.spec),
    };
    platform::reconcile_platform(c, state, inputs)
        .await
        .unwrap()
}

async fn platform(c: &Ctx, state: &mut PlatformState) -> platform::PlatformOutcome {
    let i = inputs(c).await;
    reconcile(c, state, &i).await
}

async fn proxy_config(c: &Ctx) -> ProxyConfig {
    let cm = Api::<ConfigMap>::namespaced(c.client.clone(), "palisade-system")
        .get("palisade-proxy")
        .await
        .unwrap();
    let yaml = cm.data.unwrap().remove("proxy.yaml").unwrap();
    ProxyConfig::from_yaml(&yaml).unwrap()
}

/// Answers every HTTP request with the caller's address, as ifconfig.me does.
async fn ifconfig_me() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = peer.ip().to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_fixed_egress_ip_works_through_the_operators_proxy_config() {
    let Some(curl) = kube_support::find_tool("curl") else {
        return kube_support::skip("curl not found");
    };
    let api = FakeApi::new();
    seed_002(&api);
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "egress-check").await;
    reconcile_workload(&c, "big", "db").await;

    let mut state = PlatformState::default();
    let outcome = platform(&c, &mut state).await;
    assert!(outcome.left_out.is_empty(), "{:?}", outcome.left_out);
    // Ports from the ledger, recorded in each tenant's spec.
    let acme = tenant(&c, "acme").await;
    assert_eq!(acme.spec.proxy_port, Some(20000));
    assert_eq!(tenant(&c, "big").await.spec.proxy_port, Some(20001));
    let ledger = Api::<ConfigMap>::namespaced(c.client.clone(), "palisade-system")
        .get(PORT_LEDGER)
        .await
        .unwrap();
    assert_eq!(
        ledger.data.unwrap()["20000"],
        format!("acme {}", acme.metadata.uid.unwrap())
    );

    let config = proxy_config(&c).await;
    let names: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["acme", "big"]);
    let t = &config.tenants[0];
    assert_eq!(t.listen_port, Some(20000));
    assert_eq!(t.egress.ipv4, Some(EGRESS_IP.parse().unwrap()));
    let subnet = common::workload(&c, "acme", "egress-check")
        .await
        .status
        .unwrap()
        .subnet
        .unwrap();
    assert_eq!(t.sources[0].prefix.to_string(), subnet);
    assert!(config.tenants[1].deny_domains[0].matches("api.example.net"));

    // Nothing changed: the next pass makes no request but its LISTs (the
    // test's; the operator reads its caches); a fresh state reads every
    // object once and writes nothing.
    let now = inputs(&c).await;
    api.clear_log();
    let again = reconcile(&c, &mut state, &now).await;
    assert_eq!(again.applied, 0);
    assert!(api.log().is_empty(), "{:?}", api.log());
    let fresh = platform(&c, &mut PlatformState::default()).await;
    assert_eq!(fresh.applied, 0);
    assert!(api.writes().is_empty(), "{:?}", api.writes());

    // The real proxy with the operator's config, on this host's loopback
    // instead of the egress node's interfaces.
    let origin = ifconfig_me().await;
    let mut config = config;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_listen = "127.0.0.1:0".parse().unwrap();
    let port = free_port().await;
    config.tenants[0].listen_port = Some(port);
    config.tenants[1].listen_port = None;
    // The stand-in for the internet is on loopback, which the proxy's SSRF
    // rules refuse unless allowed.
    config.tenants[0].allow_cidrs = vec![IpAddr::from([127, 0, 0, 1]).into()];
    config.tenants[0].allow_ports = vec![origin.port()];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(palisade_proxy::serve(config, listener, admin, async {
        let _ = stopped.await;
    }));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(curl)
            .args(["-sS", "--max-time", "20", "-x"])
            .arg(format!("http://127.0.0.1:{port}"))
            .arg(format!("http://{origin}/"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let _ = stop.send(());
    proxy.await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), EGRESS_IP);
}

#[tokio::test]
async fn the_platform_objects_are_valid_kubernetes_1_31_to_1_34_objects() {
    let Some(validator) = kube_support::find_tool("kubernetes-validate") else {
        return kube_support::skip(
            "kubernetes-validate not found (run scripts/test.sh or set PALISADE_VENV)",
        );
    };
    let api = FakeApi::new();
    seed_002(&api);
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "egress-check").await;
    platform(&c, &mut PlatformState::default()).await;
    let kinds = [
        ("v1", "namespaces"),
        ("v1", "serviceaccounts"),
        ("v1", "configmaps"),
        ("v1", "services"),
        ("apps/v1", "deployments"),
        ("policy/v1", "poddisruptionbudgets"),
        ("node.k8s.io/v1", "runtimeclasses"),
        (
            "admissionregistration.k8s.io/v1",
            "validatingadmissionpolicies",
        ),
        (
            "admissionregistration.k8s.io/v1",
            "validatingadmissionpolicybindings",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for (gv, plural) in kinds {
        for mut o in api.all(gv, plural) {
            // What the API server adds on create is not what we apply.
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                for k in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
                    m.remove(k);
                }
            }
            if let Some(o) = o.as_object_mut() {
                o.remove("status");
            }
            let name = format!("o{}.yaml", names.len());
            std::fs::write(dir.path().join(&name), serde_json::to_string(&o).unwrap()).unwrap();
            names.push(name);
        }
    }
    // The namespace, the proxy's six objects, the RuntimeClass, the
    // admission policy and its binding, the gateways' namespace, the ledger.
    assert!(names.len() >= 11, "{names:?}");
    for version in ["1.31", "1.32", "1.33", "1.34"] {
        let out = Command::new(&validator)
            .args(["-k", version, "--strict"])
            .args(&names)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        for name in &names {
            let verdicts: Vec<&str> = text
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some(name.as_str()))
                .collect();
            assert!(
                verdicts.len() == 1 && verdicts[0].contains(" passed for resource "),
                "Kubernetes {version}: {name}: {text}"
            );
        }
    }
}

/// Inputs of tenants alone.
fn only(tenants: &[Tenant]) -> platform::Inputs<'_> {
    platform::Inputs {
        tenants,
        workloads: &[],
        claims: &[],
        platform: None,
    }
}

/// Two operators (a leader and a stale one), each with a cache that holds
/// one of two new tenants, allocate at once: whichever writes the ledger
/// second is refused (409) and decides again from a fresh read, so the
/// tenants never share a port.
#[tokio::test]
async fn two_operators_allocating_at_once_never_give_one_port_twice() {
    let api = FakeApi::new();
    api.add_tenant("a");
    api.add_tenant("b");
    let (c1, c2) = (ctx(&api), ctx(&api));
    let (a, b) = (vec![tenant(&c1, "a").await], vec![tenant(&c1, "b").await]);
    let (mut s1, mut s2) = (PlatformState::default(), PlatformState::default());
    let mut refused = 0;
    for _ in 0..5 {
        let (r1, r2) = tokio::join!(
            platform::reconcile_platform(&c1, &mut s1, only(&a)),
            platform::reconcile_platform(&c2, &mut s2, only(&b)),
        );
        refused += usize::from(r1.is_err()) + usize::from(r2.is_err());
        if r1.is_ok() && r2.is_ok() {
            break;
        }
    }
    let (pa, pb) = (
        tenant(&c1, "a").await.spec.proxy_port,
        tenant(&c1, "b").await.spec.proxy_port,
    );
    assert!(pa.is_some() && pb.is_some() && pa != pb, "{pa:?} {pb:?}");
    let ledger = Api::<ConfigMap>::namespaced(c1.client.clone(), "palisade-system")
        .get(PORT_LEDGER)
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    eprintln!("ledger writes refused and retried: {refused}");
}

/// The real `palisade-operator run` binary against the in-memory API
/// server over TCP (with watches): the proxy's ConfigMap appears with the
/// tenant's subnet, port and egress IP, and the tenant's own policy lets
/// its pods reach that proxy on the egress nodes on that port, as
/// `palisade render` renders an in-cluster proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_binary_writes_the_proxy_config_and_tenants_reach_it_on_the_egress_nodes() {
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let api = FakeApi::new();
    seed_002(&api);
    let (addr, server) = api.serve_tcp().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeApi::kubeconfig(addr)).unwrap();
    let _child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_palisade-operator"))
            .args([
                "run",
                "--pool",
                "fd00:1234:5678::/48",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--identity", "replica-1"])
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", "palisade-system")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let config = || {
        let cm = api.get(
            "v1",
            "configmaps",
            Some("palisade-system"),
            "palisade-proxy",
        )?;
        let config = ProxyConfig::from_yaml(cm["data"]["proxy.yaml"].as_str()?).ok()?;
        let acme = config.tenants.iter().find(|t| t.name.as_str() == "acme")?;
        (!acme.sources.is_empty()).then(|| acme.clone())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let acme = loop {
        if let Some(acme) = config() {
            break acme;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no proxy config with acme's subnet"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(acme.listen_port, Some(20000));
    assert_eq!(acme.egress.ipv4, Some(EGRESS_IP.parse().unwrap()));
    let policy = loop {
        let p = api
            .all("cilium.io/v2", "ciliumnetworkpolicies")
            .into_iter()
            .find(|p| {
                p.pointer("/metadata/namespace") == Some(&json!("tenant-acme"))
                    && p.to_string().contains("toNodes")
                    // Rendered again once the operator wrote the port
                    // into the tenant's spec (the shared port until then).
                    && p.to_string().contains("\"20000\"")
            });
        if let Some(p) = p {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no acme policy to the egress nodes on port 20000"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let text = policy.to_string();
    assert!(text.contains("palisade.io/egress-proxy"), "{text}");
    server.abort();
}

const GATEWAYS: &str = "gateway.networking.k8s.io/v1";

/// Turns the central gateway on or off, as `palisade gateway add/remove
/// --central --store kubernetes` does.
fn central(api: &FakeApi, on: bool) {
    api.insert(
        API_VERSION,
        "platforms",
        json!({"apiVersion": API_VERSION, "kind": "Platform",
               "metadata": {"name": PLATFORM_NAME}, "spec": {"centralGateway": on}}),
    );
}

/// The object's uid in the API server, if it exists.
fn uid(api: &FakeApi, gv: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<String> {
    api.get(gv, plural, ns, name)
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
}

/// A copy of the central gateway someone made, with the operator's labels.
fn look_alike(api: &FakeApi, ns: &str, name: &str) {
    api.insert(
        GATEWAYS,
        "gateways",
        json!({"apiVersion": GATEWAYS, "kind": "Gateway",
               "metadata": {"name": name, "namespace": ns,
                            "labels": {"app.kubernetes.io/managed-by": "palisade-operator"}},
               "spec": {"gatewayClassName": "cilium", "listeners": []}}),
    );
}

/// With the Platform object asking for it, the platform pass applies the
/// central Gateway and each tenant pass its routes to it; after `gateway
/// remove --central` both go, the Gateway by the platform's inventory (it
/// was created by the operator, and is deleted with its uid as a
/// precondition), the routes by the tenant's owner uid. Copies carrying
/// the operator's labels stay, and a pass with nothing new makes no
/// request.
#[tokio::test]
async fn removing_the_central_gateway_deletes_what_the_operator_created_and_only_that() {
    let api = FakeApi::new();
    seed_002(&api);
    let c = ctx(&api);
    reconcile_workload(&c, "acme", "egress-check").await;
    reconcile_workload(&c, "big", "db").await;
    central(&api, true);
    let mut state = PlatformState::default();
    platform(&c, &mut state).await;
    reconcile_tenant(&c, "big").await;
    let gw = || {
        uid(
            &api,
            GATEWAYS,
            "gateways",
            Some("palisade-gateways"),
            "central",
        )
    };
    let route = || {
        uid(
            &api,
            GATEWAYS,
            "httproutes",
            Some("tenant-big"),
            "central-db",
        )
    };
    assert!(gw().is_some() && route().is_some());
    look_alike(&api, "palisade-gateways", "central-copy");
    look_alike(&api, "default", "central");

    central(&api, false);
    let outcome = platform(&c, &mut state).await;
    reconcile_tenant(&c, "big").await;
    assert_eq!(outcome.pruned, 1);
    assert_eq!((gw(), route()), (None, None));
    // acme's own gateway still needs the gateways' namespace.
    assert!(uid(&api, "v1", "namespaces", None, "palisade-gateways").is_some());
    for (ns, name) in [
        ("palisade-gateways", "central-copy"),
        ("default", "central"),
    ] {
        assert!(
            uid(&api, GATEWAYS, "gateways", Some(ns), name).is_some(),
            "{ns}/{name}"
        );
    }
    let now = inputs(&c).await;
    api.clear_log();
    assert_eq!(reconcile(&c, &mut state, &now).await.pruned, 0);
    assert!(api.log().is_empty(), "{:?}", api.log());
}

/// An object of a recorded name that someone else deleted and made
/// again (a new uid) is not the operator's: the DELETE's uid precondition
/// fails (409) and it stays.
#[tokio::test]
async fn an_object_re_created_by_someone_else_is_not_deleted() {
    let api = FakeApi::new();
    // Its own gateway keeps the gateways' namespace.
    api.insert(
        API_VERSION,
        "tenants",
        json!({"apiVersion": API_VERSION, "kind": "Tenant",
               "metadata": {"name": "a"}, "spec": {"gateway": true}}),
    );
    let c = ctx(&api);
    central(&api, true);
    let mut state = PlatformState::default();
    platform(&c, &mut state).await;
    let gw = || {
        uid(
            &api,
            GATEWAYS,
            "gateways",
            Some("palisade-gateways"),
            "central",
        )
    };
    let first = gw().unwrap();
    api.delete(GATEWAYS, "gateways", Some("palisade-gateways"), "central");
    look_alike(&api, "palisade-gateways", "central");
    let theirs = gw().unwrap();
    assert_ne!(first, theirs);

    central(&api, false);
    api.clear_log();
    let outcome = platform(&c, &mut state).await;
    assert_eq!(outcome.pruned, 0);
    assert_eq!(gw(), Some(theirs));
    // It was asked, with the recorded uid, and refused.
    let deletes: Vec<String> = api
        .writes()
        .into_iter()
        .filter(|w| w.starts_with("DELETE"))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
}

/// With the last gateway gone, the gateways' namespace the operator
/// created goes too, after what is in it.
#[tokio::test]
async fn the_gateways_namespace_goes_with_the_last_gateway() {
    let api = FakeApi::new();
    api.add_tenant("a");
    let c = ctx(&api);
    central(&api, true);
    let mut state = PlatformState::default();
    platform(&c, &mut state).await;
    let ns = || uid(&api, "v1", "namespaces", None, "palisade-gateways");
    assert!(ns().is_some());

    central(&api, false);
    api.clear_log();
    let outcome = platform(&c, &mut state).await;
    assert_eq!(outcome.pruned, 2);
    let deletes: Vec<String> = api
        .writes()
        .into_iter()
        .filter(|w| w.starts_with("DELETE"))
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    assert!(deletes[0].contains("/gateways/central"), "{deletes:?}");
    assert!(
        deletes[1].contains("/namespaces/palisade-gateways"),
        "{deletes:?}"
    );
    assert_eq!(ns(), None);
    // Nothing is left to record or delete: the inventory says so once.
    let fresh = platform(&c, &mut PlatformState::default()).await;
    assert_eq!((fresh.applied, fresh.pruned), (0, 0));
}

/// Waits until the API server has seen no write for a second.
async fn settled(api: &FakeApi) {
    let start = std::time::Instant::now();
    loop {
        let before = api.writes().len();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if api.writes().len() == before {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "never settled"
        );
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The running controllers (watches over TCP) follow the Platform object:
/// its change reaches the platform pass (the Gateway) and every tenant's
/// (the routes), both ways; then, at rest, only the watches stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_operator_follows_the_platform_object() {
    let api = FakeApi::new();
    api.add_tenant("acme");
    api.add_workload(
        "acme",
        "web",
        json!({"image": "nginx:alpine", "ports": [80]}),
    );
    let (addr, server) = api.serve_tcp().await.unwrap();
    let client = FakeApi::tcp_client(addr).unwrap();
    let ctx = std::sync::Arc::new(Ctx::new(
        client.clone(),
        palisade_operator::testing::example_config(),
    ));
    let health = std::sync::Arc::new(palisade_operator::run::Health::default());
    let operator = tokio::spawn(palisade_operator::run::controllers(ctx, health.clone()));
    let gw = || {
        uid(
            &api,
            GATEWAYS,
            "gateways",
            Some("palisade-gateways"),
            "central",
        )
        .is_some()
    };
    let route = || {
        uid(
            &api,
            GATEWAYS,
            "httproutes",
            Some("tenant-acme"),
            "central-web",
        )
        .is_some()
    };
    eventually("ready with web's Deployment", || {
        health.is_ready()
            && api
                .get("apps/v1", "deployments", Some("tenant-acme"), "web")
                .is_some()
    })
    .await;
    // Nothing in flight: only the Platform's change can start a pass now.
    settled(&api).await;
    let platforms: Api<Platform> = Api::all(client);
    let on = Platform::new(
        PLATFORM_NAME,
        PlatformSpec {
            central_gateway: true,
        },
    );
    platforms.create(&PostParams::default(), &on).await.unwrap();
    eventually("the central gateway and web's route", || gw() && route()).await;
    let off = json!({"spec": {"centralGateway": false}});
    platforms
        .patch(PLATFORM_NAME, &PatchParams::default(), &Patch::Merge(&off))
        .await
        .unwrap();
    eventually("the central gateway and web's route gone", || {
        !gw() && !route()
    })
    .await;
    settled(&api).await;
    api.clear_log();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let log = api.log();
    assert!(
        log.iter().all(|l| l.contains("watch=true")),
        "at rest: {log:?}"
    );
    operator.abort();
    server.abort();
}
