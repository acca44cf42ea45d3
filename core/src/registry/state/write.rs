//! Local writes: signed transactions on the document, and the record,
//! member and schema operations built on them.

use std::collections::HashMap;
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ChangeHash, ObjId, ObjType, ReadDoc};

use super::import::row_of;
use super::{DocState, UniqueIndex, actor_of, internal};
use crate::clock::now_ms;
use crate::document::values::ValueCheck;
use crate::document::{self as doc, DELETED, Role};
use crate::error::WriteError;
use crate::identity::{Identity, PublicKey};
use crate::ids::RecordIdForm;
use crate::registry::{Query, Shared};
use crate::schema::{CompiledSchema, FieldKind, Rule, Schema};
use crate::store::ChangeRow;
use crate::trust;
use crate::value::Value;

impl DocState {
    /// Runs `f` and persists what it wrote as one signed change in one
    /// transaction. On any failure nothing is written and the in-memory
    /// document is as before.
    pub(crate) fn transact<T>(
        &mut self,
        shared: &Shared,
        message: &str,
        f: impl FnOnce(&mut DocState) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        self.transact_signed(shared, &shared.identity, message, f)
    }

    /// [`DocState::transact`], but the change is made and signed by
    /// `identity` (its own actor), e.g. an adapter binding's key.
    pub(crate) fn transact_as<T>(
        &mut self,
        shared: &Shared,
        identity: &Identity,
        message: &str,
        f: impl FnOnce(&mut DocState) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let theirs = actor_of(&identity.public_key());
        let out = self.transact_signed(shared, identity, message, |state| {
            state.doc.set_actor(theirs);
            f(state)
        });
        self.doc.set_actor(actor_of(&shared.identity.public_key()));
        out
    }

    pub(super) fn transact_signed<T>(
        &mut self,
        shared: &Shared,
        identity: &Identity,
        message: &str,
        f: impl FnOnce(&mut DocState) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let mut store = shared.store();
        let tx = store.begin()?;
        self.catch_up(&tx)?;
        let out = match f(self) {
            Ok(out) => out,
            Err(e) => {
                self.doc.rollback();
                self.unique = None;
                self.admin_write = false;
                return Err(e);
            }
        };
        let admin_write = std::mem::take(&mut self.admin_write);
        let time = self.tick();
        let Some(hash) = self.doc.commit_with(
            CommitOptions::default()
                .with_time(time)
                .with_message(message),
        ) else {
            return Ok(out); // nothing changed: nothing to sign or store
        };
        if let Some(e) = self.breaks_schema_at_deps(hash) {
            self.reload(tx.conn(), tx.path())?;
            return Err(e);
        }
        let persisted = (|| -> Result<(i64, usize), WriteError> {
            let row = self.signed_row(identity, hash)?;
            let pos = tx.insert_changes(&self.id, std::slice::from_ref(&row))?;
            if admin_write {
                tx.insert_admin_changes(&self.id, &[hash])?;
            }
            let detail = serde_json::json!({ "change": hash.to_string(), "message": message });
            tx.journal(Some(&self.id), "wrote", &detail)?;
            tx.commit()?;
            Ok((pos, row.bytes.len()))
        })();
        match persisted {
            Ok((pos, bytes)) => {
                self.set_loaded(pos, bytes);
                if admin_write {
                    self.admin_changes.insert(hash);
                    self.refresh_derived();
                } else {
                    self.refresh_view();
                }
                if self.wants_compaction() {
                    // Best effort: a failed compaction loses nothing.
                    if let Err(e) = self.compact(&mut store) {
                        tracing::warn!(registry = %self.id, error = %e, "compaction failed");
                    }
                }
                Ok(out)
            }
            Err(e) => {
                // The change is in memory but not on disk: drop it.
                let path = store.path().to_owned();
                self.reload(store.conn(), &path)?;
                Err(e)
            }
        }
    }

    /// Writes are checked against the schema as the registry reads it,
    /// with revoked changes masked; importers check against the schema of
    /// the document itself (as of the change's dependencies), which differs
    /// only when a schema change was revoked. Then check that one too, so
    /// no replica refuses what this one wrote.
    fn breaks_schema_at_deps(&mut self, hash: ChangeHash) -> Option<WriteError> {
        // No view: nothing is revoked, the two schemas are one.
        self.view.as_ref()?;
        let change = self.doc.get_change_by_hash(&hash)?;
        let operations = change.decode().operations;
        let broken =
            ValueCheck::new(&self.layout).broken_value(&self.doc, &change, &operations, true)?;
        Some(self.invalid(&broken.record, &broken.field, broken.value, broken.rule))
    }

