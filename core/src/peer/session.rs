//! One connection's protocol, the same code on both ends.
//!
//! 1. Each side checks the other's identity binding and key policy, then
//!    sends a signed `Hello` offering the registries it holds whose members
//!    include the peer — or a `Refused` naming why, and closes.
//! 2. The initiator starts Automerge's sync protocol for every registry
//!    either side offered (narrowed to the ones it asked for). Each `Sync`
//!    envelope carries one Automerge sync message and, for every change in
//!    it, the author's key and signature.
//! 3. Every `Sync` is answered by a `Sync` or an `Idle`; the responder
//!    answers an `Idle` with a `Sync` or an `Idle`, and the initiator's
//!    round for a registry is over when it has nothing to send after the
//!    responder's `Idle`. A live session goes on pushing local changes;
//!    a live initiator with nothing to say sends an `Idle` now and then
//!    (for a registry in sync, or for the connection if there is none), so
//!    the hub, which closes silent connections, keeps it.
//!
//! Received changes go through [`Replica::import`]: verified (signatures,
//! actor binding, roles as of each change's dependencies, record rule) and
//! committed atomically, or refused whole. Anything no honest peer sends —
//! a bad envelope signature, a replayed nonce, a stale timestamp, a change
//! that fails verification, a push from a reader — refuses the peer: the
//! event is journaled and the connection closed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use automerge::sync::{ChunkList, Message, SyncDoc};
use automerge::{AutoCommit, ChangeHash};
use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio::sync::{mpsc, watch};

use super::envelope::{self, CONNECTION, Kind, Offer};
use super::frame::{Channel, Counters, LinkError, SecureWriter};
use super::limits::{Metrics, PeerBudget};
use super::peers;
use super::{PeerError, PeerRegistryReport, PeerReport, Progress, SessionLimits};
use crate::clock::now_ms;
use crate::document::Layout;
use crate::error::ImportError;
use crate::exchange::Bundle;
use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::registry::{Registry, Role};
use crate::replica::{RemoteChanges, Replica};
use crate::store::{PinOutcome, StoreError};
use crate::trust::SignedChange;

/// What a registry refusal says, the same whether the registry exists here
/// or not, so a non-member learns nothing about it.
const NOT_SHARED: &str = "this registry is not shared with your key here";
/// What a push to a registry not shared with the peer gets when its key may
/// not bring new registries here (the same whether the registry exists).
const NOT_TAKEN: &str = "this registry is not shared with your key here, and this replica takes no new registries from your key; its operator can allow your key to create registries here";
/// The same, for a key that has brought its quota of new registries.
const OVER_QUOTA: &str = "this registry is not shared with your key here, and your key has brought as many new registries as this replica takes from one key; its operator can raise the quota";
/// How long a closing side waits for the peer to close in turn.
const LINGER: Duration = Duration::from_secs(2);
/// How often a live session saves its sync states.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// How much a closing side reads and discards while it waits.
const DRAIN_BUDGET: usize = 16 << 20;

/// Which peer keys a session accepts.
#[derive(Clone, Debug)]
pub(crate) enum Accept {
    /// Exactly this key (pinned to the address dialled, if any).
    Key(PublicKey, Option<String>),
    /// The key pinned to this address, or, the first time, any key (trust
    /// on first use).
    Tofu(String),
    /// Any key (the caller checks it).
    Any,
    /// A hub: keys that are members of a registry held here, or allowed;
    /// `turn_away` refuses the peer whatever its key (no slot for it).
    Hub {
        allow: Vec<PublicKey>,
        any: bool,
        turn_away: Option<String>,
    },
}

/// Which peers a hub takes new registries from.
#[derive(Clone, Debug)]
pub(crate) struct CreatePolicy {
    pub(crate) allow: Vec<PublicKey>,
    pub(crate) any: bool,
    /// New registries one key may bring, in all.
    pub(crate) quota: u64,
}

/// How a session runs.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) max_skew_ms: i64,
    /// Largest message accepted from the peer.
    pub(crate) max_message: usize,
    /// Names or ids of the registries to sync (initiator; empty: all).
    pub(crate) filter: Vec<String>,
    /// Keep the connection and push local changes as they happen.
    pub(crate) live: bool,
    /// How often a live session looks for local changes.
    pub(crate) poll: Duration,
    /// The peer's hello must come within this time.
    pub(crate) hello_timeout: Duration,
    /// A one-shot round fails, and a responder closes the connection, if
    /// the peer says nothing for this long.
    pub(crate) idle_timeout: Duration,
    /// A live initiator with nothing to send says so this often.
    pub(crate) keepalive: Option<Duration>,
    pub(crate) limits: SessionLimits,
    /// A hub's rule for new registries (`None`: take any that lists both
    /// sides, as an initiator does from the peer it chose to dial).
    pub(crate) create: Option<CreatePolicy>,
    /// A hub's byte budget per peer, over all its connections.
    pub(crate) budget: Option<Arc<PeerBudget>>,
    /// A hub's counters: refusals of peers that proved no accepted key are
    /// counted there instead of journaled.
    pub(crate) metrics: Option<Arc<Metrics>>,
    pub(crate) progress: Option<super::ProgressFn>,
}

/// Why a session stopped early.
#[derive(Debug)]
enum Fault {
    /// The connection broke.
    Io(String),
    /// We refuse the peer: journal, tell it, close.
    Violation(Option<RegistryId>, String),
    /// The peer refused us.
    RefusedByPeer(String),
    /// Our store failed.
    Store(StoreError),
    /// Refuse this registry to the peer (journaled), keep the connection:
    /// the reason journaled, and what the peer is told.
    RefuseRegistry(RegistryId, String, &'static str),
}

impl From<LinkError> for Fault {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Io(m) => Fault::Io(m),
            LinkError::Violation(m) => Fault::Violation(None, format!("it sent {m}")),
        }
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Fault::Store(e)
    }
}

fn violation(registry: RegistryId, reason: impl std::fmt::Display) -> Fault {
    Fault::Violation(Some(registry), format!("registry {registry}: {reason}"))
}

