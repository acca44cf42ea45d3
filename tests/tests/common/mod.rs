//! Helpers shared by the integration tests: replicas in a temporary
//! directory, a comparable snapshot of a registry, file-based exchange and
//! a decoder for the bundle's documented byte layout (used to tamper).

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use chittysync::{ChangeHash, ImportReport, Query, Record, Registry, Replica};

/// Opens (creating) the replica `name` in `dir`.
pub fn replica(dir: &Path, name: &str) -> Replica {
    Replica::open(dir.join(format!("{name}.db"))).expect("open replica")
}

/// Everything a user can observe about a registry's content, comparable.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub heads: Vec<ChangeHash>,
    pub digest: String,
    pub change_count: usize,
    pub records: Vec<Record>,
    pub conflicts: Vec<chittysync::Conflict>,
    pub schema: chittysync::Schema,
    pub members: Vec<chittysync::Member>,
}

/// Observes a registry (including deleted records).
pub fn observe(reg: &Registry) -> Observed {
    let mut heads = reg.heads();
    heads.sort();
    let mut members = reg.members();
    members.sort_by_key(|m| m.key);
    Observed {
        heads,
        digest: reg.state_digest(),
        change_count: reg.change_count(),
        records: reg.list(&Query {
            include_deleted: true,
            ..Query::default()
        }),
        conflicts: reg.conflicts(),
        schema: reg.schema(),
        members,
    }
}

static BUNDLE_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh bundle file path in `dir`.
pub fn bundle_path(dir: &Path) -> PathBuf {
    let n = BUNDLE_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("bundle-{n}.chittysync"))
}

/// Carries what `to` lacks of `from` as a bundle *file*, the way users do.
pub fn send_file(from: &Registry, to: &Replica, dir: &Path) -> ImportReport {
    let their_heads = to
        .registry_by_id(from.id())
        .map(|r| r.heads())
        .unwrap_or_default();
    let bundle = from.export(&their_heads).expect("export");
    let path = bundle_path(dir);
    bundle.write_file(&path).expect("write bundle file");
    to.import_file(&path).expect("import bundle file")
}

/// Carries what `to` lacks of `from` in memory, into replica `to`.
pub fn send_to(from: &Registry, to: &Replica) -> ImportReport {
    let their_heads = to
        .registry_by_id(from.id())
        .map(|r| r.heads())
        .unwrap_or_default();
    to.import(from.export(&their_heads).expect("export"))
        .expect("import")
}

// ---- The bundle's byte layout (see `core/src/exchange.rs`) ----------------
//
// "CHITTYSYNC-BUNDLE" | version: u8 | registry id: 16 | count: u32 BE
// count × ( author key: 32 | signature: 64 | length: u32 BE | change bytes )

pub const MAGIC: &[u8] = b"CHITTYSYNC-BUNDLE";
/// Bytes before the first entry.
pub const HEADER_LEN: usize = 17 + 1 + 16 + 4;
/// Bytes of an entry before its change bytes.
pub const ENTRY_PREFIX: usize = 32 + 64 + 4;

/// One entry of a bundle, as raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub author: [u8; 32],
    pub signature: [u8; 64],
    pub change: Vec<u8>,
}

/// A bundle decoded to its raw parts, so tests can alter any of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBundle {
    pub version: u8,
    pub registry: [u8; 16],
    pub entries: Vec<RawEntry>,
}

