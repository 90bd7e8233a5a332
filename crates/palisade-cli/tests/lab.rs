//! The lab for real: network namespaces, nftables and workloads on this
//! host, driven through the `palisade` binary. Needs Linux and root; without
//! them each test prints `SKIPPED: <why>` and passes, except under `CI=true`
//! where it fails. Every test uses its own state directory, hence its own
//! lab id and namespace prefix, so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::Env;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether the lab can run here; prints SKIPPED (and fails in CI) if not.
fn can_run() -> bool {
    let why = if !cfg!(target_os = "linux") {
        Some("the lab needs Linux".to_string())
    } else if !std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    }) {
        Some("the lab needs root (network namespaces, nftables)".to_string())
    } else {
        ["ip", "nft"].iter().find_map(|tool| {
            std::process::Command::new(tool)
                .arg("-V")
                .output()
                .is_err()
                .then(|| format!("`{tool}` is not installed"))
        })
    };
    match why {
        None => true,
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            assert!(!in_ci(), "CI=true but the lab cannot run: {why}");
            false
        }
    }
}

/// Takes the lab down even when a test fails half-way.
struct Lab {
    env: Env,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.env.run(&["lab", "down"]);
    }
}

impl Lab {
    fn new() -> Self {
        let env = Env::new();
        env.run(&["init"]).ok();
        Self { env }
    }
    fn ok(&self, args: &[&str]) -> String {
        self.env.run(args).ok()
    }
    fn verify(&self) -> (i32, Value, String) {
        let r = self.env.run(&["-o", "json", "lab", "verify"]);
        let v = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {} {}", r.stdout, r.stderr));
        (r.code, v, r.stderr)
    }
    fn status(&self) -> Value {
        self.env.json(&["lab", "status"])
    }
}

fn probes<'a>(report: &'a Value, from: &str, to: &str, kind: &str) -> Vec<&'a Value> {
    report["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["from"] == from && p["to"] == to && p["kind"] == kind)
        .collect()
}

/// All probes between two endpoints agree with `expected` and were observed so.
#[track_caller]
fn assert_path(report: &Value, from: &str, to: &str, kind: &str, expected: bool) {
    let ps = probes(report, from, to, kind);
    assert!(!ps.is_empty(), "no {kind} probe {from} -> {to}");
    for p in ps {
        assert_eq!(p["expected"], expected, "{p}");
        assert_eq!(p["observed"], expected, "{p}");
        assert_eq!(p["ok"], true, "{p}");
    }
}

