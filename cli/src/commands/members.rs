//! `chittysync members ls|add|alias|rm`: who may do what in a registry.

use anyhow::{Result, anyhow};
use chittysync::{PublicKey, Replica, Role};
use clap::Subcommand;
use serde_json::json;

use super::{Globals, registry};
use crate::output::{self, outln};

/// The subcommands of `chittysync members`.
#[derive(Subcommand)]
pub(crate) enum MembersCmd {
    /// List members and roles.
    Ls {
        /// Registry name or id.
        registry: String,
    },
    /// Add a member or change their role. Admins only.
    Add {
        /// Registry name or id.
        registry: String,
        /// The member's public key (from their `chittysync whoami`).
        key: String,
        /// admin, writer or reader.
        #[arg(long, default_value = "writer")]
        role: String,
    },
    /// Give a member's key a human name, shown in the audit log (omit NAME to clear). Admins only.
    Alias {
        /// Registry name or id.
        registry: String,
        /// The member's public key.
        key: String,
        /// The name.
        name: Option<String>,
    },
    /// Remove a member. Admins only.
    Rm {
        /// Registry name or id.
        registry: String,
        /// The member's public key.
        key: String,
    },
}

/// Runs `chittysync members …`.
pub(crate) fn run(globals: &Globals, cmd: MembersCmd) -> Result<()> {
    let replica = globals.open()?;
    let as_json = globals.json;
    match cmd {
        MembersCmd::Ls { registry: name } => list(&replica, &name, as_json)?,
        MembersCmd::Add {
            registry: name,
            key,
            role,
        } => {
            let key: PublicKey = key.parse()?;
            let role: Role = role.parse().map_err(|e: String| anyhow!(e))?;
            registry(&replica, &name)?.set_member(key, role)?;
            if !as_json {
                outln!("{key} is now {role} of '{name}'")?;
            }
        }
        MembersCmd::Alias {
            registry: name,
            key,
            name: alias,
        } => {
            let key: PublicKey = key.parse()?;
            registry(&replica, &name)?.set_alias(key, alias.as_deref())?;
            if !as_json {
                match alias {
                    Some(a) => outln!("{key} is now known as '{a}' in '{name}'")?,
                    None => outln!("alias of {key} cleared in '{name}'")?,
                }
            }
        }
        MembersCmd::Rm {
            registry: name,
            key,
        } => {
            let key: PublicKey = key.parse()?;
            registry(&replica, &name)?.remove_member(key)?;
            if !as_json {
                outln!("{key} removed from '{name}'")?;
            }
        }
    }
    Ok(())
}

fn list(replica: &Replica, name: &str, as_json: bool) -> Result<()> {
    let members = registry(replica, name)?.members();
    if as_json {
        output::json(
            &members
                .iter()
                .map(|m| json!({"key": m.key.to_string(), "role": m.role.name()}))
                .collect::<Vec<_>>()
                .into(),
        )?;
    } else {
        let me = replica.public_key();
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                let you = if m.key == me { " (this replica)" } else { "" };
                vec![
                    format!("{}{you}", m.key),
                    m.role.to_string(),
                    m.alias.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::table(&["member", "role", "alias"], &rows)?;
    }
    Ok(())
}
