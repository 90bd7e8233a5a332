//! The GitOps tree as Flux and git see it: one cluster applies exactly one
//! overlay, Flux objects only with a user-given repository, and a render of
//! unchanged state in a fresh clone changes no byte.
//!
//! kubectl (its built-in kustomize) and git are optional outside CI: a
//! missing one prints `SKIPPED: <why>`; with `CI=true` it fails.

// Test helpers outside #[test] fns panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::skip;

use palisade_kube::{GitSource, RenderOptions, fixtures, tree};
use serde_yaml_ng::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn has(tool: &str) -> bool {
    let args: &[&str] = if tool == "kubectl" {
        &["version", "--client"]
    } else {
        &["version"]
    };
    let ok = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(&format!("{tool} not runnable"));
    }
    ok
}

fn git_options() -> RenderOptions {
    RenderOptions {
        git: Some(
            GitSource::new("https://git.example.com/platform/gitops.git")
                .unwrap()
                .with_branch("release")
                .unwrap()
                .with_path("deploy/palisade")
                .unwrap(),
        ),
        ..RenderOptions::default()
    }
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    docs(&String::from_utf8(out.stdout).unwrap())
}

fn id(v: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    (
        s(&v["kind"]),
        s(&v["metadata"]["namespace"]),
        s(&v["metadata"]["name"]),
    )
}

/// What Flux applies to a cluster bootstrapped with
/// `flux bootstrap --path <tree>/clusters/<env>`: kustomize-controller builds
/// that directory (it has no kustomization.yaml, so the controller takes
/// in every sub-directory holding one, as fluxcd/pkg
/// `kustomize/kustomize_generator.go` does), then every Flux
/// `Kustomization` found there builds its own `spec.path`, which is
/// relative to the repository's root.
fn applied_to_cluster(repo: &Path, tree: &Path, env: &str) -> (Vec<Value>, Vec<Value>) {
    let cluster = tree.join("clusters").join(env);
    assert!(
        !cluster.join("kustomization.yaml").exists(),
        "clusters/{env}/kustomization.yaml would hide flux bootstrap's flux-system/"
    );
    let mut flux = Vec::new();
    for entry in std::fs::read_dir(&cluster).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("kustomization.yaml").is_file() {
            flux.extend(kustomize(&dir));
        }
    }
    let mut applied = Vec::new();
    for k in flux.iter().filter(|v| {
        v["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("kustomize.toolkit.fluxcd.io/")
    }) {
        let path = k["spec"]["path"].as_str().unwrap();
        applied.extend(kustomize(&repo.join(path)));
    }
    (flux, applied)
}

