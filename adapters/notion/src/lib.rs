//! The Notion adapter: a registry mirrored in a Notion database, over a thin
//! HTTP client (API version 2025-09-03, where a database holds one or more
//! data sources).
//!
//! - **Where.** The binding's table is the database id; the data source is
//!   discovered from it (`GET /v1/databases/{id}`). A database with several
//!   data sources needs the `data_source` setting (an id or a name).
//! - **Which property.** A mapped column names a property by id or by name
//!   (ids first). [`NotionAdapter::pinned_mapping`] gives the property ids,
//!   so a mapping stored with them survives renames in Notion.
//! - **Row ids.** A dedicated rich-text property (the binding's id column)
//!   holds the registry record id. A page without one (a person created it
//!   in Notion) is known by its page id.
//! - **Reading.** Queries are sorted by a timestamp and split into windows
//!   (`on_or_after` the last timestamp seen), so Notion's cap on the results
//!   of one query never truncates a scan silently; more pages created within
//!   one minute than the cap fail a full fetch loudly. An incremental fetch re-reads
//!   from one minute before the cursor (Notion rounds `last_edited_time`
//!   down to the minute), de-duplicates, and reports pages moved to the
//!   trash since then as deleted; when more pages were edited within one
//!   minute than a query returns (a bulk edit), it reads every page instead.
//!   A page's edit time, for last-write-wins, is the end of its minute: in
//!   the same minute, an edit in Notion wins over one in the registry.
//! - **Writing.** Create (`POST /v1/pages`), update (`PATCH`), delete (move
//!   to the trash). A create for a record id that already has a page updates
//!   that page, so a retried create never duplicates a page. A row whose
//!   relation names a record created in the same batch is written after it.
//! - **Rate limits.** A client-side budget (2.8 requests/s by default),
//!   `Retry-After` honoured (up to a minute) on 429, 503 and 529, jittered
//!   exponential backoff on 409 and 529 (any request) and on
//!   500/502/503/504 (reads and queries only; a create is retried after a
//!   5xx or a lost answer only once a wait and a lookup show it did not
//!   land).
//!
//! # Field types
//!
//! | Registry type | Notion property types | Notes |
//! |---|---|---|
//! | text | title, rich_text, phone_number | text in chunks of at most 2000 characters |
//! | long_text | title, rich_text | chunks of at most 2000 characters, joined on read |
//! | integer | number | beyond ±2^53 cannot be held exactly: the row fails |
//! | decimal | number | more than 15 significant digits cannot be held exactly: the row fails |
//! | bool | checkbox | a checkbox cannot be empty: unchecked reads as `false` and no value writes unchecked; a record without a value is not changed to `false` by reading its unchecked box back ([`Adapter::unset_reads_as`]) |
//! | date | date | `{start: "YYYY-MM-DD"}`; a date with a time set in Notion reads as its day; only a range's start is read, and writing the field replaces the whole date, dropping a range's end |
//! | datetime | date | `{start: RFC 3339}` |
//! | select | select, status | no commas; a status option must already exist |
//! | multi_select | multi_select, relation, people | at most 100 items; options without commas; relation items are record ids, people items user ids |
//! | url | url, rich_text, title | at most 2000 characters |
//! | email | email, rich_text, title | at most 200 characters |
//! | reference | relation (to the same data source), rich_text | record id ↔ page id |
//! | json | rich_text | the compact JSON text |
//!
//! Notion-computed properties (formula, rollup, created/last-edited time and
//! by, unique_id) can be read into any field but never written: mapping a
//! field onto one is refused unless the binding only pulls. Any other pair
//! of field type and property type is refused at prepare/describe, naming
//! both. Empty text and empty lists read as no value.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::Method;
use serde_json::{Value as Json, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Mutex;

use chittysync::{
    Adapter, AdapterError, BoxFuture, ChangeTracking, ColumnSpec, Fetched, FieldKind, RemoteColumn,
    RemoteRow, RemoteTable, RowError, RowOp, RowResult, TableSpec, Value,
};
use chittysync_http::jitter_unit;

const SYSTEM: &str = "notion";
const NOTION_VERSION: &str = "2025-09-03";
/// The most results one query page returns.
const PAGE_SIZE: u32 = 100;
/// The most characters of one rich-text item.
const TEXT_CHUNK: usize = 2000;
/// The most items of a multi-select, relation or people value.
const MAX_ITEMS: usize = 100;
const MAX_URL: usize = 2000;
const MAX_EMAIL: usize = 200;
/// Record ids looked up per query (one `or` of `equals` filters).
const LOOKUP_CHUNK: usize = 50;
/// How far before the cursor an incremental fetch starts re-reading.
const OVERLAP_MS: i64 = 60_000;
/// The longest single backoff wait.
const MAX_BACKOFF_MS: u64 = 60_000;

/// Property types Notion computes: read, never written.
const READ_ONLY: &[&str] = &[
    "formula",
    "rollup",
    "created_time",
    "last_edited_time",
    "created_by",
    "last_edited_by",
    "unique_id",
];

/// How a [`NotionAdapter`] reaches its database. Bindings set these from
/// their settings (named in brackets); the token comes from the binding's
/// secret variable.
#[derive(Clone)]
#[non_exhaustive]
pub struct NotionOptions {
    /// The API's address (`base_url`; default `https://api.notion.com`), for
    /// proxies and emulators.
    pub base_url: String,
    /// The integration token (never logged, stored or shown in an error).
    pub token: String,
    /// The database id (the binding's table).
    pub database_id: String,
    /// The data source, by id or name (`data_source`); needed only when the
    /// database has several.
    pub data_source: Option<String>,
    /// The rich-text property holding each page's record id, by name or id
    /// (the binding's id column).
    pub id_property: String,
    /// The client-side request budget (`requests_per_second`; default 2.8,
    /// below Notion's average of 3).
    pub requests_per_second: f64,
    /// The first retry's wait, doubled on each further retry and jittered
    /// (`retry_base_ms`; default 1000).
    pub retry_base_ms: u64,
    /// Retries of one request (`max_retries`; default 5).
    pub max_retries: u32,
    /// The timeout of one request (`timeout_ms`; default 30 s).
    pub timeout: Duration,
    /// Whether the binding only pulls, which allows mapping fields onto
    /// Notion-computed properties (set from the binding's direction).
    pub pull_only: bool,
}

impl NotionOptions {
    /// Options for `database_id` with `token`: the public API, the id in a
    /// property named `id`, 2.8 requests/s, 5 retries from 1 s, 30 s
    /// timeout, both directions.
    pub fn new(token: impl Into<String>, database_id: impl Into<String>) -> Self {
        NotionOptions {
            base_url: "https://api.notion.com".into(),
            token: token.into(),
            database_id: database_id.into(),
            data_source: None,
            id_property: "id".into(),
            requests_per_second: 2.8,
            retry_base_ms: 1000,
            max_retries: 5,
            timeout: Duration::from_secs(30),
            pull_only: false,
        }
    }
}

impl fmt::Debug for NotionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("NotionOptions")
            .field("base_url", &self.base_url)
            .field("database_id", &self.database_id)
            .field("data_source", &self.data_source)
            .field("id_property", &self.id_property)
            .field("requests_per_second", &self.requests_per_second)
            .field("retry_base_ms", &self.retry_base_ms)
            .field("max_retries", &self.max_retries)
            .field("timeout", &self.timeout)
            .field("pull_only", &self.pull_only)
            .finish_non_exhaustive()
    }
}

/// A Notion data source as an adapter.
pub struct NotionAdapter {
    http: reqwest::Client,
    options: NotionOptions,
    spec: TableSpec,
    limiter: DefaultDirectRateLimiter,
    state: Mutex<State>,
}

impl fmt::Debug for NotionAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotionAdapter")
            .field("database", &self.options.database_id)
            .finish_non_exhaustive()
    }
}

/// A property of the data source.
#[derive(Clone, Debug, PartialEq)]
struct Prop {
    id: String,
    name: String,
    kind: String,
    /// Status options (which the API cannot create).
    status_options: Vec<String>,
    /// The data source a relation points to.
    relation_target: Option<String>,
}

impl Prop {
    fn read_only(&self) -> bool {
        READ_ONLY.contains(&self.kind.as_str())
    }
}

/// The data source as resolved against the spec.
#[derive(Clone, Debug)]
struct Layout {
    data_source_id: String,
    data_source_name: String,
    id_prop: Prop,
    mapped: Vec<(ColumnSpec, Prop)>,
    all: Vec<Prop>,
}

/// What the adapter remembers between calls.
#[derive(Debug, Default)]
struct State {
    layout: Option<Layout>,
    /// Row id (record id, or page id of a page without one) → page id.
    pages: HashMap<String, String>,
    /// Page id → row id.
    rows: HashMap<String, String>,
}

impl State {
    /// Records that `page_id` holds row `row_id`, dropping what either
    /// held before (a page whose row id changed, a row now on another page).
    fn remember(&mut self, row_id: &str, page_id: &str) {
        if let Some(old_row) = self.rows.insert(page_id.to_owned(), row_id.to_owned())
            && old_row != row_id
            && self.pages.get(&old_row).is_some_and(|p| p == page_id)
        {
            self.pages.remove(&old_row);
        }
        if let Some(old_page) = self.pages.insert(row_id.to_owned(), page_id.to_owned())
            && old_page != page_id
            && self.rows.get(&old_page).is_some_and(|r| r == row_id)
        {
            self.rows.remove(&old_page);
        }
    }

    fn forget(&mut self, row_id: &str) {
        if let Some(page) = self.pages.remove(row_id) {
            self.rows.remove(&page);
        }
    }
}

/// More pages than one query returns share one minute of a timestamp.
#[derive(Clone, Debug)]
struct Crowded {
    timestamp: String,
    minute: String,
}

/// An error answer from the API (after any retries).
#[derive(Clone, Debug, PartialEq)]
struct ApiError {
    status: u16,
    code: String,
    message: String,
}

/// Why a request failed.
#[derive(Clone, Debug)]
enum CallError {
    /// The API answered with an error.
    Api(ApiError),
    /// No usable answer (connection, timeout, unreadable body).
    Transport(String),
}

