//! The Postgres adapter against a real PostgreSQL server: the adapter
//! conformance suite, plus what only a real server can show (concurrent
//! commits and the change log, hostile identifiers, constraint errors per
//! row, the full-compare fallback, the created table's types, edits by
//! other clients in plain SQL converging on another replica).
//!
//! The server's URL comes from `CHITTYSYNC_TEST_PG_URL` (`scripts/pg-up`
//! prints one; `scripts/test` sets it). Without it these tests fail: they
//! never skip. Each test works in its own schema, dropped at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chittysync::conformance::{self, Remote, RemoteFactory, Row};
use chittysync::{
    Adapter, AdapterBinding, AdapterError, BoxFuture, ChangeTracking, Fetched, FieldDef, FieldKind,
    MirrorOptions, Query, RemoteTable, Replica, RowOp, RowResult, Schema, TableSpec, Value,
};
use chittysync_adapters::postgres::{PostgresAdapter, PostgresOptions};
use tokio_postgres::{Client, NoTls};

fn url() -> String {
    std::env::var("CHITTYSYNC_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "CHITTYSYNC_TEST_PG_URL is not set: these tests need a PostgreSQL server. \
             Run `export CHITTYSYNC_TEST_PG_URL=\"$(scripts/pg-up)\"` (as root), or run scripts/test"
        )
    })
}

async fn client() -> Client {
    let (client, conn) = tokio_postgres::connect(&url(), NoTls)
        .await
        .expect("connect to the test server (is CHITTYSYNC_TEST_PG_URL right?)");
    tokio::spawn(conn);
    client
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh schema name, unique across test processes and runs.
fn fresh_schema(tag: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("cs_{tag}_{}_{n}_{nanos}", std::process::id())
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A schema dropped when the test ends.
struct Scratch {
    schema: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        // Best effort, on a runtime of its own (the test's may be gone).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let c = client().await;
                let _ = c
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(&schema)))
                    .await;
            });
        })
        .join();
    }
}

/// An adapter shared by the harness (to inject faults) and the engine.
struct Shared(Arc<PostgresAdapter>);

impl Adapter for Shared {
    fn system(&self) -> &str {
        self.0.system()
    }
    fn table(&self) -> &str {
        self.0.table()
    }
    fn prepare(&self, create: bool) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        self.0.prepare(create)
    }
    fn describe(&self) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        self.0.describe()
    }
    fn fetch<'a>(&'a self, since: Option<&'a str>) -> BoxFuture<'a, Result<Fetched, AdapterError>> {
        self.0.fetch(since)
    }
    fn apply<'a>(
        &'a self,
        ops: &'a [RowOp],
    ) -> BoxFuture<'a, Result<Vec<RowResult>, AdapterError>> {
        self.0.apply(ops)
    }
}

/// One table in its own schema; "another application" writes plain SQL.
struct PgRemote {
    _scratch: Scratch,
    sql: Client,
    schema: String,
    spec: TableSpec,
    adapters: std::sync::Mutex<Vec<Arc<PostgresAdapter>>>,
}

impl PgRemote {
    fn table(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.spec.table_name()))
    }

    fn cast(&self, field: &str) -> (&'static str, bool) {
        let ty = self
            .spec
            .columns
            .iter()
            .find(|c| c.field == field)
            .map(|c| c.field_type);
        match ty {
            Some(FieldKind::Integer) => ("::bigint", false),
            Some(FieldKind::Decimal) => ("::numeric", false),
            Some(FieldKind::Bool) => ("::boolean", false),
            Some(FieldKind::MultiSelect) => ("", true),
            _ => ("", false),
        }
    }

    fn column(&self, field: &str) -> String {
        let c = self.spec.columns.iter().find(|c| c.field == field).unwrap();
        ident(&c.column)
    }

    /// A parameter placeholder for `field` and its text value.
    fn param(&self, n: usize, field: &str, v: Option<&Value>) -> (String, Option<String>) {
        let (cast, array) = self.cast(field);
        let text = v.map(|v| match (array, v) {
            (true, Value::Set(s)) => serde_json::to_string(s).unwrap(),
            _ => v.to_string(),
        });
        let p = if array {
            format!("ARRAY(SELECT jsonb_array_elements_text(${n}::text::jsonb))")
        } else {
            format!("${n}::text{cast}")
        };
        (p, text)
    }
}

