//! Premix tunnels around the routing core (`docs/tunnels.md`, issue 16).
//!
//! [`Tunnelled`] sits between the embedder and [`Node`]: with tunnels on,
//! the node's own fetches and inserts never enter routing here; they go
//! through a tunnel of [`TunnelConfig::hops`] hops (built with
//! `lichen_tunnel`) and the exit starts them as its own requests, under
//! every rule the routing core applies to its own requests (no folding,
//! nothing kept in the shared store, the same HTL and pacing). Forwarded
//! traffic never uses tunnels. A request whose tunnel fails is sent again
//! through another tunnel; a request is never sent without a tunnel.
//!
//! The embedder passes messages of the [`Message::Tunnel`] kind here,
//! every other message to the node; it hands each of the node's actions
//! through [`Tunnelled::filter`] (which keeps the completions of requests
//! this node runs as an exit) and sends what [`Tunnelled::poll_action`]
//! returns as well.

use std::collections::{BTreeMap, VecDeque};

use lichen_tunnel::exit::{ExitReply, ExitRequest, Outcome};
use lichen_tunnel::guards::Guards;
use lichen_tunnel::{
    CircuitId, CloseReason, Event, ExitId, Limits, Links, TunnelError, TunnelMsg, Tunnels,
};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

use crate::message::{KeyKind, Message};
use crate::node::{
    Action, InsertOutcome, LocalRequest, Millis, Node, PeerId, RequestId, RequestOutcome, Verifier,
};
use crate::Key;

/// How tunnels are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Hops beyond this node (1–3); 0 sends own requests straight into
    /// routing, as without tunnels.
    pub hops: u8,
    /// Tunnels kept open at once; a download's requests are spread over
    /// them (different exits).
    pub tunnels: usize,
    /// A tunnel takes no new request after this long (ms).
    pub lifetime_ms: u64,
    /// A tunnel takes no new request after this many.
    pub max_requests: u32,
    /// A try not answered by then is given up (ms): the tunnel takes no
    /// new request and the request goes through another tunnel, or fails
    /// after [`TunnelConfig::tries`]. A request waiting that long for a
    /// tunnel fails. Longer than the exit's own request may take (the
    /// node's fetch timeout, 120 s, and a reroute after it) plus the
    /// tunnel, or requests the exit would still answer are cut. Once
    /// [`MIN_TRY_SAMPLES`] tries were answered a try's timeout is learned
    /// from them instead ([`Tunnelled::try_timeout`]), at most this.
    pub request_timeout_ms: u64,
    /// Tunnels a request is tried on before it fails (a busy exit's
    /// refusal is not a try: the request waits for room instead, up to
    /// [`BUSY_MAX`] refusals).
    pub tries: u8,
    /// Requests one tunnel may have running at this node as its exit;
    /// an originator sends no more than this through one tunnel at once.
    pub exit_in_flight: usize,
    /// The fewest eligible peers a hop's list must name for an own
    /// tunnel to be extended through it (`lichen_tunnel::Limits::min_peer_list`,
    /// `docs/tunnels.md`, "Path selection"): 8 on opennet, 0 (none) on a
    /// darknet, set by the link policy.
    pub min_peer_list: usize,
}

/// Answered tries [`Tunnelled::try_timeout`] learns from (the newest).
pub const TRY_SAMPLES: usize = 64;
/// Answered tries seen before a try's timeout is learned rather than
/// [`TunnelConfig::request_timeout_ms`].
pub const MIN_TRY_SAMPLES: usize = 16;
/// The shortest learned try timeout (ms): the exit's own request may
/// meet a silent peer and wait out the routing core's accept timeout
/// (10 s) before it reroutes, more than once.
pub const MIN_TRY_TIMEOUT_MS: Millis = 30_000;

/// How [`Tunnelled::try_timeout`] is learned: 3 × the 95th percentile of
/// the last [`TRY_SAMPLES`] answered tries.
const TRY_RULE: lichen_tunnel::Rule = lichen_tunnel::Rule {
    samples: TRY_SAMPLES,
    min_samples: MIN_TRY_SAMPLES,
    percentile: 95,
    factor: 3,
    min_ms: MIN_TRY_TIMEOUT_MS,
};

/// Busy answers (the exit's in-flight limit, or its node overloaded) a
/// request may get before it fails as overloaded.
pub const BUSY_MAX: u8 = 8;

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            hops: 2,
            tunnels: 4,
            lifetime_ms: 10 * 60_000,
            max_requests: 256,
            request_timeout_ms: 300_000,
            tries: 3,
            exit_in_flight: 32,
            min_peer_list: lichen_tunnel::DEFAULT_MIN_PEER_LIST,
        }
    }
}

