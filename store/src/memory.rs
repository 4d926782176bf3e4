//! The in-memory store.

use crate::backend::MemBackend;
use crate::engine::{delegate_block_store, Engine};
use crate::StoreConfig;
use std::path::PathBuf;

/// A [`crate::BlockStore`] in memory: the same engine (budgets, eviction,
/// salting, verification) as [`crate::SledStore`] over an ordered map.
/// Nothing survives a drop. For tests, simulations and benchmarks.
#[derive(Debug)]
pub struct MemoryStore {
    engine: Engine<MemBackend>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new(config: &StoreConfig) -> Self {
        match Engine::open(MemBackend::default(), config, PathBuf::new()) {
            Ok((engine, _)) => MemoryStore { engine },
            // An empty in-memory backend cannot fail to open.
            Err(e) => unreachable!("opening an empty memory store failed: {e}"),
        }
    }

    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Engine<MemBackend> {
        &self.engine
    }
}

delegate_block_store!(MemoryStore);
