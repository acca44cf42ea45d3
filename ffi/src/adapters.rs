//! Adapter bindings and sync runs: Postgres bindings stored in the replica,
//! the in-memory table, and adapters written in the foreign language — all
//! driven by the same Rust sync engine (plan, dry run, conflict policies,
//! provenance, merge bases).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chittysync as core;
use chittysync::{Adapter, AdapterError, BoxFuture};

use crate::ChittyError;
use crate::replica::Replica;
use crate::types::FieldValue;

/// Which way a binding moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncDirection {
    /// Registry → remote only.
    Push,
    /// Remote → registry only.
    Pull,
    /// Both ways.
    Both,
}

impl From<SyncDirection> for core::Direction {
    fn from(d: SyncDirection) -> Self {
        match d {
            SyncDirection::Push => core::Direction::Push,
            SyncDirection::Pull => core::Direction::Pull,
            SyncDirection::Both => core::Direction::Both,
        }
    }
}

impl From<core::Direction> for SyncDirection {
    fn from(d: core::Direction) -> Self {
        match d {
            core::Direction::Push => SyncDirection::Push,
            core::Direction::Pull => SyncDirection::Pull,
            _ => SyncDirection::Both,
        }
    }
}

/// A registry bound to one external table.
#[derive(Clone, Debug, uniffi::Record)]
pub struct BindingSpec {
    /// The binding's name.
    pub name: String,
    /// The registry (name or id).
    pub registry: String,
    /// The adapter kind: `postgres`, or any name for an adapter given at
    /// run time (an in-memory table or a foreign-language adapter).
    pub kind: String,
    /// The remote table.
    pub table: String,
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
    pub direction: Option<SyncDirection>,
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
}

impl BindingSpec {
    fn to_core(&self) -> Result<core::AdapterBinding, ChittyError> {
        let mut b = core::AdapterBinding::new(&self.name, &self.registry, &self.kind, &self.table)
            .direction(self.direction.unwrap_or(SyncDirection::Both).into());
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
        Ok(b)
    }

