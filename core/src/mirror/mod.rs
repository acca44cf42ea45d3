//! The sync engine: Fetch → Diff → Validate → Resolve → Apply, once for
//! every adapter.
//!
//! A run fetches remote rows (all, or only those changed since the
//! binding's cursor), diffs both sides field by field against the
//! merge base (three-way), validates remote values against the
//! registry's schema (an invalid row is reported and skipped whole),
//! settles fields changed on both sides with the conflict policy, then
//! applies: remote changes into the registry as changes signed by the
//! binding's own key, local changes to the remote in batches. Merge bases
//! advance only for rows whose writes all succeeded, in one transaction,
//! so a failed run resumes with no duplicates and no loss.

mod adapter;
mod binding;
mod kinds;
mod memory;
mod merge_base;
pub(crate) mod plan;

#[cfg(any(test, feature = "conformance"))]
#[cfg_attr(not(feature = "conformance"), allow(unreachable_pub, dead_code))]
pub mod conformance;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use adapter::{
    Adapter, AdapterError, BoxFuture, ChangeTracking, ColumnSpec, Fetched, RemoteColumn, RemoteRow,
    RemoteTable, RowError, RowOp, RowResult, TableSpec,
};
pub use binding::{AdapterBinding, BindingAdded, Direction};
pub use kinds::{AdapterKind, AdapterKinds, Connect, SettingSpec};
pub use memory::MemoryAdapter;

use crate::clock::now_ms;
use crate::error::{LookupError, WriteError};
use crate::identity::{Identity, IdentityError};
use crate::registry::{Query, Registry, Role};
use crate::replica::Replica;
use crate::schema::ConflictPolicy;
use crate::store::StoreError;
use crate::value::Value;
use plan::{Fields, LocalRec, Next};

/// Rows per write batch when neither the run nor the adapter says.
const DEFAULT_BATCH: usize = 500;

/// A sync run failed as a whole. Rows that fail alone are reported in
/// [`MirrorReport::failed`] instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// No binding of that name.
    #[error("no adapter binding named '{name}' in this replica")]
    NoBinding {
        /// The name asked for.
        name: String,
    },
    /// The binding's settings do not fit the registry or are unsafe.
    #[error("adapter binding '{binding}': {reason}")]
    BadBinding {
        /// The binding.
        binding: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// No adapter of the binding's kind is available here.
    #[error(
        "adapter binding '{binding}' is of kind '{kind}', which this program does not include (it has: {known}); pass an adapter of that kind to run_mirror"
    )]
    UnknownKind {
        /// The binding.
        binding: String,
        /// The kind it names.
        kind: String,
        /// The kinds there are.
        known: String,
    },
    /// The environment variable holding the binding's secret is not set.
    #[error(
        "adapter binding '{binding}' reads its secret from environment variable {var}, which is not set; set it and retry"
    )]
    MissingSecret {
        /// The binding.
        binding: String,
        /// The variable's name.
        var: String,
    },
    /// The binding's key may not write to the registry.
    #[error(
        "adapter binding '{binding}' cannot write to registry '{registry}': its key {key} is not a writer; an admin of the registry must make it one"
    )]
    NotWriter {
        /// The binding.
        binding: String,
        /// The registry.
        registry: String,
        /// The binding's key.
        key: String,
    },
    /// The run would delete more rows than the binding allows.
    #[error(
        "adapter binding '{binding}': this run would delete {deletes} of {total} rows (more than the limit of {limit}); check the plan with a dry run, then run again allowing deletes if that is intended"
    )]
    TooManyDeletes {
        /// The binding.
        binding: String,
        /// Deletes the run would make (both sides).
        deletes: u64,
        /// Rows bound.
        total: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The adapter failed.
    #[error("adapter binding '{binding}': {source}")]
    Adapter {
        /// The binding.
        binding: String,
        /// The adapter's error.
        #[source]
        source: AdapterError,
    },
    /// The registry was not found.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// A registry write failed as a whole.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The replica's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The binding's key file could not be read or written.
    #[error("adapter binding key: {0}")]
    Identity(#[source] IdentityError),
}

/// One side of a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Side {
    /// The registry.
    Local,
    /// The external table.
    Remote,
}

impl Side {
    /// `local` or `remote`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }

    fn place(self) -> &'static str {
        match self {
            Side::Local => "in the registry",
            Side::Remote => "in the remote table",
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }
}

impl std::str::FromStr for Side {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" | "registry" => Ok(Side::Local),
            "remote" => Ok(Side::Remote),
            _ => Err(format!("unknown side '{s}'; use local or remote")),
        }
    }
}

/// What happens to a row on one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// It is created.
    Create,
    /// Some fields change.
    Update,
    /// It is deleted.
    Delete,
}

