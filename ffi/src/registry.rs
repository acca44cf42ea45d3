//! A registry: records, members, conflicts, history.

use std::collections::HashMap;
use std::sync::Arc;

use chittysync as core;

use crate::ChittyError;
use crate::types::{
    AttestationStatus, AuditEntry, AuditFilter, Conflict, FieldValue, Member, Record, Role,
    change_hash, public_key,
};
use crate::wire;

/// A registry in a replica. Every write is one signed change, durable when
/// the call returns.
#[derive(uniffi::Object)]
pub struct Registry {
    inner: core::Registry,
}

impl Registry {
    pub(crate) fn wrap(inner: core::Registry) -> Arc<Self> {
        Arc::new(Registry { inner })
    }
}

#[uniffi::export]
impl Registry {
    /// The registry's id (32 hex digits).
    pub fn id(&self) -> String {
        self.inner.id().to_string()
    }

    /// The registry's name.
    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// The schema as JSON text.
    pub fn schema_json(&self) -> String {
        serde_json::to_string(&self.inner.schema()).expect("schemas serialize")
    }

    /// Creates a record (`id` none: a new UUIDv7) or updates the given
    /// fields of an existing one. Returns the record's id.
    pub fn put(
        &self,
        id: Option<String>,
        fields: HashMap<String, FieldValue>,
    ) -> Result<String, ChittyError> {
        let fields: Vec<(String, core::Value)> =
            fields.into_iter().map(|(k, v)| (k, v.into())).collect();
        Ok(self.inner.put(id.as_deref(), fields)?)
    }

    /// Writes many records as one signed change: all land, or none do.
    /// Each entry is (id or none, fields). Returns the ids in order.
    pub fn put_many(&self, records: Vec<RecordInput>) -> Result<Vec<String>, ChittyError> {
        Ok(self.inner.write(|w| {
            records
                .into_iter()
                .map(|r| {
                    let fields: Vec<(String, core::Value)> =
                        r.fields.into_iter().map(|(k, v)| (k, v.into())).collect();
                    w.put(r.id.as_deref(), fields)
                })
                .collect::<Result<Vec<_>, _>>()
        })?)
    }

    /// The JSON entry point the Python and Node packages use: creates a
    /// record (`id` none: a new UUIDv7) or updates the given fields of an
    /// existing one. `fields` is a JSON object of values in the wire
    /// encoding (see the `wire` module: `$int`, `$decimal`, `$set`, `$json`
    /// tags), converted by each field's type. Returns the record's id.
    pub fn put_json(&self, id: Option<String>, fields: String) -> Result<String, ChittyError> {
        let fields = wire::decode_fields_text(&wire::kinds(&self.inner.schema()), &fields)?;
        Ok(self.inner.put(id.as_deref(), fields)?)
    }

