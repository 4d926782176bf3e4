//! Requests: admission, coalescing, greedy routing with backtracking, and
//! the answers that travel back along the path.

use rand::RngCore;

use super::{
    Action, BlockSource, Fail, InsertOutcome, Millis, Node, PeerId, Pending, RequestId,
    RequestOutcome, Space, TimerKind, Upstream, Verifier, MAX_HELD,
};
use crate::location::Key;
use crate::message::{Block, KeyKind, Message};
use std::cmp::Reverse;

/// Longest our own request whose route ended on overloaded or backed-off
/// peers waits to start again under a fresh id (ms); beyond it, it fails.
const LOCAL_RETRY_WAIT: Millis = 10_000;

/// Times our own request starts again under a fresh id after load ended
/// its route.
const LOCAL_RETRIES: u8 = 3;

impl<V: Verifier> Node<V> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_request(
        &mut self,
        now: Millis,
        from: PeerId,
        id: u64,
        key: Key,
        htl: u8,
        kind: KeyKind,
        store: &mut impl BlockSource,
        rng: &mut impl RngCore,
    ) {
        let htl = self.clamp_htl(now, htl, from, rng);
        // A peer that has used up its budget of immediate answers is
        // refused as overloaded before anything is read for it.
        let broke = !self.answer_budget_left(now, from);
        if broke {
            self.stats.answer_budget_refused += 1;
        }
        if !self.admit(now, from, id, broke) {
            return;
        }
        if let Some(block) = store.get(&key, kind) {
            self.spend_answer(from);
            if self.verifier.verify(&key, kind, &block) {
                self.stats.served_from_store += 1;
                self.send(from, Message::DataFound { id, block });
                // No fold offer on our own behalf for a request that
                // arrived above the caching level: its sender may be the
                // requester.
                // Nor from behind NAT: nobody could dial us.
                if self.cfg.opennet && htl <= self.cfg.request_cache_htl() && !self.behind_nat {
                    if let Some(me) = self.noderef.clone() {
                        self.invite(now, 1);
                        self.send(from, Message::FoldOffer { id, noderef: me });
                    }
                }
                return;
            }
        }
        let received = htl;
        let htl = self.decrement(htl, Some(from));
        if htl == 0 {
            self.spend_answer(from);
            self.send(from, Message::DataNotFound { id });
            return;
        }
        // With MAX_HELD answers held, the table is not used: the request
        // is routed as if nothing were remembered. (Answering at once
        // would let a peer that first fills the held answers probe the
        // table by timing again; refusing would tell it apart too.)
        if self.held.len() < MAX_HELD && self.recently_failed(now, &key, htl) {
            // Accepted, and the failure comes as late as a routed one
            // with this HTL would: a neighbour cannot tell this answer
            // from a routed failure, so it cannot probe which keys failed
            // here lately (and, a few hops from a user's exit, what the
            // user failed to find).
            self.spend_answer(from);
            self.stats.recently_failed += 1;
            self.send(from, Message::Accepted { id });
            let at = now + self.failure_answer_delay(htl);
            self.held.push(Reverse((at, from, id)));
            return;
        }
        if self.pending_above_caching_level(&key) {
            // Ids change above the caching level, so a request that loops
            // back here there comes under another id: caught by its key.
            // (Coalescing it would make it wait on itself.) Our own and
            // forwarded requests alike.
            self.stats.loops_rejected += 1;
            self.send(from, Message::RejectedLoop { id });
            return;
        }
        if self.coalesce(key, id, Upstream::Peer(from)) {
            self.stats.coalesced += 1;
            if let Some(p) = self.peer_mut(from) {
                p.incoming += 1;
            }
            self.send(from, Message::Accepted { id });
            return;
        }
        if let Some(p) = self.peer_mut(from) {
            p.incoming += 1;
        }
        self.send(from, Message::Accepted { id });
        self.pending.insert(
            id,
            Box::new(Pending {
                htl_received: received,
                started: now,
                ..Pending::new(key, kind, htl, Upstream::Peer(from))
            }),
        );
        self.by_key.entry(key).or_insert(id);
        // Above the caching level it goes on under a fresh id, so no node
        // downstream can ask the ones before about the id it saw.
        let id = if received > self.cfg.request_cache_htl() {
            self.translate_id(now, id, rng)
        } else {
            id
        };
        self.route(now, id, rng);
    }

    /// Whether a request for `key` that arrived above the caching level
    /// (or our own) is in flight here: it goes on under an id of its own
    /// (see `translate_id`), so it loops back under another.
    fn pending_above_caching_level(&self, key: &Key) -> bool {
        let high = self.cfg.request_cache_htl();
        self.by_key
            .get(key)
            .and_then(|id| self.pending.get(id))
            .is_some_and(|p| p.insert.is_none() && p.announce.is_none() && p.htl_received > high)
    }

    /// Attach a request to an identical one in flight, unless that would
    /// wait on the requester itself (the simplest deadlock).
    pub(super) fn coalesce(&mut self, key: Key, id: u64, upstream: Upstream) -> bool {
        let Some(&other) = self.by_key.get(&key) else {
            return false;
        };
        let max = self.cfg.max_waiters;
        let Some(p) = self.pending.get_mut(&other) else {
            return false;
        };
        if p.insert.is_some() || p.announce.is_some() || p.waiters.len() >= max {
            return false;
        }
        if let Upstream::Peer(f) = upstream {
            if p.downstream == Some(f) || p.tried.contains(&f) {
                return false;
            }
        }
        p.waiters.push((id, upstream));
        true
    }

    /// Route `id` onward, unless `from` is no longer its downstream (an
    /// offence may have disconnected `from`, which already rerouted it).
    pub(super) fn retry(&mut self, now: Millis, id: u64, from: PeerId, rng: &mut impl RngCore) {
        if self
            .pending
            .get(&id)
            .is_some_and(|p| p.downstream == Some(from))
        {
            self.route(now, id, rng);
        }
    }

    /// Forward `id` to the closest untried, non-backed-off peer, or fail
    /// with RouteNotFound.
    pub(super) fn route(&mut self, now: Millis, id: u64, rng: &mut impl RngCore) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        // An announcement's key is its target's location (`Location::as_key`).
        let target = p.key.location();
        let next = self
            .peers
            .iter()
            .filter(|q| !p.tried.contains(&q.id) && q.backoff_until <= now)
            .min_by_key(|q| (q.location.distance(target), q.id))
            .map(|q| q.id);
        let Some(next) = next else {
            // Out of peers: every request, ours too, fails here (a
            // forwarder does not wait for a backed-off peer, and a request
            // never goes to a peer twice under one id).
            if !self.retry_local(now, id, rng) {
                self.fail(now, id, Fail::RouteNotFound);
            }
            return;
        };
        let deadline = now + self.cfg.accept_timeout;
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.tried.push(next);
        p.downstream = Some(next);
        p.accepted = false;
        p.deadline = deadline;
        let msg = match (&p.insert, &p.announce) {
            (_, Some(noderef)) => Message::Announce {
                id,
                htl: p.htl,
                noderef: noderef.clone(),
                target: Some(target).filter(|&t| t != noderef.location),
                unreachable: p.announce_unreachable,
                room: p.announce_room,
            },
            (Some(_), None) => Message::Insert {
                id,
                key: p.key,
                htl: p.htl,
                kind: p.kind,
            },
            (None, None) => Message::Request {
                id,
                key: p.key,
                htl: p.htl,
                kind: p.kind,
            },
        };
        self.set_timer(deadline, TimerKind::Request, id);
        self.send(next, msg);
    }

    /// Our own request or insert whose route ended because of load (a peer
    /// refused it as overloaded, or one it did not get to is backed off)
    /// starts again as a new request: a fresh id, nothing tried, the
    /// maximum HTL, once the first backoff is over (at most
    /// [`LOCAL_RETRY_WAIT`] away), at most [`LOCAL_RETRIES`] times. To its
    /// peers that is a new request, not the same one sent twice. Its
    /// outcome still reports the id the embedder was given. Returns
    /// whether it was retried.
    fn retry_local(&mut self, now: Millis, id: u64, rng: &mut impl RngCore) -> bool {
        let Some(p) = self.pending.get(&id) else {
            return false;
        };
        if p.upstream != Upstream::Local || p.announce.is_some() || p.retries >= LOCAL_RETRIES {
            return false;
        }
        let skipped = self
            .peers
            .iter()
            .any(|q| !p.tried.contains(&q.id) && q.backoff_until > now);
        if !(p.overloaded || skipped) {
            return false;
        }
        let wake = self
            .peers
            .iter()
            .map(|q| q.backoff_until)
            .filter(|&t| t > now)
            .min()
            .unwrap_or(now + self.cfg.backoff_initial);
        if wake - now > LOCAL_RETRY_WAIT {
            return false;
        }
        let fresh = self.fresh_id(rng);
        let Some(mut p) = self.take_pending(id) else {
            return false;
        };
        p.reply_id = Some(p.reply_id.unwrap_or(id));
        p.retries += 1;
        p.overloaded = false;
        p.tried.clear();
        p.downstream = None;
        p.accepted = false;
        p.deadline = wake;
        p.htl = self.cfg.max_htl;
        p.high_htl_failures = 0;
        if p.insert.is_none() {
            self.by_key.entry(p.key).or_insert(fresh);
        } else {
            *self.local_inserts.entry(p.key).or_insert(0) += 1;
        }
        self.pending.insert(fresh, p);
        self.remember(now, fresh, Upstream::Local);
        self.stats.backoff_waits += 1;
        self.set_timer(wake, TimerKind::Request, fresh);
        true
    }

    pub(super) fn request_found(&mut self, now: Millis, id: u64, from: PeerId, block: Block) {
        let Some(p) = self.take_pending(id) else {
            return;
        };
        self.peer_delivered(now, from);
        // Decided from the HTL as received: a RouteNotFound lowers `p.htl`,
        // and must not let the requester's neighbour cache what a
        // backtracked request found.
        let remote = p.upstream != Upstream::Local;
        let low = p.htl_received <= self.cfg.request_cache_htl();
        if remote && low {
            self.actions.push_back(Action::StoreBlock {
                space: Space::Cache,
                key: p.key,
                kind: p.kind,
                block: block.clone(),
            });
        }
        let may_fold = remote && low;
        if let Some(r) = self.recent.get_mut(&id) {
            r.downstream = from;
            r.answered = true;
            r.fold_expected = self.cfg.opennet;
            r.may_fold = may_fold;
        }
        // The window moves with every request's outcome, not only ours:
        // so how our own requests are paced says nothing about which
        // requests were ours.
        self.aimd_outcome(true, false);
        self.answer_found(p.reply_id.unwrap_or(id), p.upstream, &block, true);
        for (wid, w) in p.waiters {
            self.answer_found(wid, w, &block, false);
        }
    }

    fn answer_found(&mut self, id: u64, upstream: Upstream, block: &Block, primary: bool) {
        self.release(upstream);
        match upstream {
            Upstream::Peer(u) => self.send(
                u,
                Message::DataFound {
                    id,
                    block: block.clone(),
                },
            ),
            Upstream::Local => {
                if primary {
                    self.local_finished();
                }
                self.actions.push_back(Action::RequestDone {
                    id: RequestId(id),
                    outcome: RequestOutcome::Found(block.clone()),
                });
            }
            Upstream::Gone => {}
        }
    }

    pub(super) fn fail(&mut self, now: Millis, id: u64, why: Fail) {
        let Some(p) = self.take_pending(id) else {
            return;
        };
        if p.announce.is_some() {
            self.release(p.upstream);
            if let Upstream::Peer(u) = p.upstream {
                self.send(u, Message::RouteNotFound { id, htl: p.htl });
            }
            return;
        }
        let timed_out = matches!(why, Fail::TimedOut);
        self.aimd_outcome(false, timed_out);
        let reply_id = p.reply_id.unwrap_or(id);
        if p.insert.is_some() {
            self.store_deep(&p);
            self.release(p.upstream);
            match p.upstream {
                Upstream::Peer(u) => {
                    let htl = if matches!(why, Fail::TimedOut) {
                        0
                    } else {
                        p.htl
                    };
                    self.send(u, Message::RouteNotFound { id: reply_id, htl });
                }
                Upstream::Local => {
                    self.local_finished();
                    let outcome = if timed_out {
                        InsertOutcome::TimedOut
                    } else {
                        InsertOutcome::RouteNotFound { htl: p.htl }
                    };
                    self.actions.push_back(Action::InsertDone {
                        id: RequestId(reply_id),
                        outcome,
                    });
                }
                Upstream::Gone => {}
            }
            return;
        }
        // The failure table answers peers: only failures of requests routed
        // for a peer enter it. Our own would make this node answer a
        // neighbour's probe for a key its user just failed to find with an
        // instant DataNotFound for minutes (see `docs/routing.md`). Nor
        // those received above the caching level, as for caching: the
        // sender may be the requester, and its other neighbours would get
        // that answer from us one hop behind it.
        let low = p.htl_received <= self.cfg.request_cache_htl();
        if p.upstream != Upstream::Local && low {
            let took = now.saturating_sub(p.started);
            self.record_failure(now, p.key, p.htl, p.htl_received, took);
        }
        let mut all = vec![(reply_id, p.upstream)];
        all.extend(p.waiters);
        for (i, (wid, up)) in all.into_iter().enumerate() {
            self.release(up);
            match up {
                Upstream::Peer(u) => {
                    let msg = match why {
                        Fail::RouteNotFound if i == 0 => Message::RouteNotFound {
                            id: wid,
                            htl: p.htl,
                        },
                        _ => Message::DataNotFound { id: wid },
                    };
                    self.send(u, msg);
                }
                Upstream::Local => {
                    if i == 0 {
                        self.local_finished();
                    }
                    let outcome = match why {
                        Fail::NotFound => RequestOutcome::NotFound,
                        Fail::RouteNotFound => RequestOutcome::RouteNotFound,
                        Fail::TimedOut => RequestOutcome::TimedOut,
                    };
                    self.actions.push_back(Action::RequestDone {
                        id: RequestId(wid),
                        outcome,
                    });
                }
                Upstream::Gone => {}
            }
        }
    }
}
