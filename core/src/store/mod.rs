//! The replica's SQLite file: registries, their signed changes, compacted
//! snapshots and admin-change index; the hash-chained journal and signed
//! log checkpoints; attestations; mirror bindings and merge bases
//! (`adapter_bindings`, `adapter_rows`); and the peer tables (`peers`,
//! `peer_pins`, `peer_nonces`, `peer_sync_states`, `registry_origins`, see
//! `peers.rs`). The schema is in
//! `migrations.rs`.
//!
//! Every acknowledged write is one `IMMEDIATE` transaction with
//! `synchronous = FULL` in WAL mode, so a crash at any point loses nothing
//! that was acknowledged.

mod bindings;
mod migrations;
mod peers;
mod tokens;

pub(crate) use bindings::MirrorRunRow;
pub(crate) use tokens::TokenRow;

pub(crate) use peers::PinOutcome;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::clock::now_ms;
use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::trust::attest::Attestation;

/// The replica's store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error(
        "replica store {path}: {action} failed: {source}; check the file and the disk, then retry"
    )]
    Sql {
        /// The store file.
        path: String,
        /// What was being done.
        action: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Stored data does not decode.
    #[error(
        "replica store {path} is damaged: {what}; restore it from a backup or re-import from a peer"
    )]
    Corrupt {
        /// The store file.
        path: String,
        /// What is damaged.
        what: String,
    },
    /// The file was written by a newer version.
    #[error(
        "replica store {path} has format version {found}, newer than this ChittySync knows ({known}); upgrade ChittySync to open it"
    )]
    TooNew {
        /// The store file.
        path: String,
        /// The file's version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
}

impl StoreError {
    pub(crate) fn corrupt(path: &str, what: String) -> Self {
        StoreError::Corrupt {
            path: path.to_owned(),
            what,
        }
    }
}

pub(crate) fn sql<'a>(
    path: &'a str,
    action: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sql {
        path: path.to_owned(),
        action,
        source,
    }
}

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

/// A change's author key and signature, by change hash.
pub(crate) type Signed = ([u8; 32], [u8; 64]);

/// A change row as stored.
#[derive(Clone, Debug)]
pub(crate) struct ChangeRow {
    pub(crate) hash: [u8; 32],
    pub(crate) bytes: Vec<u8>,
    pub(crate) actor: Vec<u8>,
    pub(crate) seq: u64,
    pub(crate) start_op: u64,
    pub(crate) time: i64,
    pub(crate) author: [u8; 32],
    pub(crate) signature: [u8; 64],
}

/// A registry as listed in the store.
#[derive(Clone, Debug)]
pub(crate) struct RegistryRow {
    pub(crate) id: RegistryId,
    pub(crate) name: String,
    pub(crate) created_at: i64,
}

/// A stored change outside the snapshot: its position, its recorded hash
/// and its bytes (which a load checks against the hash before applying).
pub(crate) struct TailRow {
    pub(crate) pos: i64,
    pub(crate) hash: [u8; 32],
    pub(crate) bytes: Vec<u8>,
}

/// What is needed to rebuild a registry's document.
pub(crate) struct Stored {
    pub(crate) snapshot: Option<Vec<u8>>,
    pub(crate) tail: Vec<TailRow>,
    pub(crate) max_pos: i64,
    pub(crate) max_time: i64,
    pub(crate) total: i64,
}

pub(crate) struct Store {
    conn: Connection,
    path: String,
}

