//! Server-side apply's field ownership, as far as the fake needs it to
//! behave like the API server
//! (<https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management>):
//! each apply records the fields its manager set; a field the manager set
//! before and now omits is removed, unless another manager owns it too;
//! changing the value of a field another manager owns is a conflict (409)
//! unless the apply is forced, which transfers the ownership.
//!
//! Simplifications: fields are leaf JSON pointers and lists are atomic (one
//! field), where the API server merges associative lists by key; only
//! apply requests record ownership (a create or an update by another
//! client owns nothing here); `metadata.managedFields` is not written.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Per manager, the fields (JSON pointers) it applied.
pub(super) type Owners = BTreeMap<String, BTreeSet<String>>;

/// Metadata fields an applier can own; the rest (name, uid,
/// resourceVersion, ...) belong to the server.
const OWNABLE_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn leaves(v: &Value, prefix: String, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                leaves(child, format!("{prefix}/{}", escape(k)), out);
            }
        }
        _ => {
            out.insert(prefix);
        }
    }
}

/// The fields an apply configuration sets: on the main resource everything
/// but `status` and server-owned metadata; on the status subresource only
/// `status`.
pub(super) fn applied_fields(body: &Value, status: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(top) = body.as_object() else {
        return out;
    };
    for (k, v) in top {
        match (k.as_str(), status) {
            ("status", true) => leaves(v, "/status".into(), &mut out),
            ("metadata", false) => {
                for f in OWNABLE_METADATA {
                    if let Some(child) = v.get(f) {
                        leaves(child, format!("/metadata/{f}"), &mut out);
                    }
                }
            }
            ("apiVersion" | "kind" | "status", _) | (_, true) => {}
            _ => leaves(v, format!("/{}", escape(k)), &mut out),
        }
    }
    out
}

/// Fields `manager` applied before and omits from `now` that no other
/// manager owns: the server removes them.
pub(super) fn released(owners: &Owners, manager: &str, now: &BTreeSet<String>) -> Vec<String> {
    let Some(before) = owners.get(manager) else {
        return Vec::new();
    };
    before
        .iter()
        .filter(|f| !now.contains(*f))
        .filter(|f| {
            !owners
                .iter()
                .any(|(m, fields)| m != manager && fields.contains(*f))
        })
        .cloned()
        .collect()
}

/// (other manager, field) pairs whose value `body` would change.
pub(super) fn conflicts(
    owners: &Owners,
    manager: &str,
    now: &BTreeSet<String>,
    current: &Value,
    body: &Value,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for field in now {
        if current.pointer(field) == body.pointer(field) {
            continue;
        }
        for (m, fields) in owners {
            if m != manager && fields.contains(field) {
                out.push((m.clone(), field.clone()));
            }
        }
    }
    out
}

/// Records `manager`'s fields after a successful apply; a forced apply
/// takes the fields from the other managers.
pub(super) fn record(owners: &mut Owners, manager: &str, now: BTreeSet<String>, force: bool) {
    if force {
        for (m, fields) in owners.iter_mut() {
            if m != manager {
                fields.retain(|f| !now.contains(f));
            }
        }
    }
    owners.insert(manager.to_owned(), now);
}

/// Removes the field at `pointer`, then the objects it leaves empty.
pub(super) fn remove_field(obj: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    let emptied = match obj.pointer_mut(parent).and_then(Value::as_object_mut) {
        Some(m) => {
            m.remove(&key);
            m.is_empty()
        }
        None => false,
    };
    if emptied && !parent.is_empty() && parent != "/metadata" {
        remove_field(obj, parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_leaves_and_lists_are_atomic() {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {"a/b": "1"}},
            "data": {"k": "v"}, "spec": {"ports": [1, 2]}, "status": {"s": 1}});
        let f: Vec<String> = applied_fields(&body, false).into_iter().collect();
        assert_eq!(f, ["/data/k", "/metadata/labels/a~1b", "/spec/ports"]);
        let s: Vec<String> = applied_fields(&body, true).into_iter().collect();
        assert_eq!(s, ["/status/s"]);
    }

    #[test]
    fn removing_the_last_field_removes_its_empty_parents() {
        let mut obj = json!({"metadata": {"name": "x"}, "spec": {"a": {"b": 1}, "c": 2}});
        remove_field(&mut obj, "/spec/a/b");
        assert_eq!(obj, json!({"metadata": {"name": "x"}, "spec": {"c": 2}}));
    }
}
