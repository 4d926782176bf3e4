//! Link messages and padding (no I/O).
//!
//! A link message is CBOR `{"v": 1, "m": <LinkMessage>}` (serde's externally
//! tagged enums, as in `docs/routing.md`). On the wire each message is a
//! *record* of a whole number of [`CELL`]-byte cells: an encrypted length
//! header (the CBOR length as `u16 BE`, sealed as its own AEAD message,
//! [`HEADER_LEN`] bytes, as in Lightning's BOLT 8), then the sealed body:
//! the CBOR followed by zeros up to the record's size. Record sizes come
//! from [`CLASS_CELLS`], so a passive observer of the stream sees no
//! plaintext at all, only whole cells: the volume and the timing.

use super::error::LinkError;
use serde::{Deserialize, Serialize};

/// Envelope version this node writes and accepts.
pub const VERSION: u64 = 1;

/// Noise's AEAD tag.
pub const TAG_LEN: usize = 16;

/// Noise's largest message (ciphertext including the tag).
pub const MAX_NOISE_MSG: usize = 65535;

/// Bytes of the plaintext length in the header.
const LEN_PREFIX: usize = 2;

/// The sealed length header that starts every record.
pub const HEADER_LEN: usize = LEN_PREFIX + TAG_LEN;

/// Every record on the wire is a whole number of cells of this size.
pub const CELL: usize = 512;

/// Record sizes, in cells. One cell holds control messages and requests
/// (up to 478 bytes of CBOR); two hold replies and announcements without
/// blocks; 8 an SSK block (1 KiB of payload with its headers); 32
/// mid-sized messages; 66 (33 KiB) a CHK block (32786 bytes) with its
/// envelope; 128 (64 KiB) is the largest a Noise message allows.
pub const CLASS_CELLS: [usize; 6] = [1, 2, 8, 32, 66, 128];

/// Largest CBOR message that fits in one record.
pub const MAX_MESSAGE: usize = 128 * CELL - HEADER_LEN - TAG_LEN;

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

/// Encode and pad a message into `buf` (cleared first): the padded body
/// of one record, as [`pad`] of [`encode`] but in place, so a reused
/// buffer costs no allocation and no copy. Returns the CBOR length (what
/// the record's header carries).
///
/// # Errors
/// [`LinkError::MessageTooLarge`].
pub fn encode_padded_into(msg: &LinkMessage, buf: &mut Vec<u8>) -> Result<u16, LinkError> {
    buf.clear();
    // Serializing into a Vec cannot fail.
    let _ = ciborium::into_writer(&EnvelopeRef { v: VERSION, m: msg }, &mut *buf);
    finish_padding(buf)
}

