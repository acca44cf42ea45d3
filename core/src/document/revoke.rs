//! Strong removal: what a member did concurrently with losing a role is
//! revoked.
//!
//! When an admin removes a member (or lowers their role), every change of
//! that member that is *not in the causal past of the removal* and that
//! needed the role they lost is **revoked**. Changes that build on the
//! removal are refused at import already (roles are checked as of each
//! change's dependencies); revocation covers the ones made concurrently —
//! offline, or in flight — which no replica could refuse without breaking
//! convergence, because some replicas may have accepted them before the
//! removal arrived.
//!
//! Revoked changes stay in the signed history (the audit log shows them,
//! and who revoked them), but their effects are masked from the registry's
//! view on every replica alike: the view is the document with a local,
//! never-stored undo of each revoked operation. The result depends only on
//! the set of changes, so replicas that hold the same changes show the same
//! state, whatever order they received them in.
//!
//! Corner cases, each with a test:
//! - **Concurrent edits by the removed member** are revoked: a field they
//!   set shows the value from before their edit (or a concurrent honest
//!   value), a record they created disappears, a record they deleted comes
//!   back, an option they added to a multi-select goes. Honest edits made
//!   on top of a revoked record vanish with it (they stay in the history).
//! - **Members added by a revoked change** never held their role: their
//!   own changes are revoked too (the revocation cascades).
//! - **Two admins removing each other concurrently**: removals are never
//!   undone — power only shrinks — so both are removed; the registry's
//!   creator remains admin of last resort (see `Layout::role_at`).
//! - **Removing the last admin** is refused when written locally
//!   (`WriteError::LastAdmin`).
//! - Characters a revoked change *deleted* from a long text are not
//!   restored (its insertions are removed); the history keeps them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::legacy;
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ChangeHash, ObjId, ROOT, ReadDoc};

use super::policy::{Guard, legacy_obj};
use super::{Layout, Role};
use crate::identity::PublicKey;

/// The revoked changes of a registry, and which removal revoked each.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    /// Revoked change → the removal that revoked it.
    pub(crate) changes: BTreeMap<ChangeHash, ChangeHash>,
    /// Operation-id ranges `[start, end)` of the revoked changes, per actor.
    ops: HashMap<ActorId, Vec<(u64, u64)>>,
}

impl Revocations {
    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The removal that revoked `change`, if it is revoked.
    pub(crate) fn revoked_by(&self, change: &ChangeHash) -> Option<ChangeHash> {
        self.changes.get(change).copied()
    }

    /// Whether the operation `id` belongs to a revoked change.
    pub(crate) fn masks(&self, id: &ObjId) -> bool {
        match id {
            ObjId::Id(counter, actor, _) => self.masks_op(*counter, actor),
            ObjId::Root => false,
        }
    }

    fn masks_op(&self, counter: u64, actor: &ActorId) -> bool {
        self.ops
            .get(actor)
            .is_some_and(|r| r.iter().any(|&(s, e)| (s..e).contains(&counter)))
    }

    fn revoke(&mut self, doc: &mut AutoCommit, change: ChangeHash, by: ChangeHash) -> bool {
        if self.changes.contains_key(&change) {
            return false;
        }
        let Some(c) = doc.get_change_by_hash(&change) else {
            return false;
        };
        let start = c.start_op().get();
        let end = start + c.len() as u64;
        self.ops
            .entry(c.actor_id().clone())
            .or_default()
            .push((start, end));
        self.changes.insert(change, by);
        true
    }
}

fn rank(role: Option<Role>) -> u8 {
    match role {
        None => 0,
        Some(Role::Reader) => 1,
        Some(Role::Writer) => 2,
        Some(Role::Admin) => 3,
    }
}

fn role_of(value: &automerge::Value<'_>) -> Option<Role> {
    value.as_str().and_then(|s| s.parse().ok())
}

/// The highest role among the values of `key` in `members` at `heads`,
/// ignoring revoked operations.
fn role_at(
    doc: &AutoCommit,
    layout: &Layout,
    key: &str,
    heads: &[ChangeHash],
    revoked: &Revocations,
) -> u8 {
    doc.get_all_at(&layout.members, key, heads)
        .unwrap_or_default()
        .iter()
        .filter(|(_, id)| !revoked.masks(id))
        .map(|(v, _)| rank(role_of(v)))
        .max()
        .unwrap_or(0)
}

/// A change that lowered `member`'s role to `after`.
struct Removal {
    member: PublicKey,
    change: ChangeHash,
    after: u8,
}

/// The role a change needs: admin for members, schema and meta; writer for
/// records.
fn needs(doc: &mut AutoCommit, guard: &Guard, change: &ChangeHash) -> u8 {
    match doc.get_change_by_hash(change) {
        Some(c) if guard.admin_only(&c).is_some() => rank(Some(Role::Admin)),
        _ => rank(Some(Role::Writer)),
    }
}

