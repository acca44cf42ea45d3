//! Frames on the wire and the Noise channel carried in them.
//!
//! On the wire every frame is `length: u32 BE ‖ bytes`, at most 65,535 bytes
//! (the largest Noise message). The first three frames are the Noise XX
//! handshake; every later frame is one encrypted piece of a message. A
//! message is `length: u32 BE ‖ plaintext`, split into pieces that each fit
//! one Noise message, so a message can be larger than a frame but never
//! larger than the configured maximum — a peer announcing more is refused
//! before anything is buffered.
//!
//! The handshake's second and third messages carry each side's *binding*:
//! its ed25519 public key and its signature over the Noise static key it
//! uses, so the encrypted session is bound to the replica's identity.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::Signature;
use snow::{Builder, HandshakeState, StatelessTransportState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::identity::{Identity, PublicKey};

/// The Noise protocol every connection uses.
pub(crate) const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Mixed into the handshake: both sides must speak this protocol version.
pub(crate) const PROLOGUE: &[u8] = b"chittysync/peer-sync/v1";
/// Domain tag of the signature binding a Noise static key to an identity.
const BINDING_DOMAIN: &[u8] = b"chittysync/noise-binding/v1\n";
/// The largest Noise message, hence the largest wire frame.
pub(crate) const MAX_WIRE_FRAME: usize = 65_535;
/// Authentication tag added to every encrypted piece.
const TAG_LEN: usize = 16;
/// Plaintext carried by one encrypted piece.
const PIECE: usize = MAX_WIRE_FRAME - TAG_LEN;

/// Why a connection failed below the sync protocol.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// The connection broke or closed mid-message.
    Io(String),
    /// The peer sent something no honest peer sends: refuse and close.
    Violation(String),
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        LinkError::Io(e.to_string())
    }
}

/// Bytes moved on one connection, as seen on the wire.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
}

