//! The pure half of the lab, without root: the plan's names and addresses,
//! the nftables ruleset it generates (and, where `nft` can check it, that
//! the text is valid), and the probe matrix with its expected verdicts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_core::allocator::Timestamp;
use palisade_core::model::{
    Deployment, DeploymentName, EgressMode, EgressProfile, Gateway, GatewayScope, Image, Labels,
    Port, Quota, Replicas, Tenant, TenantName,
};
use palisade_core::policy::{Policy, PortProto};
use palisade_core::{AllowRule, Pool, Snapshot, SubnetLen};
use palisade_lab::apply::{LabState, Running};
use palisade_lab::plan::{self, ECHO_ADDR, LabOptions, PROXY_ADDR, Runtime};
use palisade_lab::verify::{self, ProbeKind};
use std::path::Path;
use std::time::Duration;

fn t(s: &str) -> TenantName {
    s.parse().unwrap()
}
fn d(s: &str) -> DeploymentName {
    s.parse().unwrap()
}

fn tenant(name: &str, mode: EgressMode) -> Tenant {
    Tenant {
        name: t(name),
        quota: Quota::default(),
        node_pool: None,
        egress: EgressProfile {
            mode,
            ip: None,
            public_ip: None,
        },
        proxy_port: 0,
        labels: Labels::new(),
        created_at: Timestamp(0),
    }
}

fn dep(
    pool: &Pool,
    tenant: &str,
    name: &str,
    index: u128,
    replicas: u32,
    ports: &[u16],
) -> Deployment {
    Deployment {
        tenant: t(tenant),
        name: d(name),
        image: "nginx:alpine".parse::<Image>().unwrap(),
        replicas: Replicas::try_from(replicas).unwrap(),
        ports: ports.iter().map(|p| Port::try_from(*p).unwrap()).collect(),
        subnet: pool.subnet(index),
        labels: Labels::new(),
        workload: Default::default(),
        created_at: Timestamp(0),
    }
}

/// acme runs web x2, api, db (api -> db on 5432); a central gateway;
/// big-corp leaves through its egress gateway.
fn snapshot() -> Snapshot {
    let pool = Pool::new(
        "fd00:1::/48".parse().unwrap(),
        SubnetLen::default(),
        Duration::ZERO,
    )
    .unwrap();
    Snapshot {
        tenants: vec![
            tenant("acme", EgressMode::Proxy),
            tenant("big-corp", EgressMode::CiliumEgressGateway),
        ],
        deployments: vec![
            dep(&pool, "acme", "api", 1, 1, &[8080]),
            dep(&pool, "acme", "db", 2, 1, &[5432, 9187]),
            dep(&pool, "acme", "web", 0, 2, &[]),
            dep(&pool, "big-corp", "db", 3, 1, &[]),
        ],
        gateways: vec![Gateway {
            scope: GatewayScope::Central,
            created_at: Timestamp(0),
        }],
        allow_rules: vec![AllowRule {
            tenant: t("acme"),
            from: d("api"),
            to: d("db"),
            port: Some(Port::try_from(5432).unwrap()),
        }],
        pool,
    }
}

/// The objects the lab runs for `s`.
fn objects(s: &Snapshot) -> Vec<serde_json::Value> {
    palisade_lab::rendered::render(s).unwrap()
}

fn options() -> LabOptions {
    LabOptions::for_dir(Path::new("/tmp/some/lab"), Runtime::Plain)
}

