//! Registries: records, fields, members and conflicts over one signed
//! Automerge document.

mod shared;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::ChangeHash;

pub use crate::document::Role;

pub(crate) use shared::Shared;
pub(crate) use state::{DocState, NewId, import_new};

use crate::error::{ExportError, StoreError, WriteError};
use crate::exchange::Bundle;
use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::schema::{ConflictPolicy, Schema};
use crate::value::Value;

/// A record: its id, its field values under the registry's conflict policy,
/// and which fields hold concurrent values.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The record's stable id (a UUIDv7 unless the writer chose one).
    pub id: String,
    /// Field values, by field name.
    pub fields: BTreeMap<String, Value>,
    /// Set when the record was deleted.
    pub deleted: Option<Tombstone>,
    /// Fields with concurrent values (see [`Registry::conflicts`]).
    pub conflicted: BTreeSet<String>,
}

impl Record {
    /// A field's value.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// The record as a JSON object (fields plus `_id`, and `_deleted` if so).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("_id".into(), self.id.clone().into());
        for (k, v) in &self.fields {
            map.insert(k.clone(), v.to_json());
        }
        if let Some(t) = &self.deleted {
            map.insert(
                "_deleted".into(),
                serde_json::json!({ "by": t.by.to_string(), "at": t.at }),
            );
        }
        serde_json::Value::Object(map)
    }
}

/// Who deleted a record, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The deleting member's key.
    pub by: String,
    /// When, in ms since the epoch (the writer's clock).
    pub at: i64,
}

/// Concurrent values of one field of one record.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The record.
    pub record: String,
    /// The field.
    pub field: String,
    /// The policy that applies to the field.
    pub policy: ConflictPolicy,
    /// Every concurrent value, oldest operation first.
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the value the policy picks; `None` for
    /// `manual`, which leaves the conflict open until resolved.
    pub chosen: Option<usize>,
}

/// One of several concurrent values of a field.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The value.
    pub value: Value,
    /// The member who wrote it.
    pub author: Option<PublicKey>,
    /// The hybrid logical clock of the write (ms).
    pub time: i64,
    /// The change that wrote it.
    pub change: ChangeHash,
}

/// A member of a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Their key.
    pub key: PublicKey,
    /// Their role.
    pub role: Role,
    /// A human name for the key, if an admin gave one.
    pub alias: Option<String>,
}

/// A registry as listed by a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryInfo {
    /// Its id.
    pub id: RegistryId,
    /// Its name.
    pub name: String,
    /// When it was created (ms since the epoch).
    pub created_at: i64,
}

/// Which records [`Registry::list`] returns.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Only records whose field equals the value (compared as text).
    pub filters: Vec<(String, String)>,
    /// Include deleted records.
    pub include_deleted: bool,
    /// At most this many.
    pub limit: Option<usize>,
}

impl Query {
    /// Every live record.
    pub fn all() -> Self {
        Query::default()
    }

    /// Adds a `field = value` filter.
    pub fn filter(mut self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.filters.push((field.into(), value.into()));
        self
    }
}

/// Changes from one write batch, made with [`Registry::write`].
pub struct Writer<'a> {
    state: &'a mut DocState,
    author: PublicKey,
    /// The heads as the batch began (asking the document mid-batch would
    /// close the batch's transaction).
    began_at: Vec<ChangeHash>,
}

impl<'a> Writer<'a> {
    fn new(state: &'a mut DocState, author: PublicKey) -> Self {
        let began_at = state.heads();
        Writer {
            state,
            author,
            began_at,
        }
    }
}

impl Writer<'_> {
    /// Creates or updates a record; returns its id. See [`Registry::put`]
    /// for which ids create a record.
    pub fn put<I, K, V>(&mut self, id: Option<&str>, fields: I) -> Result<String, WriteError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<Value>,
    {
        self.put_new(id, fields, NewId::Named)
    }

    /// [`Writer::put`] for a record a mirror brings from its target, whose
    /// id may be the target's UUID.
    pub(crate) fn put_from_target<I, K, V>(
        &mut self,
        id: &str,
        fields: I,
    ) -> Result<String, WriteError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<Value>,
    {
        self.put_new(Some(id), fields, NewId::AnyForm)
    }

    fn put_new<I, K, V>(
        &mut self,
        id: Option<&str>,
        fields: I,
        create: NewId,
    ) -> Result<String, WriteError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<Value>,
    {
        let fields = fields
            .into_iter()
            .map(|(k, v)| (k.into(), Some(v.into())))
            .collect();
        self.state.write_record(id, fields, &self.author, create)
    }

    /// Removes fields' values from a record.
    pub fn unset<I, K>(&mut self, id: &str, fields: I) -> Result<(), WriteError>
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let fields = fields.into_iter().map(|k| (k.into(), None)).collect();
        self.state
            .write_record(Some(id), fields, &self.author, NewId::Named)
            .map(drop)
    }

    /// Deletes a record (leaves a tombstone naming who and when).
    pub fn delete(&mut self, id: &str) -> Result<(), WriteError> {
        self.state.delete_record(id, &self.author)
    }

    /// A record as this batch has left it so far.
    pub fn get(&mut self, id: &str) -> Option<Record> {
        self.state.read_record(id)
    }

    /// The registry's heads as this batch began: compare them with heads a
    /// caller read earlier to refuse a write based on a stale read
    /// ([`WriteError::Stale`]).
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.began_at.clone()
    }

    /// Fails with [`WriteError::Stale`] unless the registry's heads are
    /// `expected` (in any order): a compare-and-set for callers that must
    /// not overwrite what they never read.
    pub fn expect_heads(&mut self, expected: &[ChangeHash]) -> Result<(), WriteError> {
        let mut now = self.began_at.clone();
        let mut expected = expected.to_vec();
        now.sort();
        expected.sort();
        if now == expected {
            Ok(())
        } else {
            Err(WriteError::Stale {
                registry: self.state.name.clone(),
            })
        }
    }
}