    /// Next hybrid-logical-clock time: wall clock, but never behind any
    /// change seen, so causally later writes always have later times.
    pub(super) fn tick(&mut self) -> i64 {
        self.clock = now_ms().max(self.clock + 1);
        self.clock
    }

    #[cfg(test)]
    pub(crate) fn skew_clock(&mut self, ms: i64) {
        self.clock = now_ms() + ms;
    }

    pub(super) fn signed_row(
        &mut self,
        identity: &Identity,
        hash: ChangeHash,
    ) -> Result<ChangeRow, WriteError> {
        let change = self
            .doc
            .get_change_by_hash(&hash)
            .ok_or_else(|| WriteError::Internal("committed change not found".into()))?;
        let signature = trust::sign_change(identity, &self.id, &hash);
        Ok(row_of(&change, identity.public_key(), signature))
    }

    pub(crate) fn write_record(
        &mut self,
        id: Option<&str>,
        fields: Vec<(String, Option<Value>)>,
        author: &PublicKey,
        create: NewId,
    ) -> Result<String, WriteError> {
        let schema = self.schema.clone();
        let chosen = id.is_some();
        let id = match id {
            Some(id) => id.to_owned(),
            None => uuid::Uuid::now_v7().to_string(),
        };
        let existing = self.copies(&id);
        if existing.is_empty() && chosen {
            self.check_new_record_id(&id, create)?;
        }
        self.require_owner(&id, &existing, author)?;
        if self.is_deleted(&existing) {
            return Err(WriteError::Deleted {
                registry: self.name.clone(),
                record: id,
            });
        }
        if existing.is_empty() && fields.iter().all(|(_, v)| v.is_none()) {
            // Clearing fields of a record that does not exist.
            return Err(WriteError::NotFound {
                registry: self.name.clone(),
                record: id,
            });
        }
        let mut checked = Vec::with_capacity(fields.len());
        for (field, value) in fields {
            let def = schema.schema.get(&field);
            match value {
                Some(v) => {
                    let shown = v.to_string();
                    let v = schema
                        .check_value(&field, v)
                        .map_err(|rule| self.invalid(&id, &field, shown, rule))?;
                    checked.push((field, Some(v)));
                }
                None if def.is_some_and(|d| d.required) => {
                    return Err(self.invalid(&id, &field, String::new(), Rule::Required));
                }
                None => checked.push((field, None)),
            }
        }
        if existing.is_empty() {
            for def in schema.schema.fields.iter().filter(|d| d.required) {
                if !checked.iter().any(|(f, v)| *f == def.name && v.is_some()) {
                    return Err(self.invalid(&id, &def.name, String::new(), Rule::Required));
                }
            }
        }
        self.ensure_unique_index();
        for (field, value) in &checked {
            let Some(v) = value
                .as_ref()
                .filter(|_| schema.schema.get(field).is_some_and(|d| d.unique))
            else {
                continue;
            };
            let index = self.unique.as_ref().expect("built above");
            if let Some(other) = index.by_value.get(&(field.clone(), v.to_string()))
                && *other != id
            {
                let rule = Rule::Unique {
                    other_record: other.clone(),
                };
                return Err(self.invalid(&id, field, v.to_string(), rule));
            }
        }
        if existing.is_empty() {
            // A new record is created whole, in one batch operation.
            let fields: Vec<(String, Value)> = checked
                .into_iter()
                .filter_map(|(f, v)| Some((f, v?)))
                .collect();
            doc::create_record(
                &mut self.doc,
                &self.layout.records,
                &id,
                &schema.schema,
                &fields,
            )
            .map_err(internal)?;
            if let Some(index) = self.unique.as_mut() {
                for (field, value) in &fields {
                    if schema.schema.get(field).is_some_and(|d| d.unique) {
                        index.set(field, &id, Some(value.to_string()));
                    }
                }
            }
            return Ok(id);
        }
        let copies = existing;
        for (field, value) in checked {
            let def = schema.schema.get(&field);
            // Every copy gets the write, so the merged record reads it.
            for obj in &copies {
                self.write_field(obj, &field, def, value.as_ref())?;
            }
            if def.is_some_and(|d| d.unique)
                && let Some(index) = self.unique.as_mut()
            {
                index.set(&field, &id, value.map(|v| v.to_string()));
            }
        }
        Ok(id)
    }

