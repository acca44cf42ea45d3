//! One spreadsheet's state: its sheets' grids, sharing and Drive version,
//! and the cell-level rules (input parsing, rendering, trimming).

use std::collections::BTreeSet;

use serde_json::{Number, Value};

/// One sheet (tab): its size, cells and hidden rows/columns.
#[derive(Clone, Debug)]
pub(crate) struct Sheet {
    pub(crate) id: i64,
    pub(crate) title: String,
    pub(crate) row_count: usize,
    pub(crate) column_count: usize,
    /// Ragged rows; `Value::Null` is an empty cell.
    pub(crate) cells: Vec<Vec<Value>>,
    pub(crate) hidden_rows: BTreeSet<usize>,
    pub(crate) hidden_columns: BTreeSet<usize>,
    /// `gridProperties.frozenRowCount` and `frozenColumnCount`.
    pub(crate) frozen_rows: usize,
    pub(crate) frozen_columns: usize,
}

static EMPTY: Value = Value::Null;

impl Sheet {
    /// A new Google sheet's size: 1000 rows by 26 columns.
    pub(crate) fn new(id: i64, title: &str) -> Self {
        Sheet {
            id,
            title: title.to_owned(),
            row_count: 1000,
            column_count: 26,
            cells: Vec::new(),
            hidden_rows: BTreeSet::new(),
            hidden_columns: BTreeSet::new(),
            frozen_rows: 0,
            frozen_columns: 0,
        }
    }

    pub(crate) fn get(&self, row: usize, col: usize) -> &Value {
        self.cells
            .get(row)
            .and_then(|r| r.get(col))
            .unwrap_or(&EMPTY)
    }

    /// Sets a cell (`Value::Null` empties it).
    pub(crate) fn set(&mut self, row: usize, col: usize, value: Value) {
        if value.is_null() {
            if let Some(cell) = self.cells.get_mut(row).and_then(|r| r.get_mut(col)) {
                *cell = Value::Null;
            }
            return;
        }
        if self.cells.len() <= row {
            self.cells.resize_with(row + 1, Vec::new);
        }
        let cells = &mut self.cells[row];
        if cells.len() <= col {
            cells.resize(col + 1, Value::Null);
        }
        cells[col] = value;
    }

    /// The cells of a window, trimmed of trailing empty cells and rows;
    /// `columns` reads column by column.
    pub(crate) fn window(
        &self,
        rows: (usize, usize),
        cols: (usize, usize),
        columns: bool,
    ) -> Vec<Vec<Value>> {
        let (outer, inner) = if columns { (cols, rows) } else { (rows, cols) };
        let mut out: Vec<Vec<Value>> = (outer.0..outer.1)
            .map(|o| {
                let mut line: Vec<Value> = (inner.0..inner.1)
                    .map(|i| {
                        let (r, c) = if columns { (i, o) } else { (o, i) };
                        self.get(r, c).clone()
                    })
                    .collect();
                while line.last().is_some_and(Value::is_null) {
                    line.pop();
                }
                line
            })
            .collect();
        while out.last().is_some_and(Vec::is_empty) {
            out.pop();
        }
        out
    }

    /// Deletes rows or columns `[start, end)`.
    pub(crate) fn delete(&mut self, columns: bool, start: usize, end: usize) {
        let n = end - start;
        if columns {
            for row in &mut self.cells {
                if start < row.len() {
                    row.drain(start..end.min(row.len()));
                }
            }
            self.column_count -= n;
            self.hidden_columns = shift_removed(&self.hidden_columns, start, end);
        } else {
            if start < self.cells.len() {
                self.cells.drain(start..end.min(self.cells.len()));
            }
            self.row_count -= n;
            self.hidden_rows = shift_removed(&self.hidden_rows, start, end);
        }
    }

    /// Inserts `n` empty rows or columns before index `at`.
    pub(crate) fn insert(&mut self, columns: bool, at: usize, n: usize) {
        if columns {
            for row in &mut self.cells {
                if at < row.len() {
                    row.splice(at..at, std::iter::repeat_n(Value::Null, n));
                }
            }
            self.column_count += n;
            self.hidden_columns = shift_inserted(&self.hidden_columns, at, n);
        } else {
            if at < self.cells.len() {
                self.cells
                    .splice(at..at, std::iter::repeat_with(Vec::new).take(n));
            }
            self.row_count += n;
            self.hidden_rows = shift_inserted(&self.hidden_rows, at, n);
        }
    }
}

