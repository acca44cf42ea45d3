//! Adapter kinds: how a stored binding finds the adapter that connects it.
//!
//! The engine knows no adapter by name. Each adapter crate exports one
//! [`AdapterKind`] (`postgres`, `notion`, `sheets`); front doors (CLI, FFI,
//! server) collect the kinds they ship in an [`AdapterKinds`] and hand it to
//! [`Replica::connect_binding`] and [`AdapterKinds::setup`]. A new adapter
//! touches only its own crate and one registration line.

use std::fmt;
use std::sync::Arc;

use super::MirrorError;
use super::adapter::{Adapter, BoxFuture, RemoteTable};
use super::binding::AdapterBinding;
use crate::replica::Replica;
use crate::schema::Schema;

/// One setting a binding of some kind takes (stored in
/// [`AdapterBinding::settings`], never a secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingSpec {
    /// The setting's key.
    pub key: &'static str,
    /// What it means, in one line.
    pub help: &'static str,
}

/// What an adapter needs to connect a stored binding.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Connect<'a> {
    /// The binding (its target, settings, mapping and secret's variable).
    pub binding: &'a AdapterBinding,
    /// The bound registry's schema.
    pub schema: &'a Schema,
    /// The tag the binding's writes carry in the target's change log, so
    /// its own fetches skip them.
    pub origin: &'a str,
}

impl<'a> Connect<'a> {
    /// The context for connecting `binding` with `schema`, tagging writes
    /// with `origin`.
    pub fn new(binding: &'a AdapterBinding, schema: &'a Schema, origin: &'a str) -> Self {
        Connect {
            binding,
            schema,
            origin,
        }
    }
}

/// A kind of adapter: its name in bindings and how to connect one.
pub trait AdapterKind: Send + Sync {
    /// The name stored in [`AdapterBinding::kind`] (`postgres`).
    fn name(&self) -> &'static str;

    /// The settings a binding of this kind takes.
    fn settings(&self) -> &'static [SettingSpec] {
        &[]
    }

    /// How this kind finds changes, in words (for people setting it up).
    fn tracking(&self, table: &RemoteTable) -> String {
        format!("changes of {} fetched incrementally", table.name)
    }

    /// Connects to the target a binding names.
    fn connect<'a>(
        &'a self,
        cx: Connect<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Adapter>, MirrorError>>;

    /// Before a new binding is stored: makes the target ready (creating it
    /// from the schema if `create`) and pins in the binding whatever people
    /// may rename on the remote side (ids of properties or tabs). Returns
    /// what the target looks like. By default: connect and prepare.
    fn setup<'a>(
        &'a self,
        binding: &'a mut AdapterBinding,
        schema: &'a Schema,
        create: bool,
    ) -> BoxFuture<'a, Result<RemoteTable, MirrorError>> {
        Box::pin(async move {
            let adapter = self
                .connect(Connect::new(binding, schema, "chittysync-setup"))
                .await?;
            adapter
                .prepare(create)
                .await
                .map_err(|source| MirrorError::Adapter {
                    binding: binding.name.clone(),
                    source,
                })
        })
    }
}

/// The adapter kinds a program ships, by name.
#[derive(Clone, Default)]
pub struct AdapterKinds {
    kinds: Vec<Arc<dyn AdapterKind>>,
}

impl fmt::Debug for AdapterKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl AdapterKinds {
    /// No kinds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind (a later kind of the same name replaces an earlier one).
    pub fn with(mut self, kind: impl AdapterKind + 'static) -> Self {
        self.kinds.retain(|k| k.name() != kind.name());
        self.kinds.push(Arc::new(kind));
        self
    }

    /// The kind of that name, if shipped.
    pub fn get(&self, name: &str) -> Option<&dyn AdapterKind> {
        self.kinds
            .iter()
            .find(|k| k.name() == name)
            .map(|k| k.as_ref())
    }

    /// The names of the kinds shipped, in the order added.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }

    /// The kind a binding names, or an error listing the kinds there are.
    pub fn of(&self, binding: &AdapterBinding) -> Result<&dyn AdapterKind, MirrorError> {
        self.get(&binding.kind)
            .ok_or_else(|| MirrorError::UnknownKind {
                binding: binding.name.clone(),
                kind: binding.kind.clone(),
                known: self.names().join(", "),
            })
    }

    /// Makes a new binding's target ready and pins it (see
    /// [`AdapterKind::setup`]); call before [`Replica::add_binding`].
    pub async fn setup(
        &self,
        binding: &mut AdapterBinding,
        schema: &Schema,
        create: bool,
    ) -> Result<RemoteTable, MirrorError> {
        binding.validate(schema)?;
        let kind = self.of(binding)?;
        kind.setup(binding, schema, create).await
    }
}

impl Replica {
    /// Connects to the target a stored binding names, through the adapter
    /// of its kind among `kinds`. Adapters of other kinds (in-memory, or
    /// written in another language) are given to [`Replica::run_mirror`]
    /// directly.
    pub async fn connect_binding(
        &self,
        name: &str,
        kinds: &AdapterKinds,
    ) -> Result<Box<dyn Adapter>, MirrorError> {
        let binding = self.binding(name)?.ok_or_else(|| MirrorError::NoBinding {
            name: name.to_owned(),
        })?;
        let kind = kinds.of(&binding)?;
        let schema = self.registry(&binding.registry)?.schema();
        let origin = self.binding_origin(name)?;
        kind.connect(Connect::new(&binding, &schema, &origin)).await
    }
}
