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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_offering_more_registries_than_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = open(dir.path(), "hub");
    let laptop = open(dir.path(), "laptop");
    for name in ["services", "incidents"] {
        let reg = hub.create_registry(name, schema()).unwrap();
        reg.set_member(laptop.public_key(), Role::Reader).unwrap();
    }
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.serve_stream(b, &ServeOptions::default()).await })
    };
    let mut options = PeerOptions::default();
    options.limits.max_registries = 1;
    let err = laptop
        .sync_peer_over(a, Some(hub.public_key()), &options)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PeerError::Refused { reason, .. } if reason.contains("offered 2 registries")),
        "{err}"
    );
    let _ = server.await.unwrap();
    assert!(laptop.registries().unwrap().is_empty());
}

/// Serves `replica` at `address` once the address is free again.
async fn serve_at(replica: &Replica, address: &str) -> Hub {
    for _ in 0..600 {
        if let Ok(hub) = replica.serve(address, ServeOptions::default()).await {
            return hub;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("hang guard: {address} never came free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reached_at_a_new_address_leaves_the_old_address_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let hub = open(dir.path(), "hub");
    let laptop = open(dir.path(), "laptop");
    let mallory = open(dir.path(), "mallory");
    let services = hub.create_registry("services", schema()).unwrap();
    services
        .set_member(laptop.public_key(), Role::Writer)
        .unwrap();
    // The impostor's registry lists the victim, so an accepted impostor
    // would get it stored.
    let payroll = mallory.create_registry("payroll", schema()).unwrap();
    payroll
        .set_member(laptop.public_key(), Role::Writer)
        .unwrap();

    // The hub at A, reached with its key given; then the same hub at B,
    // trusted on first use.
    let at_a = hub
        .serve("127.0.0.1:0", ServeOptions::default())
        .await
        .unwrap();
    let a = at_a.local_addr().to_string();
    let with_key = Peer::new(a.clone()).with_key(hub.public_key());
    laptop
        .sync_peer(&with_key, &PeerOptions::default())
        .await
        .unwrap();
    let at_b = hub
        .serve("127.0.0.1:0", ServeOptions::default())
        .await
        .unwrap();
    let b = at_b.local_addr().to_string();
    laptop
        .sync_peer(&Peer::new(b.clone()), &PeerOptions::default())
        .await
        .unwrap();
    let pinned = |address: &str| {
        laptop.journal().unwrap().iter().any(|e| {
            e.kind == "peer-pinned"
                && e.detail["address"] == address
                && e.detail["peer"] == hub.public_key().to_string()
        })
    };
    assert!(pinned(&a), "a sync with the key given pins its address");
    assert!(pinned(&b), "first use at a new address pins it too");

    // Another key takes over A: the laptop refuses it, stores nothing from
    // it, and journals the refusal.
    drop(at_a);
    let impostor = serve_at(&mallory, &a).await;
    let err = laptop
        .sync_peer(&Peer::new(a.clone()), &PeerOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PeerError::Refused { reason, .. } if reason.contains("pinned to key")),
        "{err}"
    );
    assert!(laptop.registry("payroll").is_err(), "nothing stored");
    assert!(laptop.journal().unwrap().iter().any(|e| {
        e.kind == "peer-refused"
            && e.detail["peer"].as_str().unwrap_or("").contains(&a)
            && e.detail["reason"]
                .as_str()
                .unwrap_or("")
                .contains("pinned to key")
    }));
    // B still belongs to the hub.
    assert_eq!(peers::key_at(&laptop, &b).unwrap(), Some(hub.public_key()));
    // Naming the new key moves A's pin, and says so in the journal.
    laptop
        .sync_peer(
            &Peer::new(a.clone()).with_key(mallory.public_key()),
            &PeerOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        laptop
            .journal()
            .unwrap()
            .iter()
            .any(|e| e.kind == "peer-pinned"
                && e.detail["address"] == a.as_str()
                && e.detail["peer"] == mallory.public_key().to_string()
                && e.detail["previous"] == hex::encode(hub.public_key().as_bytes()))
    );
    drop(impostor);
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
        // Anyone can make a key: refusing one is counted, not journaled.
        assert!(!w.journaled("not a member of any registry"));
        assert_eq!(w.server.metrics().keys_refused, 1);
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
        assert!(!w.journaled("wrong key binding"), "no key was proven");
        assert_eq!(w.server.metrics().handshakes_failed, 1);
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
        assert!(
            matches!(&err, PeerError::RefusedByPeer { reason, .. } if reason.contains("limit of 1 peers")),
            "{err}"
        );
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

    /// Two changes to `reg` by `author`, the second depending on the first
    /// and carrying `size` bytes of text.
    fn craft_big_chain(
        reg: &Registry,
        author: &Identity,
        size: usize,
        seed: u64,
    ) -> Vec<(Vec<u8>, ChangeHash, [u8; 64])> {
        reg.with_state(|st, _| {
            let mut doc = st.doc.fork();
            doc.set_actor(automerge::ActorId::from(
                &author.public_key().as_bytes()[..],
            ));
            let records = st.layout().records.clone();
            (0..2)
                .map(|i| {
                    let rec = doc
                        .put_object(&records, format!("big-{i}"), ObjType::Map)
                        .unwrap();
                    // Text that does not compress.
                    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1) | 1;
                    let text: String = (0..size * i)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            char::from(b'a' + (x % 26) as u8)
                        })
                        .collect();
                    doc.put(&rec, "name", text).unwrap();
                    let hash = doc.commit().unwrap();
                    let mut change = doc.get_change_by_hash(&hash).unwrap();
                    let sig = crate::trust::sign_change(author, &reg.id(), &hash);
                    (change.bytes().into_owned(), hash, sig)
                })
                .collect()
        })
    }

    /// A connection from another loopback address than the members'.
    async fn connect_from(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((ip, 0)))
            .expect("any 127.x.y.z address is loopback");
        socket.connect(addr).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_handshakes_are_counted_and_never_journaled() {
        let mut w = world(Some(Role::Writer), ServeOptions::default()).await;
        let before = w.hub.journal().unwrap().len();
        // Strangers that send garbage, or connect and leave, prove no key.
        let mut garbled = Vec::new();
        for i in 0..20 {
            let mut stream = TcpStream::connect(w.addr()).await.unwrap();
            if i % 2 == 0 {
                for _ in 0..2 {
                    stream.write_all(&200u32.to_be_bytes()).await.unwrap();
                    stream.write_all(&[0xAB; 200]).await.unwrap();
                }
                // Kept open until the hub has read it all.
                garbled.push(stream);
            }
        }
        for _ in 0..20 {
            loop {
                match tokio::time::timeout(PATIENCE, w.server.next_event())
                    .await
                    .expect("the hub reports every failed handshake")
                    .expect("the hub runs")
                {
                    HubEvent::Failed { .. } => break,
                    _ => continue,
                }
            }
        }
        drop(garbled);
        assert_eq!(
            w.hub.journal().unwrap().len(),
            before,
            "a connection that proved no key adds nothing to the journal"
        );
        assert_eq!(w.server.metrics().handshakes_failed, 20);
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_to_a_hidden_registry_is_answered_like_one_to_an_absent_registry() {
        let w = world(Some(Role::Writer), ServeOptions::default()).await;
        // `secret` exists here but does not list the (authenticated)
        // member; the other id exists nowhere.
        let secret = w.hub.create_registry("secret", schema()).unwrap();
        let absent = RegistryId::from_bytes(&[9; 16]).unwrap();
        let evil_id = Identity::from_secret_bytes(EVIL);
        let chain = craft_chain(&secret, &evil_id);
        let (second, _, second_sig) = chain[1].clone();
        let mut evil = Evil::connect(w.addr()).await;
        let mut answers = Vec::new();
        for id in [secret.id(), absent] {
            let journal = w.hub.journal().unwrap().len();
            // A change whose dependency is not sent.
            let payload = sync_payload(vec![second.clone()], vec![(evil_key(), second_sig)]);
            let env = evil.seal(id.as_bytes(), Kind::Sync, &payload);
            evil.send(&env).await;
            let reply = evil.recv().await.unwrap();
            assert_eq!(reply.registry(), Some(id));
            answers.push((reply.kind, reply.payload));
            // The same work on the hub's side too (a journal row each).
            assert_eq!(w.hub.journal().unwrap().len(), journal + 1);
        }
        assert_eq!(answers[0], answers[1], "nothing tells the two apart");
        assert_eq!(answers[0].0, Kind::Refused);
        assert!(w.hub.registry_by_id(absent).is_err(), "nothing stored");
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_takes_new_registries_only_from_keys_allowed_to_create_within_a_quota() {
        let dir = tempfile::tempdir().unwrap();
        let hub = open(dir.path(), "hub");
        let reader = open(dir.path(), "reader");
        let services = hub.create_registry("services", schema()).unwrap();
        services
            .set_member(reader.public_key(), Role::Reader)
            .unwrap();
        for i in 0..3 {
            let own = reader
                .create_registry(&format!("spam-{i}"), schema())
                .unwrap();
            own.set_member(hub.public_key(), Role::Writer).unwrap();
        }
        let round = |options: ServeOptions| {
            let (hub, reader) = (hub.clone(), reader.clone());
            async move {
                let (a, b) = tokio::io::duplex(1 << 16);
                let key = hub.public_key();
                let server =
                    tokio::spawn(async move { hub.serve_stream(b, &options).await.unwrap() });
                let report = reader
                    .sync_peer_over(a, Some(key), &PeerOptions::default())
                    .await
                    .unwrap();
                server.await.unwrap();
                report
            }
        };
        let held = || hub.registries().unwrap().len();

        // By default a hub takes no new registry from a member's push.
        let report = round(ServeOptions::default()).await;
        assert_eq!(held(), 1, "the hub kept only its own registry");
        let refused: Vec<_> = report
            .registries
            .iter()
            .filter_map(|r| r.refused.clone())
            .collect();
        assert_eq!(refused.len(), 3, "{report:?}");
        assert!(
            refused[0].contains("takes no new registries from your key"),
            "{refused:?}"
        );
        assert!(hub.journal().unwrap().iter().any(|e| {
            e.kind == "peer-refused"
                && e.detail["reason"]
                    .as_str()
                    .unwrap()
                    .contains("may not create")
        }));

        // Allowed to create: up to the quota, which later connections keep.
        let allowed = ServeOptions {
            allow_create: vec![reader.public_key()],
            create_quota: 2,
            ..ServeOptions::default()
        };
        let report = round(allowed.clone()).await;
        assert_eq!(held(), 3);
        let over: Vec<_> = report
            .registries
            .iter()
            .filter_map(|r| r.refused.clone())
            .collect();
        assert_eq!(over.len(), 1, "{report:?}");
        assert!(over[0].contains("as many new registries"), "{over:?}");
        round(allowed).await;
        assert_eq!(held(), 3, "the quota holds across connections");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_strangers_do_not_lock_members_out() {
        let options = ServeOptions {
            max_peers: 16,
            // Long enough that only making way frees their places.
            handshake_timeout: Duration::from_secs(60),
            ..ServeOptions::default()
        };
        let w = world(Some(Role::Writer), options).await;
        // Far more idle connections than peer slots, or places for
        // connections in their handshake, from five other addresses: they
        // connect and never say a word.
        let mut idle = Vec::new();
        for ip in 2..=6 {
            for _ in 0..40 {
                idle.push(connect_from([127, 0, 0, ip], w.addr()).await);
            }
        }
        // Past the grace period, the oldest of them give way to newcomers.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // A member still gets in, while they are all still open.
        w.good_syncs().await;
        let metrics = w.server.metrics();
        assert!(metrics.turned_away >= 200 - 128, "{metrics:?}");
        drop(idle);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_back_changes_are_bounded_per_connection() {
        let options = ServeOptions {
            limits: SessionLimits {
                max_pending_bytes: 16 << 10,
                ..SessionLimits::default()
            },
            ..ServeOptions::default()
        };
        let mut w = world(Some(Role::Writer), options).await;
        let heads = w.services.heads();
        let evil_id = Identity::from_secret_bytes(EVIL);
        let mut evil = Evil::connect(w.addr()).await;
        // Changes whose dependency never comes, 10 KiB each: the first is
        // held and its dependency asked for; the second goes over budget.
        for round in 0..2u64 {
            let chain = craft_big_chain(&w.services, &evil_id, 10 << 10, round);
            let (second, _, sig) = chain[1].clone();
            let payload = sync_payload(vec![second], vec![(evil_key(), sig)]);
            let env = evil.seal(w.services.id().as_bytes(), Kind::Sync, &payload);
            evil.send(&env).await;
            if round == 0 {
                let reply = evil.recv().await.unwrap();
                assert_eq!(reply.kind, Kind::Sync);
            }
        }
        let told = evil.refusal().await;
        assert!(
            told.contains("dependencies never came") && told.contains("limit"),
            "{told}"
        );
        assert!(w.next_refusal().await.contains("dependencies never came"));
        assert!(w.journaled("dependencies never came"));
        assert_eq!(w.services.heads(), heads, "nothing applied");
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_back_changes_are_bounded_per_peer_over_its_connections() {
        let options = ServeOptions {
            max_pending_bytes_per_peer: 16 << 10,
            ..ServeOptions::default()
        };
        let mut w = world(Some(Role::Writer), options).await;
        let evil_id = Identity::from_secret_bytes(EVIL);
        // Two connections of the same peer, each well within its own
        // budget, hold 10 KiB each: the second goes over the peer's.
        let mut first = Evil::connect(w.addr()).await;
        let mut second = Evil::connect(w.addr()).await;
        for (seed, evil) in [(1, &mut first), (2, &mut second)] {
            let chain = craft_big_chain(&w.services, &evil_id, 10 << 10, seed);
            let (change, _, sig) = chain[1].clone();
            let payload = sync_payload(vec![change], vec![(evil_key(), sig)]);
            let env = evil.seal(w.services.id().as_bytes(), Kind::Sync, &payload);
            evil.send(&env).await;
        }
        assert_eq!(first.recv().await.unwrap().kind, Kind::Sync, "held");
        let told = second.refusal().await;
        assert!(told.contains("holds for one peer"), "{told}");
        assert!(w.next_refusal().await.contains("holds for one peer"));
        // Once the first connection closes, what it held is given back.
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut third = Evil::connect(w.addr()).await;
        let chain = craft_big_chain(&w.services, &evil_id, 10 << 10, 3);
        let (change, _, sig) = chain[1].clone();
        let payload = sync_payload(vec![change], vec![(evil_key(), sig)]);
        let env = third.seal(w.services.id().as_bytes(), Kind::Sync, &payload);
        third.send(&env).await;
        assert_eq!(third.recv().await.unwrap().kind, Kind::Sync, "held");
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_may_hold_only_so_many_connections() {
        let options = ServeOptions {
            max_connections_per_peer: 2,
            ..ServeOptions::default()
        };
        let mut w = world(Some(Role::Writer), options).await;
        let _first = Evil::connect(w.addr()).await;
        let _second = Evil::connect(w.addr()).await;
        // The third is refused, and told why, right after its handshake.
        let stream = TcpStream::connect(w.addr()).await.unwrap();
        let id = Identity::from_secret_bytes(EVIL);
        let mut ch = frame::handshake(stream, &id, true, 1 << 24, Arc::default())
            .await
            .unwrap();
        let env = envelope::open(&ch.reader.recv().await.unwrap().unwrap()).unwrap();
        assert_eq!(env.kind, Kind::Refused);
        let told = String::from_utf8_lossy(&env.payload).into_owned();
        assert!(told.contains("2 connections open here"), "{told}");
        assert!(w.next_refusal().await.contains("connections open here"));
        // Its key was accepted: the refusal is journaled.
        assert!(w.journaled("connections open here"));
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn asking_about_many_unshared_registries_is_refused() {
        let mut w = world(Some(Role::Writer), ServeOptions::default()).await;
        let mut evil = Evil::connect(w.addr()).await;
        let limit = SessionLimits::default().max_unshared_registries;
        let mut empty = AutoCommit::new();
        let ask = empty
            .sync()
            .generate_sync_message(&mut automerge::sync::State::new())
            .unwrap();
        for i in 0..=limit {
            let mut id = [7u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let id = RegistryId::from_bytes(&id).unwrap();
            let env = evil.seal(
                id.as_bytes(),
                Kind::Sync,
                &envelope::encode_sync(&ask.clone().encode(), &[]),
            );
            evil.send(&env).await;
            if i < limit {
                assert_eq!(evil.recv().await.unwrap().kind, Kind::Sync);
            }
        }
        let told = evil.refusal().await;
        assert!(
            told.contains("registries not shared with it here"),
            "{told}"
        );
        assert!(w.next_refusal().await.contains("not shared with it here"));
        w.good_syncs().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_live_connection_is_closed_and_a_live_watcher_is_kept() {
        let options = ServeOptions {
            idle_timeout: Duration::from_millis(1500),
            ..ServeOptions::default()
        };
        let mut w = world(Some(Role::Writer), options).await;
        // A watcher that says it is still there more often than that.
        let peer = Peer::new(w.addr().to_string()).with_key(w.hub.public_key());
        let mut watch = w.good.watch(
            peer,
            PeerOptions {
                keepalive: Duration::from_millis(300),
                ..PeerOptions::default()
            },
        );
        match tokio::time::timeout(PATIENCE, watch.next_event())
            .await
            .unwrap()
        {
            Some(WatchEvent::Connected(_)) => {}
            other => panic!("{other:?}"),
        }
        let mut evil = Evil::connect(w.addr()).await;
        let told = evil.refusal().await;
        assert!(told.contains("said nothing"), "{told}");
        assert!(w.next_refusal().await.contains("said nothing"));
        // The watcher outlived the silent peer.
        assert!(
            tokio::time::timeout(Duration::from_secs(2), watch.next_event())
                .await
                .is_err(),
            "the watcher stayed connected"
        );
        watch.close().await;
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
