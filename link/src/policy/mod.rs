//! The peer policy: which links a node keeps and what it says on them,
//! as a state machine with no I/O and no clock (quinn-proto's model).
//!
//! It owns the routing core ([`lichen_routing::Node`]) and the remembered
//! peers ([`PeerList`]), and decides:
//!
//! - **admission**: a darknet node keeps only friends' links; an opennet
//!   node keeps a link it dialed as the routing core says
//!   ([`Node::accept_requested_peer`]), and one from a node it remembers
//!   while it has room ([`Node::accept_remembered_peer`]: never by
//!   dropping another peer); a node that dialed it unasked (or a
//!   remembered one when full) is a peer only if the routing core invited
//!   it ([`Node::accept_opennet_peer`]: our announcement or fold offer gave
//!   out our noderef), and otherwise at most a *seed client* (one
//!   announcement routed, then closed), promoted to a peer if the routing
//!   core then asks for a link to it; at most [`MAX_PEERS_PER_PREFIX`]
//!   opennet peers and [`MAX_SEED_CLIENTS_PER_PREFIX`] seed clients per
//!   IPv4 /24 or IPv6 /64;
//! - **bans**: a peer the routing core disconnects for misbehaviour is
//!   refused, and not dialed, for [`BAN`] (friend or not), and an opennet
//!   entry for it is forgotten;
//! - **backoff**: a failed dial is retried after [`retry_delay`]
//!   (doubling, capped per kind); a dropped peer after a fixed delay;
//! - **duplicate links**: of two links to one node, [`keep_new_link`]
//!   decides the same way on both sides;
//! - **the hello**: both sides send `LocationChanged` with their location;
//!   on opennet the dialing side then sends its signed noderef, which the
//!   dialed side checks and remembers;
//! - **the first announcement**: when an opennet node gets its first peer
//!   it announces at once;
//! - **seeds**: an opennet node with no peer at all dials its seed nodes,
//!   every [`SEED_RETRY`] until one link is up.
//!
//! Time comes in as an argument ([`Instant`]; tests use a virtual clock),
//! randomness as an `rng`. What the policy wants done comes out of
//! [`PeerPolicy::poll_output`]: dial, send, close, save the peer list,
//! store a block, a local request finished. The node's driver
//! (`lichen-node`, `peers`) is a thin loop around it; [`mesh`] drives
//! several policies in memory.
//!
//! ```text
//! link up ──► link_up: own key, banned, darknet stranger → refused;
//!             a second link to one node → keep_new_link;
//!             accepted → hello sent (LocationChanged, opennet dialer: Noderef)
//! hello  ──► message: add_peer (friends, darknet) / accept_requested_peer
//!             (dialed) / accept_remembered_peer (remembered, with room) /
//!             accept_opennet_peer (invited);
//!             refused → seed client (a node that dialed us) or closed;
//!             kept → remembered (opennet: only nodes we dialed);
//!             first opennet peer → announce
//! tick   ──► redial remembered peers that are down and due (backing off;
//!             opennet ones only with no peer at all);
//!             no peer at all (opennet) → dial the seeds;
//!             close links with no hello after HELLO_DEADLINE
//! ```

mod invites;
pub mod mesh;
mod punch;
mod reach;
mod slots;
#[cfg(test)]
mod tests;

pub use invites::{InviteError, MAX_INVITATIONS, MAX_INVITATION_VALIDITY, REDEEM_WINDOW};
pub use punch::{ASK_EVERY, ASK_PEERS, INTRODUCE_EVERY, MAX_PUNCHES, PUNCH_WINDOW};
pub use reach::{
    DialBacks, Reachability, Reachable, ANSWER_EVERY, PROBE_EVERY, PROBE_PEERS, PROBE_TIMEOUT,
};
pub use slots::{
    HELLO_DEADLINE, MAX_HANDSHAKES_PER_RANGE, MAX_INBOUND_HANDSHAKES, PRESSED_HELLO_DEADLINE,
};

