//! Requests from the local client and the AIMD window that paces them.

use rand::RngCore;

use super::{
    Action, InsertOutcome, LocalRequest, Millis, Node, Pending, RequestId, RequestOutcome,
    Upstream, Verifier,
};

impl<V: Verifier> Node<V> {
    /// A request from the local client. Returns its id; the result comes as
    /// [`Action::RequestDone`] / [`Action::InsertDone`]. The request leaves
    /// with the maximum HTL, exactly as a forwarder that kept it would send.
    pub fn handle_local_request(
        &mut self,
        now: Millis,
        req: LocalRequest,
        rng: &mut impl RngCore,
    ) -> RequestId {
        self.expire(now);
        let id = self.fresh_id(rng);
        match req {
            LocalRequest::Announce => {
                self.announce(now, id, rng);
                self.maybe_schedule_announce(now);
            }
            LocalRequest::Fetch { key, kind } => {
                self.remember(now, id, Upstream::Local);
                if self.recently_failed(now, &key, self.cfg.max_htl) {
                    self.stats.recently_failed += 1;
                    self.actions.push_back(Action::RequestDone {
                        id: RequestId(id),
                        outcome: RequestOutcome::RecentlyFailed,
                    });
                } else if self.coalesce(key, id, Upstream::Local) {
                    self.stats.coalesced += 1;
                } else {
                    self.queue_local(now, id, LocalRequest::Fetch { key, kind }, rng);
                }
            }
            LocalRequest::Insert { key, kind, block } => {
                if block.len() > self.cfg.max_block_len || !self.verifier.verify(&key, kind, &block)
                {
                    self.actions.push_back(Action::InsertDone {
                        id: RequestId(id),
                        outcome: InsertOutcome::InvalidBlock,
                    });
                } else {
                    self.remember(now, id, Upstream::Local);
                    self.queue_local(now, id, LocalRequest::Insert { key, kind, block }, rng);
                }
            }
        }
        RequestId(id)
    }

    fn queue_local(&mut self, now: Millis, id: u64, req: LocalRequest, rng: &mut impl RngCore) {
        if self.local_queue.len() >= self.cfg.local_queue_cap {
            let action = match req {
                LocalRequest::Insert { .. } => Action::InsertDone {
                    id: RequestId(id),
                    outcome: InsertOutcome::Overloaded,
                },
                _ => Action::RequestDone {
                    id: RequestId(id),
                    outcome: RequestOutcome::Overloaded,
                },
            };
            self.actions.push_back(action);
            return;
        }
        self.local_queue.push_back((id, req));
        self.start_queued(now, rng);
        self.prune_timers();
    }

    pub(super) fn start_queued(&mut self, now: Millis, rng: &mut impl RngCore) {
        while (self.local_in_flight as f64) < self.window.floor() {
            let Some((id, req)) = self.local_queue.pop_front() else {
                break;
            };
            let (key, kind, insert) = match req {
                LocalRequest::Fetch { key, kind } => (key, kind, None),
                LocalRequest::Insert { key, kind, block } => (key, kind, Some(block)),
                LocalRequest::Announce => continue,
            };
            self.local_in_flight += 1;
            if insert.is_none() {
                self.by_key.entry(key).or_insert(id);
            } else {
                *self.local_inserts.entry(key).or_insert(0) += 1;
            }
            self.pending.insert(
                id,
                Box::new(Pending {
                    insert,
                    ..Pending::new(key, kind, self.cfg.max_htl, Upstream::Local)
                }),
            );
            self.route(now, id, rng);
        }
    }

    /// Bookkeeping when a local request (the one holding a window slot)
    /// finishes. Every public entry point (`handle_message`,
    /// `handle_timeout`, `handle_local_request`, `remove_peer`) ends by
    /// starting what the window now allows, so a freed slot is refilled at
    /// once rather than at the next timer (which was up to `accept_timeout`
    /// away: a 10 s stall per transfer).
    pub(super) fn local_finished(&mut self) {
        self.local_in_flight = self.local_in_flight.saturating_sub(1);
    }

    /// The AIMD window after a request or insert ended, ours or one we
    /// forwarded (a success: +1/w; a timeout: halved). Driven by all, so
    /// the pace of our own requests reacts the same whichever request met
    /// the congestion: a neighbour that overloads or stalls one request and
    /// watches our requests slow down learns nothing about its origin.
    pub(super) fn aimd_outcome(&mut self, success: bool, congestion: bool) {
        if success {
            // Never more in flight than our peers take from one peer each
            // (nodes share the per-peer limit): past that, growth only
            // buys RejectedOverload and backoffs.
            let cap = f64::from(self.cfg.max_incoming_per_peer) * self.peers.len().max(1) as f64;
            self.window = (self.window + 1.0 / self.window)
                .min(self.cfg.aimd_max)
                .min(cap.max(1.0));
        } else if congestion {
            self.aimd_decrease();
        }
    }

    pub(super) fn aimd_decrease(&mut self) {
        self.window = (self.window / 2.0).max(1.0);
    }

    /// Start local requests the AIMD window now allows (call after
    /// draining actions if requests were queued; timeouts do it too).
    pub fn pump(&mut self, now: Millis, rng: &mut impl RngCore) {
        self.start_queued(now, rng);
        self.prune_timers();
    }
}
