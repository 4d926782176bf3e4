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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::location::{Key, Location};
use crate::message::{Block, KeyKind, Message, NodeRef};

/// Longest a local request waits for a backed-off peer before it fails
/// with RouteNotFound (ms).
const LOCAL_BACKOFF_WAIT: Millis = 10_000;

/// Failed attempts (loops, "route not found") an insert may have while
/// its HTL is above the caching level, where they cost no HTL (Freenet
/// allows 5 too).
const MAX_HIGH_HTL_FAILURES: u8 = 5;

/// Announcements one peer may pass us per second.
const ANNOUNCE_BURST: u32 = 20;

/// A seed client is disconnected this long after its announcement is
/// answered (time for the reply to leave).
const SEED_CLIENT_LINGER: Millis = 2_000;

/// The embedder's handle for a connected peer. Opaque to this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub u64);

/// The id of a local request or insert (equal to its wire id; never shown to
/// peers as "ours": the wire format has no way to say so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Time in milliseconds on the embedder's monotonic clock.
pub type Millis = u64;

/// Block verification, supplied by the embedder (the crypto crate checks
/// SHA-256 for CHKs and the signature plus routing hash for SSKs).
pub trait Verifier {
    /// Whether `block` is the valid block for `key`.
    fn verify(&self, key: &Key, kind: KeyKind, block: &[u8]) -> bool;
}

impl<F: Fn(&Key, KeyKind, &[u8]) -> bool> Verifier for F {
    fn verify(&self, key: &Key, kind: KeyKind, block: &[u8]) -> bool {
        self(key, kind, block)
    }
}

/// Read access to the node's shared store and cache (not the private client
/// cache), consulted when a request or SSK insert arrives.
pub trait BlockSource {
    /// The stored block for `key`, if any.
    fn get(&mut self, key: &Key, kind: KeyKind) -> Option<Block>;
}

/// A source with nothing in it (for tests and for nodes without a store).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyStore;

impl BlockSource for EmptyStore {
    fn get(&mut self, _: &Key, _: KeyKind) -> Option<Block> {
        None
    }
}

/// Where the embedder should put a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Space {
    /// Long-term store (insert sinks).
    Store,
    /// Shared cache (nodes on a path).
    Cache,
}

/// How a local request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The block (verified). The embedder puts it in the private client
    /// cache; this crate never asks to put local data in the shared store.
    Found(Block),
    /// The HTL ran out.
    NotFound,
    /// The request ran out of peers with HTL left.
    RouteNotFound,
    /// The key failed recently (failure table); not sent.
    RecentlyFailed,
    /// Local queue full (AIMD window).
    Overloaded,
    /// No answer in time.
    TimedOut,
}

/// How a local insert ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The insert ran until its HTL was used up.
    Success,
    /// The insert ran out of peers with `htl` hops left (it is stored on
    /// the nodes it reached).
    RouteNotFound {
        /// Hops left when routing gave up.
        htl: u8,
    },
    /// SSK collision: this different block is already stored.
    Collision(Block),
    /// Local queue full.
    Overloaded,
    /// No answer in time.
    TimedOut,
    /// The block does not verify against the key; nothing was sent.
    InvalidBlock,
}

/// Why [`Action::Disconnect`] closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Disconnect {
    /// Opennet, full: dropped to make room (it may come back later).
    LeastUseful,
    /// A seed client whose announcement is done (or whose time is up).
    SeedClientDone,
    /// Over [`Config::misbehaviour_limit`] offences: keep it out for a while.
    Misbehaving,
}

/// What the embedder should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `msg` to `to`.
    Send {
        /// Recipient.
        to: PeerId,
        /// Message.
        msg: Message,
    },
    /// Put a verified block in the shared store or cache.
    StoreBlock {
        /// Which space.
        space: Space,
        /// Routing key.
        key: Key,
        /// Kind.
        kind: KeyKind,
        /// Block.
        block: Block,
    },
    /// A local request finished.
    RequestDone {
        /// Which request.
        id: RequestId,
        /// Result.
        outcome: RequestOutcome,
    },
    /// A local insert finished.
    InsertDone {
        /// Which insert.
        id: RequestId,
        /// Result.
        outcome: InsertOutcome,
    },
    /// Opennet: open a connection to this node, then call
    /// [`Node::accept_opennet_peer`] when it is up.
    Connect {
        /// The node to connect to.
        noderef: NodeRef,
    },
    /// Close the connection to this peer. The node has already forgotten
    /// it.
    Disconnect {
        /// The peer.
        peer: PeerId,
        /// Why: a misbehaving peer should not be let back in soon.
        why: Disconnect,
    },
    /// This node's location changed (darknet swap or reset): persist it.
    LocationChanged {
        /// New location.
        location: Location,
    },
}

/// A request from the local client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalRequest {
    /// Fetch a block (the embedder has already looked in its own stores).
    Fetch {
        /// Routing key.
        key: Key,
        /// Kind.
        kind: KeyKind,
    },
    /// Insert a block.
    Insert {
        /// Routing key.
        key: Key,
        /// Kind.
        kind: KeyKind,
        /// The block.
        block: Block,
    },
    /// Opennet: announce this node (needs [`Node::set_noderef`]).
    Announce,
}

/// Tunables. The defaults are for a real network; the simulator shortens the
/// timers to its virtual latencies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// Maximum hops to live (18, as Freenet).
    pub max_htl: u8,
    /// Nodes put blocks in their shared store or cache only when the
    /// request's HTL is at most this (default `max_htl - 2`): nodes next to
    /// the requester must not cache, or probing their cache would reveal
    /// what the requester fetched.
    pub cache_max_htl: u8,
    /// Peer limit (opennet); least useful peers are dropped beyond it.
    pub max_peers: usize,
    /// Opennet: path folding and announcements on.
    pub opennet: bool,
    /// Darknet: location swapping on.
    pub swapping: bool,
    /// Requests a single peer may have in flight at this node.
    pub max_incoming_per_peer: u32,
    /// Requests in flight at this node, all peers together.
    pub max_pending: usize,
    /// Wait this long for `Accepted` before trying the next peer.
    pub accept_timeout: Millis,
    /// After `Accepted`, wait at most this long (scaled by HTL) for the end.
    pub fetch_timeout: Millis,
    /// First backoff after an overload or timeout; doubles each time.
    pub backoff_initial: Millis,
    /// Backoff ceiling.
    pub backoff_max: Millis,
    /// How long a failed key is remembered.
    pub failure_ttl: Millis,
    /// Failure table size.
    pub failure_table_cap: usize,
    /// How long request ids are remembered (loop detection, fold relaying).
    pub recent_ttl: Millis,
    /// Remembered ids.
    pub recent_cap: usize,
    /// Local requests waiting for the AIMD window.
    pub local_queue_cap: usize,
    /// AIMD window at start.
    pub aimd_initial: f64,
    /// AIMD window ceiling.
    pub aimd_max: f64,
    /// Path folding: a hop replaces the offered noderef by its own with
    /// probability 1/`fold_reset_one_in` (20), so the requester cannot tell
    /// whether the offer comes from the data source.
    pub fold_reset_one_in: u32,
    /// Peers younger than this are never dropped as least useful.
    pub peer_grace: Millis,
    /// When full, take a new opennet peer at most this often.
    pub fold_min_interval: Millis,
    /// Coalesced requests per in-flight request.
    pub max_waiters: usize,
    /// Opennet: with fewer than `max_peers / 2` peers, announce again this
    /// often.
    pub announce_interval: Millis,
    /// Darknet: start a swap about this often.
    pub swap_interval: Millis,
    /// Darknet: length of the swap random walk.
    pub swap_htl: u8,
    /// Darknet: forget swap state after this long.
    pub swap_timeout: Millis,
    /// Darknet: swap requests one peer may pass us per `swap_interval`.
    pub swap_per_peer: u32,
    /// Pitch Black mitigation: at each swap period reset the location to a
    /// random one with probability 1/`location_reset_one_in` (0: never).
    pub location_reset_one_in: u32,
    /// Offences after which a peer is disconnected.
    pub misbehaviour_limit: u32,
    /// Largest accepted noderef `address`.
    pub max_noderef_len: usize,
    /// Largest accepted block.
    pub max_block_len: usize,
    /// Largest accepted peer-location list in swaps.
    pub max_swap_peers: usize,
    /// Opennet, full: newcomers kept at once only to route their one
    /// announcement ("seed clients", as Freenet's seed nodes keep them).
    pub max_seed_clients: usize,
    /// Longest a seed client is kept.
    pub seed_client_ttl: Millis,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_htl: 18,
            cache_max_htl: 16,
            max_peers: 20,
            opennet: true,
            swapping: false,
            max_incoming_per_peer: 32,
            max_pending: 4096,
            accept_timeout: 10_000,
            fetch_timeout: 120_000,
            backoff_initial: 1_000,
            backoff_max: 600_000,
            failure_ttl: 180_000,
            failure_table_cap: 8192,
            recent_ttl: 600_000,
            recent_cap: 32_768,
            local_queue_cap: 1024,
            aimd_initial: 8.0,
            aimd_max: 128.0,
            fold_reset_one_in: 20,
            peer_grace: 120_000,
            fold_min_interval: 30_000,
            max_waiters: 32,
            announce_interval: 60_000,
            swap_interval: 10_000,
            swap_htl: 10,
            swap_timeout: 30_000,
            swap_per_peer: 8,
            location_reset_one_in: 10_000,
            misbehaviour_limit: 100,
            max_noderef_len: 2048,
            max_block_len: 64 * 1024,
            max_swap_peers: 128,
            max_seed_clients: 64,
            seed_client_ttl: 30_000,
        }
    }
}

