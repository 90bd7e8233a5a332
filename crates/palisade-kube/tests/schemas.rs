//! The support matrix, tested: every object Palisade renders, in every
//! rendering variant, against the schema of every release of its kind that
//! Palisade supports (docs/kubernetes.md, "Support matrix").
//!
//! The schemas are release-matched copies of upstream files
//! (`../shared/schemas`, see its SOURCES.md), so these tests check the
//! output against something Palisade did not write:
//! - Cilium CRDs of v1.17.17 and v1.18.11 (a kind or version a release
//!   does not serve fails, as `kubectl apply` would);
//! - Gateway API standard channel v1.2.1, v1.3.0 and v1.6.1 (v1.2.1 is the
//!   floor); v1.0.0 and v1.1.0 are checked and reported, never failed;
//! - Flux source-controller/kustomize-controller v1.4.0 (Flux 2.4) and
//!   v1.9.x;
//! - built-in kinds with `kubernetes-validate` at Kubernetes 1.31 to 1.34.
//!
//! Validation is strict (unknown fields fail, like
//! `kubectl apply --validate=strict`). Each release runs one validator
//! process over every distinct object of every variant, so the matrix stays
//! fast. A failure names the release, the object (`kind ns/name`), the
//! field and the variants that render it.
//!
//! A missing validator or schema directory prints `SKIPPED: <why>`; with
//! `CI=true` it fails instead.

// Test helpers outside #[test] fns panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{find_tool, skip};

use palisade_core::{Gateway, GatewayScope, Snapshot, Timestamp};
use palisade_kube::options::PolicyFlavour;
use palisade_kube::{
    EgressCheck, GitSource, InClusterProxy, RenderOptions, fixtures, render, tree,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

// ------------------------------------------------------------ the matrix

/// Kubernetes minor versions Palisade supports.
const KUBERNETES: [&str; 4] = ["1.31", "1.32", "1.33", "1.34"];

/// One release of a schema family.
struct Release {
    /// How failures name it, e.g. "Cilium v1.17.17".
    name: &'static str,
    /// CRD files under the schemas directory.
    crds: &'static [&'static str],
    /// In the support matrix: a failure fails the test. Outside it, a
    /// failure is only reported.
    supported: bool,
}

const CILIUM: &[Release] = &[
    Release {
        name: "Cilium v1.17.17",
        crds: &[
            "cilium/v1.17.17/crds/v2/ciliumnetworkpolicies.yaml",
            "cilium/v1.17.17/crds/v2/ciliumclusterwidenetworkpolicies.yaml",
            "cilium/v1.17.17/crds/v2/ciliumegressgatewaypolicies.yaml",
            "cilium/v1.17.17/crds/v2alpha1/ciliumloadbalancerippools.yaml",
            "cilium/v1.17.17/crds/v2alpha1/ciliumpodippools.yaml",
        ],
        supported: true,
    },
    Release {
        name: "Cilium v1.18.11",
        crds: &[
            "cilium/v1.18.11/crds/v2/ciliumnetworkpolicies.yaml",
            "cilium/v1.18.11/crds/v2/ciliumclusterwidenetworkpolicies.yaml",
            "cilium/v1.18.11/crds/v2/ciliumegressgatewaypolicies.yaml",
            "cilium/v1.18.11/crds/v2/ciliumloadbalancerippools.yaml",
            "cilium/v1.18.11/crds/v2alpha1/ciliumpodippools.yaml",
        ],
        supported: true,
    },
];

const GATEWAY_API: &[Release] = &[
    Release {
        name: "Gateway API v1.0.0",
        crds: &["gateway-api/v1.0.0/all-standard.yaml"],
        supported: false,
    },
    Release {
        name: "Gateway API v1.1.0",
        crds: &["gateway-api/v1.1.0/all-standard.yaml"],
        supported: false,
    },
    Release {
        name: "Gateway API v1.2.1",
        crds: &["gateway-api/v1.2.1/all-standard.yaml"],
        supported: true,
    },
    Release {
        name: "Gateway API v1.3.0",
        crds: &["gateway-api/v1.3.0/all-standard.yaml"],
        supported: true,
    },
    Release {
        name: "Gateway API v1.6.1",
        crds: &["gateway-api/v1.6.1/all-standard.yaml"],
        supported: true,
    },
];

