//! Timers: accept and fetch timeouts, swap attempts and re-announcements.

use std::cmp::Reverse;

use rand::{Rng, RngCore};

use super::peers::QUICK_AFTER_PROGRESS;
use super::{Fail, Millis, Node, TimerKind, Verifier};

impl<V: Verifier> Node<V> {
    /// Run timers due at `now`: accept/fetch timeouts, swap attempts and
    /// table expiry. Also starts queued local requests the window allows.
    pub fn handle_timeout(&mut self, now: Millis, rng: &mut impl RngCore) {
        self.expire(now);
        self.release_held(now);
        while let Some(&Reverse((t, kind, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            match kind {
                TimerKind::Request => {
                    let Some(p) = self.pending.get(&id) else {
                        continue;
                    };
                    if p.deadline != t {
                        continue;
                    }
                    if p.data_pending {
                        // Accepted an insert whose block never came.
                        self.end_insert(id);
                        continue;
                    }
                    if p.accepted {
                        self.fail(now, id, Fail::TimedOut);
                    } else {
                        if let Some(d) = p.downstream {
                            self.backoff(now, d, rng);
                        }
                        self.route(now, id, rng);
                    }
                }
                TimerKind::Fold => self.fold_due(id, t),
                TimerKind::Swap => {
                    if self.swaps.get(&id).is_some_and(|s| s.expires() <= now) {
                        self.swaps.remove(&id);
                    }
                }
            }
        }
        if let Some(t) = self.next_swap {
            if t <= now {
                if self.cfg.swapping && !self.peers.is_empty() {
                    let j = self.cfg.swap_interval / 2;
                    self.next_swap =
                        Some(now + j.max(1) + rng.gen_range(0..self.cfg.swap_interval.max(1)));
                    self.initiate_swap(now, rng);
                } else {
                    self.next_swap = None;
                }
            }
        }
        if self.next_announce.is_some_and(|t| t <= now) {
            self.next_announce = None;
            if self.cfg.opennet && self.peers.len() < self.cfg.max_peers / 2 {
                let id = self.fresh_id(rng);
                // Toward a link length we lack: the nodes around our own
                // location heard the first announcement, and those that
                // wanted us took us; elsewhere we are a link length
                // other nodes have room for.
                let target = self.sparse_class_target(super::peers::Spread::Even, rng);
                self.announce_through(now, id, None, target, rng);
                // More peers than ever before in this round: keep the
                // quick pace (at most max_peers / 2 times a round).
                if self.peers.len() > self.announced_with {
                    self.announce_backoff = self.announce_backoff.min(QUICK_AFTER_PROGRESS);
                } else {
                    self.announce_backoff += 1;
                }
                self.maybe_schedule_announce(now);
            }
        }
        self.link_refresh(now, rng);
        self.pitch_due(now, rng);
        self.expire_seed_clients(now, rng);
        self.start_queued(now, rng);
        self.prune_timers();
    }
}
