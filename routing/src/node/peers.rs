//! The peer table: adding and dropping peers, seed clients' admission,
//! offences, backoff, and the per-connection HTL decisions.

use rand::{Rng, RngCore};

use super::{Action, Disconnect, Millis, Node, Peer, PeerId, SeedClient, Upstream, Verifier};
use crate::location::Location;

impl<V: Verifier> Node<V> {
    /// Whether an opennet connection would be taken now (room, or a peer
    /// old enough and unproductive enough to drop, asking at most once per
    /// `fold_min_interval` and dropping at most once per
    /// `replace_interval`).
    pub fn wants_peer(&self, now: Millis) -> bool {
        if self.peers.len() < self.cfg.max_peers {
            return true;
        }
        self.replacement_due(now) && self.drop_due(now) && self.least_useful(now).is_some()
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

    /// Opennet: a connection this node asked for is up (an
    /// [`Action::Connect`] it emitted, or a remembered peer, or a seed
    /// client this node now wants as a peer). With room it is kept; when
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
            let Some(victim) = self.least_useful(now) else {
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
                until: now + self.cfg.seed_client_ttl,
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
    }

    /// Under-connected opennet nodes announce again, backing off
    /// exponentially (up to 32 intervals) while that does not help.
    pub(super) fn maybe_schedule_announce(&mut self, now: Millis) {
        if self.peers.len() >= self.cfg.max_peers / 2 {
            self.announce_backoff = 0;
            return;
        }
        if self.cfg.opennet && self.noderef.is_some() && self.next_announce.is_none() {
            let mult = 1u64 << self.announce_backoff.min(5);
            self.next_announce = Some(now + self.cfg.announce_interval * mult);
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
        self.peers
            .iter()
            .filter(|p| now.saturating_sub(p.connected_at) >= self.cfg.peer_grace)
            .filter(|p| !self.kept.contains(&p.id))
            .min_by_key(|p| (p.last_success, p.id))
            .map(|p| p.id)
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
