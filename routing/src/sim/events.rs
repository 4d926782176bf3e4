//! The event loop: delivering messages, firing timers, starting local
//! requests, and carrying out what the nodes ask for.

use rand::{Rng, RngCore};

use super::config::Adversary;
use super::{Ev, Req, Sim};
use crate::message::{KeyKind, Message};
use crate::node::{Action, InsertOutcome, LocalRequest, PeerId, RequestOutcome};

impl Sim {
    pub(super) fn run_until(&mut self, end: u64) {
        self.flush();
        while let Some(top) = self.heap.peek() {
            if top.at > end {
                break;
            }
            let Some(e) = self.heap.pop() else { break };
            self.now = self.now.max(e.at);
            self.events += 1;
            self.handle(e.ev);
            self.flush();
        }
        self.now = self.now.max(end);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, msg } => self.on_deliver(to, from, msg),
            Ev::Timer { node } => self.on_timer(node),
            Ev::Insert { node, block } => self.start_insert(node, block),
            Ev::Fetch {
                node,
                block,
                measured,
            } => self.start_fetch(node, block, measured),
            Ev::Join { node } => self.join(node),
            Ev::DropSeed { node, seed } => self.drop_seed(node, seed),
            Ev::Churn => self.churn(),
        }
    }

    /// A message arrives (adversaries see it first, and may drop it or
    /// answer with junk).
    fn on_deliver(&mut self, to: u32, from: u32, msg: Message) {
        let now = self.now;
        let t = to as usize;
        if !self.nodes[t].online {
            return;
        }
        if self.nodes[t].adversary {
            self.observe(to, from, &msg);
            match self.cfg.adversary_kind {
                Adversary::Drop => return,
                Adversary::Corrupt => {
                    if let Message::Request { id, .. } = msg {
                        let mut junk = vec![0u8; 32];
                        self.rng.fill_bytes(&mut junk);
                        self.send(to, from, Message::Accepted { id });
                        self.send(to, from, Message::DataFound { id, block: junk });
                        return;
                    }
                }
                _ => {}
            }
        } else if self.cfg.adversary > 0.0 {
            self.track_depth(to, from, &msg);
        }
        let s = &mut self.nodes[t];
        s.node
            .handle_message(now, PeerId(from.into()), msg, &mut s.store, &mut self.rng);
        self.dirty.push(to);
    }

    /// A node's timer is due.
    fn on_timer(&mut self, node: u32) {
        let now = self.now;
        let s = &mut self.nodes[node as usize];
        if s.timer_at == now {
            s.timer_at = u64::MAX;
        }
        // Offline nodes run their timers too (they have no peers, so
        // this only expires their state).
        s.node.handle_timeout(now, &mut self.rng);
        self.dirty.push(node);
    }

    /// A node inserts block number `block`.
    fn start_insert(&mut self, node: u32, block: u32) {
        let now = self.now;
        if !self.nodes[node as usize].online {
            return;
        }
        let (key, b) = self.blocks[block as usize].clone();
        let s = &mut self.nodes[node as usize];
        let id = s.node.handle_local_request(
            now,
            LocalRequest::Insert {
                key,
                kind: KeyKind::Chk,
                block: b,
            },
            &mut self.rng,
        );
        self.reqs.insert(id.0, Req::new(node, block, false, None));
        self.dirty.push(node);
    }

    /// A node fetches block number `block` (another online node if it
    /// has left meanwhile).
    fn start_fetch(&mut self, node: u32, block: u32, measured: bool) {
        let now = self.now;
        let (key, _) = self.blocks[block as usize];
        // The requester chosen in advance may have left meanwhile.
        let node = if self.nodes[node as usize].online {
            node
        } else {
            self.random_online_honest()
        };
        let s = &mut self.nodes[node as usize];
        if s.store.has(&key) {
            // The embedder answers from its own store; no traffic.
            let id = self.rng.next_u64();
            self.reqs
                .insert(id, Req::new(node, block, measured, Some(Ok(()))));
            return;
        }
        let id = s.node.handle_local_request(
            now,
            LocalRequest::Fetch {
                key,
                kind: KeyKind::Chk,
            },
            &mut self.rng,
        );
        self.reqs
            .insert(id.0, Req::new(node, block, measured, None));
        if self.cfg.adversary > 0.0 && measured {
            self.depth.insert((id.0, node), 0);
        }
        self.dirty.push(node);
    }

    /// Opennet growth: a newcomer links to a seed and announces.
    fn join(&mut self, node: u32) {
        let now = self.now;
        let s = &mut self.nodes[node as usize];
        s.online = true;
        let seed = self.rng.gen_range(0..self.seeds());
        self.link(node, seed);
        let s = &mut self.nodes[node as usize];
        s.node
            .handle_local_request(now, LocalRequest::Announce, &mut self.rng);
        self.dirty.push(node);
        self.dirty.push(seed);
        self.push(now + 5_000, Ev::DropSeed { node, seed });
    }

    /// The newcomer's seed connection goes once it has peers of its own.
    fn drop_seed(&mut self, node: u32, seed: u32) {
        let now = self.now;
        // Seed connections are temporary: drop once the newcomer
        // has a few peers of its own.
        if self.nodes[node as usize].node.peer_count() > 3 {
            self.unlink(node, seed);
        } else {
            self.push(now + 5_000, Ev::DropSeed { node, seed });
        }
    }

    /// One offline node comes back and one online node leaves.
    fn churn(&mut self) {
        let now = self.now;
        if !self.offline.is_empty() {
            let k = self.rng.gen_range(0..self.offline.len());
            let back = self.offline.swap_remove(k);
            let leave = self.random_leaver();
            self.go_offline(leave);
            self.come_back(back);
            let next = now + self.churn_interval;
            self.push(next, Ev::Churn);
        }
    }

    /// Process actions of every node touched, until quiet; then re-arm
    /// their timers.
    pub(super) fn flush(&mut self) {
        while let Some(i) = self.dirty.pop() {
            while let Some(a) = self.nodes[i as usize].node.poll_action() {
                self.apply(i, a);
            }
            let s = &mut self.nodes[i as usize];
            if let Some(t) = s.node.poll_timeout() {
                let t = t.max(self.now);
                if t < s.timer_at {
                    s.timer_at = t;
                    self.push(t, Ev::Timer { node: i });
                }
            }
        }
    }

    fn apply(&mut self, i: u32, a: Action) {
        match a {
            Action::Send { to, msg } => self.send(i, to.0 as u32, msg),
            Action::StoreBlock {
                space, key, block, ..
            } => {
                let s = &mut self.nodes[i as usize];
                let me = s.node.location();
                s.store.put(space, key, block, me);
            }
            Action::RequestDone { id, outcome } => {
                let failed = !matches!(outcome, RequestOutcome::Found(_));
                let available = failed
                    && self.reqs.get(&id.0).is_some_and(|r| {
                        let key = self.blocks[r.block as usize].0;
                        r.measured && self.nodes.iter().any(|n| n.online && n.store.has(&key))
                    });
                if let Some(r) = self.reqs.get_mut(&id.0) {
                    r.available = !failed || available;
                    r.outcome = Some(match outcome {
                        RequestOutcome::Found(_) => Ok(()),
                        RequestOutcome::NotFound => Err("not-found".into()),
                        RequestOutcome::RouteNotFound => Err("route-not-found".into()),
                        RequestOutcome::RecentlyFailed => Err("recently-failed".into()),
                        RequestOutcome::Overloaded => Err("overloaded".into()),
                        RequestOutcome::TimedOut => Err("timed-out".into()),
                    });
                }
            }
            Action::InsertDone { id, outcome } => {
                if let Some(r) = self.reqs.get_mut(&id.0) {
                    let ok = matches!(
                        outcome,
                        InsertOutcome::Success | InsertOutcome::RouteNotFound { .. }
                    );
                    r.outcome = Some(if ok {
                        Ok(())
                    } else {
                        Err(format!("{outcome:?}"))
                    });
                    if self.counting_inserts {
                        self.inserts_done += usize::from(ok);
                    }
                }
            }
            Action::Connect { noderef } => {
                let mut b = [0u8; 4];
                if noderef.address.len() == 4 {
                    b.copy_from_slice(&noderef.address);
                    let target = u32::from_le_bytes(b);
                    if (target as usize) < self.nodes.len() {
                        self.connect(i, target);
                    }
                }
            }
            Action::Disconnect { peer, .. } => {
                let p = peer.0 as u32;
                if (p as usize) < self.nodes.len() {
                    let now = self.now;
                    self.nodes[p as usize]
                        .node
                        .remove_peer(now, PeerId(i.into()), &mut self.rng);
                    self.dirty.push(p);
                }
            }
            Action::LocationChanged { .. } => {}
        }
    }

    fn send(&mut self, from: u32, to: u32, mut msg: Message) {
        if self.nodes[from as usize].adversary && self.cfg.adversary_kind == Adversary::LieHtl {
            match &mut msg {
                Message::Request { htl, .. }
                | Message::Insert { htl, .. }
                | Message::RouteNotFound { htl, .. } => {
                    *htl = self.cfg.htl;
                }
                _ => {}
            }
        }
        if self.measuring {
            self.messages += 1;
            *self.by_kind.entry(msg.name()).or_default() += 1;
        }
        if let Some(id) = msg.id() {
            if let Some(r) = self.reqs.get_mut(&id) {
                r.messages += 1;
                if matches!(msg, Message::DataFound { .. }) {
                    r.data_found_msgs += 1;
                }
            }
        }
        if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss.min(1.0)) {
            return;
        }
        let at = self.now + self.latency(from, to);
        self.push(at, Ev::Deliver { to, from, msg });
    }

    fn track_depth(&mut self, to: u32, from: u32, msg: &Message) {
        if let Message::Request { id, .. } = msg {
            if let Some(&d) = self.depth.get(&(*id, from)) {
                self.depth.entry((*id, to)).or_insert(d.saturating_add(1));
            }
        }
    }

    fn observe(&mut self, to: u32, from: u32, msg: &Message) {
        let Message::Request { id, htl, .. } = msg else {
            return;
        };
        if !self.reqs.get(id).is_some_and(|r| r.measured) {
            return;
        }
        let depth = self
            .depth
            .get(&(*id, from))
            .map_or(u8::MAX, |d| d.saturating_add(1));
        if !self.nodes[from as usize].adversary {
            self.sightings.entry(*id).or_insert((from, *htl, depth));
        } else {
            // Seen by a colluder first: not a candidate any more.
            self.sightings.entry(*id).or_insert((u32::MAX, 0, depth));
        }
        if let Some(&d) = self.depth.get(&(*id, from)) {
            self.depth.entry((*id, to)).or_insert(d.saturating_add(1));
        }
    }
}
