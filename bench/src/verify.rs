//! Benchmark: end-to-end verification of a registry (`Replica::verify`)
//! against raw ed25519-dalek batch verification of the same signatures —
//! the floor under any verification that checks every signature.

use std::path::Path;
use std::time::Duration;

use chittysync::{Identity, RecordRule, Replica, Role, Value};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::json;

use crate::data::{self, REGISTRY};
use crate::measure::{interleave, time};
use crate::report::{Figure, Goal};
use crate::{Options, Result};

/// Rounds of bundle exchange between the admin and the writer while the
/// history is built: each round's changes depend on the other member's.
const ROUNDS: usize = 20;

/// Records each member keeps rewriting: the first writes create them, the
/// rest update them (always the author's own, as the record rule demands).
const RECORDS_PER_MEMBER: usize = 500;

/// The signed triples the baseline verifies, decoded outside the timing.
struct Triples {
    messages: Vec<Vec<u8>>,
    signatures: Vec<Signature>,
    keys: Vec<VerifyingKey>,
}

/// Builds, at `path`, an admin's replica holding one registry of `changes`
/// signed record writes (besides its genesis and the writer's membership),
/// half by the admin and half by a writer, each change one small record
/// write. The two exchange bundles every round, so the history interleaves
/// both authors. The registry compacts itself as it grows, as it would in
/// use: most changes end up in its snapshot. Returns the registry's
/// signatures as the baseline verifies them.
fn build(path: &Path, changes: usize) -> Result<Triples> {
    let dir = path.parent().ok_or("the store needs a directory")?;
    let admin = Replica::open(path)?;
    let writer_path = dir.join("verify-writer.db");
    let writer = Replica::open_with_identity(&writer_path, Identity::generate()?)?;
    let schema = data::schema().record_rule(RecordRule::CreatorOrAdmin);
    let ours = admin.create_registry(REGISTRY, schema)?;
    ours.set_member(writer.public_key(), Role::Writer)?;
    writer.import(ours.export(&[])?)?;
    let theirs = writer.registry_by_id(ours.id())?;
    let rounds = ROUNDS.min(changes.div_ceil(2)).max(1);
    let mut written = 0;
    // Changes written so far by the admin and by the writer.
    let mut mine = [0usize; 2];
    for round in 0..rounds {
        // This round's share of the remaining changes, split between both.
        let share = (changes - written) / (rounds - round);
        let sides = [
            ("a", &ours, &writer, &theirs, share / 2),
            ("w", &theirs, &admin, &ours, share - share / 2),
        ];
        for (side, (who, registry, peer, peers_copy, count)) in sides.into_iter().enumerate() {
            for _ in 0..count {
                let k = mine[side] % RECORDS_PER_MEMBER;
                mine[side] += 1;
                let id = format!("{who}-{k:04}");
                let port = 1024 + (written % 50_000) as i64;
                registry.put(
                    Some(&id),
                    [
                        ("name", Value::from(format!("service-{id}"))),
                        ("port", port.into()),
                    ],
                )?;
                written += 1;
            }
            // The other member takes what it lacks, so the next changes
            // depend on both authors' work.
            peer.import(registry.export(&peers_copy.heads())?)?;
        }
    }
    if ours.heads() != theirs.heads() {
        return Err("the admin and the writer did not converge".into());
    }
    let bundle = ours.export(&[])?;
    drop((ours, theirs, admin, writer));
    data::remove_store(&writer_path);

    // Mirrors the message core signs (trust::signing_message); if the two
    // drift apart the baseline's verification fails and says so.
    const DOMAIN: &[u8] = b"chittysync/change-signature/v1\n";
    let id = bundle.registry();
    let changes = bundle.changes();
    let mut decoded = std::collections::HashMap::new();
    let keys = changes
        .iter()
        .map(|c| {
            let author = *c.author().as_bytes();
            match decoded.get(&author) {
                Some(k) => Ok(*k),
                None => {
                    let k = VerifyingKey::from_bytes(&author)?;
                    decoded.insert(author, k);
                    Ok(k)
                }
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Triples {
        messages: changes
            .iter()
            .map(|c| [DOMAIN, id.as_bytes(), &c.hash().0].concat())
            .collect(),
        signatures: changes
            .iter()
            .map(|c| Signature::from_bytes(c.signature()))
            .collect(),
        keys,
    })
}

/// Runs the verification benchmark.
pub(crate) fn run(options: &Options) -> Result<Vec<Figure>> {
    const BENCH: &str = "verify vs raw ed25519 verify_batch";
    let changes = options
        .changes
        .unwrap_or(if options.quick { 2_000 } else { 100_000 });
    // A history of 100k durable changes is slow to write: build it in RAM
    // when the machine has tmpfs, once, outside the timing.
    let ram = data::tmpfs_dir();
    let disk;
    let (dir, fs) = match &ram {
        Some(ram) => (ram.path(), "tmpfs".to_owned()),
        None => {
            disk = tempfile::tempdir()?;
            let fs = data::fs_type(disk.path()).unwrap_or_else(|| "unknown fs".into());
            (disk.path(), fs)
        }
    };
    let path = dir.join("verify-admin.db");
    let (triples, built) = time(|| build(&path, changes));
    let triples = triples?;
    let signatures = triples.signatures.len();
    if !options.json {
        eprintln!(
            "  built {signatures} signed changes on {fs} in {:.1} s",
            built.as_secs_f64()
        );
    }

    let ours = |i: usize| -> Result<Duration> {
        let (report, elapsed) = time(|| -> Result<chittysync::VerifyReport> {
            Ok(Replica::open(&path)?.verify(None)?)
        });
        let report = report?;
        let counted = report.registries.iter().map(|r| r.changes).sum::<usize>();
        if counted != signatures {
            return Err(format!("verify checked {counted} changes, expected {signatures}").into());
        }
        if i == 0 && report.registries.first().map(|r| r.authors) != Some(2) {
            return Err("verify did not see both authors".into());
        }
        Ok(elapsed)
    };
    let base = |_| -> Result<Duration> {
        let messages: Vec<&[u8]> = triples.messages.iter().map(Vec::as_slice).collect();
        let (verified, elapsed) =
            time(|| ed25519_dalek::verify_batch(&messages, &triples.signatures, &triples.keys));
        verified.map_err(|e| format!("raw ed25519 verification failed: {e}"))?;
        Ok(elapsed)
    };
    let pairs = interleave(options.pick(1, 0), options.pick(5, 3), ours, base)?;
    Ok(vec![
        Figure::throughput(
            BENCH,
            format!("{signatures} changes, 2 authors, store on {fs}"),
            signatures,
            &pairs,
            Some(Goal::AtLeast(0.9)),
            "ours: Replica::open + verify(None), open included (store check, change hashes, \
             history vs rows, signatures, genesis, roles at each change's deps, writers' ops \
             under creator-or-admin, schema, journal, checkpoints), up to 2 threads; \
             base: one verify_batch over the same pre-decoded (message, signature, key) \
             triples, 1 thread",
        )
        .in_changes()
        .with_extra(json!({
            "changes": signatures,
            "build_s": built.as_secs_f64(),
            "store_fs": fs,
        })),
    ])
}