const FLUX: &[Release] = &[
    Release {
        name: "Flux 2.4 (source-controller v1.4.0, kustomize-controller v1.4.0)",
        crds: &[
            "flux/source-controller-v1.4.0.gitrepositories.yaml",
            "flux/kustomize-controller-v1.4.0.kustomizations.yaml",
        ],
        supported: true,
    },
    Release {
        name: "Flux source-controller v1.9.1, kustomize-controller v1.9.4",
        crds: &[
            "flux/source-controller-v1.9.1.gitrepositories.yaml",
            "flux/kustomize-controller-v1.9.4.kustomizations.yaml",
        ],
        supported: true,
    },
];

/// Which schemas an object is checked against, by its API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Cilium,
    GatewayApi,
    Flux,
    BuiltIn,
}

fn family(api_version: &str) -> Option<Family> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match group {
        "cilium.io" => Some(Family::Cilium),
        "gateway.networking.k8s.io" => Some(Family::GatewayApi),
        g if g.ends_with(".toolkit.fluxcd.io") => Some(Family::Flux),
        g if !g.contains('.') || g.ends_with(".k8s.io") => Some(Family::BuiltIn),
        _ => None,
    }
}

// ------------------------------------------------------------ the variants

/// The seed plus what it lacks: a tenant with both an egress gateway and a
/// node pool, fronted by a per-tenant and a per-deployment gateway, and a
/// tenant without deployments.
fn snapshot() -> Snapshot {
    let mut snap = fixtures::seed();
    let gateway_tenant = snap
        .tenants
        .iter()
        .find(|t| t.egress.mode == palisade_core::EgressMode::CiliumEgressGateway)
        .expect("the seed has an egress-gateway tenant")
        .clone();
    let mut zeta = gateway_tenant.clone();
    zeta.name = "zeta-corp".parse().unwrap();
    zeta.node_pool = Some("zeta-pool".parse().unwrap());
    let mut web = snap.deployments[0].clone();
    web.tenant = zeta.name.clone();
    web.name = "web".parse().unwrap();
    web.subnet = snap.pool.subnet(9);
    let mut idle = snap.tenants[0].clone();
    idle.name = "idle-corp".parse().unwrap();
    snap.gateways.push(Gateway {
        scope: GatewayScope::PerTenant {
            tenant: zeta.name.clone(),
        },
        created_at: Timestamp(0),
    });
    snap.gateways.push(Gateway {
        scope: GatewayScope::PerDeployment {
            tenant: zeta.name.clone(),
            deployment: web.name.clone(),
        },
        created_at: Timestamp(0),
    });
    snap.tenants.extend([zeta, idle]);
    snap.deployments.push(web);
    snap
}

/// How tenants reach the egress proxy.
#[derive(Debug, Clone, Copy)]
enum Proxy {
    /// Palisade's proxy rendered into the cluster (the CLI's default).
    InCluster,
    /// A proxy VM outside the cluster, by IP.
    Ip,
    /// A host name, run by someone else (`--no-proxy-deployment`).
    External,
}

fn options(policy: PolicyFlavour, proxy: Proxy, class: &str, demo: bool) -> RenderOptions {
    let mut o = RenderOptions {
        policy,
        gateway_class: class.into(),
        run_as_non_root: demo,
        read_only_root_fs: demo,
        egress_check: demo.then(EgressCheck::default),
        git: Some(GitSource::new("https://git.example.com/platform/gitops.git").unwrap()),
        ..RenderOptions::default()
    };
    match proxy {
        Proxy::InCluster => {
            o.proxy.in_cluster = Some(InClusterProxy::new(
                "listen: '[::]:3128'\ntenants: {}\n".into(),
            ));
        }
        Proxy::Ip => o.proxy.address = "172.16.28.8".into(),
        Proxy::External => {}
    }
    o
}

