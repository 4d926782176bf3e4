//! Unit tests of the routing state machine through its public API.
//! Peers: path folding, the opennet peer limit, seed clients, misbehaving
//! peers and darknet swaps.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use lichen_routing::*;

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
        address: b"src".as_slice().into(),
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
    assert!(
        matches!(&s[1].1, Message::FoldOffer { id: 3, noderef } if &*noderef.address == b"src")
    );
    // Above the caching level the data source makes no offer: the node
    // that asked it may be the requester.
    src.handle_message(
        1,
        PeerId(1),
        Message::Request {
            id: 4,
            key,
            htl: 17,
            kind: KeyKind::Chk,
        },
        &mut Has(b.clone()),
        &mut r,
    );
    let s = sends(&drain(&mut src));
    assert!(
        matches!(&s[..], [(PeerId(1), Message::DataFound { id: 4, .. })]),
        "{s:?}"
    );
}

/// Fetch `key` for the local user through a node that wants peers, get the
/// block and a fold offer from the peer that answered, then run every
/// timer: all the actions after the offer.
fn own_fetch_with_offer(key: Key, b: &[u8], offer: &NodeRef) -> Vec<Action> {
    let (mut n, mut r) = node(2, Config::default());
    n.set_noderef(NodeRef {
        location: Location(0),
        address: b"me".as_slice().into(),
    });
    assert!(n.wants_peer(1, Location(9)));
    let (id, to) = local_fetch(&mut n, 0, key, &mut r);
    n.handle_message(
        1,
        to,
        Message::DataFound {
            id,
            block: b.to_vec(),
        },
        &mut EmptyStore,
        &mut r,
    );
    drain(&mut n);
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
    let mut all = drain(&mut n);
    while let Some(t) = n.poll_timeout().filter(|&t| t < 1_000_000) {
        n.handle_timeout(t, &mut r);
        all.extend(drain(&mut n));
    }
    // A replayed offer is an offence and does nothing.
    n.handle_message(
        3,
        to,
        Message::FoldOffer {
            id,
            noderef: offer.clone(),
        },
        &mut EmptyStore,
        &mut r,
    );
    assert!(drain(&mut n).is_empty());
    assert!(n.stats().misbehaviour >= 1);
    all
}

/// The requester never path-folds: a data source that answered its
/// request gets no link to it, although the node wants peers. (Before,
/// `on_fold_offer` connected whenever the node wanted a peer.)
#[test]
fn own_requests_never_fold() {
    let (key, b) = block(8);
    let offer = NodeRef {
        location: Location(123),
        address: b"far".as_slice().into(),
    };
    let a = own_fetch_with_offer(key, &b, &offer);
    assert!(
        !a.iter().any(|x| matches!(x, Action::Connect { .. })),
        "{a:?}"
    );
    assert!(sends(&a).is_empty(), "{a:?}");
}

/// A forwarded request `id` arriving from peer 1 at `htl` at a node that
/// wants peers is answered by its downstream with a block and a fold
/// offer: the actions right after the offer, and the node.
fn forwarded_with_offer(
    n: &mut Node<V>,
    r: &mut rand_chacha::ChaCha8Rng,
    id: u64,
    htl: u8,
    offer: &NodeRef,
) -> Vec<Action> {
    let (key, b) = block(8);
    n.handle_message(
        id,
        PeerId(1),
        Message::Request {
            id,
            key,
            htl,
            kind: KeyKind::Chk,
        },
        &mut EmptyStore,
        r,
    );
    // Above the caching level it goes on under a fresh id: the answers
    // come back under that one.
    let (to, down) = sends(&drain(n))
        .into_iter()
        .find_map(|(to, m)| match m {
            Message::Request { id, .. } => Some((to, id)),
            _ => None,
        })
        .unwrap();
    assert_eq!(down == id, htl <= 16, "{htl}");
    n.handle_message(
        id,
        to,
        Message::DataFound { id: down, block: b },
        &mut EmptyStore,
        r,
    );
    drain(n);
    n.handle_message(
        id,
        to,
        Message::FoldOffer {
            id: down,
            noderef: offer.clone(),
        },
        &mut EmptyStore,
        r,
    );
    drain(n)
}

