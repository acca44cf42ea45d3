//! Error types, one per area. Each says what failed, where, and what to do.

use crate::identity::IdentityError;
use crate::schema::{SchemaError, ValidationError};
pub use crate::store::StoreError;

/// A replica could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The identity key file is missing, unreadable or unsafe.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The SQLite store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The directory for the replica could not be created.
    #[error("cannot create the replica directory {path}: {reason}")]
    Directory {
        /// The directory.
        path: String,
        /// The system's reason.
        reason: String,
    },
}

/// A registry could not be found by the name or id given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// No registry has this name or id here.
    #[error(
        "no registry named '{name}' in this replica; check the name against the registries it holds, or import a bundle that carries it"
    )]
    NotFound {
        /// What was looked up.
        name: String,
    },
    /// Several registries share the name.
    #[error("several registries are named '{name}' ({}); use the id instead", ids.join(", "))]
    Ambiguous {
        /// What was looked up.
        name: String,
        /// The ids of the registries with that name.
        ids: Vec<String>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A local write was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A value breaks the schema.
    #[error(transparent)]
    Invalid(Box<ValidationError>),
    /// A schema is inconsistent, or a change to it is not allowed.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The record does not exist (a UUID names only records the registry
    /// made, so writing to one that names none creates nothing).
    #[error(
        "registry '{registry}': no record {record}; check the id against the registry's records (a new record gets its id from the registry when written without one)"
    )]
    NotFound {
        /// The registry's name.
        registry: String,
        /// The record id.
        record: String,
    },
    /// The record was deleted; deleted records are not written.
    #[error("registry '{registry}': record {record} is deleted; create a new record instead")]
    Deleted {
        /// The registry's name.
        registry: String,
        /// The record id.
        record: String,
    },
    /// A record id the registry could never have made.
    #[error(
        "'{id}' is not a usable record id: use the UUID the registry made, or a name of 1–128 ASCII letters, digits and . _ - : @ that starts with a letter or digit and has no '..'"
    )]
    BadRecordId {
        /// The id.
        id: String,
    },
    /// This replica's key lacks the role the write needs.
    #[error("registry '{registry}': key {key} is {} but this needs {needed}; an admin of the registry must give key {key} the {needed} role", role.as_deref().unwrap_or("not a member"))]
    NotPermitted {
        /// The registry's name.
        registry: String,
        /// This replica's key.
        key: String,
        /// Its role, if any.
        role: Option<String>,
        /// The role needed.
        needed: String,
    },
    /// Under the registry's `creator-or-admin` rule, the record is someone else's.
    #[error(
        "registry '{registry}': record {record} was created by {creator}; only its creator or an admin may change it"
    )]
    NotOwner {
        /// The registry's name.
        registry: String,
        /// The record id.
        record: String,
        /// The record's creator.
        creator: String,
    },
    /// The write would leave the registry without an admin.
    #[error(
        "registry '{registry}': that would remove its last admin; make another member admin first"
    )]
    LastAdmin {
        /// The registry's name.
        registry: String,
    },
    /// The registry changed since the caller read it (see
    /// [`Writer::expect_heads`](crate::Writer::expect_heads)); nothing was
    /// written.
    #[error("registry '{registry}' changed since it was read; read it again, then retry the write")]
    Stale {
        /// The registry's name.
        registry: String,
    },
    /// The store failed; the write did not happen.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug: the document refused an operation the library built.
    #[error("internal error, please report it: {0}")]
    Internal(String),
}

impl From<ValidationError> for WriteError {
    fn from(e: ValidationError) -> Self {
        WriteError::Invalid(Box::new(e))
    }
}

/// A bundle was refused whole; nothing from it became visible.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The bundle's bytes do not decode.
    #[error("the bundle is malformed: {reason}; export it again")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// A signature does not verify.
    #[error(
        "change {change} has a bad signature for key {author}; the bundle was altered or forged and is refused whole"
    )]
    BadSignature {
        /// The change's hash.
        change: String,
        /// The key it claims.
        author: String,
    },
    /// A change is signed by a key other than its actor's.
    #[error(
        "change {change} is by actor {actor} but signed by key {author}; forged changes are refused with their whole bundle"
    )]
    ForgedActor {
        /// The change's hash.
        change: String,
        /// Its actor id.
        actor: String,
        /// The signing key.
        author: String,
    },
    /// The author lacked the role the change needs.
    #[error("change {change} by {author} is not authorised: {reason}; the bundle is refused whole")]
    NotAuthorised {
        /// The change's hash.
        change: String,
        /// Its author's key.
        author: String,
        /// Why.
        reason: String,
    },
    /// A change writes a value that breaks the schema as of its own
    /// dependencies (its type, min/max, options, pattern, url or email
    /// form, or a field the schema did not have): refused like a forged
    /// change, the same on every replica.
    #[error(
        "change {change} by {author} breaks the schema as of its dependencies: {error}; the bundle is refused whole — its author must write a valid value and send it again"
    )]
    InvalidValue {
        /// The change's hash.
        change: String,
        /// Its author's key.
        author: String,
        /// The record, field, value and rule.
        error: Box<ValidationError>,
    },
    /// Changes depend on history neither the bundle nor this replica has.
    #[error("registry {registry}: the bundle depends on {} change(s) this replica lacks (first: {}); export again from those heads or with all changes", missing.len(), missing.first().map(String::as_str).unwrap_or("?"))]
    MissingDependencies {
        /// The registry id.
        registry: String,
        /// Hashes of the missing changes.
        missing: Vec<String>,
    },
    /// The bundle is for a registry this replica lacks, without its genesis.
    #[error(
        "registry {registry} is not in this replica and the bundle lacks its genesis; export it with all changes"
    )]
    UnknownRegistry {
        /// The registry id.
        registry: String,
    },
    /// The bundle file could not be read.
    #[error("bundle file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The store failed; nothing was imported.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A checkpoint or proof could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    /// The change is not in this replica's log.
    #[error(
        "change {change} is not in this replica's log; only changes this replica holds can be proved (the audit log lists them)"
    )]
    UnknownChange {
        /// The change's hash.
        change: String,
    },
    /// The requested tree size is beyond the log, or no checkpoint exists.
    #[error(
        "the log has {log} entries, so there is no tree of size {size}; sign a checkpoint of the log first"
    )]
    BadSize {
        /// The size asked for.
        size: u64,
        /// The log's length.
        log: u64,
    },
    /// Building or signing the proof failed.
    #[error(transparent)]
    Log(#[from] crate::trust::tlog::LogError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Changes could not be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A change has no stored signature (the store is damaged).
    #[error(
        "registry {registry}: change {change} has no stored signature; verify the replica to find every damaged change"
    )]
    MissingSignature {
        /// The registry id.
        registry: String,
        /// The change's hash.
        change: String,
    },
    /// The bundle file could not be written.
    #[error("bundle file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