/// One registry being synced on this connection.
struct Reg {
    id: RegistryId,
    name: String,
    handle: Option<Registry>,
    /// Stands in for the document while this replica does not hold it.
    scratch: AutoCommit,
    state: automerge::sync::State,
    /// Received changes waiting for dependencies still in flight.
    pending: Vec<SignedChange>,
    /// How many stored attestations were sent to the peer.
    attestations_sent: usize,
    /// Hashes to ask for beyond what Automerge asks for.
    need: Vec<ChangeHash>,
    done: bool,
    refused: Option<String>,
    changes_in: usize,
    changes_out: usize,
    /// Heads when we last generated a message (live pushes compare).
    last_heads: Vec<ChangeHash>,
    /// Held here, but the peer is not a member: answered as if absent.
    hidden: bool,
    /// Bytes of `pending`, counted against the session's and the peer's
    /// budgets.
    held: usize,
    /// How many of `pending` are counted in the session's total.
    counted: usize,
}

impl Reg {
    fn new(id: RegistryId, name: String, handle: Option<Registry>) -> Self {
        Reg {
            id,
            name,
            handle,
            scratch: AutoCommit::new(),
            state: automerge::sync::State::new(),
            pending: Vec::new(),
            need: Vec::new(),
            done: false,
            refused: None,
            changes_in: 0,
            changes_out: 0,
            last_heads: Vec::new(),
            hidden: false,
            held: 0,
            counted: 0,
            attestations_sent: 0,
        }
    }
}

struct Session<W> {
    replica: Replica,
    me: PublicKey,
    peer: PublicKey,
    address: String,
    initiator: bool,
    cfg: Config,
    writer: SecureWriter<WriteHalf<W>>,
    counters: Arc<Counters>,
    regs: BTreeMap<RegistryId, Reg>,
    /// Registries offered by the peer.
    offered: Vec<Offer>,
    /// When the sync states were last saved.
    saved: Instant,
    /// When the peer last said anything.
    heard: Instant,
    /// When we last sent anything.
    said: Instant,
    /// Bytes and changes held back over all registries.
    held_bytes: usize,
    held_changes: usize,
    /// New registries the peer brought on this connection.
    created: u64,
}

/// Runs a session over an established channel until the round ends (or,
/// live, until the connection closes or `shutdown` fires).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<S>(
    replica: Replica,
    channel: Channel<S>,
    initiator: bool,
    accept: Accept,
    cfg: Config,
    address: String,
    counters: Arc<Counters>,
    shutdown: Option<watch::Receiver<bool>>,
    on_connected: Option<Box<dyn FnOnce(PublicKey) + Send>>,
) -> Result<PeerReport, PeerError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let started = Instant::now();
    let Channel {
        reader,
        mut writer,
        peer,
        claimed,
    } = channel;
    let me = replica.public_key();
    let proved = peer.is_ok();
    let verdict = match &accept {
        Accept::Hub {
            turn_away: Some(reason),
            ..
        } => Err(reason.clone()),
        _ => peer.and_then(|key| check_key(&replica, &accept, &key).map(|_| key)),
    };
    let accepted = verdict.is_ok();
    let mut connected = None;
    let verdict = verdict
        .and_then(|key| pin(&replica, &accept, key))
        .and_then(|key| match &cfg.budget {
            Some(budget) => {
                connected = Some(budget.connect(&key).map_err(|limit| {
                    format!(
                        "it already has {limit} connections open here (the limit per peer); close one, or wait for one to end"
                    )
                })?);
                Ok(key)
            }
            None => Ok(key),
        });
    let peer = match verdict {
        Ok(key) => key,
        Err(reason) => {
            let who = hex::encode(claimed);
            match &cfg.metrics {
                // A hub journals nothing about connections that proved no
                // key it accepts: anyone can open those, so they are only
                // counted, and logged at a limited rate.
                Some(metrics) if !accepted => match &accept {
                    Accept::Hub {
                        turn_away: Some(_), ..
                    } => {}
                    _ if proved => metrics.key_refused(&address, &reason),
                    _ => metrics.handshake_failed(&address, &reason),
                },
                _ => {
                    tracing::warn!(peer = %address, key = %who, %reason, "refused a peer");
                    peers::journal_refusal(&replica, None, &format!("{address} ({who})"), &reason);
                }
            }
            let env = envelope::seal(
                replica.identity(),
                &claimed,
                &CONNECTION,
                Kind::Refused,
                reason.as_bytes(),
            );
            let _ = writer.send(&env).await;
            writer.close().await;
            // Closing with the peer's bytes unread would reset the
            // connection and could lose the refusal: drain until it closes.
            let mut reader = reader;
            let _ = tokio::time::timeout(LINGER, reader.drain(DRAIN_BUDGET)).await;
            return Err(PeerError::Refused {
                peer: address,
                reason,
            });
        }
    };
    let (tx, rx) = mpsc::channel(16);
    let reading = tokio::spawn(async move {
        let mut reader = reader;
        loop {
            let got = reader.recv().await;
            let stop = !matches!(got, Ok(Some(_)));
            if tx.send(got).await.is_err() || stop {
                break;
            }
        }
        // The session may be refusing the peer: see `SecureReader::drain`.
        let _ = tokio::time::timeout(LINGER, reader.drain(DRAIN_BUDGET)).await;
    });
    if let Some(f) = on_connected {
        f(peer);
    }
    let mut session = Session {
        replica,
        me,
        peer,
        address,
        initiator,
        cfg,
        writer,
        counters,
        regs: BTreeMap::new(),
        offered: Vec::new(),
        saved: Instant::now(),
        heard: Instant::now(),
        said: Instant::now(),
        held_bytes: 0,
        held_changes: 0,
        created: 0,
    };
    let mut rx = rx;
    let outcome = session.drive(&mut rx, shutdown).await;
    session.save_states();
    session.release_all();
    let who = format!("{} ({})", session.address, session.peer);
    let result = match outcome {
        Ok(()) => Ok(session.report(started)),
        Err(Fault::Io(reason)) => Err(PeerError::Connection { peer: who, reason }),
        Err(Fault::Store(e)) => Err(PeerError::Store(e)),
        Err(Fault::RefusedByPeer(reason)) => {
            tracing::warn!(peer = %who, %reason, "the peer refused this replica");
            Err(PeerError::RefusedByPeer { peer: who, reason })
        }
        Err(Fault::RefuseRegistry(registry, reason, _)) => {
            refuse_peer(&mut session, Some(registry), reason).await
        }
        Err(Fault::Violation(registry, reason)) => {
            refuse_peer(&mut session, registry, reason).await
        }
    };
    session.writer.close().await;
    // Closing with the peer's bytes unread would reset the connection and
    // could lose what we last said (a refusal): drain until it closes.
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(Some(_))) = rx.recv().await {}
    })
    .await;
    reading.abort();
    drop(connected);
    result
}

