//! An emulator of the Notion API (version 2025-09-03 and later: databases
//! hold data sources, pages live in data sources).
//!
//! Serves under `/v1`: retrieving databases and data sources, updating a
//! data source's properties, querying a data source, and creating, reading,
//! updating and trashing pages, plus the paginated page-property endpoint.
//! Responses follow the published API's shapes and validation messages.
//!
//! Named limits on the [`Control`] (`control.set_limit(name, value)`):
//! - `result_cap` (default 10000): results one query can reach; past it the
//!   query ends with `has_more:false` and
//!   `request_status:{type:"incomplete", incomplete_reason:"query_result_limit_reached"}`
//!   on the last page of that query (the one reaching the cap);
//! - `request_status_early` (default 0): 1 moves that `request_status` to
//!   the first page of the capped walk instead (the guide says it can come
//!   on an earlier page than the last), and off the later pages;
//! - `rate_per_sec` (default 3) and `rate_burst` (default 10): a token bucket
//!   per integration token, refilled on the Control clock; an empty bucket
//!   answers 429 `rate_limited` with an integer `Retry-After`;
//! - `rate_per_minute` (default unset: off): requests a token may make in
//!   any 60-second window (the documented per-connection budget); past it
//!   the answer is 429 `rate_limited` with `Retry-After` = the seconds until
//!   the oldest request in the window leaves it (1 to 60);
//! - `relation_inline` (default 25): relation and people items inlined in a
//!   page object before the property says `has_more:true`;
//! - `page_size_max` (default 100): the largest `page_size` accepted.
//!
//! Choices where the published material is silent or unclear:
//! - a query's `in_trash:true` returns only pages in the trash (as the
//!   official SDK documents it); without it, only pages not in the trash;
//! - `request_status` appears only on capped queries, on one page of them;
//! - before Notion-Version 2026-03-11, page, database and data source
//!   objects carry `archived` (equal to `in_trash`) beside `in_trash`;
//! - a 429's `additional_data.rate_limit_reason` is `"connection_rate_limit"`
//!   (the real values are not published);
//! - a property-item list's `property_item.next_url` points at this
//!   emulator (the request's `Host`), with the next `start_cursor`;
//! - the 500 KB body limit is 500,000 bytes;
//! - a relation target must be a page not in the trash, in the data source
//!   the relation's `data_source_id` names (any page when that names no
//!   data source of the emulator); else 400 `validation_error` naming the
//!   property and the id (the wording is ours);
//! - ids are accepted with or without dashes (paths, parents, relation and
//!   people items, filter operands) and always returned dashed;
//! - a select or multi_select option dropped from a data source keeps its
//!   name on pages that already carry it;
//! - date-times in date properties read back as
//!   `2026-11-23T10:15:00.000+00:00`: in UTC, or, when written with a
//!   `time_zone`, at that zone's offset on that day (the changelog "Time
//!   zone support": the API returns `time_zone` as null and shows the zone
//!   as a UTC offset in `start` and `end`); bare dates as written; a
//!   date-time without offset or time_zone is taken as UTC;
//! - without sorts, a query returns pages oldest first;
//! - `created_time` is rounded down to the minute like `last_edited_time`.

mod query;
mod tz;
mod validate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::{Control, Running};

use query::{Filter, Sort};

/// The oldest `Notion-Version` with data-source endpoints.
const MIN_VERSION: &str = "2025-09-03";
/// The first `Notion-Version` without the `archived` alias of `in_trash`.
const ARCHIVED_REMOVED: &str = "2026-03-11";
/// The largest request body the API accepts.
const MAX_REQUEST_BYTES: usize = 500 * 1000;