/// Every option combination that changes which kinds or fields appear:
/// policy flavour × proxy placement × gateway class × egress-check demo
/// (with the hardened security context).
fn option_variants() -> Vec<(String, RenderOptions)> {
    let mut out = Vec::new();
    for policy in [
        PolicyFlavour::Cilium,
        PolicyFlavour::Kubernetes,
        PolicyFlavour::Both,
    ] {
        for proxy in [Proxy::InCluster, Proxy::Ip, Proxy::External] {
            for class in ["cilium", "envoy"] {
                for demo in [false, true] {
                    let name = format!(
                        "{policy:?}/{proxy:?}/{class}{}",
                        if demo { "/egress-check" } else { "" }
                    )
                    .to_lowercase();
                    out.push((name, options(policy, proxy, class, demo)));
                }
            }
        }
    }
    out
}

/// One distinct rendered object and the variants that render it.
struct Rendered {
    body: Value,
    variants: BTreeSet<String>,
}

impl Rendered {
    fn api_version(&self) -> &str {
        self.body["apiVersion"].as_str().unwrap_or_default()
    }
    fn kind(&self) -> &str {
        self.body["kind"].as_str().unwrap_or_default()
    }
    /// `kind ns/name` (`-` without a namespace), as the validators print it.
    fn id(&self) -> String {
        let m = &self.body["metadata"];
        format!(
            "{} {}/{}",
            self.kind(),
            m["namespace"].as_str().unwrap_or("-"),
            m["name"].as_str().unwrap_or("<unnamed>")
        )
    }
}

/// One schema failure: release, object and why, with every variant that
/// renders an object failing that way (overlays relabel objects, so one
/// fault shows in several distinct bodies).
type Failures = BTreeMap<(String, String, String), BTreeSet<String>>;

fn add_failure(failures: &mut Failures, release: &str, o: &Rendered, why: &str) {
    failures
        .entry((release.to_owned(), o.id(), why.to_owned()))
        .or_default()
        .extend(o.variants.iter().cloned());
}

fn report(failures: &Failures) -> String {
    const SHOWN: usize = 3;
    let mut out = String::new();
    for ((release, id, why), variants) in failures {
        let v: Vec<&str> = variants.iter().map(String::as_str).collect();
        let mut shown = v[..v.len().min(SHOWN)].join(", ");
        if v.len() > SHOWN {
            shown.push_str(&format!(" and {} more", v.len() - SHOWN));
        }
        out.push_str(&format!("{release}: {id}: {why} [{shown}]\n"));
    }
    out
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The objects of every variant: the stream, the Flux objects of the
/// GitOps tree, what `kubectl kustomize` builds from two variants'
/// overlays (generated ConfigMaps, patched Deployments) when kubectl is
/// installed, and the cluster set-up's gVisor installer.
fn all_objects() -> &'static [Rendered] {
    static ALL: OnceLock<Vec<Rendered>> = OnceLock::new();
    ALL.get_or_init(|| {
        let snap = snapshot();
        let mut by_body: BTreeMap<String, Rendered> = BTreeMap::new();
        let mut add = |variant: &str, body: Value| {
            // An overlay's copy that differs from a rendered object only
            // by its environment label is that object again (a label value
            // is no schema matter): keep the patched and generated ones.
            let same = without_environment_label(&body);
            let body = if by_body.contains_key(&same) {
                serde_json::from_str(&same).unwrap()
            } else {
                body
            };
            by_body
                .entry(serde_json::to_string(&body).unwrap())
                .or_insert_with(|| Rendered {
                    body,
                    variants: BTreeSet::new(),
                })
                .variants
                .insert(variant.to_owned());
        };
        let kubectl = Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output();
        let kubectl = kubectl.is_ok_and(|o| o.status.success());
        for (i, (variant, options)) in option_variants().into_iter().enumerate() {
            let rendered = match render(&snap, &options) {
                Ok(r) => r,
                // Plain NetworkPolicies cannot express every combination
                // (Cilium's gateways reach backends as the reserved
                // `ingress` identity); the renderer refuses those with an
                // error, which is the user-visible behaviour. Cilium
                // policies must render in every variant.
                Err(e) if options.policy == PolicyFlavour::Kubernetes => {
                    eprintln!("note: {variant} is refused by the renderer: {e}");
                    continue;
                }
                Err(e) => panic!("{variant}: {e}"),
            };
            for o in rendered.objects() {
                add(&variant, o.body.clone());
            }
            let files = tree::files(&rendered, &options).unwrap();
            for (rel, text) in &files {
                if rel.starts_with("clusters/") && !rel.ends_with("/kustomization.yaml") {
                    for doc in yaml_docs(text) {
                        add(&variant, doc);
                    }
                }
            }
            // Overlays differ between variants only in the proxy's
            // ConfigMaps; two variants cover them.
            if kubectl && (i == 0 || variant.contains("/ip/") && variant.ends_with("check")) {
                for (env, docs) in overlays(&files) {
                    for doc in docs {
                        add(&format!("{variant}/overlays/{env}"), doc);
                    }
                }
            }
        }
        if !kubectl {
            eprintln!("note: kubectl not found; overlay output is not in the matrix");
        }
        // The cluster set-up's Kubernetes objects (the gVisor installer),
        // with made-up checksums: the installer has no default for them.
        let mut pinned = palisade_kube::cluster::ClusterOptions::default();
        pinned.gvisor.runsc_sha512 = Some("1".repeat(128));
        pinned.gvisor.shim_sha512 = Some("2".repeat(128));
        let demo = options(PolicyFlavour::Cilium, Proxy::InCluster, "cilium", true);
        let cluster = palisade_kube::cluster::files(&snap, &demo, &pinned).unwrap();
        for doc in yaml_docs(&cluster["gvisor-installer.yaml"]) {
            add("cluster/gvisor-installer.yaml", doc);
        }
        by_body.into_values().collect()
    })
}

