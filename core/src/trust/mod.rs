//! Signed changes: what is signed, and how a batch of signatures is checked.
//!
//! The author of every change signs `CHANGE_DOMAIN ‖ registry id ‖ change
//! hash`. The change hash covers the change's bytes, its dependencies and its
//! actor, so the signature binds the content, its place in the history and
//! the registry. A change's Automerge actor id *is* its author's public key,
//! so an actor can never be claimed by another key.

use std::collections::HashMap;

pub(crate) mod attest;
pub(crate) mod tlog;

use automerge::{Change, ChangeHash};
use ed25519_dalek::Signature;

use crate::identity::{Identity, PublicKey};
use crate::ids::RegistryId;

/// Domain separation: these signatures can never be confused with others.
const CHANGE_DOMAIN: &[u8] = b"chittysync/change-signature/v1\n";

/// From this many signatures on, batch verification is used.
const BATCH_THRESHOLD: usize = 4;

/// The bytes an author signs for a change.
pub(crate) fn signing_message(registry: &RegistryId, hash: &ChangeHash) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CHANGE_DOMAIN.len() + 16 + 32);
    msg.extend_from_slice(CHANGE_DOMAIN);
    msg.extend_from_slice(registry.as_bytes());
    msg.extend_from_slice(&hash.0);
    msg
}

pub(crate) fn sign_change(
    identity: &Identity,
    registry: &RegistryId,
    hash: &ChangeHash,
) -> [u8; 64] {
    identity.sign(&signing_message(registry, hash)).to_bytes()
}

/// One Automerge change with its author's key and signature: the unit that
/// travels between replicas.
#[derive(Clone, Debug)]
pub struct SignedChange {
    pub(crate) change: Change,
    pub(crate) author: PublicKey,
    pub(crate) signature: [u8; 64],
}

impl SignedChange {
    pub(crate) fn new(change: Change, author: PublicKey, signature: [u8; 64]) -> Self {
        SignedChange {
            change,
            author,
            signature,
        }
    }

    /// The change's hash.
    pub fn hash(&self) -> ChangeHash {
        self.change.hash()
    }

    /// The key that signed it.
    pub fn author(&self) -> PublicKey {
        self.author
    }

    /// The change's bytes (compressed when large).
    pub fn change_bytes(&mut self) -> Vec<u8> {
        self.change.bytes().into_owned()
    }

    /// The 64 signature bytes.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

/// Why a signed change is not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Distrust {
    /// The actor id is not the author's key: someone signed another's change.
    ForgedActor,
    /// The signature does not verify.
    BadSignature,
}

/// Checks every signature and actor binding; on failure returns the first
/// bad change's index and why.
pub(crate) fn verify_all(
    registry: &RegistryId,
    changes: &[SignedChange],
) -> Result<(), (usize, Distrust)> {
    for (i, c) in changes.iter().enumerate() {
        if c.change.actor_id().to_bytes() != c.author.as_bytes() {
            return Err((i, Distrust::ForgedActor));
        }
    }
    let messages: Vec<Vec<u8>> = changes
        .iter()
        .map(|c| signing_message(registry, &c.change.hash()))
        .collect();
    let verify_one = |i: usize| {
        let c = &changes[i];
        c.author
            .verifying_key()
            .verify_strict(&messages[i], &Signature::from_bytes(&c.signature))
            .map_err(|_| (i, Distrust::BadSignature))
    };
    if changes.len() >= BATCH_THRESHOLD {
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let sigs: Vec<Signature> = changes
            .iter()
            .map(|c| Signature::from_bytes(&c.signature))
            .collect();
        // A bundle has few authors: decompress each key once, not per change.
        let mut decoded = HashMap::new();
        let keys: Vec<_> = changes
            .iter()
            .map(|c| {
                *decoded
                    .entry(c.author)
                    .or_insert_with(|| c.author.verifying_key())
            })
            .collect();
        if ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok() {
            return Ok(());
        }
        // Find the culprit so the error can name it; if each verifies alone
        // the batch still failed, so refuse the whole batch regardless.
        (0..changes.len()).try_for_each(verify_one)?;
        return Err((0, Distrust::BadSignature));
    }
    (0..changes.len()).try_for_each(verify_one)
}
