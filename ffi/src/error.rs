//! One error type for every foreign call, mapped from the core's errors in
//! one place. Each variant keeps the core's message (which names what
//! failed and what to do) and the fields a program may branch on.

use chittysync::{
    ExportError, ImportError, LookupError, MirrorError, OpenError, PeerError, StoreError,
    VerifyError, WriteError,
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
    /// An adapter binding is missing or wrong, or its remote system failed
    /// (unreachable, refused, or a table that does not fit).
    #[error("{message}")]
    Adapter {
        /// The full explanation (never a secret).
        message: String,
    },
    /// A sync run stopped before writing: it would delete more rows than
    /// the binding allows. Run again with `allow_deletes` if intended.
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
}

impl ChittyError {
    pub(crate) fn argument(message: impl Into<String>) -> Self {
        ChittyError::Argument {
            message: message.into(),
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
                rule: crate::types::rule_name(&v.rule).to_owned(),
            },
            WriteError::Schema(_) => ChittyError::Schema { message },
            WriteError::BadRecordId { .. } => ChittyError::Argument { message },
            WriteError::NotFound { .. } | WriteError::Deleted { .. } => {
                ChittyError::NotFound { message }
            }
            WriteError::NotPermitted { .. }
            | WriteError::NotOwner { .. }
            | WriteError::LastAdmin { .. } => ChittyError::NotPermitted { message },
            _ => ChittyError::Store { message },
        }
    }
}

impl From<ImportError> for ChittyError {
    fn from(e: ImportError) -> Self {
        let message = e.to_string();
        match e {
            ImportError::Store(_) | ImportError::File { .. } => ChittyError::Store { message },
            _ => ChittyError::Refused { message },
        }
    }
}

impl From<LookupError> for ChittyError {
    fn from(e: LookupError) -> Self {
        let message = e.to_string();
        match e {
            LookupError::Store(_) => ChittyError::Store { message },
            _ => ChittyError::NotFound { message },
        }
    }
}

impl From<VerifyError> for ChittyError {
    fn from(e: VerifyError) -> Self {
        ChittyError::Verify {
            message: e.to_string(),
        }
    }
}

impl From<MirrorError> for ChittyError {
    fn from(e: MirrorError) -> Self {
        let message = e.to_string();
        match e {
            MirrorError::Write(w) => w.into(),
            MirrorError::Lookup(l) => l.into(),
            MirrorError::Store(_) => ChittyError::Store { message },
            MirrorError::TooManyDeletes { .. } => ChittyError::TooManyDeletes { message },
            MirrorError::NotWriter { .. } => ChittyError::NotPermitted { message },
            MirrorError::NoBinding { .. } => ChittyError::NotFound { message },
            MirrorError::Identity(_) => ChittyError::Store { message },
            _ => ChittyError::Adapter { message },
        }
    }
}

impl From<PeerError> for ChittyError {
    fn from(e: PeerError) -> Self {
        let message = e.to_string();
        match e {
            PeerError::Store(_) => ChittyError::Store { message },
            PeerError::Refused { .. } | PeerError::RefusedByPeer { .. } => {
                ChittyError::Refused { message }
            }
            _ => ChittyError::Network { message },
        }
    }
}

macro_rules! store_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for ChittyError {
            fn from(e: $t) -> Self {
                ChittyError::Store { message: e.to_string() }
            }
        }
    )*};
}
store_errors!(OpenError, StoreError, ExportError);
