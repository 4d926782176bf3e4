//! Hole punching: two nodes that cannot dial each other (one or both
//! behind NAT) and share a peer open a direct link by dialing each other
//! at once, timed through that peer (libp2p's DCUtR, over link messages).
//!
//! ```text
//! A (wants B)            R (linked to both)           B
//!   ── PunchAsk{B, port_A} ──►
//!                          ── PunchOffer{A, ip_A:port_A} ──►
//!                          ◄── PunchReady{A, port_B} ──  B dials ip_A:port_A
//!   ◄── PunchGo{B, ip_B:port_B} ──                        from port_B
//! A dials ip_B:port_B from port_A
//! ```
//!
//! Each node dials from the port it listens on (`crate::sockets`): a
//! NAT that keeps a connection's source port (most home routers, Linux's
//! `masquerade`) maps it to the port the introducer names. B's first SYN
//! opens B's NAT for A and is usually dropped by A's; A's SYN then finds
//! B's NAT open and B's socket waiting: one TCP connection (a
//! simultaneous open, or an ordinary accept where a side is not behind
//! NAT). B, which dials first, always runs the handshake as initiator,
//! over whichever socket the connection came up on (its driver hands it
//! a connection from A's address that its listener accepted); A runs it
//! as responder, as for any inbound connection. A NAT that gives every
//! destination its own port (symmetric) defeats it; the node then still
//! takes part by dialing out.
//!
//! When: A asks after a dial to a friend or remembered peer failed (at
//! most once per [`ASK_EVERY`] for one node), asking up to [`ASK_PEERS`]
//! of its peers; a peer without a link to B answers nothing. B answers an
//! offer only for a friend or a remembered peer of its own, with a
//! listening port, and starts at most [`MAX_PUNCHES`] at once; an offer
//! from a node it does not list yet is held for [`PUNCH_WINDOW`] and
//! answered if B adds it meanwhile (two people add each other one after
//! the other). R
//! introduces one asker at most once per [`INTRODUCE_EVERY`], and only
//! between two nodes linked to it: nobody can make a node dial an
//! address of its choosing except the introducer, and only toward a key
//! the dialing node already trusts, with a handshake that proves it.
//!
//! What the peers learn: R learns that A wants a link to B (not what for);
//! A and B learn each other's address, as any link shows.

use super::{Dialed, Output, PeerPolicy};
use lichen_routing::{Message, PeerId, Verifier};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Peers asked to introduce, per failed dial.
pub const ASK_PEERS: usize = 8;
/// One node is asked for at most this often.
pub const ASK_EVERY: Duration = Duration::from_secs(60);
/// An ask, offer or introduction older than this is void; a punch gives
/// up after this long too.
pub const PUNCH_WINDOW: Duration = Duration::from_secs(20);
/// One asker is introduced at most this often by one node.
pub const INTRODUCE_EVERY: Duration = Duration::from_secs(10);
/// Punches under way at once (as the node offered a link).
pub const MAX_PUNCHES: usize = 4;
/// Entries kept per table before the void ones are swept.
const SWEEP_AT: usize = 256;
/// Offers held from nodes not listed (yet), at most.
const HELD_OFFERS: usize = 16;

/// Hole-punching state ([`super::PeerPolicy`], with dial-backs on).
#[derive(Debug, Default)]
pub(super) struct Punch {
    /// Our asks: the node wanted, when.
    asked: HashMap<[u8; 32], Instant>,
    /// Introductions under way here: (asker, wanted) → when offered.
    introducing: HashMap<([u8; 32], [u8; 32]), Instant>,
    /// When each asker was last introduced.
    introduced: HashMap<[u8; 32], Instant>,
    /// Offers we answered: the asker, when (punches as initiator).
    answering: HashMap<[u8; 32], Instant>,
    /// Introduced at our ask: the node, when (punches as responder).
    awaiting: HashMap<[u8; 32], Instant>,
    /// Offers from nodes not listed here: the link it came on, the
    /// address, when. Two people who make each other friends do it one
    /// after the other: the first node's ask reaches the second before it
    /// lists the first. Held for [`PUNCH_WINDOW`] and answered if the
    /// node is listed (and dialed) within it; otherwise the first node,
    /// whose own ask is still under way, would ignore the second's offer
    /// (the smaller key's ask goes on) and neither would punch until the
    /// next ask, a minute later.
    held: HashMap<[u8; 32], (PeerId, SocketAddr, Instant)>,
    /// Punches started, and those that brought a link.
    pub(super) tried: u64,
    pub(super) linked: u64,
}

