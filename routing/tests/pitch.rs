//! The Pitch Black defence (Hyphanet build 1492): a probe block inserted
//! each period, the previous one fetched back, a move to its location
//! when it is gone. The probe is the node's own traffic.
#![allow(clippy::unwrap_used)]

mod common;

use common::sends;
use lichen_routing::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// The CHK rule of the tests, and probe blocks of 32 random bytes.
#[derive(Clone, Copy, Debug)]
struct Probing;

impl Verifier for Probing {
    fn verify(&self, key: &Key, _kind: KeyKind, block: &[u8]) -> bool {
        Sha256::digest(block).as_slice() == key.0
    }

    fn probe_block(&self, rng: &mut dyn RngCore) -> Option<(Key, KeyKind, Block)> {
        let mut b = vec![0u8; 32];
        rng.fill_bytes(&mut b);
        Some((Key(Sha256::digest(&b).into()), KeyKind::Chk, b))
    }
}

const PERIOD: u64 = 100_000;

fn cfg() -> Config {
    Config {
        opennet: false,
        swapping: true,
        location_reset_one_in: 0,
        pitch_probe_interval: PERIOD,
        // No swaps in the way: one every 10^9 ms.
        swap_interval: 1_000_000_000,
        ..Config::default()
    }
}

/// A darknet node at location 0 with three friends, probing.
fn probing(seed: u64) -> (Node<Probing>, ChaCha8Rng) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut n = Node::new(cfg(), Location(0), Probing);
    for i in 1..=3u64 {
        n.add_peer(0, PeerId(i), Location(i << 61), &mut r);
    }
    (n, r)
}

fn drain<V: Verifier>(n: &mut Node<V>) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

/// Run timers until the node sends a message matching `want`; returns
/// the time, the peer and the message, and every action on the way.
fn until_sent<V: Verifier>(
    n: &mut Node<V>,
    r: &mut ChaCha8Rng,
    want: impl Fn(&Message) -> bool,
) -> Option<(u64, PeerId, Message, Vec<Action>)> {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let t = n.poll_timeout()?;
        n.handle_timeout(t, r);
        let acts = drain(n);
        let hit = sends(&acts).into_iter().find(|(_, m)| want(m));
        seen.extend(acts);
        if let Some((to, m)) = hit {
            return Some((t, to, m, seen));
        }
    }
    None
}

fn is_insert(m: &Message) -> bool {
    matches!(m, Message::Insert { .. })
}

fn is_request(m: &Message) -> bool {
    matches!(m, Message::Request { .. })
}

/// The probe insert goes out; the peer takes it and finishes it. Returns
/// the probe's key and the time.
fn insert_probe(n: &mut Node<Probing>, r: &mut ChaCha8Rng) -> (Key, u64) {
    let (t, to, m, acts) = until_sent(n, r, is_insert).expect("a probe insert");
    let Message::Insert { id, key, htl, .. } = m else {
        unreachable!()
    };
    assert_eq!(htl, 18, "the probe leaves at the maximum HTL, as our own");
    assert!(
        !acts.iter().any(|a| matches!(a, Action::StoreBlock { .. })),
        "the probe is not kept in our shared store"
    );
    n.handle_message(t, to, Message::Accepted { id }, &mut EmptyStore, r);
    n.handle_message(t + 1, to, Message::InsertReply { id }, &mut EmptyStore, r);
    let acts = drain(n);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::InsertDone { .. })),
        "the probe's outcome does not reach the embedder"
    );
    (key, t)
}

/// Insert a probe, then answer the next period's check with
/// `DataNotFound`. Returns the node's location afterwards, the probe's key
/// and the actions after the answer.
fn check_lost(seed: u64) -> (Location, Key, Vec<Action>) {
    let (mut n, mut r) = probing(seed);
    let (key, _) = insert_probe(&mut n, &mut r);
    let (t, to, m, _) = until_sent(&mut n, &mut r, is_request).expect("the check");
    let Message::Request {
        id, key: k, htl, ..
    } = m
    else {
        unreachable!()
    };
    assert_eq!(k, key, "the check asks for last period's probe");
    assert_eq!(htl, 18, "the check leaves at the maximum HTL, as our own");
    n.handle_message(t, to, Message::Accepted { id }, &mut EmptyStore, &mut r);
    n.handle_message(
        t + 1,
        to,
        Message::DataNotFound { id },
        &mut EmptyStore,
        &mut r,
    );
    let acts = drain(&mut n);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::RequestDone { .. })),
        "the check's outcome does not reach the embedder"
    );
    assert_eq!(n.stats().pitch_lost, 1);
    (n.location(), key, acts)
}

