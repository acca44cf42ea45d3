//! Diff, Validate and Resolve: from both sides' rows and the last-known
//! merge base to a plan of writes, per row and per field. Pure: it reads
//! nothing and writes nothing, so a dry run is exactly this step.

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::{Action, Direction, FieldChange, FieldConflict, InvalidRow, RowPlan, Side};
use crate::mirror::{Fetched, RemoteRow};
use crate::schema::{CompiledSchema, ConflictPolicy, Rule};
use crate::value::Value;

pub(crate) type Fields = BTreeMap<String, Value>;

/// The last-known state of one bound record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MergeBase {
    pub(crate) remote_id: String,
    /// The values both sides last agreed on (the three-way merge's base).
    pub(crate) base: Fields,
    /// The remote row as last seen (stands in for rows an incremental
    /// fetch does not return because they did not change).
    pub(crate) remote: Fields,
}

/// A local record, restricted to the mapped fields.
pub(crate) struct LocalRec {
    pub(crate) fields: Fields,
    pub(crate) deleted: bool,
    /// Fields with concurrent values in the registry left open under the
    /// `manual` policy: neither pushed nor overwritten until resolved.
    pub(crate) open: std::collections::BTreeSet<String>,
    /// Fields whose registry value breaks the schema (a validation
    /// conflict), with the rule: never pushed, and held like `open` ones.
    pub(crate) invalid: BTreeMap<String, String>,
}

/// What to store for a row once all of its writes succeeded.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Next {
    Keep(MergeBase),
    Drop,
}

pub(crate) struct Inputs<'a> {
    pub(crate) registry: &'a str,
    pub(crate) fields: &'a [String],
    pub(crate) schema: &'a CompiledSchema,
    pub(crate) policy: &'a dyn Fn(&str) -> ConflictPolicy,
    pub(crate) direction: Direction,
    pub(crate) key_field: Option<&'a str>,
    pub(crate) merge_bases: &'a HashMap<String, MergeBase>,
    pub(crate) local: &'a BTreeMap<String, LocalRec>,
    pub(crate) fetched: &'a Fetched,
    pub(crate) local_time: &'a dyn Fn(&str, &str) -> Option<i64>,
    pub(crate) take: Option<Side>,
    /// Fields the remote cannot leave empty, and what empty reads as
    /// ([`crate::Adapter::unset_reads_as`]).
    pub(crate) unset_reads_as: &'a BTreeMap<String, Value>,
    /// The record that holds a value of a unique field in the registry
    /// now, if any.
    pub(crate) unique_holder: &'a dyn Fn(&str, &Value) -> Option<String>,
}

pub(crate) struct Planned {
    pub(crate) rows: Vec<RowPlan>,
    pub(crate) invalid: Vec<InvalidRow>,
    /// New remote rows were left for a later pull: the cursor must not
    /// move past them.
    pub(crate) hold_cursor: bool,
}

/// A record id for a row first seen remotely: its own id when that is a
/// record id's form (a UUID or a name, see [`crate::Registry::put`]), else
/// `r-` and 32 hex digits derived from it — the same on every run, so a
/// create that is retried after a crash finds the record it made.
pub(crate) fn record_id_for(remote_id: &str) -> String {
    if crate::ids::record_id_form(remote_id).is_some() {
        remote_id.to_owned()
    } else {
        format!(
            "r-{}",
            &hex::encode(Sha256::digest(remote_id.as_bytes()))[..32]
        )
    }
}

/// The `hash` policy's key: the registry's content hash (no value: the
/// hash of nothing).
fn value_hash(v: Option<&Value>) -> [u8; 32] {
    v.map_or_else(|| Sha256::digest(b"").into(), Value::content_hash)
}

