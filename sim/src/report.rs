//! The report and its table.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::config::{SimConfig, Topology};

/// What the adversary learned about requesters.
///
/// Each request id counts once: at the first adversary node it reaches, from
/// an honest neighbour (later sightings are known to be forwarded, since
/// the colluders share ids). The adversary guesses "this neighbour is the
/// originator" when the HTL is the maximum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anonymity {
    /// Fraction of nodes the adversary holds.
    pub fraction: f64,
    /// First sightings of request ids by the adversary.
    pub observations: usize,
    /// Random-guess baseline: the fraction of observations where the
    /// neighbour really was the originator. Guessing at random (or always)
    /// gives exactly this precision.
    pub random_baseline: f64,
    /// Precision the HTL rule allows by design: with the first sighting at
    /// hop k, HTL is still the maximum with probability 2^-(k-1) (each link
    /// keeps it with probability 1/2), so guessing on max HTL is right with
    /// probability n₁ / Σₖ nₖ·2^-(k-1), computed over the observed depths.
    pub htl_model_baseline: f64,
    /// Guesses made (observations with max HTL).
    pub guesses: usize,
    /// Measured precision of the guesses (using HTL, ids and the colluders'
    /// shared view).
    pub precision: f64,
    /// Fraction of the true originator sightings that were guessed.
    pub recall: f64,
}

/// Nodes behind NAT (`--nat F`) and the rest, as the measurement starts
/// (degrees) and over it (success by requester).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NatReport {
    /// Online nodes behind NAT.
    pub behind_nat: usize,
    /// Their mean number of peers.
    pub mean_degree_nat: f64,
    /// The fewest peers of one of them.
    pub min_degree_nat: usize,
    /// The reachable nodes' mean number of peers.
    pub mean_degree_public: f64,
    /// The most peers of one reachable node (bounded by the peer limit:
    /// reachable nodes must not become hubs).
    pub max_degree_public: usize,
    /// Links between two nodes behind NAT (none without hole punching).
    pub nat_to_nat_links: usize,
    /// Measured requests from nodes behind NAT that succeeded.
    pub success_nat: f64,
    /// Measured requests from reachable nodes that succeeded.
    pub success_public: f64,
}

/// Opennet: how soon the nodes that joined as the network grew (the
/// second half of them to join: the network at least half grown) had
/// half their peer limit (`--degree` / 2, an under-connected node's
/// bound), in virtual time from their start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinReport {
    /// The peer count timed.
    pub target: usize,
    /// Nodes that joined (the second half).
    pub joined: usize,
    /// Of them, those that reached `target` peers before the run ended.
    pub reached: usize,
    /// Seconds to `target` peers, over those that reached it.
    pub median_s: f64,
    /// 95th percentile.
    pub p95_s: f64,
    /// The slowest.
    pub max_s: f64,
}

/// What the tunnel layers did (`--tunnel-hops N`), summed over the
/// nodes over the whole run (`lichen_routing::TunnelStats`: builds and
/// their failures by reason, requests sent and retried, the exits'
/// answers, the exits' side).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunnelReport {
    /// Hops beyond the requester.
    pub hops: u8,
    /// Every counter by name.
    pub counters: BTreeMap<String, u64>,
    /// Tunnel messages sent in the measured phase.
    pub cells: u64,
    /// Tunnel messages in the measured phase per measured request (with
    /// an attack workload, its downloads' cells too).
    pub cells_per_request: f64,
}

