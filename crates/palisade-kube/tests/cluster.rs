//! `render cluster` checked against what the tools on a real install read:
//! the eksctl `ClusterConfig` JSON schema, both supported Cilium charts'
//! `values.schema.json` and `values.yaml`, the Gateway API releases, and
//! containerd itself for the gVisor runtime table (release-matched files in
//! ../shared/schemas, see SOURCES.md there).
//!
//! The schema files are required (they ship beside the repository); a
//! missing `containerd` prints `SKIPPED: <why>`, and fails under CI=true.

// Test helpers outside #[test] fns panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::skip;

use palisade_kube::cluster::{
    self, CiliumRelease, ClusterError, ClusterOptions, ContainerdConfig, GVISOR_READY_LABEL,
    RUNSC_RUNTIME_TYPE,
};
use palisade_kube::tree::Files;
use palisade_kube::{InClusterProxy, RenderOptions, fixtures};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn schemas() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("PALISADE_SCHEMAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../../shared/schemas"));
    assert!(
        dir.join("SOURCES.md").is_file(),
        "release-matched schemas not found at {} (set PALISADE_SCHEMAS)",
        dir.display()
    );
    dir
}

fn pinned(cilium: CiliumRelease) -> ClusterOptions {
    let mut o = ClusterOptions {
        cilium,
        ..ClusterOptions::default()
    };
    o.gvisor.runsc_sha512 = Some("ab".repeat(64));
    o.gvisor.shim_sha512 = Some("cd".repeat(64));
    o
}

fn in_cluster_proxy() -> RenderOptions {
    let mut o = RenderOptions::default();
    o.proxy.in_cluster = Some(InClusterProxy::new("listen: 0.0.0.0:3128\n".into()));
    o
}

/// Every rendering variant that changes the cluster files, per Cilium release.
fn variants() -> Vec<(String, CiliumRelease, Files)> {
    let mut out = Vec::new();
    for release in CiliumRelease::ALL {
        for (name, render) in [
            ("default", RenderOptions::default()),
            ("in-cluster-proxy", in_cluster_proxy()),
        ] {
            let files = cluster::files(&fixtures::seed(), &render, &pinned(release)).unwrap();
            out.push((
                format!("{name}/cilium-{}", release.chart_version()),
                release,
                files,
            ));
        }
    }
    out
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Draft 7 validation; each failure names the file, the schema and the field.
fn schema_errors(schema_file: &Path, what: &str, instance: &Value) -> Vec<String> {
    let mut schema: Value =
        serde_json::from_str(&std::fs::read_to_string(schema_file).unwrap()).unwrap();
    escape_refs(&mut schema);
    let validator = jsonschema::draft7::new(&schema).unwrap();
    validator
        .iter_errors(instance)
        .map(|e| {
            format!(
                "{what} vs {}: at {}: {e}",
                schema_file.display(),
                e.instance_path()
            )
        })
        .collect()
}

/// eksctl's schema names definitions after Go packages with `|`
/// (`#/definitions/github.com|aws|...`), which is not a valid URI
/// reference; percent-encoding it is the same JSON pointer (RFC 6901 §6).
fn escape_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                match v {
                    Value::String(s) if k == "$ref" => *s = s.replace('|', "%7C"),
                    _ => escape_refs(v),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(escape_refs),
        _ => {}
    }
}

