//! A replica: one SQLite file holding many registries, and the key that
//! signs this replica's changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{ImportError, LookupError, OpenError, WriteError};
use crate::exchange::{Bundle, ImportReport};
use crate::identity::{Identity, PublicKey};
use crate::registry::{DocState, Registry, RegistryId, RegistryInfo};
use crate::schema::{Schema, SchemaError};
use crate::store::{Store, StoreError};
use crate::trust::verify::{self, VerifyError, VerifyReport};

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

/// What every handle of one replica shares.
pub(crate) struct Shared {
    pub(crate) identity: Identity,
    store: Mutex<Store>,
    /// Registries loaded in memory. Lock order: this map, then a registry's
    /// state, then the store — never the other way round.
    open: Mutex<HashMap<RegistryId, Arc<Mutex<DocState>>>>,
    path: PathBuf,
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_map(&self) -> MutexGuard<'_, HashMap<RegistryId, Arc<Mutex<DocState>>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A local, complete, offline-capable copy of registries.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use chittysync::{FieldDef, FieldType, Replica, Schema};
/// let dir = tempfile::tempdir()?;
/// let replica = Replica::open(dir.path().join("replica.db"))?;
/// let schema = Schema::new()
///     .field(FieldDef::new("name", FieldType::Text).required().unique())
///     .field(FieldDef::new("port", FieldType::Integer));
/// let services = replica.create_registry("services", schema)?;
/// let id = services.put(None, [("name", "billing"), ("port", "8080")])?;
/// assert_eq!(services.get(&id).unwrap().get("port"), Some(&8080.into()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Replica {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("path", &self.shared.path)
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
            shared: Arc::new(Shared {
                identity,
                store: Mutex::new(store),
                open: Mutex::new(HashMap::new()),
                path: path.to_path_buf(),
            }),
        })
    }

    /// This replica's public key: what other replicas and registries know it by.
    pub fn public_key(&self) -> PublicKey {
        self.shared.identity.public_key()
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.shared.path
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
            let detail = serde_json::json!({ "name": name, "change": hex::encode(row.hash) });
            tx.journal(Some(&state.id), "created", &detail)?;
            tx.commit()?;
            pos
        };
        state.set_loaded(pos, row.bytes.len());
        let id = state.id;
        let state = Arc::new(Mutex::new(state));
        open.insert(id, state.clone());
        Ok(Registry::new(self.shared.clone(), state, id))
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
            [one] => self.registry_by_id(one.id),
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
            return Ok(Registry::new(self.shared.clone(), state.clone(), id));
        }
        let state = {
            let store = self.shared.store();
            if !store.registries()?.iter().any(|r| r.id == id) {
                return Err(LookupError::NotFound {
                    name: id.to_string(),
                });
            }
            DocState::load(store.conn(), store.path(), id, &self.public_key())?
        };
        let state = Arc::new(Mutex::new(state));
        open.insert(id, state.clone());
        Ok(Registry::new(self.shared.clone(), state, id))
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
                let store = self.shared.store();
                if store.registries()?.iter().any(|r| r.id == id) {
                    let state = DocState::load(store.conn(), store.path(), id, &self.public_key())?;
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
                let report = state.import(&tx, bundle.into_changes())?;
                if report.applied == 0 {
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
                let (state, report) = crate::registry::import_new(
                    &tx,
                    id,
                    &self.public_key(),
                    bundle.into_changes(),
                )?;
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
            Some(name) => vec![self.registry(name)?.id()],
            None => self.registries()?.into_iter().map(|r| r.id).collect(),
        };
        let store = self.shared.store();
        crate::store::quick_check(store.conn(), store.path())?;
        let mut report = VerifyReport::default();
        for id in ids {
            report
                .registries
                .push(verify::verify_registry(store.conn(), store.path(), id)?);
        }
        report.journal_rows = verify::verify_journal(store.conn(), store.path())?;
        Ok(report)
    }

    /// The local journal, oldest first: what this replica created, wrote,
    /// accepted and refused (with the reason), each entry hash-chained to
    /// the one before (checked by [`Replica::verify`]).
    pub fn journal(&self) -> Result<Vec<JournalEntry>, StoreError> {
        let store = self.shared.store();
        Ok(crate::store::journal(store.conn(), store.path())?
            .into_iter()
            .map(|row| JournalEntry {
                seq: row.seq,
                at: row.at,
                registry: row.registry.as_deref().and_then(RegistryId::from_bytes),
                kind: row.kind,
                detail: serde_json::from_str(&row.detail).unwrap_or(serde_json::Value::Null),
                hash: hex::encode(&row.hash),
            })
            .collect())
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