/// What an attack of the suite achieved (`--attack NAME`). For
/// `pitch-black`, which accuses nobody, the classifier's fields are all 0
/// and [`AttackReport::pitch_black`] holds the figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackReport {
    /// The attack.
    pub name: String,
    /// (Neighbour, file) pairs the adversary saw at least one message
    /// for: the candidates it judges.
    pub candidates: usize,
    /// Candidates that really were the downloader (uploader) of the file.
    pub true_candidates: usize,
    /// True pairs whose node had an adversary neighbour (those the
    /// attack could find at all).
    pub reachable: usize,
    /// Accusations made.
    pub accusations: usize,
    /// Right accusations / accusations.
    pub precision: f64,
    /// Right accusations / reachable true pairs.
    pub recall: f64,
    /// Wrong accusations / candidates that were not true pairs.
    pub false_positive_rate: f64,
    /// Precision of accusing a candidate at random: true candidates /
    /// candidates.
    pub base_rate: f64,
    /// The posterior at which a neighbour is accused (0 for attacks
    /// without a posterior).
    pub threshold: f64,
    /// For attacks made of several cases: each case's name → [accusations,
    /// right accusations].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cases: BTreeMap<String, [usize; 2]>,
    /// `eclipse`: seconds from the start until the attackers held all the
    /// victim's peers (None: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_capture_s: Option<f64>,
    /// `eclipse`: the victim's request success while the attackers
    /// behaved well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_before_turn: Option<f64>,
    /// `eclipse`: the victim's request success after they turned into
    /// black holes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_after_turn: Option<f64>,
    /// `eclipse`: established peers the victim dropped to make room
    /// during the attack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacements: Option<u64>,
    /// `correlation`: the end-to-end figures (tunnels, capture, downloads
    /// caught).
    #[serde(default, flatten)]
    pub correlation: Option<CorrelationFigures>,
    /// `pitch-black` only: the day-by-day figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitch_black: Option<PitchBlackReport>,
}

/// The `correlation` attack's own figures (flattened into the `attack`
/// object of the JSON report).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrelationFigures {
    /// Downloads (one downloader fetching one file) of the workload.
    pub downloads: usize,
    /// Downloads whose downloader the adversary named, rightly, for at
    /// least one of the file's blocks.
    pub downloads_caught: usize,
    /// downloads_caught / downloads.
    pub downloads_caught_fraction: f64,
    /// Of the downloads' (downloader, block) fetches, the share the
    /// adversary rightly named the downloader for.
    pub blocks_caught_fraction: f64,
    /// Tunnels of honest users built to full length (ground truth).
    pub tunnels: usize,
    /// Of those, with an adversary guard and an adversary exit.
    pub captured_tunnels: usize,
    /// captured_tunnels / tunnels.
    pub capture_rate: f64,
    /// Of the tunnels, with an adversary guard.
    pub guard_rate: f64,
    /// Fraction of nodes run by the adversary.
    pub f: f64,
    /// f squared: the capture rate if guard and exit were independent
    /// uniform draws.
    pub f_squared: f64,
    /// Answered fetches the adversary's exits ran for a circuit.
    pub exit_requests: usize,
    /// Of those, linked by timing to a colluding guard's circuit.
    pub linked: usize,
    /// Honest nodes' own tunnels opened (their `TunnelStats::built`).
    #[serde(default)]
    pub tunnels_opened: u64,
    /// Honest nodes' own tunnel builds that failed, for any reason.
    #[serde(default)]
    pub builds_failed: u64,
    /// Of those, refused for a hop's peer list shorter than the minimum.
    #[serde(default)]
    pub short_lists: u64,
}

/// The `pitch-black` attack, day by day. A "day" is the defence's probe
/// period ([`PITCH_PROBE_MS`](crate::PITCH_PROBE_MS)); the attack starts
/// at the beginning of day 1, on a network sorted by honest swaps; each
/// day fresh blocks are inserted and the blocks inserted the day before
/// are requested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PitchBlackReport {
    /// Length of a day (virtual ms).
    pub day_ms: u64,
    /// The defence was on (swaps may not stretch a node's links).
    pub defence: bool,
    /// Hyphanet's probe was on.
    pub probe: bool,
    /// Attack points (one per adversary node; each lies with locations
    /// within `jitter` after its point).
    pub attack_points: usize,
    /// Width of an attack point's arc (fraction of the circle).
    pub jitter: f64,
    /// The days, from day 0 (before the attack).
    pub days: Vec<PitchDay>,
    /// Mean request success over the attacked days (1 and later).
    pub mean_success_attacked: f64,
    /// Probe moves of honest nodes during the run (the probe acting).
    pub probe_moves: u64,
    /// Probe operations (inserts plus checks) per honest node per day over
    /// the run: the defence's cost is this many of the node's own block
    /// inserts and requests.
    pub probe_operations_per_node_day: f64,
}

