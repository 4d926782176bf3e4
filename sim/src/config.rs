//! What to simulate: topology, adversary, sizes and timings.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use rand::RngCore;

use lichen_routing::{Block, Key, KeyKind, Verifier};

/// Opennet growth lasts at most this long (virtual ms) while newcomers
/// can come at most [`MAX_JOIN_RATE`] a second: up to 10,000 nodes join
/// 50 ms apart; a larger network joins at a higher rate, so that every
/// node lives through the same virtual time (and so the same number of
/// link-length refreshes and fold offers) whatever the size, and the cost
/// of a run grows with N, not N² (docs/simulation.md, "Simulator cost").
pub const GROWTH_MS: u64 = 500_000;

/// Newcomers a second at most, however large the network: past 50,000
/// nodes growth takes longer than [`GROWTH_MS`]. At 200 a second (100,000
/// nodes in 500 s) newcomers crowded the nodes that wanted peers: they
/// waited a p95 of 261 s for their first 10 peers and opened links that
/// were dropped again (11 M of them, 7.1 M at 100 a second), and a few
/// more requests failed (docs/simulation.md, "Eighth pass").
pub const MAX_JOIN_RATE: u64 = 100;

/// The opennet warm-up's requests are spread over at most this long
/// (virtual ms): 50 ms apart up to 10,000 nodes (5 requests per node);
/// beyond, the same load per node over the same virtual time.
pub const WARMUP_MS: u64 = 2_500_000;

/// The simulator's block verifier: SHA-256(block) == routing key (the CHK
/// rule; the crypto crate supplies the real one to the node).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sha256Verifier;

impl Verifier for Sha256Verifier {
    fn verify(&self, key: &Key, _kind: KeyKind, block: &[u8]) -> bool {
        Sha256::digest(block).as_slice() == key.0
    }

    /// The Pitch Black probe: 32 random bytes, as the simulator's blocks.
    fn probe_block(&self, rng: &mut dyn RngCore) -> Option<(Key, KeyKind, Block)> {
        let mut b = vec![0u8; 32];
        rng.fill_bytes(&mut b);
        Some((Key(Sha256::digest(&b).into()), KeyKind::Chk, b))
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
    /// Pitch Black (Evans et al. 2007): answer every swap request at once,
    /// accepting, with a location just beside the node's own attack point
    /// and a made-up peer list; never move. With `--attack pitch-black`
    /// the lying starts after warm-up, otherwise at once.
    LieSwap,
}

/// A published attack on requesters' or publishers' anonymity, run on top
/// of the workload (`docs/anonymity.md` has the method of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Levine et al., "Statistical Detection of Downloaders in Freenet"
    /// (CCS 2020): per neighbour and known file, count the requests for
    /// the file's blocks arriving at the two highest HTLs and decide
    /// "downloader" by a Bayesian rule against 1/degree.
    Downloader,
    /// The same test on inserts: "this neighbour inserted the file".
    Uploader,
    /// Colluders offer themselves for folding after every block they
    /// send; "the first node to dial me after I served it is the
    /// requester".
    Fold,
    /// A colluder asks its neighbour for keys the neighbour's user just
    /// fetched, inserted or missed, and for control keys another node's
    /// user asked for at the same moment, and compares.
    Probe,
    /// The same with control keys nobody asked for.
    ProbeUnasked,
    /// Tian et al. (INFOCOM 2013): colluders ask nodes about a request id
    /// they saw (a seen id is a loop) and walk back to the originator.
    Traceback,
    /// Routing-table insertion carried to an eclipse (Baumeister et al.
    /// 2012): the attackers dial one victim, behave well until they hold
    /// all its peers, then turn into black holes.
    Eclipse,
    /// The eclipse, with attackers that use the victim's memory of them:
    /// one that is the victim's peer leaves every [`crate::attack`]
    /// `RETURN_EVERY` and dials back `AWAY` later, when the victim has
    /// filled its place, as a node the victim remembers (kept as one it
    /// asked for, without an invitation, and let in by dropping another
    /// peer when full).
    EclipseReturn,
    /// Evans, GauthierDickey, Grothoff, "Routing in the Dark: Pitch
    /// Black" (ACSAC 2007): on a darknet, the adversary lies in location
    /// swaps; measured day by day: clustering of honest locations and
    /// success of requests for the previous day's data.
    PitchBlack,
    /// End-to-end correlation through premix tunnels (Tor's threat model;
    /// timing as in Murdoch & Danezis, S&P 2005): a colluding guard and a
    /// colluding exit link their circuits by cell timing and name the
    /// user behind the exit's requests.
    Correlation,
}

