//! Knowing where we stand: whether other nodes can open links to us, and
//! the address they see us from (libp2p's AutoNAT, as link messages).
//!
//! A node asks a few peers to dial it back ([`Message::DialBack`] with
//! its listening port): each peer opens a connection to the IP it sees
//! the link come from, on that port, and runs a link handshake against
//! the asker's static key with a throwaway key of its own; it stops once
//! the asker's second handshake message has proved the asker's key (so
//! no link comes of it) and answers [`Message::DialBackResult`] with the
//! address it saw and whether the dial was answered. A home router
//! without a port mapping drops the unsolicited connection: the answer
//! is "not reachable".
//!
//! A peer dials only the address it sees the link come from, on one port,
//! at most once per [`ANSWER_EVERY`] for one asker: nobody can turn peers
//! into a flood toward someone else. What the asker learns is what its
//! peers already know (its address).
//!
//! The verdict is the majority of the last answers from different peers
//! (a lying peer is outvoted; with a tie, reachable, as one peer did
//! reach us), and the public address the one most of them saw. The
//! policy asks [`PROBE_PEERS`] peers as they say hello, and again every
//! [`PROBE_EVERY`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lichen_routing::{Message, PeerId};

use super::{Output, PeerPolicy};
use lichen_routing::Verifier;

/// Peers asked in one round (and answers wanted for a verdict).
pub const PROBE_PEERS: usize = 3;

/// A new round of asks this often.
pub const PROBE_EVERY: Duration = Duration::from_secs(30 * 60);

/// An ask not answered in this time is given up (the peer's dial has its
/// own shorter timeout).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// One asker's dial-backs are answered at most this often.
pub const ANSWER_EVERY: Duration = Duration::from_secs(60);

/// Answers kept (newest, one per peer): the verdict's votes.
const KEEP_ANSWERS: usize = 8;

/// Answers older than this no longer count.
const ANSWER_TTL: Duration = Duration::from_secs(2 * 30 * 60);

/// Whether other nodes can open links to this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reachable {
    /// No peer has answered yet.
    Unknown,
    /// Peers' dials reached us.
    Yes,
    /// Peers' dials did not reach us (behind NAT without a port mapping,
    /// or a firewall): we take part by dialing out.
    No,
}

/// What the peers' answers say (`PeerPolicy::reachability`); by
/// default, nothing yet (`Unknown`, no address, no answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reachability {
    /// The verdict.
    pub state: Reachable,
    /// The address most peers saw us from (its port is the one of that
    /// link: for a link we dialed, what our NAT chose).
    pub public: Option<SocketAddr>,
    /// Answers the verdict rests on.
    pub answers: usize,
    /// Hole punches started (either side; [`super::punch`]).
    pub punches: u64,
    /// Hole punches that brought a link.
    pub punched: u64,
    /// Whether our NAT keeps a connection's source port, as the peers
    /// that answered on links we dialed saw them come from (most say):
    /// `Some(false)` behind a symmetric NAT, where hole punching cannot
    /// work. None: no such answer.
    pub ports_kept: Option<bool>,
}

impl Default for Reachability {
    fn default() -> Self {
        Reachability {
            state: Reachable::Unknown,
            public: None,
            answers: 0,
            punches: 0,
            punched: 0,
            ports_kept: None,
        }
    }
}

/// One peer's answer.
#[derive(Clone, Copy, Debug)]
struct Answer {
    from: [u8; 32],
    seen: SocketAddr,
    reachable: bool,
    /// On a link we dialed: whether the peer saw it come from the port
    /// we dialed from (our NAT kept the port). None: not known.
    kept: Option<bool>,
    at: Instant,
}

/// Whether a node takes part in dial-backs
/// ([`super::PolicyConfig::dial_backs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DialBacks {
    /// Neither answers nor asks (the simulator, which has no NAT).
    #[default]
    Off,
    /// Answers peers' asks; asks none (a node that does not listen).
    Answer,
    /// Answers, and asks peers to dial it back on its listening `port`.
    AnswerAndAsk {
        /// Where the node listens for links.
        port: u16,
    },
}

