//! The peer policy under a virtual clock, with no sockets: every test
//! drives [`Mesh`] (policies linked in memory).

#![allow(clippy::unwrap_used)]

use super::mesh::Mesh;
use super::*;
use crate::peerlist::PeerList;
use lichen_routing::{KeyKind, LocalRequest, Location};

type Verify = fn(&Key, KeyKind, &[u8]) -> bool;

fn accept_all(_: &Key, _: KeyKind, _: &[u8]) -> bool {
    true
}

fn mesh() -> Mesh<Verify> {
    Mesh::new(7)
}

/// A node with secret `[s; 32]` at location `s / 16` of the circle.
fn add(m: &mut Mesh<Verify>, s: u8, configure: impl FnOnce(&mut PolicyConfig)) -> usize {
    let location = u64::from(s) << 58;
    m.add([s; 32], location, PeerList::new(16), accept_all, configure)
}

fn opennet(m: &mut Mesh<Verify>, s: u8) -> usize {
    add(m, s, |_| {})
}

fn darknet(m: &mut Mesh<Verify>, s: u8) -> usize {
    add(m, s, |c| {
        c.opennet = false;
        Arc::make_mut(&mut c.routing).opennet = false;
    })
}

fn key(m: &Mesh<Verify>, i: usize) -> [u8; 32] {
    m.nodes[i].keys.static_public()
}

#[test]
fn a_hello_links_two_opennet_nodes_and_both_remember_each_other() {
    let mut m = mesh();
    let (a, b) = (opennet(&mut m, 1), opennet(&mut m, 2));
    m.dial(a, b);
    assert_eq!(m.link_count(), 1);
    assert_eq!(m.nodes[a].policy.peer_count(), 1);
    assert_eq!(m.nodes[b].policy.peer_count(), 1);
    // The dialer remembers the node it dialed; the dialed node remembers
    // the dialer from the noderef sent after its hello.
    let kb = key(&m, b);
    let ka = key(&m, a);
    assert!(m.nodes[a].saved.as_ref().unwrap().get(&kb).is_some());
    assert!(m.nodes[b].saved.as_ref().unwrap().get(&ka).is_some());
    assert_eq!(m.nodes[a].sent.get("Noderef"), Some(&1));
    assert_eq!(
        m.nodes[b].sent.get("Noderef"),
        None,
        "only the dialer sends it"
    );
    // The first opennet peer is announced to at once.
    assert!(m.nodes[a].sent.contains_key("Announce"));
}

#[test]
fn a_darknet_node_refuses_strangers_and_keeps_friends() {
    let mut m = mesh();
    let (a, b) = (darknet(&mut m, 1), darknet(&mut m, 2));
    m.dial(a, b);
    assert_eq!(m.link_count(), 0, "b does not know a");
    // Both befriend each other: the link stays.
    let (ra, ba) = (m.nodes[a].noderef.clone(), m.nodes[a].bytes.clone());
    let (rb, bb) = (m.nodes[b].noderef.clone(), m.nodes[b].bytes.clone());
    let now = m.now;
    m.nodes[b].policy.add_friend(now, ra, ba).unwrap();
    m.nodes[a]
        .policy
        .add_friend(now, rb.clone(), bb.clone())
        .unwrap();
    m.run();
    assert_eq!(m.link_count(), 1);
    assert_eq!(m.nodes[a].policy.peer_count(), 1);
    assert_eq!(m.nodes[b].policy.peer_count(), 1);
    assert_eq!(
        m.nodes[a].policy.add_friend(now, rb, bb),
        Err(AddFriendError::Duplicate)
    );
    let own = (m.nodes[a].noderef.clone(), m.nodes[a].bytes.clone());
    assert_eq!(
        m.nodes[a].policy.add_friend(now, own.0, own.1),
        Err(AddFriendError::Myself)
    );
}

#[test]
fn simultaneous_dials_leave_one_link_both_sides_agree_on() {
    for (sa, sb) in [(1u8, 2u8), (2, 1)] {
        let mut m = mesh();
        let (a, b) = (opennet(&mut m, sa), opennet(&mut m, sb));
        m.dial(a, b);
        m.advance(Duration::from_millis(10));
        m.dial(b, a);
        assert_eq!(m.link_count(), 1, "one link left");
        let (la, lb) = (m.link(a, b).unwrap(), m.link(b, a).unwrap());
        assert_eq!(m.nodes[a].policy.remote_of(la), Some(key(&m, b)));
        assert_eq!(m.nodes[b].policy.remote_of(lb), Some(key(&m, a)));
        assert_eq!(m.nodes[a].policy.peer_count(), 1);
        assert_eq!(m.nodes[b].policy.peer_count(), 1);
    }
    // After the race window a new link replaces the old one (the peer
    // restarted, or saw the old link die): the old one is closed.
    let mut m = mesh();
    let (a, b) = (opennet(&mut m, 1), opennet(&mut m, 2));
    m.dial(a, b);
    let old = m.link(a, b).unwrap();
    m.advance(RACE_WINDOW * 2);
    let kb = key(&m, b);
    let now = m.now;
    let mut rng = rand::rngs::mock::StepRng::new(1, 1);
    let p = &mut m.nodes[a].policy;
    let new = p.link_up(now, kb, None, None, &mut rng).unwrap();
    assert_ne!(new, old);
    let mut closed = Vec::new();
    while let Some(o) = p.poll_output(now) {
        if let Output::Close { peer } = o {
            closed.push(peer);
        }
    }
    assert_eq!(closed, vec![old]);
    assert_eq!(p.link_to(&kb), Some(new));
    assert_eq!(p.peer_count(), 0, "the new link waits for its hello");
}

/// The key index sorts links by the first 8 bytes of the key: two peers
/// whose keys share them are still told apart, and closing one leaves
/// the other found.
#[test]
fn links_whose_keys_share_their_first_bytes_are_told_apart() {
    let mut m = mesh();
    let a = opennet(&mut m, 1);
    let now = m.now;
    let mut rng = rand::rngs::mock::StepRng::new(1, 1);
    let p = &mut m.nodes[a].policy;
    let k1 = [9u8; 32];
    let mut k2 = k1;
    k2[31] = 10;
    let mut k3 = k1;
    k3[8] = 3;
    let l1 = p.link_up(now, k1, None, None, &mut rng).unwrap();
    let l2 = p.link_up(now, k2, None, None, &mut rng).unwrap();
    let l3 = p.link_up(now, k3, None, None, &mut rng).unwrap();
    assert_eq!(p.link_to(&k1), Some(l1));
    assert_eq!(p.link_to(&k2), Some(l2));
    assert_eq!(p.link_to(&k3), Some(l3));
    let mut k4 = k1;
    k4[20] = 0;
    assert_eq!(p.link_to(&k4), None, "same first bytes, no link");
    p.link_closed(now, l1, &mut rng);
    assert_eq!(p.link_to(&k1), None);
    assert_eq!(p.link_to(&k2), Some(l2));
    // A second link to k2 is a duplicate (refused while the first is
    // young), not a link to k1.
    assert_eq!(
        p.link_up(now, k2, None, None, &mut rng),
        Err(Refused::Duplicate)
    );
    assert_eq!(p.link_to(&k2), Some(l2));
}

/// [`LinkIndex`] against a set of pairs: the same pairs, in order, under
/// any inserts and removes.
#[test]
fn the_link_index_holds_what_a_set_of_pairs_holds() {
    use proptest::prelude::*;
    proptest!(|(ops in proptest::collection::vec((any::<bool>(), 0u8..6, 0u64..40), 0..300))| {
        let mut ix = LinkIndex::<u8>::default();
        let mut model = std::collections::BTreeSet::new();
        for (add, k, p) in ops {
            if add {
                ix.insert(k, PeerId(p));
                model.insert((k, PeerId(p)));
            } else {
                ix.remove(k, PeerId(p));
                model.remove(&(k, PeerId(p)));
            }
            for k in 0..6 {
                let got: Vec<PeerId> = ix.get(k).collect();
                let want: Vec<PeerId> = model.iter().filter(|e| e.0 == k).map(|e| e.1).collect();
                prop_assert_eq!(got, want);
            }
        }
    });
}

#[test]
fn the_duplicate_rule_picks_the_smaller_keys_dial() {
    let lo = [1u8; 32];
    let hi = [2u8; 32];
    let young = Duration::from_millis(10);
    // lo's view: existing = the link it dialed, new = hi's dial.
    let lo_replaces = keep_new_link(young, true, false, &lo, &hi);
    // hi's view: existing = the link it dialed, new = lo's dial.
    let hi_replaces = keep_new_link(young, true, false, &hi, &lo);
    // Both keep lo's dial: lo keeps its own, hi switches to it.
    assert!(!lo_replaces && hi_replaces);
    // Other arrival order gives the same choice.
    assert!(keep_new_link(young, false, true, &lo, &hi));
    assert!(!keep_new_link(young, false, true, &hi, &lo));
    // An old link is replaced by a new one (the peer restarted).
    assert!(keep_new_link(RACE_WINDOW * 2, true, false, &lo, &hi));
    assert_eq!(retry_delay(1, PeerKind::Friend), RETRY_BASE);
    assert_eq!(retry_delay(40, PeerKind::Friend), FRIEND_RETRY_MAX);
    assert_eq!(retry_delay(40, PeerKind::Opennet), OPENNET_RETRY_MAX);
}