impl CallError {
    /// A per-row error: data errors are final, faults may pass.
    fn row_error(&self, action: &str) -> RowError {
        match self {
            CallError::Api(e) => RowError {
                message: format!(
                    "notion: {action} failed: {} ({} {}){}",
                    e.message,
                    e.status,
                    e.code,
                    hint(e.status)
                ),
                retryable: matches!(e.status, 409 | 429 | 500 | 502 | 503 | 504 | 529),
            },
            CallError::Transport(reason) => RowError {
                message: format!(
                    "notion: {action} failed: {reason}; it may or may not have landed, and the next sync finds out"
                ),
                retryable: true,
            },
        }
    }

    fn reason(&self) -> String {
        match self {
            CallError::Api(e) => {
                format!("{} ({} {}){}", e.message, e.status, e.code, hint(e.status))
            }
            CallError::Transport(reason) => reason.clone(),
        }
    }
}

/// What to do about an error status.
fn hint(status: u16) -> &'static str {
    match status {
        401 => "; check the integration token in the binding's secret variable",
        403 | 404 => {
            "; check the id and that the database is shared with the integration (Connections in Notion)"
        }
        429 => "; Notion kept rate-limiting: lower requests_per_second or sync later",
        500..=599 => "; Notion is having trouble: sync again later",
        _ => "",
    }
}

/// Parses an error body (`{object:"error", status, code, message}`).
fn parse_error(status: u16, body: &str) -> ApiError {
    let json: Json = serde_json::from_str(body).unwrap_or(Json::Null);
    let text = |k: &str| json.get(k).and_then(Json::as_str).map(str::to_owned);
    ApiError {
        status,
        code: text("code").unwrap_or_else(|| "unknown".into()),
        message: text("message").unwrap_or_else(|| {
            let mut b: String = body.chars().take(200).collect();
            if b.is_empty() {
                b = "no error message".into();
            }
            b
        }),
    }
}

/// Whether a failed request may be sent again: 429, 409 and 529 always;
/// 500/502/503/504 only for requests safe to repeat (reads and queries).
fn retryable_status(status: u16, safe: bool) -> bool {
    match status {
        409 | 429 | 529 => true,
        500 | 502 | 503 | 504 => safe,
        _ => false,
    }
}

/// The `key` string of each object in a property value's array (the names
/// of multi-select options, the ids of people and related pages).
fn strings_at<'a>(inner: &'a Json, key: &'a str) -> impl Iterator<Item = String> + 'a {
    inner
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |o| o.get(key).and_then(Json::as_str))
        .map(str::to_owned)
}

/// Whether a status's `Retry-After` is honoured (rate limits and overload).
fn honours_retry_after(status: u16) -> bool {
    matches!(status, 429 | 503 | 529)
}

/// The longest `Retry-After` waited, so one odd header cannot stall a run.
const MAX_RETRY_AFTER_SECS: u64 = 60;

/// The wait before retry `attempt` (0-based): `Retry-After` when given
/// (at most [`MAX_RETRY_AFTER_SECS`]), else `base · 2^attempt` capped at a
/// minute, scaled by a jitter factor in [0.5, 1] (`unit` in [0, 1)).
fn backoff(base_ms: u64, attempt: u32, retry_after: Option<u64>, unit: f64) -> Duration {
    if let Some(secs) = retry_after {
        return Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS));
    }
    let full = base_ms
        .saturating_mul(1u64 << attempt.min(20))
        .min(MAX_BACKOFF_MS);
    Duration::from_millis((full as f64 * (0.5 + 0.5 * unit.clamp(0.0, 1.0))) as u64)
}

