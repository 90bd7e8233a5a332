//! `palisade lab verify --manifests`: the reachability matrix of
//! hand-written manifests, through the real binary — the evaluator's alone
//! (`--objects-only`: no lab, no root), and measured with packets in a lab
//! of their own (real network namespaces, nftables and workloads; needs
//! Linux and root, else `SKIPPED: <why>`, and a failure under `CI=true`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::Env;

const WORKLOADS: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: t}\nspec:\n  template:\n    metadata: {labels: {deployment: web-frontend}}\n    spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}\n\
---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: t}\nspec:\n  template:\n    metadata: {labels: {deployment: api-backend}}\n    spec: {containers: [{name: c, image: i, ports: [{containerPort: 8080}]}]}\n\
---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: db, namespace: t}\nspec:\n  template:\n    metadata: {labels: {deployment: database}}\n    spec: {containers: [{name: c, image: i, ports: [{containerPort: 5432}]}]}\n\
---\napiVersion: v1\nkind: Pod\nmetadata: {name: gw, namespace: t, labels: {role: gateway}}\nspec: {containers: [{name: c, image: i}]}\n";

/// Seed 000's two policies, as written there.
const POLICIES: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: allow-gateway\n  namespace: t\nspec:\n  endpointSelector:\n    matchLabels:\n      deployment: web-frontend\n  ingress:\n    - fromEndpoints:\n        - matchLabels:\n            role: gateway\n\
---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: allow-api-to-db\n  namespace: t\nspec:\n  endpointSelector:\n    matchLabels:\n      deployment: database\n  ingress:\n    - fromEndpoints:\n        - matchLabels:\n            deployment: api-backend\n";

fn allowed(cells: &Value, from: &str, to: &str) -> bool {
    let cell = cells
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from"] == from && c["to"] == to)
        .unwrap_or_else(|| panic!("no cell {from} -> {to}"));
    cell["verdict"]["allowed"].as_bool().unwrap()
}

#[test]
fn manifests_directory_gives_the_matrix_the_policies_describe() {
    let env = Env::new();
    let dir = env.dir.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("workloads.yaml"), WORKLOADS).unwrap();
    std::fs::write(dir.join("policies.yml"), POLICIES).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
    let out = env.json(&[
        "lab",
        "verify",
        "--objects-only",
        "--manifests",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out["packets"], false);
    let cells = &out["cells"];
    assert!(allowed(cells, "t/gw", "t/web"));
    assert!(allowed(cells, "t/api", "t/db"));
    assert!(!allowed(cells, "t/api", "t/web"));
    assert!(!allowed(cells, "t/web", "t/db"));
    assert!(!allowed(cells, "world", "t/web"));
    assert!(
        allowed(cells, "t/db", "t/api"),
        "api-backend is selected by nothing"
    );
    let table = env
        .run(&[
            "lab",
            "verify",
            "--objects-only",
            "--manifests",
            dir.to_str().unwrap(),
        ])
        .ok();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("t/gw") && l.contains("allowed") && l.contains("allow-gateway")),
        "{table}"
    );
}

