//! The registry as an Automerge document: its layout, typed reads and
//! writes of it, who may change what ([`policy`]) and what a removal
//! revokes ([`revoke`]).
//!
//! ```text
//! ROOT
//! ├─ meta     { name, created_at, format, creator, nonce }
//! ├─ schema   { fields: { NAME: "<FieldDef as JSON>" }, display_field, conflict_policy,
//! │             record_rule, quorum }
//! ├─ members  { PUBLIC_KEY_HEX: "admin" | "writer" | "reader" }
//! ├─ aliases  { PUBLIC_KEY_HEX: "a human name" }
//! └─ records  { RECORD_ID: { FIELD: value, …, _deleted: { by, at } } }
//! ```
//!
//! Field definitions are stored whole as JSON strings so that a definition
//! changes atomically; concurrent edits of *different* fields still merge.

pub(crate) mod policy;
pub(crate) mod revoke;
pub(crate) mod values;

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};

use crate::identity::PublicKey;
use crate::schema::{ConflictPolicy, FieldDef, FieldKind, RecordRule, Schema};
use crate::value::Value;

/// The document format this version writes.
pub(crate) const FORMAT_VERSION: i64 = 1;
/// Key of a record's tombstone.
pub(crate) const DELETED: &str = "_deleted";

/// Object ids of the document's fixed parts, looked up once per load.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) meta: ObjId,
    pub(crate) schema: ObjId,
    pub(crate) fields: ObjId,
    pub(crate) members: ObjId,
    /// Human names of members' keys (absent in registries made before it).
    pub(crate) aliases: Option<ObjId>,
    pub(crate) records: ObjId,
}

fn obj_at(doc: &AutoCommit, parent: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(parent, key).ok()?? {
        (automerge::Value::Object(_), id) => Some(id),
        _ => None,
    }
}

impl Layout {
    /// Finds the fixed objects; `None` if the document is not a registry.
    pub(crate) fn find(doc: &AutoCommit) -> Option<Layout> {
        let schema = obj_at(doc, &ROOT, "schema")?;
        Some(Layout {
            meta: obj_at(doc, &ROOT, "meta")?,
            fields: obj_at(doc, &schema, "fields")?,
            schema,
            members: obj_at(doc, &ROOT, "members")?,
            aliases: obj_at(doc, &ROOT, "aliases"),
            records: obj_at(doc, &ROOT, "records")?,
        })
    }

    /// Writes the genesis content of a new registry into `doc` (uncommitted).
    pub(crate) fn create(
        doc: &mut AutoCommit,
        name: &str,
        schema: &Schema,
        creator: &PublicKey,
        now_ms: i64,
    ) -> Result<Layout, automerge::AutomergeError> {
        let meta = doc.put_object(ROOT, "meta", ObjType::Map)?;
        doc.put(&meta, "name", name)?;
        doc.put(&meta, "created_at", ScalarValue::Timestamp(now_ms))?;
        doc.put(&meta, "format", FORMAT_VERSION)?;
        doc.put(&meta, "creator", creator.to_string())?;
        // Makes every genesis — and so every registry id — unique.
        doc.put(&meta, "nonce", uuid::Uuid::now_v7().to_string())?;
        let schema_obj = doc.put_object(ROOT, "schema", ObjType::Map)?;
        let fields = doc.put_object(&schema_obj, "fields", ObjType::Map)?;
        let members = doc.put_object(ROOT, "members", ObjType::Map)?;
        doc.put(&members, creator.to_string(), Role::Admin.name())?;
        let aliases = doc.put_object(ROOT, "aliases", ObjType::Map)?;
        let records = doc.put_object(ROOT, "records", ObjType::Map)?;
        let layout = Layout {
            meta,
            schema: schema_obj,
            fields,
            members,
            aliases: Some(aliases),
            records,
        };
        layout.write_schema(doc, &Schema::default(), schema)?;
        Ok(layout)
    }

    pub(crate) fn name(&self, doc: &AutoCommit) -> String {
        str_at(doc, &self.meta, "name").unwrap_or_default()
    }

