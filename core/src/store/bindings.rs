//! The adapter-binding table: each binding's settings as JSON, by name.
//! What the JSON means is the mirror engine's business; the store keeps it
//! and journals bindings made and removed.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, sql};
use crate::clock::now_ms;
use crate::ids::RegistryId;

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
