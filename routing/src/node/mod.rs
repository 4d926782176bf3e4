//! The per-node routing state machine.
//!
//! [`Node`] performs no I/O and reads no clock. The embedder feeds it events
//! ([`Node::handle_message`], [`Node::handle_local_request`],
//! [`Node::handle_timeout`], peer changes) with the current time in
//! milliseconds and an RNG, then drains [`Node::poll_action`] and arms a
//! timer for [`Node::poll_timeout`]. This is the shape of `quinn-proto`.
//!
//! Every message from a peer is treated as hostile: replies are accepted only
//! from the peer a request was forwarded to, sizes are checked, every table
//! has a cap and entries expire, and offences are counted per peer (a peer
//! over [`Config::misbehaviour_limit`] is disconnected).
//!
//! This module holds [`Node`]'s state and its table bookkeeping; the
//! submodules add its behaviour, each an `impl` block on `Node`, and import
//! only from here (and from `api` and `config`), never from each other:
//!
//! - `api`: ids, the embedder's traits, actions and outcomes.
//! - `config`: [`Config`] and [`Stats`].
//! - `messages`: [`Node::handle_message`]: who may send what, size limits,
//!   dispatch.
//! - `replies`: replies to what this node forwarded.
//! - `requests`: requests, greedy routing with backtracking, answers.
//! - `inserts`: inserts, sinks and store-deep, the fork on cacheable.
//! - `local`: [`Node::handle_local_request`] and the AIMD window.
//! - `peers`: the peer table, seed clients' admission, offences, backoff,
//!   HTL decrements.
//! - `opennet`: announcements and path folding.
//! - `swapping`: darknet location swaps and the checks on what a swap
//!   partner claims.
//! - `pitch`: the Pitch Black defence of Hyphanet build 1492 (a probe
//!   block inserted each period, the previous one fetched, a move to
//!   where data vanished).
//! - `timers`: [`Node::handle_timeout`].

mod api;
mod config;
mod inserts;
mod local;
mod messages;
mod opennet;
mod peers;
mod pitch;
mod replies;
mod requests;
mod swapping;
mod timers;

pub use api::{
    Action, BlockSource, Disconnect, EmptyStore, InsertOutcome, LocalRequest, Millis, PeerId,
    RequestId, RequestOutcome, Space, Verifier,
};
pub use config::{Config, Stats};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;

use crate::location::{Key, Location};
use crate::message::{Block, KeyKind, Message, NodeRef};

/// Failure-table answers held at once, at most; past that the table is
/// not used (requests are routed).
pub const MAX_HELD: usize = 1_024;

/// The per-hop time of routed failures a failure-table answer is held
/// by: the median of the last 64.
const FAILURE_PACE: lichen_tunnel::Rule = lichen_tunnel::Rule {
    samples: 64,
    min_samples: 1,
    percentile: 50,
    factor: 1,
    min_ms: 0,
};

/// A failure-table entry.
#[derive(Clone, Copy, Debug)]
struct Failure {
    /// The highest HTL a request for the key failed at.
    htl: u8,
    expires: Millis,
}

/// The most peers [`Node::keep_peers`] keeps.
pub const MAX_KEPT: usize = 4;

/// Actions an empty queue keeps room for ([`Node::poll_action`]).
const IDLE_ACTIONS: usize = 4;

/// A newcomer kept only to route its announcement: never a route for
/// requests, refused anything but one `Announce`.
#[derive(Clone, Copy, Debug)]
struct SeedClient {
    /// Disconnected at this time.
    until: Millis,
    announced: bool,
}