/// One day of the `pitch-black` run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PitchDay {
    /// Day number (0: before the attack).
    pub day: usize,
    /// Requests for the previous day's blocks started this day.
    pub requests: usize,
    /// Of those, found.
    pub succeeded: usize,
    /// succeeded / requests.
    pub success_rate: f64,
    /// Clustering at the end of the day: the share of the circle that
    /// holds half of the online honest nodes (256 equal arcs, fullest
    /// first). About 0.4 for nodes spread at random, near 0 when they
    /// crowd into a few arcs.
    pub half_arc: f64,
    /// Fraction of online honest nodes within an attack point's arc at
    /// the end of the day (by chance alone: about points × jitter).
    pub captured: f64,
}

impl AttackReport {
    /// From the counts: `(true, false)` accusations, `(true, false)`
    /// candidates, and the reachable true pairs.
    pub(super) fn new(
        name: &str,
        candidates: usize,
        (tp, fp): (usize, usize),
        (pos, neg): (usize, usize),
        reachable: usize,
        threshold: f64,
    ) -> Self {
        let ratio = |a: usize, b: usize| round4(a as f64 / b.max(1) as f64);
        AttackReport {
            name: name.to_string(),
            candidates,
            true_candidates: pos,
            reachable,
            accusations: tp + fp,
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, reachable),
            false_positive_rate: ratio(fp, neg),
            base_rate: ratio(pos, candidates),
            threshold,
            cases: BTreeMap::new(),
            time_to_capture_s: None,
            success_before_turn: None,
            success_after_turn: None,
            replacements: None,
            pitch_black: None,
            correlation: None,
        }
    }
}