impl Store {
    pub(crate) fn open(path: &Path) -> Result<Store> {
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(sql(&shown, "open"))?;
        let mut store = Store { conn, path: shown };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    fn err(&self, action: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        sql(&self.path, action)
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Every PRAGMA the store relies on, in one place.
    fn configure(&mut self) -> Result<()> {
        self.conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(self.err("set busy timeout"))?;
        self.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;",
            )
            .map_err(self.err("configure"))
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.err("read schema version"))?;
        let known = migrations::MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql_text) in migrations::MIGRATIONS
            .iter()
            .enumerate()
            .skip(version as usize)
        {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql(&self.path, "begin migration"))?;
            tx.execute_batch(sql_text)
                .and_then(|_| tx.pragma_update(None, "user_version", i as i64 + 1))
                .and_then(|_| tx.commit())
                .map_err(sql(&self.path, "migrate"))?;
        }
        Ok(())
    }

    /// Starts a write transaction; take it before reading what the write
    /// depends on, so two processes never interleave.
    pub(crate) fn begin(&mut self) -> Result<StoreTx<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&self.path, "begin transaction"))?;
        Ok(StoreTx {
            tx,
            path: &self.path,
        })
    }

    pub(crate) fn registries(&self) -> Result<Vec<RegistryRow>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name, created_at FROM registries ORDER BY name, id")
            .map_err(self.err("list registries"))?;
        let rows = stmt
            .query_map([], |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok((id, r.get(1)?, r.get(2)?))
            })
            .map_err(self.err("list registries"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err("list registries"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, name, created_at)| {
                Some(RegistryRow {
                    id: RegistryId::from_bytes(&id)?,
                    name,
                    created_at,
                })
            })
            .collect())
    }

    /// Author key and signature of each of `hashes` (missing ones are absent).
    pub(crate) fn signatures(
        &self,
        id: &RegistryId,
        hashes: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Signed>> {
        let mut out = HashMap::with_capacity(hashes.len());
        let mut read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<()> {
            let hash: Vec<u8> = row.get(0)?;
            let key: Vec<u8> = row.get(1)?;
            let sig: Vec<u8> = row.get(2)?;
            if let (Ok(h), Ok(k), Ok(s)) = (hash.try_into(), key.try_into(), sig.try_into()) {
                out.insert(h, (k, s));
            }
            Ok(())
        };
        // Many hashes: one scan beats many lookups.
        if hashes.len() > 64 {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT hash, author_key, signature FROM changes WHERE registry_id = ?1",
                )
                .map_err(self.err("read signatures"))?;
            let mut rows = stmt
                .query([id.as_bytes()])
                .map_err(self.err("read signatures"))?;
            while let Some(row) = rows.next().map_err(self.err("read signatures"))? {
                read(row).map_err(self.err("read signatures"))?;
            }
        } else {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT hash, author_key, signature FROM changes
                     WHERE registry_id = ?1 AND hash = ?2",
                )
                .map_err(self.err("read signatures"))?;
            for h in hashes {
                let mut rows = stmt
                    .query(params![id.as_bytes(), &h[..]])
                    .map_err(self.err("read signatures"))?;
                if let Some(row) = rows.next().map_err(self.err("read signatures"))? {
                    read(row).map_err(self.err("read signatures"))?;
                }
            }
        }
        Ok(out)
    }
}

/// The registry's compacted snapshot, if any.
pub(crate) fn snapshot(conn: &Connection, path: &str, id: &RegistryId) -> Result<Option<Vec<u8>>> {
    conn.query_row(
        "SELECT data FROM snapshots WHERE registry_id = ?1",
        [id.as_bytes()],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql(path, "read snapshot"))
}

/// SQLite's own check of the file's structure.
pub(crate) fn quick_check(conn: &Connection, path: &str) -> Result<()> {
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql(path, "check the file"))?;
    if problems.iter().all(|p| p == "ok") {
        Ok(())
    } else {
        Err(StoreError::corrupt(
            path,
            format!("SQLite found damage: {}", problems.join("; ")),
        ))
    }
}

/// The changes of a registry that touched its members, schema or meta.
pub(crate) fn admin_changes(
    conn: &Connection,
    path: &str,
    id: &RegistryId,
) -> Result<std::collections::BTreeSet<automerge::ChangeHash>> {
    let mut stmt = conn
        .prepare_cached("SELECT hash FROM admin_changes WHERE registry_id = ?1")
        .map_err(sql(path, "read admin changes"))?;
    let rows: Vec<Vec<u8>> = stmt
        .query_map([id.as_bytes()], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(sql(path, "read admin changes"))?;
    rows.into_iter()
        .map(|h| {
            automerge::ChangeHash::try_from(h.as_slice()).map_err(|_| {
                StoreError::corrupt(path, format!("registry {id}: a bad admin change hash"))
            })
        })
        .collect()
}

/// Records a registry's changes that touched members, schema or meta, on a
/// connection that may or may not be in a transaction (each row on its own
/// otherwise). Used to fill the index for registries stored before it.
pub(crate) fn fill_admin_changes(
    conn: &Connection,
    path: &str,
    id: &RegistryId,
    hashes: &std::collections::BTreeSet<automerge::ChangeHash>,
) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("INSERT OR IGNORE INTO admin_changes (registry_id, hash) VALUES (?1, ?2)")
        .map_err(sql(path, "store admin changes"))?;
    for hash in hashes {
        stmt.execute(params![id.as_bytes(), &hash.0[..]])
            .map_err(sql(path, "store admin changes"))?;
    }
    Ok(())
}

