//! A replica: one SQLite file holding many registries, and the key that
//! signs this replica's changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::error::ProveError;
use crate::error::{ImportError, LookupError, OpenError, WriteError};
use crate::exchange::{Bundle, ImportReport};
use crate::identity::{Identity, PublicKey};
use crate::ids::RegistryId;
use crate::registry::{DocState, Registry, RegistryInfo, Shared};
use crate::schema::{Schema, SchemaError};
use crate::store::{Store, StoreError};
use crate::trust::tlog::{self, Checkpoint, ConsistencyProof, InclusionProof};
use crate::verify::{self, VerifyError, VerifyReport};
use automerge::ChangeHash;

/// One event of the local journal.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalEntry {
    /// 1, 2, 3, … with no gaps.
    pub seq: i64,
    /// When (ms since the epoch).
    pub at: i64,
    /// The registry concerned.
    pub registry: Option<RegistryId>,
    /// `created`, `wrote`, `accepted` or `refused`.
    pub kind: String,
    /// What happened: change hashes, counts, or the reason for a refusal.
    pub detail: serde_json::Value,
    /// This entry's hash (hex), which the next entry links to.
    pub hash: String,
}

impl JournalEntry {
    fn from_row(row: crate::store::JournalRow) -> Self {
        JournalEntry {
            seq: row.seq,
            at: row.at,
            registry: row.registry.as_deref().and_then(RegistryId::from_bytes),
            kind: row.kind,
            detail: serde_json::from_str(&row.detail).unwrap_or(serde_json::Value::Null),
            hash: hex::encode(&row.hash),
        }
    }
}

/// What every clone of a replica shares: what its registry handles share,
/// and the channel that tells subscribers about changes from peers.
struct Inner {
    registries: Arc<Shared>,
    /// Changes received from peers, for subscribers.
    remote_changes: broadcast::Sender<RemoteChanges>,
}

/// `self.shared.store()` and `.identity` read through, inside this module;
/// other modules use the focused methods of [`Replica`].
impl std::ops::Deref for Inner {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.registries
    }
}

/// Changes that arrived from a peer and were applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteChanges {
    /// The registry.
    pub registry: RegistryId,
    /// Its name.
    pub name: String,
    /// The peer they came from.
    pub peer: PublicKey,
    /// How many changes were applied.
    pub applied: usize,
    /// The registry's heads after applying them.
    pub heads: Vec<ChangeHash>,
}

/// A stream of [`RemoteChanges`], from [`Replica::subscribe`].
#[derive(Debug)]
pub struct ChangeSubscription {
    rx: broadcast::Receiver<RemoteChanges>,
}

