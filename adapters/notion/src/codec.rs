//! Values ↔ Notion property values: what a page's property reads as for a
//! field of a given type, and what a value is written as.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value as Json, json};

use chittysync::{ColumnSpec, FieldKind, RowError, Value};

use crate::layout::Prop;

/// The most characters of one rich-text item.
const TEXT_CHUNK: usize = 2000;
/// The most items of a multi-select, relation or people value.
const MAX_ITEMS: usize = 100;
const MAX_URL: usize = 2000;
const MAX_EMAIL: usize = 200;

/// The `key` string of each object in a property value's array (the names
/// of multi-select options, the ids of people and related pages).
fn strings_at<'a>(inner: &'a Json, key: &'a str) -> impl Iterator<Item = String> + 'a {
    inner
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |o| o.get(key).and_then(Json::as_str))
        .map(str::to_owned)
}

/// The length of text as Notion counts it: UTF-16 code units (an emoji
/// outside the Basic Multilingual Plane counts 2).
fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Splits text into pieces of at most [`TEXT_CHUNK`] UTF-16 units, never
/// inside a character (so never between the halves of a surrogate pair).
fn text_chunks(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let (mut start, mut units) = (0, 0);
    for (at, c) in text.char_indices() {
        if units + c.len_utf16() > TEXT_CHUNK {
            chunks.push(&text[start..at]);
            (start, units) = (at, 0);
        }
        units += c.len_utf16();
    }
    if start < text.len() {
        chunks.push(&text[start..]);
    }
    chunks
}

/// Splits text into rich-text items of at most [`TEXT_CHUNK`] UTF-16 units.
pub(crate) fn rich_text(text: &str) -> Json {
    let items: Vec<Json> = text_chunks(text)
        .into_iter()
        .map(|c| json!({"type": "text", "text": {"content": c}}))
        .collect();
    Json::Array(items)
}

/// Joins rich-text items back into one string.
pub(crate) fn plain_text(items: &Json) -> String {
    items
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| {
                    i.pointer("/text/content")
                        .or_else(|| i.get("plain_text"))
                        .and_then(Json::as_str)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `id` looks like a Notion page id (a UUID, dashed or not).
pub(crate) fn looks_like_page_id(id: &str) -> bool {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    hex.len() == 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && (id.len() == 32 || id.len() == 36)
}

/// A value read as text, typed for the field.
fn text_value(ft: FieldKind, s: String) -> Value {
    match ft {
        FieldKind::Integer => s
            .trim()
            .parse()
            .map(Value::Integer)
            .unwrap_or(Value::Text(s)),
        FieldKind::Decimal if s.trim().parse::<f64>().is_ok() => {
            Value::Decimal(s.trim().to_owned())
        }
        FieldKind::Bool => match s.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::Text(s),
        },
        FieldKind::Json => Value::Json(s),
        _ => Value::Text(s),
    }
}

/// A number read, typed for the field.
fn number_value(ft: FieldKind, n: &serde_json::Number) -> Value {
    let text = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i.to_string(),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
        (None, Some(f)) => format!("{f}"),
        _ => n.to_string(),
    };
    match ft {
        FieldKind::Integer => text
            .parse()
            .map(Value::Integer)
            .unwrap_or(Value::Decimal(text)),
        FieldKind::Decimal => Value::Decimal(text),
        _ => Value::Text(text),
    }
}

/// A scalar JSON value (from a formula or rollup), typed for the field.
fn scalar_value(ft: FieldKind, v: &Json) -> Option<Value> {
    match v {
        Json::Null => None,
        Json::String(s) if s.is_empty() => None,
        Json::String(s) => Some(text_value(ft, s.clone())),
        Json::Number(n) => Some(number_value(ft, n)),
        Json::Bool(b) => Some(if ft == FieldKind::Bool {
            Value::Bool(*b)
        } else {
            Value::Text(b.to_string())
        }),
        Json::Object(o) if o.contains_key("start") => scalar_value(ft, &o["start"]),
        other => Some(Value::Json(other.to_string())),
    }
}

/// One property value read from a page, before relation ids are turned
/// into record ids.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell {
    Ready(Value),
    /// Related page ids; `has_more` when the page object held only some.
    Pages {
        ids: Vec<String>,
        has_more: bool,
    },
    /// People the page object held only some of: read them all.
    People,
}

