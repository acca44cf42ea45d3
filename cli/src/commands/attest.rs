//! `chittysync attest` and `chittysync status`: signed statements of a
//! registry's state, and who made them.

use anyhow::Result;
use chittysync::{AttestationStatus, Registry};
use clap::Args;
use serde_json::json;

use super::{Globals, hex, registry};
use crate::output::{self, outln};

/// Arguments of `chittysync attest`.
#[derive(Args)]
pub(crate) struct AttestArgs {
    /// Registry name or id.
    registry: String,
}

/// Arguments of `chittysync status`.
#[derive(Args)]
pub(crate) struct StatusArgs {
    /// Registry name or id.
    registry: String,
}

/// Signs this replica's attestation of a registry's current state.
pub(crate) fn attest(globals: &Globals, args: AttestArgs) -> Result<()> {
    let replica = globals.open()?;
    let name = &args.registry;
    let a = registry(&replica, name)?.attest()?;
    if globals.json {
        output::json(
            &json!({ "digest": hex(&a.digest), "change_count": a.change_count,
            "heads": a.heads.iter().map(ToString::to_string).collect::<Vec<_>>() }),
        )?;
    } else {
        outln!(
            "attested '{name}': digest {} over {} changes",
            hex(&a.digest),
            a.change_count
        )?;
    }
    Ok(())
}

/// Shows a registry's state and which members attest it (quorum k of n).
pub(crate) fn status(globals: &Globals, args: StatusArgs) -> Result<()> {
    let replica = globals.open()?;
    let reg = registry(&replica, &args.registry)?;
    let status = reg.status()?;
    // The mirrors of this registry, with the rows they have not applied yet.
    let mut mirrors = Vec::new();
    for b in replica.bindings()? {
        if b.registry == reg.name() || b.registry == reg.id().to_string() {
            let pending = replica.pending_rows(&b.name)?;
            mirrors.push((b, pending));
        }
    }
    let invalid = reg.invalid_records();
    if globals.json {
        output::json(&json!({
            "invalid_records": invalid.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "digest": status.digest, "change_count": status.change_count,
            "heads": status.heads.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "attested_by": status.attested_by.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "members": status.members, "quorum": status.quorum, "attested": status.attested(),
            "mirrors": mirrors.iter().map(|(b, pending)| json!({
                "binding": b.name, "kind": b.kind, "target": b.target,
                "pending_rows": pending.len(),
            })).collect::<Vec<_>>(),
        }))?;
        return Ok(());
    }
    outln!("registry     {} ({})", reg.name(), reg.id())?;
    outln!("changes      {}", status.change_count)?;
    outln!("digest       {}", status.digest)?;
    outln!(
        "heads        {}",
        status
            .heads
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    )?;
    let who = attesters(&reg, &status);
    outln!(
        "attested by  {} of {} members: {}",
        who.len(),
        status.members,
        who.join(", ")
    )?;
    match status.quorum {
        Some(k) if status.attested() => outln!("quorum       {k} of {}: met ✓", status.members)?,
        Some(k) => outln!("quorum       {k} of {}: not met", status.members)?,
        None => outln!("quorum       none configured (set `quorum = k` in the schema)")?,
    }
    for (b, pending) in &mirrors {
        outln!(
            "mirror       {} ({} {}): {}",
            b.name,
            b.kind,
            b.target,
            match pending.len() {
                0 => "in sync as of the last run".to_owned(),
                n => format!(
                    "{n} rows pending (`chittysync adapter show {}` lists them)",
                    b.name
                ),
            }
        )?;
    }
    if !invalid.is_empty() {
        outln!(
            "invalid      {} value(s) break the schema; `chittysync conflicts {}` lists them",
            invalid.len(),
            reg.name()
        )?;
    }
    Ok(())
}

/// The attesting members by alias, or by short key when they have none.
fn attesters(reg: &Registry, status: &AttestationStatus) -> Vec<String> {
    let aliases: std::collections::HashMap<_, _> = reg
        .members()
        .into_iter()
        .map(|m| (m.key, m.alias))
        .collect();
    status
        .attested_by
        .iter()
        .map(|k| {
            aliases
                .get(k)
                .cloned()
                .flatten()
                .unwrap_or_else(|| k.short())
        })
        .collect()
}
