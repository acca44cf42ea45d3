//! `chittysync adapter add|ls|show|rm|sync|push|pull`, `push`, `pull`, and
//! `sync BINDING`: registries mirrored to external tables.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chittysync::{
    Action, Adapter, AdapterBinding, ChangeTracking, ConflictPolicy, Direction, MirrorError,
    MirrorOptions, MirrorProgress, MirrorReport, PendingRow, PendingState, Replica, Side, Stage,
    Value,
};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::Globals;
use crate::output::{self, StdoutError, outln};

/// The subcommands of `chittysync adapter`.
#[derive(Subcommand)]
pub(crate) enum AdapterCmd {
    /// Bind a registry to an external table (checks the connection, creates
    /// the table with --create, installs change tracking).
    Add(Box<AddArgs>),
    /// List bindings.
    Ls,
    /// Show one binding: registry, table, mapping, key, bound rows.
    Show {
        /// The binding's name.
        name: String,
    },
    /// Remove a binding, its merge bases and its key file (records stay).
    Rm {
        /// The binding's name.
        name: String,
    },
    /// Push and pull a binding at once: both sides converge (--dry-run shows the plan only).
    Sync(RunArgs),
    /// Send the registry's changes to the table (same as `chittysync push`).
    Push(RunArgs),
    /// Bring the table's changes into the registry (same as `chittysync pull`).
    Pull(RunArgs),
    /// Have `chittysync serve` run a binding on a schedule (`5m`, `1h`, …)
    /// or stop it (`off`).
    Schedule {
        /// The binding's name.
        name: String,
        /// How often (30s, 5m, 1h, …), or `off`.
        every: String,
    },
    /// Show a binding's last runs (by hand, on its schedule or through the API).
    Runs {
        /// The binding's name.
        name: String,
        /// How many runs, newest first.
        #[arg(long, default_value_t = 20)]
        last: u32,
    },
}

/// Arguments of `chittysync adapter add`.
#[derive(Args)]
pub(crate) struct AddArgs {
    /// The binding's name (letters, digits, '-', '_').
    name: String,
    /// The registry to bind (name or id).
    #[arg(long)]
    registry: String,
    /// The adapter kind: postgres, notion or sheets.
    #[arg(long, default_value = "postgres")]
    kind: String,
    /// What the binding points at: for Postgres a table (`table` or
    /// `schema.table`); for Notion the database id; for Sheets the
    /// spreadsheet id (from its URL).
    #[arg(long, alias = "table")]
    target: String,
    /// Connection URL without a password, e.g. postgres://sync@db.internal:5432/app.
    #[arg(long)]
    url: Option<String>,
    /// Environment variable holding the password (with --url) or the whole
    /// connection string (without --url); for Notion, the integration
    /// token. Its value is never stored.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// An adapter setting (repeatable). Notion: base_url, data_source (id or
    /// name, when the database has several), requests_per_second (default
    /// 2.8), retry_base_ms, max_retries, timeout_ms. Sheets: base_url,
    /// drive_base_url, reads_per_minute and writes_per_minute (default 60),
    /// retry_base_ms, max_retries, timeout_ms.
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Sheets: the service account's key file (JSON, mode 0600). Its path is
    /// stored, never its content.
    #[arg(long, value_name = "PATH")]
    key_file: Option<std::path::PathBuf>,
    /// Sheets: the sheet (tab) to mirror (default: the first).
    #[arg(long, value_name = "TITLE")]
    sheet: Option<String>,
    /// The remote column holding record ids (Notion: a rich-text property;
    /// Sheets: the hidden column, headed `_id` unless this says otherwise).
    #[arg(long, default_value = "id")]
    id_column: String,
    /// Map a registry field to a differently named column (repeatable).
    #[arg(long = "map", value_name = "FIELD=COLUMN")]
    mapping: Vec<String>,
    /// Match existing records to existing rows by this field on the first sync.
    #[arg(long)]
    key_field: Option<String>,
    /// push, pull or both.
    #[arg(long, default_value = "both")]
    direction: Direction,
    /// Conflict policy for this binding (default: the registry's).
    #[arg(long)]
    policy: Option<ConflictPolicy>,
    /// Create the table from the registry's schema if it does not exist.
    #[arg(long)]
    create: bool,
    /// A run may delete at most this many rows without --allow-deletes …
    #[arg(long, default_value_t = 10)]
    max_deletes: u64,
    /// … or this percentage of the bound rows, whichever is more.
    #[arg(long, default_value_t = 10.0)]
    max_delete_percent: f64,
    /// statement_timeout for the adapter's statements, in milliseconds.
    #[arg(long)]
    statement_timeout_ms: Option<u64>,
    /// Have `chittysync serve` run the binding this often (30s, 5m, 1h, …).
    #[arg(long, value_parser = parse_interval)]
    every: Option<Duration>,
}

