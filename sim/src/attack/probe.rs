//! The `probe` attack: a neighbour asks the victim for keys the victim's
//! user just fetched, inserted or failed to find, and compares the
//! answers and their timing with those for keys nobody asked the victim
//! for.
//!
//! `--downloaders` victims are picked among the honest nodes with a
//! colluder among their peers. Each victim's user, a few seconds apart,
//! fetches a block that exists, inserts a new block and fetches a key that
//! does not exist. At the same moment a control is made for each: another
//! existing block nobody fetches then, a new block inserted by another
//! random honest node, another key that does not exist. [`DELAY`] after
//! each operation the colluder asks the victim for both keys of the pair,
//! at the same instant and the maximum HTL, under fresh ids, as any
//! forwarded request. It sees what comes back (`DataFound`,
//! `DataNotFound`, `RouteNotFound`, overload, or nothing) and when, and
//! guesses that the key answered sooner (a found block before a failure,
//! a fast answer before a slow one; a tie at random) is the one the user
//! asked for.
//!
//! Each pair is two candidates, one of them true: the base rate is 0.5
//! exactly. Precision above it means the victim, or the network behind
//! it, answers what its user just did differently.

use std::collections::BTreeMap;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Attack;
use crate::report::AttackReport;
use crate::{Ev, Sim};
use lichen_routing::{Key, KeyKind, Message};

/// Time from the user's operation to the probes (ms): the operation is
/// over by then (a miss takes longest).
const DELAY: u64 = 30_000;

/// Gap between one victim's three operations, and between victims (ms).
const GAP: u64 = 3_000;

/// The user's operations, by `Pair::op`.
const OPS: [&str; 3] = ["fetch", "insert", "miss"];

/// One probed pair.
#[derive(Debug)]
struct Pair {
    victim: u32,
    colluder: u32,
    /// Fetched, inserted or missed by the victim's user; then the control.
    keys: [Key; 2],
    /// The probes' ids.
    ids: [u64; 2],
    sent_at: u64,
    /// When each probe was answered, and whether with the block.
    answer: [Option<(u64, bool)>; 2],
    /// What the user did: 0 fetch, 1 insert, 2 miss.
    op: usize,
}

/// The victims' pairs and what the colluders saw.
#[derive(Debug, Default)]
pub(crate) struct ProbeState {
    pairs: Vec<Pair>,
}

impl Sim {
    /// Schedule the victims' operations, the controls and the probes.
    pub(crate) fn probe_schedule(&mut self, t0: u64, asked: bool) {
        let existing = self.measured_inserts.clone();
        if existing.is_empty() {
            return;
        }
        let mut victims = 0;
        let mut tries = 0;
        while victims < self.cfg.downloaders && tries < 100 * self.cfg.downloaders.max(1) {
            tries += 1;
            let v = self.random_online_honest();
            let adv = self
                .peer_nodes(v)
                .into_iter()
                .find(|&p| self.nodes[p as usize].adversary);
            let Some(colluder) = adv else { continue };
            let start = t0 + victims as u64 * GAP;
            victims += 1;
            for op in 0..3 {
                let at = start + op as u64 * GAP / 3;
                // The control: the same kind of key, at the same moment,
                // asked for by another random honest node (`probe`) or by
                // nobody (`probe-unasked`).
                let other = self.random_online_honest();
                let (target, control) = match op {
                    0 => {
                        let a = self.rng.gen_range(existing.clone()) as u32;
                        let b = self.rng.gen_range(existing.clone()) as u32;
                        self.probe_fetches(at, (v, a), asked.then_some((other, b)));
                        (a, b)
                    }
                    1 => {
                        let a = self.new_block();
                        self.push(at, Ev::Insert { node: v, block: a });
                        // Nobody asked: a block inserted long before.
                        let b = if asked {
                            let b = self.new_block();
                            self.push(
                                at,
                                Ev::Insert {
                                    node: other,
                                    block: b,
                                },
                            );
                            b
                        } else {
                            self.rng.gen_range(existing.clone()) as u32
                        };
                        (a, b)
                    }
                    _ => {
                        let (a, b) = (self.new_block(), self.new_block());
                        self.probe_fetches(at, (v, a), asked.then_some((other, b)));
                        (a, b)
                    }
                };
                let tag = self.attack.probe.pairs.len() as u64;
                self.attack.probe.pairs.push(Pair {
                    victim: v,
                    colluder,
                    keys: [
                        self.blocks[target as usize].0,
                        self.blocks[control as usize].0,
                    ],
                    ids: [0, 0],
                    sent_at: 0,
                    answer: [None, None],
                    op,
                });
                self.push(at + DELAY, Ev::Attack { tag });
            }
        }
    }

