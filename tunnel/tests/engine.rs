//! The engine driven over a small in-memory network: tunnels of every
//! length carry messages both ways, and every kind of bad input ends in
//! a refusal or a torn-down tunnel, never a panic or unbounded state.

use std::collections::BTreeSet;

use lichen_tunnel::{
    CircuitId, CloseReason, Dir, Event, ExitId, Limits, Links, TunnelError, TunnelMsg, Tunnels,
    CELL, DEFAULT_MIN_PEER_LIST, MIN_HOP_TIMEOUT_MS, WIRE_LEN,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use x25519_dalek::{PublicKey, StaticSecret};

/// A little network: node i's static key, its engine, its peers.
struct Net {
    keys: Vec<[u8; 32]>,
    nodes: Vec<Tunnels<u32>>,
    peers: Vec<BTreeSet<u32>>,
    events: Vec<Vec<Event>>,
    stale: Vec<Vec<u32>>,
    /// Every message any node sent, with its encoded length.
    wire: Vec<(u32, u32, usize)>,
    rng: ChaCha20Rng,
    now: u64,
}

struct View<'a> {
    keys: &'a [[u8; 32]],
    peers: &'a BTreeSet<u32>,
    /// Nodes named as peers that are not (a list gone stale).
    stale: &'a [u32],
}

impl Links<u32> for View<'_> {
    fn peer_by_static_key(&self, key: &[u8; 32]) -> Option<u32> {
        self.peers
            .iter()
            .copied()
            .find(|&p| self.keys[p as usize] == *key)
    }

    fn extend_candidates(&self) -> Vec<[u8; 32]> {
        self.peers
            .iter()
            .chain(self.stale)
            .map(|&p| self.keys[p as usize])
            .collect()
    }
}