#[test]
fn names_carry_the_lab_prefix_and_addresses_come_from_the_subnets() {
    let s = snapshot();
    let p = plan::plan(&s, &objects(&s), &options()).unwrap();
    let prefix = options().prefix();
    assert!(prefix.starts_with("pl-") && prefix.len() == "pl-".len() + 7);
    assert_eq!(p.pods.len(), 5);
    for ns in p.namespaces() {
        assert!(ns.starts_with(&prefix), "{ns}");
    }
    for pod in &p.pods {
        let d = s
            .deployments
            .iter()
            .find(|d| d.name.as_str() == pod.deployment && d.tenant.as_str() == pod.tenant)
            .unwrap();
        assert!(
            d.subnet.contains(&pod.addr),
            "{} not in {}",
            pod.addr,
            d.subnet
        );
        assert!(pod.veth.len() <= 15);
    }
    let web: Vec<_> = p.pods_of("acme", "web").collect();
    assert_eq!(web.len(), 2);
    assert_ne!(web[0].addr, web[1].addr);
    assert_eq!(
        web[0].ports,
        vec![80],
        "no declared port: the workload serves 80"
    );
    // The central gateway serves what its rendered HTTPRoutes send to:
    // api and db (each on its first port); the renderer routes no
    // deployment without a declared port.
    assert_eq!(p.gateways.len(), 1);
    let routes: Vec<(&str, &str, u16)> = p.gateways[0]
        .routes
        .iter()
        .map(|r| (r.host.as_str(), r.target.as_str(), r.backends[0].port()))
        .collect();
    assert_eq!(
        routes,
        [
            ("api.acme.apps.example.com", "acme/api", 8080),
            ("db.acme.apps.example.com", "acme/db", 5432),
        ]
    );
    // Deterministic: the same input gives the same plan, byte for byte.
    assert_eq!(p, plan::plan(&s, &objects(&s), &options()).unwrap());
    // A different lab directory gives different names.
    let other = LabOptions::for_dir(Path::new("/tmp/other/lab"), Runtime::Plain);
    assert_ne!(other.prefix(), prefix);
}

/// The set named in the rule whose comment is `comment`.
fn set_of<'a>(ruleset: &'a str, comment: &str) -> &'a str {
    let rule = ruleset
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .unwrap_or_else(|| panic!("no rule {comment:?}"));
    let name = rule
        .split('@')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    ruleset
        .split(&format!("set {name} {{"))
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap()
}

/// The ruleset follows the rendered policies as Cilium reads them: egress
/// at the sender and ingress at the receiver (docs "Layer 3 Examples"),
/// deny before allow (docs "Deny Policies"), each a set lookup reached by
/// one verdict-map lookup per direction.
#[test]
fn the_ruleset_is_the_rendered_policies_one_vmap_lookup_per_direction() {
    let s = snapshot();
    let p = plan::plan(&s, &objects(&s), &options()).unwrap();
    let r = &p.ruleset;
    assert!(
        r.contains("type filter hook forward priority filter; policy drop;"),
        "{r}"
    );
    assert!(r.contains("ip6 saddr vmap @egress_of") && r.contains("ip6 daddr vmap @ingress_of"));
    // Atomic replacement: declare, delete, define in one file.
    assert!(
        r.starts_with("# Generated")
            && r.contains("delete table inet palisade_lab\ntable inet palisade_lab {")
    );
    // Every tenant subnet goes to its own egress chain.
    for dep in &s.deployments {
        assert!(
            r.contains(&format!("{} : goto eg_", dep.subnet)),
            "{} missing from the egress map",
            dep.subnet
        );
    }
    let subnet = |t: &str, n: &str| {
        s.deployments
            .iter()
            .find(|x| x.name.as_str() == n && x.tenant.as_str() == t)
            .unwrap()
            .subnet
    };
    let (api, db) = (subnet("acme", "api"), subnet("acme", "db"));
    // The allow rule api -> db: db's subnet on 5432 only, in api's egress
    // and in db's ingress; the proxy on its port.
    let api_out = set_of(r, "acme/api: egress allow");
    assert!(
        api_out.contains(&format!("{db} . tcp . 5432,")),
        "{api_out}"
    );
    assert!(
        !api_out.contains(&format!("{db} . tcp . 9187")),
        "{api_out}"
    );
    assert!(
        api_out.contains(&format!("{PROXY_ADDR} . tcp . 3128")),
        "{api_out}"
    );
    let db_in = set_of(r, "acme/db: ingress allow");
    assert!(db_in.contains(&format!("{api} . tcp . 5432,")), "{db_in}");
    // The default-deny policy's metadata and API server denies.
    let api_deny = set_of(r, "acme/api: egress deny");
    assert!(
        api_deny.contains("fd00:ec2::254 . tcp . 0-65535"),
        "{api_deny}"
    );
    assert!(
        api_deny.contains(&format!("{} . tcp", plan::APISERVER_ADDR)),
        "{api_deny}"
    );
    // Per-packet cost: endpoint chains hold at most three rules whatever the size.
    for chain in r
        .split("\tchain e")
        .skip(1)
        .chain(r.split("\tchain in_").skip(1))
    {
        let body = chain.split("\t}").next().unwrap();
        assert!(body.lines().count() <= 4, "{body}");
    }
    // big-corp's egress gateway: SNAT to its egress IP towards the world.
    let big = p.egress_of("big-corp").unwrap();
    assert!(
        r.contains(&format!("{} : {}", s.deployments[3].subnet, big.ip)),
        "{r}"
    );
    assert!(
        r.contains(&format!("elements = {{ {ECHO_ADDR}, fd00:ec2::254 }}")),
        "{r}"
    );
}

