//! Store operations that skip verification, kept apart so that no caller
//! reaches them by accident (rustls's `danger` module is the model): they
//! are methods of [`UncheckedStore`], which a [`BlockStore`] hands out
//! only through [`BlockStore::unchecked`], so every call site reads
//! `store.unchecked().put_trusted(..)`.
//!
//! Never for blocks from a peer, a client or the disk: those go through
//! [`BlockStore::put`] and [`BlockStore::get`], which verify.

use lichen_crypto::{BlockKind, RoutingKey};

#[cfg(doc)]
use crate::BlockStore;
use crate::{first_found, Found, Origin, PutOutcome, Space, StoreError};

/// The unverified operations of a [`BlockStore`]; see the [module
/// docs](self).
pub trait UncheckedStore {
    /// [`BlockStore::put`] for a block this process has just encoded
    /// itself, whose routing key it computed from these very bytes: a CHK
    /// block is stored without hashing it again (SSK blocks are still
    /// verified). Saves one SHA-256 pass per block on local inserts.
    ///
    /// Also for a block this process has just verified against its key
    /// (the routing core verifies every block a peer sends before it asks
    /// for it to be stored). Never pass a block straight from a peer, a
    /// client or the disk: use [`BlockStore::put`]. A wrong block stored
    /// this way is still never served (every read re-verifies and deletes
    /// a bad block), but it takes the space of a good one until then.
    ///
    /// # Errors
    /// [`StoreError::InvalidBlock`] for a block of the wrong length (or an
    /// SSK block that does not verify); backend errors.
    fn put_trusted(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Result<PutOutcome, StoreError>;

    /// [`UncheckedStore::put_trusted`] for many CHK blocks at once (e.g. a
    /// splitfile segment), with the same contract: only blocks this process
    /// has just encoded. Returns one outcome per block, in order. Each block
    /// is still atomic with its evictions, but the blocks share backend
    /// batches (sled: two log writes per batch, not per block) and are
    /// sealed on the rayon pool.
    ///
    /// # Errors
    /// [`StoreError::InvalidBlock`] for a block of the wrong length (nothing
    /// is stored); backend errors (blocks of earlier batches may be stored).
    fn put_trusted_chk_batch(
        &self,
        space: Space,
        blocks: &[(RoutingKey, Vec<u8>)],
    ) -> Result<Vec<PutOutcome>, StoreError> {
        blocks
            .iter()
            .map(|(k, b)| self.put_trusted(space, BlockKind::Chk, k, b))
            .collect()
    }

    /// As [`BlockStore::get`], without re-hashing the block against its
    /// key: for a caller that authenticates it another way (a CHK opened with
    /// its AEAD crypto key, which fails on any changed byte). The block is
    /// the one stored under the salted index (encrypted at rest under a
    /// key only this node has), unless the disk changed it.
    ///
    /// # Errors
    /// Backend errors only.
    fn read(
        &self,
        origin: Origin,
        kind: BlockKind,
        key: &RoutingKey,
    ) -> Result<Option<Found>, StoreError> {
        first_found(origin, |space| {
            if origin.touches(space) {
                self.read_in(space, kind, key)
            } else {
                self.peek_read_in(space, kind, key)
            }
        })
    }

    /// [`BlockStore::get_in`] without re-hashing (see
    /// [`UncheckedStore::read`]).
    ///
    /// # Errors
    /// Backend errors only.
    fn read_in(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// [`UncheckedStore::read_in`] without changing the LRU order (see
    /// [`BlockStore::get`]).
    ///
    /// # Errors
    /// Backend errors only.
    fn peek_read_in(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
    ) -> Result<Option<Vec<u8>>, StoreError>;
}