impl Attack {
    /// The name on the command line and in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Attack::Downloader => "downloader",
            Attack::Uploader => "uploader",
            Attack::Fold => "fold",
            Attack::Probe => "probe",
            Attack::ProbeUnasked => "probe-unasked",
            Attack::Traceback => "traceback",
            Attack::Eclipse => "eclipse",
            Attack::EclipseReturn => "eclipse-return",
            Attack::PitchBlack => "pitch-black",
            Attack::Correlation => "correlation",
        }
    }
}

/// Simulation parameters. [`parse_args`](super::parse_args) builds one from
/// command-line flags.
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
    /// Fraction of nodes behind NAT (opennet): nobody can dial them;
    /// they take part by dialing out. The seeds are never behind NAT.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nat: f64,
    /// Of the nodes behind NAT, the fraction whose NAT gives each
    /// destination its own port (symmetric): hole punches to or from
    /// them fail. The others keep the port, so two of them linked by an
    /// announcement's punch offer connect.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub symmetric: f64,
    /// Fraction of nodes run by the adversary.
    pub adversary: f64,
    /// Number of nodes run by the adversary, instead of the fraction
    /// (`eclipse`: the k attackers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attackers: Option<usize>,
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
    /// Opennet: virtual ms over which the nodes join (`None`: 50 ms
    /// apart, at most [`GROWTH_MS`] unless that takes more than
    /// [`MAX_JOIN_RATE`] a second).
    pub join_ms: Option<u64>,
    /// Opennet: seed nodes (`None`: one per 500 nodes, 3 to 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<usize>,
    /// Opennet: virtual ms over which the warm-up requests are spread
    /// (`None`: 50 ms apart, at most [`WARMUP_MS`]).
    pub warmup_ms: Option<u64>,
    /// Darknet: virtual time spent swapping before measuring (ms); `None`
    /// means enough for about 300 swap attempts per node.
    pub swap_ms: Option<u64>,
    /// Gap between two requests (ms).
    pub request_interval_ms: u64,
    /// The attack to run and measure, if any.
    pub attack: Option<Attack>,
    /// Attack workload: files (splitfiles) inserted, each by one honest
    /// node, before the requests.
    pub files: usize,
    /// Blocks per file.
    pub file_blocks: usize,
    /// Honest nodes that each download one of the files (chosen at
    /// random: popular and unpopular files), while the background
    /// requests run.
    pub downloaders: usize,
    /// Premix tunnels: hops beyond the requester for every node's own
    /// requests and inserts (0: none; `docs/tunnels.md`).
    #[serde(default)]
    pub tunnel_hops: u8,
    /// Darknet: the Pitch Black defence on, the node's default: a swap
    /// may not stretch a node's links (`lichen_routing::Config::
    /// swap_max_stretch`).
    #[serde(default = "default_true")]
    pub pitch_defence: bool,
    /// Opennet: full nodes spread their peers over link-length classes
    /// (`lichen_routing::Config::balance_link_lengths`); off: they replace
    /// the least useful peer.
    #[serde(default = "yes")]
    pub link_balance: bool,
    /// Darknet: Hyphanet's Pitch Black probe (`lichen_routing::Config::
    /// pitch_probe_interval`) on, one every
    /// [`PITCH_PROBE_MS`](crate::PITCH_PROBE_MS) of virtual time (off in
    /// the node by default).
    #[serde(default)]
    pub pitch_probe: bool,
    /// `pitch-black`: attacked days after the unattacked day 0.
    #[serde(default = "default_days")]
    pub days: usize,
    /// The adversary's nodes lie in the tunnel `Peers` lists they send,
    /// naming their colluding peers, padded with honest ones only as far
    /// as the minimum list length asks (a simulator-only adversary knob:
    /// `PeerPolicy::sim_adversary_lying_lists`).
    #[serde(default)]
    pub lying_lists: bool,
    /// The minimum tunnel peer-list length on opennet
    /// (`TunnelConfig::min_peer_list`; a darknet always has none).
    #[serde(default = "default_min_peer_list")]
    pub min_peer_list: usize,
}

fn default_min_peer_list() -> usize {
    lichen_tunnel::DEFAULT_MIN_PEER_LIST
}

fn default_days() -> usize {
    8
}

fn default_true() -> bool {
    true
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
            nat: 0.0,
            symmetric: 0.0,
            adversary: 0.0,
            attackers: None,
            adversary_kind: Adversary::Observe,
            seed: 1,
            htl: 18,
            loss: 0.0,
            latency_ms: (10, 100),
            warmup_requests: None,
            join_ms: None,
            seeds: None,
            warmup_ms: None,
            swap_ms: None,
            request_interval_ms: 10,
            attack: None,
            files: 10,
            file_blocks: 256,
            downloaders: 20,
            tunnel_hops: 0,
            pitch_defence: true,
            link_balance: true,
            pitch_probe: false,
            days: default_days(),
            lying_lists: false,
            min_peer_list: default_min_peer_list(),
        }
    }
}

fn yes() -> bool {
    true
}

fn is_zero(f: &f64) -> bool {
    *f == 0.0
}
