//! Our checkpoints are c2sp.org/signed-note notes that an independent
//! implementation — the `signed_note` crate from cloudflare/azul, a port of
//! Go's golang.org/x/mod/sumdb/note — accepts, and notes it signs for a
//! replica's key are accepted by us.

use chittysync::{Checkpoint, Identity, LogError};
use signed_note::{Note, NoteError, StandardSigner, StandardVerifier, VerifierList};

const SEED: [u8; 32] = [0x3c; 32];

fn replica() -> Identity {
    Identity::from_secret_bytes(SEED)
}

fn verifiers(vkey: &str) -> VerifierList {
    VerifierList::new(vec![Box::new(StandardVerifier::new(vkey).unwrap())])
}

/// Standard base64 of `bytes`, for building a `signed_note` signer key.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn signed_note_crate_verifies_our_checkpoints() {
    let id = replica();
    let key = id.public_key();
    for (size, root) in [
        (0u64, [0u8; 32]),
        (1, [0xab; 32]),
        (123_456_789, [0x17; 32]),
    ] {
        let note = Checkpoint::new(&key, size, root).sign(&id).unwrap();

        let vkey = Checkpoint::verifier_key(&key);
        // The verifier key's parser recomputes our key id from name and key.
        let parsed = Note::from_bytes(note.as_bytes()).unwrap();
        let (verified, unverified) = parsed.verify(&verifiers(&vkey)).unwrap();
        assert_eq!(verified.len(), 1);
        assert!(unverified.is_empty());
        assert_eq!(verified[0].name(), Checkpoint::origin_for(&key));
        // It agrees on what the signature covers, and re-encodes our bytes exactly.
        let text = std::str::from_utf8(parsed.text()).unwrap();
        assert_eq!(text, note.split_once("\n\n").unwrap().0.to_owned() + "\n");
        assert_eq!(parsed.to_bytes(), note.as_bytes());
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(Checkpoint::origin_for(&key).as_str()));
        assert_eq!(lines.next(), Some(size.to_string().as_str()));
    }
}

#[test]
fn signed_note_crate_rejects_our_checkpoint_when_altered_or_for_another_key() {
    let id = replica();
    let key = id.public_key();
    let note = Checkpoint::new(&key, 42, [0x55; 32]).sign(&id).unwrap();

    let altered = note.replacen("\n42\n", "\n43\n", 1);
    let parsed = Note::from_bytes(altered.as_bytes()).unwrap();
    let err = parsed
        .verify(&verifiers(&Checkpoint::verifier_key(&key)))
        .unwrap_err();
    assert!(matches!(err, NoteError::InvalidSignature { .. }), "{err}");

    let other = Identity::from_secret_bytes([0x3d; 32]).public_key();
    let parsed = Note::from_bytes(note.as_bytes()).unwrap();
    let err = parsed
        .verify(&verifiers(&Checkpoint::verifier_key(&other)))
        .unwrap_err();
    assert!(matches!(err, NoteError::UnverifiedNote), "{err}");
}

/// A `signed_note` signer key for `seed` under key name `name`:
/// `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ seed)>`, with the key id
/// computed by `signed_note` itself.
fn signer(name: &str, seed: [u8; 32]) -> StandardSigner {
    let public = Identity::from_secret_bytes(seed).public_key();
    let mut typed_public = vec![0x01];
    typed_public.extend_from_slice(public.as_bytes());
    let id = signed_note::key_id(name, &typed_public);
    let mut typed_seed = vec![0x01];
    typed_seed.extend_from_slice(&seed);
    StandardSigner::new(&format!(
        "PRIVATE+KEY+{name}+{id:08x}+{}",
        base64(&typed_seed)
    ))
    .unwrap()
}

#[test]
fn verifier_key_matches_signed_note_key_id() {
    let key = replica().public_key();
    let origin = Checkpoint::origin_for(&key);
    let mut typed_public = vec![0x01];
    typed_public.extend_from_slice(key.as_bytes());
    let expected = format!(
        "{origin}+{:08x}+{}",
        signed_note::key_id(&origin, &typed_public),
        base64(&typed_public)
    );
    assert_eq!(Checkpoint::verifier_key(&key), expected);
}

#[test]
fn we_verify_checkpoints_signed_by_the_signed_note_crate() {
    let id = replica();
    let key = id.public_key();
    let origin = Checkpoint::origin_for(&key);
    let root = [0xc4u8; 32];
    let text = format!("{origin}\n77\n{}\n", base64(&root));
    let mut note = Note::new(text.as_bytes(), &[]).unwrap();
    note.add_sigs(&[&signer(&origin, SEED)]).unwrap();
    let note = String::from_utf8(note.to_bytes()).unwrap();

    let checkpoint = Checkpoint::verify(&note, &key).unwrap();
    assert_eq!(checkpoint, Checkpoint::new(&key, 77, root));
    // Ed25519 is deterministic: both implementations write the same note.
    assert_eq!(Checkpoint::new(&key, 77, root).sign(&id).unwrap(), note);

    // A witness cosignature, added by signed_note from a key we do not know,
    // is ignored.
    let witness_seed = [0x3e; 32];
    let witness_name =
        Checkpoint::origin_for(&Identity::from_secret_bytes(witness_seed).public_key());
    let mut cosigned = Note::from_bytes(note.as_bytes()).unwrap();
    cosigned
        .add_sigs(&[&signer(&witness_name, witness_seed)])
        .unwrap();
    let cosigned = String::from_utf8(cosigned.to_bytes()).unwrap();
    assert_eq!(cosigned.matches('\u{2014}').count(), 2);
    assert_eq!(Checkpoint::verify(&cosigned, &key).unwrap(), checkpoint);

    // A note signed by signed_note under our name but with another key is refused.
    let mut forged = Note::new(text.as_bytes(), &[]).unwrap();
    forged.add_sigs(&[&signer(&origin, [0x3f; 32])]).unwrap();
    let forged = String::from_utf8(forged.to_bytes()).unwrap();
    let err = Checkpoint::verify(&forged, &key).unwrap_err();
    assert!(matches!(err, LogError::NotSignedBy { .. }), "{err}");
}
