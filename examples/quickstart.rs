//! Quickstart: open a replica, create a registry, write and read records.
//!
//! Run with `cargo run --example quickstart`.

use chittysync::{FieldDef, FieldKind, Query, Replica, Schema};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let replica = Replica::open(dir.path().join("replica.db"))?;
    println!("this replica signs as {}", replica.public_key());

    let schema = Schema::new()
        .field(FieldDef::new("title", FieldKind::Text).required())
        .field(FieldDef::new("status", FieldKind::Select).options(["open", "mitigated", "closed"]))
        .field(FieldDef::new("severity", FieldKind::Integer).range(Some(1.0), Some(5.0)))
        .field(FieldDef::new("notes", FieldKind::LongText));
    let incidents = replica.create_registry("incidents", schema)?;

    let id = incidents.put(
        None,
        [
            ("title", "API latency"),
            ("status", "open"),
            ("severity", "2"),
        ],
    )?;
    incidents.put(Some(&id), [("notes", "p99 at 2s since 10:00 UTC")])?;
    incidents.put(Some(&id), [("status", "mitigated")])?;

    // Writes that break the schema are refused with the rule they break.
    let err = incidents.put(Some(&id), [("severity", "9")]).unwrap_err();
    println!("refused: {err}");

    for record in incidents.list(&Query::all().filter("status", "mitigated")) {
        println!("{} {:?}", record.id, record.fields);
    }
    println!("{} signed changes", incidents.change_count());
    Ok(())
}
