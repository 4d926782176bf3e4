//! A deterministic simulator running the real [`Node`] code for many nodes
//! in one process.
//!
//! One seeded ChaCha RNG drives everything (topology, latencies, loss,
//! churn, node decisions) and events are ordered by (virtual time,
//! sequence number), so the same [`SimConfig`] gives the same [`Report`],
//! byte for byte. Nodes live in a `Vec` indexed by `u32`; events in one
//! binary heap; the clock jumps from event to event (the shape of
//! quinn-proto's test harness).
//!
//! Phases: build the topology (ideal small world; grown by opennet
//! announcement and path folding; or a darknet small world with scrambled
//! locations that swapping must sort out), insert `inserts` random CHK
//! blocks from random nodes, then run `requests` fetches of inserted keys
//! from random nodes while churn and adversaries do their work.

mod args;

pub use args::{parse_args, usage, Cli};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::location::{Key, Location};
use crate::message::{Block, KeyKind, Message, NodeRef};
use crate::node::{
    Action, BlockSource, Config, InsertOutcome, LocalRequest, Node, PeerId, RequestOutcome, Space,
    Verifier,
};

/// The simulator's block verifier: SHA-256(block) == routing key (the CHK
/// rule; the crypto crate supplies the real one to the node).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sha256Verifier;

impl Verifier for Sha256Verifier {
    fn verify(&self, key: &Key, _kind: KeyKind, block: &[u8]) -> bool {
        Sha256::digest(block).as_slice() == key.0
    }
}

/// How the network is wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Kleinberg small world: ring neighbours plus long links with
    /// probability ∝ 1/distance. The ideal opennet converges to.
    SmallWorld,
    /// Grown: nodes join through seed nodes, announce, and the network is
    /// shaped by path folding during a warm-up of requests.
    Opennet,
    /// A small-world friend graph whose nodes start at random locations;
    /// location swapping must restore routability.
    Darknet,
}

/// What the adversary's nodes do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Adversary {
    /// Behave correctly, record everything (for the anonymity figure).
    Observe,
    /// Drop every message (black holes).
    Drop,
    /// Answer every request at once with a corrupt block.
    Corrupt,
    /// Forward with the maximum HTL and report RouteNotFound with it.
    LieHtl,
}

/// Simulation parameters. [`parse_args`] builds one from command-line flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Target peers per node (small world / darknet: mean degree; opennet:
    /// peer limit).
    pub degree: usize,
    /// Wiring.
    pub topology: Topology,
    /// Blocks inserted before the requests.
    pub inserts: usize,
    /// Requests for inserted keys.
    pub requests: usize,
    /// Fraction of nodes offline at any moment of the request phase; nodes
    /// keep leaving and returning.
    pub churn: f64,
    /// Fraction of nodes run by the adversary.
    pub adversary: f64,
    /// What the adversary's nodes do.
    pub adversary_kind: Adversary,
    /// Seed of the one RNG.
    pub seed: u64,
    /// Maximum HTL.
    pub htl: u8,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Per-link latency range in ms (each link draws a fixed latency).
    pub latency_ms: (u64, u64),
    /// Opennet: warm-up requests (path folding) before measuring; `None`
    /// means 5 × nodes.
    pub warmup_requests: Option<usize>,
    /// Darknet: virtual time spent swapping before measuring (ms); `None`
    /// means enough for about 300 swap attempts per node.
    pub swap_ms: Option<u64>,
    /// Gap between two requests (ms).
    pub request_interval_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1000,
            degree: 20,
            topology: Topology::SmallWorld,
            inserts: 500,
            requests: 2000,
            churn: 0.0,
            adversary: 0.0,
            adversary_kind: Adversary::Observe,
            seed: 1,
            htl: 18,
            loss: 0.0,
            latency_ms: (10, 100),
            warmup_requests: None,
            swap_ms: None,
            request_interval_ms: 10,
        }
    }
}

/// What the adversary learned about requesters.
///
/// Each request id counts once: at the first adversary node it reaches, from
/// an honest neighbour (later sightings are known to be forwarded, since
/// the colluders share ids). The adversary guesses "this neighbour is the
/// originator" when the HTL is the maximum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anonymity {
    /// Fraction of nodes the adversary holds.
    pub fraction: f64,
    /// First sightings of request ids by the adversary.
    pub observations: usize,
    /// Random-guess baseline: the fraction of observations where the
    /// neighbour really was the originator. Guessing at random (or always)
    /// gives exactly this precision.
    pub random_baseline: f64,
    /// Precision the HTL rule allows by design: with the first sighting at
    /// hop k, HTL is still the maximum with probability 2^-(k-1) (each link
    /// keeps it with probability 1/2), so guessing on max HTL is right with
    /// probability n₁ / Σₖ nₖ·2^-(k-1), computed over the observed depths.
    pub htl_model_baseline: f64,
    /// Guesses made (observations with max HTL).
    pub guesses: usize,
    /// Measured precision of the guesses (using HTL, ids and the colluders'
    /// shared view).
    pub precision: f64,
    /// Fraction of the true originator sightings that were guessed.
    pub recall: f64,
}

