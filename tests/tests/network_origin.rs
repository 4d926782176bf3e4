//! The requester's identity is in no message.
//!
//! Two real nodes, M and N, each with a fake peer F (built from
//! `lichen_link`, real Noise XK links) as its only peer and seed. F
//! is an honest but isolated store: it keeps every valid inserted block,
//! serves it, and answers `RouteNotFound` otherwise; it logs every routing
//! message it receives, decoded. Through FCP, M inserts a CHK document and
//! a KSK document; N inserts a CHK document and a KSK document of its own,
//! fetches M's two documents (F serves them: the bytes must be equal) and
//! asks for a KSK nobody inserted. So F sees each node's own fetches and
//! inserts, as their originator's only neighbour.
//!
//! # The rule asserted
//!
//! For each node R in {M, N} and every message F received from R:
//! - Only `LocationChanged` (the link hello: the neighbour knows R anyway),
//!   `Noderef` (R introducing itself, once, to the node it dialed: its own
//!   noderef and nothing else, tied to no request) and `Announce`
//!   (opennet's announcement of R itself, by design not anonymous and tied
//!   to no request) may carry R's location or noderef.
//!   Darknet swap messages would be the other such messages; this is an
//!   opennet, and F asks nothing, so R has no reason to send F anything
//!   but `LocationChanged`, `Noderef`, `Announce`, `Request` and `Insert` (a
//!   `FoldOffer` travels only toward a requester): the test asserts that.
//! - No other message contains, anywhere in its CBOR encoding, R's X25519
//!   static key, its Ed25519 identity key, its noderef (binary or text),
//!   its address `127.0.0.1:PORT`, or its location (8 bytes, either byte
//!   order).
//! - `Request` and `Insert` have the HTL at the maximum (18): the
//!   originator sends exactly what a forwarder that kept the HTL sends, so
//!   the HTL does not mark it as the origin. (R has one peer, so it
//!   forwards nothing: every such message is R's own.)
//! - An `Insert`'s block verifies against its key, so it has no room for
//!   anything else; a `Request` has no field but id, key, HTL and kind.
//! - Ids are random: all distinct, and no two within 2^20 of each other
//!   (a counter would link a node's requests together).
#![allow(clippy::unwrap_used)]

use lichen_fcp::codec::Message as Fcp;
use lichen_link::NodeRef;
use lichen_routing::Message;
use lichen_tests::fake_peer::{block_valid, Behaviour, FakePeer};
use lichen_tests::network::{connected, get, noderef_text, put, wait_connected, PEER_TIMEOUT};
use lichen_tests::{free_port, random_bytes, NodeProc};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

const MAX_HTL: u8 = 18;

/// What identifies a node.
struct Ident {
    name: &'static str,
    noderef: NodeRef,
    text: String,
    addr: SocketAddr,
    location: u64,
}

impl Ident {
    fn needles(&self) -> Vec<(String, Vec<u8>)> {
        let bin = lichen_crypto::b64::decode(
            self.text
                .trim()
                .strip_prefix(lichen_link::noderef::PREFIX)
                .unwrap(),
        )
        .unwrap();
        vec![
            ("static key".into(), self.noderef.static_key.to_vec()),
            ("identity key".into(), self.noderef.identity_key.to_vec()),
            ("noderef".into(), bin),
            ("noderef text".into(), self.text.trim().as_bytes().to_vec()),
            ("address".into(), self.addr.to_string().into_bytes()),
            ("location (BE)".into(), self.location.to_be_bytes().to_vec()),
            ("location (LE)".into(), self.location.to_le_bytes().to_vec()),
        ]
    }
}

