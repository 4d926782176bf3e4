//! Opennet: announcements (including seed clients') and path folding.

use rand::{Rng, RngCore};

use super::{Action, Disconnect, Millis, Node, PeerId, Pending, TimerKind, Upstream, Verifier};
use crate::location::{Key, Location};
use crate::message::{KeyKind, Message, NodeRef};

/// Fold offers taken and waiting for their delay, at most.
const MAX_FOLDS: usize = 16;

/// The HTL a link-length refresh (an announcement toward a target, not
/// toward our own location) starts with.
const REFRESH_HTL: u8 = 8;

/// Announcements one peer may pass us per second.
const ANNOUNCE_BURST: u32 = 20;

/// A seed client is disconnected this long after its announcement is
/// answered (time for the reply to leave).
const SEED_CLIENT_LINGER: Millis = 2_000;

/// An announcement's newcomer, as the announcement reaches a node.
#[derive(Debug)]
pub(super) struct Newcomer {
    pub(super) noderef: NodeRef,
    /// Behind NAT: nodes that want it offer themselves instead of dialing.
    pub(super) unreachable: bool,
    /// How many more nodes may take it (`Message::Announce::room`).
    pub(super) room: Option<u8>,
}

impl Newcomer {
    /// A node on the way took the newcomer: one fewer after it may.
    fn took_one(&mut self) {
        self.room = self.room.map(|r| r.saturating_sub(1));
    }
}

impl<V: Verifier> Node<V> {
    pub(super) fn announce_done(&mut self, now: Millis, id: u64) {
        let Some(p) = self.take_pending(id) else {
            return;
        };
        self.release(p.upstream);
        if let Upstream::Peer(u) = p.upstream {
            self.announce_replied(now, u, id);
        }
    }

    /// Send `AnnounceReply`; a seed client has had what it came for and
    /// goes shortly after.
    fn announce_replied(&mut self, now: Millis, to: PeerId, id: u64) {
        self.send(to, Message::AnnounceReply { id });
        if let Some(c) = self.seed_clients.get_mut(&to) {
            c.until = c.until.min(now + SEED_CLIENT_LINGER);
        }
    }

    /// A message from a seed client: its first `Announce` is routed,
    /// anything else it asks for is refused as overload, the rest ignored.
    pub(super) fn on_seed_client_message(
        &mut self,
        now: Millis,
        from: PeerId,
        msg: Message,
        rng: &mut impl RngCore,
    ) {
        let ok = self.within_limits(&msg);
        match msg {
            Message::Announce {
                id,
                htl,
                noderef,
                target,
                unreachable,
                room,
            } => {
                let ttl = self.cfg.seed_client_ttl;
                let first = self.seed_clients.get_mut(&from).is_some_and(|c| {
                    if c.announced {
                        return false;
                    }
                    // Its one announcement: the time to see it answered
                    // (it was kept only `seed_client_silent` for it).
                    c.announced = true;
                    c.until = c.until.max(now + ttl);
                    true
                });
                let htl = self.clamp_htl(now, htl, from, rng);
                if self.admit(now, from, id, !(first && ok)) {
                    // We want a peer near there: the seed client is one we
                    // would dial, and it is here (see `promote`). Its link
                    // to us is one it counted already (it announces through
                    // us, linked), so its `room` stays as it came.
                    let newcomer = Newcomer {
                        noderef,
                        unreachable,
                        room,
                    };
                    if self.would_take(now, &newcomer.noderef) {
                        self.promote(now, from, newcomer.noderef.location, rng);
                    }
                    self.forward_announce(now, from, id, htl, newcomer, target, rng);
                }
            }
            Message::Request { id, .. } | Message::Insert { id, .. } => {
                self.stats.overload_rejected += 1;
                self.send(from, Message::RejectedOverload { id });
            }
            _ => self.stats.unknown_peer += 1,
        }
    }

    /// Seed client `peer` announced while this node wants a peer near
    /// there: instead of dialing it ([`Node::connect_if_wanted`]), which
    /// would make a second link to it, keep the link it has as a peer,
    /// under the rules of a connection we asked for
    /// ([`Node::accept_requested_peer`]; when full, at most one drop per
    /// `replace_interval`). This is how a node with room (a seed early on)
    /// still takes newcomers, now that a node that dials in unasked is at
    /// most a seed client: the same decision the node makes for any
    /// announcement it routes, no more.
    fn promote(&mut self, now: Millis, peer: PeerId, location: Location, rng: &mut impl RngCore) {
        self.last_fold_accept = Some(now);
        if self.accept_requested_peer(now, peer, location, rng) {
            self.stats.seed_clients_promoted += 1;
        }
    }

