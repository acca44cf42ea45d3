//! Peer sync: replicas exchange signed changes over authenticated,
//! encrypted connections, directly or through a hub.
//!
//! - **Transport**: TCP (or any byte stream, such as an in-memory duplex in
//!   tests), length-delimited frames, a Noise XX handshake
//!   (`Noise_XX_25519_ChaChaPoly_BLAKE2s`) whose static keys are signed by
//!   the replicas' ed25519 identities — see `frame`.
//! - **Envelopes**: every message names its sender, recipient and registry,
//!   carries a fresh nonce and a timestamp, and is signed — see `envelope`.
//!   Replayed nonces (remembered across restarts) and stale timestamps
//!   refuse the peer.
//! - **Sync**: Automerge's sync protocol per registry, many registries on
//!   one connection, sync state kept per peer so reconnects are
//!   incremental; received changes are verified and committed through
//!   [`Replica::import`], or refused whole — see `session`.
//! - **Access**: each side offers only registries whose members include the
//!   other's key. A hub takes changes only from writers and admins; readers
//!   pull. A non-member asking for a registry, or pushing to it, is answered
//!   as if it were not there. A hub takes registries new to it only from
//!   keys allowed to create there, within a quota per key.
//! - **Trust on first use** pins a key per address dialled; a key given
//!   explicitly pins its address too.
//! - **Limits**: connections still in their handshake have their own budget,
//!   and are counted, never journaled, when they fail; each connection and
//!   each peer may make a hub hold only so much — see `limits` and
//!   [`SessionLimits`].

mod envelope;
mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod limits;
mod peers;
mod session;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::error::StoreError;
use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::replica::Replica;
use frame::Counters;
pub use limits::HubMetrics;
use limits::{Admission, Admissions, Metrics, PeerBudget};
use session::{Accept, Config, CreatePolicy};

/// A peer sync could not run, or stopped early. Whatever was committed
/// before the failure stays; nothing half-verified was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The peer could not be reached.
    #[error(
        "could not connect to {peer}: {reason}; check the address and that a replica serves peers there"
    )]
    Connect {
        /// The address dialled.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The connection broke or timed out.
    #[error("the connection to {peer} failed: {reason}; sync again — it resumes where it stopped")]
    Connection {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// This replica refused the peer (the event is journaled).
    #[error("refused peer {peer}: {reason}; the connection was closed and the event journaled")]
    Refused {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The peer refused this replica.
    #[error("peer {peer} refused this replica: {reason}")]
    RefusedByPeer {
        /// The peer.
        peer: String,
        /// The reason it gave.
        reason: String,
    },
    /// The listening address could not be bound.
    #[error("could not listen on {address}: {reason}; choose a free address and port")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The replica's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A replica to sync with: an address, and the key expected there.
///
/// With a key, the peer must prove exactly that key, and the address is
/// pinned to it. Without one, the key the peer proves the first time is
/// pinned to its address and required there from then on (trust on first
/// use). Pins are per address: the same key reached at another address
/// gets a pin of its own and leaves the first one in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// `host:port`.
    pub address: String,
    /// The key the peer must prove, if pinned.
    pub key: Option<PublicKey>,
}

impl Peer {
    /// A peer at `address` (`host:port`), trusted on first use.
    pub fn new(address: impl Into<String>) -> Self {
        Peer {
            address: address.into(),
            key: None,
        }
    }

    /// Requires the peer to prove `key`.
    pub fn with_key(mut self, key: PublicKey) -> Self {
        self.key = Some(key);
        self
    }
}

/// Called with running totals while a sync moves data.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Running totals of a sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes written to the connection.
    pub bytes_sent: u64,
    /// Bytes read from the connection.
    pub bytes_received: u64,
    /// Changes received, verified and applied.
    pub changes_in: usize,
    /// Changes sent.
    pub changes_out: usize,
}

/// What one connection may make this replica hold. A peer that goes past
/// a limit is refused (journaled, once it has proved its key) and
/// disconnected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionLimits {
    /// Bytes of received changes held back while their dependencies are
    /// missing, over all registries of the connection.
    pub max_pending_bytes: usize,
    /// Received changes held back while their dependencies are missing,
    /// over all registries of the connection.
    pub max_pending_changes: usize,
    /// Registries synced on one connection.
    pub max_registries: usize,
    /// Registries on one connection that are not shared with the peer here
    /// (absent, or not listing it): asking about many costs memory and
    /// tells an honest peer nothing.
    pub max_unshared_registries: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_pending_bytes: 64 << 20,
            max_pending_changes: 100_000,
            max_registries: 10_000,
            max_unshared_registries: 64,
        }
    }
}

