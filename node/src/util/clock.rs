//! The node's one clock: a monotonic [`Instant`] for protocol timers (the
//! peer driver's policy, its deadlines) and the wall clock in milliseconds
//! since the Unix epoch (the timestamps FCP shows, the push records, a
//! peer's `last_seen`). The node holds one [`Clock`] (`Node::clock`) and
//! passes it to what needs the time, so a test can drive it
//! ([`ManualClock`]); [`now_ms`] is the system clock behind it.
//!
//! Pure measurement (how long a push took, a progress line) reads
//! `Instant::now()` directly; tokio's timers still wake the tasks, and
//! what is due is decided by this clock.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A clock: monotonic and wall time.
pub(crate) trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Monotonic now.
    fn now(&self) -> Instant;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Milliseconds since the Unix epoch (FCP timestamps).
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A clock that moves only when told ([`ManualClock::advance`]): both
/// times start at the system's and move together.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock {
    start: Instant,
    start_ms: u64,
    offset_ms: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl ManualClock {
    /// A clock at the system's time now.
    pub(crate) fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            start_ms: now_ms(),
            offset_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Move the clock forward.
    pub(crate) fn advance(&self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms
            .fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    fn offset(&self) -> u64 {
        self.offset_ms.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.start_ms.saturating_add(self.offset())
    }

    fn now(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_both_times_together() {
        let c = ManualClock::new();
        let (t0, w0) = (c.now(), c.now_ms());
        assert_eq!((c.now(), c.now_ms()), (t0, w0));
        c.advance(Duration::from_secs(11));
        assert_eq!(c.now() - t0, Duration::from_secs(11));
        assert_eq!(c.now_ms() - w0, 11_000);
    }
}