/// The stored attestations of a registry.
pub(crate) fn attestations(
    conn: &Connection,
    path: &str,
    id: &RegistryId,
) -> Result<Vec<Attestation>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT member, heads, digest, change_count, signature FROM attestations
             WHERE registry_id = ?1 ORDER BY received_at, member",
        )
        .map_err(sql(path, "read attestations"))?;
    // member, heads, digest, change count, signature
    type Row = (Vec<u8>, Vec<u8>, Vec<u8>, i64, Vec<u8>);
    let rows: Vec<Row> = stmt
        .query_map([id.as_bytes()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(sql(path, "read attestations"))?;
    rows.into_iter()
        .map(|(member, heads, digest, count, signature)| {
            let bad = || {
                StoreError::corrupt(
                    path,
                    format!("registry {id}: a stored attestation does not decode"),
                )
            };
            Ok(Attestation {
                registry: *id,
                member: PublicKey::from_bytes(&member).map_err(|_| bad())?,
                heads: Attestation::heads_from_bytes(&heads).ok_or_else(bad)?,
                digest: digest.try_into().map_err(|_| bad())?,
                change_count: count as u64,
                signature: signature.try_into().map_err(|_| bad())?,
            })
        })
        .collect()
}

/// This replica's transparency log: every accepted change as (registry id,
/// change hash), in acceptance order.
pub(crate) fn log(conn: &Connection, path: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut stmt = conn
        .prepare_cached("SELECT registry_id, hash FROM changes ORDER BY pos")
        .map_err(sql(path, "read the log"))?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(sql(path, "read the log"))
}

/// Stored checkpoint notes, by tree size.
pub(crate) fn checkpoints(conn: &Connection, path: &str) -> Result<Vec<(i64, Vec<u8>, String)>> {
    let mut stmt = conn
        .prepare_cached("SELECT size, root, note FROM checkpoints ORDER BY size")
        .map_err(sql(path, "read checkpoints"))?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect())
        .map_err(sql(path, "read checkpoints"))
}

/// Changes whenever another connection commits to the file; cheap to read.
pub(crate) fn data_version(conn: &Connection, path: &str) -> Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
        .map_err(sql(path, "read data version"))
}

/// What another process stored for `id` after `pos`, which this one has
/// not loaded yet.
pub(crate) fn catch_up(
    conn: &Connection,
    path: &str,
    id: &RegistryId,
    pos: i64,
) -> Result<CatchUp> {
    let (newer, folded): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(*) - COUNT(bytes) FROM changes WHERE registry_id = ?1 AND pos > ?2",
            params![id.as_bytes(), pos],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql(path, "look for new changes"))?;
    Ok(if newer == 0 {
        CatchUp::UpToDate
    } else if folded > 0 {
        // Another process compacted changes this one never loaded.
        CatchUp::Reload
    } else {
        CatchUp::Apply(tail_since(conn, id, pos).map_err(sql(path, "read new changes"))?)
    })
}

