//! Adapters: how the sync engine reads and writes rows of one external
//! table. An adapter only moves rows; diffing, validation, conflict
//! resolution, dry-run and bookkeeping live once, in the engine.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::schema::{FieldKind, Schema};
use crate::value::Value;

/// A boxed, sendable future: what [`Adapter`] methods return, so the trait
/// stays usable as `dyn Adapter` without tying core to one runtime.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One row of the remote table, in registry terms: values by registry field
/// name (a missing field is a null).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RemoteRow {
    /// The row's id in the remote system (for Postgres, its primary key).
    pub id: String,
    /// Values by registry field name, as the adapter read them (the engine
    /// validates and canonicalizes them against the schema).
    pub fields: BTreeMap<String, Value>,
    /// When the row last changed, in ms since the epoch, if the remote
    /// system says (used by the last-write-wins policy).
    pub modified_at: Option<i64>,
    /// Why the row cannot be read as a record, when the adapter can tell
    /// it is broken although each value is fine. Such a row is reported
    /// invalid with this reason on every run until fixed, and is neither
    /// mirrored nor taken as deleted.
    pub invalid: Option<String>,
}

impl RemoteRow {
    /// A row with these values.
    pub fn new(id: impl Into<String>, fields: BTreeMap<String, Value>) -> Self {
        RemoteRow {
            id: id.into(),
            fields,
            modified_at: None,
            invalid: None,
        }
    }

    /// A row the adapter found broken, for `reason` (what is wrong and
    /// what to do, in the remote system's words).
    pub fn invalid(id: impl Into<String>, reason: impl Into<String>) -> Self {
        RemoteRow {
            id: id.into(),
            fields: BTreeMap::new(),
            modified_at: None,
            invalid: Some(reason.into()),
        }
    }

    /// Sets when the row last changed (ms since the epoch).
    pub fn modified_at(mut self, ms: Option<i64>) -> Self {
        self.modified_at = ms;
        self
    }
}

/// What a fetch returned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fetched {
    /// Rows that exist now (all rows, or those changed since the cursor).
    pub rows: Vec<RemoteRow>,
    /// Ids of rows deleted since the cursor (incremental fetches only).
    pub deleted: Vec<String>,
    /// `true` when `rows` is the whole table, so a bound row missing from
    /// it was deleted; `false` for an incremental fetch.
    pub complete: bool,
    /// The cursor to pass next time to fetch only what changed after this
    /// fetch; `None` if the adapter cannot fetch incrementally.
    pub cursor: Option<String>,
}

/// One write to the remote table.
#[derive(Clone, Debug, PartialEq)]
pub enum RowOp {
    /// Create a row. `id` is the id the engine proposes (the record's id);
    /// the adapter returns the id the row got. If a row with that id
    /// already exists it is updated instead, so a retried create never
    /// duplicates a row.
    Create {
        /// The proposed id.
        id: String,
        /// Every mapped field's value (missing = null).
        fields: BTreeMap<String, Value>,
    },
    /// Change some fields of a row; `None` clears a field.
    Update {
        /// The row's id.
        id: String,
        /// Only the fields to change.
        fields: BTreeMap<String, Option<Value>>,
    },
    /// Delete a row.
    Delete {
        /// The row's id.
        id: String,
    },
}

impl RowOp {
    /// The row's (proposed) id.
    pub fn id(&self) -> &str {
        match self {
            RowOp::Create { id, .. } | RowOp::Update { id, .. } | RowOp::Delete { id } => id,
        }
    }
}

/// The outcome of one [`RowOp`], in the order given.
pub type RowResult = Result<String, RowError>;

/// Why one row could not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RowError {
    /// What went wrong and what to do (never a secret).
    pub message: String,
    /// Whether the same write may succeed if retried later (a transient
    /// fault), as opposed to a data error such as a constraint violation.
    pub retryable: bool,
}

/// How the remote table tells what changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum ChangeTracking {
    /// Changes since a cursor can be fetched; cost follows what changed.
    Incremental,
    /// Every fetch reads the whole table and compares it.
    FullCompare {
        /// Why incremental fetching is not available.
        reason: String,
    },
}

/// A column of the remote table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteColumn {
    /// Its name.
    pub name: String,
    /// Its type, in the remote system's words.
    pub type_name: String,
}

/// What the remote table looks like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteTable {
    /// The table's qualified name.
    pub name: String,
    /// Its columns.
    pub columns: Vec<RemoteColumn>,
    /// How changes are detected.
    pub change_tracking: ChangeTracking,
}

