//! `chittysync conflicts` and `chittysync resolve`: concurrent values.

use anyhow::{Result, anyhow, bail};
use chittysync::{Conflict, Value};
use clap::Args;
use serde_json::json;

use super::{Globals, registry};
use crate::output::{self, outln};

/// Arguments of `chittysync conflicts`.
#[derive(Args)]
pub(crate) struct ConflictsArgs {
    /// Registry name or id.
    registry: String,
}

/// Arguments of `chittysync resolve`.
#[derive(Args)]
pub(crate) struct ResolveArgs {
    /// Registry name or id.
    registry: String,
    /// Record id.
    id: String,
    /// Field name.
    field: String,
    /// The value to keep (or use --pick).
    value: Option<String>,
    /// Keep candidate number N as listed by `conflicts` (1-based).
    #[arg(long, conflicts_with = "value")]
    pick: Option<usize>,
}

/// Lists fields with concurrent values and what the conflict policy picks.
pub(crate) fn list(globals: &Globals, args: ConflictsArgs) -> Result<()> {
    let replica = globals.open()?;
    let reg = registry(&replica, &args.registry)?;
    let conflicts = reg.conflicts();
    let invalid = reg.invalid_records();
    if globals.json {
        let items: Vec<_> = conflicts
            .iter()
            .map(|c| {
                json!({
                    "record": c.record, "field": c.field, "policy": c.policy.name(),
                    "chosen": c.chosen,
                    "candidates": c.candidates.iter().map(|k| json!({
                        "value": k.value.to_json(),
                        "author": k.author.map(|a| a.to_string()),
                        "time": k.time, "change": k.change.to_string(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::json(&items.into())?;
    } else {
        output::table(
            &["record", "field", "#", "value", "author", "time", "status"],
            &rows(&conflicts),
        )?;
        outln!("{} conflicting field(s)", conflicts.len())?;
        if !invalid.is_empty() {
            let rows: Vec<Vec<String>> = invalid
                .iter()
                .map(|e| {
                    vec![
                        e.record.clone(),
                        e.field.clone(),
                        output::clip(&e.value, 30),
                        e.rule.to_string(),
                    ]
                })
                .collect();
            outln!()?;
            output::table(&["record", "field", "value", "breaks"], &rows)?;
            outln!(
                "{} value(s) break the schema (validation conflicts): `chittysync put` a valid value, or change the schema",
                invalid.len()
            )?;
        }
    }
    Ok(())
}

/// One row per candidate value.
fn rows(conflicts: &[Conflict]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for c in conflicts {
        for (i, k) in c.candidates.iter().enumerate() {
            let status = match c.chosen {
                Some(w) if w == i => format!("chosen by {}", c.policy),
                Some(_) => String::new(),
                None => "open (manual)".into(),
            };
            rows.push(vec![
                c.record.clone(),
                c.field.clone(),
                (i + 1).to_string(),
                output::clip(&k.value.to_string(), 30),
                k.author.map(|a| a.short()).unwrap_or_default(),
                k.time.to_string(),
                status,
            ]);
        }
    }
    rows
}

/// Settles a conflict by writing the chosen value.
pub(crate) fn resolve(globals: &Globals, args: ResolveArgs) -> Result<()> {
    let replica = globals.open()?;
    let ResolveArgs {
        registry: name,
        id,
        field,
        value,
        pick,
    } = args;
    let reg = registry(&replica, &name)?;
    let value = match (value, pick) {
        (Some(v), _) => Value::Text(v),
        (None, Some(n)) => {
            let conflict = reg
                .conflicts()
                .into_iter()
                .find(|c| c.record == id && c.field == field)
                .ok_or_else(|| anyhow!("record {id} field '{field}' has no conflict"))?;
            conflict
                .candidates
                .get(n.wrapping_sub(1))
                .map(|c| c.value.clone())
                .ok_or_else(|| {
                    anyhow!(
                        "--pick {n}: there are {} candidates",
                        conflict.candidates.len()
                    )
                })?
        }
        (None, None) => bail!("give the value to keep, or --pick N"),
    };
    reg.resolve(&id, &field, value)?;
    if !globals.json {
        outln!("resolved {id}.{field}")?;
    }
    Ok(())
}
