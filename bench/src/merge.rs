//! Benchmark 1: importing a bundle of signed changes (verify, authorise,
//! apply, store durably) against plain Automerge applying the same changes.

use std::path::Path;
use std::time::Duration;

use automerge::{AutoCommit, Change};
use chittysync::{Bundle, ChangeHash, FieldDef, FieldKind, Identity, Replica, Role, Schema};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::json;

use crate::data::{self, REGISTRY};
use crate::measure::{Pairs, interleave, median_of, time};
use crate::report::{Figure, Goal, Unit};
use crate::{Options, Result};

/// Operations per change measured.
const OPS: [usize; 3] = [1, 32, 128];

/// Records the changes touch, each change one record.
const RECORDS: usize = 200;

/// The signed history both sides start from, and the changes to merge.
struct Workload {
    /// Genesis, the writer's membership and the change creating the records.
    base: Bundle,
    /// The changes to merge, as a receiving replica decodes them from a file.
    bundle: Bundle,
    /// `bundle` in its file form.
    file: Vec<u8>,
    /// The same changes as plain Automerge sees them.
    base_raw: Vec<Change>,
    raw: Vec<Change>,
    raw_bytes: Vec<Vec<u8>>,
    /// The heads both sides must reach.
    heads: Vec<ChangeHash>,
    mean_ops: f64,
}

/// Builds the workload: an admin creates a registry of `changes` records
/// and makes a writer a member; the writer then sets `ops` fields of each
/// record, one change of `ops` operations per record.
fn workload(dir: &Path, ops: usize, changes: usize) -> Result<Workload> {
    let fields: Vec<String> = (0..ops).map(|k| format!("f{k:03}")).collect();
    let schema = fields.iter().fold(Schema::new(), |s, f| {
        s.field(FieldDef::new(f.as_str(), FieldKind::Text))
    });
    let open = |who: &str| {
        Replica::open_with_identity(dir.join(format!("{who}-{ops}.db")), Identity::generate()?)
    };
    let (admin, writer) = (open("admin")?, open("writer")?);
    let registry = admin.create_registry(REGISTRY, schema)?;
    registry.set_member(writer.public_key(), Role::Writer)?;
    let ids: Vec<String> = (0..changes).map(|j| format!("r{j:04}")).collect();
    registry.write(|w| {
        for id in &ids {
            w.put(Some(id), [(fields[0].as_str(), "initial")])?;
        }
        Ok(())
    })?;
    let base = registry.export(&[])?;
    writer.import(base.clone())?;
    let registry = writer.registry_by_id(registry.id())?;
    let base_heads = registry.heads();
    for (j, id) in ids.iter().enumerate() {
        registry.write(|w| {
            w.put(
                Some(id),
                fields.iter().map(|f| (f.as_str(), format!("{f}-of-{j}"))),
            )
            .map(drop)
        })?;
    }
    let file = registry.export(&base_heads)?.to_bytes();
    let bundle = Bundle::from_bytes(&file)?;
    if bundle.len() != changes {
        return Err(format!("expected {changes} changes, exported {}", bundle.len()).into());
    }
    let raw_bytes: Vec<Vec<u8>> = bundle
        .changes()
        .iter()
        .map(|c| c.clone().change_bytes())
        .collect();
    let raw = data::raw_changes(bundle.changes())?;
    let mean_ops = raw.iter().map(|c| c.len() as f64).sum::<f64>() / raw.len() as f64;
    Ok(Workload {
        base_raw: data::raw_changes(base.changes())?,
        base,
        bundle,
        file,
        raw,
        raw_bytes,
        heads: registry.heads(),
        mean_ops,
    })
}

/// Whether the timed part starts from decoded changes or from bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Ours: a decoded `Bundle`; baseline: decoded `Change`s.
    Decoded,
    /// Ours: `Bundle::from_bytes` of the file; baseline: `Change::from_bytes`
    /// of each change.
    Bytes,
}

/// Imports the workload into fresh replicas B in `dir` (each first given
/// the base), against plain Automerge documents at the same base applying
/// the same changes.
fn compare(
    w: &Workload,
    dir: &Path,
    input: Input,
    warmup: usize,
    iterations: usize,
) -> Result<Pairs> {
    let ours = |i: usize| -> Result<Duration> {
        let path = dir.join(format!("b-{i}.db"));
        let b = Replica::open_with_identity(&path, Identity::generate()?)?;
        b.import(w.base.clone())?;
        let bundle = w.bundle.clone();
        let (report, elapsed) = match input {
            Input::Decoded => time(|| b.import(bundle)),
            Input::Bytes => time(|| b.import(Bundle::from_bytes(&w.file)?)),
        };
        let report = report?;
        if report.applied != w.bundle.len() {
            return Err(
                format!("imported {} of {} changes", report.applied, w.bundle.len()).into(),
            );
        }
        if i == 0 && b.registry_by_id(w.bundle.registry())?.heads() != w.heads {
            return Err("the importing replica did not reach the exporter's heads".into());
        }
        drop(b);
        data::remove_store(&path);
        Ok(elapsed)
    };
    let base = |i: usize| -> Result<Duration> {
        let mut doc = AutoCommit::new();
        doc.apply_changes(w.base_raw.clone())?;
        let (changes, bytes) = (w.raw.clone(), w.raw_bytes.clone());
        let (applied, elapsed) = match input {
            Input::Decoded => time(|| doc.apply_changes(changes)),
            Input::Bytes => time(|| {
                let changes = bytes
                    .into_iter()
                    .map(Change::from_bytes)
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                doc.apply_changes(changes)
            }),
        };
        applied?;
        if i == 0 && doc.get_heads() != w.heads {
            return Err("plain Automerge did not reach the exporter's heads".into());
        }
        Ok(elapsed)
    };
    interleave(warmup, iterations, ours, base)
}

