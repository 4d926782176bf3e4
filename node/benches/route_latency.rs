//! Single-block fetch latency over a known number of hops, on real links.
//!
//! Method (printed when it runs): `HOPS + 1` routing nodes in this process,
//! each with its own Noise XK link layer over loopback TCP, wired as a line
//! `n0 - n1 - … - nH` with locations increasing along the line, so greedy
//! routing walks the whole line. Every block is stored only in the last
//! node's shared store; `n0` fetches it as a local request (HTL 18, like any
//! client fetch). Each sample uses a new block, so no cache along the line
//! can answer early: every sample crosses exactly `HOPS` links out and
//! `HOPS` back, each hop verifying the 32 KiB block before passing it on.
//!
//! Then the same line moves blocks with `CONCURRENCY` fetches in flight, to
//! give the routed throughput in MiB/s (block payloads only).
//!
//! `cargo bench -p lichen-node --bench route_latency [-- HOPS SAMPLES CONCURRENCY]`
//! (defaults 6, 400, 64).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use lichen_link::{Bandwidth, LinkConfig, NodeKeys, NodeRef};
use lichen_node::peers::{PeerManager, PeerSetup};
use lichen_routing::{Key, KeyKind, Location, RequestOutcome};
use lichen_store::{BlockStore, Budgets, MemoryStore, Space, StoreConfig, StoreSecret};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Hop {
    manager: PeerManager,
    noderef: NodeRef,
    bytes: lichen_routing::NoderefBytes,
    store: Arc<dyn BlockStore>,
}