    /// Writes many records given as a JSON array of objects as one signed
    /// change: all land, or none do. An object's `_id` names the record
    /// (absent: a new one); other keys are fields in the wire encoding,
    /// converted by the field's type exactly as `put_json` does. Returns the
    /// ids in order, as a JSON array.
    pub fn put_many_json(&self, records: String) -> Result<String, ChittyError> {
        let parsed: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(&records).map_err(|e| {
                ChittyError::argument(format!(
                    "records must be a JSON array of objects ({e}); nothing was written"
                ))
            })?;
        let kinds = wire::kinds(&self.inner.schema());
        let mut records = Vec::with_capacity(parsed.len());
        for mut object in parsed {
            let id = match object.remove("_id") {
                Some(serde_json::Value::String(id)) => Some(id),
                None | Some(serde_json::Value::Null) => None,
                Some(other) => {
                    return Err(ChittyError::argument(format!(
                        "a record's _id must be a string, not {other}; nothing was written"
                    )));
                }
            };
            let fields = wire::decode_fields(&kinds, object)
                .map_err(|e| ChittyError::argument(format!("{e}; nothing was written")))?;
            records.push((id, fields));
        }
        let ids = self.inner.write(|w| {
            records
                .into_iter()
                .map(|(id, fields)| w.put(id.as_deref(), fields))
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(serde_json::to_string(&ids).expect("strings serialize"))
    }

    /// A record by id (deleted records too), as JSON
    /// `{"id", "fields", "deleted", "conflicted"}` with values in the wire
    /// encoding; none if there is no such record.
    pub fn get_json(&self, id: String) -> Option<String> {
        self.inner
            .get(&id)
            .map(|r| wire::encode_record(&r).to_string())
    }

    /// Live records matching the filters, as one JSON array of records
    /// (as `get_json`). `filters` is a JSON object of field → value in the
    /// wire encoding; a record matches when every field equals its value (a
    /// multi-select when it holds it).
    pub fn list_json(&self, filters: String) -> Result<String, ChittyError> {
        let filters = wire::decode_fields_text(&wire::kinds(&self.inner.schema()), &filters)?;
        let query = filters
            .into_iter()
            .fold(core::Query::all(), |q, (f, v)| q.filter(f, v.to_string()));
        let records: Vec<serde_json::Value> = self
            .inner
            .list(&query)
            .iter()
            .map(wire::encode_record)
            .collect();
        Ok(serde_json::Value::Array(records).to_string())
    }

    /// Settles a conflict by writing the chosen value (one wire-encoded
    /// JSON value) as a new change.
    pub fn resolve_json(
        &self,
        record: String,
        field: String,
        value: String,
    ) -> Result<(), ChittyError> {
        let kinds = wire::kinds(&self.inner.schema());
        let value = wire::decode(
            kinds.get(&field).copied(),
            &field,
            wire::parse(&value, "the value")?,
        )?;
        Ok(self.inner.resolve(&record, &field, value)?)
    }

    /// Every field with concurrent values, as a JSON array of
    /// `{"record", "field", "policy", "candidates": [{"value", "author",
    /// "time", "change"}], "chosen"}`, values in the wire encoding.
    pub fn conflicts_json(&self) -> String {
        let conflicts: Vec<serde_json::Value> = self
            .inner
            .conflicts()
            .into_iter()
            .map(|c| {
                let candidates: Vec<serde_json::Value> = c
                    .candidates
                    .iter()
                    .map(|x| {
                        serde_json::json!({
                            "value": wire::encode(&x.value),
                            "author": x.author.map(|k| k.to_string()),
                            "time": x.time,
                            "change": x.change.to_string(),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "record": c.record,
                    "field": c.field,
                    "policy": c.policy.name(),
                    "candidates": candidates,
                    "chosen": c.chosen,
                })
            })
            .collect();
        serde_json::Value::Array(conflicts).to_string()
    }

    /// Clears fields of a record.
    pub fn unset(&self, id: String, fields: Vec<String>) -> Result<(), ChittyError> {
        Ok(self.inner.unset(&id, fields)?)
    }

    /// Deletes a record (a tombstone: auditable, propagates to adapters).
    pub fn delete(&self, id: String) -> Result<(), ChittyError> {
        Ok(self.inner.delete(&id)?)
    }

    /// A record by id (deleted records too, with `deleted` set).
    pub fn get(&self, id: String) -> Option<Record> {
        self.inner.get(&id).map(Into::into)
    }

    /// Live records whose fields equal every given filter value (a
    /// multi-select matches when it contains the value).
    pub fn list(&self, filters: HashMap<String, String>) -> Vec<Record> {
        let query = filters
            .into_iter()
            .fold(core::Query::all(), |q, (f, v)| q.filter(f, v));
        self.inner
            .list(&query)
            .into_iter()
            .map(Into::into)
            .collect()
    }

    /// How many live records there are.
    pub fn len(&self) -> u64 {
        self.inner.len() as u64
    }

    /// Whether there are no live records.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Every field with concurrent values, and the policy's pick.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.inner.conflicts().into_iter().map(Into::into).collect()
    }

    /// Settles a conflict by writing the chosen value as a new change.
    pub fn resolve(
        &self,
        record: String,
        field: String,
        value: FieldValue,
    ) -> Result<(), ChittyError> {
        Ok(self
            .inner
            .resolve(&record, &field, core::Value::from(value))?)
    }

    /// The members and their roles.
    pub fn members(&self) -> Vec<Member> {
        self.inner
            .members()
            .into_iter()
            .map(|m| Member {
                key: m.key.to_string(),
                role: m.role.into(),
                alias: m.alias,
            })
            .collect()
    }

    /// Adds a member or changes their role (admins only).
    pub fn set_member(&self, key: String, role: Role) -> Result<(), ChittyError> {
        Ok(self.inner.set_member(public_key(&key)?, role.into())?)
    }

    /// Removes a member (admins only; the last admin cannot be removed).
    pub fn remove_member(&self, key: String) -> Result<(), ChittyError> {
        Ok(self.inner.remove_member(public_key(&key)?)?)
    }

    /// The current heads (change hashes, hex).
    pub fn heads(&self) -> Vec<String> {
        self.inner.heads().iter().map(ToString::to_string).collect()
    }

    /// A digest of the registry's state, equal on replicas that converged.
    pub fn state_digest(&self) -> String {
        self.inner.state_digest()
    }

    /// The signed changes the other side lacks, given its heads (empty:
    /// everything), as bundle bytes for `Replica.import_bundle`.
    pub fn export_bundle(&self, their_heads: Vec<String>) -> Result<Vec<u8>, ChittyError> {
        let heads = their_heads
            .iter()
            .map(|h| change_hash(h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.inner.export(&heads)?.to_bytes())
    }

    /// The audit log: every change with author, signature status and what
    /// it did, filtered.
    pub fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, ChittyError> {
        let query = filter.try_into()?;
        Ok(self
            .inner
            .audit(&query)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Signs this replica's attestation of the current state.
    pub fn attest(&self) -> Result<(), ChittyError> {
        self.inner.attest()?;
        Ok(())
    }

    /// Who attests the current state, against the quorum.
    pub fn attestation_status(&self) -> Result<AttestationStatus, ChittyError> {
        Ok(self.inner.status()?.into())
    }
}

/// One record to write with `put_many`.
#[derive(Clone, Debug, uniffi::Record)]
pub struct RecordInput {
    /// The record's id; none for a new UUIDv7.
    #[uniffi(default = None)]
    pub id: Option<String>,
    /// The fields to set.
    pub fields: HashMap<String, FieldValue>,
}
