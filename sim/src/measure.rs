//! The report: success, hops, storage, and what the adversary learned.

use std::collections::{BTreeMap, HashMap};

use super::report::{round4, Anonymity, JoinReport, NatReport, Report, TunnelReport};
use super::{Req, Sim};

impl Sim {
    pub(super) fn report(&self) -> Report {
        let measured: Vec<&Req> = {
            let mut v: Vec<(&u64, &Req)> = self.reqs.iter().filter(|(_, r)| r.measured).collect();
            v.sort_by_key(|(id, _)| **id);
            v.into_iter().map(|(_, r)| r).collect()
        };
        let requests = measured.len();
        let mut hops: Vec<u32> = Vec::new();
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        let mut msgs = 0u64;
        let mut failed_available = 0usize;
        let mut times: Vec<u64> = Vec::new();
        for r in &measured {
            msgs += u64::from(r.messages);
            if let Some(end) = r.finished {
                times.push(end.saturating_sub(r.started));
            }
            match &r.outcome {
                Some(Ok(())) => hops.push(r.data_found_msgs),
                Some(Err(e)) => {
                    *failures.entry(e.name().to_string()).or_default() += 1;
                    failed_available += usize::from(r.available);
                }
                None => *failures.entry("unfinished".into()).or_default() += 1,
            }
        }
        hops.sort_unstable();
        let succeeded = hops.len();
        let [tmean, tmedian, tp95] = seconds(times);
        let pct = |p: f64| -> f64 {
            if hops.is_empty() {
                0.0
            } else {
                hops[((hops.len() - 1) as f64 * p).round() as usize] as f64
            }
        };
        let (stores, caches, nowhere) = self.copies_of_inserts();
        let ni = self.measured_inserts.len().max(1) as f64;
        let honest = self.nodes.iter().filter(|n| !n.adversary);
        let (mut offences, mut bad) = (0, 0);
        for n in honest {
            offences += n.policy.stats().misbehaviour;
            bad += n.policy.stats().bad_blocks;
        }
        let swaps: u64 = self.nodes.iter().map(|s| s.policy.stats().swaps).sum();
        Report {
            config: self.cfg.clone(),
            mean_degree: round4(self.mean_degree),
            median_link_length: round6(self.median_link),
            link_length_classes: self.link_histogram.clone(),
            link_length_tv: self.link_tv,
            min_degree: self.min_degree,
            one_sided_degree: round4(self.one_sided_degree),
            largest_component: round4(self.largest_component),
            inserts_completed: self.inserts_done,
            stores_per_insert: round4(stores as f64 / ni),
            caches_per_insert: round4(caches as f64 / ni),
            inserts_stored_nowhere: nowhere,
            requests,
            succeeded,
            success_rate: round4(succeeded as f64 / requests.max(1) as f64),
            hops_mean: round4(
                hops.iter().map(|&h| h as f64).sum::<f64>() / succeeded.max(1) as f64,
            ),
            hops_median: pct(0.5),
            hops_p95: pct(0.95),
            messages_per_request: round4(msgs as f64 / requests.max(1) as f64),
            seconds_per_request_mean: tmean,
            seconds_per_request_median: tmedian,
            seconds_per_request_p95: tp95,
            tunnels: self.tunnel_report(requests),
            nat: self.nat_report(&measured),
            joins: self.join_report(),
            cache_hits: self.nodes.iter().map(|s| s.store.hits_cache).sum(),
            store_hits: self.nodes.iter().map(|s| s.store.hits_store).sum(),
            failures,
            failed_but_available: failed_available,
            unmeasured: self.unmeasured(),
            offences_counted: offences,
            bad_blocks_caught: bad,
            swaps,
            anonymity: self.anonymity(),
            attack: self.attack_report(),
            events: self.events,
            events_by_kind: self.events_by_kind(),
            link_upkeep: self.link_upkeep(),
            messages: self.messages,
            messages_by_kind: self
                .by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            virtual_time_ms: self.now,
        }
    }

