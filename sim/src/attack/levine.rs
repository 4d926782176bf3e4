//! The `downloader` and `uploader` attacks: a workload of whole files
//! (splitfiles) inserted and downloaded by honest nodes among the
//! background traffic, what the colluding adversary nodes record of it,
//! and the classifier run on that record.
//!
//! `downloader` and `uploader` follow Levine, Liberatore, Lynn and Wright,
//! "Statistical Detection of Downloaders in Freenet" (CCS 2020): an
//! adversary node counts, per honest neighbour and per file it knows
//! (it knows every block key of the files), the requests (inserts) for
//! the file's blocks that arrive from that neighbour at the two highest
//! HTLs. A downloader spreads its T requests over its g peers by key, so
//! a neighbour of the downloader sees about T/g of them; a relayer passes
//! on only what its own neighbours route through it, about T/g². The
//! adversary decides "downloader" when the posterior of the first model
//! (equal priors, binomial likelihoods) is at least [`THRESHOLD`]. It is
//! given each neighbour's true degree (in the real network it would have
//! to estimate it), so the figures are an upper bound on its success.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

use crate::config::Attack;
use crate::report::AttackReport;
use crate::{Ev, Sim};
use lichen_routing::Message;

/// Posterior probability of "downloader" (or "uploader") at which the
/// adversary accuses a neighbour.
pub const THRESHOLD: f64 = 0.98;

/// Gap between two block fetches (inserts) of one file by one node (ms).
const BLOCK_GAP: u64 = 20;

/// The file workload's state and what the adversary counted of it.
#[derive(Debug, Default)]
pub(crate) struct LevineState {
    /// Block number → file.
    file_of: BTreeMap<u32, u32>,
    /// Each file's block numbers, in file order.
    files: Vec<Vec<u32>>,
    /// The node that inserted each file.
    uploaders: Vec<u32>,
    /// (node, file) pairs that really fetched the file (from the
    /// requests actually started: a requester that left is replaced).
    truth: BTreeSet<(u32, u32)>,
    /// (adversary node, honest neighbour, file) → requests (inserts) at
    /// the two highest HTLs.
    counts: BTreeMap<(u32, u32, u32), u32>,
    /// Routing key → block number, for the files' blocks.
    by_key: BTreeMap<lichen_routing::Key, u32>,
}

impl Sim {
    /// Insert the files: each from one random honest node, its blocks in
    /// file order, all files at once.
    pub(crate) fn files_insert_phase(&mut self) {
        if self.cfg.attack.is_none() {
            return;
        }
        let t0 = self.now;
        for f in 0..self.cfg.files {
            let uploader = self.random_online_honest();
            let blocks: Vec<u32> = (0..self.cfg.file_blocks)
                .map(|_| self.new_block())
                .collect();
            for (j, &b) in blocks.iter().enumerate() {
                let f = f as u32;
                self.attack.files.file_of.insert(b, f);
                self.attack
                    .files
                    .by_key
                    .insert(self.blocks[b as usize].0, b);
                self.push(
                    t0 + j as u64 * BLOCK_GAP,
                    Ev::Insert {
                        node: uploader,
                        block: b,
                    },
                );
            }
            self.attack.files.files.push(blocks);
            self.attack.files.uploaders.push(uploader);
        }
        let end = t0 + self.cfg.file_blocks as u64 * BLOCK_GAP + 60_000;
        self.run_until(end);
    }

    /// Schedule the downloads from `t0`: each downloader fetches every
    /// block of one random file, in file order.
    pub(crate) fn files_schedule_downloads(&mut self, t0: u64) {
        if self.cfg.attack.is_none() || self.attack.files.files.is_empty() {
            return;
        }
        for _ in 0..self.cfg.downloaders {
            let node = self.random_online_honest();
            let f = self.rng.gen_range(0..self.attack.files.files.len());
            let start = t0 + self.rng.gen_range(0..10_000);
            for (j, &b) in self.attack.files.files[f].clone().iter().enumerate() {
                self.push_fetch(start + j as u64 * BLOCK_GAP, node, b);
            }
        }
    }

    /// A fetch of block `block` started at `node`: ground truth.
    pub(crate) fn files_fetch_started(&mut self, node: u32, block: u32) {
        if let Some(&f) = self.attack.files.file_of.get(&block) {
            self.attack.files.truth.insert((node, f));
        }
    }

