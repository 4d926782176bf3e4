//! Random event sequences against one node: hostile messages from a few
//! peers, local requests, timers and peer churn. Must never panic, and the
//! node's tables must stay within their caps.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use lichen_routing::{
    BlockSource, Config, Key, KeyKind, LocalRequest, Location, Message, Node, NodeRef, PeerId,
};
use rand::SeedableRng;

struct Store;
impl BlockSource for Store {
    fn get(&mut self, key: &Key, _: KeyKind) -> Option<Vec<u8>> {
        (key.0[0] < 64).then(|| vec![key.0[0]])
    }
}

fn verify(key: &Key, _: KeyKind, block: &[u8]) -> bool {
    block.first() == Some(&key.0[0])
}

fn key(u: &mut Unstructured<'_>) -> arbitrary::Result<Key> {
    let mut k = [0u8; 32];
    k[0] = u.int_in_range(0..=127)?;
    k[1] = u.arbitrary()?;
    Ok(Key(k))
}

fn message(u: &mut Unstructured<'_>) -> arbitrary::Result<Message> {
    let id = if u.arbitrary()? { u.int_in_range(0..=7)? } else { u.arbitrary()? };
    let htl: u8 = u.arbitrary()?;
    let kind = if u.arbitrary()? { KeyKind::Chk } else { KeyKind::Ssk };
    let block: Vec<u8> = u.arbitrary()?;
    let noderef = NodeRef { location: Location(u.arbitrary()?), address: u.arbitrary()? };
    let locs: Vec<u64> = u.arbitrary()?;
    let peer_locations = locs.into_iter().map(Location).collect();
    Ok(match u.int_in_range(0..=25)? {
        0 => Message::Request { id, key: key(u)?, htl, kind },
        1 => {
            if u.arbitrary()? {
                Message::Insert { id, key: key(u)?, htl, kind }
            } else {
                Message::InsertData { id, block }
            }
        }
        2 => Message::Accepted { id },
        3 => Message::RejectedLoop { id },
        4 => Message::RejectedOverload { id },
        5 => Message::DataFound { id, block },
        6 => Message::DataNotFound { id },
        7 => Message::RouteNotFound { id, htl },
        8 => Message::InsertReply { id },
        9 => Message::Collision { id, block },
        10 => Message::FoldOffer { id, noderef },
        11 => Message::Announce {
            id,
            htl,
            noderef,
            target: u.arbitrary::<Option<u64>>()?.map(Location),
            unreachable: u.arbitrary()?,
            room: u.arbitrary()?,
        },
        12 => Message::AnnounceReply { id },
        13 => Message::SwapRequest { id, htl, location: Location(u.arbitrary()?), peer_locations },
        14 => Message::SwapReply { id, accepted: u.arbitrary()?, location: Location(u.arbitrary()?), peer_locations },
        15 => Message::SwapRejected { id },
        16 => Message::AnnounceOffer { id, noderef, punch: u.arbitrary()? },
        17 => Message::DialBack { port: u.arbitrary()? },
        18 => Message::DialBackResult {
            seen: addr(u)?,
            reachable: u.arbitrary()?,
        },
        19 => Message::PunchAsk { target: u.arbitrary()?, port: u.arbitrary()? },
        20 => Message::PunchOffer { from: u.arbitrary()?, addr: addr(u)? },
        21 => Message::PunchReady { to: u.arbitrary()?, port: u.arbitrary()? },
        22 => Message::PunchGo { target: u.arbitrary()?, addr: addr(u)? },
        23 => Message::Invited { token: u.arbitrary()?, noderef: noderef.address.clone() },
        24 => Message::Welcome { noderef: noderef.address },
        _ => Message::LocationChanged { location: Location(u.arbitrary()?) },
    })
}

fn addr(u: &mut Unstructured<'_>) -> arbitrary::Result<std::net::SocketAddr> {
    Ok((u.arbitrary::<[u8; 4]>()?, u.arbitrary::<u16>()?).into())
}

fn run(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let swapping: bool = u.arbitrary()?;
    let cfg = Config {
        opennet: !swapping,
        swapping,
        max_pending: 16,
        recent_cap: 32,
        failure_table_cap: 8,
        local_queue_cap: 4,
        max_peers: 4,
        ..Config::default()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u.arbitrary()?);
    let mut node = Node::new(cfg.clone(), Location(0), verify as fn(&Key, KeyKind, &[u8]) -> bool);
    node.set_noderef(NodeRef { location: Location(0), address: b"me".as_slice().into() });
    for p in 0..4u64 {
        node.add_peer(0, PeerId(p), Location(p << 62), &mut rng);
    }
    let mut now = 0u64;
    while !u.is_empty() {
        match u.int_in_range(0..=9)? {
            0..=5 => {
                let from = PeerId(u.int_in_range(0..=5)?);
                let msg = message(&mut u)?;
                node.handle_message(now, from, msg, &mut Store, &mut rng);
            }
            6 => {
                let req = match u.int_in_range(0..=2)? {
                    0 => LocalRequest::Fetch { key: key(&mut u)?, kind: KeyKind::Chk },
                    1 => LocalRequest::Insert { key: key(&mut u)?, kind: KeyKind::Chk, block: u.arbitrary()? },
                    _ => LocalRequest::Announce,
                };
                node.handle_local_request(now, req, &mut rng);
            }
            7 => {
                now += u64::from(u.arbitrary::<u16>()?);
                node.handle_timeout(now, &mut rng);
            }
            8 => node.remove_peer(now, PeerId(u.int_in_range(0..=5)?), &mut rng),
            _ => {
                let p = PeerId(u.int_in_range(0..=5)?);
                if !node.accept_opennet_peer(now, p, Location(u.arbitrary()?), &mut rng) {
                    node.accept_seed_client(now, p);
                }
            }
        }
        while node.poll_action().is_some() {}
        let [pending, recent, failures, _, _, queue, _, folds] = node.table_sizes();
        assert!(pending <= cfg.max_pending + cfg.local_queue_cap + 8);
        assert!(recent <= cfg.recent_cap + pending + 1);
        assert!(failures <= cfg.failure_table_cap);
        assert!(queue <= cfg.local_queue_cap);
        assert!(folds <= 16);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
