//! Bytes from a hostile neighbour: decoded as tunnel messages and fed to
//! an engine that relays a real tunnel, and as the commands inside a
//! tunnel. Must never panic, and the engine must stay within its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_tunnel::{Command, Limits, Links, TunnelMsg, Tunnels, WIRE_LEN};
use rand::SeedableRng;

struct NoPeers;
impl Links<u8> for NoPeers {
    fn peer_by_static_key(&self, _: &[u8; 32]) -> Option<u8> {
        None
    }

    fn extend_candidates(&self) -> Vec<[u8; 32]> {
        vec![[1; 32], [2; 32]]
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Command::decode(data);
    let _ = lichen_tunnel::exit::ExitRequest::decode(data);
    let _ = lichen_tunnel::exit::ExitReply::decode(data);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let limits = Limits {
        per_peer: 4,
        relayed: 8,
        ..Limits::default()
    };
    let mut node: Tunnels<u8> = Tunnels::new([7; 32], limits);
    for (i, chunk) in data.chunks(WIRE_LEN).enumerate() {
        let mut b = chunk.to_vec();
        b.resize(WIRE_LEN, 0);
        if let Ok(msg) = TunnelMsg::decode(&b) {
            let _ = node.handle(i as u64, &mut rng, &NoPeers, (i % 3) as u8, msg);
        }
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
        assert!(node.relayed_count() <= 8);
    }
});
