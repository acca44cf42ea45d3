//! The [RFC 6962] Merkle tree over a log's leaves, as pure functions:
//! leaf and node hashing, tree roots, and computing and checking inclusion
//! and consistency paths (checked as in [RFC 9162]).
//!
//! [RFC 6962]: https://www.rfc-editor.org/rfc/rfc6962
//! [RFC 9162]: https://www.rfc-editor.org/rfc/rfc9162

use automerge::ChangeHash;
use sha2::{Digest, Sha256};

use crate::ids::RegistryId;

/// A SHA-256 hash: a leaf hash, an interior node or a root.
pub(crate) type Hash = [u8; 32];

/// `MTH({})`: the root of the empty tree, SHA-256 of nothing.
pub(crate) fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The RFC 6962 leaf hash `H(0x00 ‖ data)`.
pub(crate) fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// The RFC 6962 interior node hash `H(0x01 ‖ left ‖ right)`.
pub(crate) fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The leaf hash of one accepted change: `H(0x00 ‖ registry id ‖ change hash)`.
pub(crate) fn change_leaf_hash(registry: &RegistryId, change: &ChangeHash) -> Hash {
    let mut data = [0u8; 48];
    data[..16].copy_from_slice(registry.as_bytes());
    data[16..].copy_from_slice(&change.0);
    leaf_hash(&data)
}

/// The largest power of two strictly below `n` (`n >= 2`): RFC 6962's `k`.
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// `MTH(D[n])` over leaf hashes, in one pass with a stack of perfect
/// subtrees (at most one per bit of `n`), so nothing is allocated.
///
/// After `i` leaves the stack holds the perfect subtrees of `i`'s binary
/// decomposition, largest first; RFC 6962's split at the largest power of
/// two makes the root those subtrees folded from the right.
pub(crate) fn tree_root(leaves: &[Hash]) -> Hash {
    let mut stack = [[0u8; 32]; usize::BITS as usize];
    let mut depth = 0;
    for (i, leaf) in leaves.iter().enumerate() {
        let mut node = *leaf;
        // Leaf i completes one perfect subtree per trailing one bit of i.
        let mut merges = i;
        while merges & 1 == 1 {
            depth -= 1;
            node = node_hash(&stack[depth], &node);
            merges >>= 1;
        }
        stack[depth] = node;
        depth += 1;
    }
    let Some((last, rest)) = stack[..depth].split_last() else {
        return empty_root();
    };
    rest.iter()
        .rev()
        .fold(*last, |right, left| node_hash(left, &right))
}

