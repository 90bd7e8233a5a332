//! Prometheus metrics: what an on-call person needs to see that the
//! operator works (reconciles succeed, how long they take) and that the
//! pool is not running dry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Which controller a sample is about.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// `tenant` or `workload`.
    pub controller: String,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Family<ControllerLabel, Counter>,
    /// Reconciles that failed.
    pub errors: Family<ControllerLabel, Counter>,
    /// Reconcile duration in seconds.
    pub duration: Family<ControllerLabel, Histogram>,
    /// Claims created.
    pub claims_created: Counter,
    /// Claim creates that lost a race (409) and moved to the next candidate.
    pub claim_conflicts: Counter,
    /// Claims deleted by the garbage-collection pass.
    pub claims_collected: Counter,
    /// Subnets claimed, as of the last count.
    pub subnets_allocated: Gauge<f64, AtomicU64>,
    /// Subnets free (capacity minus claimed); a float because a /48 of
    /// /96s holds 2^48.
    pub subnets_free: Gauge<f64, AtomicU64>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
}

fn label(controller: &str) -> ControllerLabel {
    ControllerLabel {
        controller: controller.to_owned(),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("palisade_operator");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ControllerLabel, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let claims_created = Counter::default();
        let claim_conflicts = Counter::default();
        let claims_collected = Counter::default();
        let subnets_allocated = Gauge::<f64, AtomicU64>::default();
        let subnets_free = Gauge::<f64, AtomicU64>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed", errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "claims_created",
            "Subnet claims created",
            claims_created.clone(),
        );
        registry.register(
            "claim_conflicts",
            "Claim creates that lost a race (409) and tried the next subnet",
            claim_conflicts.clone(),
        );
        registry.register(
            "claims_collected",
            "Orphaned claims deleted by garbage collection",
            claims_collected.clone(),
        );
        registry.register(
            "subnets_allocated",
            "Subnets claimed",
            subnets_allocated.clone(),
        );
        registry.register(
            "subnets_free",
            "Subnets free in the pool",
            subnets_free.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        Self {
            registry,
            reconciles,
            errors,
            duration,
            claims_created,
            claim_conflicts,
            claims_collected,
            subnets_allocated,
            subnets_free,
            leader,
        }
    }
}

impl Metrics {
    /// Records one reconcile of `controller`.
    pub fn observe(&self, controller: &str, seconds: f64, ok: bool) {
        self.reconciles.get_or_create(&label(controller)).inc();
        self.duration
            .get_or_create(&label(controller))
            .observe(seconds);
        if !ok {
            self.errors.get_or_create(&label(controller)).inc();
        }
    }

    /// Sets the pool gauges from a claim count.
    pub fn set_pool(&self, capacity: u128, allocated: usize) {
        // Precision loss above 2^53 is irrelevant for a dashboard.
        #[allow(clippy::cast_precision_loss)]
        let (cap, used) = (capacity as f64, allocated as f64);
        self.subnets_allocated.set(used);
        self.subnets_free.set(cap - used);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
