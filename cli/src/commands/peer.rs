//! `chittysync sync HOST:PORT` and `chittysync serve`: peer sync over TCP.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chittysync::{
    HubEvent, Peer, PeerOptions, PeerReport, Progress, PublicKey, Replica, ServeOptions, WatchEvent,
};
use clap::Args;
use serde_json::json;

use super::Globals;
use crate::hint;
use crate::output::{self, StdoutError, outln};

/// A sync with a peer: the peer half of `chittysync sync` (see
/// [`super::sync::SyncArgs`], which has the flags and their help).
pub(crate) struct SyncArgs {
    /// The peer's address, `host:port`.
    pub(crate) peer: String,
    /// Registries to sync, by name or id (empty: every registry shared with the peer).
    pub(crate) registries: Vec<String>,
    /// The peer's public key; without it the key the peer proves first is
    /// pinned for its address (trust on first use).
    pub(crate) key: Option<String>,
    /// Keep the connection open: push and pull changes as they happen,
    /// reconnecting with backoff, until interrupted.
    pub(crate) watch: bool,
    /// Give up when the peer says nothing for this many seconds.
    pub(crate) timeout: u64,
}

/// Arguments of `chittysync serve`.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on, `host:port` (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: String,
    /// Also accept this key when it is a member of no registry here yet
    /// (repeatable).
    #[arg(long, value_name = "PUBLIC_KEY")]
    allow: Vec<String>,
    /// Accept any key. Registries are still served only to their members.
    #[arg(long)]
    allow_any: bool,
    /// Take registries new to this hub from this key (repeatable; the key
    /// is accepted as a peer too). Pushes of new registries by any other
    /// key are refused.
    #[arg(long, value_name = "PUBLIC_KEY")]
    allow_create: Vec<String>,
    /// Take new registries from any accepted key, within --create-quota.
    #[arg(long)]
    allow_create_any: bool,
    /// New registries one key may bring to this hub, in all.
    #[arg(long, default_value_t = 10, value_name = "N")]
    create_quota: u64,
    /// Serve at most this many authenticated peers at once; more are
    /// turned away.
    #[arg(long, default_value_t = 1024)]
    max_peers: usize,
    /// At most this many connections still in their handshake at once (kept
    /// apart from --max-peers, so strangers cannot take members' places;
    /// when full, the oldest makes way for a new one).
    #[arg(long, default_value_t = 128, value_name = "N")]
    max_handshakes: usize,
    /// At most this many connections still in their handshake at once from
    /// one address.
    #[arg(long, default_value_t = 32, value_name = "N")]
    max_handshakes_per_address: usize,
    /// Seconds a connection has to finish its handshake and say hello.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    handshake_timeout: u64,
    /// Close a connection whose peer says nothing for this many seconds
    /// (live peers say they are still there every 30 s).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    idle_timeout: u64,
    /// Bytes of changes waiting for their dependencies that one peer may
    /// make the hub hold, over all its connections.
    #[arg(long, default_value_t = 128 << 20, value_name = "BYTES")]
    max_pending_bytes_per_peer: usize,
    /// Connections one peer (one key) may have open at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_connections_per_peer: usize,
    /// Keep a live connection to another hub, `host:port` or `KEY@host:port`
    /// (repeatable): hubs that peer with each other form a mesh.
    #[arg(long, value_name = "PEER")]
    peer: Vec<String>,
    /// Also serve the HTTP API (tokens from `chittysync token add`, /health,
    /// /ready, /metrics, /v1/openapi.json) on this address, `host:port`.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Requests each API token may make per minute.
    #[arg(long, default_value_t = 6000, requires = "http")]
    http_rate: u32,
}

/// Stops a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the network runtime")
}

fn parse_key(key: &str) -> Result<PublicKey> {
    key.parse()
        .map_err(|e| anyhow!("{e}; pass the peer's key as printed by its `chittysync whoami`"))
}

/// `host:port` or `KEY@host:port`.
fn parse_peer(text: &str) -> Result<Peer> {
    match text.split_once('@') {
        Some((key, address)) => Ok(Peer::new(address).with_key(parse_key(key)?)),
        None => Ok(Peer::new(text)),
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / (1 << 10) as f64),
        n => format!("{n} B"),
    }
}

fn report_json(report: &PeerReport) -> serde_json::Value {
    json!({
        "peer": report.peer.to_string(),
        "registries": report.registries.iter().map(|r| json!({
            "registry": r.registry.to_string(),
            "name": r.name,
            "changes_in": r.changes_in,
            "changes_out": r.changes_out,
            "refused": r.refused,
        })).collect::<Vec<_>>(),
        "changes_in": report.changes_in(),
        "changes_out": report.changes_out(),
        "bytes_sent": report.bytes_sent,
        "bytes_received": report.bytes_received,
        "duration_ms": report.duration.as_millis() as u64,
    })
}

