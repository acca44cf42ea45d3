//! Mirrors: registries bound to external targets (a Postgres table stored
//! in the replica, the in-memory table, or an adapter written in the
//! foreign language), all run by the same Rust mirror engine (plan, dry
//! run, conflict policies, provenance, merge bases).
//!
//! A foreign adapter speaks JSON in the wire encoding (see [`crate::wire`]):
//! the rows it fetches and the writes it is asked to make are decoded and
//! encoded here, once, by the registry's field types, so the Python and
//! Node adapters behave the same.

use std::collections::HashMap;
use std::sync::Arc;

use chittysync as core;
use chittysync::{Adapter, AdapterError, BoxFuture};

use crate::ChittyError;
use crate::replica::Replica;
use crate::wire;

/// Which way a binding moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum MirrorDirection {
    /// Registry → remote only.
    Push,
    /// Remote → registry only.
    Pull,
    /// Both ways.
    Both,
}

impl From<MirrorDirection> for core::Direction {
    fn from(d: MirrorDirection) -> Self {
        match d {
            MirrorDirection::Push => core::Direction::Push,
            MirrorDirection::Pull => core::Direction::Pull,
            MirrorDirection::Both => core::Direction::Both,
        }
    }
}

impl From<core::Direction> for MirrorDirection {
    fn from(d: core::Direction) -> Self {
        match d {
            core::Direction::Push => MirrorDirection::Push,
            core::Direction::Pull => MirrorDirection::Pull,
            _ => MirrorDirection::Both,
        }
    }
}

/// A registry bound to one external target (a table).
#[derive(Clone, Debug, uniffi::Record)]
pub struct BindingSpec {
    /// The binding's name.
    pub name: String,
    /// The registry (name or id).
    pub registry: String,
    /// The adapter kind: `postgres`, or any name for an adapter given at
    /// run time (an in-memory table or a foreign-language adapter).
    pub kind: String,
    /// What the binding points at: the remote table.
    pub target: String,
    /// The remote column holding the row id.
    #[uniffi(default = "id")]
    pub id_column: String,
    /// Registry field → remote column, where they differ.
    #[uniffi(default)]
    pub mapping: HashMap<String, String>,
    /// The field that matches existing records to existing rows on the
    /// first sync.
    #[uniffi(default = None)]
    pub key_field: Option<String>,
    /// Which way data moves (none: both ways).
    #[uniffi(default = None)]
    pub direction: Option<MirrorDirection>,
    /// Non-secret settings (for Postgres: `url` without a password).
    #[uniffi(default)]
    pub settings: HashMap<String, String>,
    /// The environment variable holding the secret (never the secret).
    #[uniffi(default = None)]
    pub secret_env: Option<String>,
    /// Overrides the registry's conflict policy (`automerge`,
    /// `last-write-wins`, `hash`, `manual`).
    #[uniffi(default = None)]
    pub conflict_policy: Option<String>,
    /// Run it on this schedule, every so many seconds, while the replica is
    /// served over HTTP (none: only when asked).
    #[uniffi(default = None)]
    pub every_secs: Option<u64>,
}

impl BindingSpec {
    fn to_core(&self) -> Result<core::AdapterBinding, ChittyError> {
        let mut b = core::AdapterBinding::new(&self.name, &self.registry, &self.kind, &self.target)
            .direction(self.direction.unwrap_or(MirrorDirection::Both).into());
        b.id_column = self.id_column.clone();
        for (field, column) in &self.mapping {
            b = b.map(field, column);
        }
        if let Some(k) = &self.key_field {
            b = b.key_field(k);
        }
        for (k, v) in &self.settings {
            b = b.setting(k, v);
        }
        if let Some(v) = &self.secret_env {
            b = b.secret_env(v);
        }
        if let Some(p) = &self.conflict_policy {
            let policy = p
                .parse::<core::ConflictPolicy>()
                .map_err(|e| ChittyError::argument(e.to_string()))?;
            b = b.conflict_policy(policy);
        }
        if let Some(secs) = self.every_secs {
            b = b.every(std::time::Duration::from_secs(secs));
        }
        Ok(b)
    }

