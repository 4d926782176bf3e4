//! Tunables and counters.

use serde::{Deserialize, Serialize};

use super::Millis;

/// Tunables. The defaults are for a real network; the simulator shortens the
/// timers to its virtual latencies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// Maximum hops to live (18, as Freenet).
    pub max_htl: u8,
    /// A node caches a block a request brought back only if it received
    /// the request at an HTL of at most `max_htl - request_cache_margin`
    /// (2: HTL 16, as Hyphanet): nodes next to the requester must not
    /// cache, or probing their cache would reveal what it fetched. Also the
    /// level at or below which requests path-fold.
    pub request_cache_margin: u8,
    /// A node stores or caches an insert only if it received it at an HTL
    /// of at most `max_htl - insert_store_margin` (3: HTL 15, as Hyphanet).
    pub insert_store_margin: u8,
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
    /// Answers a peer may get at once (from the store or the failure
    /// table, or for a spent HTL) per second: each costs this node a read,
    /// a decryption, a hash and up to 33 KiB sent, and takes no request
    /// slot. Past the budget the peer's requests are refused as overload,
    /// before the store is read.
    #[serde(default = "default_answer_rate")]
    pub answer_rate: u32,
    /// Such answers a peer may get in a burst (the budget's size).
    #[serde(default = "default_answer_burst")]
    pub answer_burst: u32,
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
    /// Opennet, full: a new peer replaces one only where that spreads the
    /// peers more evenly over the link-length classes (the 1/d link
    /// lengths of a navigable small world; `Node::wants_peer`). Off: the
    /// least useful peer is replaced, whatever its length.
    #[serde(default = "yes")]
    pub balance_link_lengths: bool,
    /// Opennet, with `balance_link_lengths`: about this often (doubling,
    /// up to 32 times, while no peer comes of it) a node with half its
    /// peers or more announces itself toward a random location in its
    /// sparsest link-length class, so the nodes there that want such a
    /// link dial it (`Node::link_refresh`). 0: never.
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: Millis,
    /// When full, take a new opennet peer at most this often.
    pub fold_min_interval: Millis,
    /// Opennet, full: drop an established peer to make room for a new one
    /// at most this often (5 minutes, Hyphanet's `DROP_CONNECTED_TIME`),
    /// however many connections were asked for or offered meanwhile. With
    /// `max_peers` this bounds how fast anyone can take over a node's
    /// peers: `max_peers × replace_interval` (20 × 5 min = 100 min).
    #[serde(default = "default_replace_interval")]
    pub replace_interval: Millis,
    /// Opennet: how long an invitation stays open. This node hands one out
    /// with its noderef (its announcement, a fold offer); a node that dials
    /// us without our asking is kept as a peer only by spending one, and is
    /// otherwise at most a seed client.
    #[serde(default = "default_invite_ttl")]
    pub invite_ttl: Millis,
    /// A fold offer taken is acted on (the connection asked for) after a
    /// random delay below this, so the node that dials the data source is
    /// not given away by dialing the moment the data has passed.
    #[serde(default = "default_fold_delay_max")]
    pub fold_delay_max: Millis,
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
    /// Darknet, Pitch Black defence (Hyphanet build 1492): about this often
    /// (uniformly between half and one and a half times it) the node
    /// inserts a block of random content and fetches the one it inserted
    /// the period before; if that block is gone (the fetch ends in
    /// `NotFound` or `RouteNotFound`), the node moves, with probability
    /// 1/2, to the block's location: a stretch of the circle the swaps
    /// have emptied gets a node again. Both are the node's own requests.
    /// 0: off (the default: in the simulator the probe did not hold
    /// request success under the attack, and its random moves help the
    /// attacker; `docs/anonymity.md`). Hyphanet's period is a day
    /// (86,400,000). Needs an embedder whose `Verifier` makes probe blocks.
    #[serde(default)]
    pub pitch_probe_interval: Millis,
    /// Darknet, Pitch Black defence: a node takes a location from a swap
    /// only if its links grow by at most this factor (geometric mean over
    /// its peers; 2); the partner applies it to both sides before it
    /// moves. A liar can then only hand a node a location near its
    /// friends', not one across the circle. 0: no limit.
    #[serde(default = "default_swap_max_stretch")]
    pub swap_max_stretch: f64,
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
    /// A seed client that has not announced within this long is let go
    /// (a newcomer announces as soon as it is linked; one that stays
    /// silent holds a slot another newcomer needs).
    #[serde(default = "default_seed_client_silent")]
    pub seed_client_silent: Millis,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_htl: 18,
            request_cache_margin: 2,
            insert_store_margin: 3,
            max_peers: 20,
            opennet: true,
            swapping: false,
            max_incoming_per_peer: 32,
            max_pending: 4096,
            answer_rate: default_answer_rate(),
            answer_burst: default_answer_burst(),
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
            balance_link_lengths: true,
            refresh_interval: default_refresh_interval(),
            fold_min_interval: 30_000,
            fold_delay_max: default_fold_delay_max(),
            invite_ttl: default_invite_ttl(),
            replace_interval: default_replace_interval(),
            max_waiters: 32,
            announce_interval: 60_000,
            swap_interval: 10_000,
            swap_htl: 10,
            swap_timeout: 30_000,
            swap_per_peer: 8,
            location_reset_one_in: 10_000,
            pitch_probe_interval: 0,
            swap_max_stretch: default_swap_max_stretch(),
            misbehaviour_limit: 100,
            max_noderef_len: 2048,
            max_block_len: 64 * 1024,
            max_swap_peers: 128,
            max_seed_clients: 64,
            seed_client_ttl: 30_000,
            seed_client_silent: default_seed_client_silent(),
        }
    }
}

