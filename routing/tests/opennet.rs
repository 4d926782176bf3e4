//! Unit tests of the opennet admission rules that make an eclipse
//! expensive (issue 15): an unknown dialer is at most a seed client,
//! replacement of established peers is rate-limited, and usefulness is
//! data actually delivered.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use lichen_routing::*;

fn me() -> NodeRef {
    NodeRef {
        location: Location(0),
        address: b"me".as_slice().into(),
    }
}

/// A store holding one block.
struct One(Key, Vec<u8>);

impl BlockSource for One {
    fn get(&mut self, key: &Key, _: KeyKind) -> Option<Block> {
        (*key == self.0).then(|| self.1.clone())
    }
}

fn dropped(actions: &[Action]) -> Vec<PeerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Disconnect {
                peer,
                why: Disconnect::LeastUseful,
            } => Some(*peer),
            _ => None,
        })
        .collect()
}

#[test]
fn an_uninvited_dialer_is_at_most_a_seed_client_even_with_room() {
    let cfg = Config {
        max_peers: 5,
        ..Config::default()
    };
    let (mut n, mut r) = node(1, cfg.clone());
    n.set_noderef(me());
    // Room for four more, but nobody was invited: a stranger that dials
    // in is not a peer, only a seed client.
    assert!(!n.accept_opennet_peer(10, PeerId(9), Location(9), &mut r));
    assert!(n.accept_seed_client(10, PeerId(9)));
    assert_eq!(n.peer_count(), 1);
    // Our announcement invites as many dialers as we have room for.
    n.handle_local_request(20, LocalRequest::Announce, &mut r);
    drain(&mut n);
    assert_eq!(n.invitations(20), 4);
    for p in 10..14 {
        assert!(n.accept_opennet_peer(30, PeerId(p), Location(p << 58), &mut r));
    }
    assert_eq!(n.invitations(30), 0);
    assert_eq!(n.peer_count(), 5);
    // A seed client this node now wants as a peer (its announcement made
    // us ask for it) is promoted: it is no longer a seed client.
    let (mut n, mut r) = node(1, cfg.clone());
    assert!(n.accept_seed_client(10, PeerId(9)));
    assert!(n.accept_requested_peer(20, PeerId(9), Location(9), &mut r));
    assert_eq!((n.peer_count(), n.seed_client_count()), (2, 0));
    // Invitations expire.
    let (mut n, mut r) = node(1, cfg.clone());
    n.set_noderef(me());
    n.handle_local_request(0, LocalRequest::Announce, &mut r);
    drain(&mut n);
    let late = cfg.invite_ttl + 1;
    assert!(!n.accept_opennet_peer(late, PeerId(9), Location(9), &mut r));
}

#[test]
fn a_fold_offer_made_invites_one_dialer() {
    let cfg = Config {
        max_peers: 5,
        ..Config::default()
    };
    let (mut n, mut r) = node(2, cfg);
    n.set_noderef(me());
    let (key, b) = block(3);
    let mut store = One(key, b);
    // A request arriving at the caching level finds the block here: we
    // answer with it and offer our noderef, so its requester side may
    // dial us once.
    n.handle_message(
        10,
        PeerId(1),
        Message::Request {
            id: 1,
            key,
            htl: 12,
            kind: KeyKind::Chk,
        },
        &mut store,
        &mut r,
    );
    assert!(sends(&drain(&mut n))
        .iter()
        .any(|(_, m)| matches!(m, Message::FoldOffer { .. })));
    assert!(n.accept_opennet_peer(20, PeerId(9), Location(9), &mut r));
    assert!(!n.accept_opennet_peer(20, PeerId(10), Location(10), &mut r));
}

