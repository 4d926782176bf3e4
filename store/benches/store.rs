//! Store throughput (method and figures: docs/benchmarks.md, "## store").
//!
//! - `put_flush/*`: put 256 CHK blocks (8 MiB of 32786-byte blocks) into an
//!   empty store, then one `flush` (fsync for sled). Block generation and
//!   store creation are outside the timing.
//! - `get/*`: read back and verify the same 256 blocks from a filled store.

#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lichen_crypto::{BlockKind, RoutingKey};
use lichen_store::{BlockStore, Budgets, MemoryStore, SledStore, Space, StoreConfig, StoreSecret};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

const N: usize = 256;
const CHK: usize = BlockKind::Chk.block_len();

fn config() -> StoreConfig {
    let b = 1 << 30;
    StoreConfig::new(
        Budgets {
            store: b,
            cache: b,
            client: b,
        },
        0,
        StoreSecret::from_bytes([3; 32]),
    )
}

fn blocks() -> Vec<(RoutingKey, Vec<u8>)> {
    let mut r = rand::rngs::StdRng::seed_from_u64(1);
    (0..N)
        .map(|_| {
            let mut b = vec![0u8; CHK];
            r.fill_bytes(&mut b);
            (RoutingKey(Sha256::digest(&b).into()), b)
        })
        .collect()
}

fn put_all(s: &dyn BlockStore, v: &[(RoutingKey, Vec<u8>)]) {
    for (k, b) in v {
        s.put(Space::Cache, BlockKind::Chk, k, b).unwrap();
    }
    s.flush().unwrap();
}

fn bench(c: &mut Criterion) {
    let v = blocks();
    let mut g = c.benchmark_group("put_flush");
    g.throughput(Throughput::Bytes((N * CHK) as u64));
    g.sample_size(10);
    g.bench_function("memory", |b| {
        b.iter_batched(
            || MemoryStore::new(&config()),
            |s| put_all(&s, &v),
            BatchSize::PerIteration,
        );
    });
    g.bench_function("sled", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let (s, _) = SledStore::open(&dir.path().join("s"), &config()).unwrap();
                (dir, s)
            },
            |(dir, s)| {
                put_all(&s, &v);
                (dir, s)
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();

    let mut g = c.benchmark_group("get");
    g.throughput(Throughput::Bytes((N * CHK) as u64));
    g.sample_size(10);
    let mem = MemoryStore::new(&config());
    put_all(&mem, &v);
    let dir = tempfile::tempdir().unwrap();
    let (sled, _) = SledStore::open(&dir.path().join("s"), &config()).unwrap();
    put_all(&sled, &v);
    for (name, s) in [("memory", &mem as &dyn BlockStore), ("sled", &sled)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for (k, _) in &v {
                    assert!(s.get_in(Space::Cache, BlockKind::Chk, k).unwrap().is_some());
                }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
