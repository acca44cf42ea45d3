//! Benchmark 7: the Postgres adapter. An initial `push` of N records against
//! a raw binary COPY and a raw `unnest … ON CONFLICT` upsert of the same
//! rows into the same table layout, in 10k-row transactions, interleaved in
//! one run; then the time of a `sync` that finds one row changed in a table
//! of 10k and 100k rows, and of N rows with `--records N` above 100k
//! (absolute, to show how it grows with table size).
//!
//! Needs a PostgreSQL server: `CHITTYSYNC_BENCH_PG_URL`, else
//! `CHITTYSYNC_TEST_PG_URL` (`scripts/pg-up` prints one). Without one the
//! figures are reported as not measured, with the reason.

use std::pin::pin;
use std::time::{Duration, Instant};

use chittysync::{Adapter, AdapterBinding, MirrorOptions, Replica};
use chittysync_adapters::postgres::{PostgresAdapter, PostgresOptions};
use tokio::runtime::Runtime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

use crate::data::{self, Payload, REGISTRY};
use crate::measure::{interleave, median};
use crate::report::{Figure, Goal, Unit};
use crate::{Options, Result};

const BENCH_PUSH: &str = "postgres initial push";
const BENCH_INCR: &str = "postgres incremental sync";
/// Rows per transaction for the baselines (and our push batches).
const CHUNK: usize = 10_000;
const COLUMNS: &str = "id, name, host, port, tier, active";

fn url() -> Option<String> {
    std::env::var("CHITTYSYNC_BENCH_PG_URL")
        .or_else(|_| std::env::var("CHITTYSYNC_TEST_PG_URL"))
        .ok()
}

pub(crate) fn run(options: &Options) -> Result<Vec<Figure>> {
    let Some(url) = url() else {
        let why = "no PostgreSQL server: set CHITTYSYNC_TEST_PG_URL (scripts/pg-up prints one)";
        return Ok(vec![
            Figure::missing(BENCH_PUSH, "vs raw binary COPY", why),
            Figure::missing(BENCH_PUSH, "vs raw unnest upsert", why),
            Figure::missing(BENCH_INCR, "1 changed row", why),
        ]);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bench = Pg::new(&rt, url)?;
    let result = bench.figures(options);
    // Whatever happened, leave no schema behind.
    let _ = rt.block_on(bench.sql.batch_execute(&bench.drop_all()));
    result
}

struct Pg<'r> {
    rt: &'r Runtime,
    url: String,
    sql: Client,
    prefix: String,
    schemas: std::cell::RefCell<Vec<String>>,
}

impl<'r> Pg<'r> {
    fn new(rt: &'r Runtime, url: String) -> Result<Self> {
        let (sql, conn) = rt.block_on(tokio_postgres::connect(&url, NoTls))?;
        rt.spawn(conn);
        Ok(Pg {
            rt,
            url,
            sql,
            prefix: format!("bench_{}", std::process::id()),
            schemas: std::cell::RefCell::new(Vec::new()),
        })
    }

    fn drop_all(&self) -> String {
        self.schemas
            .borrow()
            .iter()
            .map(|s| format!("DROP SCHEMA IF EXISTS {s} CASCADE;"))
            .collect()
    }

