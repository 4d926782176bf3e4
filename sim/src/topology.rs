//! Building the network: links, the ideal or scrambled small world, and
//! opennet growth by announcement and path folding.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{Topology, GROWTH_MS, MAX_JOIN_RATE, WARMUP_MS};
use super::{Ev, Sim, TICK_MS};
use lichen_routing::Location;

/// Gap between warm-up requests (ms): spread in virtual time so that
/// nodes can take several path-folding offers each (closer together past
/// [`WARMUP_MS`]).
const WARM_GAP: u64 = 50;

/// Gap between two newcomers joining (ms; closer together past
/// [`GROWTH_MS`]).
const JOIN_GAP: u64 = 50;

/// When the `k`-th of `count` evenly spread events falls in a window of
/// `window` ms (`k * window / count`; the gap itself when it is a whole
/// number of ms, as it always was up to the caps).
fn spread(k: u64, count: u64, window: u64) -> u64 {
    (u128::from(k) * u128::from(window) / u128::from(count.max(1))) as u64
}

/// How long (virtual ms) `joining` newcomers take to join: [`JOIN_GAP`]
/// apart, at most [`GROWTH_MS`], at most [`MAX_JOIN_RATE`] a second.
fn join_window(joining: u64) -> u64 {
    (joining * JOIN_GAP)
        .min(GROWTH_MS)
        .max(joining * 1000 / MAX_JOIN_RATE)
}

impl Sim {
    /// Nodes `a` and `b` become friends (each remembers the other and
    /// dials it; the policies sort out the two simultaneous links).
    fn befriend(&mut self, a: u32, b: u32) {
        if a == b {
            return;
        }
        let now = self.now_i();
        for (x, y) in [(a, b), (b, a)] {
            let (r, bytes) = {
                let s = &self.nodes[y as usize];
                (s.noderef.clone(), s.bytes.clone())
            };
            // Duplicate edges of the random graph are refused; fine.
            let _ = self.nodes[x as usize].policy.add_friend(now, r, bytes);
            self.dirty.push(x);
        }
    }

