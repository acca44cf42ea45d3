//! Values ↔ cells: A1 notation, serial dates and date-times, what a cell
//! reads as for a field of a given type and what a value is written as,
//! and the ids of rows without one.

use serde_json::{Value as Json, json};

use chittysync::{FieldKind, Value};

/// Prefix of the provisional ids a dry run gives rows without an id.
const PROVISIONAL_PREFIX: &str = "sheet-row-";

/// `0` → `A`, `25` → `Z`, `26` → `AA`.
pub(crate) fn column_letters(index: usize) -> String {
    let mut n = index + 1;
    let mut out = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        out.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

/// A sheet title quoted for A1 notation: `'It''s'`.
pub(crate) fn quote_sheet(title: &str) -> String {
    format!("'{}'", title.replace('\'', "''"))
}

/// One cell in A1 notation (`column` 0-based, `row` 1-based).
pub(crate) fn a1_cell(title: &str, column: usize, row: u64) -> String {
    format!("{}!{}{row}", quote_sheet(title), column_letters(column))
}

fn serial_epoch() -> time::PrimitiveDateTime {
    time::macros::datetime!(1899-12-30 0:00)
}

/// A serial date (days since 1899-12-30) as `YYYY-MM-DD`; the time of day
/// is dropped.
fn serial_to_date(serial: f64) -> Option<String> {
    if !serial.is_finite() || serial.abs() > 3_000_000.0 {
        return None;
    }
    let date = serial_epoch()
        .date()
        .checked_add(time::Duration::days(serial.floor() as i64))?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    date.format(format).ok()
}

/// The UTC offset of a spreadsheet time zone, for the zones whose offset
/// never changes: `UTC`, `GMT`, `Etc/UTC`, `Etc/GMT` and `Etc/GMT±N`
/// (POSIX signs: `Etc/GMT-2` is two hours *ahead* of UTC). `None` for
/// other zones (their offsets follow daylight-saving rules this adapter
/// does not carry). An empty zone (not reported) is taken as UTC.
fn zone_offset(zone: &str) -> Option<time::UtcOffset> {
    match zone {
        "" | "UTC" | "GMT" | "UCT" | "Zulu" | "Etc/UTC" | "Etc/UCT" | "Etc/GMT" | "Etc/GMT0"
        | "Etc/GMT+0" | "Etc/GMT-0" | "Etc/Universal" | "Etc/Zulu" | "Etc/Greenwich" => {
            return Some(time::UtcOffset::UTC);
        }
        _ => {}
    }
    let rest = zone.strip_prefix("Etc/GMT")?;
    let (sign, hours) = match rest.split_at_checked(1)? {
        ("+", h) => (-1, h),
        ("-", h) => (1, h),
        _ => return None,
    };
    let hours: i8 = hours.parse().ok().filter(|h| (1..=14).contains(h))?;
    time::UtcOffset::from_hms(sign * hours, 0, 0).ok()
}

/// A serial date-time (fractional days since 1899-12-30, a local time at
/// `offset`) as RFC 3339 in UTC, to the millisecond.
fn serial_to_datetime(serial: f64, offset: time::UtcOffset) -> Option<String> {
    if !serial.is_finite() || serial.abs() > 3_000_000.0 {
        return None;
    }
    let ms = (serial * 86_400_000.0).round() as i64;
    let at = serial_epoch()
        .checked_add(time::Duration::milliseconds(ms))?
        .assume_offset(offset)
        .to_offset(time::UtcOffset::UTC);
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// A JSON number's text without a needless `.0`.
fn number_text(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
        // Plain decimals (`0.0000001`, `10000000000000000`), never the
        // exponent form (`1e-7`), which is not a decimal's text.
        Some(f) if f.is_finite() => format!("{f}"),
        _ => n.to_string(),
    }
}

/// [`cell_to_value_in`] a spreadsheet whose time zone is UTC.
#[cfg(test)]
fn cell_to_value(cell: &Json, ty: FieldKind) -> Option<Value> {
    cell_to_value_in(cell, ty, "Etc/GMT")
}

/// A cell as read (unformatted) → the value of a field of type `ty`, in a
/// spreadsheet whose time zone is `zone`; `None` for an empty cell. What
/// does not fit the type is passed on as read, for the engine to report as
/// invalid; so is a serial date-time in a zone whose offset is not known
/// (see [`zone_offset`]), with what to do.
pub(crate) fn cell_to_value_in(cell: &Json, ty: FieldKind, zone: &str) -> Option<Value> {
    use FieldKind as T;
    match cell {
        Json::Null => None,
        Json::String(s) if s.is_empty() => None,
        Json::String(s) => Some(match ty {
            T::MultiSelect => match serde_json::from_str::<Vec<String>>(s) {
                Ok(items) => Value::Set(items.into_iter().collect()),
                // Typed by a person: "a, b" (the engine splits on commas).
                Err(_) => Value::Text(s.clone()),
            },
            T::Json => Value::Json(s.clone()),
            _ => Value::Text(s.clone()),
        }),
        Json::Bool(b) => Some(match ty {
            T::Bool | T::Json => Value::Bool(*b),
            _ => Value::Text(b.to_string()),
        }),
        Json::Number(n) => Some(match ty {
            T::Integer => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Value::Integer(i),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Integer(f as i64),
                _ => Value::Decimal(number_text(n)),
            },
            T::Decimal => Value::Decimal(number_text(n)),
            T::Date => match n.as_f64().and_then(serial_to_date) {
                Some(d) => Value::Text(d),
                None => Value::Text(number_text(n)),
            },
            T::Datetime => match zone_offset(zone) {
                Some(offset) => match n.as_f64().and_then(|f| serial_to_datetime(f, offset)) {
                    Some(d) => Value::Text(d),
                    None => Value::Text(number_text(n)),
                },
                None => Value::Text(format!(
                    "{} (a date-time typed in the spreadsheet's time zone {zone}, which ChittySync cannot convert: type it as text with an offset, like 2026-11-23T18:00:00+01:00, or set the spreadsheet's time zone to UTC or Etc/GMT±N)",
                    number_text(n)
                )),
            },
            T::Json => Value::Json(n.to_string()),
            T::Bool => match n.as_i64() {
                Some(0) => Value::Bool(false),
                Some(1) => Value::Bool(true),
                _ => Value::Text(number_text(n)),
            },
            _ => Value::Text(number_text(n)),
        }),
        other => Some(Value::Json(other.to_string())),
    }
}