impl Action {
    /// `create`, `update` or `delete`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// One field's change: from `old` to `new` (`None` = no value).
#[derive(Clone, Debug, PartialEq)]
pub struct FieldChange {
    /// The registry field.
    pub field: String,
    /// Its value before.
    pub old: Option<Value>,
    /// Its value after.
    pub new: Option<Value>,
}

/// A field (or a whole record) changed differently on both sides.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldConflict {
    /// The field, or `(record)` for a delete against an edit.
    pub field: String,
    /// The registry's value.
    pub local: Option<Value>,
    /// The remote value.
    pub remote: Option<Value>,
    /// The policy that settled it.
    pub policy: ConflictPolicy,
    /// The side whose value won; `None` when it stays open (manual).
    pub winner: Option<Side>,
    /// What happened, for record-level conflicts.
    pub note: String,
}

/// A remote row that breaks the registry's schema; it is skipped whole.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidRow {
    /// The remote row.
    pub remote_id: String,
    /// The bound record, if any.
    pub record: Option<String>,
    /// The offending field.
    pub field: String,
    /// Its value as text.
    pub value: String,
    /// The rule it breaks.
    pub reason: String,
}

/// The plan for one record.
#[derive(Clone, Debug, PartialEq)]
pub struct RowPlan {
    /// The record's id in the registry.
    pub record: String,
    /// The row's id in the remote table.
    pub remote_id: String,
    /// What happens in the registry, field by field.
    pub local: Option<(Action, Vec<FieldChange>)>,
    /// What happens in the remote table, field by field.
    pub remote: Option<(Action, Vec<FieldChange>)>,
    /// Fields changed on both sides, and how each was settled.
    pub conflicts: Vec<FieldConflict>,
    pub(crate) next: Next,
    /// A remote delete was left unapplied: the cursor must not move past it.
    pub(crate) hold: bool,
}

/// What a run does (or, in a dry run, would do).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MirrorPlan {
    /// The binding.
    pub binding: String,
    /// The direction of this run.
    pub direction: Direction,
    /// Records with writes or conflicts (records already in sync are left out).
    pub rows: Vec<RowPlan>,
    /// Remote rows skipped because they break the schema.
    pub invalid: Vec<InvalidRow>,
    /// How changes were detected.
    pub change_tracking: ChangeTracking,
    /// Deletes this plan makes, on both sides.
    pub deletes: u64,
    /// The delete limit for this run.
    pub delete_limit: u64,
}

impl MirrorPlan {
    /// Writes of `action` on `side`.
    pub fn count(&self, side: Side, action: Action) -> usize {
        self.rows
            .iter()
            .filter(|r| {
                let a = match side {
                    Side::Local => &r.local,
                    Side::Remote => &r.remote,
                };
                a.as_ref().is_some_and(|(a, _)| *a == action)
            })
            .count()
    }

    /// Conflicts left open (manual policy).
    pub fn open_conflicts(&self) -> usize {
        self.rows
            .iter()
            .flat_map(|r| &r.conflicts)
            .filter(|c| c.winner.is_none())
            .count()
    }

    /// Whether the delete guard stops this plan without `allow_deletes`.
    pub fn exceeds_delete_limit(&self) -> bool {
        self.deletes > self.delete_limit
    }

    /// The plan as JSON: per row, per side, fields old → new; conflicts;
    /// invalid rows; a summary.
    pub fn to_json(&self) -> serde_json::Value {
        let val = |v: &Option<Value>| v.as_ref().map_or(serde_json::Value::Null, Value::to_json);
        let mut changes = Vec::new();
        let mut conflicts = Vec::new();
        for row in &self.rows {
            for (side, act) in [(Side::Local, &row.local), (Side::Remote, &row.remote)] {
                if let Some((action, fields)) = act {
                    changes.push(serde_json::json!({
                        "record": row.record,
                        "remote_id": row.remote_id,
                        "side": side.name(),
                        "action": action.name(),
                        "fields": fields.iter().map(|f| serde_json::json!({
                            "field": f.field, "old": val(&f.old), "new": val(&f.new),
                        })).collect::<Vec<_>>(),
                    }));
                }
            }
            for c in &row.conflicts {
                conflicts.push(serde_json::json!({
                    "record": row.record,
                    "remote_id": row.remote_id,
                    "field": c.field,
                    "local": val(&c.local),
                    "remote": val(&c.remote),
                    "policy": c.policy.name(),
                    "winner": c.winner.map(Side::name),
                    "note": c.note,
                }));
            }
        }
        let invalid: Vec<_> = self
            .invalid
            .iter()
            .map(|i| {
                serde_json::json!({
                    "remote_id": i.remote_id, "record": i.record, "field": i.field,
                    "value": i.value, "reason": i.reason,
                })
            })
            .collect();
        let mut summary = serde_json::Map::new();
        for side in [Side::Local, Side::Remote] {
            for action in [Action::Create, Action::Update, Action::Delete] {
                summary.insert(
                    format!("{}_{}", side.name(), action.name()),
                    self.count(side, action).into(),
                );
            }
        }
        summary.insert("conflicts".into(), conflicts.len().into());
        summary.insert("open_conflicts".into(), self.open_conflicts().into());
        summary.insert("invalid".into(), self.invalid.len().into());
        serde_json::json!({
            "binding": self.binding,
            "direction": self.direction.name(),
            "change_tracking": serde_json::to_value(&self.change_tracking).unwrap_or_default(),
            "changes": changes,
            "conflicts": conflicts,
            "invalid": invalid,
            "deletes": self.deletes,
            "delete_limit": self.delete_limit,
            "summary": summary,
        })
    }
}

