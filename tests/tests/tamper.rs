//! Tampered, forged and unauthorised bundles are refused whole, and leave
//! the importing replica exactly as it was.

mod common;

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use automerge::ReadDoc;
use automerge::transaction::Transactable;
use chittysync::{
    Bundle, FieldDef, FieldKind, Identity, ImportError, PublicKey, Registry, Replica, Role, Schema,
};
use common::{
    Observed, RawBundle, RawEntry, forge_doc, forged_entry, key_of, observe, raw_bundle,
    replica_with_seed, root_map, send_to,
};
use proptest::prelude::*;
use tempfile::TempDir;

const SEED_A: [u8; 32] = [0xA1; 32];
const SEED_W: [u8; 32] = [0xB2; 32];
const SEED_B: [u8; 32] = [0xC3; 32];
const SEED_N: [u8; 32] = [0xD4; 32];

fn schema() -> Schema {
    Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("port", FieldKind::Integer))
        .field(FieldDef::new("owner", FieldKind::Email))
}

fn hex_key(seed: [u8; 32]) -> String {
    PublicKey::from_bytes(&key_of(seed)).unwrap().to_string()
}

/// A is admin, W a writer, B a reader holding an earlier state; N is no
/// member at all. All four keys are known to the test.
struct Fixture {
    dir: TempDir,
    a: Replica,
    ra: Registry,
    b: Replica,
    rb: Registry,
    /// The whole history at the earlier state (what B was given).
    base: Vec<u8>,
    /// What B lacks: two changes by A and two by W.
    bundle: Vec<u8>,
    /// The whole history now.
    full: Vec<u8>,
    /// B's state after importing `bundle` untouched.
    expected: Observed,
}

static FRESH: AtomicUsize = AtomicUsize::new(0);

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let a = replica_with_seed(dir.path(), "a", SEED_A);
    let w = replica_with_seed(dir.path(), "w", SEED_W);
    let b = replica_with_seed(dir.path(), "b", SEED_B);
    let ra = a.create_registry("services", schema()).unwrap();
    ra.set_member(w.public_key(), Role::Writer).unwrap();
    ra.set_member(b.public_key(), Role::Reader).unwrap();
    ra.put(Some("billing"), [("name", "billing")]).unwrap();
    let base = ra.export(&[]).unwrap().to_bytes();
    w.import(Bundle::from_bytes(&base).unwrap()).unwrap();
    b.import(Bundle::from_bytes(&base).unwrap()).unwrap();
    let rw = w.registry("services").unwrap();
    let rb = b.registry("services").unwrap();

    ra.put(Some("search"), [("name", "search")]).unwrap();
    ra.put(Some("billing"), [("port", "8080")]).unwrap();
    rw.put(Some("mail"), [("name", "mail")]).unwrap();
    rw.put(Some("billing"), [("owner", "w@example.com")])
        .unwrap();
    send_to(&rw, &a);
    let bundle = ra.export(&rb.heads()).unwrap().to_bytes();
    let full = ra.export(&[]).unwrap().to_bytes();

    let e = common::replica(dir.path(), "expected");
    e.import(Bundle::from_bytes(&base).unwrap()).unwrap();
    e.import(Bundle::from_bytes(&bundle).unwrap()).unwrap();
    let expected = observe(&e.registry("services").unwrap());
    assert_eq!(expected, observe(&ra));

    let raw = RawBundle::parse(&bundle);
    let authors: Vec<[u8; 32]> = raw.entries.iter().map(|e| e.author).collect();
    assert_eq!(authors.len(), 4);
    assert_eq!(authors.iter().filter(|k| **k == key_of(SEED_A)).count(), 2);
    assert_eq!(authors.iter().filter(|k| **k == key_of(SEED_W)).count(), 2);
    Fixture {
        dir,
        a,
        ra,
        b,
        rb,
        base,
        bundle,
        full,
        expected,
    }
}

fn kind(e: &ImportError) -> &'static str {
    match e {
        ImportError::Malformed { .. } => "malformed",
        ImportError::BadSignature { .. } => "bad signature",
        ImportError::ForgedActor { .. } => "forged actor",
        ImportError::NotAuthorised { .. } => "not authorised",
        ImportError::MissingDependencies { .. } => "missing dependencies",
        ImportError::UnknownRegistry { .. } => "unknown registry",
        ImportError::File { .. } => "file",
        ImportError::Store(_) => "store",
        _ => "other",
    }
}

