//! `chittysync demo`: two replicas on embedded SQLite, offline edits on both,
//! an exchange of signed bundles, convergence, a conflict under a policy, a
//! refused invalid write and a refused tampered bundle.

use std::path::Path;

use anyhow::{Context, Result, bail};
use chittysync::{Bundle, ConflictPolicy, FieldDef, FieldKind, Registry, Replica, Role, Schema};

use crate::output;

fn step(n: u32, text: &str) {
    println!("\n── {n}. {text}");
}

fn show(name: &str, reg: &Registry) {
    println!("\n{name}'s copy of '{}':", reg.name());
    output::records(&reg.schema(), &reg.list(&chittysync::Query::all()));
}

pub(crate) fn run(dir: Option<&Path>) -> Result<()> {
    let tmp;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            if d.join("alice.db").exists() || d.join("bob.db").exists() {
                bail!(
                    "{} already holds demo replicas; pass an empty directory",
                    d.display()
                );
            }
            d.to_path_buf()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };

    step(
        1,
        "Two replicas, each a SQLite file with its own ed25519 key",
    );
    let alice = Replica::open(dir.join("alice.db"))?;
    let bob = Replica::open(dir.join("bob.db"))?;
    println!("alice  {}", alice.public_key());
    println!("bob    {}", bob.public_key());

    step(
        2,
        "Alice creates a 'services' registry (last-write-wins) and makes Bob a writer",
    );
    let schema = Schema::new()
        .field(
            FieldDef::new("name", FieldKind::Text)
                .required()
                .unique()
                .pattern("[a-z][a-z0-9-]*"),
        )
        .field(FieldDef::new("owner", FieldKind::Email).required())
        .field(FieldDef::new("tier", FieldKind::Select).options(["gold", "silver", "bronze"]))
        .field(FieldDef::new("port", FieldKind::Integer).range(Some(1.0), Some(65535.0)))
        .field(
            FieldDef::new("tags", FieldKind::MultiSelect)
                .options(["public", "internal", "pci", "beta"]),
        )
        .display_field("name")
        .conflict_policy(ConflictPolicy::LastWriteWins);
    let a = alice.create_registry("services", schema)?;
    a.set_member(bob.public_key(), Role::Writer)?;
    let checkout = a.put(
        None,
        [
            ("name", "checkout"),
            ("owner", "pay@example.com"),
            ("tier", "gold"),
            ("port", "8443"),
            ("tags", "public"),
        ],
    )?;
    let bundle_path = dir.join("alice-to-bob.bundle");
    a.export(&[])?.write_file(&bundle_path)?;
    let r = bob.import_file(&bundle_path)?;
    println!(
        "bob imported {} signed change(s), every signature verified",
        r.applied
    );
    let b = bob.registry("services")?;

    step(
        3,
        "Offline, both edit: new records on each side, and the same field concurrently",
    );
    a.put(
        None,
        [
            ("name", "billing"),
            ("owner", "ledger@example.com"),
            ("tier", "silver"),
        ],
    )?;
    a.put(Some(&checkout), [("port", "9443")])?;
    a.put(Some(&checkout), [("tags", "public,pci")])?;
    b.put(
        None,
        [
            ("name", "search"),
            ("owner", "find@example.com"),
            ("tier", "bronze"),
            ("port", "7700"),
        ],
    )?;
    b.put(Some(&checkout), [("port", "10443")])?; // later write: wins under last-write-wins
    b.put(Some(&checkout), [("tags", "beta")])?; // drops "public", adds "beta"
    println!("alice heads {}", short_heads(&a));
    println!("bob   heads {}", short_heads(&b));

    step(4, "They exchange bundles of only what the other lacks");
    let to_bob = a.export(&b.heads())?;
    let to_alice = b.export(&a.heads())?;
    println!(
        "alice → bob: {} change(s); bob → alice: {} change(s)",
        to_bob.len(),
        to_alice.len()
    );
    let (p1, p2) = (dir.join("to-bob.bundle"), dir.join("to-alice.bundle"));
    to_bob.write_file(&p1)?;
    to_alice.write_file(&p2)?;
    bob.import_file(&p1)?;
    alice.import_file(&p2)?;

    step(
        5,
        "Both replicas converged: identical heads and state digest",
    );
    println!(
        "alice heads {}  digest {}",
        short_heads(&a),
        &a.state_digest()[..16]
    );
    println!(
        "bob   heads {}  digest {}",
        short_heads(&b),
        &b.state_digest()[..16]
    );
    if a.heads() != b.heads() || a.state_digest() != b.state_digest() {
        bail!("the replicas did not converge — this is a bug, please report it");
    }
    println!("converged ✓");
    show("alice", &a);

    step(
        6,
        "The concurrent edit of checkout.port is a conflict, settled by last-write-wins",
    );
    for c in a.conflicts() {
        for (i, k) in c.candidates.iter().enumerate() {
            let mark = if c.chosen == Some(i) {
                "← chosen"
            } else {
                ""
            };
            let who = match k.author {
                Some(key) if key == alice.public_key() => "alice",
                Some(_) => "bob",
                None => "?",
            };
            println!(
                "  {}.{} = {:<8} by {who:<5} at {}  {mark}",
                c.field,
                short(&c.record),
                k.value.to_string(),
                k.time
            );
        }
    }
    println!(
        "tags merged option by option: {}",
        a.get(&checkout)
            .and_then(|r| r.get("tags").cloned())
            .map(|v| v.to_string())
            .unwrap_or_default()
    );

    step(
        7,
        "An invalid write is refused, naming the rule; nothing is written",
    );
    let before = a.heads();
    match a.put(Some(&checkout), [("port", "70000")]) {
        Err(e) => println!("refused: {e}"),
        Ok(_) => bail!("an invalid write was accepted — this is a bug"),
    }
    assert_eq!(before, a.heads());

    step(8, "A tampered bundle is refused whole");
    let newer = a
        .put(Some(&checkout), [("tier", "silver")])
        .map(|_| a.export(&b.heads()))??;
    let mut bytes = newer.to_bytes();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x01;
    let digest = b.state_digest();
    match Bundle::from_bytes(&bytes).and_then(|bad| bob.import(bad)) {
        Err(e) => println!("refused: {e}"),
        Ok(_) => bail!("a tampered bundle was accepted — this is a bug"),
    }
    if b.state_digest() != digest {
        bail!("a refused bundle changed the replica — this is a bug");
    }
    println!("bob's replica is unchanged ✓");

    step(
        9,
        "Both replicas verify end to end, and attest the state they share",
    );
    bob.import(a.export(&b.heads())?)?; // the genuine version of step 8's change
    for (name, replica) in [("alice", &alice), ("bob", &bob)] {
        let report = replica.verify(None)?;
        let r = &report.registries[0];
        println!(
            "{name}: {} changes by {} authors verified, journal of {} entries intact",
            r.changes, r.authors, report.journal_rows
        );
    }
    a.attest()?;
    b.attest()?;
    alice.import(b.export(&a.heads())?)?;
    let status = a.status()?;
    println!(
        "attested by {} of {} members (digest {})",
        status.attested_by.len(),
        status.members,
        &status.digest[..16]
    );
    println!(
        "\nThe demo's replicas are in {} (gone when it ends unless you pass --dir).",
        dir.display()
    );
    Ok(())
}

fn short(text: &str) -> String {
    text.chars().take(8).collect()
}

fn short_heads(reg: &Registry) -> String {
    let heads: Vec<String> = reg.heads().iter().map(|h| short(&h.to_string())).collect();
    heads.join(",")
}