    fn from_core(b: core::AdapterBinding) -> Self {
        BindingSpec {
            name: b.name,
            registry: b.registry,
            kind: b.kind,
            target: b.target,
            id_column: b.id_column,
            mapping: b.mapping.into_iter().collect(),
            key_field: b.key_field,
            direction: Some(b.direction.into()),
            settings: b.settings.into_iter().collect(),
            secret_env: b.secret_env,
            conflict_policy: b.conflict_policy.map(|p| p.name().to_owned()),
            every_secs: b.every_secs,
        }
    }
}

/// What adding a binding did.
#[derive(Clone, Debug, uniffi::Record)]
pub struct BindingAdded {
    /// The binding's own key, which signs what it brings into the registry.
    pub key: String,
    /// Whether this replica (an admin) made the key a writer just now.
    pub made_writer: bool,
    /// If the key is not yet a writer: what an admin of the registry must
    /// do (make the key a writer with `set_member`).
    pub needs_admin: Option<String>,
}

/// How to run a mirror.
#[derive(Clone, Debug, uniffi::Record)]
pub struct MirrorOptions {
    /// Which way, within the binding's own direction (none: both ways).
    #[uniffi(default = None)]
    pub direction: Option<MirrorDirection>,
    /// Plan only: write nothing to either side.
    #[uniffi(default = false)]
    pub dry_run: bool,
    /// Allow more deletes than the binding's limit.
    #[uniffi(default = false)]
    pub allow_deletes: bool,
    /// Compare the whole table instead of reading changes since the cursor.
    #[uniffi(default = false)]
    pub full: bool,
}

impl From<MirrorOptions> for core::MirrorOptions {
    fn from(s: MirrorOptions) -> Self {
        let mut o = match s.direction.unwrap_or(MirrorDirection::Both) {
            MirrorDirection::Push => core::MirrorOptions::push(),
            MirrorDirection::Pull => core::MirrorOptions::pull(),
            MirrorDirection::Both => core::MirrorOptions::sync(),
        };
        if s.dry_run {
            o = o.dry_run();
        }
        if s.allow_deletes {
            o = o.allow_deletes();
        }
        if s.full {
            o = o.full();
        }
        o
    }
}

/// What a mirror run planned and did.
#[derive(Clone, Debug, uniffi::Record)]
pub struct MirrorReport {
    /// Whether nothing was written (dry run, or the plan was refused).
    pub dry_run: bool,
    /// Row writes applied on either side.
    pub applied: u64,
    /// Rows that failed, each with its reason.
    pub failed: Vec<String>,
    /// Conflicts left open (manual policy).
    pub open_conflicts: u64,
    /// Remote rows that cannot be mirrored, each with its reason: they are
    /// neither mirrored nor taken as deleted, and are reported on every run
    /// until fixed.
    pub invalid: Vec<InvalidRow>,
    /// Every row still not applied after this run (failed or invalid, in
    /// this run or an earlier one): the next run retries them.
    pub pending: Vec<PendingRow>,
    /// The whole plan and outcome as JSON: per row the action, side,
    /// fields old → new, conflicts, invalid rows and a summary of counts.
    pub report_json: String,
}

/// A remote row the mirror could not take.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct InvalidRow {
    /// The row's id in the target.
    pub id: String,
    /// The record it is bound to, if any.
    pub record: Option<String>,
    /// The offending field (empty when the whole row is unreadable).
    pub field: String,
    /// Why.
    pub reason: String,
}

/// A row not yet applied, retried on every run until it is applied or gone.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct PendingRow {
    /// The row's id in the target.
    pub id: String,
    /// The record it is bound to, if any.
    pub record: Option<String>,
    /// Why it is pending: `invalid` (the row breaks the schema), or `local`
    /// or `remote` (the side whose write failed).
    pub state: String,
    /// What went wrong, as last seen, and what to do.
    pub reason: String,
    /// Whether simply running again may settle it (a transient fault), as
    /// opposed to data that must be fixed first.
    pub retryable: bool,
    /// When it first became pending (ms since the epoch).
    pub since: i64,
}

impl From<&core::PendingRow> for PendingRow {
    fn from(p: &core::PendingRow) -> Self {
        PendingRow {
            id: p.remote_id.clone(),
            record: p.record.clone(),
            state: p.state.name().to_owned(),
            reason: p.reason.clone(),
            retryable: p.retryable,
            since: p.since,
        }
    }
}

