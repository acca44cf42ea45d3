//! The adapter conformance suite: one set of behaviours every adapter must
//! show through the engine (in-memory, Postgres, Notion, Sheets, and
//! adapters written in Python or Node).
//!
//! An adapter's test crate implements [`RemoteFactory`] (a fresh, empty
//! remote table per test, plus the powers a test needs over it: writes by
//! "another application", reading every row, injecting a fault) and
//! invokes [`adapter_conformance_tests!`](crate::adapter_conformance_tests)
//! once, which defines one `#[tokio::test]` per case; a case added here
//! reaches every adapter. The cases panic on failure, like assertions.

use std::collections::BTreeMap;

use crate::AuditFilter;
use crate::mirror::{Action, AdapterBinding, MirrorError, MirrorOptions, MirrorReport, Side};
use crate::mirror::{Adapter, BoxFuture, TableSpec};
use crate::registry::{Query, Registry};
use crate::replica::Replica;
use crate::schema::{ConflictPolicy, FieldDef, FieldKind, Schema};
use crate::value::Value;

/// Row values by field name.
pub type Row = BTreeMap<String, Value>;

/// One fresh remote table, as a test sees it.
pub trait Remote: Send + Sync {
    /// A new adapter on this table (each is a separate client with its own
    /// origin, as bindings on two replicas would be).
    fn adapter(&self) -> BoxFuture<'_, Box<dyn Adapter>>;
    /// Another application inserts a row (missing fields are null).
    fn insert<'a>(&'a self, id: &'a str, fields: Vec<(&'a str, Value)>) -> BoxFuture<'a, ()>;
    /// Another application changes fields of a row (`None` sets null).
    fn update<'a>(
        &'a self,
        id: &'a str,
        fields: Vec<(&'a str, Option<Value>)>,
    ) -> BoxFuture<'a, ()>;
    /// Another application deletes a row.
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()>;
    /// Every row by id, values by field name as the remote holds them.
    fn rows(&self) -> BoxFuture<'_, BTreeMap<String, Row>>;
    /// The next apply of any adapter on this table fails every write after
    /// the first `n` (transiently).
    fn fail_after(&self, n: usize);
    /// How many mutating requests adapters have made on this table.
    fn writes(&self) -> BoxFuture<'_, u64>;
}

/// Makes a fresh, empty remote table laid out as `spec`.
pub trait RemoteFactory: Send + Sync {
    /// The kind recorded in bindings (`memory`, `postgres`).
    fn kind(&self) -> &str;
    /// A new table for one test.
    fn make<'a>(&'a self, spec: &'a TableSpec) -> BoxFuture<'a, Box<dyn Remote>>;
}

/// The registry schema every conformance test uses.
pub fn schema() -> Schema {
    Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("port", FieldKind::Integer).range(Some(1.0), Some(65535.0)))
        .field(FieldDef::new("price", FieldKind::Decimal))
        .field(FieldDef::new("active", FieldKind::Bool))
        .field(FieldDef::new("tier", FieldKind::Select).options(["gold", "silver"]))
        .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["a", "b", "c"]))
}

struct Setup {
    _dir: tempfile::TempDir,
    replica: Replica,
    registry: Registry,
    remote: Box<dyn Remote>,
    adapter: Box<dyn Adapter>,
}

impl Setup {
    async fn new(
        f: &dyn RemoteFactory,
        tune: impl FnOnce(AdapterBinding) -> AdapterBinding,
    ) -> Self {
        Setup::with_schema(f, schema(), tune).await
    }

    async fn with_schema(
        f: &dyn RemoteFactory,
        schema: Schema,
        tune: impl FnOnce(AdapterBinding) -> AdapterBinding,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let replica = Replica::open(dir.path().join("replica.db")).expect("open replica");
        let registry = replica
            .create_registry("services", schema.clone())
            .expect("create registry");
        let binding = tune(AdapterBinding::new(
            "mirror",
            "services",
            f.kind(),
            "services",
        ));
        let spec = binding.table_spec(&schema);
        let remote = f.make(&spec).await;
        let adapter = remote.adapter().await;
        let added = replica.add_binding(&binding).expect("add binding");
        assert!(
            added.made_writer,
            "the creator (an admin) makes the binding's key a writer"
        );
        Setup {
            _dir: dir,
            replica,
            registry,
            remote,
            adapter,
        }
    }

