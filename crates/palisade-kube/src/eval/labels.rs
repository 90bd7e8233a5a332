//! Cilium's label model: every identity label has a source (`k8s`,
//! `reserved`, ...), and a selector key names a source or, without a prefix,
//! matches any source.
//!
//! Cilium converts a policy's Kubernetes `LabelSelector` with
//! `api.NewESFromK8sLabelSelector("", …)`, which parses each key with
//! `labels.GetExtendedKeyFrom`: `k8s:app` selects source `k8s`, `app` alone
//! becomes `any:app` (pkg/policy/api/selector.go, pkg/labels/labels.go,
//! Cilium v1.17/v1.18).

use serde::Deserialize;
use std::collections::BTreeMap;

/// Source of pod labels (and namespace/cluster meta labels).
pub const SOURCE_K8S: &str = "k8s";
/// Source of reserved identities (`reserved:world`, `reserved:host`, ...).
pub const SOURCE_RESERVED: &str = "reserved";
/// A selector key without a source matches every source.
pub const SOURCE_ANY: &str = "any";
/// The label Cilium puts on every pod with its namespace.
pub const NAMESPACE_KEY: &str = "io.kubernetes.pod.namespace";
/// Prefix of the labels carrying the pod's namespace's labels.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// The label carrying the pod's cluster name (`cluster` entity).
pub const CLUSTER_KEY: &str = "io.cilium.k8s.policy.cluster";
/// The label carrying the pod's service account.
pub const SERVICE_ACCOUNT_KEY: &str = "io.cilium.k8s.policy.serviceaccount";

/// One identity label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label {
    /// `k8s`, `reserved`, ...
    pub source: String,
    /// The key without its source.
    pub key: String,
    /// The value (empty for reserved labels).
    pub value: String,
}

impl Label {
    /// A label of `source`.
    pub fn new(source: &str, key: &str, value: &str) -> Self {
        Self {
            source: source.into(),
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Splits a selector key into (source, key) as `labels.parseSource` does:
/// the text before the first `:` is the source; no `:` means `any`.
pub fn split_key(s: &str) -> (String, String) {
    match s.split_once(':') {
        Some((src, key)) if !src.is_empty() => (src.to_owned(), key.to_owned()),
        Some((_, key)) => (SOURCE_ANY.to_owned(), key.to_owned()),
        None => (SOURCE_ANY.to_owned(), s.to_owned()),
    }
}

/// A selector operator (the CRDs allow exactly these four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The key has one of the values.
    In,
    /// The key has none of the values (or is absent).
    NotIn,
    /// The key is present.
    Exists,
    /// The key is absent.
    DoesNotExist,
}

/// One requirement of a selector, on a source-qualified key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The source (`any` matches every source).
    pub source: String,
    /// The key.
    pub key: String,
    /// The operator.
    pub op: Op,
    /// The values (`In`, `NotIn`).
    pub values: Vec<String>,
    /// Whether it came from `matchLabels` (Cilium's `AddMatch` replaces
    /// those, not expressions).
    pub from_match_labels: bool,
}

/// A label selector as Cilium evaluates it: all requirements must hold; no
/// requirement selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// The requirements.
    pub reqs: Vec<Requirement>,
}

/// A Kubernetes `LabelSelector` as written in a policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawSelector {
    /// Key/value equalities.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Expressions.
    #[serde(default)]
    pub match_expressions: Vec<RawExpression>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct RawExpression {
    /// The key.
    pub key: String,
    /// The operator.
    pub operator: String,
    /// The values.
    #[serde(default)]
    pub values: Vec<String>,
}