/// A remote row's values checked against the schema and put in canonical
/// form, or the first value that breaks it.
fn canonical(
    inputs: &Inputs<'_>,
    row: &RemoteRow,
    record: Option<&str>,
) -> Result<Fields, InvalidRow> {
    if let Some(reason) = &row.invalid {
        return Err(InvalidRow {
            remote_id: row.id.clone(),
            record: record.map(str::to_owned),
            field: String::new(),
            value: String::new(),
            reason: reason.clone(),
        });
    }
    let mut out = Fields::new();
    for field in inputs.fields {
        let Some(v) = row.fields.get(field) else {
            continue;
        };
        let shown = v.to_string();
        match inputs.schema.check_value(field, v.clone()) {
            Ok(v) => {
                // The remote's reading of "nothing written" for a row that
                // last held nothing there: no value, as before.
                let unset = inputs.unset_reads_as.get(field) == Some(&v)
                    && record
                        .and_then(|r| inputs.merge_bases.get(r))
                        .is_some_and(|s| !s.remote.contains_key(field));
                if unset {
                    continue;
                }
                out.insert(field.clone(), v);
            }
            Err(rule) => {
                return Err(InvalidRow {
                    remote_id: row.id.clone(),
                    record: record.map(str::to_owned),
                    field: field.clone(),
                    value: shown,
                    reason: rule.to_string(),
                });
            }
        }
    }
    Ok(out)
}

fn required_missing(inputs: &Inputs<'_>, remote_id: &str, fields: &Fields) -> Option<InvalidRow> {
    let def = inputs
        .schema
        .schema
        .fields
        .iter()
        .find(|d| d.required && !fields.contains_key(&d.name))?;
    let reason = if inputs.fields.contains(&def.name) {
        Rule::Required.to_string()
    } else {
        format!(
            "{}; the field is not mapped to a remote column, so map it or make it optional",
            Rule::Required
        )
    };
    Some(InvalidRow {
        remote_id: remote_id.to_owned(),
        record: None,
        field: def.name.clone(),
        value: String::new(),
        reason,
    })
}

/// Remote rows by id, checked against the schema and in canonical form,
/// with their modification times.
type Canonical<'a> = HashMap<&'a str, (Fields, Option<i64>)>;

pub(crate) fn plan(inputs: &Inputs<'_>) -> Planned {
    let mut invalid = Vec::new();
    let by_remote: HashMap<&str, &str> = inputs
        .merge_bases
        .iter()
        .map(|(rec, s)| (s.remote_id.as_str(), rec.as_str()))
        .collect();
    let (fetched, skipped) = canonical_rows(inputs, &by_remote, &mut invalid);
    let mut rows = bound_rows(inputs, &fetched, &skipped);
    let hold_cursor = first_seen_rows(inputs, &by_remote, &fetched, &mut rows, &mut invalid);
    check_planned(inputs, &mut rows, &mut invalid);
    let hold_cursor = hold_cursor || rows.iter().any(|r| r.hold);
    Planned {
        rows,
        invalid,
        hold_cursor,
    }
}

/// Canonical remote rows by id; invalid ones are reported (in `invalid`)
/// and skipped (their ids returned).
fn canonical_rows<'a>(
    inputs: &Inputs<'a>,
    by_remote: &HashMap<&str, &str>,
    invalid: &mut Vec<InvalidRow>,
) -> (Canonical<'a>, HashSet<&'a str>) {
    let mut fetched: Canonical<'a> = HashMap::new();
    let mut skipped: HashSet<&str> = HashSet::new();
    for row in &inputs.fetched.rows {
        let record = by_remote.get(row.id.as_str()).copied();
        match canonical(inputs, row, record) {
            Ok(fields) => {
                fetched.insert(row.id.as_str(), (fields, row.modified_at));
            }
            Err(bad) => {
                skipped.insert(row.id.as_str());
                invalid.push(bad);
            }
        }
    }
    (fetched, skipped)
}

/// Bound records, each against its remote row: as fetched, gone, or (not
/// in an incremental fetch) as last seen.
fn bound_rows(
    inputs: &Inputs<'_>,
    fetched: &Canonical<'_>,
    skipped: &HashSet<&str>,
) -> Vec<RowPlan> {
    let mut rows = Vec::new();
    let deleted_remote: HashSet<&str> = inputs.fetched.deleted.iter().map(String::as_str).collect();
    let mut snapped: Vec<&String> = inputs.merge_bases.keys().collect();
    snapped.sort();
    for record in snapped {
        let merge_base = &inputs.merge_bases[record];
        let rid = merge_base.remote_id.as_str();
        if skipped.contains(rid) {
            continue;
        }
        let remote: Option<(Fields, Option<i64>)> = if let Some(r) = fetched.get(rid) {
            Some(r.clone())
        } else if inputs.fetched.complete || deleted_remote.contains(rid) {
            None
        } else {
            Some((merge_base.remote.clone(), None))
        };
        let local = inputs
            .local
            .get(record)
            .filter(|l| !l.deleted)
            .map(|l| &l.fields);
        if let Some(row) = bound_row(inputs, record, merge_base, local, remote) {
            rows.push(row);
        }
    }
    rows
}

