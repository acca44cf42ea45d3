//! Adapter bindings: which registry mirrors which external table, how, and
//! with which key. Stored in the replica; secrets only as the names of
//! environment variables that hold them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::MirrorError;
use crate::identity::{Identity, PublicKey};
use crate::mirror::TableSpec;
use crate::registry::{Registry, Role};
use crate::replica::Replica;
use crate::schema::{ConflictPolicy, Schema};

/// Which way a binding moves data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Direction {
    /// Registry → remote only.
    Push,
    /// Remote → registry only.
    Pull,
    /// Both ways.
    #[default]
    Both,
}

impl Direction {
    /// Whether registry changes go to the remote table.
    pub fn pushes(self) -> bool {
        matches!(self, Direction::Push | Direction::Both)
    }

    /// Whether remote changes come into the registry.
    pub fn pulls(self) -> bool {
        matches!(self, Direction::Pull | Direction::Both)
    }

    /// Its name: `push`, `pull` or `both`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
            Direction::Both => "both",
        }
    }

    /// What a run may do under both the binding's and the run's direction.
    pub(crate) fn within(self, run: Direction) -> Direction {
        match (self.pushes() && run.pushes(), self.pulls() && run.pulls()) {
            (true, true) => Direction::Both,
            (true, false) => Direction::Push,
            _ => Direction::Pull,
        }
    }
}

impl std::str::FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "push" => Ok(Direction::Push),
            "pull" => Ok(Direction::Pull),
            "both" => Ok(Direction::Both),
            _ => Err(format!("unknown direction '{s}'; use push, pull or both")),
        }
    }
}

fn default_max_deletes() -> u64 {
    10
}

/// A schedule in seconds: at least a second, at most a year.
fn schedule_secs(interval: std::time::Duration) -> u64 {
    interval.as_secs().clamp(1, 366 * 86_400)
}

fn default_max_delete_percent() -> f64 {
    10.0
}

fn default_id_column() -> String {
    "id".into()
}

/// A registry bound to one external table.
///
/// Connection settings hold no secrets: a password or a connection string
/// with a password is given as the *name* of an environment variable
/// (`secret_env`), read only when the adapter connects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AdapterBinding {
    /// The binding's name, unique in the replica (letters, digits, `-`, `_`).
    pub name: String,
    /// The bound registry's name (as given when binding).
    pub registry: String,
    /// The adapter kind (`postgres`, `notion`, `sheets`, `memory`, or any
    /// other an [`AdapterKinds`](super::AdapterKinds) knows).
    pub kind: String,
    /// Non-secret settings (for Postgres: `url` without a password, or
    /// nothing when `secret_env` holds the whole connection string).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// The environment variable holding the secret (a password or a whole
    /// connection string), if any.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// What the binding points at: a table (`schema.table` for Postgres),
    /// a Notion database id, a spreadsheet id.
    #[serde(alias = "table")]
    pub target: String,
    /// The remote column holding the row id.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Registry field → remote column, where they differ.
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    /// The field that matches existing records to existing rows on the
    /// first sync (ids are matched when unset).
    #[serde(default)]
    pub key_field: Option<String>,
    /// Which way data moves.
    #[serde(default)]
    pub direction: Direction,
    /// Overrides the registry's conflict policy for this binding.
    #[serde(default)]
    pub conflict_policy: Option<ConflictPolicy>,
    /// A run may delete at most this many rows …
    #[serde(default = "default_max_deletes")]
    pub max_deletes: u64,
    /// … or this percentage of the bound rows, whichever is more, unless
    /// allowed with `allow_deletes`.
    #[serde(default = "default_max_delete_percent")]
    pub max_delete_percent: f64,
    /// How often a service (`serve`) runs the binding by itself, in
    /// seconds; `None`: only when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u64>,
}

