//! `/v1/registries/{registry}/records`: list (filters, sort, cursor pages),
//! create, get, replace, patch (JSON Merge Patch), delete, and the
//! idempotent upsert by a unique field a deploy pipeline needs.
//!
//! Every response carries the registry's `ETag` (its heads); a write with
//! `If-Match` is refused with 412 unless the registry is still in that state,
//! checked inside the write so nothing can slip in between.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chittysync::{ChangeHash, Record, Registry, Rule, Value, WriteError, Writer};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::problem::ApiQuery;
use crate::registries::{if_match, with_etag};
use crate::{AppState, Problem, ProblemDetails, Shared, blocking};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/registries/{registry}/records", get(list).post(create))
        .route(
            "/registries/{registry}/records/{id}",
            get(show).put(replace).patch(patch).delete(remove),
        )
        .route(
            "/registries/{registry}/records/by/{field}/{value}",
            get(show_by).put(upsert_by).patch(patch_by),
        )
}

/// A record: its id, its fields, and which fields hold concurrent values.
#[derive(Serialize, ToSchema)]
pub(crate) struct RecordView {
    /// The record's id.
    id: String,
    /// Field values by field name.
    #[schema(value_type = Object)]
    fields: BTreeMap<String, serde_json::Value>,
    /// Fields with concurrent values (see the registry's conflicts).
    conflicted: Vec<String>,
}

impl From<&Record> for RecordView {
    fn from(r: &Record) -> Self {
        RecordView {
            id: r.id.clone(),
            fields: r
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
            conflicted: r.conflicted.iter().cloned().collect(),
        }
    }
}

/// A page of records.
#[derive(Serialize, ToSchema)]
pub(crate) struct RecordPage {
    records: Vec<RecordView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// A record's fields, to create or replace it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordInput {
    /// The id of a new record; a new one is made if absent.
    #[serde(default)]
    id: Option<String>,
    /// Field values by field name; `null` leaves a field empty.
    #[schema(value_type = Object)]
    fields: BTreeMap<String, serde_json::Value>,
}

/// Which records, in what order, and where to start.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// `FIELD:VALUE`: only records whose field equals the value (as text).
    /// Repeat for several.
    #[serde(rename = "where", default)]
    filters: Vec<String>,
    /// A field to sort by, `-FIELD` for descending; records with equal
    /// values (or none) follow by id.
    #[serde(default)]
    sort: Option<String>,
    /// The most records to return.
    #[serde(default)]
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    #[serde(default)]
    cursor: Option<String>,
}

/// Where a page starts: after this sort value and id, under this order.
#[derive(Serialize, Deserialize)]
struct Cursor {
    sort: Option<String>,
    after: Option<TaggedValue>,
    id: String,
}

/// A value with its kind, so it reads back as the same value (a decimal's
/// JSON is a string, which would read back as text).
#[derive(Serialize, Deserialize)]
struct TaggedValue {
    kind: String,
    value: serde_json::Value,
}

impl TaggedValue {
    fn of(v: &Value) -> Self {
        let (kind, value) = match v {
            Value::Text(t) => ("text", serde_json::Value::String(t.clone())),
            Value::Integer(i) => ("integer", (*i).into()),
            Value::Decimal(d) => ("decimal", serde_json::Value::String(d.clone())),
            Value::Bool(b) => ("bool", (*b).into()),
            Value::Set(_) => ("set", v.to_json()),
            Value::Json(text) => ("json", serde_json::Value::String(text.clone())),
            _ => ("text", serde_json::Value::String(v.to_string())),
        };
        TaggedValue {
            kind: kind.to_owned(),
            value,
        }
    }

    fn value(&self) -> Option<Value> {
        let text = || self.value.as_str().map(str::to_owned);
        Some(match self.kind.as_str() {
            "text" => Value::Text(text()?),
            "integer" => Value::Integer(self.value.as_i64()?),
            "decimal" => Value::Decimal(text()?),
            "bool" => Value::Bool(self.value.as_bool()?),
            "set" => Value::from_json(&self.value),
            "json" => Value::Json(text()?),
            _ => return None,
        })
    }
}

/// Orders sort values: numbers by their size (a decimal's text does not sort
/// as its number), anything else as values order.
fn compare_values(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    fn number(v: &Value) -> Option<f64> {
        match v {
            Value::Integer(i) => Some(*i as f64),
            Value::Decimal(d) => d.parse().ok(),
            _ => None,
        }
    }
    match (a, b) {
        (Some(x), Some(y)) => match (number(x), number(y)) {
            (Some(m), Some(n)) if m != n => m.partial_cmp(&n).unwrap_or(std::cmp::Ordering::Equal),
            _ => x.cmp(y),
        },
        _ => a.cmp(&b),
    }
}