/// The lab runs what the objects say, not what the model says: an allow
/// rule rendered without its port opens every port in the ruleset.
#[test]
fn the_ruleset_follows_the_objects_not_the_model() {
    let s = snapshot();
    let mut objs = objects(&s);
    for o in &mut objs {
        if o["kind"] == "CiliumNetworkPolicy" && o["metadata"]["name"] == "deployment-db" {
            o["spec"]["ingress"][0]
                .as_object_mut()
                .unwrap()
                .remove("toPorts");
        }
    }
    let p = plan::plan(&s, &objs, &options()).unwrap();
    let api = s.deployments[0].subnet;
    let db_in = set_of(&p.ruleset, "acme/db: ingress allow");
    assert!(db_in.contains(&format!("{api} . tcp . 0-65535")), "{db_in}");
}

#[test]
fn the_ruleset_scales_by_sets_not_rules() {
    let pool = Pool::new(
        "fd00:2::/48".parse().unwrap(),
        SubnetLen::default(),
        Duration::ZERO,
    )
    .unwrap();
    let mut s = snapshot();
    s.deployments = (0..2000u128)
        .map(|i| dep(&pool, "acme", &format!("d{i}"), i, 0, &[80]))
        .collect();
    s.pool = pool;
    s.allow_rules.clear();
    let p = plan::plan(&s, &objects(&s), &options()).unwrap();
    assert_eq!(p.pods.len(), 0);
    let forward = p
        .ruleset
        .split("chain forward {")
        .nth(1)
        .unwrap()
        .split("\t}")
        .next()
        .unwrap();
    assert!(
        forward.lines().count() < 12,
        "the forward chain does not grow: {forward}"
    );
}

#[test]
fn too_many_pods_is_a_clear_error() {
    let mut s = snapshot();
    s.deployments[0].replicas = Replicas::try_from(5000).unwrap();
    let e = plan::plan(&s, &objects(&s), &options()).unwrap_err();
    assert!(e.to_string().contains("at most 1000"), "{e}");
}

