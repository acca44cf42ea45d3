//! A service registry kept by two teams on two replicas that work offline
//! and exchange signed bundle files.
//!
//! Run with `cargo run --example service_registry`.

use chittysync::{ConflictPolicy, FieldDef, FieldKind, Replica, Role, Schema};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let platform = Replica::open(dir.path().join("platform.db"))?;
    let payments = Replica::open(dir.path().join("payments.db"))?;

    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required().unique())
        .field(FieldDef::new("url", FieldKind::Url))
        .field(FieldDef::new("owner", FieldKind::Email).conflict_policy(ConflictPolicy::Manual))
        .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["pci", "public", "internal"]))
        .conflict_policy(ConflictPolicy::LastWriteWins);
    let services = platform.create_registry("services", schema)?;
    services.set_member(payments.public_key(), Role::Writer)?;
    let api = services.put(None, [("name", "api"), ("owner", "platform@example.com")])?;

    // Sneakernet: the bundle file could travel on a USB stick.
    let file = dir.path().join("services.bundle");
    services.export(&[])?.write_file(&file)?;
    payments.import_file(&file)?;
    let theirs = payments.registry("services")?;

    // Both edit the owner while apart; the field's policy is manual.
    services.put(Some(&api), [("owner", "core@example.com")])?;
    theirs.put(
        Some(&api),
        [("owner", "payments@example.com"), ("tags", "pci")],
    )?;

    // Exchange only what each side lacks.
    let to_payments = services.export(&theirs.heads())?;
    let to_platform = theirs.export(&services.heads())?;
    payments.import(to_payments)?;
    platform.import(to_platform)?;
    assert_eq!(services.state_digest(), theirs.state_digest());

    for conflict in services.conflicts() {
        println!(
            "{}.{} is open ({} candidates, policy {})",
            conflict.record,
            conflict.field,
            conflict.candidates.len(),
            conflict.policy
        );
    }
    services.resolve(&api, "owner", "payments@example.com")?;
    payments.import(services.export(&theirs.heads())?)?;
    assert!(theirs.conflicts().is_empty());
    println!(
        "resolved; both replicas agree: {}",
        theirs.get(&api).unwrap().to_json()
    );
    Ok(())
}
