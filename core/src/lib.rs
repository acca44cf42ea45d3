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
//! A registry can also be mirrored to an external table through an
//! [`Adapter`] (Postgres behind the `postgres` feature, a Google Sheet
//! behind the `sheets` feature, or the in-memory [`MemoryAdapter`]): [`Replica::add_binding`] stores the binding and
//! [`Replica::sync_binding`] runs Fetch → Diff → Validate → Resolve → Apply,
//! or only plans it with [`AdapterSyncOptions::dry_run`].
//!
//! Replicas also sync over the network ([`Replica::sync_with`],
//! [`Replica::serve`], [`Replica::watch`]): connections are mutually
//! authenticated by the replicas' keys and encrypted (Noise), every message
//! is a signed envelope, Automerge's sync protocol finds what each side
//! lacks, and what arrives goes through the same verified import. A hub
//! serves each peer only the registries it is a member of;
//! [`Replica::subscribe`] tells an app when changes from peers land.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use chittysync::{FieldDef, FieldType, Replica, Role, Schema};
//! let dir = tempfile::tempdir()?;
//! let alice = Replica::open(dir.path().join("alice.db"))?;
//! let bob = Replica::open(dir.path().join("bob.db"))?;
//!
//! let schema = Schema::new().field(FieldDef::new("name", FieldType::Text).required());
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

mod adapters;
mod audit;
mod engine;
mod error;
mod exchange;
mod identity;
mod registry;
mod replica;
mod schema;
mod store;
mod sync;
mod trust;
mod value;

pub use adapters::memory::MemoryAdapter;
#[cfg(feature = "notion")]
pub use adapters::notion::{NotionAdapter, NotionOptions};
#[cfg(feature = "postgres")]
pub use adapters::postgres::{PostgresAdapter, PostgresOptions};
#[cfg(feature = "sheets")]
pub use adapters::sheets::{SheetsAdapter, SheetsOptions};
pub use adapters::{
    Adapter, AdapterError, BoxFuture, ChangeTracking, ColumnSpec, Fetched, RemoteColumn, RemoteRow,
    RemoteTable, RowError, RowOp, RowResult, TableSpec,
};
pub use audit::{AuditEntry, AuditQuery, Effect, SignatureStatus, export_jsonl};
pub use automerge::ChangeHash;
#[cfg(feature = "conformance")]
pub use engine::conformance;
pub use engine::{
    Action, AdapterBinding, AdapterProgress, AdapterSyncOptions, AdapterSyncReport, BindingAdded,
    Direction, EngineError, FieldChange, FieldConflict, InvalidRow, RowFailure, RowPlan, Side,
    Stage, SyncPlan,
};
pub use error::{
    ExportError, ImportError, LookupError, OpenError, ProveError, StoreError, WriteError,
};
pub use exchange::{Bundle, ImportReport};
pub use identity::{Identity, IdentityError, PublicKey};
pub use registry::{
    Candidate, Conflict, Member, Query, Record, Registry, RegistryId, RegistryInfo, Role,
    Tombstone, Writer,
};
pub use replica::{JournalEntry, Replica};
pub use schema::{
    ConflictPolicy, FieldDef, FieldType, RecordRule, Rule, Schema, SchemaError, ValidationError,
};
pub use sync::{
    ChangeSubscription, Hub, HubEvent, Peer, Progress, ProgressFn, RegistrySync, RemoteChanges,
    ServeOptions, SyncError, SyncOptions, SyncReport, Watch, WatchEvent,
};
pub use trust::SignedChange;
pub use trust::attest::{Attestation, Status};
pub use trust::tlog::{Checkpoint, ConsistencyProof, InclusionProof, LogError};
pub use trust::verify::{RegistryReport, VerifyError, VerifyReport};
pub use value::Value;
