//! One module per command (or per family of commands), each with its clap
//! arguments and a `run` function. `main` parses, then dispatches here.

pub(crate) mod adapter;
pub(crate) mod attest;
pub(crate) mod audit;
pub(crate) mod bundle;
pub(crate) mod checkpoint;
pub(crate) mod conflicts;
pub(crate) mod demo;
pub(crate) mod init;
pub(crate) mod members;
pub(crate) mod peer;
pub(crate) mod records;
pub(crate) mod registry;
pub(crate) mod sync;
pub(crate) mod token;
pub(crate) mod verify;

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use chittysync::{Registry, Replica};

/// The global flags every command gets.
pub(crate) struct Globals {
    /// `--replica`: the replica's SQLite file, if given.
    pub(crate) replica: Option<PathBuf>,
    /// `--json`: print JSON instead of tables.
    pub(crate) json: bool,
}

impl Globals {
    /// Opens the replica (creating it on first use). Commands that need no
    /// replica (`demo`, `verify-proof`) never call this.
    pub(crate) fn open(&self) -> Result<Replica> {
        let path = match &self.replica {
            Some(p) => p.clone(),
            None => default_replica_path()?,
        };
        Replica::open(&path).with_context(|| format!("opening replica {}", path.display()))
    }
}

fn default_replica_path() -> Result<PathBuf> {
    let base = dirs::data_dir().ok_or_else(|| {
        anyhow!("no per-user data directory here; pass --replica PATH or set CHITTYSYNC_REPLICA")
    })?;
    Ok(base.join("chittysync").join("replica.db"))
}

/// The registry named `name` (or with that id) in `replica`.
pub(crate) fn registry(replica: &Replica, name: &str) -> Result<Registry> {
    Ok(replica.registry(name)?)
}

/// The first eight characters of a key or id, for tables.
pub(crate) fn short(key: &str) -> String {
    key.chars().take(8).collect()
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
