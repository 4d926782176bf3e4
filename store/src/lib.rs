#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub)]

mod backend;
mod engine;
mod error;
mod keys;
mod memory;
mod sled_store;
pub mod unchecked;

pub use error::StoreError;
pub use keys::{circular_distance, StoreSecret};

pub use memory::MemoryStore;
pub use sled_store::{OpenOutcome, OpenReport, SledStore};
use unchecked::UncheckedStore;

use lichen_crypto::{BlockKind, RoutingKey};

/// The separate areas of the store. A block may be held in several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Long-term store: blocks this node is responsible for (it is closer to
    /// their key than its peers). Evicts the keys farthest from the node's
    /// location first.
    Store,
    /// Shared cache: blocks that passed through on a request or insert
    /// path. Evicts the least recently used first.
    Cache,
    /// Private client cache: only blocks this node's own user requested or
    /// inserted. Never searched for a remote request. Least recently used
    /// first.
    Client,
}

impl Space {
    /// All spaces, in the order [`StoreStats`] lists them.
    pub const ALL: [Space; 3] = [Space::Store, Space::Cache, Space::Client];

    /// One-byte tag used in disk keys.
    #[must_use]
    pub const fn tag(self) -> u8 {
        match self {
            Space::Store => 1,
            Space::Cache => 2,
            Space::Client => 3,
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            Space::Store => 0,
            Space::Cache => 1,
            Space::Client => 2,
        }
    }

    /// Whether eviction is least-recently-used (else: farthest key first).
    #[must_use]
    pub const fn is_lru(self) -> bool {
        !matches!(self, Space::Store)
    }
}

/// Who is asking: decides which spaces a lookup may see.
///
/// A remote peer must never learn what the local user fetched, so
/// [`Origin::Remote`] lookups and SSK collision checks do not see
/// [`Space::Client`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// This node's own user (FCP, gateway): searches Client, Store, Cache.
    Local,
    /// A request routed from a peer: searches Store, Cache.
    Remote,
}

impl Origin {
    /// The spaces visible to this origin, in search order.
    #[must_use]
    pub const fn spaces(self) -> &'static [Space] {
        match self {
            Origin::Local => &[Space::Client, Space::Store, Space::Cache],
            Origin::Remote => &[Space::Store, Space::Cache],
        }
    }

    /// Whether a read by this origin counts as a use of a block in `space`
    /// (LRU order): a peer's reads do, the node's own only in its private
    /// client cache.
    #[must_use]
    pub const fn touches(self, space: Space) -> bool {
        matches!(self, Origin::Remote) || matches!(space, Space::Client)
    }
}

/// What `put` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PutOutcome {
    /// The block is now stored in the space (older blocks may have been
    /// evicted to make room).
    Stored,
    /// The same block was already in the space (for an LRU space this
    /// counts as a use).
    AlreadyPresent,
    /// SSK only: a *different* valid block is already stored under this
    /// key in a space the put could see. First writer wins; nothing changed.
    Collision,
    /// The block was not stored: it is larger than the space's budget, or
    /// (long-term store) the store is full of keys closer to the node than
    /// this one.
    NoRoom,
}

/// A block found by [`BlockStore::get`], verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The space it was found in.
    pub space: Space,
    /// The block, verified against its routing key.
    pub block: Vec<u8>,
}

/// Byte budgets, one per space. A budget of 0 disables the space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Long-term store budget in bytes.
    pub store: u64,
    /// Shared cache budget in bytes.
    pub cache: u64,
    /// Private client cache budget in bytes.
    pub client: u64,
}

impl Budgets {
    /// The budget of `space`.
    #[must_use]
    pub const fn of(&self, space: Space) -> u64 {
        match space {
            Space::Store => self.store,
            Space::Cache => self.cache,
            Space::Client => self.client,
        }
    }
}

/// Everything a store needs at open.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Per-space byte budgets (logical bytes: block lengths).
    pub budgets: Budgets,
    /// The node's location on the key circle (drives long-term eviction).
    pub location: u64,
    /// The per-node secret salting index keys and encrypting blocks at rest.
    pub secret: StoreSecret,
    /// sled page-cache size in bytes (sled only; default 64 MiB).
    pub sled_cache_bytes: u64,
}

impl StoreConfig {
    /// A configuration with the default sled cache size.
    #[must_use]
    pub fn new(budgets: Budgets, location: u64, secret: StoreSecret) -> Self {
        StoreConfig {
            budgets,
            location,
            secret,
            sled_cache_bytes: 64 << 20,
        }
    }
}

/// Usage of one space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceStats {
    /// Logical bytes stored (sum of block lengths).
    pub bytes: u64,
    /// Number of blocks stored.
    pub blocks: u64,
    /// The space's budget.
    pub budget: u64,
    /// Blocks evicted to make room since open.
    pub evicted: u64,
}

/// Usage of the whole store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Per space, in [`Space::ALL`] order.
    pub spaces: [SpaceStats; 3],
    /// Blocks that failed verification on read and were deleted, since open.
    pub corrupt_deleted: u64,
    /// Bytes the backend occupies on disk (sled only; includes sled's
    /// overhead and not-yet-reclaimed space).
    pub disk_bytes: Option<u64>,
}