/// Opennet node a, having dialed b and c, linked to both a while.
fn a_linked_to_b_and_c() -> (Mesh<Verify>, usize, usize, usize) {
    let mut m = mesh();
    let (a, b, c) = (opennet(&mut m, 1), opennet(&mut m, 2), opennet(&mut m, 3));
    m.dial(a, b);
    m.dial(a, c);
    m.advance(SHORT_LINK * 2);
    (m, a, b, c)
}

/// A retry time that has passed is dropped at the next tick: the map
/// holds only peers still waiting, not every peer dropped since the start.
#[test]
fn a_retry_time_that_has_passed_is_forgotten() {
    let (mut m, a, b, _) = a_linked_to_b_and_c();
    m.set_down(b, true);
    let kb = key(&m, b);
    let t0 = m.now;
    assert_eq!(m.nodes[a].policy.retry_at(&kb), Some(t0 + DROPPED_RETRY));
    // With c still a peer, a does not redial its remembered opennet peer
    // b: the time passes unused.
    let dials = m.nodes[a].dials;
    m.advance(DROPPED_RETRY + RECONNECT_TICK * 2);
    assert_eq!(m.nodes[a].dials, dials);
    assert_eq!(m.nodes[a].policy.retry_at(&kb), None);
    assert!(
        m.nodes[a].saved.as_ref().unwrap().get(&kb).is_some(),
        "still remembered"
    );
}

#[test]
fn backoff_grows_while_a_remembered_peer_is_down() {
    let mut m = mesh();
    let (a, b) = (opennet(&mut m, 1), opennet(&mut m, 2));
    m.dial(a, b);
    m.advance(SHORT_LINK * 2);
    m.set_down(b, true);
    assert_eq!(m.link_count(), 0);
    // Dropped after a long link: not redialed before DROPPED_RETRY.
    let kb = key(&m, b);
    let t0 = m.now;
    assert_eq!(m.nodes[a].policy.retry_at(&kb), Some(t0 + DROPPED_RETRY));
    let dials0 = m.nodes[a].dials;
    m.advance(DROPPED_RETRY - RECONNECT_TICK);
    assert_eq!(m.nodes[a].dials, dials0, "no dial inside the delay");
    // Then each failure doubles the delay.
    let mut gaps = Vec::new();
    let mut last = None;
    for _ in 0..6 {
        let before = m.nodes[a].dials;
        for _ in 0..2000 {
            if m.nodes[a].dials != before {
                break;
            }
            m.advance(RECONNECT_TICK);
        }
        assert_ne!(m.nodes[a].dials, before, "redialed within 2000 s");
        if let Some(l) = last {
            gaps.push(m.now.saturating_duration_since(l));
        }
        last = Some(m.now);
    }
    for w in gaps.windows(2) {
        assert!(w[1] >= w[0] * 2 - RECONNECT_TICK, "delays grow: {gaps:?}");
    }
    assert!(gaps[0] >= RETRY_BASE, "{gaps:?}");
    // Back up: the next dial links again, and the failures are forgotten.
    m.set_down(b, false);
    m.advance(OPENNET_RETRY_MAX + RECONNECT_TICK);
    assert_eq!(m.link_count(), 1);
    assert_eq!(m.nodes[a].policy.peer_list().get(&kb).unwrap().failures, 0);
}

/// A node with a peer left does not redial its remembered opennet peers
/// (nobody invited it: they would keep it only as a seed client); with no
/// peer at all it does, as it dials the seeds.
#[test]
fn remembered_opennet_peers_are_redialed_only_with_no_peer_left() {
    let (mut m, a, b, c) = a_linked_to_b_and_c();
    assert!(linked(&m, a, b) && linked(&m, a, c));
    let kb = key(&m, b);
    m.set_down(b, true);
    assert!(
        m.nodes[a].policy.peer_list().get(&kb).is_some(),
        "remembered"
    );
    let dials = m.nodes[a].dials;
    m.advance(OPENNET_RETRY_MAX * 2);
    assert_eq!(m.nodes[a].dials, dials, "a peer left: not redialed");
    m.set_down(c, true);
    m.advance(OPENNET_RETRY_MAX * 2);
    assert!(m.nodes[a].dials > dials, "no peer left: redialed");
}

/// A remembered opennet peer that we dialed and that let us go soon after
/// the hello (a full node keeping us only as a seed client, most often one
/// that had dropped us) is forgotten, not redialed every few minutes; a
/// friend is redialed.
#[test]
fn a_remembered_peer_that_lets_us_go_at_once_is_forgotten_but_a_friend_is_not() {
    let mut m = mesh();
    let (a, b) = (opennet(&mut m, 1), opennet(&mut m, 2));
    m.dial(a, b);
    let kb = key(&m, b);
    assert!(m.nodes[a].policy.peer_list().get(&kb).is_some());
    m.advance(SHORT_LINK / 4);
    m.set_down(b, true);
    assert!(
        m.nodes[a].policy.peer_list().get(&kb).is_none(),
        "forgotten"
    );
    assert_eq!(m.nodes[a].policy.retry_at(&kb), None);
    m.set_down(b, false);
    let dials = m.nodes[a].dials;
    m.advance(OPENNET_RETRY_MAX * 2);
    // (b, which did not dial, still remembers a and may dial it.)
    assert_eq!(m.nodes[a].dials, dials, "not redialed");
    // Friends: kept and redialed.
    let mut m = mesh();
    let (a, b) = (darknet(&mut m, 1), darknet(&mut m, 2));
    befriend(&mut m, a, b);
    assert!(linked(&m, a, b));
    m.advance(SHORT_LINK / 4);
    m.set_down(b, true);
    let kb = key(&m, b);
    assert!(m.nodes[a].policy.peer_list().get(&kb).is_some());
    m.set_down(b, false);
    m.advance(FRIEND_RETRY_MAX * 2);
    assert!(linked(&m, a, b), "the friend is linked again");
}

#[test]
fn a_misbehaving_peer_is_banned_and_the_ban_expires() {
    let mut m = mesh();
    let a = opennet(&mut m, 1);
    let b = add(&mut m, 2, |_| {});
    m.dial(b, a);
    assert_eq!(m.link_count(), 1);
    let limit = lichen_routing::Config::default().misbehaviour_limit;
    for id in 0..=u64::from(limit) {
        // A reply to nothing a asked is an offence (and gets no answer).
        m.inject(b, a, Message::Accepted { id: 1000 + id });
        if m.link_count() == 0 {
            break;
        }
    }
    assert_eq!(m.link_count(), 0, "disconnected for misbehaviour");
    let kb = key(&m, b);
    assert!(m.nodes[a].policy.is_banned(m.now, &kb));
    // b dials again: refused while banned.
    m.advance(RECONNECT_TICK);
    m.dial(b, a);
    assert_eq!(m.link_count(), 0, "refused while banned");
    assert_eq!(
        m.nodes[a].policy.link_up(
            m.now,
            kb,
            None,
            None,
            &mut rand::rngs::mock::StepRng::new(1, 1)
        ),
        Err(Refused::Banned)
    );
    // After the ban it gets in again.
    m.advance(BAN);
    assert!(!m.nodes[a].policy.is_banned(m.now, &kb));
    m.dial(b, a);
    assert_eq!(m.link_count(), 1);
}

#[test]
fn a_full_seed_keeps_a_newcomer_as_a_seed_client() {
    let mut m = mesh();
    let full = |c: &mut PolicyConfig| Arc::make_mut(&mut c.routing).max_peers = 1;
    let seed = add(&mut m, 1, full);
    let old = opennet(&mut m, 2);
    m.dial(old, seed);
    assert_eq!(m.nodes[seed].policy.peer_count(), 1);
    let newcomer = opennet(&mut m, 3);
    m.dial(newcomer, seed);
    let link = m.link(seed, newcomer).expect("the link stays open");
    assert!(m.nodes[seed].policy.is_seed_client(link));
    assert_eq!(
        m.nodes[seed].policy.peer_count(),
        1,
        "not counted as a peer"
    );
    let kn = key(&m, newcomer);
    assert!(
        m.nodes[seed].policy.peer_list().get(&kn).is_none(),
        "a seed client is not remembered"
    );
    assert!(
        !m.nodes[seed]
            .policy
            .list()
            .iter()
            .any(|p| p.identity == identity_of(&kn)),
        "nor listed"
    );
    // Let go when its time is up, it leaves nothing behind: it is not
    // redialed, so no retry time is kept for it.
    let ttl = m.nodes[seed].policy.routing().config().seed_client_ttl;
    m.advance(std::time::Duration::from_millis(ttl) * 2);
    assert!(m.link(seed, newcomer).is_none(), "let go");
    assert_eq!(m.nodes[seed].policy.retry_at(&kn), None);
}

