//! The two traits through which this crate reaches blocks, and two small
//! implementations (an in-memory map and a sink that stores nothing).
//!
//! The client never opens a socket or a file: the node plugs its store or
//! the network in behind [`BlockSource`] / [`BlockSink`]; tests and
//! benchmarks plug in [`MemoryBlocks`]. Both traits return `Send` futures,
//! so generic callers can run on a multi-threaded tokio runtime.

use lichen_crypto::{verify_block, BlockKind, RoutingKey};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a block could not be fetched. Maps onto FCP fetch codes through
/// [`crate::FetchError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The network (or store) does not have the block.
    #[error("data not found")]
    NotFound,
    /// The request could not be routed.
    #[error("route not found")]
    RouteNotFound,
    /// The key failed recently and the request was not sent again.
    #[error("recently failed")]
    RecentlyFailed,
    /// Downstream overload.
    #[error("rejected: overload")]
    Overload,
    /// The request was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// Anything else (I/O error of a local store, ...).
    #[error("block source failed: {0}")]
    Other(String),
}

/// Why a block could not be stored / inserted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A different SSK block already exists under this routing key
    /// (write-once; the first one stays).
    #[error("collision: a different block exists under this key")]
    Collision,
    /// The insert could not be routed.
    #[error("route not found")]
    RouteNotFound,
    /// Downstream overload.
    #[error("rejected: overload")]
    Overload,
    /// The insert was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// Anything else (disk full, ...).
    #[error("block sink failed: {0}")]
    Other(String),
}

/// Where fetches get blocks from: the node's store and the network.
///
/// [`BlockSource::fetch`] returns verified blocks; [`BlockSource::fetch_local`]
/// may skip re-hashing (the client's AEAD open catches a changed byte).
pub trait BlockSource: Sync {
    /// Fetch the block of `kind` stored under `key`, verified against
    /// `key` (the node's store and routing core both verify; the client
    /// does not hash it again).
    fn fetch(
        &self,
        kind: BlockKind,
        key: RoutingKey,
    ) -> impl Future<Output = Result<Vec<u8>, SourceError>> + Send;

    /// The CHK block under `key` if this source holds it locally, without
    /// waiting on the network. `None`: not held locally (or this source
    /// cannot tell without waiting); the client then calls
    /// [`BlockSource::fetch`].
    ///
    /// The client calls this from its worker threads (rayon), several at
    /// once, to read and decrypt a segment's blocks in parallel; it may wait
    /// on local disk I/O but never on the network. The client does not
    /// re-hash what it returns: it opens the block with its AEAD crypto
    /// key, which fails on any changed byte, and a block that does not
    /// open counts as missing (then [`BlockSource::fetch`], which must
    /// verify, is asked). So a source may skip re-hashing here. The
    /// default holds nothing.
    fn fetch_local(&self, kind: BlockKind, key: &RoutingKey) -> Option<Vec<u8>> {
        let _ = (kind, key);
        None
    }

    /// Whether [`BlockSource::fetch_local`] would likely find the block
    /// (a cheap index lookup: no read, no verification). Only a hint: the
    /// fetch still copes with a block that has gone. The default holds
    /// nothing.
    fn has_local(&self, kind: BlockKind, key: &RoutingKey) -> bool {
        let _ = (kind, key);
        false
    }

    /// Wait `delay` (the random pause the client takes before each block
    /// request that goes to the network, so that no request starts the
    /// moment a reply frees its slot). The client draws the delays; the
    /// source, which owns the clock, waits. The default does not wait
    /// (in-memory sources, tests, benchmarks).
    fn pause(&self, delay: Duration) -> impl Future<Output = ()> + Send {
        let _ = delay;
        std::future::ready(())
    }
}