    /// A fresh schema with the workload's table, as a user would create it.
    fn fresh_table(&self, tag: &str) -> Result<String> {
        let n = self.schemas.borrow().len();
        let schema = format!("{}_{tag}_{n}", self.prefix);
        self.schemas.borrow_mut().push(schema.clone());
        self.rt.block_on(self.sql.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             CREATE TABLE {schema}.services (id text PRIMARY KEY, name text, host text,
                port bigint, tier text, active boolean)"
        )))?;
        Ok(format!("{schema}.services"))
    }

    fn figures(&self, options: &Options) -> Result<Vec<Figure>> {
        let n = options.pick(CHUNK * 2, 1_000);
        let (warmup, iterations) = (options.pick(1, 0), options.pick(5, 1));
        let rows = Payload::batch(0, n);
        let mut figures = Vec::new();
        let note = "ours: plan + unnest upserts in 10k-row transactions + change-log trigger + snapshots; \
                    base: the same rows into the same table without trigger";
        let pairs = interleave(
            warmup,
            iterations,
            |_| self.push_ours(&rows),
            |_| self.copy(&rows),
        )?;
        // Where one push's time goes, by engine stage.
        let (_, stages) = self.push_ours_timed(&rows)?;
        let stages: serde_json::Map<String, serde_json::Value> = stages
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::json!(v)))
            .collect();
        figures.push(
            Figure::throughput(
                BENCH_PUSH,
                format!("{n} rows vs raw binary COPY"),
                n,
                &pairs,
                Some(Goal::AtLeast(0.5)),
                note,
            )
            .with_extra(serde_json::json!({ "ours_stages_s": stages })),
        );
        let pairs = interleave(
            warmup,
            iterations,
            |_| self.push_ours(&rows),
            |_| self.unnest(&rows),
        )?;
        figures.push(Figure::throughput(
            BENCH_PUSH,
            format!("{n} rows vs raw unnest upsert"),
            n,
            &pairs,
            Some(Goal::AtLeast(0.8)),
            note,
        ));
        // `--records N` above 100k adds a table of N rows (e.g. 1M).
        let mut sizes = if options.quick {
            vec![1_000]
        } else {
            vec![10_000, 100_000]
        };
        if !options.quick && options.records > 100_000 {
            sizes.push(options.records);
        }
        for size in sizes {
            figures.push(self.incremental(size, options.pick(7, 2))?);
        }
        Ok(figures)
    }

    /// A replica whose registry holds `rows`, bound to a fresh table.
    fn bound(&self, rows: &[Payload]) -> Result<(tempfile::TempDir, Replica, PostgresAdapter)> {
        let table = self.fresh_table("ours")?;
        let dir = tempfile::tempdir()?;
        let replica = Replica::open(dir.path().join("r.db"))?;
        let registry = replica.create_registry(REGISTRY, data::schema())?;
        for chunk in rows.chunks(data::BATCH) {
            data::write_batch(&registry, chunk)?;
        }
        let binding = AdapterBinding::new("pg", REGISTRY, "postgres", &table);
        replica.add_binding(&binding)?;
        let adapter = self.rt.block_on(PostgresAdapter::connect(
            &self.url,
            binding.table_spec(&data::schema()),
            PostgresOptions::new("bench"),
        ))?;
        self.rt.block_on(adapter.prepare(false))?;
        Ok((dir, replica, adapter))
    }

    fn push_ours(&self, rows: &[Payload]) -> Result<Duration> {
        self.push_ours_timed(rows).map(|(d, _)| d)
    }

    fn push_ours_timed(&self, rows: &[Payload]) -> Result<(Duration, Vec<(&'static str, f64)>)> {
        let (_dir, replica, adapter) = self.bound(rows)?;
        let options = MirrorOptions::push().batch_size(CHUNK);
        let start = Instant::now();
        let report = self
            .rt
            .block_on(replica.run_mirror("pg", &adapter, &options, &()))?;
        let elapsed = start.elapsed();
        if report.applied != rows.len() || !report.failed.is_empty() {
            return Err(format!(
                "push applied {} of {} rows ({} failed)",
                report.applied,
                rows.len(),
                report.failed.len()
            )
            .into());
        }
        Ok((elapsed, report.timings))
    }

    fn copy(&self, rows: &[Payload]) -> Result<Duration> {
        let table = self.fresh_table("copy")?;
        let types = [
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::BOOL,
        ];
        let (mut client, conn) = self
            .rt
            .block_on(tokio_postgres::connect(&self.url, NoTls))?;
        self.rt.spawn(conn);
        let start = Instant::now();
        self.rt.block_on(async {
            for chunk in rows.chunks(CHUNK) {
                let tx = client.transaction().await?;
                let sink = tx
                    .copy_in(&format!("COPY {table} ({COLUMNS}) FROM STDIN BINARY"))
                    .await?;
                let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
                for p in chunk {
                    writer
                        .as_mut()
                        .write(&[&p.id, &p.name, &p.host, &p.port, &p.tier, &p.active])
                        .await?;
                }
                writer.finish().await?;
                tx.commit().await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        })?;
        Ok(start.elapsed())
    }

    fn unnest(&self, rows: &[Payload]) -> Result<Duration> {
        let table = self.fresh_table("unnest")?;
        let (mut client, conn) = self
            .rt
            .block_on(tokio_postgres::connect(&self.url, NoTls))?;
        self.rt.spawn(conn);
        let sql = format!(
            "INSERT INTO {table} AS t ({COLUMNS})
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bool[])
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, host = excluded.host,
               port = excluded.port, tier = excluded.tier, active = excluded.active
             WHERE (t.name, t.host, t.port, t.tier, t.active)
               IS DISTINCT FROM (excluded.name, excluded.host, excluded.port, excluded.tier, excluded.active)"
        );
        let start = Instant::now();
        self.rt.block_on(async {
            for chunk in rows.chunks(CHUNK) {
                let ids: Vec<&str> = chunk.iter().map(|p| p.id.as_str()).collect();
                let names: Vec<&str> = chunk.iter().map(|p| p.name.as_str()).collect();
                let hosts: Vec<&str> = chunk.iter().map(|p| p.host.as_str()).collect();
                let ports: Vec<i64> = chunk.iter().map(|p| p.port).collect();
                let tiers: Vec<&str> = chunk.iter().map(|p| p.tier).collect();
                let active: Vec<bool> = chunk.iter().map(|p| p.active).collect();
                let tx = client.transaction().await?;
                tx.execute(&sql, &[&ids, &names, &hosts, &ports, &tiers, &active])
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        })?;
        Ok(start.elapsed())
    }

    /// A sync that finds one row changed by another client in a bound table
    /// of `size` rows.
    fn incremental(&self, size: usize, runs: usize) -> Result<Figure> {
        let rows = Payload::batch(0, size);
        let (_dir, replica, adapter) = self.bound(&rows)?;
        let options = MirrorOptions::sync().batch_size(CHUNK);
        self.rt
            .block_on(replica.run_mirror("pg", &adapter, &options, &()))?;
        let table = adapter.table().to_owned();
        let mut samples = Vec::new();
        for i in 0..runs {
            let id = &rows[(i * 7919) % size].id;
            self.rt.block_on(self.sql.execute(
                &format!("UPDATE {table} SET port = port + 1 WHERE id = $1"),
                &[id],
            ))?;
            let start = Instant::now();
            let report = self
                .rt
                .block_on(replica.run_mirror("pg", &adapter, &options, &()))?;
            samples.push(start.elapsed().as_secs_f64());
            if report.applied != 1 {
                return Err(format!("expected 1 row synced, got {}", report.applied).into());
            }
        }
        Ok(Figure::absolute(
            BENCH_INCR,
            format!("1 changed row in {size} rows"),
            Unit::Seconds,
            median(&samples),
            samples.len(),
            "goal ≤ 50 ms and flat in table size: the table side reads the change log, \
             the registry side the changes since the last run",
        ))
    }
}
