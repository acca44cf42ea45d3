//! Exchange with other replicas: exporting changes, and verifying and
//! importing signed changes and attestations.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use automerge::{AutoCommit, Change, ChangeHash, ReadDoc};

use super::{DocState, History, PARALLEL_CHECKS_FROM, actor_of};
use crate::document::policy::Guard;
use crate::document::values::ValueCheck;
use crate::document::{Layout, Role};
use crate::error::{ExportError, ImportError};
use crate::exchange::{Bundle, ImportReport};
use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::schema::{CompiledSchema, ValidationError};
use crate::store::{ChangeRow, Store, StoreTx};
use crate::trust::{self, Distrust, SignedChange};

impl DocState {
    /// Verifies and stores attestations that came with a bundle. Those by
    /// keys that are not members are skipped; a bad signature refuses the
    /// whole bundle.
    pub(crate) fn import_attestations(
        &self,
        tx: &StoreTx<'_>,
        attestations: &[crate::trust::attest::Attestation],
    ) -> Result<usize, ImportError> {
        let members = self.layout.members(self.view(), None);
        let mut stored = 0;
        for a in attestations {
            if a.registry != self.id || !a.verify() {
                return Err(ImportError::BadSignature {
                    change: format!("attestation of {} changes", a.change_count),
                    author: a.member.to_string(),
                });
            }
            if members.iter().any(|(k, _)| *k == a.member) && tx.insert_attestation(a)? {
                stored += 1;
            }
        }
        Ok(stored)
    }

    pub(super) fn knows(&self, hash: &ChangeHash) -> bool {
        self.doc
            .get_missing_deps(std::slice::from_ref(hash))
            .is_empty()
    }

    pub(crate) fn export(
        &mut self,
        store: &Store,
        their_heads: &[ChangeHash],
    ) -> Result<Bundle, ExportError> {
        // Heads we do not know are their changes we lack; we cannot tell what
        // lies beneath them, so the bundle may carry changes they already
        // have. Import skips those (`already_known`), so this costs bytes,
        // never correctness.
        let have: Vec<ChangeHash> = their_heads
            .iter()
            .copied()
            .filter(|h| self.knows(h))
            .collect();
        let mut changes = self.doc.get_changes(&have);
        let hashes: Vec<[u8; 32]> = changes.iter().map(|c| c.hash().0).collect();
        let sigs = store.signatures(&self.id, &hashes)?;
        let mut out = Vec::with_capacity(changes.len());
        for change in changes.drain(..) {
            let hash = change.hash();
            let (key, signature) =
                sigs.get(&hash.0)
                    .ok_or_else(|| ExportError::MissingSignature {
                        registry: self.id.to_string(),
                        change: hash.to_string(),
                    })?;
            let author = PublicKey::from_bytes(key).map_err(|_| ExportError::MissingSignature {
                registry: self.id.to_string(),
                change: hash.to_string(),
            })?;
            out.push(SignedChange::new(change, author, *signature));
        }
        let attestations = crate::store::attestations(store.conn(), store.path(), &self.id)?;
        Ok(Bundle::new(self.id, out, attestations))
    }

    /// Verifies and applies signed changes from elsewhere in one transaction.
    /// Any bad change refuses the whole batch and leaves everything as before.
    pub(crate) fn import(
        &mut self,
        tx: &StoreTx<'_>,
        changes: Vec<SignedChange>,
    ) -> Result<ImportReport, ImportError> {
        self.catch_up(tx)?;
        let offered = changes.len();
        // A change listed twice is one change: keep it once.
        let mut seen = HashSet::new();
        let (fresh, others): (Vec<SignedChange>, Vec<SignedChange>) = changes
            .into_iter()
            .partition(|c| !self.knows(&c.hash()) && seen.insert(c.hash()));
        // A bundle is refused whole: a bad signature refuses it even when
        // it sits on a change this replica already holds, or on a copy.
        verify(&self.id, &others)?;
        let report = ImportReport {
            registry: self.id,
            name: self.name.clone(),
            applied: fresh.len(),
            already_known: offered - fresh.len(),
            created: false,
        };
        if fresh.is_empty() {
            return Ok(report);
        }
        self.refuse_unconnected(&fresh, &seen)?;
        let admin_changes = self.verify_and_apply(tx, &fresh)?;
        self.store_applied(tx, fresh, admin_changes)?;
        Ok(report)
    }

