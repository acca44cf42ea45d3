//! Checkpoints: the signed heads of a replica's log, in the
//! [c2sp.org/tlog-checkpoint] format, as [c2sp.org/signed-note]s —
//! writing, signing, parsing and verifying them.
//!
//! [c2sp.org/tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
//! [c2sp.org/signed-note]: https://c2sp.org/signed-note

use ed25519_dalek::Signature;
use sha2::{Digest, Sha256};

use super::base64::{base64_decode, base64_encode};
use super::merkle::Hash;
use super::{LogError, excerpt};
use crate::identity::{Identity, PublicKey};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::tlog::merkle::empty_root;
    use crate::trust::tlog::test_support::{replica, signed_checkpoint};
    use proptest::prelude::*;

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
}