/// The order of two records under the sort field: by value, then by id.
fn order(a: (Option<&Value>, &str), b: (Option<&Value>, &str)) -> std::cmp::Ordering {
    compare_values(a.0, b.0).then_with(|| a.1.cmp(b.1))
}

impl Cursor {
    fn encode(&self) -> String {
        hex::encode(serde_json::to_vec(self).expect("cursors serialize"))
    }

    fn decode(text: &str) -> Result<Self, Problem> {
        let bad = || {
            Problem::bad_request("the cursor is not one this service gave; start again without it")
        };
        let bytes = hex::decode(text).map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }
}

/// The sort key of a record under `field`: its value, and its id.
fn key_of<'a>(r: &'a Record, field: Option<&str>) -> (Option<&'a Value>, &'a str) {
    (field.and_then(|f| r.fields.get(f)), r.id.as_str())
}

/// Lists records, filtered and sorted, one page at a time. Pages are cut by
/// the last record's sort value and id, so records that exist throughout a
/// listing are neither skipped nor repeated when others are written meanwhile.
#[utoipa::path(
    get, path = "/v1/registries/{registry}/records", tag = "records",
    security(("token" = [])),
    params(("registry" = String, Path, description = "The registry's name or id"), ListParams),
    responses(
        (status = 200, description = "A page of records", body = RecordPage,
         headers(("ETag" = String, description = "The registry's heads"))),
        (status = 400, description = "A malformed filter, sort or cursor", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Response, Problem> {
    let params = list_params(pairs)?;
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        let schema = registry.schema();
        let mut query = chittysync::Query::all();
        for filter in &params.filters {
            let (field, value) = filter.split_once(':').ok_or_else(|| {
                Problem::bad_request(format!("where={filter}: write it as FIELD:VALUE"))
            })?;
            if schema.get(field).is_none() {
                return Err(unknown_field(&registry, field));
            }
            query = query.filter(field, value);
        }
        let (descending, sort_field) = match params.sort.as_deref() {
            Some(s) => match s.strip_prefix('-') {
                Some(f) => (true, Some(f.to_owned())),
                None => (false, Some(s.to_owned())),
            },
            None => (false, None),
        };
        if let Some(f) = &sort_field
            && schema.get(f).is_none()
        {
            return Err(unknown_field(&registry, f));
        }
        let heads = registry.heads();
        let mut records = registry.list(&query);
        let field = sort_field.as_deref();
        records.sort_by(|a, b| {
            let o = order(key_of(a, field), key_of(b, field));
            if descending { o.reverse() } else { o }
        });
        let start = match &params.cursor {
            None => 0,
            Some(text) => {
                let cursor = Cursor::decode(text)?;
                if cursor.sort != params.sort {
                    return Err(Problem::bad_request(
                        "the cursor belongs to a listing with another sort; start again without it",
                    ));
                }
                let after = match &cursor.after {
                    Some(tagged) => Some(tagged.value().ok_or_else(|| {
                        Problem::bad_request(
                            "the cursor is not one this service gave; start again without it",
                        )
                    })?),
                    None => None,
                };
                let after = (after.as_ref(), cursor.id.as_str());
                records
                    .iter()
                    .position(|r| {
                        let o = order(key_of(r, field), after);
                        if descending { o.is_lt() } else { o.is_gt() }
                    })
                    .unwrap_or(records.len())
            }
        };
        let limit = params
            .limit
            .unwrap_or(state.options.max_page)
            .clamp(1, state.options.max_page);
        let page: Vec<&Record> = records.iter().skip(start).take(limit).collect();
        let next_cursor = (start + page.len() < records.len())
            .then(|| page.last())
            .flatten()
            .map(|last| {
                Cursor {
                    sort: params.sort.clone(),
                    after: field.and_then(|f| last.fields.get(f)).map(TaggedValue::of),
                    id: last.id.clone(),
                }
                .encode()
            });
        let body = RecordPage {
            records: page.into_iter().map(RecordView::from).collect(),
            next_cursor,
        };
        Ok(with_etag(axum::Json(body).into_response(), &heads))
    })
    .await
}