#[test]
fn replacement_is_rate_limited_however_many_connections_were_asked_for() {
    // Full, every peer past its grace: connections the node asked for
    // while it still had room come up together. Only the first may push
    // an established peer out; the next only after replace_interval.
    let cfg = Config {
        max_peers: 4,
        peer_grace: 1_000,
        fold_min_interval: 30_000,
        replace_interval: 30_000,
        ..Config::default()
    };
    let (mut n, mut r) = node(4, cfg);
    for p in 10..13 {
        n.accept_requested_peer(5_000, PeerId(p), Location(p << 58), &mut r);
    }
    assert_eq!(dropped(&drain(&mut n)).len(), 1, "one drop per interval");
    assert_eq!(n.peer_count(), 4);
    assert!(!n.wants_peer(20_000, Location(9)));
    assert!(!n.accept_requested_peer(20_000, PeerId(13), Location(13 << 58), &mut r));
    assert!(n.accept_requested_peer(35_000, PeerId(14), Location(14 << 58), &mut r));
    assert_eq!(dropped(&drain(&mut n)).len(), 1);
}

#[test]
fn only_delivered_data_makes_a_peer_useful() {
    // Three peers. One delivers a block early; the others later answer
    // DataNotFound at once (a black hole's cheapest answer) and ask us
    // for blocks we serve. When a newcomer comes, the one that delivered
    // data stays.
    let cfg = Config {
        max_peers: 3,
        peer_grace: 1_000,
        fold_min_interval: 0,
        ..Config::default()
    };
    let (mut n, mut r) = node(3, cfg);
    n.set_noderef(me());
    let fetch = |n: &mut Node<V>, r: &mut _, now, k: u8| {
        let (key, _) = block(k);
        let RequestId(id) = n.handle_local_request(
            now,
            LocalRequest::Fetch {
                key,
                kind: KeyKind::Chk,
            },
            r,
        );
        (id, forwarded_to(&drain(n), id).unwrap().0)
    };
    let (id, good) = fetch(&mut n, &mut r, 500, 1);
    let b = block(1).1;
    n.handle_message(
        600,
        good,
        Message::DataFound { id, block: b },
        &mut EmptyStore,
        &mut r,
    );
    drain(&mut n);
    // Every other peer answers requests with DataNotFound, later.
    let mut answered = std::collections::BTreeSet::new();
    for k in 2..60u8 {
        let (id, to) = fetch(&mut n, &mut r, 1_500, k);
        if to != good {
            n.handle_message(1_600, to, Message::Accepted { id }, &mut EmptyStore, &mut r);
            n.handle_message(
                1_600,
                to,
                Message::DataNotFound { id },
                &mut EmptyStore,
                &mut r,
            );
            answered.insert(to);
        } else {
            n.handle_message(
                1_600,
                to,
                Message::RejectedOverload { id },
                &mut EmptyStore,
                &mut r,
            );
        }
        drain(&mut n);
        if answered.len() == 2 {
            break;
        }
    }
    assert_eq!(answered.len(), 2);
    // And they ask us for a block we serve (data we deliver to them).
    let (key, b) = block(99);
    let mut store = One(key, b);
    for (i, &p) in answered.iter().enumerate() {
        n.handle_message(
            1_700,
            p,
            Message::Request {
                id: 1_000 + i as u64,
                key,
                htl: 18,
                kind: KeyKind::Chk,
            },
            &mut store,
            &mut r,
        );
    }
    drain(&mut n);
    n.handle_local_request(1_900, LocalRequest::Announce, &mut r);
    drain(&mut n);
    assert!(n.accept_opennet_peer(2_000, PeerId(9), Location(9), &mut r));
    let d = dropped(&drain(&mut n));
    assert_eq!(d.len(), 1);
    assert_ne!(d[0], good, "the peer that delivered data was dropped");
}

#[test]
fn an_announcement_through_a_seed_goes_to_that_seed_and_ends_with_it() {
    // Peers at 1/16, 2/16, 3/16 of the circle; we are at 0, so a greedy
    // announcement would go to peer 1 first.
    let (mut n, mut r) = node(3, Config::default());
    n.set_noderef(me());
    n.announce_via(10, PeerId(3), &mut r);
    let first = sends(&drain(&mut n));
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, PeerId(3));
    let Message::Announce { id, .. } = first[0].1 else {
        panic!("not an announcement: {first:?}");
    };
    // The seed refuses it: the announcement does not go on to the other
    // peers (a greedy one would backtrack to them).
    n.handle_message(
        20,
        PeerId(3),
        Message::RejectedOverload { id },
        &mut EmptyStore,
        &mut r,
    );
    let after = sends(&drain(&mut n));
    assert!(
        after
            .iter()
            .all(|(_, m)| !matches!(m, Message::Announce { .. })),
        "{after:?}"
    );
    // Through a node that is not a peer: nothing is sent.
    n.announce_via(30, PeerId(7), &mut r);
    assert!(sends(&drain(&mut n)).is_empty());
    // The greedy one goes to the nearest peer.
    n.handle_local_request(40, LocalRequest::Announce, &mut r);
    let greedy = sends(&drain(&mut n));
    assert_eq!(greedy.first().map(|s| s.0), Some(PeerId(1)), "{greedy:?}");
}

