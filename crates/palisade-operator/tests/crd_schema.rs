//! The CRDs' validation, checked by tools we did not write:
//!
//! - the CRD objects themselves against the `apiextensions.k8s.io/v1`
//!   schema of Kubernetes 1.31 to 1.34 (`kubernetes-validate --strict`);
//! - example objects against each CRD's `openAPIV3Schema` with the PyPI
//!   `jsonschema` package (good ones pass; negative replicas, a bad name,
//!   a bad quantity are refused);
//! - every CEL rule (`x-kubernetes-validations`) evaluated by `cel-python`
//!   on a good and a bad object (and, for transition rules, a good and a
//!   bad update);
//! - `x-kubernetes-list-type` as the API server applies it
//!   (<https://kubernetes.io/docs/reference/using-api/server-side-apply/#merge-strategy>:
//!   a `set` holds each value once, a `map` each key once), so a duplicate
//!   port or env name is refused.
//!
//! The validators come from the venv `scripts/test.sh` makes
//! (`PALISADE_VENV`); without it each test prints `SKIPPED` (and fails
//! under `CI=true`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_core::Pool;
use palisade_operator::claim::claim_name;
use palisade_operator::crd::crds;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Kubernetes releases whose `apiextensions.k8s.io/v1` schema the CRDs
/// must satisfy (the ones `palisade-kube`'s schema tests pin).
const KUBERNETES: [&str; 4] = ["1.31", "1.32", "1.33", "1.34"];

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
    assert!(!in_ci(), "CI=true but a tool is missing: {why}");
}

fn venv_bin(name: &str) -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("PALISADE_VENV")
        .map(|v| PathBuf::from(v).join("bin").join(name))
        .into_iter()
        .chain([manifest.join("../../target/venv-kube/bin").join(name)])
        .find(|p| p.is_file())
}

/// A Python with `jsonschema` and `celpy`.
fn python() -> Option<PathBuf> {
    let python = venv_bin("python3")?;
    Command::new(&python)
        .args(["-c", "import celpy, jsonschema"])
        .status()
        .is_ok_and(|s| s.success())
        .then_some(python)
}

/// Validates each case's `object` against the CRD schema as the API server
/// does on create (or on update, when the case has `old`): JSON Schema
/// (draft 4, the dialect OpenAPI v3 schemas build on), list types, then
/// every CEL rule at its place in the schema; transition rules (those
/// naming `oldSelf`) only on update. Prints one JSON list of errors per
/// case. `replace` is Kubernetes' CEL strings library function (cel-go
/// `ext.Strings`, listed in
/// <https://kubernetes.io/docs/reference/using-api/cel/#kubernetes-string-library>),
/// which cel-python does not ship.
const VALIDATE: &str = r#"
import json, sys, jsonschema, celpy
from celpy import celtypes
schema, cases = json.load(sys.stdin)
env = celpy.Environment()
functions = {"replace": lambda s, old, new: celtypes.StringType(str(s).replace(str(old), str(new)))}

def cel(rule, value, old):
    act = {"self": celpy.json_to_cel(value)}
    if old is not None:
        act["oldSelf"] = celpy.json_to_cel(old)
    return bool(env.program(env.compile(rule), functions=functions).evaluate(act))

def walk(node, value, old, path, errors):
    for r in node.get("x-kubernetes-validations", []):
        if "oldSelf" in r["rule"] and old is None:
            continue
        if not cel(r["rule"], value, old):
            errors.append("%s: %s" % (path or "<root>", r.get("message", r["rule"])))
    if isinstance(value, list):
        kind = node.get("x-kubernetes-list-type")
        if kind == "set":
            keys = [json.dumps(v, sort_keys=True) for v in value]
        elif kind == "map":
            keys = [json.dumps([v.get(k) for k in node["x-kubernetes-list-map-keys"]]) for v in value]
        else:
            keys = []
        if len(set(keys)) != len(keys):
            errors.append("%s: Duplicate value" % path)
        for i, v in enumerate(value):
            walk(node.get("items", {}), v, None, "%s[%d]" % (path, i), errors)
    elif isinstance(value, dict):
        for k, v in value.items():
            sub = node.get("properties", {}).get(k)
            if sub is not None:
                prev = old.get(k) if isinstance(old, dict) else None
                walk(sub, v, prev, "%s.%s" % (path, k), errors)