/// What the tunnel layer did since it started (for the status page, the
/// simulator's report and the whole-system tests): where requests through
/// tunnels go wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TunnelStats {
    /// Own requests and inserts sent through a tunnel (a retry through
    /// another tunnel counts again).
    pub own_sent: u64,
    /// Own requests and inserts given to routing directly: tunnels off,
    /// or no peer at all (nothing can leave then).
    pub own_direct: u64,
    /// Own tunnels whose building started.
    pub builds: u64,
    /// Own tunnels built (opened).
    pub built: u64,
    /// Own tunnels whose build failed (all reasons below).
    pub build_failed: u64,
    /// A build was wanted but no guard was connected.
    pub no_guard: u64,
    /// Peers that became guards (the first two included): each is one
    /// more peer that has been, or may be, a first hop.
    pub guards_added: u64,
    /// Builds that failed: a hop could not extend.
    pub build_failed_extend: u64,
    /// Builds that failed: a hop tore the tunnel down.
    pub build_failed_destroyed: u64,
    /// Builds that failed: the first hop's link went.
    pub build_failed_peer_gone: u64,
    /// Builds that failed: not built in time.
    pub build_failed_timeout: u64,
    /// Builds that failed: a hop named no peer to extend to.
    pub build_failed_no_path: u64,
    /// Builds that failed: a protocol error.
    pub build_failed_protocol: u64,
    /// Open tunnels that closed while in use (not retired by us).
    pub lost_open: u64,
    /// Own requests and inserts given to the layer for a tunnel.
    pub requests: u64,
    /// Sends after the first (another tunnel).
    pub retries: u64,
    /// Requests in flight on a tunnel that closed.
    pub lost_in_flight: u64,
    /// Tries that got no answer in time.
    pub try_timeouts: u64,
    /// Exit answers: found / inserted / collision.
    pub answered_ok: u64,
    /// Exit answers: not found (HTL ran out).
    pub answered_not_found: u64,
    /// Exit answers: route not found.
    pub answered_route_not_found: u64,
    /// Exit answers: the exit's failure table.
    pub answered_recently_failed: u64,
    /// Exit answers: the exit's own request timed out.
    pub answered_timed_out: u64,
    /// Exit answers: overloaded or refused (the request waits for room).
    pub answered_busy: u64,
    /// Exit answers: a block that does not verify, or nonsense.
    pub answered_bad: u64,
    /// Own requests that ended without success through tunnels (any
    /// outcome but found / stored).
    pub failed: u64,
    /// Of those, ended as timed out: no tunnel for them in time, or
    /// every try lost (no answer, tunnel gone, a bad answer).
    pub failed_timeout: u64,
    /// Of those, refused because a hop's peer list was shorter than
    /// [`TunnelConfig::min_peer_list`].
    #[serde(default)]
    pub short_lists: u64,
    /// Requests run here as the exit of somebody's tunnel.
    pub exit_requests: u64,
    /// As an exit: requests refused (the tunnel's in-flight limit, or
    /// not decodable).
    pub exit_refused: u64,
    /// As an exit: requests whose answer went back.
    pub exit_answered: u64,
    /// As an exit: requests finished after their tunnel had gone.
    pub exit_orphaned: u64,
}

impl TunnelStats {
    /// Every counter with its name.
    #[must_use]
    pub fn pairs(&self) -> [(&'static str, u64); 31] {
        [
            ("own_sent", self.own_sent),
            ("own_direct", self.own_direct),
            ("builds", self.builds),
            ("built", self.built),
            ("build_failed", self.build_failed),
            ("no_guard", self.no_guard),
            ("guards_added", self.guards_added),
            ("build_failed_extend", self.build_failed_extend),
            ("build_failed_destroyed", self.build_failed_destroyed),
            ("build_failed_peer_gone", self.build_failed_peer_gone),
            ("build_failed_timeout", self.build_failed_timeout),
            ("build_failed_no_path", self.build_failed_no_path),
            ("build_failed_protocol", self.build_failed_protocol),
            ("lost_open", self.lost_open),
            ("requests", self.requests),
            ("retries", self.retries),
            ("lost_in_flight", self.lost_in_flight),
            ("try_timeouts", self.try_timeouts),
            ("answered_ok", self.answered_ok),
            ("answered_not_found", self.answered_not_found),
            ("answered_route_not_found", self.answered_route_not_found),
            ("answered_recently_failed", self.answered_recently_failed),
            ("answered_timed_out", self.answered_timed_out),
            ("answered_busy", self.answered_busy),
            ("answered_bad", self.answered_bad),
            ("failed", self.failed),
            ("failed_timeout", self.failed_timeout),
            ("exit_requests", self.exit_requests),
            ("exit_refused", self.exit_refused),
            ("exit_answered", self.exit_answered),
            ("exit_orphaned", self.exit_orphaned),
        ]
    }
}

struct OwnTunnel {
    guard: [u8; 32],
    open: bool,
    started: Millis,
    used: u32,
    in_flight: usize,
    /// Requests it may carry at once: [`TunnelConfig::exit_in_flight`],
    /// lowered when its exit says it is busy.
    room: usize,
    /// It swallowed a request (no answer in time): no new ones.
    stale: bool,
}

struct Waiting {
    id: RequestId,
    req: LocalRequest,
    tries: u8,
    busy: u8,
    /// When it (last) began to wait.
    since: Millis,
}

struct Sent {
    id: RequestId,
    circuit: CircuitId,
    req: LocalRequest,
    tries: u8,
    busy: u8,
    /// When it was sent.
    since: Millis,
}

/// The tunnel layer of one node.
pub struct Tunnelled {
    cfg: TunnelConfig,
    engine: Tunnels<PeerId>,
    guards: Guards,
    keys: BTreeMap<PeerId, [u8; 32]>,
    tunnels: BTreeMap<CircuitId, OwnTunnel>,
    waiting: VecDeque<Waiting>,
    sent: BTreeMap<u32, Sent>,
    next_req: u32,
    /// Node requests started for tunnels ending here; `None` once the
    /// tunnel is gone (the completion is then dropped).
    exits: BTreeMap<RequestId, Option<(ExitId, u32)>>,
    exit_load: BTreeMap<ExitId, usize>,
    actions: VecDeque<Action>,
    /// Builds that failed in a row (reset by one that opens).
    build_failures: u32,
    /// No tunnel is built before then (after a failed build).
    next_build: Millis,
    /// When the last failure was counted.
    failed_at: Millis,
    /// How long answered tries took, for [`Tunnelled::try_timeout`].
    try_times: lichen_tunnel::LearnedTimeout,
    stats: TunnelStats,
}

/// The wait after the first failed build; it doubles with each further
/// failure in a row, up to [`BUILD_BACKOFF_MAX_MS`]. Without it a node
/// whose guards cannot extend (a guard with no other peer) would build
/// again at once, forever: a busy loop here and a flood of `Create`s
/// there.
pub const BUILD_BACKOFF_MS: Millis = 1_000;
/// The longest wait between failed builds.
pub const BUILD_BACKOFF_MAX_MS: Millis = 60_000;

impl std::fmt::Debug for Tunnelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnelled")
            .field("hops", &self.cfg.hops)
            .field("tunnels", &self.tunnels.len())
            .field("waiting", &self.waiting.len())
            .field("sent", &self.sent.len())
            .field("exits", &self.exits.len())
            .finish_non_exhaustive()
    }
}

