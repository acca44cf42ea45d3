//! The values a change writes into records, checked against the schema as
//! of the change's own dependencies.
//!
//! Only rules of the value alone are checked here — its type, min/max,
//! options, pattern, url/email form, and that its field exists: they
//! depend on nothing but the change and its history, so every replica
//! reaches the same verdict whatever else it holds. Rules that depend on
//! other records (unique, required after a concurrent edit) are not.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use automerge::legacy::{self, OpType};
use automerge::{AutoCommit, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};

use super::policy::legacy_obj;
use super::{Layout, read_value};
use crate::schema::{CompiledSchema, FieldDef, FieldKind, Rule, Schema};
use crate::value::Value;

/// A value a change wrote that breaks the schema as of its dependencies.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BrokenValue {
    pub(crate) record: String,
    pub(crate) field: String,
    /// The value as written, shown.
    pub(crate) value: String,
    pub(crate) rule: Rule,
}

/// Where an object sits, when it is inside a record.
#[derive(Clone)]
struct Place {
    /// The record's id.
    record: String,
    /// The record's object.
    record_obj: ObjId,
    /// The field whose container holds the object; `None` when the object
    /// is the record itself.
    field: Option<String>,
}

/// Checks the values of changes, one after another, caching what several
/// changes of a batch share (the schema at equal dependencies, where each
/// object sits).
pub(crate) struct ValueCheck<'a> {
    layout: &'a Layout,
    records: legacy::ObjectId,
    schema: Option<(Vec<FieldDef>, Arc<CompiledSchema>)>,
    /// The schema as of a change that touched no schema: that is the
    /// schema as of its own dependencies, so a change that depends on it
    /// alone reads the schema without asking the document again.
    after: HashMap<ChangeHash, Arc<CompiledSchema>>,
    places: HashMap<legacy::OpId, Option<Place>>,
}

impl<'a> ValueCheck<'a> {
    pub(crate) fn new(layout: &'a Layout) -> Self {
        ValueCheck {
            layout,
            records: legacy_obj(&layout.records),
            schema: None,
            after: HashMap::new(),
            places: HashMap::new(),
        }
    }

    /// The schema's fields as of `deps`, compiled (reused while they stay
    /// the same).
    fn schema_at(&mut self, doc: &AutoCommit, deps: &[ChangeHash]) -> Arc<CompiledSchema> {
        if let [dep] = deps
            && let Some(known) = self.after.get(dep)
        {
            return known.clone();
        }
        let fields = self.layout.fields_at(doc, Some(deps));
        match &self.schema {
            Some((known, compiled)) if *known == fields => compiled.clone(),
            _ => {
                let compiled = Arc::new(CompiledSchema::new(Schema {
                    fields: fields.clone(),
                    ..Schema::default()
                }));
                self.schema = Some((fields, compiled.clone()));
                compiled
            }
        }
    }

    /// The first value `change` writes into a record that breaks a rule of
    /// the value alone, as of the change's dependencies. `doc` must already
    /// contain the change, whose decoded `operations` are given; `admin`
    /// says whether it touched the schema or members (checked changes are
    /// best given in causal order).
    pub(crate) fn broken_value(
        &mut self,
        doc: &AutoCommit,
        change: &Change,
        operations: &[legacy::Op],
        admin: bool,
    ) -> Option<BrokenValue> {
        let broken = self.check(doc, change, operations);
        if !admin && broken.is_none() {
            let schema = self.schema_at(doc, change.deps());
            self.after.insert(change.hash(), schema);
        }
        broken
    }