fn list_params(pairs: Vec<(String, String)>) -> Result<ListParams, Problem> {
    let mut params = ListParams {
        filters: Vec::new(),
        sort: None,
        limit: None,
        cursor: None,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "where" => params.filters.push(value),
            "sort" => params.sort = Some(value),
            "limit" => {
                let n: usize = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Problem::bad_request(format!("limit={value}: give a whole number above 0"))
                })?;
                params.limit = Some(n);
            }
            "cursor" => params.cursor = Some(value),
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter '{other}'; use where, sort, limit or cursor"
                )));
            }
        }
    }
    Ok(params)
}

fn unknown_field(registry: &Registry, field: &str) -> Problem {
    let fields: Vec<String> = registry
        .schema()
        .fields
        .iter()
        .map(|f| f.name.clone())
        .collect();
    Problem::bad_request(format!(
        "registry '{}' has no field '{field}'; its fields are {}",
        registry.name(),
        fields.join(", ")
    ))
}

fn record_response(
    status: StatusCode,
    record: &Record,
    heads: &[ChangeHash],
    location: Option<String>,
) -> Response {
    let mut response = (status, axum::Json(RecordView::from(record))).into_response();
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    with_etag(response, heads)
}

fn gone(registry: &Registry, id: &str) -> Problem {
    Problem::not_found(format!("registry '{}' has no record {id}", registry.name()))
}

/// Reads a write's body: a JSON object, with a message that says what is wrong.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(format!(
            "the body is not a record as this API takes it ({e}); send {{\"fields\": {{\"FIELD\": VALUE, …}}}}"
        ))
    })
}

/// The values of `fields`, null as "leave empty".
fn values(fields: &BTreeMap<String, serde_json::Value>) -> Vec<(String, Option<Value>)> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), (!v.is_null()).then(|| Value::from_json(v))))
        .collect()
}

/// Writes `fields` to record `id` as the token, replacing the record's
/// fields when `replace` (schema fields not given are emptied).
fn write_fields(
    w: &mut Writer<'_>,
    id: Option<&str>,
    fields: Vec<(String, Option<Value>)>,
    replace: bool,
) -> Result<String, WriteError> {
    let mut set = Vec::new();
    let mut clear: BTreeSet<String> = BTreeSet::new();
    for (field, value) in fields {
        match value {
            Some(v) => set.push((field, v)),
            None => {
                clear.insert(field);
            }
        }
    }
    let current = id.and_then(|id| w.get(id));
    if replace && let Some(current) = &current {
        for field in current.fields.keys() {
            if !set.iter().any(|(f, _)| f == field) {
                clear.insert(field.clone());
            }
        }
    }
    if let Some(current) = &current {
        clear.retain(|f| current.fields.contains_key(f));
    }
    let id = w.put(id, set)?;
    if !clear.is_empty() {
        w.unset(&id, clear)?;
    }
    Ok(id)
}

/// Creates a record.
#[utoipa::path(
    post, path = "/v1/registries/{registry}/records", tag = "records",
    security(("token" = [])),
    params(
        ("registry" = String, Path, description = "The registry's name or id"),
        ("If-Match" = Option<String>, Header, description = "Write only if the registry's ETag is still this"),
    ),
    request_body = RecordInput,
    responses(
        (status = 201, description = "Created", body = RecordView,
         headers(("ETag" = String, description = "The registry's heads"), ("Location" = String, description = "The new record"))),
        (status = 400, description = "A malformed body", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token may not write", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "A record with that id exists", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 412, description = "The registry changed since the ETag given", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A value breaks the schema; nothing was written", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let input: RecordInput = json_body(&body)?;
    let expected = if_match(&headers)?;
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        caller.require_writer(&registry)?;
        if let Some(id) = &input.id
            && registry.get(id).is_some()
        {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "exists",
                format!(
                    "registry '{}' has a record {id}; replace it with PUT or change it with PATCH",
                    registry.name()
                ),
            ));
        }
        let fields = values(&input.fields);
        let id = registry.write_as(
            &caller.0.identity,
            &caller.message("create a record"),
            |w| {
                if let Some(heads) = &expected {
                    w.expect_heads(heads)?;
                }
                write_fields(w, input.id.as_deref(), fields, false)
            },
        )?;
        // Heads first: an ETag older than its body only costs a retry.
        let heads = registry.heads();
        let record = registry.get(&id).ok_or_else(|| gone(&registry, &id))?;
        let location = format!("/v1/registries/{}/records/{id}", registry.name());
        Ok(record_response(
            StatusCode::CREATED,
            &record,
            &heads,
            Some(location),
        ))
    })
    .await
}

