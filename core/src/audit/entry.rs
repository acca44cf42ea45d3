//! The audit log's entries and effects: their JSON form, their text for
//! people, and JSON Lines export.

use std::fmt;
use std::io::{self, Write};

use automerge::ChangeHash;

use crate::document::Role;
use crate::identity::PublicKey;
use crate::value::Value;

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
