//! The engine's state in the replica's SQLite file: bindings, per-record
//! merge bases (base and last-seen remote values) and cursors.

use std::collections::{BTreeSet, HashMap};

use rusqlite::{Connection, OptionalExtension, params};

use super::plan::{Fields, MergeBase};
use super::{PendingRow, PendingState, RemoteRow};
use crate::store::{StoreError, sql};
use crate::value::Value;

/// Values as tagged JSON, so a merge base reads back exactly as written
/// (`["i", 8080]`, `["d", "12.5"]`, `["s", ["a", "b"]]`, …).
fn encode(fields: &Fields) -> String {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| {
            let tagged = match v {
                Value::Text(s) => serde_json::json!(["t", s]),
                Value::Integer(i) => serde_json::json!(["i", i]),
                Value::Decimal(d) => serde_json::json!(["d", d]),
                Value::Bool(b) => serde_json::json!(["b", b]),
                Value::Set(s) => serde_json::json!(["s", s]),
                Value::Json(j) => serde_json::json!(["j", j]),
            };
            (k.clone(), tagged)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn decode(path: &str, text: &str) -> Result<Fields, StoreError> {
    let bad = || StoreError::corrupt(path, format!("merge base {text:?} does not decode"));
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|_| bad())?;
    let mut out = Fields::new();
    for (k, v) in json {
        let (tag, val) = match v.as_array().map(Vec::as_slice) {
            Some([tag, val]) => (tag.as_str().ok_or_else(bad)?.to_owned(), val.clone()),
            _ => return Err(bad()),
        };
        let value = match (tag.as_str(), val) {
            ("t", serde_json::Value::String(s)) => Value::Text(s),
            ("i", v) => Value::Integer(v.as_i64().ok_or_else(bad)?),
            ("d", serde_json::Value::String(s)) => Value::Decimal(s),
            ("b", serde_json::Value::Bool(b)) => Value::Bool(b),
            ("s", serde_json::Value::Array(items)) => Value::Set(
                items
                    .into_iter()
                    .map(|i| i.as_str().map(str::to_owned).ok_or_else(bad))
                    .collect::<Result<BTreeSet<_>, _>>()?,
            ),
            ("j", serde_json::Value::String(s)) => Value::Json(s),
            _ => return Err(bad()),
        };
        out.insert(k, value);
    }
    Ok(out)
}

fn merge_base_of(
    path: &str,
    remote_id: String,
    base: &str,
    remote: Option<&str>,
) -> Result<MergeBase, StoreError> {
    let base = decode(path, base)?;
    let remote = match remote {
        Some(text) => decode(path, text)?,
        None => base.clone(),
    };
    Ok(MergeBase {
        remote_id,
        base,
        remote,
    })
}

pub(crate) fn load_merge_bases(
    conn: &Connection,
    path: &str,
    binding: &str,
) -> Result<HashMap<String, MergeBase>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT record_id, remote_id, base, remote FROM adapter_rows WHERE binding = ?1",
        )
        .map_err(sql(path, "read merge bases"))?;
    let rows = stmt
        .query_map([binding], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .map_err(sql(path, "read merge bases"))?;
    let mut out = HashMap::new();
    for row in rows {
        let (record, remote_id, base, remote) = row.map_err(sql(path, "read merge bases"))?;
        out.insert(
            record,
            merge_base_of(path, remote_id, &base, remote.as_deref())?,
        );
    }
    Ok(out)
}

pub(crate) fn save_merge_base(
    conn: &Connection,
    path: &str,
    binding: &str,
    record: &str,
    merge_base: &MergeBase,
    now: i64,
) -> Result<(), StoreError> {
    // REPLACE also drops a stale claim of the same remote id by another
    // record (a remote id moves only with its record).
    let base = encode(&merge_base.base);
    let remote = if merge_base.remote == merge_base.base {
        base.clone()
    } else {
        encode(&merge_base.remote)
    };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO adapter_rows (binding, record_id, remote_id, base, remote, synced_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            binding,
            record,
            merge_base.remote_id,
            base,
            remote,
            now
        ])
    })
    .map(drop)
    .map_err(sql(path, "write merge base"))
}