/// Reads one property value of a page for a field.
pub(crate) fn read_cell(ft: FieldKind, pv: &Json) -> Option<Cell> {
    let kind = pv.get("type").and_then(Json::as_str).unwrap_or("");
    let inner = pv.get(kind).unwrap_or(&Json::Null);
    let ready = |v: Value| Some(Cell::Ready(v));
    match kind {
        "title" | "rich_text" => {
            let text = plain_text(inner);
            if text.is_empty() {
                None
            } else {
                ready(text_value(ft, text))
            }
        }
        "number" => match inner {
            Json::Number(n) => ready(number_value(ft, n)),
            _ => None,
        },
        // A checkbox is never empty: unchecked is false.
        "checkbox" => inner.as_bool().and_then(|b| {
            ready(if ft == FieldKind::Bool {
                Value::Bool(b)
            } else {
                Value::Text(b.to_string())
            })
        }),
        "select" | "status" => inner
            .get("name")
            .and_then(Json::as_str)
            .and_then(|n| ready(text_value(ft, n.to_owned()))),
        "multi_select" => {
            let names: BTreeSet<String> = strings_at(inner, "name").collect();
            if names.is_empty() {
                None
            } else {
                ready(Value::Set(names))
            }
        }
        "people" => {
            let ids: BTreeSet<String> = strings_at(inner, "id").collect();
            let has_more = pv.get("has_more").and_then(Json::as_bool).unwrap_or(false);
            if ids.is_empty() {
                None
            } else if has_more {
                Some(Cell::People)
            } else {
                ready(Value::Set(ids))
            }
        }
        "relation" => {
            let ids: Vec<String> = strings_at(inner, "id").collect();
            let has_more = pv.get("has_more").and_then(Json::as_bool).unwrap_or(false);
            if ids.is_empty() {
                None
            } else {
                Some(Cell::Pages { ids, has_more })
            }
        }
        // A date field takes the day of a date with a time (people can
        // add a time in Notion); only the start of a range is read.
        "date" => inner.get("start").and_then(Json::as_str).map(|s| {
            let s = match (ft, s.split_once('T')) {
                (FieldKind::Date, Some((day, _))) => day,
                _ => s,
            };
            Cell::Ready(Value::Text(s.to_owned()))
        }),
        "url" | "email" | "phone_number" | "created_time" | "last_edited_time" => inner
            .as_str()
            .filter(|s| !s.is_empty())
            .and_then(|s| ready(text_value(ft, s.to_owned()))),
        "created_by" | "last_edited_by" => inner
            .get("id")
            .and_then(Json::as_str)
            .map(|s| Cell::Ready(Value::Text(s.to_owned()))),
        "unique_id" => {
            let number = inner.get("number").and_then(Json::as_i64)?;
            match inner.get("prefix").and_then(Json::as_str) {
                Some(p) if !p.is_empty() => ready(Value::Text(format!("{p}-{number}"))),
                _ => ready(text_value(ft, number.to_string())),
            }
        }
        "formula" => {
            let t = inner.get("type").and_then(Json::as_str).unwrap_or("");
            scalar_value(ft, inner.get(t).unwrap_or(&Json::Null)).map(Cell::Ready)
        }
        "rollup" => {
            let t = inner.get("type").and_then(Json::as_str).unwrap_or("");
            scalar_value(ft, inner.get(t).unwrap_or(&Json::Null)).map(Cell::Ready)
        }
        _ => None,
    }
}

/// Significant digits of a decimal's text.
fn significant_digits(s: &str) -> usize {
    let digits: String = s
        .trim_start_matches(['-', '+'])
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let mut d = digits.trim_start_matches('0');
    if s.contains('.') {
        d = d.trim_end_matches('0');
    }
    d.len()
}

