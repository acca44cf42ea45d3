//! Field types, schemas, conflict policies and the validation of values.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::value::Value;

/// What kind of value a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FieldKind {
    /// A short string, replaced whole on each write.
    Text,
    /// A long string that merges character by character (Automerge text).
    #[serde(alias = "longtext", alias = "long-text")]
    LongText,
    /// A signed 64-bit integer.
    Integer,
    /// An exact decimal number, e.g. `"19.99"`.
    Decimal,
    /// True or false.
    #[serde(alias = "boolean")]
    Bool,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant, RFC 3339 (`2026-11-23T10:00:00Z`).
    #[serde(alias = "date_time", alias = "date-time")]
    Datetime,
    /// One of the field's options.
    Select,
    /// Any subset of the field's options; concurrent adds win over removes.
    #[serde(alias = "multi-select", alias = "multiselect")]
    MultiSelect,
    /// An absolute URL.
    Url,
    /// An email address.
    Email,
    /// The id of another record (`ID`, or `REGISTRY/ID` for another registry).
    Reference,
    /// Any JSON document, replaced whole on each write.
    Json,
}

impl FieldKind {
    /// The name used in schema files.
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::LongText => "long_text",
            FieldKind::Integer => "integer",
            FieldKind::Decimal => "decimal",
            FieldKind::Bool => "bool",
            FieldKind::Date => "date",
            FieldKind::Datetime => "datetime",
            FieldKind::Select => "select",
            FieldKind::MultiSelect => "multi_select",
            FieldKind::Url => "url",
            FieldKind::Email => "email",
            FieldKind::Reference => "reference",
            FieldKind::Json => "json",
        }
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How concurrent writes to one field are settled when read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ConflictPolicy {
    /// Automerge's deterministic winner (the same on every replica).
    #[default]
    Automerge,
    /// The write with the latest hybrid logical clock wins; ties go to the
    /// higher author key.
    #[serde(alias = "lww", alias = "last_write_wins")]
    LastWriteWins,
    /// The value with the lowest content hash wins: stable and clock-free.
    Hash,
    /// The conflict stays open, and is reported, until someone resolves it.
    Manual,
}

impl ConflictPolicy {
    /// The name used in schema files and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ConflictPolicy::Automerge => "automerge",
            ConflictPolicy::LastWriteWins => "last-write-wins",
            ConflictPolicy::Hash => "hash",
            ConflictPolicy::Manual => "manual",
        }
    }
}

impl fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ConflictPolicy {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            SchemaError::Invalid(format!(
                "unknown conflict policy '{s}'; use automerge, last-write-wins, hash or manual"
            ))
        })
    }
}

/// The definition of one field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// The field's name, unique in its schema.
    pub name: String,
    /// What the field holds.
    #[serde(rename = "type")]
    pub field_type: FieldKind,
    /// Every live record must have a value.
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// No two live records may hold the same value.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unique: bool,
    /// Allowed values of a select or multi-select field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// A regular expression the whole text must match (text-like types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Least value (numbers), least length (text) or least count (multi-select).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Greatest value (numbers), greatest length (text) or greatest count (multi-select).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// What the field is for, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A conflict policy for this field, overriding the registry's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_policy: Option<ConflictPolicy>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl FieldDef {
    /// A field of the given name and type with no rules.
    pub fn new(name: impl Into<String>, field_type: FieldKind) -> Self {
        FieldDef {
            name: name.into(),
            field_type,
            required: false,
            unique: false,
            options: Vec::new(),
            pattern: None,
            min: None,
            max: None,
            description: None,
            conflict_policy: None,
        }
    }

    /// Marks the field required.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Marks the field unique among live records.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// Sets the allowed options (select, multi-select).
    pub fn options<I: IntoIterator<Item = S>, S: Into<String>>(mut self, options: I) -> Self {
        self.options = options.into_iter().map(Into::into).collect();
        self
    }

    /// Sets a pattern the text must match.
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.pattern = Some(pattern.into());
        self
    }

    /// Sets the bounds (value, length or count, by type).
    pub fn range(mut self, min: Option<f64>, max: Option<f64>) -> Self {
        self.min = min;
        self.max = max;
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Overrides the registry's conflict policy for this field.
    pub fn conflict_policy(mut self, policy: ConflictPolicy) -> Self {
        self.conflict_policy = Some(policy);
        self
    }
}