    /// Disconnect seed clients whose time is up.
    pub(super) fn expire_seed_clients(&mut self, now: Millis, rng: &mut impl RngCore) {
        let due: Vec<PeerId> = self
            .seed_clients
            .iter()
            .filter(|(_, c)| c.until <= now)
            .map(|(id, _)| *id)
            .collect();
        for peer in due {
            self.disconnect(now, peer, Disconnect::SeedClientDone, rng);
        }
    }

    pub(super) fn announce(&mut self, now: Millis, id: u64, rng: &mut impl RngCore) {
        self.announce_through(now, id, None, None, rng);
    }

    /// Announce with `peer` as the first hop (a seed just linked), not the
    /// peer nearest our location: as Freenet announces through each of its
    /// seed nodes, so one seed that swallows announcements (answers at
    /// once, forwards nothing) cannot keep a newcomer without peers until
    /// the next announcement, a minute or more later. Nothing happens when
    /// `peer` is not a peer or there is nothing to announce.
    pub fn announce_via(&mut self, now: Millis, peer: PeerId, rng: &mut impl RngCore) {
        if !self.cfg.opennet || !self.peers.iter().any(|p| p.id == peer) {
            return;
        }
        self.expire(now);
        let id = self.fresh_id(rng);
        self.announce_through(now, id, Some(peer), None, rng);
        // Under-connected, the next one comes soon.
        self.maybe_schedule_announce(now);
    }

    /// Whether an announcement of ours is on its way (not answered yet).
    #[must_use]
    pub fn announcing(&self) -> bool {
        self.pending
            .values()
            .any(|p| p.announce.is_some() && p.upstream == Upstream::Local)
    }

    /// Announce ourselves toward `target` (default: our own location),
    /// first through `via` (default: the peer nearest the target).
    pub(super) fn announce_through(
        &mut self,
        now: Millis,
        id: u64,
        via: Option<PeerId>,
        target: Option<Location>,
        rng: &mut impl RngCore,
    ) {
        let Some(me) = self.noderef.clone() else {
            return;
        };
        if self.pending.len() >= self.cfg.max_pending {
            return;
        }
        // The nodes on its path that want a peer will dial us: as many as
        // we invite, and no more (`Message::Announce::room`).
        let room = self.cfg.max_peers.saturating_sub(self.peers.len()).max(1);
        self.invite(now, room);
        self.remember(now, id, Upstream::Local);
        self.pending.insert(
            id,
            Box::new(Pending {
                key: target.unwrap_or(me.location).as_key(),
                announce: Some(me),
                announce_unreachable: self.behind_nat,
                announce_room: Some(u8::try_from(room).unwrap_or(u8::MAX)),
                ..Pending::new(
                    Key([0; 32]),
                    KeyKind::Chk,
                    // A link-length refresh needs to reach its target's
                    // neighbourhood, not to tour it (`REFRESH_HTL`).
                    if target.is_some() {
                        REFRESH_HTL.min(self.cfg.max_htl)
                    } else {
                        self.cfg.max_htl
                    },
                    Upstream::Local,
                )
            }),
        );
        if let Some(via) = via {
            // Every other peer counts as tried: the first hop is `via`
            // (and when it fails, the announcement ends there).
            let others: Vec<PeerId> = self
                .peers
                .iter()
                .map(|p| p.id)
                .filter(|&p| p != via)
                .collect();
            if let Some(p) = self.pending.get_mut(&id) {
                p.tried.extend(others);
            }
        }
        self.route(now, id, rng);
    }