impl ChangeSubscription {
    /// The next batch of remote changes; `None` once the replica is gone.
    /// A subscriber too slow to keep up skips the batches it missed (the
    /// registry itself has them all).
    pub async fn next(&mut self) -> Option<RemoteChanges> {
        loop {
            match self.rx.recv().await {
                Ok(c) => return Some(c),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next batch if one is waiting, without blocking.
    pub fn try_next(&mut self) -> Option<RemoteChanges> {
        loop {
            match self.rx.try_recv() {
                Ok(c) => return Some(c),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// A local, complete, offline-capable copy of registries.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use chittysync::{FieldDef, FieldKind, Replica, Schema};
/// let dir = tempfile::tempdir()?;
/// let replica = Replica::open(dir.path().join("replica.db"))?;
/// let schema = Schema::new()
///     .field(FieldDef::new("name", FieldKind::Text).required().unique())
///     .field(FieldDef::new("port", FieldKind::Integer));
/// let services = replica.create_registry("services", schema)?;
/// let id = services.put(None, [("name", "billing"), ("port", "8080")])?;
/// assert_eq!(services.get(&id).unwrap().get("port"), Some(&8080.into()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Replica {
    shared: Arc<Inner>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("path", &self.shared.path())
            .field("public_key", &self.public_key())
            .finish()
    }
}

impl Replica {
    /// Where the key file of the replica stored at `db` lives: beside it,
    /// with the extension `.key`.
    pub fn key_path(db: &Path) -> PathBuf {
        db.with_extension("key")
    }

    /// Opens the replica stored at `path`, creating the file, its directory
    /// and its identity key (mode 0600, see [`Replica::key_path`]) if absent.
    pub fn open(path: impl AsRef<Path>) -> Result<Replica, OpenError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| OpenError::Directory {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let identity = Identity::load_or_create(&Replica::key_path(path))?;
        Replica::open_with_identity(path, identity)
    }

    /// Opens the replica at `path` with an identity the caller manages.
    pub fn open_with_identity(
        path: impl AsRef<Path>,
        identity: Identity,
    ) -> Result<Replica, OpenError> {
        let path = path.as_ref();
        let store = Store::open(path)?;
        Ok(Replica {
            shared: Arc::new(Inner {
                registries: Arc::new(Shared::new(identity, store, path)),
                remote_changes: broadcast::channel(1024).0,
            }),
        })
    }

    /// This replica's public key: what other replicas and registries know it by.
    pub fn public_key(&self) -> PublicKey {
        self.shared.identity.public_key()
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        self.shared.path()
    }

    /// Creates a registry with this replica's key as its first admin.
    pub fn create_registry(&self, name: &str, schema: Schema) -> Result<Registry, WriteError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(WriteError::Schema(SchemaError::Invalid(format!(
                "registry name '{name}' must be 1–100 printable characters"
            ))));
        }
        if self.registries()?.iter().any(|r| r.name == name) {
            return Err(WriteError::Schema(SchemaError::Invalid(format!(
                "a registry named '{name}' already exists in this replica; choose another name"
            ))));
        }
        let mut open = self.shared.open_map();
        let (mut state, row) = DocState::create(&self.shared.identity, name, &schema)?;
        let pos = {
            let mut store = self.shared.store();
            let tx = store.begin()?;
            tx.insert_registry(&state.id, name, state.created_at())?;
            let pos = tx.insert_changes(&state.id, std::slice::from_ref(&row))?;
            tx.insert_admin_changes(&state.id, &[automerge::ChangeHash(row.hash)])?;
            let detail = serde_json::json!({ "name": name, "change": hex::encode(row.hash) });
            tx.journal(Some(&state.id), "created", &detail)?;
            tx.commit()?;
            pos
        };
        state.set_loaded(pos, row.bytes.len());
        let id = state.id;
        let state = Arc::new(Mutex::new(state));
        open.insert(id, state.clone());
        Ok(Registry::new(self.shared.registries.clone(), state, id))
    }

    /// The registries in this replica, by name.
    pub fn registries(&self) -> Result<Vec<RegistryInfo>, StoreError> {
        Ok(self
            .shared
            .store()
            .registries()?
            .into_iter()
            .map(|r| RegistryInfo {
                id: r.id,
                name: r.name,
                created_at: r.created_at,
            })
            .collect())
    }

    /// A registry by name or id.
    pub fn registry(&self, name_or_id: &str) -> Result<Registry, LookupError> {
        self.registry_by_id(self.resolve(name_or_id)?)
    }

    /// The id of the registry with this name or id, without loading it.
    fn resolve(&self, name_or_id: &str) -> Result<RegistryId, LookupError> {
        let all = self.registries()?;
        let by_id: Vec<&RegistryInfo> = all
            .iter()
            .filter(|r| r.id.to_string() == name_or_id)
            .collect();
        let matches: Vec<&RegistryInfo> = if by_id.is_empty() {
            all.iter().filter(|r| r.name == name_or_id).collect()
        } else {
            by_id
        };
        match matches.as_slice() {
            [one] => Ok(one.id),
            [] => Err(LookupError::NotFound {
                name: name_or_id.to_owned(),
            }),
            many => Err(LookupError::Ambiguous {
                name: name_or_id.to_owned(),
                ids: many.iter().map(|r| r.id.to_string()).collect(),
            }),
        }
    }

    /// A registry by id.
    pub fn registry_by_id(&self, id: RegistryId) -> Result<Registry, LookupError> {
        let mut open = self.shared.open_map();
        if let Some(state) = open.get(&id) {
            return Ok(Registry::new(
                self.shared.registries.clone(),
                state.clone(),
                id,
            ));
        }
        let state = {
            let mut store = self.shared.store();
            if !store.registries()?.iter().any(|r| r.id == id) {
                return Err(LookupError::NotFound {
                    name: id.to_string(),
                });
            }
            self.load_state(&mut store, id)?
        };
        let state = Arc::new(Mutex::new(state));
        open.insert(id, state.clone());
        Ok(Registry::new(self.shared.registries.clone(), state, id))
    }

    /// Loads a registry's state from the store. A registry whose stored
    /// data does not load is logged and journaled (once for each distinct
    /// damage), and the error names it; other registries are unaffected.
    fn load_state(&self, store: &mut Store, id: RegistryId) -> Result<DocState, StoreError> {
        let loaded = DocState::load(store.conn(), store.path(), id, &self.public_key());
        if let Err(e @ StoreError::Corrupt { .. }) = &loaded {
            tracing::error!(registry = %id, error = %e, "a registry's stored data does not load");
            let detail = serde_json::json!({ "reason": e.to_string() });
            let journaled = crate::store::last_journal_entry(store.conn(), store.path(), &id)
                .and_then(|last| {
                    if last == Some(("damaged".to_owned(), detail.to_string())) {
                        return Ok(());
                    }
                    let tx = store.begin()?;
                    tx.journal(Some(&id), "damaged", &detail)?;
                    tx.commit()
                });
            if let Err(j) = journaled {
                tracing::warn!(error = %j, "could not journal a damaged registry");
            }
        }
        loaded
    }

    /// Verifies and applies a bundle of signed changes. A bundle with any
    /// bad, forged, unauthorised or dangling change is refused whole and
    /// nothing from it becomes visible.
    pub fn import(&self, bundle: Bundle) -> Result<ImportReport, ImportError> {
        let id = bundle.registry();
        let offered = bundle.len();
        let result = self.import_unjournaled(bundle);
        if let Err(e) = &result {
            self.journal_refusal(Some(&id), Some(offered), e);
        }
        result
    }

    /// Journals a refused bundle with the reason. Best effort: the refusal
    /// stands even if it cannot be journaled.
    fn journal_refusal(&self, id: Option<&RegistryId>, offered: Option<usize>, e: &ImportError) {
        if matches!(e, ImportError::Store(_) | ImportError::File { .. }) {
            return;
        }
        tracing::warn!(registry = ?id, error = %e, "bundle refused");
        let detail = serde_json::json!({ "changes": offered, "reason": e.to_string() });
        let mut store = self.shared.store();
        let journaled = store
            .begin()
            .and_then(|tx| tx.journal(id, "refused", &detail).and_then(|_| tx.commit()));
        if let Err(j) = journaled {
            tracing::warn!(error = %j, "could not journal a refusal");
        }
    }

    fn import_unjournaled(&self, bundle: Bundle) -> Result<ImportReport, ImportError> {
        let id = bundle.registry();
        let mut open = self.shared.open_map();
        let existing = match open.get(&id) {
            Some(state) => Some(state.clone()),
            None => {
                let mut store = self.shared.store();
                if store.registries()?.iter().any(|r| r.id == id) {
                    let state = self.load_state(&mut store, id)?;
                    let state = Arc::new(Mutex::new(state));
                    open.insert(id, state.clone());
                    Some(state)
                } else {
                    None
                }
            }
        };
        let accepted = |report: &ImportReport| {
            serde_json::json!({
                "applied": report.applied,
                "already_known": report.already_known,
                "created": report.created,
            })
        };
        match existing {
            Some(state) => {
                drop(open);
                let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                let mut store = self.shared.store();
                let tx = store.begin()?;
                let (changes, attestations) = bundle.into_parts();
                let report = state.import(&tx, changes)?;
                if let Err(e) = state.import_attestations(&tx, &attestations) {
                    if report.applied > 0 {
                        drop(tx);
                        state.reload_from(&store)?;
                    }
                    return Err(e);
                }
                if report.applied == 0 {
                    tx.commit()?;
                    return Ok(report);
                }
                let committed = tx
                    .journal(Some(&id), "accepted", &accepted(&report))
                    .and_then(|_| tx.commit());
                if let Err(e) = committed {
                    // The changes are in memory but not on disk: drop them.
                    state.reload_from(&store)?;
                    return Err(e.into());
                }
                Ok(report)
            }
            None => {
                let mut store = self.shared.store();
                let tx = store.begin()?;
                let (changes, attestations) = bundle.into_parts();
                let (state, report) =
                    crate::registry::import_new(&tx, id, &self.public_key(), changes)?;
                state.import_attestations(&tx, &attestations)?;
                tx.journal(Some(&id), "accepted", &accepted(&report))?;
                tx.commit()?;
                open.insert(id, Arc::new(Mutex::new(state)));
                Ok(report)
            }
        }
    }

    /// Re-checks the replica from scratch: for each registry (or only the
    /// one named) every stored change's hash, every signature (in batch),
    /// actor↔key bindings, the single genesis, every author's role as of
    /// each change, and the schema (reported); then the journal's hash
    /// chain and SQLite's own structure check. Returns the first problem,
    /// naming it.
    pub fn verify(&self, registry: Option<&str>) -> Result<VerifyReport, VerifyError> {
        let ids = match registry {
            // Not loaded: verify reads the stored rows itself, and names
            // the damage of a registry that does not load.
            Some(name) => vec![self.resolve(name)?],
            None => self.registries()?.into_iter().map(|r| r.id).collect(),
        };
        let store = self.shared.store();
        crate::store::quick_check(store.conn(), store.path())?;
        let mut report = VerifyReport::default();
        for id in ids {
            report
                .registries
                .push(verify::verify_registry(store.conn(), store.path(), id)?);
            verify::verify_attestations(store.conn(), store.path(), &id)?;
        }
        report.journal_rows = verify::verify_journal(store.conn(), store.path())?;
        let leaves: Vec<[u8; 32]> = Replica::log_leaves(&store)?
            .into_iter()
            .map(|l| l.2)
            .collect();
        report.checkpoints =
            verify::verify_checkpoints(store.conn(), store.path(), &leaves, &self.public_key())?;
        Ok(report)
    }

    /// The local journal, oldest first: what this replica created, wrote,
    /// accepted and refused (with the reason), each entry hash-chained to
    /// the one before (checked by [`Replica::verify`]).
    pub fn journal(&self) -> Result<Vec<JournalEntry>, StoreError> {
        let store = self.shared.store();
        let rows = crate::store::journal(store.conn(), store.path())?;
        Ok(rows.into_iter().map(JournalEntry::from_row).collect())
    }

    /// The last `limit` journal entries about registry `id`, oldest first
    /// (one indexed query, however long the journal).
    pub fn journal_of(
        &self,
        id: RegistryId,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let store = self.shared.store();
        let rows = crate::store::journal_of(store.conn(), store.path(), &id, limit)?;
        Ok(rows.into_iter().map(JournalEntry::from_row).collect())
    }

    /// Whether the store can be written now: takes the write lock and lets
    /// it go, writing nothing. For readiness probes.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.with_store(|store| store.begin().map(drop))
    }

    /// How many entries the journal holds (what [`Replica::journal`] would
    /// return, without reading them).
    pub fn journal_len(&self) -> Result<u64, StoreError> {
        let store = self.shared.store();
        crate::store::journal_len(store.conn(), store.path())
    }

    /// The leaf hashes of this replica's log (every accepted change, in
    /// acceptance order), with the (registry, change) of each.
    fn log_leaves(store: &Store) -> Result<Vec<(RegistryId, ChangeHash, [u8; 32])>, StoreError> {
        Ok(crate::store::log(store.conn(), store.path())?
            .into_iter()
            .filter_map(|(reg, hash)| {
                let reg = RegistryId::from_bytes(&reg)?;
                let hash = ChangeHash(hash.try_into().ok()?);
                Some((reg, hash, tlog::change_leaf_hash(&reg, &hash)))
            })
            .collect())
    }

    /// Signs a checkpoint of this replica's log as it is now (a C2SP
    /// signed note), stores it and returns the note.
    pub fn checkpoint(&self) -> Result<String, ProveError> {
        let mut store = self.shared.store();
        let leaves: Vec<[u8; 32]> = Replica::log_leaves(&store)?
            .into_iter()
            .map(|l| l.2)
            .collect();
        let root = tlog::tree_root(&leaves);
        let checkpoint = Checkpoint::new(&self.public_key(), leaves.len() as u64, root);
        let note = checkpoint.sign(&self.shared.identity)?;
        let tx = store.begin()?;
        tx.insert_checkpoint(leaves.len() as u64, &root, &note)?;
        let detail = serde_json::json!({ "size": leaves.len(), "root": hex::encode(root) });
        tx.journal(None, "checkpoint", &detail)?;
        tx.commit()?;
        Ok(note)
    }

    /// The checkpoints this replica signed, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<String>, StoreError> {
        let store = self.shared.store();
        Ok(crate::store::checkpoints(store.conn(), store.path())?
            .into_iter()
            .map(|(_, _, note)| note)
            .collect())
    }

    /// Proof that `change` is in this replica's log under the checkpoint
    /// of tree size `size` (default: the latest checkpoint).
    pub fn prove_inclusion(
        &self,
        change: ChangeHash,
        size: Option<u64>,
    ) -> Result<InclusionProof, ProveError> {
        let store = self.shared.store();
        let log = Replica::log_leaves(&store)?;
        let size = match size {
            Some(s) => s,
            None => crate::store::checkpoints(store.conn(), store.path())?
                .last()
                .map(|c| c.0 as u64)
                .ok_or(ProveError::BadSize {
                    size: 0,
                    log: log.len() as u64,
                })?,
        };
        if size > log.len() as u64 {
            return Err(ProveError::BadSize {
                size,
                log: log.len() as u64,
            });
        }
        let log = &log[..size as usize];
        let index =
            log.iter()
                .position(|l| l.1 == change)
                .ok_or_else(|| ProveError::UnknownChange {
                    change: change.to_string(),
                })?;
        let leaves: Vec<[u8; 32]> = log.iter().map(|l| l.2).collect();
        Ok(InclusionProof::new(
            &leaves,
            index as u64,
            log[index].0,
            change,
        )?)
    }

    /// Proof that this replica's log at size `new_size` extends its log at
    /// size `old_size` (nothing rewritten or dropped in between).
    pub fn prove_consistency(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, ProveError> {
        let store = self.shared.store();
        let log = Replica::log_leaves(&store)?;
        if new_size > log.len() as u64 || old_size > new_size {
            return Err(ProveError::BadSize {
                size: new_size.max(old_size),
                log: log.len() as u64,
            });
        }
        let leaves: Vec<[u8; 32]> = log[..new_size as usize].iter().map(|l| l.2).collect();
        Ok(ConsistencyProof::new(&leaves, old_size)?)
    }

    /// A stream of the changes this replica receives from peers, as they
    /// are applied.
    pub fn subscribe(&self) -> ChangeSubscription {
        ChangeSubscription {
            rx: self.shared.remote_changes.subscribe(),
        }
    }

    /// Tells subscribers about changes received from a peer (none listening
    /// is fine).
    pub(crate) fn announce_remote_changes(&self, changes: RemoteChanges) {
        let _ = self.shared.remote_changes.send(changes);
    }

    /// This replica's key, to sign what it sends.
    pub(crate) fn identity(&self) -> &Identity {
        &self.shared.identity
    }

    /// Runs `f` with the store locked, for work that is one query or one
    /// transaction (keep `f` short: every handle of the replica waits).
    pub(crate) fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.shared.store())
    }

