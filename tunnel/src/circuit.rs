//! The tunnel engine of one node, sans-IO: the tunnels it originates and
//! the ones it relays or exits for others. Time and randomness come in as
//! arguments; messages to send and events for the caller go out through
//! [`Tunnels::poll_transmit`] and [`Tunnels::poll_event`].
//!
//! A tunnel is built hop by hop (telescoping): `Create` to the first hop,
//! then `Extend` commands through the layers built so far, each answered
//! by the newest hop's `Extended`. Every peer is bounded in the circuits
//! it may hold here and in how fast it may create them; anything that
//! does not fit the protocol tears the circuit down at that hop.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use x25519_dalek::StaticSecret;

use crate::cell::{fragments, Command, Dir, ExtendFailure, Reassembly, TunnelMsg, COMMAND_HEADER};
use crate::handshake::{server_handshake, ClientHandshake};
use crate::learned::{LearnedTimeout, Rule};
use crate::onion::{
    capacity, peel_forward, repad, seal_backward, unwrap_backward, wrap_forward, Layer, MAX_HOPS,
};
use crate::TunnelError;

/// A tunnel this node originates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CircuitId(pub u64);

/// A tunnel that ends at this node (it is the exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExitId(pub u64);

/// What the engine needs to know of the node's links.
pub trait Links<P> {
    /// The connected peer with this static key, if any: where an
    /// `Extend` may go.
    fn peer_by_static_key(&self, key: &[u8; 32]) -> Option<P>;
    /// The static keys of the peers a tunnel may be extended to (on a
    /// darknet, friends only), told to an originator that built a hop
    /// here so it can choose the next one.
    fn extend_candidates(&self) -> Vec<[u8; 32]>;
}

/// Bounds on what peers may make this node hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Circuits one peer may have created here.
    pub per_peer: usize,
    /// Circuits relayed or exited here in all.
    pub relayed: usize,
    /// Tunnels this node originates at once.
    pub own: usize,
    /// Largest message carried (bytes).
    pub message_max: usize,
    /// `Create`s one peer may send at once (token bucket burst).
    pub create_burst: u32,
    /// `Create`s one peer may send per minute, sustained.
    pub creates_per_minute: u32,
    /// A tunnel not built by then is given up (ms); also the longest
    /// hop timeout ([`Tunnels::hop_timeout`]), and the hop timeout until
    /// enough hops have answered to learn one.
    pub build_timeout_ms: u64,
    /// A relayed circuit older than this is torn down (ms).
    pub relay_lifetime_ms: u64,
    /// The fewest distinct eligible peers a hop's `Peers` list must name
    /// for this node to extend its own tunnel through it (eligible: not
    /// this node, not a hop already on the path); a shorter list closes
    /// the tunnel with [`CloseReason::ShortList`]. A hop can only extend
    /// to peers it really has (the next hop's `Extended` proves it
    /// answered), so a lying hop must pad its colluders with honest peers
    /// up to this length (`docs/tunnels.md`, "Path selection").
    /// [`DEFAULT_MIN_PEER_LIST`] on opennet; 0 (no minimum) on a darknet,
    /// whose lists are a hop's friends and are small.
    pub min_peer_list: usize,
}

/// Hop answers [`Tunnels::hop_timeout`] learns from.
pub const HOP_SAMPLES: usize = 32;
/// Answers seen before the hop timeout is learned rather than
/// [`Limits::build_timeout_ms`].
pub const MIN_HOP_SAMPLES: usize = 8;
/// The shortest learned hop timeout (ms).
pub const MIN_HOP_TIMEOUT_MS: u64 = 2_000;

/// How [`Tunnels::hop_timeout`] is learned.
const HOP_RULE: Rule = Rule {
    samples: HOP_SAMPLES,
    min_samples: MIN_HOP_SAMPLES,
    percentile: 50,
    factor: 4,
    min_ms: MIN_HOP_TIMEOUT_MS,
};

/// The default [`Limits::min_peer_list`] (opennet).
pub const DEFAULT_MIN_PEER_LIST: usize = 8;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_peer: 32,
            relayed: 2048,
            own: 64,
            message_max: 64 * 1024,
            create_burst: 16,
            creates_per_minute: 120,
            build_timeout_ms: 30_000,
            relay_lifetime_ms: 30 * 60_000,
            min_peer_list: DEFAULT_MIN_PEER_LIST,
        }
    }
}

