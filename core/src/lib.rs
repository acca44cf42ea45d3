//! ChittySync keeps **registries** — tables of canonical records such as a
//! service registry, a project list or an incident log — identical
//! everywhere they live.
//!
//! Each registry is an Automerge document whose every change is signed with
//! its author's ed25519 key. A [`Replica`] is one SQLite file holding many
//! registries; replicas work offline and converge when they exchange signed
//! changes, here as [`Bundle`] files. Nothing unverified becomes visible: a
//! bundle with any bad signature, forged author or unauthorised change is
//! refused whole.
//!
//! A registry can also be mirrored to an external target through an
//! [`Adapter`]: the in-memory [`MemoryAdapter`] here, and Postgres, Notion
//! and Google Sheets in their own crates (`chittysync-postgres`,
//! `chittysync-notion`, `chittysync-sheets`; `chittysync-adapters` ships all
//! three as [`AdapterKinds`]). [`Replica::add_binding`] stores the binding
//! and [`Replica::run_mirror`] runs Fetch → Diff → Validate → Resolve →
//! Apply, or only plans it with [`MirrorOptions::dry_run`].
//!
//! Replicas also sync with peers over the network ([`Replica::sync_peer`],
//! [`Replica::serve`], [`Replica::watch`]): connections are mutually
//! authenticated by the replicas' keys and encrypted (Noise), every message
//! is a signed envelope, Automerge's sync protocol finds what each side
//! lacks, and what arrives goes through the same verified import. A hub
//! serves each peer only the registries it is a member of;
//! [`Replica::subscribe`] tells an app when changes from peers land.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use chittysync::{FieldDef, FieldKind, Replica, Role, Schema};
//! let dir = tempfile::tempdir()?;
//! let alice = Replica::open(dir.path().join("alice.db"))?;
//! let bob = Replica::open(dir.path().join("bob.db"))?;
//!
//! let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text).required());
//! let services = alice.create_registry("services", schema)?;
//! services.set_member(bob.public_key(), Role::Writer)?;
//! services.put(None, [("name", "billing")])?;
//!
//! // Carry the changes to Bob (as a file, or any other way).
//! bob.import(services.export(&[])?)?;
//! let bobs = bob.registry("services")?;
//! bobs.put(None, [("name", "search")])?;
//! alice.import(bobs.export(&services.heads())?)?;
//!
//! assert_eq!(services.heads(), bobs.heads());
//! assert_eq!(services.state_digest(), bobs.state_digest());
//! assert_eq!(services.len(), 2);
//! # Ok(()) }
//! ```

mod audit;
mod clock;
mod document;
mod error;
mod exchange;
mod identity;
mod ids;
mod mirror;
mod peer;
mod registry;
mod replica;
mod schema;
mod store;
mod tokens;
mod trust;
mod value;
mod verify;

pub use audit::{AuditEffect, AuditEntry, AuditFilter, SignatureStatus, export_jsonl};
pub use automerge::ChangeHash;
pub use error::{
    ExportError, ImportError, LookupError, OpenError, ProveError, StoreError, WriteError,
};
pub use exchange::{Bundle, ImportReport};
pub use identity::{Identity, IdentityError, PublicKey};
pub use ids::RegistryId;
#[cfg(any(test, feature = "conformance"))]
pub use mirror::conformance;
pub use mirror::{
    Action, Adapter, AdapterBinding, AdapterError, AdapterKind, AdapterKinds, BindingAdded,
    BoxFuture, ChangeTracking, ColumnSpec, Connect, Direction, Fetched, FieldChange, FieldConflict,
    InvalidRow, MemoryAdapter, MirrorError, MirrorOptions, MirrorOutcome, MirrorPlan,
    MirrorProgress, MirrorReport, MirrorRun, PendingRow, PendingState, RemoteColumn, RemoteRow,
    RemoteTable, RowError, RowFailure, RowOp, RowPlan, RowResult, SettingSpec, Side, Stage,
    TableSpec,
};
pub use peer::{
    Hub, HubEvent, HubMetrics, Peer, PeerError, PeerOptions, PeerRegistryReport, PeerReport,
    Progress, ProgressFn, ServeOptions, SessionLimits, Watch, WatchEvent,
};
pub use registry::{
    Candidate, Conflict, Member, Query, Record, Registry, RegistryInfo, Role, Tombstone, Writer,
};
pub use replica::{ChangeSubscription, JournalEntry, RemoteChanges, Replica};
pub use schema::{
    ConflictPolicy, FieldDef, FieldKind, RecordRule, Rule, Schema, SchemaError, ValidationError,
    coerce,
};
pub use tokens::{Token, TokenAdded, TokenError, TokenSession, TokenSpec};
pub use trust::SignedChange;
pub use trust::attest::{Attestation, AttestationStatus};
pub use trust::tlog::{Checkpoint, ConsistencyProof, InclusionProof, LogError};
pub use value::Value;
pub use verify::{RegistryReport, VerifyError, VerifyReport};
