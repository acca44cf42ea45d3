//! One run of a binding, stage by stage: Fetch; Diff, Validate and Resolve
//! (the pure [`plan`] step, with the registry side read first); Apply, to
//! the registry and then to the remote; Save, where merge bases, the cursor
//! and a journal entry are written in one transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::merge_base::{StoredPending, StoredRow};
use super::plan::{self, Fields, LocalRec, MergeBase, Next, Planned};
use super::{
    Action, Adapter, AdapterBinding, AdapterError, ChangeTracking, Direction, Fetched, InvalidRow,
    MirrorError, MirrorOptions, MirrorPlan, MirrorProgress, MirrorReport, PendingState, RemoteRow,
    RemoteTable, RowFailure, RowOp, RowPlan, Side, Stage, merge_base,
};
use crate::clock::now_ms;
use crate::error::WriteError;
use crate::identity::Identity;
use crate::registry::{Query, Record, Registry, Role};
use crate::replica::Replica;
use crate::schema::{CompiledSchema, ConflictPolicy};
use crate::value::Value;
use automerge::ChangeHash;

/// Rows per write batch when neither the run nor the adapter says.
const DEFAULT_BATCH: usize = 500;

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
        let run = Run {
            replica: self,
            registry: &registry,
            direction: binding.direction.within(options.direction),
            binding: &binding,
            identity: &identity,
            adapter,
            options,
            progress,
        };
        // One run per binding at a time, across processes too: two runs
        // reading the same cursor and merge bases would write rows twice.
        // The lock goes with the run, and with its process if it dies.
        let _running = self.lock_binding(name)?;
        let (started_at, clock) = (crate::clock::now_ms(), std::time::Instant::now());
        let result = run.run().await;
        let record = match &result {
            Ok(report) => super::MirrorRun::from_report(started_at, clock.elapsed(), report),
            Err(e) => super::MirrorRun::failure(name, started_at, clock.elapsed(), &e.to_string()),
        };
        // The run's outcome stands whether or not it could be recorded.
        if let Err(e) = self.record_mirror_run(&record) {
            tracing::warn!(binding = name, error = %e, "could not record the mirror run");
        }
        result
    }
}

fn adapter_err(binding: &AdapterBinding) -> impl Fn(AdapterError) -> MirrorError + '_ {
    move |source| MirrorError::Adapter {
        binding: binding.name.clone(),
        source,
    }
}

/// One run: what it works on and how.
struct Run<'a> {
    replica: &'a Replica,
    registry: &'a Registry,
    binding: &'a AdapterBinding,
    /// The binding's key, which signs what the run writes to the registry.
    identity: &'a Identity,
    adapter: &'a dyn Adapter,
    options: &'a MirrorOptions,
    progress: &'a dyn MirrorProgress,
    /// The binding's direction within the one asked for.
    direction: Direction,
}

/// What the last runs left in the store for this binding.
struct Saved {
    /// Whether any record is bound (has a merge base).
    bound: bool,
    /// The remote's change cursor.
    cursor: Option<String>,
    /// The registry heads the last complete run started from.
    heads: Option<Vec<ChangeHash>>,
    /// Rows earlier runs left unsettled.
    pending: Vec<StoredPending>,
}

/// The registry side of a run, and the merge bases of its records.
struct LocalSide {
    /// The registry's heads before it was read.
    start_heads: Vec<ChangeHash>,
    merge_bases: HashMap<String, MergeBase>,
    local: BTreeMap<String, LocalRec>,
    /// Rows bound, when every record was read (else counted on demand).
    total: Option<u64>,
}

/// The delete guard's figures for a plan.
struct DeleteGuard {
    /// Deletes the plan makes, on both sides.
    deletes: u64,
    /// Rows bound (0 when not needed).
    total: u64,
    /// The limit in force.
    limit: u64,
}

/// The Apply stage's outcome.
struct Applied {
    /// Every planned row, with the remote ids the remote gave new rows.
    rows: Vec<RowPlan>,
    /// Rows whose writes failed, by index into `rows`.
    failed: HashMap<usize, RowFailure>,
    /// What was written to the remote, for the journal.
    pushed: Pushed,
    /// Rows whose remote writes were not made because the remote failed
    /// as a whole, by index into `rows`, and that failure.
    unwritten: HashSet<usize>,
    stopped: Option<AdapterError>,
}

