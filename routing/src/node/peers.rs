//! The peer table: adding and dropping peers, seed clients' admission,
//! offences, backoff, and the per-connection HTL decisions.

use rand::{Rng, RngCore};

use super::{Action, Disconnect, Millis, Node, Peer, PeerId, SeedClient, Upstream, Verifier};
use crate::location::Location;

/// Re-announcements of an under-connected node that come quickly
/// ([`Node::maybe_schedule_announce`]).
const QUICK_ANNOUNCES: u32 = 7;
/// The first quick re-announcement's wait (ms); each doubles it.
const QUICK_ANNOUNCE: Millis = 1_000;
/// A re-announcement after which the node had more peers than ever in
/// this round sets the backoff back to at most this (the next in 4 s).
pub(super) const QUICK_AFTER_PROGRESS: u32 = 2;
/// Peer tables are sized to the peer limit up to this many.
const EXACT_PEERS: usize = 256;

impl<V: Verifier> Node<V> {
    /// Whether an opennet connection to a node at `location` would be
    /// taken now. With room: yes — unless, with `balance_link_lengths`, the
    /// node has half its peers or more and the newcomer's link-length
    /// class is already as full as an even spread allows
    /// ([`Node::class_has_room`]): the offer then goes on to a node for
    /// which it is a longer link. Full: if a peer may be dropped for it
    /// ([`Node::victim_for`]), asking at most once per `fold_min_interval`
    /// and dropping at most once per `replace_interval`.
    pub fn wants_peer(&self, now: Millis, location: Location) -> bool {
        if self.peers.len() < self.cfg.max_peers {
            return !self.cfg.balance_link_lengths
                || self.peers.len() < self.cfg.max_peers / 2
                || self.nearer_than_neighbours(location)
                || self.class_has_room(location);
        }
        self.replacement_due(now) && self.drop_due(now) && self.victim_for(now, location).is_some()
    }

    /// The link-length classes, as seen for a newcomer at `location`: how
    /// deep they go (the class of the nearest peer or newcomer, which
    /// takes in every shorter link), and how many peers each holds. Class
    /// k holds distances in [2^-(k+1), 2^-k) of the circle (1: the
    /// longest, up to half of it).
    fn link_classes(&self, location: Option<Location>) -> (usize, [u16; 64]) {
        let class = |l: Location| self.location.length_class(l);
        let depth = self
            .peers
            .iter()
            .map(|p| class(p.location))
            .chain(location.map(class))
            .max()
            .unwrap_or(1);
        let mut counts = [0u16; 64];
        for p in &self.peers {
            counts[class(p.location).min(depth)] += 1;
        }
        (depth, counts)
    }

    /// Whether `location` is nearer than our nearest peer on its side of
    /// the circle: a new ring neighbour, which greedy routing needs to end
    /// at the node nearest a key, whatever the classes say.
    fn nearer_than_neighbours(&self, location: Location) -> bool {
        let d = self.ring_offset(location);
        let [cw, ccw] = self.neighbour_offsets();
        if d < 1 << 63 {
            cw.is_none_or(|e| d < e)
        } else {
            ccw.is_none_or(|e| d > e)
        }
    }

    /// Where `location` lies clockwise from us (below 2^63: clockwise side).
    fn ring_offset(&self, location: Location) -> u64 {
        location.0.wrapping_sub(self.location.0)
    }

    /// The ring offsets of our nearest peer on each side (clockwise,
    /// counter-clockwise).
    fn neighbour_offsets(&self) -> [Option<u64>; 2] {
        let offsets = self.peers.iter().map(|p| self.ring_offset(p.location));
        [
            offsets.clone().filter(|&e| e < 1 << 63).min(),
            offsets.filter(|&e| e >= 1 << 63).max(),
        ]
    }

    /// Our nearest peer on each side of the circle (ring neighbours, never
    /// dropped for balance).
    fn neighbours(&self) -> [Option<PeerId>; 2] {
        let offsets = self.neighbour_offsets();
        offsets.map(|o| {
            self.peers
                .iter()
                .find(|p| o == Some(self.ring_offset(p.location)))
                .map(|p| p.id)
        })
    }

