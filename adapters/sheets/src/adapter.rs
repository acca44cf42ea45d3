//! The adapter proper: fetching the sheet (skipped when the Drive version
//! is unchanged; ids given to rows added without one) and applying row
//! ops (deletes, then new rows and cell writes, at row numbers read after
//! the last wait).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value as Json, json};

use chittysync::{
    Adapter, AdapterError, BoxFuture, Fetched, RemoteRow, RemoteTable, RowError, RowOp, RowResult,
};
use chittysync_http::{Outcome, Retries};

use crate::client::Budget;
use crate::codec::{
    a1_cell, cell_chars, cell_to_value_in, column_letters, content_of, id_of, is_empty_cell,
    provisional_id, quote_sheet, value_to_cell, without_id,
};
use crate::layout::{Layout, SheetMeta, header_texts, range_rows};
use crate::{PREFERRED_BATCH, SYSTEM, SheetsAdapter};

/// Google Sheets holds at most this many characters in one cell.
const MAX_CELL_CHARS: usize = 50_000;
/// Keep each write request's body under Google's ~2 MB advice.
const MAX_BODY_BYTES: usize = 1_900_000;
/// The JSON around one cell's value in a values write:
/// `{"range":"…","majorDimension":"ROWS","values":[[…]]},` (51 bytes).
const CELL_OVERHEAD_BYTES: usize = 52;

/// An id to write into a row added without one.
struct NewId {
    /// The row (1-based) as read.
    row: u64,
    /// The id cell as read (a copy of another row's id, or none).
    had: Option<String>,
    /// [`content_of`] the row as read.
    content: String,
    /// The id to write.
    id: String,
}

