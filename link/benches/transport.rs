//! Link throughput without sockets: an established transport pair seals
//! and opens messages in memory. Prints MiB/s of CHK blocks (the bulk of
//! link traffic) and small messages per second. No harness: run with
//! `cargo bench -p lichen-link --bench transport`.

use lichen_link::handshake::run_in_memory;
use lichen_link::{Handshake, LinkMessage, NodeKeys, Opened, RekeyPolicy, Transport};
use lichen_routing::{Key, KeyKind, Message};
use std::time::Instant;

fn pair() -> (Transport, Transport) {
    let a = NodeKeys::from_static_secret([1; 32]);
    let b = NodeKeys::from_static_secret([2; 32]);
    let mut i = Handshake::initiator(&a, &b.static_public()).expect("initiator");
    let mut r = Handshake::responder(&b).expect("responder");
    run_in_memory(&mut i, &mut r).expect("handshake");
    let (ti, _) = i.finish(RekeyPolicy::default()).expect("finish");
    let (tr, _) = r.finish(RekeyPolicy::default()).expect("finish");
    (ti, tr)
}

/// Seal `n` copies of `msg` in batches (as the link writer does), open
/// them all; returns (seconds, wire bytes).
fn run(msg: &LinkMessage, n: usize) -> (f64, usize) {
    let (mut a, mut b) = pair();
    let mut wire = Vec::new();
    let mut total = 0;
    let start = Instant::now();
    for _ in 0..n / 8 {
        wire.clear();
        for _ in 0..8 {
            a.seal_into(msg, &mut wire).expect("seal");
        }
        total += wire.len();
        let mut at = 0;
        while let Some((k, o)) = b.open(&wire[at..]).expect("open") {
            at += k;
            assert!(matches!(o, Opened::Message(_)));
        }
        assert_eq!(at, wire.len());
    }
    (start.elapsed().as_secs_f64(), total)
}

fn main() {
    let block = LinkMessage::Routing(Message::DataFound {
        id: 7,
        block: vec![0x5a; 32786],
    });
    let small = LinkMessage::Routing(Message::Request {
        id: 7,
        key: Key([3; 32]),
        htl: 17,
        kind: KeyKind::Chk,
    });
    for round in 0..3 {
        let n = 4096;
        let (s, wire) = run(&block, n);
        let payload = (n * 32786) as f64 / f64::from(1 << 20);
        println!(
            "round {round}: CHK blocks: {:.0} MiB/s of blocks, {:.1} % wire overhead",
            payload / s,
            100.0 * (wire as f64 / (n * 32786) as f64 - 1.0)
        );
        let n = 200_000;
        let (s, wire) = run(&small, n);
        println!(
            "round {round}: requests: {:.0} k messages/s, {} wire bytes each",
            n as f64 / s / 1000.0,
            wire / n
        );
    }
}
