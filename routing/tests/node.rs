//! Unit tests of the routing state machine through its public API.
#![allow(clippy::unwrap_used)]

use lichen_routing::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

type V = fn(&Key, KeyKind, &[u8]) -> bool;

fn sha_verify(key: &Key, _kind: KeyKind, block: &[u8]) -> bool {
    Sha256::digest(block).as_slice() == key.0
}

fn block(n: u8) -> (Key, Vec<u8>) {
    let b = vec![n; 32];
    let k = Key(Sha256::digest(&b).into());
    (k, b)
}

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(7)
}

/// A node at location 0 with peers 1..=n at locations i * 2^60.
fn node(n: u64, cfg: Config) -> (Node<V>, ChaCha8Rng) {
    let mut r = rng();
    let mut node = Node::new(cfg, Location(0), sha_verify as V);
    for i in 1..=n {
        node.add_peer(0, PeerId(i), Location(i << 60), &mut r);
    }
    (node, r)
}

fn drain(n: &mut Node<V>) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

fn sends(actions: &[Action]) -> Vec<(PeerId, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

/// A key whose location is `loc` (the verifier is not involved).
fn key_at(loc: u64) -> Key {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&loc.to_be_bytes());
    Key(k)
}

/// An insert from a peer as the wire carries it: the header, then (after
/// our `Accepted`) the block.
fn send_insert(
    n: &mut Node<V>,
    now: u64,
    from: PeerId,
    (id, key, htl, kind): (u64, Key, u8, KeyKind),
    block: Vec<u8>,
    store: &mut impl BlockSource,
    r: &mut ChaCha8Rng,
) {
    n.handle_message(now, from, Message::Insert { id, key, htl, kind }, store, r);
    n.handle_message(now, from, Message::InsertData { id, block }, store, r);
}

fn forwarded_to(actions: &[Action], id: u64) -> Option<(PeerId, u8)> {
    sends(actions).into_iter().find_map(|(to, m)| match m {
        Message::Request { id: i, htl, .. } | Message::Insert { id: i, htl, .. } if i == id => {
            Some((to, htl))
        }
        _ => None,
    })
}

