//! An in-memory Kubernetes API server for tests, reachable as a
//! `kube::Client` (through `tower-test`'s mock service) or over a real TCP
//! socket (for the CLI's tests, which run the real binary with a
//! kubeconfig pointing at it).
//!
//! It implements what the operator and the CLI use, with the API server's
//! semantics that matter for correctness: names are unique per collection
//! (a second create is a 409, which is what makes subnet claims race-free),
//! label-selected lists, server-side apply as create-or-merge, merge and
//! JSON patches (a failed `test` op is a 422), the status subresource,
//! deletion that waits for finalizers (`deletionTimestamp` set, removal
//! when the last finalizer goes), owner-reference garbage collection and
//! namespace content deletion, `resourceVersion` preconditions and DELETE's
//! `preconditions.uid` (409),
//! Service cluster IPs allocated on create and immutable after (422), and
//! injected refusals ([`FakeApi::reject`], [`FakeApi::fail_lists`]) for
//! what webhooks, quotas and RBAC do. Every request is logged as
//! `METHOD path?query` so tests can assert exact request sequences.
//!
//! Where the operator's faults lived it behaves like the API server, each
//! with a test in `tests/fake_api.rs` citing the Kubernetes documentation:
//! - namespace lifecycle (the `NamespaceLifecycle` admission plugin):
//!   creating into a namespace that does not exist is a 404, into one
//!   being deleted a 403; deleting a namespace makes it `Terminating`,
//!   deletes its objects and removes it once they are gone. The built-in
//!   namespaces (`default`, `kube-system`, `kube-public`,
//!   `kube-node-lease`) and the operator's own (`palisade-system`) exist
//!   without being stored, as they do in a cluster where it is installed;
//! - server-side apply field ownership ([`ssa`]): fields a manager applied
//!   and now omits are removed, other managers' fields conflict (409)
//!   unless forced;
//! - watches resume from a `resourceVersion`; one older than the kept
//!   history of its resource ([`FakeApi::set_watch_history`], the API
//!   server's per-resource watch cache and compaction) gets a `410 Gone` (`Expired`) ERROR event, as does a watcher too slow
//!   to keep up, so clients relist. A watch without a `resourceVersion`
//!   starts with synthetic `ADDED` events for what exists.
//!
//! On request ([`FakeApi::roll_out_deployments`]) it also plays the
//! Deployment controller with pods that start at once: a Deployment's
//! status follows its generation in a change of its own, so workloads
//! become ready (the scale benchmark needs that).
//!
//! Watches are served over TCP only (the real operator binary runs against
//! it); through the mock service a watch is refused. It is not a
//! conformance fake: no field selectors, no bookmarks, lists are atomic in
//! apply.

use crate::Config;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use palisade_core::Pool;
use palisade_kube::RenderOptions;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

mod ssa;

/// (group/version, plural, namespace, name).
type Key = (String, String, Option<String>, String);

/// Namespaces a cluster always has (and the operator's own, where it is
/// installed); they exist without being stored.
const IMPLICIT_NAMESPACES: [&str; 5] = [
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "palisade-system",
];

/// Changes kept for watches to resume from, unless
/// [`FakeApi::set_watch_history`] says otherwise.
const DEFAULT_WATCH_HISTORY: usize = 10_000;

/// One change, as watches see it.
#[derive(Debug, Clone)]
struct Event {
    /// The resourceVersion the change produced.
    rv: u64,
    key: Key,
    kind: &'static str,
    obj: Value,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    log: Vec<String>,
    resource_version: u64,
    /// Plurals whose CRD is "not installed": every request is a 404.
    missing: BTreeSet<String>,
    /// Names whose next create loses a race: a competitor object appears
    /// just before, and the create gets a 409.
    steal: BTreeMap<String, Value>,
    /// (plural, name) whose writes are refused with (code, message), as an
    /// admission webhook or a quota would.
    reject: BTreeMap<(String, String), (u16, String)>,
    /// Plurals whose LIST fails with (code, message).
    list_failure: BTreeMap<String, (u16, String)>,
    /// Service cluster IPs handed out so far.
    cluster_ips: u32,
    /// Recent changes per resource (group/version, plural), oldest first,
    /// for watches that resume: the API server keeps one watch cache per
    /// resource (kubernetes/apiserver `pkg/storage/cacher`, sized per
    /// resource by `--watch-cache-sizes`), so a kind that does not change
    /// stays resumable however busy the others are.
    history: BTreeMap<(String, String), VecDeque<Event>>,
    /// How many changes `history` keeps per resource (0: the default).
    history_limit: usize,
    /// Per resource, the newest resourceVersion dropped from its history:
    /// a watch from an older one may have missed changes (410 Gone).
    compacted: BTreeMap<(String, String), u64>,
    /// Server-side apply field owners, per object.
    owners: BTreeMap<Key, ssa::Owners>,
    /// Deployments roll out as soon as their spec changes
    /// ([`FakeApi::roll_out_deployments`]).
    roll_out: bool,
}