/// The AAAA answers cluster DNS gives `name`, asked from namespace `netns`
/// (over TCP with `+tcp` in `extra`).
fn dig(netns: &str, name: &str, extra: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", netns, "dig", "+short", "+time=2", "+tries=1",
        ])
        .args(extra)
        .args(["@fd70:1ab::53", name, "AAAA"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_list() -> String {
    String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[test]
fn the_seed_scenario_end_to_end() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    lab.ok(&["create", "test-tenant", "frontend", "nginx:alpine", "2"]);
    lab.ok(&["create", "test-tenant", "backend", "nginx:alpine", "2"]);
    lab.ok(&["create", "test-tenant-2", "database", "nginx:alpine", "1"]);
    lab.ok(&["gateway", "create", "central"]);
    let up = lab.ok(&["lab", "up"]);
    assert!(up.contains("5 pods"), "{up}");

    let status = lab.status();
    let prefix = format!("pl-{}-", status["lab_id"].as_str().unwrap());
    let pods: Vec<&Value> = status["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["kind"] == "pod")
        .collect();
    assert_eq!(pods.len(), 5);
    for p in &pods {
        assert_eq!(p["running"], true, "{p}");
        assert!(
            ["runsc", "plain"].contains(&p["runtime"].as_str().unwrap()),
            "{p}"
        );
    }
    // Pods, the gateway, and router, proxy, internet, metadata, API server, DNS.
    assert_eq!(
        netns_list().matches(&prefix).count(),
        5 + 1 + 6,
        "{}",
        netns_list()
    );

    let (code, report, stderr) = lab.verify();
    assert_eq!(code, 0, "verify failed: {stderr}\n{report:#}");
    // The IPv6-only lab cannot send to the IPv4 metadata address; verify
    // says so rather than counting it as proven.
    assert!(
        stderr.contains("note: not modelled by the lab: 169.254.169.254"),
        "{stderr}"
    );
    // Same deployment reachable; other deployments and tenants blocked.
    assert_path(
        &report,
        "test-tenant/frontend",
        "test-tenant/frontend",
        "direct",
        true,
    );
    assert_path(
        &report,
        "test-tenant/backend",
        "test-tenant/backend",
        "direct",
        true,
    );
    assert_path(
        &report,
        "test-tenant/frontend",
        "test-tenant/backend",
        "direct",
        false,
    );
    assert_path(
        &report,
        "test-tenant/backend",
        "test-tenant/frontend",
        "direct",
        false,
    );
    assert_path(
        &report,
        "test-tenant/frontend",
        "test-tenant-2/database",
        "direct",
        false,
    );
    assert_path(
        &report,
        "test-tenant-2/database",
        "test-tenant/backend",
        "direct",
        false,
    );
    // Stand-ins: cluster DNS allowed; metadata and the API server denied.
    assert_path(
        &report,
        "test-tenant/frontend",
        "cluster-dns",
        "direct",
        true,
    );
    assert_path(
        &report,
        "test-tenant/frontend",
        "cloud-metadata",
        "direct",
        false,
    );
    assert_path(
        &report,
        "test-tenant/frontend",
        "kube-apiserver",
        "direct",
        false,
    );
    // The gateway reaches what it fronts.
    assert_path(
        &report,
        "gateway/central",
        "test-tenant/frontend",
        "direct",
        true,
    );
    assert_path(
        &report,
        "gateway/central",
        "test-tenant-2/database",
        "direct",
        true,
    );
    // ... and serves them to the internet, routed by Host.
    for to in [
        "test-tenant/frontend",
        "test-tenant/backend",
        "test-tenant-2/database",
    ] {
        assert_path(&report, "gateway/central", to, "via-gateway", true);
    }
    // Egress: never direct, always through the proxy, from the tenant's own IP.
    assert_path(&report, "test-tenant/frontend", "internet", "direct", false);
    assert_path(
        &report,
        "test-tenant/frontend",
        "egress-proxy/test-tenant",
        "via-proxy",
        true,
    );
    assert_path(
        &report,
        "test-tenant-2/database",
        "egress-proxy/test-tenant-2",
        "via-proxy",
        true,
    );
    let egress: Vec<(String, String)> = status["egress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["tenant"].as_str().unwrap().to_string(),
                e["ip"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(egress.len(), 2);
    assert_ne!(egress[0].1, egress[1].1, "tenants share an egress IP");
    for (tenant, ip) in &egress {
        for p in report["probes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == "via-proxy" && p["to"] == format!("egress-proxy/{tenant}"))
        {
            assert_eq!(p["detail"], format!("echo saw {ip}"), "{p}");
        }
    }
    // The same egress through each tenant's own port, from an IPv4 address
    // and from an IPv6 address outside every /96.
    for (n, (tenant, deployment)) in [("test-tenant", "frontend"), ("test-tenant-2", "database")]
        .into_iter()
        .enumerate()
    {
        let (_, ip) = egress.iter().find(|(t, _)| t == tenant).unwrap();
        identity_by_tenant_port(&lab, n as u8, tenant, deployment, ip);
    }
    // The dashboard's copy, in its exact shape.
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(lab.env.dir.path().join("lab").join("verify.json")).unwrap(),
    )
    .unwrap();
    assert!(file["generated_at"].as_str().unwrap().ends_with('Z'));
    let first = &file["probes"][0];
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        // `objects`: what the rendered Cilium objects decide (issue 17).
        [
            "expected", "from", "objects", "observed", "port", "reason", "to"
        ]
    );
    assert_eq!(
        file["probes"].as_array().unwrap().len(),
        report["probes"].as_array().unwrap().len()
    );

    // Delete frontend: its subnet is recycled by new-app; sync; verify again.
    let list = lab.env.json(&["list"]);
    let subnet_of = |list: &Value, name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| d["subnet"].as_str().unwrap().to_string())
    };
    let frontend_subnet = subnet_of(&list, "frontend").unwrap();
    lab.ok(&["delete", "test-tenant", "frontend"]);
    lab.ok(&["create", "test-tenant", "new-app", "nginx:alpine", "1"]);
    assert_eq!(
        subnet_of(&lab.env.json(&["list"]), "new-app").unwrap(),
        frontend_subnet
    );
    let sync = lab.ok(&["lab", "sync"]);
    assert!(
        sync.contains("1 pods added, 2 removed, 4 running"),
        "{sync}"
    );
    let (code, report, stderr) = lab.verify();
    assert_eq!(code, 0, "verify after sync failed: {stderr}\n{report:#}");
    assert!(
        probes(
            &report,
            "test-tenant/frontend",
            "test-tenant/frontend",
            "direct"
        )
        .is_empty()
    );
    assert_path(
        &report,
        "test-tenant/new-app",
        "egress-proxy/test-tenant",
        "via-proxy",
        true,
    );
    assert_path(
        &report,
        "test-tenant/new-app",
        "test-tenant/backend",
        "direct",
        false,
    );
    assert_path(
        &report,
        "test-tenant/backend",
        "test-tenant/new-app",
        "direct",
        false,
    );
    assert_path(
        &report,
        "gateway/central",
        "test-tenant/new-app",
        "direct",
        true,
    );
    assert_path(
        &report,
        "gateway/central",
        "test-tenant/new-app",
        "via-gateway",
        true,
    );
    assert_eq!(netns_list().matches(&prefix).count(), 4 + 1 + 6);
    // Cluster DNS answers new-app's name over UDP and over TCP, through
    // the rules (the rendered DNS rule lists 53/UDP and 53/TCP).
    let backend = format!("{prefix}p.test-tenant.backend.0");
    let name = "new-app.tenant-test-tenant.svc.cluster.local";
    let (udp, tcp) = (dig(&backend, name, &[]), dig(&backend, name, &["+tcp"]));
    assert!(
        udp.trim()
            .starts_with(frontend_subnet.split("::").next().unwrap()),
        "{udp}"
    );
    assert_eq!(tcp, udp);
    // verify's cluster-DNS probe is a DNS question over TCP.
    let dns = probes(&report, "test-tenant/backend", "cluster-dns", "direct");
    assert!(
        dns.iter()
            .all(|p| p["detail"].as_str().unwrap().starts_with("DNS over TCP: ")),
        "{dns:?}"
    );

    // Down leaves nothing: namespaces, rules, processes. Twice is fine.
    let pids: Vec<u64> = lab.status()["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap())
        .collect();
    lab.ok(&["lab", "down"]);
    assert!(lab.ok(&["lab", "down"]).contains("removed 0 namespaces"));
    assert!(!netns_list().contains(&prefix), "{}", netns_list());
    let ruleset = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ruleset.stdout).contains("palisade_lab"));
    for pid in pids {
        // Gone, or a zombie waiting for its reaper.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        assert!(
            matches!(state, None | Some("Z" | "X")),
            "process {pid} survived lab down: {stat}"
        );
    }
    lab.env
        .run(&["lab", "status"])
        .fails_with("no lab is running");
}

