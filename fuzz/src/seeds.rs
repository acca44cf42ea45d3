//! Seed inputs, made by the library itself so they follow the current
//! formats: a mutated valid input reaches much deeper than random bytes.

use chittysync::{Checkpoint, FieldDef, FieldKind, Identity, Replica, Schema, Value};

pub(crate) fn for_target(name: &str) -> Vec<Vec<u8>> {
    match name {
        "bundle" => bundles(),
        "checkpoint" => checkpoints(),
        "proofs" => proofs(),
        other => chittysync::fuzzing::seeds(other),
    }
}

/// A replica holding one registry with a few records, and the registry.
fn replica_with_history(dir: &std::path::Path) -> Replica {
    let replica = Replica::open_with_identity(
        dir.join("seed.db"),
        Identity::from_secret_bytes(super::LOG_SEED),
    )
    .expect("a fresh replica opens");
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("port", FieldKind::Integer))
        .field(FieldDef::new("notes", FieldKind::LongText));
    let reg = replica
        .create_registry("services", schema)
        .expect("a registry");
    let id = reg
        .put(
            None,
            [
                ("name", Value::from("billing")),
                ("port", Value::Integer(80)),
            ],
        )
        .expect("a put");
    reg.put(
        Some(&id),
        [("notes", Value::from("runs on the ledger hosts"))],
    )
    .expect("a put");
    reg.put(None, [("name", Value::from("search"))])
        .expect("a put");
    replica
}

fn bundles() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let replica = replica_with_history(dir.path());
    let reg = replica.registry("services").expect("the registry");
    let plain = reg.export(&[]).expect("an export").to_bytes();
    reg.attest().expect("an attestation");
    let attested = reg.export(&[]).expect("an export").to_bytes();
    vec![plain, attested]
}

fn checkpoints() -> Vec<Vec<u8>> {
    let id = Identity::from_secret_bytes(super::LOG_SEED);
    [(0, [0u8; 32]), (7, [0xab; 32])]
        .into_iter()
        .map(|(size, root)| {
            Checkpoint::new(&id.public_key(), size, root)
                .sign(&id)
                .expect("the log's key signs")
                .into_bytes()
        })
        .collect()
}

fn proofs() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let replica = replica_with_history(dir.path());
    let reg = replica.registry("services").expect("the registry");
    let head = reg.heads()[0];
    replica.checkpoint().expect("a checkpoint");
    let inclusion = replica.prove_inclusion(head, None).expect("a proof");
    let consistency = replica.prove_consistency(2, 4).expect("a proof");
    vec![
        inclusion.to_json().into_bytes(),
        consistency.to_json().into_bytes(),
    ]
}