/// The pool the operator's tests and benchmarks use: `fd00:1234:5678::/48`
/// in /96 subnets, released subnets reusable at once.
pub fn example_pool() -> Pool {
    let cidr = ipnet::Ipv6Net::new(
        std::net::Ipv6Addr::new(0xfd00, 0x1234, 0x5678, 0, 0, 0, 0, 0),
        48,
    );
    match (cidr, "96".parse()) {
        (Ok(cidr), Ok(len)) => match Pool::new(cidr, len, Duration::ZERO) {
            Ok(pool) => pool,
            Err(e) => panic!("the example pool is valid: {e}"),
        },
        _ => panic!("the example pool's literals are valid"),
    }
}

/// Operator settings for tests: [`example_pool`], default rendering,
/// garbage collection after 10 minutes every 5, resync every 10.
pub fn example_config() -> Config {
    Config {
        pool: example_pool(),
        render: RenderOptions::default(),
        gc_grace: Duration::from_secs(600),
        gc_interval: Duration::from_secs(300),
        resync: Duration::from_secs(600),
    }
}

/// The fake API server; clones share state.
#[derive(Debug, Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    /// Every change, for live watches.
    events: tokio::sync::broadcast::Sender<Event>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            events: tokio::sync::broadcast::channel(1 << 16).0,
        }
    }
}

/// A parsed request path.
#[derive(Debug)]
struct Target {
    gv: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let t = |plural: &str, namespace: Option<&str>, name: Option<&str>, status| Target {
        gv: gv.clone(),
        plural: plural.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        status,
    };
    Some(match rest {
        [p] => t(p, None, None, false),
        ["namespaces", name, "status"] => t("namespaces", None, Some(name), true),
        ["namespaces", ns, p] => t(p, Some(ns), None, false),
        ["namespaces", ns, p, name] => t(p, Some(ns), Some(name), false),
        ["namespaces", ns, p, name, "status"] => t(p, Some(ns), Some(name), true),
        [p, name] => t(p, None, Some(name), false),
        [p, name, "status"] => t(p, None, Some(name), true),
        _ => return None,
    })
}