#[test]
fn eksctl_config_validates_against_the_eksctl_schema() {
    let schema = schemas().join("eksctl/schema.json");
    let mut failures = Vec::new();
    for (variant, _, files) in variants() {
        let cfg = yaml(&files["eksctl-cluster.yaml"]);
        failures.extend(schema_errors(
            &schema,
            &format!("{variant} eksctl-cluster.yaml"),
            &cfg,
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The schema is strict (additionalProperties: false), so a typo fails.
    let mut typo = yaml(&variants()[0].2["eksctl-cluster.yaml"]);
    typo["managedNodeGroups"][0]["disablePodIMDs"] = true.into();
    assert!(!schema_errors(&schema, "typo", &typo).is_empty());
}

/// A chart's values.yaml: its keys, and the text for keys it documents
/// only as comments (`  # hostNamespaceOnly: false`).
struct ChartValues {
    keys: Value,
    text: String,
}

impl ChartValues {
    fn load(chart: &str) -> Self {
        let text =
            std::fs::read_to_string(schemas().join(format!("cilium/{chart}/helm/values.yaml")))
                .unwrap();
        Self {
            keys: yaml(&text),
            text,
        }
    }

    fn documents(&self, depth: usize, key: &str) -> bool {
        let indent = " ".repeat(2 * depth);
        self.text.lines().any(|l| {
            l.strip_prefix(&indent)
                .and_then(|l| l.strip_prefix('#'))
                .is_some_and(|l| l.trim_start().starts_with(&format!("{key}:")))
        })
    }

    /// Paths of `emitted` that values.yaml neither sets nor documents. A
    /// map that is empty in values.yaml is free-form (its keys are the user's).
    fn unknown(&self, emitted: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(emitted, &self.keys, "", 0, &mut out);
        out
    }

    fn walk(&self, e: &Value, d: &Value, path: &str, depth: usize, out: &mut Vec<String>) {
        let (Value::Object(e), Value::Object(d)) = (e, d) else {
            return;
        };
        if d.is_empty() {
            return;
        }
        for (k, v) in e {
            let p = format!("{path}.{k}");
            match d.get(k) {
                Some(dv) => self.walk(v, dv, &p, depth + 1, out),
                None if self.documents(depth, k) => {}
                None => out.push(p),
            }
        }
    }
}

#[test]
fn cilium_values_validate_against_both_supported_charts() {
    let mut failures = Vec::new();
    for (variant, _, files) in variants() {
        let values = yaml(&files["cilium-values.yaml"]);
        // Whichever release the values were written for, both charts must
        // accept them: users upgrade the chart before re-rendering.
        for chart in ["v1.17.17", "v1.18.11"] {
            let dir = schemas().join(format!("cilium/{chart}/helm"));
            failures.extend(schema_errors(
                &dir.join("values.schema.json"),
                &format!("{variant} cilium-values.yaml"),
                &values,
            ));
            let unknown = ChartValues::load(chart).unknown(&values);
            failures.extend(unknown.into_iter().map(|k| {
                format!(
                    "{variant} cilium-values.yaml: {k} is not a key of cilium {chart} values.yaml"
                )
            }));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The key check catches what the schema lets through.
    let mut typo = yaml(&variants()[0].2["cilium-values.yaml"]);
    typo["egressGateway"]["enable"] = true.into();
    assert_eq!(
        ChartValues::load("v1.18.11").unknown(&typo),
        [".egressGateway.enable"]
    );
}

#[test]
fn default_pool_covers_every_enabled_family_without_touching_the_tenant_pool() {
    let snapshot = fixtures::seed();
    let tenant_pool = snapshot.pool.cidr();
    for (variant, _, files) in variants() {
        let v = yaml(&files["cilium-values.yaml"]);
        let default = &v["ipam"]["operator"]["autoCreateCiliumPodIPPools"]["default"];
        for family in ["ipv4", "ipv6"] {
            if v[family]["enabled"] == true {
                assert!(
                    default[family]["cidrs"][0].is_string(),
                    "{variant}: {family} is enabled but the default pool has no {family} range: {default}"
                );
            }
        }
        let v6: ipnet::Ipv6Net = default["ipv6"]["cidrs"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            !v6.contains(&tenant_pool) && !tenant_pool.contains(&v6),
            "{variant}: {v6} overlaps the tenant pool {tenant_pool}"
        );
        // Both are inside the native-routing range, so neither is masqueraded.
        let routed: ipnet::Ipv6Net = v["ipv6NativeRoutingCIDR"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            routed.contains(&v6) && routed.contains(&tenant_pool),
            "{variant}"
        );
    }
}

#[test]
fn address_ranges_are_explicit_and_overlaps_are_refused() {
    let files = &variants()[0].2;
    let cfg = yaml(&files["eksctl-cluster.yaml"]);
    assert_eq!(cfg["vpc"]["cidr"], "192.168.0.0/16");
    assert_eq!(
        cfg["kubernetesNetworkConfig"]["serviceIPv4CIDR"],
        "10.100.0.0/16"
    );
    let values = yaml(&files["cilium-values.yaml"]);
    let pod: ipnet::Ipv4Net =
        values["ipam"]["operator"]["autoCreateCiliumPodIPPools"]["default"]["ipv4"]["cidrs"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    // EKS picks 10.100.0.0/16 or 172.20.0.0/16 for Services when none is
    // given (EKS API reference, KubernetesNetworkConfigRequest.serviceIpv4Cidr).
    for eks_default in ["10.100.0.0/16", "172.20.0.0/16", "192.168.0.0/16"] {
        let r: ipnet::Ipv4Net = eks_default.parse().unwrap();
        assert!(!r.contains(&pod) && !pod.contains(&r), "{pod} vs {r}");
    }

    let seed = fixtures::seed();
    let render = RenderOptions::default();
    let refused = |o: ClusterOptions| cluster::files(&seed, &render, &o).unwrap_err();
    let mut o = pinned(CiliumRelease::V1_18);
    o.ipv4_pod_cidr = "10.100.0.0/16".parse().unwrap();
    let err = refused(o);
    assert!(matches!(err, ClusterError::Overlap { .. }), "{err}");
    assert!(
        err.to_string().contains("service range 10.100.0.0/16"),
        "{err}"
    );
    let mut o = pinned(CiliumRelease::V1_18);
    o.vpc_cidr = "10.0.0.0/8".parse().unwrap();
    assert!(refused(o).to_string().contains("VPC range 10.0.0.0/8"));
    let mut o = pinned(CiliumRelease::V1_18);
    o.ipv6_pod_cidr = Some("fd00:10:0:1::/96".parse().unwrap());
    assert!(refused(o).to_string().contains("tenant pool"));
    let mut o = pinned(CiliumRelease::V1_18);
    o.version = "1.29".into();
    assert!(matches!(refused(o), ClusterError::UnsupportedKubernetes(_)));
}

#[test]
fn node_groups_keep_pods_away_from_instance_metadata() {
    for (variant, _, files) in variants() {
        let cfg = yaml(&files["eksctl-cluster.yaml"]);
        for g in cfg["managedNodeGroups"].as_array().unwrap() {
            assert_eq!(g["disablePodIMDS"], true, "{variant} {}", g["name"]);
            assert_eq!(g["disableIMDSv1"], true, "{variant} {}", g["name"]);
        }
    }
}

#[test]
fn egress_gateway_nodes_keep_their_addresses() {
    let cfg = yaml(&variants()[0].2["eksctl-cluster.yaml"]);
    let g = cfg["managedNodeGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "egress-gateway")
        .unwrap();
    // A node added by scaling has no secondary IP and no Elastic IP.
    assert_eq!(g["minSize"], g["maxSize"]);
    assert_eq!(g["privateNetworking"], false);
}

#[test]
fn gateway_api_crds_are_installed_before_cilium_at_the_release_it_needs() {
    for (variant, release, files) in variants() {
        let setup = &files["setup.sh"];
        let line = |needle: &str| {
            setup
                .lines()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{variant}: setup.sh lacks {needle}"))
        };
        let gw = release.gateway_api();
        let crds = line(&format!(
            "kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/{gw}/standard-install.yaml"
        ));
        let helm = line("helm upgrade --install cilium");
        assert!(crds < helm, "{variant}: Gateway API CRDs after Cilium");
        assert!(setup.contains(&format!("--version {}", release.chart_version())));
        // The pinned release is one we hold, and it has what the renderer
        // emits (Gateway.spec.infrastructure exists from v1.2 on).
        let gateways =
            std::fs::read_to_string(schemas().join(format!("gateway-api/{gw}/gateways.yaml")))
                .unwrap_or_else(|e| panic!("{variant}: no schema for Gateway API {gw}: {e}"));
        assert!(gateways.contains("infrastructure:"), "{variant} {gw}");
    }
}

// ---------------------------------------------------------------- gVisor

fn installer(files: &Files) -> Vec<Value> {
    yaml_docs(&files["gvisor-installer.yaml"])
}

fn config_map_script(files: &Files, key: &str) -> String {
    installer(files)
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .unwrap()["data"][key]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn installer_pins_release_and_checksums_and_labels_the_node_when_ready() {
    let files = &variants()[0].2;
    let install = config_map_script(files, "install.sh");
    assert!(!install.contains("latest"), "{install}");
    assert!(install.contains("/gvisor/releases/release/20260817.0/$ARCH"));
    assert!(install.contains(&"ab".repeat(64)) && install.contains(&"cd".repeat(64)));
    assert!(install.contains("--proto '=https'"));
    // Label last: only a node with a working runsc gets it.
    let (k, v) = GVISOR_READY_LABEL;
    let label = install.find(&format!(r#""{k}":"{v}""#)).unwrap();
    assert!(install.find("register.sh").unwrap() < label);
    assert!(install.find("runsc --version").unwrap() < label);

    let ds = installer(files)
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "gvisor-install");
    assert_eq!(
        pod["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );

    let mut o = pinned(CiliumRelease::V1_18);
    o.gvisor.shim_sha512 = None;
    let err = cluster::files(&fixtures::seed(), &RenderOptions::default(), &o).unwrap_err();
    assert!(
        err.to_string().contains("containerd-shim-runsc-v1"),
        "{err}"
    );
    let mut o = pinned(CiliumRelease::V1_18);
    o.gvisor.release = "latest".into();
    assert!(cluster::files(&fixtures::seed(), &RenderOptions::default(), &o).is_err());
}

/// A node's config as the distribution ships it, per config version
/// (shapes from containerd docs/cri/config.md).
fn base_config(version: ContainerdConfig) -> String {
    let plugin = version.cri_runtime_plugin();
    let v = match version {
        ContainerdConfig::V2 => 2,
        ContainerdConfig::V3 => 3,
    };
    format!(
        "version = {v}\nroot = \"/var/lib/containerd\"\n\n[plugins.\"{plugin}\".containerd]\ndefault_runtime_name = \"runc\"\n\n[plugins.\"{plugin}\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n"
    )
}

fn run_register(script: &Path, conf: &Path) -> std::process::Output {
    Command::new("sh").arg(script).arg(conf).output().unwrap()
}

#[test]
fn register_script_adds_runsc_once_under_the_config_versions_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("register.sh");
    std::fs::write(&script, config_map_script(&variants()[0].2, "register.sh")).unwrap();
    for version in [ContainerdConfig::V2, ContainerdConfig::V3] {
        let conf = dir.path().join(format!("{version:?}.toml"));
        std::fs::write(&conf, base_config(version)).unwrap();
        let out = run_register(&script, &conf);
        assert!(out.status.success(), "{version:?}: {out:?}");
        let once = std::fs::read_to_string(&conf).unwrap();
        let t: toml::Table = toml::from_str(&once).unwrap();
        let runtimes = &t["plugins"][version.cri_runtime_plugin()]["containerd"]["runtimes"];
        assert_eq!(
            runtimes["runsc"]["runtime_type"].as_str(),
            Some(RUNSC_RUNTIME_TYPE)
        );
        assert!(runtimes.get("runc").is_some(), "{version:?}: runc lost");
        // The other version's plugin is not touched.
        assert_eq!(t["plugins"].as_table().unwrap().len(), 1, "{once}");

        let out = run_register(&script, &conf);
        assert!(out.status.success(), "{version:?}: {out:?}");
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            once,
            "not idempotent"
        );
    }
    // A config without a supported version is left alone, with an error.
    let conf = dir.path().join("v1.toml");
    std::fs::write(&conf, "[plugins.cri]\n").unwrap();
    let out = run_register(&script, &conf);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported containerd config version"));
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "[plugins.cri]\n");
}

#[test]
fn containerd_loads_the_config_with_runsc_registered() {
    let version = match Command::new("containerd").arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => return skip("containerd is not installed (apt-get install containerd)"),
    };
    // containerd 1.x reads config version 2, 2.x reads version 3.
    let config = if version.split_whitespace().any(|w| w.starts_with("2.")) {
        ContainerdConfig::V3
    } else {
        ContainerdConfig::V2
    };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("register.sh");
    std::fs::write(&script, config_map_script(&variants()[0].2, "register.sh")).unwrap();
    let conf = dir.path().join("config.toml");
    std::fs::write(&conf, base_config(config)).unwrap();
    assert!(run_register(&script, &conf).status.success());
    let out = Command::new("containerd")
        .arg("--config")
        .arg(&conf)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{version}: {out:?}");
    let dumped: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let runsc = &dumped["plugins"][config.cri_runtime_plugin()]["containerd"]["runtimes"]["runsc"];
    assert_eq!(
        runsc["runtime_type"].as_str(),
        Some(RUNSC_RUNTIME_TYPE),
        "{version}: {runsc}"
    );
}

/// A node for install.sh: host root, scripts, service-account files, and
/// stand-ins for `curl` (serves fixed bytes, logs API calls) and `chroot`
/// (logs what it would run on the host).
struct FakeNode {
    dir: tempfile::TempDir,
}

const FAKE_RUNSC: &str = "runsc bytes\n";
const FAKE_SHIM: &str = "shim bytes\n";

impl FakeNode {
    fn new(files: &Files) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in [
            "host/usr/local/bin",
            "host/etc/containerd",
            "scripts",
            "sa",
            "stubs",
        ] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        std::fs::write(
            p.join("host/etc/containerd/config.toml"),
            base_config(ContainerdConfig::V3),
        )
        .unwrap();
        for key in ["install.sh", "register.sh"] {
            std::fs::write(p.join("scripts").join(key), config_map_script(files, key)).unwrap();
        }
        std::fs::write(p.join("sa/token"), "tok").unwrap();
        std::fs::write(p.join("sa/ca.crt"), "ca").unwrap();
        let log = p.join("log");
        let curl = format!(
            r#"#!/bin/sh
out=""; url=""; method=GET
while [ $# -gt 0 ]; do
  case "$1" in
    --output) out=$2; shift ;;
    --request) method=$2; shift ;;
    --data|--header|--cacert|--proto) shift ;;
    https://*) url=$1 ;;
  esac
  shift
done
echo "curl $method $url" >> {log}
case "$url" in
  */runsc) printf '%s' "$FAKE_RUNSC" > "$out" ;;
  */containerd-shim-runsc-v1) printf '%s' "$FAKE_SHIM" > "$out" ;;
esac
"#,
            log = log.display()
        );
        let chroot = format!(
            "#!/bin/sh\nshift\necho \"chroot $*\" >> {}\n",
            log.display()
        );
        for (name, body) in [("curl", curl), ("chroot", chroot)] {
            let path = p.join("stubs").join(name);
            std::fs::write(&path, body).unwrap();
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(&path)
                .status()
                .unwrap();
        }
        Self { dir }
    }

    fn run(&self) -> std::process::Output {
        let p = self.dir.path();
        let path = format!(
            "{}:{}",
            p.join("stubs").display(),
            std::env::var("PATH").unwrap()
        );
        Command::new("sh")
            .arg(p.join("scripts/install.sh"))
            .env("PATH", path)
            .env("HOST_ROOT", p.join("host"))
            .env("SCRIPTS_DIR", p.join("scripts"))
            .env("SA_DIR", p.join("sa"))
            .env("INSTALL_ONCE", "1")
            .env("NODE_NAME", "node-1")
            .env("KUBERNETES_SERVICE_HOST", "10.100.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .env("FAKE_RUNSC", FAKE_RUNSC)
            .env("FAKE_SHIM", FAKE_SHIM)
            .output()
            .unwrap()
    }

    /// The log since the last call.
    fn take_log(&self) -> Vec<String> {
        let path = self.dir.path().join("log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        text.lines().map(str::to_owned).collect()
    }
}

fn sha512_hex(data: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha512::digest(data.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn render_pinned(runsc: &str, shim: &str) -> Files {
    let mut o = pinned(CiliumRelease::V1_18);
    // The script refuses a node whose `uname -m` differs from the pins'
    // architecture, which follows the instance type (Graviton: aarch64).
    if std::env::consts::ARCH == "aarch64" {
        o.instance_type = "m7g.large".into();
    }
    o.gvisor.runsc_sha512 = Some(sha512_hex(runsc));
    o.gvisor.shim_sha512 = Some(sha512_hex(shim));
    cluster::files(&fixtures::seed(), &RenderOptions::default(), &o).unwrap()
}

#[test]
fn install_script_verifies_registers_restarts_once_then_labels_and_reruns_cleanly() {
    let node = FakeNode::new(&render_pinned(FAKE_RUNSC, FAKE_SHIM));
    let out = node.run();
    assert!(out.status.success(), "{out:?}");
    let log = node.take_log();
    let patch = log
        .iter()
        .position(|l| l.starts_with("curl PATCH"))
        .unwrap();
    assert!(log[patch].ends_with("/api/v1/nodes/node-1"), "{log:?}");
    let restart = log
        .iter()
        .position(|l| l == "chroot systemctl restart containerd")
        .unwrap_or_else(|| panic!("containerd not restarted: {log:?}"));
    assert!(
        restart < patch,
        "labelled before containerd knew runsc: {log:?}"
    );
    let url = format!(
        "/gvisor/releases/release/20260817.0/{}/runsc",
        std::env::consts::ARCH
    );
    assert!(log[..patch].iter().any(|l| l.contains(&url)), "{log:?}");
    let bin = node.dir.path().join("host/usr/local/bin");
    assert_eq!(
        std::fs::read_to_string(bin.join("runsc")).unwrap(),
        FAKE_RUNSC
    );
    assert_eq!(
        std::fs::read_to_string(bin.join("containerd-shim-runsc-v1")).unwrap(),
        FAKE_SHIM
    );
    let conf =
        std::fs::read_to_string(node.dir.path().join("host/etc/containerd/config.toml")).unwrap();
    assert!(conf.contains("io.containerd.cri.v1.runtime\".containerd.runtimes.runsc]"));

    // Again: nothing downloaded, containerd left alone, the label set again.
    let out = node.run();
    assert!(out.status.success(), "{out:?}");
    let log = node.take_log();
    assert!(
        log.iter()
            .all(|l| !l.starts_with("curl GET") && !l.contains("restart")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.starts_with("curl PATCH")), "{log:?}");
}

#[test]
fn install_script_refuses_a_download_that_does_not_match_the_pin() {
    let node = FakeNode::new(&render_pinned("the real runsc\n", FAKE_SHIM));
    let out = node.run();
    assert!(!out.status.success(), "{out:?}");
    let log = node.take_log();
    assert!(log.iter().all(|l| !l.starts_with("curl PATCH")), "{log:?}");
    assert!(log.iter().all(|l| !l.starts_with("chroot")), "{log:?}");
    assert!(!node.dir.path().join("host/usr/local/bin/runsc").exists());
}
