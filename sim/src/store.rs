//! Each simulated node's store and cache, bounded, with hit counters.
//!
//! A block is kept once, on the simulator's [`Shelf`], however many nodes
//! hold it; a node's store and cache hold shelf numbers (4 and 12 bytes an
//! entry, in sorted vectors). Each node keeping its own key and block in a
//! `BTreeMap` took ~2.5 KiB a node at 30,000 nodes, a tenth of the run's
//! memory.

use std::collections::HashMap;

use lichen_routing::{Block, BlockSource, Key, KeyKind, Location, Space};

/// Every block some node has held, once, by number.
#[derive(Debug, Default)]
pub(super) struct Shelf {
    blocks: Vec<(Key, Block)>,
    index: HashMap<Key, u32>,
}

impl Shelf {
    /// The number of `key`'s block, shelving it if it is new.
    fn shelve(&mut self, key: Key, block: Block) -> u32 {
        if let Some(&n) = self.index.get(&key) {
            return n;
        }
        let n = u32::try_from(self.blocks.len()).expect("fewer than 2^32 blocks");
        self.blocks.push((key, block));
        self.index.insert(key, n);
        n
    }

    /// The number of `key`'s block, if some node ever held it.
    pub(super) fn find(&self, key: &Key) -> Option<u32> {
        self.index.get(key).copied()
    }

    fn key(&self, n: u32) -> &Key {
        &self.blocks[n as usize].0
    }

    fn block(&self, n: u32) -> Block {
        self.blocks[n as usize].1.clone()
    }
}

#[derive(Debug, Default)]
pub(super) struct SimStore {
    /// The shelf numbers of the blocks in the store, sorted.
    store: Vec<u32>,
    /// The shelf numbers of the cached blocks, sorted, each with the
    /// stamp of its last use (the least recently used goes first).
    cache: Vec<(u32, u64)>,
    stamp: u64,
    pub(super) hits_store: u64,
    pub(super) hits_cache: u64,
}

const STORE_CAP: usize = 512;
const CACHE_CAP: usize = 256;

impl SimStore {
    pub(super) fn put(
        &mut self,
        shelf: &mut Shelf,
        space: Space,
        key: Key,
        block: Block,
        me: Location,
    ) {
        let n = shelf.shelve(key, block);
        match space {
            Space::Store => {
                if let Err(i) = self.store.binary_search(&n) {
                    self.store.insert(i, n);
                }
                if self.store.len() > STORE_CAP {
                    // Evict the key farthest from us.
                    if let Some(i) = (0..self.store.len()).max_by_key(|&i| {
                        let k = shelf.key(self.store[i]);
                        (k.location().distance(me), *k)
                    }) {
                        self.store.remove(i);
                    }
                }
            }
            Space::Cache => {
                self.stamp += 1;
                match self.cache.binary_search_by_key(&n, |e| e.0) {
                    Ok(i) => self.cache[i].1 = self.stamp,
                    Err(i) => self.cache.insert(i, (n, self.stamp)),
                }
                if self.cache.len() > CACHE_CAP {
                    if let Some(i) = (0..self.cache.len()).min_by_key(|&i| self.cache[i].1) {
                        self.cache.remove(i);
                    }
                }
            }
        }
    }

    pub(super) fn has(&self, shelf: &Shelf, key: &Key) -> bool {
        shelf.find(key).is_some_and(|n| {
            self.store.binary_search(&n).is_ok()
                || self.cache.binary_search_by_key(&n, |e| e.0).is_ok()
        })
    }

    /// The shelf numbers of the blocks in the store, then of those in the
    /// cache.
    pub(super) fn held(&self) -> (&[u32], impl Iterator<Item = u32> + '_) {
        (&self.store, self.cache.iter().map(|e| e.0))
    }

