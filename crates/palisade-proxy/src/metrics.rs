//! Prometheus metrics and the access log.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use hyper::Method;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::target::Target;

/// Labels for request counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Tenant name, or `-` when unknown.
    pub tenant: String,
    /// `allow`, `deny`, `report` or `error`.
    pub decision: String,
    /// Reason token (empty for plain allows).
    pub reason: String,
}

/// Labels for byte counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByteLabels {
    /// Tenant name.
    pub tenant: String,
    /// `up` (client to origin) or `down`.
    pub direction: &'static str,
}

/// Labels for upstream errors.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Tenant name.
    pub tenant: String,
    /// Reason token.
    pub reason: &'static str,
}

/// All metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests and tunnels by tenant and decision.
    pub requests: Family<DecisionLabels, Counter>,
    /// Bytes by tenant and direction.
    pub bytes: Family<ByteLabels, Counter>,
    /// Open CONNECT tunnels.
    pub active_tunnels: Gauge,
    /// Open client connections.
    pub active_connections: Gauge,
    /// Request duration (time to response headers for HTTP, tunnel setup for CONNECT).
    pub latency: Histogram,
    /// Upstream failures.
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    /// Config reloads by result.
    pub reloads: Family<Vec<(String, String)>, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade_proxy");
        let requests = Family::<DecisionLabels, Counter>::default();
        let bytes = Family::<ByteLabels, Counter>::default();
        let active_tunnels = Gauge::default();
        let active_connections = Gauge::default();
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        let reloads = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "requests",
            "Requests and tunnels by tenant and decision",
            requests.clone(),
        );
        registry.register(
            "bytes",
            "Bytes relayed by tenant and direction",
            bytes.clone(),
        );
        registry.register(
            "active_tunnels",
            "Open CONNECT tunnels",
            active_tunnels.clone(),
        );
        registry.register(
            "active_connections",
            "Open client connections",
            active_connections.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to response headers or tunnel setup",
            latency.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures by tenant and reason",
            upstream_errors.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads by result",
            reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            bytes,
            active_tunnels,
            active_connections,
            latency,
            upstream_errors,
            reloads,
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// A tenant's counters for the common outcome (allowed, bytes up and down),
/// looked up once per tenant and config generation instead of hashing a label
/// set (and allocating its strings) on every request.
#[derive(Debug, Clone)]
pub struct TenantHandles {
    /// `requests_total{tenant, decision="allow", reason=""}`.
    pub allowed: Counter,
    /// `bytes_total{tenant, direction="up"}`.
    pub up: Counter,
    /// `bytes_total{tenant, direction="down"}`.
    pub down: Counter,
}

impl Metrics {
    /// The counters of `tenant` (created on first use).
    pub fn tenant_handles(&self, tenant: &str) -> TenantHandles {
        // One statement per lookup: a family's guard lives to the end of the
        // statement, and a second get_or_create on the same family would wait
        // for it forever.
        let allowed = self
            .requests
            .get_or_create(&DecisionLabels {
                tenant: tenant.to_string(),
                decision: "allow".to_string(),
                reason: String::new(),
            })
            .clone();
        let up = self
            .bytes
            .get_or_create(&ByteLabels {
                tenant: tenant.to_string(),
                direction: "up",
            })
            .clone();
        let down = self
            .bytes
            .get_or_create(&ByteLabels {
                tenant: tenant.to_string(),
                direction: "down",
            })
            .clone();
        TenantHandles { allowed, up, down }
    }
}

/// Formats as the value, or as nothing when there is none (the access log's
/// `dest` is `""` for requests refused before a target was parsed).
struct OrEmpty<'a, T>(Option<&'a T>);

impl<T: std::fmt::Display> std::fmt::Display for OrEmpty<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => Ok(()),
        }
    }
}

static DASH: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));

/// One request or tunnel, logged (one JSON line) and counted when dropped.
#[derive(Debug)]
pub struct AccessRecord {
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Start time.
    pub start: Instant,
    /// Tenant (or `-`).
    pub tenant: Arc<str>,
    /// Deployment (or `-`).
    pub deployment: Arc<str>,
    /// Client address.
    pub client: SocketAddr,
    /// Method.
    pub method: Method,
    /// Destination, once parsed (formatted as `host:port` only if logged).
    pub dest: Option<Target>,
    /// Resolved address dialled.
    pub resolved: Option<SocketAddr>,
    /// Egress source address used.
    pub egress: Option<IpAddr>,
    /// Status sent.
    pub status: u16,
    /// `allow`, `deny`, `report` or `error`.
    pub decision: &'static str,
    /// Reason token.
    pub reason: &'static str,
    /// Byte counters, shared with the body wrappers and the tunnel.
    pub counters: Arc<Counters>,
    /// The tenant's concurrency permit, released when the record is.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// A placeholder that must not be logged.
    pub silent: bool,
    /// The tenant's precomputed counters, once the tenant is known.
    pub handles: Option<Arc<TenantHandles>>,
}

/// Bytes moved in each direction.
#[derive(Debug, Default)]
pub struct Counters {
    /// Client to origin.
    pub up: AtomicU64,
    /// Origin to client.
    pub down: AtomicU64,
}

impl AccessRecord {
    /// A record for a request that just arrived from `client`.
    pub fn new(metrics: Arc<Metrics>, client: SocketAddr, method: Method) -> Self {
        AccessRecord {
            metrics,
            start: Instant::now(),
            tenant: DASH.clone(),
            deployment: DASH.clone(),
            client,
            method,
            dest: None,
            resolved: None,
            egress: None,
            status: 0,
            decision: "allow",
            reason: "",
            counters: Arc::default(),
            permit: None,
            silent: false,
            handles: None,
        }
    }
}

impl AccessRecord {
    fn count_request(&self) {
        self.metrics
            .requests
            .get_or_create(&DecisionLabels {
                tenant: self.tenant.to_string(),
                decision: self.decision.to_string(),
                reason: self.reason.to_string(),
            })
            .inc();
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        if self.silent {
            return;
        }
        let up = self.counters.up.load(Ordering::Relaxed);
        let down = self.counters.down.load(Ordering::Relaxed);
        let status = self.status;
        tracing::info!(
            target: "palisade_proxy::access",
            tenant = %self.tenant,
            deployment = %self.deployment,
            client = %self.client,
            method = %self.method,
            dest = %OrEmpty(self.dest.as_ref()),
            resolved = self.resolved.map(|a| a.to_string()),
            egress = self.egress.map(|a| a.to_string()),
            status,
            decision = self.decision,
            reason = self.reason,
            bytes_up = up,
            bytes_down = down,
            // Field values are evaluated only when the access log is on: no
            // clock read per request when it is off.
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            "access"
        );
        if let Some(h) = self.handles.as_deref() {
            if self.decision == "allow" && self.reason.is_empty() {
                h.allowed.inc();
            } else {
                self.count_request();
            }
            if up > 0 {
                h.up.inc_by(up);
            }
            if down > 0 {
                h.down.inc_by(down);
            }
            return;
        }
        self.count_request();
        let tenant = self.tenant.to_string();
        if up > 0 {
            self.metrics
                .bytes
                .get_or_create(&ByteLabels {
                    tenant: tenant.clone(),
                    direction: "up",
                })
                .inc_by(up);
        }
        if down > 0 {
            self.metrics
                .bytes
                .get_or_create(&ByteLabels {
                    tenant,
                    direction: "down",
                })
                .inc_by(down);
        }
    }
}
