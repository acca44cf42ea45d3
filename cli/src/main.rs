//! `chittysync`: create, edit, inspect and exchange signed registries from a shell.
//!
//! This file parses the command line and dispatches to [`commands`], one
//! module per command; it turns errors into messages and exit codes.

mod commands;
mod hint;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use chittysync::{ImportError, LogError, PeerError, VerifyError, WriteError};
use clap::{Parser, Subcommand};

use commands::{
    Globals, adapter, attest, audit, bundle, checkpoint, conflicts, demo, init, members, peer,
    records, registry, sync, token, verify,
};

/// Keep registries identical everywhere they live, with proof of who changed what.
#[derive(Parser)]
#[command(name = "chittysync", version, about)]
struct Cli {
    /// The replica's SQLite file [default: the per-user data directory's chittysync/replica.db]
    #[arg(long, global = true, env = "CHITTYSYNC_REPLICA")]
    replica: Option<PathBuf>,
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the replica and its identity key (or show them if they exist).
    Init,
    /// Print this replica's public key.
    Whoami,
    /// Create, list and inspect registries.
    #[command(subcommand)]
    Registry(registry::RegistryCmd),
    /// Sync with a peer over the network (`sync HOST:PORT [REG…]`), or run an
    /// adapter binding both ways (`sync BINDING`; --dry-run shows the plan).
    Sync(sync::SyncArgs),
    /// Serve this replica's registries to peers (a hub): each peer sees only
    /// registries it is a member of.
    Serve(peer::ServeArgs),
    /// List and change a registry's members.
    #[command(subcommand)]
    Members(members::MembersCmd),
    /// Create or update a record: `put REG [ID] field=value…` (`field=` clears a field).
    Put(records::PutArgs),
    /// Show one record.
    Get(records::GetArgs),
    /// List records.
    Ls(records::LsArgs),
    /// Delete a record (it leaves a signed tombstone).
    Rm(records::RmArgs),
    /// List fields with concurrent values and what the conflict policy picks.
    Conflicts(conflicts::ConflictsArgs),
    /// Settle a conflict by writing the chosen value.
    Resolve(conflicts::ResolveArgs),
    /// Print the registry's heads (give them to `export --since` on another replica).
    Heads(bundle::HeadsArgs),
    /// Write the signed changes another replica lacks to a bundle file.
    Export(bundle::ExportArgs),
    /// Verify and apply bundle files; a bundle with any bad change is refused whole.
    Import(bundle::ImportArgs),
    /// Re-check everything from genesis: hashes, signatures, authors, roles, schema, journal.
    Verify(verify::VerifyArgs),
    /// Show the local journal: what this replica created, wrote, accepted and refused.
    Journal(verify::JournalArgs),
    /// Sign this replica's attestation of a registry's current state.
    Attest(attest::AttestArgs),
    /// Show a registry's state and which members attest it (quorum k of n).
    Status(attest::StatusArgs),
    /// Sign a checkpoint of this replica's log of accepted changes (a C2SP signed note).
    Checkpoint(checkpoint::CheckpointArgs),
    /// Prove a change is in the log (--change), or that a checkpoint extends another (--from/--to).
    Prove(checkpoint::ProveArgs),
    /// Check a proof with only the replica's public key (no replica needed).
    VerifyProof(checkpoint::VerifyProofArgs),
    /// Show the signed change history: who changed which record, field or member, when, from what to what.
    Audit(audit::AuditArgs),
    /// Bind registries to external tables (Postgres), manage the bindings, sync them both ways.
    #[command(subcommand)]
    Adapter(adapter::AdapterCmd),
    /// Send a binding's registry changes to its table (--dry-run shows the plan only).
    Push(adapter::RunArgs),
    /// Bring a binding's table changes into its registry, signed by the binding's key.
    Pull(adapter::RunArgs),
    /// Fold a registry's history into a snapshot so it opens fast.
    Compact(registry::CompactArgs),
    /// Run a demonstration: two replicas, offline edits, exchange, convergence.
    Demo(demo::DemoArgs),
    /// Add, list and remove API tokens for the HTTP service (`serve --http`).
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Ask a ChittySync service whether it is healthy: exit 0 if so, 1 if not.
    Health(token::HealthArgs),
}

