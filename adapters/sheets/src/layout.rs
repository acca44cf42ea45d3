//! The layout: the tab (by sheet id or title), its header row, the column
//! of each mapped field and the hidden id column.

use reqwest::Method;
use serde_json::{Value as Json, json};

use chittysync::{AdapterError, ChangeTracking, ColumnSpec, RemoteColumn, RemoteTable};

use crate::SheetsAdapter;
use crate::client::{Budget, Call};
use crate::codec::{a1_cell, is_empty_cell, quote_sheet};

/// Where things are in the sheet.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// The sheet's numeric id (for structural requests).
    pub(crate) sheet_id: i64,
    /// The sheet's title (for ranges).
    pub(crate) title: String,
    /// The spreadsheet's time zone (serial date-times are local to it).
    pub(crate) time_zone: String,
    /// Rows in the grid.
    pub(crate) row_count: u64,
    /// Columns in the grid.
    pub(crate) column_count: u64,
    /// Header texts of row 1.
    pub(crate) headers: Vec<String>,
    /// The id column (0-based).
    pub(crate) id_col: usize,
    /// The mapped fields and their columns (0-based).
    pub(crate) columns: Vec<(ColumnSpec, usize)>,
}

/// The sheet's properties.
#[derive(Clone, Debug)]
pub(crate) struct SheetMeta {
    pub(crate) sheet_id: i64,
    /// The spreadsheet's time zone (`properties.timeZone`).
    pub(crate) time_zone: String,
    pub(crate) title: String,
    pub(crate) row_count: u64,
    pub(crate) column_count: u64,
}

