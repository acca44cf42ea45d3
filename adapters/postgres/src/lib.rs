//! The Postgres adapter (tokio-postgres): a registry mirrored in a
//! PostgreSQL table (the binding's table, optionally `schema.table`; the
//! id column is its primary key).
//!
//! - Values travel as text and are cast in SQL to each column's actual
//!   type, so any existing table whose columns accept the registry's values
//!   can be bound, and the schema's types map as in the reference table
//!   (text, bigint, numeric, boolean, date, timestamptz, text + CHECK for
//!   select, text[] for multi-select, jsonb).
//! - Writes are batched: `INSERT … SELECT FROM unnest(…) ON CONFLICT … DO
//!   UPDATE … WHERE … IS DISTINCT FROM` for creates, `UPDATE … FROM
//!   unnest(…)` touching only the changed columns for updates, `DELETE …
//!   = ANY(…)` for deletes; one transaction per batch, retried on
//!   serialization failure or deadlock, never on constraint violations,
//!   which are reported per row.
//! - Changes are read from a trigger-fed change log, proportional to what
//!   changed; the sync's own writes are tagged (`app.sync_origin`) and not
//!   read back. The cursor is the fetch's snapshot (`pg_current_snapshot()`):
//!   an entry is consumed once its transaction is visible, i.e. committed,
//!   and was not visible in the previous fetch's snapshot. Entries at or
//!   above the previous snapshot's xmin are re-examined, so a transaction
//!   that commits late (after a later one) is never skipped, and unlike
//!   consuming only below the current xmin, one long-running transaction
//!   elsewhere in the cluster does not hold every other change back.
//! - Every identifier is quoted; every value is a parameter.
//!
//! # Settings
//!
//! [`PostgresKind`]; see [`PostgresAdapter::for_binding`]:
//!
//! | Setting | Meaning | Default |
//! |---|---|---|
//! | `url` | `postgres://user@host:port/db`, without a password: the password comes from the binding's secret variable (without `url`, that variable holds the whole connection string) | |
//! | `statement_timeout_ms` | how long one statement may run | 30000 |

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use chittysync::{
    Adapter, AdapterError, BoxFuture, ChangeTracking, ColumnSpec, Fetched, FieldKind, RemoteColumn,
    RemoteRow, RemoteTable, RowError, RowOp, RowResult, TableSpec, Value,
};

const SYSTEM: &str = "postgres";
const CHANGELOG: &str = "chittysync_changelog";
const CAPTURE: &str = "chittysync_capture";

/// Settings of a [`PostgresAdapter`] that are not the connection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Tags this adapter's writes in the change log so its own fetches
    /// skip them (use a value unique to the binding).
    pub origin: String,
    /// `statement_timeout` for every statement.
    pub statement_timeout: Duration,
    /// Retries of a batch after a serialization failure or deadlock.
    pub max_retries: u32,
}

impl PostgresOptions {
    /// Options with this origin tag, a 30 s statement timeout and 5 retries.
    pub fn new(origin: impl Into<String>) -> Self {
        PostgresOptions {
            origin: origin.into(),
            statement_timeout: Duration::from_secs(30),
            max_retries: 5,
        }
    }
}

/// A Postgres table as an adapter.
pub struct PostgresAdapter {
    client: Mutex<Client>,
    schema: String,
    table_name: String,
    shown: String,
    spec: TableSpec,
    options: PostgresOptions,
    /// Test hook: the next apply writes only this many ops.
    fail_after: Arc<AtomicUsize>,
}

impl fmt::Debug for PostgresAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the connection settings: they may hold a password.
        f.debug_struct("PostgresAdapter")
            .field("table", &self.shown)
            .finish_non_exhaustive()
    }
}

/// `"name"` with inner quotes doubled: safe for any identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with inner quotes doubled (standard_conforming_strings is on
/// since PG 9.1, so backslashes are plain characters).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn db_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        None => e.to_string(),
    }
}

fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// A data error about particular rows (constraint violations, bad input):
/// report per row, never retry.
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("23") || c.code().starts_with("22"))
}

