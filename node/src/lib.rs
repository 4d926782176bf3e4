#![doc = include_str!("../README.md")]

// Layers, top to bottom; a module imports only from its own layer or
// below (the test `layers` below checks it):
// command line: app, cli, testnet
// runtime: this file (`run`)
// front ends: fcp, gateway, peers
// jobs: jobs (request, push)
// operations: ops (put, get, site, usk)
// context: node, requests, pushes, config, settings, identity, status
// utilities: util (blocking, clock), files, sealed
pub mod app;
pub mod cli;
pub mod config;
pub(crate) mod fcp;
pub(crate) mod files;
pub mod gateway;
pub mod identity;
pub(crate) mod jobs;
pub mod node;
pub mod ops;
pub mod peers;
pub(crate) mod pushes;
pub mod requests;
pub mod sealed;
pub mod settings;
pub(crate) mod status;
pub(crate) mod testnet;
pub(crate) mod util;
pub mod vault;

/// Hooks for the node's integration tests (`node/tests/dda_races.rs`);
/// not an interface.
#[doc(hidden)]
pub mod test_hooks {
    pub use crate::util::hold::{hold, Gate};
}

#[cfg(test)]
mod layers;

use anyhow::Context;
use config::Config;
use lichen_safelog::Sensitive;
use std::sync::Arc;

/// Run a node until SIGINT/SIGTERM (or an FCP `Shutdown`): open the data
/// directory, serve FCP, resume persistent requests, then shut down
/// cleanly (requests stopped, store flushed).
///
/// # Errors
/// Startup failures (data directory, identity, store, ports in use).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let fcp_addr = config.fcp.listen;
    let node = node::Node::open(config)?;
    let listener = tokio::net::TcpListener::bind(fcp_addr)
        .await
        .with_context(|| {
            format!("cannot listen for FCP on {fcp_addr} (is another node running? use --fcp-port)")
        })?;
    tracing::info!(
        "Lichen node started; FCP on {}, data in {}",
        listener.local_addr().map_or(fcp_addr, |a| a),
        node.data_dir.display()
    );
    start_network(&node).await?;
    let fcp_front = fcp::Server::new(node.clone());
    let fcp = tokio::spawn(fcp_front.clone().serve(listener));
    fcp_front.resume();
    jobs::push::start(&node);
    tokio::spawn(sample_traffic(node.clone()));
    gateway::start(&node).await?;
    wait_for_signal(&node).await;
    tracing::info!("shutting down");
    node.shutdown.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), fcp).await;
    if let Some(p) = node.peers.get() {
        // The peer list's last `last_seen` times.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), p.stopped()).await;
    }
    let store = node.store.clone();
    let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::warn!("the store could not be flushed at shutdown");
    }
    Ok(())
}

/// Sample the links' traffic every minute until the node stops (the home
/// page's graph of the last hour).
async fn sample_traffic(node: Arc<node::Node>) {
    let every = std::time::Duration::from_millis(status::TrafficHistory::EVERY_MS);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => break,
            _ = tick.tick() => node.sample_traffic(),
        }
    }
}

