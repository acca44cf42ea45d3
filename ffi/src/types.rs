//! Plain records and enums that cross the boundary, with their conversions.

use std::collections::HashMap;

use chittysync as core;

use crate::ChittyError;

/// A field's value.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum FieldValue {
    /// Text, and every type stored as text (date, datetime, select, url,
    /// email, reference, long text).
    Text {
        /// The text.
        value: String,
    },
    /// A signed 64-bit integer.
    Integer {
        /// The number.
        value: i64,
    },
    /// An exact decimal number in canonical text form, e.g. `"19.99"`
    /// (exponent form such as `"1.5e3"` is accepted and expanded).
    Decimal {
        /// The number as text.
        value: String,
    },
    /// True or false.
    Bool {
        /// The truth value.
        value: bool,
    },
    /// The chosen options of a multi-select field.
    Set {
        /// The options, sorted.
        values: Vec<String>,
    },
    /// A JSON document as compact text.
    Json {
        /// The JSON text.
        value: String,
    },
}

impl From<core::Value> for FieldValue {
    fn from(v: core::Value) -> Self {
        match v {
            core::Value::Text(value) => FieldValue::Text { value },
            core::Value::Integer(value) => FieldValue::Integer { value },
            core::Value::Decimal(value) => FieldValue::Decimal { value },
            core::Value::Bool(value) => FieldValue::Bool { value },
            core::Value::Set(values) => FieldValue::Set {
                values: values.into_iter().collect(),
            },
            core::Value::Json(value) => FieldValue::Json { value },
            other => FieldValue::Text {
                value: other.to_string(),
            },
        }
    }
}

impl From<FieldValue> for core::Value {
    fn from(v: FieldValue) -> Self {
        match v {
            FieldValue::Text { value } => core::Value::Text(value),
            FieldValue::Integer { value } => core::Value::Integer(value),
            FieldValue::Decimal { value } => {
                core::Value::Decimal(crate::wire::plain_decimal(&value).unwrap_or(value))
            }
            FieldValue::Bool { value } => core::Value::Bool(value),
            FieldValue::Set { values } => core::Value::Set(values.into_iter().collect()),
            FieldValue::Json { value } => core::Value::Json(value),
        }
    }
}

/// A field's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FieldKind {
    /// A short string, replaced whole on each write.
    Text,
    /// A long string that merges character by character.
    LongText,
    /// A signed 64-bit integer.
    Integer,
    /// An exact decimal number.
    Decimal,
    /// True or false.
    Bool,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant, RFC 3339.
    Datetime,
    /// One of the field's options.
    Select,
    /// Any subset of the field's options.
    MultiSelect,
    /// An absolute URL.
    Url,
    /// An email address.
    Email,
    /// The id of another record.
    Reference,
    /// Any JSON document.
    Json,
}

impl From<FieldKind> for core::FieldKind {
    fn from(k: FieldKind) -> Self {
        use core::FieldKind as T;
        match k {
            FieldKind::Text => T::Text,
            FieldKind::LongText => T::LongText,
            FieldKind::Integer => T::Integer,
            FieldKind::Decimal => T::Decimal,
            FieldKind::Bool => T::Bool,
            FieldKind::Date => T::Date,
            FieldKind::Datetime => T::Datetime,
            FieldKind::Select => T::Select,
            FieldKind::MultiSelect => T::MultiSelect,
            FieldKind::Url => T::Url,
            FieldKind::Email => T::Email,
            FieldKind::Reference => T::Reference,
            FieldKind::Json => T::Json,
        }
    }
}

