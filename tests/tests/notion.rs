//! The Notion adapter against the Notion emulator: the adapter conformance
//! suite, plus what Notion's API makes hard (the 10,000-result query cap,
//! minute-rounded edit times, rate limits, renamed properties, pages moved
//! to the trash, pages people create by hand, per-row validation).
//!
//! "Another application" writes through the emulator's own API, never
//! through the adapter, and reads raw page objects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chittysync::conformance::{self, Remote, RemoteFactory, Row};
use chittysync::{
    Action, Adapter, AdapterBinding, AdapterError, BoxFuture, Fetched, FieldDef, FieldKind,
    MirrorOptions, MirrorReport, Query, RemoteTable, Replica, RowOp, RowResult, Schema, Side,
    TableSpec, Value,
};
use chittysync_adapters::notion::{NotionAdapter, NotionOptions};
use chittysync_emulators::{Control, Fault, Notion, Running};
use serde_json::{Value as Json, json};

const TOKEN: &str = "secret_emulated_integration_token";

/// An emulator on its own thread, accepting [`TOKEN`], with its rate limit
/// out of the way (tests that need it set it back).
struct Emulator {
    notion: Notion,
    running: Running,
}

fn emulator() -> Emulator {
    let notion = Notion::new();
    notion.add_token(TOKEN);
    notion.control().set_limit("rate_per_sec", 1e9);
    notion.control().set_limit("rate_burst", 1e9);
    let running = notion.start_thread().expect("start the Notion emulator");
    Emulator { notion, running }
}

impl Emulator {
    fn control(&self) -> &Control {
        self.notion.control()
    }

    /// Options for a fast test client of database `db`.
    fn options(&self, db: &str) -> NotionOptions {
        let mut options = NotionOptions::new(TOKEN, db);
        options.base_url = self.running.base_url();
        options.requests_per_second = 1e6;
        options.retry_base_ms = 10;
        options
    }

    /// A database with one data source whose only property is the title.
    fn database(&self, title_property: &str) -> (String, String) {
        let (db, sources) = self.notion.create_database(
            "Services",
            vec![("Services", json!({ title_property: {"title": {}} }))],
        );
        (db, sources[0].clone())
    }

    /// Requests that could change something (Notion's query is a read).
    fn mutating(&self) -> Vec<String> {
        self.control()
            .requests()
            .iter()
            .filter(|r| r.is_mutating(&["/query"]))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

/// The plain text of a title or rich-text value.
fn text_of(value: &Json) -> String {
    let kind = value["type"].as_str().unwrap_or("");
    value[kind]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["text"]["content"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// A property value of a page, found by property id.
fn prop_by_id<'p>(page: &'p Json, id: &str) -> Option<&'p Json> {
    page["properties"]
        .as_object()?
        .values()
        .find(|v| v["id"].as_str() == Some(id))
}

/// A raw property value as a registry value (independently of the adapter).
fn value_of(value: &Json) -> Option<Value> {
    let kind = value["type"].as_str().unwrap_or("");
    let inner = &value[kind];
    match kind {
        "title" | "rich_text" => Some(text_of(value))
            .filter(|t| !t.is_empty())
            .map(Value::from),
        "number" if inner.is_number() => Some(Value::from_json(inner)),
        "checkbox" => inner.as_bool().map(Value::Bool),
        "select" => inner["name"].as_str().map(Value::from),
        "multi_select" => {
            let names: BTreeSet<String> = inner
                .as_array()?
                .iter()
                .filter_map(|o| o["name"].as_str().map(str::to_owned))
                .collect();
            (!names.is_empty()).then_some(Value::Set(names))
        }
        "date" => inner["start"].as_str().map(Value::from),
        "url" | "email" => inner.as_str().map(Value::from),
        _ => None,
    }
}

/// A registry value as a raw property value of `kind`.
fn raw_value(kind: &str, value: Option<&Value>) -> Json {
    match (kind, value) {
        ("title" | "rich_text", v) => {
            let text = v.map(ToString::to_string).unwrap_or_default();
            if text.is_empty() {
                json!({ kind: [] })
            } else {
                json!({ kind: [{"type": "text", "text": {"content": text}}] })
            }
        }
        ("number", Some(v)) => {
            json!({"number": serde_json::from_str::<Json>(&v.to_string()).unwrap()})
        }
        ("checkbox", v) => json!({"checkbox": v == Some(&Value::Bool(true))}),
        ("select", Some(v)) => json!({"select": {"name": v.to_string()}}),
        ("multi_select", Some(Value::Set(s))) => {
            json!({"multi_select": s.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()})
        }
        ("multi_select", None) => json!({"multi_select": []}),
        ("date", Some(v)) => json!({"date": {"start": v.to_string()}}),
        (kind, None) => json!({ kind: null }),
        (kind, Some(v)) => json!({ kind: v.to_string() }),
    }
}

/// Where each registry field lives: property id and type, found from the
/// adapter's pinned mapping and a page object.
#[derive(Clone, Debug)]
struct Layout {
    ds: String,
    /// Field → (property id, property type).
    fields: BTreeMap<String, (String, String)>,
    /// The record-id property's id.
    id_prop: String,
}

impl Layout {
    /// Reads the layout after `prepare(true)`: ids from the pinned mapping,
    /// types from a probe page's object.
    async fn read(emu: &Emulator, ds: &str, adapter: &NotionAdapter, id_column: &str) -> Layout {
        let pinned = adapter.pinned_mapping().await.expect("pinned mapping");
        let probe = emu.notion.create_page(ds, json!({}));
        let page = emu.notion.page(&probe).unwrap();
        emu.notion.trash_page(&probe);
        let props = page["properties"].as_object().unwrap();
        let fields = pinned
            .iter()
            .map(|(field, id)| {
                let kind = props
                    .values()
                    .find(|v| v["id"].as_str() == Some(id))
                    .and_then(|v| v["type"].as_str())
                    .unwrap()
                    .to_owned();
                (field.clone(), (id.clone(), kind))
            })
            .collect();
        let id_prop = props[id_column]["id"].as_str().unwrap().to_owned();
        Layout {
            ds: ds.to_owned(),
            fields,
            id_prop,
        }
    }

    /// The row id of a page: its record id, or its page id.
    fn row_id(&self, page: &Json) -> String {
        prop_by_id(page, &self.id_prop)
            .map(text_of)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| page["id"].as_str().unwrap().to_owned())
    }

    fn page_id(&self, emu: &Emulator, id: &str) -> String {
        emu.notion
            .pages(&self.ds)
            .into_iter()
            .find(|p| self.row_id(p) == id)
            .unwrap_or_else(|| panic!("no live page for row {id}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn properties<'v>(
        &self,
        fields: impl IntoIterator<Item = (&'v str, Option<&'v Value>)>,
    ) -> Json {
        let mut props = serde_json::Map::new();
        for (field, value) in fields {
            let (id, kind) = &self.fields[field];
            props.insert(id.clone(), raw_value(kind, value));
        }
        Json::Object(props)
    }

    /// Properties of a page holding record `id` and these fields.
    fn record<'v>(
        &self,
        id: &str,
        fields: impl IntoIterator<Item = (&'v str, Option<&'v Value>)>,
    ) -> Json {
        let mut props = self.properties(fields);
        props[self.id_prop.as_str()] = raw_value("rich_text", Some(&Value::from(id)));
        props
    }

    fn rows(&self, emu: &Emulator) -> BTreeMap<String, Row> {
        emu.notion
            .pages(&self.ds)
            .iter()
            .map(|page| {
                let row = self
                    .fields
                    .iter()
                    .filter_map(|(field, (id, _))| {
                        Some((field.clone(), value_of(prop_by_id(page, id)?)?))
                    })
                    .collect();
                (self.row_id(page), row)
            })
            .collect()
    }
}

/// The adapter under test, plus a fault the harness can arm for its next
/// apply ("the connection drops after n writes").
struct Armed {
    inner: NotionAdapter,
    control: Control,
    fail_after: Arc<Mutex<Option<usize>>>,
}

impl Adapter for Armed {
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
    fn unset_reads_as(&self) -> BTreeMap<String, Value> {
        self.inner.unset_reads_as()
    }
    fn apply<'a>(
        &'a self,
        ops: &'a [RowOp],
    ) -> BoxFuture<'a, Result<Vec<RowResult>, AdapterError>> {
        Box::pin(async move {
            let armed = self.fail_after.lock().unwrap().take();
            let Some(n) = armed else {
                return self.inner.apply(ops).await;
            };
            self.control.inject(
                Fault::status(
                    500,
                    json!({"object": "error", "status": 500, "code": "internal_server_error", "message": "injected"}),
                )
                .path_contains("/v1/pages")
                .skip(n as u32)
                .times(u32::MAX),
            );
            let result = self.inner.apply(ops).await;
            self.control.clear_faults();
            result
        })
    }
}

