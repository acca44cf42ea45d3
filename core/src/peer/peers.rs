//! What the store keeps about peers, for the peer protocol: each function
//! is one query or transaction on the store's peer tables
//! (`store/peers.rs`), run with the replica's store locked.

use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::replica::Replica;
use crate::store::{PinOutcome, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

/// Records a nonce from `peer`; `false` if it was seen before (a replay).
pub(crate) fn remember_nonce(
    replica: &Replica,
    peer: &PublicKey,
    nonce: &[u8; 16],
    at: i64,
) -> Result<bool> {
    replica.with_store(|store| store.record_peer_nonce(peer, nonce, at))
}

/// Forgets nonces older than `before` (ms).
pub(crate) fn prune_nonces(replica: &Replica, before: i64) -> Result<()> {
    replica.with_store(|store| store.prune_peer_nonces(before))
}

/// The stored sync state with `peer` for a registry.
pub(crate) fn sync_state(
    replica: &Replica,
    peer: &PublicKey,
    registry: &RegistryId,
) -> Result<Option<Vec<u8>>> {
    replica.with_store(|store| store.peer_sync_state(peer, registry))
}

/// Stores sync states with `peer`, and journals what moved per registry.
pub(crate) fn save_sync_states(
    replica: &Replica,
    peer: &PublicKey,
    states: &[(RegistryId, Vec<u8>)],
    moved: &[(RegistryId, usize, usize)],
) -> Result<()> {
    replica.with_store(|store| store.save_peer_sync_states(peer, states, moved))
}

/// The key pinned for `address`.
pub(crate) fn key_at(replica: &Replica, address: &str) -> Result<Option<PublicKey>> {
    replica.with_store(|store| store.peer_key_at(address))
}

/// Notes that `key` was seen and, with the address we dialled, pins it
/// there (moving an old pin only when the key was `given`).
pub(crate) fn remember_peer(
    replica: &Replica,
    key: &PublicKey,
    address: Option<&str>,
    given: bool,
) -> Result<PinOutcome> {
    replica.with_store(|store| store.remember_peer(key, address, given))
}

/// How many registries `peer` brought to this replica.
pub(crate) fn registries_from(replica: &Replica, peer: &PublicKey) -> Result<u64> {
    replica.with_store(|store| store.registries_from(peer))
}

/// Records that `peer` brought `registry` here.
pub(crate) fn record_registry_origin(
    replica: &Replica,
    registry: &RegistryId,
    peer: &PublicKey,
) -> Result<()> {
    replica.with_store(|store| store.record_registry_origin(registry, peer))
}

/// Journals a refusal concerning a peer. Best effort: the refusal stands
/// even if it cannot be journaled.
pub(crate) fn journal_refusal(
    replica: &Replica,
    registry: Option<&RegistryId>,
    peer: &str,
    reason: &str,
) {
    let done = replica.with_store(|store| store.journal_peer_refusal(registry, peer, reason));
    if let Err(e) = done {
        tracing::warn!(error = %e, "could not journal a refused peer");
    }
}
