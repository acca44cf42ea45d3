//! Listing a registry's history: which changes a filter keeps, their
//! stored rows and signatures, and the entries built from them.

use std::collections::{HashMap, HashSet};

use automerge::{AutoCommit, ChangeHash};
use ed25519_dalek::Signature;

use super::Meta;
use super::effects::effects;
use super::touched::Ops;
use super::{AuditEntry, SignatureStatus};
use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::registry::{DocState, Registry};
use crate::store::{self, Store, StoreError};
use crate::trust::signing_message;

/// From this many signatures on, they are checked as one batch.
const BATCH_FROM: usize = 4;

/// Which changes [`Registry::audit`](crate::Registry::audit) lists.
///
/// ```
/// # use chittysync::AuditFilter;
/// let q = AuditFilter::all().record("svc").since(1_700_000_000_000);
/// assert_eq!(q.record.as_deref(), Some("svc"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditFilter {
    /// Only changes that touched this record, and only their effects on it.
    pub record: Option<String>,
    /// Only changes signed by this key.
    pub author: Option<PublicKey>,
    /// Only changes at or after this time (ms since the epoch).
    pub since: Option<i64>,
    /// Only changes before this time (ms since the epoch, exclusive).
    pub until: Option<i64>,
}

impl AuditFilter {
    /// Every change.
    pub fn all() -> Self {
        AuditFilter::default()
    }

    /// Only changes that touched record `id`, with only their effects on it.
    pub fn record(mut self, id: impl Into<String>) -> Self {
        self.record = Some(id.into());
        self
    }

    /// Only changes signed by `key`.
    pub fn author(mut self, key: PublicKey) -> Self {
        self.author = Some(key);
        self
    }

    /// Only changes at or after `ms` (since the epoch).
    pub fn since(mut self, ms: i64) -> Self {
        self.since = Some(ms);
        self
    }

    /// Only changes before `ms` (since the epoch).
    pub fn until(mut self, ms: i64) -> Self {
        self.until = Some(ms);
        self
    }

    fn wants(&self, author: &PublicKey, time: i64) -> bool {
        self.author.is_none_or(|a| a == *author)
            && self.since.is_none_or(|s| time >= s)
            && self.until.is_none_or(|u| time < u)
    }
}

/// A change's row in the store.
struct Row {
    pos: i64,
    hash: Vec<u8>,
    author: Vec<u8>,
    signature: Option<Vec<u8>>,
}

