//! Timeouts learned from how long answers took, as Tor learns its circuit
//! build timeout from its own builds: a silent peer costs a small
//! multiple of what an answer usually takes, not a fixed worst case, and
//! a slow network raises the timeout with its answers.

use std::collections::VecDeque;

/// How a [`LearnedTimeout`] turns answer times into a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Answers kept (the newest).
    pub samples: usize,
    /// Answers seen before the timeout is learned; until then it is the
    /// maximum given to [`LearnedTimeout::timeout`].
    pub min_samples: usize,
    /// The percentile of the kept answers the timeout is a multiple of
    /// (50: the median).
    pub percentile: usize,
    /// The multiple.
    pub factor: u64,
    /// The shortest timeout learned (ms).
    pub min_ms: u64,
}

/// The last answer times (ms) and the timeout a [`Rule`] draws from them.
#[derive(Clone, Debug)]
pub struct LearnedTimeout {
    rule: Rule,
    times: VecDeque<u64>,
}

impl LearnedTimeout {
    /// Nothing learned yet.
    #[must_use]
    pub fn new(rule: Rule) -> Self {
        LearnedTimeout {
            rule,
            times: VecDeque::new(),
        }
    }

    /// An answer took `took_ms`.
    pub fn record(&mut self, took_ms: u64) {
        if self.rule.samples == 0 {
            return;
        }
        if self.times.len() >= self.rule.samples {
            self.times.pop_front();
        }
        self.times.push_back(took_ms);
    }

    /// Answers kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// `factor` × the rule's percentile of the kept answers, at least
    /// `min_ms`, at most `max_ms`; `max_ms` until `min_samples` answers
    /// were seen.
    #[must_use]
    pub fn timeout(&self, max_ms: u64) -> u64 {
        if self.times.len() < self.rule.min_samples.max(1) {
            return max_ms;
        }
        let mut t: Vec<u64> = self.times.iter().copied().collect();
        t.sort_unstable();
        let i = (t.len() * self.rule.percentile.min(100) / 100).min(t.len() - 1);
        t[i].saturating_mul(self.rule.factor)
            .clamp(self.rule.min_ms.min(max_ms), max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        samples: 4,
        min_samples: 3,
        percentile: 50,
        factor: 4,
        min_ms: 100,
    };

    #[test]
    fn the_maximum_until_enough_answers_then_a_multiple_of_the_percentile_within_bounds() {
        let mut l = LearnedTimeout::new(RULE);
        assert_eq!(l.timeout(10_000), 10_000);
        l.record(500);
        l.record(1_000);
        assert_eq!(l.timeout(10_000), 10_000, "two answers are not enough");
        l.record(1_500);
        assert_eq!(l.timeout(10_000), 4_000, "4 × the median, 1,000");
        assert_eq!(l.timeout(3_000), 3_000, "at most the maximum");
        // Only the newest four are kept: 1,000 1,500 1 1 (the upper
        // median: 1,000).
        l.record(1);
        l.record(1);
        assert_eq!(l.len(), 4);
        assert_eq!(l.timeout(10_000), 4_000);
        l.record(1);
        assert_eq!(l.timeout(10_000), 100, "at least min_ms");
        assert_eq!(l.timeout(50), 50, "a maximum below min_ms wins");
    }

    #[test]
    fn a_high_percentile_follows_the_slow_answers() {
        let mut l = LearnedTimeout::new(Rule {
            samples: 100,
            min_samples: 1,
            percentile: 95,
            factor: 1,
            min_ms: 0,
        });
        for t in 1..=100 {
            l.record(t);
        }
        assert_eq!(l.timeout(u64::MAX), 96);
    }
}