/// An API error, rendered as the API's error object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: u16,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    additional_data: Option<Value>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            additional_data: None,
        }
    }

    pub(crate) fn validation(message: impl Into<String>) -> Self {
        ApiError::new(400, "validation_error", message)
    }

    fn not_found(kind: &str, id: &str) -> Self {
        ApiError::new(
            404,
            "object_not_found",
            format!(
                "Could not find {kind} with ID: {id}. Make sure the relevant pages and databases \
                 are shared with your integration."
            ),
        )
    }

    fn into_response(self) -> Response {
        let mut body = json!({
            "object": "error",
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "request_id": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(extra) = self.additional_data {
            body["additional_data"] = extra;
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        response
    }
}

/// One property of a data source's schema.
#[derive(Debug, Clone)]
pub(crate) struct PropSchema {
    id: String,
    name: String,
    kind: String,
    /// The type's configuration object (e.g. `{options:[…]}` for select).
    config: Value,
}

/// A data source: a table of pages under a database.
#[derive(Debug, Clone)]
pub(crate) struct DataSource {
    id: String,
    name: String,
    database_id: String,
    created_ms: i64,
    edited_ms: i64,
    properties: Vec<PropSchema>,
}

impl DataSource {
    /// The property with this name, or else this id.
    fn find(&self, key: &str) -> Option<&PropSchema> {
        self.properties
            .iter()
            .find(|p| p.name == key)
            .or_else(|| self.properties.iter().find(|p| p.id == key))
    }
}

#[derive(Debug)]
struct Database {
    id: String,
    title: String,
    created_ms: i64,
    data_sources: Vec<String>,
}

/// A page (a row of a data source).
#[derive(Debug, Clone)]
pub(crate) struct Page {
    id: String,
    data_source_id: String,
    database_id: String,
    /// Creation order, to break ties between equal timestamps.
    seq: u64,
    created_ms: i64,
    edited_ms: i64,
    created_by: String,
    edited_by: String,
    in_trash: bool,
    /// Stored values by property id, in the API's read shape.
    values: BTreeMap<String, Value>,
}

/// Where an opaque cursor resumes.
#[derive(Debug, Clone)]
struct Cursor {
    /// The data source queried, or the page and property listed.
    scope: String,
    offset: usize,
    /// The page the next batch starts with, so pages trashed or edited
    /// between calls do not shift the walk; `offset` is the fallback.
    next_page: Option<String>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

#[derive(Debug, Default)]
struct Inner {
    tokens: HashSet<String>,
    databases: HashMap<String, Database>,
    data_sources: HashMap<String, DataSource>,
    pages: HashMap<String, Page>,
    cursors: HashMap<String, Cursor>,
    buckets: HashMap<String, Bucket>,
    /// Times (ms) of each token's requests in the last 60 seconds.
    minute_log: HashMap<String, std::collections::VecDeque<i64>>,
    next_seq: u64,
}

/// The Notion API emulator. Cloning shares the state.
#[derive(Clone)]
pub struct Notion {
    inner: Arc<Mutex<Inner>>,
    control: Control,
    /// The bot user of the integration (author of HTTP writes).
    bot_user: String,
    /// The person behind "another application"'s writes.
    person_user: String,
}

impl std::fmt::Debug for Notion {
    // Tokens stay out of Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Notion")
            .field("databases", &inner.databases.len())
            .field("data_sources", &inner.data_sources.len())
            .field("pages", &inner.pages.len())
            .finish_non_exhaustive()
    }
}

impl Default for Notion {
    fn default() -> Self {
        Notion::new()
    }
}

/// Formats ms since the epoch as the API does: `2026-11-23T10:15:00.000Z`.
pub(crate) fn iso(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// Formats ms since the epoch as a date property's date-time:
/// `2026-11-23T10:15:00.000+00:00` (UTC, milliseconds, numeric offset).
pub(crate) fn iso_offset(ms: i64) -> String {
    iso_at_offset(ms, 0)
}

/// The same instant as local time at a UTC offset of `offset` seconds:
/// `2026-07-01T09:00:00.000-04:00`.
fn iso_at_offset(ms: i64, offset: i64) -> String {
    let mut s = iso(ms + offset * 1000);
    s.pop();
    let sign = if offset < 0 { '-' } else { '+' };
    let minutes = offset.abs() / 60;
    format!("{s}{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A date property's `start`/`end` as written: a bare date (kept), a
/// date-time with an offset (converted to UTC), or, with a `time_zone`, a
/// date-time without offset in that zone (kept at that zone's offset). `None` when malformed.
pub(crate) fn normalize_date(s: &str, zone: Option<&str>) -> Result<String, &'static str> {
    let bare = time::Date::parse(s, format_description!("[year]-[month]-[day]")).is_ok();
    let with_offset = OffsetDateTime::parse(s, &Rfc3339).ok();
    match zone {
        None if bare => Ok(s.to_owned()),
        None => {
            if let Some(t) = with_offset {
                return Ok(iso_offset((t.unix_timestamp_nanos() / 1_000_000) as i64));
            }
            let local = parse_local(s).ok_or("an ISO 8601 date or date-time")?;
            Ok(iso_offset(local))
        }
        Some(_) if bare => Err("a date-time (not a bare date) when time_zone is given"),
        Some(_) if with_offset.is_some() => {
            Err("a date-time without a UTC offset when time_zone is given")
        }
        Some(zone) => {
            let local = parse_local(s).ok_or("an ISO 8601 date-time without offset")?;
            let secs = tz::local_to_utc(zone, local.div_euclid(1000))
                .ok_or("paired with a known IANA time_zone")?;
            // Kept as the zone's offset at that instant, as the API shows it.
            let offset = tz::offset_at(zone, secs).ok_or("paired with a known IANA time_zone")?;
            Ok(iso_at_offset(secs * 1000 + local.rem_euclid(1000), offset))
        }
    }
}

/// A date-time without offset, read as UTC, to ms.
fn parse_local(s: &str) -> Option<i64> {
    let formats = [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ];
    formats.iter().find_map(|f| {
        time::PrimitiveDateTime::parse(s, f)
            .ok()
            .map(|t| (t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
    })
}

/// Parses an ISO 8601 date-time (with offset) or a date (taken as UTC
/// midnight) to ms since the epoch.
pub(crate) fn parse_instant(s: &str) -> Option<i64> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date = time::Date::parse(s, format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
}

/// An id in the API's dashed form (8-4-4-4-12, lower case); ids may be
/// given with or without dashes. Anything not a UUID is returned as given.
pub(crate) fn dashed(id: &str) -> String {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return id.to_owned();
    }
    let h = hex.to_ascii_lowercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn floor_minute(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..4].to_owned()
}

fn rich_text_of(s: &str) -> Value {
    json!([{
        "type": "text",
        "text": { "content": s, "link": null },
        "annotations": {
            "bold": false, "italic": false, "strikethrough": false,
            "underline": false, "code": false, "color": "default"
        },
        "plain_text": s,
        "href": null,
    }])
}

fn user(id: &str) -> Value {
    json!({ "object": "user", "id": id })
}

/// Fills in option ids and colours of a select, multi_select or status
/// configuration.
fn normalize_config(kind: &str, config: &Value) -> Value {
    let mut config = match config {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    match kind {
        "select" | "multi_select" | "status" => {
            let given = config
                .get("options")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let given = if given.is_empty() && kind == "status" {
                vec![
                    json!({"name": "Not started"}),
                    json!({"name": "In progress"}),
                    json!({"name": "Done"}),
                ]
            } else {
                given
            };
            let options: Vec<Value> = given
                .iter()
                .map(|o| {
                    json!({
                        "id": o.get("id").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(short_id),
                        "name": o.get("name").cloned().unwrap_or(Value::Null),
                        "color": o.get("color").and_then(Value::as_str).unwrap_or("default"),
                        "description": null,
                    })
                })
                .collect();
            config["options"] = Value::Array(options);
        }
        "number" if config.get("format").is_none() => {
            config["format"] = json!("number");
        }
        _ => {}
    }
    config
}

/// The type key of a property-schema object (`{"number":{}}` → `number`).
fn schema_kind(v: &Value) -> Option<(String, Value)> {
    let m = v.as_object()?;
    m.iter()
        .find(|(k, _)| !matches!(k.as_str(), "name" | "id" | "type" | "description"))
        .map(|(k, cfg)| (k.clone(), cfg.clone()))
}

impl Inner {
    fn fresh_prop_id(ds: &DataSource) -> String {
        loop {
            let id = short_id();
            if id != "title" && !ds.properties.iter().any(|p| p.id == id) {
                return id;
            }
        }
    }

    fn new_cursor(&mut self, scope: String, offset: usize, next_page: Option<String>) -> String {
        let cursor = uuid::Uuid::new_v4().to_string();
        self.cursors.insert(
            cursor.clone(),
            Cursor {
                scope,
                offset,
                next_page,
            },
        );
        cursor
    }

    fn data_source(&self, id: &str) -> Result<&DataSource, ApiError> {
        self.data_sources
            .get(id)
            .ok_or_else(|| ApiError::not_found("data_source", id))
    }

    fn database_json(&self, db: &Database) -> Value {
        let sources: Vec<Value> = db
            .data_sources
            .iter()
            .filter_map(|id| self.data_sources.get(id))
            .map(|ds| json!({ "id": ds.id, "name": ds.name }))
            .collect();
        json!({
            "object": "database",
            "id": db.id,
            "title": rich_text_of(&db.title),
            "description": [],
            "parent": { "type": "workspace", "workspace": true },
            "is_inline": false,
            "in_trash": false,
            "is_locked": false,
            "created_time": iso(floor_minute(db.created_ms)),
            "last_edited_time": iso(floor_minute(db.created_ms)),
            "data_sources": sources,
            "icon": null,
            "cover": null,
            "url": format!("https://www.notion.so/{}", db.id.replace('-', "")),
            "public_url": null,
        })
    }

    fn data_source_json(ds: &DataSource) -> Value {
        let mut properties = Map::new();
        for p in &ds.properties {
            properties.insert(
                p.name.clone(),
                json!({
                    "id": p.id,
                    "name": p.name,
                    "description": "",
                    "type": p.kind,
                    p.kind.clone(): p.config,
                }),
            );
        }
        json!({
            "object": "data_source",
            "id": ds.id,
            "title": rich_text_of(&ds.name),
            "description": [],
            "parent": { "type": "database_id", "database_id": ds.database_id },
            "database_parent": { "type": "workspace", "workspace": true },
            "created_time": iso(floor_minute(ds.created_ms)),
            "last_edited_time": iso(floor_minute(ds.edited_ms)),
            "in_trash": false,
            "is_inline": false,
            "properties": properties,
            "icon": null,
            "cover": null,
            "url": format!("https://www.notion.so/{}", ds.id.replace('-', "")),
            "public_url": null,
        })
    }

    /// A property value in the page object's shape.
    fn value_json(p: &PropSchema, page: &Page, relation_inline: usize) -> Value {
        let stored = page.values.get(&p.id);
        let mut out = json!({ "id": p.id, "type": p.kind });
        let value = match p.kind.as_str() {
            "title" | "rich_text" | "multi_select" | "files" => {
                stored.cloned().unwrap_or(json!([]))
            }
            "checkbox" => stored.cloned().unwrap_or(json!(false)),
            "relation" | "people" => {
                let all = stored
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let cut = all.len() > relation_inline;
                out["has_more"] = json!(cut);
                Value::Array(all.into_iter().take(relation_inline).collect())
            }
            "created_time" => json!(iso(page.created_ms)),
            "last_edited_time" => json!(iso(page.edited_ms)),
            "created_by" => user(&page.created_by),
            "last_edited_by" => user(&page.edited_by),
            "unique_id" => json!({ "prefix": null, "number": page.seq }),
            "formula" => json!({ "type": "string", "string": null }),
            "rollup" => json!({ "type": "array", "array": [], "function": "show_original" }),
            _ => stored.cloned().unwrap_or(Value::Null),
        };
        out[p.kind.as_str()] = value;
        out
    }

    fn page_json(&self, page: &Page, relation_inline: usize) -> Value {
        let mut properties = Map::new();
        if let Some(ds) = self.data_sources.get(&page.data_source_id) {
            for p in &ds.properties {
                properties.insert(p.name.clone(), Inner::value_json(p, page, relation_inline));
            }
        }
        json!({
            "object": "page",
            "id": page.id,
            "created_time": iso(page.created_ms),
            "last_edited_time": iso(page.edited_ms),
            "created_by": user(&page.created_by),
            "last_edited_by": user(&page.edited_by),
            "cover": null,
            "icon": null,
            "parent": {
                "type": "data_source_id",
                "data_source_id": page.data_source_id,
                "database_id": page.database_id,
            },
            "in_trash": page.in_trash,
            "is_archived": false,
            "is_locked": false,
            "properties": properties,
            "url": format!("https://www.notion.so/{}", page.id.replace('-', "")),
            "public_url": null,
        })
    }

    /// Validates a write and applies it to the page (creating options).
    fn write_properties(
        &mut self,
        ds_id: &str,
        properties: &Value,
    ) -> Result<Vec<validate::Accepted>, ApiError> {
        let ds = self.data_source(ds_id)?;
        let accepted = validate::validate_properties(ds, properties, &mut short_id)?;
        for a in &accepted {
            let Some(p) = ds.properties.iter().find(|p| p.id == a.prop_id) else {
                continue;
            };
            if p.kind != "relation" {
                continue;
            }
            let target_ds = p.config["data_source_id"].as_str().map(dashed);
            let target_ds = target_ds.filter(|t| self.data_sources.contains_key(t));
            for item in a.value.as_array().into_iter().flatten() {
                let id = item["id"].as_str().unwrap_or_default();
                let found = self.pages.get(id).is_some_and(|page| {
                    !page.in_trash && target_ds.as_ref().is_none_or(|t| *t == page.data_source_id)
                });
                if !found {
                    return Err(ApiError::validation(format!(
                        "Relation property `{}` cannot point to page {id}: it does not exist in \
                         the related data source, is in the trash, or is not shared with the \
                         integration.",
                        p.name
                    )));
                }
            }
        }
        let ds = self
            .data_sources
            .get_mut(ds_id)
            .ok_or_else(|| ApiError::not_found("data_source", ds_id))?;
        for a in &accepted {
            if a.new_options.is_empty() {
                continue;
            }
            if let Some(p) = ds.properties.iter_mut().find(|p| p.id == a.prop_id)
                && let Some(options) = p.config.get_mut("options").and_then(Value::as_array_mut)
            {
                options.extend(a.new_options.iter().cloned());
            }
        }
        Ok(accepted)
    }

    fn create_page(
        &mut self,
        ds_id: &str,
        properties: &Value,
        now_ms: i64,
        author: &str,
    ) -> Result<String, ApiError> {
        let database_id = self.data_source(ds_id)?.database_id.clone();
        let accepted = self.write_properties(ds_id, properties)?;
        let id = uuid::Uuid::new_v4().to_string();
        self.next_seq += 1;
        let at = floor_minute(now_ms);
        let page = Page {
            id: id.clone(),
            data_source_id: ds_id.to_owned(),
            database_id,
            seq: self.next_seq,
            created_ms: at,
            edited_ms: at,
            created_by: author.to_owned(),
            edited_by: author.to_owned(),
            in_trash: false,
            values: accepted.into_iter().map(|a| (a.prop_id, a.value)).collect(),
        };
        self.pages.insert(id.clone(), page);
        Ok(id)
    }

    fn update_page(
        &mut self,
        page_id: &str,
        properties: Option<&Value>,
        in_trash: Option<bool>,
        now_ms: i64,
        author: &str,
    ) -> Result<(), ApiError> {
        let page = self
            .pages
            .get(page_id)
            .ok_or_else(|| ApiError::not_found("page", page_id))?;
        let ds_id = page.data_source_id.clone();
        let writes_properties =
            properties.is_some_and(|p| p.as_object().is_none_or(|m| !m.is_empty()));
        if page.in_trash && in_trash != Some(false) && writes_properties {
            return Err(ApiError::validation(
                "Can't edit block that is archived. You must unarchive the block before editing.",
            ));
        }
        let accepted = match properties {
            Some(p) => self.write_properties(&ds_id, p)?,
            None => Vec::new(),
        };
        let page = self
            .pages
            .get_mut(page_id)
            .ok_or_else(|| ApiError::not_found("page", page_id))?;
        for a in accepted {
            page.values.insert(a.prop_id, a.value);
        }
        if let Some(t) = in_trash {
            page.in_trash = t;
        }
        page.edited_ms = floor_minute(now_ms);
        page.edited_by = author.to_owned();
        Ok(())
    }

    fn update_data_source(
        &mut self,
        ds_id: &str,
        body: &Value,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let mut ds = self.data_source(ds_id)?.clone();
        if let Some(title) = body.get("title") {
            let Some(items) = title.as_array() else {
                return Err(ApiError::validation(format!(
                    "body.title should be an array, instead was `{title}`."
                )));
            };
            ds.name = items
                .iter()
                .filter_map(|i| i["text"]["content"].as_str().or(i["plain_text"].as_str()))
                .collect();
        }
        let empty = Map::new();
        let changes = match body.get("properties") {
            None => &empty,
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "body.properties should be an object, instead was `{other}`."
                )));
            }
        };
        for (key, change) in changes {
            let existing = ds.find(key).map(|p| p.id.clone());
            match (existing, change) {
                (Some(id), Value::Null) => {
                    if id == "title" {
                        return Err(ApiError::validation(
                            "The title property of a data source cannot be removed.",
                        ));
                    }
                    ds.properties.retain(|p| p.id != id);
                }
                (None, Value::Null) => {
                    return Err(ApiError::validation(format!(
                        "{key} is not a property that exists."
                    )));
                }
                (existing, Value::Object(m)) => {
                    let new_name = match m.get("name") {
                        None => None,
                        Some(Value::String(n)) if !n.trim().is_empty() => Some(n.clone()),
                        Some(other) => {
                            return Err(ApiError::validation(format!(
                                "body.properties.{key}.name should be a non-empty string, instead was `{other}`."
                            )));
                        }
                    };
                    let kind = schema_kind(change);
                    let index = match existing {
                        Some(ref id) => ds.properties.iter().position(|p| &p.id == id),
                        None => {
                            let Some((kind, config)) = &kind else {
                                return Err(ApiError::validation(format!(
                                    "{key} is not a property that exists; to add it, give its type \
                                     (e.g. `{{\"rich_text\": {{}}}}`)."
                                )));
                            };
                            if kind == "title" {
                                return Err(ApiError::validation(
                                    "A data source has exactly one title property.",
                                ));
                            }
                            if kind == "status"
                                && config["options"].as_array().is_some_and(|o| !o.is_empty())
                            {
                                return Err(ApiError::validation(format!(
                                    "body.properties.{key}.status: status options cannot be set \
                                     through the API; add the status property without options."
                                )));
                            }
                            let id = Inner::fresh_prop_id(&ds);
                            ds.properties.push(PropSchema {
                                id,
                                name: key.clone(),
                                kind: kind.clone(),
                                config: normalize_config(kind, config),
                            });
                            Some(ds.properties.len() - 1)
                        }
                    };
                    let Some(index) = index else { continue };
                    if existing.is_some()
                        && ds.properties[index].kind == "status"
                        && (new_name.is_some() || m.contains_key("status"))
                    {
                        return Err(ApiError::validation(format!(
                            "body.properties.{key}: a status property's name and options cannot \
                             be updated through the API."
                        )));
                    }
                    if let Some((kind, config)) = kind {
                        let p = &mut ds.properties[index];
                        if kind != p.kind {
                            if p.id == "title" || kind == "title" {
                                return Err(ApiError::validation(
                                    "The title property's type cannot be changed.",
                                ));
                            }
                            p.kind = kind.clone();
                            p.config = normalize_config(&kind, &config);
                        } else if matches!(kind.as_str(), "select" | "multi_select") {
                            // The listed options become the options: existing
                            // ones (by id or name) keep their id and colour,
                            // new ones are added, omitted ones are removed.
                            let have = p.config["options"].as_array().cloned().unwrap_or_default();
                            let given = config["options"].as_array().cloned().unwrap_or_default();
                            let mut all = Vec::new();
                            for o in given {
                                let old = have.iter().find(|h| {
                                    (o.get("id").is_some() && h["id"] == o["id"])
                                        || (o.get("name").is_some() && h["name"] == o["name"])
                                });
                                let merged =
                                    match old {
                                        Some(h) => {
                                            let mut h = h.clone();
                                            if let Some(n) = o.get("name") {
                                                h["name"] = n.clone();
                                            }
                                            if let Some(c) = o.get("color") {
                                                h["color"] = c.clone();
                                            }
                                            h
                                        }
                                        None => normalize_config(&kind, &json!({ "options": [o] }))
                                            ["options"][0]
                                            .clone(),
                                    };
                                all.push(merged);
                            }
                            p.config["options"] = Value::Array(all);
                        }
                    }
                    if let Some(name) = new_name {
                        if ds
                            .properties
                            .iter()
                            .enumerate()
                            .any(|(i, p)| i != index && p.name == name)
                        {
                            return Err(ApiError::validation(format!(
                                "A property named `{name}` already exists."
                            )));
                        }
                        ds.properties[index].name = name;
                    }
                }
                (_, other) => {
                    return Err(ApiError::validation(format!(
                        "body.properties.{key} should be an object or `null`, instead was `{other}`."
                    )));
                }
            }
        }
        ds.edited_ms = now_ms;
        self.data_sources.insert(ds_id.to_owned(), ds);
        Ok(())
    }

    fn query(&mut self, ds_id: &str, body: &Value, control: &Control) -> Result<Value, ApiError> {
        let ds = self.data_source(ds_id)?;
        if !(body.is_object() || body.is_null()) {
            return Err(ApiError::validation(format!(
                "body should be an object, instead was `{body}`."
            )));
        }
        let page_size_max = control.limit("page_size_max", 100.0) as u64;
        let page_size = match body.get("page_size") {
            None | Some(Value::Null) => page_size_max.min(100),
            Some(v) => match v.as_u64() {
                Some(0) => {
                    return Err(ApiError::validation(
                        "body.page_size should be ≥ `1`, instead was `0`.",
                    ));
                }
                Some(n) if n > page_size_max => {
                    return Err(ApiError::validation(format!(
                        "body.page_size should be ≤ `{page_size_max}`, instead was `{n}`."
                    )));
                }
                Some(n) => n,
                None => {
                    return Err(ApiError::validation(format!(
                        "body.page_size should be a positive integer, instead was `{v}`."
                    )));
                }
            },
        } as usize;
        let in_trash = match body.get("in_trash") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "body.in_trash should be a boolean, instead was `{other}`."
                )));
            }
        };
        let filter: Option<Filter> = match body.get("filter") {
            None | Some(Value::Null) => None,
            Some(f) => Some(query::parse_filter(ds, f, 0, control.now_ms())?),
        };
        let sorts: Vec<Sort> = match body.get("sorts") {
            None | Some(Value::Null) => Vec::new(),
            Some(s) => query::parse_sorts(ds, s)?,
        };
        let resume = match body.get("start_cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(c)) => match self.cursors.get(c) {
                Some(cursor) if cursor.scope == ds_id => Some(cursor.clone()),
                _ => {
                    return Err(ApiError::validation(format!(
                        "body.start_cursor is not a valid cursor for this query: `{c}`."
                    )));
                }
            },
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "body.start_cursor should be a string, instead was `{other}`."
                )));
            }
        };
        let mut matched: Vec<&Page> = self
            .pages
            .values()
            .filter(|p| p.data_source_id == ds_id && p.in_trash == in_trash)
            .filter(|p| filter.as_ref().is_none_or(|f| query::matches(f, p)))
            .collect();
        matched.sort_by(|a, b| query::compare(&sorts, a, b));
        let cap = control.limit("result_cap", 10_000.0).max(0.0) as usize;
        let capped = matched.len() > cap;
        matched.truncate(cap);
        let start = match resume {
            None => 0,
            Some(cursor) => cursor
                .next_page
                .and_then(|id| matched.iter().position(|p| p.id == id))
                .unwrap_or(cursor.offset),
        };
        let relation_inline = control.limit("relation_inline", 25.0).max(0.0) as usize;
        let end = (start + page_size).min(matched.len());
        let results: Vec<Value> = matched
            .get(start.min(end)..end)
            .unwrap_or_default()
            .iter()
            .map(|p| self.page_json(p, relation_inline))
            .collect();
        let has_more = end < matched.len();
        let next_page = matched.get(end).map(|p| p.id.clone());
        let next_cursor = if has_more {
            Value::String(self.new_cursor(ds_id.to_owned(), end, next_page))
        } else {
            Value::Null
        };
        let mut out = json!({
            "object": "list",
            "results": results,
            "next_cursor": next_cursor,
            "has_more": has_more,
            "type": "page_or_data_source",
            "page_or_data_source": {},
        });
        // The guide allows it on an earlier page than the last; by default
        // it comes with the page that reaches the cap (the last one), with
        // `request_status_early` = 1 on the first page of the walk only.
        let early = control.limit("request_status_early", 0.0) >= 1.0;
        let here = if early { start == 0 } else { !has_more };
        if capped && here {
            out["request_status"] = json!({
                "type": "incomplete",
                "incomplete_reason": "query_result_limit_reached",
            });
        }
        Ok(out)
    }

    fn property_item(
        &mut self,
        page_id: &str,
        prop_key: &str,
        query: &HashMap<String, String>,
        control: &Control,
        base_url: &str,
    ) -> Result<Value, ApiError> {
        let page = self
            .pages
            .get(page_id)
            .ok_or_else(|| ApiError::not_found("page", page_id))?;
        let ds = self.data_source(&page.data_source_id)?;
        let Some(prop) = ds.find(prop_key).cloned() else {
            return Err(ApiError::not_found("property", prop_key));
        };
        let value = Inner::value_json(&prop, page, usize::MAX);
        let items = match prop.kind.as_str() {
            "title" | "rich_text" | "relation" | "people" => value[prop.kind.as_str()]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            _ => {
                let mut single =
                    json!({ "object": "property_item", "id": prop.id, "type": prop.kind });
                single[prop.kind.as_str()] = value[prop.kind.as_str()].clone();
                return Ok(single);
            }
        };
        let page_size_max = control.limit("page_size_max", 100.0) as usize;
        let page_size = match query.get("page_size") {
            None => page_size_max.min(100),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=page_size_max).contains(&n) => n,
                _ => {
                    return Err(ApiError::validation(format!(
                        "page_size should be an integer from 1 to {page_size_max}, instead was `{s}`."
                    )));
                }
            },
        };
        let scope = format!("{page_id}/{}", prop.id);
        let start = match query.get("start_cursor") {
            None => 0,
            Some(c) => match self.cursors.get(c) {
                Some(cursor) if cursor.scope == scope => cursor.offset,
                _ => {
                    return Err(ApiError::validation(format!(
                        "start_cursor is not a valid cursor for this property: `{c}`."
                    )));
                }
            },
        };
        let end = (start + page_size).min(items.len());
        let results: Vec<Value> = items
            .get(start.min(end)..end)
            .unwrap_or_default()
            .iter()
            .map(|item| {
                let mut r = json!({ "object": "property_item", "id": prop.id, "type": prop.kind });
                r[prop.kind.as_str()] = item.clone();
                r
            })
            .collect();
        let has_more = end < items.len();
        let next_cursor = if has_more {
            Value::String(self.new_cursor(scope, end, None))
        } else {
            Value::Null
        };
        let next_url = match next_cursor.as_str() {
            Some(c) => json!(format!(
                "{base_url}/v1/pages/{page_id}/properties/{}?start_cursor={c}",
                prop.id
            )),
            None => Value::Null,
        };
        let mut property_item = json!({ "id": prop.id, "next_url": next_url, "type": prop.kind });
        property_item[prop.kind.as_str()] = json!({});
        Ok(json!({
            "object": "list",
            "results": results,
            "next_cursor": next_cursor,
            "has_more": has_more,
            "type": "property_item",
            "property_item": property_item,
        }))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