/// Imports `bytes` into `replica` (holding `reg`), expects a refusal and
/// checks that nothing changed, in memory or on disk.
fn refused(replica: &Replica, reg: &Registry, seed: [u8; 32], bytes: &[u8]) -> ImportError {
    let before = observe(reg);
    let err = match Bundle::from_bytes(bytes).and_then(|b| replica.import(b)) {
        Ok(report) => panic!("a tampered bundle was accepted: {report:?}"),
        Err(e) => e,
    };
    assert_eq!(observe(reg), before, "state changed after refusing: {err}");
    let reopened =
        Replica::open_with_identity(replica.path(), Identity::from_secret_bytes(seed)).unwrap();
    let again = reopened.registry_by_id(reg.id()).unwrap();
    assert_eq!(
        observe(&again),
        before,
        "store changed after refusing: {err}"
    );
    err
}

impl Fixture {
    /// B refuses `bytes` and is unchanged.
    fn refused_by_b(&self, bytes: &[u8]) -> ImportError {
        refused(&self.b, &self.rb, SEED_B, bytes)
    }

    /// B refuses `bytes`, unchanged in memory (no reopen: for loops).
    fn quickly_refused_by_b(&self, bytes: &[u8]) -> ImportError {
        let before = observe(&self.rb);
        let err = Bundle::from_bytes(bytes)
            .and_then(|b| self.b.import(b))
            .expect_err("a tampered bundle was accepted");
        assert_eq!(
            observe(&self.rb),
            before,
            "state changed after refusing: {err}"
        );
        err
    }

    /// A replica that has never seen the registry refuses `bytes` and
    /// still holds no registry.
    fn refused_by_fresh(&self, bytes: &[u8]) -> ImportError {
        let n = FRESH.fetch_add(1, Ordering::Relaxed);
        let fresh = common::replica(self.dir.path(), &format!("fresh-{n}"));
        let err = Bundle::from_bytes(bytes)
            .and_then(|b| fresh.import(b))
            .expect_err("a tampered bundle was accepted");
        assert!(fresh.registries().unwrap().is_empty(), "{err}");
        let reopened = Replica::open(fresh.path()).unwrap();
        assert!(reopened.registries().unwrap().is_empty(), "{err}");
        err
    }

    /// After any refusals, B still takes the genuine bundle.
    fn assert_b_recovers(&self) {
        self.b
            .import(Bundle::from_bytes(&self.bundle).unwrap())
            .unwrap();
        assert_eq!(observe(&self.rb), self.expected);
    }

    fn raw(&self) -> RawBundle {
        RawBundle::parse(&self.bundle)
    }

    fn hashes(&self) -> Vec<String> {
        Bundle::from_bytes(&self.bundle)
            .unwrap()
            .changes()
            .iter()
            .map(|c| c.hash().to_string())
            .collect()
    }
}

#[test]
fn a_flipped_byte_anywhere_inside_a_change_is_refused() {
    let f = fixture();
    let raw = f.raw();
    let mut kinds = BTreeSet::new();
    for (i, entry) in raw.entries.iter().enumerate() {
        // Byte 8 of an Automerge chunk is its type: 1 is an uncompressed
        // change, where every byte counts.
        assert_eq!(entry.change[8], 1, "change {i} is uncompressed");
        let start = raw.change_offset(i);
        for at in start..start + entry.change.len() {
            for mask in [0x01, 0x80] {
                let mut bytes = f.bundle.clone();
                bytes[at] ^= mask;
                kinds.insert(kind(&f.quickly_refused_by_b(&bytes)));
            }
        }
    }
    let allowed = BTreeSet::from(["malformed", "bad signature", "forged actor"]);
    assert!(kinds.is_subset(&allowed), "{kinds:?}");
    // The disk agrees, and B still takes the genuine bundle.
    let mut bytes = f.bundle.clone();
    bytes[raw.change_offset(2) + 40] ^= 0x01;
    f.refused_by_b(&bytes);
    f.assert_b_recovers();
}