fn shift_removed(set: &BTreeSet<usize>, start: usize, end: usize) -> BTreeSet<usize> {
    set.iter()
        .filter(|&&i| i < start || i >= end)
        .map(|&i| if i >= end { i - (end - start) } else { i })
        .collect()
}

fn shift_inserted(set: &BTreeSet<usize>, at: usize, n: usize) -> BTreeSet<usize> {
    set.iter()
        .map(|&i| if i >= at { i + n } else { i })
        .collect()
}

/// One spreadsheet (one Drive file).
#[derive(Clone, Debug)]
pub(crate) struct Spreadsheet {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) sheets: Vec<Sheet>,
    /// Lower-cased emails it is shared with.
    pub(crate) shared_with: BTreeSet<String>,
    pub(crate) version: u64,
    /// Drive's `createdTime`.
    pub(crate) created_ms: i64,
    pub(crate) modified_ms: i64,
    pub(crate) next_sheet_id: i64,
    /// The spreadsheet's time zone (`properties.timeZone`), in which serial
    /// date-times are local times.
    pub(crate) time_zone: String,
}

impl Spreadsheet {
    /// The sheet with this title; like the real API, case does not matter.
    pub(crate) fn sheet_index(&self, title: &str) -> Option<usize> {
        let wanted = title.to_lowercase();
        self.sheets
            .iter()
            .position(|s| s.title.to_lowercase() == wanted)
    }

    pub(crate) fn sheet_by_id(&mut self, id: i64) -> Option<&mut Sheet> {
        self.sheets.iter_mut().find(|s| s.id == id)
    }

    pub(crate) fn cell_count(&self) -> usize {
        self.sheets
            .iter()
            .map(|s| s.row_count.saturating_mul(s.column_count))
            .sum()
    }

    /// Records a write: the Drive version rises by `step` (at least 1); it
    /// only ever increases.
    pub(crate) fn touch(&mut self, now_ms: i64, step: u64) {
        self.version = self.version.saturating_add(step.max(1));
        self.modified_ms = now_ms.max(self.modified_ms);
    }
}

/// A number as Sheets returns it: whole numbers without a fraction.
pub(crate) fn normalize_number(n: &Number) -> Value {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => Value::from(f as i64),
        _ => Value::Number(n.clone()),
    }
}

/// What a written value becomes: `None` leaves the cell as it is (a JSON
/// null), `Some(Value::Null)` empties it (an empty string). `user_entered`
/// parses strings like typing: numbers, TRUE/FALSE, a leading `'` keeps text,
/// a leading `=` makes a formula (RAW keeps `=…` as a literal string).
pub(crate) fn input_cell(value: &Value, user_entered: bool) -> Result<Option<Value>, String> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => Value::Null,
        Value::String(s) if user_entered => parse_typed(s),
        Value::String(_) | Value::Bool(_) => value.clone(),
        Value::Number(n) => normalize_number(n),
        Value::Array(_) | Value::Object(_) => {
            return Err(format!(
                "a cell value must be a string, number or boolean, not {value}"
            ));
        }
    }))
}

/// A formula cell: stored as `{"formula": "=…"}` (no other cell is an
/// object, since written objects are refused).
pub(crate) fn formula_cell(text: &str) -> Value {
    serde_json::json!({ "formula": text })
}

/// The formula text of a formula cell.
fn formula_text(value: &Value) -> Option<&str> {
    value.as_object()?.get("formula")?.as_str()
}

/// What a person typing into the sheet leaves in a cell (used by
/// `Sheets::set_values`): a string starting with `=` (and longer than
/// that) is a formula, as USER_ENTERED would store it; every other value is
/// kept as given, so numeric-looking strings stay strings, as RAW keeps
/// them.
pub(crate) fn typed_by_person(value: Value) -> Value {
    match value {
        Value::Number(n) => normalize_number(&n),
        Value::String(s) if s.is_empty() => Value::Null,
        Value::String(s) if s.len() > 1 && s.starts_with('=') => formula_cell(&s),
        other => other,
    }
}