    /// The victim's fetch `(node, block)` at `at`, and the control's (a
    /// random honest node's) at the same moment, when there is one.
    fn probe_fetches(&mut self, at: u64, victim: (u32, u32), control: Option<(u32, u32)>) {
        for (node, block) in std::iter::once(victim).chain(control) {
            self.push_fetch(at, node, block);
        }
    }

    /// Time for pair `tag`'s probes: the colluder asks the victim for both
    /// keys at once, in random order.
    pub(crate) fn probe_send(&mut self, tag: u64) {
        let Some(p) = self.attack.probe.pairs.get(tag as usize) else {
            return;
        };
        let (v, c, keys) = (p.victim, p.colluder, p.keys);
        let link = self.nodes[c as usize]
            .ends
            .iter()
            .find(|(_, (n, _))| *n == v)
            .map(|(pid, _)| *pid);
        let Some(pid) = link else { return };
        let ids = [self.rng.next_u64(), self.rng.next_u64()];
        let now = self.now;
        if let Some(p) = self.attack.probe.pairs.get_mut(tag as usize) {
            p.ids = ids;
            p.sent_at = now;
        }
        let first = usize::from(self.rng.gen_bool(0.5));
        for j in [first, 1 - first] {
            let msg = Message::Request {
                id: ids[j],
                key: keys[j],
                htl: self.cfg.htl,
                kind: KeyKind::Chk,
            };
            self.send(c, pid, msg);
        }
    }

    /// A colluder received `msg` from `from`: if it answers a probe, note
    /// when and how. Returns whether it belonged to a probe.
    pub(crate) fn probe_observe(&mut self, to: u32, from: u32, msg: &Message) -> bool {
        let Some(id) = msg.id() else { return false };
        let now = self.now;
        for p in &mut self.attack.probe.pairs {
            if p.colluder != to || p.victim != from {
                continue;
            }
            let Some(j) = p.ids.iter().position(|&i| i == id && i != 0) else {
                continue;
            };
            let found = match msg {
                Message::DataFound { .. } => true,
                Message::DataNotFound { .. }
                | Message::RouteNotFound { .. }
                | Message::RejectedOverload { .. }
                | Message::RejectedLoop { .. } => false,
                _ => return true,
            };
            if p.answer[j].is_none() {
                p.answer[j] = Some((now.saturating_sub(p.sent_at), found));
            }
            return true;
        }
        false
    }

    /// Guess, for each pair, which key the user asked for.
    pub(crate) fn probe_report(&self, attack: Attack) -> AttackReport {
        let mut tie = <ChaCha8Rng as SeedableRng>::seed_from_u64(self.cfg.seed);
        let (mut n, mut right) = (0usize, 0usize);
        let mut cases: BTreeMap<String, [usize; 2]> = BTreeMap::new();
        for p in &self.attack.probe.pairs {
            if p.ids == [0, 0] {
                continue;
            }
            // Sooner is likelier the user's: a block beats a failure, an
            // answer beats silence, then the time.
            let score = |a: Option<(u64, bool)>| match a {
                Some((t, true)) => (0u8, t),
                Some((t, false)) => (1, t),
                None => (2, 0),
            };
            let (s0, s1) = (score(p.answer[0]), score(p.answer[1]));
            let guess_target = match s0.cmp(&s1) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => tie.gen_bool(0.5),
            };
            n += 1;
            right += usize::from(guess_target);
            let c = cases.entry(OPS[p.op].to_string()).or_default();
            c[0] += 1;
            c[1] += usize::from(guess_target);
        }
        let mut r = AttackReport::new(attack.name(), 2 * n, (right, n - right), (n, n), n, 0.0);
        r.cases = cases;
        r
    }
}