/// The SQL type a registry field gets in a table created from the schema.
fn sql_type(c: &ColumnSpec) -> String {
    match c.field_type {
        FieldKind::Integer => "bigint".into(),
        FieldKind::Decimal => "numeric".into(),
        FieldKind::Bool => "boolean".into(),
        FieldKind::Date => "date".into(),
        FieldKind::Datetime => "timestamptz".into(),
        FieldKind::MultiSelect => "text[]".into(),
        FieldKind::Json => "jsonb".into(),
        FieldKind::Select if !c.options.is_empty() => {
            let options: Vec<String> = c.options.iter().map(|o| literal(o)).collect();
            format!(
                "text CHECK ({} IN ({}))",
                ident(&c.column),
                options.join(", ")
            )
        }
        _ => "text".into(),
    }
}

/// A column as found in the database.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    type_name: String,
    is_array: bool,
}

impl PostgresAdapter {
    /// Connects with a connection string (which may hold a password: it is
    /// never logged, stored or put in an error) to mirror `spec.table`
    /// (`table` or `schema.table`).
    pub async fn connect(
        connection: &str,
        spec: TableSpec,
        options: PostgresOptions,
    ) -> Result<Self, AdapterError> {
        let config: Config = connection.parse().map_err(|_| AdapterError::Config(
            "the Postgres connection string does not parse; use postgres://user@host:port/db or key=value pairs".into(),
        ))?;
        PostgresAdapter::connect_with(config, spec, options).await
    }