    async fn run(&self, options: MirrorOptions) -> Result<MirrorReport, MirrorError> {
        self.replica
            .run_mirror("mirror", self.adapter.as_ref(), &options, &())
            .await
    }

    async fn sync(&self) -> MirrorReport {
        let report = self.run(MirrorOptions::sync()).await.expect("sync");
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        report
    }

    /// A row without values a remote reads for "nothing written" (an
    /// unchecked Notion checkbox is `false` and no value alike).
    fn without_unset(&self, mut row: Row) -> Row {
        for (field, unset) in self.adapter.unset_reads_as() {
            if row.get(&field) == Some(&unset) {
                row.remove(&field);
            }
        }
        row
    }

    fn local_rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .registry
            .list(&Query::all())
            .into_iter()
            .map(|r| self.without_unset(r.fields))
            .collect();
        rows.sort();
        rows
    }

    /// The remote rows in the registry's canonical form.
    async fn remote_rows(&self) -> Vec<Row> {
        let schema = self.registry.compiled_schema();
        let mut rows: Vec<Row> = self
            .remote
            .rows()
            .await
            .into_values()
            .map(|row| {
                self.without_unset(
                    row.into_iter()
                        .filter_map(|(k, v)| {
                            let v = schema.check_value(&k, v.clone()).unwrap_or(v);
                            schema.schema.get(&k).map(|_| (k, v))
                        })
                        .collect(),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    async fn assert_mirrored(&self) {
        assert_eq!(
            self.local_rows(),
            self.remote_rows().await,
            "registry and remote table differ"
        );
    }
}

/// Creates, updates and deletes travel both ways; what comes in from the
/// remote is signed by the binding's key and names the system, table and row.
pub async fn create_update_delete_both_ways(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b).await;
    let reg = &s.registry;
    reg.put(
        Some("billing"),
        [
            ("name", Value::from("billing")),
            ("port", 8080.into()),
            ("price", Value::Decimal("12.5".into())),
            ("active", true.into()),
            ("tier", "gold".into()),
            ("tags", ["a", "b"].into()),
        ],
    )
    .unwrap();
    reg.put(Some("search"), [("name", "search")]).unwrap();
    let report = s.sync().await;
    assert_eq!(report.plan.count(Side::Remote, Action::Create), 2);
    s.assert_mirrored().await;

    s.remote
        .insert(
            "ledger",
            vec![("name", "ledger".into()), ("port", 9000.into())],
        )
        .await;
    let report = s.sync().await;
    assert_eq!(report.plan.count(Side::Local, Action::Create), 1);
    let ledger = reg.get("ledger").expect("the remote row became a record");
    assert_eq!(ledger.get("port"), Some(&Value::Integer(9000)));
    let key = s.replica.binding_identity("mirror").unwrap().public_key();
    let audit = reg.audit(&AuditFilter::all().record("ledger")).unwrap();
    let last = audit.last().expect("an audit entry");
    assert_eq!(last.author, key, "signed by the binding's own key");
    assert_ne!(key, s.replica.public_key());
    let message = last.message.clone().unwrap_or_default();
    assert!(
        message.contains(s.adapter.system())
            && message.contains(s.adapter.table())
            && message.contains("ledger"),
        "the change message names the source system, table and row: {message}"
    );
    assert!(
        s.replica.verify(None).is_ok(),
        "the binding's changes verify"
    );

    reg.put(Some("billing"), [("port", 8081)]).unwrap();
    s.remote
        .update("search", vec![("port", Some(7000.into()))])
        .await;
    let report = s.sync().await;
    assert_eq!(report.plan.count(Side::Remote, Action::Update), 1);
    assert_eq!(report.plan.count(Side::Local, Action::Update), 1);
    assert_eq!(
        reg.get("search").unwrap().get("port"),
        Some(&Value::Integer(7000))
    );
    s.assert_mirrored().await;

    // Clearing a field travels as a null.
    reg.unset("billing", ["tier"]).unwrap();
    s.sync().await;
    s.assert_mirrored().await;

    reg.delete("billing").unwrap();
    s.remote.delete("ledger").await;
    let report = s.sync().await;
    assert_eq!(report.plan.count(Side::Remote, Action::Delete), 1);
    assert_eq!(report.plan.count(Side::Local, Action::Delete), 1);
    assert!(reg.get("ledger").unwrap().deleted.is_some());
    assert_eq!(reg.len(), 1);
    s.assert_mirrored().await;
}

/// Edits to different fields of one record on both sides both survive.
pub async fn three_way_merge_keeps_both_sides_edits(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b).await;
    s.registry
        .put(
            Some("svc"),
            [("name", Value::from("svc")), ("port", 80.into())],
        )
        .unwrap();
    s.sync().await;
    s.registry.put(Some("svc"), [("port", 81)]).unwrap();
    s.remote
        .update("svc", vec![("tier", Some("silver".into()))])
        .await;
    let report = s.sync().await;
    assert!(
        report.plan.rows.iter().all(|r| r.conflicts.is_empty()),
        "no conflict"
    );
    let rec = s.registry.get("svc").unwrap();
    assert_eq!(rec.get("port"), Some(&Value::Integer(81)));
    assert_eq!(rec.get("tier"), Some(&Value::from("silver")));
    s.assert_mirrored().await;
}

/// A field changed differently on both sides is settled by the policy
/// (`manual` leaves it open and reported until a side is taken).
pub async fn conflicts_follow_the_policy(f: &dyn RemoteFactory) {
    for policy in [
        ConflictPolicy::Hash,
        ConflictPolicy::Automerge,
        ConflictPolicy::LastWriteWins,
        ConflictPolicy::Manual,
    ] {
        let s = Setup::with_schema(f, schema().conflict_policy(policy), |b| b).await;
        s.registry
            .put(
                Some("svc"),
                [("name", Value::from("svc")), ("port", 80.into())],
            )
            .unwrap();
        s.sync().await;
        s.registry.put(Some("svc"), [("port", 1)]).unwrap();
        // The remote edit is the later one (for last-write-wins).
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.remote.update("svc", vec![("port", Some(2.into()))]).await;
        let report = s.sync().await;
        let conflicts: Vec<_> = report.plan.rows.iter().flat_map(|r| &r.conflicts).collect();
        assert_eq!(conflicts.len(), 1, "{policy}: one conflict reported");
        let c = conflicts[0];
        assert_eq!((c.field.as_str(), c.policy), ("port", policy));
        assert_eq!(c.local, Some(Value::Integer(1)));
        assert_eq!(c.remote, Some(Value::Integer(2)));
        let port = |r: &Row| r.get("port").cloned();
        match policy {
            ConflictPolicy::Manual => {
                assert_eq!(c.winner, None, "manual leaves it open");
                assert_eq!(
                    port(&s.registry.get("svc").unwrap().fields),
                    Some(Value::Integer(1))
                );
                assert_eq!(port(&s.remote_rows().await[0]), Some(Value::Integer(2)));
                // Still open next time, then settled by taking a side.
                let again = s.sync().await;
                assert_eq!(again.plan.open_conflicts(), 1);
                let settled = s
                    .run(MirrorOptions::sync().take(Side::Local))
                    .await
                    .unwrap();
                assert_eq!(settled.plan.open_conflicts(), 0);
                assert_eq!(port(&s.remote_rows().await[0]), Some(Value::Integer(1)));
            }
            ConflictPolicy::LastWriteWins => {
                assert_eq!(
                    c.winner,
                    Some(Side::Remote),
                    "the later (remote) write wins"
                );
                assert_eq!(
                    port(&s.registry.get("svc").unwrap().fields),
                    Some(Value::Integer(2))
                );
            }
            _ => {
                // The lower content hash wins, whichever side it is on.
                let (local, remote) = (Value::Integer(1), Value::Integer(2));
                let local_wins = local.content_hash() <= remote.content_hash();
                let want = if local_wins { 1 } else { 2 };
                assert_eq!(
                    c.winner,
                    Some(if local_wins {
                        Side::Local
                    } else {
                        Side::Remote
                    })
                );
                assert_eq!(
                    port(&s.registry.get("svc").unwrap().fields),
                    Some(Value::Integer(want))
                );
            }
        }
        s.assert_mirrored().await;
        let quiet = s.sync().await;
        assert!(
            quiet.plan.rows.is_empty(),
            "{policy}: settled conflicts stay settled"
        );
    }
}

/// Remote rows that break the schema are reported and skipped whole; the
/// valid rows of the same run are applied.
pub async fn invalid_remote_rows_are_skipped(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b).await;
    s.registry
        .put(
            Some("svc"),
            [("name", Value::from("svc")), ("port", 80.into())],
        )
        .unwrap();
    s.sync().await;
    s.remote
        .insert(
            "bad-port",
            vec![("name", "x".into()), ("port", 70000.into())],
        )
        .await;
    s.remote.insert("no-name", vec![("port", 10.into())]).await;
    s.remote.insert("good", vec![("name", "good".into())]).await;
    // An invalid edit of a bound row leaves the whole record as it was.
    s.remote
        .update(
            "svc",
            vec![("port", Some(0.into())), ("tier", Some("gold".into()))],
        )
        .await;
    let report = s.sync().await;
    let mut bad: Vec<(&str, &str)> = report
        .plan
        .invalid
        .iter()
        .map(|i| (i.remote_id.as_str(), i.field.as_str()))
        .collect();
    bad.sort();
    assert_eq!(
        bad,
        vec![("bad-port", "port"), ("no-name", "name"), ("svc", "port")]
    );
    assert!(report.plan.invalid.iter().all(|i| !i.reason.is_empty()));
    assert!(s.registry.get("bad-port").is_none() && s.registry.get("no-name").is_none());
    assert!(s.registry.get("good").is_some());
    let svc = s.registry.get("svc").unwrap();
    assert_eq!(svc.get("port"), Some(&Value::Integer(80)));
    assert_eq!(svc.get("tier"), None, "not half-applied");
}