#[derive(Clone, Debug)]
struct Peer {
    id: PeerId,
    location: Location,
    /// Decrement an HTL at the maximum when it comes from this peer.
    dec_at_max: bool,
    /// Decrement an HTL of 1 when it comes from this peer.
    dec_at_min: bool,
    backoff_until: Millis,
    backoff_len: Millis,
    /// This peer's requests in flight here.
    incoming: u32,
    /// Its budget of immediate answers, in thousandths of an answer.
    answer_budget: u64,
    /// When `answer_budget` was last refilled.
    answer_refill: Millis,
    connected_at: Millis,
    last_success: Millis,
    offences: u32,
    last_announce: Millis,
    announce_count: u32,
    swap_window_start: Millis,
    swap_count: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upstream {
    Local,
    Peer(PeerId),
    /// The upstream peer disconnected; finish for the caches' sake only.
    Gone,
}

#[derive(Clone, Debug)]
struct Pending {
    key: Key,
    kind: KeyKind,
    /// The HTL it goes on with: decremented on arrival, lowered by a
    /// `RouteNotFound` or a failed insert attempt.
    htl: u8,
    /// The HTL as it arrived (the maximum for our own): caching and path
    /// folding are decided from this, never from `htl`, so backtracking
    /// cannot make the requester's neighbour cache or fold.
    htl_received: u8,
    upstream: Upstream,
    insert: Option<Block>,
    /// An announcement being routed (target: the noderef's location).
    announce: Option<NodeRef>,
    /// Its newcomer is behind NAT (`Message::Announce::unreachable`).
    announce_unreachable: bool,
    /// How many more nodes may take its newcomer (`Message::Announce`).
    announce_room: Option<u8>,
    /// `AnnounceOffer`s passed upstream for it (at most `max_htl`).
    offers: u8,
    /// Insert only: cached on arrival, and goes to the long-term store at
    /// the end if every peer it was routed to is farther from the key.
    deep_candidate: bool,
    tried: Vec<PeerId>,
    downstream: Option<PeerId>,
    accepted: bool,
    deadline: Millis,
    waiters: Vec<(u64, Upstream)>,
    /// Insert accepted from a peer, its `InsertData` not here yet.
    data_pending: bool,
    /// Failed attempts while the HTL was above the caching level (where a
    /// failure does not cost HTL); see [`Node::charge_failure`].
    high_htl_failures: u8,
    /// The id the upstream knows this by: the map key, except for a
    /// request or insert that arrived above the caching level (see
    /// [`Node::translate_id`]) or our own request retried (see
    /// [`Node::retry_local`]), which go on under a fresh id.
    reply_id: Option<u64>,
    /// A peer refused it as overloaded.
    overloaded: bool,
    /// Our own: times it was retried under a fresh id.
    retries: u8,
    /// When it was accepted here (a request from a peer): how long its
    /// failure took goes into the node's failure pace.
    started: Millis,
}

impl Pending {
    /// A request, insert or announcement for `key` just accepted from
    /// `upstream` (a peer counts as tried: never routed back to it); the
    /// rest starts empty.
    fn new(key: Key, kind: KeyKind, htl: u8, upstream: Upstream) -> Self {
        Pending {
            key,
            kind,
            htl,
            htl_received: htl,
            upstream,
            insert: None,
            announce: None,
            announce_unreachable: false,
            announce_room: None,
            offers: 0,
            deep_candidate: false,
            tried: match upstream {
                Upstream::Peer(p) => vec![p],
                _ => Vec::new(),
            },
            downstream: None,
            accepted: false,
            deadline: 0,
            waiters: Vec::new(),
            data_pending: false,
            high_htl_failures: 0,
            reply_id: None,
            overloaded: false,
            retries: 0,
            started: 0,
        }
    }
}

/// A request id seen here lately (loop detection, fold offers, late
/// replies). Kept in 48 bytes, not 64: a node keeps one for every request
/// and announcement it saw in the last `recent_ttl`, the routing core's
/// largest table in the simulator (~4 KiB a node at 30,000 nodes).
#[derive(Clone, Debug)]
struct Recent {
    expires: Millis,
    upstream: Upstream,
    /// The peer that answered it (meaningful when `answered`).
    downstream: PeerId,
    /// The id the upstream knows this request by: this entry's own id
    /// unless it went on under a fresh one here ([`Node::translate_id`]).
    reply_id: u64,
    answered: bool,
    fold_expected: bool,
    /// A fold offer for this request may be taken, and a hop may put its
    /// own noderef in it: a forwarded request that arrived at the caching
    /// level or below. Never for our own requests.
    may_fold: bool,
}

impl Recent {
    /// The peer that answered it, if one did.
    fn downstream(&self) -> Option<PeerId> {
        self.answered.then_some(self.downstream)
    }
}

#[derive(Clone, Debug)]
enum SwapState {
    Initiated {
        peer: PeerId,
        location: Location,
        expires: Millis,
    },
    Relay {
        from: PeerId,
        to: PeerId,
        expires: Millis,
    },
}

impl SwapState {
    fn expires(&self) -> Millis {
        match self {
            SwapState::Initiated { expires, .. } | SwapState::Relay { expires, .. } => *expires,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Request,
    Swap,
    /// A fold offer taken: connect now (see `Node::fold_later`).
    Fold,
}

#[derive(Clone, Copy, Debug)]
enum Fail {
    NotFound,
    RouteNotFound,
    TimedOut,
}

/// One node's routing state. See the [module docs](self).
pub struct Node<V> {
    /// Shared: a simulator's nodes all hold one (288 bytes each before).
    cfg: Arc<Config>,
    verifier: V,
    location: Location,
    noderef: Option<NodeRef>,
    /// Behind NAT (the embedder's dial-backs say nobody can dial us): our
    /// announcements ask to be offered links, and we offer no fold.
    behind_nat: bool,
    /// The embedder can hole-punch ([`Action::Punch`]): from behind NAT we
    /// still offer links to newcomers behind NAT.
    punching: bool,
    peers: Vec<Peer>,
    seed_clients: BTreeMap<PeerId, SeedClient>,
    /// Boxed: a map leaf holds eleven entries, and most nodes have one or
    /// two requests in flight (2.3 KiB a node in the simulator unboxed).
    pending: BTreeMap<u64, Box<Pending>>,
    by_key: BTreeMap<Key, u64>,
    /// Keys of this node's own inserts in flight (how many of each).
    local_inserts: BTreeMap<Key, u32>,
    recent: BTreeMap<u64, Recent>,
    recent_order: VecDeque<(Millis, u64)>,
    /// Keys whose requests failed here lately: the highest HTL they
    /// failed at, and when the entry expires.
    failures: BTreeMap<Key, Failure>,
    failure_order: VecDeque<(Millis, Key)>,
    swaps: BTreeMap<u64, SwapState>,
    timers: BinaryHeap<Reverse<(Millis, TimerKind, u64)>>,
    next_swap: Option<Millis>,
    next_announce: Option<Millis>,
    announce_backoff: u32,
    /// The most peers the node had as an announcement left, this round
    /// (until it has half its limit): a re-announcement that finds more
    /// does not slow the next ([`Node::maybe_schedule_announce`]).
    announced_with: usize,
    /// When the next link-length refresh is due (`Node::link_refresh`).
    next_refresh: Option<Millis>,
    refresh_backoff: u32,
    actions: VecDeque<Action>,
    local_queue: VecDeque<(u64, LocalRequest)>,
    window: f64,
    local_in_flight: usize,
    last_fold_accept: Option<Millis>,
    /// When an established peer was last dropped to make room.
    last_replacement: Option<Millis>,
    /// Open invitations (their expiry times, oldest first): see
    /// `Node::invite`.
    invitations: VecDeque<Millis>,
    /// Fold offers taken, by request id: when to connect, and to whom.
    folds: BTreeMap<u64, (Millis, NodeRef)>,
    last_location_change: BTreeMap<PeerId, Millis>,
    /// The Pitch Black probe.
    pitch: pitch::PitchState,
    /// Failure-table answers held until a routed failure would have
    /// come ([`Node::failure_answer_delay`]): (when, to whom, id).
    held: BinaryHeap<Reverse<(Millis, PeerId, u64)>>,
    /// How long the last routed failures here took per hop they had
    /// left (from accepting the request to failing it, over the HTL it
    /// arrived with): a routed failure with `h` hops left takes about `h`
    /// times its median ([`FAILURE_PACE`]).
    failure_pace: lichen_tunnel::LearnedTimeout,
    /// Peers never dropped as the least useful ([`Node::keep_peers`]).
    kept: Vec<PeerId>,
    stats: Stats,
}

impl<V> std::fmt::Debug for Node<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("location", &self.location)
            .field("peers", &self.peers.len())
            .field("pending", &self.pending.len())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl<V: Verifier> Node<V> {
    /// A node at `location` with no peers.
    pub fn new(cfg: impl Into<Arc<Config>>, location: Location, verifier: V) -> Self {
        let cfg = cfg.into();
        let window = cfg.aimd_initial.max(1.0);
        Node {
            cfg,
            verifier,
            location,
            noderef: None,
            behind_nat: false,
            punching: false,
            peers: Vec::new(),
            seed_clients: BTreeMap::new(),
            pending: BTreeMap::new(),
            by_key: BTreeMap::new(),
            local_inserts: BTreeMap::new(),
            recent: BTreeMap::new(),
            recent_order: VecDeque::new(),
            failures: BTreeMap::new(),
            failure_order: VecDeque::new(),
            swaps: BTreeMap::new(),
            timers: BinaryHeap::new(),
            next_swap: None,
            next_announce: None,
            announce_backoff: 0,
            announced_with: 0,
            next_refresh: None,
            refresh_backoff: 0,
            actions: VecDeque::new(),
            local_queue: VecDeque::new(),
            window,
            local_in_flight: 0,
            last_fold_accept: None,
            last_replacement: None,
            invitations: VecDeque::new(),
            folds: BTreeMap::new(),
            last_location_change: BTreeMap::new(),
            pitch: pitch::PitchState::default(),
            kept: Vec::new(),
            held: BinaryHeap::new(),
            failure_pace: lichen_tunnel::LearnedTimeout::new(FAILURE_PACE),
            stats: Stats::default(),
        }
    }

    /// Whether `block` is the valid block for `key` (the node's
    /// verifier).
    pub fn verify_block(&self, key: &Key, kind: KeyKind, block: &[u8]) -> bool {
        self.verifier.verify(key, kind, block)
    }

    /// This node's location.
    pub fn location(&self) -> Location {
        self.location
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Set this node's own opennet noderef (its `location` is overwritten
    /// with the node's location). Needed for announcing and path folding.
    pub fn set_noderef(&mut self, mut noderef: NodeRef) {
        noderef.location = self.location;
        self.noderef = Some(noderef);
    }

    /// Whether nobody can dial this node (the embedder learns it from
    /// its peers' dial-backs): its announcements then ask the nodes that
    /// want it to be dialed ([`Message::AnnounceOffer`]), and it offers
    /// no link in path folding (nobody could take it).
    pub fn set_behind_nat(&mut self, behind: bool) {
        self.behind_nat = behind;
    }

    /// Whether the embedder carries out [`Action::Punch`]: then a node
    /// behind NAT that wants a newcomer behind NAT offers it a link
    /// anyway, marked `punch` ([`Message::AnnounceOffer`]), and both dial
    /// at once.
    pub fn set_punching(&mut self, on: bool) {
        self.punching = on;
    }

    /// Whether the embedder punches ([`Node::set_punching`]).
    #[must_use]
    pub fn punching(&self) -> bool {
        self.punching
    }

    /// Whether this node's announcements ask to be offered links
    /// ([`Node::set_behind_nat`]).
    #[must_use]
    pub fn behind_nat(&self) -> bool {
        self.behind_nat
    }

    /// Connected peers and their locations.
    pub fn peers(&self) -> impl Iterator<Item = (PeerId, Location)> + '_ {
        self.peers.iter().map(|p| (p.id, p.location))
    }

    /// Opennet: never drop these peers to make room for another (the
    /// tunnel layer's primary guards: a guard dropped as "least useful"
    /// is replaced by a backup, one more peer that has been a first hop;
    /// Tor keeps its guards for the same reason). They still go for
    /// offences, and when their link does. At most 4 are kept (the rest
    /// of `peers` is ignored), so most of a full node's peers stay
    /// replaceable.
    pub fn keep_peers(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.kept = peers.into_iter().take(MAX_KEPT).collect();
    }

    /// The peers [`Node::keep_peers`] keeps.
    #[must_use]
    pub fn kept_peers(&self) -> &[PeerId] {
        &self.kept
    }

    /// Number of connected peers (seed clients are not peers).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Seed clients kept now.
    pub fn seed_client_count(&self) -> usize {
        self.seed_clients.len()
    }

    /// Requests in flight here (for memory bounds checks).
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Sizes of every internal table, for bounded-memory tests.
    pub fn table_sizes(&self) -> [usize; 8] {
        [
            self.pending.len(),
            self.recent.len(),
            self.failures.len(),
            self.swaps.len(),
            self.timers.len(),
            self.local_queue.len(),
            self.recent_order.len() + self.failure_order.len(),
            self.folds.len(),
        ]
    }

    /// The current AIMD window (local requests allowed in flight).
    pub fn window(&self) -> f64 {
        self.window
    }

    /// The next action for the embedder, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        loop {
            let Some(a) = self.actions.pop_front() else {
                // Drained: a burst's queue gives its memory back (the
                // simulator holds a node per simulated node).
                if self.actions.capacity() > IDLE_ACTIONS {
                    self.actions.shrink_to(IDLE_ACTIONS);
                }
                return None;
            };
            // The Pitch Black probe's outcomes stay here.
            if let Some(a) = self.pitch_outcome(a) {
                return Some(a);
            }
        }
    }