/// A node at location 0 with `max_peers` 8 and peers at `locs` (ids 1, 2,
/// …), its noderef set.
fn opennet_node(locs: &[u64], cfg: Config) -> (Node<V>, rand_chacha::ChaCha8Rng) {
    let mut r = rng();
    let mut n = Node::new(cfg, Location(0), sha_verify as V);
    for (i, &l) in locs.iter().enumerate() {
        n.add_peer(0, PeerId(i as u64 + 1), Location(l), &mut r);
    }
    n.set_noderef(me());
    (n, r)
}

/// The announcements a node sends while its timers run for `ms`.
fn announcements_within(n: &mut Node<V>, r: &mut rand_chacha::ChaCha8Rng, ms: u64) -> Vec<Message> {
    let mut out = Vec::new();
    let mut now = 0;
    while now <= ms {
        n.handle_timeout(now, r);
        out.extend(
            sends(&drain(n))
                .into_iter()
                .map(|(_, m)| m)
                .filter(|m| matches!(m, Message::Announce { .. })),
        );
        now += 1_000;
    }
    out
}

/// The link-length refresh: a node whose peers crowd a few link-length
/// classes announces itself toward a location in an empty class (neither
/// its longest class, which holds a peer, nor its own neighbourhood),
/// about once per `refresh_interval`; with the classes balanced off, or
/// with fewer than half its peers (ordinary announcements then), never.
#[test]
fn a_node_short_of_some_link_lengths_announces_toward_them() {
    let cfg = Config {
        max_peers: 8,
        refresh_interval: 10_000,
        ..Config::default()
    };
    // Classes 1 (one peer) and about 40 (four peers).
    let locs = [1 << 62, 1 << 22, 2 << 22, 3 << 22, u64::MAX - (1 << 22)];
    let (mut n, mut r) = opennet_node(&locs, cfg.clone());
    // The embedder learns when to call (the first refresh is its only timer).
    assert!(n
        .poll_timeout()
        .is_some_and(|t| (5_000..15_000).contains(&t)));
    // (While one is unanswered no other starts: a few minutes for several.)
    let sent = announcements_within(&mut n, &mut r, 300_000);
    // (An unanswered one goes on to the next peer under the same id.)
    let mut ids: Vec<u64> = sent.iter().filter_map(Message::id).collect();
    ids.dedup();
    assert!((3..=30).contains(&ids.len()), "{} refreshes", ids.len());
    let deepest = locs
        .iter()
        .map(|&l| Location(l).distance(Location(0)).leading_zeros())
        .max()
        .unwrap();
    for m in &sent {
        let Message::Announce {
            noderef, target, ..
        } = m
        else {
            unreachable!()
        };
        assert_eq!(noderef, &me());
        let t = target.expect("a refresh names its target");
        let class = t.distance(Location(0)).leading_zeros();
        assert!(class > 1 && class < deepest, "class {class}");
    }
    assert_eq!(n.stats().link_refreshes, ids.len() as u64);
    // Off: no refresh.
    let (mut n, mut r) = opennet_node(
        &locs,
        Config {
            balance_link_lengths: false,
            ..cfg.clone()
        },
    );
    assert_eq!(n.poll_timeout(), None);
    assert!(announcements_within(&mut n, &mut r, 60_000).is_empty());
    // Three peers of eight: the ordinary announcements (to our own
    // location, no target) are the ones that run.
    let (mut n, mut r) = opennet_node(&locs[..3], cfg);
    let sent = announcements_within(&mut n, &mut r, 60_000);
    assert!(sent
        .iter()
        .all(|m| matches!(m, Message::Announce { target: None, .. })));
}

