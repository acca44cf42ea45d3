//! `chittysync init` and `chittysync whoami`: the replica and its key.

use anyhow::Result;
use chittysync::Replica;
use serde_json::json;

use super::Globals;
use crate::output::{self, outln};

/// Creates the replica and its identity key, or shows them if they exist.
pub(crate) fn run(globals: &Globals) -> Result<()> {
    let replica = globals.open()?;
    if globals.json {
        output::json(&json!({
            "replica": replica.path(),
            "key_file": Replica::key_path(replica.path()),
            "public_key": replica.public_key().to_string(),
        }))?;
    } else {
        outln!("replica     {}", replica.path().display())?;
        outln!(
            "key file    {} (mode 0600)",
            Replica::key_path(replica.path()).display()
        )?;
        outln!("public key  {}", replica.public_key())?;
    }
    Ok(())
}

/// Prints this replica's public key.
pub(crate) fn whoami(globals: &Globals) -> Result<()> {
    outln!("{}", globals.open()?.public_key())?;
    Ok(())
}