    /// The link-length class of `location` within classes `depth` deep.
    fn class_of(&self, location: Location, depth: usize) -> usize {
        self.location.length_class(location).min(depth)
    }

    /// Whether a newcomer at `location` would leave its link-length class
    /// within an even spread of `max_peers` over the classes.
    fn class_has_room(&self, location: Location) -> bool {
        let (depth, counts) = self.link_classes(Some(location));
        let (target, _) = self.share(Spread::Even, depth);
        usize::from(counts[self.class_of(location, depth)]) < target
    }

    /// The peer to drop, the table being full, for a newcomer at
    /// `location`; `None`: the newcomer is not worth one.
    ///
    /// With `balance_link_lengths` (the default), peers are spread evenly
    /// over the link-length classes ([`Node::link_classes`]): the 1/d link
    /// lengths of a navigable small world, where a node has as many links
    /// between 1/4 and 1/2 of the circle as between 1/N and 2/N
    /// (Kleinberg). A newcomer in class a may replace a droppable peer in
    /// class a, or in a class b holding more peers than a (so the sum of
    /// squared class sizes never grows); of those, the most crowded class
    /// goes first, and in it the least useful peer ([`Node::least_useful`]'s
    /// order). Path folding alone offers mostly short links to the nodes
    /// that may fold (those past the first hops of a request, near its
    /// data), and left the grown opennet's links far shorter than 1/d
    /// (docs/simulation.md, "Link lengths").
    ///
    /// Without it: the least useful peer, whatever its length.
    fn victim_for(&self, now: Millis, location: Location) -> Option<PeerId> {
        if !self.cfg.balance_link_lengths {
            return self.least_useful(now);
        }
        let (depth, counts) = self.link_classes(Some(location));
        let a = self.class_of(location, depth);
        let ring = self.neighbours();
        self.droppable(now)
            .filter(|p| !ring.contains(&Some(p.id)))
            .filter(|p| {
                let b = self.class_of(p.location, depth);
                b == a || counts[b] > counts[a]
            })
            .min_by_key(|p| {
                (
                    std::cmp::Reverse(counts[self.class_of(p.location, depth)]),
                    p.last_success,
                    p.id,
                )
            })
            .map(|p| p.id)
    }

    /// The link-length refresh (opennet, `balance_link_lengths`,
    /// `refresh_interval`): path folding offers the nodes that may fold
    /// mostly short links, and announcements at joining give a node the
    /// lengths its own announcement's path happened to cross; neither
    /// fills every class. So, about every `refresh_interval` (doubling up
    /// to 32 times while no new peer comes), a node with half its peers or
    /// more that has a class with fewer peers than an even spread gives
    /// (the deepest, its own neighbourhood, aside) announces itself toward
    /// a random location at that class's distance, on a random side: the
    /// nodes there, for whom it is a link of the same class, dial it if
    /// they want one ([`Node::wants_peer`]). Kademlia refreshes a sparse
    /// bucket by looking up an id in its range the same way. The
    /// announcement is an ordinary one: it carries our noderef, which
    /// every announcement and fold offer of an opennet node hands out.
    pub(super) fn link_refresh(&mut self, now: Millis, rng: &mut impl RngCore) {
        if !self.refreshing() {
            return;
        }
        let Some(due) = self.next_refresh else {
            self.schedule_refresh(now, rng);
            return;
        };
        if due > now {
            return;
        }
        let every = self
            .cfg
            .refresh_interval
            .saturating_mul(1 << self.refresh_backoff.min(5));
        self.next_refresh = Some(now + every / 2 + rng.gen_range(0..every));
        if self.noderef.is_none() || self.peers.len() < self.cfg.max_peers / 2 || self.announcing()
        {
            return;
        }
        let Some(target) = self.sparse_class_target(Spread::Reachable, rng) else {
            self.refresh_backoff = 0;
            return;
        };
        self.refresh_backoff += 1;
        self.stats.link_refreshes += 1;
        let id = self.fresh_id(rng);
        self.announce_through(now, id, None, Some(target), rng);
    }

