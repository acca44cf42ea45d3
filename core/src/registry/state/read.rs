//! Reads of the registry as users see it: records, conflicts, members,
//! heads and digests.

use std::collections::HashMap;

use automerge::{ChangeHash, ObjId, ObjType, ReadDoc};
use sha2::{Digest, Sha256};

use super::DocState;
use crate::document::policy::{Holder, legacy_obj, record_holder};
use crate::document::{self as doc, DELETED};
use crate::identity::PublicKey;
use crate::registry::{Candidate, Conflict, Member, Query, Record, Tombstone};
use crate::schema::{ConflictPolicy, FieldKind, Rule, ValidationError};
use crate::store::{Store, StoreError};
use crate::value::Value;

impl DocState {
    /// A record's copies now (see [`Layout::copies`]).
    pub(crate) fn copies(&self, id: &str) -> Vec<ObjId> {
        self.layout.copies(self.view(), id, None)
    }

    pub(super) fn tombstone(&self, copies: &[ObjId]) -> Option<Tombstone> {
        copies.iter().find_map(|obj| self.tombstone_of(obj))
    }

    pub(super) fn tombstone_of(&self, obj: &ObjId) -> Option<Tombstone> {
        let (_, t) = self.view().get(obj, DELETED).ok()??;
        let by = match self.view().get(&t, "by").ok()?? {
            (automerge::Value::Scalar(s), _) => s.as_str().unwrap_or_default().to_owned(),
            _ => String::new(),
        };
        let at = match self.view().get(&t, "at").ok()?? {
            (automerge::Value::Scalar(s), _) => match s.as_ref() {
                automerge::ScalarValue::Timestamp(t) | automerge::ScalarValue::Int(t) => *t,
                _ => 0,
            },
            _ => 0,
        };
        Some(Tombstone { by, at })
    }

    pub(super) fn is_deleted(&self, copies: &[ObjId]) -> bool {
        copies
            .iter()
            .any(|obj| self.view().get(obj, DELETED).ok().flatten().is_some())
    }