#[test]
fn removing_a_peer_closes_its_link_and_forgets_it() {
    let mut m = mesh();
    let (a, b) = (opennet(&mut m, 1), opennet(&mut m, 2));
    m.dial(a, b);
    let kb = key(&m, b);
    let now = m.now;
    let info = m.nodes[a]
        .policy
        .remove(
            now,
            &identity_of(&kb),
            &mut rand::rngs::mock::StepRng::new(1, 1),
        )
        .unwrap();
    assert!(info.connected);
    m.run();
    assert_eq!(m.link_count(), 0);
    assert!(m.nodes[a].saved.as_ref().unwrap().get(&kb).is_none());
    assert_eq!(
        m.nodes[a]
            .policy
            .remove(now, "nobody", &mut rand::rngs::mock::StepRng::new(1, 1)),
        None
    );
    let _ = Location(0);
}

#[test]
fn a_node_without_peers_dials_its_seeds_until_one_link_is_up() {
    let mut m = mesh();
    let seed = opennet(&mut m, 1);
    let (r, b) = (m.nodes[seed].noderef.clone(), m.nodes[seed].bytes.clone());
    m.set_down(seed, true);
    let n = add(&mut m, 2, |c| c.seeds = vec![(r, b)].into());
    // The seed is down: a dial per SEED_RETRY, not per tick.
    m.advance(Duration::from_millis(1_500));
    assert_eq!(m.nodes[n].dials, 1, "dialed at the first tick");
    m.advance(SEED_RETRY - Duration::from_secs(2));
    assert_eq!(m.nodes[n].dials, 1, "not again before SEED_RETRY");
    m.advance(Duration::from_secs(2));
    assert_eq!(m.nodes[n].dials, 2, "again after SEED_RETRY");
    // The seed comes back: the next try links, and the dials stop.
    m.set_down(seed, false);
    m.advance(SEED_RETRY);
    assert_eq!(m.nodes[n].policy.peer_count(), 1);
    let dials = m.nodes[n].dials;
    m.advance(SEED_RETRY * 4);
    assert_eq!(
        m.nodes[n].dials, dials,
        "a node with a peer leaves its seeds alone"
    );
}

#[test]
fn a_node_without_peers_dials_a_few_seeds_at_a_time_and_comes_round_to_each() {
    for up in 0..5 {
        let mut m = mesh();
        let seeds: Vec<usize> = (0..5).map(|s| opennet(&mut m, 10 + s)).collect();
        let list: Vec<_> = seeds
            .iter()
            .map(|&s| (m.nodes[s].noderef.clone(), m.nodes[s].bytes.clone()))
            .collect();
        for (i, &s) in seeds.iter().enumerate() {
            m.set_down(s, i != up);
        }
        let n = add(&mut m, 2, |c| c.seeds = list.into());
        m.advance(Duration::from_millis(1_500));
        let first = m.nodes[n].dials;
        assert!(
            (1..=SEEDS_AT_ONCE).contains(&first),
            "{first} seeds dialed at once"
        );
        // Within two rounds every one of the five seeds was dialed, so the
        // one that is up is linked.
        m.advance(SEED_RETRY * 2);
        assert_eq!(m.nodes[n].policy.peer_count(), 1, "seed {up} never dialed");
    }
}

#[test]
fn a_darknet_node_never_dials_seeds() {
    let mut m = mesh();
    let seed = opennet(&mut m, 1);
    let (r, b) = (m.nodes[seed].noderef.clone(), m.nodes[seed].bytes.clone());
    let n = add(&mut m, 2, |c| {
        c.opennet = false;
        Arc::make_mut(&mut c.routing).opennet = false;
        c.seeds = vec![(r, b)].into();
    });
    m.advance(SEED_RETRY * 3);
    assert_eq!(m.nodes[n].dials, 0);
}

/// A newcomer dials its seed unasked (a seed client there), announces
/// through it, and the seed takes it as a peer: from then on the seed's
/// tunnels know it too (it is named in the seed's tunnel peer lists and
/// can be extended to). A seed whose peers mostly came this way once
/// named almost none of them, and newcomers' tunnels through their seed
/// found no next hop.
#[test]
fn a_seed_client_taken_as_a_peer_is_a_peer_for_tunnels_too() {
    let mut m = mesh();
    let seed = opennet(&mut m, 1);
    m.nodes[seed].policy.enable_tunnels(&[1; 32]);
    let newcomer = opennet(&mut m, 2);
    m.nodes[newcomer].policy.enable_tunnels(&[2; 32]);
    // The newcomer announces through its seed as soon as it is linked,
    // and the seed, which wants peers, takes it.
    m.dial(newcomer, seed);
    m.advance(Duration::from_secs(5));
    assert_eq!(
        m.nodes[seed].policy.routing().stats().seed_clients,
        1,
        "the newcomer came in as a seed client"
    );
    let link = m.link(seed, newcomer).expect("still linked");
    assert!(
        !m.nodes[seed].policy.is_seed_client(link)
            && m.nodes[seed]
                .policy
                .routing()
                .peers()
                .any(|(p, _)| p == link),
        "the seed took the newcomer as a peer"
    );
    let kn = key(&m, newcomer);
    assert!(
        m.nodes[seed].policy.tunnels().unwrap().knows(&kn),
        "the seed's tunnels do not know its new peer"
    );
}

/// A node this node once dialed (so remembers) dialing back uninvited is
/// kept while there is room, and never by dropping a peer when full: else
/// a node let in once could leave and come back at will, pushing out a
/// peer each time (the simulator's `eclipse-return` attack).
#[test]
fn a_remembered_node_dialing_back_is_kept_only_with_room() {
    let mut m = mesh();
    // Four peers, and no announcement of its own after the first (whose
    // invitations would let any dialer in).
    let four = |c: &mut PolicyConfig| {
        let r = Arc::make_mut(&mut c.routing);
        r.max_peers = 4;
        r.refresh_interval = 1 << 40;
        r.announce_interval = 1 << 40;
    };
    let a = add(&mut m, 1, four);
    // Its ring neighbours (never dropped) c and f; b, d and g between.
    let [b, c, d, e, f, g] = [3, 2, 4, 9, 15, 6].map(|s| opennet(&mut m, s));
    // Each of the others announces (to nobody yet: it invites), so it
    // keeps a node that dials it as a peer. b's first peer is e: linking
    // to a later, b does not announce through it (an announcement a may
    // take it by, as it would any newcomer).
    let now = m.now;
    for n in [b, c, d, e, f, g] {
        m.nodes[n].policy.local_request(
            now,
            LocalRequest::Announce,
            &mut rand::rngs::mock::StepRng::new(1, 1),
        );
    }
    m.dial(b, e);
    for n in [b, c, d, f] {
        m.dial(a, n);
    }
    let kb = key(&m, b);
    assert!(
        m.nodes[a].policy.peer_list().get(&kb).is_some(),
        "a remembers b"
    );
    assert_eq!(m.nodes[a].policy.peer_count(), 4, "a is full");
    // b leaves; with room, a takes it back when it dials.
    m.cut(a, b);
    assert_eq!(m.nodes[a].policy.peer_count(), 3);
    m.dial(b, a);
    assert!(linked(&m, a, b), "kept with room");
    // b leaves again and a fills its place; then, once a replacement
    // would be due (past the peers' grace, a's invitations expired), b
    // dials back.
    m.cut(a, b);
    m.dial(a, g);
    assert_eq!(m.nodes[a].policy.peer_count(), 4, "a is full");
    m.advance(Duration::from_secs(150));
    let before: Vec<bool> = [c, d, f, g].iter().map(|&n| linked(&m, a, n)).collect();
    assert_eq!(before, [true; 4]);
    m.dial(b, a);
    let after: Vec<bool> = [c, d, f, g].iter().map(|&n| linked(&m, a, n)).collect();
    assert_eq!(after, [true; 4], "no peer dropped for b");
    assert_eq!(m.nodes[a].policy.peer_count(), 4);
    assert!(
        m.link(a, b)
            .is_none_or(|l| m.nodes[a].policy.is_seed_client(l)),
        "b is at most a seed client"
    );
}

