//! The `eclipse` attack: k attacker nodes dial one victim and behave well
//! until they hold all of its opennet peers, then turn into black holes.
//!
//! This is the routing-table insertion attack of Baumeister, Dong, Duan
//! and Tian ("A Routing Table Insertion (RTI) Attack on Freenet", IEEE
//! CyberSecurity 2012), carried to a full eclipse. After the warm-up, one
//! honest node that is not a seed is the victim. Every second of virtual
//! time each attacker that has no link to it dials it; on a link the victim
//! keeps only as a seed client the attacker sends one `Announce` with its
//! own noderef (so a victim that wants a peer takes it, the way newcomers
//! join); every ten seconds it also announces itself through one of its own
//! peers claiming the victim's location, so the announcement is routed to
//! the victim, which dials it if it wants a peer (the route prediction of
//! the RTI attack); an attacker that is the victim's peer asks it for a block now and
//! then (data the victim delivers to it), which made it look useful while
//! any success crossing a link counted for both ends. Honest background
//! traffic runs throughout, and the victim fetches a stored block every
//! [`VICTIM_GAP`]. When the attackers hold every one of the victim's peers
//! (captured), or at [`TURN_AT`] if they never do, they turn into black
//! holes toward the victim: every request it sends them is answered at
//! once with `DataNotFound` (the cheapest answer that used to count as a
//! success), anything else it routes to them is dropped. The run ends at
//! [`HORIZON`].
//!
//! The report: `time_to_capture_s` (None: never), the share of the
//! victim's peers the attackers held when they turned (`precision`, with
//! `base_rate` the attackers' share of all nodes: the share a victim
//! choosing peers at random would give them), the fraction of attackers
//! that got a slot (`recall`), and the victim's request success while they
//! behaved well and after they turned.

use std::collections::BTreeSet;

use rand::Rng;

use crate::report::{round4, AttackReport};
use crate::{Req, Sim};
use lichen_routing::{KeyKind, LocalRequest, Message, NodeRef};

/// How often the attackers act (ms of virtual time).
const STEP: u64 = 1_000;
/// The victim fetches a block this often (ms).
const VICTIM_GAP: u64 = 2_000;
/// An attacker that is not the victim's peer announces toward it this
/// often (ms).
const ANNOUNCE_EVERY: u64 = 10_000;
/// Honest background fetches, one this often (ms).
const BACKGROUND_GAP: u64 = 100;
/// The attackers turn into black holes at this time after the start if
/// they have not captured the victim by then (ms).
pub(crate) const TURN_AT: u64 = 400_000;
/// The attack's length (ms).
pub(crate) const HORIZON: u64 = 600_000;
/// `eclipse-return`: an attacker that is the victim's peer leaves this
/// often (ms; each at its own phase)...
const RETURN_EVERY: u64 = 60_000;
/// ...and dials it again this long after (ms): time for the victim to
/// fill the place it left.
const AWAY: u64 = 30_000;

/// The attack's state.
#[derive(Debug, Default)]
pub(crate) struct EclipseState {
    victim: Option<u32>,
    start: u64,
    /// When the attackers held all the victim's peers, from the start.
    captured: Option<u64>,
    /// When they turned into black holes, from the start.
    turned: Option<u64>,
    /// Peers of the victim, and how many were attackers, when they turned.
    at_turn: (usize, usize),
    /// Attackers that were ever the victim's peer.
    got_in: BTreeSet<u32>,
    /// Links (attacker, link id) on which the attacker announced.
    announced: BTreeSet<(u32, u64)>,
    /// Ids of messages the attackers made up (their replies are theirs).
    own_ids: BTreeSet<u64>,
    /// The victim's fetches: (start time from the start, request id).
    fetches: Vec<(u64, u64)>,
    /// The victim's count of peers dropped as least useful, at the start
    /// and at the end.
    drops: (u64, u64),
    /// `eclipse-return`: attackers away from the victim, until when (ms).
    away: std::collections::BTreeMap<u32, u64>,
}

impl Sim {
    /// The attackers' link to the victim: (attacker's link id, victim's).
    fn eclipse_link(
        &self,
        a: u32,
        victim: u32,
    ) -> Option<(lichen_routing::PeerId, lichen_routing::PeerId)> {
        self.nodes[a as usize]
            .ends
            .iter()
            .find(|(_, (to, _))| *to == victim)
            .map(|(p, (_, q))| (*p, *q))
    }