checker = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
for case in cases:
    errors = ["%s: %s" % (".".join(map(str, e.absolute_path)) or "<root>", e.message)
              for e in checker.iter_errors(case["object"])]
    if not errors:
        walk(schema, case["object"], case.get("old"), "", errors)
    print(json.dumps(errors))
"#;

fn schema_of(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    let v = serde_json::to_value(&crd.spec.versions[0]).unwrap();
    v["schema"]["openAPIV3Schema"].clone()
}

/// The errors for each case (`{"object": ..., "old": ...}`), or `None`
/// when the validators are missing.
fn validate(kind: &str, cases: &[Value]) -> Option<Vec<Vec<String>>> {
    let Some(python) = python() else {
        skip("no Python with jsonschema and cel-python (run scripts/test.sh or set PALISADE_VENV)");
        return None;
    };
    let mut child = Command::new(python)
        .args(["-c", VALIDATE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&json!([schema_of(kind), cases])).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "validator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Vec<String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), cases.len());
    Some(lines)
}

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "palisade.io/v1alpha1", "kind": kind,
           "metadata": {"name": name}, "spec": spec})
}

fn create(obj: Value) -> Value {
    json!({"object": obj})
}

fn update(old: Value, new: Value) -> Value {
    json!({"object": new, "old": old})
}

/// Asserts the first `good` cases pass and every later one is refused
/// with a message containing its `expect` text.
fn check(kind: &str, good: Vec<Value>, bad: Vec<(Value, &str)>) {
    let n = good.len();
    let mut cases = good;
    cases.extend(bad.iter().map(|(c, _)| c.clone()));
    let Some(results) = validate(kind, &cases) else {
        return;
    };
    for (i, errors) in results[..n].iter().enumerate() {
        assert!(
            errors.is_empty(),
            "{kind} good case {i} refused: {errors:?}"
        );
    }
    for ((case, expect), errors) in bad.iter().zip(&results[n..]) {
        assert!(
            errors.iter().any(|e| e.contains(expect)),
            "{kind} {case} should be refused with {expect:?}, got {errors:?}"
        );
    }
}

fn workload(name: &str, spec: Value) -> Value {
    let mut o = object("TenantDeployment", name, spec);
    o["metadata"]["namespace"] = json!("tenant-acme");
    o
}