#[test]
fn a_full_node_keeps_the_newcomer_it_asked_for() {
    let mut m = mesh();
    let full = |c: &mut PolicyConfig| {
        Arc::make_mut(&mut c.routing).max_peers = 3;
        Arc::make_mut(&mut c.routing).peer_grace = 1_000;
        Arc::make_mut(&mut c.routing).fold_min_interval = 30_000;
    };
    let a = add(&mut m, 8, full);
    let b = opennet(&mut m, 2);
    let (c, d) = (opennet(&mut m, 3), opennet(&mut m, 4));
    // a announces (no peer yet: it goes nowhere, but invites three), and
    // three nodes dial it.
    let now = m.now;
    m.nodes[a].policy.local_request(
        now,
        LocalRequest::Announce,
        &mut rand::rngs::mock::StepRng::new(1, 1),
    );
    for p in [b, c, d] {
        m.dial(p, a);
    }
    assert_eq!(m.nodes[a].policy.peer_count(), 3, "a is full");
    m.advance(Duration::from_secs(5));
    // A newcomer near a's location joins through b, whose only other peer
    // is a: its announcement reaches a, which asks for a link to it.
    let n = add(&mut m, 9, |_| {});
    m.dial(n, b);
    m.advance(Duration::from_secs(1));
    let link = m.link(a, n).expect("a linked to the newcomer");
    assert!(
        !m.nodes[a].policy.is_seed_client(link)
            && m.nodes[a].policy.routing().peers().any(|(p, _)| p == link),
        "the full node kept the newcomer it asked for as a peer"
    );
    assert_eq!(
        m.nodes[a].policy.peer_count(),
        3,
        "and dropped one peer for it"
    );
    // The dropped peer is forgotten: a does not dial it back.
    let gone: Vec<usize> = [b, c, d]
        .into_iter()
        .filter(|&p| !linked(&m, a, p))
        .collect();
    assert_eq!(gone.len(), 1);
    let kg = key(&m, gone[0]);
    assert!(m.nodes[a].policy.peer_list().get(&kg).is_none());
    assert_eq!(m.nodes[a].policy.retry_at(&kg), None);
}

/// Node `by` re-signs node `of`'s static key with other addresses, with
/// its own identity key: a noderef that verified while identity keys were
/// not bound to static keys.
fn forged(m: &Mesh<Verify>, of: usize, by: usize) -> NoderefBytes {
    let evil = NodeRef {
        addresses: vec!["192.0.2.66:6666".parse().unwrap()],
        identity_key: m.nodes[by].keys.identity().to_bytes(),
        ..m.nodes[of].noderef.clone()
    };
    evil.to_bytes(&m.nodes[by].keys).into()
}

#[test]
fn a_noderef_naming_another_nodes_key_is_not_remembered() {
    let mut m = mesh();
    let (a, b, c) = (opennet(&mut m, 1), opennet(&mut m, 2), opennet(&mut m, 3));
    m.dial(c, a);
    let (kb, kc) = (key(&m, b), key(&m, c));
    let saved = |m: &Mesh<Verify>, k: &[u8; 32]| {
        m.nodes[a]
            .saved
            .as_ref()
            .and_then(|l| l.get(k).map(|e| e.noderef.addresses.clone()))
    };
    let honest = saved(&m, &kc);
    assert!(honest.is_some(), "a remembers the dialer from its noderef");
    // c sends b's real noderef, then one forged for b, then one forged
    // for itself (its own key, someone else's signature): all refused.
    for bytes in [m.nodes[b].bytes.clone(), forged(&m, b, c), forged(&m, c, b)] {
        m.inject(c, a, Message::Noderef { noderef: bytes });
        assert_eq!(saved(&m, &kb), None);
        assert_eq!(saved(&m, &kc), honest);
    }
}

#[test]
fn a_forged_noderef_in_an_announcement_is_not_dialed() {
    let mut m = mesh();
    let (a, b, c) = (opennet(&mut m, 1), opennet(&mut m, 2), opennet(&mut m, 3));
    m.dial(b, a);
    let announce = |m: &mut Mesh<Verify>, id: u64, bytes: NoderefBytes| {
        let location = Location(m.nodes[c].noderef.location.unwrap());
        m.inject(
            b,
            a,
            Message::Announce {
                id,
                htl: 10,
                noderef: lichen_routing::NodeRef {
                    location,
                    address: bytes,
                },
                target: None,
                unreachable: false,
                room: None,
            },
        );
    };
    let dials = m.nodes[a].dials;
    // b announces c with b's addresses, signed by b: a does not dial.
    let bytes = forged(&m, c, b);
    announce(&mut m, 1, bytes);
    assert_eq!(m.nodes[a].dials, dials, "a forged noderef was dialed");
    assert!(m.link(a, c).is_none());
    // The same announcement with c's own noderef is dialed (so the
    // refusal above is the check, not the routing core's choice).
    m.advance(Duration::from_secs(60));
    let bytes = m.nodes[c].bytes.clone();
    announce(&mut m, 2, bytes);
    assert_eq!(m.nodes[a].dials, dials + 1);
    assert!(m.link(a, c).is_some());
}

#[test]
fn a_link_without_a_hello_is_closed_at_the_deadline() {
    use rand::SeedableRng;
    let mut m = mesh();
    let a = opennet(&mut m, 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    // A stranger finishes the handshake and then says nothing.
    let silent = m.nodes[a]
        .policy
        .link_up(m.now, [99; 32], None, None, &mut rng)
        .unwrap();
    m.run();
    assert!(!m.nodes[a].policy.greeted(silent));
    m.advance(HELLO_DEADLINE - RECONNECT_TICK);
    assert_eq!(m.nodes[a].policy.remote_of(silent), Some([99; 32]));
    m.advance(RECONNECT_TICK * 2);
    assert_eq!(m.nodes[a].policy.remote_of(silent), None, "closed");
    assert_eq!(m.nodes[a].policy.link_to(&[99; 32]), None);
    // A peer that says hello in time stays.
    let b = opennet(&mut m, 2);
    m.dial(b, a);
    let pid = m.link(a, b).unwrap();
    assert!(m.nodes[a].policy.greeted(pid));
    m.advance(HELLO_DEADLINE * 2);
    assert_eq!(m.link(a, b), Some(pid));
}

/// Node `a`'s policy gets a link from `remote` that dialed it from `ip`,
/// and its hello. Returns the link.
fn dialed_in(m: &mut Mesh<Verify>, a: usize, remote: [u8; 32], ip: [u8; 4]) -> PeerId {
    let now = m.now;
    let mut rng = rand::rngs::mock::StepRng::new(1, 1);
    let p = &mut m.nodes[a].policy;
    let pid = p
        .link_up(now, remote, None, Some(IpAddr::from(ip)), &mut rng)
        .unwrap();
    let hello = Message::LocationChanged {
        location: Location(u64::from(remote[0]) << 56),
    };
    p.message(now, pid, hello, &mut lichen_routing::EmptyStore, &mut rng);
    while p.poll_output(now).is_some() {}
    pid
}

fn is_peer(m: &Mesh<Verify>, a: usize, pid: PeerId) -> bool {
    m.nodes[a].policy.routing().peers().any(|(p, _)| p == pid)
}

#[test]
fn a_node_that_dials_in_unasked_is_at_most_a_seed_client() {
    let mut m = mesh();
    let a = opennet(&mut m, 1);
    // a has room for 20 peers, but did not ask for this one.
    let x = dialed_in(&mut m, a, [50; 32], [192, 0, 2, 1]);
    assert!(!is_peer(&m, a, x), "an unknown dialer took a peer slot");
    assert!(m.nodes[a].policy.is_seed_client(x));
    // After a's announcement (which gives its noderef out), a node that
    // dials in was invited: a peer.
    let now = m.now;
    let mut rng = rand::rngs::mock::StepRng::new(1, 1);
    m.nodes[a]
        .policy
        .local_request(now, LocalRequest::Announce, &mut rng);
    let y = dialed_in(&mut m, a, [51; 32], [198, 51, 100, 1]);
    assert!(is_peer(&m, a, y));
    assert!(!m.nodes[a].policy.is_seed_client(y));
}

#[test]
fn one_network_holds_at_most_two_peer_slots_and_two_seed_client_slots() {
    let mut m = mesh();
    let a = opennet(&mut m, 1);
    let now = m.now;
    let mut rng = rand::rngs::mock::StepRng::new(1, 1);
    // Invited: a's announcement opens an invitation per free slot.
    m.nodes[a]
        .policy
        .local_request(now, LocalRequest::Announce, &mut rng);
    // Six identities from one /24: two peers, two seed clients, the rest
    // closed.
    let links: Vec<PeerId> = (0..6)
        .map(|i| dialed_in(&mut m, a, [60 + i; 32], [203, 0, 113, 10 + i]))
        .collect();
    let peers = links.iter().filter(|&&l| is_peer(&m, a, l)).count();
    let seed = links
        .iter()
        .filter(|&&l| m.nodes[a].policy.is_seed_client(l))
        .count();
    assert_eq!(
        (peers, seed),
        (MAX_PEERS_PER_PREFIX, MAX_SEED_CLIENTS_PER_PREFIX)
    );
    // Another /24 is not affected; nor is loopback (testnets).
    let other = dialed_in(&mut m, a, [70; 32], [203, 0, 114, 1]);
    assert!(is_peer(&m, a, other));
    for i in 0..3 {
        let l = dialed_in(&mut m, a, [80 + i; 32], [127, 0, 0, 1]);
        assert!(is_peer(&m, a, l), "loopback is exempt");
    }
    // IPv6: a /64 counts as one network; an IPv4-mapped address as IPv4.
    let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
    assert_eq!(address_prefix(v6(1)), address_prefix(v6(2)));
    assert_ne!(
        address_prefix(v6(1)),
        address_prefix(IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]))
    );
    let mapped = IpAddr::from(std::net::Ipv4Addr::new(203, 0, 113, 1).to_ipv6_mapped());
    assert_eq!(
        address_prefix(mapped),
        address_prefix(IpAddr::from([203, 0, 113, 200]))
    );
    assert_eq!(address_prefix(IpAddr::from([127, 0, 0, 1])), None);
}