/// Why one of this node's tunnels closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A hop could not extend it.
    ExtendFailed,
    /// A hop tore it down, or a cell did not open.
    Destroyed,
    /// The first hop's link went away.
    PeerGone,
    /// It was not built in time.
    Timeout,
    /// The other end sent something that does not fit the protocol.
    Protocol,
    /// A hop named no peer the tunnel could be extended to.
    NoPath,
    /// A hop named some eligible peers, but fewer than
    /// [`Limits::min_peer_list`]: the originator refused to choose from
    /// a list that short.
    ShortList,
}

/// What the caller hears from the engine.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// An own tunnel is built and can carry messages.
    Opened(CircuitId),
    /// A message came back through an own tunnel.
    Data(CircuitId, Vec<u8>),
    /// An own tunnel closed: why, and how many of its hops had answered
    /// (0: the first hop never did; what a caller may hold against the
    /// first hop, its guard, and what not).
    Closed(CircuitId, CloseReason, usize),
    /// A message arrived at a tunnel ending here (this node is its exit).
    ExitData(ExitId, Vec<u8>),
    /// A tunnel ending here closed.
    ExitClosed(ExitId),
}

struct Own<P> {
    first: (P, u32),
    /// The hops' static keys so far (the one being built included).
    path: Vec<[u8; 32]>,
    /// The length it is built to.
    hops: usize,
    layers: Vec<Layer>,
    pending: Option<ClientHandshake>,
    /// Waiting for the newest hop's peer list to choose the next hop.
    awaiting_peers: bool,
    started: u64,
    /// When the newest hop was asked (`Create` or `Extend`), or answered.
    hop_started: u64,
    open: bool,
    reasm: Reassembly,
}

struct Relay<P> {
    prev: (P, u32),
    depth: usize,
    layer: Layer,
    next: Option<(P, u32)>,
    extending: Option<(P, u32)>,
    created: u64,
    reasm: Reassembly,
}

#[derive(Clone, Copy)]
enum Out {
    Own(u64),
    Relay(u64),
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: u64,
}

/// One node's tunnels.
pub struct Tunnels<P> {
    secret: StaticSecret,
    public: [u8; 32],
    limits: Limits,
    own: BTreeMap<u64, Own<P>>,
    relays: BTreeMap<u64, Relay<P>>,
    inbound: BTreeMap<(P, u32), u64>,
    outbound: BTreeMap<(P, u32), Out>,
    buckets: BTreeMap<P, Bucket>,
    next_id: u64,
    transmit: VecDeque<(P, TunnelMsg)>,
    events: VecDeque<Event>,
    /// Simulator-only adversary knob: see [`Tunnels::sim_adversary_lying_lists`].
    lie_with: Option<BTreeSet<[u8; 32]>>,
    /// Our own peers' static keys: not chosen as exits when another can
    /// be ([`Tunnels::set_neighbours`]).
    neighbours: BTreeSet<[u8; 32]>,
    /// How long the last hops took to answer, for
    /// [`Tunnels::hop_timeout`].
    hop_times: LearnedTimeout,
}

impl<P> std::fmt::Debug for Tunnels<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnels")
            .field("own", &self.own.len())
            .field("relayed", &self.relays.len())
            .finish_non_exhaustive()
    }
}

impl<P: Copy + Ord> Tunnels<P> {
    /// The engine of the node whose static (link) secret is `secret`.
    #[must_use]
    pub fn new(secret: [u8; 32], limits: Limits) -> Self {
        let secret = StaticSecret::from(secret);
        Tunnels {
            public: x25519_dalek::PublicKey::from(&secret).to_bytes(),
            secret,
            limits,
            own: BTreeMap::new(),
            relays: BTreeMap::new(),
            inbound: BTreeMap::new(),
            outbound: BTreeMap::new(),
            buckets: BTreeMap::new(),
            next_id: 1,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            lie_with: None,
            neighbours: BTreeSet::new(),
            hop_times: LearnedTimeout::new(HOP_RULE),
        }
    }

    /// **Simulator-only adversary knob**, for `lichen sim --lying-lists
    /// on` (`docs/anonymity.md`, "End-to-end correlation"): from now on
    /// the `Peers` lists this node sends name all its peers among
    /// `colluders`, padded with just enough of its honest peers, at
    /// random, to meet [`Limits::min_peer_list`] (its real list when none
    /// of its peers is one): the best an adversary can do under the
    /// minimum, which without it (0) is naming colluders only, so that an
    /// originator can only extend to a colluder. No configuration of a
    /// node reaches this; only the simulator calls it, for its adversary
    /// nodes, to measure what a lying hop gains.
    #[doc(hidden)]
    pub fn sim_adversary_lying_lists(&mut self, colluders: BTreeSet<[u8; 32]>) {
        self.lie_with = Some(colluders);
    }