/// What a value is written as, for one property. `pages` turns record ids
/// into page ids (for relations); a missing target is an error the caller
/// looked up beforehand.
pub(crate) fn write_value(
    c: &ColumnSpec,
    prop: &Prop,
    value: Option<&Value>,
    pages: &HashMap<String, String>,
) -> Result<Json, RowError> {
    let bad = |message: String| RowError {
        message: format!(
            "field '{}' (Notion property '{}'): {message}",
            c.field, prop.name
        ),
        retryable: false,
    };
    let text = value.map(ToString::to_string);
    let items = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::Set(s)) => s.iter().cloned().collect(),
            Some(Value::Json(j)) => serde_json::from_str::<Vec<String>>(j).unwrap_or_default(),
            Some(other) => vec![other.to_string()],
            None => Vec::new(),
        }
    };
    Ok(match prop.kind.as_str() {
        "title" | "rich_text" => {
            let text = text.unwrap_or_default();
            if text_chunks(&text).len() > MAX_ITEMS {
                return Err(bad(format!(
                    "{} characters (UTF-16 units, as Notion counts), more than Notion holds in one property ({} in {MAX_ITEMS} pieces of {TEXT_CHUNK}); shorten the text",
                    utf16_len(&text),
                    TEXT_CHUNK * MAX_ITEMS
                )));
            }
            json!({prop.kind.as_str(): rich_text(&text)})
        }
        "number" => match value {
            None => json!({"number": null}),
            Some(Value::Integer(i)) => {
                if i.unsigned_abs() > (1u64 << 53) {
                    return Err(bad(format!(
                        "{i} is beyond what a Notion number holds exactly (±2^53)"
                    )));
                }
                json!({"number": i})
            }
            Some(v) => {
                let s = v.to_string();
                let f: f64 = s
                    .parse()
                    .map_err(|_| bad(format!("'{s}' is not a number")))?;
                if significant_digits(&s) > 15 {
                    return Err(bad(format!(
                        "{s} has more than 15 significant digits, more than a Notion number holds exactly"
                    )));
                }
                json!({"number": f})
            }
        },
        "checkbox" => json!({"checkbox": matches!(value, Some(Value::Bool(true)))}),
        "select" => match text {
            None => json!({"select": null}),
            Some(name) if name.contains(',') => {
                return Err(bad(format!(
                    "the option '{name}' has a comma, which Notion does not allow in option names"
                )));
            }
            Some(name) => json!({"select": {"name": name}}),
        },
        "status" => match text {
            None => json!({"status": null}),
            Some(name) if prop.status_options.contains(&name) => {
                json!({"status": {"name": name}})
            }
            Some(name) => {
                return Err(bad(format!(
                    "'{name}' is not an option of this status property (options: {}); the API cannot add status options, add it in Notion",
                    prop.status_options.join(", ")
                )));
            }
        },
        "multi_select" | "people" | "relation" => write_items(c, prop, items(value), pages)?,
        "date" => match text {
            None => json!({"date": null}),
            Some(start) => json!({"date": {"start": start}}),
        },
        "url" | "email" | "phone_number" => {
            let limit = if prop.kind == "url" {
                MAX_URL
            } else {
                MAX_EMAIL
            };
            match text {
                Some(t) if utf16_len(&t) > limit => {
                    return Err(bad(format!(
                        "{} characters (UTF-16 units, as Notion counts), more than Notion's limit of {limit}; shorten it",
                        utf16_len(&t)
                    )));
                }
                t => json!({prop.kind.as_str(): t}),
            }
        }
        other => {
            return Err(bad(format!("a {other} property cannot be written")));
        }
    })
}