/// The kind and detail of the last journal entry about `id`.
pub(crate) fn last_journal_entry(
    conn: &Connection,
    path: &str,
    id: &RegistryId,
) -> Result<Option<(String, String)>> {
    conn.query_row(
        "SELECT kind, detail FROM journal WHERE registry_id = ?1 ORDER BY seq DESC LIMIT 1",
        [id.as_bytes()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(sql(path, "read journal"))
}

/// A registry's name as listed in the store, if it can be read.
pub(crate) fn registry_name(conn: &Connection, id: &RegistryId) -> Option<String> {
    conn.query_row(
        "SELECT name FROM registries WHERE id = ?1",
        [id.as_bytes()],
        |r| r.get(0),
    )
    .ok()
}

/// Reads what is needed to rebuild a registry's document.
pub(crate) fn load(conn: &Connection, path: &str, id: &RegistryId) -> Result<Stored> {
    let snapshot: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT upto_pos, data FROM snapshots WHERE registry_id = ?1",
            [id.as_bytes()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql(path, "read snapshot"))?;
    let upto = snapshot.as_ref().map_or(0, |s| s.0);
    let tail = tail_since(conn, id, upto).map_err(sql(path, "read changes"))?;
    let (max_pos, max_time, total): (Option<i64>, Option<i64>, i64) = conn
        .query_row(
            "SELECT MAX(pos), MAX(time), COUNT(*) FROM changes WHERE registry_id = ?1",
            [id.as_bytes()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(sql(path, "read change positions"))?;
    Ok(Stored {
        snapshot: snapshot.map(|s| s.1),
        tail,
        max_pos: max_pos.unwrap_or(0),
        max_time: max_time.unwrap_or(0),
        total,
    })
}

fn tail_since(conn: &Connection, id: &RegistryId, pos: i64) -> rusqlite::Result<Vec<TailRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT pos, hash, bytes FROM changes
         WHERE registry_id = ?1 AND pos > ?2 AND bytes IS NOT NULL ORDER BY pos",
    )?;
    stmt.query_map(params![id.as_bytes(), pos], |r| {
        let hash: Vec<u8> = r.get(1)?;
        Ok(TailRow {
            pos: r.get(0)?,
            // A hash of another length matches no change: the load says so.
            hash: hash.try_into().unwrap_or([0; 32]),
            bytes: r.get(2)?,
        })
    })?
    .collect()
}

/// Domain tag of journal row hashes.
const JOURNAL_DOMAIN: &[u8] = b"chittysync/journal/v1\n";

/// One row of the local journal.
#[derive(Clone, Debug)]
pub(crate) struct JournalRow {
    pub(crate) seq: i64,
    pub(crate) at: i64,
    pub(crate) registry: Option<Vec<u8>>,
    pub(crate) kind: String,
    pub(crate) detail: String,
    pub(crate) prev: Vec<u8>,
    pub(crate) hash: Vec<u8>,
}

impl JournalRow {
    /// The hash this row must have, from its content and its predecessor's hash.
    pub(crate) fn expected_hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(JOURNAL_DOMAIN);
        h.update(&self.prev);
        h.update(self.seq.to_be_bytes());
        h.update(self.at.to_be_bytes());
        let registry = self.registry.as_deref().unwrap_or_default();
        for part in [registry, self.kind.as_bytes(), self.detail.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

/// Every journal row, in order.
pub(crate) fn journal_len(conn: &Connection, path: &str) -> Result<u64> {
    conn.query_row("SELECT count(*) FROM journal", [], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .map_err(sql(path, "count journal entries"))
}

fn journal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JournalRow> {
    Ok(JournalRow {
        seq: r.get(0)?,
        at: r.get(1)?,
        registry: r.get(2)?,
        kind: r.get(3)?,
        detail: r.get(4)?,
        prev: r.get(5)?,
        hash: r.get(6)?,
    })
}

pub(crate) fn journal(conn: &Connection, path: &str) -> Result<Vec<JournalRow>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, at, registry_id, kind, detail, prev, hash FROM journal ORDER BY seq",
        )
        .map_err(sql(path, "read journal"))?;
    stmt.query_map([], journal_row)
        .and_then(|rows| rows.collect())
        .map_err(sql(path, "read journal"))
}

/// The last `limit` journal entries about `registry`, oldest first.
pub(crate) fn journal_of(
    conn: &Connection,
    path: &str,
    registry: &RegistryId,
    limit: usize,
) -> Result<Vec<JournalRow>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT * FROM (
                SELECT seq, at, registry_id, kind, detail, prev, hash FROM journal
                WHERE registry_id = ?1 ORDER BY seq DESC LIMIT ?2
             ) ORDER BY seq",
        )
        .map_err(sql(path, "read journal"))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    stmt.query_map(params![registry.as_bytes().as_slice(), limit], journal_row)
        .and_then(|rows| rows.collect())
        .map_err(sql(path, "read journal"))
}

/// How to bring an in-memory document up to date with the store.
pub(crate) enum CatchUp {
    UpToDate,
    /// Apply these in order.
    Apply(Vec<TailRow>),
    /// Load the registry again from its snapshot.
    Reload,
}

/// An open write transaction. Dropping it without [`StoreTx::commit`] rolls back.
pub(crate) struct StoreTx<'a> {
    tx: Transaction<'a>,
    path: &'a str,
}

impl<'a> StoreTx<'a> {
    fn err(&self, action: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + use<'a> {
        sql(self.path, action)
    }