    pub(crate) fn created_at(&self, doc: &AutoCommit) -> i64 {
        match doc.get(&self.meta, "created_at") {
            Ok(Some((automerge::Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Timestamp(t) | ScalarValue::Int(t) => *t,
                _ => 0,
            },
            _ => 0,
        }
    }

    /// Reads the schema. Unparseable field definitions (from a newer
    /// version) are skipped rather than failing the whole registry.
    pub(crate) fn read_schema(&self, doc: &AutoCommit) -> Schema {
        let fields = self.fields_at(doc, None);
        let display_field = str_at(doc, &self.schema, "display_field");
        let conflict_policy = str_at(doc, &self.schema, "conflict_policy")
            .and_then(|p| p.parse().ok())
            .unwrap_or(ConflictPolicy::Automerge);
        let record_rule = match str_at(doc, &self.schema, "record_rule").as_deref() {
            Some("creator-or-admin") => RecordRule::CreatorOrAdmin,
            _ => RecordRule::AnyWriter,
        };
        let quorum = match doc.get(&self.schema, "quorum") {
            Ok(Some((automerge::Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Int(k) if *k > 0 => u32::try_from(*k).ok(),
                _ => None,
            },
            _ => None,
        };
        Schema {
            fields,
            display_field,
            conflict_policy,
            record_rule,
            quorum,
        }
    }

    /// The field definitions at `heads` (`None`: now), in the schema's order.
    pub(crate) fn fields_at(
        &self,
        doc: &AutoCommit,
        heads: Option<&[ChangeHash]>,
    ) -> Vec<FieldDef> {
        let parse = |value: &automerge::ValueRef<'_>| {
            let text = scalar_str(value)?;
            let stored = serde_json::from_str::<StoredField>(&text).ok()?;
            Some((stored.position, stored.def))
        };
        // map_range is ordered by name; restore the schema's own order.
        let mut positioned: Vec<(i64, FieldDef)> = match heads {
            None => doc
                .map_range(&self.fields, ..)
                .filter_map(|item| parse(&item.value))
                .collect(),
            Some(heads) => doc
                .map_range_at(&self.fields, .., heads)
                .filter_map(|item| parse(&item.value))
                .collect(),
        };
        positioned.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        positioned.into_iter().map(|(_, d)| d).collect()
    }

    /// Writes only what differs between `old` and `new`, so concurrent schema
    /// edits of different fields merge.
    pub(crate) fn write_schema(
        &self,
        doc: &mut AutoCommit,
        old: &Schema,
        new: &Schema,
    ) -> Result<(), automerge::AutomergeError> {
        for (position, def) in new.fields.iter().enumerate() {
            let old_position = old.fields.iter().position(|f| f.name == def.name);
            if old_position == Some(position) && old.get(&def.name) == Some(def) {
                continue;
            }
            let stored = StoredField {
                position: position as i64,
                def: def.clone(),
            };
            let json = serde_json::to_string(&stored).expect("field definitions serialize");
            doc.put(&self.fields, def.name.as_str(), json)?;
        }
        for def in &old.fields {
            if new.get(&def.name).is_none() {
                doc.delete(&self.fields, def.name.as_str())?;
            }
        }
        if old.display_field != new.display_field
            || doc.get(&self.schema, "display_field")?.is_none()
        {
            match &new.display_field {
                Some(d) => doc.put(&self.schema, "display_field", d.as_str())?,
                None => doc.delete(&self.schema, "display_field")?,
            }
        }
        if old.conflict_policy != new.conflict_policy
            || doc.get(&self.schema, "conflict_policy")?.is_none()
        {
            doc.put(&self.schema, "conflict_policy", new.conflict_policy.name())?;
        }
        if old.record_rule != new.record_rule || doc.get(&self.schema, "record_rule")?.is_none() {
            doc.put(&self.schema, "record_rule", new.record_rule.name())?;
        }
        if old.quorum != new.quorum {
            match new.quorum {
                Some(k) => doc.put(&self.schema, "quorum", i64::from(k))?,
                None => doc.delete(&self.schema, "quorum")?,
            }
        } else if let (Some(k), Ok(None)) = (new.quorum, doc.get(&self.schema, "quorum")) {
            doc.put(&self.schema, "quorum", i64::from(k))?;
        }
        Ok(())
    }

    /// Members and their roles at `heads` (`None`: now).
    pub(crate) fn members(
        &self,
        doc: &AutoCommit,
        heads: Option<&[ChangeHash]>,
    ) -> Vec<(PublicKey, Role)> {
        let items: Vec<(String, Option<String>)> = match heads {
            None => doc
                .map_range(&self.members, ..)
                .map(|i| (i.key.into_owned(), scalar_str(&i.value)))
                .collect(),
            Some(h) => doc
                .map_range_at(&self.members, .., h)
                .map(|i| (i.key.into_owned(), scalar_str(&i.value)))
                .collect(),
        };
        items
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v?.parse().ok()?)))
            .collect()
    }