    /// A location at a random distance in one of our sparsest link-length
    /// classes (fewer peers than `spread` asks of it), on a random side;
    /// None when no class is sparse.
    pub(super) fn sparse_class_target(
        &self,
        spread: Spread,
        rng: &mut impl RngCore,
    ) -> Option<Location> {
        let (depth, counts) = self.link_classes(None);
        let (even, top) = self.share(spread, depth);
        let sparse: Vec<usize> = (1..top)
            .filter(|&c| usize::from(counts[c]) < even)
            .collect();
        let fewest = sparse.iter().map(|&c| counts[c]).min();
        let sparsest: Vec<usize> = sparse
            .into_iter()
            .filter(|&c| Some(counts[c]) == fewest)
            .collect();
        let &class = sparsest.get(rng.gen_range(0..sparsest.len().max(1)))?;
        // Distances in [2^-(class+1), 2^-class) of the circle (2^64).
        let low = 1u64 << (63 - class);
        let d = low + rng.gen_range(0..low);
        Some(Location(if rng.gen::<bool>() {
            self.location.0.wrapping_add(d)
        } else {
            self.location.0.wrapping_sub(d)
        }))
    }

    /// Whether a peer at `location` would go to a class holding fewer
    /// peers than [`Spread::Reachable`] asks.
    fn fills_sparse_class(&self, location: Location) -> bool {
        let (depth, counts) = self.link_classes(Some(location));
        let (even, top) = self.share(Spread::Reachable, depth);
        let class = self.class_of(location, depth);
        class < top && usize::from(counts[class]) < even
    }

    /// What `spread` asks of a table whose classes go `depth` deep: the
    /// peers each class should hold, and the classes it asks it of
    /// (`1..top`; the deepest, our own neighbourhood, never; for
    /// [`Spread::Reachable`] not the [`REFRESH_SKIPS`] next to it either).
    fn share(&self, spread: Spread, depth: usize) -> (usize, usize) {
        match spread {
            Spread::Even => (self.cfg.max_peers.div_ceil(depth), depth),
            Spread::Reachable => (
                (self.cfg.max_peers / depth).max(1),
                depth.saturating_sub(REFRESH_SKIPS).max(1),
            ),
        }
    }

    /// Whether this node runs the link-length refresh at all.
    fn refreshing(&self) -> bool {
        self.cfg.opennet && self.cfg.balance_link_lengths && self.cfg.refresh_interval > 0
    }

    /// Set the first link-length refresh (about `refresh_interval` from
    /// now) if none is set; [`Node::poll_timeout`] names it.
    fn schedule_refresh(&mut self, now: Millis, rng: &mut impl RngCore) {
        let every = self.cfg.refresh_interval;
        if self.refreshing() && self.next_refresh.is_none() {
            self.next_refresh = Some(now + every / 2 + rng.gen_range(0..every));
        }
    }

    /// Whether `fold_min_interval` has passed since a peer was last taken
    /// on opennet (the rate at which a full node asks for new peers).
    fn replacement_due(&self, now: Millis) -> bool {
        self.last_fold_accept
            .is_none_or(|t| now.saturating_sub(t) >= self.cfg.fold_min_interval)
    }

    /// Whether `replace_interval` has passed since an established peer
    /// was last dropped to make room: the rate at which a full node
    /// replaces peers, however many connections it asked for or accepted
    /// meanwhile (several asked for while there was room must not each
    /// push out a peer once the room is gone).
    fn drop_due(&self, now: Millis) -> bool {
        self.last_replacement
            .is_none_or(|t| now.saturating_sub(t) >= self.cfg.replace_interval)
    }

    /// Opennet: hand out an invitation. Called wherever this node gives
    /// its own noderef away (its announcement, a fold offer it makes or
    /// rewrites to its own): a node that then dials us, which we did not
    /// dial, is kept as a peer only by spending one
    /// ([`Node::accept_opennet_peer`]). Invitations expire after
    /// `invite_ttl`; at most `max_peers` are open.
    pub(super) fn invite(&mut self, now: Millis, n: usize) {
        self.expire_invitations(now);
        for _ in 0..n {
            if self.invitations.len() >= self.cfg.max_peers {
                break;
            }
            self.invitations.push_back(now + self.cfg.invite_ttl);
        }
    }

