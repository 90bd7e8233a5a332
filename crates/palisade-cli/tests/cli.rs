//! The `palisade` CLI end to end: seed parity, every error, output formats.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{BIN, Env};

#[test]
fn seed_recycling_scenario() {
    let env = Env::new();
    let out = env.run(&["init", "--pool", "fd00:1::/48"]).ok();
    assert!(
        out.contains("initialised pool fd00:1::/48 with /96 subnets (281474976710656 of them)"),
        "{out}"
    );
    let app1 = env.json(&["create", "test-tenant", "app1", "nginx:alpine", "2"]);
    let app2 = env.json(&["create", "test-tenant", "app2", "nginx:alpine", "2"]);
    assert_ne!(app1["subnet"], app2["subnet"]);
    let out = env.run(&["delete", "test-tenant", "app1"]).ok();
    assert!(
        out.contains("subnet fd00:1::/96 released for recycling"),
        "{out}"
    );
    let stats = env.json(&["stats"]);
    assert_eq!(stats["recycled_available"], 1);
    let app3 = env.json(&["create", "test-tenant", "app3", "nginx:alpine", "1"]);
    assert_eq!(
        app3["subnet"], app1["subnet"],
        "app3 must reuse app1's subnet"
    );
    let list = env.json(&["list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app2", "app3"]);
    let stats = env.json(&["stats"]);
    assert_eq!(stats["capacity"].as_u64(), Some(281_474_976_710_656));
    assert_eq!(
        (
            stats["allocated"].as_u64(),
            stats["recycled_available"].as_u64()
        ),
        (Some(2), Some(0))
    );
    assert!(env.run(&["check"]).ok().starts_with("ok:"));
}

#[test]
fn create_prints_tenant_deployment_and_subnet() {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:2::/48", "--prefix-len", "112"])
        .ok();
    let out = env
        .run(&["create", "acme-corp", "web-frontend", "nginx:alpine", "3"])
        .ok();
    assert!(
        out.contains("created tenant acme-corp (namespace tenant-acme-corp)"),
        "{out}"
    );
    assert!(
        out.contains("tenant:") && out.contains("deployment: web-frontend"),
        "{out}"
    );
    assert!(out.contains("subnet:     fd00:2::/112"), "{out}");
    let out = env
        .run(&["create", "acme-corp", "api", "node:18-alpine"])
        .ok();
    assert!(!out.contains("created tenant"), "{out}");
    let table = env.run(&["list", "--tenant", "acme-corp"]).ok();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("TENANT"), "{table}");
    assert!(table.contains("fd00:2::1:0/112"), "{table}");
    let yaml = env.run(&["-o", "yaml", "list"]).ok();
    assert!(yaml.contains("subnet: fd00:2::/112"), "{yaml}");
}

