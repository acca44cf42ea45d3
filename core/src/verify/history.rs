//! Re-checking one registry's stored history from its genesis: bytes,
//! hashes, actors, signatures (in parallel batches), genesis, roles as of
//! each change, revocations and the schema report.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use automerge::{AutoCommit, Change, ChangeHash, ObjId, ReadDoc, legacy};
use ed25519_dalek::{Signature, VerifyingKey};
use rusqlite::Connection;

use crate::document::policy::{
    Guard, Holder, creator_or_admin_at, foreign_record, foreign_record_in, legacy_obj,
};
use crate::document::{DELETED, read_value};
use crate::document::{Layout, Role};
use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::schema::{CompiledSchema, Rule, ValidationError};
use crate::store::{self, StoreError};
use crate::trust::signing_message;

use super::{RegistryReport, VerifyError};

/// A change as verified: from the stored row and the document.
struct Row {
    pos: i64,
    hash: [u8; 32],
    bytes: Option<Vec<u8>>,
    author: Vec<u8>,
    signature: Vec<u8>,
}

fn rows(conn: &Connection, path: &str, id: &RegistryId) -> Result<Vec<Row>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT pos, hash, bytes, author_key, signature FROM changes
             WHERE registry_id = ?1 ORDER BY pos",
        )
        .map_err(store::sql(path, "read changes"))?;
    stmt.query_map([id.as_bytes()], |r| {
        let hash: Vec<u8> = r.get(1)?;
        Ok(Row {
            pos: r.get(0)?,
            hash: hash.try_into().unwrap_or([0; 32]),
            bytes: r.get(2)?,
            author: r.get(3)?,
            signature: r.get(4)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(store::sql(path, "read changes"))
}

/// A change of the history, as the document records it.
struct Meta {
    hash: ChangeHash,
    actor: Vec<u8>,
    deps: Vec<ChangeHash>,
    seq: u64,
    max_op: u64,
}

/// From this many stored changes on, signatures are verified on a second
/// thread while this one checks the rest.
/// (Tiny under test, so that the tests run the parallel, chunked path.)
const PARALLEL_FROM: usize = if cfg!(test) { 2 } else { 512 };

/// Signatures per ed25519 batch: large enough that a batch costs about what
/// one batch of everything would, small enough for threads to share. Chunks
/// shrink towards [`MIN_CHUNK`] near the end, so the threads finish together.
const CHUNK: usize = if cfg!(test) { 3 } else { 4096 };
const MIN_CHUNK: usize = if cfg!(test) { 1 } else { 1024 };

/// The signature check of every stored row, in chunks that any thread may
/// take: each chunk is one ed25519 batch over (signing message of the row's
/// hash, the row's signature, the row's author key).
///
/// Once the history and the rows are shown to be the same set of changes,
/// each with its actor as its recorded author, this is the very set of
/// signatures the history needs. When any chunk fails, [`verify_signatures`]
/// runs over the history to name the first bad signature.
struct Batch<'a> {
    id: &'a RegistryId,
    rows: &'a [Row],
    next: AtomicUsize,
    failed: AtomicBool,
    stopped: AtomicBool,
}

impl<'a> Batch<'a> {
    fn new(id: &'a RegistryId, rows: &'a [Row]) -> Self {
        Batch {
            id,
            rows,
            next: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        }
    }

    /// Verifies chunks until none is left, one fails, or the check stops.
    fn run(&self) {
        while !self.failed.load(Ordering::Relaxed) && !self.stopped.load(Ordering::Relaxed) {
            let Some(chunk) = self.claim() else {
                return;
            };
            if !verify_chunk(self.id, &self.rows[chunk]) {
                self.failed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The next chunk no thread has taken: a quarter of what is left,
    /// within [`MIN_CHUNK`]..=[`CHUNK`].
    fn claim(&self) -> Option<std::ops::Range<usize>> {
        let len = self.rows.len();
        let mut start = self.next.load(Ordering::Relaxed);
        loop {
            if start >= len {
                return None;
            }
            let end = len.min(start + ((len - start) / 4).clamp(MIN_CHUNK, CHUNK));
            match self
                .next
                .compare_exchange_weak(start, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(start..end),
                Err(now) => start = now,
            }
        }
    }

    /// Abandons the chunks not started: the check already failed.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// After every `run` returned: whether every chunk verified.
    fn verified(&self) -> bool {
        !self.failed.load(Ordering::Relaxed) && !self.stopped.load(Ordering::Relaxed)
    }
}

/// One batch verification of `rows`' signatures; false if any does not
/// verify, or a key or signature is malformed.
fn verify_chunk(id: &RegistryId, rows: &[Row]) -> bool {
    let mut keys: HashMap<&[u8], VerifyingKey> = HashMap::new();
    let mut messages = Vec::with_capacity(rows.len());
    let mut signatures = Vec::with_capacity(rows.len());
    let mut verifying = Vec::with_capacity(rows.len());
    for row in rows {
        let Ok(signature) = <[u8; 64]>::try_from(row.signature.as_slice()) else {
            return false;
        };
        let key = match keys.get(row.author.as_slice()) {
            Some(k) => *k,
            None => {
                let Ok(k) = PublicKey::from_bytes(&row.author) else {
                    return false;
                };
                let k = k.verifying_key();
                keys.insert(&row.author, k);
                k
            }
        };
        messages.push(signing_message(id, &ChangeHash(row.hash)));
        signatures.push(Signature::from_bytes(&signature));
        verifying.push(key);
    }
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    ed25519_dalek::verify_batch(&refs, &signatures, &verifying).is_ok()
}

/// The history as checked before the signatures.
struct History<'r> {
    /// Its changes, in causal order.
    metas: Vec<Meta>,
    /// The stored row of each.
    stored: HashMap<[u8; 32], &'r Row>,
    /// The author of each change of `metas`.
    keys: Vec<PublicKey>,
    /// Distinct authors.
    authors: usize,
}

/// Re-checks one registry from its genesis.
///
/// The signatures are verified on a second thread (and on this one, once
/// its own checks are done) while this thread checks everything else; the
/// first problem reported is the one the checks would meet in this order:
/// stored bytes, history against rows, actors, signatures, genesis, roles.
pub(crate) fn verify_registry(
    conn: &Connection,
    path: &str,
    id: RegistryId,
) -> Result<RegistryReport, VerifyError> {
    let registry = id.to_string();
    let rows = rows(conn, path, &id)?;
    let snapshot = store::snapshot(conn, path, &id)?;
    let batch = Batch::new(&id, &rows);
    let parallel = rows.len() >= PARALLEL_FROM
        && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    std::thread::scope(|scope| {
        let helper = parallel.then(|| scope.spawn(|| batch.run()));
        let checked = check(&registry, id, &rows, snapshot);
        match &checked {
            Ok(_) => batch.run(),
            Err(_) => batch.stop(),
        }
        if let Some(helper) = helper
            && let Err(panic) = helper.join()
        {
            std::panic::resume_unwind(panic);
        }
        let (history, rest) = checked?;
        let rest = rest.and_then(|report| {
            let stored = store::admin_changes(conn, path, &id)?;
            if stored.is_empty() {
                // No index yet (stored before it existed): the next open
                // rebuilds it from the history, so nothing trusts it.
                return Ok(report);
            }
            let (missing, extra) = (
                report.admin_changes.difference(&stored).count(),
                stored.difference(&report.admin_changes).count(),
            );
            if missing + extra > 0 {
                return Err(VerifyError::AdminIndex {
                    registry: registry.clone(),
                    reason: format!("{missing} missing, {extra} unknown"),
                });
            }
            Ok(report)
        });
        if !batch.verified() {
            verify_signatures(
                &registry,
                &id,
                &history.metas,
                &history.stored,
                &history.keys,
            )?;
        }
        rest
    })
}

/// Every check of a registry but the signatures': those that come before
/// them fail this; the outcome of those after comes with the history.
fn check<'r>(
    registry: &str,
    id: RegistryId,
    rows: &'r [Row],
    snapshot: Option<Vec<u8>>,
) -> Result<(History<'r>, Result<RegistryReport, VerifyError>), VerifyError> {
    let registry = registry.to_owned();
    let mut doc = match snapshot {
        Some(data) => AutoCommit::load(&data).map_err(|e| VerifyError::Undecodable {
            registry: registry.clone(),
            pos: 0,
            reason: format!("the snapshot does not load: {e}"),
        })?,
        None => AutoCommit::new(),
    };

    // 1. Stored bytes decode and hash to their recorded hashes.
    let tail = decode_rows(&registry, rows)?;
    // Every change, to read writers' operations from: the snapshot's
    // rebuilt from the document in one pass (one by one, each would cost a
    // pass), the others as stored.
    let mut changes = doc.get_changes(&[]);
    changes.extend(tail.iter().cloned());
    doc.apply_changes(tail)
        .map_err(|e| VerifyError::Undecodable {
            registry: registry.clone(),
            pos: 0,
            reason: format!("stored changes do not apply: {e}"),
        })?;

    // A stored change whose dependency is not stored: that row was deleted.
    if let Some(missing) = doc.get_missing_deps(&[]).first() {
        return Err(VerifyError::Unsigned {
            registry,
            change: missing.to_string(),
        });
    }

    // 2. The history and the stored rows are the same set of changes.
    let metas: Vec<Meta> = doc
        .get_changes_meta(&[])
        .into_iter()
        .map(|m| Meta {
            hash: m.hash,
            actor: m.actor.to_bytes().to_vec(),
            deps: m.deps,
            seq: m.seq,
            max_op: m.max_op,
        })
        .collect();
    let stored: HashMap<[u8; 32], &Row> = rows.iter().map(|r| (r.hash, r)).collect();
    if let Some(missing) = metas.iter().find(|m| !stored.contains_key(&m.hash.0)) {
        return Err(VerifyError::Unsigned {
            registry,
            change: missing.hash.to_string(),
        });
    }
    let in_doc: HashSet<[u8; 32]> = metas.iter().map(|m| m.hash.0).collect();
    if let Some(row) = rows.iter().find(|r| !in_doc.contains(&r.hash)) {
        return Err(VerifyError::Missing {
            registry,
            pos: row.pos,
            change: hex::encode(row.hash),
        });
    }

    // 3. Actor = author (the signatures are checked by the caller).
    let (keys, authors) = check_actors(&registry, &metas, &stored)?;
    let history = History {
        authors,
        metas,
        stored,
        keys,
    };
    let rest = check_rest(&registry, id, &mut doc, &history, changes);
    Ok((history, rest))
}

/// Step 1: the stored changes after the snapshot, each decoded and
/// hashing to its recorded hash.
fn decode_rows(registry: &str, rows: &[Row]) -> Result<Vec<Change>, VerifyError> {
    let mut tail = Vec::new();
    for row in rows.iter() {
        let Some(bytes) = &row.bytes else { continue };
        let change = Change::from_bytes(bytes.clone()).map_err(|e| VerifyError::Undecodable {
            registry: registry.to_owned(),
            pos: row.pos,
            reason: e.to_string(),
        })?;
        // Automerge does not check a change's checksum (the hash's first
        // bytes, after the magic) when decoding; the hash does not cover it.
        let checksum_ok = bytes.get(4..8) == Some(&change.hash().0[..4]);
        if change.hash().0 != row.hash || !checksum_ok {
            return Err(VerifyError::ChangeHash {
                registry: registry.to_owned(),
                pos: row.pos,
                stored: hex::encode(row.hash),
                actual: change.hash().to_string(),
            });
        }
        tail.push(change);
    }
    Ok(tail)
}

/// Step 3: each change's actor is its stored author, a valid key. Returns
/// the author of each change and how many distinct authors there are.
fn check_actors(
    registry: &str,
    metas: &[Meta],
    stored: &HashMap<[u8; 32], &Row>,
) -> Result<(Vec<PublicKey>, usize), VerifyError> {
    let mut keys = Vec::with_capacity(metas.len());
    let mut decoded: HashMap<&[u8], PublicKey> = HashMap::new();
    for meta in metas {
        let row = stored[&meta.hash.0];
        if meta.actor != row.author {
            return Err(VerifyError::ForgedActor {
                registry: registry.to_owned(),
                pos: row.pos,
                change: meta.hash.to_string(),
                actor: hex::encode(&meta.actor),
                author: hex::encode(&row.author),
            });
        }
        let key = match decoded.get(row.author.as_slice()) {
            Some(k) => *k,
            None => {
                let k =
                    PublicKey::from_bytes(&row.author).map_err(|_| VerifyError::BadSignature {
                        registry: registry.to_owned(),
                        pos: row.pos,
                        change: meta.hash.to_string(),
                        author: hex::encode(&row.author),
                    })?;
                decoded.insert(&row.author, k);
                k
            }
        };
        keys.push(key);
    }
    Ok((keys, decoded.len()))
}

/// The checks after the signatures: genesis, roles, writers' operations,
/// and the schema report.
fn check_rest(
    registry: &str,
    id: RegistryId,
    doc: &mut AutoCommit,
    history: &History<'_>,
    changes: Vec<Change>,
) -> Result<RegistryReport, VerifyError> {
    // 4. One genesis, matching the id, whose only member is its author.
    let layout = check_genesis(registry, id, doc, &history.metas)?;
    // 5. Roles as of each change's dependencies.
    let admin_changes = check_roles(registry, doc, &layout, history, &changes)?;
    drop(changes);
    // 6. Revocations (strong removal), reported; the state is read with
    //    the revoked operations undone, as the registry reads it.
    let (revoked, view) = crate::document::revoke::revocations(doc, &layout, &admin_changes);
    let doc: &AutoCommit = view.as_ref().unwrap_or(doc);
    // 7. The schema, reported.
    let (name, records, invalid_records) = schema_report(doc, &layout);
    Ok(RegistryReport {
        id,
        name,
        changes: history.metas.len(),
        authors: history.authors,
        records,
        invalid_records,
        revoked,
        admin_changes,
    })
}

/// Step 4: the history has one genesis, matching the id, whose only member
/// is its author, as admin. Returns the document's layout.
fn check_genesis(
    registry: &str,
    id: RegistryId,
    doc: &AutoCommit,
    metas: &[Meta],
) -> Result<Layout, VerifyError> {
    let refuse = |reason: String| VerifyError::Genesis {
        registry: registry.to_owned(),
        reason,
    };
    let roots: Vec<&Meta> = metas.iter().filter(|m| m.deps.is_empty()).collect();
    let genesis = match roots.as_slice() {
        [g] if id.is_genesis(&g.hash) => g,
        [g] => {
            return Err(refuse(format!(
                "its root change {} does not match the registry id",
                g.hash
            )));
        }
        [] => return Err(refuse("it has no genesis change".into())),
        _ => {
            return Err(refuse(format!(
                "it has {} root changes; only one genesis is allowed",
                roots.len()
            )));
        }
    };
    let layout =
        Layout::find(doc).ok_or_else(|| refuse("the document is not a registry".into()))?;
    let creator = PublicKey::from_bytes(&genesis.actor).ok();
    let founding = layout.members(doc, Some(std::slice::from_ref(&genesis.hash)));
    if creator.is_none_or(|c| founding != [(c, Role::Admin)]) {
        return Err(refuse(
            "its genesis must make its author the only member, as admin".into(),
        ));
    }
    Ok(layout)
}

/// Step 5: every change's author held the role it needed as of the
/// change's dependencies, and a writer touched only what writers may.
/// Returns the changes that needed the admin role.
fn check_roles(
    registry: &str,
    doc: &mut AutoCommit,
    layout: &Layout,
    history: &History<'_>,
    changes: &[Change],
) -> Result<BTreeSet<ChangeHash>, VerifyError> {
    let History {
        metas,
        stored,
        keys,
        ..
    } = history;
    let heads = doc.get_heads();
    let doc = &*doc;
    let by_hash: HashMap<ChangeHash, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.hash(), i))
        .collect();
    let complete = metas.iter().all(|m| by_hash.contains_key(&m.hash));
    let ops = Ops::new(layout);
    let mut at_deps = AtDeps::new(&heads, &ops, metas, changes, complete);
    let mut roles: HashMap<(usize, PublicKey), Option<Role>> = HashMap::new();
    let mut writers = WriterCheck {
        doc,
        layout,
        guard: Guard::new(layout),
        rules: HashMap::new(),
        holders: HashMap::new(),
    };
    let mut admin_changes = BTreeSet::new();
    for (i, (meta, key)) in metas.iter().zip(keys).enumerate() {
        let state = at_deps.next(i, meta);
        let deps = &meta.deps;
        if deps.is_empty() {
            admin_changes.insert(meta.hash);
            continue;
        }
        let refuse = |reason: &str| VerifyError::NotAuthorised {
            registry: registry.to_owned(),
            pos: stored[&meta.hash.0].pos,
            change: meta.hash.to_string(),
            author: key.to_string(),
            reason: reason.to_owned(),
        };
        let role = match state {
            Some(s) => *roles
                .entry((s, *key))
                .or_insert_with(|| layout.role_at(doc, key, deps)),
            None => layout.role_at(doc, key, deps),
        };
        debug_assert_eq!(role, layout.role_at(doc, key, deps));
        let change = by_hash.get(&meta.hash).map(|&i| &changes[i]);
        match role {
            Some(Role::Admin) => {
                if change.is_some_and(|c| writers.guard.admin_only(c).is_some()) {
                    admin_changes.insert(meta.hash);
                }
            }
            Some(Role::Writer) => {
                let change = change.ok_or_else(|| refuse("the change cannot be read back"))?;
                if let Some(why) = writers.refusal(change, deps, key, state) {
                    return Err(refuse(&why));
                }
            }
            Some(Role::Reader) => return Err(refuse("readers cannot write")),
            None => return Err(refuse("not a member of the registry")),
        }
    }
    Ok(admin_changes)
}

/// What step 5 checks of a writer's change, with what it looked up once
/// for many changes.
struct WriterCheck<'d> {
    doc: &'d AutoCommit,
    layout: &'d Layout,
    guard: Guard,
    /// Whether the `creator-or-admin` rule holds, per document state.
    rules: HashMap<usize, bool>,
    /// The record holding each object, shared across changes.
    holders: HashMap<legacy::OpId, Holder>,
}

