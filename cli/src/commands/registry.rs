//! `chittysync registry create|ls|show|set-schema` and `chittysync compact`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use chittysync::{ConflictPolicy, FieldDef, Replica, Schema};
use clap::{Args, Subcommand};
use serde_json::json;

use super::{Globals, registry};
use crate::output::{self, outln};

/// The subcommands of `chittysync registry`.
#[derive(Subcommand)]
pub(crate) enum RegistryCmd {
    /// Create a registry from a schema file (TOML, or JSON if it ends in .json).
    Create {
        /// The registry's name.
        name: String,
        /// The schema file.
        #[arg(long)]
        schema: PathBuf,
        /// Override the schema file's conflict policy.
        #[arg(long)]
        policy: Option<ConflictPolicy>,
    },
    /// List registries.
    Ls,
    /// Show a registry: id, members, schema, heads, digest.
    Show {
        /// Registry name or id.
        registry: String,
    },
    /// Replace a registry's schema (add fields, change options…). Admins only.
    SetSchema {
        /// Registry name or id.
        registry: String,
        /// The schema file.
        file: PathBuf,
    },
}

/// Arguments of `chittysync compact`.
#[derive(Args)]
pub(crate) struct CompactArgs {
    /// Registry name or id.
    registry: String,
}

/// Runs `chittysync registry …`.
pub(crate) fn run(globals: &Globals, cmd: RegistryCmd) -> Result<()> {
    let replica = globals.open()?;
    let as_json = globals.json;
    match cmd {
        RegistryCmd::Create {
            name,
            schema,
            policy,
        } => {
            let mut schema = read_schema(&schema)?;
            if let Some(p) = policy {
                schema.conflict_policy = p;
            }
            let reg = replica.create_registry(&name, schema)?;
            if as_json {
                output::json(&json!({ "id": reg.id().to_string(), "name": reg.name() }))?;
            } else {
                outln!("created registry '{}' ({})", reg.name(), reg.id())?;
            }
        }
        RegistryCmd::Ls => list(&replica, as_json)?,
        RegistryCmd::Show { registry: name } => show(&replica, &name, as_json)?,
        RegistryCmd::SetSchema {
            registry: name,
            file,
        } => {
            let reg = registry(&replica, &name)?;
            reg.set_schema(read_schema(&file)?)?;
            if !as_json {
                outln!("schema of '{}' updated", reg.name())?;
            }
        }
    }
    Ok(())
}

/// Folds a registry's history into a snapshot so it opens fast.
pub(crate) fn compact(globals: &Globals, args: CompactArgs) -> Result<()> {
    let replica = globals.open()?;
    registry(&replica, &args.registry)?.compact()?;
    if !globals.json {
        outln!("compacted '{}'", args.registry)?;
    }
    Ok(())
}

fn read_schema(file: &Path) -> Result<Schema> {
    Ok(Schema::from_file(file)?)
}

fn list(replica: &Replica, as_json: bool) -> Result<()> {
    let mut rows = Vec::new();
    let mut items = Vec::new();
    let mut damaged = Vec::new();
    for info in replica.registries()? {
        // A registry that does not load is listed as damaged; the others
        // are listed as usual, and the command fails at the end.
        let reg = match replica.registry_by_id(info.id) {
            Ok(reg) => reg,
            Err(e) => {
                items.push(
                    json!({ "id": info.id.to_string(), "name": info.name, "error": e.to_string() }),
                );
                rows.push(vec![
                    info.name,
                    info.id.to_string(),
                    "damaged".into(),
                    "-".into(),
                ]);
                damaged.push(e);
                continue;
            }
        };
        let (records, changes) = (reg.len(), reg.change_count());
        items.push(json!({ "id": info.id.to_string(), "name": info.name, "records": records, "changes": changes }));
        rows.push(vec![
            info.name,
            info.id.to_string(),
            records.to_string(),
            changes.to_string(),
        ]);
    }
    if as_json {
        output::json(&items.into())?;
    } else {
        output::table(&["name", "id", "records", "changes"], &rows)?;
    }
    match damaged.into_iter().next() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn show(replica: &Replica, name: &str, as_json: bool) -> Result<()> {
    let reg = registry(replica, name)?;
    let schema = reg.schema();
    let members = reg.members();
    let heads: Vec<String> = reg.heads().iter().map(ToString::to_string).collect();
    if as_json {
        output::json(&json!({
            "id": reg.id().to_string(), "name": reg.name(),
            "schema": serde_json::to_value(&schema)?,
            "members": members.iter().map(|m| json!({"key": m.key.to_string(), "role": m.role.name(), "alias": m.alias})).collect::<Vec<_>>(),
            "records": reg.len(), "changes": reg.change_count(),
            "conflicts": reg.conflicts().len(),
            "heads": heads, "state_digest": reg.state_digest(),
        }))?;
        return Ok(());
    }
    outln!("registry   {} ({})", reg.name(), reg.id())?;
    outln!("records    {}", reg.len())?;
    outln!("changes    {}", reg.change_count())?;
    outln!("conflicts  {}", reg.conflicts().len())?;
    outln!("policy     {}", schema.conflict_policy)?;
    outln!("digest     {}", reg.state_digest())?;
    outln!("heads      {}", heads.join(","))?;
    outln!()?;
    let rows: Vec<Vec<String>> = schema
        .fields
        .iter()
        .map(|f| vec![f.name.clone(), f.field_type.to_string(), rules(f)])
        .collect();
    output::table(&["field", "type", "rules"], &rows)?;
    outln!()?;
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| vec![m.key.to_string(), m.role.to_string()])
        .collect();
    output::table(&["member", "role"], &rows)?;
    Ok(())
}

/// A field's rules in one cell: `required, options: a|b, min 1`.
fn rules(f: &FieldDef) -> String {
    let mut rules = Vec::new();
    if f.required {
        rules.push("required".to_owned());
    }
    if f.unique {
        rules.push("unique".to_owned());
    }
    if !f.options.is_empty() {
        rules.push(format!("options: {}", f.options.join("|")));
    }
    if let Some(p) = &f.pattern {
        rules.push(format!("pattern /{p}/"));
    }
    if let Some(m) = f.min {
        rules.push(format!("min {m}"));
    }
    if let Some(m) = f.max {
        rules.push(format!("max {m}"));
    }
    if let Some(p) = f.conflict_policy {
        rules.push(format!("policy {p}"));
    }
    rules.join(", ")
}
