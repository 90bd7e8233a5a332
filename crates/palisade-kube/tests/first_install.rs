//! The faults a first `kubectl apply` on a cluster running the pinned
//! releases would hit (issue 13), each checked on the rendered objects.
//! The schema matrix (every object against every supported release's
//! schema) lives in `tests/schemas.rs`; these tests check what a schema
//! cannot: which pool a pod asks for, what a policy denies, what a client
//! does with `NO_PROXY`, which routes a gateway accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::{find_tool, skip};

use palisade_kube::render::render;
use palisade_kube::{RenderOptions, fixtures};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

fn objects(options: &RenderOptions) -> Vec<Value> {
    let rendered = render(&fixtures::seed(), options).expect("the seed renders");
    rendered.objects().map(|o| o.body.clone()).collect()
}

fn of_kind<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|v| v["kind"] == kind).collect()
}

fn named<'a>(all: &'a [Value], kind: &str, ns: &str, name: &str) -> &'a Value {
    all.iter()
        .find(|v| {
            v["kind"] == kind && v["metadata"]["namespace"] == ns && v["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no {kind} {ns}/{name}"))
}

/// Fault 1: Cilium 1.17 and 1.18 serve `CiliumPodIPPool` only as
/// `cilium.io/v2alpha1`, where `spec.ipv6.cidrs` is a list of strings
/// (`crds/v2alpha1/ciliumpodippools.yaml` in both releases under
/// `shared/schemas/cilium`).
#[test]
fn pod_ip_pools_use_the_version_the_pinned_cilium_serves() {
    let all = objects(&RenderOptions::default());
    let pools = of_kind(&all, "CiliumPodIPPool");
    assert_eq!(pools.len(), 4, "one pool per seed deployment");
    for pool in pools {
        assert_eq!(pool["apiVersion"], "cilium.io/v2alpha1", "{pool}");
        let cidrs = pool["spec"]["ipv6"]["cidrs"].as_array().expect("cidrs");
        assert!(
            cidrs.iter().all(Value::is_string),
            "cidrs are strings: {pool}"
        );
        assert!(
            pool["spec"].get("ipv4").is_none(),
            "deployment pools are IPv6-only"
        );
    }
}

/// Fault 2: the family-less `ipam.cilium.io/ip-pool` would make Cilium take
/// the pod's IPv4 address from an IPv6-only pool as well, and fail. Pods
/// name their pool for IPv6 only and take IPv4 from `default`
/// (Cilium `pkg/ipam/metadata/manager.go`: per family, `ipv6-pool` first,
/// then `ip-pool`, then the namespace's, then `default`).
#[test]
fn pods_name_their_pool_for_ipv6_only_and_the_pool_exists() {
    let options = RenderOptions {
        egress_check: Some(palisade_kube::EgressCheck::default()),
        ..RenderOptions::default()
    };
    let all = objects(&options);
    let pools: Vec<&str> = of_kind(&all, "CiliumPodIPPool")
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    let deployments = of_kind(&all, "Deployment");
    let mut checked = 0;
    for d in deployments {
        let Some(notes) = d["spec"]["template"]["metadata"]["annotations"].as_object() else {
            continue;
        };
        assert!(
            !notes.contains_key("ipam.cilium.io/ip-pool")
                && !notes.contains_key("ipam.cilium.io/ipv4-pool"),
            "{}: a pool annotation that applies to IPv4: {notes:?}",
            d["metadata"]["name"]
        );
        if let Some(pool) = notes.get("ipam.cilium.io/ipv6-pool") {
            assert!(
                pools.contains(&pool.as_str().unwrap_or_default()),
                "{pool} is rendered"
            );
            checked += 1;
        }
    }
    // Four seed deployments and two egress-check demos.
    assert_eq!(checked, 6);
}

fn default_deny<'a>(all: &'a [Value], tenant: &str) -> &'a Value {
    named(
        all,
        "CiliumNetworkPolicy",
        &format!("tenant-{tenant}"),
        "default-deny",
    )
}