    /// When [`Node::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        [
            self.timers.peek().map(|Reverse((t, _, _))| *t),
            self.next_swap,
            self.next_announce,
            self.next_refresh,
            self.pitch.next_at,
            self.seed_clients.values().map(|c| c.until).min(),
            self.held.peek().map(|Reverse((t, _, _))| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.id == id)
    }

    fn send(&mut self, to: PeerId, msg: Message) {
        self.actions.push_back(Action::Send { to, msg });
    }

    fn id_in_use(&self, id: u64) -> bool {
        self.pending.contains_key(&id)
            || self.recent.contains_key(&id)
            || self.swaps.contains_key(&id)
    }

    fn remember(&mut self, now: Millis, id: u64, upstream: Upstream) {
        let expires = now + self.cfg.recent_ttl;
        self.recent.insert(
            id,
            Recent {
                expires,
                upstream,
                downstream: PeerId(0),
                reply_id: id,
                answered: false,
                fold_expected: false,
                may_fold: false,
            },
        );
        self.recent_order.push_back((expires, id));
        // Over the cap, the oldest entries go, except those of requests
        // still pending here: they keep their place in the order (moved to
        // the back), or nothing would ever expire or evict them once their
        // request ends. Each entry is looked at once per call, so a table
        // of nothing but pending entries ends the loop.
        let mut kept = Vec::new();
        let mut budget = self.recent_order.len();
        while budget > 0
            && (self.recent.len() > self.cfg.recent_cap
                || self.recent_order.len() + kept.len() > 2 * self.cfg.recent_cap + 16)
        {
            budget -= 1;
            let Some((exp, old)) = self.recent_order.pop_front() else {
                break;
            };
            match self.recent.get(&old) {
                // A stale order entry (the id was remembered again later).
                Some(r) if r.expires != exp => {}
                Some(_) if self.pending.contains_key(&old) => kept.push((exp, old)),
                Some(_) => {
                    self.recent.remove(&old);
                }
                None => {}
            }
        }
        self.recent_order.extend(kept);
    }