/// `body` as JSON without the overlays' `palisade.io/environment` label.
fn without_environment_label(body: &Value) -> String {
    let mut b = body.clone();
    if let Some(meta) = b.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut)
    {
        labels.remove("palisade.io/environment");
        if labels.is_empty() {
            meta.remove("labels");
        }
    }
    serde_json::to_string(&b).unwrap()
}

/// `kubectl kustomize overlays/<env>` of a tree written to a temp dir.
fn overlays(files: &tree::Files) -> Vec<(String, Vec<Value>)> {
    let dir = tempfile::tempdir().unwrap();
    tree::write_files(dir.path(), files).unwrap();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("overlays")).unwrap() {
        let path = entry.unwrap().path();
        let built = Command::new("kubectl")
            .arg("kustomize")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "kubectl kustomize {}: {}",
            path.display(),
            String::from_utf8_lossy(&built.stderr)
        );
        let env = path.file_name().unwrap().to_string_lossy().into_owned();
        out.push((env, yaml_docs(&String::from_utf8(built.stdout).unwrap())));
    }
    out
}

fn objects_of(f: Family) -> Vec<&'static Rendered> {
    all_objects()
        .iter()
        .filter(|o| family(o.api_version()) == Some(f))
        .collect()
}

// ------------------------------------------------------------ validators

fn schemas_dir() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("PALISADE_SCHEMAS")
        .map(PathBuf::from)
        .into_iter()
        .chain([manifest.join("../../../shared/schemas")])
        .find(|p| p.join("validate_crd_objects.py").is_file())
}

/// The schemas directory and a Python that can run its CRD validator.
fn crd_validator() -> Option<(PathBuf, PathBuf)> {
    let Some(schemas) = schemas_dir() else {
        skip("release schemas not found (set PALISADE_SCHEMAS to ../shared/schemas)");
        return None;
    };
    let Some(python) = find_tool("python3") else {
        skip("python3 not found");
        return None;
    };
    let probe = Command::new(&python)
        .args(["-c", "import yaml, jsonschema, regex"])
        .status()
        .unwrap();
    if !probe.success() {
        skip(&format!(
            "{} lacks pyyaml/jsonschema/regex (run scripts/test.sh or set PALISADE_VENV)",
            python.display()
        ));
        return None;
    }
    Some((schemas, python))
}

/// (group, kind) → the versions a release defines, each with whether it
/// is served.
type Served = BTreeMap<(String, String), BTreeMap<String, bool>>;

fn served(crds: &str) -> Served {
    let mut out = Served::new();
    for doc in yaml_docs(crds) {
        let spec = &doc["spec"];
        let key = (
            spec["group"].as_str().unwrap().to_owned(),
            spec["names"]["kind"].as_str().unwrap().to_owned(),
        );
        for v in spec["versions"].as_array().unwrap() {
            out.entry(key.clone()).or_default().insert(
                v["name"].as_str().unwrap().to_owned(),
                v["served"].as_bool().unwrap_or(true),
            );
        }
    }
    out
}