/// One record.
#[utoipa::path(
    get, path = "/v1/registries/{registry}/records/{id}", tag = "records",
    security(("token" = [])),
    params(
        ("registry" = String, Path, description = "The registry's name or id"),
        ("id" = String, Path, description = "The record's id"),
    ),
    responses(
        (status = 200, description = "The record", body = RecordView,
         headers(("ETag" = String, description = "The registry's heads"))),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry or record", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn show(
    State(state): State<Shared>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        let heads = registry.heads();
        let record = live(&registry, &id)?;
        Ok(record_response(StatusCode::OK, &record, &heads, None))
    })
    .await
}

fn live(registry: &Registry, id: &str) -> Result<Record, Problem> {
    registry
        .get(id)
        .filter(|r| r.deleted.is_none())
        .ok_or_else(|| gone(registry, id))
}

/// Replaces a record's fields: fields not given are emptied.
#[utoipa::path(
    put, path = "/v1/registries/{registry}/records/{id}", tag = "records",
    security(("token" = [])),
    params(
        ("registry" = String, Path, description = "The registry's name or id"),
        ("id" = String, Path, description = "The record's id"),
        ("If-Match" = Option<String>, Header, description = "Write only if the registry's ETag is still this"),
    ),
    request_body = RecordInput,
    responses(
        (status = 200, description = "Replaced", body = RecordView,
         headers(("ETag" = String, description = "The registry's heads"))),
        (status = 400, description = "A malformed body", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token may not write", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry or record", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 412, description = "The registry changed since the ETag given", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A value breaks the schema; nothing was written", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn replace(
    State(state): State<Shared>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    update(state, caller, name, id, &headers, &body, true).await
}

/// Changes some fields (JSON Merge Patch of `{"fields": {…}}`: a value sets
/// a field, `null` empties it, fields not named stay).
#[utoipa::path(
    patch, path = "/v1/registries/{registry}/records/{id}", tag = "records",
    security(("token" = [])),
    params(
        ("registry" = String, Path, description = "The registry's name or id"),
        ("id" = String, Path, description = "The record's id"),
        ("If-Match" = Option<String>, Header, description = "Write only if the registry's ETag is still this"),
    ),
    request_body(content = RecordInput, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "Changed", body = RecordView,
         headers(("ETag" = String, description = "The registry's heads"))),
        (status = 400, description = "A malformed body", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token may not write", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry or record", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 412, description = "The registry changed since the ETag given", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A value breaks the schema; nothing was written", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn patch(
    State(state): State<Shared>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    update(state, caller, name, id, &headers, &body, false).await
}

/// `PUT` (`replace`: fields not given are emptied) or `PATCH` of live
/// record `id`.
async fn update(
    state: Shared,
    caller: Caller,
    name: String,
    id: String,
    headers: &HeaderMap,
    body: &[u8],
    replace: bool,
) -> Result<Response, Problem> {
    let input: RecordInput = json_body(body)?;
    if input.id.as_ref().is_some_and(|given| *given != id) {
        return Err(Problem::bad_request(
            "the body's id differs from the id in the path; a record's id cannot change",
        ));
    }
    let expected = if_match(headers)?;
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        caller.require_writer(&registry)?;
        live(&registry, &id)?;
        write_record(
            &caller,
            &registry,
            &id,
            &input,
            expected.as_deref(),
            replace,
        )
    })
    .await
}

/// Writes the body's fields to live record `id` as the token: a merge
/// patch, or with `replace` a whole new set of fields.
fn write_record(
    caller: &Caller,
    registry: &Registry,
    id: &str,
    input: &RecordInput,
    expected: Option<&[ChangeHash]>,
    replace: bool,
) -> Result<Response, Problem> {
    let fields = values(&input.fields);
    let what = if replace {
        "replace a record"
    } else {
        "change a record"
    };
    registry.write_as(&caller.0.identity, &caller.message(what), |w| {
        if let Some(heads) = expected {
            w.expect_heads(heads)?;
        }
        write_fields(w, Some(id), fields, replace)
    })?;
    let heads = registry.heads();
    let record = live(registry, id)?;
    Ok(record_response(StatusCode::OK, &record, &heads, None))
}