/// Rows seen for the first time: match them to local records by the key
/// field (or by id), so binding existing data duplicates nothing; the
/// others become records (when pulling), and unmatched records become rows
/// (when pushing). `true` if new remote rows were left for a later pull.
fn first_seen_rows(
    inputs: &Inputs<'_>,
    by_remote: &HashMap<&str, &str>,
    fetched: &Canonical<'_>,
    rows: &mut Vec<RowPlan>,
    invalid: &mut Vec<InvalidRow>,
) -> bool {
    let mut unbound_remote: Vec<&RemoteRow> = inputs
        .fetched
        .rows
        .iter()
        .filter(|r| !by_remote.contains_key(r.id.as_str()) && fetched.contains_key(r.id.as_str()))
        .collect();
    unbound_remote.sort_by(|a, b| a.id.cmp(&b.id));
    let unbound_local: Vec<(&String, &LocalRec)> = inputs
        .local
        .iter()
        .filter(|(id, l)| !l.deleted && !inputs.merge_bases.contains_key(*id))
        .collect();
    let mut by_key: HashMap<String, &String> = HashMap::new();
    if let Some(key) = inputs.key_field {
        for (id, l) in &unbound_local {
            if let Some(v) = l.fields.get(key) {
                by_key.entry(v.to_string()).or_insert(id);
            }
        }
    }
    let mut matched: HashSet<&String> = HashSet::new();
    let mut hold_cursor = false;
    for row in unbound_remote {
        let (fields, modified_at) = fetched[row.id.as_str()].clone();
        let partner = match inputs.key_field {
            Some(key) => fields
                .get(key)
                .and_then(|v| by_key.get(&v.to_string()))
                .copied(),
            None => {
                let id = record_id_for(&row.id);
                unbound_local
                    .iter()
                    .find(|(l, _)| **l == id)
                    .map(|(l, _)| *l)
            }
        }
        .filter(|l| !matched.contains(l));
        if let Some(record) = partner {
            matched.insert(record);
            let empty = MergeBase {
                remote_id: row.id.clone(),
                base: Fields::new(),
                remote: Fields::new(),
            };
            let local = &inputs.local[record].fields;
            if let Some(plan) = bound_row(
                inputs,
                record,
                &empty,
                Some(local),
                Some((fields, modified_at)),
            ) {
                rows.push(plan);
            }
            continue;
        }
        if !inputs.direction.pulls() {
            hold_cursor = true;
            continue;
        }
        if let Some(bad) = required_missing(inputs, &row.id, &fields) {
            invalid.push(bad);
            continue;
        }
        rows.push(new_record(inputs, &row.id, fields));
    }
    if inputs.direction.pushes() {
        for (record, l) in unbound_local {
            if !matched.contains(record) {
                // Values that break the schema stay in the registry.
                let mut fields = l.fields.clone();
                fields.retain(|f, _| !l.invalid.contains_key(f));
                rows.push(new_remote_row(record, &fields));
            }
        }
    }
    hold_cursor
}

