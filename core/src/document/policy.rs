//! The permission policy: who may change what, read from the document.
//!
//! Admins alone touch the root, meta, schema and members ([`Guard`]);
//! under the `creator-or-admin` record rule a writer may change only the
//! records they created ([`foreign_record`]).

use std::collections::HashMap;

use automerge::{AutoCommit, Change, ChangeHash, ObjId, ROOT, ReadDoc};

use super::Layout;
use crate::identity::PublicKey;

/// The member who created an object (its operation's actor).
pub(crate) fn creator_of(obj: &ObjId) -> Option<PublicKey> {
    match obj {
        ObjId::Id(_, actor, _) => PublicKey::from_bytes(actor.to_bytes()).ok(),
        ObjId::Root => None,
    }
}

/// Whether the record rule is `creator-or-admin` as of `deps`.
pub(crate) fn creator_or_admin_at(doc: &AutoCommit, layout: &Layout, deps: &[ChangeHash]) -> bool {
    match doc.get_at(&layout.schema, "record_rule", deps) {
        Ok(Some((automerge::Value::Scalar(s), _))) => s.as_str() == Some("creator-or-admin"),
        _ => false,
    }
}

/// Under the `creator-or-admin` rule (as of the change's dependencies), the
/// first record a writer's change touches that someone else created.
/// `doc` must already contain the change.
pub(crate) fn foreign_record(
    doc: &AutoCommit,
    layout: &Layout,
    change: &Change,
    author: &PublicKey,
) -> Option<String> {
    if !creator_or_admin_at(doc, layout, change.deps()) {
        return None;
    }
    let operations = change.decode().operations;
    foreign_record_in(
        doc,
        layout,
        &operations,
        change.deps(),
        author,
        &mut HashMap::new(),
    )
}

/// The record holding an object, and the record's creator: `None` if the
/// object is not inside a record.
pub(crate) type Holder = Option<(Option<PublicKey>, String)>;

/// [`foreign_record`] on operations already decoded, with the record
/// holding each object looked up once per object (`holders`, which may be
/// shared across changes) rather than once per operation.
pub(crate) fn foreign_record_in(
    doc: &AutoCommit,
    layout: &Layout,
    operations: &[automerge::legacy::Op],
    deps: &[ChangeHash],
    author: &PublicKey,
    holders: &mut HashMap<automerge::legacy::OpId, Holder>,
) -> Option<String> {
    let records = legacy_obj(&layout.records);
    for op in operations {
        if op.obj == records {
            // Creating (or re-creating) a record: fine unless it already
            // exists, as of the change's dependencies, made by someone else.
            let automerge::legacy::Key::Map(key) = &op.key else {
                continue;
            };
            let existing = layout.copies(doc, key.as_str(), Some(deps));
            if !existing.is_empty()
                && !existing
                    .iter()
                    .any(|o| creator_of(o).as_ref() == Some(author))
            {
                return Some(key.to_string());
            }
            continue;
        }
        let automerge::legacy::ObjectId::Id(op_id) = &op.obj else {
            continue;
        };
        let holder = holders
            .entry(op_id.clone())
            .or_insert_with(|| record_holder(doc, layout, op_id));
        if let Some((creator, record)) = holder
            && creator.as_ref() != Some(author)
        {
            return Some(record.clone());
        }
    }
    None
}

/// Walks up from an object to the record that holds it.
pub(crate) fn record_holder(
    doc: &AutoCommit,
    layout: &Layout,
    op_id: &automerge::legacy::OpId,
) -> Holder {
    let mut current = doc
        .import_obj(&format!("{}@{}", op_id.0, op_id.1.to_hex_string()))
        .ok()?;
    for parent in doc.parents(&current).ok()? {
        if parent.obj == layout.records {
            let record = match parent.prop {
                automerge::Prop::Map(k) => k,
                automerge::Prop::Seq(i) => i.to_string(),
            };
            return Some((creator_of(&current), record));
        }
        current = parent.obj;
    }
    None
}

pub(crate) fn legacy_obj(id: &ObjId) -> automerge::legacy::ObjectId {
    match id {
        ObjId::Root => automerge::legacy::ObjectId::Root,
        ObjId::Id(counter, actor, _) => {
            automerge::legacy::ObjectId::Id(automerge::legacy::OpId(*counter, actor.clone()))
        }
    }
}

/// What only admins may touch: the root, meta, schema and members; and no
/// one may remove a record's key (records are deleted with tombstones).
pub(crate) struct Guard {
    admin_objects: Vec<automerge::legacy::ObjectId>,
    records: automerge::legacy::ObjectId,
}

impl Guard {
    pub(crate) fn new(layout: &Layout) -> Self {
        Guard {
            admin_objects: [
                Some(&ROOT),
                Some(&layout.meta),
                Some(&layout.schema),
                Some(&layout.fields),
                Some(&layout.members),
                layout.aliases.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(legacy_obj)
            .collect(),
            records: legacy_obj(&layout.records),
        }
    }

    /// Why `change` needs the admin role, if it does.
    pub(crate) fn admin_only(&self, change: &Change) -> Option<&'static str> {
        self.admin_only_ops(&change.decode().operations)
    }

    /// [`Guard::admin_only`] on operations already decoded.
    pub(crate) fn admin_only_ops(
        &self,
        operations: &[automerge::legacy::Op],
    ) -> Option<&'static str> {
        operations.iter().find_map(|op| {
            if self.admin_objects.contains(&op.obj) {
                Some("only admins change the schema and members")
            } else if op.obj == self.records
                && matches!(op.action, automerge::legacy::OpType::Delete)
            {
                Some("records are deleted with tombstones, never removed")
            } else {
                None
            }
        })
    }
}