/// A dry run reports exactly what would happen and writes nothing to
/// either side, nor moves a merge base or cursor.
pub async fn dry_run_writes_nothing(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b).await;
    for name in ["a", "b", "c"] {
        s.registry
            .put(
                Some(name),
                [("name", Value::from(name)), ("port", 80.into())],
            )
            .unwrap();
    }
    s.sync().await;
    s.registry.put(Some("a"), [("port", 81)]).unwrap();
    s.registry.put(Some("d"), [("name", "d")]).unwrap();
    s.remote.update("b", vec![("port", Some(82.into()))]).await;
    s.remote.delete("c").await;
    s.remote.insert("e", vec![("name", "e".into())]).await;
    let (heads, writes, remote) = (
        s.registry.heads(),
        s.remote.writes().await,
        s.remote.rows().await,
    );

    for _ in 0..2 {
        let report = s.run(MirrorOptions::sync().dry_run()).await.unwrap();
        assert!(report.dry_run);
        let plan = &report.plan;
        assert_eq!(plan.count(Side::Remote, Action::Update), 1);
        assert_eq!(plan.count(Side::Remote, Action::Create), 1);
        assert_eq!(plan.count(Side::Local, Action::Update), 1);
        assert_eq!(plan.count(Side::Local, Action::Delete), 1);
        assert_eq!(plan.count(Side::Local, Action::Create), 1);
        let a = plan.rows.iter().find(|r| r.record == "a").unwrap();
        let (_, fields) = a.remote.as_ref().unwrap();
        assert_eq!(fields[0].field, "port");
        assert_eq!(
            (fields[0].old.clone(), fields[0].new.clone()),
            (Some(80.into()), Some(81.into()))
        );
        let json = plan.to_json();
        assert_eq!(json["summary"]["remote_update"], 1);
        assert_eq!(s.registry.heads(), heads, "nothing written to the registry");
        assert_eq!(
            s.remote.writes().await,
            writes,
            "no write reached the remote"
        );
        assert_eq!(s.remote.rows().await, remote);
    }
    // The real run then does all of it.
    let report = s.sync().await;
    assert_eq!(report.applied, 5);
    s.assert_mirrored().await;
}