/// A value of a field of type `ty` → the cell written (RAW). Numbers are
/// written as numbers when they read back exactly, else as text.
pub(crate) fn value_to_cell(value: &Value, ty: FieldKind) -> Json {
    use FieldKind as T;
    match (ty, value) {
        (T::Integer, Value::Integer(i)) if i.unsigned_abs() <= 1 << 53 => json!(i),
        (T::Decimal, Value::Decimal(d)) | (T::Decimal, Value::Text(d)) => {
            match d.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                Some(n) if number_text(&n) == *d => Json::Number(n),
                _ => Json::String(d.clone()),
            }
        }
        (T::Decimal, Value::Integer(i)) if i.unsigned_abs() <= 1 << 53 => json!(i),
        (_, Value::Bool(b)) if ty != T::Json => json!(b),
        (_, Value::Set(items)) => {
            Json::String(serde_json::to_string(items).expect("strings serialize"))
        }
        (T::Json, v) => Json::String(match v {
            Value::Json(text) => text.clone(),
            other => other.to_json().to_string(),
        }),
        (_, v) => Json::String(v.to_string()),
    }
}

/// A cell's length in characters, as Sheets counts it.
pub(crate) fn cell_chars(cell: &Json) -> usize {
    match cell {
        Json::String(s) => s.chars().count(),
        other => other.to_string().len(),
    }
}

/// The id in an id cell (people may type numbers).
pub(crate) fn id_of(cell: Option<&Json>) -> Option<String> {
    match cell? {
        Json::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Json::Number(n) => Some(number_text(n)),
        _ => None,
    }
}

pub(crate) fn is_empty_cell(cell: &Json) -> bool {
    matches!(cell, Json::Null) || matches!(cell, Json::String(s) if s.is_empty())
}

/// The provisional id of a row without an id: a hash of its cells.
pub(crate) fn provisional_id(cells: &[Json]) -> String {
    use sha2::{Digest, Sha256};
    let mut trimmed = cells;
    while let Some((last, rest)) = trimmed.split_last() {
        if !is_empty_cell(last) {
            break;
        }
        trimmed = rest;
    }
    let text = serde_json::to_string(trimmed).expect("cells serialize");
    let digest = Sha256::digest(text.as_bytes());
    format!("{PROVISIONAL_PREFIX}{}", hex::encode(&digest[..12]))
}