/// Splits cell writes into request bodies of at most `max_bytes` (roughly),
/// never splitting one op's cells: returns groups of op indexes.
fn chunk_by_size(sizes: &[(usize, usize)], max_bytes: usize) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for &(op, bytes) in sizes {
        if !current.is_empty() && used + bytes > max_bytes {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(op);
        used += bytes;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The cells an op writes: `(column, cell)`.
type Cells = Vec<(usize, Json)>;

/// Where rows are, as read: the layout, each id's row (1-based) and the
/// last row with content.
struct Snapshot {
    layout: Layout,
    row_of: HashMap<String, u64>,
    last: u64,
}

/// The first request body's worth of `writes` (rows below `last` for new
/// ones, in order): the ops it carries and its `(range, cell)` pairs.
fn first_chunk(
    layout: &Layout,
    writes: Vec<(usize, Option<u64>, Cells)>,
    last: u64,
) -> (Vec<usize>, Vec<(String, Json)>) {
    let mut next_new = last;
    let ranges: Vec<(usize, Vec<(String, Json)>)> = writes
        .into_iter()
        .map(|(i, row, cells)| {
            let row = row.unwrap_or_else(|| {
                next_new += 1;
                next_new
            });
            let cells = cells
                .into_iter()
                .map(|(col, cell)| (a1_cell(&layout.title, col, row), cell))
                .collect();
            (i, cells)
        })
        .collect();
    let sizes: Vec<(usize, usize)> = ranges
        .iter()
        .enumerate()
        .map(|(k, (_, cells))| {
            let bytes = cells
                .iter()
                .map(|(r, c)| r.len() + c.to_string().len() + CELL_OVERHEAD_BYTES)
                .sum();
            (k, bytes)
        })
        .collect();
    let chunk = chunk_by_size(&sizes, MAX_BODY_BYTES)
        .into_iter()
        .next()
        .unwrap_or_default();
    let carried = chunk.iter().map(|&k| ranges[k].0).collect();
    let cells = chunk
        .iter()
        .flat_map(|&k| ranges[k].1.iter().cloned())
        .collect();
    (carried, cells)
}

impl SheetsAdapter {
    async fn fetch_now(&self, since: Option<&str>) -> Result<Fetched, AdapterError> {
        // The version first: an edit landing between it and the read is
        // read now and seen again next time (the version moved on).
        let (version, modified_at) = self.drive_version().await?;
        if since == Some(version.as_str()) {
            return Ok(Fetched {
                rows: Vec::new(),
                deleted: Vec::new(),
                complete: false,
                cursor: Some(version),
            });
        }
        let cached = self.layout().await?;
        let got = self
            .batch_get(&[quote_sheet(&cached.title)], "read the sheet")
            .await?;
        let mut grid = range_rows(&got[0]);
        let headers = header_texts(grid.first());
        let meta = SheetMeta {
            time_zone: cached.time_zone.clone(),
            sheet_id: cached.sheet_id,
            title: cached.title.clone(),
            row_count: cached.row_count.max(grid.len() as u64),
            column_count: cached.column_count,
        };
        let layout = self
            .layout_from(&meta, headers)
            .map_err(|m| self.missing_headers(&m, false))?;
        // A binding that only pulls never writes to the sheet: its new rows
        // keep provisional ids.
        let fill = self.state.lock().expect("state lock").fill_ids && !self.options.pull_only;
        let mut rows = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut new_ids: Vec<NewId> = Vec::new();
        for (i, cells) in grid.iter_mut().enumerate().skip(1) {
            let row_number = i as u64 + 1;
            // Only mapped columns hold a record's content: a row with
            // something only in other columns (people's notes) is none.
            let mapped = layout
                .columns
                .iter()
                .any(|(_, c)| cells.get(*c).is_some_and(|c| !is_empty_cell(c)));
            if !mapped {
                // A record whose cells were all cleared (not deleted):
                // reported, never taken as a clearing of every field.
                if let Some(id) = id_of(cells.get(layout.id_col))
                    && seen.insert(id.clone())
                {
                    let headers: Vec<&str> = layout
                        .columns
                        .iter()
                        .map(|(c, _)| c.column.as_str())
                        .collect();
                    let reason = format!(
                        "sheet row {row_number} has an id but no value in any mapped column ({}); fill it in, or delete the whole row to delete the record",
                        headers.join(", ")
                    );
                    rows.push(RemoteRow::invalid(id, reason).modified_at(modified_at));
                }
                continue;
            }
            let id = match id_of(cells.get(layout.id_col)) {
                Some(id) if seen.insert(id.clone()) => id,
                // No id, or a copy of another row's: a new row.
                _ if fill => {
                    let id = uuid::Uuid::now_v7().to_string();
                    seen.insert(id.clone());
                    new_ids.push(NewId {
                        row: row_number,
                        had: id_of(cells.get(layout.id_col)),
                        content: content_of(cells, layout.id_col),
                        id: id.clone(),
                    });
                    id
                }
                _ => {
                    let base = provisional_id(&without_id(cells, layout.id_col));
                    let mut id = base.clone();
                    let mut n = 1;
                    while !seen.insert(id.clone()) {
                        n += 1;
                        id = format!("{base}-{n}");
                    }
                    id
                }
            };
            let mut fields = BTreeMap::new();
            for (spec, col) in &layout.columns {
                if let Some(v) = cells
                    .get(*col)
                    .and_then(|c| cell_to_value_in(c, spec.field_type, &layout.time_zone))
                {
                    fields.insert(spec.field.clone(), v);
                }
            }
            rows.push(RemoteRow::new(id, fields).modified_at(modified_at));
        }
        if !new_ids.is_empty() {
            tracing::info!(table = %self.shown, rows = new_ids.len(), "giving ids to rows added without one");
            let skipped = self.write_new_ids(&layout, new_ids).await?;
            // A row that moved or got an id meanwhile gets its id next run.
            rows.retain(|r| !skipped.contains(&r.id));
        }
        self.state.lock().expect("state lock").layout = Some(layout);
        Ok(Fetched {
            rows,
            deleted: Vec::new(),
            complete: true,
            cursor: Some(version),
        })
    }

    /// Writes the ids of rows added without one. Before each attempt
    /// (after every wait: backoff and budget) the sheet is read again, and
    /// a row whose id cell is no longer as read, or whose content moved, is
    /// skipped (it gets its id next run), so an id never lands on another
    /// row. Returns the ids not written.
    async fn write_new_ids(
        &self,
        layout: &Layout,
        mut pending: Vec<NewId>,
    ) -> Result<HashSet<String>, AdapterError> {
        let action = "write ids of rows added without one";
        let mut skipped = HashSet::new();
        let policy = self.retry_policy();
        let what = self.request_name(action);
        let mut retries = Retries::new(&policy, &what);
        loop {
            self.writes.until_ready().await;
            let got = self
                .batch_get(
                    &[quote_sheet(&layout.title)],
                    "re-read the sheet before writing ids",
                )
                .await?;
            let grid = range_rows(&got[0]);
            let headers = header_texts(grid.first());
            let id_col = headers.iter().position(|h| *h == self.options.id_header);
            pending.retain(|p| {
                let here = id_col == Some(layout.id_col)
                    && grid.get(p.row as usize - 1).is_some_and(|cells| {
                        id_of(cells.get(layout.id_col)) == p.had
                            && content_of(cells, layout.id_col) == p.content
                    });
                if !here {
                    skipped.insert(p.id.clone());
                }
                here
            });
            if pending.is_empty() {
                return Ok(skipped);
            }
            let cells = pending
                .iter()
                .map(|p| {
                    (
                        a1_cell(&layout.title, layout.id_col, p.row),
                        Json::String(p.id.clone()),
                    )
                })
                .collect();
            match self
                .attempt(&self.values_call(cells, Budget::Prepaid))
                .await
            {
                Outcome::Done(_) => return Ok(skipped),
                Outcome::Retry { error, retry_after } => {
                    if !retries.wait(&error, retry_after).await {
                        return Err(self.exhausted(action, error, retries.attempts()));
                    }
                }
                Outcome::Fail(refusal) => return Err(self.refused(action, refusal)),
            }
        }
    }

    /// Re-reads where rows are now: the layout, each id's row and the last
    /// row with content. Only the header row and the id column, unless
    /// `whole`: rows will be added, and must go below every row with
    /// content, including rows typed in since the fetch without an id.
    /// Either way one request (two if someone moved the id column).
    async fn current_rows(
        &self,
        layout: &Layout,
        whole: bool,
    ) -> Result<(Layout, HashMap<String, u64>, u64), AdapterError> {
        let title = quote_sheet(&layout.title);
        let letter = column_letters(layout.id_col);
        let ranges = if whole {
            vec![title.clone()]
        } else {
            vec![format!("{title}!1:1"), format!("{title}!{letter}:{letter}")]
        };
        let got = self
            .batch_get(&ranges, "re-read the ids before writing")
            .await?;
        let first = range_rows(&got[0]);
        let headers = header_texts(first.first());
        let meta = SheetMeta {
            time_zone: layout.time_zone.clone(),
            sheet_id: layout.sheet_id,
            title: layout.title.clone(),
            row_count: layout.row_count,
            column_count: layout.column_count,
        };
        let fresh = self
            .layout_from(&meta, headers)
            .map_err(|m| self.missing_headers(&m, false))?;
        let ids: Vec<Option<String>> = if whole {
            first.iter().map(|r| id_of(r.get(fresh.id_col))).collect()
        } else {
            let column = if fresh.id_col == layout.id_col {
                range_rows(&got[1])
            } else {
                // Someone moved the id column: read it where it is now.
                let letter = column_letters(fresh.id_col);
                let got = self
                    .batch_get(
                        &[format!("{title}!{letter}:{letter}")],
                        "re-read the moved id column",
                    )
                    .await?;
                range_rows(&got[0])
            };
            column.iter().map(|r| id_of(r.first())).collect()
        };
        let mut rows = HashMap::new();
        let mut last = 1;
        for (i, id) in ids.into_iter().enumerate().skip(1) {
            if let Some(id) = id {
                let row = i as u64 + 1;
                last = row;
                rows.entry(id).or_insert(row);
            }
        }
        if whole {
            // Trailing empty rows are trimmed: the last one read has content.
            last = last.max(first.len() as u64);
        }
        Ok((fresh, rows, last))
    }

    /// Where rows are now (see [`Self::current_rows`]); with `whole`, the
    /// grid's size too. Called right after waiting for the write budget,
    /// so the write that follows uses row numbers read after every wait.
    async fn snapshot(&self, known: &Layout, whole: bool) -> Result<Snapshot, AdapterError> {
        let known = if whole {
            // New rows may need a bigger grid: its size now.
            let meta = self.sheet_meta().await?;
            Layout {
                sheet_id: meta.sheet_id,
                time_zone: meta.time_zone,
                title: meta.title,
                row_count: meta.row_count,
                column_count: meta.column_count,
                ..known.clone()
            }
        } else {
            known.clone()
        };
        let (layout, row_of, last) = self.current_rows(&known, whole).await?;
        Ok(Snapshot {
            layout,
            row_of,
            last,
        })
    }

    /// The cells an op writes: `(column, cell)`.
    fn op_cells(layout: &Layout, op: &RowOp) -> Cells {
        match op {
            RowOp::Delete { .. } => Vec::new(),
            RowOp::Create { fields, .. } => layout
                .columns
                .iter()
                .map(|(spec, col)| {
                    let cell = fields
                        .get(&spec.field)
                        .map_or(Json::String(String::new()), |v| {
                            value_to_cell(v, spec.field_type)
                        });
                    (*col, cell)
                })
                .collect(),
            RowOp::Update { fields, .. } => layout
                .columns
                .iter()
                .filter_map(|(spec, col)| {
                    let change = fields.get(&spec.field)?;
                    let cell = change.as_ref().map_or(Json::String(String::new()), |v| {
                        value_to_cell(v, spec.field_type)
                    });
                    Some((*col, cell))
                })
                .collect(),
        }
    }

    /// The error of an op with a value too long for a cell, if it has one.
    fn too_long(&self, layout: &Layout, op: &RowOp) -> Option<RowError> {
        let cells = Self::op_cells(layout, op);
        let (col, cell) = cells.iter().find(|(_, c)| cell_chars(c) > MAX_CELL_CHARS)?;
        let field = layout
            .columns
            .iter()
            .find(|(_, c)| c == col)
            .map_or("?", |(s, _)| s.field.as_str());
        Some(RowError {
            message: format!(
                "{SYSTEM} {}: row {}: field {field} has {} characters, but a Google Sheets cell holds at most {MAX_CELL_CHARS}; shorten the value",
                self.shown,
                op.id(),
                cell_chars(cell)
            ),
            retryable: false,
        })
    }

    /// Deletes the rows of the delete ops `todo` bottom-up, in a request of
    /// their own. Before each attempt (after every wait: backoff and
    /// budget) the ids are read again, so a row a person moved meanwhile is
    /// deleted where it is now. A refused request (4xx) fails only these
    /// ops, for good, with the reason. Returns where rows are after the
    /// deletes when that is known without reading again.
    async fn delete_rows(
        &self,
        ops: &[RowOp],
        todo: &[usize],
        known: &Layout,
        whole: bool,
        results: &mut HashMap<usize, RowResult>,
    ) -> Result<Option<Snapshot>, AdapterError> {
        let action = "delete rows";
        let policy = self.retry_policy();
        let what = self.request_name(action);
        let mut retries = Retries::new(&policy, &what);
        loop {
            self.writes.until_ready().await;
            let snap = self.snapshot(known, whole).await?;
            let mut rows: Vec<(usize, u64)> = Vec::new();
            for &i in todo {
                match snap.row_of.get(ops[i].id()) {
                    Some(&row) => rows.push((i, row)),
                    // Gone already (a person, or an earlier attempt).
                    None => {
                        results.insert(i, Ok(ops[i].id().to_owned()));
                    }
                }
            }
            if rows.is_empty() {
                return Ok(Some(snap));
            }
            rows.sort_by_key(|&(_, row)| std::cmp::Reverse(row));
            let requests: Vec<Json> = rows
                .iter()
                .map(|(_, row)| {
                    json!({"deleteDimension": {"range": {
                        "sheetId": snap.layout.sheet_id, "dimension": "ROWS",
                        "startIndex": row - 1, "endIndex": row,
                    }}})
                })
                .collect();
            let (message, retryable) = match self
                .attempt(&self.structural_call(requests, Budget::Prepaid))
                .await
            {
                Outcome::Done(_) => {
                    for (i, _) in &rows {
                        results.insert(*i, Ok(ops[*i].id().to_owned()));
                    }
                    let deleted: Vec<u64> = rows.iter().map(|(_, r)| *r).collect();
                    let shift =
                        |row: u64| row - deleted.iter().filter(|&&d| d < row).count() as u64;
                    let row_of = snap
                        .row_of
                        .into_iter()
                        .filter(|(_, r)| !deleted.contains(r))
                        .map(|(id, r)| (id, shift(r)))
                        .collect();
                    let last =
                        snap.last - deleted.iter().filter(|&&r| r <= snap.last).count() as u64;
                    let layout = Layout {
                        row_count: snap.layout.row_count.saturating_sub(deleted.len() as u64),
                        ..snap.layout
                    };
                    return Ok(Some(Snapshot {
                        layout,
                        row_of,
                        last,
                    }));
                }
                Outcome::Retry { error, retry_after } => {
                    if retries.wait(&error, retry_after).await {
                        continue;
                    }
                    (
                        format!(
                            "{}; no row was deleted, run the sync again",
                            self.exhausted(action, error, retries.attempts())
                        ),
                        true,
                    )
                }
                Outcome::Fail(refusal) if refusal.status().is_some_and(|s| s.is_client_error()) => {
                    (
                        format!(
                            "{}; these rows were not deleted (other changes were written)",
                            self.refused(action, refusal)
                        ),
                        false,
                    )
                }
                Outcome::Fail(refusal) => (
                    format!(
                        "{}; the rows may not have been deleted: the next sync reads the sheet again and finishes",
                        self.refused(action, refusal)
                    ),
                    true,
                ),
            };
            for (i, _) in &rows {
                results.insert(
                    *i,
                    Err(RowError {
                        message: message.clone(),
                        retryable,
                    }),
                );
            }
            return Ok(None);
        }
    }

    /// Writes the cells of the create and update ops `todo`: grows the grid
    /// for new rows, then one values write (split only if very large). The
    /// row numbers of every request are read after the last wait before it
    /// (backoff or budget): `fresh` is used only if no wait is needed.
    /// Returns the layout as last read.
    async fn write_rows(
        &self,
        ops: &[RowOp],
        todo: Vec<usize>,
        known: &Layout,
        mut fresh: Option<Snapshot>,
        results: &mut HashMap<usize, RowResult>,
    ) -> Result<Layout, AdapterError> {
        let action = "write rows";
        let policy = self.retry_policy();
        let what = self.request_name(action);
        let mut retries = Retries::new(&policy, &what);
        let mut pending = todo;
        let mut known = known.clone();
        while !pending.is_empty() {
            let creates = pending
                .iter()
                .any(|&i| matches!(ops[i], RowOp::Create { .. }));
            let snap = match fresh.take() {
                Some(snap) if self.writes.try_spend() => snap,
                _ => {
                    self.writes.until_ready().await;
                    self.snapshot(&known, creates).await?
                }
            };
            known = snap.layout.clone();
            let layout = &snap.layout;
            let writes = self.placed_writes(ops, &pending, &snap, results);
            pending = writes.iter().map(|(i, _, _)| *i).collect();
            if writes.is_empty() {
                break;
            }
            let new_rows = writes.iter().filter(|(_, r, _)| r.is_none()).count() as u64;
            let grow = (snap.last + new_rows).saturating_sub(layout.row_count);
            // The ops a failure of this request fails.
            let carried: Vec<usize>;
            let (error, retry_after) = if grow > 0 {
                carried = pending.clone();
                let request = json!({"appendDimension": {
                    "sheetId": layout.sheet_id, "dimension": "ROWS", "length": grow,
                }});
                match self
                    .attempt(&self.structural_call(vec![request], Budget::Prepaid))
                    .await
                {
                    Outcome::Done(_) => {
                        // Appending moves no row: the snapshot still holds.
                        let layout = Layout {
                            row_count: layout.row_count + grow,
                            ..snap.layout.clone()
                        };
                        fresh = Some(Snapshot { layout, ..snap });
                        continue;
                    }
                    Outcome::Retry { error, retry_after } => (error, Some(retry_after)),
                    Outcome::Fail(error) => (error, None),
                }
            } else {
                let cells;
                (carried, cells) = first_chunk(layout, writes, snap.last);
                match self
                    .attempt(&self.values_call(cells, Budget::Prepaid))
                    .await
                {
                    Outcome::Done(_) => {
                        for &i in &carried {
                            results.insert(i, Ok(ops[i].id().to_owned()));
                        }
                        pending.retain(|i| !carried.contains(i));
                        retries.reset();
                        continue;
                    }
                    Outcome::Retry { error, retry_after } => (error, Some(retry_after)),
                    Outcome::Fail(error) => (error, None),
                }
            };
            // `retry_after` is `Some` when the request may be sent again.
            let message = match retry_after {
                Some(retry_after) => {
                    if retries.wait(&error, retry_after).await {
                        continue;
                    }
                    format!(
                        "{}; run the sync again",
                        self.exhausted(action, error, retries.attempts())
                    )
                }
                None => format!("{}; run the sync again", self.refused(action, error)),
            };
            for &i in &carried {
                results.insert(
                    i,
                    Err(RowError {
                        message: message.clone(),
                        retryable: true,
                    }),
                );
            }
            pending.retain(|i| !carried.contains(i));
        }
        Ok(known)
    }

    /// Where each pending op writes, as `(op, its row or None for a new
    /// one, cells)`; a create's cells include its id. An update or delete
    /// whose row is gone fails in `results` and is left out.
    fn placed_writes(
        &self,
        ops: &[RowOp],
        pending: &[usize],
        snap: &Snapshot,
        results: &mut HashMap<usize, RowResult>,
    ) -> Vec<(usize, Option<u64>, Cells)> {
        let layout = &snap.layout;
        let mut writes = Vec::new();
        for &i in pending {
            let op = &ops[i];
            let mut cells = Self::op_cells(layout, op);
            match (op, snap.row_of.get(op.id())) {
                (_, Some(&row)) => writes.push((i, Some(row), cells)),
                (RowOp::Create { id, .. }, None) => {
                    cells.push((layout.id_col, Json::String(id.clone())));
                    writes.push((i, None, cells));
                }
                (_, None) => {
                    results.insert(
                        i,
                        Err(RowError {
                            message: format!(
                                "{SYSTEM} {}: row {} is no longer in the sheet (deleted since it was read); the next sync takes the delete into account",
                                self.shown,
                                op.id()
                            ),
                            retryable: true,
                        }),
                    );
                }
            }
        }
        writes
    }

    async fn apply_now(&self, ops: &[RowOp]) -> Result<Vec<RowResult>, AdapterError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        // The last op for an id wins; its copies share its result.
        let mut last_op: HashMap<&str, usize> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            last_op.insert(op.id(), i);
        }
        let mut todo: Vec<usize> = last_op.values().copied().collect();
        todo.sort_unstable();
        let mut results: HashMap<usize, RowResult> = HashMap::new();

        let known = self.layout().await?;
        let mut deletes = Vec::new();
        let mut writes = Vec::new();
        for &i in &todo {
            match &ops[i] {
                RowOp::Delete { .. } => deletes.push(i),
                op => match self.too_long(&known, op) {
                    Some(e) => {
                        results.insert(i, Err(e));
                    }
                    None => writes.push(i),
                },
            }
        }
        let has_creates = writes
            .iter()
            .any(|&i| matches!(ops[i], RowOp::Create { .. }));
        // Deletes first (a request of their own), so new rows land right
        // after the last remaining row.
        let fresh = if deletes.is_empty() {
            None
        } else {
            self.delete_rows(ops, &deletes, &known, has_creates, &mut results)
                .await?
        };
        let known = match &fresh {
            Some(snap) => snap.layout.clone(),
            None => known,
        };
        let layout = if writes.is_empty() {
            known
        } else {
            self.write_rows(ops, writes, &known, fresh, &mut results)
                .await?
        };
        self.state.lock().expect("state lock").layout = Some(layout);
        Ok(ops
            .iter()
            .map(|op| {
                results.get(&last_op[op.id()]).cloned().unwrap_or_else(|| {
                    Err(RowError {
                        message: format!("row {} was not written", op.id()),
                        retryable: true,
                    })
                })
            })
            .collect())
    }
}