/// Journals why we refuse the peer, tells it, and closes.
async fn refuse_peer<W: AsyncRead + AsyncWrite + Send + 'static>(
    session: &mut Session<W>,
    registry: Option<RegistryId>,
    reason: String,
) -> Result<PeerReport, PeerError> {
    let who = format!("{} ({})", session.address, session.peer);
    tracing::warn!(peer = %who, %reason, "refused a peer");
    peers::journal_refusal(&session.replica, registry.as_ref(), &who, &reason);
    // Best effort: tell the peer why before closing.
    let _ = session
        .send(&CONNECTION, Kind::Refused, reason.as_bytes())
        .await;
    Err(PeerError::Refused { peer: who, reason })
}

/// A reason the peer gave, made safe to print: at most 500 characters, no
/// control characters (no terminal escapes from a hostile peer).
fn said(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload)
        .chars()
        .filter(|c| !c.is_control())
        .take(500)
        .collect()
}

/// Applies the key policy; `Err` says why the key is refused.
fn check_key(replica: &Replica, accept: &Accept, key: &PublicKey) -> Result<(), String> {
    match accept {
        Accept::Any => Ok(()),
        Accept::Key(expected, _) if expected == key => Ok(()),
        Accept::Key(expected, _) => Err(format!(
            "it proved key {key}, but key {expected} was expected; check the peer's public key"
        )),
        Accept::Tofu(address) => match peers::key_at(replica, address) {
            Ok(Some(pinned)) if pinned != *key => Err(format!(
                "it proved key {key}, but {address} was pinned to key {pinned} on first use; if the peer's key really changed, sync with its new key given explicitly"
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("the pinned key could not be read: {e}")),
        },
        Accept::Hub { allow, any, .. } => {
            if *any || allow.contains(key) {
                return Ok(());
            }
            let member = replica
                .registries()
                .map_err(|e| e.to_string())?
                .iter()
                .any(|r| {
                    replica
                        .registry_by_id(r.id)
                        .map(|reg| reg.members().iter().any(|m| m.key == *key))
                        .unwrap_or(false)
                });
            if member {
                Ok(())
            } else {
                Err(format!(
                    "key {key} is not a member of any registry served here; an admin can add it as a member, or the hub can allow it"
                ))
            }
        }
    }
}

/// Records the peer's key once accepted and, for an address we dialled,
/// pins it there (trust on first use, or the key given). `Err` says why
/// the key is refused after all: another key was pinned to the address
/// meanwhile.
fn pin(replica: &Replica, accept: &Accept, key: PublicKey) -> Result<PublicKey, String> {
    let (address, given) = match accept {
        Accept::Key(_, address) => (address.as_deref(), true),
        Accept::Tofu(address) => (Some(address.as_str()), false),
        Accept::Any | Accept::Hub { .. } => (None, false),
    };
    match peers::remember_peer(replica, &key, address, given) {
        Ok(PinOutcome::Conflict(pinned)) => Err(format!(
            "it proved key {key}, but {} was pinned to key {pinned} on first use; if the peer's key really changed, sync with its new key given explicitly",
            address.unwrap_or_default()
        )),
        Ok(_) => Ok(key),
        // Trust on first use cannot go ahead without its pin.
        Err(e) if !given && address.is_some() => {
            Err(format!("the peer's key could not be pinned: {e}"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not record the peer");
            Ok(key)
        }
    }
}

impl<W: AsyncRead + AsyncWrite + Send + 'static> Session<W> {
    async fn send(&mut self, registry: &[u8; 16], kind: Kind, payload: &[u8]) -> Result<(), Fault> {
        let env = envelope::seal(
            self.replica.identity(),
            self.peer.as_bytes(),
            registry,
            kind,
            payload,
        );
        self.writer.send(&env).await?;
        self.said = Instant::now();
        Ok(())
    }

    fn offers(&self) -> Result<Vec<Offer>, Fault> {
        let mut out = Vec::new();
        for info in self.replica.registries()? {
            if self.initiator && !self.wanted(&info.id, &info.name) {
                continue;
            }
            let Ok(reg) = self.replica.registry_by_id(info.id) else {
                continue;
            };
            if reg.members().iter().any(|m| m.key == self.peer) {
                out.push(Offer {
                    id: info.id,
                    name: info.name,
                });
            }
        }
        Ok(out)
    }

    fn wanted(&self, id: &RegistryId, name: &str) -> bool {
        self.cfg.filter.is_empty()
            || self
                .cfg
                .filter
                .iter()
                .any(|f| f == name || *f == id.to_string())
    }

    async fn drive(
        &mut self,
        rx: &mut mpsc::Receiver<Result<Option<Vec<u8>>, LinkError>>,
        mut shutdown: Option<watch::Receiver<bool>>,
    ) -> Result<(), Fault> {
        let _ = peers::prune_nonces(&self.replica, now_ms() - 2 * self.cfg.max_skew_ms);
        let mine = self.offers()?;
        // If the peer refused us it may have closed already, so our hello
        // fails to send: its refusal, read next, says why.
        let said_hello = self
            .send(&CONNECTION, Kind::Hello, &envelope::encode_hello(&mine))
            .await;
        // The peer's hello (or its refusal) comes first, and soon: a peer
        // that connects and says nothing does not hold the connection.
        let hello = tokio::time::timeout(self.cfg.hello_timeout, self.next(rx))
            .await
            .unwrap_or_else(|_| {
                Err(Fault::Violation(
                    None,
                    format!(
                        "it said no hello within {} s",
                        self.cfg.hello_timeout.as_secs_f64()
                    ),
                ))
            });
        let first = match hello {
            Ok(Some(first)) => first,
            Ok(None) | Err(Fault::Io(_)) if said_hello.is_err() => {
                return Err(said_hello.expect_err("checked"));
            }
            Ok(None) => {
                return Err(Fault::Io(
                    "the peer closed the connection before saying hello".into(),
                ));
            }
            Err(e) => return Err(e),
        };
        self.heard = Instant::now();
        let env = self.check(&first)?;
        match (env.kind, env.registry()) {
            (Kind::Hello, None) => {
                self.offered = envelope::decode_hello(&env.payload)
                    .map_err(|e| Fault::Violation(None, format!("it sent a bad hello: {e}")))?;
            }
            (Kind::Refused, None) => {
                return Err(Fault::RefusedByPeer(said(&env.payload)));
            }
            _ if said_hello.is_err() => return said_hello,
            _ => {
                return Err(Fault::Violation(
                    None,
                    "its first message was not a hello".into(),
                ));
            }
        }
        if self.initiator {
            let mut start: Vec<(RegistryId, String)> =
                mine.iter().map(|o| (o.id, o.name.clone())).collect();
            for o in &self.offered {
                if self.wanted(&o.id, &o.name) && !start.iter().any(|s| s.0 == o.id) {
                    start.push((o.id, o.name.clone()));
                }
            }
            if start.len() > self.cfg.limits.max_registries {
                return Err(Fault::Violation(
                    None,
                    format!(
                        "it offered {} registries, over this replica's limit of {} per connection; sync fewer registries at once",
                        start.len(),
                        self.cfg.limits.max_registries
                    ),
                ));
            }
            for (id, name) in start {
                if let Some(reg) = self.activate(id, name)? {
                    self.regs.insert(id, reg);
                    self.reply(id, true).await?;
                }
            }
        }
        let mut ticker = tokio::time::interval(self.cfg.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.initiator
                && !self.cfg.live
                && self.regs.values().all(|r| r.done || r.refused.is_some())
            {
                return Ok(());
            }
            let live = self.cfg.live || !self.initiator;
            // A responder closes a connection whose peer stays silent (a
            // live initiator with nothing to send says so now and then).
            let silent = tokio::time::Instant::from_std(self.heard + self.cfg.idle_timeout);
            tokio::select! {
                got = self.next(rx) => match got? {
                    Some(bytes) => {
                        self.heard = Instant::now();
                        self.on_envelope(&bytes).await?
                    }
                    None if self.initiator && !self.cfg.live => {
                        return Err(Fault::Io("the peer closed the connection before the round finished".into()));
                    }
                    None => return Ok(()),
                },
                _ = ticker.tick(), if live => self.push_local().await?,
                _ = tokio::time::sleep_until(silent), if !self.initiator => {
                    return Err(Fault::Violation(
                        None,
                        format!(
                            "it said nothing for {} s; silent connections are closed (a live peer says it is still there every so often)",
                            self.cfg.idle_timeout.as_secs_f64()
                        ),
                    ));
                }
                _ = stopped(&mut shutdown) => return Ok(()),
            }
        }
    }

    /// The next message, `None` at the end of the stream.
    async fn next(
        &self,
        rx: &mut mpsc::Receiver<Result<Option<Vec<u8>>, LinkError>>,
    ) -> Result<Option<Vec<u8>>, Fault> {
        let got = if self.initiator && !self.cfg.live {
            tokio::time::timeout(self.cfg.idle_timeout, rx.recv())
                .await
                .map_err(|_| {
                    Fault::Io(format!(
                        "the peer sent nothing for {} s",
                        self.cfg.idle_timeout.as_secs()
                    ))
                })?
        } else {
            rx.recv().await
        };
        match got {
            None => Ok(None),
            Some(r) => Ok(r?),
        }
    }

    /// Opens and checks an envelope: signature, sender, recipient, time, nonce.
    fn check(&self, bytes: &[u8]) -> Result<envelope::Envelope, Fault> {
        let env = envelope::open(bytes)
            .map_err(|e| Fault::Violation(None, format!("it sent a bad envelope: {e}")))?;
        let registry = env.registry();
        let refuse = |reason: String| Fault::Violation(registry, reason);
        if env.sender != self.peer {
            return Err(refuse(format!(
                "it sent an envelope signed by key {}, not its own",
                env.sender
            )));
        }
        if env.recipient != *self.me.as_bytes() {
            return Err(refuse(
                "it sent an envelope addressed to another replica".into(),
            ));
        }
        let skew = (now_ms() - env.timestamp).abs();
        if skew > self.cfg.max_skew_ms {
            return Err(refuse(format!(
                "it sent a stale envelope ({} s off this replica's clock, over the allowed {} s); check both clocks",
                skew / 1000,
                self.cfg.max_skew_ms / 1000
            )));
        }
        if !peers::remember_nonce(&self.replica, &self.peer, &env.nonce, env.timestamp)? {
            return Err(refuse(
                "it replayed an envelope (its nonce was seen before)".into(),
            ));
        }
        Ok(env)
    }

    async fn on_envelope(&mut self, bytes: &[u8]) -> Result<(), Fault> {
        let env = self.check(bytes)?;
        let Some(id) = env.registry() else {
            return match env.kind {
                Kind::Refused => Err(Fault::RefusedByPeer(said(&env.payload))),
                // The peer is still there.
                Kind::Idle => Ok(()),
                _ => Err(Fault::Violation(
                    None,
                    format!("it sent a {:?} envelope for no registry", env.kind),
                )),
            };
        };
        if !self.regs.contains_key(&id) {
            if self.initiator || env.kind != Kind::Sync {
                // We never started it; a late reply to a refused one is moot.
                return Ok(());
            }
            let name = self
                .offered
                .iter()
                .find(|o| o.id == id)
                .map_or_else(String::new, |o| o.name.clone());
            match self.activate(id, name)? {
                Some(reg) => {
                    self.admit_registry(&reg)?;
                    self.regs.insert(id, reg);
                }
                None => return Ok(()),
            }
        }
        let reg = self.regs.get_mut(&id).expect("activated above");
        if reg.refused.is_some() {
            return Ok(());
        }
        match env.kind {
            Kind::Refused => {
                let reason = said(&env.payload);
                tracing::warn!(peer = %self.address, registry = %id, %reason, "the peer refused a registry");
                reg.refused = Some(reason);
                Ok(())
            }
            Kind::Idle => {
                if !self.reply(id, false).await? && self.initiator {
                    self.regs.get_mut(&id).expect("present").done = true;
                }
                Ok(())
            }
            Kind::Sync => {
                self.regs.get_mut(&id).expect("present").done = false;
                let received = self.receive(id, &env.payload);
                self.progress();
                match received {
                    Err(Fault::RefuseRegistry(id, why, told)) => {
                        self.refuse_registry(id, &why, told).await
                    }
                    Err(e) => Err(e),
                    Ok(()) => self.reply(id, true).await.map(drop),
                }
            }
            Kind::Attest => self.receive_attestations(id, &env.payload),
            Kind::Hello => Err(violation(id, "it sent a second hello")),
        }
    }

    /// Starts syncing a registry. As initiator, `None` when the peer may not
    /// see it; as responder, a registry the peer may not see is answered
    /// as if it were not here (see `Reg::hidden`).
    fn activate(&mut self, id: RegistryId, name: String) -> Result<Option<Reg>, Fault> {
        let handle = match self.replica.registry_by_id(id) {
            Ok(reg) => Some(reg),
            Err(crate::error::LookupError::NotFound { .. }) => None,
            Err(crate::error::LookupError::Store(e @ StoreError::Corrupt { .. })) => {
                // Its data does not load here (the load logged and journaled
                // why): answer as if it were absent, as to a non-member, so
                // the peer learns nothing and other registries sync on.
                tracing::warn!(peer = %self.address, registry = %id, error = %e, "a peer asked for a registry that does not load");
                let mut reg = Reg::new(id, String::new(), None);
                reg.hidden = true;
                return Ok(Some(reg));
            }
            Err(crate::error::LookupError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(Fault::Io(e.to_string())),
        };
        let mut reg = Reg::new(id, name, handle);
        if let Some(handle) = &reg.handle {
            reg.name = handle.name();
            if self.peer_role(handle).is_none() {
                if self.initiator {
                    // Never send a registry to a key that is not a member.
                    return Ok(None);
                }
                // Answer as if the registry were not here, so a non-member
                // learns nothing (nor from the time taken: nothing is
                // journaled here, as for an absent one), and refuse
                // whatever it pushes.
                tracing::debug!(peer = %self.address, registry = %id, "a non-member asked for a registry");
                reg.handle = None;
                reg.hidden = true;
                reg.name = String::new();
                return Ok(Some(reg));
            }
            if let Some(saved) = peers::sync_state(&self.replica, &self.peer, &id)?
                && let Ok(state) = automerge::sync::State::decode(&saved)
            {
                reg.state = state;
            }
        }
        Ok(Some(reg))
    }

    fn peer_role(&self, handle: &Registry) -> Option<Role> {
        let peer = self.peer;
        handle.with_state(|st, _| st.role_now(&peer))
    }

    /// Refuses a registry to the peer without closing the connection.
    async fn refuse_registry(
        &mut self,
        id: RegistryId,
        journal: &str,
        told: &str,
    ) -> Result<(), Fault> {
        tracing::warn!(peer = %self.address, registry = %id, reason = journal, "refused a registry");
        peers::journal_refusal(
            &self.replica,
            Some(&id),
            &format!("{} ({})", self.address, self.peer),
            journal,
        );
        if let Some(mut reg) = self.regs.remove(&id) {
            reg.refused = Some(told.into());
            reg.pending.clear();
            let _ = self.hold(&mut reg);
            self.regs.insert(id, reg);
        }
        self.send(id.as_bytes(), Kind::Refused, told.as_bytes())
            .await
    }

    /// Checks that one more registry fits the connection's limits.
    fn admit_registry(&self, reg: &Reg) -> Result<(), Fault> {
        let limits = &self.cfg.limits;
        if self.regs.len() >= limits.max_registries {
            return Err(Fault::Violation(
                None,
                format!(
                    "it asked for more than {} registries on one connection (this replica's limit); sync fewer registries per connection",
                    limits.max_registries
                ),
            ));
        }
        let unshared = self.regs.values().filter(|r| r.handle.is_none()).count();
        if reg.handle.is_none() && unshared >= limits.max_unshared_registries {
            return Err(Fault::Violation(
                None,
                format!(
                    "it asked about more than {} registries not shared with it here on one connection (this replica's limit)",
                    limits.max_unshared_registries
                ),
            ));
        }
        Ok(())
    }

    /// Counts what `reg` holds back (its pending changes) against the
    /// connection's and the peer's budgets; `Err` refuses the peer when
    /// that goes over either.
    fn hold(&mut self, reg: &mut Reg) -> Result<(), Fault> {
        let bytes: usize = reg.pending.iter().map(|c| c.change.raw_bytes().len()).sum();
        let held_changes = self.held_changes - reg.counted + reg.pending.len();
        let held_bytes = self.held_bytes - reg.held + bytes;
        let limits = &self.cfg.limits;
        let over = |what: String| {
            violation(
                reg.id,
                format!("it sent {what} whose dependencies never came"),
            )
        };
        if bytes > reg.held
            && (held_bytes > limits.max_pending_bytes || held_changes > limits.max_pending_changes)
        {
            return Err(over(format!(
                "{held_changes} changes ({held_bytes} bytes), over this replica's limit of {} changes or {} bytes per connection,",
                limits.max_pending_changes, limits.max_pending_bytes
            )));
        }
        if let Some(budget) = &self.cfg.budget
            && let Err(limit) = budget.adjust(&self.peer, reg.held, bytes)
        {
            return Err(over(format!(
                "more changes than this replica holds for one peer ({limit} bytes over all its connections)"
            )));
        }
        self.held_bytes = held_bytes;
        self.held_changes = held_changes;
        reg.held = bytes;
        reg.counted = reg.pending.len();
        Ok(())
    }

    /// Gives back everything the session held against the peer's budget.
    fn release_all(&mut self) {
        if let Some(budget) = &self.cfg.budget {
            let held: usize = self.regs.values().map(|r| r.held).sum();
            let _ = budget.adjust(&self.peer, held, 0);
        }
        for reg in self.regs.values_mut() {
            reg.held = 0;
            reg.counted = 0;
        }
        self.held_bytes = 0;
        self.held_changes = 0;
    }

    /// Whether the peer may bring a registry new to this replica: always
    /// as an initiator (it chose the peer); on a hub, if its key is allowed
    /// to create here and within its quota. `Err` is what to journal and
    /// what to tell the peer. The answer depends on the key alone, never on
    /// whether a registry exists here, so it tells the peer nothing.
    fn may_create(&self) -> Result<(), (String, &'static str)> {
        let Some(policy) = &self.cfg.create else {
            return Ok(());
        };
        if !policy.any && !policy.allow.contains(&self.peer) {
            return Err((
                "not a member: it pushed changes to a registry not shared with it here, and its key may not create registries here".into(),
                NOT_TAKEN,
            ));
        }
        let brought = peers::registries_from(&self.replica, &self.peer)
            .unwrap_or(u64::MAX)
            .max(self.created);
        if brought >= policy.quota {
            return Err((
                format!(
                    "not a member: it pushed changes to a registry not shared with it here, and its key has brought its quota of {} new registries here",
                    policy.quota
                ),
                OVER_QUOTA,
            ));
        }
        Ok(())
    }

    /// Handles a received sync message: verifies and imports its changes,
    /// then lets Automerge update the sync state.
    fn receive(&mut self, id: RegistryId, payload: &[u8]) -> Result<(), Fault> {
        let (message, sigs) = envelope::decode_sync(payload).map_err(|e| violation(id, e))?;
        let mut message = Message::decode(&message)
            .map_err(|e| violation(id, format!("a sync message that does not decode: {e}")))?;
        let changes = envelope::signed_changes(message.changes.iter(), &sigs)
            .map_err(|e| violation(id, e))?;
        message.changes = ChunkList::empty();
        let mut reg = self.regs.remove(&id).expect("present");
        let result = self.receive_into(&mut reg, changes, message);
        self.regs.insert(id, reg);
        result
    }

    fn receive_into(
        &mut self,
        reg: &mut Reg,
        changes: Vec<SignedChange>,
        message: Message,
    ) -> Result<(), Fault> {
        let id = reg.id;
        if !changes.is_empty() {
            if let Some(handle) = &reg.handle {
                match self.peer_role(handle) {
                    None => {
                        return Err(Fault::RefuseRegistry(
                            id,
                            "not a member: it pushed changes to a registry it may not access"
                                .into(),
                            NOT_SHARED,
                        ));
                    }
                    Some(role) if !self.initiator && !role.can_write() => {
                        return Err(violation(
                            id,
                            format!(
                                "it pushed changes but is a {role} here: readers may pull but not push"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            } else {
                // Absent here or hidden from the peer, alike: only a key
                // that may bring new registries gets further.
                self.may_create()
                    .map_err(|(why, told)| Fault::RefuseRegistry(id, why, told))?;
            }
            reg.pending.extend(changes);
            self.import_pending(reg)?;
        }
        let received = match &reg.handle {
            Some(handle) => handle
                .with_state(|st, _| st.doc.sync().receive_sync_message(&mut reg.state, message)),
            None => reg
                .scratch
                .sync()
                .receive_sync_message(&mut reg.state, message),
        };
        received.map_err(|e| violation(id, format!("a sync message that does not apply: {e}")))
    }

    /// Imports the pending changes once none lacks a dependency.
    fn import_pending(&mut self, reg: &mut Reg) -> Result<(), Fault> {
        let id = reg.id;
        let batch: HashSet<ChangeHash> = reg.pending.iter().map(SignedChange::hash).collect();
        let deps: Vec<ChangeHash> = reg
            .pending
            .iter()
            .flat_map(|c| c.change.deps().iter().copied())
            .filter(|d| !batch.contains(d))
            .collect();
        let mut missing: Vec<ChangeHash> = match &reg.handle {
            Some(handle) => handle.with_state(|st, _| {
                deps.into_iter()
                    .filter(|d| st.doc.get_change_by_hash(d).is_none())
                    .collect()
            }),
            None => deps,
        };
        if !missing.is_empty() {
            // A bloom-filter false positive on the peer's side: ask for
            // the missing changes by hash and keep these until they come,
            // within the connection's and the peer's budgets.
            self.hold(reg)?;
            missing.sort();
            missing.dedup();
            reg.need = missing;
            return Ok(());
        }
        if reg.hidden {
            return Err(Fault::RefuseRegistry(
                id,
                "not a member: it pushed changes to a registry it may not access".into(),
                NOT_SHARED,
            ));
        }
        let new = reg.handle.is_none();
        if new {
            self.check_new_registry(reg)?;
        }
        let bundle = Bundle::new(id, std::mem::take(&mut reg.pending), Vec::new());
        self.hold(reg)?;
        match self.replica.import(bundle) {
            Ok(report) => {
                reg.need.clear();
                reg.changes_in += report.applied;
                if new {
                    self.created += 1;
                    if let Err(e) = peers::record_registry_origin(&self.replica, &id, &self.peer) {
                        tracing::warn!(error = %e, registry = %id, "could not record which peer brought a registry");
                    }
                    reg.handle = Some(
                        self.replica
                            .registry_by_id(id)
                            .map_err(|e| Fault::Io(e.to_string()))?,
                    );
                    reg.scratch = AutoCommit::new();
                }
                reg.name = report.name.clone();
                if report.applied > 0 {
                    let heads = reg.handle.as_ref().map(Registry::heads).unwrap_or_default();
                    self.replica.announce_remote_changes(RemoteChanges {
                        registry: id,
                        name: report.name,
                        peer: self.peer,
                        applied: report.applied,
                        heads,
                    });
                }
                Ok(())
            }
            Err(ImportError::Store(e)) => Err(Fault::Store(e)),
            Err(e) => Err(violation(
                id,
                format!("it sent changes that were refused: {e}"),
            )),
        }
    }

    /// Before a registry new to this replica is stored: both this replica
    /// and the peer must be members of it, and a pushing peer a writer.
    fn check_new_registry(&mut self, reg: &mut Reg) -> Result<(), Fault> {
        let id = reg.id;
        let mut doc = AutoCommit::new();
        doc.apply_changes(reg.pending.iter().map(|c| c.change.clone()))
            .map_err(|e| violation(id, format!("changes that do not apply: {e}")))?;
        let members = Layout::find(&doc)
            .map(|l| l.members(&doc, None))
            .unwrap_or_default();
        let role = |key: &PublicKey| members.iter().find(|(k, _)| k == key).map(|(_, r)| *r);
        let allowed = role(&self.me).is_some()
            && match role(&self.peer) {
                Some(r) => self.initiator || r.can_write(),
                None => false,
            };
        if allowed {
            Ok(())
        } else {
            Err(Fault::RefuseRegistry(
                id,
                "not a member: it sent a registry that does not list both replicas as members (writers to push)"
                    .into(),
                NOT_SHARED,
            ))
        }
    }

    /// Generates and sends our next message for a registry: a `Sync`, or,
    /// when there is nothing to say and `idle` is set, an `Idle`. Returns
    /// whether a `Sync` was sent.
    async fn reply(&mut self, id: RegistryId, answer: bool) -> Result<bool, Fault> {
        let Some(mut reg) = self.regs.remove(&id) else {
            return Ok(false);
        };
        let generated = self.generate(&mut reg);
        let refused = reg.refused.is_some();
        self.regs.insert(id, reg);
        if refused {
            return Ok(false);
        }
        match generated? {
            Generated::Messages(parts) => {
                for (payload, n) in parts {
                    self.send(id.as_bytes(), Kind::Sync, &payload).await?;
                    self.regs.get_mut(&id).expect("present").changes_out += n;
                    self.progress();
                }
                Ok(true)
            }
            Generated::Refuse(why) => {
                self.refuse_registry(id, &why, NOT_SHARED).await?;
                Ok(false)
            }
            Generated::Nothing => {
                // In step with the peer: share attestations it has not had.
                self.send_attestations(id).await?;
                if answer || !self.initiator {
                    self.send(id.as_bytes(), Kind::Idle, &[]).await?;
                }
                Ok(false)
            }
        }
    }

    fn generate(&mut self, reg: &mut Reg) -> Result<Generated, Fault> {
        let id = reg.id;
        // Whole-document (v2) messages would carry changes without their
        // signatures: keep to messages of individual changes.
        reg.state.their_capabilities = None;
        let peer = self.peer;
        let responder = !self.initiator;
        let out = match &reg.handle {
            Some(handle) => handle.with_state(|st, store| {
                let role = st.role_now(&peer);
                let Some(role) = role else {
                    return Ok(Err("not a member: membership ended during the session"));
                };
                // A hub takes no changes from readers; Automerge tells
                // them so (read-only flag) and they send none.
                reg.state.read_only = responder && !role.can_write();
                reg.last_heads = st.doc.get_heads();
                let Some(message) = st.doc.sync().generate_sync_message(&mut reg.state) else {
                    return Ok(Ok(None));
                };
                let sigs = signatures_of(&id, &message, store)?;
                Ok(Ok(Some((message, sigs))))
            }),
            None => Ok(Ok(reg
                .scratch
                .sync()
                .generate_sync_message(&mut reg.state)
                .map(|m| (m, Vec::new())))),
        };
        let generated = match out {
            Err(e) => return Err(Fault::Store(e)),
            Ok(Err(why)) => return Ok(Generated::Refuse(why.into())),
            Ok(Ok(g)) => g,
        };
        let generated = match (generated, reg.need.is_empty()) {
            (g, true) => g,
            (Some((mut m, sigs)), false) => {
                m.need.extend(reg.need.iter().copied());
                m.need.sort();
                m.need.dedup();
                Some((m, sigs))
            }
            (None, false) => {
                let heads = match &reg.handle {
                    Some(h) => h.heads(),
                    None => Vec::new(),
                };
                let mut m = Message {
                    heads,
                    need: reg.need.clone(),
                    have: Vec::new(),
                    changes: ChunkList::empty(),
                    flags: None,
                    version: automerge::sync::MessageVersion::V1,
                };
                m.need.sort();
                Some((m, Vec::new()))
            }
        };
        Ok(match generated {
            Some((message, sigs)) => {
                Generated::Messages(split(message, &sigs, self.cfg.max_message / 4))
            }
            None => Generated::Nothing,
        })
    }

    /// Sends the registry's stored attestations if there are new ones
    /// (they live beside the document, so Automerge does not carry them).
    async fn send_attestations(&mut self, id: RegistryId) -> Result<(), Fault> {
        let Some(reg) = self.regs.get(&id) else {
            return Ok(());
        };
        let Some(handle) = reg.handle.as_ref().filter(|_| !reg.hidden) else {
            return Ok(());
        };
        let attestations = handle.attestations()?;
        if attestations.len() <= reg.attestations_sent {
            return Ok(());
        }
        let count = attestations.len();
        let bundle = Bundle::new(id, Vec::new(), attestations);
        self.send(id.as_bytes(), Kind::Attest, &bundle.to_bytes())
            .await?;
        self.regs.get_mut(&id).expect("present").attestations_sent = count;
        Ok(())
    }

    /// Stores attestations from the peer (each verified; a bad one refuses
    /// the peer).
    fn receive_attestations(&mut self, id: RegistryId, payload: &[u8]) -> Result<(), Fault> {
        let reg = self.regs.get(&id).expect("present");
        if reg.hidden || reg.handle.is_none() {
            return Ok(());
        }
        let bundle = Bundle::from_bytes(payload)
            .map_err(|e| violation(id, format!("attestations that do not decode: {e}")))?;
        if bundle.registry() != id || !bundle.is_empty() {
            return Err(violation(
                id,
                "an attestation message for another registry, or with changes",
            ));
        }
        match self.replica.import(bundle) {
            Ok(_) => Ok(()),
            Err(ImportError::Store(e)) => Err(Fault::Store(e)),
            Err(e) => Err(violation(
                id,
                format!("it sent attestations that were refused: {e}"),
            )),
        }
    }

    /// Live sessions: push what changed locally since the last message,
    /// and now and then save the sync states (a live session may end by
    /// the process being killed, without a chance to save them).
    async fn push_local(&mut self) -> Result<(), Fault> {
        if self.saved.elapsed() >= SAVE_EVERY {
            self.saved = Instant::now();
            self.persist(false);
            // Nonces only need to outlive the window in which timestamps
            // are accepted: a long session forgets older ones as it goes.
            let _ = peers::prune_nonces(&self.replica, now_ms() - 2 * self.cfg.max_skew_ms);
        }
        if let Some(every) = self.cfg.keepalive
            && self.said.elapsed() >= every
        {
            // An `Idle` for a registry in sync, which any peer answers in
            // kind; a connection-level one if there is none.
            let synced = self
                .regs
                .values()
                .find(|r| r.refused.is_none() && r.handle.is_some())
                .map_or(CONNECTION, |r| *r.id.as_bytes());
            self.send(&synced, Kind::Idle, &[]).await?;
        }
        let ids: Vec<RegistryId> = self
            .regs
            .iter()
            .filter(|(_, r)| r.refused.is_none() && r.handle.is_some())
            .filter(|(_, r)| r.handle.as_ref().map(Registry::heads) != Some(r.last_heads.clone()))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if self.reply(id, false).await? {
                self.regs.get_mut(&id).expect("present").done = false;
            }
        }
        Ok(())
    }

    fn progress(&self) {
        if let Some(f) = &self.cfg.progress {
            f(&Progress {
                bytes_sent: self.counters.sent.load(Ordering::Relaxed),
                bytes_received: self.counters.received.load(Ordering::Relaxed),
                changes_in: self.regs.values().map(|r| r.changes_in).sum(),
                changes_out: self.regs.values().map(|r| r.changes_out).sum(),
            });
        }
    }

    fn save_states(&self) {
        self.persist(true);
    }

    /// Saves the sync states; with `journal`, also journals what moved.
    fn persist(&self, journal: bool) {
        let states: Vec<(RegistryId, Vec<u8>)> = self
            .regs
            .values()
            .filter(|r| r.refused.is_none() && r.handle.is_some())
            .map(|r| (r.id, r.state.encode()))
            .collect();
        let moved: Vec<(RegistryId, usize, usize)> = self
            .regs
            .values()
            .filter(|r| journal && r.changes_in + r.changes_out > 0)
            .map(|r| (r.id, r.changes_in, r.changes_out))
            .collect();
        if let Err(e) = peers::save_sync_states(&self.replica, &self.peer, &states, &moved) {
            tracing::warn!(error = %e, "could not save sync states; the next sync starts over");
        }
    }

    fn report(&self, started: Instant) -> PeerReport {
        PeerReport {
            peer: self.peer,
            registries: self
                .regs
                .values()
                .map(|r| PeerRegistryReport {
                    registry: r.id,
                    name: r.name.clone(),
                    changes_in: r.changes_in,
                    changes_out: r.changes_out,
                    refused: r.refused.clone(),
                })
                .collect(),
            bytes_sent: self.counters.sent.load(Ordering::Relaxed),
            bytes_received: self.counters.received.load(Ordering::Relaxed),
            duration: started.elapsed(),
        }
    }
}

enum Generated {
    /// Sync payloads to send in order, with the changes each carries.
    Messages(Vec<(Vec<u8>, usize)>),
    Nothing,
    Refuse(String),
}

/// Encodes a sync message as one payload, or, when its changes exceed
/// `budget` bytes, as several: each a complete message (the same heads,
/// have and need) carrying the next run of changes in order, so a large
/// history never makes a message the peer must refuse as oversized.
/// Earlier runs hold the dependencies of later ones.
fn split(message: Message, sigs: &[(PublicKey, [u8; 64])], budget: usize) -> Vec<(Vec<u8>, usize)> {
    let total: usize = message.changes.iter().map(<[u8]>::len).sum();
    if total <= budget || message.changes.len() <= 1 {
        return vec![(envelope::encode_sync(&message.encode(), sigs), sigs.len())];
    }
    let changes: Vec<&[u8]> = message.changes.iter().collect();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < changes.len() {
        let mut end = start;
        let mut size = 0;
        while end < changes.len() && (end == start || size + changes[end].len() <= budget) {
            size += changes[end].len();
            end += 1;
        }
        let part = Message {
            heads: message.heads.clone(),
            need: message.need.clone(),
            have: message.have.clone(),
            changes: ChunkList::from(
                changes[start..end]
                    .iter()
                    .map(|c| c.to_vec())
                    .collect::<Vec<_>>(),
            ),
            flags: message.flags,
            version: message.version.clone(),
        };
        parts.push((
            envelope::encode_sync(&part.encode(), &sigs[start..end]),
            end - start,
        ));
        start = end;
    }
    parts
}

/// The author and signature of every change in an outgoing message, in order.
fn signatures_of(
    id: &RegistryId,
    message: &Message,
    store: &crate::store::Store,
) -> Result<Vec<(PublicKey, [u8; 64])>, StoreError> {
    if message.changes.is_empty() {
        return Ok(Vec::new());
    }
    let corrupt =
        |what: String| StoreError::corrupt(store.path(), format!("registry {id}: {what}"));
    let hashes = message
        .changes
        .iter()
        .map(|raw| {
            automerge::Change::try_from(raw)
                .map(|c| c.hash().0)
                .map_err(|e| corrupt(format!("a change to send does not decode: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sigs = store.signatures(id, &hashes)?;
    hashes
        .iter()
        .map(|h| {
            let (key, sig) = sigs.get(h).ok_or_else(|| {
                corrupt(format!(
                    "change {} has no stored signature; verify the replica to find every damaged change",
                    hex::encode(h)
                ))
            })?;
            let key = PublicKey::from_bytes(key).map_err(|_| {
                corrupt(format!(
                    "change {} has an invalid author key",
                    hex::encode(h)
                ))
            })?;
            Ok((key, *sig))
        })
        .collect()
}

async fn stopped(shutdown: &mut Option<watch::Receiver<bool>>) {
    match shutdown {
        Some(rx) => {
            while !*rx.borrow() {
                if rx.changed().await.is_err() {
                    // The owner is gone: stop too.
                    return;
                }
            }
        }
        None => std::future::pending().await,
    }
}
