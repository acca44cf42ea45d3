//! The Google Sheets adapter against the Sheets emulator: the adapter
//! conformance suite, plus what only a spreadsheet shows (people reordering
//! and editing rows, rows typed in without an id, serial dates, token
//! expiry, quota storms, request counts on a large sheet).
//!
//! "Another application" is a person editing the grid through the
//! emulator's own API (`set_values`), never through the adapter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chittysync::conformance::{self, Remote, RemoteFactory, Row};
use chittysync::{
    Action, Adapter, AdapterBinding, AdapterError, BoxFuture, Fetched, FieldDef, FieldKind,
    MirrorOptions, MirrorReport, Query, RemoteTable, Replica, RowOp, RowResult, Schema, Side,
    TableSpec, Value,
};
use chittysync_adapters::sheets::{SheetsAdapter, SheetsOptions};
use chittysync_emulators::{Fault, LoggedRequest, Running, Sheets};
use serde_json::{Value as Json, json};

const EMAIL: &str = "sync@chittysync-tests.iam.gserviceaccount.com";
const SHEET: &str = "services";
/// Retries the test adapters make (the fault helpers outlast them).
const RETRIES: u32 = 3;

/// One emulator with a spreadsheet shared with the test account, and that
/// account's key file.
struct Emu {
    sheets: Sheets,
    running: Running,
    _dir: tempfile::TempDir,
    key_file: PathBuf,
    id: String,
}

impl Emu {
    /// A fresh emulator whose quotas never get in the way (tests about
    /// quotas set their own).
    fn start() -> Emu {
        let sheets = Sheets::new();
        let running = sheets.start_thread().expect("start the emulator");
        for limit in [
            "read_per_minute_per_user",
            "write_per_minute_per_user",
            "read_per_minute",
            "write_per_minute",
        ] {
            sheets.control().set_limit(limit, 1e9);
        }
        let key = sheets.service_account_key(&running.base_url(), EMAIL);
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("service-account.json");
        std::fs::write(&key_file, key.to_string()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let id = sheets.create_spreadsheet(&[SHEET], &[EMAIL]);
        Emu {
            sheets,
            running,
            _dir: dir,
            key_file,
            id,
        }
    }

    fn options(&self) -> SheetsOptions {
        let mut o = SheetsOptions::new(self.id.clone(), self.key_file.clone());
        o.sheet = Some(SHEET.into());
        o.base_url = self.running.base_url();
        o.drive_base_url = self.running.base_url();
        o.reads_per_minute = 1_000_000;
        o.writes_per_minute = 1_000_000;
        o.retry_base = Duration::from_millis(10);
        o.max_retries = RETRIES;
        o
    }

    fn adapter(&self, spec: &TableSpec) -> SheetsAdapter {
        let mut spec = spec.clone();
        spec.table = self.id.clone();
        SheetsAdapter::new(spec, self.options()).expect("adapter")
    }

    fn grid(&self) -> Vec<Vec<Json>> {
        self.sheets.values(&self.id, SHEET)
    }

    fn set_grid(&self, rows: Vec<Vec<Json>>) {
        self.sheets.set_values(&self.id, SHEET, rows);
    }

    fn log(&self) -> Vec<LoggedRequest> {
        self.sheets.control().requests()
    }

    /// Requests that could change the spreadsheet (not token requests).
    fn mutating(&self) -> Vec<LoggedRequest> {
        self.log()
            .into_iter()
            .filter(|r| r.is_mutating(&["/token"]))
            .collect()
    }
}

/// The column of `header` in row 1.
fn col(grid: &[Vec<Json>], header: &str) -> usize {
    grid[0]
        .iter()
        .position(|h| h == header)
        .unwrap_or_else(|| panic!("no header {header} in {:?}", grid[0]))
}

fn cell(row: &[Json], i: usize) -> Json {
    row.get(i).cloned().unwrap_or(Json::String(String::new()))
}

fn set_cell(row: &mut Vec<Json>, i: usize, value: Json) {
    if row.len() <= i {
        row.resize(i + 1, Json::String(String::new()));
    }
    row[i] = value;
}

/// How a person (or another program) would type a value into a cell.
fn typed(value: &Value) -> Json {
    match value {
        Value::Set(items) => Json::String(serde_json::to_string(items).unwrap()),
        Value::Decimal(d) => d
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Json::String(d.clone()), Json::Number),
        other => other.to_json(),
    }
}

/// A cell read back as a value of a field of type `ty` (independently of
/// the adapter's own reading).
fn read(cell: &Json, ty: FieldKind) -> Option<Value> {
    match cell {
        Json::Null => None,
        Json::String(s) if s.is_empty() => None,
        Json::String(s) if ty == FieldKind::MultiSelect && s.starts_with('[') => {
            let items: Vec<String> = serde_json::from_str(s).expect("a JSON array of options");
            Some(Value::Set(items.into_iter().collect()))
        }
        other => Some(Value::from_json(other)),
    }
}

/// A spreadsheet as a conformance table.
struct SheetRemote {
    emu: Emu,
    spec: TableSpec,
}

impl SheetRemote {
    fn edit(&self, id: &str, change: impl FnOnce(&[Vec<Json>], &mut Vec<Json>)) {
        let mut grid = self.emu.grid();
        let id_col = col(&grid, "_id");
        let at = grid
            .iter()
            .position(|r| cell(r, id_col) == json!(id))
            .unwrap_or_else(|| panic!("no row {id} in the sheet"));
        let headers = vec![grid[0].clone()];
        change(&headers, &mut grid[at]);
        self.emu.set_grid(grid);
    }

    fn column_of(&self, field: &str) -> &str {
        &self
            .spec
            .columns
            .iter()
            .find(|c| c.field == field)
            .unwrap()
            .column
    }
}

