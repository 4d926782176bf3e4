//! Darknet: location swapping, and the checks on what a swap partner
//! claims (the probe that undoes a Pitch Black attack is in `pitch`).

use rand::{Rng, RngCore};

use super::{Action, Millis, Node, PeerId, SwapState, TimerKind, Upstream, Verifier};
use crate::location::Location;
use crate::message::Message;

impl<V: Verifier> Node<V> {
    fn peer_locations(&self) -> Vec<Location> {
        self.peers.iter().map(|p| p.location).collect()
    }

    pub(super) fn initiate_swap(&mut self, now: Millis, rng: &mut impl RngCore) {
        if self.cfg.location_reset_one_in > 0
            && rng.gen_range(0..self.cfg.location_reset_one_in) == 0
        {
            self.stats.location_resets += 1;
            let loc = Location::random(rng);
            self.set_location(loc);
            return;
        }
        if self.swaps.len() >= self.cfg.max_pending || self.swap_in_flight() {
            return;
        }
        let i = rng.gen_range(0..self.peers.len());
        let peer = self.peers[i].id;
        let id = self.fresh_id(rng);
        let expires = now + self.cfg.swap_timeout;
        self.swaps.insert(
            id,
            SwapState::Initiated {
                peer,
                location: self.location,
                expires,
            },
        );
        self.set_timer(expires, TimerKind::Swap, id);
        let msg = Message::SwapRequest {
            id,
            htl: self.cfg.swap_htl,
            location: self.location,
            peer_locations: self.peer_locations(),
        };
        self.send(peer, msg);
    }

    /// Whether a swap we started is still waiting for its answer. A node
    /// has one at a time and is nobody's partner meanwhile (Hyphanet
    /// locks its location manager the same way): a swap is two nodes
    /// trading locations, and a partner that takes our location while we
    /// take a third node's would leave two nodes at one location and
    /// none at the other; repeated, the locations collapse onto a few.
    fn swap_in_flight(&self) -> bool {
        self.swaps
            .values()
            .any(|s| matches!(s, SwapState::Initiated { .. }))
    }

    /// Pitch Black defences on what a swap partner claims: a real peer set
    /// has distinct locations, none equal to the node's own; and we never
    /// adopt a location (almost) equal to one of our peers' (the attack
    /// works by pushing honest nodes onto a few clustered locations).
    fn plausible(&self, location: Location, peer_locations: &[Location]) -> bool {
        const EPS: u64 = 1 << 40; // ~6e-8 of the circle
        let mut sorted = peer_locations.to_vec();
        sorted.sort_unstable();
        let dup = sorted.windows(2).any(|w| w[0].distance(w[1]) < EPS);
        let self_in = sorted.iter().any(|l| l.distance(location) < EPS);
        !dup && !self_in && !peer_locations.is_empty()
    }

    /// Whether adopting `location` keeps our peers' locations distinct
    /// from ours. One peer exactly there is allowed: it is the swap
    /// partner when the partner is our neighbour, and it moves away.
    fn safe_to_adopt(&self, location: Location) -> bool {
        const EPS: u64 = 1 << 40;
        let exact = self.peers.iter().filter(|p| p.location == location).count();
        let near = self
            .peers
            .iter()
            .filter(|p| p.location != location && p.location.distance(location) < EPS)
            .count();
        exact <= 1 && near == 0
    }

    /// Whether moving from `from` to `to` keeps a node with friends at
    /// `peers` in its neighbourhood: its links, in geometric mean, grow by
    /// at most `Config::swap_max_stretch` (0: no limit). Both sides of a
    /// swap are judged by the partner before it moves (it has both peer
    /// lists); the initiator checks its own side again, on its peer list
    /// as it is when the answer comes, which is what stops a lying partner
    /// from sending it across the circle. Known cost: if the partner is
    /// one of the initiator's friends, its `LocationChanged` can overtake
    /// the answer, and the re-check then refuses an honest swap the
    /// partner has made (two nodes at one location; `docs/anonymity.md`).
    fn fits(&self, from: Location, to: Location, peers: &[Location]) -> bool {
        let k = self.cfg.swap_max_stretch;
        if k <= 0.0 || peers.is_empty() {
            return true;
        }
        let grow = (log_len(to, peers) - log_len(from, peers)) / peers.len() as f64;
        grow <= k.ln()
    }