/// Changes some fields of the record whose unique field holds a value (JSON
/// Merge Patch of `{"fields": {…}}`): what a pipeline that knows a service by
/// name sends to change its status.
#[utoipa::path(
    patch, path = "/v1/registries/{registry}/records/by/{field}/{value}", tag = "records",
    security(("token" = [])),
    params(
        ("registry" = String, Path, description = "The registry's name or id"),
        ("field" = String, Path, description = "A unique field"),
        ("value" = String, Path, description = "Its value"),
        ("If-Match" = Option<String>, Header, description = "Write only if the registry's ETag is still this"),
    ),
    request_body(content = RecordInput, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "Changed", body = RecordView,
         headers(("ETag" = String, description = "The registry's heads"))),
        (status = 400, description = "A malformed body, or the field is not unique", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token may not write", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry or record", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "Several records hold the value (made apart on replicas that then met)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 412, description = "The registry changed since the ETag given", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A value breaks the schema; nothing was written", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn patch_by(
    State(state): State<Shared>,
    caller: Caller,
    Path((name, field, value)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let input: RecordInput = json_body(&body)?;
    if input.id.is_some() {
        return Err(Problem::bad_request(
            "a patch by field names its record by the field; leave `id` out",
        ));
    }
    let expected = if_match(&headers)?;
    blocking(move || {
        let (registry, _, found) = find_by(&state, &caller, &name, &field, &value)?;
        caller.require_writer(&registry)?;
        let record = found.ok_or_else(|| {
            Problem::not_found(format!(
                "registry '{}' has no record whose {field} is {value}",
                registry.name()
            ))
        })?;
        write_record(
            &caller,
            &registry,
            &record.id,
            &input,
            expected.as_deref(),
            false,
        )
    })
    .await
}

/// Deletes a record.
#[utoipa::path(
    delete, path = "/v1/registries/{registry}/records/{id}", tag = "records",
    security(("token" = [])),
    params(
        ("registry" = String, Path, description = "The registry's name or id"),
        ("id" = String, Path, description = "The record's id"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the registry's ETag is still this"),
    ),
    responses(
        (status = 204, description = "Deleted",
         headers(("ETag" = String, description = "The registry's heads"))),
        (status = 400, description = "A malformed If-Match", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token may not write", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry or record", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 412, description = "The registry changed since the ETag given", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn remove(
    State(state): State<Shared>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        caller.require_writer(&registry)?;
        live(&registry, &id)?;
        registry.write_as(
            &caller.0.identity,
            &caller.message("delete a record"),
            |w| {
                if let Some(heads) = &expected {
                    w.expect_heads(heads)?;
                }
                w.delete(&id)
            },
        )?;
        Ok(with_etag(
            StatusCode::NO_CONTENT.into_response(),
            &registry.heads(),
        ))
    })
    .await
}

/// The live record whose unique `field` holds `value` (read as the field's
/// type, so `080` finds port 80), with the registry's heads read first.
fn find_by(
    state: &AppState,
    caller: &Caller,
    name: &str,
    field: &str,
    value: &str,
) -> Result<(Registry, Vec<ChangeHash>, Option<Record>), Problem> {
    let registry = caller.registry(state, name)?;
    let schema = registry.schema();
    let def = schema
        .get(field)
        .ok_or_else(|| unknown_field(&registry, field))?;
    if !def.unique {
        return Err(Problem::bad_request(format!(
            "field '{field}' of registry '{}' is not unique, so it cannot name a record; use a unique field or the record's id",
            registry.name()
        )));
    }
    let canonical = chittysync::coerce(def.field_type, Value::Text(value.to_owned()))
        .map_or_else(|_| value.to_owned(), |v| v.to_string());
    let heads = registry.heads();
    let mut found = registry.list(&chittysync::Query::all().filter(field, canonical));
    if found.len() > 1 {
        // Replicas that each created the value before they met.
        let ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "ambiguous",
            format!(
                "records {} of registry '{}' all have {field} {value}; settle which one stays, then retry",
                ids.join(", "),
                registry.name()
            ),
        ));
    }
    Ok((registry, heads, found.pop()))
}

/// The record whose unique field holds a value.
#[utoipa::path(
    get, path = "/v1/registries/{registry}/records/by/{field}/{value}", tag = "records",
    security(("token" = [])),
    params(
        ("registry" = String, Path, description = "The registry's name or id"),
        ("field" = String, Path, description = "A unique field"),
        ("value" = String, Path, description = "Its value"),
    ),
    responses(
        (status = 200, description = "The record", body = RecordView,
         headers(("ETag" = String, description = "The registry's heads"))),
        (status = 400, description = "The field is not unique", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry or record", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "Several records hold the value (made apart on replicas that then met)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn show_by(
    State(state): State<Shared>,
    caller: Caller,
    Path((name, field, value)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    blocking(move || {
        let (registry, heads, found) = find_by(&state, &caller, &name, &field, &value)?;
        let record = found.ok_or_else(|| {
            Problem::not_found(format!(
                "registry '{}' has no record whose {field} is {value}",
                registry.name()
            ))
        })?;
        Ok(record_response(StatusCode::OK, &record, &heads, None))
    })
    .await
}

/// Creates or replaces the record whose unique field holds a value: the same
/// request twice leaves one record and writes nothing the second time.
#[utoipa::path(
    put, path = "/v1/registries/{registry}/records/by/{field}/{value}", tag = "records",
    security(("token" = [])),
    params(
        ("registry" = String, Path, description = "The registry's name or id"),
        ("field" = String, Path, description = "A unique field"),
        ("value" = String, Path, description = "Its value"),
        ("If-Match" = Option<String>, Header, description = "Write only if the registry's ETag is still this"),
    ),
    request_body = RecordInput,
    responses(
        (status = 200, description = "Replaced, or already so", body = RecordView,
         headers(("ETag" = String, description = "The registry's heads"))),
        (status = 201, description = "Created", body = RecordView,
         headers(("ETag" = String, description = "The registry's heads"), ("Location" = String, description = "The new record"))),
        (status = 400, description = "A malformed body, or the field is not unique", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token may not write", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "Several records hold the value (made apart on replicas that then met)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 412, description = "The registry changed since the ETag given", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A value breaks the schema; nothing was written", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn upsert_by(
    State(state): State<Shared>,
    caller: Caller,
    Path((name, field, value)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let input: RecordInput = json_body(&body)?;
    if input.id.is_some() {
        return Err(Problem::bad_request(
            "an upsert by field names its record by the field; leave `id` out",
        ));
    }
    let expected = if_match(&headers)?;
    blocking(move || {
        let (registry, heads, found) = find_by(&state, &caller, &name, &field, &value)?;
        caller.require_writer(&registry)?;
        let mut fields = input.fields;
        if let Some(given) = fields.get(&field)
            && given.as_str().map_or_else(|| given.to_string(), str::to_owned) != value
        {
            return Err(Problem::bad_request(format!(
                "the body sets {field} to {given}, but the path names {value}; leave it out or make them equal"
            )));
        }
        fields.insert(field.clone(), serde_json::Value::String(value.clone()));
        let wanted = values(&fields);
        if let Some(current) = &found
            && unchanged(&registry, current, &wanted)
        {
            return Ok(record_response(StatusCode::OK, current, &heads, None));
        }
        let message = caller.message(&format!("upsert the record whose {field} is {value}"));
        let mut target = found.as_ref().map(|r| r.id.clone());
        let mut existed = found.is_some();
        let written = loop {
            let attempt = registry.write_as(&caller.0.identity, &message, |w| {
                if let Some(heads) = &expected {
                    w.expect_heads(heads)?;
                }
                write_fields(w, target.as_deref(), wanted.clone(), true)
            });
            match attempt {
                // Another writer created it meanwhile: replace theirs.
                Err(WriteError::Invalid(v))
                    if target.is_none()
                        && v.field == field
                        && matches!(&v.rule, Rule::Unique { .. }) =>
                {
                    let Rule::Unique { other_record } = v.rule else {
                        unreachable!("matched above")
                    };
                    target = Some(other_record);
                    existed = true;
                }
                other => break other?,
            }
        };
        let heads = registry.heads();
        let record = live(&registry, &written)?;
        Ok(if existed {
            record_response(StatusCode::OK, &record, &heads, None)
        } else {
            let location = format!("/v1/registries/{}/records/{written}", registry.name());
            record_response(StatusCode::CREATED, &record, &heads, Some(location))
        })
    })
    .await
}

/// Whether `record` already holds exactly the `wanted` values (as the
/// schema's types store them) and nothing else.
fn unchanged(registry: &Registry, record: &Record, wanted: &[(String, Option<Value>)]) -> bool {
    let schema = registry.schema();
    let mut want = BTreeMap::new();
    for (field, value) in wanted {
        let Some(value) = value else { continue };
        let Some(def) = schema.get(field) else {
            return false;
        };
        match chittysync::coerce(def.field_type, value.clone()) {
            Ok(v) => {
                want.insert(field.clone(), v);
            }
            Err(_) => return false,
        }
    }
    record.conflicted.is_empty() && record.fields == want
}
