//! A replica: one SQLite file holding many registries, and its key.

use std::sync::Arc;

use chittysync as core;

use crate::ChittyError;
use crate::registry::Registry;
use crate::types::{FieldSpec, ImportSummary, RegistryInfo, VerifySummary};

/// A local replica: one file holding many registries, with this replica's
/// signing key beside it.
#[derive(uniffi::Object)]
pub struct Replica {
    inner: core::Replica,
}

impl Replica {
    pub(crate) fn core(&self) -> &core::Replica {
        &self.inner
    }
}

#[uniffi::export]
impl Replica {
    /// Opens the replica at `path`, creating the file and a new key if
    /// there are none.
    #[uniffi::constructor]
    pub fn open(path: String) -> Result<Arc<Self>, ChittyError> {
        Ok(Arc::new(Replica {
            inner: core::Replica::open(path)?,
        }))
    }

    /// This replica's public key (64 hex digits): what admins add as a member.
    pub fn public_key(&self) -> String {
        self.inner.public_key().to_string()
    }

    /// Creates a registry with the given fields; this replica is its admin.
    pub fn create_registry(
        &self,
        name: String,
        fields: Vec<FieldSpec>,
    ) -> Result<Arc<Registry>, ChittyError> {
        let schema = fields
            .into_iter()
            .fold(core::Schema::new(), |s, f| s.field(f.into()));
        Ok(Registry::wrap(self.inner.create_registry(&name, schema)?))
    }

    /// Creates a registry from a schema written as TOML or JSON (the same
    /// format as the command line's `--schema` files).
    pub fn create_registry_with_schema(
        &self,
        name: String,
        schema: String,
    ) -> Result<Arc<Registry>, ChittyError> {
        let parsed = if schema.trim_start().starts_with('{') {
            core::Schema::from_json(&schema)
        } else {
            core::Schema::from_toml(&schema)
        }
        .map_err(ChittyError::from)?;
        Ok(Registry::wrap(self.inner.create_registry(&name, parsed)?))
    }

    /// A registry by name or id.
    pub fn registry(&self, name_or_id: String) -> Result<Arc<Registry>, ChittyError> {
        Ok(Registry::wrap(self.inner.registry(&name_or_id)?))
    }

    /// Every registry this replica holds.
    pub fn registries(&self) -> Result<Vec<RegistryInfo>, ChittyError> {
        Ok(self
            .inner
            .registries()?
            .into_iter()
            .map(|r| RegistryInfo {
                id: r.id.to_string(),
                name: r.name,
                created_at: r.created_at,
            })
            .collect())
    }

    /// Verifies and applies a bundle (from `Registry.export_bundle`). A
    /// bundle with any bad change is refused whole.
    pub fn import_bundle(&self, bundle: Vec<u8>) -> Result<ImportSummary, ChittyError> {
        let bundle = core::Bundle::from_bytes(&bundle)?;
        Ok(self.inner.import(bundle)?.into())
    }

    /// Re-checks everything from genesis (one registry, or all): hashes,
    /// signatures, authors, roles, schema, journal, checkpoints.
    pub fn verify(&self, registry: Option<String>) -> Result<VerifySummary, ChittyError> {
        Ok(self.inner.verify(registry.as_deref())?.into())
    }
}
