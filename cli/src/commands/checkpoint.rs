//! `chittysync checkpoint|prove|verify-proof`: the signed log of accepted
//! changes (C2SP signed notes) and proofs against it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chittysync::{ChangeHash, Checkpoint, ConsistencyProof, InclusionProof, PublicKey};
use clap::Args;
use serde_json::json;

use super::Globals;
use crate::output::{self, out, outln};

/// Arguments of `chittysync checkpoint`.
#[derive(Args)]
pub(crate) struct CheckpointArgs {
    /// Also write the note to this file.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// Arguments of `chittysync prove`.
#[derive(Args)]
pub(crate) struct ProveArgs {
    /// The change to prove (its hash).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    change: Option<String>,
    /// Under the checkpoint of this tree size [default: the latest].
    #[arg(long, requires = "change")]
    size: Option<u64>,
    /// The older checkpoint note file.
    #[arg(long, requires = "to")]
    from: Option<PathBuf>,
    /// The newer checkpoint note file.
    #[arg(long, requires = "from")]
    to: Option<PathBuf>,
    /// Write the proof here instead of printing it.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// Arguments of `chittysync verify-proof`.
#[derive(Args)]
pub(crate) struct VerifyProofArgs {
    /// The proof file (from `prove`).
    proof: PathBuf,
    /// The checkpoint note file the proof is under (the newer one for consistency).
    #[arg(long)]
    checkpoint: PathBuf,
    /// For a consistency proof: the older checkpoint note file.
    #[arg(long)]
    old_checkpoint: Option<PathBuf>,
    /// The replica's public key.
    #[arg(long)]
    key: String,
}

/// Signs a checkpoint of this replica's log of accepted changes.
pub(crate) fn checkpoint(globals: &Globals, args: CheckpointArgs) -> Result<()> {
    let replica = globals.open()?;
    let note = replica.checkpoint()?;
    if let Some(path) = &args.out {
        std::fs::write(path, &note).with_context(|| format!("writing {}", path.display()))?;
    }
    if globals.json {
        output::json(&json!({ "note": note }))?;
    } else {
        out!("{note}")?;
    }
    Ok(())
}

/// Proves a change is in the log, or that a checkpoint extends another.
pub(crate) fn prove(globals: &Globals, args: ProveArgs) -> Result<()> {
    let replica = globals.open()?;
    let json = match (args.change, args.from, args.to) {
        (Some(change), _, _) => {
            let hash: ChangeHash = change
                .parse()
                .map_err(|_| anyhow!("--change: '{change}' is not a change hash"))?;
            replica.prove_inclusion(hash, args.size)?.to_json()
        }
        (None, Some(from), Some(to)) => {
            let key = replica.public_key();
            let read = |p: &PathBuf| -> Result<Checkpoint> {
                let note = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                Ok(Checkpoint::verify(&note, &key)?)
            };
            let (old, new) = (read(&from)?, read(&to)?);
            replica.prove_consistency(old.size(), new.size())?.to_json()
        }
        // clap lets neither be given.
        _ => bail!("give --change HASH, or --from OLD_CHECKPOINT --to NEW_CHECKPOINT"),
    };
    match args.out {
        Some(path) => {
            std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?
        }
        None => outln!("{json}")?,
    }
    Ok(())
}

/// Checks a proof file against checkpoint notes with only a public key (no
/// replica needed).
pub(crate) fn verify_proof(globals: &Globals, args: VerifyProofArgs) -> Result<()> {
    let key: PublicKey = args.key.parse()?;
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let text = read(&args.proof)?;
    let note = read(&args.checkpoint)?;
    let kind: serde_json::Value =
        serde_json::from_str(&text).context("the proof file is not JSON")?;
    let message = if kind["format"]
        .as_str()
        .is_some_and(|f| f.contains("consistency"))
    {
        let old = args
            .old_checkpoint
            .ok_or_else(|| anyhow!("a consistency proof needs --old-checkpoint"))?;
        let p = ConsistencyProof::from_json(&text)?;
        let (a, b) = p.verify_signed(&read(&old)?, &note, &key)?;
        format!(
            "consistent: the log of size {} extends the log of size {}",
            b.size(),
            a.size()
        )
    } else {
        let p = InclusionProof::from_json(&text)?;
        let c = p.verify_signed(&note, &key)?;
        format!(
            "included: change {} of registry {} is entry {} of the log of size {}",
            p.change(),
            p.registry(),
            p.index(),
            c.size()
        )
    };
    if globals.json {
        output::json(&json!({ "ok": true, "result": message }))?;
    } else {
        outln!("{message}")?;
    }
    Ok(())
}