    /// An announcement is routed like an insert (greedy, backtracking,
    /// until the HTL runs out); every node on the way that wants a peer
    /// connects to the newcomer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_announce(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        htl: u8,
        newcomer: Newcomer,
        target: Option<Location>,
        rng: &mut impl RngCore,
    ) {
        let htl = self.clamp_htl(now, htl, from, rng);
        // At most ANNOUNCE_BURST announcements per second per peer; more
        // are refused as overload (relays legitimately pass many).
        let burst = match self.peer_mut(from) {
            Some(p) => {
                if now.saturating_sub(p.last_announce) >= 1000 {
                    p.last_announce = now;
                    p.announce_count = 0;
                }
                p.announce_count += 1;
                p.announce_count > ANNOUNCE_BURST
            }
            None => return,
        };
        if !self.cfg.opennet {
            self.send(from, Message::RouteNotFound { id, htl: 0 });
            return;
        }
        if !self.admit(now, from, id, burst) {
            return;
        }
        self.forward_announce(now, from, id, htl, newcomer, target, rng);
    }

    /// Whether a connection to the node `noderef` names would be taken
    /// now: neither us nor a peer already, and we want a peer.
    fn would_take(&self, now: Millis, noderef: &NodeRef) -> bool {
        let own = self
            .noderef
            .as_ref()
            .is_some_and(|m| m.address == noderef.address);
        let connected = self.peers.iter().any(|p| p.location == noderef.location);
        !own && !connected && self.wants_peer(now, noderef.location)
    }

    /// Ask for a connection to the node `noderef` names ([`Action::Connect`])
    /// if [`Node::would_take`] it. Returns whether we asked.
    fn connect_if_wanted(&mut self, now: Millis, noderef: &NodeRef) -> bool {
        let take = self.would_take(now, noderef);
        if take {
            self.last_fold_accept = Some(now);
            self.actions.push_back(Action::Connect {
                noderef: noderef.clone(),
            });
        }
        take
    }

    /// Whether the newcomer's announcement leaves room for one more node
    /// to take it (`Message::Announce::room`). When it leaves none and we
    /// would take the newcomer, we do not (it would refuse us), but we
    /// wait as if we had (`fold_min_interval`, when full) before taking
    /// another. Without that wait the nodes that used to dial and be
    /// refused stayed open to the next offer, and the attackers of the
    /// eclipse attack, who offer themselves to their victim every few
    /// seconds, took 15 % more of its peers.
    fn room_left(&mut self, now: Millis, newcomer: &Newcomer) -> bool {
        if newcomer.room != Some(0) {
            return true;
        }
        if self.would_take(now, &newcomer.noderef) {
            self.last_fold_accept = Some(now);
        }
        false
    }

    /// The newcomer of announcement `id` (from `from`) is behind NAT: if
    /// we want it as a peer, ask it to dial us ([`Message::AnnounceOffer`]
    /// back along the path; its dial is then invited). From behind NAT
    /// ourselves it could not dial us either: only when the embedder
    /// punches, we start dialing it from our listening port at once
    /// ([`Action::Punch`], as initiator) and mark the offer `punch`, so
    /// it dials us back the same way.
    /// Returns whether we offered.
    fn offer_if_wanted(&mut self, now: Millis, from: PeerId, id: u64, noderef: &NodeRef) -> bool {
        let punch = self.behind_nat;
        if (punch && !self.punching) || !self.would_take(now, noderef) {
            return false;
        }
        let Some(me) = self.noderef.clone() else {
            return false;
        };
        self.last_fold_accept = Some(now);
        if punch {
            self.actions.push_back(Action::Punch {
                noderef: noderef.clone(),
                initiator: true,
            });
        } else {
            self.invite(now, 1);
        }
        self.send(
            from,
            Message::AnnounceOffer {
                id,
                noderef: me,
                punch,
            },
        );
        true
    }

    /// An `AnnounceOffer` for announcement `id` from `from`: passed
    /// upstream if `from` is a peer we routed it to (at most `max_htl` of
    /// them per announcement); ours: dial the node if we still want it
    /// (`punch`: punch toward it, answering, when the embedder can).
    /// Any other is ignored (counted as unexpected).
    pub(super) fn on_announce_offer(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        noderef: NodeRef,
        punch: bool,
    ) {
        let max = self.cfg.max_htl;
        let Some(p) = self
            .pending
            .get_mut(&id)
            .filter(|p| p.announce.is_some() && p.tried.contains(&from) && p.offers < max)
        else {
            self.stats.unexpected_replies += 1;
            return;
        };
        p.offers += 1;
        match p.upstream {
            Upstream::Peer(u) => {
                let up = p.reply_id.unwrap_or(id);
                self.send(
                    u,
                    Message::AnnounceOffer {
                        id: up,
                        noderef,
                        punch,
                    },
                );
            }
            Upstream::Local if punch => {
                if self.punching && self.would_take(now, &noderef) {
                    self.last_fold_accept = Some(now);
                    // Its link comes in as an answer to our punch: invited.
                    self.invite(now, 1);
                    self.actions.push_back(Action::Punch {
                        noderef,
                        initiator: false,
                    });
                }
            }
            Upstream::Local => {
                self.connect_if_wanted(now, &noderef);
            }
            Upstream::Gone => {}
        }
    }

    /// An admitted announcement: connect to the newcomer if we want a
    /// peer, accept it, and route it on while HTL is left.
    #[allow(clippy::too_many_arguments)]
    fn forward_announce(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        htl: u8,
        mut newcomer: Newcomer,
        target: Option<Location>,
        rng: &mut impl RngCore,
    ) {
        let noderef = &newcomer.noderef;
        // A refresh (a targeted announcement) asks for one link of the
        // target's length: only nodes at that length from the newcomer
        // answer it. And no more nodes than the newcomer has room for
        // (`room`): a full newcomer takes one, and every other node on
        // the way that dialed it was parked as a seed client or refused.
        let asked = target.is_none_or(|t| {
            noderef.location.length_class(self.location) == noderef.location.length_class(t)
        });
        if asked
            && self.room_left(now, &newcomer)
            && if newcomer.unreachable {
                self.offer_if_wanted(now, from, id, noderef)
            } else {
                self.connect_if_wanted(now, noderef)
            }
        {
            newcomer.took_one();
        }
        let htl = self.decrement(htl, Some(from));
        self.send(from, Message::Accepted { id });
        // With no room left the rest of the path would only route it:
        // every node after us would leave the newcomer alone. It ends here,
        // answered as at the last hop. Most refreshes (a room of one when
        // full) end at the node that took them; in the simulator this cut
        // the events of a run by 9 % at 10,000 nodes and 15 % at 30,000
        // (docs/simulation.md, "Tenth pass").
        if htl == 0 || newcomer.room == Some(0) {
            self.announce_replied(now, from, id);
            return;
        }
        if let Some(p) = self.peer_mut(from) {
            p.incoming += 1;
        }
        let key = target.unwrap_or(newcomer.noderef.location).as_key();
        self.pending.insert(
            id,
            Box::new(Pending {
                announce: Some(newcomer.noderef),
                announce_unreachable: newcomer.unreachable,
                announce_room: newcomer.room,
                ..Pending::new(key, KeyKind::Chk, htl, Upstream::Peer(from))
            }),
        );
        self.route(now, id, rng);
    }

    /// A fold offer for request `id`, from the peer that answered it. Taken
    /// (and our own noderef passed upstream instead) only for a forwarded
    /// request that arrived at the caching level or below, as in Hyphanet:
    /// never for our own requests, so no data source gets a link to the
    /// requester, and never by the requester's neighbours. Otherwise the
    /// offer is passed upstream as it came (our own requests: dropped).
    pub(super) fn on_fold_offer(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        noderef: NodeRef,
        rng: &mut impl RngCore,
    ) {
        let Some(r) = self.recent.get_mut(&id) else {
            self.stats.unexpected_replies += 1;
            self.offence(now, from, rng);
            return;
        };
        if r.downstream() != Some(from) || !r.fold_expected {
            self.stats.unexpected_replies += 1;
            self.offence(now, from, rng);
            return;
        }
        r.fold_expected = false;
        let (upstream, may_fold) = (r.upstream, r.may_fold);
        // Upstream knows the request by the id it sent (see `translate_id`).
        let up_id = r.reply_id;
        if !self.cfg.opennet {
            return;
        }
        let take = may_fold && self.fold_later(now, id, &noderef, rng);
        if let Upstream::Peer(u) = upstream {
            let reset = may_fold
                && self.cfg.fold_reset_one_in > 0
                && rng.gen_range(0..self.cfg.fold_reset_one_in) == 0;
            let offer = if (take || reset) && !self.behind_nat {
                // Whoever upstream takes it will dial us (nobody can dial
                // us from behind NAT: the offer goes on as it came).
                self.invite(now, 1);
                self.noderef.clone()
            } else {
                Some(noderef)
            };
            if let Some(offer) = offer {
                self.send(
                    u,
                    Message::FoldOffer {
                        id: up_id,
                        noderef: offer,
                    },
                );
            }
        }
    }

    /// Take a fold offer if [`Node::would_take`] it: the connection is
    /// asked for after a random delay below `fold_delay_max` (a timer), so
    /// the data source cannot tell which node on the path dialed it by
    /// when. At most [`MAX_FOLDS`] wait at once. Returns whether taken.
    fn fold_later(
        &mut self,
        now: Millis,
        id: u64,
        noderef: &NodeRef,
        rng: &mut impl RngCore,
    ) -> bool {
        if self.folds.len() >= MAX_FOLDS || !self.would_take(now, noderef) {
            return false;
        }
        self.last_fold_accept = Some(now);
        let due = now + rng.gen_range(0..self.cfg.fold_delay_max.max(1));
        self.folds.insert(id, (due, noderef.clone()));
        self.set_timer(due, TimerKind::Fold, id);
        true
    }

    /// The delay of fold offer `id` (taken at `due`) is over: connect,
    /// unless that node became a peer meanwhile.
    pub(super) fn fold_due(&mut self, id: u64, due: Millis) {
        if self.folds.get(&id).is_none_or(|f| f.0 != due) {
            return;
        }
        let Some((_, noderef)) = self.folds.remove(&id) else {
            return;
        };
        if !self.peers.iter().any(|p| p.location == noderef.location) {
            self.actions.push_back(Action::Connect { noderef });
        }
    }
}
