//! The order and timing of a download's and an insert's block requests,
//! drawn from a seeded random generator (sans-IO: the caller passes the
//! seed, the block source or sink does the waiting).
//!
//! A download asked for its blocks in file order would hand each
//! neighbour its arc of the file in order, and requests started the
//! moment a reply frees a slot would mark the node as their origin
//! (issue 15). So a download opens segments in a random order across the
//! whole file, with at most a few held in memory (and the segment next to
//! be written opened when all of them wait for it, so the document still
//! streams in order);
//! takes each next block from a random open segment, in a random
//! permutation of that segment's blocks; and waits a random delay before
//! each request that goes to the network. An insert puts each segment's
//! blocks in a random permutation, each after a random delay.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Default longest pause before a block request or insert
/// ([`crate::FetchOptions::jitter`], [`crate::InsertOptions::jitter`]).
pub const REQUEST_JITTER: Duration = Duration::from_millis(20);

/// The random choices of one download or insert.
#[derive(Debug)]
pub(crate) struct Pace {
    rng: StdRng,
    jitter: Duration,
}

impl Pace {
    /// Choices drawn from `seed`; delays uniform in `[0, jitter)`.
    pub(crate) fn new(seed: u64, jitter: Duration) -> Self {
        Pace {
            rng: StdRng::seed_from_u64(seed),
            jitter,
        }
    }

    /// The wait before the next request that goes to the network.
    pub(crate) fn delay(&mut self) -> Duration {
        if self.jitter.is_zero() {
            return Duration::ZERO;
        }
        let micros = u64::try_from(self.jitter.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.gen_range(0..micros.max(1)))
    }

    /// Shuffle `v` in place.
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        v.shuffle(&mut self.rng);
    }

    /// The order in which a segment's `n` blocks (`k` data blocks first)
    /// are asked for: a permutation of the data blocks, then one of the
    /// check blocks (asked for only to replace missing data blocks).
    pub(crate) fn block_order(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut data: Vec<usize> = (0..k.min(n)).collect();
        let mut check: Vec<usize> = (k.min(n)..n).collect();
        self.shuffle(&mut data);
        self.shuffle(&mut check);
        data.extend(check);
        data
    }

    /// An index drawn with probability proportional to its weight; `None`
    /// when every weight is 0.
    pub(crate) fn pick_weighted(&mut self, weights: &[usize]) -> Option<usize> {
        let total: usize = weights.iter().sum();
        if total == 0 {
            return None;
        }
        let mut at = self.rng.gen_range(0..total);
        for (i, &w) in weights.iter().enumerate() {
            if at < w {
                return Some(i);
            }
            at -= w;
        }
        None
    }

    /// The next segment to open, of `opened.len()` segments, when `open`
    /// segments are being fetched and `done` more are done and held in
    /// memory waiting for their turn to be written, out of at most
    /// `max_held` in memory, and `next_write` is the first segment not yet
    /// written: a random one not yet opened, from `next_write` on. When
    /// every place is taken by a segment waiting for its turn (none is
    /// being fetched), `next_write` is opened in one place more, so the
    /// download always moves on (at most `max_held + 1` segments are ever
    /// in memory). `None` when no place is free or nothing is left.
    pub(crate) fn next_segment(
        &mut self,
        opened: &[bool],
        next_write: usize,
        (open, done): (usize, usize),
        max_held: usize,
    ) -> Option<usize> {
        if open + done >= max_held.max(1) {
            let stuck = open == 0 && opened.get(next_write).is_some_and(|o| !o);
            return stuck.then_some(next_write);
        }
        let left = opened.iter().skip(next_write).filter(|o| !**o).count();
        if left == 0 {
            return None;
        }
        let nth = self.rng.gen_range(0..left);
        opened
            .iter()
            .enumerate()
            .skip(next_write)
            .filter(|(_, o)| !**o)
            .nth(nth)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_bounded_varied_and_seeded() {
        let draw = |seed| {
            let mut p = Pace::new(seed, Duration::from_millis(20));
            (0..200).map(|_| p.delay()).collect::<Vec<_>>()
        };
        let d = draw(1);
        assert!(d.iter().all(|d| *d < Duration::from_millis(20)));
        let mut distinct = d.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 150, "delays hardly vary");
        assert_eq!(d, draw(1));
        assert_ne!(d, draw(2));
        assert!(Pace::new(1, Duration::ZERO).delay().is_zero());
    }

    #[test]
    fn segments_open_at_random_and_the_next_to_write_when_stuck() {
        let mut p = Pace::new(3, Duration::ZERO);
        let mut opened = vec![false; 20];
        opened[7] = true;
        for _ in 0..50 {
            // Every place waiting for its turn: the next to write, beyond
            // the bound.
            assert_eq!(p.next_segment(&opened, 2, (0, 4), 4), Some(2));
            // Full while some are being fetched: nothing.
            assert_eq!(p.next_segment(&opened, 2, (1, 3), 4), None);
            let s = p.next_segment(&opened, 2, (1, 2), 4).unwrap();
            assert!(s >= 2 && s != 7, "{s}");
        }
        opened[2] = true;
        assert_eq!(p.next_segment(&opened, 2, (0, 4), 4), None);
        // Every unopened segment from `next_write` on can come first.
        let firsts: std::collections::BTreeSet<usize> = (0..400)
            .filter_map(|_| p.next_segment(&opened, 2, (0, 0), 4))
            .collect();
        let want: std::collections::BTreeSet<usize> = (3..20).filter(|&i| i != 7).collect();
        assert_eq!(firsts, want);
        assert_eq!(p.next_segment(&[true, true], 2, (0, 0), 4), None);
    }

    #[test]
    fn weighted_picks_follow_the_weights() {
        let mut p = Pace::new(5, Duration::ZERO);
        let mut count = [0usize; 3];
        for _ in 0..3000 {
            count[p.pick_weighted(&[1, 0, 2]).unwrap()] += 1;
        }
        assert_eq!(count[1], 0);
        assert!((800..1200).contains(&count[0]), "{count:?}");
        assert_eq!(p.pick_weighted(&[0, 0]), None);
        assert_eq!(p.pick_weighted(&[]), None);
    }
}
