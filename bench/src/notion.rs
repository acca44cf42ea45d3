//! Benchmark 9: the Notion adapter against the Notion emulator (loopback;
//! the emulator enforces Notion's documented average of 3 requests/s per
//! integration).
//!
//! - **Budget use**: a push of new records at the adapter's default
//!   settings; achieved requests/s ÷ the emulator's enforced rate (goal ≥
//!   0.9 with no sustained 429s: a client that waits too long wastes the
//!   budget, one that waits too little is throttled).
//! - **Cost of a small change**: the API calls a sync makes for one row
//!   changed in Notion, and for one record changed in the registry, in a
//!   bound data source of 10k rows (must be a small constant, not a scan).

use std::time::Instant;

use chittysync::{AdapterBinding, MirrorOptions, Replica, Value};
use chittysync_adapters::notion::{NotionAdapter, NotionOptions};
use chittysync_emulators::{LoggedRequest, Notion};
use serde_json::json;
use tokio::runtime::Runtime;

use crate::data::{self, Payload, REGISTRY};
use crate::report::{Figure, Goal, Unit};
use crate::{Options, Result};

const BENCH_RATE: &str = "notion request budget";
const BENCH_CALLS: &str = "notion calls per change";
const TOKEN: &str = "bench-integration-token";
/// Notion's documented average rate per integration.
const NOTION_RATE: f64 = 3.0;

fn properties() -> serde_json::Value {
    json!({
        "name": {"title": {}},
        "host": {"rich_text": {}},
        "port": {"number": {}},
        "tier": {"select": {"options": [{"name": "gold"}, {"name": "silver"}, {"name": "bronze"}]}},
        "active": {"checkbox": {}},
        "id": {"rich_text": {}},
    })
}

fn page_properties(p: &Payload) -> serde_json::Value {
    json!({
        "name": {"title": [{"type": "text", "text": {"content": p.name}}]},
        "host": {"rich_text": [{"type": "text", "text": {"content": p.host}}]},
        "port": {"number": p.port},
        "tier": {"select": {"name": p.tier}},
        "active": {"checkbox": p.active},
    })
}

struct Bound {
    /// The bound data source's id.
    source: String,
    _dir: tempfile::TempDir,
    replica: Replica,
    adapter: NotionAdapter,
}

fn bind(
    emulator: &Notion,
    base_url: &str,
    payloads: &[Payload],
    rps: Option<f64>,
) -> Result<Bound> {
    let (database, sources) =
        emulator.create_database("services", vec![("services", properties())]);
    let dir = tempfile::tempdir()?;
    let replica = Replica::open(dir.path().join("r.db"))?;
    let registry = replica.create_registry(REGISTRY, data::schema())?;
    for chunk in payloads.chunks(data::BATCH) {
        data::write_batch(&registry, chunk)?;
    }
    let binding = AdapterBinding::new("notion", REGISTRY, "notion", &database);
    replica.add_binding(&binding)?;
    let mut options = NotionOptions::new(TOKEN, &database);
    options.base_url = base_url.to_owned();
    if let Some(rps) = rps {
        options.requests_per_second = rps;
    }
    let adapter = NotionAdapter::new(binding.table_spec(&data::schema()), options)?;
    Ok(Bound {
        source: sources[0].clone(),
        _dir: dir,
        replica,
        adapter,
    })
}

