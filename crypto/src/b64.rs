//! Freenet's URL-safe base64: the standard alphabet with `+` → `~` and
//! `/` → `-`, written without padding. Decoding accepts (and ignores)
//! trailing `=` padding.

use base64::alphabet::Alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use std::sync::OnceLock;

const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~-";

fn engine() -> &'static GeneralPurpose {
    static ENGINE: OnceLock<GeneralPurpose> = OnceLock::new();
    ENGINE.get_or_init(|| {
        #[allow(clippy::expect_used)]
        let alphabet = Alphabet::new(ALPHABET).expect("alphabet is valid");
        GeneralPurpose::new(
            &alphabet,
            GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_padding_mode(DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        )
    })
}

/// Encode `data` in Freenet base64.
#[must_use]
pub fn encode(data: &[u8]) -> String {
    engine().encode(data)
}

/// Decode Freenet base64; `None` if `s` is not valid.
#[must_use]
pub fn decode(s: &str) -> Option<Vec<u8>> {
    engine().decode(s).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_url_safe() {
        let s = encode(&[0xfb, 0xff, 0xfe]);
        assert_eq!(s, "~--~");
        assert_eq!(decode("~--~").unwrap(), vec![0xfb, 0xff, 0xfe]);
    }

    #[test]
    fn accepts_freenet_extra() {
        // The extra field of a real Freenet CHK.
        assert_eq!(decode("AAMC--8").unwrap(), vec![0, 3, 2, 0xff, 0xff]);
    }

    #[test]
    fn rejects_standard_alphabet_symbols() {
        assert!(decode("ab+/").is_none());
    }
}
