//! Content-hash keys: convergent encryption of 32 KiB blocks.
//!
//! Block layout (see `docs/formats.md`):
//!
//! ```text
//! plaintext  = data || zero padding to 32768 bytes || len (u16, big-endian)
//! crypto key = SHA-256("lichen/chk/key/v1" || len || data)      (convergent)
//!              or 32 random bytes                                (randomised)
//! block      = ChaCha20-Poly1305(crypto key, nonce = 0, plaintext)   (32786 bytes)
//! routing key= SHA-256(block)
//! ```
//!
//! The nonce can be fixed because a crypto key encrypts exactly one
//! plaintext: a convergent key is a hash of the plaintext, a randomised key
//! is fresh.

use crate::{sha256, sha256_parts, BlockError, Codec, DataFlags, RoutingKey};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};

/// Payload bytes in one CHK block.
pub const PAYLOAD_LEN: usize = 32 * 1024;
/// Plaintext length: payload plus the 2-byte length trailer.
const PLAIN_LEN: usize = PAYLOAD_LEN + 2;
/// AEAD tag length.
const TAG_LEN: usize = 16;
/// Size of an encrypted CHK block on the wire and on disk.
pub const BLOCK_LEN: usize = PLAIN_LEN + TAG_LEN;

/// Format version written in the extra field.
pub const FORMAT_VERSION: u8 = 1;
/// Crypto algorithm id: ChaCha20-Poly1305 with fixed nonce.
pub const ALG_CHACHA20POLY1305: u8 = 1;
/// Length of the extra field Lichen writes.
pub const EXTRA_LEN: usize = 5;

const KEY_DOMAIN: &[u8] = b"lichen/chk/key/v1";

/// Build the 5-byte extra field: version, algorithm, flags, codec (u16 BE).
#[must_use]
pub fn make_extra(flags: DataFlags) -> Vec<u8> {
    vec![
        FORMAT_VERSION,
        ALG_CHACHA20POLY1305,
        u8::from(flags.metadata),
        0,
        flags.codec.id(),
    ]
}

/// Read the flags from an extra field written by [`make_extra`].
///
/// # Errors
/// [`BlockError::BadHeader`] if the extra is not a Lichen CHK extra
/// (e.g. a Freenet CHK, whose blocks Lichen cannot decrypt).
pub fn parse_extra(extra: &[u8]) -> Result<DataFlags, BlockError> {
    if extra.len() != EXTRA_LEN {
        return Err(BlockError::BadHeader(
            "CHK extra field has the wrong length",
        ));
    }
    if extra[0] != FORMAT_VERSION || extra[1] != ALG_CHACHA20POLY1305 {
        return Err(BlockError::BadHeader(
            "unsupported CHK format version or crypto algorithm",
        ));
    }
    if extra[2] > 1 {
        return Err(BlockError::BadHeader("unknown CHK flags"));
    }
    let codec = u16::from_be_bytes([extra[3], extra[4]]);
    let codec = u8::try_from(codec)
        .ok()
        .and_then(Codec::from_id)
        .ok_or(BlockError::BadHeader("unknown compression codec"))?;
    Ok(DataFlags {
        metadata: extra[2] == 1,
        codec,
    })
}

/// Everything needed to fetch and decrypt one CHK block: the request key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChkKey {
    /// Where the block is routed and stored.
    pub routing_key: RoutingKey,
    /// ChaCha20-Poly1305 key.
    pub crypto_key: [u8; 32],
    /// Flags of the data (metadata, codec).
    pub flags: DataFlags,
}

impl std::fmt::Debug for ChkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "ChkKey")
    }
}

impl ChkKey {
    /// The URI extra field for this key.
    #[must_use]
    pub fn extra(&self) -> Vec<u8> {
        make_extra(self.flags)
    }
}

