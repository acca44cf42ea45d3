//! Fuzz targets for every decoder of bytes that come from the network or
//! from disk: bundles, the peer protocol's frames, envelopes and payloads,
//! checkpoints and proofs.
//!
//! Each target is a function of arbitrary bytes that panics only when a
//! decoder breaks a promise (a panic inside, garbage accepted, a value that
//! does not encode back to itself). The same functions run two ways:
//!
//! - on the pinned stable toolchain, by this crate's runner, which mutates
//!   seed inputs for a given time: `cargo run -p chittysync-fuzz --release --
//!   --seconds 60` (every target) or `-- bundle frames --seconds 60`; the
//!   per-target binaries replay files: `cargo run -p chittysync-fuzz --bin
//!   bundle -- crash-…`;
//! - under libFuzzer with coverage guidance, where a nightly toolchain and
//!   cargo-fuzz are installed: `cargo +nightly fuzz run bundle`.
//!
//! Inputs that made a target fail are kept in `fuzz/crashers/TARGET/` and
//! replayed by this crate's tests.

pub mod runner;
mod seeds;

use chittysync::{
    Bundle, Checkpoint, ConsistencyProof, Identity, InclusionProof, LogError, Replica,
};

/// A fuzz target: arbitrary bytes in; a panic means a bug.
pub type Target = fn(&[u8]);

/// Every target, by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("bundle", bundle),
    ("envelope", envelope),
    ("sync_payload", sync_payload),
    ("frames", frames),
    ("checkpoint", checkpoint),
    ("proofs", proofs),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Valid inputs of target `name` to start mutating from, made fresh by the
/// library itself so they follow the current formats.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    seeds::for_target(name)
}

/// Bundles arrive from other replicas and from files: decoding and
/// importing any bytes gives an error or a verified import, never a panic,
/// and what decodes encodes back to bytes that decode the same.
pub fn bundle(data: &[u8]) {
    let Ok(bundle) = Bundle::from_bytes(data) else {
        return;
    };
    let again = Bundle::from_bytes(&bundle.to_bytes()).expect("a re-encoded bundle decodes");
    assert_eq!(again.len(), bundle.len());
    assert_eq!(again.registry(), bundle.registry());
    assert_eq!(again.to_bytes(), bundle.to_bytes());
    let dir = tempfile::tempdir().expect("a scratch directory");
    let replica = Replica::open(dir.path().join("fuzz.db")).expect("a fresh replica opens");
    if replica.import(bundle).is_ok() {
        // What was accepted verifies.
        let report = replica.verify(None).expect("verify runs");
        assert!(!report.registries.is_empty());
    }
}

/// A peer protocol envelope: see `chittysync::fuzzing::envelope`.
pub fn envelope(data: &[u8]) {
    chittysync::fuzzing::envelope(data);
}

/// The payload of a signed hello or sync envelope: see
/// `chittysync::fuzzing::sync_payload`.
pub fn sync_payload(data: &[u8]) {
    chittysync::fuzzing::sync_payload(data);
}

/// Wire frames before, during and after the Noise handshake: see
/// `chittysync::fuzzing::frames`.
pub fn frames(data: &[u8]) {
    chittysync::fuzzing::frames(data);
}

/// The identity whose log the checkpoint and proof targets read.
fn log_identity() -> Identity {
    Identity::from_secret_bytes(LOG_SEED)
}

const LOG_SEED: [u8; 32] = [0x3c; 32];

/// A signed checkpoint (c2sp.org/signed-note) as text someone hands over:
/// only notes signed by the log's key verify, what verifies is also
/// accepted by an independent implementation (the `signed_note` crate),
/// and signing what was read gives back a note that reads the same.
pub fn checkpoint(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let id = log_identity();
    let key = id.public_key();
    if let Ok(checkpoint) = Checkpoint::verify(&text, &key) {
        let vkey = Checkpoint::verifier_key(&key);
        let verifier = signed_note::StandardVerifier::new(&vkey).expect("our verifier key parses");
        let note = signed_note::Note::from_bytes(text.as_bytes())
            .expect("signed_note reads a note we accepted");
        note.verify(&signed_note::VerifierList::new(vec![Box::new(verifier)]))
            .expect("signed_note verifies a note we accepted");
        let resigned = checkpoint.sign(&id).expect("the log's key signs");
        assert_eq!(Checkpoint::verify(&resigned, &key).ok(), Some(checkpoint));
    }
    // The same text as the body of a note the log's key really signed (by
    // the independent implementation): the checkpoint parser itself sees
    // arbitrary text, and a genuine signature is never called bad.
    let body = format!("{}\n", text.trim_end_matches('\n'));
    let Ok(mut note) = signed_note::Note::new(body.as_bytes(), &[]) else {
        return;
    };
    if note.add_sigs(&[&note_signer(&id)]).is_err() {
        return;
    }
    let note = String::from_utf8(note.to_bytes()).expect("text in, text out");
    match Checkpoint::verify(&note, &key) {
        Ok(checkpoint) => {
            let resigned = checkpoint.sign(&id).expect("the log's key signs");
            assert_eq!(Checkpoint::verify(&resigned, &key).ok(), Some(checkpoint));
        }
        Err(e @ (LogError::BadSignature { .. } | LogError::NotSignedBy { .. })) => {
            panic!("a note the log's key signed: {e}")
        }
        Err(_) => {}
    }
}

/// `signed_note`'s signer for the log's key, under the log's key name.
fn note_signer(id: &Identity) -> signed_note::StandardSigner {
    let name = Checkpoint::origin_for(&id.public_key());
    let mut typed_public = vec![0x01];
    typed_public.extend_from_slice(id.public_key().as_bytes());
    let key_id = signed_note::key_id(&name, &typed_public);
    let mut typed_seed = vec![0x01];
    typed_seed.extend_from_slice(&LOG_SEED);
    signed_note::StandardSigner::new(&format!(
        "PRIVATE+KEY+{name}+{key_id:08x}+{}",
        base64(&typed_seed)
    ))
    .expect("a well-formed signer key")
}

/// Standard base64 with padding.
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

/// Inclusion and consistency proofs as JSON: reading any text gives an
/// error or a proof that writes back to JSON reading the same, and
/// checking a proof against any root never panics.
pub fn proofs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let root = {
        let mut root = [0u8; 32];
        for (i, b) in data.iter().enumerate() {
            root[i % 32] ^= b;
        }
        root
    };
    if let Ok(proof) = InclusionProof::from_json(&text) {
        let again = InclusionProof::from_json(&proof.to_json()).expect("written proofs read");
        assert_eq!(again, proof);
        let _ = proof.verify(&root);
        let _ = proof.verify(&[0; 32]);
    }
    if let Ok(proof) = ConsistencyProof::from_json(&text) {
        let again = ConsistencyProof::from_json(&proof.to_json()).expect("written proofs read");
        assert_eq!(again, proof);
        let _ = proof.verify(&root, &root);
        let _ = proof.verify(&[0; 32], &root);
    }
}