/// Validate the rules that depend on other records against the registry
/// as the plan leaves it: a row whose pulled values would clear a required
/// field, or take a unique value that another record keeps (or that an
/// earlier row of the plan takes), is invalid: reported and skipped whole,
/// like a row that breaks a rule by itself, so it shows in a dry run and
/// never fails at write time.
fn check_planned(inputs: &Inputs<'_>, rows: &mut Vec<RowPlan>, invalid: &mut Vec<InvalidRow>) {
    let defs = &inputs.schema.schema.fields;
    let is = |field: &str, rule: fn(&crate::schema::FieldDef) -> bool| {
        defs.iter().any(|d| d.name == field && rule(d))
    };
    let pulled = |row: &RowPlan| match &row.local {
        Some((action, changes)) if *action != Action::Delete => Some((*action, changes.clone())),
        _ => None,
    };
    let reject =
        |row: &RowPlan, action: Action, c: &FieldChange, value: String, rule: Rule| InvalidRow {
            remote_id: row.remote_id.clone(),
            record: (action != Action::Create).then(|| row.record.clone()),
            field: c.field.clone(),
            value,
            reason: rule.to_string(),
        };
    // Required: a pulled change may not clear the field.
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows.drain(..) {
        let cleared = pulled(&row).and_then(|(action, changes)| {
            let c = changes
                .iter()
                .find(|c| c.new.is_none() && is(&c.field, |d| d.required))?;
            Some(reject(&row, action, c, String::new(), Rule::Required))
        });
        match cleared {
            Some(bad) => invalid.push(bad),
            None => kept.push(row),
        }
    }
    // Unique: against what the plan leaves in the records it changes.
    let mut after: HashMap<(String, String), Option<Value>> = HashMap::new();
    let mut deleted: HashSet<String> = HashSet::new();
    for row in &kept {
        match &row.local {
            Some((Action::Delete, _)) => {
                deleted.insert(row.record.clone());
            }
            Some((_, changes)) => {
                for c in changes.iter().filter(|c| is(&c.field, |d| d.unique)) {
                    after.insert((row.record.clone(), c.field.clone()), c.new.clone());
                }
            }
            None => {}
        }
    }
    let keeps = |record: &str, field: &str, v: &Value| {
        !deleted.contains(record)
            && after
                .get(&(record.to_owned(), field.to_owned()))
                .is_none_or(|now| now.as_ref() == Some(v))
    };
    let mut claimed: HashMap<(String, String), String> = HashMap::new();
    for row in kept {
        let mut taken = None;
        if let Some((action, changes)) = pulled(&row) {
            for c in changes.iter().filter(|c| is(&c.field, |d| d.unique)) {
                let Some(v) = &c.new else { continue };
                let key = (c.field.clone(), v.to_string());
                let other = claimed
                    .get(&key)
                    .filter(|r| **r != row.record)
                    .cloned()
                    .or_else(|| {
                        (inputs.unique_holder)(&c.field, v)
                            .filter(|h| *h != row.record && keeps(h, &c.field, v))
                    });
                if let Some(other_record) = other {
                    taken = Some(reject(
                        &row,
                        action,
                        c,
                        v.to_string(),
                        Rule::Unique { other_record },
                    ));
                    break;
                }
            }
            if taken.is_none() {
                for c in changes.iter().filter(|c| is(&c.field, |d| d.unique)) {
                    if let Some(v) = &c.new {
                        claimed.insert((c.field.clone(), v.to_string()), row.record.clone());
                    }
                }
            }
        }
        match taken {
            Some(bad) => invalid.push(bad),
            None => rows.push(row),
        }
    }
}

/// A record to create from remote row `remote_id`.
fn new_record(inputs: &Inputs<'_>, remote_id: &str, fields: Fields) -> RowPlan {
    let mut record = record_id_for(remote_id);
    if inputs.local.contains_key(&record) {
        // The id is taken by an unrelated record: derive a fresh one.
        record = format!(
            "r-{}",
            &hex::encode(Sha256::digest(format!(
                "{}\0{}",
                inputs.registry, remote_id
            )))[..32]
        );
    }
    RowPlan {
        record: record.clone(),
        remote_id: remote_id.to_owned(),
        local: Some((Action::Create, changes(&Fields::new(), &fields))),
        remote: None,
        conflicts: Vec::new(),
        hold: false,
        next: Next::Keep(MergeBase {
            remote_id: remote_id.to_owned(),
            base: fields.clone(),
            remote: fields,
        }),
    }
}

/// A remote row to create from local record `record`.
fn new_remote_row(record: &str, fields: &Fields) -> RowPlan {
    RowPlan {
        record: record.to_owned(),
        remote_id: record.to_owned(),
        local: None,
        remote: Some((Action::Create, changes(&Fields::new(), fields))),
        conflicts: Vec::new(),
        hold: false,
        next: Next::Keep(MergeBase {
            remote_id: record.to_owned(),
            base: fields.clone(),
            remote: fields.clone(),
        }),
    }
}

/// Field changes from `old` to `new`, over both maps' fields.
fn changes(old: &Fields, new: &Fields) -> Vec<FieldChange> {
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|f| old.get(*f) != new.get(*f))
        .map(|f| FieldChange {
            field: f.clone(),
            old: old.get(f).cloned(),
            new: new.get(f).cloned(),
        })
        .collect()
}