/// The convergent crypto key for `data`.
#[must_use]
pub fn convergent_key(data: &[u8]) -> [u8; 32] {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes();
    sha256_parts(&[KEY_DOMAIN, &len, data])
}

/// Encode `data` (≤ 32 KiB) as a CHK block with convergent encryption: the
/// same data always gives the same key and block.
///
/// # Errors
/// [`BlockError::TooLarge`] if `data` is longer than [`PAYLOAD_LEN`].
pub fn encode(data: &[u8], flags: DataFlags) -> Result<(ChkKey, Vec<u8>), BlockError> {
    check_len(data)?;
    encode_with_key(data, flags, convergent_key(data))
}

/// Encode `data` under a caller-chosen crypto key (randomised splitfile
/// keys: pass 32 fresh random bytes so that well-known content cannot be
/// recognised from its blocks).
///
/// # Errors
/// [`BlockError::TooLarge`] if `data` is longer than [`PAYLOAD_LEN`].
pub fn encode_with_key(
    data: &[u8],
    flags: DataFlags,
    crypto_key: [u8; 32],
) -> Result<(ChkKey, Vec<u8>), BlockError> {
    check_len(data)?;
    let mut buf = Vec::with_capacity(BLOCK_LEN);
    buf.extend_from_slice(data);
    buf.resize(PAYLOAD_LEN, 0);
    // check_len guarantees the length fits in u16.
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&crypto_key));
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&[0u8; 12]), &[], &mut buf)
        .map_err(|_| BlockError::Decrypt)?;
    buf.extend_from_slice(&tag);
    let routing_key = RoutingKey(sha256(&buf));
    Ok((
        ChkKey {
            routing_key,
            crypto_key,
            flags,
        },
        buf,
    ))
}

fn check_len(data: &[u8]) -> Result<(), BlockError> {
    if data.len() > PAYLOAD_LEN {
        return Err(BlockError::TooLarge {
            kind: "CHK",
            got: data.len(),
            max: PAYLOAD_LEN,
        });
    }
    Ok(())
}

/// Check a CHK block against its routing key (no decryption key needed).
///
/// # Errors
/// [`BlockError::WrongLength`] or [`BlockError::HashMismatch`].
pub fn verify(routing_key: &RoutingKey, block: &[u8]) -> Result<(), BlockError> {
    if block.len() != BLOCK_LEN {
        return Err(BlockError::WrongLength {
            kind: "CHK",
            got: block.len(),
            want: BLOCK_LEN,
        });
    }
    if sha256(block) != routing_key.0 {
        return Err(BlockError::HashMismatch);
    }
    Ok(())
}

/// Verify and decrypt a CHK block, returning its data.
///
/// # Errors
/// Any [`verify`] error, [`BlockError::Decrypt`] for a wrong crypto key, or
/// [`BlockError::BadHeader`] for a malformed length trailer.
pub fn decode(key: &ChkKey, block: &[u8]) -> Result<Vec<u8>, BlockError> {
    verify(&key.routing_key, block)?;
    decrypt(&key.crypto_key, block)
}

/// Decrypt an already verified block.
///
/// # Errors
/// [`BlockError::Decrypt`] or [`BlockError::BadHeader`].
pub fn decrypt(crypto_key: &[u8; 32], block: &[u8]) -> Result<Vec<u8>, BlockError> {
    if block.len() != BLOCK_LEN {
        return Err(BlockError::WrongLength {
            kind: "CHK",
            got: block.len(),
            want: BLOCK_LEN,
        });
    }
    decrypt_owned(crypto_key, block.to_vec())
}

