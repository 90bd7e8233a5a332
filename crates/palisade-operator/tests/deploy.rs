//! The committed deployment files: CRDs generated from the code, and the
//! Kustomize tree that must render and validate.
//!
//! Regenerate the CRDs with `PALISADE_UPDATE_CRDS=1 cargo test -p
//! palisade-operator --test deploy`. Validators that are not installed make
//! a test print `SKIPPED: <why>` and pass, except under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
    assert!(!in_ci(), "CI=true but a tool is missing: {why}");
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("PALISADE_VENV") {
        candidates.push(PathBuf::from(venv).join("bin").join(name));
    }
    candidates.push(root().join("target/venv-kube/bin").join(name));
    candidates.push(PathBuf::from("/work/venv-kube/bin").join(name));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|p| p.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file())
}

#[test]
fn committed_crds_match_the_code() {
    let dir = root().join("deploy/crds");
    let update = std::env::var_os("PALISADE_UPDATE_CRDS").is_some();
    for (name, yaml) in palisade_operator::crd::crds_yaml().unwrap() {
        let path = dir.join(&name);
        if update {
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == yaml,
            "deploy/crds/{name} differs from the code; regenerate with \
             PALISADE_UPDATE_CRDS=1 cargo test -p palisade-operator --test deploy"
        );
    }
}

#[test]
fn crds_are_structural_and_scoped_as_designed() {
    let crds = palisade_operator::crd::crds();
    let scope = |i: usize| crds[i].spec.scope.clone();
    assert_eq!(scope(0), "Cluster");
    assert_eq!(scope(1), "Namespaced");
    assert_eq!(scope(2), "Cluster");
    assert_eq!(scope(3), "Cluster");
    for crd in &crds {
        let v = &crd.spec.versions[0];
        assert!(v.served && v.storage);
        // The status subresource is what `patch_status` writes to.
        let has_status = v.subresources.as_ref().is_some_and(|s| s.status.is_some());
        assert_eq!(
            has_status,
            !matches!(crd.spec.names.kind.as_str(), "SubnetClaim" | "Platform"),
            "{}",
            crd.spec.names.kind
        );
        let schema = serde_json::to_value(&v.schema).unwrap();
        assert_eq!(schema["openAPIV3Schema"]["type"], "object");
    }
}

fn kustomize() -> Option<String> {
    let Some(kubectl) = find_tool("kubectl") else {
        skip("kubectl not found");
        return None;
    };
    let out = Command::new(kubectl)
        .args(["kustomize"])
        .arg(root().join("deploy/operator"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/operator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

#[test]
fn kustomize_renders_the_operator_with_two_replicas_pdb_and_rbac() {
    let Some(out) = kustomize() else { return };
    let objs = docs(&out);
    let kinds: Vec<String> = objs
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "CustomResourceDefinition/tenants.palisade.io",
        "CustomResourceDefinition/tenantdeployments.palisade.io",
        "CustomResourceDefinition/subnetclaims.palisade.io",
        "Deployment/palisade-operator",
        "PodDisruptionBudget/palisade-operator",
        "ServiceAccount/palisade-operator",
        "Service/palisade-operator-metrics",
        "ClusterRole/palisade-operator",
        "Role/palisade-operator-leader-election",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} missing from {kinds:?}"
        );
    }
    let dep = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(dep["metadata"]["namespace"], "palisade-system");
    // Least privilege: no wildcards, no secrets, no escalate/bind.
    let role = objs.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
    let text = role["rules"].to_string();
    for banned in ["\"*\"", "secrets", "escalate", "\"bind\"", "impersonate"] {
        assert!(
            !text.contains(banned),
            "ClusterRole grants {banned}: {text}"
        );
    }
}

#[test]
fn kustomize_output_validates_against_the_kubernetes_schemas() {
    let Some(out) = kustomize() else { return };
    let Some(validator) = find_tool("kubernetes-validate") else {
        return skip("kubernetes-validate not found (set PALISADE_VENV)");
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("operator.yaml");
    std::fs::write(&file, &out).unwrap();
    let res = Command::new(validator)
        .args(["-k", "1.33", "--strict"])
        .arg(&file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&res.stdout).into_owned() + &String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{text}");
    let n = docs(&out).len();
    assert_eq!(text.matches(" passed for resource ").count(), n, "{text}");
}

const BIN: &str = env!("CARGO_BIN_EXE_palisade-operator");

#[test]
fn the_binary_prints_the_committed_crds() {
    let out = Command::new(BIN).arg("crds").output().unwrap();
    assert!(out.status.success());
    let mut want = String::new();
    for (name, _) in palisade_operator::crd::crds_yaml().unwrap() {
        want.push_str(&std::fs::read_to_string(root().join("deploy/crds").join(name)).unwrap());
    }
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

#[test]
fn bad_settings_exit_64_with_one_line_before_connecting() {
    for (args, needle) in [
        (&["run", "--pool", "10.0.0.0/8"][..], "IPv4"),
        (
            &["run", "--pool", "fd00::/48", "--prefix-len", "200"][..],
            "200",
        ),
        (
            &["run", "--pool", "fd00::/48", "--policy", "calico"][..],
            "invalid --policy",
        ),
        (
            &["run", "--pool", "fd00::/48", "--gc-grace", "soon"][..],
            "invalid --gc-grace",
        ),
    ] {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("PALISADE_POOL")
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(needle),
            "{err}"
        );
    }
}
