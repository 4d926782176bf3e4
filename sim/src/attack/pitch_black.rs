//! The `pitch-black` attack: Evans, GauthierDickey and Grothoff, "Routing
//! in the Dark: Pitch Black" (ACSAC 2007).
//!
//! On a darknet, nodes find their place on the circle by swapping
//! locations with nodes a random walk reaches, and a swap partner's claims
//! cannot be checked. Each adversary node picks an attack point (its own
//! location when the attack starts) and answers every swap request that
//! reaches it at once, accepting, with a location within [`JITTER`] after
//! its point and a made-up list of peer locations; it never moves itself
//! (`Adversary::LieSwap`, handled in [`Sim::pitch_lie`]). The honest node
//! that started the swap takes the location, so honest nodes crowd into
//! the attack points' small arcs and the rest of the circle empties.
//!
//! The run: the darknet sorts itself by honest swaps (warm-up), then day
//! 0 runs unattacked and the lying starts with day 1; a day is the
//! defence's probe period ([`PITCH_PROBE_MS`]). Each day fresh blocks are
//! inserted from random honest nodes and the blocks inserted the day
//! before are requested from random honest nodes (data that has to
//! survive a day, as the defence's own probes). Reported per day: the
//! success of those requests and the clustering of honest locations.

use std::collections::BTreeMap;

use rand::Rng;

use crate::config::{Adversary, Attack};
use crate::report::{round4, AttackReport, PitchBlackReport, PitchDay};
use crate::{Ev, Sim, PITCH_PROBE_MS};
use lichen_routing::{Location, Message, PeerId};

/// Width of an attack point's arc, as a fraction of the circle (as
/// Hyphanet's `RealNodePitchBlackMitigationTest`, which needs the jitter
/// to pass the node's check against duplicate locations).
pub(crate) const JITTER: f64 = 0.001;

/// Peer locations an adversary claims in its replies.
const FAKE_PEERS: usize = 12;

/// What the attack recorded.
#[derive(Debug, Default)]
pub(crate) struct PitchState {
    /// The adversary lies now (from day 1).
    lying: bool,
    /// Each adversary node's attack point.
    points: BTreeMap<u32, Location>,
    /// Block → the day it was requested on.
    day_of: BTreeMap<u32, usize>,
    /// Clustering at the end of each day: (half-arc, captured).
    clustering: Vec<(f64, f64)>,
}

impl Sim {
    /// Whether adversary nodes lie in swaps now: with the attack from day
    /// 1, without it (the bare adversary kind) always.
    fn pitch_lying(&self) -> bool {
        self.cfg.adversary_kind == Adversary::LieSwap
            && (self.cfg.attack != Some(Attack::PitchBlack) || self.attack.pitch.lying)
    }

    /// Adversary node `to` got `msg` on its link `pid`: a swap request is
    /// answered at once with the lie. Returns whether `msg` was taken.
    pub(crate) fn pitch_lie(&mut self, to: u32, pid: PeerId, msg: &Message) -> bool {
        let Message::SwapRequest { id, .. } = msg else {
            return false;
        };
        if !self.pitch_lying() {
            return false;
        }
        let point = match self.attack.pitch.points.get(&to) {
            Some(&p) => p,
            None => self.nodes[to as usize].policy.routing().location(),
        };
        let off = (self.rng.gen::<f64>() * JITTER * 2f64.powi(64)) as u64;
        let peer_locations = (0..FAKE_PEERS)
            .map(|_| Location::random(&mut self.rng))
            .collect();
        let reply = Message::SwapReply {
            id: *id,
            accepted: true,
            location: Location(point.0.wrapping_add(off)),
            peer_locations,
        };
        self.send(to, pid, reply);
        true
    }