    /// Reads a bundle file and imports it; see [`Replica::import`].
    pub fn import_file(&self, path: impl AsRef<Path>) -> Result<ImportReport, ImportError> {
        match Bundle::read_file(path.as_ref()) {
            Ok(bundle) => self.import(bundle),
            Err(e) => {
                self.journal_refusal(None, None, &e);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{FieldDef, FieldKind};

    fn replica_with_writes(dir: &Path, n: usize) -> (Replica, Registry) {
        let replica = Replica::open(dir.join("r.db")).unwrap();
        let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
        let reg = replica.create_registry("r", schema).unwrap();
        for i in 0..n {
            reg.put(None, [("name", format!("n{i}"))]).unwrap();
        }
        (replica, reg)
    }

    #[test]
    fn checkpoints_and_proofs_verify_with_only_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let (replica, reg) = replica_with_writes(dir.path(), 6);
        let first_change = reg.export(&[]).unwrap().changes()[2].hash();
        let c1 = replica.checkpoint().unwrap();
        let key = replica.public_key();

        let proof = replica.prove_inclusion(first_change, None).unwrap();
        let proof = InclusionProof::from_json(&proof.to_json()).unwrap();
        assert_eq!(proof.change(), first_change);
        assert_eq!(proof.verify_signed(&c1, &key).unwrap().size(), 7);

        for i in 0..5 {
            reg.put(None, [("name", format!("m{i}"))]).unwrap();
        }
        let c2 = replica.checkpoint().unwrap();
        let consistency = replica.prove_consistency(7, 12).unwrap();
        consistency.verify_signed(&c1, &c2, &key).unwrap();
        // Old changes are still proven under the newer checkpoint.
        replica
            .prove_inclusion(first_change, Some(12))
            .unwrap()
            .verify_signed(&c2, &key)
            .unwrap();
        // Another key cannot vouch for this log.
        let other = Identity::generate().unwrap().public_key();
        assert!(proof.verify_signed(&c1, &other).is_err());
        assert_eq!(replica.verify(None).unwrap().checkpoints, 2);
    }

    #[test]
    fn a_rewritten_log_order_is_caught_by_the_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let (replica, _reg) = replica_with_writes(dir.path(), 4);
        replica.checkpoint().unwrap();
        drop(replica);
        // Swap the positions of two accepted changes: the history is the
        // same set, but the log this replica showed is not.
        let conn = rusqlite::Connection::open(dir.path().join("r.db")).unwrap();
        conn.execute_batch(
            "UPDATE changes SET pos = 1000 WHERE pos = 2;
             UPDATE changes SET pos = 2 WHERE pos = 3;
             UPDATE changes SET pos = 3 WHERE pos = 1000;",
        )
        .unwrap();
        drop(conn);
        let err = Replica::open(dir.path().join("r.db"))
            .unwrap()
            .verify(None)
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::Checkpoint { size: 5, .. }),
            "{err}"
        );
    }
}