/// A row's cells with its id cell emptied.
pub(crate) fn without_id(cells: &[Json], id_col: usize) -> Vec<Json> {
    let mut out = cells.to_vec();
    if let Some(c) = out.get_mut(id_col) {
        *c = Json::Null;
    }
    out
}

/// A fingerprint of a row's content (its cells but the id).
pub(crate) fn content_of(cells: &[Json], id_col: usize) -> String {
    provisional_id(&without_id(cells, id_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_letters_count_like_a_spreadsheet() {
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(27), "AB");
        assert_eq!(column_letters(701), "ZZ");
        assert_eq!(column_letters(702), "AAA");
        assert_eq!(a1_cell("It's mine", 2, 10), "'It''s mine'!C10");
    }

    #[test]
    fn serial_dates_count_from_1899_12_30() {
        assert_eq!(serial_to_date(0.0).as_deref(), Some("1899-12-30"));
        assert_eq!(serial_to_date(1.0).as_deref(), Some("1899-12-31"));
        assert_eq!(serial_to_date(46349.0).as_deref(), Some("2026-11-23"));
        // The time of day is dropped.
        assert_eq!(serial_to_date(46349.75).as_deref(), Some("2026-11-23"));
        let utc = time::UtcOffset::UTC;
        assert_eq!(
            serial_to_datetime(46349.5, utc).as_deref(),
            Some("2026-11-23T12:00:00Z")
        );
        assert_eq!(
            serial_to_datetime(46349.0 + 1.0 / 86400.0, utc).as_deref(),
            Some("2026-11-23T00:00:01Z")
        );
        assert_eq!(serial_to_date(f64::NAN), None);
        assert_eq!(serial_to_date(1e12), None);
    }

    #[test]
    fn cells_read_as_values_of_their_field_type() {
        use FieldKind as T;
        assert_eq!(cell_to_value(&json!(""), T::Text), None);
        assert_eq!(cell_to_value(&Json::Null, T::Integer), None);
        assert_eq!(
            cell_to_value(&json!(8080), T::Integer),
            Some(Value::Integer(8080))
        );
        assert_eq!(
            cell_to_value(&json!(8080.0), T::Integer),
            Some(Value::Integer(8080))
        );
        assert_eq!(
            cell_to_value(&json!(12.5), T::Decimal),
            Some(Value::Decimal("12.5".into()))
        );
        assert_eq!(
            cell_to_value(&json!(3.0), T::Decimal),
            Some(Value::Decimal("3".into()))
        );
        assert_eq!(
            cell_to_value(&json!("12.50"), T::Decimal),
            Some(Value::Text("12.50".into()))
        );
        assert_eq!(
            cell_to_value(&json!(true), T::Bool),
            Some(Value::Bool(true))
        );
        assert_eq!(
            cell_to_value(&json!(123), T::Text),
            Some(Value::Text("123".into()))
        );
        assert_eq!(
            cell_to_value(&json!(true), T::Text),
            Some(Value::Text("true".into()))
        );
        assert_eq!(
            cell_to_value(&json!("[\"a\",\"b\"]"), T::MultiSelect),
            Some(["a", "b"].into())
        );
        assert_eq!(
            cell_to_value(&json!("a, b"), T::MultiSelect),
            Some(Value::Text("a, b".into()))
        );
        assert_eq!(
            cell_to_value(&json!(46349), T::Date),
            Some(Value::Text("2026-11-23".into()))
        );
        assert_eq!(
            cell_to_value(&json!("2026-11-23"), T::Date),
            Some(Value::Text("2026-11-23".into()))
        );
        assert_eq!(
            cell_to_value(&json!(46349.25), T::Datetime),
            Some(Value::Text("2026-11-23T06:00:00Z".into()))
        );
        assert_eq!(
            cell_to_value(&json!("{\"a\":1}"), T::Json),
            Some(Value::Json("{\"a\":1}".into()))
        );
        // A fraction in an integer column stays visible for validation.
        assert_eq!(
            cell_to_value(&json!(1.5), T::Integer),
            Some(Value::Decimal("1.5".into()))
        );
    }

    #[test]
    fn serial_date_times_are_local_to_the_spreadsheet_time_zone() {
        use FieldKind as T;
        let at = |zone: &str| cell_to_value_in(&json!(46349.75), T::Datetime, zone);
        assert_eq!(
            at("Etc/GMT"),
            Some(Value::Text("2026-11-23T18:00:00Z".into()))
        );
        assert_eq!(at("UTC"), at("Etc/GMT"));
        // POSIX signs: Etc/GMT-2 is UTC+2, Etc/GMT+5 is UTC-5.
        assert_eq!(
            at("Etc/GMT-2"),
            Some(Value::Text("2026-11-23T16:00:00Z".into()))
        );
        assert_eq!(
            at("Etc/GMT+5"),
            Some(Value::Text("2026-11-23T23:00:00Z".into()))
        );
        // Zones with daylight saving are refused, saying why, never shifted.
        let Some(Value::Text(refused)) = at("Europe/Berlin") else {
            panic!("a text value")
        };
        assert!(
            refused.contains("Europe/Berlin") && refused.contains("offset"),
            "{refused}"
        );
        assert!(chittysync::coerce(T::Datetime, Value::Text(refused)).is_err());
        assert_eq!(zone_offset("Etc/GMT+15"), None);
        assert_eq!(zone_offset("Etc/GMTx"), None);
        // Dates have no time of day: every zone reads them.
        assert_eq!(
            cell_to_value_in(&json!(46349), T::Date, "Europe/Berlin"),
            Some(Value::Text("2026-11-23".into()))
        );
    }

    #[test]
    fn very_small_and_large_numbers_read_as_plain_decimals() {
        use FieldKind as T;
        for (cell, text) in [
            (json!(1e-7), "0.0000001"),
            (json!(1e16), "10000000000000000"),
            (json!(-2.5e-10), "-0.00000000025"),
            (json!(1.5e20), "150000000000000000000"),
        ] {
            let value = cell_to_value(&cell, T::Decimal).unwrap();
            assert_eq!(value, Value::Decimal(text.into()));
            chittysync::coerce(T::Decimal, value.clone()).expect("a valid decimal");
            assert_eq!(
                value_to_cell(&value, T::Decimal),
                cell,
                "{text} written back"
            );
        }
        assert_eq!(
            cell_to_value(&json!(1.5e20), T::Integer),
            Some(Value::Decimal("150000000000000000000".into()))
        );
    }

    #[test]
    fn values_write_as_cells_that_read_back_equal() {
        use FieldKind as T;
        let cases: Vec<(Value, T, Json)> = vec![
            (Value::Integer(80), T::Integer, json!(80)),
            (
                Value::Integer(i64::MAX),
                T::Integer,
                json!(i64::MAX.to_string()),
            ),
            (Value::Decimal("12.5".into()), T::Decimal, json!(12.5)),
            (
                Value::Decimal("0.10000000000000000000001".into()),
                T::Decimal,
                json!("0.10000000000000000000001"),
            ),
            (Value::Bool(false), T::Bool, json!(false)),
            (["b", "a"].into(), T::MultiSelect, json!("[\"a\",\"b\"]")),
            (
                Value::Text("2026-11-23".into()),
                T::Date,
                json!("2026-11-23"),
            ),
            (Value::Text("007".into()), T::Text, json!("007")),
            (
                Value::Json("{\"a\":[1,2]}".into()),
                T::Json,
                json!("{\"a\":[1,2]}"),
            ),
            (Value::Text("svc-1".into()), T::Reference, json!("svc-1")),
        ];
        for (value, ty, cell) in cases {
            assert_eq!(value_to_cell(&value, ty), cell, "{value:?} as {ty:?}");
            let back = cell_to_value(&cell, ty).unwrap();
            let canon = |v: Value| chittysync::coerce(ty, v).unwrap();
            assert_eq!(canon(back), canon(value.clone()), "{value:?} round trip");
        }
    }

    #[test]
    fn provisional_ids_follow_the_cells_only() {
        let a = provisional_id(&[json!("x"), json!(1)]);
        assert_eq!(
            a,
            provisional_id(&[json!("x"), json!(1), json!(""), Json::Null])
        );
        assert_ne!(a, provisional_id(&[json!("x"), json!(2)]));
        assert!(a.starts_with(PROVISIONAL_PREFIX));
    }
}
