//! The in-cluster egress proxy's config, for its ConfigMap.
//!
//! `palisade render` and the operator both put this into
//! [`crate::InClusterProxy::config`]; it is [`palisade_proxy::compile::config`]
//! with what running on the egress nodes' host network fixes: the proxy
//! listens on every address of the node (each tenant's listener binds
//! where `listen` does), the kubelet probes the admin port on the node's
//! address, and pods may not use the proxy to reach the pod network.

use crate::Error;
use crate::options::{InClusterProxy, RenderOptions};
use palisade_core::{Snapshot, TenantName};
use palisade_proxy::compile::{self, CompileOptions, DomainRules};
use palisade_proxy::config::ProxyConfig;
use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};

/// The compile options of the in-cluster proxy for `snapshot`.
pub fn options(
    snapshot: &Snapshot,
    render: &RenderOptions,
    domains: BTreeMap<TenantName, DomainRules>,
) -> CompileOptions {
    CompileOptions {
        base: ProxyConfig {
            listen: SocketAddr::from((Ipv6Addr::UNSPECIFIED, render.proxy.port.get())),
            admin_listen: SocketAddr::from((Ipv6Addr::UNSPECIFIED, InClusterProxy::ADMIN_PORT)),
            cluster_deny: vec![snapshot.pool.cidr().into()],
            ..ProxyConfig::default()
        },
        egress: BTreeMap::new(),
        domains,
    }
}

/// The in-cluster proxy's config file for `snapshot` (every tenant), with
/// the Tenant resources' domain rules when the operator has them.
pub fn yaml(
    snapshot: &Snapshot,
    render: &RenderOptions,
    domains: BTreeMap<TenantName, DomainRules>,
) -> Result<String, Error> {
    compile::config_yaml(snapshot, &options(snapshot, render, domains)).map_err(Error::ProxyConfig)
}