/// The simulator's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The parameters.
    pub config: SimConfig,
    /// Mean peers per online node when measuring starts.
    pub mean_degree: f64,
    /// Median link length (fraction of the circle) when measuring starts.
    pub median_link_length: f64,
    /// Fewest peers of an online node when measuring starts.
    pub min_degree: usize,
    /// Fraction of online nodes in the largest connected component.
    pub largest_component: f64,
    /// Inserts that ended in success or ran out of route after storing.
    pub inserts_completed: usize,
    /// Mean nodes holding each insert in the long-term store.
    pub stores_per_insert: f64,
    /// Mean nodes holding each insert in the cache.
    pub caches_per_insert: f64,
    /// Inserts that no node stored or cached.
    pub inserts_stored_nowhere: usize,
    /// Requests issued.
    pub requests: usize,
    /// Requests that got the block.
    pub succeeded: usize,
    /// succeeded / requests.
    pub success_rate: f64,
    /// Hops from requester to the data (successful requests).
    pub hops_mean: f64,
    /// Median hops.
    pub hops_median: f64,
    /// 95th percentile hops.
    pub hops_p95: f64,
    /// Messages (all kinds, all hops) per request.
    pub messages_per_request: f64,
    /// Requests served by a node's cache (not the requester's).
    pub cache_hits: u64,
    /// Requests served by a node's long-term store.
    pub store_hits: u64,
    /// Failed requests by outcome.
    pub failures: BTreeMap<String, usize>,
    /// Failed requests whose block was on some online node at the time
    /// (routing failures rather than data loss).
    pub failed_but_available: usize,
    /// Offences counted against peers by honest nodes.
    pub offences_counted: u64,
    /// Blocks that failed verification at honest nodes.
    pub bad_blocks_caught: u64,
    /// Location swaps (darknet).
    pub swaps: u64,
    /// Anonymity figure (when there is an adversary).
    pub anonymity: Option<Anonymity>,
    /// Events processed.
    pub events: u64,
    /// Messages sent in the measured phase (all kinds).
    pub messages: u64,
    /// Messages sent in the measured phase, by kind.
    pub messages_by_kind: BTreeMap<String, u64>,
    /// Virtual time at the end (ms).
    pub virtual_time_ms: u64,
}

// ------------------------------------------------------------------ store

#[derive(Debug, Default)]
struct SimStore {
    store: BTreeMap<Key, Block>,
    cache: BTreeMap<Key, (Block, u64)>,
    stamp: u64,
    hits_store: u64,
    hits_cache: u64,
}

/// Gap between warm-up requests (ms): spread in virtual time so that
/// nodes can take several path-folding offers each.
const WARM_GAP: u64 = 50;

const STORE_CAP: usize = 512;
const CACHE_CAP: usize = 256;

impl SimStore {
    fn put(&mut self, space: Space, key: Key, block: Block, me: Location) {
        match space {
            Space::Store => {
                self.store.insert(key, block);
                if self.store.len() > STORE_CAP {
                    // Evict the key farthest from us.
                    if let Some(k) = self
                        .store
                        .keys()
                        .max_by_key(|k| (k.location().distance(me), **k))
                        .copied()
                    {
                        self.store.remove(&k);
                    }
                }
            }
            Space::Cache => {
                self.stamp += 1;
                self.cache.insert(key, (block, self.stamp));
                if self.cache.len() > CACHE_CAP {
                    if let Some(k) = self.cache.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| *k) {
                        self.cache.remove(&k);
                    }
                }
            }
        }
    }

    fn has(&self, key: &Key) -> bool {
        self.store.contains_key(key) || self.cache.contains_key(key)
    }
}

impl BlockSource for SimStore {
    fn get(&mut self, key: &Key, _kind: KeyKind) -> Option<Block> {
        if let Some(b) = self.store.get(key) {
            self.hits_store += 1;
            return Some(b.clone());
        }
        self.stamp += 1;
        let stamp = self.stamp;
        if let Some((b, s)) = self.cache.get_mut(key) {
            *s = stamp;
            self.hits_cache += 1;
            return Some(b.clone());
        }
        None
    }
}

// ------------------------------------------------------------------ events

#[derive(Debug)]
enum Ev {
    Deliver {
        to: u32,
        from: u32,
        msg: Message,
    },
    Timer {
        node: u32,
    },
    Insert {
        node: u32,
        block: u32,
    },
    Fetch {
        node: u32,
        block: u32,
        measured: bool,
    },
    Join {
        node: u32,
    },
    DropSeed {
        node: u32,
        seed: u32,
    },
    Churn,
}

#[derive(Debug)]
struct Entry {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (Reverse(self.at), Reverse(self.seq)).cmp(&(Reverse(o.at), Reverse(o.seq)))
    }
}

#[derive(Debug)]
struct SimNode {
    node: Node<Sha256Verifier>,
    store: SimStore,
    online: bool,
    adversary: bool,
    timer_at: u64,
    old_peers: Vec<u32>,
}

#[derive(Debug, Clone)]
struct Req {
    origin: u32,
    measured: bool,
    data_found_msgs: u32,
    messages: u32,
    outcome: Option<Result<(), String>>,
    /// When a measured fetch fails: was the block on some online node?
    block: u32,
    available: bool,
}

struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    heap: BinaryHeap<Entry>,
    seq: u64,
    now: u64,
    events: u64,
    blocks: Vec<(Key, Block)>,
    reqs: HashMap<u64, Req>,
    inserts_done: usize,
    counting_inserts: bool,
    measuring: bool,
    messages: u64,
    dirty: Vec<u32>,
    // Anonymity bookkeeping: first adversary sighting per id, and the hop
    // depth of each (id, node) to compute the HTL model baseline.
    sightings: HashMap<u64, (u32, u8, u8)>,
    depth: HashMap<(u64, u32), u8>,
    link_salt: u64,
    swaps_at_measure: u64,
    offline: Vec<u32>,
    churn_interval: u64,
    measured_inserts: std::ops::Range<usize>,
    mean_degree: f64,
    median_link: f64,
    min_degree: usize,
    largest_component: f64,
    by_kind: BTreeMap<&'static str, u64>,
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
        cache_max_htl: cfg.htl.max(2) - 2,
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
        swap_interval: 1_000,
        announce_interval: 5_000,
        swap_timeout: 20 * rtt,
        location_reset_one_in: 0,
        ..Config::default()
    }
}

/// Run a simulation.
pub fn run(cfg: &SimConfig) -> Report {
    let mut sim = Sim::new(cfg.clone());
    sim.build();
    sim.insert_phase();
    sim.request_phase();
    sim.report()
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let ncfg = node_config(&cfg);
        let n = cfg.nodes.max(2);
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let loc = Location::random(&mut rng);
            let mut node = Node::new(ncfg.clone(), loc, Sha256Verifier);
            node.set_noderef(NodeRef {
                location: loc,
                address: (i as u32).to_le_bytes().to_vec(),
            });
            nodes.push(SimNode {
                node,
                store: SimStore::default(),
                online: true,
                adversary: false,
                timer_at: u64::MAX,
                old_peers: Vec::new(),
            });
        }
        let link_salt = rng.next_u64();
        Sim {
            cfg,
            rng,
            nodes,
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            events: 0,
            blocks: Vec::new(),
            reqs: HashMap::new(),
            inserts_done: 0,
            counting_inserts: false,
            measuring: false,
            messages: 0,
            dirty: Vec::new(),
            sightings: HashMap::new(),
            depth: HashMap::new(),
            link_salt,
            swaps_at_measure: 0,
            offline: Vec::new(),
            churn_interval: 0,
            measured_inserts: 0..0,
            mean_degree: 0.0,
            median_link: 0.0,
            min_degree: 0,
            largest_component: 0.0,
            by_kind: BTreeMap::new(),
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            ev,
        });
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

    // ------------------------------------------------------------ wiring

    fn link(&mut self, a: u32, b: u32) {
        if a == b {
            return;
        }
        let (la, lb) = (
            self.nodes[a as usize].node.location(),
            self.nodes[b as usize].node.location(),
        );
        let now = self.now;
        self.nodes[a as usize]
            .node
            .add_peer(now, PeerId(b.into()), lb, &mut self.rng);
        self.nodes[b as usize]
            .node
            .add_peer(now, PeerId(a.into()), la, &mut self.rng);
    }

    fn unlink(&mut self, a: u32, b: u32) {
        let now = self.now;
        self.nodes[a as usize]
            .node
            .remove_peer(now, PeerId(b.into()), &mut self.rng);
        self.nodes[b as usize]
            .node
            .remove_peer(now, PeerId(a.into()), &mut self.rng);
        self.dirty.push(a);
        self.dirty.push(b);
    }

    /// Opennet connection from `a` (who asked) to `b`.
    fn connect(&mut self, a: u32, b: u32) {
        if a == b || !self.nodes[a as usize].online || !self.nodes[b as usize].online {
            return;
        }
        if self.nodes[a as usize]
            .node
            .peers()
            .any(|(p, _)| p.0 == u64::from(b))
        {
            return;
        }
        let now = self.now;
        let (la, lb) = (
            self.nodes[a as usize].node.location(),
            self.nodes[b as usize].node.location(),
        );
        if !self.nodes[b as usize].node.accept_opennet_peer(
            now,
            PeerId(a.into()),
            la,
            &mut self.rng,
        ) {
            return;
        }
        self.dirty.push(b);
        if !self.nodes[a as usize].node.accept_opennet_peer(
            now,
            PeerId(b.into()),
            lb,
            &mut self.rng,
        ) {
            self.nodes[b as usize]
                .node
                .remove_peer(now, PeerId(a.into()), &mut self.rng);
        }
        self.dirty.push(a);
    }

    fn small_world(&mut self, scramble: bool) {
        let n = self.nodes.len();
        // Order nodes by location; in the darknet the graph is built on a
        // hidden "true" order and the locations are then shuffled.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|&i| self.nodes[i as usize].node.location());
        let long = (self.cfg.degree / 2).saturating_sub(1).max(1);
        let ln = ((n / 2).max(2) as f64).ln();
        for r in 0..n {
            let a = order[r];
            self.link(a, order[(r + 1) % n]);
            for _ in 0..long {
                let d = (self.rng.gen::<f64>() * ln).exp().floor() as usize;
                let d = d.clamp(1, n / 2);
                let s = if self.rng.gen_bool(0.5) {
                    r + d
                } else {
                    r + n - d
                };
                self.link(a, order[s % n]);
            }
        }
        if scramble {
            let mut locs: Vec<Location> = self.nodes.iter().map(|s| s.node.location()).collect();
            for i in (1..locs.len()).rev() {
                let j = self.rng.gen_range(0..=i);
                locs.swap(i, j);
            }
            // Rebuild nodes at their new locations with the same links.
            let ncfg = node_config(&self.cfg);
            let links: Vec<Vec<u32>> = self
                .nodes
                .iter()
                .map(|s| s.node.peers().map(|(p, _)| p.0 as u32).collect())
                .collect();
            for (i, loc) in locs.into_iter().enumerate() {
                self.nodes[i].node = Node::new(ncfg.clone(), loc, Sha256Verifier);
            }
            for (a, ps) in links.iter().enumerate() {
                for &b in ps {
                    if (a as u32) < b {
                        self.link(a as u32, b);
                    }
                }
            }
        }
    }

    fn build(&mut self) {
        let n = self.nodes.len();
        let advs = ((self.cfg.adversary.clamp(0.0, 1.0)) * n as f64).round() as usize;
        let mut idx: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.rng.gen_range(0..=i);
            idx.swap(i, j);
        }
        for &i in idx.iter().take(advs) {
            self.nodes[i as usize].adversary = true;
        }
        match self.cfg.topology {
            Topology::SmallWorld => self.small_world(false),
            Topology::Darknet => {
                self.small_world(true);
                for i in 0..n as u32 {
                    self.dirty.push(i);
                }
                self.flush();
                let swap_ms = self.cfg.swap_ms.unwrap_or(300 * 1_000);
                let until = self.now + swap_ms;
                self.run_until(until);
            }
            Topology::Opennet => self.grow_opennet(),
        }
        self.swaps_at_measure = self.nodes.iter().map(|s| s.node.stats().swaps).sum();
    }

    fn grow_opennet(&mut self) {
        let n = self.nodes.len();
        let seeds = self.seeds() as usize;
        for a in 0..seeds as u32 {
            for b in (a + 1)..seeds as u32 {
                self.link(a, b);
            }
        }
        for i in seeds..n {
            self.nodes[i].online = false;
        }
        let join_gap = 50;
        for i in seeds..n {
            self.push((i - seeds) as u64 * join_gap, Ev::Join { node: i as u32 });
        }
        let end = (n - seeds) as u64 * join_gap + 10_000;
        self.run_until(end);
        // Warm-up: path folding on real traffic.
        let warm = self.cfg.warmup_requests.unwrap_or(5 * n);
        let warm_inserts = (warm / 10).max(1);
        let base = self.blocks.len();
        for _ in 0..warm_inserts {
            self.new_block();
        }
        let t0 = self.now;
        for j in 0..warm_inserts {
            let node = self.random_online_honest();
            self.push(
                t0 + j as u64 * 5,
                Ev::Insert {
                    node,
                    block: (base + j) as u32,
                },
            );
        }
        let t1 = t0 + warm_inserts as u64 * 5 + 5_000;
        for j in 0..warm {
            let node = self.random_online_honest();
            let block = (base + self.rng.gen_range(0..warm_inserts)) as u32;
            self.push(
                t1 + j as u64 * WARM_GAP,
                Ev::Fetch {
                    node,
                    block,
                    measured: false,
                },
            );
        }
        let end = t1 + warm as u64 * WARM_GAP + 30_000;
        self.run_until(end);
    }

    fn new_block(&mut self) -> u32 {
        let mut b = vec![0u8; 32];
        self.rng.fill_bytes(&mut b);
        let key = Key(Sha256::digest(&b).into());
        self.blocks.push((key, b));
        (self.blocks.len() - 1) as u32
    }

    /// Nodes `0..seeds()` are the opennet seed nodes (kept online).
    fn seeds(&self) -> u32 {
        (self.nodes.len() / 500).clamp(3, 20).min(self.nodes.len()) as u32
    }

    /// A node that may leave: online, honest, and not an opennet seed.
    fn random_leaver(&mut self) -> u32 {
        let keep = if self.cfg.topology == Topology::Opennet {
            self.seeds()
        } else {
            0
        };
        loop {
            let i = self.random_online_honest();
            if i >= keep {
                return i;
            }
        }
    }

    fn random_online_honest(&mut self) -> u32 {
        loop {
            let i = self.rng.gen_range(0..self.nodes.len());
            let s = &self.nodes[i];
            if s.online && !s.adversary {
                return i as u32;
            }
        }
    }

    fn insert_phase(&mut self) {
        let base = self.blocks.len();
        for _ in 0..self.cfg.inserts {
            self.new_block();
        }
        let t0 = self.now;
        for j in 0..self.cfg.inserts {
            let node = self.random_online_honest();
            self.push(
                t0 + j as u64 * 20,
                Ev::Insert {
                    node,
                    block: (base + j) as u32,
                },
            );
        }
        self.measured_inserts = base..base + self.cfg.inserts;
        let end = t0 + self.cfg.inserts as u64 * 20 + 60_000;
        self.counting_inserts = true;
        self.run_until(end);
        self.counting_inserts = false;
    }
}