impl Run<'_> {
    async fn run(&self) -> Result<MirrorReport, MirrorError> {
        let saved = self.saved_state()?;
        if !self.options.dry_run && self.direction.pulls() {
            self.check_writer()?;
        }
        let mut clock = Clock::default();
        let (table, mut fetched) = self.fetch(&saved).await?;
        retry_pending(&mut fetched, &saved.pending);
        clock.lap("fetch");

        let schema = self.registry.compiled_schema();
        let local = self.read_local(&schema, &saved, &fetched)?;
        clock.lap("read_local");
        let planned = self.plan(&schema, &local, &fetched);
        let guard = self.delete_guard(&planned.rows, local.total)?;
        let mut plan = self.mirror_plan(&planned, table.change_tracking, &guard);
        clock.lap("plan");
        if self.options.dry_run {
            return Ok(MirrorReport {
                plan,
                dry_run: true,
                applied: 0,
                failed: Vec::new(),
                pending: saved.pending.iter().map(StoredPending::public).collect(),
                timings: clock.laps,
            });
        }
        if plan.exceeds_delete_limit() && !self.options.allow_deletes {
            return Err(MirrorError::TooManyDeletes {
                binding: self.binding.name.clone(),
                deletes: guard.deletes,
                total: guard.total,
                limit: guard.limit,
            });
        }

        let mut applied = self.apply(planned.rows, &mut clock).await?;
        let pending = self.next_pending(&saved.pending, &applied, &planned.invalid, &fetched);
        let count = self.save(
            &applied,
            planned.hold_cursor,
            fetched.cursor.as_deref(),
            &local.start_heads,
            plan.open_conflicts(),
            &pending,
        )?;
        if let Some(source) = applied.stopped.take() {
            return Err(MirrorError::Stopped {
                binding: self.binding.name.clone(),
                applied: count,
                not_written: applied.unwritten.len(),
                source: Box::new(source),
            });
        }
        // The report shows what was applied: a failed row's writes are
        // listed with the failures, not counted with the changes.
        let failed_on: HashMap<&str, Side> = applied
            .failed
            .values()
            .map(|f| (f.record.as_str(), f.side))
            .collect();
        for row in &mut plan.rows {
            match failed_on.get(row.record.as_str()) {
                Some(Side::Local) => (row.local, row.remote) = (None, None),
                Some(Side::Remote) => row.remote = None,
                None => {}
            }
        }
        plan.rows
            .retain(|r| r.local.is_some() || r.remote.is_some() || !r.conflicts.is_empty());
        let mut failed: Vec<(usize, RowFailure)> = applied.failed.into_iter().collect();
        failed.sort_by_key(|(i, _)| *i);
        plan.rows.sort_by(|a, b| a.record.cmp(&b.record));
        clock.lap("save");
        Ok(MirrorReport {
            plan,
            dry_run: false,
            applied: count,
            failed: failed.into_iter().map(|(_, f)| f).collect(),
            pending: pending.iter().map(StoredPending::public).collect(),
            timings: clock.laps,
        })
    }

    /// The rows left unsettled after this run: those that failed or were
    /// invalid in it, and those an earlier run left that this run's
    /// direction did not retry (a pull's failures during a push).
    fn next_pending(
        &self,
        before: &[StoredPending],
        applied: &Applied,
        invalid: &[InvalidRow],
        fetched: &Fetched,
    ) -> Vec<StoredPending> {
        let now = now_ms();
        let since: HashMap<&str, i64> = before
            .iter()
            .map(|p| (p.remote_id.as_str(), p.since))
            .collect();
        let since = |id: &str| since.get(id).copied().unwrap_or(now);
        let raw: HashMap<&str, &RemoteRow> =
            fetched.rows.iter().map(|r| (r.id.as_str(), r)).collect();
        let deleted: HashSet<&str> = fetched.deleted.iter().map(String::as_str).collect();
        let as_fetched = |id: &str| {
            if deleted.contains(id) {
                Some(StoredRow::Deleted)
            } else {
                raw.get(id).map(|r| StoredRow::Present((*r).clone()))
            }
        };
        let mut out: BTreeMap<String, StoredPending> = BTreeMap::new();
        for p in before {
            let retried = match p.state {
                PendingState::Failed(Side::Local) => self.direction.pulls(),
                PendingState::Failed(Side::Remote) => self.direction.pushes(),
                _ => true,
            };
            if !retried {
                out.insert(p.remote_id.clone(), p.clone());
            }
        }
        for bad in invalid {
            let reason = if bad.field.is_empty() {
                bad.reason.clone()
            } else {
                format!("field {} = '{}': {}", bad.field, bad.value, bad.reason)
            };
            out.insert(
                bad.remote_id.clone(),
                StoredPending {
                    remote_id: bad.remote_id.clone(),
                    record: bad.record.clone(),
                    state: PendingState::Invalid,
                    reason,
                    retryable: false,
                    row: as_fetched(&bad.remote_id),
                    since: since(&bad.remote_id),
                },
            );
        }
        for f in applied.failed.values() {
            out.insert(
                f.remote_id.clone(),
                StoredPending {
                    remote_id: f.remote_id.clone(),
                    record: Some(f.record.clone()),
                    state: PendingState::Failed(f.side),
                    reason: f.reason.clone(),
                    retryable: f.retryable,
                    row: match f.side {
                        Side::Local => as_fetched(&f.remote_id),
                        Side::Remote => None,
                    },
                    since: since(&f.remote_id),
                },
            );
        }
        if let Some(stopped) = &applied.stopped {
            for &i in &applied.unwritten {
                let row = &applied.rows[i];
                out.insert(
                    row.remote_id.clone(),
                    StoredPending {
                        remote_id: row.remote_id.clone(),
                        record: Some(row.record.clone()),
                        state: PendingState::Failed(Side::Remote),
                        reason: format!("not written: the run stopped ({stopped})"),
                        retryable: true,
                        row: None,
                        since: since(&row.remote_id),
                    },
                );
            }
        }
        out.into_values().collect()
    }

    /// The binding's cursor, local heads and whether anything is bound.
    fn saved_state(&self) -> Result<Saved, MirrorError> {
        let name = &self.binding.name;
        let saved = self.replica.with_store(|store| {
            let (conn, path) = (store.conn(), store.path());
            Ok::<_, crate::store::StoreError>(Saved {
                bound: merge_base::has_merge_bases(conn, path, name)?,
                cursor: merge_base::cursor(conn, path, name)?,
                heads: merge_base::local_heads(conn, path, name)?,
                pending: merge_base::pending(conn, path, name)?,
            })
        })?;
        Ok(saved)
    }

    /// A run that pulls writes with the binding's key, which must be a
    /// writer of the registry.
    fn check_writer(&self) -> Result<(), MirrorError> {
        let key = self.identity.public_key();
        let can_write = self
            .registry
            .members()
            .iter()
            .any(|m| m.key == key && matches!(m.role, Role::Writer | Role::Admin));
        if can_write {
            return Ok(());
        }
        Err(MirrorError::NotWriter {
            binding: self.binding.name.clone(),
            registry: self.binding.registry.clone(),
            key: key.to_string(),
        })
    }

    /// Fetch: the remote table's description (prepared for writes unless
    /// this is a dry run) and its rows, all or those changed since the
    /// cursor.
    async fn fetch(&self, saved: &Saved) -> Result<(RemoteTable, Fetched), MirrorError> {
        let (binding, adapter) = (self.binding, self.adapter);
        self.progress.stage(Stage::Fetch, 0);
        let table = if self.options.dry_run {
            adapter.describe().await
        } else {
            adapter.prepare(false).await
        }
        .map_err(adapter_err(binding))?;
        if let ChangeTracking::FullCompare { reason } = &table.change_tracking {
            tracing::warn!(binding = %binding.name, %reason, "no change tracking: comparing the whole table");
        }
        let since = saved
            .cursor
            .as_deref()
            .filter(|_| !self.options.full && saved.bound);
        let fetched = adapter.fetch(since).await.map_err(adapter_err(binding))?;
        self.progress
            .advance(fetched.rows.len() as u64 + fetched.deleted.len() as u64);
        Ok((table, fetched))
    }

    /// The registry side: only the records changed since the last complete
    /// run, when the remote side is incremental too and nothing was left
    /// pending; otherwise every record.
    fn read_local(
        &self,
        schema: &CompiledSchema,
        saved: &Saved,
        fetched: &Fetched,
    ) -> Result<LocalSide, MirrorError> {
        let (registry, name) = (self.registry, self.binding.name.as_str());
        let start_heads = registry.heads();
        let touched = match (
            &saved.heads,
            fetched.complete,
            self.direction,
            self.options.full,
        ) {
            (Some(heads), false, Direction::Both, false) => registry.records_touched_since(heads),
            _ => None,
        };
        let to_local = |r: Record| local_rec(schema, r);
        let Some(mut touched) = touched else {
            let merge_bases = self.replica.with_store(|store| {
                merge_base::load_merge_bases(store.conn(), store.path(), name)
            })?;
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
            return Ok(LocalSide {
                start_heads,
                merge_bases,
                local,
                total: Some(total),
            });
        };
        // The records new remote rows would become must be read too:
        // an unrelated record may already hold such an id (the plan then
        // derives another one), and it must not be taken over. So must
        // the records of rows left pending.
        touched.extend(fetched.rows.iter().map(|r| plan::record_id_for(&r.id)));
        touched.extend(saved.pending.iter().filter_map(|p| p.record.clone()));
        let remote_ids: BTreeSet<String> = fetched
            .rows
            .iter()
            .map(|r| r.id.clone())
            .chain(fetched.deleted.iter().cloned())
            .collect();
        let merge_bases = self.replica.with_store(|store| {
            merge_base::load_merge_bases_for(
                store.conn(),
                store.path(),
                name,
                &touched,
                &remote_ids,
            )
        })?;
        let local: BTreeMap<String, LocalRec> = touched
            .iter()
            .chain(merge_bases.keys())
            .filter_map(|id| registry.get(id))
            .map(to_local)
            .collect();
        // Counting every bound row is only worth it when the deletes
        // could exceed the fixed part of the limit.
        Ok(LocalSide {
            start_heads,
            merge_bases,
            local,
            total: None,
        })
    }

    /// Diff, Validate, Resolve: both sides and the merge bases to a plan.
    fn plan(&self, schema: &CompiledSchema, local: &LocalSide, fetched: &Fetched) -> Planned {
        let binding = self.binding;
        let fields: Vec<String> = schema
            .schema
            .fields
            .iter()
            .map(|f| f.name.clone())
            .collect();
        let policy = |field: &str| {
            let field_policy = schema.schema.get(field).and_then(|d| d.conflict_policy);
            field_policy
                .or(binding.conflict_policy)
                .unwrap_or(schema.schema.conflict_policy)
        };
        let local_time = |record: &str, field: &str| self.registry.field_time(record, field);
        let unset_reads_as = self.adapter.unset_reads_as();
        let unique_holder = |field: &str, value: &Value| self.registry.unique_holder(field, value);
        plan::plan(&plan::Inputs {
            registry: &binding.registry,
            fields: &fields,
            schema,
            policy: &policy,
            direction: self.direction,
            key_field: binding.key_field.as_deref(),
            merge_bases: &local.merge_bases,
            local: &local.local,
            fetched,
            local_time: &local_time,
            take: self.options.take,
            unset_reads_as: &unset_reads_as,
            unique_holder: &unique_holder,
        })
    }

    /// How many deletes `rows` make, against how many bound rows and the
    /// binding's limit (`total`: rows bound, if already counted).
    fn delete_guard(
        &self,
        rows: &[RowPlan],
        total: Option<u64>,
    ) -> Result<DeleteGuard, MirrorError> {
        let binding = self.binding;
        let deletes = rows
            .iter()
            .map(|r| {
                u64::from(matches!(r.local, Some((Action::Delete, _))))
                    + u64::from(matches!(r.remote, Some((Action::Delete, _))))
            })
            .sum::<u64>();
        let total = match total {
            Some(total) => total,
            None if deletes > binding.max_deletes => {
                let count = self.replica.with_store(|store| {
                    merge_base::merge_base_count(store.conn(), store.path(), &binding.name)
                })?;
                count as u64
            }
            None => 0,
        };
        let limit = binding
            .max_deletes
            .max((total as f64 * binding.max_delete_percent / 100.0).floor() as u64);
        Ok(DeleteGuard {
            deletes,
            total,
            limit,
        })
    }

    /// The plan as reported: records already in sync are left out.
    fn mirror_plan(
        &self,
        planned: &Planned,
        change_tracking: ChangeTracking,
        guard: &DeleteGuard,
    ) -> MirrorPlan {
        let shown = planned
            .rows
            .iter()
            .filter(|r| r.local.is_some() || r.remote.is_some() || !r.conflicts.is_empty())
            .cloned()
            .collect();
        MirrorPlan {
            binding: self.binding.name.clone(),
            direction: self.direction,
            rows: shown,
            invalid: planned.invalid.clone(),
            change_tracking,
            deletes: guard.deletes,
            delete_limit: guard.limit,
        }
    }

    /// Apply: remote changes into the registry, then local changes to the
    /// remote, in batches.
    async fn apply(
        &self,
        mut rows: Vec<RowPlan>,
        clock: &mut Clock,
    ) -> Result<Applied, MirrorError> {
        let adapter = self.adapter;
        let batch_size = self
            .options
            .batch_size
            .or_else(|| adapter.preferred_batch())
            .unwrap_or(DEFAULT_BATCH)
            .max(1);
        let mut failed: HashMap<usize, RowFailure> = HashMap::new();
        let where_from = format!("{} table {}", adapter.system(), adapter.table());
        apply_local(
            self.registry,
            self.identity,
            &where_from,
            &rows,
            batch_size.min(100),
            &mut failed,
            self.progress,
        );
        clock.lap("apply_local");
        let (pushed, unwritten, stopped) = apply_remote(
            self.binding,
            adapter,
            &mut rows,
            batch_size,
            &mut failed,
            self.progress,
        )
        .await?;
        clock.lap("apply_remote");
        Ok(Applied {
            rows,
            failed,
            pushed,
            unwritten,
            stopped,
        })
    }

    /// Save: merge bases of the rows that succeeded, the cursor (`next`,
    /// unless held), the local heads, the rows left pending and a journal
    /// entry, in one transaction. Returns how many rows were applied.
    ///
    /// The cursor moves past rows that failed or were invalid: they are
    /// kept in `pending` with the remote row as fetched, and every later
    /// run retries them from there until they are applied or gone, so
    /// nothing is dropped and no run re-reads the whole change log.
    fn save(
        &self,
        applied: &Applied,
        hold_cursor: bool,
        next: Option<&str>,
        start_heads: &[ChangeHash],
        open_conflicts: usize,
        pending: &[StoredPending],
    ) -> Result<usize, MirrorError> {
        let (binding, adapter) = (self.binding, self.adapter);
        let Applied {
            rows,
            failed,
            pushed,
            unwritten,
            ..
        } = applied;
        let now = now_ms();
        self.replica.with_store(|store| {
            let mut applied = 0;
            let tx = store.begin()?;
            for (i, row) in rows.iter().enumerate() {
                if failed.contains_key(&i) || unwritten.contains(&i) {
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
                    Next::Drop => merge_base::drop_merge_base(
                        tx.conn(),
                        tx.path(),
                        &binding.name,
                        &row.record,
                    )?,
                }
            }
            if !hold_cursor {
                merge_base::set_cursor(tx.conn(), tx.path(), &binding.name, next)?;
            }
            merge_base::set_pending(tx.conn(), tx.path(), &binding.name, pending)?;
            // The next run may look only at records changed since this one
            // started if this run left nothing behind.
            let complete = self.direction == Direction::Both
                && failed.is_empty()
                && unwritten.is_empty()
                && !hold_cursor
                && open_conflicts == 0;
            merge_base::set_local_heads(
                tx.conn(),
                tx.path(),
                &binding.name,
                complete.then_some(start_heads),
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
                tx.journal(Some(&self.registry.id()), "pushed", &detail)?;
            }
            tx.commit()?;
            Ok(applied)
        })
    }
}

