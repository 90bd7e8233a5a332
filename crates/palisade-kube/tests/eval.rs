//! The Cilium policy evaluator against documented outcomes, the seed's
//! hand-written policies, and the policy model through the renderer.
//!
//! Each documentation test quotes a policy from Cilium's documentation or
//! its `examples/policies` tree (the files the docs include) and asserts
//! the outcome the page states.

mod support;

use palisade_kube::eval::{
    ContainerPort, DecisionKind, Endpoint, EvalOptions, Identity, PolicySet, Proto, Unsupported,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn load(yaml: &str) -> PolicySet {
    let (set, unsupported) = PolicySet::from_objects(&docs(yaml));
    assert!(
        unsupported.is_empty(),
        "unexpected reports: {unsupported:?}"
    );
    set
}

fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> Endpoint {
    let l: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Endpoint::pod(ns, name, l)
}

fn with_addr(mut ep: Endpoint, addr: &str) -> Endpoint {
    ep.addresses = addr.parse::<IpAddr>().into_iter().collect();
    ep
}

fn world(addr: &str) -> Endpoint {
    with_addr(Endpoint::reserved("world", Identity::World), addr)
}

fn node(local: bool, labels: &[(&str, &str)]) -> Endpoint {
    let labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Endpoint::reserved("node", Identity::Node { labels, local })
}

fn tcp(set: &PolicySet, from: &Endpoint, to: &Endpoint, port: u16) -> bool {
    set.verdict(from, to, port, Proto::Tcp).allowed
}

/// Docs "Layer 3 Examples", "Endpoints Based" (examples/policies/l3/simple/l3.yaml):
/// backend pods accept traffic only from frontend pods.
#[test]
fn l3_rule_lets_only_frontends_reach_backends() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: l3-rule, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {role: backend}}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {role: frontend}\n",
    );
    let backend = pod("default", "be", &[("role", "backend")]);
    let frontend = pod("default", "fe", &[("role", "frontend")]);
    let other = pod("default", "x", &[("role", "other")]);
    assert!(tcp(&set, &frontend, &backend, 80));
    assert!(
        tcp(&set, &frontend, &backend, 5432),
        "no toPorts: every port"
    );
    let v = set.verdict(&other, &backend, 80, Proto::Tcp);
    assert!(!v.allowed);
    assert_eq!(v.ingress.kind, DecisionKind::DefaultDeny);
    assert_eq!(v.ingress.object.map(|o| o.name), Some("l3-rule".into()));
    // The frontend is not selected: nothing restricts it.
    assert!(tcp(&set, &backend, &frontend, 80));
    assert!(tcp(&set, &world("198.51.100.1"), &frontend, 80));
}

/// Docs "Layer 3 Examples", "Ingress/Egress Default Deny"
/// (examples/policies/l3/egress-default-deny): `egress: [{}]` puts the
/// endpoint in default deny "without whitelisting other peers".
#[test]
fn an_empty_egress_rule_denies_all_egress_and_leaves_ingress_open() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: deny-all-egress, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {role: restricted}}\n  egress:\n  - {}\n",
    );
    let restricted = pod("default", "r", &[("role", "restricted")]);
    let other = pod("default", "o", &[]);
    let v = set.verdict(&restricted, &other, 80, Proto::Tcp);
    assert!(!v.allowed);
    assert_eq!(v.egress.kind, DecisionKind::DefaultDeny);
    assert!(!tcp(&set, &restricted, &world("198.51.100.1"), 443));
    assert!(tcp(&set, &other, &restricted, 80), "no ingress section");
}

/// Docs "Layer 3 Examples", "Simple Egress Deny"
/// (examples/policies/l3/egress-deny/egress-deny.yaml): "If an egressDeny
/// rule matches, egress traffic is denied even if the policy contains
/// egress rules that would otherwise allow it."
#[test]
fn egress_deny_wins_over_allow_all() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: deny-egress-example, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {role: frontend}}\n  egress:\n  - toEntities: [all]\n  egressDeny:\n  - toEndpoints:\n    - matchLabels: {role: backend}\n",
    );
    let fe = pod("default", "fe", &[("role", "frontend")]);
    let be = pod("default", "be", &[("role", "backend")]);
    let v = set.verdict(&fe, &be, 80, Proto::Tcp);
    assert!(!v.allowed);
    assert_eq!(v.egress.kind, DecisionKind::Deny);
    assert_eq!(
        v.egress.to_string(),
        "deny by CiliumNetworkPolicy default/deny-egress-example spec.egressDeny[0]"
    );
    assert!(tcp(&set, &fe, &pod("default", "x", &[]), 80));
    assert!(tcp(&set, &fe, &world("198.51.100.1"), 443));
}

