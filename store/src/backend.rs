//! Storage backends: an ordered key-value map with atomic batches.
//!
//! The engine keeps every invariant; a backend only has to apply a batch
//! atomically (all or nothing, also across a crash) and in order.

use crate::StoreError;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One write: `Some(value)` inserts, `None` removes.
pub(crate) type Op = (Vec<u8>, Option<Vec<u8>>);

/// What the engine needs from the disk (or memory).
pub(crate) trait Backend: Send + Sync + 'static {
    /// A value read back; sled hands out a reference-counted buffer.
    type Value: AsRef<[u8]>;

    /// Read one key of the block tree.
    fn get(&self, key: &[u8]) -> Result<Option<Self::Value>, StoreError>;
    /// Apply writes to the block tree atomically.
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    /// Visit every entry of the block tree whose key starts with `prefix`.
    fn scan_prefix(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8]))
        -> Result<(), StoreError>;
    /// Read one key of the metadata tree.
    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Write (`Some`) or remove (`None`) one key of the metadata tree;
    /// answers whether the key existed.
    fn meta_set(&self, key: &[u8], value: Option<&[u8]>) -> Result<bool, StoreError>;
    /// Make everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Bytes the backend occupies on disk, if it has a disk.
    fn disk_bytes(&self) -> Option<u64>;
}

/// In-memory backend: two ordered maps behind a lock.
#[derive(Debug, Default)]
pub(crate) struct MemBackend {
    blocks: RwLock<BTreeMap<Vec<u8>, Arc<[u8]>>>,
    meta: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Backend for MemBackend {
    type Value = Arc<[u8]>;

    fn get(&self, key: &[u8]) -> Result<Option<Arc<[u8]>>, StoreError> {
        Ok(self.blocks.read().get(key).cloned())
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut map = self.blocks.write();
        for (k, v) in ops {
            match v {
                Some(v) => {
                    map.insert(k, Arc::from(v));
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError> {
        let map = self.blocks.read();
        for (k, v) in map.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            f(k, v);
        }
        Ok(())
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.read().get(key).cloned())
    }

    fn meta_set(&self, key: &[u8], value: Option<&[u8]>) -> Result<bool, StoreError> {
        let mut m = self.meta.write();
        Ok(match value {
            Some(v) => m.insert(key.to_vec(), v.to_vec()).is_some(),
            None => m.remove(key).is_some(),
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn disk_bytes(&self) -> Option<u64> {
        None
    }
}

/// sled backend: tree `blocks` (block and index records) and tree `meta`.
#[derive(Debug)]
pub(crate) struct SledBackend {
    pub(crate) db: sled::Db,
    blocks: sled::Tree,
    meta: sled::Tree,
}

impl SledBackend {
    pub(crate) fn new(db: sled::Db) -> Result<Self, sled::Error> {
        let blocks = db.open_tree("blocks")?;
        let meta = db.open_tree("meta")?;
        Ok(SledBackend { db, blocks, meta })
    }
}

impl Backend for SledBackend {
    type Value = sled::IVec;

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.blocks
            .get(key)
            .map_err(StoreError::sled("read a block"))
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.blocks
            .apply_batch(batch)
            .map_err(StoreError::sled("write a batch"))
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError> {
        for kv in self.blocks.scan_prefix(prefix) {
            let (k, v) = kv.map_err(StoreError::sled("scan the index"))?;
            f(&k, &v);
        }
        Ok(())
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(key)
            .map_err(StoreError::sled("read metadata"))?
            .map(|v| v.to_vec()))
    }

    fn meta_set(&self, key: &[u8], value: Option<&[u8]>) -> Result<bool, StoreError> {
        let old = match value {
            Some(v) => self.meta.insert(key, v),
            None => self.meta.remove(key),
        };
        Ok(old.map_err(StoreError::sled("write metadata"))?.is_some())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(StoreError::sled("flush to disk"))
    }

    fn disk_bytes(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }
}
