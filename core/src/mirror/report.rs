//! What a run plans and what it did: rows and their field changes per
//! side, conflicts and how they were settled, invalid and failed rows.

use super::{ChangeTracking, Direction};
use crate::schema::ConflictPolicy;
use crate::value::Value;

use super::plan::Next;

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

    pub(crate) fn place(self) -> &'static str {
        match self {
            Side::Local => "in the registry",
            Side::Remote => "in the remote table",
        }
    }

    pub(crate) fn other(self) -> Side {
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

/// Why a row is pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PendingState {
    /// The remote row breaks the registry's schema: it is checked again
    /// on every run and applied once it is fixed (or the schema allows it).
    Invalid,
    /// A write on this side failed: it is retried on every run.
    Failed(Side),
}

impl PendingState {
    /// `invalid`, `local` or `remote` (the side whose write failed).
    pub fn name(self) -> &'static str {
        match self {
            PendingState::Invalid => "invalid",
            PendingState::Failed(side) => side.name(),
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "invalid" => Some(PendingState::Invalid),
            "local" => Some(PendingState::Failed(Side::Local)),
            "remote" => Some(PendingState::Failed(Side::Remote)),
            _ => None,
        }
    }
}

/// A row not yet applied: kept from run to run, retried and reported on
/// every run until it is applied or gone. The change cursor never drops it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PendingRow {
    /// The remote row.
    pub remote_id: String,
    /// The bound record, if there is one.
    pub record: Option<String>,
    /// Why it is pending.
    pub state: PendingState,
    /// What went wrong, as last seen, and what to do.
    pub reason: String,
    /// Whether simply running again may settle it (a transient fault), as
    /// opposed to data that must be fixed first.
    pub retryable: bool,
    /// When it first became pending (ms since the epoch).
    pub since: i64,
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
    /// Every row still not applied after this run (failed or invalid,
    /// in this run or an earlier one): the next run retries them.
    pub pending: Vec<PendingRow>,
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
        obj.insert(
            "pending".into(),
            self.pending
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "remote_id": p.remote_id, "record": p.record,
                        "state": p.state.name(), "reason": p.reason,
                        "retryable": p.retryable, "since": p.since,
                    })
                })
                .collect::<Vec<_>>()
                .into(),
        );
        if let Some(summary) = obj.get_mut("summary").and_then(|s| s.as_object_mut()) {
            summary.insert("applied".into(), self.applied.into());
            summary.insert("failed".into(), self.failed.len().into());
            summary.insert("pending".into(), self.pending.len().into());
        }
        json
    }
}
