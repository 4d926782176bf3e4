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
//!
//! This module holds the simulator's state (`Sim`, private) and
//! the event queue; `config`, `report`, `store` and `args` below it import
//! nothing from it; `topology`, `workload`, `events` and `measure` add
//! `impl Sim` blocks and import from here, never from each other:
//!
//! - `args`: the command-line flags ([`parse_args`], [`usage`]).
//! - `config`: [`SimConfig`], [`Topology`], [`Adversary`], the verifier.
//! - `report`: [`Report`], [`Anonymity`] and the table.
//! - `store`: each node's bounded store and cache.
//! - `topology`: links, small worlds, opennet growth.
//! - `workload`: the insert and request phases, churn.
//! - `events`: the event loop and the nodes' actions.
//! - `measure`: building the report.

mod args;
mod config;
mod events;
mod measure;
mod report;
mod store;
mod topology;
mod workload;

pub use args::{parse_args, usage, Cli};
pub use config::{Adversary, Sha256Verifier, SimConfig, Topology};
pub use report::{Anonymity, Report};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::location::{Key, Location};
use crate::message::{Block, Message, NodeRef};
use crate::node::{Config, Node};
use store::SimStore;

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

impl Req {
    /// A request or insert of block number `block` by `origin`, nothing
    /// sent yet; `outcome` is set at once when no traffic is needed.
    fn new(origin: u32, block: u32, measured: bool, outcome: Option<Result<(), String>>) -> Self {
        Req {
            origin,
            measured,
            data_found_msgs: 0,
            messages: 0,
            outcome,
            block,
            available: true,
        }
    }
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
}