struct View<'a>(&'a BTreeMap<PeerId, [u8; 32]>);

impl Links<PeerId> for View<'_> {
    fn peer_by_static_key(&self, key: &[u8; 32]) -> Option<PeerId> {
        self.0.iter().find(|(_, k)| *k == key).map(|(p, _)| *p)
    }

    fn extend_candidates(&self) -> Vec<[u8; 32]> {
        self.0.values().copied().collect()
    }
}

fn kind_code(kind: KeyKind) -> u8 {
    match kind {
        KeyKind::Chk => 0,
        KeyKind::Ssk => 1,
    }
}

fn kind_of(code: u8) -> Option<KeyKind> {
    match code {
        0 => Some(KeyKind::Chk),
        1 => Some(KeyKind::Ssk),
        _ => None,
    }
}

impl Tunnelled {
    /// The layer of the node whose static link secret is `secret`.
    #[must_use]
    pub fn new(secret: [u8; 32], cfg: TunnelConfig) -> Self {
        Tunnelled {
            cfg,
            engine: Tunnels::new(
                secret,
                Limits {
                    min_peer_list: cfg.min_peer_list,
                    ..Limits::default()
                },
            ),
            guards: Guards::default(),
            keys: BTreeMap::new(),
            tunnels: BTreeMap::new(),
            waiting: VecDeque::new(),
            sent: BTreeMap::new(),
            next_req: 0,
            exits: BTreeMap::new(),
            exit_load: BTreeMap::new(),
            actions: VecDeque::new(),
            build_failures: 0,
            next_build: 0,
            failed_at: 0,
            try_times: lichen_tunnel::LearnedTimeout::new(TRY_RULE),
            stats: TunnelStats::default(),
        }
    }