/// The refresh asks of each class what a full table can give every class
/// at once: 6 peers over 9 classes is one each (rounded down, at least
/// one; rounded up, no table could give every class its share of a large
/// network, and every node refreshed, dropping a peer for each new one, for
/// ever), and it asks nothing of the five classes next to our own
/// neighbourhood (`REFRESH_SKIPS`: a few dozen nodes each at most). A
/// class it asks of that is empty is refreshed.
#[test]
fn a_full_node_with_every_class_held_does_not_refresh() {
    let cfg = Config {
        max_peers: 6,
        refresh_interval: 10_000,
        ..Config::default()
    };
    // Classes 1, 2, 3, 6 and the deepest, 9, on both sides: classes 4, 5,
    // 7 and 8 are empty, but they are the five next to our neighbourhood.
    let held = [
        1 << 62,
        1 << 61,
        1 << 60,
        1 << 57,
        1 << 54,
        u64::MAX - (1 << 54),
    ];
    let (mut n, mut r) = opennet_node(&held, cfg.clone());
    assert!(announcements_within(&mut n, &mut r, 300_000).is_empty());
    assert_eq!(n.stats().link_refreshes, 0);
    // Class 3's peer moved to class 1: class 3 is empty.
    let mut gap = held;
    gap[2] = (1 << 62) + 9;
    let (mut n, mut r) = opennet_node(&gap, cfg);
    let sent = announcements_within(&mut n, &mut r, 300_000);
    assert!(!sent.is_empty());
    for m in &sent {
        let Message::Announce { target, .. } = m else {
            unreachable!()
        };
        let t = target.expect("a refresh names its target");
        assert_eq!(t.distance(Location(0)).leading_zeros(), 3);
    }
}

/// New peers in classes that already hold theirs do not speed the
/// refresh up again: it keeps backing off while its class stays empty.
#[test]
fn peers_in_full_classes_do_not_reset_the_refresh_backoff() {
    let cfg = Config {
        max_peers: 12,
        refresh_interval: 10_000,
        ..Config::default()
    };
    // Classes 1, 3, 4, 6 and the deepest, 9: class 2 is empty (and the
    // five next to our neighbourhood, which the refresh leaves alone).
    let locs = [
        1 << 62,
        1 << 60,
        1 << 59,
        1 << 57,
        1 << 54,
        u64::MAX - (1 << 54),
    ];
    let (mut n, mut r) = opennet_node(&locs, cfg);
    let mut refreshes = 0;
    let mut next = 7;
    let mut now = 0;
    while now <= 600_000 {
        n.handle_timeout(now, &mut r);
        // Each announcement is answered at once (no one wanted us).
        for (to, m) in sends(&drain(&mut n)) {
            if let Message::Announce { id, .. } = m {
                refreshes += 1;
                n.handle_message(
                    now,
                    to,
                    Message::AnnounceReply { id },
                    &mut EmptyStore,
                    &mut r,
                );
                drain(&mut n);
            }
        }
        // Every 20 s a peer comes in class 1 (which has its share), then
        // leaves again: the table stays below full.
        if now % 20_000 == 0 {
            n.add_peer(now, PeerId(next), Location((1 << 62) + next), &mut r);
            n.remove_peer(now, PeerId(next - 1).max(PeerId(7)), &mut r);
            next += 1;
        }
        now += 1_000;
    }
    // Backing off from 10 s (about 10, 20, 40, 80, 160, 320 s): six or so
    // in ten minutes; reset by each of the 30 peers, about one every 15 s.
    let refreshes = refreshes as u64;
    assert!(
        n.stats().link_refreshes >= 2,
        "{}",
        n.stats().link_refreshes
    );
    assert!(
        n.stats().link_refreshes <= 10,
        "{}",
        n.stats().link_refreshes
    );
    assert!(refreshes >= n.stats().link_refreshes);
}

