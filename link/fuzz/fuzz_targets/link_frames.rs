#![no_main]
//! Records after an honest handshake: envelope decoding, padding and
//! `Transport::open` over arbitrary bytes never panic.
use libfuzzer_sys::fuzz_target;
use lichen_link::handshake::run_in_memory;
use lichen_link::{frame, Handshake, NodeKeys, RekeyPolicy};

fuzz_target!(|data: &[u8]| {
    let _ = frame::decode(data);
    // A scratch smaller than the byte strings takes the decoder's other path.
    let _ = frame::decode_with(data, &mut [0; 64]);
    if let [hi, lo, body @ ..] = data {
        let _ = frame::unpad(body, usize::from(u16::from_be_bytes([*hi, *lo])));
    }
    let a = NodeKeys::from_static_secret([1; 32]);
    let b = NodeKeys::from_static_secret([2; 32]);
    let (Ok(mut i), Ok(mut r)) = (
        Handshake::initiator(&a, &b.static_public()),
        Handshake::responder(&b),
    ) else {
        return;
    };
    if run_in_memory(&mut i, &mut r).is_err() {
        return;
    }
    let Ok((mut t, _)) = r.finish(RekeyPolicy::default()) else {
        return;
    };
    let mut input = data;
    while let Ok(Some((n, _))) = t.open(input) {
        input = &input[n..];
    }
});
