//! The one network-policy model every dataplane compiles.
//!
//! Kubernetes (Cilium or plain `NetworkPolicy`), the local nftables lab and
//! the dashboard's isolation matrix must all agree on who may talk to whom.
//! Deciding that once, here, from a [`Snapshot`], and letting each backend
//! only *translate* the resulting [`Rule`]s, is what keeps them agreeing.
//!
//! The model is default deny. Each [`Rule`] names the reason it exists, so a
//! verdict can always say which rule allowed a flow, or that none did.
//! Rules and the flows they allow come out in a fixed order (sorted by
//! endpoint, then port) so that compiled output is byte-stable.

use crate::model::{
    Deployment, DeploymentName, EgressMode, GatewayScope, Port, Tenant, TenantName,
};
use crate::snapshot::{AllowRule, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The port cluster DNS answers on.
pub fn dns_port() -> Port {
    // 53 is within 1..=65535, so the fallback is never taken.
    Port::try_from(53).unwrap_or(Port::HTTP)
}

/// The port Palisade's egress proxy listens on by default (Squid's 3128,
/// as in seed 002).
pub fn default_proxy_port() -> Port {
    // 3128 is within 1..=65535, so the fallback is never taken.
    Port::try_from(3128).unwrap_or(Port::HTTP)
}

/// A short, unique, human-readable name for a gateway scope, used in
/// displays: `central`, `<tenant>`, `<tenant>/<deployment>`.
pub fn gateway_label(scope: &GatewayScope) -> String {
    match scope {
        GatewayScope::Central => "central".into(),
        GatewayScope::PerTenant { tenant } => tenant.to_string(),
        GatewayScope::PerDeployment { tenant, deployment } => format!("{tenant}/{deployment}"),
    }
}

/// Something that sends or receives traffic.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Endpoint {
    /// The pods of one deployment.
    Deployment {
        /// The deployment's tenant.
        tenant: TenantName,
        /// The deployment.
        deployment: DeploymentName,
    },
    /// The pods of an ingress gateway.
    Gateway {
        /// Which gateway.
        scope: GatewayScope,
    },
    /// The egress proxy as seen by one tenant: the address its pods send
    /// `HTTP_PROXY` traffic to.
    EgressProxy {
        /// The tenant whose traffic it carries.
        tenant: TenantName,
    },
    /// The cluster's DNS service (kube-dns / CoreDNS).
    ClusterDns,
    /// Any address outside the cluster, reached directly (only tenants in
    /// `cilium-egress-gateway` mode, whose traffic is SNATed to their fixed
    /// IP on the way out).
    Internet,
}

impl Endpoint {
    /// A deployment endpoint.
    pub fn deployment(tenant: &TenantName, deployment: &DeploymentName) -> Self {
        Endpoint::Deployment {
            tenant: tenant.clone(),
            deployment: deployment.clone(),
        }
    }

    /// The tenant this endpoint belongs to, if any.
    pub fn tenant(&self) -> Option<&TenantName> {
        match self {
            Endpoint::Deployment { tenant, .. } | Endpoint::EgressProxy { tenant } => Some(tenant),
            Endpoint::Gateway { scope } => scope.tenant(),
            Endpoint::ClusterDns | Endpoint::Internet => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Deployment { tenant, deployment } => write!(f, "{tenant}/{deployment}"),
            Endpoint::Gateway { scope } => write!(f, "gateway/{}", gateway_label(scope)),
            Endpoint::EgressProxy { tenant } => write!(f, "egress-proxy/{tenant}"),
            Endpoint::ClusterDns => f.write_str("cluster-dns"),
            Endpoint::Internet => f.write_str("internet"),
        }
    }
}

/// A transport protocol.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The name Kubernetes and Cilium use (`TCP`, `UDP`).
    pub const fn as_k8s(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// One port of one protocol: what a flow is addressed to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct PortProto {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The destination port.
    pub port: Port,
}