/// How [`Replica::sync_peer`] runs.
#[derive(Clone)]
pub struct PeerOptions {
    /// Names or ids of the registries to sync; empty: every registry shared
    /// with the peer.
    pub registries: Vec<String>,
    /// Largest message accepted from the peer. Messages sent are split so
    /// their changes stay under a quarter of it: give peers the same limit.
    pub max_message_bytes: usize,
    /// Envelopes whose timestamp is further than this from our clock are
    /// refused.
    pub max_clock_skew: Duration,
    /// A round fails if the peer says nothing for this long.
    pub timeout: Duration,
    /// How often a live connection looks for local changes to push.
    pub poll_interval: Duration,
    /// A live connection with nothing to send tells the peer it is still
    /// there this often (hubs close live connections that stay silent).
    pub keepalive: Duration,
    /// What the peer may make this replica hold.
    pub limits: SessionLimits,
    /// Called with running totals as data moves.
    pub progress: Option<ProgressFn>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            registries: Vec::new(),
            max_message_bytes: 64 << 20,
            max_clock_skew: Duration::from_secs(300),
            timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(200),
            keepalive: Duration::from_secs(30),
            limits: SessionLimits::default(),
            progress: None,
        }
    }
}

impl std::fmt::Debug for PeerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerOptions")
            .field("registries", &self.registries)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("timeout", &self.timeout)
            .field("poll_interval", &self.poll_interval)
            .field("keepalive", &self.keepalive)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// How [`Replica::serve`] accepts peers.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Keys accepted even if they are members of no registry here.
    pub allow: Vec<PublicKey>,
    /// Accept any key. Registries are still served only to their members.
    pub allow_any: bool,
    /// Keys that may bring registries new to this replica (each within
    /// [`ServeOptions::create_quota`]); they are accepted as peers too.
    /// Any other peer's push of a new registry is refused.
    pub allow_create: Vec<PublicKey>,
    /// Any accepted key may bring new registries, within the quota.
    pub allow_create_any: bool,
    /// New registries one key may bring to this replica, in all.
    pub create_quota: u64,
    /// Largest message accepted from a peer. Messages sent are split so
    /// their changes stay under a quarter of it: give peers the same limit.
    pub max_message_bytes: usize,
    /// Envelopes whose timestamp is further than this from our clock are
    /// refused.
    pub max_clock_skew: Duration,
    /// A peer must finish the handshake, and say hello, within this time.
    pub handshake_timeout: Duration,
    /// A connection whose peer says nothing for this long is closed.
    pub idle_timeout: Duration,
    /// How often live connections look for local changes to push.
    pub poll_interval: Duration,
    /// Peers served at once, once they have proved their keys; more are
    /// closed right after the handshake.
    pub max_peers: usize,
    /// Connections still in their handshake at once, kept apart from
    /// `max_peers` so strangers that never authenticate cannot take the
    /// places of members. When full, the oldest one past its first second
    /// is closed to make way for a new one (or, if none is, the new one).
    pub max_handshakes: usize,
    /// The same, per address.
    pub max_handshakes_per_address: usize,
    /// What one connection may make this replica hold.
    pub limits: SessionLimits,
    /// Bytes of held-back changes one peer may make this replica hold over
    /// all its connections.
    pub max_pending_bytes_per_peer: usize,
    /// Connections one peer may have open at once.
    pub max_connections_per_peer: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            allow: Vec::new(),
            allow_any: false,
            allow_create: Vec::new(),
            allow_create_any: false,
            create_quota: 10,
            max_message_bytes: 64 << 20,
            max_clock_skew: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_millis(200),
            max_peers: 1024,
            max_handshakes: 128,
            max_handshakes_per_address: 32,
            limits: SessionLimits::default(),
            max_pending_bytes_per_peer: 128 << 20,
            max_connections_per_peer: 16,
        }
    }
}