trait SpecExt {
    fn table_name(&self) -> String;
}

impl SpecExt for TableSpec {
    fn table_name(&self) -> String {
        self.table
            .split_once('.')
            .map_or(self.table.clone(), |(_, t)| t.to_owned())
    }
}

impl Remote for PgRemote {
    fn adapter(&self) -> BoxFuture<'_, Box<dyn Adapter>> {
        Box::pin(async move {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let adapter = PostgresAdapter::connect(
                &url(),
                self.spec.clone(),
                PostgresOptions::new(format!("test-binding-{n}")),
            )
            .await
            .expect("connect adapter");
            let adapter = Arc::new(adapter);
            self.adapters.lock().unwrap().push(adapter.clone());
            Box::new(Shared(adapter)) as Box<dyn Adapter>
        })
    }

    fn insert<'a>(&'a self, id: &'a str, fields: Vec<(&'a str, Value)>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut cols = vec![ident(&self.spec.id_column)];
            let mut exprs = vec!["$1".to_owned()];
            let mut vals: Vec<Option<String>> = vec![Some(id.to_owned())];
            for (i, (f, v)) in fields.iter().enumerate() {
                let (p, t) = self.param(i + 2, f, Some(v));
                cols.push(self.column(f));
                exprs.push(p);
                vals.push(t);
            }
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                self.table(),
                cols.join(", "),
                exprs.join(", ")
            );
            let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vals
                .iter()
                .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            self.sql.execute(&sql, &args).await.expect("insert");
        })
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        fields: Vec<(&'a str, Option<Value>)>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut sets = Vec::new();
            let mut vals: Vec<Option<String>> = vec![Some(id.to_owned())];
            for (i, (f, v)) in fields.iter().enumerate() {
                let (p, t) = self.param(i + 2, f, v.as_ref());
                sets.push(format!("{} = {p}", self.column(f)));
                vals.push(t);
            }
            let sql = format!(
                "UPDATE {} SET {} WHERE {} = $1",
                self.table(),
                sets.join(", "),
                ident(&self.spec.id_column)
            );
            let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vals
                .iter()
                .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            self.sql.execute(&sql, &args).await.expect("update");
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let sql = format!(
                "DELETE FROM {} WHERE {} = $1",
                self.table(),
                ident(&self.spec.id_column)
            );
            self.sql.execute(&sql, &[&id]).await.expect("delete");
        })
    }

    fn rows(&self) -> BoxFuture<'_, BTreeMap<String, Row>> {
        Box::pin(async move {
            // Read independently of the adapter: whole rows as JSON.
            let sql = format!("SELECT to_jsonb(t)::text FROM {} t", self.table());
            let mut out = BTreeMap::new();
            for r in self.sql.query(&sql, &[]).await.expect("read rows") {
                let json: serde_json::Value = serde_json::from_str(&r.get::<_, String>(0)).unwrap();
                let obj = json.as_object().unwrap();
                let id = obj[&self.spec.id_column].as_str().unwrap().to_owned();
                let mut row = Row::new();
                for c in &self.spec.columns {
                    match obj.get(&c.column) {
                        None | Some(serde_json::Value::Null) => {}
                        Some(v) => {
                            row.insert(c.field.clone(), Value::from_json(v));
                        }
                    }
                }
                out.insert(id, row);
            }
            out
        })
    }

    fn fail_after(&self, n: usize) {
        for a in self.adapters.lock().unwrap().iter() {
            a.fail_after(n);
        }
    }

    fn writes(&self) -> BoxFuture<'_, u64> {
        Box::pin(async move {
            // Every row an adapter wrote is in the change log with its origin.
            let sql = format!(
                "SELECT count(*) FROM {}.chittysync_changelog WHERE origin IS NOT NULL",
                ident(&self.schema)
            );
            match self.sql.query_one(&sql, &[]).await {
                Ok(r) => r.get::<_, i64>(0) as u64,
                Err(_) => 0, // no change log yet: nothing was written
            }
        })
    }
}