impl PortProto {
    /// A TCP port.
    pub const fn tcp(port: Port) -> Self {
        Self {
            protocol: Protocol::Tcp,
            port,
        }
    }
    /// A UDP port.
    pub const fn udp(port: Port) -> Self {
        Self {
            protocol: Protocol::Udp,
            port,
        }
    }
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            Protocol::Tcp => write!(f, "{}/tcp", self.port),
            Protocol::Udp => write!(f, "{}/udp", self.port),
        }
    }
}

/// The ports a rule opens.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Ports {
    /// Every port of every protocol.
    Any,
    /// Only these (never empty).
    Only(BTreeSet<PortProto>),
}

impl Ports {
    /// Whether `port` is opened.
    pub fn contains(&self, port: PortProto) -> bool {
        match self {
            Ports::Any => true,
            Ports::Only(set) => set.contains(&port),
        }
    }

    /// TCP on the first of `ports`, or every port when `ports` is empty (a
    /// deployment that declares no ports may serve on any). A gateway's
    /// route sends to the deployment's first port only
    /// (`palisade_kube::render`: one HTTPRoute backend per gateway), so
    /// that is all the gateway reaches.
    fn first_tcp_or_any(ports: &[Port]) -> Self {
        match ports.first() {
            Some(p) => Ports::Only([PortProto::tcp(*p)].into()),
            None => Ports::Any,
        }
    }
}

/// Why a flow is allowed (or, for [`Reason::DefaultDeny`], why not).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// Pods of one deployment reach each other on every port.
    SameDeployment,
    /// A gateway reaches the deployments it fronts.
    Gateway {
        /// The gateway.
        scope: GatewayScope,
    },
    /// An explicit `palisade allow`.
    AllowRule {
        /// The rule as stored.
        rule: AllowRule,
    },
    /// Tenant pods reach their egress proxy.
    EgressProxy,
    /// Tenant pods resolve names through cluster DNS.
    ClusterDns,
    /// Tenant pods in `cilium-egress-gateway` mode reach the internet,
    /// leaving through the tenant's fixed egress IP.
    EgressGateway,
    /// No rule allows the flow.
    DefaultDeny,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::SameDeployment => f.write_str("same deployment"),
            Reason::Gateway { scope } => {
                write!(f, "{} gateway {}", scope.kind(), gateway_label(scope))
            }
            Reason::AllowRule { rule } => {
                write!(
                    f,
                    "allow rule {}: {} -> {}",
                    rule.tenant, rule.from, rule.to
                )?;
                match rule.port {
                    Some(p) => write!(f, " port {p}"),
                    None => Ok(()),
                }
            }
            Reason::EgressProxy => f.write_str("egress via the tenant's proxy"),
            Reason::ClusterDns => f.write_str("cluster DNS"),
            Reason::EgressGateway => f.write_str("egress via the tenant's egress gateway"),
            Reason::DefaultDeny => f.write_str("default deny"),
        }
    }
}

/// One permission: `from` may open connections to `to` on `ports`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Rule {
    /// The client.
    pub from: Endpoint,
    /// The server.
    pub to: Endpoint,
    /// The ports opened.
    pub ports: Ports,
    /// Why.
    pub reason: Reason,
}

/// The answer to "may `from` reach `to` on this port?".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// Whether the flow is allowed.
    pub allowed: bool,
    /// The first rule (in [`Policy::rules`] order) that allows it, or
    /// [`Reason::DefaultDeny`].
    pub reason: Reason,
}

/// One allowed (from, to, port) triple; `port: None` means every port.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Flow {
    /// The client.
    pub from: Endpoint,
    /// The server.
    pub to: Endpoint,
    /// The port, or `None` for every port.
    pub port: Option<PortProto>,
}