struct NotionRemote {
    emu: Emulator,
    db: String,
    spec: TableSpec,
    layout: Layout,
    fail_after: Arc<Mutex<Option<usize>>>,
}

impl Remote for NotionRemote {
    fn adapter(&self) -> BoxFuture<'_, Box<dyn Adapter>> {
        Box::pin(async move {
            let inner =
                NotionAdapter::new(self.spec.clone(), self.emu.options(&self.db)).expect("adapter");
            Box::new(Armed {
                inner,
                control: self.emu.control().clone(),
                fail_after: self.fail_after.clone(),
            }) as Box<dyn Adapter>
        })
    }

    fn insert<'a>(&'a self, id: &'a str, fields: Vec<(&'a str, Value)>) -> BoxFuture<'a, ()> {
        let props = self
            .layout
            .record(id, fields.iter().map(|(f, v)| (*f, Some(v))));
        self.emu.notion.create_page(&self.layout.ds, props);
        Box::pin(async {})
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        fields: Vec<(&'a str, Option<Value>)>,
    ) -> BoxFuture<'a, ()> {
        let page = self.layout.page_id(&self.emu, id);
        let props = self
            .layout
            .properties(fields.iter().map(|(f, v)| (*f, v.as_ref())));
        self.emu.notion.update_page(&page, props);
        Box::pin(async {})
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        let page = self.layout.page_id(&self.emu, id);
        self.emu.notion.trash_page(&page);
        Box::pin(async {})
    }

    fn rows(&self) -> BoxFuture<'_, BTreeMap<String, Row>> {
        let rows = self.layout.rows(&self.emu);
        Box::pin(async move { rows })
    }

    fn fail_after(&self, n: usize) {
        *self.fail_after.lock().unwrap() = Some(n);
    }

    fn writes(&self) -> BoxFuture<'_, u64> {
        let n = self.emu.mutating().len() as u64;
        Box::pin(async move { n })
    }
}

/// A database per test: a title property named after the first text field;
/// `prepare(true)` adds the record-id property and the other fields.
struct NotionFactory;

impl RemoteFactory for NotionFactory {
    fn kind(&self) -> &str {
        "notion"
    }

    fn make<'a>(&'a self, spec: &'a TableSpec) -> BoxFuture<'a, Box<dyn Remote>> {
        Box::pin(async move {
            let emu = emulator();
            let title = spec
                .columns
                .iter()
                .find(|c| c.field_type == FieldKind::Text)
                .map(|c| c.column.clone())
                .unwrap();
            let (db, ds) = emu.database(&title);
            let mut spec = spec.clone();
            spec.table = db.clone();
            let creator = NotionAdapter::new(spec.clone(), emu.options(&db)).unwrap();
            creator
                .prepare(true)
                .await
                .expect("prepare the data source");
            let layout = Layout::read(&emu, &ds, &creator, &spec.id_column).await;
            Box::new(NotionRemote {
                emu,
                db,
                spec,
                layout,
                fail_after: Arc::new(Mutex::new(None)),
            }) as Box<dyn Remote>
        })
    }
}

chittysync::adapter_conformance_tests!(NotionFactory);

/// A replica whose registry `services` is bound to a fresh Notion database.
struct Bound {
    _dir: tempfile::TempDir,
    emu: Emulator,
    replica: Replica,
    adapter: NotionAdapter,
    layout: Layout,
    db: String,
}

async fn bound(
    schema: Schema,
    tune_emulator: impl FnOnce(&Emulator),
    tune: impl FnOnce(AdapterBinding) -> AdapterBinding,
) -> Bound {
    let emu = emulator();
    tune_emulator(&emu);
    let (db, ds) = emu.database("name");
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("a.db")).unwrap();
    replica.create_registry("services", schema.clone()).unwrap();
    let binding = tune(AdapterBinding::new("notion", "services", "notion", &db));
    let adapter = NotionAdapter::new(binding.table_spec(&schema), emu.options(&db)).unwrap();
    adapter.prepare(true).await.expect("prepare");
    let layout = Layout::read(&emu, &ds, &adapter, &binding.id_column).await;
    replica.add_binding(&binding).unwrap();
    Bound {
        _dir: dir,
        emu,
        replica,
        adapter,
        layout,
        db,
    }
}

