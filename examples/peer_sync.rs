//! Peer sync on one machine: a hub serves a registry over TCP, a laptop
//! syncs one round, and a phone keeps a live connection that sees the
//! laptop's change arrive.
//!
//! ```sh
//! cargo run --example peer_sync
//! ```

use chittysync::{FieldDef, FieldKind, Peer, PeerOptions, Replica, Role, Schema, ServeOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let hub = Replica::open(dir.path().join("hub.db"))?;
    let laptop = Replica::open(dir.path().join("laptop.db"))?;
    let phone = Replica::open(dir.path().join("phone.db"))?;

    let schema = Schema::new().field(FieldDef::new("name", FieldKind::Text).required());
    let services = hub.create_registry("services", schema)?;
    services.set_member(laptop.public_key(), Role::Writer)?;
    services.set_member(phone.public_key(), Role::Reader)?;
    services.put(Some("billing"), [("name", "billing")])?;

    // The hub listens; peers pin its key.
    let server = hub.serve("127.0.0.1:0", ServeOptions::default()).await?;
    let to_hub = Peer::new(server.local_addr().to_string()).with_key(hub.public_key());

    // The phone stays connected and is told when changes arrive.
    let mut arrivals = phone.subscribe();
    let _live = phone.watch(to_hub.clone(), PeerOptions::default());
    let first = arrivals.next().await.ok_or("the phone stopped")?;
    println!(
        "phone received {} change(s) of '{}'",
        first.applied, first.name
    );

    // The laptop syncs one round, writes offline, and syncs again.
    let report = laptop.sync_peer(&to_hub, &PeerOptions::default()).await?;
    println!(
        "laptop: {} change(s) in, {} out, {} bytes",
        report.changes_in(),
        report.changes_out(),
        report.bytes_sent + report.bytes_received
    );
    laptop
        .registry("services")?
        .put(Some("search"), [("name", "search")])?;
    laptop.sync_peer(&to_hub, &PeerOptions::default()).await?;

    // The hub pushes the laptop's change to the phone as it lands.
    let pushed = arrivals.next().await.ok_or("the phone stopped")?;
    println!("phone received {} change(s) from the hub", pushed.applied);
    let phones = phone.registry("services")?;
    assert_eq!(phones.heads(), services.heads());
    assert_eq!(phones.len(), 2);
    println!("all three replicas hold {} records", phones.len());
    Ok(())
}