/// A targeted announcement is routed toward its target, not toward the
/// announcer's location, and the target goes on with it.
#[test]
fn a_targeted_announcement_is_routed_toward_its_target() {
    // Peers at 1/16 (id 1), 2/16 (id 2) and 3/16 (id 3) of the circle.
    let (mut n, mut r) = node(3, Config::default());
    let (mut n2, mut r2) = node(3, Config::default());
    let announcer = NodeRef {
        location: Location(1 << 60),
        address: b"newcomer".as_slice().into(),
    };
    let announce = |target| Message::Announce {
        id: 5,
        htl: 10,
        noderef: announcer.clone(),
        target,
        unreachable: false,
        room: None,
    };
    let forwarded = |n: &mut Node<V>, r: &mut rand_chacha::ChaCha8Rng, m| {
        n.handle_message(5_000, PeerId(2), m, &mut EmptyStore, r);
        sends(&drain(n))
            .into_iter()
            .find(|(_, m)| matches!(m, Message::Announce { .. }))
            .unwrap()
    };
    // Untargeted: toward the announcer (peer 1, at 1/16 of the circle).
    let (to, m) = forwarded(&mut n, &mut r, announce(None));
    assert_eq!(to, PeerId(1));
    assert!(matches!(m, Message::Announce { target: None, .. }));
    // Targeted at 3/16: toward peer 3, the target kept.
    let (to, m) = forwarded(&mut n2, &mut r2, announce(Some(Location(3 << 60))));
    assert_eq!(to, PeerId(3));
    assert!(matches!(m, Message::Announce { target: Some(Location(t)), .. } if t == 3 << 60));
}

/// A node of `node(3, …)` at 0 hears from peer 2 the announcement (id 5,
/// HTL 10, toward `target`, with `room`) of a newcomer at 1/16 + 1/64 of
/// the circle, between its peers 1 and 2: whether it dials the newcomer,
/// and the `room` it passes the announcement on with (`None`: it was not
/// passed on but answered with `AnnounceReply`, its room being spent).
fn hear_announcement(target: Option<u64>, room: Option<u8>) -> (bool, Option<Option<u8>>) {
    let announcer = NodeRef {
        location: Location((1 << 60) + (1 << 58)),
        address: b"announcer".as_slice().into(),
    };
    let (mut n, mut r) = node(3, Config::default());
    let m = Message::Announce {
        id: 5,
        htl: 10,
        noderef: announcer.clone(),
        target: target.map(Location),
        unreachable: false,
        room,
    };
    n.handle_message(5_000, PeerId(2), m, &mut EmptyStore, &mut r);
    let out = drain(&mut n);
    let dialed = out
        .iter()
        .any(|a| matches!(a, Action::Connect { noderef } if *noderef == announcer));
    let sent = sends(&out);
    let passed = announced_room(&sent);
    let replied = sent
        .iter()
        .any(|(to, m)| *to == PeerId(2) && matches!(m, Message::AnnounceReply { id: 5 }));
    assert_ne!(passed.is_some(), replied, "passed on or answered: {sent:?}");
    (dialed, passed)
}

/// A refresh asks for a link of one length: only the nodes at that length
/// from the announcer connect to it; an ordinary announcement is answered
/// by any node on its way that wants a peer.
#[test]
fn only_nodes_at_the_length_a_refresh_asks_for_connect_to_it() {
    // We are at 0, the announcer at 1/16 + 1/64 of the circle (between
    // peers 1 and 2): we are a link of class 3 for it (a distance in
    // [1/16, 1/8)).
    let at = (1 << 60) + (1 << 58);
    let connects = |target: Option<u64>| hear_announcement(target, None).0;
    assert!(connects(None), "an ordinary announcement");
    // A target 1/16 from it: class 3, ours.
    assert!(
        connects(Some(at + (1 << 60) + 5)),
        "a refresh for our length"
    );
    // A target 1/8 from it: class 2.
    assert!(
        !connects(Some(at + (1 << 61) + 5)),
        "a refresh for another length"
    );
}