/// `buf` holds the payload: pad it to its body size, return its length.
fn finish_padding(buf: &mut Vec<u8>) -> Result<u16, LinkError> {
    let n = buf.len();
    let size = body_size(n).ok_or(LinkError::MessageTooLarge(n))?;
    let len = u16::try_from(n).map_err(|_| LinkError::MessageTooLarge(n))?;
    buf.resize(size, 0);
    Ok(len)
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

/// The record size on the wire (header and body, a whole number of
/// cells) for a message of `len` CBOR bytes; `None` if it fits no record.
#[must_use]
pub fn record_size(len: usize) -> Option<usize> {
    CLASS_CELLS
        .iter()
        .map(|&c| c * CELL)
        .find(|&s| s >= len + HEADER_LEN + TAG_LEN)
}

/// The padded plaintext size of the body for a message of `len` CBOR
/// bytes.
#[must_use]
pub fn body_size(len: usize) -> Option<usize> {
    record_size(len).map(|s| s - HEADER_LEN - TAG_LEN)
}

/// Pad `payload` with zeros to its body size; returns the padded body and
/// the length for the header.
///
/// # Errors
/// [`LinkError::MessageTooLarge`].
pub fn pad(payload: &[u8]) -> Result<(Vec<u8>, u16), LinkError> {
    let size = body_size(payload.len()).ok_or(LinkError::MessageTooLarge(payload.len()))?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(payload);
    let len = finish_padding(&mut out)?;
    Ok((out, len))
}

/// The payload of a padded body whose header said `len`.
///
/// # Errors
/// [`LinkError::BadPadding`] if the body is not the size `len` implies.
pub fn unpad(body: &[u8], len: usize) -> Result<&[u8], LinkError> {
    if body_size(len) != Some(body.len()) {
        return Err(LinkError::BadPadding);
    }
    body.get(..len).ok_or(LinkError::BadPadding)
}

/// Whether `len` is the size of a record on the wire.
#[must_use]
pub fn is_record_size(len: usize) -> bool {
    CLASS_CELLS.iter().any(|&c| c * CELL == len)
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
        assert_eq!(record_size(e.len()), Some(33 * 1024), "{}", e.len());
        let d = LinkMessage::Routing(Message::DataFound {
            id: u64::MAX,
            block: vec![0xaa; 32786],
        });
        assert_eq!(record_size(encode(&d).len()), Some(33 * 1024));
        assert_eq!(
            record_size(encode(&LinkMessage::Ping { nonce: u64::MAX }).len()),
            Some(CELL)
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
        let (body, len) = pad(&encode(&m)).unwrap();
        assert_eq!(body.len() + HEADER_LEN + TAG_LEN, CELL);
        assert_eq!(decode(unpad(&body, len.into()).unwrap()).unwrap(), m);
        // A body of another size than its header implies is refused.
        assert!(unpad(&body[1..], len.into()).is_err());
        assert!(unpad(&body, MAX_MESSAGE + 1).is_err());
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
        let (body, _) = pad(&vec![0; MAX_MESSAGE]).unwrap();
        assert_eq!(body.len() + TAG_LEN, 128 * CELL - HEADER_LEN);
        assert!(body.len() + TAG_LEN <= MAX_NOISE_MSG);
    }

    /// Noderef bytes are shared in memory (`NoderefBytes`) but are on the
    /// wire the CBOR byte string they always were: a hand-built envelope
    /// with a byte string decodes to them, and they encode back to it.
    /// The dial-back messages as CBOR: the address an IPv4 or IPv6
    /// socket address (serde's compact form, `{"V4": [[a, b, c, d],
    /// port]}`), both kinds round trip.
    #[test]
    fn dial_back_messages_round_trip() {
        use ciborium::cbor;
        let ask = LinkMessage::Routing(Message::DialBack { port: 9481 });
        assert_eq!(decode(&encode(&ask)).unwrap(), ask);
        for seen in ["198.51.100.7:40000", "[2001:db8::1]:9481"] {
            let m = LinkMessage::Routing(Message::DialBackResult {
                seen: seen.parse().unwrap(),
                reachable: true,
            });
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
        let mut by_hand = Vec::new();
        ciborium::into_writer(
            &cbor!({"v" => 1, "m" => {"Routing" => {"DialBackResult" => {
                "seen" => {"V4" => [[198, 51, 100, 7], 40000]}, "reachable" => false
            }}}})
            .unwrap(),
            &mut by_hand,
        )
        .unwrap();
        assert_eq!(
            decode(&by_hand).unwrap(),
            LinkMessage::Routing(Message::DialBackResult {
                seen: "198.51.100.7:40000".parse().unwrap(),
                reachable: false,
            })
        );
    }

    #[test]
    fn noderef_bytes_are_a_cbor_byte_string() {
        use ciborium::cbor;
        let bytes = vec![7u8, 0, 255, 42];
        let mut by_hand = Vec::new();
        ciborium::into_writer(
            &cbor!({"v" => 1, "m" => {"Routing" => {"Noderef" => {
                "noderef" => ciborium::Value::Bytes(bytes.clone())
            }}}})
            .unwrap(),
            &mut by_hand,
        )
        .unwrap();
        let m = LinkMessage::Routing(Message::Noderef {
            noderef: bytes.clone().into(),
        });
        assert_eq!(decode(&by_hand).unwrap(), m);
        assert_eq!(encode(&m), by_hand);
        // An announcement's noderef, inside a struct, likewise.
        let a = LinkMessage::Routing(Message::FoldOffer {
            id: 1,
            noderef: lichen_routing::NodeRef {
                location: lichen_routing::Location(9),
                address: bytes.clone().into(),
            },
        });
        let mut by_hand = Vec::new();
        ciborium::into_writer(
            &cbor!({"v" => 1, "m" => {"Routing" => {"FoldOffer" => {
                "id" => 1, "noderef" => {"location" => 9,
                "address" => ciborium::Value::Bytes(bytes)}
            }}}})
            .unwrap(),
            &mut by_hand,
        )
        .unwrap();
        assert_eq!(decode(&by_hand).unwrap(), a);
        assert_eq!(encode(&a), by_hand);
    }

    proptest! {
        #[test]
        fn decode_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
            let _ = unpad(&bytes, bytes.len() / 2);
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
                Ok((want, len)) => {
                    prop_assert_eq!(encode_padded_into(&m, &mut buf).unwrap(), len);
                    prop_assert_eq!(&buf, &want);
                    let mut scratch = vec![0; if small { 16 } else { SCRATCH }];
                    let plain = unpad(&buf, len.into()).unwrap();
                    prop_assert_eq!(decode_with(plain, &mut scratch).unwrap(), m);
                }
                Err(_) => prop_assert!(matches!(
                    encode_padded_into(&m, &mut buf),
                    Err(LinkError::MessageTooLarge(_))
                )),
            }
        }

        #[test]
        fn pad_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let (p, len) = pad(&payload).unwrap();
            prop_assert!(is_record_size(p.len() + HEADER_LEN + TAG_LEN));
            prop_assert_eq!(usize::from(len), payload.len());
            prop_assert_eq!(unpad(&p, len.into()).unwrap(), &payload[..]);
        }
    }
}

#[cfg(test)]
mod tunnel_record {
    use super::*;

    /// Every tunnel message has the same size (`lichen_tunnel::WIRE_LEN`);
    /// its record must be the two-cell class, not the next one up (8
    /// cells: four times the bytes on every hop of every tunnel).
    #[test]
    fn a_tunnel_message_fills_a_two_cell_record() {
        let msg = LinkMessage::Routing(lichen_routing::Message::Tunnel {
            cell: vec![0xff; lichen_tunnel::WIRE_LEN],
        });
        let len = encode(&msg).len();
        assert_eq!(record_size(len), Some(2 * CELL), "{len} CBOR bytes");
    }
}