impl Notion {
    /// An empty workspace that accepts no token until [`Notion::add_token`].
    pub fn new() -> Notion {
        Notion {
            inner: Arc::new(Mutex::new(Inner::default())),
            control: Control::new(),
            bot_user: uuid::Uuid::new_v4().to_string(),
            person_user: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts `token` as an integration token (sent as `Bearer <token>`).
    pub fn add_token(&self, token: &str) {
        self.lock().tokens.insert(token.to_owned());
    }

    /// The test controls: clock, faults, request log, limits.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The API's routes, wrapped with [`Control::wrap`].
    pub fn router(&self) -> Router {
        let routes = Router::new()
            .route("/v1/{*rest}", any(handle))
            .fallback(handle)
            .with_state(self.clone());
        self.control.wrap(routes)
    }

    /// Serves the emulator on the current tokio runtime.
    pub async fn start(&self) -> std::io::Result<Running> {
        Running::spawn(self.router()).await
    }

    /// Serves the emulator on a thread of its own.
    pub fn start_thread(&self) -> std::io::Result<Running> {
        Running::spawn_thread(self.router())
    }

    /// Creates a database with these data sources, each given as its name
    /// and the API's property-schema object (e.g.
    /// `{"Name":{"title":{}},"Port":{"number":{}}}`). The title property gets
    /// the id `title`; the others short opaque ids. Returns the database id
    /// and the data source ids, in order.
    ///
    /// Panics when a data source does not have exactly one title property
    /// or a property's schema names no type.
    pub fn create_database(
        &self,
        title: &str,
        data_sources: Vec<(&str, Value)>,
    ) -> (String, Vec<String>) {
        let now = self.control.now_ms();
        let mut inner = self.lock();
        let db_id = uuid::Uuid::new_v4().to_string();
        let mut ids = Vec::new();
        for (name, properties) in data_sources {
            let Some(schema) = properties.as_object() else {
                panic!("data source `{name}`: properties must be an object, got {properties}");
            };
            let mut ds = DataSource {
                id: uuid::Uuid::new_v4().to_string(),
                name: name.to_owned(),
                database_id: db_id.clone(),
                created_ms: now,
                edited_ms: now,
                properties: Vec::new(),
            };
            for (prop_name, def) in schema {
                let Some((kind, config)) = schema_kind(def) else {
                    panic!("data source `{name}`, property `{prop_name}`: no type in {def}");
                };
                let id = if kind == "title" {
                    "title".to_owned()
                } else {
                    Inner::fresh_prop_id(&ds)
                };
                ds.properties.push(PropSchema {
                    id,
                    name: prop_name.clone(),
                    config: normalize_config(&kind, &config),
                    kind,
                });
            }
            let titles = ds.properties.iter().filter(|p| p.kind == "title").count();
            assert_eq!(
                titles, 1,
                "data source `{name}` needs exactly one title property, has {titles}"
            );
            ids.push(ds.id.clone());
            inner.data_sources.insert(ds.id.clone(), ds);
        }
        inner.databases.insert(
            db_id.clone(),
            Database {
                id: db_id.clone(),
                title: title.to_owned(),
                created_ms: now,
                data_sources: ids.clone(),
            },
        );
        (db_id, ids)
    }

    /// Another application creates a page (validated like the API; panics
    /// with the API's error when refused). Returns the page id.
    pub fn create_page(&self, data_source_id: &str, properties: Value) -> String {
        let now = self.control.now_ms();
        let person = self.person_user.clone();
        self.lock()
            .create_page(&dashed(data_source_id), &properties, now, &person)
            .unwrap_or_else(|e| panic!("create_page refused: {}: {}", e.code, e.message))
    }

    /// Another application updates a page's properties (only those given).
    pub fn update_page(&self, page_id: &str, properties: Value) {
        let now = self.control.now_ms();
        let person = self.person_user.clone();
        self.lock()
            .update_page(&dashed(page_id), Some(&properties), None, now, &person)
            .unwrap_or_else(|e| panic!("update_page refused: {}: {}", e.code, e.message));
    }

    /// Another application moves a page to the trash.
    pub fn trash_page(&self, page_id: &str) {
        let now = self.control.now_ms();
        let person = self.person_user.clone();
        self.lock()
            .update_page(&dashed(page_id), None, Some(true), now, &person)
            .unwrap_or_else(|e| panic!("trash_page refused: {}: {}", e.code, e.message));
    }

    /// Another application renames a property; its id stays the same.
    pub fn rename_property(&self, data_source_id: &str, old_name: &str, new_name: &str) {
        let now = self.control.now_ms();
        let data_source_id = &dashed(data_source_id);
        let body = json!({ "properties": { old_name: { "name": new_name } } });
        let mut inner = self.lock();
        if inner
            .data_sources
            .get(data_source_id)
            .is_some_and(|ds| !ds.properties.iter().any(|p| p.name == old_name))
        {
            panic!("rename_property: data source has no property named `{old_name}`");
        }
        inner
            .update_data_source(data_source_id, &body, now)
            .unwrap_or_else(|e| panic!("rename_property refused: {}: {}", e.code, e.message));
    }

    /// The page object as `GET /v1/pages/{id}` returns it, trashed or not.
    pub fn page(&self, page_id: &str) -> Option<Value> {
        let inner = self.lock();
        let inline = self.control.limit("relation_inline", 25.0).max(0.0) as usize;
        inner
            .pages
            .get(&dashed(page_id))
            .map(|p| inner.page_json(p, inline))
    }

    /// The data source's pages not in the trash, oldest first.
    pub fn pages(&self, data_source_id: &str) -> Vec<Value> {
        let inner = self.lock();
        let inline = self.control.limit("relation_inline", 25.0).max(0.0) as usize;
        let mut pages: Vec<&Page> = inner
            .pages
            .values()
            .filter(|p| p.data_source_id == dashed(data_source_id) && !p.in_trash)
            .collect();
        pages.sort_by(|a, b| query::compare(&[], a, b));
        pages.iter().map(|p| inner.page_json(p, inline)).collect()
    }

    fn check_rate(&self, token: &str) -> Result<(), ApiError> {
        let rate = self.control.limit("rate_per_sec", 3.0);
        let burst = self.control.limit("rate_burst", 10.0).max(1.0);
        let now = self.control.now_ms();
        let per_minute = self.control.limit("rate_per_minute", f64::INFINITY);
        let mut inner = self.lock();
        let window = inner.minute_log.entry(token.to_owned()).or_default();
        while window.front().is_some_and(|t| *t <= now - 60_000) {
            window.pop_front();
        }
        if per_minute.is_finite() && window.len() as f64 >= per_minute.max(0.0) {
            let frees_at = window.front().map_or(now + 60_000, |t| t + 60_000);
            let wait = ((frees_at - now) as f64 / 1000.0).ceil().clamp(1.0, 60.0) as u64;
            let mut error = ApiError::new(
                429,
                "rate_limited",
                "This request exceeds the number of requests allowed. Slow down and try again.",
            );
            error.retry_after = Some(wait);
            error.additional_data = Some(json!({ "rate_limit_reason": "connection_rate_limit" }));
            return Err(error);
        }
        let bucket = inner.buckets.entry(token.to_owned()).or_insert(Bucket {
            tokens: burst,
            last_ms: now,
        });
        let elapsed = (now - bucket.last_ms).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last_ms = now.max(bucket.last_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            inner
                .minute_log
                .entry(token.to_owned())
                .or_default()
                .push_back(now);
            return Ok(());
        }
        let wait = if rate > 0.0 {
            ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64
        } else {
            60
        };
        let mut error = ApiError::new(
            429,
            "rate_limited",
            "This request exceeds the number of requests allowed. Slow down and try again.",
        );
        error.retry_after = Some(wait);
        error.additional_data = Some(json!({ "rate_limit_reason": "connection_rate_limit" }));
        Err(error)
    }

    fn serve(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Err(invalid_url(method, path));
        };
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let known = token.is_some_and(|t| self.lock().tokens.contains(t));
        let Some(token) = token.filter(|_| known) else {
            return Err(ApiError::new(401, "unauthorized", "API token is invalid."));
        };
        let Some(version) = headers.get("notion-version").and_then(|v| v.to_str().ok()) else {
            return Err(ApiError::new(
                400,
                "missing_version",
                "Notion-Version header failed validation: Notion-Version header should be defined, \
                 instead was `undefined`.",
            ));
        };
        let well_formed =
            time::Date::parse(version, format_description!("[year]-[month]-[day]")).is_ok();
        if !well_formed {
            return Err(ApiError::validation(format!(
                "Notion-Version header failed validation: `{version}` is not a valid API version \
                 (expected a date such as {MIN_VERSION})."
            )));
        }
        if version < MIN_VERSION {
            return Err(ApiError::validation(format!(
                "Notion-Version `{version}` is too old: the data source endpoints need \
                 Notion-Version {MIN_VERSION} or later."
            )));
        }
        self.check_rate(token)?;
        if body.len() > MAX_REQUEST_BYTES {
            return Err(ApiError::validation(format!(
                "Request body is {} bytes; the limit is {MAX_REQUEST_BYTES} bytes (500 KB).",
                body.len()
            )));
        }
        let json_body: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| {
                ApiError::new(400, "invalid_json", format!("Error parsing JSON body: {e}"))
            })?
        };
        let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
        let mut segments = segments;
        if segments.len() >= 2
            && matches!(segments[0].as_str(), "databases" | "data_sources" | "pages")
        {
            segments[1] = dashed(&segments[1]);
        }
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let now = self.control.now_ms();
        let inline = self.control.limit("relation_inline", 25.0).max(0.0) as usize;
        let mut inner = self.lock();
        let mut out = match (method, segs.as_slice()) {
            ("GET", ["databases", id]) => inner
                .databases
                .get(*id)
                .map(|db| inner.database_json(db))
                .ok_or_else(|| ApiError::not_found("database", id)),
            ("GET", ["data_sources", id]) => Ok(Inner::data_source_json(inner.data_source(id)?)),
            ("PATCH", ["data_sources", id]) => {
                inner.update_data_source(id, &json_body, now)?;
                Ok(Inner::data_source_json(inner.data_source(id)?))
            }
            ("POST", ["data_sources", id, "query"]) => inner.query(id, &json_body, &self.control),
            ("POST", ["pages"]) => {
                let parent = &json_body["parent"];
                let ds_id = match (
                    parent["data_source_id"].as_str(),
                    parent["database_id"].as_str(),
                ) {
                    (Some(ds), _) => dashed(ds),
                    (None, Some(db)) => {
                        let db = &dashed(db);
                        let Some(database) = inner.databases.get(db) else {
                            return Err(ApiError::not_found("database", db));
                        };
                        match database.data_sources.as_slice() {
                            [only] => only.clone(),
                            _ => {
                                return Err(ApiError::validation(format!(
                                    "Database {db} has several data sources; give \
                                     parent.data_source_id instead of parent.database_id."
                                )));
                            }
                        }
                    }
                    _ => {
                        return Err(ApiError::validation(format!(
                            "body.parent.data_source_id should be defined, instead was `{}`.",
                            if parent.is_null() {
                                "undefined".to_owned()
                            } else {
                                parent.to_string()
                            }
                        )));
                    }
                };
                let properties = json_body.get("properties").cloned().unwrap_or(json!({}));
                let id = inner.create_page(&ds_id, &properties, now, &self.bot_user)?;
                let page = &inner.pages[&id];
                Ok(inner.page_json(page, inline))
            }
            ("GET", ["pages", id]) => inner
                .pages
                .get(*id)
                .map(|p| inner.page_json(p, inline))
                .ok_or_else(|| ApiError::not_found("page", id)),
            ("PATCH", ["pages", id]) => {
                if json_body.get("archived").is_some() && version >= ARCHIVED_REMOVED {
                    return Err(ApiError::validation(format!(
                        "body.archived was removed in Notion-Version {ARCHIVED_REMOVED}; \
                         send in_trash instead."
                    )));
                }
                let in_trash = match json_body
                    .get("in_trash")
                    .or_else(|| json_body.get("archived"))
                {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(other) => {
                        return Err(ApiError::validation(format!(
                            "body.in_trash should be a boolean, instead was `{other}`."
                        )));
                    }
                };
                inner.update_page(
                    id,
                    json_body.get("properties"),
                    in_trash,
                    now,
                    &self.bot_user,
                )?;
                let page = &inner.pages[*id];
                Ok(inner.page_json(page, inline))
            }
            ("GET", ["pages", id, "properties", prop]) => {
                let host = headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("api.notion.com");
                let base = format!("http://{host}");
                inner.property_item(id, prop, &parse_query(query), &self.control, &base)
            }
            _ => Err(invalid_url(method, path)),
        }?;
        if version < ARCHIVED_REMOVED {
            add_archived(&mut out);
        }
        let only = filter_properties(query);
        let filters = matches!(
            (method, segs.as_slice()),
            ("POST", ["data_sources", _, "query"]) | ("GET", ["pages", _])
        );
        if filters && let Some(ids) = only {
            keep_properties(&mut out, &ids);
        }
        Ok(out)
    }
}