/// Whether `at` (if any) is less than `window` before `now`.
fn live(now: Instant, at: Option<&Instant>, window: Duration) -> bool {
    at.is_some_and(|at| now.saturating_duration_since(*at) < window)
}

/// Drop the entries older than [`PUNCH_WINDOW`] (`at`: an entry's time).
fn expire<K: std::hash::Hash + Eq, V>(
    t: &mut HashMap<K, V>,
    now: Instant,
    at: impl Fn(&V) -> Instant,
) {
    t.retain(|_, v| live(now, Some(&at(v)), PUNCH_WINDOW));
}

/// [`expire`] once a table is large.
fn sweep<K: std::hash::Hash + Eq, V>(
    t: &mut HashMap<K, V>,
    now: Instant,
    at: impl Fn(&V) -> Instant,
) {
    if t.len() >= SWEEP_AT {
        expire(t, now, at);
    }
}

impl<V: Verifier> PeerPolicy<V> {
    /// Our listening port when we punch (dial-backs asked with a port).
    pub(super) fn punch_port(&self) -> Option<u16> {
        self.reach.as_ref().and_then(|r| r.port)
    }

    /// A dial to `key` failed (or, from behind NAT, started): if it is a
    /// friend or remembered peer, ask our peers to introduce us.
    pub(super) fn punch_after_failed_dial(&mut self, now: Instant, key: &[u8; 32]) {
        let Some(port) = self.punch_port() else {
            return;
        };
        if self.list.get(key).is_none() {
            return;
        }
        if self.link_to(key).is_some() {
            return;
        }
        let Some(p) = self.punch.as_mut() else { return };
        // Asked lately, or a punch toward it under way (the dial failed
        // while an offer's punch runs): no ask.
        if live(now, p.asked.get(key), ASK_EVERY)
            || live(now, p.answering.get(key), PUNCH_WINDOW)
            || live(now, p.awaiting.get(key), PUNCH_WINDOW)
        {
            return;
        }
        let peers: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| l.routed && !l.seed_client)
            .map(|(pid, _)| *pid)
            .take(ASK_PEERS)
            .collect();
        if peers.is_empty() {
            // Nobody to ask yet: the next failed dial asks.
            return;
        }
        let Some(p) = self.punch.as_mut() else { return };
        sweep(&mut p.asked, now, |t| *t);
        p.asked.insert(*key, now);
        tracing::debug!(
            asked = peers.len(),
            "asking peers to introduce a node we cannot dial"
        );
        for peer in peers {
            self.out.push_back(Output::Send {
                peer,
                msg: Message::PunchAsk { target: *key, port },
            });
        }
    }

    /// A hole-punching message from the peer on link `pid` (said hello).
    pub(super) fn punch_message(&mut self, now: Instant, pid: PeerId, msg: Message) {
        let Some((remote, ip)) = self.links.get(&pid).map(|l| (l.remote, l.ip)) else {
            return;
        };
        match msg {
            Message::PunchAsk { target, port } => {
                let Some(ip) = ip.filter(|_| port != 0) else {
                    return;
                };
                self.introduce(now, remote, target, SocketAddr::new(ip, port));
            }
            Message::PunchOffer { from, addr } => {
                self.offered(now, pid, from, addr);
            }
            Message::PunchReady { to, port } => {
                let Some(ip) = ip.filter(|_| port != 0) else {
                    return;
                };
                let Some(p) = self.punch.as_mut() else { return };
                let at = p.introducing.remove(&(to, remote));
                if !live(now, at.as_ref(), PUNCH_WINDOW) {
                    return;
                }
                if let Some(asker) = self.routed_link(&to) {
                    self.out.push_back(Output::Send {
                        peer: asker,
                        msg: Message::PunchGo {
                            target: remote,
                            addr: SocketAddr::new(ip, port),
                        },
                    });
                }
            }
            Message::PunchGo { target, addr } => {
                let linked = self.link_to(&target).is_some();
                let Some(p) = self.punch.as_mut() else { return };
                if !live(now, p.asked.get(&target), PUNCH_WINDOW)
                    || p.answering.contains_key(&target)
                    || p.awaiting.contains_key(&target)
                    || linked
                {
                    return;
                }
                sweep(&mut p.awaiting, now, |t| *t);
                p.awaiting.insert(target, now);
                p.tried += 1;
                tracing::debug!(peer = pid.0, "introduced: punching as responder");
                self.out.push_back(Output::Punch {
                    key: target,
                    addr,
                    dialed: None,
                });
            }
            _ => {}
        }
    }

    /// Whether a punch toward `key` at `addr` may start: not ourselves,
    /// not a node linked already or banned, and an address one can dial.
    fn may_punch(&self, now: Instant, key: &[u8; 32], addr: SocketAddr) -> bool {
        *key != self.cfg.own_key
            && self.link_to(key).is_none()
            && !self.is_banned(now, key)
            && addr.port() != 0
            && !addr.ip().is_unspecified()
            && !addr.ip().is_multicast()
    }

    /// The routed link to the node with static key `key`.
    fn routed_link(&self, key: &[u8; 32]) -> Option<PeerId> {
        let pid = self.link_to(key)?;
        self.links.get(&pid).filter(|l| l.routed).map(|_| pid)
    }

    /// `asker` (at `addr`) wants a link to `target`: offer it, if
    /// `target` is linked here too.
    fn introduce(&mut self, now: Instant, asker: [u8; 32], target: [u8; 32], addr: SocketAddr) {
        if target == asker {
            return;
        }
        let Some(to) = self.routed_link(&target) else {
            return;
        };
        let Some(p) = self.punch.as_mut() else { return };
        if live(now, p.introduced.get(&asker), INTRODUCE_EVERY) {
            tracing::debug!("introduction asked too often: ignored");
            return;
        }
        sweep(&mut p.introduced, now, |t| *t);
        sweep(&mut p.introducing, now, |t| *t);
        p.introduced.insert(asker, now);
        p.introducing.insert((asker, target), now);
        self.out.push_back(Output::Send {
            peer: to,
            msg: Message::PunchOffer { from: asker, addr },
        });
    }

    /// The peer on link `via` offers a link to `from` at `addr`: take it
    /// for a friend or a remembered peer (whether a punch started); hold
    /// it a while for a node not listed.
    fn offered(&mut self, now: Instant, via: PeerId, from: [u8; 32], addr: SocketAddr) -> bool {
        let Some(port) = self.punch_port() else {
            return false;
        };
        let Some(e) = self.list.get(&from) else {
            if self.may_punch(now, &from, addr) {
                if let Some(p) = self.punch.as_mut() {
                    expire(&mut p.held, now, |(_, _, t)| *t);
                    if p.held.len() < HELD_OFFERS || p.held.contains_key(&from) {
                        p.held.insert(from, (via, addr, now));
                    }
                }
            }
            return false;
        };
        let dialed = Dialed {
            noderef: e.noderef.clone(),
            bytes: Some(e.bytes.clone()),
        };
        if !self.may_punch(now, &from, addr) {
            return false;
        }
        let Some(p) = self.punch.as_mut() else {
            return false;
        };
        // Both asked at once: the smaller key's ask goes on (its node is
        // the initiator), the other's offer is not answered.
        if self.cfg.own_key < from && live(now, p.asked.get(&from), PUNCH_WINDOW) {
            return false;
        }
        expire(&mut p.answering, now, |t| *t);
        if p.answering.len() >= MAX_PUNCHES || p.answering.contains_key(&from) {
            return false;
        }
        p.answering.insert(from, now);
        p.tried += 1;
        tracing::debug!(peer = via.0, "offered a link: punching as initiator");
        self.out.push_back(Output::Send {
            peer: via,
            msg: Message::PunchReady { to: from, port },
        });
        self.out.push_back(Output::Punch {
            key: from,
            addr,
            dialed: Some(dialed),
        });
        true
    }

    /// A dial to `key` starts: answer an offer held from it (it asked
    /// before this node listed it). Whether one was answered: the node's
    /// own ask is then not needed.
    pub(super) fn answer_held_offer(&mut self, now: Instant, key: &[u8; 32]) -> bool {
        let Some((via, addr, at)) = self.punch.as_mut().and_then(|p| p.held.remove(key)) else {
            return false;
        };
        live(now, Some(&at), PUNCH_WINDOW)
            && self.links.get(&via).is_some_and(|l| l.routed)
            && self.offered(now, via, *key, addr)
    }

    /// The routing core wants a link to a node behind NAT while behind
    /// NAT itself (an opennet announcement's offer marked `punch`): punch
    /// toward the address its noderef names, without an introducer. The
    /// offering node starts as `initiator`; the newcomer, told by the
    /// offer that came back along the announcement's path, answers. Both
    /// NATs keep the listening port (cone and port-restricted ones do),
    /// so each noderef names the address the other must dial.
    pub(super) fn punch_toward(
        &mut self,
        now: Instant,
        noderef: &lichen_routing::NodeRef,
        initiator: bool,
    ) {
        let r = match crate::NodeRef::from_bytes_shared(&noderef.address) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "bad noderef in a punch offer");
                return;
            }
        };
        let key = r.static_key;
        let Some(&addr) = r.addresses.first() else {
            return;
        };
        if self.dialing.contains(&key) || !self.may_punch(now, &key, addr) {
            return;
        }
        let Some(p) = self.punch.as_mut() else { return };
        expire(&mut p.answering, now, |t| *t);
        expire(&mut p.awaiting, now, |t| *t);
        if p.answering.len() + p.awaiting.len() >= MAX_PUNCHES
            || p.answering.contains_key(&key)
            || p.awaiting.contains_key(&key)
        {
            return;
        }
        p.tried += 1;
        let dialed = if initiator {
            p.answering.insert(key, now);
            Some(Dialed {
                noderef: r,
                bytes: Some(noderef.address.clone()),
            })
        } else {
            p.awaiting.insert(key, now);
            None
        };
        tracing::debug!(
            initiator,
            "opennet offer between nodes behind NAT: punching"
        );
        self.out.push_back(Output::Punch { key, addr, dialed });
    }

    /// Take part in hole punching without dial-backs (the simulator, which
    /// knows who is behind NAT): opennet nodes behind NAT then offer each
    /// other links ([`Self::punch_toward`]) and the driver carries out
    /// [`Output::Punch`].
    pub fn set_punching(&mut self) {
        if self.punch.is_none() {
            self.punch = Some(Box::default());
        }
        self.node.set_punching(true);
    }

    /// A punch asked for by [`Output::Punch`] ended without a link (one
    /// that came up was reported to [`PeerPolicy::link_up`]).
    pub fn punch_failed(&mut self, key: &[u8; 32], initiator: bool) {
        if let Some(p) = self.punch.as_mut() {
            if initiator {
                p.answering.remove(key);
            } else {
                p.awaiting.remove(key);
            }
        }
    }

    /// A link to `key` came up: a punch for it, if any, worked.
    pub(super) fn punch_linked(&mut self, key: &[u8; 32]) {
        if let Some(p) = self.punch.as_mut() {
            // Either side (not both: one punch per pair).
            let answered = p.answering.remove(key).is_some();
            if answered || p.awaiting.remove(key).is_some() {
                p.linked += 1;
            }
        }
    }

    /// Punches started (as either side) and those that brought a link.
    #[must_use]
    pub fn punch_counts(&self) -> (u64, u64) {
        self.punch.as_ref().map_or((0, 0), |p| (p.tried, p.linked))
    }
}
