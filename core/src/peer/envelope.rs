//! Envelopes: every message of the peer protocol, signed by its sender.
//!
//! ```text
//! "CSE1" | sender key: 32 | recipient key: 32 | registry id: 16 (zeros: the
//! whole connection) | nonce: 16 | timestamp: i64 BE ms | kind: u8 |
//! payload length: u32 BE | payload | signature: 64
//! ```
//!
//! The signature is the sender's ed25519 signature over `ENVELOPE_DOMAIN ‖`
//! every byte before it. Naming the recipient means an envelope recorded on
//! one connection is refused on any connection to another replica; the
//! nonce and timestamp let the recipient refuse replays.
//!
//! Decoding checks every length against the input, so hostile bytes give an
//! error, never a panic or a large allocation.

use ed25519_dalek::Signature;

use crate::identity::{Identity, PublicKey};
use crate::ids::RegistryId;
use crate::trust::SignedChange;

const MAGIC: &[u8; 4] = b"CSE1";
const ENVELOPE_DOMAIN: &[u8] = b"chittysync/envelope/v1\n";
const HEADER_LEN: usize = 4 + 32 + 32 + 16 + 16 + 8 + 1 + 4;
const SIGNATURE_LEN: usize = 64;
/// Registry id of envelopes about the whole connection.
pub(crate) const CONNECTION: [u8; 16] = [0; 16];

/// What an envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The registries the sender offers the recipient (connection-level).
    Hello = 1,
    /// An Automerge sync message with the signatures of its changes.
    Sync = 2,
    /// The sender has nothing more to send for this registry now.
    Idle = 3,
    /// The sender refuses this registry (or, connection-level, the peer).
    Refused = 4,
    /// Members' attestations of the registry (a bundle without changes).
    Attest = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Sync,
            3 => Kind::Idle,
            4 => Kind::Refused,
            5 => Kind::Attest,
            _ => return None,
        })
    }
}

/// A decoded envelope whose signature verified.
#[derive(Clone, Debug)]
pub(crate) struct Envelope {
    pub(crate) sender: PublicKey,
    pub(crate) recipient: [u8; 32],
    pub(crate) registry: [u8; 16],
    pub(crate) nonce: [u8; 16],
    pub(crate) timestamp: i64,
    pub(crate) kind: Kind,
    pub(crate) payload: Vec<u8>,
}

impl Envelope {
    /// The registry addressed, `None` for connection-level envelopes.
    pub(crate) fn registry(&self) -> Option<RegistryId> {
        if self.registry == CONNECTION {
            None
        } else {
            RegistryId::from_bytes(&self.registry)
        }
    }
}

/// Encodes and signs an envelope with a fresh nonce and the current time.
pub(crate) fn seal(
    identity: &Identity,
    recipient: &[u8; 32],
    registry: &[u8; 16],
    kind: Kind,
    payload: &[u8],
) -> Vec<u8> {
    let mut nonce = [0u8; 16];
    // A failing random source must not yield a predictable nonce: fall back
    // to the clock mixed with a counter, still unique per process.
    if getrandom::fill(&mut nonce).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        nonce[..8].copy_from_slice(&crate::clock::now_ms().to_be_bytes());
        nonce[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    seal_with(
        identity,
        recipient,
        registry,
        &nonce,
        crate::clock::now_ms(),
        kind,
        payload,
    )
}

/// Encodes and signs an envelope with the given nonce and time.
pub(crate) fn seal_with(
    identity: &Identity,
    recipient: &[u8; 32],
    registry: &[u8; 16],
    nonce: &[u8; 16],
    timestamp: i64,
    kind: Kind,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + SIGNATURE_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(identity.public_key().as_bytes());
    out.extend_from_slice(recipient);
    out.extend_from_slice(registry);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let signature = identity.sign(&signed_bytes(&out));
    out.extend_from_slice(&signature.to_bytes());
    out
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(ENVELOPE_DOMAIN.len() + body.len());
    msg.extend_from_slice(ENVELOPE_DOMAIN);
    msg.extend_from_slice(body);
    msg
}

/// Decodes an envelope and verifies its signature.
pub(crate) fn open(bytes: &[u8]) -> Result<Envelope, String> {
    if bytes.len() < HEADER_LEN + SIGNATURE_LEN {
        return Err(format!("an envelope of {} bytes is too short", bytes.len()));
    }
    if &bytes[..4] != MAGIC {
        return Err("not an envelope (bad magic)".into());
    }
    let sender = PublicKey::from_bytes(&bytes[4..36])
        .map_err(|e| format!("the envelope's sender key is invalid: {e}"))?;
    let at = |range: std::ops::Range<usize>| &bytes[range];
    let recipient: [u8; 32] = at(36..68).try_into().expect("32 bytes");
    let registry: [u8; 16] = at(68..84).try_into().expect("16 bytes");
    let nonce: [u8; 16] = at(84..100).try_into().expect("16 bytes");
    let timestamp = i64::from_be_bytes(at(100..108).try_into().expect("8 bytes"));
    let kind =
        Kind::from_u8(bytes[108]).ok_or_else(|| format!("unknown envelope kind {}", bytes[108]))?;
    let len = u32::from_be_bytes(at(109..113).try_into().expect("4 bytes")) as usize;
    if bytes.len() - HEADER_LEN - SIGNATURE_LEN != len {
        return Err(format!(
            "the envelope announces a {len}-byte payload but carries {}",
            bytes.len() - HEADER_LEN - SIGNATURE_LEN
        ));
    }
    let body_end = HEADER_LEN + len;
    let signature = Signature::from_bytes(bytes[body_end..].try_into().expect("64 bytes"));
    sender
        .verifying_key()
        .verify_strict(&signed_bytes(&bytes[..body_end]), &signature)
        .map_err(|_| format!("the envelope's signature does not verify for key {sender}"))?;
    Ok(Envelope {
        sender,
        recipient,
        registry,
        nonce,
        timestamp,
        kind,
        payload: bytes[HEADER_LEN..body_end].to_vec(),
    })
}

/// One registry offered in a hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Offer {
    pub(crate) id: RegistryId,
    pub(crate) name: String,
}