/// One recorded run of a binding.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct MirrorRunInfo {
    /// The binding.
    pub binding: String,
    /// When it started (ms since the epoch).
    pub started_at: i64,
    /// How long it took (ms).
    pub duration_ms: u64,
    /// How it ended: `ok`, `partial` (some rows failed), `failed` or
    /// `dry-run`.
    pub outcome: String,
    /// Rows applied.
    pub applied: u64,
    /// Rows that failed.
    pub failed: u64,
    /// Remote rows that could not be taken.
    pub invalid: u64,
    /// Fields left in conflict for someone to settle.
    pub conflicts: u64,
    /// Why it failed, if it did (never a secret).
    pub error: Option<String>,
}

impl From<core::MirrorRun> for MirrorRunInfo {
    fn from(r: core::MirrorRun) -> Self {
        MirrorRunInfo {
            binding: r.binding,
            started_at: r.started_at,
            duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
            outcome: r.outcome.name().to_owned(),
            applied: r.applied,
            failed: r.failed,
            invalid: r.invalid,
            conflicts: r.conflicts,
            error: r.error,
        }
    }
}

impl From<core::MirrorReport> for MirrorReport {
    fn from(r: core::MirrorReport) -> Self {
        MirrorReport {
            dry_run: r.dry_run,
            applied: r.applied as u64,
            failed: r
                .failed
                .iter()
                .map(|f| format!("{} ({}): {}", f.record, f.side.name(), f.reason))
                .collect(),
            open_conflicts: r.plan.open_conflicts() as u64,
            invalid: r
                .plan
                .invalid
                .iter()
                .map(|i| InvalidRow {
                    id: i.remote_id.clone(),
                    record: i.record.clone(),
                    field: i.field.clone(),
                    reason: i.reason.clone(),
                })
                .collect(),
            pending: r.pending.iter().map(PendingRow::from).collect(),
            report_json: r.to_json().to_string(),
        }
    }
}

/// Receives progress of a long operation.
#[uniffi::export(with_foreign)]
pub trait ProgressListener: Send + Sync {
    /// A stage starts (`fetch`, `apply-local`, `apply-remote`) with `total`
    /// units of work (0 if unknown).
    fn stage(&self, stage: String, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
}

// The listener is required, not optional: an optional callback object
// does not lower in the Node runtime (the wrappers pass a silent one).
struct Progress(Arc<dyn ProgressListener>);

impl core::MirrorProgress for Progress {
    fn stage(&self, stage: core::Stage, total: u64) {
        self.0.stage(stage.label().to_owned(), total);
    }

    fn advance(&self, n: u64) {
        self.0.advance(n);
    }
}

/// A foreign adapter failed as a whole.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum AdapterFailure {
    /// The adapter could not do what was asked; the message says why.
    #[error("{message}")]
    Failed {
        /// What went wrong and what to do.
        message: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for AdapterFailure {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        AdapterFailure::Failed { message: e.reason }
    }
}

/// An adapter written in the foreign language, run by the Rust mirror
/// engine. It speaks JSON with values in the wire encoding; the Python
/// and Node packages implement it over their own `Adapter` classes.
#[uniffi::export(with_foreign)]
pub trait ForeignAdapter: Send + Sync {
    /// The remote system's name, recorded in change messages.
    fn system(&self) -> String;
    /// What the binding points at (the table's name), recorded in change
    /// messages.
    fn target(&self) -> String;
    /// The target's column names.
    fn columns(&self) -> Result<Vec<String>, AdapterFailure>;
    /// Reads rows: all (`since` none) or those changed since the cursor.
    /// Returns `{"rows": [{"id", "fields", "modified_at"?, "invalid"?}],
    /// "deleted"?: [ids], "complete"?: bool (default true), "cursor"?}`;
    /// a row with `invalid` (a reason) is reported, not mirrored, and not
    /// taken as deleted; a null field value is a missing one.
    fn fetch(&self, since: Option<String>) -> Result<String, AdapterFailure>;
    /// Applies writes given as a JSON array of `{"op": "create" | "update"
    /// | "delete", "id", "fields"}` (in an update a null value clears the
    /// field). Returns one result per op, in order: the row's id, null (it
    /// kept the proposed id), or `{"error": reason, "retryable"?: bool}`.
    fn apply(&self, ops: String) -> Result<String, AdapterFailure>;
}

/// Drives a [`ForeignAdapter`] as a core adapter, decoding by the bound
/// registry's field types.
struct Bridge {
    inner: Arc<dyn ForeignAdapter>,
    system: String,
    target: String,
    kinds: wire::Kinds,
}

impl Bridge {
    fn new(inner: Arc<dyn ForeignAdapter>, kinds: wire::Kinds) -> Self {
        Bridge {
            system: inner.system(),
            target: inner.target(),
            inner,
            kinds,
        }
    }

