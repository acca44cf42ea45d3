//! Shared workload: the records written, the raw-SQLite baseline store, and
//! helpers to build registries and plain Automerge documents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, Change, ObjId, ObjType, ReadDoc};
use chittysync::{FieldDef, FieldKind, Registry, Schema, Value};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::Result;

/// Records per write transaction in batched writes and bulk loads.
pub(crate) const BATCH: usize = 1_000;

/// Name of the registry every benchmark writes.
pub(crate) const REGISTRY: &str = "services";

const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

/// A service-registry schema: five typed fields, one required, one select.
pub(crate) fn schema() -> Schema {
    Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("host", FieldKind::Text))
        .field(FieldDef::new("port", FieldKind::Integer))
        .field(FieldDef::new("tier", FieldKind::Select).options(TIERS))
        .field(FieldDef::new("active", FieldKind::Bool))
}

/// One record's id and field values, identical for ours and the baseline.
#[derive(Clone, Debug)]
pub(crate) struct Payload {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: i64,
    pub(crate) tier: &'static str,
    pub(crate) active: bool,
}

impl Payload {
    /// The `i`th record of the workload.
    pub(crate) fn new(i: usize) -> Payload {
        Payload {
            id: format!("rec-{i:09}"),
            name: format!("service-{i}"),
            host: format!("host-{}.internal.example.com", i % 997),
            port: 1024 + (i % 50_000) as i64,
            tier: TIERS[i % TIERS.len()],
            active: !i.is_multiple_of(7),
        }
    }

    /// `count` consecutive records from the `first`th.
    pub(crate) fn batch(first: usize, count: usize) -> Vec<Payload> {
        (first..first + count).map(Payload::new).collect()
    }

    /// The fields as our API takes them.
    pub(crate) fn fields(&self) -> [(&'static str, Value); 5] {
        [
            ("name", self.name.as_str().into()),
            ("host", self.host.as_str().into()),
            ("port", self.port.into()),
            ("tier", self.tier.into()),
            ("active", self.active.into()),
        ]
    }

    /// The fields as the JSON text the baseline stores.
    pub(crate) fn json(&self) -> String {
        serde_json::json!({
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "tier": self.tier,
            "active": self.active,
        })
        .to_string()
    }
}

/// Writes `payloads` as one signed change in one durable transaction.
pub(crate) fn write_batch(registry: &Registry, payloads: &[Payload]) -> Result<()> {
    registry.write(|w| {
        for p in payloads {
            w.put(Some(&p.id), p.fields())?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The baseline store: one table of JSON rows with an index on the id, and
/// the same PRAGMAs as our store (WAL, `synchronous = FULL`, foreign keys,
/// busy timeout), each write one `IMMEDIATE` transaction.
pub(crate) struct RawStore {
    conn: Connection,
}

impl RawStore {
    /// Opens (creating) the baseline store at `path`.
    pub(crate) fn open(path: &Path) -> Result<RawStore> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             CREATE TABLE IF NOT EXISTS records (id TEXT NOT NULL, body TEXT NOT NULL) STRICT;
             CREATE UNIQUE INDEX IF NOT EXISTS records_id ON records(id);",
        )?;
        Ok(RawStore { conn })
    }

    /// Inserts `payloads` as JSON rows in one durable transaction.
    pub(crate) fn insert(&mut self, payloads: &[Payload]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO records (id, body) VALUES (?1, ?2)")?;
            for p in payloads {
                stmt.execute(params![p.id, p.json()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The plain-Automerge equivalent of a registry: a `records` map of maps,
/// written with the same scalar operations, without validation, signing or
/// storage.
pub(crate) struct PlainDoc {
    doc: AutoCommit,
    records: ObjId,
}

impl PlainDoc {
    /// An empty document with its `records` map.
    pub(crate) fn new() -> Result<PlainDoc> {
        let mut doc = AutoCommit::new();
        let records = doc.put_object(automerge::ROOT, "records", ObjType::Map)?;
        doc.commit();
        Ok(PlainDoc { doc, records })
    }

    /// Writes `payloads` as one change.
    pub(crate) fn write(&mut self, payloads: &[Payload]) -> Result<()> {
        for p in payloads {
            let obj = self
                .doc
                .put_object(&self.records, p.id.as_str(), ObjType::Map)?;
            self.doc.put(&obj, "name", p.name.as_str())?;
            self.doc.put(&obj, "host", p.host.as_str())?;
            self.doc.put(&obj, "port", p.port)?;
            self.doc.put(&obj, "tier", p.tier)?;
            self.doc.put(&obj, "active", p.active)?;
        }
        self.doc.commit();
        Ok(())
    }
}

/// Parses the raw Automerge changes out of signed changes, as a plain
/// Automerge peer would receive them.
pub(crate) fn raw_changes(signed: &[chittysync::SignedChange]) -> Result<Vec<Change>> {
    signed
        .iter()
        .map(|c| Ok(Change::from_bytes(c.clone().change_bytes())?))
        .collect()
}

/// The registry's whole document as a plain Automerge peer would save it:
/// every exported change applied to a fresh document, then `save()`.
pub(crate) fn document_bytes(registry: &Registry) -> Result<Vec<u8>> {
    let bundle = registry.export(&[])?;
    let mut doc = AutoCommit::new();
    doc.apply_changes(raw_changes(bundle.changes())?)?;
    if doc.get_heads() != registry.heads() {
        return Err("the plain document does not match the registry's heads".into());
    }
    Ok(doc.save())
}

/// The baseline's equivalent of `Registry::get`: the record's field values.
pub(crate) fn plain_get(doc: &AutoCommit, id: &str) -> Option<usize> {
    let records = match doc.get(automerge::ROOT, "records").ok()?? {
        (automerge::Value::Object(_), obj) => obj,
        _ => return None,
    };
    let record = match doc.get(&records, id).ok()?? {
        (automerge::Value::Object(_), obj) => obj,
        _ => return None,
    };
    Some(doc.map_range(&record, ..).count())
}

/// Size of an SQLite database with its WAL and shared-memory files.
pub(crate) fn store_size(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
        })
        .sum()
}

/// Removes an SQLite database and its side files (and our key file).
pub(crate) fn remove_store(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let _ = std::fs::remove_file(chittysync::Replica::key_path(db));
}

/// The file system type `path` lives on, from `/proc/mounts` (Linux only).
pub(crate) fn fs_type(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let path = path.canonicalize().ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (_, mount, fs) = (parts.next()?, parts.next()?, parts.next()?);
            // Octal escapes (\040 for space) are rare in mount points we use.
            let mount = Path::new(mount);
            path.starts_with(mount)
                .then(|| (mount.as_os_str().len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

/// A temporary directory on tmpfs (RAM, where `fsync` returns at once), if
/// the machine has one; `None` otherwise — never a disk directory in disguise.
pub(crate) fn tmpfs_dir() -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if fs_type(shm).as_deref() != Some("tmpfs") {
        return None;
    }
    tempfile::tempdir_in(shm).ok()
}