/// Parses an RFC 3339 time to ms since the epoch.
fn parse_ms(t: &str) -> Option<i64> {
    OffsetDateTime::parse(t, &Rfc3339)
        .ok()
        .map(|d| (d.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Formats ms since the epoch as RFC 3339 (UTC, milliseconds).
fn format_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(&Rfc3339).unwrap_or_default()
}

/// Where an incremental fetch starts: one minute before the cursor, since
/// Notion rounds edit times down to the minute.
fn window_start(cursor: &str) -> Option<String> {
    parse_ms(cursor).map(|ms| format_ms(ms - OVERLAP_MS))
}

/// The length of text as Notion counts it: UTF-16 code units (an emoji
/// outside the Basic Multilingual Plane counts 2).
fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Splits text into pieces of at most [`TEXT_CHUNK`] UTF-16 units, never
/// inside a character (so never between the halves of a surrogate pair).
fn text_chunks(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let (mut start, mut units) = (0, 0);
    for (at, c) in text.char_indices() {
        if units + c.len_utf16() > TEXT_CHUNK {
            chunks.push(&text[start..at]);
            (start, units) = (at, 0);
        }
        units += c.len_utf16();
    }
    if start < text.len() {
        chunks.push(&text[start..]);
    }
    chunks
}

/// Splits text into rich-text items of at most [`TEXT_CHUNK`] UTF-16 units.
fn rich_text(text: &str) -> Json {
    let items: Vec<Json> = text_chunks(text)
        .into_iter()
        .map(|c| json!({"type": "text", "text": {"content": c}}))
        .collect();
    Json::Array(items)
}

/// Joins rich-text items back into one string.
fn plain_text(items: &Json) -> String {
    items
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| {
                    i.pointer("/text/content")
                        .or_else(|| i.get("plain_text"))
                        .and_then(Json::as_str)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `id` looks like a Notion page id (a UUID, dashed or not).
fn looks_like_page_id(id: &str) -> bool {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    hex.len() == 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && (id.len() == 32 || id.len() == 36)
}

/// Whether a field of type `ft` can live in a property of type `kind`.
fn compatible(ft: FieldKind, kind: &str) -> bool {
    let ok: &[&str] = match ft {
        FieldKind::Text => &["title", "rich_text", "phone_number"],
        FieldKind::LongText => &["title", "rich_text"],
        FieldKind::Integer | FieldKind::Decimal => &["number"],
        FieldKind::Bool => &["checkbox"],
        FieldKind::Date | FieldKind::Datetime => &["date"],
        FieldKind::Select => &["select", "status"],
        FieldKind::MultiSelect => &["multi_select", "relation", "people"],
        FieldKind::Url => &["url", "rich_text", "title"],
        FieldKind::Email => &["email", "rich_text", "title"],
        FieldKind::Reference => &["relation", "rich_text"],
        FieldKind::Json => &["rich_text"],
        // A kind this adapter does not know yet fits no property.
        _ => &[],
    };
    ok.contains(&kind)
}

/// The property type a missing mapped field gets when prepare creates it.
fn created_kind(c: &ColumnSpec, data_source: &str) -> Json {
    let options = |opts: &[String]| -> Json {
        opts.iter()
            .filter(|o| !o.contains(','))
            .map(|o| json!({"name": o}))
            .collect()
    };
    match c.field_type {
        FieldKind::Integer | FieldKind::Decimal => json!({"number": {}}),
        FieldKind::Bool => json!({"checkbox": {}}),
        FieldKind::Date | FieldKind::Datetime => json!({"date": {}}),
        FieldKind::Select => json!({"select": {"options": options(&c.options)}}),
        FieldKind::MultiSelect => json!({"multi_select": {"options": options(&c.options)}}),
        FieldKind::Url => json!({"url": {}}),
        FieldKind::Email => json!({"email": {}}),
        FieldKind::Reference => {
            json!({"relation": {"data_source_id": data_source, "single_property": {}}})
        }
        _ => json!({"rich_text": {}}),
    }
}

/// Parses the `properties` object of a data source.
fn parse_props(ds: &Json) -> Vec<Prop> {
    let mut props: Vec<Prop> = ds
        .get("properties")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(name, p)| {
                    let kind = p
                        .get("type")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let status_options = p
                        .pointer("/status/options")
                        .and_then(Json::as_array)
                        .map(|o| {
                            o.iter()
                                .filter_map(|o| o.get("name").and_then(Json::as_str))
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    let relation_target = p
                        .pointer("/relation/data_source_id")
                        .and_then(Json::as_str)
                        .map(str::to_owned);
                    Prop {
                        id: p
                            .get("id")
                            .and_then(Json::as_str)
                            .unwrap_or(name)
                            .to_owned(),
                        name: p
                            .get("name")
                            .and_then(Json::as_str)
                            .unwrap_or(name)
                            .to_owned(),
                        kind,
                        status_options,
                        relation_target,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    props.sort_by(|a, b| a.name.cmp(&b.name));
    props
}

/// A property by id first, then by name.
fn find_prop<'p>(props: &'p [Prop], key: &str) -> Option<&'p Prop> {
    props
        .iter()
        .find(|p| p.id == key)
        .or_else(|| props.iter().find(|p| p.name == key))
}

/// A value read as text, typed for the field.
fn text_value(ft: FieldKind, s: String) -> Value {
    match ft {
        FieldKind::Integer => s
            .trim()
            .parse()
            .map(Value::Integer)
            .unwrap_or(Value::Text(s)),
        FieldKind::Decimal if s.trim().parse::<f64>().is_ok() => {
            Value::Decimal(s.trim().to_owned())
        }
        FieldKind::Bool => match s.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::Text(s),
        },
        FieldKind::Json => Value::Json(s),
        _ => Value::Text(s),
    }
}

/// A number read, typed for the field.
fn number_value(ft: FieldKind, n: &serde_json::Number) -> Value {
    let text = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i.to_string(),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
        (None, Some(f)) => format!("{f}"),
        _ => n.to_string(),
    };
    match ft {
        FieldKind::Integer => text
            .parse()
            .map(Value::Integer)
            .unwrap_or(Value::Decimal(text)),
        FieldKind::Decimal => Value::Decimal(text),
        _ => Value::Text(text),
    }
}

/// A scalar JSON value (from a formula or rollup), typed for the field.
fn scalar_value(ft: FieldKind, v: &Json) -> Option<Value> {
    match v {
        Json::Null => None,
        Json::String(s) if s.is_empty() => None,
        Json::String(s) => Some(text_value(ft, s.clone())),
        Json::Number(n) => Some(number_value(ft, n)),
        Json::Bool(b) => Some(if ft == FieldKind::Bool {
            Value::Bool(*b)
        } else {
            Value::Text(b.to_string())
        }),
        Json::Object(o) if o.contains_key("start") => scalar_value(ft, &o["start"]),
        other => Some(Value::Json(other.to_string())),
    }
}

/// One property value read from a page, before relation ids are turned
/// into record ids.
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Ready(Value),
    /// Related page ids; `has_more` when the page object held only some.
    Pages {
        ids: Vec<String>,
        has_more: bool,
    },
    /// People the page object held only some of: read them all.
    People,
}

/// Reads one property value of a page for a field.
fn read_cell(ft: FieldKind, pv: &Json) -> Option<Cell> {
    let kind = pv.get("type").and_then(Json::as_str).unwrap_or("");
    let inner = pv.get(kind).unwrap_or(&Json::Null);
    let ready = |v: Value| Some(Cell::Ready(v));
    match kind {
        "title" | "rich_text" => {
            let text = plain_text(inner);
            if text.is_empty() {
                None
            } else {
                ready(text_value(ft, text))
            }
        }
        "number" => match inner {
            Json::Number(n) => ready(number_value(ft, n)),
            _ => None,
        },
        // A checkbox is never empty: unchecked is false.
        "checkbox" => inner.as_bool().and_then(|b| {
            ready(if ft == FieldKind::Bool {
                Value::Bool(b)
            } else {
                Value::Text(b.to_string())
            })
        }),
        "select" | "status" => inner
            .get("name")
            .and_then(Json::as_str)
            .and_then(|n| ready(text_value(ft, n.to_owned()))),
        "multi_select" => {
            let names: BTreeSet<String> = strings_at(inner, "name").collect();
            if names.is_empty() {
                None
            } else {
                ready(Value::Set(names))
            }
        }
        "people" => {
            let ids: BTreeSet<String> = strings_at(inner, "id").collect();
            let has_more = pv.get("has_more").and_then(Json::as_bool).unwrap_or(false);
            if ids.is_empty() {
                None
            } else if has_more {
                Some(Cell::People)
            } else {
                ready(Value::Set(ids))
            }
        }
        "relation" => {
            let ids: Vec<String> = strings_at(inner, "id").collect();
            let has_more = pv.get("has_more").and_then(Json::as_bool).unwrap_or(false);
            if ids.is_empty() {
                None
            } else {
                Some(Cell::Pages { ids, has_more })
            }
        }
        // A date field takes the day of a date with a time (people can
        // add a time in Notion); only the start of a range is read.
        "date" => inner.get("start").and_then(Json::as_str).map(|s| {
            let s = match (ft, s.split_once('T')) {
                (FieldKind::Date, Some((day, _))) => day,
                _ => s,
            };
            Cell::Ready(Value::Text(s.to_owned()))
        }),
        "url" | "email" | "phone_number" | "created_time" | "last_edited_time" => inner
            .as_str()
            .filter(|s| !s.is_empty())
            .and_then(|s| ready(text_value(ft, s.to_owned()))),
        "created_by" | "last_edited_by" => inner
            .get("id")
            .and_then(Json::as_str)
            .map(|s| Cell::Ready(Value::Text(s.to_owned()))),
        "unique_id" => {
            let number = inner.get("number").and_then(Json::as_i64)?;
            match inner.get("prefix").and_then(Json::as_str) {
                Some(p) if !p.is_empty() => ready(Value::Text(format!("{p}-{number}"))),
                _ => ready(text_value(ft, number.to_string())),
            }
        }
        "formula" => {
            let t = inner.get("type").and_then(Json::as_str).unwrap_or("");
            scalar_value(ft, inner.get(t).unwrap_or(&Json::Null)).map(Cell::Ready)
        }
        "rollup" => {
            let t = inner.get("type").and_then(Json::as_str).unwrap_or("");
            scalar_value(ft, inner.get(t).unwrap_or(&Json::Null)).map(Cell::Ready)
        }
        _ => None,
    }
}

/// Significant digits of a decimal's text.
fn significant_digits(s: &str) -> usize {
    let digits: String = s
        .trim_start_matches(['-', '+'])
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let mut d = digits.trim_start_matches('0');
    if s.contains('.') {
        d = d.trim_end_matches('0');
    }
    d.len()
}

/// What a value is written as, for one property. `pages` turns record ids
/// into page ids (for relations); a missing target is an error the caller
/// looked up beforehand.
fn write_value(
    c: &ColumnSpec,
    prop: &Prop,
    value: Option<&Value>,
    pages: &HashMap<String, String>,
) -> Result<Json, RowError> {
    let bad = |message: String| RowError {
        message: format!(
            "field '{}' (Notion property '{}'): {message}",
            c.field, prop.name
        ),
        retryable: false,
    };
    let text = value.map(ToString::to_string);
    let items = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::Set(s)) => s.iter().cloned().collect(),
            Some(Value::Json(j)) => serde_json::from_str::<Vec<String>>(j).unwrap_or_default(),
            Some(other) => vec![other.to_string()],
            None => Vec::new(),
        }
    };
    Ok(match prop.kind.as_str() {
        "title" | "rich_text" => {
            let text = text.unwrap_or_default();
            if text_chunks(&text).len() > MAX_ITEMS {
                return Err(bad(format!(
                    "{} characters (UTF-16 units, as Notion counts), more than Notion holds in one property ({} in {MAX_ITEMS} pieces of {TEXT_CHUNK}); shorten the text",
                    utf16_len(&text),
                    TEXT_CHUNK * MAX_ITEMS
                )));
            }
            json!({prop.kind.as_str(): rich_text(&text)})
        }
        "number" => match value {
            None => json!({"number": null}),
            Some(Value::Integer(i)) => {
                if i.unsigned_abs() > (1u64 << 53) {
                    return Err(bad(format!(
                        "{i} is beyond what a Notion number holds exactly (±2^53)"
                    )));
                }
                json!({"number": i})
            }
            Some(v) => {
                let s = v.to_string();
                let f: f64 = s
                    .parse()
                    .map_err(|_| bad(format!("'{s}' is not a number")))?;
                if significant_digits(&s) > 15 {
                    return Err(bad(format!(
                        "{s} has more than 15 significant digits, more than a Notion number holds exactly"
                    )));
                }
                json!({"number": f})
            }
        },
        "checkbox" => json!({"checkbox": matches!(value, Some(Value::Bool(true)))}),
        "select" => match text {
            None => json!({"select": null}),
            Some(name) if name.contains(',') => {
                return Err(bad(format!(
                    "the option '{name}' has a comma, which Notion does not allow in option names"
                )));
            }
            Some(name) => json!({"select": {"name": name}}),
        },
        "status" => match text {
            None => json!({"status": null}),
            Some(name) if prop.status_options.contains(&name) => {
                json!({"status": {"name": name}})
            }
            Some(name) => {
                return Err(bad(format!(
                    "'{name}' is not an option of this status property (options: {}); the API cannot add status options, add it in Notion",
                    prop.status_options.join(", ")
                )));
            }
        },
        "multi_select" => {
            let names = items(value);
            if names.len() > MAX_ITEMS {
                return Err(bad(format!(
                    "{} items, more than Notion's limit of {MAX_ITEMS}",
                    names.len()
                )));
            }
            if let Some(n) = names.iter().find(|n| n.contains(',')) {
                return Err(bad(format!(
                    "the option '{n}' has a comma, which Notion does not allow in option names"
                )));
            }
            let names: Vec<Json> = names.iter().map(|n| json!({"name": n})).collect();
            json!({"multi_select": names})
        }
        "people" => {
            let ids = items(value);
            if ids.len() > MAX_ITEMS {
                return Err(bad(format!(
                    "{} people, more than Notion's limit of {MAX_ITEMS}",
                    ids.len()
                )));
            }
            let people: Vec<Json> = ids
                .iter()
                .map(|id| json!({"object": "user", "id": id}))
                .collect();
            json!({"people": people})
        }
        "relation" => {
            let ids = items(value);
            if ids.len() > MAX_ITEMS {
                return Err(bad(format!(
                    "{} related records, more than Notion's limit of {MAX_ITEMS}",
                    ids.len()
                )));
            }
            let mut related = Vec::new();
            for id in &ids {
                // A page made by hand is known by its page id.
                let by_page_id = looks_like_page_id(id).then(|| id.clone());
                let page = pages.get(id).or(by_page_id.as_ref()).ok_or_else(|| RowError {
                    message: format!(
                        "field '{}': the referenced record '{id}' has no page in Notion yet; it is written once that record is",
                        c.field
                    ),
                    retryable: true,
                })?;
                related.push(json!({"id": page}));
            }
            json!({"relation": related})
        }
        "date" => match text {
            None => json!({"date": null}),
            Some(start) => json!({"date": {"start": start}}),
        },
        "url" | "email" | "phone_number" => {
            let limit = if prop.kind == "url" {
                MAX_URL
            } else {
                MAX_EMAIL
            };
            match text {
                Some(t) if utf16_len(&t) > limit => {
                    return Err(bad(format!(
                        "{} characters (UTF-16 units, as Notion counts), more than Notion's limit of {limit}; shorten it",
                        utf16_len(&t)
                    )));
                }
                t => json!({prop.kind.as_str(): t}),
            }
        }
        other => {
            return Err(bad(format!("a {other} property cannot be written")));
        }
    })
}