#[test]
fn tunnel_guards_are_saved_with_the_peer_list_and_kept_after_a_restart() {
    let mut m = mesh();
    let hops2 = |c: &mut PolicyConfig| c.tunnels.hops = 2;
    let a = add(&mut m, 1, hops2);
    let others: Vec<usize> = (2..6).map(|s| add(&mut m, s, hops2)).collect();
    for i in std::iter::once(a).chain(others.iter().copied()) {
        let secret = [u8::try_from(i + 1).unwrap(); 32];
        m.nodes[i].policy.enable_tunnels(&secret);
    }
    for &o in &others {
        m.dial(a, o);
    }
    m.dial(others[0], others[1]);
    m.dial(others[2], others[3]);
    // Tunnel ticks draw the guards; the list is written within SAVE_EVERY.
    m.advance(SAVE_EVERY + Duration::from_secs(10));
    let guard_keys = |m: &Mesh<Verify>, i: usize| -> Vec<[u8; 32]> {
        let t = m.nodes[i].policy.tunnels().unwrap();
        t.guards().list().iter().map(|g| g.key).collect()
    };
    let live = guard_keys(&m, a);
    assert!(!live.is_empty(), "no guards drawn");
    let saved = m.nodes[a].saved.clone().expect("the list was saved");
    let keys: Vec<[u8; 32]> = saved.guards().iter().map(|g| g.key).collect();
    assert_eq!(keys, live);
    // Wall-clock times on disk, not the run's clock.
    assert!(saved.guards().iter().all(|g| g.added >= 1_700_000_000_000));
    // The file form keeps them.
    let (back, warnings) = PeerList::from_toml(&saved.to_toml(), 16).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(back.guards(), saved.guards());
    // A restart (a new policy from the saved list) starts with the same
    // guards, not new ones.
    let again = m.add([1; 32], 1 << 58, back, accept_all, hops2);
    m.nodes[again].policy.enable_tunnels(&[1; 32]);
    let restored = guard_keys(&m, again);
    assert_eq!(restored, live);
}

/// A newcomer with two seeds links to both at once. The first seed's
/// hello comes first and the newcomer announces through it; the second
/// seed's hello arrives while that announcement is still on its way.
/// The first seed swallows announcements (answers at once, forwards
/// nothing); the second has three peers
/// that want more. The newcomer must announce through the second seed as
/// soon as the first announcement ends, not a minute later at its next
/// scheduled announcement (a newcomer whose seeds were an honest node and
/// a black hole stayed at one or two peers for minutes in about half of
/// the whole-system runs: `tests/tests/network_corrupt.rs`).
#[test]
fn a_seed_linked_while_an_announcement_is_on_its_way_is_announced_through_next() {
    let mut m = mesh();
    let lone = opennet(&mut m, 1);
    m.nodes[lone].swallows_announcements = true;
    let seed = opennet(&mut m, 5);
    for s in [9, 10, 11] {
        let h = opennet(&mut m, s);
        m.dial(h, seed);
    }
    m.advance(Duration::from_secs(2));
    let seeds: Vec<_> = [lone, seed]
        .iter()
        .map(|&s| (m.nodes[s].noderef.clone(), m.nodes[s].bytes.clone()))
        .collect();
    let n = add(&mut m, 3, |c| c.seeds = seeds.into());
    m.advance(Duration::from_secs(10));
    let link = |m: &Mesh<Verify>, s: usize| m.link(n, s).is_some();
    assert!(link(&m, lone) && link(&m, seed), "linked to both seeds");
    assert!(
        m.nodes[n].sent.get("Announce").copied().unwrap_or(0) >= 2,
        "announced through both seeds: {:?}",
        m.nodes[n].sent
    );
    assert!(
        m.nodes[n].policy.peer_count() >= 3,
        "the second seed's peers dialed the newcomer within 10 s: {} peers",
        m.nodes[n].policy.peer_count()
    );
}

/// A node's primary tunnel guards are peers it keeps: the routing core
/// never drops them to make room (a dropped guard is replaced by a
/// backup guard, one more peer that has been a first hop).
#[test]
fn the_primary_guards_are_peers_the_node_keeps() {
    let mut m = mesh();
    let n = add(&mut m, 1, |c| {
        c.tunnels.hops = 2;
        c.tunnels.min_peer_list = 0;
    });
    m.nodes[n].policy.enable_tunnels(&[1; 32]);
    let peers: Vec<usize> = (2..6).map(|s| opennet(&mut m, s)).collect();
    for &p in &peers {
        m.dial(n, p);
    }
    m.advance(Duration::from_secs(10));
    let policy = &m.nodes[n].policy;
    let guards: Vec<[u8; 32]> = policy
        .tunnels()
        .unwrap()
        .guards()
        .list()
        .iter()
        .map(|g| g.key)
        .collect();
    assert_eq!(guards.len(), 2, "two guards drawn from the four peers");
    let mut kept: Vec<[u8; 32]> = policy
        .routing()
        .kept_peers()
        .iter()
        .filter_map(|&p| policy.remote_of(p))
        .collect();
    kept.sort_unstable();
    let mut want = guards.clone();
    want.sort_unstable();
    assert_eq!(kept, want, "the kept peers are the guards");
}

/// Tick every node at `m.now`, checking `tick_due` first: a node whose
/// `tick_due` is later (or None) must do nothing at this tick. Returns
/// how many nodes acted.
fn tick_checked(m: &mut Mesh<Verify>) -> usize {
    let now = m.now;
    let mut acted = 0;
    for i in 0..m.nodes.len() {
        if m.nodes[i].down {
            continue;
        }
        let due = m.nodes[i].policy.tick_due();
        let saves = m.nodes[i].saves;
        m.nodes[i].policy.tick(now);
        if due.is_none_or(|t| t > now) {
            assert!(
                m.nodes[i].policy.poll_output(now).is_none(),
                "node {i} acted at a tick before its tick_due {due:?}"
            );
        } else {
            acted += 1;
        }
        m.run();
        assert!(due.is_some_and(|t| t <= now) || m.nodes[i].saves == saves);
    }
    acted
}

#[test]
fn tick_due_names_every_tick_that_acts() {
    use rand::SeedableRng;
    let mut m = mesh();
    // A seed that is down, a newcomer dialing it; two peers, one of which
    // goes down (redials with backoff); a silent inbound link.
    let seed = opennet(&mut m, 1);
    let (r, b) = (m.nodes[seed].noderef.clone(), m.nodes[seed].bytes.clone());
    m.set_down(seed, true);
    let newcomer = add(&mut m, 2, |c| c.seeds = vec![(r, b)].into());
    let (a, c) = (opennet(&mut m, 3), opennet(&mut m, 4));
    m.dial(a, c);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    m.nodes[c]
        .policy
        .link_up(m.now, [99; 32], None, None, &mut rng)
        .unwrap();
    m.run();
    let mut acted = 0;
    for step in 0..400 {
        if step == 20 {
            m.set_down(c, true);
        }
        if step == 200 {
            m.set_down(seed, false);
            m.set_down(c, false);
        }
        // `Mesh::advance` without its own ticks: the clock, our checked
        // ticks, the routing timers.
        m.now += RECONNECT_TICK;
        acted += tick_checked(&mut m);
        let now = m.now;
        for i in 0..m.nodes.len() {
            if m.nodes[i].policy.poll_timeout().is_some_and(|t| t <= now) {
                m.nodes[i].policy.timeout(now, &mut rng);
            }
        }
        m.run();
    }
    assert!(acted > 10, "the ticks that act are named: {acted}");
    assert_eq!(m.nodes[newcomer].policy.peer_count(), 1, "the seed linked");
    assert!(m.link(a, c).is_some(), "the redial linked");
    // Idle: nothing due but the save of `last_seen`, then nothing.
    m.advance(SAVE_EVERY * 2);
    for n in &m.nodes {
        assert_eq!(n.policy.tick_due(), None, "{:?}", n.policy);
    }
}

