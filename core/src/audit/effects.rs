//! What a change did: the values before it (at its dependencies) and just
//! after it of everything it touched, as [`AuditEffect`]s.

use std::collections::BTreeSet;

use automerge::{AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc};

use super::AuditEffect;
use super::Meta;
use super::touched::{Part, Touch};
use crate::document::{self as doc, DELETED, Layout};
use crate::identity::PublicKey;
use crate::schema::{CompiledSchema, FieldKind};
use crate::value::Value;

/// What a change did: the before and after values (at the change's
/// dependencies, and just after it) of everything it touched.
pub(super) fn effects(
    doc: &AutoCommit,
    layout: &Layout,
    schema: &CompiledSchema,
    meta: &Meta,
    touched: BTreeSet<Touch>,
    record: Option<&str>,
) -> Vec<AuditEffect> {
    let before = meta.deps.as_slice();
    let after = [meta.hash];
    let genesis = before.is_empty();
    let mut out = Vec::new();
    if genesis && record.is_none() {
        out.push(AuditEffect::RegistryCreated {
            name: str_at(doc, &layout.meta, "name", &after).unwrap_or_default(),
        });
    }
    for touch in touched {
        let effect = match touch {
            Touch::Record(id, part) => record_effect(doc, layout, schema, id, part, before, &after),
            Touch::FieldDef(name) => {
                let old = was(genesis, || str_at(doc, &layout.fields, &name, before));
                let new = str_at(doc, &layout.fields, &name, &after);
                field_def_detail(old.as_deref(), new.as_deref()).map(|detail| {
                    AuditEffect::SchemaChanged {
                        field: Some(name),
                        detail,
                    }
                })
            }
            Touch::SchemaSetting(key) => {
                let old = was(genesis, || setting_at(doc, &layout.schema, &key, before));
                let new = setting_at(doc, &layout.schema, &key, &after);
                let label = key.replace('_', " ");
                let detail = match (old, new) {
                    (old, new) if old == new => None,
                    (None, Some(new)) => Some(format!("{label} set to {new}")),
                    (Some(_), None) => Some(format!("{label} cleared")),
                    (Some(old), Some(new)) => Some(format!("{label} {old} → {new}")),
                    (None, None) => None,
                };
                detail.map(|detail| AuditEffect::SchemaChanged {
                    field: None,
                    detail,
                })
            }
            Touch::Member(key) => match key.parse::<PublicKey>() {
                Ok(k) => {
                    let old = was(genesis, || layout.role_at(doc, &k, before));
                    let new = layout.role_at(doc, &k, &after);
                    (old != new).then_some(AuditEffect::MemberChanged { key: k, old, new })
                }
                Err(_) => Some(other(format!("members.{key}"))),
            },
            Touch::Alias(key) => match (key.parse::<PublicKey>(), &layout.aliases) {
                (Ok(k), Some(aliases)) => {
                    let old = was(genesis, || str_at(doc, aliases, &key, before));
                    let new = str_at(doc, aliases, &key, &after);
                    (old != new).then_some(AuditEffect::AliasChanged { key: k, old, new })
                }
                _ => Some(other(format!("aliases.{key}"))),
            },
            Touch::Other(path) => Some(other(path)),
        };
        out.extend(effect);
    }
    out
}

/// A value before the change. Before the genesis there is nothing (and
/// Automerge's reads at empty heads return present values, so never ask).
fn was<T>(genesis: bool, read: impl FnOnce() -> Option<T>) -> Option<T> {
    if genesis { None } else { read() }
}

fn other(path: String) -> AuditEffect {
    AuditEffect::Other {
        path,
        detail: "changed outside the registry layout".into(),
    }
}

