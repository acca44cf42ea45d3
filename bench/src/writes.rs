//! Benchmarks 3 and 4: durable writes against raw rusqlite with the same
//! PRAGMAs, in batches of [`BATCH`] records and one record at a time.

use std::time::Duration;

use chittysync::Replica;
use serde_json::json;

use crate::data::{self, BATCH, Payload, PlainDoc, REGISTRY, RawStore};
use crate::measure::{interleave, time};
use crate::report::{Figure, Goal};
use crate::{Options, Result};

/// Benchmark 3: one `Registry::write` of [`BATCH`] new records against one
/// SQLite transaction inserting the same records as JSON rows. Both stores
/// grow by a batch per iteration.
pub(crate) fn batched(options: &Options) -> Result<Vec<Figure>> {
    let (warmup, iterations) = (options.pick(2, 1), options.pick(21, 3));
    let dir = tempfile::tempdir()?;
    let fs = data::fs_type(dir.path()).unwrap_or_else(|| "unknown fs".into());
    let replica = Replica::open(dir.path().join("ours.db"))?;
    let registry = replica.create_registry(REGISTRY, data::schema())?;
    let mut raw = RawStore::open(&dir.path().join("baseline.db"))?;
    let ours = |i: usize| -> Result<Duration> {
        let batch = Payload::batch(i * BATCH, BATCH);
        let (done, elapsed) = time(|| data::write_batch(&registry, &batch));
        done.map(|()| elapsed)
    };
    let base = |i: usize| -> Result<Duration> {
        let batch = Payload::batch(i * BATCH, BATCH);
        let (done, elapsed) = time(|| raw.insert(&batch));
        done.map(|()| elapsed)
    };
    let pairs = interleave(warmup, iterations, ours, base)?;
    let written = (warmup + iterations) * BATCH;
    if registry.len() != written {
        return Err(format!("expected {written} records, found {}", registry.len()).into());
    }
    let mut figures = vec![
        Figure::throughput(
            "batched writes vs raw rusqlite",
            format!("{BATCH} records per transaction, {fs}"),
            BATCH,
            &pairs,
            Some(Goal::AtLeast(0.6)),
            "ours: validate + Automerge + sign + 1 change row; base: JSON rows, \
             unique id index; both WAL, synchronous=FULL",
        )
        .with_extra(json!({ "records_per_transaction": BATCH, "records_at_end": written })),
    ];

    // Where the time goes: the same records written by plain Automerge,
    // into a fresh registry and a fresh document of equal size.
    let registry = replica.create_registry("services-2", data::schema())?;
    let mut plain = PlainDoc::new()?;
    let ours = |i: usize| -> Result<Duration> {
        let batch = Payload::batch(i * BATCH, BATCH);
        let (done, elapsed) = time(|| data::write_batch(&registry, &batch));
        done.map(|()| elapsed)
    };
    let base = |i: usize| -> Result<Duration> {
        let batch = Payload::batch(i * BATCH, BATCH);
        let (done, elapsed) = time(|| plain.write(&batch));
        done.map(|()| elapsed)
    };
    let pairs = interleave(warmup, iterations, ours, base)?;
    figures.push(Figure::throughput(
        "batched writes vs plain Automerge",
        format!("{BATCH} records per transaction, {fs}"),
        BATCH,
        &pairs,
        None,
        "base: the same puts on a plain AutoCommit in RAM: Automerge's own share",
    ));
    Ok(figures)
}

/// Benchmark 4: `Registry::put` of one new record against a one-row SQLite
/// transaction, each durable.
pub(crate) fn single(options: &Options) -> Result<Vec<Figure>> {
    let (warmup, iterations) = (options.pick(10, 3), options.pick(300, 20));
    let dir = tempfile::tempdir()?;
    let fs = data::fs_type(dir.path()).unwrap_or_else(|| "unknown fs".into());
    let replica = Replica::open(dir.path().join("ours.db"))?;
    let registry = replica.create_registry(REGISTRY, data::schema())?;
    let mut raw = RawStore::open(&dir.path().join("baseline.db"))?;
    // Start both from a registry of realistic size, not an empty one.
    let preload = Payload::batch(0, BATCH);
    data::write_batch(&registry, &preload)?;
    raw.insert(&preload)?;
    let ours = |i: usize| -> Result<Duration> {
        let p = Payload::new(BATCH + i);
        let (done, elapsed) = time(|| registry.put(Some(&p.id), p.fields()));
        done.map(|_| elapsed).map_err(Into::into)
    };
    let base = |i: usize| -> Result<Duration> {
        let p = [Payload::new(BATCH + i)];
        let (done, elapsed) = time(|| raw.insert(&p));
        done.map(|()| elapsed)
    };
    let pairs = interleave(warmup, iterations, ours, base)?;
    Ok(vec![
        Figure::time(
            "single durable put vs raw rusqlite",
            format!("1 record per transaction, {BATCH} preloaded, {fs}"),
            &pairs,
            None,
            "ours: validate + Automerge + sign + 1 row (+ rare auto-compaction); \
             base: 1-row INSERT; both WAL, synchronous=FULL",
        )
        .with_extra(json!({
            "ours_mean_s": pairs.ours.iter().sum::<f64>() / pairs.len() as f64,
            "baseline_mean_s": pairs.base.iter().sum::<f64>() / pairs.len() as f64,
        })),
    ])
}