impl AdapterBinding {
    /// A binding of `registry` to `target` through an adapter of `kind`,
    /// both ways, every field to a column of the same name.
    pub fn new(name: &str, registry: &str, kind: &str, target: &str) -> Self {
        AdapterBinding {
            name: name.to_owned(),
            registry: registry.to_owned(),
            kind: kind.to_owned(),
            settings: BTreeMap::new(),
            secret_env: None,
            target: target.to_owned(),
            id_column: default_id_column(),
            mapping: BTreeMap::new(),
            key_field: None,
            direction: Direction::Both,
            conflict_policy: None,
            max_deletes: default_max_deletes(),
            max_delete_percent: default_max_delete_percent(),
            every_secs: None,
        }
    }

    /// Has a service run the binding every `interval` (at least a second,
    /// at most a year).
    pub fn every(mut self, interval: std::time::Duration) -> Self {
        self.every_secs = Some(schedule_secs(interval));
        self
    }

    /// Sets the key field for first-sync matching.
    pub fn key_field(mut self, field: &str) -> Self {
        self.key_field = Some(field.to_owned());
        self
    }

    /// Sets the direction.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Overrides the conflict policy.
    pub fn conflict_policy(mut self, policy: ConflictPolicy) -> Self {
        self.conflict_policy = Some(policy);
        self
    }

    /// Maps a registry field to a differently named column.
    pub fn map(mut self, field: &str, column: &str) -> Self {
        self.mapping.insert(field.to_owned(), column.to_owned());
        self
    }

    /// Sets a non-secret setting.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Names the environment variable that holds the secret.
    pub fn secret_env(mut self, var: &str) -> Self {
        self.secret_env = Some(var.to_owned());
        self
    }

    /// The mapped registry fields and their columns, for the adapter.
    pub fn table_spec(&self, schema: &Schema) -> TableSpec {
        TableSpec::from_schema(&self.target, &self.id_column, schema, &self.mapping)
    }

    /// Reads the secret from its environment variable.
    pub fn secret(&self) -> Result<Option<String>, MirrorError> {
        let Some(var) = &self.secret_env else {
            return Ok(None);
        };
        std::env::var(var)
            .map(Some)
            .map_err(|_| MirrorError::MissingSecret {
                binding: self.name.clone(),
                var: var.clone(),
            })
    }

    /// Checks the binding against the registry's schema and refuses
    /// secrets in clear (a password in a setting or URL).
    pub fn validate(&self, schema: &Schema) -> Result<(), MirrorError> {
        let bad = |reason: String| MirrorError::BadBinding {
            binding: self.name.clone(),
            reason,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(bad(
                "a binding name is 1–64 letters, digits, '-' or '_'".into()
            ));
        }
        if self.target.trim().is_empty() {
            return Err(bad(
                "give the target (a table, database or spreadsheet id)".into()
            ));
        }
        for field in self.mapping.keys() {
            if schema.get(field).is_none() {
                return Err(bad(format!(
                    "the mapping names field '{field}', which registry '{}' does not have",
                    self.registry
                )));
            }
        }
        if let Some(key) = &self.key_field
            && schema.get(key).is_none()
        {
            return Err(bad(format!(
                "key field '{key}' is not a field of registry '{}'",
                self.registry
            )));
        }
        if !(0.0..=100.0).contains(&self.max_delete_percent) {
            return Err(bad("max delete percent must be between 0 and 100".into()));
        }
        for (k, v) in &self.settings {
            if looks_secret(k, v) {
                return Err(bad(format!(
                    "setting '{k}' holds a password; put the secret in an environment variable and give the variable's name as the binding's secret_env instead"
                )));
            }
        }
        Ok(())
    }
}

/// Whether a setting carries a password in clear (a `password=` option or
/// `user:password@` in a URL).
fn looks_secret(key: &str, value: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.contains("password") || key.contains("secret") || key.contains("token") {
        return true;
    }
    let lower = value.to_ascii_lowercase();
    if lower.contains("password=") {
        return true;
    }
    // scheme://user:password@host
    if let Some((_, rest)) = value.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            return userinfo.contains(':');
        }
    }
    false
}

