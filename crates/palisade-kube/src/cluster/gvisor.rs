//! The gVisor installer: a DaemonSet that puts a pinned, checksummed
//! `runsc` on every node, registers it with that node's containerd, and
//! only then labels the node so that the `gvisor` RuntimeClass may schedule
//! tenant pods there.
//!
//! Where the runtime goes depends on the containerd config version:
//! containerd 2.x (EKS AL2023 nodes) reads `version = 3` and registers
//! runtimes under `io.containerd.cri.v1.runtime`; containerd 1.x reads
//! `version = 2` and `io.containerd.grpc.v1.cri` (containerd docs/cri/config.md,
//! v2.0.11 to v2.3.4; gVisor g3doc/user_guide/containerd/configuration.md,
//! release-20260817.0). The installer reads the version from the node's
//! config and appends the table for it. Both tables are generated here with
//! the `toml` crate so tests can parse them.

use super::ClusterError;
use serde_json::{Value, json};

pub use crate::common::GVISOR_READY_LABEL;

/// The containerd shim type of `runsc` (gVisor containerd configuration docs).
pub const RUNSC_RUNTIME_TYPE: &str = "io.containerd.runsc.v1";

/// Where gVisor publishes release binaries; checksums come from the user.
const RELEASE_BUCKET: &str = "https://storage.googleapis.com/gvisor/releases/release";

/// A gVisor release and the sha512 of its two binaries for the nodes'
/// architecture, taken from a source the user trusts (not from the bucket
/// the binaries come from, so a swapped binary cannot bring its own sum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GvisorPin {
    /// Release name, such as `20260817.0` (never `latest`).
    pub release: String,
    /// sha512 of `runsc`, 128 hex digits.
    pub runsc_sha512: Option<String>,
    /// sha512 of `containerd-shim-runsc-v1`, 128 hex digits.
    pub shim_sha512: Option<String>,
}

impl Default for GvisorPin {
    fn default() -> Self {
        Self {
            release: "20260817.0".into(),
            runsc_sha512: None,
            shim_sha512: None,
        }
    }
}

/// containerd's config file format generations that name the CRI plugin
/// differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerdConfig {
    /// containerd 1.x, `version = 2`.
    V2,
    /// containerd 2.x, `version = 3`.
    V3,
}

impl ContainerdConfig {
    /// The plugin that holds CRI runtimes in this version.
    pub fn cri_runtime_plugin(self) -> &'static str {
        match self {
            Self::V2 => "io.containerd.grpc.v1.cri",
            Self::V3 => "io.containerd.cri.v1.runtime",
        }
    }
}

/// The TOML table that registers `runsc`, for appending to a config file of
/// that version.
pub fn runsc_table(version: ContainerdConfig) -> String {
    let mut runsc = toml::Table::new();
    runsc.insert("runtime_type".into(), RUNSC_RUNTIME_TYPE.into());
    let doc = nest(
        &[
            "plugins",
            version.cri_runtime_plugin(),
            "containerd",
            "runtimes",
            "runsc",
        ],
        runsc,
    );
    toml::to_string(&doc).unwrap_or_default()
}

fn nest(path: &[&str], leaf: toml::Table) -> toml::Table {
    path.iter().rev().fold(leaf, |inner, key| {
        let mut t = toml::Table::new();
        t.insert((*key).into(), toml::Value::Table(inner));
        t
    })
}

fn checked_sha512(name: &str, sum: Option<&String>) -> Result<String, ClusterError> {
    let sum = sum.ok_or_else(|| ClusterError::GvisorChecksumMissing(name.into()))?;
    if sum.len() != 128 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClusterError::GvisorChecksumInvalid(name.into()));
    }
    Ok(sum.to_ascii_lowercase())
}

