//! Palisade's multi-tenant egress proxy.
//!
//! An HTTP/1.1 forward proxy (absolute-form requests and `CONNECT` tunnels) that
//! knows its callers by source address: the client's address is matched against
//! every tenant's deployment prefixes (longest prefix wins), or, for clients
//! outside those, against per-tenant Basic credentials. Each tenant's outgoing
//! connections leave from its own egress address. Destinations are resolved once,
//! every answer is checked against the SSRF deny ranges, and only a checked
//! address is dialled.
//!
//! Entry points: [`config::ProxyConfig`] (the YAML file a control plane renders),
//! [`serve`] / [`Proxy`] (listener + shutdown future in, like mini-redis), and
//! [`cli::main_with_args`] for `palisade proxy --config FILE`.
//!
//! Architecture invariant: this crate knows nothing about the store or
//! Kubernetes; everything it needs comes from the config file, which
//! [`compile::config`] builds from the core model for every control plane.

#![forbid(unsafe_code)]

pub mod cli;
pub mod compile;
pub mod config;
pub mod error;
pub mod metrics;
pub mod proxy;
pub mod relay;
pub mod resolve;
pub mod runtime;
pub mod server;
pub mod sniff;
pub mod target;
pub mod upstream;
pub mod workers;

pub use config::{ConfigError, ProxyConfig, TenantConfig};
pub use error::ProxyError;
pub use resolve::{Resolver, StaticResolver, SystemResolver};
pub use server::{Proxy, ProxyHandle, ServeError, serve};
