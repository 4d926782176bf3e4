//! Path folding on real processes: a node's own fetch adds no peer to it,
//! while traffic it forwards still folds (issue 15, section 3).
//!
//! One real node D and fake peers (real Noise links, `lichen_link`): S, a
//! store that serves two blocks and follows each with a `FoldOffer`; A, a
//! neighbour that sends D a request of its own; F_own and F_fwd, the
//! nodes S's offers name. D is seeded by S and A only.
//!
//! 1. D's user fetches block 1 through FCP: S serves it and offers F_own.
//!    D must never dial F_own (its own request: no data source gets a
//!    link to the requester).
//! 2. A sends D a request for block 2 at HTL 10 (below the caching level,
//!    where Hyphanet folds): D forwards it to S, S serves it and offers
//!    F_fwd. D must dial F_fwd (after its random fold delay, below 20 s)
//!    and pass a fold offer on to A.
//!
//! F_own is checked again after 21 s from the own fetch: longer than any
//! fold delay.
#![allow(clippy::unwrap_used)]

use lichen_crypto::{chk, DataFlags, FreenetUri};
use lichen_routing::{Key, KeyKind, Message};
use lichen_tests::fake_peer::{Behaviour, FakePeer};
use lichen_tests::network::{connected, get, wait_connected, PEER_TIMEOUT};
use lichen_tests::{free_port, random_bytes, NodeProc};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest fold delay (`lichen_routing::Config::fold_delay_max`), with a
/// margin.
const FOLD_WAIT: Duration = Duration::from_secs(21);

fn block(seed: u64) -> (FreenetUri, [u8; 32], Vec<u8>, Vec<u8>) {
    let data = random_bytes(2000, seed);
    let (key, block) = chk::encode(&data, DataFlags::default()).unwrap();
    (FreenetUri::from(&key), key.routing_key.0, block, data)
}

#[test]
fn own_fetches_take_no_fold_offer_and_forwarded_requests_still_fold() {
    let t0 = Instant::now();
    let bin = Path::new(env!("CARGO_BIN_EXE_lichen-it"));
    let dir = tempfile::tempdir().unwrap();
    let s = FakePeer::start(Behaviour::Store, 0xf01d_0001);
    let a = FakePeer::start(Behaviour::Store, 0xf01d_0002);
    let f_own = FakePeer::start(Behaviour::Store, 0xf01d_0003);
    let f_fwd = FakePeer::start(Behaviour::Store, 0xf01d_0004);
    let (s_file, a_file) = (dir.path().join("s.noderef"), dir.path().join("a.noderef"));
    s.write_noderef(&s_file);
    a.write_noderef(&a_file);
    // No test_network: folding at the caching level (16) as configured on
    // a real network.
    let config = dir.path().join("d.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nseeds = [{:?}, {:?}]\n{}",
            s_file.to_str().unwrap(),
            a_file.to_str().unwrap(),
            lichen_tests::network::NO_TUNNELS
        ),
    )
    .unwrap();
    let mut d = NodeProc::start_with_config(
        bin,
        &dir.path().join("d"),
        free_port(),
        free_port(),
        Some(&config),
    );
    wait_connected(&d, 2, PEER_TIMEOUT);

    // 1. D's own fetch; S offers F_own.
    let (uri_own, key_own, block_own, data_own) = block(1);
    s.hold(key_own, block_own);
    s.offer_folds(Some(f_own.routing_noderef()));
    assert_eq!(get(d.fcp, &uri_own.to_string()).unwrap(), data_own);
    let own_done = Instant::now();
    let offered = s
        .received()
        .iter()
        .filter(|r| matches!(&r.msg, Message::Request { key, .. } if key.0 == key_own))
        .count();
    assert!(offered >= 1, "S was not asked for the own block");

    // 2. A forwarded request through D; S offers F_fwd.
    let (_, key_fwd, block_fwd, _) = block(2);
    s.hold(key_fwd, block_fwd);
    s.offer_folds(Some(f_fwd.routing_noderef()));
    let d_key = a.linked();
    assert_eq!(d_key.len(), 1, "A should be linked to D only");
    let id = 0x5eed_f01d_u64;
    assert!(a.send(
        d_key[0],
        Message::Request {
            id,
            key: Key(key_fwd),
            htl: 10,
            kind: KeyKind::Chk,
        }
    ));
    let deadline = Instant::now() + FOLD_WAIT + Duration::from_secs(5);
    while f_fwd.links().1 == 0 {
        assert!(
            Instant::now() < deadline,
            "D did not fold on a forwarded request; A got {:?}; log:\n{}",
            a.received()
                .iter()
                .map(|r| r.msg.name())
                .collect::<Vec<_>>(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let to_a: Vec<&'static str> = a
        .received()
        .iter()
        .filter(|r| r.msg.id() == Some(id))
        .map(|r| r.msg.name())
        .collect();
    assert!(to_a.contains(&"DataFound"), "{to_a:?}");
    assert!(
        to_a.contains(&"FoldOffer"),
        "D passed no offer on: {to_a:?}"
    );

    // The own fetch's offer, past any fold delay: never taken.
    if let Some(left) = FOLD_WAIT.checked_sub(own_done.elapsed()) {
        std::thread::sleep(left);
    }
    assert_eq!(
        f_own.links().1,
        0,
        "D dialed the node offered on its own fetch"
    );
    assert_eq!(connected(d.fcp), 3, "D: S, A and F_fwd");
    d.terminate();
    eprintln!("fold test: {:.1} s", t0.elapsed().as_secs_f64());
}