fn sync(rt: &Runtime, bound: &Bound, options: &MirrorOptions) -> Result<usize> {
    let report = rt.block_on(
        bound
            .replica
            .run_mirror("notion", &bound.adapter, options, &()),
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

pub(crate) fn run(options: &Options) -> Result<Vec<Figure>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut figures = vec![budget(&rt, options)?];
    figures.extend(calls(&rt, options)?);
    Ok(figures)
}

/// Achieved requests/s of a push at default settings ÷ the enforced rate.
fn budget(rt: &Runtime, options: &Options) -> Result<Figure> {
    let emulator = Notion::new();
    emulator.add_token(TOKEN);
    emulator.control().set_limit("rate_per_sec", NOTION_RATE);
    let server = rt.block_on(emulator.start())?;
    let n = options.pick(60, 12);
    let bound = bind(&emulator, &server.base_url(), &Payload::batch(0, n), None)?;
    emulator.control().clear_log();
    let start = Instant::now();
    let applied = sync(rt, &bound, &MirrorOptions::push())?;
    let elapsed = start.elapsed().as_secs_f64();
    if applied != n {
        return Err(format!("pushed {applied} of {n} records").into());
    }
    let log = emulator.control().requests();
    let throttled = log.iter().filter(|r| r.status == 429).count();
    let achieved = log.len() as f64 / elapsed;
    Ok(Figure {
        bench: BENCH_RATE,
        case: format!("push of {n} records, default settings, ÷ the enforced 3 req/s"),
        unit: Unit::RequestsPerSecond,
        ours: achieved,
        baseline: Some(NOTION_RATE),
        ratio: Some(achieved / NOTION_RATE),
        goal: Some(Goal::AtLeast(0.9)),
        samples: log.len(),
        note: format!(
            "{} requests in {elapsed:.1} s, {throttled} answered 429",
            log.len()
        ),
        extra: json!({ "requests": log.len(), "seconds": elapsed, "throttled": throttled }),
    })
}

/// API calls of a sync that finds one change, in a 10k-row data source.
fn calls(rt: &Runtime, options: &Options) -> Result<Vec<Figure>> {
    let size = options.pick(10_000, 2_000);
    let emulator = Notion::new();
    emulator.add_token(TOKEN);
    // The setup reads every row: lift the limits so it is quick.
    emulator.control().set_limit("rate_per_sec", 1e9);
    emulator.control().set_limit("rate_burst", 1e9);
    let server = rt.block_on(emulator.start())?;
    let bound = bind(&emulator, &server.base_url(), &[], Some(1e6))?;
    let source = bound.source.clone();
    let pages: Vec<String> = Payload::batch(0, size)
        .iter()
        .map(|p| emulator.create_page(&source, page_properties(p)))
        .collect();
    let pulled = sync(rt, &bound, &MirrorOptions::sync())?;
    if pulled != size {
        return Err(format!("the first sync brought {pulled} of {size} rows").into());
    }
    // The cursor is the newest edit time seen, and a sync re-reads from a
    // minute before it (Notion rounds edit times down to the minute). Right
    // after a bulk load that minute holds every page; in a table edited
    // over time it holds the last few edits. Get there: one edit two
    // minutes later, synced, then the measured change two minutes after.
    let later = || {
        emulator
            .control()
            .advance(std::time::Duration::from_secs(120))
    };
    later();
    emulator.update_page(&pages[1], json!({"port": {"number": 2}}));
    sync(rt, &bound, &MirrorOptions::sync())?;
    later();

    emulator.control().clear_log();
    emulator.update_page(&pages[size / 2], json!({"port": {"number": 1}}));
    let applied = sync(rt, &bound, &MirrorOptions::sync())?;
    let remote = emulator.control().requests();
    if applied != 1 {
        return Err(format!("expected 1 row pulled, got {applied}").into());
    }

    let registry = bound.replica.registry(REGISTRY)?;
    let record = registry
        .list(&Default::default())
        .into_iter()
        .nth(size / 3)
        .ok_or("no record to change")?;
    registry.put(Some(&record.id), [("port", Value::from(2))])?;
    emulator.control().clear_log();
    let applied = sync(rt, &bound, &MirrorOptions::sync())?;
    let local = emulator.control().requests();
    if applied != 1 {
        return Err(format!("expected 1 row pushed, got {applied}").into());
    }
    Ok(vec![
        count_figure(size, "1 row changed in Notion", &remote),
        count_figure(size, "1 record changed in the registry", &local),
    ])
}

fn count_figure(size: usize, case: &str, log: &[LoggedRequest]) -> Figure {
    let kinds: Vec<String> = log
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    Figure::absolute(
        BENCH_CALLS,
        format!("{case}, {size} rows"),
        Unit::Requests,
        log.len() as f64,
        1,
        "a small constant, whatever the table's size",
    )
    .with_extra(json!({ "requests": kinds }))
}