use crate::noderef::NodeRef;
use crate::peerlist::{PeerKind, PeerList};
use lichen_routing::{
    InsertOutcome, Key, KeyKind, Location, Message, Node, NoderefBytes, PeerId, RequestId,
    RequestOutcome, Verifier,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the driver should call [`PeerPolicy::tick`].
pub const RECONNECT_TICK: Duration = Duration::from_secs(1);
/// First retry delay after a failed connection; doubles per failure.
pub const RETRY_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay for a friend.
pub const FRIEND_RETRY_MAX: Duration = Duration::from_secs(120);
/// Longest retry delay for a remembered opennet peer.
pub const OPENNET_RETRY_MAX: Duration = Duration::from_secs(600);
/// A friend the routing core dropped is not redialed for this long.
pub const DROPPED_RETRY: Duration = Duration::from_secs(30);
/// A link that lived less than this was probably closed by a full node.
pub const SHORT_LINK: Duration = Duration::from_secs(60);
/// A peer disconnected for misbehaviour is refused (and not dialed) this
/// long, friend or not.
pub const BAN: Duration = Duration::from_secs(30 * 60);
/// Most banned keys remembered (the oldest ban goes first).
pub const MAX_BANNED: usize = 4096;
/// `last_seen` changes are written at most this often.
pub const SAVE_EVERY: Duration = Duration::from_secs(60);
/// Seeds an opennet node without a peer dials at a time.
pub const SEEDS_AT_ONCE: usize = 3;
/// An opennet node without a single peer dials its seeds this often.
pub const SEED_RETRY: Duration = Duration::from_secs(5);
/// A second link to a peer within this long of the first is a
/// simultaneous dial; later, the new link replaces the old one (the
/// other side restarted, or saw the old one die).
pub const RACE_WINDOW: Duration = Duration::from_secs(5);

/// Opennet peers (links kept as routing peers, not friends) from one IPv4
/// /24 or IPv6 /64 at most: one host, or one small network, cannot hold
/// more of a node's peer slots than this however many identities it
/// makes. Loopback is exempt (a testnet's nodes all run on 127.0.0.1).
pub const MAX_PEERS_PER_PREFIX: usize = 2;
/// Seed clients from one IPv4 /24 or IPv6 /64 at most, so one network
/// cannot take the slots newcomers need to join.
pub const MAX_SEED_CLIENTS_PER_PREFIX: usize = 2;

/// The network an address is counted in for [`MAX_PEERS_PER_PREFIX`]: its
/// IPv4 /24 or IPv6 /64 (an IPv4-mapped IPv6 address counts as IPv4).
/// `None` for loopback, which has no limit.
#[must_use]
pub fn address_prefix(ip: IpAddr) -> Option<[u8; 9]> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() {
        return None;
    }
    let mut p = [0u8; 9];
    match ip {
        IpAddr::V4(v4) => {
            p[0] = 4;
            p[1..4].copy_from_slice(&v4.octets()[..3]);
        }
        IpAddr::V6(v6) => {
            p[0] = 6;
            p[1..9].copy_from_slice(&v6.octets()[..8]);
        }
    }
    Some(p)
}

/// What the policy needs to know about its node.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// This node's static public key.
    pub own_key: [u8; 32],
    /// Accept strangers (opennet). Off: only friends' links are kept.
    pub opennet: bool,
    /// This node's signed noderef bytes (sent after the hello when we
    /// dialed, on opennet; offered in announcements and folding).
    pub noderef: Option<NoderefBytes>,
    /// The routing core's settings (`max_peers` bounds redialing). Shared
    /// with the routing core (read them there,
    /// [`PeerPolicy::routing`]`().config()`), and by a simulator's nodes:
    /// 288 bytes a node each time it was copied.
    pub routing: Arc<lichen_routing::Config>,
    /// The node's location.
    pub location: Location,
    /// Opennet seed nodes (noderef, signed bytes): dialed, every
    /// [`SEED_RETRY`], while the node has no peer at all. Shared: a
    /// simulator's nodes all hold the same list.
    pub seeds: std::sync::Arc<[(NodeRef, NoderefBytes)]>,
    /// How this node's own requests use premix tunnels (`hops` 0: not at
    /// all). Relaying and exiting for others needs
    /// [`PeerPolicy::enable_tunnels`] whatever this says.
    pub tunnels: lichen_routing::TunnelConfig,
    /// Whether the node answers peers' dial-back asks, and asks its own
    /// to learn whether it is reachable ([`Reachability`]).
    pub dial_backs: DialBacks,
}

/// Tunnel work (expiry, guards, the pool of tunnels) runs this often.
pub const TUNNEL_TICK: Duration = Duration::from_secs(5);

