#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub)]

mod aging;
mod args;
mod attack;
mod config;
mod events;
mod hugepages;
mod measure;
mod queue;
mod report;
mod store;
mod topology;
mod workload;

pub use args::{parse_args, usage, Cli};
pub use attack::{posterior, THRESHOLD};
pub use config::{
    Adversary, Attack, Sha256Verifier, SimConfig, Topology, GROWTH_MS, MAX_JOIN_RATE, WARMUP_MS,
};
pub use hugepages::rerun_in_huge_pages;
pub use report::{
    Anonymity, AttackReport, CorrelationFigures, NatReport, PitchBlackReport, PitchDay, Report,
    TunnelReport,
};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use aging::Aging;
use lichen_link::keys::NodeKeys;
use lichen_link::noderef::NodeRef;
use lichen_link::peerlist::PeerList;
use lichen_link::policy::{PeerPolicy, PolicyConfig};
use lichen_routing::{Block, Config, Key, Location, Message, NoderefBytes, PeerId};
use store::{Shelf, Shelved, SimStore};

#[derive(Debug)]
enum Ev {
    /// A message arrives at node `to` on its link `pid` (from node
    /// `from`). Boxed: the queue moves its entries on every push and pop,
    /// and a message is larger than every other event.
    Deliver {
        to: u32,
        pid: PeerId,
        from: u32,
        msg: Box<Message>,
    },
    Timer {
        node: u32,
    },
    /// Every online node's policy ticks (redials, saves).
    Tick,
    Insert {
        node: u32,
        block: u32,
    },
    Fetch {
        node: u32,
        block: u32,
        measured: bool,
    },
    /// An opennet newcomer dials a seed.
    Join {
        node: u32,
    },
    Churn,
    /// A step of the attack being run (`tag` is the attack's own).
    Attack {
        tag: u64,
    },
}

impl Ev {
    /// The kinds' names, in `Ev::kind` order.
    const KINDS: [&'static str; 8] = [
        "deliver", "timer", "tick", "insert", "fetch", "join", "churn", "attack",
    ];

    /// Which kind of event this is (an index into `Ev::KINDS`).
    fn kind(&self) -> usize {
        match self {
            Ev::Deliver { .. } => 0,
            Ev::Timer { .. } => 1,
            Ev::Tick => 2,
            Ev::Insert { .. } => 3,
            Ev::Fetch { .. } => 4,
            Ev::Join { .. } => 5,
            Ev::Churn => 6,
            Ev::Attack { .. } => 7,
        }
    }
}

/// A key as 64 bits, for the simulator's own ground-truth maps (the
/// simulator's keys are hashes or locations, not chosen to collide).
fn key_tag(key: &Key) -> u64 {
    key.0.chunks_exact(8).fold(0, |h, w| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        (h ^ u64::from_le_bytes(b))
            .rotate_left(29)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    })
}

/// One simulated node: the real peer policy (which owns the real
/// routing core), its store, and its link ends.
struct SimNode {
    policy: PeerPolicy<Sha256Verifier>,
    /// Its static secret (tunnel handshakes; kept for restarts).
    secret: [u8; 32],
    /// Its static key (how dials find it).
    key: [u8; 32],
    /// Its noderef and the signed bytes of it.
    noderef: NodeRef,
    bytes: NoderefBytes,
    /// The peer list it last asked to save (what it finds on restart;
    /// kept only with churn, the only restarts after the start).
    saved: Option<PeerList>,
    store: SimStore,
    online: bool,
    adversary: bool,
    /// Behind NAT: dials to it fail (`SimConfig::nat`).
    nat: bool,
    /// Behind a symmetric NAT: punches to or from it fail
    /// (`SimConfig::symmetric`).
    symmetric: bool,
    /// Each of its link ends → (the other node, that node's end).
    ends: Ends,
}

