#![no_main]
//! A responder fed arbitrary handshake bytes never panics.
use libfuzzer_sys::fuzz_target;
use lichen_link::{Handshake, HsAction, NodeKeys};

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = Handshake::responder(&NodeKeys::from_static_secret([2; 32])) else {
        return;
    };
    let mut input = data;
    for _ in 0..4 {
        match r.step(input) {
            Ok((0, HsAction::NeedMore)) | Err(_) => break,
            Ok((n, _)) => input = &input[n.min(input.len())..],
        }
    }
});