    fn error(&self, action: &str, reason: impl Into<String>) -> AdapterError {
        AdapterError::Request {
            system: self.system.clone(),
            table: self.target.clone(),
            action: action.to_owned(),
            reason: reason.into(),
        }
    }

    fn remote_table(&self) -> Result<core::RemoteTable, AdapterError> {
        let columns = self
            .inner
            .columns()
            .map_err(|e| self.error("describe", e.to_string()))?;
        Ok(core::RemoteTable {
            name: self.target.clone(),
            columns: columns
                .into_iter()
                .map(|name| core::RemoteColumn {
                    name,
                    type_name: "any".into(),
                })
                .collect(),
            change_tracking: core::ChangeTracking::Incremental,
        })
    }

    fn fetched(&self, text: &str) -> Result<core::Fetched, String> {
        use serde_json::Value as Json;
        let mut o = match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(o)) => o,
            Ok(other) => return Err(format!("fetch returned {other}, not an object with rows")),
            Err(e) => return Err(format!("fetch returned malformed JSON: {e}")),
        };
        let Some(Json::Array(items)) = o.remove("rows") else {
            return Err("fetch must return rows (an array)".into());
        };
        let mut rows = Vec::with_capacity(items.len());
        for item in items {
            let Json::Object(mut row) = item else {
                return Err(format!("a fetched row must be an object, not {item}"));
            };
            let id = match row.remove("id") {
                Some(Json::String(id)) => id,
                Some(Json::Number(n)) => n.to_string(),
                other => {
                    return Err(format!(
                        "a fetched row needs an id (a string), not {}",
                        other.unwrap_or(Json::Null)
                    ));
                }
            };
            let modified_at = row.remove("modified_at").and_then(|m| m.as_i64());
            let invalid = match row.remove("invalid") {
                None | Some(Json::Null) => None,
                Some(Json::String(reason)) => Some(reason),
                Some(other) => Some(other.to_string()),
            };
            let fields = match row.remove("fields") {
                None | Some(Json::Null) => serde_json::Map::new(),
                Some(Json::Object(f)) => f,
                Some(other) => {
                    return Err(format!("row {id}: fields must be an object, not {other}"));
                }
            };
            let row = match invalid {
                Some(reason) => core::RemoteRow::invalid(id, reason),
                None => {
                    // A value that does not decode makes its row invalid
                    // (reported every run), not the whole fetch.
                    let fields: serde_json::Map<String, Json> =
                        fields.into_iter().filter(|(_, v)| !v.is_null()).collect();
                    match wire::decode_fields(&self.kinds, fields) {
                        Ok(values) => core::RemoteRow::new(id, values.into_iter().collect()),
                        Err(e) => core::RemoteRow::invalid(id, e.to_string()),
                    }
                }
            };
            rows.push(row.modified_at(modified_at));
        }
        let deleted = match o.remove("deleted") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(ids)) => ids
                .into_iter()
                .map(|i| match i {
                    Json::String(s) => Ok(s),
                    other => Err(format!("deleted ids must be strings, not {other}")),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("deleted must be an array of ids, not {other}")),
        };
        let complete = match o.remove("complete") {
            None | Some(Json::Null) => true,
            Some(Json::Bool(b)) => b,
            Some(other) => return Err(format!("complete must be true or false, not {other}")),
        };
        let cursor = match o.remove("cursor") {
            None | Some(Json::Null) => None,
            Some(Json::String(c)) => Some(c),
            Some(other) => Some(other.to_string()),
        };
        Ok(core::Fetched {
            rows,
            deleted,
            complete,
            cursor,
        })
    }
}

