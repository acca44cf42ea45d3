//! Benchmark 10: the Google Sheets adapter against the Sheets emulator
//! (loopback; the emulator enforces Google's per-minute quotas and checks
//! service-account tokens).
//!
//! - **Rows per write request**: a first push of N records; rows carried
//!   per `values:batchUpdate` ÷ the rows per request of the fewest requests
//!   Google's advised ~2 MB body allows for the same bytes (goal ≥ 0.9).
//! - **Budget use**: back-to-back syncs of one changed record each, with
//!   the quota scaled to 240 requests/min per user (4/s) and the adapter's
//!   budget set to it, for over two minutes (a quota is per minute, so a
//!   shorter run would count the first minute's burst); achieved requests/s
//!   of the busier budget ÷ the quota (goal ≥ 0.9, no sustained 429s).
//! - **Cost of a small change**: the API calls of a sync that finds one
//!   record changed, in a 10k-row sheet (must be a small constant).

use std::path::Path;
use std::time::Instant;

use chittysync::{Adapter, AdapterBinding, MirrorOptions, Replica, Value};
use chittysync_adapters::sheets::{SheetsAdapter, SheetsOptions};
use chittysync_emulators::{LoggedRequest, Sheets};
use serde_json::json;
use tokio::runtime::Runtime;

use crate::data::{self, Payload, REGISTRY};
use crate::report::{Figure, Goal, Unit};
use crate::{Options, Result};

const BENCH_ROWS: &str = "sheets write batching";
const BENCH_RATE: &str = "sheets request budget";
const BENCH_CALLS: &str = "sheets calls per change";
const ACCOUNT: &str = "bench@chittysync-bench.iam.gserviceaccount.com";
/// Google's advised upper size of one request body.
const MAX_REQUEST_BYTES: f64 = 2_000_000.0;

struct Bound {
    _dir: tempfile::TempDir,
    replica: Replica,
    adapter: SheetsAdapter,
}

fn bind(
    rt: &Runtime,
    emulator: &Sheets,
    base_url: &str,
    payloads: &[Payload],
    per_minute: Option<u32>,
) -> Result<Bound> {
    let spreadsheet = emulator.create_spreadsheet(&["services"], &[ACCOUNT]);
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("service-account.json");
    write_key(&key_file, &emulator.service_account_key(base_url, ACCOUNT))?;
    let replica = Replica::open(dir.path().join("r.db"))?;
    let registry = replica.create_registry(REGISTRY, data::schema())?;
    for chunk in payloads.chunks(data::BATCH) {
        data::write_batch(&registry, chunk)?;
    }
    let binding = AdapterBinding::new("sheet", REGISTRY, "sheets", &spreadsheet);
    replica.add_binding(&binding)?;
    let mut options = SheetsOptions::new(&spreadsheet, &key_file);
    options.base_url = base_url.to_owned();
    options.drive_base_url = base_url.to_owned();
    if let Some(n) = per_minute {
        options.reads_per_minute = n;
        options.writes_per_minute = n;
    }
    let adapter = SheetsAdapter::new(binding.table_spec(&data::schema()), options)?;
    rt.block_on(adapter.prepare(true))?;
    Ok(Bound {
        _dir: dir,
        replica,
        adapter,
    })
}

fn write_key(path: &Path, key: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec(key)?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn sync(rt: &Runtime, bound: &Bound, options: &MirrorOptions) -> Result<usize> {
    let report = rt.block_on(
        bound
            .replica
            .run_mirror("sheet", &bound.adapter, options, &()),
    )?;
    if !report.failed.is_empty() {
        return Err(format!(
            "{} rows failed: {:?}",
            report.failed.len(),
            report.failed[0]
        )
        .into());
    }
    Ok(report.applied)
}

fn is_values_write(r: &LoggedRequest) -> bool {
    r.method == "POST" && r.path.ends_with("/values:batchUpdate")
}

pub(crate) fn run(options: &Options) -> Result<Vec<Figure>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut figures = vec![batching(&rt, options)?, budget(&rt, options)?];
    figures.push(calls(&rt, options)?);
    Ok(figures)
}

