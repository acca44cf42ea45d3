//! The audit log: a registry's signed change history told in registry
//! terms — who created, changed or deleted which record, field, member or
//! schema entry, from what to what, and whether the change's signature
//! still verifies.
//!
//! Every change of the history is listed, including those folded into a
//! compacted snapshot (the document keeps them; the store keeps their
//! signatures). What a change did is read from the document itself: the
//! state at the change's dependencies against the state just after it, so
//! concurrent changes never blur each other's effects.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::{self, Write};

use automerge::{AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, legacy};
use ed25519_dalek::Signature;

use crate::document::{self as doc, DELETED, Layout, Role};
use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::registry::{DocState, Registry};
use crate::schema::{CompiledSchema, FieldKind};
use crate::store::{self, Store, StoreError};
use crate::trust::signing_message;
use crate::value::Value;

/// From this many signatures on, they are checked as one batch.
const BATCH_FROM: usize = 4;

/// Whether a change's stored signature verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureStatus {
    /// The stored signature is the author's over this change in this
    /// registry, and the change's actor is the author's key.
    Valid,
    /// A signature is stored but does not verify (or its author is not the
    /// change's actor): the store was altered.
    Invalid,
    /// No signature is stored for the change: its row was deleted or emptied.
    Missing,
}

impl SignatureStatus {
    /// `valid`, `invalid` or `missing`.
    pub fn name(self) -> &'static str {
        match self {
            SignatureStatus::Valid => "valid",
            SignatureStatus::Invalid => "invalid",
            SignatureStatus::Missing => "missing",
        }
    }

    /// Whether the signature verifies.
    pub fn is_valid(self) -> bool {
        self == SignatureStatus::Valid
    }
}

impl fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing a change did, in registry terms.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AuditEffect {
    /// The registry was created (its genesis change).
    RegistryCreated {
        /// The registry's name.
        name: String,
    },
    /// A record was created. Its first values follow as [`AuditEffect::FieldSet`]
    /// with `old: None`.
    RecordCreated {
        /// The record's id.
        record: String,
    },
    /// A record was deleted (it left a tombstone).
    RecordDeleted {
        /// The record's id.
        record: String,
    },
    /// A field of a record changed value.
    ///
    /// Values are whole, as the record reads before and after the change:
    /// long text as its full text, multi-select as its set of options.
    /// Writes that leave the value as it was are not listed.
    FieldSet {
        /// The record's id.
        record: String,
        /// The field.
        field: String,
        /// The value before (`None`: it had none).
        old: Option<Value>,
        /// The value after (`None`: cleared).
        new: Option<Value>,
    },
    /// The schema changed: a field definition (`field`) or a registry-wide
    /// setting such as the conflict policy (`field: None`).
    SchemaChanged {
        /// The field whose definition changed, if it is one.
        field: Option<String>,
        /// What changed, for people: `added (integer, min 1)`, `removed`,
        /// `required: false → true`, `conflict policy automerge → manual`.
        detail: String,
    },
    /// A member was added, removed, or given another role.
    MemberChanged {
        /// The member's key.
        key: PublicKey,
        /// The role before (`None`: not a member).
        old: Option<Role>,
        /// The role after (`None`: removed).
        new: Option<Role>,
    },
    /// A member's human name (alias) was set, changed or cleared.
    AliasChanged {
        /// The member's key.
        key: PublicKey,
        /// The alias before.
        old: Option<String>,
        /// The alias after (`None`: cleared).
        new: Option<String>,
    },
    /// A change outside the registry layout (made by a newer version, or
    /// not through ChittySync).
    Other {
        /// Where in the document, as dot-separated keys.
        path: String,
        /// What happened there.
        detail: String,
    },
}

impl AuditEffect {
    /// The record the effect is about, if it is about one.
    pub fn record(&self) -> Option<&str> {
        match self {
            AuditEffect::RecordCreated { record }
            | AuditEffect::RecordDeleted { record }
            | AuditEffect::FieldSet { record, .. } => Some(record),
            _ => None,
        }
    }