/// What we dialed: the noderef, and its signed bytes when known.
#[derive(Clone, Debug)]
pub struct Dialed {
    /// The noderef dialed.
    pub noderef: Arc<NodeRef>,
    /// Its signed bytes (None: a one-off connection, not remembered).
    pub bytes: Option<NoderefBytes>,
}

/// What the policy wants done.
#[derive(Debug)]
pub enum Output {
    /// Open a link to this node; report [`PeerPolicy::link_up`] with
    /// `Some(Dialed { noderef, bytes })` or [`PeerPolicy::dial_failed`].
    Dial {
        /// Whom to dial.
        noderef: Arc<NodeRef>,
        /// Its signed bytes, when known.
        bytes: Option<NoderefBytes>,
    },
    /// Send a message on a link.
    Send {
        /// The link.
        peer: PeerId,
        /// The message.
        msg: Message,
    },
    /// The peer on link `peer` asked to be dialed back: open a connection
    /// to the IP that link comes from, on `port`, and run the link
    /// handshake against the peer's static key `key` with a throwaway
    /// key until its second message proves `key`; then report
    /// [`PeerPolicy::probe_done`] (within [`PROBE_TIMEOUT`]).
    Probe {
        /// The asking peer's link.
        peer: PeerId,
        /// Its static key.
        key: [u8; 32],
        /// The port to dial.
        port: u16,
    },
    /// Hole punching (introduced by a peer): dial `addr` from the
    /// listening port while the node with static key `key` dials us, for
    /// at most [`PUNCH_WINDOW`], and run the handshake over whichever
    /// connection comes up. With `dialed` set, as initiator (to
    /// `dialed`'s node), over this dial's socket or one the listener
    /// accepted from `addr`; without, as responder expecting `key` over
    /// this dial's socket (one the listener accepts is an ordinary
    /// inbound link). Report [`PeerPolicy::link_up`] (with `dialed` as
    /// given) or [`PeerPolicy::punch_failed`].
    Punch {
        /// The other node's static key.
        key: [u8; 32],
        /// Where to dial it.
        addr: SocketAddr,
        /// Set: we are the initiator, dialing this noderef's node.
        dialed: Option<Dialed>,
    },
    /// A redemption ([`PeerPolicy::redeem`]) of the invitation of the
    /// node with static key `key` ended: `friend` is the new friend, or
    /// None when it failed (the node unreachable, the token refused).
    InvitationDone {
        /// The inviting node's static key.
        key: [u8; 32],
        /// The new friend (boxed: every output moves through the policy's
        /// queue, and this rare one would make each of them 168 bytes).
        friend: Option<Box<PeerInfo>>,
    },
    /// Close a link (no [`PeerPolicy::link_closed`] is expected for it).
    Close {
        /// The link.
        peer: PeerId,
    },
    /// Write the remembered peers (a snapshot; the latest wins).
    SavePeers(PeerList),
    /// Keep a block the routing core verified in a shared space.
    StoreBlock {
        /// Store or cache.
        space: lichen_routing::Space,
        /// The routing key.
        key: Key,
        /// Its kind.
        kind: KeyKind,
        /// The verified block.
        block: Vec<u8>,
    },
    /// A local fetch finished.
    RequestDone {
        /// From [`PeerPolicy::local_request`].
        id: RequestId,
        /// Found or not.
        outcome: RequestOutcome,
    },
    /// A local insert finished.
    InsertDone {
        /// From [`PeerPolicy::local_request`].
        id: RequestId,
        /// How far it got.
        outcome: InsertOutcome,
    },
}

/// Why a link was refused before its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// It is this node.
    Myself,
    /// Banned for misbehaviour.
    Banned,
    /// A darknet node keeps only friends.
    NotAFriend,
    /// A link to that node is already up and stays.
    Duplicate,
}

/// One peer, for `ListPeers` and `lichen peers`.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Short public name: Freenet base64 of the first 16 bytes of
    /// SHA-256(static key).
    pub identity: String,
    /// Friend or opennet.
    pub kind: PeerKind,
    /// A link is up and the routing core has the peer.
    pub connected: bool,
    /// Location (last announced by the peer, or the noderef's hint).
    pub location: Option<u64>,
    /// Noderef text, when known (remembered peers).
    pub noderef: Option<String>,
    /// Addresses from the noderef (empty when unknown).
    pub addresses: Vec<SocketAddr>,
    /// When a link last came up (ms since the epoch; 0: never or unknown).
    pub last_seen: u64,
    /// Its link, while one is up.
    pub link: Option<PeerId>,
    /// Bytes sent to it and received from it on that link (the driver
    /// fills these in; 0 from the policy).
    pub traffic: (u64, u64),
}