#[test]
fn bootstrapping_one_cluster_applies_exactly_its_environments_overlay() {
    if !has("kubectl") {
        return;
    }
    // The tree lives in deploy/palisade of the repository, as --git-path says.
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path().join("deploy/palisade");
    let options = git_options();
    tree::write_snapshot(&root, &fixtures::seed(), &options).unwrap();

    for env in ["development", "production"] {
        let (flux, applied) = applied_to_cluster(repo.path(), &root, env);
        // Exactly one source and one Kustomization, pointing at each other.
        let kinds: Vec<&str> = flux.iter().map(|v| v["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        let repo_obj = flux.iter().find(|v| v["kind"] == "GitRepository").unwrap();
        let ks = flux.iter().find(|v| v["kind"] == "Kustomization").unwrap();
        assert_eq!(
            repo_obj["spec"]["url"],
            "https://git.example.com/platform/gitops.git"
        );
        assert_eq!(repo_obj["spec"]["ref"]["branch"], "release");
        assert_eq!(ks["spec"]["sourceRef"]["kind"], "GitRepository");
        assert_eq!(
            ks["spec"]["sourceRef"]["name"],
            repo_obj["metadata"]["name"]
        );
        assert_eq!(ks["spec"]["prune"], true);
        // Flux resolves spec.path from the repository's root.
        assert_eq!(
            ks["spec"]["path"],
            format!("./deploy/palisade/overlays/{env}").as_str()
        );

        // The cluster gets the overlay's objects, each once, all of this
        // environment: no second Kustomization fights over them.
        let ids: Vec<_> = applied.iter().map(id).collect();
        let distinct: BTreeSet<_> = ids.iter().cloned().collect();
        assert_eq!(ids.len(), distinct.len(), "{env}: an object applied twice");
        let overlay = kustomize(&root.join("overlays").join(env));
        assert_eq!(
            distinct,
            overlay.iter().map(id).collect::<BTreeSet<_>>(),
            "{env}"
        );
        assert!(
            applied
                .iter()
                .all(|v| v["metadata"]["labels"]["palisade.io/environment"] == env),
            "{env}: an object of another environment"
        );
    }
}

#[test]
fn without_a_repository_the_tree_has_no_flux_objects() {
    let dir = tempfile::tempdir().unwrap();
    tree::write_snapshot(dir.path(), &fixtures::seed(), &RenderOptions::default()).unwrap();
    assert!(!dir.path().join("clusters").exists());
    assert!(!dir.path().join("flux").exists());
    assert_eq!(tree::recorded_source(dir.path()).unwrap(), None);

    // With one, the source is recorded for the next render.
    let options = git_options();
    tree::write_snapshot(dir.path(), &fixtures::seed(), &options).unwrap();
    assert_eq!(tree::recorded_source(dir.path()).unwrap(), options.git);
    let text = std::fs::read_to_string(dir.path().join(tree::MANIFEST)).unwrap();
    assert!(
        !text.contains("example/platform-gitops"),
        "a placeholder URL: {text}"
    );
}

#[test]
fn git_urls_flux_would_refuse_are_refused() {
    // source-controller's GitRepository.spec.url pattern (v1.4.0, v1.9.1):
    // ^(http|https|ssh)://.*$
    for bad in [
        "git@github.com:org/repo.git",
        "github.com/org/repo",
        "https://",
        "ftp://x/y",
    ] {
        let err = GitSource::new(bad).unwrap_err().to_string();
        assert!(err.contains(bad), "{err}");
    }
    for good in [
        "https://github.com/org/repo",
        "ssh://git@github.com/org/repo.git",
    ] {
        GitSource::new(good).unwrap();
    }
    let g = GitSource::new("https://h/r").unwrap();
    assert!(g.clone().with_path("../elsewhere").is_err());
    assert!(g.clone().with_path("/abs").is_err());
    assert!(g.clone().with_branch("has space").is_err());
    assert_eq!(g.with_path("./a/b/").unwrap().path, "a/b");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(["-c", "init.defaultBranch=main", "-c", "core.autocrlf=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rendering_unchanged_state_in_a_fresh_clone_changes_no_byte() {
    if !has("git") {
        return;
    }
    let options = git_options();
    let snap = fixtures::seed();
    let origin = tempfile::tempdir().unwrap();
    tree::write_snapshot(origin.path(), &snap, &options).unwrap();
    git(origin.path(), &["init", "-q"]);
    git(origin.path(), &["add", "."]);
    git(origin.path(), &["commit", "-q", "-m", "render"]);

    // A clone has the same bytes, but every file has a new mtime.
    let parent = tempfile::tempdir().unwrap();
    let clone = parent.path().join("clone");
    std::thread::sleep(std::time::Duration::from_millis(20));
    git(
        parent.path(),
        &["clone", "-q", origin.path().to_str().unwrap(), "clone"],
    );
    let summary = tree::write_snapshot(&clone, &snap, &options).unwrap();
    assert!(summary.is_empty(), "{summary}");
    assert_eq!(
        git(&clone, &["status", "--porcelain"]),
        "",
        "a spurious commit"
    );

    // Not skipping blindly: a hand edit in the clone is still undone.
    let db = "base/tenants/acme-corp/deployments/database.yaml";
    std::fs::write(clone.join(db), "edited\n").unwrap();
    let summary = tree::write_snapshot(&clone, &snap, &options).unwrap();
    assert_eq!(summary.changed, [db]);
    assert_eq!(git(&clone, &["status", "--porcelain"]), "");
}
