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
//! [RFC 6962]: https://www.rfc-editor.org/rfc/rfc6962
//! [c2sp.org/tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
//! [c2sp.org/signed-note]: https://c2sp.org/signed-note

use automerge::ChangeHash;
use ed25519_dalek::Signature;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::identity::{Identity, PublicKey};
use crate::ids::RegistryId;

/// A SHA-256 hash: a leaf hash, an interior node or a root.
pub(crate) type Hash = [u8; 32];

/// Prefix of every replica log's origin and key name.
const ORIGIN_PREFIX: &str = "chittysync.replica/";

/// Signature type byte for Ed25519 in c2sp.org/signed-note key ids.
const SIG_TYPE_ED25519: u8 = 0x01;

/// Largest signed note we read. Go's sumdb/note and the `signed_note` crate
/// use the same bound; the spec asks verifiers for some limit.
const MAX_NOTE_BYTES: usize = 1_000_000;

/// Most signature lines we read (the spec requires accepting at least 16).
const MAX_SIGNATURES: usize = 100;

/// The em dash and space that open every signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

const INCLUSION_FORMAT: &str = "chittysync.inclusion-proof.v1";
const CONSISTENCY_FORMAT: &str = "chittysync.consistency-proof.v1";

// ---------------------------------------------------------------------------
// RFC 6962 hashing

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

// ---------------------------------------------------------------------------
// Errors

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

// ---------------------------------------------------------------------------
// Checkpoints and signed notes

/// A signed head of a replica's log: the log's origin, how many changes it
/// holds, and its Merkle root.
///
/// Its text form is a [c2sp.org/tlog-checkpoint] signed by the replica:
///
/// ```text
/// chittysync.replica/<64 hex digits of the replica's public key>
/// <tree size in decimal>
/// <base64 root hash>
///
/// — chittysync.replica/<64 hex digits> <base64(key id ‖ Ed25519 signature)>
/// ```
///
/// A `Checkpoint` value is only trustworthy when it came from
/// [`Checkpoint::verify`].
///
/// [c2sp.org/tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    key: PublicKey,
    size: u64,
    root: [u8; 32],
}

impl Checkpoint {
    /// A checkpoint of `log`'s log at `size` changes with Merkle root `root`.
    pub fn new(log: &PublicKey, size: u64, root: [u8; 32]) -> Self {
        Checkpoint {
            origin: Checkpoint::origin_for(log),
            key: *log,
            size,
            root,
        }
    }

    /// The origin (and signed-note key name) of a replica's log:
    /// `chittysync.replica/<64 hex digits of its public key>`.
    pub fn origin_for(log: &PublicKey) -> String {
        format!("{ORIGIN_PREFIX}{log}")
    }

    /// The c2sp.org/signed-note verifier key for a replica's checkpoints:
    /// `<key name>+<hex key id>+<base64(0x01 ‖ public key)>`.
    ///
    /// Other signed-note tools (Go's `golang.org/x/mod/sumdb/note`, the
    /// `signed_note` crate) verify our checkpoints with it.
    pub fn verifier_key(log: &PublicKey) -> String {
        verifier_key(&Checkpoint::origin_for(log), log)
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The replica whose log this is.
    pub fn log_key(&self) -> PublicKey {
        self.key
    }

    /// How many changes the log held.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The log's RFC 6962 Merkle root at that size.
    pub fn root(&self) -> &[u8; 32] {
        &self.root
    }

    /// The note text (the part the signature covers).
    fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            base64_encode(&self.root)
        )
    }

    /// Signs the checkpoint as a c2sp.org/signed-note with `identity`,
    /// which must be the log's own key.
    pub fn sign(&self, identity: &Identity) -> Result<String, LogError> {
        if identity.public_key() != self.key {
            return Err(LogError::WrongSigner {
                origin: self.origin.clone(),
                signer: identity.public_key(),
            });
        }
        Ok(sign_note(&self.body(), &self.origin, identity))
    }

    /// Reads a signed checkpoint of `log`'s log, checking its signature.
    ///
    /// As c2sp.org/signed-note requires, signature lines from other keys
    /// (witnesses, say) are ignored, a failing signature from `log` rejects
    /// the note, and at least one signature from `log` must verify.
    /// ChittySync checkpoints carry no extension lines; a note with any is
    /// refused.
    pub fn verify(note: &str, log: &PublicKey) -> Result<Checkpoint, LogError> {
        let origin = Checkpoint::origin_for(log);
        // The text means nothing until the signature over it is checked.
        let text = open_note(note, &origin, log)?;
        let checkpoint = parse_checkpoint(text, log)?;
        if checkpoint.origin != origin {
            return Err(LogError::WrongOrigin {
                expected: origin,
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

/// c2sp.org/signed-note key id: `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]`.
fn key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', SIG_TYPE_ED25519]);
    h.update(key.as_bytes());
    let digest: Hash = h.finalize().into();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn verifier_key(name: &str, key: &PublicKey) -> String {
    let mut typed = vec![SIG_TYPE_ED25519];
    typed.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, key)),
        base64_encode(&typed)
    )
}

/// Signs `text` (ending in a newline) as a signed note under key `name`.
fn sign_note(text: &str, name: &str, identity: &Identity) -> String {
    debug_assert!(text.ends_with('\n') && is_valid_key_name(name));
    let mut sig = Vec::with_capacity(4 + 64);
    sig.extend_from_slice(&key_id(name, &identity.public_key()));
    sig.extend_from_slice(&identity.sign(text.as_bytes()).to_bytes());
    format!("{text}\n{SIGNATURE_PREFIX}{name} {}\n", base64_encode(&sig))
}

/// Key names are non-empty and hold no Unicode space and no `+`.
fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '+')
}