impl std::fmt::Debug for PeerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerInfo")
            .field("kind", &self.kind)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// The public short name of a node's static key.
#[must_use]
pub fn identity_of(static_key: &[u8; 32]) -> String {
    lichen_crypto::b64::encode(&lichen_crypto::sha256(static_key)[..16])
}

/// Why the policy refused to add a friend (a driver that can stop has
/// its own error around this one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddFriendError {
    /// The noderef is this node's own.
    #[error("that is this node's own noderef")]
    Myself,
    /// Already a friend.
    #[error("that node is already a friend")]
    Duplicate,
    /// The friend list is full.
    #[error("cannot add a friend: {0}")]
    Full(String),
}

/// Whether a second link to the same node replaces the first (see
/// [`RACE_WINDOW`]): after the window, always; within it, a link dialed
/// by the node with the smaller static key wins, so both sides keep the
/// same one.
#[must_use]
pub fn keep_new_link(
    existing_age: Duration,
    existing_dialed: bool,
    new_dialed: bool,
    ours: &[u8; 32],
    theirs: &[u8; 32],
) -> bool {
    if existing_age > RACE_WINDOW {
        return true;
    }
    if existing_dialed == new_dialed {
        return false;
    }
    // Keep the link dialed by the node with the smaller key.
    let we_dial = ours < theirs;
    new_dialed == we_dial
}

/// Retry delay after `failures` failed attempts in a row.
#[must_use]
pub fn retry_delay(failures: u32, kind: PeerKind) -> Duration {
    let max = match kind {
        PeerKind::Friend => FRIEND_RETRY_MAX,
        PeerKind::Opennet => OPENNET_RETRY_MAX,
    };
    RETRY_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(max)
}

/// One link, from its coming up to its end.
#[derive(Debug)]
struct LinkState {
    remote: [u8; 32],
    /// Added to the routing node (after the hello).
    routed: bool,
    /// We dialed it (with this noderef); None: it dialed us. Boxed: the
    /// table holds every link, and half of them were not dialed.
    dialed: Option<Box<Dialed>>,
    /// When the link came up (ms on the policy's clock, [`PeerPolicy::ms`]:
    /// 8 bytes, not an `Instant`'s 16, in every entry of the link table).
    since: u64,
    /// Last location the peer announced (when `located`; apart, not an
    /// `Option`, so the flag packs with the others: 8 bytes a link).
    location: u64,
    located: bool,
    /// Kept only to route its announcement; not a peer.
    seed_client: bool,
    /// The address it comes from (inbound), or was dialed at; the network
    /// it is counted in is this address's [`address_prefix`].
    ip: Option<IpAddr>,
    /// Where it stands with invitations.
    stage: invites::Stage,
    /// A seed client's `Noderef`, kept in case it becomes a peer. Boxed:
    /// few links have one, and every slot of the table holds the field.
    introduced: Option<Box<NoderefBytes>>,
}

impl LinkState {
    /// The last location the peer announced, if any.
    fn location(&self) -> Option<u64> {
        self.located.then_some(self.location)
    }

    /// The network it is counted in (None: no limit).
    fn prefix(&self) -> Option<[u8; 9]> {
        self.ip.and_then(address_prefix)
    }
}

/// Entries by link id, in id order: sorted ids beside their entries
/// (link ids only grow, so a new link is pushed at the end). A closed
/// link leaves a hole, swept out once holes are a quarter of the links, so
/// that closing one of a seed's thousands of links costs a search, not a
/// shift of everything after it. The policy's link table, and the
/// simulator's link ends. (A `BTreeMap` of the policy's large entries
/// kept its leaves half empty: ~15 KiB a node in the simulator.)
#[derive(Debug)]
pub struct LinkTable<V> {
    /// The ids, sorted (searched apart from the large entries).
    ids: Vec<PeerId>,
    /// `states[i]` is link `ids[i]`; `None`: closed (a hole).
    states: Vec<Option<V>>,
    /// Holes in `states`.
    holes: usize,
}