/// RFC 6962 §2.1.1 `PATH(m, D[n])`: the audit path for leaf `index`.
///
/// `None` if `index` is not below `leaves.len()`.
pub(crate) fn inclusion_path(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    // Walk down from the root; each step's sibling subtree joins the path,
    // which lists them bottom-up.
    let mut path = Vec::new();
    let (mut lo, mut hi, mut m) = (0, leaves.len(), index);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if m < k {
            path.push(tree_root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(tree_root(&leaves[lo..lo + k]));
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// RFC 6962 §2.1.2 `PROOF(m, D[n])`: the consistency proof from the first
/// `old_size` leaves to all of `leaves`.
///
/// Empty when `old_size` is 0 or `leaves.len()` (nothing to prove); `None`
/// if `old_size` exceeds `leaves.len()`.
pub(crate) fn consistency_path(leaves: &[Hash], old_size: usize) -> Option<Vec<Hash>> {
    if old_size > leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    if old_size == 0 {
        return Some(path);
    }
    // SUBPROOF(m, D[lo..hi], b), unrolled: each step appends one subtree
    // after the recursive part, so the path is collected top-down, then
    // reversed.
    let (mut lo, mut hi, mut m, mut complete) = (0, leaves.len(), old_size, true);
    loop {
        if m == hi - lo {
            if !complete {
                path.push(tree_root(&leaves[lo..hi]));
            }
            break;
        }
        let k = split_point(hi - lo);
        if m <= k {
            path.push(tree_root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(tree_root(&leaves[lo..lo + k]));
            lo += k;
            m -= k;
            complete = false;
        }
    }
    path.reverse();
    Some(path)
}

/// Bit length of `x`: 0 for 0.
fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// How many hashes an inclusion proof for `index < size` has.
fn inclusion_len(index: u64, size: u64) -> usize {
    let inner = bit_len(index ^ (size - 1));
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// How many hashes a consistency proof for `0 < old < new` has.
fn consistency_len(old: u64, new: u64) -> usize {
    let shift = old.trailing_zeros();
    let first = usize::from(!old.is_power_of_two());
    first + inclusion_len(old - 1, new) - shift as usize
}

/// RFC 9162 §2.1.3.2: the root an inclusion proof leads to, or why it
/// cannot be valid.
pub(crate) fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    path: &[Hash],
) -> Result<Hash, String> {
    if index >= size {
        return Err(format!(
            "position {index} is not below the tree size {size}"
        ));
    }
    let expected = inclusion_len(index, size);
    if path.len() != expected {
        return Err(format!(
            "it has {} hashes; a proof for position {index} in a tree of size {size} has {expected}",
            path.len()
        ));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return Err("it has more hashes than the tree has levels".into());
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err("it has fewer hashes than the tree has levels".into());
    }
    Ok(r)
}

/// RFC 9162 §2.1.3.2: checks that `leaf` is at `index` in the tree of
/// `size` leaves whose root is `root`.
pub(crate) fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    path: &[Hash],
    root: &Hash,
) -> Result<(), String> {
    if root_from_inclusion(index, size, leaf, path)? != *root {
        return Err("it leads to a different root hash".into());
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree of `new_size` leaves with root
/// `new_root` extends the tree of `old_size` leaves with root `old_root`.
///
/// The RFC covers `0 < old_size < new_size`. Beyond it: equal sizes need
/// an empty proof and equal roots; old size 0 needs an empty proof and the
/// empty tree's root (every log extends the empty log).
pub(crate) fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> Result<(), String> {
    if old_size > new_size {
        return Err("the old tree is larger than the new one".into());
    }
    if old_size == new_size || old_size == 0 {
        if !path.is_empty() {
            return Err(format!("it has {} hashes; this proof has none", path.len()));
        }
        if old_size == 0 && *old_root != empty_root() {
            return Err("the old root is not the empty tree's root".into());
        }
        if old_size == new_size && old_root != new_root {
            return Err("the trees have the same size but different roots".into());
        }
        return Ok(());
    }
    let expected = consistency_len(old_size, new_size);
    if path.len() != expected {
        return Err(format!(
            "it has {} hashes; a proof from size {old_size} to {new_size} has {expected}",
            path.len()
        ));
    }
    // Step 2: a power-of-two old tree is itself a node of the new tree, and
    // the proof leaves out its hash.
    let prepended;
    let path: &[Hash] = if old_size.is_power_of_two() {
        prepended = [&[*old_root][..], path].concat();
        &prepended
    } else {
        path
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err("it has more hashes than the tree has levels".into());
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err("it has fewer hashes than the tree has levels".into());
    }
    if fr != *old_root {
        return Err("it does not lead to the old root hash".into());
    }
    if sr != *new_root {
        return Err("it does not lead to the new root hash".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::tlog::test_support::{change, change_leaves, test_registry};
    use proptest::prelude::*;

    fn h(hex_text: &str) -> Hash {
        hex::decode(hex_text).unwrap().try_into().unwrap()
    }

    // The RFC 6962 reference inputs and roots used by Certificate
    // Transparency's merkle tests, as published in
    // github.com/transparency-dev/merkle testonly/constants.go (LeafInputs,
    // RootHashes) and proof/verify_test.go (inclusionProofs,
    // consistencyProofs, whose leaf numbers are 1-based).
    const CT_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    /// (0-based leaf index, tree size, audit path).
    const CT_INCLUSION: [(u64, u64, &[&str]); 4] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    /// (old size, new size, proof).
    const CT_CONSISTENCY: [(u64, u64, &[&str]); 4] = [
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn ct_leaves() -> Vec<Hash> {
        CT_INPUTS
            .iter()
            .map(|i| leaf_hash(&hex::decode(i).unwrap()))
            .collect()
    }

    fn hashes(list: &[&str]) -> Vec<Hash> {
        list.iter().map(|x| h(x)).collect()
    }

    /// RFC 6962 MTH straight from its recursive definition.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn roots_match_the_rfc6962_reference_vectors() {
        let leaves = ct_leaves();
        for (size, root) in CT_ROOTS.iter().enumerate() {
            assert_eq!(tree_root(&leaves[..size]), h(root), "size {size}");
        }
    }

    #[test]
    fn inclusion_proofs_match_the_reference_vectors() {
        let leaves = ct_leaves();
        for (index, size, path) in CT_INCLUSION {
            let size_us = size as usize;
            let got = inclusion_path(&leaves[..size_us], index as usize).unwrap();
            assert_eq!(got, hashes(path), "index {index} size {size}");
            let root = h(CT_ROOTS[size_us]);
            verify_inclusion(index, size, &leaves[index as usize], &got, &root).unwrap();
        }
        // A one-leaf tree's root is its leaf; the proof is empty.
        assert_eq!(inclusion_path(&leaves[..1], 0).unwrap(), Vec::<Hash>::new());
        verify_inclusion(0, 1, &leaves[0], &[], &h(CT_ROOTS[1])).unwrap();
        assert!(inclusion_path(&leaves[..3], 3).is_none());
        assert!(verify_inclusion(0, 0, &leaves[0], &[], &empty_root()).is_err());
    }

    #[test]
    fn consistency_proofs_match_the_reference_vectors() {
        let leaves = ct_leaves();
        for (old, new, proof) in CT_CONSISTENCY {
            let got = consistency_path(&leaves[..new as usize], old as usize).unwrap();
            assert_eq!(got, hashes(proof), "{old} -> {new}");
            let (r1, r2) = (h(CT_ROOTS[old as usize]), h(CT_ROOTS[new as usize]));
            verify_consistency(old, new, &r1, &r2, &got).unwrap();
            // Swapped roots must fail.
            assert!(verify_consistency(old, new, &r2, &r1, &got).is_err());
        }
    }

    #[test]
    fn trivial_consistency_cases() {
        let leaves = ct_leaves();
        let (r0, r1, r3) = (empty_root(), h(CT_ROOTS[1]), h(CT_ROOTS[3]));
        verify_consistency(0, 0, &r0, &r0, &[]).unwrap();
        verify_consistency(0, 3, &r0, &r3, &[]).unwrap();
        verify_consistency(3, 3, &r3, &r3, &[]).unwrap();
        assert!(
            verify_consistency(3, 3, &r3, &r1, &[]).is_err(),
            "same size, other root"
        );
        assert!(
            verify_consistency(0, 3, &r1, &r3, &[]).is_err(),
            "size 0, non-empty root"
        );
        assert!(
            verify_consistency(3, 3, &r3, &r3, &[r0]).is_err(),
            "needless hash"
        );
        assert!(
            verify_consistency(3, 1, &r3, &r1, &[]).is_err(),
            "shrinking log"
        );
        assert!(
            verify_consistency(1, 3, &r1, &r3, &[]).is_err(),
            "empty proof"
        );
        assert_eq!(consistency_path(&leaves, 0).unwrap(), Vec::<Hash>::new());
        assert_eq!(consistency_path(&leaves, 8).unwrap(), Vec::<Hash>::new());
        assert!(consistency_path(&leaves, 9).is_none());
    }

    #[test]
    fn expected_lengths_agree_with_generated_proofs() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=leaves.len() {
            for m in 0..n {
                let path = inclusion_path(&leaves[..n], m).unwrap();
                assert_eq!(
                    path.len(),
                    inclusion_len(m as u64, n as u64),
                    "PATH({m}, {n})"
                );
                if m > 0 {
                    let proof = consistency_path(&leaves[..n], m).unwrap();
                    assert_eq!(
                        proof.len(),
                        consistency_len(m as u64, n as u64),
                        "PROOF({m}, {n})"
                    );
                }
            }
        }
    }

    #[test]
    fn change_leaf_is_the_rfc6962_leaf_of_registry_then_change() {
        let mut data = test_registry().as_bytes().to_vec();
        data.extend_from_slice(&change(7).0);
        assert_eq!(data.len(), 48);
        assert_eq!(
            change_leaf_hash(&test_registry(), &change(7)),
            leaf_hash(&data)
        );
    }

    proptest! {
        #[test]
        fn root_matches_the_recursive_definition(n in 0usize..300) {
            let leaves = change_leaves(n);
            prop_assert_eq!(tree_root(&leaves), reference_root(&leaves));
        }
    }
}