impl Remote for SheetRemote {
    fn adapter(&self) -> BoxFuture<'_, Box<dyn Adapter>> {
        let adapter: Box<dyn Adapter> = Box::new(self.emu.adapter(&self.spec));
        Box::pin(async move { adapter })
    }

    fn insert<'a>(&'a self, id: &'a str, fields: Vec<(&'a str, Value)>) -> BoxFuture<'a, ()> {
        let mut grid = self.emu.grid();
        let mut row = Vec::new();
        set_cell(&mut row, col(&grid, "_id"), json!(id));
        for (field, value) in &fields {
            set_cell(&mut row, col(&grid, self.column_of(field)), typed(value));
        }
        grid.push(row);
        self.emu.set_grid(grid);
        Box::pin(async {})
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        fields: Vec<(&'a str, Option<Value>)>,
    ) -> BoxFuture<'a, ()> {
        self.edit(id, |headers, row| {
            for (field, value) in &fields {
                let value = value.as_ref().map_or(json!(""), typed);
                set_cell(row, col(headers, self.column_of(field)), value);
            }
        });
        Box::pin(async {})
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        let mut grid = self.emu.grid();
        let id_col = col(&grid, "_id");
        let before = grid.len();
        grid.retain(|r| cell(r, id_col) != json!(id));
        assert_eq!(grid.len() + 1, before, "row {id} deleted once");
        self.emu.set_grid(grid);
        Box::pin(async {})
    }

    fn rows(&self) -> BoxFuture<'_, BTreeMap<String, Row>> {
        let grid = self.emu.grid();
        let id_col = col(&grid, "_id");
        let mut out = BTreeMap::new();
        for r in grid.iter().skip(1) {
            let Some(id) = read(&cell(r, id_col), FieldKind::Text) else {
                continue;
            };
            let mut row = Row::new();
            for c in &self.spec.columns {
                if let Some(v) = read(&cell(r, col(&grid, &c.column)), c.field_type) {
                    row.insert(c.field.clone(), v);
                }
            }
            out.insert(id.to_string(), row);
        }
        Box::pin(async move { out })
    }

    fn fail_after(&self, _n: usize) {
        // An apply writes all its cells in one request, so the injected
        // fault fails the whole write (every attempt of it), not just the
        // ops after the n-th: the suite only needs some writes to fail.
        self.emu.sheets.control().inject(
            Fault::status(
                503,
                json!({"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}}),
            )
            .method("POST")
            .path_contains("values:batchUpdate")
            .times(RETRIES + 1),
        );
    }

    fn writes(&self) -> BoxFuture<'_, u64> {
        let n = self.emu.mutating().len() as u64;
        Box::pin(async move { n })
    }
}

struct SheetsFactory;

impl RemoteFactory for SheetsFactory {
    fn kind(&self) -> &str {
        "sheets"
    }

    fn make<'a>(&'a self, spec: &'a TableSpec) -> BoxFuture<'a, Box<dyn Remote>> {
        Box::pin(async move {
            let emu = Emu::start();
            emu.adapter(spec)
                .prepare(true)
                .await
                .expect("write the header row");
            Box::new(SheetRemote {
                emu,
                spec: spec.clone(),
            }) as Box<dyn Remote>
        })
    }
}

chittysync::adapter_conformance_tests!(SheetsFactory);

// ---------------------------------------------------------------------------
// Beyond the suite

/// An adapter that runs a hook (a person acting, the clock moving) just
/// before each apply.
struct Hooked {
    inner: SheetsAdapter,
    before_apply: Box<dyn Fn() + Send + Sync>,
}

impl Adapter for Hooked {
    fn system(&self) -> &str {
        self.inner.system()
    }
    fn table(&self) -> &str {
        self.inner.table()
    }
    fn prepare(&self, create: bool) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        self.inner.prepare(create)
    }
    fn describe(&self) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        self.inner.describe()
    }
    fn fetch<'a>(&'a self, since: Option<&'a str>) -> BoxFuture<'a, Result<Fetched, AdapterError>> {
        self.inner.fetch(since)
    }
    fn apply<'a>(
        &'a self,
        ops: &'a [RowOp],
    ) -> BoxFuture<'a, Result<Vec<RowResult>, AdapterError>> {
        (self.before_apply)();
        self.inner.apply(ops)
    }
}

/// A replica with registry `services` bound to a fresh sheet (headers
/// written).
struct Bound {
    _dir: tempfile::TempDir,
    replica: Replica,
    emu: Arc<Emu>,
    adapter: SheetsAdapter,
}

async fn bound(schema: Schema) -> Bound {
    let emu = Arc::new(Emu::start());
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("a.db")).unwrap();
    replica.create_registry("services", schema.clone()).unwrap();
    let binding = AdapterBinding::new("sheet", "services", "sheets", &emu.id);
    replica.add_binding(&binding).unwrap();
    let adapter = emu.adapter(&binding.table_spec(&schema));
    adapter.prepare(true).await.expect("write the headers");
    Bound {
        _dir: dir,
        replica,
        emu,
        adapter,
    }
}

impl Bound {
    async fn run_with(&self, adapter: &dyn Adapter, options: MirrorOptions) -> MirrorReport {
        let report = self
            .replica
            .run_mirror("sheet", adapter, &options, &())
            .await
            .expect("sync");
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        report
    }

    async fn sync(&self) -> MirrorReport {
        self.run_with(&self.adapter, MirrorOptions::sync()).await
    }

    fn registry(&self) -> chittysync::Registry {
        self.replica.registry("services").unwrap()
    }

    /// Every sheet row as `_id` → header → cell.
    fn sheet_rows(&self) -> BTreeMap<String, BTreeMap<String, Json>> {
        let grid = self.emu.grid();
        let id_col = col(&grid, "_id");
        grid.iter()
            .skip(1)
            .filter(|r| !r.iter().all(|c| c == "" || c.is_null()))
            .map(|r| {
                let id = cell(r, id_col)
                    .as_str()
                    .expect("every row has an id")
                    .to_owned();
                let cells = grid[0]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != id_col)
                    .map(|(i, h)| (h.as_str().unwrap().to_owned(), cell(r, i)))
                    .collect();
                (id, cells)
            })
            .collect()
    }

    fn put(&self, id: &str, name: &str, port: i64) {
        self.registry()
            .put(
                Some(id),
                [("name", Value::from(name)), ("port", port.into())],
            )
            .unwrap();
    }
}

fn schema() -> Schema {
    conformance::schema()
}