/// A node's link ends → (the other node, that node's end), in end order
/// (as the policy keeps its links: closing one of a seed's thousands of
/// link ends costs a search).
type Ends = lichen_link::policy::LinkTable<(u32, PeerId)>;

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode")
            .field("online", &self.online)
            .field("links", &self.ends.len())
            .finish_non_exhaustive()
    }
}

/// How a request or insert failed (one byte in every [`Req`], where a
/// `String` took 24: the simulator keeps one for each of the warm-up's
/// five requests a node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    NotFound,
    RouteNotFound,
    RecentlyFailed,
    Overloaded,
    TimedOut,
    /// An insert that ran out of peers above the storing HTL.
    StoredNowhere,
    InsertOverloaded,
    InsertTimedOut,
    InsertCollision,
    InsertInvalidBlock,
}

impl Fail {
    /// Its name in the report.
    fn name(self) -> &'static str {
        match self {
            Fail::NotFound => "not-found",
            Fail::RouteNotFound => "route-not-found",
            Fail::RecentlyFailed => "recently-failed",
            Fail::Overloaded => "overloaded",
            Fail::TimedOut => "timed-out",
            Fail::StoredNowhere => "RouteNotFound, stored nowhere",
            Fail::InsertOverloaded => "Overloaded",
            Fail::InsertTimedOut => "TimedOut",
            Fail::InsertCollision => "Collision",
            Fail::InsertInvalidBlock => "InvalidBlock",
        }
    }
}

#[derive(Debug, Clone)]
struct Req {
    origin: u32,
    measured: bool,
    data_found_msgs: u32,
    messages: u32,
    outcome: Option<Result<(), Fail>>,
    /// When a measured fetch fails: was the block on some online node?
    block: u32,
    available: bool,
    /// An insert (not a fetch).
    insert: bool,
    /// Virtual ms when it started and when it ended.
    started: u64,
    finished: Option<u64>,
}

impl Req {
    /// A request or insert of block number `block` by `origin`, nothing
    /// sent yet; `outcome` is set at once when no traffic is needed.
    fn new(origin: u32, block: u32, measured: bool, outcome: Option<Result<(), Fail>>) -> Self {
        Req {
            origin,
            measured,
            data_found_msgs: 0,
            messages: 0,
            outcome,
            block,
            available: true,
            insert: false,
            started: 0,
            finished: None,
        }
    }
}

struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    queue: queue::Queue<Ev>,
    now: u64,
    events: u64,
    /// Events processed, by kind (`Ev::kind`).
    events_by_kind: [u64; Ev::KINDS.len()],
    /// Messages delivered over the whole run (warm-up included), by name.
    delivered: Vec<(&'static str, u64)>,
    blocks: Vec<(Key, Block)>,
    /// Every block a node has held, once (`SimStore`).
    shelf: Shelf,
    reqs: HashMap<u64, Req>,
    inserts_done: usize,
    /// The highest HTL, as received, at which a node stores an insert: one
    /// that ran out of peers above it is stored nowhere.
    store_htl: u8,
    counting_inserts: bool,
    measuring: bool,
    messages: u64,
    dirty: Vec<u32>,
    // Anonymity bookkeeping: first adversary sighting per id, and the hop
    // depth of each (id, node) to compute the HTL model baseline.
    sightings: HashMap<u64, (u32, u8, u8)>,
    depth: HashMap<(u64, u32), u8>,
    link_salt: u64,
    /// The instant virtual time 0 stands for (the policies take
    /// `Instant`s; only differences from it matter).
    epoch: Instant,
    /// Static key → node (how a dial finds its node).
    by_key: HashMap<[u8; 32], u32>,
    /// Hole punches waiting for the other side's: (node, toward key) →
    /// (as initiator: whom it dials; since when, ms).
    punches:
        std::collections::BTreeMap<(u32, [u8; 32]), (Option<lichen_link::policy::Dialed>, u64)>,
    /// Opennet: per node, when it joined and when it first had
    /// `Sim::join_target` peers (ms; `u64::MAX`: not yet). Empty on
    /// other topologies.
    joined: Vec<(u64, u64)>,
    swaps_at_measure: u64,
    offline: Vec<u32>,
    churn_interval: u64,
    measured_inserts: std::ops::Range<usize>,
    mean_degree: f64,
    /// `--nat`: the degrees as measuring starts (success is added at the
    /// report).
    nat_degrees: Option<report::NatReport>,
    median_link: f64,
    link_histogram: Vec<f64>,
    link_tv: f64,
    min_degree: usize,
    one_sided_degree: f64,
    largest_component: f64,
    by_kind: BTreeMap<&'static str, u64>,
    /// Opennet: the seed nodes' noderefs (nodes `0..seeds.len()`).
    seeds: Arc<[(NodeRef, NoderefBytes)]>,
    /// Every node's routing settings (one copy for all).
    routing: Arc<Config>,
    /// The attack workload and what the adversary recorded of it.
    attack: attack::AttackState,
    /// Ground truth across id changes: a hop forwards a request that
    /// arrived above the caching level under a fresh id; each such id →
    /// the id its originator gave it.
    alias: Aging<u64, u64>,
    /// (node, key) → the root id of the last request or insert for `key`
    /// the node received (what a fresh id it sends stands for). The key
    /// by [`key_tag`]: a run's millions of entries at half the size.
    last_in: Aging<(u32, u64), u64>,
    /// When `alias` and `last_in` last began a new age ([`AGE_MS`]).
    aged_at: u64,
    /// Tunnels on: the unfinished requests and inserts of the nodes'
    /// users by key (what an exit's fresh request stands for).
    open_by_key: HashMap<Key, Vec<u64>>,
    /// Tunnels on: the node a tunnel message was just delivered to (its
    /// new requests are the ones it runs as an exit).
    exit_ctx: Option<u32>,
    /// Tunnel messages in the measured phase.
    tunnel_cells: u64,
    /// Lazy ticks: each node's next tick that may act (virtual ms from
    /// its policy's `tick_due`; `u64::MAX`: none), and those times in a
    /// heap (an entry that no longer matches `tick_at` is stale).
    tick_at: Vec<u64>,
    /// Each node's routing timer. Beside the nodes, not in them: a stale
    /// or early timer costs no visit to its node.
    timers: Vec<Timer>,
    tick_heap: BinaryHeap<Reverse<(u64, u32)>>,
    /// Nodes changed since the last Tick (their `tick_due` is to be
    /// asked again then), and which those are.
    touched: Vec<u32>,
    tick_stale: Vec<bool>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

fn node_config(cfg: &SimConfig) -> Config {
    let rtt = 2 * cfg.latency_ms.1.max(1);
    Config {
        max_htl: cfg.htl.max(2),
        max_peers: match cfg.topology {
            Topology::Opennet => cfg.degree.max(2),
            _ => usize::MAX,
        },
        opennet: cfg.topology == Topology::Opennet,
        swapping: cfg.topology == Topology::Darknet,
        accept_timeout: 4 * rtt,
        fetch_timeout: 60 * rtt,
        backoff_initial: 4 * rtt,
        backoff_max: 200 * rtt,
        failure_ttl: 30_000,
        recent_ttl: 120_000,
        peer_grace: 20_000,
        fold_min_interval: 10_000,
        replace_interval: 100_000,
        swap_interval: 1_000,
        announce_interval: 5_000,
        swap_timeout: 20 * rtt,
        location_reset_one_in: 0,
        pitch_probe_interval: if cfg.pitch_probe { PITCH_PROBE_MS } else { 0 },
        swap_max_stretch: if cfg.pitch_defence {
            Config::default().swap_max_stretch
        } else {
            0.0
        },
        balance_link_lengths: cfg.link_balance,
        refresh_interval: 100_000,
        ..Config::default()
    }
}

/// Run a simulation.
pub fn run(cfg: &SimConfig) -> Report {
    // The nodes verify the same signed noderefs over and over: each is
    // verified once (the result is the same; see `sim_cache_verified`).
    lichen_link::noderef::sim_cache_verified(true);
    let mut sim = Sim::new(cfg.clone());
    sim.build();
    sim.insert_phase();
    sim.attack_insert_phase();
    sim.request_phase();
    let report = sim.report();
    lichen_link::noderef::sim_cache_verified(false);
    report
}

/// The simulator's Pitch Black probe period (virtual ms; the node's is a
/// day). Swaps come every second here (every 10 s in the node), so the
/// simulated "day" holds 60 swap attempts per node where the node's holds
/// 8,640: the defence is given a far better ratio of probes to swaps
/// than the node has (docs/anonymity.md says what that means).
pub const PITCH_PROBE_MS: u64 = 60_000;

/// Wall-clock ms at virtual time 0 (only `last_seen` in peer lists).
const WALL_START_MS: u64 = 1_700_000_000_000;

/// How often every node's policy ticks (ms of virtual time). A real node
/// ticks every second; its retry delays start at 5 s, so ticking every
/// 5 s delays a redial by at most one tick, at a fifth of the cost.
pub const TICK_MS: u64 = 5_000;

/// How long (virtual ms) the ground-truth tables of requests in flight
/// (`Sim::alias`, `Sim::last_in`) keep an entry: at least this, at most
/// twice. A request lives a few minutes at most (`fetch_timeout`, 2 min a
/// hop), so no lookup misses; kept for the whole run they grew with every
/// hop of every request (1.7 KiB a node at 30,000 nodes).
const AGE_MS: u64 = 600_000;

/// A node's policy settings (`routing`: [`node_config`], shared).
fn policy_config(
    cfg: &SimConfig,
    routing: &Arc<Config>,
    key: [u8; 32],
    bytes: &NoderefBytes,
    location: Location,
    seeds: &Arc<[(NodeRef, NoderefBytes)]>,
) -> PolicyConfig {
    PolicyConfig {
        own_key: key,
        opennet: cfg.topology == Topology::Opennet,
        noderef: Some(NoderefBytes::clone(bytes)),
        routing: Arc::clone(routing),
        location,
        seeds: Arc::clone(seeds),
        tunnels: lichen_routing::TunnelConfig {
            hops: cfg.tunnel_hops,
            min_peer_list: cfg.min_peer_list,
            ..Default::default()
        },
        // Every simulated node is reachable (no NAT is modelled yet).
        dial_backs: lichen_link::policy::DialBacks::Off,
    }
}

/// Node `i`: keys from the sim's RNG, a made-up address (10.x.y.1, then
/// 11.x.y.1 and on past 65,536 nodes: each node in a /24 of its own for
/// the per-network peer limits, up to 16 million nodes; never dialed:
/// dials find nodes by static key), its noderef.
fn new_node(
    cfg: &SimConfig,
    routing: &Arc<Config>,
    rng: &mut ChaCha8Rng,
    i: usize,
    epoch: Instant,
) -> SimNode {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let keys = NodeKeys::from_static_secret(secret);
    let loc = Location::random(rng);
    let b = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
    let addr = SocketAddr::from((
        [10u8.wrapping_add(b[1]), b[2], b[3], 1],
        1 + u16::from(b[0]),
    ));
    let noderef = NodeRef::new(&keys, vec![addr], Some(loc.0));
    let bytes: NoderefBytes = noderef.to_bytes(&keys).into();
    let key = keys.static_public();
    let pcfg = policy_config(cfg, routing, key, &bytes, loc, &Arc::from(Vec::new()));
    let list = PeerList::new(cfg.degree.saturating_mul(2));
    let mut policy = PeerPolicy::new(pcfg, list, Sha256Verifier, epoch, WALL_START_MS);
    if cfg.tunnel_hops > 0 {
        policy.enable_tunnels(&secret);
    }
    SimNode {
        policy,
        secret,
        key,
        noderef,
        bytes,
        saved: None,
        store: SimStore::default(),
        online: true,
        adversary: false,
        nat: false,
        symmetric: false,
        ends: Ends::default(),
    }
}

/// A node's routing timer in the simulator.
#[derive(Clone, Copy, Debug)]
struct Timer {
    /// The instant a `Timer` event was queued for (virtual ms; `u64::MAX`:
    /// none): a `Timer` event for another instant is stale.
    armed: u64,
    /// The policy's `poll_timeout` as of its last flush (virtual ms;
    /// `u64::MAX`: none).
    due: u64,
}

impl Timer {
    const NONE: Timer = Timer {
        armed: u64::MAX,
        due: u64::MAX,
    };
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let n = cfg.nodes.max(2);
        let epoch = Instant::now();
        let routing = Arc::new(node_config(&cfg));
        let nodes: Vec<SimNode> = (0..n)
            .map(|i| new_node(&cfg, &routing, &mut rng, i, epoch))
            .collect();
        let by_key = nodes
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key, i as u32))
            .collect();
        let link_salt = rng.next_u64();
        let seeds = if cfg.topology == Topology::Opennet {
            let k = cfg.seeds.unwrap_or((n / 500).clamp(3, 20)).min(n);
            nodes[..k]
                .iter()
                .map(|s| (s.noderef.clone(), s.bytes.clone()))
                .collect()
        } else {
            Arc::from(Vec::new())
        };
        let store_htl = routing.insert_store_htl();
        let mut sim = Sim {
            cfg,
            rng,
            nodes,
            queue: queue::Queue::new(),
            now: 0,
            events: 0,
            events_by_kind: [0; Ev::KINDS.len()],
            delivered: Vec::new(),
            blocks: Vec::new(),
            shelf: Shelf::default(),
            reqs: HashMap::new(),
            inserts_done: 0,
            store_htl,
            counting_inserts: false,
            measuring: false,
            messages: 0,
            dirty: Vec::new(),
            sightings: HashMap::new(),
            depth: HashMap::new(),
            link_salt,
            epoch,
            by_key,
            punches: std::collections::BTreeMap::new(),
            joined: Vec::new(),
            swaps_at_measure: 0,
            offline: Vec::new(),
            churn_interval: 0,
            measured_inserts: 0..0,
            mean_degree: 0.0,
            nat_degrees: None,
            median_link: 0.0,
            link_histogram: Vec::new(),
            link_tv: 0.0,
            min_degree: 0,
            one_sided_degree: 0.0,
            largest_component: 0.0,
            by_kind: BTreeMap::new(),
            seeds,
            routing,
            attack: attack::AttackState::default(),
            alias: Aging::default(),
            last_in: Aging::default(),
            aged_at: 0,
            open_by_key: HashMap::new(),
            exit_ctx: None,
            tunnel_cells: 0,
            // Every node may act at the first tick.
            tick_at: vec![0; n],
            timers: vec![Timer::NONE; n],
            tick_heap: (0..n as u32).map(|i| Reverse((0, i))).collect(),
            touched: Vec::new(),
            tick_stale: vec![false; n],
        };
        // Every opennet node knows the seeds (a real node ships them).
        if !sim.seeds.is_empty() {
            for i in 0..n as u32 {
                let loc = sim.nodes[i as usize].policy.routing().location();
                sim.restart(i, loc, None);
            }
        }
        sim
    }

    /// Virtual time `ms` as the policies' `Instant`.
    fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Virtual now as an `Instant`.
    fn now_i(&self) -> Instant {
        self.instant(self.now)
    }

    /// An `Instant` from a policy as virtual ms.
    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Node `i` restarts: a fresh policy and routing core at `location`
    /// with the peer list it last saved (or `list`), as a real node comes
    /// back with its `peers.toml`; its store stays. It must have no links.
    fn restart(&mut self, i: u32, location: Location, list: Option<PeerList>) {
        let now = self.now_i();
        let s = &mut self.nodes[i as usize];
        debug_assert!(s.ends.is_empty());
        let list = list
            .or_else(|| s.saved.clone())
            .unwrap_or_else(|| PeerList::new(self.cfg.degree.saturating_mul(2)));
        let pcfg = policy_config(
            &self.cfg,
            &self.routing,
            s.key,
            &s.bytes,
            location,
            &self.seeds,
        );
        s.policy = PeerPolicy::new(pcfg, list, Sha256Verifier, now, WALL_START_MS + self.now);
        if s.nat {
            s.policy.set_behind_nat(true);
        }
        if self.cfg.nat > 0.0 {
            s.policy.set_punching();
        }
        if self.cfg.tunnel_hops > 0 {
            s.policy.enable_tunnels(&s.secret);
        }
        self.timers[i as usize] = Timer::NONE;
        self.schedule_tick(i, 0);
        self.lie_if_asked(i);
    }

    /// Node `i`'s policy may have something to do at a tick from `at`
    /// (virtual ms) on.
    fn schedule_tick(&mut self, i: u32, at: u64) {
        if at < self.tick_at[i as usize] {
            self.tick_at[i as usize] = at;
            self.tick_heap.push(Reverse((at, i)));
        }
    }

    /// With `--lying-lists on`, adversary node `i` names only its
    /// colluders in the tunnel peer lists it sends (the simulator-only
    /// knob `PeerPolicy::sim_adversary_lying_lists`).
    fn lie_if_asked(&mut self, i: u32) {
        if !self.cfg.lying_lists || !self.nodes[i as usize].adversary {
            return;
        }
        let colluders: std::collections::BTreeSet<[u8; 32]> = self
            .nodes
            .iter()
            .filter(|s| s.adversary)
            .map(|s| s.key)
            .collect();
        self.nodes[i as usize]
            .policy
            .sim_adversary_lying_lists(colluders);
    }

    /// The nodes node `i` has as routing peers.
    fn peer_nodes(&self, i: u32) -> Vec<u32> {
        let s = &self.nodes[i as usize];
        s.policy
            .routing()
            .peers()
            .filter_map(|(p, _)| s.ends.get(&p).map(|e| e.0))
            .collect()
    }

    /// A fetch by `node` of `block` at `at` that is not among the
    /// measured requests (warm-up, background traffic, an attack's own).
    fn push_fetch(&mut self, at: u64, node: u32, block: u32) {
        self.push(
            at,
            Ev::Fetch {
                node,
                block,
                measured: false,
            },
        );
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn latency(&self, a: u32, b: u32) -> u64 {
        let (lo, hi) = self.cfg.latency_ms;
        let (x, y) = (a.min(b) as u64, a.max(b) as u64);
        // splitmix64 of the link, salted by the seed.
        let mut z = (x << 32 | y) ^ self.link_salt;
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        lo + z % (hi.saturating_sub(lo) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node's made-up address is in a /24 of its own, past 65,536
    /// nodes too (node i and node i + 65,536 once shared one, and the
    /// per-network peer limits refused their links); below 65,536 the
    /// addresses are those the figures were measured with (10.x.y.1).
    #[test]
    fn each_node_has_a_network_of_its_own() {
        let cfg = SimConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let epoch = Instant::now();
        let routing = Arc::new(node_config(&cfg));
        let prefix = |i: usize, rng: &mut ChaCha8Rng| {
            let n = new_node(&cfg, &routing, rng, i, epoch);
            let a = n.noderef.addresses[0];
            (a, lichen_link::policy::address_prefix(a.ip()))
        };
        let (a0, p0) = prefix(0, &mut rng);
        let (a1, p1) = prefix(65_536, &mut rng);
        let (a2, p2) = prefix(999_999, &mut rng);
        let (a3, _) = prefix(258, &mut rng);
        assert_eq!(a0.to_string(), "10.0.0.1:1");
        assert_eq!(a3.to_string(), "10.1.2.1:1");
        assert_ne!(p0, p1, "{a0} {a1}");
        assert_ne!(p1, p2, "{a1} {a2}");
        assert!(p0.is_some() && p2.is_some());
    }
}
