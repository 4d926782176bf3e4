//! Progress bars on stderr (indicatif), hidden when stderr is not a
//! terminal.

use super::reply::field_u64;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lichen_fcp::Message;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    None,
    Bytes,
    Blocks,
}

pub(super) struct Progress {
    pub(super) bar: ProgressBar,
    pub(super) mode: Mode,
    pub(super) visible: bool,
}

impl Progress {
    pub(super) fn new(visible: bool) -> Self {
        Progress {
            bar: ProgressBar::hidden(),
            mode: Mode::None,
            visible,
        }
    }

    /// Replaces the bar by a fresh one for a new phase (a new bar never
    /// draws a frame mixing the old phase's numbers with the new style).
    pub(super) fn phase(&mut self, mode: Mode, template: &str, message: &'static str, len: u64) {
        self.bar.finish_and_clear();
        let target = if self.visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        self.bar = ProgressBar::with_draw_target(Some(len), target)
            .with_style(style)
            .with_message(message);
        self.bar.enable_steady_tick(Duration::from_millis(200));
        self.mode = mode;
    }

    /// A byte counter (upload to or download from the node).
    pub(super) fn bytes(&mut self, message: &'static str, len: u64) {
        self.phase(
            Mode::Bytes,
            "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            message,
            len,
        );
    }

    /// Block progress from a `SimpleProgress` message.
    pub(super) fn blocks(&mut self, message: &'static str, m: &Message) {
        let (done, of) = block_counts(m);
        if self.mode != Mode::Blocks {
            self.phase(
                Mode::Blocks,
                "{msg:12} [{bar:30}] {pos}/{len} blocks {elapsed}",
                message,
                of,
            );
        }
        self.bar.set_length(of);
        self.bar.set_position(done.min(of));
    }

    pub(super) fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub(super) fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// `(Succeeded, Required or Total)` of a `SimpleProgress`.
pub(super) fn block_counts(m: &Message) -> (u64, u64) {
    let succeeded = field_u64(m, "Succeeded").unwrap_or(0);
    let required = field_u64(m, "Required")
        .filter(|&r| r > 0)
        .or_else(|| field_u64(m, "Total"))
        .unwrap_or(0);
    (succeeded, required)
}