impl Bound {
    async fn run(&self, options: MirrorOptions) -> MirrorReport {
        self.replica
            .run_mirror("notion", &self.adapter, &options, &())
            .await
            .expect("sync")
    }

    async fn sync(&self) -> MirrorReport {
        let report = self.run(MirrorOptions::sync()).await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        report
    }

    fn registry(&self) -> chittysync::Registry {
        self.replica.registry("services").unwrap()
    }

    fn remote(&self) -> BTreeMap<String, Row> {
        self.layout.rows(&self.emu)
    }
}

fn statuses(emu: &Emulator, status: u16) -> usize {
    emu.control()
        .requests()
        .iter()
        .filter(|r| r.status == status)
        .count()
}

/// Fixes the emulator's clock at 2026-11-23T10:00:00Z.
const T0: i64 = 1_795_428_000_000;

/// 25,000 pages, at most 10,000 results per query: every page is read
/// once, by splitting the scan into `created_time` windows.
#[tokio::test]
async fn a_full_fetch_reads_past_the_result_cap_at_real_scale() {
    full_fetch_past_the_cap(25_000, 10_000, 700).await;
}

/// The same split, with a lower cap.
#[tokio::test]
async fn a_full_fetch_reads_past_a_low_result_cap() {
    full_fetch_past_the_cap(2_500, 1_000, 70).await;
}

async fn full_fetch_past_the_cap(pages: usize, cap: usize, per_minute: usize) {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    let control = b.emu.control();
    control.set_time(T0);
    control.set_limit("result_cap", cap as f64);
    let mut want = BTreeSet::new();
    for i in 0..pages {
        if i % per_minute == 0 {
            control.advance(std::time::Duration::from_secs(60));
        }
        let id = format!("r{i:05}");
        let props = b
            .layout
            .record(&id, [("name", Some(&Value::from(id.as_str())))]);
        b.emu.notion.create_page(&b.layout.ds, props);
        want.insert(id);
    }
    control.clear_log();
    let fetched = b.adapter.fetch(None).await.expect("full fetch");
    assert!(fetched.complete);
    let got: BTreeSet<String> = fetched.rows.iter().map(|r| r.id.clone()).collect();
    assert_eq!(fetched.rows.len(), pages, "each page once");
    assert_eq!(got, want, "every page, none lost to the cap");
    let windows = control
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/query") && r.body.contains("on_or_after"))
        .filter(|r| !r.body.contains("start_cursor"))
        .count();
    assert!(
        windows >= pages.div_ceil(cap) - 1,
        "the scan was split into windows ({windows})"
    );
}

/// More pages than the cap created in one minute cannot be told apart by
/// `created_time`: the fetch fails and says so instead of truncating.
#[tokio::test]
async fn more_pages_than_the_cap_in_one_minute_fail_loudly() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    b.emu.control().set_time(T0);
    b.emu.control().set_limit("result_cap", 100.0);
    for i in 0..150 {
        let props = b
            .layout
            .properties([("name", Some(&Value::from(format!("n{i}"))))]);
        b.emu.notion.create_page(&b.layout.ds, props);
    }
    let err = b.adapter.fetch(None).await.unwrap_err();
    assert!(err.to_string().contains("more pages share one"), "{err}");
    b.registry().put(Some("x"), [("name", "x")]).unwrap();
    let err = b
        .replica
        .run_mirror("notion", &b.adapter, &MirrorOptions::sync(), &())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot all be read"), "{err}");
    assert_eq!(b.registry().len(), 1, "nothing half-synced");
}

/// Notion rounds edit times down to the minute; an edit in the same
/// minute as the last sync still arrives.
#[tokio::test]
async fn an_edit_in_the_same_minute_as_the_last_sync_is_not_lost() {
    let b = bound(
        conformance::schema(),
        |e| e.control().set_time(T0 + 5_000),
        |b| b,
    )
    .await;
    b.registry()
        .put(
            Some("svc"),
            [("name", Value::from("svc")), ("port", 80.into())],
        )
        .unwrap();
    b.sync().await;
    b.sync().await; // the cursor now sits in this minute
    let page = b.layout.page_id(&b.emu, "svc");
    b.emu.control().advance(std::time::Duration::from_secs(20));
    b.emu.notion.update_page(
        &page,
        b.layout.properties([("port", Some(&Value::Integer(81)))]),
    );
    let report = b.sync().await;
    assert_eq!(report.plan.count(Side::Local, Action::Update), 1);
    assert_eq!(
        b.registry().get("svc").unwrap().get("port"),
        Some(&Value::Integer(81))
    );
    // Re-reading the overlap brings nothing new.
    assert!(b.sync().await.plan.rows.is_empty());
}

/// 429s (with `Retry-After: 0` and `1`) on creates and on a query are
/// waited out and retried; every row lands exactly once.
#[tokio::test]
async fn a_storm_of_429s_is_survived_without_duplicates() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    let reg = b.registry();
    for i in 0..6 {
        reg.put(
            Some(&format!("r{i}")),
            [("name", Value::from(format!("n{i}")))],
        )
        .unwrap();
    }
    let limited = json!({"object": "error", "status": 429, "code": "rate_limited",
        "message": "You have been rate limited. Please try again in a few minutes."});
    let control = b.emu.control();
    control.inject(
        Fault::status(429, limited.clone())
            .header("Retry-After", "0")
            .method("POST")
            .path_contains("/v1/pages")
            .times(4),
    );
    control.inject(
        Fault::status(429, limited.clone())
            .header("Retry-After", "1")
            .method("POST")
            .path_contains("/v1/pages"),
    );
    control.inject(
        Fault::status(429, limited)
            .header("Retry-After", "0")
            .path_contains("/query")
            .times(2),
    );
    let report = b.sync().await;
    assert_eq!(report.applied, 6);
    assert_eq!(statuses(&b.emu, 429), 7, "every injected 429 was met");
    let pages = b.emu.notion.pages(&b.layout.ds);
    let ids: Vec<String> = pages.iter().map(|p| b.layout.row_id(p)).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (6, 6), "each row once: {ids:?}");
    assert!(b.sync().await.plan.rows.is_empty());
}

/// A 503 on a create is not blindly re-sent: the page is looked up by its
/// record id first, so a create that landed is not made twice.
#[tokio::test]
async fn a_create_answered_with_a_server_error_is_not_duplicated() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    b.registry().put(Some("a"), [("name", "a")]).unwrap();
    b.emu.control().inject(
        Fault::status(
            503,
            json!({"object": "error", "status": 503, "code": "service_unavailable", "message": "try later"}),
        )
        .method("POST")
        .path_contains("/v1/pages"),
    );
    b.sync().await;
    assert_eq!(b.remote().len(), 1);
    assert_eq!(statuses(&b.emu, 503), 1);
}

