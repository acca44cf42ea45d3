//! `chittysync sync TARGET`: one command for both kinds of sync. TARGET is
//! the name of an adapter binding (a registry mirrored to an external table)
//! or a peer's address, `host:port`.

use std::time::Duration;

use anyhow::{Result, bail};
use chittysync::{Direction, Side};
use clap::Args;

use super::{Globals, adapter, peer};

/// Arguments of `chittysync sync`.
#[derive(Args)]
pub(crate) struct SyncArgs {
    /// An adapter binding's name, or a peer's address `host:port` (where
    /// `chittysync serve` listens).
    target: String,
    /// With a peer: registries to sync, by name or id [default: every
    /// registry shared with the peer].
    registries: Vec<String>,
    /// With a peer: its public key (its `chittysync whoami`). Without it the
    /// key the peer proves first is pinned for its address (trust on first use).
    #[arg(long)]
    key: Option<String>,
    /// Keep going: with a peer, stay connected and push and pull live; with a
    /// binding, run once per --interval. Until interrupted.
    #[arg(long)]
    watch: bool,
    /// With a peer: give up when it says nothing for this many seconds
    /// (default 60).
    #[arg(long)]
    timeout: Option<u64>,
    /// With a binding: show the plan; write nothing to either side.
    #[arg(long)]
    dry_run: bool,
    /// With a binding: allow a run that deletes more rows than its limit.
    #[arg(long)]
    allow_deletes: bool,
    /// With a binding: ignore the change cursor and compare the whole table.
    #[arg(long)]
    full: bool,
    /// With a binding: settle open manual conflicts by taking this side's
    /// value (local or remote).
    #[arg(long, value_name = "SIDE")]
    take: Option<Side>,
    /// With a binding: rows per write batch (default: the adapter's own,
    /// e.g. 500 for Postgres, every row in one request for Sheets).
    #[arg(long)]
    batch_size: Option<usize>,
    /// With a binding and --watch: time between runs (30s, 5m, 500ms, or
    /// plain seconds).
    #[arg(long, default_value = "30s", value_parser = adapter::parse_interval)]
    interval: Duration,
    /// With a binding and --watch: stop after this many runs.
    #[arg(long, requires = "watch")]
    runs: Option<u64>,
}

/// Runs `chittysync sync TARGET`: a binding when one has that name, else a peer.
pub(crate) fn run(globals: &Globals, args: SyncArgs) -> Result<()> {
    let replica = &globals.open()?;
    let as_json = globals.json;
    if replica.binding(&args.target)?.is_some() {
        let peer_only = [
            (!args.registries.is_empty(), "registry names"),
            (args.key.is_some(), "--key"),
            (args.timeout.is_some(), "--timeout"),
        ];
        if let Some((_, what)) = peer_only.iter().find(|(given, _)| *given) {
            bail!(
                "'{}' is an adapter binding; {what} applies only to peer addresses (host:port)",
                args.target
            );
        }
        let run = adapter::RunArgs {
            binding: args.target,
            dry_run: args.dry_run,
            allow_deletes: args.allow_deletes,
            full: args.full,
            take: args.take,
            batch_size: args.batch_size,
            watch: args.watch,
            interval: args.interval,
            runs: args.runs,
        };
        return adapter::mirror_with(replica, Direction::Both, run, as_json);
    }
    if !args.target.contains(':') {
        bail!(
            "'{}' is neither an adapter binding here (`chittysync adapter ls` lists them) nor a peer address; give host:port",
            args.target
        );
    }
    let binding_only = [
        (args.dry_run, "--dry-run"),
        (args.allow_deletes, "--allow-deletes"),
        (args.full, "--full"),
        (args.take.is_some(), "--take"),
        (args.runs.is_some(), "--runs"),
        (args.batch_size.is_some(), "--batch-size"),
    ];
    if let Some((_, what)) = binding_only.iter().find(|(given, _)| *given) {
        bail!(
            "'{}' is a peer address; {what} applies only to adapter bindings",
            args.target
        );
    }
    let sync = peer::SyncArgs {
        peer: args.target,
        registries: args.registries,
        key: args.key,
        watch: args.watch,
        timeout: args.timeout.unwrap_or(60),
    };
    peer::sync(replica, sync, as_json)
}
