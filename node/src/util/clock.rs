//! The node's wall clock: milliseconds since the Unix epoch, the one
//! source of the timestamps FCP shows and the peer list and push records
//! keep.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (FCP timestamps).
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
