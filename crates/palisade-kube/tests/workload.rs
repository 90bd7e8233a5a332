//! The seeds' own images, as rendered with what each needs to start:
//! `postgres:14` refuses to initialise without `POSTGRES_PASSWORD`
//! (docker-library/postgres: "This environment variable is required ... It
//! must not be empty or undefined"), `node:18-alpine` runs `node` (a REPL
//! that exits without a TTY) unless given a command, and nginx writes its
//! cache and pid file, so under a read-only root it needs writable
//! `/var/cache/nginx` and `/var/run` (the layout commonly used with the
//! official image, e.g. emptyDirs at those two paths).
//!
//! Checked against the Kubernetes OpenAPI schemas of every supported
//! release with `kubernetes-validate --strict` (a tool we did not write),
//! and against the Pod Security Standards the profiles are named after
//! (kubernetes.io/docs/concepts/security/pod-security-standards: restricted
//! allows adding only NET_BIND_SERVICE and requires runAsNonRoot; baseline
//! allows CHOWN, DAC_OVERRIDE, FOWNER, NET_BIND_SERVICE, SETGID, SETUID
//! among its default set). Without the validator the schema check prints
//! `SKIPPED: <why>`; with `CI=true` it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{find_tool, skip};

use palisade_core::model::{EnvVar, ScratchVolume};
use palisade_core::{SecurityProfile, Snapshot, WorkloadSpec};
use palisade_kube::{RenderOptions, fixtures, render};
use serde_json::{Value, json};
use std::process::Command;

const KUBERNETES: [&str; 4] = ["1.31", "1.32", "1.33", "1.34"];

fn spec(
    env: &[&str],
    secret_env: &[&str],
    command: &[&str],
    scratch: &[&str],
    security: Option<SecurityProfile>,
) -> WorkloadSpec {
    let strings = |v: &[&str]| v.iter().map(ToString::to_string).collect();
    WorkloadSpec::new(
        env.iter()
            .map(|e| EnvVar::parse_literal(e).unwrap())
            .chain(
                secret_env
                    .iter()
                    .map(|e| EnvVar::parse_secret_ref(e).unwrap()),
            )
            .collect(),
        strings(command),
        vec![],
        scratch
            .iter()
            .map(|s| s.parse::<ScratchVolume>().unwrap())
            .collect(),
        security,
    )
    .unwrap()
}

/// The seed with each image given what it needs; big-corp's database keeps
/// the platform default profile.
fn seed() -> Snapshot {
    let mut snap = fixtures::seed();
    for d in &mut snap.deployments {
        d.workload = match (d.tenant.as_str(), d.name.as_str()) {
            ("acme-corp", "database") | ("big-corp", "database") => spec(
                &["PGDATA=/var/lib/postgresql/data/pgdata"],
                &["POSTGRES_PASSWORD=database-auth:password"],
                &[],
                &[],
                (d.tenant.as_str() == "acme-corp").then_some(SecurityProfile::Baseline),
            ),
            ("acme-corp", "api-backend") => spec(
                &[],
                &[],
                &[
                    "node",
                    "-e",
                    "require('http').createServer((q, s) => s.end('ok')).listen(8080)",
                ],
                &[],
                Some(SecurityProfile::Restricted),
            ),
            ("acme-corp", "web-frontend") => spec(
                &[],
                &[],
                &[],
                &["/var/cache/nginx:64Mi", "/var/run"],
                Some(SecurityProfile::BaselineReadOnly),
            ),
            _ => WorkloadSpec::default(),
        };
    }
    snap
}

fn objects(options: &RenderOptions) -> Vec<Value> {
    render(&seed(), options)
        .unwrap()
        .objects()
        .map(|o| o.body.clone())
        .collect()
}

fn find<'a>(all: &'a [Value], kind: &str, ns: Option<&str>, name: &str) -> &'a Value {
    all.iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && ns.is_none_or(|ns| o["metadata"]["namespace"] == ns)
        })
        .unwrap_or_else(|| panic!("no {kind} {ns:?}/{name}"))
}

fn container<'a>(all: &'a [Value], ns: &str, name: &str) -> &'a Value {
    &find(all, "Deployment", Some(ns), name)["spec"]["template"]["spec"]["containers"][0]
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

