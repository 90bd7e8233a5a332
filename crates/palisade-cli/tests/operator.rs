//! `palisade --store kubernetes ...`: the real binary against an in-memory
//! API server on a real socket (kubeconfig pointing at it), with the
//! operator's reconcile run in-process in between, as it would in a
//! cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use cluster_support::{
    BIN, Cluster, GV, Out, cluster, comparable, operator, operator_config, palisade, reconcile_all,
};

use palisade_operator::crd::{PLATFORM_NAME, Platform, SubnetClaim, Tenant, TenantDeployment};
use palisade_operator::kube::Api;
use palisade_operator::platform;
use palisade_operator::reconcile::Ctx;
use palisade_operator::testing::FakeApi;
use serde_json::{Value, json};

const GATEWAYS: &str = "gateway.networking.k8s.io/v1";

#[track_caller]
fn one_line_error(out: &Out, needle: &str) {
    assert_ne!(out.code, 0, "should fail: {}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{}",
        lines[0]
    );
}

use palisade_operator::testing::example_pool as pool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_stats_delete_through_the_custom_resources() {
    let c = cluster().await;
    let out = palisade(&c, &["create", "acme", "web", "nginx:alpine", "3"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("created tenant acme"), "{}", out.stdout);
    assert!(out.stdout.contains("<pending"), "{}", out.stdout);

    let w = c
        .api
        .get(GV, "tenantdeployments", Some("tenant-acme"), "web")
        .unwrap();
    assert_eq!(w["spec"]["image"], "nginx:alpine");
    assert_eq!(w["spec"]["replicas"], 3);
    assert_eq!(w["spec"]["ports"], json!([80]));
    assert!(c.api.get(GV, "tenants", None, "acme").is_some());
    assert!(c.api.get("v1", "namespaces", None, "tenant-acme").is_some());

    // Before the operator ran: no subnet yet.
    let out = palisade(&c, &["list", "-o", "json"]).await;
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows[0]["subnet"], Value::Null);

    let ctx = operator(&c.api);
    reconcile_all(&ctx).await;

    let out = palisade(&c, &["list", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["tenant"], "acme");
    assert_eq!(rows[0]["name"], "web");
    assert_eq!(rows[0]["subnet"], pool().subnet(0).to_string());
    let table = palisade(&c, &["list"]).await.stdout;
    assert!(table.starts_with("TENANT"), "{table}");
    assert!(table.contains(&pool().subnet(0).to_string()), "{table}");

    // A second deployment of the same tenant, and the tenant listing.
    let out = palisade(
        &c,
        &["create", "acme", "api", "nginx:alpine", "--port", "8080"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("created tenant"), "{}", out.stdout);
    reconcile_all(&ctx).await;
    let tenants: Value =
        serde_json::from_str(&palisade(&c, &["tenant", "list", "-o", "json"]).await.stdout)
            .unwrap();
    assert_eq!(tenants[0]["name"], "acme");
    assert_eq!(tenants[0]["ready"], "True");
    let table = palisade(&c, &["tenant", "list"]).await.stdout;
    let acme = table.lines().nth(1).unwrap_or_default();
    assert!(
        acme.starts_with("acme  ") && acme.contains(" 2 "),
        "{table}"
    );

    // stats: the pool from the operator's ConfigMap, the claims counted.
    c.api.insert(
        "v1",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "palisade-operator", "namespace": "palisade-system"},
               "data": {"PALISADE_POOL": "fd00:1234:5678::/48", "PALISADE_PREFIX_LEN": "96"}}),
    );
    let out = palisade(&c, &["stats", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stats: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(stats["pool"], "fd00:1234:5678::/48");
    assert_eq!(stats["allocated"], 2);
    assert_eq!(stats["quarantined"], 0);
    assert_eq!(stats["capacity"], json!(1u64 << 48));
    let table = palisade(&c, &["stats"]).await.stdout;
    assert!(
        table.contains("allocated:") && table.contains('2'),
        "{table}"
    );

    // delete: the workload goes once the operator released its claim,
    // which waits until the tenant pass pruned its pool (and its pods).
    let out = palisade(&c, &["delete", "acme", "web"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    reconcile_all(&ctx).await;
    reconcile_all(&ctx).await;
    assert!(
        c.api
            .get(GV, "tenantdeployments", Some("tenant-acme"), "web")
            .is_none()
    );
    let stats: Value =
        serde_json::from_str(&palisade(&c, &["stats", "-o", "json"]).await.stdout).unwrap();
    assert_eq!(stats["allocated"], 1);

    // tenant delete: refused while deployments exist, unless --cascade;
    // the operator then deletes the workloads first, then the tenant.
    one_line_error(
        &palisade(&c, &["tenant", "delete", "acme"]).await,
        "tenant acme still has 1 deployment(s); delete them first or pass --cascade",
    );
    let out = palisade(&c, &["tenant", "delete", "acme", "--cascade"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for _ in 0..3 {
        reconcile_all(&ctx).await;
    }
    assert!(c.api.get(GV, "tenants", None, "acme").is_none());
    assert!(c.api.all(GV, "tenantdeployments").is_empty());
    assert!(c.api.all(GV, "subnetclaims").is_empty());
    one_line_error(
        &palisade(&c, &["tenant", "delete", "acme"]).await,
        "tenant acme not found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_one_line_error_and_sends_nothing() {
    let c = cluster().await;
    for (args, needle) in [
        (
            &["create", "acme", "Web_1", "nginx:alpine", "3"][..],
            "invalid deployment name",
        ),
        (
            &["create", "acme", "web", "nginx:alpine", "many"][..],
            "replicas",
        ),
        (
            &["create", "acme", "web", "NOT AN IMAGE"][..],
            "invalid image reference",
        ),
        (
            &["create", "acme", "web", "nginx", "--port", "0"][..],
            "port",
        ),
        (&["init", "--pool", "fd00::/48"][..], "PALISADE_POOL"),
        (&["apply"][..], "the operator applies"),
    ] {
        let out = palisade(&c, args).await;
        one_line_error(&out, needle);
    }
    assert!(c.api.log().is_empty(), "{:?}", c.api.log());

    let ok = palisade(&c, &["create", "acme", "web", "nginx:alpine"]).await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    one_line_error(
        &palisade(&c, &["create", "acme", "web", "nginx:alpine"]).await,
        "deployment acme/web already exists (subnet <pending>)",
    );
    one_line_error(
        &palisade(&c, &["delete", "acme", "nope"]).await,
        "deployment acme/nope not found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeApi::kubeconfig(addr)).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--store", "kubernetes", "list"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    // kube's client also logs the failed connection; the last line is ours.
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: cannot list Tenants"), "{err}");
    assert!(last.contains("Connection refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_say_how_to_install_them() {
    let c = cluster().await;
    c.api.without_kind("tenantdeployments");
    one_line_error(
        &palisade(&c, &["list"]).await,
        "CRDs are not installed (kubectl apply -k deploy/crds)",
    );
}

// ---- one model over two stores ----

mod support;

/// The SQLite store with the operator's pool, so both stores hand out the
/// same subnets in the same order (the core's allocation rule).
fn sqlite() -> support::Env {
    let env = support::Env::new();
    env.run(&[
        "init",
        "--pool",
        "fd00:1234:5678::/48",
        "--prefix-len",
        "96",
    ])
    .ok();
    env
}

/// Runs one write on both stores (the operator reconciling after it) and
/// asserts both print the same.
async fn both(c: &Cluster, ctx: &Ctx, db: &support::Env, args: &[&str]) -> String {
    let local = db.run(args).ok();
    let out = palisade(c, args).await;
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    reconcile_all(ctx).await;
    reconcile_all(ctx).await;
    assert_eq!(
        out.stdout, local,
        "{args:?} prints differently on the two stores"
    );
    local
}

/// Asserts every read verb prints the same rows on both stores.
async fn same_reads(c: &Cluster, db: &support::Env) {
    for args in [
        &["list"][..],
        &["list", "--tenant", "acme"],
        &["tenant", "list"],
        &["tenant", "show", "acme"],
        &["gateway", "list"],
        &["rules"],
        &["rules", "--tenant", "acme"],
        &["stats"],
    ] {
        let mut json = vec!["-o", "json"];
        json.extend_from_slice(args);
        let local: Value = serde_json::from_str(&db.run(&json).ok()).unwrap();
        let out = palisade(c, &json).await;
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        let remote: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(comparable(remote), comparable(local), "{args:?}");
    }
    // Tables without a readiness column are byte-equal.
    for args in [&["gateway", "list"][..], &["rules"], &["stats"]] {
        assert_eq!(
            palisade(c, args).await.stdout,
            db.run(args).ok(),
            "{args:?}"
        );
    }
    let out = palisade(c, &["check"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, db.run(&["check"]).ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_prints_the_same_rows_on_both_stores() {
    let c = cluster().await;
    operator_config(&c.api);
    let ctx = operator(&c.api);
    let db = sqlite();
    let import = db.dir.path().join("import.yaml");
    std::fs::write(
        &import,
        "- {tenant: beta, name: api, image: nginx:alpine, replicas: 2, ports: [8080]}\n\
         - {tenant: beta, name: worker, image: busybox, ports: [9000], env: [{name: MODE, value: batch}]}\n",
    )
    .unwrap();
    let import = import.to_str().unwrap();

    // tenant create prints the port SQLite assigns; the operator assigns
    // the cluster's later.
    db.run(&[
        "tenant",
        "create",
        "acme",
        "--cpu",
        "2",
        "--egress-ip",
        "10.0.0.5",
    ])
    .ok();
    let out = palisade(
        &c,
        &[
            "tenant",
            "create",
            "acme",
            "--cpu",
            "2",
            "--egress-ip",
            "10.0.0.5",
        ],
    )
    .await;
    assert_eq!(
        out.stdout, "created tenant acme (namespace tenant-acme)\n",
        "{}",
        out.stderr
    );
    reconcile_all(&ctx).await;
    for args in [
        &[
            "create",
            "acme",
            "web",
            "nginx:alpine",
            "2",
            "--port",
            "8080",
            "--label",
            "team=web",
        ][..],
        &[
            "create",
            "acme",
            "db",
            "postgres:16",
            "--port",
            "5432",
            "--env-from-secret",
            "PW=pg:password",
        ],
        &["allow", "acme", "web", "db", "--port", "5432"],
        &["allow", "acme", "db", "web"],
        &["gateway", "create", "per-tenant", "acme"],
        &["create-gateway", "per-deployment", "acme", "web"],
    ] {
        // create's table says "pending" on the cluster; its JSON row is
        // compared below through list.
        if args[0] == "create" {
            db.run(args).ok();
            let out = palisade(&c, args).await;
            assert_eq!(out.code, 0, "{}", out.stderr);
            reconcile_all(&ctx).await;
        } else {
            both(&c, &ctx, &db, args).await;
        }
    }
    // The operator renders the gateways from where the CLI put them.
    let gateway = |name: &str| {
        c.api
            .get(GATEWAYS, "gateways", Some("palisade-gateways"), name)
            .is_some()
    };
    assert!(gateway("tenant-acme") && gateway("deployment-acme-web"));
    db.run(&["import", import]).ok();
    let out = palisade(&c, &["import", import]).await;
    assert!(
        out.stdout
            .starts_with("imported 2 deployments (1 new tenants)"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    reconcile_all(&ctx).await;
    reconcile_all(&ctx).await;
    same_reads(&c, &db).await;
    // The proxy's config from all tenants: the same sources and egress.
    let local: Value = serde_yaml_ng::from_str(&db.run(&["proxy-config"]).ok()).unwrap();
    let out = palisade(&c, &["proxy-config"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let remote: Value = serde_yaml_ng::from_str(&out.stdout).unwrap();
    let without_ports = |mut v: Value| {
        for t in v["tenants"].as_array_mut().unwrap() {
            t.as_object_mut().unwrap().remove("listen_port");
        }
        v
    };
    assert_eq!(without_ports(remote), without_ports(local));

    // Removals print the same lines, and the reads still agree.
    for args in [
        &["disallow", "acme", "db", "web"][..],
        &["gateway", "delete", "per-tenant", "acme"],
        &["gateway", "delete", "per-deployment", "acme", "web"],
    ] {
        both(&c, &ctx, &db, args).await;
    }
    assert!(!gateway("tenant-acme") && !gateway("deployment-acme-web"));
    same_reads(&c, &db).await;
    // Deleting db takes both rules naming it on both stores: its own
    // allowFrom, and the entry in web's (a later db must not inherit it).
    both(&c, &ctx, &db, &["allow", "acme", "db", "web"]).await;
    let local = db.run(&["delete", "acme", "db"]).ok();
    let out = palisade(&c, &["delete", "acme", "db"]).await;
    let (first, rest) = out.stdout.split_once('\n').unwrap_or_default();
    assert_eq!(
        first,
        format!(
            "deleting deployment acme/db; the operator releases subnet {}",
            pool().subnet(1)
        ),
        "{}",
        out.stderr
    );
    assert_eq!(rest, local.split_once('\n').unwrap_or_default().1);
    assert_eq!(rest.lines().count(), 2, "{rest}");
    for _ in 0..3 {
        reconcile_all(&ctx).await;
    }
    same_reads(&c, &db).await;
    let web = c
        .api
        .get(GV, "tenantdeployments", Some("tenant-acme"), "web")
        .unwrap();
    assert_eq!(web["spec"].get("allowFrom"), None, "{web}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_any_verb_is_refused_before_a_request_and_state_before_a_write() {
    let c = cluster().await;
    operator_config(&c.api);
    let db = sqlite();
    let bad_import = db.dir.path().join("bad.yaml");
    std::fs::write(&bad_import, "- {tenant: beta, name: Api, image: nginx}\n").unwrap();
    let bad_import = bad_import.to_str().unwrap();
    // Parse errors: the same line on both stores, and not one request.
    for args in [
        &["allow", "acme", "web", "Db"][..],
        &["allow", "acme", "web", "db", "--port", "70000"],
        &["disallow", "Acme", "web", "db"],
        &["gateway", "create", "per-tenant", "acme_x"],
        &["gateway", "delete", "per-deployment", "acme", "we_b"],
        &["tenant", "show", "ACME"],
        &["tenant", "create", "acme", "--memory", "lots"],
        &["rules", "--tenant", "a.b"],
        &["import", bad_import],
    ] {
        let local = db.run(args);
        let out = palisade(&c, args).await;
        one_line_error(&out, "invalid");
        assert_eq!(out.stderr, local.stderr, "{args:?}");
    }
    assert!(c.api.log().is_empty(), "{:?}", c.api.log());

    // Refusals that need the state: the store's errors, and no write.
    let ok = palisade(&c, &["create", "acme", "web", "nginx:alpine"]).await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    db.run(&["create", "acme", "web", "nginx:alpine"]).ok();
    c.api.clear_log();
    for args in [
        &["allow", "acme", "web", "db"][..],
        &["allow", "acme", "web", "web"],
        &["disallow", "acme", "web", "db"],
        &["gateway", "delete", "per-tenant", "acme"],
        &["gateway", "create", "per-deployment", "acme", "db"],
        &["tenant", "show", "nope"],
        &["tenant", "create", "acme"],
        &["delete", "acme", "db"],
    ] {
        let local = db.run(args);
        assert_ne!(local.code, 0, "{args:?}");
        let out = palisade(&c, args).await;
        assert_ne!(out.code, 0, "{args:?}");
        assert_eq!(out.stderr, local.stderr, "{args:?}");
    }
    assert!(c.api.writes().is_empty(), "{:?}", c.api.writes());

    // An import naming a taken deployment creates none of its others.
    let dup = db.dir.path().join("dup.yaml");
    std::fs::write(
        &dup,
        "- {tenant: gamma, name: one, image: nginx}\n- {tenant: acme, name: web, image: nginx}\n",
    )
    .unwrap();
    one_line_error(
        &palisade(&c, &["import", dup.to_str().unwrap()]).await,
        "deployment acme/web already exists",
    );
    assert!(c.api.writes().is_empty(), "{:?}", c.api.writes());
}

/// One platform pass of the operator over everything (its caches' view).
async fn platform_pass(ctx: &Ctx, state: &mut platform::PlatformState) {
    let lp = Default::default();
    let tenants = Api::<Tenant>::all(ctx.client.clone())
        .list(&lp)
        .await
        .unwrap();
    let workloads = Api::<TenantDeployment>::all(ctx.client.clone())
        .list(&lp)
        .await
        .unwrap();
    let claims = Api::<SubnetClaim>::all(ctx.client.clone())
        .list(&lp)
        .await
        .unwrap();
    let settings = Api::<Platform>::all(ctx.client.clone())
        .get_opt(PLATFORM_NAME)
        .await
        .unwrap();
    let inputs = platform::Inputs {
        tenants: &tenants.items,
        workloads: &workloads.items,
        claims: &claims.items,
        platform: settings.as_ref().map(|p| &p.spec),
    };
    platform::reconcile_platform(ctx, state, inputs)
        .await
        .unwrap();
}

/// The YAML documents of a multi-document stream.
fn docs(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .filter_map(|d| serde_yaml_ng::from_str::<Value>(d).ok())
        .filter(|d| d.is_object())
        .collect()
}

/// `gateway create/delete central` on the cluster (the Platform object):
/// the same rows and refusals as SQLite, `render` of both stores
/// byte-identical, and the operator's central Gateway and routes the very
/// objects `palisade render` puts out; after the delete the operator
/// removes them (the gateways' namespace, which it did not create, stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_central_gateway_works_on_both_stores_and_the_operator_renders_it_as_render_does() {
    let c = cluster().await;
    operator_config(&c.api);
    let ctx = operator(&c.api);
    let db = sqlite();
    for args in [
        &["create", "acme", "web", "nginx:alpine", "--port", "8080"][..],
        &["create", "acme", "db", "postgres:16"],
    ] {
        db.run(args).ok();
        assert_eq!(palisade(&c, args).await.code, 0);
        reconcile_all(&ctx).await;
    }
    both(&c, &ctx, &db, &["gateway", "create", "central"]).await;
    db.run(&["gateway", "create", "central"])
        .fails_with("gateway central already exists");
    c.api.clear_log();
    one_line_error(
        &palisade(&c, &["gateway", "create", "central"]).await,
        "gateway central already exists",
    );
    assert!(c.api.writes().is_empty(), "{:?}", c.api.writes());
    same_reads(&c, &db).await;

    let args = [
        "render",
        "--stdout",
        "--no-proxy-deployment",
        "--proxy-address",
        "10.0.0.1",
    ];
    let local = db.run(&args).ok();
    let out = palisade(&c, &args).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, local.replace("\"20000\"", "\"3128\""));
    let mut state = platform::PlatformState::default();
    platform_pass(&ctx, &mut state).await;
    reconcile_all(&ctx).await;
    let rendered = docs(&local);
    // Every object of the central gateway `render` puts out (its Gateway,
    // each workload's route to it) is live with the same spec.
    let central: Vec<&Value> = rendered
        .iter()
        .filter(|d| {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            (d["kind"] == "Gateway" && name == "central")
                || (d["kind"] == "HTTPRoute" && name.starts_with("central-"))
        })
        .collect();
    assert!(central.len() >= 2, "the Gateway and a route: {central:?}");
    let plural = |kind: &Value| {
        if kind == "Gateway" {
            "gateways"
        } else {
            "httproutes"
        }
    };
    for want in &central {
        let (ns, name) = (
            want["metadata"]["namespace"].as_str().unwrap(),
            want["metadata"]["name"].as_str().unwrap(),
        );
        let live = c.api.get(GATEWAYS, plural(&want["kind"]), Some(ns), name);
        assert_eq!(
            live.map(|l| l["spec"].clone()).as_ref(),
            Some(&want["spec"]),
            "{ns}/{name}"
        );
    }
    // The rule letting the gateway in is the tenant's, with the same
    // ingress (egress differs only by the proxy's address).
    let policy = rendered
        .iter()
        .find(|d| d["kind"] == "CiliumNetworkPolicy" && d["metadata"]["name"] == "deployment-web")
        .unwrap();
    assert!(
        policy["spec"]["ingress"]
            .to_string()
            .contains("\"ingress\"")
    );
    let live = c
        .api
        .get(
            "cilium.io/v2",
            "ciliumnetworkpolicies",
            Some("tenant-acme"),
            "deployment-web",
        )
        .unwrap();
    assert_eq!(live["spec"]["ingress"], policy["spec"]["ingress"]);

    both(&c, &ctx, &db, &["gateway", "delete", "central"]).await;
    platform_pass(&ctx, &mut state).await;
    reconcile_all(&ctx).await;
    for gone in &central {
        let (ns, name) = (
            gone["metadata"]["namespace"].as_str(),
            gone["metadata"]["name"].as_str().unwrap(),
        );
        let live = c.api.get(GATEWAYS, plural(&gone["kind"]), ns, name);
        assert!(live.is_none(), "{ns:?}/{name}");
    }
    assert!(
        c.api
            .get("v1", "namespaces", None, "palisade-gateways")
            .is_some()
    );
    // The operator has given the tenant its proxy port by now: the two
    // renders are byte-identical without exception.
    let out = palisade(&c, &args).await;
    assert!(out.stdout == db.run(&args).ok(), "{}", out.stdout);
    one_line_error(
        &palisade(&c, &["gateway", "delete", "central"]).await,
        "gateway central not found",
    );
}

/// With a gateway class that runs gateway pods (not Cilium's), the central
/// gateway also has policies of its own, rendered from every tenant: the
/// operator's are `palisade render`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_central_gateways_own_policies_are_renders_with_a_pod_running_class() {
    let c = cluster().await;
    operator_config(&c.api);
    let mut config = palisade_operator::testing::example_config();
    config.render.gateway_class = "istio".into();
    let ctx = Ctx::new(c.api.client(), config);
    let db = sqlite();
    for args in [
        &["create", "acme", "web", "nginx:alpine", "--port", "8080"][..],
        &["create", "beta", "api", "nginx:alpine", "--port", "9000"],
        &["gateway", "create", "central"],
    ] {
        db.run(args).ok();
        assert_eq!(palisade(&c, args).await.code, 0);
        reconcile_all(&ctx).await;
    }
    platform_pass(&ctx, &mut platform::PlatformState::default()).await;
    let local = db
        .run(&[
            "render",
            "--stdout",
            "--no-proxy-deployment",
            "--proxy-address",
            "10.0.0.1",
            "--gateway-class",
            "istio",
        ])
        .ok();
    let rendered = docs(&local);
    let own: Vec<&Value> = rendered
        .iter()
        .filter(|d| {
            d["metadata"]["namespace"] == "palisade-gateways"
                && d["metadata"]["name"] == "gateway-central"
        })
        .collect();
    assert!(!own.is_empty(), "no policy of the central gateway rendered");
    for want in own {
        let plural = match want["kind"].as_str().unwrap() {
            "CiliumNetworkPolicy" => ("cilium.io/v2", "ciliumnetworkpolicies"),
            other => panic!("unexpected {other}"),
        };
        let live = c
            .api
            .get(
                plural.0,
                plural.1,
                Some("palisade-gateways"),
                "gateway-central",
            )
            .unwrap();
        assert_eq!(live["spec"], want["spec"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_leaked_and_duplicate_claims_and_stale_pools() {
    let c = cluster().await;
    operator_config(&c.api);
    let ctx = operator(&c.api);
    for name in ["web", "db"] {
        let out = palisade(&c, &["create", "acme", name, "nginx:alpine"]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        reconcile_all(&ctx).await;
    }
    reconcile_all(&ctx).await;
    let out = palisade(&c, &["check"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "ok: 1 tenants, 2 deployments, 0 recycled and 0 quarantined subnets, no problems\n"
    );

    let claim = |index: u128, deployment: &str, uid: &str| {
        let subnet = pool().subnet(index);
        json!({"apiVersion": GV, "kind": "SubnetClaim",
               "metadata": {"name": palisade_operator::claim::claim_name(subnet)},
               "spec": {"subnet": subnet.to_string(), "tenant": "acme",
                        "namespace": "tenant-acme", "deployment": deployment,
                        "workloadUid": uid}})
    };
    // A claim whose workload is gone, and a second claim of web's.
    c.api
        .insert(GV, "subnetclaims", claim(7, "gone", "uid-of-nothing"));
    let web = c
        .api
        .get(GV, "tenantdeployments", Some("tenant-acme"), "web")
        .unwrap();
    let web_uid = web["metadata"]["uid"].as_str().unwrap();
    c.api.insert(GV, "subnetclaims", claim(9, "web", web_uid));
    // A Cilium pool left behind by a deleted deployment.
    c.api.insert(
        "cilium.io/v2alpha1",
        "ciliumpodippools",
        json!({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumPodIPPool",
               "metadata": {"name": "acme.old", "labels": {"palisade.io/tenant": "acme"}},
               "spec": {"ipv6": {"cidrs": [pool().subnet(0).to_string()], "maskSize": 112}}}),
    );
    c.api.clear_log();
    let out = palisade(&c, &["check"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    let problems: Vec<&str> = out.stderr.lines().collect();
    let has = |needle: &str| {
        problems
            .iter()
            .any(|l| l.starts_with("problem: ") && l.contains(needle))
    };
    assert!(has("leaked claim"), "{}", out.stderr);
    assert!(
        has("duplicate claims: deployment acme/web holds 2 subnets"),
        "{}",
        out.stderr
    );
    assert!(has("leaked CiliumPodIPPool acme.old"), "{}", out.stderr);
    assert!(has("CiliumPodIPPools share"), "{}", out.stderr);
    assert_eq!(
        problems.last().copied(),
        Some("error: 4 problem(s) found in the cluster")
    );
    assert!(
        c.api.writes().is_empty(),
        "check writes nothing: {:?}",
        c.api.writes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_from_the_cluster_carries_each_tenants_domain_rules() {
    let c = cluster().await;
    operator_config(&c.api);
    let ctx = operator(&c.api);
    let out = palisade(&c, &["create", "acme", "web", "nginx:alpine"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    reconcile_all(&ctx).await;
    reconcile_all(&ctx).await;
    // What a user writes into the Tenant (no CLI flag sets it).
    let set_domains = |allow: &str| {
        let mut t = c.api.get(GV, "tenants", None, "acme").unwrap();
        t["spec"]["egress"]["allowedDomains"] = json!([allow]);
        t["spec"]["egress"]["deniedDomains"] = json!(["evil.example.com"]);
        c.api.insert(GV, "tenants", t);
    };
    set_domains("*.stripe.com");
    let out = palisade(&c, &["proxy-config"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let config: Value = serde_yaml_ng::from_str(&out.stdout).unwrap();
    let acme = &config["tenants"][0];
    assert_eq!(acme["name"], "acme", "{config}");
    assert_eq!(acme["allow_domains"], json!(["*.stripe.com"]), "{config}");
    assert_eq!(
        acme["deny_domains"],
        json!(["evil.example.com"]),
        "{config}"
    );
    assert_eq!(acme["sources"][0]["prefix"], pool().subnet(0).to_string());
    // A rule the proxy could not load is refused, naming the tenant.
    set_domains("not a domain");
    one_line_error(
        &palisade(&c, &["proxy-config"]).await,
        "invalid domain rule of tenant acme",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_the_api_refuses_halfway_leaves_nothing_behind() {
    let c = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batch.yaml");
    std::fs::write(
        &file,
        "- {tenant: gamma, name: one, image: nginx}\n- {tenant: gamma, name: two, image: nginx}\n",
    )
    .unwrap();
    // As an admission webhook would refuse the second.
    c.api
        .reject("tenantdeployments", "two", 403, "denied by policy");
    one_line_error(
        &palisade(&c, &["import", file.to_str().unwrap()]).await,
        "cannot create deployment gamma/two",
    );
    assert!(c.api.all(GV, "tenantdeployments").is_empty());
    assert!(c.api.get(GV, "tenants", None, "gamma").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_compiles_the_clusters_state_as_it_compiles_sqlites() {
    let c = cluster().await;
    operator_config(&c.api);
    let ctx = operator(&c.api);
    let db = sqlite();
    for args in [
        &["create", "acme", "web", "nginx:alpine", "--port", "8080"][..],
        &["create", "acme", "db", "postgres:16", "--port", "5432"],
    ] {
        db.run(args).ok();
        assert_eq!(palisade(&c, args).await.code, 0);
        reconcile_all(&ctx).await;
    }
    both(&c, &ctx, &db, &["allow", "acme", "web", "db"]).await;
    let args = [
        "render",
        "--stdout",
        "--no-proxy-deployment",
        "--proxy-address",
        "10.0.0.1",
    ];
    let local = db.run(&args).ok();
    let out = palisade(&c, &args).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The tenant's egress-proxy port is SQLite's at once (20000) and the
    // operator's later: until then its pods use the shared listener.
    assert!(
        out.stdout.contains(&pool().subnet(1).to_string()),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout, local.replace("\"20000\"", "\"3128\""));
}