impl Adapter for SheetsAdapter {
    fn system(&self) -> &str {
        SYSTEM
    }

    fn table(&self) -> &str {
        &self.shown
    }

    fn prepare(&self, create: bool) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        Box::pin(self.prepare_now(create))
    }

    fn describe(&self) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        Box::pin(self.describe_now())
    }

    fn fetch<'a>(&'a self, since: Option<&'a str>) -> BoxFuture<'a, Result<Fetched, AdapterError>> {
        Box::pin(self.fetch_now(since))
    }

    fn apply<'a>(
        &'a self,
        ops: &'a [RowOp],
    ) -> BoxFuture<'a, Result<Vec<RowResult>, AdapterError>> {
        Box::pin(self.apply_now(ops))
    }

    /// Quotas count requests, not rows: a run's writes go in one apply,
    /// which splits its values write only where a request body would pass
    /// the size Google advises.
    fn preferred_batch(&self) -> Option<usize> {
        Some(PREFERRED_BATCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_writes_split_between_ops_never_within_one() {
        let sizes = vec![(0, 400), (1, 400), (2, 400), (3, 1000), (4, 10)];
        assert_eq!(
            chunk_by_size(&sizes, 1000),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
        assert_eq!(chunk_by_size(&sizes, 10_000), vec![vec![0, 1, 2, 3, 4]]);
        assert!(chunk_by_size(&[], 10).is_empty());
    }
}
