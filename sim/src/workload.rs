//! The phases (inserts, then measured requests) and churn.

use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

use super::config::Topology;
use super::report::{round4, NatReport};
use super::{Ev, Sim, SimNode};
use lichen_routing::{Key, Location};

impl Sim {
    pub(super) fn new_block(&mut self) -> u32 {
        let mut b = vec![0u8; 32];
        self.rng.fill_bytes(&mut b);
        let key = Key(Sha256::digest(&b).into());
        self.blocks.push((key, b));
        (self.blocks.len() - 1) as u32
    }

    /// Nodes `0..seeds()` are the opennet seed nodes (kept online).
    pub(super) fn seeds(&self) -> u32 {
        self.seeds.len() as u32
    }

    /// A node that may leave: online, honest, and not an opennet seed.
    pub(super) fn random_leaver(&mut self) -> u32 {
        let keep = if self.cfg.topology == Topology::Opennet {
            self.seeds()
        } else {
            0
        };
        loop {
            let i = self.random_online_honest();
            if i >= keep {
                return i;
            }
        }
    }

    pub(super) fn random_online_honest(&mut self) -> u32 {
        loop {
            let i = self.rng.gen_range(0..self.nodes.len());
            let s = &self.nodes[i];
            if s.online && !s.adversary {
                return i as u32;
            }
        }
    }

    pub(super) fn insert_phase(&mut self) {
        let base = self.blocks.len();
        for _ in 0..self.cfg.inserts {
            self.new_block();
        }
        let t0 = self.now;
        for j in 0..self.cfg.inserts {
            let node = self.random_online_honest();
            self.push(
                t0 + j as u64 * 20,
                Ev::Insert {
                    node,
                    block: (base + j) as u32,
                },
            );
        }
        self.measured_inserts = base..base + self.cfg.inserts;
        let end = t0 + self.cfg.inserts as u64 * 20 + 60_000;
        self.counting_inserts = true;
        self.run_until(end);
        self.counting_inserts = false;
    }

    /// `--nat`: the degrees of nodes behind NAT and of the rest, and the
    /// links between two nodes behind NAT.
    fn nat_degrees(&self) -> Option<NatReport> {
        if self.cfg.nat <= 0.0 {
            return None;
        }
        let (mut nat, mut public) = (Vec::new(), Vec::new());
        let mut nat_to_nat = 0;
        for s in self.nodes.iter().filter(|s| s.online) {
            let d = s.policy.peer_count();
            if s.nat {
                nat.push(d);
                nat_to_nat += s
                    .policy
                    .routing()
                    .peers()
                    .filter(|(pid, _)| {
                        s.ends
                            .get(pid)
                            .is_some_and(|&(j, _)| self.nodes[j as usize].nat)
                    })
                    .count();
            } else {
                public.push(d);
            }
        }
        let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
        Some(NatReport {
            behind_nat: nat.len(),
            mean_degree_nat: mean(&nat),
            min_degree_nat: nat.iter().copied().min().unwrap_or(0),
            mean_degree_public: mean(&public),
            max_degree_public: public.iter().copied().max().unwrap_or(0),
            // Each such link counted from both ends.
            nat_to_nat_links: nat_to_nat / 2,
            success_nat: 0.0,
            success_public: 0.0,
        })
    }

