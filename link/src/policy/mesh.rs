//! Peer policies linked in memory under a virtual clock: the two-node
//! harness of the policy's tests (quinn-proto's `Pair`), and any number of
//! nodes for a simulation. No sockets, no real time: links come up at
//! once when dialed (unless the dialed node is down), messages are
//! delivered in order, and [`Mesh::advance`] moves the clock and fires the
//! ticks and timers that fall due. [`open_link`] (both policies admit or
//! refuse a new link) is also what the simulator (`lichen-sim`) uses.

use super::{Dialed, Output, PeerPolicy, PolicyConfig, RECONNECT_TICK};
use crate::keys::NodeKeys;
use crate::noderef::NodeRef;
use crate::peerlist::PeerList;
use lichen_routing::{
    Block, BlockSource, Key, KeyKind, Location, Message, NoderefBytes, PeerId, Verifier,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Steps [`Mesh::run`] takes at most before giving up (a bound, so a
/// policy that never goes quiet fails a test instead of hanging it).
pub const MAX_STEPS: usize = 1_000_000;

/// One node of a [`Mesh`].
pub struct MeshNode<V: Verifier> {
    /// Its policy.
    pub policy: PeerPolicy<V>,
    /// Its keys.
    pub keys: NodeKeys,
    /// Its noderef (the address is made up; nothing is dialed).
    pub noderef: NodeRef,
    /// Its signed noderef bytes.
    pub bytes: NoderefBytes,
    /// The last peer list it asked to save.
    pub saved: Option<PeerList>,
    /// How many times it asked to save.
    pub saves: usize,
    /// Blocks it kept (shared spaces), served to peers.
    pub store: BTreeMap<(Key, KeyKind), Block>,
    /// Finished local requests and inserts, in order.
    pub done: Vec<Output>,
    /// Down: it does not tick, and dials to it or from it fail.
    pub down: bool,
    /// Dials it asked for.
    pub dials: usize,
    /// Messages it sent, by name.
    pub sent: BTreeMap<&'static str, usize>,
    /// A black hole for announcements: it answers every `Announce` at
    /// once (`Accepted`, `AnnounceReply`) and forwards nothing, as a
    /// hostile seed can.
    pub swallows_announcements: bool,
    /// Behind a NAT without a port mapping: dials to it fail, and so do
    /// dial-backs ([`Output::Probe`]); it can still dial out.
    pub behind_nat: bool,
    /// Behind a NAT that gives each destination its own port: hole
    /// punches to or from it fail.
    pub symmetric_nat: bool,
}

impl<V: Verifier> std::fmt::Debug for MeshNode<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshNode")
            .field("policy", &self.policy)
            .field("down", &self.down)
            .finish_non_exhaustive()
    }
}

/// A node's blocks, as its peers may read them.
struct Source<'a>(&'a BTreeMap<(Key, KeyKind), Block>);

impl BlockSource for Source<'_> {
    fn get(&mut self, key: &Key, kind: KeyKind) -> Option<Block> {
        self.0.get(&(*key, kind)).cloned()
    }
}

/// Several policies linked in memory. See the [module docs](self).
pub struct Mesh<V: Verifier> {
    /// The nodes, by index.
    pub nodes: Vec<MeshNode<V>>,
    /// The virtual clock.
    pub now: Instant,
    wall_ms: u64,
    rng: StdRng,
    /// Each link end → the other end.
    ends: HashMap<(usize, PeerId), (usize, PeerId)>,
    /// Messages in flight: (to node, on its link, message).
    wire: VecDeque<(usize, PeerId, Message)>,
    by_key: HashMap<[u8; 32], usize>,
    last_tick: Instant,
    /// Punches waiting for the other side's: (node, the other's key,
    /// initiator's noderef).
    punches: Vec<(usize, [u8; 32], Option<Dialed>)>,
}

impl<V: Verifier> std::fmt::Debug for Mesh<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("nodes", &self.nodes.len())
            .field("links", &(self.ends.len() / 2))
            .finish_non_exhaustive()
    }
}