/// A registry record as the plan sees it: the mapped fields, whether it is
/// deleted, and its fields left open under the `manual` policy.
fn local_rec(schema: &CompiledSchema, r: Record) -> (String, LocalRec) {
    let open = r
        .conflicted
        .iter()
        .filter(|f| schema.schema.policy_for(f) == ConflictPolicy::Manual)
        .cloned()
        .collect();
    let fields: Fields = r
        .fields
        .into_iter()
        .filter(|(k, _)| schema.schema.get(k).is_some())
        .collect();
    let invalid = fields
        .iter()
        .filter_map(|(k, v)| {
            let rule = schema.check_value(k, v.clone()).err()?;
            Some((k.clone(), rule.to_string()))
        })
        .collect();
    (
        r.id,
        LocalRec {
            fields,
            deleted: r.deleted.is_some(),
            open,
            invalid,
        },
    )
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
                    if *action == Action::Create {
                        w.put_from_target(&row.record, set)?;
                    } else if !set.is_empty() {
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
            // Row by row, in passes while any row lands: a row may wait for
            // another to free a unique value first (b: y → z, then a: x → y).
            let mut left: Vec<usize> = chunk.to_vec();
            let mut errors: HashMap<usize, WriteError> = HashMap::new();
            loop {
                let before = left.len();
                left.retain(|&i| {
                    match registry.write_as(identity, &message(&[i]), |w| write_one(w, &rows[i])) {
                        Ok(()) => {
                            errors.remove(&i);
                            false
                        }
                        Err(e) => {
                            errors.insert(i, e);
                            true
                        }
                    }
                });
                if left.is_empty() || left.len() == before {
                    break;
                }
            }
            for (i, e) in errors {
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

/// What [`apply_remote`] did: the writes made, the rows not written when
/// the remote failed as a whole, and that failure.
type PushOutcome = (Pushed, HashSet<usize>, Option<AdapterError>);

/// Writes local changes to the remote in batches; per-row results. When
/// the remote fails as a whole (a lost connection), the writes stop there:
/// the rows not written are returned, to be retried by the next run.
async fn apply_remote(
    binding: &AdapterBinding,
    adapter: &dyn Adapter,
    rows: &mut [RowPlan],
    batch: usize,
    failed: &mut HashMap<usize, RowFailure>,
    progress: &dyn MirrorProgress,
) -> Result<PushOutcome, MirrorError> {
    let todo: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].remote.is_some() && !failed.contains_key(&i))
        .collect();
    progress.stage(Stage::ApplyRemote, todo.len() as u64);
    let mut pushed = Pushed::default();
    for (n, chunk) in todo.chunks(batch.max(1)).enumerate() {
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
                // Nothing of this batch is known to have landed, and the
                // remote failed as a whole: stop writing. This batch and
                // the rest are retried next run (writes are idempotent).
                let unwritten = todo[n * batch.max(1)..].iter().copied().collect();
                return Ok((pushed, unwritten, Some(e)));
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
    Ok((pushed, HashSet::new(), None))
}

/// Puts the rows earlier runs left pending back into an incremental fetch
/// (as they were last fetched), unless this fetch has them again or they
/// changed since: so they are checked and retried on every run.
fn retry_pending(fetched: &mut Fetched, pending: &[StoredPending]) {
    if fetched.complete {
        return;
    }
    let seen: HashSet<String> = fetched
        .rows
        .iter()
        .map(|r| r.id.clone())
        .chain(fetched.deleted.iter().cloned())
        .collect();
    for p in pending {
        if seen.contains(&p.remote_id) {
            continue;
        }
        match &p.row {
            Some(StoredRow::Present(row)) => fetched.rows.push(row.clone()),
            Some(StoredRow::Deleted) => fetched.deleted.push(p.remote_id.clone()),
            None => {}
        }
    }
}