impl<V> Default for LinkTable<V> {
    fn default() -> Self {
        LinkTable {
            ids: Vec::new(),
            states: Vec::new(),
            holes: 0,
        }
    }
}

impl<V> LinkTable<V> {
    /// The slot of link `pid` (a hole if it was closed since the last
    /// sweep).
    fn slot(&self, pid: &PeerId) -> Option<usize> {
        self.ids.binary_search(pid).ok()
    }

    /// Link `pid`'s entry.
    #[must_use]
    pub fn get(&self, pid: &PeerId) -> Option<&V> {
        self.states[self.slot(pid)?].as_ref()
    }

    /// Link `pid`'s entry, to change.
    pub fn get_mut(&mut self, pid: &PeerId) -> Option<&mut V> {
        let i = self.slot(pid)?;
        self.states[i].as_mut()
    }

    /// Whether link `pid` is held.
    #[must_use]
    pub fn contains_key(&self, pid: &PeerId) -> bool {
        self.get(pid).is_some()
    }

    /// Keep `l` as link `pid`; the link it replaces, if any.
    pub fn insert(&mut self, pid: PeerId, l: V) -> Option<V> {
        if self.states.len() == self.states.capacity() {
            // Grown by a quarter, not doubled: a node's table settles a
            // little above its peer limit, and doubling left a third of
            // it empty (~1 KiB a node in the simulator).
            let more = (self.states.len() / 4).max(4);
            self.ids.reserve_exact(more);
            self.states.reserve_exact(more);
        }
        if self.ids.last().is_none_or(|last| *last < pid) {
            self.ids.push(pid);
            self.states.push(Some(l));
            return None;
        }
        match self.ids.binary_search(&pid) {
            Ok(i) => {
                let old = self.states[i].replace(l);
                if old.is_none() {
                    self.holes -= 1;
                }
                old
            }
            Err(i) => {
                self.ids.insert(i, pid);
                self.states.insert(i, Some(l));
                None
            }
        }
    }

    /// Forget link `pid`; its entry.
    pub fn remove(&mut self, pid: &PeerId) -> Option<V> {
        let i = self.slot(pid)?;
        let l = self.states[i].take()?;
        self.holes += 1;
        if self.holes > 2 && self.holes > self.ids.len() / 8 {
            self.sweep();
        }
        Some(l)
    }

    /// Drop the holes (and give back the memory a burst of links took).
    /// Swept once an eighth of the slots are holes, not a quarter: the
    /// holes took room that made the table grow (30,000 nodes: 31
    /// entries of room for 20 links a node; peak RSS 620.5 -> 592.7 MiB).
    /// Giving back the room more eagerly too cost more than it saved
    /// (704.6 MiB: the allocator cannot reuse the pieces). A sweep is a
    /// pass over the table after at least an eighth of it closed.
    fn sweep(&mut self) {
        let mut keep = self.states.iter().map(Option::is_some);
        self.ids.retain(|_| keep.next().unwrap_or(false));
        self.states.retain(Option::is_some);
        self.holes = 0;
        if self.states.capacity() > 16 && self.states.len() < self.states.capacity() / 2 {
            let keep = self.states.len() + self.states.len() / 2;
            self.ids.shrink_to(keep);
            self.states.shrink_to(keep);
        }
    }

    /// The links and their entries, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &V)> + '_ {
        self.ids
            .iter()
            .zip(&self.states)
            .filter_map(|(p, l)| l.as_ref().map(|l| (p, l)))
    }

    /// The link ids, in order.
    pub fn keys(&self) -> impl Iterator<Item = &PeerId> + '_ {
        self.iter().map(|(p, _)| p)
    }

    /// The entries, in link id order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, l)| l)
    }

    /// How many links.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len() - self.holes
    }

    /// No links.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Links by a sort key: (key, link) pairs, sorted, so that the links of
/// one key are one range. The policy's indexes of its links by the peer's
/// static key (its first 8 bytes: 16 bytes an entry, where a hash map of
/// whole keys took ~45 with its spare room, ~1.4 KiB a node in the
/// simulator) and by network ([`address_prefix`]; a `BTreeSet` left its
/// leaves half empty). Grown by a quarter, as [`LinkTable`].
#[derive(Debug)]
struct LinkIndex<K> {
    pairs: Vec<(K, PeerId)>,
}

