//! Helpers shared by the routing state machine's test files.
#![allow(dead_code, clippy::unwrap_used)]

use lichen_routing::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
pub type V = fn(&Key, KeyKind, &[u8]) -> bool;

pub fn sha_verify(key: &Key, _kind: KeyKind, block: &[u8]) -> bool {
    Sha256::digest(block).as_slice() == key.0
}

pub fn block(n: u8) -> (Key, Vec<u8>) {
    let b = vec![n; 32];
    let k = Key(Sha256::digest(&b).into());
    (k, b)
}

pub fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(7)
}

/// A node at location 0 with peers 1..=n at locations i * 2^60.
pub fn node(n: u64, cfg: Config) -> (Node<V>, ChaCha8Rng) {
    let mut r = rng();
    let mut node = Node::new(cfg, Location(0), sha_verify as V);
    for i in 1..=n {
        node.add_peer(0, PeerId(i), Location(i << 60), &mut r);
    }
    (node, r)
}

pub fn drain(n: &mut Node<V>) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

pub fn sends(actions: &[Action]) -> Vec<(PeerId, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

/// A key whose location is `loc` (the verifier is not involved).
pub fn key_at(loc: u64) -> Key {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&loc.to_be_bytes());
    Key(k)
}

/// An insert from a peer as the wire carries it: the header, then (after
/// our `Accepted`) the block.
pub fn send_insert(
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

/// Node `n` fetches `key` for its user at `now`: the request's id and
/// the peer it went to.
pub fn local_fetch(n: &mut Node<V>, now: u64, key: Key, r: &mut ChaCha8Rng) -> (u64, PeerId) {
    let RequestId(id) = n.handle_local_request(
        now,
        LocalRequest::Fetch {
            key,
            kind: KeyKind::Chk,
        },
        r,
    );
    let (to, _) = forwarded_to(&drain(n), id).unwrap();
    (id, to)
}

pub fn forwarded_to(actions: &[Action], id: u64) -> Option<(PeerId, u8)> {
    sends(actions).into_iter().find_map(|(to, m)| match m {
        Message::Request { id: i, htl, .. } | Message::Insert { id: i, htl, .. } if i == id => {
            Some((to, htl))
        }
        _ => None,
    })
}

/// The first request or insert sent: to whom, under which id (above the
/// caching level a hop forwards under a fresh id) and at which HTL.
pub fn forwarded(actions: &[Action]) -> Option<(PeerId, u64, u8)> {
    sends(actions).into_iter().find_map(|(to, m)| match m {
        Message::Request { id, htl, .. } | Message::Insert { id, htl, .. } => Some((to, id, htl)),
        _ => None,
    })
}

/// Announcement 5 (HTL 10, toward its own location, reachable) of a
/// newcomer at `location` (address "newcomer") with `room`.
pub fn newcomer_announce(location: u64, room: Option<u8>) -> Message {
    Message::Announce {
        id: 5,
        htl: 10,
        noderef: NodeRef {
            location: Location(location),
            address: b"newcomer".as_slice().into(),
        },
        target: None,
        unreachable: false,
        room,
    }
}

/// The `room` of the first `Announce` among `sent` (`None`: none sent).
pub fn announced_room(sent: &[(PeerId, Message)]) -> Option<Option<u8>> {
    sent.iter().find_map(|(_, m)| match m {
        Message::Announce { room, .. } => Some(*room),
        _ => None,
    })
}
