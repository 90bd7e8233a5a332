//! The rendered output as a user sees it: golden files for the seed
//! scenario, byte-stability, minimal re-renders and `kubectl kustomize` on
//! every layer. Schema validation of every object against every supported
//! release is in `tests/schemas.rs`; the Flux layout and reproducible
//! bookkeeping in `tests/gitops.rs`.
//!
//! kubectl is optional outside CI: without it a check prints
//! `SKIPPED: <why>` and passes; with `CI=true` it fails.

// Test helpers outside #[test] fns panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::skip;

use palisade_kube::fixtures;
use palisade_kube::options::PolicyFlavour;
use palisade_kube::tree::{self, Files};
use palisade_kube::{RenderOptions, render, to_multi_doc};
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn seed_files(options: &RenderOptions) -> Files {
    let rendered = render(&fixtures::seed(), options).unwrap();
    tree::files(&rendered, options).unwrap()
}

fn seed_stream(options: &RenderOptions) -> String {
    let rendered = render(&fixtures::seed(), options).unwrap();
    let objects: Vec<_> = rendered.objects().cloned().collect();
    to_multi_doc(&objects)
}

/// Compares `actual` with the golden file `rel`; `UPDATE_GOLDEN=1`
/// rewrites it instead (review the diff by eye before committing).
fn check_golden(rel: &str, actual: &str) -> Option<String> {
    let path = golden_dir().join(rel);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return None;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) if expected == actual => None,
        Ok(_) => Some(format!("{rel} differs from its golden file")),
        Err(e) => Some(format!("{rel}: cannot read golden file: {e}")),
    }
}

/// The options of the golden tree: the defaults plus a Git repository, so
/// the tree has its Flux objects.
fn golden_options() -> RenderOptions {
    RenderOptions {
        git: Some(
            palisade_kube::GitSource::new("https://github.com/example/platform-gitops").unwrap(),
        ),
        ..RenderOptions::default()
    }
}