/// How to run a sync.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MirrorOptions {
    /// Which way to move data (within what the binding allows).
    pub direction: Direction,
    /// Plan only: write nothing to either side, move no merge base or cursor.
    pub dry_run: bool,
    /// Allow a run that deletes more than the binding's limit.
    pub allow_deletes: bool,
    /// Ignore the cursor and compare the whole table.
    pub full: bool,
    /// Settle open manual conflicts in favour of this side.
    pub take: Option<Side>,
    /// Rows per write batch on either side; `None` lets the adapter choose
    /// ([`Adapter::preferred_batch`], else 500).
    pub batch_size: Option<usize>,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            direction: Direction::Both,
            dry_run: false,
            allow_deletes: false,
            full: false,
            take: None,
            batch_size: None,
        }
    }
}

impl MirrorOptions {
    /// Both ways.
    pub fn sync() -> Self {
        MirrorOptions::default()
    }

    /// Registry → remote only.
    pub fn push() -> Self {
        MirrorOptions {
            direction: Direction::Push,
            ..MirrorOptions::default()
        }
    }

    /// Remote → registry only.
    pub fn pull() -> Self {
        MirrorOptions {
            direction: Direction::Pull,
            ..MirrorOptions::default()
        }
    }

    /// Plan only.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Allow more deletes than the limit.
    pub fn allow_deletes(mut self) -> Self {
        self.allow_deletes = true;
        self
    }

    /// Compare the whole table.
    pub fn full(mut self) -> Self {
        self.full = true;
        self
    }

    /// Settle manual conflicts in favour of `side`.
    pub fn take(mut self, side: Side) -> Self {
        self.take = Some(side);
        self
    }

    /// Sets the batch size (overriding the adapter's preference).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = Some(n.max(1));
        self
    }
}

/// One row whose writes failed; it is retried on the next run.
#[derive(Clone, Debug, PartialEq)]
pub struct RowFailure {
    /// The record.
    pub record: String,
    /// The remote row.
    pub remote_id: String,
    /// Which side refused the write.
    pub side: Side,
    /// Why.
    pub reason: String,
    /// Whether the same write may succeed when simply retried (a transient
    /// fault), as opposed to data that must be fixed first.
    pub retryable: bool,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MirrorReport {
    /// The plan (in a dry run, all that happened).
    pub plan: MirrorPlan,
    /// Whether anything was written.
    pub dry_run: bool,
    /// Rows whose writes all succeeded.
    pub applied: usize,
    /// Rows that failed; the next run retries them.
    pub failed: Vec<RowFailure>,
    /// Where the time went: stage name → seconds (`fetch`, `read_local`,
    /// `plan`, `apply_local`, `apply_remote`, `save`).
    pub timings: Vec<(&'static str, f64)>,
}

impl MirrorReport {
    /// The report as JSON (the plan, plus applied and failed rows).
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = self.plan.to_json();
        let obj = json.as_object_mut().expect("the plan is an object");
        obj.insert("dry_run".into(), self.dry_run.into());
        obj.insert("applied".into(), self.applied.into());
        obj.insert(
            "timings_s".into(),
            self.timings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        );
        obj.insert(
            "failed".into(),
            self.failed
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "record": f.record, "remote_id": f.remote_id,
                        "side": f.side.name(), "reason": f.reason,
                        "retryable": f.retryable,
                    })
                })
                .collect::<Vec<_>>()
                .into(),
        );
        json
    }
}

/// A stage of a run, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Reading remote rows.
    Fetch,
    /// Writing into the registry.
    ApplyLocal,
    /// Writing to the remote table.
    ApplyRemote,
}

impl Stage {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Fetch => "fetch",
            Stage::ApplyLocal => "registry",
            Stage::ApplyRemote => "remote",
        }
    }
}

/// Receives progress of a run (the CLI draws bars from it).
pub trait MirrorProgress: Send + Sync {
    /// A stage starts with `total` units of work (0 if unknown).
    fn stage(&self, stage: Stage, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
}

impl MirrorProgress for () {
    fn stage(&self, _: Stage, _: u64) {}
    fn advance(&self, _: u64) {}
}

impl Replica {
    /// Runs binding `name` once through `adapter`: a plan, then (unless
    /// `options.dry_run`) its writes on both sides.
    pub async fn run_mirror(
        &self,
        name: &str,
        adapter: &dyn Adapter,
        options: &MirrorOptions,
        progress: &dyn MirrorProgress,
    ) -> Result<MirrorReport, MirrorError> {
        let binding = self.binding(name)?.ok_or_else(|| MirrorError::NoBinding {
            name: name.to_owned(),
        })?;
        let registry = self.registry(&binding.registry)?;
        let identity = self.binding_identity(name)?;
        run(&registry, &binding, &identity, adapter, options, progress).await
    }
}

fn adapter_err(binding: &AdapterBinding) -> impl Fn(AdapterError) -> MirrorError + '_ {
    move |source| MirrorError::Adapter {
        binding: binding.name.clone(),
        source,
    }
}