/// An announcement carries how many more nodes may take the newcomer: a
/// node that dials it passes on one less; a node that takes the last
/// place, or hears it with none left (and leaves the newcomer alone: it
/// would refuse the link), ends it there, answering as the last hop does,
/// for every node after it would leave the newcomer alone too.
#[test]
fn an_announcement_is_taken_by_no_more_nodes_than_it_has_room_for() {
    let answer = |room| hear_announcement(None, room);
    assert_eq!(answer(Some(3)), (true, Some(Some(2))));
    assert_eq!(answer(Some(1)), (true, None));
    assert_eq!(answer(Some(0)), (false, None));
    // From a node that sends no room: no limit, passed on as it came.
    assert_eq!(answer(None), (true, Some(None)));
}

/// A seed that keeps a newcomer's seed-client link as a peer passes its
/// announcement on with the room it came with: the newcomer counted that
/// link when it announced through it.
#[test]
fn a_seed_that_promotes_its_seed_client_leaves_the_room_as_it_came() {
    let cfg = Config {
        max_peers: 5,
        ..Config::default()
    };
    let (mut n, mut r) = node(1, cfg);
    n.set_noderef(me());
    let newcomer = PeerId(9);
    assert!(n.accept_seed_client(10, newcomer));
    let announce = newcomer_announce(3 << 60, Some(1));
    n.handle_message(20, newcomer, announce, &mut EmptyStore, &mut r);
    assert_eq!((n.peer_count(), n.seed_client_count()), (2, 0), "promoted");
    let passed = announced_room(&sends(&drain(&mut n)));
    assert_eq!(passed, Some(Some(1)));
}

/// A newcomer announcing says how many peers it has room for (as many as
/// it invites), and at least one when full (a refresh).
#[test]
fn a_newcomer_announces_its_room() {
    let (mut a, mut r) = node(2, Config::default());
    a.set_noderef(me());
    a.handle_local_request(0, LocalRequest::Announce, &mut r);
    let room = announced_room(&sends(&drain(&mut a)));
    let max = Config::default().max_peers;
    assert_eq!(room, Some(Some(u8::try_from(max - 2).unwrap())));
    assert_eq!(a.invitations(0), max - 2);
}

/// A newcomer behind NAT between peers 1 and 2 of `node(3, …)` (at 1/16
/// and 2/16 of the circle), and its announcement (id 5, HTL 10).
fn newcomer_behind_nat() -> (NodeRef, Message) {
    let newcomer = NodeRef {
        location: Location((1 << 60) + (1 << 58)),
        address: b"newcomer".as_slice().into(),
    };
    let announce = Message::Announce {
        id: 5,
        htl: 10,
        noderef: newcomer.clone(),
        target: None,
        unreachable: true,
        room: Some(3),
    };
    (newcomer, announce)
}

/// An announcement from behind NAT: a node that wants the newcomer asks
/// to be dialed (`AnnounceOffer` back where the announcement came from,
/// its dial invited) instead of dialing it; it passes the announcement on
/// still marked, and passes its next hop's offer upstream; offers nobody
/// asked for are ignored.
#[test]
fn an_announcement_from_behind_nat_is_answered_with_an_offer_to_be_dialed() {
    let (mut n, mut r) = node(3, Config::default());
    n.set_noderef(me());
    let (_, announce) = newcomer_behind_nat();
    n.handle_message(5_000, PeerId(2), announce, &mut EmptyStore, &mut r);
    let out = drain(&mut n);
    assert!(
        !out.iter().any(|a| matches!(a, Action::Connect { .. })),
        "nobody can dial it"
    );
    let s = sends(&out);
    assert!(s.contains(&(
        PeerId(2),
        Message::AnnounceOffer {
            id: 5,
            noderef: me(),
            punch: false,
        }
    )));
    let (next, fwd) = s
        .iter()
        .find(|(_, m)| matches!(m, Message::Announce { .. }))
        .unwrap()
        .clone();
    assert!(matches!(
        fwd,
        Message::Announce {
            unreachable: true,
            room: Some(2),
            ..
        }
    ));
    let far = NodeRef {
        location: Location(9 << 58),
        address: b"far".as_slice().into(),
    };
    let offer = |id| Message::AnnounceOffer {
        id,
        noderef: far.clone(),
        punch: false,
    };
    n.handle_message(5_010, next, offer(5), &mut EmptyStore, &mut r);
    assert_eq!(sends(&drain(&mut n)), vec![(PeerId(2), offer(5))]);
    let other = (1..=3)
        .map(PeerId)
        .find(|&p| p != next && p != PeerId(2))
        .unwrap();
    n.handle_message(5_020, other, offer(5), &mut EmptyStore, &mut r);
    n.handle_message(5_020, next, offer(6), &mut EmptyStore, &mut r);
    assert!(sends(&drain(&mut n)).is_empty());
    assert_eq!(n.stats().unexpected_replies, 2);
}

