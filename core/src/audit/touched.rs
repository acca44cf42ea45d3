//! Where a change operated, in registry terms: every operation of the
//! history is read once, and each object is placed in the registry layout.

use std::collections::{BTreeSet, HashMap, HashSet};

use automerge::{AutoCommit, ChangeHash, legacy};

use super::Meta;
use crate::document::DELETED;

/// Where in the registry a change touched the document.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Touch {
    SchemaSetting(String),
    FieldDef(String),
    Member(String),
    Alias(String),
    Record(String, Part),
    Other(String),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Part {
    Existence,
    Field(String),
    Tombstone,
}

/// Where an object of the document sits in the registry layout.
#[derive(Clone, Debug)]
enum Place {
    Root,
    Meta,
    Schema,
    Fields,
    Members,
    Aliases,
    Records,
    /// A copy of a record (almost always its only one).
    Copy(String),
    /// A record's long text or multi-select value.
    Container(String, String),
    Tombstone(String),
    /// Outside the layout, at this path.
    Other(String),
}

impl Place {
    fn path(&self) -> String {
        match self {
            Place::Root => String::new(),
            Place::Meta => "meta".into(),
            Place::Schema => "schema".into(),
            Place::Fields => "schema.fields".into(),
            Place::Members => "members".into(),
            Place::Aliases => "aliases".into(),
            Place::Records => "records".into(),
            Place::Copy(id) => format!("records.{id}"),
            Place::Container(id, f) => format!("records.{id}.{f}"),
            Place::Tombstone(id) => format!("records.{id}.{DELETED}"),
            Place::Other(p) => p.clone(),
        }
    }

    /// The place of an object made at `key` in this one.
    fn child(&self, key: Option<&str>) -> Place {
        let k = key.unwrap_or_default();
        match (self, k) {
            (Place::Root, "meta") => Place::Meta,
            (Place::Root, "schema") => Place::Schema,
            (Place::Root, "members") => Place::Members,
            (Place::Root, "aliases") => Place::Aliases,
            (Place::Root, "records") => Place::Records,
            (Place::Schema, "fields") => Place::Fields,
            (Place::Records, _) => Place::Copy(k.to_owned()),
            (Place::Copy(id), DELETED) => Place::Tombstone(id.clone()),
            (Place::Copy(id), _) => Place::Container(id.clone(), k.to_owned()),
            (Place::Container(..) | Place::Tombstone(_), _) => self.clone(),
            _ => Place::Other(join(&self.path(), key)),
        }
    }

    /// What an operation at `key` of an object here touched.
    fn touch(&self, key: Option<&str>, genesis: bool) -> Option<Touch> {
        let k = || key.unwrap_or_default().to_owned();
        Some(match (self, key) {
            // The genesis makes the root's maps and meta: that is the creation.
            (Place::Root | Place::Meta, _) if genesis => return None,
            (Place::Schema, Some("fields")) if genesis => return None,
            (Place::Schema, Some(k)) if k != "fields" => Touch::SchemaSetting(k.to_owned()),
            (Place::Fields, Some(_)) => Touch::FieldDef(k()),
            (Place::Members, Some(_)) => Touch::Member(k()),
            (Place::Aliases, Some(_)) => Touch::Alias(k()),
            (Place::Records, Some(_)) => Touch::Record(k(), Part::Existence),
            (Place::Copy(id), Some(DELETED)) | (Place::Tombstone(id), _) => {
                Touch::Record(id.clone(), Part::Tombstone)
            }
            (Place::Copy(id), Some(f)) => Touch::Record(id.clone(), Part::Field(f.to_owned())),
            (Place::Container(id, f), _) => Touch::Record(id.clone(), Part::Field(f.clone())),
            _ => Touch::Other(join(&self.path(), key)),
        })
    }
}

fn join(path: &str, key: Option<&str>) -> String {
    match (path, key) {
        ("", Some(k)) => k.to_owned(),
        (p, Some(k)) => format!("{p}.{k}"),
        (p, None) => p.to_owned(),
    }
}

type OpTarget = (legacy::ObjectId, Option<String>);

/// The operations of the history, read once: which object each `Make`
/// made where, and what each audited change operated on.
///
/// Reading a change's own operations costs as much as the change; a diff
/// between its dependencies and itself would scan the whole document for
/// every change.
pub(super) struct Ops {
    made: HashMap<legacy::OpId, OpTarget>,
    targets: HashMap<ChangeHash, Vec<OpTarget>>,
    places: HashMap<legacy::OpId, Place>,
}

impl Ops {
    pub(super) fn read(doc: &mut AutoCommit, wanted: &HashSet<ChangeHash>) -> Ops {
        let mut ops = Ops {
            made: HashMap::new(),
            targets: HashMap::new(),
            places: HashMap::new(),
        };
        // Compacted changes are rebuilt from the document, so every change
        // of the history is here whether or not the store kept its bytes.
        for change in doc.get_changes(&[]) {
            let hash = change.hash();
            let keep = wanted.contains(&hash);
            let expanded = change.decode();
            let start = expanded.start_op.get();
            let mut targets = Vec::new();
            for (i, op) in expanded.operations.into_iter().enumerate() {
                let key = match &op.key {
                    legacy::Key::Map(k) => Some(k.to_string()),
                    legacy::Key::Seq(_) => None,
                };
                if matches!(op.action, legacy::OpType::Make(_)) {
                    let id = legacy::OpId(start + i as u64, expanded.actor_id.clone());
                    ops.made.insert(id, (op.obj.clone(), key.clone()));
                }
                if keep {
                    targets.push((op.obj, key));
                }
            }
            if keep {
                ops.targets.insert(hash, targets);
            }
        }
        ops
    }

    fn place(&mut self, obj: &legacy::ObjectId, depth: usize) -> Place {
        let legacy::ObjectId::Id(id) = obj else {
            return Place::Root;
        };
        if let Some(p) = self.places.get(id) {
            return p.clone();
        }
        let place = match self.made.get(id).cloned() {
            Some((parent, key)) if depth < 64 => {
                self.place(&parent, depth + 1).child(key.as_deref())
            }
            _ => Place::Other(format!("object {}@{}", id.0, id.1)),
        };
        self.places.insert(id.clone(), place.clone());
        place
    }

    /// What `meta`'s change touched (only record `record`'s parts if given).
    pub(super) fn touched(&mut self, meta: &Meta, record: Option<&str>) -> BTreeSet<Touch> {
        let genesis = meta.deps.is_empty();
        let targets = self.targets.remove(&meta.hash).unwrap_or_default();
        let mut out = BTreeSet::new();
        for (obj, key) in targets {
            let Some(touch) = self.place(&obj, 0).touch(key.as_deref(), genesis) else {
                continue;
            };
            let wanted = match (record, &touch) {
                (None, _) => true,
                (Some(want), Touch::Record(id, _)) => want == id,
                (Some(_), _) => false,
            };
            if wanted {
                out.insert(touch);
            }
        }
        out
    }
}