async fn run(
    registry: &Registry,
    binding: &AdapterBinding,
    identity: &Identity,
    adapter: &dyn Adapter,
    options: &MirrorOptions,
    progress: &dyn MirrorProgress,
) -> Result<MirrorReport, MirrorError> {
    let direction = binding.direction.within(options.direction);
    let shared = registry.shared().clone();
    let (bound, cursor, saved_heads) = {
        let store = shared.store();
        let bound = merge_base::has_merge_bases(store.conn(), store.path(), &binding.name)?;
        let cursor = merge_base::cursor(store.conn(), store.path(), &binding.name)?;
        let heads = merge_base::local_heads(store.conn(), store.path(), &binding.name)?;
        (bound, cursor, heads)
    };
    if !options.dry_run && direction.pulls() {
        let key = identity.public_key();
        let can_write = registry
            .members()
            .iter()
            .any(|m| m.key == key && matches!(m.role, Role::Writer | Role::Admin));
        if !can_write {
            return Err(MirrorError::NotWriter {
                binding: binding.name.clone(),
                registry: binding.registry.clone(),
                key: key.to_string(),
            });
        }
    }

    // Fetch.
    progress.stage(Stage::Fetch, 0);
    let mut clock = Clock::default();
    let table = if options.dry_run {
        adapter.describe().await
    } else {
        adapter.prepare(false).await
    }
    .map_err(adapter_err(binding))?;
    if let ChangeTracking::FullCompare { reason } = &table.change_tracking {
        tracing::warn!(binding = %binding.name, %reason, "no change tracking: comparing the whole table");
    }
    let since = cursor.as_deref().filter(|_| !options.full && bound);
    let fetched = adapter.fetch(since).await.map_err(adapter_err(binding))?;
    progress.advance(fetched.rows.len() as u64 + fetched.deleted.len() as u64);
    clock.lap("fetch");

    // Diff, Validate, Resolve.
    let schema = registry.compiled_schema();
    let fields: Vec<String> = schema
        .schema
        .fields
        .iter()
        .map(|f| f.name.clone())
        .collect();
    let to_local = |r: crate::registry::Record| {
        let open = r
            .conflicted
            .iter()
            .filter(|f| schema.schema.policy_for(f) == ConflictPolicy::Manual)
            .cloned()
            .collect();
        let fields: Fields = r
            .fields
            .into_iter()
            .filter(|(k, _)| fields.contains(k))
            .collect();
        (
            r.id,
            LocalRec {
                fields,
                deleted: r.deleted.is_some(),
                open,
            },
        )
    };
    // The registry side: only the records changed since the last complete
    // run, when the remote side is incremental too and nothing was left
    // pending; otherwise every record.
    let start_heads = registry.heads();
    let touched = match (&saved_heads, fetched.complete, direction, options.full) {
        (Some(heads), false, Direction::Both, false) => registry.records_touched_since(heads),
        _ => None,
    };
    let (merge_bases, local, total) = match touched {
        Some(mut touched) => {
            // The records new remote rows would become must be read too:
            // an unrelated record may already hold such an id (the plan then
            // derives another one), and it must not be taken over.
            touched.extend(fetched.rows.iter().map(|r| plan::record_id_for(&r.id)));
            let remote_ids: BTreeSet<String> = fetched
                .rows
                .iter()
                .map(|r| r.id.clone())
                .chain(fetched.deleted.iter().cloned())
                .collect();
            let merge_bases = {
                let store = shared.store();
                merge_base::load_merge_bases_for(
                    store.conn(),
                    store.path(),
                    &binding.name,
                    &touched,
                    &remote_ids,
                )?
            };
            let local: BTreeMap<String, LocalRec> = touched
                .iter()
                .chain(merge_bases.keys())
                .filter_map(|id| registry.get(id))
                .map(to_local)
                .collect();
            // Counting every bound row is only worth it when the deletes
            // could exceed the fixed part of the limit.
            (merge_bases, local, None)
        }
        None => {
            let merge_bases = {
                let store = shared.store();
                merge_base::load_merge_bases(store.conn(), store.path(), &binding.name)?
            };
            let local: BTreeMap<String, LocalRec> = registry
                .list(&Query {
                    include_deleted: true,
                    ..Query::default()
                })
                .into_iter()
                .map(to_local)
                .collect();
            let live = local.values().filter(|l| !l.deleted).count();
            let total = merge_bases.len().max(live) as u64;
            (merge_bases, local, Some(total))
        }
    };
    let policy = |field: &str| {
        let field_policy = schema.schema.get(field).and_then(|d| d.conflict_policy);
        field_policy
            .or(binding.conflict_policy)
            .unwrap_or(schema.schema.conflict_policy)
    };
    let local_time = |record: &str, field: &str| registry.field_time(record, field);
    let unset_reads_as = adapter.unset_reads_as();
    clock.lap("read_local");
    let planned = plan::plan(&plan::Inputs {
        registry: &binding.registry,
        fields: &fields,
        schema: &schema,
        policy: &policy,
        direction,
        key_field: binding.key_field.as_deref(),
        merge_bases: &merge_bases,
        local: &local,
        fetched: &fetched,
        local_time: &local_time,
        take: options.take,
        unset_reads_as: &unset_reads_as,
    });
    let deletes = planned
        .rows
        .iter()
        .map(|r| {
            u64::from(matches!(r.local, Some((Action::Delete, _))))
                + u64::from(matches!(r.remote, Some((Action::Delete, _))))
        })
        .sum::<u64>();
    let total = match total {
        Some(total) => total,
        None if deletes > binding.max_deletes => {
            let store = shared.store();
            merge_base::merge_base_count(store.conn(), store.path(), &binding.name)? as u64
        }
        None => 0,
    };
    let delete_limit = binding
        .max_deletes
        .max((total as f64 * binding.max_delete_percent / 100.0).floor() as u64);
    let shown = planned
        .rows
        .iter()
        .filter(|r| r.local.is_some() || r.remote.is_some() || !r.conflicts.is_empty())
        .cloned()
        .collect();
    let mut plan = MirrorPlan {
        binding: binding.name.clone(),
        direction,
        rows: shown,
        invalid: planned.invalid,
        change_tracking: table.change_tracking,
        deletes,
        delete_limit,
    };
    clock.lap("plan");
    if options.dry_run {
        return Ok(MirrorReport {
            plan,
            dry_run: true,
            applied: 0,
            failed: Vec::new(),
            timings: clock.laps,
        });
    }
    if plan.exceeds_delete_limit() && !options.allow_deletes {
        return Err(MirrorError::TooManyDeletes {
            binding: binding.name.clone(),
            deletes,
            total,
            limit: delete_limit,
        });
    }

    // Apply.
    let batch_size = options
        .batch_size
        .or_else(|| adapter.preferred_batch())
        .unwrap_or(DEFAULT_BATCH)
        .max(1);
    let mut rows = planned.rows;
    let mut failed: HashMap<usize, RowFailure> = HashMap::new();
    let where_from = format!("{} table {}", adapter.system(), adapter.table());
    apply_local(
        registry,
        identity,
        &where_from,
        &rows,
        batch_size.min(100),
        &mut failed,
        progress,
    );
    clock.lap("apply_local");
    let pushed = apply_remote(
        binding,
        adapter,
        &mut rows,
        batch_size,
        &mut failed,
        progress,
    )
    .await?;
    clock.lap("apply_remote");

    // Merge bases of the rows that succeeded, the cursor and a journal entry,
    // in one transaction.
    let hold_cursor = planned.hold_cursor;
    // A pulled row that failed for a transient reason must be fetched
    // again: hold the cursor. One the registry refused (say, a unique
    // value taken) is reported and waits for its data to change, like an
    // invalid row, so it does not make every later run re-read the log.
    let pull_failed = failed
        .values()
        .any(|f| f.side == Side::Local && f.retryable);
    let now = now_ms();
    let mut applied = 0;
    {
        let mut store = shared.store();
        let tx = store.begin()?;
        for (i, row) in rows.iter().enumerate() {
            if failed.contains_key(&i) {
                continue;
            }
            if row.local.is_some() || row.remote.is_some() {
                applied += 1;
            }
            match &row.next {
                Next::Keep(merge_base) => merge_base::save_merge_base(
                    tx.conn(),
                    tx.path(),
                    &binding.name,
                    &row.record,
                    merge_base,
                    now,
                )?,
                Next::Drop => {
                    merge_base::drop_merge_base(tx.conn(), tx.path(), &binding.name, &row.record)?
                }
            }
        }
        if !pull_failed && !hold_cursor {
            merge_base::set_cursor(
                tx.conn(),
                tx.path(),
                &binding.name,
                fetched.cursor.as_deref(),
            )?;
        }
        // The next run may look only at records changed since this one
        // started if this run left nothing behind.
        let complete = direction == Direction::Both
            && failed.is_empty()
            && !hold_cursor
            && plan.open_conflicts() == 0;
        merge_base::set_local_heads(
            tx.conn(),
            tx.path(),
            &binding.name,
            complete.then_some(start_heads.as_slice()),
        )?;
        if pushed.total() > 0 {
            let detail = serde_json::json!({
                "binding": binding.name,
                "system": adapter.system(),
                "table": adapter.table(),
                "created": pushed.created,
                "updated": pushed.updated,
                "deleted": pushed.deleted,
                "rows": pushed.rows,
            });
            tx.journal(Some(&registry.id()), "pushed", &detail)?;
        }
        tx.commit()?;
    }
    let mut failed: Vec<(usize, RowFailure)> = failed.into_iter().collect();
    failed.sort_by_key(|(i, _)| *i);
    plan.rows.sort_by(|a, b| a.record.cmp(&b.record));
    clock.lap("save");
    Ok(MirrorReport {
        plan,
        dry_run: false,
        applied,
        failed: failed.into_iter().map(|(_, f)| f).collect(),
        timings: clock.laps,
    })
}