#[test]
fn seed_tree_matches_golden_files() {
    let files = seed_files(&golden_options());
    let mut failures: Vec<String> = files
        .iter()
        .filter_map(|(rel, contents)| check_golden(&format!("tree/{rel}"), contents))
        .collect();
    if std::env::var_os("UPDATE_GOLDEN").is_none() {
        // No golden file may be left over from something no longer rendered.
        let root = golden_dir().join("tree");
        for path in walk(&root) {
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !files.contains_key(&rel) {
                failures.push(format!("golden file {rel} is no longer rendered"));
            }
        }
    }
    failures.extend(check_golden(
        "stream.yaml",
        &seed_stream(&RenderOptions::default()),
    ));
    assert!(
        failures.is_empty(),
        "{}\n(run with UPDATE_GOLDEN=1 to accept)",
        failures.join("\n")
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn rendering_twice_gives_identical_bytes() {
    let options = RenderOptions::default();
    assert_eq!(seed_files(&options), seed_files(&options));
    assert_eq!(seed_stream(&options), seed_stream(&options));

    // Input order must not matter either: stores may list in any order.
    let mut shuffled = fixtures::seed();
    shuffled.deployments.reverse();
    shuffled.tenants.reverse();
    shuffled.gateways.reverse();
    let a = tree::files(&render(&shuffled, &options).unwrap(), &options).unwrap();
    let b = seed_files(&options);
    let differing: Vec<&String> = b.keys().filter(|k| a.get(*k) != b.get(*k)).collect();
    assert!(differing.is_empty(), "input order changed {differing:?}");
    assert_eq!(a.len(), b.len());
}

#[test]
fn rewriting_an_unchanged_tree_touches_nothing_and_a_deletion_only_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let options = RenderOptions::default();
    let snap = fixtures::seed();
    let first = tree::write_tree(dir.path(), &render(&snap, &options).unwrap(), &options).unwrap();
    assert!(first.changed.is_empty() && first.removed.is_empty());
    assert_eq!(first.added.len(), seed_files(&options).len());

    // A file the user keeps next to the tree survives every re-render.
    std::fs::write(dir.path().join("base/NOTES.md"), "mine").unwrap();

    let again = tree::write_tree(dir.path(), &render(&snap, &options).unwrap(), &options).unwrap();
    assert!(again.is_empty(), "{again}");

    let mut smaller = snap.clone();
    smaller
        .deployments
        .retain(|d| !(d.tenant.as_str() == "acme-corp" && d.name.as_str() == "web-frontend"));
    smaller.gateways.retain(|g| {
        !matches!(&g.scope, palisade_core::GatewayScope::PerDeployment { deployment, .. }
            if deployment.as_str() == "web-frontend")
    });
    let summary =
        tree::write_tree(dir.path(), &render(&smaller, &options).unwrap(), &options).unwrap();
    assert!(summary.added.is_empty(), "{summary}");
    assert_eq!(
        summary.removed,
        ["base/tenants/acme-corp/deployments/web-frontend.yaml"]
    );
    assert_eq!(
        summary.changed,
        // Its resources entry. (Cilium's gateways have no pods, so no
        // gateway policy names it.)
        ["base/tenants/acme-corp/kustomization.yaml"]
    );
    assert!(dir.path().join("base/NOTES.md").exists());

    // Deleting the last deployment and the tenant removes its directory.
    let mut no_big = smaller.clone();
    no_big.tenants.retain(|t| t.name.as_str() != "big-corp");
    no_big
        .deployments
        .retain(|d| d.tenant.as_str() != "big-corp");
    no_big
        .gateways
        .retain(|g| g.scope.tenant().is_none_or(|t| t.as_str() != "big-corp"));
    let summary =
        tree::write_tree(dir.path(), &render(&no_big, &options).unwrap(), &options).unwrap();
    assert_eq!(summary.removed.len(), 3, "{summary}");
    assert!(!dir.path().join("base/tenants/big-corp").exists());
}

#[test]
fn streaming_writer_writes_the_same_tree_as_the_in_memory_one() {
    let options = RenderOptions::default();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let snap = fixtures::seed();
    tree::write_tree(a.path(), &render(&snap, &options).unwrap(), &options).unwrap();
    let summary = tree::write_snapshot(b.path(), &snap, &options).unwrap();
    assert_eq!(summary.added.len(), seed_files(&options).len());
    for rel in seed_files(&options).keys() {
        assert_eq!(
            std::fs::read(a.path().join(rel)).unwrap(),
            std::fs::read(b.path().join(rel)).unwrap(),
            "{rel}"
        );
    }
    assert_eq!(manifest_paths(a.path()), manifest_paths(b.path()));
    assert!(
        tree::write_snapshot(b.path(), &snap, &options)
            .unwrap()
            .is_empty()
    );
}

/// The files a manifest lists (its tenant fingerprint lines left out).
fn manifest_paths(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join(tree::MANIFEST))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("tenant\t"))
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect()
}