/// Fault 10: `toEntities: world` (egress-gateway tenants) includes the
/// instance-metadata service, the EKS Pod Identity agent and, on EKS, the
/// API server. Every tenant namespace denies them; Cilium's deny rules win
/// over any allow ("Deny Policies", Cilium 1.17/1.18 docs).
#[test]
fn every_tenant_denies_metadata_node_credentials_and_the_api_server() {
    let all = objects(&RenderOptions::default());
    for tenant in ["acme-corp", "big-corp"] {
        let deny = &default_deny(&all, tenant)["spec"]["egressDeny"];
        let cidrs: Vec<&str> = deny
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["toCIDR"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        for must in [
            "169.254.169.254/32",
            "fd00:ec2::254/128",
            "169.254.170.23/32",
            "fd00:ec2::23/128",
        ] {
            assert!(
                cidrs.contains(&must),
                "{tenant} does not deny {must}: {deny}"
            );
        }
        let entities: Vec<&str> = deny
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["toEntities"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        assert!(entities.contains(&"kube-apiserver"), "{tenant}: {deny}");
    }
    // The big-corp database reaches the world through the egress gateway.
    let db = named(
        &all,
        "CiliumNetworkPolicy",
        "tenant-big-corp",
        "deployment-database",
    );
    assert!(db["spec"]["egress"].to_string().contains("world"), "{db}");
}

/// A plain NetworkPolicy has no deny: its world blocks leave the metadata
/// and Pod Identity addresses out.
#[test]
fn kubernetes_network_policies_cut_metadata_out_of_the_world() {
    // A NetworkPolicy cannot admit Cilium's gateways: another class.
    let options = RenderOptions {
        policy: palisade_kube::PolicyFlavour::Kubernetes,
        gateway_class: "istio".into(),
        ..RenderOptions::default()
    };
    let all = objects(&options);
    let db = named(
        &all,
        "NetworkPolicy",
        "tenant-big-corp",
        "deployment-database",
    );
    let text = db["spec"]["egress"].to_string();
    assert!(text.contains("0.0.0.0/0"), "{text}");
    for cut in [
        "169.254.169.254/32",
        "fd00:ec2::254/128",
        "169.254.170.23/32",
        "fd00:ec2::23/128",
    ] {
        assert!(text.contains(cut), "{cut} not excepted: {text}");
    }
}

/// The environment of a deployment's container, with Kubernetes' `$(VAR)`
/// expansion applied and ConfigMap references resolved from `config`.
fn container_env(dep: &Value, config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = e["name"].as_str().unwrap_or_default().to_owned();
        let value = match e["valueFrom"]["configMapKeyRef"]["key"].as_str() {
            Some(key) => config.get(key).cloned().unwrap_or_default(),
            None => expand(e["value"].as_str().unwrap_or_default(), &env),
        };
        env.insert(name, value);
    }
    env
}

/// Kubernetes' dependent-variable expansion: `$(NAME)` of an earlier
/// variable is replaced, anything else is kept.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = value.to_owned();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

fn egress_config(all: &[Value], ns: &str) -> BTreeMap<String, String> {
    let cm = named(all, "ConfigMap", ns, "egress-proxy");
    serde_json::from_value(cm["data"].clone()).expect("string data")
}

/// Fault 12: an allowed call by the peer's short Service name must not go
/// to the proxy (which refuses cluster destinations). Checked with real
/// curl and the rendered environment: curl must try the name directly and
/// never connect to the proxy.
#[test]
fn allowed_peers_are_reached_directly_not_through_the_proxy() {
    let all = objects(&RenderOptions::default());
    let dep = named(&all, "Deployment", "tenant-acme-corp", "api-backend");
    let env = container_env(dep, &egress_config(&all, "tenant-acme-corp"));
    let no_proxy = &env["NO_PROXY"];
    for name in [
        "database",
        "database.tenant-acme-corp",
        ".svc",
        "fd00:10::/48",
    ] {
        assert!(
            no_proxy.split(',').any(|n| n == name),
            "{name} missing from {no_proxy}"
        );
    }
    assert_eq!(env["no_proxy"], *no_proxy);
    // web-frontend may not call the database: its NO_PROXY does not name it.
    let web = named(&all, "Deployment", "tenant-acme-corp", "web-frontend");
    let web_env = container_env(web, &egress_config(&all, "tenant-acme-corp"));
    assert!(!web_env["NO_PROXY"].split(',').any(|n| n == "database"));

    let Some(curl) = find_tool("curl") else {
        return skip("curl not installed");
    };
    // A stand-in proxy that records whether anyone connected.
    let proxy = TcpListener::bind("127.0.0.1:0").expect("bind");
    proxy.set_nonblocking(true).expect("nonblocking");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("addr"));
    let run = |url: &str, no_proxy: &str| {
        Command::new(&curl)
            .args(["-sS", "--max-time", "5", "-o", "/dev/null", url])
            .env_clear()
            .env("http_proxy", &proxy_url)
            .env("no_proxy", no_proxy)
            .output()
            .expect("curl runs")
    };
    let connected = |l: &TcpListener| {
        std::thread::sleep(Duration::from_millis(50));
        l.accept()
            .map(|(mut s, _)| {
                let mut buf = [0u8; 256];
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = s.read(&mut buf);
            })
            .is_ok()
    };
    let direct = run("http://database:5432/", no_proxy);
    assert!(
        !connected(&proxy),
        "curl sent an allowed peer's request to the proxy"
    );
    // It went for the name itself (which does not resolve here).
    assert_eq!(
        direct.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    // Control: the old platform-only list sends the same request to the proxy.
    let _ = run(
        "http://database:5432/",
        "localhost,127.0.0.1,::1,.svc,.cluster.local",
    );
    assert!(connected(&proxy), "control: curl did not use the proxy");
}

/// Fault 13: each gateway accepts only its tenant's routes and host names.
/// A route attaches only where its host names intersect the listener's
/// and its namespace is allowed (Gateway API `Listener.hostname` and
/// `allowedRoutes`, standard channel v1.2.1+).
#[test]
fn gateway_listeners_accept_only_their_tenants_routes_and_host_names() {
    let all = objects(&RenderOptions::default());
    let gateways = of_kind(&all, "Gateway");
    assert_eq!(gateways.len(), 3);
    for gw in &gateways {
        assert_eq!(gw["metadata"]["namespace"], "palisade-gateways", "{gw}");
        assert!(
            gw["spec"].get("infrastructure").is_none(),
            "no labels to forge: {gw}"
        );
        let listeners = gw["spec"]["listeners"].as_array().expect("listeners");
        assert_eq!(listeners.len(), 1);
        let l = &listeners[0];
        let host = l["hostname"]
            .as_str()
            .expect("every listener names its hosts");
        let ns = &l["allowedRoutes"]["namespaces"];
        assert_eq!(ns["from"], "Selector");
        match gw["metadata"]["name"].as_str().unwrap_or_default() {
            "central" => assert_eq!(host, "*.apps.example.com"),
            "tenant-big-corp" => {
                assert_eq!(host, "*.big-corp.apps.example.com");
                assert_eq!(
                    ns["selector"]["matchLabels"]["kubernetes.io/metadata.name"],
                    "tenant-big-corp"
                );
            }
            "deployment-acme-corp-web-frontend" => {
                assert_eq!(host, "web-frontend.acme-corp.apps.example.com");
                assert_eq!(
                    ns["selector"]["matchLabels"]["kubernetes.io/metadata.name"],
                    "tenant-acme-corp"
                );
            }
            other => panic!("unexpected gateway {other}"),
        }
    }
    for route in of_kind(&all, "HTTPRoute") {
        let parent = &route["spec"]["parentRefs"][0];
        assert_eq!(parent["namespace"], "palisade-gateways", "{route}");
        let host = route["spec"]["hostnames"][0].as_str().expect("host");
        let tenant = route["metadata"]["namespace"]
            .as_str()
            .and_then(|n| n.strip_prefix("tenant-"))
            .expect("tenant ns");
        assert!(
            host.ends_with(&format!(".{tenant}.apps.example.com")),
            "{host}"
        );
    }
}

/// Issue 15: with Cilium's gateways (the default class) nothing selects
/// gateway pods by labels, so no tenant pod can pass for a gateway; a
/// fronted deployment admits only the reserved `ingress` identity.
#[test]
fn cilium_gateways_are_admitted_by_the_ingress_identity_only() {
    let all = objects(&RenderOptions::default());
    let text = serde_json::to_string(&of_kind(&all, "CiliumNetworkPolicy")).expect("json");
    assert!(!text.contains("\"role\""), "a policy selects on role");
    assert!(
        !text.contains("gateway.networking.k8s.io/gateway-name"),
        "a policy selects gateway pods"
    );
    let web = named(
        &all,
        "CiliumNetworkPolicy",
        "tenant-acme-corp",
        "deployment-web-frontend",
    );
    let ingress = web["spec"]["ingress"].as_array().expect("ingress");
    let from_gateway: Vec<&Value> = ingress
        .iter()
        .filter(|r| r.to_string().contains("\"ingress\""))
        .collect();
    assert_eq!(from_gateway.len(), 1, "{ingress:?}");
    assert_eq!(from_gateway[0]["toPorts"][0]["ports"][0]["port"], "80");
}

/// With another implementation, gateway pods are selected in the gateway
/// namespace, which tenants cannot write, never in a tenant's own.
#[test]
fn other_gateway_implementations_are_selected_in_the_gateway_namespace() {
    let options = RenderOptions {
        gateway_class: "istio".into(),
        ..RenderOptions::default()
    };
    let all = objects(&options);
    for p in of_kind(&all, "CiliumNetworkPolicy") {
        let rules = p["spec"]["ingress"].as_array().into_iter().flatten();
        for sel in rules.flat_map(|r| r["fromEndpoints"].as_array().into_iter().flatten()) {
            if sel["matchLabels"]
                .get("gateway.networking.k8s.io/gateway-name")
                .is_some()
            {
                assert_eq!(
                    sel["matchLabels"]["k8s:io.kubernetes.pod.namespace"], "palisade-gateways",
                    "{p}"
                );
            }
        }
    }
    let gw_policies: Vec<&Value> = of_kind(&all, "CiliumNetworkPolicy")
        .into_iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("gateway-"))
        })
        .collect();
    assert_eq!(gw_policies.len(), 3);
    assert!(
        gw_policies
            .iter()
            .all(|p| p["metadata"]["namespace"] == "palisade-gateways")
    );
}

