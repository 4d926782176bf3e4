//! The order and timing of a download's and an insert's block requests
//! (issue 15, "download order"): a neighbour must not receive its arc of
//! a file in file order, and no request may start the moment a reply
//! frees its slot.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use lichen_client::metadata::{Metadata, Splitfile};
use lichen_client::{
    fetch_metadata, insert, BlockSink, BlockSource, FetchOptions, InsertOptions, MemoryBlocks,
    SinkError, SourceError, REQUEST_JITTER,
};
use lichen_crypto::{BlockKind, RoutingKey};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

/// What a source or sink was asked, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    Pause(Duration),
    Block(RoutingKey),
    /// Bytes written so far.
    Written(usize),
}

/// A source (or sink) that records its requests and the pauses before
/// them, over an in-memory store. It holds nothing "locally" (every block
/// is a network request), except, if `keep`, the blocks fetched through
/// it, as a node's client cache does.
#[derive(Debug)]
struct Recording<'a> {
    inner: &'a MemoryBlocks,
    log: Mutex<Vec<Event>>,
    keep: bool,
    kept: Kept,
}

impl<'a> Recording<'a> {
    fn new(inner: &'a MemoryBlocks) -> Self {
        Recording {
            inner,
            log: Mutex::new(Vec::new()),
            keep: false,
            kept: Kept::default(),
        }
    }
    fn events(self) -> Vec<Event> {
        self.log.into_inner().unwrap()
    }
}

impl BlockSource for Recording<'_> {
    async fn fetch(&self, kind: BlockKind, key: RoutingKey) -> Result<Vec<u8>, SourceError> {
        self.log.lock().unwrap().push(Event::Block(key));
        if self.keep {
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
    async fn pause(&self, delay: Duration) {
        self.log.lock().unwrap().push(Event::Pause(delay));
    }
}

impl BlockSink for Recording<'_> {
    async fn put(&self, kind: BlockKind, key: RoutingKey, block: Vec<u8>) -> Result<(), SinkError> {
        self.log.lock().unwrap().push(Event::Block(key));
        self.inner.put(kind, key, block).await
    }
    async fn pause(&self, delay: Duration) {
        self.log.lock().unwrap().push(Event::Pause(delay));
    }
}

/// Spearman's rank correlation of `xs` with their order (distinct values).
fn rank_correlation(xs: &[usize]) -> f64 {
    let n = xs.len() as f64;
    let mut sorted: Vec<(usize, usize)> = xs.iter().copied().zip(0..).collect();
    sorted.sort_unstable();
    let d2: f64 = sorted
        .iter()
        .enumerate()
        .map(|(rank, &(_, at))| {
            let d = rank as f64 - at as f64;
            d * d
        })
        .sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

/// Each block's position in the file: segment by segment, data blocks
/// then check blocks.
fn positions(sf: &Splitfile) -> HashMap<RoutingKey, usize> {
    let mut at = HashMap::new();
    for seg in &sf.segments {
        for i in 0..seg.total() {
            let len = at.len();
            at.insert(seg.key(i).unwrap().routing_key, len);
        }
    }
    at
}

const SEGMENTS: usize = 20;
const SEGMENT_BLOCKS: usize = 8;

async fn twenty_segments(store: &MemoryBlocks) -> (lichen_crypto::FreenetUri, Splitfile) {
    let data = random_bytes(SEGMENTS * SEGMENT_BLOCKS * 32 * 1024 - 1000, 15);
    let opts = InsertOptions {
        segment_blocks: SEGMENT_BLOCKS,
        ..InsertOptions::default()
    };
    let r = insert(store, &data[..], &opts).await.unwrap();
    let Some(Metadata::Splitfile(sf)) = fetch_metadata(store, &r.uri, &FetchOptions::default())
        .await
        .unwrap()
    else {
        panic!("expected a splitfile")
    };
    assert_eq!(sf.segments.len(), SEGMENTS);
    (r.uri, sf)
}

#[test]
fn a_download_asks_for_its_blocks_across_the_whole_file_in_random_order_with_jitter() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        let (uri, sf) = twenty_segments(&store).await;
        let at = positions(&sf);
        let run = |seed: u64, keep: bool| {
            let (store, uri, at) = (&store, &uri, &at);
            async move {
                let mut rec = Recording::new(store);
                rec.keep = keep;
                let opts = FetchOptions {
                    order_seed: seed,
                    ..FetchOptions::default()
                };
                get(&rec, uri, &opts).await.unwrap();
                let events = rec.events();
                let order: Vec<usize> = events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Block(k) => at.get(k).copied(),
                        _ => None,
                    })
                    .collect();
                (events, order)
            }
        };
        let (events, order) = run(11, false).await;
        // Every data block once (nothing was missing).
        let mut sorted = order.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), SEGMENTS * SEGMENT_BLOCKS);
        assert_eq!(order.len(), sorted.len());
        // Not in file order, nor segment after segment: the rank
        // correlation of the requests with file order is far from 1 (it
        // is above 0.97 when segments are taken a few at a time in file
        // order, whatever the order inside each).
        let rho = rank_correlation(&order);
        eprintln!("rank correlation with file order: {rho:.3}");
        assert!(rho < 0.8, "requests follow file order: rho = {rho:.3}");
        // Segments are not taken one after the other: within the first
        // quarter of the requests, blocks of segments from every half of
        // the file.
        let first: Vec<usize> = order[..order.len() / 4]
            .iter()
            .map(|p| p / (2 * SEGMENT_BLOCKS))
            .collect();
        assert!(first.iter().any(|s| *s >= SEGMENTS / 2), "{first:?}");
        // Each request is preceded by its own random pause, below the
        // jitter bound, and the pauses vary.
        let mut pauses = Vec::new();
        for pair in events.windows(2) {
            if let [Event::Pause(d), Event::Block(_)] = pair {
                pauses.push(*d);
            }
        }
        assert_eq!(pauses.len(), order.len(), "a request without a pause");
        assert!(pauses.iter().all(|d| *d < REQUEST_JITTER));
        let mut distinct = pauses.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > pauses.len() * 9 / 10, "pauses hardly vary");
        // Seeded: the same seed gives the same order and pauses, another
        // seed others.
        assert_eq!(run(11, false).await.0, events);
        assert_ne!(run(12, false).await.1, order);
        // A source that keeps what it fetched (a node's client cache) lets
        // a segment done early be dropped and read back in its turn: the
        // order is then random across the whole file.
        let (_, kept) = run(11, true).await;
        let mut sorted = kept.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted.len(),
            SEGMENTS * SEGMENT_BLOCKS,
            "a block asked twice"
        );
        let rho = rank_correlation(&kept);
        eprintln!("rank correlation with file order, blocks kept: {rho:.3}");
        assert!(rho < 0.5, "requests follow file order: rho = {rho:.3}");
    });
}

