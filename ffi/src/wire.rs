//! The value encoding the Python and Node packages speak: JSON text, the
//! same in both languages, converted here once by the field's type.
//!
//! A field value on the wire is:
//!
//! | JSON                         | value                                   |
//! |------------------------------|-----------------------------------------|
//! | a string                     | text (and every type stored as text)    |
//! | `true` / `false`             | bool                                    |
//! | an integer number            | integer (must fit 64 bits)              |
//! | any other number             | decimal, by its text                    |
//! | `{"$int": "123"}`            | integer, exact beyond 2^53              |
//! | `{"$decimal": "1.5e3"}`      | decimal; exponent form is expanded      |
//! | `{"$set": ["a", "b"]}`       | the chosen options of a multi-select    |
//! | `{"$json": …}`               | a JSON document                         |
//! | any other array or object    | a JSON document (input only)            |
//!
//! What a value means then depends on the field it goes to: for a json
//! field everything is JSON (a set becomes a sorted array); for a
//! multi-select an array of strings is a set of options; for a decimal an
//! integer is that decimal. JSON documents are stored with their object keys
//! sorted (the core compares documents by their compact text, so one order
//! is needed; sorted is the order that does not depend on who wrote it).
//!
//! Read back, values use the tagged forms only where plain JSON would be
//! ambiguous or lossy: integers beyond ±(2^53 − 1) as `$int`, decimals as
//! `$decimal`, sets as `$set` (options sorted), documents as `$json`.

use std::collections::BTreeMap;

use chittysync as core;
use serde_json::{Map, Value as Json};

use crate::ChittyError;

/// The largest integer a JavaScript number holds exactly.
const SAFE_INTEGER: i64 = (1 << 53) - 1;

/// How far an exponent may move the decimal point (beyond: refused).
const MAX_EXPONENT: i64 = 1000;

/// The field kinds of a schema, by field name.
pub(crate) type Kinds = BTreeMap<String, core::FieldKind>;

pub(crate) fn kinds(schema: &core::Schema) -> Kinds {
    schema
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.field_type))
        .collect()
}

/// Parses JSON text given by the caller, naming what it should have been.
pub(crate) fn parse(text: &str, what: &str) -> Result<Json, ChittyError> {
    serde_json::from_str(text).map_err(|e| {
        ChittyError::argument(format!("{what} must be JSON ({e}); nothing was written"))
    })
}