/// Docs "Deny Policies" (examples/policies/l3/entities/from_world_deny.yaml):
/// the clusterwide `external-lockdown` denies ingress from the world and
/// allows everything else.
#[test]
fn clusterwide_lockdown_denies_the_world_only() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: external-lockdown}\n\
         spec:\n  endpointSelector: {}\n  ingressDeny:\n  - fromEntities: [world]\n  ingress:\n  - fromEntities: [all]\n",
    );
    let a = pod("ns1", "a", &[]);
    let b = pod("ns2", "b", &[]);
    let v = set.verdict(&world("198.51.100.1"), &a, 80, Proto::Tcp);
    assert!(!v.allowed);
    assert_eq!(
        v.egress.kind,
        DecisionKind::NotEnforced,
        "the world has no policy of its own"
    );
    assert_eq!(v.ingress.kind, DecisionKind::Deny);
    assert!(tcp(&set, &b, &a, 80), "clusterwide: other namespaces too");
    assert!(tcp(&set, &node(false, &[]), &a, 80));
}

/// Docs "Layer 3 Examples", "IP/CIDR based" (examples/policies/l3/cidr/cidr.yaml):
/// 20.1.1.1 and 10.0.0.0/8 but not 10.96.0.0/12; CIDR rules "do not apply
/// to traffic where both sides of the connection are … managed by Cilium".
#[test]
fn cidr_rules_with_except_apply_to_the_world_only() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: cidr-rule, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {app: myService}}\n  egress:\n  - toCIDR: [20.1.1.1/32]\n  - toCIDRSet:\n    - cidr: 10.0.0.0/8\n      except: [10.96.0.0/12]\n",
    );
    let me = pod("default", "svc", &[("app", "myService")]);
    assert!(tcp(&set, &me, &world("20.1.1.1"), 443));
    assert!(!tcp(&set, &me, &world("20.1.1.2"), 443));
    assert!(tcp(&set, &me, &world("10.1.2.3"), 443));
    let v = set.verdict(&me, &world("10.96.0.10"), 443, Proto::Tcp);
    assert!(!v.allowed);
    assert_eq!(v.egress.kind, DecisionKind::DefaultDeny);
    let in_cluster = with_addr(pod("default", "p", &[]), "10.1.2.4");
    assert!(
        !tcp(&set, &me, &in_cluster, 443),
        "a pod's address is not a CIDR peer"
    );
}

/// Docs "Layer 4 Examples", "Example Port Ranges"
/// (examples/policies/l4/l4_port_range.yaml): TCP 80-444 "to any layer 3
/// destination".
#[test]
fn port_ranges_cover_port_to_end_port_of_one_protocol() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: l4-port-range-rule, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {app: myService}}\n  egress:\n  - toPorts:\n    - ports:\n      - {port: \"80\", endPort: 444, protocol: TCP}\n",
    );
    let me = pod("default", "svc", &[("app", "myService")]);
    let peer = world("198.51.100.7");
    assert!(tcp(&set, &me, &peer, 80));
    assert!(tcp(&set, &me, &peer, 444));
    assert!(!tcp(&set, &me, &peer, 445));
    assert!(!tcp(&set, &me, &peer, 79));
    assert!(!set.verdict(&me, &peer, 80, Proto::Udp).allowed);
    assert!(
        tcp(&set, &me, &pod("other", "x", &[]), 300),
        "any layer 3 destination"
    );
}

