//! The adapter proper: applying row ops in one transaction (set-based
//! statements, retried on serialization failure or deadlock; row by row
//! to find the rows a data error is about), and the Adapter impl.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use chittysync::{
    Adapter, AdapterError, BoxFuture, ColumnSpec, Fetched, RemoteTable, RowError, RowOp, RowResult,
    Value,
};

use crate::layout::{Column, Layout};
use crate::sql::{
    db_reason, delete_sql, is_data_error, is_retryable, param_text, update_sql, upsert_sql,
};
use crate::{PostgresAdapter, SYSTEM};

impl PostgresAdapter {
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
        let table = self.qualified();
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
            let params: Vec<Vec<Option<String>>> = columns
                .iter()
                .map(|(spec, col)| {
                    creates
                        .iter()
                        .map(|(_, f)| f.get(&spec.field).map(|v| param_text(v, col)))
                        .collect()
                })
                .collect();
            let cols: Vec<&Column> = columns.iter().map(|(_, c)| c).collect();
            let sql = upsert_sql(&table, &layout.id, &cols);
            let mut args: Vec<&(dyn ToSql + Sync)> = vec![&ids];
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
                                .map(|v| param_text(&v, col))
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
            let cols: Vec<&Column> = touched.iter().map(|c| &c.1).collect();
            let sql = update_sql(&table, &layout.id, &cols);
            let mut args: Vec<&(dyn ToSql + Sync)> = vec![&ids];
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
            tx.execute(&delete_sql(&table, &layout.id), &[&deletes])
                .await?;
        }
        Ok(())
    }
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