/// Makes a table per test, from the spec, in a fresh schema.
struct Pg;

impl RemoteFactory for Pg {
    fn kind(&self) -> &str {
        "postgres"
    }

    fn make<'a>(&'a self, spec: &'a TableSpec) -> BoxFuture<'a, Box<dyn Remote>> {
        Box::pin(async move {
            let schema = fresh_schema("conf");
            let mut spec = spec.clone();
            spec.table = format!("{schema}.{}", spec.table);
            let creator =
                PostgresAdapter::connect(&url(), spec.clone(), PostgresOptions::new("setup"))
                    .await
                    .expect("connect");
            creator.prepare(true).await.expect("create the table");
            Box::new(PgRemote {
                _scratch: Scratch {
                    schema: schema.clone(),
                },
                sql: client().await,
                schema,
                spec,
                adapters: std::sync::Mutex::new(Vec::new()),
            }) as Box<dyn Remote>
        })
    }
}

chittysync::adapter_conformance_tests!(Pg);

fn schema() -> Schema {
    conformance::schema()
}

struct Bound {
    _dir: tempfile::TempDir,
    _scratch: Scratch,
    replica: Replica,
    adapter: PostgresAdapter,
    sql: Client,
    table: String,
}

/// A replica with registry `services` bound to `schema.table` (created).
async fn bound(table: &str, tune: impl FnOnce(AdapterBinding) -> AdapterBinding) -> Bound {
    let dir = tempfile::tempdir().unwrap();
    let scratch = Scratch {
        schema: fresh_schema("t"),
    };
    let replica = Replica::open(dir.path().join("a.db")).unwrap();
    replica.create_registry("services", schema()).unwrap();
    let qualified = format!("{}.{table}", scratch.schema);
    let binding = tune(AdapterBinding::new(
        "pg", "services", "postgres", &qualified,
    ));
    replica.add_binding(&binding).unwrap();
    let adapter = PostgresAdapter::connect(
        &url(),
        binding.table_spec(&schema()),
        PostgresOptions::new("binding-pg"),
    )
    .await
    .unwrap();
    adapter.prepare(true).await.unwrap();
    let table = format!("{}.{}", ident(&scratch.schema), ident(table));
    Bound {
        _dir: dir,
        _scratch: scratch,
        replica,
        adapter,
        sql: client().await,
        table,
    }
}

impl Bound {
    async fn sync(&self) -> chittysync::MirrorReport {
        let report = self
            .replica
            .run_mirror("pg", &self.adapter, &MirrorOptions::sync(), &())
            .await
            .unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        report
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .replica
            .registry("services")
            .unwrap()
            .list(&Query::all())
            .into_iter()
            .filter_map(|r| r.get("name").map(ToString::to_string))
            .collect();
        names.sort();
        names
    }
}

#[tokio::test]
async fn a_transaction_that_commits_late_is_not_skipped() {
    let b = bound("services", |b| b).await;
    b.sync().await; // sets the cursor
    // A long transaction inserts first but commits last.
    let mut slow = client().await;
    let tx = slow.transaction().await.unwrap();
    tx.execute(
        &format!("INSERT INTO {} (id, name) VALUES ('slow', 'slow')", b.table),
        &[],
    )
    .await
    .unwrap();
    b.sql
        .execute(
            &format!("INSERT INTO {} (id, name) VALUES ('fast', 'fast')", b.table),
            &[],
        )
        .await
        .unwrap();
    b.sync().await;
    assert!(!b.names().contains(&"slow".to_owned()), "not committed yet");
    tx.commit().await.unwrap();
    b.sync().await;
    assert_eq!(
        b.names(),
        vec!["fast", "slow"],
        "neither commit was skipped"
    );
    // And nothing more arrives later (each change consumed once).
    let report = b.sync().await;
    assert!(report.plan.rows.is_empty());
}