/// Fault 9: Cilium SNATs to an address of the gateway node's interface
/// and, in 1.17, only for IPv4 destinations; an IPv6 egress address could
/// never be used, so rendering refuses it with the reason.
#[test]
fn egress_gateway_addresses_are_the_nodes_ipv4_address() {
    let all = objects(&RenderOptions::default());
    let egw = all
        .iter()
        .find(|v| v["kind"] == "CiliumEgressGatewayPolicy")
        .expect("big-corp's policy");
    assert_eq!(egw["spec"]["egressGateway"]["egressIP"], "203.0.113.10");
    assert_eq!(
        egw["spec"]["destinationCIDRs"],
        serde_json::json!(["0.0.0.0/0"])
    );

    let mut snap = fixtures::seed();
    for t in &mut snap.tenants {
        if t.name.as_str() == "big-corp" {
            t.egress.ip = Some("2001:db8::10".parse().expect("literal"));
        }
    }
    let err = render(&snap, &RenderOptions::default()).expect_err("IPv6 egress address");
    let msg = err.to_string();
    assert!(msg.contains("big-corp") && msg.contains("IPv4"), "{msg}");
}

/// Fault 4 (scheduling part): tenant pods must not start on a node before
/// the installer registered runsc there; the RuntimeClass selects the label
/// the installer sets last.
#[test]
fn gvisor_pods_wait_for_nodes_the_installer_has_finished() {
    let all = objects(&RenderOptions::default());
    let rc = all
        .iter()
        .find(|v| v["kind"] == "RuntimeClass")
        .expect("runtime class");
    let (key, value) = palisade_kube::cluster::GVISOR_READY_LABEL;
    assert_eq!(rc["handler"], "runsc");
    assert_eq!(rc["scheduling"]["nodeSelector"][key], value, "{rc}");
}