/// A run that fails mid-batch resumes: the next run finishes the work
/// with no duplicate and no loss.
pub async fn resume_after_failure_mid_batch(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b).await;
    for i in 0..10 {
        s.registry
            .put(
                Some(&format!("r{i:02}")),
                [
                    ("name", Value::from(format!("n{i}"))),
                    ("port", (i + 1).into()),
                ],
            )
            .unwrap();
    }
    s.remote.fail_after(4);
    let report = s.run(MirrorOptions::sync().batch_size(6)).await.unwrap();
    assert!(!report.failed.is_empty(), "the injected fault is reported");
    assert!(
        report
            .failed
            .iter()
            .all(|f| f.side == Side::Remote && !f.reason.is_empty())
    );
    assert!(s.remote.rows().await.len() < 10);
    let report = s.sync().await;
    assert_eq!(
        report.plan.count(Side::Remote, Action::Create),
        report.plan.rows.len()
    );
    assert_eq!(s.remote.rows().await.len(), 10, "every row once");
    assert_eq!(s.registry.len(), 10, "nothing echoed back as a duplicate");
    s.assert_mirrored().await;
    assert!(s.sync().await.plan.rows.is_empty());
}

/// What a sync writes is not fetched back as a change (no echo), and a
/// second run with nothing new does nothing.
pub async fn no_echo(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b).await;
    s.registry.put(Some("a"), [("name", "a")]).unwrap();
    s.remote.insert("b", vec![("name", "b".into())]).await;
    s.sync().await;
    let (changes, writes) = (s.registry.change_count(), s.remote.writes().await);
    for _ in 0..2 {
        let report = s.sync().await;
        assert!(report.plan.rows.is_empty(), "{:?}", report.plan.rows);
    }
    assert_eq!(s.registry.change_count(), changes);
    assert_eq!(s.remote.writes().await, writes);
}

