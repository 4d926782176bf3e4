//! The event loop: delivering messages, firing timers and ticks, starting
//! local requests, and carrying out what the policies ask for.

use std::cmp::Reverse;
use std::sync::Arc;

use rand::{Rng, RngCore};

use super::config::Adversary;
use super::{Ev, Fail, Req, Shelved, Sim, SimNode, TICK_MS};
use lichen_link::noderef::NodeRef;
use lichen_link::policy::mesh::{open_link_from, pair_mut};
use lichen_link::policy::{Dialed, Output, PUNCH_WINDOW};
use lichen_routing::{InsertOutcome, KeyKind, LocalRequest, Message, PeerId, RequestOutcome};

impl Sim {
    pub(super) fn run_until(&mut self, end: u64) {
        self.flush();
        while let Some(at) = self.queue.next_at() {
            if at > end {
                break;
            }
            let Some((at, ev)) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            self.events += 1;
            self.events_by_kind[ev.kind()] += 1;
            if let Ev::Deliver { msg, .. } = &ev {
                let name = msg.name();
                // A handful of names, looked up once an event: a scan
                // beats a map's string comparisons.
                match self.delivered.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, count)) => *count += 1,
                    None => self.delivered.push((name, 1)),
                }
            }
            self.handle(ev);
            self.flush();
            self.exit_ctx = None;
        }
        self.now = self.now.max(end);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, pid, from, msg } => self.on_deliver(to, pid, from, *msg),
            Ev::Timer { node } => self.on_timer(node),
            Ev::Tick => self.on_tick(),
            Ev::Insert { node, block } => self.start_insert(node, block),
            Ev::Fetch {
                node,
                block,
                measured,
            } => self.start_fetch(node, block, measured),
            Ev::Join { node } => self.join(node),
            Ev::Churn => self.churn(),
            Ev::Attack { tag } => self.attack_event(tag),
        }
    }

    /// A message arrives on a link that may have closed meanwhile
    /// (adversaries see it first, and may drop it or answer with junk).
    fn on_deliver(&mut self, to: u32, pid: PeerId, from: u32, msg: Message) {
        let t = to as usize;
        if !self.nodes[t].online || !self.nodes[t].ends.contains_key(&pid) {
            return;
        }
        if let Message::Request { id, key, .. } | Message::Insert { id, key, .. } = &msg {
            let root = self.root(*id);
            self.last_in.insert((to, super::key_tag(key)), root);
        }
        self.attack_delivered(to, from, &msg);
        if self.nodes[t].adversary {
            self.observe(to, from, &msg);
            if self.attack_observe(to, from, &msg) {
                // An answer to the attack's own probe: not for the core.
                return;
            }
            // Misbehaving adversaries still say hello (or no link would
            // ever carry their misdeeds); they spoil routed traffic.
            let routed = msg.id().is_some();
            if self.cfg.adversary_kind == Adversary::LieSwap && self.pitch_lie(to, pid, &msg) {
                return;
            }
            match self.cfg.adversary_kind {
                Adversary::Drop if routed => return,
                Adversary::Corrupt => {
                    if let Message::Request { id, .. } = msg {
                        let mut junk = vec![0u8; 32];
                        self.rng.fill_bytes(&mut junk);
                        self.send(to, pid, Message::Accepted { id });
                        self.send(to, pid, Message::DataFound { id, block: junk });
                        return;
                    }
                }
                _ => {}
            }
        } else if self.cfg.adversary > 0.0 {
            self.track_depth(to, from, &msg);
        }
        if self.cfg.tunnel_hops > 0 && matches!(msg, Message::Tunnel { .. }) {
            self.exit_ctx = Some(to);
        }
        let now = self.now_i();
        let s = &mut self.nodes[t];
        let mut store = Shelved {
            store: &mut s.store,
            shelf: &self.shelf,
        };
        s.policy.message(now, pid, msg, &mut store, &mut self.rng);
        self.dirty.push(to);
    }

    /// Node `i`'s policy's next deadline (virtual ms; `u64::MAX`: none).
    fn due(&self, i: u32) -> u64 {
        self.nodes[i as usize]
            .policy
            .poll_timeout()
            .map_or(u64::MAX, |t| self.ms(t))
    }

    /// A node's routing timer is due.
    fn on_timer(&mut self, node: u32) {
        let timer = &mut self.timers[node as usize];
        if timer.armed != self.now {
            return;
        }
        // The deadline it was armed for may be gone (its request ended, its
        // seed client left): it wakes only when something is due. `due` is
        // the policy's own `poll_timeout` as of its last flush (nothing
        // changes a policy without a flush), so this costs no visit to
        // the node.
        timer.armed = u64::MAX;
        let due = timer.due;
        debug_assert_eq!(due, self.due(node), "a policy changed without a flush");
        match due {
            u64::MAX => return,
            t if t > self.now => {
                self.timers[node as usize].armed = t;
                self.push(t, Ev::Timer { node });
                return;
            }
            _ => {}
        }
        let now = self.now_i();
        let s = &mut self.nodes[node as usize];
        // Offline nodes run their timers too (they have no links, so
        // this only expires their state).
        s.policy.timeout(now, &mut self.rng);
        self.dirty.push(node);
    }

    /// Every online node's policy ticks: remembered peers that are down
    /// and due are redialed. Only the policies whose `tick_due` has come
    /// are ticked, in node order: a tick before it does nothing (no
    /// output, no change), so the run is the same as ticking them all,
    /// at a cost that does not grow with the number of idle nodes.
    fn on_tick(&mut self) {
        let now = self.now_i();
        for i in std::mem::take(&mut self.touched) {
            self.tick_stale[i as usize] = false;
            if let Some(t) = self.nodes[i as usize].policy.tick_due() {
                let t = self.ms(t);
                self.schedule_tick(i, t);
            }
        }
        let mut due = Vec::new();
        while let Some(&Reverse((at, i))) = self.tick_heap.peek() {
            if at > self.now {
                break;
            }
            self.tick_heap.pop();
            if self.tick_at[i as usize] == at {
                self.tick_at[i as usize] = u64::MAX;
                due.push(i);
            }
        }
        due.sort_unstable();
        for i in due {
            let s = &mut self.nodes[i as usize];
            if s.online {
                s.policy.tick(now);
                self.dirty.push(i);
            }
        }
        if self.now >= self.aged_at + super::AGE_MS {
            self.aged_at = self.now;
            self.alias.age();
            self.last_in.age();
        }
        self.push(self.now + TICK_MS, Ev::Tick);
    }

    /// A node inserts block number `block`.
    fn start_insert(&mut self, node: u32, block: u32) {
        if !self.nodes[node as usize].online {
            return;
        }
        let now = self.now_i();
        let (key, b) = self.blocks[block as usize].clone();
        let s = &mut self.nodes[node as usize];
        let id = s.policy.local_request(
            now,
            LocalRequest::Insert {
                key,
                kind: KeyKind::Chk,
                block: b,
            },
            &mut self.rng,
        );
        let mut r = Req::new(node, block, false, None);
        r.insert = true;
        r.started = self.now;
        self.reqs.insert(id.0, r);
        self.opened(id.0, key);
        self.dirty.push(node);
    }

    /// A node fetches block number `block` (another online node if it
    /// has left meanwhile).
    fn start_fetch(&mut self, node: u32, block: u32, measured: bool) {
        let now = self.now_i();
        let (key, _) = self.blocks[block as usize];
        // The requester chosen in advance may have left meanwhile.
        let node = if self.nodes[node as usize].online {
            node
        } else {
            self.random_online_honest()
        };
        self.attack_fetch_started(node, block);
        let s = &mut self.nodes[node as usize];
        if s.store.has(&self.shelf, &key) {
            // The embedder answers from its own store; no traffic.
            let id = self.rng.next_u64();
            let mut r = Req::new(node, block, measured, Some(Ok(())));
            r.started = self.now;
            r.finished = Some(self.now);
            self.reqs.insert(id, r);
            return;
        }
        let id = s.policy.local_request(
            now,
            LocalRequest::Fetch {
                key,
                kind: KeyKind::Chk,
            },
            &mut self.rng,
        );
        let mut r = Req::new(node, block, measured, None);
        r.started = self.now;
        self.reqs.insert(id.0, r);
        self.opened(id.0, key);
        if self.cfg.adversary > 0.0 && measured {
            self.depth.insert((id.0, node), 0);
        }
        self.dirty.push(node);
    }

    /// Opennet growth: a newcomer starts; with no peer, its policy dials
    /// the seeds (which keep it as a peer, or, when full, as a seed client
    /// for one announcement) and announces once the first peer is up.
    fn join(&mut self, node: u32) {
        if let Some(j) = self.joined.get_mut(node as usize) {
            j.0 = self.now;
        }
        self.nodes[node as usize].online = true;
        let now = self.now_i();
        self.nodes[node as usize].policy.tick(now);
        self.dirty.push(node);
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

    /// The peer count `JoinReport` times: half the peer limit.
    pub(super) fn join_target(&self) -> usize {
        (self.cfg.degree / 2).max(1)
    }

    /// Carry out the outputs of every node touched, until quiet; then
    /// re-arm their timers.
    pub(super) fn flush(&mut self) {
        let now = self.now_i();
        while let Some(i) = self.dirty.pop() {
            while let Some(o) = self.nodes[i as usize].policy.poll_output(now) {
                self.apply(i, o);
            }
            if let Some(&(since, u64::MAX)) = self.joined.get(i as usize) {
                if since != u64::MAX
                    && self.nodes[i as usize].policy.peer_count() >= self.join_target()
                {
                    self.joined[i as usize].1 = self.now;
                }
            }
            let due = self.due(i);
            let timer = &mut self.timers[i as usize];
            timer.due = due;
            if due != u64::MAX {
                let t = due.max(self.now);
                if t < timer.armed {
                    timer.armed = t;
                    self.push(t, Ev::Timer { node: i });
                }
            }
            // Its next tick is worked out at the next Tick (a node is
            // often touched many times between two).
            if !self.tick_stale[i as usize] {
                self.tick_stale[i as usize] = true;
                self.touched.push(i);
            }
        }
    }

    fn apply(&mut self, i: u32, o: Output) {
        match o {
            Output::Send { peer, msg } => self.send(i, peer, msg),
            Output::Dial { noderef, bytes } => self.connect(i, noderef, bytes),
            Output::Close { peer } => self.close(i, peer, false),
            // Dial-backs are off in the simulator (`policy_config`): it
            // knows who is behind NAT.
            Output::Probe { .. } => {}
            Output::Punch { key, dialed, .. } => self.punch(i, key, dialed),
            // Nobody invites anyone in the simulator.
            Output::InvitationDone { .. } => {}
            // Only a node that restarts reads what it saved, and only
            // churn restarts nodes once the run is under way: without
            // churn the snapshot (a copy of every remembered noderef)
            // is not kept.
            Output::SavePeers(list) if self.cfg.churn > 0.0 => {
                self.nodes[i as usize].saved = Some(list);
            }
            Output::SavePeers(_) => {}
            Output::StoreBlock {
                space, key, block, ..
            } => {
                let s = &mut self.nodes[i as usize];
                let me = s.policy.routing().location();
                s.store.put(&mut self.shelf, space, key, block, me);
            }
            Output::RequestDone { id, outcome } => self.request_done(id.0, &outcome),
            Output::InsertDone { id, outcome } => self.insert_done(id.0, &outcome),
        }
    }

    /// Tunnels on: own request `id` for `key` is under way.
    fn opened(&mut self, id: u64, key: lichen_routing::Key) {
        if self.cfg.tunnel_hops > 0 {
            self.open_by_key.entry(key).or_default().push(id);
        }
    }

    /// Own request `id` ended now.
    fn closed(&mut self, id: u64) {
        let now = self.now;
        let Some(r) = self.reqs.get_mut(&id) else {
            return;
        };
        r.finished.get_or_insert(now);
        let key = self.blocks[r.block as usize].0;
        if let Some(v) = self.open_by_key.get_mut(&key) {
            v.retain(|&x| x != id);
            if v.is_empty() {
                self.open_by_key.remove(&key);
            }
        }
    }

    fn request_done(&mut self, id: u64, outcome: &RequestOutcome) {
        self.closed(id);
        let failed = !matches!(outcome, RequestOutcome::Found(_));
        let available = failed
            && self.reqs.get(&id).is_some_and(|r| {
                let key = self.blocks[r.block as usize].0;
                r.measured
                    && self
                        .nodes
                        .iter()
                        .any(|n| n.online && n.store.has(&self.shelf, &key))
            });
        if let Some(r) = self.reqs.get_mut(&id) {
            r.available = !failed || available;
            r.outcome = Some(match outcome {
                RequestOutcome::Found(_) => Ok(()),
                RequestOutcome::NotFound => Err(Fail::NotFound),
                RequestOutcome::RouteNotFound => Err(Fail::RouteNotFound),
                RequestOutcome::RecentlyFailed => Err(Fail::RecentlyFailed),
                RequestOutcome::Overloaded => Err(Fail::Overloaded),
                RequestOutcome::TimedOut => Err(Fail::TimedOut),
            });
        }
    }

    fn insert_done(&mut self, id: u64, outcome: &InsertOutcome) {
        self.closed(id);
        if let Some(r) = self.reqs.get_mut(&id) {
            // Ran out of peers above the storing HTL: no node kept it (the
            // inserter keeps nothing of its own in the shared store).
            let ok = match outcome {
                InsertOutcome::Success => true,
                InsertOutcome::RouteNotFound { htl } => *htl <= self.store_htl,
                _ => false,
            };
            r.outcome = Some(match outcome {
                _ if ok => Ok(()),
                InsertOutcome::Success => Ok(()),
                InsertOutcome::RouteNotFound { .. } => Err(Fail::StoredNowhere),
                InsertOutcome::Overloaded => Err(Fail::InsertOverloaded),
                InsertOutcome::TimedOut => Err(Fail::InsertTimedOut),
                InsertOutcome::Collision(_) => Err(Fail::InsertCollision),
                InsertOutcome::InvalidBlock => Err(Fail::InsertInvalidBlock),
            });
            if self.counting_inserts {
                self.inserts_done += usize::from(ok);
            }
        }
    }

    /// Node `i` dials: the handshake succeeds at once if the node named
    /// exists and both are online; each side's policy then keeps or
    /// refuses the link, and the hellos travel with the link's latency.
    pub(super) fn connect(
        &mut self,
        i: u32,
        noderef: impl Into<Arc<NodeRef>>,
        bytes: Option<lichen_routing::NoderefBytes>,
    ) {
        let now = self.now_i();
        let noderef = noderef.into();
        let key = noderef.static_key;
        // A node behind NAT takes no connection it did not open.
        let target = self.by_key.get(&key).copied().filter(|&j| {
            let to = &self.nodes[j as usize];
            j != i && to.online && !to.nat && self.nodes[i as usize].online
        });
        let Some(j) = target else {
            self.nodes[i as usize].policy.dial_failed(now, &key);
            self.dirty.push(i);
            return;
        };
        self.attack_dialed(i, j);
        let Some((a, b)) = pair_mut(&mut self.nodes, i as usize, j as usize) else {
            return;
        };
        let dialed = Dialed { noderef, bytes };
        // The dialed side sees the link come from the dialer's address
        // (the first of its noderef, parsed when the node was made).
        let a_ip = a.noderef.addresses.first().map(std::net::SocketAddr::ip);
        let rng = &mut self.rng;
        if let Some((pa, pb)) = open_link_from(now, &mut a.policy, a_ip, &mut b.policy, dialed, rng)
        {
            a.ends.insert(pa, (j, pb));
            b.ends.insert(pb, (i, pa));
        }
        self.dirty.push(i);
        self.dirty.push(j);
    }

    /// Node `i` punches toward the node with key `key` (`dialed`: as
    /// initiator). Once that node punches back toward `i` within
    /// [`PUNCH_WINDOW`], the link comes up at once (the initiator's
    /// dial), unless either is offline or behind a symmetric NAT: then
    /// both punches fail. A punch never answered just ends (the policy
    /// forgets it after the window).
    pub(super) fn punch(&mut self, i: u32, key: [u8; 32], dialed: Option<Dialed>) {
        let now = self.now_i();
        let window = u64::try_from(PUNCH_WINDOW.as_millis()).unwrap_or(u64::MAX);
        let Some(j) = self.by_key.get(&key).copied().filter(|&j| j != i) else {
            self.nodes[i as usize]
                .policy
                .punch_failed(&key, dialed.is_some());
            self.dirty.push(i);
            return;
        };
        let ik = self.nodes[i as usize].key;
        let other = match self.punches.remove(&(j, ik)) {
            Some((d, at)) if self.now.saturating_sub(at) < window => d,
            _ => {
                if self.punches.len() >= 4 * self.nodes.len() {
                    let t = self.now;
                    self.punches
                        .retain(|_, (_, at)| t.saturating_sub(*at) < window);
                }
                self.punches.insert((i, key), (dialed, self.now));
                return;
            }
        };
        let (init, resp, d) = match (dialed, other) {
            (Some(d), None) => (i, j, d),
            (None, Some(d)) => (j, i, d),
            // Both or neither initiator: not a pair the policy makes.
            _ => return,
        };
        let fails = |s: &SimNode| !s.online || s.symmetric;
        if fails(&self.nodes[i as usize]) || fails(&self.nodes[j as usize]) {
            let (ik, rk) = (self.nodes[init as usize].key, self.nodes[resp as usize].key);
            self.nodes[init as usize].policy.punch_failed(&rk, true);
            self.nodes[resp as usize].policy.punch_failed(&ik, false);
            self.dirty.push(i);
            self.dirty.push(j);
            return;
        }
        self.attack_dialed(init, resp);
        let Some((a, b)) = pair_mut(&mut self.nodes, init as usize, resp as usize) else {
            return;
        };
        let a_ip = a.noderef.addresses.first().map(std::net::SocketAddr::ip);
        let rng = &mut self.rng;
        if let Some((pa, pb)) = open_link_from(now, &mut a.policy, a_ip, &mut b.policy, d, rng) {
            a.ends.insert(pa, (resp, pb));
            b.ends.insert(pb, (init, pa));
        }
        self.dirty.push(i);
        self.dirty.push(j);
    }

    /// Link end `(i, peer)` closes: its other end sees the close. `both`:
    /// the link broke (neither side closed it), so `i` hears of it too.
    pub(super) fn close(&mut self, i: u32, peer: PeerId, both: bool) {
        let now = self.now_i();
        let Some((j, pj)) = self.nodes[i as usize].ends.remove(&peer) else {
            return;
        };
        self.nodes[j as usize].ends.remove(&pj);
        self.nodes[j as usize]
            .policy
            .link_closed(now, pj, &mut self.rng);
        self.dirty.push(j);
        if both {
            self.nodes[i as usize]
                .policy
                .link_closed(now, peer, &mut self.rng);
            self.dirty.push(i);
        }
    }

    /// Node `from` sends `msg` on its link `peer` (an adversary's attack
    /// may drop it, or follow it with a message of its own).
    pub(crate) fn send(&mut self, from: u32, peer: PeerId, msg: Message) {
        let Some(&(to, _)) = self.nodes[from as usize].ends.get(&peer) else {
            return;
        };
        let mut extra = None;
        if self.nodes[from as usize].adversary {
            let (drop, follow) = self.attack_on_send(from, to, &msg);
            if drop {
                return;
            }
            extra = follow;
        }
        self.transmit(from, peer, msg);
        // The attack's own message is sent as it is: through `send`, the
        // attack's rules for its node's messages would apply to it too
        // (the fold attack drops every fold offer its node makes, and so
        // dropped its own).
        if let Some(m) = extra {
            self.transmit(from, peer, m);
        }
    }

    /// Put `msg` from node `from` on its link `peer`, with the link's
    /// latency (counted, and lost at the configured rate).
    fn transmit(&mut self, from: u32, peer: PeerId, mut msg: Message) {
        let Some(&(to, pid)) = self.nodes[from as usize].ends.get(&peer) else {
            return;
        };
        self.attack_sent(from, to, &msg);
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
            if matches!(msg, Message::Tunnel { .. }) {
                self.tunnel_cells += 1;
            }
        }
        if let Message::Request { id, key, .. } | Message::Insert { id, key, .. } = &msg {
            self.follow_id(from, *id, *key);
        }
        if let Some(id) = msg.id().map(|i| self.root(i)) {
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
        self.push(
            at,
            Ev::Deliver {
                to,
                pid,
                from,
                msg: Box::new(msg),
            },
        );
    }

    /// The id its originator gave the request or insert `id` (the same
    /// unless a hop forwarded it under a fresh one).
    pub(super) fn root(&self, id: u64) -> u64 {
        self.alias.get(&id).copied().unwrap_or(id)
    }

    /// Node `from` sends a request or insert for `key` under `id`: an id
    /// nobody started and not seen before stands for the last one `from`
    /// received for `key` (a hop forwarding under a fresh id). With
    /// tunnels, a node that just received a tunnel message and sends a
    /// fresh request runs it as an exit: it stands for the newest
    /// unfinished own request for `key` of another node (ground truth
    /// the nodes do not have; when several users want the same key at
    /// once it may pick the wrong one, which only moves hop and message
    /// counts between them).
    fn follow_id(&mut self, from: u32, id: u64, key: lichen_routing::Key) {
        if self.reqs.contains_key(&id) || self.alias.contains_key(&id) {
            return;
        }
        let exit = || {
            self.open_by_key.get(&key).and_then(|v| {
                v.iter()
                    .rev()
                    .find(|r| self.reqs.get(r).is_some_and(|q| q.origin != from))
                    .copied()
            })
        };
        let root = if self.exit_ctx == Some(from) {
            exit().or_else(|| self.last_in.get(&(from, super::key_tag(&key))).copied())
        } else {
            self.last_in
                .get(&(from, super::key_tag(&key)))
                .copied()
                .or_else(exit)
        };
        if let Some(root) = root {
            if root != id {
                self.alias.insert(id, root);
            }
        }
    }

    fn track_depth(&mut self, to: u32, from: u32, msg: &Message) {
        if let Message::Request { id, .. } = msg {
            let id = &self.root(*id);
            if let Some(&d) = self.depth.get(&(*id, from)) {
                self.depth.entry((*id, to)).or_insert(d.saturating_add(1));
            }
        }
    }

    fn observe(&mut self, to: u32, from: u32, msg: &Message) {
        let Message::Request { id, htl, .. } = msg else {
            return;
        };
        let id = &self.root(*id);
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