impl Sim {
    fn request_phase(&mut self) {
        // Topology figures as the measurement starts.
        let online: Vec<&SimNode> = self.nodes.iter().filter(|s| s.online).collect();
        self.mean_degree = online
            .iter()
            .map(|s| s.node.peer_count() as f64)
            .sum::<f64>()
            / online.len().max(1) as f64;
        let mut lens: Vec<u64> = Vec::new();
        for s in &online {
            let me = s.node.location();
            lens.extend(s.node.peers().map(|(_, l)| l.distance(me)));
        }
        lens.sort_unstable();
        self.min_degree = online
            .iter()
            .map(|s| s.node.peer_count())
            .min()
            .unwrap_or(0);
        self.largest_component = self.largest_component();
        self.median_link = lens
            .get(lens.len() / 2)
            .map_or(0.0, |&d| Location::distance_f64(d));

        self.measuring = true;
        self.messages = 0;
        let t0 = self.now;
        let n = self.nodes.len();
        let span = (self.cfg.requests as u64).max(1) * self.cfg.request_interval_ms;
        if self.cfg.churn > 0.0 {
            let off = ((self.cfg.churn.clamp(0.0, 0.9)) * n as f64).round() as usize;
            for _ in 0..off {
                let i = self.random_leaver();
                self.go_offline(i);
            }
            self.flush();
            // About `off` departures (and as many returns) over the phase.
            self.churn_interval = (span / off.max(1) as u64).max(1);
            self.push(t0 + self.churn_interval, Ev::Churn);
        }
        let measured = self.measured_inserts.clone();
        for j in 0..self.cfg.requests {
            let node = self.random_online_honest();
            let block = if measured.is_empty() {
                self.new_block()
            } else {
                self.rng.gen_range(measured.clone()) as u32
            };
            self.push(
                t0 + j as u64 * self.cfg.request_interval_ms,
                Ev::Fetch {
                    node,
                    block,
                    measured: true,
                },
            );
        }
        let end = t0 + span + 300_000;
        self.run_until(end);
    }