impl<V: Verifier> Mesh<V> {
    /// An empty mesh; `seed` makes every run the same.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let now = Instant::now();
        Mesh {
            nodes: Vec::new(),
            now,
            wall_ms: 1_700_000_000_000,
            rng: StdRng::seed_from_u64(seed),
            ends: HashMap::new(),
            wire: VecDeque::new(),
            by_key: HashMap::new(),
            last_tick: now,
            punches: Vec::new(),
        }
    }

    /// Add a node with static secret `secret` at `location`; `configure`
    /// may change its policy settings (opennet on by default) and `list`
    /// is what it remembers. Returns its index.
    pub fn add(
        &mut self,
        secret: [u8; 32],
        location: u64,
        list: PeerList,
        verifier: V,
        configure: impl FnOnce(&mut PolicyConfig),
    ) -> usize {
        let i = self.nodes.len();
        let keys = NodeKeys::from_static_secret(secret);
        let port = 10_000 + u16::try_from(i % 50_000).unwrap_or(0);
        // Each node in a /24 of its own (the per-network peer limits).
        let [_, _, hi, lo] = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
        let addr = std::net::SocketAddr::from(([10, hi, lo, 1], port));
        let noderef = NodeRef::new(&keys, vec![addr], Some(location));
        let bytes: NoderefBytes = noderef.to_bytes(&keys).into();
        let mut cfg = PolicyConfig {
            own_key: keys.static_public(),
            opennet: true,
            noderef: Some(bytes.clone()),
            routing: Arc::default(),
            location: Location(location),
            seeds: Vec::new().into(),
            tunnels: lichen_routing::TunnelConfig {
                hops: 0,
                ..Default::default()
            },
            dial_backs: super::DialBacks::Off,
        };
        configure(&mut cfg);
        let policy = PeerPolicy::new(cfg, list, verifier, self.now, self.wall_ms);
        self.by_key.insert(keys.static_public(), i);
        self.nodes.push(MeshNode {
            policy,
            keys,
            noderef,
            bytes,
            saved: None,
            saves: 0,
            store: BTreeMap::new(),
            done: Vec::new(),
            down: false,
            dials: 0,
            sent: BTreeMap::new(),
            swallows_announcements: false,
            behind_nat: false,
            symmetric_nat: false,
        });
        i
    }

    /// Node `from` dials node `to` (remembering it, as a seed is).
    pub fn dial(&mut self, from: usize, to: usize) {
        let (r, b) = (self.nodes[to].noderef.clone(), self.nodes[to].bytes.clone());
        self.nodes[from].policy.dial(self.now, r, Some(b));
        self.run();
    }

    /// The link of node `a` to node `b`, if one is up on `a`'s side.
    #[must_use]
    pub fn link(&self, a: usize, b: usize) -> Option<PeerId> {
        self.nodes[a]
            .policy
            .link_to(&self.nodes[b].keys.static_public())
    }

    /// Deliver `msg` from node `from` to node `to` on their link, as if
    /// `from` had sent it (a misbehaving peer), then run.
    pub fn inject(&mut self, from: usize, to: usize, msg: Message) {
        if let Some(pid) = self.link(from, to) {
            if let Some(&(n, p)) = self.ends.get(&(from, pid)) {
                self.wire.push_back((n, p, msg));
            }
        }
        self.run();
    }

    /// Close the link between nodes `a` and `b` (as when either end
    /// leaves it), then run.
    pub fn cut(&mut self, a: usize, b: usize) {
        if let Some(pid) = self.link(a, b) {
            self.close((a, pid));
        }
        self.run();
    }

    /// Links up in the whole mesh.
    #[must_use]
    pub fn link_count(&self) -> usize {
        self.ends.len() / 2
    }

    /// Take node `i` down (its links close; dials to it fail) or up.
    pub fn set_down(&mut self, i: usize, down: bool) {
        self.nodes[i].down = down;
        if down {
            let mine: Vec<(usize, PeerId)> =
                self.ends.keys().filter(|(n, _)| *n == i).copied().collect();
            for end in mine {
                self.close(end);
            }
            self.run();
        }
    }

    /// Move the clock by `d`, firing each node's ticks (every
    /// [`RECONNECT_TICK`]) and routing timers on the way (at most
    /// [`MAX_STEPS`] of them).
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..MAX_STEPS {
            let next_tick = self.last_tick + RECONNECT_TICK;
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.policy.poll_timeout())
                .min();
            let next = next_timer.map_or(next_tick, |t| t.min(next_tick));
            if next > end {
                break;
            }
            self.set_now(next.max(self.now));
            if next == next_tick {
                self.last_tick = next_tick;
                for n in self.nodes.iter_mut().filter(|n| !n.down) {
                    n.policy.tick(self.now);
                }
            }
            for n in &mut self.nodes {
                if n.policy.poll_timeout().is_some_and(|t| t <= self.now) {
                    n.policy.timeout(self.now, &mut self.rng);
                }
            }
            self.run();
        }
        self.set_now(end);
    }

    fn set_now(&mut self, t: Instant) {
        let ms = u64::try_from(t.saturating_duration_since(self.now).as_millis()).unwrap_or(0);
        self.wall_ms = self.wall_ms.saturating_add(ms);
        self.now = t;
    }

    /// Carry out every output and deliver every message until all is
    /// quiet.
    ///
    /// # Panics
    /// After [`MAX_STEPS`] steps (a policy that never goes quiet).
    pub fn run(&mut self) {
        for _ in 0..MAX_STEPS {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while let Some(o) = self.nodes[i].policy.poll_output(self.now) {
                    busy = true;
                    self.carry_out(i, o);
                }
            }
            if let Some((to, pid, msg)) = self.wire.pop_front() {
                busy = true;
                if let (true, Message::Announce { id, .. }) =
                    (self.nodes[to].swallows_announcements, &msg)
                {
                    if let Some(&(from, fpid)) = self.ends.get(&(to, pid)) {
                        for m in [
                            Message::Accepted { id: *id },
                            Message::AnnounceReply { id: *id },
                        ] {
                            *self.nodes[to].sent.entry(m.name()).or_default() += 1;
                            self.wire.push_back((from, fpid, m));
                        }
                    }
                    continue;
                }
                let n = &mut self.nodes[to];
                n.policy
                    .message(self.now, pid, msg, &mut Source(&n.store), &mut self.rng);
            }
            if !busy {
                return;
            }
        }
        panic!("the mesh did not go quiet in {MAX_STEPS} steps");
    }

    fn carry_out(&mut self, i: usize, o: Output) {
        match o {
            Output::Dial { noderef, bytes } => self.connect(i, noderef, bytes),
            Output::Send { peer, msg } => {
                if let Some(&(to, pid)) = self.ends.get(&(i, peer)) {
                    *self.nodes[i].sent.entry(msg.name()).or_default() += 1;
                    self.wire.push_back((to, pid, msg));
                }
            }
            Output::Probe { peer, key, port } => {
                // The asker's node, if the link is still up: reached
                // unless it is down or behind NAT, or the port or key
                // are not its own.
                let Some(&(n, _)) = self.ends.get(&(i, peer)) else {
                    return;
                };
                let asker = &self.nodes[n];
                let Some(&own) = asker.noderef.addresses.first() else {
                    return;
                };
                // Seen from another port behind a symmetric NAT.
                let seen = if asker.symmetric_nat {
                    std::net::SocketAddr::new(own.ip(), own.port().wrapping_add(1))
                } else {
                    own
                };
                let reachable = !asker.down
                    && !asker.behind_nat
                    && asker.keys.static_public() == key
                    && seen.port() == port;
                self.nodes[i].policy.probe_done(peer, seen, reachable);
            }
            Output::Punch { key, dialed, .. } => self.punch(i, key, dialed),
            Output::Close { peer } => {
                if let Some(other) = self.ends.remove(&(i, peer)) {
                    self.ends.remove(&other);
                    self.nodes[other.0]
                        .policy
                        .link_closed(self.now, other.1, &mut self.rng);
                }
            }
            Output::SavePeers(list) => {
                self.nodes[i].saved = Some(list);
                self.nodes[i].saves += 1;
            }
            Output::StoreBlock {
                key, kind, block, ..
            } => {
                self.nodes[i].store.insert((key, kind), block);
            }
            o @ (Output::RequestDone { .. }
            | Output::InsertDone { .. }
            | Output::InvitationDone { .. }) => {
                self.nodes[i].done.push(o);
            }
        }
    }

    /// A link end closes from outside the policy (the peer vanished).
    fn close(&mut self, end: (usize, PeerId)) {
        if let Some(other) = self.ends.remove(&end) {
            self.ends.remove(&other);
            for (n, pid) in [end, other] {
                self.nodes[n]
                    .policy
                    .link_closed(self.now, pid, &mut self.rng);
            }
        }
    }

    /// Node `i` dials: the handshake succeeds at once if the node exists
    /// and is up; each side's policy then keeps or refuses the link.
    fn connect(&mut self, i: usize, noderef: Arc<NodeRef>, bytes: Option<NoderefBytes>) {
        self.nodes[i].dials += 1;
        let key = noderef.static_key;
        let up = |j: usize| !self.nodes[j].down && !self.nodes[i].down && !self.nodes[j].behind_nat;
        let Some(&j) = self.by_key.get(&key).filter(|&&j| up(j)) else {
            self.nodes[i].policy.dial_failed(self.now, &key);
            return;
        };
        let Some((a, b)) = pair_mut(&mut self.nodes, i, j) else {
            return;
        };
        let dialed = Dialed { noderef, bytes };
        if let Some((pa, pb)) = open_link(
            self.now,
            &mut a.policy,
            &mut b.policy,
            dialed,
            &mut self.rng,
        ) {
            // The dial leaves from the port its noderef names (the model
            // has one port a node); a symmetric NAT changes it (`Probe`).
            if let Some(port) = a.noderef.addresses.first().map(std::net::SocketAddr::port) {
                a.policy.link_local_port(pa, port);
            }
            self.ends.insert((i, pa), (j, pb));
            self.ends.insert((j, pb), (i, pa));
        }
    }
}