impl NotionAdapter {
    /// An adapter on the database in `options`, mirroring the fields of
    /// `spec` (each [`ColumnSpec::column`] is a property id or name; the
    /// record ids live in [`NotionOptions::id_property`], not in
    /// `spec.id_column`). Nothing is requested until the first call.
    pub fn new(spec: TableSpec, options: NotionOptions) -> Result<Self, AdapterError> {
        if options.token.trim().is_empty() {
            return Err(AdapterError::Config(
                "the Notion integration token is empty; put it in the variable named by --secret-env".into(),
            ));
        }
        if options.database_id.trim().is_empty() {
            return Err(AdapterError::Config(
                "give the Notion database id as the binding's table".into(),
            ));
        }
        if !(options.requests_per_second.is_finite() && options.requests_per_second > 0.0) {
            return Err(AdapterError::Config(
                "requests_per_second must be a positive number".into(),
            ));
        }
        let period = Duration::from_secs_f64(1.0 / options.requests_per_second);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::MIN);
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| AdapterError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(NotionAdapter {
            http,
            spec,
            limiter: RateLimiter::direct(quota),
            state: Mutex::new(State::default()),
            options,
        })
    }

    /// An adapter for a stored binding: the database is the binding's
    /// table, the id property its id column, the token read from its secret
    /// variable; settings `base_url`, `data_source`, `requests_per_second`,
    /// `retry_base_ms`, `max_retries` and `timeout_ms` as in
    /// [`NotionOptions`].
    pub fn for_binding(
        binding: &chittysync::AdapterBinding,
        schema: &chittysync::Schema,
    ) -> Result<Self, chittysync::MirrorError> {
        let wrap = |source| chittysync::MirrorError::Adapter {
            binding: binding.name.clone(),
            source,
        };
        let token = binding.secret()?.ok_or_else(|| {
            wrap(AdapterError::Config(format!(
                "binding '{}' has no Notion token: give --secret-env VAR, naming the environment variable that holds the integration token",
                binding.name
            )))
        })?;
        let mut options = NotionOptions::new(token, binding.target.clone());
        options.id_property = binding.id_column.clone();
        options.pull_only = !binding.direction.pushes();
        let s = &binding.settings;
        if let Some(url) = s.get("base_url") {
            options.base_url = url.trim_end_matches('/').to_owned();
        }
        options.data_source = s.get("data_source").cloned();
        let number = |key: &str| -> Result<Option<f64>, chittysync::MirrorError> {
            s.get(key)
                .map(|v| {
                    v.parse::<f64>().map_err(|_| {
                        wrap(AdapterError::Config(format!(
                            "binding '{}': setting {key} = '{v}' is not a number",
                            binding.name
                        )))
                    })
                })
                .transpose()
        };
        if let Some(rps) = number("requests_per_second")? {
            options.requests_per_second = rps;
        }
        if let Some(ms) = number("retry_base_ms")? {
            options.retry_base_ms = ms.max(0.0) as u64;
        }
        if let Some(n) = number("max_retries")? {
            options.max_retries = n.max(0.0) as u32;
        }
        if let Some(ms) = number("timeout_ms")? {
            if !(ms.is_finite() && ms >= 1.0) {
                return Err(wrap(AdapterError::Config(format!(
                    "binding '{}': setting timeout_ms = {ms} must be a finite number of milliseconds, at least 1 (e.g. 30000)",
                    binding.name
                ))));
            }
            options.timeout = Duration::from_millis(ms as u64);
        }
        NotionAdapter::new(binding.table_spec(schema), options).map_err(wrap)
    }

    /// Registry field → property id of every mapped field. Stored as the
    /// binding's mapping, it keeps the binding working when properties are
    /// renamed in Notion.
    pub async fn pinned_mapping(&self) -> Result<BTreeMap<String, String>, AdapterError> {
        let layout = self.layout(false, false).await?;
        Ok(layout
            .mapped
            .iter()
            .map(|(c, p)| (c.field.clone(), p.id.clone()))
            .collect())
    }

    /// The id of the record-id property. Stored as the binding's id column,
    /// it keeps the binding working when that property is renamed.
    pub async fn pinned_id_property(&self) -> Result<String, AdapterError> {
        Ok(self.layout(false, false).await?.id_prop.id)
    }

    fn request_error(&self, action: &str, e: &CallError) -> AdapterError {
        AdapterError::Request {
            system: SYSTEM.into(),
            table: self.options.database_id.clone(),
            action: action.to_owned(),
            reason: e.reason(),
        }
    }

    fn mismatch(&self, reason: String) -> AdapterError {
        AdapterError::Mismatch {
            system: SYSTEM.into(),
            table: self.options.database_id.clone(),
            reason,
        }
    }

    /// One request, throttled and retried. `safe`: whether a 5xx or a lost
    /// connection may be retried (reads and queries).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Json>,
        safe: bool,
    ) -> Result<Json, CallError> {
        let url = format!("{}{path}", self.options.base_url.trim_end_matches('/'));
        let mut attempt = 0;
        loop {
            self.limiter.until_ready().await;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.options.token)
                .header("Notion-Version", NOTION_VERSION);
            if let Some(body) = body {
                request = request.json(body);
            }
            let failure = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    let text = response.text().await;
                    match text {
                        Ok(text) if (200..300).contains(&status) => {
                            return serde_json::from_str(&text).map_err(|e| {
                                CallError::Transport(format!("the answer is not JSON ({e})"))
                            });
                        }
                        Ok(text) => {
                            let error = parse_error(status, &text);
                            if !retryable_status(status, safe) {
                                return Err(CallError::Api(error));
                            }
                            (
                                CallError::Api(error),
                                retry_after.filter(|_| honours_retry_after(status)),
                            )
                        }
                        Err(e) => {
                            let failure =
                                CallError::Transport(format!("reading the answer failed ({e})"));
                            // The request was served: sending it again
                            // could do it twice.
                            if !safe {
                                return Err(failure);
                            }
                            (failure, None)
                        }
                    }
                }
                Err(e) => {
                    let what = if e.is_timeout() {
                        format!("no answer within {:?}", self.options.timeout)
                    } else {
                        // The address once, not reqwest's full URL per error.
                        format!(
                            "could not reach {} ({})",
                            self.options.base_url,
                            e.without_url()
                        )
                    };
                    let failure = CallError::Transport(what);
                    if !safe {
                        return Err(failure);
                    }
                    (failure, None)
                }
            };
            if attempt >= self.options.max_retries {
                return Err(failure.0);
            }
            let wait = backoff(
                self.options.retry_base_ms,
                attempt,
                failure.1,
                jitter_unit(),
            );
            tracing::debug!(
                method = %method,
                path,
                attempt,
                wait_ms = wait.as_millis() as u64,
                reason = %failure.0.reason(),
                "notion request retried"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The data source and its properties, checked against the spec.
    /// `create` adds a missing id property and missing mapped properties.
    /// Cached after the first success unless `refresh`.
    async fn layout(&self, create: bool, refresh: bool) -> Result<Layout, AdapterError> {
        if !refresh && let Some(layout) = &self.state.lock().await.layout {
            return Ok(layout.clone());
        }
        let db = &self.options.database_id;
        let database = self
            .call(Method::GET, &format!("/v1/databases/{db}"), None, true)
            .await
            .map_err(|e| self.request_error("reading the database", &e))?;
        let sources: Vec<(String, String)> = database
            .get("data_sources")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| {
                        let id = d.get("id")?.as_str()?.to_owned();
                        let name = d
                            .get("name")
                            .and_then(Json::as_str)
                            .unwrap_or("")
                            .to_owned();
                        Some((id, name))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let listed = || {
            sources
                .iter()
                .map(|(id, name)| format!("'{name}' ({id})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (ds_id, ds_name) = match &self.options.data_source {
            Some(want) => sources
                .iter()
                .find(|(id, _)| id == want || id.replace('-', "") == want.replace('-', ""))
                .or_else(|| sources.iter().find(|(_, name)| name == want))
                .cloned()
                .ok_or_else(|| {
                    self.mismatch(format!(
                        "the database has no data source '{want}'; its data sources: {}",
                        listed()
                    ))
                })?,
            None => match sources.as_slice() {
                [one] => one.clone(),
                [] => return Err(self.mismatch("the database has no data source".into())),
                _ => {
                    return Err(self.mismatch(format!(
                        "the database has several data sources ({}); choose one with the setting data_source=ID or NAME",
                        listed()
                    )));
                }
            },
        };
        let mut props = self.read_props(&ds_id).await?;
        if create {
            let mut add = serde_json::Map::new();
            if find_prop(&props, &self.options.id_property).is_none() {
                add.insert(self.options.id_property.clone(), json!({"rich_text": {}}));
            }
            for c in &self.spec.columns {
                if find_prop(&props, &c.column).is_none() && !add.contains_key(&c.column) {
                    add.insert(c.column.clone(), created_kind(c, &ds_id));
                }
            }
            if !add.is_empty() {
                self.call(
                    Method::PATCH,
                    &format!("/v1/data_sources/{ds_id}"),
                    Some(&json!({"properties": add})),
                    false,
                )
                .await
                .map_err(|e| self.request_error("adding properties to the data source", &e))?;
                props = self.read_props(&ds_id).await?;
            }
        }
        let id_prop = find_prop(&props, &self.options.id_property)
            .cloned()
            .ok_or_else(|| {
                self.mismatch(format!(
                    "data source '{ds_name}' has no property '{}' for the record ids; add a Text (rich_text) property named '{}' in Notion, or bind with --create to add it",
                    self.options.id_property, self.options.id_property
                ))
            })?;
        if id_prop.kind != "rich_text" {
            return Err(self.mismatch(format!(
                "the record-id property '{}' is a {} property; it must be Text (rich_text)",
                id_prop.name, id_prop.kind
            )));
        }
        let mut mapped = Vec::new();
        let mut problems = Vec::new();
        for c in &self.spec.columns {
            let Some(p) = find_prop(&props, &c.column) else {
                problems.push(format!(
                    "field '{}' maps to property '{}', which data source '{ds_name}' does not have; add a {} property or map the field to another property (--map FIELD=PROPERTY)",
                    c.field,
                    c.column,
                    created_kind(c, &ds_id)
                        .as_object()
                        .and_then(|o| o.keys().next().cloned())
                        .unwrap_or_default()
                ));
                continue;
            };
            if p.read_only() {
                if !self.options.pull_only {
                    problems.push(format!(
                        "field '{}' maps to property '{}', a {} property Notion computes and nobody can write; bind with --direction pull or map the field to another property",
                        c.field, p.name, p.kind
                    ));
                    continue;
                }
            } else if !compatible(c.field_type, &p.kind) {
                problems.push(format!(
                    "field '{}' ({}) cannot live in property '{}', a {} property; map it to a property of a fitting type",
                    c.field, c.field_type, p.name, p.kind
                ));
                continue;
            } else if p.kind == "relation"
                && c.field_type == FieldKind::Reference
                && p.relation_target.as_deref().is_some_and(|t| t != ds_id)
            {
                problems.push(format!(
                    "field '{}' (reference) maps to relation '{}', which points to another data source; a reference needs a relation to this data source",
                    c.field, p.name
                ));
                continue;
            }
            mapped.push((c.clone(), p.clone()));
        }
        if !problems.is_empty() {
            return Err(self.mismatch(problems.join("; ")));
        }
        let layout = Layout {
            data_source_id: ds_id,
            data_source_name: ds_name,
            id_prop,
            mapped,
            all: props,
        };
        self.state.lock().await.layout = Some(layout.clone());
        Ok(layout)
    }

    async fn read_props(&self, ds: &str) -> Result<Vec<Prop>, AdapterError> {
        let source = self
            .call(Method::GET, &format!("/v1/data_sources/{ds}"), None, true)
            .await
            .map_err(|e| self.request_error("reading the data source's schema", &e))?;
        Ok(parse_props(&source))
    }

    fn remote_table(&self, layout: &Layout) -> RemoteTable {
        RemoteTable {
            name: format!("{} ({})", layout.data_source_name, layout.data_source_id),
            columns: layout
                .all
                .iter()
                .map(|p| RemoteColumn {
                    name: p.name.clone(),
                    type_name: p.kind.clone(),
                })
                .collect(),
            change_tracking: ChangeTracking::Incremental,
        }
    }

    /// Every page of one query, following cursors. Returns the pages and
    /// whether Notion stopped at its result cap.
    async fn query_all(&self, ds: &str, body: &Json) -> Result<(Vec<Json>, bool), AdapterError> {
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        let mut capped = false;
        loop {
            let mut body = body.clone();
            body["page_size"] = json!(PAGE_SIZE);
            if let Some(c) = &cursor {
                body["start_cursor"] = json!(c);
            }
            let answer = self
                .call(
                    Method::POST,
                    &format!("/v1/data_sources/{ds}/query"),
                    Some(&body),
                    true,
                )
                .await
                .map_err(|e| self.request_error("querying pages", &e))?;
            if let Some(results) = answer.get("results").and_then(Json::as_array) {
                pages.extend(results.iter().cloned());
            }
            let incomplete = answer
                .pointer("/request_status/type")
                .and_then(Json::as_str)
                .is_some_and(|t| t == "incomplete");
            let has_more = answer
                .get("has_more")
                .and_then(Json::as_bool)
                .unwrap_or(false);
            cursor = answer
                .get("next_cursor")
                .and_then(Json::as_str)
                .map(str::to_owned);
            // Notion marks every page of a capped query; the last one also
            // says has_more: false.
            capped |= incomplete;
            if !has_more || cursor.is_none() {
                return Ok((pages, capped));
            }
        }
    }

    /// Every page (live, or in the trash when `trash`) whose `timestamp`
    /// (`created_time` or `last_edited_time`) is on or after `from`, split
    /// into windows so the result cap never truncates; de-duplicated by page
    /// id, in timestamp order. `Err(Crowded)` when more pages than the
    /// cap share one minute, so windows cannot split them.
    async fn scan(
        &self,
        ds: &str,
        timestamp: &str,
        from: Option<String>,
        trash: bool,
    ) -> Result<Result<Vec<Json>, Crowded>, AdapterError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut start = from;
        loop {
            let mut body = json!({"sorts": [{"timestamp": timestamp, "direction": "ascending"}]});
            if let Some(t) = &start {
                body["filter"] = json!({"timestamp": timestamp, timestamp: {"on_or_after": t}});
            }
            if trash {
                body["in_trash"] = json!(true);
            }
            let (pages, capped) = self.query_all(ds, &body).await?;
            let last = pages
                .last()
                .and_then(|p| p.get(timestamp))
                .and_then(Json::as_str)
                .map(str::to_owned);
            for page in pages {
                let id = page
                    .get("id")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_owned();
                if seen.insert(id) {
                    out.push(page);
                }
            }
            if !capped {
                return Ok(Ok(out));
            }
            match last {
                Some(last) if Some(&last) != start.as_ref() => start = Some(last),
                _ => {
                    return Ok(Err(Crowded {
                        timestamp: timestamp.to_owned(),
                        minute: start.unwrap_or_default(),
                    }));
                }
            }
        }
    }

    /// The row id of a page: its record id, or its page id when it has none
    /// (or when another page already holds that record id).
    fn row_id(layout: &Layout, page: &Json, state: &State) -> (String, String) {
        let page_id = page
            .get("id")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned();
        let id = match Self::record_id(layout, page) {
            Some(r) if state.pages.get(&r).is_none_or(|p| *p == page_id) => r,
            _ => page_id.clone(),
        };
        (id, page_id)
    }

    /// The record id a page's id property holds, if any.
    fn record_id(layout: &Layout, page: &Json) -> Option<String> {
        page.get("properties")
            .and_then(Json::as_object)
            .and_then(|props| {
                props
                    .values()
                    .find(|v| v.get("id").and_then(Json::as_str) == Some(&layout.id_prop.id))
            })
            .map(|v| {
                plain_text(
                    v.get(v["type"].as_str().unwrap_or(""))
                        .unwrap_or(&Json::Null),
                )
            })
            .filter(|s| !s.is_empty())
    }

    /// The ids in a relation or people property (`kind`) that the page
    /// object held only partly, page by page.
    async fn property_items(
        &self,
        page: &str,
        prop: &str,
        kind: &str,
    ) -> Result<Vec<String>, AdapterError> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/pages/{page}/properties/{prop}?page_size=100");
            if let Some(c) = &cursor {
                path.push_str(&format!("&start_cursor={c}"));
            }
            let answer = self
                .call(Method::GET, &path, None, true)
                .await
                .map_err(|e| self.request_error(&format!("reading a {kind} property"), &e))?;
            let pointer = format!("/{kind}/id");
            if let Some(results) = answer.get("results").and_then(Json::as_array) {
                ids.extend(
                    results
                        .iter()
                        .filter_map(|r| r.pointer(&pointer).and_then(Json::as_str))
                        .map(str::to_owned),
                );
            }
            cursor = answer
                .get("next_cursor")
                .and_then(Json::as_str)
                .map(str::to_owned);
            if !answer
                .get("has_more")
                .and_then(Json::as_bool)
                .unwrap_or(false)
                || cursor.is_none()
            {
                return Ok(ids);
            }
        }
    }

    /// Turns pages into rows, remembering their ids; related page ids are
    /// turned into record ids (pages not seen yet are read).
    async fn rows_of(
        &self,
        layout: &Layout,
        pages: &[Json],
    ) -> Result<Vec<RemoteRow>, AdapterError> {
        let mut raw = Vec::new();
        {
            let mut state = self.state.lock().await;
            for page in pages {
                let (id, page_id) = Self::row_id(layout, page, &state);
                state.remember(&id, &page_id);
                let by_id: HashMap<&str, &Json> = page
                    .get("properties")
                    .and_then(Json::as_object)
                    .map(|m| {
                        m.values()
                            .filter_map(|v| Some((v.get("id")?.as_str()?, v)))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut cells = BTreeMap::new();
                for (c, p) in &layout.mapped {
                    if let Some(cell) = by_id
                        .get(p.id.as_str())
                        .and_then(|v| read_cell(c.field_type, v))
                    {
                        cells.insert(c.field.clone(), (cell, p.id.clone()));
                    }
                }
                let modified_at = page
                    .get("last_edited_time")
                    .and_then(Json::as_str)
                    .and_then(parse_ms)
                    // Notion rounds down to the minute: the edit happened
                    // within the minute, counted at its end.
                    .map(|ms| ms + OVERLAP_MS - 1);
                raw.push((id, page_id, cells, modified_at));
            }
        }
        let mut rows = Vec::with_capacity(raw.len());
        for (id, page_id, cells, modified_at) in raw {
            let mut fields = BTreeMap::new();
            for (field, (cell, prop_id)) in cells {
                let value = match cell {
                    Cell::Ready(v) => v,
                    Cell::People => Value::Set(
                        self.property_items(&page_id, &prop_id, "people")
                            .await?
                            .into_iter()
                            .collect(),
                    ),
                    Cell::Pages { mut ids, has_more } => {
                        if has_more {
                            ids = self.property_items(&page_id, &prop_id, "relation").await?;
                        }
                        let mut records = Vec::new();
                        for page in ids {
                            records.push(self.record_of_page(layout, &page).await?);
                        }
                        let ft = layout
                            .mapped
                            .iter()
                            .find(|(c, _)| c.field == field)
                            .map(|(c, _)| c.field_type);
                        match (ft, records.as_slice()) {
                            (Some(FieldKind::Reference), [one]) => Value::Text(one.clone()),
                            _ => Value::Set(records.into_iter().collect()),
                        }
                    }
                };
                fields.insert(field, value);
            }
            rows.push(RemoteRow::new(id, fields).modified_at(modified_at));
        }
        Ok(rows)
    }

    /// The row id of a related page, reading the page if not seen yet.
    async fn record_of_page(&self, layout: &Layout, page: &str) -> Result<String, AdapterError> {
        if let Some(id) = self.state.lock().await.rows.get(page) {
            return Ok(id.clone());
        }
        let json = self
            .call(Method::GET, &format!("/v1/pages/{page}"), None, true)
            .await
            .map_err(|e| self.request_error("reading a related page", &e))?;
        let mut state = self.state.lock().await;
        let (id, page_id) = Self::row_id(layout, &json, &state);
        state.remember(&id, &page_id);
        Ok(id)
    }

    async fn fetch_now(&self, since: Option<&str>) -> Result<Fetched, AdapterError> {
        let layout = self.layout(false, false).await?;
        let ds = &layout.data_source_id;
        let mut changed = None;
        if let Some(from) = since.and_then(window_start) {
            let live = self
                .scan(ds, "last_edited_time", Some(from.clone()), false)
                .await?;
            let trashed = self.scan(ds, "last_edited_time", Some(from), true).await?;
            match (live, trashed) {
                (Ok(live), Ok(trashed)) => changed = Some((live, trashed)),
                // More edits in one minute than one query returns (a bulk
                // edit in Notion): read everything instead.
                (Err(crowded), _) | (_, Err(crowded)) => tracing::info!(
                    minute = %crowded.minute,
                    "more pages edited in one minute than one Notion query returns; reading every page"
                ),
            }
        }
        let (live, trashed, complete) = match changed {
            Some((live, trashed)) => (live, trashed, false),
            None => {
                let live = self
                    .scan(ds, "created_time", None, false)
                    .await?
                    .map_err(|crowded| AdapterError::Request {
                        system: SYSTEM.into(),
                        table: self.options.database_id.clone(),
                        action: "reading every page".into(),
                        reason: format!(
                            "more pages share one {} minute ({}) than Notion returns for one query, so they cannot all be read; nothing was synced. Split the data source or contact Notion support",
                            crowded.timestamp, crowded.minute
                        ),
                    })?;
                (live, Vec::new(), true)
            }
        };
        let in_trash = |p: &Json| p.get("in_trash").and_then(Json::as_bool).unwrap_or(false);
        let live: Vec<Json> = live.into_iter().filter(|p| !in_trash(p)).collect();
        let trashed: Vec<Json> = trashed.into_iter().filter(in_trash).collect();
        let mut newest = since.and_then(parse_ms);
        for p in live.iter().chain(&trashed) {
            if let Some(ms) = p
                .get("last_edited_time")
                .and_then(Json::as_str)
                .and_then(parse_ms)
            {
                newest = Some(newest.map_or(ms, |n| n.max(ms)));
            }
        }
        if complete {
            // Every live page is here: forget pages that are gone.
            let mut state = self.state.lock().await;
            state.pages.clear();
            state.rows.clear();
        }
        if !complete {
            // The page map may not know these record ids yet (it starts
            // empty each run): find their owners first, so a copy of a
            // page (Notion's Duplicate copies the id property) never takes
            // over the record; the oldest page holding an id owns it.
            let ids: BTreeSet<String> = live
                .iter()
                .chain(&trashed)
                .filter_map(|p| Self::record_id(&layout, p))
                .collect();
            self.lookup(&layout, ids).await?;
        }
        let rows = self.rows_of(&layout, &live).await?;
        let live_ids: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let mut deleted = Vec::new();
        {
            let mut state = self.state.lock().await;
            for page in &trashed {
                let (id, _) = Self::row_id(&layout, page, &state);
                if !live_ids.contains(id.as_str()) {
                    state.forget(&id);
                    deleted.push(id);
                }
            }
        }
        Ok(Fetched {
            rows,
            deleted,
            complete,
            cursor: newest.map(format_ms),
        })
    }

    /// Finds the pages of record ids not yet known, one query per chunk.
    async fn lookup(&self, layout: &Layout, ids: BTreeSet<String>) -> Result<(), AdapterError> {
        let wanted: Vec<String> = {
            let state = self.state.lock().await;
            ids.into_iter()
                .filter(|id| !state.pages.contains_key(id))
                .collect()
        };
        let kind = layout.id_prop.kind.clone();
        for chunk in wanted.chunks(LOOKUP_CHUNK) {
            let any: Vec<Json> = chunk
                .iter()
                .map(|id| json!({"property": layout.id_prop.id, kind.as_str(): {"equals": id}}))
                .collect();
            let body = json!({
                "filter": {"or": any},
                "sorts": [{"timestamp": "created_time", "direction": "ascending"}],
            });
            let (pages, _) = self.query_all(&layout.data_source_id, &body).await?;
            let mut state = self.state.lock().await;
            for page in &pages {
                if page
                    .get("in_trash")
                    .and_then(Json::as_bool)
                    .unwrap_or(false)
                {
                    continue;
                }
                let (id, page_id) = Self::row_id(layout, page, &state);
                if !state.pages.contains_key(&id) {
                    state.remember(&id, &page_id);
                }
            }
        }
        Ok(())
    }

    /// The properties of a write; `all` also clears unmapped-to nulls (a
    /// whole-row write), else only the given fields.
    fn properties(
        layout: &Layout,
        fields: &BTreeMap<String, Option<Value>>,
        all: bool,
        pages: &HashMap<String, String>,
    ) -> Result<serde_json::Map<String, Json>, RowError> {
        let mut props = serde_json::Map::new();
        for (c, p) in &layout.mapped {
            if p.read_only() || p.id == layout.id_prop.id {
                continue;
            }
            let value = match fields.get(&c.field) {
                Some(v) => v.as_ref(),
                None if all => None,
                None => continue,
            };
            props.insert(p.id.clone(), write_value(c, p, value, pages)?);
        }
        Ok(props)
    }

    async fn page_of(&self, id: &str) -> Option<String> {
        let state = self.state.lock().await;
        state
            .pages
            .get(id)
            .cloned()
            .or_else(|| looks_like_page_id(id).then(|| id.to_owned()))
    }

    /// Creates a page for record `id`. A 5xx or a lost connection leaves it
    /// unknown whether the page landed: look it up before sending again.
    async fn create_page(
        &self,
        layout: &Layout,
        id: &str,
        mut props: serde_json::Map<String, Json>,
    ) -> Result<String, CallError> {
        props.insert(
            layout.id_prop.id.clone(),
            json!({layout.id_prop.kind.as_str(): rich_text(id)}),
        );
        let body = json!({
            "parent": {"type": "data_source_id", "data_source_id": layout.data_source_id},
            "properties": props,
        });
        let mut attempt = 0;
        loop {
            match self
                .call(Method::POST, "/v1/pages", Some(&body), false)
                .await
            {
                Ok(page) => {
                    let page_id = page
                        .get("id")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_owned();
                    self.state.lock().await.remember(id, &page_id);
                    return Ok(page_id);
                }
                Err(e) => {
                    let unknown = match &e {
                        CallError::Api(a) => matches!(a.status, 500 | 502 | 503 | 504),
                        CallError::Transport(_) => true,
                    };
                    if !unknown || attempt >= self.options.max_retries {
                        return Err(e);
                    }
                    // A page that landed may take a moment to show up in
                    // queries: wait before looking.
                    let wait = backoff(self.options.retry_base_ms, attempt, None, jitter_unit());
                    tokio::time::sleep(wait).await;
                    self.lookup(layout, BTreeSet::from([id.to_owned()]))
                        .await
                        .map_err(|e| CallError::Transport(e.to_string()))?;
                    if let Some(page) = self.state.lock().await.pages.get(id) {
                        return Ok(page.clone());
                    }
                    attempt += 1;
                }
            }
        }
    }

    async fn update_page(
        &self,
        page: &str,
        props: serde_json::Map<String, Json>,
    ) -> Result<(), CallError> {
        if props.is_empty() {
            return Ok(());
        }
        self.call(
            Method::PATCH,
            &format!("/v1/pages/{page}"),
            Some(&json!({"properties": props})),
            false,
        )
        .await
        .map(|_| ())
    }

    async fn apply_one(&self, layout: &Layout, op: &RowOp) -> RowResult {
        // The pages this op needs: its own and those its relations name.
        let pages: HashMap<String, String> = {
            let state = self.state.lock().await;
            std::iter::once(op.id().to_owned())
                .chain(Self::referenced(layout, op))
                .filter_map(|id| state.pages.get(&id).map(|p| (id, p.clone())))
                .collect()
        };
        match op {
            RowOp::Create { id, fields } => {
                let fields: BTreeMap<String, Option<Value>> = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect();
                match pages.get(id) {
                    Some(page) => {
                        let props = Self::properties(layout, &fields, true, &pages)?;
                        self.update_page(page, props).await.map_err(|e| {
                            e.row_error(&format!("updating the page of record '{id}'"))
                        })?;
                    }
                    None => {
                        let props = Self::properties(layout, &fields, false, &pages)?;
                        self.create_page(layout, id, props).await.map_err(|e| {
                            e.row_error(&format!("creating a page for record '{id}'"))
                        })?;
                    }
                }
                Ok(id.clone())
            }
            RowOp::Update { id, fields } => {
                let page = self.page_of(id).await.ok_or_else(|| RowError {
                    message: format!(
                        "notion: no page holds record id '{id}' (deleted in Notion, or its id property was changed); sync again to pull that change"
                    ),
                    retryable: false,
                })?;
                let props = Self::properties(layout, fields, false, &pages)?;
                self.update_page(&page, props)
                    .await
                    .map_err(|e| e.row_error(&format!("updating the page of record '{id}'")))?;
                Ok(id.clone())
            }
            RowOp::Delete { id } => {
                let Some(page) = self.page_of(id).await else {
                    return Ok(id.clone()); // no page: already gone
                };
                match self
                    .call(
                        Method::PATCH,
                        &format!("/v1/pages/{page}"),
                        Some(&json!({"in_trash": true})),
                        false,
                    )
                    .await
                {
                    Ok(_) | Err(CallError::Api(ApiError { status: 404, .. })) => {
                        self.state.lock().await.forget(id);
                        Ok(id.clone())
                    }
                    Err(e) => {
                        Err(e.row_error(&format!("moving the page of record '{id}' to the trash")))
                    }
                }
            }
        }
    }

    /// The record ids an op's relation properties point to.
    fn referenced(layout: &Layout, op: &RowOp) -> Vec<String> {
        let mut ids = Vec::new();
        for (c, p) in &layout.mapped {
            if p.kind != "relation" {
                continue;
            }
            let value = match op {
                RowOp::Create { fields, .. } => fields.get(&c.field),
                RowOp::Update { fields, .. } => fields.get(&c.field).and_then(Option::as_ref),
                RowOp::Delete { .. } => None,
            };
            match value {
                Some(Value::Set(s)) => ids.extend(s.iter().cloned()),
                Some(v) => ids.push(v.to_string()),
                None => {}
            }
        }
        ids
    }

    async fn apply_now(&self, ops: &[RowOp]) -> Result<Vec<RowResult>, AdapterError> {
        let layout = self.layout(false, false).await?;
        let references: Vec<Vec<String>> =
            ops.iter().map(|op| Self::referenced(&layout, op)).collect();
        let wanted: BTreeSet<String> = ops
            .iter()
            .map(|op| op.id().to_owned())
            .chain(references.iter().flatten().cloned())
            .collect();
        self.lookup(&layout, wanted).await?;
        // A row pointing to a record this batch creates is written after
        // it, so the relation can name the new page.
        let creating: HashSet<&str> = {
            let state = self.state.lock().await;
            ops.iter()
                .filter(|op| matches!(op, RowOp::Create { .. }))
                .map(RowOp::id)
                .filter(|id| !state.pages.contains_key(*id))
                .collect()
        };
        let (first, later): (Vec<usize>, Vec<usize>) = (0..ops.len()).partition(|&i| {
            !references[i]
                .iter()
                .any(|r| r != ops[i].id() && creating.contains(r.as_str()))
        });
        let mut results: Vec<Option<RowResult>> = vec![None; ops.len()];
        for i in first.into_iter().chain(later) {
            results[i] = Some(self.apply_one(&layout, &ops[i]).await);
        }
        Ok(results.into_iter().flatten().collect())
    }
}

impl Adapter for NotionAdapter {
    fn system(&self) -> &str {
        SYSTEM
    }

    fn table(&self) -> &str {
        &self.options.database_id
    }

    fn prepare(&self, create: bool) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        Box::pin(async move {
            let layout = self.layout(create, true).await?;
            Ok(self.remote_table(&layout))
        })
    }

    fn describe(&self) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        Box::pin(async move {
            let layout = self.layout(false, true).await?;
            Ok(self.remote_table(&layout))
        })
    }

    fn fetch<'a>(&'a self, since: Option<&'a str>) -> BoxFuture<'a, Result<Fetched, AdapterError>> {
        Box::pin(self.fetch_now(since))
    }

    fn unset_reads_as(&self) -> BTreeMap<String, Value> {
        // A bool field lives in a checkbox, which reads unchecked when
        // nothing was written to it.
        self.spec
            .columns
            .iter()
            .filter(|c| c.field_type == FieldKind::Bool)
            .map(|c| (c.field.clone(), Value::Bool(false)))
            .collect()
    }

    fn apply<'a>(
        &'a self,
        ops: &'a [RowOp],
    ) -> BoxFuture<'a, Result<Vec<RowResult>, AdapterError>> {
        Box::pin(self.apply_now(ops))
    }
}

