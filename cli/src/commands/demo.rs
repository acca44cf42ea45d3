//! `chittysync demo`: two replicas on embedded SQLite, offline edits on both,
//! an exchange of signed bundles, convergence, a conflict under a policy, a
//! refused invalid write and a refused tampered bundle.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chittysync::{Bundle, ConflictPolicy, FieldDef, FieldKind, Registry, Replica, Role, Schema};
use clap::Args;

use crate::output::{self, StdoutError, outln};

/// Arguments of `chittysync demo`.
#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo's replicas in this directory instead of a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The two replicas of the demo and their copies of 'services'.
struct Cast {
    alice: Replica,
    bob: Replica,
    a: Registry,
    b: Registry,
    /// The record both edit.
    checkout: String,
}

fn step(n: u32, text: &str) -> Result<(), StdoutError> {
    outln!("\n── {n}. {text}")
}

fn show(name: &str, reg: &Registry) -> Result<(), StdoutError> {
    outln!("\n{name}'s copy of '{}':", reg.name())?;
    output::records(&reg.schema(), &reg.list(&chittysync::Query::all()))
}

/// Runs the demo, step by step, in `--dir` or a temporary directory.
pub(crate) fn run(args: DemoArgs) -> Result<()> {
    // The demo's exit status reports its checks: they run to the end even
    // when nobody reads what it prints (`chittysync demo | head`).
    output::carry_on_when_closed();
    let tmp;
    let dir = match args.dir.as_deref() {
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
    let cast = meet(&dir)?;
    edit_offline(&cast)?;
    exchange(&cast, &dir)?;
    conflict(&cast)?;
    refusals(&cast)?;
    verify_and_attest(&cast)?;
    outln!(
        "\nThe demo's replicas are in {} (gone when it ends unless you pass --dir).",
        dir.display()
    )?;
    Ok(())
}

/// Steps 1 and 2: two replicas, a registry, a first exchange.
fn meet(dir: &Path) -> Result<Cast> {
    step(
        1,
        "Two replicas, each a SQLite file with its own ed25519 key",
    )?;
    let alice = Replica::open(dir.join("alice.db"))?;
    let bob = Replica::open(dir.join("bob.db"))?;
    outln!("alice  {}", alice.public_key())?;
    outln!("bob    {}", bob.public_key())?;

    step(
        2,
        "Alice creates a 'services' registry (last-write-wins) and makes Bob a writer",
    )?;
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
    outln!(
        "bob imported {} signed change(s), every signature verified",
        r.applied
    )?;
    let b = bob.registry("services")?;
    Ok(Cast {
        alice,
        bob,
        a,
        b,
        checkout,
    })
}

/// Step 3: offline edits on both sides, some to the same field.
fn edit_offline(cast: &Cast) -> Result<()> {
    let Cast { a, b, checkout, .. } = cast;
    step(
        3,
        "Offline, both edit: new records on each side, and the same field concurrently",
    )?;
    a.put(
        None,
        [
            ("name", "billing"),
            ("owner", "ledger@example.com"),
            ("tier", "silver"),
        ],
    )?;
    a.put(Some(checkout), [("port", "9443")])?;
    a.put(Some(checkout), [("tags", "public,pci")])?;
    b.put(
        None,
        [
            ("name", "search"),
            ("owner", "find@example.com"),
            ("tier", "bronze"),
            ("port", "7700"),
        ],
    )?;
    b.put(Some(checkout), [("port", "10443")])?; // later write: wins under last-write-wins
    b.put(Some(checkout), [("tags", "beta")])?; // drops "public", adds "beta"
    outln!("alice heads {}", short_heads(a))?;
    outln!("bob   heads {}", short_heads(b))?;
    Ok(())
}

/// Steps 4 and 5: bundles of only what the other lacks; convergence.
fn exchange(cast: &Cast, dir: &Path) -> Result<()> {
    let Cast {
        alice, bob, a, b, ..
    } = cast;
    step(4, "They exchange bundles of only what the other lacks")?;
    let to_bob = a.export(&b.heads())?;
    let to_alice = b.export(&a.heads())?;
    outln!(
        "alice → bob: {} change(s); bob → alice: {} change(s)",
        to_bob.len(),
        to_alice.len()
    )?;
    let (p1, p2) = (dir.join("to-bob.bundle"), dir.join("to-alice.bundle"));
    to_bob.write_file(&p1)?;
    to_alice.write_file(&p2)?;
    bob.import_file(&p1)?;
    alice.import_file(&p2)?;

    step(
        5,
        "Both replicas converged: identical heads and state digest",
    )?;
    outln!(
        "alice heads {}  digest {}",
        short_heads(a),
        &a.state_digest()[..16]
    )?;
    outln!(
        "bob   heads {}  digest {}",
        short_heads(b),
        &b.state_digest()[..16]
    )?;
    if a.heads() != b.heads() || a.state_digest() != b.state_digest() {
        bail!("the replicas did not converge — this is a bug, please report it");
    }
    outln!("converged ✓")?;
    show("alice", a)?;
    Ok(())
}

/// Step 6: the concurrent edit, settled by the policy.
fn conflict(cast: &Cast) -> Result<()> {
    let Cast {
        alice, a, checkout, ..
    } = cast;
    step(
        6,
        "The concurrent edit of checkout.port is a conflict, settled by last-write-wins",
    )?;
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
            outln!(
                "  {}.{} = {:<8} by {who:<5} at {}  {mark}",
                c.field,
                short(&c.record),
                k.value.to_string(),
                k.time
            )?;
        }
    }
    outln!(
        "tags merged option by option: {}",
        a.get(checkout)
            .and_then(|r| r.get("tags").cloned())
            .map(|v| v.to_string())
            .unwrap_or_default()
    )?;
    Ok(())
}

