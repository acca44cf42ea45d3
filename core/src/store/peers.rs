//! The peer tables: pinned keys, seen nonces, sync states, and journal
//! entries about connections.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, StoreError, sql};
use crate::clock::now_ms;
use crate::identity::PublicKey;
use crate::ids::RegistryId;

/// What [`Store::remember_peer`] did with an address's pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PinOutcome {
    /// The address was pinned to the key now (journaled).
    Pinned,
    /// The pin stands as it was (or there was no address to pin).
    Kept,
    /// The address is pinned to this other key; nothing changed.
    Conflict(PublicKey),
}

impl Store {
    /// Records a nonce from `peer`; `false` if it was seen before (a replay).
    ///
    /// A nonce only has to outlive the clock-skew window and a restart of the
    /// process, which a commit without `fsync` does (the WAL is in the operating
    /// system's cache). So nonces are committed with `synchronous = NORMAL`:
    /// paying an `fsync` per message would halve a hub's throughput, and a
    /// power cut loses at most the last few nonces, still within the window in
    /// which their envelopes' timestamps are checked.
    pub(crate) fn record_peer_nonce(
        &mut self,
        peer: &PublicKey,
        nonce: &[u8; 16],
        at: i64,
    ) -> Result<bool> {
        let path = self.path().to_owned();
        let set = |store: &Store, mode: &str| {
            store
                .conn()
                .execute_batch(&format!("PRAGMA synchronous = {mode}"))
                .map_err(sql(&path, "set durability"))
        };
        set(self, "NORMAL")?;
        let recorded = (|| {
            let tx = self.begin()?;
            let fresh = tx
                .conn()
                .execute(
                    "INSERT OR IGNORE INTO peer_nonces (peer, nonce, at) VALUES (?1, ?2, ?3)",
                    params![&peer.as_bytes()[..], &nonce[..], at],
                )
                .map_err(sql(tx.path(), "record an envelope nonce"))?
                == 1;
            tx.commit()?;
            Ok(fresh)
        })();
        // Every other write stays fully durable.
        set(self, "FULL")?;
        recorded
    }

    /// Forgets nonces older than `before` (ms): envelopes that old are refused
    /// by their timestamp anyway.
    pub(crate) fn prune_peer_nonces(&mut self, before: i64) -> Result<()> {
        let tx = self.begin()?;
        tx.conn()
            .execute("DELETE FROM peer_nonces WHERE at < ?1", [before])
            .map_err(sql(tx.path(), "prune envelope nonces"))?;
        tx.commit()
    }