/// The link table behaves as the ordered map it replaced: lookups,
/// replacement, removal (holes) and order survive a sweep, and a burst of
/// thousands of links closed oldest first leaves it small and in order.
#[test]
fn link_table_is_an_ordered_map() {
    let mut t = LinkTable::default();
    let mut model = std::collections::BTreeMap::new();
    for i in 0..5_000u64 {
        assert_eq!(t.insert(PeerId(i), i * 10), None);
        model.insert(PeerId(i), i * 10);
        // Close the oldest while keeping ~50 open (a seed's seed clients).
        if i >= 50 {
            let old = PeerId(i - 50);
            assert_eq!(t.remove(&old), model.remove(&old));
        }
    }
    assert_eq!(t.len(), model.len());
    assert!(t
        .iter()
        .map(|(p, v)| (*p, *v))
        .eq(model.iter().map(|(p, v)| (*p, *v))));
    assert!(t.ids.len() < 60, "holes swept: {}", t.ids.len());
    // Little spare room kept for its ~50 links (a node's table settles
    // a little above its peer limit): the holes are swept before they
    // make it grow.
    assert!(t.states.capacity() <= 64, "room: {}", t.states.capacity());
    assert_eq!(t.remove(&PeerId(3)), None, "already gone");
    assert!(!t.contains_key(&PeerId(3)));
    assert_eq!(t.insert(PeerId(4_990), 1), Some(49_900));
    assert_eq!(t.get(&PeerId(4_990)), Some(&1));
    // An id below the last one (not made by the policy, but allowed).
    assert_eq!(t.insert(PeerId(7), 70), None);
    assert!(t.keys().zip(t.keys().skip(1)).all(|(a, b)| a < b));
    *t.get_mut(&PeerId(7)).unwrap() += 1;
    assert_eq!(t.values().next(), Some(&71));
    let all: Vec<PeerId> = t.keys().copied().collect();
    for p in all {
        t.remove(&p);
    }
    assert!(t.is_empty());
}

/// A node that asks (`AnswerAndAsk` on its noderef's port) among nodes
/// that answer.
fn asking(m: &mut Mesh<Verify>, s: u8) -> usize {
    let i = add(m, s, |_| {});
    let port = m.nodes[i].noderef.addresses[0].port();
    m.nodes.pop();
    add(m, s, |c| c.dial_backs = DialBacks::AnswerAndAsk { port })
}

fn answering(m: &mut Mesh<Verify>, s: u8) -> usize {
    add(m, s, |c| c.dial_backs = DialBacks::Answer)
}

#[test]
fn peers_dial_a_reachable_node_back_and_name_its_address() {
    let mut m = mesh();
    let a = asking(&mut m, 1);
    let (b, c) = (answering(&mut m, 2), answering(&mut m, 3));
    assert_eq!(
        m.nodes[a].policy.reachability(m.now).state,
        Reachable::Unknown
    );
    m.dial(a, b);
    m.dial(a, c);
    let r = m.nodes[a].policy.reachability(m.now);
    assert_eq!(r.state, Reachable::Yes);
    assert_eq!(r.answers, 2, "both peers asked at their hello");
    assert_eq!(r.public, Some(m.nodes[a].noderef.addresses[0]));
    assert_eq!(m.nodes[a].sent.get("DialBack"), Some(&2));
    assert_eq!(m.nodes[b].sent.get("DialBackResult"), Some(&1));
    // A noderef naming another address (a node listening on every
    // interface names 127.0.0.1) is to name the one both peers reached,
    // on its own port; the right one stays.
    let own = m.nodes[a].noderef.addresses[0];
    let loopback = SocketAddr::new([127, 0, 0, 1].into(), 7000);
    assert_eq!(
        m.nodes[a].policy.noderef_address(m.now, loopback),
        Some(SocketAddr::new(own.ip(), 7000))
    );
    assert_eq!(m.nodes[a].policy.noderef_address(m.now, own), None);
    // Answering nodes do not ask.
    assert_eq!(m.nodes[b].sent.get("DialBack"), None);
    assert_eq!(
        m.nodes[b].policy.reachability(m.now).state,
        Reachable::Unknown
    );
}

/// An asking node behind NAT that dialed three answering nodes.
fn behind_nat_with_three_peers() -> (Mesh<Verify>, usize, [usize; 3]) {
    let mut m = mesh();
    let a = asking(&mut m, 1);
    m.nodes[a].behind_nat = true;
    let peers = [2, 3, 4].map(|s| answering(&mut m, s));
    for peer in peers {
        m.dial(a, peer);
    }
    (m, a, peers)
}

#[test]
fn a_node_behind_nat_learns_it_is_not_reachable_and_still_has_peers() {
    let (mut m, a, _) = behind_nat_with_three_peers();
    assert_eq!(m.nodes[a].policy.peer_count(), 3, "it dials out");
    let r = m.nodes[a].policy.reachability(m.now);
    assert_eq!(r.state, Reachable::No);
    assert_eq!(r.answers, 3);
    // A fourth peer is not asked: three answers are enough until the
    // next round, PROBE_EVERY later.
    let e = answering(&mut m, 5);
    m.dial(a, e);
    assert_eq!(m.nodes[a].sent.get("DialBack"), Some(&3));
    m.advance(PROBE_EVERY + RECONNECT_TICK);
    assert!(m.nodes[a].sent["DialBack"] >= 6, "a new round");
    assert_eq!(m.nodes[a].policy.reachability(m.now).state, Reachable::No);
}

#[test]
fn one_lying_peer_is_outvoted() {
    let (mut m, a, [_, _, d]) = behind_nat_with_three_peers();
    // d claims, unasked and then again, that it reached a, from elsewhere.
    let lie = Message::DialBackResult {
        seen: "192.0.2.1:9".parse().unwrap(),
        reachable: true,
    };
    m.inject(d, a, lie.clone());
    m.inject(d, a, lie);
    let r = m.nodes[a].policy.reachability(m.now);
    assert_eq!(
        (r.state, r.answers),
        (Reachable::No, 3),
        "unasked answers do not count"
    );
    assert_eq!(r.public, Some(m.nodes[a].noderef.addresses[0]));
    let elsewhere = SocketAddr::new([127, 0, 0, 1].into(), 7000);
    assert_eq!(
        m.nodes[a].policy.noderef_address(m.now, elsewhere),
        Some(SocketAddr::new(m.nodes[a].noderef.addresses[0].ip(), 7000)),
        "behind NAT: the address its links come from (where punches aim), not the liar's"
    );
}

#[test]
fn dial_backs_are_answered_once_a_minute_per_asker_and_only_on_their_port() {
    let mut m = mesh();
    let a = answering(&mut m, 1);
    let b = answering(&mut m, 2);
    m.dial(a, b);
    let port = m.nodes[a].noderef.addresses[0].port();
    for _ in 0..5 {
        m.inject(a, b, Message::DialBack { port });
    }
    assert_eq!(m.nodes[b].sent.get("DialBackResult"), Some(&1));
    m.advance(ANSWER_EVERY);
    m.inject(a, b, Message::DialBack { port });
    assert_eq!(m.nodes[b].sent.get("DialBackResult"), Some(&2));
    // Port 0 is no port; a node that takes no part answers nothing.
    m.advance(ANSWER_EVERY);
    m.inject(a, b, Message::DialBack { port: 0 });
    assert_eq!(m.nodes[b].sent.get("DialBackResult"), Some(&2));
    let c = opennet(&mut m, 3);
    m.dial(a, c);
    m.inject(a, c, Message::DialBack { port });
    assert_eq!(m.nodes[c].sent.get("DialBackResult"), None);
}

/// A darknet node that asks for dial-backs (and so punches), with
/// secret `[s; 32]`.
fn punching(m: &mut Mesh<Verify>, s: u8) -> usize {
    let i = darknet(m, s);
    let port = m.nodes[i].noderef.addresses[0].port();
    m.nodes.pop();
    add(m, s, |c| {
        c.opennet = false;
        Arc::make_mut(&mut c.routing).opennet = false;
        c.dial_backs = DialBacks::AnswerAndAsk { port };
    })
}

fn befriend(m: &mut Mesh<Verify>, a: usize, b: usize) {
    let now = m.now;
    for (x, y) in [(a, b), (b, a)] {
        let (r, bytes) = (m.nodes[y].noderef.clone(), m.nodes[y].bytes.clone());
        m.nodes[x].policy.add_friend(now, r, bytes).unwrap();
    }
    m.run();
}

fn linked(m: &Mesh<Verify>, a: usize, b: usize) -> bool {
    m.link(a, b).is_some()
}