#[test]
fn an_allow_rule_opens_exactly_that_path_and_port() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    lab.ok(&["create", "acme", "api", "app", "1", "--port", "8080"]);
    lab.ok(&[
        "create", "acme", "db", "postgres", "1", "--port", "5432", "--port", "9187",
    ]);
    lab.ok(&["create", "acme", "web", "nginx:alpine", "1"]);
    lab.ok(&["lab", "up", "--runtime", "plain"]);
    lab.env
        .run(&["lab", "up", "--runtime", "plain"])
        .fails_with("already running");
    let (code, report, stderr) = lab.verify();
    assert_eq!(code, 0, "{stderr}");
    assert_path(&report, "acme/api", "acme/db", "direct", false);

    lab.ok(&["allow", "acme", "api", "db", "--port", "5432"]);
    // Before sync the dataplane lags the store, and verify says so.
    let stale = lab.env.run(&["lab", "verify"]);
    assert_eq!(stale.code, 1, "{}", stale.stdout);
    assert!(
        stale.stderr.contains("run `palisade lab sync`"),
        "{}",
        stale.stderr
    );
    assert!(stale.stderr.contains("acme/api [api-0] -> acme/db [db-0] port 5432: expected allowed (allow rule acme: api -> db port 5432), observed blocked"), "{}", stale.stderr);
    lab.ok(&["lab", "sync"]);
    let (code, report, stderr) = lab.verify();
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let api_db = probes(&report, "acme/api", "acme/db", "direct");
    assert_eq!(api_db.len(), 2);
    for p in api_db {
        let open = p["port"] == 5432;
        assert_eq!(p["observed"], open, "{p}");
        assert_eq!(p["ok"], true, "{p}");
        if open {
            assert_eq!(p["reason"], "allow rule acme: api -> db port 5432");
        }
    }
    // Not the reverse, not from anyone else.
    assert_path(&report, "acme/db", "acme/api", "direct", false);
    assert_path(&report, "acme/web", "acme/db", "direct", false);

    lab.ok(&["disallow", "acme", "api", "db", "--port", "5432"]);
    lab.ok(&["lab", "sync"]);
    let (code, report, stderr) = lab.verify();
    assert_eq!(code, 0, "{stderr}");
    assert_path(&report, "acme/api", "acme/db", "direct", false);
}

