//! A map whose entries are kept at least one age and at most two: the
//! simulator's ground-truth tables for requests in flight, which would
//! otherwise keep an entry for every hop of every request of the run
//! (millions at 100,000 nodes).

use std::collections::HashMap;
use std::hash::Hash;

/// Entries inserted in the current age or the one before; [`Aging::age`]
/// forgets the one before. Kept ages must outlast anything that looks an
/// entry up (the simulator's: a request's life, a few minutes at most).
#[derive(Debug)]
pub(crate) struct Aging<K, V> {
    now: HashMap<K, V>,
    before: HashMap<K, V>,
}

impl<K: Eq + Hash, V> Default for Aging<K, V> {
    fn default() -> Self {
        Aging {
            now: HashMap::new(),
            before: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash, V> Aging<K, V> {
    pub(crate) fn insert(&mut self, k: K, v: V) {
        self.now.insert(k, v);
    }

    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.now.get(k).or_else(|| self.before.get(k))
    }

    pub(crate) fn contains_key(&self, k: &K) -> bool {
        self.get(k).is_some()
    }

    /// A new age begins: the entries of the one before are forgotten.
    pub(crate) fn age(&mut self) {
        self.before = std::mem::take(&mut self.now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_one_to_two_ages_and_the_newest_wins() {
        let mut m = Aging::default();
        m.insert(1, 'a');
        m.age();
        assert_eq!(m.get(&1), Some(&'a'), "kept through one age");
        m.insert(1, 'b');
        m.insert(2, 'c');
        assert_eq!(m.get(&1), Some(&'b'), "the newer entry");
        m.age();
        assert_eq!(m.get(&1), Some(&'b'));
        assert!(m.contains_key(&2));
        m.age();
        assert_eq!(m.get(&1), None, "gone after two");
        assert!(!m.contains_key(&2));
    }
}