/// A registry's schema: its fields and registry-wide settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// The fields, in display order.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// The field that names a record for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_field: Option<String>,
    /// The registry-wide conflict policy.
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,
    /// Who may change a record: any writer (default), or only its creator
    /// and admins. Enforced on local writes and on every import.
    #[serde(default)]
    pub record_rule: RecordRule,
    /// How many members must attest a state for it to count as attested
    /// (k of n); `None` means no threshold is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
}

/// Who may change a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RecordRule {
    /// Any writer may change any record.
    #[default]
    AnyWriter,
    /// A record may be changed only by the member who created it, or an admin.
    CreatorOrAdmin,
}

impl RecordRule {
    /// The name used in schema files.
    pub fn name(self) -> &'static str {
        match self {
            RecordRule::AnyWriter => "any-writer",
            RecordRule::CreatorOrAdmin => "creator-or-admin",
        }
    }
}

impl Schema {
    /// An empty schema.
    pub fn new() -> Self {
        Schema::default()
    }

    /// Adds a field.
    pub fn field(mut self, field: FieldDef) -> Self {
        self.fields.push(field);
        self
    }

    /// Sets the display field.
    pub fn display_field(mut self, name: impl Into<String>) -> Self {
        self.display_field = Some(name.into());
        self
    }

    /// Sets the registry-wide conflict policy.
    pub fn conflict_policy(mut self, policy: ConflictPolicy) -> Self {
        self.conflict_policy = policy;
        self
    }

    /// Sets who may change a record.
    pub fn record_rule(mut self, rule: RecordRule) -> Self {
        self.record_rule = rule;
        self
    }

    /// Sets the attestation threshold k.
    pub fn quorum(mut self, k: u32) -> Self {
        self.quorum = Some(k);
        self
    }

    /// Looks a field up by name.
    pub fn get(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The policy that applies to a field.
    pub fn policy_for(&self, field: &str) -> ConflictPolicy {
        self.get(field)
            .and_then(|f| f.conflict_policy)
            .unwrap_or(self.conflict_policy)
    }

    /// Parses a schema from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, SchemaError> {
        let schema: Schema =
            toml::from_str(text).map_err(|e| SchemaError::Parse(e.message().to_owned()))?;
        schema.check()?;
        Ok(schema)
    }

    /// Parses a schema from JSON text.
    pub fn from_json(text: &str) -> Result<Self, SchemaError> {
        let schema: Schema =
            serde_json::from_str(text).map_err(|e| SchemaError::Parse(e.to_string()))?;
        schema.check()?;
        Ok(schema)
    }

    /// Reads a schema file: JSON if it ends in `.json`, TOML otherwise.
    pub fn from_file(path: &Path) -> Result<Self, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|e| SchemaError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            Schema::from_json(&text)
        } else {
            Schema::from_toml(&text)
        };
        parsed.map_err(|e| SchemaError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Checks that the schema itself makes sense.
    pub fn check(&self) -> Result<(), SchemaError> {
        let mut seen = BTreeSet::new();
        for f in &self.fields {
            let bad = |what: String| SchemaError::Invalid(format!("field '{}': {what}", f.name));
            if !valid_field_name(&f.name) {
                return Err(bad(
                    "names use letters, digits, '_' and '-', start with a letter, at most 64 characters".into(),
                ));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(bad("defined twice".into()));
            }
            let wants_options = matches!(f.field_type, FieldKind::Select | FieldKind::MultiSelect);
            if wants_options && f.options.is_empty() {
                return Err(bad(format!("a {} field needs options", f.field_type)));
            }
            if !wants_options && !f.options.is_empty() {
                return Err(bad(format!("a {} field takes no options", f.field_type)));
            }
            if let Some(p) = &f.pattern {
                Regex::new(&anchored(p))
                    .map_err(|e| bad(format!("pattern '{p}' is not a valid regex: {e}")))?;
            }
            if let (Some(min), Some(max)) = (f.min, f.max)
                && min > max
            {
                return Err(bad(format!("min {min} is greater than max {max}")));
            }
            if f.unique && matches!(f.field_type, FieldKind::LongText | FieldKind::MultiSelect) {
                return Err(bad(format!("a {} field cannot be unique", f.field_type)));
            }
        }
        if self.quorum == Some(0) {
            return Err(SchemaError::Invalid("quorum must be at least 1".into()));
        }
        if let Some(d) = &self.display_field
            && self.get(d).is_none()
        {
            return Err(SchemaError::Invalid(format!(
                "display_field '{d}' is not a field of the schema"
            )));
        }
        Ok(())
    }
}