pub(crate) fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The simulator's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The parameters.
    pub config: SimConfig,
    /// Mean peers per online node when measuring starts.
    pub mean_degree: f64,
    /// Median link length (fraction of the circle) when measuring starts.
    pub median_link_length: f64,
    /// Fractions of links by length class: class k (from 1) holds lengths
    /// in [2^-(k+1), 2^-k) of the circle; the last class also the shorter
    /// ones. A navigable small world has them equal.
    #[serde(default)]
    pub link_length_classes: Vec<f64>,
    /// Total variation distance of `link_length_classes` from equal
    /// classes (1/d link lengths): 0 ideal, 1 disjoint.
    #[serde(default)]
    pub link_length_tv: f64,
    /// Fewest peers of an online node when measuring starts.
    pub min_degree: usize,
    /// Of the peers counted in `mean_degree`, those whose other end keeps
    /// the link only as a seed client (it does not route through it, and
    /// refuses what is routed to it): one-sided links, mean per node.
    #[serde(default)]
    pub one_sided_degree: f64,
    /// Fraction of online nodes in the largest connected component.
    pub largest_component: f64,
    /// Inserts that ended in success or ran out of route after storing.
    pub inserts_completed: usize,
    /// Mean nodes holding each insert in the long-term store.
    pub stores_per_insert: f64,
    /// Mean nodes holding each insert in the cache.
    pub caches_per_insert: f64,
    /// Inserts that no node stored or cached.
    pub inserts_stored_nowhere: usize,
    /// Requests issued.
    pub requests: usize,
    /// Requests that got the block.
    pub succeeded: usize,
    /// succeeded / requests.
    pub success_rate: f64,
    /// Hops from requester to the data (successful requests).
    pub hops_mean: f64,
    /// Median hops.
    pub hops_median: f64,
    /// 95th percentile hops.
    pub hops_p95: f64,
    /// Messages (all kinds, all hops) per request. With tunnels: the
    /// routed messages of the exit's request; tunnel cells are in
    /// [`TunnelReport::cells_per_request`].
    pub messages_per_request: f64,
    /// Virtual seconds from a measured request's start to its end (all
    /// that ended): mean.
    #[serde(default)]
    pub seconds_per_request_mean: f64,
    /// Median of the same.
    #[serde(default)]
    pub seconds_per_request_median: f64,
    /// 95th percentile of the same.
    #[serde(default)]
    pub seconds_per_request_p95: f64,
    /// The tunnel layers' counters, summed over the nodes (`--tunnel-hops`
    /// above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnels: Option<TunnelReport>,
    /// Nodes behind NAT and the rest (`--nat` above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatReport>,
    /// Opennet: how soon joining nodes had half their peer limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joins: Option<JoinReport>,
    /// Requests served by a node's cache (not the requester's).
    pub cache_hits: u64,
    /// Requests served by a node's long-term store.
    pub store_hits: u64,
    /// Failed requests by outcome.
    pub failures: BTreeMap<String, usize>,
    /// The requests and inserts not measured (warm-up, the insert phase,
    /// an attack's downloads) by outcome: `fetch found`, `fetch
    /// not-found`, `insert ok`, `insert TimedOut`, … (`unfinished`: no
    /// answer by the end).
    #[serde(default)]
    pub unmeasured: BTreeMap<String, usize>,
    /// Failed requests whose block was on some online node at the time
    /// (routing failures rather than data loss).
    pub failed_but_available: usize,
    /// Offences counted against peers by honest nodes.
    pub offences_counted: u64,
    /// Blocks that failed verification at honest nodes.
    pub bad_blocks_caught: u64,
    /// Location swaps (darknet).
    pub swaps: u64,
    /// Anonymity figure (when there is an adversary).
    pub anonymity: Option<Anonymity>,
    /// What the attack achieved (`--attack`).
    pub attack: Option<AttackReport>,
    /// Events processed.
    pub events: u64,
    /// Events processed, by kind (message deliveries, node timers, ...).
    pub events_by_kind: BTreeMap<String, u64>,
    /// Link upkeep over the whole run, summed over the nodes: peers
    /// dropped to make room, link-length refreshes, seed clients kept.
    pub link_upkeep: BTreeMap<String, u64>,
    /// Messages sent in the measured phase (all kinds).
    pub messages: u64,
    /// Messages sent in the measured phase, by kind.
    pub messages_by_kind: BTreeMap<String, u64>,
    /// Virtual time at the end (ms).
    pub virtual_time_ms: u64,
}