    pub(crate) fn path(&self) -> &'a str {
        self.path
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.tx
    }

    pub(crate) fn commit(self) -> Result<()> {
        let path = self.path;
        self.tx.commit().map_err(sql(path, "commit"))
    }

    /// Appends an event to the hash-chained journal.
    pub(crate) fn journal(
        &self,
        registry: Option<&RegistryId>,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        let last: Option<(i64, Vec<u8>)> = self
            .tx
            .query_row(
                "SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err("read journal"))?;
        let (seq, prev) = last.map_or((1, vec![0; 32]), |(s, h)| (s + 1, h));
        let mut row = JournalRow {
            seq,
            at: now_ms(),
            registry: registry.map(|r| r.as_bytes().to_vec()),
            kind: kind.to_owned(),
            detail: detail.to_string(),
            prev,
            hash: Vec::new(),
        };
        row.hash = row.expected_hash().to_vec();
        self.tx
            .execute(
                "INSERT INTO journal (seq, at, registry_id, kind, detail, prev, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    row.seq,
                    row.at,
                    row.registry,
                    row.kind,
                    row.detail,
                    row.prev,
                    row.hash
                ],
            )
            .map(drop)
            .map_err(self.err("append to journal"))
    }

    /// Stores an attestation; `false` if it was already stored.
    pub(crate) fn insert_attestation(&self, a: &Attestation) -> Result<bool> {
        self.tx
            .execute(
                "INSERT OR IGNORE INTO attestations
                 (registry_id, member, heads, digest, change_count, signature, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    a.registry.as_bytes(),
                    a.member.as_bytes(),
                    a.heads_bytes(),
                    &a.digest[..],
                    a.change_count as i64,
                    &a.signature[..],
                    now_ms()
                ],
            )
            .map(|n| n == 1)
            .map_err(self.err("store attestation"))
    }

    /// Stores a signed checkpoint (one per tree size).
    pub(crate) fn insert_checkpoint(&self, size: u64, root: &[u8; 32], note: &str) -> Result<()> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO checkpoints (size, root, note, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![size as i64, &root[..], note, now_ms()],
            )
            .map(drop)
            .map_err(self.err("store checkpoint"))
    }

    pub(crate) fn insert_registry(
        &self,
        id: &RegistryId,
        name: &str,
        created_at: i64,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO registries (id, name, created_at, added_at) VALUES (?1, ?2, ?3, ?4)",
                params![id.as_bytes(), name, created_at, now_ms()],
            )
            .map(drop)
            .map_err(self.err("add registry"))
    }

    /// Appends changes in order; returns the position of the last one.
    pub(crate) fn insert_changes(&self, id: &RegistryId, rows: &[ChangeRow]) -> Result<i64> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO changes
                 (registry_id, hash, bytes, actor, seq, start_op, time, author_key, signature, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(self.err("store changes"))?;
        let now = now_ms();
        for row in rows {
            stmt.execute(params![
                id.as_bytes(),
                &row.hash[..],
                row.bytes,
                row.actor,
                row.seq as i64,
                row.start_op as i64,
                row.time,
                &row.author[..],
                &row.signature[..],
                now,
            ])
            .map_err(self.err("store changes"))?;
        }
        Ok(self.tx.last_insert_rowid())
    }

    /// Records changes that touched members, schema or meta.
    pub(crate) fn insert_admin_changes(
        &self,
        id: &RegistryId,
        hashes: &[automerge::ChangeHash],
    ) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO admin_changes (registry_id, hash) VALUES (?1, ?2)",
            )
            .map_err(self.err("store admin changes"))?;
        for hash in hashes {
            stmt.execute(params![id.as_bytes(), &hash.0[..]])
                .map_err(self.err("store admin changes"))?;
        }
        Ok(())
    }

    /// Replaces the snapshot and drops the raw bytes of the changes it covers.
    pub(crate) fn save_snapshot(&self, id: &RegistryId, upto_pos: i64, data: &[u8]) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO snapshots (registry_id, upto_pos, data, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(registry_id) DO UPDATE SET upto_pos = ?2, data = ?3, created_at = ?4",
                params![id.as_bytes(), upto_pos, data, now_ms()],
            )
            .map_err(self.err("save snapshot"))?;
        self.tx
            .execute(
                "UPDATE changes SET bytes = NULL WHERE registry_id = ?1 AND pos <= ?2 AND bytes IS NOT NULL",
                params![id.as_bytes(), upto_pos],
            )
            .map(drop)
            .map_err(self.err("compact changes"))
    }
}