/// A registry in a replica: read and write its records, members and schema.
///
/// Cheap to clone; clones share the same in-memory document. All methods
/// are safe to call from many threads.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
    state: Arc<Mutex<DocState>>,
    id: RegistryId,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub(crate) fn new(shared: Arc<Shared>, state: Arc<Mutex<DocState>>, id: RegistryId) -> Self {
        Registry { shared, state, id }
    }

    fn lock(&self) -> MutexGuard<'_, DocState> {
        // A panic while holding the lock cannot leave a half-applied write
        // (writes commit or roll back whole), so poisoning is safe to ignore.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, first brought up to date with what other processes or
    /// handles stored (one indexed query when nothing is new). If the store
    /// cannot be read, the last loaded state is served and the failure logged.
    fn fresh(&self) -> MutexGuard<'_, DocState> {
        let mut state = self.lock();
        if let Err(e) = state.refresh(&self.shared.store()) {
            tracing::warn!(registry = %self.id, error = %e, "serving the last loaded state");
        }
        state
    }

    /// Runs `f` on the state, first brought up to date with the store, with
    /// the store (the peer protocol reads the document and signatures).
    pub(crate) fn with_state<T>(
        &self,
        f: impl FnOnce(&mut DocState, &crate::store::Store) -> T,
    ) -> T {
        let mut state = self.lock();
        let store = self.shared.store();
        if let Err(e) = state.refresh(&store) {
            tracing::warn!(registry = %self.id, error = %e, "serving the last loaded state");
        }
        f(&mut state, &store)
    }

    /// Runs `f` on the state and the store, the state first brought up to
    /// date with the store; fails if the store cannot be read.
    pub(crate) fn with_current_state<T>(
        &self,
        f: impl FnOnce(&mut DocState, &crate::store::Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.lock();
        let store = self.shared.store();
        state.refresh(&store)?;
        f(&mut state, &store)
    }

    /// The registry's id.
    pub fn id(&self) -> RegistryId {
        self.id
    }

    /// The registry's name.
    pub fn name(&self) -> String {
        self.fresh().name.clone()
    }

    /// The current schema.
    pub fn schema(&self) -> Schema {
        self.fresh().schema.schema.clone()
    }

    /// Runs `f` as one signed change in one durable transaction: all of its
    /// writes land, or none do.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let mut state = self.lock();
        let author = self.shared.identity.public_key();
        state.transact(&self.shared, "write", |state| {
            state.require_role(&author, Role::Writer)?;
            f(&mut Writer::new(state, author))
        })
    }

    /// Like [`Registry::write`], but the change is made and signed by
    /// `identity` — another key held by this replica, such as an adapter
    /// binding's — which must be a writer of the registry. `message` is
    /// recorded in the change (e.g. where the data came from) and shows in
    /// the audit log.
    pub fn write_as<T>(
        &self,
        identity: &crate::Identity,
        message: &str,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let mut state = self.lock();
        let author = identity.public_key();
        state.transact_as(&self.shared, identity, message, |state| {
            state.require_role(&author, Role::Writer)?;
            f(&mut Writer::new(state, author))
        })
    }

    /// The schema compiled for validation.
    pub(crate) fn compiled_schema(&self) -> Arc<crate::schema::CompiledSchema> {
        self.fresh().schema.clone()
    }

    /// The records changed since `heads` (see `DocState::records_touched_since`).
    pub(crate) fn records_touched_since(
        &self,
        heads: &[ChangeHash],
    ) -> Option<std::collections::BTreeSet<String>> {
        self.fresh().records_touched_since(heads)
    }

    /// The live record holding `value` in unique field `field`, if any.
    pub(crate) fn unique_holder(&self, field: &str, value: &Value) -> Option<String> {
        self.with_state(|state, _| state.unique_holder(field, &value.to_string()))
    }

    /// When a field of a record was last written (the latest hybrid clock
    /// of its values), if it has a value.
    pub(crate) fn field_time(&self, id: &str, field: &str) -> Option<i64> {
        self.fresh().field_time(id, field)
    }

    /// Creates or updates one record; returns its id.
    ///
    /// Without an id, a record is created with a new UUIDv7. With the id of
    /// a record, that record is updated. An id no record has creates a
    /// record only if it is a *name*: 1–128 ASCII letters, digits and
    /// `.` `_` `-` `:` `@`, starting with a letter or digit, without `..`
    /// (`billing`, `svc-7`). A UUID names only records the registry made,
    /// so one that names no record is refused as not found rather than
    /// creating a record; any other id (a path, spaces, quotes) is refused
    /// as [`WriteError::BadRecordId`].
    pub fn put<I, K, V>(&self, id: Option<&str>, fields: I) -> Result<String, WriteError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<Value>,
    {
        self.write(|w| w.put(id, fields))
    }

    /// Removes fields' values from a record.
    pub fn unset<I, K>(&self, id: &str, fields: I) -> Result<(), WriteError>
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.write(|w| w.unset(id, fields))
    }

    /// Deletes a record, leaving a tombstone.
    pub fn delete(&self, id: &str) -> Result<(), WriteError> {
        self.write(|w| w.delete(id))
    }

    /// Settles a conflict by writing the chosen value as a new change.
    pub fn resolve(
        &self,
        record: &str,
        field: &str,
        value: impl Into<Value>,
    ) -> Result<(), WriteError> {
        let value = value.into();
        self.write(|w| w.put(Some(record), [(field.to_owned(), value)]).map(drop))
    }

    /// One record, including a deleted one (see [`Record::deleted`]).
    pub fn get(&self, id: &str) -> Option<Record> {
        self.fresh().read_record(id)
    }

    /// [`Registry::get`], telling a missing record from an id no record can
    /// have: `Ok(None)` when no record has a usable id,
    /// [`WriteError::BadRecordId`] for an id the registry could never have
    /// made (see [`Registry::put`]).
    pub fn find(&self, id: &str) -> Result<Option<Record>, WriteError> {
        match self.get(id) {
            Some(record) => Ok(Some(record)),
            None if crate::ids::record_id_form(id).is_none() => {
                Err(WriteError::BadRecordId { id: id.to_owned() })
            }
            None => Ok(None),
        }
    }

    /// Records matching `query`, ordered by id (so by creation time for UUIDv7).
    pub fn list(&self, query: &Query) -> Vec<Record> {
        self.fresh().list(query)
    }

    /// Number of live records.
    pub fn len(&self) -> usize {
        self.fresh().live_count()
    }

    /// Whether there are no live records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every field that holds concurrent values, with the policy's choice.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.fresh().conflicts()
    }

    /// Validation conflicts: live records' values that break the current
    /// schema. A change whose value breaks a rule of the value alone is
    /// refused at import, so these come from changes each valid as of its
    /// own dependencies: a schema change made concurrently, or concurrent
    /// edits that together break a unique or required rule. They stay
    /// until a member writes valid values or an admin changes the schema;
    /// mirrors do not push them.
    pub fn invalid_records(&self) -> Vec<crate::schema::ValidationError> {
        self.fresh().invalid_records()
    }

    /// The members and their roles.
    pub fn members(&self) -> Vec<Member> {
        self.fresh().members()
    }

    /// Adds a member or changes their role. Needs the admin role.
    pub fn set_member(&self, key: PublicKey, role: Role) -> Result<(), WriteError> {
        let mut state = self.lock();
        let author = self.shared.identity.public_key();
        state.transact(&self.shared, "change members", |state| {
            state.require_role(&author, Role::Admin)?;
            state.set_member(key, Some(role))
        })
    }

    /// Gives a member's key a human name shown in the audit log (`None`
    /// removes it). Needs the admin role.
    pub fn set_alias(&self, key: PublicKey, alias: Option<&str>) -> Result<(), WriteError> {
        let mut state = self.lock();
        let author = self.shared.identity.public_key();
        state.transact(&self.shared, "change aliases", |state| {
            state.require_role(&author, Role::Admin)?;
            state.set_alias(key, alias)
        })
    }

    /// Removes a member. Needs the admin role; the last admin cannot be removed.
    pub fn remove_member(&self, key: PublicKey) -> Result<(), WriteError> {
        let mut state = self.lock();
        let author = self.shared.identity.public_key();
        state.transact(&self.shared, "change members", |state| {
            state.require_role(&author, Role::Admin)?;
            state.set_member(key, None)
        })
    }

    /// Replaces the schema (add fields, change options, …). Needs the admin
    /// role. Refused if a live record would break the new schema.
    pub fn set_schema(&self, schema: Schema) -> Result<(), WriteError> {
        let mut state = self.lock();
        let author = self.shared.identity.public_key();
        state.transact(&self.shared, "change schema", |state| {
            state.require_role(&author, Role::Admin)?;
            state.set_schema(schema)
        })
    }

    /// The current heads: the hashes of the latest changes.
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.fresh().heads()
    }

    /// SHA-256 over the canonical form of meta, schema, members and records.
    /// Two replicas with equal heads have equal digests.
    pub fn state_digest(&self) -> String {
        self.fresh().state_digest()
    }

    /// Signs this replica's attestation of the current state (heads, state
    /// digest, change count) and stores it; it travels with later exports.
    /// Any member may attest.
    pub fn attest(&self) -> Result<crate::Attestation, WriteError> {
        let mut state = self.lock();
        state.attest(&self.shared)
    }

    /// Every stored attestation of this registry, by any member, of any state.
    pub fn attestations(&self) -> Result<Vec<crate::Attestation>, crate::StoreError> {
        let store = self.shared.store();
        crate::store::attestations(store.conn(), store.path(), &self.id)
    }

    /// Which members attest the current state, and whether the registry's
    /// quorum (k of n) is met.
    pub fn status(&self) -> Result<crate::AttestationStatus, crate::StoreError> {
        let mut state = self.fresh();
        let store = self.shared.store();
        state.status(&store)
    }

    /// Number of changes in the history.
    pub fn change_count(&self) -> usize {
        self.fresh().change_count()
    }

    /// Signed changes the holder of `their_heads` lacks (all if empty), as a
    /// bundle for [`Replica::import`](crate::Replica::import).
    pub fn export(&self, their_heads: &[ChangeHash]) -> Result<Bundle, ExportError> {
        let mut state = self.lock();
        let store = self.shared.store();
        state.refresh(&store)?;
        state.export(&store, their_heads)
    }

    /// Folds the history into one compact snapshot, so the registry opens
    /// fast. Signatures stay stored and verifiable.
    pub fn compact(&self) -> Result<(), WriteError> {
        let mut state = self.lock();
        let mut store = self.shared.store();
        state.compact(&mut store).map_err(WriteError::Store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditFilter;
    use crate::schema::{FieldDef, FieldKind};
    use crate::{Identity, Replica};

    fn schema() -> Schema {
        Schema::new()
            .field(FieldDef::new("name", FieldKind::Text).required().unique())
            .field(FieldDef::new("notes", FieldKind::LongText))
            .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["a", "b", "c"]))
    }

    #[test]
    fn a_batch_that_reads_its_heads_and_records_midway_is_signed_and_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let replica = Replica::open(&path).unwrap();
        let reg = replica.create_registry("r", schema()).unwrap();
        let before = reg.heads();
        let (changes, id) = (reg.change_count(), "first-record");
        reg.write(|w| {
            w.put(Some(id), [("name", "first")])?;
            // Reading midway must not close the batch.
            assert_eq!(w.heads(), before);
            w.expect_heads(&before)?;
            assert_eq!(w.get(id).unwrap().get("name"), Some(&"first".into()));
            w.put(None, [("name", "second")])
        })
        .unwrap();
        assert_eq!(reg.change_count(), changes + 1, "one signed change");
        drop((reg, replica));
        let reopened = Replica::open(&path).unwrap();
        let reg = reopened.registry("r").unwrap();
        assert_eq!(reg.len(), 2, "both writes were stored");
        reopened.verify(None).expect("the history verifies");
        // A stale expectation writes nothing.
        let stale = reg.write(|w| {
            w.expect_heads(&before)?;
            w.put(None, [("name", "third")])
        });
        assert!(matches!(stale, Err(WriteError::Stale { .. })));
        assert_eq!(reg.len(), 2);
    }

    #[test]
    fn compaction_keeps_every_signature_verifiable_and_reopens_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let replica = Replica::open(&path).unwrap();
        let reg = replica.create_registry("r", schema()).unwrap();
        for i in 0..20 {
            reg.put(None, [("name", format!("n{i}"))]).unwrap();
        }
        let (heads, digest) = (reg.heads(), reg.state_digest());
        reg.compact().unwrap();
        reg.put(None, [("name", "after")]).unwrap();
        drop((reg, replica));

        let reopened = Replica::open(&path).unwrap();
        let reg = reopened.registry("r").unwrap();
        assert_eq!(reg.len(), 21);
        // Every change, compacted or not, still exports with a signature
        // that a fresh replica verifies.
        let bundle = reg.export(&[]).unwrap();
        assert_eq!(bundle.len(), 22);
        let other = Replica::open(dir.path().join("o.db")).unwrap();
        let report = other.import(bundle).unwrap();
        assert_eq!(report.applied, 22);
        let theirs = other.registry("r").unwrap();
        assert_eq!(theirs.heads(), reg.heads());
        assert_ne!(heads, reg.heads());
        assert_ne!(digest, reg.state_digest());
    }

    #[test]
    fn hybrid_clock_never_goes_backwards_across_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let ra = a.create_registry("r", schema()).unwrap();
        ra.set_member(b.public_key(), Role::Writer).unwrap();
        let id = ra.put(Some("x"), [("name", "x")]).unwrap();
        // A's clock runs an hour ahead: B's later write must still carry a
        // later time, so last-write-wins follows causality.
        ra.lock().skew_clock(3_600_000);
        ra.put(Some(&id), [("name", "x2")]).unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        let rb = b.registry("r").unwrap();
        rb.put(Some(&id), [("name", "y")]).unwrap();
        let times: Vec<i64> = {
            let mut state = rb.lock();
            state
                .doc
                .get_changes(&[])
                .iter()
                .map(|c| c.timestamp())
                .collect()
        };
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }

    #[test]
    fn long_text_and_multi_select_merge_instead_of_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let ra = a.create_registry("r", schema()).unwrap();
        ra.set_member(b.public_key(), Role::Writer).unwrap();
        let id = ra
            .put(
                None,
                [
                    ("name", Value::from("x")),
                    ("notes", "hello world".into()),
                    ("tags", ["a"].into()),
                ],
            )
            .unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        let rb = b.registry("r").unwrap();

        ra.put(Some(&id), [("notes", "hello big world")]).unwrap();
        ra.put(Some(&id), [("tags", Value::from(["a", "b"]))])
            .unwrap();
        rb.put(Some(&id), [("notes", "hello world!")]).unwrap();
        rb.put(Some(&id), [("tags", Value::from(["c"]))]).unwrap();
        b.import(ra.export(&rb.heads()).unwrap()).unwrap();
        a.import(rb.export(&ra.heads()).unwrap()).unwrap();

        for reg in [&ra, &rb] {
            let r = reg.get(&id).unwrap();
            assert_eq!(r.get("notes"), Some(&Value::from("hello big world!")));
            // B removed "a" and added "c"; A added "b": all three edits apply.
            assert_eq!(r.get("tags"), Some(&Value::from(["b", "c"])));
            assert!(r.conflicted.is_empty());
        }
    }

    #[test]
    fn identity_is_not_needed_to_read_but_writes_need_a_role() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let reader =
            Replica::open_with_identity(dir.path().join("b.db"), Identity::generate().unwrap())
                .unwrap();
        let ra = a.create_registry("r", schema()).unwrap();
        ra.set_member(reader.public_key(), Role::Reader).unwrap();
        ra.put(None, [("name", "x")]).unwrap();
        reader.import(ra.export(&[]).unwrap()).unwrap();
        let rr = reader.registry("r").unwrap();
        assert_eq!(rr.len(), 1);
        let err = rr.put(None, [("name", "y")]).unwrap_err();
        assert!(matches!(err, WriteError::NotPermitted { .. }), "{err}");
        assert!(err.to_string().contains("must give key"), "{err}");
        let last = ra.remove_member(a.public_key()).unwrap_err();
        assert!(matches!(last, WriteError::LastAdmin { .. }));
    }

    #[test]
    fn a_second_process_sees_writes_on_its_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        // Two handles on one file behave like two processes.
        let first = Replica::open(&path).unwrap();
        let reg1 = first.create_registry("r", schema()).unwrap();
        let second = Replica::open(&path).unwrap();
        let reg2 = second.registry("r").unwrap();
        let id = reg1.put(None, [("name", "x")]).unwrap();
        assert_eq!(reg2.get(&id).unwrap().get("name"), Some(&Value::from("x")));
        reg1.compact().unwrap();
        reg1.put(Some(&id), [("name", "y")]).unwrap();
        assert_eq!(
            reg2.list(&Query::all())[0].get("name"),
            Some(&Value::from("y"))
        );
        assert_eq!(reg2.heads(), reg1.heads());
    }

    #[test]
    fn a_quorum_of_members_attests_a_state_and_attestations_travel() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let ra = a.create_registry("r", schema().quorum(2)).unwrap();
        ra.set_member(b.public_key(), Role::Reader).unwrap();
        ra.put(None, [("name", "x")]).unwrap();
        let (heads, digest) = (ra.heads(), ra.state_digest());

        ra.attest().unwrap();
        // Attesting changes neither the heads nor the digest it attests.
        assert_eq!(
            (ra.heads(), ra.state_digest()),
            (heads.clone(), digest.clone())
        );
        let status = ra.status().unwrap();
        assert_eq!(status.attested_by, vec![a.public_key()]);
        assert_eq!((status.members, status.quorum), (2, Some(2)));
        assert!(!status.attested());

        b.import(ra.export(&[]).unwrap()).unwrap();
        let rb = b.registry("r").unwrap();
        assert_eq!(rb.attestations().unwrap().len(), 1);
        rb.attest().unwrap(); // readers attest too
        a.import(rb.export(&ra.heads()).unwrap()).unwrap();
        let status = ra.status().unwrap();
        assert_eq!(status.attested_by.len(), 2);
        assert!(status.attested());

        // A new state is not attested until members sign it again.
        ra.put(None, [("name", "y")]).unwrap();
        let status = ra.status().unwrap();
        assert!(status.attested_by.is_empty() && !status.attested());
    }

    #[test]
    fn a_forged_attestation_refuses_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let ra = a.create_registry("r", schema()).unwrap();
        ra.attest().unwrap();
        let mut bytes = ra.export(&[]).unwrap().to_bytes();
        // The attestation section ends the bundle; its last bytes are a head.
        let at = bytes.len() - 40;
        bytes[at] ^= 1;
        let bundle = crate::Bundle::from_bytes(&bytes).unwrap();
        let err = b.import(bundle).unwrap_err();
        assert!(
            matches!(err, crate::ImportError::BadSignature { .. }),
            "{err}"
        );
        assert!(b.registries().unwrap().is_empty());
    }

    #[test]
    fn record_ids_are_uuids_the_registry_made_or_names_never_paths_or_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let reg = a.create_registry("r", schema()).unwrap();
        for bad in ["../../etc", "a/b", "not a uuid", "", "_deleted", "it's"] {
            let err = reg.put(Some(bad), [("name", bad)]).unwrap_err();
            assert!(
                matches!(err, WriteError::BadRecordId { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("not a usable record id"), "{err}");
            assert!(matches!(reg.find(bad), Err(WriteError::BadRecordId { .. })));
            assert!(matches!(
                reg.delete(bad),
                Err(WriteError::BadRecordId { .. })
            ));
        }
        // A UUID names only records the registry made: a mistyped one is
        // not found, and creates nothing.
        let made = reg.put(None, [("name", "made")]).unwrap();
        let typo = format!("{}0", &made[..35]);
        assert_ne!(typo, made);
        let err = reg.put(Some(&typo), [("name", "typo")]).unwrap_err();
        assert!(matches!(err, WriteError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("no record"), "{err}");
        assert!(reg.find(&typo).unwrap().is_none());
        // The UUID it made, and chosen names, work as before.
        reg.put(Some(&made), [("name", "made, edited")]).unwrap();
        let named = reg.put(Some("svc-7"), [("name", "named")]).unwrap();
        assert_eq!(named, "svc-7");
        assert!(reg.find("svc-7").unwrap().is_some());
        assert!(reg.find("nothing-here").unwrap().is_none());
        assert_eq!(reg.len(), 2);
    }

    #[test]
    fn a_bad_signature_on_a_known_or_repeated_change_refuses_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let ra = a.create_registry("r", schema()).unwrap();
        ra.put(None, [("name", "x")]).unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        let refusals = || {
            b.journal()
                .unwrap()
                .iter()
                .filter(|e| e.kind == "refused")
                .count()
        };

        // B holds every change; one of them now carries a bad signature.
        let mut known = ra.export(&[]).unwrap().changes().to_vec();
        known[1].signature[0] ^= 1;
        let err = b
            .import(crate::Bundle::new(ra.id(), known, vec![]))
            .unwrap_err();
        assert!(
            matches!(err, crate::ImportError::BadSignature { .. }),
            "{err}"
        );
        assert_eq!(refusals(), 1);

        // A new change listed twice, the copy badly signed: refused too,
        // and nothing of it is applied.
        ra.put(None, [("name", "y")]).unwrap();
        let mut fresh = ra
            .export(&b.registry("r").unwrap().heads())
            .unwrap()
            .changes()
            .to_vec();
        assert_eq!(fresh.len(), 1);
        let mut copy = fresh[0].clone();
        copy.signature[5] ^= 1;
        fresh.push(copy);
        let err = b
            .import(crate::Bundle::new(ra.id(), fresh, vec![]))
            .unwrap_err();
        assert!(
            matches!(err, crate::ImportError::BadSignature { .. }),
            "{err}"
        );
        assert_eq!(b.registry("r").unwrap().len(), 1);
        assert_eq!(refusals(), 2);
    }

    #[test]
    fn under_creator_or_admin_only_the_creator_or_an_admin_changes_a_record() {
        use crate::schema::RecordRule;
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let c_seed = [42u8; 32];
        let c = Replica::open_with_identity(
            dir.path().join("c.db"),
            Identity::from_secret_bytes(c_seed),
        )
        .unwrap();
        let ra = a
            .create_registry("r", schema().record_rule(RecordRule::CreatorOrAdmin))
            .unwrap();
        ra.set_member(b.public_key(), Role::Writer).unwrap();
        ra.set_member(c.public_key(), Role::Writer).unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        let rb = b.registry("r").unwrap();
        let id = rb.put(Some("mine"), [("name", "b's")]).unwrap();
        rb.put(Some(&id), [("name", "b's, edited")]).unwrap();
        a.import(rb.export(&ra.heads()).unwrap()).unwrap();
        c.import(ra.export(&[]).unwrap()).unwrap();
        let rc = c.registry("r").unwrap();

        // Locally: C may not, the admin may.
        let err = rc.put(Some(&id), [("name", "c's")]).unwrap_err();
        assert!(matches!(err, WriteError::NotOwner { .. }), "{err}");
        assert!(rc.delete(&id).is_err());
        ra.put(Some(&id), [("name", "fixed by admin")]).unwrap();

        // A change C made by going around the API is refused on import.
        let forged = forge(&rc, c_seed, |doc, layout| {
            let (_, obj) = automerge::ReadDoc::get(doc, &layout.records, id.as_str())
                .unwrap()
                .unwrap();
            automerge::transaction::Transactable::put(doc, &obj, "name", "c's").unwrap();
        });
        let before = ra.heads();
        let err = a.import(forged).unwrap_err();
        assert!(err.to_string().contains("only by its creator"), "{err}");
        assert_eq!(ra.heads(), before);
        assert!(a.verify(None).is_ok());
    }

    #[test]
    fn a_member_signed_value_that_breaks_the_schema_is_refused_at_import() {
        let dir = tempfile::tempdir().unwrap();
        let w_seed = [9u8; 32];
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let w = Replica::open_with_identity(
            dir.path().join("w.db"),
            Identity::from_secret_bytes(w_seed),
        )
        .unwrap();
        let schema = Schema::new()
            .field(FieldDef::new("name", FieldKind::Text).required())
            .field(FieldDef::new("port", FieldKind::Integer).range(Some(1.0), Some(65535.0)))
            .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["a", "b"]))
            .field(FieldDef::new("notes", FieldKind::LongText).range(None, Some(10.0)))
            .field(FieldDef::new("mail", FieldKind::Email));
        let ra = a.create_registry("r", schema).unwrap();
        ra.set_member(w.public_key(), Role::Writer).unwrap();
        let id = ra.put(None, [("name", "svc")]).unwrap();
        w.import(ra.export(&[]).unwrap()).unwrap();
        let rw = w.registry("r").unwrap();
        let record = |doc: &automerge::AutoCommit, layout: &crate::document::Layout| {
            automerge::ReadDoc::get(doc, &layout.records, id.as_str())
                .unwrap()
                .unwrap()
                .1
        };
        use automerge::transaction::Transactable;
        type Edit = Box<dyn Fn(&mut automerge::AutoCommit, &automerge::ObjId)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("max", Box::new(|d, r| d.put(r, "port", 70_000i64).unwrap())),
            (
                "type integer",
                Box::new(|d, r| d.put(r, "port", "1.5").unwrap()),
            ),
            (
                "type integer",
                Box::new(|d, r| d.put(r, "port", "80").unwrap()),
            ),
            (
                "unknown field",
                Box::new(|d, r| d.put(r, "rogue", "x").unwrap()),
            ),
            (
                "email",
                Box::new(|d, r| d.put(r, "mail", "not an address").unwrap()),
            ),
            (
                "options",
                Box::new(|d, r| {
                    let tags = d.put_object(r, "tags", automerge::ObjType::Map).unwrap();
                    d.put(&tags, "z", true).unwrap();
                }),
            ),
            (
                "max",
                Box::new(|d, r| {
                    let notes = d.put_object(r, "notes", automerge::ObjType::Text).unwrap();
                    d.splice_text(&notes, 0, 0, "far more than ten characters")
                        .unwrap();
                }),
            ),
        ];
        for (rule, edit) in cases {
            let forged = forge(&rw, w_seed, |doc, layout| {
                let r = record(doc, layout);
                edit(doc, &r);
            });
            let before = ra.heads();
            let err = a.import(forged).unwrap_err();
            assert!(
                matches!(err, crate::ImportError::InvalidValue { .. }),
                "{rule}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains(rule) && text.contains(&id), "{rule}: {text}");
            assert_eq!(ra.heads(), before);
            assert_eq!(ra.get(&id).unwrap().get("port"), None);
        }
        // A valid value, forged the same way, is accepted.
        let fine = forge(&rw, w_seed, |doc, layout| {
            let r = record(doc, layout);
            doc.put(&r, "port", 8080i64).unwrap();
        });
        a.import(fine).unwrap();
        assert_eq!(
            ra.get(&id).unwrap().get("port"),
            Some(&Value::Integer(8080))
        );
        assert!(a.verify(None).is_ok());
    }

    #[test]
    fn a_value_valid_as_of_its_dependencies_is_kept_when_the_schema_tightens_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let schema = || {
            Schema::new()
                .field(FieldDef::new("name", FieldKind::Text))
                .field(FieldDef::new("port", FieldKind::Integer).range(None, Some(65535.0)))
        };
        let ra = a.create_registry("r", schema()).unwrap();
        ra.set_member(b.public_key(), Role::Writer).unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        let rb = b.registry("r").unwrap();
        // Concurrently: A lowers the maximum; B writes a value valid before.
        ra.set_schema(
            Schema::new()
                .field(FieldDef::new("name", FieldKind::Text))
                .field(FieldDef::new("port", FieldKind::Integer).range(None, Some(1000.0))),
        )
        .unwrap();
        let id = rb.put(None, [("port", 8080)]).unwrap();
        a.import(rb.export(&ra.heads()).unwrap()).unwrap();
        b.import(ra.export(&rb.heads()).unwrap()).unwrap();
        for (r, reg) in [(&a, &ra), (&b, &rb)] {
            assert_eq!(
                reg.get(&id).unwrap().get("port"),
                Some(&Value::Integer(8080))
            );
            let report = r.verify(None).unwrap();
            assert_eq!(report.registries[0].invalid_records.len(), 1);
            assert_eq!(report.registries[0].invalid_records[0].record, id);
        }
    }

    /// A change made with `seed`'s key on a copy of `reg`'s document,
    /// signed but never checked locally: what a misbehaving peer could send.
    fn forge(
        reg: &Registry,
        seed: [u8; 32],
        f: impl FnOnce(&mut automerge::AutoCommit, &crate::document::Layout),
    ) -> crate::Bundle {
        let identity = Identity::from_secret_bytes(seed);
        let mut state = reg.lock();
        let mut doc = state.doc.fork();
        doc.set_actor(automerge::ActorId::from(
            &identity.public_key().as_bytes()[..],
        ));
        let layout = crate::document::Layout::find(&doc).unwrap();
        f(&mut doc, &layout);
        let hash = doc.commit().unwrap();
        let change = doc.get_change_by_hash(&hash).unwrap();
        let sig = crate::trust::sign_change(&identity, &state.id, &hash);
        crate::Bundle::new(
            state.id,
            vec![crate::SignedChange::new(change, identity.public_key(), sig)],
            vec![],
        )
    }

    fn sync_all(replicas: &[(&Replica, &Registry)]) {
        for _ in 0..2 {
            for (from_r, from) in replicas {
                for (to_r, to) in replicas {
                    if from_r.public_key() != to_r.public_key() {
                        to_r.import(from.export(&to.heads()).unwrap()).unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn a_removed_writers_concurrent_edits_are_revoked_on_every_replica() {
        let dir = tempfile::tempdir().unwrap();
        let w_seed = [7u8; 32];
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let w = Replica::open_with_identity(
            dir.path().join("w.db"),
            Identity::from_secret_bytes(w_seed),
        )
        .unwrap();
        let c = Replica::open(dir.path().join("c.db")).unwrap();
        let ra = a.create_registry("r", schema()).unwrap();
        ra.set_member(w.public_key(), Role::Writer).unwrap();
        ra.set_member(c.public_key(), Role::Writer).unwrap();
        ra.put(
            Some("x1"),
            [("name", Value::from("orig")), ("tags", Value::from(["a"]))],
        )
        .unwrap();
        ra.put(Some("x2"), [("name", "keep me")]).unwrap();
        ra.put(Some("x3"), [("name", "x3"), ("notes", "hello")])
            .unwrap();
        w.import(ra.export(&[]).unwrap()).unwrap();
        c.import(ra.export(&[]).unwrap()).unwrap();
        let (rw, rc) = (w.registry("r").unwrap(), c.registry("r").unwrap());
        let honest = ra.state_digest();

        // Concurrently: A removes W; W, not knowing, writes every kind of
        // change; C makes an honest edit.
        ra.remove_member(w.public_key()).unwrap();
        rw.put(Some("w1"), [("name", "by w")]).unwrap();
        rw.put(Some("x1"), [("name", "w was here")]).unwrap();
        rw.put(Some("x1"), [("tags", Value::from(["a", "b"]))])
            .unwrap();
        rw.put(Some("x3"), [("notes", "hello, world")]).unwrap();
        rw.delete("x2").unwrap();
        rc.put(Some("c1"), [("name", "by c")]).unwrap();
        // C hears of W's edits before the removal, A after: same result.
        c.import(rw.export(&rc.heads()).unwrap()).unwrap();
        assert_eq!(
            rc.get("x1").unwrap().get("name"),
            Some(&Value::from("w was here"))
        );
        sync_all(&[(&a, &ra), (&w, &rw), (&c, &rc)]);
        for reg in [&ra, &rw, &rc] {
            assert_eq!(reg.heads(), ra.heads());
            assert_eq!(reg.state_digest(), ra.state_digest());
            assert!(reg.get("w1").is_none(), "a record W created is revoked");
            let x1 = reg.get("x1").unwrap();
            assert_eq!(x1.get("name"), Some(&Value::from("orig")));
            assert_eq!(x1.get("tags"), Some(&Value::from(["a"])));
            assert_eq!(
                reg.get("x3").unwrap().get("notes"),
                Some(&Value::from("hello"))
            );
            assert!(
                reg.get("x2").unwrap().deleted.is_none(),
                "W's delete is revoked"
            );
            assert_eq!(
                reg.get("c1").unwrap().get("name"),
                Some(&Value::from("by c"))
            );
            assert!(!reg.members().iter().any(|m| m.key == w.public_key()));
            assert!(reg.conflicts().is_empty());
        }
        assert_ne!(ra.state_digest(), honest, "C's honest edit stands");
        // The history keeps W's changes, marked revoked by the removal.
        let audit = ra.audit(&AuditFilter::all()).unwrap();
        let revoked: Vec<_> = audit.iter().filter(|e| e.revoked_by.is_some()).collect();
        assert_eq!(revoked.len(), 5);
        assert!(revoked.iter().all(|e| e.author == w.public_key()));
        for r in [&a, &w, &c] {
            let report = r.verify(None).unwrap();
            assert_eq!(report.registries[0].revoked, 5);
        }
        // Honest writes keep working on top, and the revoked values stay
        // masked after a reopen.
        ra.put(Some("x1"), [("name", "after")]).unwrap();
        drop(ra);
        let ra = a.registry("r").unwrap();
        assert_eq!(
            ra.get("x1").unwrap().get("name"),
            Some(&Value::from("after"))
        );
        assert!(ra.get("w1").is_none());

        // After the removal reached W, W cannot write …
        assert!(matches!(
            rw.put(None, [("name", "late")]),
            Err(WriteError::NotPermitted { .. })
        ));
        // … and a change forged on top of the removal is refused everywhere.
        let forged = forge(&rw, w_seed, |doc, layout| {
            let obj = automerge::transaction::Transactable::put_object(
                doc,
                &layout.records,
                "w2",
                automerge::ObjType::Map,
            )
            .unwrap();
            automerge::transaction::Transactable::put(doc, &obj, "name", "sneaky").unwrap();
        });
        let err = a.import(forged).unwrap_err();
        assert!(err.to_string().contains("not a member"), "{err}");
        assert!(a.verify(None).is_ok() && c.verify(None).is_ok());
    }

    #[test]
    fn members_added_by_a_revoked_admin_lose_their_changes_too() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let k = Replica::open(dir.path().join("k.db")).unwrap();
        let s = Replica::open(dir.path().join("s.db")).unwrap();
        let ra = a.create_registry("r", schema()).unwrap();
        ra.set_member(k.public_key(), Role::Admin).unwrap();
        k.import(ra.export(&[]).unwrap()).unwrap();
        let rk = k.registry("r").unwrap();

        // A demotes K to writer; concurrently K makes S a writer, who writes.
        ra.set_member(k.public_key(), Role::Writer).unwrap();
        rk.set_member(s.public_key(), Role::Writer).unwrap();
        rk.put(Some("k1"), [("name", "k's record")]).unwrap();
        s.import(rk.export(&[]).unwrap()).unwrap();
        let rs = s.registry("r").unwrap();
        rs.put(Some("s1"), [("name", "by s")]).unwrap();
        sync_all(&[(&a, &ra), (&k, &rk), (&s, &rs)]);
        for reg in [&ra, &rk, &rs] {
            assert_eq!(reg.state_digest(), ra.state_digest());
            // K kept the writer role, so K's record write stands …
            assert!(reg.get("k1").is_some());
            // … but not the admin act, nor what it enabled.
            assert!(!reg.members().iter().any(|m| m.key == s.public_key()));
            assert!(reg.get("s1").is_none());
        }
        assert!(matches!(
            rs.put(None, [("name", "more")]),
            Err(WriteError::NotPermitted { .. })
        ));
        assert_eq!(a.verify(None).unwrap().registries[0].revoked, 2);
    }

    #[test]
    fn a_store_without_the_index_of_membership_changes_rebuilds_it_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let a = Replica::open(&path).unwrap();
            let reg = a.create_registry("r", schema()).unwrap();
            reg.set_member(Identity::generate().unwrap().public_key(), Role::Writer)
                .unwrap();
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("DELETE FROM admin_changes", []).unwrap();
        let count = |c: &rusqlite::Connection| -> i64 {
            c.query_row("SELECT count(*) FROM admin_changes", [], |r| r.get(0))
                .unwrap()
        };
        let a = Replica::open(&path).unwrap();
        // As a store made before the index: verify does not trust an absent
        // index, and opening the registry rebuilds it from the history.
        assert!(a.verify(None).is_ok());
        a.registry("r").unwrap();
        assert_eq!(count(&conn), 2);
        assert!(a.verify(None).is_ok());
    }

    #[test]
    fn verify_finds_an_altered_index_of_membership_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let a = Replica::open(&path).unwrap();
        let reg = a.create_registry("r", schema()).unwrap();
        reg.set_member(Identity::generate().unwrap().public_key(), Role::Writer)
            .unwrap();
        assert!(a.verify(None).is_ok());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "DELETE FROM admin_changes WHERE hash = (SELECT max(hash) FROM admin_changes)",
            [],
        )
        .unwrap();
        let err = a.verify(None).unwrap_err();
        assert!(
            matches!(err, crate::VerifyError::AdminIndex { .. }),
            "{err}"
        );
    }

    #[test]
    fn admins_removing_each_other_concurrently_leave_the_creator_as_admin_of_last_resort() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let c = Replica::open(dir.path().join("c.db")).unwrap();
        let ra = a.create_registry("r", schema()).unwrap();
        ra.set_member(b.public_key(), Role::Admin).unwrap();
        ra.set_member(c.public_key(), Role::Writer).unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        c.import(ra.export(&[]).unwrap()).unwrap();
        let (rb, rc) = (b.registry("r").unwrap(), c.registry("r").unwrap());

        // Each is not the last admin locally, so each removal is allowed.
        ra.remove_member(b.public_key()).unwrap();
        rb.remove_member(a.public_key()).unwrap();
        sync_all(&[(&a, &ra), (&b, &rb), (&c, &rc)]);
        for reg in [&ra, &rb, &rc] {
            assert_eq!(reg.state_digest(), ra.state_digest());
            assert!(reg.members().iter().all(|m| m.role != Role::Admin));
        }
        // Nobody is admin by membership; the creator still governs.
        assert!(matches!(
            rb.set_member(c.public_key(), Role::Admin),
            Err(WriteError::NotPermitted { .. })
        ));
        ra.set_member(c.public_key(), Role::Admin).unwrap();
        sync_all(&[(&a, &ra), (&b, &rb), (&c, &rc)]);
        assert!(
            rc.members()
                .iter()
                .any(|m| m.key == c.public_key() && m.role == Role::Admin)
        );
        for r in [&a, &b, &c] {
            // Both removals were made by an admin being removed: revoked
            // (listed in the audit), yet removals always stand.
            assert_eq!(r.verify(None).unwrap().registries[0].revoked, 2);
        }
    }

    #[test]
    fn verify_finds_a_tampered_attestation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let a = Replica::open(&path).unwrap();
        let reg = a.create_registry("r", schema()).unwrap();
        reg.attest().unwrap();
        assert!(a.verify(None).is_ok());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE attestations SET change_count = change_count + 1",
            [],
        )
        .unwrap();
        let err = a.verify(None).unwrap_err();
        assert!(
            matches!(err, crate::VerifyError::Attestation { .. }),
            "{err}"
        );
    }
}
