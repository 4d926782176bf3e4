//! A full seed still lets newcomers in: the seed takes at most 3 peers,
//! and 9 nodes that know only the seed all find peers. The seed keeps the
//! ones it has no room for as seed clients, routes their announcement, and
//! lets them go; the nodes the announcements reach connect to them.
#![allow(clippy::unwrap_used)]

use lichen_tests::network::{connected, volatile, wait_connected, Testnet, PEER_TIMEOUT};
use std::path::Path;

const NODES: usize = 10;
const SEED_MAX_PEERS: u64 = 3;

#[test]
fn newcomers_join_through_a_full_seed() {
    let bin = Path::new(env!("CARGO_BIN_EXE_lichen-it"));
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::start_with_seed_config(
        bin,
        dir.path(),
        NODES,
        &format!("max_peers = {SEED_MAX_PEERS}"),
    );
    for n in &net.nodes[1..] {
        wait_connected(n, 1, PEER_TIMEOUT);
    }
    let seed = net.nodes[0].fcp;
    assert!(connected(seed) <= SEED_MAX_PEERS);
    // At least the 6 that could not be its peers came as seed clients.
    let clients = volatile(seed, "volatile.lichen.seedClients");
    assert!(
        clients >= (NODES as u64 - 1) - SEED_MAX_PEERS,
        "seed clients {clients}"
    );
    // And a seed client is not listed as a peer.
    assert!(connected(seed) >= 1);
    net.stop();
}
