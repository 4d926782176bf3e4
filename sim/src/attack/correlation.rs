//! The `correlation` attack: end-to-end timing correlation through premix
//! tunnels (issue 16; `docs/anonymity.md`, "End-to-end correlation").
//!
//! Tor's threat model (Dingledine, Mathewson, Syverson, USENIX Security
//! 2004; Syverson, Tsudik, Reed, Landwehr, PET 2000) concedes that an
//! adversary holding both ends of a circuit links them by timing (Murdoch
//! and Danezis, S&P 2005, measure how little it takes). Here the colluding
//! adversary nodes see only what they really see:
//! - as a **guard** (a hop whose `Create` says depth 1, so that its
//!   predecessor is the user): the neighbour who built the circuit and the
//!   time of every forward cell on it;
//! - as an **exit** (a `Create` at the tunnels' full depth): the time of the
//!   `Create` and of every forward cell, and the requests it runs for that
//!   circuit (its own software knows which circuit handed it each request;
//!   the simulator recovers that from when the exit answers, see
//!   `Sim::corr_on_send`).
//!
//! A guard circuit and an exit circuit are linked when every event of the
//! exit circuit (its `Create` and each forward cell) follows a forward cell
//! of the guard circuit by one and the same delay, within [`JITTER`], and
//! that delay is at most what the links between them can take. Each request
//! the exit ran on a linked circuit becomes the claim "the guard's
//! neighbour fetched this key". Ground truth (which tunnel each circuit
//! belongs to) is traced separately, from what every node sends, and used
//! only to score the claims and to count the capture rate.
//!
//! The workload is the downloader attack's (`levine`): files inserted, then
//! downloaded by honest nodes among the background requests.

use std::collections::{BTreeSet, HashMap, HashSet};

use lichen_routing::{Key, Message};
use lichen_tunnel::{Dir, TunnelMsg};

use crate::report::{round4, AttackReport, CorrelationFigures};
use crate::Sim;

/// How far a relayed cell's delay may stray from the circuit's (ms). The
/// simulator's links have fixed latencies, so 0 would do; a real
/// adversary needs a window, and this keeps the rule honest about that.
const JITTER: u64 = 5;

/// A circuit a colluding guard holds for its neighbour.
#[derive(Debug)]
struct GuardCirc {
    /// The neighbour that sent the depth-1 `Create`: the user.
    user: u32,
    /// Arrival times of the forward cells.
    times: Vec<u64>,
}

/// A circuit ending at a colluding exit.
#[derive(Debug)]
struct ExitCirc {
    /// (its predecessor, the exit, the circuit id on that link): the
    /// ground-truth hop key.
    hop: (u32, u32, u32),
    /// Arrival times of the `Create` and of the forward cells.
    times: Vec<u64>,
    /// (answer time, key) of the fetches the exit ran for it.
    fetches: Vec<(u64, Key)>,
}

/// One tunnel of an honest user (ground truth).
#[derive(Debug)]
struct Tunnel {
    guard: u32,
    exit: Option<u32>,
}

/// What the colluders recorded, and the ground truth beside it.
#[derive(Debug, Default)]
pub(crate) struct CorrState {
    guards: Vec<GuardCirc>,
    guard_of: HashMap<(u32, u32, u32), usize>,
    exits: Vec<ExitCirc>,
    exit_of: HashMap<(u32, u32, u32), usize>,
    /// Id → key of every request an adversary node sent.
    sent: HashMap<u64, Key>,
    /// Adversary → (time, key) of the last answer to a request it sent.
    answered: HashMap<u32, (u64, Key)>,
    /// Ground truth: honest users' tunnels.
    tunnels: Vec<Tunnel>,
    /// Ground truth: each circuit hop (sender, receiver, id) → tunnel.
    hop_tunnel: HashMap<(u32, u32, u32), usize>,
    /// Ground truth: node → (time, sender, id) of the last forward cell
    /// it received (what a `Create` it sends at that instant extends).
    last_forward: HashMap<u32, (u64, u32, u32)>,
    /// Ground truth: (node, key) of every fetch started.
    fetched: HashSet<(u32, Key)>,
}

impl Sim {
    /// A fetch of `block` started at `node` (ground truth).
    pub(crate) fn corr_fetch_started(&mut self, node: u32, block: u32) {
        let key = self.blocks[block as usize].0;
        self.attack.corr.fetched.insert((node, key));
    }

    /// Any node `to` received `msg` from `from` (ground truth only).
    pub(crate) fn corr_delivered(&mut self, to: u32, from: u32, msg: &Message) {
        if let Some(TunnelMsg::Cell {
            circ,
            dir: Dir::Forward,
            ..
        }) = tunnel_msg(msg)
        {
            let now = self.now;
            self.attack.corr.last_forward.insert(to, (now, from, circ));
        }
    }

