//! Replies to what this node forwarded: each is taken only from the peer
//! the request, insert or announcement went to, then acted on by kind.

use rand::RngCore;

use super::{Fail, Millis, Node, PeerId, TimerKind, Verifier};
use crate::message::{Block, KeyKind, Message};

impl<V: Verifier> Node<V> {
    /// A reply (the dispatcher sends only replies here): dropped unless
    /// it comes from the peer its request went to, then handled by kind.
    pub(super) fn on_reply(
        &mut self,
        now: Millis,
        from: PeerId,
        msg: Message,
        rng: &mut impl RngCore,
    ) {
        let Some(id) = msg.id() else {
            return;
        };
        if !self.check_downstream(now, from, id, rng) {
            return;
        }
        match msg {
            Message::Accepted { id } => self.on_accepted(now, from, id),
            Message::RejectedLoop { id } => self.on_rejected_loop(now, id, rng),
            Message::RejectedOverload { id } => self.on_rejected_overload(now, from, id, rng),
            Message::RouteNotFound { id, htl } => self.on_route_not_found(now, from, id, htl, rng),
            Message::DataNotFound { id } => self.on_data_not_found(now, from, id, rng),
            Message::DataFound { id, block } => self.on_data_found(now, from, id, block, rng),
            Message::InsertReply { id } => self.on_insert_reply(now, from, id, rng),
            Message::AnnounceReply { id } => self.on_announce_reply(now, from, id, rng),
            Message::Collision { id, block } => self.on_collision(now, from, id, block, rng),
            _ => {}
        }
    }

    /// A reply for `id` is legitimate only from the peer we forwarded it to.
    fn check_downstream(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        rng: &mut impl RngCore,
    ) -> bool {
        match self.pending.get(&id) {
            Some(p) if p.downstream == Some(from) => true,
            Some(p) if p.tried.contains(&from) => {
                // A late reply from a peer we gave up on (timeout): harmless.
                self.stats.unexpected_replies += 1;
                false
            }
            None if self.recent.contains_key(&id) => {
                // Late reply for a finished request (e.g. after a timeout).
                self.stats.unexpected_replies += 1;
                false
            }
            _ => {
                self.stats.unexpected_replies += 1;
                self.offence(now, from, rng);
                false
            }
        }
    }

    /// The peer took `id`: wait for its answer, for a time scaled by the
    /// HTL; an insert's block goes now.
    fn on_accepted(&mut self, now: Millis, from: PeerId, id: u64) {
        let fetch = self.cfg.fetch_timeout;
        let max = u64::from(self.cfg.max_htl) + 1;
        if let Some(p) = self.pending.get_mut(&id) {
            if !p.accepted {
                p.accepted = true;
                let scaled = fetch * (u64::from(p.htl) + 1) / max;
                p.deadline = now + scaled.max(self.cfg.accept_timeout);
                let d = p.deadline;
                // An insert's block follows its acceptance, so a
                // loop or overload costs a header, not 32 KiB.
                let data = p.insert.clone();
                self.set_timer(d, TimerKind::Request, id);
                if let Some(block) = data {
                    self.send(from, Message::InsertData { id, block });
                }
            }
        }
    }

    /// The peer has seen `id` already: try the next one.
    fn on_rejected_loop(&mut self, now: Millis, id: u64, rng: &mut impl RngCore) {
        // Announcements pay one hop per loop, so their
        // exploration near the target stays bounded.
        let mut out_of_htl = false;
        if let Some(p) = self.pending.get_mut(&id) {
            if p.announce.is_some() {
                p.htl = p.htl.saturating_sub(1);
                out_of_htl = p.htl == 0;
            }
        }
        if out_of_htl {
            self.announce_done(now, id);
        } else if self.charge_failure(now, id) {
            self.route(now, id, rng);
        }
    }

    /// The peer is overloaded: back off from it and try the next one. The
    /// same for every request, ours included: the peer stays tried (never
    /// asked twice under one id), and the AIMD window halves whichever
    /// request it was.
    fn on_rejected_overload(&mut self, now: Millis, from: PeerId, id: u64, rng: &mut impl RngCore) {
        self.backoff(now, from, rng);
        if let Some(p) = self.pending.get_mut(&id) {
            p.overloaded = true;
        }
        self.aimd_decrease();
        self.route(now, id, rng);
    }

    /// The peer ran out of routes with `htl` left: go on from here with
    /// that (never more than we had).
    fn on_route_not_found(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        htl: u8,
        rng: &mut impl RngCore,
    ) {
        let cur = self.pending.get(&id).map_or(0, |p| p.htl);
        if htl > cur {
            // Lying about HTL to keep a request alive: clamp.
            self.stats.bad_htl += 1;
            self.offence(now, from, rng);
            if self
                .pending
                .get(&id)
                .is_none_or(|p| p.downstream != Some(from))
            {
                return;
            }
        }
        let new = htl.min(cur);
        if let Some(p) = self.pending.get_mut(&id) {
            p.htl = new;
        }
        if new == 0 {
            self.fail(now, id, Fail::NotFound);
        } else if self.charge_failure(now, id) {
            self.route(now, id, rng);
        }
    }

    /// The HTL ran out downstream: a request fails; an insert or an
    /// announcement cannot get this answer.
    fn on_data_not_found(&mut self, now: Millis, from: PeerId, id: u64, rng: &mut impl RngCore) {
        if self
            .pending
            .get(&id)
            .is_some_and(|p| p.insert.is_some() || p.announce.is_some())
        {
            self.offence(now, from, rng);
            self.retry(now, id, from, rng);
        } else {
            // Not a delivery: a black hole answers this at once.
            self.peer_answered(from);
            self.fail(now, id, Fail::NotFound);
        }
    }

    /// The block for a request: verified, or the peer is at fault.
    fn on_data_found(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        block: Block,
        rng: &mut impl RngCore,
    ) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        if p.insert.is_some()
            || p.announce.is_some()
            || !self.verifier.verify(&p.key, p.kind, &block)
        {
            self.stats.bad_blocks += 1;
            self.backoff(now, from, rng);
            self.offence(now, from, rng);
            self.retry(now, id, from, rng);
        } else {
            self.request_found(now, id, from, block);
        }
    }

    /// An insert ran its course downstream.
    fn on_insert_reply(&mut self, now: Millis, from: PeerId, id: u64, rng: &mut impl RngCore) {
        if self.pending.get(&id).is_some_and(|p| p.insert.is_some()) {
            self.peer_answered(from);
            self.insert_done(id, None);
        } else {
            self.offence(now, from, rng);
        }
    }

    /// An announcement ran its course downstream.
    fn on_announce_reply(&mut self, now: Millis, from: PeerId, id: u64, rng: &mut impl RngCore) {
        if self.pending.get(&id).is_some_and(|p| p.announce.is_some()) {
            self.announce_done(now, id);
        } else {
            self.offence(now, from, rng);
        }
    }

    /// An SSK insert met a different block: verified, or the peer is at
    /// fault.
    fn on_collision(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        block: Block,
        rng: &mut impl RngCore,
    ) {
        let ok = self.pending.get(&id).is_some_and(|p| {
            p.insert.is_some()
                && p.kind == KeyKind::Ssk
                && self.verifier.verify(&p.key, p.kind, &block)
        });
        if ok {
            self.insert_done(id, Some(block));
        } else {
            self.stats.bad_blocks += 1;
            self.offence(now, from, rng);
            self.retry(now, id, from, rng);
        }
    }
}