/// Docs "Using Kubernetes Constructs In Policy", "Namespaces"
/// (examples/policies/kubernetes/namespace/namespace-policy.yaml and
/// isolate-namespaces.yaml): peers are limited to the policy's namespace
/// unless `k8s:io.kubernetes.pod.namespace` is named.
#[test]
fn peers_are_scoped_to_the_policy_namespace_unless_named() {
    let across = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: k8s-expose-across-namespace, namespace: ns1}\n\
         spec:\n  endpointSelector: {matchLabels: {name: leia}}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {k8s:io.kubernetes.pod.namespace: ns2, name: luke}\n",
    );
    let leia = pod("ns1", "leia", &[("name", "leia")]);
    assert!(tcp(
        &across,
        &pod("ns2", "luke", &[("name", "luke")]),
        &leia,
        80
    ));
    assert!(!tcp(
        &across,
        &pod("ns1", "luke", &[("name", "luke")]),
        &leia,
        80
    ));
    // The endpointSelector never reaches into another namespace.
    assert!(tcp(
        &across,
        &pod("ns3", "x", &[]),
        &pod("ns2", "leia", &[("name", "leia")]),
        80
    ));

    let isolate = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: isolate-ns1, namespace: ns1}\n\
         spec:\n  endpointSelector: {matchLabels: {}}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {}\n",
    );
    assert!(tcp(
        &isolate,
        &pod("ns1", "a", &[]),
        &pod("ns1", "b", &[]),
        80
    ));
    assert!(!tcp(
        &isolate,
        &pod("ns2", "a", &[]),
        &pod("ns1", "b", &[]),
        80
    ));
    assert!(!tcp(
        &isolate,
        &world("198.51.100.1"),
        &pod("ns1", "b", &[]),
        80
    ));
}

/// Docs "Using Kubernetes Constructs In Policy", kube-dns
/// (examples/policies/kubernetes/namespace/kubedns-policy.yaml).
#[test]
fn egress_to_kube_dns_on_udp_53_only() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow-to-kubedns, namespace: default}\n\
         spec:\n  endpointSelector: {}\n  egress:\n  - toEndpoints:\n    - matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}\n    toPorts:\n    - ports:\n      - {port: '53', protocol: UDP}\n",
    );
    let me = pod("default", "app", &[]);
    let dns = pod("kube-system", "coredns", &[("k8s-app", "kube-dns")]);
    assert!(set.verdict(&me, &dns, 53, Proto::Udp).allowed);
    assert!(!set.verdict(&me, &dns, 53, Proto::Tcp).allowed);
    assert!(!tcp(&set, &me, &world("198.51.100.1"), 443));
    assert!(tcp(
        &set,
        &pod("other", "app", &[]),
        &world("198.51.100.1"),
        443
    ));
}

/// Docs "Layer 3 Examples", "Entities Based"
/// (examples/policies/l3/entities/nodes.yaml): host and remote-node.
#[test]
fn host_and_remote_node_entities() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: to-dev-from-nodes-in-cluster, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {env: dev}}\n  ingress:\n  - fromEntities: [host, remote-node]\n",
    );
    let dev = pod("default", "dev", &[("env", "dev")]);
    assert!(tcp(&set, &node(false, &[]), &dev, 80));
    assert!(tcp(&set, &node(true, &[]), &dev, 80));
    assert!(!tcp(&set, &world("198.51.100.1"), &dev, 80));
    assert!(!tcp(&set, &pod("default", "x", &[]), &dev, 80));
}

/// Docs "Layer 3 Examples", "Node based" (examples/policies/l3/entities/from_nodes.yaml):
/// `fromNodes` "will only take effect when enable-node-selector-labels" is on.
#[test]
fn from_nodes_needs_node_selector_labels() {
    let yaml = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: to-dev-from-worker-nodes, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {env: dev}}\n  ingress:\n  - fromNodes:\n    - matchLabels: {role: worker}\n";
    let dev = pod("default", "dev", &[("env", "dev")]);
    let worker = node(false, &[("role", "worker")]);
    let other = node(false, &[("role", "control-plane")]);
    let mut o = EvalOptions::default();
    o.identity.node_selector_labels = true;
    let (on, _) = PolicySet::from_objects_with(&docs(yaml), o);
    assert!(tcp(&on, &worker, &dev, 80));
    assert!(!tcp(&on, &other, &dev, 80));
    let off = load(yaml);
    assert!(!tcp(&off, &worker, &dev, 80));
}

/// The CRD's `enableDefaultDeny` (v1.17.17 and v1.18.11): "If not specified,
/// the default is true for each traffic direction that has rules"; false
/// adds allows without putting the endpoint in default deny.
#[test]
fn enable_default_deny_false_only_adds_allows() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow-world, namespace: default}\n\
         spec:\n  endpointSelector: {}\n  enableDefaultDeny: {egress: false}\n  egress:\n  - toEntities: [world]\n",
    );
    let me = pod("default", "a", &[]);
    let v = set.verdict(&me, &pod("other", "b", &[]), 80, Proto::Tcp);
    assert!(v.allowed);
    assert_eq!(v.egress.kind, DecisionKind::NoPolicy);
    assert_eq!(
        set.verdict(&me, &world("198.51.100.1"), 80, Proto::Tcp)
            .egress
            .kind,
        DecisionKind::Allow
    );
}