#[test]
fn a_change_with_a_damaged_checksum_is_refused() {
    // The checksum is the one part of an Automerge change its hash does
    // not cover: a damaged one must not be stored and passed on.
    let f = fixture();
    let raw = f.raw();
    for at in 4..8 {
        let mut bytes = f.bundle.clone();
        bytes[raw.change_offset(1) + at] ^= 0x01;
        let err = f.refused_by_b(&bytes);
        assert_eq!(kind(&err), "malformed", "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
    }
    f.assert_b_recovers();
}

#[test]
fn flipped_bytes_in_a_whole_history_are_refused_by_a_fresh_replica() {
    let f = fixture();
    let raw = RawBundle::parse(&f.full);
    let allowed = BTreeSet::from([
        "malformed",
        "bad signature",
        "forged actor",
        "unknown registry",
    ]);
    for (i, entry) in raw.entries.iter().enumerate() {
        let len = entry.change.len();
        for at in [0, 5, 8, 9, 12, 40, len / 2, len - 1] {
            let mut bytes = f.full.clone();
            bytes[raw.change_offset(i) + at] ^= 0x04;
            // A flip in a compressed change's DEFLATE padding bits decodes
            // to the very same signed change: accepting it is right, as
            // long as the result is exactly the genuine one.
            let decodes_the_same = Bundle::from_bytes(&bytes).is_ok_and(|b| {
                b.changes()[i].hash() == Bundle::from_bytes(&f.full).unwrap().changes()[i].hash()
            });
            if decodes_the_same {
                let n = FRESH.fetch_add(1, Ordering::Relaxed);
                let fresh = common::replica(f.dir.path(), &format!("fresh-{n}"));
                fresh.import(Bundle::from_bytes(&bytes).unwrap()).unwrap();
                assert_eq!(observe(&fresh.registry("services").unwrap()), f.expected);
                continue;
            }
            let err = f.refused_by_fresh(&bytes);
            assert!(allowed.contains(kind(&err)), "change {i} byte {at}: {err}");
        }
    }
}

#[test]
fn swapped_signatures_are_refused() {
    let f = fixture();
    let hashes = f.hashes();
    let raw = f.raw();
    let a_key = key_of(SEED_A);
    let (by_a, by_w): (Vec<usize>, Vec<usize>) =
        (0..raw.entries.len()).partition(|&i| raw.entries[i].author == a_key);

    // Four changes (checked as a batch): swap two signatures of one author,
    // then of two authors.
    for (i, j) in [(by_a[0], by_a[1]), (by_a[0], by_w[0]), (by_w[1], by_a[1])] {
        let mut t = raw.clone();
        let sig = t.entries[i].signature;
        t.entries[i].signature = t.entries[j].signature;
        t.entries[j].signature = sig;
        match f.refused_by_b(&t.to_bytes()) {
            ImportError::BadSignature { change, author } => {
                assert!(change == hashes[i] || change == hashes[j], "{change}");
                assert!(
                    [hex_key(SEED_A), hex_key(SEED_W)].contains(&author),
                    "{author}"
                );
            }
            other => panic!("expected BadSignature, got {other:?}"),
        }
    }

    // Two changes (checked one by one): A's two alone form a valid bundle.
    let mut pair = raw.clone();
    pair.entries.retain(|e| e.author == a_key);
    assert_eq!(pair.entries.len(), 2);
    let sig = pair.entries[0].signature;
    pair.entries[0].signature = pair.entries[1].signature;
    pair.entries[1].signature = sig;
    assert_eq!(kind(&f.refused_by_b(&pair.to_bytes())), "bad signature");

    // Swapping whole (key, signature) pairs makes each change claim the
    // other author.
    let mut t = raw.clone();
    let (i, j) = (by_a[0], by_w[0]);
    let (ka, sa) = (t.entries[i].author, t.entries[i].signature);
    t.entries[i].author = t.entries[j].author;
    t.entries[i].signature = t.entries[j].signature;
    t.entries[j].author = ka;
    t.entries[j].signature = sa;
    assert_eq!(kind(&f.refused_by_b(&t.to_bytes())), "forged actor");
    f.assert_b_recovers();
}

#[test]
fn a_change_relabelled_with_another_key_is_refused_even_when_that_key_signed_it() {
    let f = fixture();
    let raw = f.raw();
    let registry = f.ra.id();
    let w_entry = raw
        .entries
        .iter()
        .position(|e| e.author == key_of(SEED_W))
        .unwrap();
    let hash = Bundle::from_bytes(&f.bundle).unwrap().changes()[w_entry].hash();

    for (who, seed) in [("admin", SEED_A), ("outsider", SEED_N)] {
        // The key only, keeping W's signature.
        let mut t = raw.clone();
        t.entries[w_entry].author = key_of(seed);
        assert_eq!(
            kind(&f.refused_by_b(&t.to_bytes())),
            "forged actor",
            "{who}"
        );

        // The key and a genuine signature by that key over W's change: the
        // signature verifies, yet the change is W's, not theirs.
        t.entries[w_entry].signature = common::sign(seed, registry, &hash);
        match f.refused_by_b(&t.to_bytes()) {
            ImportError::ForgedActor {
                change,
                actor,
                author,
            } => {
                assert_eq!(change, hash.to_string());
                assert_eq!(actor, hex_key(SEED_W));
                assert_eq!(author, hex_key(seed));
            }
            other => panic!("{who}: expected ForgedActor, got {other:?}"),
        }
    }
    f.assert_b_recovers();
}

#[test]
fn a_change_made_in_a_members_name_by_another_key_is_refused() {
    let f = fixture();
    f.assert_b_recovers();
    let full = Bundle::from_bytes(&f.full).unwrap();
    let registry = f.ra.id();
    // N writes a change whose actor is the admin A, and signs it itself.
    let mut doc = forge_doc(&full, SEED_N);
    doc.set_actor(automerge::ActorId::from(&key_of(SEED_A)[..]));
    let records = root_map(&doc, "records");
    let rec = doc
        .put_object(&records, "evil", automerge::ObjType::Map)
        .unwrap();
    doc.put(&rec, "name", "evil").unwrap();
    let (entry, _) = forged_entry(&mut doc, registry, SEED_N, key_of(SEED_A));
    // Labelled as A's: A's key does not verify N's signature.
    assert_eq!(
        kind(&f.refused_by_b(&raw_bundle(registry, vec![entry.clone()]))),
        "bad signature"
    );
    // Labelled as N's: the actor is not N.
    let mut as_n = entry.clone();
    as_n.author = key_of(SEED_N);
    assert_eq!(
        kind(&f.refused_by_b(&raw_bundle(registry, vec![as_n]))),
        "forged actor"
    );
    // The genuine signature of A would of course be accepted: the refusals
    // above are about the keys alone.
    let mut genuine = entry;
    let hash = Bundle::from_bytes(&raw_bundle(registry, vec![genuine.clone()]))
        .unwrap()
        .changes()[0]
        .hash();
    genuine.signature = common::sign(SEED_A, registry, &hash);
    f.b.import(Bundle::from_bytes(&raw_bundle(registry, vec![genuine])).unwrap())
        .unwrap();
    assert!(f.rb.get("evil").is_some());
}

#[test]
fn author_fields_that_are_not_keys_are_refused() {
    let f = fixture();
    let raw = f.raw();
    // 32 bytes that are no point of the curve.
    let not_a_key = (0u8..=255)
        .map(|b| [b; 32])
        .find(|k| PublicKey::from_bytes(k).is_err())
        .expect("some constant byte string is not a curve point");
    let mut t = raw.clone();
    t.entries[0].author = not_a_key;
    assert_eq!(kind(&f.refused_by_b(&t.to_bytes())), "malformed");
    // A valid but small-order point (the identity element).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    if PublicKey::from_bytes(&identity).is_ok() {
        let mut t = raw.clone();
        t.entries[0].author = identity;
        let err = f.refused_by_b(&t.to_bytes());
        assert!(["forged actor", "malformed"].contains(&kind(&err)), "{err}");
    }
    f.assert_b_recovers();
}

