//! Per-node bandwidth limits: one token bucket for upload and one for
//! download, shared by every link (`[network] upload_limit` /
//! `download_limit`, bytes per second, 0 = unlimited).
//!
//! The bucket's arithmetic takes the time as an argument
//! ([`TokenBucket::take_at`]) so it is testable without a clock; the async
//! [`TokenBucket::take`] sleeps for what it returns.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `rate` bytes per second, holding at most `burst`. The
/// rate may change while the bucket is in use ([`TokenBucket::set_rate`]).
#[derive(Debug)]
pub struct TokenBucket {
    state: Mutex<State>,
    /// Bytes taken since the bucket was made, limited or not.
    total: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct State {
    rate: u64,
    burst: u64,
    /// Tokens available; negative when bytes were taken on credit.
    tokens: f64,
    last: Option<Instant>,
}

/// The burst of a bucket of `rate` bytes a second: one second's worth, at
/// least two largest frames.
fn burst_of(rate: u64) -> u64 {
    rate.max(2 * 65_537)
}

impl TokenBucket {
    /// A bucket of `rate` bytes per second (0: unlimited). The burst is one
    /// second's worth, at least one largest frame.
    #[must_use]
    pub fn new(rate: u64) -> Self {
        let burst = burst_of(rate);
        TokenBucket {
            total: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(State {
                rate,
                burst,
                tokens: burst as f64,
                last: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the bucket limits anything.
    #[must_use]
    pub fn is_unlimited(&self) -> bool {
        self.rate() == 0
    }

    /// Bytes taken since the bucket was made (every byte the links sent
    /// or read, limited or not).
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The limit in bytes per second (0: unlimited).
    #[must_use]
    pub fn rate(&self) -> u64 {
        self.state().rate
    }

    /// Change the limit (0: unlimited), in effect for the next bytes
    /// taken. Debt already taken on credit is kept (and repaid at the new
    /// rate); saved tokens above the new burst are dropped.
    pub fn set_rate(&self, rate: u64) {
        let mut s = self.state();
        s.rate = rate;
        s.burst = burst_of(rate);
        s.tokens = s.tokens.min(s.burst as f64);
    }

    /// Take `n` bytes at time `now`; returns how long the caller must wait
    /// before using them (zero if they were available). Bytes are taken
    /// on credit, so a large frame is never starved.
    pub fn take_at(&self, now: Instant, n: usize) -> Duration {
        self.total
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        let mut s = self.state();
        if s.rate == 0 {
            // Unlimited: nothing owed, whatever was owed before.
            s.tokens = s.burst as f64;
            s.last = Some(now);
            return Duration::ZERO;
        }
        if let Some(last) = s.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * s.rate as f64;
            s.tokens = (s.tokens + refill).min(s.burst as f64);
        }
        s.last = Some(now);
        s.tokens -= n as f64;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / s.rate as f64)
        }
    }

    /// Take `n` bytes, sleeping as long as the limit requires.
    pub async fn take(&self, n: usize) {
        let wait = self.take_at(Instant::now(), n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The node's two buckets.
#[derive(Debug)]
pub struct Bandwidth {
    /// Bytes written to peers.
    pub upload: TokenBucket,
    /// Bytes read from peers.
    pub download: TokenBucket,
}

impl Bandwidth {
    /// Limits in bytes per second (0: unlimited).
    #[must_use]
    pub fn new(upload_limit: u64, download_limit: u64) -> Self {
        Bandwidth {
            upload: TokenBucket::new(upload_limit),
            download: TokenBucket::new(download_limit),
        }
    }

    /// No limits.
    #[must_use]
    pub fn unlimited() -> Self {
        Self::new(0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let b = TokenBucket::new(0);
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(b.take_at(t, 1 << 20), Duration::ZERO);
        }
    }

    #[test]
    fn long_run_rate_is_the_limit() {
        // 1 MB/s; send 10 MB as fast as allowed: about 10 s minus the burst.
        let b = TokenBucket::new(1_000_000);
        let start = Instant::now();
        let mut now = start;
        for _ in 0..10_000 {
            now += b.take_at(now, 1000);
        }
        let secs = (now - start).as_secs_f64();
        assert!((8.5..=10.1).contains(&secs), "{secs}");
    }

    #[test]
    fn idle_time_refills_up_to_the_burst() {
        let b = TokenBucket::new(200_000);
        let t0 = Instant::now();
        assert_eq!(b.take_at(t0, 200_000), Duration::ZERO);
        assert!(b.take_at(t0, 100_000) > Duration::ZERO);
        let t1 = t0 + Duration::from_secs(100);
        // After a long idle period only one burst is available.
        assert_eq!(b.take_at(t1, 200_000), Duration::ZERO);
        assert!(b.take_at(t1, 1) > Duration::ZERO);
    }

    #[test]
    fn a_new_rate_holds_from_the_next_bytes() {
        // 1 MB/s, then 250 kB/s: 10 MB after the change take four times
        // as long as 10 MB before it; then unlimited, nothing waits.
        let b = TokenBucket::new(1_000_000);
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..10_000 {
            now += b.take_at(now, 1000);
        }
        let fast = (now - t0).as_secs_f64();
        b.set_rate(250_000);
        assert_eq!(b.rate(), 250_000);
        let t1 = now;
        for _ in 0..10_000 {
            now += b.take_at(now, 1000);
        }
        let slow = (now - t1).as_secs_f64();
        assert!((38.0..=41.0).contains(&slow), "{slow}");
        assert!(slow > 3.5 * fast, "{slow} vs {fast}");
        b.set_rate(0);
        assert!(b.is_unlimited());
        assert_eq!(b.take_at(now, 100 << 20), Duration::ZERO);
        // Every byte counted, limited or not.
        assert_eq!(b.total(), 20_000 * 1000 + (100 << 20));
    }
}
