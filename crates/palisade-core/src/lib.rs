//! Palisade's pure core.
//!
//! Everything that decides *what* the platform should look like lives here:
//! the model (tenants, deployments, gateways and their validated names), the
//! IPv6 subnet pool and the allocator that carves it. Every other crate — the
//! SQLite store, the Kubernetes renderer, the proxy, the lab, the operator —
//! turns these decisions into effects.
//!
//! This crate does no I/O, reads no clock and imports nothing from Kubernetes,
//! so it can be tested exhaustively and reused by every dataplane. Time enters
//! as a [`Timestamp`] argument.

#![forbid(unsafe_code)]

pub mod allocator;
mod bitset;
pub mod model;
pub mod policy;
pub mod pool;
pub mod snapshot;

pub use allocator::{HoldLedger, Ledger, MemoryLedger, SubnetIndex, Timestamp};
pub use model::{
    Cpu, Deployment, DeploymentName, EgressMode, EgressProfile, Gateway, GatewayScope, Image,
    LabelKey, LabelValue, Labels, Memory, ModelError, NodePoolName, PROXY_PORTS, Port, Quota,
    Replicas, SecurityProfile, Tenant, TenantName, WorkloadSpec,
};
pub use policy::{
    Endpoint, Flow, Policy, PolicyOptions, PortProto, Ports, Protocol, Reason, Rule, Verdict,
};
pub use pool::{Pool, PoolError, SubnetLen};
pub use snapshot::{AllowRule, Snapshot};