/// Steps 7 and 8: an invalid write and a tampered bundle, both refused.
fn refusals(cast: &Cast) -> Result<()> {
    let Cast {
        bob,
        a,
        b,
        checkout,
        ..
    } = cast;
    step(
        7,
        "An invalid write is refused, naming the rule; nothing is written",
    )?;
    let before = a.heads();
    match a.put(Some(checkout), [("port", "70000")]) {
        Err(e) => outln!("refused: {e}")?,
        Ok(_) => bail!("an invalid write was accepted — this is a bug"),
    }
    assert_eq!(before, a.heads());

    step(8, "A tampered bundle is refused whole")?;
    let newer = a
        .put(Some(checkout), [("tier", "silver")])
        .map(|_| a.export(&b.heads()))??;
    let mut bytes = newer.to_bytes();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x01;
    let digest = b.state_digest();
    match Bundle::from_bytes(&bytes).and_then(|bad| bob.import(bad)) {
        Err(e) => outln!("refused: {e}")?,
        Ok(_) => bail!("a tampered bundle was accepted — this is a bug"),
    }
    if b.state_digest() != digest {
        bail!("a refused bundle changed the replica — this is a bug");
    }
    outln!("bob's replica is unchanged ✓")?;
    Ok(())
}

/// Step 9: both verify end to end and attest what they share.
fn verify_and_attest(cast: &Cast) -> Result<()> {
    let Cast {
        alice, bob, a, b, ..
    } = cast;
    step(
        9,
        "Both replicas verify end to end, and attest the state they share",
    )?;
    bob.import(a.export(&b.heads())?)?; // the genuine version of step 8's change
    for (name, replica) in [("alice", alice), ("bob", bob)] {
        let report = replica.verify(None)?;
        let r = &report.registries[0];
        outln!(
            "{name}: {} changes by {} authors verified, journal of {} entries intact",
            r.changes,
            r.authors,
            report.journal_rows
        )?;
    }
    a.attest()?;
    b.attest()?;
    alice.import(b.export(&a.heads())?)?;
    let status = a.status()?;
    outln!(
        "attested by {} of {} members (digest {})",
        status.attested_by.len(),
        status.members,
        &status.digest[..16]
    )?;
    Ok(())
}

fn short(text: &str) -> String {
    text.chars().take(8).collect()
}

fn short_heads(reg: &Registry) -> String {
    let heads: Vec<String> = reg.heads().iter().map(|h| short(&h.to_string())).collect();
    heads.join(",")
}