    /// Our own peers' static keys, which own tunnels avoid as exits when
    /// the previous hop offers another (call when peers come and go).
    pub fn set_neighbours(&mut self, keys: impl IntoIterator<Item = [u8; 32]>) {
        self.neighbours = keys.into_iter().collect();
    }

    /// The next message to send, and to which peer.
    pub fn poll_transmit(&mut self) -> Option<(P, TunnelMsg)> {
        self.transmit.pop_front()
    }

    /// The next event for the caller.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Tunnels this node originates, built or building.
    #[must_use]
    pub fn own_count(&self) -> usize {
        self.own.len()
    }

    /// Circuits relayed or exited here.
    #[must_use]
    pub fn relayed_count(&self) -> usize {
        self.relays.len()
    }

    /// Start building a tunnel of `hops` hops whose first hop is the
    /// connected peer `first`, with static key `first_key`. Each later
    /// hop is drawn at random from the peers the hop before it names
    /// (`docs/tunnels.md`, path selection): the first hop cannot choose
    /// the exit, it can only name the peers it really has.
    ///
    /// # Errors
    /// [`TunnelError::Refused`] for 0 or more than [`MAX_HOPS`] hops, or
    /// when [`Limits::own`] tunnels exist.
    pub fn build<R: RngCore>(
        &mut self,
        now: u64,
        rng: &mut R,
        first: P,
        first_key: [u8; 32],
        hops: usize,
    ) -> Result<CircuitId, TunnelError> {
        if hops == 0 || hops > MAX_HOPS {
            return Err(TunnelError::Refused("a tunnel has 1 to 3 hops"));
        }
        if self.own.len() >= self.limits.own {
            return Err(TunnelError::Refused("too many tunnels of our own"));
        }
        let circ = self.fresh_circ(rng, first);
        let (hs, x) = ClientHandshake::start(rng, first_key);
        let id = self.alloc();
        self.own.insert(
            id,
            Own {
                first: (first, circ),
                path: vec![first_key],
                hops,
                layers: Vec::new(),
                pending: Some(hs),
                awaiting_peers: false,
                started: now,
                hop_started: now,
                open: false,
                reasm: Reassembly::default(),
            },
        );
        self.outbound.insert((first, circ), Out::Own(id));
        self.transmit
            .push_back((first, TunnelMsg::Create { circ, depth: 1, x }));
        Ok(CircuitId(id))
    }

    /// Send a message through an own, built tunnel to its exit.
    ///
    /// # Errors
    /// [`TunnelError::NotOpen`] for an unknown or unbuilt tunnel,
    /// [`TunnelError::TooLarge`] beyond [`Limits::message_max`].
    pub fn send(&mut self, id: CircuitId, data: &[u8]) -> Result<(), TunnelError> {
        if data.len() > self.limits.message_max {
            return Err(TunnelError::TooLarge);
        }
        let own = self
            .own
            .get(&id.0)
            .filter(|o| o.open)
            .ok_or(TunnelError::NotOpen)?;
        let size = capacity(own.layers.len());
        for frag in fragments(data, size) {
            self.send_forward(id.0, &frag)?;
        }
        Ok(())
    }

    /// Wrap `command` under every layer of own tunnel `id` built so far
    /// and queue it to the first hop.
    fn send_forward(&mut self, id: u64, command: &Command) -> Result<(), TunnelError> {
        let own = self.own.get_mut(&id).ok_or(TunnelError::UnknownCircuit)?;
        let size = capacity(own.layers.len());
        let body = wrap_forward(&mut own.layers, command.encode(size)?)?;
        let (peer, circ) = own.first;
        self.transmit.push_back((
            peer,
            TunnelMsg::Cell {
                circ,
                dir: Dir::Forward,
                body,
            },
        ));
        Ok(())
    }

    /// Close an own tunnel (no event follows).
    pub fn close(&mut self, id: CircuitId) {
        if let Some(own) = self.own.remove(&id.0) {
            self.outbound.remove(&own.first);
            let (peer, circ) = own.first;
            self.transmit.push_back((
                peer,
                TunnelMsg::Destroy {
                    circ,
                    dir: Dir::Forward,
                },
            ));
        }
    }

