#![no_main]
//! Noderef parsing (text and binary) and invitation parsing never panic.
use libfuzzer_sys::fuzz_target;
use lichen_link::{Invitation, NodeRef};

fuzz_target!(|data: &[u8]| {
    let _ = NodeRef::from_bytes(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = NodeRef::parse(s);
        let _ = Invitation::parse(s, 0);
    }
});