#[test]
fn every_user_error_is_one_specific_line_and_changes_nothing() {
    let env = Env::new();
    // Uninitialised: no file is created by the attempt.
    env.run(&["list"]).fails_with("run `palisade init` first");
    env.run(&["create", "t", "d", "nginx"])
        .fails_with("run `palisade init` first");
    assert!(!env.path().exists(), "a read created the state file");
    // Bad pools never create the store either.
    env.run(&["init", "--pool", "banana"])
        .fails_with("invalid pool CIDR \"banana\"");
    env.run(&["init", "--pool", "10.0.0.0/8"])
        .fails_with("IPv4 pool 10.0.0.0/8 is not supported");
    env.run(&["init", "--pool", "fd00::1/48"])
        .fails_with("did you mean fd00::/48");
    env.run(&["init", "--prefix-len", "63"])
        .fails_with("invalid subnet prefix length 63");
    env.run(&["init", "--prefix-len", "121"])
        .fails_with("must be between /64 and /120");
    env.run(&["init", "--reuse-after", "soon"])
        .fails_with("invalid --reuse-after");
    assert!(!env.path().exists(), "a failed init left a state file");

    env.run(&["init", "--pool", "fd00:3::/119", "--prefix-len", "120"])
        .ok();
    env.run(&["create", "acme", "web", "nginx:alpine", "2"])
        .ok();
    env.run(&["create", "acme", "api", "nginx:alpine", "2"])
        .ok();
    env.run(&["allow", "acme", "web", "api", "--port", "8080"])
        .ok();
    env.run(&["gateway", "create", "per-tenant", "acme"]).ok();
    let before = env.observable();

    let cases: &[(&[&str], &str)] = &[
        (
            &["create", "Acme", "web", "nginx"],
            "invalid tenant name \"Acme\"",
        ),
        (
            &["create", "acme", "bad_name", "nginx"],
            "invalid deployment name \"bad_name\"",
        ),
        (
            &["create", &"x".repeat(57), "web", "nginx"],
            "at most 56 are allowed",
        ),
        (
            &["create", "acme", "db", "Nginx:latest"],
            "invalid image reference",
        ),
        (
            &["create", "acme", "db", "nginx", "many"],
            "invalid replicas \"many\"",
        ),
        (
            &["create", "acme", "db", "nginx", "1", "--port", "0"],
            "invalid port",
        ),
        (
            &["create", "acme", "web", "nginx"],
            "deployment acme/web already exists",
        ),
        (
            &["create", "other", "db", "nginx"],
            "subnet pool fd00:3::/119 is exhausted",
        ),
        (&["delete", "nope", "web"], "tenant nope not found"),
        (
            &["delete", "acme", "nope"],
            "deployment acme/nope not found",
        ),
        (&["list", "--tenant", "nope"], "tenant nope not found"),
        (&["tenant", "delete", "acme"], "still has 2 deployment(s)"),
        (&["tenant", "create", "acme"], "tenant acme already exists"),
        (
            &["tenant", "create", "new", "--cpu", "lots"],
            "invalid cpu quantity",
        ),
        (
            &["tenant", "create", "new", "--memory", "8GB"],
            "invalid memory quantity",
        ),
        (
            &["tenant", "create", "new", "--egress-ip", "1.2.3"],
            "invalid --egress-ip",
        ),
        (
            &["tenant", "create", "new", "--egress-mode", "nat"],
            "invalid egress mode",
        ),
        (
            &["tenant", "create", "new", "--label", "palisade.io/x=y"],
            "reserved",
        ),
        (&["tenant", "show", "nope"], "tenant nope not found"),
        (
            &["gateway", "create", "per-tenant", "acme"],
            "gateway per-tenant/acme already exists",
        ),
        (
            &["gateway", "create", "per-deployment", "acme", "nope"],
            "deployment acme/nope not found",
        ),
        (
            &["gateway", "delete", "central"],
            "gateway central not found",
        ),
        (
            &["allow", "acme", "web", "api", "--port", "8080"],
            "already exists",
        ),
        (
            &["allow", "acme", "web", "web"],
            "may always reach each other",
        ),
        (&["disallow", "acme", "api", "web"], "not found"),
        (&["init", "--pool", "fd00:4::/48"], "already initialised"),
        (
            &["init", "--pool", "fd00:4::/48", "--force"],
            "2 deployment(s) still hold subnets",
        ),
    ];
    for (args, needle) in cases {
        let run = env.run(args);
        assert_ne!(run.code, 0, "palisade {args:?} succeeded");
        run.fails_with(needle);
        assert_eq!(
            env.observable(),
            before,
            "palisade {args:?} changed the state"
        );
    }
    assert!(env.run(&["check"]).ok().starts_with("ok:"));
}

#[test]
fn import_fails_whole_on_one_bad_entry() {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:5::/48"]).ok();
    let file = env.dir.path().join("batch.yaml");
    std::fs::write(
        &file,
        "- {tenant: a, name: one, image: nginx}\n- {tenant: a, name: Two, image: nginx}\n",
    )
    .unwrap();
    let before = env.observable();
    env.run(&["import", file.to_str().unwrap()])
        .fails_with("invalid import file");
    assert_eq!(env.observable(), before);
    std::fs::write(&file, "- {tenant: a, name: one, image: nginx, replicas: 2, ports: [8080]}\n- {tenant: b, name: two, image: nginx}\n").unwrap();
    let out = env.run(&["import", file.to_str().unwrap()]).ok();
    assert!(
        out.contains("imported 2 deployments (2 new tenants)"),
        "{out}"
    );
    let list = env.json(&["list"]);
    assert_eq!(list[0]["ports"], serde_json::json!([8080]));
    assert_eq!(list[0]["replicas"], 2);
}