fn status(code: u16, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": if code < 300 { "Success" } else { "Failure" },
            "message": message, "reason": reason, "code": code
        }),
    )
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(Ok(b))) = (
            bytes[i],
            s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)),
        ) {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=b,c=d` and `key` (exists) selectors.
fn matches_selector(obj: &Value, selector: &str) -> bool {
    let labels = obj.pointer("/metadata/labels");
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once("!=") {
            Some((k, v)) => labels.and_then(|l| l.get(k)).and_then(Value::as_str) != Some(v),
            None => match term.split_once('=') {
                Some((k, v)) => {
                    let v = v.trim_start_matches('=');
                    labels.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v)
                }
                None => labels.and_then(|l| l.get(term)).is_some(),
            },
        })
}

/// Recursive merge: objects merge key by key, everything else replaces.
fn deep_merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl FakeApi {
    /// An empty API server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a change for watches (called with the state locked, so
    /// events are ordered by resourceVersion).
    fn emit(&self, st: &mut State, key: &Key, kind: &'static str, obj: &Value) {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|v| v.parse().ok())
            .unwrap_or(st.resource_version);
        let event = Event {
            rv,
            key: key.clone(),
            kind,
            obj: obj.clone(),
        };
        let resource = (key.0.clone(), key.1.clone());
        st.history
            .entry(resource)
            .or_default()
            .push_back(event.clone());
        Self::compact(st);
        // No watcher: nobody to tell.
        let _ = self.events.send(event);
    }

    /// Keeps only the last `events` changes for watches to resume from, as
    /// the API server's watch cache and etcd compaction do; a watch from an
    /// older resourceVersion then gets `410 Gone`.
    pub fn set_watch_history(&self, events: usize) {
        let mut st = self.lock();
        st.history_limit = events.max(1);
        Self::compact(&mut st);
    }

    /// Drops each resource's changes beyond the kept history.
    fn compact(st: &mut State) {
        let limit = match st.history_limit {
            0 => DEFAULT_WATCH_HISTORY,
            n => n,
        };
        let State {
            history, compacted, ..
        } = st;
        for (resource, events) in history.iter_mut() {
            while events.len() > limit {
                if let Some(old) = events.pop_front() {
                    compacted.insert(resource.clone(), old.rv);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// From now on every Deployment rolls out as soon as it is created or
    /// its spec changes, as the Deployment controller and the kubelet would
    /// make it with pods that start at once: a second change (its own
    /// resourceVersion, a MODIFIED event) writes `status` with
    /// `observedGeneration` = `metadata.generation` and `replicas`,
    /// `updatedReplicas`, `readyReplicas` and `availableReplicas` =
    /// `spec.replicas` (default 1), the fields kstatus and `kubectl rollout
    /// status` read (Kubernetes API reference, `DeploymentStatus`:
    /// "observedGeneration: The generation observed by the deployment
    /// controller", "updatedReplicas: ... pods targeted by this deployment
    /// that have the desired template spec"). Without it a Deployment
    /// never gets a status, as in a cluster without controller-manager,
    /// and an operator that polls until its workloads are ready polls
    /// forever (the scale benchmark needs workloads that come up).
    pub fn roll_out_deployments(&self) {
        self.lock().roll_out = true;
    }

    /// The Deployment controller's status write after a change of `k`
    /// (see [`FakeApi::roll_out_deployments`]).
    fn roll_out(&self, st: &mut State, k: &Key) {
        if !st.roll_out || k.0 != "apps/v1" || k.1 != "deployments" {
            return;
        }
        let Some(mut obj) = st.objects.get(k).cloned() else {
            return;
        };
        let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
        let seen = obj
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64);
        if seen == generation || obj.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let replicas = obj
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        if let Some(m) = obj.as_object_mut() {
            m.insert(
                "status".into(),
                json!({"observedGeneration": generation, "replicas": replicas,
                       "updatedReplicas": replicas, "readyReplicas": replicas,
                       "availableReplicas": replicas}),
            );
        }
        Self::bump(st, &mut obj, false);
        self.emit(st, k, "MODIFIED", &obj);
        st.objects.insert(k.clone(), obj);
    }

    /// Makes every request for `plural` answer 404, as when its CRD is not
    /// installed.
    pub fn without_kind(&self, plural: &str) {
        self.lock().missing.insert(plural.to_owned());
    }

    /// The next create of an object named `name` loses a race: `winner`
    /// is stored first, and the create gets a 409.
    pub fn steal_on_create(&self, name: &str, winner: Value) {
        self.lock().steal.insert(name.to_owned(), winner);
    }

    /// Refuses every write (create, patch, delete) of the object `plural`
    /// `name` with `code` and `message` until [`FakeApi::accept`].
    pub fn reject(&self, plural: &str, name: &str, code: u16, message: &str) {
        self.lock().reject.insert(
            (plural.to_owned(), name.to_owned()),
            (code, message.to_owned()),
        );
    }

    /// Lifts a [`FakeApi::reject`].
    pub fn accept(&self, plural: &str, name: &str) {
        self.lock()
            .reject
            .remove(&(plural.to_owned(), name.to_owned()));
    }

    /// Makes every LIST of `plural` fail with `code` (e.g. 403 when RBAC
    /// lacks the verb, 500 when etcd times out); `None` lifts it.
    pub fn fail_lists(&self, plural: &str, failure: Option<(u16, &str)>) {
        let mut st = self.lock();
        match failure {
            Some((code, msg)) => st
                .list_failure
                .insert(plural.to_owned(), (code, msg.to_owned())),
            None => st.list_failure.remove(plural),
        };
    }

    /// Deletes an object as the API server does on a DELETE request
    /// (finalizers set `deletionTimestamp`; removal collects dependents),
    /// without logging a request: what a user or another controller does.
    pub fn delete(&self, gv: &str, plural: &str, namespace: Option<&str>, name: &str) {
        let mut st = self.lock();
        let key = (
            gv.to_owned(),
            plural.to_owned(),
            namespace.map(str::to_owned),
            name.to_owned(),
        );
        self.delete_key(&mut st, &key);
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Requests that change state (everything but GET).
    pub fn writes(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| !l.starts_with("GET "))
            .collect()
    }

    /// Stores `obj` directly (no request logged). `gv` is `apps/v1` or `v1`.
    pub fn insert(&self, gv: &str, plural: &str, obj: Value) {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut st = self.lock();
        let mut obj = Self::stamp_new(&mut st, obj);
        let target = Target {
            gv: gv.to_owned(),
            plural: plural.to_owned(),
            namespace: ns.clone(),
            name: Some(name.clone()),
            status: false,
        };
        Self::defaults_on_create(&mut st, &target, &mut obj);
        let key = (gv.to_owned(), plural.to_owned(), ns, name);
        let kind = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.emit(&mut st, &key, kind, &obj);
        st.objects.insert(key.clone(), obj);
        self.roll_out(&mut st, &key);
    }

    /// Stores a `Tenant` named `name` with an empty spec.
    pub fn add_tenant(&self, name: &str) {
        self.insert(
            crate::crd::API_VERSION,
            "tenants",
            json!({"apiVersion": crate::crd::API_VERSION, "kind": "Tenant",
                   "metadata": {"name": name}, "spec": {}}),
        );
    }

    /// Stores a `TenantDeployment` `name` of `tenant` (and the tenant, if
    /// missing) with `spec`.
    pub fn add_workload(&self, tenant: &str, name: &str, spec: Value) {
        if self
            .get(crate::crd::API_VERSION, "tenants", None, tenant)
            .is_none()
        {
            self.add_tenant(tenant);
        }
        self.insert(
            crate::crd::API_VERSION,
            "tenantdeployments",
            json!({"apiVersion": crate::crd::API_VERSION, "kind": "TenantDeployment",
                   "metadata": {"name": name, "namespace": format!("tenant-{tenant}")},
                   "spec": spec}),
        );
    }

    /// Stores a running pod of `tenant`'s workload `deployment` with the
    /// address `ip`, as its ReplicaSet would have created it.
    pub fn add_pod(&self, tenant: &str, deployment: &str, name: &str, ip: &str) {
        self.insert(
            "v1",
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": format!("tenant-{tenant}"),
                                "labels": {"palisade.io/deployment": deployment,
                                           "palisade.io/tenant": tenant}},
                   "spec": {"containers": [{"name": "app", "image": "nginx"}]},
                   "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}),
        );
    }

    /// The stored object, if any.
    pub fn get(
        &self,
        gv: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.lock()
            .objects
            .get(&(
                gv.to_owned(),
                plural.to_owned(),
                namespace.map(str::to_owned),
                name.to_owned(),
            ))
            .cloned()
    }

    /// How many stored objects of a kind satisfy `f` (without copying
    /// them: benchmarks poll this while the operator works).
    pub fn count(&self, gv: &str, plural: &str, f: impl Fn(&Value) -> bool) -> usize {
        let from: Key = (gv.to_owned(), plural.to_owned(), None, String::new());
        self.lock()
            .objects
            .range(from..)
            .take_while(|((g, p, _, _), _)| g == gv && p == plural)
            .filter(|(_, v)| f(v))
            .count()
    }

    /// Every stored object of a kind.
    pub fn all(&self, gv: &str, plural: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((g, p, _, _), _)| g == gv && p == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Deletes `k` as a DELETE request does: an object with finalizers
    /// only gets its `deletionTimestamp`; one without is removed. A
    /// namespace is terminated instead ([`FakeApi::terminate_namespace`]).
    fn delete_key(&self, st: &mut State, k: &Key) -> Option<Value> {
        if k.0 == "v1" && k.1 == "namespaces" {
            return self.terminate_namespace(st, &k.3);
        }
        let mut obj = st.objects.get(k).cloned()?;
        let has_finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if !has_finalizers {
            self.remove(st, k);
            return Some(obj);
        }
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            }
            Self::bump(st, &mut obj, false);
            self.emit(st, k, "MODIFIED", &obj);
            st.objects.insert(k.clone(), obj.clone());
        }
        Some(obj)
    }

    /// Deleting a namespace, as the API server and the namespace controller
    /// do it (<https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/>,
    /// "Terminating"): it gets a `deletionTimestamp` and `status.phase:
    /// Terminating`, every object in it is deleted (finalizers holding
    /// theirs), and the namespace goes once it is empty.
    fn terminate_namespace(&self, st: &mut State, ns: &str) -> Option<Value> {
        let k: Key = ("v1".into(), "namespaces".into(), None, ns.to_owned());
        let mut obj = st.objects.get(&k).cloned()?;
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            }
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), json!({"phase": "Terminating"}));
            }
            Self::bump(st, &mut obj, false);
            self.emit(st, &k, "MODIFIED", &obj);
            st.objects.insert(k.clone(), obj.clone());
        }
        let contents: Vec<Key> = st
            .objects
            .keys()
            .filter(|(_, _, n, _)| n.as_deref() == Some(ns))
            .cloned()
            .collect();
        for c in contents {
            self.delete_key(st, &c);
        }
        self.finish_namespace(st, ns);
        Some(obj)
    }

    /// Removes a terminating namespace once nothing is left in it.
    fn finish_namespace(&self, st: &mut State, ns: &str) {
        let k: Key = ("v1".into(), "namespaces".into(), None, ns.to_owned());
        let terminating = st
            .objects
            .get(&k)
            .is_some_and(|o| o.pointer("/metadata/deletionTimestamp").is_some());
        let held = st.objects.get(&k).is_some_and(|o| {
            o.pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty())
        });
        let empty = !st
            .objects
            .keys()
            .any(|(_, _, n, _)| n.as_deref() == Some(ns));
        if terminating && !held && empty {
            self.remove(st, &k);
        }
    }

    /// The `NamespaceLifecycle` admission plugin's check on a create in
    /// `ns` (<https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#namespacelifecycle>):
    /// "a Namespace that is undergoing termination cannot have new objects
    /// created in it", and requests in a non-existent Namespace are
    /// rejected.
    fn namespace_refusal(st: &State, t: &Target, name: &str) -> Option<(StatusCode, Value)> {
        let ns = t.namespace.as_deref()?;
        let k: Key = ("v1".into(), "namespaces".into(), None, ns.to_owned());
        match st.objects.get(&k) {
            None if IMPLICIT_NAMESPACES.contains(&ns) => None,
            None => Some(status(
                404,
                "NotFound",
                &format!("namespaces {ns:?} not found"),
            )),
            Some(o) if o.pointer("/metadata/deletionTimestamp").is_some() => Some(status(
                403,
                "Forbidden",
                &format!(
                    "{} {name:?} is forbidden: unable to create new content in namespace {ns} \
                     because it is being terminated",
                    t.plural
                ),
            )),
            Some(_) => None,
        }
    }

    /// Removes `k` for good, then what the garbage collector and the
    /// namespace controller remove after it: objects whose owners
    /// (`ownerReferences`) are all gone, and everything in a removed
    /// namespace. Kubernetes does this asynchronously (background
    /// propagation, <https://kubernetes.io/docs/concepts/architecture/garbage-collection/>);
    /// here it happens before the request returns, finalizers still
    /// holding each dependent.
    fn remove(&self, st: &mut State, k: &Key) {
        let Some(mut obj) = st.objects.remove(k) else {
            return;
        };
        st.owners.remove(k);
        // A deletion is a change: its event carries a new resourceVersion.
        Self::bump(st, &mut obj, false);
        self.emit(st, k, "DELETED", &obj);
        let live: BTreeSet<String> = st
            .objects
            .values()
            .filter_map(|v| v.pointer("/metadata/uid").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        let removed_ns = (k.0 == "v1" && k.1 == "namespaces").then(|| k.3.clone());
        let dependents: Vec<Key> = st
            .objects
            .iter()
            .filter(|((_, _, ns, _), v)| {
                let owners: Vec<&str> = v
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o.get("uid").and_then(Value::as_str))
                    .collect();
                let orphaned = !owners.is_empty() && owners.iter().all(|u| !live.contains(*u));
                orphaned || (removed_ns.is_some() && ns == &removed_ns)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for d in dependents {
            self.delete_key(st, &d);
        }
        if let Some(ns) = &k.2 {
            self.finish_namespace(st, ns);
        }
    }

    /// An apply that would change fields other managers own, unforced
    /// (<https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts>).
    fn apply_conflict(clash: &[(String, String)]) -> (StatusCode, Value) {
        let list: Vec<String> = clash
            .iter()
            .map(|(m, f)| format!("conflict with {m:?}: {}", f.replace('/', ".")))
            .collect();
        status(
            409,
            "Conflict",
            &format!(
                "Apply failed with {} conflict(s): {}",
                clash.len(),
                list.join("; ")
            ),
        )
    }

    /// The API server's checks on an update of `old` to `new`: a stale
    /// `resourceVersion` precondition is a 409, a changed Service
    /// `clusterIP` a 422 (validateUpgradeDowngradeClusterIPs in
    /// kubernetes/pkg/apis/core/validation: "may not change once set").
    fn check_update(
        t: &Target,
        name: &str,
        old: &Value,
        new: &Value,
        precondition: Option<&str>,
    ) -> Result<(), (StatusCode, Value)> {
        let current = old
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        if precondition.is_some_and(|rv| Some(rv) != current) {
            return Err(status(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
                     please apply your changes to the latest version and try again",
                    t.plural
                ),
            ));
        }
        if t.gv == "v1" && t.plural == "services" && !t.status {
            let ip = |v: &Value| {
                v.pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            if let (Some(was), now) = (ip(old), ip(new))
                && now.as_deref() != Some(was.as_str())
            {
                return Err(status(
                    422,
                    "Invalid",
                    &format!(
                        "Service {name:?} is invalid: spec.clusterIPs[0]: Invalid value: \
                         []string{{{:?}}}: may not change once set",
                        now.unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What the API server fills in on create: a Service's cluster IP.
    fn defaults_on_create(st: &mut State, t: &Target, obj: &mut Value) {
        if t.gv == "v1"
            && t.plural == "services"
            && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
            && !spec.contains_key("clusterIP")
        {
            st.cluster_ips += 1;
            let n = st.cluster_ips;
            spec.insert(
                "clusterIP".into(),
                json!(format!("10.96.{}.{}", n / 250, n % 250 + 1)),
            );
        }
    }

    fn stamp_new(st: &mut State, mut obj: Value) -> Value {
        st.resource_version += 1;
        let rv = st.resource_version;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.entry("uid")
                .or_insert_with(|| json!(format!("uid-{rv}")));
            meta.entry("creationTimestamp")
                .or_insert_with(|| json!(now_rfc3339()));
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            meta.entry("generation").or_insert_with(|| json!(1));
        }
        obj
    }

    fn bump(st: &mut State, obj: &mut Value, spec_changed: bool) {
        st.resource_version += 1;
        let rv = st.resource_version;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            if spec_changed {
                let g = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
                meta.insert("generation".into(), json!(g + 1));
            }
        }
    }

    /// A DELETE's `DeleteOptions.preconditions` (`uid`,
    /// `resourceVersion`) that `obj` does not meet: a 409 Conflict, as the
    /// API server's storage answers ("Precondition failed: UID in
    /// precondition: ..., UID in object meta: ...", k8s.io/apiserver
    /// `pkg/storage/etcd3/store.go` `checkPreconditions`).
    fn delete_refusal(obj: &Value, options: &Value) -> Option<(StatusCode, Value)> {
        let pre = options.get("preconditions")?;
        for (field, at) in [
            ("uid", "/metadata/uid"),
            ("resourceVersion", "/metadata/resourceVersion"),
        ] {
            let (Some(want), have) = (pre.get(field).and_then(Value::as_str), obj.pointer(at))
            else {
                continue;
            };
            if have.and_then(Value::as_str) != Some(want) {
                return Some(status(
                    409,
                    "Conflict",
                    &format!(
                        "Precondition failed: {field} in precondition: {want}, {field} in object meta: {}",
                        have.and_then(Value::as_str).unwrap_or_default()
                    ),
                ));
            }
        }
        None
    }

    /// Answers one request.
    pub fn handle(
        &self,
        method: &Method,
        uri: &http::Uri,
        content_type: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let mut st = self.lock();
        st.log.push(format!("{method} {uri}"));
        let Some(t) = parse_path(uri.path()) else {
            return status(404, "NotFound", "unknown path");
        };
        if st.missing.contains(&t.plural) {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        let query = uri.query().unwrap_or_default();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return status(400, "BadRequest", &e.to_string()),
            }
        };
        let target_name = t.name.clone().or_else(|| {
            body.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        if *method != Method::GET
            && let Some((code, msg)) = target_name
                .and_then(|n| st.reject.get(&(t.plural.clone(), n)))
                .cloned()
        {
            return status(code, "Forbidden", &msg);
        }
        let key = |name: &str| {
            (
                t.gv.clone(),
                t.plural.clone(),
                t.namespace.clone(),
                name.to_owned(),
            )
        };
        match (method, &t.name) {
            (&Method::GET, None) => {
                if query_param(query, "watch").is_some_and(|w| w == "true" || w == "1") {
                    return status(
                        405,
                        "MethodNotAllowed",
                        "the fake API server does not watch",
                    );
                }
                if let Some((code, msg)) = st.list_failure.get(&t.plural).cloned() {
                    return status(code, "Forbidden", &msg);
                }
                let selector = query_param(query, "labelSelector").unwrap_or_default();
                // Keys sort by (group/version, plural, namespace, name):
                // a collection is one contiguous range.
                let from = (
                    t.gv.clone(),
                    t.plural.clone(),
                    t.namespace.clone(),
                    String::new(),
                );
                let items: Vec<Value> = st
                    .objects
                    .range(from..)
                    .take_while(|((g, p, ns, _), _)| {
                        g == &t.gv
                            && p == &t.plural
                            && (t.namespace.is_none() || ns == &t.namespace)
                    })
                    .map(|(_, v)| v)
                    .filter(|v| matches_selector(v, &selector))
                    .cloned()
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": st.resource_version.to_string()},
                           "items": items}),
                )
            }
            (&Method::GET, Some(name)) => match st.objects.get(&key(name)) {
                Some(v) => (StatusCode::OK, v.clone()),
                None => status(404, "NotFound", &format!("{} {name:?} not found", t.plural)),
            },
            (&Method::POST, None) => {
                let name = body
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if name.is_empty() {
                    return status(422, "Invalid", "metadata.name is required");
                }
                if let Some(winner) = st.steal.remove(&name) {
                    let winner = Self::stamp_new(&mut st, winner);
                    self.emit(&mut st, &key(&name), "ADDED", &winner);
                    st.objects.insert(key(&name), winner);
                }
                if st.objects.contains_key(&key(&name)) {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("{} {name:?} already exists", t.plural),
                    );
                }
                if let Some(refused) = Self::namespace_refusal(&st, &t, &name) {
                    return refused;
                }
                let mut obj = Self::stamp_new(&mut st, body);
                Self::defaults_on_create(&mut st, &t, &mut obj);
                if let (Some(ns), Some(meta)) = (
                    &t.namespace,
                    obj.get_mut("metadata").and_then(Value::as_object_mut),
                ) {
                    meta.insert("namespace".into(), json!(ns));
                }
                self.emit(&mut st, &key(&name), "ADDED", &obj);
                st.objects.insert(key(&name), obj.clone());
                self.roll_out(&mut st, &key(&name));
                (StatusCode::CREATED, obj)
            }
            (&Method::PATCH, Some(name)) => {
                let k = key(name);
                let existing = st.objects.get(&k).cloned();
                let apply = content_type.starts_with("application/apply-patch");
                let manager = query_param(query, "fieldManager").unwrap_or_default();
                let force = query_param(query, "force").is_some_and(|f| f == "true");
                let fields = apply.then(|| ssa::applied_fields(&body, t.status));
                let mut obj = match (existing, content_type) {
                    (None, ct) if ct.starts_with("application/apply-patch") && !t.status => {
                        if let Some(refused) = Self::namespace_refusal(&st, &t, name) {
                            return refused;
                        }
                        if let Some(fields) = fields {
                            ssa::record(
                                st.owners.entry(k.clone()).or_default(),
                                &manager,
                                fields,
                                force,
                            );
                        }
                        let mut obj = Self::stamp_new(&mut st, body);
                        Self::defaults_on_create(&mut st, &t, &mut obj);
                        if let (Some(ns), Some(meta)) = (
                            &t.namespace,
                            obj.get_mut("metadata").and_then(Value::as_object_mut),
                        ) {
                            meta.insert("namespace".into(), json!(ns));
                        }
                        self.emit(&mut st, &k, "ADDED", &obj);
                        st.objects.insert(k.clone(), obj.clone());
                        self.roll_out(&mut st, &k);
                        return (StatusCode::CREATED, obj);
                    }
                    (None, _) => {
                        return status(
                            404,
                            "NotFound",
                            &format!("{} {name:?} not found", t.plural),
                        );
                    }
                    (Some(obj), _) => obj,
                };
                let old = obj.clone();
                let precondition = if content_type.starts_with("application/json-patch") {
                    None
                } else {
                    body.pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                let before_spec = obj.get("spec").cloned();
                if let Some(fields) = &fields {
                    let owners = st.owners.get(&k).cloned().unwrap_or_default();
                    let clash = ssa::conflicts(&owners, &manager, fields, &obj, &body);
                    if !force && !clash.is_empty() {
                        return Self::apply_conflict(&clash);
                    }
                    for gone in ssa::released(&owners, &manager, fields) {
                        ssa::remove_field(&mut obj, &gone);
                    }
                }
                if t.status {
                    let mut s = obj.get("status").cloned().unwrap_or(json!({}));
                    let patch = body.get("status").cloned().unwrap_or(Value::Null);
                    if content_type.starts_with("application/merge-patch") {
                        json_patch::merge(&mut s, &patch);
                    } else {
                        deep_merge(&mut s, &patch);
                    }
                    if let Some(m) = obj.as_object_mut() {
                        m.insert("status".into(), s);
                    }
                } else if content_type.starts_with("application/json-patch") {
                    let patch: json_patch::Patch =
                        match serde_json::from_value(null_tests_of_missing_paths(&obj, body)) {
                            Ok(p) => p,
                            Err(e) => return status(400, "BadRequest", &e.to_string()),
                        };
                    if let Err(e) = json_patch::patch(&mut obj, &patch) {
                        return status(422, "Invalid", &e.to_string());
                    }
                } else if content_type.starts_with("application/merge-patch") {
                    json_patch::merge(&mut obj, &body);
                } else {
                    deep_merge(&mut obj, &body);
                }
                if let Err(refused) =
                    Self::check_update(&t, name, &old, &obj, precondition.as_deref())
                {
                    return refused;
                }
                if let Some(fields) = fields {
                    ssa::record(
                        st.owners.entry(k.clone()).or_default(),
                        &manager,
                        fields,
                        force,
                    );
                }
                let spec_changed = obj.get("spec") != before_spec.as_ref();
                Self::bump(&mut st, &mut obj, spec_changed);
                let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
                let no_finalizers = obj
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
                if deleting && no_finalizers {
                    st.objects.insert(k.clone(), obj.clone());
                    self.remove(&mut st, &k);
                } else {
                    self.emit(&mut st, &k, "MODIFIED", &obj);
                    st.objects.insert(k.clone(), obj.clone());
                    self.roll_out(&mut st, &k);
                }
                (StatusCode::OK, obj)
            }
            (&Method::DELETE, Some(name)) => {
                let current = st.objects.get(&key(name));
                if let Some(refusal) = current.and_then(|o| Self::delete_refusal(o, &body)) {
                    return refusal;
                }
                match self.delete_key(&mut st, &key(name)) {
                    Some(obj) => (StatusCode::OK, obj),
                    None => status(404, "NotFound", &format!("{} {name:?} not found", t.plural)),
                }
            }
            _ => status(
                405,
                "MethodNotAllowed",
                "not supported by the fake API server",
            ),
        }
    }

    /// For a watch request (`?watch=true`), the stream of its events as
    /// JSON lines (<https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>):
    /// from `resourceVersion` on, replayed from the kept history; without
    /// one (or `0`), synthetic `ADDED` events for what exists, then the
    /// changes. A `resourceVersion` older than the history, or a watcher
    /// that falls too far behind, gets an `ERROR` event with a `410 Gone`
    /// Status (reason `Expired`) and the stream ends: "clients must handle
    /// the case by recognizing the status code 410 Gone, clearing their
    /// local cache, performing a new get or list operation".
    #[allow(clippy::type_complexity)]
    fn watch(
        &self,
        uri: &http::Uri,
    ) -> Option<
        std::pin::Pin<
            Box<
                dyn futures::Stream<
                        Item = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
                    > + Send,
            >,
        >,
    > {
        use futures::StreamExt;
        let query = uri.query().unwrap_or_default();
        if !query_param(query, "watch").is_some_and(|w| w == "true" || w == "1") {
            return None;
        }
        let t = parse_path(uri.path())?;
        let selector = query_param(query, "labelSelector").unwrap_or_default();
        let from = query_param(query, "resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|rv| *rv > 0);
        let resource = (t.gv.clone(), t.plural.clone());
        let hit = move |e: &Event| {
            let (gv, plural, ns, _) = &e.key;
            gv == &t.gv
                && plural == &t.plural
                && (t.namespace.is_none() || ns == &t.namespace)
                && matches_selector(&e.obj, &selector)
        };
        // Under the lock: the replay and the subscription meet without a
        // gap or an overlap, since changes are emitted under it too.
        let mut st = self.lock();
        st.log.push(format!("GET {uri}"));
        let compacted = st.compacted.get(&resource).copied().unwrap_or(0);
        let start: Vec<Event> = match from {
            Some(rv) if rv < compacted => {
                let gone = expired(rv, compacted);
                return Some(Box::pin(futures::stream::iter([Ok(frame(&gone))])));
            }
            Some(rv) => st
                .history
                .get(&resource)
                .into_iter()
                .flatten()
                .filter(|e| e.rv > rv)
                .cloned()
                .collect(),
            None => st
                .objects
                .iter()
                .map(|(key, obj)| Event {
                    rv: 0,
                    key: key.clone(),
                    kind: "ADDED",
                    obj: obj.clone(),
                })
                .collect(),
        };
        let live = live_events(self.events.subscribe());
        drop(st);
        let line = |e: Event| json!({"type": e.kind, "object": e.obj});
        let replay = futures::stream::iter(start.into_iter().filter(hit.clone()).map(line));
        let live = live.filter_map(move |e| {
            std::future::ready(match e {
                Ok(e) => hit(&e).then(|| line(e)),
                Err(lagged_at) => Some(expired(lagged_at, lagged_at)),
            })
        });
        Some(Box::pin(replay.chain(live).map(|v| Ok(frame(&v)))))
    }

    /// A `kube::Client` talking to this server through `tower-test`'s
    /// mock service. Needs a tokio runtime.
    pub fn client(&self) -> kube::Client {
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let ct = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let (code, json) = api.handle(&parts.method, &parts.uri, &ct, &bytes);
                let response = Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(json.to_string().into_bytes()));
                if let Ok(r) = response {
                    send.send_response(r);
                }
            }
        });
        kube::Client::new(service, "default")
    }

    /// Serves the API over HTTP on `127.0.0.1` (an ephemeral port) until
    /// the task is aborted.
    pub async fn serve_tcp(&self) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        use http_body_util::{BodyExt, Full, StreamBody};
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let api = self.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let api = api.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let ct = parts
                                .headers
                                .get(http::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            if let Some(stream) = (parts.method == Method::GET)
                                .then(|| api.watch(&parts.uri))
                                .flatten()
                            {
                                let mut resp =
                                    Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
                                resp.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/json"),
                                );
                                return Ok::<_, std::convert::Infallible>(resp);
                            }
                            let (code, json) = api.handle(&parts.method, &parts.uri, &ct, &bytes);
                            let mut resp = Response::new(BodyExt::boxed_unsync(Full::new(
                                Bytes::from(json.to_string()),
                            )));
                            *resp.status_mut() = code;
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Ok((addr, task))
    }

    /// A client of the server [`FakeApi::serve_tcp`] started at `addr`,
    /// over a real socket, as the operator binary's would be.
    pub fn tcp_client(
        addr: SocketAddr,
    ) -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
        let url: http::Uri = format!("http://{addr}").parse()?;
        Ok(kube::Client::try_from(kube::Config::new(url))?)
    }

    /// A kubeconfig for a server at `addr` (plain HTTP, no credentials).
    pub fn kubeconfig(addr: SocketAddr) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        )
    }
}