    /// The stored sync state with `peer` for a registry.
    pub(crate) fn peer_sync_state(
        &self,
        peer: &PublicKey,
        registry: &RegistryId,
    ) -> Result<Option<Vec<u8>>> {
        self.conn()
            .query_row(
                "SELECT state FROM peer_sync_states WHERE peer = ?1 AND registry_id = ?2",
                params![&peer.as_bytes()[..], &registry.as_bytes()[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(self.path(), "read a peer sync state"))
    }

    /// Stores sync states with `peer`, and journals what moved per registry
    /// (changes in, changes out) so the journal says which peer sent what.
    pub(crate) fn save_peer_sync_states(
        &mut self,
        peer: &PublicKey,
        states: &[(RegistryId, Vec<u8>)],
        moved: &[(RegistryId, usize, usize)],
    ) -> Result<()> {
        if states.is_empty() && moved.is_empty() {
            return Ok(());
        }
        let tx = self.begin()?;
        for (registry, state) in states {
            tx.conn()
                .execute(
                    "INSERT INTO peer_sync_states (peer, registry_id, state, updated_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(peer, registry_id) DO UPDATE SET state = ?3, updated_at = ?4",
                    params![
                        &peer.as_bytes()[..],
                        &registry.as_bytes()[..],
                        state,
                        now_ms()
                    ],
                )
                .map_err(sql(tx.path(), "save a peer sync state"))?;
        }
        for (registry, changes_in, changes_out) in moved {
            let detail = serde_json::json!({
                "peer": peer.to_string(),
                "changes_in": changes_in,
                "changes_out": changes_out,
            });
            tx.journal(Some(registry), "synced", &detail)?;
        }
        tx.commit()
    }

    /// The key pinned for `address`: the first proven there (trust on
    /// first use), or the one last given explicitly for it.
    pub(crate) fn peer_key_at(&self, address: &str) -> Result<Option<PublicKey>> {
        let key: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT key FROM peer_pins WHERE address = ?1",
                [address],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(self.path(), "read the peer pins"))?;
        key.map(|k| {
            PublicKey::from_bytes(&k).map_err(|_| {
                StoreError::corrupt(
                    self.path(),
                    format!("the key pinned for peer {address} is invalid"),
                )
            })
        })
        .transpose()
    }

    /// Notes that `key` was seen, and, with an address we dialled, pins it
    /// there. A pin is per address: the same key at a new address gets a pin
    /// of its own and never moves an old one. An address already pinned to
    /// another key keeps its pin unless the key was `given` explicitly (the
    /// caller then knows the peer's new key). Every new or moved pin is
    /// journaled.
    pub(crate) fn remember_peer(
        &mut self,
        key: &PublicKey,
        address: Option<&str>,
        given: bool,
    ) -> Result<PinOutcome> {
        let tx = self.begin()?;
        let now = now_ms();
        let raw = &key.as_bytes()[..];
        let fresh = tx
            .conn()
            .query_row("SELECT 1 FROM peers WHERE key = ?1", [raw], |_| Ok(()))
            .optional()
            .map_err(sql(tx.path(), "read the peers table"))?
            .is_none();
        tx.conn()
            .execute(
                "INSERT INTO peers (key, address, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(key) DO UPDATE SET last_seen = ?3, address = coalesce(?2, address)",
                params![raw, address, now],
            )
            .map_err(sql(tx.path(), "record a peer"))?;
        let Some(address) = address else {
            if fresh {
                let detail = serde_json::json!({ "peer": key.to_string(), "address": null });
                tx.journal(None, "peer-pinned", &detail)?;
            }
            tx.commit()?;
            return Ok(PinOutcome::Kept);
        };
        let pinned: Option<Vec<u8>> = tx
            .conn()
            .query_row(
                "SELECT key FROM peer_pins WHERE address = ?1",
                [address],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(tx.path(), "read the peer pins"))?;
        let outcome = match pinned {
            Some(old) if old == raw => {
                tx.conn()
                    .execute(
                        "UPDATE peer_pins SET last_seen = ?2 WHERE address = ?1",
                        params![address, now],
                    )
                    .map_err(sql(tx.path(), "update a peer pin"))?;
                PinOutcome::Kept
            }
            Some(old) if !given => {
                let old = PublicKey::from_bytes(&old).map_err(|_| {
                    StoreError::corrupt(
                        tx.path(),
                        format!("the key pinned for peer {address} is invalid"),
                    )
                })?;
                PinOutcome::Conflict(old)
            }
            previous => {
                tx.conn()
                    .execute(
                        "INSERT INTO peer_pins (address, key, pinned_at, last_seen) VALUES (?1, ?2, ?3, ?3)
                         ON CONFLICT(address) DO UPDATE SET key = ?2, pinned_at = ?3, last_seen = ?3",
                        params![address, raw, now],
                    )
                    .map_err(sql(tx.path(), "pin a peer's key"))?;
                let previous = previous.map(hex::encode);
                let detail = serde_json::json!({
                    "peer": key.to_string(),
                    "address": address,
                    "how": if given { "given" } else { "first use" },
                    "previous": previous,
                });
                tx.journal(None, "peer-pinned", &detail)?;
                PinOutcome::Pinned
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// How many registries `peer` brought to this replica.
    pub(crate) fn registries_from(&self, peer: &PublicKey) -> Result<u64> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM registry_origins WHERE peer = ?1",
                [&peer.as_bytes()[..]],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql(self.path(), "count the registries a peer brought"))
    }

    /// Records that `peer` brought `registry` here (if nobody did before).
    pub(crate) fn record_registry_origin(
        &mut self,
        registry: &RegistryId,
        peer: &PublicKey,
    ) -> Result<()> {
        let tx = self.begin()?;
        tx.conn()
            .execute(
                "INSERT OR IGNORE INTO registry_origins (registry_id, peer, added_at) VALUES (?1, ?2, ?3)",
                params![&registry.as_bytes()[..], &peer.as_bytes()[..], now_ms()],
            )
            .map_err(sql(tx.path(), "record where a registry came from"))?;
        tx.commit()
    }

    /// Journals a refusal concerning a peer.
    pub(crate) fn journal_peer_refusal(
        &mut self,
        registry: Option<&RegistryId>,
        peer: &str,
        reason: &str,
    ) -> Result<()> {
        let detail = serde_json::json!({ "peer": peer, "reason": reason });
        let tx = self.begin()?;
        tx.journal(registry, "peer-refused", &detail)?;
        tx.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::super::migrations::MIGRATIONS;
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_store_from_before_per_address_pins_opens_with_its_pins_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let hub = Identity::generate().unwrap().public_key();
        {
            // A store as the release before this migration left it.
            let conn = rusqlite::Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..6] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            conn.execute(
                "INSERT INTO peers (key, address, first_seen, last_seen) VALUES (?1, 'hub:7878', 1, 2)",
                [&hub.as_bytes()[..]],
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.peer_key_at("hub:7878").unwrap(), Some(hub));
        // The same key at a new address: pinned there too, the old pin kept.
        assert_eq!(
            store.remember_peer(&hub, Some("hub2:7878"), false).unwrap(),
            PinOutcome::Pinned
        );
        assert_eq!(store.peer_key_at("hub:7878").unwrap(), Some(hub));
        assert_eq!(store.peer_key_at("hub2:7878").unwrap(), Some(hub));
        let other = Identity::generate().unwrap().public_key();
        assert_eq!(
            store
                .remember_peer(&other, Some("hub:7878"), false)
                .unwrap(),
            PinOutcome::Conflict(hub)
        );
        assert_eq!(store.peer_key_at("hub:7878").unwrap(), Some(hub));
    }
}