#[test]
fn a_broken_dataplane_fails_verify_and_names_the_pair() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    lab.ok(&["create", "shop", "cart", "nginx:alpine", "2"]);
    lab.ok(&["create", "shop", "pay", "nginx:alpine", "1"]);
    lab.ok(&["lab", "up", "--runtime", "plain"]);
    let (code, _, stderr) = lab.verify();
    assert_eq!(code, 0, "{stderr}");

    // Delete the set element that lets cart's pods reach each other over TCP.
    let router = format!("pl-{}-router", lab.status()["lab_id"].as_str().unwrap());
    let nft = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &router, "nft"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = nft(&["list", "table", "inet", "palisade_lab"]);
    let set = table
        .lines()
        .find(|l| l.contains("comment \"shop/cart: egress allow\""))
        .and_then(|l| l.split('@').nth(1))
        .and_then(|l| l.split_whitespace().next())
        .expect("no egress allow rule for shop/cart in the table")
        .to_string();
    let cart = lab
        .env
        .json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "cart")
        .map(|d| d["subnet"].as_str().unwrap().to_string())
        .unwrap();
    nft(&[
        "delete",
        "element",
        "inet",
        "palisade_lab",
        &set,
        &format!("{{ {cart} . tcp . 0-65535 }}"),
    ]);

    let r = lab.env.run(&["lab", "verify"]);
    assert_eq!(
        r.code, 1,
        "verify passed on a broken dataplane: {}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("shop/cart [cart-0] -> shop/cart [cart-1]")
            || r.stderr
                .contains("shop/cart [cart-1] -> shop/cart [cart-0]"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("expected allowed (same deployment), observed blocked"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("MISMATCH"), "{}", r.stdout);
    // Everything else still agrees: only cart -> cart is named.
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(lab.env.dir.path().join("lab").join("verify.json")).unwrap(),
    )
    .unwrap();
    let bad: Vec<&Value> = file["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["expected"] != p["observed"])
        .collect();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(
        bad.iter()
            .all(|p| p["from"] == "shop/cart" && p["to"] == "shop/cart")
    );

    // sync restores the rule set.
    lab.ok(&["lab", "sync"]);
    let (code, _, stderr) = lab.verify();
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn lab_errors_are_one_line() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    lab.env
        .run(&["lab", "verify"])
        .fails_with("no lab is running");
    lab.env
        .run(&["lab", "sync"])
        .fails_with("no lab is running");
    lab.env
        .run(&["lab", "status"])
        .fails_with("no lab is running");
    lab.env
        .run(&["lab", "verify", "--timeout", "soon"])
        .fails_with("invalid --timeout");
    assert!(lab.ok(&["lab", "down"]).contains("removed 0 namespaces"));
    // Not root: a clear error before anything is touched.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            support::BIN,
        ])
        .args(["--state", "/nonexistent/state.db", "lab", "up"])
        .output();
    match out {
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.starts_with("error: the lab needs root"), "{stderr}");
        }
        Err(e) => eprintln!("SKIPPED (non-root part): setpriv not available: {e}"),
    }
}