/// Counters, for the simulator and the node's status page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Messages from peers we do not know.
    pub unknown_peer: u64,
    /// Offences counted against peers (all kinds).
    pub misbehaviour: u64,
    /// Replies for ids we never handled or from the wrong peer.
    pub unexpected_replies: u64,
    /// Blocks that failed verification.
    pub bad_blocks: u64,
    /// HTL values outside 1..=max.
    pub bad_htl: u64,
    /// Requests rejected as loops.
    pub loops_rejected: u64,
    /// Requests rejected for overload.
    pub overload_rejected: u64,
    /// Requests answered from the failure table.
    pub recently_failed: u64,
    /// Requests coalesced onto an identical one in flight.
    pub coalesced: u64,
    /// Requests answered from the store.
    pub served_from_store: u64,
    /// Peers disconnected for misbehaviour.
    pub disconnected_misbehaving: u64,
    /// Peers dropped as least useful.
    pub dropped_least_useful: u64,
    /// Swaps done.
    pub swaps: u64,
    /// Location resets (Pitch Black mitigation).
    pub location_resets: u64,
    /// Swap requests refused as implausible or rate-limited.
    pub swaps_refused: u64,
    /// Local requests that waited for a backed-off peer instead of failing.
    #[serde(default)]
    pub backoff_waits: u64,
    /// Newcomers kept as seed clients (full, they could not be peers).
    #[serde(default)]
    pub seed_clients: u64,
    /// Newcomers refused because the seed-client table was full too.
    #[serde(default)]
    pub seed_clients_refused: u64,
    /// Inserts that reached the caching level here and went on under a
    /// fresh id ([`Node::fork_on_cacheable`]).
    #[serde(default)]
    pub inserts_forked: u64,
}

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
    htl: u8,
    upstream: Upstream,
    insert: Option<Block>,
    /// An announcement being routed (target: the noderef's location).
    announce: Option<NodeRef>,
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
    /// The id the upstream knows this by: the map key, except for an
    /// insert forked here (see [`Node::fork_on_cacheable`]), which is
    /// routed on under a fresh id.
    reply_id: Option<u64>,
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
            upstream,
            insert: None,
            announce: None,
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
        }
    }
}

#[derive(Clone, Debug)]
struct Recent {
    expires: Millis,
    upstream: Upstream,
    downstream: Option<PeerId>,
    fold_expected: bool,
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
}

#[derive(Clone, Copy, Debug)]
enum Fail {
    NotFound,
    RouteNotFound,
    TimedOut,
}

/// One node's routing state. See the [module docs](self).
pub struct Node<V> {
    cfg: Config,
    verifier: V,
    location: Location,
    noderef: Option<NodeRef>,
    peers: Vec<Peer>,
    seed_clients: BTreeMap<PeerId, SeedClient>,
    pending: BTreeMap<u64, Pending>,
    by_key: BTreeMap<Key, u64>,
    /// Keys of this node's own inserts in flight (how many of each).
    local_inserts: BTreeMap<Key, u32>,
    recent: BTreeMap<u64, Recent>,
    recent_order: VecDeque<(Millis, u64)>,
    failures: BTreeMap<Key, (u8, Millis)>,
    failure_order: VecDeque<(Millis, Key)>,
    swaps: BTreeMap<u64, SwapState>,
    timers: BinaryHeap<Reverse<(Millis, TimerKind, u64)>>,
    next_swap: Option<Millis>,
    next_announce: Option<Millis>,
    announce_backoff: u32,
    actions: VecDeque<Action>,
    local_queue: VecDeque<(u64, LocalRequest)>,
    window: f64,
    local_in_flight: usize,
    last_fold_accept: Option<Millis>,
    last_location_change: BTreeMap<PeerId, Millis>,
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
    pub fn new(cfg: Config, location: Location, verifier: V) -> Self {
        let window = cfg.aimd_initial.max(1.0);
        Node {
            cfg,
            verifier,
            location,
            noderef: None,
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
            actions: VecDeque::new(),
            local_queue: VecDeque::new(),
            window,
            local_in_flight: 0,
            last_fold_accept: None,
            last_location_change: BTreeMap::new(),
            stats: Stats::default(),
        }
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

    /// Connected peers and their locations.
    pub fn peers(&self) -> impl Iterator<Item = (PeerId, Location)> + '_ {
        self.peers.iter().map(|p| (p.id, p.location))
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
    pub fn table_sizes(&self) -> [usize; 7] {
        [
            self.pending.len(),
            self.recent.len(),
            self.failures.len(),
            self.swaps.len(),
            self.timers.len(),
            self.local_queue.len(),
            self.recent_order.len() + self.failure_order.len(),
        ]
    }

    /// The current AIMD window (local requests allowed in flight).
    pub fn window(&self) -> f64 {
        self.window
    }

    /// The next action for the embedder, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Node::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        [
            self.timers.peek().map(|Reverse((t, _, _))| *t),
            self.next_swap,
            self.next_announce,
            self.seed_clients.values().map(|c| c.until).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---------------------------------------------------------------- peers

    /// Whether an opennet connection would be taken now (room, or a peer
    /// old enough and unproductive enough to drop, at most once per
    /// `fold_min_interval`).
    pub fn wants_peer(&self, now: Millis) -> bool {
        if self.peers.len() < self.cfg.max_peers {
            return true;
        }
        let interval_ok = self
            .last_fold_accept
            .is_none_or(|t| now.saturating_sub(t) >= self.cfg.fold_min_interval);
        interval_ok && self.least_useful(now).is_some()
    }

    /// Add a peer unconditionally (darknet friends, simulator wiring). The
    /// per-connection HTL decrement decisions are drawn here, once.
    pub fn add_peer(
        &mut self,
        now: Millis,
        peer: PeerId,
        location: Location,
        rng: &mut impl RngCore,
    ) {
        if let Some(p) = self.peers.iter_mut().find(|p| p.id == peer) {
            p.location = location;
            return;
        }
        self.peers.push(Peer {
            id: peer,
            location,
            dec_at_max: rng.gen_bool(0.5),
            dec_at_min: rng.gen_bool(0.25),
            backoff_until: 0,
            backoff_len: 0,
            incoming: 0,
            connected_at: now,
            last_success: now,
            offences: 0,
            last_announce: 0,
            announce_count: 0,
            swap_window_start: 0,
            swap_count: 0,
        });
        if self.cfg.swapping && self.next_swap.is_none() {
            self.next_swap = Some(now + rng.gen_range(0..self.cfg.swap_interval.max(1)));
        }
    }

    /// Opennet: a new connection is up (we asked for it with
    /// [`Action::Connect`], or the other side did). Returns whether it is
    /// kept; when full, the least useful peer is dropped
    /// ([`Action::Disconnect`]) to make room.
    pub fn accept_opennet_peer(
        &mut self,
        now: Millis,
        peer: PeerId,
        location: Location,
        rng: &mut impl RngCore,
    ) -> bool {
        if self.peers.iter().any(|p| p.id == peer) {
            return true;
        }
        if self.peers.len() >= self.cfg.max_peers {
            if !self.wants_peer(now) {
                return false;
            }
            if let Some(victim) = self.least_useful(now) {
                self.stats.dropped_least_useful += 1;
                self.disconnect(now, victim, Disconnect::LeastUseful, rng);
            }
        }
        self.last_fold_accept = Some(now);
        self.add_peer(now, peer, location, rng);
        true
    }

    /// Opennet, when [`Node::accept_opennet_peer`] said no to a node that
    /// connected to us: keep it as a seed client instead, so a full node
    /// (a seed) still lets newcomers in. A seed client may send one
    /// `Announce`, which is routed as any other; its requests are refused
    /// as overload; it is disconnected ([`Action::Disconnect`]) soon after
    /// its announcement is answered, or after `seed_client_ttl`. It is not
    /// a peer: it is never routed to and not counted. Returns whether it is
    /// kept (false: not opennet, already a peer, or the table is full).
    pub fn accept_seed_client(&mut self, now: Millis, peer: PeerId) -> bool {
        if !self.cfg.opennet || self.peers.iter().any(|p| p.id == peer) {
            return false;
        }
        if self.seed_clients.contains_key(&peer) {
            return true;
        }
        if self.seed_clients.len() >= self.cfg.max_seed_clients {
            self.stats.seed_clients_refused += 1;
            return false;
        }
        self.stats.seed_clients += 1;
        self.seed_clients.insert(
            peer,
            SeedClient {
                until: now + self.cfg.seed_client_ttl,
                announced: false,
            },
        );
        true
    }

    /// A peer went away. Requests forwarded to it move on to the next peer;
    /// requests it gave us finish without a reply.
    pub fn remove_peer(&mut self, now: Millis, peer: PeerId, rng: &mut impl RngCore) {
        if self.seed_clients.remove(&peer).is_none() {
            let Some(i) = self.peers.iter().position(|p| p.id == peer) else {
                return;
            };
            self.peers.swap_remove(i);
            self.last_location_change.remove(&peer);
            self.maybe_schedule_announce(now);
        }
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            p.waiters.retain(|(_, u)| *u != Upstream::Peer(peer));
            if p.upstream == Upstream::Peer(peer) {
                p.upstream = Upstream::Gone;
            }
            if p.downstream == Some(peer) {
                p.downstream = None;
                self.route(now, id, rng);
            }
        }
        self.start_queued(now, rng);
    }

