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
mod options;
pub(crate) mod plan;
mod report;
mod run;
mod runs;

#[cfg(any(test, feature = "conformance"))]
#[cfg_attr(not(feature = "conformance"), allow(unreachable_pub, dead_code))]
pub mod conformance;

pub use adapter::{
    Adapter, AdapterError, BoxFuture, ChangeTracking, ColumnSpec, Fetched, RemoteColumn, RemoteRow,
    RemoteTable, RowError, RowOp, RowResult, TableSpec,
};
pub use binding::{AdapterBinding, BindingAdded, Direction};
pub use kinds::{AdapterKind, AdapterKinds, Connect, SettingSpec};
pub use memory::MemoryAdapter;
pub use options::{MirrorOptions, MirrorProgress, Stage};
pub use report::{
    Action, FieldChange, FieldConflict, InvalidRow, MirrorPlan, MirrorReport, PendingRow,
    PendingState, RowFailure, RowPlan, Side,
};
pub use runs::{MirrorOutcome, MirrorRun};

use crate::error::{LookupError, WriteError};
use crate::identity::IdentityError;
use crate::store::StoreError;

/// A sync run failed as a whole. Rows that fail alone are reported in
/// [`MirrorReport::failed`] instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// Another run of the binding is under way (in this process or another
    /// one using the same replica); nothing was done.
    #[error(
        "adapter binding '{binding}' is running now (in this or another process); run it again when that run has finished"
    )]
    Busy {
        /// The binding.
        binding: String,
    },
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
    /// The run stopped part-way because the remote system failed as a
    /// whole (a lost connection, say). The rows applied before it are
    /// kept; the rest stay pending and the next run retries them.
    #[error(
        "adapter binding '{binding}': the run stopped after applying {applied} rows: {source}; the {not_written} rows not written are retried by the next run"
    )]
    Stopped {
        /// The binding.
        binding: String,
        /// Rows applied before the run stopped.
        applied: usize,
        /// Rows whose writes were not made.
        not_written: usize,
        /// What failed.
        #[source]
        source: Box<AdapterError>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::memory::MemoryAdapter;
    use crate::replica::Replica;
    use crate::schema::{ConflictPolicy, FieldDef, FieldKind, Schema};
    use crate::value::Value;

    /// A replica with registry `r` of `schema`, bound as `m` to an
    /// in-memory table `t`.
    fn bound_to_memory(dir: &std::path::Path, schema: Schema) -> (Replica, crate::Registry) {
        let replica = Replica::open(dir.join("r.db")).unwrap();
        let reg = replica.create_registry("r", schema).unwrap();
        replica
            .add_binding(&AdapterBinding::new("m", "r", "memory", "t"))
            .unwrap();
        (replica, reg)
    }

    fn heads_saved(replica: &Replica) -> Option<Vec<automerge::ChangeHash>> {
        replica
            .with_store(|store| merge_base::local_heads(store.conn(), store.path(), "m").unwrap())
    }

    /// After a run that left nothing behind, the next run reads only the
    /// records changed since (and still gets everything right); a run that
    /// leaves work behind makes the next one compare every record.
    /// A value that breaks the schema (kept because it was valid as of its
    /// own dependencies: the schema tightened concurrently) is never
    /// pushed: new rows go without it, bound rows hold it as a conflict.
    #[tokio::test]
    async fn values_that_break_the_schema_are_never_pushed() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open(dir.path().join("a.db")).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let schema = |max: f64| {
            Schema::new()
                .field(FieldDef::new("name", FieldKind::Text))
                .field(FieldDef::new("port", FieldKind::Integer).range(None, Some(max)))
        };
        let ra = a.create_registry("r", schema(65535.0)).unwrap();
        ra.set_member(b.public_key(), crate::Role::Writer).unwrap();
        ra.put(Some("bound"), [("name", "bound")]).unwrap();
        a.add_binding(&AdapterBinding::new("m", "r", "memory", "t"))
            .unwrap();
        let table = MemoryAdapter::new("t");
        a.run_mirror("m", &table, &MirrorOptions::sync(), &())
            .await
            .unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        let rb = b.registry("r").unwrap();
        ra.set_schema(schema(1000.0)).unwrap();
        rb.put(
            Some("new"),
            [("name", Value::from("new")), ("port", 8080.into())],
        )
        .unwrap();
        rb.put(Some("bound"), [("port", 9090)]).unwrap();
        a.import(rb.export(&ra.heads()).unwrap()).unwrap();
        assert_eq!(ra.invalid_records().len(), 2);

        let report = a
            .run_mirror("m", &table, &MirrorOptions::sync(), &())
            .await
            .unwrap();
        assert_eq!(table.row("new").unwrap().get("port"), None);
        assert_eq!(table.row("new").unwrap()["name"], Value::from("new"));
        assert_eq!(table.row("bound").unwrap().get("port"), None);
        let held: Vec<_> = report
            .plan
            .rows
            .iter()
            .flat_map(|r| &r.conflicts)
            .filter(|c| c.note.contains("breaks the schema"))
            .collect();
        assert_eq!(held.len(), 1, "{:?}", report.plan.rows);
        assert_eq!(held[0].field, "port");
    }

    /// Rows keep their own ids as record ids when those are a record id's
    /// form (a UUID, or a name); any other id gets a derived `r-` id.
    #[tokio::test]
    async fn a_binding_runs_once_at_a_time_across_handles_and_processes() {
        let dir = tempfile::tempdir().unwrap();
        let (replica, reg) = bound_to_memory(
            dir.path(),
            Schema::new().field(FieldDef::new("name", FieldKind::Text)),
        );
        reg.put(None, [("name", "a")]).unwrap();
        let table = MemoryAdapter::new("t");
        // Another handle on the same file (as another process would open it)
        // holds the binding's run lock.
        let other = Replica::open(dir.path().join("r.db")).unwrap();
        let held = other.lock_binding("m").unwrap();
        let busy = replica
            .run_mirror("m", &table, &MirrorOptions::sync(), &())
            .await;
        assert!(matches!(busy, Err(MirrorError::Busy { .. })), "{busy:?}");
        assert_eq!(table.mutating_calls(), 0, "a refused run wrote nothing");
        assert!(replica.mirror_runs("m", 10).unwrap().is_empty());
        drop(held);
        let report = replica
            .run_mirror("m", &table, &MirrorOptions::sync(), &())
            .await
            .unwrap();
        assert_eq!(report.applied, 1);
    }

    #[tokio::test]
    async fn rows_bring_their_ids_when_they_are_record_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (replica, reg) = bound_to_memory(
            dir.path(),
            Schema::new().field(FieldDef::new("name", FieldKind::Text)),
        );
        let table = MemoryAdapter::new("t");
        let page = "0192f8a4-5c3e-7b1a-9d2e-3f4a5b6c7d8e";
        table.insert(page, [("name", "a page")]);
        table.insert("42", [("name", "a number")]);
        table.insert("../x y", [("name", "a path")]);
        let report = replica
            .run_mirror("m", &table, &MirrorOptions::sync(), &())
            .await
            .unwrap();
        assert_eq!(report.applied, 3, "{report:?}");
        assert_eq!(
            reg.get(page).unwrap().get("name"),
            Some(&Value::from("a page"))
        );
        assert_eq!(
            reg.get("42").unwrap().get("name"),
            Some(&Value::from("a number"))
        );
        let path = reg.list(&crate::registry::Query::all().filter("name", "a path"));
        assert!(
            path[0].id.starts_with("r-") && path[0].id.len() == 34,
            "{}",
            path[0].id
        );
        // Edits flow both ways on all three.
        reg.put(Some(&path[0].id), [("name", "edited")]).unwrap();
        replica
            .run_mirror("m", &table, &MirrorOptions::sync(), &())
            .await
            .unwrap();
        assert_eq!(table.row("../x y").unwrap()["name"], Value::from("edited"));
    }

    #[tokio::test]
    async fn later_runs_read_only_what_changed_unless_work_was_left() {
        let dir = tempfile::tempdir().unwrap();
        let (replica, reg) = bound_to_memory(
            dir.path(),
            Schema::new().field(FieldDef::new("name", FieldKind::Text)),
        );
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

    /// A pulled row that would take a unique value another record keeps is
    /// invalid in the plan (and the dry run), not a failure at write time;
    /// it is not dropped when the cursor moves on: it is reported on every
    /// run, and applied as soon as its value is free.
    #[tokio::test]
    async fn a_pull_that_takes_a_unique_value_waits_until_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let (replica, reg) = bound_to_memory(
            dir.path(),
            Schema::new().field(FieldDef::new("name", FieldKind::Text).unique()),
        );
        let table = MemoryAdapter::new("t");
        let adapter = table.another_client();
        let run = |options: MirrorOptions| {
            let (replica, adapter) = (replica.clone(), adapter.clone());
            async move {
                replica
                    .run_mirror("m", &adapter, &options, &())
                    .await
                    .unwrap()
            }
        };
        table.insert("a", [("name", "same")]);
        run(MirrorOptions::sync()).await;
        table.insert("b", [("name", "same")]);
        let dry = run(MirrorOptions::sync().dry_run()).await;
        assert_eq!(dry.plan.invalid.len(), 1, "{:?}", dry.plan);
        assert_eq!(dry.plan.count(Side::Local, Action::Create), 0);
        let shown = &dry.plan.invalid[0];
        assert_eq!(
            (shown.remote_id.as_str(), shown.field.as_str()),
            ("b", "name")
        );
        assert!(shown.reason.contains("unique"), "{}", shown.reason);
        for _ in 0..3 {
            let report = run(MirrorOptions::sync()).await;
            assert!(report.failed.is_empty(), "not a write failure: {report:?}");
            assert_eq!(report.plan.invalid.len(), 1, "reported on every run");
            assert_eq!(report.pending.len(), 1);
        }
        let cursor = replica
            .with_store(|store| merge_base::cursor(store.conn(), store.path(), "m"))
            .unwrap();
        assert_eq!(cursor.as_deref(), Some("2"), "the cursor moved on");
        let pending = replica.pending_rows("m").unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].state, PendingState::Invalid);
        // Free the value: the row is applied without being edited again.
        reg.put(Some("a"), [("name", "renamed")]).unwrap();
        let report = run(MirrorOptions::sync()).await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(report.plan.invalid.is_empty() && report.pending.is_empty());
        assert_eq!(
            reg.get("b").unwrap().get("name"),
            Some(&Value::from("same"))
        );
        assert_eq!(table.row("a").unwrap()["name"], Value::from("renamed"));
        assert!(replica.pending_rows("m").unwrap().is_empty());
    }

    /// Rules across records are checked in the plan: a remote edit that
    /// clears a required field is invalid, as is a new row taking a unique
    /// value; a swap of unique values between records is not. The report's
    /// changes count what was applied, not what was planned.
    #[tokio::test]
    async fn the_plan_checks_required_and_unique_and_the_report_counts_what_was_applied() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path().join("r.db")).unwrap();
        let schema = Schema::new()
            .field(FieldDef::new("name", FieldKind::Text).required().unique())
            .field(FieldDef::new("port", FieldKind::Integer));
        let reg = replica.create_registry("r", schema).unwrap();
        replica
            .add_binding(&AdapterBinding::new("m", "r", "memory", "t"))
            .unwrap();
        let table = MemoryAdapter::new("t");
        let adapter = table.another_client();
        let run = |options: MirrorOptions| {
            let (replica, adapter) = (replica.clone(), adapter.clone());
            async move {
                replica
                    .run_mirror("m", &adapter, &options, &())
                    .await
                    .unwrap()
            }
        };
        table.insert("a", [("name", "one")]);
        run(MirrorOptions::sync()).await;
        table.update("a", &[("name", None), ("port", Some(Value::Integer(1)))]);
        table.insert("b", [("name", "one")]);
        let dry = run(MirrorOptions::sync().dry_run()).await;
        let mut invalid: Vec<(&str, &str)> = dry
            .plan
            .invalid
            .iter()
            .map(|i| (i.remote_id.as_str(), i.reason.split(':').next().unwrap()))
            .collect();
        invalid.sort();
        assert_eq!(invalid, [("a", "required"), ("b", "unique")]);
        assert!(dry.plan.rows.is_empty(), "{:?}", dry.plan.rows);
        let report = run(MirrorOptions::sync()).await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(report.plan.invalid.len(), 2);
        assert_eq!(reg.get("a").unwrap().get("name"), Some(&Value::from("one")));

        reg.put(Some("c"), [("name", "c")]).unwrap();
        reg.put(Some("d"), [("name", "d")]).unwrap();
        table.refuse_writes_of("d", "the table refused it");
        let report = run(MirrorOptions::sync()).await;
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.plan.count(Side::Remote, Action::Create), 1, "c only");
        assert_eq!(report.plan.to_json()["summary"]["remote_create"], 1);
        assert_eq!(report.applied, 1);
    }

    /// A pulled row the registry refuses at write time (two rows swapping
    /// unique values: each waits for the other) is not dropped when the
    /// cursor moves on: it is retried and reported on every run from the
    /// row as fetched, and lands once the other row moves out of its way,
    /// in the same run as that edit.
    #[tokio::test]
    async fn a_pulled_row_refused_at_write_time_is_retried_every_run() {
        let dir = tempfile::tempdir().unwrap();
        let (replica, reg) = bound_to_memory(
            dir.path(),
            Schema::new().field(FieldDef::new("name", FieldKind::Text).unique()),
        );
        let table = MemoryAdapter::new("t");
        let adapter = table.another_client();
        let run = || {
            let (replica, adapter) = (replica.clone(), adapter.clone());
            async move {
                replica
                    .run_mirror("m", &adapter, &MirrorOptions::sync(), &())
                    .await
                    .unwrap()
            }
        };
        table.insert("a", [("name", "x")]);
        table.insert("b", [("name", "y")]);
        run().await;
        table.update("a", &[("name", Some(Value::from("y")))]);
        table.update("b", &[("name", Some(Value::from("x")))]);
        for _ in 0..3 {
            let report = run().await;
            let mut failed: Vec<(&str, Side)> = report
                .failed
                .iter()
                .map(|f| (f.remote_id.as_str(), f.side))
                .collect();
            failed.sort_by_key(|(id, _)| *id);
            assert_eq!(
                failed,
                [("a", Side::Local), ("b", Side::Local)],
                "reported on every run"
            );
            assert_eq!(report.pending.len(), 2);
        }
        // Another application moves b out of the way: both land.
        table.update("b", &[("name", Some(Value::from("w")))]);
        let report = run().await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(report.pending.is_empty());
        assert_eq!(reg.get("a").unwrap().get("name"), Some(&Value::from("y")));
        assert_eq!(reg.get("b").unwrap().get("name"), Some(&Value::from("w")));
    }

    /// A memory table whose server goes away after `ok` applies.
    struct Hangs {
        inner: MemoryAdapter,
        ok: std::sync::atomic::AtomicUsize,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Adapter for Hangs {
        fn system(&self) -> &str {
            self.inner.system()
        }
        fn table(&self) -> &str {
            self.inner.table()
        }
        fn prepare(&self, create: bool) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
            self.inner.prepare(create)
        }
        fn describe(&self) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
            self.inner.describe()
        }
        fn fetch<'a>(
            &'a self,
            since: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Fetched, AdapterError>> {
            self.inner.fetch(since)
        }
        fn apply<'a>(
            &'a self,
            ops: &'a [RowOp],
        ) -> BoxFuture<'a, Result<Vec<RowResult>, AdapterError>> {
            use std::sync::atomic::Ordering::SeqCst;
            self.calls.fetch_add(1, SeqCst);
            if self.ok.load(SeqCst) == 0 {
                return Box::pin(async {
                    Err(AdapterError::Request {
                        system: "memory".into(),
                        table: "t".into(),
                        action: "write rows".into(),
                        reason: "connection closed".into(),
                    })
                });
            }
            self.ok.fetch_sub(1, SeqCst);
            self.inner.apply(ops)
        }
    }

    /// A push whose remote fails as a whole (a lost connection) stops at
    /// the first failed batch with one error, instead of a failure per
    /// row; what landed is kept and the rest is written by the next run.
    #[tokio::test]
    async fn a_remote_that_fails_as_a_whole_stops_the_run_with_one_error() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = tempfile::tempdir().unwrap();
        let (replica, reg) = bound_to_memory(
            dir.path(),
            Schema::new().field(FieldDef::new("name", FieldKind::Text)),
        );
        let table = MemoryAdapter::new("t");
        for i in 0..30 {
            reg.put(Some(&format!("r{i:02}")), [("name", format!("n{i}"))])
                .unwrap();
        }
        let hangs = Hangs {
            inner: table.another_client(),
            ok: 2.into(),
            calls: 0.into(),
        };
        let err = replica
            .run_mirror("m", &hangs, &MirrorOptions::sync().batch_size(10), &())
            .await
            .unwrap_err();
        let shown = err.to_string();
        assert!(
            matches!(
                err,
                MirrorError::Stopped {
                    applied: 20,
                    not_written: 10,
                    ..
                }
            ),
            "{shown}"
        );
        assert_eq!(shown.matches("connection closed").count(), 1, "{shown}");
        assert!(shown.contains("retried by the next run"), "{shown}");
        assert_eq!(
            hangs.calls.load(SeqCst),
            3,
            "no batch tried after the failure"
        );
        assert_eq!(table.rows().len(), 20);
        let pending = replica.pending_rows("m").unwrap();
        assert_eq!(pending.len(), 10);
        assert!(
            pending
                .iter()
                .all(|p| p.state == PendingState::Failed(Side::Remote) && p.retryable)
        );
        hangs.ok.store(usize::MAX, SeqCst);
        let report = replica
            .run_mirror("m", &hangs, &MirrorOptions::sync(), &())
            .await
            .unwrap();
        assert_eq!(report.applied, 10);
        assert!(report.failed.is_empty() && report.pending.is_empty());
        assert_eq!(table.rows().len(), 30);
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