    /// The attack's run (after warm-up and the insert phase): day 0
    /// unattacked, then `--days` days of lying. Afterwards the
    /// measured requests ask for the last day's blocks.
    pub(crate) fn pitch_black_phase(&mut self) {
        let advs: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&i| self.nodes[i as usize].adversary)
            .collect();
        for a in advs {
            let loc = self.nodes[a as usize].policy.routing().location();
            self.attack.pitch.points.insert(a, loc);
        }
        let mut yesterday: Vec<u32> = self.measured_inserts.clone().map(|b| b as u32).collect();
        let n_ins = (self.cfg.inserts / 2).max(1);
        let n_req = (self.cfg.requests / 4).max(1);
        let gap = (PITCH_PROBE_MS - 10_000) / n_req as u64;
        for day in 0..=self.cfg.days {
            self.attack.pitch.lying = day > 0;
            let t0 = self.now;
            let first = self.blocks.len();
            for j in 0..n_ins {
                let block = self.new_block();
                let node = self.random_online_honest();
                self.push(t0 + j as u64 * 20, Ev::Insert { node, block });
            }
            if !yesterday.is_empty() {
                for j in 0..n_req {
                    let node = self.random_online_honest();
                    let block = yesterday[self.rng.gen_range(0..yesterday.len())];
                    self.attack.pitch.day_of.insert(block, day);
                    let at = t0 + 5_000 + j as u64 * gap;
                    self.push_fetch(at, node, block);
                }
            }
            self.run_until(t0 + PITCH_PROBE_MS);
            let c = self.clustering();
            self.attack.pitch.clustering.push(c);
            yesterday = (first..self.blocks.len()).map(|b| b as u32).collect();
            self.measured_inserts = first..self.blocks.len();
        }
    }

    /// (half-arc, captured) of the online honest nodes now.
    fn clustering(&self) -> (f64, f64) {
        let locs: Vec<Location> = self
            .nodes
            .iter()
            .filter(|s| s.online && !s.adversary)
            .map(|s| s.policy.routing().location())
            .collect();
        let width = (JITTER * 2f64.powi(64)) as u64;
        let points: Vec<Location> = self.attack.pitch.points.values().copied().collect();
        let captured = locs
            .iter()
            .filter(|l| points.iter().any(|p| l.0.wrapping_sub(p.0) <= width))
            .count();
        (half_arc(&locs), captured as f64 / locs.len().max(1) as f64)
    }

    /// The day-by-day report.
    pub(crate) fn pitch_black_report(&self) -> AttackReport {
        let days = self.attack.pitch.clustering.len();
        let (mut asked, mut found) = (vec![0usize; days], vec![0usize; days]);
        for r in self.reqs.values().filter(|r| !r.insert) {
            if let Some(&d) = self.attack.pitch.day_of.get(&r.block) {
                if d < days {
                    asked[d] += 1;
                    found[d] += usize::from(matches!(r.outcome, Some(Ok(()))));
                }
            }
        }
        let ratio = |a: usize, b: usize| round4(a as f64 / b.max(1) as f64);
        let list = (0..days)
            .map(|d| PitchDay {
                day: d,
                requests: asked[d],
                succeeded: found[d],
                success_rate: ratio(found[d], asked[d]),
                half_arc: round4(self.attack.pitch.clustering[d].0),
                captured: round4(self.attack.pitch.clustering[d].1),
            })
            .collect();
        let attacked = |v: &[usize]| v.iter().skip(1).sum::<usize>();
        let honest = self.nodes.iter().filter(|s| !s.adversary);
        let (mut moves, mut ops, mut n) = (0u64, 0u64, 0usize);
        for s in honest {
            let st = s.policy.stats();
            moves += st.pitch_moves;
            ops += st.pitch_probes + st.pitch_checks;
            n += 1;
        }
        let node_days = n as f64 * self.now as f64 / PITCH_PROBE_MS as f64;
        let mut a = AttackReport::new(Attack::PitchBlack.name(), 0, (0, 0), (0, 0), 0, 0.0);
        a.pitch_black = Some(PitchBlackReport {
            day_ms: PITCH_PROBE_MS,
            defence: self.cfg.pitch_defence,
            probe: self.cfg.pitch_probe,
            attack_points: self.attack.pitch.points.len(),
            jitter: JITTER,
            days: list,
            mean_success_attacked: ratio(attacked(&found), attacked(&asked)),
            probe_moves: moves,
            probe_operations_per_node_day: round4(ops as f64 / node_days.max(1.0)),
        });
        a
    }
}

/// The share of the circle that holds half of `locs`: the circle cut into
/// 256 equal arcs, the fullest taken first until they hold half.
fn half_arc(locs: &[Location]) -> f64 {
    let mut bins = [0usize; 256];
    for l in locs {
        bins[(l.0 >> 56) as usize] += 1;
    }
    bins.sort_unstable_by(|a, b| b.cmp(a));
    let half = locs.len().div_ceil(2);
    let (mut held, mut arcs) = (0usize, 0usize);
    for c in bins {
        if held >= half {
            break;
        }
        held += c;
        arcs += 1;
    }
    arcs as f64 / 256.0
}

#[cfg(test)]
mod tests {
    use super::half_arc;
    use lichen_routing::Location;

    #[test]
    fn half_arc_is_small_for_crowded_nodes_and_large_for_spread_ones() {
        let spread: Vec<Location> = (0..1024u64).map(|i| Location(i << 54)).collect();
        assert!((half_arc(&spread) - 0.5).abs() < 1e-9);
        let crowded: Vec<Location> = (0..1024u64).map(|i| Location((i % 4) << 62)).collect();
        assert!((half_arc(&crowded) - 2.0 / 256.0).abs() < 1e-9);
    }
}
