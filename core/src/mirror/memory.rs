//! An in-memory table: the reference adapter for tests and examples.
//!
//! It behaves like a small remote system: rows with ids, a change log with
//! a cursor, echo suppression by origin, edits by "other clients", injected
//! faults and a count of mutating calls (to prove a dry run wrote nothing).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::adapter::{
    Adapter, AdapterError, BoxFuture, ChangeTracking, Fetched, RemoteColumn, RemoteRow,
    RemoteTable, RowError, RowOp, RowResult, TableSpec,
};
use crate::clock::now_ms;
use crate::value::Value;

type Fields = BTreeMap<String, Value>;

#[derive(Default)]
struct Table {
    rows: BTreeMap<String, (Fields, i64)>,
    /// (seq, row id, origin of the write: `None` for another client).
    log: Vec<(u64, String, Option<u64>)>,
    seq: u64,
    /// The next apply fails every op after this many (transiently).
    fail_after: Option<usize>,
    /// Writes to these row ids are refused as data errors.
    refuse: BTreeMap<String, String>,
    /// Mutating calls made by adapters (not by other clients).
    mutating_calls: u64,
    incremental: bool,
}

impl Table {
    fn logged(&mut self, id: &str, origin: Option<u64>) {
        self.seq += 1;
        self.log.push((self.seq, id.to_owned(), origin));
    }
}

static ORIGINS: AtomicU64 = AtomicU64::new(1);

/// An in-memory remote table. Clones share the table and the origin;
/// [`MemoryAdapter::another_client`] shares the table with a new origin.
///
/// Values are stored as given, without validation, like a loosely typed
/// remote system; the engine validates what it reads.
#[derive(Clone)]
pub struct MemoryAdapter {
    name: String,
    spec: Option<TableSpec>,
    table: Arc<Mutex<Table>>,
    origin: u64,
}

impl std::fmt::Debug for MemoryAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAdapter")
            .field("table", &self.name)
            .finish_non_exhaustive()
    }
}