/// Friends `a` and `b`, both behind NAT, and `r`, a reachable friend of
/// both, linked to both.
fn two_behind_nat_and_a_shared_friend() -> (Mesh<Verify>, usize, usize, usize) {
    let mut m = mesh();
    let (a, b, r) = (
        punching(&mut m, 1),
        punching(&mut m, 2),
        punching(&mut m, 3),
    );
    m.nodes[a].behind_nat = true;
    m.nodes[b].behind_nat = true;
    befriend(&mut m, a, r);
    befriend(&mut m, b, r);
    assert!(linked(&m, a, r) && linked(&m, b, r), "both dialed out to r");
    (m, a, b, r)
}

#[test]
fn two_friends_behind_nat_link_through_a_punch_their_shared_friend_times() {
    let (mut m, a, b, r) = two_behind_nat_and_a_shared_friend();
    befriend(&mut m, a, b);
    assert!(linked(&m, a, b), "the punch brought a direct link");
    assert_eq!(m.nodes[a].policy.peer_count(), 2);
    assert_eq!(m.nodes[b].policy.peer_count(), 2);
    // Each tried to dial the other, failed, and asked r; r introduced
    // the first asker, the second ask found the link already up or its
    // own introduction answered by the same punch.
    assert!(m.nodes[a].sent.contains_key("PunchAsk") || m.nodes[b].sent.contains_key("PunchAsk"));
    assert!(m.nodes[r].sent.contains_key("PunchOffer"));
    assert!(m.nodes[r].sent.contains_key("PunchGo"));
    let (ta, la) = m.nodes[a].policy.punch_counts();
    let (tb, lb) = m.nodes[b].policy.punch_counts();
    assert_eq!((ta, la, tb, lb), (1, 1, 1, 1));
}

/// Two people make each other friends one after the other, as they do:
/// the first node's ask reaches the second before it lists the first.
/// The second answers that held offer as it adds the first, whichever
/// key is the smaller, and they link at once. (Before, when the first
/// had the smaller key, it ignored the second's offer, its own ask still
/// under way, and neither punched until the next ask a minute later.)
#[test]
fn friends_added_one_after_the_other_behind_nat_link_at_once() {
    for first_is_a in [true, false] {
        let (mut m, a, b, _) = two_behind_nat_and_a_shared_friend();
        let (x, y) = if first_is_a { (a, b) } else { (b, a) };
        let asks = |m: &Mesh<Verify>, i: usize| m.nodes[i].sent.get("PunchAsk").copied();
        let add_one = |m: &mut Mesh<Verify>, x: usize, y: usize| {
            let (r, bytes) = (m.nodes[y].noderef.clone(), m.nodes[y].bytes.clone());
            let now = m.now;
            m.nodes[x].policy.add_friend(now, r, bytes).unwrap();
            m.run();
        };
        add_one(&mut m, x, y);
        assert!(!linked(&m, x, y), "nobody to punch with yet");
        assert!(asks(&m, x).is_some(), "the first asked");
        m.advance(Duration::from_millis(300));
        let y_asks = asks(&m, y);
        add_one(&mut m, y, x);
        assert!(linked(&m, x, y), "linked as the second added the first");
        assert_eq!(asks(&m, y), y_asks, "the second answered, asked nothing");
        assert_eq!(m.nodes[x].policy.punch_counts(), (1, 1));
        assert_eq!(m.nodes[y].policy.punch_counts(), (1, 1));
    }
}

#[test]
fn behind_a_symmetric_nat_the_punch_fails_and_is_not_asked_again_at_once() {
    let (mut m, a, b, _) = two_behind_nat_and_a_shared_friend();
    m.nodes[b].symmetric_nat = true;
    befriend(&mut m, a, b);
    assert!(!linked(&m, a, b));
    assert_eq!(m.nodes[a].policy.punch_counts().1, 0);
    let asks = |m: &Mesh<Verify>| {
        m.nodes[a].sent.get("PunchAsk").copied().unwrap_or(0)
            + m.nodes[b].sent.get("PunchAsk").copied().unwrap_or(0)
    };
    let before = asks(&m);
    assert!(before >= 1);
    // The friends' redials fail again within a minute: no new ask.
    m.advance(ASK_EVERY / 2);
    assert_eq!(asks(&m), before);
    // Later, and with the NAT now keeping ports, a redial's ask works.
    m.nodes[b].symmetric_nat = false;
    m.advance(ASK_EVERY * 3);
    assert!(asks(&m) > before);
    assert!(linked(&m, a, b), "a later punch linked them");
}

#[test]
fn an_offer_for_a_stranger_or_an_ask_for_an_unlinked_node_does_nothing() {
    let (mut m, a, b, r) = two_behind_nat_and_a_shared_friend();
    // a and b are not friends: r's offer on a's behalf is not taken.
    let port = m.nodes[a].noderef.addresses[0].port();
    m.inject(
        a,
        r,
        Message::PunchAsk {
            target: key(&m, b),
            port,
        },
    );
    assert_eq!(m.nodes[r].sent.get("PunchOffer"), Some(&1));
    assert_eq!(m.nodes[b].sent.get("PunchReady"), None);
    assert_eq!(m.nodes[b].policy.punch_counts(), (0, 0));
    // An ask for a node r has no link to, or for the asker itself.
    m.advance(INTRODUCE_EVERY);
    m.inject(
        a,
        r,
        Message::PunchAsk {
            target: [9; 32],
            port,
        },
    );
    m.inject(
        a,
        r,
        Message::PunchAsk {
            target: key(&m, a),
            port,
        },
    );
    assert_eq!(m.nodes[r].sent.get("PunchOffer"), Some(&1));
    // One asker is introduced at most once per INTRODUCE_EVERY.
    m.inject(
        a,
        r,
        Message::PunchAsk {
            target: key(&m, b),
            port,
        },
    );
    m.inject(
        a,
        r,
        Message::PunchAsk {
            target: key(&m, b),
            port,
        },
    );
    assert_eq!(m.nodes[r].sent.get("PunchOffer"), Some(&2));
    // A go nobody asked for starts no punch.
    let addr = m.nodes[b].noderef.addresses[0];
    m.inject(
        r,
        a,
        Message::PunchGo {
            target: key(&m, b),
            addr,
        },
    );
    assert_eq!(m.nodes[a].policy.punch_counts(), (0, 0));
    assert!(!linked(&m, a, b));
}