fn rows(store: &Store, id: &RegistryId) -> Result<Vec<Row>, StoreError> {
    let read = store::sql(store.path(), "read the change log");
    let mut stmt = store
        .conn()
        .prepare_cached(
            "SELECT pos, hash, author_key, signature FROM changes
             WHERE registry_id = ?1 ORDER BY pos",
        )
        .map_err(&read)?;
    stmt.query_map([id.as_bytes()], |r| {
        Ok(Row {
            pos: r.get(0)?,
            hash: r.get(1)?,
            author: r.get(2)?,
            signature: r.get(3)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(&read)
}

/// An entry being built: its change and what is needed to check it.
struct Pending {
    entry: AuditEntry,
    meta: Meta,
    /// The stored signature, when one is stored and well formed.
    signature: Option<[u8; 64]>,
}

impl Registry {
    /// The audit log: every change of the history matching `query`, in
    /// this replica's acceptance order, with its author, signature status
    /// and what it did to records, fields, members and the schema.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use chittysync::{AuditFilter, AuditEffect, FieldDef, FieldKind, Replica, Schema};
    /// let dir = tempfile::tempdir()?;
    /// let replica = Replica::open(dir.path().join("r.db"))?;
    /// let schema = Schema::new().field(FieldDef::new("port", FieldKind::Integer));
    /// let services = replica.create_registry("services", schema)?;
    /// services.put(Some("svc"), [("port", 80)])?;
    /// services.put(Some("svc"), [("port", 81)])?;
    ///
    /// let log = services.audit(&AuditFilter::all().record("svc"))?;
    /// assert_eq!(log.len(), 2);
    /// assert!(log.iter().all(|e| e.signature.is_valid()));
    /// assert_eq!(log[1].effects[0].to_string(), "svc.port 80 → 81");
    /// # Ok(()) }
    /// ```
    pub fn audit(&self, query: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.with_current_state(|state, store| audit(state, store, query))
    }
}

/// The audit log of the registry in `state`, from the signatures in `store`.
pub(crate) fn audit(
    state: &mut DocState,
    store: &Store,
    query: &AuditFilter,
) -> Result<Vec<AuditEntry>, StoreError> {
    let id = state.id;
    let layout = state.layout().clone();
    let schema = state.schema.clone();
    let aliases = layout.aliases(&state.doc);
    let revocations = state.revocations();
    let doc = &mut state.doc;
    let mut metas: HashMap<ChangeHash, Meta> = doc
        .get_changes_meta(&[])
        .into_iter()
        .map(|m| {
            let meta = Meta {
                hash: m.hash,
                actor: m.actor.to_bytes().to_vec(),
                deps: m.deps,
                time: m.timestamp,
                message: m.message.map(|s| s.into_owned()),
            };
            (meta.hash, meta)
        })
        .collect();

    let mut pending = Vec::new();
    let mut keep = |entry: AuditEntry, meta: Meta, signature: Option<[u8; 64]>| {
        if query.wants(&entry.author, entry.time) {
            pending.push(Pending {
                entry,
                meta,
                signature,
            });
        }
    };
    for row in rows(store, &id)? {
        // A row whose change is not in the document was stored by another
        // process after this state was brought up to date.
        let Some(meta) = ChangeHash::try_from(row.hash.as_slice())
            .ok()
            .and_then(|h| metas.remove(&h))
        else {
            continue;
        };
        let signer = PublicKey::from_bytes(&row.author).ok();
        let (signature, status) = match row.signature.as_deref() {
            None | Some([]) => (None, SignatureStatus::Missing),
            Some(bytes) => match (<[u8; 64]>::try_from(bytes), signer) {
                // Someone else's key on this actor's change is a forgery.
                (Ok(sig), Some(key)) if key.as_bytes()[..] == meta.actor[..] => {
                    (Some(sig), SignatureStatus::Valid)
                }
                _ => (None, SignatureStatus::Invalid),
            },
        };
        let Some(author) = signer.or_else(|| PublicKey::from_bytes(&meta.actor).ok()) else {
            return Err(corrupt(
                store,
                &id,
                &meta.hash,
                "neither its author nor its actor is a key",
            ));
        };
        let entry = entry(row.pos, &meta, author, &aliases, status);
        keep(entry, meta, signature);
    }
    // Changes of the history with no stored row: list them, unsigned.
    let mut unsigned: Vec<Meta> = metas.into_values().collect();
    unsigned.sort_by_key(|m| (m.time, m.hash));
    for meta in unsigned {
        let Ok(author) = PublicKey::from_bytes(&meta.actor) else {
            return Err(corrupt(store, &id, &meta.hash, "its actor is not a key"));
        };
        let entry = entry(0, &meta, author, &aliases, SignatureStatus::Missing);
        keep(entry, meta, None);
    }

    check_signatures(&id, &mut pending);
    let wanted: HashSet<ChangeHash> = pending.iter().map(|p| p.entry.change).collect();
    let mut ops = Ops::read(doc, &wanted);
    let doc: &AutoCommit = doc;
    let mut entries = Vec::with_capacity(pending.len());
    for Pending {
        mut entry, meta, ..
    } in pending
    {
        let record = query.record.as_deref();
        let touched = ops.touched(&meta, record);
        entry.effects = effects(doc, &layout, &schema, &meta, touched, record);
        entry.revoked_by = revocations.revoked_by(&entry.change);
        if query.record.is_none() || !entry.effects.is_empty() {
            entries.push(entry);
        }
    }
    entries.sort_by_key(|e| e.position);
    Ok(entries)
}

fn entry(
    position: i64,
    meta: &Meta,
    author: PublicKey,
    aliases: &HashMap<String, String>,
    signature: SignatureStatus,
) -> AuditEntry {
    AuditEntry {
        position,
        change: meta.hash,
        time: meta.time,
        alias: aliases.get(&author.to_string()).cloned(),
        author,
        signature,
        message: meta.message.clone(),
        effects: Vec::new(),
        revoked_by: None,
    }
}

fn corrupt(store: &Store, id: &RegistryId, change: &ChangeHash, what: &str) -> StoreError {
    StoreError::corrupt(
        store.path(),
        format!("registry {id}: change {change}: {what}"),
    )
}

/// Verifies the signatures of entries still marked valid: all in one batch,
/// and one by one only if the batch fails, to find which.
fn check_signatures(id: &RegistryId, pending: &mut [Pending]) {
    let candidates: Vec<usize> = (0..pending.len())
        .filter(|&i| pending[i].entry.signature == SignatureStatus::Valid)
        .collect();
    if candidates.is_empty() {
        return;
    }
    let messages: Vec<Vec<u8>> = candidates
        .iter()
        .map(|&i| signing_message(id, &pending[i].entry.change))
        .collect();
    let signatures: Vec<Signature> = candidates
        .iter()
        .map(|&i| Signature::from_bytes(&pending[i].signature.expect("checked as well formed")))
        .collect();
    let mut decoded = HashMap::new();
    let keys: Vec<_> = candidates
        .iter()
        .map(|&i| {
            let author = pending[i].entry.author;
            *decoded
                .entry(author)
                .or_insert_with(|| author.verifying_key())
        })
        .collect();
    if candidates.len() >= BATCH_FROM {
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        if ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_ok() {
            return;
        }
    }
    for (n, &i) in candidates.iter().enumerate() {
        if keys[n].verify_strict(&messages[n], &signatures[n]).is_err() {
            pending[i].entry.signature = SignatureStatus::Invalid;
        }
    }
}
