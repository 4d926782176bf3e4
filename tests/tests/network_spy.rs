//! A spy among a downloader's neighbours (issue 15, section 3): what a
//! hostile neighbour that logs every message learns from (a) its
//! neighbour downloading a 20 MiB file and (b) the same neighbour relaying
//! somebody else's download of it, with the classifier of Levine et al.
//! (CCS 2020) run on its log.
//!
//! A testnet of four nodes (the seed and three more) holds two 20 MiB
//! documents inserted on node 1. Then D joins, seeded by the seed and by
//! the spy S (a fake peer on real Noise links that answers every request
//! `RouteNotFound` and logs what it receives), and R joins, seeded by the
//! seed and by D. (a) D fetches the first document; (b) R fetches the
//! second, so D relays those of R's requests that it gets.
//!
//! The spy knows the file (the test computes its block keys by inserting
//! the same bytes into memory: CHKs are convergent). For each case it
//! counts the requests for the file's blocks that D sent it at the two
//! highest HTLs, and runs the rule of `lichen_sim::posterior` with D's
//! degree g (p = 1/g for a downloader, 1/g² for a relayer, t = the file's
//! data blocks).
//!
//! # What is asserted (what the fixes guarantee)
//! - D's own requests reach the spy at HTL 18, what a forwarder that kept
//!   the HTL sends (the requests D relays reach it at 18 or 17, drawn
//!   once per upstream link; printed).
//! - D's own requests do not arrive in file order: the rank correlation
//!   of the blocks' positions with their arrival order is below 0.6 when
//!   the spy saw 30 or more (0.64 to 0.80 when segments were fetched a
//!   few at a time in file order).
//! - Request ids are all distinct (no counter links them).
//! - The spy gets requests from D downloading (it is a real neighbour).
//!
//! Not asserted: whether the classifier accuses D. Without tunnels (issue
//! 16) a downloader's neighbour still sees about 1/g of its requests at
//! HTL 18, so it usually does in (a); the figures are printed and
//! recorded in `docs/anonymity.md`.
#![allow(clippy::unwrap_used)]

use lichen_client::metadata::Metadata;
use lichen_client::{FetchOptions, InsertOptions, MemoryBlocks};
use lichen_routing::{KeyKind, Message};
use lichen_tests::fake_peer::{Behaviour, FakePeer, Received};
use lichen_tests::network::{
    connected, get_chunked, noderef_text, put, tunnels, volatile, wait_connected, Testnet,
    PEER_TIMEOUT, TEST_NETWORK,
};
use lichen_tests::{free_port, random_bytes, NodeProc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

const SIZE: usize = 20 << 20;

/// The file's block keys → position (segment by segment, data blocks
/// then check blocks), and its data block count, from the same bytes
/// inserted into memory; `uri` must come out the same.
fn file_blocks(body: &[u8], uri: &str) -> (HashMap<[u8; 32], usize>, usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mem = MemoryBlocks::new();
        let r = lichen_client::insert(&mem, body, &InsertOptions::default())
            .await
            .unwrap();
        assert_eq!(r.uri.to_string(), uri, "the node inserted other blocks");
        let Some(Metadata::Splitfile(sf)) =
            lichen_client::fetch_metadata(&mem, &r.uri, &FetchOptions::default())
                .await
                .unwrap()
        else {
            panic!("expected a splitfile")
        };
        let mut at = HashMap::new();
        for seg in &sf.segments {
            for i in 0..seg.total() {
                let n = at.len();
                at.insert(seg.key(i).unwrap().routing_key.0, n);
            }
        }
        (at, usize::try_from(sf.block_counts().0).unwrap())
    })
}