    /// Every concurrent copy of a record at `heads` (`None`: now), latest
    /// operation first. Almost always one; two replicas that create the
    /// same record id concurrently each make a copy, and the record is read
    /// as the merge of them all.
    pub(crate) fn copies(
        &self,
        doc: &AutoCommit,
        id: &str,
        heads: Option<&[ChangeHash]>,
    ) -> Vec<ObjId> {
        let all = match heads {
            None => doc.get_all(&self.records, id),
            Some(h) => doc.get_all_at(&self.records, id, h),
        };
        let mut copies: Vec<ObjId> = all
            .unwrap_or_default()
            .into_iter()
            .filter(|(v, _)| matches!(v, automerge::Value::Object(ObjType::Map)))
            .map(|(_, obj)| obj)
            .collect();
        copies.reverse();
        copies
    }

    /// Human names of members' keys.
    pub(crate) fn aliases(&self, doc: &AutoCommit) -> std::collections::HashMap<String, String> {
        let Some(aliases) = &self.aliases else {
            return Default::default();
        };
        doc.map_range(aliases, ..)
            .filter_map(|i| Some((i.key.to_string(), scalar_str(&i.value)?)))
            .collect()
    }

    /// The role of `key` at `heads`.
    ///
    /// The registry's creator is the admin of last resort: if concurrent
    /// removals (two admins removing each other) left no admin, the creator
    /// acts as admin, on every replica alike, so the registry can always be
    /// governed.
    pub(crate) fn role_at(
        &self,
        doc: &AutoCommit,
        key: &PublicKey,
        heads: &[ChangeHash],
    ) -> Option<Role> {
        let role = match doc.get_at(&self.members, key.to_string(), heads).ok()? {
            Some((automerge::Value::Scalar(s), _)) => s.as_str().and_then(|r| r.parse().ok()),
            _ => None,
        };
        self.with_last_resort(doc, key, role, Some(heads))
    }

    /// The role of `key` now (see [`Layout::role_at`]).
    pub(crate) fn role_now(&self, doc: &AutoCommit, key: &PublicKey) -> Option<Role> {
        let role = self
            .members(doc, None)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r);
        self.with_last_resort(doc, key, role, None)
    }

    fn with_last_resort(
        &self,
        doc: &AutoCommit,
        key: &PublicKey,
        role: Option<Role>,
        heads: Option<&[ChangeHash]>,
    ) -> Option<Role> {
        if role == Some(Role::Admin) || self.creator().as_ref() != Some(key) {
            return role;
        }
        let admins = self
            .members(doc, heads)
            .iter()
            .filter(|(_, r)| *r == Role::Admin)
            .count();
        if admins == 0 { Some(Role::Admin) } else { role }
    }

    /// The registry's creator: the author of the genesis, which made `meta`.
    pub(crate) fn creator(&self) -> Option<PublicKey> {
        match &self.meta {
            ObjId::Id(_, actor, _) => PublicKey::from_bytes(actor.to_bytes()).ok(),
            ObjId::Root => None,
        }
    }
}

/// A field definition as stored in the document, with its display position.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredField {
    position: i64,
    #[serde(flatten)]
    def: FieldDef,
}