#[test]
fn a_validly_signed_change_of_another_registry_is_refused() {
    let f = fixture();
    // A signs changes of a second registry; one is spliced into this one's
    // bundle. The signature binds the registry, so it does not verify.
    let other = f.a.create_registry("other", schema()).unwrap();
    other.put(None, [("name", "x")]).unwrap();
    let before = other.heads();
    other.put(None, [("name", "y")]).unwrap();
    let foreign = RawBundle::parse(&other.export(&before).unwrap().to_bytes());
    assert_eq!(foreign.entries.len(), 1);

    let mut t = f.raw();
    t.entries.push(foreign.entries[0].clone());
    assert_eq!(kind(&f.refused_by_b(&t.to_bytes())), "bad signature");
    // The foreign change alone, under this registry's id.
    let alone = raw_bundle(f.ra.id(), foreign.entries.clone());
    assert_eq!(kind(&f.refused_by_b(&alone)), "bad signature");
    // This registry's whole history relabelled as the other registry's.
    let mut relabelled = RawBundle::parse(&f.full);
    relabelled.registry = *other.id().as_bytes();
    let err = refused(&f.a, &other, SEED_A, &relabelled.to_bytes());
    assert!(
        ["bad signature", "unknown registry"].contains(&kind(&err)),
        "{err}"
    );
    f.assert_b_recovers();
}

