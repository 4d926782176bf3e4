//! A connection flood cannot lock new peers out: while 500 idle and 200
//! garbage connections are held against a node's peer port (from ten
//! loopback addresses, each its own source range through `[network]
//! loopback_sources`, and opened again a second after the node closes
//! one), a node that has it as its seed becomes its peer within 2 s.
//! The node's 64 slots before the hello make room by closing the oldest
//! connection of the ranges holding the most (docs/invariants.md,
//! "Floods").
#![allow(clippy::unwrap_used)]

use lichen_tests::network::{self, random_bytes};
use lichen_tests::{free_port, NodeProc};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDLE: usize = 500;
const GARBAGE: usize = 200;
/// Loopback addresses the flood comes from (127.0.0.2 and up).
const SOURCES: usize = 10;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lichen-it"))
}

/// `lichen noderef` for a data directory and peer port, written to a file.
fn noderef_file(dir: &Path, data: &Path, port: u16) -> PathBuf {
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let f = dir.join("a.noderef");
    std::fs::write(&f, network::noderef_text(bin(), data, listen)).unwrap();
    f
}

/// One flood connection, held: opened from 127.0.0.`source`, junk sent
/// if `garbage`, opened again a second after the node closes it.
async fn hold(to: SocketAddr, source: u8, garbage: Option<Vec<u8>>, opened: Arc<AtomicU64>) {
    loop {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)), 0);
        if s.bind(from).is_ok() {
            if let Ok(mut c) = s.connect(to).await {
                opened.fetch_add(1, Ordering::Relaxed);
                if let Some(g) = &garbage {
                    let _ = c.write_all(g).await;
                }
                let mut buf = [0u8; 512];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[test]
fn a_node_becomes_a_peer_within_2_s_while_700_connections_flood_the_peer_port() {
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    let a_port = free_port();
    let a_file = noderef_file(dir.path(), &a_dir, a_port);
    let a_cfg = dir.path().join("a.toml");
    std::fs::write(
        &a_cfg,
        format!(
            "[network]\nloopback_sources = true\n{}",
            network::NO_TUNNELS
        ),
    )
    .unwrap();
    let b_cfg = dir.path().join("b.toml");
    std::fs::write(
        &b_cfg,
        format!(
            "[network]\nseeds = [{:?}]\n{}",
            a_file.to_str().unwrap(),
            network::NO_TUNNELS
        ),
    )
    .unwrap();
    let a = NodeProc::start_with_config(bin(), &a_dir, free_port(), a_port, Some(&a_cfg));
    let to = SocketAddr::from(([127, 0, 0, 1], a_port));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let opened = Arc::new(AtomicU64::new(0));
    for i in 0..IDLE + GARBAGE {
        let source = 2 + u8::try_from(i % SOURCES).unwrap();
        let junk = (i >= IDLE).then(|| random_bytes(1024, u64::try_from(i).unwrap()));
        rt.spawn(hold(to, source, junk, opened.clone()));
    }
    // Let the flood open, the node take it and close some, and the flood
    // open those again: B joins while it goes on.
    let t = Instant::now();
    while opened.load(Ordering::Relaxed) <= u64::try_from(IDLE + GARBAGE).unwrap() {
        assert!(t.elapsed() < Duration::from_secs(10), "flood not going");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    let t = Instant::now();
    let b_dir = dir.path().join("b");
    let b = NodeProc::start_with_config(bin(), &b_dir, free_port(), free_port(), Some(&b_cfg));
    let started = t.elapsed();
    network::wait_connected(&b, 1, Duration::from_secs(10));
    // From B's start: its start-up is part of the time.
    let joined = t.elapsed();
    network::wait_connected(&a, 1, Duration::from_secs(5));
    let total = opened.load(Ordering::Relaxed);
    eprintln!(
        "B's FCP answered {:.2} s after its start; B a peer of A {:.2} s after \
         its start; {total} flood connections opened in all",
        started.as_secs_f64(),
        joined.as_secs_f64()
    );
    assert!(joined < Duration::from_secs(2), "joined after {joined:?}");
    rt.shutdown_timeout(Duration::from_secs(1));
    drop((a, b));
}
