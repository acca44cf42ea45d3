//! `chittysync heads|export|import`: exchanging signed changes as files.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use chittysync::ChangeHash;
use clap::Args;
use serde_json::json;

use super::{Globals, registry};
use crate::output::{self, outln};

/// Arguments of `chittysync heads`.
#[derive(Args)]
pub(crate) struct HeadsArgs {
    /// Registry name or id.
    registry: String,
}

/// Arguments of `chittysync export`.
#[derive(Args)]
pub(crate) struct ExportArgs {
    /// Registry name or id.
    registry: String,
    /// The bundle file to write.
    #[arg(long, short)]
    out: PathBuf,
    /// The other replica's heads (from its `heads`); omit to export every change.
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    since: Vec<String>,
}

/// Arguments of `chittysync import`.
#[derive(Args)]
pub(crate) struct ImportArgs {
    /// Bundle files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Prints the registry's heads.
pub(crate) fn heads(globals: &Globals, args: HeadsArgs) -> Result<()> {
    let replica = globals.open()?;
    let heads: Vec<String> = registry(&replica, &args.registry)?
        .heads()
        .iter()
        .map(ToString::to_string)
        .collect();
    if globals.json {
        output::json(&heads.into())?;
    } else {
        outln!("{}", heads.join(","))?;
    }
    Ok(())
}

/// Writes the signed changes another replica lacks to a bundle file.
pub(crate) fn export(globals: &Globals, args: ExportArgs) -> Result<()> {
    let replica = globals.open()?;
    let reg = registry(&replica, &args.registry)?;
    let since: Vec<ChangeHash> = args
        .since
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| anyhow!("--since: '{s}' is not a change hash"))
        })
        .collect::<Result<_>>()?;
    let bundle = reg.export(&since)?;
    let out = args.out;
    bundle.write_file(&out)?;
    if globals.json {
        output::json(
            &json!({ "registry": reg.id().to_string(), "changes": bundle.len(), "file": out }),
        )?;
    } else {
        outln!(
            "exported {} change(s) of '{}' to {}",
            bundle.len(),
            reg.name(),
            out.display()
        )?;
    }
    Ok(())
}

/// Verifies and applies bundle files; a bundle with any bad change is refused whole.
pub(crate) fn import(globals: &Globals, args: ImportArgs) -> Result<()> {
    let replica = globals.open()?;
    let mut reports = Vec::new();
    for file in &args.files {
        let report = replica
            .import_file(file)
            .with_context(|| format!("importing {}", file.display()))?;
        reports.push((file, report));
    }
    if globals.json {
        let items: Vec<_> = reports
            .iter()
            .map(|(f, r)| {
                json!({ "file": f, "registry": r.registry.to_string(), "name": r.name,
                        "applied": r.applied, "already_known": r.already_known, "created": r.created })
            })
            .collect();
        output::json(&items.into())?;
    } else {
        for (f, r) in reports {
            outln!(
                "{}: '{}' {} change(s) verified and applied, {} already known{}",
                f.display(),
                r.name,
                r.applied,
                r.already_known,
                if r.created { " (new registry)" } else { "" }
            )?;
        }
    }
    Ok(())
}
