//! Where the peer manager keeps the blocks the routing core verified: a
//! store-writer thread that batches them into the shared spaces, and the
//! view of the store that peers may be served.

use lichen_crypto::{BlockKind, RoutingKey};
use lichen_routing::{BlockSource, Key, KeyKind};
use lichen_store::{BlockStore, Origin, Space};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Verifies blocks for the routing node with `lichen_crypto`.
pub(super) fn verify(key: &Key, kind: KeyKind, block: &[u8]) -> bool {
    lichen_crypto::verify_block(BlockKind::from(kind), &RoutingKey(key.0), block).is_ok()
}

/// Blocks waiting for the store writer (32 KiB each: at most 16 MiB).
const STORE_QUEUE: usize = 512;
/// Most blocks the store writer puts in one batch.
const STORE_BATCH: usize = 128;

/// A verified block for the store writer.
struct ToStore {
    space: Space,
    kind: BlockKind,
    key: RoutingKey,
    block: Vec<u8>,
}

/// Blocks of the shared spaces (store, cache) handed to the store writer
/// and not written yet: served to peers from here meanwhile, so a request
/// right behind an insert finds what the insert left.
type Unwritten = Arc<Mutex<HashMap<(BlockKind, RoutingKey), Vec<u8>>>>;

/// The store writer: a thread that puts the blocks the routing core asks
/// to keep, in batches (one sled batch per space and round, where a put per
/// block cost two log writes each), so the routing task never waits for
/// the disk. A full queue drops the block: caching is best effort.
fn spawn_store_writer(
    store: Arc<dyn BlockStore>,
    unwritten: Unwritten,
) -> Option<std::sync::mpsc::SyncSender<ToStore>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<ToStore>(STORE_QUEUE);
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < STORE_BATCH {
                    match rx.try_recv() {
                        Ok(b) => batch.push(b),
                        Err(_) => break,
                    }
                }
                let done: Vec<(BlockKind, RoutingKey)> = batch
                    .iter()
                    .filter(|b| b.space != Space::Client)
                    .map(|b| (b.kind, b.key))
                    .collect();
                write_batch(store.as_ref(), batch);
                let mut u = unwritten
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for k in &done {
                    u.remove(k);
                }
            }
        })
        .ok()
        .map(|_| tx)
}

fn write_batch(store: &dyn BlockStore, batch: Vec<ToStore>) {
    let mut chk: HashMap<Space, Vec<(RoutingKey, Vec<u8>)>> = HashMap::new();
    for b in batch {
        if b.kind == BlockKind::Chk {
            chk.entry(b.space).or_default().push((b.key, b.block));
        } else if let Err(e) = store
            .unchecked()
            .put_trusted(b.space, b.kind, &b.key, &b.block)
        {
            tracing::warn!(error = %e, "could not store a block");
        }
    }
    for (space, blocks) in chk {
        match store.unchecked().put_trusted_chk_batch(space, &blocks) {
            Err(e) => tracing::warn!(error = %e, "could not store {} blocks", blocks.len()),
            Ok(o) => tracing::trace!(?space, stored = o.len(), "stored blocks"),
        }
    }
}

/// Where the peer manager keeps blocks: the store writer, or (if its
/// thread could not start) the store directly.
pub(super) struct Keeper {
    store: Arc<dyn BlockStore>,
    writer: Option<std::sync::mpsc::SyncSender<ToStore>>,
    unwritten: Unwritten,
}

impl Keeper {
    pub(super) fn new(store: Arc<dyn BlockStore>) -> Self {
        let unwritten = Unwritten::default();
        Keeper {
            writer: spawn_store_writer(store.clone(), unwritten.clone()),
            store,
            unwritten,
        }
    }

    fn unwritten(&self) -> std::sync::MutexGuard<'_, HashMap<(BlockKind, RoutingKey), Vec<u8>>> {
        self.unwritten
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keep a block the routing core verified (never blocks).
    pub(super) fn keep(&self, space: Space, kind: BlockKind, key: RoutingKey, block: Vec<u8>) {
        let Some(w) = &self.writer else {
            let _ = self
                .store
                .unchecked()
                .put_trusted(space, kind, &key, &block);
            return;
        };
        // Never the client cache: peers must not see what we fetched.
        let shared = space != Space::Client;
        if shared {
            self.unwritten().insert((kind, key), block.clone());
        }
        if let Err(std::sync::mpsc::TrySendError::Full(_)) = w.try_send(ToStore {
            space,
            kind,
            key,
            block,
        }) {
            tracing::debug!("store writer busy: a block was not cached");
            if shared {
                self.unwritten().remove(&(kind, key));
            }
        }
    }
}

/// What peers may be served: the shared spaces of the store, and shared
/// blocks still on their way to it.
pub(super) struct StoreSource<'a>(pub(super) &'a dyn BlockStore, pub(super) &'a Keeper);

impl BlockSource for StoreSource<'_> {
    fn get(&mut self, key: &Key, kind: KeyKind) -> Option<Vec<u8>> {
        let (kind, key) = (BlockKind::from(kind), RoutingKey(key.0));
        if let Some(b) = self.1.unwritten().get(&(kind, key)) {
            return Some(b.clone());
        }
        self.0
            .get(Origin::Remote, kind, &key)
            .ok()
            .flatten()
            .map(|f| f.block)
    }
}
