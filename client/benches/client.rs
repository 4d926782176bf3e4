//! Client throughput: encode 100 MiB of random data into blocks (null
//! sink, memory, sled) and decode it back; plus the cost of each stage on
//! one 4 MiB segment, to show where the time goes.
//!
//! Run: `cargo bench -p lichen-client --bench client`.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lichen_client::{
    fetch, insert, BlockSink, BlockSource, FetchOptions, InsertOptions, MemoryBlocks, NullSink,
    SinkError, SourceError,
};
use lichen_crypto::{chk, BlockKind, DataFlags, FreenetUri, RoutingKey};
use lichen_store::{BlockStore, Budgets, Origin, SledStore, Space, StoreConfig, StoreSecret};
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;
use std::time::{Duration, Instant};

const DOC: usize = 100 * 1024 * 1024;

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut v);
    v
}

/// The sled store as the node would plug it in: local inserts go to the
/// client space.
#[derive(Debug)]
struct Sled(SledStore);

impl BlockSink for Sled {
    async fn put(&self, kind: BlockKind, key: RoutingKey, block: Vec<u8>) -> Result<(), SinkError> {
        self.0
            .put(Space::Client, kind, &key, &block)
            .map(|_| ())
            .map_err(|e| SinkError::Other(e.to_string()))
    }
}

impl BlockSource for Sled {
    async fn fetch(&self, kind: BlockKind, key: RoutingKey) -> Result<Vec<u8>, SourceError> {
        match self.0.get(Origin::Local, kind, &key) {
            Ok(Some(f)) => Ok(f.block),
            Ok(None) => Err(SourceError::NotFound),
            Err(e) => Err(SourceError::Other(e.to_string())),
        }
    }
}

fn open_sled(dir: &std::path::Path) -> Sled {
    let budgets = Budgets {
        store: 1 << 30,
        cache: 1 << 30,
        client: 1 << 30,
    };
    let cfg = StoreConfig::new(budgets, 0, StoreSecret::generate());
    Sled(SledStore::open(dir, &cfg).unwrap().0)
}

fn bench_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lichen-client-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

async fn put_doc<S: BlockSink>(sink: &S, data: &[u8]) -> FreenetUri {
    insert(sink, data, &InsertOptions::default())
        .await
        .unwrap()
        .uri
}

async fn get_doc<S: BlockSource>(source: &S, uri: &FreenetUri) -> u64 {
    fetch(
        source,
        uri,
        std::io::sink(),
        &FetchOptions::default(),
        |_| {},
    )
    .await
    .unwrap()
    .size
}

fn documents(c: &mut Criterion) {
    let data = random(DOC);
    let rt = rt();
    let mut g = c.benchmark_group("document-100MiB");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(15))
        .warm_up_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(DOC as u64));

    g.bench_function("encode/null-sink", |b| {
        b.iter(|| rt.block_on(put_doc(&NullSink, &data)))
    });
    g.bench_function("encode/memory", |b| {
        b.iter_batched(
            MemoryBlocks::new,
            |m| rt.block_on(put_doc(&m, &data)),
            BatchSize::PerIteration,
        )
    });
    let mem = MemoryBlocks::new();
    let uri = rt.block_on(put_doc(&mem, &data));
    g.bench_function("decode/memory", |b| {
        b.iter(|| rt.block_on(get_doc(&mem, &uri)))
    });
    drop(mem);

    // Sled: a fresh store per iteration (so every put is a real write),
    // flushed before the clock stops, as the node acknowledges inserts.
    g.bench_function("encode/sled", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let dir = bench_dir(&format!("enc{i}"));
                let store = open_sled(&dir);
                let t = Instant::now();
                rt.block_on(put_doc(&store, &data));
                store.0.flush().unwrap();
                total += t.elapsed();
                drop(store);
                let _ = std::fs::remove_dir_all(&dir);
            }
            total
        })
    });
    let dir = bench_dir("dec");
    let store = open_sled(&dir);
    let uri = rt.block_on(put_doc(&store, &data));
    store.0.flush().unwrap();
    g.bench_function("decode/sled", |b| {
        b.iter(|| rt.block_on(get_doc(&store, &uri)))
    });
    g.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One full segment (4 MiB data + 4 MiB check), stage by stage.
fn stages(c: &mut Criterion) {
    let seg = random(lichen_client::SEGMENT_BYTES);
    let shards: Vec<&[u8]> = seg.chunks(chk::PAYLOAD_LEN).collect();
    let recovery = reed_solomon_simd::encode(128, 128, &shards).unwrap();
    let all: Vec<&[u8]> = shards
        .iter()
        .copied()
        .chain(recovery.iter().map(Vec::as_slice))
        .collect();
    let mut g = c.benchmark_group("segment-4MiB");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(seg.len() as u64));
    g.bench_function("sha256-content", |b| b.iter(|| lichen_crypto::sha256(&seg)));
    g.bench_function("reed-solomon-encode-128+128", |b| {
        b.iter(|| reed_solomon_simd::encode(128, 128, &shards).unwrap())
    });
    g.bench_function("chk-encode-256-blocks-1-core", |b| {
        b.iter(|| {
            all.iter()
                .map(|s| {
                    usize::from(
                        chk::encode(s, DataFlags::default())
                            .unwrap()
                            .0
                            .routing_key
                            .0[0],
                    )
                })
                .sum::<usize>()
        })
    });
    g.bench_function("chk-encode-256-blocks-rayon", |b| {
        b.iter(|| {
            all.par_iter()
                .map(|s| {
                    usize::from(
                        chk::encode(s, DataFlags::default())
                            .unwrap()
                            .0
                            .routing_key
                            .0[0],
                    )
                })
                .sum::<usize>()
        })
    });
    let blocks: Vec<(chk::ChkKey, Vec<u8>)> = shards
        .iter()
        .map(|s| chk::encode(s, DataFlags::default()).unwrap())
        .collect();
    g.bench_function("chk-verify+decrypt-128-blocks-1-core", |b| {
        b.iter(|| {
            blocks
                .iter()
                .map(|(k, b)| chk::decode(k, b).unwrap().len())
                .sum::<usize>()
        })
    });
    let mut rest = seg.clone();
    rest.truncate(lichen_client::COMPRESSION_SAMPLE);
    g.throughput(Throughput::Bytes(rest.len() as u64));
    g.bench_function("zstd-detect-1MiB-sample", |b| {
        b.iter(|| zstd::bulk::compress(&rest, 1).unwrap().len())
    });
    g.finish();
}

criterion_group!(benches, stages, documents);
criterion_main!(benches);