impl Selector {
    /// Converts a written selector; an operator outside the CRD's enum is
    /// returned as the error (the API server rejects such objects).
    pub fn parse(raw: &RawSelector) -> Result<Self, String> {
        let mut reqs: Vec<Requirement> = raw
            .match_labels
            .iter()
            .map(|(k, v)| {
                let (source, key) = split_key(k);
                Requirement {
                    source,
                    key,
                    op: Op::In,
                    values: vec![v.clone()],
                    from_match_labels: true,
                }
            })
            .collect();
        for e in &raw.match_expressions {
            let op = match e.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(format!(
                        "operator {other:?} is not In, NotIn, Exists or DoesNotExist"
                    ));
                }
            };
            let (source, key) = split_key(&e.key);
            reqs.push(Requirement {
                source,
                key,
                op,
                values: e.values.clone(),
                from_match_labels: false,
            });
        }
        Ok(Self { reqs })
    }

    /// A selector of one `source:key=value` equality.
    pub fn equals(source: &str, key: &str, value: &str) -> Self {
        Self {
            reqs: vec![Requirement {
                source: source.into(),
                key: key.into(),
                op: Op::In,
                values: vec![value.into()],
                from_match_labels: true,
            }],
        }
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &[Label]) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    /// Whether a requirement names `source:key` exactly (Cilium's `HasKey`
    /// on the extended key, matchLabels and matchExpressions alike).
    pub fn has_key(&self, source: &str, key: &str) -> bool {
        self.reqs.iter().any(|r| r.source == source && r.key == key)
    }

    /// Whether a requirement's extended key starts with `source:prefix`
    /// (Cilium's `HasKeyPrefix`).
    pub fn has_key_prefix(&self, source: &str, prefix: &str) -> bool {
        self.reqs
            .iter()
            .any(|r| r.source == source && r.key.starts_with(prefix))
    }

    /// Cilium's `AddMatch`: sets the matchLabels entry for `source:key`,
    /// replacing an existing one.
    pub fn add_match(&mut self, source: &str, key: &str, value: &str) {
        self.reqs
            .retain(|r| !(r.from_match_labels && r.source == source && r.key == key));
        self.reqs.extend(Self::equals(source, key, value).reqs);
    }

    /// Cilium's `AddMatchExpression(key, Exists)`.
    pub fn add_exists(&mut self, source: &str, key: &str) {
        self.reqs.push(Requirement {
            source: source.into(),
            key: key.into(),
            op: Op::Exists,
            values: Vec::new(),
            from_match_labels: false,
        });
    }

    /// The `k8s:`/`any:` keys the selector constrains (for listing what a
    /// tenant could forge).
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.reqs.iter().map(|r| format!("{}:{}", r.source, r.key))
    }
}

impl Requirement {
    fn values_of<'a>(&'a self, labels: &'a [Label]) -> impl Iterator<Item = &'a str> + 'a {
        labels
            .iter()
            .filter(|l| l.key == self.key && (self.source == SOURCE_ANY || l.source == self.source))
            .map(|l| l.value.as_str())
    }

    /// Kubernetes selector semantics over the labels whose key matches.
    fn matches(&self, labels: &[Label]) -> bool {
        let mut present = self.values_of(labels).peekable();
        match self.op {
            Op::Exists => present.peek().is_some(),
            Op::DoesNotExist => present.peek().is_none(),
            Op::In => present.any(|v| self.values.iter().any(|w| w == v)),
            Op::NotIn => !present.any(|v| self.values.iter().any(|w| w == v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs
            .iter()
            .map(|(k, v)| Label::new(SOURCE_K8S, k, v))
            .collect()
    }

    fn sel(json: &str) -> Selector {
        let raw: RawSelector = serde_json::from_str(json).unwrap_or_default();
        Selector::parse(&raw).unwrap_or_default()
    }

    #[test]
    fn unprefixed_keys_match_any_source_and_prefixed_only_theirs() {
        let l = pod(&[("app", "web")]);
        assert!(sel(r#"{"matchLabels":{"app":"web"}}"#).matches(&l));
        assert!(sel(r#"{"matchLabels":{"k8s:app":"web"}}"#).matches(&l));
        assert!(!sel(r#"{"matchLabels":{"reserved:app":"web"}}"#).matches(&l));
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let l = pod(&[("tier", "db")]);
        let m = |e: &str| sel(&format!(r#"{{"matchExpressions":[{e}]}}"#)).matches(&l);
        assert!(m(r#"{"key":"tier","operator":"In","values":["db","web"]}"#));
        assert!(!m(r#"{"key":"tier","operator":"NotIn","values":["db"]}"#));
        assert!(m(r#"{"key":"zone","operator":"NotIn","values":["a"]}"#));
        assert!(m(r#"{"key":"tier","operator":"Exists"}"#));
        assert!(m(r#"{"key":"zone","operator":"DoesNotExist"}"#));
        assert!(!m(r#"{"key":"tier","operator":"DoesNotExist"}"#));
    }

    #[test]
    fn unknown_operators_are_refused() {
        let raw: RawSelector = serde_json::from_str(
            r#"{"matchExpressions":[{"key":"a","operator":"in","values":["x"]}]}"#,
        )
        .unwrap_or_default();
        assert!(Selector::parse(&raw).is_err());
    }
}
