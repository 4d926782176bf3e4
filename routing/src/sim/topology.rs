//! Building the network: links, the ideal or scrambled small world, and
//! opennet growth by announcement and path folding.

use rand::Rng;

use super::config::{Sha256Verifier, Topology};
use super::{node_config, Ev, Sim};
use crate::location::Location;
use crate::node::{Node, PeerId};

/// Gap between warm-up requests (ms): spread in virtual time so that
/// nodes can take several path-folding offers each.
const WARM_GAP: u64 = 50;

impl Sim {
    pub(super) fn link(&mut self, a: u32, b: u32) {
        if a == b {
            return;
        }
        let (la, lb) = (
            self.nodes[a as usize].node.location(),
            self.nodes[b as usize].node.location(),
        );
        let now = self.now;
        self.nodes[a as usize]
            .node
            .add_peer(now, PeerId(b.into()), lb, &mut self.rng);
        self.nodes[b as usize]
            .node
            .add_peer(now, PeerId(a.into()), la, &mut self.rng);
    }

    pub(super) fn unlink(&mut self, a: u32, b: u32) {
        let now = self.now;
        self.nodes[a as usize]
            .node
            .remove_peer(now, PeerId(b.into()), &mut self.rng);
        self.nodes[b as usize]
            .node
            .remove_peer(now, PeerId(a.into()), &mut self.rng);
        self.dirty.push(a);
        self.dirty.push(b);
    }

    /// Opennet connection from `a` (who asked) to `b`.
    pub(super) fn connect(&mut self, a: u32, b: u32) {
        if a == b || !self.nodes[a as usize].online || !self.nodes[b as usize].online {
            return;
        }
        if self.nodes[a as usize]
            .node
            .peers()
            .any(|(p, _)| p.0 == u64::from(b))
        {
            return;
        }
        let now = self.now;
        let (la, lb) = (
            self.nodes[a as usize].node.location(),
            self.nodes[b as usize].node.location(),
        );
        if !self.nodes[b as usize].node.accept_opennet_peer(
            now,
            PeerId(a.into()),
            la,
            &mut self.rng,
        ) {
            return;
        }
        self.dirty.push(b);
        if !self.nodes[a as usize].node.accept_opennet_peer(
            now,
            PeerId(b.into()),
            lb,
            &mut self.rng,
        ) {
            self.nodes[b as usize]
                .node
                .remove_peer(now, PeerId(a.into()), &mut self.rng);
        }
        self.dirty.push(a);
    }

    fn small_world(&mut self, scramble: bool) {
        let n = self.nodes.len();
        // Order nodes by location; in the darknet the graph is built on a
        // hidden "true" order and the locations are then shuffled.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|&i| self.nodes[i as usize].node.location());
        let long = (self.cfg.degree / 2).saturating_sub(1).max(1);
        let ln = ((n / 2).max(2) as f64).ln();
        for r in 0..n {
            let a = order[r];
            self.link(a, order[(r + 1) % n]);
            for _ in 0..long {
                let d = (self.rng.gen::<f64>() * ln).exp().floor() as usize;
                let d = d.clamp(1, n / 2);
                let s = if self.rng.gen_bool(0.5) {
                    r + d
                } else {
                    r + n - d
                };
                self.link(a, order[s % n]);
            }
        }
        if scramble {
            let mut locs: Vec<Location> = self.nodes.iter().map(|s| s.node.location()).collect();
            for i in (1..locs.len()).rev() {
                let j = self.rng.gen_range(0..=i);
                locs.swap(i, j);
            }
            // Rebuild nodes at their new locations with the same links.
            let ncfg = node_config(&self.cfg);
            let links: Vec<Vec<u32>> = self
                .nodes
                .iter()
                .map(|s| s.node.peers().map(|(p, _)| p.0 as u32).collect())
                .collect();
            for (i, loc) in locs.into_iter().enumerate() {
                self.nodes[i].node = Node::new(ncfg.clone(), loc, Sha256Verifier);
            }
            for (a, ps) in links.iter().enumerate() {
                for &b in ps {
                    if (a as u32) < b {
                        self.link(a as u32, b);
                    }
                }
            }
        }
    }

    pub(super) fn build(&mut self) {
        let n = self.nodes.len();
        let advs = ((self.cfg.adversary.clamp(0.0, 1.0)) * n as f64).round() as usize;
        let mut idx: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.rng.gen_range(0..=i);
            idx.swap(i, j);
        }
        for &i in idx.iter().take(advs) {
            self.nodes[i as usize].adversary = true;
        }
        match self.cfg.topology {
            Topology::SmallWorld => self.small_world(false),
            Topology::Darknet => {
                self.small_world(true);
                for i in 0..n as u32 {
                    self.dirty.push(i);
                }
                self.flush();
                let swap_ms = self.cfg.swap_ms.unwrap_or(300 * 1_000);
                let until = self.now + swap_ms;
                self.run_until(until);
            }
            Topology::Opennet => self.grow_opennet(),
        }
        self.swaps_at_measure = self.nodes.iter().map(|s| s.node.stats().swaps).sum();
    }

    fn grow_opennet(&mut self) {
        let n = self.nodes.len();
        let seeds = self.seeds() as usize;
        for a in 0..seeds as u32 {
            for b in (a + 1)..seeds as u32 {
                self.link(a, b);
            }
        }
        for i in seeds..n {
            self.nodes[i].online = false;
        }
        let join_gap = 50;
        for i in seeds..n {
            self.push((i - seeds) as u64 * join_gap, Ev::Join { node: i as u32 });
        }
        let end = (n - seeds) as u64 * join_gap + 10_000;
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
        for j in 0..warm {
            let node = self.random_online_honest();
            let block = (base + self.rng.gen_range(0..warm_inserts)) as u32;
            self.push(
                t1 + j as u64 * WARM_GAP,
                Ev::Fetch {
                    node,
                    block,
                    measured: false,
                },
            );
        }
        let end = t1 + warm as u64 * WARM_GAP + 30_000;
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
                for (p, _) in self.nodes[i].node.peers() {
                    let p = p.0 as usize;
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