    /// Refuses a batch with a second root change or with dependencies
    /// neither known nor in the batch (`seen`), naming a bad signature
    /// first if there is one.
    fn refuse_unconnected(
        &self,
        fresh: &[SignedChange],
        seen: &HashSet<ChangeHash>,
    ) -> Result<(), ImportError> {
        if let Some(root) = fresh.iter().find(|c| c.change.deps().is_empty()) {
            verify(&self.id, std::slice::from_ref(root))?;
            return Err(ImportError::NotAuthorised {
                change: root.hash().to_string(),
                author: root.author.to_string(),
                reason: "a second root change: only the registry's genesis has no dependencies"
                    .into(),
            });
        }
        let mut missing: Vec<String> = fresh
            .iter()
            .flat_map(|c| c.change.deps().iter().copied())
            .filter(|d| !seen.contains(d) && !self.knows(d))
            .map(|d| d.to_string())
            .collect();
        if !missing.is_empty() {
            verify(&self.id, fresh)?;
            missing.sort();
            missing.dedup();
            return Err(ImportError::MissingDependencies {
                registry: self.id.to_string(),
                missing,
            });
        }
        Ok(())
    }

    /// Checks `fresh` (signatures, roles, what each change touches) and
    /// applies it to the document. Returns the changes that needed the admin
    /// role; on an error the document is as it was.
    fn verify_and_apply(
        &mut self,
        tx: &StoreTx<'_>,
        fresh: &[SignedChange],
    ) -> Result<Vec<ChangeHash>, ImportError> {
        // Signatures and the ops' targets need no document: check them on a
        // second thread while this one applies the batch to the document.
        // The registry stays locked meanwhile, so nothing unverified is ever
        // visible; on any failure the document is rebuilt from the store.
        let guard = Guard::new(&self.layout);
        let id = self.id;
        type Checked = Vec<(Option<&'static str>, Vec<automerge::legacy::Op>)>;
        let checks = || -> Result<Checked, ImportError> {
            verify(&id, fresh)?;
            // Decoding a change's operations panics on some malformed
            // ones: that refuses the bundle, like any malformed change.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fresh
                    .iter()
                    .map(|c| {
                        let ops = c.change.decode().operations;
                        (guard.admin_only_ops(&ops), ops)
                    })
                    .collect()
            }))
            .map_err(|_| ImportError::Malformed {
                reason: "a change's operations do not decode".into(),
            })
        };
        let apply = |doc: &mut AutoCommit| {
            // A signed change can still be one Automerge panics on: that is
            // a malformed change, refused like any other (the document is
            // rebuilt from the store below), never a panic of the caller.
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                doc.apply_changes(fresh.iter().map(|c| c.change.clone()))
            }));
            match applied {
                Ok(result) => result.map_err(|e| ImportError::Malformed {
                    reason: format!("a change does not apply: {e}"),
                }),
                Err(_) => Err(ImportError::Malformed {
                    reason: "a change does not apply: the document rejected it".into(),
                }),
            }
        };
        let (checked, applied) = if fresh.len() >= PARALLEL_CHECKS_FROM {
            std::thread::scope(|scope| {
                let checking = scope.spawn(checks);
                let applied = apply(&mut self.doc);
                let checked = checking.join().unwrap_or_else(|_| {
                    Err(ImportError::Malformed {
                        reason: "checking the bundle failed unexpectedly".into(),
                    })
                });
                (checked, applied)
            })
        } else {
            match checks() {
                Ok(checked) => (Ok(checked), apply(&mut self.doc)),
                Err(e) => return Err(e),
            }
        };
        let mut admin_changes = Vec::new();
        let outcome = checked.and_then(|checked| {
            applied?;
            let mut decoded = Vec::with_capacity(checked.len());
            fresh
                .iter()
                .zip(checked)
                .try_for_each(|(c, (admin_only, ops))| {
                    if admin_only.is_some() {
                        admin_changes.push(c.hash());
                    }
                    decoded.push((admin_only.is_some(), ops));
                    self.authorise(c, admin_only)
                })?;
            self.check_values(fresh, &decoded)
        });
        if let Err(e) = outcome {
            // Nothing was stored; rebuild the document as it was.
            self.reload(tx.conn(), tx.path())?;
            return Err(e);
        }
        Ok(admin_changes)
    }

    /// Checks the values each change writes against the schema as of its
    /// own dependencies (`doc` already holds the changes).
    fn check_values(
        &self,
        fresh: &[SignedChange],
        decoded: &[(bool, Vec<automerge::legacy::Op>)],
    ) -> Result<(), ImportError> {
        let mut check = ValueCheck::new(&self.layout);
        for (c, (admin, ops)) in fresh.iter().zip(decoded) {
            let broken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check.broken_value(&self.doc, &c.change, ops, *admin)
            }))
            .map_err(|_| ImportError::Malformed {
                reason: format!("change {}: its operations do not decode", c.hash()),
            })?;
            if let Some(b) = broken {
                return Err(ImportError::InvalidValue {
                    change: c.hash().to_string(),
                    author: c.author.to_string(),
                    error: Box::new(ValidationError {
                        registry: self.name.clone(),
                        record: b.record,
                        field: b.field,
                        value: b.value,
                        rule: b.rule,
                    }),
                });
            }
        }
        Ok(())
    }

    /// Stores the verified, applied `fresh` changes with their signatures
    /// and notes the admin ones; on a store error the document is reloaded.
    fn store_applied(
        &mut self,
        tx: &StoreTx<'_>,
        fresh: Vec<SignedChange>,
        admin_changes: Vec<ChangeHash>,
    ) -> Result<(), ImportError> {
        let mut rows: Vec<ChangeRow> = fresh
            .into_iter()
            .map(|c| row_of(&c.change, c.author, c.signature))
            .collect();
        self.clock = self
            .clock
            .max(rows.iter().map(|r| r.time).max().unwrap_or(0));
        let stored = tx.insert_changes(&self.id, &rows).and_then(|pos| {
            tx.insert_admin_changes(&self.id, &admin_changes)
                .map(|()| pos)
        });
        let pos = match stored {
            Ok(pos) => pos,
            Err(e) => {
                self.reload(tx.conn(), tx.path())?;
                return Err(e.into());
            }
        };
        self.loaded_pos = pos;
        let bytes = rows.iter().map(|r| r.bytes.len() as i64).sum();
        self.history.added(rows.len() as i64, bytes);
        rows.clear();
        self.admin_changes.extend(admin_changes);
        self.refresh_derived();
        Ok(())
    }
}