#[test]
fn postgres_gets_its_password_from_a_secret_beside_the_proxy_settings() {
    let all = objects(&RenderOptions::default());
    let db = container(&all, "tenant-acme-corp", "database");
    assert_eq!(
        env(db, "POSTGRES_PASSWORD").unwrap(),
        &json!({"name": "POSTGRES_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "database-auth", "key": "password"}}})
    );
    assert_eq!(
        env(db, "PGDATA").unwrap()["value"],
        "/var/lib/postgresql/data/pgdata"
    );
    assert!(env(db, "HTTP_PROXY").is_some(), "proxy env kept: {db}");
    // Egress-gateway tenants get no proxy env, only their own.
    let big = container(&all, "tenant-big-corp", "database");
    assert!(env(big, "HTTP_PROXY").is_none());
    assert!(env(big, "POSTGRES_PASSWORD").is_some());
    // baseline: starts as root, keeps what postgres needs to drop to its user.
    let sc = &db["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], false);
    assert!(sc.get("runAsNonRoot").is_none());
    assert_eq!(
        sc["capabilities"]["add"],
        json!([
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "NET_BIND_SERVICE",
            "SETGID",
            "SETUID"
        ])
    );
}

#[test]
fn node_runs_its_command_as_a_restricted_non_root_user() {
    let all = objects(&RenderOptions::default());
    let api = container(&all, "tenant-acme-corp", "api-backend");
    assert_eq!(api["command"][0], "node");
    assert_eq!(api["command"][1], "-e");
    assert!(api.get("args").is_none());
    let sc = &api["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["runAsGroup"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(
        sc["capabilities"],
        json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})
    );
    let pod = &find(&all, "Deployment", Some("tenant-acme-corp"), "api-backend")["spec"]["template"]
        ["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
}

#[test]
fn nginx_writes_to_scratch_volumes_under_a_read_only_root() {
    let all = objects(&RenderOptions::default());
    let dep = find(&all, "Deployment", Some("tenant-acme-corp"), "web-frontend");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "scratch-0", "emptyDir": {"sizeLimit": "64Mi"}},
            {"name": "scratch-1", "emptyDir": {}},
        ])
    );
    let web = &pod["containers"][0];
    assert_eq!(
        web["volumeMounts"],
        json!([
            {"name": "scratch-0", "mountPath": "/var/cache/nginx"},
            {"name": "scratch-1", "mountPath": "/var/run"},
        ])
    );
    assert_eq!(web["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(web["securityContext"].get("runAsNonRoot").is_none());
}

#[test]
fn the_platform_settings_stay_the_default_and_the_namespace_admits_every_profile() {
    let options = RenderOptions {
        run_as_non_root: true,
        read_only_root_fs: true,
        ..RenderOptions::default()
    };
    let all = objects(&options);
    // No profile: the cluster-wide settings, as before (no fixed user).
    let big = container(&all, "tenant-big-corp", "database");
    assert_eq!(big["securityContext"]["runAsNonRoot"], true);
    assert_eq!(big["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(big["securityContext"].get("runAsUser").is_none());
    // A profile wins over them.
    let acme_db = container(&all, "tenant-acme-corp", "database");
    assert_eq!(acme_db["securityContext"]["readOnlyRootFilesystem"], false);
    assert!(acme_db["securityContext"].get("runAsNonRoot").is_none());
    // `restricted` enforcement would reject acme-corp's root-started pods.
    let level = |ns: &str| {
        find(&all, "Namespace", None, ns)["metadata"]["labels"]
            ["pod-security.kubernetes.io/enforce"]
            .clone()
    };
    assert_eq!(level("tenant-acme-corp"), "baseline");
    assert_eq!(level("tenant-big-corp"), "restricted");
}

// ------------------------------------------------------------ validator

#[test]
fn the_seed_deployments_validate_against_kubernetes_1_31_to_1_34() {
    let Some(validator) = find_tool("kubernetes-validate") else {
        return skip("kubernetes-validate not found (run scripts/test.sh or set PALISADE_VENV)");
    };
    let all = objects(&RenderOptions::default());
    let deployments: Vec<&Value> = all.iter().filter(|o| o["kind"] == "Deployment").collect();
    assert!(deployments.len() >= 4);
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..deployments.len())
        .map(|i| format!("d{i}.yaml"))
        .collect();
    for (d, name) in deployments.iter().zip(&names) {
        std::fs::write(dir.path().join(name), serde_json::to_string(d).unwrap()).unwrap();
    }
    for version in KUBERNETES {
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