/// [`decrypt`] in place: the block's buffer becomes the data (no copy).
///
/// # Errors
/// As [`decrypt`].
pub fn decrypt_owned(crypto_key: &[u8; 32], block: Vec<u8>) -> Result<Vec<u8>, BlockError> {
    if block.len() != BLOCK_LEN {
        return Err(BlockError::WrongLength {
            kind: "CHK",
            got: block.len(),
            want: BLOCK_LEN,
        });
    }
    let mut buf = block;
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&buf[PLAIN_LEN..]);
    buf.truncate(PLAIN_LEN);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(crypto_key));
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&[0u8; 12]),
            &[],
            &mut buf,
            Tag::from_slice(&tag),
        )
        .map_err(|_| BlockError::Decrypt)?;
    let len = usize::from(u16::from_be_bytes([buf[PAYLOAD_LEN], buf[PAYLOAD_LEN + 1]]));
    if len > PAYLOAD_LEN {
        return Err(BlockError::BadHeader("CHK data length exceeds the payload"));
    }
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_convergence() {
        for len in [0, 1, 100, PAYLOAD_LEN - 1, PAYLOAD_LEN] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let (k1, b1) = encode(&data, DataFlags::default()).unwrap();
            let (k2, b2) = encode(&data, DataFlags::default()).unwrap();
            assert_eq!(k1, k2);
            assert_eq!(b1, b2);
            assert_eq!(b1.len(), BLOCK_LEN);
            assert_eq!(decode(&k1, &b1).unwrap(), data);
        }
    }

    #[test]
    fn too_large_is_rejected() {
        let data = vec![0u8; PAYLOAD_LEN + 1];
        assert!(matches!(
            encode(&data, DataFlags::default()),
            Err(BlockError::TooLarge { .. })
        ));
    }

    #[test]
    fn tampering_is_caught_before_decryption() {
        let (k, mut b) = encode(b"hello", DataFlags::default()).unwrap();
        b[10] ^= 1;
        assert_eq!(decode(&k, &b), Err(BlockError::HashMismatch));
        assert!(matches!(
            decode(&k, &b[..100]),
            Err(BlockError::WrongLength { .. })
        ));
    }

    #[test]
    fn wrong_crypto_key_fails_to_decrypt() {
        let (mut k, b) = encode(b"hello", DataFlags::default()).unwrap();
        k.crypto_key[0] ^= 1;
        assert_eq!(decode(&k, &b), Err(BlockError::Decrypt));
        assert_eq!(decrypt_owned(&k.crypto_key, b), Err(BlockError::Decrypt));
    }

    #[test]
    fn decrypt_owned_matches_decrypt() {
        for len in [0, 5, PAYLOAD_LEN] {
            let data = vec![0x5a; len];
            let (k, b) = encode(&data, DataFlags::default()).unwrap();
            assert_eq!(decrypt_owned(&k.crypto_key, b.clone()).unwrap(), data);
            assert_eq!(decrypt(&k.crypto_key, &b).unwrap(), data);
            let mut tampered = b.clone();
            tampered[3] ^= 1;
            assert_eq!(
                decrypt_owned(&k.crypto_key, tampered),
                Err(BlockError::Decrypt)
            );
            assert!(matches!(
                decrypt_owned(&k.crypto_key, b[..100].to_vec()),
                Err(BlockError::WrongLength { .. })
            ));
        }
    }

    #[test]
    fn randomised_keys_differ() {
        let (k1, b1) = encode_with_key(b"x", DataFlags::default(), [1; 32]).unwrap();
        let (k2, b2) = encode_with_key(b"x", DataFlags::default(), [2; 32]).unwrap();
        assert_ne!(k1.routing_key, k2.routing_key);
        assert_ne!(b1, b2);
        assert_eq!(decode(&k1, &b1).unwrap(), b"x");
    }

    #[test]
    fn extra_round_trip() {
        for metadata in [false, true] {
            for codec in [Codec::None, Codec::Zstd] {
                let f = DataFlags { metadata, codec };
                assert_eq!(parse_extra(&make_extra(f)).unwrap(), f);
            }
        }
        assert!(parse_extra(&[0, 3, 2, 0xff, 0xff]).is_err());
        assert!(parse_extra(&[]).is_err());
    }
}