/// pkg/policy/api/entity.go (`InitEntities`): `cluster` is every pod of the
/// local cluster plus host, remote-node, init, ingress, health, unmanaged
/// and kube-apiserver, but not the world.
#[test]
fn cluster_entity_covers_in_cluster_identities_but_not_the_world() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: from-cluster, namespace: default}\n\
         spec:\n  endpointSelector: {}\n  ingress:\n  - fromEntities: [cluster]\n",
    );
    let me = pod("default", "a", &[]);
    for from in [
        pod("elsewhere", "b", &[]),
        node(false, &[]),
        Endpoint::reserved("ingress", Identity::Ingress),
        Endpoint::reserved("kube-apiserver", Identity::KubeApiServer),
    ] {
        assert!(tcp(&set, &from, &me, 80), "{}", from.name);
    }
    assert!(!tcp(&set, &world("198.51.100.1"), &me, 80));
}

/// Named ports resolve against the destination's container ports (CRD
/// `PortProtocol.port`: "an L4 port number, or a name").
#[test]
fn named_ports_resolve_on_the_destination() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: named, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {app: db}}\n  ingress:\n  - toPorts:\n    - ports:\n      - {port: pg, protocol: TCP}\n",
    );
    let mut db = pod("default", "db", &[("app", "db")]);
    db.ports.push(ContainerPort {
        name: Some("pg".into()),
        port: 5432,
        proto: Proto::Tcp,
    });
    let client = pod("default", "c", &[]);
    assert!(tcp(&set, &client, &db, 5432));
    assert!(!tcp(&set, &client, &db, 5433));
}

/// What the evaluator does not model is reported with its path.
#[test]
fn unmodelled_fields_are_reported_not_ignored() {
    let objs = docs(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: mixed, namespace: default}\n\
         spec:\n  endpointSelector: {}\n  egress:\n  - toFQDNs: [{matchName: example.com}]\n  - toServices: [{k8sService: {serviceName: s, namespace: default}}]\n\
         \x20 - toEndpoints: [{}]\n    toPorts:\n    - ports: [{port: '80', protocol: TCP}]\n      rules: {http: [{method: GET}]}\n\
         \x20 ingress:\n  - fromRequires: [{matchLabels: {env: prod}}]\n    fromEndpoints: [{}]\n  - frobnicate: true\n\
         ---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: host}\n\
         spec:\n  nodeSelector: {}\n  ingress:\n  - fromEntities: [world]\n",
    );
    let (set, unsupported) = PolicySet::from_objects(&objs);
    let paths: Vec<&str> = unsupported
        .iter()
        .map(|u: &Unsupported| u.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "spec.ingress[0].fromRequires",
            "spec.ingress[1].frobnicate",
            "spec.egress[0].toFQDNs",
            "spec.egress[1].toServices",
            "spec.egress[2].toPorts[0].rules",
            "spec.nodeSelector",
        ]
    );
    let me = pod("default", "a", &[]);
    // FQDN and service peers select nothing; the L7 port is an L4 allow.
    assert!(!tcp(&set, &me, &world("93.184.215.14"), 443));
    assert!(tcp(&set, &me, &pod("default", "b", &[]), 80));
}

/// `selected_by` names the objects whose endpointSelector matches.
#[test]
fn selected_by_lists_the_selecting_objects() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a, namespace: ns1}\n\
         spec:\n  endpointSelector: {matchLabels: {role: gateway}}\n  ingress: [{}]\n\
         ---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: b}\n\
         spec:\n  endpointSelector: {matchExpressions: [{key: role, operator: Exists}]}\n  egress: [{}]\n",
    );
    let names = |ep: &Endpoint| -> Vec<String> {
        set.selected_by(ep).into_iter().map(|o| o.name).collect()
    };
    assert_eq!(names(&pod("ns1", "g", &[("role", "gateway")])), ["a", "b"]);
    assert_eq!(names(&pod("ns2", "g", &[("role", "gateway")])), ["b"]);
    assert!(names(&pod("ns1", "x", &[])).is_empty());
}