    /// Run the whole attack (after the warm-up and the inserts).
    pub(crate) fn eclipse_run(&mut self) {
        let seeds = self.seeds();
        let victim = loop {
            let v = self.random_online_honest();
            if v >= seeds {
                break v;
            }
        };
        let t0 = self.now;
        self.attack.eclipse.victim = Some(victim);
        self.attack.eclipse.start = t0;
        let drops = |s: &Self| s.nodes[victim as usize].policy.stats().dropped_least_useful;
        self.attack.eclipse.drops.0 = drops(self);
        let blocks = self.blocks.len() as u32;
        let mut t = t0 + BACKGROUND_GAP;
        while t < t0 + HORIZON {
            let node = self.random_online_honest();
            let block = self.rng.gen_range(0..blocks);
            self.push_fetch(t, node, block);
            t += BACKGROUND_GAP;
        }
        let mut step = t0;
        while step < t0 + HORIZON {
            step += STEP;
            self.run_until(step);
            self.eclipse_step(victim, blocks);
        }
        self.attack.eclipse.drops.1 = drops(self);
        // Let the last fetches finish.
        self.run_until(self.now + 60_000);
    }

    /// One step of the attackers, and the victim's fetch when due.
    fn eclipse_step(&mut self, victim: u32, blocks: u32) {
        let since = self.now - self.attack.eclipse.start;
        if since % VICTIM_GAP == 0 {
            self.victim_fetch(victim, blocks);
        }
        let peers = self.peer_nodes(victim);
        let held = peers
            .iter()
            .filter(|&&p| self.nodes[p as usize].adversary)
            .count();
        for &p in &peers {
            if self.nodes[p as usize].adversary {
                self.attack.eclipse.got_in.insert(p);
            }
        }
        let st = &mut self.attack.eclipse;
        if st.turned.is_none() {
            let all = !peers.is_empty() && held == peers.len();
            if all {
                st.captured = Some(since);
            }
            if all || since >= TURN_AT {
                st.turned = Some(since);
                st.at_turn = (peers.len(), held);
            }
        }
        let attackers: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&i| self.nodes[i as usize].adversary && self.nodes[i as usize].online)
            .collect();
        for a in attackers {
            self.attacker_step(a, victim, blocks);
        }
        self.flush();
    }

    /// Attacker `a`: dial the victim, announce on a seed-client link, or
    /// (as its peer, behaving well) ask it for a block; and, while not its
    /// peer, every [`ANNOUNCE_EVERY`] announce itself toward the victim's
    /// location through one of its own peers (the route-prediction step of
    /// the RTI attack: nodes on the way, the victim above all, that want a
    /// peer dial it).
    fn attacker_step(&mut self, a: u32, victim: u32, blocks: u32) {
        let link = self.eclipse_link(a, victim);
        let is_peer = link.is_some_and(|(_, theirs)| {
            let v = &self.nodes[victim as usize].policy;
            v.routing().peers().any(|(p, _)| p == theirs)
        });
        let since = self.now - self.attack.eclipse.start;
        if self.cfg.attack == Some(crate::config::Attack::EclipseReturn) {
            if self
                .attack
                .eclipse
                .away
                .get(&a)
                .is_some_and(|&t| t > self.now)
            {
                return;
            }
            if let (true, None, Some((mine, _))) = (is_peer, self.attack.eclipse.turned, link) {
                if (since / STEP + u64::from(a)) % (RETURN_EVERY / STEP) == 0 {
                    // Leave (the victim keeps it in its peer list: a link
                    // that ends is not a drop) and come back later.
                    self.close(a, mine, true);
                    self.attack.eclipse.away.insert(a, self.now + AWAY);
                    return;
                }
            }
        }
        if !is_peer && (since / STEP + u64::from(a)) % (ANNOUNCE_EVERY / STEP) == 0 {
            self.targeted_announce(a, victim);
        }
        let Some((mine, theirs)) = link else {
            self.make_room(a);
            let v = &self.nodes[victim as usize];
            let (r, b) = (v.noderef.clone(), v.bytes.clone());
            self.connect(a, r, Some(b));
            return;
        };
        if self.nodes[victim as usize].policy.is_seed_client(theirs) {
            if self.attack.eclipse.announced.insert((a, mine.0)) {
                let location = self.nodes[a as usize].policy.routing().location();
                self.inject_announce(a, mine, location);
            }
        } else if is_peer && self.attack.eclipse.turned.is_none() && self.rng.gen_bool(0.2) {
            let id = self.rng.gen();
            self.attack.eclipse.own_ids.insert(id);
            let key = self.blocks[self.rng.gen_range(0..blocks) as usize].0;
            let htl = self.cfg.htl.saturating_sub(4).max(1);
            let kind = KeyKind::Chk;
            self.send(a, mine, Message::Request { id, key, htl, kind });
        }
    }

    /// Attacker `a` has room for one more peer: when full it closes one of
    /// its links (its policy would refuse a new one).
    fn make_room(&mut self, a: u32) {
        if self.nodes[a as usize].policy.peer_count() >= self.cfg.degree {
            let first = self.nodes[a as usize].ends.keys().next().copied();
            if let Some(p) = first {
                self.close(a, p, true);
            }
        }
    }

    /// Attacker `a` announces its noderef, claiming the victim's location,
    /// through one of its peers. Its own routing core announces first (to
    /// its real location), so that it accepts the nodes that dial it.
    fn targeted_announce(&mut self, a: u32, victim: u32) {
        let Some(&via) = self.nodes[a as usize]
            .ends
            .iter()
            .find(|(_, (to, _))| *to != victim)
            .map(|(p, _)| p)
        else {
            return;
        };
        self.make_room(a);
        let now = self.now_i();
        let s = &mut self.nodes[a as usize];
        s.policy
            .local_request(now, LocalRequest::Announce, &mut self.rng);
        self.dirty.push(a);
        let location = self.nodes[victim as usize].policy.routing().location();
        if self.nodes[a as usize].ends.contains_key(&via) {
            self.inject_announce(a, via, location);
        }
    }

    /// Attacker `a` sends an `Announce` of its own noderef, at `location`,
    /// on its link `on`.
    fn inject_announce(
        &mut self,
        a: u32,
        on: lichen_routing::PeerId,
        location: lichen_routing::Location,
    ) {
        let id = self.rng.gen();
        self.attack.eclipse.own_ids.insert(id);
        let noderef = NodeRef {
            location,
            address: self.nodes[a as usize].bytes.clone(),
        };
        let htl = self.cfg.htl;
        self.send(
            a,
            on,
            Message::Announce {
                id,
                htl,
                noderef,
                target: None,
                unreachable: false,
                room: None,
            },
        );
    }

    /// The victim fetches a block it does not hold.
    fn victim_fetch(&mut self, victim: u32, blocks: u32) {
        let now = self.now_i();
        let block = (0..20).map(|_| self.rng.gen_range(0..blocks)).find(|&b| {
            !self.nodes[victim as usize]
                .store
                .has(&self.shelf, &self.blocks[b as usize].0)
        });
        let Some(block) = block else {
            return;
        };
        let key = self.blocks[block as usize].0;
        let s = &mut self.nodes[victim as usize];
        let req = LocalRequest::Fetch {
            key,
            kind: KeyKind::Chk,
        };
        let id = s.policy.local_request(now, req, &mut self.rng);
        self.reqs.insert(id.0, Req::new(victim, block, false, None));
        let since = self.now - self.attack.eclipse.start;
        self.attack.eclipse.fetches.push((since, id.0));
        self.dirty.push(victim);
    }

    /// Attacker `to` got `msg` from `from`: replies to what it made up are
    /// its own (swallowed); after the turn, the victim's traffic meets a
    /// black hole. Returns whether the message was taken.
    pub(crate) fn eclipse_intercept(&mut self, to: u32, from: u32, msg: &Message) -> bool {
        let st = &self.attack.eclipse;
        if msg.id().is_some_and(|id| st.own_ids.contains(&id)) {
            return true;
        }
        if st.turned.is_none() || st.victim != Some(from) {
            return false;
        }
        let Some((mine, _)) = self.eclipse_link(to, from) else {
            return true;
        };
        match msg {
            Message::Request { id, .. } => {
                self.send(to, mine, Message::Accepted { id: *id });
                self.send(to, mine, Message::DataNotFound { id: *id });
                true
            }
            m => m.id().is_some(),
        }
    }

    /// The report: time to capture, the share held, the victim's success.
    pub(crate) fn eclipse_report(&self) -> AttackReport {
        let st = &self.attack.eclipse;
        let turned = st.turned.unwrap_or(HORIZON);
        let success = |from: u64, to: u64| {
            let (mut ok, mut all) = (0usize, 0usize);
            for &(t, id) in &st.fetches {
                if t < from || t >= to {
                    continue;
                }
                all += 1;
                ok += usize::from(
                    self.reqs
                        .get(&id)
                        .is_some_and(|r| r.outcome == Some(Ok(()))),
                );
            }
            round4(ok as f64 / all.max(1) as f64)
        };
        let k = self.nodes.iter().filter(|s| s.adversary).count();
        let (peers, held) = st.at_turn;
        let ratio = |a: usize, b: usize| round4(a as f64 / b.max(1) as f64);
        AttackReport {
            name: self.cfg.attack.map_or("eclipse", |a| a.name()).into(),
            candidates: peers,
            true_candidates: held,
            reachable: k,
            accusations: st.got_in.len(),
            precision: ratio(held, peers),
            recall: ratio(st.got_in.len(), k),
            false_positive_rate: 0.0,
            base_rate: ratio(k, self.nodes.len().saturating_sub(1)),
            threshold: 1.0,
            time_to_capture_s: st.captured.map(|t| t as f64 / 1000.0),
            success_before_turn: Some(success(0, turned)),
            success_after_turn: Some(success(turned, HORIZON)),
            replacements: Some(st.drops.1 - st.drops.0),
            cases: std::collections::BTreeMap::new(),
            pitch_black: None,
            correlation: None,
        }
    }
}