    /// A random id in use nowhere here.
    fn fresh_id(&self, rng: &mut impl rand::RngCore) -> u64 {
        let mut id = rng.next_u64();
        while self.id_in_use(id) {
            id = rng.next_u64();
        }
        id
    }

    /// Pending request or insert `id`, which a peer sent us, goes on under
    /// a fresh id: its downstream never learns the id its upstream used,
    /// and answers go back under the old one (`reply_id`). Done at every
    /// hop while the HTL is above the caching level (Tian and Duan's
    /// dynID): the id a node downstream sees was never seen by the nodes
    /// before the last such hop, so asking them about it (a loop probe)
    /// cannot trace the request back to its originator, whose neighbours
    /// are all in that zone. Returns the new id.
    fn translate_id(&mut self, now: Millis, id: u64, rng: &mut impl rand::RngCore) -> u64 {
        let Some(mut p) = self.pending.remove(&id) else {
            return id;
        };
        let fresh = self.fresh_id(rng);
        let old = *p.reply_id.get_or_insert(id);
        let upstream = p.upstream;
        if self.by_key.get(&p.key) == Some(&id) {
            self.by_key.insert(p.key, fresh);
        }
        self.pending.insert(fresh, p);
        self.remember(now, fresh, upstream);
        if let Some(r) = self.recent.get_mut(&fresh) {
            r.reply_id = old;
        }
        fresh
    }

