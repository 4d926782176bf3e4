//! The `traceback` attack (Tian, Duan, Baumeister, Dong, "A traceback
//! attack on Freenet", INFOCOM 2013): a node answers a request id it has
//! seen with `RejectedLoop`, so colluders that saw an id can ask other
//! nodes about it and walk back, through the nodes that saw it, to the
//! originator.
//!
//! When a colluder first sees a measured request (from an honest
//! neighbour V), the colluders probe V's honest neighbours with the id it
//! carried, then the neighbours of every node that answers `RejectedLoop`,
//! and so on. A probe is an insert header (`Insert`), which a node never
//! forwards before its block: it answers `RejectedLoop` (seen) or
//! `Accepted` (not seen), and the block never comes. Only nodes that have
//! a colluder among their peers can be probed. The colluders are given the
//! honest nodes' links (the paper learnt them by connecting to many nodes;
//! here it is an upper bound on what they know). When the probes are
//! answered they walk from V to a node that saw the id and is not the
//! colluder V sent it to, and on from there, until no unvisited neighbour
//! saw it, and accuse the node where the walk stops.
//!
//! Candidates are the first sightings judged; the base rate is the
//! fraction whose sender V really was the originator: the precision of
//! the guess a colluder makes without any oracle ("the neighbour that sent
//! it to me"). An attack above it learned something from the probes.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngCore;

use crate::report::AttackReport;
use crate::Sim;
use lichen_routing::{Key, KeyKind, Message};

/// One trace: the id a colluder saw and what the probes found.
#[derive(Debug, Default)]
struct Trace {
    /// The id the originator gave it (ground truth).
    root: u64,
    /// The honest neighbour that sent it to a colluder.
    first: u32,
    /// The colluder it sent it to.
    to: u32,
    /// Honest nodes known to have seen the id.
    seen: BTreeSet<u32>,
    /// Honest nodes probed or to be probed.
    asked: BTreeSet<u32>,
    /// Probes not answered yet.
    outstanding: usize,
}

/// What the colluders traced.
#[derive(Debug, Default)]
pub(crate) struct TracebackState {
    /// The id seen → its trace.
    traces: BTreeMap<u64, Trace>,
    /// Root ids already judged (the colluders link sightings of one
    /// request by its key and time; the first one counts).
    judged: BTreeSet<u64>,
    /// (colluder, probed node, id) of the probes in flight.
    probes: BTreeSet<(u32, u32, u64)>,
    /// Finished traces: (the sender V, the accused node, the originator).
    verdicts: Vec<(u32, u32, u32)>,
    /// Probes sent.
    sent: u64,
}

impl Sim {
    /// A colluder `to` received `msg` from honest `from`: a measured
    /// request seen for the first time starts a trace; an answer to a
    /// probe moves one on. Returns whether `msg` answered a probe.
    pub(crate) fn traceback_observe(&mut self, to: u32, from: u32, msg: &Message) -> bool {
        if self.nodes[from as usize].adversary {
            return false;
        }
        match msg {
            Message::Request { id, .. } => {
                let root = self.root(*id);
                let measured = self.reqs.get(&root).is_some_and(|r| r.measured);
                if measured && self.attack.trace.judged.insert(root) {
                    self.start_trace(*id, root, from, to);
                }
                false
            }
            Message::RejectedLoop { id }
            | Message::Accepted { id }
            | Message::RejectedOverload { id } => {
                if !self.attack.trace.probes.remove(&(to, from, *id)) {
                    return false;
                }
                let seen = matches!(msg, Message::RejectedLoop { .. });
                self.probe_answered(*id, from, seen);
                true
            }
            _ => false,
        }
    }

    fn start_trace(&mut self, id: u64, root: u64, first: u32, to: u32) {
        let t = Trace {
            root,
            first,
            to,
            seen: BTreeSet::from([first]),
            asked: BTreeSet::from([first]),
            outstanding: 0,
        };
        self.attack.trace.traces.insert(id, t);
        self.probe_around(id, first);
        self.finish_if_done(id);
    }

    /// Probe the honest neighbours of `v` not asked yet that a colluder
    /// can reach.
    fn probe_around(&mut self, id: u64, v: u32) {
        for x in self.peer_nodes(v) {
            if self.nodes[x as usize].adversary {
                continue;
            }
            let Some(t) = self.attack.trace.traces.get_mut(&id) else {
                return;
            };
            if !t.asked.insert(x) {
                continue;
            }
            // A colluder linked to x, and its end of the link.
            let via = self.nodes[x as usize]
                .ends
                .values()
                .find(|(c, _)| self.nodes[*c as usize].adversary)
                .copied();
            let Some((c, pc)) = via else {
                continue;
            };
            t.outstanding += 1;
            self.attack.trace.probes.insert((c, x, id));
            self.attack.trace.sent += 1;
            let mut k = [0u8; 32];
            self.rng.fill_bytes(&mut k);
            let msg = Message::Insert {
                id,
                key: Key(k),
                htl: self.cfg.htl,
                kind: KeyKind::Chk,
            };
            self.send(c, pc, msg);
        }
    }

    fn probe_answered(&mut self, id: u64, x: u32, seen: bool) {
        let Some(t) = self.attack.trace.traces.get_mut(&id) else {
            return;
        };
        t.outstanding = t.outstanding.saturating_sub(1);
        if seen {
            t.seen.insert(x);
            self.probe_around(id, x);
        }
        self.finish_if_done(id);
    }

    /// All probes answered: walk back from the sender and accuse.
    fn finish_if_done(&mut self, id: u64) {
        if self
            .attack
            .trace
            .traces
            .get(&id)
            .is_none_or(|t| t.outstanding > 0)
        {
            return;
        }
        let Some(t) = self.attack.trace.traces.remove(&id) else {
            return;
        };
        let verdict = self.walk(&t);
        self.attack.trace.verdicts.push(verdict);
    }

    /// From the sender, on to an unvisited node that saw the id (the
    /// lowest-numbered: the colluders cannot tell them apart), until none:
    /// (the sender, the node accused, the originator).
    fn walk(&self, t: &Trace) -> (u32, u32, u32) {
        let mut at = t.first;
        let mut visited = BTreeSet::from([t.first, t.to]);
        loop {
            let next = self
                .peer_nodes(at)
                .into_iter()
                .filter(|n| t.seen.contains(n) && !visited.contains(n))
                .min();
            let Some(n) = next else { break };
            visited.insert(n);
            at = n;
        }
        let origin = self.reqs.get(&t.root).map_or(u32::MAX, |r| r.origin);
        (t.first, at, origin)
    }

    /// The verdicts; traces whose probes were never all answered (a
    /// probed node left) are judged on what was found.
    pub(crate) fn traceback_report(&self) -> AttackReport {
        let mut v = self.attack.trace.verdicts.clone();
        v.extend(self.attack.trace.traces.values().map(|t| self.walk(t)));
        let n = v.len();
        let first_right = v.iter().filter(|(f, _, o)| f == o).count();
        let right = v.iter().filter(|(_, a, o)| a == o).count();
        AttackReport::new(
            "traceback",
            n,
            (right, n - right),
            (first_right, n - first_right),
            n,
            0.0,
        )
    }
}