/// The state of the dial-back exchange.
#[derive(Debug)]
pub(super) struct Reach {
    /// Our listening port, sent in each ask (None: we do not ask).
    pub(super) port: Option<u16>,
    /// Asks under way: the link, its peer's key, when asked.
    asked: HashMap<PeerId, ([u8; 32], Instant)>,
    /// The latest answers, one per peer, newest last.
    answers: VecDeque<Answer>,
    /// The next round of asks.
    next_round: Instant,
    /// When each asker was last answered.
    answered: HashMap<[u8; 32], Instant>,
    /// The local port of each link we dialed ([`PeerPolicy::link_local_port`]),
    /// until its answer comes or it closes.
    pub(super) local_ports: HashMap<PeerId, u16>,
}

impl Reach {
    pub(super) fn new(port: Option<u16>, now: Instant) -> Self {
        Reach {
            port,
            asked: HashMap::new(),
            answers: VecDeque::new(),
            next_round: now,
            answered: HashMap::new(),
            local_ports: HashMap::new(),
        }
    }

    /// Whether fewer than [`PROBE_PEERS`] answers are in or awaited
    /// (answers counted whatever their age: a hint for `reach_due`).
    fn short(&self) -> bool {
        self.answers.len() + self.asked.len() < PROBE_PEERS
    }

    /// The answers that still count at `now`, oldest first.
    fn live(&self, now: Instant) -> impl Iterator<Item = &Answer> + '_ {
        self.answers
            .iter()
            .filter(move |a| now.saturating_duration_since(a.at) < ANSWER_TTL)
    }

    /// The verdict at `now`.
    fn verdict(&self, now: Instant) -> Reachability {
        let live: Vec<&Answer> = self.live(now).collect();
        let yes = live.iter().filter(|a| a.reachable).count();
        let state = match (yes, live.len() - yes) {
            (0, 0) => Reachable::Unknown,
            (y, n) if y >= n => Reachable::Yes,
            _ => Reachable::No,
        };
        // The address most answers name; among equals, the newest.
        let mut votes: Vec<(IpAddr, usize, usize)> = Vec::new();
        for (i, a) in live.iter().enumerate() {
            match votes.iter_mut().find(|v| v.0 == a.seen.ip()) {
                Some(v) => {
                    v.1 += 1;
                    v.2 = i;
                }
                None => votes.push((a.seen.ip(), 1, i)),
            }
        }
        let public = votes
            .iter()
            .max_by_key(|v| (v.1, v.2))
            .map(|v| live[v.2].seen);
        let kept = live.iter().filter(|a| a.kept == Some(true)).count();
        let changed = live.iter().filter(|a| a.kept == Some(false)).count();
        Reachability {
            state,
            public,
            answers: live.len(),
            ports_kept: (kept + changed > 0).then_some(kept >= changed),
            ..Reachability::default()
        }
    }
}

impl<V: Verifier> PeerPolicy<V> {
    /// What the peers' dial-backs say about this node; `Unknown` when it
    /// takes no part in them ([`super::PolicyConfig::dial_backs`] off).
    #[must_use]
    pub fn reachability(&self, now: Instant) -> Reachability {
        let (punches, punched) = self.punch_counts();
        Reachability {
            punches,
            punched,
            ..self
                .reach
                .as_ref()
                .map_or_else(Reachability::default, |r| r.verdict(now))
        }
    }

    /// The address this node's noderef should name now, when it differs
    /// from `current` (the one it names): the public address peers
    /// reached us at (or, behind NAT, saw our links come from), with
    /// `current`'s port, once there is a verdict and at least two peers
    /// agree on that address (one lying peer cannot move it). Behind a
    /// NAT that keeps ports (cone, port-restricted) that is where a hole
    /// punch must aim (`punch`); nobody can dial it otherwise, nor could
    /// they the private address it replaces. For a node that listens on
    /// every interface and so cannot know its own address; the driver
    /// signs the new noderef and gives it to [`PeerPolicy::set_noderef`].
    #[must_use]
    pub fn noderef_address(&self, now: Instant, current: SocketAddr) -> Option<SocketAddr> {
        let r = self.reach.as_ref()?;
        let v = r.verdict(now);
        let public = v.public.filter(|_| v.state != Reachable::Unknown)?;
        let yes = v.state == Reachable::Yes;
        let agree = r
            .live(now)
            .filter(|a| (a.reachable || !yes) && a.seen.ip() == public.ip())
            .count();
        let want = SocketAddr::new(public.ip(), current.port());
        (agree >= 2 && want != current).then_some(want)
    }