#[test]
fn egress_leaves_from_the_tenant_ip_through_the_proxy_or_the_egress_gateway() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    // Two tenants sharing one egress address, one per egress mode.
    lab.ok(&[
        "tenant",
        "create",
        "viaproxy",
        "--egress-ip",
        "2001:db8:77::1",
    ]);
    lab.ok(&[
        "tenant",
        "create",
        "viagw",
        "--egress-mode",
        "cilium-egress-gateway",
        "--egress-ip",
        "2001:db8:77::1",
    ]);
    lab.ok(&["create", "viaproxy", "app", "nginx:alpine", "1"]);
    lab.ok(&["create", "viagw", "app", "nginx:alpine", "1"]);
    lab.ok(&["lab", "up", "--runtime", "plain"]);
    let (code, report, stderr) = lab.verify();
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    // Proxy mode: never direct; through the proxy from the tenant's IP.
    assert_path(&report, "viaproxy/app", "internet", "direct", false);
    assert_path(
        &report,
        "viaproxy/app",
        "egress-proxy/viaproxy",
        "via-proxy",
        true,
    );
    let p = &probes(
        &report,
        "viaproxy/app",
        "egress-proxy/viaproxy",
        "via-proxy",
    )[0];
    assert_eq!(p["detail"], "echo saw 2001:db8:77::1", "{p}");
    // Egress-gateway mode: direct, SNATed to the tenant's IP; no proxy.
    assert_path(&report, "viagw/app", "internet", "direct", true);
    let p = &probes(&report, "viagw/app", "internet", "direct")[0];
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .ends_with("saw 2001:db8:77::1"),
        "{p}"
    );
    assert_path(
        &report,
        "viagw/app",
        "egress-proxy/viagw",
        "via-proxy",
        false,
    );
    identity_by_tenant_port(&lab, 0, "viaproxy", "app", "2001:db8:77::1");
}

/// The lab's proxy knows `tenant` by its own listener port, whatever address
/// the pod comes from: the pod of `tenant/app` gets a second link straight to
/// the proxy's namespace with an IPv4 address (as on an IPv4-only cluster
/// network, in no tenant's /96) and an IPv6 address outside every /96 (as
/// without per-deployment pools), and through either it leaves from
/// `egress`; on the shared port the same addresses are nobody. The link
/// bypasses the router: this checks the proxy's identity, and the router's
/// nftables (the policy model) decide who reaches which port. `n` keeps the
/// links and addresses of several calls on one lab apart.
fn identity_by_tenant_port(lab: &Lab, n: u8, tenant: &str, deployment: &str, egress: &str) {
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(lab.env.dir.path().join("lab/proxy.yaml")).unwrap(),
    )
    .unwrap();
    let port = config["tenants"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|t| t["name"] == tenant)
        .and_then(|t| t["listen_port"].as_u64())
        .unwrap_or_else(|| panic!("{tenant} has no listen_port in the lab's proxy.yaml"));
    let id = lab.status()["lab_id"].as_str().unwrap().to_string();
    let (pod, proxy) = (
        format!("pl-{id}-p.{tenant}.{deployment}.0"),
        format!("pl-{id}-proxy"),
    );
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let link = format!("id{n}");
    let v4 = |host: u8| format!("192.0.2.{}", 4 * n + host);
    let v6 = |host: u8| format!("fd99:{n}::{host}");
    ip(&[
        "-n", &pod, "link", "add", &link, "type", "veth", "peer", "name", &link, "netns", &proxy,
    ]);
    for (ns, host) in [(&pod, 2), (&proxy, 1)] {
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/30", v4(host)),
            "dev",
            &link,
        ]);
        let v6 = format!("{}/64", v6(host));
        ip(&["-n", ns, "addr", "add", &v6, "dev", &link, "nodad"]);
        ip(&["-n", ns, "link", "set", &link, "up"]);
    }
    let through = |proxy_url: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &pod, "curl", "-sS", "--max-time", "10"])
            .args([
                "-w",
                "\n%{http_code}",
                "-x",
                proxy_url,
                "http://[2001:db8:1ab::80]/",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for proxy_addr in [v4(1), format!("[{}]", v6(1))] {
        let got = through(&format!("http://{proxy_addr}:{port}"));
        assert!(
            got.ends_with("\n200") && got.contains(egress),
            "{tenant}'s port over {proxy_addr}: {got}"
        );
        let shared = through(&format!("http://{proxy_addr}:3128"));
        assert!(
            shared.ends_with("\n403"),
            "shared port over {proxy_addr}: {shared}"
        );
    }
}
