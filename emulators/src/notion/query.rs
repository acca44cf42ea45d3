//! The query endpoint's filters and sorts.

use std::cmp::Ordering;

use serde_json::Value;

use super::{ApiError, DataSource, Page, parse_instant};

/// Deepest nesting of `and`/`or` the API accepts.
const MAX_DEPTH: usize = 2;

/// A parsed, schema-checked filter.
#[derive(Debug)]
pub(super) enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    /// A `created_time` or `last_edited_time` timestamp filter.
    Timestamp {
        edited: bool,
        op: String,
        /// The operand as the span it names: a bare date is its whole
        /// day in UTC, a date-time one millisecond.
        span: (i64, i64),
    },
    /// A property filter: `{property, <type>: {op: operand}}`.
    Property {
        prop_id: String,
        kind: String,
        op: String,
        operand: Value,
    },
}

fn invalid(message: String) -> ApiError {
    ApiError::validation(message)
}

const TEXT_OPS: &[&str] = &[
    "equals",
    "does_not_equal",
    "contains",
    "does_not_contain",
    "starts_with",
    "ends_with",
    "is_empty",
    "is_not_empty",
];
const NUMBER_OPS: &[&str] = &[
    "equals",
    "does_not_equal",
    "greater_than",
    "less_than",
    "greater_than_or_equal_to",
    "less_than_or_equal_to",
    "is_empty",
    "is_not_empty",
];
const DATE_OPS: &[&str] = &[
    "equals",
    "before",
    "after",
    "on_or_before",
    "on_or_after",
    "is_empty",
    "is_not_empty",
    "past_week",
    "past_month",
    "past_year",
    "next_week",
    "next_month",
    "next_year",
];
const SELECT_OPS: &[&str] = &["equals", "does_not_equal", "is_empty", "is_not_empty"];
const CONTAINS_OPS: &[&str] = &["contains", "does_not_contain", "is_empty", "is_not_empty"];

/// Parses `filter` against the data source's schema. Relative dates are
/// settled against `now_ms`, the emulator's clock.
pub(super) fn parse_filter(
    ds: &DataSource,
    v: &Value,
    depth: usize,
    now_ms: i64,
) -> Result<Filter, ApiError> {
    let Some(m) = v.as_object() else {
        return Err(invalid(format!(
            "body.filter should be an object, instead was `{v}`."
        )));
    };
    for (word, is_and) in [("and", true), ("or", false)] {
        if let Some(list) = m.get(word) {
            if depth >= MAX_DEPTH {
                return Err(invalid(format!(
                    "body.filter: compound filters can be nested at most {MAX_DEPTH} levels deep."
                )));
            }
            let Some(list) = list.as_array() else {
                return Err(invalid(format!(
                    "body.filter.{word} should be an array, instead was `{list}`."
                )));
            };
            let parts = list
                .iter()
                .map(|f| parse_filter(ds, f, depth + 1, now_ms))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if is_and {
                Filter::And(parts)
            } else {
                Filter::Or(parts)
            });
        }
    }
    if let Some(ts) = m.get("timestamp") {
        let edited = match ts.as_str() {
            Some("last_edited_time") => true,
            Some("created_time") => false,
            _ => {
                return Err(invalid(format!(
                    "body.filter.timestamp should be `\"created_time\"` or `\"last_edited_time\"`, \
                     instead was `{ts}`."
                )));
            }
        };
        let field = if edited {
            "last_edited_time"
        } else {
            "created_time"
        };
        let (op, operand) = single_condition(m.get(field), field, DATE_OPS)?;
        let parts = date_conditions(field, &op, &operand, now_ms)?
            .into_iter()
            .map(|(op, date)| {
                let span = span_of(&date).expect("checked by date_conditions");
                Filter::Timestamp { edited, op, span }
            })
            .collect();
        return Ok(all_of(parts));
    }
    let Some(key) = m.get("property").and_then(Value::as_str) else {
        return Err(invalid(
            "body.filter should have `property`, `timestamp`, `and` or `or`.".to_owned(),
        ));
    };
    let Some(prop) = ds.find(key) else {
        return Err(invalid(format!(
            "Could not find property with name or id: {key}"
        )));
    };
    // The condition's key must be the property's type.
    let kind = prop.kind.as_str();
    let given = kind;
    if !m.contains_key(kind)
        && let Some(other) = m.keys().find(|k| k.as_str() != "property")
    {
        return Err(invalid(format!(
            "body.filter.{other} does not match the type of property `{}`: it is a {kind} \
             property, so the condition must be given as `{kind}`.",
            prop.name
        )));
    }
    let ops: &[&str] = match kind {
        "title" | "rich_text" | "url" | "email" | "phone_number" => TEXT_OPS,
        "number" => NUMBER_OPS,
        "checkbox" => &["equals", "does_not_equal"],
        "select" | "status" => SELECT_OPS,
        "multi_select" | "relation" | "people" => CONTAINS_OPS,
        "date" | "created_time" | "last_edited_time" => DATE_OPS,
        other => {
            return Err(invalid(format!(
                "Filtering on {other} properties is not supported by this emulator."
            )));
        }
    };
    let Some(cond) = m.get(given) else {
        return Err(invalid(format!(
            "body.filter.{kind} should be defined for property `{}` of type {kind}, instead was `undefined`.",
            prop.name
        )));
    };
    let (op, operand) = single_condition(Some(cond), given, ops)?;
    if ops == DATE_OPS && !matches!(op.as_str(), "is_empty" | "is_not_empty") {
        let parts = date_conditions(given, &op, &operand, now_ms)?
            .into_iter()
            .map(|(op, date)| Filter::Property {
                prop_id: prop.id.clone(),
                kind: kind.to_owned(),
                op,
                operand: Value::String(date),
            })
            .collect();
        return Ok(all_of(parts));
    }
    let operand_ok = match op.as_str() {
        "is_empty" | "is_not_empty" => operand == Value::Bool(true),
        _ => match kind {
            "number" => operand.is_number(),
            "checkbox" => operand.is_boolean(),
            "date" | "created_time" | "last_edited_time" => {
                operand.as_str().and_then(parse_instant).is_some()
            }
            _ => operand.is_string(),
        },
    };
    let operand = match (kind, operand) {
        ("relation" | "people", Value::String(id)) => Value::String(super::dashed(&id)),
        (_, operand) => operand,
    };
    if !operand_ok {
        return Err(invalid(format!(
            "body.filter.{given}.{op} has the wrong type for a {kind} property: `{operand}`."
        )));
    }
    Ok(Filter::Property {
        prop_id: prop.id.clone(),
        kind: kind.to_owned(),
        op,
        operand,
    })
}