    fn expire_invitations(&mut self, now: Millis) {
        while self.invitations.front().is_some_and(|t| *t <= now) {
            self.invitations.pop_front();
        }
    }

    /// Open invitations (see [`Node::accept_opennet_peer`]).
    pub fn invitations(&mut self, now: Millis) -> usize {
        self.expire_invitations(now);
        self.invitations.len()
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
        // A new peer in a class short of peers: the link-length refresh
        // may speed up again (with a first peer, it starts). Any new peer
        // did that once, and the refresh never slowed down: most nodes
        // have a class near their own location that the few nodes in it
        // will not fill, and some other peer came every few minutes.
        if self.fills_sparse_class(location) {
            self.refresh_backoff = 0;
        }
        self.schedule_refresh(now, rng);
        // Room for the peer limit at once, not doubled past it (the
        // simulator holds a peer table per node); a limit past
        // `EXACT_PEERS` (a darknet without one) grows as usual.
        let limit = self.cfg.max_peers.min(EXACT_PEERS);
        if self.peers.len() == self.peers.capacity() && self.peers.len() < limit {
            self.peers.reserve_exact(limit - self.peers.len());
        }
        self.peers.push(Peer {
            id: peer,
            location,
            dec_at_max: rng.gen_bool(0.5),
            dec_at_min: rng.gen_bool(0.25),
            backoff_until: 0,
            backoff_len: 0,
            incoming: 0,
            answer_budget: u64::from(self.cfg.answer_burst) * 1000,
            answer_refill: now,
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
        self.pitch_arm(now, rng);
    }

    /// Opennet: a connection the other side dialed, which this node did
    /// not ask for, is up. It is kept only if this node invited it (an
    /// open invitation from its announcement or a fold offer is spent,
    /// see [`Node::invite`]): an unknown dialer gets at most a seed-client
    /// slot ([`Node::accept_seed_client`]). Invited, it is kept as
    /// [`Node::accept_requested_peer`] keeps a connection, and when full
    /// also only if a peer may be taken now ([`Node::wants_peer`]).
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
        self.expire_invitations(now);
        if self.invitations.is_empty() {
            return false;
        }
        let full = self.peers.len() >= self.cfg.max_peers;
        if full && !self.replacement_due(now) {
            return false;
        }
        let kept = self.accept_requested_peer(now, peer, location, rng);
        if kept {
            self.invitations.pop_front();
            if full {
                self.last_fold_accept = Some(now);
            }
        }
        kept
    }

    /// Opennet: a node this node once asked for (one its embedder
    /// remembers) dialed it again, uninvited: kept while there is room,
    /// never by dropping another peer. (Taken as asked for, it could drop
    /// a peer each `replace_interval`: a node let in once could leave
    /// and come back at will, pushing out a peer each time — measured as
    /// the simulator's `eclipse-return` attack.) When full, the embedder
    /// may still keep it as [`Node::accept_opennet_peer`] keeps any
    /// dialer, on an invitation.
    pub fn accept_remembered_peer(
        &mut self,
        now: Millis,
        peer: PeerId,
        location: Location,
        rng: &mut impl RngCore,
    ) -> bool {
        let known = self.peers.iter().any(|p| p.id == peer);
        if !known && self.peers.len() >= self.cfg.max_peers {
            return false;
        }
        // With room, kept as one asked for is (nobody dropped).
        self.accept_requested_peer(now, peer, location, rng)
    }

    /// Opennet: a connection this node asked for is up (an
    /// [`Action::Connect`] it emitted, or a seed client this node now
    /// wants as a peer). With room it is kept; when
    /// full, the least useful peer is dropped to make room, at most once
    /// per `replace_interval` however many connections were asked for;
    /// otherwise it is refused. The once-per-`fold_min_interval` limit on
    /// *asking* ([`Node::wants_peer`]) is not applied again: it was
    /// applied when the node asked.
    pub fn accept_requested_peer(
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
            if !self.drop_due(now) {
                return false;
            }
            let Some(victim) = self.victim_for(now, location) else {
                return false;
            };
            self.last_replacement = Some(now);
            self.stats.dropped_least_useful += 1;
            self.disconnect(now, victim, Disconnect::LeastUseful, rng);
        }
        self.seed_clients.remove(&peer);
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
                until: now + self.cfg.seed_client_ttl.min(self.cfg.seed_client_silent),
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
        self.prune_timers();
    }