/// Binding an existing table to an existing registry matches records to
/// rows by the key field instead of duplicating them.
pub async fn first_sync_matches_by_key(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b.key_field("name")).await;
    for (id, name, port) in [
        ("l1", "billing", 80),
        ("l2", "search", 81),
        ("l3", "local-only", 82),
    ] {
        s.registry
            .put(
                Some(id),
                [("name", Value::from(name)), ("port", port.into())],
            )
            .unwrap();
    }
    s.remote
        .insert("p1", vec![("name", "billing".into()), ("port", 80.into())])
        .await;
    s.remote
        .insert("p2", vec![("name", "search".into()), ("port", 91.into())])
        .await;
    s.remote
        .insert("p3", vec![("name", "remote-only".into())])
        .await;
    let report = s.sync().await;
    assert_eq!(report.plan.count(Side::Local, Action::Create), 1);
    assert_eq!(report.plan.count(Side::Remote, Action::Create), 1);
    assert_eq!(s.registry.len(), 4, "matched, not duplicated");
    assert_eq!(s.remote.rows().await.len(), 4);
    // The matched pair with different ports is a conflict, settled once.
    let search = report.plan.rows.iter().find(|r| r.record == "l2").unwrap();
    assert_eq!(search.remote_id, "p2");
    assert_eq!(search.conflicts.len(), 1);
    s.assert_mirrored().await;
    assert!(s.sync().await.plan.rows.is_empty());
}

/// A run that would delete more than the limit (default: 10 rows or 10 %,
/// whichever is more) stops until deletes are allowed.
pub async fn delete_guard_stops_bulk_deletes(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b).await;
    for i in 0..30 {
        s.registry
            .put(
                Some(&format!("r{i:02}")),
                [("name", Value::from(format!("n{i}")))],
            )
            .unwrap();
    }
    s.sync().await;
    for i in 0..12 {
        s.remote.delete(&format!("r{i:02}")).await;
    }
    let heads = s.registry.heads();
    let err = s.run(MirrorOptions::sync()).await.unwrap_err();
    match &err {
        MirrorError::TooManyDeletes { deletes, limit, .. } => {
            assert_eq!((*deletes, *limit), (12, 10));
        }
        other => panic!("expected the delete guard, got {other}"),
    }
    assert!(err.to_string().contains("allowing deletes"), "{err}");
    assert_eq!(s.registry.heads(), heads, "nothing applied");
    assert_eq!(s.registry.len(), 30);
    let dry = s.run(MirrorOptions::sync().dry_run()).await.unwrap();
    assert!(dry.plan.exceeds_delete_limit());
    s.run(MirrorOptions::sync().allow_deletes()).await.unwrap();
    assert_eq!(s.registry.len(), 18);
    s.assert_mirrored().await;
}

