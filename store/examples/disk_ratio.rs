//! Fill a sled store with 3x its budget of CHK blocks (so two thirds are
//! evicted), then print logical bytes, sled's on-disk size and their ratio,
//! plus the put throughput seen on the way. Method: docs/benchmarks.md.
//!
//! `cargo run --release -p lichen-store --example disk_ratio [budget MiB] [flush every N puts] [factor]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lichen_crypto::{BlockKind, RoutingKey};
use lichen_store::{BlockStore, Budgets, SledStore, Space, StoreConfig, StoreSecret};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

fn dir_size(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

fn main() {
    let mut args = std::env::args().skip(1);
    let budget_mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let flush_every: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    // Bytes written as a multiple of the budget (3 = fill and evict 2x).
    let factor: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let budget = budget_mib << 20;
    let cfg = StoreConfig::new(
        Budgets {
            store: 0,
            cache: budget,
            client: 0,
        },
        0,
        StoreSecret::from_bytes([5; 32]),
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("store");
    let (store, _) = SledStore::open(&path, &cfg).unwrap();
    let len = BlockKind::Chk.block_len();
    let total = (factor * budget as f64) as u64 / len as u64;
    let mut r = rand::rngs::StdRng::seed_from_u64(11);
    let mut b = vec![0u8; len];
    let mut in_store = Duration::ZERO;
    for i in 0..total {
        r.fill_bytes(&mut b);
        let k = RoutingKey(Sha256::digest(&b).into());
        let t = Instant::now();
        store.put(Space::Cache, BlockKind::Chk, &k, &b).unwrap();
        if (i + 1) % flush_every == 0 {
            store.flush().unwrap();
        }
        in_store += t.elapsed();
    }
    let t = Instant::now();
    store.flush().unwrap();
    in_store += t.elapsed();
    let written = total * len as u64;
    let st = store.stats();
    let logical = st.total_bytes();
    let sled_size = st.disk_bytes.unwrap_or(0);
    let du = dir_size(&path);
    let mib = |x: u64| x as f64 / f64::from(1 << 20);
    println!("budget            {:>10.1} MiB", mib(budget));
    println!(
        "written           {:>10.1} MiB ({total} blocks, flush every {flush_every})",
        mib(written)
    );
    println!(
        "put+flush rate    {:>10.1} MiB/s",
        mib(written) / in_store.as_secs_f64()
    );
    println!(
        "logical bytes     {:>10.1} MiB ({} blocks, {} evicted)",
        mib(logical),
        st.spaces[1].blocks,
        st.spaces[1].evicted
    );
    println!(
        "sled size_on_disk {:>10.1} MiB  ratio {:.2}",
        mib(sled_size),
        sled_size as f64 / logical as f64
    );
    println!(
        "directory (du)    {:>10.1} MiB  ratio {:.2}",
        mib(du),
        du as f64 / logical as f64
    );
    drop(store);
    let t = Instant::now();
    let (store, _) = SledStore::open(&path, &cfg).unwrap();
    println!(
        "reopen            {:>10.1} ms ({} blocks indexed)",
        t.elapsed().as_secs_f64() * 1e3,
        store.stats().spaces[1].blocks
    );
    let t = Instant::now();
    let c = store.check().unwrap();
    println!(
        "check (read+verify all) {:.1} MiB/s, {} ok, {} deleted",
        mib(logical) / t.elapsed().as_secs_f64(),
        c.checked,
        c.deleted
    );
    println!("directory after reopen {:.1} MiB", mib(dir_size(&path)));
}