    /// Any node `from` sends `msg` to `to` (ground truth only): trace the
    /// honest users' tunnels hop by hop.
    pub(crate) fn corr_sent(&mut self, from: u32, to: u32, msg: &Message) {
        let Some(TunnelMsg::Create { circ, depth, .. }) = tunnel_msg(msg) else {
            return;
        };
        let full = depth == self.cfg.tunnel_hops;
        let st = &mut self.attack.corr;
        let t = if depth == 1 {
            if self.nodes[from as usize].adversary {
                return;
            }
            st.tunnels.push(Tunnel {
                guard: to,
                exit: None,
            });
            st.tunnels.len() - 1
        } else {
            // A hop sends a `Create` while handling the `Extend` that
            // came as a forward cell at this very instant.
            let Some(&(at, prev, pcirc)) = st.last_forward.get(&from) else {
                return;
            };
            let Some(&t) = st.hop_tunnel.get(&(prev, from, pcirc)) else {
                return;
            };
            if at != self.now {
                return;
            }
            t
        };
        st.hop_tunnel.insert((from, to, circ), t);
        if full {
            st.tunnels[t].exit = Some(to);
        }
    }

    /// Adversary node `to` received `msg` from `from`: what it records as
    /// a guard, an exit or a router.
    pub(crate) fn corr_observe(&mut self, to: u32, from: u32, msg: &Message) {
        let now = self.now;
        let hops = self.cfg.tunnel_hops;
        let honest = !self.nodes[from as usize].adversary;
        let st = &mut self.attack.corr;
        match msg {
            Message::Tunnel { .. } => {}
            m => {
                if let Some(&key) = m.id().and_then(|id| st.sent.get(&id)) {
                    st.answered.insert(to, (now, key));
                }
                return;
            }
        }
        match tunnel_msg(msg) {
            Some(TunnelMsg::Create { circ, depth, .. }) => {
                let hop = (from, to, circ);
                if depth == 1 && honest {
                    st.guard_of.insert(hop, st.guards.len());
                    st.guards.push(GuardCirc {
                        user: from,
                        times: Vec::new(),
                    });
                }
                if depth == hops {
                    st.exit_of.insert(hop, st.exits.len());
                    st.exits.push(ExitCirc {
                        hop,
                        times: vec![now],
                        fetches: Vec::new(),
                    });
                }
            }
            Some(TunnelMsg::Cell {
                circ,
                dir: Dir::Forward,
                ..
            }) => {
                let hop = (from, to, circ);
                if let Some(&g) = st.guard_of.get(&hop) {
                    st.guards[g].times.push(now);
                }
                if let Some(&e) = st.exit_of.get(&hop) {
                    st.exits[e].times.push(now);
                }
            }
            _ => {}
        }
    }

    /// Adversary node `from` sends `msg` to `to`. Its requests are
    /// remembered by id; the answer through a tunnel ending here that it
    /// sends at the very instant a request of its own was answered is
    /// that request's answer, so the circuit carried that key. (The
    /// exit's own software knows which circuit handed it each request; the
    /// simulator cannot read it, and recovers it so. Requests the exit
    /// gives up on by its own timer are not counted: that only makes the
    /// adversary weaker.)
    pub(crate) fn corr_on_send(&mut self, from: u32, to: u32, msg: &Message) {
        let now = self.now;
        let st = &mut self.attack.corr;
        match msg {
            Message::Request { id, key, .. } => {
                st.sent.insert(*id, *key);
            }
            Message::Tunnel { .. } => {
                let Some(TunnelMsg::Cell {
                    circ,
                    dir: Dir::Backward,
                    ..
                }) = tunnel_msg(msg)
                else {
                    return;
                };
                let Some(&e) = st.exit_of.get(&(to, from, circ)) else {
                    return;
                };
                let Some(&(at, key)) = st.answered.get(&from) else {
                    return;
                };
                if at == now && st.exits[e].fetches.last() != Some(&(at, key)) {
                    st.exits[e].fetches.push((at, key));
                }
            }
            _ => {}
        }
    }

    /// The guard circuit whose forward cells explain every event of exit
    /// circuit `e` at one delay, if any.
    fn corr_link(&self, e: &ExitCirc, window: u64) -> Option<usize> {
        let st = &self.attack.corr;
        let first = e.times[0];
        if self.cfg.tunnel_hops == 1 {
            // The exit is the guard: its predecessor is the user.
            return st.guard_of.get(&e.hop).copied();
        }
        let near = |times: &[u64], t: u64| {
            let lo = t.saturating_sub(JITTER);
            let i = times.partition_point(|&x| x < lo);
            times.get(i).is_some_and(|&x| x <= t + JITTER)
        };
        st.guards.iter().enumerate().find_map(|(g, gc)| {
            let (Some(&g0), Some(&g1)) = (gc.times.first(), gc.times.last()) else {
                return None;
            };
            if g0 >= first || g1 + window < first {
                return None;
            }
            let lo = gc.times.partition_point(|&x| x + window < first);
            let hi = gc.times.partition_point(|&x| x < first);
            gc.times[lo..hi]
                .iter()
                .any(|&tg| {
                    let d = first - tg;
                    e.times.iter().all(|&t| t >= d && near(&gc.times, t - d))
                })
                .then_some(g)
        })
    }