/// `push` only writes to the remote and `pull` only to the registry; what
/// one direction leaves is picked up by the other later.
pub async fn push_and_pull_move_one_way(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b).await;
    s.registry.put(Some("a"), [("name", "a")]).unwrap();
    s.remote.insert("b", vec![("name", "b".into())]).await;
    let heads = s.registry.heads();
    s.run(MirrorOptions::push()).await.unwrap();
    assert_eq!(s.registry.heads(), heads, "push wrote nothing locally");
    assert_eq!(s.remote.rows().await.len(), 2);
    s.run(MirrorOptions::pull()).await.unwrap();
    assert!(s.registry.get("b").is_some());
    s.assert_mirrored().await;
    // A delete a push leaves behind is still there for the next pull.
    s.remote.delete("b").await;
    s.run(MirrorOptions::push()).await.unwrap();
    assert!(
        s.registry.get("b").unwrap().deleted.is_none(),
        "push wrote nothing locally"
    );
    s.run(MirrorOptions::pull()).await.unwrap();
    assert!(
        s.registry.get("b").unwrap().deleted.is_some(),
        "the pull applied the delete"
    );
    s.assert_mirrored().await;
}

/// A delete against a concurrent edit: the delete wins, except under
/// `manual`, where it stays open and reported until a side is taken.
pub async fn delete_against_edit(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b).await;
    s.registry.put(Some("a"), [("name", "a")]).unwrap();
    s.registry.put(Some("b"), [("name", "b")]).unwrap();
    s.sync().await;
    s.registry
        .put(Some("a"), [("name", "edited here")])
        .unwrap();
    s.remote.delete("a").await;
    let report = s.sync().await;
    assert_eq!(report.plan.rows[0].conflicts[0].field, "(record)");
    assert!(
        s.registry.get("a").unwrap().deleted.is_some(),
        "the delete won"
    );
    s.assert_mirrored().await;

    let s = Setup::with_schema(f, schema().conflict_policy(ConflictPolicy::Manual), |b| b).await;
    s.registry.put(Some("a"), [("name", "a")]).unwrap();
    s.sync().await;
    s.registry
        .put(Some("a"), [("name", "edited here")])
        .unwrap();
    s.remote.delete("a").await;
    for _ in 0..2 {
        let report = s.sync().await;
        assert_eq!(
            report.plan.open_conflicts(),
            1,
            "open and reported every run"
        );
        assert!(s.registry.get("a").unwrap().deleted.is_none());
    }
    s.run(MirrorOptions::sync().take(Side::Remote))
        .await
        .unwrap();
    assert!(s.registry.get("a").unwrap().deleted.is_some());
    s.assert_mirrored().await;
    assert!(s.sync().await.plan.rows.is_empty());
}

/// Rows a run cannot settle are not dropped when the change cursor moves
/// on: an invalid remote row is reported on every run until it is fixed,
/// a row whose write failed is retried until it lands, and both are listed
/// as pending in between.
pub async fn unsettled_rows_are_retried_every_run(f: &dyn RemoteFactory) {
    let s = Setup::new(f, |b| b).await;
    s.registry
        .put(
            Some("svc"),
            [("name", Value::from("svc")), ("port", 80.into())],
        )
        .unwrap();
    s.sync().await;
    s.remote
        .insert("bad", vec![("name", "bad".into()), ("port", 70000.into())])
        .await;
    s.registry.put(Some("new"), [("name", "new")]).unwrap();
    s.remote.fail_after(0);
    let first = s.run(MirrorOptions::sync()).await.unwrap();
    let invalid = |r: &MirrorReport| -> Vec<String> {
        r.plan.invalid.iter().map(|i| i.remote_id.clone()).collect()
    };
    assert_eq!(invalid(&first), ["bad"]);
    assert_eq!(first.failed.len(), 1, "{:?}", first.failed);
    assert_eq!(first.failed[0].record, "new");
    let mut pending: Vec<(String, &str)> = first
        .pending
        .iter()
        .map(|p| (p.remote_id.clone(), p.state.name()))
        .collect();
    pending.sort();
    assert_eq!(
        pending,
        [("bad".to_owned(), "invalid"), ("new".to_owned(), "remote")]
    );
    for run in 0..2 {
        let dry = s.run(MirrorOptions::sync().dry_run()).await.unwrap();
        assert_eq!(invalid(&dry), ["bad"], "the dry run shows it too");
        let report = s.run(MirrorOptions::sync()).await.unwrap();
        assert_eq!(
            invalid(&report),
            ["bad"],
            "run {run}: an invalid row is reported on every run until fixed"
        );
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(report.pending.len(), 1, "{:?}", report.pending);
        assert_eq!(s.replica.pending_rows("mirror").unwrap().len(), 1);
    }
    assert!(
        s.remote.rows().await.contains_key("new"),
        "the failed write was retried"
    );
    s.remote
        .update("bad", vec![("port", Some(8443.into()))])
        .await;
    let report = s.sync().await;
    assert!(report.plan.invalid.is_empty() && report.pending.is_empty());
    assert_eq!(
        s.registry.get("bad").unwrap().get("port"),
        Some(&Value::Integer(8443))
    );
    assert!(s.replica.pending_rows("mirror").unwrap().is_empty());
    s.assert_mirrored().await;
}

