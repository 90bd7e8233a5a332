//! The egress page: per-tenant traffic from the proxy's Prometheus metrics.
//!
//! The proxy is the only component that sees egress requests, so the
//! dashboard reads its `/metrics` rather than keeping counters of its own.
//! Parsing is done by `prometheus-parse`; this module only folds samples
//! into per-tenant rows (pure, tested on captured text).

use serde::Serialize;
use std::collections::BTreeMap;

/// One tenant's egress.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TenantEgress {
    /// Tenant name as the proxy labels it (`-` for unidentified callers).
    pub tenant: String,
    /// All requests and tunnels.
    pub requests: u64,
    /// Allowed.
    pub allowed: u64,
    /// Denied by policy.
    pub denied: u64,
    /// Allowed only because the tenant is in report mode.
    pub reported: u64,
    /// Failed (upstream errors, timeouts).
    pub errors: u64,
    /// Bytes client → origin.
    pub bytes_up: u64,
    /// Bytes origin → client.
    pub bytes_down: u64,
    /// Denials by reason token, largest first.
    pub denials: Vec<ReasonCount>,
    /// Upstream errors by reason token, largest first.
    pub upstream_errors: Vec<ReasonCount>,
}

/// A count for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    /// Reason token as the proxy reports it.
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// Everything the egress page shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EgressSummary {
    /// Per tenant, by name.
    pub tenants: Vec<TenantEgress>,
    /// Open client connections now.
    pub active_connections: u64,
    /// Open CONNECT tunnels now.
    pub active_tunnels: u64,
}

/// Why metrics text could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid Prometheus metrics text")]
pub struct ParseError(#[from] std::io::Error);

fn number(v: &prometheus_parse::Value) -> Option<f64> {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => Some(*x),
        _ => None,
    }
}

fn whole(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // Counters are integral; round away float noise.
        x.round() as u64
    } else {
        0
    }
}

fn sorted(map: BTreeMap<String, u64>) -> Vec<ReasonCount> {
    let mut v: Vec<ReasonCount> = map
        .into_iter()
        .map(|(reason, count)| ReasonCount { reason, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    v
}

/// Folds the proxy's metrics text into per-tenant rows.
pub fn summarise(text: &str) -> Result<EgressSummary, ParseError> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
    let mut rows: BTreeMap<String, TenantEgress> = BTreeMap::new();
    let mut denials: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut upstream: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut summary = EgressSummary::default();
    for s in &scrape.samples {
        let Some(value) = number(&s.value).map(whole) else {
            continue;
        };
        let tenant = s.labels.get("tenant").unwrap_or("-").to_owned();
        let reason = s.labels.get("reason").unwrap_or("").to_owned();
        // OpenMetrics (what prometheus-client writes) suffixes counters
        // with `_total`; the classic format may not.
        let name = s.metric.strip_suffix("_total").unwrap_or(&s.metric);
        match name {
            "palisade_proxy_requests" => {
                let row = rows.entry(tenant.clone()).or_default();
                row.requests += value;
                match s.labels.get("decision").unwrap_or("") {
                    "allow" => row.allowed += value,
                    "deny" => {
                        row.denied += value;
                        *denials
                            .entry(tenant)
                            .or_default()
                            .entry(reason)
                            .or_default() += value;
                    }
                    "report" => row.reported += value,
                    _ => row.errors += value,
                }
            }
            "palisade_proxy_bytes" => {
                let row = rows.entry(tenant).or_default();
                match s.labels.get("direction") {
                    Some("up") => row.bytes_up += value,
                    _ => row.bytes_down += value,
                }
            }
            "palisade_proxy_upstream_errors" => {
                rows.entry(tenant.clone()).or_default();
                *upstream
                    .entry(tenant)
                    .or_default()
                    .entry(reason)
                    .or_default() += value;
            }
            "palisade_proxy_active_connections" => summary.active_connections = value,
            "palisade_proxy_active_tunnels" => summary.active_tunnels = value,
            _ => {}
        }
    }
    summary.tenants = rows
        .into_iter()
        .map(|(tenant, mut row)| {
            row.denials = sorted(denials.remove(&tenant).unwrap_or_default());
            row.upstream_errors = sorted(upstream.remove(&tenant).unwrap_or_default());
            row.tenant = tenant;
            row
        })
        .collect();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// As palisade-proxy's prometheus-client registry writes it.
    const TEXT: &str = r#"# HELP palisade_proxy_requests Requests and tunnels by tenant and decision.
# TYPE palisade_proxy_requests counter
palisade_proxy_requests_total{tenant="acme",decision="allow",reason=""} 7
palisade_proxy_requests_total{tenant="acme",decision="deny",reason="deny_domain"} 2
palisade_proxy_requests_total{tenant="acme",decision="deny",reason="port"} 3
palisade_proxy_requests_total{tenant="-",decision="deny",reason="unknown_client"} 1
palisade_proxy_requests_total{tenant="globex",decision="error",reason="connect"} 1
# HELP palisade_proxy_bytes Bytes relayed by tenant and direction.
# TYPE palisade_proxy_bytes counter
palisade_proxy_bytes_total{tenant="acme",direction="up"} 1200
palisade_proxy_bytes_total{tenant="acme",direction="down"} 34567
# HELP palisade_proxy_active_tunnels Open CONNECT tunnels.
# TYPE palisade_proxy_active_tunnels gauge
palisade_proxy_active_tunnels 2
# TYPE palisade_proxy_active_connections gauge
palisade_proxy_active_connections 5
# TYPE palisade_proxy_request_duration_seconds histogram
palisade_proxy_request_duration_seconds_sum 0.5
palisade_proxy_request_duration_seconds_count 8
palisade_proxy_request_duration_seconds_bucket{le="0.001"} 3
palisade_proxy_request_duration_seconds_bucket{le="+Inf"} 8
# TYPE palisade_proxy_upstream_errors counter
palisade_proxy_upstream_errors_total{tenant="globex",reason="connect"} 1
# EOF
"#;

    #[test]
    fn folds_samples_per_tenant() {
        let s = summarise(TEXT).unwrap();
        assert_eq!(s.active_tunnels, 2);
        assert_eq!(s.active_connections, 5);
        let names: Vec<&str> = s.tenants.iter().map(|t| t.tenant.as_str()).collect();
        assert_eq!(names, ["-", "acme", "globex"]);
        let acme = &s.tenants[1];
        assert_eq!((acme.requests, acme.allowed, acme.denied), (12, 7, 5));
        assert_eq!((acme.bytes_up, acme.bytes_down), (1200, 34567));
        assert_eq!(
            acme.denials,
            [
                ReasonCount {
                    reason: "port".into(),
                    count: 3
                },
                ReasonCount {
                    reason: "deny_domain".into(),
                    count: 2
                },
            ]
        );
        let globex = &s.tenants[2];
        assert_eq!(globex.errors, 1);
        assert_eq!(globex.upstream_errors[0].reason, "connect");
    }

    #[test]
    fn empty_text_is_empty_summary() {
        let s = summarise("").unwrap();
        assert!(s.tenants.is_empty());
    }
}
