//! Name resolution behind a trait, so tests can inject answers.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// A boxed resolution future.
pub type ResolveFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Resolves a host name (or any notation the system resolver accepts) to addresses.
pub trait Resolver: Send + Sync + std::fmt::Debug + 'static {
    /// All addresses for `host`. The proxy checks every one before dialling any.
    fn resolve(&self, host: &str) -> ResolveFuture;
}

/// The system resolver (`getaddrinfo`), which also turns `2130706433`, `0x7f.1`
/// and `0177.0.0.1` into addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str) -> ResolveFuture {
        let host = host.to_string();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let ips: Vec<IpAddr> = addrs.map(|a: SocketAddr| a.ip()).collect();
            if ips.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no addresses"));
            }
            Ok(ips)
        })
    }
}

/// Fixed answers for some names, the system resolver for the rest (for tests
/// and for pinning names in the config's environment).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    answers: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl StaticResolver {
    /// Build from (name, addresses) pairs; names are matched lower-case.
    pub fn new(answers: impl IntoIterator<Item = (String, Vec<IpAddr>)>) -> Self {
        StaticResolver {
            answers: Arc::new(
                answers
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect(),
            ),
        }
    }
}

impl Resolver for StaticResolver {
    fn resolve(&self, host: &str) -> ResolveFuture {
        match self.answers.get(host) {
            Some(ips) => {
                let ips = ips.clone();
                Box::pin(async move { Ok(ips) })
            }
            None => SystemResolver.resolve(host),
        }
    }
}