fn encode_op(op: &core::RowOp) -> serde_json::Value {
    match op {
        core::RowOp::Create { id, fields } => serde_json::json!({
            "op": "create", "id": id, "fields": wire::encode_fields(fields),
        }),
        core::RowOp::Update { id, fields } => {
            let fields: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_ref().map_or(serde_json::Value::Null, wire::encode),
                    )
                })
                .collect();
            serde_json::json!({ "op": "update", "id": id, "fields": fields })
        }
        core::RowOp::Delete { id } => serde_json::json!({ "op": "delete", "id": id }),
    }
}

fn op_result(r: serde_json::Value, op: &core::RowOp) -> Result<core::RowResult, String> {
    use serde_json::Value as Json;
    match r {
        Json::Null => Ok(Ok(op.id().to_owned())),
        Json::String(id) => Ok(Ok(id)),
        Json::Number(n) => Ok(Ok(n.to_string())),
        Json::Object(mut o) => match o.remove("error") {
            // Any error that is present is a failure, whatever its shape: a
            // JavaScript `Error` serialises as `{}`, and treating that as
            // success would record the row as written when it was not.
            Some(error) if !error.is_null() => Ok(Err(core::RowError {
                message: error_message(error),
                retryable: o.get("retryable").and_then(Json::as_bool).unwrap_or(false),
            })),
            _ => match o.remove("id") {
                Some(Json::String(id)) => Ok(Ok(id)),
                None | Some(Json::Null) => Ok(Ok(op.id().to_owned())),
                Some(other) => Err(format!("a write's id must be a string, not {other}")),
            },
        },
        other => Err(format!(
            "a write's result must be the row's id, null or an error, not {other}"
        )),
    }
}

/// The message of an adapter's row error, whatever JSON it came as.
fn error_message(error: serde_json::Value) -> String {
    use serde_json::Value as Json;
    match error {
        Json::String(message) if !message.trim().is_empty() => message,
        Json::Object(ref o) => match o.get("message").and_then(Json::as_str) {
            Some(message) if !message.trim().is_empty() => message.to_owned(),
            _ if o.is_empty() => "the adapter reported an error with no message".to_owned(),
            _ => format!("the adapter reported an error: {error}"),
        },
        Json::String(_) => "the adapter reported an error with no message".to_owned(),
        other => format!("the adapter reported an error: {other}"),
    }
}

impl Adapter for Bridge {
    fn system(&self) -> &str {
        &self.system
    }

    fn table(&self) -> &str {
        &self.target
    }

    fn prepare(&self, _create: bool) -> BoxFuture<'_, Result<core::RemoteTable, AdapterError>> {
        Box::pin(async move { self.remote_table() })
    }

    fn describe(&self) -> BoxFuture<'_, Result<core::RemoteTable, AdapterError>> {
        Box::pin(async move { self.remote_table() })
    }

    fn fetch<'a>(
        &'a self,
        since: Option<&'a str>,
    ) -> BoxFuture<'a, Result<core::Fetched, AdapterError>> {
        Box::pin(async move {
            let text = self
                .inner
                .fetch(since.map(str::to_owned))
                .map_err(|e| self.error("fetch", e.to_string()))?;
            self.fetched(&text).map_err(|e| self.error("fetch", e))
        })
    }

    fn apply<'a>(
        &'a self,
        ops: &'a [core::RowOp],
    ) -> BoxFuture<'a, Result<Vec<core::RowResult>, AdapterError>> {
        Box::pin(async move {
            let json = serde_json::Value::Array(ops.iter().map(encode_op).collect()).to_string();
            let text = self
                .inner
                .apply(json)
                .map_err(|e| self.error("apply", e.to_string()))?;
            let results = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Array(results)) => results,
                Ok(other) => {
                    return Err(self.error(
                        "apply",
                        format!("apply returned {other}; return one result per write, in order"),
                    ));
                }
                Err(e) => {
                    return Err(self.error("apply", format!("apply returned malformed JSON: {e}")));
                }
            };
            if results.len() != ops.len() {
                return Err(self.error(
                    "apply",
                    format!(
                        "the adapter returned {} results for {} writes; return one per write, in order",
                        results.len(),
                        ops.len()
                    ),
                ));
            }
            results
                .into_iter()
                .zip(ops)
                .map(|(r, op)| op_result(r, op).map_err(|e| self.error("apply", e)))
                .collect()
        })
    }
}

/// An in-memory table: the reference adapter, for tests and for comparing
/// a foreign adapter's behaviour against.
#[derive(uniffi::Object)]
pub struct MemoryTable {
    inner: core::MemoryAdapter,
}

