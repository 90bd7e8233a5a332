//! The real `palisade-operator run` binary against the in-memory API server
//! on a TCP socket (with watches): leader election through a Lease,
//! controllers reacting to new objects, metrics and health on the bound
//! port, clean exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_operator::testing::FakeApi;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_palisade-operator");

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
const GV: &str = "palisade.io/v1alpha1";

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        code,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn workload(name: &str) -> Value {
    json!({"apiVersion": GV, "kind": "TenantDeployment",
           "metadata": {"name": name, "namespace": "tenant-acme"},
           "spec": {"image": "nginx:alpine", "ports": [80]}})
}

/// Runs `palisade-operator run` against `api` with `extra` arguments;
/// returns the child (killed if the test fails half-way), its stderr
/// lines and the API server's task.
async fn start(
    api: &FakeApi,
    extra: &[&str],
) -> (
    KillOnDrop,
    mpsc::Receiver<String>,
    tokio::task::JoinHandle<()>,
) {
    let (addr, server) = api.serve_tcp().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeApi::kubeconfig(addr)).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--pool",
            "fd00:1234:5678::/48",
            "--listen",
            "127.0.0.1:0",
            "--identity",
            "replica-1",
        ])
        .args(extra)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", "palisade-system")
        .env("PALISADE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let _keep = dir;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (KillOnDrop(child), rx, server)
}

/// The bound address of the health and metrics server, from the
/// structured log.
fn listen_addr(rx: &mpsc::Receiver<String>) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("no listen log line");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(l) = v["fields"]["listen"].as_str() {
            return l.to_owned();
        }
    }
}

/// The child's exit code once it exits within `within` (-1: killed by a
/// signal); fails with `what` otherwise.
async fn exit_code(child: &mut std::process::Child, within: Duration, what: &str) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        assert!(start.elapsed() < within, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_binary_leads_reconciles_serves_metrics_and_stops_on_sigterm() {
    let api = FakeApi::new();
    api.insert(
        GV,
        "tenants",
        json!({"apiVersion": GV, "kind": "Tenant", "metadata": {"name": "acme"}, "spec": {}}),
    );
    api.insert(GV, "tenantdeployments", workload("web"));
    let (mut child, rx, server) = start(&api, &["--resync", "30s", "--gc-interval", "1s"]).await;
    let listen = listen_addr(&rx);
    eventually("the claim and the rendered Deployment", || {
        !api.all(GV, "subnetclaims").is_empty()
            && api
                .get("apps/v1", "deployments", Some("tenant-acme"), "web")
                .is_some()
    })
    .await;
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "leases",
            Some("palisade-system"),
            "palisade-operator",
        )
        .expect("no Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-1");

    // A new workload reaches the controllers through the watch.
    api.insert(GV, "tenantdeployments", workload("api"));
    eventually("the second workload's Deployment", || {
        api.get("apps/v1", "deployments", Some("tenant-acme"), "api")
            .is_some()
    })
    .await;
    assert_eq!(api.all(GV, "subnetclaims").len(), 2);

    assert_eq!(http_get(&listen, "/healthz").0, 200);
    assert_eq!(http_get(&listen, "/readyz").0, 200);
    let (code, metrics) = http_get(&listen, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("palisade_operator_leader 1"), "{metrics}");
    assert!(
        metrics.contains("palisade_operator_claims_created_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_operator_reconciles_total{controller=\"tenant\"}"),
        "{metrics}"
    );

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let code = exit_code(
        &mut child.0,
        Duration::from_secs(15),
        "did not exit on SIGTERM",
    )
    .await;
    assert_eq!(code, 0);
    server.abort();
}

// Issue 14 fault 8: settings come from the ConfigMap as environment, which
// a running container never sees change: the operator exits (and is
// restarted with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_configmap_makes_the_operator_exit_for_a_restart() {
    let api = FakeApi::new();
    let cm = |reuse: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "palisade-operator", "namespace": "palisade-system"},
               "data": {"PALISADE_POOL": "fd00:1234:5678::/48", "PALISADE_REUSE_AFTER": reuse}})
    };
    api.insert("v1", "configmaps", cm("0s"));
    let (mut child, rx, server) = start(&api, &["--no-leader-election"]).await;
    // Up and watching: the health endpoint answers.
    let listen = listen_addr(&rx);
    eventually("readiness", || http_get(&listen, "/readyz").0 == 200).await;
    // An unrelated ConfigMap change does nothing; ours ends the process.
    api.insert("v1", "configmaps", cm("0s"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "exited on an unchanged ConfigMap"
    );
    api.insert("v1", "configmaps", cm("1h"));
    let code = exit_code(&mut child.0, Duration::from_secs(15), "still running").await;
    assert_ne!(code, 0);
    let log: Vec<String> = rx.try_iter().collect();
    assert!(
        log.iter()
            .any(|l| l.contains("palisade-system/palisade-operator changed")),
        "{log:?}"
    );
    server.abort();
}

// Issue 14 fault 8: a prefix change while /96 claims live is refused at
// start (a /112 could otherwise be handed out inside a live /96).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_overlaps_live_claims_of_another_size_is_refused_at_start() {
    let api = FakeApi::new();
    api.insert(
        GV,
        "subnetclaims",
        json!({"apiVersion": GV, "kind": "SubnetClaim",
               "metadata": {"name": "fd00-1234-5678---96"},
               "spec": {"subnet": "fd00:1234:5678::/96", "tenant": "acme",
                        "namespace": "tenant-acme", "deployment": "web", "workloadUid": "u"}}),
    );
    let (mut child, rx, server) =
        start(&api, &["--no-leader-election", "--prefix-len", "112"]).await;
    let code = exit_code(&mut child.0, Duration::from_secs(15), "still running").await;
    assert_ne!(code, 0);
    let log: Vec<String> = rx.iter().collect();
    assert!(
        log.iter()
            .any(|l| l.contains("fd00:1234:5678::/96") && l.contains("pool settings changed")),
        "{log:?}"
    );
    server.abort();
}
