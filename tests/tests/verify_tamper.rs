//! For random histories, any single-byte tamper of a stored change, its
//! signature or author, or a journal row is detected by `verify`.

use chittysync::{FieldDef, FieldKind, Identity, Replica, Role, Schema};
use proptest::prelude::*;
use rusqlite::{Connection, params};

#[derive(Clone, Debug)]
enum Op {
    Put { by_b: bool, record: u8, value: u8 },
    Delete { by_b: bool, record: u8 },
    Exchange,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0..6u8, any::<u8>()).prop_map(|(by_b, record, value)| Op::Put { by_b, record, value }),
        1 => (any::<bool>(), 0..6u8).prop_map(|(by_b, record)| Op::Delete { by_b, record }),
        2 => Just(Op::Exchange),
        1 => Just(Op::Compact),
    ]
}

/// Which stored item to damage, and where.
#[derive(Clone, Debug)]
enum Target {
    ChangeBytes,
    Signature,
    Author,
    JournalDetail,
    JournalKind,
    JournalPrev,
    JournalHash,
    JournalAt,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::ChangeBytes),
        Just(Target::Signature),
        Just(Target::Author),
        Just(Target::JournalDetail),
        Just(Target::JournalKind),
        Just(Target::JournalPrev),
        Just(Target::JournalHash),
        Just(Target::JournalAt),
    ]
}

fn flip(bytes: &mut [u8], at: usize, bit: u8) {
    let i = at % bytes.len();
    bytes[i] ^= 1 << (bit % 8);
}

/// Damages one byte of one stored item; `false` if there was no such item.
fn tamper(conn: &Connection, target: &Target, row: usize, at: usize, bit: u8) -> bool {
    let blob = |table: &str, key: &str, column: &str| -> bool {
        let rows: Vec<(i64, Vec<u8>)> = conn
            .prepare(&format!(
                "SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY {key}"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if rows.is_empty() {
            return false;
        }
        let (id, mut bytes) = rows[row % rows.len()].clone();
        flip(&mut bytes, at, bit);
        conn.execute(
            &format!("UPDATE {table} SET {column} = ?1 WHERE {key} = ?2"),
            params![bytes, id],
        )
        .unwrap();
        true
    };
    let text = |column: &str| -> bool {
        let rows: Vec<(i64, String)> = conn
            .prepare(&format!("SELECT seq, {column} FROM journal ORDER BY seq"))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let (seq, value) = rows[row % rows.len()].clone();
        let mut bytes = value.into_bytes();
        // Keep it valid UTF-8: flip within ASCII letters' low bits.
        let i = at % bytes.len();
        bytes[i] ^= 1 << (bit % 5);
        let Ok(changed) = String::from_utf8(bytes) else {
            return false;
        };
        conn.execute(
            &format!("UPDATE journal SET {column} = ?1 WHERE seq = ?2"),
            params![changed, seq],
        )
        .unwrap();
        true
    };
    match target {
        Target::ChangeBytes => blob("changes", "pos", "bytes"),
        Target::Signature => blob("changes", "pos", "signature"),
        Target::Author => blob("changes", "pos", "author_key"),
        Target::JournalDetail => text("detail"),
        Target::JournalKind => text("kind"),
        Target::JournalPrev => blob("journal", "seq", "prev"),
        Target::JournalHash => blob("journal", "seq", "hash"),
        Target::JournalAt => {
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
                .unwrap();
            let seq = (row % n as usize) as i64 + 1;
            // at XOR bit, in SQL.
            let changed = conn
                .execute(
                    "UPDATE journal SET at = (at | ?1) - (at & ?1) WHERE seq = ?2",
                    params![1i64 << (bit % 40), seq],
                )
                .unwrap();
            changed == 1
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_single_byte_tamper_is_detected(
        ops in proptest::collection::vec(op(), 1..16),
        target in target(),
        row in any::<usize>(),
        at in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::open_with_identity(dir.path().join("a.db"), Identity::from_secret_bytes([1; 32])).unwrap();
        let b = Replica::open_with_identity(dir.path().join("b.db"), Identity::from_secret_bytes([2; 32])).unwrap();
        let schema = Schema::new().field(FieldDef::new("v", FieldKind::Integer));
        let ra = a.create_registry("r", schema).unwrap();
        ra.set_member(b.public_key(), Role::Writer).unwrap();
        b.import(ra.export(&[]).unwrap()).unwrap();
        let rb = b.registry("r").unwrap();
        for op in &ops {
            match op {
                Op::Put { by_b, record, value } => {
                    let reg = if *by_b { &rb } else { &ra };
                    let id = format!("r{record}");
                    // A deleted record stays deleted: ignore refused writes.
                    let _ = reg.put(Some(&id), [("v", i64::from(*value))]);
                }
                Op::Delete { by_b, record } => {
                    let reg = if *by_b { &rb } else { &ra };
                    let _ = reg.delete(&format!("r{record}"));
                }
                Op::Exchange => {
                    a.import(rb.export(&ra.heads()).unwrap()).unwrap();
                    b.import(ra.export(&rb.heads()).unwrap()).unwrap();
                }
                Op::Compact => ra.compact().unwrap(),
            }
        }
        a.import(rb.export(&ra.heads()).unwrap()).unwrap();
        prop_assert!(a.verify(None).is_ok());
        let db = a.path().to_path_buf();
        drop((ra, rb, a, b));

        let conn = Connection::open(&db).unwrap();
        let tampered = tamper(&conn, &target, row, at, bit);
        drop(conn);
        prop_assume!(tampered);
        if let Ok(Ok(report)) = Replica::open(&db).map(|r| r.verify(None)) {
            prop_assert!(false, "tampering with {target:?} went unnoticed: {report:?}");
        }
    }
}

#[test]
fn every_byte_of_a_stored_change_is_covered() {
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::open(dir.path().join("a.db")).unwrap();
    let schema = Schema::new().field(FieldDef::new("v", FieldKind::Integer));
    let ra = a.create_registry("r", schema).unwrap();
    ra.put(Some("x"), [("v", 1i64)]).unwrap();
    let db = a.path().to_path_buf();
    drop((ra, a));
    let conn = Connection::open(&db).unwrap();
    let (pos, original): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT pos, bytes FROM changes ORDER BY pos DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // Magic, checksum, type, length and body: each byte, flipped alone.
    for at in 0..original.len() {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        conn.execute(
            "UPDATE changes SET bytes = ?1 WHERE pos = ?2",
            params![bytes, pos],
        )
        .unwrap();
        let verdict = Replica::open(&db).unwrap().verify(None);
        assert!(
            verdict.is_err(),
            "byte {at} of {} flipped unnoticed",
            original.len()
        );
    }
}