/// One filter, or all of several.
fn all_of(mut parts: Vec<Filter>) -> Filter {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        Filter::And(parts)
    }
}

/// A date condition as plain comparisons with absolute dates: an ISO 8601
/// operand as it is, a relative one (`"today"`, `"one_week_ago"`, …) as
/// the day it names, and `past_week`-like conditions (operand `{}`) as the
/// two bounds of their span, from today back (or forward) a week, a month
/// or a year, both days included. Days are UTC days.
fn date_conditions(
    field: &str,
    op: &str,
    operand: &Value,
    now_ms: i64,
) -> Result<Vec<(String, String)>, ApiError> {
    let today = time::OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000))
        .map(|t| t.date())
        .map_err(|_| invalid("the emulator's clock is out of range".to_owned()))?;
    let span = match op {
        "past_week" => Some((today - time::Duration::days(7), today)),
        "past_month" => Some((add_months(today, -1), today)),
        "past_year" => Some((add_months(today, -12), today)),
        "next_week" => Some((today, today + time::Duration::days(7))),
        "next_month" => Some((today, add_months(today, 1))),
        "next_year" => Some((today, add_months(today, 12))),
        _ => None,
    };
    if let Some((from, to)) = span {
        if operand.as_object().is_none_or(|m| !m.is_empty()) {
            return Err(invalid(format!(
                "body.filter.{field}.{op} should be an empty object `{{}}`, instead was `{operand}`."
            )));
        }
        return Ok(vec![
            ("on_or_after".to_owned(), day(from)),
            ("on_or_before".to_owned(), day(to)),
        ]);
    }
    let date = match operand.as_str() {
        Some(s) if span_of(s).is_some() => s.to_owned(),
        Some(s) => match relative_day(s, today) {
            Some(d) => day(d),
            None => {
                return Err(invalid(format!(
                    "body.filter.{field}.{op} should be an ISO 8601 date or date-time string, \
                     or a relative date (\"today\", \"tomorrow\", \"yesterday\", \
                     \"one_week_ago\", \"one_week_from_now\", \"one_month_ago\", \
                     \"one_month_from_now\", \"one_year_ago\", \"one_year_from_now\"), \
                     instead was `{operand}`."
                )));
            }
        },
        None => {
            return Err(invalid(format!(
                "body.filter.{field}.{op} should be a string, instead was `{operand}`."
            )));
        }
    };
    Ok(vec![(op.to_owned(), date)])
}