/// A dry run reads (GETs and queries) but sends no mutating request.
#[tokio::test]
async fn a_dry_run_sends_no_mutating_request() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    let reg = b.registry();
    reg.put(Some("a"), [("name", "a")]).unwrap();
    reg.put(Some("b"), [("name", "b")]).unwrap();
    b.sync().await;
    reg.put(Some("a"), [("port", 81)]).unwrap();
    reg.put(Some("c"), [("name", "c")]).unwrap();
    reg.delete("b").unwrap();
    let page = b.layout.page_id(&b.emu, "a");
    b.emu.notion.update_page(
        &page,
        b.layout.properties([("tier", Some(&Value::from("gold")))]),
    );
    b.emu.control().clear_log();
    let before = b.remote();
    let report = b.run(MirrorOptions::sync().dry_run()).await;
    assert!(report.dry_run && !report.plan.rows.is_empty());
    assert!(!b.emu.control().requests().is_empty(), "it did read");
    assert_eq!(b.emu.mutating(), Vec::<String>::new());
    assert_eq!(b.remote(), before);
}

/// With the mapping pinned to property ids, renaming properties in Notion
/// between syncs changes nothing.
#[tokio::test]
async fn a_property_renamed_in_notion_keeps_syncing() {
    let emu = emulator();
    let (db, ds) = emu.database("name");
    let schema = conformance::schema();
    let probe = AdapterBinding::new("notion", "services", "notion", &db);
    let creator = NotionAdapter::new(probe.table_spec(&schema), emu.options(&db)).unwrap();
    creator.prepare(true).await.unwrap();
    let pinned = creator.pinned_mapping().await.unwrap();
    assert_eq!(pinned.len(), schema.fields.len(), "every field pinned");
    assert_eq!(pinned["name"], "title", "by property id, not name");
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("a.db")).unwrap();
    let reg = replica.create_registry("services", schema.clone()).unwrap();
    let mut binding = probe;
    for (field, id) in &pinned {
        binding = binding.map(field, id);
    }
    binding.id_column = creator.pinned_id_property().await.unwrap();
    replica.add_binding(&binding).unwrap();
    let mut options = emu.options(&db);
    options.id_property = binding.id_column.clone();
    let adapter = NotionAdapter::new(binding.table_spec(&schema), options).unwrap();
    let layout = Layout::read(&emu, &ds, &adapter, "id").await;
    assert_ne!(binding.id_column, "id", "pinned to the property's id");
    let sync = || async {
        let report = replica
            .run_mirror("notion", &adapter, &MirrorOptions::sync(), &())
            .await
            .expect("sync");
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        report
    };
    reg.put(
        Some("svc"),
        [("name", Value::from("svc")), ("port", 80.into())],
    )
    .unwrap();
    sync().await;
    emu.notion.rename_property(&ds, "port", "TCP port");
    emu.notion.rename_property(&ds, "name", "Service");
    emu.notion.rename_property(&ds, "id", "Registry id");
    let page = layout.page_id(&emu, "svc");
    emu.notion.update_page(
        &page,
        layout.properties([("port", Some(&Value::Integer(8080)))]),
    );
    reg.put(Some("svc"), [("tier", "gold")]).unwrap();
    reg.put(Some("new"), [("name", "new")]).unwrap();
    sync().await;
    let svc = reg.get("svc").unwrap();
    assert_eq!(svc.get("port"), Some(&Value::Integer(8080)));
    let rows = layout.rows(&emu);
    assert_eq!(rows["svc"]["tier"], Value::from("gold"));
    assert_eq!(rows["new"]["name"], Value::from("new"));
    let page = emu.notion.page(&page).unwrap();
    assert!(
        page["properties"]["TCP port"].is_object(),
        "renamed in Notion"
    );
}

/// A page moved to the trash in Notion deletes its record.
#[tokio::test]
async fn a_page_moved_to_the_trash_deletes_its_record() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    let reg = b.registry();
    reg.put(Some("a"), [("name", "a")]).unwrap();
    reg.put(Some("b"), [("name", "b")]).unwrap();
    b.sync().await;
    let page = b.layout.page_id(&b.emu, "a");
    b.emu.notion.trash_page(&page);
    let report = b.sync().await;
    assert_eq!(report.plan.count(Side::Local, Action::Delete), 1);
    assert!(reg.get("a").unwrap().deleted.is_some());
    assert!(reg.get("b").unwrap().deleted.is_none());
    assert!(b.sync().await.plan.rows.is_empty());
}

/// A page a person creates in Notion has no record id: it is pulled under
/// its page id, and later edits on either side round-trip to that page.
#[tokio::test]
async fn a_page_made_by_hand_is_pulled_and_edits_round_trip() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    b.sync().await;
    let page = b.emu.notion.create_page(
        &b.layout.ds,
        b.layout.properties([
            ("name", Some(&Value::from("by hand"))),
            ("port", Some(&Value::Integer(9000))),
        ]),
    );
    b.sync().await;
    let reg = b.registry();
    let records = reg.list(&Query::all());
    assert_eq!(records.len(), 1);
    let id = records[0].id.clone();
    assert_eq!(records[0].get("name"), Some(&Value::from("by hand")));
    reg.put(Some(&id), [("port", 9001)]).unwrap();
    b.sync().await;
    let rows = b.remote();
    assert_eq!(rows.len(), 1, "no second page");
    assert_eq!(rows[&page]["port"], Value::Integer(9001));
    b.emu.notion.update_page(
        &page,
        b.layout
            .properties([("name", Some(&Value::from("renamed")))]),
    );
    b.sync().await;
    assert_eq!(
        reg.get(&id).unwrap().get("name"),
        Some(&Value::from("renamed"))
    );
    assert!(b.sync().await.plan.rows.is_empty());
}

/// A value Notion would refuse (a comma in a select option) fails its row
/// only, with a reason naming the field; the rest of the batch lands.
#[tokio::test]
async fn a_value_notion_refuses_fails_only_its_row() {
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("tier", FieldKind::Select).options(["gold", "gold, silver"]));
    let b = bound(schema, |_| {}, |b| b).await;
    let reg = b.registry();
    reg.put(Some("a"), [("name", "a"), ("tier", "gold, silver")])
        .unwrap();
    reg.put(Some("b"), [("name", "b"), ("tier", "gold")])
        .unwrap();
    reg.put(Some("c"), [("name", "c")]).unwrap();
    let report = b.run(MirrorOptions::sync()).await;
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let failed = &report.failed[0];
    assert_eq!(failed.record, "a");
    assert!(
        failed.reason.contains("comma") && failed.reason.contains("tier"),
        "{}",
        failed.reason
    );
    assert!(!failed.retryable);
    let rows = b.remote();
    assert_eq!(rows.keys().collect::<Vec<_>>(), vec!["b", "c"]);
}