/// Bind the peer port, start the peer manager (kept in `node.peers`; it
/// reconnects to the peers remembered in `peers.sealed`) and give it, on
/// opennet, the seeds listed in `[network] seeds`: its policy dials them
/// while the node has no peer. A darknet node ignores seeds: it connects
/// only to friends.
async fn start_network(node: &Arc<node::Node>) -> anyhow::Result<()> {
    let net = &node.config.network;
    // Shared with hole punches' dials (`lichen_link::sockets`).
    let listener = lichen_link::sockets::listen(net.listen).with_context(|| {
        format!(
            "cannot listen for peers on {} (is another node running? use --listen)",
            net.listen
        )
    })?;
    let mut addr = listener.local_addr().unwrap_or(net.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    let keys = node.identity.link_keys();
    let noderef = lichen_link::NodeRef::new(&keys, vec![addr], Some(node.identity.location));
    let mut seeds = read_seeds(&net.seeds);
    if net.opennet {
        tracing::info!("peer port {}; {} seed noderef(s)", addr.port(), seeds.len());
    } else {
        tracing::info!("peer port {}; darknet: friends only", addr.port());
        if !seeds.is_empty() {
            tracing::warn!("[network] seeds are not used on a darknet node (opennet = false); add friends with `lichen peers add`");
            seeds.clear();
        }
    }
    let setup = peers::PeerSetup {
        noderef: Some(noderef.to_bytes(&keys).into()),
        keys,
        location: lichen_routing::Location(node.identity.location),
        store: node.store.clone(),
        link: lichen_link::LinkConfig::default(),
        // The node's: `ModifyConfig` changes its limits while it runs.
        bandwidth: node.bandwidth.clone(),
        routing: routing_config(net),
        opennet: net.opennet,
        peer_dir: Some(node.data_dir.clone()),
        vault: node.vault.clone(),
        max_remembered: net.max_peers.saturating_mul(2),
        // Dialed by the peer policy while the node has no peer.
        seeds,
        loopback_sources: net.loopback_sources,
        // Listening on every interface, the node cannot know its address.
        auto_address: net.listen.ip().is_unspecified(),
        // The home router forwards the peer port (tried only behind NAT).
        port_mapping: net
            .port_mapping
            .then(|| std::time::Duration::from_secs(net.port_mapping_lease.max(1))),
        tunnels: lichen_routing::TunnelConfig {
            hops: node.config.anonymity.tunnel_hops,
            // A test network of a few nodes has no hop with 8 other
            // peers to name (docs/tunnels.md, Path selection).
            min_peer_list: if net.test_network {
                0
            } else {
                lichen_routing::TunnelConfig::default().min_peer_list
            },
            ..lichen_routing::TunnelConfig::default()
        },
    };
    let manager = peers::PeerManager::start_with_clock(
        setup,
        listener,
        node.shutdown.clone(),
        node.clock.clone(),
    );
    let _ = node.peers.set(manager);
    Ok(())
}

/// The routing core's settings from `[network]`.
fn routing_config(net: &config::NetworkConfig) -> lichen_routing::Config {
    let mut c = lichen_routing::Config {
        max_peers: net.max_peers,
        opennet: net.opennet,
        swapping: !net.opennet,
        answer_rate: answer_rate(net.upload_limit),
        ..lichen_routing::Config::default()
    };
    if net.test_network {
        tracing::warn!(
            "[network] test_network is on: inserts and requests are kept at every HTL \
             (for a local test network only; it weakens anonymity on a real one)"
        );
    }
    net.set_htl_margins(&mut c);
    c
}

/// Answers from the store (or the failure table) one peer may get per
/// second (the routing core's `answer_rate`, after a burst of
/// `answer_burst`, 256). The core's default, 64, is 2 MiB/s of blocks: a
/// downloader whose peers serve it from their stores could then take at
/// most 2 MiB/s from each once the burst (8 MiB) was spent, 12 MiB/s from
/// six peers, and in the namespace bed's capped fetch the peers carrying
/// the most sat exactly on that line (docs/benchmarks.md, "Capped
/// fetch"). A peer may be answered at [`MIN_ANSWER_RATE`] (4 MiB/s, a
/// home uplink), or at the node's whole upload limit when that is higher:
/// the bandwidth limiter, not the budget, bounds what the node sends in
/// all, and the budget still bounds the reads, decryptions and hashes one
/// peer can ask for.
fn answer_rate(upload_limit: u64) -> u32 {
    let blocks = upload_limit / lichen_crypto::chk::PAYLOAD_LEN as u64;
    u32::try_from(blocks)
        .unwrap_or(u32::MAX)
        .max(MIN_ANSWER_RATE)
}

/// See [`answer_rate`]: 128 blocks of 32 KiB a second.
const MIN_ANSWER_RATE: u32 = 128;

/// The noderefs in the seed files (one per line; blank lines and `#`
/// comments skipped). Unreadable files and bad lines are warned about and
/// skipped.
fn read_seeds(
    files: &[std::path::PathBuf],
) -> Vec<(lichen_link::NodeRef, lichen_routing::NoderefBytes)> {
    let mut out = Vec::new();
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                // File names stay out of logs above debug.
                tracing::warn!("cannot read a seed file: {e}");
                tracing::debug!("the seed file that cannot be read: {}", f.display());
                continue;
            }
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match lichen_link::peerlist::parse_noderef(line) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(
                    "{} line {}: not a noderef: {e}",
                    Sensitive::new(f.display()),
                    i + 1
                ),
            }
        }
    }
    out
}

async fn wait_for_signal(node: &Arc<node::Node>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let term_fut = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term_fut => {}
            () = node.shutdown.cancelled() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = node.shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer may be answered from the store at 4 MiB/s at least (the
    /// routing core's 64 a second held a downloader to 2 MiB/s per peer),
    /// and at the node's whole upload limit when that is higher.
    #[test]
    fn a_peer_may_be_answered_at_4_mib_a_second_or_the_upload_limit() {
        assert!(MIN_ANSWER_RATE > lichen_routing::Config::default().answer_rate);
        assert_eq!(answer_rate(0), 128, "unlimited upload");
        assert_eq!(answer_rate(1 << 20), 128);
        assert_eq!(answer_rate(4 << 20), 128);
        assert_eq!(answer_rate(16 << 20), 512);
        assert_eq!(answer_rate(u64::MAX), u32::MAX);
        let net = config::NetworkConfig {
            upload_limit: 8 << 20,
            ..config::NetworkConfig::default()
        };
        assert_eq!(routing_config(&net).answer_rate, 256);
    }
}
