//! Link messages and padding (no I/O).
//!
//! A link message is CBOR `{"v": 1, "m": <LinkMessage>}` (serde's externally
//! tagged enums, as in `docs/routing.md`). Before encryption the CBOR is
//! framed as `len: u16 BE || cbor || zero padding` up to the smallest size
//! in [`PADDED_SIZES`] that holds it, so the wire shows only those sizes
//! (plus the 16-byte AEAD tag).

use super::error::LinkError;
use serde::{Deserialize, Serialize};

/// Envelope version this node writes and accepts.
pub const VERSION: u64 = 1;

/// Noise's AEAD tag.
pub const TAG_LEN: usize = 16;

/// Noise's largest message (ciphertext including the tag).
pub const MAX_NOISE_MSG: usize = 65535;

/// Plaintext sizes of frames. Small control messages fit 256 B; requests
/// and replies without blocks 1 KiB; SSK blocks (1 KiB payload plus
/// headers) 4 KiB; 16 KiB for mid-sized messages; 33 KiB holds a CHK block
/// (32786 bytes) with its CBOR envelope in one frame; the last size is
/// the largest a Noise message can carry.
pub const PADDED_SIZES: [usize; 6] = [256, 1024, 4096, 16384, 33 * 1024, MAX_NOISE_MSG - TAG_LEN];

/// Bytes of the inner length prefix.
const LEN_PREFIX: usize = 2;

/// Largest CBOR message that fits in one frame.
pub const MAX_MESSAGE: usize = MAX_NOISE_MSG - TAG_LEN - LEN_PREFIX;

/// What travels over a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LinkMessage {
    /// A routing message for `lichen_routing::Node`.
    Routing(lichen_routing::Message),
    /// Keepalive; the peer answers with `Pong` carrying the same nonce.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The sender switches its sending key (Noise `REKEY`) right after this
    /// frame; the receiver switches its receiving key after reading it.
    Rekey,
    /// The sender is closing the link.
    Close,
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    v: u64,
    m: &'a LinkMessage,
}

/// Just the version of an envelope (what its message is does not matter).
#[derive(Deserialize)]
struct Envelope {
    v: u64,
}

#[derive(Deserialize)]
struct EnvelopeV1 {
    v: u64,
    m: LinkMessage,
}

/// Encode a message as its CBOR envelope.
#[must_use]
pub fn encode(msg: &LinkMessage) -> Vec<u8> {
    let mut out = Vec::new();
    // Serializing into a Vec cannot fail.
    let _ = ciborium::into_writer(&EnvelopeRef { v: VERSION, m: msg }, &mut out);
    out
}

/// Encode and pad a message into `buf` (cleared first): the padded
/// plaintext of one frame, as [`pad`] of [`encode`] but in place, so a
/// reused buffer costs no allocation and no copy.
///
/// # Errors
/// [`LinkError::MessageTooLarge`].
pub fn encode_padded_into(msg: &LinkMessage, buf: &mut Vec<u8>) -> Result<(), LinkError> {
    buf.clear();
    buf.extend_from_slice(&[0; LEN_PREFIX]);
    // Serializing into a Vec cannot fail.
    let _ = ciborium::into_writer(&EnvelopeRef { v: VERSION, m: msg }, &mut *buf);
    finish_padding(buf)
}