/// Where inserts put blocks: the node's store and the network.
pub trait BlockSink: Sync {
    /// Store / insert `block` of `kind` under `key`. The client only hands
    /// over blocks it has just encoded, so they always verify.
    fn put(
        &self,
        kind: BlockKind,
        key: RoutingKey,
        block: Vec<u8>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Store `block` (just encoded by the client, so it verifies) without
    /// waiting on the network, if that completes the put for this sink:
    /// e.g. a node with no peers stores it in its local cache and is done.
    /// `Some(result)`: the put is done (or failed); `None`: nothing was
    /// done and the client calls [`BlockSink::put`] with the block.
    ///
    /// The client calls this from its worker threads (rayon), several at
    /// once, so that storing (and a store's sealing at rest) runs on every
    /// core; it may wait on local disk I/O but never on the network. The
    /// default does nothing.
    fn put_local(
        &self,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Option<Result<(), SinkError>> {
        let _ = (kind, key, block);
        None
    }

    /// [`BlockSink::put_local`] for a whole segment's blocks at once (a
    /// store can write them in one batch). `Some(result)`: every block is
    /// done (or the batch failed); `None`: nothing was done and the client
    /// falls back to `put_local` / `put` per block. The default does
    /// nothing.
    fn put_local_batch(
        &self,
        kind: BlockKind,
        blocks: &[(RoutingKey, Vec<u8>)],
    ) -> Option<Result<(), SinkError>> {
        let _ = (kind, blocks);
        None
    }

    /// Wait `delay` before a [`BlockSink::put`] (as
    /// [`BlockSource::pause`]). The default does not wait.
    fn pause(&self, delay: Duration) -> impl Future<Output = ()> + Send {
        let _ = delay;
        std::future::ready(())
    }
}

impl<T: BlockSource + Send + ?Sized> BlockSource for Arc<T> {
    fn fetch(
        &self,
        kind: BlockKind,
        key: RoutingKey,
    ) -> impl Future<Output = Result<Vec<u8>, SourceError>> + Send {
        (**self).fetch(kind, key)
    }

    fn fetch_local(&self, kind: BlockKind, key: &RoutingKey) -> Option<Vec<u8>> {
        (**self).fetch_local(kind, key)
    }

    fn has_local(&self, kind: BlockKind, key: &RoutingKey) -> bool {
        (**self).has_local(kind, key)
    }

    fn pause(&self, delay: Duration) -> impl Future<Output = ()> + Send {
        BlockSource::pause(&**self, delay)
    }
}

impl<T: BlockSink + Send + ?Sized> BlockSink for Arc<T> {
    fn put(
        &self,
        kind: BlockKind,
        key: RoutingKey,
        block: Vec<u8>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).put(kind, key, block)
    }

    fn put_local(
        &self,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Option<Result<(), SinkError>> {
        (**self).put_local(kind, key, block)
    }

    fn put_local_batch(
        &self,
        kind: BlockKind,
        blocks: &[(RoutingKey, Vec<u8>)],
    ) -> Option<Result<(), SinkError>> {
        (**self).put_local_batch(kind, blocks)
    }

    fn pause(&self, delay: Duration) -> impl Future<Output = ()> + Send {
        BlockSink::pause(&**self, delay)
    }
}

/// A sink that stores nothing: inserting into it only computes the URI
/// (FCP `GetCHKOnly`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl BlockSink for NullSink {
    async fn put(&self, _: BlockKind, _: RoutingKey, _: Vec<u8>) -> Result<(), SinkError> {
        Ok(())
    }

    fn put_local(&self, _: BlockKind, _: &RoutingKey, _: &[u8]) -> Option<Result<(), SinkError>> {
        Some(Ok(()))
    }
}

type BlockMap = HashMap<(BlockKind, RoutingKey), Arc<[u8]>>;

/// An in-memory block map that is both a source and a sink: for tests,
/// benchmarks and `GetCHKOnly`-style dry runs that must be fetched back.
///
/// SSK blocks are write-once: a different block under an existing SSK key
/// is a [`SinkError::Collision`]. Blocks are verified on `put`.
#[derive(Debug, Default)]
pub struct MemoryBlocks {
    map: Mutex<BlockMap>,
}

impl MemoryBlocks {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of blocks held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if no block is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove a block (tests: simulate a block lost by the network).
    pub fn remove(&self, kind: BlockKind, key: &RoutingKey) -> bool {
        self.lock().remove(&(kind, *key)).is_some()
    }

    /// Replace a block's bytes without any check (tests: a node serving
    /// garbage).
    pub fn corrupt(&self, kind: BlockKind, key: &RoutingKey, bytes: Vec<u8>) {
        self.lock().insert((kind, *key), bytes.into());
    }

    /// All keys held.
    #[must_use]
    pub fn keys(&self) -> Vec<(BlockKind, RoutingKey)> {
        let mut v: Vec<_> = self.lock().keys().copied().collect();
        v.sort();
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BlockMap> {
        // A poisoned map still holds valid blocks.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl BlockSource for MemoryBlocks {
    /// Verified on read, as every source's `fetch` must be (a test may
    /// have [`MemoryBlocks::corrupt`]ed it): a block that does not verify
    /// is not found.
    async fn fetch(&self, kind: BlockKind, key: RoutingKey) -> Result<Vec<u8>, SourceError> {
        let block = self
            .lock()
            .get(&(kind, key))
            .map(|b| b.to_vec())
            .ok_or(SourceError::NotFound)?;
        verify_block(kind, &key, &block).map_err(|_| SourceError::NotFound)?;
        Ok(block)
    }

    /// Verified on read (a test may have [`MemoryBlocks::corrupt`]ed it).
    fn fetch_local(&self, kind: BlockKind, key: &RoutingKey) -> Option<Vec<u8>> {
        let block = self.lock().get(&(kind, *key))?.to_vec();
        verify_block(kind, key, &block).ok()?;
        Some(block)
    }

    fn has_local(&self, kind: BlockKind, key: &RoutingKey) -> bool {
        self.lock().contains_key(&(kind, *key))
    }
}

impl MemoryBlocks {
    fn store(&self, kind: BlockKind, key: RoutingKey, block: &[u8]) -> Result<(), SinkError> {
        verify_block(kind, &key, block).map_err(|e| SinkError::Other(e.to_string()))?;
        let mut map = self.lock();
        match map.get(&(kind, key)) {
            Some(old) if kind == BlockKind::Ssk && **old != *block => Err(SinkError::Collision),
            Some(_) => Ok(()),
            None => {
                map.insert((kind, key), block.into());
                Ok(())
            }
        }
    }
}

impl BlockSink for MemoryBlocks {
    async fn put(&self, kind: BlockKind, key: RoutingKey, block: Vec<u8>) -> Result<(), SinkError> {
        self.store(kind, key, &block)
    }

    fn put_local(
        &self,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Option<Result<(), SinkError>> {
        Some(self.store(kind, *key, block))
    }
}
