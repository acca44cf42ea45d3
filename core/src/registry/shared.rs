//! What a replica and each of its registry handles share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::DocState;
use crate::identity::Identity;
use crate::ids::RegistryId;
use crate::store::Store;

/// What every handle of one replica shares: its key, its store and the
/// registries loaded in memory.
pub(crate) struct Shared {
    pub(crate) identity: Identity,
    store: Mutex<Store>,
    /// Registries loaded in memory. Lock order: this map, then a registry's
    /// state, then the store — never the other way round.
    open: Mutex<HashMap<RegistryId, Arc<Mutex<DocState>>>>,
    path: PathBuf,
}

impl Shared {
    pub(crate) fn new(identity: Identity, store: Store, path: &Path) -> Self {
        Shared {
            identity,
            store: Mutex::new(store),
            open: Mutex::new(HashMap::new()),
            path: path.to_path_buf(),
        }
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn open_map(&self) -> MutexGuard<'_, HashMap<RegistryId, Arc<Mutex<DocState>>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