    /// Answer through a tunnel that ends here.
    ///
    /// # Errors
    /// [`TunnelError::NotOpen`] if it is gone or does not end here,
    /// [`TunnelError::TooLarge`] beyond [`Limits::message_max`].
    pub fn exit_send(&mut self, exit: ExitId, data: &[u8]) -> Result<(), TunnelError> {
        if data.len() > self.limits.message_max {
            return Err(TunnelError::TooLarge);
        }
        let r = self
            .relays
            .get(&exit.0)
            .filter(|r| r.next.is_none() && r.extending.is_none())
            .ok_or(TunnelError::NotOpen)?;
        let size = capacity(r.depth);
        for frag in fragments(data, size) {
            self.send_backward(exit.0, &frag.encode(size)?)?;
        }
        Ok(())
    }

    /// Close a tunnel that ends here (no event follows).
    pub fn exit_close(&mut self, exit: ExitId) {
        let ends_here = self
            .relays
            .get(&exit.0)
            .is_some_and(|r| r.next.is_none() && r.extending.is_none());
        if ends_here {
            self.remove_relay(exit.0, false, true);
        }
    }

    /// The link to `peer` went away: every circuit through it ends.
    pub fn peer_gone(&mut self, peer: P) {
        let ins: Vec<u64> = self
            .inbound
            .range((peer, 0)..=(peer, u32::MAX))
            .map(|(_, &r)| r)
            .collect();
        for r in ins {
            self.teardown_relay(r, true, false);
        }
        let outs: Vec<((P, u32), Out)> = self
            .outbound
            .range((peer, 0)..=(peer, u32::MAX))
            .map(|(&k, &v)| (k, v))
            .collect();
        for (key, out) in outs {
            match out {
                Out::Own(id) => self.own_closed(id, CloseReason::PeerGone),
                Out::Relay(r) => self.next_hop_lost(r, key),
            }
        }
        self.buckets.remove(&peer);
    }

    /// Give up tunnels not built in time and tear down relayed circuits
    /// past their lifetime.
    pub fn expire(&mut self, now: u64) {
        let hop_timeout = self.hop_timeout();
        let slow: Vec<u64> = self
            .own
            .iter()
            .filter(|(_, o)| {
                !o.open
                    && (now.saturating_sub(o.started) > self.limits.build_timeout_ms
                        || now.saturating_sub(o.hop_started) > hop_timeout)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in slow {
            self.abandon(id, CloseReason::Timeout);
        }
        let old: Vec<u64> = self
            .relays
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.created) > self.limits.relay_lifetime_ms)
            .map(|(&id, _)| id)
            .collect();
        for r in old {
            self.teardown_relay(r, true, true);
        }
    }

    /// Handle a message from `from`.
    ///
    /// # Errors
    /// A refusal the caller may log (at debug) or count against the
    /// peer; the engine has already answered the peer where the protocol
    /// says so (a refused `Create` gets a `Destroy`).
    pub fn handle<R: RngCore>(
        &mut self,
        now: u64,
        rng: &mut R,
        links: &dyn Links<P>,
        from: P,
        msg: TunnelMsg,
    ) -> Result<(), TunnelError> {
        match msg {
            TunnelMsg::Create { circ, depth, x } => {
                self.on_create(now, rng, links, from, (circ, depth), &x)
            }
            TunnelMsg::Created { circ, reply } => self.on_created(now, from, circ, &reply),
            TunnelMsg::Cell {
                circ,
                dir: Dir::Forward,
                body,
            } => self.on_forward(rng, links, from, circ, &body),
            TunnelMsg::Cell {
                circ,
                dir: Dir::Backward,
                body,
            } => self.on_backward(now, rng, from, circ, &body),
            TunnelMsg::Destroy {
                circ,
                dir: Dir::Forward,
            } => {
                let r = *self
                    .inbound
                    .get(&(from, circ))
                    .ok_or(TunnelError::UnknownCircuit)?;
                self.teardown_relay(r, true, false);
                Ok(())
            }
            TunnelMsg::Destroy {
                circ,
                dir: Dir::Backward,
            } => match *self
                .outbound
                .get(&(from, circ))
                .ok_or(TunnelError::UnknownCircuit)?
            {
                Out::Own(id) => {
                    self.own_closed(id, CloseReason::Destroyed);
                    Ok(())
                }
                Out::Relay(r) => {
                    self.next_hop_lost(r, (from, circ));
                    Ok(())
                }
            },
        }
    }

