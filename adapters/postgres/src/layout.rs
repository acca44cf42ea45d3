//! The layout: the table's columns as found in the database, checked
//! against the spec; creating the table; describing it.

use std::collections::HashMap;

use tokio_postgres::Client;

use chittysync::{AdapterError, ChangeTracking, ColumnSpec, RemoteColumn, RemoteTable};

use crate::PostgresAdapter;
use crate::sql::{db_reason, ident, sql_type};

/// A column as found in the database.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) type_name: String,
    pub(crate) is_array: bool,
}

pub(crate) struct Layout {
    pub(crate) id: Column,
    pub(crate) mapped: Vec<(ColumnSpec, Column)>,
    pub(crate) columns: Vec<Column>,
}

impl PostgresAdapter {
    pub(crate) async fn columns(&self, client: &Client) -> Result<Vec<Column>, AdapterError> {
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

    /// Checks the table against the spec: the columns, their types.
    pub(crate) async fn layout(&self, client: &Client) -> Result<Layout, AdapterError> {
        let columns = self.columns(client).await?;
        if columns.is_empty() {
            return Err(self.mismatch(
                "the table does not exist; create it, or have the binding create it from the registry's schema".into(),
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
                    "it has no id column '{}'; give the binding the primary-key column as its id column",
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
                "it has no column {}; add the column, or map the field to another column in the binding",
                missing.join(", ")
            )));
        }
        Ok(Layout {
            id,
            mapped,
            columns,
        })
    }

    /// Creates the table from the spec, usable by other applications as
    /// is: the id column makes its own id (a UUID) when an insert gives
    /// none, required fields are `NOT NULL` and unique ones `UNIQUE`
    /// (checked per statement, so one update may swap two values).
    async fn create_table(&self, client: &Client) -> Result<(), AdapterError> {
        let mut cols = vec![format!(
            "{} text PRIMARY KEY DEFAULT gen_random_uuid()::text",
            ident(&self.spec.id_column)
        )];
        for c in &self.spec.columns {
            if c.column != self.spec.id_column {
                let mut col = format!("{} {}", ident(&c.column), sql_type(c));
                if c.required {
                    col.push_str(" NOT NULL");
                }
                if c.unique {
                    col.push_str(" UNIQUE DEFERRABLE INITIALLY IMMEDIATE");
                }
                cols.push(col);
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

    pub(crate) async fn prepare_now(&self, create: bool) -> Result<RemoteTable, AdapterError> {
        self.writable
            .store(true, std::sync::atomic::Ordering::SeqCst);
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

    pub(crate) async fn describe_now(&self) -> Result<RemoteTable, AdapterError> {
        self.writable
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let guard = self.client.lock().await;
        let layout = self.layout(&guard).await?;
        let tracking = self.tracking(&guard).await?;
        Ok(self.describe_layout(&layout, tracking))
    }
}
