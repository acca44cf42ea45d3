//! Inclusion and consistency proofs: their types, JSON encoding, and
//! verification against roots or signed checkpoints.

use automerge::ChangeHash;
use serde::Deserialize;

use super::checkpoint::Checkpoint;
use super::merkle::{
    Hash, change_leaf_hash, consistency_path, inclusion_path, verify_consistency, verify_inclusion,
};
use super::{LogError, excerpt};
use crate::identity::PublicKey;
use crate::ids::RegistryId;

const INCLUSION_FORMAT: &str = "chittysync.inclusion-proof.v1";
const CONSISTENCY_FORMAT: &str = "chittysync.consistency-proof.v1";

/// Proof that one change is in a replica's log at a given size.
///
/// It carries the leaf's data — the change's registry and hash — so it
/// says by itself which change it is about; check [`InclusionProof::change`]
/// and [`InclusionProof::registry`] are the ones you asked about. The leaf
/// hash is derived from them.
///
/// JSON form (hashes in lowercase hex):
///
/// ```text
/// {"format":"chittysync.inclusion-proof.v1","index":5,"size":8,
///  "registry":"<32 hex>","change":"<64 hex>","hashes":["<64 hex>",...]}
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    index: u64,
    size: u64,
    registry: RegistryId,
    change: ChangeHash,
    hashes: Vec<Hash>,
}

impl InclusionProof {
    /// The proof that `registry`'s change `change` is leaf `index` of the
    /// log whose leaf hashes are `leaves`.
    pub(crate) fn new(
        leaves: &[Hash],
        index: u64,
        registry: RegistryId,
        change: ChangeHash,
    ) -> Result<Self, LogError> {
        let fail = |reason: String| LogError::InclusionFailed {
            index,
            size: leaves.len() as u64,
            reason,
        };
        let at = usize::try_from(index)
            .ok()
            .filter(|&i| i < leaves.len())
            .ok_or_else(|| fail("the log has no such position".into()))?;
        if leaves[at] != change_leaf_hash(&registry, &change) {
            return Err(fail(format!(
                "the leaf at that position is not change {change} of registry {registry}"
            )));
        }
        let hashes = inclusion_path(leaves, at).ok_or_else(|| fail("no such position".into()))?;
        Ok(InclusionProof {
            index,
            size: leaves.len() as u64,
            registry,
            change,
            hashes,
        })
    }

    /// The change's position in the log (0-based).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The log size the proof is for.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The registry the change belongs to.
    pub fn registry(&self) -> RegistryId {
        self.registry
    }

    /// The change the proof is about.
    pub fn change(&self) -> ChangeHash {
        self.change
    }

    /// The RFC 6962 leaf hash, `H(0x00 ‖ registry id ‖ change hash)`.
    pub fn leaf_hash(&self) -> [u8; 32] {
        change_leaf_hash(&self.registry, &self.change)
    }

    /// The audit path, bottom-up (RFC 6962 `PATH`).
    pub fn hashes(&self) -> &[[u8; 32]] {
        &self.hashes
    }

    /// Checks the proof against `root`, the Merkle root of the log at
    /// [`size`](Self::size) changes.
    ///
    /// Only as good as `root`: prefer [`verify_signed`](Self::verify_signed),
    /// which takes the root from a checkpoint signed by the replica.
    pub fn verify(&self, root: &[u8; 32]) -> Result<(), LogError> {
        verify_inclusion(self.index, self.size, &self.leaf_hash(), &self.hashes, root).map_err(
            |reason| LogError::InclusionFailed {
                index: self.index,
                size: self.size,
                reason,
            },
        )
    }

    /// Checks the proof against a checkpoint note signed by `log`, and
    /// returns the verified checkpoint.
    pub fn verify_signed(&self, checkpoint: &str, log: &PublicKey) -> Result<Checkpoint, LogError> {
        let checkpoint = Checkpoint::verify(checkpoint, log)?;
        if checkpoint.size() != self.size {
            return Err(LogError::SizeMismatch {
                which: "the checkpoint",
                checkpoint: checkpoint.size(),
                proof: self.size,
            });
        }
        self.verify(checkpoint.root())?;
        Ok(checkpoint)
    }

    /// The proof as JSON.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "format": INCLUSION_FORMAT,
            "index": self.index,
            "size": self.size,
            "registry": self.registry.to_string(),
            "change": self.change.to_string(),
            "hashes": hashes_to_hex(&self.hashes),
        })
        .to_string()
    }

    /// Reads a proof written by [`to_json`](Self::to_json). Does not verify it.
    pub fn from_json(json: &str) -> Result<Self, LogError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            format: String,
            index: u64,
            size: u64,
            registry: String,
            change: String,
            hashes: Vec<String>,
        }
        let wire: Wire = serde_json::from_str(json).map_err(|e| LogError::MalformedProof {
            reason: e.to_string(),
        })?;
        check_format(&wire.format, INCLUSION_FORMAT)?;
        let registry = wire
            .registry
            .parse()
            .map_err(|reason| LogError::MalformedProof { reason })?;
        let change = hex_hash(&wire.change, "change").map(ChangeHash)?;
        Ok(InclusionProof {
            index: wire.index,
            size: wire.size,
            registry,
            change,
            hashes: hashes_from_hex(&wire.hashes)?,
        })
    }
}