#[test]
fn greedy_to_closest_and_backtrack_with_returned_htl() {
    let (mut n, mut r) = node(6, Config::default());
    let key = key_at(5 << 60); // closest peer is 5, then 4 or 6
    n.handle_message(
        10,
        PeerId(1),
        Message::Request {
            id: 42,
            key,
            htl: 10,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert!(sends(&a).contains(&(PeerId(1), Message::Accepted { id: 42 })));
    assert_eq!(forwarded_to(&a, 42), Some((PeerId(5), 9)));
    n.handle_message(
        11,
        PeerId(5),
        Message::RouteNotFound { id: 42, htl: 6 },
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    let (to, htl) = forwarded_to(&a, 42).unwrap();
    assert!(to == PeerId(4) || to == PeerId(6));
    assert_eq!(htl, 6);
    // A lie about HTL (above what we sent) is clamped and counted.
    n.handle_message(
        12,
        to,
        Message::RouteNotFound { id: 42, htl: 18 },
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert_eq!(forwarded_to(&a, 42).unwrap().1, 6);
    assert!(n.stats().bad_htl >= 1);
}

/// Every peer of a node with 12 answers `RejectedLoop` to request or
/// insert 77 arriving from peer 1 at `htl`: how many peers it is sent to
/// before it ends, and how it is answered.
fn attempts_until_answered(htl: u8, insert: bool) -> (usize, Vec<(PeerId, Message)>) {
    let (mut n, mut r) = node(12, Config::default());
    let (key, b) = block(77);
    if insert {
        send_insert(
            &mut n,
            0,
            PeerId(1),
            (77, key, htl, KeyKind::Chk),
            b,
            &mut EmptyStore,
            &mut r,
        );
    } else {
        let req = Message::Request {
            id: 77,
            key,
            htl,
            kind: KeyKind::Chk,
        };
        n.handle_message(0, PeerId(1), req, &mut EmptyStore, &mut r);
    }
    let mut attempts = 0;
    let mut a = drain(&mut n);
    while let Some((to, _)) = forwarded_to(&a, 77) {
        attempts += 1;
        n.handle_message(
            u64::try_from(attempts).unwrap(),
            to,
            Message::RejectedLoop { id: 77 },
            &mut EmptyStore,
            &mut r,
        );
        a = drain(&mut n);
    }
    let answers = sends(&a)
        .into_iter()
        .filter(|(to, _)| *to == PeerId(1))
        .collect();
    (attempts, answers)
}

#[test]
fn failed_insert_attempts_cost_htl() {
    // HTL 4 arrives, 3 after this hop: each loop costs one more, so 3
    // peers of 11 are tried, then the insert has run its course.
    let (attempts, answer) = attempts_until_answered(4, true);
    assert_eq!(attempts, 3);
    assert_eq!(answer, vec![(PeerId(1), Message::InsertReply { id: 77 })]);
    // Above the caching level a loop costs no HTL, so only 5 of them are
    // allowed, then the route ends ("route not found", HTL kept).
    let (attempts, answer) = attempts_until_answered(18, true);
    assert_eq!(attempts, 6);
    assert!(
        matches!(answer[..], [(PeerId(1), Message::RouteNotFound { id: 77, htl })] if htl >= 17),
        "{answer:?}"
    );
    // A request is not charged: it tries every other peer.
    let (attempts, answer) = attempts_until_answered(4, false);
    assert_eq!(attempts, 11);
    assert!(
        matches!(
            answer[..],
            [(PeerId(1), Message::RouteNotFound { id: 77, htl: 3 })]
        ),
        "{answer:?}"
    );
}

#[test]
fn loops_are_rejected_by_id() {
    let (mut n, mut r) = node(3, Config::default());
    let key = key_at(2 << 60);
    let req = Message::Request {
        id: 9,
        key,
        htl: 10,
        kind: KeyKind::Chk,
    };
    n.handle_message(0, PeerId(1), req.clone(), &mut EmptyStore, &mut r);
    drain(&mut n);
    n.handle_message(1, PeerId(3), req, &mut EmptyStore, &mut r);
    assert_eq!(
        sends(&drain(&mut n)),
        vec![(PeerId(3), Message::RejectedLoop { id: 9 })]
    );
}

#[test]
fn htl_decrement_at_max_is_fixed_per_connection_and_about_half() {
    let mut r = rng();
    let mut n = Node::new(Config::default(), Location(0), sha_verify as V);
    for i in 1..=400 {
        n.add_peer(0, PeerId(i), Location(i << 50), &mut r);
    }
    let mut kept = 0;
    let mut at_min_kept = 0;
    for i in 1..=400u64 {
        let mut first = None;
        for rep in 0..3u64 {
            let id = i * 100 + rep;
            let key = key_at(u64::MAX / 2 + id);
            n.handle_message(
                0,
                PeerId(i),
                Message::Request {
                    id,
                    key,
                    htl: 18,
                    kind: KeyKind::Chk,
                },
                &mut EmptyStore,
                &mut r,
            );
            let (_, htl) = forwarded_to(&drain(&mut n), id).unwrap();
            assert!(htl == 18 || htl == 17);
            // The same connection always decides the same way.
            assert!(first.is_none() || first == Some(htl));
            first = Some(htl);
        }
        if first == Some(18) {
            kept += 1;
        }
        let id = i * 100 + 50;
        n.handle_message(
            0,
            PeerId(i),
            Message::Request {
                id,
                key: key_at(id << 20),
                htl: 1,
                kind: KeyKind::Chk,
            },
            &mut EmptyStore,
            &mut r,
        );
        let a = drain(&mut n);
        if forwarded_to(&a, id).is_some() {
            at_min_kept += 1;
        } else {
            assert!(sends(&a).contains(&(PeerId(i), Message::DataNotFound { id })));
        }
    }
    assert!((150..250).contains(&kept), "kept at max: {kept}/400");
    assert!(
        (260..340).contains(&at_min_kept),
        "kept at 1: {at_min_kept}/400 (expect 3/4)"
    );
}

#[test]
fn local_request_leaves_at_max_htl_and_is_not_cached() {
    let (mut n, mut r) = node(4, Config::default());
    let (key, b) = block(1);
    let RequestId(id) = n.handle_local_request(
        0,
        LocalRequest::Fetch {
            key,
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let a = drain(&mut n);
    let (to, htl) = forwarded_to(&a, id).unwrap();
    assert_eq!(htl, 18);
    n.handle_message(5, to, Message::Accepted { id }, &mut EmptyStore, &mut r);
    n.handle_message(
        9,
        to,
        Message::DataFound {
            id,
            block: b.clone(),
        },
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert!(a.iter().all(|x| !matches!(x, Action::StoreBlock { .. })));
    assert!(a.contains(&Action::RequestDone {
        id: RequestId(id),
        outcome: RequestOutcome::Found(b)
    }));
}

#[test]
fn forwarded_data_is_verified_then_cached_only_below_high_htl() {
    let (key, good) = block(3);
    for (htl, expect_cache) in [(18u8, false), (12, true)] {
        let (mut n, mut r) = node(4, Config::default());
        let id = 77;
        n.handle_message(
            0,
            PeerId(1),
            Message::Request {
                id,
                key,
                htl,
                kind: KeyKind::Chk,
            },
            &mut EmptyStore,
            &mut r,
        );
        let (to, _) = forwarded_to(&drain(&mut n), id).unwrap();
        // Garbage: counted, and the request moves to the next peer.
        n.handle_message(
            1,
            to,
            Message::DataFound {
                id,
                block: vec![0; 32],
            },
            &mut EmptyStore,
            &mut r,
        );
        let a = drain(&mut n);
        assert_eq!(n.stats().bad_blocks, 1);
        let (to2, _) = forwarded_to(&a, id).unwrap();
        assert_ne!(to2, to);
        // A reply from a peer we did not ask is ignored.
        n.handle_message(
            2,
            to,
            Message::DataFound {
                id,
                block: good.clone(),
            },
            &mut EmptyStore,
            &mut r,
        );
        assert!(drain(&mut n).is_empty());
        n.handle_message(
            3,
            to2,
            Message::DataFound {
                id,
                block: good.clone(),
            },
            &mut EmptyStore,
            &mut r,
        );
        let a = drain(&mut n);
        assert!(sends(&a).contains(&(
            PeerId(1),
            Message::DataFound {
                id,
                block: good.clone()
            }
        )));
        let cached = a.iter().any(|x| {
            matches!(
                x,
                Action::StoreBlock {
                    space: Space::Cache,
                    ..
                }
            )
        });
        assert_eq!(cached, expect_cache, "htl {htl}");
    }
}

#[test]
fn overload_rejects_and_backs_off() {
    let cfg = Config {
        max_incoming_per_peer: 2,
        ..Config::default()
    };
    let (mut n, mut r) = node(4, cfg);
    for id in 0..3u64 {
        n.handle_message(
            0,
            PeerId(1),
            Message::Request {
                id,
                key: key_at(id << 40),
                htl: 10,
                kind: KeyKind::Chk,
            },
            &mut EmptyStore,
            &mut r,
        );
    }
    let a = drain(&mut n);
    assert!(sends(&a).contains(&(PeerId(1), Message::RejectedOverload { id: 2 })));
    // Downstream overload: back off that peer and try the next; the
    // originator's window halves.
    let w = n.window();
    let RequestId(id) = n.handle_local_request(
        0,
        LocalRequest::Fetch {
            key: key_at(3 << 60),
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let (to, _) = forwarded_to(&drain(&mut n), id).unwrap();
    n.handle_message(
        1,
        to,
        Message::RejectedOverload { id },
        &mut EmptyStore,
        &mut r,
    );
    let (to2, _) = forwarded_to(&drain(&mut n), id).unwrap();
    assert_ne!(to, to2);
    assert!(n.window() < w);
    // While backed off, `to` is not chosen for a new request to the same place.
    let RequestId(id2) = n.handle_local_request(
        2,
        LocalRequest::Fetch {
            key: key_at((3 << 60) + 1),
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    assert_ne!(forwarded_to(&drain(&mut n), id2).unwrap().0, to);
}

#[test]
fn identical_requests_are_coalesced() {
    let (mut n, mut r) = node(5, Config::default());
    let (key, b) = block(9);
    n.handle_message(
        0,
        PeerId(1),
        Message::Request {
            id: 1,
            key,
            htl: 10,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        &mut r,
    );
    let (to, _) = forwarded_to(&drain(&mut n), 1).unwrap();
    let other = if to == PeerId(2) {
        PeerId(3)
    } else {
        PeerId(2)
    };
    n.handle_message(
        1,
        other,
        Message::Request {
            id: 2,
            key,
            htl: 10,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert_eq!(forwarded_to(&a, 2), None);
    assert_eq!(n.stats().coalesced, 1);
    n.handle_message(
        2,
        to,
        Message::DataFound {
            id: 1,
            block: b.clone(),
        },
        &mut EmptyStore,
        &mut r,
    );
    let s = sends(&drain(&mut n));
    assert!(s.contains(&(
        PeerId(1),
        Message::DataFound {
            id: 1,
            block: b.clone()
        }
    )));
    assert!(s.contains(&(other, Message::DataFound { id: 2, block: b })));
}

#[test]
fn failure_table_answers_repeated_misses() {
    let (mut n, mut r) = node(3, Config::default());
    let key = key_at(1 << 61);
    n.handle_message(
        0,
        PeerId(1),
        Message::Request {
            id: 1,
            key,
            htl: 10,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        &mut r,
    );
    let (to, _) = forwarded_to(&drain(&mut n), 1).unwrap();
    n.handle_message(
        1,
        to,
        Message::DataNotFound { id: 1 },
        &mut EmptyStore,
        &mut r,
    );
    assert!(sends(&drain(&mut n)).contains(&(PeerId(1), Message::DataNotFound { id: 1 })));
    n.handle_message(
        2,
        PeerId(2),
        Message::Request {
            id: 2,
            key,
            htl: 8,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        &mut r,
    );
    assert_eq!(
        sends(&drain(&mut n)),
        vec![(PeerId(2), Message::DataNotFound { id: 2 })]
    );
    assert_eq!(n.stats().recently_failed, 1);
    // After the TTL the key is routed again.
    let later = 1 + n.config().failure_ttl + 1;
    n.handle_message(
        later,
        PeerId(2),
        Message::Request {
            id: 3,
            key,
            htl: 8,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        &mut r,
    );
    assert!(forwarded_to(&drain(&mut n), 3).is_some());
}

#[test]
fn insert_sink_stores_long_term_and_end_replies() {
    let (key, b) = block(5);
    // A node with no peer closer to the key than itself is a sink.
    let mut r = rng();
    let mut n = Node::new(Config::default(), key.location(), sha_verify as V);
    n.add_peer(
        0,
        PeerId(1),
        Location(key.location().0.wrapping_add(1 << 62)),
        &mut r,
    );
    n.add_peer(
        0,
        PeerId(2),
        Location(key.location().0.wrapping_add(1 << 61)),
        &mut r,
    );
    send_insert(
        &mut n,
        0,
        PeerId(1),
        (5, key, 5, KeyKind::Chk),
        b.clone(),
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert!(a.iter().any(|x| matches!(
        x,
        Action::StoreBlock {
            space: Space::Store,
            ..
        }
    )));
    let (to, htl) = forwarded_to(&a, 5).unwrap();
    assert_eq!((to, htl), (PeerId(2), 4));
    n.handle_message(
        1,
        to,
        Message::InsertReply { id: 5 },
        &mut EmptyStore,
        &mut r,
    );
    assert!(sends(&drain(&mut n)).contains(&(PeerId(1), Message::InsertReply { id: 5 })));
    // An invalid insert block is dropped and counted.
    send_insert(
        &mut n,
        2,
        PeerId(1),
        (6, key, 5, KeyKind::Chk),
        vec![1],
        &mut EmptyStore,
        &mut r,
    );
    // Accepted for the header, then nothing: not forwarded, not stored.
    let a = drain(&mut n);
    assert_eq!(
        sends(&a),
        vec![(PeerId(1), Message::Accepted { id: 6 })],
        "{a:?}"
    );
    assert_eq!(n.stats().bad_blocks, 1);
}

#[test]
fn local_insert_is_not_stored_and_ssk_collision_is_reported() {
    struct One(Vec<u8>);
    impl BlockSource for One {
        fn get(&mut self, _: &Key, _: KeyKind) -> Option<Block> {
            Some(self.0.clone())
        }
    }
    // For the SSK test the verifier accepts any block starting with the key's first byte.
    fn loose(key: &Key, _: KeyKind, b: &[u8]) -> bool {
        b.first() == Some(&key.0[0])
    }
    let mut r = rng();
    let mut n = Node::new(Config::default(), Location(0), loose as V);
    n.add_peer(0, PeerId(1), Location(1 << 62), &mut r);
    n.add_peer(0, PeerId(2), Location(2 << 62), &mut r);
    let key = key_at(1 << 62);
    let RequestId(id) = n.handle_local_request(
        0,
        LocalRequest::Insert {
            key,
            kind: KeyKind::Ssk,
            block: vec![0x40, 1],
        },
        &mut r,
    );
    let a = drain(&mut n);
    assert!(a.iter().all(|x| !matches!(x, Action::StoreBlock { .. })));
    let (to, htl) = forwarded_to(&a, id).unwrap();
    assert_eq!(htl, 18);
    n.handle_message(
        1,
        to,
        Message::Collision {
            id,
            block: vec![0x40, 2],
        },
        &mut EmptyStore,
        &mut r,
    );
    assert!(drain(&mut n).contains(&Action::InsertDone {
        id: RequestId(id),
        outcome: InsertOutcome::Collision(vec![0x40, 2])
    }));
    // A forwarded SSK insert meeting a different stored block answers Collision.
    send_insert(
        &mut n,
        2,
        PeerId(2),
        (99, key, 10, KeyKind::Ssk),
        vec![0x40, 3],
        &mut One(vec![0x40, 4]),
        &mut r,
    );
    assert!(sends(&drain(&mut n)).contains(&(
        PeerId(2),
        Message::Collision {
            id: 99,
            block: vec![0x40, 4]
        }
    )));
}

#[test]
fn silent_peer_times_out_and_request_moves_on() {
    let (mut n, mut r) = node(4, Config::default());
    let RequestId(id) = n.handle_local_request(
        0,
        LocalRequest::Fetch {
            key: key_at(2 << 60),
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let (to, _) = forwarded_to(&drain(&mut n), id).unwrap();
    let t = n.poll_timeout().unwrap();
    assert_eq!(t, n.config().accept_timeout);
    n.handle_timeout(t, &mut r);
    let (to2, _) = forwarded_to(&drain(&mut n), id).unwrap();
    assert_ne!(to, to2);
    // Accepted, then nothing: the whole request times out.
    n.handle_message(
        t + 1,
        to2,
        Message::Accepted { id },
        &mut EmptyStore,
        &mut r,
    );
    let mut now = t + 1;
    let mut done = None;
    while let Some(t) = n.poll_timeout() {
        now = t.max(now);
        n.handle_timeout(now, &mut r);
        for a in drain(&mut n) {
            if let Action::RequestDone { outcome, .. } = a {
                done = Some(outcome);
            }
        }
        if done.is_some() {
            break;
        }
    }
    assert_eq!(done, Some(RequestOutcome::TimedOut));
}

#[test]
fn path_folding_offer_and_reset() {
    let (key, b) = block(8);
    struct Has(Vec<u8>);
    impl BlockSource for Has {
        fn get(&mut self, _: &Key, _: KeyKind) -> Option<Block> {
            Some(self.0.clone())
        }
    }
    // The data source offers its noderef after DataFound.
    let (mut src, mut r) = node(2, Config::default());
    src.set_noderef(NodeRef {
        location: Location(0),
        address: b"src".to_vec(),
    });
    src.handle_message(
        0,
        PeerId(1),
        Message::Request {
            id: 3,
            key,
            htl: 5,
            kind: KeyKind::Chk,
        },
        &mut Has(b.clone()),
        &mut r,
    );
    let s = sends(&drain(&mut src));
    assert!(matches!(&s[1].1, Message::FoldOffer { id: 3, noderef } if noderef.address == b"src"));
    // The originator, wanting peers, connects to the offered node.
    let (mut n, mut r) = node(2, Config::default());
    let RequestId(id) = n.handle_local_request(
        0,
        LocalRequest::Fetch {
            key,
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let (to, _) = forwarded_to(&drain(&mut n), id).unwrap();
    n.handle_message(
        1,
        to,
        Message::DataFound {
            id,
            block: b.clone(),
        },
        &mut EmptyStore,
        &mut r,
    );
    drain(&mut n);
    let offer = NodeRef {
        location: Location(123),
        address: b"far".to_vec(),
    };
    n.handle_message(
        2,
        to,
        Message::FoldOffer {
            id,
            noderef: offer.clone(),
        },
        &mut EmptyStore,
        &mut r,
    );
    assert!(drain(&mut n).contains(&Action::Connect {
        noderef: offer.clone()
    }));
    // A second (replayed) offer is an offence and does nothing.
    n.handle_message(
        3,
        to,
        Message::FoldOffer { id, noderef: offer },
        &mut EmptyStore,
        &mut r,
    );
    assert!(drain(&mut n).is_empty());
    assert!(n.stats().misbehaviour >= 1);
}

#[test]
fn forwarders_reset_fold_offers_about_one_in_twenty() {
    let (key, b) = block(8);
    let cfg = Config {
        max_peers: 2,
        ..Config::default()
    }; // full: never takes offers
    let (mut n, mut r) = node(2, cfg);
    n.set_noderef(NodeRef {
        location: Location(0),
        address: b"me".to_vec(),
    });
    let mut resets = 0;
    for id in 0..2000u64 {
        n.handle_message(
            id,
            PeerId(1),
            Message::Request {
                id,
                key,
                htl: 10,
                kind: KeyKind::Chk,
            },
            &mut EmptyStore,
            &mut r,
        );
        drain(&mut n);
        n.handle_message(
            id,
            PeerId(2),
            Message::DataFound {
                id,
                block: b.clone(),
            },
            &mut EmptyStore,
            &mut r,
        );
        let offer = NodeRef {
            location: Location(5),
            address: b"src".to_vec(),
        };
        n.handle_message(
            id,
            PeerId(2),
            Message::FoldOffer { id, noderef: offer },
            &mut EmptyStore,
            &mut r,
        );
        for (to, m) in sends(&drain(&mut n)) {
            if let Message::FoldOffer { noderef, .. } = m {
                assert_eq!(to, PeerId(1));
                if noderef.address == b"me" {
                    resets += 1;
                }
            }
        }
    }
    assert!((60..150).contains(&resets), "resets {resets}/2000");
}

#[test]
fn opennet_peer_limit_drops_least_useful_after_grace() {
    let cfg = Config {
        max_peers: 3,
        peer_grace: 1000,
        fold_min_interval: 0,
        ..Config::default()
    };
    let (mut n, mut r) = node(3, cfg);
    assert!(!n.wants_peer(10), "young peers are protected");
    assert!(!n.accept_opennet_peer(10, PeerId(9), Location(9), &mut r));
    // Peer 2 produces a success; 1 and 3 do not.
    let (key, b) = block(1);
    let RequestId(id) = n.handle_local_request(
        500,
        LocalRequest::Fetch {
            key,
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let (to, _) = forwarded_to(&drain(&mut n), id).unwrap();
    n.handle_message(
        600,
        to,
        Message::DataFound { id, block: b },
        &mut EmptyStore,
        &mut r,
    );
    drain(&mut n);
    assert!(n.accept_opennet_peer(2000, PeerId(9), Location(9), &mut r));
    let a = drain(&mut n);
    let dropped: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::Disconnect { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_ne!(dropped[0], to);
    assert_eq!(n.peer_count(), 3);
}

#[test]
fn misbehaving_peer_is_disconnected() {
    let cfg = Config {
        misbehaviour_limit: 5,
        ..Config::default()
    };
    let (mut n, mut r) = node(3, cfg);
    for id in 0..10 {
        n.handle_message(
            0,
            PeerId(2),
            Message::DataFound { id, block: vec![] },
            &mut EmptyStore,
            &mut r,
        );
    }
    assert!(drain(&mut n).contains(&Action::Disconnect {
        peer: PeerId(2),
        why: Disconnect::Misbehaving
    }));
    assert_eq!(n.peer_count(), 2);
    // Messages from a peer we do not know are dropped.
    n.handle_message(
        0,
        PeerId(2),
        Message::Accepted { id: 1 },
        &mut EmptyStore,
        &mut r,
    );
    assert!(drain(&mut n).is_empty());
}

#[test]
fn aimd_window_queues_local_requests() {
    let cfg = Config {
        aimd_initial: 2.0,
        ..Config::default()
    };
    let (mut n, mut r) = node(3, cfg);
    let ids: Vec<u64> = (0..4u64)
        .map(|i| {
            n.handle_local_request(
                0,
                LocalRequest::Fetch {
                    key: key_at(i << 58),
                    kind: KeyKind::Chk,
                },
                &mut r,
            )
            .0
        })
        .collect();
    let a = drain(&mut n);
    let started: Vec<_> = ids
        .iter()
        .filter(|&&id| forwarded_to(&a, id).is_some())
        .collect();
    assert_eq!(started.len(), 2);
    // Finish one: the next starts.
    let id = *started[0];
    let (to, _) = forwarded_to(&a, id).unwrap();
    n.handle_message(1, to, Message::DataNotFound { id }, &mut EmptyStore, &mut r);
    n.pump(1, &mut r);
    let a = drain(&mut n);
    assert_eq!(
        ids.iter()
            .filter(|&&id| forwarded_to(&a, id).is_some())
            .count(),
        1
    );
}

#[test]
fn darknet_swap_between_two_nodes() {
    let cfg = Config {
        opennet: false,
        swapping: true,
        swap_htl: 1,
        location_reset_one_in: 0,
        ..Config::default()
    };
    let mut r = rng();
    // A at 0.0 whose only friend is B at 0.5; B's other friend is near 0.0:
    // swapping shortens every link, so it must happen.
    let mut a = Node::new(cfg.clone(), Location(0), sha_verify as V);
    let mut b = Node::new(cfg, Location(1 << 63), sha_verify as V);
    a.add_peer(0, PeerId(2), Location(1 << 63), &mut r);
    b.add_peer(0, PeerId(1), Location(0), &mut r);
    b.add_peer(0, PeerId(11), Location(1 << 56), &mut r);
    let t = a.poll_timeout().unwrap();
    a.handle_timeout(t, &mut r);
    let req = sends(&drain(&mut a))
        .into_iter()
        .find(|(to, _)| *to == PeerId(2))
        .map(|(_, m)| m)
        .unwrap();
    assert!(matches!(req, Message::SwapRequest { .. }));
    b.handle_message(t, PeerId(1), req, &mut EmptyStore, &mut r);
    let reply = sends(&drain(&mut b))
        .into_iter()
        .find(|(to, m)| *to == PeerId(1) && matches!(m, Message::SwapReply { .. }))
        .unwrap()
        .1;
    assert!(matches!(reply, Message::SwapReply { accepted: true, .. }));
    assert_eq!(b.location(), Location(0));
    a.handle_message(t + 1, PeerId(2), reply, &mut EmptyStore, &mut r);
    assert_eq!(a.location(), Location(1 << 63));
    assert!(drain(&mut a).contains(&Action::LocationChanged {
        location: Location(1 << 63)
    }));
}

/// A local request queued behind the AIMD window starts the moment a slot
/// frees (here: the reply to the first request), not at the next timer.
/// Before this, the queue restarted only in `handle_timeout`, whose next
/// deadline was `accept_timeout` (10 s) away: every transfer larger than
/// the window stalled for that long.
#[test]
fn queued_local_request_starts_when_a_slot_frees() {
    let cfg = Config {
        aimd_initial: 1.0,
        ..Config::default()
    };
    let (mut n, mut r) = node(4, cfg);
    let (k1, b1) = block(1);
    let (k2, _) = block(2);
    let RequestId(first) = n.handle_local_request(
        0,
        LocalRequest::Fetch {
            key: k1,
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let RequestId(second) = n.handle_local_request(
        0,
        LocalRequest::Fetch {
            key: k2,
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let a = drain(&mut n);
    let (to, _) = forwarded_to(&a, first).unwrap();
    assert!(forwarded_to(&a, second).is_none(), "window is one request");
    n.handle_message(
        1,
        to,
        Message::Accepted { id: first },
        &mut EmptyStore,
        &mut r,
    );
    n.handle_message(
        2,
        to,
        Message::DataFound {
            id: first,
            block: b1,
        },
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert!(
        forwarded_to(&a, second).is_some(),
        "the queued request left with the reply that freed its slot: {a:?}"
    );
}

/// The same when the slot is freed by a peer going away.
#[test]
fn queued_local_request_starts_when_a_peer_drop_ends_one() {
    let cfg = Config {
        aimd_initial: 1.0,
        ..Config::default()
    };
    let (mut n, mut r) = node(1, cfg);
    let (k1, _) = block(1);
    let (k2, _) = block(2);
    let RequestId(first) = n.handle_local_request(
        0,
        LocalRequest::Fetch {
            key: k1,
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let RequestId(second) = n.handle_local_request(
        0,
        LocalRequest::Fetch {
            key: k2,
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let a = drain(&mut n);
    assert!(forwarded_to(&a, first).is_some());
    assert!(forwarded_to(&a, second).is_none());
    n.remove_peer(1, PeerId(1), &mut r);
    let a = drain(&mut n);
    assert!(a.contains(&Action::RequestDone {
        id: RequestId(first),
        outcome: RequestOutcome::RouteNotFound
    }));
    // No peer left: the second one ends at once too, instead of waiting.
    assert!(
        a.contains(&Action::RequestDone {
            id: RequestId(second),
            outcome: RequestOutcome::RouteNotFound
        }),
        "{a:?}"
    );
}

/// Our own request whose only peer is overloaded waits out the backoff and
/// goes to that peer again, instead of failing with RouteNotFound (a client
/// would have to repeat it; a line of nodes lost most blocks of a burst).
#[test]
fn local_request_waits_for_an_overloaded_only_peer() {
    let (mut n, mut r) = node(1, Config::default());
    let (key, _) = block(1);
    let RequestId(id) = n.handle_local_request(
        0,
        LocalRequest::Fetch {
            key,
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let a = drain(&mut n);
    assert_eq!(forwarded_to(&a, id).map(|(p, _)| p), Some(PeerId(1)));
    n.handle_message(
        1,
        PeerId(1),
        Message::RejectedOverload { id },
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert!(
        !a.iter().any(|x| matches!(x, Action::RequestDone { .. })),
        "the request must wait, not fail: {a:?}"
    );
    assert!(forwarded_to(&a, id).is_none(), "not while backed off");
    // The backoff (at most backoff_initial) is over: the request goes again.
    let wake = n.poll_timeout().unwrap();
    assert!(wake <= 1 + Config::default().backoff_initial, "{wake}");
    n.handle_timeout(wake, &mut r);
    let a = drain(&mut n);
    assert_eq!(
        forwarded_to(&a, id).map(|(p, _)| p),
        Some(PeerId(1)),
        "{a:?}"
    );
    assert_eq!(n.stats().backoff_waits, 1);
}

/// A forwarded request in the same place fails back at once: the upstream
/// node has its own peers to try.
#[test]
fn forwarded_request_does_not_wait_for_a_backed_off_peer() {
    let (mut n, mut r) = node(2, Config::default());
    let key = key_at(2 << 60);
    n.handle_message(
        0,
        PeerId(1),
        Message::Request {
            id: 77,
            key,
            htl: 10,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert_eq!(forwarded_to(&a, 77).map(|(p, _)| p), Some(PeerId(2)));
    n.handle_message(
        1,
        PeerId(2),
        Message::RejectedOverload { id: 77 },
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert!(
        sends(&a)
            .iter()
            .any(|(to, m)| *to == PeerId(1) && matches!(m, Message::RouteNotFound { id: 77, .. })),
        "{a:?}"
    );
}

/// An insert's block crosses a link only after the receiver accepted the
/// header: a peer that rejects it as a loop never gets the 32 KiB.
#[test]
fn insert_data_follows_accepted_and_never_goes_to_a_rejecting_peer() {
    let (mut n, mut r) = node(3, Config::default());
    let (key, b) = block(9);
    let RequestId(id) = n.handle_local_request(
        0,
        LocalRequest::Insert {
            key,
            kind: KeyKind::Chk,
            block: b.clone(),
        },
        &mut r,
    );
    let a = sends(&drain(&mut n));
    assert_eq!(a.len(), 1, "{a:?}");
    let (first, header) = &a[0];
    assert!(matches!(header, Message::Insert { id: i, .. } if *i == id));
    n.handle_message(
        1,
        *first,
        Message::RejectedLoop { id },
        &mut EmptyStore,
        &mut r,
    );
    let a = sends(&drain(&mut n));
    assert!(
        a.iter()
            .all(|(_, m)| !matches!(m, Message::InsertData { .. })),
        "{a:?}"
    );
    let (second, _) = a
        .iter()
        .find(|(_, m)| matches!(m, Message::Insert { .. }))
        .unwrap();
    assert_ne!(second, first);
    n.handle_message(
        2,
        *second,
        Message::Accepted { id },
        &mut EmptyStore,
        &mut r,
    );
    assert_eq!(
        sends(&drain(&mut n)),
        vec![(*second, Message::InsertData { id, block: b })]
    );
}

/// Data for an insert we never accepted, or from the wrong peer, is an
/// offence and goes nowhere; an accepted header whose data never comes is
/// forgotten at the accept timeout (its slot freed).
#[test]
fn stray_insert_data_is_refused_and_missing_data_times_out() {
    let (mut n, mut r) = node(3, Config::default());
    let (key, b) = block(3);
    n.handle_message(
        0,
        PeerId(1),
        Message::InsertData {
            id: 1,
            block: b.clone(),
        },
        &mut EmptyStore,
        &mut r,
    );
    assert!(sends(&drain(&mut n)).is_empty());
    assert_eq!(n.stats().unexpected_replies, 1);
    n.handle_message(
        0,
        PeerId(1),
        Message::Insert {
            id: 2,
            key,
            htl: 10,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        &mut r,
    );
    assert_eq!(
        sends(&drain(&mut n)),
        vec![(PeerId(1), Message::Accepted { id: 2 })]
    );
    n.handle_message(
        0,
        PeerId(2),
        Message::InsertData { id: 2, block: b },
        &mut EmptyStore,
        &mut r,
    );
    assert!(sends(&drain(&mut n)).is_empty());
    assert_eq!(n.stats().unexpected_replies, 2);
    assert_eq!(n.pending_count(), 1);
    let t = Config::default().accept_timeout;
    n.handle_timeout(t, &mut r);
    assert_eq!(n.pending_count(), 0);
    assert!(sends(&drain(&mut n)).is_empty());
}

/// A node at location 0 with peers 1..=3 at i * 2^60 that takes any block
/// as valid, and a key at peer 1's location.
fn permissive_node() -> (Node<V>, ChaCha8Rng, Key) {
    fn any(_: &Key, _: KeyKind, _: &[u8]) -> bool {
        true
    }
    let mut r = rng();
    let mut n = Node::new(Config::default(), Location(0), any as V);
    for i in 1..=3 {
        n.add_peer(0, PeerId(i), Location(i << 60), &mut r);
    }
    (n, r, key_at(1 << 60))
}

#[test]
fn insert_reaching_the_caching_level_forks_under_a_fresh_id() {
    let (mut n, mut r, key) = permissive_node();
    // Arrives at 17 from peer 1, the peer closest to the key: 16 here, the
    // caching level. Kept in the cache (peer 1 is closer: not a sink).
    send_insert(
        &mut n,
        0,
        PeerId(1),
        (40, key, 17, KeyKind::Chk),
        vec![7; 32],
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert!(a.iter().any(|x| matches!(
        x,
        Action::StoreBlock {
            space: Space::Cache,
            ..
        }
    )));
    // Forked: a fresh id, nothing tried, so the closest peer gets it back
    // although it sent it, now at a level where it may store it.
    let (to, fresh, htl) = sends(&a)
        .into_iter()
        .find_map(|(to, m)| match m {
            Message::Insert { id, htl, .. } => Some((to, id, htl)),
            _ => None,
        })
        .unwrap();
    assert_ne!(fresh, 40);
    assert_eq!((to, htl), (PeerId(1), 16));
    assert_eq!(n.stats().inserts_forked, 1);
    // Its block follows acceptance under the fresh id; the old id is
    // still a loop.
    n.handle_message(
        1,
        to,
        Message::Accepted { id: fresh },
        &mut EmptyStore,
        &mut r,
    );
    assert!(sends(&drain(&mut n)).iter().any(
        |(t, m)| *t == PeerId(1) && matches!(m, Message::InsertData { id, .. } if *id == fresh)
    ));
    n.handle_message(
        1,
        PeerId(2),
        Message::Insert {
            id: 40,
            key,
            htl: 10,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        &mut r,
    );
    assert!(sends(&drain(&mut n)).contains(&(PeerId(2), Message::RejectedLoop { id: 40 })));
    // The result goes upstream under the id upstream knows.
    n.handle_message(
        2,
        PeerId(1),
        Message::InsertReply { id: fresh },
        &mut EmptyStore,
        &mut r,
    );
    assert_eq!(
        sends(&drain(&mut n)),
        vec![(PeerId(1), Message::InsertReply { id: 40 })]
    );

    // Already below the caching level on arrival: no fork, same id, and
    // never back to the peer it came from.
    send_insert(
        &mut n,
        3,
        PeerId(1),
        (41, key, 12, KeyKind::Chk),
        vec![7; 32],
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert_eq!(forwarded_to(&a, 41), Some((PeerId(2), 11)));
    assert_eq!(n.stats().inserts_forked, 1);
    // A forked insert whose route ends reports it under the old id.
    send_insert(
        &mut n,
        4,
        PeerId(2),
        (42, key, 17, KeyKind::Chk),
        vec![7; 32],
        &mut EmptyStore,
        &mut r,
    );
    let (to, fresh) = sends(&drain(&mut n))
        .into_iter()
        .find_map(|(to, m)| match m {
            Message::Insert { id, .. } => Some((to, id)),
            _ => None,
        })
        .unwrap();
    assert_ne!(fresh, 42);
    n.handle_message(
        5,
        to,
        Message::RouteNotFound { id: fresh, htl: 0 },
        &mut EmptyStore,
        &mut r,
    );
    assert!(sends(&drain(&mut n)).contains(&(PeerId(2), Message::RouteNotFound { id: 42, htl: 0 })));
}

#[test]
fn own_insert_coming_back_after_a_fork_is_relayed_not_stored() {
    let (mut n, mut r, key) = permissive_node();
    let RequestId(mine) = n.handle_local_request(
        0,
        LocalRequest::Insert {
            key,
            kind: KeyKind::Chk,
            block: vec![7; 32],
        },
        &mut r,
    );
    let a = drain(&mut n);
    assert_eq!(forwarded_to(&a, mine).map(|(to, _)| to), Some(PeerId(1)));
    // A fork downstream sends it back under another id, at a caching
    // level: relayed like any insert, but not kept here.
    send_insert(
        &mut n,
        1,
        PeerId(1),
        (60, key, 12, KeyKind::Chk),
        vec![7; 32],
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert!(
        !a.iter().any(|x| matches!(x, Action::StoreBlock { .. })),
        "{a:?}"
    );
    assert_eq!(forwarded_to(&a, 60), Some((PeerId(2), 11)));
    // Once our insert is over, the same key from a peer is kept as usual.
    n.handle_message(
        2,
        PeerId(1),
        Message::Accepted { id: mine },
        &mut EmptyStore,
        &mut r,
    );
    n.handle_message(
        2,
        PeerId(1),
        Message::InsertReply { id: mine },
        &mut EmptyStore,
        &mut r,
    );
    send_insert(
        &mut n,
        3,
        PeerId(3),
        (61, key, 12, KeyKind::Chk),
        vec![7; 32],
        &mut EmptyStore,
        &mut r,
    );
    assert!(drain(&mut n)
        .iter()
        .any(|x| matches!(x, Action::StoreBlock { .. })));
}

#[test]
fn insert_whose_route_ends_at_high_htl_is_kept_by_a_forwarder() {
    // One peer (the upstream): an insert arriving at the maximum HTL has
    // nowhere to go. Nobody on its path was allowed to cache it (HTL above
    // cache_max_htl), so this forwarder keeps it instead of losing it.
    let (key, b) = block(9);
    let (mut n, mut r) = node(1, Config::default());
    send_insert(
        &mut n,
        0,
        PeerId(1),
        (77, key, 18, KeyKind::Chk),
        b.clone(),
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::StoreBlock { block, .. } if *block == b)),
        "{a:?}"
    );
    assert!(sends(&a)
        .iter()
        .any(|(to, m)| *to == PeerId(1) && matches!(m, Message::RouteNotFound { id: 77, .. })));
    // The inserter itself still keeps nothing in the shared spaces.
    let (mut n, mut r) = node(0, Config::default());
    let _ = n.handle_local_request(
        0,
        LocalRequest::Insert {
            key,
            kind: KeyKind::Chk,
            block: b,
        },
        &mut r,
    );
    assert!(!drain(&mut n)
        .iter()
        .any(|x| matches!(x, Action::StoreBlock { .. })));
}

#[test]
fn a_full_node_keeps_a_newcomer_as_a_seed_client_for_its_announcement() {
    let cfg = Config {
        max_peers: 3,
        max_seed_clients: 2,
        ..Config::default()
    };
    let (mut n, mut r) = node(3, cfg);
    n.set_noderef(NodeRef {
        location: Location(0),
        address: b"seed".to_vec(),
    });
    let newcomer = PeerId(9);
    // Full, young peers: not a peer, but a seed client.
    assert!(!n.accept_opennet_peer(10, newcomer, Location(3 << 60), &mut r));
    assert!(n.accept_seed_client(10, newcomer));
    assert_eq!(n.peer_count(), 3, "a seed client is not a peer");
    assert_eq!(n.seed_client_count(), 1);
    assert_eq!(n.stats().seed_clients, 1);

    // Its requests are refused, never routed.
    let (key, _) = block(1);
    n.handle_message(
        20,
        newcomer,
        Message::Request {
            id: 77,
            key,
            htl: 18,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        &mut r,
    );
    assert_eq!(
        sends(&drain(&mut n)),
        vec![(newcomer, Message::RejectedOverload { id: 77 })]
    );

    // Its announcement is routed toward its location (peer 3 is nearest).
    let me = NodeRef {
        location: Location(3 << 60),
        address: b"newcomer".to_vec(),
    };
    let announce = |id| Message::Announce {
        id,
        htl: 18,
        noderef: me.clone(),
    };
    n.handle_message(30, newcomer, announce(5), &mut EmptyStore, &mut r);
    let s = sends(&drain(&mut n));
    assert!(
        s.contains(&(newcomer, Message::Accepted { id: 5 })),
        "{s:?}"
    );
    let (to, fwd) = s.iter().find(|(to, _)| *to != newcomer).unwrap().clone();
    assert_eq!(to, PeerId(3));
    assert!(
        matches!(fwd, Message::Announce { id: 5, ref noderef, .. } if noderef.address == b"newcomer")
    );

    // A second announcement is refused.
    n.handle_message(40, newcomer, announce(6), &mut EmptyStore, &mut r);
    assert_eq!(
        sends(&drain(&mut n)),
        vec![(newcomer, Message::RejectedOverload { id: 6 })]
    );

    // The reply goes back to it; it is disconnected soon after.
    n.handle_message(50, to, Message::Accepted { id: 5 }, &mut EmptyStore, &mut r);
    n.handle_message(
        60,
        to,
        Message::AnnounceReply { id: 5 },
        &mut EmptyStore,
        &mut r,
    );
    assert!(sends(&drain(&mut n)).contains(&(newcomer, Message::AnnounceReply { id: 5 })));
    let due = n.poll_timeout().unwrap();
    assert!(due <= 60 + 2_000, "{due}");
    n.handle_timeout(due, &mut r);
    assert!(drain(&mut n).contains(&Action::Disconnect {
        peer: newcomer,
        why: Disconnect::SeedClientDone
    }));
    assert_eq!(n.seed_client_count(), 0);
    assert_eq!(n.peer_count(), 3);
}

#[test]
fn seed_clients_are_bounded_and_expire() {
    let cfg = Config {
        max_peers: 1,
        max_seed_clients: 2,
        seed_client_ttl: 5_000,
        ..Config::default()
    };
    let (mut n, mut r) = node(1, cfg);
    assert!(n.accept_seed_client(0, PeerId(10)));
    assert!(n.accept_seed_client(100, PeerId(11)));
    assert!(!n.accept_seed_client(200, PeerId(12)), "table full");
    assert!(!n.accept_seed_client(200, PeerId(1)), "already a peer");
    assert_eq!(n.stats().seed_clients_refused, 1);
    // One leaves by itself: room again.
    n.remove_peer(300, PeerId(11), &mut r);
    assert!(n.accept_seed_client(300, PeerId(12)));
    // Silent clients go after the ttl.
    assert_eq!(n.poll_timeout(), Some(5_000));
    n.handle_timeout(5_000, &mut r);
    assert_eq!(
        drain(&mut n),
        vec![Action::Disconnect {
            peer: PeerId(10),
            why: Disconnect::SeedClientDone
        }]
    );
    n.handle_timeout(5_300, &mut r);
    assert_eq!(
        drain(&mut n),
        vec![Action::Disconnect {
            peer: PeerId(12),
            why: Disconnect::SeedClientDone
        }]
    );
    assert_eq!(n.seed_client_count(), 0);
    // A darknet node keeps none.
    let (mut d, _) = node(
        1,
        Config {
            opennet: false,
            swapping: true,
            ..Config::default()
        },
    );
    assert!(!d.accept_seed_client(0, PeerId(10)));
}
