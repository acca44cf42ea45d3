//! Entry points for fuzzing the peer protocol's decoders, which are
//! otherwise private (feature `fuzzing`; not a stable API). Each takes
//! arbitrary bytes, as a hostile peer could send them, and panics only if
//! a decoder breaks a promise: a panic, a decoded value that does not
//! encode back to itself, or garbage accepted.

use std::sync::{Arc, OnceLock};

use tokio::io::AsyncWriteExt;

use super::envelope::{self, Kind};
use super::frame;
use crate::identity::Identity;

/// The fixed identities fuzz inputs are sealed and handshaken with.
fn identities() -> &'static (Identity, Identity) {
    static IDS: OnceLock<(Identity, Identity)> = OnceLock::new();
    IDS.get_or_init(|| {
        (
            Identity::from_secret_bytes([1; 32]),
            Identity::from_secret_bytes([2; 32]),
        )
    })
}

/// An envelope as it arrives: decoding never panics, and nobody's
/// signature can be forged by arbitrary bytes. The same bytes sealed by a
/// real sender (as a hostile member would) open to exactly what was sealed.
pub fn envelope(data: &[u8]) {
    if let Ok(env) = envelope::open(data) {
        // Only bytes once sealed open: re-sealing is not possible here, but
        // the parts must be consistent with the bytes.
        assert_eq!(&data[4..36], env.sender.as_bytes());
        assert_eq!(env.payload.len() + 113 + 64, data.len());
    }
    let (sender, _) = identities();
    let (head, payload) = data.split_at(data.len().min(41));
    let mut header = [0u8; 41];
    header[..head.len()].copy_from_slice(head);
    let kind = match header[40] % 5 {
        0 => Kind::Hello,
        1 => Kind::Sync,
        2 => Kind::Idle,
        3 => Kind::Refused,
        _ => Kind::Attest,
    };
    let recipient: [u8; 32] = header[..32].try_into().expect("32 bytes");
    let timestamp = i64::from_be_bytes(header[32..40].try_into().expect("8 bytes"));
    let registry = [header[0]; 16];
    let nonce = [header[1]; 16];
    let sealed = envelope::seal_with(
        sender, &recipient, &registry, &nonce, timestamp, kind, payload,
    );
    let env = envelope::open(&sealed).expect("a sealed envelope opens");
    assert_eq!(env.sender, sender.public_key());
    assert_eq!(
        (
            env.recipient,
            env.registry,
            env.nonce,
            env.timestamp,
            env.kind
        ),
        (recipient, registry, nonce, timestamp, kind)
    );
    assert_eq!(env.payload, payload);
    // Any single flipped bit is noticed.
    let mut bad = sealed;
    let at = usize::from(header[2]) * 7 % bad.len();
    bad[at] ^= 1 << (header[3] % 8);
    assert!(
        envelope::open(&bad).is_err(),
        "a flipped bit at {at} went unnoticed"
    );
}

/// The payload of a validly signed envelope from a hostile member: a hello
/// (the registries offered) or a sync message with its changes and their
/// signatures. Decoding never panics; what decodes encodes back to itself.
pub fn sync_payload(data: &[u8]) {
    if let Ok(offers) = envelope::decode_hello(data) {
        let again = envelope::decode_hello(&envelope::encode_hello(&offers))
            .expect("an encoded hello decodes");
        assert_eq!(again, offers);
    }
    if let Ok((message, sigs)) = envelope::decode_sync(data) {
        let mut encoded = (message.len() as u32).to_be_bytes().to_vec();
        encoded.extend_from_slice(&message);
        encoded.extend_from_slice(&(sigs.len() as u32).to_be_bytes());
        for (key, sig) in &sigs {
            encoded.extend_from_slice(key);
            encoded.extend_from_slice(sig);
        }
        assert_eq!(encoded, data, "a sync payload decodes to other bytes");
        if let Ok(m) = automerge::sync::Message::decode(&message)
            && let Ok(changes) = envelope::signed_changes(m.changes.iter(), &sigs)
        {
            // Each change is paired with its own claimed author; checking
            // the claim is the import's job.
            assert_eq!(changes.len(), sigs.len());
            for (change, (key, sig)) in changes.iter().zip(&sigs) {
                assert_eq!(change.author().as_bytes(), key);
                assert_eq!(change.signature(), sig);
            }
        }
    }
}

