//! The compiled form of a [`ProxyConfig`]: prefix tables, per-tenant policy,
//! credentials and limiters. A new one is built on every reload and swapped in
//! atomically; limiter state is carried over for tenants whose limits did not change.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{DomainPattern, Mode, ProxyConfig, TenantConfig, TenantLimits, pick_egress};
use crate::target::{AddressGuard, Host};

/// Who a caller is.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Index into [`Runtime::tenants`].
    pub tenant: usize,
    /// Deployment name (empty when identified by credentials).
    pub deployment: Arc<str>,
}

/// The listener a connection was accepted on, which decides how its caller
/// is known for the connection's whole life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The shared `listen` address: by source prefix, else credentials.
    Shared,
    /// This tenant's own listener (`listen_port`): the connection is the
    /// tenant's; its source address only names the deployment.
    Tenant(Arc<str>),
}

/// One tenant, compiled.
#[derive(Debug)]
pub struct Tenant {
    /// Name.
    pub name: Arc<str>,
    /// Original config.
    pub config: TenantConfig,
    /// Address policy.
    pub guard: AddressGuard,
    /// Limiter (shared across reloads when unchanged).
    pub limiter: Arc<Limiter>,
    /// The tenant's metric handles, looked up on first use.
    pub handles: std::sync::OnceLock<Arc<crate::metrics::TenantHandles>>,
}

impl Tenant {
    /// The tenant's precomputed counters.
    pub fn handles(&self, metrics: &crate::metrics::Metrics) -> Arc<crate::metrics::TenantHandles> {
        self.handles
            .get_or_init(|| Arc::new(metrics.tenant_handles(&self.name)))
            .clone()
    }
}

/// A compiled configuration.
#[derive(Debug)]
pub struct Runtime {
    /// Increases on every reload; part of the upstream pool key.
    pub generation: u64,
    /// The config it was built from.
    pub config: ProxyConfig,
    /// Tenants by index.
    pub tenants: Vec<Tenant>,
    v4: PrefixMap<Ipv4Net, Caller>,
    v6: PrefixMap<Ipv6Net, Caller>,
    /// tenant name -> index, for connections on a tenant's listener
    by_name: HashMap<Arc<str>, usize>,
    /// user name -> (tenant index, PHC hash)
    users: HashMap<String, (usize, String)>,
    /// SHA-256 of `user:password` strings that verified, so Argon2 runs once per credential.
    verified: Mutex<HashMap<[u8; 32], usize>>,
}

/// Result of checking a `Proxy-Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Valid credentials for this tenant.
    Tenant(usize),
    /// No header or not Basic.
    Missing,
    /// Present but wrong.
    Invalid,
}

