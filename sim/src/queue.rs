//! The event queue: events in (virtual ms, push order), as a binary heap
//! would give them, at a cost that does not grow with the queue.
//!
//! Most events are due within a few seconds of being pushed (a message's
//! latency, an accept timeout), so they go into a ring of one FIFO per
//! millisecond: a push is an append, a pop takes from the front of the
//! current millisecond, and a FIFO already holds its millisecond's events
//! in push order. Time is cut into epochs of [`WINDOW`] ms; the ring holds
//! the current epoch (from the current instant on) and the next one.
//! Events due later wait in one list per epoch, in push order, and move
//! into the ring (sorted by time, a stable sort keeping push order) when
//! the epoch before theirs begins — before anything else can be pushed
//! for their milliseconds. Events pushed for an instant already passed
//! (should one ever be) wait in a small binary heap and come first. The
//! order is therefore exactly a heap's: (time, then push order), and no
//! event is sifted through a heap the size of the whole workload (at
//! 100,000 nodes those sifts' cache misses were a tenth of the run).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

/// How many milliseconds an epoch lasts (a power of two); the ring covers
/// two.
const WINDOW: u64 = 4096;
/// Room a drained bucket keeps (more is given back).
const KEEP: usize = 16;

/// An event queue ordered by time, then by push order.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    /// The millisecond being drained; the ring holds `cursor..` up to the
    /// end of the epoch after `cursor`'s, bucket `at % (2 * WINDOW)`.
    cursor: u64,
    ring: Vec<VecDeque<T>>,
    /// Events in the ring.
    in_ring: usize,
    /// Events beyond the ring, by epoch, in push order.
    far: BTreeMap<u64, Vec<(u64, T)>>,
    /// Events pushed for an instant before `cursor`, by (time, push order).
    late: BinaryHeap<Late<T>>,
    seq: u64,
}

#[derive(Debug)]
struct Late<T> {
    at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Late<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Late<T> {}
impl<T> PartialOrd for Late<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Late<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        Reverse((self.at, self.seq)).cmp(&Reverse((o.at, o.seq)))
    }
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Queue {
            cursor: 0,
            ring: (0..2 * WINDOW).map(|_| VecDeque::new()).collect(),
            in_ring: 0,
            far: BTreeMap::new(),
            late: BinaryHeap::new(),
            seq: 0,
        }
    }

    fn bucket(at: u64) -> usize {
        // 2 * WINDOW is a power of two well below usize::MAX.
        #[allow(clippy::cast_possible_truncation)]
        let b = (at % (2 * WINDOW)) as usize;
        b
    }

    /// The first instant the ring does not cover.
    fn horizon(&self) -> u64 {
        (self.cursor / WINDOW + 2) * WINDOW
    }

    /// Queue `item` for virtual instant `at`.
    pub(crate) fn push(&mut self, at: u64, item: T) {
        self.seq += 1;
        if at < self.cursor {
            self.late.push(Late {
                at,
                seq: self.seq,
                item,
            });
        } else if at < self.horizon() {
            self.ring[Self::bucket(at)].push_back(item);
            self.in_ring += 1;
        } else {
            self.far.entry(at / WINDOW).or_default().push((at, item));
        }
    }

    /// The instant of the next event (moving the cursor up to it).
    pub(crate) fn next_at(&mut self) -> Option<u64> {
        if let Some(l) = self.late.peek() {
            return Some(l.at);
        }
        loop {
            if !self.ring[Self::bucket(self.cursor)].is_empty() {
                return Some(self.cursor);
            }
            let to = if self.in_ring == 0 {
                // Nothing in the ring: jump to the next epoch holding
                // anything.
                let (&epoch, _) = self.far.first_key_value()?;
                (epoch * WINDOW).max(self.cursor + 1)
            } else {
                self.cursor + 1
            };
            self.move_to(to);
        }
    }

    /// Move the cursor to `to` and the epochs the ring now reaches into
    /// it (each sorted by time; the sort is stable, so each millisecond's
    /// FIFO stays in push order).
    fn move_to(&mut self, to: u64) {
        self.cursor = to;
        let last = to / WINDOW + 1;
        while let Some(entry) = self.far.first_entry() {
            if *entry.key() > last {
                break;
            }
            let mut events = entry.remove();
            events.sort_by_key(|&(at, _)| at);
            self.in_ring += events.len();
            for (at, item) in events {
                self.ring[Self::bucket(at)].push_back(item);
            }
        }
    }

    /// The next event and its instant.
    pub(crate) fn pop(&mut self) -> Option<(u64, T)> {
        let at = self.next_at()?;
        if at < self.cursor {
            return self.late.pop().map(|l| (l.at, l.item));
        }
        let bucket = &mut self.ring[Self::bucket(at)];
        let item = bucket.pop_front()?;
        if bucket.is_empty() && bucket.capacity() > KEEP {
            // A burst's room is not kept: each bucket would keep the
            // largest burst it ever held.
            *bucket = VecDeque::new();
        }
        self.in_ring -= 1;
        Some((at, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any mix of pushes (near, far, at and before the current
        /// instant) and pops gives the events in the order of a binary
        /// heap of (time, push order).
        #[test]
        fn pops_in_heap_order(ops in proptest::collection::vec((any::<bool>(), 0u64..4, 0u64..20_000), 1..600)) {
            let mut q = Queue::new();
            let mut heap = BinaryHeap::new();
            let mut seq = 0u64;
            let mut now = 0u64;
            for (pop, kind, dt) in ops {
                if pop {
                    let got = q.pop();
                    let want = heap.pop().map(|Reverse((at, s))| (at, s));
                    prop_assert_eq!(got, want);
                    if let Some((at, _)) = got {
                        now = at;
                    }
                } else {
                    let at = match kind {
                        0 => now + dt % 200,
                        1 => now + dt,
                        // Far beyond the ring: an epoch boundary or many.
                        2 => now + dt * 97,
                        _ => now.saturating_sub(dt % 50),
                    };
                    seq += 1;
                    q.push(at, seq);
                    heap.push(Reverse((at, seq)));
                }
            }
            while let Some(want) = heap.pop() {
                let Reverse((at, s)) = want;
                prop_assert_eq!(q.pop(), Some((at, s)));
            }
            prop_assert_eq!(q.pop(), None);
        }
    }

    #[test]
    fn next_at_does_not_consume() {
        let mut q = Queue::new();
        q.push(10_000, 'b');
        q.push(5, 'a');
        assert_eq!(q.next_at(), Some(5));
        assert_eq!(q.next_at(), Some(5));
        assert_eq!(q.pop(), Some((5, 'a')));
        assert_eq!(q.next_at(), Some(10_000));
        // Pushed behind the window after it moved: still comes first.
        q.push(7, 'c');
        assert_eq!(q.pop(), Some((7, 'c')));
        assert_eq!(q.pop(), Some((10_000, 'b')));
        assert_eq!(q.pop(), None);
    }
}