/// Every file under `root` except the manifest, with its bytes.
fn tree_contents(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.file_name().unwrap() != tree::MANIFEST {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Re-renders `dir` incrementally and checks the result is exactly what a
/// full render of `snap` into an empty directory gives.
fn rerender_matches_fresh(
    dir: &Path,
    snap: &palisade_core::Snapshot,
    options: &RenderOptions,
) -> tree::TreeSummary {
    let summary = tree::write_snapshot(dir, snap, options).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    tree::write_snapshot_with(fresh.path(), snap, options, tree::Reuse::Nothing).unwrap();
    assert_eq!(tree_contents(dir), tree_contents(fresh.path()));
    summary
}

#[test]
fn incremental_rerender_equals_a_full_render_after_every_kind_of_change() {
    let mut options = RenderOptions::default();
    let mut snap = fixtures::seed();
    let dir = tempfile::tempdir().unwrap();
    let db = "base/tenants/acme-corp/deployments/database.yaml";
    tree::write_snapshot(dir.path(), &snap, &options).unwrap();

    // A hand edit of a generated file is undone, and nothing else moves.
    std::fs::write(dir.path().join(db), "edited by hand\n").unwrap();
    let s = rerender_matches_fresh(dir.path(), &snap, &options);
    assert_eq!(
        (s.changed.as_slice(), s.added.len()),
        ([db.to_owned()].as_slice(), 0)
    );

    // A deleted generated file comes back.
    std::fs::remove_file(dir.path().join(db)).unwrap();
    let s = rerender_matches_fresh(dir.path(), &snap, &options);
    assert_eq!(
        (s.added.as_slice(), s.changed.len()),
        ([db.to_owned()].as_slice(), 0)
    );

    // A new allow rule changes both ends' policies, not their neighbours.
    snap.allow_rules.push(palisade_core::AllowRule {
        tenant: "acme-corp".parse().unwrap(),
        from: "web-frontend".parse().unwrap(),
        to: "api-backend".parse().unwrap(),
        port: None,
    });
    snap.allow_rules.sort();
    let s = rerender_matches_fresh(dir.path(), &snap, &options);
    assert_eq!(
        s.changed,
        [
            "base/tenants/acme-corp/deployments/api-backend.yaml",
            "base/tenants/acme-corp/deployments/web-frontend.yaml"
        ]
    );

    // A gateway of another tenant leaves acme-corp alone; removing the
    // central gateway reaches every tenant.
    snap.gateways
        .retain(|g| g.scope != palisade_core::GatewayScope::Central);
    let s = rerender_matches_fresh(dir.path(), &snap, &options);
    assert!(
        s.changed
            .iter()
            .any(|p| p.starts_with("base/tenants/acme-corp/"))
    );
    assert!(
        s.changed
            .iter()
            .any(|p| p.starts_with("base/tenants/big-corp/"))
    );

    // An option that shapes every tenant's objects re-renders them all.
    options.gateway_class = "istio".into();
    let s = rerender_matches_fresh(dir.path(), &snap, &options);
    assert!(
        s.changed
            .iter()
            .any(|p| p.starts_with("base/tenants/big-corp/"))
    );

    // Unchanged input: nothing written.
    assert!(
        tree::write_snapshot(dir.path(), &snap, &options)
            .unwrap()
            .is_empty()
    );
}

// ------------------------------------------------------------ validators

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kind(v: &Value) -> String {
    v["kind"].as_str().unwrap_or_default().to_owned()
}

fn api_version(v: &Value) -> String {
    v["apiVersion"].as_str().unwrap_or_default().to_owned()
}

/// Every option combination that changes which kinds or fields appear.
fn variants() -> Vec<(&'static str, String)> {
    let mut out = vec![("default", seed_stream(&RenderOptions::default()))];
    let mut both = RenderOptions {
        policy: PolicyFlavour::Both,
        run_as_non_root: true,
        read_only_root_fs: true,
        ..RenderOptions::default()
    };
    both.proxy.address = "172.16.28.8".into();
    out.push(("both-policies-proxy-ip", seed_stream(&both)));
    let mut demo = in_cluster_proxy();
    demo.egress_check = Some(palisade_kube::EgressCheck::default());
    out.push(("in-cluster-proxy-egress-check", seed_stream(&demo)));
    let cluster = palisade_kube::cluster::files(
        &fixtures::seed(),
        &RenderOptions::default(),
        &pinned_cluster(),
    )
    .unwrap();
    out.push((
        "cluster-gvisor-installer",
        cluster["gvisor-installer.yaml"].clone(),
    ));
    out
}

/// Cluster options with (made-up) gVisor checksums, which have no default.
fn pinned_cluster() -> palisade_kube::cluster::ClusterOptions {
    let mut o = palisade_kube::cluster::ClusterOptions::default();
    o.gvisor.runsc_sha512 = Some("1".repeat(128));
    o.gvisor.shim_sha512 = Some("2".repeat(128));
    o
}

fn in_cluster_proxy() -> RenderOptions {
    let mut o = RenderOptions::default();
    o.proxy.in_cluster = Some(palisade_kube::InClusterProxy::new(
        "listen: 0.0.0.0:3128\ntenants: {}\n".into(),
    ));
    o
}

#[test]
fn in_cluster_proxy_runs_on_egress_nodes_and_tenants_may_reach_only_those() {
    let options = in_cluster_proxy();
    let all = docs(&seed_stream(&options));
    let find = |kind: &str, name: &str| {
        all.iter()
            .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let dep = find("Deployment", "palisade-proxy");
    assert_eq!(dep["metadata"]["namespace"], "palisade-system");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["nodeSelector"]["palisade.io/egress-proxy"], "true");
    assert_eq!(
        pod["containers"][0]["args"],
        serde_yaml_ng::from_str::<Value>("[proxy, --config, /etc/palisade/proxy.yaml]").unwrap()
    );
    assert_eq!(
        find("ConfigMap", "palisade-proxy")["data"]["proxy.yaml"],
        "listen: 0.0.0.0:3128\ntenants: {}\n"
    );
    assert_eq!(
        find("PodDisruptionBudget", "palisade-proxy")["spec"]["minAvailable"],
        1
    );
    assert_eq!(
        find("Service", "palisade-proxy")["spec"]["ports"][0]["port"],
        3128
    );

    // acme-corp (proxy mode) may reach the egress nodes on the proxy port only.
    let web = find("CiliumNetworkPolicy", "deployment-web-frontend");
    let to_proxy: Vec<&Value> = web["spec"]["egress"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|r| !r["toNodes"].is_null())
        .collect();
    assert_eq!(to_proxy.len(), 1, "{web:?}");
    assert_eq!(
        to_proxy[0]["toNodes"][0]["matchLabels"]["palisade.io/egress-proxy"],
        "true"
    );
    assert_eq!(to_proxy[0]["toPorts"][0]["ports"][0]["port"], "3128");

    // The cluster set-up has the nodes and lets Cilium select them.
    let cluster =
        palisade_kube::cluster::files(&fixtures::seed(), &options, &pinned_cluster()).unwrap();
    assert!(cluster["eksctl-cluster.yaml"].contains("name: egress-proxy"));
    assert!(cluster["cilium-values.yaml"].contains("nodeSelectorLabels: true"));

    // A config the API server would refuse is an error, not a broken tree.
    let mut huge = in_cluster_proxy();
    huge.proxy.in_cluster.as_mut().unwrap().config = "#".repeat(2 << 20);
    let err = render(&fixtures::seed(), &huge).unwrap_err().to_string();
    assert!(err.contains("1 MiB ConfigMap limit"), "{err}");
}

#[test]
fn apply_prunes_every_kind_that_is_rendered() {
    for (variant, stream) in variants() {
        if variant.starts_with("cluster") {
            continue;
        }
        for doc in docs(&stream) {
            let (av, kind) = (api_version(&doc), doc["kind"].as_str().unwrap().to_owned());
            assert!(
                palisade_kube::apply::KINDS
                    .iter()
                    .any(|(a, k, _)| *a == av && *k == kind),
                "{variant}: {av} {kind} is rendered but never pruned"
            );
        }
    }
}

#[test]
fn egress_check_demo_leaves_through_the_tenant_proxy_and_accepts_nothing() {
    let options = RenderOptions {
        egress_check: Some(palisade_kube::EgressCheck::default()),
        ..in_cluster_proxy()
    };
    let all = docs(&seed_stream(&options));
    let find = |kind: &str, ns: &str| {
        all.iter()
            .find(|v| {
                v["kind"] == kind
                    && v["metadata"]["name"] == "egress-check"
                    && v["metadata"]["namespace"] == ns
            })
            .unwrap_or_else(|| panic!("no {kind} egress-check in {ns}"))
    };
    let dep = find("Deployment", "tenant-acme-corp");
    let tpl = &dep["spec"]["template"];
    // The first deployment's pool: the proxy knows the pod as acme-corp's.
    assert_eq!(
        tpl["metadata"]["annotations"]["ipam.cilium.io/ipv6-pool"],
        "acme-corp.api-backend"
    );
    let c = &tpl["spec"]["containers"][0];
    assert_eq!(c["args"][0], "egress-check");
    let env: Vec<&str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "POD_NAME",
        "NODE_NAME",
    ] {
        assert!(env.contains(&v), "{v} missing from {env:?}");
    }
    assert_eq!(tpl["spec"]["nodeSelector"]["node-pool"], "acme-pool");
    assert_eq!(
        find("ServiceAccount", "tenant-acme-corp")["automountServiceAccountToken"],
        false
    );
    assert_eq!(
        find("Service", "tenant-acme-corp")["spec"]["ports"][0]["targetPort"],
        8080
    );

    let policy = find("CiliumNetworkPolicy", "tenant-acme-corp");
    assert!(policy["spec"]["ingress"].is_null(), "{policy:?}");
    let egress = policy["spec"]["egress"].as_sequence().unwrap();
    assert_eq!(egress.len(), 2, "proxy and DNS only: {egress:?}");
    assert!(egress.iter().any(|r| !r["toNodes"].is_null()));
    assert!(
        egress
            .iter()
            .any(|r| r["toEndpoints"][0]["matchLabels"]["k8s-app"] == "kube-dns")
    );

    // big-corp leaves through its egress gateway: no proxy, the world.
    let big = &find("Deployment", "tenant-big-corp")["spec"]["template"]["spec"]["containers"][0];
    assert!(
        !big["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "HTTP_PROXY")
    );
    let big_policy = find("CiliumNetworkPolicy", "tenant-big-corp");
    assert!(
        big_policy["spec"]["egress"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|r| r["toEntities"][0] == "world")
    );
}

#[test]
fn proxy_config_changes_rewrite_only_the_proxy_config_map() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = in_cluster_proxy();
    tree::write_snapshot(dir.path(), &fixtures::seed(), &options).unwrap();
    options.proxy.in_cluster.as_mut().unwrap().config = "listen: 0.0.0.0:3129\n".into();
    let s = rerender_matches_fresh(dir.path(), &fixtures::seed(), &options);
    assert_eq!(s.changed, ["base/platform/configmap-palisade-proxy.yaml"]);
}

fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let out = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(out) => out,
        Err(e) => {
            skip(&format!("kubectl not runnable: {e}"));
            return None;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(docs(&String::from_utf8(out.stdout).unwrap()))
}

#[test]
fn kustomize_builds_base_and_overlays_with_the_claimed_differences() {
    let dir = tempfile::tempdir().unwrap();
    let options = RenderOptions::default();
    let snap = fixtures::seed();
    tree::write_tree(dir.path(), &render(&snap, &options).unwrap(), &options).unwrap();

    let Some(base) = kustomize(&dir.path().join("base")) else {
        return;
    };
    let dev = kustomize(&dir.path().join("overlays/development")).unwrap();
    let prod = kustomize(&dir.path().join("overlays/production")).unwrap();
    let stream = docs(&seed_stream(&options));
    assert_eq!(base.len(), stream.len(), "base holds every rendered object");
    assert_eq!(dev.len(), base.len());
    assert_eq!(prod.len(), base.len());

    let deployments = |docs: &[Value]| -> Vec<(String, i64, String)> {
        docs.iter()
            .filter(|v| kind(v) == "Deployment")
            .map(|v| {
                (
                    v["metadata"]["name"].as_str().unwrap().to_owned(),
                    v["spec"]["replicas"].as_i64().unwrap(),
                    v["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            })
            .collect()
    };
    let model: Vec<i64> = {
        let mut d = snap.deployments.clone();
        d.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
        d.iter().map(|d| i64::from(d.replicas.get())).collect()
    };
    let dev_d = deployments(&dev);
    let prod_d = deployments(&prod);
    assert_eq!(dev_d.len(), 4);
    // Development: one replica and seed 002's small limits everywhere.
    assert!(
        dev_d.iter().all(|(_, r, m)| *r == 1 && m == "128Mi"),
        "{dev_d:?}"
    );
    // Production: the model's replicas and the base resources.
    assert_eq!(prod_d.iter().map(|d| d.1).collect::<Vec<_>>(), model);
    assert!(prod_d.iter().all(|(_, _, m)| m == "512Mi"), "{prod_d:?}");
    assert_eq!(deployments(&base), prod_d);

    // The proxy ConfigMap says which environment it is, under a hashed
    // name that every Deployment of the tenant refers to.
    for (docs, env) in [
        (&dev, Some("development")),
        (&prod, Some("production")),
        (&base, None),
    ] {
        let cms: Vec<&Value> = docs.iter().filter(|v| kind(v) == "ConfigMap").collect();
        assert_eq!(cms.len(), 1, "only acme-corp uses the proxy");
        assert_eq!(cms[0]["data"]["ENVIRONMENT"].as_str(), env);
        let name = cms[0]["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("egress-proxy-"), "{name}");
        let refs = docs
            .iter()
            .filter(|v| kind(v) == "Deployment")
            .filter(|v| v["metadata"]["namespace"] == "tenant-acme-corp")
            .map(|v| {
                v["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]
                    ["configMapKeyRef"]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>();
        assert_eq!(refs, vec![name.to_owned(); 3]);
    }
    // Every overlay object carries its environment label.
    assert!(
        dev.iter()
            .all(|v| v["metadata"]["labels"]["palisade.io/environment"] == "development")
    );
}
