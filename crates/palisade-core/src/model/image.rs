//! Container image references, checked against the distribution grammar so a
//! typo fails at `palisade create` instead of as `ErrImagePull` minutes later.

use super::ModelError;
use std::fmt;
use std::str::FromStr;

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `host[.host...][:port]` or `[ipv6][:port]`.
fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.is_empty() || !ip.bytes().all(|x| x.is_ascii_hexdigit() || x == b':') {
            return false;
        }
        let port = match after {
            "" => None,
            a => match a.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (None, port)
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    let host_ok = host.is_none_or(|h| {
        h.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
    });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_digit()));
    host_ok && port_ok
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// `algorithm:hex` with at least 32 hex digits.
fn is_digest(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|x| x.is_ascii_hexdigit())
}

/// The reference grammar of github.com/distribution/reference:
/// `[domain[:port]/]path[:tag][@digest]`, with Docker's rule that the first
/// component is a registry if it has a `.` or `:` or is `localhost`.
fn is_reference(s: &str) -> bool {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if digest.is_some_and(|d| !is_digest(d)) {
        return false;
    }
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') && !rest[i..].contains(']') => {
            (&rest[..i], Some(&rest[i + 1..]))
        }
        _ => (rest, None),
    };
    if tag.is_some_and(|t| !is_tag(t)) {
        return false;
    }
    let mut components = name.split('/').peekable();
    let first = components.next().unwrap_or("");
    let has_more = components.peek().is_some();
    let first_ok = if has_more && (first.contains(['.', ':', '[']) || first == "localhost") {
        is_domain(first)
    } else {
        is_path_component(first)
    };
    first_ok && components.all(is_path_component)
}

/// A container image reference such as `nginx:alpine` or
/// `ghcr.io/acme/api@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Image(String);

impl Image {
    /// The longest reference accepted (the registry's limit on names is 255).
    pub const MAX_LEN: usize = 512;

    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Image {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ModelError::InvalidImage {
            image: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(fail("must not be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(fail("is longer than 512 characters"));
        }
        if s.chars().any(char::is_whitespace) {
            return Err(fail("must not contain white space"));
        }
        if !is_reference(s) {
            return Err(fail(
                "expected [registry/]name[:tag][@digest] with a lowercase name, e.g. nginx:alpine",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for Image {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Image> for String {
    fn from(i: Image) -> String {
        i.0
    }
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_references() {
        for r in [
            "nginx",
            "nginx:alpine",
            "node:18-alpine",
            "postgres:14",
            "library/nginx:1.27",
            "ghcr.io/acme/api:v1.2.3",
            "localhost:5000/team/app",
            "registry.example.com:443/a/b/c:latest",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "[::1]:5000/app:dev",
            "localhost/app",
            "Registry.Example.com/team/app",
            "nginx:1.27@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a__b/c-----d:TAG_1.x",
        ] {
            assert!(r.parse::<Image>().is_ok(), "{r}");
        }
    }

    #[test]
    fn rejects_what_a_runtime_would_not_pull() {
        for r in [
            "",
            "Nginx",
            "nginx:",
            "nginx::alpine",
            "nginx alpine",
            "-nginx",
            "a//b",
            "nginx@sha256:xyz",
        ] {
            let err = r.parse::<Image>().unwrap_err();
            assert!(
                err.to_string().starts_with("invalid image reference"),
                "{r}: {err}"
            );
        }
    }
}