    /// Copies of the measured inserts: in stores, in caches, and how many
    /// inserts no node holds.
    fn copies_of_inserts(&self) -> (usize, usize, usize) {
        let (mut stores, mut caches, mut nowhere) = (0usize, 0usize, 0usize);
        // How many nodes hold each measured key in their store and cache:
        // one pass over what the nodes hold (not a pass over the nodes
        // per key, which grew as inserts × nodes).
        let shelved: Vec<Option<u32>> = self
            .measured_inserts
            .clone()
            .map(|j| self.shelf.find(&self.blocks[j].0))
            .collect();
        let mut held: HashMap<u32, (usize, usize)> =
            shelved.iter().flatten().map(|&n| (n, (0, 0))).collect();
        for n in &self.nodes {
            let (store, cache) = n.store.held();
            for k in store {
                if let Some(h) = held.get_mut(k) {
                    h.0 += 1;
                }
            }
            for k in cache {
                if let Some(h) = held.get_mut(&k) {
                    h.1 += 1;
                }
            }
        }
        for n in shelved {
            let (s, c) = n.and_then(|n| held.get(&n).copied()).unwrap_or((0, 0));
            stores += s;
            caches += c;
            nowhere += usize::from(s + c == 0);
        }
        (stores, caches, nowhere)
    }

    /// The requests and inserts not measured, by kind and outcome.
    fn unmeasured(&self) -> BTreeMap<String, usize> {
        let mut out: BTreeMap<String, usize> = BTreeMap::new();
        for r in self.reqs.values().filter(|r| !r.measured) {
            let what = if r.insert { "insert" } else { "fetch" };
            let how = match &r.outcome {
                Some(Ok(())) if r.insert => "ok",
                Some(Ok(())) => "found",
                Some(Err(e)) => e.name(),
                None => "unfinished",
            };
            *out.entry(format!("{what} {how}")).or_default() += 1;
        }
        out
    }

