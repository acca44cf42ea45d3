//! Peer sync over loopback TCP: two peers, twenty peers through a hub,
//! partition and heal, and live (watched) connections. Timeouts here are
//! hang guards only; no assertion depends on timing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chittysync::{
    FieldDef, FieldKind, Peer, PeerError, PeerOptions, Registry, Replica, Role, Schema,
    ServeOptions,
};
use common::{observe, replica};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(120);

fn schema() -> Schema {
    Schema::new().field(FieldDef::new("name", FieldKind::Text))
}

fn hub_peer(hub: &Replica, addr: std::net::SocketAddr) -> Peer {
    Peer::new(addr.to_string()).with_key(hub.public_key())
}

/// Writes `n` records from a blocking thread (writes hit SQLite).
fn write_many(reg: &Registry, who: &str, n: usize) -> tokio::task::JoinHandle<()> {
    let reg = reg.clone();
    let who = who.to_owned();
    tokio::task::spawn_blocking(move || {
        for i in 0..n {
            reg.put(None, [("name", format!("{who}-{i}"))]).unwrap();
        }
    })
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hang guard: {what} never happened"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_peers_with_concurrent_writers_converge_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let alice = replica(dir.path(), "alice");
    let bob = replica(dir.path(), "bob");
    let services = alice.create_registry("services", schema()).unwrap();
    let incidents = alice.create_registry("incidents", schema()).unwrap();
    for reg in [&services, &incidents] {
        reg.set_member(bob.public_key(), Role::Writer).unwrap();
    }
    let hub = alice
        .serve("127.0.0.1:0", ServeOptions::default())
        .await
        .unwrap();
    let peer = hub_peer(&alice, hub.local_addr());

    let first = bob.sync_peer(&peer, &PeerOptions::default()).await.unwrap();
    let names: BTreeSet<String> = first.registries.iter().map(|r| r.name.clone()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["incidents".into(), "services".into()])
    );
    let bob_services = bob.registry("services").unwrap();
    let bob_incidents = bob.registry("incidents").unwrap();

    // Both write to both registries while bob keeps syncing.
    let writers = [
        write_many(&services, "alice", 40),
        write_many(&incidents, "alice", 40),
        write_many(&bob_services, "bob", 40),
        write_many(&bob_incidents, "bob", 40),
    ];
    let mut rounds = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        bob.sync_peer(&peer, &PeerOptions::default()).await.unwrap();
        rounds += 1;
    }
    for w in writers {
        w.await.unwrap();
    }
    let last = bob.sync_peer(&peer, &PeerOptions::default()).await.unwrap();
    assert!(rounds >= 1);
    assert_eq!(
        last.registries.len(),
        2,
        "both registries on one connection"
    );
    for (a, b) in [(&services, &bob_services), (&incidents, &bob_incidents)] {
        assert_eq!(observe(a), observe(b));
        assert_eq!(a.len(), 80);
    }
    alice.verify(None).unwrap();
    bob.verify(None).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_peers_through_a_hub_converge_and_see_only_their_registries() {
    let dir = tempfile::tempdir().unwrap();
    let hub = replica(dir.path(), "hub");
    let services = hub.create_registry("services", schema()).unwrap();
    let secret = hub.create_registry("secret", schema()).unwrap();
    let peers: Vec<Replica> = (0..20)
        .map(|i| replica(dir.path(), &format!("peer{i}")))
        .collect();
    for (i, p) in peers.iter().enumerate() {
        let role = if i % 5 == 4 {
            Role::Reader
        } else {
            Role::Writer
        };
        services.set_member(p.public_key(), role).unwrap();
    }
    // Only the first two peers may see the secret registry.
    for p in &peers[..2] {
        secret.set_member(p.public_key(), Role::Writer).unwrap();
    }
    let server = hub
        .serve("127.0.0.1:0", ServeOptions::default())
        .await
        .unwrap();
    let addr = server.local_addr();

    // Every peer pulls, then writers write and all sync concurrently, twice.
    for round in 0..3 {
        let tasks: Vec<_> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = p.clone();
                let peer = hub_peer(&hub, addr);
                tokio::spawn(async move {
                    if round == 1 && i % 5 != 4 {
                        let reg = p.registry("services").unwrap();
                        tokio::task::spawn_blocking(move || {
                            for k in 0..3 {
                                reg.put(None, [("name", format!("p{i}-{k}"))]).unwrap();
                            }
                        })
                        .await
                        .unwrap();
                    }
                    p.sync_peer(&peer, &PeerOptions::default()).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    // After the concurrent round every write is at the hub; one more
    // round brings everyone the writes of those who synced before them.
    for p in &peers {
        p.sync_peer(&hub_peer(&hub, addr), &PeerOptions::default())
            .await
            .unwrap();
    }
    let expected = observe(&services);
    assert_eq!(services.len(), 16 * 3);
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(
            observe(&p.registry("services").unwrap()),
            expected,
            "peer {i}"
        );
        let has_secret = p.registries().unwrap().iter().any(|r| r.name == "secret");
        assert_eq!(
            has_secret,
            i < 2,
            "peer {i} sees the secret registry only if a member"
        );
    }
    hub.verify(None).unwrap();
}

/// A TCP proxy that forwards one connection and cuts it after the hub has
/// sent `cut_after` bytes.
async fn cutting_proxy(target: std::net::SocketAddr, cut_after: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(target).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut cr, &mut sw).await;
        });
        let mut sent = 0;
        let mut buf = vec![0u8; 4096];
        while sent < cut_after {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n.min(cut_after - sent),
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            sent += n;
        }
        up.abort();
        // Dropping both halves of both sockets cuts the connection.
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_cut_mid_sync_applies_nothing_half_way_and_the_next_sync_heals() {
    let dir = tempfile::tempdir().unwrap();
    let alice = replica(dir.path(), "alice");
    let bob = replica(dir.path(), "bob");
    let services = alice.create_registry("services", schema()).unwrap();
    services.set_member(bob.public_key(), Role::Writer).unwrap();
    let server = alice
        .serve("127.0.0.1:0", ServeOptions::default())
        .await
        .unwrap();
    let direct = hub_peer(&alice, server.local_addr());
    bob.sync_peer(&direct, &PeerOptions::default())
        .await
        .unwrap();
    let bobs = bob.registry("services").unwrap();

    // Partition: both sides write a lot while apart.
    let writers = [
        write_many(&services, "alice", 300),
        write_many(&bobs, "bob", 50),
    ];
    for w in writers {
        w.await.unwrap();
    }
    let before = observe(&bobs);

    // The first attempt is cut while the hub is sending.
    let proxy = cutting_proxy(server.local_addr(), 20_000).await;
    let cut = bob
        .sync_peer(&hub_peer(&alice, proxy), &PeerOptions::default())
        .await;
    assert!(
        matches!(cut, Err(PeerError::Connection { .. })),
        "the cut surfaces as a connection error: {cut:?}"
    );
    // Whatever arrived was verified and committed whole, or not at all.
    bob.verify(None).unwrap();
    let after_cut = observe(&bobs);
    assert!(after_cut.change_count >= before.change_count);

    // Heal.
    let healed = bob
        .sync_peer(&direct, &PeerOptions::default())
        .await
        .unwrap();
    assert!(healed.changes_out() > 0 || after_cut.change_count > before.change_count);
    assert_eq!(observe(&bobs), observe(&services));
    assert_eq!(services.len(), 350);
    alice.verify(None).unwrap();
    bob.verify(None).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watched_connection_carries_changes_both_ways_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let alice = replica(dir.path(), "alice");
    let bob = replica(dir.path(), "bob");
    let services = alice.create_registry("services", schema()).unwrap();
    services.set_member(bob.public_key(), Role::Writer).unwrap();
    let server = alice
        .serve("127.0.0.1:0", ServeOptions::default())
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut bob_sees = bob.subscribe();
    let mut alice_sees = alice.subscribe();
    let watch = bob.watch(hub_peer(&alice, addr), PeerOptions::default());

    // The registry arrives, then a change made at the hub is pushed.
    let first = tokio::time::timeout(PATIENCE, bob_sees.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.registry, services.id());
    services
        .put(Some("live"), [("name", "pushed by the hub")])
        .unwrap();
    let pushed = tokio::time::timeout(PATIENCE, bob_sees.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pushed.peer, alice.public_key());
    let bobs = bob.registry("services").unwrap();
    assert_eq!(
        bobs.get("live").unwrap().get("name"),
        Some(&"pushed by the hub".into())
    );

    // A change made by the watching side reaches the hub.
    bobs.put(Some("back"), [("name", "pushed by bob")]).unwrap();
    let arrived = tokio::time::timeout(PATIENCE, alice_sees.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(arrived.peer, bob.public_key());
    assert!(services.get("back").is_some());

    // The hub restarts on the same port; the watch reconnects by itself.
    drop(server);
    services
        .put(Some("offline"), [("name", "written while apart")])
        .unwrap();
    let server = loop {
        match alice
            .serve(&addr.to_string(), ServeOptions::default())
            .await
        {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    eventually("the reconnected watch brings the offline write", || {
        bobs.get("offline").is_some()
    })
    .await;
    assert_eq!(observe(&bobs), observe(&services));
    // Closing the watch ends the session cleanly: what moved is journaled.
    watch.close().await;
    assert!(bob.journal().unwrap().iter().any(|e| e.kind == "synced"
        && e.detail["peer"] == alice.public_key().to_string()
        && e.detail["changes_in"].as_u64() > Some(0)));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hubs_linked_to_each_other_carry_changes_between_their_clients() {
    let dir = tempfile::tempdir().unwrap();
    let east = replica(dir.path(), "east");
    let west = replica(dir.path(), "west");
    let laptop = replica(dir.path(), "laptop");
    let phone = replica(dir.path(), "phone");
    let services = east.create_registry("services", schema()).unwrap();
    for r in [&west, &laptop, &phone] {
        services.set_member(r.public_key(), Role::Writer).unwrap();
    }
    let east_hub = east
        .serve("127.0.0.1:0", ServeOptions::default())
        .await
        .unwrap();
    // West has never held the registry: the link brings it, from a key
    // west allows to create registries there.
    let west_hub = west
        .serve(
            "127.0.0.1:0",
            ServeOptions {
                allow_create: vec![east.public_key()],
                ..ServeOptions::default()
            },
        )
        .await
        .unwrap();
    let _link = east.watch(
        hub_peer(&west, west_hub.local_addr()),
        PeerOptions::default(),
    );

    // The laptop talks only to east, the phone only to west.
    let to_east = hub_peer(&east, east_hub.local_addr());
    let to_west = hub_peer(&west, west_hub.local_addr());
    laptop
        .sync_peer(&to_east, &PeerOptions::default())
        .await
        .unwrap();
    laptop
        .registry("services")
        .unwrap()
        .put(Some("from-laptop"), [("name", "written on the laptop")])
        .unwrap();
    laptop
        .sync_peer(&to_east, &PeerOptions::default())
        .await
        .unwrap();

    let mut rounds = 0;
    loop {
        phone
            .sync_peer(&to_west, &PeerOptions::default())
            .await
            .unwrap();
        if let Ok(reg) = phone.registry("services")
            && reg.get("from-laptop").is_some()
        {
            break;
        }
        rounds += 1;
        assert!(
            rounds < 2000,
            "hang guard: the change never crossed the hubs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let phones = phone.registry("services").unwrap();
    phones
        .put(Some("from-phone"), [("name", "written on the phone")])
        .unwrap();
    phone
        .sync_peer(&to_west, &PeerOptions::default())
        .await
        .unwrap();
    eventually("the phone's change reaches east", || {
        services.get("from-phone").is_some()
    })
    .await;
    laptop
        .sync_peer(&to_east, &PeerOptions::default())
        .await
        .unwrap();
    let laptops = laptop.registry("services").unwrap();
    assert_eq!(observe(&laptops), observe(&services));
    eventually("west catches up", || {
        west.registry("services").map(|r| r.heads()).ok() == Some(services.heads())
    })
    .await;
    assert_eq!(
        observe(&west.registry("services").unwrap()),
        observe(&phones)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trust_on_first_use_pins_the_key_and_refuses_another_at_that_address() {
    let dir = tempfile::tempdir().unwrap();
    let alice = replica(dir.path(), "alice");
    let mallory = replica(dir.path(), "mallory");
    let bob = replica(dir.path(), "bob");
    let services = alice.create_registry("services", schema()).unwrap();
    services.set_member(bob.public_key(), Role::Writer).unwrap();
    let fake = mallory.create_registry("services", schema()).unwrap();
    fake.set_member(bob.public_key(), Role::Writer).unwrap();

    let server = alice
        .serve("127.0.0.1:0", ServeOptions::default())
        .await
        .unwrap();
    let addr = server.local_addr();
    // No key given: the first key seen at this address is pinned.
    bob.sync_peer(&Peer::new(addr.to_string()), &PeerOptions::default())
        .await
        .unwrap();
    let pinned = bob.journal().unwrap();
    assert!(pinned.iter().any(|e| e.kind == "peer-pinned"
        && e.detail["peer"] == alice.public_key().to_string()
        && e.detail["address"] == addr.to_string()));

    // Another replica takes over the address: bob refuses it.
    drop(server);
    let impostor = loop {
        match mallory
            .serve(&addr.to_string(), ServeOptions::default())
            .await
        {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let err = bob
        .sync_peer(&Peer::new(addr.to_string()), &PeerOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PeerError::Refused { reason, .. } if reason.contains("pinned to key")),
        "{err}"
    );
    assert_eq!(
        bob.registries().unwrap().len(),
        1,
        "nothing taken from the impostor"
    );
    assert_eq!(bob.registry("services").unwrap().id(), services.id());
    // Naming the new key explicitly is how a user accepts a real key change.
    bob.sync_peer(
        &Peer::new(addr.to_string()).with_key(mallory.public_key()),
        &PeerOptions::default(),
    )
    .await
    .unwrap();
    drop(impostor);
}
