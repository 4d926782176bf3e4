//! Darknet: the Pitch Black defence of Hyphanet build 1492.
//!
//! Pitch Black (Evans, GauthierDickey, Grothoff, ACSAC 2007): nodes that
//! lie in location swaps hand honest nodes locations from a few small
//! arcs of the circle, so the honest nodes crowd there and the rest of
//! the circle empties; data whose key falls in an empty stretch is kept by
//! the few nodes at its edges and is soon lost, and requests for it fail.
//!
//! The defence needs no trust in what swap partners say. About once per
//! [`Config::pitch_probe_interval`](super::Config::pitch_probe_interval)
//! the node inserts a block of random content (its own insert) and
//! fetches the block it inserted the period before (its own request). A
//! healthy network still has that block where its key points; when the
//! fetch ends in `NotFound` or `RouteNotFound`, the stretch of the circle
//! around the key has lost its nodes, and the node moves there with
//! probability 1/2 (half, as Hyphanet: another node's defensive move may
//! be what made the block unreachable, and all moving at once would
//! oscillate). So the emptied stretches fill again, at a rate no swap
//! partner controls.
//!
//! Both the insert and the fetch are started through
//! [`Node::handle_local_request`], so they follow every rule for the
//! node's own traffic (maximum HTL, no path folding, nothing kept in the
//! shared store at a high HTL, the forwarder's load rules); their outcomes
//! are taken here and never reach the embedder, and the fetched block is
//! dropped. A neighbour sees one more insert and one more request per
//! period, at a random time, of random content.

use rand::{Rng, RngCore};

use super::{
    Action, InsertOutcome, Key, KeyKind, LocalRequest, Millis, Node, RequestId, RequestOutcome,
    Verifier,
};

/// The probe's state.
#[derive(Debug, Default)]
pub(super) struct PitchState {
    /// When the next probe is due (set with the first peer).
    pub(super) next_at: Option<Millis>,
    /// The probe inserted last period, once its insert ended well.
    previous: Option<(Key, KeyKind)>,
    /// The insert in flight: its id and key.
    inserting: Option<(u64, Key, KeyKind)>,
    /// The check in flight: its id, the probe's key, and whether a loss
    /// moves us (the coin, tossed when the check starts).
    checking: Option<(u64, Key, bool)>,
}

impl<V: Verifier> Node<V> {
    /// Whether the probe runs at all.
    fn pitch_on(&self) -> bool {
        self.cfg.swapping && self.cfg.pitch_probe_interval > 0
    }

    /// Arm the first probe (with the first peer), at a random point of the
    /// first period.
    pub(super) fn pitch_arm(&mut self, now: Millis, rng: &mut impl RngCore) {
        if self.pitch_on() && self.pitch.next_at.is_none() {
            let t = now + rng.gen_range(0..self.cfg.pitch_probe_interval.max(1));
            self.pitch.next_at = Some(t);
        }
    }

    /// The probe is due: check last period's block, insert this period's,
    /// and draw the next time (between half and one and a half periods
    /// away).
    pub(super) fn pitch_due(&mut self, now: Millis, rng: &mut impl RngCore) {
        if self.pitch.next_at.is_none_or(|t| t > now) {
            return;
        }
        if !self.pitch_on() {
            self.pitch.next_at = None;
            return;
        }
        let period = self.cfg.pitch_probe_interval;
        self.pitch.next_at = Some(now + period / 2 + rng.gen_range(0..period.max(1)));
        if self.peers.is_empty() {
            return;
        }
        if let Some((key, kind)) = self.pitch.previous.take() {
            let moves = rng.gen_bool(0.5);
            self.stats.pitch_checks += 1;
            let id = self.handle_local_request(now, LocalRequest::Fetch { key, kind }, rng);
            self.pitch.checking = Some((id.0, key, moves));
        }
        if self.pitch.inserting.is_none() {
            if let Some((key, kind, block)) = self.verifier.probe_block(rng) {
                self.stats.pitch_probes += 1;
                let req = LocalRequest::Insert { key, kind, block };
                let id = self.handle_local_request(now, req, rng);
                self.pitch.inserting = Some((id.0, key, kind));
            }
        }
    }

    /// Take the outcome of a probe's insert or check out of the action
    /// stream (`None`: it was one, and is dealt with here).
    pub(super) fn pitch_outcome(&mut self, action: Action) -> Option<Action> {
        match action {
            Action::InsertDone { id, outcome } if self.pitch_insert_is(id) => {
                if let Some((_, key, kind)) = self.pitch.inserting.take() {
                    let stored = matches!(
                        outcome,
                        InsertOutcome::Success | InsertOutcome::RouteNotFound { .. }
                    );
                    self.pitch.previous = stored.then_some((key, kind));
                }
                None
            }
            Action::RequestDone { id, outcome } if self.pitch_check_is(id) => {
                if let Some((_, key, moves)) = self.pitch.checking.take() {
                    let lost = matches!(
                        outcome,
                        RequestOutcome::NotFound | RequestOutcome::RouteNotFound
                    );
                    if lost {
                        self.stats.pitch_lost += 1;
                        if moves {
                            self.stats.pitch_moves += 1;
                            self.set_location(key.location());
                        }
                    }
                }
                None
            }
            other => Some(other),
        }
    }

    fn pitch_insert_is(&self, id: RequestId) -> bool {
        self.pitch.inserting.is_some_and(|(i, _, _)| i == id.0)
    }

    fn pitch_check_is(&self, id: RequestId) -> bool {
        self.pitch.checking.is_some_and(|(i, _, _)| i == id.0)
    }
}
