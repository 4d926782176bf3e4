//! The wire carries no plaintext.
//!
//! Three real nodes: a seed S, an inserting node I and a fetching node B.
//! S's noderef (made with `lichen noderef --listen RELAY`) names a TCP
//! relay in this test, which forwards to the port S really listens on and
//! records every byte both ways; I and B find S through that noderef, so
//! their links to S go through the relay. I inserts a 2 MiB random
//! document (`DontCompress`, so its plaintext would be on the wire as is
//! if blocks were not encrypted) as a CHK, and a small document under a
//! KSK with a known name, while S is its only peer: the blocks cross the
//! relay into S's store. Then B joins (empty store) and fetches both
//! through S, across the relay again. (I's own copies are in its private
//! client cache, which it does not serve, so every block B gets comes
//! from S.)
//!
//! Asserted over the recorded bytes (each direction of each relayed
//! connection searched separately):
//! - traffic really crossed: more bytes than the document, and at least
//!   two relayed connections;
//! - no 32-byte window of the document or of the KSK document (a missing
//!   block encryption would show);
//! - not the CHK's routing key nor the KSK's routing key (both travel in
//!   every Request and Insert: a missing link encryption would show), not
//!   the CHK's or KSK's decryption key, not the URI texts, not the KSK's
//!   name;
//! - every stream is the Noise handshake (length-prefixed, 49 and 64
//!   bytes) followed by whole 512-byte cells (`frame::CELL`) with no
//!   clear length: message sizes do not leak.
//!
//! The search itself is checked first on buffers that do contain a window
//! of the document and a key, so a broken search cannot pass silently.
#![allow(clippy::unwrap_used)]

use lichen_crypto::uri::KeyUri;
use lichen_crypto::FreenetUri;
use lichen_link::frame::CELL;
use lichen_tests::network::{get, put, wait_connected, PEER_TIMEOUT};
use lichen_tests::relay::Relay;
use lichen_tests::{free_port, random_bytes, Testnet};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

const SIZE: usize = 2 << 20;
const KSK_NAME: &str = "lichen-wire-test-keyword-2f9c41";

/// Finds any 32-byte window of a document in other bytes: every such
/// window contains one of the document's 8-byte-aligned chunks, so look
/// those up, then measure the common run around each hit.
struct WindowIndex<'a> {
    doc: &'a [u8],
    chunks: HashMap<[u8; 8], Vec<usize>>,
}

impl<'a> WindowIndex<'a> {
    fn new(doc: &'a [u8]) -> Self {
        let mut chunks: HashMap<[u8; 8], Vec<usize>> = HashMap::new();
        for (i, c) in doc.chunks_exact(8).enumerate() {
            chunks.entry(c.try_into().unwrap()).or_default().push(i * 8);
        }
        WindowIndex { doc, chunks }
    }