#[test]
fn tenant_deployments_are_checked_at_the_api() {
    let full = json!({
        "image": "postgres:16", "replicas": 3, "ports": [5432, 8080],
        "env": [{"name": "POSTGRES_DB", "value": "app"},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db.creds", "key": "password"}}}],
        "resources": {"cpuLimit": "500m", "memoryLimit": "1Gi", "cpuRequest": "0.1"},
        "scratch": [{"path": "/var/cache", "sizeLimit": "64Mi"}],
        "allowFrom": [{"deployment": "api", "port": 5432}, {"deployment": "api", "port": 8080},
                      {"deployment": "worker"}],
        "gateway": "dedicated", "security": "baseline-read-only"
    });
    let spec = |patch: Value| {
        let mut s = full.clone();
        json_patch::merge(&mut s, &patch);
        s
    };
    check(
        "TenantDeployment",
        vec![
            create(workload("db", full.clone())),
            create(workload("web", json!({"image": "nginx:alpine"}))),
            create(workload(
                "a",
                json!({"image": "nginx", "replicas": 0, "ports": []}),
            )),
        ],
        vec![
            (
                create(workload("db", spec(json!({"replicas": -1})))),
                "replicas",
            ),
            (
                create(workload("db", spec(json!({"replicas": 10001})))),
                "replicas",
            ),
            (create(workload("db", spec(json!({"image": ""})))), "image"),
            (
                create(workload("db", spec(json!({"ports": [80, 80]})))),
                "Duplicate value",
            ),
            (create(workload("db", spec(json!({"ports": [0]})))), "ports"),
            (
                create(workload("db", spec(json!({"ports": [65536]})))),
                "ports",
            ),
            (
                create(workload(
                    "db",
                    spec(json!({"env": [{"name": "A"}, {"name": "A", "value": "2"}]})),
                )),
                "Duplicate value",
            ),
            (
                create(workload("db", spec(json!({"env": [{"name": "1A"}]})))),
                "env",
            ),
            (
                create(workload(
                    "db",
                    spec(json!({"allowFrom": [{"deployment": "api"}, {"deployment": "api"}]})),
                )),
                "Duplicate value",
            ),
            (
                create(workload(
                    "db",
                    spec(json!({"allowFrom": [{"deployment": "Api_1"}]})),
                )),
                "allowFrom",
            ),
            (
                create(workload(
                    "db",
                    spec(json!({"resources": {"memoryLimit": "lots"}})),
                )),
                "memoryLimit",
            ),
            (
                create(workload("db", spec(json!({"scratch": [{"path": "tmp"}]})))),
                "path",
            ),
            (
                create(workload("db", spec(json!({"gateway": "public"})))),
                "gateway",
            ),
            // Object names may be subdomains; a workload's must be a label.
            (create(workload("db.v2", full.clone())), "DNS-1123 label"),
            (
                create(workload(&"a".repeat(64), full.clone())),
                "DNS-1123 label",
            ),
        ],
    );
}

#[test]
fn tenants_are_checked_at_the_api() {
    let full = json!({
        "quota": {"cpu": "4", "memory": "8Gi", "pods": 20}, "nodePool": "gpu",
        "egress": {"mode": "proxy", "ip": "203.0.113.10",
                   "allowedDomains": ["api.stripe.com"], "deniedDomains": ["evil.example"]},
        "labels": {"team": "payments"}, "proxyPort": 20001
    });
    let spec = |patch: Value| {
        let mut s = full.clone();
        json_patch::merge(&mut s, &patch);
        s
    };
    check(
        "Tenant",
        vec![
            create(object("Tenant", "acme", full.clone())),
            create(object("Tenant", "b", json!({}))),
            create(object("Tenant", &"a".repeat(56), json!({}))),
        ],
        vec![
            // Its namespace `tenant-<name>` would exceed 63 characters.
            (
                create(object("Tenant", &"a".repeat(57), json!({}))),
                "at most 56",
            ),
            (
                create(object("Tenant", "Acme", json!({}))),
                "DNS-1123 label",
            ),
            (
                create(object(
                    "Tenant",
                    "acme",
                    spec(json!({"quota": {"pods": -1}})),
                )),
                "pods",
            ),
            (
                create(object(
                    "Tenant",
                    "acme",
                    spec(json!({"quota": {"cpu": "four"}})),
                )),
                "cpu",
            ),
            (
                create(object(
                    "Tenant",
                    "acme",
                    spec(json!({"nodePool": "GPU pool"})),
                )),
                "nodePool",
            ),
            (
                create(object("Tenant", "acme", spec(json!({"proxyPort": 8080})))),
                "proxyPort",
            ),
            (
                create(object(
                    "Tenant",
                    "acme",
                    spec(json!({"egress": {"allowedDomains": ["a.com", "a.com"]}})),
                )),
                "Duplicate value",
            ),
            (
                create(object(
                    "Tenant",
                    "acme",
                    spec(json!({"egress": {"mode": "nat"}})),
                )),
                "mode",
            ),
        ],
    );
}

fn claim(subnet: &str, name: &str) -> Value {
    object(
        "SubnetClaim",
        name,
        json!({"subnet": subnet, "tenant": "acme", "namespace": "tenant-acme",
               "deployment": "web", "workloadUid": "0b5e-11"}),
    )
}

#[test]
fn a_claims_name_is_its_subnet_and_its_holder_never_changes() {
    // Names made by the operator's own `claim_name`, including the
    // leading-`::` case, pass the CEL rule.
    let pool = |cidr: &str| {
        let cidr: ipnet::Ipv6Net = cidr.parse().unwrap();
        Pool::new(cidr, "96".parse().unwrap(), Duration::ZERO).unwrap()
    };
    let mut good = Vec::new();
    for (p, i) in [
        ("fd00:1234:5678::/48", 0u128),
        ("fd00:1234:5678::/48", 65537),
        ("::/48", 0),
        ("::/48", 1 << 20),
    ] {
        let s = pool(p).subnet(i);
        good.push(create(claim(&s.to_string(), &claim_name(s))));
    }
    let c = claim("fd00:1234:5678::1:0:0/96", "fd00-1234-5678--1-0-0-96");
    let changed = |field: &str, value: &str| {
        let mut n = c.clone();
        n["spec"][field] = json!(value);
        update(c.clone(), n)
    };
    let mut released = c.clone();
    released["spec"]["releasedAt"] = json!("2026-11-30T22:00:00Z");
    good.push(update(c.clone(), released.clone()));
    good.push(update(released.clone(), released.clone()));
    let mut re_released = released.clone();
    re_released["spec"]["releasedAt"] = json!("2026-12-01T00:00:00Z");
    check(
        "SubnetClaim",
        good,
        vec![
            (
                create(claim("fd00:1234:5678::1:0:0/96", "fd00-1234-5678---96")),
                "claim's name is its subnet",
            ),
            (
                create(claim("fd00:1234:5678::/96", "mine")),
                "claim's name is its subnet",
            ),
            (
                create(claim("::/64", "---64")),
                "claim's name is its subnet",
            ),
            (create(claim("FD00::/96", "fd00---96")), "subnet"),
            (
                changed("subnet", "fd00:1234:5678::2:0:0/96"),
                "subnet is immutable",
            ),
            (changed("tenant", "other"), "tenant is immutable"),
            (
                changed("namespace", "tenant-other"),
                "namespace is immutable",
            ),
            (changed("deployment", "api"), "deployment is immutable"),
            (
                changed("workloadUid", "0b5e-12"),
                "workloadUid is immutable",
            ),
            (update(released, re_released), "releasedAt is immutable"),
        ],
    );
}

#[test]
fn the_platform_is_one_object_named_palisade() {
    check(
        "Platform",
        vec![
            create(object(
                "Platform",
                "palisade",
                json!({"centralGateway": true}),
            )),
            create(object("Platform", "palisade", json!({}))),
        ],
        vec![
            // A second settings object would leave the central gateway
            // ambiguous.
            (
                create(object("Platform", "other", json!({"centralGateway": true}))),
                "one object, named 'palisade'",
            ),
            (
                create(object(
                    "Platform",
                    "palisade",
                    json!({"centralGateway": "yes"}),
                )),
                "centralGateway",
            ),
        ],
    );
}

#[test]
fn list_types_are_ones_the_api_server_accepts() {
    // https://kubernetes.io/docs/reference/using-api/server-side-apply/#merge-strategy
    // and the structural-schema rules: a `map` list's keys are required
    // fields of its items; a `set` holds scalars or atomic objects.
    fn walk(node: &Value, path: &str, found: &mut Vec<String>) {
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let required = node["items"]["required"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for key in node["x-kubernetes-list-map-keys"].as_array().unwrap() {
                    assert!(
                        required.contains(key),
                        "{path}: map key {key} is not required"
                    );
                }
                found.push(format!("{path} map"));
            }
            Some("set") => {
                let items = &node["items"];
                let scalar = items["type"] != "object" && items["type"] != "array";
                assert!(
                    scalar || items["x-kubernetes-map-type"] == "atomic",
                    "{path}: a set of non-atomic objects"
                );
                found.push(format!("{path} set"));
            }
            _ => {}
        }
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), found);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), found);
        }
    }
    let mut found = Vec::new();
    for kind in ["Tenant", "TenantDeployment", "SubnetClaim"] {
        walk(&schema_of(kind), kind, &mut found);
    }
    for expected in [
        "TenantDeployment.spec.ports set",
        "TenantDeployment.spec.env map",
        "TenantDeployment.spec.allowFrom set",
        "TenantDeployment.status.conditions map",
        "Tenant.status.conditions map",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected} missing in {found:?}"
        );
    }
}

#[test]
fn crds_carry_categories_and_an_age_column() {
    for crd in crds() {
        let kind = &crd.spec.names.kind;
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["palisade".to_owned()]),
            "{kind}"
        );
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap();
        assert!(
            columns
                .iter()
                .any(|c| c.json_path == ".metadata.creationTimestamp" && c.type_ == "date"),
            "{kind}: no creation-time column"
        );
    }
}

#[test]
fn crds_validate_against_the_apiextensions_schema_of_each_pinned_release() {
    let Some(validator) = venv_bin("kubernetes-validate") else {
        return skip("kubernetes-validate not found (run scripts/test.sh or set PALISADE_VENV)");
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, yaml) in palisade_operator::crd::crds_yaml().unwrap() {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        files.push(path);
    }
    for v in KUBERNETES {
        let out = Command::new(&validator)
            .args(["-k", v, "--strict"])
            .args(&files)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.matches("INFO").count() >= files.len(),
            "Kubernetes {v}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
