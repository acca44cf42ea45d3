//! The in-memory state of one open registry and every operation on it:
//! loading and refreshing it here; [`write`], [`read`], [`import`] and
//! [`policy`] for the rest.

mod import;
mod policy;
mod read;
mod write;

pub(crate) use import::import_new;
pub(crate) use write::NewId;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, Change, ChangeHash};

use crate::clock::now_ms;
use crate::document::Layout;
use crate::document::policy::Guard;
use crate::document::revoke::{self, Revocations};
use crate::error::WriteError;
use crate::identity::{Identity, PublicKey};
use crate::ids::RegistryId;
use crate::schema::{CompiledSchema, Schema};
use crate::store::{CatchUp, ChangeRow, Store, StoreError, StoreTx, TailRow};

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

/// Decodes stored changes, each checked against its recorded hash (and its
/// own checksum) first: a damaged row must be reported, never applied.
fn decode_stored(rows: &[TailRow]) -> Result<Vec<Change>, String> {
    rows.iter()
        .map(|row| {
            let at = row.pos;
            let change = Change::from_bytes(row.bytes.clone())
                .map_err(|e| format!("the change stored at position {at} does not decode ({e})"))?;
            // Automerge checks neither the checksum (the hash's first bytes,
            // after the magic; the hash does not cover it) nor the hash.
            let checksum_ok = row.bytes.get(4..8) == Some(&change.hash().0[..4]);
            if change.hash().0 != row.hash || !checksum_ok {
                return Err(format!(
                    "the change stored at position {at} does not match its recorded hash {}",
                    hex::encode(row.hash)
                ));
            }
            Ok(change)
        })
        .collect()
}

/// The error for a registry whose stored data does not load, naming it.
fn damaged(conn: &rusqlite::Connection, path: &str, id: &RegistryId, what: String) -> StoreError {
    let who = match crate::store::registry_name(conn, id) {
        Some(name) => format!("registry '{name}' ({id})"),
        None => format!("registry {id}"),
    };
    StoreError::corrupt(path, format!("{who} does not load: {what}"))
}

/// Applies checked stored changes. Automerge may panic on changes that
/// hash right yet are inconsistent (written by a faulty build): that is
/// reported as damage too, never passed on as a panic.
fn apply_stored(doc: &mut AutoCommit, changes: Vec<Change>) -> Result<(), String> {
    let applied =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.apply_changes(changes)));
    match applied {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("stored changes do not apply: {e}")),
        Err(_) => Err("stored changes do not apply: the document rejected them".into()),
    }
}

/// Loads a stored snapshot; like [`apply_stored`], a panic in Automerge on
/// damaged bytes is reported as damage.
fn load_snapshot(data: &[u8]) -> Result<AutoCommit, String> {
    match std::panic::catch_unwind(|| AutoCommit::load(data)) {
        Ok(Ok(doc)) => Ok(doc),
        Ok(Err(e)) => Err(format!("its snapshot does not load ({e})")),
        Err(_) => Err("its snapshot does not load".into()),
    }
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
        let corrupt = |what: String| damaged(conn, store_path, &id, what);
        let mut doc = match &stored.snapshot {
            Some(data) => load_snapshot(data).map_err(corrupt)?,
            None => AutoCommit::new(),
        };
        let tail = decode_stored(&stored.tail).map_err(corrupt)?;
        apply_stored(&mut doc, tail).map_err(corrupt)?;
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
                tail_bytes: stored.tail.iter().map(|r| r.bytes.len() as i64).sum(),
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
                let changes =
                    decode_stored(&rows).map_err(|what| damaged(conn, path, &self.id, what))?;
                self.clock = self
                    .clock
                    .max(changes.iter().map(Change::timestamp).max().unwrap_or(0));
                if let Err(what) = apply_stored(&mut self.doc, changes) {
                    // The document may be half-applied: never answer from
                    // it; the next use loads the registry again.
                    self.reload(conn, path)?;
                    return Err(damaged(conn, path, &self.id, what));
                }
                self.loaded_pos = rows.last().map_or(self.loaded_pos, |r| r.pos);
                let bytes = rows.iter().map(|r| r.bytes.len() as i64).sum();
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