/// One field of a registry's schema.
#[derive(Clone, Debug, uniffi::Record)]
pub struct FieldSpec {
    /// The field's name.
    pub name: String,
    /// Its type.
    pub kind: FieldKind,
    /// Whether every record must have a value.
    #[uniffi(default = false)]
    pub required: bool,
    /// Whether no two live records may share a value.
    #[uniffi(default = false)]
    pub unique: bool,
    /// The allowed options (select and multi-select).
    #[uniffi(default = [])]
    pub options: Vec<String>,
    /// A regular expression text values must match.
    #[uniffi(default = None)]
    pub pattern: Option<String>,
    /// The smallest allowed number.
    #[uniffi(default = None)]
    pub min: Option<f64>,
    /// The largest allowed number.
    #[uniffi(default = None)]
    pub max: Option<f64>,
    /// What the field is for.
    #[uniffi(default = None)]
    pub description: Option<String>,
}

impl From<FieldSpec> for core::FieldDef {
    fn from(s: FieldSpec) -> Self {
        let mut def = core::FieldDef::new(s.name, s.kind.into());
        if s.required {
            def = def.required();
        }
        if s.unique {
            def = def.unique();
        }
        if !s.options.is_empty() {
            def = def.options(s.options);
        }
        if let Some(p) = s.pattern {
            def = def.pattern(p);
        }
        if s.min.is_some() || s.max.is_some() {
            def = def.range(s.min, s.max);
        }
        if let Some(d) = s.description {
            def = def.description(d);
        }
        def
    }
}

/// A record: its id and field values.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Record {
    /// The record's stable id.
    pub id: String,
    /// Field values by field name.
    pub fields: HashMap<String, FieldValue>,
    /// Whether the record is deleted (a tombstone).
    pub deleted: bool,
    /// Fields with concurrent values (see `conflicts`).
    pub conflicted: Vec<String>,
}

impl From<core::Record> for Record {
    fn from(r: core::Record) -> Self {
        Record {
            id: r.id,
            fields: r.fields.into_iter().map(|(k, v)| (k, v.into())).collect(),
            deleted: r.deleted.is_some(),
            conflicted: r.conflicted.into_iter().collect(),
        }
    }
}

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Role {
    /// Reads only.
    Reader,
    /// Reads and writes records.
    Writer,
    /// Also changes the schema and the members.
    Admin,
}

impl From<Role> for core::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Reader => core::Role::Reader,
            Role::Writer => core::Role::Writer,
            Role::Admin => core::Role::Admin,
        }
    }
}

impl From<core::Role> for Role {
    fn from(r: core::Role) -> Self {
        match r {
            core::Role::Writer => Role::Writer,
            core::Role::Admin => Role::Admin,
            _ => Role::Reader,
        }
    }
}

/// A member of a registry.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Member {
    /// The member's public key (64 hex digits).
    pub key: String,
    /// Their role.
    pub role: Role,
    /// A human name an admin gave them.
    pub alias: Option<String>,
}

/// One of several concurrent values of a field.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Candidate {
    /// The value.
    pub value: FieldValue,
    /// The member who wrote it (public key, hex).
    pub author: Option<String>,
    /// The hybrid logical clock of the write (ms since the epoch).
    pub time: i64,
    /// The change that wrote it (hex).
    pub change: String,
}

/// A field with concurrent values.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Conflict {
    /// The record.
    pub record: String,
    /// The field.
    pub field: String,
    /// The conflict policy that applies (`automerge`, `last-write-wins`,
    /// `hash`, `manual`).
    pub policy: String,
    /// Every concurrent value, oldest operation first.
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the policy's pick; none for `manual`.
    pub chosen: Option<u32>,
}

impl From<core::Conflict> for Conflict {
    fn from(c: core::Conflict) -> Self {
        Conflict {
            record: c.record,
            field: c.field,
            policy: c.policy.name().to_owned(),
            candidates: c
                .candidates
                .into_iter()
                .map(|x| Candidate {
                    value: x.value.into(),
                    author: x.author.map(|k| k.to_string()),
                    time: x.time,
                    change: x.change.to_string(),
                })
                .collect(),
            chosen: c.chosen.map(|i| i as u32),
        }
    }
}