/// Stage timings of one run.
struct Clock {
    last: std::time::Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            last: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }
}

impl Clock {
    fn lap(&mut self, stage: &'static str) {
        let now = std::time::Instant::now();
        self.laps
            .push((stage, now.duration_since(self.last).as_secs_f64()));
        self.last = now;
    }
}

/// Writes remote changes into the registry, signed by the binding's key,
/// in batches; a batch that fails is retried row by row so one bad row
/// does not hold back the others.
fn apply_local(
    registry: &Registry,
    identity: &Identity,
    where_from: &str,
    rows: &[RowPlan],
    batch: usize,
    failed: &mut HashMap<usize, RowFailure>,
    progress: &dyn MirrorProgress,
) {
    let todo: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].local.is_some())
        .collect();
    progress.stage(Stage::ApplyLocal, todo.len() as u64);
    let write_one =
        |w: &mut crate::registry::Writer<'_>, row: &RowPlan| -> Result<(), WriteError> {
            let (action, changes) = row.local.as_ref().expect("filtered");
            match action {
                Action::Delete => w.delete(&row.record),
                Action::Create | Action::Update => {
                    let set: Vec<(String, Value)> = changes
                        .iter()
                        .filter_map(|c| Some((c.field.clone(), c.new.clone()?)))
                        .collect();
                    let unset: Vec<String> = changes
                        .iter()
                        .filter(|c| c.new.is_none())
                        .map(|c| c.field.clone())
                        .collect();
                    if !set.is_empty() || *action == Action::Create {
                        w.put(Some(&row.record), set)?;
                    }
                    if !unset.is_empty() {
                        w.unset(&row.record, unset)?;
                    }
                    Ok(())
                }
            }
        };
    let message = |chunk: &[usize]| {
        let ids: Vec<&str> = chunk.iter().map(|&i| rows[i].remote_id.as_str()).collect();
        format!("sync from {where_from}, rows {}", ids.join(", "))
    };
    for chunk in todo.chunks(batch.max(1)) {
        let whole = registry.write_as(identity, &message(chunk), |w| {
            chunk.iter().try_for_each(|&i| write_one(w, &rows[i]))
        });
        if whole.is_err() {
            for &i in chunk {
                if let Err(e) =
                    registry.write_as(identity, &message(&[i]), |w| write_one(w, &rows[i]))
                {
                    failed.insert(
                        i,
                        RowFailure {
                            record: rows[i].record.clone(),
                            remote_id: rows[i].remote_id.clone(),
                            side: Side::Local,
                            reason: e.to_string(),
                            retryable: matches!(e, WriteError::Store(_) | WriteError::Internal(_)),
                        },
                    );
                }
            }
        }
        progress.advance(chunk.len() as u64);
    }
}