#[test]
fn nft_accepts_the_ruleset_when_it_can_check() {
    let s = snapshot();
    let p = plan::plan(&s, &objects(&s), &options()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ruleset.nft");
    std::fs::write(&file, &p.ruleset).unwrap();
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let is_root = nix_is_root();
    if !is_root {
        eprintln!("SKIPPED: `nft -c` needs root (CAP_NET_ADMIN) to check the ruleset");
        assert!(!in_ci, "CI=true but not root");
        return;
    }
    let out = match std::process::Command::new("nft")
        .arg("-c")
        .arg("-f")
        .arg(&file)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED: nft is not installed ({e})");
            assert!(!in_ci, "CI=true but nft is missing");
            return;
        }
    };
    assert!(
        out.status.success(),
        "nft -c rejected the ruleset: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.ruleset
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn state_of(p: &plan::Plan) -> LabState {
    LabState {
        lab_id: p.options.lab_id.clone(),
        started_at: String::new(),
        synced_at: String::new(),
        runtime: Runtime::Plain,
        infra: p.infra.clone(),
        pool: p.pool,
        proxy_port: 3128,
        pods: p
            .pods
            .iter()
            .cloned()
            .map(|spec| Running { spec, pid: 0 })
            .collect(),
        gateways: p
            .gateways
            .iter()
            .cloned()
            .map(|spec| Running { spec, pid: 0 })
            .collect(),
        egress: p.egress.clone(),
        proxy_pid: 0,
        echo_pid: 0,
        stand_ins: Vec::new(),
        notes: p.notes.clone(),
        endpoints: p.endpoints.clone().into_iter().collect(),
    }
}

#[test]
fn the_probe_matrix_takes_every_verdict_from_the_policy_model() {
    let s = snapshot();
    let policy = Policy::compile(&s);
    let p = plan::plan(&s, &objects(&s), &options()).unwrap();
    let probes = verify::expectations(&state_of(&p), &policy).unwrap();
    // 5 pods: each reaches 4 others on each of their ports, plus internet
    // direct and via proxy, cluster DNS, metadata and the API server; the
    // gateway reaches all 5.
    let ports = |pod: &plan::PodPlan| pod.ports.len();
    let pairs: usize = p
        .pods
        .iter()
        .map(|a| {
            p.pods
                .iter()
                .filter(|b| b.netns != a.netns)
                .map(ports)
                .sum::<usize>()
        })
        .sum();
    let gw: usize = p.pods.iter().map(ports).sum();
    let ingress = p.gateways[0].routes.len();
    assert_eq!(probes.len(), pairs + 5 * p.pods.len() + gw + ingress);
    for probe in &probes {
        match (&probe.to, probe.kind) {
            (verify::Target::Model(to), ProbeKind::Direct) => {
                let v = policy.allowed(
                    &probe.from,
                    to,
                    PortProto::tcp(Port::try_from(probe.port).unwrap()),
                );
                assert_eq!(
                    (probe.expected, probe.reason.clone()),
                    (v.allowed, v.reason.to_string()),
                    "{probe:?}"
                );
            }
            (verify::Target::Metadata | verify::Target::ApiServer, _) => {
                assert!(!probe.expected, "{probe:?}")
            }
            _ => {}
        }
    }
    let find = |from: &str, to: &str, port: u16, kind: ProbeKind| {
        probes
            .iter()
            .find(|x| {
                x.from.to_string() == from
                    && x.to.to_string() == to
                    && x.port == port
                    && x.kind == kind
            })
            .unwrap()
    };
    assert!(find("acme/api", "acme/db", 5432, ProbeKind::Direct).expected);
    assert!(!find("acme/api", "acme/db", 9187, ProbeKind::Direct).expected);
    assert!(!find("acme/db", "acme/api", 8080, ProbeKind::Direct).expected);
    assert!(find("acme/web", "acme/web", 80, ProbeKind::Direct).expected);
    assert!(!find("acme/web", "big-corp/db", 80, ProbeKind::Direct).expected);
    assert!(find("gateway/central", "big-corp/db", 80, ProbeKind::Direct).expected);
    let ingress = find("gateway/central", "acme/db", 5432, ProbeKind::ViaGateway);
    assert!(ingress.expected);
    assert_eq!(ingress.host.as_deref(), Some("db.acme.apps.example.com"));
    assert!(!find("acme/web", "internet", 80, ProbeKind::Direct).expected);
    assert!(find("acme/web", "egress-proxy/acme", 3128, ProbeKind::ViaProxy).expected);
    assert!(find("big-corp/db", "internet", 80, ProbeKind::Direct).expected);
    assert!(find("acme/web", "cluster-dns", 53, ProbeKind::Direct).expected);
    assert!(!find("big-corp/db", "cloud-metadata", 80, ProbeKind::Direct).expected);
    assert!(
        !find(
            "big-corp/db",
            "egress-proxy/big-corp",
            3128,
            ProbeKind::ViaProxy
        )
        .expected
    );
}

#[test]
fn judging_names_wrong_answers_and_wrong_egress_addresses() {
    let s = snapshot();
    let policy = Policy::compile(&s);
    let p = plan::plan(&s, &objects(&s), &options()).unwrap();
    let probes = verify::expectations(&state_of(&p), &policy).unwrap();
    let via = probes
        .iter()
        .find(|x| x.kind == ProbeKind::ViaProxy && x.from.to_string() == "acme/web")
        .unwrap();
    let egress = p.egress_of("acme").unwrap().ip;
    let ok = verify::judge(
        via,
        &Ok((
            200,
            format!("{{\"role\":\"internet-echo\",\"caller\":\"{egress}\"}}"),
        )),
    );
    assert!(ok.ok && ok.observed, "{ok:?}");
    let wrong = verify::judge(
        via,
        &Ok((
            200,
            "{\"role\":\"internet-echo\",\"caller\":\"2001:db8::9\"}".into(),
        )),
    );
    assert!(
        !wrong.ok && wrong.detail.contains("instead of the tenant's egress IP"),
        "{wrong:?}"
    );
    let refused = verify::judge(via, &Ok((403, String::new())));
    assert!(!refused.ok && !refused.observed);
    let blocked = probes
        .iter()
        .find(|x| !x.expected && x.kind == ProbeKind::Direct)
        .unwrap();
    let o = verify::judge(
        blocked,
        &Err(palisade_lab::serve::ProbeFailure::Connect(
            "timed out".into(),
        )),
    );
    assert!(o.ok && !o.observed);
    let leaked = verify::judge(blocked, &Ok((200, "{}".into())));
    assert!(!leaked.ok && leaked.observed);
}

#[test]
fn the_proxy_config_is_valid_and_names_every_tenant_source_and_egress() {
    let mut s = snapshot();
    // acme has its own listener port; big-corp (from a store without ports) none.
    s.tenants[0].proxy_port = 20001;
    let p = plan::plan(&s, &objects(&s), &options()).unwrap();
    let yaml = p.proxy_config.to_yaml().unwrap();
    let back = palisade_proxy::config::ProxyConfig::from_yaml(&yaml).unwrap();
    back.validate().unwrap();
    // Every address of the proxy's namespace (PROXY_ADDR among them), both
    // families: tenant listeners bind there too.
    assert!(back.listen.ip().is_unspecified(), "{yaml}");
    assert_eq!(back.tenants.len(), 2);
    for t in &back.tenants {
        let e = p.egress_of(t.name.as_str()).unwrap();
        assert_eq!(t.egress.ipv6, Some(e.ip));
        let port = s
            .tenants
            .iter()
            .find(|x| x.name.as_str() == t.name.as_str())
            .unwrap()
            .proxy_port;
        assert_eq!(t.listen_port, (port != 0).then_some(port), "{yaml}");
        let subnets: Vec<_> = s
            .deployments
            .iter()
            .filter(|d| d.tenant.as_str() == t.name.as_str())
            .map(|d| ipnet::IpNet::from(d.subnet))
            .collect();
        assert_eq!(
            t.sources.iter().map(|x| x.prefix).collect::<Vec<_>>(),
            subnets
        );
    }
    // The pool is never reachable through the proxy.
    assert!(
        back.cluster_deny
            .contains(&ipnet::IpNet::from(s.pool.cidr()))
    );
}

/// The gateways' routes are the rendered HTTPRoutes', not the store's: a
/// route dropped from the objects is not served, and a route admitted only
/// by a ReferenceGrant is (Gateway API: a cross-namespace backendRef needs
/// one in the Service's namespace).
#[test]
fn gateway_routes_come_from_the_rendered_http_routes() {
    let s = snapshot();
    let mut objects = objects(&s);
    let route = |objects: &[serde_json::Value], name: &str| {
        objects
            .iter()
            .position(|o| o["kind"] == "HTTPRoute" && o["metadata"]["name"] == name)
            .unwrap()
    };
    let i = route(&objects, "central-db");
    objects.remove(i);
    let p = plan::plan(&s, &objects, &options()).unwrap();
    let targets: Vec<&str> = p.gateways[0]
        .routes
        .iter()
        .map(|r| r.target.as_str())
        .collect();
    assert_eq!(targets, ["acme/api"]);

    // acme's api route moved to big-corp's namespace, still naming acme's
    // Service: attached (the listener selects every tenant namespace), but
    // its backend is invalid without a grant.
    let i = route(&objects, "central-api");
    objects[i]["metadata"]["namespace"] = "tenant-big-corp".into();
    objects[i]["spec"]["hostnames"] = serde_json::json!(["api.big-corp.apps.example.com"]);
    objects[i]["spec"]["rules"][0]["backendRefs"][0]["namespace"] = "tenant-acme".into();
    let p = plan::plan(&s, &objects, &options()).unwrap();
    assert!(
        p.gateways[0].routes.is_empty(),
        "{:?}",
        p.gateways[0].routes
    );
    objects.push(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": "tenant-acme"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                           "namespace": "tenant-big-corp"}],
                 "to": [{"group": "", "kind": "Service"}]},
    }));
    let p = plan::plan(&s, &objects, &options()).unwrap();
    let r = &p.gateways[0].routes;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].host.as_str(), r[0].target.as_str()),
        ("api.big-corp.apps.example.com", "acme/api")
    );
}