#[uniffi::export]
impl MemoryTable {
    /// An empty table named `name`.
    #[uniffi::constructor]
    pub fn new(name: String) -> Arc<Self> {
        Arc::new(MemoryTable {
            inner: core::MemoryAdapter::new(name),
        })
    }

    /// Inserts or replaces a row, as another application would. `fields`
    /// is a JSON object of values in the wire encoding.
    pub fn insert(&self, id: String, fields: String) -> Result<(), ChittyError> {
        let fields = wire::decode_fields_text(&wire::Kinds::new(), &fields)?;
        self.inner.insert(&id, fields);
        Ok(())
    }

    /// Changes fields of a row (a null value clears it), as another
    /// application would.
    pub fn update(&self, id: String, fields: String) -> Result<(), ChittyError> {
        let serde_json::Value::Object(o) = wire::parse(&fields, "fields")? else {
            return Err(ChittyError::argument("fields must be a JSON object"));
        };
        let mut changes: Vec<(String, Option<core::Value>)> = Vec::with_capacity(o.len());
        for (name, v) in o {
            let value = if v.is_null() {
                None
            } else {
                Some(wire::decode(None, &name, v)?)
            };
            changes.push((name, value));
        }
        let refs: Vec<(&str, Option<core::Value>)> = changes
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.inner.update(&id, &refs);
        Ok(())
    }

    /// Deletes a row, as another application would.
    pub fn remove(&self, id: String) {
        self.inner.remove(&id);
    }

    /// Every row, as a JSON object of row id → fields (wire encoding).
    pub fn rows_json(&self) -> String {
        let rows: serde_json::Map<String, serde_json::Value> = self
            .inner
            .rows()
            .iter()
            .map(|(id, fields)| (id.clone(), wire::encode_fields(fields)))
            .collect();
        serde_json::Value::Object(rows).to_string()
    }

    /// How many writes the engine made to the table (0 after a dry run).
    pub fn mutating_calls(&self) -> u64 {
        self.inner.mutating_calls()
    }
}

#[uniffi::export]
impl Replica {
    /// Stores a binding of a registry to an external table and gives it
    /// its own signing key (made a writer when this replica is an admin).
    pub fn add_binding(&self, spec: BindingSpec) -> Result<BindingAdded, ChittyError> {
        let added = self.core().add_binding(&spec.to_core()?)?;
        Ok(BindingAdded {
            key: added.key.to_string(),
            made_writer: added.made_writer,
            needs_admin: added.admin_must_run.map(|_| {
                format!(
                    "an admin of registry '{}' must make key {} a writer (set_member with role writer)",
                    spec.registry, added.key
                )
            }),
        })
    }

    /// The stored bindings.
    pub fn bindings(&self) -> Result<Vec<BindingSpec>, ChittyError> {
        Ok(self
            .core()
            .bindings()?
            .into_iter()
            .map(BindingSpec::from_core)
            .collect())
    }

    /// Removes a binding and its bookkeeping (never the remote table).
    pub fn remove_binding(&self, name: String) -> Result<(), ChittyError> {
        self.core().remove_binding(&name)?;
        Ok(())
    }

    /// Sets binding `name` to run every `every_secs` seconds while the
    /// replica is served over HTTP, or only when asked (none). Returns the
    /// binding as stored.
    pub fn set_binding_schedule(
        &self,
        name: String,
        every_secs: Option<u64>,
    ) -> Result<BindingSpec, ChittyError> {
        let every = every_secs.map(std::time::Duration::from_secs);
        Ok(BindingSpec::from_core(
            self.core().set_binding_schedule(&name, every)?,
        ))
    }

    /// The last `limit` recorded runs of binding `name`, newest first.
    pub fn mirror_runs(&self, name: String, limit: u32) -> Result<Vec<MirrorRunInfo>, ChittyError> {
        Ok(self
            .core()
            .mirror_runs(&name, limit)?
            .into_iter()
            .map(MirrorRunInfo::from)
            .collect())
    }
}

/// What a remote table looks like.
#[derive(Clone, Debug, uniffi::Record)]
pub struct RemoteTableInfo {
    /// The table's qualified name.
    pub name: String,
    /// Its columns.
    pub columns: Vec<String>,
    /// Whether changes are fetched incrementally (else every run compares
    /// the whole table).
    pub incremental: bool,
    /// Why not, when not.
    pub full_compare_reason: Option<String>,
}

