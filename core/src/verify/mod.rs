//! End-to-end verification of a replica: every registry re-checked from its
//! genesis, and the local journal's hash chain.

use automerge::ChangeHash;
use rusqlite::Connection;

use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::schema::ValidationError;
use crate::store::{self, StoreError};

mod history;

pub(crate) use history::verify_registry;

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

impl VerifyReport {
    /// The report, unless a registry holds validation conflicts (values
    /// that break its schema, see [`RegistryReport::invalid_records`]):
    /// then an error naming the first registry with some.
    pub fn require_valid(&self) -> Result<&Self, VerifyError> {
        match self
            .registries
            .iter()
            .find(|r| !r.invalid_records.is_empty())
        {
            Some(r) => Err(VerifyError::InvalidRecords {
                registry: r.name.clone(),
                count: r.invalid_records.len(),
                first: r.invalid_records[0].to_string(),
            }),
            None => Ok(self),
        }
    }
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
    /// Values that break the current schema: validation conflicts. Each
    /// change was valid as of its own dependencies (values breaking a rule
    /// of the value alone are refused at import), so they come from a
    /// concurrent schema change or from unique and required rules that
    /// concurrent edits broke. They are kept and reported;
    /// [`VerifyReport::require_valid`] turns them into an error.
    pub invalid_records: Vec<ValidationError>,
    /// Changes revoked because their author was removed concurrently
    /// (strong removal): validly signed and kept in the history, but
    /// masked from the registry's state. Reported, not failures.
    pub revoked: usize,
    /// The changes that touched members, schema or meta, found from the
    /// history (checked against the store's index of them).
    admin_changes: std::collections::BTreeSet<ChangeHash>,
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
    /// The store's index of membership and schema changes was altered.
    #[error(
        "registry {registry}: the store's index of membership and schema changes does not match the history ({reason}); the store was altered — restore it from a backup or re-import the registry"
    )]
    AdminIndex {
        /// The registry.
        registry: String,
        /// What differs.
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
    /// A stored attestation's signature does not verify.
    #[error(
        "registry {registry}: the stored attestation by {member} of a state of {changes} changes has a bad signature; the store was altered"
    )]
    Attestation {
        /// The registry.
        registry: String,
        /// The attesting member.
        member: String,
        /// The attested change count.
        changes: u64,
    },
    /// Records hold values that break the schema: validation conflicts,
    /// from signed changes that were each valid as of their dependencies
    /// (a concurrent schema change, or a unique or required rule that
    /// concurrent edits broke). See [`VerifyReport::require_valid`].
    #[error(
        "registry '{registry}': {count} record value(s) break the schema (first: {first}); these validation conflicts stay until a member writes valid values or an admin changes the schema"
    )]
    InvalidRecords {
        /// The registry's name.
        registry: String,
        /// How many values break the schema.
        count: usize,
        /// The first of them.
        first: String,
    },
    /// The registry named is not in this replica.
    #[error(transparent)]
    Lookup(#[from] crate::error::LookupError),
    /// The store could not be read, or SQLite found damage.
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// Checks the signature of every stored attestation of a registry.
pub(crate) fn verify_attestations(
    conn: &Connection,
    path: &str,
    id: &RegistryId,
) -> Result<(), VerifyError> {
    match store::attestations(conn, path, id)?
        .into_iter()
        .find(|a| !a.verify())
    {
        Some(bad) => Err(VerifyError::Attestation {
            registry: id.to_string(),
            member: bad.member.to_string(),
            changes: bad.change_count,
        }),
        None => Ok(()),
    }
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
    use crate::document::Layout;
    use crate::{FieldDef, FieldKind, Replica, Role, Schema};
    use automerge::{AutoCommit, ReadDoc};

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
        let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text).required());
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

    /// Stores, in `db`, a change `identity` signs on top of `registry` as
    /// `db` holds it, as if it had been accepted: what a store altered to
    /// slip in a change that import would have refused looks like.
    fn slip_in(
        db: &std::path::Path,
        registry: &str,
        identity: &crate::Identity,
        edit: impl FnOnce(&mut AutoCommit, &Layout),
    ) {
        let replica = Replica::open(db).unwrap();
        let bundle = replica.registry(registry).unwrap().export(&[]).unwrap();
        let id = bundle.registry();
        let mut doc = AutoCommit::new().with_actor(automerge::ActorId::from(
            &identity.public_key().as_bytes()[..],
        ));
        doc.apply_changes(bundle.changes().iter().map(|c| c.change.clone()))
            .unwrap();
        let layout = Layout::find(&doc).unwrap();
        edit(&mut doc, &layout);
        let hash = doc.commit().unwrap();
        let change = doc.get_change_by_hash(&hash).unwrap();
        let signature = crate::trust::sign_change(identity, &id, &hash);
        drop(replica);
        let conn = Connection::open(db).unwrap();
        conn.execute(
            "INSERT INTO changes (registry_id, hash, bytes, actor, seq, start_op, time,
                                  author_key, signature, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)",
            rusqlite::params![
                id.as_bytes(),
                hash.0,
                change.raw_bytes(),
                change.actor_id().to_bytes(),
                change.seq() as i64,
                change.start_op().get() as i64,
                change.timestamp(),
                identity.public_key().as_bytes(),
                signature,
            ],
        )
        .unwrap();
    }

    fn not_authorised(err: VerifyError, why: &str) {
        assert!(
            matches!(&err, VerifyError::NotAuthorised { reason, .. } if reason.contains(why)),
            "{err}"
        );
    }

    /// A writer's changes before and after its removal: the same author, read
    /// as of different dependencies, has different roles.
    #[test]
    fn a_change_by_a_removed_writer_is_refused_and_its_earlier_ones_are_not() {
        use automerge::transaction::Transactable;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let a = Replica::open(&db).unwrap();
        let w_identity = crate::Identity::from_secret_bytes([9; 32]);
        let w = Replica::open_with_identity(
            dir.path().join("w.db"),
            crate::Identity::from_secret_bytes([9; 32]),
        )
        .unwrap();
        let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
        let ra = a.create_registry("r", schema).unwrap();
        ra.set_member(w.public_key(), Role::Writer).unwrap();
        w.import(ra.export(&[]).unwrap()).unwrap();
        let rw = w.registry("r").unwrap();
        for i in 0..4 {
            rw.put(None, [("name", format!("w{i}"))]).unwrap();
            ra.put(None, [("name", format!("a{i}"))]).unwrap();
        }
        a.import(rw.export(&[]).unwrap()).unwrap();
        ra.remove_member(w.public_key()).unwrap();
        ra.set_member(w.public_key(), Role::Reader).unwrap();
        ra.remove_member(w.public_key()).unwrap();
        ra.put(None, [("name", "after")]).unwrap();
        let report = verify(&db).unwrap();
        assert_eq!(report.registries[0].authors, 2);

        slip_in(&db, "r", &w_identity, |doc, layout| {
            let obj = doc
                .put_object(&layout.records, "late", automerge::ObjType::Map)
                .unwrap();
            doc.put(&obj, "name", "after removal").unwrap();
        });
        not_authorised(verify(&db).unwrap_err(), "not a member");
    }

    /// A registry under the creator-or-admin rule with a record of its
    /// admin's, and a writer's identity.
    fn guarded() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        crate::Identity,
        String,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let a = Replica::open(&db).unwrap();
        let writer = crate::Identity::from_secret_bytes([5; 32]);
        let schema = Schema::new()
            .field(FieldDef::new("name", FieldKind::Text))
            .record_rule(crate::RecordRule::CreatorOrAdmin);
        let ra = a.create_registry("r", schema).unwrap();
        ra.set_member(writer.public_key(), Role::Writer).unwrap();
        let theirs = ra.put(Some("theirs"), [("name", "the admin's")]).unwrap();
        for i in 0..3 {
            ra.put(Some(&theirs), [("name", format!("edit {i}"))])
                .unwrap();
        }
        drop(a);
        verify(&db).unwrap();
        (dir, db, writer, theirs)
    }

    #[test]
    fn a_writers_stored_edit_of_anothers_record_or_of_the_members_is_refused() {
        use automerge::transaction::Transactable;
        let (_dir, db, writer, theirs) = guarded();
        slip_in(&db, "r", &writer, |doc, layout| {
            let (_, obj) = doc.get(&layout.records, theirs.as_str()).unwrap().unwrap();
            doc.put(&obj, "name", "the writer's").unwrap();
        });
        not_authorised(
            verify(&db).unwrap_err(),
            "may be changed only by its creator",
        );

        let (_dir, db, writer, _) = guarded();
        slip_in(&db, "r", &writer, |doc, layout| {
            let me = writer.public_key().to_string();
            doc.put(&layout.members, me, "admin").unwrap();
        });
        not_authorised(verify(&db).unwrap_err(), "only admins");
    }
}