/// Verifies the bundle's signatures with raw ed25519-dalek: decode the
/// keys, rebuild the signed messages, one batch verification. The floor
/// under our import's signature check.
fn raw_verify(w: &Workload) -> Result<Duration> {
    // Mirrors the message core signs (trust::signing_message); if the two
    // drift apart the verification below fails and says so.
    const DOMAIN: &[u8] = b"chittysync/change-signature/v1\n";
    let id = w.bundle.registry();
    let changes = w.bundle.changes();
    let (verified, elapsed) = time(|| -> Result<()> {
        let messages: Vec<Vec<u8>> = changes
            .iter()
            .map(|c| [DOMAIN, id.as_bytes(), &c.hash().0].concat())
            .collect();
        let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let signatures: Vec<Signature> = changes
            .iter()
            .map(|c| Signature::from_bytes(c.signature()))
            .collect();
        let keys = changes
            .iter()
            .map(|c| VerifyingKey::from_bytes(c.author().as_bytes()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        ed25519_dalek::verify_batch(&messages, &signatures, &keys)?;
        Ok(())
    });
    verified.map_err(|e| format!("raw ed25519 verification failed: {e}"))?;
    Ok(elapsed)
}

/// Runs benchmark 1 at every size: decoded changes with the store on disk
/// and on tmpfs, and end to end from bytes on disk.
pub(crate) fn run(options: &Options) -> Result<Vec<Figure>> {
    const BENCH: &str = "signed merge vs unsigned apply";
    let changes = if options.quick { 50 } else { RECORDS };
    let (warmup, iterations) = (options.pick(3, 1), options.pick(31, 3));
    let disk = tempfile::tempdir()?;
    let disk_fs = data::fs_type(disk.path()).unwrap_or_else(|| "unknown fs".into());
    let ram = data::tmpfs_dir();
    let mut figures = Vec::new();
    for ops in OPS {
        let w = workload(disk.path(), ops, changes)?;
        let goal = (ops == 32).then_some(Goal::AtMost(1.5));
        let extra = json!({ "changes": changes, "mean_ops_per_change": w.mean_ops });
        let case = |what: &str| format!("{changes} changes × {ops} ops, {what}");
        let pairs = compare(&w, disk.path(), Input::Decoded, warmup, iterations)?;
        figures.push(
            Figure::time(
                BENCH,
                case(&format!("store on disk ({disk_fs})")),
                &pairs,
                goal,
                "ours: verify + authorise + apply + durable SQLite commit (fsync); \
                 base: apply_changes; both from decoded changes",
            )
            .with_extra(extra.clone()),
        );
        match &ram {
            Some(ram) => {
                let pairs = compare(&w, ram.path(), Input::Decoded, warmup, iterations)?;
                figures.push(
                    Figure::time(
                        BENCH,
                        case("store on tmpfs"),
                        &pairs,
                        goal,
                        "as above, store in RAM (/dev/shm): same SQL work, fsync ~free",
                    )
                    .with_extra(extra.clone()),
                );
            }
            None if ops == OPS[0] => figures.push(Figure::missing(
                BENCH,
                "store on tmpfs",
                "not measured: no tmpfs at /dev/shm on this machine",
            )),
            None => {}
        }
        let pairs = compare(&w, disk.path(), Input::Bytes, warmup, iterations)?;
        figures.push(
            Figure::time(
                BENCH,
                case(&format!("from bytes, store on disk ({disk_fs})")),
                &pairs,
                None,
                "end to end: + Bundle::from_bytes / + Change::from_bytes of each",
            )
            .with_extra(extra),
        );
        if ops == OPS[0] {
            let runs = options.pick(21, 3);
            let verify = median_of(runs, || raw_verify(&w))?;
            figures.push(Figure::absolute(
                BENCH,
                format!("{changes} signatures, raw ed25519-dalek"),
                Unit::Seconds,
                verify,
                runs,
                "floor of the signature check: key decode + verify_batch",
            ));
        }
    }
    Ok(figures)
}