#[tokio::test]
async fn hostile_table_and_column_names_cannot_inject_sql() {
    let nasty_table = r#"svc"; DROP TABLE canary; --"#;
    let nasty_column = r#"na"me) VALUES ('x'); DROP TABLE canary; --"#;
    let b = bound(nasty_table, |b| b.map("name", nasty_column)).await;
    let schema = &b._scratch.schema;
    b.sql
        .batch_execute(&format!(
            "CREATE TABLE {}.canary (x int); SET search_path TO {}",
            ident(schema),
            ident(schema)
        ))
        .await
        .unwrap();
    let reg = b.replica.registry("services").unwrap();
    reg.put(None, [("name", "it's \"quoted\"; --")]).unwrap();
    // A row id with a quote: its record gets an id of its own (a quote has
    // no place in a record id), and the row keeps its id.
    b.sql
        .execute(
            &format!(
                "INSERT INTO {} (id, {}) VALUES ('a''b', 'from the table')",
                b.table,
                ident(nasty_column)
            ),
            &[],
        )
        .await
        .unwrap();
    b.sync().await;
    let quoted = reg.list(&Query::all().filter("name", "from the table"));
    assert_eq!(quoted.len(), 1);
    let record = quoted[0].id.clone();
    assert!(record.starts_with("r-"), "{record}");
    b.sql
        .execute(
            &format!(
                "UPDATE {} SET {} = 'changed'' remotely' WHERE id = 'a''b'",
                b.table,
                ident(nasty_column)
            ),
            &[],
        )
        .await
        .unwrap();
    b.sync().await;
    assert_eq!(
        reg.get(&record).unwrap().get("name"),
        Some(&Value::from("changed' remotely"))
    );
    assert_eq!(
        reg.list(&Query::all().filter("name", "it's \"quoted\"; --"))
            .len(),
        1
    );
    let canary = b
        .sql
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'canary'",
            &[schema],
        )
        .await
        .unwrap();
    assert_eq!(canary.get::<_, i64>(0), 1, "the canary table survived");
}

