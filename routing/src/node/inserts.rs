//! Inserts: header then block, verification, caching and the sink and
//! store-deep rules, the fork on cacheable, and how failures cost HTL.

use rand::RngCore;

use super::{
    Action, BlockSource, Fail, InsertOutcome, Millis, Node, PeerId, Pending, RequestId, Space,
    TimerKind, Upstream, Verifier,
};
use crate::location::{Key, Location};
use crate::message::{Block, KeyKind, Message};

/// Failed attempts (loops, "route not found") an insert may have while
/// its HTL is above the caching level, where they cost no HTL (Freenet
/// allows 5 too).
const MAX_HIGH_HTL_FAILURES: u8 = 5;

impl<V: Verifier> Node<V> {
    #[allow(clippy::too_many_arguments)]
    /// An insert's header: accept it (or reject it as a loop or overload)
    /// before its block is sent.
    pub(super) fn on_insert(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        key: Key,
        htl: u8,
        kind: KeyKind,
        rng: &mut impl RngCore,
    ) {
        let htl = self.clamp_htl(now, htl, from, rng);
        if !self.admit(now, from, id, false) {
            return;
        }
        // Above the storing level ids change at every hop, so an insert
        // that loops back here comes under another id: caught by its key.
        let high = self.cfg.insert_store_htl();
        let looped = htl > high
            && self.pending.values().any(|p| {
                p.key == key && p.insert.is_some() && p.htl_received > high && !p.data_pending
            });
        if looped {
            self.stats.loops_rejected += 1;
            self.send(from, Message::RejectedLoop { id });
            return;
        }
        if let Some(p) = self.peer_mut(from) {
            p.incoming += 1;
        }
        self.send(from, Message::Accepted { id });
        let deadline = now + self.cfg.accept_timeout;
        self.pending.insert(
            id,
            Box::new(Pending {
                deadline,
                data_pending: true,
                ..Pending::new(key, kind, htl, Upstream::Peer(from))
            }),
        );
        self.set_timer(deadline, TimerKind::Request, id);
    }

    /// The block of an insert we accepted: verify, cache or store it, then
    /// route the insert on.
    pub(super) fn on_insert_data(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        block: Block,
        store: &mut impl BlockSource,
        rng: &mut impl RngCore,
    ) {
        let Some((key, kind, htl)) = self
            .pending
            .get(&id)
            .filter(|p| p.data_pending && p.upstream == Upstream::Peer(from))
            .map(|p| (p.key, p.kind, p.htl))
        else {
            self.stats.unexpected_replies += 1;
            self.offence(now, from, rng);
            return;
        };
        if !self.verifier.verify(&key, kind, &block) {
            self.stats.bad_blocks += 1;
            self.end_insert(id);
            self.offence(now, from, rng);
            return;
        }
        if kind == KeyKind::Ssk {
            if let Some(existing) = store.get(&key, kind) {
                if existing != block && self.verifier.verify(&key, kind, &existing) {
                    self.end_insert(id);
                    self.send(
                        from,
                        Message::Collision {
                            id,
                            block: existing,
                        },
                    );
                    return;
                }
            }
        }
        let arrived = htl;
        let htl = self.decrement(htl, Some(from));
        // Decided from the HTL as received (Hyphanet: at most 15).
        let cacheable = arrived <= self.cfg.insert_store_htl();
        // Our own insert, back by another path after a fork downstream:
        // relayed like any other, but nothing inserted here goes into the
        // shared store or cache.
        let own = self.local_inserts.contains_key(&key);
        let sink = self.is_sink(key.location());
        let deep_candidate = cacheable && !sink && !own;
        if cacheable && !own {
            let space = if sink { Space::Store } else { Space::Cache };
            self.actions.push_back(Action::StoreBlock {
                space,
                key,
                kind,
                block: block.clone(),
            });
        }
        if htl == 0 {
            self.end_insert(id);
            self.send(from, Message::InsertReply { id });
            return;
        }
        if let Some(p) = self.pending.get_mut(&id) {
            p.htl = htl;
            p.insert = Some(block);
            p.deep_candidate = deep_candidate;
            p.data_pending = false;
        }
        // Above the storing level it goes on under a fresh id (see
        // `translate_id`); where it reaches the storing level it forks.
        let store_htl = self.cfg.insert_store_htl();
        let id = if arrived > store_htl {
            let fresh = self.translate_id(now, id, rng);
            if htl <= store_htl {
                self.fork_on_cacheable(fresh);
            }
            fresh
        } else {
            id
        };
        self.route(now, id, rng);
    }

