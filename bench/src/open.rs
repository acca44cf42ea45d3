//! Benchmark 2: opening a replica and reading a record, against loading
//! the same document with plain Automerge.

use std::path::Path;
use std::time::Duration;

use automerge::AutoCommit;
use chittysync::Replica;
use serde_json::json;

use crate::data::{self, BATCH, Payload, REGISTRY};
use crate::measure::{Pairs, interleave, time};
use crate::report::{Figure, Goal};
use crate::{Options, Result};

/// A replica at `path` holding `records` records written in batches of
/// [`BATCH`]; returns the id of a record in the middle.
pub(crate) fn build(path: &Path, records: usize) -> Result<String> {
    let replica = Replica::open(path)?;
    let registry = replica.create_registry(REGISTRY, data::schema())?;
    for first in (0..records).step_by(BATCH) {
        data::write_batch(
            &registry,
            &Payload::batch(first, BATCH.min(records - first)),
        )?;
    }
    Ok(Payload::new(records / 2).id)
}

/// Interleaves our open (`Replica::open` + `registry` + one `get`) with
/// `AutoCommit::load` + the same read of the same document bytes.
pub(crate) fn compare(
    path: &Path,
    doc: &[u8],
    id: &str,
    warmup: usize,
    iterations: usize,
) -> Result<Pairs> {
    let ours = |_| -> Result<Duration> {
        let (record, elapsed) = time(|| -> Result<_> {
            let replica = Replica::open(path)?;
            Ok(replica.registry(REGISTRY)?.get(id))
        });
        match record? {
            Some(r) if r.fields.len() == 5 => Ok(elapsed),
            _ => Err(format!("record {id} not found after open").into()),
        }
    };
    let base = |_| -> Result<Duration> {
        let (fields, elapsed) = time(|| -> Result<_> {
            let doc = AutoCommit::load(doc)?;
            Ok(data::plain_get(&doc, id))
        });
        match fields? {
            Some(5) => Ok(elapsed),
            _ => Err(format!("record {id} not found in the loaded document").into()),
        }
    };
    interleave(warmup, iterations, ours, base)
}

/// Runs benchmark 2.
pub(crate) fn run(options: &Options) -> Result<Vec<Figure>> {
    let records = if options.quick { 1_000 } else { 10_000 };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("open.db");
    let id = build(&path, records)?;
    let doc = {
        let replica = Replica::open(&path)?;
        let registry = replica.registry(REGISTRY)?;
        registry.compact()?;
        data::document_bytes(&registry)?
    };
    let pairs = compare(&path, &doc, &id, options.pick(3, 1), options.pick(21, 3))?;
    Ok(vec![
        Figure::time(
            "open vs Automerge::load",
            format!("{records} records, compacted"),
            &pairs,
            Some(Goal::AtMost(1.2)),
            "ours: Replica::open + registry() + get; base: AutoCommit::load + same read",
        )
        .with_extra(json!({ "records": records, "document_bytes": doc.len() })),
    ])
}
