//! Quorum attestation: members sign the state they hold, independently of
//! the order in which they received it.
//!
//! A member signs `ATTEST_DOMAIN ‖ registry id ‖ change count ‖ state digest
//! ‖ sorted heads`. Attestations travel in bundles beside the changes and
//! are stored outside the document, so attesting never changes the heads or
//! the digest it attests. A state is *attested* when at least the registry's
//! `quorum` (k) of its current members signed the same heads and digest.

use automerge::ChangeHash;
use ed25519_dalek::Signature;

use crate::identity::{Identity, PublicKey};
use crate::ids::RegistryId;

const ATTEST_DOMAIN: &[u8] = b"chittysync/attestation/v1\n";

/// A member's signed statement that it holds a given state of a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// The registry.
    pub registry: RegistryId,
    /// The signing member.
    pub member: PublicKey,
    /// The heads of the attested state, sorted.
    pub heads: Vec<ChangeHash>,
    /// The state digest (see [`Registry::state_digest`](crate::Registry::state_digest)).
    pub digest: [u8; 32],
    /// How many changes the attested history has.
    pub change_count: u64,
    /// The member's signature.
    pub signature: [u8; 64],
}

impl Attestation {
    fn message(
        registry: &RegistryId,
        heads: &[ChangeHash],
        digest: &[u8; 32],
        count: u64,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(ATTEST_DOMAIN.len() + 16 + 8 + 32 + 4 + 32 * heads.len());
        m.extend_from_slice(ATTEST_DOMAIN);
        m.extend_from_slice(registry.as_bytes());
        m.extend_from_slice(&count.to_be_bytes());
        m.extend_from_slice(digest);
        m.extend_from_slice(&(heads.len() as u32).to_be_bytes());
        for h in heads {
            m.extend_from_slice(&h.0);
        }
        m
    }

    pub(crate) fn sign(
        identity: &Identity,
        registry: RegistryId,
        mut heads: Vec<ChangeHash>,
        digest: [u8; 32],
        change_count: u64,
    ) -> Attestation {
        heads.sort();
        let signature = identity
            .sign(&Attestation::message(
                &registry,
                &heads,
                &digest,
                change_count,
            ))
            .to_bytes();
        Attestation {
            registry,
            member: identity.public_key(),
            heads,
            digest,
            change_count,
            signature,
        }
    }

    /// Whether the signature is the member's over this content.
    pub fn verify(&self) -> bool {
        let mut sorted = self.heads.clone();
        sorted.sort();
        sorted == self.heads
            && self
                .member
                .verifying_key()
                .verify_strict(
                    &Attestation::message(
                        &self.registry,
                        &self.heads,
                        &self.digest,
                        self.change_count,
                    ),
                    &Signature::from_bytes(&self.signature),
                )
                .is_ok()
    }

    /// Whether this attests exactly the state `(heads, digest)`.
    pub fn attests(&self, heads: &[ChangeHash], digest: &[u8; 32]) -> bool {
        let mut sorted = heads.to_vec();
        sorted.sort();
        self.digest == *digest && self.heads == sorted
    }

    pub(crate) fn heads_bytes(&self) -> Vec<u8> {
        self.heads.iter().flat_map(|h| h.0).collect()
    }

    pub(crate) fn heads_from_bytes(bytes: &[u8]) -> Option<Vec<ChangeHash>> {
        if !bytes.len().is_multiple_of(32) {
            return None;
        }
        Some(
            bytes
                .chunks_exact(32)
                .map(|c| ChangeHash(c.try_into().expect("32 bytes")))
                .collect(),
        )
    }
}

/// Whether the current state of a registry is attested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationStatus {
    /// The current heads.
    pub heads: Vec<ChangeHash>,
    /// The current state digest (hex).
    pub digest: String,
    /// Changes in the history.
    pub change_count: u64,
    /// Current members who signed this exact state.
    pub attested_by: Vec<PublicKey>,
    /// How many members the registry has (n).
    pub members: usize,
    /// The configured threshold k, if any.
    pub quorum: Option<u32>,
}

impl AttestationStatus {
    /// Whether at least k of the members attest the current state (false
    /// when no threshold is configured).
    pub fn attested(&self) -> bool {
        self.quorum
            .is_some_and(|k| self.attested_by.len() >= k as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestations_verify_and_tampering_is_detected() {
        let id = Identity::from_secret_bytes([9; 32]);
        let reg = RegistryId::from_bytes(&[1; 16]).unwrap();
        let heads = vec![ChangeHash([3; 32]), ChangeHash([2; 32])];
        let a = Attestation::sign(&id, reg, heads.clone(), [7; 32], 12);
        assert!(a.verify());
        assert!(a.attests(&heads, &[7; 32]));
        assert!(!a.attests(&heads[..1], &[7; 32]));

        let mut other = a.clone();
        other.change_count = 13;
        assert!(!other.verify());
        let mut other = a.clone();
        other.digest[0] ^= 1;
        assert!(!other.verify());
        let mut other = a.clone();
        other.member = Identity::from_secret_bytes([8; 32]).public_key();
        assert!(!other.verify());
        let mut other = a;
        other.registry = RegistryId::from_bytes(&[2; 16]).unwrap();
        assert!(!other.verify());
    }
}