impl StoreStats {
    /// Usage of `space`.
    #[must_use]
    pub const fn space(&self, space: Space) -> &SpaceStats {
        &self.spaces[space.index()]
    }

    /// Logical bytes over all spaces.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.spaces.iter().map(|s| s.bytes).sum()
    }
}

/// Result of [`BlockStore::check`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Blocks read and verified.
    pub checked: u64,
    /// Blocks that failed verification (or had no data) and were deleted.
    pub deleted: u64,
}

/// A bounded, salted, self-verifying block store.
///
/// # Blocking
/// All methods are synchronous. `contains`, `stats` and `set_location` only
/// touch memory. `put` and `get` do no `fsync` (sled writes in the
/// background) and cost tens of microseconds, but may wait on disk when the
/// page cache misses; `flush` and `check` always wait on the disk. From
/// async code call `flush` and `check` (and `get` on stores much larger than
/// RAM) inside `spawn_blocking`.
pub trait BlockStore: Send + Sync + std::fmt::Debug {
    /// Verify `block` against `key` and store it in `space`, evicting to stay
    /// within the budget. Not durable until [`BlockStore::flush`].
    ///
    /// # Errors
    /// [`StoreError::InvalidBlock`] if the block does not verify; backend
    /// errors.
    fn put(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Result<PutOutcome, StoreError>;

    /// The operations that skip verification, for blocks this process
    /// has just encoded or verified itself (see [`unchecked`]). Named so
    /// that every call site says it is unchecked.
    fn unchecked(&self) -> &dyn UncheckedStore;

    /// Find a block in the spaces `origin` may see; verified, or `None`.
    /// A [`Origin::Local`] read changes the LRU order of the client cache
    /// only: the node's own reads must not keep blocks in the shared cache
    /// (a peer could tell what its user reads by what survives eviction).
    ///
    /// # Errors
    /// Backend errors only.
    fn get(
        &self,
        origin: Origin,
        kind: BlockKind,
        key: &RoutingKey,
    ) -> Result<Option<Found>, StoreError> {
        first_found(origin, |space| {
            if origin.touches(space) {
                self.get_in(space, kind, key)
            } else {
                self.peek_in(space, kind, key)
            }
        })
    }

    /// Read a block from one space; verified, or `None` (a block that fails
    /// verification is deleted and reported as missing).
    ///
    /// # Errors
    /// Backend errors only.
    fn get_in(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// As [`BlockStore::get_in`], but the read does not count as a use:
    /// the LRU order is unchanged.
    ///
    /// # Errors
    /// Backend errors only.
    fn peek_in(
        &self,
        space: Space,
        kind: BlockKind,
        key: &RoutingKey,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Whether one of `origin`'s spaces holds the key (index only: the block
    /// is not read or verified, and the LRU order is not changed).
    fn contains(&self, origin: Origin, kind: BlockKind, key: &RoutingKey) -> bool {
        origin
            .spaces()
            .iter()
            .any(|&s| self.contains_in(s, kind, key))
    }

    /// Whether `space` holds the key (index only).
    fn contains_in(&self, space: Space, kind: BlockKind, key: &RoutingKey) -> bool;

    /// Delete a block from a space; answers whether it was there.
    ///
    /// # Errors
    /// Backend errors.
    fn remove(&self, space: Space, kind: BlockKind, key: &RoutingKey) -> Result<bool, StoreError>;

    /// Make every completed `put`/`remove` (and the LRU order) durable. The
    /// node calls this before acknowledging an insert.
    ///
    /// # Errors
    /// Backend errors.
    fn flush(&self) -> Result<(), StoreError>;

    /// Current usage.
    fn stats(&self) -> StoreStats;

    /// Move the node to a new location: the long-term store's eviction order
    /// follows it.
    fn set_location(&self, location: u64);

    /// Read and verify every stored block, deleting the bad ones.
    ///
    /// # Errors
    /// Backend errors.
    fn check(&self) -> Result<CheckReport, StoreError>;

    /// Read a store bookkeeping value.
    ///
    /// # Errors
    /// [`StoreError::InvalidMetadata`] for an empty name; backend errors.
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Write a store bookkeeping value (at most 64 KiB; durable at the next
    /// flush).
    ///
    /// # Errors
    /// [`StoreError::InvalidMetadata`] for an empty name or a value over
    /// 64 KiB; backend errors.
    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Remove a bookkeeping value; answers whether it existed.
    ///
    /// # Errors
    /// [`StoreError::InvalidMetadata`] for an empty name; backend errors.
    fn meta_remove(&self, name: &str) -> Result<bool, StoreError>;
}

/// The block `read` finds in the first of `origin`'s spaces that has it.
fn first_found(
    origin: Origin,
    mut read: impl FnMut(Space) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<Option<Found>, StoreError> {
    for &space in origin.spaces() {
        if let Some(block) = read(space)? {
            return Ok(Some(Found { space, block }));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