/// The day a relative date value names, counted from `today`.
fn relative_day(word: &str, today: time::Date) -> Option<time::Date> {
    Some(match word {
        "today" => today,
        "tomorrow" => today.next_day()?,
        "yesterday" => today.previous_day()?,
        "one_week_ago" => today - time::Duration::days(7),
        "one_week_from_now" => today + time::Duration::days(7),
        "one_month_ago" => add_months(today, -1),
        "one_month_from_now" => add_months(today, 1),
        "one_year_ago" => add_months(today, -12),
        "one_year_from_now" => add_months(today, 12),
        _ => return None,
    })
}

/// `date` moved by `months` calendar months, on the same day of the month
/// or the month's last day when it is shorter.
fn add_months(date: time::Date, months: i32) -> time::Date {
    let index = date.year() * 12 + i32::from(u8::from(date.month())) - 1 + months;
    let year = index.div_euclid(12);
    let month =
        time::Month::try_from((index.rem_euclid(12) + 1) as u8).unwrap_or(time::Month::January);
    let last = time::util::days_in_month(month, year);
    time::Date::from_calendar_date(year, month, date.day().min(last)).unwrap_or(date)
}

/// `2026-11-23`.
fn day(date: time::Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

fn single_condition(
    cond: Option<&Value>,
    field: &str,
    ops: &[&str],
) -> Result<(String, Value), ApiError> {
    let Some(m) = cond.and_then(Value::as_object) else {
        return Err(invalid(format!(
            "body.filter.{field} should be an object, instead was `{}`.",
            cond.map(Value::to_string)
                .unwrap_or_else(|| "undefined".to_owned())
        )));
    };
    let mut entries = m.iter();
    match (entries.next(), entries.next()) {
        (Some((op, operand)), None) if ops.contains(&op.as_str()) => {
            Ok((op.clone(), operand.clone()))
        }
        _ => Err(invalid(format!(
            "body.filter.{field} should have exactly one of: {}.",
            ops.join(", ")
        ))),
    }
}

/// A date operand as a half-open span of ms: a bare date (`2026-01-05`) is
/// that whole day in UTC, a date-time the one millisecond it names.
fn span_of(s: &str) -> Option<(i64, i64)> {
    let start = parse_instant(s)?;
    Some(if s.contains('T') {
        (start, start + 1)
    } else {
        (start, start + 86_400_000)
    })
}

fn compare_time(op: &str, value_ms: i64, (from, to): (i64, i64)) -> bool {
    match op {
        "equals" => from <= value_ms && value_ms < to,
        "before" => value_ms < from,
        "after" => value_ms >= to,
        "on_or_before" => value_ms < to,
        "on_or_after" => value_ms >= from,
        _ => false,
    }
}

fn plain_text(v: &Value) -> String {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i["plain_text"].as_str())
            .collect(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Whether `page` passes `filter`.
pub(super) fn matches(filter: &Filter, page: &Page) -> bool {
    match filter {
        Filter::And(parts) => parts.iter().all(|f| matches(f, page)),
        Filter::Or(parts) => parts.iter().any(|f| matches(f, page)),
        Filter::Timestamp { edited, op, span } => {
            let t = if *edited {
                page.edited_ms
            } else {
                page.created_ms
            };
            compare_time(op, t, *span)
        }
        Filter::Property {
            prop_id,
            kind,
            op,
            operand,
        } => {
            let value = match kind.as_str() {
                "created_time" => Value::String(super::iso(page.created_ms)),
                "last_edited_time" => Value::String(super::iso(page.edited_ms)),
                "checkbox" => page
                    .values
                    .get(prop_id)
                    .cloned()
                    .unwrap_or(Value::Bool(false)),
                _ => page.values.get(prop_id).cloned().unwrap_or(Value::Null),
            };
            match op.as_str() {
                "is_empty" => return is_empty(&value),
                "is_not_empty" => return !is_empty(&value),
                _ => {}
            }
            match kind.as_str() {
                "title" | "rich_text" | "url" | "email" | "phone_number" => {
                    let text = plain_text(&value);
                    let want = operand.as_str().unwrap_or_default();
                    match op.as_str() {
                        "equals" => text == want,
                        "does_not_equal" => text != want,
                        "contains" => text.contains(want),
                        "does_not_contain" => !text.contains(want),
                        "starts_with" => text.starts_with(want),
                        "ends_with" => text.ends_with(want),
                        _ => false,
                    }
                }
                "number" => {
                    let (Some(have), Some(want)) = (value.as_f64(), operand.as_f64()) else {
                        return op == "does_not_equal";
                    };
                    match op.as_str() {
                        "equals" => have == want,
                        "does_not_equal" => have != want,
                        "greater_than" => have > want,
                        "less_than" => have < want,
                        "greater_than_or_equal_to" => have >= want,
                        "less_than_or_equal_to" => have <= want,
                        _ => false,
                    }
                }
                "checkbox" => (value == *operand) == (op == "equals"),
                "select" | "status" => {
                    let same = value["name"] == *operand;
                    if op == "equals" { same } else { !same }
                }
                "multi_select" | "relation" | "people" => {
                    let field = if kind == "multi_select" { "name" } else { "id" };
                    let has = value
                        .as_array()
                        .is_some_and(|a| a.iter().any(|i| i[field] == *operand));
                    if op == "contains" { has } else { !has }
                }
                _ => {
                    let have = match &value {
                        Value::String(s) => parse_instant(s),
                        v => v["start"].as_str().and_then(parse_instant),
                    };
                    match (have, operand.as_str().and_then(span_of)) {
                        (Some(h), Some(w)) => compare_time(op, h, w),
                        _ => false,
                    }
                }
            }
        }
    }
}

/// One sort key.
#[derive(Debug)]
pub(super) enum Sort {
    Timestamp { edited: bool, descending: bool },
    Property { prop_id: String, descending: bool },
}

/// Parses `sorts`.
pub(super) fn parse_sorts(ds: &DataSource, v: &Value) -> Result<Vec<Sort>, ApiError> {
    let Some(list) = v.as_array() else {
        return Err(invalid(format!(
            "body.sorts should be an array, instead was `{v}`."
        )));
    };
    let mut sorts = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let descending = match s.get("direction").and_then(Value::as_str) {
            Some("ascending") => false,
            Some("descending") => true,
            _ => {
                return Err(invalid(format!(
                    "body.sorts[{i}].direction should be `\"ascending\"` or `\"descending\"`."
                )));
            }
        };
        if let Some(ts) = s.get("timestamp") {
            let edited = match ts.as_str() {
                Some("last_edited_time") => true,
                Some("created_time") => false,
                _ => {
                    return Err(invalid(format!(
                        "body.sorts[{i}].timestamp should be `\"created_time\"` or \
                         `\"last_edited_time\"`, instead was `{ts}`."
                    )));
                }
            };
            sorts.push(Sort::Timestamp { edited, descending });
        } else if let Some(key) = s.get("property").and_then(Value::as_str) {
            let Some(prop) = ds.find(key) else {
                return Err(invalid(format!(
                    "Could not find sort property with name or id: {key}"
                )));
            };
            sorts.push(Sort::Property {
                prop_id: prop.id.clone(),
                descending,
            });
        } else {
            return Err(invalid(format!(
                "body.sorts[{i}] should have `property` or `timestamp`."
            )));
        }
    }
    Ok(sorts)
}

fn sort_key(v: Option<&Value>) -> (u8, f64, String) {
    match v {
        None | Some(Value::Null) => (1, 0.0, String::new()),
        Some(Value::Number(n)) => (0, n.as_f64().unwrap_or(0.0), String::new()),
        Some(Value::Bool(b)) => (0, if *b { 1.0 } else { 0.0 }, String::new()),
        Some(Value::Array(a)) if a.is_empty() => (1, 0.0, String::new()),
        Some(v @ Value::Array(_)) => (0, 0.0, plain_text(v)),
        Some(Value::String(s)) => (0, 0.0, s.clone()),
        Some(o) => {
            let text = o["name"]
                .as_str()
                .or_else(|| o["start"].as_str())
                .unwrap_or_default();
            (0, 0.0, text.to_owned())
        }
    }
}

/// Orders pages by `sorts`, then by creation (oldest first).
pub(super) fn compare(sorts: &[Sort], a: &Page, b: &Page) -> Ordering {
    for s in sorts {
        let (ord, descending) = match s {
            Sort::Timestamp { edited, descending } => {
                let (x, y) = if *edited {
                    (a.edited_ms, b.edited_ms)
                } else {
                    (a.created_ms, b.created_ms)
                };
                (x.cmp(&y), *descending)
            }
            Sort::Property {
                prop_id,
                descending,
            } => {
                let (x, y) = (
                    sort_key(a.values.get(prop_id)),
                    sort_key(b.values.get(prop_id)),
                );
                // Empty values go last in either direction.
                let ord = x.0.cmp(&y.0).then_with(|| {
                    let o = x.1.total_cmp(&y.1).then_with(|| x.2.cmp(&y.2));
                    if *descending { o.reverse() } else { o }
                });
                (ord, false)
            }
        };
        let ord = if descending { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.created_ms.cmp(&b.created_ms).then(a.seq.cmp(&b.seq))
}