/// What the items of a multi-select, people or relation property are
/// written as (relations as page ids, via `pages`).
fn write_items(
    c: &ColumnSpec,
    prop: &Prop,
    items: Vec<String>,
    pages: &HashMap<String, String>,
) -> Result<Json, RowError> {
    let bad = |message: String| RowError {
        message: format!(
            "field '{}' (Notion property '{}'): {message}",
            c.field, prop.name
        ),
        retryable: false,
    };
    Ok(match prop.kind.as_str() {
        "multi_select" => {
            let names = items;
            if names.len() > MAX_ITEMS {
                return Err(bad(format!(
                    "{} items, more than Notion's limit of {MAX_ITEMS}",
                    names.len()
                )));
            }
            if let Some(n) = names.iter().find(|n| n.contains(',')) {
                return Err(bad(format!(
                    "the option '{n}' has a comma, which Notion does not allow in option names"
                )));
            }
            let names: Vec<Json> = names.iter().map(|n| json!({"name": n})).collect();
            json!({"multi_select": names})
        }
        "people" => {
            let ids = items;
            if ids.len() > MAX_ITEMS {
                return Err(bad(format!(
                    "{} people, more than Notion's limit of {MAX_ITEMS}",
                    ids.len()
                )));
            }
            let people: Vec<Json> = ids
                .iter()
                .map(|id| json!({"object": "user", "id": id}))
                .collect();
            json!({"people": people})
        }
        "relation" => {
            let ids = items;
            if ids.len() > MAX_ITEMS {
                return Err(bad(format!(
                    "{} related records, more than Notion's limit of {MAX_ITEMS}",
                    ids.len()
                )));
            }
            let mut related = Vec::new();
            for id in &ids {
                // A page made by hand is known by its page id.
                let by_page_id = looks_like_page_id(id).then(|| id.clone());
                let page = pages.get(id).or(by_page_id.as_ref()).ok_or_else(|| RowError {
                    message: format!(
                        "field '{}': the referenced record '{id}' has no page in Notion yet; it is written once that record is",
                        c.field
                    ),
                    retryable: true,
                })?;
                related.push(json!({"id": page}));
            }
            json!({"relation": related})
        }
        other => return Err(bad(format!("a {other} property cannot hold a list"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(field: &str, ft: FieldKind) -> ColumnSpec {
        ColumnSpec {
            field: field.into(),
            column: field.into(),
            field_type: ft,
            options: Vec::new(),
            required: false,
            unique: false,
        }
    }

    fn prop(kind: &str) -> Prop {
        Prop {
            id: format!("{kind}-id"),
            name: format!("{kind} name"),
            kind: kind.into(),
            status_options: vec!["Done".into(), "In progress".into()],
            relation_target: None,
        }
    }

    fn write(ft: FieldKind, kind: &str, v: Option<Value>) -> Result<Json, RowError> {
        write_value(&spec("f", ft), &prop(kind), v.as_ref(), &HashMap::new())
    }

    fn read(ft: FieldKind, kind: &str, inner: Json) -> Option<Cell> {
        read_cell(ft, &json!({"id": "x", "type": kind, kind: inner}))
    }

    #[test]
    fn long_text_is_chunked_at_2000_characters_and_joined_back() {
        let text: String = "é".repeat(4500);
        let items = rich_text(&text);
        let lens: Vec<usize> = items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["text"]["content"].as_str().unwrap().chars().count())
            .collect();
        assert_eq!(lens, vec![2000, 2000, 500]);
        assert_eq!(plain_text(&items), text);
        assert_eq!(rich_text(""), json!([]));
        let too_long: String = "x".repeat(TEXT_CHUNK * MAX_ITEMS + 1);
        let err = write(
            FieldKind::LongText,
            "rich_text",
            Some(too_long.as_str().into()),
        )
        .unwrap_err();
        assert!(
            err.message.contains("200000") && !err.retryable,
            "{}",
            err.message
        );
        let back = read(FieldKind::LongText, "rich_text", items);
        assert_eq!(back, Some(Cell::Ready(Value::Text(text))));
    }

    #[test]
    fn text_is_chunked_in_utf16_units_without_splitting_a_character() {
        let text = format!("x{}", "😀".repeat(1500));
        let chunks = text_chunks(&text);
        let units: Vec<usize> = chunks.iter().map(|c| utf16_len(c)).collect();
        assert_eq!(units, vec![1999, 1002]);
        assert_eq!(chunks.concat(), text);
        assert_eq!(plain_text(&rich_text(&text)), text);
        let url = format!("https://x.example/{}", "😀".repeat(995));
        let err = write(FieldKind::Url, "url", Some(url.as_str().into())).unwrap_err();
        assert!(err.message.contains("2008"), "{}", err.message);
    }

    #[test]
    fn selects_with_commas_and_oversized_lists_fail_their_row_only() {
        let err = write(FieldKind::Select, "select", Some("a,b".into())).unwrap_err();
        assert!(!err.retryable && err.message.contains("comma") && err.message.contains("'f'"));
        let many: BTreeSet<String> = (0..101).map(|i| format!("o{i}")).collect();
        for kind in ["multi_select", "people", "relation"] {
            let err =
                write(FieldKind::MultiSelect, kind, Some(Value::Set(many.clone()))).unwrap_err();
            assert!(!err.retryable, "{kind}");
            assert!(
                err.message.contains("100") && err.message.contains("'f'"),
                "{}",
                err.message
            );
        }
        let ok = write(
            FieldKind::MultiSelect,
            "multi_select",
            Some(["a", "b"].into()),
        )
        .unwrap();
        assert_eq!(ok, json!({"multi_select": [{"name": "a"}, {"name": "b"}]}));
        let err = write(FieldKind::MultiSelect, "multi_select", Some(["a,b"].into())).unwrap_err();
        assert!(err.message.contains("comma"));
    }

    #[test]
    fn status_needs_an_existing_option() {
        assert_eq!(
            write(FieldKind::Select, "status", Some("Done".into())).unwrap(),
            json!({"status": {"name": "Done"}})
        );
        let err = write(FieldKind::Select, "status", Some("Nope".into())).unwrap_err();
        assert!(err.message.contains("Done, In progress"), "{}", err.message);
        assert_eq!(
            write(FieldKind::Select, "status", None).unwrap(),
            json!({"status": null})
        );
    }

    #[test]
    fn numbers_are_written_only_when_exact() {
        assert_eq!(
            write(FieldKind::Integer, "number", Some(8080.into())).unwrap(),
            json!({"number": 8080})
        );
        assert!(write(FieldKind::Integer, "number", Some(Value::Integer(1 << 60))).is_err());
        assert_eq!(
            write(
                FieldKind::Decimal,
                "number",
                Some(Value::Decimal("12.5".into()))
            )
            .unwrap(),
            json!({"number": 12.5})
        );
        assert!(
            write(
                FieldKind::Decimal,
                "number",
                Some(Value::Decimal("0.1234567890123456".into()))
            )
            .is_err()
        );
        assert_eq!(significant_digits("-0.00120"), 2);
        assert_eq!(significant_digits("1200"), 4);
        assert_eq!(
            write(FieldKind::Decimal, "number", None).unwrap(),
            json!({"number": null})
        );
    }

    #[test]
    fn numbers_read_back_as_the_field_type() {
        let n = |v: Json| read(FieldKind::Integer, "number", v);
        assert_eq!(n(json!(9000)), Some(Cell::Ready(Value::Integer(9000))));
        assert_eq!(n(json!(9000.0)), Some(Cell::Ready(Value::Integer(9000))));
        assert_eq!(
            n(json!(1.5)),
            Some(Cell::Ready(Value::Decimal("1.5".into())))
        );
        assert_eq!(n(Json::Null), None);
        let d = |v: Json| read(FieldKind::Decimal, "number", v);
        assert_eq!(
            d(json!(12.5)),
            Some(Cell::Ready(Value::Decimal("12.5".into())))
        );
        assert_eq!(
            d(json!(1e-7)),
            Some(Cell::Ready(Value::Decimal("0.0000001".into())))
        );
        assert_eq!(d(json!(12)), Some(Cell::Ready(Value::Decimal("12".into()))));
    }

    #[test]
    fn unchecked_reads_as_false_and_empty_values_as_no_value() {
        assert_eq!(
            read(FieldKind::Bool, "checkbox", json!(false)),
            Some(Cell::Ready(Value::Bool(false)))
        );
        assert_eq!(
            read(FieldKind::Bool, "checkbox", json!(true)),
            Some(Cell::Ready(Value::Bool(true)))
        );
        assert_eq!(
            write(FieldKind::Bool, "checkbox", None).unwrap(),
            json!({"checkbox": false})
        );
        assert_eq!(
            write(FieldKind::Bool, "checkbox", Some(true.into())).unwrap(),
            json!({"checkbox": true})
        );
        assert_eq!(read(FieldKind::Text, "rich_text", json!([])), None);
        assert_eq!(
            read(FieldKind::MultiSelect, "multi_select", json!([])),
            None
        );
        assert_eq!(read(FieldKind::Select, "select", Json::Null), None);
        assert_eq!(
            read(FieldKind::Date, "date", json!({"start": "2026-01-02"})),
            Some(Cell::Ready(Value::Text("2026-01-02".into())))
        );
    }

    #[test]
    fn computed_properties_are_read() {
        let f = read(
            FieldKind::Integer,
            "formula",
            json!({"type": "number", "number": 3}),
        );
        assert_eq!(f, Some(Cell::Ready(Value::Integer(3))));
        let f = read(
            FieldKind::Text,
            "formula",
            json!({"type": "string", "string": "hi"}),
        );
        assert_eq!(f, Some(Cell::Ready(Value::Text("hi".into()))));
        let u = read(
            FieldKind::Text,
            "unique_id",
            json!({"prefix": "SVC", "number": 12}),
        );
        assert_eq!(u, Some(Cell::Ready(Value::Text("SVC-12".into()))));
        let t = read(
            FieldKind::Datetime,
            "created_time",
            json!("2026-01-02T03:04:00.000Z"),
        );
        assert_eq!(
            t,
            Some(Cell::Ready(Value::Text("2026-01-02T03:04:00.000Z".into())))
        );
        assert!(write(FieldKind::Text, "formula", Some("x".into())).is_err());
    }

    #[test]
    fn references_translate_record_ids_to_page_ids() {
        let pages = HashMap::from([("billing".to_owned(), "page-1".to_owned())]);
        let c = spec("parent", FieldKind::Reference);
        let p = prop("relation");
        let v = write_value(&c, &p, Some(&"billing".into()), &pages).unwrap();
        assert_eq!(v, json!({"relation": [{"id": "page-1"}]}));
        let err = write_value(&c, &p, Some(&"nowhere".into()), &pages).unwrap_err();
        assert!(err.retryable && err.message.contains("nowhere"));
        assert_eq!(
            write_value(&c, &p, None, &pages).unwrap(),
            json!({"relation": []})
        );
        let cell = read(FieldKind::Reference, "relation", json!([{"id": "page-1"}]));
        assert_eq!(
            cell,
            Some(Cell::Pages {
                ids: vec!["page-1".into()],
                has_more: false
            })
        );
    }

    #[test]
    fn text_limits_of_urls_and_emails() {
        let long = "x".repeat(2001);
        assert!(write(FieldKind::Url, "url", Some(long.as_str().into())).is_err());
        assert!(
            write(
                FieldKind::Email,
                "email",
                Some("x".repeat(201).as_str().into())
            )
            .is_err()
        );
        assert_eq!(
            write(FieldKind::Email, "email", Some("a@b.c".into())).unwrap(),
            json!({"email": "a@b.c"})
        );
        assert_eq!(
            write(FieldKind::Url, "url", None).unwrap(),
            json!({"url": null})
        );
    }

    #[test]
    fn page_ids_are_recognised() {
        assert!(looks_like_page_id("59833787-2cf9-4fdf-8782-e53db20768a5"));
        assert!(looks_like_page_id("598337872cf94fdf8782e53db20768a5"));
        assert!(!looks_like_page_id("billing"));
        assert!(!looks_like_page_id("r01"));
    }

    #[test]
    fn a_relation_to_a_page_made_by_hand_is_written_by_its_page_id() {
        let page = "59833787-2cf9-4fdf-8782-e53db20768a5";
        let v = write_value(
            &spec("f", FieldKind::Reference),
            &prop("relation"),
            Some(&Value::Text(page.into())),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(v, json!({"relation": [{"id": page}]}));
        let missing = write_value(
            &spec("f", FieldKind::Reference),
            &prop("relation"),
            Some(&Value::Text("billing".into())),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(missing.retryable, "{}", missing.message);
    }

    #[test]
    fn a_date_field_takes_the_day_of_a_date_with_a_time() {
        let day = read(
            FieldKind::Date,
            "date",
            json!({"start": "2026-11-23T10:00:00.000+01:00", "end": null}),
        );
        assert_eq!(day, Some(Cell::Ready(Value::Text("2026-11-23".into()))));
        let time = read(
            FieldKind::Datetime,
            "date",
            json!({"start": "2026-11-23T10:00:00.000+01:00"}),
        );
        assert_eq!(
            time,
            Some(Cell::Ready(Value::Text(
                "2026-11-23T10:00:00.000+01:00".into()
            )))
        );
    }
}