fn parse_typed(text: &str) -> Value {
    if let Some(literal) = text.strip_prefix('\'') {
        return Value::String(literal.to_owned());
    }
    if text.len() > 1 && text.starts_with('=') {
        return formula_cell(text);
    }
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("TRUE") {
        return Value::Bool(true);
    }
    if trimmed.eq_ignore_ascii_case("FALSE") {
        return Value::Bool(false);
    }
    let numeric = !trimmed.is_empty()
        && trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if numeric
        && let Ok(f) = trimmed.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return normalize_number(&n);
    }
    Value::String(text.to_owned())
}

/// A formula's value. Only trivial formulas are computed: number literals
/// joined by `+ - * /` with parentheses and unary signs (`=42`, `=1+1`,
/// `=(2+3)*-4/8`). Division by zero gives `#DIV/0!`; anything else
/// (references, functions, text) gives `#NAME?` — where the real Sheets
/// would compute `=A1` or `=SUM(1,2)`, the emulator does not.
fn compute(formula: &str) -> Value {
    let body: Vec<u8> = formula
        .trim_start_matches('=')
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let mut pos = 0;
    match arithmetic::expr(&body, &mut pos) {
        Ok(n) if pos == body.len() && n.is_finite() => Number::from_f64(n)
            .map(|n| normalize_number(&n))
            .unwrap_or_else(|| Value::String("#NUM!".to_owned())),
        Err(arithmetic::DIV_ZERO) => Value::String(arithmetic::DIV_ZERO.to_owned()),
        _ => Value::String("#NAME?".to_owned()),
    }
}

mod arithmetic {
    pub(super) const DIV_ZERO: &str = "#DIV/0!";
    const NAME: &str = "#NAME?";

    pub(super) fn expr(s: &[u8], pos: &mut usize) -> Result<f64, &'static str> {
        let mut value = term(s, pos)?;
        while let Some(&op) = s.get(*pos).filter(|b| matches!(b, b'+' | b'-')) {
            *pos += 1;
            let rhs = term(s, pos)?;
            value = if op == b'+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    fn term(s: &[u8], pos: &mut usize) -> Result<f64, &'static str> {
        let mut value = factor(s, pos)?;
        while let Some(&op) = s.get(*pos).filter(|b| matches!(b, b'*' | b'/')) {
            *pos += 1;
            let rhs = factor(s, pos)?;
            if op == b'*' {
                value *= rhs;
            } else if rhs == 0.0 {
                return Err(DIV_ZERO);
            } else {
                value /= rhs;
            }
        }
        Ok(value)
    }

    fn factor(s: &[u8], pos: &mut usize) -> Result<f64, &'static str> {
        match s.get(*pos) {
            Some(b'-') => {
                *pos += 1;
                Ok(-factor(s, pos)?)
            }
            Some(b'+') => {
                *pos += 1;
                factor(s, pos)
            }
            Some(b'(') => {
                *pos += 1;
                let value = expr(s, pos)?;
                if s.get(*pos) != Some(&b')') {
                    return Err(NAME);
                }
                *pos += 1;
                Ok(value)
            }
            _ => {
                let start = *pos;
                while s
                    .get(*pos)
                    .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
                {
                    *pos += 1;
                }
                std::str::from_utf8(&s[start..*pos])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or(NAME)
            }
        }
    }
}

/// A cell's value: itself, or a formula's computed value.
fn computed(value: &Value) -> std::borrow::Cow<'_, Value> {
    match formula_text(value) {
        Some(f) => std::borrow::Cow::Owned(compute(f)),
        None => std::borrow::Cow::Borrowed(value),
    }
}

/// FORMULA: a formula's text; other cells as UNFORMATTED_VALUE.
pub(crate) fn formula(value: &Value) -> Value {
    match formula_text(value) {
        Some(f) => Value::String(f.to_owned()),
        None => unformatted(value),
    }
}