/// Forwarded traffic still folds, but only once it arrived at the caching
/// level or below (Hyphanet's rule: the requester's neighbours never
/// fold), and the connection is asked for after a random delay, not as
/// the data passes.
#[test]
fn forwarded_requests_fold_after_a_random_delay_at_the_caching_level_only() {
    let mut delays = std::collections::BTreeSet::new();
    let (mut n, mut r) = node(3, Config::default());
    n.set_noderef(NodeRef {
        location: Location(0),
        address: b"me".as_slice().into(),
    });
    let offer = NodeRef {
        location: Location(7 << 56),
        address: b"src".as_slice().into(),
    };
    for round in 0..8u64 {
        let now = 1_000_000 * round;
        n.handle_timeout(now, &mut r);
        drain(&mut n);
        // Above the caching level: relayed unchanged, never taken.
        for (id, htl) in [(now + 1, 18), (now + 2, 17)] {
            let a = forwarded_with_offer(&mut n, &mut r, id, htl, &offer);
            assert_eq!(
                sends(&a),
                vec![(
                    PeerId(1),
                    Message::FoldOffer {
                        id,
                        noderef: offer.clone()
                    }
                )]
            );
            assert!(!a.iter().any(|x| matches!(x, Action::Connect { .. })));
        }
        // At the caching level: taken (our noderef goes upstream), the
        // connection asked for later.
        let id = now + 3;
        let a = forwarded_with_offer(&mut n, &mut r, id, 16, &offer);
        assert!(
            sends(&a).iter().any(|(to, m)| *to == PeerId(1)
                && matches!(m, Message::FoldOffer { noderef, .. } if &*noderef.address == b"me")),
            "{a:?}"
        );
        assert!(!a.iter().any(|x| matches!(x, Action::Connect { .. })));
        let connect = Action::Connect {
            noderef: offer.clone(),
        };
        loop {
            let due = n.poll_timeout().unwrap();
            assert!(due >= id && due < id + n.config().fold_delay_max, "{due}");
            n.handle_timeout(due, &mut r);
            let a = drain(&mut n);
            if !a.is_empty() {
                assert_eq!(a, vec![connect]);
                delays.insert(due - id);
                break;
            }
        }
    }
    assert!(delays.len() >= 6, "the delay is random: {delays:?}");
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
        address: b"me".as_slice().into(),
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
            address: b"src".as_slice().into(),
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
                if &*noderef.address == b"me" {
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
        balance_link_lengths: false,
        ..Config::default()
    };
    let (mut n, mut r) = node(3, cfg);
    assert!(!n.wants_peer(10, Location(9)), "young peers are protected");
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
    // The newcomer dials in after our announcement invited it.
    n.set_noderef(NodeRef {
        location: Location(0),
        address: b"me".as_slice().into(),
    });
    n.handle_local_request(1900, LocalRequest::Announce, &mut r);
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
fn kept_peers_are_never_dropped_as_the_least_useful() {
    let peers = [1 << 60, 2 << 60, 3 << 60];
    let dropped_for_a_newcomer = |keep: &[u64]| newcomer_at_with(&peers, 9, keep, false);
    // None delivered anything: the lowest id goes first...
    assert_eq!(dropped_for_a_newcomer(&[]), (true, vec![PeerId(1)]));
    // ...unless it is kept (the tunnel layer's guards).
    assert_eq!(dropped_for_a_newcomer(&[1, 2]), (true, vec![PeerId(3)]));
    // All kept: nobody is dropped, the newcomer is not taken.
    assert_eq!(dropped_for_a_newcomer(&[1, 2, 3]), (false, vec![]));
}

/// A full node at location 0 with peers at `locs` (ids 1, 2, …, all past
/// their grace), invited to take a newcomer at `newcomer`: whether it
/// took it, and whom it dropped.
fn newcomer_at(locs: &[u64], newcomer: u64, keep: &[u64]) -> (bool, Vec<PeerId>) {
    newcomer_at_with(locs, newcomer, keep, true)
}

/// [`newcomer_at`], with `balance_link_lengths` as given.
fn newcomer_at_with(
    locs: &[u64],
    newcomer: u64,
    keep: &[u64],
    balance: bool,
) -> (bool, Vec<PeerId>) {
    let cfg = Config {
        max_peers: locs.len(),
        peer_grace: 1000,
        fold_min_interval: 0,
        balance_link_lengths: balance,
        ..Config::default()
    };
    let mut r = rng();
    let mut n = Node::new(cfg, Location(0), sha_verify as V);
    for (i, &l) in locs.iter().enumerate() {
        n.add_peer(0, PeerId(i as u64 + 1), Location(l), &mut r);
    }
    n.keep_peers(keep.iter().map(|&p| PeerId(p)));
    n.set_noderef(NodeRef {
        location: Location(0),
        address: b"me".as_slice().into(),
    });
    n.handle_local_request(1900, LocalRequest::Announce, &mut r);
    drain(&mut n);
    let taken = n.accept_opennet_peer(2000, PeerId(99), Location(newcomer), &mut r);
    let dropped = drain(&mut n)
        .iter()
        .filter_map(|x| match x {
            Action::Disconnect { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect();
    (taken, dropped)
}

/// Full, a node spreads its peers over the link-length classes (class k:
/// distances in [2^-(k+1), 2^-k) of the circle): a newcomer in a class
/// emptier than another replaces a peer of the most crowded class, never
/// one of a class as sparse as its own; in its own class it may replace
/// the least useful peer. Off, the least useful peer goes whatever its
/// length (the test above).
#[test]
fn full_nodes_spread_their_peers_over_link_length_classes() {
    // Classes: 1 (peer 1, a quarter of the circle away), 42 (peers 2 and
    // 3, about 2^-42 away), 43 (peer 4, the nearest).
    let peers = [1 << 62, 2 << 20, 3 << 20, 1 << 20];
    // A newcomer in an empty class (3): a peer of class 42 goes, the
    // least useful of the two (none delivered: the lower id).
    assert_eq!(newcomer_at(&peers, 1 << 60, &[]), (true, vec![PeerId(2)]));
    // Also for a newcomer in class 1, which holds one peer: class 42
    // holds more.
    assert_eq!(newcomer_at(&peers, 3 << 61, &[]), (true, vec![PeerId(2)]));
    // A newcomer in class 42 replaces one of class 42 (the sizes stay).
    assert_eq!(newcomer_at(&peers, 5 << 19, &[]), (true, vec![PeerId(2)]));
    // With both class-42 peers kept, a class-1 newcomer may replace only
    // peer 1 (as sparse a class): it does.
    assert_eq!(
        newcomer_at(&peers, 3 << 61, &[2, 3]),
        (true, vec![PeerId(1)])
    );
    // With peer 1 kept too, nothing may go: the classes would get less
    // even (class 43 would lose its only peer for class 1's second).
    assert_eq!(newcomer_at(&peers, 3 << 61, &[1, 2, 3]), (false, vec![]));
    // A newcomer nearer than every peer opens a deeper class: the most
    // crowded class (42) gives up a peer for it.
    assert_eq!(newcomer_at(&peers, 1 << 10, &[2]), (true, vec![PeerId(3)]));
    // The nearest peer on each side (ring neighbours, which greedy
    // routing needs to end at the node nearest a key) is never dropped
    // for balance, however crowded its class: here class 43 holds both,
    // so class 1's only peer goes.
    let ring = [1 << 20, u64::MAX - (1 << 20), 1 << 62];
    assert_eq!(newcomer_at(&ring, 1 << 60, &[]), (true, vec![PeerId(3)]));
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
fn a_full_node_keeps_a_newcomer_as_a_seed_client_for_its_announcement() {
    let cfg = Config {
        max_peers: 3,
        max_seed_clients: 2,
        ..Config::default()
    };
    let (mut n, mut r) = node(3, cfg);
    n.set_noderef(NodeRef {
        location: Location(0),
        address: b"seed".as_slice().into(),
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
        address: b"newcomer".as_slice().into(),
    };
    let announce = |id| Message::Announce {
        id,
        htl: 18,
        noderef: me.clone(),
        target: None,
        unreachable: false,
        room: None,
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
        matches!(fwd, Message::Announce { id: 5, ref noderef, .. } if &*noderef.address == b"newcomer")
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

#[test]
fn a_node_with_a_swap_under_way_is_nobodys_partner_and_starts_no_other() {
    // Two swaps at once at one node used to leave two nodes at one
    // location: the partner of our first swap took our location while a
    // second partner did too (or we took a third node's meanwhile). Over
    // a darknet's life the locations collapsed onto a few (300 nodes:
    // half the nodes within 2.7 % of the circle, from 40 %).
    let cfg = Config {
        opennet: false,
        swapping: true,
        swap_htl: 1,
        location_reset_one_in: 0,
        pitch_probe_interval: 0,
        ..Config::default()
    };
    let mut r = rng();
    let mut a = Node::new(cfg, Location(0), sha_verify as V);
    a.add_peer(0, PeerId(2), Location(1 << 63), &mut r);
    a.add_peer(0, PeerId(3), Location(3 << 62), &mut r);
    let t = a.poll_timeout().unwrap();
    a.handle_timeout(t, &mut r);
    let first = sends(&drain(&mut a))
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::SwapRequest { .. }))
        .count();
    assert_eq!(first, 1);
    // Its answer is not back; the swap timer comes round again: no
    // second swap.
    for _ in 0..3 {
        let t2 = a.poll_timeout().unwrap();
        a.handle_timeout(t2, &mut r);
        let again = sends(&drain(&mut a))
            .into_iter()
            .any(|(_, m)| matches!(m, Message::SwapRequest { .. }));
        assert!(!again, "a second swap while the first is under way");
    }
    // A walk ends here (HTL 1) with a swap that would shorten every link
    // (its friends sit next to our location): refused, location kept.
    let req = Message::SwapRequest {
        id: 99,
        htl: 1,
        location: Location(1 << 63),
        peer_locations: vec![Location(1 << 50), Location(2 << 50)],
    };
    a.handle_message(t + 1, PeerId(3), req, &mut EmptyStore, &mut r);
    let answer = sends(&drain(&mut a))
        .into_iter()
        .find(|(to, _)| *to == PeerId(3))
        .map(|(_, m)| m);
    assert_eq!(answer, Some(Message::SwapRejected { id: 99 }));
    assert_eq!(a.location(), Location(0));
}

#[test]
fn an_initiator_follows_an_accepted_swap_whatever_the_partners_peer_list_holds() {
    // The partner has moved when its `SwapReply` arrives. A peer list
    // with two equal locations is what a neighbour of two nodes that just
    // swapped holds until both `LocationChanged` are in; refusing on it
    // left two nodes at the initiator's location and none at the
    // partner's (an honest 300-node darknet kept 93 distinct locations of
    // 300 after 300 s of swapping).
    let cfg = Config {
        opennet: false,
        swapping: true,
        swap_htl: 1,
        location_reset_one_in: 0,
        pitch_probe_interval: 0,
        swap_max_stretch: 0.0,
        ..Config::default()
    };
    let mut r = rng();
    let mut a = Node::new(cfg, Location(0), sha_verify as V);
    a.add_peer(0, PeerId(2), Location(1 << 63), &mut r);
    let t = a.poll_timeout().unwrap();
    a.handle_timeout(t, &mut r);
    let id = sends(&drain(&mut a))
        .into_iter()
        .find_map(|(_, m)| match m {
            Message::SwapRequest { id, .. } => Some(id),
            _ => None,
        })
        .unwrap();
    let reply = Message::SwapReply {
        id,
        accepted: true,
        location: Location(1 << 62),
        peer_locations: vec![Location(3 << 61), Location(3 << 61), Location(5 << 60)],
    };
    a.handle_message(t + 1, PeerId(2), reply, &mut EmptyStore, &mut r);
    assert_eq!(a.location(), Location(1 << 62));
}

/// A full node (3 peers of 3, past their grace, one replacement per 30 s)
/// hears at 5 s, from one of its peers, the announcement of a newcomer at
/// 7/64 of the circle that says `room` more nodes may take it; what it
/// does.
fn full_node_hears_a_newcomer(room: Option<u8>) -> (Node<V>, rand_chacha::ChaCha8Rng, Vec<Action>) {
    let cfg = Config {
        max_peers: 3,
        peer_grace: 1000,
        fold_min_interval: 30_000,
        ..Config::default()
    };
    let (mut n, mut r) = node(3, cfg);
    let from = n.peers().next().map(|(p, _)| p).unwrap();
    assert!(n.wants_peer(5_000, Location(7 << 58)));
    let announce = newcomer_announce(7 << 58, room);
    n.handle_message(5_000, from, announce, &mut EmptyStore, &mut r);
    let out = drain(&mut n);
    (n, r, out)
}

#[test]
fn a_full_node_that_asks_for_a_connection_keeps_it_when_it_comes_up() {
    // Full, peers past their grace: an announcement from a newcomer makes
    // the node ask for a link to it (Connect), which spends its
    // once-per-fold_min_interval replacement.
    let (mut n, mut r, out) = full_node_hears_a_newcomer(None);
    let asked = out.iter().any(|a| matches!(a, Action::Connect { .. }));
    assert!(
        asked,
        "a full node with a peer to spare asks for the newcomer"
    );
    // The link comes up 100 ms later. As a stranger's connection it would
    // be refused (the replacement was spent on asking)...
    let newcomer = PeerId(50);
    assert!(!n.wants_peer(5_100, Location(9)));
    // ...but it is the connection the node asked for: kept, and the least
    // useful peer goes.
    assert!(n.accept_requested_peer(5_100, newcomer, Location(7 << 58), &mut r));
    assert_eq!(n.peer_count(), 3);
    assert!(n.peers().any(|(p, _)| p == newcomer));
    let dropped = drain(&mut n)
        .iter()
        .filter(|a| matches!(a, Action::Disconnect { .. }))
        .count();
    assert_eq!(dropped, 1);
}

#[test]
fn a_full_node_that_wants_a_newcomer_with_no_room_left_does_not_dial_but_waits_as_if_it_had() {
    // As above, but the announcement says no node may take the newcomer
    // any more (`room` 0): no Connect (the newcomer would refuse it), yet
    // the node's replacement is spent as if it had asked, so whoever
    // offers itself next (an attacker announcing toward it) finds it no
    // more willing than when it dialed and was refused.
    let (n, _, out) = full_node_hears_a_newcomer(Some(0));
    assert!(!out.iter().any(|a| matches!(a, Action::Connect { .. })));
    let sent = sends(&out);
    assert_eq!(
        announced_room(&sent),
        None,
        "not passed on: nobody after it may take the newcomer"
    );
    assert!(sent
        .iter()
        .any(|(_, m)| matches!(m, Message::AnnounceReply { id: 5 })));
    assert!(!n.wants_peer(5_100, Location(7 << 58)));
    assert!(n.wants_peer(35_100, Location(7 << 58)));
}

#[test]
fn a_seed_client_that_does_not_announce_soon_is_let_go_and_one_that_does_keeps_its_time() {
    let cfg = Config {
        max_peers: 1,
        max_seed_clients: 2,
        seed_client_ttl: 30_000,
        seed_client_silent: 10_000,
        ..Config::default()
    };
    let (mut n, mut r) = node(1, cfg);
    n.set_noderef(NodeRef {
        location: Location(0),
        address: b"seed".as_slice().into(),
    });
    let (silent, speaker) = (PeerId(10), PeerId(11));
    assert!(n.accept_seed_client(0, silent));
    assert!(n.accept_seed_client(0, speaker));
    let me = NodeRef {
        location: Location(3 << 60),
        address: b"newcomer".as_slice().into(),
    };
    n.handle_message(
        5_000,
        speaker,
        Message::Announce {
            id: 5,
            htl: 18,
            noderef: me,
            target: None,
            unreachable: false,
            room: None,
        },
        &mut EmptyStore,
        &mut r,
    );
    drain(&mut n);
    // The silent one holds its slot only `seed_client_silent`.
    n.handle_timeout(10_000, &mut r);
    let gone = drain(&mut n);
    assert!(gone.contains(&Action::Disconnect {
        peer: silent,
        why: Disconnect::SeedClientDone
    }));
    assert!(!gone
        .iter()
        .any(|a| matches!(a, Action::Disconnect { peer, .. } if *peer == speaker)));
    assert_eq!(n.seed_client_count(), 1);
    // Room for the next newcomer.
    assert!(n.accept_seed_client(10_000, PeerId(12)));
}