/// At most 64 characters of untrusted text, for error messages.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Parses one signature line into its key name and decoded bytes.
fn parse_signature_line(line: &str) -> Result<(&str, Vec<u8>), String> {
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or("does not start with an em dash (U+2014) and a space")?;
    let (name, sig) = rest
        .split_once(' ')
        .ok_or("has no space between the key name and the signature")?;
    if !is_valid_key_name(name) {
        return Err(format!(
            "key name '{}' is empty or holds a space or '+'",
            excerpt(name)
        ));
    }
    let sig = base64_decode(sig).ok_or("the signature is not standard base64")?;
    if sig.len() < 5 {
        return Err("the signature is shorter than a key id and one byte".into());
    }
    Ok((name, sig))
}

/// Checks `note` is a well-formed signed note with a valid signature by
/// `key` under key name `name`, and returns its text (the signed part).
fn open_note<'a>(note: &'a str, name: &str, key: &PublicKey) -> Result<&'a str, LogError> {
    let malformed = |reason: String| LogError::MalformedNote { reason };
    if note.len() > MAX_NOTE_BYTES {
        return Err(malformed(format!(
            "it is {} bytes long; the limit is {MAX_NOTE_BYTES}",
            note.len()
        )));
    }
    if let Some(c) = note.chars().find(|&c| c < ' ' && c != '\n') {
        return Err(malformed(format!(
            "it contains the control character U+{:04X}; only newline is allowed",
            u32::from(c)
        )));
    }
    // The text ends at the last blank line; the signature lines follow it.
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| malformed("no blank line separates the text from the signatures".into()))?;
    let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
    if signatures.is_empty() {
        return Err(malformed("no signature lines follow the blank line".into()));
    }
    let signatures = signatures
        .strip_suffix('\n')
        .ok_or_else(|| malformed("the last signature line does not end in a newline".into()))?;
    let id = key_id(name, key);
    let mut verified = false;
    for (i, line) in signatures.split('\n').enumerate() {
        if i == MAX_SIGNATURES {
            return Err(malformed(format!(
                "it has more than {MAX_SIGNATURES} signature lines"
            )));
        }
        let (line_name, sig) = parse_signature_line(line)
            .map_err(|why| malformed(format!("signature line {} {why}", i + 1)))?;
        // Lines from other keys (witnesses, rotated keys) are not ours to judge.
        if line_name != name || sig[..4] != id {
            continue;
        }
        let sig =
            <[u8; 64]>::try_from(&sig[4..]).map_err(|_| LogError::BadSignature { key: *key })?;
        key.verifying_key()
            .verify_strict(text.as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| LogError::BadSignature { key: *key })?;
        verified = true;
    }
    if !verified {
        return Err(LogError::NotSignedBy {
            key: *key,
            key_name: name.to_owned(),
            key_id: hex::encode(id),
        });
    }
    Ok(text)
}