    /// This node's signed noderef changed (a new address): announcements,
    /// fold offers and the `Noderef` after a dialing hello carry it from
    /// now on. An under-connected opennet node announces again soon: what
    /// its earlier announcements carried could not be dialed or punched.
    pub fn set_noderef(&mut self, now: Instant, bytes: lichen_routing::NoderefBytes) {
        self.node.set_noderef(lichen_routing::NodeRef {
            location: self.location,
            address: bytes.clone(),
        });
        self.cfg.noderef = Some(bytes);
        let ms = self.ms(now);
        // Now it names where peers reach us or our links come from: a
        // punch aimed at it can work, so opennet offers between nodes
        // behind NAT are worth making and taking (`punch`).
        if self.punch_port().is_some() {
            self.node.set_punching(true);
        }
        self.node.announce_soon(ms);
    }

    /// Peers now reach this node on `port` (a port mapping on its router
    /// forwards it, maybe from another port than the one it listens on):
    /// dial-backs ask for that port, the answers about the old one no
    /// longer count, and a new round of asks starts at the next tick.
    pub fn port_changed(&mut self, now: Instant, port: u16) {
        let Some(r) = self.reach.as_mut().filter(|r| r.port.is_some()) else {
            return;
        };
        r.port = Some(port);
        r.answers.clear();
        r.asked.clear();
        r.next_round = now;
        self.node.set_behind_nat(true);
    }

    /// Tell the routing core whether nobody can dial this node (behind
    /// NAT): its announcements then ask to be offered links
    /// (`Message::AnnounceOffer`). A node learns it from its peers'
    /// dial-backs; a driver that knows (the simulator) says it here.
    pub fn set_behind_nat(&mut self, behind: bool) {
        self.node.set_behind_nat(behind);
    }

    /// The link `pid`, which we dialed, leaves from local port `port`
    /// (the driver knows its socket): the peer's dial-back answer then
    /// tells whether our NAT kept that port ([`Reachability::ports_kept`]).
    pub fn link_local_port(&mut self, pid: PeerId, port: u16) {
        let Some(r) = self.reach.as_mut().filter(|r| r.port.is_some()) else {
            return;
        };
        if self.links.contains_key(&pid) {
            r.local_ports.insert(pid, port);
        }
    }

    /// The dial-back the driver ran for the peer on link `peer` (an
    /// [`Output::Probe`]): `seen` is the address that link comes from,
    /// `reachable` whether the peer's node answered there. Answered on
    /// the link if it is still up.
    pub fn probe_done(&mut self, peer: PeerId, seen: SocketAddr, reachable: bool) {
        if self.links.get(&peer).is_some_and(|l| l.routed) {
            self.out.push_back(Output::Send {
                peer,
                msg: Message::DialBackResult { seen, reachable },
            });
        }
    }

    /// A peer said hello: ask it to dial us back if answers are wanted.
    pub(super) fn reach_hello(&mut self, now: Instant, pid: PeerId) {
        let Some(r) = self.reach.as_ref().filter(|r| r.port.is_some()) else {
            return;
        };
        let wanted = r.verdict(now).answers + r.asked.len() < PROBE_PEERS;
        if wanted {
            self.ask_dial_back(now, pid);
        }
    }