    /// Under-connected opennet nodes announce again, backing off
    /// exponentially (up to 32 intervals) while that does not help.
    fn maybe_schedule_announce(&mut self, now: Millis) {
        if self.peers.len() >= self.cfg.max_peers / 2 {
            self.announce_backoff = 0;
            return;
        }
        if self.cfg.opennet && self.noderef.is_some() && self.next_announce.is_none() {
            let mult = 1u64 << self.announce_backoff.min(5);
            self.next_announce = Some(now + self.cfg.announce_interval * mult);
        }
    }

    fn disconnect(&mut self, now: Millis, peer: PeerId, why: Disconnect, rng: &mut impl RngCore) {
        self.remove_peer(now, peer, rng);
        self.actions.push_back(Action::Disconnect { peer, why });
    }

    /// The peer that has gone longest without a success, among those past
    /// their grace period.
    fn least_useful(&self, now: Millis) -> Option<PeerId> {
        self.peers
            .iter()
            .filter(|p| now.saturating_sub(p.connected_at) >= self.cfg.peer_grace)
            .min_by_key(|p| (p.last_success, p.id))
            .map(|p| p.id)
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.id == id)
    }

    fn offence(&mut self, now: Millis, peer: PeerId, rng: &mut impl RngCore) {
        self.stats.misbehaviour += 1;
        let limit = self.cfg.misbehaviour_limit;
        let over = match self.peer_mut(peer) {
            Some(p) => {
                p.offences = p.offences.saturating_add(1);
                p.offences >= limit
            }
            None => false,
        };
        if over {
            self.stats.disconnected_misbehaving += 1;
            self.disconnect(now, peer, Disconnect::Misbehaving, rng);
        }
    }

    fn backoff(&mut self, now: Millis, peer: PeerId, rng: &mut impl RngCore) {
        let (init, max) = (self.cfg.backoff_initial.max(1), self.cfg.backoff_max.max(1));
        if let Some(p) = self.peer_mut(peer) {
            p.backoff_len = if p.backoff_len == 0 {
                init
            } else {
                p.backoff_len.saturating_mul(2).min(max)
            };
            let half = (p.backoff_len / 2).max(1);
            p.backoff_until = now + half + rng.gen_range(0..half);
        }
    }

    fn peer_success(&mut self, now: Millis, peer: PeerId) {
        if let Some(p) = self.peer_mut(peer) {
            p.last_success = now;
            p.backoff_len = 0;
        }
    }

    /// HTL after arriving from `from` (`None`: local, no decrement, so the
    /// originator sends the maximum exactly like a forwarder that kept it).
    fn decrement(&self, htl: u8, from: Option<PeerId>) -> u8 {
        let Some(p) = from.and_then(|f| self.peers.iter().find(|p| p.id == f)) else {
            return htl;
        };
        if htl >= self.cfg.max_htl {
            if p.dec_at_max {
                self.cfg.max_htl - 1
            } else {
                self.cfg.max_htl
            }
        } else if htl == 1 {
            if p.dec_at_min {
                0
            } else {
                1
            }
        } else {
            htl - 1
        }
    }

    fn clamp_htl(&mut self, now: Millis, htl: u8, from: PeerId, rng: &mut impl RngCore) -> u8 {
        if htl == 0 || htl > self.cfg.max_htl {
            self.stats.bad_htl += 1;
            self.offence(now, from, rng);
            htl.clamp(1, self.cfg.max_htl)
        } else {
            htl
        }
    }

    // ------------------------------------------------------- bookkeeping

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
                downstream: None,
                fold_expected: false,
            },
        );
        self.recent_order.push_back((expires, id));
        while self.recent.len() > self.cfg.recent_cap
            || self.recent_order.len() > 2 * self.cfg.recent_cap + 16
        {
            let Some((_, old)) = self.recent_order.pop_front() else {
                break;
            };
            if !self.pending.contains_key(&old) {
                self.recent.remove(&old);
            }
        }
    }

    fn record_failure(&mut self, now: Millis, key: Key, htl: u8) {
        if self.cfg.failure_table_cap == 0 {
            return;
        }
        let expires = now + self.cfg.failure_ttl;
        let e = self.failures.entry(key).or_insert((0, 0));
        e.0 = e.0.max(htl);
        e.1 = expires;
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
            .is_some_and(|&(h, exp)| exp > now && h >= htl)
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
            if self.failures.get(&key).is_some_and(|f| f.1 <= now) {
                self.failures.remove(&key);
            }
        }
    }

    fn set_timer(&mut self, at: Millis, kind: TimerKind, id: u64) {
        self.timers.push(Reverse((at, kind, id)));
        // Timers of finished requests stay in the heap until due; rebuild
        // it when they dominate, so a flood cannot grow it without bound.
        let live = self.pending.len() + self.swaps.len();
        if self.timers.len() > 4 * live + 1024 {
            let pending = &self.pending;
            let swaps = &self.swaps;
            self.timers.retain(|Reverse((t, k, id))| match k {
                TimerKind::Request => pending.get(id).is_some_and(|p| p.deadline == *t),
                TimerKind::Swap => swaps.contains_key(id),
            });
        }
    }

    // ------------------------------------------------------------ events

    /// A message arrived from `from`.
    pub fn handle_message(
        &mut self,
        now: Millis,
        from: PeerId,
        msg: Message,
        store: &mut impl BlockSource,
        rng: &mut impl RngCore,
    ) {
        self.expire(now);
        if self.seed_clients.contains_key(&from) {
            self.on_seed_client_message(now, from, msg, rng);
            return;
        }
        if !self.peers.iter().any(|p| p.id == from) {
            self.stats.unknown_peer += 1;
            return;
        }
        if !self.within_limits(&msg) {
            self.offence(now, from, rng);
            return;
        }
        self.dispatch(now, from, msg, store, rng);
        self.start_queued(now, rng);
    }

    fn dispatch(
        &mut self,
        now: Millis,
        from: PeerId,
        msg: Message,
        store: &mut impl BlockSource,
        rng: &mut impl RngCore,
    ) {
        match msg {
            Message::Request { id, key, htl, kind } => {
                self.on_request(now, from, id, key, htl, kind, store, rng)
            }
            Message::Insert { id, key, htl, kind } => {
                self.on_insert(now, from, id, key, htl, kind, rng);
            }
            Message::InsertData { id, block } => {
                self.on_insert_data(now, from, id, block, store, rng)
            }
            Message::Accepted { id } => {
                if self.check_downstream(now, from, id, rng) {
                    let fetch = self.cfg.fetch_timeout;
                    let max = u64::from(self.cfg.max_htl) + 1;
                    if let Some(p) = self.pending.get_mut(&id) {
                        if !p.accepted {
                            p.accepted = true;
                            let scaled = fetch * (u64::from(p.htl) + 1) / max;
                            p.deadline = now + scaled.max(self.cfg.accept_timeout);
                            let d = p.deadline;
                            // An insert's block follows its acceptance, so a
                            // loop or overload costs a header, not 32 KiB.
                            let data = p.insert.clone();
                            self.set_timer(d, TimerKind::Request, id);
                            if let Some(block) = data {
                                self.send(from, Message::InsertData { id, block });
                            }
                        }
                    }
                }
            }
            Message::RejectedLoop { id } => {
                if self.check_downstream(now, from, id, rng) {
                    // Announcements pay one hop per loop, so their
                    // exploration near the target stays bounded.
                    let mut out_of_htl = false;
                    if let Some(p) = self.pending.get_mut(&id) {
                        if p.announce.is_some() {
                            p.htl = p.htl.saturating_sub(1);
                            out_of_htl = p.htl == 0;
                        }
                    }
                    if out_of_htl {
                        self.announce_done(now, id);
                    } else if self.charge_failure(now, id) {
                        self.route(now, id, rng);
                    }
                }
            }
            Message::RejectedOverload { id } => {
                if self.check_downstream(now, from, id, rng) {
                    self.backoff(now, from, rng);
                    if let Some(p) = self
                        .pending
                        .get_mut(&id)
                        .filter(|p| p.upstream == Upstream::Local)
                    {
                        // Overload is not a verdict on the key: our own
                        // request may go back to this peer once its backoff
                        // is over (route() waits for it if nothing else is
                        // left). Backoffs double, so this ends.
                        p.tried.retain(|&t| t != from);
                        self.aimd_decrease();
                    }
                    self.route(now, id, rng);
                }
            }
            Message::RouteNotFound { id, htl } => {
                if self.check_downstream(now, from, id, rng) {
                    let cur = self.pending.get(&id).map_or(0, |p| p.htl);
                    if htl > cur {
                        // Lying about HTL to keep a request alive: clamp.
                        self.stats.bad_htl += 1;
                        self.offence(now, from, rng);
                        if self
                            .pending
                            .get(&id)
                            .is_none_or(|p| p.downstream != Some(from))
                        {
                            return;
                        }
                    }
                    let new = htl.min(cur);
                    if let Some(p) = self.pending.get_mut(&id) {
                        p.htl = new;
                    }
                    if new == 0 {
                        self.fail(now, id, Fail::NotFound);
                    } else if self.charge_failure(now, id) {
                        self.route(now, id, rng);
                    }
                }
            }
            Message::DataNotFound { id } => {
                if self.check_downstream(now, from, id, rng) {
                    if self
                        .pending
                        .get(&id)
                        .is_some_and(|p| p.insert.is_some() || p.announce.is_some())
                    {
                        self.offence(now, from, rng);
                        self.retry(now, id, from, rng);
                    } else {
                        self.peer_success(now, from);
                        self.fail(now, id, Fail::NotFound);
                    }
                }
            }
            Message::DataFound { id, block } => {
                if self.check_downstream(now, from, id, rng) {
                    let Some(p) = self.pending.get(&id) else {
                        return;
                    };
                    if p.insert.is_some()
                        || p.announce.is_some()
                        || !self.verifier.verify(&p.key, p.kind, &block)
                    {
                        self.stats.bad_blocks += 1;
                        self.backoff(now, from, rng);
                        self.offence(now, from, rng);
                        self.retry(now, id, from, rng);
                    } else {
                        self.request_found(now, id, from, block);
                    }
                }
            }
            Message::InsertReply { id } => {
                if self.check_downstream(now, from, id, rng) {
                    if self.pending.get(&id).is_some_and(|p| p.insert.is_some()) {
                        self.peer_success(now, from);
                        self.insert_done(id, None);
                    } else {
                        self.offence(now, from, rng);
                    }
                }
            }
            Message::AnnounceReply { id } => {
                if self.check_downstream(now, from, id, rng) {
                    if self.pending.get(&id).is_some_and(|p| p.announce.is_some()) {
                        self.announce_done(now, id);
                    } else {
                        self.offence(now, from, rng);
                    }
                }
            }
            Message::Collision { id, block } => {
                if self.check_downstream(now, from, id, rng) {
                    let ok = self.pending.get(&id).is_some_and(|p| {
                        p.insert.is_some()
                            && p.kind == KeyKind::Ssk
                            && self.verifier.verify(&p.key, p.kind, &block)
                    });
                    if ok {
                        self.insert_done(id, Some(block));
                    } else {
                        self.stats.bad_blocks += 1;
                        self.offence(now, from, rng);
                        self.retry(now, id, from, rng);
                    }
                }
            }
            Message::FoldOffer { id, noderef } => self.on_fold_offer(now, from, id, noderef, rng),
            Message::Announce { id, htl, noderef } => {
                self.on_announce(now, from, id, htl, noderef, rng)
            }
            Message::SwapRequest {
                id,
                htl,
                location,
                peer_locations,
            } => self.on_swap_request(now, from, id, htl, location, peer_locations, rng),
            Message::SwapReply {
                id,
                accepted,
                location,
                peer_locations,
            } => self.on_swap_reply(now, from, id, accepted, location, peer_locations, rng),
            Message::SwapRejected { id } => match self.swaps.get(&id) {
                Some(SwapState::Relay { from: up, to, .. }) if *to == from => {
                    let up = *up;
                    self.swaps.remove(&id);
                    self.send(up, Message::SwapRejected { id });
                }
                Some(SwapState::Initiated { peer, .. }) if *peer == from => {
                    self.swaps.remove(&id);
                }
                _ => {
                    self.stats.unexpected_replies += 1;
                }
            },
            // The embedder's (a link-level introduction): nothing to route.
            Message::Noderef { .. } => {}
            Message::LocationChanged { location } => {
                // Only darknet peers change location; record it (at most a
                // few entries per peer, removed with the peer).
                if self.cfg.swapping {
                    self.last_location_change.insert(from, now);
                    if let Some(p) = self.peer_mut(from) {
                        p.location = location;
                    }
                } else {
                    self.offence(now, from, rng);
                }
            }
        }
    }

    fn within_limits(&self, msg: &Message) -> bool {
        match msg {
            Message::InsertData { block, .. }
            | Message::DataFound { block, .. }
            | Message::Collision { block, .. } => block.len() <= self.cfg.max_block_len,
            Message::FoldOffer { noderef, .. } | Message::Announce { noderef, .. } => {
                noderef.address.len() <= self.cfg.max_noderef_len
            }
            Message::Noderef { noderef } => noderef.len() <= self.cfg.max_noderef_len,
            Message::SwapRequest { peer_locations, .. }
            | Message::SwapReply { peer_locations, .. } => {
                peer_locations.len() <= self.cfg.max_swap_peers
            }
            _ => true,
        }
    }

    /// A reply for `id` is legitimate only from the peer we forwarded it to.
    fn check_downstream(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        rng: &mut impl RngCore,
    ) -> bool {
        match self.pending.get(&id) {
            Some(p) if p.downstream == Some(from) => true,
            Some(p) if p.tried.contains(&from) => {
                // A late reply from a peer we gave up on (timeout): harmless.
                self.stats.unexpected_replies += 1;
                false
            }
            None if self.recent.contains_key(&id) => {
                // Late reply for a finished request (e.g. after a timeout).
                self.stats.unexpected_replies += 1;
                false
            }
            _ => {
                self.stats.unexpected_replies += 1;
                self.offence(now, from, rng);
                false
            }
        }
    }

    /// Admission of a new request, insert or announcement from `from`: an
    /// id already in use is a loop (`RejectedLoop`); a peer at its limit of
    /// concurrent incoming requests, a full pending table or `overloaded`
    /// is overload (`RejectedOverload`). Otherwise the id is remembered as
    /// coming from `from`. Returns whether it was admitted.
    fn admit(&mut self, now: Millis, from: PeerId, id: u64, overloaded: bool) -> bool {
        if self.id_in_use(id) {
            self.stats.loops_rejected += 1;
            self.send(from, Message::RejectedLoop { id });
            return false;
        }
        let limit = self.cfg.max_incoming_per_peer;
        let busy = match self.peers.iter().find(|p| p.id == from) {
            Some(p) => p.incoming >= limit,
            None => !self.seed_clients.contains_key(&from),
        };
        if overloaded || busy || self.pending.len() >= self.cfg.max_pending {
            self.stats.overload_rejected += 1;
            self.send(from, Message::RejectedOverload { id });
            return false;
        }
        self.remember(now, id, Upstream::Peer(from));
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn on_request(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        key: Key,
        htl: u8,
        kind: KeyKind,
        store: &mut impl BlockSource,
        rng: &mut impl RngCore,
    ) {
        let htl = self.clamp_htl(now, htl, from, rng);
        if !self.admit(now, from, id, false) {
            return;
        }
        if let Some(block) = store.get(&key, kind) {
            if self.verifier.verify(&key, kind, &block) {
                self.stats.served_from_store += 1;
                self.send(from, Message::DataFound { id, block });
                if self.cfg.opennet {
                    if let Some(me) = self.noderef.clone() {
                        self.send(from, Message::FoldOffer { id, noderef: me });
                    }
                }
                return;
            }
        }
        let htl = self.decrement(htl, Some(from));
        if htl == 0 {
            self.send(from, Message::DataNotFound { id });
            return;
        }
        if self.recently_failed(now, &key, htl) {
            self.stats.recently_failed += 1;
            self.send(from, Message::DataNotFound { id });
            return;
        }
        if self.coalesce(key, id, Upstream::Peer(from)) {
            self.stats.coalesced += 1;
            if let Some(p) = self.peer_mut(from) {
                p.incoming += 1;
            }
            self.send(from, Message::Accepted { id });
            return;
        }
        if let Some(p) = self.peer_mut(from) {
            p.incoming += 1;
        }
        self.send(from, Message::Accepted { id });
        self.pending
            .insert(id, Pending::new(key, kind, htl, Upstream::Peer(from)));
        self.by_key.entry(key).or_insert(id);
        self.route(now, id, rng);
    }

    /// Attach a request to an identical one in flight, unless that would
    /// wait on the requester itself (the simplest deadlock).
    fn coalesce(&mut self, key: Key, id: u64, upstream: Upstream) -> bool {
        let Some(&other) = self.by_key.get(&key) else {
            return false;
        };
        let max = self.cfg.max_waiters;
        let Some(p) = self.pending.get_mut(&other) else {
            return false;
        };
        if p.insert.is_some() || p.announce.is_some() || p.waiters.len() >= max {
            return false;
        }
        if let Upstream::Peer(f) = upstream {
            if p.downstream == Some(f) || p.tried.contains(&f) {
                return false;
            }
        }
        p.waiters.push((id, upstream));
        true
    }

    #[allow(clippy::too_many_arguments)]
    /// An insert's header: accept it (or reject it as a loop or overload)
    /// before its block is sent.
    fn on_insert(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        key: Key,
        htl: u8,
        kind: KeyKind,
        rng: &mut impl RngCore,
    ) {
        let htl = self.clamp_htl(now, htl, from, rng);
        if !self.admit(now, from, id, false) {
            return;
        }
        if let Some(p) = self.peer_mut(from) {
            p.incoming += 1;
        }
        self.send(from, Message::Accepted { id });
        let deadline = now + self.cfg.accept_timeout;
        self.pending.insert(
            id,
            Pending {
                deadline,
                data_pending: true,
                ..Pending::new(key, kind, htl, Upstream::Peer(from))
            },
        );
        self.set_timer(deadline, TimerKind::Request, id);
    }

    /// The block of an insert we accepted: verify, cache or store it, then
    /// route the insert on.
    fn on_insert_data(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        block: Block,
        store: &mut impl BlockSource,
        rng: &mut impl RngCore,
    ) {
        let Some((key, kind, htl)) = self
            .pending
            .get(&id)
            .filter(|p| p.data_pending && p.upstream == Upstream::Peer(from))
            .map(|p| (p.key, p.kind, p.htl))
        else {
            self.stats.unexpected_replies += 1;
            self.offence(now, from, rng);
            return;
        };
        if !self.verifier.verify(&key, kind, &block) {
            self.stats.bad_blocks += 1;
            self.end_insert(id);
            self.offence(now, from, rng);
            return;
        }
        if kind == KeyKind::Ssk {
            if let Some(existing) = store.get(&key, kind) {
                if existing != block && self.verifier.verify(&key, kind, &existing) {
                    self.end_insert(id);
                    self.send(
                        from,
                        Message::Collision {
                            id,
                            block: existing,
                        },
                    );
                    return;
                }
            }
        }
        let arrived = htl;
        let htl = self.decrement(htl, Some(from));
        let cacheable = htl <= self.cfg.cache_max_htl;
        // Our own insert, back by another path after a fork downstream:
        // relayed like any other, but nothing inserted here goes into the
        // shared store or cache.
        let own = self.local_inserts.contains_key(&key);
        let sink = self.is_sink(key.location());
        let deep_candidate = cacheable && !sink && !own;
        if cacheable && !own {
            let space = if sink { Space::Store } else { Space::Cache };
            self.actions.push_back(Action::StoreBlock {
                space,
                key,
                kind,
                block: block.clone(),
            });
        }
        if htl == 0 {
            self.end_insert(id);
            self.send(from, Message::InsertReply { id });
            return;
        }
        if let Some(p) = self.pending.get_mut(&id) {
            p.htl = htl;
            p.insert = Some(block);
            p.deep_candidate = deep_candidate;
            p.data_pending = false;
        }
        let id = if arrived > self.cfg.cache_max_htl && cacheable {
            self.fork_on_cacheable(now, id, rng)
        } else {
            id
        };
        self.route(now, id, rng);
    }

    /// Freenet's "fork on cacheable": the insert has just reached the
    /// caching level, so the nodes it passed so far (the inserter's
    /// neighbourhood) kept nothing, and in a small network the nodes
    /// closest to the key are often among them. From here it goes on under
    /// a fresh id with nothing tried, so those nodes, the one it came from
    /// included, may take it again, now allowed to store. Its result still
    /// goes upstream under the old id. Returns the new id.
    fn fork_on_cacheable(&mut self, now: Millis, id: u64, rng: &mut impl RngCore) -> u64 {
        let Some(mut p) = self.pending.remove(&id) else {
            return id;
        };
        let mut fresh = rng.next_u64();
        while fresh == id || self.id_in_use(fresh) {
            fresh = rng.next_u64();
        }
        p.reply_id = Some(id);
        p.tried.clear();
        let upstream = p.upstream;
        self.pending.insert(fresh, p);
        self.remember(now, fresh, upstream);
        self.stats.inserts_forked += 1;
        fresh
    }

    /// Forget insert `id` here and free its upstream's incoming slot.
    fn end_insert(&mut self, id: u64) {
        if let Some(p) = self.take_pending(id) {
            self.release(p.upstream);
        }
    }

    /// Closer to `target` than every peer: an insert sink.
    fn is_sink(&self, target: Location) -> bool {
        let mine = self.location.distance(target);
        self.peers
            .iter()
            .all(|p| p.location.distance(target) > mine)
    }

    /// An insert whose last attempt ended in a loop or "route not found"
    /// pays a hop before it tries another peer (Freenet's rule; always one,
    /// also at HTL 1). Otherwise, in a small network, one insert walks
    /// every link: a 20-node testnet saw ~220 rejected loops per block.
    /// Above the caching level the HTL is kept (spending it there would
    /// let nodes next to the inserter cache), and at most
    /// [`MAX_HIGH_HTL_FAILURES`] such failures are allowed before the
    /// route ends. Requests are not charged: a failed attempt costs them
    /// only headers, and finding the data is the point.
    ///
    /// Returns whether `id` is still to be routed (always, for requests
    /// and announcements); if not, it has been answered (HTL spent: the
    /// insert ran its course) or failed with "route not found".
    fn charge_failure(&mut self, now: Millis, id: u64) -> bool {
        let cache_max_htl = self.cfg.cache_max_htl;
        let Some(p) = self.pending.get_mut(&id) else {
            return false;
        };
        if p.insert.is_none() {
            return true;
        }
        if p.htl > cache_max_htl {
            p.high_htl_failures += 1;
            if p.high_htl_failures <= MAX_HIGH_HTL_FAILURES {
                return true;
            }
            self.fail(now, id, Fail::RouteNotFound);
            return false;
        }
        p.htl = p.htl.saturating_sub(1);
        if p.htl > 0 {
            return true;
        }
        // The insert ran its course here.
        self.insert_done(id, None);
        false
    }

    /// Route `id` onward, unless `from` is no longer its downstream (an
    /// offence may have disconnected `from`, which already rerouted it).
    fn retry(&mut self, now: Millis, id: u64, from: PeerId, rng: &mut impl RngCore) {
        if self
            .pending
            .get(&id)
            .is_some_and(|p| p.downstream == Some(from))
        {
            self.route(now, id, rng);
        }
    }

    /// Forward `id` to the closest untried, non-backed-off peer, or fail
    /// with RouteNotFound.
    fn route(&mut self, now: Millis, id: u64, rng: &mut impl RngCore) {
        let _ = rng;
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        let target = p.announce.as_ref().map_or(p.key.location(), |n| n.location);
        let next = self
            .peers
            .iter()
            .filter(|q| !p.tried.contains(&q.id) && q.backoff_until <= now)
            .min_by_key(|q| (q.location.distance(target), q.id))
            .map(|q| q.id);
        let Some(next) = next else {
            // Our own request, and the only peers left are backed off
            // (overloaded a moment ago): wait for the first to come back
            // rather than fail a fetch or insert the client would have to
            // repeat. Forwarded requests fail at once; the upstream node
            // has other peers to try.
            let wake = if p.upstream == Upstream::Local {
                self.peers
                    .iter()
                    .filter(|q| !p.tried.contains(&q.id) && q.backoff_until > now)
                    .map(|q| q.backoff_until)
                    .min()
                    .filter(|&at| at - now <= LOCAL_BACKOFF_WAIT)
            } else {
                None
            };
            match (wake, self.pending.get_mut(&id)) {
                (Some(at), Some(p)) => {
                    p.downstream = None;
                    p.accepted = false;
                    p.deadline = at;
                    self.stats.backoff_waits += 1;
                    self.set_timer(at, TimerKind::Request, id);
                }
                _ => self.fail(now, id, Fail::RouteNotFound),
            }
            return;
        };
        let deadline = now + self.cfg.accept_timeout;
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.tried.push(next);
        p.downstream = Some(next);
        p.accepted = false;
        p.deadline = deadline;
        let msg = match (&p.insert, &p.announce) {
            (_, Some(noderef)) => Message::Announce {
                id,
                htl: p.htl,
                noderef: noderef.clone(),
            },
            (Some(_), None) => Message::Insert {
                id,
                key: p.key,
                htl: p.htl,
                kind: p.kind,
            },
            (None, None) => Message::Request {
                id,
                key: p.key,
                htl: p.htl,
                kind: p.kind,
            },
        };
        self.set_timer(deadline, TimerKind::Request, id);
        self.send(next, msg);
    }

    fn release(&mut self, upstream: Upstream) {
        if let Upstream::Peer(u) = upstream {
            if let Some(p) = self.peer_mut(u) {
                p.incoming = p.incoming.saturating_sub(1);
            }
        }
    }

    fn take_pending(&mut self, id: u64) -> Option<Pending> {
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

    fn request_found(&mut self, now: Millis, id: u64, from: PeerId, block: Block) {
        let Some(p) = self.take_pending(id) else {
            return;
        };
        self.peer_success(now, from);
        let remote = p.upstream != Upstream::Local;
        if remote && p.htl <= self.cfg.cache_max_htl {
            self.actions.push_back(Action::StoreBlock {
                space: Space::Cache,
                key: p.key,
                kind: p.kind,
                block: block.clone(),
            });
        }
        if let Some(r) = self.recent.get_mut(&id) {
            r.downstream = Some(from);
            r.fold_expected = self.cfg.opennet;
        }
        self.answer_found(id, p.upstream, &block, true, now);
        for (wid, w) in p.waiters {
            self.answer_found(wid, w, &block, false, now);
        }
    }

    fn answer_found(
        &mut self,
        id: u64,
        upstream: Upstream,
        block: &Block,
        primary: bool,
        now: Millis,
    ) {
        self.release(upstream);
        if let Upstream::Peer(u) = upstream {
            // A success crossing the link makes it useful to both ends,
            // whichever way the request went.
            if let Some(p) = self.peer_mut(u) {
                p.last_success = now;
            }
        }
        match upstream {
            Upstream::Peer(u) => self.send(
                u,
                Message::DataFound {
                    id,
                    block: block.clone(),
                },
            ),
            Upstream::Local => {
                if primary {
                    self.local_finished(true, false);
                }
                self.actions.push_back(Action::RequestDone {
                    id: RequestId(id),
                    outcome: RequestOutcome::Found(block.clone()),
                });
            }
            Upstream::Gone => {}
        }
    }

    fn fail(&mut self, now: Millis, id: u64, why: Fail) {
        let Some(p) = self.take_pending(id) else {
            return;
        };
        if p.announce.is_some() {
            self.release(p.upstream);
            if let Upstream::Peer(u) = p.upstream {
                self.send(u, Message::RouteNotFound { id, htl: p.htl });
            }
            return;
        }
        if let (Some(block), Fail::RouteNotFound) = (&p.insert, &why) {
            // The route ended while the HTL (the minimum that came back)
            // was still above the caching level: no node on it was allowed
            // to keep the block, so the insert would be nowhere but in the
            // inserter's private cache, yet reported as routed. A forwarder
            // (never the inserter) keeps it. Only networks too small to
            // take an insert past the first hops get here.
            if p.upstream != Upstream::Local && p.htl > self.cfg.cache_max_htl {
                let space = if self.is_sink(p.key.location()) {
                    Space::Store
                } else {
                    Space::Cache
                };
                self.actions.push_back(Action::StoreBlock {
                    space,
                    key: p.key,
                    kind: p.kind,
                    block: block.clone(),
                });
            }
        }
        if p.insert.is_some() {
            self.store_deep(&p);
            self.release(p.upstream);
            match p.upstream {
                Upstream::Peer(u) => {
                    let htl = if matches!(why, Fail::TimedOut) {
                        0
                    } else {
                        p.htl
                    };
                    let id = p.reply_id.unwrap_or(id);
                    self.send(u, Message::RouteNotFound { id, htl });
                }
                Upstream::Local => {
                    let timed_out = matches!(why, Fail::TimedOut);
                    self.local_finished(false, timed_out);
                    let outcome = if timed_out {
                        InsertOutcome::TimedOut
                    } else {
                        InsertOutcome::RouteNotFound { htl: p.htl }
                    };
                    self.actions.push_back(Action::InsertDone {
                        id: RequestId(id),
                        outcome,
                    });
                }
                Upstream::Gone => {}
            }
            return;
        }
        self.record_failure(now, p.key, p.htl);
        let mut all = vec![(id, p.upstream)];
        all.extend(p.waiters);
        for (i, (wid, up)) in all.into_iter().enumerate() {
            self.release(up);
            match up {
                Upstream::Peer(u) => {
                    let msg = match why {
                        Fail::RouteNotFound if i == 0 => Message::RouteNotFound {
                            id: wid,
                            htl: p.htl,
                        },
                        _ => Message::DataNotFound { id: wid },
                    };
                    self.send(u, msg);
                }
                Upstream::Local => {
                    let timed_out = matches!(why, Fail::TimedOut);
                    if i == 0 {
                        self.local_finished(false, timed_out);
                    }
                    let outcome = match why {
                        Fail::NotFound => RequestOutcome::NotFound,
                        Fail::RouteNotFound => RequestOutcome::RouteNotFound,
                        Fail::TimedOut => RequestOutcome::TimedOut,
                    };
                    self.actions.push_back(Action::RequestDone {
                        id: RequestId(wid),
                        outcome,
                    });
                }
                Upstream::Gone => {}
            }
        }
    }

    fn announce_done(&mut self, now: Millis, id: u64) {
        let Some(p) = self.take_pending(id) else {
            return;
        };
        self.release(p.upstream);
        if let Upstream::Peer(u) = p.upstream {
            self.announce_replied(now, u, id);
        }
    }

    /// Send `AnnounceReply`; a seed client has had what it came for and
    /// goes shortly after.
    fn announce_replied(&mut self, now: Millis, to: PeerId, id: u64) {
        self.send(to, Message::AnnounceReply { id });
        if let Some(c) = self.seed_clients.get_mut(&to) {
            c.until = c.until.min(now + SEED_CLIENT_LINGER);
        }
    }

    /// A message from a seed client: its first `Announce` is routed,
    /// anything else it asks for is refused as overload, the rest ignored.
    fn on_seed_client_message(
        &mut self,
        now: Millis,
        from: PeerId,
        msg: Message,
        rng: &mut impl RngCore,
    ) {
        let ok = self.within_limits(&msg);
        match msg {
            Message::Announce { id, htl, noderef } => {
                let first = self
                    .seed_clients
                    .get_mut(&from)
                    .is_some_and(|c| !std::mem::replace(&mut c.announced, true));
                let htl = self.clamp_htl(now, htl, from, rng);
                if self.admit(now, from, id, !(first && ok)) {
                    self.forward_announce(now, from, id, htl, noderef, rng);
                }
            }
            Message::Request { id, .. } | Message::Insert { id, .. } => {
                self.stats.overload_rejected += 1;
                self.send(from, Message::RejectedOverload { id });
            }
            _ => self.stats.unknown_peer += 1,
        }
    }

    /// Disconnect seed clients whose time is up.
    fn expire_seed_clients(&mut self, now: Millis, rng: &mut impl RngCore) {
        let due: Vec<PeerId> = self
            .seed_clients
            .iter()
            .filter(|(_, c)| c.until <= now)
            .map(|(id, _)| *id)
            .collect();
        for peer in due {
            self.disconnect(now, peer, Disconnect::SeedClientDone, rng);
        }
    }

    /// Freenet's "store deep" rule: an insert that had to move away from
    /// the key here (no peer it went to was closer) is kept long-term.
    fn store_deep(&mut self, p: &Pending) {
        let (Some(block), true) = (&p.insert, p.deep_candidate) else {
            return;
        };
        let target = p.key.location();
        let mine = self.location.distance(target);
        let mut routed = p
            .tried
            .iter()
            .filter(|&&t| Upstream::Peer(t) != p.upstream)
            .peekable();
        if routed.peek().is_none() {
            return;
        }
        let farther = routed.all(|t| {
            self.peers
                .iter()
                .find(|q| q.id == *t)
                .is_none_or(|q| q.location.distance(target) > mine)
        });
        if farther {
            self.actions.push_back(Action::StoreBlock {
                space: Space::Store,
                key: p.key,
                kind: p.kind,
                block: block.clone(),
            });
        }
    }

    fn insert_done(&mut self, id: u64, collision: Option<Block>) {
        let Some(p) = self.take_pending(id) else {
            return;
        };
        if collision.is_none() {
            self.store_deep(&p);
        }
        self.release(p.upstream);
        match p.upstream {
            Upstream::Peer(u) => {
                let id = p.reply_id.unwrap_or(id);
                match collision {
                    Some(block) => self.send(u, Message::Collision { id, block }),
                    None => self.send(u, Message::InsertReply { id }),
                }
            }
            Upstream::Local => {
                self.local_finished(collision.is_none(), false);
                let outcome = match collision {
                    Some(b) => InsertOutcome::Collision(b),
                    None => InsertOutcome::Success,
                };
                self.actions.push_back(Action::InsertDone {
                    id: RequestId(id),
                    outcome,
                });
            }
            Upstream::Gone => {}
        }
    }

    // ------------------------------------------------------- local + AIMD

    /// A request from the local client. Returns its id; the result comes as
    /// [`Action::RequestDone`] / [`Action::InsertDone`]. The request leaves
    /// with the maximum HTL, exactly as a forwarder that kept it would send.
    pub fn handle_local_request(
        &mut self,
        now: Millis,
        req: LocalRequest,
        rng: &mut impl RngCore,
    ) -> RequestId {
        self.expire(now);
        let mut id = rng.next_u64();
        while self.id_in_use(id) {
            id = rng.next_u64();
        }
        match req {
            LocalRequest::Announce => {
                self.announce(now, id, rng);
            }
            LocalRequest::Fetch { key, kind } => {
                self.remember(now, id, Upstream::Local);
                if self.recently_failed(now, &key, self.cfg.max_htl) {
                    self.stats.recently_failed += 1;
                    self.actions.push_back(Action::RequestDone {
                        id: RequestId(id),
                        outcome: RequestOutcome::RecentlyFailed,
                    });
                } else if self.coalesce(key, id, Upstream::Local) {
                    self.stats.coalesced += 1;
                } else {
                    self.queue_local(now, id, LocalRequest::Fetch { key, kind }, rng);
                }
            }
            LocalRequest::Insert { key, kind, block } => {
                if block.len() > self.cfg.max_block_len || !self.verifier.verify(&key, kind, &block)
                {
                    self.actions.push_back(Action::InsertDone {
                        id: RequestId(id),
                        outcome: InsertOutcome::InvalidBlock,
                    });
                } else {
                    self.remember(now, id, Upstream::Local);
                    self.queue_local(now, id, LocalRequest::Insert { key, kind, block }, rng);
                }
            }
        }
        RequestId(id)
    }

    fn queue_local(&mut self, now: Millis, id: u64, req: LocalRequest, rng: &mut impl RngCore) {
        if self.local_queue.len() >= self.cfg.local_queue_cap {
            let action = match req {
                LocalRequest::Insert { .. } => Action::InsertDone {
                    id: RequestId(id),
                    outcome: InsertOutcome::Overloaded,
                },
                _ => Action::RequestDone {
                    id: RequestId(id),
                    outcome: RequestOutcome::Overloaded,
                },
            };
            self.actions.push_back(action);
            return;
        }
        self.local_queue.push_back((id, req));
        self.start_queued(now, rng);
    }

    fn start_queued(&mut self, now: Millis, rng: &mut impl RngCore) {
        while (self.local_in_flight as f64) < self.window.floor() {
            let Some((id, req)) = self.local_queue.pop_front() else {
                break;
            };
            let (key, kind, insert) = match req {
                LocalRequest::Fetch { key, kind } => (key, kind, None),
                LocalRequest::Insert { key, kind, block } => (key, kind, Some(block)),
                LocalRequest::Announce => continue,
            };
            self.local_in_flight += 1;
            if insert.is_none() {
                self.by_key.entry(key).or_insert(id);
            } else {
                *self.local_inserts.entry(key).or_insert(0) += 1;
            }
            self.pending.insert(
                id,
                Pending {
                    insert,
                    ..Pending::new(key, kind, self.cfg.max_htl, Upstream::Local)
                },
            );
            self.route(now, id, rng);
        }
    }

    /// Bookkeeping when a local request (the one holding a window slot)
    /// finishes. Every public entry point (`handle_message`,
    /// `handle_timeout`, `handle_local_request`, `remove_peer`) ends by
    /// starting what the window now allows, so a freed slot is refilled at
    /// once rather than at the next timer (which was up to `accept_timeout`
    /// away: a 10 s stall per transfer).
    fn local_finished(&mut self, success: bool, congestion: bool) {
        self.local_in_flight = self.local_in_flight.saturating_sub(1);
        if success {
            // Never more in flight than our peers take from one peer each
            // (nodes share the per-peer limit): past that, growth only
            // buys RejectedOverload and backoffs.
            let cap = f64::from(self.cfg.max_incoming_per_peer) * self.peers.len().max(1) as f64;
            self.window = (self.window + 1.0 / self.window)
                .min(self.cfg.aimd_max)
                .min(cap.max(1.0));
        } else if congestion {
            self.aimd_decrease();
        }
    }

    fn aimd_decrease(&mut self) {
        self.window = (self.window / 2.0).max(1.0);
    }

    // ---------------------------------------------------------- timers

    /// Run timers due at `now`: accept/fetch timeouts, swap attempts and
    /// table expiry. Also starts queued local requests the window allows.
    pub fn handle_timeout(&mut self, now: Millis, rng: &mut impl RngCore) {
        self.expire(now);
        while let Some(&Reverse((t, kind, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            match kind {
                TimerKind::Request => {
                    let Some(p) = self.pending.get(&id) else {
                        continue;
                    };
                    if p.deadline != t {
                        continue;
                    }
                    if p.data_pending {
                        // Accepted an insert whose block never came.
                        self.end_insert(id);
                        continue;
                    }
                    if p.accepted {
                        self.fail(now, id, Fail::TimedOut);
                    } else {
                        if let Some(d) = p.downstream {
                            self.backoff(now, d, rng);
                        }
                        self.route(now, id, rng);
                    }
                }
                TimerKind::Swap => {
                    if self.swaps.get(&id).is_some_and(|s| s.expires() <= now) {
                        self.swaps.remove(&id);
                    }
                }
            }
        }
        if let Some(t) = self.next_swap {
            if t <= now {
                if self.cfg.swapping && !self.peers.is_empty() {
                    let j = self.cfg.swap_interval / 2;
                    self.next_swap =
                        Some(now + j.max(1) + rng.gen_range(0..self.cfg.swap_interval.max(1)));
                    self.initiate_swap(now, rng);
                } else {
                    self.next_swap = None;
                }
            }
        }
        if self.next_announce.is_some_and(|t| t <= now) {
            self.next_announce = None;
            if self.cfg.opennet && self.peers.len() < self.cfg.max_peers / 2 {
                let mut id = rng.next_u64();
                while self.id_in_use(id) {
                    id = rng.next_u64();
                }
                self.announce(now, id, rng);
                self.announce_backoff += 1;
                self.maybe_schedule_announce(now);
            }
        }
        self.expire_seed_clients(now, rng);
        self.start_queued(now, rng);
    }

    /// Start local requests the AIMD window now allows (call after
    /// draining actions if requests were queued; timeouts do it too).
    pub fn pump(&mut self, now: Millis, rng: &mut impl RngCore) {
        self.start_queued(now, rng);
    }

    // ---------------------------------------------------------- opennet

    fn announce(&mut self, now: Millis, id: u64, rng: &mut impl RngCore) {
        let Some(me) = self.noderef.clone() else {
            return;
        };
        if self.pending.len() >= self.cfg.max_pending {
            return;
        }
        self.remember(now, id, Upstream::Local);
        self.pending.insert(
            id,
            Pending {
                announce: Some(me),
                ..Pending::new(
                    Key([0; 32]),
                    KeyKind::Chk,
                    self.cfg.max_htl,
                    Upstream::Local,
                )
            },
        );
        self.route(now, id, rng);
    }

    /// An announcement is routed like an insert (greedy, backtracking,
    /// until the HTL runs out); every node on the way that wants a peer
    /// connects to the newcomer.
    fn on_announce(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        htl: u8,
        noderef: NodeRef,
        rng: &mut impl RngCore,
    ) {
        let htl = self.clamp_htl(now, htl, from, rng);
        // At most ANNOUNCE_BURST announcements per second per peer; more
        // are refused as overload (relays legitimately pass many).
        let burst = match self.peer_mut(from) {
            Some(p) => {
                if now.saturating_sub(p.last_announce) >= 1000 {
                    p.last_announce = now;
                    p.announce_count = 0;
                }
                p.announce_count += 1;
                p.announce_count > ANNOUNCE_BURST
            }
            None => return,
        };
        if !self.cfg.opennet {
            self.send(from, Message::RouteNotFound { id, htl: 0 });
            return;
        }
        if !self.admit(now, from, id, burst) {
            return;
        }
        self.forward_announce(now, from, id, htl, noderef, rng);
    }

    /// An admitted announcement: connect to the newcomer if we want a
    /// peer, accept it, and route it on while HTL is left.
    fn forward_announce(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        htl: u8,
        noderef: NodeRef,
        rng: &mut impl RngCore,
    ) {
        let own = self
            .noderef
            .as_ref()
            .is_some_and(|m| m.address == noderef.address);
        let connected = self.peers.iter().any(|p| p.location == noderef.location);
        if !own && !connected && self.wants_peer(now) {
            self.last_fold_accept = Some(now);
            self.actions.push_back(Action::Connect {
                noderef: noderef.clone(),
            });
        }
        let htl = self.decrement(htl, Some(from));
        self.send(from, Message::Accepted { id });
        if htl == 0 {
            self.announce_replied(now, from, id);
            return;
        }
        if let Some(p) = self.peer_mut(from) {
            p.incoming += 1;
        }
        self.pending.insert(
            id,
            Pending {
                announce: Some(noderef),
                ..Pending::new(Key([0; 32]), KeyKind::Chk, htl, Upstream::Peer(from))
            },
        );
        self.route(now, id, rng);
    }

    fn on_fold_offer(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        noderef: NodeRef,
        rng: &mut impl RngCore,
    ) {
        let Some(r) = self.recent.get_mut(&id) else {
            self.stats.unexpected_replies += 1;
            self.offence(now, from, rng);
            return;
        };
        if r.downstream != Some(from) || !r.fold_expected {
            self.stats.unexpected_replies += 1;
            self.offence(now, from, rng);
            return;
        }
        r.fold_expected = false;
        let upstream = r.upstream;
        if !self.cfg.opennet {
            return;
        }
        let own = self
            .noderef
            .as_ref()
            .is_some_and(|m| m.address == noderef.address);
        let connected = self.peers.iter().any(|p| p.location == noderef.location);
        let take = !own && !connected && self.wants_peer(now);
        if take {
            self.last_fold_accept = Some(now);
            self.actions.push_back(Action::Connect {
                noderef: noderef.clone(),
            });
        }
        if let Upstream::Peer(u) = upstream {
            let reset =
                self.cfg.fold_reset_one_in > 0 && rng.gen_range(0..self.cfg.fold_reset_one_in) == 0;
            let offer = if take || reset {
                self.noderef.clone()
            } else {
                Some(noderef)
            };
            if let Some(offer) = offer {
                self.send(u, Message::FoldOffer { id, noderef: offer });
            }
        }
    }

    // ---------------------------------------------------------- darknet

    fn peer_locations(&self) -> Vec<Location> {
        self.peers.iter().map(|p| p.location).collect()
    }

    fn initiate_swap(&mut self, now: Millis, rng: &mut impl RngCore) {
        if self.cfg.location_reset_one_in > 0
            && rng.gen_range(0..self.cfg.location_reset_one_in) == 0
        {
            self.stats.location_resets += 1;
            let loc = Location::random(rng);
            self.set_location(loc);
            return;
        }
        if self.swaps.len() >= self.cfg.max_pending {
            return;
        }
        let i = rng.gen_range(0..self.peers.len());
        let peer = self.peers[i].id;
        let mut id = rng.next_u64();
        while self.id_in_use(id) {
            id = rng.next_u64();
        }
        let expires = now + self.cfg.swap_timeout;
        self.swaps.insert(
            id,
            SwapState::Initiated {
                peer,
                location: self.location,
                expires,
            },
        );
        self.set_timer(expires, TimerKind::Swap, id);
        let msg = Message::SwapRequest {
            id,
            htl: self.cfg.swap_htl,
            location: self.location,
            peer_locations: self.peer_locations(),
        };
        self.send(peer, msg);
    }

    /// Pitch Black defences on what a swap partner claims: a real peer set
    /// has distinct locations, none equal to the node's own; and we never
    /// adopt a location (almost) equal to one of our peers' (the attack
    /// works by pushing honest nodes onto a few clustered locations).
    fn plausible(&self, location: Location, peer_locations: &[Location]) -> bool {
        const EPS: u64 = 1 << 40; // ~6e-8 of the circle
        let mut sorted = peer_locations.to_vec();
        sorted.sort_unstable();
        let dup = sorted.windows(2).any(|w| w[0].distance(w[1]) < EPS);
        let self_in = sorted.iter().any(|l| l.distance(location) < EPS);
        !dup && !self_in && !peer_locations.is_empty()
    }

    /// Whether adopting `location` keeps our peers' locations distinct
    /// from ours. One peer exactly there is allowed: it is the swap
    /// partner when the partner is our neighbour, and it moves away.
    fn safe_to_adopt(&self, location: Location) -> bool {
        const EPS: u64 = 1 << 40;
        let exact = self.peers.iter().filter(|p| p.location == location).count();
        let near = self
            .peers
            .iter()
            .filter(|p| p.location != location && p.location.distance(location) < EPS)
            .count();
        exact <= 1 && near == 0
    }

    fn swap_rate_ok(&mut self, now: Millis, from: PeerId) -> bool {
        let (interval, limit) = (self.cfg.swap_interval, self.cfg.swap_per_peer);
        let Some(p) = self.peer_mut(from) else {
            return false;
        };
        if now.saturating_sub(p.swap_window_start) >= interval {
            p.swap_window_start = now;
            p.swap_count = 0;
        }
        p.swap_count += 1;
        p.swap_count <= limit
    }

    #[allow(clippy::too_many_arguments)]
    fn on_swap_request(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        htl: u8,
        location: Location,
        peer_locations: Vec<Location>,
        rng: &mut impl RngCore,
    ) {
        if !self.cfg.swapping {
            self.send(from, Message::SwapRejected { id });
            return;
        }
        if !self.swap_rate_ok(now, from) {
            self.stats.swaps_refused += 1;
            self.offence(now, from, rng);
            self.send(from, Message::SwapRejected { id });
            return;
        }
        if self.id_in_use(id)
            || self.swaps.len() >= self.cfg.max_pending
            || !self.plausible(location, &peer_locations)
        {
            self.stats.swaps_refused += 1;
            self.send(from, Message::SwapRejected { id });
            return;
        }
        let htl = htl.min(self.cfg.swap_htl);
        let others: Vec<PeerId> = self
            .peers
            .iter()
            .map(|p| p.id)
            .filter(|&p| p != from)
            .collect();
        if htl > 1 && !others.is_empty() {
            let to = others[rng.gen_range(0..others.len())];
            let expires = now + self.cfg.swap_timeout;
            self.swaps
                .insert(id, SwapState::Relay { from, to, expires });
            self.set_timer(expires, TimerKind::Swap, id);
            self.send(
                to,
                Message::SwapRequest {
                    id,
                    htl: htl - 1,
                    location,
                    peer_locations,
                },
            );
            return;
        }
        // We are the partner. Metropolis-Hastings on the product of link
        // lengths: swap when it shortens them, else with probability
        // before/after.
        let mine = self.peer_locations();
        let before = log_len(location, &peer_locations) + log_len(self.location, &mine);
        let after = log_len(self.location, &peer_locations) + log_len(location, &mine);
        let accept = (after <= before || rng.gen::<f64>() < (before - after).exp())
            && location != self.location
            && self.safe_to_adopt(location);
        let old = self.location;
        // Remember the id so a replay cannot make us swap twice.
        self.remember(now, id, Upstream::Peer(from));
        self.send(
            from,
            Message::SwapReply {
                id,
                accepted: accept,
                location: old,
                peer_locations: mine,
            },
        );
        if accept {
            self.stats.swaps += 1;
            self.set_location(location);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_swap_reply(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        accepted: bool,
        location: Location,
        peer_locations: Vec<Location>,
        rng: &mut impl RngCore,
    ) {
        match self.swaps.get(&id) {
            Some(SwapState::Relay { from: up, to, .. }) if *to == from => {
                let up = *up;
                self.swaps.remove(&id);
                self.send(
                    up,
                    Message::SwapReply {
                        id,
                        accepted,
                        location,
                        peer_locations,
                    },
                );
            }
            Some(SwapState::Initiated {
                peer,
                location: then,
                ..
            }) if *peer == from => {
                let then = *then;
                self.swaps.remove(&id);
                if accepted
                    && then == self.location
                    && self.plausible(location, &peer_locations)
                    && self.safe_to_adopt(location)
                {
                    self.stats.swaps += 1;
                    self.set_location(location);
                }
            }
            _ => {
                self.stats.unexpected_replies += 1;
                self.offence(now, from, rng);
            }
        }
    }

    fn set_location(&mut self, location: Location) {
        self.location = location;
        if let Some(me) = self.noderef.as_mut() {
            me.location = location;
        }
        let ids: Vec<PeerId> = self.peers.iter().map(|p| p.id).collect();
        for to in ids {
            self.send(to, Message::LocationChanged { location });
        }
        self.actions.push_back(Action::LocationChanged { location });
    }
}

/// Sum of log link lengths from `at` to each of `peers` (as circle
/// fractions, floored to avoid log 0).
fn log_len(at: Location, peers: &[Location]) -> f64 {
    peers
        .iter()
        .map(|p| Location::distance_f64(at.distance(*p)).max(1e-12).ln())
        .sum()
}
