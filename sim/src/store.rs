//! Each simulated node's store and cache, bounded, with hit counters.

use std::collections::BTreeMap;

use lichen_routing::{Block, BlockSource, Key, KeyKind, Location, Space};

#[derive(Debug, Default)]
pub(super) struct SimStore {
    pub(super) store: BTreeMap<Key, Block>,
    pub(super) cache: BTreeMap<Key, (Block, u64)>,
    pub(super) stamp: u64,
    pub(super) hits_store: u64,
    pub(super) hits_cache: u64,
}

const STORE_CAP: usize = 512;
const CACHE_CAP: usize = 256;

impl SimStore {
    pub(super) fn put(&mut self, space: Space, key: Key, block: Block, me: Location) {
        match space {
            Space::Store => {
                self.store.insert(key, block);
                if self.store.len() > STORE_CAP {
                    // Evict the key farthest from us.
                    if let Some(k) = self
                        .store
                        .keys()
                        .max_by_key(|k| (k.location().distance(me), **k))
                        .copied()
                    {
                        self.store.remove(&k);
                    }
                }
            }
            Space::Cache => {
                self.stamp += 1;
                self.cache.insert(key, (block, self.stamp));
                if self.cache.len() > CACHE_CAP {
                    if let Some(k) = self.cache.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| *k) {
                        self.cache.remove(&k);
                    }
                }
            }
        }
    }

    pub(super) fn has(&self, key: &Key) -> bool {
        self.store.contains_key(key) || self.cache.contains_key(key)
    }
}

impl BlockSource for SimStore {
    fn get(&mut self, key: &Key, _kind: KeyKind) -> Option<Block> {
        if let Some(b) = self.store.get(key) {
            self.hits_store += 1;
            return Some(b.clone());
        }
        self.stamp += 1;
        let stamp = self.stamp;
        if let Some((b, s)) = self.cache.get_mut(key) {
            *s = stamp;
            self.hits_cache += 1;
            return Some(b.clone());
        }
        None
    }
}