    /// Whether own requests go through tunnels.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.cfg.hops > 0
    }

    /// The guards, for saving and status.
    #[must_use]
    pub fn guards(&self) -> &Guards {
        &self.guards
    }

    /// The primary guards (those tunnels start at) linked now: the peers
    /// the node should keep ([`Node::keep_peers`]).
    #[must_use]
    pub fn primary_guards(&self, now: Millis) -> Vec<PeerId> {
        let primary = self.guards.primary(now, &self.connected());
        self.keys
            .iter()
            .filter(|(_, k)| primary.contains(k))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Restore saved guards.
    pub fn set_guards(&mut self, guards: Guards) {
        self.guards = guards;
    }

    /// **Simulator-only adversary knob** (`lichen sim --lying-lists on`):
    /// this node's `Peers` lists name only its peers among `colluders`;
    /// see [`Tunnels::sim_adversary_lying_lists`]. Not reachable from any
    /// node configuration.
    #[doc(hidden)]
    pub fn sim_adversary_lying_lists(&mut self, colluders: std::collections::BTreeSet<[u8; 32]>) {
        self.engine.sim_adversary_lying_lists(colluders);
    }

    /// What the layer did so far.
    #[must_use]
    pub fn stats(&self) -> TunnelStats {
        self.stats
    }

    /// How long a try through a tunnel may go unanswered before it goes
    /// through another (and its tunnel takes no new request): 3 × the
    /// 95th percentile of the last [`TRY_SAMPLES`] answered tries, at
    /// least [`MIN_TRY_TIMEOUT_MS`], at most
    /// [`TunnelConfig::request_timeout_ms`]; that maximum until
    /// [`MIN_TRY_SAMPLES`] tries were answered. A tunnel whose middle or
    /// exit stopped relaying then costs its requests tens of seconds, not
    /// five minutes, and a slow network raises the timeout with its
    /// answers.
    #[must_use]
    pub fn try_timeout(&self) -> Millis {
        self.try_times.timeout(self.cfg.request_timeout_ms)
    }

    /// Own tunnels open or being built.
    #[must_use]
    pub fn tunnel_count(&self) -> usize {
        self.tunnels.len()
    }

    /// The static keys of the peers linked now.
    fn connected(&self) -> Vec<[u8; 32]> {
        self.keys.values().copied().collect()
    }

    /// Whether the peer with static key `key` is one tunnels may use
    /// (named in this node's peer lists, extended to, a guard).
    #[must_use]
    pub fn knows(&self, key: &[u8; 32]) -> bool {
        self.keys.values().any(|k| k == key)
    }

    /// A peer's link is up; `key` is its static key.
    pub fn peer_added(&mut self, peer: PeerId, key: [u8; 32]) {
        self.keys.insert(peer, key);
        self.engine.set_neighbours(self.keys.values().copied());
    }

    /// A peer's link is gone: every tunnel through it ends (what that
    /// means for requests is settled at the next call that has the node).
    pub fn peer_removed(&mut self, peer: PeerId) {
        self.keys.remove(&peer);
        self.engine.set_neighbours(self.keys.values().copied());
        self.engine.peer_gone(peer);
    }

    /// A request of the local client. With tunnels off, or for an
    /// announcement, this is the node's own
    /// [`Node::handle_local_request`]; otherwise it waits for a tunnel.
    /// The result comes as [`Action::RequestDone`] / [`Action::InsertDone`]
    /// from [`Tunnelled::poll_action`].
    pub fn local<R: RngCore, V: Verifier>(
        &mut self,
        now: Millis,
        node: &mut Node<V>,
        req: LocalRequest,
        rng: &mut R,
    ) -> RequestId {
        // With no peer at all nothing can leave this node, tunnel or not:
        // the routing core answers at once (route not found; a fetch may
        // still be answered from the local store) instead of the request
        // waiting out its timeout for a tunnel.
        if !self.enabled() || matches!(req, LocalRequest::Announce) || node.peer_count() == 0 {
            if !matches!(req, LocalRequest::Announce) {
                self.stats.own_direct += 1;
            }
            return node.handle_local_request(now, req, rng);
        }
        if let LocalRequest::Insert { key, kind, block } = &req {
            if !node.verify_block(key, *kind, block) {
                let id = RequestId(rng.gen());
                self.actions.push_back(Action::InsertDone {
                    id,
                    outcome: InsertOutcome::InvalidBlock,
                });
                return id;
            }
        }
        let id = RequestId(rng.gen());
        self.stats.requests += 1;
        self.waiting.push_back(Waiting {
            id,
            req,
            tries: 0,
            busy: 0,
            since: now,
        });
        self.dispatch(now, rng);
        self.process(now, node, rng);
        id
    }

    /// A [`Message::Tunnel`] from `peer`.
    ///
    /// # Errors
    /// The engine's refusal (the caller logs it at debug or counts it
    /// against the peer); the engine has answered where the protocol says.
    pub fn handle<R: RngCore, V: Verifier>(
        &mut self,
        now: Millis,
        node: &mut Node<V>,
        from: PeerId,
        cell: &[u8],
        rng: &mut R,
    ) -> Result<(), TunnelError> {
        let result = TunnelMsg::decode(cell)
            .and_then(|msg| self.engine.handle(now, rng, &View(&self.keys), from, msg));
        self.process(now, node, rng);
        result
    }

    /// One of the node's actions: the completion of a request this node
    /// runs as a tunnel's exit goes back through the tunnel (`None`);
    /// anything else is the embedder's.
    pub fn filter(&mut self, action: Action) -> Option<Action> {
        let (id, outcome) = match &action {
            Action::RequestDone { id, outcome } => (*id, fetch_outcome(outcome)),
            Action::InsertDone { id, outcome } => (*id, insert_outcome(outcome)),
            _ => return Some(action),
        };
        let Some(entry) = self.exits.remove(&id) else {
            return Some(action);
        };
        if let Some((exit, req)) = entry {
            if let Some(load) = self.exit_load.get_mut(&exit) {
                *load = load.saturating_sub(1);
            }
            let reply = ExitReply { req, outcome }.encode();
            if self.engine.exit_send(exit, &reply).is_ok() {
                self.stats.exit_answered += 1;
            } else {
                self.stats.exit_orphaned += 1;
            }
            self.drain_transmit();
        } else {
            self.stats.exit_orphaned += 1;
        }
        None
    }

    /// The next thing for the embedder to do: a message to send, or an
    /// own request's completion.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.drain_transmit();
        self.actions.pop_front()
    }

    /// Periodic work (call every few seconds): expire tunnels and
    /// requests, keep the guards and the pool of tunnels up.
    pub fn tick<R: RngCore, V: Verifier>(&mut self, now: Millis, node: &mut Node<V>, rng: &mut R) {
        self.engine.expire(now);
        let connected = self.connected();
        if self.enabled() {
            self.refresh_guards(now, rng, &connected);
        }
        // Retired tunnels close once their requests are answered.
        let done: Vec<CircuitId> = self
            .tunnels
            .iter()
            .filter(|(_, t)| t.in_flight == 0 && self.retired(now, t))
            .map(|(c, _)| *c)
            .collect();
        for c in done {
            self.tunnels.remove(&c);
            self.engine.close(c);
        }
        self.expire_requests(now);
        self.dispatch(now, rng);
        self.process(now, node, rng);
    }

    /// [`Guards::refresh`], counting the peers that became guards.
    fn refresh_guards<R: RngCore>(&mut self, now: Millis, rng: &mut R, connected: &[[u8; 32]]) {
        let before: Vec<[u8; 32]> = self.guards.list().iter().map(|g| g.key).collect();
        self.guards.refresh(now, rng, connected);
        let added = self
            .guards
            .list()
            .iter()
            .filter(|g| !before.contains(&g.key))
            .count();
        self.stats.guards_added += added as u64;
    }

    fn retired(&self, now: Millis, t: &OwnTunnel) -> bool {
        t.open
            && (t.stale
                || now.saturating_sub(t.started) > self.cfg.lifetime_ms
                || t.used >= self.cfg.max_requests)
    }

    /// Tries unanswered for [`Tunnelled::try_timeout`] go to another
    /// tunnel (theirs takes no new request); requests that waited
    /// [`TunnelConfig::request_timeout_ms`] for a tunnel fail.
    fn expire_requests(&mut self, now: Millis) {
        let timeout = self.cfg.request_timeout_ms;
        let try_timeout = self.try_timeout();
        let late: Vec<u32> = self
            .sent
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.since) > try_timeout)
            .map(|(r, _)| *r)
            .collect();
        for r in late {
            if let Some(s) = self.sent.remove(&r) {
                if let Some(t) = self.tunnels.get_mut(&s.circuit) {
                    t.in_flight = t.in_flight.saturating_sub(1);
                    t.stale = true;
                }
                self.stats.try_timeouts += 1;
                self.retry(now, s, false);
            }
        }
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        while let Some(w) = self.waiting.pop_front() {
            if now.saturating_sub(w.since) > timeout {
                self.stats.failed_timeout += 1;
                self.fail(w.id, &w.req, false);
            } else {
                kept.push_back(w);
            }
        }
        self.waiting = kept;
    }

    /// While requests wait, build tunnels up to the pool size (no more
    /// than there are requests under way: one request does not build four
    /// tunnels), then give waiting requests to open tunnels with room, at
    /// random.
    fn dispatch<R: RngCore>(&mut self, now: Millis, rng: &mut R) {
        if !self.enabled() {
            return;
        }
        let usable = self
            .tunnels
            .values()
            .filter(|t| !self.retired(now, t))
            .count();
        let mut want = self.cfg.tunnels.min(self.waiting.len() + self.sent.len());
        // With no tunnel open, two builds at once, through both primary
        // guards: a first hop or path that does not answer then does not
        // hold up the first request for a build timeout.
        if !self.waiting.is_empty()
            && !self
                .tunnels
                .values()
                .any(|t| t.open && !self.retired(now, t))
        {
            want = want.max(2).min(self.cfg.tunnels);
        }
        if !self.waiting.is_empty() && usable < want && now >= self.next_build {
            let connected = self.connected();
            self.refresh_guards(now, rng, &connected);
            for _ in usable..want {
                self.build(now, rng, &connected);
            }
        }
        let mut open: Vec<CircuitId> = self
            .tunnels
            .iter()
            .filter(|(_, t)| t.open && t.in_flight < t.room && !self.retired(now, t))
            .map(|(c, _)| *c)
            .collect();
        while !open.is_empty() {
            let Some(w) = self.waiting.pop_front() else {
                return;
            };
            let i = rng.gen_range(0..open.len());
            let c = open[i];
            match self.send(now, c, w) {
                Ok(()) => {
                    let full = self
                        .tunnels
                        .get(&c)
                        .is_none_or(|t| t.in_flight >= t.room || self.retired(now, t));
                    if full {
                        open.swap_remove(i);
                    }
                }
                Err(w) => {
                    // That tunnel is gone (its close not yet processed).
                    open.swap_remove(i);
                    self.waiting.push_front(w);
                }
            }
        }
    }

    fn build<R: RngCore>(&mut self, now: Millis, rng: &mut R, connected: &[[u8; 32]]) {
        // A primary guard no other build is under way through, if any.
        let idle: Vec<[u8; 32]> = self
            .guards
            .primary(now, connected)
            .into_iter()
            .filter(|g| !self.tunnels.values().any(|t| !t.open && t.guard == *g))
            .collect();
        let Some(guard) = idle
            .choose(rng)
            .copied()
            .or_else(|| self.guards.pick(now, rng, connected))
        else {
            self.stats.no_guard += 1;
            return;
        };
        let Some(peer) = self
            .keys
            .iter()
            .find(|(_, k)| **k == guard)
            .map(|(p, _)| *p)
        else {
            return;
        };
        if let Ok(c) = self
            .engine
            .build(now, rng, peer, guard, usize::from(self.cfg.hops))
        {
            self.guards.attempted(&guard);
            self.stats.builds += 1;
            self.tunnels.insert(
                c,
                OwnTunnel {
                    guard,
                    open: false,
                    started: now,
                    used: 0,
                    in_flight: 0,
                    room: self.cfg.exit_in_flight.max(1),
                    stale: false,
                },
            );
        }
    }

    /// Send waiting request `w` through `circuit`; the request back if
    /// the tunnel cannot take it.
    fn send(&mut self, now: Millis, circuit: CircuitId, w: Waiting) -> Result<(), Waiting> {
        let mut req = self.next_req;
        while self.sent.contains_key(&req) {
            req = req.wrapping_add(1);
        }
        self.next_req = req.wrapping_add(1);
        let msg = match &w.req {
            LocalRequest::Fetch { key, kind } => ExitRequest::Fetch {
                req,
                kind: kind_code(*kind),
                key: key.0,
            },
            LocalRequest::Insert { key, kind, block } => ExitRequest::Insert {
                req,
                kind: kind_code(*kind),
                key: key.0,
                block: block.clone(),
            },
            LocalRequest::Announce => return Ok(()),
        };
        if self.engine.send(circuit, &msg.encode()).is_err() {
            return Err(w);
        }
        if let Some(t) = self.tunnels.get_mut(&circuit) {
            t.used += 1;
            t.in_flight += 1;
        }
        self.stats.own_sent += 1;
        if w.tries > 0 {
            self.stats.retries += 1;
        }
        self.sent.insert(
            req,
            Sent {
                id: w.id,
                circuit,
                req: w.req,
                tries: w.tries + 1,
                busy: w.busy,
                since: now,
            },
        );
        Ok(())
    }

    /// Drain the engine: its messages become sends, its events move
    /// requests along.
    fn process<R: RngCore, V: Verifier>(&mut self, now: Millis, node: &mut Node<V>, rng: &mut R) {
        for _ in 0..1_000 {
            self.drain_transmit();
            let Some(event) = self.engine.poll_event() else {
                return;
            };
            match event {
                Event::Opened(c) => {
                    if let Some(t) = self.tunnels.get_mut(&c) {
                        t.open = true;
                        self.guards.built(&t.guard);
                        self.build_failures = 0;
                        self.stats.built += 1;
                    }
                    self.dispatch(now, rng);
                }
                Event::Data(c, bytes) => self.on_reply(now, node, c, &bytes, rng),
                Event::Closed(c, why, answered) => {
                    self.count_close(c, why);
                    // The guard's own failure (no answer, a refusal, or
                    // its list named no usable next hop): try another
                    // guard for a while (lichen_tunnel::guards).
                    let first_hop = answered == 0
                        || (answered == 1
                            && matches!(why, CloseReason::NoPath | CloseReason::ShortList));
                    let mut back_off = true;
                    if let Some(t) = self.tunnels.get(&c).filter(|t| !t.open && first_hop) {
                        let guard = t.guard;
                        self.guards.first_hop_failed(now, &guard);
                        // Passing that guard over is the back-off, while
                        // another primary guard is there to build through.
                        let connected = self.connected();
                        back_off = self.guards.primary(now, &connected).is_empty();
                    }
                    // A short list (ShortList) is a failed build like any
                    // other: it counts against the guard's path bias (a
                    // guard whose lists are short more often than not is
                    // replaced) and backs off (docs/tunnels.md).
                    self.tunnel_lost(now, c, back_off, rng);
                }
                Event::ExitData(x, bytes) => self.on_exit_request(now, node, x, &bytes, rng),
                Event::ExitClosed(x) => {
                    self.exit_load.remove(&x);
                    for v in self.exits.values_mut() {
                        if v.is_some_and(|(e, _)| e == x) {
                            *v = None;
                        }
                    }
                }
            }
        }
    }

    fn drain_transmit(&mut self) {
        while let Some((to, msg)) = self.engine.poll_transmit() {
            self.actions.push_back(Action::Send {
                to,
                msg: Message::Tunnel { cell: msg.encode() },
            });
        }
    }

    fn count_close(&mut self, c: CircuitId, why: CloseReason) {
        let Some(t) = self.tunnels.get(&c) else {
            return;
        };
        let s = &mut self.stats;
        let counter = if t.open {
            &mut s.lost_open
        } else {
            s.build_failed += 1;
            match why {
                CloseReason::ExtendFailed => &mut s.build_failed_extend,
                CloseReason::Destroyed => &mut s.build_failed_destroyed,
                CloseReason::PeerGone => &mut s.build_failed_peer_gone,
                CloseReason::Timeout => &mut s.build_failed_timeout,
                CloseReason::NoPath => &mut s.build_failed_no_path,
                CloseReason::Protocol => &mut s.build_failed_protocol,
                CloseReason::ShortList => &mut s.short_lists,
            }
        };
        *counter += 1;
    }

    fn tunnel_lost<R: RngCore>(&mut self, now: Millis, c: CircuitId, back_off: bool, rng: &mut R) {
        let failed = self.tunnels.remove(&c).filter(|t| !t.open);
        // A build that failed: wait before the next. Builds started
        // together (one round) count as one failure.
        if back_off
            && failed.is_some_and(|t| self.build_failures == 0 || t.started > self.failed_at)
        {
            let shift = self.build_failures.min(6);
            self.build_failures = self.build_failures.saturating_add(1);
            self.failed_at = now;
            self.next_build = now + (BUILD_BACKOFF_MS << shift).min(BUILD_BACKOFF_MAX_MS);
        }
        let lost: Vec<u32> = self
            .sent
            .iter()
            .filter(|(_, s)| s.circuit == c)
            .map(|(r, _)| *r)
            .collect();
        for r in lost {
            if let Some(s) = self.sent.remove(&r) {
                self.stats.lost_in_flight += 1;
                self.retry(now, s, false);
            }
        }
        self.dispatch(now, rng);
    }

    /// Send a request again through another tunnel, or fail it after
    /// [`TunnelConfig::tries`]. `busy`: the exit had no room; that is
    /// not a try (the request waits for room), up to [`BUSY_MAX`] times.
    fn retry(&mut self, now: Millis, s: Sent, busy: bool) {
        let (tries, busy_count) = if busy {
            (s.tries.saturating_sub(1), s.busy.saturating_add(1))
        } else {
            (s.tries, s.busy)
        };
        if busy_count >= BUSY_MAX {
            self.fail(s.id, &s.req, true);
        } else if tries >= self.cfg.tries {
            self.stats.failed_timeout += 1;
            self.fail(s.id, &s.req, false);
        } else {
            self.waiting.push_back(Waiting {
                id: s.id,
                req: s.req,
                tries,
                busy: busy_count,
                since: now,
            });
        }
    }

    /// Request `id` ends without an answer: overloaded (`busy`) or timed
    /// out.
    fn fail(&mut self, id: RequestId, req: &LocalRequest, busy: bool) {
        self.stats.failed += 1;
        let action = match req {
            LocalRequest::Insert { .. } => Action::InsertDone {
                id,
                outcome: if busy {
                    InsertOutcome::Overloaded
                } else {
                    InsertOutcome::TimedOut
                },
            },
            _ => Action::RequestDone {
                id,
                outcome: if busy {
                    RequestOutcome::Overloaded
                } else {
                    RequestOutcome::TimedOut
                },
            },
        };
        self.actions.push_back(action);
    }

    fn on_reply<R: RngCore, V: Verifier>(
        &mut self,
        now: Millis,
        node: &Node<V>,
        c: CircuitId,
        bytes: &[u8],
        rng: &mut R,
    ) {
        let reply = ExitReply::decode(bytes);
        let Some(req) = reply.as_ref().ok().map(|r| r.req) else {
            // An exit that speaks nonsense: give up the tunnel.
            self.engine.close(c);
            self.tunnel_lost(now, c, true, rng);
            return;
        };
        // Only an answer through the tunnel the request went by: an exit
        // naming another tunnel's request must not end it.
        if self.sent.get(&req).is_none_or(|s| s.circuit != c) {
            return;
        }
        let Some(s) = self.sent.remove(&req) else {
            return;
        };
        let outcome = reply.map(|r| r.outcome).unwrap_or(Outcome::Refused);
        let busy = matches!(outcome, Outcome::Overloaded | Outcome::Refused);
        if !busy {
            // A refusal comes at once and says nothing of how long the
            // exit's requests take.
            self.try_times.record(now.saturating_sub(s.since));
        }
        let most = self.cfg.exit_in_flight.max(1);
        if let Some(t) = self.tunnels.get_mut(&c) {
            t.in_flight = t.in_flight.saturating_sub(1);
            if busy {
                // No more at once than it has now; none if it refuses
                // with nothing running (it retires).
                t.room = t.in_flight;
                t.stale |= t.in_flight == 0;
            } else {
                t.room = (t.room + 1).min(most);
            }
        }
        self.count_answer(&outcome);
        match completion(node, s.id, &s.req, outcome) {
            Some(action) => {
                let ok = matches!(
                    action,
                    Action::RequestDone {
                        outcome: RequestOutcome::Found(_),
                        ..
                    } | Action::InsertDone {
                        outcome: InsertOutcome::Success
                            | InsertOutcome::RouteNotFound { .. }
                            | InsertOutcome::Collision(_),
                        ..
                    }
                );
                if !ok {
                    self.stats.failed += 1;
                }
                self.actions.push_back(action);
            }
            None => {
                // Busy, refused, or a block that does not verify: another
                // tunnel, another exit.
                self.retry(now, s, busy);
            }
        }
        // The answer made room in its tunnel: requests waiting for room
        // go now, not at the next tick.
        self.dispatch(now, rng);
    }

    fn count_answer(&mut self, outcome: &Outcome) {
        let s = &mut self.stats;
        let counter = match outcome {
            Outcome::Found(_) | Outcome::Inserted | Outcome::Collision(_) => &mut s.answered_ok,
            Outcome::NotFound => &mut s.answered_not_found,
            Outcome::RouteNotFound(_) => &mut s.answered_route_not_found,
            Outcome::RecentlyFailed => &mut s.answered_recently_failed,
            Outcome::TimedOut => &mut s.answered_timed_out,
            Outcome::Overloaded | Outcome::Refused => &mut s.answered_busy,
            Outcome::InvalidBlock => &mut s.answered_bad,
        };
        *counter += 1;
    }

    /// A request arrived through a tunnel that ends here: run it as our
    /// own.
    fn on_exit_request<R: RngCore, V: Verifier>(
        &mut self,
        now: Millis,
        node: &mut Node<V>,
        x: ExitId,
        bytes: &[u8],
        rng: &mut R,
    ) {
        let Ok(request) = ExitRequest::decode(bytes) else {
            self.stats.exit_refused += 1;
            self.engine.exit_close(x);
            return;
        };
        let (req, local) = match request {
            ExitRequest::Fetch { req, kind, key } => (
                req,
                kind_of(kind).map(|kind| LocalRequest::Fetch {
                    key: Key(key),
                    kind,
                }),
            ),
            ExitRequest::Insert {
                req,
                kind,
                key,
                block,
            } => (
                req,
                kind_of(kind).map(|kind| LocalRequest::Insert {
                    key: Key(key),
                    kind,
                    block,
                }),
            ),
        };
        let load = self.exit_load.entry(x).or_insert(0);
        let Some(local) = local.filter(|_| *load < self.cfg.exit_in_flight) else {
            let reply = ExitReply {
                req,
                outcome: Outcome::Refused,
            };
            let _ = self.engine.exit_send(x, &reply.encode());
            self.stats.exit_refused += 1;
            return;
        };
        *load += 1;
        self.stats.exit_requests += 1;
        let id = node.handle_local_request(now, local, rng);
        self.exits.insert(id, Some((x, req)));
    }
}

