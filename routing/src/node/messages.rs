//! A message from a peer: who may send it, its size limits, and which
//! handler takes it.

use rand::RngCore;

use super::opennet::Newcomer;
use super::{BlockSource, Millis, Node, PeerId, Upstream, Verifier};
use crate::message::Message;

impl<V: Verifier> Node<V> {
    /// A message arrived from `from`.
    pub fn handle_message(
        &mut self,
        now: Millis,
        from: PeerId,
        msg: Message,
        store: &mut impl BlockSource,
        rng: &mut impl RngCore,
    ) {
        self.expire(now);
        if self.seed_clients.contains_key(&from) {
            self.on_seed_client_message(now, from, msg, rng);
            self.prune_timers();
            return;
        }
        if !self.peers.iter().any(|p| p.id == from) {
            self.stats.unknown_peer += 1;
            return;
        }
        if !self.within_limits(&msg) {
            self.offence(now, from, rng);
            return;
        }
        self.dispatch(now, from, msg, store, rng);
        self.start_queued(now, rng);
        self.prune_timers();
    }

    fn dispatch(
        &mut self,
        now: Millis,
        from: PeerId,
        msg: Message,
        store: &mut impl BlockSource,
        rng: &mut impl RngCore,
    ) {
        match msg {
            Message::Request { id, key, htl, kind } => {
                self.on_request(now, from, id, key, htl, kind, store, rng)
            }
            Message::Insert { id, key, htl, kind } => {
                self.on_insert(now, from, id, key, htl, kind, rng);
            }
            Message::InsertData { id, block } => {
                self.on_insert_data(now, from, id, block, store, rng)
            }
            reply @ (Message::Accepted { .. }
            | Message::RejectedLoop { .. }
            | Message::RejectedOverload { .. }
            | Message::RouteNotFound { .. }
            | Message::DataNotFound { .. }
            | Message::DataFound { .. }
            | Message::InsertReply { .. }
            | Message::AnnounceReply { .. }
            | Message::Collision { .. }) => self.on_reply(now, from, reply, rng),
            Message::FoldOffer { id, noderef } => self.on_fold_offer(now, from, id, noderef, rng),
            Message::Announce {
                id,
                htl,
                noderef,
                target,
                unreachable,
                room,
            } => {
                let newcomer = Newcomer {
                    noderef,
                    unreachable,
                    room,
                };
                self.on_announce(now, from, id, htl, newcomer, target, rng);
            }
            Message::AnnounceOffer { id, noderef, punch } => {
                self.on_announce_offer(now, from, id, noderef, punch)
            }
            Message::SwapRequest {
                id,
                htl,
                location,
                peer_locations,
            } => self.on_swap_request(now, from, id, htl, location, peer_locations, rng),
            Message::SwapReply {
                id,
                accepted,
                location,
                peer_locations,
            } => self.on_swap_reply(now, from, id, accepted, location, peer_locations, rng),
            Message::SwapRejected { id } => self.on_swap_rejected(from, id),
            // The embedder's (a link-level introduction, a tunnel cell for
            // `Tunnelled`): nothing to route.
            Message::Noderef { .. }
            | Message::DialBack { .. }
            | Message::DialBackResult { .. }
            | Message::PunchAsk { .. }
            | Message::PunchOffer { .. }
            | Message::PunchReady { .. }
            | Message::PunchGo { .. }
            | Message::Invited { .. }
            | Message::Welcome { .. }
            | Message::Tunnel { .. } => {}
            Message::LocationChanged { location } => {
                self.on_location_changed(now, from, location, rng)
            }
        }
    }

    pub(super) fn within_limits(&self, msg: &Message) -> bool {
        match msg {
            Message::InsertData { block, .. }
            | Message::DataFound { block, .. }
            | Message::Collision { block, .. } => block.len() <= self.cfg.max_block_len,
            Message::FoldOffer { noderef, .. }
            | Message::Announce { noderef, .. }
            | Message::AnnounceOffer { noderef, .. } => {
                noderef.address.len() <= self.cfg.max_noderef_len
            }
            Message::Noderef { noderef } => noderef.len() <= self.cfg.max_noderef_len,
            Message::Tunnel { cell } => cell.len() == lichen_tunnel::WIRE_LEN,
            Message::SwapRequest { peer_locations, .. }
            | Message::SwapReply { peer_locations, .. } => {
                peer_locations.len() <= self.cfg.max_swap_peers
            }
            _ => true,
        }
    }

    /// Admission of a new request, insert or announcement from `from`: an
    /// id already in use is a loop (`RejectedLoop`); a peer at its limit of
    /// concurrent incoming requests, a full pending table or `overloaded`
    /// is overload (`RejectedOverload`). Otherwise the id is remembered as
    /// coming from `from`. Returns whether it was admitted.
    pub(super) fn admit(&mut self, now: Millis, from: PeerId, id: u64, overloaded: bool) -> bool {
        if self.id_in_use(id) {
            self.stats.loops_rejected += 1;
            self.send(from, Message::RejectedLoop { id });
            return false;
        }
        let limit = self.cfg.max_incoming_per_peer;
        let busy = match self.peers.iter().find(|p| p.id == from) {
            Some(p) => p.incoming >= limit,
            None => !self.seed_clients.contains_key(&from),
        };
        if overloaded || busy || self.pending.len() >= self.cfg.max_pending {
            self.stats.overload_rejected += 1;
            self.send(from, Message::RejectedOverload { id });
            return false;
        }
        self.remember(now, id, Upstream::Peer(from));
        true
    }
}