/// The API server's JSON patch (evanphx/json-patch, `Patch.test`) lets a
/// `test` of a missing path against `null` pass (a missing value equals
/// null), which kube-runtime's finalizer helper relies on
/// (`test /metadata/finalizers == null` before adding the first one); the
/// json-patch crate fails it, so such tests are dropped before applying.
fn null_tests_of_missing_paths(obj: &Value, mut patch: Value) -> Value {
    if let Some(ops) = patch.as_array_mut() {
        ops.retain(|op| {
            let null_test = op.get("op").and_then(Value::as_str) == Some("test")
                && op.get("value").is_none_or(Value::is_null);
            let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
            !(null_test && obj.pointer(path).is_none_or(Value::is_null))
        });
    }
    patch
}

/// One watch event as a chunk of the response (a JSON line).
fn frame(event: &Value) -> hyper::body::Frame<Bytes> {
    let mut line = event.to_string();
    line.push('\n');
    hyper::body::Frame::data(Bytes::from(line))
}

/// The ERROR event of a watch whose `resourceVersion` is no longer
/// available: a Status with code 410, reason `Expired`.
fn expired(rv: u64, oldest: u64) -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {rv} ({oldest})"),
        "reason": "Expired", "code": 410}})
}

/// Live events; a receiver that lagged behind the channel gets one
/// `Err` (the last resourceVersion it saw) and the stream ends, as the API
/// server closes a watch with 410 rather than skip events.
fn live_events(
    rx: tokio::sync::broadcast::Receiver<Event>,
) -> impl futures::Stream<Item = Result<Event, u64>> + Send {
    futures::stream::unfold(Some((rx, 0u64)), |state| async move {
        let (mut rx, seen) = state?;
        match rx.recv().await {
            Ok(e) => {
                let rv = e.rv;
                Some((Ok(e), Some((rx, rv))))
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some((Err(seen), None)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}
