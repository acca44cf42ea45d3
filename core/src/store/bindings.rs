//! The adapter-binding table: each binding's settings as JSON, by name.
//! What the JSON means is the mirror engine's business; the store keeps it
//! and journals bindings made and removed.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, sql};
use crate::clock::now_ms;
use crate::ids::RegistryId;

/// One stored mirror run.
#[derive(Clone, Debug)]
pub(crate) struct MirrorRunRow {
    pub(crate) binding: String,
    pub(crate) started_at: i64,
    pub(crate) duration_ms: i64,
    pub(crate) outcome: String,
    pub(crate) applied: i64,
    pub(crate) failed: i64,
    pub(crate) invalid: i64,
    pub(crate) conflicts: i64,
    pub(crate) error: Option<String>,
}

impl Store {
    /// The settings (JSON) of every binding, by name.
    pub(crate) fn binding_configs(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn()
            .prepare("SELECT config FROM adapter_bindings ORDER BY name")
            .map_err(sql(self.path(), "list bindings"))?;
        stmt.query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(sql(self.path(), "list bindings"))
    }

    /// The settings (JSON) of binding `name`, if there is one.
    pub(crate) fn binding_config(&self, name: &str) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT config FROM adapter_bindings WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(self.path(), "read binding"))
    }

    /// Stores a new binding of `registry` and journals it (`adapter bound`,
    /// with `detail`), in one transaction.
    pub(crate) fn save_binding(
        &mut self,
        name: &str,
        registry: &RegistryId,
        config: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        let tx = self.begin()?;
        tx.conn()
            .execute(
                "INSERT INTO adapter_bindings (name, registry_id, config, cursor, created_at)
                 VALUES (?1, ?2, ?3, NULL, ?4)",
                params![name, registry.as_bytes().as_slice(), config, now_ms()],
            )
            .map_err(sql(tx.path(), "store binding"))?;
        tx.journal(Some(registry), "adapter bound", detail)?;
        tx.commit()
    }

    /// Replaces the settings (JSON) of binding `name` and journals it
    /// (`adapter changed`, with `detail`), in one transaction.
    pub(crate) fn update_binding_config(
        &mut self,
        name: &str,
        registry: Option<&RegistryId>,
        config: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        let tx = self.begin()?;
        tx.conn()
            .execute(
                "UPDATE adapter_bindings SET config = ?2 WHERE name = ?1",
                params![name, config],
            )
            .map_err(sql(tx.path(), "change binding"))?;
        tx.journal(registry, "adapter changed", detail)?;
        tx.commit()
    }

    /// Records one run of binding `name`; keeps the last `keep` runs.
    pub(crate) fn save_mirror_run(&self, run: &MirrorRunRow, keep: u32) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO mirror_runs
                   (binding, started_at, duration_ms, outcome, applied, failed, invalid, conflicts, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    run.binding,
                    run.started_at,
                    run.duration_ms,
                    run.outcome,
                    run.applied,
                    run.failed,
                    run.invalid,
                    run.conflicts,
                    run.error,
                ],
            )
            .map_err(sql(self.path(), "record mirror run"))?;
        self.conn()
            .execute(
                "DELETE FROM mirror_runs WHERE binding = ?1 AND seq NOT IN
                   (SELECT seq FROM mirror_runs WHERE binding = ?1 ORDER BY seq DESC LIMIT ?2)",
                params![run.binding, keep],
            )
            .map_err(sql(self.path(), "prune mirror runs"))?;
        Ok(())
    }

    /// The last `limit` runs of binding `name`, newest first.
    pub(crate) fn mirror_runs(&self, name: &str, limit: u32) -> Result<Vec<MirrorRunRow>> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT binding, started_at, duration_ms, outcome, applied, failed, invalid, conflicts, error
                 FROM mirror_runs WHERE binding = ?1 ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(sql(self.path(), "list mirror runs"))?;
        stmt.query_map(params![name, limit], |r| {
            Ok(MirrorRunRow {
                binding: r.get(0)?,
                started_at: r.get(1)?,
                duration_ms: r.get(2)?,
                outcome: r.get(3)?,
                applied: r.get(4)?,
                failed: r.get(5)?,
                invalid: r.get(6)?,
                conflicts: r.get(7)?,
                error: r.get(8)?,
            })
        })
        .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(sql(self.path(), "list mirror runs"))
    }

    /// Removes binding `name` (its merge bases go with it) and journals it
    /// (`adapter unbound`, with `detail`), in one transaction.
    pub(crate) fn remove_binding(
        &mut self,
        name: &str,
        registry: Option<&RegistryId>,
        detail: &serde_json::Value,
    ) -> Result<()> {
        let tx = self.begin()?;
        tx.conn()
            .execute("DELETE FROM adapter_bindings WHERE name = ?1", [name])
            .map_err(sql(tx.path(), "remove binding"))?;
        tx.journal(registry, "adapter unbound", detail)?;
        tx.commit()
    }
}