/// What each request was, by kind, e.g. `GET values:batchGet`.
fn kinds(log: &[LoggedRequest]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in log {
        let tail = r.path.rsplit('/').next().unwrap_or("");
        let kind = if r.path.starts_with("/drive/") {
            "drive".to_owned()
        } else if r.path == "/token" {
            "token".to_owned()
        } else if let Some(op) = tail.strip_prefix("values:") {
            op.to_owned()
        } else if let Some((_, op)) = tail.split_once(':') {
            format!("structural {op}")
        } else if !r.path.contains("/values") {
            "metadata".to_owned()
        } else {
            tail.to_owned()
        };
        *out.entry(format!("{} {kind}", r.method)).or_default() += 1;
    }
    out
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

#[tokio::test]
async fn rows_people_reorder_and_edit_keep_their_own_data() {
    let b = bound(schema()).await;
    for (id, port) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        b.put(id, id, port);
    }
    b.sync().await;
    // A person reverses the rows and edits c's port.
    let mut grid = b.emu.grid();
    let header = grid.remove(0);
    grid.reverse();
    let port = col(std::slice::from_ref(&header), "port");
    let id_col = col(std::slice::from_ref(&header), "_id");
    for row in &mut grid {
        if cell(row, id_col) == json!("c") {
            set_cell(row, port, json!(33));
        }
    }
    grid.insert(0, header);
    b.emu.set_grid(grid);
    // Meanwhile the registry edits b; and between the fetch and the
    // write, the person moves the rows again (b, d, a, c).
    b.registry().put(Some("b"), [("port", 22)]).unwrap();
    let emu = b.emu.clone();
    let hooked = Hooked {
        inner: b.emu.adapter(
            &AdapterBinding::new("sheet", "services", "sheets", "x").table_spec(&schema()),
        ),
        before_apply: Box::new(move || {
            let mut grid = emu.grid();
            let header = grid.remove(0);
            let id_col = col(std::slice::from_ref(&header), "_id");
            grid.sort_by_key(|r| match cell(r, id_col).as_str().unwrap() {
                "b" => 0,
                "d" => 9,
                other => other.as_bytes()[0] as i32,
            });
            grid.insert(0, header);
            emu.set_grid(grid);
        }),
    };
    let report = b.run_with(&hooked, MirrorOptions::sync()).await;
    assert_eq!(report.plan.count(Side::Local, Action::Update), 1);
    assert_eq!(report.plan.count(Side::Remote, Action::Update), 1);
    let rows = b.sheet_rows();
    let ports: BTreeMap<&str, &Json> = rows
        .iter()
        .map(|(id, r)| (id.as_str(), &r["port"]))
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([
            ("a", &json!(1)),
            ("b", &json!(22)),
            ("c", &json!(33)),
            ("d", &json!(4))
        ]),
        "each row kept its own data"
    );
    for (id, r) in &rows {
        assert_eq!(r["name"], json!(id), "row {id} holds its own name");
    }
    let order: Vec<String> = rows.keys().cloned().collect();
    assert_eq!(order.len(), 4);
    // The rows stay where the person put them (b, d, a, c): the sync writes
    // cells in place and moves no row.
    let grid = b.emu.grid();
    let id_col = col(&grid, "_id");
    let placed: Vec<Json> = grid.iter().skip(1).map(|r| cell(r, id_col)).collect();
    assert_eq!(placed, [json!("b"), json!("d"), json!("a"), json!("c")]);
    assert_eq!(
        b.registry().get("c").unwrap().get("port"),
        Some(&Value::Integer(33))
    );
    assert!(b.sync().await.plan.rows.is_empty(), "settled");
}

#[tokio::test]
async fn a_token_that_expires_mid_run_is_renewed() {
    let b = bound(schema()).await;
    b.emu
        .sheets
        .control()
        .set_limit("token_lifetime_secs", 600.0);
    b.put("a", "a", 1);
    let emu = b.emu.clone();
    let hooked = Hooked {
        inner: b.emu.adapter(
            &AdapterBinding::new("sheet", "services", "sheets", "x").table_spec(&schema()),
        ),
        // Eleven minutes pass between the fetch and the write.
        before_apply: Box::new(move || emu.sheets.control().advance(Duration::from_secs(660))),
    };
    b.emu.sheets.control().clear_log();
    b.run_with(&hooked, MirrorOptions::sync()).await;
    let log = b.emu.log();
    let tokens = log.iter().filter(|r| r.path == "/token").count();
    let refused = log.iter().filter(|r| r.status == 401).count();
    assert_eq!((tokens, refused), (2, 1), "one refusal, one new token");
    assert_eq!(b.sheet_rows()["a"]["port"], json!(1), "the write landed");
}

#[tokio::test]
async fn a_dry_run_sends_no_write_request() {
    let b = bound(schema()).await;
    b.put("a", "a", 1);
    b.put("b", "b", 2);
    b.sync().await;
    b.put("a", "a", 10);
    b.registry().delete("b").unwrap();
    b.put("c", "c", 3);
    let mut grid = b.emu.grid();
    let name = col(&grid, "name");
    let mut typed_in = Vec::new();
    set_cell(&mut typed_in, name, json!("typed"));
    grid.push(typed_in);
    b.emu.set_grid(grid.clone());
    b.emu.sheets.control().clear_log();
    for _ in 0..2 {
        let report = b
            .run_with(&b.adapter, MirrorOptions::sync().dry_run())
            .await;
        assert_eq!(report.plan.count(Side::Remote, Action::Update), 1);
        assert_eq!(report.plan.count(Side::Remote, Action::Delete), 1);
        assert_eq!(report.plan.count(Side::Remote, Action::Create), 1);
        let created: Vec<&str> = report
            .plan
            .rows
            .iter()
            .filter(|r| r.local.as_ref().is_some_and(|(a, _)| *a == Action::Create))
            .map(|r| r.remote_id.as_str())
            .collect();
        assert_eq!(created.len(), 1, "the typed-in row would be pulled");
        assert!(created[0].starts_with("sheet-row-"), "{created:?}");
    }
    assert!(b.emu.mutating().is_empty(), "{:?}", b.emu.mutating());
    assert_eq!(b.emu.grid(), grid, "the sheet is untouched");
}

#[tokio::test]
async fn rows_typed_in_without_an_id_get_one_and_are_pulled_once() {
    let b = bound(schema()).await;
    b.put("a", "a", 1);
    b.sync().await;
    let mut grid = b.emu.grid();
    let (name, port) = (col(&grid, "name"), col(&grid, "port"));
    for (n, p) in [("x", 7), ("y", 8)] {
        let mut row = Vec::new();
        set_cell(&mut row, name, json!(n));
        set_cell(&mut row, port, json!(p));
        grid.push(row);
    }
    // A copy of a's row, id included: a new row, not a second a.
    grid.push(grid[1].clone());
    b.emu.set_grid(grid);
    let report = b.sync().await;
    assert_eq!(report.plan.count(Side::Local, Action::Create), 3);
    let rows = b.sheet_rows();
    assert_eq!(rows.len(), 4, "every row has its own id now");
    for (id, row) in &rows {
        if id != "a" {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 7, "UUIDv7 for {row:?}");
        }
    }
    let reg = b.registry();
    assert_eq!(reg.len(), 4);
    let names: Vec<String> = reg
        .list(&Query::all())
        .iter()
        .filter_map(|r| r.get("name").map(ToString::to_string))
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 2);
    for _ in 0..2 {
        assert!(b.sync().await.plan.rows.is_empty(), "pulled once");
    }
    assert_eq!(b.registry().len(), 4);
}