    /// The effect as a JSON object with a `kind` (`registry_created`,
    /// `record_created`, `record_deleted`, `field_set`, `schema_changed`,
    /// `member_changed`, `alias_changed`, `other`) and its details.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let value = |v: &Option<Value>| v.as_ref().map_or(serde_json::Value::Null, Value::to_json);
        let role = |r: &Option<Role>| r.map(Role::name);
        match self {
            AuditEffect::RegistryCreated { name } => {
                json!({ "kind": "registry_created", "name": name })
            }
            AuditEffect::RecordCreated { record } => {
                json!({ "kind": "record_created", "record": record })
            }
            AuditEffect::RecordDeleted { record } => {
                json!({ "kind": "record_deleted", "record": record })
            }
            AuditEffect::FieldSet {
                record,
                field,
                old,
                new,
            } => json!({
                "kind": "field_set", "record": record, "field": field,
                "old": value(old), "new": value(new),
            }),
            AuditEffect::SchemaChanged { field, detail } => {
                json!({ "kind": "schema_changed", "field": field, "detail": detail })
            }
            AuditEffect::MemberChanged { key, old, new } => json!({
                "kind": "member_changed", "key": key.to_string(),
                "old": role(old), "new": role(new),
            }),
            AuditEffect::AliasChanged { key, old, new } => json!({
                "kind": "alias_changed", "key": key.to_string(), "old": old, "new": new,
            }),
            AuditEffect::Other { path, detail } => {
                json!({ "kind": "other", "path": path, "detail": detail })
            }
        }
    }
}

/// One line for people: `svc.port 80 → 81`, `created svc`, `deleted svc`,
/// `member 1a2b3c4d (none) → writer`. Values are shown as JSON, so text is
/// quoted and sets are lists.
impl fmt::Display for AuditEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn or_none<T: fmt::Display>(v: Option<T>) -> String {
            v.map_or_else(|| "(none)".to_owned(), |v| v.to_string())
        }
        let value = |v: &Option<Value>| or_none(v.as_ref().map(Value::to_json));
        match self {
            AuditEffect::RegistryCreated { name } => write!(f, "created registry '{name}'"),
            AuditEffect::RecordCreated { record } => write!(f, "created {record}"),
            AuditEffect::RecordDeleted { record } => write!(f, "deleted {record}"),
            AuditEffect::FieldSet {
                record,
                field,
                old,
                new,
            } => write!(f, "{record}.{field} {} → {}", value(old), value(new)),
            AuditEffect::SchemaChanged {
                field: Some(field),
                detail,
            } => write!(f, "schema: field {field} {detail}"),
            AuditEffect::SchemaChanged {
                field: None,
                detail,
            } => write!(f, "schema: {detail}"),
            AuditEffect::MemberChanged { key, old, new } => {
                write!(
                    f,
                    "member {} {} → {}",
                    key.short(),
                    or_none(*old),
                    or_none(*new)
                )
            }
            AuditEffect::AliasChanged { key, old, new } => write!(
                f,
                "alias of {} {} → {}",
                key.short(),
                or_none(old.as_ref().map(|a| serde_json::Value::from(a.as_str()))),
                or_none(new.as_ref().map(|a| serde_json::Value::from(a.as_str())))
            ),
            AuditEffect::Other { path, detail } => write!(f, "{path}: {detail}"),
        }
    }
}

/// One change of a registry's history.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Where the change is in this replica's log: the order in which this
    /// replica accepted changes (1, 2, 3, …; other replicas' orders
    /// differ). `0` for a change of the history with no stored row, whose
    /// signature is then [`SignatureStatus::Missing`].
    pub position: i64,
    /// The change's hash.
    pub change: ChangeHash,
    /// The change's hybrid-logical-clock time (ms since the epoch).
    pub time: i64,
    /// The key that signed the change.
    pub author: PublicKey,
    /// The author's human name in the registry now, if an admin gave one.
    pub alias: Option<String>,
    /// Whether the stored signature verifies.
    pub signature: SignatureStatus,
    /// The change's message (`write`, `change members`, …).
    pub message: Option<String>,
    /// What the change did. Empty for a change that wrote values as they
    /// already were.
    pub effects: Vec<AuditEffect>,
    /// The removal that revoked this change, if its author was removed
    /// concurrently with it (strong removal): the change stays in the
    /// history, but its effects are masked from the registry.
    pub revoked_by: Option<ChangeHash>,
}