#[derive(Default)]
struct Pushed {
    created: u64,
    updated: u64,
    deleted: u64,
    rows: Vec<String>,
}

impl Pushed {
    fn total(&self) -> u64 {
        self.created + self.updated + self.deleted
    }
}

/// Writes local changes to the remote in batches; per-row results.
async fn apply_remote(
    binding: &AdapterBinding,
    adapter: &dyn Adapter,
    rows: &mut [RowPlan],
    batch: usize,
    failed: &mut HashMap<usize, RowFailure>,
    progress: &dyn MirrorProgress,
) -> Result<Pushed, MirrorError> {
    let todo: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].remote.is_some() && !failed.contains_key(&i))
        .collect();
    progress.stage(Stage::ApplyRemote, todo.len() as u64);
    let mut pushed = Pushed::default();
    for chunk in todo.chunks(batch.max(1)) {
        let ops: Vec<RowOp> = chunk
            .iter()
            .map(|&i| {
                let row = &rows[i];
                let (action, changes) = row.remote.as_ref().expect("filtered");
                match action {
                    Action::Create => RowOp::Create {
                        id: row.remote_id.clone(),
                        fields: changes
                            .iter()
                            .filter_map(|c| Some((c.field.clone(), c.new.clone()?)))
                            .collect(),
                    },
                    Action::Update => RowOp::Update {
                        id: row.remote_id.clone(),
                        fields: changes
                            .iter()
                            .map(|c| (c.field.clone(), c.new.clone()))
                            .collect(),
                    },
                    Action::Delete => RowOp::Delete {
                        id: row.remote_id.clone(),
                    },
                }
            })
            .collect();
        let results = match adapter.apply(&ops).await {
            Ok(results) if results.len() == ops.len() => results,
            Ok(results) => {
                return Err(MirrorError::Adapter {
                    binding: binding.name.clone(),
                    source: AdapterError::Request {
                        system: adapter.system().to_owned(),
                        table: adapter.table().to_owned(),
                        action: "apply".into(),
                        reason: format!(
                            "returned {} results for {} writes (an adapter bug)",
                            results.len(),
                            ops.len()
                        ),
                    },
                });
            }
            Err(e) => {
                // Nothing of this batch is known to have landed: the rows
                // are retried next run (writes are idempotent upserts).
                for &i in chunk {
                    failed.insert(
                        i,
                        RowFailure {
                            record: rows[i].record.clone(),
                            remote_id: rows[i].remote_id.clone(),
                            side: Side::Remote,
                            reason: e.to_string(),
                            retryable: true,
                        },
                    );
                }
                progress.advance(chunk.len() as u64);
                continue;
            }
        };
        for (&i, result) in chunk.iter().zip(results) {
            match result {
                Ok(remote_id) => {
                    let row = &mut rows[i];
                    match row.remote.as_ref().map(|(a, _)| *a) {
                        Some(Action::Create) => pushed.created += 1,
                        Some(Action::Update) => pushed.updated += 1,
                        _ => pushed.deleted += 1,
                    }
                    if pushed.rows.len() < 1000 {
                        pushed.rows.push(remote_id.clone());
                    }
                    if let Next::Keep(merge_base) = &mut row.next {
                        merge_base.remote_id = remote_id.clone();
                    }
                    row.remote_id = remote_id;
                }
                Err(e) => {
                    failed.insert(
                        i,
                        RowFailure {
                            record: rows[i].record.clone(),
                            remote_id: rows[i].remote_id.clone(),
                            side: Side::Remote,
                            reason: e.message,
                            retryable: e.retryable,
                        },
                    );
                }
            }
        }
        progress.advance(chunk.len() as u64);
    }
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::memory::MemoryAdapter;
    use crate::schema::{FieldDef, FieldKind, Schema};

    fn heads_saved(replica: &Replica) -> Option<Vec<automerge::ChangeHash>> {
        let shared = replica.shared();
        let store = shared.store();
        merge_base::local_heads(store.conn(), store.path(), "m").unwrap()
    }

    /// After a run that left nothing behind, the next run reads only the
    /// records changed since (and still gets everything right); a run that
    /// leaves work behind makes the next one compare every record.
    #[tokio::test]
    async fn later_runs_read_only_what_changed_unless_work_was_left() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path().join("r.db")).unwrap();
        let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
        let reg = replica.create_registry("r", schema).unwrap();
        replica
            .add_binding(&AdapterBinding::new("m", "r", "memory", "t"))
            .unwrap();
        let table = MemoryAdapter::new("t");
        let adapter = table.another_client();
        for i in 0..20 {
            reg.put(Some(&format!("r{i}")), [("name", format!("n{i}"))])
                .unwrap();
        }
        let run = |o: MirrorOptions| {
            let (replica, adapter) = (replica.clone(), adapter.clone());
            async move { replica.run_mirror("m", &adapter, &o, &()).await.unwrap() }
        };
        run(MirrorOptions::sync()).await;
        assert_eq!(heads_saved(&replica), Some(reg.heads()));
        let touched = reg.records_touched_since(&reg.heads()).unwrap();
        assert!(touched.is_empty());

        reg.put(Some("r3"), [("name", "local edit")]).unwrap();
        table.update("r7", &[("name", Some("remote edit".into()))]);
        let saved = heads_saved(&replica).unwrap();
        assert_eq!(
            reg.records_touched_since(&saved)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["r3".to_owned()]
        );
        let report = run(MirrorOptions::sync()).await;
        assert_eq!(report.applied, 2);
        assert_eq!(table.row("r3").unwrap()["name"], Value::from("local edit"));
        assert_eq!(
            reg.get("r7").unwrap().get("name"),
            Some(&Value::from("remote edit"))
        );

        // A failed push leaves work behind: the next run compares everything.
        reg.put(Some("r4"), [("name", "will fail once")]).unwrap();
        table.fail_after(0);
        let report = run(MirrorOptions::sync()).await;
        assert_eq!(report.failed.len(), 1);
        assert_eq!(heads_saved(&replica), None);
        let report = run(MirrorOptions::sync()).await;
        assert!(report.failed.is_empty());
        assert_eq!(
            table.row("r4").unwrap()["name"],
            Value::from("will fail once")
        );
        assert!(heads_saved(&replica).is_some());
    }

    /// On a run that reads only what changed, a new remote row whose id an
    /// unrelated record already holds still becomes a record of its own:
    /// the existing record keeps its values and its row.
    #[tokio::test]
    async fn a_new_row_never_takes_over_an_unrelated_record_with_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path().join("r.db")).unwrap();
        let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
        let reg = replica.create_registry("r", schema).unwrap();
        replica
            .add_binding(&AdapterBinding::new("m", "r", "memory", "t").key_field("name"))
            .unwrap();
        let table = MemoryAdapter::new("t");
        let adapter = table.another_client();
        table.insert("7", [("name", "billing")]);
        reg.put(Some("A"), [("name", "billing")]).unwrap();
        let run = || {
            let (replica, adapter) = (replica.clone(), adapter.clone());
            async move {
                replica
                    .run_mirror("m", &adapter, &MirrorOptions::sync(), &())
                    .await
                    .unwrap()
            }
        };
        run().await; // A is matched to row 7 by name
        assert!(heads_saved(&replica).is_some());
        table.insert("A", [("name", "search")]);
        run().await;
        assert_eq!(
            reg.get("A").unwrap().get("name"),
            Some(&Value::from("billing"))
        );
        assert_eq!(reg.len(), 2, "row A became a record of its own");
        reg.put(Some("A"), [("name", "billing v2")]).unwrap();
        run().await;
        assert_eq!(table.row("7").unwrap()["name"], Value::from("billing v2"));
        assert_eq!(table.row("A").unwrap()["name"], Value::from("search"));
    }

    /// A pulled row the registry refuses (a unique value already taken) is
    /// reported, not retried forever: the cursor moves on.
    #[tokio::test]
    async fn a_refused_pull_is_reported_and_does_not_hold_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path().join("r.db")).unwrap();
        let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text).unique());
        replica.create_registry("r", schema).unwrap();
        replica
            .add_binding(&AdapterBinding::new("m", "r", "memory", "t"))
            .unwrap();
        let table = MemoryAdapter::new("t");
        let adapter = table.another_client();
        let options = MirrorOptions::sync();
        let run = || replica.run_mirror("m", &adapter, &options, &());
        table.insert("a", [("name", "same")]);
        run().await.unwrap();
        table.insert("b", [("name", "same")]);
        let report = run().await.unwrap();
        assert_eq!(report.failed.len(), 1);
        assert!(!report.failed[0].retryable);
        assert!(
            report.failed[0].reason.contains("unique"),
            "{}",
            report.failed[0].reason
        );
        let cursor = {
            let shared = replica.shared();
            let store = shared.store();
            merge_base::cursor(store.conn(), store.path(), "m").unwrap()
        };
        assert_eq!(
            cursor.as_deref(),
            Some("2"),
            "the cursor moved past the refused row"
        );
    }

    /// On a replica that is not an admin, binding says what an admin must
    /// run, and a sync refuses to write with the same instruction.
    #[tokio::test]
    async fn a_binding_on_a_non_admin_replica_says_what_an_admin_must_do() {
        let dir = tempfile::tempdir().unwrap();
        let admin = Replica::open(dir.path().join("a.db")).unwrap();
        let writer = Replica::open(dir.path().join("w.db")).unwrap();
        let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
        let reg = admin.create_registry("r", schema).unwrap();
        reg.set_member(writer.public_key(), crate::Role::Writer)
            .unwrap();
        writer.import(reg.export(&[]).unwrap()).unwrap();
        let added = writer
            .add_binding(&AdapterBinding::new("m", "r", "memory", "t"))
            .unwrap();
        assert!(!added.made_writer);
        let cmd = added.admin_must_run.expect("an instruction");
        assert_eq!(
            cmd,
            format!(
                "an admin of registry 'r' must make key {} a writer",
                added.key
            )
        );
        let table = MemoryAdapter::new("t");
        table.insert("x", [("name", "x")]);
        let err = writer
            .run_mirror("m", &table.another_client(), &MirrorOptions::sync(), &())
            .await
            .unwrap_err();
        assert!(matches!(err, MirrorError::NotWriter { .. }));
        assert!(
            err.to_string().contains(&added.key.to_string()),
            "the error names the key an admin must add: {err}"
        );
        // Once an admin adds the key, the writer's replica syncs.
        reg.set_member(added.key, crate::Role::Writer).unwrap();
        writer.import(reg.export(&[]).unwrap()).unwrap();
        writer
            .run_mirror("m", &table.another_client(), &MirrorOptions::sync(), &())
            .await
            .unwrap();
        assert!(writer.registry("r").unwrap().get("x").is_some());
    }

    /// A field with concurrent values left open in the registry (manual
    /// policy) is not pushed until someone resolves it; then it is.
    #[tokio::test]
    async fn open_registry_conflicts_are_not_pushed_until_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let schema = Schema::new()
            .field(FieldDef::new("name", FieldKind::Text))
            .conflict_policy(ConflictPolicy::Manual);
        let ra = a.create_registry("r", schema).unwrap();
        ra.set_member(b.public_key(), crate::Role::Writer).unwrap();
        a.add_binding(&AdapterBinding::new("m", "r", "memory", "t"))
            .unwrap();
        let table = MemoryAdapter::new("t");
        let adapter = table.another_client();
        let options = MirrorOptions::sync();
        ra.put(Some("x"), [("name", "x")]).unwrap();
        a.run_mirror("m", &adapter, &options, &()).await.unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        let rb = b.registry("r").unwrap();
        ra.put(Some("x"), [("name", "from a")]).unwrap();
        rb.put(Some("x"), [("name", "from b")]).unwrap();
        a.import(rb.export(&ra.heads()).unwrap()).unwrap();
        assert!(ra.get("x").unwrap().conflicted.contains("name"));

        let report = a.run_mirror("m", &adapter, &options, &()).await.unwrap();
        let c = &report.plan.rows[0].conflicts[0];
        assert_eq!((c.field.as_str(), c.winner), ("name", None));
        assert!(c.note.contains("resolve"), "{}", c.note);
        assert_eq!(
            table.row("x").unwrap()["name"],
            Value::from("x"),
            "not pushed"
        );

        ra.resolve("x", "name", "settled").unwrap();
        let report = a.run_mirror("m", &adapter, &options, &()).await.unwrap();
        assert_eq!(report.plan.open_conflicts(), 0);
        assert_eq!(table.row("x").unwrap()["name"], Value::from("settled"));
    }
}