/// Exit codes: 0 success (also when the reader of stdout went away, as with
/// `| head`), 1 any failure, 2 bad usage (clap), 3 a write refused by the
/// schema or roles, 4 a bundle or peer refused as untrusted or malformed
/// (by either side of a sync), 5 `verify` or `verify-proof` found a problem.
fn main() -> ExitCode {
    let Cli {
        replica,
        json,
        command,
    } = Cli::parse();
    let globals = Globals { replica, json };
    match run(&globals, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            if let Some(hint) = hint::hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(globals: &Globals, command: Command) -> Result<()> {
    use chittysync::Direction::{Pull, Push};
    match command {
        Command::Init => init::run(globals),
        Command::Whoami => init::whoami(globals),
        Command::Registry(cmd) => registry::run(globals, cmd),
        Command::Sync(args) => sync::run(globals, args),
        Command::Serve(args) => peer::serve(globals, args),
        Command::Token(cmd) => token::run(globals, cmd),
        Command::Health(args) => token::health(globals, args),
        Command::Members(cmd) => members::run(globals, cmd),
        Command::Put(args) => records::put(globals, args),
        Command::Get(args) => records::get(globals, args),
        Command::Ls(args) => records::ls(globals, args),
        Command::Rm(args) => records::rm(globals, args),
        Command::Conflicts(args) => conflicts::list(globals, args),
        Command::Resolve(args) => conflicts::resolve(globals, args),
        Command::Heads(args) => bundle::heads(globals, args),
        Command::Export(args) => bundle::export(globals, args),
        Command::Import(args) => bundle::import(globals, args),
        Command::Verify(args) => verify::verify(globals, args),
        Command::Journal(args) => verify::journal(globals, args),
        Command::Attest(args) => attest::attest(globals, args),
        Command::Status(args) => attest::status(globals, args),
        Command::Checkpoint(args) => checkpoint::checkpoint(globals, args),
        Command::Prove(args) => checkpoint::prove(globals, args),
        Command::VerifyProof(args) => checkpoint::verify_proof(globals, args),
        Command::Audit(args) => audit::run(globals, args),
        Command::Adapter(cmd) => adapter::run(globals, cmd),
        Command::Push(args) => adapter::mirror(globals, Push, args),
        Command::Pull(args) => adapter::mirror(globals, Pull, args),
        Command::Compact(args) => registry::compact(globals, args),
        Command::Demo(args) => demo::run(args),
    }
}

/// An error and its causes on one line, each said once: library errors
/// often show their cause in their own text (`adapter binding 'x':
/// <cause>`), so a cause already shown is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// The exit code for a failure (see [`main`]).
fn exit_code(e: &anyhow::Error) -> u8 {
    let refused_write = e.downcast_ref::<WriteError>().is_some_and(|w| {
        matches!(
            w,
            WriteError::Invalid(_)
                | WriteError::NotPermitted { .. }
                | WriteError::NotOwner { .. }
                | WriteError::LastAdmin { .. }
        )
    });
    let untrusted = e
        .downcast_ref::<ImportError>()
        .is_some_and(|i| !matches!(i, ImportError::Store(_) | ImportError::File { .. }))
        || e.downcast_ref::<PeerError>().is_some_and(|s| {
            matches!(
                s,
                PeerError::Refused { .. } | PeerError::RefusedByPeer { .. }
            )
        });
    let verify_failed = e
        .downcast_ref::<VerifyError>()
        .is_some_and(|v| !matches!(v, VerifyError::Lookup(_)))
        || e.downcast_ref::<LogError>().is_some();
    if refused_write {
        3
    } else if untrusted {
        4
    } else if verify_failed {
        5
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn an_error_says_each_cause_once() {
        let e = chittysync::MirrorError::Adapter {
            binding: "pg".into(),
            source: chittysync::AdapterError::Connect {
                system: "postgres".into(),
                reason: "connection refused".into(),
            },
        };
        let shown = message(&anyhow::Error::new(e));
        assert_eq!(shown.matches("cannot connect").count(), 1, "{shown}");
        let wrapped: Result<()> = Err(anyhow::anyhow!("disk full")).context("saving");
        assert_eq!(message(&wrapped.unwrap_err()), "saving: disk full");
    }
}