impl Report {
    /// A human-readable table.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        self.write_config(&mut s);
        self.write_network(&mut s);
        self.write_requests(&mut s);
        if let Some(a) = &self.anonymity {
            write_anonymity(&mut s, a);
        }
        if let Some(a) = &self.attack {
            write_attack(&mut s, a);
        }
        row(
            &mut s,
            "events / messages",
            format!("{} / {}", self.events, self.messages),
        );
        row(&mut s, "events by kind", counts(&self.events_by_kind));
        row(&mut s, "link upkeep (all nodes)", counts(&self.link_upkeep));
        row(
            &mut s,
            "virtual time",
            format!("{:.1} s", self.virtual_time_ms as f64 / 1000.0),
        );
        s
    }

    /// The two header lines: what was simulated.
    fn write_config(&self, s: &mut String) {
        let c = &self.config;
        let _ = writeln!(
            s,
            "lichen routing simulation: {} nodes, degree {}, {:?}, htl {}, seed {}",
            c.nodes, c.degree, c.topology, c.htl, c.seed
        );
        let _ = writeln!(
            s,
            "  churn {:.0}%  adversary {:.1}% ({:?})  loss {:.2}%  latency {}-{} ms",
            c.churn * 100.0,
            c.adversary * 100.0,
            c.adversary_kind,
            c.loss * 100.0,
            c.latency_ms.0,
            c.latency_ms.1
        );
    }

    /// The topology and where inserts ended up.
    fn write_network(&self, s: &mut String) {
        let c = &self.config;
        row(
            s,
            "mean degree (one-sided)",
            format!("{:.2} ({:.2})", self.mean_degree, self.one_sided_degree),
        );
        row(
            s,
            "median link length",
            format!("{:.6}", self.median_link_length),
        );
        row(
            s,
            "link lengths vs 1/d (TV)",
            format!(
                "{:.3}  classes 1/2..1/n: {}",
                self.link_length_tv,
                self.link_length_classes
                    .iter()
                    .map(|f| format!("{:.0}", f * 100.0))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        row(
            s,
            "min degree / largest component",
            format!(
                "{} / {:.2}%",
                self.min_degree,
                self.largest_component * 100.0
            ),
        );
        if c.topology == Topology::Darknet {
            row(s, "location swaps", self.swaps.to_string());
        }
        if let Some(j) = &self.joins {
            row(
                s,
                "time to peers (joiners)",
                format!(
                    "{} of {} had {} peers: median {:.1} s, p95 {:.1} s, max {:.1} s",
                    j.reached, j.joined, j.target, j.median_s, j.p95_s, j.max_s
                ),
            );
        }
        if let Some(n) = &self.nat {
            row(
                s,
                "behind NAT: nodes / degree",
                format!(
                    "{} / mean {:.2}, min {}; reachable: mean {:.2}, max {}",
                    n.behind_nat,
                    n.mean_degree_nat,
                    n.min_degree_nat,
                    n.mean_degree_public,
                    n.max_degree_public
                ),
            );
            row(
                s,
                "NAT-NAT links / success",
                format!(
                    "{} / behind NAT {:.2}%, reachable {:.2}%",
                    n.nat_to_nat_links,
                    n.success_nat * 100.0,
                    n.success_public * 100.0
                ),
            );
        }
        row(
            s,
            "inserts completed",
            format!("{}/{}", self.inserts_completed, c.inserts),
        );
        row(
            s,
            "stores per insert",
            format!(
                "{:.2} (cache {:.2}, nowhere {})",
                self.stores_per_insert, self.caches_per_insert, self.inserts_stored_nowhere
            ),
        );
    }

    /// Requests: success, hops, traffic, failures, offences.
    fn write_requests(&self, s: &mut String) {
        row(s, "requests", self.requests.to_string());
        row(
            s,
            "success rate",
            format!(
                "{:.2}% ({}/{})",
                self.success_rate * 100.0,
                self.succeeded,
                self.requests
            ),
        );
        row(
            s,
            "hops mean / median / p95",
            format!(
                "{:.2} / {} / {}",
                self.hops_mean, self.hops_median, self.hops_p95
            ),
        );
        row(
            s,
            "messages per request",
            format!("{:.2}", self.messages_per_request),
        );
        row(
            s,
            "seconds/request mean/med/p95",
            format!(
                "{:.2} / {:.2} / {:.2}",
                self.seconds_per_request_mean,
                self.seconds_per_request_median,
                self.seconds_per_request_p95
            ),
        );
        if let Some(t) = &self.tunnels {
            write_tunnels(s, t);
        }
        row(
            s,
            "served from cache / store",
            format!("{} / {}", self.cache_hits, self.store_hits),
        );
        if !self.failures.is_empty() {
            let f: Vec<String> = self
                .failures
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            row(s, "failures", f.join(", "));
            row(
                s,
                "failed, data was online",
                self.failed_but_available.to_string(),
            );
        }
        let other: Vec<String> = self
            .unmeasured
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        for chunk in other.chunks(4) {
            row(s, "not measured", chunk.join(", "));
        }
        row(
            s,
            "offences / bad blocks caught",
            format!("{} / {}", self.offences_counted, self.bad_blocks_caught),
        );
    }
}

/// The tunnel counters, a few to a line.
fn write_tunnels(s: &mut String, t: &TunnelReport) {
    row(
        s,
        "tunnel hops / cells per req",
        format!("{} / {:.2}", t.hops, t.cells_per_request),
    );
    let shown: Vec<String> = t
        .counters
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    for chunk in shown.chunks(4) {
        row(s, "tunnels", chunk.join(", "));
    }
}

/// What the adversary learned.
fn write_attack(s: &mut String, a: &AttackReport) {
    if let Some(p) = &a.pitch_black {
        write_pitch_black(s, p);
        return;
    }
    for (case, [n, right]) in &a.cases {
        let _ = writeln!(
            s,
            "  attack case {case:<16} {right} right of {n} ({:.4})",
            *right as f64 / (*n).max(1) as f64
        );
    }
    let _ = writeln!(
        s,
        "  attack {:<21} precision {:.4}, recall {:.4}, false positives {:.4}, base rate {:.4}",
        a.name, a.precision, a.recall, a.false_positive_rate, a.base_rate
    );
    let _ = writeln!(
        s,
        "  attack candidates            {} ({} true, {} reachable), {} accused at posterior >= {}",
        a.candidates, a.true_candidates, a.reachable, a.accusations, a.threshold
    );
    if let Some(c) = &a.correlation {
        let _ = writeln!(
            s,
            "  correlation                  downloads caught {}/{} ({:.4}), blocks {:.4}; exit fetches {}, linked {}",
            c.downloads_caught, c.downloads, c.downloads_caught_fraction, c.blocks_caught_fraction,
            c.exit_requests, c.linked
        );
        let _ = writeln!(
            s,
            "  tunnels                      {} built, captured {} ({:.4}), guard {:.4}; F {:.4}, F^2 {:.4}",
            c.tunnels, c.captured_tunnels, c.capture_rate, c.guard_rate, c.f, c.f_squared
        );
        let _ = writeln!(
            s,
            "  tunnel builds (honest)       {} opened, {} failed ({} short lists)",
            c.tunnels_opened, c.builds_failed, c.short_lists
        );
    }
    if let (Some(b), Some(c)) = (a.success_before_turn, a.success_after_turn) {
        let t = a
            .time_to_capture_s
            .map_or_else(|| "never".to_string(), |t| format!("{t:.0} s"));
        let _ = writeln!(
            s,
            "  eclipse                      captured: {t}; victim success {b:.4} before the turn, {c:.4} after; {} replacements",
            a.replacements.unwrap_or(0)
        );
    }
}

/// The `pitch-black` days.
fn write_pitch_black(s: &mut String, p: &PitchBlackReport) {
    let _ = writeln!(
        s,
        "  attack pitch-black            {} attack points, defence {}, probe {}, day {:.0} s",
        p.attack_points,
        if p.defence { "on" } else { "off" },
        if p.probe { "on" } else { "off" },
        p.day_ms as f64 / 1000.0
    );
    let _ = writeln!(s, "    day  requests  success  half-arc  captured");
    for d in &p.days {
        let _ = writeln!(
            s,
            "    {:>3}  {:>8}  {:>6.1}%  {:>8.3}  {:>7.1}%",
            d.day,
            d.requests,
            d.success_rate * 100.0,
            d.half_arc,
            d.captured * 100.0
        );
    }
    let _ = writeln!(
        s,
        "  attacked days: success {:.1}%, probe moves {}, probe operations per node-day {:.2}",
        p.mean_success_attacked * 100.0,
        p.probe_moves,
        p.probe_operations_per_node_day
    );
}

fn write_anonymity(s: &mut String, a: &Anonymity) {
    row(s, "adversary observations", a.observations.to_string());
    row(
        s,
        "random-guess baseline",
        format!("{:.4}", a.random_baseline),
    );
    row(
        s,
        "HTL model baseline",
        format!("{:.4}", a.htl_model_baseline),
    );
    row(
        s,
        "adversary precision",
        format!(
            "{:.4} ({} guesses, recall {:.4})",
            a.precision, a.guesses, a.recall
        ),
    );
}

/// One `name value` line of the table.
fn row(s: &mut String, k: &str, v: String) {
    let _ = writeln!(s, "  {k:<28} {v}");
}

/// Named counts as `name n, name n, ...`.
fn counts(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