    /// This node's noderef changed (its public address learned): while
    /// under-connected, announce again at once (at the next timeout),
    /// carrying the new one; the backoff starts over.
    pub fn announce_soon(&mut self, now: Millis) {
        if self.cfg.opennet && self.noderef.is_some() && self.peers.len() < self.cfg.max_peers / 2 {
            self.announce_backoff = 0;
            self.announced_with = 0;
            self.next_announce = Some(now);
        }
    }

    /// Under-connected opennet nodes announce again, backing off
    /// exponentially while that does not help: first [`QUICK_ANNOUNCES`]
    /// times quickly (1, 2, 4, 8, 16 s: a newcomer's first announcement
    /// meets few nodes that want it), then every `announce_interval`,
    /// doubling up to 32 of them. A re-announcement that left the node
    /// with more peers than before in this round keeps the wait at 4 s
    /// or less ([`QUICK_AFTER_PROGRESS`]): a joiner that is gaining peers
    /// goes on at the quick pace until it has half its limit.
    pub(super) fn maybe_schedule_announce(&mut self, now: Millis) {
        if self.peers.len() >= self.cfg.max_peers / 2 {
            self.announce_backoff = 0;
            self.announced_with = 0;
            return;
        }
        if self.cfg.opennet && self.noderef.is_some() && self.next_announce.is_none() {
            self.announced_with = self.announced_with.max(self.peers.len());
            let b = self.announce_backoff;
            let wait = if b < QUICK_ANNOUNCES {
                (QUICK_ANNOUNCE << b).min(self.cfg.announce_interval)
            } else {
                self.cfg.announce_interval * (1u64 << (b - QUICK_ANNOUNCES).min(5))
            };
            self.next_announce = Some(now + wait);
        }
    }

    pub(super) fn disconnect(
        &mut self,
        now: Millis,
        peer: PeerId,
        why: Disconnect,
        rng: &mut impl RngCore,
    ) {
        self.remove_peer(now, peer, rng);
        self.actions.push_back(Action::Disconnect { peer, why });
    }

    /// The peer that has gone longest without delivering data (a verified
    /// `DataFound`, see [`Node::peer_delivered`]), among those past their
    /// grace period. Answers that cost nothing to fake (`DataNotFound`,
    /// `InsertReply`) and data we sent it do not count, so a black hole
    /// that answers everything at once still becomes the least useful.
    /// Peers kept by [`Node::keep_peers`] are never chosen.
    fn least_useful(&self, now: Millis) -> Option<PeerId> {
        self.droppable(now)
            .min_by_key(|p| (p.last_success, p.id))
            .map(|p| p.id)
    }

    /// Peers past their grace period and not kept by [`Node::keep_peers`].
    fn droppable(&self, now: Millis) -> impl Iterator<Item = &Peer> {
        self.peers
            .iter()
            .filter(move |p| now.saturating_sub(p.connected_at) >= self.cfg.peer_grace)
            .filter(|p| !self.kept.contains(&p.id))
    }