/// At the default budget (2.8 requests/s) against Notion's limit (3/s,
/// bursts of 10), a sync never meets a 429.
#[tokio::test]
async fn the_default_budget_stays_under_the_rate_limit() {
    let b = bound(
        conformance::schema(),
        |e| {
            e.control().set_limit("rate_per_sec", 3.0);
            e.control().set_limit("rate_burst", 10.0);
        },
        |b| b,
    )
    .await;
    let mut options = b.emu.options(&b.db);
    options.requests_per_second = NotionOptions::new(TOKEN, "x").requests_per_second;
    let adapter = NotionAdapter::new(
        AdapterBinding::new("notion", "services", "notion", &b.db)
            .table_spec(&conformance::schema()),
        options,
    )
    .unwrap();
    let reg = b.registry();
    for i in 0..14 {
        reg.put(
            Some(&format!("r{i}")),
            [("name", Value::from(format!("n{i}")))],
        )
        .unwrap();
    }
    b.emu.control().clear_log();
    let report = b
        .replica
        .run_mirror("notion", &adapter, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert_eq!(report.applied, 14);
    assert!(b.emu.control().requests().len() > 14);
    assert_eq!(statuses(&b.emu, 429), 0, "never rate-limited");
}

/// Mapping a field onto a property Notion computes, or onto a property of
/// the wrong type, is refused up front, naming both; a pull-only binding
/// may read computed properties.
#[tokio::test]
async fn unfit_properties_are_refused_at_prepare() {
    let emu = emulator();
    let (db, sources) = emu.notion.create_database(
        "Services",
        vec![(
            "Services",
            json!({"name": {"title": {}}, "id": {"rich_text": {}},
                   "port": {"rich_text": {}}, "made": {"created_time": {}}}),
        )],
    );
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text))
        .field(FieldDef::new("port", FieldKind::Integer));
    let spec = AdapterBinding::new("n", "services", "notion", &db).table_spec(&schema);
    let adapter = NotionAdapter::new(spec, emu.options(&db)).unwrap();
    let err = adapter.describe().await.unwrap_err().to_string();
    assert!(
        err.contains("'port' (integer)") && err.contains("rich_text"),
        "{err}"
    );

    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text))
        .field(FieldDef::new("made", FieldKind::Datetime));
    let spec = AdapterBinding::new("n", "services", "notion", &db).table_spec(&schema);
    let adapter = NotionAdapter::new(spec.clone(), emu.options(&db)).unwrap();
    let err = adapter.prepare(false).await.unwrap_err().to_string();
    assert!(
        err.contains("created_time") && err.contains("pull-only"),
        "{err}"
    );
    let mut options = emu.options(&db);
    options.pull_only = true;
    let reader = NotionAdapter::new(spec, options).unwrap();
    reader
        .prepare(false)
        .await
        .expect("a pull-only binding may read it");
    emu.notion.create_page(
        &sources[0],
        json!({"name": {"title": [{"type": "text", "text": {"content": "svc"}}]},
               "id": {"rich_text": [{"type": "text", "text": {"content": "svc"}}]}}),
    );
    let fetched = reader.fetch(None).await.unwrap();
    assert_eq!(fetched.rows.len(), 1);
    assert!(
        matches!(fetched.rows[0].fields.get("made"), Some(Value::Text(t)) if t.starts_with("20")),
        "{:?}",
        fetched.rows[0]
    );
}

/// A reference field lives in a relation to the same data source: record
/// ids become page ids on the way out and back on the way in, also when
/// the referenced record is created in the same batch.
#[tokio::test]
async fn references_travel_as_relations_between_pages() {
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("parent", FieldKind::Reference));
    let b = bound(schema, |_| {}, |b| b).await;
    let (parent_prop, kind) = b.layout.fields["parent"].clone();
    assert_eq!(kind, "relation", "prepare(true) made a relation");
    let reg = b.registry();
    // "child" sorts first, so its create would come before its parent's.
    reg.put(Some("child"), [("name", "child"), ("parent", "root")])
        .unwrap();
    reg.put(Some("root"), [("name", "root")]).unwrap();
    b.sync().await;
    let (child, root) = (
        b.layout.page_id(&b.emu, "child"),
        b.layout.page_id(&b.emu, "root"),
    );
    let page = b.emu.notion.page(&child).unwrap();
    let related = prop_by_id(&page, &parent_prop).unwrap()["relation"].clone();
    assert_eq!(related, json!([{"id": root}]));
    assert!(b.sync().await.plan.rows.is_empty(), "reads back as written");
    // Someone points root at child in Notion.
    b.emu.notion.update_page(
        &root,
        json!({ parent_prop.as_str(): {"relation": [{"id": child}]} }),
    );
    b.sync().await;
    assert_eq!(
        reg.get("root").unwrap().get("parent"),
        Some(&Value::from("child"))
    );
}

/// A bulk edit in Notion (more pages edited in one minute than one query
/// returns) cannot be read by edit time: the fetch reads every page
/// instead, and no edit is lost.
#[tokio::test]
async fn a_bulk_edit_past_the_cap_in_one_minute_is_read_in_full() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    let control = b.emu.control();
    control.set_time(T0);
    control.set_limit("result_cap", 100.0);
    for i in 0..150 {
        if i % 50 == 0 {
            control.advance(std::time::Duration::from_secs(60));
        }
        let id = format!("r{i:03}");
        let props = b
            .layout
            .record(&id, [("name", Some(&Value::from(id.as_str())))]);
        b.emu.notion.create_page(&b.layout.ds, props);
    }
    b.sync().await;
    assert_eq!(b.registry().len(), 150);
    control.advance(std::time::Duration::from_secs(60));
    for page in b.emu.notion.pages(&b.layout.ds) {
        let id = page["id"].as_str().unwrap().to_owned();
        b.emu.notion.update_page(
            &id,
            b.layout.properties([("port", Some(&Value::Integer(443)))]),
        );
    }
    let report = b.sync().await;
    assert_eq!(report.plan.count(Side::Local, Action::Update), 150);
    let reg = b.registry();
    assert!(
        reg.list(&Query::all())
            .iter()
            .all(|r| r.get("port") == Some(&Value::Integer(443)))
    );
}