fn differs(a: &Fields, b: &Fields, fields: &[String]) -> bool {
    fields.iter().any(|f| a.get(f) != b.get(f))
}

/// The plan for one record known on both sides (or matched on first sync,
/// with an empty base). `None` when nothing changes, not even the merge base.
fn bound_row(
    inputs: &Inputs<'_>,
    record: &str,
    merge_base: &MergeBase,
    local: Option<&Fields>,
    remote: Option<(Fields, Option<i64>)>,
) -> Option<RowPlan> {
    let (push, pull) = (inputs.direction.pushes(), inputs.direction.pulls());
    let mut row = RowPlan {
        record: record.to_owned(),
        remote_id: merge_base.remote_id.clone(),
        local: None,
        remote: None,
        conflicts: Vec::new(),
        next: Next::Drop,
        hold: false,
    };
    match (local, remote) {
        (None, None) => Some(row), // deleted on both sides: forget it
        (None, Some((r, _))) => deleted_locally(inputs, row, merge_base, r),
        (Some(l), None) => deleted_remotely(inputs, row, merge_base, l),
        (Some(l), Some((r, modified_at))) => {
            let mut base = merge_base.base.clone();
            let mut seen = r.clone();
            let mut to_local = Vec::new();
            let mut to_remote = Vec::new();
            let open = inputs.local.get(record).map(|l| &l.open);
            for f in inputs.fields {
                let (b, lv, rv) = (merge_base.base.get(f), l.get(f), r.get(f));
                if open.is_some_and(|o| o.contains(f)) {
                    row.conflicts.push(FieldConflict {
                        field: f.clone(),
                        local: lv.cloned(),
                        remote: rv.cloned(),
                        policy: ConflictPolicy::Manual,
                        winner: None,
                        note: "concurrent values in the registry; resolve the conflict in the registry and the next run pushes the result".into(),
                    });
                    continue;
                }
                if let Some(rule) = inputs.local.get(record).and_then(|l| l.invalid.get(f)) {
                    row.conflicts.push(FieldConflict {
                        field: f.clone(),
                        local: lv.cloned(),
                        remote: rv.cloned(),
                        policy: ConflictPolicy::Manual,
                        winner: None,
                        note: format!("the registry's value breaks the schema ({rule}); write a valid value in the registry and the next run pushes it"),
                    });
                    continue;
                }
                if lv == rv {
                    set(&mut base, f, lv);
                    continue;
                }
                let (lc, rc) = (lv != b, rv != b);
                let winner = if lc && rc {
                    let policy = (inputs.policy)(f);
                    let winner = resolve(inputs, policy, record, f, lv, rv, modified_at);
                    row.conflicts.push(FieldConflict {
                        field: f.clone(),
                        local: lv.cloned(),
                        remote: rv.cloned(),
                        policy,
                        winner,
                        note: String::new(),
                    });
                    winner
                } else if lc {
                    Some(Side::Local)
                } else {
                    Some(Side::Remote)
                };
                match winner {
                    Some(Side::Local) if push => {
                        to_remote.push(FieldChange {
                            field: f.clone(),
                            old: rv.cloned(),
                            new: lv.cloned(),
                        });
                        set(&mut base, f, lv);
                        set(&mut seen, f, lv);
                    }
                    Some(Side::Remote) if pull => {
                        to_local.push(FieldChange {
                            field: f.clone(),
                            old: lv.cloned(),
                            new: rv.cloned(),
                        });
                        set(&mut base, f, rv);
                    }
                    // Not this direction, or an open manual conflict: the
                    // base stays, so the change is still seen next time.
                    _ => {}
                }
            }
            let next = MergeBase {
                remote_id: merge_base.remote_id.clone(),
                base,
                remote: seen,
            };
            if !to_local.is_empty() {
                row.local = Some((Action::Update, to_local));
            }
            if !to_remote.is_empty() {
                row.remote = Some((Action::Update, to_remote));
            }
            if row.local.is_none()
                && row.remote.is_none()
                && row.conflicts.is_empty()
                && next == *merge_base
            {
                return None;
            }
            row.next = Next::Keep(next);
            Some(row)
        }
    }
}