/// Calls `$callback!(case; args…)` for every case of the suite: the one
/// list of case names.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($callback:ident; $($args:tt)*) => {
        $crate::$callback!(create_update_delete_both_ways; $($args)*);
        $crate::$callback!(three_way_merge_keeps_both_sides_edits; $($args)*);
        $crate::$callback!(conflicts_follow_the_policy; $($args)*);
        $crate::$callback!(invalid_remote_rows_are_skipped; $($args)*);
        $crate::$callback!(dry_run_writes_nothing; $($args)*);
        $crate::$callback!(resume_after_failure_mid_batch; $($args)*);
        $crate::$callback!(no_echo; $($args)*);
        $crate::$callback!(first_sync_matches_by_key; $($args)*);
        $crate::$callback!(delete_guard_stops_bulk_deletes; $($args)*);
        $crate::$callback!(push_and_pull_move_one_way; $($args)*);
        $crate::$callback!(delete_against_edit; $($args)*);
        $crate::$callback!(unsettled_rows_are_retried_every_run; $($args)*);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    ($case:ident; $factory:expr) => {
        #[tokio::test]
        async fn $case() {
            $crate::conformance::$case(&$factory).await;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_run {
    ($case:ident; $factory:expr) => {
        $crate::conformance::$case($factory).await
    };
}

/// Defines one `#[tokio::test]` per conformance case, each run against a
/// fresh table from the given [`RemoteFactory`] (an expression; the test
/// crate needs tokio's `macros` feature):
///
/// ```ignore
/// chittysync::adapter_conformance_tests!(PostgresFactory);
/// ```
#[macro_export]
macro_rules! adapter_conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_cases!(__conformance_test; $factory);
    };
}

/// Runs every conformance case, one after another, against tables from `f`.
pub async fn run_all(f: &dyn RemoteFactory) {
    crate::__conformance_cases!(__conformance_run; f);
}

#[cfg(test)]
mod memory {
    use super::*;
    use crate::MemoryAdapter;

    struct Memory;

    struct MemoryRemote(MemoryAdapter);

    impl Remote for MemoryRemote {
        fn adapter(&self) -> BoxFuture<'_, Box<dyn Adapter>> {
            let adapter: Box<dyn Adapter> = Box::new(self.0.another_client());
            Box::pin(async move { adapter })
        }
        fn insert<'a>(&'a self, id: &'a str, fields: Vec<(&'a str, Value)>) -> BoxFuture<'a, ()> {
            self.0.insert(id, fields);
            Box::pin(async {})
        }
        fn update<'a>(
            &'a self,
            id: &'a str,
            fields: Vec<(&'a str, Option<Value>)>,
        ) -> BoxFuture<'a, ()> {
            self.0.update(id, &fields);
            Box::pin(async {})
        }
        fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
            self.0.remove(id);
            Box::pin(async {})
        }
        fn rows(&self) -> BoxFuture<'_, BTreeMap<String, Row>> {
            let rows = self.0.rows();
            Box::pin(async move { rows })
        }
        fn fail_after(&self, n: usize) {
            self.0.fail_after(n);
        }
        fn writes(&self) -> BoxFuture<'_, u64> {
            let n = self.0.mutating_calls();
            Box::pin(async move { n })
        }
    }

    impl RemoteFactory for Memory {
        fn kind(&self) -> &str {
            "memory"
        }
        fn make<'a>(&'a self, spec: &'a TableSpec) -> BoxFuture<'a, Box<dyn Remote>> {
            let table = MemoryAdapter::new(spec.table.clone()).with_spec(spec.clone());
            Box::pin(async move { Box::new(MemoryRemote(table)) as Box<dyn Remote> })
        }
    }

    crate::adapter_conformance_tests!(Memory);
}