/// A database with several data sources needs the `data_source` setting;
/// without it the error lists them.
#[tokio::test]
async fn a_database_with_several_data_sources_needs_one_chosen() {
    let emu = emulator();
    let (db, sources) = emu.notion.create_database(
        "Inventory",
        vec![
            (
                "Servers",
                json!({"name": {"title": {}}, "id": {"rich_text": {}}}),
            ),
            (
                "Services",
                json!({"name": {"title": {}}, "id": {"rich_text": {}}}),
            ),
        ],
    );
    let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
    let spec = AdapterBinding::new("n", "services", "notion", &db).table_spec(&schema);
    let unsure = NotionAdapter::new(spec.clone(), emu.options(&db)).unwrap();
    let err = unsure.describe().await.unwrap_err().to_string();
    assert!(
        err.contains("'Servers'") && err.contains("'Services'") && err.contains("data_source"),
        "{err}"
    );
    for choice in ["Services", sources[1].as_str()] {
        let mut options = emu.options(&db);
        options.data_source = Some(choice.to_owned());
        let adapter = NotionAdapter::new(spec.clone(), options).unwrap();
        let table = adapter.describe().await.unwrap();
        assert!(table.name.contains(&sources[1]), "{}", table.name);
    }
}

/// A wrong token is refused with a hint, and the token appears in no error.
#[tokio::test]
async fn a_wrong_token_is_reported_without_showing_it() {
    let emu = emulator();
    let (db, _) = emu.database("name");
    let mut options = emu.options(&db);
    options.token = "secret_wrong_token_value".into();
    let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
    let spec = AdapterBinding::new("n", "services", "notion", &db).table_spec(&schema);
    let adapter = NotionAdapter::new(spec, options.clone()).unwrap();
    let err = adapter.describe().await.unwrap_err().to_string();
    assert!(
        err.contains("401") && err.contains("integration token"),
        "{err}"
    );
    assert!(!err.contains("secret_wrong_token_value"));
    assert!(!format!("{options:?} {adapter:?}").contains("secret_wrong_token_value"));
}

/// 409 (conflict) and 529 (overload) answers to updates are retried.
#[tokio::test]
async fn conflicts_and_overloads_on_updates_are_retried() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    let reg = b.registry();
    reg.put(Some("a"), [("name", "a")]).unwrap();
    b.sync().await;
    reg.put(Some("a"), [("port", 8080)]).unwrap();
    let control = b.emu.control();
    control.inject(
        Fault::status(409, json!({"object": "error", "status": 409, "code": "conflict_error", "message": "Conflict occurred while saving. Please try again."}))
            .method("PATCH"),
    );
    control.inject(
        Fault::status(529, json!({"object": "error", "status": 529, "code": "service_overload", "message": "overloaded"}))
            .method("PATCH"),
    );
    b.sync().await;
    assert_eq!((statuses(&b.emu, 409), statuses(&b.emu, 529)), (1, 1));
    assert_eq!(b.remote()["a"]["port"], Value::Integer(8080));
}

/// Long text is split into rich-text items Notion accepts (at most 2000
/// characters each) and joined back, so it reads back as written.
#[tokio::test]
async fn long_text_round_trips_through_rich_text_chunks() {
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("notes", FieldKind::LongText));
    let b = bound(schema, |_| {}, |b| b).await;
    let notes: String = (0..4500)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    b.registry()
        .put(Some("a"), [("name", "a"), ("notes", notes.as_str())])
        .unwrap();
    b.sync().await;
    let page = b.emu.notion.page(&b.layout.page_id(&b.emu, "a")).unwrap();
    let items = prop_by_id(&page, &b.layout.fields["notes"].0).unwrap()["rich_text"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(items, 3);
    assert_eq!(b.remote()["a"]["notes"], Value::from(notes.as_str()));
    assert!(b.sync().await.plan.rows.is_empty(), "no echo");
}

/// A page moved to the trash (seen by a full compare) while its record
/// was edited: keeping the registry's side writes the record to a fresh
/// page, not to the trashed one.
#[tokio::test]
async fn keeping_a_record_whose_page_was_trashed_makes_a_new_page() {
    let schema = conformance::schema().conflict_policy(chittysync::ConflictPolicy::Manual);
    let b = bound(schema, |_| {}, |b| b).await;
    let reg = b.registry();
    reg.put(Some("a"), [("name", "a")]).unwrap();
    b.sync().await;
    let old = b.layout.page_id(&b.emu, "a");
    reg.put(Some("a"), [("name", "kept")]).unwrap();
    b.emu.notion.trash_page(&old);
    let report = b.run(MirrorOptions::sync().full()).await;
    assert_eq!(report.plan.open_conflicts(), 1);
    let report = b.run(MirrorOptions::sync().full().take(Side::Local)).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let new = b.layout.page_id(&b.emu, "a");
    assert_ne!(new, old);
    assert_eq!(b.remote()["a"]["name"], Value::from("kept"));
}

/// A read that gets no answer in time is abandoned and sent again (the
/// first answer would take ten minutes; the outer limit only stops a hang).
#[tokio::test]
async fn a_read_without_an_answer_in_time_is_retried() {
    let emu = emulator();
    let (db, _) = emu.database("name");
    let mut options = emu.options(&db);
    options.timeout = std::time::Duration::from_millis(200);
    let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
    let spec = AdapterBinding::new("n", "services", "notion", &db).table_spec(&schema);
    let adapter = NotionAdapter::new(spec, options).unwrap();
    emu.control().inject(
        Fault::default()
            .delay(std::time::Duration::from_secs(600))
            .method("GET")
            .times(1),
    );
    tokio::time::timeout(std::time::Duration::from_secs(120), adapter.prepare(true))
        .await
        .expect("the adapter stopped waiting")
        .expect("answered on the retry");
}

