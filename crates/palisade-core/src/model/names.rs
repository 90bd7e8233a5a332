//! Names that become Kubernetes object names and label values.
//!
//! A tenant becomes the namespace `tenant-<name>`, which must itself be a
//! DNS-1123 label, so tenant names are shorter than the 63 characters a
//! deployment name may use.

use super::ModelError;

/// The prefix every tenant namespace carries.
pub const NAMESPACE_PREFIX: &str = "tenant-";

/// The longest DNS-1123 label.
const LABEL_MAX: usize = 63;

/// Checks the DNS-1123 label rules: 1..=max characters of `[a-z0-9-]`,
/// starting and ending with an alphanumeric.
fn check_label(kind: &'static str, name: &str, max: usize) -> Result<(), ModelError> {
    let fail = |reason: String| ModelError::InvalidName {
        kind,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(fail("must not be empty".into()));
    }
    if name.len() > max {
        return Err(fail(format!(
            "is {} characters long, at most {max} are allowed",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(fail(format!(
            "contains {c:?}; only lowercase letters, digits and '-' are allowed (DNS-1123 label)"
        )));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(fail(
            "must start and end with a lowercase letter or digit".into(),
        ));
    }
    Ok(())
}

/// A DNS-1123 label of at most `$max` characters naming a `$kind`.
macro_rules! label_name {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $max:expr) => {
        checked_string!($(#[$doc])* $ty, |s: &str| check_label($kind, s, $max));

        impl $ty {
            /// The longest name accepted.
            pub const MAX_LEN: usize = $max;
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

label_name!(
    /// A tenant's name. Its namespace `tenant-<name>` must fit in 63
    /// characters, so the name itself may have at most 56.
    TenantName,
    "tenant",
    LABEL_MAX - NAMESPACE_PREFIX.len()
);

label_name!(
    /// A deployment's name, unique within its tenant.
    DeploymentName,
    "deployment",
    LABEL_MAX
);

label_name!(
    /// A dedicated node pool (node group) that a tenant's pods are pinned to.
    NodePoolName,
    "node pool",
    LABEL_MAX
);

impl TenantName {
    /// The Kubernetes namespace that holds this tenant's objects.
    pub fn namespace(&self) -> String {
        format!("{NAMESPACE_PREFIX}{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_seed_names() {
        for n in ["acme-corp", "big-corp", "test-tenant-2", "a", "0abc"] {
            assert!(n.parse::<TenantName>().is_ok(), "{n}");
        }
        let t: TenantName = "acme-corp".parse().unwrap();
        assert_eq!(t.namespace(), "tenant-acme-corp");
    }

    #[test]
    fn rejects_names_kubernetes_would_reject() {
        for n in [
            "",
            "Acme",
            "acme_corp",
            "-acme",
            "acme-",
            "a.b",
            "ac me",
            "é",
        ] {
            let err = n.parse::<DeploymentName>().unwrap_err();
            assert!(err.to_string().contains("invalid deployment name"), "{err}");
        }
    }

    #[test]
    fn tenant_namespace_must_fit_63_characters() {
        let ok = "a".repeat(56);
        assert_eq!(ok.parse::<TenantName>().unwrap().namespace().len(), 63);
        let err = "a".repeat(57).parse::<TenantName>().unwrap_err();
        assert!(err.to_string().contains("at most 56"), "{err}");
        assert!("a".repeat(63).parse::<DeploymentName>().is_ok());
        assert!("a".repeat(64).parse::<DeploymentName>().is_err());
    }

    #[test]
    fn serde_rejects_invalid_names() {
        assert!(serde_json::from_str::<TenantName>("\"Bad\"").is_err());
        let t: TenantName = serde_json::from_str("\"good\"").unwrap();
        assert_eq!(t.as_str(), "good");
    }
}