/// The egress-gateway SNAT is the rendered `CiliumEgressGatewayPolicy`'s:
/// the subnets of the pods its selectors pick go out as the tenant it is
/// labelled with. A selector that misses the tenant's pods leaves them
/// un-SNATed; one that picks another tenant's namespace SNATs that
/// tenant's pods to this tenant's address (what the internet echo then
/// reports, and verify checks).
#[test]
fn egress_gateway_snat_comes_from_the_rendered_policy() {
    let s = snapshot();
    let snat_of = |objects: &[serde_json::Value]| {
        let p = plan::plan(&s, objects, &options()).unwrap();
        let line = p
            .ruleset
            .lines()
            .skip_while(|l| !l.contains("map egress_snat"))
            .find(|l| l.contains("elements"))
            .unwrap_or_default()
            .to_owned();
        (p, line)
    };
    let mut objects = objects(&s);
    let (p, line) = snat_of(&objects);
    let big = p.egress_of("big-corp").unwrap().ip;
    let big_db = s.deployments[3].subnet;
    assert!(line.contains(&format!("{big_db} : {big}")), "{line}");
    assert!(
        !line.contains(&s.deployments[0].subnet.to_string()),
        "{line}"
    );

    let policy = objects
        .iter_mut()
        .find(|o| o["kind"] == "CiliumEgressGatewayPolicy")
        .unwrap();
    policy["spec"]["selectors"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] =
        "tenant-acme".into();
    let (_, line) = snat_of(&objects);
    assert!(!line.contains(&big_db.to_string()), "{line}");
    for d in &s.deployments[..3] {
        assert!(line.contains(&format!("{} : {big}", d.subnet)), "{line}");
    }
}