pub(crate) fn encode_hello(offers: &[Offer]) -> Vec<u8> {
    let mut out = (offers.len() as u32).to_be_bytes().to_vec();
    for o in offers {
        out.extend_from_slice(o.id.as_bytes());
        let name = o.name.as_bytes();
        let name = &name[..name.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
    }
    out
}

pub(crate) fn decode_hello(payload: &[u8]) -> Result<Vec<Offer>, String> {
    let mut r = Reader::new(payload);
    let count = r.u32()? as usize;
    // Each offer takes at least 18 bytes: bound the count by the input.
    if count > r.remaining() / 18 {
        return Err("the hello's registry count exceeds its size".into());
    }
    let mut offers = Vec::with_capacity(count);
    for _ in 0..count {
        let id = RegistryId::from_bytes(r.take(16)?).expect("16 bytes");
        let len = u16::from_be_bytes(r.take(2)?.try_into().expect("2 bytes")) as usize;
        let name = String::from_utf8_lossy(r.take(len)?).into_owned();
        offers.push(Offer { id, name });
    }
    r.end()?;
    Ok(offers)
}

/// A sync payload: the Automerge sync message (its changes included) and,
/// for each change in order, its author's key and signature.
pub(crate) fn encode_sync(message: &[u8], signatures: &[(PublicKey, [u8; 64])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + message.len() + signatures.len() * 96);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.extend_from_slice(&(signatures.len() as u32).to_be_bytes());
    for (key, sig) in signatures {
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(sig);
    }
    out
}

/// The decoded parts of a sync payload.
pub(crate) type SyncParts = (Vec<u8>, Vec<([u8; 32], [u8; 64])>);

pub(crate) fn decode_sync(payload: &[u8]) -> Result<SyncParts, String> {
    let mut r = Reader::new(payload);
    let len = r.u32()? as usize;
    let message = r.take(len)?.to_vec();
    let count = r.u32()? as usize;
    if count > r.remaining() / 96 {
        return Err("the signature count exceeds the payload's size".into());
    }
    let mut sigs = Vec::with_capacity(count);
    for _ in 0..count {
        let key: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
        let sig: [u8; 64] = r.take(64)?.try_into().expect("64 bytes");
        sigs.push((key, sig));
    }
    r.end()?;
    Ok((message, sigs))
}

/// Pairs each raw change of a sync message with its signature. A change
/// that does not decode or fails its checksum refuses the whole message.
pub(crate) fn signed_changes<'a>(
    chunks: impl ExactSizeIterator<Item = &'a [u8]>,
    sigs: &[([u8; 32], [u8; 64])],
) -> Result<Vec<SignedChange>, String> {
    if chunks.len() != sigs.len() {
        return Err(format!(
            "a sync message with {} changes carries {} signatures",
            chunks.len(),
            sigs.len()
        ));
    }
    chunks
        .zip(sigs)
        .enumerate()
        .map(|(i, (raw, (key, sig)))| {
            let author = PublicKey::from_bytes(key)
                .map_err(|e| format!("change {i}: the author key is invalid: {e}"))?;
            let change = automerge::Change::try_from(raw)
                .map_err(|e| format!("change {i} does not decode: {e}"))?;
            // Automerge does not check a change's checksum when decoding.
            if raw.get(4..8) != Some(&change.hash().0[..4]) {
                return Err(format!("change {i} fails its checksum"));
            }
            Ok(SignedChange::new(change, author, *sig))
        })
        .collect()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err("the payload is truncated".into());
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn end(&self) -> Result<(), String> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err("trailing bytes after the payload".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_envelope_opens_and_any_flipped_bit_is_refused() {
        let id = Identity::generate().unwrap();
        let bytes = seal(&id, &[9; 32], &[1; 16], Kind::Sync, b"payload");
        let env = open(&bytes).unwrap();
        assert_eq!(env.sender, id.public_key());
        assert_eq!(env.recipient, [9; 32]);
        assert_eq!(env.kind, Kind::Sync);
        assert_eq!(env.payload, b"payload");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                open(&bad).is_err(),
                "flipping a bit of byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn hello_and_sync_payloads_round_trip() {
        let offers = vec![Offer {
            id: RegistryId::from_bytes(&[5; 16]).unwrap(),
            name: "services".into(),
        }];
        assert_eq!(decode_hello(&encode_hello(&offers)).unwrap(), offers);
        let key = Identity::generate().unwrap().public_key();
        let (msg, sigs) = decode_sync(&encode_sync(b"abc", &[(key, [7; 64])])).unwrap();
        assert_eq!(msg, b"abc");
        assert_eq!(sigs, vec![(*key.as_bytes(), [7; 64])]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)
        ) {
            let _ = open(&bytes);
            let _ = decode_hello(&bytes);
            let _ = decode_sync(&bytes);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let _ = open(&framed);
            if let Ok((msg, sigs)) = decode_sync(&bytes)
                && let Ok(m) = automerge::sync::Message::decode(&msg)
            {
                let _ = signed_changes(m.changes.iter(), &sigs);
            }
        }
    }
}