    /// Freenet's "fork on cacheable": the insert has just reached the
    /// caching level, so the nodes it passed so far (the inserter's
    /// neighbourhood) kept nothing, and in a small network the nodes
    /// closest to the key are often among them. From here it goes on (under
    /// the fresh id it got here) with nothing tried, so those nodes, the one
    /// it came from included, may take it again, now allowed to store. Its
    /// result still goes upstream under the old id.
    fn fork_on_cacheable(&mut self, id: u64) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.tried.clear();
            self.stats.inserts_forked += 1;
        }
    }

    /// Forget insert `id` here and free its upstream's incoming slot.
    pub(super) fn end_insert(&mut self, id: u64) {
        if let Some(p) = self.take_pending(id) {
            self.release(p.upstream);
        }
    }

    /// Closer to `target` than every peer: an insert sink.
    pub(super) fn is_sink(&self, target: Location) -> bool {
        let mine = self.location.distance(target);
        self.peers
            .iter()
            .all(|p| p.location.distance(target) > mine)
    }

    /// An insert whose last attempt ended in a loop or "route not found"
    /// pays a hop before it tries another peer (Freenet's rule; always one,
    /// also at HTL 1). Otherwise, in a small network, one insert walks
    /// every link: a 20-node testnet saw ~220 rejected loops per block.
    /// Above the caching level the HTL is kept (spending it there would
    /// let nodes next to the inserter cache), and at most
    /// [`MAX_HIGH_HTL_FAILURES`] such failures are allowed before the
    /// route ends. Requests are not charged: a failed attempt costs them
    /// only headers, and finding the data is the point.
    ///
    /// Returns whether `id` is still to be routed (always, for requests
    /// and announcements); if not, it has been answered (HTL spent: the
    /// insert ran its course) or failed with "route not found".
    pub(super) fn charge_failure(&mut self, now: Millis, id: u64) -> bool {
        let store_htl = self.cfg.insert_store_htl();
        let Some(p) = self.pending.get_mut(&id) else {
            return false;
        };
        if p.insert.is_none() {
            return true;
        }
        if p.htl > store_htl {
            p.high_htl_failures += 1;
            if p.high_htl_failures <= MAX_HIGH_HTL_FAILURES {
                return true;
            }
            self.fail(now, id, Fail::RouteNotFound);
            return false;
        }
        p.htl = p.htl.saturating_sub(1);
        if p.htl > 0 {
            return true;
        }
        // The insert ran its course here.
        self.insert_done(id, None);
        false
    }

    /// Freenet's "store deep" rule: an insert that had to move away from
    /// the key here (no peer it went to was closer) is kept long-term.
    pub(super) fn store_deep(&mut self, p: &Pending) {
        let (Some(block), true) = (&p.insert, p.deep_candidate) else {
            return;
        };
        let target = p.key.location();
        let mine = self.location.distance(target);
        let mut routed = p
            .tried
            .iter()
            .filter(|&&t| Upstream::Peer(t) != p.upstream)
            .peekable();
        if routed.peek().is_none() {
            return;
        }
        let farther = routed.all(|t| {
            self.peers
                .iter()
                .find(|q| q.id == *t)
                .is_none_or(|q| q.location.distance(target) > mine)
        });
        if farther {
            self.actions.push_back(Action::StoreBlock {
                space: Space::Store,
                key: p.key,
                kind: p.kind,
                block: block.clone(),
            });
        }
    }

    pub(super) fn insert_done(&mut self, id: u64, collision: Option<Block>) {
        let Some(p) = self.take_pending(id) else {
            return;
        };
        if collision.is_none() {
            self.store_deep(&p);
        }
        self.release(p.upstream);
        self.aimd_outcome(collision.is_none(), false);
        let id = p.reply_id.unwrap_or(id);
        match p.upstream {
            Upstream::Peer(u) => match collision {
                Some(block) => self.send(u, Message::Collision { id, block }),
                None => self.send(u, Message::InsertReply { id }),
            },
            Upstream::Local => {
                self.local_finished();
                let outcome = match collision {
                    Some(b) => InsertOutcome::Collision(b),
                    None => InsertOutcome::Success,
                };
                self.actions.push_back(Action::InsertDone {
                    id: RequestId(id),
                    outcome,
                });
            }
            Upstream::Gone => {}
        }
    }
}
