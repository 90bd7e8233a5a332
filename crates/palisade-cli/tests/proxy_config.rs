//! The proxy's config is compiled once (`palisade_proxy::compile::config`):
//! `palisade proxy-config`, the ConfigMap `palisade render` writes for the
//! in-cluster proxy, and the lab's plan say the same about every tenant.

mod support;

use palisade_proxy::config::ProxyConfig;
use support::Env;

/// Seed 002's scenario plus a second tenant: `acme` has a node pool and a
/// fixed egress IP, two deployments; `big` has neither.
fn seed_002() -> Env {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:9::/48"]).ok();
    env.run(&[
        "tenant",
        "create",
        "acme",
        "--node-pool",
        "acme-pool",
        "--egress-ip",
        "2001:db8:e9::7",
    ])
    .ok();
    env.run(&["create", "acme", "web", "nginx"]).ok();
    env.run(&["create", "acme", "egress-check", "nginx"]).ok();
    env.run(&["create", "big", "db", "postgres:14"]).ok();
    env
}

fn config(yaml: &str) -> ProxyConfig {
    ProxyConfig::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"))
}

#[test]
fn cli_render_and_lab_compile_the_same_proxy_config() {
    let env = seed_002();
    // `palisade proxy-config` with the settings of the in-cluster proxy.
    let cli = config(
        &env.run(&[
            "proxy-config",
            "--listen",
            "[::]:3128",
            "--admin-listen",
            "[::]:9128",
            "--cluster-deny",
            "fd00:9::/48",
        ])
        .ok(),
    );
    let tree = env.dir.path().join("gitops");
    env.run(&["render", "--out", tree.to_str().unwrap(), "--no-flux"])
        .ok();
    let cm: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(tree.join("base/platform/configmap-palisade-proxy.yaml")).unwrap(),
    )
    .unwrap();
    let rendered = config(cm["data"]["proxy.yaml"].as_str().unwrap());
    assert_eq!(cli, rendered);
    let acme = &cli.tenants[0];
    assert_eq!(acme.name.as_str(), "acme");
    assert_eq!(acme.egress.ipv6, Some("2001:db8:e9::7".parse().unwrap()));
    assert_eq!(acme.sources.len(), 2);
    assert!(acme.listen_port.is_some());

    // The lab: its own listeners and egress addresses, the same tenants.
    let snapshot = palisade_store::Store::open(&env.state)
        .and_then(|mut s| s.snapshot())
        .unwrap();
    let objects: Vec<serde_json::Value> =
        palisade_kube::render(&snapshot, &palisade_kube::RenderOptions::default())
            .unwrap()
            .objects()
            .map(|o| o.body.clone())
            .collect();
    let options = palisade_lab::LabOptions::for_dir(env.dir.path(), palisade_lab::Runtime::Plain);
    let lab = palisade_lab::plan::plan(&snapshot, &objects, &options)
        .unwrap()
        .proxy_config;
    let who = |c: &ProxyConfig| {
        c.tenants
            .iter()
            .map(|t| (t.name.clone(), t.listen_port, t.sources.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(who(&lab), who(&cli));
    // acme's stored egress is IPv6, so the lab leaves from it too.
    assert_eq!(lab.tenants[0].egress, acme.egress);
}