fn checked_release(release: &str) -> Result<(), ClusterError> {
    // Releases are named YYYYMMDD or YYYYMMDD.N.
    let (date, point) = release.split_once('.').unwrap_or((release, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if date.len() != 8 || !digits(date) || !digits(point) {
        return Err(ClusterError::GvisorRelease(release.into()));
    }
    Ok(())
}

/// `register.sh CONFIG`: appends the runsc table for the config's version
/// unless a runsc runtime is already there. Replaces the file atomically.
pub fn register_script() -> String {
    format!(
        r#"#!/bin/sh
# Registers runsc with containerd; does nothing if it already is.
set -eu
CONF=$1
VERSION=$(awk '/^[[:space:]]*\[/ {{ exit }} /^[[:space:]]*version[[:space:]]*=/ {{ gsub(/[^0-9]/, ""); print; exit }}' "$CONF")
if grep -q 'containerd\.runtimes\.runsc\]' "$CONF"; then
  echo "runsc already registered in $CONF"
  exit 0
fi
cp "$CONF" "$CONF.palisade-new"
printf '\n# Added by palisade gvisor-install.\n' >> "$CONF.palisade-new"
case "$VERSION" in
3) cat >> "$CONF.palisade-new" <<'EOF'
{v3}EOF
;;
2) cat >> "$CONF.palisade-new" <<'EOF'
{v2}EOF
;;
*) rm -f "$CONF.palisade-new"
   echo "unsupported containerd config version '$VERSION' in $CONF (need 2 or 3)" >&2
   exit 1 ;;
esac
mv "$CONF.palisade-new" "$CONF"
echo "runsc registered in $CONF (config version $VERSION)"
"#,
        v3 = runsc_table(ContainerdConfig::V3),
        v2 = runsc_table(ContainerdConfig::V2),
    )
}

fn install_script(pin: &GvisorPin, arch: &str) -> Result<String, ClusterError> {
    checked_release(&pin.release)?;
    let runsc = checked_sha512("runsc", pin.runsc_sha512.as_ref())?;
    let shim = checked_sha512("containerd-shim-runsc-v1", pin.shim_sha512.as_ref())?;
    let (label, value) = GVISOR_READY_LABEL;
    Ok(format!(
        r#"#!/bin/sh
# Installs gVisor {release} on this node, registers runsc with containerd,
# then labels the node {label}={value}. Safe to run again.
# HOST_ROOT, SCRIPTS_DIR, SA_DIR and INSTALL_ONCE exist for tests.
set -eu
HOST=${{HOST_ROOT:-/host}}
SCRIPTS=${{SCRIPTS_DIR:-/scripts}}
SA=${{SA_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}}
ARCH=$(uname -m)
if [ "$ARCH" != {arch} ]; then
  echo "node is $ARCH but the pinned checksums are for {arch}" >&2
  exit 1
fi
URL={bucket}/{release}/$ARCH
BIN=$HOST/usr/local/bin
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
install_bin() {{
  if [ -f "$BIN/$1" ] && echo "$2  $BIN/$1" | sha512sum -c - >/dev/null 2>&1; then
    echo "$1 {release} already installed"
    return
  fi
  curl --fail --silent --show-error --location --proto '=https' --tlsv1.2 \
    --output "$TMP/$1" "$URL/$1"
  echo "$2  $TMP/$1" | sha512sum -c -
  chmod 0755 "$TMP/$1"
  cp "$TMP/$1" "$BIN/.$1.new"
  mv "$BIN/.$1.new" "$BIN/$1"
}}
install_bin runsc {runsc}
install_bin containerd-shim-runsc-v1 {shim}
CONF=$HOST/etc/containerd/config.toml
BEFORE=$(sha512sum < "$CONF")
sh "$SCRIPTS/register.sh" "$CONF"
if [ "$BEFORE" != "$(sha512sum < "$CONF")" ]; then
  chroot "$HOST" systemctl restart containerd
fi
chroot "$HOST" /usr/local/bin/runsc --version
curl --fail --silent --show-error --cacert "$SA/ca.crt" \
  --header "Authorization: Bearer $(cat "$SA/token")" \
  --header 'Content-Type: application/merge-patch+json' --request PATCH \
  --data '{{"metadata":{{"labels":{{"{label}":"{value}"}}}}}}' \
  "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/nodes/$NODE_NAME" >/dev/null
echo "gVisor {release} ready on $NODE_NAME"
[ -n "${{INSTALL_ONCE:-}}" ] || while true; do sleep 3600; done
"#,
        release = pin.release,
        bucket = RELEASE_BUCKET,
    ))
}