fn group_kind(o: &Rendered) -> (String, String) {
    let group = o.api_version().rsplit_once('/').map_or("", |(g, _)| g);
    (group.to_owned(), o.kind().to_owned())
}

/// Validates `objects` against one release's CRDs with one process.
fn check_release(
    schemas: &Path,
    python: &Path,
    release: &Release,
    objects: &[&Rendered],
) -> Failures {
    let dir = tempfile::tempdir().unwrap();
    let crds: String = release
        .crds
        .iter()
        .map(|f| std::fs::read_to_string(schemas.join(f)).unwrap() + "\n---\n")
        .collect();
    let served = served(&crds);
    let crd_file = dir.path().join("crds.yaml");
    std::fs::write(&crd_file, &crds).unwrap();

    let mut failures = Failures::new();
    let (known, unknown): (Vec<&Rendered>, Vec<&Rendered>) = objects
        .iter()
        .partition(|o| served.contains_key(&group_kind(o)));
    for o in unknown {
        let why = format!("{} is not a kind this release defines", o.api_version());
        add_failure(&mut failures, release.name, o, &why);
    }
    // Each object as rendered; and one the release does not serve, also as
    // each version it does serve, so that faults behind the version show
    // too (the API server would stop at the version).
    let mut checks: Vec<(&Rendered, Value, Option<String>)> = Vec::new();
    for o in &known {
        checks.push((o, o.body.clone(), None));
        let (group, kind) = group_kind(o);
        let version = o.api_version().rsplit_once('/').map_or("", |(_, v)| v);
        let versions = &served[&(group.clone(), kind)];
        if versions.get(version) != Some(&true) {
            for (v, _) in versions.iter().filter(|(_, on)| **on) {
                let mut body = o.body.clone();
                body["apiVersion"] = format!("{group}/{v}").into();
                checks.push((o, body, Some(format!("{group}/{v}"))));
            }
        }
    }
    let manifest = dir.path().join("objects.yaml");
    let text: String = checks
        .iter()
        .map(|(_, body, _)| format!("---\n{}\n", serde_json::to_string(body).unwrap()))
        .collect();
    std::fs::write(&manifest, text).unwrap();
    let out = Command::new(python)
        .arg(schemas.join("validate_crd_objects.py"))
        .arg("--strict")
        .arg(&crd_file)
        .arg(&manifest)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdicts: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("INVALID "))
        .collect();
    assert!(
        out.status.code().is_some_and(|c| c <= 1) && verdicts.len() == checks.len(),
        "{}: the validator judged {} of {} objects:\n{stdout}{}",
        release.name,
        verdicts.len(),
        checks.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator prints one verdict per matching object, in order.
    for ((o, _, retried_as), line) in checks.iter().zip(verdicts) {
        if let Some(rest) = line.strip_prefix("INVALID ") {
            let why = rest.strip_prefix(&o.id()).unwrap_or(rest);
            let why = why.trim_start_matches(": ");
            match retried_as {
                None => add_failure(&mut failures, release.name, o, why),
                Some(api) => {
                    add_failure(&mut failures, release.name, o, &format!("as {api}: {why}"))
                }
            }
        }
    }
    failures
}

