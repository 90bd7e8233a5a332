//! Container image references, checked against the distribution grammar so a
//! typo fails at `palisade create` instead of as `ErrImagePull` minutes later.

use super::ModelError;
use regex::Regex;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

/// The reference grammar of github.com/distribution/reference:
/// `[domain[:port]/]path[:tag][@digest]`.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain =
        format!(r"(?:{domain_component}(?:\.{domain_component})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?");
    let path_component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
    let tag = r"[\w][\w.-]{0,127}";
    let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    let pattern =
        format!(r"^(?:{domain}/)?{path_component}(?:/{path_component})*(?::{tag})?(?:@{digest})?$");
    #[allow(clippy::expect_used)] // The pattern is a constant; a test compiles it.
    Regex::new(&pattern).expect("image reference pattern compiles")
});

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
        if !REFERENCE.is_match(s) {
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