/// Options of `push`, `pull` and `adapter sync|push|pull` (and, built by
/// [`super::sync`], of `sync BINDING`).
#[derive(Args)]
pub(crate) struct RunArgs {
    /// The binding's name.
    pub(crate) binding: String,
    /// Show the plan; write nothing to either side.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Allow a run that deletes more rows than the binding's limit.
    #[arg(long)]
    pub(crate) allow_deletes: bool,
    /// Ignore the change cursor and compare the whole table.
    #[arg(long)]
    pub(crate) full: bool,
    /// Settle open manual conflicts by taking this side's value (local or remote).
    #[arg(long, value_name = "SIDE")]
    pub(crate) take: Option<Side>,
    /// Rows per write batch (default: the adapter's own, e.g. 500 for
    /// Postgres, every row in one request for Sheets).
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Keep running, once per --interval, until interrupted.
    #[arg(long)]
    pub(crate) watch: bool,
    /// Time between runs with --watch: 30s, 5m, 500ms or plain seconds.
    #[arg(long, default_value = "30s", value_parser = parse_interval)]
    pub(crate) interval: Duration,
    /// With --watch: stop after this many runs.
    #[arg(long, requires = "watch")]
    pub(crate) runs: Option<u64>,
}

/// Parses `--interval`: 30s, 5m, 500ms, 1h or plain seconds.
pub(crate) fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("'{s}' is not an interval; use 30s, 5m, 2h, 90d, 500ms or a number of seconds");
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
        "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err("the interval must be more than zero".into());
    }
    Ok(d)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `chittysync adapter …`.
pub(crate) fn run(globals: &Globals, cmd: AdapterCmd) -> Result<()> {
    let replica = &globals.open()?;
    let as_json = globals.json;
    match cmd {
        AdapterCmd::Add(args) => add(replica, *args, as_json),
        AdapterCmd::Sync(args) => mirror_with(replica, Direction::Both, args, as_json),
        AdapterCmd::Push(args) => mirror_with(replica, Direction::Push, args, as_json),
        AdapterCmd::Pull(args) => mirror_with(replica, Direction::Pull, args, as_json),
        AdapterCmd::Ls => list(replica, as_json),
        AdapterCmd::Show { name } => show(replica, &name, as_json),
        AdapterCmd::Schedule { name, every } => {
            let every = match every.as_str() {
                "off" | "never" | "none" => None,
                text => Some(parse_interval(text).map_err(|e| anyhow!("{e}, or off"))?),
            };
            let b = replica.set_binding_schedule(&name, every)?;
            if as_json {
                output::json(&json!({ "binding": b.name, "every_secs": b.every_secs }))?;
            } else if let Some(secs) = b.every_secs {
                outln!(
                    "'{}' runs every {} while `chittysync serve` runs",
                    b.name,
                    humanize(Duration::from_secs(secs))
                )?;
            } else {
                outln!("'{}' runs only when asked", b.name)?;
            }
            Ok(())
        }
        AdapterCmd::Runs { name, last } => runs(replica, &name, last, as_json),
        AdapterCmd::Rm { name } => {
            let b = replica.remove_binding(&name)?;
            if as_json {
                output::json(&json!({ "removed": b.name }))?;
            } else {
                outln!(
                    "removed binding '{}'; its key stays a member of '{}' until an admin removes it",
                    b.name,
                    b.registry
                )?;
            }
            Ok(())
        }
    }
}