/// Runs every release of a family; fails on failures of supported ones and
/// prints those of the others.
fn check_family(f: Family, releases: &[Release], must_have: &[&str]) {
    let objects = objects_of(f);
    let kinds: BTreeSet<&str> = objects.iter().map(|o| o.kind()).collect();
    for k in must_have {
        assert!(
            kinds.contains(k),
            "no {k} rendered in any variant: {kinds:?}"
        );
    }
    let Some((schemas, python)) = crd_validator() else {
        return;
    };
    let results: Vec<(&Release, Failures)> = std::thread::scope(|s| {
        let handles: Vec<_> = releases
            .iter()
            .map(|r| {
                let (schemas, python, objects) = (&schemas, &python, &objects);
                s.spawn(move || (r, check_release(schemas, python, r, objects)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Failures::new();
    for (release, found) in results {
        if release.supported {
            failures.extend(found);
        } else if !found.is_empty() {
            eprint!(
                "NOTE: {} is outside the support matrix; it would refuse:\n{}",
                release.name,
                report(&found)
            );
        }
    }
    eprintln!(
        "validated {} distinct {f:?} objects against {} releases",
        objects.len(),
        releases.len()
    );
    assert!(
        failures.is_empty(),
        "{} schema failures:\n{}",
        failures.len(),
        report(&failures)
    );
}

// ------------------------------------------------------------ the tests

#[test]
fn every_rendered_object_belongs_to_a_family_of_the_support_matrix() {
    let strays: Vec<String> = all_objects()
        .iter()
        .filter(|o| family(o.api_version()).is_none())
        .map(|o| format!("{} ({}) in {:?}", o.id(), o.api_version(), o.variants))
        .collect();
    assert!(strays.is_empty(), "no schema for: {strays:?}");
    let variants: BTreeSet<&str> = all_objects()
        .iter()
        .flat_map(|o| o.variants.iter().map(String::as_str))
        .collect();
    assert!(variants.len() > option_variants().len(), "{variants:?}");
}

#[test]
fn cilium_objects_are_served_and_valid_in_cilium_1_17_and_1_18() {
    check_family(
        Family::Cilium,
        CILIUM,
        &[
            "CiliumNetworkPolicy",
            "CiliumPodIPPool",
            "CiliumEgressGatewayPolicy",
        ],
    );
}

#[test]
fn gateway_api_objects_are_valid_in_every_supported_gateway_api_release() {
    check_family(Family::GatewayApi, GATEWAY_API, &["Gateway", "HTTPRoute"]);
}

#[test]
fn flux_objects_are_valid_in_flux_2_4_and_the_v1_9_controllers() {
    check_family(Family::Flux, FLUX, &["GitRepository", "Kustomization"]);
}

#[test]
fn builtin_objects_are_valid_in_kubernetes_1_31_to_1_34() {
    let objects = objects_of(Family::BuiltIn);
    let kinds: BTreeSet<&str> = objects.iter().map(|o| o.kind()).collect();
    for k in [
        "Namespace",
        "Deployment",
        "Service",
        "ConfigMap",
        "DaemonSet",
    ] {
        assert!(kinds.contains(k), "no {k} rendered: {kinds:?}");
    }
    let Some(validator) = find_tool("kubernetes-validate") else {
        return skip("kubernetes-validate not found (run scripts/test.sh or set PALISADE_VENV)");
    };
    // One file per object: kubernetes-validate names the file in each verdict.
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..objects.len())
        .map(|i| format!("o{i:04}.yaml"))
        .collect();
    for (o, name) in objects.iter().zip(&names) {
        std::fs::write(
            dir.path().join(name),
            serde_json::to_string(&o.body).unwrap(),
        )
        .unwrap();
    }
    let results: Vec<(&str, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = KUBERNETES
            .iter()
            .map(|v| {
                let (validator, dir, names) = (&validator, dir.path(), &names);
                s.spawn(move || {
                    let out = Command::new(validator)
                        .args(["-k", v, "--strict"])
                        .args(names)
                        .current_dir(dir)
                        .output()
                        .unwrap();
                    (
                        *v,
                        String::from_utf8_lossy(&out.stdout).into_owned()
                            + &String::from_utf8_lossy(&out.stderr),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Failures::new();
    for (version, text) in &results {
        for (o, name) in objects.iter().zip(&names) {
            let verdicts: Vec<&str> = text
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some(name.as_str()))
                .collect();
            if verdicts.len() == 1 && verdicts[0].contains(" passed for resource ") {
                continue;
            }
            let why = verdicts
                .iter()
                .map(|l| l.split_once(": ").map_or(*l, |(_, why)| why))
                .collect::<Vec<_>>()
                .join("; ");
            let why = if why.is_empty() { "no verdict" } else { &why };
            add_failure(&mut failures, &format!("Kubernetes {version}"), o, why);
        }
    }
    eprintln!(
        "validated {} distinct built-in objects against Kubernetes {}",
        objects.len(),
        KUBERNETES.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} schema failures:\n{}",
        failures.len(),
        report(&failures)
    );
}