    fn on_create<R: RngCore>(
        &mut self,
        now: u64,
        rng: &mut R,
        links: &dyn Links<P>,
        from: P,
        (circ, depth): (u32, u8),
        x: &[u8; 32],
    ) -> Result<(), TunnelError> {
        let refuse = |t: &mut Self, why: &'static str| {
            t.transmit.push_back((
                from,
                TunnelMsg::Destroy {
                    circ,
                    dir: Dir::Backward,
                },
            ));
            Err(TunnelError::Refused(why))
        };
        if self.inbound.contains_key(&(from, circ)) {
            // Not answered: the circuit that exists keeps its id.
            return Err(TunnelError::Refused("circuit id already in use"));
        }
        let held = self.inbound.range((from, 0)..=(from, u32::MAX)).count();
        if held >= self.limits.per_peer {
            return refuse(self, "the peer holds its share of circuits");
        }
        if self.relays.len() >= self.limits.relayed {
            return refuse(self, "no room for more circuits");
        }
        if !self.take_token(now, from) {
            return refuse(self, "the peer creates circuits too fast");
        }
        let Ok((secrets, reply)) = server_handshake(rng, &self.secret, x) else {
            return refuse(self, "a degenerate handshake key");
        };
        let id = self.alloc();
        self.relays.insert(
            id,
            Relay {
                prev: (from, circ),
                depth: usize::from(depth),
                layer: Layer::new(&secrets),
                next: None,
                extending: None,
                created: now,
                reasm: Reassembly::default(),
            },
        );
        self.inbound.insert((from, circ), id);
        self.transmit
            .push_back((from, TunnelMsg::Created { circ, reply }));
        // Then, under this hop's own layer, the peers the originator may
        // choose the next hop from: as many as fit one cell, at random.
        let size = capacity(usize::from(depth));
        let mut keys = links.extend_candidates();
        keys.retain(|k| *k != self.public);
        let room = (size - COMMAND_HEADER) / 32;
        let chosen = match &self.lie_with {
            Some(c) if keys.iter().any(|k| c.contains(k)) => {
                lying_list(rng, links, from, keys, c, self.limits.min_peer_list, room)
            }
            _ => keys.partial_shuffle(rng, room).0.to_vec(),
        };
        let plain = Command::Peers { keys: chosen }.encode(size)?;
        self.send_backward(id, &plain)
    }

    fn on_created(
        &mut self,
        now: u64,
        from: P,
        circ: u32,
        reply: &[u8; 64],
    ) -> Result<(), TunnelError> {
        match *self
            .outbound
            .get(&(from, circ))
            .ok_or(TunnelError::UnknownCircuit)?
        {
            Out::Own(id) => {
                let own = self.own.get_mut(&id).ok_or(TunnelError::UnknownCircuit)?;
                if !own.layers.is_empty() {
                    self.own_closed(id, CloseReason::Protocol);
                    return Err(TunnelError::BadCell("a second Created"));
                }
                self.hop_answered(now, id, reply)
            }
            Out::Relay(r) => {
                let relay = self.relays.get_mut(&r).ok_or(TunnelError::UnknownCircuit)?;
                if relay.extending != Some((from, circ)) {
                    return Err(TunnelError::BadCell("a Created nobody waits for"));
                }
                relay.extending = None;
                relay.next = Some((from, circ));
                let size = capacity(relay.depth);
                let plain = Command::Extended { reply: *reply }.encode(size)?;
                self.send_backward(r, &plain)
            }
        }
    }

    /// The newest hop of own tunnel `id` answered: add its layer, then
    /// wait for its peer list or report the tunnel open.
    fn hop_answered(&mut self, now: u64, id: u64, reply: &[u8; 64]) -> Result<(), TunnelError> {
        let Some(own) = self.own.get_mut(&id) else {
            return Err(TunnelError::UnknownCircuit);
        };
        let Some(hs) = own.pending.take() else {
            self.own_closed(id, CloseReason::Protocol);
            return Err(TunnelError::BadCell("an answer nobody waits for"));
        };
        match hs.finish(reply) {
            Ok(secrets) => own.layers.push(Layer::new(&secrets)),
            Err(e) => {
                self.own_closed(id, CloseReason::Protocol);
                return Err(e);
            }
        }
        let took = now.saturating_sub(own.hop_started);
        own.hop_started = now;
        if own.layers.len() == own.hops {
            own.open = true;
            self.events.push_back(Event::Opened(CircuitId(id)));
        } else {
            own.awaiting_peers = true;
        }
        self.hop_times.record(took);
        Ok(())
    }

    /// How long the newest hop of a build may take to answer: 4 × the
    /// median of the last [`HOP_SAMPLES`] hops' answers (Tor learns its
    /// circuit build timeout from its own builds in the same spirit),
    /// at least [`MIN_HOP_TIMEOUT_MS`], at most
    /// [`Limits::build_timeout_ms`]; that maximum until
    /// [`MIN_HOP_SAMPLES`] answers were seen.
    #[must_use]
    pub fn hop_timeout(&self) -> u64 {
        self.hop_times.timeout(self.limits.build_timeout_ms)
    }

    /// The newest hop of own tunnel `id` named its peers: draw the next
    /// hop from them and extend.
    fn choose_next<R: RngCore>(
        &mut self,
        now: u64,
        rng: &mut R,
        id: u64,
        keys: &[[u8; 32]],
    ) -> Result<(), TunnelError> {
        let me = self.public;
        let Some(own) = self.own.get_mut(&id) else {
            return Err(TunnelError::UnknownCircuit);
        };
        own.awaiting_peers = false;
        // Distinct keys only: a list that names one peer twice must not
        // pass the minimum with it.
        let mut eligible: Vec<[u8; 32]> = keys
            .iter()
            .filter(|k| **k != me && !own.path.contains(k))
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !eligible.is_empty() && eligible.len() < self.limits.min_peer_list {
            self.abandon(id, CloseReason::ShortList);
            return Err(TunnelError::Refused("the hop's peer list is too short"));
        }
        // The exit is not one of our own neighbours when another can be:
        // an exit next to us would send its requests (ours) at the
        // highest HTL to us among others, and we would pass them on to
        // our other neighbours as a downloader's neighbour sees a
        // downloader do.
        if own.path.len() + 1 == own.hops {
            let far: Vec<[u8; 32]> = eligible
                .iter()
                .filter(|k| !self.neighbours.contains(*k))
                .copied()
                .collect();
            if !far.is_empty() {
                eligible = far;
            }
        }
        let Some(&hop) = eligible.get(rng.gen_range(0..eligible.len().max(1))) else {
            self.abandon(id, CloseReason::NoPath);
            return Err(TunnelError::Refused("no peer to extend the tunnel to"));
        };
        own.path.push(hop);
        own.hop_started = now;
        let (hs, x) = ClientHandshake::start(rng, hop);
        own.pending = Some(hs);
        self.send_forward(id, &Command::Extend { hop, x })
    }

    fn on_forward<R: RngCore>(
        &mut self,
        rng: &mut R,
        links: &dyn Links<P>,
        from: P,
        circ: u32,
        body: &[u8; crate::onion::CELL],
    ) -> Result<(), TunnelError> {
        let r = *self
            .inbound
            .get(&(from, circ))
            .ok_or(TunnelError::UnknownCircuit)?;
        let relay = self.relays.get_mut(&r).ok_or(TunnelError::UnknownCircuit)?;
        let peeled = match peel_forward(&mut relay.layer, relay.depth, body) {
            Ok(p) => p,
            Err(e) => {
                self.teardown_relay(r, true, true);
                return Err(e);
            }
        };
        if let Some((peer, circ)) = relay.next {
            self.transmit.push_back((
                peer,
                TunnelMsg::Cell {
                    circ,
                    dir: Dir::Forward,
                    body: repad(peeled),
                },
            ));
            return Ok(());
        }
        let command = Command::decode(&peeled).and_then(|c| {
            if relay.extending.is_some() {
                Err(TunnelError::BadCell("a cell while the tunnel extends"))
            } else {
                Ok(c)
            }
        });
        match command {
            Ok(Command::Extend { hop, x }) => self.extend(rng, links, r, &hop, x),
            Ok(Command::Data { last, bytes }) => {
                let max = self.limits.message_max;
                match relay.reasm.push(last, &bytes, max) {
                    Ok(Some(msg)) => self.events.push_back(Event::ExitData(ExitId(r), msg)),
                    Ok(None) => {}
                    Err(e) => {
                        self.teardown_relay(r, true, true);
                        return Err(e);
                    }
                }
                Ok(())
            }
            Ok(_) => {
                self.teardown_relay(r, true, true);
                Err(TunnelError::BadCell("a backward command sent forward"))
            }
            Err(e) => {
                self.teardown_relay(r, true, true);
                Err(e)
            }
        }
    }

    fn extend<R: RngCore>(
        &mut self,
        rng: &mut R,
        links: &dyn Links<P>,
        r: u64,
        hop: &[u8; 32],
        x: [u8; 32],
    ) -> Result<(), TunnelError> {
        let Some(relay) = self.relays.get(&r) else {
            return Err(TunnelError::UnknownCircuit);
        };
        let (depth, prev) = (relay.depth, relay.prev.0);
        let failure = if depth >= MAX_HOPS {
            Some(ExtendFailure::TooLong)
        } else {
            match links.peer_by_static_key(hop) {
                Some(p) if p != prev => {
                    let circ = self.fresh_circ(rng, p);
                    self.outbound.insert((p, circ), Out::Relay(r));
                    if let Some(relay) = self.relays.get_mut(&r) {
                        relay.extending = Some((p, circ));
                    }
                    let depth = u8::try_from(depth + 1).map_err(|_| TunnelError::TooLarge)?;
                    self.transmit
                        .push_back((p, TunnelMsg::Create { circ, depth, x }));
                    None
                }
                _ => Some(ExtendFailure::NotAPeer),
            }
        };
        match failure {
            None => Ok(()),
            Some(f) => {
                let plain = Command::ExtendFailed { reason: f as u8 }.encode(capacity(depth))?;
                self.send_backward(r, &plain)?;
                Err(TunnelError::Refused("cannot extend there"))
            }
        }
    }

    fn on_backward<R: RngCore>(
        &mut self,
        now: u64,
        rng: &mut R,
        from: P,
        circ: u32,
        body: &[u8; crate::onion::CELL],
    ) -> Result<(), TunnelError> {
        match *self
            .outbound
            .get(&(from, circ))
            .ok_or(TunnelError::UnknownCircuit)?
        {
            Out::Relay(r) => {
                let relay = self.relays.get(&r).ok_or(TunnelError::UnknownCircuit)?;
                if relay.next != Some((from, circ)) {
                    self.teardown_relay(r, true, true);
                    return Err(TunnelError::BadCell("a cell before the hop answered"));
                }
                // The meaningful part of a cell from depth d + 1.
                let inner = body[..capacity(relay.depth)].to_vec();
                self.send_backward(r, &inner)
            }
            Out::Own(id) => {
                let own = self.own.get_mut(&id).ok_or(TunnelError::UnknownCircuit)?;
                let command =
                    unwrap_backward(&mut own.layers, body).and_then(|p| Command::decode(&p));
                match command {
                    Ok(Command::Extended { reply }) => self.hop_answered(now, id, &reply),
                    Ok(Command::Peers { keys }) if own.awaiting_peers => {
                        self.choose_next(now, rng, id, &keys)
                    }
                    // The exit's list, after the tunnel opened: not needed.
                    Ok(Command::Peers { .. }) if own.open => Ok(()),
                    Ok(Command::ExtendFailed { .. }) => {
                        self.abandon(id, CloseReason::ExtendFailed);
                        Ok(())
                    }
                    Ok(Command::Data { last, bytes }) if own.open => {
                        let max = self.limits.message_max;
                        match own.reasm.push(last, &bytes, max) {
                            Ok(Some(msg)) => self.events.push_back(Event::Data(CircuitId(id), msg)),
                            Ok(None) => {}
                            Err(e) => {
                                self.abandon(id, CloseReason::Protocol);
                                return Err(e);
                            }
                        }
                        Ok(())
                    }
                    Ok(_) | Err(_) => {
                        self.abandon(id, CloseReason::Protocol);
                        Err(TunnelError::BadCell("a backward cell that does not fit"))
                    }
                }
            }
        }
    }

    /// Seal `inner` with relay `r`'s backward key and send it toward the
    /// originator.
    fn send_backward(&mut self, r: u64, inner: &[u8]) -> Result<(), TunnelError> {
        let relay = self.relays.get_mut(&r).ok_or(TunnelError::UnknownCircuit)?;
        let body = seal_backward(&mut relay.layer, relay.depth, inner)?;
        let (peer, circ) = relay.prev;
        self.transmit.push_back((
            peer,
            TunnelMsg::Cell {
                circ,
                dir: Dir::Backward,
                body,
            },
        ));
        Ok(())
    }

    /// Relay `r`'s onward hop (`key`) refused or went away: a pending
    /// extension fails back to the originator (the tunnel stays); an
    /// established one takes the circuit down.
    fn next_hop_lost(&mut self, r: u64, key: (P, u32)) {
        self.outbound.remove(&key);
        let Some(relay) = self.relays.get_mut(&r) else {
            return;
        };
        if relay.extending == Some(key) {
            relay.extending = None;
            let size = capacity(relay.depth);
            if let Ok(plain) = (Command::ExtendFailed {
                reason: ExtendFailure::Refused as u8,
            })
            .encode(size)
            {
                let _ = self.send_backward(r, &plain);
            }
        } else {
            self.teardown_relay(r, false, true);
        }
    }

    /// Remove relayed circuit `r`, telling the next hop (`forward`) and
    /// the previous one (`backward`); the caller hears of it if the
    /// tunnel ended here.
    fn teardown_relay(&mut self, r: u64, forward: bool, backward: bool) {
        if self.remove_relay(r, forward, backward) {
            self.events.push_back(Event::ExitClosed(ExitId(r)));
        }
    }

    /// [`Self::teardown_relay`] without the event; whether the tunnel
    /// ended here.
    fn remove_relay(&mut self, r: u64, forward: bool, backward: bool) -> bool {
        let Some(relay) = self.relays.remove(&r) else {
            return false;
        };
        self.inbound.remove(&relay.prev);
        let is_exit = relay.next.is_none() && relay.extending.is_none();
        for key in [relay.next, relay.extending].into_iter().flatten() {
            self.outbound.remove(&key);
            if forward {
                self.transmit.push_back((
                    key.0,
                    TunnelMsg::Destroy {
                        circ: key.1,
                        dir: Dir::Forward,
                    },
                ));
            }
        }
        if backward {
            self.transmit.push_back((
                relay.prev.0,
                TunnelMsg::Destroy {
                    circ: relay.prev.1,
                    dir: Dir::Backward,
                },
            ));
        }
        is_exit
    }

    /// Own tunnel `id` ended without us (its first hop's link went, or a
    /// hop destroyed it).
    fn own_closed(&mut self, id: u64, why: CloseReason) {
        if let Some(own) = self.own.remove(&id) {
            self.outbound.remove(&own.first);
            self.events
                .push_back(Event::Closed(CircuitId(id), why, own.layers.len()));
        }
    }

    /// Give up own tunnel `id`: tear it down and tell the caller why.
    fn abandon(&mut self, id: u64, why: CloseReason) {
        let answered = self.own.get(&id).map_or(0, |o| o.layers.len());
        self.close(CircuitId(id));
        self.events
            .push_back(Event::Closed(CircuitId(id), why, answered));
    }

    fn take_token(&mut self, now: u64, peer: P) -> bool {
        let burst = f64::from(self.limits.create_burst);
        let rate = f64::from(self.limits.creates_per_minute) / 60_000.0;
        let b = self.buckets.entry(peer).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.saturating_sub(b.at) as f64 * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn fresh_circ<R: Rng>(&self, rng: &mut R, peer: P) -> u32 {
        loop {
            let c: u32 = rng.gen();
            if c != 0 && !self.outbound.contains_key(&(peer, c)) {
                return c;
            }
        }
    }

    fn alloc(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// The simulator's lying hop, playing its best response to
/// [`Limits::min_peer_list`]: every colluding peer, padded with honest
/// peers it really has, drawn at random, until the list names `min`
/// peers the originator counts as eligible (the previous hop, which is
/// the originator or a hop already on the path, never counts); all its
/// peers if it has fewer. At most `room` keys, colluders first.
fn lying_list<P: Copy + Ord, R: RngCore>(
    rng: &mut R,
    links: &dyn Links<P>,
    from: P,
    keys: Vec<[u8; 32]>,
    colluders: &BTreeSet<[u8; 32]>,
    min: usize,
    room: usize,
) -> Vec<[u8; 32]> {
    let prev = keys
        .iter()
        .find(|k| links.peer_by_static_key(k) == Some(from))
        .copied();
    let (mut bad, mut honest): (Vec<[u8; 32]>, Vec<[u8; 32]>) =
        keys.into_iter().partition(|k| colluders.contains(k));
    bad.retain(|k| Some(*k) != prev);
    honest.retain(|k| Some(*k) != prev);
    bad.shuffle(rng);
    bad.truncate(room);
    let pad = min.min(room).saturating_sub(bad.len());
    honest.shuffle(rng);
    honest.truncate(pad);
    bad.extend(honest);
    bad
}

/// The most message bytes one cell carries on a tunnel of `hops` hops.
#[must_use]
pub const fn cell_payload(hops: usize) -> usize {
    capacity(hops) - COMMAND_HEADER
}