    /// Adversary node `to` received `msg` from `from`: count it if it is
    /// a request (insert) for a known file's block at the two highest
    /// HTLs from an honest neighbour.
    pub(crate) fn levine_observe(&mut self, attack: Attack, to: u32, from: u32, msg: &Message) {
        if self.nodes[from as usize].adversary {
            return;
        }
        let (key, htl) = match (attack, msg) {
            (Attack::Downloader, Message::Request { key, htl, .. })
            | (Attack::Uploader, Message::Insert { key, htl, .. }) => (key, *htl),
            _ => return,
        };
        if htl.saturating_add(1) < self.cfg.htl {
            return;
        }
        let Some(&b) = self.attack.files.by_key.get(key) else {
            return;
        };
        let f = self.attack.files.file_of[&b];
        *self.attack.files.counts.entry((to, from, f)).or_default() += 1;
    }

    /// Run the attack's classifier on what the adversary recorded.
    pub(crate) fn levine_report(&self, attack: Attack) -> AttackReport {
        let truth: BTreeSet<(u32, u32)> = if attack == Attack::Uploader {
            self.attack
                .files
                .uploaders
                .iter()
                .enumerate()
                .map(|(f, &u)| (u, f as u32))
                .collect()
        } else {
            self.attack.files.truth.clone()
        };
        let t = self.cfg.file_blocks as f64;
        // (neighbour, file) → accused by some adversary node.
        let mut claims: BTreeMap<(u32, u32), bool> = BTreeMap::new();
        for (&(_, v, f), &r) in &self.attack.files.counts {
            let g = self.nodes[v as usize].policy.peer_count().max(2) as f64;
            let accused = posterior(f64::from(r), t, 1.0 / g, 1.0 / (g * g)) >= THRESHOLD;
            *claims.entry((v, f)).or_default() |= accused;
        }
        // The pairs the adversary could judge: a true pair with no
        // adversary neighbour is out of its reach, not a miss.
        let reachable = truth
            .iter()
            .filter(|(v, _)| self.has_adversary_peer(*v))
            .count();
        let (mut tp, mut fp, mut pos, mut neg) = (0usize, 0usize, 0usize, 0usize);
        for (pair, &accused) in &claims {
            let real = truth.contains(pair);
            pos += usize::from(real);
            neg += usize::from(!real);
            tp += usize::from(real && accused);
            fp += usize::from(!real && accused);
        }
        AttackReport::new(
            attack.name(),
            claims.len(),
            (tp, fp),
            (pos, neg),
            reachable,
            THRESHOLD,
        )
    }

    /// The downloads that really happened: each downloader with the
    /// block numbers of the file it fetched (for other attacks run on
    /// this workload).
    pub(crate) fn file_downloads(&self) -> Vec<(u32, &[u32])> {
        let st = &self.attack.files;
        st.truth
            .iter()
            .map(|&(u, f)| (u, st.files[f as usize].as_slice()))
            .collect()
    }

    /// Whether honest node `v` has an adversary among its peers.
    pub(crate) fn has_adversary_peer(&self, v: u32) -> bool {
        self.peer_nodes(v)
            .iter()
            .any(|&p| self.nodes[p as usize].adversary)
    }
}

/// P(H1 | r) with equal priors, r of t trials hitting with probability
/// p1 under H1 and p0 under H0 (binomial; the coefficient cancels): the
/// rule of Levine et al., accusing at [`THRESHOLD`]. Public for the
/// whole-system spy test (`tests/tests/network_spy.rs`).
#[must_use]
pub fn posterior(r: f64, t: f64, p1: f64, p0: f64) -> f64 {
    let r = r.min(t);
    let ll = |p: f64| r * p.ln() + (t - r) * (1.0 - p).max(f64::MIN_POSITIVE).ln();
    let d = ll(p0) - ll(p1);
    1.0 / (1.0 + d.exp())
}

#[cfg(test)]
mod tests {
    use super::posterior;

    #[test]
    fn the_rule_accuses_at_one_in_degree_and_not_at_one_in_degree_squared() {
        // 256 blocks, 10 peers: a downloader's neighbour sees ~26, a
        // relayer's ~3.
        assert!(posterior(26.0, 256.0, 0.1, 0.01) > 0.999);
        assert!(posterior(3.0, 256.0, 0.1, 0.01) < 0.01);
        // The crossover lies between the two expectations.
        let mid = (1..256)
            .find(|&r| posterior(f64::from(r), 256.0, 0.1, 0.01) >= 0.5)
            .unwrap_or(0);
        assert!((3..26).contains(&mid), "{mid}");
    }
}