impl<K> Default for LinkIndex<K> {
    fn default() -> Self {
        LinkIndex { pairs: Vec::new() }
    }
}

impl<K: Ord + Copy> LinkIndex<K> {
    fn insert(&mut self, k: K, pid: PeerId) {
        if let Err(i) = self.pairs.binary_search(&(k, pid)) {
            if self.pairs.len() == self.pairs.capacity() {
                self.pairs.reserve_exact((self.pairs.len() / 4).max(4));
            }
            self.pairs.insert(i, (k, pid));
        }
    }

    fn remove(&mut self, k: K, pid: PeerId) {
        if let Ok(i) = self.pairs.binary_search(&(k, pid)) {
            self.pairs.remove(i);
            if self.pairs.capacity() > 16 && self.pairs.len() < self.pairs.capacity() / 2 {
                self.pairs
                    .shrink_to(self.pairs.len() + self.pairs.len() / 2);
            }
        }
    }

    /// The links under `k`, in id order.
    fn get(&self, k: K) -> impl Iterator<Item = PeerId> + '_ {
        let start = self.pairs.partition_point(|p| p.0 < k);
        self.pairs[start..]
            .iter()
            .take_while(move |p| p.0 == k)
            .map(|p| p.1)
    }
}

/// The first 8 bytes of a static key: what [`LinkIndex`] sorts links by
/// (a match is checked against the whole key).
fn key_tag(key: &[u8; 32]) -> u64 {
    let mut t = [0u8; 8];
    t.copy_from_slice(&key[..8]);
    u64::from_be_bytes(t)
}

/// The peer policy of one node. See the [module docs](self).
pub struct PeerPolicy<V: Verifier> {
    cfg: PolicyConfig,
    node: Node<V>,
    /// The instant the routing core's clock counts from.
    start: Instant,
    /// Wall-clock ms since the Unix epoch at `start` (for `last_seen`).
    wall_start_ms: u64,
    location: Location,
    links: LinkTable<LinkState>,
    /// Links without a hello yet (`!routed`): while there are none, a tick
    /// has no silent link to close and `tick_due` need not look.
    unrouted: usize,
    /// The links of each network ([`address_prefix`]), for the
    /// per-network limits: (network, link), so that a network's links are
    /// one range. (A map of `Vec`s took ~4 KiB a node in the simulator,
    /// where nearly every network has one link.)
    by_prefix: LinkIndex<[u8; 9]>,
    /// The links by the peer's static key ([`PeerPolicy::link_to`]): at
    /// most one a key ([`PeerPolicy::admit`] closes the other).
    by_key: LinkIndex<u64>,
    list: PeerList,
    /// Dials under way.
    dialing: HashSet<[u8; 32]>,
    /// Not before this instant (after a failure or a drop).
    retry_at: HashMap<[u8; 32], Instant>,
    /// Keys refused until the instant (misbehaviour). In memory only.
    banned: HashMap<[u8; 32], Instant>,
    /// `last_seen` changed since the last save.
    dirty: bool,
    last_save: Instant,
    /// When the seeds were last dialed.
    last_seed_dial: Option<Instant>,
    /// How many times the seeds were dialed ([`SEEDS_AT_ONCE`] at a time).
    seed_round: usize,
    next_peer: u64,
    out: VecDeque<Output>,
    /// Premix tunnels (None until [`PeerPolicy::enable_tunnels`]).
    tunnels: Option<Box<lichen_routing::Tunnelled>>,
    next_tunnel_tick: Instant,
    /// Seeds that linked while an announcement of ours was on its way:
    /// each is announced through in turn as the one before ends.
    announce_next: VecDeque<PeerId>,
    /// Dial-backs (None: off). Boxed: the simulator's nodes have none.
    reach: Option<Box<reach::Reach>>,
    /// Hole punching (with dial-backs; None: off).
    punch: Option<Box<punch::Punch>>,
    /// Invitations given out and being used.
    invites: invites::Invites,
}

impl<V: Verifier> std::fmt::Debug for PeerPolicy<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerPolicy")
            .field("opennet", &self.cfg.opennet)
            .field("links", &self.links.len())
            .field("peers", &self.node.peer_count())
            .finish_non_exhaustive()
    }
}

