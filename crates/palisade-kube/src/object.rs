//! One rendered Kubernetes object, independent of its Rust type.
//!
//! The renderer builds typed objects (`k8s-openapi`, derived CRDs) so field
//! names and nesting are checked by the compiler; everything downstream —
//! YAML, the GitOps tree, server-side apply, pruning — only needs the
//! group/version/kind, the name and the JSON body, so it works on this.

use crate::Error;
use kube::Resource;
use serde::Serialize;
use serde_json::Value;

/// A rendered object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `apiVersion`, e.g. `apps/v1`.
    pub api_version: String,
    /// `kind`, e.g. `Deployment`.
    pub kind: String,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// The whole object, `apiVersion` and `kind` included.
    pub body: Value,
}

impl Object {
    /// Converts a typed object.
    pub fn new<K>(obj: &K) -> Result<Self, Error>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let meta = obj.meta();
        let name = meta.name.clone().unwrap_or_default();
        let mut body = serde_json::to_value(obj).map_err(|source| Error::Serialize {
            kind: K::kind(&()).into_owned(),
            name: name.clone(),
            source,
        })?;
        if let Value::Object(map) = &mut body {
            // Typed objects may omit these when built with `Default`.
            map.insert("apiVersion".into(), K::api_version(&()).into_owned().into());
            map.insert("kind".into(), K::kind(&()).into_owned().into());
        }
        Ok(Self {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            namespace: meta.namespace.clone(),
            name,
            body,
        })
    }

    /// The object as one YAML document (without `---`).
    pub fn to_yaml(&self) -> String {
        crate::yaml::to_string(&self.body)
    }

    /// `kind namespace/name`, for messages.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// Joins objects into one multi-document YAML stream.
pub fn to_multi_doc(objects: &[Object]) -> String {
    let mut out = String::with_capacity(objects.len() * 1024);
    for o in objects {
        out.push_str("---\n");
        crate::yaml::emit(&mut out, &o.body);
    }
    out
}