fn scalar_str(value: &automerge::ValueRef<'_>) -> Option<String> {
    match value {
        automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn str_at(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key).ok()?? {
        (automerge::Value::Scalar(s), _) => s.as_str().map(str::to_owned),
        _ => None,
    }
}

/// What a member may do in a registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// Reads only.
    Reader,
    /// Reads and writes records.
    Writer,
    /// Also changes the schema and the members.
    Admin,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// Whether the role may write records.
    pub fn can_write(self) -> bool {
        matches!(self, Role::Writer | Role::Admin)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role '{other}'; use admin, writer or reader"
            )),
        }
    }
}

/// Reads one stored value of a field as a [`Value`] of `ty` (or, for fields
/// no longer in the schema, of whatever it holds).
pub(crate) fn read_value(
    doc: &AutoCommit,
    value: &automerge::Value<'_>,
    id: &ObjId,
    ty: Option<FieldKind>,
) -> Option<Value> {
    match value {
        automerge::Value::Object(ObjType::Text) => doc.text(id).ok().map(Value::Text),
        automerge::Value::Object(ObjType::Map) => Some(Value::Set(
            doc.map_range(id, ..)
                .filter(|i| {
                    matches!(
                        i.value,
                        automerge::ValueRef::Scalar(automerge::ScalarValueRef::Boolean(true))
                    )
                })
                .map(|i| i.key.into_owned())
                .collect(),
        )),
        automerge::Value::Object(_) => None,
        automerge::Value::Scalar(s) => Some(match (s.as_ref(), ty) {
            (ScalarValue::Str(t), Some(FieldKind::Decimal)) => Value::Decimal(t.to_string()),
            (ScalarValue::Str(t), Some(FieldKind::Json)) => Value::Json(t.to_string()),
            (ScalarValue::Str(t), _) => Value::Text(t.to_string()),
            (ScalarValue::Int(i), _) => Value::Integer(*i),
            (ScalarValue::Uint(u), _) => Value::Integer(*u as i64),
            (ScalarValue::Boolean(b), _) => Value::Bool(*b),
            (ScalarValue::F64(f), _) => Value::Decimal(f.to_string()),
            (ScalarValue::Timestamp(t), _) => Value::Integer(*t),
            (ScalarValue::Null, _) => return None,
            _ => return None,
        }),
    }
}

/// Writes one field of a record (inside the open transaction of `doc`).
///
/// Long text is updated character-wise in its text object and multi-select
/// option by option in its map, so concurrent edits merge instead of
/// replacing each other.
pub(crate) fn write_value(
    doc: &mut AutoCommit,
    record: &ObjId,
    field: &str,
    ty: FieldKind,
    value: &Value,
) -> Result<(), automerge::AutomergeError> {
    match (ty, value) {
        (FieldKind::LongText, Value::Text(text)) => {
            let obj = match container(doc, record, field, ObjType::Text)? {
                Some(id) => id,
                None => doc.put_object(record, field, ObjType::Text)?,
            };
            doc.update_text(&obj, text)?;
        }
        (FieldKind::MultiSelect, Value::Set(wanted)) => {
            let obj = match container(doc, record, field, ObjType::Map)? {
                Some(id) => id,
                None => doc.put_object(record, field, ObjType::Map)?,
            };
            let current: BTreeSet<String> = doc.keys(&obj).collect();
            for gone in current.difference(wanted) {
                doc.delete(&obj, gone.as_str())?;
            }
            for added in wanted.difference(&current) {
                doc.put(&obj, added.as_str(), true)?;
            }
        }
        (_, v) => {
            let scalar = scalar_of(v);
            doc.put(record, field, scalar)?;
        }
    }
    Ok(())
}

/// The object `field` holds, if it is a container of type `ty`. Only
/// container fields need this look-up; scalar writes skip it, which matters
/// in batches of thousands of records.
fn container(
    doc: &AutoCommit,
    record: &ObjId,
    field: &str,
    ty: ObjType,
) -> Result<Option<ObjId>, automerge::AutomergeError> {
    Ok(match doc.get(record, field)? {
        Some((automerge::Value::Object(t), id)) if t == ty => Some(id),
        _ => None,
    })
}