impl Runtime {
    /// Compile `config`. `own` are the proxy's actual listener addresses (denied as
    /// destinations); `previous` donates limiter state.
    pub fn build(config: ProxyConfig, own: &[SocketAddr], previous: Option<&Runtime>) -> Runtime {
        let mut v4 = PrefixMap::new();
        let mut v6 = PrefixMap::new();
        let mut users = HashMap::new();
        let mut tenants = Vec::with_capacity(config.tenants.len());
        let own = with_tenant_listeners(&config, own);
        for (i, t) in config.tenants.iter().enumerate() {
            for src in &t.sources {
                let caller = Caller {
                    tenant: i,
                    deployment: Arc::from(src.deployment.as_str()),
                };
                match src.prefix {
                    ipnet::IpNet::V4(n) => {
                        v4.insert(n, caller);
                    }
                    ipnet::IpNet::V6(n) => {
                        v6.insert(n, caller);
                    }
                }
            }
            for c in &t.credentials {
                users.insert(c.username.clone(), (i, c.password_hash.clone()));
            }
            let limiter = previous
                .and_then(|p| p.tenants.iter().find(|o| o.config.name == t.name))
                .filter(|o| o.config.limits == t.limits)
                .map(|o| o.limiter.clone())
                .unwrap_or_else(|| Arc::new(Limiter::new(&t.limits)));
            tenants.push(Tenant {
                name: Arc::from(t.name.as_str()),
                guard: AddressGuard::new(&config.cluster_deny, &t.allow_cidrs, &t.deny_cidrs, &own),
                config: t.clone(),
                limiter,
                handles: std::sync::OnceLock::new(),
            });
        }
        let by_name = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Runtime {
            generation: previous.map_or(1, |p| p.generation + 1),
            config,
            tenants,
            v4,
            v6,
            by_name,
            users,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Longest-prefix match of a client's source address.
    pub fn identify(&self, source: IpAddr) -> Option<&Caller> {
        match source.to_canonical() {
            IpAddr::V4(a) => self.v4.get_lpm(&Ipv4Net::from(a)).map(|(_, c)| c),
            IpAddr::V6(a) => self.v6.get_lpm(&Ipv6Net::from(a)).map(|(_, c)| c),
        }
    }

    /// The caller on tenant `tenant`'s listener: that tenant, with the
    /// deployment its source prefix names (`-` when it names none, as for a
    /// pod whose IPv4 address or SNAT hides it). A source inside another
    /// tenant's prefixes is refused: the listener belongs to one tenant only.
    pub fn identify_on(&self, tenant: &str, source: IpAddr) -> Result<Caller, Refusal> {
        let index = *self.by_name.get(tenant).ok_or(Refusal::Gone)?;
        match self.identify(source) {
            None => Ok(Caller {
                tenant: index,
                deployment: Arc::from("-"),
            }),
            Some(c) if c.tenant == index => Ok(c.clone()),
            Some(c) => Err(Refusal::Foreign {
                owner: self.tenants[c.tenant].name.clone(),
            }),
        }
    }

    /// Whether any tenant accepts credentials (decides 407 versus 403 for strangers).
    pub fn has_credentials(&self) -> bool {
        !self.users.is_empty()
    }

    /// Check a `Proxy-Authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> AuthOutcome {
        let Some(value) = header else {
            return AuthOutcome::Missing;
        };
        let Some(b64) = value
            .strip_prefix(b"Basic ")
            .or_else(|| value.strip_prefix(b"basic "))
        else {
            return AuthOutcome::Missing;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim_ascii()) else {
            return AuthOutcome::Invalid;
        };
        let digest: [u8; 32] = Sha256::digest(&decoded).into();
        if let Ok(cache) = self.verified.lock()
            && let Some(t) = cache.get(&digest)
        {
            return AuthOutcome::Tenant(*t);
        }
        let Ok(text) = std::str::from_utf8(&decoded) else {
            return AuthOutcome::Invalid;
        };
        let Some((user, password)) = text.split_once(':') else {
            return AuthOutcome::Invalid;
        };
        let Some((tenant, hash)) = self.users.get(user) else {
            return AuthOutcome::Invalid;
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return AuthOutcome::Invalid;
        };
        if Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_err()
        {
            return AuthOutcome::Invalid;
        }
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= 4096 {
                cache.clear();
            }
            cache.insert(digest, *tenant);
        }
        AuthOutcome::Tenant(*tenant)
    }

    /// Egress source address for `tenant` towards `dest`.
    pub fn egress_for(&self, tenant: &Tenant, dest: IpAddr) -> Option<IpAddr> {
        pick_egress(&tenant.config.egress, &self.config.default_egress, dest)
    }
}

/// Why a connection on a tenant's listener has no caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The tenant was removed by a reload after the connection was accepted.
    Gone,
    /// The source address is inside this other tenant's prefixes.
    Foreign {
        /// The tenant the source prefix belongs to.
        owner: Arc<str>,
    },
}

/// `own` (the shared and admin listeners) plus every tenant listener, on the
/// shared listener's address: destinations no tenant may reach.
fn with_tenant_listeners(config: &ProxyConfig, own: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut all = own.to_vec();
    if let Some(shared) = own.first() {
        all.extend(
            config
                .tenants
                .iter()
                .filter_map(|t| t.listen_port)
                .map(|port| SocketAddr::new(shared.ip(), port)),
        );
    }
    all
}