/// Merge bases of the given records and of the records bound to the given
/// remote rows (indexed lookups: the cost follows what changed).
pub(crate) fn load_merge_bases_for(
    conn: &Connection,
    path: &str,
    binding: &str,
    records: &BTreeSet<String>,
    remote_ids: &BTreeSet<String>,
) -> Result<HashMap<String, MergeBase>, StoreError> {
    let mut out = HashMap::new();
    let read = |r: &rusqlite::Row<'_>| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    };
    let mut by_record = conn
        .prepare_cached(
            "SELECT record_id, remote_id, base, remote FROM adapter_rows
             WHERE binding = ?1 AND record_id = ?2",
        )
        .map_err(sql(path, "read merge bases"))?;
    let mut by_remote = conn
        .prepare_cached(
            "SELECT record_id, remote_id, base, remote FROM adapter_rows
             WHERE binding = ?1 AND remote_id = ?2",
        )
        .map_err(sql(path, "read merge bases"))?;
    let mut rows = Vec::new();
    for record in records {
        rows.extend(
            by_record
                .query_row(params![binding, record], read)
                .optional()
                .map_err(sql(path, "read merge bases"))?,
        );
    }
    for remote in remote_ids {
        rows.extend(
            by_remote
                .query_row(params![binding, remote], read)
                .optional()
                .map_err(sql(path, "read merge bases"))?,
        );
    }
    for (record, remote_id, base, remote) in rows {
        out.insert(
            record,
            merge_base_of(path, remote_id, &base, remote.as_deref())?,
        );
    }
    Ok(out)
}

/// The registry heads the last complete run covered (`None`: compare
/// every record next time).
pub(crate) fn local_heads(
    conn: &Connection,
    path: &str,
    binding: &str,
) -> Result<Option<Vec<automerge::ChangeHash>>, StoreError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT local_heads FROM adapter_bindings WHERE name = ?1",
            [binding],
            |r| r.get(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(sql(path, "read adapter heads"))?;
    Ok(text.and_then(|t| {
        t.split(',')
            .filter(|h| !h.is_empty())
            .map(|h| h.parse::<automerge::ChangeHash>().ok())
            .collect()
    }))
}

pub(crate) fn set_local_heads(
    conn: &Connection,
    path: &str,
    binding: &str,
    heads: Option<&[automerge::ChangeHash]>,
) -> Result<(), StoreError> {
    let text = heads.map(|h| {
        h.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    });
    conn.execute(
        "UPDATE adapter_bindings SET local_heads = ?2 WHERE name = ?1",
        params![binding, text],
    )
    .map(drop)
    .map_err(sql(path, "save adapter heads"))
}

pub(crate) fn drop_merge_base(
    conn: &Connection,
    path: &str,
    binding: &str,
    record: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM adapter_rows WHERE binding = ?1 AND record_id = ?2")
        .and_then(|mut s| s.execute(params![binding, record]))
        .map(drop)
        .map_err(sql(path, "drop merge base"))
}

pub(crate) fn set_cursor(
    conn: &Connection,
    path: &str,
    binding: &str,
    cursor: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE adapter_bindings SET cursor = ?2 WHERE name = ?1",
        params![binding, cursor],
    )
    .map(drop)
    .map_err(sql(path, "save adapter cursor"))
}

pub(crate) fn cursor(
    conn: &Connection,
    path: &str,
    binding: &str,
) -> Result<Option<String>, StoreError> {
    conn.query_row(
        "SELECT cursor FROM adapter_bindings WHERE name = ?1",
        [binding],
        |r| r.get::<_, Option<String>>(0),
    )
    .optional()
    .map(Option::flatten)
    .map_err(sql(path, "read adapter cursor"))
}

/// Whether binding `binding` has any bound row (an indexed probe).
pub(crate) fn has_merge_bases(
    conn: &Connection,
    path: &str,
    binding: &str,
) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM adapter_rows WHERE binding = ?1)",
        [binding],
        |r| r.get(0),
    )
    .map_err(sql(path, "read merge bases"))
}

pub(crate) fn merge_base_count(
    conn: &Connection,
    path: &str,
    binding: &str,
) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT count(*) FROM adapter_rows WHERE binding = ?1",
        [binding],
        |r| r.get(0),
    )
    .map_err(sql(path, "count merge bases"))
}

/// A row a run left unsettled, as stored between runs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StoredPending {
    pub(crate) remote_id: String,
    pub(crate) record: Option<String>,
    pub(crate) state: PendingState,
    pub(crate) reason: String,
    pub(crate) retryable: bool,
    /// What the remote held when the row was last fetched, for a row a
    /// pull must retry: its values (or that it was deleted).
    pub(crate) row: Option<StoredRow>,
    pub(crate) since: i64,
}

