//! Peer sync tests that need the protocol's internals: a hand-built
//! malicious peer, and sessions over the in-memory transport.

use std::path::Path;

use super::*;
use crate::identity::Identity;
use crate::registry::Role;
use crate::schema::{FieldDef, FieldType, Schema};

fn open(dir: &Path, name: &str) -> Replica {
    Replica::open(dir.join(format!("{name}.db"))).unwrap()
}

fn schema() -> Schema {
    Schema::new().field(FieldDef::new("name", FieldType::Text))
}

/// One round between `client` and `hub` over the in-memory transport.
async fn round(client: &Replica, hub: &Replica) -> (SyncReport, SyncReport) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.serve_stream(b, &ServeOptions::default()).await })
    };
    let c = client
        .sync_over(a, Some(hub.public_key()), &SyncOptions::default())
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
}