#[tokio::test]
async fn a_row_a_person_deletes_deletes_the_record() {
    let b = bound(schema()).await;
    for id in ["a", "b", "c"] {
        b.put(id, id, 1);
    }
    b.sync().await;
    let mut grid = b.emu.grid();
    let id_col = col(&grid, "_id");
    grid.retain(|r| cell(r, id_col) != json!("b"));
    b.emu.set_grid(grid);
    let report = b.sync().await;
    assert_eq!(report.plan.count(Side::Local, Action::Delete), 1);
    assert!(b.registry().get("b").unwrap().deleted.is_some());
    assert_eq!(b.registry().len(), 2);
}

#[tokio::test]
async fn serial_date_cells_read_as_dates() {
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("since", FieldKind::Date))
        .field(FieldDef::new("seen", FieldKind::Datetime));
    let b = bound(schema).await;
    let grid = b.emu.grid();
    let mut row = Vec::new();
    set_cell(&mut row, col(&grid, "_id"), json!("d1"));
    set_cell(&mut row, col(&grid, "name"), json!("dated"));
    set_cell(&mut row, col(&grid, "since"), json!(46349));
    set_cell(&mut row, col(&grid, "seen"), json!(46349.75));
    let mut grid = grid;
    grid.push(row);
    b.emu.set_grid(grid);
    b.sync().await;
    let rec = b.registry().get("d1").unwrap();
    assert_eq!(rec.get("since"), Some(&Value::from("2026-11-23")));
    assert_eq!(rec.get("seen"), Some(&Value::from("2026-11-23T18:00:00Z")));
    // Written back as ISO text, read back equal: nothing to do next time.
    b.registry()
        .put(
            Some("d2"),
            [
                ("name", "iso"),
                ("since", "2027-01-02"),
                ("seen", "2027-01-02T03:04:05Z"),
            ],
        )
        .unwrap();
    b.sync().await;
    assert_eq!(b.sheet_rows()["d2"]["since"], json!("2027-01-02"));
    assert!(b.sync().await.plan.rows.is_empty());
}

#[tokio::test]
async fn a_429_storm_is_ridden_out_without_duplicates() {
    let b = bound(schema()).await;
    for i in 0..20 {
        b.put(&format!("r{i:02}"), &format!("n{i}"), i + 1);
    }
    let quota = |what: &str| {
        Fault::status(
            429,
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                "message": format!("Quota exceeded for quota metric '{what}'")}}),
        )
    };
    let control = b.emu.sheets.control();
    // Within the retries: every kind of request is refused a few times.
    control.inject(
        quota("Read requests")
            .path_contains("values:batchGet")
            .times(RETRIES),
    );
    control.inject(
        quota("Write requests")
            .path_contains("values:batchUpdate")
            .times(RETRIES),
    );
    control.inject(
        quota("Read requests")
            .path_contains("/drive/")
            .times(2)
            .header("Retry-After", "0"),
    );
    b.sync().await;
    assert_eq!(b.sheet_rows().len(), 20);
    // Beyond the retries: the writes fail, are reported, and the next run
    // finishes them, once.
    for i in 20..30 {
        b.put(&format!("r{i:02}"), &format!("n{i}"), i + 1);
    }
    control.inject(
        quota("Write requests")
            .path_contains("values:batchUpdate")
            .times(RETRIES + 1),
    );
    let report = b
        .replica
        .run_mirror("sheet", &b.adapter, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 10);
    assert!(
        report
            .failed
            .iter()
            .all(|f| f.retryable && f.reason.contains("429")),
        "{:?}",
        report.failed
    );
    assert_eq!(b.sheet_rows().len(), 20, "nothing half-written");
    b.sync().await;
    let rows = b.sheet_rows();
    assert_eq!(rows.len(), 30, "every row once");
    assert_eq!(b.registry().len(), 30, "no duplicate came back");
    assert!(b.sync().await.plan.rows.is_empty());
    let quota_hits = b.emu.log().iter().filter(|r| r.status == 429).count();
    assert_eq!(quota_hits, 2 * RETRIES as usize + 2 + RETRIES as usize + 1);
}

#[tokio::test]
async fn a_one_row_change_in_a_large_sheet_costs_a_few_requests() {
    const ROWS: usize = 10_000;
    let b = bound(schema()).await;
    let mut grid = b.emu.grid();
    let (id_col, name, port) = (col(&grid, "_id"), col(&grid, "name"), col(&grid, "port"));
    for i in 0..ROWS {
        let mut row = Vec::new();
        set_cell(&mut row, id_col, json!(format!("r{i:05}")));
        set_cell(&mut row, name, json!(format!("n{i}")));
        set_cell(&mut row, port, json!(i % 60_000 + 1));
        grid.push(row);
    }
    b.emu.set_grid(grid);
    b.sync().await;
    assert_eq!(b.registry().len(), ROWS);
    b.sync().await;
    let control = b.emu.sheets.control();

    // A person edits one row: read, nothing written.
    let mut grid = b.emu.grid();
    set_cell(&mut grid[5000], port, json!(4242));
    b.emu.set_grid(grid);
    control.clear_log();
    let report = b.sync().await;
    assert_eq!(report.plan.rows.len(), 1);
    assert_eq!(
        kinds(&b.emu.log()),
        counts(&[("GET metadata", 1), ("GET batchGet", 2), ("GET drive", 1)]),
        "sheet properties, header row, Drive version, the sheet"
    );

    // The registry changes one record: the sheet is not read again (its
    // version did not move), only the ids, then one write.
    b.registry().put(Some("r00042"), [("port", 4343)]).unwrap();
    control.clear_log();
    let report = b.sync().await;
    assert_eq!(report.plan.rows.len(), 1);
    assert_eq!(
        kinds(&b.emu.log()),
        counts(&[
            ("GET metadata", 1),
            ("GET batchGet", 2),
            ("GET drive", 1),
            ("POST batchUpdate", 1),
        ]),
        "sheet properties, header row, Drive version, ids, one write"
    );
    let rows = b.sheet_rows();
    assert_eq!(rows["r00042"]["port"], json!(4343));
    assert_eq!(rows["r04999"]["port"], json!(4242));
}

