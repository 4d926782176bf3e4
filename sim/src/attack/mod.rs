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

mod levine;

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
}

impl Sim {
    /// After warm-up, before the measured workload: the attack's own
    /// set-up (for `downloader` and `uploader`, inserting the files).
    pub(crate) fn attack_insert_phase(&mut self) {
        match self.cfg.attack {
            Some(Attack::Downloader | Attack::Uploader) => self.files_insert_phase(),
            None => {}
        }
    }

    /// When the measured workload is scheduled from `t0`: the attack's
    /// own traffic (for `downloader`, the downloads).
    pub(crate) fn schedule_downloads(&mut self, t0: u64) {
        match self.cfg.attack {
            Some(Attack::Downloader | Attack::Uploader) => self.files_schedule_downloads(t0),
            None => {}
        }
    }

    /// A fetch of `block` started at `node` (ground truth).
    pub(crate) fn attack_fetch_started(&mut self, node: u32, block: u32) {
        match self.cfg.attack {
            Some(Attack::Downloader | Attack::Uploader) => self.files_fetch_started(node, block),
            None => {}
        }
    }

    /// Adversary node `to` received `msg` from `from`.
    pub(crate) fn attack_observe(&mut self, to: u32, from: u32, msg: &Message) {
        match self.cfg.attack {
            Some(a @ (Attack::Downloader | Attack::Uploader)) => {
                self.levine_observe(a, to, from, msg);
            }
            None => {}
        }
    }

    /// Run the attack's classifier on what the adversary recorded.
    pub(crate) fn attack_report(&self) -> Option<AttackReport> {
        match self.cfg.attack? {
            a @ (Attack::Downloader | Attack::Uploader) => Some(self.levine_report(a)),
        }
    }
}