/// Changes by `actor` not in the causal past of `heads`, in sequence order.
fn later_changes_by(
    doc: &mut AutoCommit,
    actor: &ActorId,
    heads: &[ChangeHash],
) -> Vec<ChangeHash> {
    let mut later: Vec<(u64, ChangeHash)> = doc
        .get_changes_meta(heads)
        .into_iter()
        .filter(|m| *m.actor == *actor)
        .map(|m| (m.seq, m.hash))
        .collect();
    later.sort();
    later.into_iter().map(|(_, h)| h).collect()
}

fn is_ancestor(doc: &mut AutoCommit, ancestor: &ChangeHash, of: &ChangeHash) -> bool {
    ancestor == of
        || !doc
            .get_changes_meta(std::slice::from_ref(of))
            .iter()
            .any(|m| m.hash == *ancestor)
}

/// Finds every revoked change. `admin_changes` are the changes that touched
/// members, schema or meta (only those can remove anyone).
pub(crate) fn compute(
    doc: &mut AutoCommit,
    layout: &Layout,
    admin_changes: &BTreeSet<ChangeHash>,
) -> Revocations {
    let mut revoked = Revocations::default();
    let members_obj = legacy_obj(&layout.members);
    let none = Revocations::default();
    let mut removals = Vec::new();
    for hash in admin_changes {
        let Some(change) = doc.get_change_by_hash(hash) else {
            continue;
        };
        let deps = change.deps().to_vec();
        let keys: BTreeSet<String> = change
            .decode()
            .operations
            .into_iter()
            .filter(|op| op.obj == members_obj)
            .filter_map(|op| match op.key {
                legacy::Key::Map(k) => Some(k.to_string()),
                legacy::Key::Seq(_) => None,
            })
            .collect();
        for key in keys {
            let Ok(member) = key.parse::<PublicKey>() else {
                continue;
            };
            let before = role_at(doc, layout, &key, &deps, &none);
            let after = role_at(doc, layout, &key, std::slice::from_ref(hash), &none);
            if after < before {
                removals.push(Removal {
                    member,
                    change: *hash,
                    after,
                });
            }
        }
    }
    if removals.is_empty() {
        return revoked;
    }
    let guard = Guard::new(layout);
    for removal in &removals {
        let actor = ActorId::from(&removal.member.as_bytes()[..]);
        let later = later_changes_by(doc, &actor, std::slice::from_ref(&removal.change));
        // The member's changes form a chain: those that build on the removal
        // are a suffix of it (judged at import, as of their dependencies);
        // the ones before that suffix are concurrent with the removal.
        let concurrent = later.partition_point(|c| !is_ancestor(doc, &removal.change, c));
        for change in &later[..concurrent] {
            if removal.after < needs(doc, &guard, change) {
                revoked.revoke(doc, *change, removal.change);
            }
        }
    }
    cascade(doc, layout, &guard, &mut revoked);
    revoked
}

/// Revokes the changes of members whose role came only from a revoked
/// change, until nothing more is revoked.
fn cascade(doc: &mut AutoCommit, layout: &Layout, guard: &Guard, revoked: &mut Revocations) {
    let members_obj = legacy_obj(&layout.members);
    let mut examined: HashSet<String> = HashSet::new();
    loop {
        let mut granted: Vec<(String, ChangeHash)> = Vec::new();
        for (hash, by) in revoked.changes.clone() {
            let Some(change) = doc.get_change_by_hash(&hash) else {
                continue;
            };
            for op in change.decode().operations {
                if let (true, legacy::Key::Map(k), legacy::OpType::Put(_)) =
                    (op.obj == members_obj, &op.key, &op.action)
                    && examined.insert(k.to_string())
                {
                    granted.push((k.to_string(), by));
                }
            }
        }
        if granted.is_empty() {
            return;
        }
        for (key, by) in granted {
            let Ok(member) = key.parse::<PublicKey>() else {
                continue;
            };
            let actor = ActorId::from(&member.as_bytes()[..]);
            for change in later_changes_by(doc, &actor, &[]) {
                let Some(deps) = doc.get_change_by_hash(&change).map(|c| c.deps().to_vec()) else {
                    continue;
                };
                let held = role_at(doc, layout, &key, &deps, revoked);
                if held < needs(doc, guard, &change) {
                    revoked.revoke(doc, change, by);
                }
            }
        }
    }
}