fn print_report(report: &PeerReport) -> Result<(), StdoutError> {
    let rows: Vec<Vec<String>> = report
        .registries
        .iter()
        .map(|r| {
            vec![
                if r.name.is_empty() {
                    r.registry.to_string()
                } else {
                    r.name.clone()
                },
                r.changes_in.to_string(),
                r.changes_out.to_string(),
                match &r.refused {
                    Some(why) => format!("refused: {why}"),
                    None => "synced".into(),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        outln!("no registry is shared with peer {}", report.peer)?;
    } else {
        output::table(&["REGISTRY", "IN", "OUT", "STATUS"], &rows)?;
    }
    let mut hints: Vec<String> = report
        .registries
        .iter()
        .filter_map(|r| r.refused.as_deref().and_then(hint::refused_registry))
        .collect();
    hints.dedup();
    for hint in hints {
        eprintln!("hint: {hint}");
    }
    outln!(
        "{} change(s) in, {} out; {} sent, {} received in {:.2} s (peer {})",
        report.changes_in(),
        report.changes_out(),
        human_bytes(report.bytes_sent),
        human_bytes(report.bytes_received),
        report.duration.as_secs_f64(),
        report.peer
    )
}

/// Syncs with a peer once, or with `watch` until interrupted.
pub(crate) fn sync(replica: &Replica, args: SyncArgs, as_json: bool) -> Result<()> {
    let mut peer = Peer::new(args.peer.clone());
    if let Some(key) = &args.key {
        peer = peer.with_key(parse_key(key)?);
    }
    let bar = (!as_json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message(format!("syncing with {}", args.peer));
        bar
    });
    let progress = bar.clone().map(|bar| {
        std::sync::Arc::new(move |p: &Progress| {
            bar.set_message(format!(
                "↑ {} ↓ {}  {} change(s) in, {} out",
                human_bytes(p.bytes_sent),
                human_bytes(p.bytes_received),
                p.changes_in,
                p.changes_out
            ));
        }) as chittysync::ProgressFn
    });
    let options = PeerOptions {
        registries: args.registries.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        progress,
        ..PeerOptions::default()
    };
    let rt = runtime()?;
    if args.watch {
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        return rt.block_on(watch(replica, peer, options, as_json));
    }
    let result = rt.block_on(replica.sync_peer(&peer, &options));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = result?;
    if as_json {
        output::json(&report_json(&report))?;
    } else {
        print_report(&report)?;
    }
    Ok(())
}

/// One event: a line for people, or a JSON object per line with `--json`.
fn say(as_json: bool, line: String, value: serde_json::Value) -> Result<(), StdoutError> {
    if as_json {
        outln!("{value}")
    } else {
        outln!("{line}")
    }
}

/// `sync --watch`: one line per event, until interrupted (Ctrl-C closes
/// the connection cleanly).
async fn watch(replica: &Replica, peer: Peer, options: PeerOptions, as_json: bool) -> Result<()> {
    let mut changes = replica.subscribe();
    let mut watch = replica.watch(peer.clone(), options);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            event = watch.next_event() => match event {
                Some(WatchEvent::Connected(key)) => say(
                as_json,
                    format!("connected to {} ({key}); watching for changes", peer.address),
                    json!({ "event": "connected", "peer": key.to_string() }),
                )?,
                Some(WatchEvent::Disconnected { error, retry_in }) => say(
                as_json,
                    format!("disconnected: {error}; reconnecting in {:.1} s", retry_in.as_secs_f64()),
                    json!({ "event": "disconnected", "error": error.to_string(), "retry_in_ms": retry_in.as_millis() as u64 }),
                )?,
                Some(_) => {}
                None => return Ok(()),
            },
            _ = &mut interrupted => {
                // Close cleanly: the sync state is saved for the next time.
                watch.close().await;
                return Ok(());
            }
            Some(c) = changes.next() => say(
                as_json,
                format!("{}: {} change(s) from {}", c.name, c.applied, c.peer.short()),
                json!({ "event": "changes", "registry": c.registry.to_string(), "name": c.name, "applied": c.applied, "peer": c.peer.to_string() }),
            )?,
        }
    }
}

