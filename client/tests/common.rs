#![allow(dead_code, clippy::unwrap_used)]

use lichen_client::{
    fetch, insert, BlockSource, FetchError, FetchOptions, FetchResult, InsertOptions, InsertResult,
    MemoryBlocks, SourceError,
};
use lichen_crypto::{BlockKind, FreenetUri, RoutingKey};
use rand::{RngCore, SeedableRng};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The blocks a test source has kept "locally", as a node's client
/// cache keeps what it fetched: `has_local` and `fetch_local` of a
/// [`BlockSource`] over `inner` answer for them only.
#[derive(Debug, Default)]
pub struct Kept(Mutex<HashSet<RoutingKey>>);

impl Kept {
    pub fn insert(&self, key: RoutingKey) {
        self.0.lock().unwrap().insert(key);
    }

    pub fn has(&self, key: &RoutingKey) -> bool {
        self.0.lock().unwrap().contains(key)
    }

    /// `inner`'s block, if kept.
    pub fn fetch_local(
        &self,
        inner: &MemoryBlocks,
        kind: BlockKind,
        key: &RoutingKey,
    ) -> Option<Vec<u8>> {
        if !self.has(key) {
            return None;
        }
        inner.fetch_local(kind, key)
    }
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub fn text_bytes(len: usize) -> Vec<u8> {
    let words = [
        "lichen ", "grows ", "on ", "rocks ", "slowly, ", "and\n", "freely ",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0usize;
    while out.len() < len {
        out.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

pub async fn put(store: &MemoryBlocks, data: &[u8], opts: &InsertOptions) -> InsertResult {
    insert(store, data, opts).await.unwrap()
}

pub async fn get<S: BlockSource>(
    store: &S,
    uri: &FreenetUri,
    opts: &FetchOptions,
) -> Result<(Vec<u8>, FetchResult), FetchError> {
    let mut out = Vec::new();
    let r = fetch(store, uri, &mut out, opts, |_| {}).await?;
    Ok((out, r))
}

/// A source that counts fetches.
#[derive(Debug, Default)]
pub struct Counting<'a> {
    pub inner: Option<&'a MemoryBlocks>,
    pub fetches: AtomicU64,
}

impl BlockSource for Counting<'_> {
    async fn fetch(&self, kind: BlockKind, key: RoutingKey) -> Result<Vec<u8>, SourceError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.inner {
            Some(s) => s.fetch(kind, key).await,
            None => Err(SourceError::NotFound),
        }
    }
}