async fn start(i: usize, hops: usize, stop: &CancellationToken) -> Hop {
    let secret = u8::try_from(i + 1).unwrap();
    let keys = NodeKeys::from_static_secret([secret; 32]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Locations 0.05, 0.15, … along the line; the blocks' keys sit past the
    // last node, so every node's best next hop is its successor.
    let location = (u64::MAX / (hops as u64 + 2)) * (i as u64 + 1);
    let noderef = NodeRef::new(&keys, vec![listener.local_addr().unwrap()], Some(location));
    let store: Arc<dyn BlockStore> = Arc::new(MemoryStore::new(&StoreConfig::new(
        Budgets {
            store: 1 << 30,
            cache: 1 << 28,
            client: 1 << 28,
        },
        location,
        StoreSecret::from_bytes([secret; 32]),
    )));
    let bytes: lichen_routing::NoderefBytes = noderef.to_bytes(&keys).into();
    let setup = PeerSetup {
        noderef: Some(bytes.clone()),
        keys,
        location: Location(location),
        store: store.clone(),
        link: LinkConfig::default(),
        bandwidth: Arc::new(Bandwidth::unlimited()),
        // Darknet-style fixed links: no path folding or announcements, so
        // the line stays a line for the whole run.
        routing: lichen_routing::Config {
            opennet: false,
            ..lichen_routing::Config::default()
        },
        opennet: false,
        peer_dir: None,
        vault: lichen_node::vault::Vault::new([7; 32]),
        max_remembered: 0,
        seeds: Vec::new(),
        loopback_sources: false,
        auto_address: false,
        port_mapping: None,
        // Two-node and line networks: no room for tunnels (routing
        // alone is under test).
        tunnels: lichen_routing::TunnelConfig {
            hops: 0,
            ..lichen_routing::TunnelConfig::default()
        },
    };
    Hop {
        manager: PeerManager::start(setup, listener, stop.clone()),
        noderef,
        bytes,
        store,
    }
}

/// A CHK block whose routing key's location is past the last node.
fn block(i: u64) -> (Key, Vec<u8>) {
    let mut n = 0u64;
    loop {
        let mut data = i.to_le_bytes().to_vec();
        data.extend_from_slice(&n.to_le_bytes());
        data.resize(32 * 1024, 0x5a);
        let (chk, block) =
            lichen_crypto::chk::encode(&data, lichen_crypto::DataFlags::default()).unwrap();
        // Top eighth of the circle: farther along than any node.
        if chk.routing_key.0[0] >= 0xe0 {
            return (Key(chk.routing_key.0), block);
        }
        n += 1;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let hops = arg(0, 6).clamp(1, 16);
    let samples = arg(1, 400).max(1);
    let concurrency = arg(2, 64).max(1);
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(hops, samples, concurrency));
}

async fn run(hops: usize, samples: usize, concurrency: usize) {
    println!(
        "route_latency: {} nodes in a line over loopback Noise links ({hops} hops); \
         each sample fetches a different 32 KiB CHK block stored only at the far end, \
         from the first node, one at a time; then {} blocks with {concurrency} in flight",
        hops + 1,
        samples * 2
    );
    let stop = CancellationToken::new();
    let mut line = Vec::new();
    for i in 0..=hops {
        line.push(start(i, hops, &stop).await);
    }
    // Darknet links: each pair are friends both ways.
    for w in line.windows(2) {
        w[0].manager
            .add_friend(w[1].noderef.clone(), w[1].bytes.clone())
            .await
            .unwrap();
        w[1].manager
            .add_friend(w[0].noderef.clone(), w[0].bytes.clone())
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, h) in line.iter().enumerate() {
        let want = if i == 0 || i == hops { 1 } else { 2 };
        while h.manager.peer_count().await.unwrap() < want {
            assert!(Instant::now() < deadline, "the line did not connect");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let total = samples * 3;
    let blocks: Vec<(Key, Vec<u8>)> = (0..total as u64).map(block).collect();
    let far = &line[hops].store;
    for (k, b) in &blocks {
        far.put(
            Space::Store,
            lichen_crypto::BlockKind::Chk,
            &lichen_crypto::RoutingKey(k.0),
            b,
        )
        .unwrap();
    }
    let first = &line[0].manager;

    // Warm-up: a few fetches (connection buffers, allocator).
    for (k, _) in &blocks[samples * 2..samples * 2 + samples.min(20)] {
        let _ = first.fetch(*k, KeyKind::Chk).await;
    }

    let mut lat = Vec::with_capacity(samples);
    for (k, b) in &blocks[..samples] {
        let t = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(30), first.fetch(*k, KeyKind::Chk))
            .await
            .expect("a fetch took over 30 s")
            .unwrap();
        lat.push(t.elapsed());
        assert!(
            matches!(&got, RequestOutcome::Found(x) if x == b),
            "{got:?}"
        );
    }
    // The blocks really crossed the line: the first sample's block was
    // passed back through the next-to-last node, which cached it (HTL there
    // is below the cache threshold), and the first node did not.
    let (k0, _) = &blocks[0];
    let rk = lichen_crypto::RoutingKey(k0.0);
    assert!(
        line[hops - 1]
            .store
            .contains_in(Space::Cache, lichen_crypto::BlockKind::Chk, &rk)
            || hops < 3,
        "the block did not come back through the line"
    );
    assert!(!line[0]
        .store
        .contains_in(Space::Cache, lichen_crypto::BlockKind::Chk, &rk));
    lat.sort();
    println!(
        "latency over {hops} hops ({samples} fetches): p50 {:.3} ms, p95 {:.3} ms, min {:.3} ms, max {:.3} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.95).as_secs_f64() * 1e3,
        lat[0].as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3,
    );

    // Throughput: the next `samples` blocks (uncached), `concurrency` at once.
    let keys: Vec<Key> = blocks[samples..samples * 2]
        .iter()
        .map(|(k, _)| *k)
        .collect();
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for k in keys {
        let m = first.clone();
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let r = m.fetch(k, KeyKind::Chk).await;
            drop(permit);
            match r {
                Ok(RequestOutcome::Found(_)) => None,
                other => Some(format!("{other:?}")),
            }
        }));
    }
    let mut ok = 0usize;
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        match t.await.unwrap() {
            None => ok += 1,
            Some(f) => *failures.entry(f).or_default() += 1,
        }
    }
    if !failures.is_empty() {
        println!("failed fetches: {failures:?}");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "throughput over {hops} hops: {ok}/{samples} blocks found in {secs:.2} s = {:.1} MiB/s ({:.0} blocks/s)",
        ok as f64 * 32.0 / 1024.0 / secs,
        ok as f64 / secs
    );
    stop.cancel();
}
