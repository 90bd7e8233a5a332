//! The in-memory API server on a real socket, a kubeconfig pointing at it,
//! the real `palisade --store kubernetes` binary against it, and the
//! operator's reconcile run in-process in between, as it would in a
//! cluster. Shared by the CLI's and the dashboard's cluster tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use palisade_operator::crd::{Tenant, TenantDeployment};
use palisade_operator::kube::Api;
use palisade_operator::reconcile::{self, Ctx};
use palisade_operator::testing::FakeApi;
use serde_json::{Value, json};
use std::path::PathBuf;

pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");
pub const GV: &str = "palisade.io/v1alpha1";

pub struct Cluster {
    pub api: FakeApi,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An empty cluster: no operator config, no CRD objects.
pub async fn cluster() -> Cluster {
    let api = FakeApi::new();
    let (addr, server) = api.serve_tcp().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeApi::kubeconfig(addr)).unwrap();
    Cluster {
        api,
        kubeconfig,
        dir,
        server,
    }
}

/// The operator's ConfigMap (the pool `palisade init` gives the SQLite
/// store in these tests), as deploy/ installs it, and the gateways'
/// namespace of the platform.
pub fn operator_config(api: &FakeApi) {
    api.insert(
        "v1",
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "palisade-gateways"}}),
    );
    api.insert(
        "v1",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "palisade-operator", "namespace": "palisade-system"},
               "data": {"PALISADE_POOL": "fd00:1234:5678::/48", "PALISADE_PREFIX_LEN": "96"}}),
    );
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `palisade --store kubernetes args...` against `c`, off the runtime.
pub async fn palisade(c: &Cluster, args: &[&str]) -> Out {
    let kubeconfig = c.kubeconfig.clone();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(BIN)
            .arg("--store")
            .arg("kubernetes")
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// The operator's reconcile context over `api`.
pub fn operator(api: &FakeApi) -> Ctx {
    Ctx::new(api.client(), palisade_operator::testing::example_config())
}

/// One pass of both controllers over everything, as the watches would
/// trigger them.
pub async fn reconcile_all(ctx: &Ctx) {
    let ws = Api::<TenantDeployment>::all(ctx.client.clone())
        .list(&Default::default())
        .await
        .unwrap();
    for w in ws.items {
        reconcile::reconcile_workload(&w, ctx).await.unwrap();
    }
    let ts = Api::<Tenant>::all(ctx.client.clone())
        .list(&Default::default())
        .await
        .unwrap();
    for t in ts.items {
        reconcile::reconcile_tenant(&t, ctx).await.unwrap();
    }
}

/// Drops what only one store knows: creation times (two runs), the
/// operator's readiness report (the cluster's), and the egress-proxy port
/// (SQLite assigns it at once, the operator later).
pub fn comparable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in ["created_at", "ready", "ready_replicas", "proxy_port"] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}