/// Verifies signatures and actor bindings of a batch, naming the first bad one.
pub(crate) fn verify(id: &RegistryId, changes: &[SignedChange]) -> Result<(), ImportError> {
    trust::verify_all(id, changes).map_err(|(i, why)| {
        let c = &changes[i];
        match why {
            Distrust::BadSignature => ImportError::BadSignature {
                change: c.hash().to_string(),
                author: c.author.to_string(),
            },
            Distrust::ForgedActor => ImportError::ForgedActor {
                change: c.hash().to_string(),
                actor: c.change.actor_id().to_hex_string(),
                author: c.author.to_string(),
            },
        }
    })
}

/// Builds the state of a registry this replica does not have yet from a
/// batch that starts at its genesis.
pub(crate) fn import_new(
    tx: &StoreTx<'_>,
    id: RegistryId,
    me: &PublicKey,
    changes: Vec<SignedChange>,
) -> Result<(DocState, ImportReport), ImportError> {
    let genesis = changes
        .iter()
        .find(|c| id.is_genesis(&c.hash()) && c.change.deps().is_empty())
        .ok_or_else(|| ImportError::UnknownRegistry {
            registry: id.to_string(),
        })?;
    verify(&id, &changes)?;
    let creator = genesis.author;
    let mut doc = AutoCommit::new().with_actor(actor_of(me));
    doc.apply_changes([genesis.change.clone()])
        .map_err(|e| ImportError::Malformed {
            reason: format!("the genesis does not apply: {e}"),
        })?;
    let bad_genesis = |reason: &str| ImportError::NotAuthorised {
        change: genesis.hash().to_string(),
        author: creator.to_string(),
        reason: format!("not a valid genesis: {reason}"),
    };
    let layout = Layout::find(&doc).ok_or_else(|| bad_genesis("it does not create a registry"))?;
    let members = layout.members(&doc, None);
    if members != [(creator, Role::Admin)] {
        return Err(bad_genesis("its only member must be its author, as admin"));
    }
    let name = layout.name(&doc);
    let created_at = layout.created_at(&doc);
    let schema = layout.read_schema(&doc);
    tx.insert_registry(&id, &name, created_at)?;
    let genesis_row = row_of(&genesis.change, genesis.author, genesis.signature);
    let pos = tx.insert_changes(&id, std::slice::from_ref(&genesis_row))?;
    let mut state = DocState {
        id,
        name,
        doc,
        schema: Arc::new(CompiledSchema::new(schema)),
        layout,
        loaded_pos: pos,
        seen_version: crate::store::data_version(tx.conn(), tx.path())?,
        clock: genesis_row.time,
        history: History::default(),
        unique: None,
        admin_changes: BTreeSet::from([genesis.hash()]),
        admin_write: false,
        revoked: Arc::default(),
        view: None,
    };
    tx.insert_admin_changes(&id, &[genesis.hash()])?;
    state.history.added(1, genesis_row.bytes.len() as i64);
    state.refresh_derived();
    let rest: Vec<SignedChange> = changes
        .into_iter()
        .filter(|c| c.hash().0 != genesis_row.hash)
        .collect();
    let mut report = state.import(tx, rest)?;
    report.applied += 1;
    report.created = true;
    Ok((state, report))
}

pub(super) fn row_of(change: &Change, author: PublicKey, signature: [u8; 64]) -> ChangeRow {
    ChangeRow {
        hash: change.hash().0,
        actor: change.actor_id().to_bytes().to_vec(),
        seq: change.seq(),
        start_op: change.start_op().get(),
        time: change.timestamp(),
        author: *author.as_bytes(),
        signature,
        // Uncompressed: storing must not pay for DEFLATE on every write;
        // compaction folds these into the compressed snapshot.
        bytes: change.raw_bytes().to_vec(),
    }
}