fn redeem_done(m: &Mesh<Verify>, i: usize) -> Vec<bool> {
    m.nodes[i]
        .done
        .iter()
        .filter_map(|o| match o {
            Output::InvitationDone { friend, .. } => Some(friend.is_some()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_invitation_makes_two_darknet_nodes_friends_once() {
    let mut m = mesh();
    let (a, b, c) = (darknet(&mut m, 1), darknet(&mut m, 2), darknet(&mut m, 3));
    let mut rng = rand::rngs::mock::StepRng::new(1, 1);
    let now = m.now;
    let inv = m.nodes[a]
        .policy
        .invite(now, Duration::from_secs(3600), &mut rng)
        .unwrap();
    let text = inv.to_text();
    let inv = crate::Invitation::parse(&text, 0).unwrap();
    m.nodes[b].policy.redeem(now, &inv).unwrap();
    m.run();
    assert!(linked(&m, a, b));
    assert_eq!(m.nodes[a].policy.peer_count(), 1, "routed as a friend");
    assert_eq!(m.nodes[b].policy.peer_count(), 1);
    assert!(m.nodes[a].policy.peer_list().is_friend(&key(&m, b)));
    assert!(m.nodes[b].policy.peer_list().is_friend(&key(&m, a)));
    assert_eq!(redeem_done(&m, b), vec![true]);
    // The same invitation again, from another node: refused, and the
    // stranger's link closed.
    m.nodes[c].policy.redeem(now, &inv).unwrap();
    m.run();
    assert!(!linked(&m, a, c));
    assert!(!m.nodes[a].policy.peer_list().is_friend(&key(&m, c)));
    assert_eq!(redeem_done(&m, c), vec![false]);
    // Redeeming a friend's invitation, or one's own, is refused at once.
    assert_eq!(
        m.nodes[b].policy.redeem(now, &inv),
        Err(AddFriendError::Duplicate)
    );
    assert_eq!(
        m.nodes[a].policy.redeem(now, &inv),
        Err(AddFriendError::Myself)
    );
}

#[test]
fn an_expired_invitation_and_a_stranger_without_one_are_refused() {
    let mut m = mesh();
    let (a, b, c) = (darknet(&mut m, 1), darknet(&mut m, 2), darknet(&mut m, 3));
    let mut rng = rand::rngs::mock::StepRng::new(9, 3);
    let now = m.now;
    let inv = m.nodes[a]
        .policy
        .invite(now, Duration::from_secs(60), &mut rng)
        .unwrap();
    // A stranger that dials while invitations are out and says hello
    // without one is dropped.
    m.dial(c, a);
    assert!(!linked(&m, a, c));
    m.advance(Duration::from_secs(61));
    let now = m.now;
    m.nodes[b].policy.redeem(now, &inv).unwrap();
    m.run();
    assert!(!linked(&m, a, b));
    assert_eq!(redeem_done(&m, b), vec![false]);
    assert!(!m.nodes[a].policy.peer_list().is_friend(&key(&m, b)));
}

#[test]
fn an_opennet_node_invites_too_and_the_limit_holds() {
    let mut m = mesh();
    let (a, b) = (opennet(&mut m, 1), opennet(&mut m, 2));
    let mut rng = rand::rngs::mock::StepRng::new(5, 7);
    let now = m.now;
    let inv = m.nodes[a]
        .policy
        .invite(now, Duration::from_secs(3600), &mut rng)
        .unwrap();
    m.nodes[b].policy.redeem(now, &inv).unwrap();
    m.run();
    assert!(linked(&m, a, b));
    assert!(m.nodes[a].policy.peer_list().is_friend(&key(&m, b)));
    assert!(m.nodes[b].policy.peer_list().is_friend(&key(&m, a)));
    assert_eq!(redeem_done(&m, b), vec![true]);
    // The used one no longer counts.
    for _ in 0..MAX_INVITATIONS {
        m.nodes[a]
            .policy
            .invite(now, Duration::from_secs(60), &mut rng)
            .unwrap();
    }
    assert_eq!(
        m.nodes[a]
            .policy
            .invite(now, Duration::from_secs(60), &mut rng)
            .unwrap_err(),
        InviteError::TooMany
    );
}

#[test]
fn a_new_port_asks_the_peers_again_at_once() {
    let (mut m, a, _) = behind_nat_with_three_peers();
    assert_eq!(m.nodes[a].policy.reachability(m.now).state, Reachable::No);
    // A minute later the router maps the port: no longer behind NAT.
    m.advance(ANSWER_EVERY);
    let asked = m.nodes[a].sent["DialBack"];
    m.nodes[a].behind_nat = false;
    let port = m.nodes[a].noderef.addresses[0].port();
    let now = m.now;
    m.nodes[a].policy.port_changed(now, port);
    assert_eq!(
        m.nodes[a].policy.reachability(m.now).state,
        Reachable::Unknown,
        "the old answers are void"
    );
    m.advance(RECONNECT_TICK);
    // Every peer still linked is asked again (not 30 minutes later).
    let peers = m.nodes[a].policy.peer_count();
    assert!(peers >= 1);
    assert_eq!(
        m.nodes[a].sent["DialBack"],
        asked + peers,
        "asked again at once"
    );
    assert_eq!(m.nodes[a].policy.reachability(m.now).state, Reachable::Yes);
}

#[test]
fn an_asking_node_counts_as_behind_nat_until_a_peer_reached_it() {
    let mut m = mesh();
    let a = asking(&mut m, 1);
    assert!(
        m.nodes[a].policy.routing().behind_nat(),
        "its first announcement asks for offers"
    );
    let (b, c) = (answering(&mut m, 2), answering(&mut m, 3));
    assert!(!m.nodes[b].policy.routing().behind_nat(), "answering only");
    m.dial(a, b);
    m.dial(a, c);
    assert_eq!(m.nodes[a].policy.reachability(m.now).state, Reachable::Yes);
    assert!(!m.nodes[a].policy.routing().behind_nat());
    let (m, n, _) = behind_nat_with_three_peers();
    assert!(m.nodes[n].policy.routing().behind_nat());
}

#[test]
fn an_ask_lost_with_its_link_is_asked_of_another_peer_at_the_next_tick() {
    let mut m = mesh();
    let x = asking(&mut m, 1);
    m.nodes[x].behind_nat = true;
    let p1 = answering(&mut m, 2);
    m.dial(x, p1);
    // Past the first round (its ask, too soon for p1, expires).
    m.advance(PROBE_TIMEOUT + RECONNECT_TICK * 2);
    assert_eq!(m.nodes[x].policy.reachability(m.now).answers, 1);
    // Two peers that never answer (nodes from before dial-backs: seeds
    // that close a newcomer's link before answering look the same), then
    // p3: one answer and two asks awaited make three, so p3 is not asked.
    let (q1, q2) = (opennet(&mut m, 3), opennet(&mut m, 4));
    m.dial(x, q1);
    m.dial(x, q2);
    let p3 = answering(&mut m, 5);
    m.dial(x, p3);
    assert_eq!(m.nodes[p3].sent.get("DialBackResult"), None);
    // q1's link closes with x's ask unanswered: at the next tick x asks
    // p3 instead of waiting a minute and then for the next round.
    m.set_down(q1, true);
    m.advance(RECONNECT_TICK);
    assert_eq!(m.nodes[p3].sent.get("DialBackResult"), Some(&1));
    let r = m.nodes[x].policy.reachability(m.now);
    assert_eq!((r.state, r.answers), (Reachable::No, 2));
}

/// Two opennet nodes behind NAT with a public peer in common: the second
/// one's announcement reaches the first through that peer; the first,
/// wanting it, punches toward it and marks its offer; the newcomer
/// punches back, and a direct link comes up without an introduction.
/// Behind a symmetric NAT the punches fail and nothing else is tried.
#[test]
fn two_opennet_nodes_behind_nat_link_by_the_punch_an_announcement_offers() {
    for symmetric in [false, true] {
        let mut m = mesh();
        let r = answering(&mut m, 3);
        let (a, b) = (asking(&mut m, 1), asking(&mut m, 2));
        m.nodes[a].behind_nat = true;
        m.nodes[b].behind_nat = true;
        m.nodes[b].symmetric_nat = symmetric;
        // Their noderefs name the NATs' addresses (as the driver signs
        // them once dial-backs agree): punching is on from then.
        for x in [a, b] {
            assert!(!m.nodes[x].policy.routing().punching());
            let bytes = m.nodes[x].bytes.clone();
            m.nodes[x].policy.set_noderef(m.now, bytes);
            assert!(m.nodes[x].policy.routing().punching());
        }
        m.dial(b, r);
        m.dial(a, r);
        m.advance(RECONNECT_TICK * 2);
        assert_eq!(linked(&m, a, b), !symmetric, "symmetric: {symmetric}");
        assert!(
            !m.nodes[a].sent.contains_key("PunchAsk"),
            "nobody introduced"
        );
        let offered = m.nodes[r].sent.get("AnnounceOffer").copied().unwrap_or(0);
        assert!(offered >= 1, "r passed the punch offer on");
        let (ta, la) = m.nodes[a].policy.punch_counts();
        let (tb, lb) = m.nodes[b].policy.punch_counts();
        // Each announced (again once its noderef changed): one or two
        // punches each side; one link, counted by both.
        assert!(ta >= 1 && tb >= 1 && ta == tb, "{ta} {tb}");
        assert_eq!(la + lb, if symmetric { 0 } else { 2 });
    }
}

/// From behind NAT a node asks for an introduction as it starts dialing
/// a friend, not 10 s later when the dial to a friend behind NAT would
/// time out; when the dial wins (here the friend is reachable) the
/// introduction finds the link up and no punch starts.
#[test]
fn behind_nat_a_friends_introduction_is_asked_as_the_dial_starts() {
    let (mut m, a, _, r) = two_behind_nat_and_a_shared_friend();
    let asks = m.nodes[a].sent.get("PunchAsk").copied().unwrap_or(0);
    let c = punching(&mut m, 4);
    befriend(&mut m, c, r);
    befriend(&mut m, a, c);
    assert!(linked(&m, a, c), "the dial won");
    assert!(m.nodes[a].sent.get("PunchAsk").copied().unwrap_or(0) > asks);
    assert_eq!(m.nodes[c].policy.punch_counts(), (0, 0), "no punch");
    assert_eq!(m.nodes[a].policy.punch_counts().0, 0);
}

/// The peers' dial-back answers on links a node dialed say whether its
/// NAT kept the port it dialed from: yes behind a port-keeping NAT,
/// no behind a symmetric one (where hole punching cannot work).
#[test]
fn dial_back_answers_tell_whether_the_nat_keeps_ports() {
    let (m, a, _) = behind_nat_with_three_peers();
    let r = m.nodes[a].policy.reachability(m.now);
    assert_eq!((r.state, r.ports_kept), (Reachable::No, Some(true)));
    let mut m = mesh();
    let a = asking(&mut m, 1);
    m.nodes[a].behind_nat = true;
    m.nodes[a].symmetric_nat = true;
    for peer in [2, 3, 4].map(|s| answering(&mut m, s)) {
        m.dial(a, peer);
    }
    let r = m.nodes[a].policy.reachability(m.now);
    assert_eq!((r.state, r.ports_kept), (Reachable::No, Some(false)));
    // The answering nodes asked nothing: no answer, nothing known.
    assert_eq!(m.nodes[2].policy.reachability(m.now).ports_kept, None);
}