/// Fault 8: on an IPv4-only path (or without per-deployment pools) the
/// proxy cannot tell tenants by source address, so each tenant reaches it
/// on its own listener port, and only its own: its ConfigMap names the
/// port, and its policy opens that port alone (the proxy refuses a source
/// of another tenant's prefixes there; docs/proxy.md, "Who is calling").
#[test]
fn each_tenant_reaches_the_proxy_on_its_own_port_only() {
    let mut snap = fixtures::seed();
    for (t, port) in snap.tenants.iter_mut().zip([20000u16, 20001]) {
        t.proxy_port = port;
    }
    let mut options = RenderOptions::default();
    options.proxy.in_cluster = Some(palisade_kube::InClusterProxy::new(String::new()));
    let all: Vec<Value> = render(&snap, &options)
        .unwrap()
        .objects()
        .map(|o| o.body.clone())
        .collect();
    assert_eq!(
        egress_config(&all, "tenant-acme-corp")["PROXY_PORT"],
        "20000"
    );
    let api = named(
        &all,
        "CiliumNetworkPolicy",
        "tenant-acme-corp",
        "deployment-api-backend",
    );
    let to_proxy: Vec<&Value> = api["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("toNodes").is_some())
        .collect();
    assert_eq!(to_proxy.len(), 1, "{api}");
    assert_eq!(
        to_proxy[0]["toPorts"],
        serde_json::json!([{ "ports": [{ "port": "20000", "protocol": "TCP" }] }])
    );
    // The GitOps overlays keep each tenant's own port.
    let rendered = render(&snap, &options).unwrap();
    let files = palisade_kube::tree::files(&rendered, &options).unwrap();
    let overlay = &files["overlays/production/kustomization.yaml"];
    assert!(overlay.contains("PROXY_PORT=20000"), "{overlay}");
}
