//! `chittysync`: create, edit, inspect and exchange signed registries from a shell.

mod adapter;
mod audit;
mod demo;
mod output;
mod peer;
mod sync_target;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use chittysync::{
    ChangeHash, ConflictPolicy, ImportError, LookupError, PublicKey, Query, Registry, Replica,
    Role, Schema, Value, VerifyError, WriteError,
};
use clap::{Parser, Subcommand};
use serde_json::json;

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
    Registry(RegistryCmd),
    /// Sync with a peer over the network (`sync HOST:PORT [REG…]`), or run an
    /// adapter binding both ways (`sync BINDING`; --dry-run shows the plan).
    Sync(sync_target::SyncArgs),
    /// Serve this replica's registries to peers (a hub): each peer sees only
    /// registries it is a member of.
    Serve(peer::ServeArgs),
    /// List and change a registry's members.
    #[command(subcommand)]
    Members(MembersCmd),
    /// Create or update a record: `put REG [ID] field=value…` (`field=` clears a field).
    Put {
        /// Registry name or id.
        registry: String,
        /// Record id (omit to create a record with a new id), then field=value pairs.
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
    },
    /// Show one record.
    Get {
        /// Registry name or id.
        registry: String,
        /// Record id.
        id: String,
    },
    /// List records.
    Ls {
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
    },
    /// Delete a record (it leaves a signed tombstone).
    Rm {
        /// Registry name or id.
        registry: String,
        /// Record id.
        id: String,
    },
    /// List fields with concurrent values and what the conflict policy picks.
    Conflicts {
        /// Registry name or id.
        registry: String,
    },
    /// Settle a conflict by writing the chosen value.
    Resolve {
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
    },
    /// Print the registry's heads (give them to `export --since` on another replica).
    Heads {
        /// Registry name or id.
        registry: String,
    },
    /// Write the signed changes another replica lacks to a bundle file.
    Export {
        /// Registry name or id.
        registry: String,
        /// The bundle file to write.
        #[arg(long, short)]
        out: PathBuf,
        /// The other replica's heads (from its `heads`); omit to export every change.
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        since: Vec<String>,
    },
    /// Verify and apply bundle files; a bundle with any bad change is refused whole.
    Import {
        /// Bundle files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Re-check everything from genesis: hashes, signatures, authors, roles, schema, journal.
    Verify {
        /// Only this registry (name or id).
        registry: Option<String>,
    },
    /// Show the local journal: what this replica created, wrote, accepted and refused.
    Journal {
        /// Only events of this registry (name or id).
        registry: Option<String>,
        /// Only the last N events.
        #[arg(long)]
        last: Option<usize>,
    },
    /// Sign this replica's attestation of a registry's current state.
    Attest {
        /// Registry name or id.
        registry: String,
    },
    /// Show a registry's state and which members attest it (quorum k of n).
    Status {
        /// Registry name or id.
        registry: String,
    },
    /// Sign a checkpoint of this replica's log of accepted changes (a C2SP signed note).
    Checkpoint {
        /// Also write the note to this file.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Prove a change is in the log (--change), or that a checkpoint extends another (--from/--to).
    Prove {
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
    },
    /// Check a proof with only the replica's public key (no replica needed).
    VerifyProof {
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
    },
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
    Compact {
        /// Registry name or id.
        registry: String,
    },
    /// Run a demonstration: two replicas, offline edits, exchange, convergence.
    Demo {
        /// Keep the demo's replicas in this directory instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RegistryCmd {
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

#[derive(Subcommand)]
enum MembersCmd {
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

/// Exit codes: 1 any failure, 2 bad usage (clap), 3 a write refused by the
/// schema or roles, 4 a bundle or peer refused as untrusted or malformed
/// (by either side of a sync), 5 `verify`
/// or `verify-proof` found a problem.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = if e.downcast_ref::<WriteError>().is_some_and(|w| {
                matches!(
                    w,
                    WriteError::Invalid(_)
                        | WriteError::NotPermitted { .. }
                        | WriteError::NotOwner { .. }
                        | WriteError::LastAdmin { .. }
                )
            }) {
                3
            } else if e
                .downcast_ref::<ImportError>()
                .is_some_and(|i| !matches!(i, ImportError::Store(_) | ImportError::File { .. }))
                || e.downcast_ref::<chittysync::PeerError>().is_some_and(|s| {
                    matches!(
                        s,
                        chittysync::PeerError::Refused { .. }
                            | chittysync::PeerError::RefusedByPeer { .. }
                    )
                })
            {
                4
            } else if e
                .downcast_ref::<VerifyError>()
                .is_some_and(|v| !matches!(v, VerifyError::Lookup(_)))
                || e.downcast_ref::<chittysync::LogError>().is_some()
            {
                5
            } else {
                1
            };
            ExitCode::from(code)
        }
    }
}