/// Settings that are not part of the model but shape the policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyOptions {
    /// The port tenants reach their egress proxy on.
    pub proxy_port: Port,
    /// Whether each tenant reaches the proxy on its own listener port
    /// (`Tenant::proxy_port`, where assigned) instead of `proxy_port`: the
    /// proxy then knows the caller by the port, on paths where the source
    /// address says nothing (IPv4, no per-deployment pools), and only this
    /// rule lets a tenant reach its port.
    #[serde(default)]
    pub tenant_ports: bool,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        Self {
            proxy_port: default_proxy_port(),
            tenant_ports: false,
        }
    }
}

/// The port `tenant` reaches its egress proxy on under `options`.
pub fn proxy_port_of(tenant: &Tenant, options: &PolicyOptions) -> Port {
    match Port::try_from(tenant.proxy_port) {
        Ok(port) if options.tenant_ports => port,
        _ => options.proxy_port,
    }
}

/// The compiled policy of a whole [`Snapshot`]: a sorted list of rules and
/// an index to answer verdicts without scanning them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    /// (from, to) → indices into `rules`, ascending.
    index: BTreeMap<(Endpoint, Endpoint), Vec<usize>>,
    /// to → indices into `rules`, ascending.
    by_to: BTreeMap<Endpoint, Vec<usize>>,
}

impl Policy {
    /// The policy of `snapshot` with default options.
    pub fn compile(snapshot: &Snapshot) -> Self {
        Self::compile_with(snapshot, &PolicyOptions::default())
    }

    /// The policy of `snapshot`.
    ///
    /// Rules that name a deployment the snapshot does not hold (an allow
    /// rule whose deployment was deleted, a gateway of a deleted tenant)
    /// allow nothing and are left out.
    pub fn compile_with(snapshot: &Snapshot, options: &PolicyOptions) -> Self {
        let mut rules = Vec::new();
        let deployments: BTreeMap<(&TenantName, &DeploymentName), &Deployment> = snapshot
            .deployments
            .iter()
            .map(|d| ((&d.tenant, &d.name), d))
            .collect();
        // Indexed once: looking tenants up per deployment, or scanning every
        // deployment per gateway, is quadratic at 10,000 tenants.
        let modes: BTreeMap<&TenantName, (EgressMode, Port)> = snapshot
            .tenants
            .iter()
            .map(|t| (&t.name, (t.egress.mode, proxy_port_of(t, options))))
            .collect();
        let mut by_tenant: BTreeMap<&TenantName, Vec<&Deployment>> = BTreeMap::new();
        for d in &snapshot.deployments {
            by_tenant.entry(&d.tenant).or_default().push(d);
        }

        for d in &snapshot.deployments {
            let me = Endpoint::deployment(&d.tenant, &d.name);
            rules.push(Rule {
                from: me.clone(),
                to: me.clone(),
                ports: Ports::Any,
                reason: Reason::SameDeployment,
            });
            rules.push(Rule {
                from: me.clone(),
                to: Endpoint::ClusterDns,
                ports: Ports::Only(
                    [PortProto::udp(dns_port()), PortProto::tcp(dns_port())]
                        .into_iter()
                        .collect(),
                ),
                reason: Reason::ClusterDns,
            });
            let (mode, proxy_port) = modes
                .get(&d.tenant)
                .copied()
                .unwrap_or((EgressMode::default(), options.proxy_port));
            rules.push(match mode {
                EgressMode::Proxy => Rule {
                    from: me,
                    to: Endpoint::EgressProxy {
                        tenant: d.tenant.clone(),
                    },
                    ports: Ports::Only([PortProto::tcp(proxy_port)].into()),
                    reason: Reason::EgressProxy,
                },
                EgressMode::CiliumEgressGateway => Rule {
                    from: me,
                    to: Endpoint::Internet,
                    ports: Ports::Any,
                    reason: Reason::EgressGateway,
                },
            });
        }

        for g in &snapshot.gateways {
            if g.scope.tenant().is_some_and(|t| !modes.contains_key(t)) {
                continue;
            }
            let fronted: Vec<&Deployment> = match &g.scope {
                GatewayScope::Central => snapshot.deployments.iter().collect(),
                GatewayScope::PerTenant { tenant } => {
                    by_tenant.get(tenant).cloned().unwrap_or_default()
                }
                GatewayScope::PerDeployment { tenant, deployment } => deployments
                    .get(&(tenant, deployment))
                    .map(|d| vec![*d])
                    .unwrap_or_default(),
            };
            for d in fronted {
                rules.push(Rule {
                    from: Endpoint::Gateway {
                        scope: g.scope.clone(),
                    },
                    to: Endpoint::deployment(&d.tenant, &d.name),
                    ports: Ports::first_tcp_or_any(&d.ports),
                    reason: Reason::Gateway {
                        scope: g.scope.clone(),
                    },
                });
            }
        }

        for a in &snapshot.allow_rules {
            let known = deployments.contains_key(&(&a.tenant, &a.from))
                && deployments.contains_key(&(&a.tenant, &a.to));
            if !known {
                continue;
            }
            rules.push(Rule {
                from: Endpoint::deployment(&a.tenant, &a.from),
                to: Endpoint::deployment(&a.tenant, &a.to),
                ports: match a.port {
                    Some(p) => Ports::Only([PortProto::tcp(p)].into()),
                    None => Ports::Any,
                },
                reason: Reason::AllowRule { rule: a.clone() },
            });
        }

        rules.sort();
        rules.dedup();
        let mut index: BTreeMap<(Endpoint, Endpoint), Vec<usize>> = BTreeMap::new();
        let mut by_to: BTreeMap<Endpoint, Vec<usize>> = BTreeMap::new();
        for (i, r) in rules.iter().enumerate() {
            index
                .entry((r.from.clone(), r.to.clone()))
                .or_default()
                .push(i);
            by_to.entry(r.to.clone()).or_default().push(i);
        }
        Self {
            rules,
            index,
            by_to,
        }
    }