/// Every other registry type reads back as written (no echo on the next
/// sync), and edits made in Notion arrive in the registry's form.
#[tokio::test]
async fn dates_urls_emails_and_json_round_trip() {
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("since", FieldKind::Date))
        .field(FieldDef::new("seen", FieldKind::Datetime))
        .field(FieldDef::new("home", FieldKind::Url))
        .field(FieldDef::new("owner", FieldKind::Email))
        .field(FieldDef::new("meta", FieldKind::Json))
        .field(FieldDef::new("price", FieldKind::Decimal));
    let b = bound(schema, |_| {}, |b| b).await;
    let kinds: BTreeMap<&str, &str> = b
        .layout
        .fields
        .iter()
        .map(|(f, (_, k))| (f.as_str(), k.as_str()))
        .collect();
    assert_eq!(kinds["since"], "date");
    assert_eq!(kinds["home"], "url");
    assert_eq!(kinds["owner"], "email");
    let reg = b.registry();
    reg.put(
        Some("a"),
        [
            ("name", Value::from("a")),
            ("since", "2026-01-02".into()),
            ("seen", "2026-11-23T10:00:00Z".into()),
            ("home", "https://example.com/a".into()),
            ("owner", "ops@example.com".into()),
            ("meta", Value::Json(r#"{"tier":1}"#.into())),
            ("price", Value::Decimal("19.99".into())),
        ],
    )
    .unwrap();
    b.sync().await;
    assert!(b.sync().await.plan.rows.is_empty(), "reads back as written");
    let page = b.layout.page_id(&b.emu, "a");
    b.emu.notion.update_page(
        &page,
        b.layout.properties([
            ("seen", Some(&Value::from("2026-11-24T08:30:00+02:00"))),
            ("price", Some(&Value::Decimal("20.5".into()))),
        ]),
    );
    b.sync().await;
    let a = reg.get("a").unwrap();
    assert_eq!(a.get("seen"), Some(&Value::from("2026-11-24T06:30:00Z")));
    assert_eq!(a.get("price"), Some(&Value::Decimal("20.5".into())));
    assert_eq!(a.get("meta"), Some(&Value::Json(r#"{"tier":1}"#.into())));
}

/// Edits past the result cap spread over several minutes are read by edit
/// time in windows, still incrementally.
#[tokio::test]
async fn many_edits_since_the_cursor_are_read_in_windows() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    let control = b.emu.control();
    control.set_time(T0);
    control.set_limit("result_cap", 100.0);
    for i in 0..250 {
        let props = b.layout.record(
            &format!("r{i:03}"),
            [("name", Some(&Value::from(format!("n{i}"))))],
        );
        if i % 50 == 0 {
            control.advance(std::time::Duration::from_secs(60));
        }
        b.emu.notion.create_page(&b.layout.ds, props);
    }
    let first = b.adapter.fetch(None).await.unwrap();
    assert_eq!(first.rows.len(), 250);
    for (i, page) in b.emu.notion.pages(&b.layout.ds).iter().enumerate() {
        if i % 60 == 0 {
            control.advance(std::time::Duration::from_secs(60));
        }
        let id = page["id"].as_str().unwrap();
        b.emu.notion.update_page(
            id,
            b.layout.properties([("port", Some(&Value::Integer(7)))]),
        );
    }
    let next = b.adapter.fetch(first.cursor.as_deref()).await.unwrap();
    assert!(!next.complete, "still incremental");
    let ids: BTreeSet<&str> = next.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        (next.rows.len(), ids.len()),
        (250, 250),
        "each edited page once"
    );
    assert!(
        next.rows
            .iter()
            .all(|r| r.fields.get("port") == Some(&Value::Integer(7)))
    );
}

/// A select field may live in a status property, whose options the API
/// cannot create: an unknown option fails its row only.
#[tokio::test]
async fn a_status_property_takes_only_its_options() {
    let emu = emulator();
    let (db, ds) = emu.notion.create_database(
        "Services",
        vec![(
            "Services",
            json!({"name": {"title": {}}, "id": {"rich_text": {}},
                   "stage": {"status": {"options": [{"name": "Planned"}, {"name": "Live"}]}}}),
        )],
    );
    let ds = &ds[0];
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("stage", FieldKind::Select).options(["Planned", "Live", "Retired"]));
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("a.db")).unwrap();
    let reg = replica.create_registry("services", schema.clone()).unwrap();
    let binding = AdapterBinding::new("notion", "services", "notion", &db);
    replica.add_binding(&binding).unwrap();
    let adapter = NotionAdapter::new(binding.table_spec(&schema), emu.options(&db)).unwrap();
    reg.put(Some("a"), [("name", "a"), ("stage", "Live")])
        .unwrap();
    reg.put(Some("b"), [("name", "b"), ("stage", "Retired")])
        .unwrap();
    let report = replica
        .run_mirror("notion", &adapter, &MirrorOptions::sync(), &())
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(report.failed[0].record, "b");
    assert!(
        report.failed[0].reason.contains("Planned, Live"),
        "{}",
        report.failed[0].reason
    );
    let pages = emu.notion.pages(ds);
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0]["properties"]["stage"]["status"]["name"], "Live");
}

/// A page duplicated in Notion (Duplicate copies the record-id property)
/// and then edited does not take over the record on an incremental run:
/// the oldest page holding an id owns it, the copy arrives as a record of
/// its own under its page id.
#[tokio::test]
async fn a_duplicated_page_never_takes_over_its_record() {
    let b = bound(conformance::schema(), |e| e.control().set_time(T0), |b| b).await;
    let reg = b.registry();
    reg.put(Some("a"), [("name", Value::from("a")), ("port", 80.into())])
        .unwrap();
    b.sync().await;
    let original = b.layout.page_id(&b.emu, "a");
    // A page edited later moves the cursor past the original's minute, so
    // the next run's window holds the copy, not the original.
    b.emu.control().advance(std::time::Duration::from_secs(300));
    b.emu.notion.create_page(
        &b.layout.ds,
        b.layout.record("z", [("name", Some(&Value::from("z")))]),
    );
    b.sync().await;
    b.emu.control().advance(std::time::Duration::from_secs(300));
    let copy = b.emu.notion.create_page(
        &b.layout.ds,
        b.layout.record(
            "a",
            [
                ("name", Some(&Value::from("a"))),
                ("port", Some(&Value::Integer(80))),
            ],
        ),
    );
    b.emu.control().advance(std::time::Duration::from_secs(60));
    b.emu.notion.update_page(
        &copy,
        b.layout.properties([("port", Some(&Value::Integer(9999)))]),
    );
    // A new run (a new process): the page map starts empty.
    let binding = AdapterBinding::new("notion", "services", "notion", &b.db);
    let fresh = NotionAdapter::new(
        binding.table_spec(&conformance::schema()),
        b.emu.options(&b.db),
    )
    .unwrap();
    let report = b
        .replica
        .run_mirror("notion", &fresh, &MirrorOptions::sync(), &())
        .await
        .expect("sync");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        reg.get("a").unwrap().get("port"),
        Some(&Value::Integer(80)),
        "the original keeps the record"
    );
    let copied = reg.get(&copy).expect("the copy is a record of its own");
    assert_eq!(copied.get("port"), Some(&Value::Integer(9999)));
    assert_eq!(reg.list(&Query::all()).len(), 3);
    let page = b.emu.notion.page(&original).unwrap();
    let port = prop_by_id(&page, &b.layout.fields["port"].0).unwrap();
    assert_eq!(
        value_of(port),
        Some(Value::Integer(80)),
        "original untouched"
    );
    assert!(b.sync().await.plan.rows.is_empty());
}