    /// Opennet: time from each growth join to half the peer limit.
    fn join_report(&self) -> Option<JoinReport> {
        if self.joined.is_empty() {
            return None;
        }
        // The second half to join: a network at least half grown (the
        // first joiners of a small network cannot find many peers).
        let mut joined: Vec<&(u64, u64)> = self.joined.iter().filter(|j| j.0 != u64::MAX).collect();
        joined.sort_by_key(|j| j.0);
        let joined = joined.split_off(joined.len() / 2);
        let mut times: Vec<u64> = joined
            .iter()
            .filter(|j| j.1 != u64::MAX)
            .map(|j| j.1 - j.0)
            .collect();
        times.sort_unstable();
        let at = |q: f64| {
            let k = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len().max(1)) - 1;
            times.get(k).map_or(0.0, |&t| round4(t as f64 / 1000.0))
        };
        Some(JoinReport {
            target: self.join_target(),
            joined: joined.len(),
            reached: times.len(),
            median_s: at(0.5),
            p95_s: at(0.95),
            max_s: times.last().map_or(0.0, |&t| round4(t as f64 / 1000.0)),
        })
    }

    /// `--nat`: the degrees, and success by whether the requester is
    /// behind NAT.
    fn nat_report(&self, measured: &[&Req]) -> Option<NatReport> {
        let mut r = self.nat_degrees.clone()?;
        let rate = |nat: bool| {
            let mine: Vec<&&Req> = measured
                .iter()
                .filter(|q| self.nodes[q.origin as usize].nat == nat)
                .collect();
            let ok = mine
                .iter()
                .filter(|q| matches!(q.outcome, Some(Ok(()))))
                .count();
            round4(ok as f64 / mine.len().max(1) as f64)
        };
        r.success_nat = rate(true);
        r.success_public = rate(false);
        r.mean_degree_nat = round4(r.mean_degree_nat);
        r.mean_degree_public = round4(r.mean_degree_public);
        Some(r)
    }

    /// The tunnel layers' counters, summed.
    fn tunnel_report(&self, requests: usize) -> Option<TunnelReport> {
        if self.cfg.tunnel_hops == 0 {
            return None;
        }
        let mut counters: BTreeMap<String, u64> = BTreeMap::new();
        for n in &self.nodes {
            if let Some(t) = n.policy.tunnels() {
                for (k, v) in t.stats().pairs() {
                    *counters.entry(k.to_string()).or_default() += v;
                }
            }
        }
        Some(TunnelReport {
            hops: self.cfg.tunnel_hops,
            counters,
            cells: self.tunnel_cells,
            cells_per_request: round4(self.tunnel_cells as f64 / requests.max(1) as f64),
        })
    }

    fn anonymity(&self) -> Option<Anonymity> {
        if self.cfg.adversary <= 0.0 {
            return None;
        }
        let mut ids: Vec<&u64> = self.sightings.keys().collect();
        ids.sort_unstable();
        let (mut obs, mut truth, mut guesses, mut right) = (0usize, 0usize, 0usize, 0usize);
        let mut by_depth: BTreeMap<u8, usize> = BTreeMap::new();
        for id in ids {
            let (from, htl, depth) = self.sightings[id];
            if from == u32::MAX {
                continue;
            }
            let Some(r) = self.reqs.get(id) else { continue };
            obs += 1;
            let is_origin = r.origin == from;
            truth += usize::from(is_origin);
            *by_depth.entry(depth).or_default() += 1;
            if htl >= self.cfg.htl {
                guesses += 1;
                right += usize::from(is_origin);
            }
        }
        let n1 = by_depth.get(&1).copied().unwrap_or(0) as f64;
        let expected: f64 = by_depth
            .iter()
            .map(|(&k, &c)| c as f64 * 0.5f64.powi(i32::from(k.saturating_sub(1)).min(60)))
            .sum();
        Some(Anonymity {
            fraction: self.cfg.adversary,
            observations: obs,
            random_baseline: round4(truth as f64 / obs.max(1) as f64),
            htl_model_baseline: round4(if expected > 0.0 { n1 / expected } else { 0.0 }),
            guesses,
            precision: round4(right as f64 / guesses.max(1) as f64),
            recall: round4(right as f64 / truth.max(1) as f64),
        })
    }
}

/// Mean, median and 95th percentile of durations in ms, as seconds.
fn seconds(mut ms: Vec<u64>) -> [f64; 3] {
    ms.sort_unstable();
    let pct = |p: f64| -> f64 {
        ms.get(((ms.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |&t| round4(t as f64 / 1000.0))
    };
    let mean = ms.iter().map(|&t| t as f64).sum::<f64>() / ms.len().max(1) as f64 / 1000.0;
    [round4(mean), pct(0.5), pct(0.95)]
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

impl Sim {
    /// Events processed, by kind, with message deliveries also by name.
    fn events_by_kind(&self) -> BTreeMap<String, u64> {
        super::Ev::KINDS
            .iter()
            .zip(self.events_by_kind)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| ((*k).to_string(), n))
            .chain(
                self.delivered
                    .iter()
                    .map(|(k, n)| (format!("deliver {k}"), *n)),
            )
            .collect()
    }

    /// What keeping the links up cost, summed over the nodes: peers
    /// dropped to make room, link-length refreshes sent, dialers kept only
    /// as seed clients.
    fn link_upkeep(&self) -> BTreeMap<String, u64> {
        let sum = |f: fn(&lichen_routing::Stats) -> u64| -> u64 {
            self.nodes.iter().map(|s| f(s.policy.stats())).sum()
        };
        [
            ("dropped", sum(|s| s.dropped_least_useful)),
            ("refreshes", sum(|s| s.link_refreshes)),
            ("seed clients", sum(|s| s.seed_clients)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}
