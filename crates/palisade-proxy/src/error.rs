//! The proxy's request errors and their one mapping to HTTP statuses.

use std::fmt;
use std::time::Duration;

use hyper::StatusCode;

/// Where a request failed. Every refusal or failure a client can see is one of these;
/// [`ProxyError::status`] is the only place statuses are chosen.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed (bad target, ambiguous framing...).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Two parsers could disagree on where the request ends (RFC 9112
    /// section 6.3): refused, and the connection is closed after the answer.
    #[error("bad request: ambiguous message framing")]
    AmbiguousFraming,
    /// The caller is not identified and may authenticate.
    #[error("proxy authentication required")]
    AuthRequired,
    /// The caller is not identified and has no way to be.
    #[error("unknown caller")]
    UnknownCaller,
    /// The connection came in on one tenant's listener from a source address
    /// inside another tenant's prefixes: a pod using a port that is not its
    /// tenant's (the network policy should have stopped it).
    #[error("source address belongs to another tenant than this listener's")]
    ForeignSource,
    /// Refused by policy; the reason is a short token.
    #[error("denied by policy: {0}")]
    Denied(&'static str),
    /// Rate limit exceeded.
    #[error("rate limited")]
    RateLimited(Duration),
    /// Too many concurrent requests for the tenant.
    #[error("too many concurrent requests")]
    TooManyConcurrent,
    /// The destination name did not resolve.
    #[error("failed to resolve destination")]
    Resolve(#[source] std::io::Error),
    /// No upstream connection could be made.
    #[error("failed to connect upstream")]
    Connect(#[source] std::io::Error),
    /// Upstream connect or first byte took too long.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream broke the exchange.
    #[error("upstream failed")]
    Upstream(#[source] hyper::Error),
}

/// An error and its causes on one line, outermost first (`what failed:
/// cause: its cause`). Messages say what failed and leave the cause to
/// `source()`, so whatever shows an error to a person shows it through this.
pub(crate) struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl ProxyError {
    /// The status a client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::AmbiguousFraming => StatusCode::BAD_REQUEST,
            ProxyError::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::UnknownCaller | ProxyError::ForeignSource | ProxyError::Denied(_) => {
                StatusCode::FORBIDDEN
            }
            ProxyError::RateLimited(_) | ProxyError::TooManyConcurrent => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProxyError::Resolve(_) | ProxyError::Connect(_) | ProxyError::Upstream(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Short reason token for logs, metrics and the `x-palisade-reason` header.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(r) | ProxyError::Denied(r) => r,
            ProxyError::AmbiguousFraming => "ambiguous-framing",
            ProxyError::AuthRequired => "auth-required",
            ProxyError::UnknownCaller => "unknown-caller",
            ProxyError::ForeignSource => "foreign-source",
            ProxyError::RateLimited(_) => "rate-limited",
            ProxyError::TooManyConcurrent => "concurrency-limited",
            ProxyError::Resolve(_) => "resolve-failed",
            ProxyError::Connect(_) => "connect-failed",
            ProxyError::UpstreamTimeout => "upstream-timeout",
            ProxyError::Upstream(_) => "upstream-failed",
        }
    }

    /// Whether the client connection must be closed after the answer: after an
    /// ambiguous request nobody can tell where the next one starts.
    pub fn closes_connection(&self) -> bool {
        matches!(self, ProxyError::AmbiguousFraming)
    }

    /// Whether this is the upstream's fault (counted in the upstream error metric).
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            ProxyError::Resolve(_)
                | ProxyError::Connect(_)
                | ProxyError::UpstreamTimeout
                | ProxyError::Upstream(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_documented_table() {
        assert_eq!(ProxyError::BadRequest("x").status(), 400);
        assert_eq!(ProxyError::AmbiguousFraming.status(), 400);
        assert!(ProxyError::AmbiguousFraming.closes_connection());
        assert_eq!(ProxyError::Denied("private").status(), 403);
        assert_eq!(ProxyError::ForeignSource.status(), 403);
        assert_eq!(ProxyError::AuthRequired.status(), 407);
        assert_eq!(
            ProxyError::RateLimited(Duration::from_secs(1)).status(),
            429
        );
        assert_eq!(
            ProxyError::Connect(std::io::ErrorKind::ConnectionRefused.into()).status(),
            502
        );
        assert_eq!(ProxyError::UpstreamTimeout.status(), 504);
    }
}