/// `buf` holds a length prefix's room and then the payload: write the
/// prefix and pad.
fn finish_padding(buf: &mut Vec<u8>) -> Result<(), LinkError> {
    let n = buf.len() - LEN_PREFIX;
    let size = padded_size(n).ok_or(LinkError::MessageTooLarge(n))?;
    let len = u16::try_from(n).map_err(|_| LinkError::MessageTooLarge(n))?;
    buf[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
    buf.resize(size, 0);
    Ok(())
}

/// Decode a CBOR envelope.
///
/// # Errors
/// [`LinkError::UnsupportedVersion`] or [`LinkError::Decode`]; never panics.
pub fn decode(bytes: &[u8]) -> Result<LinkMessage, LinkError> {
    decode_with(bytes, &mut vec![0; SCRATCH])
}

/// Scratch the CBOR decoder needs to take a CHK block (32786 bytes) in one
/// piece: a byte string longer than the scratch is copied into its `Vec`
/// 4 KiB at a time, the `Vec` growing (and copying) as it goes.
pub const SCRATCH: usize = 33 * 1024;

/// [`decode`] with the decoder's scratch space given (reused across frames).
///
/// # Errors
/// As [`decode`].
pub fn decode_with(bytes: &[u8], scratch: &mut [u8]) -> Result<LinkMessage, LinkError> {
    // One pass for the usual case; only a failure looks again, to tell a
    // newer envelope version from a broken message.
    match ciborium::de::from_reader_with_buffer::<EnvelopeV1, _>(bytes, scratch) {
        Ok(env) if env.v == VERSION => Ok(env.m),
        Ok(env) => Err(LinkError::UnsupportedVersion(env.v)),
        Err(e) => match ciborium::de::from_reader_with_buffer::<Envelope, _>(bytes, scratch) {
            Ok(env) if env.v != VERSION => Err(LinkError::UnsupportedVersion(env.v)),
            _ => Err(LinkError::Decode(e.to_string())),
        },
    }
}

/// The padded plaintext size for a message of `len` CBOR bytes.
#[must_use]
pub fn padded_size(len: usize) -> Option<usize> {
    PADDED_SIZES
        .iter()
        .copied()
        .find(|&s| s >= len + LEN_PREFIX)
}

/// Frame `payload` as `len || payload || zeros`, padded.
///
/// # Errors
/// [`LinkError::MessageTooLarge`].
pub fn pad(payload: &[u8]) -> Result<Vec<u8>, LinkError> {
    let size = padded_size(payload.len()).ok_or(LinkError::MessageTooLarge(payload.len()))?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.extend_from_slice(payload);
    finish_padding(&mut out)?;
    Ok(out)
}

/// The payload of a padded plaintext.
///
/// # Errors
/// [`LinkError::BadPadding`] if the size or the inner length is wrong.
pub fn unpad(plain: &[u8]) -> Result<&[u8], LinkError> {
    if !PADDED_SIZES.contains(&plain.len()) {
        return Err(LinkError::BadPadding);
    }
    let len = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
    plain
        .get(LEN_PREFIX..LEN_PREFIX + len)
        .ok_or(LinkError::BadPadding)
}

/// Whether `len` (a wire length prefix) is the ciphertext length of a
/// padded frame.
#[must_use]
pub fn is_frame_len(len: usize) -> bool {
    PADDED_SIZES.iter().any(|&s| s + TAG_LEN == len)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lichen_routing::{Key, KeyKind, Message};
    use proptest::prelude::*;

    #[test]
    fn chk_block_fits_the_33k_frame() {
        let m = LinkMessage::Routing(Message::InsertData {
            id: u64::MAX,
            block: vec![0xaa; 32786],
        });
        let e = encode(&m);
        assert_eq!(padded_size(e.len()), Some(33 * 1024), "{}", e.len());
        let d = LinkMessage::Routing(Message::DataFound {
            id: u64::MAX,
            block: vec![0xaa; 32786],
        });
        assert_eq!(padded_size(encode(&d).len()), Some(33 * 1024));
        assert_eq!(
            padded_size(encode(&LinkMessage::Ping { nonce: u64::MAX }).len()),
            Some(256)
        );
    }

    #[test]
    fn round_trip_and_version() {
        let m = LinkMessage::Routing(Message::Request {
            id: 5,
            key: Key([1; 32]),
            htl: 17,
            kind: KeyKind::Ssk,
        });
        let framed = pad(&encode(&m)).unwrap();
        assert_eq!(framed.len(), 256);
        assert_eq!(decode(unpad(&framed).unwrap()).unwrap(), m);
        let mut v2 = Vec::new();
        ciborium::into_writer(&EnvelopeRef { v: 2, m: &m }, &mut v2).unwrap();
        assert!(matches!(decode(&v2), Err(LinkError::UnsupportedVersion(2))));
        // A newer version whose message this one cannot even parse is
        // still told by its version.
        use ciborium::cbor;
        let mut v3 = Vec::new();
        ciborium::into_writer(
            &cbor!({"v" => 3, "m" => {"Teleport" => [1, 2]}}).unwrap(),
            &mut v3,
        )
        .unwrap();
        assert!(matches!(decode(&v3), Err(LinkError::UnsupportedVersion(3))));
        let mut bad = Vec::new();
        ciborium::into_writer(
            &cbor!({"v" => 1, "m" => {"Teleport" => [1, 2]}}).unwrap(),
            &mut bad,
        )
        .unwrap();
        assert!(matches!(decode(&bad), Err(LinkError::Decode(_))));
        assert!(matches!(
            pad(&vec![0; MAX_MESSAGE + 1]),
            Err(LinkError::MessageTooLarge(_))
        ));
        assert_eq!(
            pad(&vec![0; MAX_MESSAGE]).unwrap().len(),
            MAX_NOISE_MSG - TAG_LEN
        );
    }

    proptest! {
        #[test]
        fn decode_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
            let _ = unpad(&bytes);
        }

        /// In place (a reused buffer, a small scratch or a big one) is the
        /// same as `pad(encode())` and `decode`.
        #[test]
        fn in_place_codec_agrees(
            id in any::<u64>(),
            block in proptest::collection::vec(any::<u8>(), 0..40_000),
            junk in proptest::collection::vec(any::<u8>(), 0..300),
            small in any::<bool>(),
        ) {
            let m = LinkMessage::Routing(Message::DataFound { id, block });
            let mut buf = junk;
            match pad(&encode(&m)) {
                Ok(want) => {
                    encode_padded_into(&m, &mut buf).unwrap();
                    prop_assert_eq!(&buf, &want);
                    let mut scratch = vec![0; if small { 16 } else { SCRATCH }];
                    prop_assert_eq!(decode_with(unpad(&buf).unwrap(), &mut scratch).unwrap(), m);
                }
                Err(_) => prop_assert!(matches!(
                    encode_padded_into(&m, &mut buf),
                    Err(LinkError::MessageTooLarge(_))
                )),
            }
        }

        #[test]
        fn pad_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let p = pad(&payload).unwrap();
            prop_assert!(PADDED_SIZES.contains(&p.len()));
            prop_assert_eq!(unpad(&p).unwrap(), &payload[..]);
        }
    }
}