/// A registry held by a replica.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RegistryInfo {
    /// Its id (32 hex digits).
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was created (ms since the epoch).
    pub created_at: i64,
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ImportSummary {
    /// The registry's id.
    pub registry: String,
    /// Its name.
    pub name: String,
    /// Changes verified and applied.
    pub applied: u64,
    /// Changes skipped because this replica had them.
    pub already_known: u64,
    /// Whether the registry was new to this replica.
    pub created: bool,
}

impl From<core::ImportReport> for ImportSummary {
    fn from(r: core::ImportReport) -> Self {
        ImportSummary {
            registry: r.registry.to_string(),
            name: r.name,
            applied: r.applied as u64,
            already_known: r.already_known as u64,
            created: r.created,
        }
    }
}

/// What `verify` checked in one registry.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RegistryVerified {
    /// The registry's name.
    pub name: String,
    /// Changes whose hash, signature, author and role were checked.
    pub changes: u64,
    /// Distinct authors.
    pub authors: u64,
    /// Live records.
    pub records: u64,
    /// Changes revoked by a concurrent removal of their author.
    pub revoked: u64,
    /// Records that break the current schema (reported, not failures).
    pub invalid_records: Vec<String>,
}

/// What `verify` checked.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct VerifySummary {
    /// One entry per registry.
    pub registries: Vec<RegistryVerified>,
    /// Journal rows whose hash chain was checked.
    pub journal_rows: u64,
    /// Signed checkpoints checked against the log.
    pub checkpoints: u64,
}

impl From<core::VerifyReport> for VerifySummary {
    fn from(r: core::VerifyReport) -> Self {
        VerifySummary {
            registries: r
                .registries
                .into_iter()
                .map(|g| RegistryVerified {
                    name: g.name,
                    changes: g.changes as u64,
                    authors: g.authors as u64,
                    records: g.records as u64,
                    revoked: g.revoked as u64,
                    invalid_records: g.invalid_records.iter().map(|e| e.to_string()).collect(),
                })
                .collect(),
            journal_rows: r.journal_rows as u64,
            checkpoints: r.checkpoints as u64,
        }
    }
}

/// What one change did, in registry terms.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum AuditEffect {
    /// The registry was created.
    RegistryCreated {
        /// Its name.
        name: String,
    },
    /// A record was created.
    RecordCreated {
        /// The record.
        record: String,
    },
    /// A record was deleted.
    RecordDeleted {
        /// The record.
        record: String,
    },
    /// A field changed value.
    FieldSet {
        /// The record.
        record: String,
        /// The field.
        field: String,
        /// The value before.
        old: Option<FieldValue>,
        /// The value after (none: cleared).
        new: Option<FieldValue>,
    },
    /// The schema changed.
    SchemaChanged {
        /// The field whose definition changed, if it is one.
        field: Option<String>,
        /// What changed, for people.
        detail: String,
    },
    /// A member was added, removed or given another role.
    MemberChanged {
        /// The member's key.
        key: String,
        /// The role before.
        old: Option<Role>,
        /// The role after (none: removed).
        new: Option<Role>,
    },
    /// Anything else (aliases, changes outside the registry layout).
    Other {
        /// What happened, for people.
        detail: String,
    },
}

impl From<core::AuditEffect> for AuditEffect {
    fn from(e: core::AuditEffect) -> Self {
        match e {
            core::AuditEffect::RegistryCreated { name } => AuditEffect::RegistryCreated { name },
            core::AuditEffect::RecordCreated { record } => AuditEffect::RecordCreated { record },
            core::AuditEffect::RecordDeleted { record } => AuditEffect::RecordDeleted { record },
            core::AuditEffect::FieldSet {
                record,
                field,
                old,
                new,
            } => AuditEffect::FieldSet {
                record,
                field,
                old: old.map(Into::into),
                new: new.map(Into::into),
            },
            core::AuditEffect::SchemaChanged { field, detail } => {
                AuditEffect::SchemaChanged { field, detail }
            }
            core::AuditEffect::MemberChanged { key, old, new } => AuditEffect::MemberChanged {
                key: key.to_string(),
                old: old.map(Into::into),
                new: new.map(Into::into),
            },
            other => AuditEffect::Other {
                detail: other.to_string(),
            },
        }
    }
}