/// The property ids of the `filter_properties` query parameter (given
/// once per id, as `filter_properties=ID` or `filter_properties[]=ID`), or
/// `None` when it is absent.
fn filter_properties(query: Option<&str>) -> Option<Vec<String>> {
    let ids: Vec<String> = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            matches!(
                percent_decode(k).as_str(),
                "filter_properties" | "filter_properties[]"
            )
            .then(|| percent_decode(v))
        })
        .collect();
    (!ids.is_empty()).then_some(ids)
}

/// Keeps only the properties whose id is in `ids` in a page object, or in
/// each page of a list.
fn keep_properties(v: &mut Value, ids: &[String]) {
    if let Some(results) = v.get_mut("results").and_then(Value::as_array_mut) {
        results
            .iter_mut()
            .for_each(|page| keep_properties(page, ids));
    }
    if v.get("object").and_then(Value::as_str) == Some("page")
        && let Some(properties) = v.get_mut("properties").and_then(Value::as_object_mut)
    {
        properties.retain(|_, p| {
            p.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| ids.iter().any(|want| want == id))
        });
    }
}

/// Adds the `archived` alias of `in_trash` to page, database and data
/// source objects (and to those in a list's results), as Notion-Versions
/// before 2026-03-11 return it.
fn add_archived(v: &mut Value) {
    if let Some(results) = v.get_mut("results").and_then(Value::as_array_mut) {
        results.iter_mut().for_each(add_archived);
    }
    let is_object = matches!(
        v.get("object").and_then(Value::as_str),
        Some("page" | "database" | "data_source")
    );
    if is_object && let Some(t) = v.get("in_trash").cloned() {
        v["archived"] = t;
    }
}

fn invalid_url(method: &str, path: &str) -> ApiError {
    ApiError::new(
        400,
        "invalid_request_url",
        format!("Invalid request URL: {method} {path} is not an endpoint of this API."),
    )
}

async fn handle(State(notion): State<Notion>, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, crate::control::MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::validation("Request body is too large; the limit is 500 KB.")
                .into_response();
        }
    };
    match notion.serve(&method, &path, query.as_deref(), &parts.headers, &bytes) {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests;