    fn from_core(b: core::AdapterBinding) -> Self {
        BindingSpec {
            name: b.name,
            registry: b.registry,
            kind: b.kind,
            table: b.target,
            id_column: b.id_column,
            mapping: b.mapping.into_iter().collect(),
            key_field: b.key_field,
            direction: Some(b.direction.into()),
            settings: b.settings.into_iter().collect(),
            secret_env: b.secret_env,
            conflict_policy: b.conflict_policy.map(|p| p.name().to_owned()),
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
    /// If the key is not yet a writer: what an admin must run.
    pub admin_must_run: Option<String>,
}

/// How to run a sync.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SyncSettings {
    /// Which way, within the binding's own direction (none: both ways).
    #[uniffi(default = None)]
    pub direction: Option<SyncDirection>,
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

impl From<SyncSettings> for core::MirrorOptions {
    fn from(s: SyncSettings) -> Self {
        let mut o = match s.direction.unwrap_or(SyncDirection::Both) {
            SyncDirection::Push => core::MirrorOptions::push(),
            SyncDirection::Pull => core::MirrorOptions::pull(),
            SyncDirection::Both => core::MirrorOptions::sync(),
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

/// What a sync run planned and did.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SyncOutcome {
    /// Whether nothing was written (dry run, or the plan was refused).
    pub dry_run: bool,
    /// Row writes applied on either side.
    pub applied: u64,
    /// Rows that failed, each with its reason.
    pub failed: Vec<String>,
    /// Conflicts left open (manual policy).
    pub open_conflicts: u64,
    /// The whole plan and outcome as JSON: per row the action, side,
    /// fields old → new, conflicts and invalid rows (the CLI's `--json`).
    pub report_json: String,
}

impl From<core::MirrorReport> for SyncOutcome {
    fn from(r: core::MirrorReport) -> Self {
        SyncOutcome {
            dry_run: r.dry_run,
            applied: r.applied as u64,
            failed: r
                .failed
                .iter()
                .map(|f| format!("{} ({}): {}", f.record, f.side.name(), f.reason))
                .collect(),
            open_conflicts: r.plan.open_conflicts() as u64,
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

/// A row of a foreign adapter's table, in registry terms.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RemoteRow {
    /// The row's id in the remote system.
    pub id: String,
    /// Values by registry field name (missing: null).
    pub fields: HashMap<String, FieldValue>,
    /// When the row last changed (ms since the epoch), if known.
    #[uniffi(default = None)]
    pub modified_at: Option<i64>,
    /// Why the row cannot be read as a record, if the adapter can tell it
    /// is broken (reported invalid with this reason on every run until
    /// fixed; neither mirrored nor taken as deleted).
    #[uniffi(default = None)]
    pub invalid: Option<String>,
}

/// What a foreign adapter's fetch returns.
#[derive(Clone, Debug, uniffi::Record)]
pub struct RemoteFetch {
    /// Rows that exist now (all, or those changed since the cursor).
    pub rows: Vec<RemoteRow>,
    /// Ids deleted since the cursor (incremental fetches).
    #[uniffi(default = [])]
    pub deleted: Vec<String>,
    /// Whether `rows` is the whole table.
    pub complete: bool,
    /// The cursor for the next incremental fetch, if the adapter has one.
    #[uniffi(default = None)]
    pub cursor: Option<String>,
}

/// One write the engine asks a foreign adapter to make.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum RemoteOp {
    /// Create a row (if `id` exists already, update it: retries never
    /// duplicate).
    Create {
        /// The proposed id.
        id: String,
        /// Every mapped field's value.
        fields: HashMap<String, FieldValue>,
    },
    /// Change some fields; a missing value clears the field.
    Update {
        /// The row's id.
        id: String,
        /// Only the fields to change.
        fields: HashMap<String, Option<FieldValue>>,
    },
    /// Delete a row.
    Delete {
        /// The row's id.
        id: String,
    },
}

/// The outcome of one [`RemoteOp`].
#[derive(Clone, Debug, uniffi::Record)]
pub struct RemoteOpResult {
    /// The row's id, when the write succeeded.
    #[uniffi(default = None)]
    pub id: Option<String>,
    /// Why it failed, when it did.
    #[uniffi(default = None)]
    pub error: Option<String>,
    /// Whether a failed write may succeed if retried later.
    #[uniffi(default = false)]
    pub retryable: bool,
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

/// An adapter written in the foreign language: a class with these methods,
/// driven by the Rust sync engine.
#[uniffi::export(with_foreign)]
pub trait ForeignAdapter: Send + Sync {
    /// The remote system's name, recorded in change messages.
    fn system(&self) -> String;
    /// The table's name, recorded in change messages.
    fn table(&self) -> String;
    /// The table's column names.
    fn columns(&self) -> Result<Vec<String>, AdapterFailure>;
    /// Reads rows: all (`since` none) or those changed since the cursor.
    fn fetch(&self, since: Option<String>) -> Result<RemoteFetch, AdapterFailure>;
    /// Applies writes, returning one result per op, in order.
    fn apply(&self, ops: Vec<RemoteOp>) -> Result<Vec<RemoteOpResult>, AdapterFailure>;
}

/// Drives a [`ForeignAdapter`] as a core adapter.
struct Bridge {
    inner: Arc<dyn ForeignAdapter>,
    system: String,
    table: String,
}

impl Bridge {
    fn new(inner: Arc<dyn ForeignAdapter>) -> Self {
        Bridge {
            system: inner.system(),
            table: inner.table(),
            inner,
        }
    }

    fn failed(&self, action: &str, e: AdapterFailure) -> AdapterError {
        AdapterError::Request {
            system: self.system.clone(),
            table: self.table.clone(),
            action: action.to_owned(),
            reason: e.to_string(),
        }
    }

    fn remote_table(&self) -> Result<core::RemoteTable, AdapterError> {
        let columns = self
            .inner
            .columns()
            .map_err(|e| self.failed("describe", e))?;
        Ok(core::RemoteTable {
            name: self.table.clone(),
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
}

fn values(fields: HashMap<String, FieldValue>) -> BTreeMap<String, core::Value> {
    fields.into_iter().map(|(k, v)| (k, v.into())).collect()
}

impl Adapter for Bridge {
    fn system(&self) -> &str {
        &self.system
    }

    fn table(&self) -> &str {
        &self.table
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
            let f = self
                .inner
                .fetch(since.map(str::to_owned))
                .map_err(|e| self.failed("fetch", e))?;
            Ok(core::Fetched {
                rows: f
                    .rows
                    .into_iter()
                    .map(|r| {
                        match r.invalid {
                            Some(reason) => core::RemoteRow::invalid(r.id, reason),
                            None => core::RemoteRow::new(r.id, values(r.fields)),
                        }
                        .modified_at(r.modified_at)
                    })
                    .collect(),
                deleted: f.deleted,
                complete: f.complete,
                cursor: f.cursor,
            })
        })
    }

    fn apply<'a>(
        &'a self,
        ops: &'a [core::RowOp],
    ) -> BoxFuture<'a, Result<Vec<core::RowResult>, AdapterError>> {
        Box::pin(async move {
            let foreign: Vec<RemoteOp> = ops
                .iter()
                .map(|op| match op {
                    core::RowOp::Create { id, fields } => RemoteOp::Create {
                        id: id.clone(),
                        fields: fields
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone().into()))
                            .collect(),
                    },
                    core::RowOp::Update { id, fields } => RemoteOp::Update {
                        id: id.clone(),
                        fields: fields
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone().map(Into::into)))
                            .collect(),
                    },
                    core::RowOp::Delete { id } => RemoteOp::Delete { id: id.clone() },
                })
                .collect();
            let results = self
                .inner
                .apply(foreign)
                .map_err(|e| self.failed("apply", e))?;
            if results.len() != ops.len() {
                return Err(AdapterError::Request {
                    system: self.system.clone(),
                    table: self.table.clone(),
                    action: "apply".into(),
                    reason: format!(
                        "the adapter returned {} results for {} writes; return one per write, in order",
                        results.len(),
                        ops.len()
                    ),
                });
            }
            Ok(results
                .into_iter()
                .zip(ops)
                .map(|(r, op)| match r.error {
                    None => Ok(r.id.unwrap_or_else(|| op.id().to_owned())),
                    Some(message) => Err(core::RowError {
                        message,
                        retryable: r.retryable,
                    }),
                })
                .collect())
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

    /// Inserts or replaces a row, as another application would.
    pub fn insert(&self, id: String, fields: HashMap<String, FieldValue>) {
        self.inner.insert(&id, values(fields));
    }

    /// Changes fields of a row (a missing value clears it), as another
    /// application would.
    pub fn update(&self, id: String, fields: HashMap<String, Option<FieldValue>>) {
        let fields: Vec<(String, Option<core::Value>)> = fields
            .into_iter()
            .map(|(k, v)| (k, v.map(Into::into)))
            .collect();
        let refs: Vec<(&str, Option<core::Value>)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.inner.update(&id, &refs);
    }

    /// Deletes a row, as another application would.
    pub fn remove(&self, id: String) {
        self.inner.remove(&id);
    }

    /// Every row.
    pub fn rows(&self) -> Vec<RemoteRow> {
        self.inner
            .rows()
            .into_iter()
            .map(|(id, fields)| RemoteRow {
                id,
                fields: fields.into_iter().map(|(k, v)| (k, v.into())).collect(),
                modified_at: None,
                invalid: None,
            })
            .collect()
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
            admin_must_run: added.admin_must_run,
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
        let table = adapter
            .prepare(create)
            .await
            .map_err(|e| ChittyError::Adapter {
                message: e.to_string(),
            })?;
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

    /// Runs a stored Postgres binding once: plan, then (unless a dry run)
    /// the writes on both sides.
    pub async fn run_mirror(
        &self,
        name: String,
        settings: SyncSettings,
        progress: Arc<dyn ProgressListener>,
    ) -> Result<SyncOutcome, ChittyError> {
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
    pub async fn sync_foreign(
        &self,
        name: String,
        adapter: Arc<dyn ForeignAdapter>,
        settings: SyncSettings,
        progress: Arc<dyn ProgressListener>,
    ) -> Result<SyncOutcome, ChittyError> {
        let bridge = Bridge::new(adapter);
        let report = self
            .core()
            .run_mirror(&name, &bridge, &settings.into(), &Progress(progress))
            .await?;
        Ok(report.into())
    }

    /// Runs binding `name` once against an in-memory table.
    pub async fn sync_memory(
        &self,
        name: String,
        table: Arc<MemoryTable>,
        settings: SyncSettings,
        progress: Arc<dyn ProgressListener>,
    ) -> Result<SyncOutcome, ChittyError> {
        let report = self
            .core()
            .run_mirror(&name, &table.inner, &settings.into(), &Progress(progress))
            .await?;
        Ok(report.into())
    }
}