/// A writer that logs how many bytes it has taken, after each write.
struct LoggingWriter<'a>(&'a Mutex<Vec<Event>>, usize);

impl std::io::Write for LoggingWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1 += b.len();
        self.0.lock().unwrap().push(Event::Written(self.1));
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_download_holds_a_bounded_number_of_segments_and_writes_in_order() {
    // The memory bound: segments asked for and not yet written (being
    // fetched or held) never exceed `segments_ahead` + 1, and the
    // document comes out whole, in order.
    rt().block_on(async {
        let store = MemoryBlocks::new();
        let (uri, sf) = twenty_segments(&store).await;
        let at = positions(&sf);
        for ahead in [1, 2, 4] {
            let rec = Recording::new(&store);
            let opts = FetchOptions {
                segments_ahead: ahead,
                order_seed: 3,
                ..FetchOptions::default()
            };
            let w = LoggingWriter(&rec.log, 0);
            lichen_client::fetch(&rec, &uri, w, &opts, |_| {})
                .await
                .unwrap();
            let seg_bytes = SEGMENT_BLOCKS * 32 * 1024;
            let mut started = std::collections::BTreeSet::new();
            let mut written = 0;
            let mut most = 0;
            for e in rec.events() {
                match e {
                    Event::Block(k) => {
                        if let Some(p) = at.get(&k) {
                            started.insert(p / (2 * SEGMENT_BLOCKS));
                        }
                    }
                    Event::Written(bytes) => written = bytes / seg_bytes,
                    Event::Pause(_) => {}
                }
                let in_memory = started.iter().filter(|s| **s >= written).count();
                most = most.max(in_memory);
            }
            assert!(
                most <= ahead + 1,
                "{most} segments in memory, bound {ahead} + 1"
            );
            assert!(
                most >= ahead.min(SEGMENTS),
                "bound {ahead} not used: {most}"
            );
        }
    });
}

#[test]
fn an_insert_puts_each_segments_blocks_in_random_order_with_jitter() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        let data = random_bytes(4 * SEGMENT_BLOCKS * 32 * 1024, 16);
        let rec = Recording::new(&store);
        let opts = InsertOptions {
            segment_blocks: SEGMENT_BLOCKS,
            seed: Some([7; 32]),
            ..InsertOptions::default()
        };
        let r = insert(&rec, &data[..], &opts).await.unwrap();
        let Some(Metadata::Splitfile(sf)) =
            fetch_metadata(&store, &r.uri, &FetchOptions::default())
                .await
                .unwrap()
        else {
            panic!("expected a splitfile")
        };
        let at = positions(&sf);
        let events = rec.events();
        let order: Vec<usize> = events
            .iter()
            .filter_map(|e| match e {
                Event::Block(k) => at.get(k).copied(),
                _ => None,
            })
            .collect();
        assert_eq!(order.len(), at.len());
        // Within each segment (data and check blocks together), not in
        // file order.
        for seg in order.chunks(2 * SEGMENT_BLOCKS) {
            let mut sorted = seg.to_vec();
            sorted.sort_unstable();
            assert_ne!(seg, &sorted[..], "a segment put in file order");
        }
        let pauses = events
            .windows(2)
            .filter(|w| matches!(w, [Event::Pause(_), Event::Block(_)]))
            .count();
        let blocks = events
            .iter()
            .filter(|e| matches!(e, Event::Block(_)))
            .count();
        assert_eq!(pauses, blocks, "a put without a pause");
    });
}