/// One mapped field: which registry field lives in which remote column.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSpec {
    /// The registry field.
    pub field: String,
    /// The remote column.
    pub column: String,
    /// The field's type.
    pub field_type: FieldKind,
    /// Allowed options (select, multi-select).
    pub options: Vec<String>,
    /// Whether the field is required.
    pub required: bool,
    /// Whether no two records may share a value of the field.
    pub unique: bool,
}

/// The remote table an adapter mirrors: where it is and which columns hold
/// which registry fields.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSpec {
    /// The table's name (for Postgres, optionally `schema.table`).
    pub table: String,
    /// The column holding the row id.
    pub id_column: String,
    /// The mapped fields.
    pub columns: Vec<ColumnSpec>,
}

impl TableSpec {
    /// Maps every field of `schema` to a column of the same name, or per
    /// `mapping` (registry field → column) where given.
    pub fn from_schema(
        table: &str,
        id_column: &str,
        schema: &Schema,
        mapping: &BTreeMap<String, String>,
    ) -> Self {
        TableSpec {
            table: table.to_owned(),
            id_column: id_column.to_owned(),
            columns: schema
                .fields
                .iter()
                .map(|f| ColumnSpec {
                    field: f.name.clone(),
                    column: mapping.get(&f.name).cloned().unwrap_or(f.name.clone()),
                    field_type: f.field_type,
                    options: f.options.clone(),
                    required: f.required,
                    unique: f.unique,
                })
                .collect(),
        }
    }
}

/// An adapter failed as a whole (a failure of single rows is a [`RowError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The remote system could not be reached or refused the login.
    #[error(
        "cannot connect to {system}: {reason}; check the connection settings and that the server is up"
    )]
    Connect {
        /// The system (e.g. `postgres`).
        system: String,
        /// Why (never the connection string or a secret).
        reason: String,
    },
    /// A request failed.
    #[error("{system} table {table}: {action} failed: {reason}")]
    Request {
        /// The system.
        system: String,
        /// The table.
        table: String,
        /// What was being done.
        action: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The remote table does not fit the binding (missing table or column).
    #[error("{system} table {table}: {reason}")]
    Mismatch {
        /// The system.
        system: String,
        /// The table.
        table: String,
        /// What does not fit, and what to do.
        reason: String,
    },
    /// The binding's settings are incomplete or wrong.
    #[error("adapter settings: {0}")]
    Config(String),
}

/// How the engine reads and writes one external table.
///
/// Implementations are thin: they translate rows between the registry's
/// values and the remote system, nothing more. Every adapter must pass the
/// conformance suite (`chittysync::conformance`).
pub trait Adapter: Send + Sync {
    /// The remote system's name, recorded in change messages (`postgres`).
    fn system(&self) -> &str;

    /// The table's name, recorded in change messages.
    fn table(&self) -> &str;

    /// Makes the remote side ready: creates the table from the spec if
    /// `create` and it is missing, and installs change tracking where the
    /// system allows it. Idempotent. Returns what the table looks like.
    fn prepare(&self, create: bool) -> BoxFuture<'_, Result<RemoteTable, AdapterError>>;

    /// Describes the remote table without changing anything.
    fn describe(&self) -> BoxFuture<'_, Result<RemoteTable, AdapterError>>;

    /// Reads rows: all of them (`since` = `None`), or those changed since
    /// the cursor a previous fetch returned. Changes this adapter wrote
    /// itself are not returned by an incremental fetch (no echo).
    fn fetch<'a>(&'a self, since: Option<&'a str>) -> BoxFuture<'a, Result<Fetched, AdapterError>>;

    /// Applies a batch of writes, returning one result per op, in order.
    /// `Err` means nothing of the batch is known to have been applied.
    fn apply<'a>(&'a self, ops: &'a [RowOp])
    -> BoxFuture<'a, Result<Vec<RowResult>, AdapterError>>;

    /// Fields the remote system cannot leave empty, with the value an
    /// empty one reads back as (a Notion checkbox: `false`). When a row last
    /// held no value for such a field and now reads this value, the engine
    /// sees no change, so writing a record without the field is not echoed
    /// back as a change; the value itself (say a registry `false`) still
    /// travels both ways. Default: none.
    fn unset_reads_as(&self) -> BTreeMap<String, Value> {
        BTreeMap::new()
    }

    /// How many ops one [`Adapter::apply`] should carry when the run does
    /// not say: systems that bill per request (Sheets) want every row in one
    /// request, others a bounded transaction. `None`: the engine's default.
    fn preferred_batch(&self) -> Option<usize> {
        None
    }
}

impl fmt::Debug for dyn Adapter + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Adapter({} {})", self.system(), self.table())
    }
}