#[cfg(test)]
mod damaged_store_tests {
    use super::*;
    use crate::schema::{FieldDef, FieldKind};

    /// Every one-byte change to a stored change is found when the registry
    /// loads: an error naming the registry, journaled once, never a panic
    /// nor a wrong answer; the replica's other registries work on.
    #[test]
    fn any_altered_byte_of_a_stored_change_is_reported_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let (bytes, pos) = {
            let replica = Replica::open(&path).unwrap();
            let schema = || Schema::new().field(FieldDef::new("name", FieldKind::Text));
            let damaged = replica.create_registry("damaged", schema()).unwrap();
            let fine = replica.create_registry("fine", schema()).unwrap();
            for i in 0..3 {
                damaged.put(None, [("name", format!("d{i}"))]).unwrap();
            }
            fine.put(Some("f1"), [("name", "still here")]).unwrap();
            replica
                .with_store(|store| {
                    store.conn().query_row(
                        "SELECT bytes, pos FROM changes WHERE registry_id = ?1 ORDER BY pos DESC LIMIT 1",
                        [damaged.id().as_bytes()],
                        |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
                    )
                })
                .unwrap()
        };
        let conn = rusqlite::Connection::open(&path).unwrap();
        for at in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[at] ^= 0x04;
            conn.execute(
                "UPDATE changes SET bytes = ?1 WHERE pos = ?2",
                rusqlite::params![altered, pos],
            )
            .unwrap();
            let replica = Replica::open(&path).unwrap();
            let err = match replica.registry("damaged") {
                Ok(reg) => panic!(
                    "byte {at} altered, yet it loaded with {} records",
                    reg.len()
                ),
                Err(e) => e,
            };
            assert!(
                matches!(err, LookupError::Store(StoreError::Corrupt { .. })),
                "byte {at}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains("registry 'damaged'"), "{text}");
            assert!(text.contains(&format!("position {pos}")), "{text}");
            let fine = replica.registry("fine").unwrap();
            assert_eq!(
                fine.get("f1").unwrap().get("name"),
                Some(&crate::value::Value::from("still here"))
            );
            assert!(replica.verify(Some("damaged")).is_err(), "byte {at}");
            assert!(replica.verify(Some("fine")).is_ok(), "byte {at}");
        }
        // Each distinct damage is journaled once, however often it is met.
        let replica = Replica::open(&path).unwrap();
        let before = replica.journal().unwrap().len();
        assert!(replica.registry("damaged").is_err());
        assert!(replica.registry("damaged").is_err());
        let journal = replica.journal().unwrap();
        assert_eq!(journal.len(), before);
        let last = journal.last().unwrap();
        assert_eq!(last.kind, "damaged");
        assert!(last.detail["reason"].as_str().unwrap().contains("damaged"));
        // Restoring the bytes restores the registry.
        conn.execute(
            "UPDATE changes SET bytes = ?1 WHERE pos = ?2",
            rusqlite::params![bytes, pos],
        )
        .unwrap();
        let replica = Replica::open(&path).unwrap();
        assert_eq!(replica.registry("damaged").unwrap().len(), 3);
        assert!(replica.verify(None).is_ok());
    }

    /// A damaged row met by a handle that already holds the registry (a
    /// second process wrote it) is reported, and the last good state served.
    #[test]
    fn a_damaged_change_stored_by_another_process_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let first = Replica::open(&path).unwrap();
        let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
        let reg = first.create_registry("r", schema).unwrap();
        reg.put(Some("a"), [("name", "one")]).unwrap();
        let second = Replica::open(&path).unwrap();
        let theirs = second.registry("r").unwrap();
        theirs.put(Some("a"), [("name", "two")]).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let (mut bytes, pos): (Vec<u8>, i64) = conn
            .query_row(
                "SELECT bytes, pos FROM changes ORDER BY pos DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let at = bytes.len() - 3;
        bytes[at] ^= 0x01;
        conn.execute(
            "UPDATE changes SET bytes = ?1 WHERE pos = ?2",
            rusqlite::params![bytes, pos],
        )
        .unwrap();
        // Not applied: the state before the damaged change is what shows.
        assert_eq!(
            reg.get("a").unwrap().get("name"),
            Some(&crate::value::Value::from("one"))
        );
        assert!(first.verify(None).is_err());
    }
}