/// Creates a record with its fields in one batch operation (much faster
/// than one operation per field). Long text and multi-select fields get
/// their container even when empty, so later concurrent edits land in one
/// shared object.
pub(crate) fn create_record(
    doc: &mut AutoCommit,
    records: &ObjId,
    id: &str,
    schema: &Schema,
    fields: &[(String, Value)],
) -> Result<ObjId, automerge::AutomergeError> {
    use automerge::hydrate;
    let encoding = doc.text_encoding();
    let mut map: std::collections::HashMap<String, hydrate::Value> = schema
        .fields
        .iter()
        .filter_map(|def| {
            let empty = match def.field_type {
                FieldKind::LongText => hydrate::Text::new(encoding, "").into(),
                FieldKind::MultiSelect => {
                    hydrate::Map::from(std::collections::HashMap::<String, hydrate::Value>::new())
                        .into()
                }
                _ => return None,
            };
            Some((def.name.clone(), empty))
        })
        .collect();
    for (field, value) in fields {
        let ty = schema.get(field).map_or(FieldKind::Json, |d| d.field_type);
        let v: hydrate::Value = match (ty, value) {
            (FieldKind::LongText, Value::Text(t)) => hydrate::Text::new(encoding, t).into(),
            (FieldKind::MultiSelect, Value::Set(options)) => hydrate::Map::from(
                options
                    .iter()
                    .map(|o| (o.clone(), hydrate::Value::from(ScalarValue::Boolean(true))))
                    .collect::<std::collections::HashMap<String, hydrate::Value>>(),
            )
            .into(),
            (_, v) => hydrate::Value::from(scalar_of(v)),
        };
        map.insert(field.clone(), v);
    }
    doc.batch_create_object(records, id, &hydrate::Map::from(map).into(), false)
}

fn scalar_of(v: &Value) -> ScalarValue {
    match v {
        Value::Text(t) | Value::Decimal(t) | Value::Json(t) => ScalarValue::Str(t.into()),
        Value::Integer(i) => ScalarValue::Int(*i),
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::Set(s) => ScalarValue::Str(s.iter().cloned().collect::<Vec<_>>().join(",").into()),
    }
}

/// The whole document as canonical JSON (maps sorted by key, conflicts
/// settled by Automerge's deterministic winner): the input of state digests.
pub(crate) fn canonical_json(doc: &AutoCommit, obj: &ObjId) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for item in doc.map_range(obj, ..) {
        let key = item.key.to_string();
        let value = match &item.value {
            automerge::ValueRef::Object(ObjType::Map) => canonical_json(doc, &item.id()),
            automerge::ValueRef::Object(ObjType::Text) => {
                serde_json::Value::String(doc.text(item.id()).unwrap_or_default())
            }
            automerge::ValueRef::Object(_) => serde_json::Value::Null,
            automerge::ValueRef::Scalar(s) => scalar_json(s),
        };
        map.insert(key, value);
    }
    serde_json::Value::Object(map)
}

fn scalar_json(s: &automerge::ScalarValueRef<'_>) -> serde_json::Value {
    use automerge::ScalarValueRef as S;
    match s {
        S::Str(t) => serde_json::json!({ "s": t }),
        S::Int(i) => serde_json::json!({ "i": i }),
        S::Uint(u) => serde_json::json!({ "u": u }),
        S::F64(f) => serde_json::json!({ "f": f }),
        S::Counter(c) => serde_json::json!({ "c": c }),
        S::Timestamp(t) => serde_json::json!({ "t": t }),
        S::Boolean(b) => serde_json::json!({ "b": b }),
        S::Bytes(b) => serde_json::json!({ "x": hex::encode(b) }),
        S::Unknown { type_code, bytes } => {
            serde_json::json!({ "?": type_code, "x": hex::encode(bytes) })
        }
        S::Null => serde_json::Value::Null,
    }
}
