//! The node's wall clock: milliseconds since the Unix epoch, the one
//! source of the timestamps FCP shows and the push records keep. The node
//! holds one [`Clock`] (`Node::clock`) and passes it to what needs the
//! time; [`now_ms`] is the system clock behind it (the peer driver still
//! reads it directly).

use std::time::{SystemTime, UNIX_EPOCH};

/// A wall clock in milliseconds since the Unix epoch.
pub(crate) trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
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