    fn get(&mut self, shelf: &Shelf, key: &Key) -> Option<Block> {
        let n = shelf.find(key);
        if let Some(n) = n.filter(|n| self.store.binary_search(n).is_ok()) {
            self.hits_store += 1;
            return Some(shelf.block(n));
        }
        self.stamp += 1;
        let i = self.cache.binary_search_by_key(&n?, |e| e.0).ok()?;
        self.cache[i].1 = self.stamp;
        self.hits_cache += 1;
        Some(shelf.block(self.cache[i].0))
    }
}

/// A node's store and the shelf, as the node's policy reads them.
pub(super) struct Shelved<'a> {
    pub(super) store: &'a mut SimStore,
    pub(super) shelf: &'a Shelf,
}

impl BlockSource for Shelved<'_> {
    fn get(&mut self, key: &Key, _kind: KeyKind) -> Option<Block> {
        self.store.get(self.shelf, key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;

    /// Each node holding its own keys and blocks in maps, as before the
    /// shelf: the model the shelf's store must match.
    #[derive(Default)]
    struct Model {
        store: BTreeMap<Key, Block>,
        cache: BTreeMap<Key, (Block, u64)>,
        stamp: u64,
        hits: (u64, u64),
    }

    impl Model {
        fn put(&mut self, space: Space, key: Key, block: Block, me: Location) {
            match space {
                Space::Store => {
                    self.store.insert(key, block);
                    if self.store.len() > STORE_CAP {
                        let far = *self
                            .store
                            .keys()
                            .max_by_key(|k| (k.location().distance(me), **k))
                            .expect("a full store");
                        self.store.remove(&far);
                    }
                }
                Space::Cache => {
                    self.stamp += 1;
                    self.cache.insert(key, (block, self.stamp));
                    if self.cache.len() > CACHE_CAP {
                        let old = *self
                            .cache
                            .iter()
                            .min_by_key(|(_, v)| v.1)
                            .expect("a full cache")
                            .0;
                        self.cache.remove(&old);
                    }
                }
            }
        }

        fn get(&mut self, key: &Key) -> Option<Block> {
            if let Some(b) = self.store.get(key) {
                self.hits.0 += 1;
                return Some(b.clone());
            }
            self.stamp += 1;
            let (b, s) = self.cache.get_mut(key)?;
            *s = self.stamp;
            self.hits.1 += 1;
            Some(b.clone())
        }
    }

    fn key(i: u16) -> (Key, Block) {
        let block = i.to_le_bytes().to_vec();
        let mut k = [0u8; 32];
        for (j, b) in k.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8) ^ (i >> 8) as u8;
        }
        (Key(k), block)
    }

    proptest! {
        /// Puts into store and cache past their limits, and reads, give
        /// the same blocks, evictions and hit counts as per-node maps.
        #[test]
        fn matches_per_node_maps(
            ops in proptest::collection::vec((0u8..3, 0u16..900), 1..3000),
            me in any::<u64>(),
        ) {
            let me = Location(me);
            let mut shelf = Shelf::default();
            let (mut s, mut m) = (SimStore::default(), Model::default());
            for (op, i) in ops {
                let (k, b) = key(i);
                match op {
                    0 => {
                        s.put(&mut shelf, Space::Store, k, b.clone(), me);
                        m.put(Space::Store, k, b, me);
                    }
                    1 => {
                        s.put(&mut shelf, Space::Cache, k, b.clone(), me);
                        m.put(Space::Cache, k, b, me);
                    }
                    _ => {
                        let got = Shelved { store: &mut s, shelf: &shelf }.get(&k, KeyKind::Chk);
                        prop_assert_eq!(got, m.get(&k));
                    }
                }
                prop_assert_eq!(s.has(&shelf, &k), m.store.contains_key(&k) || m.cache.contains_key(&k));
            }
            prop_assert_eq!((s.hits_store, s.hits_cache), m.hits);
            prop_assert_eq!(s.store.len(), m.store.len());
            prop_assert_eq!(s.cache.len(), m.cache.len());
        }
    }
}