/// Spearman's rank correlation of `xs` (distinct) with their order.
fn rank_correlation(xs: &[usize]) -> f64 {
    let n = xs.len() as f64;
    let mut sorted: Vec<(usize, usize)> = xs.iter().copied().zip(0..).collect();
    sorted.sort_unstable();
    let d2: f64 = sorted
        .iter()
        .enumerate()
        .map(|(rank, &(_, at))| (rank as f64 - at as f64).powi(2))
        .sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

/// What the spy saw of one case.
struct Seen {
    /// File positions of the requests for the file's blocks, in arrival
    /// order (first request per block).
    positions: Vec<usize>,
    /// Their HTLs: how many at each.
    htls: BTreeMap<u8, usize>,
    /// Requests at the two highest HTLs (Levine's count).
    high: usize,
    ids: Vec<u64>,
}

fn seen(log: &[Received], from: [u8; 32], at: &HashMap<[u8; 32], usize>) -> Seen {
    let mut s = Seen {
        positions: Vec::new(),
        htls: BTreeMap::new(),
        high: 0,
        ids: Vec::new(),
    };
    let mut first = BTreeSet::new();
    for r in log.iter().filter(|r| r.from == from) {
        let Message::Request {
            id,
            key,
            htl,
            kind: KeyKind::Chk,
        } = &r.msg
        else {
            continue;
        };
        let Some(&p) = at.get(&key.0) else {
            continue;
        };
        *s.htls.entry(*htl).or_default() += 1;
        s.ids.push(*id);
        if *htl >= 17 {
            s.high += 1;
        }
        if first.insert(p) {
            s.positions.push(p);
        }
    }
    s
}

/// `node` fetches `uri` (the bytes must be `body`); what the spy received
/// during the fetch. One retry, as a user would (and as `testnet.rs`
/// does): in a network of six nodes a fetch sometimes ends in "not enough
/// blocks" (2 to 3 runs in 20); only the attempt that succeeded counts.
fn fetch(spy: &FakePeer, node: &NodeProc, uri: &str, body: &[u8]) -> Vec<Received> {
    for attempt in 0..2 {
        let before = spy.received().len();
        match get_chunked(node.fcp, uri, &[]) {
            Ok(got) => {
                assert!(got == body, "other bytes");
                return spy.received().split_off(before);
            }
            Err(m) if attempt == 0 => eprintln!("fetch failed, once: {m:?}"),
            Err(m) => panic!("fetch failed twice: {m:?}; log:\n{}", node.log_text()),
        }
    }
    unreachable!()
}

fn start(
    bin: &Path,
    dir: &Path,
    name: &str,
    seeds: &[&Path],
    anonymity: &str,
) -> (NodeProc, std::path::PathBuf) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let data = dir.join(name);
    let file = dir.join(format!("{name}.noderef"));
    std::fs::write(&file, noderef_text(bin, &data, addr)).unwrap();
    let config = dir.join(format!("{name}.toml"));
    let seeds: Vec<String> = seeds
        .iter()
        .map(|p| format!("{:?}", p.to_str().unwrap()))
        .collect();
    std::fs::write(
        &config,
        format!(
            "[network]\n{TEST_NETWORK}seeds = [{}]\n{anonymity}",
            seeds.join(", "),
        ),
    )
    .unwrap();
    (
        NodeProc::start_with_config(bin, &data, free_port(), port, Some(&config)),
        file,
    )
}

/// What one run of the scenario gave.
struct Run {
    own: Seen,
    relayed: Seen,
    /// The classifier's posterior that D downloads, in (a) and (b).
    posteriors: (f64, f64),
    /// The file's data blocks in (a).
    t: usize,
    /// D's tunnel counters after (a): own requests through tunnels, and
    /// sent directly.
    d_tunnels: (u64, u64),
}

/// The scenario of the module doc, every node with tunnels of `hops`
/// hops (0: none).
#[allow(clippy::too_many_lines)] // One scenario, step by step.
fn scenario(hops: u8) -> Run {
    let t0 = Instant::now();
    let bin = Path::new(env!("CARGO_BIN_EXE_lichen-it"));
    let dir = tempfile::tempdir().unwrap();
    let anonymity = tunnels(hops);
    let mut net = Testnet::start_tunnelled(bin, dir.path(), 4, hops);
    net.wait_all_connected();
    let body = random_bytes(SIZE, 0x5b1e_d0c5);
    let uri = put(net.nodes[1].fcp, "CHK@", &body, &[]);
    let (at, t) = file_blocks(&body, &uri);
    let body_b = random_bytes(SIZE, 0x5b1e_d0c6);
    let uri_b = put(net.nodes[1].fcp, "CHK@", &body_b, &[]);
    let (at_b, t_b) = file_blocks(&body_b, &uri_b);
    let inserted = t0.elapsed().as_secs_f64();

    let spy = FakePeer::start(Behaviour::Store, 0x5b1e_0001);
    let spy_file = dir.path().join("spy.noderef");
    spy.write_noderef(&spy_file);
    let (mut d, d_file) = start(
        bin,
        dir.path(),
        "d",
        &[&net.seed_file, &spy_file],
        &anonymity,
    );
    let (mut r, _) = start(bin, dir.path(), "r", &[&net.seed_file, &d_file], &anonymity);
    wait_connected(&d, 3, PEER_TIMEOUT);
    wait_connected(&r, 2, PEER_TIMEOUT);
    let d_key = lichen_link::NodeRef::parse(&std::fs::read_to_string(&d_file).unwrap())
        .unwrap()
        .static_key;
    assert!(
        spy.linked().contains(&d_key),
        "D is not the spy's neighbour"
    );
    // Let the peers take D's and R's hellos too (a fetch started right as
    // a new node's links come up can end in RouteNotFound: see
    // `testnet.rs`).
    std::thread::sleep(std::time::Duration::from_secs(2));

    // (a) D downloads.
    let g_a = connected(d.fcp);
    let own = seen(&fetch(&spy, &d, &uri, &body), d_key, &at);
    let d_tunnels = (
        volatile(d.fcp, "volatile.lichen.tunnelOwnSent"),
        volatile(d.fcp, "volatile.lichen.tunnelOwnDirect"),
    );
    // (b) R downloads; D relays what R sends it.
    let g_b = connected(d.fcp);
    let relayed = seen(&fetch(&spy, &r, &uri_b, &body_b), d_key, &at_b);
    if hops > 0 {
        // Where the tunnels' time went (GetNode: every tunnel counter).
        for (name, n) in [("D", &d), ("R", &r)] {
            let data = lichen_tests::network::node_data(n.fcp);
            let counters: Vec<String> = data
                .fields
                .iter()
                .filter(|(k, v)| k.starts_with("volatile.lichen.tunnel") && *v != "0")
                .map(|(k, v)| format!("{}={v}", &k["volatile.lichen.tunnel".len()..]))
                .collect();
            eprintln!("tunnels of {name}: {}", counters.join(" "));
        }
    }

    let posterior = |high: usize, t: usize, g: u64| {
        let g = g.max(2) as f64;
        lichen_sim::posterior(high as f64, t as f64, 1.0 / g, 1.0 / (g * g))
    };
    let (p_a, p_b) = (
        posterior(own.high, t, g_a),
        posterior(relayed.high, t_b, g_b),
    );
    let rho = rank_correlation(&own.positions);
    eprintln!(
        "spy: (a) D downloading: {} of {t} blocks seen at HTL {:?} ({} at 17-18), \
         D has {g_a} peers, posterior {p_a:.3} (accused: {}), rank correlation with file order {rho:.3}",
        own.positions.len(),
        own.htls,
        own.high,
        p_a >= lichen_sim::THRESHOLD
    );
    eprintln!(
        "spy: (b) D relaying R's download: {} blocks seen at HTL {:?} ({} at 17-18), \
         D has {g_b} peers, R {}, posterior {p_b:.3} (accused: {}); inserted after {inserted:.1} s, all done after {:.1} s",
        relayed.positions.len(),
        relayed.htls,
        relayed.high,
        connected(r.fcp),
        p_b >= lichen_sim::THRESHOLD,
        t0.elapsed().as_secs_f64()
    );

    d.terminate();
    r.terminate();
    net.stop();
    Run {
        own,
        relayed,
        posteriors: (p_a, p_b),
        t,
        d_tunnels,
    }
}