#[tokio::test]
async fn a_first_push_of_many_rows_is_one_values_write() {
    // Quotas count requests: the engine hands the adapter every row at once
    // (its preferred batch), and the adapter sends them in one request.
    const ROWS: usize = 3_000;
    let b = bound(schema()).await;
    b.registry()
        .write(|w| {
            for i in 0..ROWS {
                w.put(
                    Some(&format!("r{i:05}")),
                    [
                        ("name", Value::from(format!("n{i}"))),
                        ("port", Value::from(i as i64 % 60_000 + 1)),
                    ],
                )?;
            }
            Ok(())
        })
        .unwrap();
    b.emu.sheets.control().clear_log();
    let report = b.sync().await;
    assert_eq!(report.applied, ROWS);
    let writes = kinds(&b.emu.log())
        .into_iter()
        .filter(|(k, _)| k.starts_with("POST"))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(
        writes,
        counts(&[("POST batchUpdate", 1), ("POST structural batchUpdate", 1)]),
        "one structural request growing the grid, one values write"
    );
    assert_eq!(b.sheet_rows().len(), ROWS);
}

#[tokio::test]
async fn a_stored_binding_connects_from_its_settings() {
    let emu = Emu::start();
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("a.db")).unwrap();
    replica.create_registry("services", schema()).unwrap();
    let base = emu.running.base_url();
    let binding = AdapterBinding::new("sheet", "services", "sheets", &emu.id)
        .setting("key_file", emu.key_file.to_str().unwrap())
        .setting("sheet", SHEET)
        .setting("base_url", &base)
        .setting("drive_base_url", &base)
        .setting("retry_base_ms", "10")
        .setting("reads_per_minute", "100000")
        .setting("writes_per_minute", "100000");
    replica.add_binding(&binding).unwrap();
    let adapter = replica
        .connect_binding("sheet", &chittysync_adapters::kinds())
        .await
        .expect("connect");
    adapter.prepare(true).await.expect("headers");
    replica
        .registry("services")
        .unwrap()
        .put(Some("a"), [("name", "a")])
        .unwrap();
    let report = replica
        .run_mirror("sheet", adapter.as_ref(), &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert_eq!(report.applied, 1);
    let grid = emu.grid();
    assert_eq!(cell(&grid[1], col(&grid, "name")), json!("a"));

    // A key file others can read is refused, naming the fix.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&emu.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = replica
            .connect_binding("sheet", &chittysync_adapters::kinds())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chmod 600") && !err.contains("PRIVATE"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_sheet_without_the_mapped_headers_is_refused_by_name() {
    let emu = Emu::start();
    emu.set_grid(vec![vec![json!("name"), json!("_id")]]);
    let spec = AdapterBinding::new("s", "services", "sheets", "x").table_spec(&schema());
    let err = emu
        .adapter(&spec)
        .prepare(false)
        .await
        .unwrap_err()
        .to_string();
    for missing in ["'port'", "'price'", "'active'", "'tier'", "'tags'"] {
        assert!(err.contains(missing), "{err}");
    }
    assert!(!err.contains("'name'"), "{err}");
    // An empty sheet is set up by prepare(create), the id column hidden.
    let emu = Emu::start();
    let err = emu
        .adapter(&spec)
        .prepare(false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("have the binding"), "{err}");
    emu.adapter(&spec).prepare(true).await.unwrap();
    let grid = emu.grid();
    assert_eq!(grid[0].len(), 7);
    assert_eq!(grid[0][6], json!("_id"));
    let hidden = emu.log().iter().any(|r| {
        r.body.contains("updateDimensionProperties")
            && r.body.contains("hiddenByUser")
            && r.status == 200
    });
    assert!(hidden, "the id column is hidden");
}

#[tokio::test]
async fn a_value_too_long_for_a_cell_fails_only_its_row() {
    let b = bound(schema()).await;
    b.put("ok", "fits", 1);
    let long = "x".repeat(50_001);
    b.registry()
        .put(Some("long"), [("name", Value::from(long.as_str()))])
        .unwrap();
    let report = b
        .replica
        .run_mirror("sheet", &b.adapter, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let failure = &report.failed[0];
    assert_eq!(failure.record, "long");
    assert!(!failure.retryable, "retrying cannot help");
    assert!(
        failure.reason.contains("50000") || failure.reason.contains("50,000"),
        "{}",
        failure.reason
    );
    let rows = b.sheet_rows();
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        vec!["ok"],
        "the other row landed"
    );
}

#[tokio::test]
async fn binding_a_sheet_people_already_use_adds_a_hidden_id_column() {
    let emu = Emu::start();
    let headers = ["name", "port", "price", "active", "tier", "tags", "notes"];
    emu.set_grid(vec![
        headers.iter().map(|h| json!(h)).collect(),
        vec![
            json!("billing"),
            json!(8080),
            json!(""),
            json!(true),
            json!("gold"),
            json!(""),
            json!("keep me"),
        ],
        vec![json!("search"), json!(9200)],
    ]);
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("a.db")).unwrap();
    replica.create_registry("services", schema()).unwrap();
    let binding = AdapterBinding::new("sheet", "services", "sheets", &emu.id);
    replica.add_binding(&binding).unwrap();
    let adapter = emu.adapter(&binding.table_spec(&schema()));
    let err = adapter.prepare(false).await.unwrap_err().to_string();
    assert!(
        err.contains("'_id'") && err.contains("have the binding"),
        "{err}"
    );
    adapter.prepare(true).await.expect("add the id column");
    let grid = emu.grid();
    assert_eq!(grid[0].len(), 8);
    assert_eq!(grid[0][7], json!("_id"), "after the people's own columns");
    let report = replica
        .run_mirror("sheet", &adapter, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert_eq!(report.plan.count(Side::Local, Action::Create), 2);
    let grid = emu.grid();
    assert!(
        grid[1..]
            .iter()
            .all(|r| cell(r, 7).as_str().is_some_and(|id| !id.is_empty()))
    );
    assert_eq!(
        cell(&grid[1], 6),
        json!("keep me"),
        "unmapped columns untouched"
    );
    let billing = replica
        .registry("services")
        .unwrap()
        .list(&Query::all())
        .into_iter()
        .find(|r| r.get("name") == Some(&Value::from("billing")))
        .expect("billing pulled");
    assert_eq!(billing.get("port"), Some(&Value::Integer(8080)));
    assert_eq!(billing.get("active"), Some(&Value::Bool(true)));
}