/// The remote side of a pending row as last fetched.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StoredRow {
    /// The row as fetched.
    Present(RemoteRow),
    /// The row was deleted.
    Deleted,
}

impl StoredPending {
    pub(crate) fn public(&self) -> PendingRow {
        PendingRow {
            remote_id: self.remote_id.clone(),
            record: self.record.clone(),
            state: self.state,
            reason: self.reason.clone(),
            retryable: self.retryable,
            since: self.since,
        }
    }
}

fn encode_row(row: &StoredRow) -> String {
    match row {
        StoredRow::Deleted => serde_json::json!({ "deleted": true }).to_string(),
        StoredRow::Present(r) => {
            let fields: serde_json::Value =
                serde_json::from_str(&encode(&r.fields)).expect("encode gives JSON");
            serde_json::json!({
                "fields": fields,
                "modified_at": r.modified_at,
                "invalid": r.invalid,
            })
            .to_string()
        }
    }
}

fn decode_row(path: &str, remote_id: &str, text: &str) -> Result<StoredRow, StoreError> {
    let bad = || StoreError::corrupt(path, format!("pending row {remote_id:?} does not decode"));
    let json: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
    if json["deleted"] == serde_json::Value::Bool(true) {
        return Ok(StoredRow::Deleted);
    }
    let fields = decode(path, &json["fields"].to_string())?;
    let mut row = RemoteRow::new(remote_id, fields).modified_at(json["modified_at"].as_i64());
    row.invalid = json["invalid"].as_str().map(str::to_owned);
    Ok(StoredRow::Present(row))
}

/// The rows binding `binding` left unsettled, by remote id.
pub(crate) fn pending(
    conn: &Connection,
    path: &str,
    binding: &str,
) -> Result<Vec<StoredPending>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT remote_id, record_id, state, reason, retryable, row, since
             FROM adapter_pending WHERE binding = ?1 ORDER BY remote_id",
        )
        .map_err(sql(path, "read pending rows"))?;
    let rows = stmt
        .query_map([binding], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })
        .map_err(sql(path, "read pending rows"))?;
    let mut out = Vec::new();
    for row in rows {
        let (remote_id, record, state, reason, retryable, row, since) =
            row.map_err(sql(path, "read pending rows"))?;
        let state = PendingState::from_name(&state).ok_or_else(|| {
            StoreError::corrupt(path, format!("pending row state {state:?} is unknown"))
        })?;
        let row = row
            .map(|text| decode_row(path, &remote_id, &text))
            .transpose()?;
        out.push(StoredPending {
            remote_id,
            record,
            state,
            reason,
            retryable,
            row,
            since,
        });
    }
    Ok(out)
}

/// Replaces binding `binding`'s pending rows with `rows`.
pub(crate) fn set_pending(
    conn: &Connection,
    path: &str,
    binding: &str,
    rows: &[StoredPending],
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM adapter_pending WHERE binding = ?1", [binding])
        .map_err(sql(path, "save pending rows"))?;
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO adapter_pending
                 (binding, remote_id, record_id, state, reason, retryable, row, since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(sql(path, "save pending rows"))?;
    for p in rows {
        stmt.execute(params![
            binding,
            p.remote_id,
            p.record,
            p.state.name(),
            p.reason,
            p.retryable,
            p.row.as_ref().map(encode_row),
            p.since,
        ])
        .map_err(sql(path, "save pending rows"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_read_back_exactly_as_written() {
        let fields: Fields = [
            ("a".to_owned(), Value::Text("x".into())),
            ("b".to_owned(), Value::Integer(-3)),
            ("c".to_owned(), Value::Decimal("12.5".into())),
            ("d".to_owned(), Value::Bool(true)),
            ("e".to_owned(), Value::from(["p", "q"])),
            ("f".to_owned(), Value::Json("{\"k\":1}".into())),
            ("g".to_owned(), Value::Text("12.5".into())),
        ]
        .into_iter()
        .collect();
        assert_eq!(decode("p", &encode(&fields)).unwrap(), fields);
        assert!(decode("p", "{\"a\":[\"i\",\"x\"]}").is_err());
        let mut row = RemoteRow::new("r", fields).modified_at(Some(7));
        row.invalid = Some("broken".into());
        for stored in [StoredRow::Present(row), StoredRow::Deleted] {
            assert_eq!(decode_row("p", "r", &encode_row(&stored)).unwrap(), stored);
        }
    }
}