fn fetch_outcome(o: &RequestOutcome) -> Outcome {
    match o {
        RequestOutcome::Found(b) => Outcome::Found(b.clone()),
        RequestOutcome::NotFound => Outcome::NotFound,
        RequestOutcome::RouteNotFound => Outcome::RouteNotFound(0),
        RequestOutcome::RecentlyFailed => Outcome::RecentlyFailed,
        RequestOutcome::Overloaded => Outcome::Overloaded,
        RequestOutcome::TimedOut => Outcome::TimedOut,
    }
}

fn insert_outcome(o: &InsertOutcome) -> Outcome {
    match o {
        InsertOutcome::Success => Outcome::Inserted,
        InsertOutcome::RouteNotFound { htl } => Outcome::RouteNotFound(*htl),
        InsertOutcome::Collision(b) => Outcome::Collision(b.clone()),
        InsertOutcome::Overloaded => Outcome::Overloaded,
        InsertOutcome::TimedOut => Outcome::TimedOut,
        InsertOutcome::InvalidBlock => Outcome::InvalidBlock,
    }
}

/// The local completion for an exit's outcome; `None` to try again.
fn completion<V: Verifier>(
    node: &Node<V>,
    id: RequestId,
    req: &LocalRequest,
    outcome: Outcome,
) -> Option<Action> {
    match req {
        LocalRequest::Fetch { key, kind } => {
            let outcome = match outcome {
                Outcome::Found(block) if node.verify_block(key, *kind, &block) => {
                    RequestOutcome::Found(block)
                }
                Outcome::NotFound => RequestOutcome::NotFound,
                Outcome::RouteNotFound(_) => RequestOutcome::RouteNotFound,
                Outcome::RecentlyFailed => RequestOutcome::RecentlyFailed,
                Outcome::TimedOut => RequestOutcome::TimedOut,
                _ => return None,
            };
            Some(Action::RequestDone { id, outcome })
        }
        LocalRequest::Insert { key, kind, .. } => {
            let outcome = match outcome {
                Outcome::Inserted => InsertOutcome::Success,
                Outcome::RouteNotFound(htl) => InsertOutcome::RouteNotFound { htl },
                Outcome::Collision(block) if node.verify_block(key, *kind, &block) => {
                    InsertOutcome::Collision(block)
                }
                Outcome::TimedOut => InsertOutcome::TimedOut,
                _ => return None,
            };
            Some(Action::InsertDone { id, outcome })
        }
        LocalRequest::Announce => None,
    }
}
