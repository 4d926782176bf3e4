//! URI parser: never panics; whatever parses prints to a string that
//! parses back to the same URI.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lichen_crypto::FreenetUri;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(uri) = FreenetUri::parse(s) {
        let printed = uri.to_string();
        let again = FreenetUri::parse(&printed).expect("printed URI must parse");
        assert_eq!(again, uri, "{printed}");
        let _ = uri.to_request();
        let _ = uri.key.chk_key();
        let _ = uri.key.ssk_target();
    }
});