#[tokio::test]
async fn columns_people_move_are_found_by_their_headers() {
    let b = bound(schema()).await;
    b.put("a", "a", 1);
    b.sync().await;
    // A person moves the id column to the front and swaps name and port.
    let grid = b.emu.grid();
    let mut order: Vec<usize> = (0..grid[0].len()).collect();
    let (id_col, name, port) = (col(&grid, "_id"), col(&grid, "name"), col(&grid, "port"));
    order.retain(|&i| i != id_col);
    order.insert(0, id_col);
    let (pn, pp) = (
        order.iter().position(|&i| i == name).unwrap(),
        order.iter().position(|&i| i == port).unwrap(),
    );
    order.swap(pn, pp);
    let moved: Vec<Vec<Json>> = grid
        .iter()
        .map(|r| order.iter().map(|&i| cell(r, i)).collect())
        .collect();
    b.emu.set_grid(moved);
    b.registry().put(Some("a"), [("port", 2)]).unwrap();
    b.put("b", "b", 3);
    let report = b.sync().await;
    assert_eq!(report.plan.count(Side::Remote, Action::Update), 1);
    assert_eq!(report.plan.count(Side::Remote, Action::Create), 1);
    let grid = b.emu.grid();
    assert_eq!(grid[0][0], json!("_id"));
    let rows = b.sheet_rows();
    assert_eq!(rows["a"]["port"], json!(2));
    assert_eq!(rows["a"]["name"], json!("a"));
    assert_eq!(rows["b"]["port"], json!(3));
    assert_eq!(rows["b"]["name"], json!("b"));
    assert!(b.sync().await.plan.rows.is_empty());
}

#[tokio::test]
async fn a_key_the_token_endpoint_refuses_is_reported_without_secrets() {
    let emu = Emu::start();
    let mut key = emu
        .sheets
        .service_account_key(&emu.running.base_url(), EMAIL);
    key["private_key"] = json!(include_str!(
        "../../emulators/testdata/unknown_signer_private.pem"
    ));
    std::fs::write(&emu.key_file, key.to_string()).unwrap();
    emu.set_grid(vec![vec![json!("_id")]]);
    let spec = TableSpec {
        table: emu.id.clone(),
        id_column: "id".into(),
        columns: Vec::new(),
    };
    let err = emu.adapter(&spec).describe().await.unwrap_err();
    assert!(matches!(err, AdapterError::Connect { .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("invalid_grant") && text.contains(EMAIL),
        "{text}"
    );
    assert!(
        !text.contains("eyJ") && !text.contains("PRIVATE KEY"),
        "no assertion or key in the error: {text}"
    );
}

#[tokio::test]
async fn a_row_typed_in_during_a_run_is_not_overwritten_by_new_rows() {
    let b = bound(schema()).await;
    b.put("a", "a", 1);
    b.sync().await;
    b.put("b", "b", 2);
    let emu = b.emu.clone();
    let hooked = Hooked {
        inner: b.emu.adapter(
            &AdapterBinding::new("sheet", "services", "sheets", "x").table_spec(&schema()),
        ),
        // Between the fetch and the write, a person types a row below a.
        before_apply: Box::new(move || {
            let mut grid = emu.grid();
            let (name, port) = (col(&grid, "name"), col(&grid, "port"));
            let mut row = Vec::new();
            set_cell(&mut row, name, json!("typed"));
            set_cell(&mut row, port, json!(9));
            grid.push(row);
            emu.set_grid(grid);
        }),
    };
    b.run_with(&hooked, MirrorOptions::sync()).await;
    let grid = b.emu.grid();
    let name = col(&grid, "name");
    let names: Vec<Json> = grid[1..].iter().map(|r| cell(r, name)).collect();
    assert_eq!(names, vec![json!("a"), json!("typed"), json!("b")]);
    // The next run gives the typed row an id and pulls it.
    let report = b.sync().await;
    assert_eq!(report.plan.count(Side::Local, Action::Create), 1);
    assert_eq!(b.registry().len(), 3);
    assert_eq!(b.sheet_rows().len(), 3);
}

#[tokio::test]
async fn a_quota_that_stays_exhausted_fails_the_run_saying_what_to_do() {
    let b = bound(schema()).await;
    b.put("a", "a", 1);
    b.emu.sheets.control().clear_log();
    b.emu.sheets.control().inject(
        Fault::status(
            429,
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                "message": "Quota exceeded for quota metric 'Read requests'"}}),
        )
        .path_contains("values:batchGet")
        .times(RETRIES + 1),
    );
    let err = b
        .replica
        .run_mirror("sheet", &b.adapter, &MirrorOptions::sync(), &())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sheets")
            && err.contains("RESOURCE_EXHAUSTED")
            && err.contains("reads_per_minute"),
        "{err}"
    );
    assert!(b.emu.mutating().is_empty(), "nothing written");
    // The quota refills: the next run goes through.
    b.sync().await;
    assert_eq!(b.sheet_rows().len(), 1);
}

/// A 429 on requests whose path contains `path`, asking for a one-second
/// wait (the adapters cap it at 64 backoff units, 640 ms).
fn quota_refusal(path: &str) -> Fault {
    Fault::status(
        429,
        json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
            "message": "Quota exceeded for quota metric 'Write requests'"}}),
    )
    .method("POST")
    .path_contains(path)
    .header("Retry-After", "1")
}

/// Has `act` (a person editing) happen the moment the injected refusal answers, so it falls
/// between the refused request and its retry.
fn when_refused(
    emu: &Arc<Emu>,
    act: impl FnOnce(&Emu) + Send + 'static,
) -> std::sync::mpsc::Receiver<()> {
    let (done, acted) = std::sync::mpsc::channel();
    let for_hook = emu.clone();
    emu.sheets.control().on_next_fault(move || {
        act(&for_hook);
        let _ = done.send(());
    });
    acted
}

/// Reverses the rows below the header.
fn reverse_rows(emu: &Emu) {
    let mut grid = emu.grid();
    let header = grid.remove(0);
    grid.retain(|r| !r.iter().all(|c| c == "" || c.is_null()));
    grid.reverse();
    grid.insert(0, header);
    emu.set_grid(grid);
}

