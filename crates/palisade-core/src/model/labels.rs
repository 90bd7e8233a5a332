//! Kubernetes labels that users attach to tenants and deployments.
//!
//! The `palisade.io/` prefix is reserved: Palisade selects and prunes its own
//! objects by those labels, so a user label there could hijack that.

use super::ModelError;
use std::collections::BTreeMap;

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

/// A label key's rule: `[prefix/]name`, the prefix a DNS subdomain other
/// than Palisade's own.
fn check_key(s: &str) -> Result<(), ModelError> {
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
    Ok(())
}

/// A label value's rule: empty, or a name segment.
fn check_value(s: &str) -> Result<(), ModelError> {
    if s.is_empty() || is_name_segment(s) {
        Ok(())
    } else {
        Err(ModelError::InvalidLabel {
            label: s.to_owned(),
            reason: "a value must be empty or 1-63 characters of [A-Za-z0-9-_.], starting and ending with a letter or digit".into(),
        })
    }
}

checked_string!(
    /// A label key: `[prefix/]name`.
    LabelKey,
    check_key
);
checked_string!(
    /// A label value: empty, or 1-63 characters of `[A-Za-z0-9-_.]`.
    LabelValue,
    check_value
);

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