pub(crate) fn header_texts(row: Option<&Vec<Json>>) -> Vec<String> {
    row.map(|cells| {
        cells
            .iter()
            .map(|c| match c {
                Json::String(s) => s.trim().to_owned(),
                Json::Null => String::new(),
                other => other.to_string(),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The rows of a value range (`values`), or none.
pub(crate) fn range_rows(range: &Json) -> Vec<Vec<Json>> {
    range
        .get("values")
        .and_then(Json::as_array)
        .map(|rows| {
            rows.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

impl SheetsAdapter {
    pub(crate) async fn sheet_meta(&self) -> Result<SheetMeta, AdapterError> {
        let url = self.sheets_url(&[&self.options.spreadsheet_id]);
        let body = self
            .send(
                Call {
                    method: Method::GET,
                    url,
                    query: vec![(
                        "fields",
                        "properties.timeZone,sheets.properties(sheetId,title,gridProperties)"
                            .into(),
                    )],
                    body: None,
                    budget: Budget::Read,
                    idempotent: true,
                },
                "read the spreadsheet's sheets",
            )
            .await?;
        let sheets: Vec<&Json> = body
            .get("sheets")
            .and_then(Json::as_array)
            .map(|s| s.iter().filter_map(|s| s.get("properties")).collect())
            .unwrap_or_default();
        let title_of = |p: &Json| {
            p.get("title")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let id_of_sheet = |p: &Json| p.get("sheetId").and_then(Json::as_i64).unwrap_or(0);
        let chosen = match (self.options.sheet_id, &self.options.sheet) {
            (Some(pinned), _) => sheets.iter().find(|p| id_of_sheet(p) == pinned).ok_or_else(|| {
                let titles: Vec<String> = sheets
                    .iter()
                    .map(|p| format!("'{}' (id {})", title_of(p), id_of_sheet(p)))
                    .collect();
                self.mismatch(format!(
                    "the sheet this binding was added for (sheet id {pinned}) is no longer in the spreadsheet (it has: {}); it was deleted: restore it from the version history, or set the binding's sheet_id setting to one of these ids",
                    titles.join(", ")
                ))
            })?,
            (None, Some(wanted)) => sheets.iter().find(|p| title_of(p) == *wanted).ok_or_else(|| {
                let titles: Vec<String> = sheets.iter().map(|p| title_of(p)).collect();
                self.mismatch(format!(
                    "the spreadsheet has no sheet titled '{wanted}' (it has: {}); fix the sheet setting or add the sheet",
                    titles.join(", ")
                ))
            })?,
            (None, None) => sheets.first().ok_or_else(|| {
                self.mismatch("the spreadsheet has no sheets; add one".into())
            })?,
        };
        let grid = chosen.get("gridProperties");
        let count = |k: &str| {
            grid.and_then(|g| g.get(k))
                .and_then(Json::as_u64)
                .unwrap_or(0)
        };
        Ok(SheetMeta {
            time_zone: body
                .pointer("/properties/timeZone")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned(),
            sheet_id: chosen.get("sheetId").and_then(Json::as_i64).unwrap_or(0),
            title: title_of(chosen),
            row_count: count("rowCount"),
            column_count: count("columnCount"),
        })
    }

    /// Maps headers to columns; `Err` lists the missing headers.
    pub(crate) fn layout_from(
        &self,
        meta: &SheetMeta,
        headers: Vec<String>,
    ) -> Result<Layout, Vec<String>> {
        let find = |name: &str| headers.iter().position(|h| h == name);
        let mut missing = Vec::new();
        let mut columns = Vec::new();
        for c in &self.spec.columns {
            match find(&c.column) {
                Some(i) => columns.push((c.clone(), i)),
                None => missing.push(c.column.clone()),
            }
        }
        let id_col = find(&self.options.id_header);
        if id_col.is_none() {
            missing.push(self.options.id_header.clone());
        }
        match id_col {
            Some(id_col) if missing.is_empty() => Ok(Layout {
                sheet_id: meta.sheet_id,
                time_zone: meta.time_zone.clone(),
                title: meta.title.clone(),
                row_count: meta.row_count,
                column_count: meta.column_count,
                headers,
                id_col,
                columns,
            }),
            _ => Err(missing),
        }
    }

    pub(crate) fn missing_headers(&self, missing: &[String], create: bool) -> AdapterError {
        let only_id = missing == [self.options.id_header.clone()];
        let what = if only_id && !create {
            format!(
                "row 1 has no '{}' header (the hidden column of record ids); have the binding create it",
                self.options.id_header
            )
        } else {
            format!(
                "row 1 lacks the header(s) {}; type them into row 1, or map the fields to existing headers in the binding",
                missing
                    .iter()
                    .map(|m| format!("'{m}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        self.mismatch(what)
    }

    /// Reads the sheet's properties and header row; with `create`, writes
    /// the headers of an empty sheet, or adds a missing id column.
    async fn read_layout(&self, create: bool) -> Result<Layout, AdapterError> {
        let meta = self.sheet_meta().await?;
        let header_range = format!("{}!1:1", quote_sheet(&meta.title));
        let got = self
            .batch_get(&[header_range], "read the header row")
            .await?;
        let headers = header_texts(range_rows(&got[0]).first());
        let layout = match self.layout_from(&meta, headers.clone()) {
            Ok(layout) => layout,
            Err(missing) => {
                let empty = headers.iter().all(String::is_empty);
                let only_id = missing == [self.options.id_header.clone()];
                if !create || !(empty || only_id) {
                    if empty {
                        return Err(self.mismatch(
                            "the sheet is empty (no header row); have the binding write the headers, or type them into row 1".into(),
                        ));
                    }
                    return Err(self.missing_headers(&missing, create));
                }
                let mut headers = if empty { Vec::new() } else { headers };
                if empty {
                    headers.extend(self.spec.columns.iter().map(|c| c.column.clone()));
                }
                let start = if empty {
                    0
                } else {
                    // After the last column with any content, headed or not
                    // (people keep notes in columns without a header).
                    let got = self
                        .batch_get(&[quote_sheet(&meta.title)], "read the sheet's used columns")
                        .await?;
                    let used = range_rows(&got[0])
                        .iter()
                        .filter_map(|r| r.iter().rposition(|c| !is_empty_cell(c)))
                        .map(|last| last + 1)
                        .max()
                        .unwrap_or(0);
                    used.max(headers.len())
                };
                let id_at = start.max(headers.len());
                headers.resize(id_at, String::new());
                headers.push(self.options.id_header.clone());
                self.write_headers(&meta, &headers, start).await?;
                let mut meta = meta;
                meta.column_count = meta.column_count.max(headers.len() as u64);
                self.layout_from(&meta, headers)
                    .map_err(|m| self.missing_headers(&m, create))?
            }
        };
        self.state.lock().expect("state lock").layout = Some(layout.clone());
        Ok(layout)
    }

    /// Writes `headers[start..]` into row 1, growing the grid's columns if
    /// needed, and hides the id column (the last header).
    async fn write_headers(
        &self,
        meta: &SheetMeta,
        headers: &[String],
        start: usize,
    ) -> Result<(), AdapterError> {
        let id_col = headers.len() - 1;
        let mut requests = Vec::new();
        if (headers.len() as u64) > meta.column_count {
            requests.push(json!({"appendDimension": {
                "sheetId": meta.sheet_id, "dimension": "COLUMNS",
                "length": headers.len() as u64 - meta.column_count,
            }}));
        }
        requests.push(json!({"updateDimensionProperties": {
            "range": {"sheetId": meta.sheet_id, "dimension": "COLUMNS",
                      "startIndex": id_col, "endIndex": id_col + 1},
            "properties": {"hiddenByUser": true},
            "fields": "hiddenByUser",
        }}));
        self.structural(requests, "add and hide the id column")
            .await?;
        let cells = headers
            .iter()
            .enumerate()
            .skip(start)
            .map(|(i, h)| (a1_cell(&meta.title, i, 1), Json::String(h.clone())))
            .collect();
        self.write_cells(cells, "write the header row").await
    }

    fn describe_layout(&self, layout: &Layout) -> RemoteTable {
        RemoteTable {
            name: format!("{}/{}", self.options.spreadsheet_id, layout.title),
            columns: layout
                .headers
                .iter()
                .filter(|h| !h.is_empty())
                .map(|h| RemoteColumn {
                    name: h.clone(),
                    type_name: "cell".into(),
                })
                .collect(),
            change_tracking: ChangeTracking::FullCompare {
                reason: "Google Sheets keeps no per-row change log: a sync compares the whole sheet, unless its Drive version shows nothing changed".into(),
            },
        }
    }

    pub(crate) async fn prepare_now(&self, create: bool) -> Result<RemoteTable, AdapterError> {
        let layout = self.read_layout(create).await?;
        self.state.lock().expect("state lock").fill_ids = true;
        Ok(self.describe_layout(&layout))
    }

    pub(crate) async fn describe_now(&self) -> Result<RemoteTable, AdapterError> {
        self.state.lock().expect("state lock").fill_ids = false;
        let layout = self.read_layout(false).await?;
        Ok(self.describe_layout(&layout))
    }

    /// The layout from the last read, or a fresh one.
    pub(crate) async fn layout(&self) -> Result<Layout, AdapterError> {
        let cached = self.state.lock().expect("state lock").layout.clone();
        match cached {
            Some(layout) => Ok(layout),
            None => self.read_layout(false).await,
        }
    }
}