#[test]
fn a_vanished_probe_moves_the_node_to_its_location_half_the_time() {
    let mut moved = 0;
    for seed in 0..40 {
        let (loc, key, acts) = check_lost(seed);
        if loc == key.location() {
            moved += 1;
            // The move is told to every peer, as a swap's.
            let told = sends(&acts)
                .iter()
                .filter(
                    |(_, m)| matches!(m, Message::LocationChanged { location } if *location == loc),
                )
                .count();
            assert_eq!(told, 3);
        } else {
            assert_eq!(loc, Location(0), "no move, no change");
        }
    }
    // 40 fair coins: 20 expected; outside 8..=32 has probability < 1e-4.
    assert!((8..=32).contains(&moved), "{moved} of 40 moved");
}

#[test]
fn a_probe_found_again_moves_nothing_and_is_kept_nowhere() {
    // The check finds the block: a node that has it answers.
    let (mut n, mut r) = probing(5);
    // Catch the probe's block on its way: the insert's data.
    let (t, to, m, _) = until_sent(&mut n, &mut r, is_insert).unwrap();
    let Message::Insert { id, key, .. } = m else {
        unreachable!()
    };
    n.handle_message(t, to, Message::Accepted { id }, &mut EmptyStore, &mut r);
    let block = sends(&drain(&mut n))
        .into_iter()
        .find_map(|(_, m)| match m {
            Message::InsertData { id: i, block } if i == id => Some(block),
            _ => None,
        })
        .unwrap();
    n.handle_message(
        t + 1,
        to,
        Message::InsertReply { id },
        &mut EmptyStore,
        &mut r,
    );
    drain(&mut n);
    let (t, to, m, _) = until_sent(&mut n, &mut r, is_request).unwrap();
    let Message::Request { id, .. } = m else {
        unreachable!()
    };
    n.handle_message(t, to, Message::Accepted { id }, &mut EmptyStore, &mut r);
    n.handle_message(
        t + 1,
        to,
        Message::DataFound { id, block },
        &mut EmptyStore,
        &mut r,
    );
    let acts = drain(&mut n);
    assert!(
        !acts.iter().any(|a| matches!(
            a,
            Action::RequestDone { .. } | Action::StoreBlock { .. } | Action::LocationChanged { .. }
        )),
        "a found probe is dropped: not handed up, not cached, no move: {acts:?}"
    );
    assert_eq!(n.location(), Location(0));
    assert_eq!(n.stats().pitch_checks, 1);
    assert_eq!(n.stats().pitch_lost, 0);
    assert_ne!(key.location(), Location(0));
}

#[test]
fn the_probe_runs_only_on_a_darknet_with_a_probing_embedder() {
    // Off by configuration.
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let off = Config {
        pitch_probe_interval: 0,
        ..cfg()
    };
    let mut n = Node::new(off, Location(0), Probing);
    n.add_peer(0, PeerId(1), Location(1 << 62), &mut r);
    assert!(until_sent(&mut n, &mut r, is_insert).is_none());
    // Opennet: no swapping, no probe.
    let open = Config {
        swapping: false,
        opennet: true,
        ..cfg()
    };
    let mut n = Node::new(open, Location(0), Probing);
    n.add_peer(0, PeerId(1), Location(1 << 62), &mut r);
    assert!(until_sent(&mut n, &mut r, is_insert).is_none());
    // An embedder that cannot make blocks (a plain verifier function).
    let mut n = Node::new(cfg(), Location(0), common::sha_verify as common::V);
    n.add_peer(0, PeerId(1), Location(1 << 62), &mut r);
    assert!(until_sent(&mut n, &mut r, is_insert).is_none());
    // On: about one probe per period.
    let (mut n, mut r) = probing(2);
    let (_, t0) = insert_probe(&mut n, &mut r);
    let (t1, ..) = until_sent(&mut n, &mut r, is_insert).unwrap();
    assert!(
        (PERIOD / 2..=3 * PERIOD / 2).contains(&(t1 - t0)),
        "{}",
        t1 - t0
    );
}