    /// Remember that a request for `key`, forwarded with `htl`, failed
    /// here after `took` ms, having arrived with `received`.
    fn record_failure(&mut self, now: Millis, key: Key, htl: u8, received: u8, took: Millis) {
        if self.cfg.failure_table_cap == 0 {
            return;
        }
        let expires = now + self.cfg.failure_ttl;
        let e = self
            .failures
            .entry(key)
            .or_insert(Failure { htl: 0, expires: 0 });
        e.htl = e.htl.max(htl);
        e.expires = expires;
        self.failure_pace
            .record(took.min(self.cfg.fetch_timeout) / Millis::from(received.max(1)));
        self.failure_order.push_back((expires, key));
        while self.failures.len() > self.cfg.failure_table_cap
            || self.failure_order.len() > 2 * self.cfg.failure_table_cap + 16
        {
            let Some((_, k)) = self.failure_order.pop_front() else {
                break;
            };
            self.failures.remove(&k);
        }
    }

    fn recently_failed(&self, now: Millis, key: &Key, htl: u8) -> bool {
        self.failures
            .get(key)
            .is_some_and(|f| f.expires > now && f.htl >= htl)
    }

    /// How long a routed failure with `htl` hops left takes here: the
    /// median pace of the last ones × `htl`, at most the fetch timeout.
    /// (The pace of the one failure remembered would say how far along
    /// that route the asker is, and so tell a table answer from a routed
    /// failure: the `probe` attack's miss case stayed at 0.53–0.63 with
    /// it.)
    fn failure_answer_delay(&self, htl: u8) -> Millis {
        let pace = self.failure_pace.timeout(self.cfg.fetch_timeout);
        (pace * Millis::from(htl)).min(self.cfg.fetch_timeout)
    }