impl<V: Verifier> PeerPolicy<V> {
    /// A policy with the remembered peers `list`, starting at `now`
    /// (`wall_ms`: the wall clock then, ms since the Unix epoch).
    pub fn new(cfg: PolicyConfig, list: PeerList, verifier: V, now: Instant, wall_ms: u64) -> Self {
        let mut node = Node::new(Arc::clone(&cfg.routing), cfg.location, verifier);
        if let Some(r) = &cfg.noderef {
            node.set_noderef(lichen_routing::NodeRef {
                location: cfg.location,
                address: r.clone(),
            });
        }
        let cfg_dial_backs = cfg.dial_backs;
        // Until a peer has dialed it back, a node that asks does not know
        // whether it can be dialed: its announcements ask to be offered
        // links (which works either way) and it offers none itself.
        if matches!(cfg_dial_backs, DialBacks::AnswerAndAsk { .. }) {
            node.set_behind_nat(true);
        }
        PeerPolicy {
            location: cfg.location,
            cfg,
            node,
            start: now,
            wall_start_ms: wall_ms,
            links: LinkTable::default(),
            unrouted: 0,
            by_prefix: LinkIndex::default(),
            by_key: LinkIndex::default(),
            list,
            dialing: HashSet::new(),
            retry_at: HashMap::new(),
            banned: HashMap::new(),
            dirty: false,
            last_save: now,
            last_seed_dial: None,
            seed_round: 0,
            next_peer: 1,
            out: VecDeque::new(),
            tunnels: None,
            next_tunnel_tick: now,
            announce_next: VecDeque::new(),
            punch: (cfg_dial_backs != DialBacks::Off).then(Box::default),
            invites: invites::Invites::default(),
            reach: match cfg_dial_backs {
                DialBacks::Off => None,
                DialBacks::Answer => Some(Box::new(reach::Reach::new(None, now))),
                DialBacks::AnswerAndAsk { port } => {
                    Some(Box::new(reach::Reach::new(Some(port), now)))
                }
            },
        }
    }

    /// Relay, exit and (per [`PolicyConfig::tunnels`]) originate premix
    /// tunnels, answering tunnel handshakes with the node's static link
    /// secret. Without this, tunnel messages are dropped.
    ///
    /// On a darknet a hop's peer list is its friends, and small: no
    /// minimum list length is asked of it
    /// ([`lichen_routing::TunnelConfig::min_peer_list`] is set to 0).
    pub fn enable_tunnels(&mut self, static_secret: &[u8; 32]) {
        let mut tcfg = self.cfg.tunnels;
        if !self.cfg.opennet {
            // Darknet: lists are friends (and their friends), small.
            tcfg.min_peer_list = 0;
        }
        let mut t = lichen_routing::Tunnelled::new(*static_secret, tcfg);
        // The guards of the last run (their times move to this run's
        // clock, which starts now: earlier times become its start).
        let base = self.wall_start_ms;
        let saved = shift_guards(self.list.guards(), |t| t.saturating_sub(base));
        if !saved.is_empty() {
            t.set_guards(lichen_tunnel::guards::Guards::from_list(saved));
        }
        self.tunnels = Some(Box::new(t));
    }

