//! The rendered `ValidatingAdmissionPolicy`, evaluated by a CEL
//! implementation we did not write (the PyPI package `cel-python`, which
//! follows the CEL language definition the API server's cel-go
//! implements), on the objects a tenant or a controller would send.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::skip;

use palisade_kube::render::{RESERVED_KEYS_POLICY, render};
use palisade_kube::{RenderOptions, fixtures};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Evaluates the policy's variables in order, then its validations, for
/// each case; prints one line per case: `allow` or `deny`.
const EVALUATE: &str = r#"
import json, sys, celpy
policy, cases = json.load(sys.stdin)
env = celpy.Environment()
spec = policy["spec"]
for case in cases:
    act = {"object": celpy.json_to_cel(case["object"]),
           "request": celpy.json_to_cel(case["request"])}
    variables = {}
    for v in spec["variables"]:
        act["variables"] = celpy.celtypes.MapType(
            {celpy.celtypes.StringType(k): val for k, val in variables.items()})
        variables[v["name"]] = env.program(env.compile(v["expression"])).evaluate(act)
    act["variables"] = celpy.celtypes.MapType(
        {celpy.celtypes.StringType(k): val for k, val in variables.items()})
    ok = all(bool(env.program(env.compile(r["expression"])).evaluate(act))
             for r in spec["validations"])
    print("allow" if ok else "deny")
"#;

/// A Python with `celpy`: the venv `scripts/test.sh` makes.
fn python_with_cel() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = std::env::var_os("PALISADE_VENV")
        .map(|v| PathBuf::from(v).join("bin/python3"))
        .into_iter()
        .chain([manifest.join("../../target/venv-kube/bin/python3")]);
    for python in candidates.filter(|p| p.is_file()) {
        let ok = Command::new(&python)
            .args(["-c", "import celpy"])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(python);
        }
    }
    None
}

fn policy() -> Value {
    let rendered = render(&fixtures::seed(), &RenderOptions::default()).unwrap();
    rendered
        .objects()
        .find(|o| o.kind == "ValidatingAdmissionPolicy" && o.name == RESERVED_KEYS_POLICY)
        .map(|o| o.body.clone())
        .expect("the policy is rendered")
}

fn user(name: &str) -> Value {
    json!({ "userInfo": { "username": name, "groups": ["system:authenticated"] } })
}

fn pod(labels: Value, annotations: Value) -> Value {
    json!({ "kind": "Pod", "metadata": { "name": "p", "labels": labels, "annotations": annotations } })
}

fn deployment(template_meta: Value) -> Value {
    json!({ "kind": "Deployment", "metadata": { "name": "d" },
            "spec": { "template": { "metadata": template_meta } } })
}

#[test]
fn tenants_cannot_set_the_keys_policies_and_pools_are_chosen_by() {
    let Some(python) = python_with_cel() else {
        return skip("no Python with cel-python (run scripts/test.sh or set PALISADE_VENV)");
    };
    let alice = user("alice");
    let rs_controller = user("system:serviceaccount:kube-system:replicaset-controller");
    let operator = user("system:serviceaccount:palisade-system:palisade-operator");
    let forged = json!({ "palisade.io/deployment": "database" });
    let cases = [
        // (what, object, request, expected)
        (
            "a tenant's pod passing for a deployment",
            pod(forged.clone(), json!({})),
            &alice,
            "deny",
        ),
        (
            "a tenant's pod taking another deployment's pool",
            pod(
                json!({ "app": "x" }),
                json!({ "ipam.cilium.io/ipv6-pool": "acme-corp.database" }),
            ),
            &alice,
            "deny",
        ),
        (
            "a tenant's deployment template",
            deployment(json!({ "labels": forged })),
            &alice,
            "deny",
        ),
        (
            "a tenant's cronjob template",
            json!({ "kind": "CronJob", "spec": { "jobTemplate": { "spec": { "template": {
                "metadata": { "labels": { "palisade.io/app": "egress-check" } } } } } } }),
            &alice,
            "deny",
        ),
        (
            "a tenant's ordinary pod",
            pod(json!({ "app": "x" }), json!({ "note": "y" })),
            &alice,
            "allow",
        ),
        (
            "a pod without labels or annotations",
            json!({ "kind": "Pod", "metadata": { "name": "p" } }),
            &alice,
            "allow",
        ),
        (
            "the ReplicaSet controller copying Palisade's template",
            pod(forged.clone(), json!({})),
            &rs_controller,
            "allow",
        ),
        (
            "the operator writing Palisade's Deployment",
            deployment(json!({ "labels": forged })),
            &operator,
            "allow",
        ),
    ];
    let input = json!([
        policy(),
        cases
            .iter()
            .map(|(_, o, r, _)| json!({ "object": o, "request": r }))
            .collect::<Vec<_>>()
    ]);
    let mut child = Command::new(python)
        .args(["-c", EVALUATE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(verdicts.len(), cases.len());
    for ((what, _, _, want), got) in cases.iter().zip(&verdicts) {
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn the_policy_is_bound_to_deny_in_tenant_namespaces_only() {
    let rendered = render(&fixtures::seed(), &RenderOptions::default()).unwrap();
    let binding = rendered
        .objects()
        .find(|o| o.kind == "ValidatingAdmissionPolicyBinding")
        .expect("binding");
    assert_eq!(binding.body["spec"]["policyName"], RESERVED_KEYS_POLICY);
    assert_eq!(binding.body["spec"]["validationActions"], json!(["Deny"]));
    let p = policy();
    let ns = &p["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(ns["key"], "palisade.io/tenant");
    assert_eq!(ns["operator"], "Exists");
    assert_eq!(p["spec"]["failurePolicy"], "Fail");
}