impl AuditEntry {
    /// The entry as one JSON object: `position`, `change`, `time` (ms),
    /// `at` (RFC 3339, UTC), `author`, `alias`, `signature`, `message`,
    /// `effects` (see [`AuditEffect::to_json`]) and `revoked_by` (a change hash
    /// or null).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "position": self.position,
            "change": self.change.to_string(),
            "time": self.time,
            "at": rfc3339(self.time),
            "author": self.author.to_string(),
            "alias": self.alias,
            "signature": self.signature.name(),
            "message": self.message,
            "effects": self.effects.iter().map(AuditEffect::to_json).collect::<Vec<_>>(),
            "revoked_by": self.revoked_by.map(|h| h.to_string()),
        })
    }
}

/// Writes entries as JSON Lines: one [`AuditEntry::to_json`] object a line.
pub fn export_jsonl<W: Write>(entries: &[AuditEntry], mut out: W) -> io::Result<()> {
    for entry in entries {
        serde_json::to_writer(&mut out, &entry.to_json())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn rfc3339(ms: i64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

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

/// A change of the history, from the document.
struct Meta {
    hash: ChangeHash,
    actor: Vec<u8>,
    deps: Vec<ChangeHash>,
    time: i64,
    message: Option<String>,
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

/// Where in the registry a change touched the document.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Touch {
    SchemaSetting(String),
    FieldDef(String),
    Member(String),
    Alias(String),
    Record(String, Part),
    Other(String),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Existence,
    Field(String),
    Tombstone,
}

/// What a change did: the before and after values (at the change's
/// dependencies, and just after it) of everything it touched.
fn effects(
    doc: &AutoCommit,
    layout: &Layout,
    schema: &CompiledSchema,
    meta: &Meta,
    touched: BTreeSet<Touch>,
    record: Option<&str>,
) -> Vec<AuditEffect> {
    let before = meta.deps.as_slice();
    let after = [meta.hash];
    let genesis = before.is_empty();
    let mut out = Vec::new();
    if genesis && record.is_none() {
        out.push(AuditEffect::RegistryCreated {
            name: str_at(doc, &layout.meta, "name", &after).unwrap_or_default(),
        });
    }
    for touch in touched {
        let effect = match touch {
            Touch::Record(id, part) => record_effect(doc, layout, schema, id, part, before, &after),
            Touch::FieldDef(name) => {
                let old = was(genesis, || str_at(doc, &layout.fields, &name, before));
                let new = str_at(doc, &layout.fields, &name, &after);
                field_def_detail(old.as_deref(), new.as_deref()).map(|detail| {
                    AuditEffect::SchemaChanged {
                        field: Some(name),
                        detail,
                    }
                })
            }
            Touch::SchemaSetting(key) => {
                let old = was(genesis, || setting_at(doc, &layout.schema, &key, before));
                let new = setting_at(doc, &layout.schema, &key, &after);
                let label = key.replace('_', " ");
                let detail = match (old, new) {
                    (old, new) if old == new => None,
                    (None, Some(new)) => Some(format!("{label} set to {new}")),
                    (Some(_), None) => Some(format!("{label} cleared")),
                    (Some(old), Some(new)) => Some(format!("{label} {old} → {new}")),
                    (None, None) => None,
                };
                detail.map(|detail| AuditEffect::SchemaChanged {
                    field: None,
                    detail,
                })
            }
            Touch::Member(key) => match key.parse::<PublicKey>() {
                Ok(k) => {
                    let old = was(genesis, || layout.role_at(doc, &k, before));
                    let new = layout.role_at(doc, &k, &after);
                    (old != new).then_some(AuditEffect::MemberChanged { key: k, old, new })
                }
                Err(_) => Some(other(format!("members.{key}"))),
            },
            Touch::Alias(key) => match (key.parse::<PublicKey>(), &layout.aliases) {
                (Ok(k), Some(aliases)) => {
                    let old = was(genesis, || str_at(doc, aliases, &key, before));
                    let new = str_at(doc, aliases, &key, &after);
                    (old != new).then_some(AuditEffect::AliasChanged { key: k, old, new })
                }
                _ => Some(other(format!("aliases.{key}"))),
            },
            Touch::Other(path) => Some(other(path)),
        };
        out.extend(effect);
    }
    out
}

/// A value before the change. Before the genesis there is nothing (and
/// Automerge's reads at empty heads return present values, so never ask).
fn was<T>(genesis: bool, read: impl FnOnce() -> Option<T>) -> Option<T> {
    if genesis { None } else { read() }
}

fn other(path: String) -> AuditEffect {
    AuditEffect::Other {
        path,
        detail: "changed outside the registry layout".into(),
    }
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
struct Ops {
    made: HashMap<legacy::OpId, OpTarget>,
    targets: HashMap<ChangeHash, Vec<OpTarget>>,
    places: HashMap<legacy::OpId, Place>,
}

impl Ops {
    fn read(doc: &mut AutoCommit, wanted: &HashSet<ChangeHash>) -> Ops {
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
    fn touched(&mut self, meta: &Meta, record: Option<&str>) -> BTreeSet<Touch> {
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

fn record_effect(
    doc: &AutoCommit,
    layout: &Layout,
    schema: &CompiledSchema,
    id: String,
    part: Part,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Option<AuditEffect> {
    let copies_before = if before.is_empty() {
        Vec::new()
    } else {
        layout.copies(doc, &id, Some(before))
    };
    let copies_after = layout.copies(doc, &id, Some(after));
    match part {
        Part::Existence => match (copies_before.is_empty(), copies_after.is_empty()) {
            (true, false) => Some(AuditEffect::RecordCreated { record: id }),
            (false, true) => Some(AuditEffect::Other {
                path: format!("records.{id}"),
                detail: "record removed without a tombstone".into(),
            }),
            _ => None,
        },
        Part::Tombstone => {
            let dead = |copies: &[ObjId], heads: &[ChangeHash]| {
                copies
                    .iter()
                    .any(|c| matches!(doc.get_at(c, DELETED, heads), Ok(Some(_))))
            };
            match (dead(&copies_before, before), dead(&copies_after, after)) {
                (false, true) => Some(AuditEffect::RecordDeleted { record: id }),
                (true, false) => Some(AuditEffect::Other {
                    path: format!("records.{id}.{DELETED}"),
                    detail: "tombstone removed".into(),
                }),
                _ => None,
            }
        }
        Part::Field(field) => {
            let ty = schema.schema.get(&field).map(|d| d.field_type);
            let old = field_at(doc, &copies_before, &field, ty, before);
            let new = field_at(doc, &copies_after, &field, ty, after);
            (old != new).then_some(AuditEffect::FieldSet {
                record: id,
                field,
                old,
                new,
            })
        }
    }
}

/// A field's value at `heads`: Automerge's pick in the first copy that has
/// one. Emptied long text and multi-select read as no value.
fn field_at(
    doc: &AutoCommit,
    copies: &[ObjId],
    field: &str,
    ty: Option<FieldKind>,
    heads: &[ChangeHash],
) -> Option<Value> {
    copies.iter().find_map(|copy| {
        let (value, id) = doc.get_at(copy, field, heads).ok()??;
        let value = match value {
            automerge::Value::Object(ObjType::Text) => Value::Text(doc.text_at(&id, heads).ok()?),
            automerge::Value::Object(ObjType::Map) => Value::Set(
                doc.map_range_at(&id, .., heads)
                    .filter(|i| {
                        matches!(
                            i.value,
                            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Boolean(true))
                        )
                    })
                    .map(|i| i.key.into_owned())
                    .collect(),
            ),
            scalar => doc::read_value(doc, &scalar, &id, ty)?,
        };
        let empty = matches!(&value, Value::Set(s) if s.is_empty())
            || (ty == Some(FieldKind::LongText) && value == Value::Text(String::new()));
        (!empty).then_some(value)
    })
}

fn str_at(doc: &AutoCommit, obj: &ObjId, key: &str, heads: &[ChangeHash]) -> Option<String> {
    match doc.get_at(obj, key, heads).ok()?? {
        (automerge::Value::Scalar(s), _) => s.as_str().map(str::to_owned),
        _ => None,
    }
}

/// A schema setting (conflict policy, display field, quorum, …) as text.
fn setting_at(doc: &AutoCommit, obj: &ObjId, key: &str, heads: &[ChangeHash]) -> Option<String> {
    use automerge::ScalarValue as S;
    match doc.get_at(obj, key, heads).ok()?? {
        (automerge::Value::Scalar(s), _) => match s.as_ref() {
            S::Str(t) => Some(t.to_string()),
            S::Int(i) => Some(i.to_string()),
            S::Uint(u) => Some(u.to_string()),
            S::Boolean(b) => Some(b.to_string()),
            S::F64(f) => Some(f.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// A field definition's change, for people; `None` if it did not change.
fn field_def_detail(old: Option<&str>, new: Option<&str>) -> Option<String> {
    type Def = serde_json::Map<String, serde_json::Value>;
    if old == new {
        return None;
    }
    let parse = |s: Option<&str>| s.map(|s| serde_json::from_str::<Def>(s).ok());
    Some(match (parse(old), parse(new)) {
        (None, Some(Some(new))) => format!("added ({})", summary(&new)),
        (Some(_), None) => "removed".into(),
        (Some(Some(old)), Some(Some(new))) => {
            let keys: BTreeSet<&String> = old
                .keys()
                .chain(new.keys())
                .filter(|k| *k != "name")
                .collect();
            let changes: Vec<String> = keys
                .into_iter()
                .filter(|k| old.get(*k) != new.get(*k))
                .map(|k| {
                    format!(
                        "{}: {} → {}",
                        k.replace('_', " "),
                        shown(old.get(k)),
                        shown(new.get(k))
                    )
                })
                .collect();
            if changes.is_empty() {
                return None;
            }
            changes.join("; ")
        }
        // A definition this version cannot read (from a newer one).
        _ => "changed".into(),
    })
}

/// `integer, required, min 1, max 65535`.
fn summary(def: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut parts = vec![shown(def.get("type"))];
    for (k, v) in def {
        if matches!(k.as_str(), "name" | "position" | "type") {
            continue;
        }
        match v {
            serde_json::Value::Bool(true) => parts.push(k.replace('_', " ")),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            v => parts.push(format!("{} {}", k.replace('_', " "), shown(Some(v)))),
        }
    }
    parts.join(", ")
}

fn shown(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "(none)".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| shown(Some(i)))
            .collect::<Vec<_>>()
            .join("|"),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{FieldDef, Schema};
    use crate::{Registry, Replica};

    fn schema() -> Schema {
        Schema::new()
            .field(FieldDef::new("name", FieldKind::Text).required())
            .field(FieldDef::new("port", FieldKind::Integer))
            .field(FieldDef::new("notes", FieldKind::LongText))
            .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["a", "b", "c"]))
    }

    struct Setup {
        dir: tempfile::TempDir,
        a: Replica,
        b: Replica,
        ra: Registry,
        rb: Registry,
    }

    /// Alice creates `services`, makes Bob a writer named "bob" and creates
    /// `svc`; Bob edits `svc` and creates `web`; Alice deletes `web`,
    /// clears `svc.port`, adds a field and makes Bob a reader.
    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let ra = a.create_registry("services", schema()).unwrap();
        ra.set_member(b.public_key(), Role::Writer).unwrap();
        ra.set_alias(b.public_key(), Some("bob")).unwrap();
        ra.put(
            Some("svc"),
            [
                ("name", Value::from("svc")),
                ("port", 80.into()),
                ("notes", "hello".into()),
                ("tags", ["a"].into()),
            ],
        )
        .unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        let rb = b.registry("services").unwrap();
        rb.put(Some("svc"), [("port", 81)]).unwrap();
        rb.put(Some("svc"), [("notes", "hello world")]).unwrap();
        rb.put(Some("svc"), [("tags", Value::from(["a", "b"]))])
            .unwrap();
        rb.put(Some("web"), [("name", "web")]).unwrap();
        a.import(rb.export(&ra.heads()).unwrap()).unwrap();
        ra.delete("web").unwrap();
        ra.unset("svc", ["port"]).unwrap();
        ra.set_schema(schema().field(FieldDef::new("owner", FieldKind::Text)))
            .unwrap();
        ra.set_member(b.public_key(), Role::Reader).unwrap();
        Setup { dir, a, b, ra, rb }
    }

    fn field_set(record: &str, field: &str, old: Option<Value>, new: Option<Value>) -> AuditEffect {
        AuditEffect::FieldSet {
            record: record.into(),
            field: field.into(),
            old,
            new,
        }
    }

    fn sql(s: &Setup, statement: &str, hash: &ChangeHash) {
        let conn = rusqlite::Connection::open(s.dir.path().join("a.db")).unwrap();
        let n = conn.execute(statement, [&hash.0[..]]).unwrap();
        assert_eq!(n, 1, "{statement}");
    }

    #[test]
    fn every_change_is_listed_with_author_alias_signature_and_effects() {
        let s = setup();
        let (alice, bob) = (s.a.public_key(), s.b.public_key());
        let log = s.ra.audit(&AuditFilter::all()).unwrap();
        assert_eq!(log.len(), s.ra.change_count());
        assert!(log.windows(2).all(|w| w[0].position < w[1].position));
        assert!(log.iter().all(|e| e.signature == SignatureStatus::Valid));
        for e in &log {
            let alias = (e.author == bob).then(|| "bob".to_owned());
            assert_eq!(e.alias, alias, "{e:?}");
        }
        let by: Vec<PublicKey> = log.iter().map(|e| e.author).collect();
        let (a, b) = (alice, bob);
        assert_eq!(by, [a, a, a, a, b, b, b, b, a, a, a, a]);

        let genesis = &log[0].effects;
        assert_eq!(
            genesis[0],
            AuditEffect::RegistryCreated {
                name: "services".into()
            }
        );
        assert!(genesis.contains(&AuditEffect::SchemaChanged {
            field: Some("port".into()),
            detail: "added (integer)".into()
        }));
        assert!(genesis.contains(&AuditEffect::MemberChanged {
            key: alice,
            old: None,
            new: Some(Role::Admin)
        }));

        let effects: Vec<&[AuditEffect]> = log.iter().map(|e| e.effects.as_slice()).collect();
        let text = |t: &str| Some(Value::from(t));
        assert_eq!(
            effects[1..],
            [
                &[AuditEffect::MemberChanged {
                    key: bob,
                    old: None,
                    new: Some(Role::Writer)
                }][..],
                &[AuditEffect::AliasChanged {
                    key: bob,
                    old: None,
                    new: Some("bob".into())
                }],
                &[
                    AuditEffect::RecordCreated {
                        record: "svc".into()
                    },
                    field_set("svc", "name", None, text("svc")),
                    field_set("svc", "notes", None, text("hello")),
                    field_set("svc", "port", None, Some(80.into())),
                    field_set("svc", "tags", None, Some(["a"].into())),
                ],
                &[field_set("svc", "port", Some(80.into()), Some(81.into()))],
                &[field_set(
                    "svc",
                    "notes",
                    text("hello"),
                    text("hello world")
                )],
                &[field_set(
                    "svc",
                    "tags",
                    Some(["a"].into()),
                    Some(["a", "b"].into())
                )],
                &[
                    AuditEffect::RecordCreated {
                        record: "web".into()
                    },
                    field_set("web", "name", None, text("web")),
                ],
                &[AuditEffect::RecordDeleted {
                    record: "web".into()
                }],
                &[field_set("svc", "port", Some(81.into()), None)],
                &[AuditEffect::SchemaChanged {
                    field: Some("owner".into()),
                    detail: "added (text)".into()
                }],
                &[AuditEffect::MemberChanged {
                    key: bob,
                    old: Some(Role::Writer),
                    new: Some(Role::Reader)
                }],
            ]
        );
        assert_eq!(log[4].effects[0].to_string(), "svc.port 80 → 81");
        assert_eq!(log[3].effects[0].to_string(), "created svc");
        assert_eq!(log[8].effects[0].to_string(), "deleted web");
        assert_eq!(log[9].effects[0].to_string(), "svc.port 81 → (none)");
        assert_eq!(log[4].message.as_deref(), Some("write"));
    }

    #[test]
    fn filters_by_record_author_and_time() {
        let s = setup();
        let bob = s.b.public_key();
        let all = s.ra.audit(&AuditFilter::all()).unwrap();

        let web = s.ra.audit(&AuditFilter::all().record("web")).unwrap();
        let kinds: Vec<String> = web.iter().map(|e| e.effects[0].to_string()).collect();
        assert_eq!(kinds, ["created web", "deleted web"]);
        assert!(
            web.iter()
                .flat_map(|e| &e.effects)
                .all(|f| f.record() == Some("web"))
        );

        let bobs = s.ra.audit(&AuditFilter::all().author(bob)).unwrap();
        assert_eq!(bobs.len(), 4);
        assert!(bobs.iter().all(|e| e.author == bob));
        let bobs_svc =
            s.ra.audit(&AuditFilter::all().author(bob).record("svc"))
                .unwrap();
        assert_eq!(bobs_svc.len(), 3);

        // Hybrid-logical-clock times grow along this causal chain.
        assert!(all.windows(2).all(|w| w[0].time < w[1].time));
        let t = all[5].time;
        let since = s.ra.audit(&AuditFilter::all().since(t)).unwrap();
        let until = s.ra.audit(&AuditFilter::all().until(t)).unwrap();
        assert_eq!(since, all[5..]);
        assert_eq!(until, all[..5]);
        let one =
            s.ra.audit(&AuditFilter::all().since(t).until(t + 1))
                .unwrap();
        assert_eq!(one, all[5..6]);
    }

    #[test]
    fn compaction_reopening_and_the_other_replica_tell_the_same_history() {
        let s = setup();
        let before = s.ra.audit(&AuditFilter::all()).unwrap();
        s.ra.compact().unwrap();
        assert_eq!(s.ra.audit(&AuditFilter::all()).unwrap(), before);
        let path = s.a.path().to_owned();
        let reopened = Replica::open(&path).unwrap();
        let again = reopened.registry("services").unwrap();
        assert_eq!(again.audit(&AuditFilter::all()).unwrap(), before);

        // Bob's replica accepted the changes in another order, so its
        // positions differ, but each change did the same there.
        s.b.import(s.ra.export(&s.rb.heads()).unwrap()).unwrap();
        let theirs = s.rb.audit(&AuditFilter::all()).unwrap();
        let key = |e: &AuditEntry| (e.change, e.author, e.alias.clone(), e.effects.clone());
        let mut ours: Vec<_> = before.iter().map(key).collect();
        let mut bobs: Vec<_> = theirs.iter().map(key).collect();
        ours.sort_by_key(|k| k.0);
        bobs.sort_by_key(|k| k.0);
        assert_eq!(ours, bobs);
        assert!(theirs.windows(2).all(|w| w[0].position < w[1].position));
    }

    #[test]
    fn altered_or_removed_signatures_are_flagged_per_change() {
        let s = setup();
        let log = s.ra.audit(&AuditFilter::all()).unwrap();
        // Bob's port write gets the signature of his next change.
        let stolen = s.ra.export(&[]).unwrap();
        let next = stolen
            .changes()
            .iter()
            .find(|c| c.hash() == log[5].change)
            .unwrap()
            .signature()
            .to_vec();
        let conn = rusqlite::Connection::open(s.dir.path().join("a.db")).unwrap();
        conn.execute(
            "UPDATE changes SET signature = ?1 WHERE hash = ?2",
            rusqlite::params![next, &log[4].change.0[..]],
        )
        .unwrap();
        // Alice's delete claims Bob as its author.
        conn.execute(
            "UPDATE changes SET author_key = ?1 WHERE hash = ?2",
            rusqlite::params![&s.b.public_key().as_bytes()[..], &log[8].change.0[..]],
        )
        .unwrap();
        sql(
            &s,
            "UPDATE changes SET signature = x'' WHERE hash = ?1",
            &log[9].change,
        );
        sql(&s, "DELETE FROM changes WHERE hash = ?1", &log[10].change);

        let now = s.ra.audit(&AuditFilter::all()).unwrap();
        assert_eq!(now.len(), log.len());
        let status = |h: &ChangeHash| now.iter().find(|e| e.change == *h).unwrap().signature;
        use SignatureStatus::*;
        let statuses: Vec<SignatureStatus> = log.iter().map(|e| status(&e.change)).collect();
        assert_eq!(
            statuses,
            [
                Valid, Valid, Valid, Valid, Invalid, Valid, Valid, Valid, Invalid, Missing,
                Missing, Valid
            ]
        );
        // The change with no row comes first, at position 0, still saying what it did.
        assert_eq!(now[0].position, 0);
        assert_eq!(now[0].change, log[10].change);
        assert_eq!(now[0].effects, log[10].effects);
        // What each change did does not depend on its signature.
        let effects = |e: &AuditEntry| e.effects.clone();
        assert_eq!(
            now.iter().find(|e| e.change == log[4].change).map(effects),
            Some(log[4].effects.clone())
        );
    }

    #[test]
    fn concurrent_writes_each_show_their_own_before_and_after() {
        let s = setup();
        s.b.import(s.ra.export(&s.rb.heads()).unwrap()).unwrap();
        // Bob is a reader now; Alice makes him a writer again first.
        s.ra.set_member(s.b.public_key(), Role::Writer).unwrap();
        s.b.import(s.ra.export(&s.rb.heads()).unwrap()).unwrap();
        s.ra.put(Some("svc"), [("port", 90)]).unwrap();
        s.rb.put(Some("svc"), [("port", 91)]).unwrap();
        s.a.import(s.rb.export(&s.ra.heads()).unwrap()).unwrap();
        s.ra.put(Some("svc"), [("port", 92)]).unwrap();

        let svc = s.ra.audit(&AuditFilter::all().record("svc")).unwrap();
        let last: Vec<&AuditEffect> = svc[svc.len() - 3..].iter().map(|e| &e.effects[0]).collect();
        assert_eq!(last[0], &field_set("svc", "port", None, Some(90.into())));
        assert_eq!(last[1], &field_set("svc", "port", None, Some(91.into())));
        let AuditEffect::FieldSet { old, new, .. } = last[2] else {
            panic!("{last:?}")
        };
        assert!(matches!(old, Some(Value::Integer(90 | 91))), "{old:?}");
        assert_eq!(new, &Some(Value::Integer(92)));
    }

    #[test]
    fn entries_export_as_json_lines() {
        let s = setup();
        let log = s.ra.audit(&AuditFilter::all().record("svc")).unwrap();
        let mut out = Vec::new();
        export_jsonl(&log, &mut out).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), log.len());
        let port = &lines[1];
        assert_eq!(port["position"], log[1].position);
        assert_eq!(port["author"], s.b.public_key().to_string());
        assert_eq!(port["alias"], "bob");
        assert_eq!(port["signature"], "valid");
        assert_eq!(
            port["effects"],
            serde_json::json!([{ "kind": "field_set", "record": "svc", "field": "port", "old": 80, "new": 81 }])
        );
        assert!(port["at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[2]["effects"][0]["new"], "hello world");
        assert_eq!(lines[3]["effects"][0]["new"], serde_json::json!(["a", "b"]));
    }
}