/// Lists a binding's last runs.
fn runs(replica: &Replica, name: &str, last: u32, as_json: bool) -> Result<()> {
    if replica.binding(name)?.is_none() {
        bail!("no binding named '{name}'; `chittysync adapter ls` lists them");
    }
    let runs = replica.mirror_runs(name, last)?;
    if as_json {
        output::json(&json!(
            runs.iter()
                .map(chittysync::MirrorRun::to_json)
                .collect::<Vec<_>>()
        ))?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                super::audit::time_text(r.started_at),
                r.outcome.name().to_owned(),
                humanize(r.duration),
                r.applied.to_string(),
                r.failed.to_string(),
                r.invalid.to_string(),
                r.conflicts.to_string(),
                output::clip(r.error.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    output::table(
        &[
            "started",
            "outcome",
            "took",
            "applied",
            "failed",
            "invalid",
            "conflicts",
            "error",
        ],
        &rows,
    )?;
    Ok(())
}

/// Lists bindings.
fn list(replica: &Replica, as_json: bool) -> Result<()> {
    let bindings = replica.bindings()?;
    if as_json {
        let list: Vec<serde_json::Value> = bindings.iter().map(binding_json).collect();
        output::json(&json!(list))?;
    } else if bindings.is_empty() {
        outln!("no bindings; `chittysync adapter add` makes one")?;
    } else {
        let rows: Vec<Vec<String>> = bindings
            .iter()
            .map(|b| {
                vec![
                    b.name.clone(),
                    b.registry.clone(),
                    b.kind.clone(),
                    b.target.clone(),
                    b.direction.name().to_owned(),
                ]
            })
            .collect();
        output::table(&["name", "registry", "kind", "target", "direction"], &rows)?;
    }
    Ok(())
}

/// Shows one binding: registry, table, mapping, key, bound rows.
fn show(replica: &Replica, name: &str, as_json: bool) -> Result<()> {
    let b = replica
        .binding(name)?
        .ok_or_else(|| anyhow!("no binding named '{name}'; `chittysync adapter ls` lists them"))?;
    let key = replica.binding_identity(name)?.public_key();
    let bound = replica.bound_rows(name)?;
    let pending = replica.pending_rows(name)?;
    if as_json {
        let mut j = binding_json(&b);
        j["key"] = json!(key.to_string());
        j["key_file"] = json!(replica.binding_key_path(name));
        j["bound_rows"] = json!(bound);
        j["pending_rows"] = pending.iter().map(pending_json).collect();
        output::json(&j)?;
    } else {
        let mut rows = vec![
            vec!["name".into(), b.name.clone()],
            vec!["registry".into(), b.registry.clone()],
            vec!["kind".into(), b.kind.clone()],
            vec!["target".into(), b.target.clone()],
            vec!["id column".into(), b.id_column.clone()],
            vec!["direction".into(), b.direction.name().into()],
            vec![
                "key field".into(),
                b.key_field.clone().unwrap_or_else(|| "(ids)".into()),
            ],
            vec![
                "policy".into(),
                b.conflict_policy
                    .map_or("(the registry's)".into(), |p| p.name().into()),
            ],
            vec![
                "delete limit".into(),
                format!("{} rows or {} %", b.max_deletes, b.max_delete_percent),
            ],
            vec!["key".into(), key.to_string()],
            vec!["bound rows".into(), bound.to_string()],
            vec![
                "schedule".into(),
                b.every_secs.map_or("(only when asked)".into(), |s| {
                    format!("every {}", humanize(Duration::from_secs(s)))
                }),
            ],
        ];
        for (k, v) in &b.settings {
            rows.push(vec![format!("setting {k}"), v.clone()]);
        }
        if let Some(var) = &b.secret_env {
            rows.push(vec!["secret".into(), format!("from ${var} (not stored)")]);
        }
        for (f, c) in &b.mapping {
            rows.push(vec![format!("map {f}"), c.clone()]);
        }
        rows.push(vec!["pending rows".into(), pending.len().to_string()]);
        output::table(&["", ""], &rows)?;
        print_pending(&pending)?;
    }
    Ok(())
}

fn pending_json(p: &PendingRow) -> serde_json::Value {
    json!({
        "remote_id": p.remote_id, "record": p.record, "state": p.state.name(),
        "reason": p.reason, "retryable": p.retryable, "since": p.since,
    })
}

/// Rows not yet applied, at most 20 listed: every run retries them.
pub(crate) fn print_pending(pending: &[PendingRow]) -> Result<(), StdoutError> {
    if pending.is_empty() {
        return Ok(());
    }
    outln!("\npending rows (retried by every run until applied):")?;
    let rows: Vec<Vec<String>> = pending
        .iter()
        .take(20)
        .map(|p| {
            vec![
                p.remote_id.clone(),
                p.record.clone().unwrap_or_default(),
                match p.state {
                    PendingState::Invalid => "invalid remote row".to_owned(),
                    PendingState::Failed(side) => format!("{} write failed", side.name()),
                    _ => p.state.name().to_owned(),
                },
                output::clip(&p.reason, 100),
            ]
        })
        .collect();
    output::table(&["row", "record", "state", "reason"], &rows)?;
    if pending.len() > 20 {
        outln!("… and {} more", pending.len() - 20)?;
    }
    Ok(())
}

fn binding_json(b: &AdapterBinding) -> serde_json::Value {
    json!({
        "name": b.name,
        "registry": b.registry,
        "kind": b.kind,
        "target": b.target,
        "id_column": b.id_column,
        "settings": b.settings,
        "secret_env": b.secret_env,
        "mapping": b.mapping,
        "key_field": b.key_field,
        "direction": b.direction.name(),
        "conflict_policy": b.conflict_policy.map(|p| p.name()),
        "max_deletes": b.max_deletes,
        "max_delete_percent": b.max_delete_percent,
        "every_secs": b.every_secs,
    })
}

fn add(replica: &Replica, args: AddArgs, as_json: bool) -> Result<()> {
    let registry = replica.registry(&args.registry)?;
    let mut binding = AdapterBinding::new(&args.name, &registry.name(), &args.kind, &args.target)
        .direction(args.direction);
    binding.id_column = args.id_column;
    binding.key_field = args.key_field;
    binding.conflict_policy = args.policy;
    binding.max_deletes = args.max_deletes;
    binding.max_delete_percent = args.max_delete_percent;
    binding.secret_env = args.secret_env;
    if let Some(every) = args.every {
        binding = binding.every(every);
    }
    if let Some(url) = &args.url {
        binding.settings.insert("url".into(), url.clone());
    }
    if let Some(ms) = args.statement_timeout_ms {
        binding
            .settings
            .insert("statement_timeout_ms".into(), ms.to_string());
    }
    for pair in &args.settings {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--setting '{pair}' is not KEY=VALUE"))?;
        binding.settings.insert(k.to_owned(), v.to_owned());
    }
    if let Some(path) = &args.key_file {
        // Stored absolute, so later runs from elsewhere find it.
        let path = std::path::absolute(path)
            .with_context(|| format!("resolving the key file path {}", path.display()))?;
        binding
            .settings
            .insert("key_file".into(), path.display().to_string());
    }
    if let Some(sheet) = &args.sheet {
        binding.settings.insert("sheet".into(), sheet.clone());
    }
    for pair in &args.mapping {
        let (f, c) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--map '{pair}' is not FIELD=COLUMN"))?;
        binding.mapping.insert(f.to_owned(), c.to_owned());
    }
    // Check the target (and make it ready) before storing anything.
    let kinds = chittysync_adapters::kinds();
    let schema = registry.schema();
    let table = runtime()?.block_on(kinds.setup(&mut binding, &schema, args.create))?;
    let kind = kinds.of(&binding)?;
    let added = replica.add_binding(&binding)?;
    // The library says an admin must make the key a writer; the CLI names
    // the command that does it.
    let admin_must_run = added.admin_must_run.as_ref().map(|_| {
        format!(
            "chittysync members add {} {} --role writer",
            binding.registry, added.key
        )
    });
    if as_json {
        output::json(&json!({
            "binding": binding.name,
            "table": table.name,
            "columns": table.columns.iter().map(|c| json!({"name": c.name, "type": c.type_name})).collect::<Vec<_>>(),
            "change_tracking": serde_json::to_value(&table.change_tracking)?,
            "key": added.key.to_string(),
            "key_file": added.key_file,
            "made_writer": added.made_writer,
            "admin_must_run": admin_must_run,
        }))?;
        return Ok(());
    }
    outln!(
        "bound registry '{}' to {} table {}",
        binding.registry,
        binding.kind,
        table.name
    )?;
    outln!(
        "binding key {} (key file {}, mode 0600)",
        added.key,
        added.key_file.display()
    )?;
    match &table.change_tracking {
        ChangeTracking::Incremental => outln!("change tracking: {}", kind.tracking(&table))?,
        ChangeTracking::FullCompare { reason } => {
            outln!("change tracking: none — every sync compares the whole table ({reason})")?
        }
    }
    if added.made_writer {
        outln!("made the binding's key a writer of '{}'", binding.registry)?;
    }
    if let Some(cmd) = &admin_must_run {
        outln!(
            "the binding's key is not a writer yet and this replica is not an admin; an admin must run:\n  {cmd}"
        )?;
    }
    Ok(())
}

/// Progress bars on stderr (hidden when stderr is not a terminal).
struct Bars {
    bar: std::sync::Mutex<Option<ProgressBar>>,
    hidden: bool,
}

impl Bars {
    fn new(hidden: bool) -> Self {
        Bars {
            bar: std::sync::Mutex::new(None),
            hidden,
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

impl MirrorProgress for Bars {
    fn stage(&self, stage: Stage, total: u64) {
        let mut slot = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            old.finish_and_clear();
        }
        if self.hidden {
            return;
        }
        let bar = if total == 0 {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::new(total)
        };
        let style = if total == 0 {
            ProgressStyle::with_template("{spinner} {msg} {pos} rows")
        } else {
            ProgressStyle::with_template("{msg:>8} [{bar:30}] {pos}/{len} rows")
        };
        if let Ok(style) = style {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(stage.label());
        *slot = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            bar.inc(n);
        }
    }
}

/// Runs `push` or `pull`.
pub(crate) fn mirror(globals: &Globals, direction: Direction, args: RunArgs) -> Result<()> {
    mirror_with(&globals.open()?, direction, args, globals.json)
}

/// Runs a binding once, or with `--watch` until interrupted.
pub(crate) fn mirror_with(
    replica: &Replica,
    direction: Direction,
    args: RunArgs,
    as_json: bool,
) -> Result<()> {
    let binding = replica.binding(&args.binding)?.ok_or_else(|| {
        anyhow!(
            "no binding named '{}'; `chittysync adapter ls` lists them",
            args.binding
        )
    })?;
    let mut options = MirrorOptions::sync();
    options.batch_size = args.batch_size;
    options.direction = direction;
    options.dry_run = args.dry_run;
    options.allow_deletes = args.allow_deletes;
    options.full = args.full;
    options.take = args.take;
    let rt = runtime()?;
    rt.block_on(async {
        let mut connected: Option<Box<dyn Adapter>> = None;
        let mut done = 0u64;
        loop {
            let result = match &connected {
                Some(adapter) => {
                    let bars = Bars::new(as_json);
                    let result = replica
                        .run_mirror(&binding.name, adapter.as_ref(), &options, &bars)
                        .await;
                    bars.finish();
                    result
                }
                None => match replica
                    .connect_binding(&binding.name, &chittysync_adapters::kinds())
                    .await
                {
                    Ok(adapter) => {
                        connected = Some(adapter);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            done += 1;
            let report = match result {
                Ok(report) => report,
                // A watcher outlives a failed run (a dropped connection, a
                // delete the guard stopped): say so and try again later,
                // reconnecting if the remote system failed.
                Err(e) if args.watch && args.runs.is_none_or(|n| done < n) => {
                    if matches!(e, MirrorError::Adapter { .. } | MirrorError::Stopped { .. }) {
                        connected = None;
                    }
                    eprintln!("error: {e}; trying again in {}", humanize(args.interval));
                    if let Some(hint) = crate::hint::of(&e) {
                        eprintln!("hint: {hint}");
                    }
                    tokio::time::sleep(args.interval).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let adapter = connected
                .as_ref()
                .expect("a run that succeeded had an adapter");
            let printed = if as_json {
                output::json(&report.to_json())
            } else {
                print_report(&report, adapter.as_ref())
            };
            let last = !args.watch || args.runs.is_some_and(|n| done >= n);
            if last && !report.failed.is_empty() {
                // Failed rows decide the exit status even when nobody read
                // the report (`chittysync sync NAME | head`).
                if let Err(e) = printed
                    && !e.is_closed()
                {
                    return Err(e.into());
                }
                bail!(
                    "{} rows failed (listed in the report); the next run retries them",
                    report.failed.len()
                );
            }
            printed?;
            if last {
                return Ok(());
            }
            tokio::time::sleep(args.interval).await;
        }
    })
}

fn humanize(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

fn shown(v: &Option<Value>) -> String {
    v.as_ref()
        .map_or("∅".into(), |v| output::clip(&v.to_string(), 30))
}

/// Prints a run's plan (and what was applied) as tables and a summary.
fn print_report(report: &MirrorReport, adapter: &dyn Adapter) -> Result<(), StdoutError> {
    let plan = &report.plan;
    let tracking = match &plan.change_tracking {
        ChangeTracking::Incremental if adapter.system() == "notion" => "edited pages".to_owned(),
        ChangeTracking::Incremental if adapter.system() == "sheets" => "Drive version".to_owned(),
        ChangeTracking::Incremental => "change log".to_owned(),
        ChangeTracking::FullCompare { reason } => format!("full compare ({reason})"),
    };
    outln!(
        "binding {} ↔ {} table {} ({}), {}",
        plan.binding,
        adapter.system(),
        adapter.table(),
        plan.direction.name(),
        tracking
    )?;
    print_tables(report)?;
    print_summary(report)
}

/// The plan's changes, conflicts, invalid rows and failed rows, each table
/// only when it has rows.
fn print_tables(report: &MirrorReport) -> Result<(), StdoutError> {
    let plan = &report.plan;
    let mut rows = Vec::new();
    for row in &plan.rows {
        for (side, act) in [(Side::Local, &row.local), (Side::Remote, &row.remote)] {
            if let Some((action, fields)) = act {
                let changes: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{} {} → {}", f.field, shown(&f.old), shown(&f.new)))
                    .collect();
                rows.push(vec![
                    if side == Side::Local {
                        "registry"
                    } else {
                        "remote"
                    }
                    .to_owned(),
                    action.name().to_owned(),
                    row.record.clone(),
                    row.remote_id.clone(),
                    changes.join(", "),
                ]);
            }
        }
    }
    if !rows.is_empty() {
        output::table(
            &["side", "action", "record", "row", "fields (old → new)"],
            &rows,
        )?;
    }
    let conflicts: Vec<Vec<String>> = plan
        .rows
        .iter()
        .flat_map(|r| {
            r.conflicts.iter().map(move |c| {
                vec![
                    r.record.clone(),
                    c.field.clone(),
                    shown(&c.local),
                    shown(&c.remote),
                    c.policy.name().to_owned(),
                    c.winner
                        .map_or("open (use --take local|remote)".into(), |w| {
                            w.name().to_owned()
                        }),
                ]
            })
        })
        .collect();
    if !conflicts.is_empty() {
        outln!("\nconflicts:")?;
        output::table(
            &["record", "field", "registry", "remote", "policy", "winner"],
            &conflicts,
        )?;
    }
    if !plan.invalid.is_empty() {
        outln!("\ninvalid remote rows (skipped):")?;
        let rows: Vec<Vec<String>> = plan
            .invalid
            .iter()
            .map(|i| {
                vec![
                    i.remote_id.clone(),
                    i.field.clone(),
                    output::clip(&i.value, 30),
                    i.reason.clone(),
                ]
            })
            .collect();
        output::table(&["row", "field", "value", "reason"], &rows)?;
    }
    if !report.failed.is_empty() {
        outln!("\nfailed rows (retried next run):")?;
        let rows: Vec<Vec<String>> = report
            .failed
            .iter()
            .map(|f| {
                vec![
                    f.record.clone(),
                    f.remote_id.clone(),
                    f.side.name().to_owned(),
                    f.reason.clone(),
                ]
            })
            .collect();
        output::table(&["record", "row", "side", "reason"], &rows)?;
    }
    Ok(())
}

/// Counts per side and action, then what the run did (or would do).
fn print_summary(report: &MirrorReport) -> Result<(), StdoutError> {
    let plan = &report.plan;
    let count = |s, a| plan.count(s, a);
    outln!(
        "\nregistry: {} created, {} updated, {} deleted; remote: {} created, {} updated, {} deleted; {} conflicts ({} open), {} invalid",
        count(Side::Local, Action::Create),
        count(Side::Local, Action::Update),
        count(Side::Local, Action::Delete),
        count(Side::Remote, Action::Create),
        count(Side::Remote, Action::Update),
        count(Side::Remote, Action::Delete),
        plan.rows.iter().map(|r| r.conflicts.len()).sum::<usize>(),
        plan.open_conflicts(),
        plan.invalid.len()
    )?;
    if report.dry_run {
        if plan.exceeds_delete_limit() {
            outln!(
                "this plan deletes {} rows, more than the limit of {}: a real run needs --allow-deletes",
                plan.deletes,
                plan.delete_limit
            )?;
        }
        outln!("dry run: nothing was written")?;
    } else {
        outln!(
            "{} rows applied, {} failed",
            report.applied,
            report.failed.len()
        )?;
    }
    if !report.pending.is_empty() {
        outln!(
            "{} rows pending (failed or invalid; every run retries them until they are applied)",
            report.pending.len()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_with_units() {
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("7"), Ok(Duration::from_secs(7)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