/// A wire value as a value for a field of type `kind` (none: not in the
/// schema; the core then says so).
pub(crate) fn decode(
    kind: Option<core::FieldKind>,
    field: &str,
    v: Json,
) -> Result<core::Value, ChittyError> {
    let bad = |why: String| ChittyError::argument(format!("field '{field}': {why}"));
    let value = match v {
        Json::Null => {
            return Err(bad(
                "null is not a value; leave the field out, or clear it with unset".into(),
            ));
        }
        Json::String(s) => match kind {
            Some(core::FieldKind::Decimal) => core::Value::Decimal(plain_decimal(&s).unwrap_or(s)),
            _ => core::Value::Text(s),
        },
        Json::Bool(b) => core::Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => core::Value::Integer(i),
            None if n.is_u64() => return Err(bad(format!("{n} is beyond a 64-bit integer"))),
            None => decimal(&n.to_string()).map_err(bad)?,
        },
        Json::Object(o) if o.len() == 1 && tag(&o).is_some() => {
            let (tag, inner) = o.into_iter().next().expect("one entry");
            match (tag.as_str(), inner) {
                ("$int", Json::String(s)) => s
                    .trim()
                    .parse::<i64>()
                    .map(core::Value::Integer)
                    .map_err(|_| bad(format!("{s} is not an integer that fits 64 bits")))?,
                ("$int", Json::Number(n)) if n.is_i64() => {
                    core::Value::Integer(n.as_i64().expect("checked"))
                }
                ("$decimal", Json::String(s)) => decimal(&s).map_err(bad)?,
                ("$decimal", Json::Number(n)) => decimal(&n.to_string()).map_err(bad)?,
                ("$set", Json::Array(items)) => core::Value::Set(
                    items
                        .into_iter()
                        .map(|i| match i {
                            Json::String(s) => Ok(s),
                            other => Err(bad(format!("a set holds option names, not {other}"))),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                ("$json", doc) => json_value(kind, doc),
                (tag, inner) => return Err(bad(format!("{{\"{tag}\": {inner}}} is malformed"))),
            }
        }
        doc @ (Json::Array(_) | Json::Object(_)) => json_value(kind, doc),
    };
    Ok(value)
}

fn tag(o: &Map<String, Json>) -> Option<&str> {
    o.keys()
        .next()
        .map(String::as_str)
        .filter(|k| matches!(*k, "$int" | "$decimal" | "$set" | "$json"))
}

/// A JSON document for a field: an array of strings is a set of options
/// for a multi-select, anything else a document.
fn json_value(kind: Option<core::FieldKind>, doc: Json) -> core::Value {
    match (kind, doc) {
        (Some(core::FieldKind::MultiSelect), Json::Array(items))
            if items.iter().all(Json::is_string) =>
        {
            core::Value::Set(
                items
                    .into_iter()
                    .filter_map(|i| match i {
                        Json::String(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
            )
        }
        (_, doc) => core::Value::Json(sorted(doc).to_string()),
    }
}

fn decimal(text: &str) -> Result<core::Value, String> {
    plain_decimal(text)
        .map(core::Value::Decimal)
        .ok_or_else(|| format!("'{text}' is not a decimal number"))
}

/// A decimal's text without an exponent: `1.5e3` → `1500`, `1e-3` →
/// `0.001`; text without an exponent is returned as given (the core
/// canonicalises it). None if it is not a number.
pub(crate) fn plain_decimal(text: &str) -> Option<String> {
    let t = text.trim();
    let Some(at) = t.find(['e', 'E']) else {
        return Some(t.to_owned());
    };
    let (mantissa, exp) = (&t[..at], &t[at + 1..]);
    let exp: i64 = exp.strip_prefix('+').unwrap_or(exp).parse().ok()?;
    if exp.abs() > MAX_EXPONENT {
        return None;
    }
    let (sign, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all = format!("{int}{frac}");
    let point = int.len() as i64 + exp;
    let body = if point <= 0 {
        format!("0.{}{all}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= all.len() {
        format!("{all}{}", "0".repeat(point as usize - all.len()))
    } else {
        format!("{}.{}", &all[..point as usize], &all[point as usize..])
    };
    Some(format!("{sign}{body}"))
}

/// The document with every object's keys sorted, whatever order the
/// caller gave them in.
fn sorted(doc: Json) -> Json {
    match doc {
        Json::Array(items) => Json::Array(items.into_iter().map(sorted).collect()),
        Json::Object(o) => {
            let mut entries: Vec<(String, Json)> = o.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        other => other,
    }
}

/// Decodes a JSON object of fields. `null` values are refused.
pub(crate) fn decode_fields(
    kinds: &Kinds,
    fields: Map<String, Json>,
) -> Result<Vec<(String, core::Value)>, ChittyError> {
    fields
        .into_iter()
        .map(|(name, v)| {
            let value = decode(kinds.get(&name).copied(), &name, v)?;
            Ok((name, value))
        })
        .collect()
}

/// Decodes JSON text holding an object of fields.
pub(crate) fn decode_fields_text(
    kinds: &Kinds,
    text: &str,
) -> Result<Vec<(String, core::Value)>, ChittyError> {
    match parse(text, "fields")? {
        Json::Object(o) => decode_fields(kinds, o),
        other => Err(ChittyError::argument(format!(
            "fields must be a JSON object of field name to value, not {other}"
        ))),
    }
}

/// A value on the wire.
pub(crate) fn encode(v: &core::Value) -> Json {
    let tagged = |tag: &str, inner: Json| {
        let mut o = Map::new();
        o.insert(tag.to_owned(), inner);
        Json::Object(o)
    };
    match v {
        core::Value::Text(t) => Json::String(t.clone()),
        core::Value::Bool(b) => Json::Bool(*b),
        core::Value::Integer(i) if (-SAFE_INTEGER..=SAFE_INTEGER).contains(i) => (*i).into(),
        core::Value::Integer(i) => tagged("$int", Json::String(i.to_string())),
        core::Value::Decimal(d) => tagged("$decimal", Json::String(d.clone())),
        core::Value::Set(s) => tagged("$set", s.iter().cloned().collect::<Vec<_>>().into()),
        core::Value::Json(text) => tagged(
            "$json",
            sorted(serde_json::from_str(text).unwrap_or(Json::Null)),
        ),
        // A kind of value added to the core after this was written: its
        // text, as the core shows it.
        other => Json::String(other.to_string()),
    }
}

/// Fields on the wire, as a JSON object.
pub(crate) fn encode_fields<'a>(
    fields: impl IntoIterator<Item = (&'a String, &'a core::Value)>,
) -> Json {
    Json::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.clone(), encode(v)))
            .collect(),
    )
}

/// A record on the wire: `{"id", "fields", "deleted", "conflicted"}`.
pub(crate) fn encode_record(r: &core::Record) -> Json {
    serde_json::json!({
        "id": r.id,
        "fields": encode_fields(&r.fields),
        "deleted": r.deleted.is_some(),
        "conflicted": r.conflicted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chittysync::FieldKind as K;
    use serde_json::json;

    fn d(kind: Option<K>, v: Json) -> core::Value {
        decode(kind, "f", v).unwrap()
    }

    #[test]
    fn exponent_decimals_expand() {
        assert_eq!(plain_decimal("1.5e3").as_deref(), Some("1500"));
        assert_eq!(plain_decimal("-1.25E-2").as_deref(), Some("-0.0125"));
        assert_eq!(
            plain_decimal("1e+21").as_deref(),
            Some("1000000000000000000000")
        );
        assert_eq!(plain_decimal("12.5e1").as_deref(), Some("125"));
        assert_eq!(plain_decimal("19.99").as_deref(), Some("19.99"));
        assert_eq!(plain_decimal("1e99999"), None);
        assert_eq!(plain_decimal("xe1"), None);
    }

    #[test]
    fn values_decode_by_field_kind() {
        assert_eq!(
            d(Some(K::MultiSelect), json!(["b", "a"])),
            core::Value::Set(["a".to_owned(), "b".to_owned()].into())
        );
        assert_eq!(
            d(Some(K::Json), json!(["b", "a"])),
            core::Value::Json(r#"["b","a"]"#.into())
        );
        assert_eq!(
            d(
                Some(K::Json),
                json!({"$json": {"z": 1, "a": [{"y": 1, "b": 2}]}})
            ),
            core::Value::Json(r#"{"a":[{"b":2,"y":1}],"z":1}"#.into())
        );
        assert_eq!(
            d(Some(K::Integer), json!({"$int": "9007199254740993"})),
            core::Value::Integer(9_007_199_254_740_993)
        );
        assert_eq!(
            d(Some(K::Decimal), json!({"$decimal": "2.5e-3"})),
            core::Value::Decimal("0.0025".into())
        );
        assert_eq!(
            d(Some(K::Decimal), json!("1e2")),
            core::Value::Decimal("100".into())
        );
        assert!(
            decode(
                Some(K::Integer),
                "f",
                json!({"$int": "99999999999999999999"})
            )
            .is_err()
        );
        assert!(decode(Some(K::Integer), "f", json!(18446744073709551615u64)).is_err());
        assert!(decode(Some(K::Text), "f", Json::Null).is_err());
    }

    #[test]
    fn values_encode_without_loss() {
        assert_eq!(
            encode(&core::Value::Integer(1 << 53)),
            json!({"$int": "9007199254740992"})
        );
        assert_eq!(
            encode(&core::Value::Integer(SAFE_INTEGER)),
            json!(SAFE_INTEGER)
        );
        assert_eq!(
            encode(&core::Value::Decimal("1.50".into())),
            json!({"$decimal": "1.50"})
        );
        assert_eq!(
            encode(&core::Value::Json(r#"{"b":1,"a":2}"#.into())).to_string(),
            r#"{"$json":{"a":2,"b":1}}"#
        );
    }
}
