//! `chittysync put|get|ls|rm`: records of a registry.

use anyhow::{Result, anyhow, bail};
use chittysync::{Query, Record, Registry, Value};
use clap::Args;
use serde_json::json;

use super::{Globals, registry, short};
use crate::output::{self, outln};

/// Arguments of `chittysync put`.
#[derive(Args)]
pub(crate) struct PutArgs {
    /// Registry name or id.
    registry: String,
    /// Record id (omit to create a record with a new id), then field=value pairs.
    #[arg(required = true, num_args = 1..)]
    args: Vec<String>,
}

/// Arguments of `chittysync get`.
#[derive(Args)]
pub(crate) struct GetArgs {
    /// Registry name or id.
    registry: String,
    /// Record id.
    id: String,
}

/// Arguments of `chittysync ls`.
#[derive(Args)]
pub(crate) struct LsArgs {
    /// Registry name or id.
    registry: String,
    /// Only records where field=value (repeatable; multi-select matches an option).
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    filters: Vec<String>,
    /// Include deleted records.
    #[arg(long)]
    deleted: bool,
    /// At most this many records.
    #[arg(long)]
    limit: Option<usize>,
}

/// Arguments of `chittysync rm`.
#[derive(Args)]
pub(crate) struct RmArgs {
    /// Registry name or id.
    registry: String,
    /// Record id.
    id: String,
}

/// Creates or updates a record; `field=` clears a field.
pub(crate) fn put(globals: &Globals, args: PutArgs) -> Result<()> {
    let replica = globals.open()?;
    let reg = registry(&replica, &args.registry)?;
    let (id, pairs) = match args.args.split_first() {
        Some((first, rest)) if !first.contains('=') => (Some(first.clone()), rest),
        _ => (None, &args.args[..]),
    };
    let mut set = Vec::new();
    let mut unset = Vec::new();
    for pair in pairs {
        let (field, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("'{pair}' is not field=value"))?;
        if value.is_empty() {
            unset.push(field.to_owned());
        } else {
            set.push((field.to_owned(), Value::Text(value.to_owned())));
        }
    }
    if set.is_empty() && unset.is_empty() {
        bail!("nothing to write: give field=value pairs");
    }
    let id = reg.write(|w| {
        // Only clearing fields of a named record: nothing to put first.
        let id = match id {
            Some(id) if set.is_empty() => id,
            id => w.put(id.as_deref(), set)?,
        };
        if !unset.is_empty() {
            w.unset(&id, unset)?;
        }
        Ok(id)
    })?;
    if globals.json {
        output::json(&json!({ "id": id }))?;
    } else {
        outln!("{id}")?;
    }
    Ok(())
}

/// Shows one record.
pub(crate) fn get(globals: &Globals, args: GetArgs) -> Result<()> {
    let replica = globals.open()?;
    let GetArgs { registry: name, id } = args;
    let reg = registry(&replica, &name)?;
    let record = reg.find(&id)?.ok_or_else(|| {
        anyhow!("registry '{name}' has no record {id}; `chittysync ls {name}` lists them")
    })?;
    if globals.json {
        output::json(&record.to_json())?;
    } else {
        output::table(&["field", "value"], &record_rows(&reg, &record))?;
    }
    Ok(())
}

/// One row per field of the schema, then the tombstone if any.
fn record_rows(reg: &Registry, record: &Record) -> Vec<Vec<String>> {
    let mut rows = vec![vec!["id".to_owned(), record.id.clone()]];
    for f in &reg.schema().fields {
        let mut v = record
            .get(&f.name)
            .map(ToString::to_string)
            .unwrap_or_default();
        if record.conflicted.contains(&f.name) {
            v.push_str("  ⚠ conflict (see `chittysync conflicts`)");
        }
        rows.push(vec![f.name.clone(), v]);
    }
    if let Some(t) = &record.deleted {
        rows.push(vec![
            "deleted".into(),
            format!("by {} at {}", short(&t.by), t.at),
        ]);
    }
    rows
}

/// Lists records, filtered.
pub(crate) fn ls(globals: &Globals, args: LsArgs) -> Result<()> {
    let replica = globals.open()?;
    let name = &args.registry;
    let reg = registry(&replica, name)?;
    let schema = reg.schema();
    let mut query = Query {
        include_deleted: args.deleted,
        limit: args.limit,
        ..Query::default()
    };
    for f in &args.filters {
        let (field, value) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("--where '{f}' is not field=value"))?;
        if schema.get(field).is_none() {
            bail!("--where: registry '{name}' has no field '{field}'");
        }
        query = query.filter(field, value);
    }
    let records = reg.list(&query);
    if globals.json {
        output::json(
            &records
                .iter()
                .map(|r| r.to_json())
                .collect::<Vec<_>>()
                .into(),
        )?;
    } else {
        output::records(&schema, &records)?;
        outln!("{} record(s)", records.len())?;
    }
    Ok(())
}

/// Deletes a record (it leaves a signed tombstone).
pub(crate) fn rm(globals: &Globals, args: RmArgs) -> Result<()> {
    let replica = globals.open()?;
    registry(&replica, &args.registry)?.delete(&args.id)?;
    if globals.json {
        output::json(&json!({ "deleted": args.id }))?;
    } else {
        outln!("deleted {}", args.id)?;
    }
    Ok(())
}