/// A create that got no answer in time (nothing landed) is looked up, then
/// sent again: one page.
#[tokio::test]
async fn a_create_without_an_answer_in_time_makes_one_page() {
    let emu = emulator();
    let (db, ds) = emu.database("name");
    let mut options = emu.options(&db);
    options.timeout = std::time::Duration::from_millis(200);
    let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
    let spec = AdapterBinding::new("n", "services", "notion", &db).table_spec(&schema);
    let adapter = NotionAdapter::new(spec, options).unwrap();
    adapter.prepare(true).await.unwrap();
    emu.control().inject(
        Fault::default()
            .delay(std::time::Duration::from_secs(600))
            .method("POST")
            .path_contains("/v1/pages"),
    );
    let op = RowOp::Create {
        id: "a".into(),
        fields: BTreeMap::from([("name".to_owned(), Value::from("a"))]),
    };
    let results = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        adapter.apply(std::slice::from_ref(&op)),
    )
    .await
    .expect("the adapter stopped waiting")
    .unwrap();
    assert_eq!(results, vec![Ok("a".to_owned())]);
    assert_eq!(emu.notion.pages(&ds).len(), 1);
}

/// A create that landed but was answered with a 5xx, or whose answer was
/// cut off, is found by its record id instead of being sent again.
#[tokio::test]
async fn a_create_that_landed_without_a_usable_answer_is_not_duplicated() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    let reg = b.registry();
    reg.put(Some("a"), [("name", "a")]).unwrap();
    b.emu.control().inject(
        Fault::status(
            502,
            json!({"object": "error", "status": 502, "code": "bad_gateway", "message": "bad gateway"}),
        )
        .after_processing()
        .method("POST")
        .path_contains("/v1/pages"),
    );
    b.sync().await;
    assert_eq!(statuses(&b.emu, 502), 1);
    reg.put(Some("b"), [("name", "b")]).unwrap();
    b.emu.control().inject(
        Fault::default()
            .after_processing()
            .break_body()
            .method("POST")
            .path_contains("/v1/pages"),
    );
    b.sync().await;
    let creates = b.emu.control().requests();
    let creates = creates
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/pages")
        .count();
    assert_eq!(creates, 2, "one create per record");
    let pages = b.emu.notion.pages(&b.layout.ds);
    let mut ids: Vec<String> = pages.iter().map(|p| b.layout.row_id(p)).collect();
    ids.sort();
    assert_eq!(ids, vec!["a", "b"], "each record once");
    assert!(b.sync().await.plan.rows.is_empty());
}

/// A checkbox is never empty: a registry `false` comes back `false`, and a
/// page made in Notion with the box unchecked pulls `false`; a record
/// without a value is not turned into `false` by reading its box back.
#[tokio::test]
async fn an_unchecked_box_reads_as_false() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    let reg = b.registry();
    reg.put(
        Some("off"),
        [("name", Value::from("off")), ("active", false.into())],
    )
    .unwrap();
    reg.put(Some("unset"), [("name", "unset")]).unwrap();
    b.sync().await;
    let page = b.emu.notion.create_page(
        &b.layout.ds,
        b.layout.properties([
            ("name", Some(&Value::from("by hand"))),
            ("active", Some(&Value::Bool(false))),
        ]),
    );
    b.sync().await;
    let fetched = b.adapter.fetch(None).await.unwrap();
    let active = |id: &str| {
        fetched
            .rows
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.fields.get("active").cloned())
    };
    assert_eq!(active("off"), Some(Value::Bool(false)));
    assert_eq!(active(&page), Some(Value::Bool(false)));
    assert_eq!(
        reg.get("off").unwrap().get("active"),
        Some(&Value::Bool(false))
    );
    assert_eq!(
        reg.get(&page).unwrap().get("active"),
        Some(&Value::Bool(false))
    );
    assert_eq!(reg.get("unset").unwrap().get("active"), None, "no echo");
    assert!(b.sync().await.plan.rows.is_empty());
}

/// Notion counts text in UTF-16 units: 1,500 emoji (3,000 units) are sent
/// in pieces Notion accepts, and come back whole.
#[tokio::test]
async fn emoji_text_is_chunked_as_notion_counts_it() {
    let b = bound(conformance::schema(), |_| {}, |b| b).await;
    let text = format!("x{}", "😀".repeat(1500));
    b.registry()
        .put(Some("a"), [("name", Value::from(text.as_str()))])
        .unwrap();
    b.sync().await;
    assert_eq!(b.remote()["a"]["name"], Value::from(text.as_str()));
    let fetched = b.adapter.fetch(None).await.unwrap();
    assert_eq!(fetched.rows[0].fields["name"], Value::from(text.as_str()));
    assert!(b.sync().await.plan.rows.is_empty());
}

/// More people than a page object inlines (25) are read in full through
/// the property endpoint.
#[tokio::test]
async fn a_people_property_with_many_people_is_read_in_full() {
    let emu = emulator();
    let (db, sources) = emu.notion.create_database(
        "Services",
        vec![(
            "Services",
            json!({"name": {"title": {}}, "owners": {"people": {}}, "id": {"rich_text": {}}}),
        )],
    );
    let users: BTreeSet<String> = (0..40)
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    let people: Vec<Json> = users
        .iter()
        .map(|u| json!({"object": "user", "id": u}))
        .collect();
    emu.notion.create_page(
        &sources[0],
        json!({
            "name": {"title": [{"type": "text", "text": {"content": "svc"}}]},
            "owners": {"people": people},
        }),
    );
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text))
        .field(FieldDef::new("owners", FieldKind::MultiSelect));
    let spec = AdapterBinding::new("n", "services", "notion", &db).table_spec(&schema);
    let adapter = NotionAdapter::new(spec, emu.options(&db)).unwrap();
    let fetched = adapter.fetch(None).await.unwrap();
    assert_eq!(fetched.rows.len(), 1);
    assert_eq!(fetched.rows[0].fields["owners"], Value::Set(users));
}

/// The record-id property must be Text (rich_text), not the title.
#[tokio::test]
async fn a_title_as_the_record_id_property_is_refused() {
    let emu = emulator();
    let (db, _) = emu.database("id");
    let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text));
    let spec = AdapterBinding::new("n", "services", "notion", &db).table_spec(&schema);
    let adapter = NotionAdapter::new(spec, emu.options(&db)).unwrap();
    let err = adapter.prepare(true).await.unwrap_err().to_string();
    assert!(err.contains("title") && err.contains("rich_text"), "{err}");
}