/// Reads one wire frame; `None` on a clean end of stream between frames.
pub(crate) async fn read_wire<R: AsyncRead + Unpin>(
    r: &mut R,
    counters: &Counters,
) -> Result<Option<Vec<u8>>, LinkError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_WIRE_FRAME {
        return Err(LinkError::Violation(format!(
            "a wire frame of {len} bytes (frames are 1 to {MAX_WIRE_FRAME} bytes)"
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    counters
        .received
        .fetch_add(4 + len as u64, Ordering::Relaxed);
    Ok(Some(buf))
}

pub(crate) async fn write_wire<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    counters: &Counters,
) -> Result<(), LinkError> {
    debug_assert!(bytes.len() <= MAX_WIRE_FRAME);
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(bytes).await?;
    counters
        .sent
        .fetch_add(4 + bytes.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// The bytes an identity signs to bind a Noise static key to itself.
fn binding_message(noise_static: &[u8]) -> Vec<u8> {
    let mut msg = BINDING_DOMAIN.to_vec();
    msg.extend_from_slice(noise_static);
    msg
}

pub(crate) fn binding_payload(identity: &Identity, noise_static: &[u8]) -> Vec<u8> {
    let mut out = identity.public_key().as_bytes().to_vec();
    out.extend_from_slice(&identity.sign(&binding_message(noise_static)).to_bytes());
    out
}

/// Checks a peer's binding against the Noise static key it used. Returns
/// the identity it proved, or why it proved none.
pub(crate) fn check_binding(payload: &[u8], noise_static: &[u8]) -> Result<PublicKey, String> {
    if payload.len() != 96 {
        return Err(format!(
            "its identity binding is {} bytes, not 96",
            payload.len()
        ));
    }
    let key = PublicKey::from_bytes(&payload[..32])
        .map_err(|e| format!("its identity binding names no valid key: {e}"))?;
    let signature = Signature::from_bytes(payload[32..].try_into().expect("64 bytes"));
    key.verifying_key()
        .verify_strict(&binding_message(noise_static), &signature)
        .map_err(|_| {
            format!("key {key} did not sign the Noise key of this session (wrong key binding)")
        })?;
    Ok(key)
}

/// A finished handshake: the two directions of the encrypted channel and
/// what the peer proved about itself.
pub(crate) struct Channel<S> {
    pub(crate) reader: SecureReader<ReadHalf<S>>,
    pub(crate) writer: SecureWriter<WriteHalf<S>>,
    /// The peer's identity, or why its binding failed (the session then
    /// only tells the peer why and closes).
    pub(crate) peer: Result<PublicKey, String>,
    /// The key the peer claimed, valid or not (to address a refusal).
    pub(crate) claimed: [u8; 32],
}

fn noise_err(what: &str) -> impl Fn(snow::Error) -> LinkError + '_ {
    move |e| LinkError::Violation(format!("{what}: {e}"))
}

fn new_handshake(initiator: bool) -> Result<(HandshakeState, Vec<u8>), LinkError> {
    let params = NOISE_PARAMS.parse().expect("valid Noise parameters");
    // A fresh Noise static key per connection: the identity binding is what
    // names the replica, so there is no long-lived Noise secret to guard.
    let keypair = Builder::new(NOISE_PARAMS.parse().expect("valid Noise parameters"))
        .generate_keypair()
        .map_err(|e| LinkError::Io(format!("could not make a Noise key: {e}")))?;
    let builder = Builder::new(params)
        .local_private_key(&keypair.private)
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(|e| LinkError::Io(format!("could not set up Noise: {e}")))?;
    let state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(|e| LinkError::Io(format!("could not set up Noise: {e}")))?;
    Ok((state, keypair.public))
}

/// Runs the Noise XX handshake over `stream` and exchanges identity bindings.
pub(crate) async fn handshake<S>(
    stream: S,
    identity: &Identity,
    initiator: bool,
    max_message: usize,
    counters: Arc<Counters>,
) -> Result<Channel<S>, LinkError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let (mut hs, my_static) = new_handshake(initiator)?;
    let mine = binding_payload(identity, &my_static);
    let mut buf = vec![0u8; MAX_WIRE_FRAME];
    let mut payload = vec![0u8; MAX_WIRE_FRAME];
    let closed = || LinkError::Io("the peer closed the connection during the handshake".into());
    let theirs = if initiator {
        // -> e
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(noise_err("Noise handshake"))?;
        write_wire(&mut w, &buf[..n], &counters).await?;
        w.flush().await?;
        // <- e, ee, s, es + their binding
        let msg = read_wire(&mut r, &counters).await?.ok_or_else(closed)?;
        let n = hs
            .read_message(&msg, &mut payload)
            .map_err(noise_err("the handshake reply does not decrypt"))?;
        let theirs = payload[..n].to_vec();
        // -> s, se + our binding
        let n = hs
            .write_message(&mine, &mut buf)
            .map_err(noise_err("Noise handshake"))?;
        write_wire(&mut w, &buf[..n], &counters).await?;
        w.flush().await?;
        theirs
    } else {
        let msg = read_wire(&mut r, &counters).await?.ok_or_else(closed)?;
        hs.read_message(&msg, &mut payload)
            .map_err(noise_err("the first handshake message does not decode"))?;
        let n = hs
            .write_message(&mine, &mut buf)
            .map_err(noise_err("Noise handshake"))?;
        write_wire(&mut w, &buf[..n], &counters).await?;
        w.flush().await?;
        let msg = read_wire(&mut r, &counters).await?.ok_or_else(closed)?;
        let n = hs
            .read_message(&msg, &mut payload)
            .map_err(noise_err("the last handshake message does not decrypt"))?;
        payload[..n].to_vec()
    };
    let remote_static = hs
        .get_remote_static()
        .ok_or_else(|| LinkError::Violation("the peer sent no Noise static key".into()))?
        .to_vec();
    let peer = check_binding(&theirs, &remote_static);
    let mut claimed = [0u8; 32];
    if theirs.len() >= 32 {
        claimed.copy_from_slice(&theirs[..32]);
    }
    let transport = Arc::new(
        hs.into_stateless_transport_mode()
            .map_err(noise_err("Noise handshake"))?,
    );
    Ok(Channel {
        reader: SecureReader {
            r,
            noise: transport.clone(),
            nonce: 0,
            max_message,
            counters: counters.clone(),
        },
        writer: SecureWriter {
            w,
            noise: transport,
            nonce: 0,
            counters,
        },
        peer,
        claimed,
    })
}

/// The sending direction of an encrypted channel.
pub(crate) struct SecureWriter<W> {
    w: W,
    noise: Arc<StatelessTransportState>,
    nonce: u64,
    counters: Arc<Counters>,
}

impl<W: AsyncWrite + Unpin> SecureWriter<W> {
    /// Encrypts and sends one message.
    pub(crate) async fn send(&mut self, message: &[u8]) -> Result<(), LinkError> {
        let mut plain = Vec::with_capacity(4 + message.len());
        plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
        plain.extend_from_slice(message);
        let mut out = vec![0u8; MAX_WIRE_FRAME];
        for piece in plain.chunks(PIECE) {
            let n = self
                .noise
                .write_message(self.nonce, piece, &mut out)
                .map_err(|e| LinkError::Io(format!("could not encrypt: {e}")))?;
            self.nonce += 1;
            write_wire(&mut self.w, &out[..n], &self.counters).await?;
        }
        self.w.flush().await?;
        Ok(())
    }

    /// Writes bytes as they are, unencrypted (tests play a misbehaving peer).
    #[cfg(test)]
    pub(crate) async fn write_raw(&mut self, bytes: &[u8]) {
        let _ = self.w.write_all(bytes).await;
        let _ = self.w.flush().await;
    }

    /// Encrypts and sends each piece as one frame, as they are, without
    /// the message framing (fuzzing plays a peer that frames badly).
    #[cfg(feature = "fuzzing")]
    pub(crate) async fn send_pieces(&mut self, pieces: &[Vec<u8>]) {
        let mut out = vec![0u8; MAX_WIRE_FRAME];
        for piece in pieces {
            let piece = &piece[..piece.len().min(PIECE)];
            let Ok(n) = self.noise.write_message(self.nonce, piece, &mut out) else {
                return;
            };
            self.nonce += 1;
            if write_wire(&mut self.w, &out[..n], &self.counters)
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = self.w.flush().await;
    }

    /// Ends our direction of the connection.
    pub(crate) async fn close(&mut self) {
        let _ = self.w.shutdown().await;
    }
}

/// The receiving direction of an encrypted channel.
pub(crate) struct SecureReader<R> {
    r: R,
    noise: Arc<StatelessTransportState>,
    nonce: u64,
    max_message: usize,
    counters: Arc<Counters>,
}

impl<R: AsyncRead + Unpin> SecureReader<R> {
    fn decrypt(&mut self, frame: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut out = vec![0u8; frame.len()];
        let n = self
            .noise
            .read_message(self.nonce, frame, &mut out)
            .map_err(|_| {
                LinkError::Violation(
                    "a frame that does not decrypt (garbage or tampered bytes)".into(),
                )
            })?;
        self.nonce += 1;
        out.truncate(n);
        Ok(out)
    }

    /// Reads and discards up to `budget` bytes until the peer closes: a
    /// side that refuses a peer does this before closing, because closing
    /// with unread bytes resets the connection and can destroy the refusal
    /// before the peer reads it.
    pub(crate) async fn drain(&mut self, budget: usize) {
        let mut buf = vec![0u8; 16 << 10];
        let mut left = budget;
        while left > 0 {
            match self.r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }

    /// Receives one message; `None` when the peer closed the connection
    /// between messages.
    pub(crate) async fn recv(&mut self) -> Result<Option<Vec<u8>>, LinkError> {
        let Some(frame) = read_wire(&mut self.r, &self.counters).await? else {
            return Ok(None);
        };
        let first = self.decrypt(&frame)?;
        if first.len() < 4 {
            return Err(LinkError::Violation(
                "a message too short to hold its length".into(),
            ));
        }
        let len = u32::from_be_bytes(first[..4].try_into().expect("4 bytes")) as usize;
        if len > self.max_message {
            return Err(LinkError::Violation(format!(
                "a message of {len} bytes, over the maximum of {} bytes",
                self.max_message
            )));
        }
        // Grow with what arrives rather than trusting the announced length:
        // a peer announcing the maximum and sending little costs little.
        let mut message = Vec::with_capacity(len.min(1 << 20));
        message.extend_from_slice(&first[4..]);
        while message.len() < len {
            let frame = read_wire(&mut self.r, &self.counters)
                .await?
                .ok_or_else(|| LinkError::Io("the connection closed mid-message".into()))?;
            let piece = self.decrypt(&frame)?;
            message.extend_from_slice(&piece);
        }
        if message.len() != len {
            return Err(LinkError::Violation(format!(
                "a message longer than the {len} bytes it announced"
            )));
        }
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Identity, Identity) {
        (Identity::generate().unwrap(), Identity::generate().unwrap())
    }

    #[tokio::test]
    async fn handshake_binds_both_identities_and_carries_large_messages() {
        let (a, b) = pair();
        let (sa, sb) = tokio::io::duplex(1 << 16);
        let (ka, kb) = (a.public_key(), b.public_key());
        let server = tokio::spawn(async move {
            let mut ch = handshake(sb, &b, false, 1 << 20, Arc::default())
                .await
                .unwrap();
            assert_eq!(ch.peer.clone().unwrap(), ka);
            let got = ch.reader.recv().await.unwrap().unwrap();
            ch.writer.send(&got).await.unwrap();
        });
        let mut ch = handshake(sa, &a, true, 1 << 20, Arc::default())
            .await
            .unwrap();
        assert_eq!(ch.peer.clone().unwrap(), kb);
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        ch.writer.send(&big).await.unwrap();
        assert_eq!(ch.reader.recv().await.unwrap().unwrap(), big);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_announced_oversized_message_is_refused_before_buffering() {
        let (a, b) = pair();
        let (sa, sb) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut ch = handshake(sb, &b, false, 1000, Arc::default())
                .await
                .unwrap();
            ch.reader.recv().await
        });
        let mut ch = handshake(sa, &a, true, 1 << 20, Arc::default())
            .await
            .unwrap();
        ch.writer.send(&[7u8; 5000]).await.unwrap();
        let got = server.await.unwrap();
        assert!(matches!(got, Err(LinkError::Violation(ref m)) if m.contains("over the maximum")));
    }

    /// Arbitrary bytes where a handshake, or an encrypted message after
    /// one, is expected: an error or a clean end, never a panic.
    async fn feed(bytes: Vec<u8>, after_handshake: bool) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let responder = Identity::from_secret_bytes([1; 32]);
        if !after_handshake {
            let mut raw = a;
            raw.write_all(&bytes).await.unwrap();
            drop(raw);
            assert!(
                handshake(b, &responder, false, 1 << 20, Arc::default())
                    .await
                    .is_err()
            );
            return;
        }
        let server = tokio::spawn(async move {
            let mut ch = handshake(b, &responder, false, 1 << 20, Arc::default())
                .await
                .unwrap();
            while let Ok(Some(_)) = ch.reader.recv().await {}
        });
        let initiator = Identity::from_secret_bytes([2; 32]);
        let mut ch = handshake(a, &initiator, true, 1 << 20, Arc::default())
            .await
            .unwrap();
        ch.writer.write_raw(&bytes).await;
        ch.writer.close().await;
        server.await.expect("the reader never panics");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_bytes_never_panic_the_frame_decoder(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            framed in proptest::bool::ANY,
            after_handshake in proptest::bool::ANY,
        ) {
            let mut input = Vec::new();
            if framed {
                // A plausible length prefix gets past the first check.
                input.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            }
            input.extend_from_slice(&bytes);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(feed(input, after_handshake));
        }
    }

    #[test]
    fn a_binding_over_another_noise_key_is_refused() {
        let id = Identity::generate().unwrap();
        let payload = binding_payload(&id, &[1u8; 32]);
        assert_eq!(
            check_binding(&payload, &[1u8; 32]).unwrap(),
            id.public_key()
        );
        let err = check_binding(&payload, &[2u8; 32]).unwrap_err();
        assert!(err.contains("wrong key binding"), "{err}");
        assert!(check_binding(&payload[..50], &[1u8; 32]).is_err());
    }
}
