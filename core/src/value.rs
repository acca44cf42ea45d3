//! Field values as users read and write them.

use std::collections::BTreeSet;
use std::fmt;

/// The value of one field of a record.
///
/// Which variant a field holds follows its [`FieldKind`](crate::FieldKind):
/// text-like types (text, long text, select, url, email, reference, date,
/// datetime) are [`Value::Text`]; integers [`Value::Integer`]; decimals
/// [`Value::Decimal`] in canonical form (`"12.5"`, never a float); multi-select
/// [`Value::Set`]. Writes are coerced where that is lossless, so `"8080"` is
/// accepted for an integer field and `"a,b"` for a multi-select.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Value {
    /// Text, and every type stored as text.
    Text(String),
    /// A signed 64-bit integer.
    Integer(i64),
    /// A decimal number in canonical text form, exact.
    Decimal(String),
    /// True or false.
    Bool(bool),
    /// The chosen options of a multi-select field.
    Set(BTreeSet<String>),
    /// A JSON document, kept as its compact text so equality is exact.
    Json(String),
}

impl Value {
    /// SHA-256 of the value with its kind: what the `hash` conflict policy
    /// compares (the lowest wins), in the registry and in adapter syncs alike.
    pub(crate) fn content_hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let tag = match self {
            Value::Text(_) => "text",
            Value::Integer(_) => "integer",
            Value::Decimal(_) => "decimal",
            Value::Bool(_) => "bool",
            Value::Set(_) => "set",
            Value::Json(_) => "json",
        };
        Sha256::digest(format!("{tag}:{}", self.to_json()).as_bytes()).into()
    }

    /// The value as JSON, for `--json` output and exports.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Text(s) | Value::Decimal(s) => serde_json::Value::String(s.clone()),
            Value::Integer(i) => (*i).into(),
            Value::Bool(b) => (*b).into(),
            Value::Set(set) => set.iter().cloned().collect::<Vec<_>>().into(),
            Value::Json(text) => serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
        }
    }

    /// Builds a value from JSON input (e.g. a record given as a JSON object).
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Decimal(n.to_string()),
            },
            serde_json::Value::Array(items) if items.iter().all(|i| i.is_string()) => Value::Set(
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect(),
            ),
            other => Value::Json(other.to_string()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) | Value::Decimal(s) | Value::Json(s) => f.write_str(s),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Set(set) => {
                let items: Vec<&str> = set.iter().map(String::as_str).collect();
                f.write_str(&items.join(","))
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Integer(i.into())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl<const N: usize> From<[&str; N]> for Value {
    fn from(items: [&str; N]) -> Self {
        Value::Set(items.iter().map(|s| (*s).to_owned()).collect())
    }
}