#[test]
fn a_spy_neighbour_of_a_downloader_and_of_a_relayer() {
    let Run {
        own,
        relayed,
        d_tunnels,
        ..
    } = scenario(0);
    assert_eq!(d_tunnels.0, 0, "tunnels are off");
    let rho = rank_correlation(&own.positions);
    // The spy is a real neighbour of the downloader. (How many of D's
    // requests it gets depends on the locations of D's other peers, and
    // whether D relays any of R's to it on the peers R got: printed.)
    assert!(
        !own.positions.is_empty(),
        "the spy saw none of D's requests"
    );
    // Own requests leave at 18, as a forwarder that kept the HTL sends
    // them (relayed ones come at 18 or 17 from each upstream link: the
    // decrement at 18 is drawn once per link). One that a peer answered
    // with RouteNotFound goes on at the lower HTL that answer left, as a
    // forwarded one does; in a network this small that is common (one
    // run: 124 at 17, 109 at 18), so only the first part is asserted:
    // some arrive at 18, none above.
    assert!(
        own.htls.contains_key(&18) && own.htls.keys().all(|&h| h <= 18),
        "own requests at {:?} (HTL: requests)",
        own.htls
    );
    // Not in file order. Segments in a uniformly random order give a
    // correlation of about N(0, 0.23) over 20 segments, so this fails
    // about once in 200 runs by chance; segments fetched a few at a time
    // in file order gave 0.64 to 0.80 here. Judged on 30 blocks or more.
    if own.positions.len() >= 30 {
        assert!(
            rho < 0.6,
            "D's requests reach the spy in file order: {rho:.3}"
        );
    }
    // Distinct random ids.
    let mut ids = own.ids.clone();
    ids.extend(&relayed.ids);
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "a request id repeated");
}

/// (a) and (b) again with every node's own requests through tunnels of
/// two hops (issue 16): D's own requests never reach the spy (or any
/// neighbour) as requests, only as cells of the tunnels they leave
/// through; what the spy gets from D in (a) are requests D relays for
/// other nodes (exits), as in (b). Asserted: every own request of D went
/// through a tunnel (D's counters). The spy's counts and the
/// classifier's posteriors for (a) and (b) are printed (figures over
/// repeated runs in `docs/anonymity.md`).
#[test]
fn with_tunnels_a_spy_sees_a_downloader_only_relay() {
    let run = scenario(2);
    let (sent, direct) = run.d_tunnels;
    eprintln!(
        "with tunnels: D sent {sent} own requests through tunnels, {direct} directly; \
         spy posteriors (a) {:.3} (b) {:.3}",
        run.posteriors.0, run.posteriors.1
    );
    assert_eq!(direct, 0, "D sent own requests without a tunnel");
    assert!(
        sent >= u64::try_from(run.t).unwrap(),
        "only {sent} own requests through tunnels for {} blocks",
        run.t
    );
}