const NAME: &str = "gvisor-install";

fn labels() -> Value {
    json!({ "app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "palisade" })
}

fn rbac() -> Vec<Value> {
    let meta = json!({ "name": NAME, "namespace": "kube-system", "labels": labels() });
    let cluster_meta = json!({ "name": format!("palisade-{NAME}"), "labels": labels() });
    vec![
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": cluster_meta,
            // The installer labels its own node once runsc works.
            "rules": [{ "apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"] }],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": cluster_meta,
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("palisade-{NAME}") },
            "subjects": [{ "kind": "ServiceAccount", "name": NAME, "namespace": "kube-system" }],
        }),
    ]
}

/// Every object of `gvisor-installer.yaml`.
pub fn installer(pin: &GvisorPin, arch: &str, image: &str) -> Result<Vec<Value>, ClusterError> {
    let mut docs = rbac();
    docs.push(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": NAME, "namespace": "kube-system", "labels": labels() },
        "data": { "install.sh": install_script(pin, arch)?, "register.sh": register_script() },
    }));
    docs.push(daemon_set(image));
    Ok(docs)
}

fn daemon_set(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": { "name": NAME, "namespace": "kube-system", "labels": labels() },
        "spec": {
            "selector": { "matchLabels": { "app.kubernetes.io/name": NAME } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": NAME } },
                "spec": {
                    "serviceAccountName": NAME,
                    "hostPID": true,
                    "tolerations": [{ "operator": "Exists" }],
                    "priorityClassName": "system-node-critical",
                    "containers": [{
                        "name": "install",
                        "image": image,
                        "command": ["/bin/sh", "/scripts/install.sh"],
                        "env": [{ "name": "NODE_NAME", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } }],
                        // Writes the host's /usr/local/bin and containerd config
                        // and restarts containerd through chroot.
                        "securityContext": { "privileged": true, "runAsUser": 0 },
                        "resources": {
                            "requests": { "cpu": "10m", "memory": "16Mi" },
                            "limits": { "cpu": "500m", "memory": "128Mi" },
                        },
                        "volumeMounts": [
                            { "name": "host", "mountPath": "/host" },
                            { "name": "scripts", "mountPath": "/scripts", "readOnly": true },
                        ],
                    }],
                    "volumes": [
                        { "name": "host", "hostPath": { "path": "/", "type": "Directory" } },
                        { "name": "scripts", "configMap": { "name": NAME } },
                    ],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runsc_table_sits_under_the_versions_cri_plugin() {
        for (v, plugin) in [
            (ContainerdConfig::V2, "io.containerd.grpc.v1.cri"),
            (ContainerdConfig::V3, "io.containerd.cri.v1.runtime"),
        ] {
            let t: toml::Table = toml::from_str(&runsc_table(v)).unwrap();
            assert_eq!(
                t["plugins"][plugin]["containerd"]["runtimes"]["runsc"]["runtime_type"].as_str(),
                Some(RUNSC_RUNTIME_TYPE),
                "{v:?}"
            );
        }
    }

    #[test]
    fn release_must_be_a_named_release_and_sums_must_be_sha512() {
        assert!(checked_release("20260817.0").is_ok());
        assert!(checked_release("20260817").is_ok());
        for bad in ["latest", "2026-08-17", "20260817.", "1.0"] {
            assert!(checked_release(bad).is_err(), "{bad}");
        }
        let short = "ab".to_string();
        assert!(checked_sha512("runsc", Some(&short)).is_err());
        assert!(checked_sha512("runsc", None).is_err());
        assert!(checked_sha512("runsc", Some(&"A".repeat(128))).is_ok());
    }
}