#[tokio::test]
async fn a_retried_delete_deletes_the_row_where_it_is_after_a_person_sorted() {
    let b = bound(schema()).await;
    for (id, port) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        b.put(id, id, port);
    }
    b.sync().await;
    b.registry().delete("b").unwrap();
    b.emu.sheets.control().clear_log();
    // The delete is refused once (quota); while the adapter waits, a
    // person reverses the rows (b moves from row 3 to row 4, c to row 3).
    b.emu
        .sheets
        .control()
        .inject(quota_refusal(&format!("{}:batchUpdate", b.emu.id)));
    let person = when_refused(&b.emu, reverse_rows);
    b.sync().await;
    assert!(
        person.try_recv().is_ok(),
        "the person acted during the wait"
    );
    let rows = b.sheet_rows();
    assert_eq!(
        rows.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "c", "d"],
        "b deleted, not the row that moved into its place"
    );
    for (id, r) in &rows {
        assert_eq!(r["name"], json!(id), "row {id} holds its own data");
    }
    assert!(b.sync().await.plan.rows.is_empty(), "settled");
}

#[tokio::test]
async fn a_retried_cell_write_lands_on_the_row_where_it_is_now() {
    let b = bound(schema()).await;
    for (id, port) in [("a", 1), ("b", 2), ("c", 3)] {
        b.put(id, id, port);
    }
    b.sync().await;
    b.put("a", "a", 10);
    b.emu.sheets.control().clear_log();
    b.emu
        .sheets
        .control()
        .inject(quota_refusal("values:batchUpdate"));
    let person = when_refused(&b.emu, reverse_rows);
    b.sync().await;
    assert!(
        person.try_recv().is_ok(),
        "the person acted during the wait"
    );
    let rows = b.sheet_rows();
    assert_eq!(rows["a"]["port"], json!(10));
    assert_eq!(rows["c"]["port"], json!(3), "c untouched");
    for (id, r) in &rows {
        assert_eq!(r["name"], json!(id), "row {id} holds its own data");
    }
}

#[tokio::test]
async fn an_id_write_retried_after_a_sort_never_lands_on_another_row() {
    let b = bound(schema()).await;
    b.put("a", "a", 1);
    b.put("b", "b", 2);
    b.sync().await;
    // A person types x below b (row 4) ...
    let mut grid = b.emu.grid();
    let (name, port) = (col(&grid, "name"), col(&grid, "port"));
    let mut row = Vec::new();
    set_cell(&mut row, name, json!("x"));
    set_cell(&mut row, port, json!(7));
    grid.push(row);
    b.emu.set_grid(grid);
    b.emu.sheets.control().clear_log();
    // ... and, while the id write waits out a 429, sorts x to the top.
    b.emu
        .sheets
        .control()
        .inject(quota_refusal("values:batchUpdate"));
    let person = when_refused(&b.emu, reverse_rows);
    b.sync().await;
    assert!(
        person.try_recv().is_ok(),
        "the person acted during the wait"
    );
    let grid = b.emu.grid();
    let id_col = col(&grid, "_id");
    let ids: Vec<Json> = grid[1..].iter().map(|r| cell(r, id_col)).collect();
    assert_eq!(
        ids,
        vec![json!(""), json!("b"), json!("a")],
        "no id overwritten; x gets its id next run"
    );
    b.sync().await;
    let rows = b.sheet_rows();
    assert_eq!(rows.len(), 3);
    assert_eq!(b.registry().len(), 3, "x pulled once");
    for (id, r) in &rows {
        let reg = b.registry().get(id).unwrap();
        assert_eq!(
            reg.get("name").map(ToString::to_string),
            r["name"].as_str().map(str::to_owned)
        );
    }
    assert!(b.sync().await.plan.rows.is_empty(), "settled");
}

#[tokio::test]
async fn a_pull_only_binding_never_writes_ids() {
    let b = bound(schema()).await;
    let mut grid = b.emu.grid();
    let (name, port) = (col(&grid, "name"), col(&grid, "port"));
    let mut row = Vec::new();
    set_cell(&mut row, name, json!("typed"));
    set_cell(&mut row, port, json!(5));
    grid.push(row);
    b.emu.set_grid(grid.clone());
    b.emu.sheets.control().clear_log();
    let mut options = b.emu.options();
    options.pull_only = true;
    let mut spec = AdapterBinding::new("sheet", "services", "sheets", "x").table_spec(&schema());
    spec.table = b.emu.id.clone();
    let pulling = SheetsAdapter::new(spec, options).unwrap();
    pulling.prepare(false).await.unwrap();
    for _ in 0..2 {
        b.run_with(&pulling, MirrorOptions::pull()).await;
    }
    assert!(b.emu.mutating().is_empty(), "{:?}", b.emu.mutating());
    assert_eq!(b.emu.grid(), grid, "the sheet is untouched");
    assert_eq!(b.registry().len(), 1, "pulled once, under a provisional id");
}

#[tokio::test]
async fn a_refused_delete_fails_only_the_deletes() {
    let b = bound(schema()).await;
    for (id, port) in [("a", 1), ("b", 2)] {
        b.put(id, id, port);
    }
    b.sync().await;
    b.registry().delete("b").unwrap();
    b.put("a", "a", 10);
    b.put("c", "c", 3);
    b.emu.sheets.control().inject(
        Fault::status(
            400,
            json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                "message": "You are trying to edit a protected cell or object."}}),
        )
        .method("POST")
        .path_contains(&format!("{}:batchUpdate", b.emu.id))
        .times(10),
    );
    let report = b
        .replica
        .run_mirror("sheet", &b.adapter, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let failed = &report.failed[0];
    assert_eq!(failed.remote_id, "b");
    assert!(!failed.retryable);
    assert!(failed.reason.contains("protected"), "{}", failed.reason);
    let rows = b.sheet_rows();
    assert_eq!(rows["a"]["port"], json!(10), "the update was written");
    assert_eq!(rows["c"]["port"], json!(3), "the create was written");
    assert!(rows.contains_key("b"), "b is still there");
}

#[tokio::test]
async fn create_puts_the_id_column_after_columns_with_data_but_no_header() {
    let emu = Emu::start();
    let headers = ["name", "port", "price", "active", "tier", "tags", "notes"];
    let mut noted = vec![json!("billing"), json!(8080)];
    set_cell(&mut noted, 8, json!("a note without a header"));
    emu.set_grid(vec![
        headers.iter().map(|h| json!(h)).collect(),
        noted,
        vec![json!("search"), json!(9200)],
    ]);
    let binding = AdapterBinding::new("sheet", "services", "sheets", &emu.id);
    let adapter = emu.adapter(&binding.table_spec(&schema()));
    adapter.prepare(true).await.expect("add the id column");
    let grid = emu.grid();
    assert_eq!(col(&grid, "_id"), 9, "past the last column with content");
    assert_eq!(cell(&grid[1], 8), json!("a note without a header"));
    adapter.fetch(None).await.unwrap();
    let grid = emu.grid();
    assert_eq!(
        cell(&grid[1], 8),
        json!("a note without a header"),
        "the note survives the ids"
    );
    assert!(cell(&grid[1], 9).as_str().is_some_and(|id| !id.is_empty()));
}

