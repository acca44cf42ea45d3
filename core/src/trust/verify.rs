//! End-to-end verification of a replica: every registry re-checked from its
//! genesis, and the local journal's hash chain.

use std::collections::{HashMap, HashSet};

use automerge::{AutoCommit, Change, ChangeHash, ReadDoc};
use ed25519_dalek::Signature;
use rusqlite::Connection;

use crate::identity::PublicKey;
use crate::registry::doc::{Layout, Role};
use crate::registry::{Guard, RegistryId};
use crate::schema::{CompiledSchema, Rule, ValidationError};
use crate::store::{self, StoreError};
use crate::trust::signing_message;

/// What `verify` checked, with counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyReport {
    /// One entry per registry checked.
    pub registries: Vec<RegistryReport>,
    /// Journal rows whose hash chain was checked.
    pub journal_rows: usize,
    /// Signed checkpoints checked against the log.
    pub checkpoints: usize,
}

/// What was checked in one registry.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryReport {
    /// The registry.
    pub id: RegistryId,
    /// Its name.
    pub name: String,
    /// Changes whose hash, signature, author binding and role were checked.
    pub changes: usize,
    /// Distinct authors.
    pub authors: usize,
    /// Live records.
    pub records: usize,
    /// Records that break the current schema. They were validly signed (a
    /// concurrent schema change can cause this), so they are reported, not
    /// failures.
    pub invalid_records: Vec<ValidationError>,
}

