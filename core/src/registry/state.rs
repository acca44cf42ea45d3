//! The in-memory state of one open registry and every operation on it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, Change, ChangeHash, ObjId, ObjType, ReadDoc};
use sha2::{Digest, Sha256};

use super::{Candidate, Conflict, Member, Query, Record, Shared, Tombstone};
use crate::clock::now_ms;
use crate::document::policy::{
    Guard, Holder, creator_of, foreign_record, legacy_obj, record_holder,
};
use crate::document::revoke::{self, Revocations};
use crate::document::{self as doc, DELETED, Layout, Role};
use crate::error::{ExportError, ImportError, WriteError};
use crate::exchange::{Bundle, ImportReport};
use crate::identity::{Identity, PublicKey};
use crate::ids::RegistryId;
use crate::schema::{
    CompiledSchema, ConflictPolicy, FieldKind, RecordRule, Rule, Schema, ValidationError,
};
use crate::store::{CatchUp, ChangeRow, Store, StoreError, StoreTx};
use crate::trust::{self, Distrust, SignedChange};
use crate::value::Value;

/// Compact when the uncompressed changes outside the snapshot reach this
/// size and twice the snapshot's (bulk writes make few, large changes).
const COMPACT_TAIL_BYTES: i64 = 1 << 20;

/// Changes stored outside the snapshot, which a load must replay.
#[derive(Default)]
struct History {
    tail_len: i64,
    tail_bytes: i64,
    total: i64,
    snapshot_bytes: i64,
}

impl History {
    fn added(&mut self, changes: i64, bytes: i64) {
        self.tail_len += changes;
        self.tail_bytes += bytes;
        self.total += changes;
    }

    fn compacted(&mut self, snapshot_bytes: i64) {
        self.tail_len = 0;
        self.tail_bytes = 0;
        self.snapshot_bytes = snapshot_bytes;
    }

    fn wants_compaction(&self) -> bool {
        self.tail_len >= COMPACT_TAIL_MAX
            || (self.tail_len >= COMPACT_TAIL_MIN && self.tail_len * 4 >= self.total)
            || self.tail_bytes >= COMPACT_TAIL_BYTES.max(2 * self.snapshot_bytes)
    }
}

/// From this many new changes in one import, signatures are checked on a
/// second thread while the document applies them.
const PARALLEL_CHECKS_FROM: usize = 8;
/// Compact when this many changes are stored outside the snapshot …
const COMPACT_TAIL_MAX: i64 = 2000;
/// … or when the tail is at least this long and a quarter of the history.
const COMPACT_TAIL_MIN: i64 = 128;

pub(crate) struct DocState {
    pub(crate) id: RegistryId,
    pub(crate) name: String,
    pub(crate) doc: AutoCommit,
    layout: Layout,
    pub(crate) schema: Arc<CompiledSchema>,
    /// Highest store position reflected in `doc`.
    loaded_pos: i64,
    /// SQLite's `data_version` when `doc` was last brought up to date; it
    /// changes only when another connection commits.
    seen_version: i64,
    /// Hybrid logical clock: the highest change time seen.
    clock: i64,
    /// What is stored outside the snapshot: decides when to compact.
    history: History,
    /// Unique-field index, built on first need and dropped whenever the
    /// document changes other than through a local write.
    unique: Option<UniqueIndex>,
    /// Changes that touched members, schema or meta: the only ones that
    /// can remove anyone (see [`crate::document::revoke`]).
    admin_changes: BTreeSet<ChangeHash>,
    /// Set by a local write of members or schema, until it is stored.
    admin_write: bool,
    /// Changes revoked by a concurrent removal of their author.
    revoked: Arc<Revocations>,
    /// The document with revoked operations undone; `None` when nothing
    /// is revoked (then the document is the view).
    view: Option<AutoCommit>,
}

#[derive(Default)]
struct UniqueIndex {
    by_value: HashMap<(String, String), String>,
    by_record: HashMap<(String, String), String>,
}

impl UniqueIndex {
    fn set(&mut self, field: &str, record: &str, value: Option<String>) {
        if let Some(old) = self
            .by_record
            .remove(&(field.to_owned(), record.to_owned()))
        {
            self.by_value.remove(&(field.to_owned(), old));
        }
        if let Some(v) = value {
            self.by_value
                .insert((field.to_owned(), v.clone()), record.to_owned());
            self.by_record
                .insert((field.to_owned(), record.to_owned()), v);
        }
    }
}

fn internal(e: automerge::AutomergeError) -> WriteError {
    WriteError::Internal(e.to_string())
}

fn actor_of(key: &PublicKey) -> ActorId {
    ActorId::from(&key.as_bytes()[..])
}