/// FORMATTED_VALUE: what the cell shows, always a string.
pub(crate) fn formatted(value: &Value) -> Value {
    match computed(value).as_ref() {
        Value::Null => Value::String(String::new()),
        Value::Bool(true) => Value::String("TRUE".to_owned()),
        Value::Bool(false) => Value::String("FALSE".to_owned()),
        Value::Number(n) => Value::String(match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.as_f64().map(|f| f.to_string()).unwrap_or_default(),
        }),
        other => other.clone(),
    }
}

/// UNFORMATTED_VALUE: the value itself (an empty cell inside a row reads as
/// an empty string, as in the real API).
pub(crate) fn unformatted(value: &Value) -> Value {
    match computed(value).as_ref() {
        Value::Null => Value::String(String::new()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_entered_parses_like_typing_and_raw_keeps_text() {
        let cases = [
            (json!("42"), json!(42), json!("42")),
            (json!("-1.5"), json!(-1.5), json!("-1.5")),
            (json!("TRUE"), json!(true), json!("TRUE")),
            (json!("false"), json!(false), json!("false")),
            (json!("'42"), json!("42"), json!("'42")),
            (json!("1e3"), json!(1000), json!("1e3")),
            (json!("abc"), json!("abc"), json!("abc")),
            (json!("12 apples"), json!("12 apples"), json!("12 apples")),
            (json!(7.0), json!(7), json!(7)),
            (json!(true), json!(true), json!(true)),
        ];
        for (input, typed, raw) in cases {
            assert_eq!(
                input_cell(&input, true),
                Ok(Some(typed)),
                "USER_ENTERED {input}"
            );
            assert_eq!(input_cell(&input, false), Ok(Some(raw)), "RAW {input}");
        }
        assert_eq!(input_cell(&json!(null), true), Ok(None));
        assert_eq!(input_cell(&json!(""), false), Ok(Some(Value::Null)));
        assert!(input_cell(&json!([1]), false).is_err());
    }

    #[test]
    fn trivial_formulas_compute_and_others_are_name_errors() {
        let cases = [
            ("=42", json!(42), "42"),
            ("=1+1", json!(2), "2"),
            ("= (2 + 3) * -4 / 8", json!(-2.5), "-2.5"),
            ("=1/0", json!("#DIV/0!"), "#DIV/0!"),
            ("=A1", json!("#NAME?"), "#NAME?"),
            ("=SUM(1,2)", json!("#NAME?"), "#NAME?"),
            ("=1+", json!("#NAME?"), "#NAME?"),
        ];
        for (text, value, shown) in cases {
            let cell = input_cell(&json!(text), true).unwrap().unwrap();
            assert_eq!(formula(&cell), json!(text));
            assert_eq!(unformatted(&cell), value, "{text}");
            assert_eq!(formatted(&cell), json!(shown), "{text}");
            assert_eq!(input_cell(&json!(text), false), Ok(Some(json!(text))));
        }
        assert_eq!(typed_by_person(json!("=1+2")), formula_cell("=1+2"));
        assert_eq!(typed_by_person(json!("42")), json!("42"));
        assert_eq!(typed_by_person(json!("=")), json!("="));
    }

    #[test]
    fn formatted_values_are_strings() {
        assert_eq!(formatted(&json!(42)), json!("42"));
        assert_eq!(formatted(&json!(1.25)), json!("1.25"));
        assert_eq!(formatted(&json!(true)), json!("TRUE"));
        assert_eq!(formatted(&json!("x")), json!("x"));
    }

    #[test]
    fn windows_trim_trailing_empty_cells_and_rows() {
        let mut s = Sheet::new(0, "S");
        s.set(0, 0, json!("a"));
        s.set(0, 2, json!("c"));
        s.set(2, 1, json!(1));
        s.set(3, 3, json!("gone"));
        s.set(3, 3, Value::Null);
        assert_eq!(
            s.window((0, 1000), (0, 26), false),
            vec![
                vec![json!("a"), Value::Null, json!("c")],
                vec![],
                vec![Value::Null, json!(1)]
            ]
        );
        assert_eq!(
            s.window((0, 1000), (0, 26), true),
            vec![
                vec![json!("a")],
                vec![Value::Null, Value::Null, json!(1)],
                vec![json!("c")]
            ]
        );
    }
}