impl Net {
    /// `n` nodes on a line 0 - 1 - 2 - ... plus the extra `links`.
    fn new(n: u32, links: &[(u32, u32)], limits: Limits) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut keys = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..n {
            let s = StaticSecret::random_from_rng(&mut rng);
            keys.push(PublicKey::from(&s).to_bytes());
            nodes.push(Tunnels::new(s.to_bytes(), limits));
        }
        let mut peers = vec![BTreeSet::new(); n as usize];
        let line: Vec<(u32, u32)> = (1..n).map(|i| (i - 1, i)).collect();
        for &(a, b) in line.iter().chain(links) {
            peers[a as usize].insert(b);
            peers[b as usize].insert(a);
        }
        Net {
            keys,
            nodes,
            peers,
            events: (0..n).map(|_| Vec::new()).collect(),
            stale: (0..n).map(|_| Vec::new()).collect(),
            wire: Vec::new(),
            rng,
            now: 0,
        }
    }

    /// Deliver every queued message until the network is quiet; a
    /// message through `tamper` may be changed on the way.
    fn run_with(&mut self, mut tamper: impl FnMut(u32, u32, &mut TunnelMsg)) {
        for _ in 0..100_000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some((to, mut msg)) = self.nodes[i].poll_transmit() {
                    moved = true;
                    let from = i as u32;
                    assert!(self.peers[i].contains(&to), "sent to a non-peer");
                    let bytes = msg.encode();
                    self.wire.push((from, to, bytes.len()));
                    tamper(from, to, &mut msg);
                    let view = View {
                        keys: &self.keys,
                        peers: &self.peers[to as usize],
                        stale: &self.stale[to as usize],
                    };
                    let _ =
                        self.nodes[to as usize].handle(self.now, &mut self.rng, &view, from, msg);
                }
                while let Some(e) = self.nodes[i].poll_event() {
                    self.events[i].push(e);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    fn run(&mut self) {
        self.run_with(|_, _, _| {});
    }

    fn build(&mut self, origin: u32, first: u32, hops: usize) -> CircuitId {
        let key = self.keys[first as usize];
        let id = self.nodes[origin as usize]
            .build(self.now, &mut self.rng, first, key, hops)
            .expect("build");
        self.run();
        id
    }

    /// Hand `msg` from `from` to node `to` at time `now`.
    fn deliver(&mut self, now: u64, to: u32, from: u32, msg: TunnelMsg) -> Result<(), TunnelError> {
        let view = View {
            keys: &self.keys,
            peers: &self.peers[to as usize],
            stale: &self.stale[to as usize],
        };
        self.nodes[to as usize].handle(now, &mut self.rng, &view, from, msg)
    }

    fn take(&mut self, node: u32) -> Vec<Event> {
        std::mem::take(&mut self.events[node as usize])
    }
}

/// The engine's limits without the minimum peer-list length: the little
/// networks here have hops with only a few peers.
fn no_min() -> Limits {
    Limits {
        min_peer_list: 0,
        ..Limits::default()
    }
}

fn exit_data(events: &[Event]) -> Vec<(ExitId, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ExitData(x, d) => Some((*x, d.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn tunnels_of_one_to_three_hops_carry_messages_both_ways() {
    for hops in 1..=3u32 {
        let mut net = Net::new(hops + 1, &[], no_min());
        // On a line the path is 1, 2, 3: each hop's only other peer.
        let id = net.build(0, 1, hops as usize);
        assert_eq!(net.take(0), vec![Event::Opened(id)]);
        let request: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        net.nodes[0].send(id, &request).expect("send");
        net.run();
        for middle in 1..hops {
            assert!(
                exit_data(&net.take(middle)).is_empty(),
                "a middle hop read data"
            );
        }
        let got = exit_data(&net.take(hops));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, request);
        // A block-sized answer comes back.
        let answer: Vec<u8> = (0..33_000u32).map(|i| (i % 253) as u8).collect();
        net.nodes[hops as usize]
            .exit_send(got[0].0, &answer)
            .expect("answer");
        net.run();
        assert_eq!(net.take(0), vec![Event::Data(id, answer)]);
        assert!(net.wire.iter().all(|&(_, _, len)| len == WIRE_LEN));
    }
}

#[test]
fn extending_to_a_node_that_is_not_a_peer_fails_back_to_the_originator() {
    let mut net = Net::new(4, &[], no_min());
    // Hop 1's list names node 3, which is not its peer (a stale list).
    net.peers[1].remove(&2);
    net.peers[2].remove(&1);
    net.stale[1] = vec![3];
    let id = net.build(0, 1, 2);
    assert_eq!(
        net.take(0),
        vec![Event::Closed(id, CloseReason::ExtendFailed, 1)]
    );
    assert_eq!(net.nodes[1].relayed_count(), 0, "the guard keeps nothing");
}

#[test]
fn a_hop_with_no_other_peer_ends_the_build() {
    // A triangle: 1's peers are 0 (the originator) and 2; 2's are 0 and
    // 1, both excluded, so no third hop can be found.
    let mut net = Net::new(3, &[(0, 2)], no_min());
    let id = net.build(0, 1, 3);
    assert_eq!(net.take(0), vec![Event::Closed(id, CloseReason::NoPath, 2)]);
    let id = net.build(0, 1, 2);
    assert_eq!(net.take(0), vec![Event::Opened(id)], "two hops: 1 then 2");
}

#[test]
fn a_first_hop_that_is_not_the_named_node_cannot_answer() {
    let mut net = Net::new(3, &[(0, 2)], no_min());
    // Ask peer 1 while naming node 2's key: 1 cannot prove it is 2.
    let key = net.keys[2];
    let id = net.nodes[0]
        .build(0, &mut net.rng, 1, key, 1)
        .expect("build");
    net.run();
    assert_eq!(
        net.take(0),
        vec![Event::Closed(id, CloseReason::Protocol, 0)]
    );
}

/// Node 0 builds `rounds` two-hop tunnels through node 1 (one a second,
/// within the guard's Create rate), sends one message through each and
/// closes it: how often each of 12 nodes was the exit.
fn exits_of(net: &mut Net, rounds: usize) -> [u32; 12] {
    let mut exits = [0u32; 12];
    for _ in 0..rounds {
        net.now += 1_000;
        let id = net.build(0, 1, 2);
        assert_eq!(net.take(0), vec![Event::Opened(id)]);
        net.nodes[0].send(id, b"which exit?").expect("send");
        net.run();
        for (n, count) in exits.iter_mut().enumerate() {
            *count += exit_data(&net.take(n as u32)).len() as u32;
        }
        net.nodes[0].close(id);
        net.run();
    }
    exits
}

#[test]
fn the_originator_draws_the_exit_from_every_peer_the_guard_names() {
    // Guard 1 has peers 0 (us) and 2..=11: each of 2..=11 is the exit
    // of some tunnels; never the originator or the guard.
    // With the default minimum list length: 10 eligible peers pass.
    let links: Vec<(u32, u32)> = (3..12).map(|p| (1, p)).collect();
    let mut net = Net::new(12, &links, Limits::default());
    let exits = exits_of(&mut net, 200);
    assert_eq!(exits[0] + exits[1], 0, "never the originator or the guard");
    for (n, &c) in exits.iter().enumerate().skip(2) {
        assert!(
            (5..=45).contains(&c),
            "node {n} was the exit {c} times of 200"
        );
    }
}

#[test]
fn the_exit_is_not_one_of_the_originators_own_peers_when_another_can_be() {
    // Guard 1 has peers 0 (us) and 2..=11; we are also linked to 3..=6.
    // Exits come from 2 and 7..=11 only; with every one of the guard's
    // other peers ours, one of them is still taken (a small network).
    let mut links: Vec<(u32, u32)> = (3..12).map(|p| (1, p)).collect();
    links.extend((3..7).map(|p| (0, p)));
    let mut net = Net::new(12, &links, Limits::default());
    let ours: Vec<[u8; 32]> = [1, 3, 4, 5, 6].iter().map(|&p| net.keys[p]).collect();
    net.nodes[0].set_neighbours(ours);
    let exits = exits_of(&mut net, 100);
    assert_eq!(exits[3..7].iter().sum::<u32>(), 0, "{exits:?}");
    assert_eq!(exits.iter().sum::<u32>(), 100);
    // All of the guard's other peers are ours: one of them is the exit.
    let all: Vec<[u8; 32]> = (1..12).map(|p| net.keys[p]).collect();
    net.nodes[0].set_neighbours(all);
    net.now += 1_000;
    let id = net.build(0, 1, 2);
    assert_eq!(net.take(0), vec![Event::Opened(id)]);
}

/// The simulator-only adversary knob (`lichen sim --lying-lists on`),
/// without a minimum list length (the rule before it, and a darknet's):
/// a guard that names only its colluders decides the exit; one with no
/// colluding peer names its real peers.
#[test]
fn without_a_minimum_a_lying_guard_names_only_its_colluders_and_so_picks_the_exit() {
    let links: Vec<(u32, u32)> = (3..12).map(|p| (1, p)).collect();
    let mut net = Net::new(12, &links, no_min());
    // Node 7 colludes with guard 1 (and so does a node that is no peer).
    let colluders: BTreeSet<[u8; 32]> = [net.keys[7], [9u8; 32]].into_iter().collect();
    net.nodes[1].sim_adversary_lying_lists(colluders);
    // Node 2 lies too, but has no colluding peer: its list is its real one.
    net.nodes[2].sim_adversary_lying_lists([[9u8; 32]].into_iter().collect());
    let mut exits = [0u32; 12];
    for first in [1, 2] {
        for _ in 0..30 {
            net.now += 1_000;
            let id = net.build(if first == 1 { 0 } else { 1 }, first, 2);
            net.take(0);
            net.take(1);
            net.nodes[if first == 1 { 0 } else { 1 }]
                .send(id, b"which exit?")
                .expect("send");
            net.run();
            for (n, count) in exits.iter_mut().enumerate() {
                *count += exit_data(&net.take(n as u32)).len() as u32;
            }
        }
    }
    // Through guard 1: always node 7. Through node 2 (peers 1 and 3):
    // node 3 every time (1 is the originator), as with an honest list.
    assert_eq!(exits[7], 30, "{exits:?}");
    assert_eq!(exits[3], 30, "{exits:?}");
}

/// `Limits::min_peer_list` (default 8): a hop's list must name that many
/// distinct eligible peers. The originator itself is in its guard's list
/// but does not count, nor does a key named twice.
#[test]
fn a_peer_list_shorter_than_the_minimum_is_refused_and_one_of_exactly_the_minimum_is_not() {
    assert_eq!(Limits::default().min_peer_list, DEFAULT_MIN_PEER_LIST);
    assert_eq!(DEFAULT_MIN_PEER_LIST, 8);
    // Guard 1's peers: 0 (the originator), 2 (the line) and 3..=8: seven
    // eligible, eight in all. Node 2 is named twice (a stale entry).
    let links: Vec<(u32, u32)> = (3..=8).map(|p| (1, p)).collect();
    let mut net = Net::new(10, &links, Limits::default());
    net.stale[1].push(2);
    let id = net.build(0, 1, 2);
    assert_eq!(
        net.take(0),
        vec![Event::Closed(id, CloseReason::ShortList, 1)]
    );
    assert_eq!(net.nodes[0].own_count(), 0, "the refused tunnel is gone");
    // Nothing reached a would-be exit.
    for n in 2..10 {
        assert_eq!(net.nodes[n].relayed_count(), 0, "node {n}");
    }
    // One more real peer (9): exactly the minimum, accepted.
    net.peers[1].insert(9);
    net.peers[9].insert(1);
    net.now += 1_000;
    let id = net.build(0, 1, 2);
    assert_eq!(net.take(0), vec![Event::Opened(id)]);
}

/// What the minimum buys against the simulator's lying guard: it must pad
/// its colluders with honest peers up to the minimum, so with k = 2
/// colluding peers and a minimum of 8 the exit is a colluder in about
/// k/8 = 1/4 of tunnels, not every time as without the minimum.
#[test]
fn a_lying_guard_padding_to_the_minimum_picks_a_colluding_exit_only_about_k_in_l_times() {
    // Guard 1's peers: 0 (the originator), 2..=20. Nodes 5 and 6 collude
    // with it (and a node that is no peer of it).
    let links: Vec<(u32, u32)> = (3..=20).map(|p| (1, p)).collect();
    let share = |limits: Limits| {
        let mut net = Net::new(21, &links, limits);
        let colluders: BTreeSet<[u8; 32]> =
            [net.keys[5], net.keys[6], [9u8; 32]].into_iter().collect();
        net.nodes[1].sim_adversary_lying_lists(colluders);
        let (mut bad, mut all) = (0u32, 0u32);
        for _ in 0..400 {
            net.now += 1_000;
            let id = net.build(0, 1, 2);
            assert_eq!(net.take(0), vec![Event::Opened(id)], "never refused");
            net.nodes[0].send(id, b"which exit?").expect("send");
            net.run();
            for n in 2..21u32 {
                let got = exit_data(&net.take(n)).len() as u32;
                all += got;
                if n == 5 || n == 6 {
                    bad += got;
                }
            }
            net.nodes[0].close(id);
            net.run();
        }
        assert_eq!(all, 400);
        f64::from(bad) / f64::from(all)
    };
    let with_rule = share(Limits::default());
    // 2/8 = 0.25; 400 draws: a standard deviation of about 0.022.
    assert!(
        (0.15..=0.35).contains(&with_rule),
        "colluding exit in {with_rule} of tunnels with the minimum"
    );
    let without = share(no_min());
    assert!(
        (without - 1.0).abs() < f64::EPSILON,
        "colluding exit in {without} of tunnels without the minimum"
    );
}

#[test]
fn a_cell_changed_by_a_relay_takes_the_tunnel_down_at_the_next_hop() {
    let mut net = Net::new(4, &[], no_min());
    let id = net.build(0, 1, 3);
    assert_eq!(net.take(0), vec![Event::Opened(id)]);
    net.nodes[0].send(id, b"hello").expect("send");
    // Relay 1 flips a bit in what it passes to 2 (a tagging attempt).
    net.run_with(|from, _, msg| {
        if let (1, TunnelMsg::Cell { body, .. }) = (from, msg) {
            body[10] ^= 1;
        }
    });
    assert!(exit_data(&net.take(3)).is_empty(), "the exit saw nothing");
    assert_eq!(
        net.take(0),
        vec![Event::Closed(id, CloseReason::Destroyed, 3)]
    );
    for i in 1..4 {
        assert_eq!(net.nodes[i].relayed_count(), 0, "node {i} kept state");
    }
}

#[test]
fn a_replayed_cell_takes_the_tunnel_down() {
    let mut net = Net::new(3, &[], no_min());
    let id = net.build(0, 1, 2);
    net.take(0);
    net.nodes[0].send(id, b"one").expect("send");
    let (to, first) = net.nodes[0].poll_transmit().expect("a cell");
    assert_eq!(to, 1);
    net.deliver(0, 1, 0, first.clone()).expect("first time");
    let again = net.deliver(0, 1, 0, first);
    assert!(matches!(again, Err(TunnelError::BadCell(_))), "{again:?}");
    net.run();
    assert_eq!(
        net.take(0),
        vec![Event::Closed(id, CloseReason::Destroyed, 2)]
    );
}

fn create(net: &mut Net, circ: u32) -> TunnelMsg {
    TunnelMsg::Create {
        circ,
        depth: 1,
        x: PublicKey::from(&StaticSecret::random_from_rng(&mut net.rng)).to_bytes(),
    }
}

#[test]
fn a_create_flood_is_bounded_per_peer_and_in_all() {
    let limits = Limits {
        per_peer: 8,
        create_burst: 100,
        ..no_min()
    };
    let mut net = Net::new(2, &[], limits);
    let mut refused = 0;
    for circ in 1..=50u32 {
        let msg = create(&mut net, circ);
        refused += usize::from(net.deliver(0, 1, 0, msg).is_err());
    }
    assert_eq!(net.nodes[1].relayed_count(), 8);
    assert_eq!(refused, 42);
    // Each refusal was answered with a Destroy, not silence.
    let mut destroys = 0;
    while let Some((_, m)) = net.nodes[1].poll_transmit() {
        destroys += usize::from(matches!(
            m,
            TunnelMsg::Destroy {
                dir: Dir::Backward,
                ..
            }
        ));
    }
    assert_eq!(destroys, 42);
}

#[test]
fn creates_faster_than_the_rate_are_refused_until_tokens_return() {
    let limits = Limits {
        create_burst: 4,
        creates_per_minute: 60,
        ..no_min()
    };
    let mut net = Net::new(2, &[], limits);
    let mut ok = 0;
    for circ in 1..=10u32 {
        let msg = create(&mut net, circ);
        ok += usize::from(net.deliver(0, 1, 0, msg).is_ok());
    }
    assert_eq!(ok, 4, "the burst");
    // One a second: after 2 s, two more, then none.
    for circ in 20..23u32 {
        let msg = create(&mut net, circ);
        let r = net.deliver(2_000, 1, 0, msg);
        assert_eq!(r.is_ok(), circ < 22, "{circ}: {r:?}");
    }
}

#[test]
fn a_lost_link_closes_every_tunnel_through_it() {
    let mut net = Net::new(4, &[], no_min());
    let id = net.build(0, 1, 3);
    net.take(0);
    // The link 1 - 2 goes.
    net.nodes[1].peer_gone(2);
    net.nodes[2].peer_gone(1);
    net.run();
    assert_eq!(
        net.take(0),
        vec![Event::Closed(id, CloseReason::Destroyed, 3)]
    );
    let exit = net.take(3);
    assert_eq!(exit.len(), 1);
    assert!(matches!(exit[0], Event::ExitClosed(_)), "{exit:?}");
    assert!(
        net.take(1).is_empty() && net.take(2).is_empty(),
        "middles are not exits"
    );
    for i in 1..4 {
        assert_eq!(net.nodes[i].relayed_count(), 0, "node {i} kept state");
    }
}

#[test]
fn an_exit_that_closes_tells_the_originator_and_nobody_else() {
    let mut net = Net::new(3, &[], no_min());
    let id = net.build(0, 1, 2);
    net.take(0);
    net.nodes[0].send(id, b"q").expect("send");
    net.run();
    let (exit, _) = exit_data(&net.take(2)).remove(0);
    net.nodes[2].exit_close(exit);
    net.run();
    assert!(net.take(2).is_empty(), "no event for the exit's own close");
    assert!(net.take(1).is_empty());
    assert_eq!(
        net.take(0),
        vec![Event::Closed(id, CloseReason::Destroyed, 2)]
    );
    assert_eq!(net.nodes[0].send(id, b"again"), Err(TunnelError::NotOpen));
}

/// A build is also given up when its newest hop has not answered within
/// the hop timeout learned from earlier answers (4 × their median, at
/// least `MIN_HOP_TIMEOUT_MS`), not only after the whole build's 30 s:
/// one silent hop (a peer that does not relay) then costs seconds.
#[test]
fn a_hop_that_does_not_answer_is_given_up_after_the_learned_hop_timeout() {
    let mut net = Net::new(3, &[], no_min());
    let max = Limits::default().build_timeout_ms;
    assert_eq!(net.nodes[0].hop_timeout(), max, "nothing learned yet");
    // Four two-hop builds: eight hop answers, none slower than 100 ms.
    for _ in 0..4 {
        let key = net.keys[1];
        let id = net.nodes[0]
            .build(net.now, &mut net.rng, 1, key, 2)
            .expect("build");
        for _ in 0..2 {
            net.now += 100;
            net.run();
        }
        assert_eq!(net.take(0), vec![Event::Opened(id)]);
        net.nodes[0].close(id);
        net.run();
    }
    assert_eq!(net.nodes[0].hop_timeout(), MIN_HOP_TIMEOUT_MS);
    // A Create that is never answered.
    let start = net.now;
    let key = net.keys[1];
    let id = net.nodes[0]
        .build(start, &mut net.rng, 1, key, 1)
        .expect("build");
    while net.nodes[0].poll_transmit().is_some() {}
    net.nodes[0].expire(start + MIN_HOP_TIMEOUT_MS);
    assert!(net.nodes[0].poll_event().is_none());
    net.nodes[0].expire(start + MIN_HOP_TIMEOUT_MS + 1);
    assert_eq!(
        net.nodes[0].poll_event(),
        Some(Event::Closed(id, CloseReason::Timeout, 0))
    );
}

#[test]
fn a_tunnel_not_built_in_time_is_given_up() {
    let mut net = Net::new(2, &[], no_min());
    let key = net.keys[1];
    let id = net.nodes[0]
        .build(0, &mut net.rng, 1, key, 1)
        .expect("build");
    // The Create is lost.
    while net.nodes[0].poll_transmit().is_some() {}
    net.nodes[0].expire(10_000);
    assert!(net.nodes[0].poll_event().is_none());
    net.nodes[0].expire(31_000);
    assert_eq!(
        net.nodes[0].poll_event(),
        Some(Event::Closed(id, CloseReason::Timeout, 0))
    );
    assert_eq!(net.nodes[0].own_count(), 0);
}

#[test]
fn cells_for_unknown_circuits_are_refused() {
    let mut net = Net::new(2, &[], no_min());
    for dir in [Dir::Forward, Dir::Backward] {
        let r = net.deliver(
            0,
            1,
            0,
            TunnelMsg::Cell {
                circ: 5,
                dir,
                body: Box::new([0; CELL]),
            },
        );
        assert_eq!(r, Err(TunnelError::UnknownCircuit));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever a hostile peer sends — valid kinds with random contents,
    /// for circuits that exist and that do not — the engine never panics
    /// and never holds more than its limits.
    #[test]
    fn hostile_messages_never_panic_or_grow_state(
        msgs in proptest::collection::vec((0u8..6, 0u32..4, any::<u8>(), any::<[u8; 32]>()), 1..200)
    ) {
        let limits = Limits { per_peer: 4, ..no_min() };
        let mut net = Net::new(3, &[], limits);
        let id = net.build(0, 1, 2);
        net.take(0);
        net.nodes[0].send(id, b"x").expect("send");
        net.run();
        for (kind, circ, b, key) in msgs {
            let mut body = Box::new([b; CELL]);
            body[..32].copy_from_slice(&key);
            let msg = match kind {
                0 => TunnelMsg::Create { circ, depth: 1 + b % 3, x: key },
                1 => TunnelMsg::Created { circ, reply: [b; 64] },
                2 => TunnelMsg::Cell { circ, dir: Dir::Forward, body },
                3 => TunnelMsg::Cell { circ, dir: Dir::Backward, body },
                4 => TunnelMsg::Destroy { circ, dir: Dir::Forward },
                _ => TunnelMsg::Destroy { circ, dir: Dir::Backward },
            };
            let _ = net.deliver(0, 1, 0, msg);
            net.run();
            prop_assert!(net.nodes[1].relayed_count() <= 4 + 1);
        }
    }
}