/// One change of a registry's history.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct AuditEntry {
    /// Its position in this replica's log (0: no stored row).
    pub position: i64,
    /// The change's hash (hex).
    pub change: String,
    /// Its hybrid logical clock (ms since the epoch).
    pub time: i64,
    /// The signing key (hex).
    pub author: String,
    /// The author's alias, if an admin gave one.
    pub alias: Option<String>,
    /// Whether the stored signature verifies: `valid`, `invalid` or
    /// `missing`.
    pub signature: String,
    /// The change's message.
    pub message: Option<String>,
    /// What it did.
    pub effects: Vec<AuditEffect>,
    /// The removal that revoked it, if its author was removed concurrently.
    pub revoked_by: Option<String>,
}

impl From<core::AuditEntry> for AuditEntry {
    fn from(e: core::AuditEntry) -> Self {
        AuditEntry {
            position: e.position,
            change: e.change.to_string(),
            time: e.time,
            author: e.author.to_string(),
            alias: e.alias,
            signature: e.signature.name().to_owned(),
            message: e.message,
            effects: e.effects.into_iter().map(Into::into).collect(),
            revoked_by: e.revoked_by.map(|h| h.to_string()),
        }
    }
}

/// Which changes `audit` lists.
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct AuditFilter {
    /// Only changes that touched this record.
    #[uniffi(default = None)]
    pub record: Option<String>,
    /// Only changes signed by this key (hex).
    #[uniffi(default = None)]
    pub author: Option<String>,
    /// Only changes at or after this time (ms since the epoch).
    #[uniffi(default = None)]
    pub since: Option<i64>,
    /// Only changes before this time (ms since the epoch).
    #[uniffi(default = None)]
    pub until: Option<i64>,
}

impl TryFrom<AuditFilter> for core::AuditFilter {
    type Error = ChittyError;

    fn try_from(f: AuditFilter) -> Result<Self, ChittyError> {
        let mut q = core::AuditFilter::all();
        if let Some(r) = f.record {
            q = q.record(r);
        }
        if let Some(a) = f.author {
            q = q.author(public_key(&a)?);
        }
        if let Some(s) = f.since {
            q = q.since(s);
        }
        if let Some(u) = f.until {
            q = q.until(u);
        }
        Ok(q)
    }
}

/// Who attests a registry's current state.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct AttestationStatus {
    /// The current heads (hex).
    pub heads: Vec<String>,
    /// The state digest (hex).
    pub digest: String,
    /// Changes in the history.
    pub change_count: u64,
    /// Members who signed this exact state.
    pub attested_by: Vec<String>,
    /// How many members the registry has.
    pub members: u64,
    /// The configured threshold, if any.
    pub quorum: Option<u32>,
    /// Whether the threshold is met.
    pub attested: bool,
}

impl From<core::AttestationStatus> for AttestationStatus {
    fn from(s: core::AttestationStatus) -> Self {
        AttestationStatus {
            attested: s.attested(),
            heads: s.heads.iter().map(ToString::to_string).collect(),
            digest: s.digest,
            change_count: s.change_count,
            attested_by: s.attested_by.iter().map(ToString::to_string).collect(),
            members: s.members as u64,
            quorum: s.quorum,
        }
    }
}

pub(crate) fn public_key(hex: &str) -> Result<core::PublicKey, ChittyError> {
    hex.parse().map_err(|e| {
        ChittyError::argument(format!(
            "'{hex}' is not a public key ({e}); give the 64 hex digits a replica's public_key returns"
        ))
    })
}

pub(crate) fn change_hash(hex: &str) -> Result<core::ChangeHash, ChittyError> {
    hex.parse().map_err(|_| {
        ChittyError::argument(format!(
            "'{hex}' is not a change hash; give 64 hex digits, as heads returns"
        ))
    })
}