    /// A Kleinberg small world of friends. In the darknet the graph is
    /// built on the nodes' first locations (a hidden "true" order) and
    /// every node then restarts at a shuffled location.
    fn small_world(&mut self, scramble: bool) {
        let n = self.nodes.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|&i| self.nodes[i as usize].policy.routing().location());
        let long = (self.cfg.degree / 2).saturating_sub(1).max(1);
        let ln = ((n / 2).max(2) as f64).ln();
        let mut edges = Vec::with_capacity(n * (long + 1));
        for r in 0..n {
            let a = order[r];
            edges.push((a, order[(r + 1) % n]));
            for _ in 0..long {
                let d = (self.rng.gen::<f64>() * ln).exp().floor() as usize;
                let d = d.clamp(1, n / 2);
                let s = if self.rng.gen_bool(0.5) {
                    r + d
                } else {
                    r + n - d
                };
                edges.push((a, order[s % n]));
            }
        }
        if scramble {
            let mut locs: Vec<Location> = self
                .nodes
                .iter()
                .map(|s| s.policy.routing().location())
                .collect();
            for i in (1..locs.len()).rev() {
                let j = self.rng.gen_range(0..=i);
                locs.swap(i, j);
            }
            for (i, loc) in locs.into_iter().enumerate() {
                self.restart(i as u32, loc, None);
            }
        }
        for (a, b) in edges {
            self.befriend(a, b);
        }
        // The links come up at once; the hellos take a latency each.
        self.flush();
        let until = self.now + 4 * self.cfg.latency_ms.1.max(1);
        self.run_until(until);
    }

    /// `SimConfig::nat` of the nodes after the seeds go behind NAT, drawn
    /// from an RNG of their own (a run without NAT draws nothing, and is
    /// the run it was before NAT was modelled).
    fn put_behind_nat(&mut self, seeds: usize) {
        if self.cfg.nat <= 0.0 {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0x6e61_7400);
        // Who of them is behind a symmetric NAT: an RNG of its own too.
        let mut sym = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0x7379_6d00);
        let symmetric = self.cfg.symmetric.clamp(0.0, 1.0);
        for s in self.nodes.iter_mut().skip(seeds) {
            s.nat = rng.gen_bool(self.cfg.nat.min(1.0));
            s.symmetric = s.nat && symmetric > 0.0 && sym.gen_bool(symmetric);
            // What its peers' dial-backs would tell it.
            s.policy.set_behind_nat(s.nat);
        }
        for s in &mut self.nodes {
            s.policy.set_punching();
        }
    }

    pub(super) fn build(&mut self) {
        let n = self.nodes.len();
        let advs = self
            .cfg
            .attackers
            .unwrap_or(((self.cfg.adversary.clamp(0.0, 1.0)) * n as f64).round() as usize)
            .min(n);
        let mut idx: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.rng.gen_range(0..=i);
            idx.swap(i, j);
        }
        for &i in idx.iter().take(advs) {
            self.nodes[i as usize].adversary = true;
        }
        for &i in idx.iter().take(advs) {
            self.lie_if_asked(i);
        }
        self.push(self.now + TICK_MS, Ev::Tick);
        match self.cfg.topology {
            Topology::SmallWorld => self.small_world(false),
            Topology::Darknet => {
                self.small_world(true);
                let swap_ms = self.cfg.swap_ms.unwrap_or(300 * 1_000);
                let until = self.now + swap_ms;
                self.run_until(until);
            }
            Topology::Opennet => self.grow_opennet(),
        }
        self.swaps_at_measure = self.nodes.iter().map(|s| s.policy.stats().swaps).sum();
    }

    fn grow_opennet(&mut self) {
        let n = self.nodes.len();
        let seeds = self.seeds() as usize;
        self.put_behind_nat(seeds);
        // The seeds start first and find each other (each dials the
        // seeds while it has no peer).
        let now = self.now_i();
        for a in 0..seeds {
            self.nodes[a].policy.tick(now);
            self.dirty.push(a as u32);
        }
        for i in seeds..n {
            self.nodes[i].online = false;
        }
        self.joined = vec![(u64::MAX, u64::MAX); n];
        let joining = (n - seeds) as u64;
        let window = self.cfg.join_ms.unwrap_or(join_window(joining));
        for k in 0..joining {
            let at = spread(k, joining, window);
            self.push(
                at,
                Ev::Join {
                    node: seeds as u32 + k as u32,
                },
            );
        }
        let end = window + 10_000;
        self.run_until(end);
        // Warm-up: path folding on real traffic.
        let warm = self.cfg.warmup_requests.unwrap_or(5 * n);
        let warm_inserts = (warm / 10).max(1);
        let base = self.blocks.len();
        for _ in 0..warm_inserts {
            self.new_block();
        }
        let t0 = self.now;
        for j in 0..warm_inserts {
            let node = self.random_online_honest();
            self.push(
                t0 + j as u64 * 5,
                Ev::Insert {
                    node,
                    block: (base + j) as u32,
                },
            );
        }
        let t1 = t0 + warm_inserts as u64 * 5 + 5_000;
        let window = self
            .cfg
            .warmup_ms
            .unwrap_or((warm as u64 * WARM_GAP).min(WARMUP_MS));
        for j in 0..warm {
            let node = self.random_online_honest();
            let block = (base + self.rng.gen_range(0..warm_inserts)) as u32;
            self.push_fetch(t1 + spread(j as u64, warm as u64, window), node, block);
        }
        let end = t1 + window + 30_000;
        self.run_until(end);
    }

    /// Fraction of online nodes in the largest connected component.
    pub(super) fn largest_component(&self) -> f64 {
        let n = self.nodes.len();
        let mut comp = vec![u32::MAX; n];
        let (mut best, mut online) = (0usize, 0usize);
        for start in 0..n {
            if !self.nodes[start].online || comp[start] != u32::MAX {
                continue;
            }
            let mut stack = vec![start];
            comp[start] = start as u32;
            let mut size = 0;
            while let Some(i) = stack.pop() {
                size += 1;
                for p in self.peer_nodes(i as u32) {
                    let p = p as usize;
                    if p < n && self.nodes[p].online && comp[p] == u32::MAX {
                        comp[p] = start as u32;
                        stack.push(p);
                    }
                }
            }
            online += size;
            best = best.max(size);
        }
        best as f64 / online.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::{join_window, spread, GROWTH_MS, MAX_JOIN_RATE};

    /// Up to the caps the events fall exactly on the old 50 ms grid (the
    /// figures up to 10,000 nodes did not move); past them they fill the
    /// window evenly, the last inside it, and never overflow.
    #[test]
    fn spread_keeps_the_grid_and_fills_the_window() {
        for k in [0, 1, 7, 9_999] {
            assert_eq!(spread(k, 10_000, 10_000 * 50), k * 50);
        }
        let (n, w) = (1_000_000, 500_000);
        let times: Vec<u64> = (0..n).map(|k| spread(k, n, w)).collect();
        assert!(times.windows(2).all(|p| p[0] <= p[1]));
        assert_eq!(times[0], 0);
        assert!(times[n as usize - 1] < w);
        assert_eq!(spread(n / 2, n, w), w / 2);
        assert!(spread(u64::MAX - 1, u64::MAX, u64::MAX) < u64::MAX);
    }

    /// 50 ms apart up to 10,000 newcomers, then all within `GROWTH_MS`
    /// until that means more than `MAX_JOIN_RATE` a second, then at that
    /// rate.
    #[test]
    fn the_join_window_caps_the_rate() {
        assert_eq!(join_window(1_000), 50_000);
        assert_eq!(join_window(10_000), GROWTH_MS);
        assert_eq!(join_window(30_000), GROWTH_MS);
        assert_eq!(join_window(50_000), GROWTH_MS);
        assert_eq!(join_window(100_000), 1_000_000);
        assert_eq!(join_window(1_000_000), 10_000_000);
        for n in [20_000, 60_000, 299_990, 999_990] {
            assert!(n * 1000 / join_window(n) <= MAX_JOIN_RATE, "{n}");
        }
    }
}