    /// Writes (or clears) one field of one copy of a record.
    pub(super) fn write_field(
        &mut self,
        obj: &ObjId,
        field: &str,
        def: Option<&crate::schema::FieldDef>,
        value: Option<&Value>,
    ) -> Result<(), WriteError> {
        // Containers made concurrently (say, for a field added to the
        // schema after the record was created) conflict, and editing
        // inside one would leave the others standing for good: replace
        // them all, as a write does a scalar's concurrent values.
        let container = def
            .is_some_and(|d| matches!(d.field_type, FieldKind::LongText | FieldKind::MultiSelect));
        if container && self.doc.get_all(obj, field).map_err(internal)?.len() > 1 {
            self.doc.delete(obj, field).map_err(internal)?;
        }
        match value {
            Some(v) => {
                let ty = def.map_or(FieldKind::Json, |d| d.field_type);
                doc::write_value(&mut self.doc, obj, field, ty, v).map_err(internal)?;
            }
            // Containers are emptied, not removed, so concurrent edits
            // keep landing in the one shared object.
            None => match def.map(|d| d.field_type) {
                Some(ty @ FieldKind::LongText) => {
                    doc::write_value(&mut self.doc, obj, field, ty, &Value::Text(String::new()))
                        .map_err(internal)?
                }
                Some(ty @ FieldKind::MultiSelect) => doc::write_value(
                    &mut self.doc,
                    obj,
                    field,
                    ty,
                    &Value::Set(Default::default()),
                )
                .map_err(internal)?,
                _ => self.doc.delete(obj, field).map_err(internal)?,
            },
        }
        Ok(())
    }

    pub(crate) fn delete_record(&mut self, id: &str, author: &PublicKey) -> Result<(), WriteError> {
        let copies = self.copies(id);
        self.require_owner(id, &copies, author)?;
        if copies.is_empty() {
            if crate::ids::record_id_form(id).is_none() {
                return Err(WriteError::BadRecordId { id: id.to_owned() });
            }
            return Err(WriteError::NotFound {
                registry: self.name.clone(),
                record: id.to_owned(),
            });
        }
        if self.is_deleted(&copies) {
            return Ok(()); // already deleted
        }
        for obj in &copies {
            let t = self
                .doc
                .put_object(obj, DELETED, ObjType::Map)
                .map_err(internal)?;
            self.doc
                .put(&t, "by", author.to_string())
                .map_err(internal)?;
            self.doc
                .put(&t, "at", automerge::ScalarValue::Timestamp(now_ms()))
                .map_err(internal)?;
        }
        if let Some(index) = self.unique.as_mut() {
            for def in self.schema.schema.fields.iter().filter(|d| d.unique) {
                index.set(&def.name, id, None);
            }
        }
        Ok(())
    }

    /// The live record holding `value` (as text) in unique field `field`.
    pub(crate) fn unique_holder(&mut self, field: &str, value: &str) -> Option<String> {
        self.ensure_unique_index();
        let index = self.unique.as_ref().expect("built above");
        index
            .by_value
            .get(&(field.to_owned(), value.to_owned()))
            .cloned()
    }

    pub(super) fn ensure_unique_index(&mut self) {
        if self.unique.is_some() {
            return;
        }
        let unique_fields: Vec<String> = self
            .schema
            .schema
            .fields
            .iter()
            .filter(|d| d.unique)
            .map(|d| d.name.clone())
            .collect();
        let mut index = UniqueIndex::default();
        if !unique_fields.is_empty() {
            for (id, copies) in self.record_objs() {
                if self.is_deleted(&copies) {
                    continue;
                }
                let record = self.read_record_at(&id, &copies);
                for field in &unique_fields {
                    if let Some(v) = record.fields.get(field) {
                        index.set(field, &id, Some(v.to_string()));
                    }
                }
            }
        }
        self.unique = Some(index);
    }

    pub(crate) fn set_member(
        &mut self,
        key: PublicKey,
        role: Option<Role>,
    ) -> Result<(), WriteError> {
        let members = self.layout.members(self.view(), None);
        let admins = members.iter().filter(|(_, r)| *r == Role::Admin).count();
        let was_admin = members.iter().any(|(k, r)| *k == key && *r == Role::Admin);
        if was_admin && role != Some(Role::Admin) && admins == 1 {
            return Err(WriteError::LastAdmin {
                registry: self.name.clone(),
            });
        }
        self.admin_write = true;
        match role {
            Some(r) => self
                .doc
                .put(&self.layout.members, key.to_string(), r.name()),
            None => self.doc.delete(&self.layout.members, key.to_string()),
        }
        .map_err(internal)
    }