fn valid_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// A problem with a schema definition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The schema text could not be parsed.
    #[error("schema does not parse: {0}")]
    Parse(String),
    /// The schema parsed but is inconsistent.
    #[error("schema is invalid: {0}")]
    Invalid(String),
    /// The schema file could not be read.
    #[error("schema file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A rule a value broke.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Rule {
    /// The field is required and has no value.
    Required,
    /// Another live record already holds the value.
    Unique {
        /// The record that holds it.
        other_record: String,
    },
    /// The value is not of the field's type.
    Type {
        /// The field's type.
        expected: FieldKind,
        /// Why it does not fit.
        reason: String,
    },
    /// The value is not one of the options.
    Options {
        /// The allowed options.
        allowed: Vec<String>,
    },
    /// The text does not match the pattern.
    Pattern(String),
    /// Below the minimum.
    Min(f64),
    /// Above the maximum.
    Max(f64),
    /// The field is not in the schema.
    UnknownField,
}

impl Rule {
    /// The rule's short name, as errors name it to programs (`required`,
    /// `unique`, `type`, `options`, `pattern`, `min`, `max`,
    /// `unknown-field`).
    pub fn name(&self) -> &'static str {
        match self {
            Rule::Required => "required",
            Rule::Unique { .. } => "unique",
            Rule::Type { .. } => "type",
            Rule::Options { .. } => "options",
            Rule::Pattern(_) => "pattern",
            Rule::Min(_) => "min",
            Rule::Max(_) => "max",
            Rule::UnknownField => "unknown-field",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Required => f.write_str("required: the field must have a value"),
            Rule::Unique { other_record } => {
                write!(f, "unique: record {other_record} already has this value")
            }
            Rule::Type { expected, reason } => write!(f, "type {expected}: {reason}"),
            Rule::Options { allowed } => {
                write!(f, "options: must be one of {}", allowed.join(", "))
            }
            Rule::Pattern(p) => write!(f, "pattern: must match /{p}/"),
            Rule::Min(m) => write!(f, "min: must be at least {m}"),
            Rule::Max(m) => write!(f, "max: must be at most {m}"),
            Rule::UnknownField => f.write_str("unknown field: not in the registry's schema"),
        }
    }
}

/// A value that breaks the schema, with everything needed to fix it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "registry '{registry}', record {record}, field '{field}': value {value:?} breaks rule {rule}; fix the value or change the schema"
)]
pub struct ValidationError {
    /// The registry's name.
    pub registry: String,
    /// The record's id.
    pub record: String,
    /// The field's name.
    pub field: String,
    /// The offending value as text (empty when missing).
    pub value: String,
    /// The rule it breaks.
    pub rule: Rule,
}

/// A schema prepared for fast validation (patterns compiled once).
#[derive(Debug)]
pub(crate) struct CompiledSchema {
    pub(crate) schema: Schema,
    patterns: BTreeMap<String, Regex>,
}

impl CompiledSchema {
    pub(crate) fn new(schema: Schema) -> Self {
        let patterns = schema
            .fields
            .iter()
            .filter_map(|f| {
                let p = f.pattern.as_ref()?;
                Regex::new(&anchored(p)).ok().map(|r| (f.name.clone(), r))
            })
            .collect();
        CompiledSchema { schema, patterns }
    }

    /// Coerces `value` to the field's type and checks every per-value rule
    /// (all but `required` and `unique`, which need the whole record/registry).
    pub(crate) fn check_value(&self, field: &str, value: Value) -> Result<Value, Rule> {
        let def = self.schema.get(field).ok_or(Rule::UnknownField)?;
        let value = coerce(def.field_type, value)?;
        self.check_rules(def, &value)?;
        Ok(value)
    }

    fn check_rules(&self, def: &FieldDef, value: &Value) -> Result<(), Rule> {
        let measure = match value {
            Value::Integer(i) => Some(*i as f64),
            Value::Decimal(d) => d.parse::<f64>().ok(),
            Value::Text(t) if !matches!(def.field_type, FieldKind::Date | FieldKind::Datetime) => {
                Some(t.chars().count() as f64)
            }
            Value::Set(s) => Some(s.len() as f64),
            _ => None,
        };
        if let Some(m) = measure {
            if let Some(min) = def.min.filter(|min| m < *min) {
                return Err(Rule::Min(min));
            }
            if let Some(max) = def.max.filter(|max| m > *max) {
                return Err(Rule::Max(max));
            }
        }
        match value {
            Value::Text(t)
                if def.field_type == FieldKind::Select && !def.options.iter().any(|o| o == t) =>
            {
                return Err(Rule::Options {
                    allowed: def.options.clone(),
                });
            }
            Value::Set(set) if set.iter().any(|v| !def.options.contains(v)) => {
                return Err(Rule::Options {
                    allowed: def.options.clone(),
                });
            }
            _ => {}
        }
        if let (Some(re), Value::Text(t)) = (self.patterns.get(&def.name), value)
            && !re.is_match(t)
        {
            return Err(Rule::Pattern(def.pattern.clone().unwrap_or_default()));
        }
        Ok(())
    }
}