/// A node behind NAT marks its announcements, and dials the nodes that
/// offer to be dialed; it offers no fold of its own.
#[test]
fn a_node_behind_nat_announces_marked_and_dials_the_offers() {
    let (mut a, mut r) = node(2, Config::default());
    a.set_noderef(me());
    a.set_behind_nat(true);
    let RequestId(id) = a.handle_local_request(0, LocalRequest::Announce, &mut r);
    let (to, m) = sends(&drain(&mut a))
        .into_iter()
        .find(|(_, m)| matches!(m, Message::Announce { .. }))
        .unwrap();
    assert!(matches!(
        m,
        Message::Announce {
            unreachable: true,
            room: Some(_),
            ..
        }
    ));
    let far = NodeRef {
        location: Location(9 << 58),
        address: b"far".as_slice().into(),
    };
    a.handle_message(
        100,
        to,
        Message::AnnounceOffer {
            id,
            noderef: far.clone(),
            punch: false,
        },
        &mut EmptyStore,
        &mut r,
    );
    assert!(drain(&mut a)
        .iter()
        .any(|x| matches!(x, Action::Connect { noderef } if *noderef == far)));
    // Serving a block from its store, it offers no fold (nobody could
    // take it); the same node reachable does.
    let (key, data) = block(1);
    let req = |id| Message::Request {
        id,
        key,
        htl: 3,
        kind: KeyKind::Chk,
    };
    let folds = |a: &mut Node<V>, r: &mut rand_chacha::ChaCha8Rng, id| {
        a.handle_message(200, PeerId(1), req(id), &mut One(key, data.clone()), r);
        let s = sends(&drain(a));
        assert!(s
            .iter()
            .any(|(_, m)| matches!(m, Message::DataFound { .. })));
        s.iter()
            .any(|(_, m)| matches!(m, Message::FoldOffer { .. }))
    };
    assert!(!folds(&mut a, &mut r, 77));
    a.set_behind_nat(false);
    assert!(folds(&mut a, &mut r, 78));
}

/// Two nodes behind NAT, where the embedder punches: the one on the
/// announcement's path that wants the newcomer starts a punch toward it
/// as initiator and marks its offer `punch`; the newcomer, given that
/// offer, punches back (answering, its link invited) instead of dialing;
/// the marking travels upstream unchanged. Without punching the node
/// behind NAT offers nothing.
#[test]
fn behind_nat_both_a_punch_offer_starts_a_punch_on_each_side() {
    let (newcomer, announce) = newcomer_behind_nat();
    let offers = |punching: bool| {
        let (mut n, mut r) = node(3, Config::default());
        n.set_noderef(me());
        n.set_behind_nat(true);
        n.set_punching(punching);
        n.handle_message(5_000, PeerId(2), announce.clone(), &mut EmptyStore, &mut r);
        drain(&mut n)
    };
    let out = offers(false);
    assert!(!sends(&out)
        .iter()
        .any(|(_, m)| matches!(m, Message::AnnounceOffer { .. })));
    assert!(!out.iter().any(|a| matches!(a, Action::Punch { .. })));
    let out = offers(true);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Punch { noderef, initiator: true } if *noderef == newcomer
    )));
    assert!(sends(&out).contains(&(
        PeerId(2),
        Message::AnnounceOffer {
            id: 5,
            noderef: me(),
            punch: true,
        }
    )));

    // The newcomer's side.
    let (mut a, mut r) = node(2, Config::default());
    a.set_noderef(newcomer);
    a.set_behind_nat(true);
    a.set_punching(true);
    let RequestId(id) = a.handle_local_request(0, LocalRequest::Announce, &mut r);
    let (to, _) = sends(&drain(&mut a))
        .into_iter()
        .find(|(_, m)| matches!(m, Message::Announce { .. }))
        .unwrap();
    let invited = a.invitations(100);
    a.handle_message(
        100,
        to,
        Message::AnnounceOffer {
            id,
            noderef: me(),
            punch: true,
        },
        &mut EmptyStore,
        &mut r,
    );
    let out = drain(&mut a);
    assert!(out.iter().any(|x| matches!(
        x,
        Action::Punch { noderef, initiator: false } if *noderef == me()
    )));
    assert!(!out.iter().any(|x| matches!(x, Action::Connect { .. })));
    assert_eq!(a.invitations(100), invited + 1, "its link comes in invited");
}