#[uniffi::export(async_runtime = "tokio")]
impl Replica {
    /// Makes a stored Postgres binding's table ready: creates it from the
    /// schema when `create` and it is missing, installs change tracking
    /// (or says why it cannot), and describes it.
    pub async fn prepare_binding(
        &self,
        name: String,
        create: bool,
    ) -> Result<RemoteTableInfo, ChittyError> {
        let adapter = self
            .core()
            .connect_binding(&name, &chittysync_adapters::kinds())
            .await?;
        let table = adapter.prepare(create).await.map_err(ChittyError::from)?;
        let (incremental, full_compare_reason) = match table.change_tracking {
            core::ChangeTracking::FullCompare { reason } => (false, Some(reason)),
            _ => (true, None),
        };
        Ok(RemoteTableInfo {
            name: table.name,
            columns: table.columns.into_iter().map(|c| c.name).collect(),
            incremental,
            full_compare_reason,
        })
    }

    /// Runs a stored binding once through the adapter of its kind (e.g.
    /// Postgres): plan, then (unless a dry run) the writes on both sides.
    pub async fn run_mirror(
        &self,
        name: String,
        settings: MirrorOptions,
        progress: Arc<dyn ProgressListener>,
    ) -> Result<MirrorReport, ChittyError> {
        let replica = self.core();
        let adapter = replica
            .connect_binding(&name, &chittysync_adapters::kinds())
            .await?;
        let report = replica
            .run_mirror(
                &name,
                adapter.as_ref(),
                &settings.into(),
                &Progress(progress),
            )
            .await?;
        Ok(report.into())
    }

    /// Runs binding `name` once through an adapter written in the foreign
    /// language.
    pub async fn run_mirror_foreign(
        &self,
        name: String,
        adapter: Arc<dyn ForeignAdapter>,
        settings: MirrorOptions,
        progress: Arc<dyn ProgressListener>,
    ) -> Result<MirrorReport, ChittyError> {
        // The bound registry's types decode the adapter's values; an unknown
        // binding is reported by the run itself.
        let kinds = match self.core().binding(&name)? {
            Some(b) => wire::kinds(&self.core().registry(&b.registry)?.schema()),
            None => wire::Kinds::new(),
        };
        let bridge = Bridge::new(adapter, kinds);
        let report = self
            .core()
            .run_mirror(&name, &bridge, &settings.into(), &Progress(progress))
            .await?;
        Ok(report.into())
    }

    /// Runs binding `name` once against an in-memory table.
    pub async fn run_mirror_memory(
        &self,
        name: String,
        table: Arc<MemoryTable>,
        settings: MirrorOptions,
        progress: Arc<dyn ProgressListener>,
    ) -> Result<MirrorReport, ChittyError> {
        let report = self
            .core()
            .run_mirror(&name, &table.inner, &settings.into(), &Progress(progress))
            .await?;
        Ok(report.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete_r1() -> core::RowOp {
        core::RowOp::Delete { id: "r1".into() }
    }

    #[test]
    fn any_present_error_is_a_failure_whatever_its_shape() {
        // A JavaScript `Error` serialises as `{}`; it must never pass as written.
        for error in [
            serde_json::json!({}),
            serde_json::json!({"message": "refused"}),
            serde_json::json!(42),
            serde_json::json!(""),
            serde_json::json!("constraint refused the row"),
        ] {
            let result = op_result(serde_json::json!({ "error": error.clone() }), &delete_r1())
                .expect("a result");
            let failure = result.expect_err(&format!("{error} is a failure"));
            assert!(!failure.message.is_empty());
        }
        let refused = op_result(
            serde_json::json!({"error": {"message": "refused"}}),
            &delete_r1(),
        );
        assert_eq!(refused.unwrap().unwrap_err().message, "refused");
    }

    #[test]
    fn a_null_error_or_an_id_is_success() {
        let ok = op_result(serde_json::json!({"error": null, "id": "x9"}), &delete_r1());
        assert_eq!(ok.unwrap().unwrap(), "x9");
        assert_eq!(
            op_result(serde_json::Value::Null, &delete_r1())
                .unwrap()
                .unwrap(),
            "r1"
        );
    }
}