/// Records a delete on `deleted_on` against an edit on the other side: the
/// delete wins, except under `manual`, where the row waits until someone
/// settles it. Returns the winner (`None`: open).
fn delete_conflict(
    inputs: &Inputs<'_>,
    row: &mut RowPlan,
    deleted_on: Side,
    l: Option<&Fields>,
    r: Option<&Fields>,
) -> Option<Side> {
    let policy = (inputs.policy)("");
    let winner = match policy {
        ConflictPolicy::Manual => inputs.take,
        _ => Some(deleted_on),
    };
    row.conflicts.push(FieldConflict {
        field: "(record)".into(),
        local: l.map(|_| Value::Text("edited".into())),
        remote: r.map(|_| Value::Text("edited".into())),
        policy,
        winner,
        note: format!(
            "deleted {}, edited {}",
            deleted_on.place(),
            deleted_on.other().place()
        ),
    });
    winner
}

/// A bound record deleted in the registry whose remote row `r` is still
/// there (maybe edited since the merge base).
fn deleted_locally(
    inputs: &Inputs<'_>,
    mut row: RowPlan,
    merge_base: &MergeBase,
    r: Fields,
) -> Option<RowPlan> {
    let edited = differs(&r, &merge_base.base, inputs.fields);
    let winner = if edited {
        delete_conflict(inputs, &mut row, Side::Local, None, Some(&r))
    } else {
        Some(Side::Local)
    };
    if winner == Some(Side::Local) && inputs.direction.pushes() {
        row.remote = Some((Action::Delete, changes(&r, &Fields::new())));
        return Some(row);
    }
    if winner == Some(Side::Remote) {
        // Under manual with --take remote, nothing can undelete the
        // record; say so by leaving it open.
        if let Some(c) = row.conflicts.last_mut() {
            c.winner = None;
        }
    }
    row.next = Next::Keep(MergeBase {
        remote: r,
        ..merge_base.clone()
    });
    Some(row).filter(|r| !r.conflicts.is_empty())
}

/// A bound record whose remote row is gone, while the registry still has
/// it as `l` (maybe edited since the merge base).
fn deleted_remotely(
    inputs: &Inputs<'_>,
    mut row: RowPlan,
    merge_base: &MergeBase,
    l: &Fields,
) -> Option<RowPlan> {
    let edited = differs(l, &merge_base.base, inputs.fields);
    let winner = if edited {
        delete_conflict(inputs, &mut row, Side::Remote, Some(l), None)
    } else {
        Some(Side::Remote)
    };
    if winner == Some(Side::Remote) && inputs.direction.pulls() {
        row.local = Some((Action::Delete, changes(l, &Fields::new())));
        return Some(row);
    }
    if winner == Some(Side::Local) && inputs.direction.pushes() {
        // The edit wins over the remote delete: create the row again.
        row.remote = Some((Action::Create, changes(&Fields::new(), l)));
        row.next = Next::Keep(MergeBase {
            remote_id: merge_base.remote_id.clone(),
            base: l.clone(),
            remote: l.clone(),
        });
        return Some(row);
    }
    // The delete is not applied (a push-only run, or an open manual
    // conflict): keep the merge base and hold the cursor, so the
    // delete is seen again next time instead of being lost.
    row.next = Next::Keep(merge_base.clone());
    row.hold = true;
    Some(row)
}

fn set(fields: &mut Fields, f: &str, v: Option<&Value>) {
    match v {
        Some(v) => fields.insert(f.to_owned(), v.clone()),
        None => fields.remove(f),
    };
}

/// Settles a field changed differently on both sides. `automerge` and
/// `hash` pick the value with the lowest content hash (deterministic and
/// clock-free); `last-write-wins` the later write (ties by hash); `manual`
/// leaves it open unless the run was told which side to take.
fn resolve(
    inputs: &Inputs<'_>,
    policy: ConflictPolicy,
    record: &str,
    field: &str,
    local: Option<&Value>,
    remote: Option<&Value>,
    remote_time: Option<i64>,
) -> Option<Side> {
    let by_hash = || {
        if value_hash(local) <= value_hash(remote) {
            Side::Local
        } else {
            Side::Remote
        }
    };
    match policy {
        ConflictPolicy::Manual => inputs.take,
        ConflictPolicy::LastWriteWins => match ((inputs.local_time)(record, field), remote_time) {
            (Some(l), Some(r)) if l != r => Some(if l > r { Side::Local } else { Side::Remote }),
            _ => Some(by_hash()),
        },
        _ => Some(by_hash()),
    }
}
