//! What keeps one peer, or a crowd of strangers, from wearing a hub down.
//!
//! - Connections that have not proved an accepted key are only counted and
//!   logged at a limited rate, never journaled: anyone who can connect
//!   could otherwise grow the journal without bound.
//! - Unauthenticated connections have a budget of their own, smaller than
//!   the peer slots, and a limit per address; when one is full, the oldest
//!   connection still in its handshake gives way, so a flood of idle
//!   strangers cannot take the places members need.
//! - The changes a peer holds back while their dependencies are missing
//!   count against a byte budget shared by all its connections.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::identity::PublicKey;

/// What a hub turned away before a peer proved a key it accepts, counted
/// since it started (from [`Hub::metrics`](super::Hub::metrics)). These
/// events are logged at a limited rate and not journaled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubMetrics {
    /// Connections whose handshake failed or did not finish in time.
    pub handshakes_failed: u64,
    /// Connections that proved a key the hub does not accept.
    pub keys_refused: u64,
    /// Connections closed for want of room: on arrival (too many still in
    /// their handshake, in all or from one address), while in their
    /// handshake (to make way for a newer one), or right after it (every
    /// peer slot taken).
    pub turned_away: u64,
}

/// At most one log line per this many milliseconds for the events above.
const LOG_EVERY_MS: i64 = 10_000;

/// The counters behind [`HubMetrics`], shared by a hub's connections.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    handshakes_failed: AtomicU64,
    keys_refused: AtomicU64,
    turned_away: AtomicU64,
    /// Events since the last log line.
    unlogged: AtomicU64,
    logged_at: AtomicI64,
}

impl Metrics {
    pub(crate) fn handshake_failed(&self, address: &str, reason: &str) {
        self.note(&self.handshakes_failed, address, reason);
    }

    pub(crate) fn key_refused(&self, address: &str, reason: &str) {
        self.note(&self.keys_refused, address, reason);
    }

    pub(crate) fn turned_away(&self, address: &str, reason: &str) {
        self.note(&self.turned_away, address, reason);
    }

    fn note(&self, counter: &AtomicU64, address: &str, reason: &str) {
        counter.fetch_add(1, Ordering::Relaxed);
        let unlogged = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        let last = self.logged_at.load(Ordering::Relaxed);
        if now - last >= LOG_EVERY_MS
            && self
                .logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.unlogged.fetch_sub(unlogged, Ordering::Relaxed);
            tracing::warn!(
                peer = %address,
                %reason,
                since_last_line = unlogged,
                "turned away a connection that proved no accepted key"
            );
        }
    }

    pub(crate) fn snapshot(&self) -> HubMetrics {
        HubMetrics {
            handshakes_failed: self.handshakes_failed.load(Ordering::Relaxed),
            keys_refused: self.keys_refused.load(Ordering::Relaxed),
            turned_away: self.turned_away.load(Ordering::Relaxed),
        }
    }
}

/// How long a connection may be in its handshake before it can be made
/// to give way to a newer one; honest handshakes take milliseconds.
const GRACE: Duration = Duration::from_secs(1);

/// Admits unauthenticated connections: at most `budget` at once, and at
/// most `per_address` from one address. When either is full, the oldest
/// connection there that has had its grace period gives way to the new
/// one, so a crowd of idle strangers cannot keep anyone else out; only
/// when none is that old is the new connection turned away.
#[derive(Debug)]
pub(crate) struct Admissions {
    budget: usize,
    per_address: usize,
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    next: u64,
    /// In order of arrival.
    queue: VecDeque<Entry>,
}

#[derive(Debug)]
struct Entry {
    serial: u64,
    ip: IpAddr,
    since: Instant,
    evict: Arc<Notify>,
}

impl Admissions {
    pub(crate) fn new(budget: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Admissions {
            budget: budget.max(1),
            per_address: per_address.max(1),
            pending: Mutex::new(Pending::default()),
        })
    }

    /// A place for one more unauthenticated connection from `ip`, or why
    /// there is none.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, String> {
        let mut pending = self.pending.lock().expect("admissions lock");
        let now = Instant::now();
        let from_ip = pending.queue.iter().filter(|e| e.ip == ip).count();
        let full = if from_ip >= self.per_address {
            Some((
                Some(ip),
                format!(
                    "{from_ip} connections from this address are still in their handshake (the limit per address)"
                ),
            ))
        } else if pending.queue.len() >= self.budget {
            Some((
                None,
                "the hub's budget of connections still in their handshake is in use; try again shortly"
                    .to_owned(),
            ))
        } else {
            None
        };
        if let Some((only, why)) = full {
            let oldest = pending.queue.iter().position(|e| {
                only.is_none_or(|ip| e.ip == ip) && now.duration_since(e.since) >= GRACE
            });
            match oldest.and_then(|i| pending.queue.remove(i)) {
                Some(entry) => entry.evict.notify_one(),
                None => return Err(why),
            }
        }
        let serial = pending.next;
        pending.next += 1;
        let evict = Arc::new(Notify::new());
        pending.queue.push_back(Entry {
            serial,
            ip,
            since: now,
            evict: evict.clone(),
        });
        Ok(Admission {
            serial,
            evict,
            from: self.clone(),
        })
    }
}

/// One unauthenticated connection's place; freed when dropped (once the
/// peer has finished its handshake, or failed to).
#[derive(Debug)]
pub(crate) struct Admission {
    serial: u64,
    evict: Arc<Notify>,
    from: Arc<Admissions>,
}

impl Admission {
    /// Resolves when this connection must give way to a newer one.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut pending = self.from.pending.lock().expect("admissions lock");
        if let Some(i) = pending.queue.iter().position(|e| e.serial == self.serial) {
            pending.queue.remove(i);
        }
    }
}

/// What one peer may hold over all its connections: bytes of held-back
/// changes, and the connections themselves.
#[derive(Debug)]
pub(crate) struct PeerBudget {
    limit: usize,
    max_connections: usize,
    held: Mutex<HashMap<PublicKey, usize>>,
    connections: Mutex<HashMap<PublicKey, usize>>,
}

impl PeerBudget {
    pub(crate) fn new(limit: usize, max_connections: usize) -> Arc<Self> {
        Arc::new(PeerBudget {
            limit,
            max_connections: max_connections.max(1),
            held: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
        })
    }

    /// Changes what `peer` holds from `old` to `new` bytes; `Err` with the
    /// limit if that would take it over.
    pub(crate) fn adjust(&self, peer: &PublicKey, old: usize, new: usize) -> Result<(), usize> {
        let mut held = self.held.lock().expect("budget lock");
        let now = held.get(peer).copied().unwrap_or(0).saturating_sub(old);
        if new > old && now + new > self.limit {
            return Err(self.limit);
        }
        if now + new == 0 {
            held.remove(peer);
        } else {
            held.insert(*peer, now + new);
        }
        Ok(())
    }

    /// One more connection of `peer`, counted until the guard drops; `Err`
    /// with the limit if it has that many already.
    pub(crate) fn connect(self: &Arc<Self>, peer: &PublicKey) -> Result<Connected, usize> {
        let mut open = self.connections.lock().expect("budget lock");
        let n = open.entry(*peer).or_insert(0);
        if *n >= self.max_connections {
            return Err(self.max_connections);
        }
        *n += 1;
        Ok(Connected {
            peer: *peer,
            budget: self.clone(),
        })
    }
}

/// A peer's connection, counted against its limit while it lives.
#[derive(Debug)]
pub(crate) struct Connected {
    peer: PublicKey,
    budget: Arc<PeerBudget>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let mut open = self.budget.connections.lock().expect("budget lock");
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}
