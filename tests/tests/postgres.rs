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
            // Counted by the harness's own trigger (see `count_adapter_writes`).
            let sql = format!("SELECT n FROM {}.adapter_writes", ident(&self.schema));
            let row = self.sql.query_one(&sql, &[]).await.expect("read the count");
            row.get::<_, i64>(0) as u64
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
            let sql = client().await;
            count_adapter_writes(&sql, &schema, &spec).await;
            // The suite needs a table that can hold rows the registry
            // refuses (a table made elsewhere, loosely typed): no NOT NULL.
            for c in spec.columns.iter().filter(|c| c.required) {
                sql.batch_execute(&format!(
                    "ALTER TABLE {}.{} ALTER COLUMN {} DROP NOT NULL",
                    ident(&schema),
                    ident(&spec.table_name()),
                    ident(&c.column)
                ))
                .await
                .expect("loosen the table");
            }
            Box::new(PgRemote {
                _scratch: Scratch {
                    schema: schema.clone(),
                },
                sql,
                schema,
                spec,
                adapters: std::sync::Mutex::new(Vec::new()),
            }) as Box<dyn Remote>
        })
    }
}

/// Counts the statements a sync writes to the table (those tagged with
/// `app.sync_origin`), in `schema.adapter_writes`: the change log keeps no
/// entry of them.
async fn count_adapter_writes(sql: &Client, schema: &str, spec: &TableSpec) {
    let s = ident(schema);
    let t = format!("{s}.{}", ident(&spec.table_name()));
    sql.batch_execute(&format!(
        "CREATE TABLE {s}.adapter_writes (n bigint NOT NULL);
         INSERT INTO {s}.adapter_writes VALUES (0);
         CREATE FUNCTION {s}.count_write() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF coalesce(current_setting('app.sync_origin', true), '') <> '' THEN
                 UPDATE {s}.adapter_writes SET n = n + 1;
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER count_writes AFTER INSERT OR UPDATE OR DELETE ON {t}
             FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_write();"
    ))
    .await
    .expect("count the adapter's writes");
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
    bound_to(schema(), table, tune).await
}