/// What one sync moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReport {
    /// The peer's key.
    pub peer: PublicKey,
    /// Per registry.
    pub registries: Vec<PeerRegistryReport>,
    /// Bytes written to the connection.
    pub bytes_sent: u64,
    /// Bytes read from the connection.
    pub bytes_received: u64,
    /// How long it took.
    pub duration: Duration,
}

impl PeerReport {
    /// Changes received, verified and applied, over all registries.
    pub fn changes_in(&self) -> usize {
        self.registries.iter().map(|r| r.changes_in).sum()
    }

    /// Changes sent, over all registries.
    pub fn changes_out(&self) -> usize {
        self.registries.iter().map(|r| r.changes_out).sum()
    }
}

/// What one sync moved for one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRegistryReport {
    /// The registry.
    pub registry: RegistryId,
    /// Its name (empty if it was refused before its name was known).
    pub name: String,
    /// Changes received, verified and applied.
    pub changes_in: usize,
    /// Changes sent.
    pub changes_out: usize,
    /// Why it was refused, by either side.
    pub refused: Option<String>,
}

/// What happens on a hub.
#[derive(Debug)]
#[non_exhaustive]
pub enum HubEvent {
    /// A peer connected and proved its key.
    Connected {
        /// Its address.
        address: String,
        /// Its key.
        peer: PublicKey,
    },
    /// A peer's connection ended normally.
    Closed {
        /// Its address.
        address: String,
        /// What moved.
        report: PeerReport,
    },
    /// A connection ended in an error (refusals included).
    Failed {
        /// The peer's address.
        address: String,
        /// What went wrong.
        error: PeerError,
    },
}

/// Events kept for a [`Hub`] or [`Watch`] whose owner does not read them;
/// newer ones are dropped, so an unread hub does not grow without bound.
const EVENT_BACKLOG: usize = 1024;

/// A running hub, from [`Replica::serve`]. Dropping it stops it.
#[derive(Debug)]
pub struct Hub {
    address: SocketAddr,
    shutdown: watch::Sender<bool>,
    events: mpsc::Receiver<HubEvent>,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The next event (connections, refusals); `None` once stopped. Up to
    /// 1024 unread events are kept; later ones are dropped until some are
    /// read.
    pub async fn next_event(&mut self) -> Option<HubEvent> {
        self.events.recv().await
    }