#[test]
fn damaged_framing_is_refused() {
    let f = fixture();
    let bundle = &f.bundle;
    let raw = f.raw();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for cut in [
        0,
        10,
        common::HEADER_LEN,
        raw.change_offset(1) - 3,
        bundle.len() - 1,
    ] {
        cases.push(("truncated", bundle[..cut].to_vec()));
    }
    let mut trailing = bundle.clone();
    trailing.push(0);
    cases.push(("trailing byte", trailing));
    let mut magic = bundle.clone();
    magic[0] = b'X';
    cases.push(("magic", magic));
    let mut version = bundle.clone();
    version[17] = 2;
    cases.push(("version", version));
    for delta in [1i64, -1] {
        let mut count = bundle.clone();
        let n = raw.entries.len() as i64 + delta;
        count[common::HEADER_LEN - 4..common::HEADER_LEN]
            .copy_from_slice(&(n as u32).to_be_bytes());
        cases.push(("count", count));
    }
    for delta in [1i64, -1] {
        let mut len = bundle.clone();
        let at = raw.change_offset(0) - 4;
        let n = raw.entries[0].change.len() as i64 + delta;
        len[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
        cases.push(("length", len));
    }
    for (what, bytes) in cases {
        let err = f.refused_by_b(&bytes);
        assert_eq!(kind(&err), "malformed", "{what}: {err}");
    }
    let err = Bundle::from_bytes(&{
        let mut v = bundle.clone();
        v[17] = 9;
        v
    })
    .unwrap_err();
    assert!(err.to_string().contains("upgrade"), "{err}");

    // Another registry id: B does not have that registry.
    let mut id = bundle.clone();
    id[18] ^= 0xff;
    assert_eq!(kind(&f.refused_by_b(&id)), "unknown registry");
    f.assert_b_recovers();
}

#[test]
fn a_dropped_change_is_a_gap_that_is_refused() {
    let f = fixture();
    let raw = f.raw();
    // A's first change: A's second builds on it.
    let dropped = raw
        .entries
        .iter()
        .position(|e| e.author == key_of(SEED_A))
        .unwrap();
    let missing_hash = f.hashes()[dropped].clone();
    let mut t = raw.clone();
    t.entries.remove(dropped);
    match f.refused_by_b(&t.to_bytes()) {
        ImportError::MissingDependencies { missing, .. } => {
            assert_eq!(missing, vec![missing_hash])
        }
        other => panic!("expected MissingDependencies, got {other:?}"),
    }

    // In a whole history: drop an early change.
    let mut whole = RawBundle::parse(&f.full);
    assert_eq!(whole.entries.len(), 8);
    whole.entries.remove(1);
    assert_eq!(
        kind(&f.refused_by_fresh(&whole.to_bytes())),
        "missing dependencies"
    );
    // And the genesis itself.
    let mut headless = RawBundle::parse(&f.full);
    headless.entries.remove(0);
    assert_eq!(
        kind(&f.refused_by_fresh(&headless.to_bytes())),
        "unknown registry"
    );
    f.assert_b_recovers();
}

#[test]
fn reordered_or_repeated_entries_import_exactly_like_the_original() {
    // Not tampering: the order of a bundle carries no meaning, and a
    // repeated change is the same change.
    let f = fixture();
    let mut reversed = f.raw();
    reversed.entries.reverse();
    f.b.import(Bundle::from_bytes(&reversed.to_bytes()).unwrap())
        .unwrap();
    assert_eq!(observe(&f.rb), f.expected);

    let n = FRESH.fetch_add(1, Ordering::Relaxed);
    let fresh = common::replica(f.dir.path(), &format!("fresh-{n}"));
    let mut whole = RawBundle::parse(&f.full);
    whole.entries.reverse();
    let dup = whole.entries[3].clone();
    whole.entries.push(dup);
    let genesis = whole.entries[whole.entries.len() - 2].clone();
    whole.entries.push(genesis);
    let report = fresh
        .import(Bundle::from_bytes(&whole.to_bytes()).unwrap())
        .unwrap();
    assert_eq!(report.applied, 8);
    assert_eq!(observe(&fresh.registry("services").unwrap()), f.expected);

    let n = FRESH.fetch_add(1, Ordering::Relaxed);
    let other = common::replica(f.dir.path(), &format!("fresh-{n}"));
    other.import(Bundle::from_bytes(&f.base).unwrap()).unwrap();
    let mut doubled = f.raw();
    doubled.entries.extend(f.raw().entries);
    let report = other
        .import(Bundle::from_bytes(&doubled.to_bytes()).unwrap())
        .unwrap();
    assert_eq!(report.applied, 4);
    assert_eq!(observe(&other.registry("services").unwrap()), f.expected);
}

// ---- Validly signed, but not authorised -----------------------------------

/// Brings B up to date, then returns the full history to build on.
fn current(f: &Fixture) -> Bundle {
    f.assert_b_recovers();
    f.ra.export(&[]).unwrap()
}

fn not_authorised(err: ImportError, who: [u8; 32], why: &str) {
    match err {
        ImportError::NotAuthorised { author, reason, .. } => {
            assert_eq!(author, hex_key(who));
            assert!(reason.contains(why), "{reason}");
        }
        other => panic!("expected NotAuthorised ({why}), got {other:?}"),
    }
}

/// A record written by `seed` on top of the current history.
fn record_by(f: &Fixture, history: &Bundle, seed: [u8; 32], id: &str) -> RawEntry {
    let mut doc = forge_doc(history, seed);
    let records = root_map(&doc, "records");
    let rec = doc
        .put_object(&records, id, automerge::ObjType::Map)
        .unwrap();
    doc.put(&rec, "name", id).unwrap();
    forged_entry(&mut doc, f.ra.id(), seed, key_of(seed)).0
}

#[test]
fn changes_by_non_members_and_readers_are_refused() {
    let f = fixture();
    let history = current(&f);
    let id = f.ra.id();
    let outsider = record_by(&f, &history, SEED_N, "by-outsider");
    not_authorised(
        f.refused_by_b(&raw_bundle(id, vec![outsider])),
        SEED_N,
        "not a member",
    );
    let reader = record_by(&f, &history, SEED_B, "by-reader");
    not_authorised(
        refused(&f.a, &f.ra, SEED_A, &raw_bundle(id, vec![reader])),
        SEED_B,
        "readers cannot write",
    );
    // The same record by the writer is fine: the refusals were about roles.
    let writer = record_by(&f, &history, SEED_W, "by-writer");
    f.a.import(Bundle::from_bytes(&raw_bundle(id, vec![writer])).unwrap())
        .unwrap();
    assert!(f.ra.get("by-writer").is_some());
}

#[test]
fn writers_changing_members_schema_or_removing_records_are_refused() {
    let f = fixture();
    let history = current(&f);
    let id = f.ra.id();
    type Attempt = (&'static str, fn(&mut automerge::AutoCommit), &'static str);
    let attempts: Vec<Attempt> = vec![
        (
            "promote itself",
            |doc| {
                let members = root_map(doc, "members");
                doc.put(&members, hex_key(SEED_W), "admin").unwrap();
            },
            "only admins",
        ),
        (
            "add a member",
            |doc| {
                let members = root_map(doc, "members");
                doc.put(&members, hex_key(SEED_N), "writer").unwrap();
            },
            "only admins",
        ),
        (
            "add a field",
            |doc| {
                let schema = root_map(doc, "schema");
                let fields = match doc.get(&schema, "fields").unwrap() {
                    Some((automerge::Value::Object(_), id)) => id,
                    other => panic!("{other:?}"),
                };
                doc.put(
                    &fields,
                    "extra",
                    r#"{"position":9,"name":"extra","type":"text"}"#,
                )
                .unwrap();
            },
            "only admins",
        ),
        (
            "change the policy",
            |doc| {
                let schema = root_map(doc, "schema");
                doc.put(&schema, "conflict_policy", "manual").unwrap();
            },
            "only admins",
        ),
        (
            "rename the registry",
            |doc| {
                let meta = root_map(doc, "meta");
                doc.put(&meta, "name", "mine").unwrap();
            },
            "only admins",
        ),
        (
            "write at the root",
            |doc| {
                doc.put(automerge::ROOT, "extra", 1).unwrap();
            },
            "only admins",
        ),
        (
            "remove a record",
            |doc| {
                let records = root_map(doc, "records");
                doc.delete(&records, "billing").unwrap();
            },
            "tombstones",
        ),
    ];
    for (what, attempt, why) in attempts {
        let mut doc = forge_doc(&history, SEED_W);
        attempt(&mut doc);
        let (entry, _) = forged_entry(&mut doc, id, SEED_W, key_of(SEED_W));
        let err = refused(&f.a, &f.ra, SEED_A, &raw_bundle(id, vec![entry]));
        match &err {
            ImportError::NotAuthorised { reason, .. } if reason.contains(why) => {}
            other => panic!("{what}: expected NotAuthorised ({why}), got {other:?}"),
        }
    }
    assert_eq!(f.ra.get("billing").unwrap().deleted, None);
}

#[test]
fn a_removed_writers_change_made_after_the_removal_is_refused() {
    let f = fixture();
    f.assert_b_recovers();
    f.ra.remove_member(PublicKey::from_bytes(&key_of(SEED_W)).unwrap())
        .unwrap();
    send_to(&f.ra, &f.b);
    let history = f.ra.export(&[]).unwrap();
    let late = record_by(&f, &history, SEED_W, "too-late");
    not_authorised(
        f.refused_by_b(&raw_bundle(f.ra.id(), vec![late])),
        SEED_W,
        "not a member",
    );
}

#[test]
fn one_forged_change_refuses_the_whole_bundle() {
    let f = fixture();
    f.assert_b_recovers();
    let before_puts = f.rb.heads();
    for id in ["one", "two", "three", "four"] {
        f.ra.put(Some(id), [("name", id)]).unwrap();
    }
    let history = f.ra.export(&[]).unwrap();
    let mut raw = RawBundle::parse(&f.ra.export(&before_puts).unwrap().to_bytes());
    assert_eq!(raw.entries.len(), 4);
    // Last, first and in the middle.
    let bad = record_by(&f, &history, SEED_N, "evil");
    for at in [4, 0, 2] {
        let mut t = raw.clone();
        t.entries.insert(at, bad.clone());
        let err = f.refused_by_b(&t.to_bytes());
        not_authorised(err, SEED_N, "not a member");
        assert!(f.rb.get("one").is_none() && f.rb.get("two").is_none());
    }
    // A bad signature among many (checked as a batch).
    raw.entries[1].signature[10] ^= 1;
    assert_eq!(kind(&f.refused_by_b(&raw.to_bytes())), "bad signature");
    assert!(f.rb.get("one").is_none());
}

#[test]
fn a_second_root_change_is_refused() {
    let f = fixture();
    f.assert_b_recovers();
    let mut doc =
        automerge::AutoCommit::new().with_actor(automerge::ActorId::from(&key_of(SEED_A)[..]));
    doc.put(automerge::ROOT, "records", 1).unwrap();
    let (entry, _) = forged_entry(&mut doc, f.ra.id(), SEED_A, key_of(SEED_A));
    not_authorised(
        f.refused_by_b(&raw_bundle(f.ra.id(), vec![entry])),
        SEED_A,
        "second root",
    );
}

/// A genesis by N whose members are `members`; returns the bundle bytes.
fn genesis(members: &[([u8; 32], &str)]) -> Vec<u8> {
    let mut doc =
        automerge::AutoCommit::new().with_actor(automerge::ActorId::from(&key_of(SEED_N)[..]));
    let root = automerge::ROOT;
    let meta = doc
        .put_object(&root, "meta", automerge::ObjType::Map)
        .unwrap();
    doc.put(&meta, "name", "crafted").unwrap();
    let schema = doc
        .put_object(&root, "schema", automerge::ObjType::Map)
        .unwrap();
    doc.put_object(&schema, "fields", automerge::ObjType::Map)
        .unwrap();
    let m = doc
        .put_object(&root, "members", automerge::ObjType::Map)
        .unwrap();
    for (key, role) in members {
        doc.put(&m, PublicKey::from_bytes(key).unwrap().to_string(), *role)
            .unwrap();
    }
    doc.put_object(&root, "records", automerge::ObjType::Map)
        .unwrap();
    let hash = doc.commit().unwrap();
    let registry = chittysync::RegistryId::from_bytes(&hash.0[..16]).unwrap();
    let mut change = doc.get_change_by_hash(&hash).unwrap();
    let entry = RawEntry {
        author: key_of(SEED_N),
        signature: common::sign(SEED_N, registry, &hash),
        change: change.bytes().into_owned(),
    };
    raw_bundle(registry, vec![entry])
}

#[test]
fn a_genesis_must_make_its_author_the_only_admin() {
    let f = fixture();
    for members in [
        vec![(key_of(SEED_N), "admin"), (key_of(SEED_W), "admin")],
        vec![(key_of(SEED_W), "admin")],
        vec![(key_of(SEED_N), "writer")],
        vec![],
    ] {
        let err = f.refused_by_fresh(&genesis(&members));
        match err {
            ImportError::NotAuthorised { reason, .. } => {
                assert!(reason.contains("genesis"), "{reason}")
            }
            other => panic!("{members:?}: expected NotAuthorised, got {other:?}"),
        }
    }
    // The same construction with N as sole admin is a valid registry.
    let fresh = common::replica(f.dir.path(), "crafted");
    let report = fresh
        .import(Bundle::from_bytes(&genesis(&[(key_of(SEED_N), "admin")])).unwrap())
        .unwrap();
    assert!(report.created);
    assert_eq!(report.name, "crafted");
}

// ---- Any single flipped byte ----------------------------------------------

/// Shared, read-only inputs of the property tests.
struct Flips {
    base: Vec<u8>,
    bundle: Vec<u8>,
    full: Vec<u8>,
    expected: Observed,
}

fn flips() -> &'static Flips {
    static FLIPS: OnceLock<Flips> = OnceLock::new();
    FLIPS.get_or_init(|| {
        let f = fixture();
        Flips {
            base: f.base.clone(),
            bundle: f.bundle.clone(),
            full: f.full.clone(),
            expected: f.expected.clone(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// A replica holding the earlier state either refuses the damaged
    /// bundle and is unchanged, or ends exactly where the genuine bundle
    /// takes it — never anywhere else.
    #[test]
    fn any_flipped_byte_is_refused_or_harmless(at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let p = flips();
        let mut bytes = p.bundle.clone();
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        let dir = tempfile::tempdir().unwrap();
        let b = common::replica(dir.path(), "b");
        b.import(Bundle::from_bytes(&p.base).unwrap()).unwrap();
        let rb = b.registry("services").unwrap();
        let before = observe(&rb);
        match Bundle::from_bytes(&bytes).and_then(|x| b.import(x)) {
            Ok(_) => prop_assert_eq!(observe(&rb), p.expected.clone()),
            Err(e) => {
                prop_assert!(!matches!(e, ImportError::Store(_)), "{}", e);
                prop_assert_eq!(observe(&rb), before);
            }
        }
    }

    /// The same for a replica that has never seen the registry.
    #[test]
    fn any_flipped_byte_in_a_whole_history_is_refused_or_harmless(at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let p = flips();
        let mut bytes = p.full.clone();
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        let dir = tempfile::tempdir().unwrap();
        let fresh = common::replica(dir.path(), "fresh");
        match Bundle::from_bytes(&bytes).and_then(|x| fresh.import(x)) {
            Ok(_) => prop_assert_eq!(
                observe(&fresh.registry("services").unwrap()),
                p.expected.clone()
            ),
            Err(e) => {
                prop_assert!(!matches!(e, ImportError::Store(_)), "{}", e);
                prop_assert!(fresh.registries().unwrap().is_empty());
            }
        }
    }
}
