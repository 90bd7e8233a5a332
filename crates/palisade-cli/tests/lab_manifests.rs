//! `palisade lab verify --manifests`: the evaluator's reachability matrix
//! for hand-written manifests, through the real binary (no lab, no root).

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
    let out = env.json(&["lab", "verify", "--manifests", dir.to_str().unwrap()]);
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
        .run(&["lab", "verify", "--manifests", dir.to_str().unwrap()])
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
    let run = env.run(&["lab", "verify", "--manifests", file.to_str().unwrap()]);
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
    env.run(&["lab", "verify", "--manifests", empty.to_str().unwrap()])
        .fails_with("no workloads");
    let broken = env.dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: [unclosed").unwrap();
    env.run(&["lab", "verify", "--manifests", broken.to_str().unwrap()])
        .fails_with("is not valid YAML");
    env.run(&["lab", "verify", "--manifests", "/nonexistent/m.yaml"])
        .fails_with("cannot read");
}