fn type_err(expected: FieldKind, reason: impl Into<String>) -> Rule {
    Rule::Type {
        expected,
        reason: reason.into(),
    }
}

/// Converts a value to the representation of `ty`, where that is lossless.
pub fn coerce(ty: FieldKind, value: Value) -> Result<Value, Rule> {
    use FieldKind as T;
    match (ty, value) {
        (T::Text | T::LongText | T::Select | T::Reference, Value::Text(t)) => {
            if ty == T::Reference && t.trim().is_empty() {
                return Err(type_err(ty, "a reference needs a record id"));
            }
            Ok(Value::Text(t))
        }
        (T::Url, Value::Text(t)) => {
            static URL: OnceLock<Regex> = OnceLock::new();
            let re = URL.get_or_init(|| {
                Regex::new(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#]+[^\s]*$").expect("valid regex")
            });
            if re.is_match(&t) {
                Ok(Value::Text(t))
            } else {
                Err(type_err(
                    ty,
                    "expected an absolute URL like https://example.com/x",
                ))
            }
        }
        (T::Email, Value::Text(t)) => {
            static EMAIL: OnceLock<Regex> = OnceLock::new();
            let re = EMAIL
                .get_or_init(|| Regex::new(r"^[^\s@]+@[^\s@]+\.[^\s@]+$").expect("valid regex"));
            if re.is_match(&t) {
                Ok(Value::Text(t))
            } else {
                Err(type_err(ty, "expected an address like name@example.com"))
            }
        }
        (T::Date, Value::Text(t)) => {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(&t, format)
                .map(|_| Value::Text(t))
                .map_err(|_| type_err(ty, "expected a calendar date YYYY-MM-DD"))
        }
        (T::Datetime, Value::Text(t)) => {
            use time::format_description::well_known::Rfc3339;
            let parsed = time::OffsetDateTime::parse(&t, &Rfc3339)
                .map_err(|_| type_err(ty, "expected RFC 3339, e.g. 2026-11-23T10:00:00Z"))?;
            // One canonical form, so equal instants are equal values.
            let utc = parsed.to_offset(time::UtcOffset::UTC);
            Ok(Value::Text(utc.format(&Rfc3339).expect("UTC formats")))
        }
        (T::Integer, Value::Integer(i)) => Ok(Value::Integer(i)),
        (T::Integer, Value::Text(t)) => t
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| type_err(ty, "expected a whole number")),
        (T::Decimal, Value::Integer(i)) => Ok(Value::Decimal(i.to_string())),
        (T::Decimal, Value::Decimal(d) | Value::Text(d)) => canonical_decimal(&d)
            .map(Value::Decimal)
            .ok_or_else(|| type_err(ty, "expected a decimal number like -12.50")),
        (T::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
        (T::Bool, Value::Text(t)) => match t.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(type_err(ty, "expected true or false")),
        },
        (T::MultiSelect, Value::Set(s)) => Ok(Value::Set(s)),
        (T::MultiSelect, Value::Text(t)) => Ok(Value::Set(
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )),
        (T::Json, Value::Json(j) | Value::Text(j)) => serde_json::from_str::<serde_json::Value>(&j)
            .map(|v| Value::Json(v.to_string()))
            .map_err(|e| type_err(ty, format!("not valid JSON: {e}"))),
        (T::Json, other) => Ok(Value::Json(other.to_json().to_string())),
        (ty, other) => Err(type_err(
            ty,
            format!("a {} value does not fit", value_kind(&other)),
        )),
    }
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Text(_) => "text",
        Value::Integer(_) => "integer",
        Value::Decimal(_) => "decimal",
        Value::Bool(_) => "bool",
        Value::Set(_) => "set",
        Value::Json(_) => "json",
    }
}