    /// Connects with a parsed configuration.
    pub async fn connect_with(
        mut config: Config,
        spec: TableSpec,
        options: PostgresOptions,
    ) -> Result<Self, AdapterError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let (client, connection) =
            config
                .connect(NoTls)
                .await
                .map_err(|e| AdapterError::Connect {
                    system: SYSTEM.into(),
                    reason: db_reason(&e),
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection closed");
            }
        });
        let timeout_ms = options.statement_timeout.as_millis();
        client
            .batch_execute(&format!(
                "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET statement_timeout = {timeout_ms}"
            ))
            .await
            .map_err(|e| AdapterError::Connect {
                system: SYSTEM.into(),
                reason: db_reason(&e),
            })?;
        let (schema, table) = match spec.table.split_once('.') {
            Some((s, t)) => (s.to_owned(), t.to_owned()),
            None => {
                let row = client
                    .query_one("SELECT current_schema()::text", &[])
                    .await
                    .map_err(|e| AdapterError::Connect {
                        system: SYSTEM.into(),
                        reason: db_reason(&e),
                    })?;
                let schema: Option<String> = row.get(0);
                (
                    schema.unwrap_or_else(|| "public".into()),
                    spec.table.clone(),
                )
            }
        };
        if schema.contains('\0') || table.contains('\0') {
            return Err(AdapterError::Config(
                "a table or schema name cannot contain a NUL character".into(),
            ));
        }
        Ok(PostgresAdapter {
            client: Mutex::new(client),
            shown: format!("{schema}.{table}"),
            schema,
            table_name: table,
            spec,
            options,
            fail_after: Arc::new(AtomicUsize::new(usize::MAX)),
        })
    }

    /// Connects for a stored binding. The connection string is the
    /// binding's `url` setting (which must hold no password) with the
    /// password read from the binding's secret variable, or, without a
    /// `url` setting, the whole connection string read from that variable.
    /// `origin` tags this binding's writes (see [`PostgresOptions::origin`]).
    pub async fn for_binding(
        binding: &chittysync::AdapterBinding,
        schema: &chittysync::Schema,
        origin: &str,
    ) -> Result<Self, chittysync::MirrorError> {
        let wrap = |source| chittysync::MirrorError::Adapter {
            binding: binding.name.clone(),
            source,
        };
        let secret = binding.secret()?;
        let config: Config = match (binding.settings.get("url"), secret) {
            (Some(url), secret) => {
                let mut config: Config = url.parse().map_err(|_| {
                    wrap(AdapterError::Config(format!(
                        "binding '{}': setting url does not parse; use postgres://user@host:port/db",
                        binding.name
                    )))
                })?;
                if let Some(password) = secret {
                    config.password(password);
                }
                config
            }
            (None, Some(whole)) => whole.parse().map_err(|_| {
                wrap(AdapterError::Config(format!(
                    "binding '{}': the connection string in environment variable {} does not parse; use postgres://user:password@host:port/db",
                    binding.name,
                    binding.secret_env.as_deref().unwrap_or_default()
                )))
            })?,
            (None, None) => {
                return Err(wrap(AdapterError::Config(format!(
                    "binding '{}' has no connection: give --url (without password) and/or --secret-env VAR",
                    binding.name
                ))));
            }
        };
        let mut options = PostgresOptions::new(origin);
        if let Some(ms) = binding.settings.get("statement_timeout_ms") {
            let ms: u64 = ms.parse().map_err(|_| {
                wrap(AdapterError::Config(format!(
                    "statement_timeout_ms '{ms}' is not a number of milliseconds"
                )))
            })?;
            options.statement_timeout = Duration::from_millis(ms);
        }
        PostgresAdapter::connect_with(config, binding.table_spec(schema), options)
            .await
            .map_err(wrap)
    }

    /// Fault injection for tests: the next apply writes only its first `n`
    /// ops and reports the rest as failed, as a connection lost mid-batch.
    pub fn fail_after(&self, n: usize) {
        self.fail_after.store(n, Ordering::SeqCst);
    }

    /// The quoted, qualified table name.
    fn qualified(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.table_name))
    }

    fn changelog(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(CHANGELOG))
    }

    fn request(&self, action: &str) -> impl Fn(tokio_postgres::Error) -> AdapterError + '_ {
        let action = action.to_owned();
        move |e| AdapterError::Request {
            system: SYSTEM.into(),
            table: self.shown.clone(),
            action: action.clone(),
            reason: db_reason(&e),
        }
    }

    fn mismatch(&self, reason: String) -> AdapterError {
        AdapterError::Mismatch {
            system: SYSTEM.into(),
            table: self.shown.clone(),
            reason,
        }
    }

    async fn columns(&self, client: &Client) -> Result<Vec<Column>, AdapterError> {
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typcategory = 'A'
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_type t ON t.oid = a.atttypid
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
                &[&self.schema, &self.table_name],
            )
            .await
            .map_err(self.request("describe"))?;
        Ok(rows
            .iter()
            .map(|r| Column {
                name: r.get(0),
                type_name: r.get(1),
                is_array: r.get(2),
            })
            .collect())
    }

    async fn tracking(&self, client: &Client) -> Result<ChangeTracking, AdapterError> {
        let row = client
            .query_one(
                "SELECT count(*) = 3 FROM pg_trigger tg
                    JOIN pg_class c ON c.oid = tg.tgrelid
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = $1 AND c.relname = $2 AND tg.tgenabled <> 'D'
                      AND tg.tgname IN ($3 || '_ins', $3 || '_upd', $3 || '_del')",
                &[&self.schema, &self.table_name, &CAPTURE],
            )
            .await
            .map_err(self.request("describe change tracking"))?;
        Ok(if row.get::<_, bool>(0) {
            ChangeTracking::Incremental
        } else {
            ChangeTracking::FullCompare {
                reason: "the change-log trigger is not installed (a sync that is not a dry run installs it)".into(),
            }
        })
    }

    /// Checks the table against the spec: the columns, their types.
    async fn layout(&self, client: &Client) -> Result<Layout, AdapterError> {
        let columns = self.columns(client).await?;
        if columns.is_empty() {
            return Err(self.mismatch(
                "the table does not exist; create it, or bind with --create to create it from the registry's schema".into(),
            ));
        }
        let by_name: HashMap<&str, &Column> =
            columns.iter().map(|c| (c.name.as_str(), c)).collect();
        let id = by_name
            .get(self.spec.id_column.as_str())
            .copied()
            .cloned()
            .ok_or_else(|| {
                self.mismatch(format!(
                    "it has no id column '{}'; name the primary-key column with --id-column",
                    self.spec.id_column
                ))
            })?;
        let mut mapped = Vec::new();
        let mut missing = Vec::new();
        for c in &self.spec.columns {
            match by_name.get(c.column.as_str()) {
                Some(col) => mapped.push((c.clone(), (*col).clone())),
                None => missing.push(format!("{} (field {})", c.column, c.field)),
            }
        }
        if !missing.is_empty() {
            return Err(self.mismatch(format!(
                "it has no column {}; add the column, or map the field to another column with --map FIELD=COLUMN",
                missing.join(", ")
            )));
        }
        Ok(Layout {
            id,
            mapped,
            columns,
        })
    }

    async fn install_tracking(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        let cl = self.changelog();
        let schema = ident(&self.schema);
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {cl} (
                seq        bigserial PRIMARY KEY,
                table_name text NOT NULL,
                row_id     text NOT NULL,
                op         text NOT NULL,
                txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
                origin     text DEFAULT nullif(current_setting('app.sync_origin', true), ''),
                changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
            );
            CREATE INDEX IF NOT EXISTS {idx} ON {cl} (table_name, txid);
            -- Statement-level triggers with transition tables: one set-based
            -- insert into the change log per statement, not one per row.
            -- SECURITY DEFINER (with a fixed search_path): applications that
            -- may write the table but not the change log keep working.
            CREATE OR REPLACE FUNCTION {schema}.{capture}() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path TO {schema} AS $body$
            DECLARE
                -- The row id, by the column named in the trigger's argument
                -- (quoted by format's %I); one set-based insert per statement.
                log text := 'INSERT INTO chittysync_changelog (table_name, row_id, op) ';
                id text := format('%I', TG_ARGV[0]);
            BEGIN
                IF TG_OP = 'INSERT' THEN
                    EXECUTE log || 'SELECT $1, n.' || id || '::text, ''I'' FROM chittysync_new n'
                    USING TG_TABLE_NAME;
                ELSIF TG_OP = 'UPDATE' THEN
                    -- Old ids too: an update that changes a row's id deletes the old one.
                    EXECUTE log || 'SELECT $1, i, ''U'' FROM (SELECT n.' || id || '::text AS i FROM chittysync_new n '
                        || 'UNION SELECT o.' || id || '::text FROM chittysync_old o) ids'
                    USING TG_TABLE_NAME;
                ELSE
                    EXECUTE log || 'SELECT $1, o.' || id || '::text, ''D'' FROM chittysync_old o'
                    USING TG_TABLE_NAME;
                END IF;
                RETURN NULL;
            END
            $body$;
            DROP TRIGGER IF EXISTS {capture} ON {table};
            DROP TRIGGER IF EXISTS {ins} ON {table};
            DROP TRIGGER IF EXISTS {upd} ON {table};
            DROP TRIGGER IF EXISTS {del} ON {table};
            CREATE TRIGGER {ins} AFTER INSERT ON {table}
                REFERENCING NEW TABLE AS chittysync_new
                FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{capture}({id});
            CREATE TRIGGER {upd} AFTER UPDATE ON {table}
                REFERENCING OLD TABLE AS chittysync_old NEW TABLE AS chittysync_new
                FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{capture}({id});
            CREATE TRIGGER {del} AFTER DELETE ON {table}
                REFERENCING OLD TABLE AS chittysync_old
                FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{capture}({id});",
            ins = ident(&format!("{CAPTURE}_ins")),
            upd = ident(&format!("{CAPTURE}_upd")),
            del = ident(&format!("{CAPTURE}_del")),
            idx = ident(&format!("{CHANGELOG}_txid")),
            capture = ident(CAPTURE),
            table = self.qualified(),
            id = literal(&self.spec.id_column),
        );
        client.batch_execute("BEGIN").await?;
        match client.batch_execute(&sql).await {
            Ok(()) => client.batch_execute("COMMIT").await,
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn create_table(&self, client: &Client) -> Result<(), AdapterError> {
        let mut cols = vec![format!("{} text PRIMARY KEY", ident(&self.spec.id_column))];
        for c in &self.spec.columns {
            if c.column != self.spec.id_column {
                cols.push(format!("{} {}", ident(&c.column), sql_type(c)));
            }
        }
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE IF NOT EXISTS {} ({})",
            ident(&self.schema),
            self.qualified(),
            cols.join(", ")
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(self.request("create table"))
    }

    /// The SQL expression reading column `c` as text (arrays as JSON).
    fn read_expr(col: &Column, field: FieldKind) -> String {
        let c = ident(&col.name);
        if col.is_array {
            format!("array_to_json({c})::text")
        } else if field == FieldKind::Datetime {
            format!("to_json({c}) #>> '{{}}'")
        } else {
            format!("{c}::text")
        }
    }

    /// The SQL expression casting text parameter column `u.{p}` to `col`'s type.
    fn write_expr(param: &str, col: &Column) -> String {
        if col.is_array {
            format!(
                "CASE WHEN {param} IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text({param}::jsonb))::{} END",
                col.type_name
            )
        } else {
            format!("{param}::{}", col.type_name)
        }
    }

    async fn read_rows(
        &self,
        client: &impl tokio_postgres::GenericClient,
        layout: &Layout,
        ids: Option<&[String]>,
    ) -> Result<Vec<RemoteRow>, AdapterError> {
        let mut select = vec![format!("{}::text", ident(&layout.id.name))];
        for (spec, col) in &layout.mapped {
            select.push(Self::read_expr(col, spec.field_type));
        }
        let mut sql = format!("SELECT {} FROM {}", select.join(", "), self.qualified());
        let rows = match ids {
            Some(ids) => {
                sql.push_str(&format!(
                    " WHERE {} = ANY($1::text[]::{}[])",
                    ident(&layout.id.name),
                    layout.id.type_name
                ));
                client.query(&sql, &[&ids]).await
            }
            None => client.query(&sql, &[]).await,
        }
        .map_err(self.request("read rows"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: Option<String> = r.get(0);
            let Some(id) = id else { continue };
            let mut fields = BTreeMap::new();
            for (i, (spec, col)) in layout.mapped.iter().enumerate() {
                let text: Option<String> = r.get(i + 1);
                let Some(text) = text else { continue };
                let value = if col.is_array {
                    match serde_json::from_str::<Vec<Option<String>>>(&text) {
                        Ok(items) => Value::Set(items.into_iter().flatten().collect()),
                        Err(_) => Value::Text(text),
                    }
                } else if spec.field_type == FieldKind::Json {
                    Value::Json(text)
                } else {
                    Value::Text(text)
                };
                fields.insert(spec.field.clone(), value);
            }
            out.push(RemoteRow::new(id, fields));
        }
        Ok(out)
    }

    async fn fetch_now(&self, since: Option<&str>) -> Result<Fetched, AdapterError> {
        let mut guard = self.client.lock().await;
        let layout = self.layout(&guard).await?;
        let tracking = self.tracking(&guard).await?;
        let tx = guard
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(self.request("begin fetch"))?;
        let snapshot: String = tx
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await
            .map_err(self.request("read snapshot"))?
            .get(0);
        let incremental = tracking == ChangeTracking::Incremental;
        let fetched = match since.filter(|_| incremental) {
            None => Fetched {
                rows: self.read_rows(&tx, &layout, None).await?,
                deleted: Vec::new(),
                complete: true,
                cursor: incremental.then(|| snapshot.clone()),
            },
            Some(cursor) => {
                let well_formed = cursor.split(':').count() == 3
                    && cursor
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == ':' || c == ',');
                if !well_formed {
                    return Err(AdapterError::Config(format!(
                        "cursor '{cursor}' is not a Postgres change-log cursor; run a full sync (--full)"
                    )));
                }
                let sql = format!(
                    "SELECT DISTINCT row_id, max(changed_at) OVER (PARTITION BY row_id)
                     FROM {} WHERE table_name = $1
                       AND txid >= pg_snapshot_xmin($2::text::pg_snapshot)
                       AND NOT pg_visible_in_snapshot(txid, $2::text::pg_snapshot)
                       AND origin IS DISTINCT FROM $3",
                    self.changelog()
                );
                let changed = tx
                    .query(&sql, &[&self.table_name, &cursor, &self.options.origin])
                    .await
                    .map_err(self.request("read the change log"))?;
                let mut when: HashMap<String, i64> = HashMap::new();
                for r in &changed {
                    let id: String = r.get(0);
                    let at: std::time::SystemTime = r.get(1);
                    let ms = at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    when.insert(id, ms);
                }
                let ids: Vec<String> = when.keys().cloned().collect();
                let mut rows = if ids.is_empty() {
                    Vec::new()
                } else {
                    self.read_rows(&tx, &layout, Some(&ids)).await?
                };
                let present: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
                for r in &mut rows {
                    r.modified_at = when.get(&r.id).copied();
                }
                let mut deleted: Vec<String> =
                    ids.into_iter().filter(|id| !present.contains(id)).collect();
                deleted.sort();
                Fetched {
                    rows,
                    deleted,
                    complete: false,
                    cursor: Some(snapshot),
                }
            }
        };
        tx.commit().await.map_err(self.request("end fetch"))?;
        Ok(fetched)
    }

    async fn apply_now(&self, ops: &[RowOp]) -> Result<Vec<RowResult>, AdapterError> {
        let mut guard = self.client.lock().await;
        let layout = self.layout(&guard).await?;
        // Dedupe by id: the last op for an id wins; all its copies share its result.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            last.insert(op.id(), i);
        }
        let limit = self.fail_after.swap(usize::MAX, Ordering::SeqCst);
        let mut unique: Vec<usize> = last.values().copied().collect();
        unique.sort_unstable();
        let todo: Vec<usize> = unique.iter().copied().take(limit).collect();
        let cut: HashSet<usize> = unique.iter().copied().skip(limit).collect();

        let mut results: HashMap<usize, RowResult> = HashMap::new();
        let mut attempt = 0;
        loop {
            match self.write_batch(&mut guard, &layout, ops, &todo).await {
                Ok(()) => {
                    for &i in &todo {
                        results.insert(i, Ok(ops[i].id().to_owned()));
                    }
                    break;
                }
                Err(e) if is_retryable(&e) && attempt < self.options.max_retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                }
                Err(e) if is_data_error(&e) => {
                    // Find the offending rows: each in its own savepoint.
                    results = self
                        .write_rows_one_by_one(&mut guard, &layout, ops, &todo)
                        .await?;
                    break;
                }
                Err(e) => return Err(self.request("write rows")(e)),
            }
        }
        let mut out = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let owner = last[op.id()];
            if cut.contains(&owner) {
                out.push(Err(RowError {
                    message: "connection lost mid-batch (injected fault); run the sync again"
                        .into(),
                    retryable: true,
                }));
                continue;
            }
            out.push(results.get(&owner).cloned().unwrap_or_else(|| {
                Err(RowError {
                    message: format!("row {} was not written", ops[i].id()),
                    retryable: true,
                })
            }));
        }
        Ok(out)
    }

    async fn begin_tagged<'c>(
        &self,
        client: &'c mut Client,
    ) -> Result<tokio_postgres::Transaction<'c>, tokio_postgres::Error> {
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT set_config('app.sync_origin', $1, true)",
            &[&self.options.origin],
        )
        .await?;
        Ok(tx)
    }

    async fn write_batch(
        &self,
        client: &mut Client,
        layout: &Layout,
        ops: &[RowOp],
        which: &[usize],
    ) -> Result<(), tokio_postgres::Error> {
        let tx = self.begin_tagged(client).await?;
        self.write_ops(&tx, layout, ops, which).await?;
        tx.commit().await
    }

    async fn write_rows_one_by_one(
        &self,
        client: &mut Client,
        layout: &Layout,
        ops: &[RowOp],
        which: &[usize],
    ) -> Result<HashMap<usize, RowResult>, AdapterError> {
        let mut results = HashMap::new();
        let mut tx = self
            .begin_tagged(client)
            .await
            .map_err(self.request("write rows"))?;
        for &i in which {
            let sp = tx
                .savepoint("row")
                .await
                .map_err(self.request("write rows"))?;
            match self.write_ops(&sp, layout, ops, &[i]).await {
                Ok(()) => {
                    sp.commit().await.map_err(self.request("write rows"))?;
                    results.insert(i, Ok(ops[i].id().to_owned()));
                }
                Err(e) => {
                    sp.rollback().await.map_err(self.request("write rows"))?;
                    results.insert(
                        i,
                        Err(RowError {
                            message: format!(
                                "{SYSTEM} table {} refused row {}: {}",
                                self.shown,
                                ops[i].id(),
                                db_reason(&e)
                            ),
                            retryable: is_retryable(&e),
                        }),
                    );
                }
            }
        }
        tx.commit().await.map_err(self.request("write rows"))?;
        Ok(results)
    }

    /// Creates (upserts), updates and deletes of the ops `which`, as three
    /// set-based statements.
    async fn write_ops(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        layout: &Layout,
        ops: &[RowOp],
        which: &[usize],
    ) -> Result<(), tokio_postgres::Error> {
        let id = ident(&layout.id.name);
        let id_cast = format!("u.id::{}", layout.id.type_name);
        let table = self.qualified();
        let text_of = |v: &Value, col: &Column| -> String {
            if col.is_array {
                let items: Vec<String> = match v {
                    Value::Set(s) => s.iter().cloned().collect(),
                    other => vec![other.to_string()],
                };
                serde_json::to_string(&items).expect("strings serialize")
            } else {
                v.to_string()
            }
        };
        let columns: Vec<&(ColumnSpec, Column)> = layout
            .mapped
            .iter()
            .filter(|(_, c)| c.name != layout.id.name)
            .collect();

        // Creates: one upsert.
        let creates: Vec<(&str, &BTreeMap<String, Value>)> = which
            .iter()
            .filter_map(|&i| match &ops[i] {
                RowOp::Create { id, fields } => Some((id.as_str(), fields)),
                _ => None,
            })
            .collect();
        if !creates.is_empty() {
            let ids: Vec<&str> = creates.iter().map(|(id, _)| *id).collect();
            let mut params: Vec<Vec<Option<String>>> = Vec::new();
            for (spec, col) in &columns {
                params.push(
                    creates
                        .iter()
                        .map(|(_, f)| f.get(&spec.field).map(|v| text_of(v, col)))
                        .collect(),
                );
            }
            let names: Vec<String> = columns.iter().map(|(_, c)| ident(&c.name)).collect();
            let unnest_args: Vec<String> = (0..=columns.len())
                .map(|i| format!("${}::text[]", i + 1))
                .collect();
            let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
            let exprs: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, (_, col))| Self::write_expr(&format!("u.c{i}"), col))
                .collect();
            let mut sql = format!(
                "INSERT INTO {table} AS t ({id}{sep}{names}) SELECT {id_cast}{sep}{exprs} FROM unnest({args}) AS u(id{sep}{aliases}) ON CONFLICT ({id}) ",
                sep = if columns.is_empty() { "" } else { ", " },
                names = names.join(", "),
                exprs = exprs.join(", "),
                args = unnest_args.join(", "),
                aliases = aliases.join(", "),
            );
            if columns.is_empty() {
                sql.push_str("DO NOTHING");
            } else {
                let sets: Vec<String> = names
                    .iter()
                    .map(|n| format!("{n} = excluded.{n}"))
                    .collect();
                let olds: Vec<String> = names.iter().map(|n| format!("t.{n}")).collect();
                let news: Vec<String> = names.iter().map(|n| format!("excluded.{n}")).collect();
                sql.push_str(&format!(
                    "DO UPDATE SET {} WHERE ROW({}) IS DISTINCT FROM ROW({})",
                    sets.join(", "),
                    olds.join(", "),
                    news.join(", ")
                ));
            }
            let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&ids];
            for p in &params {
                args.push(p);
            }
            tx.execute(&sql, &args).await?;
        }

        // Updates: only the changed columns of each row.
        let updates: Vec<(&str, &BTreeMap<String, Option<Value>>)> = which
            .iter()
            .filter_map(|&i| match &ops[i] {
                RowOp::Update { id, fields } => Some((id.as_str(), fields)),
                _ => None,
            })
            .collect();
        let touched: Vec<&&(ColumnSpec, Column)> = columns
            .iter()
            .filter(|(spec, _)| updates.iter().any(|(_, f)| f.contains_key(&spec.field)))
            .collect();
        if !updates.is_empty() && !touched.is_empty() {
            let ids: Vec<&str> = updates.iter().map(|(id, _)| *id).collect();
            let mut values: Vec<Vec<Option<String>>> = Vec::new();
            let mut masks: Vec<Vec<bool>> = Vec::new();
            for (spec, col) in touched.iter().map(|c| (&c.0, &c.1)) {
                values.push(
                    updates
                        .iter()
                        .map(|(_, f)| {
                            f.get(&spec.field)
                                .cloned()
                                .flatten()
                                .map(|v| text_of(&v, col))
                        })
                        .collect(),
                );
                masks.push(
                    updates
                        .iter()
                        .map(|(_, f)| f.contains_key(&spec.field))
                        .collect(),
                );
            }
            let mut unnest_args = vec!["$1::text[]".to_owned()];
            let mut aliases = vec!["id".to_owned()];
            let mut sets = Vec::new();
            let mut olds = Vec::new();
            let mut news = Vec::new();
            for (i, c) in touched.iter().enumerate() {
                let col = &c.1;
                unnest_args.push(format!("${}::text[]", 2 + 2 * i));
                unnest_args.push(format!("${}::bool[]", 3 + 2 * i));
                aliases.push(format!("v{i}"));
                aliases.push(format!("m{i}"));
                let name = ident(&col.name);
                let new = format!(
                    "CASE WHEN u.m{i} THEN {} ELSE t.{name} END",
                    Self::write_expr(&format!("u.v{i}"), col)
                );
                sets.push(format!("{name} = {new}"));
                olds.push(format!("t.{name}"));
                news.push(new);
            }
            let sql = format!(
                "UPDATE {table} AS t SET {} FROM unnest({}) AS u({}) WHERE t.{id} = {id_cast} AND ROW({}) IS DISTINCT FROM ROW({})",
                sets.join(", "),
                unnest_args.join(", "),
                aliases.join(", "),
                olds.join(", "),
                news.join(", "),
            );
            let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&ids];
            for (v, m) in values.iter().zip(&masks) {
                args.push(v);
                args.push(m);
            }
            tx.execute(&sql, &args).await?;
        }

        // Deletes.
        let deletes: Vec<&str> = which
            .iter()
            .filter_map(|&i| match &ops[i] {
                RowOp::Delete { id } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        if !deletes.is_empty() {
            let sql = format!(
                "DELETE FROM {table} WHERE {id} = ANY($1::text[]::{}[])",
                layout.id.type_name
            );
            tx.execute(&sql, &[&deletes]).await?;
        }
        Ok(())
    }

    async fn prepare_now(&self, create: bool) -> Result<RemoteTable, AdapterError> {
        let guard = self.client.lock().await;
        let exists = !self.columns(&guard).await?.is_empty();
        if !exists && create {
            self.create_table(&guard).await?;
        }
        let layout = self.layout(&guard).await?;
        let mut tracking = self.tracking(&guard).await?;
        if tracking != ChangeTracking::Incremental {
            tracking = match self.install_tracking(&guard).await {
                Ok(()) => ChangeTracking::Incremental,
                Err(e) => {
                    let reason = format!(
                        "cannot install the change-log trigger ({}); every sync compares the whole table — grant the binding's role CREATE on schema {} and ownership of the table to fix it",
                        db_reason(&e),
                        self.schema
                    );
                    tracing::warn!(table = %self.shown, %reason, "falling back to full compare");
                    ChangeTracking::FullCompare { reason }
                }
            };
        }
        Ok(self.describe_layout(&layout, tracking))
    }

    fn describe_layout(&self, layout: &Layout, tracking: ChangeTracking) -> RemoteTable {
        RemoteTable {
            name: self.shown.clone(),
            columns: layout
                .columns
                .iter()
                .map(|c| RemoteColumn {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                })
                .collect(),
            change_tracking: tracking,
        }
    }

    async fn describe_now(&self) -> Result<RemoteTable, AdapterError> {
        let guard = self.client.lock().await;
        let layout = self.layout(&guard).await?;
        let tracking = self.tracking(&guard).await?;
        Ok(self.describe_layout(&layout, tracking))
    }
}

