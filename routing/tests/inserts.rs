//! Unit tests of the routing state machine through its public API.
//! Inserts: HTL charged for failed attempts, sinks, collisions, header then
//! block, and the fork on cacheable.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use lichen_routing::*;
use rand_chacha::ChaCha8Rng;

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
    // Above the caching level it goes on under a fresh id.
    let forwarded = |a: &[Action]| {
        sends(a).into_iter().find_map(|(to, m)| match m {
            Message::Request { id, .. } | Message::Insert { id, .. } => Some((to, id)),
            _ => None,
        })
    };
    while let Some((to, id)) = forwarded(&a) {
        attempts += 1;
        n.handle_message(
            u64::try_from(attempts).unwrap(),
            to,
            Message::RejectedLoop { id },
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
    // Arrives at 16 from peer 1, the peer closest to the key: not kept
    // here, but it goes on at 15, the storing level.
    send_insert(
        &mut n,
        0,
        PeerId(1),
        (40, key, 16, KeyKind::Chk),
        vec![7; 32],
        &mut EmptyStore,
        &mut r,
    );
    let a = drain(&mut n);
    assert!(!a.iter().any(|x| matches!(x, Action::StoreBlock { .. })));
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
    assert_eq!((to, htl), (PeerId(1), 15));
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

    // Already at the storing level on arrival: no fork, same id, and
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
        (42, key, 16, KeyKind::Chk),
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

/// Only a node that received an insert at HTL 15 or below (as Hyphanet)
/// keeps it: at 16 it goes on at 15 and nothing is kept, however the HTL
/// is decremented here. (Before, the decision came after the decrement,
/// so a node receiving 16 cached it.)
#[test]
fn inserts_are_stored_only_from_htl_15_as_received() {
    for (htl, kept) in [
        (18u8, false),
        (17, false),
        (16, false),
        (15, true),
        (9, true),
    ] {
        let (mut n, mut r, key) = permissive_node();
        send_insert(
            &mut n,
            0,
            PeerId(2),
            (50, key, htl, KeyKind::Chk),
            vec![7; 32],
            &mut EmptyStore,
            &mut r,
        );
        let a = drain(&mut n);
        assert_eq!(
            a.iter().any(|x| matches!(x, Action::StoreBlock { .. })),
            kept,
            "htl {htl}: {a:?}"
        );
        assert!(
            sends(&a)
                .iter()
                .any(|(_, m)| matches!(m, Message::Insert { .. })),
            "htl {htl}: routed on"
        );
    }
}

/// An insert whose route ends above the storing level is stored nowhere:
/// not by a forwarder (before, one kept it, often the publisher's first
/// hop, which then answered probes for what its neighbour inserted), not
/// by the inserter.
#[test]
fn insert_whose_route_ends_above_the_storing_level_is_stored_nowhere() {
    let (key, b) = block(9);
    // (At 16 it would go on at 15 under a fresh id, back to that peer.)
    for htl in [18u8, 17] {
        // One peer (the upstream): the insert has nowhere to go.
        let (mut n, mut r) = node(1, Config::default());
        send_insert(
            &mut n,
            0,
            PeerId(1),
            (77, key, htl, KeyKind::Chk),
            b.clone(),
            &mut EmptyStore,
            &mut r,
        );
        let a = drain(&mut n);
        assert!(
            !a.iter().any(|x| matches!(x, Action::StoreBlock { .. })),
            "htl {htl}: {a:?}"
        );
        assert!(sends(&a)
            .iter()
            .any(|(to, m)| *to == PeerId(1) && matches!(m, Message::RouteNotFound { id: 77, .. })));
    }
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