impl<V: Verifier> Mesh<V> {
    /// Node `i` punches toward the node with key `key`: once that node
    /// punches back toward `i`, the link comes up (initiated by the side
    /// with a noderef), unless either is down or behind a symmetric NAT,
    /// when both punches fail.
    fn punch(&mut self, i: usize, key: [u8; 32], dialed: Option<Dialed>) {
        let Some(&j) = self.by_key.get(&key) else {
            self.nodes[i].policy.punch_failed(&key, dialed.is_some());
            return;
        };
        let ik = self.nodes[i].keys.static_public();
        let Some(at) = self
            .punches
            .iter()
            .position(|(n, k, _)| *n == j && *k == ik)
        else {
            self.punches.push((i, key, dialed));
            return;
        };
        let (_, _, other) = self.punches.swap_remove(at);
        let fails = |n: &MeshNode<V>| n.down || n.symmetric_nat;
        let (init, resp, d) = match (dialed, other) {
            (Some(d), None) => (i, j, d),
            (None, Some(d)) => (j, i, d),
            _ => return,
        };
        if fails(&self.nodes[i]) || fails(&self.nodes[j]) {
            let (ik, rk) = (
                self.nodes[init].keys.static_public(),
                self.nodes[resp].keys.static_public(),
            );
            self.nodes[init].policy.punch_failed(&rk, true);
            self.nodes[resp].policy.punch_failed(&ik, false);
            return;
        }
        let Some((a, b)) = pair_mut(&mut self.nodes, init, resp) else {
            return;
        };
        if let Some((pa, pb)) = open_link(self.now, &mut a.policy, &mut b.policy, d, &mut self.rng)
        {
            self.ends.insert((init, pa), (resp, pb));
            self.ends.insert((resp, pb), (init, pa));
        }
    }
}

