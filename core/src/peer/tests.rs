//! Peer sync tests that need the protocol's internals: a hand-built
//! malicious peer, and sessions over the in-memory transport.

use std::path::Path;

use super::*;
use crate::identity::Identity;
use crate::registry::Role;
use crate::schema::{FieldDef, FieldKind, Schema};

fn open(dir: &Path, name: &str) -> Replica {
    Replica::open(dir.join(format!("{name}.db"))).unwrap()
}

fn schema() -> Schema {
    Schema::new().field(FieldDef::new("name", FieldKind::Text))
}

/// One round between `client` and `hub` over the in-memory transport.
async fn round(client: &Replica, hub: &Replica) -> (PeerReport, PeerReport) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.serve_stream(b, &ServeOptions::default()).await })
    };
    let c = client
        .sync_peer_over(a, Some(hub.public_key()), &PeerOptions::default())
        .await
        .unwrap();
    let s = server.await.unwrap().unwrap();
    (c, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_converge_over_the_in_memory_transport_and_resume_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let alice = open(dir.path(), "alice");
    let bob = open(dir.path(), "bob");
    let services = alice.create_registry("services", schema()).unwrap();
    services.set_member(bob.public_key(), Role::Writer).unwrap();
    for i in 0..20 {
        services.put(None, [("name", format!("a{i}"))]).unwrap();
    }
    let mut events = bob.subscribe();

    let (report, _) = round(&bob, &alice).await;
    assert_eq!(report.peer, alice.public_key());
    assert_eq!(report.registries.len(), 1);
    assert_eq!(report.registries[0].name, "services");
    assert_eq!(report.changes_in(), 22);
    let bobs = bob.registry("services").unwrap();
    assert_eq!(bobs.heads(), services.heads());
    assert_eq!(bobs.state_digest(), services.state_digest());
    let synced = bob
        .journal()
        .unwrap()
        .into_iter()
        .rfind(|e| e.kind == "synced")
        .expect("the sync is journaled");
    assert_eq!(synced.detail["peer"], alice.public_key().to_string());
    assert_eq!(synced.detail["changes_in"], 22);
    let event = events.try_next().expect("a remote-change event");
    assert_eq!(event.registry, services.id());
    assert_eq!(event.peer, alice.public_key());
    assert_eq!(event.applied, 22);

    // Both write offline, then sync again: only the new changes move.
    bobs.put(None, [("name", "b1")]).unwrap();
    services.put(None, [("name", "a-late")]).unwrap();
    let (report, _) = round(&bob, &alice).await;
    assert_eq!(report.changes_in(), 1);
    assert_eq!(report.changes_out(), 1);
    assert_eq!(bobs.heads(), services.heads());
    assert_eq!(bobs.state_digest(), services.state_digest());
    assert_eq!(services.len(), 22);

    // Nothing new: nothing moves.
    let (report, _) = round(&bob, &alice).await;
    assert_eq!((report.changes_in(), report.changes_out()), (0, 0));
    // Each side kept the sync state it shares with the other, so the next
    // connection starts from the common heads rather than from nothing.
    for (replica, peer) in [(&bob, &alice), (&alice, &bob)] {
        let saved = peers::sync_state(replica, &peer.public_key(), &services.id())
            .unwrap()
            .expect("a saved sync state");
        let state = automerge::sync::State::decode(&saved).unwrap();
        let mut heads = services.heads();
        heads.sort();
        assert_eq!(state.shared_heads, heads);
    }

    // Attestations live beside the document; they travel too.
    let attestation = services.attest().unwrap();
    bobs.attest().unwrap();
    round(&bob, &alice).await;
    assert!(bobs.attestations().unwrap().contains(&attestation));
    assert_eq!(services.attestations().unwrap().len(), 2);
    assert_eq!(services.status().unwrap().attested_by.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_larger_than_one_message_travels_in_several() {
    let dir = tempfile::tempdir().unwrap();
    let alice = open(dir.path(), "alice");
    let bob = open(dir.path(), "bob");
    let services = alice.create_registry("services", schema()).unwrap();
    services.set_member(bob.public_key(), Role::Writer).unwrap();
    let mut seed = 7u64;
    for _ in 0..300 {
        // Text that does not compress, so the history is really large.
        let name: String = (0..200)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'a' + (seed >> 59) as u8 % 26)
            })
            .collect();
        services.put(None, [("name", name)]).unwrap();
    }
    let history: usize = services
        .export(&[])
        .unwrap()
        .changes()
        .iter()
        .map(|c| c.clone().change_bytes().len())
        .sum();
    // Both sides accept messages of at most 32 KiB: far less than the
    // history, which must then travel in several messages.
    let small = 32 << 10;
    assert!(history > 2 * small, "history of {history} bytes");
    let (a, b) = tokio::io::duplex(1 << 16);
    let hub = alice.clone();
    let server = tokio::spawn(async move {
        let options = ServeOptions {
            max_message_bytes: small,
            ..ServeOptions::default()
        };
        hub.serve_stream(b, &options).await
    });
    let options = PeerOptions {
        max_message_bytes: small,
        ..PeerOptions::default()
    };
    let report = bob
        .sync_peer_over(a, Some(alice.public_key()), &options)
        .await
        .unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(report.changes_in(), 302);
    let bobs = bob.registry("services").unwrap();
    assert_eq!(bobs.heads(), services.heads());
    assert_eq!(bobs.state_digest(), services.state_digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_receives_nothing_new_and_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let alice = open(dir.path(), "alice");
    let bob = open(dir.path(), "bob");
    let services = alice.create_registry("services", schema()).unwrap();
    let incidents = alice.create_registry("incidents", schema()).unwrap();
    for reg in [&services, &incidents] {
        reg.set_member(bob.public_key(), Role::Writer).unwrap();
    }
    services.put(Some("before"), [("name", "shared")]).unwrap();
    round(&bob, &alice).await;
    let bobs = bob.registry("services").unwrap();
    assert!(bobs.get("before").is_some());

    services.remove_member(bob.public_key()).unwrap();
    services
        .put(Some("after"), [("name", "not for bob")])
        .unwrap();
    incidents.put(Some("still"), [("name", "for bob")]).unwrap();
    let (report, hub_side) = round(&bob, &alice).await;
    assert!(
        bobs.get("after").is_none(),
        "nothing written after the removal reaches bob"
    );
    let by_name = |name: &str| {
        report
            .registries
            .iter()
            .find(|r| r.name == name)
            .unwrap()
            .clone()
    };
    let refused = by_name("services").refused.unwrap_or_default();
    assert!(refused.contains("not shared"), "{refused}");
    assert_eq!(by_name("services").changes_in, 0);
    // The registry bob still belongs to syncs on the same connection.
    assert_eq!(by_name("incidents").changes_in, 1);
    assert!(bob.registry("incidents").unwrap().get("still").is_some());
    // Bob's copy offered everything it had; the hub took none of it.
    assert!(hub_side.registries.iter().all(|r| r.changes_in == 0));

    // With no registry left in common, the hub refuses bob outright.
    incidents.remove_member(bob.public_key()).unwrap();
    let (a, b) = tokio::io::duplex(1 << 16);
    let hub = alice.clone();
    let server = tokio::spawn(async move { hub.serve_stream(b, &ServeOptions::default()).await });
    let err = bob
        .sync_peer_over(a, Some(alice.public_key()), &PeerOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::RefusedByPeer { .. }), "{err}");
    assert!(server.await.unwrap().is_err());
}