    /// Fraction of online nodes in the largest connected component.
    fn largest_component(&self) -> f64 {
        let n = self.nodes.len();
        let mut comp = vec![u32::MAX; n];
        let (mut best, mut online) = (0usize, 0usize);
        for start in 0..n {
            if !self.nodes[start].online || comp[start] != u32::MAX {
                continue;
            }
            let mut stack = vec![start];
            comp[start] = start as u32;
            let mut size = 0;
            while let Some(i) = stack.pop() {
                size += 1;
                for (p, _) in self.nodes[i].node.peers() {
                    let p = p.0 as usize;
                    if p < n && self.nodes[p].online && comp[p] == u32::MAX {
                        comp[p] = start as u32;
                        stack.push(p);
                    }
                }
            }
            online += size;
            best = best.max(size);
        }
        best as f64 / online.max(1) as f64
    }

    fn go_offline(&mut self, i: u32) {
        let peers: Vec<u32> = self.nodes[i as usize]
            .node
            .peers()
            .map(|(p, _)| p.0 as u32)
            .collect();
        for &p in &peers {
            self.unlink(i, p);
        }
        let s = &mut self.nodes[i as usize];
        s.old_peers = peers;
        s.online = false;
        self.offline.push(i);
    }

    fn come_back(&mut self, i: u32) {
        self.nodes[i as usize].online = true;
        let old = std::mem::take(&mut self.nodes[i as usize].old_peers);
        for p in old {
            if !self.nodes[p as usize].online {
                continue;
            }
            if self.cfg.topology == Topology::Opennet {
                self.connect(i, p);
            } else {
                self.link(i, p);
            }
        }
        if self.cfg.topology == Topology::Opennet {
            let now = self.now;
            // Old peers that filled up meanwhile refuse us: like a real
            // node, fall back on a seed node, then announce.
            if self.nodes[i as usize].node.peer_count() < 3 {
                let seed = self.rng.gen_range(0..self.seeds());
                self.link(i, seed);
                self.dirty.push(seed);
                self.push(now + 5_000, Ev::DropSeed { node: i, seed });
            }
            self.nodes[i as usize].node.handle_local_request(
                now,
                LocalRequest::Announce,
                &mut self.rng,
            );
        }
        self.dirty.push(i);
    }

