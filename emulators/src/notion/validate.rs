//! Checking page property writes the way the API does, and turning accepted
//! values into the shapes the API reads back.

use serde_json::{Map, Value, json};

use super::{ApiError, DataSource, PropSchema};

/// Longest `text.content` of one rich-text item.
const MAX_TEXT: usize = 2000;
/// Most items in any array value (rich text, multi_select, relation, people).
const MAX_ITEMS: usize = 100;
/// Longest URL.
const MAX_URL: usize = 2000;
/// Longest email address or phone number.
const MAX_SHORT: usize = 200;

/// Types Notion computes itself; writing them is refused.
pub(super) const READ_ONLY: &[&str] = &[
    "formula",
    "rollup",
    "created_time",
    "last_edited_time",
    "created_by",
    "last_edited_by",
    "unique_id",
    "button",
    "verification",
];

/// One accepted write: the property's id, its stored value, and any select
/// options the write creates.
pub(super) struct Accepted {
    pub(super) prop_id: String,
    pub(super) value: Value,
    pub(super) new_options: Vec<Value>,
}

fn shown(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// A string's length as the API's JavaScript `.length` counts it: in
/// UTF-16 code units (an emoji outside the BMP counts 2).
pub(super) fn js_len(s: &str) -> usize {
    s.encode_utf16().count()
}

fn invalid(message: String) -> ApiError {
    ApiError::validation(message)
}

/// Validates `properties` (a write body's `properties`) against the data
/// source's schema. Keys may be property names or ids.
pub(super) fn validate_properties(
    ds: &DataSource,
    properties: &Value,
    option_id: &mut dyn FnMut() -> String,
) -> Result<Vec<Accepted>, ApiError> {
    let Some(map) = properties.as_object() else {
        return Err(invalid(format!(
            "body.properties should be an object or `undefined`, instead was `{}`.",
            shown(properties)
        )));
    };
    let mut out: Vec<Accepted> = Vec::new();
    for (key, value) in map {
        let Some(prop) = ds.find(key) else {
            return Err(invalid(format!("{key} is not a property that exists.")));
        };
        if READ_ONLY.contains(&prop.kind.as_str()) {
            return Err(invalid(format!(
                "body.properties.{key}.{kind} cannot be written: `{name}` is a {kind} property, \
                 which Notion computes itself.",
                kind = prop.kind,
                name = prop.name
            )));
        }
        // Options created earlier in this same request count as existing.
        let mut prop = prop.clone();
        let id = prop.id.clone();
        for earlier in out.iter().filter(|a| a.prop_id == id) {
            push_options(&mut prop, &earlier.new_options);
        }
        let accepted = validate_value(&prop, key, value, option_id)?;
        out.retain(|a| a.prop_id != prop.id);
        out.push(accepted);
    }
    Ok(out)
}

fn push_options(prop: &mut PropSchema, options: &[Value]) {
    if let Some(list) = prop.config.get_mut("options").and_then(Value::as_array_mut) {
        list.extend(options.iter().cloned());
    }
}

fn validate_value(
    prop: &PropSchema,
    key: &str,
    value: &Value,
    option_id: &mut dyn FnMut() -> String,
) -> Result<Accepted, ApiError> {
    let kind = prop.kind.as_str();
    let at = format!("body.properties.{key}.{kind}");
    let Some(object) = value.as_object() else {
        return Err(invalid(format!(
            "body.properties.{key} should be an object, instead was `{}`.",
            shown(value)
        )));
    };
    if let Some(Value::String(t)) = object.get("type")
        && t != kind
    {
        return Err(invalid(format!(
            "body.properties.{key}.type should be `\"{kind}\"` for property `{}`, instead was `\"{t}\"`.",
            prop.name
        )));
    }
    let Some(inner) = object.get(kind) else {
        return Err(invalid(format!(
            "{at} should be defined, instead was `undefined`."
        )));
    };
    let mut new_options = Vec::new();
    let stored = match kind {
        "title" | "rich_text" => rich_text(&at, inner)?,
        "number" => match inner {
            Value::Null => Value::Null,
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => inner.clone(),
            other => {
                return Err(invalid(format!(
                    "{at} should be a number or `null`, instead was `{}`.",
                    shown(other)
                )));
            }
        },
        "checkbox" => match inner {
            Value::Bool(_) => inner.clone(),
            other => {
                return Err(invalid(format!(
                    "{at} should be a boolean, instead was `{}`.",
                    shown(other)
                )));
            }
        },
        "select" | "status" => match inner {
            Value::Null => Value::Null,
            Value::Object(_) => {
                let (option, created) = option(prop, &at, inner, option_id)?;
                new_options.extend(created);
                option
            }
            other => {
                return Err(invalid(format!(
                    "{at} should be an object or `null`, instead was `{}`.",
                    shown(other)
                )));
            }
        },
        "multi_select" => {
            let items = array(&at, inner)?;
            let mut chosen = Vec::new();
            let mut prop = prop.clone();
            for (i, item) in items.iter().enumerate() {
                let (option, created) = option(&prop, &format!("{at}[{i}]"), item, option_id)?;
                push_options(&mut prop, &created);
                new_options.extend(created);
                if !chosen.contains(&option) {
                    chosen.push(option);
                }
            }
            Value::Array(chosen)
        }
        "date" => date(&at, inner)?,
        "url" => short_string(&at, inner, MAX_URL)?,
        "email" | "phone_number" => short_string(&at, inner, MAX_SHORT)?,
        "relation" => {
            let items = array(&at, inner)?;
            let mut ids = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Some(id) = item.get("id").and_then(Value::as_str) else {
                    return Err(invalid(format!(
                        "{at}[{i}].id should be a string, instead was `{}`.",
                        shown(item.get("id").unwrap_or(&Value::Null))
                    )));
                };
                ids.push(json!({ "id": super::dashed(id) }));
            }
            Value::Array(ids)
        }
        "people" => {
            let items = array(&at, inner)?;
            let mut people = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Some(id) = item.get("id").and_then(Value::as_str) else {
                    return Err(invalid(format!(
                        "{at}[{i}].id should be a string, instead was `{}`.",
                        shown(item.get("id").unwrap_or(&Value::Null))
                    )));
                };
                people.push(json!({ "object": "user", "id": super::dashed(id) }));
            }
            Value::Array(people)
        }
        "files" => Value::Array(array(&at, inner)?.clone()),
        other => {
            return Err(invalid(format!(
                "Writing properties of type {other} is not supported (property `{}`).",
                prop.name
            )));
        }
    };
    Ok(Accepted {
        prop_id: prop.id.clone(),
        value: stored,
        new_options,
    })
}