/// The current-thread runtime the frame target runs its connection on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Frames on the wire. With the first byte even, `data` is what a stranger
/// sends before and during the handshake; odd, it describes messages a peer
/// sends after a genuine handshake, as `length: u16 BE ‖ plaintext` pieces,
/// each encrypted as one frame. Either way the receiver ends with an error
/// or a clean end, never a panic, and never reads more than was announced.
pub fn frames(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let rest = rest.to_vec();
    runtime().block_on(async move {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (responder, initiator) = identities();
        if mode % 2 == 0 {
            let mut raw = a;
            let _ = raw.write_all(&rest).await;
            drop(raw);
            let got = frame::handshake(b, responder, false, 1 << 16, Arc::default()).await;
            assert!(got.is_err(), "arbitrary bytes completed a handshake");
            return;
        }
        let server = async move {
            let mut ch = frame::handshake(b, responder, false, 1 << 16, Arc::default())
                .await
                .expect("a genuine handshake completes");
            let mut total = 0;
            while let Ok(Some(message)) = ch.reader.recv().await {
                assert!(message.len() <= 1 << 16, "a message over the maximum");
                total += message.len();
            }
            total
        };
        let client = async move {
            let mut ch = frame::handshake(a, initiator, true, 1 << 16, Arc::default())
                .await
                .expect("a genuine handshake completes");
            let mut pieces = Vec::new();
            let mut r = &rest[..];
            while r.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([r[0], r[1]])).min(r.len() - 2);
                pieces.push(r[2..2 + len].to_vec());
                r = &r[2 + len..];
            }
            ch.writer.send_pieces(&pieces).await;
            ch.writer.close().await;
            pieces.iter().map(Vec::len).sum::<usize>()
        };
        let (received, sent) = tokio::join!(server, client);
        assert!(received <= sent, "received {received} bytes of {sent} sent");
    });
}

/// Valid inputs of the `envelope`, `sync_payload` and `frames` targets to
/// start mutating from.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let (sender, recipient) = identities();
    let to = recipient.public_key();
    let hello = envelope::encode_hello(&[
        envelope::Offer {
            id: crate::ids::RegistryId::from_bytes(&[5; 16]).expect("16 bytes"),
            name: "services".into(),
        },
        envelope::Offer {
            id: crate::ids::RegistryId::from_bytes(&[6; 16]).expect("16 bytes"),
            name: "projects".into(),
        },
    ]);
    let sync = sync_with_changes(sender);
    match target {
        "envelope" => vec![
            envelope::seal_with(
                sender,
                to.as_bytes(),
                &[0; 16],
                &[9; 16],
                1,
                Kind::Hello,
                &hello,
            ),
            envelope::seal_with(
                sender,
                to.as_bytes(),
                &[7; 16],
                &[8; 16],
                2,
                Kind::Sync,
                &sync,
            ),
            envelope::seal_with(
                sender,
                to.as_bytes(),
                &[7; 16],
                &[3; 16],
                3,
                Kind::Idle,
                &[],
            ),
        ],
        "sync_payload" => vec![hello, sync],
        "frames" => {
            // A first handshake message (an ephemeral key) as a stranger
            // sends it, and messages as a genuine peer frames them.
            let mut stranger = vec![0u8, 0, 0, 0, 32];
            stranger.extend_from_slice(&[0x42; 32]);
            let mut peer = vec![1u8];
            for message in [&hello[..], &sync[..]] {
                let mut plain = (message.len() as u32).to_be_bytes().to_vec();
                plain.extend_from_slice(message);
                peer.extend_from_slice(&(plain.len() as u16).to_be_bytes());
                peer.extend_from_slice(&plain);
            }
            vec![stranger, peer]
        }
        _ => Vec::new(),
    }
}

/// A sync payload that carries changes, each with its author's signature,
/// as a peer sends them (a version 1 message, one chunk per change).
fn sync_with_changes(author: &Identity) -> Vec<u8> {
    use automerge::transaction::Transactable;
    let mut doc = automerge::AutoCommit::new();
    for i in 0..3_i64 {
        doc.put(automerge::ROOT, format!("field {i}"), i)
            .expect("a put");
        let _ = doc.commit();
    }
    let registry = crate::ids::RegistryId::from_bytes(&[7; 16]).expect("16 bytes");
    let changes: Vec<automerge::Change> = doc.get_changes(&[]);
    let sigs: Vec<_> = changes
        .iter()
        .map(|c| {
            (
                author.public_key(),
                crate::trust::sign_change(author, &registry, &c.hash()),
            )
        })
        .collect();
    let message = automerge::sync::Message {
        heads: doc.get_heads(),
        need: Vec::new(),
        have: Vec::new(),
        changes: automerge::sync::ChunkList::from(
            changes
                .into_iter()
                .map(|mut c| c.bytes().to_vec())
                .collect::<Vec<_>>(),
        ),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    envelope::encode_sync(&message.encode(), &sigs)
}