    fn check(
        &mut self,
        doc: &AutoCommit,
        change: &Change,
        operations: &[legacy::Op],
    ) -> Option<BrokenValue> {
        let mut schema: Option<Arc<CompiledSchema>> = None;
        // Containers (long text, multi-select) the change wrote in: their
        // values are read once all its operations are known.
        let mut containers: Vec<(String, String, ObjId)> = Vec::new();
        let actor = change.actor_id().clone();
        let start = change.start_op().get();
        for (i, op) in operations.iter().enumerate() {
            if op.obj == self.records {
                // A record made here: note where it sits, sparing a walk
                // up from it for each of its fields.
                if let (OpType::Make(ObjType::Map), legacy::Key::Map(key)) = (&op.action, &op.key) {
                    let made = legacy::OpId(start + i as u64, actor.clone());
                    if let Some(obj) = import(doc, &made) {
                        let place = Place {
                            record: key.to_string(),
                            record_obj: obj,
                            field: None,
                        };
                        self.places.insert(made, Some(place));
                    }
                }
                continue;
            }
            let legacy::ObjectId::Id(obj_id) = &op.obj else {
                continue;
            };
            let Some(place) = self.place(doc, obj_id) else {
                continue;
            };
            let Place {
                record,
                record_obj,
                field,
            } = place;
            let direct = field.is_none();
            let field = match field {
                Some(field) => field,
                None => match &op.key {
                    legacy::Key::Map(k) => k.to_string(),
                    legacy::Key::Seq(_) => continue,
                },
            };
            if field.starts_with('_') {
                continue; // the tombstone, not a field
            }
            let schema = schema.get_or_insert_with(|| self.schema_at(doc, change.deps()));
            let broken = |value: String, rule: Rule| {
                Some(BrokenValue {
                    record: record.clone(),
                    field: field.clone(),
                    value,
                    rule,
                })
            };
            let Some(def) = schema.schema.get(&field) else {
                return broken(String::new(), Rule::UnknownField);
            };
            if !direct {
                if !containers
                    .iter()
                    .any(|(r, f, _)| *r == record && *f == field)
                    && let Some(container) = container_of(doc, obj_id, &record_obj)
                {
                    containers.push((record, field, container));
                }
                continue;
            }
            match &op.action {
                OpType::Put(scalar) => {
                    if let Err((shown, rule)) = check_scalar(doc, schema, def, scalar) {
                        return broken(shown, rule);
                    }
                }
                OpType::Make(ObjType::Text | ObjType::Map) => {
                    let made = legacy::OpId(start + i as u64, actor.clone());
                    if let Some(obj) = import(doc, &made) {
                        containers.push((record.clone(), field.clone(), obj));
                    }
                }
                OpType::Make(_) | OpType::Increment(_) => {
                    return broken(String::new(), type_rule(def, "a list or a counter"));
                }
                OpType::Delete | OpType::MarkBegin(_) | OpType::MarkEnd(_) => {}
            }
        }
        let heads = [change.hash()];
        for (record, field, obj) in containers {
            let schema = schema.get_or_insert_with(|| self.schema_at(doc, change.deps()));
            let Some(def) = schema.schema.get(&field) else {
                continue;
            };
            let value = container_value(doc, &obj, &heads);
            // An emptied container reads as no value (see the registry's
            // reads), and clearing a field is not a value rule.
            let empty = match &value {
                Some(Value::Set(s)) => s.is_empty(),
                Some(Value::Text(t)) => t.is_empty() && def.field_type == FieldKind::LongText,
                _ => false,
            };
            if empty {
                continue;
            }
            let checked = match &value {
                Some(v) => strict(schema, def, v.clone()),
                None => Err(type_rule(def, "an object of another kind")),
            };
            if let Err(rule) = checked {
                return Some(BrokenValue {
                    record,
                    field,
                    value: value.map(|v| v.to_string()).unwrap_or_default(),
                    rule,
                });
            }
        }
        None
    }