fn array<'a>(at: &str, v: &'a Value) -> Result<&'a Vec<Value>, ApiError> {
    let Some(items) = v.as_array() else {
        return Err(invalid(format!(
            "{at} should be an array, instead was `{}`.",
            shown(v)
        )));
    };
    if items.len() > MAX_ITEMS {
        return Err(invalid(format!(
            "{at}.length should be ≤ `{MAX_ITEMS}`, instead was `{}`.",
            items.len()
        )));
    }
    Ok(items)
}

fn short_string(at: &str, v: &Value, max: usize) -> Result<Value, ApiError> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::String(s) if js_len(s) > max => Err(invalid(format!(
            "{at}.length should be ≤ `{max}`, instead was `{}`.",
            js_len(s)
        ))),
        Value::String(_) => Ok(v.clone()),
        other => Err(invalid(format!(
            "{at} should be a string or `null`, instead was `{}`.",
            shown(other)
        ))),
    }
}

/// The API's default annotations of a text item.
fn default_annotations() -> Map<String, Value> {
    let mut m = Map::new();
    for flag in ["bold", "italic", "strikethrough", "underline", "code"] {
        m.insert(flag.to_owned(), Value::Bool(false));
    }
    m.insert("color".to_owned(), Value::String("default".to_owned()));
    m
}

fn rich_text(at: &str, v: &Value) -> Result<Value, ApiError> {
    let items = array(at, v)?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let Some(text) = item.get("text") else {
            return Err(invalid(format!(
                "{here}.text should be defined, instead was `undefined`."
            )));
        };
        let content = match text.get("content") {
            Some(Value::String(s)) => s,
            other => {
                return Err(invalid(format!(
                    "{here}.text.content should be a string, instead was `{}`.",
                    other.map(shown).unwrap_or_else(|| "undefined".to_owned())
                )));
            }
        };
        let length = js_len(content);
        if length > MAX_TEXT {
            return Err(invalid(format!(
                "{here}.text.content.length should be ≤ `{MAX_TEXT}`, instead was `{length}`."
            )));
        }
        let link = match text.get("link") {
            None | Some(Value::Null) => Value::Null,
            Some(l) => match l.get("url") {
                Some(Value::String(u)) if js_len(u) <= MAX_URL => json!({ "url": u }),
                _ => {
                    return Err(invalid(format!(
                        "{here}.text.link.url should be a string of at most {MAX_URL} characters, \
                         instead was `{}`.",
                        shown(l)
                    )));
                }
            },
        };
        let mut annotations = default_annotations();
        if let Some(given) = item.get("annotations").and_then(Value::as_object) {
            for (k, v) in given {
                if annotations.contains_key(k) {
                    annotations.insert(k.clone(), v.clone());
                }
            }
        }
        let href = link.get("url").cloned().unwrap_or(Value::Null);
        out.push(json!({
            "type": "text",
            "text": { "content": content, "link": link },
            "annotations": annotations,
            "plain_text": content,
            "href": href,
        }));
    }
    Ok(Value::Array(out))
}