    fn swap_rate_ok(&mut self, now: Millis, from: PeerId) -> bool {
        let (interval, limit) = (self.cfg.swap_interval, self.cfg.swap_per_peer);
        let Some(p) = self.peer_mut(from) else {
            return false;
        };
        if now.saturating_sub(p.swap_window_start) >= interval {
            p.swap_window_start = now;
            p.swap_count = 0;
        }
        p.swap_count += 1;
        p.swap_count <= limit
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_swap_request(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        htl: u8,
        location: Location,
        peer_locations: Vec<Location>,
        rng: &mut impl RngCore,
    ) {
        if !self.cfg.swapping {
            self.send(from, Message::SwapRejected { id });
            return;
        }
        if !self.swap_rate_ok(now, from) {
            self.stats.swaps_refused += 1;
            self.offence(now, from, rng);
            self.send(from, Message::SwapRejected { id });
            return;
        }
        if self.id_in_use(id)
            || self.swaps.len() >= self.cfg.max_pending
            || !self.plausible(location, &peer_locations)
        {
            self.stats.swaps_refused += 1;
            self.send(from, Message::SwapRejected { id });
            return;
        }
        let htl = htl.min(self.cfg.swap_htl);
        let others: Vec<PeerId> = self
            .peers
            .iter()
            .map(|p| p.id)
            .filter(|&p| p != from)
            .collect();
        if htl > 1 && !others.is_empty() {
            let to = others[rng.gen_range(0..others.len())];
            let expires = now + self.cfg.swap_timeout;
            self.swaps
                .insert(id, SwapState::Relay { from, to, expires });
            self.set_timer(expires, TimerKind::Swap, id);
            self.send(
                to,
                Message::SwapRequest {
                    id,
                    htl: htl - 1,
                    location,
                    peer_locations,
                },
            );
            return;
        }
        // We are the partner, unless our own swap is under way.
        if self.swap_in_flight() {
            self.stats.swaps_refused += 1;
            self.send(from, Message::SwapRejected { id });
            return;
        }
        // Metropolis-Hastings on the product of link lengths: swap when
        // it shortens them, else with probability before/after.
        let mine = self.peer_locations();
        let before = log_len(location, &peer_locations) + log_len(self.location, &mine);
        let after = log_len(self.location, &peer_locations) + log_len(location, &mine);
        let accept = (after <= before || rng.gen::<f64>() < (before - after).exp())
            && location != self.location
            && self.safe_to_adopt(location)
            && self.fits(self.location, location, &mine)
            && self.fits(location, self.location, &peer_locations);
        let old = self.location;
        // Remember the id so a replay cannot make us swap twice.
        self.remember(now, id, Upstream::Peer(from));
        self.send(
            from,
            Message::SwapReply {
                id,
                accepted: accept,
                location: old,
                peer_locations: mine,
            },
        );
        if accept {
            self.stats.swaps += 1;
            self.set_location(location);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_swap_reply(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        accepted: bool,
        location: Location,
        peer_locations: Vec<Location>,
        rng: &mut impl RngCore,
    ) {
        match self.swaps.get(&id) {
            Some(SwapState::Relay { from: up, to, .. }) if *to == from => {
                let up = *up;
                self.swaps.remove(&id);
                self.send(
                    up,
                    Message::SwapReply {
                        id,
                        accepted,
                        location,
                        peer_locations,
                    },
                );
            }
            Some(SwapState::Initiated {
                peer,
                location: then,
                ..
            }) if *peer == from => {
                let then = *then;
                self.swaps.remove(&id);
                // The partner has moved already: refusing now leaves two
                // nodes at our location and none at its old one. So no
                // second-guessing of its peer list here (a neighbour's
                // view of two peers that just swapped holds a duplicate
                // until both `LocationChanged` arrive: refusing on that
                // collapsed the locations of an honest darknet, a third
                // of them lost in 300 s at 300 nodes).
                let mine = self.peer_locations();
                if accepted
                    && then == self.location
                    && !peer_locations.is_empty()
                    && self.safe_to_adopt(location)
                    && self.fits(then, location, &mine)
                {
                    self.stats.swaps += 1;
                    self.set_location(location);
                }
            }
            _ => {
                self.stats.unexpected_replies += 1;
                self.offence(now, from, rng);
            }
        }
    }

    /// The swap walk `id` ended without a partner: pass it back, or forget
    /// our own attempt.
    pub(super) fn on_swap_rejected(&mut self, from: PeerId, id: u64) {
        match self.swaps.get(&id) {
            Some(SwapState::Relay { from: up, to, .. }) if *to == from => {
                let up = *up;
                self.swaps.remove(&id);
                self.send(up, Message::SwapRejected { id });
            }
            Some(SwapState::Initiated { peer, .. }) if *peer == from => {
                self.swaps.remove(&id);
            }
            _ => {
                self.stats.unexpected_replies += 1;
            }
        }
    }

    /// A peer's new location after a swap. Only darknet peers change
    /// location; record it (at most a few entries per peer, removed with
    /// the peer).
    pub(super) fn on_location_changed(
        &mut self,
        now: Millis,
        from: PeerId,
        location: Location,
        rng: &mut impl RngCore,
    ) {
        if self.cfg.swapping {
            self.last_location_change.insert(from, now);
            if let Some(p) = self.peer_mut(from) {
                p.location = location;
            }
        } else {
            self.offence(now, from, rng);
        }
    }

    pub(super) fn set_location(&mut self, location: Location) {
        self.location = location;
        if let Some(me) = self.noderef.as_mut() {
            me.location = location;
        }
        let ids: Vec<PeerId> = self.peers.iter().map(|p| p.id).collect();
        for to in ids {
            self.send(to, Message::LocationChanged { location });
        }
        self.actions.push_back(Action::LocationChanged { location });
    }
}

/// Sum of log link lengths from `at` to each of `peers` (as circle
/// fractions, floored to avoid log 0).
fn log_len(at: Location, peers: &[Location]) -> f64 {
    peers
        .iter()
        .map(|p| Location::distance_f64(at.distance(*p)).max(1e-12).ln())
        .sum()
}