/// Kubernetes docs "Network Policies" (concepts/services-networking):
/// "Default deny all ingress traffic", "Allow all ingress traffic", a
/// `namespaceSelector` and `podSelector` in one element select both
/// ("Behavior of to and from selectors"), `ipBlock` with `except`.
#[test]
fn kubernetes_network_policies_follow_the_api_semantics() {
    let deny = load(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: default-deny-ingress, namespace: a}\n\
         spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    );
    let (x, y) = (pod("a", "x", &[]), pod("a", "y", &[]));
    let v = deny.verdict(&y, &x, 80, Proto::Tcp);
    assert!(!v.allowed);
    assert_eq!(v.ingress.kind, DecisionKind::DefaultDeny);
    assert!(
        tcp(&deny, &x, &world("198.51.100.1"), 443),
        "egress not isolated"
    );

    let all = load(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-all-ingress, namespace: a}\n\
         spec:\n  podSelector: {}\n  ingress: [{}]\n  policyTypes: [Ingress]\n",
    );
    assert!(tcp(&all, &pod("b", "z", &[]), &x, 80));
    assert!(tcp(&all, &world("198.51.100.1"), &x, 80));

    let and = load(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: and, namespace: a}\n\
         spec:\n  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress, Egress]\n\
         \x20 ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}\n      podSelector: {matchLabels: {role: client}}\n    ports: [{port: 5432}]\n\
         \x20 egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n",
    );
    let db = pod("a", "db", &[("app", "db")]);
    assert!(tcp(&and, &pod("b", "c", &[("role", "client")]), &db, 5432));
    assert!(
        !and.verdict(&pod("b", "c", &[("role", "client")]), &db, 5432, Proto::Udp)
            .allowed
    );
    assert!(!tcp(&and, &pod("b", "o", &[]), &db, 5432));
    assert!(!tcp(&and, &pod("a", "c", &[("role", "client")]), &db, 5432));
    assert!(tcp(&and, &db, &world("10.2.3.4"), 443));
    assert!(!tcp(&and, &db, &world("10.1.3.4"), 443));
}

/// Seed 000's two hand-written policies (`allow-gateway`, `allow-api-to-db`)
/// give the reachability they describe: the gateway reaches web-frontend,
/// api-backend reaches the database, nothing else reaches either, and
/// pods they do not select stay open.
#[test]
fn seed_hand_written_policies_give_the_described_reachability() {
    let set = load(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow-gateway, namespace: tenant-acme-corp}\n\
         spec:\n  endpointSelector:\n    matchLabels: {deployment: web-frontend}\n  ingress:\n    - fromEndpoints:\n        - matchLabels: {role: gateway}\n\
         ---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow-api-to-db, namespace: tenant-acme-corp}\n\
         spec:\n  endpointSelector:\n    matchLabels: {deployment: database}\n  ingress:\n    - fromEndpoints:\n        - matchLabels: {deployment: api-backend}\n",
    );
    let ns = "tenant-acme-corp";
    let web = pod(ns, "web", &[("deployment", "web-frontend")]);
    let api = pod(ns, "api", &[("deployment", "api-backend")]);
    let db = pod(ns, "db", &[("deployment", "database")]);
    let gw = pod(ns, "gw", &[("role", "gateway")]);
    assert!(tcp(&set, &gw, &web, 80));
    assert!(tcp(&set, &api, &db, 5432));
    assert!(!tcp(&set, &api, &web, 80));
    assert!(!tcp(&set, &web, &db, 5432));
    assert!(!tcp(&set, &gw, &db, 5432));
    assert!(!tcp(
        &set,
        &pod("other", "gw", &[("role", "gateway")]),
        &web,
        80
    ));
    assert!(!tcp(&set, &world("198.51.100.1"), &web, 80));
    // Not selected by either policy: open both ways.
    assert!(tcp(&set, &db, &api, 8080));
    assert!(tcp(&set, &web, &world("198.51.100.1"), 443));
    // The label the policy trusts can be set by anyone who runs a pod there.
    let forged = pod(ns, "forged", &[("role", "gateway"), ("deployment", "x")]);
    assert!(tcp(&set, &forged, &web, 80));
    assert_eq!(set.selected_by(&web).len(), 1);
}