#[test]
fn tenants_gateways_and_rules_round_trip() {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:6::/48"]).ok();
    env.run(&[
        "create-tenant",
        "acme-corp",
        "--cpu",
        "8",
        "--memory",
        "16Gi",
        "--pods",
        "50",
        "--node-pool",
        "acme-pool",
        "--egress-ip",
        "203.0.113.10",
        "--label",
        "team=payments",
    ])
    .ok();
    env.run(&[
        "create",
        "acme-corp",
        "api",
        "node:18-alpine",
        "2",
        "--port",
        "3000",
    ])
    .ok();
    env.run(&["create", "acme-corp", "db", "postgres:14", "--port", "5432"])
        .ok();
    env.run(&["allow", "acme-corp", "api", "db", "--port", "5432"])
        .ok();
    env.run(&["create-gateway", "central"]).ok();
    env.run(&["gateway", "create", "per-deployment", "acme-corp", "api"])
        .ok();

    let t = env.json(&["tenant", "show", "acme-corp"]);
    assert_eq!(
        t["tenant"]["quota"],
        serde_json::json!({"cpu": "8", "memory": "16Gi", "pods": 50})
    );
    assert_eq!(t["tenant"]["node_pool"], "acme-pool");
    assert_eq!(t["tenant"]["egress"]["ip"], "203.0.113.10");
    assert_eq!(t["deployments"].as_array().unwrap().len(), 2);
    let rules = env.json(&["rules"]);
    assert_eq!(
        rules,
        serde_json::json!([{"tenant": "acme-corp", "from": "api", "to": "db", "port": 5432}])
    );
    let gateways = env.run(&["gateway", "list"]).ok();
    assert!(
        gateways.contains("per-deployment/acme-corp/api") && gateways.contains("all tenants"),
        "{gateways}"
    );

    let out = env.run(&["delete", "acme-corp", "api"]).ok();
    assert!(
        out.contains("removed allow rule acme-corp: api -> db on port 5432"),
        "{out}"
    );
    assert!(
        out.contains("removed gateway per-deployment/acme-corp/api"),
        "{out}"
    );
    let out = env
        .run(&["tenant", "delete", "acme-corp", "--cascade"])
        .ok();
    assert!(
        out.contains("deleted deployment acme-corp/db") && out.contains("deleted tenant acme-corp"),
        "{out}"
    );
    assert_eq!(env.json(&["tenant", "list"]), serde_json::json!([]));
    assert!(env.run(&["check"]).ok().starts_with("ok:"));
}

#[test]
fn init_without_pool_generates_a_ula_48() {
    let env = Env::new();
    let out = env.run(&["init"]).ok();
    let line = out.lines().next().unwrap();
    let cidr = line
        .strip_prefix("generated RFC 4193 unique local pool ")
        .unwrap();
    let net: ipnet::Ipv6Net = cidr.parse().unwrap();
    assert_eq!(net.prefix_len(), 48);
    assert_eq!(net.network().octets()[0], 0xfd);
    assert_eq!(env.json(&["stats"])["pool"], cidr);
}

#[test]
fn default_state_location_follows_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let run = |envs: &[(&str, &std::path::Path)]| {
        let mut c = std::process::Command::new(BIN);
        c.env_remove("PALISADE_STATE")
            .env_remove("XDG_STATE_HOME")
            .env("HOME", dir.path());
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.args(["init", "--pool", "fd00:7::/48"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[]);
    assert!(dir.path().join(".local/state/palisade/state.db").exists());
    let xdg = dir.path().join("xdg");
    run(&[("XDG_STATE_HOME", &xdg)]);
    assert!(xdg.join("palisade/state.db").exists());
    let explicit = dir.path().join("explicit.db");
    run(&[("PALISADE_STATE", &explicit)]);
    assert!(explicit.exists());
}

#[test]
fn works_as_a_kubectl_plugin() {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:8::/48"]).ok();
    env.run(&["create", "acme", "web", "nginx"]).ok();
    let bin_dir = env.dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("kubectl-palisade")).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let Ok(out) = std::process::Command::new("kubectl")
        .env("PATH", &path)
        .args(["palisade", "list", "--state"])
        .arg(env.path())
        .output()
    else {
        // kubectl is installed on these machines and by .ci/run; say so if not.
        panic!("kubectl not found: install it to test the plugin (see README)");
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("fd00:8::/96"), "{stdout}");
    let help = std::process::Command::new(bin_dir.join("kubectl-palisade"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl palisade"));
}

#[test]
fn completions_are_generated_for_each_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]).ok();
        assert!(
            out.contains("create-tenant"),
            "{shell} completion lacks commands"
        );
    }
}