#[tokio::test]
async fn a_constraint_violation_fails_only_its_row_and_is_not_retried() {
    let b = bound("services", |b| b).await;
    b.sql
        .batch_execute(&format!("CREATE UNIQUE INDEX ON {} (name)", b.table))
        .await
        .unwrap();
    let reg = b.replica.registry("services").unwrap();
    reg.put(Some("a"), [("name", "same")]).unwrap();
    reg.put(Some("b"), [("name", "same")]).unwrap();
    reg.put(Some("c"), [("name", "other")]).unwrap();
    let report = b
        .replica
        .run_mirror("pg", &b.adapter, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(
        report.failed[0].reason.contains("23505"),
        "{}",
        report.failed[0].reason
    );
    let count = b
        .sql
        .query_one(&format!("SELECT count(*) FROM {}", b.table), &[])
        .await
        .unwrap();
    assert_eq!(count.get::<_, i64>(0), 2, "the other rows landed");
    // Fixing the data lets the next run finish the row.
    reg.put(Some(&report.failed[0].record), [("name", "renamed")])
        .unwrap();
    b.sync().await;
    let count = b
        .sql
        .query_one(&format!("SELECT count(*) FROM {}", b.table), &[])
        .await
        .unwrap();
    assert_eq!(count.get::<_, i64>(0), 3);
}

#[tokio::test]
async fn a_table_created_from_the_schema_uses_the_mapped_types() {
    let b = bound("services", |b| b).await;
    let rows = b
        .sql
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = 'services' ORDER BY ordinal_position",
            &[&b._scratch.schema],
        )
        .await
        .unwrap();
    let types: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want = [
        ("id", "text"),
        ("name", "text"),
        ("port", "bigint"),
        ("price", "numeric"),
        ("active", "boolean"),
        ("tier", "text"),
        ("tags", "ARRAY"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(types, want);
    // The select's options are a CHECK constraint.
    let bad = b
        .sql
        .execute(
            &format!("INSERT INTO {} (id, tier) VALUES ('x', 'bronze')", b.table),
            &[],
        )
        .await;
    assert!(bad.is_err());
}

#[tokio::test]
async fn without_trigger_rights_it_says_so_and_compares_the_whole_table() {
    let b = bound("services", |b| b).await;
    // Drop what prepare installed, then connect as a role that may only
    // read and write the rows.
    let schema = b._scratch.schema.clone();
    let role = format!("{schema}_limited");
    b.sql
        .batch_execute(&format!(
            "DROP TRIGGER chittysync_capture_ins ON {table};
             DROP TRIGGER chittysync_capture_upd ON {table};
             DROP TRIGGER chittysync_capture_del ON {table};
             CREATE ROLE {r} LOGIN PASSWORD 'limited-pw';
             GRANT USAGE ON SCHEMA {s} TO {r};
             GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {r};",
            table = b.table,
            r = ident(&role),
            s = ident(&schema),
        ))
        .await
        .unwrap();
    let mut config: tokio_postgres::Config = url().parse().unwrap();
    config.user(&role).password("limited-pw");
    let limited = PostgresAdapter::connect_with(
        config,
        AdapterBinding::new("pg", "services", "postgres", &format!("{schema}.services"))
            .table_spec(&chittysync::conformance::schema()),
        PostgresOptions::new("limited"),
    )
    .await
    .unwrap();
    let table = limited.prepare(false).await.unwrap();
    match &table.change_tracking {
        ChangeTracking::FullCompare { reason } => {
            assert!(
                reason.contains("cannot install the change-log trigger"),
                "{reason}"
            );
        }
        other => panic!("expected a full compare, got {other:?}"),
    }
    let reg = b.replica.registry("services").unwrap();
    reg.put(Some("a"), [("name", "a")]).unwrap();
    reg.put(Some("b"), [("name", "b")]).unwrap();
    let report = b
        .replica
        .run_mirror("pg", &limited, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert!(matches!(
        report.plan.change_tracking,
        ChangeTracking::FullCompare { .. }
    ));
    b.sql
        .execute(&format!("DELETE FROM {} WHERE id = 'a'", b.table), &[])
        .await
        .unwrap();
    b.replica
        .run_mirror("pg", &limited, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert!(
        reg.get("a").unwrap().deleted.is_some(),
        "a delete is seen by comparing"
    );
    b.sql
        .batch_execute(&format!(
            "REVOKE ALL ON {table} FROM {r}; REVOKE ALL ON SCHEMA {s} FROM {r}; DROP ROLE {r}",
            table = b.table,
            r = ident(&role),
            s = ident(&schema)
        ))
        .await
        .ok();
}

#[tokio::test]
async fn plain_sql_edits_reach_another_replica_through_peer_exchange() {
    let b = bound("services", |b| b.key_field("name")).await;
    let reg = b.replica.registry("services").unwrap();
    reg.put(
        None,
        [("name", Value::from("billing")), ("port", 80.into())],
    )
    .unwrap();
    reg.put(None, [("name", Value::from("search")), ("port", 81.into())])
        .unwrap();
    b.sync().await;
    // Another application edits, inserts and deletes with plain SQL.
    b.sql
        .batch_execute(&format!(
            "UPDATE {t} SET port = 8080, tags = ARRAY['a','c'] WHERE name = 'billing';
             INSERT INTO {t} (id, name, port, price, active) VALUES ('ledger', 'ledger', 9000, 12.50, true);
             DELETE FROM {t} WHERE name = 'search';",
            t = b.table
        ))
        .await
        .unwrap();
    b.sync().await;
    // Another replica gets the registry by peer exchange only.
    let other = Replica::open(b._dir.path().join("b.db")).unwrap();
    other.import(reg.export(&[]).unwrap()).unwrap();
    let theirs = other.registry("services").unwrap();
    let mut records: Vec<BTreeMap<String, Value>> = theirs
        .list(&Query::all())
        .into_iter()
        .map(|r| r.fields)
        .collect();
    records.sort();
    let rows = b
        .sql
        .query(
            &format!(
                "SELECT name, port::text, price::text, active::text, array_to_json(tags)::text FROM {} ORDER BY name",
                b.table
            ),
            &[],
        )
        .await
        .unwrap();
    let mut table: Vec<BTreeMap<String, Value>> = rows
        .iter()
        .map(|r| {
            let mut m = BTreeMap::new();
            let name: String = r.get(0);
            m.insert("name".to_owned(), Value::from(name));
            if let Some(p) = r.get::<_, Option<String>>(1) {
                m.insert("port".into(), Value::Integer(p.parse().unwrap()));
            }
            if let Some(p) = r.get::<_, Option<String>>(2) {
                m.insert(
                    "price".into(),
                    Value::Decimal(p.trim_end_matches('0').to_owned()),
                );
            }
            if let Some(a) = r.get::<_, Option<String>>(3) {
                m.insert("active".into(), Value::Bool(a == "true"));
            }
            if let Some(t) = r.get::<_, Option<String>>(4) {
                let items: Vec<String> = serde_json::from_str(&t).unwrap();
                m.insert("tags".into(), Value::Set(items.into_iter().collect()));
            }
            m
        })
        .collect();
    table.sort();
    assert_eq!(
        records, table,
        "the other replica's registry equals the table"
    );
    assert_eq!(theirs.len(), 2);
    assert!(other.verify(None).is_ok());
}

#[tokio::test]
async fn a_binding_keeps_no_secret_and_names_the_missing_variable() {
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("a.db")).unwrap();
    replica
        .create_registry(
            "services",
            Schema::new().field(FieldDef::new("name", FieldKind::Text)),
        )
        .unwrap();
    let leaky = AdapterBinding::new("pg", "services", "postgres", "services")
        .setting("url", "postgres://me:hunter2@localhost/db");
    let err = replica.add_binding(&leaky).unwrap_err();
    assert!(err.to_string().contains("environment variable"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let binding = AdapterBinding::new("pg", "services", "postgres", "services")
        .secret_env("CHITTYSYNC_TEST_UNSET_VARIABLE");
    replica.add_binding(&binding).unwrap();
    let stored = std::fs::read(dir.path().join("a.db")).unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("hunter2"));
    let err = PostgresAdapter::for_binding(
        &binding,
        &replica.registry("services").unwrap().schema(),
        "o",
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("CHITTYSYNC_TEST_UNSET_VARIABLE"),
        "{err}"
    );
}

/// A binding that reads its whole connection string (password included)
/// from the environment, synced through `Replica::connect_binding`, leaves
/// the password in no file of the replica: store, log, key files.
#[tokio::test]
async fn a_synced_binding_leaves_its_password_in_no_file_of_the_replica() {
    let url = url();
    let config: tokio_postgres::Config = url.parse().unwrap();
    let password = String::from_utf8(
        config
            .get_password()
            .expect("the test URL has a password")
            .to_vec(),
    )
    .unwrap();
    assert!(password.len() >= 8, "a password too short to search for");
    let b = bound("services", |b| b.secret_env("CHITTYSYNC_TEST_PG_URL")).await;
    b.replica
        .registry("services")
        .unwrap()
        .put(Some("r1"), [("name", "billing")])
        .unwrap();
    let adapter = b
        .replica
        .connect_binding("pg", &chittysync_adapters::kinds())
        .await
        .unwrap();
    let report = b
        .replica
        .run_mirror("pg", adapter.as_ref(), &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert_eq!(report.applied, 1);
    let mut searched = 0;
    for entry in std::fs::read_dir(b._dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        searched += 1;
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&password),
            "{} holds the password",
            path.display()
        );
    }
    assert!(
        searched >= 3,
        "the store, its log and the key files were searched"
    );
}

#[tokio::test]
async fn applications_with_only_table_rights_keep_writing_and_are_seen() {
    let b = bound("services", |b| b).await;
    b.sync().await; // installs the change log
    let schema = b._scratch.schema.clone();
    let role = format!("{schema}_app");
    b.sql
        .batch_execute(&format!(
            "CREATE ROLE {r} LOGIN PASSWORD 'app-pw';
             GRANT USAGE ON SCHEMA {s} TO {r};
             GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {r};",
            table = b.table,
            r = ident(&role),
            s = ident(&schema),
        ))
        .await
        .unwrap();
    let mut config: tokio_postgres::Config = url().parse().unwrap();
    config.user(&role).password("app-pw");
    let (app, conn) = config.connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    app.execute(
        &format!(
            "INSERT INTO {} (id, name) VALUES ('app', 'by the app')",
            b.table
        ),
        &[],
    )
    .await
    .expect("the change-log trigger does not need the writer to have rights on the log");
    b.sync().await;
    assert_eq!(b.names(), vec!["by the app"]);
    drop(app);
    b.sql
        .batch_execute(&format!(
            "REVOKE ALL ON {table} FROM {r}; REVOKE ALL ON SCHEMA {s} FROM {r}; DROP ROLE {r}",
            table = b.table,
            r = ident(&role),
            s = ident(&schema)
        ))
        .await
        .ok();
}

#[tokio::test]
async fn serialization_failures_are_retried_and_constraint_errors_are_not() {
    let b = bound("services", |b| b).await;
    let s = ident(&b._scratch.schema);
    // The first write of a batch fails with 40001 (a sequence counts
    // attempts, and sequences ignore rollbacks); a row named 'fk' always
    // fails with 23503.
    b.sql
        .batch_execute(&format!(
            "CREATE SEQUENCE {s}.attempts;
             CREATE SEQUENCE {s}.fk_attempts;
             CREATE FUNCTION {s}.flaky() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.name = 'fk' THEN
                     PERFORM nextval('{s}.fk_attempts');
                     RAISE EXCEPTION 'no such parent' USING ERRCODE = '23503';
                 END IF;
                 IF nextval('{s}.attempts') = 1 THEN
                     RAISE EXCEPTION 'injected' USING ERRCODE = '40001';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER flaky BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {s}.flaky();",
            t = b.table
        ))
        .await
        .unwrap();
    let reg = b.replica.registry("services").unwrap();
    reg.put(Some("ok"), [("name", "ok")]).unwrap();
    b.sync().await;
    let rows = b
        .sql
        .query_one(&format!("SELECT count(*) FROM {}", b.table), &[])
        .await
        .unwrap();
    assert_eq!(rows.get::<_, i64>(0), 1, "written after a retry");
    let attempts = b
        .sql
        .query_one(&format!("SELECT last_value FROM {s}.attempts"), &[])
        .await
        .unwrap();
    assert_eq!(attempts.get::<_, i64>(0), 2, "one failure, one retry");

    reg.put(Some("fk"), [("name", "fk")]).unwrap();
    let report = b
        .replica
        .run_mirror("pg", &b.adapter, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1);
    assert!(
        report.failed[0].reason.contains("23503"),
        "{}",
        report.failed[0].reason
    );
    assert!(!report.failed[0].retryable);
    let fk = b
        .sql
        .query_one(&format!("SELECT last_value FROM {s}.fk_attempts"), &[])
        .await
        .unwrap();
    // Once in the batch, once alone to find the row: never retried.
    assert_eq!(fk.get::<_, i64>(0), 2);
}