impl RawBundle {
    /// Decodes well-formed bundle bytes (panics otherwise: test input).
    pub fn parse(bytes: &[u8]) -> RawBundle {
        assert_eq!(&bytes[..MAGIC.len()], MAGIC, "bundle magic");
        let mut at = MAGIC.len();
        let version = bytes[at];
        at += 1;
        let registry: [u8; 16] = bytes[at..at + 16].try_into().unwrap();
        at += 16;
        let count = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 4;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let author: [u8; 32] = bytes[at..at + 32].try_into().unwrap();
            at += 32;
            let signature: [u8; 64] = bytes[at..at + 64].try_into().unwrap();
            at += 64;
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at += 4;
            let change = bytes[at..at + len].to_vec();
            at += len;
            entries.push(RawEntry {
                author,
                signature,
                change,
            });
        }
        assert_eq!(at, bytes.len(), "no trailing bytes");
        RawBundle {
            version,
            registry,
            entries,
        }
    }

    /// Encodes back to the bundle format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(self.version);
        out.extend_from_slice(&self.registry);
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.author);
            out.extend_from_slice(&e.signature);
            out.extend_from_slice(&(e.change.len() as u32).to_be_bytes());
            out.extend_from_slice(&e.change);
        }
        out
    }

    /// Offset of entry `i`'s change bytes in [`RawBundle::to_bytes`].
    pub fn change_offset(&self, i: usize) -> usize {
        let mut at = HEADER_LEN;
        for e in &self.entries[..i] {
            at += ENTRY_PREFIX + e.change.len();
        }
        at + ENTRY_PREFIX
    }
}

// ---- Forging: validly signed changes the API would never make -------------

/// The domain tag every change signature starts with (the wire format's
/// constant, see `core/src/trust/mod.rs`).
pub const CHANGE_DOMAIN: &[u8] = b"chittysync/change-signature/v1\n";

/// A replica whose secret key the test knows, so it can sign by hand.
pub fn replica_with_seed(dir: &Path, name: &str, seed: [u8; 32]) -> Replica {
    Replica::open_with_identity(
        dir.join(format!("{name}.db")),
        chittysync::Identity::from_secret_bytes(seed),
    )
    .expect("open replica")
}

/// The public key bytes of the identity with this seed.
pub fn key_of(seed: [u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes()
}

/// A valid signature by `seed` over a change of `registry`.
pub fn sign(seed: [u8; 32], registry: chittysync::RegistryId, hash: &ChangeHash) -> [u8; 64] {
    use ed25519_dalek::Signer;
    let mut msg = CHANGE_DOMAIN.to_vec();
    msg.extend_from_slice(registry.as_bytes());
    msg.extend_from_slice(&hash.0);
    ed25519_dalek::SigningKey::from_bytes(&seed)
        .sign(&msg)
        .to_bytes()
}

/// An Automerge document holding `history` (a full export), acting as the
/// key of `seed`, on which a test makes arbitrary changes.
pub fn forge_doc(history: &chittysync::Bundle, seed: [u8; 32]) -> automerge::AutoCommit {
    let mut doc = automerge::AutoCommit::new();
    let changes = history
        .changes()
        .iter()
        .map(|c| {
            let mut c = c.clone();
            automerge::Change::from_bytes(c.change_bytes()).expect("change decodes")
        })
        .collect::<Vec<_>>();
    doc.apply_changes(changes).expect("history applies");
    doc.set_actor(automerge::ActorId::from(&key_of(seed)[..]));
    doc
}

/// Commits what was done on `doc` and returns it as a bundle entry signed
/// by `signer`, labelled with `author`'s key.
pub fn forged_entry(
    doc: &mut automerge::AutoCommit,
    registry: chittysync::RegistryId,
    signer: [u8; 32],
    author: [u8; 32],
) -> (RawEntry, ChangeHash) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hash = doc
        .commit_with(automerge::transaction::CommitOptions::default().with_time(now))
        .expect("the forged change has operations");
    let mut change = doc.get_change_by_hash(&hash).expect("committed");
    let entry = RawEntry {
        author,
        signature: sign(signer, registry, &hash),
        change: change.bytes().into_owned(),
    };
    (entry, hash)
}

/// A bundle of raw entries for `registry`.
pub fn raw_bundle(registry: chittysync::RegistryId, entries: Vec<RawEntry>) -> Vec<u8> {
    RawBundle {
        version: 1,
        registry: *registry.as_bytes(),
        entries,
    }
    .to_bytes()
}

/// The object id of a map under the document root (`records`, `members`, …).
pub fn root_map(doc: &automerge::AutoCommit, key: &str) -> automerge::ObjId {
    use automerge::ReadDoc;
    match doc.get(automerge::ROOT, key).unwrap() {
        Some((automerge::Value::Object(_), id)) => id,
        other => panic!("{key} is not a map: {other:?}"),
    }
}