#[test]
fn unmodelled_rules_are_warned_about() {
    let env = Env::new();
    let file = env.dir.path().join("all.yaml");
    let fqdn = "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: fqdn, namespace: t}\nspec:\n  endpointSelector: {}\n  egress: [{toFQDNs: [{matchName: example.com}]}]\n";
    std::fs::write(&file, format!("{WORKLOADS}{fqdn}")).unwrap();
    let file = file.to_str().unwrap();
    let run = env.run(&["lab", "verify", "--objects-only", "--manifests", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("warning: not evaluated: CiliumNetworkPolicy t/fqdn spec.egress[0].toFQDNs"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_manifests_are_refused_with_the_reason() {
    let env = Env::new();
    let empty = env.dir.path().join("policies.yaml");
    std::fs::write(&empty, POLICIES).unwrap();
    // Refused before any lab is made, with or without packets.
    for mode in ["--objects-only", "--all"] {
        let verify = |path: &str| env.run(&["lab", "verify", mode, "--manifests", path]);
        verify(empty.to_str().unwrap()).fails_with("no workloads");
        let broken = env.dir.path().join("broken.yaml");
        std::fs::write(&broken, "kind: [unclosed").unwrap();
        verify(broken.to_str().unwrap()).fails_with("is not valid YAML");
        verify("/nonexistent/m.yaml").fails_with("cannot read");
    }
    // clap's usage error: `--objects-only` needs `--manifests`.
    let alone = env.run(&["lab", "verify", "--objects-only"]);
    assert_eq!(alone.code, 2, "{}", alone.stderr);
    assert!(alone.stderr.contains("--manifests"), "{}", alone.stderr);
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether a lab can run here; prints SKIPPED (and fails in CI) if not.
fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    let tools = ["ip", "nft"]
        .iter()
        .find(|tool| std::process::Command::new(tool).arg("-V").output().is_err());
    let why = if !cfg!(target_os = "linux") {
        Some("the lab needs Linux".to_owned())
    } else if !root {
        Some("the lab needs root (network namespaces, nftables)".to_owned())
    } else {
        tools.map(|t| format!("`{t}` is not installed"))
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

/// Seed 000's two hand-written policies, verbatim (`allow-gateway`,
/// `allow-api-to-db`, namespace `tenant-acme-corp`).
const SEED_POLICIES: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-gateway
  namespace: tenant-acme-corp
spec:
  endpointSelector:
    matchLabels:
      deployment: web-frontend
  ingress:
    - fromEndpoints:
        - matchLabels:
            role: gateway
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-api-to-db
  namespace: tenant-acme-corp
spec:
  endpointSelector:
    matchLabels:
      deployment: database
  ingress:
    - fromEndpoints:
        - matchLabels:
            deployment: api-backend
"#;

/// The pods the policies speak of, with the seed's names and images
/// (`create acme-corp web-frontend nginx:alpine`, `api-backend
/// node:18-alpine`, `database postgres:14`) and their usual ports, plus a
/// gateway pod labelled `role: gateway`; the database in namespace `db_ns`.
fn seed_workloads(db_ns: &str) -> String {
    let deployment = |ns: &str, name: &str, image: &str, port: u16| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  template:\n    metadata: {{labels: {{deployment: {name}}}}}\n    spec: {{containers: [{{name: c, image: \"{image}\", ports: [{{containerPort: {port}}}]}}]}}\n---\n"
        )
    };
    let acme = "tenant-acme-corp";
    [
        deployment(acme, "web-frontend", "nginx:alpine", 80),
        deployment(acme, "api-backend", "node:18-alpine", 3000),
        deployment(db_ns, "database", "postgres:14", 5432),
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: gateway, namespace: {acme}, labels: {{role: gateway}}}}\nspec: {{containers: [{{name: c, image: envoy, ports: [{{containerPort: 80}}]}}]}}\n"),
    ]
    .concat()
}

const WEB: &str = "tenant-acme-corp/web-frontend";
const API: &str = "tenant-acme-corp/api-backend";
const DB: &str = "tenant-acme-corp/database";
const GATEWAY: &str = "tenant-acme-corp/gateway";

/// One more hand-written policy: web-frontend may reach the database on
/// 5432/TCP (and on nothing else).
const EXTRA: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-web-to-db
  namespace: tenant-acme-corp
spec:
  endpointSelector:
    matchLabels:
      deployment: database
  ingress:
    - fromEndpoints:
        - matchLabels:
            deployment: web-frontend
      toPorts:
        - ports:
            - port: "5432"
              protocol: TCP
"#;

/// What the hand-written policies describe, read with Cilium's default
/// enforcement mode: "If any rule selects an Endpoint and the rule has an
/// ingress section, the endpoint goes into default deny at ingress" (docs
/// "Policy Enforcement Modes", docs.cilium.io/en/stable/security/policy/intro/).
/// The `selected` workloads accept only what a rule allows — not even
/// their own other replica, nor the world — while the others, selected by
/// nothing, stay open both ways. `opened` lists the (from, to) flows the
/// rules allow.
fn described(selected: &[&str], opened: &[(&str, &str)], from: &str, to: &str) -> bool {
    !selected.contains(&to) || opened.contains(&(from, to))
}

/// Runs `lab verify --manifests dir` with packets and checks every cell
/// against [`described`]: the objects' verdict, and what the packets did.
fn check_on_packets(
    env: &Env,
    dir: &std::path::Path,
    selected: &[&str],
    opened: &[(&str, &str)],
) -> Value {
    let dir = dir.to_str().unwrap();
    let run = env.run(&["-o", "json", "lab", "verify", "--manifests", dir]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["packets"], true);
    let cells = out["cells"].as_array().unwrap();
    // 4 workloads and the world to 4 workloads' one port, 4 to the world.
    assert_eq!(cells.len(), 5 * 4 + 4);
    for c in cells {
        let (from, to) = (c["from"].as_str().unwrap(), c["to"].as_str().unwrap());
        let want = described(selected, opened, from, to);
        assert_eq!(c["verdict"]["allowed"], want, "objects: {c}");
        assert_eq!(c["observed"], want, "packets: {c}");
        assert_eq!(c["ok"], true, "{c}");
    }
    out
}

/// A directory with the seed's pods (the database in `db_ns`) and policies.
fn seed_dir(env: &Env, db_ns: &str) -> std::path::PathBuf {
    let dir = env.dir.path().join(format!("m-{db_ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("workloads.yaml"), seed_workloads(db_ns)).unwrap();
    std::fs::write(dir.join("policies.yaml"), SEED_POLICIES).unwrap();
    dir
}

/// `ip netns list`.
fn netns_list() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn seed_policies_on_packets_give_the_reachability_they_describe() {
    if !can_run() {
        return;
    }
    let env = Env::new();
    let dir = seed_dir(&env, "tenant-acme-corp");
    let out = check_on_packets(&env, &dir, &[WEB, DB], &[(GATEWAY, WEB), (API, DB)]);
    // The deciding rule is named beside the packets.
    let gw = out["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from"] == GATEWAY && c["to"] == WEB)
        .unwrap();
    assert_eq!(
        gw["verdict"]["ingress"],
        "allow by CiliumNetworkPolicy tenant-acme-corp/allow-gateway spec.ingress[0]"
    );
    assert!(
        gw["detail"]
            .as_str()
            .unwrap()
            .contains("web-frontend-0 answered"),
        "{gw}"
    );
    // The table names each cell's packets beside the objects; the lab ran
    // in a directory of its own under TMPDIR, and both are gone afterwards.
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let run = env
        .cmd()
        .env("TMPDIR", &tmp)
        .args(["lab", "verify", "--manifests", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let table = String::from_utf8_lossy(&run.stdout);
    // `down` lists the namespaces it removed (`pl-<id>-internet`, ...).
    let prefix = stderr
        .lines()
        .find_map(|l| l.trim().strip_suffix("internet"))
        .unwrap_or_else(|| panic!("no namespace named in {stderr}"));
    assert!(prefix.starts_with("pl-"), "{prefix}");
    assert!(!netns_list().contains(prefix), "{}", netns_list());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    let row = table
        .lines()
        .find(|l| l.starts_with(API) && l.contains(&format!(" {DB} ")))
        .unwrap();
    assert_eq!(
        row.split_whitespace().take(6).collect::<Vec<_>>(),
        [API, DB, "5432/tcp", "allowed", "allowed", "ok"],
        "{table}"
    );
    assert_eq!(
        table.lines().last(),
        Some("packets agree with the objects in all 24 probed cells (0 not probed)")
    );
}

#[test]
fn an_extra_hand_written_policy_opens_exactly_its_flow() {
    if !can_run() {
        return;
    }
    let env = Env::new();
    let dir = seed_dir(&env, "tenant-acme-corp");
    std::fs::write(dir.join("extra.yaml"), EXTRA).unwrap();
    let opened = [(GATEWAY, WEB), (API, DB), (WEB, DB)];
    check_on_packets(&env, &dir, &[WEB, DB], &opened);
}

/// On the seed's own layout the database lives in tenant big-corp
/// (`create big-corp database postgres:14 1`), but `allow-api-to-db` is a
/// CiliumNetworkPolicy in `tenant-acme-corp`, and a CiliumNetworkPolicy's
/// `endpointSelector` selects endpoints of the policy's own namespace only
/// (Cilium docs "Using Kubernetes Constructs In Policy", Namespaces: "All
/// Kubernetes objects including NetworkPolicy and CiliumNetworkPolicy
/// belong to a particular namespace"; cilium/cilium#14580: a selector
/// selects "all endpoints in the CNP's namespace"). So it selects nothing:
/// the database stays open to every pod and the world, and only
/// web-frontend is locked down.
#[test]
fn on_the_seeds_own_layout_allow_api_to_db_selects_nothing() {
    if !can_run() {
        return;
    }
    let env = Env::new();
    let dir = seed_dir(&env, "tenant-big-corp");
    let out = check_on_packets(&env, &dir, &[WEB], &[(GATEWAY, WEB)]);
    let db = out["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from"] == "world" && c["to"] == "tenant-big-corp/database")
        .unwrap();
    assert_eq!(db["verdict"]["ingress"], "no-policy", "{db}");
}

/// A DNS server with 53/UDP and 53/TCP, a client and another pod; the
/// policy lets the client reach the server's port 53 with `protocol`
/// (`""`: omitted).
fn dns_manifests(protocol: &str) -> String {
    let proto = if protocol.is_empty() {
        String::new()
    } else {
        format!("\n              protocol: {protocol}")
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: dns, namespace: n}}\nspec:\n  template:\n    metadata: {{labels: {{app: dns}}}}\n    spec: {{containers: [{{name: c, image: i, ports: [{{containerPort: 53, protocol: UDP}}, {{containerPort: 53, protocol: TCP}}]}}]}}\n\
---\napiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: n, labels: {{app: client}}}}\nspec: {{containers: [{{name: c, image: i}}]}}\n\
---\napiVersion: v1\nkind: Pod\nmetadata: {{name: other, namespace: n}}\nspec: {{containers: [{{name: c, image: i}}]}}\n\
---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: dns, namespace: n}}\nspec:\n  endpointSelector:\n    matchLabels: {{app: dns}}\n  ingress:\n    - fromEndpoints:\n        - matchLabels: {{app: client}}\n      toPorts:\n        - ports:\n            - port: \"53\"{proto}\n"
    )
}

/// UDP ports are measured with datagrams. A rule naming `protocol: UDP`
/// opens 53/UDP and leaves 53/TCP closed — so a truncated DNS answer's
/// retry over TCP would be dropped — while a port without a protocol
/// covers both ("If omitted or empty, any protocol matches", Cilium docs
/// "Layer 4 Policies", `PortProtocol`).
#[test]
fn udp_ports_are_probed_and_a_udp_only_rule_leaves_tcp_closed() {
    if !can_run() {
        return;
    }
    let env = Env::new();
    for (protocol, tcp_open) in [("UDP", false), ("", true)] {
        let file = env.dir.path().join(format!("dns-{protocol}.yaml"));
        std::fs::write(&file, dns_manifests(protocol)).unwrap();
        let run = env.run(&[
            "-o",
            "json",
            "lab",
            "verify",
            "--manifests",
            file.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        let out: Value = serde_json::from_str(&run.stdout).unwrap();
        let cell = |from: &str, proto: &str| {
            out["cells"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["from"] == from && c["to"] == "n/dns" && c["protocol"] == proto)
                .unwrap_or_else(|| panic!("no cell {from} -> n/dns {proto}"))
                .clone()
        };
        for (from, proto, want) in [
            ("n/client", "udp", true),
            ("n/client", "tcp", tcp_open),
            ("n/other", "udp", false),
            ("n/other", "tcp", false),
            ("world", "udp", false),
        ] {
            let c = cell(from, proto);
            assert_eq!(c["verdict"]["allowed"], want, "{protocol:?}: {c}");
            assert_eq!(c["observed"], want, "{protocol:?}: {c}");
            assert_eq!(c["ok"], true, "{c}");
        }
    }
}

/// Without what a lab needs (here: no `ip` or `nft` on PATH), packets are
/// refused with the reason and the way to the evaluator alone.
#[test]
fn packets_without_a_lab_point_to_objects_only() {
    let env = Env::new();
    let file = env.dir.path().join("m.yaml");
    std::fs::write(&file, format!("{WORKLOADS}---\n{POLICIES}")).unwrap();
    let out = env
        .cmd()
        .env("PATH", env.dir.path())
        .args(["lab", "verify", "--manifests", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("`--objects-only` evaluates"), "{stderr}");
    assert!(stderr.contains("the lab needs"), "{stderr}");
}