mod three_way {
    use super::*;
    use crate::support::model::model_endpoints;
    use palisade_core::policy::{Endpoint as Model, Ports};
    use palisade_core::{Policy, PolicyOptions, PortProto, Protocol, Snapshot};
    use palisade_kube::eval::RenderedPolicy;
    use palisade_kube::{RenderOptions, fixtures};
    use std::collections::BTreeSet;

    /// Every port a model rule names, every deployment's ports, DNS, the
    /// proxy, HTTP, and ports nothing opens.
    fn ports(
        snap: &Snapshot,
        policy: &Policy,
        options: &RenderOptions,
    ) -> BTreeSet<(u16, Protocol)> {
        let mut out: BTreeSet<(u16, Protocol)> = [
            (80, Protocol::Tcp),
            (53, Protocol::Udp),
            (53, Protocol::Tcp),
            (9, Protocol::Tcp),
            (5432, Protocol::Udp),
        ]
        .into_iter()
        .collect();
        out.insert((options.proxy.port.get(), Protocol::Tcp));
        for d in &snap.deployments {
            out.extend(d.ports.iter().map(|p| (p.get(), Protocol::Tcp)));
        }
        for r in policy.rules() {
            if let Ports::Only(set) = &r.ports {
                out.extend(set.iter().map(|p| (p.port.get(), p.protocol)));
            }
        }
        out
    }

    /// Every (from, to, port) with a tenant deployment on at least one side
    /// where the rendered objects and the model disagree: flow → details.
    /// Flows between platform parts alone (DNS, proxy, the gateways'
    /// Envoy, the world) are outside the model: Palisade renders no policy
    /// for them, so Cilium leaves them open and the model has no rule.
    fn disagreements(snap: &Snapshot, options: &RenderOptions) -> BTreeMap<String, String> {
        let Ok(objects) = RenderedPolicy::new(snap, options) else {
            panic!("the seed renders")
        };
        assert!(
            objects.unsupported().is_empty(),
            "{:?}",
            objects.unsupported()
        );
        let policy = Policy::compile_with(
            snap,
            &PolicyOptions {
                proxy_port: options.proxy.port,
                // RenderedPolicy asks the objects with the shared port.
                tenant_ports: false,
            },
        );
        let eps = model_endpoints(snap);
        let is_dep = |m: &Model| matches!(m, Model::Deployment { .. });
        let mut out = BTreeMap::new();
        for from in &eps {
            for to in eps.iter().filter(|to| is_dep(from) || is_dep(to)) {
                for &(port, proto) in &ports(snap, &policy, options) {
                    let Ok(p) = port.try_into() else { continue };
                    let pp = PortProto {
                        protocol: proto,
                        port: p,
                    };
                    let model = policy.allowed(from, to, pp);
                    let Some(objs) = objects.verdict(from, to, pp) else {
                        panic!("{from} or {to} has no counterpart in the rendered objects")
                    };
                    if model.allowed != objs.allowed {
                        out.insert(
                            format!("{from} -> {to} {port}/{}", proto.as_k8s()),
                            format!(
                                "model {} ({}), objects {} (egress {}; ingress {})",
                                model.allowed,
                                model.reason,
                                objs.allowed,
                                objs.egress,
                                objs.ingress
                            ),
                        );
                    }
                }
            }
        }
        out
    }

    /// The heart of issue 17: the objects `render` ships allow what
    /// `Policy::allowed` says, for every pair of the seed's endpoints with
    /// a deployment on one side, on every port either names.
    ///
    /// With the `cilium` gateway class every Gateway's traffic leaves the
    /// same Envoy with the one `ingress` identity, so at L3/L4 a tenant
    /// policy that admits its own gateway (`fromEntities: [ingress]`)
    /// admits every Gateway's traffic; the HTTPRoutes attached to each
    /// Gateway are what separate them, and the objects' verdict reads them
    /// (`SHARED_ENVOY` lists the flows only the routes deny).
    #[test]
    fn rendered_seed_objects_agree_with_the_model() {
        let d = disagreements(&fixtures::seed(), &RenderOptions::default());
        let lines: Vec<String> = d.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        assert!(d.is_empty(), "disagreements:\n{}", lines.join("\n"));
    }

