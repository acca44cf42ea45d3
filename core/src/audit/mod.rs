//! The audit log: a registry's signed change history told in registry
//! terms — who created, changed or deleted which record, field, member or
//! schema entry, from what to what, and whether the change's signature
//! still verifies.
//!
//! Every change of the history is listed, including those folded into a
//! compacted snapshot (the document keeps them; the store keeps their
//! signatures). What a change did is read from the document itself: the
//! state at the change's dependencies against the state just after it, so
//! concurrent changes never blur each other's effects.
//!
//! The parts: `entry` (the entries and effects, their JSON and text, and
//! JSON Lines export), `query` (which changes are listed and how their
//! signatures are checked), `touched` (where each change operated, in
//! registry terms) and `effects` (what it did there: the values before and
//! after).

mod effects;
mod entry;
mod query;
mod touched;

use automerge::ChangeHash;

pub use entry::{AuditEffect, AuditEntry, SignatureStatus, export_jsonl};
pub use query::AuditFilter;

/// A change of the history, from the document.
struct Meta {
    hash: ChangeHash,
    actor: Vec<u8>,
    deps: Vec<ChangeHash>,
    time: i64,
    message: Option<String>,
}

#[cfg(test)]
mod tests;