/// The registry as it reads with every revoked operation undone: a fork of
/// `doc` with one local, never-stored change on top.
pub(crate) fn view(doc: &mut AutoCommit, layout: &Layout, revoked: &Revocations) -> AutoCommit {
    let mut view = doc.fork();
    view.set_actor(ActorId::from(&b"chittysync revocation view"[..]));
    let members_obj = legacy_obj(&layout.members);
    let mut texts: BTreeSet<ObjId> = BTreeSet::new();
    for hash in revoked.changes.keys() {
        let Some(change) = doc.get_change_by_hash(hash) else {
            continue;
        };
        let deps = change.deps().to_vec();
        let expanded = change.decode();
        let start = expanded.start_op.get();
        for (i, op) in expanded.operations.iter().enumerate() {
            let counter = start + i as u64;
            let Some(obj) = object(&view, &op.obj) else {
                continue;
            };
            let key = match &op.key {
                legacy::Key::Map(k) => k.to_string(),
                legacy::Key::Seq(_) => {
                    if op.insert {
                        texts.insert(obj);
                    }
                    continue;
                }
            };
            let on_members = op.obj == members_obj;
            match &op.action {
                // Removals always stand; anything else deleted comes back.
                legacy::OpType::Delete
                    if !on_members && matches!(view.get(&obj, key.as_str()), Ok(None)) =>
                {
                    restore(doc, &mut view, &obj, &key, &deps, revoked);
                }
                legacy::OpType::Put(_) | legacy::OpType::Make(_) => {
                    if on_members && lowers(doc, layout, &key, &deps, op, revoked) {
                        continue;
                    }
                    let current = view.get_all(&obj, key.as_str()).unwrap_or_default();
                    let visible = current.iter().any(|(_, id)| {
                        matches!(id, ObjId::Id(c, a, _) if *c == counter && *a == expanded.actor_id)
                    });
                    if !visible {
                        continue; // already overwritten by a later change
                    }
                    let honest = current.iter().rev().find(|(_, id)| !revoked.masks(id));
                    match honest {
                        Some((automerge::Value::Scalar(s), _)) => {
                            let s = s.clone().into_owned();
                            let _ = view.put(&obj, key.as_str(), s);
                        }
                        // A concurrent honest object (a record copy) stays;
                        // the revoked one cannot be taken out alone.
                        Some(_) => {}
                        None => restore(doc, &mut view, &obj, &key, &deps, revoked),
                    }
                }
                _ => {}
            }
        }
    }
    for text in texts {
        let masked: Vec<usize> = view
            .list_range(&text, ..)
            .filter(|item| revoked.masks(&item.id()))
            .map(|item| item.index)
            .collect();
        for index in masked.into_iter().rev() {
            let _ = view.splice_text(&text, index, 1, "");
        }
    }
    view
}

/// Whether a revoked members operation lowered a role (those stand).
fn lowers(
    doc: &AutoCommit,
    layout: &Layout,
    key: &str,
    deps: &[ChangeHash],
    op: &legacy::Op,
    revoked: &Revocations,
) -> bool {
    let new = match &op.action {
        legacy::OpType::Put(automerge::ScalarValue::Str(s)) => s.parse::<Role>().ok(),
        _ => None,
    };
    rank(new) < role_at(doc, layout, key, deps, revoked)
}

/// The view's id of a document object.
fn object(view: &AutoCommit, obj: &legacy::ObjectId) -> Option<ObjId> {
    match obj {
        legacy::ObjectId::Root => Some(ROOT),
        legacy::ObjectId::Id(legacy::OpId(counter, actor)) => {
            view.import_obj(&format!("{counter}@{actor}")).ok()
        }
    }
}

/// Sets `key` of `obj` in the view back to its last value not written by a
/// revoked change, looking back from `deps`; removes it if there was none.
fn restore(
    doc: &mut AutoCommit,
    view: &mut AutoCommit,
    obj: &ObjId,
    key: &str,
    deps: &[ChangeHash],
    revoked: &Revocations,
) {
    let mut heads = deps.to_vec();
    for _ in 0..64 {
        let values: Vec<(automerge::Value<'static>, ObjId)> = doc
            .get_all_at(obj, key, &heads)
            .unwrap_or_default()
            .into_iter()
            .map(|(v, id)| (v.into_owned(), id))
            .collect();
        if let Some((value, _)) = values.iter().rev().find(|(_, id)| !revoked.masks(id)) {
            if let automerge::Value::Scalar(s) = value {
                let _ = view.put(obj, key, s.clone().into_owned());
            }
            return;
        }
        // Every value there was revoked too: look before the latest of them.
        let Some(earlier) = values
            .iter()
            .rev()
            .find_map(|(_, id)| doc.hash_for_opid(id))
            .and_then(|h| doc.get_change_meta_by_hash(&h).map(|m| m.deps.to_vec()))
        else {
            break;
        };
        heads = earlier;
    }
    let _ = view.delete(obj, key);
}

/// How many changes of `doc` are revoked, and the view with them undone
/// (`None` when none is).
pub(crate) fn revocations(
    doc: &mut automerge::AutoCommit,
    layout: &Layout,
    admin_changes: &BTreeSet<ChangeHash>,
) -> (usize, Option<automerge::AutoCommit>) {
    let revoked = compute(doc, layout, admin_changes);
    let view = (!revoked.is_empty()).then(|| view(doc, layout, &revoked));
    (revoked.changes.len(), view)
}