    /// Send the held answers that are due.
    fn release_held(&mut self, now: Millis) {
        while let Some(&Reverse((at, to, id))) = self.held.peek() {
            if at > now {
                break;
            }
            self.held.pop();
            self.send(to, Message::DataNotFound { id });
        }
    }

    fn expire(&mut self, now: Millis) {
        while let Some(&(exp, id)) = self.recent_order.front() {
            if exp > now {
                break;
            }
            self.recent_order.pop_front();
            if self.recent.get(&id).is_some_and(|r| r.expires <= now) {
                self.recent.remove(&id);
            }
        }
        while let Some(&(exp, key)) = self.failure_order.front() {
            if exp > now {
                break;
            }
            self.failure_order.pop_front();
            if self.failures.get(&key).is_some_and(|f| f.expires <= now) {
                self.failures.remove(&key);
            }
        }
    }

    fn set_timer(&mut self, at: Millis, kind: TimerKind, id: u64) {
        self.timers.push(Reverse((at, kind, id)));
        // Timers of finished requests stay in the heap until due; rebuild
        // it when they dominate, so a flood cannot grow it without bound.
        let live = self.pending.len() + self.swaps.len() + self.folds.len();
        if self.timers.len() > 4 * live + 1024 {
            let timers = std::mem::take(&mut self.timers);
            self.timers = timers
                .into_iter()
                .filter(|Reverse(t)| self.timer_live(t))
                .collect();
        }
    }

    /// Whether a timer still has work to do when due: its request, swap
    /// or fold is under way with that deadline. Timers of finished
    /// requests stay in the heap (a heap cannot remove from its middle).
    fn timer_live(&self, &(t, kind, id): &(Millis, TimerKind, u64)) -> bool {
        match kind {
            TimerKind::Request => self.pending.get(&id).is_some_and(|p| p.deadline == t),
            TimerKind::Swap => self.swaps.contains_key(&id),
            TimerKind::Fold => self.folds.get(&id).is_some_and(|f| f.0 == t),
        }
    }

    /// Drop the dead timers at the top of the heap, so that
    /// [`Node::poll_timeout`] names the next instant with work to do
    /// rather than one at which nothing happens (a driver wakes for
    /// nothing otherwise: in the simulator, a third of all events). Called
    /// after every input that can end a request, swap or fold.
    fn prune_timers(&mut self) {
        while let Some(Reverse(top)) = self.timers.peek() {
            if self.timer_live(top) {
                break;
            }
            self.timers.pop();
        }
    }

    fn release(&mut self, upstream: Upstream) {
        if let Upstream::Peer(u) = upstream {
            if let Some(p) = self.peer_mut(u) {
                p.incoming = p.incoming.saturating_sub(1);
            }
        }
    }

    fn take_pending(&mut self, id: u64) -> Option<Box<Pending>> {
        let p = self.pending.remove(&id)?;
        if self.by_key.get(&p.key) == Some(&id) {
            self.by_key.remove(&p.key);
        }
        if p.upstream == Upstream::Local && p.insert.is_some() {
            if let Some(n) = self.local_inserts.get_mut(&p.key) {
                *n -= 1;
                if *n == 0 {
                    self.local_inserts.remove(&p.key);
                }
            }
        }
        Some(p)
    }
}