/// Picks (or, for select and multi_select, creates) an option from a
/// `{name}` or `{id}` object.
fn option(
    prop: &PropSchema,
    at: &str,
    v: &Value,
    option_id: &mut dyn FnMut() -> String,
) -> Result<(Value, Vec<Value>), ApiError> {
    let options: Vec<Value> = prop
        .config
        .get("options")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(id) = v.get("id").and_then(Value::as_str) {
        return match options.iter().find(|o| o["id"] == id) {
            Some(o) => Ok((public_option(o), Vec::new())),
            None => Err(invalid(format!(
                "{at}.id: no option with id `{id}` exists on property `{}`.",
                prop.name
            ))),
        };
    }
    let name = match v.get("name") {
        Some(Value::String(n)) => n.trim(),
        other => {
            return Err(invalid(format!(
                "{at}.name should be a string, instead was `{}`.",
                other.map(shown).unwrap_or_else(|| "undefined".to_owned())
            )));
        }
    };
    if name.contains(',') {
        return Err(invalid(format!(
            "Invalid {} option, commas not allowed: {name}",
            if prop.kind == "multi_select" {
                "multi_select"
            } else {
                prop.kind.as_str()
            }
        )));
    }
    if name.chars().count() > 100 {
        return Err(invalid(format!(
            "{at}.name.length should be ≤ `100`, instead was `{}`.",
            name.chars().count()
        )));
    }
    if let Some(o) = options.iter().find(|o| o["name"] == name) {
        return Ok((public_option(o), Vec::new()));
    }
    if prop.kind == "status" {
        return Err(invalid(format!(
            "Invalid status option. Status option \"{name}\" does not exist for property `{}`; \
             status options cannot be created through the API.",
            prop.name
        )));
    }
    let created = json!({
        "id": option_id(),
        "name": name,
        "color": v.get("color").and_then(Value::as_str).unwrap_or("default"),
        "description": null,
    });
    Ok((public_option(&created), vec![created]))
}

fn public_option(o: &Value) -> Value {
    json!({ "id": o["id"], "name": o["name"], "color": o["color"] })
}

fn date(at: &str, v: &Value) -> Result<Value, ApiError> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Object(m) => {
            let zone = match m.get("time_zone") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(other) => {
                    return Err(invalid(format!(
                        "{at}.time_zone should be a string or `null`, instead was `{}`.",
                        shown(other)
                    )));
                }
            };
            let start = match m.get("start") {
                Some(Value::String(s)) => super::normalize_date(s, zone).map_err(|want| {
                    invalid(format!("{at}.start should be {want}, instead was `{s}`."))
                })?,
                other => {
                    return Err(invalid(format!(
                        "{at}.start should be an ISO 8601 date or date-time string, instead was `{}`.",
                        other.map(shown).unwrap_or_else(|| "undefined".to_owned())
                    )));
                }
            };
            let end = match m.get("end") {
                None | Some(Value::Null) => Value::Null,
                Some(Value::String(s)) => {
                    Value::String(super::normalize_date(s, zone).map_err(|want| {
                        invalid(format!("{at}.end should be {want}, instead was `{s}`."))
                    })?)
                }
                Some(other) => {
                    return Err(invalid(format!(
                        "{at}.end should be an ISO 8601 date or date-time string or `null`, \
                         instead was `{}`.",
                        shown(other)
                    )));
                }
            };
            // The API always reads time_zone back as null.
            Ok(json!({ "start": start, "end": end, "time_zone": null }))
        }
        other => Err(invalid(format!(
            "{at} should be an object or `null`, instead was `{}`.",
            shown(other)
        ))),
    }
}