/// Proof that a replica's log at one size extends the same log at an
/// earlier size: nothing was removed, reordered or rewritten.
///
/// JSON form (hashes in lowercase hex):
///
/// ```text
/// {"format":"chittysync.consistency-proof.v1","old_size":6,"new_size":8,
///  "hashes":["<64 hex>",...]}
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    old_size: u64,
    new_size: u64,
    hashes: Vec<Hash>,
}

impl ConsistencyProof {
    /// The proof that the log whose leaf hashes are `leaves` extends its
    /// first `old_size` leaves.
    pub(crate) fn new(leaves: &[Hash], old_size: u64) -> Result<Self, LogError> {
        let new_size = leaves.len() as u64;
        let hashes = usize::try_from(old_size)
            .ok()
            .and_then(|old| consistency_path(leaves, old))
            .ok_or_else(|| LogError::ConsistencyFailed {
                old_size,
                new_size,
                reason: "the old size is larger than the log".into(),
            })?;
        Ok(ConsistencyProof {
            old_size,
            new_size,
            hashes,
        })
    }

    /// The earlier log size.
    pub fn old_size(&self) -> u64 {
        self.old_size
    }

    /// The later log size.
    pub fn new_size(&self) -> u64 {
        self.new_size
    }

    /// The proof's hashes (RFC 6962 `PROOF`).
    pub fn hashes(&self) -> &[[u8; 32]] {
        &self.hashes
    }

    /// Checks the proof between `old_root`, the log's root at
    /// [`old_size`](Self::old_size), and `new_root`, its root at
    /// [`new_size`](Self::new_size).
    ///
    /// Only as good as the roots: prefer
    /// [`verify_signed`](Self::verify_signed).
    pub fn verify(&self, old_root: &[u8; 32], new_root: &[u8; 32]) -> Result<(), LogError> {
        verify_consistency(
            self.old_size,
            self.new_size,
            old_root,
            new_root,
            &self.hashes,
        )
        .map_err(|reason| LogError::ConsistencyFailed {
            old_size: self.old_size,
            new_size: self.new_size,
            reason,
        })
    }

    /// Checks the proof between two checkpoint notes signed by `log`, and
    /// returns the verified old and new checkpoints.
    pub fn verify_signed(
        &self,
        old_checkpoint: &str,
        new_checkpoint: &str,
        log: &PublicKey,
    ) -> Result<(Checkpoint, Checkpoint), LogError> {
        let old = Checkpoint::verify(old_checkpoint, log)?;
        let new = Checkpoint::verify(new_checkpoint, log)?;
        for (which, checkpoint, proof) in [
            ("the old checkpoint", &old, self.old_size),
            ("the new checkpoint", &new, self.new_size),
        ] {
            if checkpoint.size() != proof {
                return Err(LogError::SizeMismatch {
                    which,
                    checkpoint: checkpoint.size(),
                    proof,
                });
            }
        }
        self.verify(old.root(), new.root())?;
        Ok((old, new))
    }

    /// The proof as JSON.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "format": CONSISTENCY_FORMAT,
            "old_size": self.old_size,
            "new_size": self.new_size,
            "hashes": hashes_to_hex(&self.hashes),
        })
        .to_string()
    }

    /// Reads a proof written by [`to_json`](Self::to_json). Does not verify it.
    pub fn from_json(json: &str) -> Result<Self, LogError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            format: String,
            old_size: u64,
            new_size: u64,
            hashes: Vec<String>,
        }
        let wire: Wire = serde_json::from_str(json).map_err(|e| LogError::MalformedProof {
            reason: e.to_string(),
        })?;
        check_format(&wire.format, CONSISTENCY_FORMAT)?;
        Ok(ConsistencyProof {
            old_size: wire.old_size,
            new_size: wire.new_size,
            hashes: hashes_from_hex(&wire.hashes)?,
        })
    }
}

fn check_format(found: &str, expected: &str) -> Result<(), LogError> {
    if found != expected {
        return Err(LogError::MalformedProof {
            reason: format!("format is '{}', expected '{expected}'", excerpt(found)),
        });
    }
    Ok(())
}