    /// Every tick: forget unanswered asks and those whose link closed;
    /// start a new round when due; between rounds, ask more peers while
    /// fewer than [`PROBE_PEERS`] answers count and fewer are awaited (a
    /// newcomer's first asks often go to seeds that close its link before
    /// answering).
    pub(super) fn reach_tick(&mut self, now: Instant) {
        let Some(want) = self.reach_wanted(now) else {
            return;
        };
        let Some(r) = self.reach.as_ref() else { return };
        let round = now >= r.next_round;
        let answered: Vec<[u8; 32]> = r.live(now).map(|a| a.from).collect();
        let candidates: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(pid, l)| {
                l.routed
                    && !l.seed_client
                    && !r.asked.contains_key(pid)
                    && (round || !answered.contains(&l.remote))
            })
            .map(|(pid, _)| *pid)
            .take(if round { PROBE_PEERS } else { want })
            .collect();
        if round {
            let next = if candidates.is_empty() {
                // No peer to ask yet: look again soon.
                now + Duration::from_secs(10)
            } else {
                now + PROBE_EVERY
            };
            if let Some(r) = &mut self.reach {
                r.next_round = next;
            }
        }
        for pid in candidates {
            self.ask_dial_back(now, pid);
        }
    }

    /// Drop void asks; then how many more peers to ask now (None: none
    /// and no round due).
    fn reach_wanted(&mut self, now: Instant) -> Option<usize> {
        let links = &self.links;
        let r = self.reach.as_mut().filter(|r| r.port.is_some())?;
        r.asked.retain(|pid, (_, at)| {
            now.saturating_duration_since(*at) < PROBE_TIMEOUT && links.contains_key(pid)
        });
        let short = PROBE_PEERS.saturating_sub(r.verdict(now).answers + r.asked.len());
        (now >= r.next_round || short > 0).then_some(short)
    }

    /// The next instant `reach_tick` has work (for `tick_due`): a round,
    /// an ask expiring, or now (an instant past) while answers are short
    /// and a peer not yet asked could be.
    pub(super) fn reach_due(&self) -> Option<Instant> {
        let r = self.reach.as_ref().filter(|r| r.port.is_some())?;
        let can_ask = self.links.iter().any(|(pid, l)| {
            l.routed
                && !l.seed_client
                && !r.asked.contains_key(pid)
                && !r.answers.iter().any(|a| a.from == l.remote)
        });
        if r.short() && can_ask {
            return Some(self.start);
        }
        let expiry = r.asked.values().map(|(_, at)| *at + PROBE_TIMEOUT).min();
        Some(expiry.map_or(r.next_round, |e| e.min(r.next_round)))
    }

    fn ask_dial_back(&mut self, now: Instant, pid: PeerId) {
        let Some(remote) = self.links.get(&pid).map(|l| l.remote) else {
            return;
        };
        let Some((r, port)) = self.reach.as_mut().and_then(|r| r.port.map(|p| (r, p))) else {
            return;
        };
        r.asked.insert(pid, (remote, now));
        self.out.push_back(Output::Send {
            peer: pid,
            msg: Message::DialBack { port },
        });
    }

    /// A link-level dial-back message from the peer on link `pid` (said
    /// hello; a seed client too).
    pub(super) fn reach_message(&mut self, now: Instant, pid: PeerId, msg: Message) {
        let Some(remote) = self.links.get(&pid).map(|l| l.remote) else {
            return;
        };
        match msg {
            Message::DialBack { port } => {
                let Some(r) = &mut self.reach else { return };
                if port == 0 {
                    return;
                }
                // Answered by every node that takes part, asking or not;
                // at most once per ANSWER_EVERY for one asker.
                let last = r.answered.get(&remote).copied();
                if last.is_some_and(|t| now.saturating_duration_since(t) < ANSWER_EVERY) {
                    tracing::debug!(peer = pid.0, "dial-back asked too often: ignored");
                    return;
                }
                r.answered.insert(remote, now);
                if r.answered.len() > 256 {
                    r.answered
                        .retain(|_, t| now.saturating_duration_since(*t) < ANSWER_EVERY);
                }
                self.out.push_back(Output::Probe {
                    peer: pid,
                    key: remote,
                    port,
                });
            }
            Message::DialBackResult { seen, reachable } => {
                let Some(r) = &mut self.reach else { return };
                // Only answers to our own asks count, from the peer asked.
                if r.asked.get(&pid).is_none_or(|(k, _)| *k != remote) {
                    return;
                }
                r.asked.remove(&pid);
                r.answers.retain(|a| a.from != remote);
                let kept = r.local_ports.remove(&pid).map(|p| p == seen.port());
                r.answers.push_back(Answer {
                    from: remote,
                    seen,
                    reachable,
                    kept,
                    at: now,
                });
                while r.answers.len() > KEEP_ANSWERS {
                    r.answers.pop_front();
                }
                // Not known to be reachable: our announcements ask to be
                // offered links.
                let behind = r.verdict(now).state != Reachable::Yes;
                self.node.set_behind_nat(behind);
                tracing::debug!(peer = pid.0, reachable, "dial-back answered");
            }
            _ => {}
        }
    }
}