    /// Every rule, sorted by (from, to, ports, reason).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules whose server is `to`: what a backend renders as ingress.
    pub fn rules_to<'a>(&'a self, to: &'a Endpoint) -> impl Iterator<Item = &'a Rule> + 'a {
        self.by_to
            .get(to)
            .into_iter()
            .flatten()
            .map(|&i| &self.rules[i])
    }

    /// The rules whose client is `from`: what a backend renders as egress.
    pub fn rules_from<'a>(&'a self, from: &'a Endpoint) -> impl Iterator<Item = &'a Rule> + 'a {
        let start = self.rules.partition_point(|r| &r.from < from);
        self.rules[start..]
            .iter()
            .take_while(move |r| &r.from == from)
    }

    /// Whether `from` may reach `to` on `port`, and which rule says so.
    pub fn allowed(&self, from: &Endpoint, to: &Endpoint, port: PortProto) -> Verdict {
        let hit = self
            .index
            .get(&(from.clone(), to.clone()))
            .into_iter()
            .flatten()
            .map(|&i| &self.rules[i])
            .find(|r| r.ports.contains(port));
        match hit {
            Some(r) => Verdict {
                allowed: true,
                reason: r.reason.clone(),
            },
            None => Verdict {
                allowed: false,
                reason: Reason::DefaultDeny,
            },
        }
    }

    /// Every allowed (from, to, port), sorted, each once. A flow open on
    /// every port appears once with `port: None`, and its specific ports are
    /// then not listed again.
    pub fn flows(&self) -> Vec<Flow> {
        let mut out = BTreeSet::new();
        for ((from, to), idx) in &self.index {
            let any = idx.iter().any(|&i| self.rules[i].ports == Ports::Any);
            if any {
                out.insert(Flow {
                    from: from.clone(),
                    to: to.clone(),
                    port: None,
                });
                continue;
            }
            for &i in idx {
                if let Ports::Only(set) = &self.rules[i].ports {
                    for p in set {
                        out.insert(Flow {
                            from: from.clone(),
                            to: to.clone(),
                            port: Some(*p),
                        });
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::Timestamp;
    use crate::model::{
        Deployment, EgressProfile, Gateway, Image, Labels, Quota, Replicas, Tenant,
    };
    use crate::pool::{Pool, SubnetLen};
    use std::time::Duration;

    fn t(s: &str) -> TenantName {
        s.parse().unwrap()
    }
    fn d(s: &str) -> DeploymentName {
        s.parse().unwrap()
    }
    fn p(n: u16) -> Port {
        Port::try_from(n).unwrap()
    }
    fn dep(tenant: &str, name: &str, index: u128, ports: &[u16], pool: &Pool) -> Deployment {
        Deployment {
            tenant: t(tenant),
            name: d(name),
            image: "nginx:alpine".parse::<Image>().unwrap(),
            replicas: Replicas::default(),
            ports: ports.iter().map(|n| p(*n)).collect(),
            subnet: pool.subnet(index),
            labels: Labels::new(),
            workload: Default::default(),
            created_at: Timestamp(0),
        }
    }
    fn tenant(name: &str, mode: EgressMode) -> Tenant {
        Tenant {
            name: t(name),
            quota: Quota::default(),
            node_pool: None,
            egress: EgressProfile {
                mode,
                ip: None,
                public_ip: None,
            },
            proxy_port: 0,
            labels: Labels::new(),
            created_at: Timestamp(0),
        }
    }

    /// The seed's example: acme-corp runs web, api and db (api → db on
    /// 5432), a per-deployment gateway fronts web; big-corp runs db behind
    /// the egress gateway.
    fn seed() -> Snapshot {
        let pool = Pool::new(
            "fd00::/48".parse().unwrap(),
            SubnetLen::default(),
            Duration::ZERO,
        )
        .unwrap();
        Snapshot {
            tenants: vec![
                tenant("acme-corp", EgressMode::Proxy),
                tenant("big-corp", EgressMode::CiliumEgressGateway),
            ],
            deployments: vec![
                dep("acme-corp", "api", 1, &[8080], &pool),
                dep("acme-corp", "db", 2, &[5432], &pool),
                dep("acme-corp", "web", 0, &[80], &pool),
                dep("big-corp", "db", 3, &[], &pool),
            ],
            gateways: vec![Gateway {
                scope: GatewayScope::PerDeployment {
                    tenant: t("acme-corp"),
                    deployment: d("web"),
                },
                created_at: Timestamp(0),
            }],
            allow_rules: vec![AllowRule {
                tenant: t("acme-corp"),
                from: d("api"),
                to: d("db"),
                port: Some(p(5432)),
            }],
            pool,
        }
    }

    fn e(tenant: &str, name: &str) -> Endpoint {
        Endpoint::deployment(&t(tenant), &d(name))
    }

    fn show(flows: &[Flow]) -> Vec<String> {
        flows
            .iter()
            .map(|f| match f.port {
                Some(port) => format!("{} -> {} {port}", f.from, f.to),
                None => format!("{} -> {} any", f.from, f.to),
            })
            .collect()
    }

    #[test]
    fn seed_scenario_allows_exactly_the_expected_flows() {
        let policy = Policy::compile(&seed());
        let expected = [
            "acme-corp/api -> acme-corp/api any",
            "acme-corp/api -> acme-corp/db 5432/tcp",
            "acme-corp/api -> egress-proxy/acme-corp 3128/tcp",
            "acme-corp/api -> cluster-dns 53/tcp",
            "acme-corp/api -> cluster-dns 53/udp",
            "acme-corp/db -> acme-corp/db any",
            "acme-corp/db -> egress-proxy/acme-corp 3128/tcp",
            "acme-corp/db -> cluster-dns 53/tcp",
            "acme-corp/db -> cluster-dns 53/udp",
            "acme-corp/web -> acme-corp/web any",
            "acme-corp/web -> egress-proxy/acme-corp 3128/tcp",
            "acme-corp/web -> cluster-dns 53/tcp",
            "acme-corp/web -> cluster-dns 53/udp",
            "big-corp/db -> big-corp/db any",
            "big-corp/db -> cluster-dns 53/tcp",
            "big-corp/db -> cluster-dns 53/udp",
            "big-corp/db -> internet any",
            "gateway/acme-corp/web -> acme-corp/web 80/tcp",
        ];
        assert_eq!(show(&policy.flows()), expected);
    }

    #[test]
    fn verdicts_name_the_rule_that_decided() {
        let policy = Policy::compile(&seed());
        let pg = PortProto::tcp(p(5432));
        let v = policy.allowed(&e("acme-corp", "api"), &e("acme-corp", "db"), pg);
        assert!(v.allowed);
        assert!(matches!(v.reason, Reason::AllowRule { .. }), "{v:?}");
        assert_eq!(
            v.reason.to_string(),
            "allow rule acme-corp: api -> db port 5432"
        );

        // The allow rule is one-way and one port only.
        let back = policy.allowed(&e("acme-corp", "db"), &e("acme-corp", "api"), pg);
        assert_eq!((back.allowed, back.reason), (false, Reason::DefaultDeny));
        let other_port = PortProto::tcp(p(22));
        assert!(
            !policy
                .allowed(&e("acme-corp", "api"), &e("acme-corp", "db"), other_port)
                .allowed
        );

        let same = policy.allowed(&e("acme-corp", "web"), &e("acme-corp", "web"), other_port);
        assert_eq!((same.allowed, same.reason), (true, Reason::SameDeployment));
    }

    #[test]
    fn tenants_and_deployments_are_isolated_by_default() {
        let policy = Policy::compile(&seed());
        let http = PortProto::tcp(p(80));
        for (from, to) in [
            (e("acme-corp", "web"), e("acme-corp", "api")),
            (e("acme-corp", "api"), e("acme-corp", "web")),
            (e("acme-corp", "db"), e("big-corp", "db")),
            (e("big-corp", "db"), e("acme-corp", "db")),
            (e("acme-corp", "web"), Endpoint::Internet),
            (
                e("big-corp", "db"),
                Endpoint::EgressProxy {
                    tenant: t("acme-corp"),
                },
            ),
        ] {
            let v = policy.allowed(&from, &to, http);
            assert_eq!(
                (v.allowed, &v.reason),
                (false, &Reason::DefaultDeny),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn egress_is_dns_and_own_proxy_only() {
        let policy = Policy::compile(&seed());
        let web = e("acme-corp", "web");
        let dns = policy.allowed(&web, &Endpoint::ClusterDns, PortProto::udp(dns_port()));
        assert_eq!((dns.allowed, dns.reason), (true, Reason::ClusterDns));
        assert!(
            !policy
                .allowed(&web, &Endpoint::ClusterDns, PortProto::tcp(p(80)))
                .allowed
        );
        let own = Endpoint::EgressProxy {
            tenant: t("acme-corp"),
        };
        assert!(policy.allowed(&web, &own, PortProto::tcp(p(3128))).allowed);
        assert!(!policy.allowed(&web, &own, PortProto::tcp(p(3129))).allowed);
        let other = Endpoint::EgressProxy {
            tenant: t("big-corp"),
        };
        assert!(
            !policy
                .allowed(&web, &other, PortProto::tcp(p(3128)))
                .allowed
        );
    }

    /// The renderer routes a gateway to a deployment's first port only
    /// (one HTTPRoute backend), so a second port is not the gateway's.
    #[test]
    fn a_gateway_reaches_only_the_port_its_route_serves() {
        let mut snap = seed();
        snap.deployments[1].ports = vec![p(5432), p(9187)];
        let central = GatewayScope::Central;
        snap.gateways = vec![Gateway {
            scope: central.clone(),
            created_at: Timestamp(0),
        }];
        let policy = Policy::compile(&snap);
        let gw = Endpoint::Gateway { scope: central };
        let db = e("acme-corp", "db");
        assert!(policy.allowed(&gw, &db, PortProto::tcp(p(5432))).allowed);
        assert!(!policy.allowed(&gw, &db, PortProto::tcp(p(9187))).allowed);
    }

    #[test]
    fn gateway_scopes_reach_what_they_front() {
        let mut snap = seed();
        snap.gateways = vec![
            Gateway {
                scope: GatewayScope::Central,
                created_at: Timestamp(0),
            },
            Gateway {
                scope: GatewayScope::PerTenant {
                    tenant: t("big-corp"),
                },
                created_at: Timestamp(0),
            },
        ];
        let policy = Policy::compile(&snap);
        let central = Endpoint::Gateway {
            scope: GatewayScope::Central,
        };
        let big = Endpoint::Gateway {
            scope: GatewayScope::PerTenant {
                tenant: t("big-corp"),
            },
        };
        let to_gateways: Vec<String> = show(&policy.flows())
            .into_iter()
            .filter(|f| f.starts_with("gateway/"))
            .collect();
        assert_eq!(
            to_gateways,
            [
                "gateway/central -> acme-corp/api 8080/tcp",
                "gateway/central -> acme-corp/db 5432/tcp",
                "gateway/central -> acme-corp/web 80/tcp",
                "gateway/central -> big-corp/db any",
                "gateway/big-corp -> big-corp/db any",
            ]
        );
        assert!(
            !policy
                .allowed(&big, &e("acme-corp", "web"), PortProto::tcp(p(80)))
                .allowed
        );
        // A gateway reaches only the declared ports of a deployment that has any.
        assert!(
            !policy
                .allowed(&central, &e("acme-corp", "web"), PortProto::tcp(p(81)))
                .allowed
        );
    }

    #[test]
    fn removing_an_allow_rule_or_a_deployment_removes_its_flows() {
        let mut snap = seed();
        snap.allow_rules.clear();
        let without_rule = Policy::compile(&snap);
        assert!(
            !without_rule
                .allowed(
                    &e("acme-corp", "api"),
                    &e("acme-corp", "db"),
                    PortProto::tcp(p(5432))
                )
                .allowed
        );

        let mut snap = seed();
        snap.deployments
            .retain(|x| !(x.tenant.as_str() == "acme-corp" && x.name.as_str() == "db"));
        let policy = Policy::compile(&snap);
        assert!(
            policy
                .flows()
                .iter()
                .all(|f| f.from != e("acme-corp", "db") && f.to != e("acme-corp", "db")),
            "a rule naming a deleted deployment must allow nothing"
        );
    }

    #[test]
    fn portless_allow_rule_opens_every_port() {
        let mut snap = seed();
        snap.allow_rules[0].port = None;
        let policy = Policy::compile(&snap);
        let v = policy.allowed(
            &e("acme-corp", "api"),
            &e("acme-corp", "db"),
            PortProto::udp(p(9)),
        );
        assert!(v.allowed);
        assert!(show(&policy.flows()).contains(&"acme-corp/api -> acme-corp/db any".to_owned()));
    }

    #[test]
    fn rules_from_and_rules_to_return_exactly_the_rules_of_an_endpoint() {
        let policy = Policy::compile(&seed());
        let api = e("acme-corp", "api");
        let mine: Vec<&Rule> = policy.rules_from(&api).collect();
        let expected: Vec<&Rule> = policy.rules().iter().filter(|r| r.from == api).collect();
        assert_eq!(mine, expected);
        assert_eq!(mine.len(), 4);
        let db = e("acme-corp", "db");
        let theirs: Vec<&Rule> = policy.rules_to(&db).collect();
        let expected: Vec<&Rule> = policy.rules().iter().filter(|r| r.to == db).collect();
        assert_eq!(theirs, expected);
        assert_eq!(theirs.len(), 2);
    }

    #[test]
    fn compilation_is_deterministic_regardless_of_input_order() {
        let a = seed();
        let mut b = seed();
        b.deployments.reverse();
        b.tenants.reverse();
        assert_eq!(Policy::compile(&a), Policy::compile(&b));
    }
}
