//! A download whose source answers one part of the key space slowly (a
//! peer sending all its link carries takes every key in its arc): each
//! segment is rebuilt from any `k` of its `2k` blocks, so the download asks
//! for check blocks elsewhere instead of waiting on the slow part, and
//! asks for no more blocks than it needs, also when it reads a segment
//! rebuilt that way back from the client cache.
#![allow(clippy::unwrap_used)]

mod common;
use common::{random_bytes, Kept};
use lichen_client::metadata::{Metadata, Splitfile};
use lichen_client::{
    fetch_metadata, insert, BlockSource, FetchOptions, InsertOptions, MemoryBlocks, SourceError,
};
use lichen_crypto::{BlockKind, RoutingKey};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// Keys whose first byte is below this (a quarter of the key space) are
/// answered slowly.
const SLOW_BELOW: u8 = 64;

/// A source over a memory store that answers keys in the slow quarter
/// after 80 ms and the others after 2 ms, logs every request, and keeps
/// (as a node's client cache does) what it fetched.
struct SlowQuarter<'a> {
    inner: &'a MemoryBlocks,
    asked: Mutex<Vec<RoutingKey>>,
    kept: Kept,
}

impl BlockSource for SlowQuarter<'_> {
    async fn fetch(&self, kind: BlockKind, key: RoutingKey) -> Result<Vec<u8>, SourceError> {
        let local = self.has_local(kind, &key);
        if !local {
            self.asked.lock().unwrap().push(key);
            let ms = if key.0[0] < SLOW_BELOW { 80 } else { 2 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            self.kept.insert(key);
        }
        self.inner.fetch(kind, key).await
    }
    fn has_local(&self, _: BlockKind, key: &RoutingKey) -> bool {
        self.kept.has(key)
    }
    fn fetch_local(&self, kind: BlockKind, key: &RoutingKey) -> Option<Vec<u8>> {
        self.kept.fetch_local(self.inner, kind, key)
    }
}

const SEGMENTS: usize = 16;
const K: usize = 32;

#[test]
fn a_download_asks_less_of_a_slow_part_of_the_key_space_and_no_more_than_it_needs() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemoryBlocks::new();
        let data = random_bytes(SEGMENTS * K * 32 * 1024 - 5000, 21);
        let opts = InsertOptions {
            segment_blocks: K,
            ..InsertOptions::default()
        };
        let uri = insert(&store, &data[..], &opts).await.unwrap().uri;
        let Some(Metadata::Splitfile(sf)) = fetch_metadata(&store, &uri, &FetchOptions::default())
            .await
            .unwrap()
        else {
            panic!("expected a splitfile")
        };
        let sf: Splitfile = sf;
        assert_eq!(sf.segments.len(), SEGMENTS);
        let check: HashSet<RoutingKey> = sf
            .segments
            .iter()
            .flat_map(|s| (usize::from(s.data)..s.total()).map(|i| s.key(i).unwrap().routing_key))
            .collect();
        let all = sf.segments.iter().map(|s| s.total()).sum::<usize>();
        let slow_keys = sf
            .segments
            .iter()
            .flat_map(|s| (0..s.total()).map(|i| s.key(i).unwrap().routing_key))
            .filter(|k| k.0[0] < SLOW_BELOW)
            .count();

        // Two segments held at a time: segments done before their turn are
        // dropped and read back from the kept blocks.
        let src = SlowQuarter {
            inner: &store,
            asked: Mutex::default(),
            kept: Kept::default(),
        };
        let fopts = FetchOptions {
            segments_ahead: 2,
            block_concurrency: 32,
            jitter: Duration::ZERO,
            order_seed: 5,
            ..FetchOptions::default()
        };
        let mut out = Vec::new();
        lichen_client::fetch(&src, &uri, &mut out, &fopts, |_| {})
            .await
            .unwrap();
        assert!(out == data, "the document differs");
        let asked = src.asked.into_inner().unwrap();
        // The metadata's block, then exactly k blocks per segment: none
        // asked for twice, none beyond what rebuilds the segments (a
        // segment read back takes its check blocks from the cache too).
        let blocks: Vec<&RoutingKey> = asked
            .iter()
            .filter(|k| {
                check.contains(k)
                    || sf.segments.iter().any(|s| {
                        (0..usize::from(s.data)).any(|i| s.key(i).unwrap().routing_key == **k)
                    })
            })
            .collect();
        assert_eq!(
            blocks.len(),
            SEGMENTS * K,
            "blocks asked beyond the k per segment"
        );
        let distinct: HashSet<&&RoutingKey> = blocks.iter().collect();
        assert_eq!(distinct.len(), blocks.len(), "a block asked twice");
        // The slow quarter holds about a quarter of the blocks; asked in
        // file order (data blocks first) it would get a quarter of the
        // requests.
        let slow = blocks.iter().filter(|k| k.0[0] < SLOW_BELOW).count();
        let share = slow as f64 / blocks.len() as f64;
        let expected = slow_keys as f64 / all as f64;
        eprintln!(
            "slow quarter: {slow} of {} requests ({:.0} %; {:.0} % of the keys), {} check blocks",
            blocks.len(),
            share * 100.0,
            expected * 100.0,
            blocks.iter().filter(|k| check.contains(k)).count()
        );
        assert!(
            share < expected * 0.7,
            "the slow part was asked as often as the others: {share:.2} against {expected:.2}"
        );
    });
}