/// An under-connected node announces again quickly, 1, 2, 4 … s after
/// its first announcement, each time toward a link length it lacks (a
/// target away from its own location); with half its peer limit it
/// stops. (The peers here never answer: an announcement already under
/// way is routed on to the next peer as they time out, under its id.)
#[test]
fn an_under_connected_node_announces_again_quickly_toward_lengths_it_lacks() {
    let (mut a, mut r) = node(3, Config::default());
    a.set_noderef(me());
    let mut seen = std::collections::HashSet::new();
    let mut new_announces = |a: &mut Node<V>| -> Vec<Option<Location>> {
        sends(&drain(a))
            .into_iter()
            .filter_map(|(_, m)| match m {
                Message::Announce { id, target, .. } if seen.insert(id) => Some(target),
                _ => None,
            })
            .collect()
    };
    a.handle_local_request(0, LocalRequest::Announce, &mut r);
    assert_eq!(new_announces(&mut a), vec![None]);
    let mut at = 0;
    for wait in [1_000, 2_000, 4_000] {
        assert!(a.poll_timeout().is_some_and(|t| t <= at + wait));
        at += wait;
        a.handle_timeout(at, &mut r);
        let again = new_announces(&mut a);
        assert_eq!(again.len(), 1, "at {at}: {again:?}");
        assert!(again[0].is_some_and(|t| t != Location(0)), "{again:?}");
    }
    // Half the peer limit: the next one, due 8 s later, is not sent.
    for i in 4..=10 {
        a.add_peer(at, PeerId(i), Location(i << 59), &mut r);
    }
    a.handle_timeout(at + 8_000, &mut r);
    assert_eq!(new_announces(&mut a), vec![]);
}

/// A re-announcement after which the node has more peers than before
/// keeps the quick pace: the next comes 4 s later, not after the doubled
/// wait; one that brought nothing doubles it again.
#[test]
fn a_re_announcement_that_brought_peers_keeps_the_quick_pace() {
    let (mut a, mut r) = node(3, Config::default());
    a.set_noderef(me());
    let mut seen = std::collections::HashSet::new();
    let mut announced = |a: &mut Node<V>| -> usize {
        sends(&drain(a))
            .into_iter()
            .filter(|(_, m)| matches!(m, Message::Announce { id, .. } if seen.insert(*id)))
            .count()
    };
    a.handle_local_request(0, LocalRequest::Announce, &mut r);
    assert_eq!(announced(&mut a), 1);
    // Nothing gained: 1, 2, 4 s, then 8 s.
    let mut at = 0;
    for wait in [1_000, 2_000, 4_000] {
        at += wait;
        a.handle_timeout(at, &mut r);
        assert_eq!(announced(&mut a), 1, "at {at}");
    }
    a.handle_timeout(at + 4_000, &mut r);
    assert_eq!(announced(&mut a), 0, "the next is 8 s away");
    // A peer came: the one 8 s later goes, and the next is 4 s after it.
    a.add_peer(at + 5_000, PeerId(50), Location(5 << 59), &mut r);
    at += 8_000;
    a.handle_timeout(at, &mut r);
    assert_eq!(announced(&mut a), 1);
    at += 4_000;
    a.handle_timeout(at, &mut r);
    assert_eq!(announced(&mut a), 1, "4 s after one that brought a peer");
    // That one brought nothing: 8 s again.
    a.handle_timeout(at + 4_000, &mut r);
    assert_eq!(announced(&mut a), 0);
    a.handle_timeout(at + 8_000, &mut r);
    assert_eq!(announced(&mut a), 1);
}