struct Layout {
    id: Column,
    mapped: Vec<(ColumnSpec, Column)>,
    columns: Vec<Column>,
}

impl Adapter for PostgresAdapter {
    fn system(&self) -> &str {
        SYSTEM
    }

    fn table(&self) -> &str {
        &self.shown
    }

    fn prepare(&self, create: bool) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        Box::pin(self.prepare_now(create))
    }

    fn describe(&self) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        Box::pin(self.describe_now())
    }

    fn fetch<'a>(&'a self, since: Option<&'a str>) -> BoxFuture<'a, Result<Fetched, AdapterError>> {
        Box::pin(self.fetch_now(since))
    }

    fn apply<'a>(
        &'a self,
        ops: &'a [RowOp],
    ) -> BoxFuture<'a, Result<Vec<RowResult>, AdapterError>> {
        Box::pin(self.apply_now(ops))
    }
}

/// The `postgres` adapter kind, for [`chittysync::AdapterKinds`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PostgresKind;

impl chittysync::AdapterKind for PostgresKind {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn settings(&self) -> &'static [chittysync::SettingSpec] {
        &[
            chittysync::SettingSpec {
                key: "url",
                help: "postgres://user@host:port/db (no password: name its environment variable as the secret)",
            },
            chittysync::SettingSpec {
                key: "statement_timeout_ms",
                help: "how long one statement may run, in ms",
            },
        ]
    }

    fn tracking(&self, _table: &RemoteTable) -> String {
        "change-log trigger (cost follows what changed)".into()
    }

    fn connect<'a>(
        &'a self,
        cx: chittysync::Connect<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Adapter>, chittysync::MirrorError>> {
        Box::pin(async move {
            let adapter = PostgresAdapter::for_binding(cx.binding, cx.schema, cx.origin).await?;
            Ok(Box::new(adapter) as Box<dyn Adapter>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(
            ident(r#"a"; DROP TABLE x; --"#),
            r#""a""; DROP TABLE x; --""#
        );
        assert_eq!(literal("it's"), "'it''s'");
    }
}
