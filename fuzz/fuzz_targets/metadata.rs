//! Metadata decoder: never panics, never allocates by untrusted counts;
//! whatever decodes re-encodes to a document that decodes to the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lichen_client::Metadata;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Metadata::from_bytes(data) {
        let again = Metadata::from_bytes(&m.to_bytes()).expect("re-encoded metadata must decode");
        assert_eq!(again, m);
    }
});