/// The `notion` adapter kind, for [`chittysync::AdapterKinds`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NotionKind;

impl chittysync::AdapterKind for NotionKind {
    fn name(&self) -> &'static str {
        "notion"
    }

    fn settings(&self) -> &'static [chittysync::SettingSpec] {
        &[
            chittysync::SettingSpec {
                key: "data_source",
                help: "the data source's id, when the database has several",
            },
            chittysync::SettingSpec {
                key: "base_url",
                help: "the API's address (default https://api.notion.com)",
            },
            chittysync::SettingSpec {
                key: "requests_per_second",
                help: "the client's request budget (default 3)",
            },
            chittysync::SettingSpec {
                key: "retry_base_ms",
                help: "the first retry's wait, doubled after each",
            },
            chittysync::SettingSpec {
                key: "max_retries",
                help: "retries of a rate-limited or failed request",
            },
            chittysync::SettingSpec {
                key: "timeout_ms",
                help: "how long one request may take",
            },
        ]
    }

    fn tracking(&self, table: &RemoteTable) -> String {
        format!(
            "pages edited since the last sync, and pages moved to the trash ({})",
            table.name
        )
    }

    fn connect<'a>(
        &'a self,
        cx: chittysync::Connect<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Adapter>, chittysync::MirrorError>> {
        Box::pin(async move {
            let adapter = NotionAdapter::for_binding(cx.binding, cx.schema)?;
            Ok(Box::new(adapter) as Box<dyn Adapter>)
        })
    }

    fn setup<'a>(
        &'a self,
        binding: &'a mut chittysync::AdapterBinding,
        schema: &'a chittysync::Schema,
        create: bool,
    ) -> BoxFuture<'a, Result<RemoteTable, chittysync::MirrorError>> {
        Box::pin(async move {
            let adapter = NotionAdapter::for_binding(binding, schema)?;
            let wrap = |source| chittysync::MirrorError::Adapter {
                binding: binding.name.clone(),
                source,
            };
            let table = adapter.prepare(create).await.map_err(wrap)?;
            // Pin the mapping to property ids: renames in Notion then
            // break nothing.
            let mapping = adapter.pinned_mapping().await.map_err(wrap)?;
            let id_property = adapter.pinned_id_property().await.map_err(wrap)?;
            binding.mapping = mapping;
            binding.id_column = id_property;
            Ok(table)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(field: &str, ft: FieldKind) -> ColumnSpec {
        ColumnSpec {
            field: field.into(),
            column: field.into(),
            field_type: ft,
            options: Vec::new(),
            required: false,
        }
    }

    fn prop(kind: &str) -> Prop {
        Prop {
            id: format!("{kind}-id"),
            name: format!("{kind} name"),
            kind: kind.into(),
            status_options: vec!["Done".into(), "In progress".into()],
            relation_target: None,
        }
    }

    fn write(ft: FieldKind, kind: &str, v: Option<Value>) -> Result<Json, RowError> {
        write_value(&spec("f", ft), &prop(kind), v.as_ref(), &HashMap::new())
    }

    fn read(ft: FieldKind, kind: &str, inner: Json) -> Option<Cell> {
        read_cell(ft, &json!({"id": "x", "type": kind, kind: inner}))
    }

    #[test]
    fn long_text_is_chunked_at_2000_characters_and_joined_back() {
        let text: String = "é".repeat(4500);
        let items = rich_text(&text);
        let lens: Vec<usize> = items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["text"]["content"].as_str().unwrap().chars().count())
            .collect();
        assert_eq!(lens, vec![2000, 2000, 500]);
        assert_eq!(plain_text(&items), text);
        assert_eq!(rich_text(""), json!([]));
        let too_long: String = "x".repeat(TEXT_CHUNK * MAX_ITEMS + 1);
        let err = write(
            FieldKind::LongText,
            "rich_text",
            Some(too_long.as_str().into()),
        )
        .unwrap_err();
        assert!(
            err.message.contains("200000") && !err.retryable,
            "{}",
            err.message
        );
        let back = read(FieldKind::LongText, "rich_text", items);
        assert_eq!(back, Some(Cell::Ready(Value::Text(text))));
    }

    #[test]
    fn text_is_chunked_in_utf16_units_without_splitting_a_character() {
        let text = format!("x{}", "😀".repeat(1500));
        let chunks = text_chunks(&text);
        let units: Vec<usize> = chunks.iter().map(|c| utf16_len(c)).collect();
        assert_eq!(units, vec![1999, 1002]);
        assert_eq!(chunks.concat(), text);
        assert_eq!(plain_text(&rich_text(&text)), text);
        let url = format!("https://x.example/{}", "😀".repeat(995));
        let err = write(FieldKind::Url, "url", Some(url.as_str().into())).unwrap_err();
        assert!(err.message.contains("2008"), "{}", err.message);
    }

    #[test]
    fn backoff_honours_retry_after_then_doubles_with_jitter_up_to_a_minute() {
        assert_eq!(backoff(1000, 3, Some(7), 0.9), Duration::from_secs(7));
        assert_eq!(
            backoff(1000, 0, Some(86_400), 0.9),
            Duration::from_secs(MAX_RETRY_AFTER_SECS)
        );
        assert!(honours_retry_after(503) && honours_retry_after(529));
        assert!(!honours_retry_after(500));
        assert_eq!(backoff(1000, 0, Some(0), 0.9), Duration::ZERO);
        assert_eq!(backoff(1000, 0, None, 1.0), Duration::from_millis(1000));
        assert_eq!(backoff(1000, 0, None, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1000, 2, None, 1.0), Duration::from_millis(4000));
        assert_eq!(
            backoff(1000, 30, None, 1.0),
            Duration::from_millis(MAX_BACKOFF_MS)
        );
        for _ in 0..100 {
            let u = jitter_unit();
            assert!((0.0..1.0).contains(&u));
            let d = backoff(10, 1, None, u).as_millis();
            assert!((10..=20).contains(&d), "{d}");
        }
    }

    #[test]
    fn which_statuses_are_retried() {
        for s in [409, 429, 529] {
            assert!(retryable_status(s, false), "{s} on any method");
        }
        for s in [500, 503, 504] {
            assert!(retryable_status(s, true), "{s} on reads");
        }
        for s in [500, 502, 503, 504] {
            assert!(retryable_status(s, true), "{s} on reads");
            assert!(!retryable_status(s, false), "{s} not on writes");
        }
        for s in [400, 401, 403, 404] {
            assert!(!retryable_status(s, true));
        }
    }

    #[test]
    fn error_bodies_are_parsed_and_explained_without_secrets() {
        let e = parse_error(
            400,
            r#"{"object":"error","status":400,"code":"validation_error","message":"body failed validation"}"#,
        );
        assert_eq!(e.code, "validation_error");
        assert_eq!(e.message, "body failed validation");
        let row = CallError::Api(e).row_error("creating a page");
        assert!(!row.retryable);
        assert!(row.message.contains("body failed validation") && row.message.contains("400"));
        let unauthorized = CallError::Api(parse_error(401, "not json")).reason();
        assert!(unauthorized.contains("integration token"), "{unauthorized}");
        assert!(unauthorized.contains("not json"));
        assert!(
            CallError::Api(parse_error(503, ""))
                .row_error("x")
                .retryable
        );
        let options = NotionOptions::new("secret_abc123", "db");
        assert!(!format!("{options:?}").contains("secret_abc123"));
    }

    #[test]
    fn an_incremental_window_starts_a_minute_before_the_cursor() {
        assert_eq!(
            window_start("2026-11-23T10:05:00.000Z").as_deref(),
            Some("2026-11-23T10:04:00Z")
        );
        assert_eq!(window_start("not a time"), None);
        let ms = parse_ms("2026-11-23T10:05:00.000+00:00").unwrap();
        assert_eq!(parse_ms(&format_ms(ms)), Some(ms));
    }

    #[test]
    fn selects_with_commas_and_oversized_lists_fail_their_row_only() {
        let err = write(FieldKind::Select, "select", Some("a,b".into())).unwrap_err();
        assert!(!err.retryable && err.message.contains("comma") && err.message.contains("'f'"));
        let many: BTreeSet<String> = (0..101).map(|i| format!("o{i}")).collect();
        for kind in ["multi_select", "people", "relation"] {
            let err =
                write(FieldKind::MultiSelect, kind, Some(Value::Set(many.clone()))).unwrap_err();
            assert!(!err.retryable, "{kind}");
            assert!(
                err.message.contains("100") && err.message.contains("'f'"),
                "{}",
                err.message
            );
        }
        let ok = write(
            FieldKind::MultiSelect,
            "multi_select",
            Some(["a", "b"].into()),
        )
        .unwrap();
        assert_eq!(ok, json!({"multi_select": [{"name": "a"}, {"name": "b"}]}));
        let err = write(FieldKind::MultiSelect, "multi_select", Some(["a,b"].into())).unwrap_err();
        assert!(err.message.contains("comma"));
    }

    #[test]
    fn status_needs_an_existing_option() {
        assert_eq!(
            write(FieldKind::Select, "status", Some("Done".into())).unwrap(),
            json!({"status": {"name": "Done"}})
        );
        let err = write(FieldKind::Select, "status", Some("Nope".into())).unwrap_err();
        assert!(err.message.contains("Done, In progress"), "{}", err.message);
        assert_eq!(
            write(FieldKind::Select, "status", None).unwrap(),
            json!({"status": null})
        );
    }

    #[test]
    fn numbers_are_written_only_when_exact() {
        assert_eq!(
            write(FieldKind::Integer, "number", Some(8080.into())).unwrap(),
            json!({"number": 8080})
        );
        assert!(write(FieldKind::Integer, "number", Some(Value::Integer(1 << 60))).is_err());
        assert_eq!(
            write(
                FieldKind::Decimal,
                "number",
                Some(Value::Decimal("12.5".into()))
            )
            .unwrap(),
            json!({"number": 12.5})
        );
        assert!(
            write(
                FieldKind::Decimal,
                "number",
                Some(Value::Decimal("0.1234567890123456".into()))
            )
            .is_err()
        );
        assert_eq!(significant_digits("-0.00120"), 2);
        assert_eq!(significant_digits("1200"), 4);
        assert_eq!(
            write(FieldKind::Decimal, "number", None).unwrap(),
            json!({"number": null})
        );
    }

    #[test]
    fn numbers_read_back_as_the_field_type() {
        let n = |v: Json| read(FieldKind::Integer, "number", v);
        assert_eq!(n(json!(9000)), Some(Cell::Ready(Value::Integer(9000))));
        assert_eq!(n(json!(9000.0)), Some(Cell::Ready(Value::Integer(9000))));
        assert_eq!(
            n(json!(1.5)),
            Some(Cell::Ready(Value::Decimal("1.5".into())))
        );
        assert_eq!(n(Json::Null), None);
        let d = |v: Json| read(FieldKind::Decimal, "number", v);
        assert_eq!(
            d(json!(12.5)),
            Some(Cell::Ready(Value::Decimal("12.5".into())))
        );
        assert_eq!(
            d(json!(1e-7)),
            Some(Cell::Ready(Value::Decimal("0.0000001".into())))
        );
        assert_eq!(d(json!(12)), Some(Cell::Ready(Value::Decimal("12".into()))));
    }

    #[test]
    fn unchecked_reads_as_false_and_empty_values_as_no_value() {
        assert_eq!(
            read(FieldKind::Bool, "checkbox", json!(false)),
            Some(Cell::Ready(Value::Bool(false)))
        );
        assert_eq!(
            read(FieldKind::Bool, "checkbox", json!(true)),
            Some(Cell::Ready(Value::Bool(true)))
        );
        assert_eq!(
            write(FieldKind::Bool, "checkbox", None).unwrap(),
            json!({"checkbox": false})
        );
        assert_eq!(
            write(FieldKind::Bool, "checkbox", Some(true.into())).unwrap(),
            json!({"checkbox": true})
        );
        assert_eq!(read(FieldKind::Text, "rich_text", json!([])), None);
        assert_eq!(
            read(FieldKind::MultiSelect, "multi_select", json!([])),
            None
        );
        assert_eq!(read(FieldKind::Select, "select", Json::Null), None);
        assert_eq!(
            read(FieldKind::Date, "date", json!({"start": "2026-01-02"})),
            Some(Cell::Ready(Value::Text("2026-01-02".into())))
        );
    }

    #[test]
    fn computed_properties_are_read() {
        let f = read(
            FieldKind::Integer,
            "formula",
            json!({"type": "number", "number": 3}),
        );
        assert_eq!(f, Some(Cell::Ready(Value::Integer(3))));
        let f = read(
            FieldKind::Text,
            "formula",
            json!({"type": "string", "string": "hi"}),
        );
        assert_eq!(f, Some(Cell::Ready(Value::Text("hi".into()))));
        let u = read(
            FieldKind::Text,
            "unique_id",
            json!({"prefix": "SVC", "number": 12}),
        );
        assert_eq!(u, Some(Cell::Ready(Value::Text("SVC-12".into()))));
        let t = read(
            FieldKind::Datetime,
            "created_time",
            json!("2026-01-02T03:04:00.000Z"),
        );
        assert_eq!(
            t,
            Some(Cell::Ready(Value::Text("2026-01-02T03:04:00.000Z".into())))
        );
        assert!(write(FieldKind::Text, "formula", Some("x".into())).is_err());
    }

    #[test]
    fn references_translate_record_ids_to_page_ids() {
        let pages = HashMap::from([("billing".to_owned(), "page-1".to_owned())]);
        let c = spec("parent", FieldKind::Reference);
        let p = prop("relation");
        let v = write_value(&c, &p, Some(&"billing".into()), &pages).unwrap();
        assert_eq!(v, json!({"relation": [{"id": "page-1"}]}));
        let err = write_value(&c, &p, Some(&"nowhere".into()), &pages).unwrap_err();
        assert!(err.retryable && err.message.contains("nowhere"));
        assert_eq!(
            write_value(&c, &p, None, &pages).unwrap(),
            json!({"relation": []})
        );
        let cell = read(FieldKind::Reference, "relation", json!([{"id": "page-1"}]));
        assert_eq!(
            cell,
            Some(Cell::Pages {
                ids: vec!["page-1".into()],
                has_more: false
            })
        );
    }

    #[test]
    fn text_limits_of_urls_and_emails() {
        let long = "x".repeat(2001);
        assert!(write(FieldKind::Url, "url", Some(long.as_str().into())).is_err());
        assert!(
            write(
                FieldKind::Email,
                "email",
                Some("x".repeat(201).as_str().into())
            )
            .is_err()
        );
        assert_eq!(
            write(FieldKind::Email, "email", Some("a@b.c".into())).unwrap(),
            json!({"email": "a@b.c"})
        );
        assert_eq!(
            write(FieldKind::Url, "url", None).unwrap(),
            json!({"url": null})
        );
    }

    #[test]
    fn field_and_property_types_pair_as_documented() {
        assert!(compatible(FieldKind::Text, "title"));
        assert!(compatible(FieldKind::Text, "rich_text"));
        assert!(!compatible(FieldKind::Text, "number"));
        assert!(compatible(FieldKind::Integer, "number"));
        assert!(!compatible(FieldKind::Bool, "rich_text"));
        assert!(compatible(FieldKind::Select, "status"));
        assert!(compatible(FieldKind::Reference, "relation"));
        assert!(!compatible(FieldKind::Json, "number"));
    }

    #[test]
    fn properties_are_found_by_id_before_name() {
        let props = parse_props(&json!({"properties": {
            "Name": {"id": "title", "name": "Name", "type": "title", "title": {}},
            "abc": {"id": "x1", "name": "abc", "type": "rich_text", "rich_text": {}},
            "Other": {"id": "abc", "name": "Other", "type": "number", "number": {}},
        }}));
        assert_eq!(find_prop(&props, "abc").unwrap().name, "Other");
        assert_eq!(find_prop(&props, "Name").unwrap().id, "title");
        assert!(find_prop(&props, "missing").is_none());
    }

    #[test]
    fn page_ids_are_recognised() {
        assert!(looks_like_page_id("59833787-2cf9-4fdf-8782-e53db20768a5"));
        assert!(looks_like_page_id("598337872cf94fdf8782e53db20768a5"));
        assert!(!looks_like_page_id("billing"));
        assert!(!looks_like_page_id("r01"));
    }

    #[test]
    fn a_relation_to_a_page_made_by_hand_is_written_by_its_page_id() {
        let page = "59833787-2cf9-4fdf-8782-e53db20768a5";
        let v = write_value(
            &spec("f", FieldKind::Reference),
            &prop("relation"),
            Some(&Value::Text(page.into())),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(v, json!({"relation": [{"id": page}]}));
        let missing = write_value(
            &spec("f", FieldKind::Reference),
            &prop("relation"),
            Some(&Value::Text("billing".into())),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(missing.retryable, "{}", missing.message);
    }

    #[test]
    fn a_date_field_takes_the_day_of_a_date_with_a_time() {
        let day = read(
            FieldKind::Date,
            "date",
            json!({"start": "2026-11-23T10:00:00.000+01:00", "end": null}),
        );
        assert_eq!(day, Some(Cell::Ready(Value::Text("2026-11-23".into()))));
        let time = read(
            FieldKind::Datetime,
            "date",
            json!({"start": "2026-11-23T10:00:00.000+01:00"}),
        );
        assert_eq!(
            time,
            Some(Cell::Ready(Value::Text(
                "2026-11-23T10:00:00.000+01:00".into()
            )))
        );
    }

    #[test]
    fn a_page_whose_row_id_changed_is_remembered_once() {
        let mut state = State::default();
        state.remember("p1", "p1");
        state.remember("svc", "p1");
        assert_eq!(state.pages.get("p1"), None, "the old row id is dropped");
        assert_eq!(state.pages["svc"], "p1");
        assert_eq!(state.rows["p1"], "svc");
        state.remember("svc", "p2");
        assert_eq!(state.rows.get("p1"), None, "the old page is dropped");
        assert_eq!(state.pages.len(), 1);
        assert_eq!(state.rows.len(), 1);
    }

    #[test]
    fn a_timeout_that_is_not_a_finite_number_is_refused() {
        let schema =
            chittysync::Schema::new().field(chittysync::FieldDef::new("name", FieldKind::Text));
        for bad in ["NaN", "inf", "-5", "0"] {
            let binding = chittysync::AdapterBinding::new("n", "services", "notion", "db1")
                .secret_env("PATH")
                .setting("timeout_ms", bad);
            let err = NotionAdapter::for_binding(&binding, &schema).unwrap_err();
            assert!(err.to_string().contains("timeout_ms"), "{bad}: {err}");
        }
        let binding = chittysync::AdapterBinding::new("n", "services", "notion", "db1")
            .secret_env("PATH")
            .setting("timeout_ms", "250");
        assert!(NotionAdapter::for_binding(&binding, &schema).is_ok());
    }

    #[test]
    fn a_binding_without_a_token_says_how_to_give_one() {
        let schema =
            chittysync::Schema::new().field(chittysync::FieldDef::new("name", FieldKind::Text));
        let binding = chittysync::AdapterBinding::new("n", "services", "notion", "db1");
        let err = NotionAdapter::for_binding(&binding, &schema).unwrap_err();
        assert!(err.to_string().contains("--secret-env"), "{err}");
        let binding = binding.secret_env("CHITTYSYNC_TEST_UNSET_NOTION_TOKEN");
        let err = NotionAdapter::for_binding(&binding, &schema).unwrap_err();
        assert!(
            err.to_string()
                .contains("CHITTYSYNC_TEST_UNSET_NOTION_TOKEN"),
            "{err}"
        );
    }
}
