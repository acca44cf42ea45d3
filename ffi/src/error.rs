//! One error type for every foreign call, mapped from the core's errors in
//! one place: every core error type, and every variant of each, is matched
//! here by name. Each variant keeps the core's message (which names what
//! failed and what to do) and the fields a program may branch on; where the
//! core's advice names a command-line command, the message says it in this
//! API's terms instead.
//!
//! The core's error enums are `#[non_exhaustive]`, so each match ends with
//! an arm for variants added after this facade was written: those are
//! reported as [`ChittyError::Internal`], never as another kind.

use chittysync::{
    AdapterError, ExportError, IdentityError, ImportError, LookupError, MirrorError, OpenError,
    PeerError, SchemaError, StoreError, TokenError, VerifyError, WriteError,
};

/// What went wrong in a ChittySync call.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum ChittyError {
    /// A value breaks the registry's schema; nothing was written.
    #[error("{message}")]
    Invalid {
        /// The full explanation.
        message: String,
        /// The registry's name.
        registry: String,
        /// The record's id.
        record: String,
        /// The field.
        field: String,
        /// The offending value as text (empty when missing).
        value: String,
        /// The rule it breaks, e.g. `required`, `unique`, `options`.
        rule: String,
    },
    /// The schema itself is not valid, or a change to it is refused.
    #[error("{message}")]
    Schema {
        /// The full explanation.
        message: String,
    },
    /// A registry or record does not exist (or the record is deleted).
    #[error("{message}")]
    NotFound {
        /// The full explanation.
        message: String,
    },
    /// This replica's key lacks the role the operation needs.
    #[error("{message}")]
    NotPermitted {
        /// The full explanation.
        message: String,
    },
    /// Changes from elsewhere were refused whole: forged, unauthorised,
    /// malformed or incomplete. Nothing of them was applied.
    #[error("{message}")]
    Refused {
        /// The full explanation.
        message: String,
    },
    /// Verification found damage or tampering; the message names the first
    /// bad item.
    #[error("{message}")]
    Verify {
        /// The full explanation.
        message: String,
    },
    /// An argument is malformed (a bad key, hash or id).
    #[error("{message}")]
    Argument {
        /// The full explanation.
        message: String,
    },
    /// An adapter binding is wrong, or its target failed (unreachable,
    /// refused, or a table that does not fit).
    #[error("{message}")]
    Adapter {
        /// The full explanation (never a secret).
        message: String,
    },
    /// A mirror run stopped before writing: it would delete more rows than
    /// the binding allows. Run again allowing deletes if intended.
    #[error("{message}")]
    TooManyDeletes {
        /// The full explanation.
        message: String,
    },
    /// A peer could not be reached, or the connection failed.
    #[error("{message}")]
    Network {
        /// The full explanation.
        message: String,
    },
    /// The replica's file or key could not be opened, read or written.
    #[error("{message}")]
    Store {
        /// The full explanation.
        message: String,
    },
    /// A failure this facade does not know (a bug, or a core error added
    /// after it was written); the message says what happened.
    #[error("{message}")]
    Internal {
        /// The full explanation.
        message: String,
    },
}

impl ChittyError {
    pub(crate) fn argument(message: impl Into<String>) -> Self {
        ChittyError::Argument {
            message: message.into(),
        }
    }

    /// The same error, its message preceded by `context`.
    fn context(mut self, context: &str) -> Self {
        match &mut self {
            ChittyError::Invalid { message, .. }
            | ChittyError::Schema { message }
            | ChittyError::NotFound { message }
            | ChittyError::NotPermitted { message }
            | ChittyError::Refused { message }
            | ChittyError::Verify { message }
            | ChittyError::Argument { message }
            | ChittyError::Adapter { message }
            | ChittyError::TooManyDeletes { message }
            | ChittyError::Network { message }
            | ChittyError::Store { message }
            | ChittyError::Internal { message } => *message = format!("{context}: {message}"),
        }
        self
    }

    fn unknown(e: impl std::fmt::Display) -> Self {
        ChittyError::Internal {
            message: format!("unexpected failure, please report it: {e}"),
        }
    }
}

