//! The peer tables: pinned keys, seen nonces, sync states, and journal
//! entries about connections.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, StoreError, sql};
use crate::clock::now_ms;
use crate::identity::PublicKey;
use crate::ids::RegistryId;

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

    /// The key first seen at `address` (trust on first use).
    pub(crate) fn peer_key_at(&self, address: &str) -> Result<Option<PublicKey>> {
        let key: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT key FROM peers WHERE address = ?1 ORDER BY first_seen LIMIT 1",
                [address],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(self.path(), "read the peers table"))?;
        key.map(|k| {
            PublicKey::from_bytes(&k).map_err(|_| {
                StoreError::corrupt(
                    self.path(),
                    format!("the key stored for peer {address} is invalid"),
                )
            })
        })
        .transpose()
    }

    /// Notes that `key` was seen (at `address`, when we dialled it). The first
    /// time a key is seen is journaled: that is when trust on first use pinned it.
    pub(crate) fn remember_peer(&mut self, key: &PublicKey, address: Option<&str>) -> Result<()> {
        let tx = self.begin()?;
        let now = now_ms();
        let known: Option<Option<String>> = tx
            .conn()
            .query_row(
                "SELECT address FROM peers WHERE key = ?1",
                [&key.as_bytes()[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(tx.path(), "read the peers table"))?;
        match known {
            None => {
                tx.conn()
                    .execute(
                        "INSERT INTO peers (key, address, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)",
                        params![&key.as_bytes()[..], address, now],
                    )
                    .map_err(sql(tx.path(), "add a peer"))?;
                let detail = serde_json::json!({ "peer": key.to_string(), "address": address });
                tx.journal(None, "peer-pinned", &detail)?;
            }
            Some(old) => {
                let address = address.map(str::to_owned).or(old);
                tx.conn()
                    .execute(
                        "UPDATE peers SET last_seen = ?2, address = ?3 WHERE key = ?1",
                        params![&key.as_bytes()[..], now, address],
                    )
                    .map_err(sql(tx.path(), "update a peer"))?;
            }
        }
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
