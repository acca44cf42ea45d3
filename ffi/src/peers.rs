//! Peers: one round with a peer, serving as a hub, and a stream of the
//! changes peers deliver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chittysync as core;

use crate::ChittyError;
use crate::replica::Replica;
use crate::types::public_key;

/// What one round with a peer moved in one registry.
#[derive(Clone, Debug, uniffi::Record)]
pub struct PeerRegistryReport {
    /// The registry's id.
    pub registry: String,
    /// Its name.
    pub name: String,
    /// Changes received and applied.
    pub changes_in: u64,
    /// Changes sent.
    pub changes_out: u64,
    /// Why the registry was refused, if it was.
    pub refused: Option<String>,
}

/// What one round with a peer moved.
#[derive(Clone, Debug, uniffi::Record)]
pub struct PeerReport {
    /// The peer's public key, as it proved it.
    pub peer: String,
    /// Per registry.
    pub registries: Vec<PeerRegistryReport>,
    /// Bytes sent on the wire.
    pub bytes_sent: u64,
    /// Bytes received on the wire.
    pub bytes_received: u64,
    /// How long the round took (ms).
    pub duration_ms: u64,
}

impl From<core::PeerReport> for PeerReport {
    fn from(r: core::PeerReport) -> Self {
        PeerReport {
            peer: r.peer.to_string(),
            registries: r
                .registries
                .into_iter()
                .map(|g| PeerRegistryReport {
                    registry: g.registry.to_string(),
                    name: g.name,
                    changes_in: g.changes_in as u64,
                    changes_out: g.changes_out as u64,
                    refused: g.refused,
                })
                .collect(),
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            duration_ms: r.duration.as_millis() as u64,
        }
    }
}

/// Changes a peer delivered to one registry of this replica.
#[derive(Clone, Debug, uniffi::Record)]
pub struct RemoteChange {
    /// The registry's id.
    pub registry: String,
    /// Its name.
    pub name: String,
    /// The peer that delivered them.
    pub peer: String,
    /// How many changes were applied.
    pub applied: u64,
    /// The registry's heads after them.
    pub heads: Vec<String>,
}

/// A replica serving its registries to peers. Stops when shut down or
/// dropped.
#[derive(uniffi::Object)]
pub struct Hub {
    inner: Mutex<Option<core::Hub>>,
    address: String,
}

#[uniffi::export]
impl Hub {
    /// The address it listens on (`host:port`, with the real port when 0
    /// was asked for).
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Stops accepting peers and closes the open connections.
    pub fn shutdown(&self) {
        if let Some(hub) = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take() {
            hub.shutdown();
        }
    }
}

/// The changes peers deliver to this replica, as they arrive.
#[derive(uniffi::Object)]
pub struct ChangeStream {
    inner: tokio::sync::Mutex<core::ChangeSubscription>,
}

#[uniffi::export(async_runtime = "tokio")]
impl ChangeStream {
    /// The next delivery; waits until one arrives. None once the replica
    /// is gone.
    pub async fn next(&self) -> Option<RemoteChange> {
        let changes = self.inner.lock().await.next().await?;
        Some(RemoteChange {
            registry: changes.registry.to_string(),
            name: changes.name,
            peer: changes.peer.to_string(),
            applied: changes.applied as u64,
            heads: changes.heads.iter().map(ToString::to_string).collect(),
        })
    }
}

#[uniffi::export]
impl Replica {
    /// A stream of the changes peers deliver from now on.
    pub fn subscribe(&self) -> Arc<ChangeStream> {
        Arc::new(ChangeStream {
            inner: tokio::sync::Mutex::new(self.core().subscribe()),
        })
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl Replica {
    /// Runs one round with the peer at `address` (`host:port`). With
    /// `key`, the peer must prove that key; without it, the key it proves
    /// first is pinned for its address (trust on first use). `registries`
    /// limits the round to those (empty: every registry shared with it).
    pub async fn sync_peer(
        &self,
        address: String,
        key: Option<String>,
        registries: Vec<String>,
        timeout_secs: Option<u64>,
    ) -> Result<PeerReport, ChittyError> {
        let mut peer = core::Peer::new(address);
        if let Some(k) = key {
            peer = peer.with_key(public_key(&k)?);
        }
        let options = core::PeerOptions {
            registries,
            timeout: Duration::from_secs(timeout_secs.unwrap_or(60)),
            ..core::PeerOptions::default()
        };
        Ok(self.core().sync_peer(&peer, &options).await?.into())
    }

    /// Serves this replica's registries at `address` (`host:port`; port 0
    /// picks a free one): each peer gets only the registries it is a
    /// member of. Keys that are members of no registry here are refused
    /// unless listed in `allow` or `allow_create`, or `allow_any`. A peer's
    /// push of a registry new to this replica is taken only from keys in
    /// `allow_create` (or any accepted key with `allow_create_any`), at most
    /// `create_quota` new registries per key (default 10).
    pub async fn serve(
        &self,
        address: String,
        allow: Vec<String>,
        allow_any: bool,
        allow_create: Vec<String>,
        allow_create_any: bool,
        create_quota: Option<u64>,
    ) -> Result<Arc<Hub>, ChittyError> {
        let keys = |keys: &[String]| -> Result<Vec<_>, ChittyError> {
            keys.iter().map(|k| public_key(k)).collect()
        };
        let defaults = core::ServeOptions::default();
        let options = core::ServeOptions {
            allow: keys(&allow)?,
            allow_any,
            allow_create: keys(&allow_create)?,
            allow_create_any,
            create_quota: create_quota.unwrap_or(defaults.create_quota),
            ..defaults
        };
        let hub = self.core().serve(&address, options).await?;
        Ok(Arc::new(Hub {
            address: hub.local_addr().to_string(),
            inner: Mutex::new(Some(hub)),
        }))
    }
}