impl From<StoreError> for ChittyError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::Sql { .. } | StoreError::Corrupt { .. } | StoreError::TooNew { .. } => {
                ChittyError::Store { message }
            }
            other => ChittyError::unknown(other),
        }
    }
}

impl From<IdentityError> for ChittyError {
    fn from(e: IdentityError) -> Self {
        let message = e.to_string();
        match e {
            IdentityError::KeyFile { .. } | IdentityError::Random { .. } => {
                ChittyError::Store { message }
            }
            IdentityError::BadPublicKey { .. } => ChittyError::Argument { message },
            other => ChittyError::unknown(other),
        }
    }
}

impl From<OpenError> for ChittyError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Identity(i) => i.into(),
            OpenError::Store(s) => s.into(),
            e @ OpenError::Directory { .. } => ChittyError::Store {
                message: e.to_string(),
            },
            other => ChittyError::unknown(other),
        }
    }
}

impl From<SchemaError> for ChittyError {
    fn from(e: SchemaError) -> Self {
        ChittyError::Schema {
            message: e.to_string(),
        }
    }
}

impl From<WriteError> for ChittyError {
    fn from(e: WriteError) -> Self {
        let message = e.to_string();
        match e {
            WriteError::Invalid(v) => ChittyError::Invalid {
                message,
                registry: v.registry,
                record: v.record,
                field: v.field,
                value: v.value,
                rule: v.rule.name().to_owned(),
            },
            WriteError::Schema(s) => s.into(),
            WriteError::BadRecordId { .. } => ChittyError::Argument { message },
            WriteError::NotFound { .. } | WriteError::Deleted { .. } => {
                ChittyError::NotFound { message }
            }
            WriteError::NotPermitted {
                registry,
                key,
                role,
                needed,
            } => ChittyError::NotPermitted {
                message: format!(
                    "registry '{registry}': key {key} is {} but this needs {needed}; ask an admin of the registry to give it that role (set_member)",
                    role.as_deref().unwrap_or("not a member")
                ),
            },
            WriteError::NotOwner { .. } | WriteError::LastAdmin { .. } => {
                ChittyError::NotPermitted { message }
            }
            WriteError::Store(s) => s.into(),
            // No call of this facade writes against expected heads, so a
            // stale write cannot come from it.
            WriteError::Stale { .. } | WriteError::Internal(_) => ChittyError::Internal { message },
            other => ChittyError::unknown(other),
        }
    }
}

impl From<ImportError> for ChittyError {
    fn from(e: ImportError) -> Self {
        let message = e.to_string();
        match e {
            ImportError::Malformed { .. }
            | ImportError::BadSignature { .. }
            | ImportError::ForgedActor { .. }
            | ImportError::NotAuthorised { .. }
            | ImportError::InvalidValue { .. }
            | ImportError::MissingDependencies { .. }
            | ImportError::UnknownRegistry { .. } => ChittyError::Refused { message },
            ImportError::File { .. } => ChittyError::Store { message },
            ImportError::Store(s) => s.into(),
            other => ChittyError::unknown(other),
        }
    }
}

impl From<ExportError> for ChittyError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::MissingSignature { registry, change } => ChittyError::Verify {
                message: format!(
                    "registry {registry}: change {change} has no stored signature (the store is damaged); verify names what else is"
                ),
            },
            e @ ExportError::File { .. } => ChittyError::Store {
                message: e.to_string(),
            },
            ExportError::Store(s) => s.into(),
            other => ChittyError::unknown(other),
        }
    }
}

impl From<LookupError> for ChittyError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NotFound { name } => ChittyError::NotFound {
                message: format!(
                    "no registry named '{name}' in this replica; registries lists them, import_bundle brings one from a bundle"
                ),
            },
            e @ LookupError::Ambiguous { .. } => ChittyError::NotFound {
                message: e.to_string(),
            },
            LookupError::Store(s) => s.into(),
            other => ChittyError::unknown(other),
        }
    }
}