    fn run_until(&mut self, end: u64) {
        self.flush();
        while let Some(top) = self.heap.peek() {
            if top.at > end {
                break;
            }
            let Some(e) = self.heap.pop() else { break };
            self.now = self.now.max(e.at);
            self.events += 1;
            self.handle(e.ev);
            self.flush();
        }
        self.now = self.now.max(end);
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Deliver { to, from, msg } => {
                let t = to as usize;
                if !self.nodes[t].online {
                    return;
                }
                if self.nodes[t].adversary {
                    self.observe(to, from, &msg);
                    match self.cfg.adversary_kind {
                        Adversary::Drop => return,
                        Adversary::Corrupt => {
                            if let Message::Request { id, .. } = msg {
                                let mut junk = vec![0u8; 32];
                                self.rng.fill_bytes(&mut junk);
                                self.send(to, from, Message::Accepted { id });
                                self.send(to, from, Message::DataFound { id, block: junk });
                                return;
                            }
                        }
                        _ => {}
                    }
                } else if self.cfg.adversary > 0.0 {
                    self.track_depth(to, from, &msg);
                }
                let s = &mut self.nodes[t];
                s.node
                    .handle_message(now, PeerId(from.into()), msg, &mut s.store, &mut self.rng);
                self.dirty.push(to);
            }
            Ev::Timer { node } => {
                let s = &mut self.nodes[node as usize];
                if s.timer_at == now {
                    s.timer_at = u64::MAX;
                }
                // Offline nodes run their timers too (they have no peers, so
                // this only expires their state).
                s.node.handle_timeout(now, &mut self.rng);
                self.dirty.push(node);
            }
            Ev::Insert { node, block } => {
                if !self.nodes[node as usize].online {
                    return;
                }
                let (key, b) = self.blocks[block as usize].clone();
                let s = &mut self.nodes[node as usize];
                let id = s.node.handle_local_request(
                    now,
                    LocalRequest::Insert {
                        key,
                        kind: KeyKind::Chk,
                        block: b,
                    },
                    &mut self.rng,
                );
                self.reqs.insert(
                    id.0,
                    Req {
                        origin: node,
                        measured: false,
                        data_found_msgs: 0,
                        messages: 0,
                        outcome: None,
                        block,
                        available: true,
                    },
                );
                self.dirty.push(node);
            }
            Ev::Fetch {
                node,
                block,
                measured,
            } => {
                let (key, _) = self.blocks[block as usize];
                // The requester chosen in advance may have left meanwhile.
                let node = if self.nodes[node as usize].online {
                    node
                } else {
                    self.random_online_honest()
                };
                let s = &mut self.nodes[node as usize];
                if s.store.has(&key) {
                    // The embedder answers from its own store; no traffic.
                    let id = self.rng.next_u64();
                    self.reqs.insert(
                        id,
                        Req {
                            origin: node,
                            measured,
                            data_found_msgs: 0,
                            messages: 0,
                            outcome: Some(Ok(())),
                            block,
                            available: true,
                        },
                    );
                    return;
                }
                let id = s.node.handle_local_request(
                    now,
                    LocalRequest::Fetch {
                        key,
                        kind: KeyKind::Chk,
                    },
                    &mut self.rng,
                );
                self.reqs.insert(
                    id.0,
                    Req {
                        origin: node,
                        measured,
                        data_found_msgs: 0,
                        messages: 0,
                        outcome: None,
                        block,
                        available: true,
                    },
                );
                if self.cfg.adversary > 0.0 && measured {
                    self.depth.insert((id.0, node), 0);
                }
                self.dirty.push(node);
            }
            Ev::Join { node } => {
                let s = &mut self.nodes[node as usize];
                s.online = true;
                let seed = self.rng.gen_range(0..self.seeds());
                self.link(node, seed);
                let s = &mut self.nodes[node as usize];
                s.node
                    .handle_local_request(now, LocalRequest::Announce, &mut self.rng);
                self.dirty.push(node);
                self.dirty.push(seed);
                self.push(now + 5_000, Ev::DropSeed { node, seed });
            }
            Ev::DropSeed { node, seed } => {
                // Seed connections are temporary: drop once the newcomer
                // has a few peers of its own.
                if self.nodes[node as usize].node.peer_count() > 3 {
                    self.unlink(node, seed);
                } else {
                    self.push(now + 5_000, Ev::DropSeed { node, seed });
                }
            }
            Ev::Churn => {
                if !self.offline.is_empty() {
                    let k = self.rng.gen_range(0..self.offline.len());
                    let back = self.offline.swap_remove(k);
                    let leave = self.random_leaver();
                    self.go_offline(leave);
                    self.come_back(back);
                    let next = now + self.churn_interval;
                    self.push(next, Ev::Churn);
                }
            }
        }
    }

    /// Process actions of every node touched, until quiet; then re-arm
    /// their timers.
    fn flush(&mut self) {
        while let Some(i) = self.dirty.pop() {
            while let Some(a) = self.nodes[i as usize].node.poll_action() {
                self.apply(i, a);
            }
            let s = &mut self.nodes[i as usize];
            if let Some(t) = s.node.poll_timeout() {
                let t = t.max(self.now);
                if t < s.timer_at {
                    s.timer_at = t;
                    self.push(t, Ev::Timer { node: i });
                }
            }
        }
    }

    fn apply(&mut self, i: u32, a: Action) {
        match a {
            Action::Send { to, msg } => self.send(i, to.0 as u32, msg),
            Action::StoreBlock {
                space, key, block, ..
            } => {
                let s = &mut self.nodes[i as usize];
                let me = s.node.location();
                s.store.put(space, key, block, me);
            }
            Action::RequestDone { id, outcome } => {
                let failed = !matches!(outcome, RequestOutcome::Found(_));
                let available = failed
                    && self.reqs.get(&id.0).is_some_and(|r| {
                        let key = self.blocks[r.block as usize].0;
                        r.measured && self.nodes.iter().any(|n| n.online && n.store.has(&key))
                    });
                if let Some(r) = self.reqs.get_mut(&id.0) {
                    r.available = !failed || available;
                    r.outcome = Some(match outcome {
                        RequestOutcome::Found(_) => Ok(()),
                        RequestOutcome::NotFound => Err("not-found".into()),
                        RequestOutcome::RouteNotFound => Err("route-not-found".into()),
                        RequestOutcome::RecentlyFailed => Err("recently-failed".into()),
                        RequestOutcome::Overloaded => Err("overloaded".into()),
                        RequestOutcome::TimedOut => Err("timed-out".into()),
                    });
                }
            }
            Action::InsertDone { id, outcome } => {
                if let Some(r) = self.reqs.get_mut(&id.0) {
                    let ok = matches!(
                        outcome,
                        InsertOutcome::Success | InsertOutcome::RouteNotFound { .. }
                    );
                    r.outcome = Some(if ok {
                        Ok(())
                    } else {
                        Err(format!("{outcome:?}"))
                    });
                    if self.counting_inserts {
                        self.inserts_done += usize::from(ok);
                    }
                }
            }
            Action::Connect { noderef } => {
                let mut b = [0u8; 4];
                if noderef.address.len() == 4 {
                    b.copy_from_slice(&noderef.address);
                    let target = u32::from_le_bytes(b);
                    if (target as usize) < self.nodes.len() {
                        self.connect(i, target);
                    }
                }
            }
            Action::Disconnect { peer, .. } => {
                let p = peer.0 as u32;
                if (p as usize) < self.nodes.len() {
                    let now = self.now;
                    self.nodes[p as usize]
                        .node
                        .remove_peer(now, PeerId(i.into()), &mut self.rng);
                    self.dirty.push(p);
                }
            }
            Action::LocationChanged { .. } => {}
        }
    }

    fn send(&mut self, from: u32, to: u32, mut msg: Message) {
        if self.nodes[from as usize].adversary && self.cfg.adversary_kind == Adversary::LieHtl {
            match &mut msg {
                Message::Request { htl, .. }
                | Message::Insert { htl, .. }
                | Message::RouteNotFound { htl, .. } => {
                    *htl = self.cfg.htl;
                }
                _ => {}
            }
        }
        if self.measuring {
            self.messages += 1;
            *self.by_kind.entry(msg.name()).or_default() += 1;
        }
        if let Some(id) = msg.id() {
            if let Some(r) = self.reqs.get_mut(&id) {
                r.messages += 1;
                if matches!(msg, Message::DataFound { .. }) {
                    r.data_found_msgs += 1;
                }
            }
        }
        if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss.min(1.0)) {
            return;
        }
        let at = self.now + self.latency(from, to);
        self.push(at, Ev::Deliver { to, from, msg });
    }

    fn track_depth(&mut self, to: u32, from: u32, msg: &Message) {
        if let Message::Request { id, .. } = msg {
            if let Some(&d) = self.depth.get(&(*id, from)) {
                self.depth.entry((*id, to)).or_insert(d.saturating_add(1));
            }
        }
    }

    fn observe(&mut self, to: u32, from: u32, msg: &Message) {
        let Message::Request { id, htl, .. } = msg else {
            return;
        };
        if !self.reqs.get(id).is_some_and(|r| r.measured) {
            return;
        }
        let depth = self
            .depth
            .get(&(*id, from))
            .map_or(u8::MAX, |d| d.saturating_add(1));
        if !self.nodes[from as usize].adversary {
            self.sightings.entry(*id).or_insert((from, *htl, depth));
        } else {
            // Seen by a colluder first: not a candidate any more.
            self.sightings.entry(*id).or_insert((u32::MAX, 0, depth));
        }
        if let Some(&d) = self.depth.get(&(*id, from)) {
            self.depth.entry((*id, to)).or_insert(d.saturating_add(1));
        }
    }

    fn report(&self) -> Report {
        let measured: Vec<&Req> = {
            let mut v: Vec<(&u64, &Req)> = self.reqs.iter().filter(|(_, r)| r.measured).collect();
            v.sort_by_key(|(id, _)| **id);
            v.into_iter().map(|(_, r)| r).collect()
        };
        let requests = measured.len();
        let mut hops: Vec<u32> = Vec::new();
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        let mut msgs = 0u64;
        let mut failed_available = 0usize;
        for r in &measured {
            msgs += u64::from(r.messages);
            match &r.outcome {
                Some(Ok(())) => hops.push(r.data_found_msgs),
                Some(Err(e)) => {
                    *failures.entry(e.clone()).or_default() += 1;
                    failed_available += usize::from(r.available);
                }
                None => *failures.entry("unfinished".into()).or_default() += 1,
            }
        }
        hops.sort_unstable();
        let succeeded = hops.len();
        let pct = |p: f64| -> f64 {
            if hops.is_empty() {
                0.0
            } else {
                hops[((hops.len() - 1) as f64 * p).round() as usize] as f64
            }
        };
        let (mut stores, mut caches, mut nowhere) = (0usize, 0usize, 0usize);
        for j in self.measured_inserts.clone() {
            let key = self.blocks[j].0;
            let s = self
                .nodes
                .iter()
                .filter(|n| n.store.store.contains_key(&key))
                .count();
            let c = self
                .nodes
                .iter()
                .filter(|n| n.store.cache.contains_key(&key))
                .count();
            stores += s;
            caches += c;
            nowhere += usize::from(s + c == 0);
        }
        let ni = self.measured_inserts.len().max(1) as f64;
        let honest = self.nodes.iter().filter(|n| !n.adversary);
        let (mut offences, mut bad) = (0, 0);
        for n in honest {
            offences += n.node.stats().misbehaviour;
            bad += n.node.stats().bad_blocks;
        }
        let swaps: u64 = self.nodes.iter().map(|s| s.node.stats().swaps).sum();
        Report {
            config: self.cfg.clone(),
            mean_degree: round4(self.mean_degree),
            median_link_length: round6(self.median_link),
            min_degree: self.min_degree,
            largest_component: round4(self.largest_component),
            inserts_completed: self.inserts_done,
            stores_per_insert: round4(stores as f64 / ni),
            caches_per_insert: round4(caches as f64 / ni),
            inserts_stored_nowhere: nowhere,
            requests,
            succeeded,
            success_rate: round4(succeeded as f64 / requests.max(1) as f64),
            hops_mean: round4(
                hops.iter().map(|&h| h as f64).sum::<f64>() / succeeded.max(1) as f64,
            ),
            hops_median: pct(0.5),
            hops_p95: pct(0.95),
            messages_per_request: round4(msgs as f64 / requests.max(1) as f64),
            cache_hits: self.nodes.iter().map(|s| s.store.hits_cache).sum(),
            store_hits: self.nodes.iter().map(|s| s.store.hits_store).sum(),
            failures,
            failed_but_available: failed_available,
            offences_counted: offences,
            bad_blocks_caught: bad,
            swaps,
            anonymity: self.anonymity(),
            events: self.events,
            messages: self.messages,
            messages_by_kind: self
                .by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            virtual_time_ms: self.now,
        }
    }

    fn anonymity(&self) -> Option<Anonymity> {
        if self.cfg.adversary <= 0.0 {
            return None;
        }
        let mut ids: Vec<&u64> = self.sightings.keys().collect();
        ids.sort_unstable();
        let (mut obs, mut truth, mut guesses, mut right) = (0usize, 0usize, 0usize, 0usize);
        let mut by_depth: BTreeMap<u8, usize> = BTreeMap::new();
        for id in ids {
            let (from, htl, depth) = self.sightings[id];
            if from == u32::MAX {
                continue;
            }
            let Some(r) = self.reqs.get(id) else { continue };
            obs += 1;
            let is_origin = r.origin == from;
            truth += usize::from(is_origin);
            *by_depth.entry(depth).or_default() += 1;
            if htl >= self.cfg.htl {
                guesses += 1;
                right += usize::from(is_origin);
            }
        }
        let n1 = by_depth.get(&1).copied().unwrap_or(0) as f64;
        let expected: f64 = by_depth
            .iter()
            .map(|(&k, &c)| c as f64 * 0.5f64.powi(i32::from(k.saturating_sub(1)).min(60)))
            .sum();
        Some(Anonymity {
            fraction: self.cfg.adversary,
            observations: obs,
            random_baseline: round4(truth as f64 / obs.max(1) as f64),
            htl_model_baseline: round4(if expected > 0.0 { n1 / expected } else { 0.0 }),
            guesses,
            precision: round4(right as f64 / guesses.max(1) as f64),
            recall: round4(right as f64 / truth.max(1) as f64),
        })
    }
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