#[test]
fn proxy_config_from_the_store_is_accepted_by_the_proxy() {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:9::/48"]).ok();
    env.run(&["tenant", "create", "acme", "--egress-ip", "203.0.113.7"])
        .ok();
    env.run(&["create", "acme", "web", "nginx"]).ok();
    env.run(&["create", "acme", "api", "nginx"]).ok();
    env.run(&["create", "big", "db", "postgres:14"]).ok();
    let file = env.dir.path().join("proxy.yaml");
    let out = env
        .run(&[
            "proxy-config",
            "--out",
            file.to_str().unwrap(),
            "--cluster-deny",
            "10.96.0.0/12",
        ])
        .ok();
    assert!(out.contains("wrote proxy config for 2 tenants"), "{out}");
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(
        yaml.contains("fd00:9::/96") && yaml.contains("deployment: web"),
        "{yaml}"
    );
    assert!(yaml.contains("ipv4: 203.0.113.7"), "{yaml}");
    let check = env.run(&["proxy", "check", "--config", file.to_str().unwrap()]);
    assert_eq!(
        check.code, 0,
        "the proxy rejected the generated config: {}",
        check.stderr
    );
    std::fs::write(&file, "listen: nonsense\n").unwrap();
    let bad = env.run(&["proxy", "check", "--config", file.to_str().unwrap()]);
    assert_eq!(
        bad.code, 64,
        "a bad proxy config must exit 64: {}",
        bad.stderr
    );
    // One prefix for every command's errors: `palisade proxy` reports as
    // `palisade` does, not as the standalone `palisade-proxy` binary.
    assert!(
        bad.stderr.starts_with("error: ") && !bad.stderr.contains("palisade-proxy"),
        "{}",
        bad.stderr
    );
    let usage = env.run(&["proxy", "--workers", "0"]);
    assert_eq!(usage.code, 64, "{}", usage.stderr);
    assert!(
        usage.stderr.starts_with("error: --workers takes a number")
            && usage.stderr.contains("palisade proxy check --config FILE"),
        "{}",
        usage.stderr
    );
}

#[test]
fn rendered_in_cluster_proxy_carries_a_config_the_proxy_accepts() {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:9::/48"]).ok();
    env.run(&["tenant", "create", "acme", "--egress-ip", "203.0.113.7"])
        .ok();
    env.run(&["create", "acme", "web", "nginx"]).ok();
    let tree = env.dir.path().join("gitops");
    env.run(&[
        "render",
        "--out",
        tree.to_str().unwrap(),
        "--git-url",
        "https://git.example.com/platform.git",
    ])
    .ok();
    let cm: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(tree.join("base/platform/configmap-palisade-proxy.yaml")).unwrap(),
    )
    .unwrap();
    let config = cm["data"]["proxy.yaml"].as_str().unwrap();
    assert!(config.contains("fd00:9::/96"), "{config}");
    let file = env.dir.path().join("from-configmap.yaml");
    std::fs::write(&file, config).unwrap();
    let check = env.run(&["proxy", "check", "--config", file.to_str().unwrap()]);
    assert_eq!(check.code, 0, "{}", check.stderr);

    // A new deployment changes the proxy's config and nothing of other tenants.
    env.run(&["create", "acme", "api", "nginx"]).ok();
    let out = env.run(&["render", "--out", tree.to_str().unwrap()]).ok();
    assert!(
        out.contains("~ base/platform/configmap-palisade-proxy.yaml"),
        "{out}"
    );
    assert!(
        out.contains("+ base/tenants/acme/deployments/api.yaml"),
        "{out}"
    );

    // An external proxy (an IP) means no in-cluster one, and its files go.
    let out = env
        .run(&[
            "render",
            "--out",
            tree.to_str().unwrap(),
            "--proxy-address",
            "172.16.28.8",
        ])
        .ok();
    assert!(
        out.contains("- base/platform/deployment-palisade-proxy.yaml"),
        "{out}"
    );
}

/// A lab gateway stand-in fronting 5,000 deployments: its spec is over the
/// 128 KiB the kernel lets one argument hold (`MAX_ARG_STRLEN`, execve(2)
/// fails with E2BIG), so passed inline it cannot even start; as `@FILE` it
/// runs, routes its last host (503: its backend is down) and refuses a host
/// it has no route for (404). Checked with curl.
#[test]
fn lab_serve_reads_a_spec_too_long_for_one_argument_from_a_file() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let routes: Vec<serde_json::Value> = (0..5000)
        .map(|i| serde_json::json!([format!("d{i}.t.apps.example.com"), ["127.0.0.1:1"]]))
        .collect();
    let spec = serde_json::json!({
        "workload": {"role": "gateway", "routes": routes},
        "listen": [format!("127.0.0.1:{port}")],
    })
    .to_string();
    assert!(spec.len() > 128 * 1024);
    let inline = std::process::Command::new(BIN)
        .args(["lab", "__serve", &spec])
        .spawn();
    assert_eq!(
        inline.err().and_then(|e| e.raw_os_error()),
        Some(7),
        "E2BIG"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.spec.json");
    std::fs::write(&path, &spec).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["lab", "__serve", &format!("@{}", path.display())])
        .spawn()
        .unwrap();
    let status = |host: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Host: {host}"))
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (routed, unrouted) = (
        status("d4999.t.apps.example.com"),
        status("nowhere.example.com"),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!((routed.as_str(), unrouted.as_str()), ("503", "404"));
}