impl From<VerifyError> for ChittyError {
    fn from(e: VerifyError) -> Self {
        let message = e.to_string();
        match e {
            VerifyError::Undecodable { .. }
            | VerifyError::ChangeHash { .. }
            | VerifyError::Unsigned { .. }
            | VerifyError::Missing { .. }
            | VerifyError::BadSignature { .. }
            | VerifyError::ForgedActor { .. }
            | VerifyError::NotAuthorised { .. }
            | VerifyError::Genesis { .. }
            | VerifyError::AdminIndex { .. }
            | VerifyError::Journal { .. }
            | VerifyError::Checkpoint { .. }
            | VerifyError::Attestation { .. }
            | VerifyError::InvalidRecords { .. } => ChittyError::Verify { message },
            VerifyError::Lookup(l) => l.into(),
            VerifyError::Store(s) => s.into(),
            other => ChittyError::unknown(other),
        }
    }
}

impl From<AdapterError> for ChittyError {
    fn from(e: AdapterError) -> Self {
        let message = e.to_string();
        match e {
            AdapterError::Connect { .. }
            | AdapterError::Request { .. }
            | AdapterError::Mismatch { .. }
            | AdapterError::Config(_) => ChittyError::Adapter { message },
            other => ChittyError::unknown(other),
        }
    }
}

impl From<MirrorError> for ChittyError {
    fn from(e: MirrorError) -> Self {
        let message = e.to_string();
        match e {
            MirrorError::NoBinding { name } => ChittyError::NotFound {
                message: format!("no adapter binding named '{name}'; bindings lists them"),
            },
            MirrorError::BadBinding { .. }
            | MirrorError::Busy { .. }
            | MirrorError::UnknownKind { .. }
            | MirrorError::MissingSecret { .. }
            | MirrorError::Adapter { .. }
            | MirrorError::Stopped { .. } => ChittyError::Adapter { message },
            MirrorError::NotWriter {
                binding,
                registry,
                key,
            } => ChittyError::NotPermitted {
                message: format!(
                    "adapter binding '{binding}' cannot write to registry '{registry}': its key {key} is not a writer; an admin of the registry must make it one (set_member with role writer)"
                ),
            },
            MirrorError::TooManyDeletes {
                binding,
                deletes,
                total,
                limit,
            } => ChittyError::TooManyDeletes {
                message: format!(
                    "adapter binding '{binding}': this run would delete {deletes} of {total} rows (more than the limit of {limit}); check the plan with a dry run, then run again allowing deletes if that is intended"
                ),
            },
            MirrorError::Lookup(l) => l.into(),
            MirrorError::Write(w) => w.into(),
            MirrorError::Store(s) => s.into(),
            MirrorError::Identity(_) => ChittyError::Store { message },
            other => ChittyError::unknown(other),
        }
    }
}

impl From<PeerError> for ChittyError {
    fn from(e: PeerError) -> Self {
        let message = e.to_string();
        match e {
            PeerError::Connect { peer, reason } => ChittyError::Network {
                message: format!(
                    "could not connect to {peer}: {reason}; check the address and that a replica serves there"
                ),
            },
            PeerError::Connection { .. } | PeerError::Listen { .. } => {
                ChittyError::Network { message }
            }
            PeerError::Refused { .. } | PeerError::RefusedByPeer { .. } => {
                ChittyError::Refused { message }
            }
            PeerError::Store(s) => s.into(),
            other => ChittyError::unknown(other),
        }
    }
}

impl From<TokenError> for ChittyError {
    fn from(e: TokenError) -> Self {
        let message = e.to_string();
        match e {
            TokenError::BadName { .. } | TokenError::Exists { .. } | TokenError::NoRegistries => {
                ChittyError::Argument { message }
            }
            TokenError::NotFound { name } => ChittyError::NotFound {
                message: format!("no token named '{name}' on this replica; tokens lists them"),
            },
            TokenError::Unknown | TokenError::Expired { .. } => {
                ChittyError::NotPermitted { message }
            }
            TokenError::Registry(l) => l.into(),
            // The write's own kind (e.g. this replica is not an admin of the
            // registry), said of the token.
            TokenError::Member {
                name,
                registry,
                source,
            } => ChittyError::from(*source).context(&format!(
                "making token '{name}' a member of registry '{registry}'"
            )),
            TokenError::Key { .. } => ChittyError::Store { message },
            TokenError::Store(s) => s.into(),
            other => ChittyError::unknown(other),
        }
    }
}