fn hashes_to_hex(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

fn hex_hash(text: &str, what: &str) -> Result<Hash, LogError> {
    hex::decode(text)
        .ok()
        .and_then(|b| Hash::try_from(b).ok())
        .ok_or_else(|| LogError::MalformedProof {
            reason: format!("{what} '{}' is not 64 hex digits", excerpt(text)),
        })
}

fn hashes_from_hex(hashes: &[String]) -> Result<Vec<Hash>, LogError> {
    hashes
        .iter()
        .enumerate()
        .map(|(i, h)| hex_hash(h, &format!("hashes[{i}]")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::trust::tlog::merkle::{leaf_hash, tree_root};
    use crate::trust::tlog::test_support::{change, change_leaves, replica, test_registry};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn inclusion_proofs_verify_and_tampering_is_caught(
            (size, index) in (1u64..300).prop_flat_map(|s| (Just(s), 0..s)),
            other in 1u64..300,
            pick in any::<prop::sample::Index>(),
            byte in 0usize..32,
        ) {
            let all = change_leaves(300);
            let leaves = &all[..size as usize];
            let root = tree_root(leaves);
            let proof = InclusionProof::new(leaves, index, test_registry(), change(index)).unwrap();
            proof.verify(&root).unwrap();
            let round = InclusionProof::from_json(&proof.to_json()).unwrap();
            prop_assert_eq!(&round, &proof);
            round.verify(&root).unwrap();

            let path = proof.hashes().to_vec();
            let leaf = proof.leaf_hash();
            if !path.is_empty() {
                let mut bad = path.clone();
                bad[pick.index(path.len())][byte] ^= 0x01;
                prop_assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
                prop_assert!(
                    verify_inclusion(index, size, &leaf, &path[..path.len() - 1], &root).is_err()
                );
            }
            let mut longer = path.clone();
            longer.push(root);
            prop_assert!(verify_inclusion(index, size, &leaf, &longer, &root).is_err());
            let mut longer = vec![leaf];
            longer.extend_from_slice(&path);
            prop_assert!(verify_inclusion(index, size, &leaf, &longer, &root).is_err());

            // Another position, or another log size (with that size's true
            // root), must not verify with this proof.
            let wrong_index = (index + other) % size;
            if wrong_index != index {
                prop_assert!(verify_inclusion(wrong_index, size, &leaf, &path, &root).is_err());
            }
            if other != size && index < other {
                let other_root = tree_root(&all[..other as usize]);
                prop_assert!(verify_inclusion(index, other, &leaf, &path, &other_root).is_err());
            }
            // Another leaf, or another root.
            let wrong_leaf = change_leaf_hash(&test_registry(), &change(index + 1000));
            prop_assert!(verify_inclusion(index, size, &wrong_leaf, &path, &root).is_err());
            let mut wrong_root = root;
            wrong_root[byte] ^= 0x80;
            prop_assert!(proof.verify(&wrong_root).is_err());
        }

        #[test]
        fn consistency_proofs_verify_and_tampering_is_caught(
            (new, old) in (1u64..300).prop_flat_map(|n| (Just(n), 0..=n)),
            other in 1u64..300,
            pick in any::<prop::sample::Index>(),
            byte in 0usize..32,
        ) {
            let all = change_leaves(300);
            let root_at = |n: u64| tree_root(&all[..n as usize]);
            let (r_old, r_new) = (root_at(old), root_at(new));
            let proof = ConsistencyProof::new(&all[..new as usize], old).unwrap();
            proof.verify(&r_old, &r_new).unwrap();
            let round = ConsistencyProof::from_json(&proof.to_json()).unwrap();
            prop_assert_eq!(&round, &proof);

            let path = proof.hashes().to_vec();
            // Trivial proofs (old size 0 or equal sizes) have no hashes to
            // alter; the rest must resist every change.
            if path.is_empty() {
                prop_assert!(old == 0 || old == new);
                if old != new {
                    prop_assert!(verify_consistency(old, new, &r_new, &r_new, &path).is_err());
                }
                return Ok(());
            }
            let mut bad = path.clone();
            bad[pick.index(path.len())][byte] ^= 0x01;
            prop_assert!(verify_consistency(old, new, &r_old, &r_new, &bad).is_err());
            prop_assert!(
                verify_consistency(old, new, &r_old, &r_new, &path[..path.len() - 1]).is_err()
            );
            for extra in [r_old, r_new, path[0]] {
                let mut longer = path.clone();
                longer.push(extra);
                prop_assert!(verify_consistency(old, new, &r_old, &r_new, &longer).is_err());
                let mut longer = vec![extra];
                longer.extend_from_slice(&path);
                prop_assert!(verify_consistency(old, new, &r_old, &r_new, &longer).is_err());
            }
            prop_assert!(verify_consistency(old, new, &r_new, &r_old, &path).is_err());
            let mut wrong = r_old;
            wrong[byte] ^= 0x80;
            prop_assert!(verify_consistency(old, new, &wrong, &r_new, &path).is_err());
            let mut wrong = r_new;
            wrong[byte] ^= 0x80;
            prop_assert!(verify_consistency(old, new, &r_old, &wrong, &path).is_err());
            // Other sizes, each with its true root, must not verify.
            if other != old {
                let r_other = root_at(other);
                prop_assert!(verify_consistency(other, new, &r_other, &r_new, &path).is_err());
            }
            if other != new {
                let r_other = root_at(other);
                prop_assert!(verify_consistency(old, other, &r_old, &r_other, &path).is_err());
            }
        }
    }
    #[test]
    fn proofs_verify_against_signed_checkpoints() {
        let id = replica();
        let key = id.public_key();
        let leaves = change_leaves(20);
        let sign = |n: usize| {
            Checkpoint::new(&key, n as u64, tree_root(&leaves[..n]))
                .sign(&id)
                .unwrap()
        };
        let (c13, c20) = (sign(13), sign(20));

        let proof = InclusionProof::new(&leaves[..13], 9, test_registry(), change(9)).unwrap();
        let checkpoint = proof.verify_signed(&c13, &key).unwrap();
        assert_eq!(checkpoint.size(), 13);
        let err = proof.verify_signed(&c20, &key).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::SizeMismatch {
                    checkpoint: 20,
                    proof: 13,
                    ..
                }
            ),
            "{err}"
        );
        let stranger = Identity::from_secret_bytes([0x99; 32]).public_key();
        assert!(matches!(
            proof.verify_signed(&c13, &stranger),
            Err(LogError::NotSignedBy { .. })
        ));
        // A proof claiming another change at that position fails.
        let mut lie = proof.clone();
        lie.change = change(10);
        assert!(matches!(
            lie.verify_signed(&c13, &key),
            Err(LogError::InclusionFailed { .. })
        ));
        assert!(InclusionProof::new(&leaves[..13], 9, test_registry(), change(10)).is_err());
        assert!(InclusionProof::new(&leaves[..13], 13, test_registry(), change(13)).is_err());

        let proof = ConsistencyProof::new(&leaves, 13).unwrap();
        let (old, new) = proof.verify_signed(&c13, &c20, &key).unwrap();
        assert_eq!((old.size(), new.size()), (13, 20));
        let err = proof.verify_signed(&c20, &c13, &key).unwrap_err();
        assert!(matches!(
            err,
            LogError::SizeMismatch {
                which: "the old checkpoint",
                ..
            }
        ));
        // A rewritten history: same size, different leaves.
        let mut forked = leaves.clone();
        forked[3] = leaf_hash(b"rewritten");
        let forked_c20 = Checkpoint::new(&key, 20, tree_root(&forked))
            .sign(&id)
            .unwrap();
        let err = proof.verify_signed(&c13, &forked_c20, &key).unwrap_err();
        assert!(matches!(err, LogError::ConsistencyFailed { .. }), "{err}");
        assert!(ConsistencyProof::new(&leaves[..5], 6).is_err());
    }

    #[test]
    fn proof_json_is_hex_and_strict() {
        let leaves = change_leaves(6);
        let proof = InclusionProof::new(&leaves, 4, test_registry(), change(4)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&proof.to_json()).unwrap();
        assert_eq!(json["format"], INCLUSION_FORMAT);
        assert_eq!(json["index"], 4);
        assert_eq!(json["size"], 6);
        assert_eq!(json["registry"], test_registry().to_string());
        assert_eq!(json["change"], hex::encode(change(4).0));
        assert_eq!(json["hashes"][0], hex::encode(proof.hashes()[0]));

        let consistency = ConsistencyProof::new(&leaves, 3).unwrap();
        let json = consistency.to_json();
        assert_eq!(ConsistencyProof::from_json(&json).unwrap(), consistency);

        let mut wrong_format = serde_json::from_str::<serde_json::Value>(&json).unwrap();
        wrong_format["format"] = INCLUSION_FORMAT.into();
        let err = ConsistencyProof::from_json(&wrong_format.to_string()).unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
        let mut short_hash = serde_json::from_str::<serde_json::Value>(&json).unwrap();
        short_hash["hashes"][1] = "abcd".into();
        let err = ConsistencyProof::from_json(&short_hash.to_string()).unwrap_err();
        assert!(err.to_string().contains("hashes[1]"), "{err}");
        let mut extra = serde_json::from_str::<serde_json::Value>(&json).unwrap();
        extra["note"] = "hi".into();
        assert!(ConsistencyProof::from_json(&extra.to_string()).is_err());
        assert!(InclusionProof::from_json("{}").is_err());
        assert!(InclusionProof::from_json(&json).is_err());
    }
}
