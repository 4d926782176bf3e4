//! The `fold` attack: after a fetch, does the requester connect to the
//! node that served the data, or to any node on the path? Path folding
//! (Freenet's opennet) lets the nodes a request passed connect to the data
//! source; if the requester itself took the offer, the data source would
//! get a link from the requester right after serving it (issue 15).
//!
//! The colluders play data source and path node at their most inviting:
//! after every block they send an honest node (as the source or as a hop
//! on the way back) they offer their own noderef (`FoldOffer`), for every
//! request whatever its HTL, and never pass on anyone else's offer. Each
//! such answer is a serve. The guess: the first honest node that dials
//! the colluder within [`WINDOW`] after a serve is the requester.
//!
//! Candidates, for each serve followed by a dial: the honest nodes that
//! dialed that colluder at any time of the run (whom it could name at
//! all); the base rate is the precision of naming one of them at random,
//! i.e. the share of serves whose requester is among them, divided by
//! their number. Precision above it would mean the timing of dials says
//! who requested what.

use std::collections::BTreeMap;

use crate::report::AttackReport;
use crate::Sim;
use lichen_routing::{Message, NodeRef};

/// How long after a serve a dial counts (ms): the longest a forwarder
/// waits before acting on a fold offer (`fold_delay_max`, 20 s), plus
/// slack for the messages on the way.
const WINDOW: u64 = 21_000;

/// What the colluders recorded.
#[derive(Debug, Default)]
pub(crate) struct FoldState {
    /// (colluder, time, the requester) of each block a colluder sent an
    /// honest node, for measured requests of known origin.
    serves: Vec<(u32, u64, u32)>,
    /// Colluder → (time, honest dialer) of each dial it received.
    dials: BTreeMap<u32, Vec<(u64, u32)>>,
}

impl Sim {
    /// Colluder `from` sends `msg` to `to`: it drops every fold offer its
    /// routing core makes, and follows every block it sends an honest
    /// node with an offer of its own noderef. Returns (drop, send after).
    pub(crate) fn fold_on_send(
        &mut self,
        from: u32,
        to: u32,
        msg: &Message,
    ) -> (bool, Option<Message>) {
        match msg {
            Message::FoldOffer { .. } => (true, None),
            Message::DataFound { id, .. } if !self.nodes[to as usize].adversary => {
                let root = self.root(*id);
                if let Some(r) = self.reqs.get(&root).filter(|r| r.measured) {
                    self.attack.fold.serves.push((from, self.now, r.origin));
                }
                let s = &self.nodes[from as usize];
                let me = NodeRef {
                    location: s.policy.routing().location(),
                    address: s.bytes.clone(),
                };
                (
                    false,
                    Some(Message::FoldOffer {
                        id: *id,
                        noderef: me,
                    }),
                )
            }
            _ => (false, None),
        }
    }

    /// Honest node `i` dials node `j`.
    pub(crate) fn fold_dialed(&mut self, i: u32, j: u32) {
        if self.nodes[j as usize].adversary && !self.nodes[i as usize].adversary {
            let now = self.now;
            self.attack.fold.dials.entry(j).or_default().push((now, i));
        }
    }

    /// Run the guess on every serve.
    pub(crate) fn fold_report(&self) -> AttackReport {
        let st = &self.attack.fold;
        let (mut judged, mut cands, mut pos, mut tp) = (0usize, 0usize, 0usize, 0usize);
        for &(a, t, origin) in &st.serves {
            let Some(d) = st.dials.get(&a) else { continue };
            let Some(&(_, first)) = d.iter().find(|(at, _)| *at > t && *at <= t + WINDOW) else {
                continue;
            };
            let mut dialers: Vec<u32> = d.iter().map(|x| x.1).collect();
            dialers.sort_unstable();
            dialers.dedup();
            judged += 1;
            cands += dialers.len();
            pos += usize::from(dialers.contains(&origin));
            tp += usize::from(first == origin);
        }
        AttackReport::new(
            "fold",
            cands,
            (tp, judged - tp),
            (pos, cands - pos),
            judged,
            0.0,
        )
    }
}