impl Config {
    /// The highest HTL, as received, at which a request's block is cached
    /// and a request path-folds (16 by default).
    pub fn request_cache_htl(&self) -> u8 {
        self.max_htl.saturating_sub(self.request_cache_margin)
    }

    /// The highest HTL, as received, at which an insert is stored or
    /// cached (15 by default).
    pub fn insert_store_htl(&self) -> u8 {
        self.max_htl.saturating_sub(self.insert_store_margin)
    }
}

fn default_seed_client_silent() -> Millis {
    10_000
}

fn default_answer_rate() -> u32 {
    64
}

fn default_answer_burst() -> u32 {
    256
}

fn default_fold_delay_max() -> Millis {
    20_000
}

fn default_replace_interval() -> Millis {
    300_000
}

fn default_invite_ttl() -> Millis {
    60_000
}

fn default_swap_max_stretch() -> f64 {
    2.0
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
    /// Requests refused because their peer had used up its budget of
    /// immediate answers (also counted in `overload_rejected`).
    #[serde(default)]
    pub answer_budget_refused: u64,
    /// Peers disconnected for misbehaviour.
    pub disconnected_misbehaving: u64,
    /// Peers dropped as least useful.
    pub dropped_least_useful: u64,
    /// Link-length refreshes sent (`Node::link_refresh`).
    #[serde(default)]
    pub link_refreshes: u64,
    /// Swaps done.
    pub swaps: u64,
    /// Location resets (Pitch Black mitigation).
    pub location_resets: u64,
    /// Swap requests refused as implausible or rate-limited.
    pub swaps_refused: u64,
    /// Pitch Black defence: probe blocks inserted.
    #[serde(default)]
    pub pitch_probes: u64,
    /// Pitch Black defence: previous probes fetched back (checks).
    #[serde(default)]
    pub pitch_checks: u64,
    /// Pitch Black defence: checks that found the probe gone.
    #[serde(default)]
    pub pitch_lost: u64,
    /// Pitch Black defence: moves to a lost probe's location.
    #[serde(default)]
    pub pitch_moves: u64,
    /// Our own requests and inserts started again under a fresh id after
    /// overloaded or backed-off peers ended their route (the name is kept
    /// for the status output; they used to wait and resend the same id).
    #[serde(default)]
    pub backoff_waits: u64,
    /// Newcomers kept as seed clients (full, they could not be peers).
    #[serde(default)]
    pub seed_clients: u64,
    /// Seed clients taken as peers: their announcement came when this node
    /// wanted one.
    #[serde(default)]
    pub seed_clients_promoted: u64,
    /// Newcomers refused because the seed-client table was full too.
    #[serde(default)]
    pub seed_clients_refused: u64,
    /// Inserts that reached the caching level here and went on under a
    /// fresh id (`Node::fork_on_cacheable`).
    #[serde(default)]
    pub inserts_forked: u64,
    /// The tunnel layer's counters (filled in by its embedder from
    /// [`crate::Tunnelled::stats`]; zero in the routing core's own copy).
    #[serde(default)]
    pub tunnels: crate::tunnelled::TunnelStats,
}

fn yes() -> bool {
    true
}

fn default_refresh_interval() -> Millis {
    300_000
}
