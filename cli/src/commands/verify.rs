//! `chittysync verify` and `chittysync journal`: re-checking everything, and
//! what this replica did.

use anyhow::Result;
use chittysync::VerifyReport;
use clap::Args;
use serde_json::json;

use super::{Globals, registry};
use crate::output::{self, outln};

/// Arguments of `chittysync verify`.
#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Only this registry (name or id).
    registry: Option<String>,
}

/// Arguments of `chittysync journal`.
#[derive(Args)]
pub(crate) struct JournalArgs {
    /// Only events of this registry (name or id).
    registry: Option<String>,
    /// Only the last N events.
    #[arg(long)]
    last: Option<usize>,
}

/// Re-checks everything from genesis: hashes, signatures, authors, roles, schema, journal.
pub(crate) fn verify(globals: &Globals, args: VerifyArgs) -> Result<()> {
    let replica = globals.open()?;
    let report = replica.verify(args.registry.as_deref())?;
    if globals.json {
        let items: Vec<_> = report
            .registries
            .iter()
            .map(|r| {
                json!({
                    "id": r.id.to_string(), "name": r.name, "changes": r.changes,
                    "authors": r.authors, "records": r.records, "revoked": r.revoked,
                    "invalid_records": r.invalid_records.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let ok = report.require_valid().is_ok();
        output::json(
            &json!({ "ok": ok, "registries": items, "journal_rows": report.journal_rows }),
        )?;
    } else {
        print_report(&report)?;
    }
    report.require_valid()?;
    Ok(())
}

fn print_report(report: &VerifyReport) -> Result<()> {
    let rows: Vec<Vec<String>> = report
        .registries
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.changes.to_string(),
                r.authors.to_string(),
                r.records.to_string(),
                r.revoked.to_string(),
                r.invalid_records.len().to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "registry",
            "changes ✓",
            "authors",
            "records",
            "revoked",
            "invalid records",
        ],
        &rows,
    )?;
    for r in &report.registries {
        for e in &r.invalid_records {
            outln!("invalid: {e}")?;
        }
    }
    outln!(
        "verified: every change hash, signature, author and role; journal chain of {} entries intact",
        report.journal_rows
    )?;
    Ok(())
}

/// Shows the local journal: what this replica created, wrote, accepted and refused.
pub(crate) fn journal(globals: &Globals, args: JournalArgs) -> Result<()> {
    let replica = globals.open()?;
    let only = args
        .registry
        .map(|n| registry(&replica, &n).map(|r| r.id()))
        .transpose()?;
    let mut entries: Vec<_> = replica
        .journal()?
        .into_iter()
        .filter(|e| only.is_none() || e.registry == only)
        .collect();
    if let Some(n) = args.last {
        entries.drain(..entries.len().saturating_sub(n));
    }
    if globals.json {
        for e in &entries {
            outln!(
                "{}",
                json!({ "seq": e.seq, "at": e.at, "registry": e.registry.map(|r| r.to_string()),
                        "kind": e.kind, "detail": e.detail, "hash": e.hash })
            )?;
        }
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.at.to_string(),
                    e.registry
                        .map(|r| r.to_string()[..8].to_owned())
                        .unwrap_or_default(),
                    e.kind.clone(),
                    output::clip(&e.detail.to_string(), 90),
                ]
            })
            .collect();
        output::table(&["#", "at", "registry", "event", "detail"], &rows)?;
    }
    Ok(())
}
