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
    Action, FieldChange, FieldConflict, InvalidRow, MirrorPlan, MirrorReport, RowFailure, RowPlan,
    Side,
};

use crate::error::{LookupError, WriteError};
use crate::identity::IdentityError;
use crate::store::StoreError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::memory::MemoryAdapter;
    use crate::replica::Replica;
    use crate::schema::{ConflictPolicy, FieldDef, FieldKind, Schema};
    use crate::value::Value;

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
    async fn rows_bring_their_ids_when_they_are_record_ids() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path().join("r.db")).unwrap();
        let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
        let reg = replica.create_registry("r", schema).unwrap();
        replica
            .add_binding(&AdapterBinding::new("m", "r", "memory", "t"))
            .unwrap();
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
        let cursor = replica
            .with_store(|store| merge_base::cursor(store.conn(), store.path(), "m"))
            .unwrap();
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