    pub(super) fn request_phase(&mut self) {
        // Topology figures as the measurement starts.
        let online: Vec<&SimNode> = self.nodes.iter().filter(|s| s.online).collect();
        self.mean_degree = online
            .iter()
            .map(|s| s.policy.peer_count() as f64)
            .sum::<f64>()
            / online.len().max(1) as f64;
        // Peers whose other end holds the link only as a seed client.
        let one_sided = online
            .iter()
            .flat_map(|s| {
                s.policy
                    .routing()
                    .peers()
                    .filter_map(|(pid, _)| s.ends.get(&pid))
            })
            .filter(|&&(other, opid)| self.nodes[other as usize].policy.is_seed_client(opid))
            .count();
        self.one_sided_degree = one_sided as f64 / online.len().max(1) as f64;
        let mut lens: Vec<u64> = Vec::new();
        for s in &online {
            let me = s.policy.routing().location();
            lens.extend(s.policy.routing().peers().map(|(_, l)| l.distance(me)));
        }
        lens.sort_unstable();
        self.min_degree = online
            .iter()
            .map(|s| s.policy.peer_count())
            .min()
            .unwrap_or(0);
        self.largest_component = self.largest_component();
        self.nat_degrees = self.nat_degrees();
        self.median_link = lens
            .get(lens.len() / 2)
            .map_or(0.0, |&d| Location::distance_f64(d));
        (self.link_histogram, self.link_tv) = link_length_histogram(&lens, online.len());

        self.measuring = true;
        self.messages = 0;
        let t0 = self.now;
        let n = self.nodes.len();
        let span = (self.cfg.requests as u64).max(1) * self.cfg.request_interval_ms;
        if self.cfg.churn > 0.0 {
            let off = ((self.cfg.churn.clamp(0.0, 0.9)) * n as f64).round() as usize;
            for _ in 0..off {
                let i = self.random_leaver();
                self.go_offline(i);
            }
            self.flush();
            // About `off` departures (and as many returns) over the phase.
            self.churn_interval = (span / off.max(1) as u64).max(1);
            self.push(t0 + self.churn_interval, Ev::Churn);
        }
        let measured = self.measured_inserts.clone();
        for j in 0..self.cfg.requests {
            let node = self.random_online_honest();
            let block = if measured.is_empty() {
                self.new_block()
            } else {
                self.rng.gen_range(measured.clone()) as u32
            };
            self.push(
                t0 + j as u64 * self.cfg.request_interval_ms,
                Ev::Fetch {
                    node,
                    block,
                    measured: true,
                },
            );
        }
        self.schedule_downloads(t0);
        let end = t0 + span + 300_000;
        self.run_until(end);
    }

    /// Node `i` leaves: all its links break.
    pub(super) fn go_offline(&mut self, i: u32) {
        let ends: Vec<_> = self.nodes[i as usize].ends.keys().copied().collect();
        for pid in ends {
            self.close(i, pid, true);
        }
        self.nodes[i as usize].online = false;
        self.offline.push(i);
    }

    /// Node `i` comes back: it restarts (at its location, with the peer
    /// list it saved and its store) and redials whom it remembers (and,
    /// on opennet, the seeds while it has no peer).
    pub(super) fn come_back(&mut self, i: u32) {
        let loc = self.nodes[i as usize].policy.routing().location();
        self.restart(i, loc, None);
        self.nodes[i as usize].online = true;
        let now = self.now_i();
        self.nodes[i as usize].policy.tick(now);
        self.dirty.push(i);
    }
}

/// Links by length class — class k holds lengths in [2^-(k+1), 2^-k) of
/// the circle, k = 1 … K with K = ⌊log₂ n⌋ − 1 (shorter links count in
/// class K) — as fractions of all links; and the total variation distance
/// of that from the ideal of a navigable small world, where link lengths
/// are distributed as 1/d between 1/n and 1/2, i.e. equally over the
/// classes. 0 is Kleinberg's distribution; 1 has nothing in common with it.
pub(crate) fn link_length_histogram(lens: &[u64], n: usize) -> (Vec<f64>, f64) {
    let classes = (usize::BITS - n.max(8).leading_zeros()) as usize - 2;
    let mut counts = vec![0u64; classes];
    for &d in lens {
        // A distance is at most half the circle, 2^63: class ≥ 1.
        let k = Location(0).length_class(Location(d)).min(classes);
        counts[k - 1] += 1;
    }
    let total = lens.len().max(1) as f64;
    let ideal = 1.0 / classes as f64;
    let fractions: Vec<f64> = counts.iter().map(|&c| round4(c as f64 / total)).collect();
    let tv = counts
        .iter()
        .map(|&c| (c as f64 / total - ideal).abs())
        .sum::<f64>()
        / 2.0;
    (fractions, round4(tv))
}
