//! What the dashboard's router tests share: a real SQLite store in a
//! temporary directory, initialised with one pool, deployments to fill it,
//! and one way to send a request through the router in-process and read
//! its JSON answer.

#![allow(dead_code, clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use palisade_core::Pool;
use palisade_core::allocator::Timestamp;
use palisade_dashboard::Config;
use palisade_store::{NewDeployment, Store};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tower::ServiceExt;

/// The `Host` every request names (the Origin check compares against it).
pub const HOST: &str = "dash.example:7474";

/// A state database and the lab directory beside it.
pub struct Fixture {
    _dir: tempfile::TempDir,
    /// The state database.
    pub state: PathBuf,
    /// Where the dashboard looks for `verify.json` by default.
    pub lab: PathBuf,
}

impl Fixture {
    /// A store initialised with fd00:1234:5678::/48 cut into /96 subnets
    /// without quarantine, open for the caller to fill.
    pub fn new() -> (Self, Store) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let mut s = Store::open_or_create(&state).unwrap();
        let pool = Pool::new(
            Pool::parse_cidr("fd00:1234:5678::/48").unwrap(),
            "96".parse().unwrap(),
            Duration::ZERO,
        )
        .unwrap();
        s.init(&pool, false, Timestamp(1_000)).unwrap();
        let lab = dir.path().join("lab");
        let f = Self {
            _dir: dir,
            state,
            lab,
        };
        (f, s)
    }

    /// The dashboard's defaults over this store (read-only, no auth).
    pub fn config(&self) -> Config {
        Config::new(self.state.clone())
    }
}

/// A deployment of `nginx:alpine` to create.
pub fn deployment(tenant: &str, name: &str, replicas: u32, ports: &[u16]) -> NewDeployment {
    NewDeployment {
        tenant: tenant.parse().unwrap(),
        name: name.parse().unwrap(),
        image: "nginx:alpine".parse().unwrap(),
        replicas: replicas.try_into().unwrap(),
        ports: ports.iter().map(|p| (*p).try_into().unwrap()).collect(),
        labels: Default::default(),
        workload: Default::default(),
    }
}

/// One request.
pub struct Call<'a> {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// A bearer token.
    pub token: Option<&'a str>,
    /// A JSON body.
    pub body: Option<Value>,
    /// An `Origin` header.
    pub origin: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// `method uri`, nothing else.
    pub fn new(method: Method, uri: impl Into<String>) -> Self {
        Self {
            method,
            uri: uri.into(),
            token: None,
            body: None,
            origin: None,
        }
    }
}

/// What the router answered.
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
    /// The `Content-Type`.
    pub content_type: String,
    /// The `WWW-Authenticate` header.
    pub challenge: Option<String>,
}

/// Sends `c` through `app` in-process, with `Host:` [`HOST`].
pub async fn send(app: &Router, c: Call<'_>) -> Reply {
    let mut req = Request::builder()
        .method(c.method)
        .uri(c.uri)
        .header("host", HOST);
    if let Some(t) = c.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(o) = c.origin {
        req = req.header("origin", o);
    }
    let body = match c.body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (content_type, challenge) = (header("content-type"), header("www-authenticate"));
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        content_type: content_type.unwrap_or_default(),
        challenge,
    }
}