#[tokio::test]
async fn serial_date_times_are_read_in_the_spreadsheet_time_zone() {
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("seen", FieldKind::Datetime));
    let b = bound(schema).await;
    // Two hours ahead of UTC (POSIX sign).
    b.emu.sheets.set_time_zone(&b.emu.id, "Etc/GMT-2");
    let mut grid = b.emu.grid();
    let mut row = Vec::new();
    set_cell(&mut row, col(&grid, "_id"), json!("d1"));
    set_cell(&mut row, col(&grid, "name"), json!("dated"));
    set_cell(&mut row, col(&grid, "seen"), json!(46349.75));
    grid.push(row);
    b.emu.set_grid(grid);
    // The adapter reads the zone when it reads the layout.
    let adapter = b.emu.adapter(
        &AdapterBinding::new("sheet", "services", "sheets", "x").table_spec(&b.registry().schema()),
    );
    adapter.prepare(false).await.unwrap();
    b.run_with(&adapter, MirrorOptions::sync()).await;
    let rec = b.registry().get("d1").unwrap();
    assert_eq!(rec.get("seen"), Some(&Value::from("2026-11-23T16:00:00Z")));
    // A zone with daylight saving: refused per row, saying why.
    b.emu.sheets.set_time_zone(&b.emu.id, "Europe/Berlin");
    let mut grid = b.emu.grid();
    let mut row = Vec::new();
    set_cell(&mut row, col(&grid, "_id"), json!("d2"));
    set_cell(&mut row, col(&grid, "name"), json!("berlin"));
    set_cell(&mut row, col(&grid, "seen"), json!(46349.75));
    grid.push(row);
    b.emu.set_grid(grid);
    let adapter = b.emu.adapter(
        &AdapterBinding::new("sheet", "services", "sheets", "x").table_spec(&b.registry().schema()),
    );
    adapter.prepare(false).await.unwrap();
    let report = b.run_with(&adapter, MirrorOptions::sync()).await;
    // Both serial date-times (d1's too) are refused, saying why.
    let invalid: Vec<&str> = report
        .plan
        .invalid
        .iter()
        .map(|i| i.remote_id.as_str())
        .collect();
    assert_eq!(invalid, ["d1", "d2"], "{:?}", report.plan.invalid);
    for i in &report.plan.invalid {
        assert!(i.value.contains("Europe/Berlin"), "{i:?}");
    }
    assert_eq!(
        b.registry().get("d1").unwrap().get("seen"),
        Some(&Value::from("2026-11-23T16:00:00Z")),
        "kept, not shifted"
    );
    assert!(b.registry().get("d2").is_none(), "never shifted silently");
}

#[tokio::test]
async fn a_pinned_sheet_id_finds_the_tab_whatever_comes_first() {
    let emu = Emu::start();
    let id = emu.sheets.create_spreadsheet(&["notes", SHEET], &[EMAIL]);
    let spec = {
        let mut spec =
            AdapterBinding::new("sheet", "services", "sheets", &id).table_spec(&schema());
        spec.table = id.clone();
        spec
    };
    let options = |sheet_id: Option<i64>| {
        let mut o = emu.options();
        o.spreadsheet_id = id.clone();
        o.sheet = None;
        o.sheet_id = sheet_id;
        o
    };
    // Bound to the second tab by its title, as `adapter add --sheet` does.
    let mut by_title = options(None);
    by_title.sheet = Some(SHEET.into());
    let adding = SheetsAdapter::new(spec.clone(), by_title).unwrap();
    adding.prepare(true).await.unwrap();
    let pinned = adding.pinned_sheet_id().await.unwrap();
    assert_ne!(pinned, 0, "not the first tab's id");
    // Without a title, the pinned id picks that tab, not the first one.
    let adapter = SheetsAdapter::new(spec.clone(), options(Some(pinned))).unwrap();
    adapter.prepare(false).await.expect("the pinned tab");
    assert!(
        emu.sheets.values(&id, "notes").is_empty(),
        "first tab untouched"
    );
    assert!(!emu.sheets.values(&id, SHEET).is_empty());
    // A pinned tab that is gone is an error saying so.
    let gone = SheetsAdapter::new(spec, options(Some(pinned + 7))).unwrap();
    let err = gone.prepare(false).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("sheet id {}", pinned + 7)) && err.contains("notes"),
        "{err}"
    );
}

#[tokio::test]
async fn only_mapped_columns_make_a_row_a_record() {
    let b = bound(schema()).await;
    b.put("a", "a", 1);
    b.put("b", "b", 2);
    b.sync().await;
    let mut grid = b.emu.grid();
    let id_col = col(&grid, "_id");
    let comment = grid[0].len();
    set_cell(&mut grid[0], comment, json!("comment"));
    // A person clears b's cells (not the row), and writes a note in a
    // column no field maps to, on a row of its own.
    for row in grid.iter_mut().skip(1) {
        if cell(row, id_col) == json!("b") {
            for (i, c) in row.iter_mut().enumerate() {
                if i != id_col {
                    *c = json!("");
                }
            }
        }
    }
    let mut note = Vec::new();
    set_cell(&mut note, comment, json!("call Bob about billing"));
    grid.push(note);
    b.emu.set_grid(grid.clone());
    let report = b.sync().await;
    let invalid: Vec<&str> = report
        .plan
        .invalid
        .iter()
        .map(|i| i.remote_id.as_str())
        .collect();
    assert_eq!(invalid, ["b"], "{:?}", report.plan.invalid);
    assert!(
        report.plan.invalid[0]
            .reason
            .contains("no value in any mapped column"),
        "{:?}",
        report.plan.invalid[0]
    );
    let rec = b.registry().get("b").unwrap();
    assert_eq!(rec.get("name"), Some(&Value::from("b")), "b not cleared");
    assert_eq!(b.registry().len(), 2, "the note is no record");
    assert_eq!(b.emu.grid(), grid, "no id written to the note's row");
}
