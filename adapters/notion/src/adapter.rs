//! The adapter proper: fetching pages (windowed queries, incremental reads,
//! the trash) and applying row ops (create, update, trash), keeping the map
//! between record ids and page ids.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use reqwest::Method;
use serde_json::{Value as Json, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use chittysync::{
    Adapter, AdapterError, BoxFuture, Fetched, FieldKind, RemoteRow, RemoteTable, RowError, RowOp,
    RowResult, Value,
};
use chittysync_http::Retries;

use crate::client::{ApiError, CallError};
use crate::codec::{Cell, looks_like_page_id, plain_text, read_cell, rich_text, write_value};
use crate::layout::Layout;
use crate::{NotionAdapter, SYSTEM};

/// The most results one query page returns.
const PAGE_SIZE: u32 = 100;
/// Record ids looked up per query (one `or` of `equals` filters).
const LOOKUP_CHUNK: usize = 50;
/// How far before the cursor an incremental fetch starts re-reading.
const OVERLAP_MS: i64 = 60_000;

/// What the adapter remembers between calls.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) layout: Option<Layout>,
    /// Row id (record id, or page id of a page without one) → page id.
    pub(crate) pages: HashMap<String, String>,
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

impl NotionAdapter {
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
    pub(crate) fn properties(
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
        let policy = self.retry_policy();
        let what = format!("notion create of record '{id}'");
        let mut retries = Retries::new(&policy, &what);
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
                    // A page that landed may take a moment to show up in
                    // queries: wait (the backoff) before looking.
                    if !unknown || !retries.wait(&e, None).await {
                        return Err(e);
                    }
                    self.lookup(layout, BTreeSet::from([id.to_owned()]))
                        .await
                        .map_err(|e| CallError::Transport(e.to_string()))?;
                    if let Some(page) = self.state.lock().await.pages.get(id) {
                        return Ok(page.clone());
                    }
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
    pub(crate) fn referenced(layout: &Layout, op: &RowOp) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