    pub(crate) fn set_schema(&mut self, new: Schema) -> Result<(), WriteError> {
        new.check().map_err(WriteError::Schema)?;
        let old = self.schema.schema.clone();
        for def in &new.fields {
            if let Some(o) = old.get(&def.name)
                && o.field_type != def.field_type
            {
                return Err(WriteError::Schema(crate::schema::SchemaError::Invalid(
                    format!(
                        "field '{}' is {}; its type cannot change to {} — add a new field and copy the values",
                        def.name, o.field_type, def.field_type
                    ),
                )));
            }
        }
        // Every live record must satisfy the new schema before it is adopted.
        let compiled = CompiledSchema::new(new.clone());
        let mut seen: HashMap<(String, String), String> = HashMap::new();
        for record in self.list(&Query::all()) {
            for def in &new.fields {
                match record.fields.get(&def.name) {
                    None if def.required => {
                        return Err(self.invalid(
                            &record.id,
                            &def.name,
                            String::new(),
                            Rule::Required,
                        ));
                    }
                    None => {}
                    Some(v) => {
                        compiled.check_value(&def.name, v.clone()).map_err(|rule| {
                            self.invalid(&record.id, &def.name, v.to_string(), rule)
                        })?;
                        if def.unique {
                            let key = (def.name.clone(), v.to_string());
                            if let Some(other) = seen.insert(key, record.id.clone()) {
                                let rule = Rule::Unique {
                                    other_record: other,
                                };
                                return Err(self.invalid(
                                    &record.id,
                                    &def.name,
                                    v.to_string(),
                                    rule,
                                ));
                            }
                        }
                    }
                }
            }
        }
        self.admin_write = true;
        self.layout
            .write_schema(&mut self.doc, &old, &new)
            .map_err(internal)?;
        self.schema = Arc::new(compiled);
        self.unique = None;
        Ok(())
    }

    pub(crate) fn set_alias(
        &mut self,
        key: PublicKey,
        alias: Option<&str>,
    ) -> Result<(), WriteError> {
        let aliases = match &self.layout.aliases {
            Some(a) => a.clone(),
            None => {
                return Err(WriteError::Schema(crate::schema::SchemaError::Invalid(
                    "this registry predates member aliases".into(),
                )));
            }
        };
        self.admin_write = true;
        match alias.map(str::trim).filter(|a| !a.is_empty()) {
            Some(a) => self.doc.put(&aliases, key.to_string(), a),
            None => self.doc.delete(&aliases, key.to_string()),
        }
        .map_err(internal)
    }

    /// Signs and stores this replica's attestation of the current state.
    pub(crate) fn attest(
        &mut self,
        shared: &Shared,
    ) -> Result<crate::trust::attest::Attestation, WriteError> {
        let me = shared.identity.public_key();
        if !self
            .layout
            .members(self.view(), None)
            .iter()
            .any(|(k, _)| *k == me)
        {
            return Err(WriteError::NotPermitted {
                registry: self.name.clone(),
                key: me.to_string(),
                role: None,
                needed: Role::Reader.name().to_owned(),
            });
        }
        let mut store = shared.store();
        let tx = store.begin()?;
        self.catch_up(&tx)?;
        let attestation = crate::trust::attest::Attestation::sign(
            &shared.identity,
            self.id,
            self.doc.get_heads(),
            self.state_digest_bytes(),
            self.change_count() as u64,
        );
        if tx.insert_attestation(&attestation)? {
            let detail = serde_json::json!({
                "digest": hex::encode(attestation.digest),
                "changes": attestation.change_count,
            });
            tx.journal(Some(&self.id), "attested", &detail)?;
        }
        tx.commit()?;
        Ok(attestation)
    }
}

/// Which ids a write may create a record with, besides a name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewId {
    /// A name only: a UUID the registry did not make names no record.
    Named,
    /// Also a UUID: a mirror brings records with their target's UUIDs.
    AnyForm,
}

impl DocState {
    /// Refuses an id no record has that cannot be a new record's: one the
    /// registry could never have made, or a UUID it did not make.
    pub(super) fn check_new_record_id(&self, id: &str, create: NewId) -> Result<(), WriteError> {
        match crate::ids::record_id_form(id) {
            None => Err(WriteError::BadRecordId { id: id.to_owned() }),
            Some(RecordIdForm::Uuid) if create == NewId::Named => Err(WriteError::NotFound {
                registry: self.name.clone(),
                record: id.to_owned(),
            }),
            Some(_) => Ok(()),
        }
    }
}
