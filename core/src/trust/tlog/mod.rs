//! A replica's transparency log: the order in which it accepted signed
//! changes, as an append-only Merkle tree whose heads it signs.
//!
//! Leaf `i` of a replica's log is the `i`-th change the replica accepted;
//! its data is `registry id (16 bytes) ‖ change hash (32 bytes)`. The tree
//! is the [RFC 6962] Merkle tree over those leaves (SHA-256, leaf hash
//! `H(0x00 ‖ data)`, node hash `H(0x01 ‖ left ‖ right)`), so standard
//! transparency-log tooling can check it.
//!
//! The replica signs the tree's head as a [`Checkpoint`] in the
//! [c2sp.org/tlog-checkpoint] format, a [c2sp.org/signed-note] whose key
//! name and origin are `chittysync.replica/<64-hex public key>`. Anyone who
//! knows only the replica's public key can check:
//!
//! - a checkpoint ([`Checkpoint::verify`]);
//! - that a change is in the log a checkpoint describes ([`InclusionProof`]);
//! - that a later checkpoint extends an earlier one, so nothing was removed
//!   or rewritten ([`ConsistencyProof`]).
//!
//! The parts: `merkle` (RFC 6962 hashing and tree, path and proof math,
//! as pure functions), `checkpoint` (the signed-note format: signing,
//! parsing, verifying), `proof` ([`InclusionProof`] and
//! [`ConsistencyProof`]: their JSON and verification) and `base64`.
//! Reading and appending a replica's leaves is the store's and the
//! replica's business.
//!
//! [RFC 6962]: https://www.rfc-editor.org/rfc/rfc6962
//! [c2sp.org/tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
//! [c2sp.org/signed-note]: https://c2sp.org/signed-note

mod base64;
mod checkpoint;
mod merkle;
mod proof;

use crate::identity::PublicKey;

pub use checkpoint::Checkpoint;
pub(crate) use merkle::{change_leaf_hash, tree_root};
pub use proof::{ConsistencyProof, InclusionProof};

/// Why a checkpoint or proof was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The text is not a well-formed c2sp.org/signed-note.
    #[error("not a signed note: {reason}")]
    MalformedNote {
        /// What is wrong with it.
        reason: String,
    },
    /// The note is signed, but its text is not a ChittySync checkpoint.
    #[error("not a ChittySync checkpoint: {reason}")]
    MalformedCheckpoint {
        /// What is wrong with it.
        reason: String,
    },
    /// No signature on the note is from the expected replica's key.
    #[error(
        "the checkpoint is not signed by replica {key}: it has no signature line for key name \
         '{key_name}' with key id {key_id}; check that it came from that replica"
    )]
    NotSignedBy {
        /// The replica whose signature was expected.
        key: PublicKey,
        /// The key name looked for (the replica log's origin).
        key_name: String,
        /// The key id looked for, in hex.
        key_id: String,
    },
    /// A signature line from the expected key does not verify: the note
    /// was altered after signing, or forged.
    #[error(
        "the checkpoint's signature by replica {key} does not verify: the note was altered or forged"
    )]
    BadSignature {
        /// The replica whose signature failed.
        key: PublicKey,
    },
    /// The checkpoint names another log than the expected replica's.
    #[error("the checkpoint is for log '{found}', not '{expected}'")]
    WrongOrigin {
        /// The expected replica's log origin.
        expected: String,
        /// The origin the checkpoint names.
        found: String,
    },
    /// A checkpoint was to be signed by a key that is not its log's.
    #[error("cannot sign a checkpoint of log '{origin}' with the key of replica {signer}")]
    WrongSigner {
        /// The checkpoint's log origin.
        origin: String,
        /// The key offered for signing.
        signer: PublicKey,
    },
    /// A proof is about another tree size than the checkpoint given for it.
    #[error("{which} covers {checkpoint} changes but the proof is for {proof}")]
    SizeMismatch {
        /// Which checkpoint: "the checkpoint", "the old checkpoint" or "the new checkpoint".
        which: &'static str,
        /// The tree size in the checkpoint.
        checkpoint: u64,
        /// The tree size in the proof.
        proof: u64,
    },
    /// An inclusion proof does not show its change is in the log.
    #[error(
        "the inclusion proof for position {index} in a log of {size} changes does not verify: {reason}"
    )]
    InclusionFailed {
        /// The position the proof claims for the change.
        index: u64,
        /// The log size the proof is for.
        size: u64,
        /// Why it failed.
        reason: String,
    },
    /// A consistency proof does not show the new log extends the old one.
    #[error(
        "the consistency proof from {old_size} to {new_size} changes does not verify: {reason}"
    )]
    ConsistencyFailed {
        /// The older log size.
        old_size: u64,
        /// The newer log size.
        new_size: u64,
        /// Why it failed.
        reason: String,
    },
    /// A proof's JSON form could not be read.
    #[error("not a ChittySync proof: {reason}")]
    MalformedProof {
        /// What is wrong with it.
        reason: String,
    },
}

/// At most 64 characters of untrusted text, for error messages.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Helpers shared by the tests of the log's modules.
#[cfg(test)]
mod test_support {
    use automerge::ChangeHash;
    use sha2::{Digest, Sha256};

    use super::Checkpoint;
    use super::merkle::{Hash, change_leaf_hash, tree_root};
    use crate::identity::Identity;
    use crate::ids::RegistryId;

    pub(super) fn test_registry() -> RegistryId {
        RegistryId::from_bytes(&[0x5a; 16]).unwrap()
    }

    pub(super) fn change(i: u64) -> ChangeHash {
        ChangeHash(Sha256::digest(i.to_be_bytes()).into())
    }

    pub(super) fn change_leaves(n: usize) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| change_leaf_hash(&test_registry(), &change(i)))
            .collect()
    }

    pub(super) fn replica() -> Identity {
        Identity::from_secret_bytes([0x42; 32])
    }

    pub(super) fn signed_checkpoint(size: u64) -> (Checkpoint, String) {
        let id = replica();
        let root = tree_root(&change_leaves(size as usize));
        let checkpoint = Checkpoint::new(&id.public_key(), size, root);
        let note = checkpoint.sign(&id).unwrap();
        (checkpoint, note)
    }
}