/// Parses a checkpoint's note text: origin, tree size and root, nothing else.
fn parse_checkpoint(text: &str, key: &PublicKey) -> Result<Checkpoint, LogError> {
    let malformed = |reason: String| LogError::MalformedCheckpoint { reason };
    let lines: Vec<&str> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .collect();
    if lines.len() < 3 {
        return Err(malformed(format!(
            "its text has {} line(s); a checkpoint has an origin, a tree size and a root hash",
            lines.len()
        )));
    }
    if lines.len() > 3 {
        return Err(malformed(format!(
            "its text has {} lines; ChittySync checkpoints have exactly three (no extension lines)",
            lines.len()
        )));
    }
    let (origin, size, root) = (lines[0], lines[1], lines[2]);
    if origin.is_empty() {
        return Err(malformed("line 1 (the origin) is empty".into()));
    }
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!(
            "line 2 (the tree size) '{}' is not a decimal number",
            excerpt(size)
        )));
    }
    if size.len() > 1 && size.starts_with('0') {
        return Err(malformed(format!(
            "line 2 (the tree size) '{}' has a leading zero",
            excerpt(size)
        )));
    }
    let size: u64 = size.parse().map_err(|_| {
        malformed(format!(
            "line 2 (the tree size) '{}' is too large",
            excerpt(size)
        ))
    })?;
    let root = base64_decode(root)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            malformed(format!(
                "line 3 (the root hash) '{}' is not the standard base64 of 32 bytes",
                excerpt(root)
            ))
        })?;
    Ok(Checkpoint {
        origin: origin.to_owned(),
        key: *key,
        size,
        root,
    })
}

// ---------------------------------------------------------------------------
// Proofs

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
        if checkpoint.size != self.size {
            return Err(LogError::SizeMismatch {
                which: "the checkpoint",
                checkpoint: checkpoint.size,
                proof: self.size,
            });
        }
        self.verify(&checkpoint.root)?;
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
            if checkpoint.size != proof {
                return Err(LogError::SizeMismatch {
                    which,
                    checkpoint: checkpoint.size,
                    proof,
                });
            }
        }
        self.verify(&old.root, &new.root)?;
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