fn default_replica_path() -> Result<PathBuf> {
    let base = dirs::data_dir().ok_or_else(|| {
        anyhow!("no per-user data directory here; pass --replica PATH or set CHITTYSYNC_REPLICA")
    })?;
    Ok(base.join("chittysync").join("replica.db"))
}

fn open(cli: &Cli) -> Result<Replica> {
    let path = match &cli.replica {
        Some(p) => p.clone(),
        None => default_replica_path()?,
    };
    Replica::open(&path).with_context(|| format!("opening replica {}", path.display()))
}

fn registry(replica: &Replica, name: &str) -> Result<Registry> {
    replica.registry(name).map_err(|e: LookupError| anyhow!(e))
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Demo { dir } = &cli.command {
        return demo::run(dir.as_deref());
    }
    if let Command::VerifyProof {
        proof,
        checkpoint,
        old_checkpoint,
        key,
    } = &cli.command
    {
        return verify_proof(proof, checkpoint, old_checkpoint.as_deref(), key, cli.json);
    }
    let replica = open(&cli)?;
    let as_json = cli.json;
    match cli.command {
        Command::Init => {
            if as_json {
                output::json(&json!({
                    "replica": replica.path(),
                    "key_file": Replica::key_path(replica.path()),
                    "public_key": replica.public_key().to_string(),
                }));
            } else {
                println!("replica     {}", replica.path().display());
                println!(
                    "key file    {} (mode 0600)",
                    Replica::key_path(replica.path()).display()
                );
                println!("public key  {}", replica.public_key());
            }
        }
        Command::Whoami => println!("{}", replica.public_key()),
        Command::Registry(cmd) => registry_cmd(&replica, cmd, as_json)?,
        Command::Members(cmd) => members_cmd(&replica, cmd, as_json)?,
        Command::Put {
            registry: name,
            args,
        } => {
            let reg = registry(&replica, &name)?;
            let (id, pairs) = match args.first() {
                Some(first) if !first.contains('=') => (Some(first.clone()), &args[1..]),
                _ => (None, &args[..]),
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
                let id = if set.is_empty() && id.is_some() {
                    id.clone().expect("checked")
                } else {
                    w.put(id.as_deref(), set)?
                };
                if !unset.is_empty() {
                    w.unset(&id, unset)?;
                }
                Ok(id)
            })?;
            if as_json {
                output::json(&json!({ "id": id }));
            } else {
                println!("{id}");
            }
        }
        Command::Get { registry: name, id } => {
            let reg = registry(&replica, &name)?;
            let record = reg.get(&id).ok_or_else(|| {
                anyhow!("registry '{name}' has no record {id}; `chittysync ls {name}` lists them")
            })?;
            if as_json {
                output::json(&record.to_json());
            } else {
                let schema = reg.schema();
                let mut rows = vec![vec!["id".to_owned(), record.id.clone()]];
                for f in &schema.fields {
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
                output::table(&["field", "value"], &rows);
            }
        }
        Command::Ls {
            registry: name,
            filters,
            deleted,
            limit,
        } => {
            let reg = registry(&replica, &name)?;
            let schema = reg.schema();
            let mut query = Query {
                include_deleted: deleted,
                limit,
                ..Query::default()
            };
            for f in filters {
                let (field, value) = f
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--where '{f}' is not field=value"))?;
                if schema.get(field).is_none() {
                    bail!("--where: registry '{name}' has no field '{field}'");
                }
                query = query.filter(field, value);
            }
            let records = reg.list(&query);
            if as_json {
                output::json(
                    &records
                        .iter()
                        .map(|r| r.to_json())
                        .collect::<Vec<_>>()
                        .into(),
                );
            } else {
                output::records(&schema, &records);
                println!("{} record(s)", records.len());
            }
        }
        Command::Rm { registry: name, id } => {
            registry(&replica, &name)?.delete(&id)?;
            if as_json {
                output::json(&json!({ "deleted": id }));
            } else {
                println!("deleted {id}");
            }
        }
        Command::Conflicts { registry: name } => {
            let reg = registry(&replica, &name)?;
            let conflicts = reg.conflicts();
            if as_json {
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
                output::json(&items.into());
            } else {
                let mut rows = Vec::new();
                for c in &conflicts {
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
                output::table(
                    &["record", "field", "#", "value", "author", "time", "status"],
                    &rows,
                );
                println!("{} conflicting field(s)", conflicts.len());
            }
        }
        Command::Resolve {
            registry: name,
            id,
            field,
            value,
            pick,
        } => {
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
            if !as_json {
                println!("resolved {id}.{field}");
            }
        }
        Command::Heads { registry: name } => {
            let heads: Vec<String> = registry(&replica, &name)?
                .heads()
                .iter()
                .map(ToString::to_string)
                .collect();
            if as_json {
                output::json(&heads.into());
            } else {
                println!("{}", heads.join(","));
            }
        }
        Command::Export {
            registry: name,
            out,
            since,
        } => {
            let reg = registry(&replica, &name)?;
            let since: Vec<ChangeHash> = since
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    s.trim()
                        .parse()
                        .map_err(|_| anyhow!("--since: '{s}' is not a change hash"))
                })
                .collect::<Result<_>>()?;
            let bundle = reg.export(&since)?;
            bundle.write_file(&out)?;
            if as_json {
                output::json(
                    &json!({ "registry": reg.id().to_string(), "changes": bundle.len(), "file": out }),
                );
            } else {
                println!(
                    "exported {} change(s) of '{}' to {}",
                    bundle.len(),
                    reg.name(),
                    out.display()
                );
            }
        }
        Command::Import { files } => {
            let mut reports = Vec::new();
            for file in &files {
                let report = replica
                    .import_file(file)
                    .with_context(|| format!("importing {}", file.display()))?;
                reports.push((file, report));
            }
            if as_json {
                let items: Vec<_> = reports
                    .iter()
                    .map(|(f, r)| {
                        json!({ "file": f, "registry": r.registry.to_string(), "name": r.name,
                                "applied": r.applied, "already_known": r.already_known, "created": r.created })
                    })
                    .collect();
                output::json(&items.into());
            } else {
                for (f, r) in reports {
                    println!(
                        "{}: '{}' {} change(s) verified and applied, {} already known{}",
                        f.display(),
                        r.name,
                        r.applied,
                        r.already_known,
                        if r.created { " (new registry)" } else { "" }
                    );
                }
            }
        }
        Command::Verify { registry: name } => {
            let report = replica.verify(name.as_deref())?;
            if as_json {
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
                output::json(
                    &json!({ "ok": true, "registries": items, "journal_rows": report.journal_rows }),
                );
            } else {
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
                );
                for r in &report.registries {
                    for e in &r.invalid_records {
                        println!("note: {e}");
                    }
                }
                println!(
                    "verified: every change hash, signature, author and role; journal chain of {} entries intact",
                    report.journal_rows
                );
            }
        }
        Command::Journal {
            registry: name,
            last,
        } => {
            let only = name
                .map(|n| registry(&replica, &n).map(|r| r.id()))
                .transpose()?;
            let mut entries: Vec<_> = replica
                .journal()?
                .into_iter()
                .filter(|e| only.is_none() || e.registry == only)
                .collect();
            if let Some(n) = last {
                entries.drain(..entries.len().saturating_sub(n));
            }
            if as_json {
                for e in &entries {
                    println!(
                        "{}",
                        json!({ "seq": e.seq, "at": e.at, "registry": e.registry.map(|r| r.to_string()),
                                "kind": e.kind, "detail": e.detail, "hash": e.hash })
                    );
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
                output::table(&["#", "at", "registry", "event", "detail"], &rows);
            }
        }
        Command::Attest { registry: name } => {
            let a = registry(&replica, &name)?.attest()?;
            if as_json {
                output::json(
                    &json!({ "digest": hex(&a.digest), "change_count": a.change_count,
                    "heads": a.heads.iter().map(ToString::to_string).collect::<Vec<_>>() }),
                );
            } else {
                println!(
                    "attested '{name}': digest {} over {} changes",
                    hex(&a.digest),
                    a.change_count
                );
            }
        }
        Command::Status { registry: name } => {
            let reg = registry(&replica, &name)?;
            let status = reg.status()?;
            let aliases: std::collections::HashMap<_, _> = reg
                .members()
                .into_iter()
                .map(|m| (m.key, m.alias))
                .collect();
            let who: Vec<String> = status
                .attested_by
                .iter()
                .map(|k| {
                    aliases
                        .get(k)
                        .cloned()
                        .flatten()
                        .unwrap_or_else(|| k.short())
                })
                .collect();
            if as_json {
                output::json(&json!({
                    "digest": status.digest, "change_count": status.change_count,
                    "heads": status.heads.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "attested_by": status.attested_by.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "members": status.members, "quorum": status.quorum, "attested": status.attested(),
                }));
            } else {
                println!("registry     {} ({})", reg.name(), reg.id());
                println!("changes      {}", status.change_count);
                println!("digest       {}", status.digest);
                println!(
                    "heads        {}",
                    status
                        .heads
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                );
                println!(
                    "attested by  {} of {} members: {}",
                    who.len(),
                    status.members,
                    who.join(", ")
                );
                match status.quorum {
                    Some(k) if status.attested() => {
                        println!("quorum       {k} of {}: met ✓", status.members)
                    }
                    Some(k) => println!("quorum       {k} of {}: not met", status.members),
                    None => {
                        println!("quorum       none configured (set `quorum = k` in the schema)")
                    }
                }
            }
        }
        Command::Checkpoint { out } => {
            let note = replica.checkpoint()?;
            if let Some(path) = &out {
                std::fs::write(path, &note)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if as_json {
                output::json(&json!({ "note": note }));
            } else {
                print!("{note}");
            }
        }
        Command::Prove {
            change,
            size,
            from,
            to,
            out,
        } => {
            let json = match (change, from, to) {
                (Some(change), _, _) => {
                    let hash: ChangeHash = change
                        .parse()
                        .map_err(|_| anyhow!("--change: '{change}' is not a change hash"))?;
                    replica.prove_inclusion(hash, size)?.to_json()
                }
                (None, Some(from), Some(to)) => {
                    let key = replica.public_key();
                    let read = |p: &PathBuf| -> Result<chittysync::Checkpoint> {
                        let note = std::fs::read_to_string(p)
                            .with_context(|| format!("reading {}", p.display()))?;
                        Ok(chittysync::Checkpoint::verify(&note, &key)?)
                    };
                    let (old, new) = (read(&from)?, read(&to)?);
                    replica.prove_consistency(old.size(), new.size())?.to_json()
                }
                _ => bail!("give --change HASH, or --from OLD_CHECKPOINT --to NEW_CHECKPOINT"),
            };
            match out {
                Some(path) => std::fs::write(&path, &json)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{json}"),
            }
        }
        Command::VerifyProof { .. } => unreachable!("handled above"),
        Command::Audit(args) => audit::run(&replica, args, as_json)?,
        Command::Adapter(cmd) => adapter::adapter_cmd(&replica, cmd, as_json)?,
        Command::Push(args) => adapter::run(&replica, chittysync::Direction::Push, args, as_json)?,
        Command::Pull(args) => adapter::run(&replica, chittysync::Direction::Pull, args, as_json)?,
        Command::Sync(args) => sync_target::run(&replica, args, as_json)?,
        Command::Serve(args) => peer::serve(&replica, args, as_json)?,
        Command::Compact { registry: name } => {
            registry(&replica, &name)?.compact()?;
            if !as_json {
                println!("compacted '{name}'");
            }
        }
        Command::Demo { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a proof file against checkpoint notes with only a public key.
fn verify_proof(
    proof: &Path,
    checkpoint: &Path,
    old: Option<&Path>,
    key: &str,
    as_json: bool,
) -> Result<()> {
    let key: PublicKey = key.parse()?;
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let text = read(proof)?;
    let note = read(checkpoint)?;
    let kind: serde_json::Value =
        serde_json::from_str(&text).context("the proof file is not JSON")?;
    let message = if kind["format"]
        .as_str()
        .is_some_and(|f| f.contains("consistency"))
    {
        let old = old.ok_or_else(|| anyhow!("a consistency proof needs --old-checkpoint"))?;
        let p = chittysync::ConsistencyProof::from_json(&text)?;
        let (a, b) = p.verify_signed(&read(old)?, &note, &key)?;
        format!(
            "consistent: the log of size {} extends the log of size {}",
            b.size(),
            a.size()
        )
    } else {
        let p = chittysync::InclusionProof::from_json(&text)?;
        let c = p.verify_signed(&note, &key)?;
        format!(
            "included: change {} of registry {} is entry {} of the log of size {}",
            p.change(),
            p.registry(),
            p.index(),
            c.size()
        )
    };
    if as_json {
        output::json(&json!({ "ok": true, "result": message }));
    } else {
        println!("{message}");
    }
    Ok(())
}

fn short(key: &str) -> String {
    key.chars().take(8).collect()
}

fn read_schema(file: &Path) -> Result<Schema> {
    Ok(Schema::from_file(file)?)
}

fn registry_cmd(replica: &Replica, cmd: RegistryCmd, as_json: bool) -> Result<()> {
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
                output::json(&json!({ "id": reg.id().to_string(), "name": reg.name() }));
            } else {
                println!("created registry '{}' ({})", reg.name(), reg.id());
            }
        }
        RegistryCmd::Ls => {
            let all = replica.registries()?;
            let mut rows = Vec::new();
            let mut items = Vec::new();
            for info in all {
                let reg = replica.registry_by_id(info.id)?;
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
                output::json(&items.into());
            } else {
                output::table(&["name", "id", "records", "changes"], &rows);
            }
        }
        RegistryCmd::Show { registry: name } => {
            let reg = registry(replica, &name)?;
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
                }));
            } else {
                println!("registry   {} ({})", reg.name(), reg.id());
                println!("records    {}", reg.len());
                println!("changes    {}", reg.change_count());
                println!("conflicts  {}", reg.conflicts().len());
                println!("policy     {}", schema.conflict_policy);
                println!("digest     {}", reg.state_digest());
                println!("heads      {}", heads.join(","));
                println!();
                let rows: Vec<Vec<String>> = schema
                    .fields
                    .iter()
                    .map(|f| {
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
                        vec![f.name.clone(), f.field_type.to_string(), rules.join(", ")]
                    })
                    .collect();
                output::table(&["field", "type", "rules"], &rows);
                println!();
                let rows: Vec<Vec<String>> = members
                    .iter()
                    .map(|m| vec![m.key.to_string(), m.role.to_string()])
                    .collect();
                output::table(&["member", "role"], &rows);
            }
        }
        RegistryCmd::SetSchema {
            registry: name,
            file,
        } => {
            let reg = registry(replica, &name)?;
            reg.set_schema(read_schema(&file)?)?;
            if !as_json {
                println!("schema of '{}' updated", reg.name());
            }
        }
    }
    Ok(())
}