/// The message's bytes as the link encodes them (serde + CBOR).
fn cbor(m: &Message) -> Vec<u8> {
    lichen_link::frame::encode(&lichen_link::LinkMessage::Routing(m.clone()))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn start_node(bin: &Path, dir: &Path, name: &'static str, config: &Path) -> (NodeProc, Ident) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let data = dir.join(name);
    let text = noderef_text(bin, &data, addr);
    let noderef = NodeRef::parse(&text).unwrap();
    let node = NodeProc::start_with_config(bin, &data, free_port(), port, Some(config));
    let location = noderef.location.unwrap();
    (
        node,
        Ident {
            name,
            noderef,
            text,
            addr,
            location,
        },
    )
}

#[test]
#[allow(clippy::too_many_lines)]
fn no_message_names_the_originator() {
    let t0 = Instant::now();
    let bin = Path::new(env!("CARGO_BIN_EXE_lichen-it"));
    let dir = tempfile::tempdir().unwrap();
    let fake = FakePeer::start(Behaviour::Store, 0x0419_1a70);
    let fake_file = dir.path().join("fake.noderef");
    fake.write_noderef(&fake_file);
    let config = dir.path().join("fake-seeded.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nseeds = [{:?}]\n{}",
            fake_file.to_str().unwrap(),
            lichen_tests::network::NO_TUNNELS
        ),
    )
    .unwrap();
    let (mut m, m_id) = start_node(bin, dir.path(), "m", &config);
    let (mut n, n_id) = start_node(bin, dir.path(), "n", &config);
    wait_connected(&m, 1, PEER_TIMEOUT);
    wait_connected(&n, 1, PEER_TIMEOUT);

    // M inserts; N inserts its own, fetches M's, and misses once.
    let doc_m = random_bytes(300 << 10, 0x6d);
    let uri_m = put(m.fcp, "CHK@", &doc_m, &[]);
    let ksk_m = b"a small keyword document from M".to_vec();
    let ksk_uri_m = put(m.fcp, "KSK@origin-test-from-m", &ksk_m, &[]);
    let doc_n = random_bytes(200 << 10, 0x6e);
    let _ = put(n.fcp, "CHK@", &doc_n, &[]);
    let _ = put(
        n.fcp,
        "KSK@origin-test-from-n",
        b"N's keyword document",
        &[],
    );
    assert!(get(n.fcp, &uri_m).unwrap() == doc_m, "N got other bytes");
    assert_eq!(get(n.fcp, &ksk_uri_m).unwrap(), ksk_m);
    let miss: Result<Vec<u8>, Box<Fcp>> = get(n.fcp, "KSK@origin-test-nobody-inserted-this");
    assert!(miss.is_err(), "a KSK nobody inserted was found");
    assert_eq!(connected(m.fcp), 1, "M must have F as its only peer");
    assert_eq!(connected(n.fcp), 1, "N must have F as its only peer");
    assert_eq!(fake.bad_inserts(), 0);

    let log = fake.received();
    let idents = [&m_id, &n_id];
    let mut by_kind: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut ids: Vec<u64> = Vec::new();
    let mut headers = std::collections::HashMap::new();
    for r in &log {
        let who = idents
            .iter()
            .find(|i| i.noderef.static_key == r.from)
            .unwrap_or_else(|| panic!("a message from an unknown node: {:?}", r.msg.name()));
        *by_kind.entry((who.name, r.msg.name())).or_default() += 1;
        match &r.msg {
            // The hello and the node's own announcement carry its location
            // (and noderef) by design.
            Message::LocationChanged { location } => {
                assert_eq!(location.0, who.location, "{}: hello", who.name);
                continue;
            }
            Message::Noderef { noderef } => {
                let r = NodeRef::from_bytes(noderef).unwrap();
                assert_eq!(
                    r.static_key, who.noderef.static_key,
                    "{}: introduces only itself",
                    who.name
                );
                assert_eq!(
                    by_kind[&(who.name, "Noderef")],
                    1,
                    "{}: one introduction per link",
                    who.name
                );
                continue;
            }
            // Link level, never routed: "dial me back on my port" (the
            // port of the address this neighbour already has; docs/wire.md).
            // And "introduce me to a node I cannot dial" / "I dial it
            // now" (hole punching): the node's own port, and the key of a
            // node it wants a direct link to (docs/wire.md).
            Message::DialBack { port }
            | Message::PunchAsk { port, .. }
            | Message::PunchReady { port, .. } => {
                assert!(
                    who.noderef.addresses.iter().any(|a| a.port() == *port),
                    "{}: a dial-back or punch names its own port only",
                    who.name
                );
                continue;
            }
            Message::Announce { noderef, .. } => {
                assert_eq!(noderef.location.0, who.location, "{}: announce", who.name);
                // The search finds what the announcement names: it would
                // find it in any other message too.
                let enc = cbor(&r.msg);
                for (what, needle) in who.needles() {
                    if what != "noderef text" && what != "location (LE)" {
                        assert!(contains(&enc, &needle), "{}: {what} not found", who.name);
                    }
                }
                continue;
            }
            Message::Request { id, htl, .. } => {
                assert_eq!(
                    *htl, MAX_HTL,
                    "{}: a request left below the maximum HTL",
                    who.name
                );
                ids.push(*id);
            }
            Message::Insert { id, htl, key, kind } => {
                assert_eq!(
                    *htl, MAX_HTL,
                    "{}: an insert left below the maximum HTL",
                    who.name
                );
                headers.insert(*id, (*key, *kind));
                ids.push(*id);
            }
            Message::InsertData { id, block } => {
                let (key, kind) = headers
                    .get(id)
                    .unwrap_or_else(|| panic!("{}: insert data before its header", who.name));
                assert!(block_valid(key, *kind, block), "{}: insert block", who.name);
            }
            other => panic!(
                "{}: F asked nothing, yet got {}: {other:?}",
                who.name,
                other.name()
            ),
        }
        let enc = cbor(&r.msg);
        for i in idents {
            for (what, needle) in i.needles() {
                assert!(
                    !contains(&enc, &needle),
                    "{}'s {} names {}'s {what}",
                    who.name,
                    r.msg.name(),
                    i.name
                );
            }
        }
    }
    eprintln!("messages F received: {by_kind:?}");
    for (who, kind) in [("m", "Insert"), ("n", "Insert"), ("n", "Request")] {
        assert!(
            by_kind.get(&(who, kind)).copied().unwrap_or(0) > 0,
            "F saw no {kind} from {who}: nothing was tested"
        );
    }
    ids.sort_unstable();
    for w in ids.windows(2) {
        assert!(
            w[1] - w[0] >= 1 << 20,
            "request ids {} and {} are too close: not random",
            w[0],
            w[1]
        );
    }
    m.terminate();
    n.terminate();
    eprintln!(
        "{} messages checked; wall time {:.1} s",
        log.len(),
        t0.elapsed().as_secs_f64()
    );
}