impl DocState {
    /// Loads a registry from its snapshot and later changes.
    pub(crate) fn load(
        conn: &rusqlite::Connection,
        store_path: &str,
        id: RegistryId,
        me: &PublicKey,
    ) -> Result<DocState, StoreError> {
        let seen_version = crate::store::data_version(conn, store_path)?;
        let stored = crate::store::load(conn, store_path, &id)?;
        let corrupt =
            |what: String| StoreError::corrupt(store_path, format!("registry {id}: {what}"));
        let mut doc = match &stored.snapshot {
            Some(data) => AutoCommit::load(data).map_err(|e| corrupt(format!("snapshot: {e}")))?,
            None => AutoCommit::new(),
        };
        let tail = stored
            .tail
            .iter()
            .map(|(pos, bytes)| {
                Change::from_bytes(bytes.clone())
                    .map_err(|e| corrupt(format!("change at position {pos}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        doc.apply_changes(tail)
            .map_err(|e| corrupt(format!("applying stored changes: {e}")))?;
        doc.set_actor(actor_of(me));
        let layout =
            Layout::find(&doc).ok_or_else(|| corrupt("the document is not a registry".into()))?;
        let schema = Arc::new(CompiledSchema::new(layout.read_schema(&doc)));
        let mut admin_changes: BTreeSet<ChangeHash> =
            crate::store::admin_changes(conn, store_path, &id)?;
        if admin_changes.is_empty() {
            // Stored before the index existed (it always holds the genesis
            // otherwise): rebuild it from the history, and keep it.
            let guard = Guard::new(&layout);
            admin_changes = doc
                .get_changes(&[])
                .iter()
                .filter(|c| guard.admin_only(c).is_some())
                .map(Change::hash)
                .collect();
            if let Err(e) = crate::store::fill_admin_changes(conn, store_path, &id, &admin_changes)
            {
                tracing::warn!(registry = %id, error = %e, "could not store the index of membership changes; it is rebuilt on the next open");
            }
        }
        let mut state = DocState {
            id,
            name: layout.name(&doc),
            layout,
            schema,
            doc,
            loaded_pos: stored.max_pos,
            seen_version,
            clock: stored.max_time,
            history: History {
                tail_len: stored.tail.len() as i64,
                tail_bytes: stored.tail.iter().map(|(_, b)| b.len() as i64).sum(),
                total: stored.total,
                snapshot_bytes: stored.snapshot.as_ref().map_or(0, |d| d.len() as i64),
            },
            unique: None,
            admin_changes,
            admin_write: false,
            revoked: Arc::default(),
            view: None,
        };
        state.refresh_derived();
        Ok(state)
    }

    /// Creates a new registry: its signed genesis change and its state.
    pub(crate) fn create(
        identity: &Identity,
        name: &str,
        schema: &Schema,
    ) -> Result<(DocState, ChangeRow), WriteError> {
        schema.check().map_err(WriteError::Schema)?;
        let me = identity.public_key();
        let mut doc = AutoCommit::new().with_actor(actor_of(&me));
        let now = now_ms();
        let layout = Layout::create(&mut doc, name, schema, &me, now).map_err(internal)?;
        let hash = doc
            .commit_with(
                CommitOptions::default()
                    .with_time(now)
                    .with_message("create registry"),
            )
            .ok_or_else(|| WriteError::Internal("genesis had no operations".into()))?;
        let id = RegistryId::from_genesis(&hash);
        let mut state = DocState {
            id,
            name: name.to_owned(),
            doc,
            layout,
            schema: Arc::new(CompiledSchema::new(schema.clone())),
            loaded_pos: 0,
            seen_version: 0,
            clock: now,
            history: History::default(),
            unique: None,
            admin_changes: BTreeSet::from([hash]),
            admin_write: false,
            revoked: Arc::default(),
            view: None,
        };
        let row = state.signed_row(identity, hash)?;
        Ok((state, row))
    }

    pub(crate) fn created_at(&self) -> i64 {
        self.layout.created_at(self.view())
    }

    /// The document's fixed objects (for reads at past heads).
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Records that one change of `bytes` bytes is stored at `pos`.
    pub(crate) fn set_loaded(&mut self, pos: i64, bytes: usize) {
        self.loaded_pos = pos;
        self.history.added(1, bytes as i64);
    }

    fn reload(&mut self, conn: &rusqlite::Connection, store_path: &str) -> Result<(), StoreError> {
        let me = PublicKey::from_bytes(self.doc.get_actor().to_bytes())
            .expect("the actor is always our own key");
        *self = DocState::load(conn, store_path, self.id, &me)?;
        Ok(())
    }

    /// Rebuilds the state from the store, dropping anything not stored.
    pub(crate) fn reload_from(&mut self, store: &Store) -> Result<(), StoreError> {
        self.reload(store.conn(), store.path())
    }

    /// Brings the document up to date with what other processes (or other
    /// handles) stored, before a read.
    pub(crate) fn refresh(&mut self, store: &Store) -> Result<(), StoreError> {
        let version = crate::store::data_version(store.conn(), store.path())?;
        if version != self.seen_version {
            self.catch_up_with(store.conn(), store.path())?;
            self.seen_version = version;
        }
        Ok(())
    }

    /// Applies what other processes stored since this state was loaded.
    fn catch_up(&mut self, tx: &StoreTx<'_>) -> Result<(), StoreError> {
        self.catch_up_with(tx.conn(), tx.path())
    }

    fn catch_up_with(&mut self, conn: &rusqlite::Connection, path: &str) -> Result<(), StoreError> {
        match crate::store::catch_up(conn, path, &self.id, self.loaded_pos)? {
            CatchUp::UpToDate => Ok(()),
            CatchUp::Reload => self.reload(conn, path),
            CatchUp::Apply(rows) => {
                let mut changes = Vec::with_capacity(rows.len());
                for (pos, bytes) in &rows {
                    changes.push(Change::from_bytes(bytes.clone()).map_err(|e| {
                        StoreError::corrupt(path, format!("change at position {pos}: {e}"))
                    })?);
                }
                self.clock = self
                    .clock
                    .max(changes.iter().map(Change::timestamp).max().unwrap_or(0));
                self.doc.apply_changes(changes).map_err(|e| {
                    StoreError::corrupt(path, format!("applying stored changes: {e}"))
                })?;
                self.loaded_pos = rows.last().map_or(self.loaded_pos, |r| r.0);
                let bytes = rows.iter().map(|(_, b)| b.len() as i64).sum();
                self.history.added(rows.len() as i64, bytes);
                self.admin_changes = crate::store::admin_changes(conn, path, &self.id)?;
                self.refresh_derived();
                Ok(())
            }
        }
    }

    /// The registry as users see it: the document with revoked operations
    /// undone. Within a write that has not been committed yet, the document
    /// itself, so the write reads what it wrote.
    fn view(&self) -> &AutoCommit {
        match &self.view {
            Some(view) if self.doc.pending_ops() == 0 => view,
            _ => &self.doc,
        }
    }

    /// The role of `key` now, as the registry reads (revoked grants
    /// masked).
    pub(crate) fn role_now(&self, key: &PublicKey) -> Option<Role> {
        self.layout.role_now(self.view(), key)
    }

    /// The changes revoked by a concurrent removal of their author.
    pub(crate) fn revocations(&self) -> Arc<Revocations> {
        self.revoked.clone()
    }

    /// Recomputes which changes are revoked, and the view without them.
    fn refresh_revocations(&mut self) {
        self.revoked = Arc::new(revoke::compute(
            &mut self.doc,
            &self.layout,
            &self.admin_changes,
        ));
        self.refresh_view();
    }

    /// Rebuilds the view after the document changed without changing what
    /// is revoked (a local record write: it is never revoked, and removes
    /// no one).
    fn refresh_view(&mut self) {
        self.view = (!self.revoked.is_empty())
            .then(|| revoke::view(&mut self.doc, &self.layout, &self.revoked));
    }

    /// Recomputes what is derived from the document after it changed other
    /// than through a local record write.
    fn refresh_derived(&mut self) {
        self.refresh_revocations();
        self.schema = Arc::new(CompiledSchema::new(self.layout.read_schema(self.view())));
        self.name = self.layout.name(self.view());
        self.unique = None;
    }

    /// Runs `f` and persists what it wrote as one signed change in one
    /// transaction. On any failure nothing is written and the in-memory
    /// document is as before.
    pub(crate) fn transact<T>(
        &mut self,
        shared: &Shared,
        message: &str,
        f: impl FnOnce(&mut DocState) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        self.transact_signed(shared, &shared.identity, message, f)
    }

    /// [`DocState::transact`], but the change is made and signed by
    /// `identity` (its own actor), e.g. an adapter binding's key.
    pub(crate) fn transact_as<T>(
        &mut self,
        shared: &Shared,
        identity: &Identity,
        message: &str,
        f: impl FnOnce(&mut DocState) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let theirs = actor_of(&identity.public_key());
        let out = self.transact_signed(shared, identity, message, |state| {
            state.doc.set_actor(theirs);
            f(state)
        });
        self.doc.set_actor(actor_of(&shared.identity.public_key()));
        out
    }

    fn transact_signed<T>(
        &mut self,
        shared: &Shared,
        identity: &Identity,
        message: &str,
        f: impl FnOnce(&mut DocState) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let mut store = shared.store();
        let tx = store.begin()?;
        self.catch_up(&tx)?;
        let out = match f(self) {
            Ok(out) => out,
            Err(e) => {
                self.doc.rollback();
                self.unique = None;
                self.admin_write = false;
                return Err(e);
            }
        };
        let admin_write = std::mem::take(&mut self.admin_write);
        let time = self.tick();
        let Some(hash) = self.doc.commit_with(
            CommitOptions::default()
                .with_time(time)
                .with_message(message),
        ) else {
            return Ok(out); // nothing changed: nothing to sign or store
        };
        let persisted = (|| -> Result<(i64, usize), WriteError> {
            let row = self.signed_row(identity, hash)?;
            let pos = tx.insert_changes(&self.id, std::slice::from_ref(&row))?;
            if admin_write {
                tx.insert_admin_changes(&self.id, &[hash])?;
            }
            let detail = serde_json::json!({ "change": hash.to_string(), "message": message });
            tx.journal(Some(&self.id), "wrote", &detail)?;
            tx.commit()?;
            Ok((pos, row.bytes.len()))
        })();
        match persisted {
            Ok((pos, bytes)) => {
                self.set_loaded(pos, bytes);
                if admin_write {
                    self.admin_changes.insert(hash);
                    self.refresh_derived();
                } else {
                    self.refresh_view();
                }
                if self.wants_compaction() {
                    // Best effort: a failed compaction loses nothing.
                    if let Err(e) = self.compact(&mut store) {
                        tracing::warn!(registry = %self.id, error = %e, "compaction failed");
                    }
                }
                Ok(out)
            }
            Err(e) => {
                // The change is in memory but not on disk: drop it.
                let path = store.path().to_owned();
                self.reload(store.conn(), &path)?;
                Err(e)
            }
        }
    }

    /// Next hybrid-logical-clock time: wall clock, but never behind any
    /// change seen, so causally later writes always have later times.
    fn tick(&mut self) -> i64 {
        self.clock = now_ms().max(self.clock + 1);
        self.clock
    }

    #[cfg(test)]
    pub(crate) fn skew_clock(&mut self, ms: i64) {
        self.clock = now_ms() + ms;
    }

    fn signed_row(
        &mut self,
        identity: &Identity,
        hash: ChangeHash,
    ) -> Result<ChangeRow, WriteError> {
        let change = self
            .doc
            .get_change_by_hash(&hash)
            .ok_or_else(|| WriteError::Internal("committed change not found".into()))?;
        let signature = trust::sign_change(identity, &self.id, &hash);
        Ok(row_of(&change, identity.public_key(), signature))
    }

    /// Under the `creator-or-admin` record rule, only a record's creator
    /// and admins may change it.
    fn require_owner(
        &self,
        id: &str,
        copies: &[ObjId],
        author: &PublicKey,
    ) -> Result<(), WriteError> {
        if self.schema.schema.record_rule != RecordRule::CreatorOrAdmin || copies.is_empty() {
            return Ok(());
        }
        let creators: Vec<PublicKey> = copies.iter().filter_map(creator_of).collect();
        if creators.contains(author) {
            return Ok(());
        }
        if self.layout.role_now(self.view(), author) == Some(Role::Admin) {
            return Ok(());
        }
        Err(WriteError::NotOwner {
            registry: self.name.clone(),
            record: id.to_owned(),
            creator: creators
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
        })
    }

    pub(crate) fn require_role(&self, who: &PublicKey, needed: Role) -> Result<(), WriteError> {
        let role = self.layout.role_now(self.view(), who);
        let enough = match needed {
            Role::Admin => role == Some(Role::Admin),
            _ => role.is_some_and(Role::can_write),
        };
        if enough {
            Ok(())
        } else {
            Err(WriteError::NotPermitted {
                registry: self.name.clone(),
                key: who.to_string(),
                role: role.map(|r| r.name().to_owned()),
                needed: needed.name().to_owned(),
            })
        }
    }

    fn invalid(&self, record: &str, field: &str, value: String, rule: Rule) -> WriteError {
        WriteError::Invalid(Box::new(ValidationError {
            registry: self.name.clone(),
            record: record.to_owned(),
            field: field.to_owned(),
            value,
            rule,
        }))
    }

    /// A record's copies now (see [`Layout::copies`]).
    pub(crate) fn copies(&self, id: &str) -> Vec<ObjId> {
        self.layout.copies(self.view(), id, None)
    }

    fn tombstone(&self, copies: &[ObjId]) -> Option<Tombstone> {
        copies.iter().find_map(|obj| self.tombstone_of(obj))
    }

    fn tombstone_of(&self, obj: &ObjId) -> Option<Tombstone> {
        let (_, t) = self.view().get(obj, DELETED).ok()??;
        let by = match self.view().get(&t, "by").ok()?? {
            (automerge::Value::Scalar(s), _) => s.as_str().unwrap_or_default().to_owned(),
            _ => String::new(),
        };
        let at = match self.view().get(&t, "at").ok()?? {
            (automerge::Value::Scalar(s), _) => match s.as_ref() {
                automerge::ScalarValue::Timestamp(t) | automerge::ScalarValue::Int(t) => *t,
                _ => 0,
            },
            _ => 0,
        };
        Some(Tombstone { by, at })
    }

    fn is_deleted(&self, copies: &[ObjId]) -> bool {
        copies
            .iter()
            .any(|obj| self.view().get(obj, DELETED).ok().flatten().is_some())
    }

    pub(crate) fn write_record(
        &mut self,
        id: Option<&str>,
        fields: Vec<(String, Option<Value>)>,
        author: &PublicKey,
    ) -> Result<String, WriteError> {
        let schema = self.schema.clone();
        let id = match id {
            Some(id) => check_record_id(id)?,
            None => uuid::Uuid::now_v7().to_string(),
        };
        let existing = self.copies(&id);
        self.require_owner(&id, &existing, author)?;
        if self.is_deleted(&existing) {
            return Err(WriteError::Deleted {
                registry: self.name.clone(),
                record: id,
            });
        }
        if existing.is_empty() && fields.iter().all(|(_, v)| v.is_none()) {
            // Clearing fields of a record that does not exist.
            return Err(WriteError::NotFound {
                registry: self.name.clone(),
                record: id,
            });
        }
        let mut checked = Vec::with_capacity(fields.len());
        for (field, value) in fields {
            let def = schema.schema.get(&field);
            match value {
                Some(v) => {
                    let shown = v.to_string();
                    let v = schema
                        .check_value(&field, v)
                        .map_err(|rule| self.invalid(&id, &field, shown, rule))?;
                    checked.push((field, Some(v)));
                }
                None if def.is_some_and(|d| d.required) => {
                    return Err(self.invalid(&id, &field, String::new(), Rule::Required));
                }
                None => checked.push((field, None)),
            }
        }
        if existing.is_empty() {
            for def in schema.schema.fields.iter().filter(|d| d.required) {
                if !checked.iter().any(|(f, v)| *f == def.name && v.is_some()) {
                    return Err(self.invalid(&id, &def.name, String::new(), Rule::Required));
                }
            }
        }
        self.ensure_unique_index();
        for (field, value) in &checked {
            let Some(v) = value
                .as_ref()
                .filter(|_| schema.schema.get(field).is_some_and(|d| d.unique))
            else {
                continue;
            };
            let index = self.unique.as_ref().expect("built above");
            if let Some(other) = index.by_value.get(&(field.clone(), v.to_string()))
                && *other != id
            {
                let rule = Rule::Unique {
                    other_record: other.clone(),
                };
                return Err(self.invalid(&id, field, v.to_string(), rule));
            }
        }
        if existing.is_empty() {
            // A new record is created whole, in one batch operation.
            let fields: Vec<(String, Value)> = checked
                .into_iter()
                .filter_map(|(f, v)| Some((f, v?)))
                .collect();
            doc::create_record(
                &mut self.doc,
                &self.layout.records,
                &id,
                &schema.schema,
                &fields,
            )
            .map_err(internal)?;
            if let Some(index) = self.unique.as_mut() {
                for (field, value) in &fields {
                    if schema.schema.get(field).is_some_and(|d| d.unique) {
                        index.set(field, &id, Some(value.to_string()));
                    }
                }
            }
            return Ok(id);
        }
        let copies = existing;
        for (field, value) in checked {
            let def = schema.schema.get(&field);
            // Every copy gets the write, so the merged record reads it.
            for obj in &copies {
                self.write_field(obj, &field, def, value.as_ref())?;
            }
            if def.is_some_and(|d| d.unique)
                && let Some(index) = self.unique.as_mut()
            {
                index.set(&field, &id, value.map(|v| v.to_string()));
            }
        }
        Ok(id)
    }

    /// Writes (or clears) one field of one copy of a record.
    fn write_field(
        &mut self,
        obj: &ObjId,
        field: &str,
        def: Option<&crate::schema::FieldDef>,
        value: Option<&Value>,
    ) -> Result<(), WriteError> {
        // Containers made concurrently (say, for a field added to the
        // schema after the record was created) conflict, and editing
        // inside one would leave the others standing for good: replace
        // them all, as a write does a scalar's concurrent values.
        let container = def
            .is_some_and(|d| matches!(d.field_type, FieldKind::LongText | FieldKind::MultiSelect));
        if container && self.doc.get_all(obj, field).map_err(internal)?.len() > 1 {
            self.doc.delete(obj, field).map_err(internal)?;
        }
        match value {
            Some(v) => {
                let ty = def.map_or(FieldKind::Json, |d| d.field_type);
                doc::write_value(&mut self.doc, obj, field, ty, v).map_err(internal)?;
            }
            // Containers are emptied, not removed, so concurrent edits
            // keep landing in the one shared object.
            None => match def.map(|d| d.field_type) {
                Some(ty @ FieldKind::LongText) => {
                    doc::write_value(&mut self.doc, obj, field, ty, &Value::Text(String::new()))
                        .map_err(internal)?
                }
                Some(ty @ FieldKind::MultiSelect) => doc::write_value(
                    &mut self.doc,
                    obj,
                    field,
                    ty,
                    &Value::Set(Default::default()),
                )
                .map_err(internal)?,
                _ => self.doc.delete(obj, field).map_err(internal)?,
            },
        }
        Ok(())
    }

    pub(crate) fn delete_record(&mut self, id: &str, author: &PublicKey) -> Result<(), WriteError> {
        let copies = self.copies(id);
        self.require_owner(id, &copies, author)?;
        if copies.is_empty() {
            return Err(WriteError::NotFound {
                registry: self.name.clone(),
                record: id.to_owned(),
            });
        }
        if self.is_deleted(&copies) {
            return Ok(()); // already deleted
        }
        for obj in &copies {
            let t = self
                .doc
                .put_object(obj, DELETED, ObjType::Map)
                .map_err(internal)?;
            self.doc
                .put(&t, "by", author.to_string())
                .map_err(internal)?;
            self.doc
                .put(&t, "at", automerge::ScalarValue::Timestamp(now_ms()))
                .map_err(internal)?;
        }
        if let Some(index) = self.unique.as_mut() {
            for def in self.schema.schema.fields.iter().filter(|d| d.unique) {
                index.set(&def.name, id, None);
            }
        }
        Ok(())
    }

    fn ensure_unique_index(&mut self) {
        if self.unique.is_some() {
            return;
        }
        let unique_fields: Vec<String> = self
            .schema
            .schema
            .fields
            .iter()
            .filter(|d| d.unique)
            .map(|d| d.name.clone())
            .collect();
        let mut index = UniqueIndex::default();
        if !unique_fields.is_empty() {
            for (id, copies) in self.record_objs() {
                if self.is_deleted(&copies) {
                    continue;
                }
                let record = self.read_record_at(&id, &copies);
                for field in &unique_fields {
                    if let Some(v) = record.fields.get(field) {
                        index.set(field, &id, Some(v.to_string()));
                    }
                }
            }
        }
        self.unique = Some(index);
    }

    pub(crate) fn set_member(
        &mut self,
        key: PublicKey,
        role: Option<Role>,
    ) -> Result<(), WriteError> {
        let members = self.layout.members(self.view(), None);
        let admins = members.iter().filter(|(_, r)| *r == Role::Admin).count();
        let was_admin = members.iter().any(|(k, r)| *k == key && *r == Role::Admin);
        if was_admin && role != Some(Role::Admin) && admins == 1 {
            return Err(WriteError::LastAdmin {
                registry: self.name.clone(),
            });
        }
        self.admin_write = true;
        match role {
            Some(r) => self
                .doc
                .put(&self.layout.members, key.to_string(), r.name()),
            None => self.doc.delete(&self.layout.members, key.to_string()),
        }
        .map_err(internal)
    }

    pub(crate) fn set_schema(&mut self, new: Schema) -> Result<(), WriteError> {
        new.check().map_err(WriteError::Schema)?;
        let old = self.schema.schema.clone();
        for def in &new.fields {
            if let Some(o) = old.get(&def.name)
                && o.field_type != def.field_type
            {
                return Err(WriteError::Schema(crate::schema::SchemaError::Invalid(
                    format!(
                        "field '{}' is {}; its type cannot change to {} — add a new field and copy the values",
                        def.name, o.field_type, def.field_type
                    ),
                )));
            }
        }
        // Every live record must satisfy the new schema before it is adopted.
        let compiled = CompiledSchema::new(new.clone());
        let mut seen: HashMap<(String, String), String> = HashMap::new();
        for record in self.list(&Query::all()) {
            for def in &new.fields {
                match record.fields.get(&def.name) {
                    None if def.required => {
                        return Err(self.invalid(
                            &record.id,
                            &def.name,
                            String::new(),
                            Rule::Required,
                        ));
                    }
                    None => {}
                    Some(v) => {
                        compiled.check_value(&def.name, v.clone()).map_err(|rule| {
                            self.invalid(&record.id, &def.name, v.to_string(), rule)
                        })?;
                        if def.unique {
                            let key = (def.name.clone(), v.to_string());
                            if let Some(other) = seen.insert(key, record.id.clone()) {
                                let rule = Rule::Unique {
                                    other_record: other,
                                };
                                return Err(self.invalid(
                                    &record.id,
                                    &def.name,
                                    v.to_string(),
                                    rule,
                                ));
                            }
                        }
                    }
                }
            }
        }
        self.admin_write = true;
        self.layout
            .write_schema(&mut self.doc, &old, &new)
            .map_err(internal)?;
        self.schema = Arc::new(compiled);
        self.unique = None;
        Ok(())
    }

    /// Every concurrent value of a field across a record's copies. Emptied
    /// containers (a copy's untouched long text or multi-select) are not
    /// values and are left out.
    fn candidates(
        &mut self,
        copies: &[ObjId],
        field: &str,
        ty: Option<FieldKind>,
    ) -> Vec<Candidate> {
        let mut all: Vec<(automerge::Value<'static>, ObjId)> = Vec::new();
        for obj in copies {
            if let Ok(values) = self.view().get_all(obj, field) {
                all.extend(values.into_iter().map(|(v, id)| (v.into_owned(), id)));
            }
        }
        let mut out = Vec::with_capacity(all.len());
        for (v, id) in all {
            let Some(value) = doc::read_value(self.view(), &v, &id, ty) else {
                continue;
            };
            if is_empty_container(&value, ty) {
                continue;
            }
            let author = match &id {
                ObjId::Id(_, actor, _) => PublicKey::from_bytes(actor.to_bytes()).ok(),
                ObjId::Root => None,
            };
            let change = self
                .view()
                .hash_for_opid(&id)
                .unwrap_or(ChangeHash([0; 32]));
            let time = self
                .doc
                .get_change_meta_by_hash(&change)
                .map_or(0, |m| m.timestamp);
            out.push(Candidate {
                value,
                author,
                time,
                change,
            });
        }
        out
    }

    /// The records that changes after `heads` created, changed or deleted;
    /// `None` if a head is unknown. Reads only those changes.
    pub(crate) fn records_touched_since(
        &mut self,
        heads: &[ChangeHash],
    ) -> Option<std::collections::BTreeSet<String>> {
        if heads
            .iter()
            .any(|h| self.doc.get_change_by_hash(h).is_none())
        {
            return None;
        }
        let records = legacy_obj(&self.layout.records);
        let mut holders: HashMap<automerge::legacy::OpId, Holder> = HashMap::new();
        let mut out = std::collections::BTreeSet::new();
        for change in self.doc.get_changes(heads) {
            for op in change.decode().operations {
                if op.obj == records {
                    if let automerge::legacy::Key::Map(key) = &op.key {
                        out.insert(key.to_string());
                    }
                    continue;
                }
                let automerge::legacy::ObjectId::Id(op_id) = &op.obj else {
                    continue;
                };
                let holder = holders
                    .entry(op_id.clone())
                    .or_insert_with(|| record_holder(&self.doc, &self.layout, op_id));
                if let Some((_, record)) = holder {
                    out.insert(record.clone());
                }
            }
        }
        Some(out)
    }

    /// The latest write time of a field's values, if it has any.
    pub(crate) fn field_time(&mut self, id: &str, field: &str) -> Option<i64> {
        let copies = self.copies(id);
        let ty = self.schema.schema.get(field).map(|d| d.field_type);
        self.candidates(&copies, field, ty)
            .iter()
            .map(|c| c.time)
            .max()
    }

    /// Which candidate the policy picks (`None` for manual).
    fn choose(
        &self,
        copies: &[ObjId],
        field: &str,
        policy: ConflictPolicy,
        c: &[Candidate],
    ) -> Option<usize> {
        match policy {
            ConflictPolicy::Manual => None,
            ConflictPolicy::Automerge => {
                // Automerge's winner in the first copy that has the field;
                // the copies' order is the same on every replica.
                let winner = copies
                    .iter()
                    .find_map(|obj| self.view().get(obj, field).ok().flatten())?
                    .1;
                let hash = self.view().hash_for_opid(&winner)?;
                c.iter().position(|x| x.change == hash).or(if c.is_empty() {
                    None
                } else {
                    Some(c.len() - 1)
                })
            }
            ConflictPolicy::LastWriteWins => (0..c.len()).max_by_key(|&i| (c[i].time, c[i].author)),
            ConflictPolicy::Hash => (0..c.len()).min_by_key(|&i| c[i].value.content_hash()),
        }
    }

    pub(crate) fn read_record(&mut self, id: &str) -> Option<Record> {
        let copies = self.copies(id);
        if copies.is_empty() {
            return None;
        }
        Some(self.read_record_at(id, &copies))
    }

    fn read_record_at(&mut self, id: &str, copies: &[ObjId]) -> Record {
        let schema = self.schema.clone();
        let mut record = Record {
            id: id.to_owned(),
            fields: Default::default(),
            deleted: self.tombstone(copies),
            conflicted: Default::default(),
        };
        // (field, has concurrent values in one copy, value, value's id)
        let mut items: Vec<(String, bool, automerge::Value<'static>, ObjId)> = Vec::new();
        for obj in copies {
            items.extend(self.view().map_range(obj, ..).map(|i| {
                let (key, conflict, id) = (i.key.to_string(), i.conflict, i.id());
                let value = match i.value {
                    automerge::ValueRef::Object(t) => automerge::Value::Object(t),
                    automerge::ValueRef::Scalar(s) => {
                        automerge::Value::Scalar(std::borrow::Cow::Owned(s.into()))
                    }
                };
                (key, conflict, value, id)
            }));
        }
        let mut done = std::collections::BTreeSet::new();
        for (field, conflict, value, vid) in items {
            if field == DELETED || !done.insert(field.clone()) {
                continue;
            }
            let ty = schema.schema.get(&field).map(|d| d.field_type);
            let chosen = if conflict || copies.len() > 1 {
                let candidates = self.candidates(copies, &field, ty);
                if distinct_values(&candidates) > 1 {
                    record.conflicted.insert(field.clone());
                    let policy = schema.schema.policy_for(&field);
                    // Manual conflicts show Automerge's pick until resolved.
                    let pick = self
                        .choose(copies, &field, policy, &candidates)
                        .or_else(|| {
                            self.choose(copies, &field, ConflictPolicy::Automerge, &candidates)
                        });
                    pick.and_then(|i| candidates.get(i))
                        .map(|c| c.value.clone())
                } else {
                    candidates.into_iter().next().map(|c| c.value)
                }
            } else {
                doc::read_value(self.view(), &value, &vid, ty)
            };
            if let Some(v) = chosen.filter(|v| !is_empty_container(v, ty)) {
                record.fields.insert(field, v);
            }
        }
        record
    }

    /// Every record id with its copies.
    fn record_objs(&self) -> Vec<(String, Vec<ObjId>)> {
        let items: Vec<(String, bool, ObjId)> = self
            .view()
            .map_range(&self.layout.records, ..)
            .filter(|i| matches!(i.value, automerge::ValueRef::Object(ObjType::Map)))
            .map(|i| (i.key.to_string(), i.conflict, i.id()))
            .collect();
        items
            .into_iter()
            .map(|(id, conflict, obj)| {
                let copies = if conflict {
                    self.copies(&id)
                } else {
                    vec![obj]
                };
                (id, copies)
            })
            .collect()
    }

    pub(crate) fn list(&mut self, query: &Query) -> Vec<Record> {
        let mut out = Vec::new();
        for (id, copies) in self.record_objs() {
            if query.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            if !query.include_deleted && self.is_deleted(&copies) {
                continue;
            }
            let record = self.read_record_at(&id, &copies);
            let keep = query.filters.iter().all(|(f, want)| {
                record.fields.get(f).is_some_and(|v| match v {
                    Value::Set(s) => s.contains(want),
                    v => v.to_string() == *want,
                })
            });
            if keep {
                out.push(record);
            }
        }
        out
    }

    pub(crate) fn live_count(&self) -> usize {
        self.record_objs()
            .iter()
            .filter(|(_, copies)| !self.is_deleted(copies))
            .count()
    }

    pub(crate) fn conflicts(&mut self) -> Vec<Conflict> {
        let schema = self.schema.clone();
        let mut out = Vec::new();
        for (id, copies) in self.record_objs() {
            let mut fields = std::collections::BTreeSet::new();
            for obj in &copies {
                fields.extend(
                    self.view()
                        .map_range(obj, ..)
                        .filter(|i| (i.conflict || copies.len() > 1) && i.key != DELETED)
                        .map(|i| i.key.to_string()),
                );
            }
            for field in fields {
                let ty = schema.schema.get(&field).map(|d| d.field_type);
                let candidates = self.candidates(&copies, &field, ty);
                if distinct_values(&candidates) < 2 {
                    continue;
                }
                let policy = schema.schema.policy_for(&field);
                let chosen = self.choose(&copies, &field, policy, &candidates);
                out.push(Conflict {
                    record: id.clone(),
                    field,
                    policy,
                    candidates,
                    chosen,
                });
            }
        }
        out
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        let aliases = self.layout.aliases(self.view());
        self.layout
            .members(self.view(), None)
            .into_iter()
            .map(|(key, role)| Member {
                alias: aliases.get(&key.to_string()).cloned(),
                key,
                role,
            })
            .collect()
    }

    pub(crate) fn set_alias(
        &mut self,
        key: PublicKey,
        alias: Option<&str>,
    ) -> Result<(), WriteError> {
        let aliases = match &self.layout.aliases {
            Some(a) => a.clone(),
            None => {
                return Err(WriteError::Schema(crate::schema::SchemaError::Invalid(
                    "this registry predates member aliases".into(),
                )));
            }
        };
        self.admin_write = true;
        match alias.map(str::trim).filter(|a| !a.is_empty()) {
            Some(a) => self.doc.put(&aliases, key.to_string(), a),
            None => self.doc.delete(&aliases, key.to_string()),
        }
        .map_err(internal)
    }

    pub(crate) fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    pub(crate) fn change_count(&self) -> usize {
        self.doc.stats().num_changes as usize
    }

    pub(crate) fn state_digest(&self) -> String {
        hex::encode(self.state_digest_bytes())
    }

    /// SHA-256 over the canonical JSON of meta, schema, members and records
    /// — not aliases, and not attestations (which live outside the document),
    /// so attesting a state never changes it.
    pub(crate) fn state_digest_bytes(&self) -> [u8; 32] {
        let part = |obj: &ObjId| doc::canonical_json(self.view(), obj);
        let json = serde_json::json!({
            "meta": part(&self.layout.meta),
            "schema": part(&self.layout.schema),
            "members": part(&self.layout.members),
            "records": part(&self.layout.records),
        });
        Sha256::digest(json.to_string().as_bytes()).into()
    }

    /// Signs and stores this replica's attestation of the current state.
    pub(crate) fn attest(
        &mut self,
        shared: &Shared,
    ) -> Result<crate::trust::attest::Attestation, WriteError> {
        let me = shared.identity.public_key();
        if !self
            .layout
            .members(self.view(), None)
            .iter()
            .any(|(k, _)| *k == me)
        {
            return Err(WriteError::NotPermitted {
                registry: self.name.clone(),
                key: me.to_string(),
                role: None,
                needed: Role::Reader.name().to_owned(),
            });
        }
        let mut store = shared.store();
        let tx = store.begin()?;
        self.catch_up(&tx)?;
        let attestation = crate::trust::attest::Attestation::sign(
            &shared.identity,
            self.id,
            self.doc.get_heads(),
            self.state_digest_bytes(),
            self.change_count() as u64,
        );
        if tx.insert_attestation(&attestation)? {
            let detail = serde_json::json!({
                "digest": hex::encode(attestation.digest),
                "changes": attestation.change_count,
            });
            tx.journal(Some(&self.id), "attested", &detail)?;
        }
        tx.commit()?;
        Ok(attestation)
    }

    /// Who attests the current state, against the configured quorum.
    pub(crate) fn status(
        &mut self,
        store: &Store,
    ) -> Result<crate::trust::attest::AttestationStatus, StoreError> {
        let heads = self.doc.get_heads();
        let digest = self.state_digest_bytes();
        let members = self.layout.members(self.view(), None);
        let mut attested_by: Vec<PublicKey> =
            crate::store::attestations(store.conn(), store.path(), &self.id)?
                .into_iter()
                .filter(|a| a.attests(&heads, &digest) && a.verify())
                .map(|a| a.member)
                .filter(|m| members.iter().any(|(k, _)| k == m))
                .collect();
        attested_by.sort();
        attested_by.dedup();
        Ok(crate::trust::attest::AttestationStatus {
            heads,
            digest: hex::encode(digest),
            change_count: self.change_count() as u64,
            attested_by,
            members: members.len(),
            quorum: self.schema.schema.quorum,
        })
    }

    /// Verifies and stores attestations that came with a bundle. Those by
    /// keys that are not members are skipped; a bad signature refuses the
    /// whole bundle.
    pub(crate) fn import_attestations(
        &self,
        tx: &StoreTx<'_>,
        attestations: &[crate::trust::attest::Attestation],
    ) -> Result<usize, ImportError> {
        let members = self.layout.members(self.view(), None);
        let mut stored = 0;
        for a in attestations {
            if a.registry != self.id || !a.verify() {
                return Err(ImportError::BadSignature {
                    change: format!("attestation of {} changes", a.change_count),
                    author: a.member.to_string(),
                });
            }
            if members.iter().any(|(k, _)| *k == a.member) && tx.insert_attestation(a)? {
                stored += 1;
            }
        }
        Ok(stored)
    }

    fn knows(&self, hash: &ChangeHash) -> bool {
        self.doc
            .get_missing_deps(std::slice::from_ref(hash))
            .is_empty()
    }

    pub(crate) fn export(
        &mut self,
        store: &Store,
        their_heads: &[ChangeHash],
    ) -> Result<Bundle, ExportError> {
        // Heads we do not know are their changes we lack; we cannot tell what
        // lies beneath them, so the bundle may carry changes they already
        // have. Import skips those (`already_known`), so this costs bytes,
        // never correctness.
        let have: Vec<ChangeHash> = their_heads
            .iter()
            .copied()
            .filter(|h| self.knows(h))
            .collect();
        let mut changes = self.doc.get_changes(&have);
        let hashes: Vec<[u8; 32]> = changes.iter().map(|c| c.hash().0).collect();
        let sigs = store.signatures(&self.id, &hashes)?;
        let mut out = Vec::with_capacity(changes.len());
        for change in changes.drain(..) {
            let hash = change.hash();
            let (key, signature) =
                sigs.get(&hash.0)
                    .ok_or_else(|| ExportError::MissingSignature {
                        registry: self.id.to_string(),
                        change: hash.to_string(),
                    })?;
            let author = PublicKey::from_bytes(key).map_err(|_| ExportError::MissingSignature {
                registry: self.id.to_string(),
                change: hash.to_string(),
            })?;
            out.push(SignedChange::new(change, author, *signature));
        }
        let attestations = crate::store::attestations(store.conn(), store.path(), &self.id)?;
        Ok(Bundle::new(self.id, out, attestations))
    }

    /// Verifies and applies signed changes from elsewhere in one transaction.
    /// Any bad change refuses the whole batch and leaves everything as before.
    pub(crate) fn import(
        &mut self,
        tx: &StoreTx<'_>,
        changes: Vec<SignedChange>,
    ) -> Result<ImportReport, ImportError> {
        self.catch_up(tx)?;
        let offered = changes.len();
        // A change listed twice is one change: keep it once.
        let mut seen = HashSet::new();
        let fresh: Vec<SignedChange> = changes
            .into_iter()
            .filter(|c| !self.knows(&c.hash()) && seen.insert(c.hash()))
            .collect();
        let report = ImportReport {
            registry: self.id,
            name: self.name.clone(),
            applied: fresh.len(),
            already_known: offered - fresh.len(),
            created: false,
        };
        if fresh.is_empty() {
            return Ok(report);
        }
        if let Some(root) = fresh.iter().find(|c| c.change.deps().is_empty()) {
            verify(&self.id, std::slice::from_ref(root))?;
            return Err(ImportError::NotAuthorised {
                change: root.hash().to_string(),
                author: root.author.to_string(),
                reason: "a second root change: only the registry's genesis has no dependencies"
                    .into(),
            });
        }
        let mut missing: Vec<String> = fresh
            .iter()
            .flat_map(|c| c.change.deps().iter().copied())
            .filter(|d| !seen.contains(d) && !self.knows(d))
            .map(|d| d.to_string())
            .collect();
        if !missing.is_empty() {
            verify(&self.id, &fresh)?;
            missing.sort();
            missing.dedup();
            return Err(ImportError::MissingDependencies {
                registry: self.id.to_string(),
                missing,
            });
        }
        // Signatures and the ops' targets need no document: check them on a
        // second thread while this one applies the batch to the document.
        // The registry stays locked meanwhile, so nothing unverified is ever
        // visible; on any failure the document is rebuilt from the store.
        let guard = Guard::new(&self.layout);
        let id = self.id;
        let checks = || -> Result<Vec<Option<&'static str>>, ImportError> {
            verify(&id, &fresh)?;
            Ok(fresh.iter().map(|c| guard.admin_only(&c.change)).collect())
        };
        let apply = |doc: &mut AutoCommit| {
            doc.apply_changes(fresh.iter().map(|c| c.change.clone()))
                .map_err(|e| ImportError::Malformed {
                    reason: format!("a change does not apply: {e}"),
                })
        };
        let (checked, applied) = if fresh.len() >= PARALLEL_CHECKS_FROM {
            std::thread::scope(|scope| {
                let checking = scope.spawn(checks);
                let applied = apply(&mut self.doc);
                let checked = checking.join().unwrap_or_else(|_| {
                    Err(ImportError::Malformed {
                        reason: "checking the bundle failed unexpectedly".into(),
                    })
                });
                (checked, applied)
            })
        } else {
            match checks() {
                Ok(checked) => (Ok(checked), apply(&mut self.doc)),
                Err(e) => return Err(e),
            }
        };
        let mut admin_changes = Vec::new();
        let outcome = checked.and_then(|checked| {
            applied?;
            fresh.iter().zip(checked).try_for_each(|(c, admin_only)| {
                if admin_only.is_some() {
                    admin_changes.push(c.hash());
                }
                self.authorise(c, admin_only)
            })
        });
        if let Err(e) = outcome {
            // Nothing was stored; rebuild the document as it was.
            self.reload(tx.conn(), tx.path())?;
            return Err(e);
        }
        let mut rows: Vec<ChangeRow> = fresh
            .into_iter()
            .map(|c| row_of(&c.change, c.author, c.signature))
            .collect();
        self.clock = self
            .clock
            .max(rows.iter().map(|r| r.time).max().unwrap_or(0));
        let stored = tx.insert_changes(&self.id, &rows).and_then(|pos| {
            tx.insert_admin_changes(&self.id, &admin_changes)
                .map(|()| pos)
        });
        let pos = match stored {
            Ok(pos) => pos,
            Err(e) => {
                self.reload(tx.conn(), tx.path())?;
                return Err(e.into());
            }
        };
        self.loaded_pos = pos;
        let bytes = rows.iter().map(|r| r.bytes.len() as i64).sum();
        self.history.added(rows.len() as i64, bytes);
        rows.clear();
        self.admin_changes.extend(admin_changes);
        self.refresh_derived();
        Ok(report)
    }

    /// Checks that a change's author held a role allowing it, as of the
    /// change's own dependencies (so a later promotion or removal does not
    /// change the verdict). `admin_only` says why the change needs an admin,
    /// if it does (see [`Guard::admin_only`]).
    fn authorise(&self, c: &SignedChange, admin_only: Option<&str>) -> Result<(), ImportError> {
        let refuse = |reason: String| ImportError::NotAuthorised {
            change: c.hash().to_string(),
            author: c.author.to_string(),
            reason,
        };
        match self.layout.role_at(&self.doc, &c.author, c.change.deps()) {
            Some(Role::Admin) => Ok(()),
            Some(Role::Writer) => match admin_only {
                Some(why) => Err(refuse(why.into())),
                None => match foreign_record(&self.doc, &self.layout, &c.change, &c.author) {
                    Some(record) => Err(refuse(format!(
                        "record {record} may be changed only by its creator or an admin"
                    ))),
                    None => Ok(()),
                },
            },
            Some(Role::Reader) => Err(refuse("readers cannot write".into())),
            None => Err(refuse("not a member of the registry".into())),
        }
    }

    pub(crate) fn wants_compaction(&self) -> bool {
        self.history.wants_compaction()
    }

    /// Saves the whole document as the snapshot covering every stored change.
    pub(crate) fn compact(&mut self, store: &mut Store) -> Result<(), StoreError> {
        let tx = store.begin()?;
        self.catch_up(&tx)?;
        let data = self.doc.save();
        tx.save_snapshot(&self.id, self.loaded_pos, &data)?;
        tx.commit()?;
        self.history.compacted(data.len() as i64);
        Ok(())
    }
}

/// Verifies signatures and actor bindings of a batch, naming the first bad one.
pub(crate) fn verify(id: &RegistryId, changes: &[SignedChange]) -> Result<(), ImportError> {
    trust::verify_all(id, changes).map_err(|(i, why)| {
        let c = &changes[i];
        match why {
            Distrust::BadSignature => ImportError::BadSignature {
                change: c.hash().to_string(),
                author: c.author.to_string(),
            },
            Distrust::ForgedActor => ImportError::ForgedActor {
                change: c.hash().to_string(),
                actor: c.change.actor_id().to_hex_string(),
                author: c.author.to_string(),
            },
        }
    })
}

/// Builds the state of a registry this replica does not have yet from a
/// batch that starts at its genesis.
pub(crate) fn import_new(
    tx: &StoreTx<'_>,
    id: RegistryId,
    me: &PublicKey,
    changes: Vec<SignedChange>,
) -> Result<(DocState, ImportReport), ImportError> {
    let genesis = changes
        .iter()
        .find(|c| id.is_genesis(&c.hash()) && c.change.deps().is_empty())
        .ok_or_else(|| ImportError::UnknownRegistry {
            registry: id.to_string(),
        })?;
    verify(&id, &changes)?;
    let creator = genesis.author;
    let mut doc = AutoCommit::new().with_actor(actor_of(me));
    doc.apply_changes([genesis.change.clone()])
        .map_err(|e| ImportError::Malformed {
            reason: format!("the genesis does not apply: {e}"),
        })?;
    let bad_genesis = |reason: &str| ImportError::NotAuthorised {
        change: genesis.hash().to_string(),
        author: creator.to_string(),
        reason: format!("not a valid genesis: {reason}"),
    };
    let layout = Layout::find(&doc).ok_or_else(|| bad_genesis("it does not create a registry"))?;
    let members = layout.members(&doc, None);
    if members != [(creator, Role::Admin)] {
        return Err(bad_genesis("its only member must be its author, as admin"));
    }
    let name = layout.name(&doc);
    let created_at = layout.created_at(&doc);
    let schema = layout.read_schema(&doc);
    tx.insert_registry(&id, &name, created_at)?;
    let genesis_row = row_of(&genesis.change, genesis.author, genesis.signature);
    let pos = tx.insert_changes(&id, std::slice::from_ref(&genesis_row))?;
    let mut state = DocState {
        id,
        name,
        doc,
        schema: Arc::new(CompiledSchema::new(schema)),
        layout,
        loaded_pos: pos,
        seen_version: crate::store::data_version(tx.conn(), tx.path())?,
        clock: genesis_row.time,
        history: History::default(),
        unique: None,
        admin_changes: BTreeSet::from([genesis.hash()]),
        admin_write: false,
        revoked: Arc::default(),
        view: None,
    };
    tx.insert_admin_changes(&id, &[genesis.hash()])?;
    state.history.added(1, genesis_row.bytes.len() as i64);
    state.refresh_derived();
    let rest: Vec<SignedChange> = changes
        .into_iter()
        .filter(|c| c.hash().0 != genesis_row.hash)
        .collect();
    let mut report = state.import(tx, rest)?;
    report.applied += 1;
    report.created = true;
    Ok((state, report))
}

fn row_of(change: &Change, author: PublicKey, signature: [u8; 64]) -> ChangeRow {
    ChangeRow {
        hash: change.hash().0,
        actor: change.actor_id().to_bytes().to_vec(),
        seq: change.seq(),
        start_op: change.start_op().get(),
        time: change.timestamp(),
        author: *author.as_bytes(),
        signature,
        // Uncompressed: storing must not pay for DEFLATE on every write;
        // compaction folds these into the compressed snapshot.
        bytes: change.raw_bytes().to_vec(),
    }
}

/// An emptied long text or multi-select: reads as no value.
fn is_empty_container(v: &Value, ty: Option<FieldKind>) -> bool {
    matches!(v, Value::Set(s) if s.is_empty())
        || (ty == Some(FieldKind::LongText) && *v == Value::Text(String::new()))
}

fn distinct_values(candidates: &[Candidate]) -> usize {
    let mut values: Vec<&Value> = candidates.iter().map(|c| &c.value).collect();
    values.sort();
    values.dedup();
    values.len()
}

/// Content hash of a value for the `hash` policy: type tag and canonical JSON.
fn check_record_id(id: &str) -> Result<String, WriteError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('_')
        && id.chars().all(|c| !c.is_control() && !c.is_whitespace());
    if ok {
        Ok(id.to_owned())
    } else {
        Err(WriteError::BadRecordId { id: id.to_owned() })
    }
}
