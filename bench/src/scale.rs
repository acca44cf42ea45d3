//! Benchmark 5: absolute figures for one registry of N records.

use std::time::Duration;

use chittysync::{Query, Replica};
use serde_json::json;

use crate::data::{self, BATCH, Payload, REGISTRY, RawStore};
use crate::measure::{Pairs, interleave, median, median_of, time};
use crate::report::{Figure, Goal, Unit};
use crate::{Options, Result};

const BENCH: &str = "scale";

/// Record ids spread over `0..n` (a fixed linear congruential sequence, so
/// every run reads the same records).
fn spread(n: usize, count: usize) -> impl Iterator<Item = String> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count).map(move |_| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        Payload::new((x >> 33) as usize % n).id
    })
}

/// Times `Replica::open` + `registry` + one `get`.
fn open_and_get(path: &std::path::Path, id: &str) -> Result<Duration> {
    let (record, elapsed) =
        time(|| -> Result<_> { Ok(Replica::open(path)?.registry(REGISTRY)?.get(id)) });
    match record? {
        Some(_) => Ok(elapsed),
        None => Err(format!("record {id} not found after open").into()),
    }
}

/// Runs benchmark 5 at `options.records`.
pub(crate) fn run(options: &Options) -> Result<Vec<Figure>> {
    let n = options.records;
    let dir = tempfile::tempdir()?;
    let fs = data::fs_type(dir.path()).unwrap_or_else(|| "unknown fs".into());
    let path = dir.path().join("scale.db");
    let raw_path = dir.path().join("baseline.db");
    let mut figures = Vec::new();

    // Bulk load, each of our batches paired with the same batch into raw SQLite.
    let replica = Replica::open(&path)?;
    let registry = replica.create_registry(REGISTRY, data::schema())?;
    let mut raw = RawStore::open(&raw_path)?;
    let batches = n.div_ceil(BATCH);
    let batch = |i: usize| Payload::batch(i * BATCH, BATCH.min(n - i * BATCH));
    let load: Pairs = interleave(
        0,
        batches,
        |i| {
            let b = batch(i);
            let (done, elapsed) = time(|| data::write_batch(&registry, &b));
            done.map(|()| elapsed)
        },
        |i| {
            let b = batch(i);
            let (done, elapsed) = time(|| raw.insert(&b));
            done.map(|()| elapsed)
        },
    )?;
    let total: f64 = load.ours.iter().sum();
    let raw_total: f64 = load.base.iter().sum();
    figures.push(
        Figure::absolute(
            BENCH,
            format!("bulk load {n} records in {BATCH}-record transactions"),
            Unit::Seconds,
            total,
            1,
            format!("total time; {:.0} records/s ({fs})", n as f64 / total),
        )
        .with_extra(json!({
            "records": n,
            "records_per_s": n as f64 / total,
            "raw_sqlite_total_s": raw_total,
        })),
    );
    let mut per_batch = Figure::throughput(
        BENCH,
        format!("bulk load, per {BATCH}-record batch"),
        BATCH,
        &load,
        None,
        "every batch of the load, paired with the same batch into raw SQLite",
    );
    // The last, largest batches show whether cost grows with size.
    let tail = &load.ours[load.len().saturating_sub(10)..];
    per_batch = per_batch.with_extra(json!({ "last_10_batches_median_s": median(tail) }));
    figures.push(per_batch);
    drop((registry, replica, raw));
    figures.push(Figure::absolute(
        BENCH,
        format!("file size, {n} records, as loaded"),
        Unit::Bytes,
        data::store_size(&path) as f64,
        1,
        format!(
            "database + WAL; raw SQLite JSON rows: {:.1} MiB",
            data::store_size(&raw_path) as f64 / (1 << 20) as f64
        ),
    ));

    // Open as left by the load: snapshot-less, the changes replayed.
    let some_id = Payload::new(n / 2).id;
    let runs = options.pick(3, 1);
    let open = median_of(runs, || open_and_get(&path, &some_id))?;
    figures.push(Figure::absolute(
        BENCH,
        format!("open + get, {n} records, as loaded"),
        Unit::Seconds,
        open,
        runs,
        format!("as the load left it ({batches} changes, no compact() call): changes replayed"),
    ));

    let replica = Replica::open(&path)?;
    let registry = replica.registry(REGISTRY)?;
    let gets = options.pick(2_000, 200);
    let mut samples = Vec::with_capacity(gets);
    for id in spread(n, gets) {
        let (record, elapsed) = time(|| registry.get(&id));
        if record.is_none() {
            return Err(format!("record {id} not found").into());
        }
        samples.push(elapsed.as_secs_f64());
    }
    figures.push(Figure::absolute(
        BENCH,
        format!("get, {n} records"),
        Unit::Seconds,
        median(&samples),
        gets,
        "median of single-record reads at spread ids",
    ));
    let lists = options.pick(3, 1);
    let list = median_of(lists, || {
        let (all, elapsed) = time(|| registry.list(&Query::all()));
        if all.len() == n {
            Ok(elapsed)
        } else {
            Err(format!("listed {} of {n} records", all.len()).into())
        }
    })?;
    figures.push(Figure::absolute(
        BENCH,
        format!("list all, {n} records"),
        Unit::Seconds,
        list,
        lists,
        format!("{:.0} records/s", n as f64 / list),
    ));

    // Compacted: open against plain Automerge loading the same document.
    let (compacted, compact_time) = time(|| registry.compact());
    compacted?;
    let doc = data::document_bytes(&registry)?;
    drop((registry, replica));
    figures.push(Figure::absolute(
        BENCH,
        format!("compact, {n} records"),
        Unit::Seconds,
        compact_time.as_secs_f64(),
        1,
        format!(
            "file after: {:.1} MiB; Automerge document: {:.1} MiB",
            data::store_size(&path) as f64 / (1 << 20) as f64,
            doc.len() as f64 / (1 << 20) as f64
        ),
    ));
    let pairs = crate::open::compare(&path, &doc, &some_id, options.pick(1, 0), runs)?;
    figures.push(
        Figure::time(
            BENCH,
            format!("open + get, {n} records, compacted"),
            &pairs,
            Some(Goal::AtMost(1.2)),
            "as benchmark 2 at this size",
        )
        .with_extra(json!({ "document_bytes": doc.len() })),
    );
    Ok(figures)
}