    pub(super) fn offence(&mut self, now: Millis, peer: PeerId, rng: &mut impl RngCore) {
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

    pub(super) fn backoff(&mut self, now: Millis, peer: PeerId, rng: &mut impl RngCore) {
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

    /// Whether `peer` has an immediate answer left in its budget (refilled
    /// at `answer_rate` per second up to `answer_burst`).
    pub(super) fn answer_budget_left(&mut self, now: Millis, peer: PeerId) -> bool {
        let (rate, cap) = (
            u64::from(self.cfg.answer_rate),
            u64::from(self.cfg.answer_burst) * 1000,
        );
        let Some(p) = self.peer_mut(peer) else {
            return true;
        };
        let elapsed = now.saturating_sub(p.answer_refill);
        p.answer_refill = p.answer_refill.max(now);
        p.answer_budget = p
            .answer_budget
            .saturating_add(elapsed.saturating_mul(rate))
            .min(cap);
        p.answer_budget >= 1000
    }

    /// Charge an immediate answer to `peer`'s budget.
    pub(super) fn spend_answer(&mut self, peer: PeerId) {
        if let Some(p) = self.peer_mut(peer) {
            p.answer_budget = p.answer_budget.saturating_sub(1000);
        }
    }

    /// `peer` delivered data (a verified block): it is useful, and its
    /// backoff ends.
    pub(super) fn peer_delivered(&mut self, now: Millis, peer: PeerId) {
        if let Some(p) = self.peer_mut(peer) {
            p.last_success = now;
            p.backoff_len = 0;
        }
    }

    /// `peer` answered as it should (not overloaded): its backoff ends,
    /// but it has delivered nothing, so it is not more useful.
    pub(super) fn peer_answered(&mut self, peer: PeerId) {
        if let Some(p) = self.peer_mut(peer) {
            p.backoff_len = 0;
        }
    }

    /// HTL after arriving from `from` (`None`: local, no decrement, so the
    /// originator sends the maximum exactly like a forwarder that kept it).
    pub(super) fn decrement(&self, htl: u8, from: Option<PeerId>) -> u8 {
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

    pub(super) fn clamp_htl(
        &mut self,
        now: Millis,
        htl: u8,
        from: PeerId,
        rng: &mut impl RngCore,
    ) -> u8 {
        if htl == 0 || htl > self.cfg.max_htl {
            self.stats.bad_htl += 1;
            self.offence(now, from, rng);
            htl.clamp(1, self.cfg.max_htl)
        } else {
            htl
        }
    }
}

/// How many peers a link-length class should hold before it stops being
/// a target ([`Node::sparse_class_target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spread {
    /// An even spread rounded up: what a node short of peers looks for.
    Even,
    /// An even spread rounded down (at least one): what a full table can
    /// hold in every class at once. Rounded up, `max_peers` peers over
    /// more classes than half of it (20 peers, 11 classes and more: every
    /// network past a few thousand nodes) can never fill every class to
    /// it, so the refresh announced every `refresh_interval` forever and
    /// each new peer it brought dropped another: in the simulator, at
    /// 10,000 nodes, 31 refreshes and 27 dropped peers per node per hour.
    /// Nor is it asked of the [`REFRESH_SKIPS`] classes next to our own
    /// neighbourhood (see there).
    Reachable,
}

/// The link-length classes next to our own neighbourhood that the refresh
/// leaves alone. The deepest class, `depth`, is where our nearest peer is,
/// about 1/N of the circle away, so class `c` holds about `2^(depth - c)`
/// nodes: the refresh aims only at classes of some 64 nodes and more. The
/// deeper ones hold too few for an announcement to find one that wants
/// us (full nodes park or refuse the dialers and the refresh backs off and
/// comes again); requests reach them through the ring neighbours, and
/// path folding fills them. Refreshing toward them brought short links
/// that pushed long ones out. In the simulator (seed 1), leaving 2, 3, 4,
/// 5, 6 and 7 classes alone gave 4.78, 4.74, 4.71, 4.69, 4.71 and 4.73
/// hops a request at 10,000 nodes for 10.0, 9.3, 8.7, 8.2, 7.9 and 7.5
/// million events; at 30,000 nodes 2 / 4 / 5 gave 5.77 / 5.65 / 5.64 hops
/// for 40.0 / 34.3 / 31.9 million (docs/simulation.md, "Seventh pass").
pub(super) const REFRESH_SKIPS: usize = 5;