/// Bring up the link policy `a` dialed (as `dialed`) to the node whose
/// policy is `b`, once its handshake is done: each side admits or refuses
/// it. `Some` with both ends' ids when both keep it; a side that refused
/// closes its end, and the other side is told the link closed.
pub fn open_link<V: Verifier>(
    now: Instant,
    a: &mut PeerPolicy<V>,
    b: &mut PeerPolicy<V>,
    dialed: Dialed,
    rng: &mut impl RngCore,
) -> Option<(PeerId, PeerId)> {
    // The dialed side sees the dialer's address: its noderef's first.
    let a_ip = a
        .cfg
        .noderef
        .as_ref()
        .and_then(|r| NodeRef::from_bytes(r).ok())
        .and_then(|r| r.addresses.first().map(std::net::SocketAddr::ip));
    open_link_from(now, a, a_ip, b, dialed, rng)
}

/// [`open_link`] with the address the dialed side sees the dialer's link
/// come from (`a_ip`) given by the caller, who knows it already: the
/// simulator, which would otherwise parse and verify the dialer's signed
/// noderef on every dial to find it.
pub fn open_link_from<V: Verifier>(
    now: Instant,
    a: &mut PeerPolicy<V>,
    a_ip: Option<std::net::IpAddr>,
    b: &mut PeerPolicy<V>,
    dialed: Dialed,
    rng: &mut impl RngCore,
) -> Option<(PeerId, PeerId)> {
    let (a_key, b_key) = (a.cfg.own_key, dialed.noderef.static_key);
    let ra = a.link_up(now, b_key, Some(dialed), None, rng);
    let rb = b.link_up(now, a_key, None, a_ip, rng);
    match (ra, rb) {
        (Ok(pa), Ok(pb)) => Some((pa, pb)),
        (Ok(pa), Err(_)) => {
            a.link_closed(now, pa, rng);
            None
        }
        (Err(_), Ok(pb)) => {
            b.link_closed(now, pb, rng);
            None
        }
        (Err(_), Err(_)) => None,
    }
}

/// Elements `i` and `j` of `v`, both mutable (`None` when `i == j`).
pub fn pair_mut<T>(v: &mut [T], i: usize, j: usize) -> Option<(&mut T, &mut T)> {
    if i == j || i.max(j) >= v.len() {
        return None;
    }
    let (lo, hi) = v.split_at_mut(i.max(j));
    let (x, y) = (&mut lo[i.min(j)], &mut hi[0]);
    Some(if i < j { (x, y) } else { (y, x) })
}