    /// Run the linking on what the colluders recorded and score it.
    pub(crate) fn correlation_report(&self) -> AttackReport {
        let st = &self.attack.corr;
        let hops = u64::from(self.cfg.tunnel_hops);
        let window = hops.saturating_sub(1) * self.cfg.latency_ms.1 + JITTER;
        let mut claims: HashSet<(u32, Key)> = HashSet::new();
        let (mut cands, mut pos, mut tp, mut fp, mut reachable) = (0, 0, 0, 0, 0);
        let (mut exit_requests, mut linked) = (0, 0);
        for e in &st.exits {
            if e.fetches.is_empty() {
                continue;
            }
            exit_requests += e.fetches.len();
            let first = e.times[0];
            // Whom the adversary could name at random: the users of the
            // colluding guards' circuits alive when this one was built.
            let pool: BTreeSet<u32> = st
                .guards
                .iter()
                .filter(|g| {
                    g.times
                        .first()
                        .zip(g.times.last())
                        .is_some_and(|(&a, &b)| a < first && first <= b + window)
                })
                .map(|g| g.user)
                .collect();
            let truth_guard = st
                .hop_tunnel
                .get(&e.hop)
                .map(|&t| st.tunnels[t].guard)
                .is_some_and(|g| self.nodes[g as usize].adversary);
            let user = self.corr_link(e, window).map(|g| st.guards[g].user);
            linked += usize::from(user.is_some()) * e.fetches.len();
            for (_, k) in &e.fetches {
                cands += pool.len();
                pos += pool
                    .iter()
                    .filter(|&&u| st.fetched.contains(&(u, *k)))
                    .count();
                reachable += usize::from(truth_guard);
                if let Some(u) = user {
                    if st.fetched.contains(&(u, *k)) {
                        tp += 1;
                        claims.insert((u, *k));
                    } else {
                        fp += 1;
                    }
                }
            }
        }
        let downloads = self.file_downloads();
        let (mut caught, mut blocks, mut blocks_caught) = (0usize, 0usize, 0usize);
        for &(u, file) in &downloads {
            let named = file
                .iter()
                .filter(|&&b| claims.contains(&(u, self.blocks[b as usize].0)))
                .count();
            blocks += file.len();
            blocks_caught += named;
            caught += usize::from(named > 0);
        }
        let built: Vec<&Tunnel> = st.tunnels.iter().filter(|t| t.exit.is_some()).collect();
        let adv = |n: u32| self.nodes[n as usize].adversary;
        let with_guard = built.iter().filter(|t| adv(t.guard)).count();
        let captured = built
            .iter()
            .filter(|t| adv(t.guard) && t.exit.is_some_and(adv))
            .count();
        let f = self.nodes.iter().filter(|s| s.adversary).count() as f64
            / self.nodes.len().max(1) as f64;
        let ratio = |a: usize, b: usize| round4(a as f64 / b.max(1) as f64);
        let honest_stats: Vec<lichen_routing::TunnelStats> = self
            .nodes
            .iter()
            .filter(|s| !s.adversary)
            .filter_map(|s| s.policy.tunnels().map(lichen_routing::Tunnelled::stats))
            .collect();
        let mut r = AttackReport::new(
            "correlation",
            cands,
            (tp, fp),
            (pos, cands - pos),
            reachable,
            0.0,
        );
        r.correlation = Some(CorrelationFigures {
            downloads: downloads.len(),
            downloads_caught: caught,
            downloads_caught_fraction: ratio(caught, downloads.len()),
            blocks_caught_fraction: ratio(blocks_caught, blocks),
            tunnels: built.len(),
            captured_tunnels: captured,
            capture_rate: ratio(captured, built.len()),
            guard_rate: ratio(with_guard, built.len()),
            f: round4(f),
            f_squared: round4(f * f),
            exit_requests,
            linked,
            tunnels_opened: honest_stats.iter().map(|t| t.built).sum(),
            builds_failed: honest_stats.iter().map(|t| t.build_failed).sum(),
            short_lists: honest_stats.iter().map(|t| t.short_lists).sum(),
        });
        r
    }
}

/// The tunnel message `msg` carries, if it is one that decodes.
fn tunnel_msg(msg: &Message) -> Option<TunnelMsg> {
    match msg {
        Message::Tunnel { cell } => TunnelMsg::decode(cell).ok(),
        _ => None,
    }
}
