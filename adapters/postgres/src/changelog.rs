//! Change tracking: the trigger-fed change log (installing it, checking
//! it is there), fetching, fully or from the change log since a snapshot
//! cursor, and pruning the log.
//!
//! The log keeps only what some binding has yet to read: the sync's own
//! (tagged) writes are never logged, each binding records in
//! `chittysync_readers` how far it has read, and entries every binding
//! has read are deleted. A binding that has not read for a week no longer
//! holds entries back; when it returns, it finds its cursor below the
//! pruned mark (`chittysync_pruned`) and compares the whole table once.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio_postgres::Client;

use chittysync::{AdapterError, ChangeTracking, Fetched, FieldKind, RemoteRow, Value};

use crate::PostgresAdapter;
use crate::layout::Layout;
use crate::sql::{ident, literal, read_expr};

const CHANGELOG: &str = "chittysync_changelog";
const CAPTURE: &str = "chittysync_capture";
const READERS: &str = "chittysync_readers";
const PRUNED: &str = "chittysync_pruned";

impl PostgresAdapter {
    pub(crate) fn changelog(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(CHANGELOG))
    }

    fn in_schema(&self, name: &str) -> String {
        format!("{}.{}", ident(&self.schema), ident(name))
    }

    pub(crate) async fn tracking(&self, client: &Client) -> Result<ChangeTracking, AdapterError> {
        // The triggers, and the tables of this version's pruning (an
        // older install lacks them: the next prepare completes it).
        let row = client
            .query_one(
                "SELECT count(*) = 3
                    AND to_regclass(format('%I.%I', $1::text, $4::text)) IS NOT NULL
                    AND to_regclass(format('%I.%I', $1::text, $5::text)) IS NOT NULL
                    FROM pg_trigger tg
                    JOIN pg_class c ON c.oid = tg.tgrelid
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = $1 AND c.relname = $2 AND tg.tgenabled <> 'D'
                      AND tg.tgname IN ($3 || '_ins', $3 || '_upd', $3 || '_del')",
                &[&self.schema, &self.table_name, &CAPTURE, &READERS, &PRUNED],
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

    pub(crate) async fn install_tracking(
        &self,
        client: &Client,
    ) -> Result<(), tokio_postgres::Error> {
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
            -- How far each binding (by origin) has read, and below which
            -- transaction the log was pruned, per table.
            CREATE TABLE IF NOT EXISTS {readers} (
                table_name text NOT NULL,
                origin     text NOT NULL,
                read_xmin  xid8 NOT NULL,
                read_at    timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (table_name, origin)
            );
            CREATE TABLE IF NOT EXISTS {pruned} (
                table_name text PRIMARY KEY,
                below      xid8 NOT NULL
            );
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
                -- A sync's own writes are logged too, tagged with its origin
                -- (the column's default): its own binding skips them, and
                -- every other binding of the table needs them. Pruning
                -- deletes them once every binding has read past them.
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
            readers = self.in_schema(READERS),
            pruned = self.in_schema(PRUNED),
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

    async fn read_rows(
        &self,
        client: &impl tokio_postgres::GenericClient,
        layout: &Layout,
        ids: Option<&[String]>,
    ) -> Result<Vec<RemoteRow>, AdapterError> {
        let mut select = vec![format!("{}::text", ident(&layout.id.name))];
        for (spec, col) in &layout.mapped {
            select.push(read_expr(col, spec.field_type));
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

    pub(crate) async fn fetch_now(&self, since: Option<&str>) -> Result<Fetched, AdapterError> {
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
        let since = match since.filter(|_| incremental) {
            Some(cursor) if self.pruned_past(&tx, cursor).await? => {
                tracing::info!(table = %self.shown, "the change log was pruned past this binding's cursor: comparing the whole table");
                None
            }
            since => since,
        };
        let fetched = match since.filter(|_| incremental) {
            None => Fetched {
                rows: self.read_rows(&tx, &layout, None).await?,
                deleted: Vec::new(),
                complete: true,
                cursor: incremental.then(|| snapshot.clone()),
            },
            Some(cursor) => {
                if !cursor_is_well_formed(cursor) {
                    return Err(AdapterError::Config(format!(
                        "cursor '{cursor}' is not a Postgres change-log cursor; run a full sync (MirrorOptions::full)"
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
                    cursor: Some(snapshot.clone()),
                }
            }
        };
        tx.commit().await.map_err(self.request("end fetch"))?;
        if incremental && self.writable.load(std::sync::atomic::Ordering::SeqCst) {
            // What this binding has surely read: everything below the
            // cursor it fetched from (or, on a full read, the new one).
            let read = since.unwrap_or(&snapshot);
            // Pruning is housekeeping: a role that may not do it (another
            // binding's, with fewer rights) still syncs; the log just grows.
            if let Err(e) = self.prune(&guard, read).await {
                tracing::warn!(table = %self.shown, error = %e, "the change log was not pruned");
            }
        }
        Ok(fetched)
    }

    /// Whether entries this binding has yet to read from `cursor` on were
    /// pruned (it had not read for so long that it no longer held them).
    async fn pruned_past(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        cursor: &str,
    ) -> Result<bool, AdapterError> {
        if !cursor_is_well_formed(cursor) {
            return Ok(false); // refused with a clear error below
        }
        let row = tx
            .query_opt(
                &format!(
                    "SELECT below > pg_snapshot_xmin($2::text::pg_snapshot) FROM {} WHERE table_name = $1",
                    self.in_schema(PRUNED)
                ),
                &[&self.table_name, &cursor],
            )
            .await
            .map_err(self.request("read the change log"))?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// Records that this binding has read every entry below `read`'s xmin,
    /// then deletes the entries of this table every binding has read
    /// (bindings silent for a week are not waited for).
    async fn prune(&self, client: &Client, read: &str) -> Result<(), AdapterError> {
        let sql = format!(
            "WITH me AS (
                INSERT INTO {readers} (table_name, origin, read_xmin, read_at)
                VALUES ($1, $2, pg_snapshot_xmin($3::text::pg_snapshot), now())
                ON CONFLICT (table_name, origin)
                DO UPDATE SET read_xmin = excluded.read_xmin, read_at = excluded.read_at
                RETURNING read_xmin
             ),
             mark AS (
                SELECT least((SELECT read_xmin FROM me), min(read_xmin)) AS below
                FROM {readers}
                WHERE table_name = $1 AND origin <> $2 AND read_at > now() - interval '7 days'
             ),
             gone AS (
                DELETE FROM {cl} WHERE table_name = $1 AND txid < (SELECT below FROM mark)
             )
             INSERT INTO {pruned} (table_name, below) SELECT $1, below FROM mark
             ON CONFLICT (table_name) DO UPDATE SET below = greatest({pruned}.below, excluded.below)",
            readers = self.in_schema(READERS),
            pruned = self.in_schema(PRUNED),
            cl = self.changelog(),
        );
        client
            .execute(&sql, &[&self.table_name, &self.options.origin, &read])
            .await
            .map_err(self.request("prune the change log"))?;
        Ok(())
    }
}

fn cursor_is_well_formed(cursor: &str) -> bool {
    cursor.split(':').count() == 3
        && cursor
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == ',')
}