    /// What the hub turned away before peers proved an accepted key, since
    /// it started (these events are counted and logged, not journaled).
    pub fn metrics(&self) -> HubMetrics {
        self.metrics.snapshot()
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What happens to a live connection kept by [`Replica::watch`].
#[derive(Debug)]
#[non_exhaustive]
pub enum WatchEvent {
    /// Connected and proved the peer's key.
    Connected(PublicKey),
    /// The connection ended; a reconnect follows after `retry_in`.
    Disconnected {
        /// Why.
        error: PeerError,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

/// A live connection kept open (and re-opened) in the background, from
/// [`Replica::watch`]. Dropping it stops it.
#[derive(Debug)]
pub struct Watch {
    shutdown: watch::Sender<bool>,
    events: mpsc::Receiver<WatchEvent>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Watch {
    /// The next connection event; `None` once stopped.
    pub async fn next_event(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }

    /// Closes the connection and stops reconnecting, without waiting.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Closes the connection, saving the sync state so the next connection
    /// is incremental, stops reconnecting, and waits until all that is done.
    pub async fn close(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a hub's connections share: counters, the admission of
/// unauthenticated connections, peer slots and the per-peer byte budget.
struct HubShared {
    metrics: Arc<Metrics>,
    admissions: Arc<Admissions>,
    slots: Arc<tokio::sync::Semaphore>,
    budget: Arc<PeerBudget>,
}

impl HubShared {
    fn new(options: &ServeOptions) -> Self {
        HubShared {
            metrics: Arc::default(),
            admissions: Admissions::new(options.max_handshakes, options.max_handshakes_per_address),
            slots: Arc::new(tokio::sync::Semaphore::new(options.max_peers.max(1))),
            budget: PeerBudget::new(
                options.max_pending_bytes_per_peer,
                options.max_connections_per_peer,
            ),
        }
    }
}

fn client_config(options: &PeerOptions, live: bool) -> Config {
    Config {
        max_skew_ms: options.max_clock_skew.as_millis() as i64,
        max_message: options.max_message_bytes,
        filter: options.registries.clone(),
        live,
        poll: options.poll_interval,
        hello_timeout: options.timeout,
        idle_timeout: options.timeout,
        keepalive: live.then_some(options.keepalive),
        limits: options.limits.clone(),
        create: None,
        budget: None,
        metrics: None,
        progress: options.progress.clone(),
    }
}

fn tofu(peer: &Peer) -> Accept {
    match peer.key {
        Some(key) => Accept::Key(key, Some(peer.address.clone())),
        None => Accept::Tofu(peer.address.clone()),
    }
}

async fn connect(address: &str, timeout: Duration) -> Result<TcpStream, PeerError> {
    let err = |reason: String| PeerError::Connect {
        peer: address.to_owned(),
        reason,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| err(format!("no answer within {} s", timeout.as_secs())))?
        .map_err(|e| err(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn link_error(peer: &str, e: frame::LinkError) -> PeerError {
    match e {
        frame::LinkError::Io(reason) => PeerError::Connection {
            peer: peer.to_owned(),
            reason: format!("handshake: {reason}"),
        },
        frame::LinkError::Violation(reason) => PeerError::Refused {
            peer: peer.to_owned(),
            reason: format!("handshake: {reason}"),
        },
    }
}

impl Replica {
    /// Runs one sync round with the replica at `peer` over TCP: both sides
    /// end with each other's changes to every registry they share (or the
    /// ones in [`PeerOptions::registries`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use chittysync::{FieldDef, FieldKind, Peer, Replica, Role, Schema};
    /// let dir = tempfile::tempdir()?;
    /// let hub = Replica::open(dir.path().join("hub.db"))?;
    /// let laptop = Replica::open(dir.path().join("laptop.db"))?;
    /// let services = hub.create_registry(
    ///     "services",
    ///     Schema::new().field(FieldDef::new("name", FieldKind::Text)),
    /// )?;
    /// services.set_member(laptop.public_key(), Role::Writer)?;
    /// services.put(None, [("name", "billing")])?;
    ///
    /// let server = hub.serve("127.0.0.1:0", Default::default()).await?;
    /// let peer = Peer::new(server.local_addr().to_string()).with_key(hub.public_key());
    /// let report = laptop.sync_peer(&peer, &Default::default()).await?;
    /// assert_eq!(report.registries[0].name, "services");
    /// assert_eq!(laptop.registry("services")?.heads(), services.heads());
    /// # Ok(()) }
    /// ```
    pub async fn sync_peer(
        &self,
        peer: &Peer,
        options: &PeerOptions,
    ) -> Result<PeerReport, PeerError> {
        let stream = connect(&peer.address, options.timeout).await?;
        self.initiate(
            stream,
            tofu(peer),
            client_config(options, false),
            peer.address.clone(),
            None,
            None,
        )
        .await
    }

    /// Runs one sync round over any byte stream (an in-memory duplex, a
    /// Unix socket, …) with a peer that proves `key` (any key if `None`).
    pub async fn sync_peer_over<S>(
        &self,
        stream: S,
        key: Option<PublicKey>,
        options: &PeerOptions,
    ) -> Result<PeerReport, PeerError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let accept = key.map_or(Accept::Any, |key| Accept::Key(key, None));
        self.initiate(
            stream,
            accept,
            client_config(options, false),
            "stream".into(),
            None,
            None,
        )
        .await
    }

    async fn initiate<S>(
        &self,
        stream: S,
        accept: Accept,
        cfg: Config,
        address: String,
        shutdown: Option<watch::Receiver<bool>>,
        on_connected: Option<Box<dyn FnOnce(PublicKey) + Send>>,
    ) -> Result<PeerReport, PeerError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let counters = Arc::new(Counters::default());
        let channel = tokio::time::timeout(
            cfg.idle_timeout,
            frame::handshake(
                stream,
                self.identity(),
                true,
                cfg.max_message,
                counters.clone(),
            ),
        )
        .await
        .map_err(|_| PeerError::Connection {
            peer: address.clone(),
            reason: "the handshake timed out".into(),
        })?
        .map_err(|e| link_error(&address, e))?;
        session::run(
            self.clone(),
            channel,
            true,
            accept,
            cfg,
            address,
            counters,
            shutdown,
            on_connected,
        )
        .await
    }

    /// Serves one peer over any byte stream until it disconnects (the
    /// in-memory counterpart of a hub connection).
    pub async fn serve_stream<S>(
        &self,
        stream: S,
        options: &ServeOptions,
    ) -> Result<PeerReport, PeerError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let shared = HubShared::new(options);
        self.respond(stream, options, &shared, "stream".into(), None, None, None)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn respond<S>(
        &self,
        stream: S,
        options: &ServeOptions,
        shared: &HubShared,
        address: String,
        admission: Option<Admission>,
        shutdown: Option<watch::Receiver<bool>>,
        on_connected: Option<Box<dyn FnOnce(PublicKey) + Send>>,
    ) -> Result<PeerReport, PeerError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let counters = Arc::new(Counters::default());
        let handshake = tokio::time::timeout(
            options.handshake_timeout,
            frame::handshake(
                stream,
                self.identity(),
                false,
                options.max_message_bytes,
                counters.clone(),
            ),
        );
        let evicted = async {
            match &admission {
                Some(admission) => admission.evicted().await,
                None => std::future::pending().await,
            }
        };
        let handshake = tokio::select! {
            done = handshake => done,
            _ = evicted => {
                let reason = "still in its handshake when newer connections needed its place".to_owned();
                shared.metrics.turned_away(&address, &reason);
                return Err(PeerError::Connection { peer: address, reason });
            }
        };
        let channel = match handshake {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                let reason = match &e {
                    frame::LinkError::Io(m) | frame::LinkError::Violation(m) => m.clone(),
                };
                shared.metrics.handshake_failed(&address, &reason);
                return Err(link_error(&address, e));
            }
            Err(_) => {
                let reason = format!(
                    "the handshake did not finish within {} s",
                    options.handshake_timeout.as_secs_f64()
                );
                shared.metrics.handshake_failed(&address, &reason);
                return Err(PeerError::Refused {
                    peer: address,
                    reason,
                });
            }
        };
        // Past the handshake: the peer leaves the unauthenticated and needs
        // a peer slot (its key is checked next, before anything else).
        drop(admission);
        let slot = shared.slots.clone().try_acquire_owned();
        let turn_away = slot.is_err().then(|| {
            let reason = format!(
                "the hub already serves its limit of {} peers; try again later",
                options.max_peers
            );
            shared.metrics.turned_away(&address, &reason);
            reason
        });
        let cfg = Config {
            max_skew_ms: options.max_clock_skew.as_millis() as i64,
            max_message: options.max_message_bytes,
            filter: Vec::new(),
            live: true,
            poll: options.poll_interval,
            hello_timeout: options.handshake_timeout,
            idle_timeout: options.idle_timeout,
            keepalive: None,
            limits: options.limits.clone(),
            create: Some(CreatePolicy {
                allow: options.allow_create.clone(),
                any: options.allow_create_any,
                quota: options.create_quota,
            }),
            budget: Some(shared.budget.clone()),
            metrics: Some(shared.metrics.clone()),
            progress: None,
        };
        let accept = Accept::Hub {
            allow: options
                .allow
                .iter()
                .chain(&options.allow_create)
                .copied()
                .collect(),
            any: options.allow_any,
            turn_away,
        };
        let outcome = session::run(
            self.clone(),
            channel,
            false,
            accept,
            cfg,
            address,
            counters,
            shutdown,
            on_connected,
        )
        .await;
        drop(slot);
        outcome
    }

    /// Listens on `address` (`host:port`; port 0 picks a free one) and
    /// serves every peer that connects, live, until the returned [`Hub`] is
    /// shut down or dropped. Each peer sees only registries whose members
    /// include its key; writers may push, readers only pull.
    pub async fn serve(&self, address: &str, options: ServeOptions) -> Result<Hub, PeerError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| PeerError::Listen {
                address: address.to_owned(),
                reason: e.to_string(),
            })?;
        let local = listener.local_addr().map_err(|e| PeerError::Listen {
            address: address.to_owned(),
            reason: e.to_string(),
        })?;
        let (shutdown, stop) = watch::channel(false);
        let (events_tx, events) = mpsc::channel(EVENT_BACKLOG);
        let replica = self.clone();
        let shared = Arc::new(HubShared::new(&options));
        let metrics = shared.metrics.clone();
        let options = Arc::new(options);
        let mut stop_accepting = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop_accepting.changed() => return,
                };
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let address = addr.to_string();
                let admission = match shared.admissions.admit(addr.ip()) {
                    Ok(admission) => admission,
                    Err(reason) => {
                        // Counted and logged at a limited rate only: a
                        // flood of these must not flood the hub's owner.
                        shared.metrics.turned_away(&address, &reason);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let replica = replica.clone();
                let options = options.clone();
                let shared = shared.clone();
                let events = events_tx.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let connected = {
                        let events = events.clone();
                        let address = address.clone();
                        Box::new(move |peer| {
                            let _ = events.try_send(HubEvent::Connected { address, peer });
                        }) as Box<dyn FnOnce(PublicKey) + Send>
                    };
                    // Its own task, so a panic serving one peer is caught
                    // here, logged and reported; the hub serves on.
                    let serving = {
                        let address = address.clone();
                        tokio::spawn(async move {
                            replica
                                .respond(
                                    stream,
                                    &options,
                                    &shared,
                                    address,
                                    Some(admission),
                                    Some(stop),
                                    Some(connected),
                                )
                                .await
                        })
                    };
                    let event = match serving.await {
                        Ok(Ok(report)) => HubEvent::Closed { address, report },
                        Ok(Err(error)) => HubEvent::Failed { address, error },
                        Err(e) => {
                            tracing::error!(peer = %address, error = %e, "serving a peer failed unexpectedly");
                            let error = PeerError::Connection {
                                peer: address.clone(),
                                reason: "internal error while serving this peer; the hub serves on, and the event is logged".into(),
                            };
                            HubEvent::Failed { address, error }
                        }
                    };
                    let _ = events.try_send(event);
                });
            }
        });
        Ok(Hub {
            address: local,
            shutdown,
            events,
            metrics,
        })
    }