    /// The flows the shared `ingress` identity lets through at L3/L4 are
    /// denied at L7: no HTTPRoute attached to that Gateway sends there,
    /// and the verdict names the nearest route and why it does not count.
    #[test]
    fn the_shared_envoy_identity_is_separated_by_the_routes() {
        let snap = fixtures::seed();
        let Ok(objects) = RenderedPolicy::new(&snap, &RenderOptions::default()) else {
            panic!("the seed renders")
        };
        let eps = model_endpoints(&snap);
        for flow in SHARED_ENVOY {
            let (from, rest) = flow.split_once(" -> ").unwrap_or_default();
            let (to, port) = rest.split_once(' ').unwrap_or_default();
            let find = |n: &str| eps.iter().find(|e| e.to_string() == n).cloned();
            let (Some(from), Some(to)) = (find(from), find(to)) else {
                panic!("{flow}: unknown endpoint")
            };
            let port: u16 = port.trim_end_matches("/TCP").parse().unwrap_or_default();
            let pp = PortProto::tcp(port.try_into().unwrap_or(palisade_core::Port::HTTP));
            let Some(v) = objects.verdict(&from, &to, pp) else {
                panic!("{flow}: no verdict")
            };
            assert!(
                v.egress.allows() && v.ingress.allows(),
                "{flow}: L3/L4 {v:?}"
            );
            let Some(route) = v.route.as_ref() else {
                panic!("{flow}: no L7 decision")
            };
            assert!(!v.allowed && !route.allowed, "{flow}: {route}");
            assert!(
                route
                    .to_string()
                    .starts_with("not reachable at L7: HTTPRoute tenant-")
                    && route
                        .to_string()
                        .contains("has no parentRef to Gateway palisade-gateways/"),
                "{flow}: {route}"
            );
        }
    }

    /// The same check when the renderer emits both kinds: Cilium enforces
    /// both, an allow in either suffices.
    #[test]
    fn both_flavours_agree_with_the_model() {
        let o = RenderOptions {
            policy: palisade_kube::PolicyFlavour::Both,
            ..RenderOptions::default()
        };
        let d = disagreements(&fixtures::seed(), &o);
        assert!(d.is_empty(), "{d:#?}");
    }

    /// Plain `NetworkPolicy` objects cannot name Cilium's `ingress`
    /// identity, so with the `cilium` gateway class they would drop every
    /// gateway → deployment flow the model allows: rendering refuses that
    /// combination, and with another class the objects agree.
    #[test]
    fn kubernetes_flavour_refuses_cilium_gateways_and_agrees_with_others() {
        let o = RenderOptions {
            policy: palisade_kube::PolicyFlavour::Kubernetes,
            ..RenderOptions::default()
        };
        let err = palisade_kube::render(&fixtures::seed(), &o).expect_err("refused");
        assert!(err.to_string().contains("ingress"), "{err}");
        let other = RenderOptions {
            gateway_class: "istio".into(),
            ..o
        };
        let d = disagreements(&fixtures::seed(), &other);
        assert!(d.is_empty(), "{d:#?}");
    }

    const SHARED_ENVOY: [&str; 6] = [
        "gateway/acme-corp/web-frontend -> acme-corp/api-backend 8080/TCP",
        "gateway/acme-corp/web-frontend -> acme-corp/database 5432/TCP",
        "gateway/acme-corp/web-frontend -> big-corp/database 5432/TCP",
        "gateway/big-corp -> acme-corp/api-backend 8080/TCP",
        "gateway/big-corp -> acme-corp/database 5432/TCP",
        "gateway/big-corp -> acme-corp/web-frontend 80/TCP",
    ];

    /// The same check for the proxy on egress nodes (reached with
    /// `toNodes`, which needs `nodeSelectorLabels`).
    #[test]
    fn proxy_on_egress_nodes_agrees_with_the_model() {
        let mut nodes = RenderOptions::default();
        nodes.proxy.in_cluster = Some(palisade_kube::InClusterProxy::new(String::new()));
        let d = disagreements(&fixtures::seed(), &nodes);
        assert!(d.is_empty(), "{d:#?}");
    }

    /// A proxy outside the cluster (reached by CIDR, seed 002) is a world
    /// address to Cilium, so a tenant allowed the world (egress-gateway
    /// mode) would reach it on every port, and through another tenant's
    /// listener leave as that tenant. Its address is in that tenant's
    /// `egressDeny`.
    #[test]
    fn proxy_outside_the_cluster_is_denied_to_world_tenants() {
        let mut outside = RenderOptions::default();
        outside.proxy.address = "192.0.2.10".into();
        let d = disagreements(&fixtures::seed(), &outside);
        assert!(d.is_empty(), "{d:#?}");
    }
}