    /// Every concurrent value of a field across a record's copies. Emptied
    /// containers (a copy's untouched long text or multi-select) are not
    /// values and are left out.
    pub(super) fn candidates(
        &mut self,
        copies: &[ObjId],
        field: &str,
        ty: Option<FieldKind>,
    ) -> Vec<Candidate> {
        let mut all: Vec<(automerge::Value<'static>, ObjId)> = Vec::new();
        for obj in copies {
            if let Ok(values) = self.view().get_all(obj, field) {
                all.extend(values.into_iter().map(|(v, id)| (v.into_owned(), id)));
            }
        }
        let mut out = Vec::with_capacity(all.len());
        for (v, id) in all {
            let Some(value) = doc::read_value(self.view(), &v, &id, ty) else {
                continue;
            };
            if is_empty_container(&value, ty) {
                continue;
            }
            let author = match &id {
                ObjId::Id(_, actor, _) => PublicKey::from_bytes(actor.to_bytes()).ok(),
                ObjId::Root => None,
            };
            let change = self
                .view()
                .hash_for_opid(&id)
                .unwrap_or(ChangeHash([0; 32]));
            let time = self
                .doc
                .get_change_meta_by_hash(&change)
                .map_or(0, |m| m.timestamp);
            out.push(Candidate {
                value,
                author,
                time,
                change,
            });
        }
        out
    }

    /// The records that changes after `heads` created, changed or deleted;
    /// `None` if a head is unknown. Reads only those changes.
    pub(crate) fn records_touched_since(
        &mut self,
        heads: &[ChangeHash],
    ) -> Option<std::collections::BTreeSet<String>> {
        if heads
            .iter()
            .any(|h| self.doc.get_change_by_hash(h).is_none())
        {
            return None;
        }
        let records = legacy_obj(&self.layout.records);
        let mut holders: HashMap<automerge::legacy::OpId, Holder> = HashMap::new();
        let mut out = std::collections::BTreeSet::new();
        for change in self.doc.get_changes(heads) {
            for op in change.decode().operations {
                if op.obj == records {
                    if let automerge::legacy::Key::Map(key) = &op.key {
                        out.insert(key.to_string());
                    }
                    continue;
                }
                let automerge::legacy::ObjectId::Id(op_id) = &op.obj else {
                    continue;
                };
                let holder = holders
                    .entry(op_id.clone())
                    .or_insert_with(|| record_holder(&self.doc, &self.layout, op_id));
                if let Some((_, record)) = holder {
                    out.insert(record.clone());
                }
            }
        }
        Some(out)
    }

    /// The latest write time of a field's values, if it has any.
    pub(crate) fn field_time(&mut self, id: &str, field: &str) -> Option<i64> {
        let copies = self.copies(id);
        let ty = self.schema.schema.get(field).map(|d| d.field_type);
        self.candidates(&copies, field, ty)
            .iter()
            .map(|c| c.time)
            .max()
    }

    /// Which candidate the policy picks (`None` for manual).
    pub(super) fn choose(
        &self,
        copies: &[ObjId],
        field: &str,
        policy: ConflictPolicy,
        c: &[Candidate],
    ) -> Option<usize> {
        match policy {
            ConflictPolicy::Manual => None,
            ConflictPolicy::Automerge => {
                // Automerge's winner in the first copy that has the field;
                // the copies' order is the same on every replica.
                let winner = copies
                    .iter()
                    .find_map(|obj| self.view().get(obj, field).ok().flatten())?
                    .1;
                let hash = self.view().hash_for_opid(&winner)?;
                c.iter().position(|x| x.change == hash).or(if c.is_empty() {
                    None
                } else {
                    Some(c.len() - 1)
                })
            }
            ConflictPolicy::LastWriteWins => (0..c.len()).max_by_key(|&i| (c[i].time, c[i].author)),
            ConflictPolicy::Hash => (0..c.len()).min_by_key(|&i| c[i].value.content_hash()),
        }
    }

    pub(crate) fn read_record(&mut self, id: &str) -> Option<Record> {
        let copies = self.copies(id);
        if copies.is_empty() {
            return None;
        }
        Some(self.read_record_at(id, &copies))
    }

    pub(super) fn read_record_at(&mut self, id: &str, copies: &[ObjId]) -> Record {
        let schema = self.schema.clone();
        let mut record = Record {
            id: id.to_owned(),
            fields: Default::default(),
            deleted: self.tombstone(copies),
            conflicted: Default::default(),
        };
        // (field, has concurrent values in one copy, value, value's id)
        let mut items: Vec<(String, bool, automerge::Value<'static>, ObjId)> = Vec::new();
        for obj in copies {
            items.extend(self.view().map_range(obj, ..).map(|i| {
                let (key, conflict, id) = (i.key.to_string(), i.conflict, i.id());
                let value = match i.value {
                    automerge::ValueRef::Object(t) => automerge::Value::Object(t),
                    automerge::ValueRef::Scalar(s) => {
                        automerge::Value::Scalar(std::borrow::Cow::Owned(s.into()))
                    }
                };
                (key, conflict, value, id)
            }));
        }
        let mut done = std::collections::BTreeSet::new();
        for (field, conflict, value, vid) in items {
            if field == DELETED || !done.insert(field.clone()) {
                continue;
            }
            let ty = schema.schema.get(&field).map(|d| d.field_type);
            let chosen = if conflict || copies.len() > 1 {
                let candidates = self.candidates(copies, &field, ty);
                if distinct_values(&candidates) > 1 {
                    record.conflicted.insert(field.clone());
                    let policy = schema.schema.policy_for(&field);
                    // Manual conflicts show Automerge's pick until resolved.
                    let pick = self
                        .choose(copies, &field, policy, &candidates)
                        .or_else(|| {
                            self.choose(copies, &field, ConflictPolicy::Automerge, &candidates)
                        });
                    pick.and_then(|i| candidates.get(i))
                        .map(|c| c.value.clone())
                } else {
                    candidates.into_iter().next().map(|c| c.value)
                }
            } else {
                doc::read_value(self.view(), &value, &vid, ty)
            };
            if let Some(v) = chosen.filter(|v| !is_empty_container(v, ty)) {
                record.fields.insert(field, v);
            }
        }
        record
    }

    /// Every record id with its copies.
    pub(super) fn record_objs(&self) -> Vec<(String, Vec<ObjId>)> {
        let items: Vec<(String, bool, ObjId)> = self
            .view()
            .map_range(&self.layout.records, ..)
            .filter(|i| matches!(i.value, automerge::ValueRef::Object(ObjType::Map)))
            .map(|i| (i.key.to_string(), i.conflict, i.id()))
            .collect();
        items
            .into_iter()
            .map(|(id, conflict, obj)| {
                let copies = if conflict {
                    self.copies(&id)
                } else {
                    vec![obj]
                };
                (id, copies)
            })
            .collect()
    }

    pub(crate) fn list(&mut self, query: &Query) -> Vec<Record> {
        let mut out = Vec::new();
        for (id, copies) in self.record_objs() {
            if query.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            if !query.include_deleted && self.is_deleted(&copies) {
                continue;
            }
            let record = self.read_record_at(&id, &copies);
            let keep = query.filters.iter().all(|(f, want)| {
                record.fields.get(f).is_some_and(|v| match v {
                    Value::Set(s) => s.contains(want),
                    v => v.to_string() == *want,
                })
            });
            if keep {
                out.push(record);
            }
        }
        out
    }

    pub(crate) fn live_count(&self) -> usize {
        self.record_objs()
            .iter()
            .filter(|(_, copies)| !self.is_deleted(copies))
            .count()
    }

    /// Live records' values that break the current schema (validation
    /// conflicts): each came from a change valid as of its dependencies,
    /// so a concurrent schema change, or concurrent edits that broke a
    /// unique or required rule.
    pub(crate) fn invalid_records(&mut self) -> Vec<ValidationError> {
        let schema = self.schema.clone();
        let mut taken: HashMap<(String, String), String> = HashMap::new();
        let mut out = Vec::new();
        for record in self.list(&Query::all()) {
            for def in &schema.schema.fields {
                let broken = match record.fields.get(&def.name) {
                    None if def.required => Some((String::new(), Rule::Required)),
                    None => None,
                    Some(v) => match schema.check_value(&def.name, v.clone()) {
                        Err(rule) => Some((v.to_string(), rule)),
                        Ok(_) if def.unique => taken
                            .insert((def.name.clone(), v.to_string()), record.id.clone())
                            .map(|other| {
                                (
                                    v.to_string(),
                                    Rule::Unique {
                                        other_record: other,
                                    },
                                )
                            }),
                        Ok(_) => None,
                    },
                };
                if let Some((value, rule)) = broken {
                    out.push(ValidationError {
                        registry: self.name.clone(),
                        record: record.id.clone(),
                        field: def.name.clone(),
                        value,
                        rule,
                    });
                }
            }
        }
        out
    }

    pub(crate) fn conflicts(&mut self) -> Vec<Conflict> {
        let schema = self.schema.clone();
        let mut out = Vec::new();
        for (id, copies) in self.record_objs() {
            let mut fields = std::collections::BTreeSet::new();
            for obj in &copies {
                fields.extend(
                    self.view()
                        .map_range(obj, ..)
                        .filter(|i| (i.conflict || copies.len() > 1) && i.key != DELETED)
                        .map(|i| i.key.to_string()),
                );
            }
            for field in fields {
                let ty = schema.schema.get(&field).map(|d| d.field_type);
                let candidates = self.candidates(&copies, &field, ty);
                if distinct_values(&candidates) < 2 {
                    continue;
                }
                let policy = schema.schema.policy_for(&field);
                let chosen = self.choose(&copies, &field, policy, &candidates);
                out.push(Conflict {
                    record: id.clone(),
                    field,
                    policy,
                    candidates,
                    chosen,
                });
            }
        }
        out
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        let aliases = self.layout.aliases(self.view());
        self.layout
            .members(self.view(), None)
            .into_iter()
            .map(|(key, role)| Member {
                alias: aliases.get(&key.to_string()).cloned(),
                key,
                role,
            })
            .collect()
    }

    pub(crate) fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    pub(crate) fn change_count(&self) -> usize {
        self.doc.stats().num_changes as usize
    }

    pub(crate) fn state_digest(&self) -> String {
        hex::encode(self.state_digest_bytes())
    }

    /// SHA-256 over the canonical JSON of meta, schema, members and records
    /// — not aliases, and not attestations (which live outside the document),
    /// so attesting a state never changes it.
    pub(crate) fn state_digest_bytes(&self) -> [u8; 32] {
        let part = |obj: &ObjId| doc::canonical_json(self.view(), obj);
        let json = serde_json::json!({
            "meta": part(&self.layout.meta),
            "schema": part(&self.layout.schema),
            "members": part(&self.layout.members),
            "records": part(&self.layout.records),
        });
        Sha256::digest(json.to_string().as_bytes()).into()
    }

    /// Who attests the current state, against the configured quorum.
    pub(crate) fn status(
        &mut self,
        store: &Store,
    ) -> Result<crate::trust::attest::AttestationStatus, StoreError> {
        let heads = self.doc.get_heads();
        let digest = self.state_digest_bytes();
        let members = self.layout.members(self.view(), None);
        let mut attested_by: Vec<PublicKey> =
            crate::store::attestations(store.conn(), store.path(), &self.id)?
                .into_iter()
                .filter(|a| a.attests(&heads, &digest) && a.verify())
                .map(|a| a.member)
                .filter(|m| members.iter().any(|(k, _)| k == m))
                .collect();
        attested_by.sort();
        attested_by.dedup();
        Ok(crate::trust::attest::AttestationStatus {
            heads,
            digest: hex::encode(digest),
            change_count: self.change_count() as u64,
            attested_by,
            members: members.len(),
            quorum: self.schema.schema.quorum,
        })
    }
}

pub(super) fn distinct_values(candidates: &[Candidate]) -> usize {
    let mut values: Vec<&Value> = candidates.iter().map(|c| &c.value).collect();
    values.sort();
    values.dedup();
    values.len()
}

/// An emptied long text or multi-select: reads as no value.
pub(super) fn is_empty_container(v: &Value, ty: Option<FieldKind>) -> bool {
    matches!(v, Value::Set(s) if s.is_empty())
        || (ty == Some(FieldKind::LongText) && *v == Value::Text(String::new()))
}