/// A darknet node at `at` whose friends sit at `friends`, no probe.
fn swapper(at: Location, friends: &[Location], stretch: f64) -> (Node<Probing>, ChaCha8Rng) {
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let cfg = Config {
        swap_max_stretch: stretch,
        pitch_probe_interval: 0,
        swap_interval: 10_000,
        swap_htl: 1,
        ..cfg()
    };
    let mut n = Node::new(cfg, at, Probing);
    for (i, &l) in friends.iter().enumerate() {
        n.add_peer(0, PeerId(i as u64 + 1), l, &mut r);
    }
    (n, r)
}

/// The node starts a swap; a partner answers "accepted, take
/// `location`". Returns the node's location afterwards.
fn told_to_take(mut n: Node<Probing>, mut r: ChaCha8Rng, location: Location) -> Location {
    let (t, to, m, _) =
        until_sent(&mut n, &mut r, |m| matches!(m, Message::SwapRequest { .. })).unwrap();
    let Message::SwapRequest { id, .. } = m else {
        unreachable!()
    };
    let peer_locations = (1..=12u64)
        .map(|i| Location(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    let reply = Message::SwapReply {
        id,
        accepted: true,
        location,
        peer_locations,
    };
    n.handle_message(t + 1, to, reply, &mut EmptyStore, &mut r);
    n.location()
}

#[test]
fn a_lying_partner_cannot_send_a_node_across_the_circle() {
    // Friends within 0.001 of 0: the liar's point at 0.5 would stretch
    // every link some 500 times.
    let near = [
        Location(1 << 50),
        Location(2 << 50),
        Location(0u64.wrapping_sub(1 << 50)),
    ];
    let (n, r) = swapper(Location(0), &near, 2.0);
    assert_eq!(told_to_take(n, r, Location(1 << 63)), Location(0));
    // Without the limit the lie is taken: the rule is what stops it.
    let (n, r) = swapper(Location(0), &near, 0.0);
    assert_eq!(told_to_take(n, r, Location(1 << 63)), Location(1 << 63));
    // A location among the friends is taken, limit or not.
    let (n, r) = swapper(Location(0), &near, 2.0);
    assert_eq!(told_to_take(n, r, Location(3 << 49)), Location(3 << 49));
}

#[test]
fn an_honest_partner_never_moves_where_the_initiator_will_not_follow() {
    // The initiator at 0.5 has friends within 0.001 of it; we are at 0
    // with friends within 0.0001 of 0.5. Trading shortens the links in
    // all (Metropolis-Hastings accepts), but it would send the initiator
    // across the circle, which it refuses: so we refuse too, before
    // moving (else two nodes would end at one location).
    let half = 1u64 << 63;
    let e3 = (2f64.powi(64) * 1e-3) as u64;
    let e4 = (2f64.powi(64) * 1e-4) as u64;
    let mine = [
        Location(half - e4),
        Location(half + e4),
        Location(half + 2 * e4),
    ];
    let theirs = vec![Location(half - e3), Location(half + e3)];
    let ask = |stretch: f64| {
        let (mut n, mut r) = swapper(Location(0), &mine, stretch);
        let req = Message::SwapRequest {
            id: 77,
            htl: 1,
            location: Location(half),
            peer_locations: theirs.clone(),
        };
        n.handle_message(5, PeerId(1), req, &mut EmptyStore, &mut r);
        let accepted = sends(&drain(&mut n))
            .into_iter()
            .find_map(|(_, m)| match m {
                Message::SwapReply { accepted, .. } => Some(accepted),
                _ => None,
            });
        (accepted, n.location())
    };
    assert_eq!(ask(2.0), (Some(false), Location(0)));
    assert_eq!(
        ask(0.0),
        (Some(true), Location(half)),
        "the walk's own rule would swap"
    );
}
