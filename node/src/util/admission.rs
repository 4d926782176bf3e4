//! Connection slots that a flood cannot hold: the admission policy of the
//! gateway and of the peer port (docs/invariants.md, "Floods").
//!
//! [`Admission`] is the policy, sans-IO (the time is passed in): a fixed
//! number of slots; a connection is *waiting* from its accept until it
//! has said what it wants (the gateway: a complete request header, and
//! again between requests; the peer port: until its peer's hello, so
//! through the Noise handshake), and *busy* otherwise. When the slots are
//! full, the oldest waiting connection is closed to make room (the new
//! one is refused only when every slot is busy): the oldest of the ranges
//! holding the most waiting connections, so a flood pushes out its own
//! connections before a lone newcomer's. Waiting connections from one
//! source range (IPv4 /24, IPv6 /64) are capped: the range's oldest makes
//! room for its newest, so many connections from one range cannot push
//! out others. A waiting connection is closed after
//! [`Limits::deadline`], or [`Limits::pressed_deadline`] while more than
//! half the slots are taken.
//!
//! [`Gate`] shares an [`Admission`] between an accept loop and its
//! connections' tasks: a [`Ticket`] per connection, whose
//! [`Ticket::closed`] resolves when the policy closes it.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The bounds of one listener's slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once.
    pub slots: usize,
    /// Waiting connections from one source range.
    pub per_range: usize,
    /// How long a connection may wait.
    pub deadline: Duration,
    /// How long while more than half the slots are taken.
    pub pressed_deadline: Duration,
    /// Loopback addresses are sources of their own, each a range (tests
    /// connect from several 127.0.0.x to act as many hosts). Off, loopback
    /// has no per-range cap: a testnet's nodes all dial from 127.0.0.1,
    /// and a local browser shares its address with every local program.
    pub loopback_sources: bool,
}

/// A source range: the /24 of an IPv4 address, the /64 of an IPv6 one,
/// or a whole loopback address ([`Limits::loopback_sources`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Range {
    /// The first three bytes of an IPv4 address.
    V4([u8; 3]),
    /// The first eight bytes of an IPv6 address.
    V6([u8; 8]),
    /// One loopback address.
    Loopback(IpAddr),
}

/// The range `ip` counts against; None: no per-range cap.
#[must_use]
pub fn range_of(ip: IpAddr, loopback_sources: bool) -> Option<Range> {
    let ip = ip.to_canonical();
    if ip.is_loopback() {
        return loopback_sources.then_some(Range::Loopback(ip));
    }
    Some(match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Range::V4([o[0], o[1], o[2]])
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut p = [0u8; 8];
            p.copy_from_slice(&o[..8]);
            Range::V6(p)
        }
    })
}

/// A connection's number in its [`Admission`].
pub type ConnId = u64;

/// What [`Admission::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Take the connection; close `evict` first (at most one).
    In {
        /// The new connection.
        id: ConnId,
        /// The connection closed to make room.
        evict: Option<ConnId>,
    },
    /// Every slot is busy: close the new connection.
    Refused,
}

#[derive(Debug)]
struct Conn {
    range: Option<Range>,
    /// Waiting since (None: busy).
    since: Option<Instant>,
}

/// The policy: see the module docs. Bounded by [`Limits::slots`].
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    next: ConnId,
    conns: HashMap<ConnId, Conn>,
    /// The waiting connections, oldest first.
    waiting: BTreeSet<(Instant, ConnId)>,
    /// Waiting connections per range (None: uncapped loopback).
    ranges: HashMap<Option<Range>, usize>,
}