    /// Copy the tunnel layer's guards into the peer list when the set or
    /// its counts changed (saved with the list, within `SAVE_EVERY`).
    fn sync_guards(&mut self) {
        let Some(t) = &self.tunnels else {
            return;
        };
        let base = self.wall_start_ms;
        let now = shift_guards(t.guards().list(), |t| t.saturating_add(base));
        let same = |a: &[lichen_tunnel::guards::Guard], b: &[lichen_tunnel::guards::Guard]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    (x.key, x.added, x.attempts, x.built) == (y.key, y.added, y.attempts, y.built)
                })
        };
        if !same(&now, self.list.guards()) {
            self.list.set_guards(now);
            self.dirty = true;
        }
    }

    /// **Simulator-only adversary knob** (`lichen sim --lying-lists on`,
    /// `docs/anonymity.md`): this node's tunnel `Peers` lists name only
    /// its peers among `colluders` (static keys). Nothing in a node's
    /// configuration calls this; only the simulator does, for the nodes
    /// it runs as the adversary. Does nothing without tunnels.
    #[doc(hidden)]
    pub fn sim_adversary_lying_lists(&mut self, colluders: std::collections::BTreeSet<[u8; 32]>) {
        if let Some(t) = &mut self.tunnels {
            t.sim_adversary_lying_lists(colluders);
        }
    }

    /// The tunnel layer, if enabled (read only).
    #[must_use]
    pub fn tunnels(&self) -> Option<&lichen_routing::Tunnelled> {
        self.tunnels.as_deref()
    }

    // ---------------------------------------------------------- queries

    /// The routing core (read only).
    #[must_use]
    pub fn routing(&self) -> &Node<V> {
        &self.node
    }

    /// Peers the routing core has.
    #[must_use]
    pub fn peer_count(&self) -> usize {
        self.node.peer_count()
    }

    /// The routing core's counters.
    #[must_use]
    pub fn stats(&self) -> &lichen_routing::Stats {
        self.node.stats()
    }

    /// The routing core's counters with the tunnel layer's filled in.
    #[must_use]
    pub fn all_stats(&self) -> lichen_routing::Stats {
        let mut s = self.node.stats().clone();
        if let Some(t) = &self.tunnels {
            s.tunnels = t.stats();
        }
        s
    }

    /// The remembered peers.
    #[must_use]
    pub fn peer_list(&self) -> &PeerList {
        &self.list
    }

    /// Whether `key` is banned at `now`.
    #[must_use]
    pub fn is_banned(&self, now: Instant, key: &[u8; 32]) -> bool {
        self.banned.get(key).is_some_and(|t| *t > now)
    }

    /// When `key` may be dialed again (None: no delay is set).
    #[must_use]
    pub fn retry_at(&self, key: &[u8; 32]) -> Option<Instant> {
        self.retry_at.get(key).copied()
    }

    /// The static key of the node on link `peer`.
    #[must_use]
    pub fn remote_of(&self, peer: PeerId) -> Option<[u8; 32]> {
        self.links.get(&peer).map(|l| l.remote)
    }

    /// The link to the node with static key `key`, if one is up.
    #[must_use]
    pub fn link_to(&self, key: &[u8; 32]) -> Option<PeerId> {
        self.by_key
            .get(key_tag(key))
            .find(|p| self.links.get(p).is_some_and(|l| l.remote == *key))
    }

    /// Whether the peer on link `peer` has said hello (false for a link
    /// that is not up).
    #[must_use]
    pub fn greeted(&self, peer: PeerId) -> bool {
        self.links.get(&peer).is_some_and(|l| l.routed)
    }

    /// Whether link `peer` is kept only as a seed client.
    #[must_use]
    pub fn is_seed_client(&self, peer: PeerId) -> bool {
        self.links.get(&peer).is_some_and(|l| l.seed_client)
    }

    /// Remembered and connected peers: friends first.
    #[must_use]
    pub fn list(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .list
            .entries()
            .iter()
            .map(|e| self.info(&e.key()))
            .collect();
        for l in self.links.values() {
            if l.routed && !l.seed_client && self.list.get(&l.remote).is_none() {
                out.push(self.info(&l.remote));
            }
        }
        out
    }

    /// When [`PeerPolicy::timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let node = self
            .node
            .poll_timeout()
            .map(|t| self.start + Duration::from_millis(t));
        let tunnels = self.tunnels.as_ref().map(|_| self.next_tunnel_tick);
        match (node, tunnels) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant `ms` on the policy's clock ([`PeerPolicy::ms`]).
    fn at_ms(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// How long before `now` the instant `ms` on the policy's clock was.
    fn age(&self, now: Instant, ms: u64) -> Duration {
        Duration::from_millis(self.ms(now).saturating_sub(ms))
    }

    fn wall_ms(&self, now: Instant) -> u64 {
        self.wall_start_ms.saturating_add(self.ms(now))
    }
}

/// `guards` with their times (`added`, `seen`) mapped by `f`: between
/// the tunnel layer's clock (ms since this run started) and the peer
/// list's (ms since the Unix epoch).
fn shift_guards(
    guards: &[lichen_tunnel::guards::Guard],
    f: impl Fn(u64) -> u64,
) -> Vec<lichen_tunnel::guards::Guard> {
    guards
        .iter()
        .map(|g| lichen_tunnel::guards::Guard {
            added: f(g.added),
            seen: f(g.seen),
            ..g.clone()
        })
        .collect()
}

mod events;