/// Serves this replica's registries to peers until interrupted.
pub(crate) fn serve(globals: &Globals, args: ServeArgs) -> Result<()> {
    let replica = &globals.open()?;
    let as_json = globals.json;
    let allow = args
        .allow
        .iter()
        .map(|k| parse_key(k))
        .collect::<Result<Vec<_>>>()?;
    let peers = args
        .peer
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<Vec<_>>>()?;
    let allow_create = args
        .allow_create
        .iter()
        .map(|k| parse_key(k))
        .collect::<Result<Vec<_>>>()?;
    let options = ServeOptions {
        allow,
        allow_any: args.allow_any,
        allow_create,
        allow_create_any: args.allow_create_any,
        create_quota: args.create_quota,
        max_peers: args.max_peers.max(1),
        max_handshakes: args.max_handshakes.max(1),
        max_handshakes_per_address: args.max_handshakes_per_address.max(1),
        handshake_timeout: Duration::from_secs(args.handshake_timeout.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        max_pending_bytes_per_peer: args.max_pending_bytes_per_peer,
        max_connections_per_peer: args.max_connections_per_peer.max(1),
        ..ServeOptions::default()
    };
    let rt = runtime()?;
    rt.block_on(async {
        let mut hub = replica.serve(&args.listen, options).await?;
        // The HTTP API and the mirror schedules run beside the peers, over
        // the same replica, until the hub stops.
        let service = chittysync_server::Service::with_mirrors(
            replica.clone(),
            chittysync_server::HttpOptions {
                requests_per_minute: args.http_rate,
                ..Default::default()
            },
            chittysync_adapters::kinds(),
        );
        let schedules = service.clone();
        let _schedules = AbortOnDrop(tokio::spawn(async move { schedules.run_schedules().await }));
        let _http = match &args.http {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("listening for HTTP on {address}"))?;
                let local = listener
                    .local_addr()
                    .with_context(|| format!("listening for HTTP on {address}"))?;
                say(
                    as_json,
                    format!("HTTP API on http://{local}"),
                    json!({ "event": "http", "address": local.to_string() }),
                )?;
                Some(AbortOnDrop(tokio::spawn(async move {
                    if let Err(e) = service.serve(listener, std::future::pending()).await {
                        eprintln!("error: {e}");
                    }
                })))
            }
            None => None,
        };
        say(
                as_json,
            format!(
                "listening on {} as {}",
                hub.local_addr(),
                replica.public_key()
            ),
            json!({ "event": "listening", "address": hub.local_addr().to_string(), "public_key": replica.public_key().to_string() }),
        )?;
        // Keep the mesh links alive for as long as the hub runs.
        let _links: Vec<_> = peers
            .into_iter()
            .map(|p| replica.watch(p, PeerOptions::default()))
            .collect();
        let mut failures = Window::default();
        while let Some(event) = hub.next_event().await {
            match event {
                HubEvent::Connected { address, peer } => say(
                as_json,
                    format!("{address}: connected ({peer})"),
                    json!({ "event": "connected", "address": address, "peer": peer.to_string() }),
                )?,
                HubEvent::Closed { address, report } => say(
                as_json,
                    format!(
                        "{address}: closed; {} change(s) in, {} out",
                        report.changes_in(),
                        report.changes_out()
                    ),
                    json!({ "event": "closed", "address": address, "report": report_json(&report) }),
                )?,
                HubEvent::Failed { address, error } => {
                    // A flood of failing connections must not flood the
                    // output: a few lines per window, then a count.
                    match failures.admit() {
                        Admit::Say(skipped) => {
                            if skipped > 0 {
                                say(
                                    as_json,
                                    format!("({skipped} more failed connection(s) not shown)"),
                                    json!({ "event": "failed-not-shown", "count": skipped }),
                                )?;
                            }
                            say(
                                as_json,
                                format!("{address}: {error}"),
                                json!({ "event": "failed", "address": address, "error": error.to_string() }),
                            )?
                        }
                        Admit::Skip => {}
                    }
                }
                _ => {}
            }
        }
        Ok::<(), anyhow::Error>(())
    })
}

/// At most `FAILURES_SHOWN` failure lines per `FAILURE_WINDOW`.
const FAILURES_SHOWN: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Window {
    started: Option<std::time::Instant>,
    shown: u32,
    skipped: u64,
}

enum Admit {
    /// Show this one, after saying how many were skipped.
    Say(u64),
    Skip,
}

impl Window {
    fn admit(&mut self) -> Admit {
        let now = std::time::Instant::now();
        if self
            .started
            .is_none_or(|t| now.duration_since(t) >= FAILURE_WINDOW)
        {
            self.started = Some(now);
            self.shown = 0;
        }
        if self.shown < FAILURES_SHOWN {
            self.shown += 1;
            Admit::Say(std::mem::take(&mut self.skipped))
        } else {
            self.skipped += 1;
            Admit::Skip
        }
    }
}