/// Rows per values write of a first push ÷ the most one request may carry.
fn batching(rt: &Runtime, options: &Options) -> Result<Figure> {
    let emulator = Sheets::new();
    let server = rt.block_on(emulator.start())?;
    let n = options.pick(10_000, 2_000);
    let bound = bind(
        rt,
        &emulator,
        &server.base_url(),
        &Payload::batch(0, n),
        None,
    )?;
    emulator.control().clear_log();
    let applied = sync(rt, &bound, &MirrorOptions::push())?;
    if applied != n {
        return Err(format!("pushed {applied} of {n} records").into());
    }
    let log = emulator.control().requests();
    let writes: Vec<&LoggedRequest> = log.iter().filter(|r| is_values_write(r)).collect();
    if writes.is_empty() {
        return Err("the push made no values:batchUpdate request".into());
    }
    let bytes: usize = writes.iter().map(|r| r.body.len()).sum();
    // The fewest requests Google's ~2 MB advice allows for these bytes, and
    // the rows each would carry.
    let fewest = (bytes as f64 / MAX_REQUEST_BYTES).ceil().max(1.0);
    let most = n as f64 / fewest;
    let achieved = n as f64 / writes.len() as f64;
    Ok(Figure {
        bench: BENCH_ROWS,
        case: format!("first push of {n} records: rows per values write ÷ the most allowed"),
        unit: Unit::RowsPerRequest,
        ours: achieved,
        baseline: Some(most),
        ratio: Some(achieved / most),
        goal: Some(Goal::AtLeast(0.9)),
        samples: writes.len(),
        note: format!(
            "{} values writes of {bytes} bytes in all (fewest under ~2 MB each: {fewest}); {} requests in all",
            writes.len(),
            log.len()
        ),
        extra: json!({
            "values_writes": writes.len(),
            "requests": log.len(),
            "body_bytes": bytes,
        }),
    })
}

/// Requests/s of back-to-back one-change syncs ÷ a scaled quota.
fn budget(rt: &Runtime, options: &Options) -> Result<Figure> {
    const PER_MINUTE: u32 = 240;
    let emulator = Sheets::new();
    for limit in ["read_per_minute_per_user", "write_per_minute_per_user"] {
        emulator.control().set_limit(limit, f64::from(PER_MINUTE));
    }
    let server = rt.block_on(emulator.start())?;
    let bound = bind(
        rt,
        &emulator,
        &server.base_url(),
        &Payload::batch(0, 50),
        Some(PER_MINUTE),
    )?;
    sync(rt, &bound, &MirrorOptions::push())?;
    let registry = bound.replica.registry(REGISTRY)?;
    let rounds = options.pick(140, 10);
    emulator.control().clear_log();
    let start = Instant::now();
    for i in 0..rounds {
        let p = Payload::new(i % 50);
        registry.put(Some(&p.id), [("port", Value::from(i as i64))])?;
        sync(rt, &bound, &MirrorOptions::sync())?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let log = emulator.control().requests();
    let throttled = log.iter().filter(|r| r.status == 429).count();
    let is_sheets = |r: &&LoggedRequest| r.path.starts_with("/v4/");
    let reads = log
        .iter()
        .filter(is_sheets)
        .filter(|r| r.method == "GET")
        .count();
    let writes = log
        .iter()
        .filter(is_sheets)
        .filter(|r| r.method != "GET")
        .count();
    // The busier of the two budgets is the one a faster client would hit.
    let busiest = reads.max(writes) as f64 / elapsed;
    let quota = f64::from(PER_MINUTE) / 60.0;
    Ok(Figure {
        bench: BENCH_RATE,
        case: format!("{rounds} one-change syncs back to back, quota {PER_MINUTE}/min per user"),
        unit: Unit::RequestsPerSecond,
        ours: busiest,
        baseline: Some(quota),
        ratio: Some(busiest / quota),
        goal: Some(Goal::AtLeast(0.9)),
        samples: rounds,
        note: format!("{reads} reads, {writes} writes in {elapsed:.1} s; {throttled} answered 429"),
        extra: json!({ "reads": reads, "writes": writes, "seconds": elapsed, "throttled": throttled }),
    })
}

/// API calls of a sync that finds one record changed, in a 10k-row sheet.
fn calls(rt: &Runtime, options: &Options) -> Result<Figure> {
    let size = options.pick(10_000, 2_000);
    let emulator = Sheets::new();
    let server = rt.block_on(emulator.start())?;
    let bound = bind(
        rt,
        &emulator,
        &server.base_url(),
        &Payload::batch(0, size),
        None,
    )?;
    sync(rt, &bound, &MirrorOptions::push())?;
    let registry = bound.replica.registry(REGISTRY)?;
    let p = Payload::new(size / 2);
    registry.put(Some(&p.id), [("port", Value::from(7))])?;
    emulator.control().clear_log();
    let applied = sync(rt, &bound, &MirrorOptions::sync())?;
    if applied != 1 {
        return Err(format!("expected 1 row pushed, got {applied}").into());
    }
    let log = emulator.control().requests();
    let kinds: Vec<String> = log
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    Ok(Figure::absolute(
        BENCH_CALLS,
        format!("1 record changed in the registry, {size} rows"),
        Unit::Requests,
        log.len() as f64,
        1,
        "a small constant, whatever the sheet's size",
    )
    .with_extra(json!({ "requests": kinds })))
}