    /// Offset in `hay` of a 32-byte window of the document, if any.
    fn find(&self, hay: &[u8]) -> Option<usize> {
        if hay.len() < 8 {
            return None;
        }
        for p in 0..=hay.len() - 8 {
            let Some(offs) = self
                .chunks
                .get(&<[u8; 8]>::try_from(&hay[p..p + 8]).unwrap())
            else {
                continue;
            };
            for &o in offs {
                let mut back = 0;
                while back < p && back < o && hay[p - back - 1] == self.doc[o - back - 1] {
                    back += 1;
                }
                let mut fwd = 8;
                while p + fwd < hay.len()
                    && o + fwd < self.doc.len()
                    && hay[p + fwd] == self.doc[o + fwd]
                {
                    fwd += 1;
                }
                if back + fwd >= 32 {
                    return Some(p - back);
                }
            }
        }
        None
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Check a recorded stream's framing: `handshake` length-prefixed Noise
/// messages of the sizes XK gives (49 with the version byte, 64), then
/// only cells (the last may be cut: the relay may close mid-record).
/// Returns the count of whole cells.
fn check_framing(stream: &[u8], handshake: usize, what: &str) -> usize {
    let mut at = 0;
    for n in 0..handshake {
        let len = usize::from(u16::from_be_bytes([stream[at], stream[at + 1]]));
        assert!(
            len == 49 || len == 64,
            "{what}: handshake message {n} has length {len}"
        );
        at += 2 + len;
    }
    (stream.len() - at) / CELL
}

#[test]
#[allow(clippy::too_many_lines)]
fn the_wire_carries_no_plaintext() {
    let t0 = Instant::now();
    let bin = Path::new(env!("CARGO_BIN_EXE_lichen-it"));
    let dir = tempfile::tempdir().unwrap();

    let doc = random_bytes(SIZE, 0x3172_e000_0001);
    let ksk_doc: Vec<u8> = format!(
        "The keyword document of the wire test: {} end.",
        String::from_utf8(
            random_bytes(96, 7)
                .iter()
                .map(|b| b'a' + b % 26)
                .collect::<Vec<u8>>()
        )
        .unwrap()
    )
    .into_bytes();
    let doc_index = WindowIndex::new(&doc);
    let ksk_index = WindowIndex::new(&ksk_doc);

    // The search finds what it must.
    let mut probe = random_bytes(5000, 99);
    probe[1000..1032].copy_from_slice(&doc[4097..4129]);
    assert_eq!(doc_index.find(&probe), Some(1000));
    assert_eq!(doc_index.find(&random_bytes(100_000, 98)), None);
    let mut probe2 = random_bytes(300, 97);
    probe2[50..82].copy_from_slice(&ksk_doc[3..35]);
    assert_eq!(ksk_index.find(&probe2), Some(50));

    let seed_listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let relay = Relay::start(seed_listen);
    let mut net = Testnet::start_advertising(bin, dir.path(), 2, seed_listen, relay.addr, "");
    net.wait_all_connected();

    let i_fcp = net.nodes[1].fcp;
    let uri = put(i_fcp, "CHK@", &doc, &[("DontCompress", "true")]);
    let ksk_uri = put(i_fcp, &format!("KSK@{KSK_NAME}"), &ksk_doc, &[]);
    let b = net.add("", &[]);
    wait_connected(&net.nodes[b], 1, PEER_TIMEOUT);
    let t = Instant::now();
    let got = get(net.nodes[b].fcp, &uri)
        .unwrap_or_else(|m| panic!("fetch failed: {m:?}\n{}", net.nodes[b].log_text()));
    assert!(got == doc, "the fetched bytes differ");
    assert_eq!(get(net.nodes[b].fcp, &ksk_uri).unwrap(), ksk_doc);
    let fetch_s = t.elapsed().as_secs_f64();
    net.stop();
    // Let the relay's pumps take the last bytes.
    std::thread::sleep(std::time::Duration::from_millis(200));

    // The keys.
    let chk = FreenetUri::parse(&uri).unwrap();
    let KeyUri::Chk {
        routing_key,
        crypto_key,
        ..
    } = chk.key
    else {
        panic!("not a CHK: {uri}")
    };
    let ksk = FreenetUri::parse(&ksk_uri).unwrap();
    let (ksk_pub, docname) = ksk.key.ssk_target().unwrap();
    let ksk_routing = ksk_pub.routing_key(&docname);
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("the CHK's routing key", routing_key.0.to_vec()),
        ("the CHK's decryption key", crypto_key.to_vec()),
        ("the CHK URI", uri.as_bytes().to_vec()),
        ("the CHK URI's key part", uri.as_bytes()[4..40].to_vec()),
        ("the KSK's routing key", ksk_routing.0.to_vec()),
        ("the KSK's decryption key", ksk_pub.crypto_key.to_vec()),
        ("the KSK URI", ksk_uri.as_bytes().to_vec()),
        ("the KSK name", KSK_NAME.as_bytes().to_vec()),
    ];
    // The needle search finds what it must, too.
    let mut probe3 = random_bytes(1000, 96);
    probe3[10..42].copy_from_slice(&routing_key.0);
    assert!(contains(&probe3, &needles[0].1));

    let streams = relay.recorded();
    let total: usize = streams.iter().map(Vec::len).sum();
    eprintln!(
        "relayed connections {}, {total} bytes recorded; fetch {fetch_s:.1} s",
        relay.connections()
    );
    assert!(
        relay.connections() >= 2,
        "I and B must both go through the relay"
    );
    assert!(
        total > SIZE,
        "only {total} bytes crossed the relay: the document did not"
    );
    let mut cells = 0;
    for (k, s) in streams.iter().enumerate() {
        let what = format!(
            "connection {} {}",
            k / 2,
            if k % 2 == 0 {
                "to the seed"
            } else {
                "from the seed"
            }
        );
        if let Some(at) = doc_index.find(s) {
            panic!("{what}: plaintext of the document at byte {at}");
        }
        if let Some(at) = ksk_index.find(s) {
            panic!("{what}: plaintext of the KSK document at byte {at}");
        }
        for (name, needle) in &needles {
            assert!(!contains(s, needle), "{what}: {name} is on the wire");
        }
        // Initiator to responder: XK messages 1 and 3; back: message 2.
        cells += check_framing(s, if k % 2 == 0 { 2 } else { 1 }, &what);
    }
    assert!(cells > SIZE / CELL, "too few cells: {cells}");
    eprintln!(
        "{cells} cells checked; wall time {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