fn members_cmd(replica: &Replica, cmd: MembersCmd, as_json: bool) -> Result<()> {
    match cmd {
        MembersCmd::Ls { registry: name } => {
            let members = registry(replica, &name)?.members();
            if as_json {
                output::json(
                    &members
                        .iter()
                        .map(|m| json!({"key": m.key.to_string(), "role": m.role.name()}))
                        .collect::<Vec<_>>()
                        .into(),
                );
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
                output::table(&["member", "role", "alias"], &rows);
            }
        }
        MembersCmd::Add {
            registry: name,
            key,
            role,
        } => {
            let key: PublicKey = key.parse()?;
            let role: Role = role.parse().map_err(|e: String| anyhow!(e))?;
            registry(replica, &name)?.set_member(key, role)?;
            if !as_json {
                println!("{key} is now {role} of '{name}'");
            }
        }
        MembersCmd::Alias {
            registry: name,
            key,
            name: alias,
        } => {
            let key: PublicKey = key.parse()?;
            registry(replica, &name)?.set_alias(key, alias.as_deref())?;
            if !as_json {
                match alias {
                    Some(a) => println!("{key} is now known as '{a}' in '{name}'"),
                    None => println!("alias of {key} cleared in '{name}'"),
                }
            }
        }
        MembersCmd::Rm {
            registry: name,
            key,
        } => {
            let key: PublicKey = key.parse()?;
            registry(replica, &name)?.remove_member(key)?;
            if !as_json {
                println!("{key} removed from '{name}'");
            }
        }
    }
    Ok(())
}
