//! Helpers for the network tests: a loopback network of node processes
//! wired as one opennet through a seed (node 0), FCP shortcuts, random
//! documents.
//!
//! Every wait is bounded and panics with the node's log when it runs out.

use crate::{free_port, Fcp, NodeProc};
use lichen_fcp::codec::Message;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The `[network]` line every node of a test network of a few nodes
/// gets (as `lichen testnet` gives its nodes): keep inserts and requests
/// at every HTL, since a few nodes never take an insert below the caching
/// level.
pub const TEST_NETWORK: &str = "test_network = true\n";

/// The `[anonymity]` table of a node whose own requests leave without
/// tunnels: for the tests of routing itself (what a neighbour sees of a
/// node's own requests without the defence, folding, corrupt blocks, …)
/// and for networks of two or three nodes, too small for a tunnel.
pub const NO_TUNNELS: &str = "[anonymity]\ntunnel_hops = 0\n";

/// The `[anonymity]` table for `hops` tunnel hops.
#[must_use]
pub fn tunnels(hops: u8) -> String {
    format!("[anonymity]\ntunnel_hops = {hops}\n")
}

/// How long a new node may take to find a peer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// `len` pseudo-random bytes (xorshift64*, deterministic per `seed`):
/// incompressible enough for a test document.
#[must_use]
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The noderef text of the node whose data directory is `data_dir`, as
/// `lichen noderef` prints it, naming `listen` as its address (the node
/// need not listen there: a test relay can stand in between). Creates the
/// identity if the directory has none.
///
/// # Panics
/// If the command fails.
#[must_use]
#[allow(clippy::unwrap_used)]
pub fn noderef_text(bin: &Path, data_dir: &Path, listen: SocketAddr) -> String {
    let out = Command::new(bin)
        .arg("noderef")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", &listen.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lichen noderef failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `GetNode WithVolatile=true`.
#[must_use]
pub fn node_data(fcp: SocketAddr) -> Message {
    let mut c = Fcp::connect(fcp, "it-getnode");
    c.send(&Message::new("GetNode").field("WithVolatile", "true"));
    c.until(&["NodeData"]).0
}

/// A numeric field of `GetNode WithVolatile=true` (0 when absent).
#[must_use]
pub fn volatile(fcp: SocketAddr, field: &str) -> u64 {
    node_data(fcp)
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Peers the node has (`volatile.numberOfConnected`).
#[must_use]
pub fn connected(fcp: SocketAddr) -> u64 {
    volatile(fcp, "volatile.numberOfConnected")
}

/// Wait (bounded by `timeout`) until `node` has at least `min` peers.
///
/// # Panics
/// When the time runs out (with the node's log).
pub fn wait_connected(node: &NodeProc, min: u64, timeout: Duration) -> u64 {
    let start = Instant::now();
    loop {
        let n = connected(node.fcp);
        if n >= min {
            return n;
        }
        assert!(
            start.elapsed() < timeout,
            "node has {n} peers, wanted {min}; log:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Insert `data` under `uri` (`CHK@`, `KSK@name`, ...) with extra ClientPut
/// fields; returns the final URI.
///
/// # Panics
/// If the insert fails or is not reported as in the network.
#[must_use]
#[allow(clippy::unwrap_used)]
pub fn put(fcp: SocketAddr, uri: &str, data: &[u8], extra: &[(&str, &str)]) -> String {
    let (done, _) = Fcp::connect(fcp, "it-put").put_direct(uri, "put", data, extra);
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    assert_eq!(done.get("Lichen.InNetwork"), Some("true"), "{done:?}");
    done.get("URI").unwrap().to_string()
}

/// Fetch `uri` (ReturnType direct): the data, or the failure message.
pub fn get(fcp: SocketAddr, uri: &str) -> Result<Vec<u8>, Box<Message>> {
    let mut c = Fcp::connect(fcp, "it-get");
    c.send(
        &Message::new("ClientGet")
            .field("URI", uri)
            .field("Identifier", "get")
            .field("ReturnType", "direct"),
    );
    let (m, _) = c.until(&["AllData", "GetFailed"]);
    if m.name == "AllData" {
        Ok(m.data.unwrap_or_default())
    } else {
        Err(Box::new(m))
    }
}

/// Fetch `uri` with `ReturnType=chunked` and extra ClientGet fields: the
/// data, or the failure message.
///
/// # Panics
/// If the `DataChunk`s are out of order, the first does not give the total
/// length, or `DataFound` does not count the bytes that came.
#[allow(clippy::unwrap_used)]
pub fn get_chunked(
    fcp: SocketAddr,
    uri: &str,
    extra: &[(&str, &str)],
) -> Result<Vec<u8>, Box<Message>> {
    let mut c = Fcp::connect(fcp, "it-get-chunked");
    let mut m = Message::new("ClientGet")
        .field("URI", uri)
        .field("Identifier", "get")
        .field("ReturnType", "chunked");
    for (k, v) in extra {
        m = m.field(*k, *v);
    }
    c.send(&m);
    let mut data = Vec::new();
    let mut total = None;
    loop {
        let (m, _) = c.until(&["DataChunk", "DataFound", "GetFailed"]);
        match m.name.as_str() {
            "DataChunk" => {
                assert_eq!(m.get("Offset"), Some(data.len().to_string().as_str()));
                if data.is_empty() {
                    total = m.get("TotalLength").map(str::to_string);
                    assert!(
                        total.is_some(),
                        "the first DataChunk has no TotalLength: {m:?}"
                    );
                }
                data.extend_from_slice(m.data.as_deref().unwrap_or_default());
            }
            "DataFound" => {
                let len = data.len().to_string();
                assert_eq!(m.get("DataLength"), Some(len.as_str()), "{m:?}");
                assert!(total.is_none() || total.as_deref() == Some(len.as_str()));
                return Ok(data);
            }
            _ => return Err(Box::new(m)),
        }
    }
}

/// A network of node processes on loopback: node 0 is the seed, every
/// other node lists it in `seeds` (`DIR/seeded.toml`, or its own config
/// with extra lines).
#[derive(Debug)]
pub struct Testnet {
    /// The program under test.
    pub bin: PathBuf,
    /// Where the nodes' directories and logs go.
    pub dir: PathBuf,
    /// The seed's noderef file.
    pub seed_file: PathBuf,
    /// The seed's real peer address (its noderef may name another).
    pub seed_listen: SocketAddr,
    /// The nodes, in start order.
    pub nodes: Vec<NodeProc>,
    /// Every node's `[anonymity]` table.
    anonymity: String,
}

impl Testnet {
    /// Start `n` nodes (the seed and `n - 1` seeded nodes) in `dir`.
    ///
    /// # Panics
    /// If a node does not start.
    #[must_use]
    #[allow(clippy::unwrap_used)]
    pub fn start(bin: &Path, dir: &Path, n: usize) -> Self {
        Self::start_with_seed_config(bin, dir, n, "")
    }

    /// As [`Testnet::start`], with `seed_network_extra` in the seed's
    /// `[network]` table (e.g. `max_peers = 3`).
    ///
    /// # Panics
    /// If a node does not start.
    #[must_use]
    #[allow(clippy::unwrap_used)]
    pub fn start_with_seed_config(
        bin: &Path,
        dir: &Path,
        n: usize,
        seed_network_extra: &str,
    ) -> Self {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::start_advertising(bin, dir, n, listen, listen, seed_network_extra)
    }

    /// As [`Testnet::start_with_seed_config`], with the seed listening on
    /// `seed_listen` while its noderef names `advertise` (a relay there
    /// forwards to it).
    ///
    /// # Panics
    /// If a node does not start.
    #[must_use]
    #[allow(clippy::unwrap_used)]
    pub fn start_advertising(
        bin: &Path,
        dir: &Path,
        n: usize,
        seed_listen: SocketAddr,
        advertise: SocketAddr,
        seed_network_extra: &str,
    ) -> Self {
        Self::start_all(
            bin,
            dir,
            n,
            (seed_listen, advertise),
            seed_network_extra,
            NO_TUNNELS,
        )
    }

    /// As [`Testnet::start`], with every node's own requests through
    /// tunnels of `hops` hops (the other constructors turn them off).
    ///
    /// # Panics
    /// If a node does not start.
    #[must_use]
    #[allow(clippy::unwrap_used)]
    pub fn start_tunnelled(bin: &Path, dir: &Path, n: usize, hops: u8) -> Self {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::start_all(bin, dir, n, (listen, listen), "", &tunnels(hops))
    }

    #[allow(clippy::unwrap_used)]
    fn start_all(
        bin: &Path,
        dir: &Path,
        n: usize,
        (seed_listen, advertise): (SocketAddr, SocketAddr),
        seed_network_extra: &str,
        anonymity: &str,
    ) -> Self {
        let seed_dir = dir.join("node-0");
        let text = noderef_text(bin, &seed_dir, advertise);
        let seed_file = dir.join("seed.noderef");
        std::fs::write(&seed_file, text).unwrap();
        // A test network of a few nodes, as `lichen testnet` runs it: an
        // insert never gets below the caching level, so every HTL keeps.
        std::fs::write(
            dir.join("seeded.toml"),
            format!(
                "[network]\n{TEST_NETWORK}seeds = [{:?}]\n{anonymity}",
                seed_file.to_str().unwrap()
            ),
        )
        .unwrap();
        let seed_config = {
            let c = dir.join("seed.toml");
            std::fs::write(
                &c,
                format!("[network]\n{TEST_NETWORK}{seed_network_extra}\n{anonymity}"),
            )
            .unwrap();
            Some(c)
        };
        let seed = NodeProc::start_with_config(
            bin,
            &seed_dir,
            free_port(),
            seed_listen.port(),
            seed_config.as_deref(),
        );
        let mut net = Testnet {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            seed_file,
            seed_listen,
            nodes: vec![seed],
            anonymity: anonymity.to_string(),
        };
        for _ in 1..n {
            net.add("", &[]);
        }
        net
    }

    /// Start one more node seeded by node 0 (and by `more_seeds`), with
    /// `network_extra` appended to its `[network]` table (e.g.
    /// `download_limit = 4194304`). Returns its index.
    ///
    /// # Panics
    /// If the node does not start.
    #[allow(clippy::unwrap_used)]
    pub fn add(&mut self, network_extra: &str, more_seeds: &[&Path]) -> usize {
        let i = self.nodes.len();
        let config = if network_extra.is_empty() && more_seeds.is_empty() {
            self.dir.join("seeded.toml")
        } else {
            let mut seeds = vec![format!("{:?}", self.seed_file.to_str().unwrap())];
            seeds.extend(
                more_seeds
                    .iter()
                    .map(|p| format!("{:?}", p.to_str().unwrap())),
            );
            let c = self.dir.join(format!("node-{i}.toml"));
            std::fs::write(
                &c,
                format!(
                    "[network]\n{TEST_NETWORK}seeds = [{}]\n{network_extra}\n{}",
                    seeds.join(", "),
                    self.anonymity
                ),
            )
            .unwrap();
            c
        };
        self.nodes.push(NodeProc::start_with_config(
            &self.bin,
            &self.dir.join(format!("node-{i}")),
            free_port(),
            free_port(),
            Some(&config),
        ));
        i
    }

    /// Wait until every running node has a peer.
    ///
    /// # Panics
    /// When [`PEER_TIMEOUT`] runs out.
    pub fn wait_all_connected(&self) {
        for n in &self.nodes {
            wait_connected(n, 1, PEER_TIMEOUT);
        }
    }

    /// Stop every node (SIGTERM, bounded).
    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            n.terminate();
        }
    }
}