/// Outcome of the domain and port rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Refused (enforce mode).
    Deny(&'static str),
    /// Would be refused, but the tenant is in report mode.
    Report(&'static str),
}

impl Tenant {
    /// Apply domain and port rules to a target.
    pub fn policy(&self, host: &Host, port: u16) -> Verdict {
        let c = &self.config;
        let reason = if !c.allow_ports.contains(&port) {
            Some("port-not-allowed")
        } else {
            match host {
                Host::Name(name) => {
                    let any = |list: &[DomainPattern]| list.iter().any(|p| p.matches(name));
                    if any(&c.deny_domains) {
                        Some("domain-denied")
                    } else if !c.allow_domains.is_empty() && !any(&c.allow_domains) {
                        Some("domain-not-allowed")
                    } else {
                        None
                    }
                }
                Host::Ip(_) if !c.allow_domains.is_empty() => Some("domain-not-allowed"),
                Host::Ip(_) => None,
            }
        };
        match (reason, c.mode) {
            (None, _) => Verdict::Allow,
            (Some(r), Mode::Enforce) => Verdict::Deny(r),
            (Some(r), Mode::Report) => Verdict::Report(r),
        }
    }
}

/// Per-tenant concurrency and rate limiter.
#[derive(Debug)]
pub struct Limiter {
    concurrency: Option<Arc<Semaphore>>,
    bucket: Option<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

/// Why the limiter said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Rate exceeded; retry after this long.
    Rate(Duration),
    /// Too many concurrent requests.
    Concurrency,
}

impl Limiter {
    /// A limiter for these limits.
    pub fn new(l: &TenantLimits) -> Self {
        let concurrency =
            (l.max_concurrent > 0).then(|| Arc::new(Semaphore::new(l.max_concurrent)));
        let bucket = (l.requests_per_second > 0).then(|| {
            let rate = f64::from(l.requests_per_second);
            let burst = if l.burst > 0 {
                f64::from(l.burst)
            } else {
                rate
            };
            Mutex::new(Bucket {
                rate,
                burst,
                tokens: burst,
                last: Instant::now(),
            })
        });
        Limiter {
            concurrency,
            bucket,
        }
    }

    /// Admit one request; the permit (if any) must be held for its duration.
    pub fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, Limited> {
        if let Some(bucket) = &self.bucket
            && let Ok(mut b) = bucket.lock()
        {
            let now = Instant::now();
            let elapsed = now.duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * b.rate).min(b.burst);
            b.last = now;
            if b.tokens < 1.0 {
                let wait = (1.0 - b.tokens) / b.rate;
                return Err(Limited::Rate(Duration::from_secs_f64(wait.max(0.001))));
            }
            b.tokens -= 1.0;
        }
        match &self.concurrency {
            None => Ok(None),
            Some(sem) => sem
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| Limited::Concurrency),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    fn runtime(yaml: &str) -> Runtime {
        Runtime::build(ProxyConfig::from_yaml(yaml).unwrap(), &[], None)
    }

    #[test]
    fn longest_prefix_wins_for_v4_v6_and_mapped_sources() {
        let rt = runtime(
            "tenants:\n- name: a\n  sources: [{prefix: 10.0.0.0/8, deployment: wide}, {prefix: '2001:db8::/32', deployment: v6wide}]\n- name: b\n  sources: [{prefix: 10.1.0.0/16, deployment: narrow}, {prefix: '2001:db8:0:1::/96', deployment: v6narrow}]\n",
        );
        let who = |s: &str| {
            rt.identify(s.parse().unwrap()).map(|c| {
                (
                    rt.tenants[c.tenant].name.to_string(),
                    c.deployment.to_string(),
                )
            })
        };
        assert_eq!(who("10.2.0.1"), Some(("a".into(), "wide".into())));
        assert_eq!(who("10.1.0.1"), Some(("b".into(), "narrow".into())));
        assert_eq!(who("::ffff:10.1.0.1"), Some(("b".into(), "narrow".into())));
        assert_eq!(
            who("2001:db8:0:1::5"),
            Some(("b".into(), "v6narrow".into()))
        );
        assert_eq!(who("2001:db8:0:2::5"), Some(("a".into(), "v6wide".into())));
        assert_eq!(who("11.0.0.1"), None);
    }

    #[test]
    fn a_tenant_listener_names_the_tenant_and_refuses_other_tenants_sources() {
        let rt = runtime(
            "tenants:\n- name: a\n  listen_port: 20000\n  sources: [{prefix: '2001:db8:0:1::/96', deployment: web}]\n- name: b\n  sources: [{prefix: '2001:db8:0:2::/96', deployment: api}]\n",
        );
        let on_a = |s: &str| {
            rt.identify_on("a", s.parse().unwrap())
                .map(|c| (c.tenant, c.deployment.to_string()))
        };
        // An IPv4 pod address (not in any prefix): tenant a, no deployment.
        assert_eq!(on_a("10.0.0.7"), Ok((0, "-".into())));
        // a's own /96 still names the deployment.
        assert_eq!(on_a("2001:db8:0:1::5"), Ok((0, "web".into())));
        assert_eq!(
            on_a("2001:db8:0:2::5"),
            Err(Refusal::Foreign { owner: "b".into() })
        );
        assert_eq!(
            rt.identify_on("gone", "10.0.0.7".parse().unwrap()).err(),
            Some(Refusal::Gone)
        );
    }

    #[test]
    fn tenant_listeners_are_denied_as_destinations() {
        let config = ProxyConfig::from_yaml(
            "tenants: [{name: a, listen_port: 20000, allow_cidrs: [127.0.0.0/8]}]",
        )
        .unwrap();
        let own = ["127.0.0.1:3128".parse().unwrap()];
        let rt = Runtime::build(config, &own, None);
        let guard = &rt.tenants[0].guard;
        assert!(guard.check("127.0.0.1:20000".parse().unwrap()).is_err());
        assert!(guard.check("127.0.0.1:3128".parse().unwrap()).is_err());
        assert!(guard.check("127.0.0.1:20001".parse().unwrap()).is_ok());
    }

    #[test]
    fn basic_credentials_verify_against_argon2_hash() {
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        let hash = Argon2::default()
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        let rt = runtime(&format!(
            "tenants:\n- name: a\n- name: b\n  credentials: [{{username: ci, password_hash: '{hash}'}}]\n"
        ));
        let hdr = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            rt.authenticate(Some(hdr("ci:s3cret").as_bytes())),
            AuthOutcome::Tenant(1)
        );
        // Second time comes from the cache; still right.
        assert_eq!(
            rt.authenticate(Some(hdr("ci:s3cret").as_bytes())),
            AuthOutcome::Tenant(1)
        );
        assert_eq!(
            rt.authenticate(Some(hdr("ci:wrong").as_bytes())),
            AuthOutcome::Invalid
        );
        assert_eq!(
            rt.authenticate(Some(hdr("who:s3cret").as_bytes())),
            AuthOutcome::Invalid
        );
        assert_eq!(rt.authenticate(None), AuthOutcome::Missing);
    }

    #[test]
    fn report_mode_reports_what_enforce_denies() {
        let rt = runtime(
            "tenants:\n- name: a\n  allow_domains: ['*.example.com']\n  deny_domains: [bad.example.com]\n- name: b\n  mode: report\n  allow_domains: ['*.example.com']\n",
        );
        let name = |s: &str| Host::Name(s.into());
        let a = &rt.tenants[0];
        assert_eq!(a.policy(&name("api.example.com"), 443), Verdict::Allow);
        assert_eq!(
            a.policy(&name("bad.example.com"), 443),
            Verdict::Deny("domain-denied")
        );
        assert_eq!(
            a.policy(&name("evil.org"), 443),
            Verdict::Deny("domain-not-allowed")
        );
        assert_eq!(
            a.policy(&name("api.example.com"), 22),
            Verdict::Deny("port-not-allowed")
        );
        let b = &rt.tenants[1];
        assert_eq!(
            b.policy(&name("evil.org"), 443),
            Verdict::Report("domain-not-allowed")
        );
    }

    #[test]
    fn token_bucket_refuses_after_burst_and_says_when_to_retry() {
        let l = Limiter::new(&TenantLimits {
            max_concurrent: 0,
            requests_per_second: 1,
            burst: 2,
        });
        assert!(l.admit().is_ok());
        assert!(l.admit().is_ok());
        match l.admit() {
            Err(Limited::Rate(d)) => assert!(d > Duration::from_millis(500)),
            other => panic!("expected rate limit, got {other:?}"),
        }
    }

    #[test]
    fn concurrency_permit_is_released_on_drop() {
        let l = Limiter::new(&TenantLimits {
            max_concurrent: 1,
            ..Default::default()
        });
        let p = l.admit().unwrap();
        assert_eq!(l.admit().err(), Some(Limited::Concurrency));
        drop(p);
        assert!(l.admit().is_ok());
    }
}