/// What [`Replica::add_binding`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BindingAdded {
    /// The binding's own key, which signs what it brings into the registry.
    pub key: PublicKey,
    /// The binding's key file (mode 0600).
    pub key_file: PathBuf,
    /// Whether this replica (an admin) made the key a writer just now.
    pub made_writer: bool,
    /// If the key is not yet a writer and this replica cannot make it one:
    /// what an admin of the registry must do, in words.
    pub admin_must_run: Option<String>,
}

impl Replica {
    /// Where the key of binding `name` lives: beside the store.
    pub fn binding_key_path(&self, name: &str) -> PathBuf {
        self.path().with_extension(format!("binding-{name}.key"))
    }

    /// Where the run lock of binding `name` lives: beside the store.
    fn binding_lock_path(&self, name: &str) -> PathBuf {
        self.path().with_extension(format!("binding-{name}.lock"))
    }

    /// Takes binding `name`'s run lock (an exclusive lock on a file beside
    /// the store, which the system lets go when its process ends), or fails
    /// with [`MirrorError::Busy`] while another run holds it.
    pub(crate) fn lock_binding(&self, name: &str) -> Result<std::fs::File, MirrorError> {
        let path = self.binding_lock_path(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| MirrorError::BadBinding {
                binding: name.to_owned(),
                reason: format!(
                    "its run lock {} cannot be opened ({e}); check the directory's permissions",
                    path.display()
                ),
            })?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(MirrorError::Busy {
                binding: name.to_owned(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(MirrorError::BadBinding {
                binding: name.to_owned(),
                reason: format!(
                    "its run lock {} cannot be taken ({e}); check the file system supports locks",
                    path.display()
                ),
            }),
        }
    }

    /// The key that signs what binding `name` brings into its registry.
    /// Made by [`Replica::add_binding`]; a missing key file is an error
    /// (a new key would not be the member the registry knows).
    pub fn binding_identity(&self, name: &str) -> Result<Identity, MirrorError> {
        Identity::load(&self.binding_key_path(name)).map_err(MirrorError::Identity)
    }

    /// Stores a binding and gives it its own key (a 0600 key file beside the
    /// store). The key must be a writer of the registry: if this replica is
    /// an admin it adds it; otherwise [`BindingAdded::admin_must_run`] says
    /// what an admin must run.
    pub fn add_binding(&self, binding: &AdapterBinding) -> Result<BindingAdded, MirrorError> {
        let registry = self.registry(&binding.registry)?;
        binding.validate(&registry.schema())?;
        if self.binding(&binding.name)?.is_some() {
            return Err(MirrorError::BadBinding {
                binding: binding.name.clone(),
                reason: "a binding of that name exists; remove it first or choose another name"
                    .into(),
            });
        }
        let identity = Identity::load_or_create(&self.binding_key_path(&binding.name))
            .map_err(MirrorError::Identity)?;
        let key = identity.public_key();
        let (made_writer, admin_must_run) = ensure_writer(self, &registry, binding, &key)?;
        let config = serde_json::to_string(binding).expect("bindings serialize");
        let detail = serde_json::json!({
            "binding": binding.name, "kind": binding.kind, "target": binding.target,
            "key": key.to_string(),
        });
        self.with_store(|store| {
            store.save_binding(&binding.name, &registry.id(), &config, &detail)
        })?;
        Ok(BindingAdded {
            key,
            key_file: self.binding_key_path(&binding.name),
            made_writer,
            admin_must_run,
        })
    }

    /// Every binding, by name.
    pub fn bindings(&self) -> Result<Vec<AdapterBinding>, MirrorError> {
        self.with_store(|store| {
            store
                .binding_configs()?
                .iter()
                .map(|c| parse_config(store.path(), c))
                .collect()
        })
    }

    /// One binding by name.
    pub fn binding(&self, name: &str) -> Result<Option<AdapterBinding>, MirrorError> {
        self.with_store(|store| {
            let config = store.binding_config(name)?;
            config.map(|c| parse_config(store.path(), &c)).transpose()
        })
    }

    /// Removes a binding, its merge bases and its key file. Records it brought
    /// in stay; its key stays a member until an admin removes it.
    pub fn remove_binding(&self, name: &str) -> Result<AdapterBinding, MirrorError> {
        let binding = self.binding(name)?.ok_or_else(|| MirrorError::NoBinding {
            name: name.to_owned(),
        })?;
        let registry_id = self.registry(&binding.registry).ok().map(|r| r.id());
        let detail = serde_json::json!({ "binding": name, "target": binding.target });
        self.with_store(|store| store.remove_binding(name, registry_id.as_ref(), &detail))?;
        let _ = std::fs::remove_file(self.binding_lock_path(name));
        let key_file = self.binding_key_path(name);
        if key_file.exists() {
            std::fs::remove_file(&key_file).map_err(|e| MirrorError::BadBinding {
                binding: name.to_owned(),
                reason: format!(
                    "removed, but its key file {} could not be deleted ({e}); delete it by hand",
                    key_file.display()
                ),
            })?;
        }
        Ok(binding)
    }

    /// Sets how often a service runs binding `name` by itself (`None`: only
    /// when asked), and journals it.
    pub fn set_binding_schedule(
        &self,
        name: &str,
        every: Option<std::time::Duration>,
    ) -> Result<AdapterBinding, MirrorError> {
        let mut binding = self.binding(name)?.ok_or_else(|| MirrorError::NoBinding {
            name: name.to_owned(),
        })?;
        binding.every_secs = every.map(schedule_secs);
        let registry_id = self.registry(&binding.registry).ok().map(|r| r.id());
        let config = serde_json::to_string(&binding).expect("bindings serialize");
        let detail = serde_json::json!({ "binding": name, "every_secs": binding.every_secs });
        self.with_store(|store| {
            store.update_binding_config(name, registry_id.as_ref(), &config, &detail)
        })?;
        Ok(binding)
    }

    /// How many records of binding `name` have a merge base (are bound).
    pub fn bound_rows(&self, name: &str) -> Result<u64, MirrorError> {
        let count = self.with_store(|store| {
            super::merge_base::merge_base_count(store.conn(), store.path(), name)
        })?;
        Ok(count as u64)
    }

    /// The rows of binding `name` not yet applied (failed or invalid, in
    /// the last run or before): every run retries them until they are
    /// applied or gone.
    pub fn pending_rows(&self, name: &str) -> Result<Vec<super::PendingRow>, MirrorError> {
        let pending =
            self.with_store(|store| super::merge_base::pending(store.conn(), store.path(), name))?;
        Ok(pending.iter().map(|p| p.public()).collect())
    }
}

fn parse_config(path: &str, config: &str) -> Result<AdapterBinding, MirrorError> {
    serde_json::from_str(config).map_err(|e| {
        MirrorError::Store(crate::StoreError::corrupt(
            path,
            format!("a stored adapter binding does not parse: {e}"),
        ))
    })
}

/// Makes the binding's key a writer if it is not one and we can.
pub(crate) fn ensure_writer(
    replica: &Replica,
    registry: &Registry,
    binding: &AdapterBinding,
    key: &PublicKey,
) -> Result<(bool, Option<String>), MirrorError> {
    let members = registry.members();
    let role_of = |k: &PublicKey| members.iter().find(|m| m.key == *k).map(|m| m.role);
    if matches!(role_of(key), Some(Role::Writer | Role::Admin)) {
        return Ok((false, None));
    }
    if role_of(&replica.public_key()) == Some(Role::Admin) {
        registry.set_member(*key, Role::Writer)?;
        // Best effort: a name in the audit log.
        let _ = registry.set_alias(*key, Some(&format!("adapter {}", binding.name)));
        return Ok((true, None));
    }
    Ok((
        false,
        Some(format!(
            "an admin of registry '{}' must make key {key} a writer",
            binding.registry
        )),
    ))
}

impl Replica {
    /// The tag a binding's writes carry in the remote change log, so its
    /// own fetches skip them (derived from the binding's key).
    pub fn binding_origin(&self, name: &str) -> Result<String, MirrorError> {
        let key = self.binding_identity(name)?.public_key().to_string();
        Ok(format!("chittysync-{}", &key[..16]))
    }
}
