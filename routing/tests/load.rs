//! Unit tests of the routing state machine through its public API.
//! Load: overload and backoff, the AIMD window and the local queue.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use lichen_routing::*;

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

/// Our own request whose only peer is overloaded is never sent to it again
/// under the same id (only an originator did that, so it marked the
/// request as ours): like a forwarded one, its route ends. It starts again
/// as a new request, under a fresh id, once the backoff is over, and its
/// outcome still carries the id the embedder was given. (Before, the same
/// id went to the same peer again.)
#[test]
fn own_request_after_overload_starts_again_under_a_fresh_id() {
    let (mut n, mut r) = node(1, Config::default());
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
        "{a:?}"
    );
    assert!(sends(&a).is_empty(), "nothing while backed off: {a:?}");
    let wake = n.poll_timeout().unwrap();
    assert!(wake <= 1 + Config::default().backoff_initial, "{wake}");
    n.handle_timeout(wake, &mut r);
    let s = sends(&drain(&mut n));
    let fresh = match &s[..] {
        [(
            PeerId(1),
            Message::Request {
                id: f,
                key: k,
                htl: 18,
                ..
            },
        )] if *k == key => *f,
        _ => panic!("{s:?}"),
    };
    assert_ne!(fresh, id, "never the same id twice to a peer");
    assert_eq!(n.stats().backoff_waits, 1);
    n.handle_message(
        wake + 1,
        PeerId(1),
        Message::DataFound {
            id: fresh,
            block: b.clone(),
        },
        &mut EmptyStore,
        &mut r,
    );
    assert!(drain(&mut n).contains(&Action::RequestDone {
        id: RequestId(id),
        outcome: RequestOutcome::Found(b)
    }));
}

/// Drive request `id` for `key` at a node whose peers 2 and 3 both refuse
/// or fail it (2 is overloaded, 3 has no route): every message the node
/// sends them, with the id replaced by its place among the ids seen.
fn downstream_trace(
    n: &mut Node<V>,
    r: &mut rand_chacha::ChaCha8Rng,
    first: &[Action],
) -> Vec<(PeerId, String)> {
    let mut out = Vec::new();
    let mut ids: Vec<u64> = Vec::new();
    let mut pending: Vec<(PeerId, Message)> = sends(first);
    let mut now = 1;
    while let Some((to, msg)) = pending.pop() {
        if to == PeerId(1) {
            continue;
        }
        let Message::Request { id, htl, .. } = msg else {
            out.push((to, format!("{msg:?}")));
            continue;
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
        let nth = ids.iter().position(|&i| i == id).unwrap();
        out.push((to, format!("request #{nth} htl {htl}")));
        let reply = if to == PeerId(2) {
            Message::RejectedOverload { id }
        } else {
            Message::RouteNotFound { id, htl: 10 }
        };
        now += 1;
        n.handle_message(now, to, reply, &mut EmptyStore, r);
        pending.extend(sends(&drain(n)));
    }
    out
}

/// The node's own request and one it forwards meet the same overload and
/// the same dead end: its peers see the same messages, in the same order,
/// to the same peers (the forwarded one also leaves at 18: its upstream
/// kept the HTL). The AIMD window halves for both.
#[test]
fn own_and_forwarded_requests_meet_overload_the_same_way() {
    let key = key_at(2 << 60); // peer 2 closest, then 3 (then 1)
                               // Forwarded: from peer 1, which does not decrement at 18 here.
    let mut traces = Vec::new();
    for seed in 0..64u64 {
        let mut r = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        let mut n = Node::new(Config::default(), Location(0), sha_verify as V);
        n.add_peer(0, PeerId(1), Location(9 << 60), &mut r);
        n.add_peer(0, PeerId(2), Location(2 << 60), &mut r);
        n.add_peer(0, PeerId(3), Location(3 << 60), &mut r);
        let w = n.window();
        let req = Message::Request {
            id: 77,
            key,
            htl: 18,
            kind: KeyKind::Chk,
        };
        n.handle_message(0, PeerId(1), req, &mut EmptyStore, &mut r);
        let first = drain(&mut n);
        let out = sends(&first).into_iter().find_map(|(_, m)| match m {
            Message::Request { htl, .. } => Some(htl),
            _ => None,
        });
        if out != Some(18) {
            continue;
        }
        traces.push(downstream_trace(&mut n, &mut r, &first));
        assert!(n.window() < w, "forwarded overload moves the window");
        break;
    }
    // Our own, at a node whose other peers are the same.
    let (mut n, mut r) = (
        Node::new(Config::default(), Location(0), sha_verify as V),
        rng(),
    );
    n.add_peer(0, PeerId(2), Location(2 << 60), &mut r);
    n.add_peer(0, PeerId(3), Location(3 << 60), &mut r);
    let w = n.window();
    let _ = n.handle_local_request(
        0,
        LocalRequest::Fetch {
            key,
            kind: KeyKind::Chk,
        },
        &mut r,
    );
    let first = drain(&mut n);
    traces.push(downstream_trace(&mut n, &mut r, &first));
    assert!(n.window() < w);
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[0], traces[1]);
    assert_eq!(
        traces[0],
        vec![
            (PeerId(2), "request #0 htl 18".to_string()),
            (PeerId(3), "request #0 htl 18".to_string()),
        ]
    );
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

/// Answers served at once cost this node a read, a decryption, a hash and
/// 33 KiB sent, and take no request slot: each is charged to the asking
/// peer's budget (`answer_burst`, refilled at `answer_rate` per second).
/// Past it the peer's requests are refused as overload before the store
/// is read; other peers are not affected; the budget refills. (Before,
/// one peer could have every tiny request answered with a block.)
#[test]
fn immediate_answers_are_charged_to_the_asking_peer() {
    struct Counting(Vec<u8>, u32);
    impl BlockSource for Counting {
        fn get(&mut self, _: &Key, _: KeyKind) -> Option<Block> {
            self.1 += 1;
            Some(self.0.clone())
        }
    }
    let cfg = Config {
        answer_rate: 10,
        answer_burst: 20,
        ..Config::default()
    };
    let (mut n, mut r) = node(3, cfg);
    let (key, b) = block(2);
    let mut store = Counting(b, 0);
    let req = |id| Message::Request {
        id,
        key,
        htl: 10,
        kind: KeyKind::Chk,
    };
    let mut ask = |n: &mut Node<V>, now, from, id, store: &mut Counting| {
        n.handle_message(now, from, req(id), store, &mut r);
        match &sends(&drain(n))[..] {
            [(_, Message::DataFound { .. }), ..] => true,
            [(_, Message::RejectedOverload { .. })] => false,
            other => panic!("{other:?}"),
        }
    };
    let served = (0..100u64)
        .filter(|&id| ask(&mut n, 0, PeerId(1), id, &mut store))
        .count();
    assert_eq!(served, 20);
    assert_eq!(store.1, 20, "refused requests read nothing");
    assert_eq!(n.stats().answer_budget_refused, 80);
    // Another peer has its own budget.
    assert!(ask(&mut n, 0, PeerId(2), 1000, &mut store));
    // Half a second refills five answers.
    let served = (200..220u64)
        .filter(|&id| ask(&mut n, 500, PeerId(1), id, &mut store))
        .count();
    assert_eq!(served, 5);
}