impl Report {
    /// A human-readable table.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "lichen routing simulation: {} nodes, degree {}, {:?}, htl {}, seed {}",
            c.nodes, c.degree, c.topology, c.htl, c.seed
        );
        let _ = writeln!(
            s,
            "  churn {:.0}%  adversary {:.1}% ({:?})  loss {:.2}%  latency {}-{} ms",
            c.churn * 100.0,
            c.adversary * 100.0,
            c.adversary_kind,
            c.loss * 100.0,
            c.latency_ms.0,
            c.latency_ms.1
        );
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<28} {v}");
        };
        row(&mut s, "mean degree", format!("{:.2}", self.mean_degree));
        row(
            &mut s,
            "median link length",
            format!("{:.6}", self.median_link_length),
        );
        row(
            &mut s,
            "min degree / largest component",
            format!(
                "{} / {:.2}%",
                self.min_degree,
                self.largest_component * 100.0
            ),
        );
        if c.topology == Topology::Darknet {
            row(&mut s, "location swaps", self.swaps.to_string());
        }
        row(
            &mut s,
            "inserts completed",
            format!("{}/{}", self.inserts_completed, c.inserts),
        );
        row(
            &mut s,
            "stores per insert",
            format!(
                "{:.2} (cache {:.2}, nowhere {})",
                self.stores_per_insert, self.caches_per_insert, self.inserts_stored_nowhere
            ),
        );
        row(&mut s, "requests", self.requests.to_string());
        row(
            &mut s,
            "success rate",
            format!(
                "{:.2}% ({}/{})",
                self.success_rate * 100.0,
                self.succeeded,
                self.requests
            ),
        );
        row(
            &mut s,
            "hops mean / median / p95",
            format!(
                "{:.2} / {} / {}",
                self.hops_mean, self.hops_median, self.hops_p95
            ),
        );
        row(
            &mut s,
            "messages per request",
            format!("{:.2}", self.messages_per_request),
        );
        row(
            &mut s,
            "served from cache / store",
            format!("{} / {}", self.cache_hits, self.store_hits),
        );
        if !self.failures.is_empty() {
            let f: Vec<String> = self
                .failures
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            row(&mut s, "failures", f.join(", "));
            row(
                &mut s,
                "failed, data was online",
                self.failed_but_available.to_string(),
            );
        }
        row(
            &mut s,
            "offences / bad blocks caught",
            format!("{} / {}", self.offences_counted, self.bad_blocks_caught),
        );
        if let Some(a) = &self.anonymity {
            row(&mut s, "adversary observations", a.observations.to_string());
            row(
                &mut s,
                "random-guess baseline",
                format!("{:.4}", a.random_baseline),
            );
            row(
                &mut s,
                "HTL model baseline",
                format!("{:.4}", a.htl_model_baseline),
            );
            row(
                &mut s,
                "adversary precision",
                format!(
                    "{:.4} ({} guesses, recall {:.4})",
                    a.precision, a.guesses, a.recall
                ),
            );
        }
        row(
            &mut s,
            "events / messages",
            format!("{} / {}", self.events, self.messages),
        );
        row(
            &mut s,
            "virtual time",
            format!("{:.1} s", self.virtual_time_ms as f64 / 1000.0),
        );
        s
    }
}
