//! Kubernetes labels that users attach to tenants and deployments.
//!
//! The `palisade.io/` prefix is reserved: Palisade selects and prunes its own
//! objects by those labels, so a user label there could hijack that.

use super::ModelError;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The label prefix Palisade reserves for itself.
pub const RESERVED_PREFIX: &str = "palisade.io/";

fn is_name_segment(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// A label key: `[prefix/]name`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct LabelKey(String);

impl FromStr for LabelKey {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ModelError::InvalidLabel {
            label: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.starts_with(RESERVED_PREFIX) {
            return Err(fail("the palisade.io/ prefix is reserved for Palisade"));
        }
        let (prefix, name) = match s.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, s),
        };
        if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
            return Err(fail(
                "the prefix must be a DNS subdomain such as example.com",
            ));
        }
        if !is_name_segment(name) {
            return Err(fail(
                "the name must be 1-63 characters of [A-Za-z0-9-_.], starting and ending with a letter or digit",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

/// A label value: empty, or 1-63 characters of `[A-Za-z0-9-_.]`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct LabelValue(String);

impl FromStr for LabelValue {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || is_name_segment(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ModelError::InvalidLabel {
                label: s.to_owned(),
                reason: "a value must be empty or 1-63 characters of [A-Za-z0-9-_.], starting and ending with a letter or digit".into(),
            })
        }
    }
}

macro_rules! string_conversions {
    ($ty:ident) => {
        impl $ty {
            /// The label text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $ty {
            type Error = ModelError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
string_conversions!(LabelKey);
string_conversions!(LabelValue);

/// User labels, kept sorted so rendered objects are byte-stable.
pub type Labels = BTreeMap<LabelKey, LabelValue>;

/// Parses `key=value` as typed on a command line.
pub fn parse_label(s: &str) -> Result<(LabelKey, LabelValue), ModelError> {
    let (k, v) = s.split_once('=').ok_or_else(|| ModelError::InvalidLabel {
        label: s.to_owned(),
        reason: "expected key=value".into(),
    })?;
    Ok((k.parse()?, v.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value_pairs() {
        let (k, v) = parse_label("team=payments").unwrap();
        assert_eq!((k.as_str(), v.as_str()), ("team", "payments"));
        let (k, v) = parse_label("example.com/tier=").unwrap();
        assert_eq!((k.as_str(), v.as_str()), ("example.com/tier", ""));
    }

    #[test]
    fn rejects_bad_and_reserved_labels() {
        for l in [
            "noequals",
            "=v",
            "Bad Key=v",
            "k=-v",
            "palisade.io/tenant=x",
            "EXAMPLE.com/k=v",
        ] {
            assert!(parse_label(l).is_err(), "{l}");
        }
    }
}
