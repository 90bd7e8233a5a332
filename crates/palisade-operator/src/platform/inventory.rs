//! What the platform pass may delete: only objects it created itself,
//! recorded with their uid in a ConfigMap ([`INVENTORY`], beside the
//! proxy-port ledger). Labels prove nothing (anyone can copy an object
//! with ours), most platform objects are cluster-scoped (no owner a
//! garbage collector could go by), and a LIST that came back empty or
//! failed must never read as "nothing is wanted": so the record is what
//! this operator wrote, not what a query finds.
//!
//! - An object is recorded when the pass's own apply created it (a GET
//!   before the apply found none); one that existed before is used but
//!   never recorded, so never deleted.
//! - A recorded object that is no longer desired is deleted with
//!   `DeleteOptions.preconditions.uid` set to the recorded uid
//!   (<https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/delete-options/>,
//!   "preconditions: Must be fulfilled before a deletion is carried out"):
//!   if someone deleted it and made another of the same name, the API
//!   server answers 409 and that one stays; the entry goes either way.
//! - Namespaced objects go before namespaces, and the namespace holding
//!   the inventory itself is never deleted.
//! - The record is written with the `resourceVersion` it was read at
//!   (as the ledger), after the deletions: a crash in between leaves an
//!   entry whose object is gone (the next delete answers 404), never an
//!   object without its entry, except one created and not yet recorded,
//!   which is then kept forever (leaked, not wrongly deleted).

use crate::Error;
use crate::reconcile::dynamic_api;
use kube::Client;
use kube::api::{DeleteParams, Preconditions};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Name of the ConfigMap recording the platform objects the operator made.
pub const INVENTORY: &str = "palisade-platform-inventory";

/// The ConfigMap key holding the entries (a JSON list).
const KEY: &str = "objects.json";

/// One object the operator created.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// The namespace, for namespaced kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid` as created: another object of the same name is not
    /// this one.
    pub uid: String,
}

impl Entry {
    /// `Kind namespace/name`, as [`palisade_kube::Object::id`].
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// The recorded objects, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory(pub BTreeMap<String, Entry>);

impl Inventory {
    /// The inventory in a ConfigMap's data; what does not parse counts as
    /// unrecorded (so is kept, never deleted).
    pub fn from_data(data: &BTreeMap<String, String>) -> Self {
        let entries: Vec<Entry> = data
            .get(KEY)
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        Self(entries.into_iter().map(|e| (e.id(), e)).collect())
    }

    /// As ConfigMap data.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        let entries: Vec<&Entry> = self.0.values().collect();
        let json = serde_json::to_string_pretty(&entries).unwrap_or_default();
        BTreeMap::from([(KEY.to_owned(), json)])
    }
}

/// What one apply found out about a desired object (its live uid, and
/// whether the apply created it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The object, as an entry with its live uid.
    pub entry: Entry,
    /// Whether this operator's apply created it.
    pub created: bool,
}

/// The inventory after a pass, and what to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Entries of desired objects (what was recorded and still is, plus
    /// what this pass created).
    pub keep: Inventory,
    /// Recorded objects no longer desired, namespaced ones first.
    pub prune: Vec<Entry>,
}

/// Decides from the recorded `inventory`, the ids of the `desired`
/// objects and what the applies `seen`; `protected` is the namespace the
/// inventory lives in.
pub fn decide(
    inventory: &Inventory,
    desired: &BTreeSet<String>,
    seen: &[Seen],
    protected: &str,
) -> Decision {
    let mut keep = Inventory::default();
    let mut prune = Vec::new();
    for (id, e) in &inventory.0 {
        let is_protected = e.kind == "Namespace" && e.name == protected;
        if desired.contains(id) || is_protected {
            keep.0.insert(id.clone(), e.clone());
        } else {
            prune.push(e.clone());
        }
    }
    for s in seen {
        let id = s.entry.id();
        if s.created {
            keep.0.insert(id, s.entry.clone());
        } else if keep.0.get(&id).is_some_and(|e| e.uid != s.entry.uid) {
            // Deleted and made again by someone else: not ours any more.
            keep.0.remove(&id);
        }
    }
    prune.sort_by_key(|e| (e.namespace.is_none(), e.id()));
    Decision { keep, prune }
}

/// Deletes `e` if it is still the object recorded (uid precondition).
/// `Ok(true)` when this deleted it, `Ok(false)` when it was gone or not
/// ours (404, 409): either way its entry can go; an error keeps the entry
/// for the next pass.
pub async fn delete(client: &Client, e: &Entry) -> Result<bool, Error> {
    let api = dynamic_api(client, &e.api_version, &e.kind, e.namespace.as_deref());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(e.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&e.name, &params).await {
        Ok(_) => {
            tracing::info!(object = %e.id(), "pruned a platform object no longer rendered");
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::warn!(object = %e.id(), reason = %s.message, "kept: not the object the operator created");
            Ok(false)
        }
        Err(err) => Err(Error::kube("prune", e.id())(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, ns: Option<&str>, name: &str, uid: &str) -> Entry {
        Entry {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: ns.map(str::to_owned),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn inventory(entries: &[Entry]) -> Inventory {
        Inventory(entries.iter().map(|e| (e.id(), e.clone())).collect())
    }

    #[test]
    fn only_recorded_objects_no_longer_desired_are_pruned_namespaces_last() {
        let gw = entry("Gateway", Some("palisade-gateways"), "central", "u1");
        let ns = entry("Namespace", None, "palisade-gateways", "u2");
        let home = entry("Namespace", None, "palisade-system", "u3");
        let rc = entry("RuntimeClass", None, "gvisor", "u4");
        let inv = inventory(&[ns.clone(), gw.clone(), home.clone(), rc.clone()]);
        let desired = BTreeSet::from([rc.id()]);
        let d = decide(&inv, &desired, &[], "palisade-system");
        assert_eq!(d.prune, [gw, ns]);
        assert_eq!(d.keep, inventory(&[home, rc]));
    }

    #[test]
    fn created_objects_are_recorded_and_adopted_or_replaced_ones_are_not() {
        let mine = entry("RuntimeClass", None, "gvisor", "u1");
        let theirs = entry("Namespace", None, "palisade-gateways", "x9");
        let replaced = entry("Gateway", Some("palisade-gateways"), "central", "u7");
        let inv = inventory(std::slice::from_ref(&replaced));
        let desired = BTreeSet::from([mine.id(), theirs.id(), replaced.id()]);
        let mut now = replaced.clone();
        now.uid = "someone-else".into();
        let seen = [
            Seen {
                entry: mine.clone(),
                created: true,
            },
            Seen {
                entry: theirs,
                created: false,
            },
            Seen {
                entry: now,
                created: false,
            },
        ];
        let d = decide(&inv, &desired, &seen, "palisade-system");
        assert_eq!(d.keep, inventory(&[mine]));
        assert!(d.prune.is_empty());
    }

    #[test]
    fn the_inventory_round_trips_and_garbage_reads_as_nothing_recorded() {
        let inv = inventory(&[entry("Namespace", None, "palisade-gateways", "u2")]);
        assert_eq!(Inventory::from_data(&inv.to_data()), inv);
        let garbage = BTreeMap::from([(KEY.to_owned(), "not json".to_owned())]);
        assert_eq!(Inventory::from_data(&garbage), Inventory::default());
    }
}