fn record_effect(
    doc: &AutoCommit,
    layout: &Layout,
    schema: &CompiledSchema,
    id: String,
    part: Part,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Option<AuditEffect> {
    let copies_before = if before.is_empty() {
        Vec::new()
    } else {
        layout.copies(doc, &id, Some(before))
    };
    let copies_after = layout.copies(doc, &id, Some(after));
    match part {
        Part::Existence => match (copies_before.is_empty(), copies_after.is_empty()) {
            (true, false) => Some(AuditEffect::RecordCreated { record: id }),
            (false, true) => Some(AuditEffect::Other {
                path: format!("records.{id}"),
                detail: "record removed without a tombstone".into(),
            }),
            _ => None,
        },
        Part::Tombstone => {
            let dead = |copies: &[ObjId], heads: &[ChangeHash]| {
                copies
                    .iter()
                    .any(|c| matches!(doc.get_at(c, DELETED, heads), Ok(Some(_))))
            };
            match (dead(&copies_before, before), dead(&copies_after, after)) {
                (false, true) => Some(AuditEffect::RecordDeleted { record: id }),
                (true, false) => Some(AuditEffect::Other {
                    path: format!("records.{id}.{DELETED}"),
                    detail: "tombstone removed".into(),
                }),
                _ => None,
            }
        }
        Part::Field(field) => {
            let ty = schema.schema.get(&field).map(|d| d.field_type);
            let old = field_at(doc, &copies_before, &field, ty, before);
            let new = field_at(doc, &copies_after, &field, ty, after);
            (old != new).then_some(AuditEffect::FieldSet {
                record: id,
                field,
                old,
                new,
            })
        }
    }
}

/// A field's value at `heads`: Automerge's pick in the first copy that has
/// one. Emptied long text and multi-select read as no value.
fn field_at(
    doc: &AutoCommit,
    copies: &[ObjId],
    field: &str,
    ty: Option<FieldKind>,
    heads: &[ChangeHash],
) -> Option<Value> {
    copies.iter().find_map(|copy| {
        let (value, id) = doc.get_at(copy, field, heads).ok()??;
        let value = match value {
            automerge::Value::Object(ObjType::Text) => Value::Text(doc.text_at(&id, heads).ok()?),
            automerge::Value::Object(ObjType::Map) => Value::Set(
                doc.map_range_at(&id, .., heads)
                    .filter(|i| {
                        matches!(
                            i.value,
                            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Boolean(true))
                        )
                    })
                    .map(|i| i.key.into_owned())
                    .collect(),
            ),
            scalar => doc::read_value(doc, &scalar, &id, ty)?,
        };
        let empty = matches!(&value, Value::Set(s) if s.is_empty())
            || (ty == Some(FieldKind::LongText) && value == Value::Text(String::new()));
        (!empty).then_some(value)
    })
}

fn str_at(doc: &AutoCommit, obj: &ObjId, key: &str, heads: &[ChangeHash]) -> Option<String> {
    match doc.get_at(obj, key, heads).ok()?? {
        (automerge::Value::Scalar(s), _) => s.as_str().map(str::to_owned),
        _ => None,
    }
}

/// A schema setting (conflict policy, display field, quorum, …) as text.
fn setting_at(doc: &AutoCommit, obj: &ObjId, key: &str, heads: &[ChangeHash]) -> Option<String> {
    use automerge::ScalarValue as S;
    match doc.get_at(obj, key, heads).ok()?? {
        (automerge::Value::Scalar(s), _) => match s.as_ref() {
            S::Str(t) => Some(t.to_string()),
            S::Int(i) => Some(i.to_string()),
            S::Uint(u) => Some(u.to_string()),
            S::Boolean(b) => Some(b.to_string()),
            S::F64(f) => Some(f.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// A field definition's change, for people; `None` if it did not change.
fn field_def_detail(old: Option<&str>, new: Option<&str>) -> Option<String> {
    type Def = serde_json::Map<String, serde_json::Value>;
    if old == new {
        return None;
    }
    let parse = |s: Option<&str>| s.map(|s| serde_json::from_str::<Def>(s).ok());
    Some(match (parse(old), parse(new)) {
        (None, Some(Some(new))) => format!("added ({})", summary(&new)),
        (Some(_), None) => "removed".into(),
        (Some(Some(old)), Some(Some(new))) => {
            let keys: BTreeSet<&String> = old
                .keys()
                .chain(new.keys())
                .filter(|k| *k != "name")
                .collect();
            let changes: Vec<String> = keys
                .into_iter()
                .filter(|k| old.get(*k) != new.get(*k))
                .map(|k| {
                    format!(
                        "{}: {} → {}",
                        k.replace('_', " "),
                        shown(old.get(k)),
                        shown(new.get(k))
                    )
                })
                .collect();
            if changes.is_empty() {
                return None;
            }
            changes.join("; ")
        }
        // A definition this version cannot read (from a newer one).
        _ => "changed".into(),
    })
}

/// `integer, required, min 1, max 65535`.
fn summary(def: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut parts = vec![shown(def.get("type"))];
    for (k, v) in def {
        if matches!(k.as_str(), "name" | "position" | "type") {
            continue;
        }
        match v {
            serde_json::Value::Bool(true) => parts.push(k.replace('_', " ")),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            v => parts.push(format!("{} {}", k.replace('_', " "), shown(Some(v)))),
        }
    }
    parts.join(", ")
}

fn shown(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "(none)".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| shown(Some(i)))
            .collect::<Vec<_>>()
            .join("|"),
        Some(v) => v.to_string(),
    }
}