// ---------------------------------------------------------------------------
// Standard base64 (RFC 4648 §4), padded; decoding accepts only the
// canonical encoding, so one value has one text.

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(
                    BASE64_ALPHABET[(n >> (18 - 6 * i)) as usize & 63],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let groups = text.len() / 4;
    let mut out = Vec::with_capacity(groups * 3);
    for (g, chunk) in text.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && g + 1 != groups) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | base64_value(c)?;
        }
        n <<= 6 * pad;
        // Bits past the last whole byte must be zero in canonical base64.
        if n & ((1u32 << (8 * pad)) - 1) != 0 {
            return None;
        }
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn test_registry() -> RegistryId {
        RegistryId::from_bytes(&[0x5a; 16]).unwrap()
    }

    fn change(i: u64) -> ChangeHash {
        ChangeHash(Sha256::digest(i.to_be_bytes()).into())
    }

    fn change_leaves(n: usize) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| change_leaf_hash(&test_registry(), &change(i)))
            .collect()
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

    // --- signed notes and checkpoints

    /// The example from golang.org/x/mod/sumdb/note (also in the
    /// `signed_note` crate's docs): signer key
    /// `PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz`,
    /// verifier key `PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW`.
    const NEUMANN_SKEY: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const NEUMANN_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const NEUMANN_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                                then you don't know what your problem is.\n";
    const NEUMANN_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
        then you don't know what your problem is.\n\
        \n\
        \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn neumann() -> Identity {
        let skey = base64_decode(NEUMANN_SKEY).unwrap();
        assert_eq!(skey[0], SIG_TYPE_ED25519);
        Identity::from_secret_bytes(skey[1..].try_into().unwrap())
    }

    #[test]
    fn signed_notes_match_the_go_reference_example() {
        let id = neumann();
        let key = id.public_key();
        assert_eq!(verifier_key("PeterNeumann", &key), NEUMANN_VKEY);
        assert_eq!(hex::encode(key_id("PeterNeumann", &key)), "c74f20a3");
        assert_eq!(sign_note(NEUMANN_TEXT, "PeterNeumann", &id), NEUMANN_NOTE);
        assert_eq!(
            open_note(NEUMANN_NOTE, "PeterNeumann", &key),
            Ok(NEUMANN_TEXT)
        );
    }

    #[test]
    fn base64_round_trips_and_is_strict() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_encode(&bytes);
            assert_eq!(base64_decode(&text), Some(bytes));
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        for bad in ["Zm8", "Zm9=", "Zg==Zg==", "Z===", "Zm-v", "Zm8=\n", "Zh=="] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    fn replica() -> Identity {
        Identity::from_secret_bytes([0x42; 32])
    }

    fn signed_checkpoint(size: u64) -> (Checkpoint, String) {
        let id = replica();
        let root = tree_root(&change_leaves(size as usize));
        let checkpoint = Checkpoint::new(&id.public_key(), size, root);
        let note = checkpoint.sign(&id).unwrap();
        (checkpoint, note)
    }

    #[test]
    fn checkpoint_round_trips_in_the_c2sp_format() {
        let (checkpoint, note) = signed_checkpoint(5);
        let key = replica().public_key();
        let origin = format!("chittysync.replica/{key}");
        let expected_body = format!("{origin}\n5\n{}\n", base64_encode(checkpoint.root()));
        assert!(note.starts_with(&format!("{expected_body}\n\u{2014} {origin} ")));
        assert!(note.ends_with('\n'));
        let verified = Checkpoint::verify(&note, &key).unwrap();
        assert_eq!(verified, checkpoint);
        assert_eq!(verified.origin(), origin);
        assert_eq!(verified.size(), 5);
        assert_eq!(verified.log_key(), key);
        // The empty log has a checkpoint too.
        let (empty, note) = signed_checkpoint(0);
        assert_eq!(empty.root(), &empty_root());
        assert_eq!(Checkpoint::verify(&note, &key).unwrap(), empty);
    }

    #[test]
    fn checkpoint_from_another_key_is_refused() {
        let (_, note) = signed_checkpoint(3);
        let stranger = Identity::from_secret_bytes([0x43; 32]).public_key();
        let err = Checkpoint::verify(&note, &stranger).unwrap_err();
        assert!(
            matches!(err, LogError::NotSignedBy { key, .. } if key == stranger),
            "{err}"
        );

        let checkpoint = Checkpoint::new(&stranger, 3, [0; 32]);
        let err = checkpoint.sign(&replica()).unwrap_err();
        assert!(matches!(err, LogError::WrongSigner { .. }), "{err}");
    }

    #[test]
    fn forged_origin_under_a_valid_signature_is_refused() {
        // Signed by the replica's key under its key name, but naming another log.
        let id = replica();
        let key = id.public_key();
        let body = format!("example.com/log\n1\n{}\n", base64_encode(&[7; 32]));
        let note = sign_note(&body, &Checkpoint::origin_for(&key), &id);
        let err = Checkpoint::verify(&note, &key).unwrap_err();
        assert!(matches!(err, LogError::WrongOrigin { .. }), "{err}");
    }

    #[test]
    fn malformed_checkpoint_bodies_are_refused_with_reasons() {
        let id = replica();
        let key = id.public_key();
        let origin = Checkpoint::origin_for(&key);
        let root = base64_encode(&[9; 32]);
        let cases = [
            (
                format!("{origin}\n5\n"),
                "has an origin, a tree size and a root",
            ),
            (
                format!("{origin}\n5\n{root}\nextension\n"),
                "no extension lines",
            ),
            (format!("{origin}\n05\n{root}\n"), "leading zero"),
            (format!("{origin}\n+5\n{root}\n"), "not a decimal number"),
            (format!("{origin}\n\n{root}\n"), "not a decimal number"),
            (
                format!("{origin}\n99999999999999999999\n{root}\n"),
                "too large",
            ),
            (
                format!("{origin}\n5\n{}\n", base64_encode(&[9; 31])),
                "base64 of 32 bytes",
            ),
            (
                format!("{origin}\n5\n{}\n", hex::encode([9; 32])),
                "base64 of 32 bytes",
            ),
        ];
        for (body, why) in cases {
            let note = sign_note(&body, &origin, &id);
            let err = Checkpoint::verify(&note, &key).unwrap_err();
            assert!(
                matches!(err, LogError::MalformedCheckpoint { .. }),
                "{body:?}: {err}"
            );
            assert!(err.to_string().contains(why), "{body:?}: {err}");
        }
    }

    #[test]
    fn malformed_notes_are_refused_with_reasons() {
        let (_, note) = signed_checkpoint(4);
        let key = replica().public_key();
        let (body, sig_line) = note.split_once("\n\n").unwrap();
        let sig_b64 = sig_line.rsplit_once(' ').unwrap().1.trim_end();
        let cases = [
            (note.replacen("\n\n", "\n", 1), "no blank line"),
            (format!("{body}\n\n"), "no signature lines"),
            (note.trim_end().to_owned(), "does not end in a newline"),
            (note.replace('\u{2014}', "--"), "em dash"),
            (note.replacen('\n', "\r\n", 1), "control character U+000D"),
            (
                format!("{body}\n\n{}", sig_line.replacen(' ', "  ", 2)),
                "key name",
            ),
            (
                format!("{body}\n\n{}", sig_line.replace(sig_b64, "not base64!")),
                "base64",
            ),
            (
                format!("{body}\n\n\u{2014} x AAAA\n"),
                "shorter than a key id",
            ),
            (
                format!("{body}\n\n{}", sig_line.replacen("chittysync", "a+b", 1)),
                "key name",
            ),
            (
                format!("{body}\n\n{}", sig_line.repeat(MAX_SIGNATURES + 1)),
                "more than",
            ),
        ];
        for (text, why) in cases {
            let err = Checkpoint::verify(&text, &key).unwrap_err();
            assert!(
                matches!(err, LogError::MalformedNote { .. }),
                "{text:?}: {err}"
            );
            assert!(err.to_string().contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn unknown_signatures_are_ignored_but_a_bad_known_one_rejects() {
        let (checkpoint, note) = signed_checkpoint(6);
        let key = replica().public_key();
        let (body, ours) = note.split_once("\n\n").unwrap();
        let witness = Identity::from_secret_bytes([0x77; 32]);
        let witness_line = sign_note(&format!("{body}\n"), "witness.example/w1", &witness);
        let witness_line = witness_line.split_once("\n\n").unwrap().1;
        // Same name as ours but another key id: an unknown key.
        let impostor = sign_note(&format!("{body}\n"), &checkpoint.origin, &witness);
        let impostor = impostor.split_once("\n\n").unwrap().1;

        for sigs in [
            format!("{witness_line}{ours}"),
            format!("{ours}{witness_line}"),
            format!("{impostor}{ours}"),
            format!("{ours}{ours}"),
        ] {
            let text = format!("{body}\n\n{sigs}");
            assert_eq!(
                Checkpoint::verify(&text, &key).unwrap(),
                checkpoint,
                "{text}"
            );
        }
        let only_others = format!("{body}\n\n{witness_line}{impostor}");
        let err = Checkpoint::verify(&only_others, &key).unwrap_err();
        assert!(matches!(err, LogError::NotSignedBy { .. }), "{err}");

        // Our key id and name over a signature of another text.
        let (_, other_note) = signed_checkpoint(7);
        let stale = other_note.split_once("\n\n").unwrap().1;
        let text = format!("{body}\n\n{ours}{stale}");
        let err = Checkpoint::verify(&text, &key).unwrap_err();
        assert_eq!(err, LogError::BadSignature { key });
    }

    proptest! {
        #[test]
        fn any_one_byte_change_to_the_body_is_refused(
            pos in any::<prop::sample::Index>(),
            replacement in prop_oneof![Just(b'\n'), 0x20u8..0x7f],
        ) {
            let (_, note) = signed_checkpoint(11);
            let key = replica().public_key();
            let body_len = note.find("\n\n").unwrap() + 1;
            let pos = pos.index(body_len);
            let mut bytes = note.into_bytes();
            prop_assume!(bytes[pos] != replacement);
            bytes[pos] = replacement;
            let altered = String::from_utf8(bytes).unwrap();
            prop_assert!(Checkpoint::verify(&altered, &key).is_err(), "{}", altered);
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