/// The first problem `verify` found. Every variant names the item.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Stored change bytes do not decode.
    #[error(
        "registry {registry}: the change stored at position {pos} does not decode ({reason}); the store was damaged or altered"
    )]
    Undecodable {
        /// The registry.
        registry: String,
        /// The change's position in this replica's log.
        pos: i64,
        /// The decoder's message.
        reason: String,
    },
    /// Stored change bytes hash to something else than their recorded hash.
    #[error(
        "registry {registry}: the change stored at position {pos} hashes to {actual}, not its recorded hash {stored}; the store was altered"
    )]
    ChangeHash {
        /// The registry.
        registry: String,
        /// Position in this replica's log.
        pos: i64,
        /// The recorded hash.
        stored: String,
        /// The hash of the stored bytes.
        actual: String,
    },
    /// A change of the history has no stored signature.
    #[error(
        "registry {registry}: change {change} is in the history but has no stored row or signature; a change row was deleted"
    )]
    Unsigned {
        /// The registry.
        registry: String,
        /// The change.
        change: String,
    },
    /// A stored change is not part of the history.
    #[error(
        "registry {registry}: the change at position {pos} ({change}) is missing from the history; the snapshot or the row was altered"
    )]
    Missing {
        /// The registry.
        registry: String,
        /// Position in this replica's log.
        pos: i64,
        /// The change.
        change: String,
    },
    /// A signature does not verify.
    #[error(
        "registry {registry}: change {change} (position {pos}) has a bad signature for key {author}"
    )]
    BadSignature {
        /// The registry.
        registry: String,
        /// Position in this replica's log.
        pos: i64,
        /// The change.
        change: String,
        /// The recorded author.
        author: String,
    },
    /// A change's actor is not its recorded author.
    #[error(
        "registry {registry}: change {change} (position {pos}) is by actor {actor} but recorded as signed by {author}"
    )]
    ForgedActor {
        /// The registry.
        registry: String,
        /// Position in this replica's log.
        pos: i64,
        /// The change.
        change: String,
        /// Its actor.
        actor: String,
        /// Its recorded author.
        author: String,
    },
    /// The author lacked the role the change needs, as of its dependencies.
    #[error(
        "registry {registry}: change {change} (position {pos}) by {author} is not authorised: {reason}"
    )]
    NotAuthorised {
        /// The registry.
        registry: String,
        /// Position in this replica's log.
        pos: i64,
        /// The change.
        change: String,
        /// Its author.
        author: String,
        /// Why.
        reason: String,
    },
    /// The genesis is missing, duplicated, or does not match the id.
    #[error("registry {registry}: {reason}")]
    Genesis {
        /// The registry.
        registry: String,
        /// What is wrong.
        reason: String,
    },
    /// The journal's hash chain is broken.
    #[error("journal row {seq}: {reason}; the journal was altered")]
    Journal {
        /// The first bad row.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
    /// A signed checkpoint does not match the log: history this replica
    /// once showed was rewritten or dropped.
    #[error("checkpoint of size {size}: {reason}")]
    Checkpoint {
        /// The checkpoint's tree size.
        size: i64,
        /// What is wrong.
        reason: String,
    },
    /// The registry named is not in this replica.
    #[error(transparent)]
    Lookup(#[from] crate::error::LookupError),
    /// The store could not be read, or SQLite found damage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A change as verified: from the stored row and the document.
struct Row {
    pos: i64,
    hash: [u8; 32],
    bytes: Option<Vec<u8>>,
    author: Vec<u8>,
    signature: Vec<u8>,
}

fn rows(conn: &Connection, path: &str, id: &RegistryId) -> Result<Vec<Row>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT pos, hash, bytes, author_key, signature FROM changes
             WHERE registry_id = ?1 ORDER BY pos",
        )
        .map_err(store::sql(path, "read changes"))?;
    stmt.query_map([id.as_bytes()], |r| {
        let hash: Vec<u8> = r.get(1)?;
        Ok(Row {
            pos: r.get(0)?,
            hash: hash.try_into().unwrap_or([0; 32]),
            bytes: r.get(2)?,
            author: r.get(3)?,
            signature: r.get(4)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(store::sql(path, "read changes"))
}

/// Re-checks one registry from its genesis.
pub(crate) fn verify_registry(
    conn: &Connection,
    path: &str,
    id: RegistryId,
) -> Result<RegistryReport, VerifyError> {
    let registry = id.to_string();
    let rows = rows(conn, path, &id)?;
    let snapshot = store::snapshot(conn, path, &id)?;
    let mut doc = match snapshot {
        Some(data) => AutoCommit::load(&data).map_err(|e| VerifyError::Undecodable {
            registry: registry.clone(),
            pos: 0,
            reason: format!("the snapshot does not load: {e}"),
        })?,
        None => AutoCommit::new(),
    };

    // 1. Stored bytes decode and hash to their recorded hashes.
    let mut tail = Vec::new();
    for row in rows.iter().filter(|r| r.bytes.is_some()) {
        let bytes = row.bytes.clone().unwrap_or_default();
        let change = Change::from_bytes(bytes).map_err(|e| VerifyError::Undecodable {
            registry: registry.clone(),
            pos: row.pos,
            reason: e.to_string(),
        })?;
        // Automerge does not check a change's checksum (the hash's first
        // bytes, after the magic) when decoding; the hash does not cover it.
        let checksum_ok =
            row.bytes.as_deref().and_then(|b| b.get(4..8)) == Some(&change.hash().0[..4]);
        if change.hash().0 != row.hash || !checksum_ok {
            return Err(VerifyError::ChangeHash {
                registry: registry.clone(),
                pos: row.pos,
                stored: hex::encode(row.hash),
                actual: change.hash().to_string(),
            });
        }
        tail.push(change);
    }
    doc.apply_changes(tail)
        .map_err(|e| VerifyError::Undecodable {
            registry: registry.clone(),
            pos: 0,
            reason: format!("stored changes do not apply: {e}"),
        })?;

    // A stored change whose dependency is not stored: that row was deleted.
    if let Some(missing) = doc.get_missing_deps(&[]).first() {
        return Err(VerifyError::Unsigned {
            registry,
            change: missing.to_string(),
        });
    }

    // 2. The history and the stored rows are the same set of changes.
    let metas: Vec<(ChangeHash, Vec<u8>, Vec<ChangeHash>)> = doc
        .get_changes_meta(&[])
        .into_iter()
        .map(|m| (m.hash, m.actor.to_bytes().to_vec(), m.deps))
        .collect();
    let stored: HashMap<[u8; 32], &Row> = rows.iter().map(|r| (r.hash, r)).collect();
    if let Some(missing) = metas.iter().find(|(h, _, _)| !stored.contains_key(&h.0)) {
        return Err(VerifyError::Unsigned {
            registry,
            change: missing.0.to_string(),
        });
    }
    let in_doc: HashSet<[u8; 32]> = metas.iter().map(|(h, _, _)| h.0).collect();
    if let Some(row) = rows.iter().find(|r| !in_doc.contains(&r.hash)) {
        return Err(VerifyError::Missing {
            registry,
            pos: row.pos,
            change: hex::encode(row.hash),
        });
    }

    // 3. Actor = author, and every signature (one batch).
    let mut keys = Vec::with_capacity(metas.len());
    let mut decoded: HashMap<Vec<u8>, PublicKey> = HashMap::new();
    for (hash, actor, _) in &metas {
        let row = stored[&hash.0];
        if *actor != row.author {
            return Err(VerifyError::ForgedActor {
                registry,
                pos: row.pos,
                change: hash.to_string(),
                actor: hex::encode(actor),
                author: hex::encode(&row.author),
            });
        }
        let key = match decoded.get(&row.author) {
            Some(k) => *k,
            None => {
                let k =
                    PublicKey::from_bytes(&row.author).map_err(|_| VerifyError::BadSignature {
                        registry: registry.clone(),
                        pos: row.pos,
                        change: hash.to_string(),
                        author: hex::encode(&row.author),
                    })?;
                decoded.insert(row.author.clone(), k);
                k
            }
        };
        keys.push(key);
    }
    verify_signatures(&registry, &id, &metas, &stored, &keys)?;

    // 4. One genesis, matching the id, whose only member is its author.
    let roots: Vec<&(ChangeHash, Vec<u8>, Vec<ChangeHash>)> = metas
        .iter()
        .filter(|(_, _, deps)| deps.is_empty())
        .collect();
    let genesis = match roots.as_slice() {
        [g] if id.is_genesis(&g.0) => g,
        [g] => {
            return Err(VerifyError::Genesis {
                registry,
                reason: format!("its root change {} does not match the registry id", g.0),
            });
        }
        [] => {
            return Err(VerifyError::Genesis {
                registry,
                reason: "it has no genesis change".into(),
            });
        }
        _ => {
            return Err(VerifyError::Genesis {
                registry,
                reason: format!(
                    "it has {} root changes; only one genesis is allowed",
                    roots.len()
                ),
            });
        }
    };
    let layout = Layout::find(&doc).ok_or_else(|| VerifyError::Genesis {
        registry: registry.clone(),
        reason: "the document is not a registry".into(),
    })?;
    let creator = PublicKey::from_bytes(&genesis.1).ok();
    let founding = layout.members(&doc, Some(std::slice::from_ref(&genesis.0)));
    if creator.is_none_or(|c| founding != [(c, Role::Admin)]) {
        return Err(VerifyError::Genesis {
            registry,
            reason: "its genesis must make its author the only member, as admin".into(),
        });
    }

    // 5. Roles as of each change's dependencies.
    let guard = Guard::new(&layout);
    for ((hash, _, deps), key) in metas.iter().zip(&keys) {
        if deps.is_empty() {
            continue;
        }
        let refuse = |reason: &str| VerifyError::NotAuthorised {
            registry: registry.clone(),
            pos: stored[&hash.0].pos,
            change: hash.to_string(),
            author: key.to_string(),
            reason: reason.to_owned(),
        };
        match layout.role_at(&doc, key, deps) {
            Some(Role::Admin) => {}
            Some(Role::Writer) => {
                let change = doc
                    .get_change_by_hash(hash)
                    .ok_or_else(|| refuse("the change cannot be read back"))?;
                if let Some(why) = guard.admin_only(&change) {
                    return Err(refuse(why));
                }
                if let Some(record) = crate::registry::foreign_record(&doc, &layout, &change, key) {
                    return Err(refuse(&format!(
                        "record {record} may be changed only by its creator or an admin"
                    )));
                }
            }
            Some(Role::Reader) => return Err(refuse("readers cannot write")),
            None => return Err(refuse("not a member of the registry")),
        }
    }

    // 6. The schema, reported.
    let compiled = CompiledSchema::new(layout.read_schema(&doc));
    let name = layout.name(&doc);
    let mut invalid_records = Vec::new();
    let mut records = 0;
    let ids: Vec<String> = doc.keys(&layout.records).collect();
    for record in &ids {
        let Ok(Some((_, obj))) = doc.get(&layout.records, record.as_str()) else {
            continue;
        };
        if doc
            .get(&obj, crate::registry::doc::DELETED)
            .ok()
            .flatten()
            .is_some()
        {
            continue;
        }
        records += 1;
        for def in &compiled.schema.fields {
            let value = match doc.get(&obj, def.name.as_str()) {
                Ok(Some((v, vid))) => {
                    crate::registry::doc::read_value(&doc, &v, &vid, Some(def.field_type))
                }
                _ => None,
            };
            let broken = match value {
                None if def.required => Some((String::new(), Rule::Required)),
                None => None,
                Some(v) => compiled
                    .check_value(&def.name, v.clone())
                    .err()
                    .map(|rule| (v.to_string(), rule)),
            };
            if let Some((value, rule)) = broken {
                invalid_records.push(ValidationError {
                    registry: name.clone(),
                    record: record.clone(),
                    field: def.name.clone(),
                    value,
                    rule,
                });
            }
        }
    }

    Ok(RegistryReport {
        id,
        name,
        changes: metas.len(),
        authors: decoded.len(),
        records,
        invalid_records,
    })
}

fn verify_signatures(
    registry: &str,
    id: &RegistryId,
    metas: &[(ChangeHash, Vec<u8>, Vec<ChangeHash>)],
    stored: &HashMap<[u8; 32], &Row>,
    keys: &[PublicKey],
) -> Result<(), VerifyError> {
    let messages: Vec<Vec<u8>> = metas
        .iter()
        .map(|(h, _, _)| signing_message(id, h))
        .collect();
    let mut signatures = Vec::with_capacity(metas.len());
    for (hash, _, _) in metas {
        let row = stored[&hash.0];
        let bytes: [u8; 64] =
            row.signature
                .as_slice()
                .try_into()
                .map_err(|_| VerifyError::BadSignature {
                    registry: registry.to_owned(),
                    pos: row.pos,
                    change: hash.to_string(),
                    author: hex::encode(&row.author),
                })?;
        signatures.push(Signature::from_bytes(&bytes));
    }
    let verifying: Vec<_> = {
        let mut cache = HashMap::new();
        keys.iter()
            .map(|k| *cache.entry(*k).or_insert_with(|| k.verifying_key()))
            .collect()
    };
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    if ed25519_dalek::verify_batch(&refs, &signatures, &verifying).is_ok() {
        return Ok(());
    }
    for (i, (hash, _, _)) in metas.iter().enumerate() {
        if verifying[i]
            .verify_strict(&messages[i], &signatures[i])
            .is_err()
        {
            let row = stored[&hash.0];
            return Err(VerifyError::BadSignature {
                registry: registry.to_owned(),
                pos: row.pos,
                change: hash.to_string(),
                author: hex::encode(&row.author),
            });
        }
    }
    Err(VerifyError::BadSignature {
        registry: registry.to_owned(),
        pos: 0,
        change: "(batch)".into(),
        author: "(several)".into(),
    })
}

/// Checks every stored checkpoint: signed by this replica, and its root is
/// the root of the log's first `size` leaves now. Returns how many.
pub(crate) fn verify_checkpoints(
    conn: &Connection,
    path: &str,
    leaves: &[[u8; 32]],
    me: &PublicKey,
) -> Result<usize, VerifyError> {
    let stored = store::checkpoints(conn, path)?;
    for (size, _, note) in &stored {
        let bad = |reason: String| VerifyError::Checkpoint {
            size: *size,
            reason,
        };
        let checkpoint =
            crate::trust::tlog::Checkpoint::verify(note, me).map_err(|e| bad(e.to_string()))?;
        if checkpoint.size() as i64 != *size || *size as usize > leaves.len() {
            return Err(bad(format!(
                "the log now has only {} entries",
                leaves.len()
            )));
        }
        if *checkpoint.root() != crate::trust::tlog::tree_root(&leaves[..*size as usize]) {
            return Err(bad(
                "its root is not the root of the log's first entries now: history was rewritten"
                    .into(),
            ));
        }
    }
    Ok(stored.len())
}

/// Re-checks the journal's hash chain; returns its length.
pub(crate) fn verify_journal(conn: &Connection, path: &str) -> Result<usize, VerifyError> {
    let rows = store::journal(conn, path)?;
    let mut prev = vec![0u8; 32];
    for (i, row) in rows.iter().enumerate() {
        let bad = |reason: &str| VerifyError::Journal {
            seq: row.seq,
            reason: reason.to_owned(),
        };
        if row.seq != i as i64 + 1 {
            return Err(bad(&format!(
                "expected row {} here: a row was deleted or inserted",
                i + 1
            )));
        }
        if row.prev != prev {
            return Err(bad("it does not link to the previous row"));
        }
        if row.hash != row.expected_hash() {
            return Err(bad("its content does not match its hash"));
        }
        prev = row.hash.clone();
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FieldDef, FieldType, Replica, Role, Schema};

    struct Setup {
        dir: tempfile::TempDir,
        db: std::path::PathBuf,
    }

    /// A replica with a registry written by two members, partly compacted.
    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let a = Replica::open(&db).unwrap();
        let b = Replica::open(dir.path().join("b.db")).unwrap();
        let schema = Schema::new().field(FieldDef::new("name", FieldType::Text).required());
        let ra = a.create_registry("r", schema).unwrap();
        ra.set_member(b.public_key(), Role::Writer).unwrap();
        for i in 0..5 {
            ra.put(None, [("name", format!("a{i}"))]).unwrap();
        }
        ra.compact().unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        let rb = b.registry("r").unwrap();
        for i in 0..5 {
            rb.put(None, [("name", format!("b{i}"))]).unwrap();
        }
        a.import(rb.export(&ra.heads()).unwrap()).unwrap();
        Setup { dir, db }
    }

    fn sql(db: &std::path::Path, statement: &str) {
        let conn = Connection::open(db).unwrap();
        conn.execute_batch(statement).unwrap();
    }

    fn verify(db: &std::path::Path) -> Result<VerifyReport, VerifyError> {
        Replica::open(db).unwrap().verify(None)
    }

    #[test]
    fn an_untouched_replica_verifies_with_counts() {
        let s = setup();
        let report = verify(&s.db).unwrap();
        let r = &report.registries[0];
        assert_eq!((r.changes, r.authors, r.records), (12, 2, 10));
        assert!(r.invalid_records.is_empty());
        // created, 7 local writes, 1 accepted import.
        assert_eq!(report.journal_rows, 8);
        let _ = s.dir;
    }

    #[test]
    fn altered_change_bytes_are_named() {
        let s = setup();
        let conn = Connection::open(&s.db).unwrap();
        let (pos, mut bytes): (i64, Vec<u8>) = conn
            .query_row(
                "SELECT pos, bytes FROM changes WHERE bytes IS NOT NULL ORDER BY pos DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        bytes[40] ^= 0x01;
        conn.execute(
            "UPDATE changes SET bytes = ?1 WHERE pos = ?2",
            rusqlite::params![bytes, pos],
        )
        .unwrap();
        drop(conn);
        let err = verify(&s.db).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::ChangeHash { .. } | VerifyError::Undecodable { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("position"), "{err}");
    }

    #[test]
    fn a_deleted_change_row_is_named() {
        let s = setup();
        let conn = Connection::open(&s.db).unwrap();
        let hash: Vec<u8> = conn
            .query_row("SELECT hash FROM changes WHERE pos = 3", [], |r| r.get(0))
            .unwrap();
        conn.execute("DELETE FROM changes WHERE pos = 3", [])
            .unwrap();
        drop(conn);
        let err = verify(&s.db).unwrap_err();
        assert!(matches!(err, VerifyError::Unsigned { .. }), "{err}");
        assert!(err.to_string().contains(&hex::encode(hash)), "{err}");
    }

    #[test]
    fn swapped_signatures_and_authors_are_named() {
        let s = setup();
        sql(
            &s.db,
            "UPDATE changes SET signature = (SELECT signature FROM changes WHERE pos = 2) WHERE pos = 4",
        );
        assert!(matches!(
            verify(&s.db).unwrap_err(),
            VerifyError::BadSignature { pos: 4, .. }
        ));

        let s = setup();
        sql(
            &s.db,
            "UPDATE changes SET author_key = (SELECT author_key FROM changes ORDER BY pos DESC LIMIT 1)
             WHERE pos = 1",
        );
        assert!(matches!(
            verify(&s.db).unwrap_err(),
            VerifyError::ForgedActor { pos: 1, .. }
        ));
    }

    #[test]
    fn journal_tampering_is_named() {
        let s = setup();
        sql(&s.db, "UPDATE journal SET detail = '{}' WHERE seq = 2");
        let err = verify(&s.db).unwrap_err();
        assert!(matches!(err, VerifyError::Journal { seq: 2, .. }), "{err}");

        let s = setup();
        sql(&s.db, "DELETE FROM journal WHERE seq = 1");
        assert!(matches!(
            verify(&s.db).unwrap_err(),
            VerifyError::Journal { seq: 2, .. }
        ));
    }

    #[test]
    fn a_flipped_byte_in_the_sqlite_file_is_found() {
        let s = setup();
        // Move everything from the WAL into the main file, then find the
        // bytes of a stored change there and flip one.
        let conn = Connection::open(&s.db).unwrap();
        let (pos, bytes): (i64, Vec<u8>) = conn
            .query_row(
                "SELECT pos, bytes FROM changes WHERE bytes IS NOT NULL ORDER BY pos DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        drop(conn);
        let mut file = std::fs::read(&s.db).unwrap();
        let needle = &bytes[8..bytes.len().min(40)];
        let at = file
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the change's bytes are in the file");
        file[at + needle.len() / 2] ^= 0x20;
        std::fs::write(&s.db, file).unwrap();
        let err = verify(&s.db).unwrap_err();
        let named = match &err {
            VerifyError::ChangeHash { pos: p, .. } | VerifyError::Undecodable { pos: p, .. } => {
                *p == pos
            }
            VerifyError::Store(_) => true,
            _ => false,
        };
        assert!(named, "{err}");
    }
}