/// [`bound`], with a registry of this schema.
async fn bound_to(
    registry_schema: Schema,
    table: &str,
    tune: impl FnOnce(AdapterBinding) -> AdapterBinding,
) -> Bound {
    let dir = tempfile::tempdir().unwrap();
    let scratch = Scratch {
        schema: fresh_schema("t"),
    };
    let replica = Replica::open(dir.path().join("a.db")).unwrap();
    replica
        .create_registry("services", registry_schema.clone())
        .unwrap();
    let qualified = format!("{}.{table}", scratch.schema);
    let binding = tune(AdapterBinding::new(
        "pg", "services", "postgres", &qualified,
    ));
    replica.add_binding(&binding).unwrap();
    let adapter = PostgresAdapter::connect(
        &url(),
        binding.table_spec(&registry_schema),
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

impl Bound {
    async fn count(&self, what: &str) -> i64 {
        self.sql
            .query_one(&format!("SELECT count(*) FROM {what}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// Rows a run cannot settle are not dropped when the change cursor moves
/// on: a push the table refuses (UNIQUE) and a pulled row the registry
/// cannot take (its unique value is held) are reported on every run (and
/// listed as pending) until the data is fixed; then both apply and the
/// table and registry agree.
#[tokio::test]
async fn unsettled_rows_are_retried_every_run_until_they_apply() {
    let unique = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required().unique())
        .field(FieldDef::new("port", FieldKind::Integer));
    let b = bound_to(unique, "services", |b| b).await;
    let reg = b.replica.registry("services").unwrap();
    // A bound row, so later runs read only the change log.
    reg.put(Some("svc"), [("name", "svc")]).unwrap();
    b.sync().await;
    // The same name, made on both sides at once: the plan refuses the
    // pulled row, the table (UNIQUE) the pushed one.
    reg.put(Some("mine"), [("name", "same")]).unwrap();
    b.sql
        .execute(
            &format!(
                "INSERT INTO {} (id, name) VALUES ('theirs', 'same')",
                b.table
            ),
            &[],
        )
        .await
        .unwrap();
    for run in 0..3 {
        let report = b
            .replica
            .run_mirror("pg", &b.adapter, &MirrorOptions::sync(), &())
            .await
            .unwrap();
        let failed: Vec<(&str, &str)> = report
            .failed
            .iter()
            .map(|f| (f.remote_id.as_str(), f.side.name()))
            .collect();
        assert_eq!(failed, [("mine", "remote")], "run {run}: reported again");
        let invalid: Vec<&str> = report
            .plan
            .invalid
            .iter()
            .map(|i| i.remote_id.as_str())
            .collect();
        assert_eq!(invalid, ["theirs"], "run {run}: reported again");
        assert_eq!(report.pending.len(), 2);
    }
    assert_eq!(b.replica.pending_rows("pg").unwrap().len(), 2);
    // Fixing the data once settles both, with no edit of the pending row.
    reg.put(Some("mine"), [("name", "renamed")]).unwrap();
    let report = b.sync().await;
    assert!(report.pending.is_empty(), "{:?}", report.pending);
    assert_eq!(b.names(), vec!["renamed", "same", "svc"]);
    let table: Vec<String> = b
        .sql
        .query(&format!("SELECT name FROM {} ORDER BY name", b.table), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(table, vec!["renamed", "same", "svc"]);
    assert!(b.replica.pending_rows("pg").unwrap().is_empty());
}

/// A push that loses its server stops at once with one error that says
/// how many rows were applied and that the rest are retried; the next run
/// (connected again) writes the rest, once each.
#[tokio::test]
async fn a_lost_connection_stops_the_run_with_one_error() {
    let b = bound("services", |b| b).await;
    let s = ident(&b._scratch.schema);
    // The server ends the adapter's session when the row 'r25' arrives.
    b.sql
        .batch_execute(&format!(
            "CREATE FUNCTION {s}.hang_up() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.id = 'r25' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER hang_up BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {s}.hang_up();",
            t = b.table
        ))
        .await
        .unwrap();
    let reg = b.replica.registry("services").unwrap();
    for i in 0..30 {
        reg.put(Some(&format!("r{i:02}")), [("name", format!("n{i}"))])
            .unwrap();
    }
    let err = b
        .replica
        .run_mirror("pg", &b.adapter, &MirrorOptions::sync().batch_size(10), &())
        .await
        .unwrap_err();
    let shown = err.to_string();
    match &err {
        chittysync::MirrorError::Stopped {
            applied,
            not_written,
            ..
        } => assert_eq!((*applied, *not_written), (20, 10), "{shown}"),
        other => panic!("expected the run to stop, got {other}"),
    }
    assert!(shown.contains("retried by the next run"), "{shown}");
    assert_eq!(b.count(&b.table).await, 20, "the first two batches landed");
    assert_eq!(b.replica.pending_rows("pg").unwrap().len(), 10);
    b.sql
        .batch_execute(&format!("DROP TRIGGER hang_up ON {}", b.table))
        .await
        .unwrap();
    let again = PostgresAdapter::connect(
        &url(),
        AdapterBinding::new(
            "pg",
            "services",
            "postgres",
            &format!("{}.services", b._scratch.schema),
        )
        .table_spec(&schema()),
        PostgresOptions::new("binding-pg"),
    )
    .await
    .unwrap();
    let report = b
        .replica
        .run_mirror("pg", &again, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.applied, 10);
    assert_eq!(b.count(&b.table).await, 30);
    assert!(b.replica.pending_rows("pg").unwrap().is_empty());
}

/// A table made from the schema is usable by other applications: a plain
/// INSERT without an id gets one (a UUID), required fields are NOT NULL
/// and unique fields UNIQUE, and the row reaches the registry.
#[tokio::test]
async fn a_created_table_gives_ids_and_enforces_required_and_unique() {
    let unique = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required().unique())
        .field(FieldDef::new("port", FieldKind::Integer));
    let b = bound_to(unique, "services", |b| b).await;
    b.sync().await;
    b.sql
        .execute(
            &format!(
                "INSERT INTO {} (name, port) VALUES ('by the app', 80)",
                b.table
            ),
            &[],
        )
        .await
        .expect("an insert without an id works");
    let id: String = b
        .sql
        .query_one(&format!("SELECT id FROM {}", b.table), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let no_name = b
        .sql
        .execute(&format!("INSERT INTO {} (port) VALUES (1)", b.table), &[])
        .await
        .unwrap_err();
    assert_eq!(no_name.code().unwrap().code(), "23502", "NOT NULL");
    let twice = b
        .sql
        .execute(
            &format!("INSERT INTO {} (name) VALUES ('by the app')", b.table),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(twice.code().unwrap().code(), "23505", "UNIQUE");
    b.sync().await;
    let reg = b.replica.registry("services").unwrap();
    assert_eq!(
        reg.get(&id).unwrap().get("name"),
        Some(&Value::from("by the app"))
    );
    // Unique values move between rows in one statement (checked at its
    // end, not row by row): x takes y's name as y takes a new one.
    reg.put(Some("x"), [("name", "x")]).unwrap();
    reg.put(Some("y"), [("name", "y")]).unwrap();
    b.sync().await;
    reg.put(Some("y"), [("name", "y2")]).unwrap();
    reg.put(Some("x"), [("name", "y")]).unwrap();
    let report = b.sync().await;
    assert_eq!(report.applied, 2);
}

/// Two replicas bound to one table: what one pushes reaches the other's
/// incremental sync (a sync's own writes are logged for the other binding).
#[tokio::test]
async fn what_one_binding_pushes_reaches_another_binding_of_the_table() {
    let a = bound("services", |b| b).await;
    let dir = tempfile::tempdir().unwrap();
    let other = Replica::open(dir.path().join("b.db")).unwrap();
    other.create_registry("services", schema()).unwrap();
    let qualified = format!("{}.services", a._scratch.schema);
    let binding = AdapterBinding::new("pg", "services", "postgres", &qualified);
    other.add_binding(&binding).unwrap();
    let adapter = PostgresAdapter::connect(
        &url(),
        binding.table_spec(&schema()),
        PostgresOptions::new("binding-other"),
    )
    .await
    .unwrap();
    adapter.prepare(false).await.unwrap();
    let sync_other = || async {
        other
            .run_mirror("pg", &adapter, &MirrorOptions::sync(), &())
            .await
            .unwrap()
    };

    let reg = a.replica.registry("services").unwrap();
    reg.put(Some("svc"), [("name", "billing")]).unwrap();
    a.sync().await;
    sync_other().await; // the first run reads the whole table
    let theirs = other.registry("services").unwrap();
    assert_eq!(
        theirs.get("svc").unwrap().get("name"),
        Some(&"billing".into())
    );

    // Now incremental: A's next push must reach B through the change log.
    reg.put(Some("svc"), [("name", "ledger")]).unwrap();
    a.sync().await;
    sync_other().await;
    assert_eq!(
        theirs.get("svc").unwrap().get("name"),
        Some(&"ledger".into())
    );
    reg.delete("svc").unwrap();
    a.sync().await;
    sync_other().await;
    assert!(theirs.get("svc").is_none_or(|r| r.deleted.is_some()));
}

/// The change log keeps only what a binding has yet to read: after 100
/// syncs with edits on both sides it holds no more than a run's worth.
#[tokio::test]
async fn the_change_log_stays_bounded_over_many_syncs() {
    let b = bound("services", |b| b).await;
    let reg = b.replica.registry("services").unwrap();
    let log = format!("{}.chittysync_changelog", ident(&b._scratch.schema));
    b.sync().await;
    for i in 0..100 {
        reg.put(Some(&format!("l{i}")), [("name", format!("local {i}"))])
            .unwrap();
        b.sql
            .execute(
                &format!("INSERT INTO {} (id, name) VALUES ($1, $2)", b.table),
                &[&format!("p{i}"), &format!("remote {i}")],
            )
            .await
            .unwrap();
        b.sync().await;
    }
    assert_eq!(b.count(&b.table).await, 200);
    assert_eq!(reg.len(), 200);
    // Unpruned, it would hold 100 entries (and, before, 100 more of the
    // sync's own writes); a transaction elsewhere on the server may hold
    // back the last few.
    let entries = b.count(&log).await;
    assert!(
        entries < 10,
        "the log holds {entries} entries after 100 syncs"
    );
}

/// A non-TLS listener: answers the TLS request with 'N', as a server
/// without ssl does.
async fn plain_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok() {
                let _ = socket.write_all(b"N").await;
            }
        }
    });
    addr
}

/// Every sslmode against the local server (whose certificate, made by the
/// test setup, names `localhost` only and is signed by a test authority),
/// and `require` against a server without TLS.
#[tokio::test]
async fn every_sslmode_does_what_libpq_does() {
    let sql = client().await;
    let ca: String = sql
        .query_one("SELECT pg_read_file('chittysync-ca.crt')", &[])
        .await
        .expect("the test setup made the server's TLS certificate")
        .get(0);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let base = url();
    let password = String::from_utf8(
        base.parse::<tokio_postgres::Config>()
            .unwrap()
            .get_password()
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let spec = AdapterBinding::new("pg", "services", "postgres", "services").table_spec(&schema());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let connect = |host: &str, app: &str, params: &str| {
        let url = format!(
            "{}?application_name=tls{n}{app}{params}",
            base.replacen("@127.0.0.1", &format!("@{host}"), 1)
        );
        let spec = spec.clone();
        async move { PostgresAdapter::connect(&url, spec, PostgresOptions::new("tls")).await }
    };
    let encrypted = |app: &str| {
        let (sql, app) = (&sql, format!("tls{n}{app}"));
        async move {
            let row = sql
                .query_one(
                    "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                     WHERE a.application_name = $1",
                    &[&app],
                )
                .await
                .expect("the adapter's session");
            row.get::<_, bool>(0)
        }
    };
    let root = format!("&sslrootcert={}", ca_file.display());

    let _a = connect("127.0.0.1", "disable", "&sslmode=disable")
        .await
        .unwrap();
    assert!(!encrypted("disable").await, "disable: plain");
    let _b = connect("127.0.0.1", "default", "").await.unwrap();
    assert!(
        encrypted("default").await,
        "prefer (the default) encrypts when offered"
    );
    let _c = connect("127.0.0.1", "require", "&sslmode=require")
        .await
        .unwrap();
    assert!(
        encrypted("require").await,
        "require: encrypted, certificate unchecked"
    );
    let _d = connect("127.0.0.1", "ca", &format!("&sslmode=verify-ca{root}"))
        .await
        .unwrap();
    assert!(encrypted("ca").await, "verify-ca: the chain only");
    let _e = connect(
        "localhost",
        "full",
        &format!("&sslmode=verify-full{root}&channel_binding=require"),
    )
    .await
    .expect("verify-full, with channel binding");
    assert!(encrypted("full").await);

    let refused = [
        (
            connect("127.0.0.1", "x1", &format!("&sslmode=verify-full{root}")).await,
            "does not name the host",
        ),
        (
            connect("127.0.0.1", "x2", "&sslmode=verify-ca").await,
            "not signed by a trusted root",
        ),
        (
            connect("localhost", "x3", "&sslmode=verify-full&sslrootcert=system").await,
            "not signed by a trusted root",
        ),
    ];
    for (result, says) in refused {
        let err = result.map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
        assert!(!err.contains(&password), "{err}");
    }

    let plain = plain_server().await;
    let err = PostgresAdapter::connect(
        &format!("postgres://me:{password}@{plain}/db?sslmode=require"),
        spec.clone(),
        PostgresOptions::new("tls"),
    )
    .await
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(err.contains("does not accept TLS connections"), "{err}");
    assert!(err.contains("sslmode=require"), "{err}");
    assert!(!err.contains(&password), "{err}");
}

/// Pruning waits for every binding that reads the table: entries another
/// binding has yet to read stay. A binding silent for more than a week is
/// no longer waited for; when it returns it compares the whole table, so
/// it still gets every change.
#[tokio::test]
async fn pruning_waits_for_other_bindings_and_a_silent_one_reads_everything() {
    let a = bound("services", |b| b).await;
    let qualified = format!("{}.services", a._scratch.schema);
    let other = Replica::open(a._dir.path().join("b.db")).unwrap();
    other.create_registry("services", schema()).unwrap();
    let binding = AdapterBinding::new("pg", "services", "postgres", &qualified);
    other.add_binding(&binding).unwrap();
    let b_adapter = PostgresAdapter::connect(
        &url(),
        binding.table_spec(&schema()),
        PostgresOptions::new("binding-other"),
    )
    .await
    .unwrap();
    let sync_b = || async {
        let report = other
            .run_mirror("pg", &b_adapter, &MirrorOptions::sync(), &())
            .await
            .unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    };
    let insert = |id: String| {
        let (sql, table) = (&a.sql, a.table.clone());
        async move {
            sql.execute(
                &format!("INSERT INTO {table} (id, name) VALUES ($1, $1)"),
                &[&id],
            )
            .await
            .unwrap();
        }
    };
    let log = format!("{}.chittysync_changelog", ident(&a._scratch.schema));
    insert("seed".into()).await;
    a.sync().await;
    sync_b().await; // both bound: later runs read the log
    for i in 0..10 {
        insert(format!("p{i}")).await;
        a.sync().await;
    }
    assert!(a.count(&log).await >= 10, "kept for the other binding");
    sync_b().await;
    assert_eq!(other.registry("services").unwrap().len(), 11);

    a.sql
        .execute(
            &format!(
                "UPDATE {}.chittysync_readers SET read_at = now() - interval '8 days' WHERE origin = 'binding-other'",
                ident(&a._scratch.schema)
            ),
            &[],
        )
        .await
        .unwrap();
    for i in 0..5 {
        insert(format!("q{i}")).await;
        a.sync().await;
    }
    // Waiting, it would hold p0…p9 and q0…q4 (15); transactions elsewhere
    // on the server (other tests) may hold back the last few entries.
    let left = a.count(&log).await;
    assert!(
        left < 10,
        "no longer waits for a silent binding: {left} left"
    );
    sync_b().await;
    let theirs = other.registry("services").unwrap();
    assert_eq!(theirs.len(), 16, "the silent binding got every row");
    assert!(theirs.get("q0").is_some());
}