impl Admission {
    /// No connection yet.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            next: 0,
            conns: HashMap::new(),
            waiting: BTreeSet::new(),
            ranges: HashMap::new(),
        }
    }

    /// A connection from `ip` was accepted at `now`.
    pub fn admit(&mut self, now: Instant, ip: IpAddr) -> Admit {
        let range = range_of(ip, self.limits.loopback_sources);
        let here = self.ranges.get(&range).copied().unwrap_or(0);
        let evict = if range.is_some() && here >= self.limits.per_range {
            // Its range's oldest waiting connection.
            self.oldest_of(here, Some(range))
        } else if self.conns.len() >= self.limits.slots {
            // The oldest of the ranges holding the most.
            let most = self.ranges.values().copied().max().unwrap_or(0);
            let Some(id) = self.oldest_of(most, None) else {
                return Admit::Refused;
            };
            Some(id)
        } else {
            None
        };
        if let Some(old) = evict {
            self.close(old);
        }
        if self.conns.len() >= self.limits.slots {
            return Admit::Refused;
        }
        let id = self.next;
        self.next += 1;
        self.conns.insert(id, Conn { range, since: None });
        self.wait(id, now);
        Admit::In { id, evict }
    }

    /// The oldest waiting connection of `range` (None: of any range)
    /// whose range holds `count` waiting connections.
    fn oldest_of(&self, count: usize, range: Option<Option<Range>>) -> Option<ConnId> {
        self.waiting
            .iter()
            .find(|(_, id)| {
                self.conns.get(id).is_some_and(|c| {
                    range.is_none_or(|r| r == c.range)
                        && self.ranges.get(&c.range).copied().unwrap_or(0) == count
                })
            })
            .map(|&(_, id)| id)
    }

    /// `id` is waiting again from `now` (the gateway: between requests).
    pub fn wait(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.since.is_some() {
            return;
        }
        c.since = Some(now);
        self.waiting.insert((now, id));
        *self.ranges.entry(c.range).or_insert(0) += 1;
    }

    /// `id` said what it wants: busy, neither evicted nor timed out.
    pub fn busy(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(since) = c.since.take() else {
            return;
        };
        self.waiting.remove(&(since, id));
        if let Some(n) = self.ranges.get_mut(&c.range) {
            *n -= 1;
            if *n == 0 {
                self.ranges.remove(&c.range);
            }
        }
    }

    /// `id` ended (or was closed); its slot is free.
    pub fn close(&mut self, id: ConnId) {
        self.busy(id);
        self.conns.remove(&id);
    }

    /// Whether more than half the slots are taken.
    #[must_use]
    pub fn pressed(&self) -> bool {
        self.conns.len() > self.limits.slots / 2
    }

    /// How long a connection may wait now.
    #[must_use]
    pub fn deadline(&self) -> Duration {
        if self.pressed() {
            self.limits.pressed_deadline
        } else {
            self.limits.deadline
        }
    }

    /// The waiting connections past the deadline at `now` (as the slots
    /// were before this sweep), closed.
    pub fn expire(&mut self, now: Instant) -> Vec<ConnId> {
        let deadline = self.deadline();
        let mut out = Vec::new();
        while let Some(&(since, id)) = self.waiting.first() {
            if now.saturating_duration_since(since) < deadline {
                break;
            }
            self.close(id);
            out.push(id);
        }
        out
    }

    /// When the oldest waiting connection passes the deadline (as the
    /// slots are now).
    #[must_use]
    pub fn next_expiry(&self) -> Option<Instant> {
        self.waiting
            .first()
            .map(|&(since, _)| since + self.deadline())
    }

    /// Connections held.
    #[must_use]
    pub fn held(&self) -> usize {
        self.conns.len()
    }
}

/// An [`Admission`] shared by an accept loop and its connections.
#[derive(Debug)]
pub struct Gate {
    inner: Mutex<(Admission, HashMap<ConnId, CancellationToken>)>,
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    id: ConnId,
    closed: CancellationToken,
}

impl Gate {
    /// Slots within `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Gate {
            inner: Mutex::new((Admission::new(limits), HashMap::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Admission, HashMap<ConnId, CancellationToken>)> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a connection from `ip` accepted at `now` (another one
    /// closed to make room if need be), or None: every slot is busy.
    #[must_use]
    pub fn enter(self: &Arc<Self>, now: Instant, ip: IpAddr) -> Option<Ticket> {
        let mut g = self.lock();
        let (adm, tokens) = &mut *g;
        let Admit::In { id, evict } = adm.admit(now, ip) else {
            return None;
        };
        if let Some(t) = evict.and_then(|old| tokens.remove(&old)) {
            t.cancel();
        }
        let closed = CancellationToken::new();
        tokens.insert(id, closed.clone());
        Some(Ticket {
            gate: self.clone(),
            id,
            closed,
        })
    }

    /// Close the waiting connections past the deadline at `now`; when to
    /// call again.
    pub fn sweep(&self, now: Instant) -> Option<Instant> {
        let mut g = self.lock();
        let (adm, tokens) = &mut *g;
        for id in adm.expire(now) {
            if let Some(t) = tokens.remove(&id) {
                t.cancel();
            }
        }
        adm.next_expiry()
    }

    /// Connections held.
    #[must_use]
    pub fn held(&self) -> usize {
        self.lock().0.held()
    }

    /// Whether no connection is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held() == 0
    }
}

impl Ticket {
    /// The connection said what it wants (see [`Admission::busy`]).
    pub fn busy(&self) {
        self.gate.lock().0.busy(self.id);
    }

    /// The connection waits again from `now`.
    pub fn wait(&self, now: Instant) {
        self.gate.lock().0.wait(self.id, now);
    }

    /// Resolves when the policy closes the connection (evicted to make
    /// room, or past its deadline).
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Whether the policy closed the connection.
    #[cfg(test)]
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut g = self.gate.lock();
        g.0.close(self.id);
        g.1.remove(&self.id);
    }
}

/// Sleep until `at` (forever if None): an accept loop's sweep timer.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
