//! The record of mirror runs: every run of a binding, however it was
//! started, with when, how long, how it ended and what it did. Services show
//! it (last runs, failures) and schedules read it.

use std::time::Duration;

use super::{MirrorError, MirrorReport};
use crate::error::StoreError;
use crate::replica::Replica;
use crate::store::MirrorRunRow;

/// Runs kept per binding; older ones are dropped.
const KEPT_RUNS: u32 = 200;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MirrorOutcome {
    /// Every planned row was applied.
    Ok,
    /// It ran, but some rows failed (they are retried next run).
    Partial,
    /// It stopped with an error (nothing past the error was applied).
    Failed,
    /// A dry run: planned, nothing written.
    DryRun,
}

impl MirrorOutcome {
    /// The outcome's name as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            MirrorOutcome::Ok => "ok",
            MirrorOutcome::Partial => "partial",
            MirrorOutcome::Failed => "failed",
            MirrorOutcome::DryRun => "dry-run",
        }
    }

    fn parse(name: &str) -> Self {
        match name {
            "ok" => MirrorOutcome::Ok,
            "partial" => MirrorOutcome::Partial,
            "dry-run" => MirrorOutcome::DryRun,
            _ => MirrorOutcome::Failed,
        }
    }
}

/// One run of a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorRun {
    /// The binding.
    pub binding: String,
    /// When it started (ms since the epoch).
    pub started_at: i64,
    /// How long it took.
    pub duration: Duration,
    /// How it ended.
    pub outcome: MirrorOutcome,
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

impl MirrorRun {
    /// The run a report describes.
    pub fn from_report(started_at: i64, duration: Duration, report: &MirrorReport) -> Self {
        let outcome = if report.dry_run {
            MirrorOutcome::DryRun
        } else if report.failed.is_empty() {
            MirrorOutcome::Ok
        } else {
            MirrorOutcome::Partial
        };
        let conflicts = report.plan.open_conflicts() as u64;
        MirrorRun {
            binding: report.plan.binding.clone(),
            started_at,
            duration,
            outcome,
            applied: report.applied as u64,
            failed: report.failed.len() as u64,
            invalid: report.plan.invalid.len() as u64,
            conflicts,
            error: None,
        }
    }

    /// A run of `binding` that stopped with `error`.
    pub fn failure(binding: &str, started_at: i64, duration: Duration, error: &str) -> Self {
        MirrorRun {
            binding: binding.to_owned(),
            started_at,
            duration,
            outcome: MirrorOutcome::Failed,
            applied: 0,
            failed: 0,
            invalid: 0,
            conflicts: 0,
            error: Some(error.to_owned()),
        }
    }

    /// The run as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "binding": self.binding,
            "started_at": self.started_at,
            "duration_ms": self.duration.as_millis() as u64,
            "outcome": self.outcome.name(),
            "applied": self.applied,
            "failed": self.failed,
            "invalid": self.invalid,
            "conflicts": self.conflicts,
            "error": self.error,
        })
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Replica {
    /// Records a run of a binding ([`Replica::run_mirror`] records its own;
    /// call this for a run that failed before it could start, such as a
    /// connection refused). The last 200 runs per binding are kept.
    pub fn record_mirror_run(&self, run: &MirrorRun) -> Result<(), StoreError> {
        let row = MirrorRunRow {
            binding: run.binding.clone(),
            started_at: run.started_at,
            duration_ms: i64::try_from(run.duration.as_millis()).unwrap_or(i64::MAX),
            outcome: run.outcome.name().to_owned(),
            applied: to_i64(run.applied),
            failed: to_i64(run.failed),
            invalid: to_i64(run.invalid),
            conflicts: to_i64(run.conflicts),
            error: run.error.clone(),
        };
        self.with_store(|store| store.save_mirror_run(&row, KEPT_RUNS))
    }

    /// The last `limit` runs of binding `name`, newest first.
    pub fn mirror_runs(&self, name: &str, limit: u32) -> Result<Vec<MirrorRun>, MirrorError> {
        let rows = self.with_store(|store| store.mirror_runs(name, limit))?;
        Ok(rows
            .into_iter()
            .map(|r| MirrorRun {
                binding: r.binding,
                started_at: r.started_at,
                duration: Duration::from_millis(u64::try_from(r.duration_ms).unwrap_or(0)),
                outcome: MirrorOutcome::parse(&r.outcome),
                applied: u64::try_from(r.applied).unwrap_or(0),
                failed: u64::try_from(r.failed).unwrap_or(0),
                invalid: u64::try_from(r.invalid).unwrap_or(0),
                conflicts: u64::try_from(r.conflicts).unwrap_or(0),
                error: r.error,
            })
            .collect())
    }
}