impl WriterCheck<'_> {
    /// Why a writer may not make `change`, if they may not. `state` names
    /// the document state at the change's dependencies, when known.
    fn refusal(
        &mut self,
        change: &Change,
        deps: &[ChangeHash],
        author: &PublicKey,
        state: Option<usize>,
    ) -> Option<String> {
        let (doc, layout) = (self.doc, self.layout);
        let operations = change.decode().operations;
        if let Some(why) = self.guard.admin_only_ops(&operations) {
            return Some(why.to_owned());
        }
        let rule = match state {
            Some(s) => *self
                .rules
                .entry(s)
                .or_insert_with(|| creator_or_admin_at(doc, layout, deps)),
            None => creator_or_admin_at(doc, layout, deps),
        };
        let foreign = if rule {
            foreign_record_in(doc, layout, &operations, deps, author, &mut self.holders)
        } else {
            None
        };
        debug_assert_eq!(foreign, foreign_record(doc, layout, change, author));
        foreign
            .map(|record| format!("record {record} may be changed only by its creator or an admin"))
    }
}

/// Step 7: the registry's name, how many live records it holds, and the
/// values that break its schema.
fn schema_report(doc: &AutoCommit, layout: &Layout) -> (String, usize, Vec<ValidationError>) {
    let compiled = CompiledSchema::new(layout.read_schema(doc));
    let name = layout.name(doc);
    let mut invalid_records = Vec::new();
    let mut records = 0;
    // Unique values seen, with the record that holds each.
    let mut taken: HashMap<(String, String), String> = HashMap::new();
    // Each record and each record's fields read in one pass (a `get` per
    // record and per field costs a look-up each).
    for item in doc.map_range(&layout.records, ..) {
        let obj = item.id();
        let record = item.key.into_owned();
        let fields: HashMap<String, (automerge::Value<'_>, ObjId)> = doc
            .map_range(&obj, ..)
            .map(|f| {
                let id = f.id();
                (f.key.into_owned(), (f.value.into_value(), id))
            })
            .collect();
        let deleted = fields.contains_key(DELETED);
        debug_assert_eq!(deleted, doc.get(&obj, DELETED).ok().flatten().is_some());
        if deleted {
            continue;
        }
        records += 1;
        for def in &compiled.schema.fields {
            let value = fields
                .get(def.name.as_str())
                .and_then(|(v, vid)| read_value(doc, v, vid, Some(def.field_type)));
            debug_assert_eq!(
                value,
                match doc.get(&obj, def.name.as_str()) {
                    Ok(Some((v, vid))) => read_value(doc, &v, &vid, Some(def.field_type)),
                    _ => None,
                }
            );
            let broken = match value {
                None if def.required => Some((String::new(), Rule::Required)),
                None => None,
                Some(v) => match compiled.check_value(&def.name, v.clone()) {
                    Err(rule) => Some((v.to_string(), rule)),
                    Ok(_) if def.unique => taken
                        .insert((def.name.clone(), v.to_string()), record.clone())
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
                invalid_records.push(ValidationError {
                    registry: name.clone(),
                    record: record.clone(),
                    field: def.name.clone(),
                    value,
                    rule,
                });
            }
        }
    }
    (name, records, invalid_records)
}

/// The document's fixed objects as operations name them.
struct Ops {
    /// What roles and the record rule are read from.
    read_at_deps: [legacy::ObjectId; 2],
}

impl Ops {
    fn new(layout: &Layout) -> Self {
        Ops {
            read_at_deps: [legacy_obj(&layout.members), legacy_obj(&layout.schema)],
        }
    }
}

/// Which state of the members and schema maps each change's dependencies
/// see, so that reads there (`Layout::role_at`, the record rule) are made
/// once per state rather than once per change.
///
/// A read at `deps` (`get_at`, `map_range_at`) computes the vector clock of
/// `deps` — per actor, the highest sequence number among `deps` and their
/// ancestors, mapped to that change's max op — and sees an op on the map iff
/// the clock covers its id and none of its successors (ops on the same map).
/// So what it reads depends only on which of the maps' ops the clock covers.
/// In one pass over the history in causal order, this computes each
/// change's clock exactly so, restricted to the actors who wrote those maps,
/// and numbers the distinct sets of covered ops: equal numbers, equal reads.
struct AtDeps {
    /// Whether the states are known; if not, every read is made.
    enabled: bool,
    /// Each watched op: its actor's slot and its counter.
    ops: Vec<(usize, u64)>,
    /// Slots of the actors who wrote watched ops.
    slots: HashMap<Vec<u8>, usize>,
    /// Per slot, the max op of each of its changes by sequence number.
    max_ops: Vec<Vec<u64>>,
    /// Position of each change in the history.
    index: HashMap<ChangeHash, usize>,
    /// Per change, its own clock (itself included) over the slots; `None`
    /// when not computed.
    clocks: Vec<Option<Box<[u64]>>>,
    /// The current heads: reads there use no clock.
    heads: HashSet<ChangeHash>,
    /// The distinct sets of covered ops seen, numbered.
    states: HashMap<Vec<u64>, usize>,
}

/// More actors than this wrote the members or schema maps: the clocks are
/// not worth keeping, every read is made.
const MAX_SLOTS: usize = 64;

impl AtDeps {
    /// `changes` must include every change of `metas` (`complete`), or
    /// every read is made.
    fn new(
        heads: &[ChangeHash],
        ops: &Ops,
        metas: &[Meta],
        changes: &[Change],
        complete: bool,
    ) -> Self {
        let mut at = AtDeps {
            enabled: complete,
            ops: Vec::new(),
            slots: HashMap::new(),
            max_ops: Vec::new(),
            index: metas.iter().enumerate().map(|(i, m)| (m.hash, i)).collect(),
            clocks: vec![None; metas.len()],
            heads: heads.iter().copied().collect(),
            states: HashMap::new(),
        };
        for change in changes {
            let operations = change.decode().operations;
            if operations.len() != change.len() {
                at.enabled = false;
            }
            let actor = change.actor_id().to_bytes();
            for (k, op) in operations.iter().enumerate() {
                if ops.read_at_deps.contains(&op.obj) {
                    let next = at.slots.len();
                    let slot = *at.slots.entry(actor.to_vec()).or_insert(next);
                    at.ops.push((slot, change.start_op().get() + k as u64));
                }
            }
        }
        at.max_ops = vec![Vec::new(); at.slots.len()];
        for meta in metas {
            if let Some(&slot) = at.slots.get(&meta.actor) {
                let seqs = &mut at.max_ops[slot];
                // Sequence numbers run 1, 2, 3, … per actor, in causal order.
                if meta.seq != seqs.len() as u64 + 1 {
                    at.enabled = false;
                }
                seqs.push(meta.max_op);
            }
        }
        if at.slots.len() > MAX_SLOTS {
            at.enabled = false;
        }
        at
    }

    /// The state change `i` of the history (`meta`) reads at its
    /// dependencies, if known. Call for every change, in history order.
    fn next(&mut self, i: usize, meta: &Meta) -> Option<usize> {
        if !self.enabled {
            return None;
        }
        let mut clock = vec![0u64; self.slots.len()].into_boxed_slice();
        let mut known = true;
        for dep in &meta.deps {
            match self.index.get(dep).and_then(|&j| self.clocks[j].as_ref()) {
                Some(theirs) => {
                    for (mine, theirs) in clock.iter_mut().zip(theirs.iter()) {
                        *mine = (*mine).max(*theirs);
                    }
                }
                None => known = false,
            }
        }
        let current = !meta.deps.is_empty()
            && meta.deps.len() >= self.heads.len()
            && meta.deps.iter().collect::<HashSet<_>>() == self.heads.iter().collect();
        let state = (known && !current).then(|| {
            let mut covered = vec![0u64; self.ops.len().div_ceil(64)];
            for (k, &(slot, counter)) in self.ops.iter().enumerate() {
                let seq = clock[slot];
                let max_op = match seq {
                    0 => 0,
                    s => self.max_ops[slot].get(s as usize - 1).copied().unwrap_or(0),
                };
                if max_op >= counter {
                    covered[k / 64] |= 1 << (k % 64);
                }
            }
            let next = self.states.len();
            *self.states.entry(covered).or_insert(next)
        });
        if known {
            if let Some(&slot) = self.slots.get(&meta.actor) {
                clock[slot] = clock[slot].max(meta.seq);
            }
            self.clocks[i] = Some(clock);
        }
        state
    }
}

/// Verifies every signature of the history, in its order, and names the
/// first bad one.
fn verify_signatures(
    registry: &str,
    id: &RegistryId,
    metas: &[Meta],
    stored: &HashMap<[u8; 32], &Row>,
    keys: &[PublicKey],
) -> Result<(), VerifyError> {
    let messages: Vec<Vec<u8>> = metas.iter().map(|m| signing_message(id, &m.hash)).collect();
    let mut signatures = Vec::with_capacity(metas.len());
    for meta in metas {
        let row = stored[&meta.hash.0];
        let bytes: [u8; 64] =
            row.signature
                .as_slice()
                .try_into()
                .map_err(|_| VerifyError::BadSignature {
                    registry: registry.to_owned(),
                    pos: row.pos,
                    change: meta.hash.to_string(),
                    author: hex::encode(&row.author),
                })?;
        signatures.push(Signature::from_bytes(&bytes));
    }
    let verifying: Vec<_> = {
        let mut cache = HashMap::new();
        keys.iter()
            .map(|k| *cache.entry(*k).or_insert_with(|| k.verifying_key()))
            .collect()
    };
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    if ed25519_dalek::verify_batch(&refs, &signatures, &verifying).is_ok() {
        return Ok(());
    }
    for (i, meta) in metas.iter().enumerate() {
        if verifying[i]
            .verify_strict(&messages[i], &signatures[i])
            .is_err()
        {
            let row = stored[&meta.hash.0];
            return Err(VerifyError::BadSignature {
                registry: registry.to_owned(),
                pos: row.pos,
                change: meta.hash.to_string(),
                author: hex::encode(&row.author),
            });
        }
    }
    Err(VerifyError::BadSignature {
        registry: registry.to_owned(),
        pos: 0,
        change: "(batch)".into(),
        author: "(several)".into(),
    })
}