    /// Where the object `op_id` sits, looked up once per object.
    fn place(&mut self, doc: &AutoCommit, op_id: &legacy::OpId) -> Option<Place> {
        if let Some(place) = self.places.get(op_id) {
            return place.clone();
        }
        let place = (|| {
            let obj = import(doc, op_id)?;
            let path: Vec<automerge::Parent> = doc.parents(&obj).ok()?.collect();
            let at = path.iter().position(|p| p.obj == self.layout.records)?;
            let record = prop_text(&path[at].prop);
            if at == 0 {
                return Some(Place {
                    record,
                    record_obj: obj,
                    field: None,
                });
            }
            // Inside a field's container: the field is the record's key
            // that leads to it.
            Some(Place {
                record,
                record_obj: path[at - 1].obj.clone(),
                field: Some(prop_text(&path[at - 1].prop)),
            })
        })();
        self.places.insert(op_id.clone(), place.clone());
        place
    }
}

/// The container object, directly under `record_obj`, that holds `op_id`.
fn container_of(doc: &AutoCommit, op_id: &legacy::OpId, record_obj: &ObjId) -> Option<ObjId> {
    let mut current = import(doc, op_id)?;
    for parent in doc.parents(&current).ok()? {
        if parent.obj == *record_obj {
            return Some(current);
        }
        current = parent.obj;
    }
    None
}

fn import(doc: &AutoCommit, op_id: &legacy::OpId) -> Option<ObjId> {
    doc.import_obj(&format!("{}@{}", op_id.0, op_id.1.to_hex_string()))
        .ok()
}

fn prop_text(prop: &automerge::Prop) -> String {
    match prop {
        automerge::Prop::Map(k) => k.clone(),
        automerge::Prop::Seq(i) => i.to_string(),
    }
}

fn type_rule(def: &FieldDef, found: &str) -> Rule {
    Rule::Type {
        expected: def.field_type,
        reason: format!("the change stored {found}"),
    }
}

/// A scalar as its field reads it, checked strictly: it must already be in
/// the form a write of that field stores.
fn check_scalar(
    doc: &AutoCommit,
    schema: &CompiledSchema,
    def: &FieldDef,
    scalar: &ScalarValue,
) -> Result<(), (String, Rule)> {
    let stored = automerge::Value::Scalar(Cow::Borrowed(scalar));
    // A scalar's reading needs no object: ROOT stands in.
    let Some(value) = read_value(doc, &stored, &ROOT, Some(def.field_type)) else {
        return Err((
            scalar.to_string(),
            type_rule(def, "a value of no field type"),
        ));
    };
    if matches!(
        scalar,
        ScalarValue::Uint(_) | ScalarValue::Timestamp(_) | ScalarValue::Counter(_)
    ) {
        return Err((
            value.to_string(),
            type_rule(def, "a value of no field type"),
        ));
    }
    let shown = value.to_string();
    strict(schema, def, value).map_err(|rule| (shown, rule))
}

/// The value passes the field's rules unchanged: a value a write would
/// have had to convert (text in an integer field) breaks its type.
fn strict(schema: &CompiledSchema, def: &FieldDef, value: Value) -> Result<(), Rule> {
    let checked = schema.check_value(&def.name, value.clone())?;
    if checked == value {
        Ok(())
    } else {
        Err(Rule::Type {
            expected: def.field_type,
            reason: format!("it was stored as {}", kind_of(&value)),
        })
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Text(_) => "text",
        Value::Integer(_) => "an integer",
        Value::Decimal(_) => "a decimal",
        Value::Bool(_) => "a boolean",
        Value::Json(_) => "JSON",
        Value::Set(_) => "a set of options",
    }
}

/// A long text or multi-select container's value at `heads`.
fn container_value(doc: &AutoCommit, obj: &ObjId, heads: &[ChangeHash]) -> Option<Value> {
    match doc.object_type(obj).ok()? {
        ObjType::Text => doc.text_at(obj, heads).ok().map(Value::Text),
        ObjType::Map => Some(Value::Set(
            doc.map_range_at(obj, .., heads)
                .filter(|i| {
                    matches!(
                        i.value,
                        automerge::ValueRef::Scalar(automerge::ScalarValueRef::Boolean(true))
                    )
                })
                .map(|i| i.key.into_owned())
                .collect(),
        )),
        _ => None,
    }
}
