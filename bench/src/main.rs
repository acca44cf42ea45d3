//! ChittySync's benchmark battery.
//!
//! Runs our code and its baseline — plain Automerge, raw rusqlite — in the
//! same process, interleaved pair by pair, and prints for each benchmark the
//! **ratio** (median of per-pair ratios, ours / baseline) beside the absolute
//! medians, as a table and as JSON.
//!
//! ```text
//! cargo run -p chittysync-bench --release                 # table, then JSON
//! cargo run -p chittysync-bench --release -- --json       # JSON only
//! cargo run -p chittysync-bench --release -- --quick      # CI smoke run
//! cargo run -p chittysync-bench --release -- --records 1000000
//! cargo run -p chittysync-bench --release -- --only merge  # one benchmark
//! cargo run -p chittysync-bench --release -- --only verify --changes 20000
//! cargo run -p chittysync-bench --release -- --only postgres  # needs a server
//! ```
//!
//! Ratios are the figures to track: both sides of a pair run back to back on
//! the same machine, so drift in machine speed cancels out. Absolute figures
//! depend on the disk (every durable commit waits for `fsync`); each row
//! names the file system its store was on, and the merge benchmark repeats
//! on tmpfs (`/dev/shm`) when the machine has one, to show what `fsync` costs.

mod bindings;
mod data;
mod http;
mod measure;
mod merge;
mod notion;
mod open;
mod peer;
mod postgres;
mod report;
mod scale;
mod sheets;
mod verify;
mod writes;

use std::process::ExitCode;

use report::Figure;

/// Errors from any benchmark: the binary reports them and exits non-zero.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What to run, from the command line.
#[derive(Clone, Debug)]
struct Options {
    /// Few iterations and small sizes: proves every benchmark still runs.
    quick: bool,
    /// Print only JSON.
    json: bool,
    /// Records for the large-scale figures.
    records: usize,
    /// Record writes (signed changes) in the verified registry (`None`: the
    /// default size).
    changes: Option<usize>,
    /// Run only the benchmark with this key.
    only: Option<String>,
}

const USAGE: &str = "\
usage: chittysync-bench [--quick] [--json] [--records N] [--changes N] [--only NAME]

  --quick      few iterations and small sizes (CI smoke run; N defaults to 5000)
  --json       print only the JSON report (default: table, then JSON)
  --records N  records for the large-scale figures (default 100000)
  --changes N  record writes, one signed change each, in the verified registry
               (default 100000; quick 2000)
  --only NAME  run only merge, open, batched, single, scale, verify, sync,
               postgres, bindings, notion, sheets or http

The postgres benchmark needs CHITTYSYNC_BENCH_PG_URL or CHITTYSYNC_TEST_PG_URL
(scripts/pg-up prints one); without a server its figures read \"not measured\".
The bindings benchmark needs the Python and Node packages built
(scripts/test-bindings); without them its figures read \"not measured\".";

impl Options {
    fn parse(args: impl IntoIterator<Item = String>) -> std::result::Result<Options, String> {
        let mut quick = false;
        let mut json = false;
        let mut records = None;
        let mut changes = None;
        let mut only = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--json" => json = true,
                "--records" => {
                    let n = args.next().ok_or("--records needs a number")?;
                    let n: usize = n
                        .parse()
                        .map_err(|_| format!("--records: '{n}' is not a number"))?;
                    if n < data::BATCH {
                        return Err(format!("--records must be at least {}", data::BATCH));
                    }
                    records = Some(n);
                }
                "--changes" => {
                    let n = args.next().ok_or("--changes needs a number")?;
                    let n: usize = n
                        .parse()
                        .map_err(|_| format!("--changes: '{n}' is not a number"))?;
                    if n < 2 {
                        return Err("--changes must be at least 2".into());
                    }
                    changes = Some(n);
                }
                "--only" => {
                    let name = args.next().ok_or("--only needs a benchmark name")?;
                    if !BENCHES.iter().any(|(key, _, _)| *key == name) {
                        return Err(format!("--only: no benchmark '{name}'"));
                    }
                    only = Some(name);
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument '{other}'")),
            }
        }
        Ok(Options {
            quick,
            json,
            records: records.unwrap_or(if quick { 5_000 } else { 100_000 }),
            changes,
            only,
        })
    }

    /// `full` iterations normally, `quick` ones with `--quick`.
    fn pick(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// A benchmark: its key for `--only`, its title, and how to run it.
type Bench = (
    &'static str,
    &'static str,
    fn(&Options) -> Result<Vec<Figure>>,
);

/// Every benchmark, in the order they run.
const BENCHES: &[Bench] = &[
    ("merge", "signed merge vs unsigned apply", merge::run),
    ("open", "open vs Automerge::load", open::run),
    ("batched", "batched writes vs raw rusqlite", writes::batched),
    (
        "single",
        "single durable put vs raw rusqlite",
        writes::single,
    ),
    ("scale", "absolute figures at N records", scale::run),
    ("verify", "verify vs raw ed25519 verify_batch", verify::run),
    ("sync", "peer sync vs plain Automerge sync", peer::run),
    (
        "postgres",
        "Postgres push vs raw COPY and unnest; incremental sync",
        postgres::run,
    ),
    (
        "bindings",
        "Python and Node packages vs Rust",
        bindings::run,
    ),
    (
        "notion",
        "Notion adapter: request budget, calls per change",
        notion::run,
    ),
    (
        "sheets",
        "Sheets adapter: write batching, request budget, calls per change",
        sheets::run,
    ),
    ("http", "HTTP API vs bare axum and the library", http::run),
];

fn run(options: &Options) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for (key, title, bench) in BENCHES {
        if options.only.as_ref().is_some_and(|only| only != key) {
            continue;
        }
        if !options.json {
            eprintln!("running: {title}");
        }
        figures.extend(bench(options)?);
    }
    Ok(figures)
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let figures = match run(&options) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: benchmark failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let elapsed = started.elapsed();
    if !options.json {
        println!("{}", report::table(&figures));
    }
    let json = report::json(&figures, &options, elapsed);
    println!(
        "{}",
        serde_json::to_string_pretty(&json).expect("a JSON value always serializes")
    );
    ExitCode::SUCCESS
}
