//! The event queue: events in (virtual ms, push order), as a binary heap
//! would give them, at a cost that does not grow with the queue.
//!
//! Most events are due within a few seconds of being pushed (a message's
//! latency, an accept timeout), so they go into a ring of one FIFO per
//! millisecond covering [`WINDOW`] ms from the current instant: a push is
//! an append, a pop takes from the front of the current millisecond, and
//! a FIFO already holds its millisecond's events in push order. Events due
//! later (and, should one ever be pushed, events due before the current
//! instant) wait in a binary heap ordered by (time, push order) and move
//! into the ring as its window reaches them, before anything else can be
//! pushed for their millisecond. The order is therefore exactly the
//! heap's: (time, then push order).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// How many milliseconds the ring covers (a power of two).
const WINDOW: u64 = 4096;
/// Room a drained bucket keeps (more is given back).
const KEEP: usize = 16;

/// An event queue ordered by time, then by push order.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    /// The millisecond being drained; the ring holds `cursor..cursor +
    /// WINDOW`, bucket `at % WINDOW`.
    cursor: u64,
    ring: Vec<VecDeque<T>>,
    /// Events in the ring.
    in_ring: usize,
    /// Events outside the window, by (time, push order).
    far: BinaryHeap<Far<T>>,
    seq: u64,
}

#[derive(Debug)]
struct Far<T> {
    at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Far<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Far<T> {}
impl<T> PartialOrd for Far<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Far<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        Reverse((self.at, self.seq)).cmp(&Reverse((o.at, o.seq)))
    }
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Queue {
            cursor: 0,
            ring: (0..WINDOW).map(|_| VecDeque::new()).collect(),
            in_ring: 0,
            far: BinaryHeap::new(),
            seq: 0,
        }
    }

    fn bucket(at: u64) -> usize {
        // WINDOW is a power of two well below usize::MAX.
        #[allow(clippy::cast_possible_truncation)]
        let b = (at % WINDOW) as usize;
        b
    }

    /// Queue `item` for virtual instant `at`.
    pub(crate) fn push(&mut self, at: u64, item: T) {
        self.seq += 1;
        if at >= self.cursor && at - self.cursor < WINDOW {
            self.ring[Self::bucket(at)].push_back(item);
            self.in_ring += 1;
        } else {
            self.far.push(Far {
                at,
                seq: self.seq,
                item,
            });
        }
    }

    /// The instant of the next event (moving the window up to it).
    pub(crate) fn next_at(&mut self) -> Option<u64> {
        loop {
            if let Some(f) = self.far.peek() {
                if f.at < self.cursor {
                    return Some(f.at);
                }
            }
            if !self.ring[Self::bucket(self.cursor)].is_empty() {
                return Some(self.cursor);
            }
            if self.in_ring == 0 {
                // Nothing within the window: jump to the next far event.
                self.cursor = self.far.peek()?.at;
            } else {
                self.cursor += 1;
            }
            self.take_in();
        }
    }

    /// Move the far events the window now reaches into the ring (in heap
    /// order, so each millisecond's FIFO stays in push order).
    fn take_in(&mut self) {
        while let Some(f) = self.far.peek() {
            if f.at - self.cursor >= WINDOW {
                break;
            }
            let Some(f) = self.far.pop() else { break };
            self.ring[Self::bucket(f.at)].push_back(f.item);
            self.in_ring += 1;
        }
    }

    /// The next event and its instant.
    pub(crate) fn pop(&mut self) -> Option<(u64, T)> {
        let at = self.next_at()?;
        if at < self.cursor {
            return self.far.pop().map(|f| (f.at, f.item));
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
        fn pops_in_heap_order(ops in proptest::collection::vec((any::<bool>(), 0u64..3, 0u64..20_000), 1..600)) {
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