impl MemoryAdapter {
    /// A new, empty table with change tracking.
    pub fn new(name: impl Into<String>) -> Self {
        MemoryAdapter {
            name: name.into(),
            spec: None,
            table: Arc::new(Mutex::new(Table {
                incremental: true,
                ..Table::default()
            })),
            origin: ORIGINS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The same table, without change tracking: every fetch is a full read.
    pub fn without_change_tracking(self) -> Self {
        self.lock().incremental = false;
        self
    }

    /// Describes columns by this spec (only used by [`Adapter::describe`]).
    pub fn with_spec(mut self, spec: TableSpec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// An adapter on the same table with its own origin, as a second
    /// binding (say, on another replica) would have: it sees this one's writes.
    pub fn another_client(&self) -> Self {
        MemoryAdapter {
            origin: ORIGINS.fetch_add(1, Ordering::Relaxed),
            ..self.clone()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Another application inserts or replaces a row.
    pub fn insert<I, K, V>(&self, id: &str, fields: I)
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<Value>,
    {
        let fields = fields
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let mut t = self.lock();
        t.rows.insert(id.to_owned(), (fields, now_ms()));
        t.logged(id, None);
    }

    /// Another application changes fields of a row (`None` clears one).
    pub fn update(&self, id: &str, fields: &[(&str, Option<Value>)]) {
        let mut t = self.lock();
        if let Some((row, at)) = t.rows.get_mut(id) {
            for (k, v) in fields {
                match v {
                    Some(v) => row.insert((*k).to_owned(), v.clone()),
                    None => row.remove(*k),
                };
            }
            *at = now_ms();
            t.logged(id, None);
        }
    }

    /// Another application deletes a row.
    pub fn remove(&self, id: &str) {
        let mut t = self.lock();
        if t.rows.remove(id).is_some() {
            t.logged(id, None);
        }
    }

    /// One row's values.
    pub fn row(&self, id: &str) -> Option<BTreeMap<String, Value>> {
        self.lock().rows.get(id).map(|(r, _)| r.clone())
    }

    /// Every row, by id.
    pub fn rows(&self) -> BTreeMap<String, BTreeMap<String, Value>> {
        self.lock()
            .rows
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    /// Makes the next [`Adapter::apply`] fail every op after the first `n`
    /// with a transient error, as a dropped connection mid-batch would.
    pub fn fail_after(&self, n: usize) {
        self.lock().fail_after = Some(n);
    }

    /// Makes writes of row `id` fail with a data error (like a constraint).
    pub fn refuse_writes_of(&self, id: &str, message: &str) {
        self.lock().refuse.insert(id.to_owned(), message.to_owned());
    }

    /// How many mutating calls adapters made on this table.
    pub fn mutating_calls(&self) -> u64 {
        self.lock().mutating_calls
    }

    fn fetch_now(&self, since: Option<&str>) -> Result<Fetched, AdapterError> {
        let t = self.lock();
        let row_of = |id: &str, (fields, at): &(Fields, i64)| {
            RemoteRow::new(id, fields.clone()).modified_at(Some(*at))
        };
        let cursor = t.incremental.then(|| t.seq.to_string());
        let since = match since.filter(|_| t.incremental) {
            None => {
                return Ok(Fetched {
                    rows: t.rows.iter().map(|(id, r)| row_of(id, r)).collect(),
                    deleted: Vec::new(),
                    complete: true,
                    cursor,
                });
            }
            Some(c) => c.parse::<u64>().map_err(|_| {
                AdapterError::Config(format!(
                    "cursor '{c}' is not a memory-table cursor; run a full sync"
                ))
            })?,
        };
        let mut changed: Vec<&str> = t
            .log
            .iter()
            .filter(|(seq, _, origin)| *seq > since && *origin != Some(self.origin))
            .map(|(_, id, _)| id.as_str())
            .collect();
        changed.sort_unstable();
        changed.dedup();
        let mut out = Fetched {
            complete: false,
            cursor,
            ..Fetched::default()
        };
        for id in changed {
            match t.rows.get(id) {
                Some(r) => out.rows.push(row_of(id, r)),
                None => out.deleted.push(id.to_owned()),
            }
        }
        Ok(out)
    }

    fn apply_now(&self, ops: &[RowOp]) -> Vec<RowResult> {
        let mut t = self.lock();
        t.mutating_calls += 1;
        let fail_after = t.fail_after.take();
        let mut out = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            if fail_after.is_some_and(|n| i >= n) {
                out.push(Err(RowError {
                    message: "connection lost mid-batch (injected fault); run the sync again"
                        .into(),
                    retryable: true,
                }));
                continue;
            }
            if let Some(msg) = t.refuse.get(op.id()) {
                out.push(Err(RowError {
                    message: msg.clone(),
                    retryable: false,
                }));
                continue;
            }
            let id = op.id().to_owned();
            match op {
                RowOp::Create { fields, .. } => {
                    t.rows.insert(id.clone(), (fields.clone(), now_ms()));
                }
                RowOp::Update { fields, .. } => {
                    let Some((row, at)) = t.rows.get_mut(&id) else {
                        out.push(Err(RowError {
                            message: format!("row {id} does not exist"),
                            retryable: false,
                        }));
                        continue;
                    };
                    for (k, v) in fields {
                        match v {
                            Some(v) => row.insert(k.clone(), v.clone()),
                            None => row.remove(k),
                        };
                    }
                    *at = now_ms();
                }
                RowOp::Delete { .. } => {
                    t.rows.remove(&id);
                }
            }
            t.logged(&id, Some(self.origin));
            out.push(Ok(id));
        }
        out
    }
}

impl Adapter for MemoryAdapter {
    fn system(&self) -> &str {
        "memory"
    }

    fn table(&self) -> &str {
        &self.name
    }

    fn prepare(&self, _create: bool) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        self.describe()
    }

    fn describe(&self) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        let incremental = self.lock().incremental;
        let columns = self.spec.as_ref().map_or_else(Vec::new, |s| {
            s.columns
                .iter()
                .map(|c| RemoteColumn {
                    name: c.column.clone(),
                    type_name: c.field_type.to_string(),
                })
                .collect()
        });
        let table = RemoteTable {
            name: self.name.clone(),
            columns,
            change_tracking: if incremental {
                ChangeTracking::Incremental
            } else {
                ChangeTracking::FullCompare {
                    reason: "this memory table keeps no change log".into(),
                }
            },
        };
        Box::pin(async move { Ok(table) })
    }

    fn fetch<'a>(&'a self, since: Option<&'a str>) -> BoxFuture<'a, Result<Fetched, AdapterError>> {
        Box::pin(async move { self.fetch_now(since) })
    }

    fn apply<'a>(
        &'a self,
        ops: &'a [RowOp],
    ) -> BoxFuture<'a, Result<Vec<RowResult>, AdapterError>> {
        Box::pin(async move { Ok(self.apply_now(ops)) })
    }
}