mod adversarial {
    //! A hand-built malicious peer against a hub on loopback TCP. Every
    //! attack is refused, nothing from it is applied, the refusal is
    //! journaled, and the hub goes on serving an honest peer.

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use automerge::sync::SyncDoc;
    use automerge::sync::{ChunkList, Message, MessageVersion};
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ChangeHash, ObjType};
    use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
    use tokio::net::TcpStream;

    use super::super::envelope::{self, CONNECTION, Envelope, Kind};
    use super::super::frame::{self, SecureReader, SecureWriter};
    use super::*;
    use crate::registry::Registry;

    /// Hang guard only: no test depends on timing.
    const PATIENCE: Duration = Duration::from_secs(60);
    const EVIL: [u8; 32] = [66; 32];

    fn evil_key() -> PublicKey {
        Identity::from_secret_bytes(EVIL).public_key()
    }

    struct World {
        dir: tempfile::TempDir,
        hub: Replica,
        server: Hub,
        services: Registry,
        good: Replica,
    }

    async fn world(evil_role: Option<Role>, options: ServeOptions) -> World {
        let dir = tempfile::tempdir().unwrap();
        let hub = open(dir.path(), "hub");
        let good = open(dir.path(), "good");
        let services = hub.create_registry("services", schema()).unwrap();
        services
            .set_member(good.public_key(), Role::Writer)
            .unwrap();
        if let Some(role) = evil_role {
            services.set_member(evil_key(), role).unwrap();
        }
        services.put(Some("first"), [("name", "first")]).unwrap();
        let server = hub.serve("127.0.0.1:0", options).await.unwrap();
        let world = World {
            dir,
            hub,
            server,
            services,
            good,
        };
        world.good_syncs().await;
        world
    }

    impl World {
        fn addr(&self) -> SocketAddr {
            self.server.local_addr()
        }

        /// An honest peer writes and syncs through the hub.
        async fn good_syncs(&self) {
            let peer = Peer::new(self.addr().to_string()).with_key(self.hub.public_key());
            if let Ok(reg) = self.good.registry("services") {
                reg.put(None, [("name", "honest")]).unwrap();
            }
            let report = self
                .good
                .sync_peer(&peer, &PeerOptions::default())
                .await
                .unwrap();
            assert!(report.registries.iter().all(|r| r.refused.is_none()));
            let reg = self.good.registry("services").unwrap();
            assert_eq!(reg.heads(), self.services.heads());
        }

        /// The next connection the hub refused, and why.
        async fn next_refusal(&mut self) -> String {
            loop {
                let event = tokio::time::timeout(PATIENCE, self.server.next_event())
                    .await
                    .expect("the hub reports the refusal")
                    .expect("the hub runs");
                match event {
                    HubEvent::Failed {
                        error: PeerError::Refused { reason, .. },
                        ..
                    } => return reason,
                    HubEvent::Failed { error, .. } => panic!("failed otherwise: {error}"),
                    _ => continue,
                }
            }
        }

        fn journaled(&self, needle: &str) -> bool {
            self.hub
                .journal()
                .unwrap()
                .iter()
                .any(|e| e.kind.contains("refused") && e.detail.to_string().contains(needle))
        }
    }

    /// The malicious peer: speaks the protocol by hand.
    struct Evil {
        id: Identity,
        hub: PublicKey,
        reader: SecureReader<ReadHalf<TcpStream>>,
        writer: SecureWriter<WriteHalf<TcpStream>>,
    }

    impl Evil {
        async fn connect(addr: SocketAddr) -> Evil {
            let stream = TcpStream::connect(addr).await.unwrap();
            let id = Identity::from_secret_bytes(EVIL);
            let ch = frame::handshake(stream, &id, true, 1 << 24, Arc::default())
                .await
                .unwrap();
            let mut evil = Evil {
                hub: ch.peer.clone().unwrap(),
                id,
                reader: ch.reader,
                writer: ch.writer,
            };
            let hello = evil.seal(&CONNECTION, Kind::Hello, &envelope::encode_hello(&[]));
            evil.send(&hello).await;
            let reply = evil.recv().await.expect("the hub says hello");
            assert_eq!(reply.kind, Kind::Hello);
            evil
        }

        fn seal(&self, registry: &[u8; 16], kind: Kind, payload: &[u8]) -> Vec<u8> {
            envelope::seal(&self.id, self.hub.as_bytes(), registry, kind, payload)
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.writer.send(bytes).await.unwrap();
        }

        async fn recv(&mut self) -> Option<Envelope> {
            match tokio::time::timeout(PATIENCE, self.reader.recv()).await {
                Ok(Ok(Some(bytes))) => Some(envelope::open(&bytes).unwrap()),
                Ok(_) => None,
                Err(_) => panic!("the hub neither answered nor closed"),
            }
        }

        /// Reads until the hub refuses the connection; returns its reason
        /// and checks that the hub then closes.
        async fn refusal(&mut self) -> String {
            loop {
                match self.recv().await {
                    Some(e) if e.kind == Kind::Refused && e.registry().is_none() => {
                        let reason = String::from_utf8_lossy(&e.payload).into_owned();
                        assert!(self.recv().await.is_none(), "the hub closes after refusing");
                        return reason;
                    }
                    Some(_) => continue,
                    None => panic!("the hub closed without saying why"),
                }
            }
        }
    }

    /// A change to `reg` authored by `author`, built by hand, and its
    /// signature (over the right hash, or a forged one).
    fn craft(reg: &Registry, author: &Identity, sign_right: bool) -> (Vec<u8>, [u8; 64]) {
        reg.with_state(|st, _| {
            let mut doc = st.doc.fork();
            doc.set_actor(automerge::ActorId::from(
                &author.public_key().as_bytes()[..],
            ));
            let records = st.layout().records.clone();
            let rec = doc.put_object(&records, "crafted", ObjType::Map).unwrap();
            doc.put(&rec, "name", "crafted").unwrap();
            let hash = doc.commit().unwrap();
            let mut change = doc.get_change_by_hash(&hash).unwrap();
            let signed = if sign_right {
                hash
            } else {
                ChangeHash([7; 32])
            };
            let sig = crate::trust::sign_change(author, &reg.id(), &signed);
            (change.bytes().into_owned(), sig)
        })
    }

    /// Two changes by `author`, the second depending on the first.
    fn craft_chain(reg: &Registry, author: &Identity) -> Vec<(Vec<u8>, ChangeHash, [u8; 64])> {
        reg.with_state(|st, _| {
            let mut doc = st.doc.fork();
            doc.set_actor(automerge::ActorId::from(
                &author.public_key().as_bytes()[..],
            ));
            let records = st.layout().records.clone();
            (0..2)
                .map(|i| {
                    let rec = doc
                        .put_object(&records, format!("chained-{i}"), ObjType::Map)
                        .unwrap();
                    doc.put(&rec, "name", format!("chained {i}")).unwrap();
                    let hash = doc.commit().unwrap();
                    let mut change = doc.get_change_by_hash(&hash).unwrap();
                    let sig = crate::trust::sign_change(author, &reg.id(), &hash);
                    (change.bytes().into_owned(), hash, sig)
                })
                .collect()
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_whose_dependencies_are_missing_wait_and_are_asked_for() {
        let w = world(Some(Role::Writer), ServeOptions::default()).await;
        let heads = w.services.heads();
        let evil_id = Identity::from_secret_bytes(EVIL);
        let chain = craft_chain(&w.services, &evil_id);
        let mut peer = Evil::connect(w.addr()).await;

        // The second change alone: held back, and its dependency asked for.
        let (second, second_hash, second_sig) = chain[1].clone();
        let payload = sync_payload(vec![second], vec![(evil_key(), second_sig)]);
        let env = peer.seal(w.services.id().as_bytes(), Kind::Sync, &payload);
        peer.send(&env).await;
        let reply = peer.recv().await.unwrap();
        assert_eq!(reply.kind, Kind::Sync);
        let (message, _) = envelope::decode_sync(&reply.payload).unwrap();
        let message = Message::decode(&message).unwrap();
        assert!(message.need.contains(&chain[0].1), "{:?}", message.need);
        assert_eq!(
            w.services.heads(),
            heads,
            "nothing applied while incomplete"
        );

        // The first arrives: both are verified and applied together.
        let (first, _, first_sig) = chain[0].clone();
        let payload = sync_payload(vec![first], vec![(evil_key(), first_sig)]);
        let env = peer.seal(w.services.id().as_bytes(), Kind::Sync, &payload);
        peer.send(&env).await;
        let _ = peer.recv().await.unwrap();
        assert_eq!(w.services.heads(), vec![second_hash]);
        assert!(w.services.get("chained-0").is_some());
        assert!(w.services.get("chained-1").is_some());
        w.good_syncs().await;
    }

    fn sync_payload(changes: Vec<Vec<u8>>, sigs: Vec<(PublicKey, [u8; 64])>) -> Vec<u8> {
        let message = Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: ChunkList::from(changes),
            flags: None,
            version: MessageVersion::V1,
        };
        envelope::encode_sync(&message.encode(), &sigs)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_key_is_refused_with_the_reason_on_both_sides() {
        let mut w = world(None, ServeOptions::default()).await;
        let stream = TcpStream::connect(w.addr()).await.unwrap();
        let err = Replica::open_with_identity(
            w.dir.path().join("evil.db"),
            Identity::from_secret_bytes(EVIL),
        )
        .unwrap()
        .sync_peer_over(stream, Some(w.hub.public_key()), &PeerOptions::default())
        .await
        .unwrap_err();
        assert!(
            matches!(&err, PeerError::RefusedByPeer { reason, .. } if reason.contains("not a member of any registry")),
            "{err}"
        );
        assert!(
            w.next_refusal()
                .await
                .contains("not a member of any registry")
        );
        assert!(w.journaled("not a member of any registry"));
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_noise_key_binding_is_refused() {
        let mut w = world(Some(Role::Writer), ServeOptions::default()).await;
        // A real Noise handshake whose identity binding signs another
        // Noise key than the one used.
        let mut stream = TcpStream::connect(w.addr()).await.unwrap();
        let counters = frame::Counters::default();
        let params: snow::params::NoiseParams = frame::NOISE_PARAMS.parse().unwrap();
        let mine = snow::Builder::new(params.clone())
            .generate_keypair()
            .unwrap();
        let other = snow::Builder::new(params.clone())
            .generate_keypair()
            .unwrap();
        let mut hs = snow::Builder::new(params)
            .local_private_key(&mine.private)
            .unwrap()
            .prologue(frame::PROLOGUE)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut buf = vec![0u8; 65_535];
        let mut payload = vec![0u8; 65_535];
        let n = hs.write_message(&[], &mut buf).unwrap();
        frame::write_wire(&mut stream, &buf[..n], &counters)
            .await
            .unwrap();
        let msg = frame::read_wire(&mut stream, &counters)
            .await
            .unwrap()
            .unwrap();
        hs.read_message(&msg, &mut payload).unwrap();
        let binding = frame::binding_payload(&Identity::from_secret_bytes(EVIL), &other.public);
        let n = hs.write_message(&binding, &mut buf).unwrap();
        frame::write_wire(&mut stream, &buf[..n], &counters)
            .await
            .unwrap();
        // The hub says why, encrypted, then closes.
        let transport = hs.into_stateless_transport_mode().unwrap();
        let frame = frame::read_wire(&mut stream, &counters)
            .await
            .unwrap()
            .unwrap();
        let n = transport.read_message(0, &frame, &mut payload).unwrap();
        let env = envelope::open(&payload[4..n]).unwrap();
        assert_eq!(env.kind, Kind::Refused);
        let told = String::from_utf8_lossy(&env.payload).into_owned();
        assert!(told.contains("wrong key binding"), "{told}");
        assert!(w.next_refusal().await.contains("wrong key binding"));
        assert!(w.journaled("wrong key binding"));
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_and_oversized_frames_are_refused() {
        let options = ServeOptions {
            max_message_bytes: 64 << 10,
            ..ServeOptions::default()
        };
        let mut w = world(Some(Role::Writer), options).await;
        let heads = w.services.heads();

        // Garbage instead of a handshake.
        let mut stream = TcpStream::connect(w.addr()).await.unwrap();
        for _ in 0..2 {
            stream.write_all(&200u32.to_be_bytes()).await.unwrap();
            stream.write_all(&[0xAB; 200]).await.unwrap();
        }
        assert!(w.next_refusal().await.contains("does not decrypt"));

        // A wire frame larger than any Noise message.
        let mut stream = TcpStream::connect(w.addr()).await.unwrap();
        stream
            .write_all(&(10u32 << 20).to_be_bytes())
            .await
            .unwrap();
        assert!(
            w.next_refusal()
                .await
                .contains("a wire frame of 10485760 bytes")
        );

        // Garbage after the handshake.
        let mut evil = Evil::connect(w.addr()).await;
        let counters = frame::Counters::default();
        let mut raw = Vec::new();
        frame::write_wire(&mut raw, &[0x5A; 300], &counters)
            .await
            .unwrap();
        evil.writer_raw(&raw).await;
        assert!(evil.refusal().await.contains("does not decrypt"));
        assert!(w.next_refusal().await.contains("does not decrypt"));

        // A message announced larger than the hub accepts.
        let mut evil = Evil::connect(w.addr()).await;
        let _ = evil.writer.send(&vec![1u8; 100 << 10]).await;
        assert!(evil.refusal().await.contains("over the maximum"));
        assert!(w.next_refusal().await.contains("over the maximum"));

        assert!(w.journaled("does not decrypt"));
        assert!(w.journaled("over the maximum"));
        assert_eq!(w.services.heads(), heads, "nothing applied");
        w.good_syncs().await;
    }

    impl Evil {
        async fn writer_raw(&mut self, bytes: &[u8]) {
            self.writer.write_raw(bytes).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forged_change_signature_is_refused_and_nothing_is_applied() {
        let mut w = world(Some(Role::Writer), ServeOptions::default()).await;
        let heads = w.services.heads();
        let evil_id = Identity::from_secret_bytes(EVIL);
        let (change, sig) = craft(&w.services, &evil_id, false);
        let mut evil = Evil::connect(w.addr()).await;
        let payload = sync_payload(vec![change], vec![(evil_key(), sig)]);
        let env = evil.seal(w.services.id().as_bytes(), Kind::Sync, &payload);
        evil.send(&env).await;
        assert!(evil.refusal().await.contains("bad signature"));
        assert!(w.next_refusal().await.contains("bad signature"));
        assert_eq!(w.services.heads(), heads, "nothing applied");
        assert!(w.services.get("crafted").is_none());
        assert!(w.journaled("bad signature"));
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_from_a_reader_is_refused() {
        let mut w = world(Some(Role::Reader), ServeOptions::default()).await;
        let heads = w.services.heads();
        let evil_id = Identity::from_secret_bytes(EVIL);
        // Correctly signed by the reader itself: the hub refuses the push
        // before even looking at what it says.
        let (change, sig) = craft(&w.services, &evil_id, true);
        let mut evil = Evil::connect(w.addr()).await;
        let payload = sync_payload(vec![change], vec![(evil_key(), sig)]);
        let env = evil.seal(w.services.id().as_bytes(), Kind::Sync, &payload);
        evil.send(&env).await;
        assert!(
            evil.refusal()
                .await
                .contains("readers may pull but not push")
        );
        assert!(w.next_refusal().await.contains("readers may pull"));
        assert_eq!(w.services.heads(), heads, "nothing applied");
        assert!(w.journaled("readers may pull"));
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replayed_envelope_is_refused_even_after_the_hub_restarts() {
        let mut w = world(Some(Role::Writer), ServeOptions::default()).await;
        let mut evil = Evil::connect(w.addr()).await;
        let idle = evil.seal(w.services.id().as_bytes(), Kind::Idle, &[]);
        evil.send(&idle).await;
        evil.send(&idle).await;
        assert!(evil.refusal().await.contains("replayed"));
        assert!(w.next_refusal().await.contains("replayed"));
        assert!(w.journaled("replayed"));

        // Restart the hub from its file: the nonce is remembered.
        let path = w.hub.path().to_path_buf();
        w.server.shutdown();
        drop(std::mem::replace(
            &mut w.hub,
            Replica::open(w.dir.path().join("scratch.db")).unwrap(),
        ));
        let hub = Replica::open(&path).unwrap();
        let mut server = hub
            .serve("127.0.0.1:0", ServeOptions::default())
            .await
            .unwrap();
        let mut evil = Evil::connect(server.local_addr()).await;
        evil.send(&idle).await;
        assert!(evil.refusal().await.contains("replayed"));
        loop {
            match tokio::time::timeout(PATIENCE, server.next_event())
                .await
                .unwrap()
            {
                Some(HubEvent::Failed { error, .. }) => {
                    assert!(error.to_string().contains("replayed"), "{error}");
                    break;
                }
                Some(_) => continue,
                None => panic!("the hub stopped"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_at_its_peer_limit_closes_new_connections_until_a_slot_frees() {
        let options = ServeOptions {
            max_peers: 1,
            ..ServeOptions::default()
        };
        let w = world(Some(Role::Writer), options).await;
        // The malicious peer connects, says hello and holds its slot.
        let evil = Evil::connect(w.addr()).await;
        let peer = Peer::new(w.addr().to_string()).with_key(w.hub.public_key());
        let err = w
            .good
            .sync_peer(&peer, &PeerOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, PeerError::Connection { .. }), "{err}");
        drop(evil);
        let mut tries = 0;
        while w
            .good
            .sync_peer(&peer, &PeerOptions::default())
            .await
            .is_err()
        {
            tries += 1;
            assert!(tries < 600, "hang guard: the slot never freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_envelope_is_refused() {
        let mut w = world(Some(Role::Writer), ServeOptions::default()).await;
        let mut evil = Evil::connect(w.addr()).await;
        let stale = envelope::seal_with(
            &evil.id,
            evil.hub.as_bytes(),
            w.services.id().as_bytes(),
            &[1; 16],
            crate::clock::now_ms() - 3_600_000,
            Kind::Idle,
            &[],
        );
        evil.send(&stale).await;
        assert!(evil.refusal().await.contains("stale"));
        assert!(w.next_refusal().await.contains("stale"));
        assert!(w.journaled("stale"));
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_non_member_learns_nothing_and_cannot_write() {
        let options = ServeOptions {
            allow: vec![evil_key()],
            ..ServeOptions::default()
        };
        let w = world(None, options).await;
        let heads = w.services.heads();
        let mut evil = Evil::connect(w.addr()).await;

        // Asking for a registry held here and for one that does not exist
        // get the same answer: an empty document.
        let unknown = RegistryId::from_bytes(&[9; 16]).unwrap();
        let mut answers = Vec::new();
        for id in [w.services.id(), unknown] {
            let mut empty = AutoCommit::new();
            let mut state = automerge::sync::State::new();
            let ask = empty.sync().generate_sync_message(&mut state).unwrap();
            let env = evil.seal(
                id.as_bytes(),
                Kind::Sync,
                &envelope::encode_sync(&ask.encode(), &[]),
            );
            evil.send(&env).await;
            let reply = evil.recv().await.unwrap();
            assert_eq!(reply.registry(), Some(id));
            assert_eq!(reply.kind, Kind::Sync);
            let (message, sigs) = envelope::decode_sync(&reply.payload).unwrap();
            let message = Message::decode(&message).unwrap();
            assert!(message.heads.is_empty() && message.changes.is_empty() && sigs.is_empty());
            answers.push(reply.payload);
        }
        assert_eq!(
            answers[0], answers[1],
            "a non-member can tell nothing apart"
        );

        // A push (even of a well-signed change) is refused for that
        // registry alone; the connection stays open.
        let evil_id = Identity::from_secret_bytes(EVIL);
        let (change, sig) = craft(&w.services, &evil_id, true);
        let payload = sync_payload(vec![change], vec![(evil_key(), sig)]);
        let env = evil.seal(w.services.id().as_bytes(), Kind::Sync, &payload);
        evil.send(&env).await;
        let reply = evil.recv().await.unwrap();
        assert_eq!(reply.kind, Kind::Refused);
        assert_eq!(reply.registry(), Some(w.services.id()));
        assert_eq!(w.services.heads(), heads, "nothing applied");
        assert!(w.journaled("not a member"));
        w.good_syncs().await;
    }
}

/// A hub whose store holds one damaged registry keeps serving the others:
/// the damaged one is answered as if absent, the peer's session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_registry_on_the_hub_does_not_turn_peers_away() {
    let dir = tempfile::tempdir().unwrap();
    let alice = open(dir.path(), "alice");
    let bob = open(dir.path(), "bob");
    for name in ["damaged", "fine"] {
        let reg = alice.create_registry(name, schema()).unwrap();
        reg.set_member(bob.public_key(), Role::Writer).unwrap();
        reg.put(None, [("name", "first")]).unwrap();
    }
    round(&bob, &alice).await;
    let damaged = alice.registry("damaged").unwrap();
    damaged.put(None, [("name", "second")]).unwrap();
    alice
        .registry("fine")
        .unwrap()
        .put(None, [("name", "second")])
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("alice.db")).unwrap();
    let (mut bytes, pos): (Vec<u8>, i64) = conn
        .query_row(
            "SELECT bytes, pos FROM changes WHERE registry_id = ?1 ORDER BY pos DESC LIMIT 1",
            [damaged.id().as_bytes()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    bytes[50] ^= 0x04;
    conn.execute(
        "UPDATE changes SET bytes = ?1 WHERE pos = ?2",
        rusqlite::params![bytes, pos],
    )
    .unwrap();
    drop((damaged, alice));

    let alice = open(dir.path(), "alice");
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = {
        let hub = alice.clone();
        tokio::spawn(async move { hub.serve_stream(b, &ServeOptions::default()).await })
    };
    let report = bob
        .sync_peer_over(a, Some(alice.public_key()), &PeerOptions::default())
        .await;
    let served = server.await.expect("the hub's task does not panic");
    assert!(report.is_ok() && served.is_ok(), "{report:?} {served:?}");
    assert_eq!(bob.registry("fine").unwrap().len(), 2);
    assert_eq!(bob.registry("damaged").unwrap().len(), 1);
    assert!(bob.verify(None).is_ok());
}