/// `-0012.500` → `-12.5`; `None` if not a plain decimal number.
fn canonical_decimal(text: &str) -> Option<String> {
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() {
        int.to_owned()
    } else {
        format!("{int}.{frac}")
    };
    Some(if neg && body != "0" {
        format!("-{body}")
    } else {
        body
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> CompiledSchema {
        CompiledSchema::new(
            Schema::new()
                .field(
                    FieldDef::new("name", FieldKind::Text)
                        .required()
                        .pattern("[a-z-]+"),
                )
                .field(FieldDef::new("port", FieldKind::Integer).range(Some(1.0), Some(65535.0)))
                .field(FieldDef::new("tier", FieldKind::Select).options(["gold", "silver"]))
                .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["a", "b"]))
                .field(FieldDef::new("price", FieldKind::Decimal))
                .field(FieldDef::new("at", FieldKind::Datetime))
                .field(FieldDef::new("on", FieldKind::Date))
                .field(FieldDef::new("home", FieldKind::Url))
                .field(FieldDef::new("owner", FieldKind::Email))
                .field(FieldDef::new("meta", FieldKind::Json)),
        )
    }

    #[test]
    fn values_are_coerced_to_their_field_type() {
        let s = schema();
        assert_eq!(
            s.check_value("port", "8080".into()),
            Ok(Value::Integer(8080))
        );
        assert_eq!(
            s.check_value("price", "007.50".into()),
            Ok(Value::Decimal("7.5".into()))
        );
        assert_eq!(
            s.check_value("tags", "a, b".into()),
            Ok(Value::from(["a", "b"]))
        );
        assert_eq!(
            s.check_value("at", "2026-11-23T12:00:00+02:00".into()),
            Ok(Value::Text("2026-11-23T10:00:00Z".into()))
        );
        assert_eq!(
            s.check_value("meta", r#"{ "a": 1 }"#.into()),
            Ok(Value::Json(r#"{"a":1}"#.into()))
        );
    }

    #[test]
    fn each_rule_is_enforced() {
        let s = schema();
        assert_eq!(s.check_value("port", 0.into()), Err(Rule::Min(1.0)));
        assert_eq!(s.check_value("port", 70000.into()), Err(Rule::Max(65535.0)));
        assert!(matches!(
            s.check_value("port", "x".into()),
            Err(Rule::Type { .. })
        ));
        assert!(matches!(
            s.check_value("tier", "bronze".into()),
            Err(Rule::Options { .. })
        ));
        assert!(matches!(
            s.check_value("tags", "a,z".into()),
            Err(Rule::Options { .. })
        ));
        assert!(matches!(
            s.check_value("name", "Bad Name".into()),
            Err(Rule::Pattern(_))
        ));
        assert!(matches!(
            s.check_value("on", "2026-02-30".into()),
            Err(Rule::Type { .. })
        ));
        assert!(matches!(
            s.check_value("home", "not a url".into()),
            Err(Rule::Type { .. })
        ));
        assert!(matches!(
            s.check_value("owner", "nobody".into()),
            Err(Rule::Type { .. })
        ));
        assert!(matches!(
            s.check_value("meta", "{".into()),
            Err(Rule::Type { .. })
        ));
        assert_eq!(s.check_value("nope", "x".into()), Err(Rule::UnknownField));
    }

    #[test]
    fn schema_files_parse_and_bad_schemas_are_refused() {
        let toml = r#"
            display_field = "name"
            conflict_policy = "last-write-wins"
            [[fields]]
            name = "name"
            type = "text"
            required = true
            [[fields]]
            name = "tier"
            type = "select"
            options = ["gold"]
            conflict_policy = "manual"
        "#;
        let s = Schema::from_toml(toml).unwrap();
        assert_eq!(s.policy_for("name"), ConflictPolicy::LastWriteWins);
        assert_eq!(s.policy_for("tier"), ConflictPolicy::Manual);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(Schema::from_json(&json).unwrap(), s);

        let no_options = "[[fields]]\nname = \"t\"\ntype = \"select\"\n";
        assert!(
            Schema::from_toml(no_options)
                .unwrap_err()
                .to_string()
                .contains("needs options")
        );
        let bad_regex = "[[fields]]\nname = \"t\"\ntype = \"text\"\npattern = \"(\"\n";
        assert!(Schema::from_toml(bad_regex).is_err());
        let unknown_key = "[[fields]]\nname = \"t\"\ntype = \"text\"\nrequird = true\n";
        assert!(Schema::from_toml(unknown_key).is_err());
    }

    #[test]
    fn decimals_have_one_canonical_form() {
        assert_eq!(canonical_decimal("-0.0").as_deref(), Some("0"));
        assert_eq!(canonical_decimal("+12.3400").as_deref(), Some("12.34"));
        assert_eq!(canonical_decimal(".5").as_deref(), Some("0.5"));
        assert_eq!(canonical_decimal("1e5"), None);
        assert_eq!(canonical_decimal("."), None);
    }
}
