//! The attack suite (`--attack NAME`): each attack is a workload run among
//! the background traffic, what the colluding adversary nodes record of
//! it, and the classifier run on that record. `docs/anonymity.md` gives
//! the method and source of each.
//!
//! This module only dispatches: the simulator calls the hooks below at
//! fixed points (after warm-up, when measuring starts, on every message
//! an adversary receives, at the end), and each hook hands over to the
//! module of the attack being run. An attack lives in its own module:
//! - [`levine`]: `downloader` and `uploader` (Levine et al., CCS 2020).
//! - [`fold`]: does the requester connect to whoever served it?
//! - [`probe`]: does the victim answer what its user just did differently?
//! - [`traceback`]: Tian et al., INFOCOM 2013, request ids as an oracle.
//! - [`eclipse`]: `eclipse` (routing-table insertion, Baumeister et al.
//!   2012, carried to an eclipse).
//! - [`pitch_black`]: `pitch-black` (Evans et al., ACSAC 2007): lies in
//!   darknet location swaps, and the defence against them.
//! - [`correlation`]: end-to-end timing correlation through premix
//!   tunnels (Tor's threat model), a colluding guard and exit.

mod correlation;
mod eclipse;
mod fold;
mod levine;
mod pitch_black;
mod probe;
mod traceback;

pub use levine::{posterior, THRESHOLD};

use lichen_routing::Message;

use crate::config::Attack;
use crate::report::AttackReport;
use crate::Sim;

/// Every attack's state.
#[derive(Debug, Default)]
pub(crate) struct AttackState {
    /// The file workload (inserted and downloaded splitfiles) and the
    /// Levine counts.
    files: levine::LevineState,
    /// What the `fold` colluders recorded.
    fold: fold::FoldState,
    /// The `probe` victims and answers.
    probe: probe::ProbeState,
    /// The `traceback` colluders' traces.
    trace: traceback::TracebackState,
    /// The eclipse attack's victim, attackers' links and the victim's
    /// fetches.
    eclipse: eclipse::EclipseState,
    /// The `pitch-black` days and what they recorded.
    pitch: pitch_black::PitchState,
    /// The `correlation` colluders' guard and exit circuits, and the
    /// tunnels' ground truth.
    corr: correlation::CorrState,
}

impl Sim {
    /// After warm-up, before the measured workload: the attack's own
    /// set-up (for `downloader` and `uploader`, inserting the files).
    pub(crate) fn attack_insert_phase(&mut self) {
        match self.cfg.attack {
            Some(Attack::Downloader | Attack::Uploader | Attack::Correlation) => {
                self.files_insert_phase();
            }
            Some(Attack::Eclipse | Attack::EclipseReturn) => self.eclipse_run(),
            Some(Attack::PitchBlack) => self.pitch_black_phase(),
            _ => {}
        }
    }

    /// When the measured workload is scheduled from `t0`: the attack's
    /// own traffic (for `downloader`, the downloads).
    pub(crate) fn schedule_downloads(&mut self, t0: u64) {
        match self.cfg.attack {
            Some(Attack::Downloader | Attack::Uploader | Attack::Correlation) => {
                self.files_schedule_downloads(t0);
            }
            Some(a @ (Attack::Probe | Attack::ProbeUnasked)) => {
                self.probe_schedule(t0, a == Attack::Probe);
            }
            _ => {}
        }
    }

    /// An attack's own timed step (`Ev::Attack`).
    pub(crate) fn attack_event(&mut self, tag: u64) {
        if matches!(self.cfg.attack, Some(Attack::Probe | Attack::ProbeUnasked)) {
            self.probe_send(tag);
        }
    }

    /// Adversary node `from` sends `msg` to `to`: (drop it, send this
    /// after it).
    pub(crate) fn attack_on_send(
        &mut self,
        from: u32,
        to: u32,
        msg: &Message,
    ) -> (bool, Option<Message>) {
        match self.cfg.attack {
            Some(Attack::Fold) => self.fold_on_send(from, to, msg),
            Some(Attack::Correlation) => {
                self.corr_on_send(from, to, msg);
                (false, None)
            }
            _ => (false, None),
        }
    }

    /// Any node `to` (honest or not) received `msg` from `from`, before
    /// its policy sees it: ground truth for the attack's scoring only.
    pub(crate) fn attack_delivered(&mut self, to: u32, from: u32, msg: &Message) {
        if self.cfg.attack == Some(Attack::Correlation) {
            self.corr_delivered(to, from, msg);
        }
    }

    /// Any node `from` puts `msg` for `to` on the wire: ground truth for
    /// the attack's scoring only.
    pub(crate) fn attack_sent(&mut self, from: u32, to: u32, msg: &Message) {
        if self.cfg.attack == Some(Attack::Correlation) {
            self.corr_sent(from, to, msg);
        }
    }

    /// Node `i` dials node `j` (both online).
    pub(crate) fn attack_dialed(&mut self, i: u32, j: u32) {
        if self.cfg.attack == Some(Attack::Fold) {
            self.fold_dialed(i, j);
        }
    }

    /// A fetch of `block` started at `node` (ground truth).
    pub(crate) fn attack_fetch_started(&mut self, node: u32, block: u32) {
        if matches!(
            self.cfg.attack,
            Some(Attack::Downloader | Attack::Uploader | Attack::Correlation)
        ) {
            self.files_fetch_started(node, block);
        }
        if self.cfg.attack == Some(Attack::Correlation) {
            self.corr_fetch_started(node, block);
        }
    }

    /// Adversary node `to` received `msg` from `from`. Returns whether the
    /// attack takes it (an answer to its own probe, an eclipse attacker's
    /// own traffic): then the node's policy does not see it.
    pub(crate) fn attack_observe(&mut self, to: u32, from: u32, msg: &Message) -> bool {
        match self.cfg.attack {
            Some(a @ (Attack::Downloader | Attack::Uploader)) => {
                self.levine_observe(a, to, from, msg);
                false
            }
            Some(Attack::Probe | Attack::ProbeUnasked) => self.probe_observe(to, from, msg),
            Some(Attack::Traceback) => self.traceback_observe(to, from, msg),
            Some(Attack::Eclipse | Attack::EclipseReturn) => self.eclipse_intercept(to, from, msg),
            Some(Attack::Correlation) => {
                self.corr_observe(to, from, msg);
                false
            }
            _ => false,
        }
    }

    /// Run the attack's classifier on what the adversary recorded.
    pub(crate) fn attack_report(&self) -> Option<AttackReport> {
        match self.cfg.attack? {
            a @ (Attack::Downloader | Attack::Uploader) => Some(self.levine_report(a)),
            Attack::Fold => Some(self.fold_report()),
            a @ (Attack::Probe | Attack::ProbeUnasked) => Some(self.probe_report(a)),
            Attack::Traceback => Some(self.traceback_report()),
            Attack::Eclipse | Attack::EclipseReturn => Some(self.eclipse_report()),
            Attack::PitchBlack => Some(self.pitch_black_report()),
            Attack::Correlation => Some(self.correlation_report()),
        }
    }
}