    /// Keeps a live connection to `peer` in the background: local changes
    /// are pushed and remote ones pulled as they happen, and a dropped
    /// connection is re-opened with backoff (0.2 s doubling to 10 s).
    /// Needs a Tokio runtime.
    pub fn watch(&self, peer: Peer, options: PeerOptions) -> Watch {
        let (shutdown, stop) = watch::channel(false);
        let (events_tx, events) = mpsc::channel(EVENT_BACKLOG);
        let replica = self.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                if *stop.borrow() {
                    return;
                }
                let started = std::time::Instant::now();
                let outcome = match connect(&peer.address, options.timeout).await {
                    Ok(stream) => {
                        let events = events_tx.clone();
                        replica
                            .initiate(
                                stream,
                                tofu(&peer),
                                client_config(&options, true),
                                peer.address.clone(),
                                Some(stop.clone()),
                                Some(Box::new(move |key| {
                                    let _ = events.try_send(WatchEvent::Connected(key));
                                })),
                            )
                            .await
                    }
                    Err(e) => Err(e),
                };
                if *stop.borrow() {
                    return;
                }
                let error = match outcome {
                    Ok(report) => PeerError::Connection {
                        peer: format!("{} ({})", peer.address, report.peer),
                        reason: "the peer closed the connection".into(),
                    },
                    Err(e) => e,
                };
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(200);
                }
                let _ = events_tx.try_send(WatchEvent::Disconnected {
                    error,
                    retry_in: backoff,
                });
                let mut stop_wait = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop_wait.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        });
        Watch {
            shutdown,
            events,
            task: Some(task),
        }
    }
}
