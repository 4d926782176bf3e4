//! Signed-subspace keys (SSK) and keyword keys (KSK).
//!
//! Block layout (1184 bytes, see `docs/formats.md`):
//!
//! ```text
//! pubkey      32   Ed25519 public key
//! ehd         32   E(docname) = HMAC-SHA256(crypto key, "lichen/ssk/docname/v1" || docname)
//! nonce       12   HMAC-SHA256(data key, plaintext)[..12]   (deterministic, unique per plaintext)
//! ciphertext 1044  ChaCha20-Poly1305(data key, nonce, flags || codec || len u16 || data padded to 1024)
//! signature   64   Ed25519 over "lichen/ssk/sig/v1" || ehd || nonce || ciphertext
//!
//! data key    = HMAC-SHA256(crypto key, "lichen/ssk/data/v1" || ehd)
//! routing key = SHA-256(ehd || SHA-256(pubkey))
//! ```
//!
//! A node holding only the block and its routing key can check the public
//! key, the routing key and the signature; it cannot learn the document
//! name or decrypt the data.

use crate::{sha256, sha256_parts, BlockError, Codec, DataFlags, RoutingKey};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};

/// Payload bytes in one SSK block.
pub const PAYLOAD_LEN: usize = 1024;
const HEADER_LEN: usize = 4;
const PLAIN_LEN: usize = HEADER_LEN + PAYLOAD_LEN;
const TAG_LEN: usize = 16;
const CIPHER_LEN: usize = PLAIN_LEN + TAG_LEN;
const PUB_OFF: usize = 0;
const EHD_OFF: usize = 32;
const NONCE_OFF: usize = 64;
const CIPHER_OFF: usize = 76;
const SIG_OFF: usize = CIPHER_OFF + CIPHER_LEN;
/// Size of an SSK block on the wire and on disk.
pub const BLOCK_LEN: usize = SIG_OFF + 64;

/// Extra field of an SSK/USK request URI.
pub const EXTRA_REQUEST: [u8; 5] = [1, 0, 2, 0, 1];
/// Extra field of an SSK/USK insert URI (carries the private key).
pub const EXTRA_INSERT: [u8; 5] = [1, 1, 2, 0, 1];

const DOCNAME_DOMAIN: &[u8] = b"lichen/ssk/docname/v1";
const DATA_DOMAIN: &[u8] = b"lichen/ssk/data/v1";
const SIG_DOMAIN: &[u8] = b"lichen/ssk/sig/v1";
const KSK_SEED_DOMAIN: &[u8] = b"lichen/ksk/seed/v1";
const KSK_CRYPTO_DOMAIN: &[u8] = b"lichen/ksk/crypto/v1";

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The public (request) half of an SSK: what a reader needs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SskPublic {
    /// SHA-256 of the Ed25519 public key.
    pub pubkey_hash: [u8; 32],
    /// Key that hides document names and encrypts data.
    pub crypto_key: [u8; 32],
}

impl std::fmt::Debug for SskPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "SskPublic")
    }
}

impl SskPublic {
    /// E(docname): the keyed hash that hides the document name.
    #[must_use]
    pub fn encrypted_docname(&self, docname: &str) -> [u8; 32] {
        hmac(&self.crypto_key, &[DOCNAME_DOMAIN, docname.as_bytes()])
    }

    /// The routing key of document `docname` in this subspace.
    #[must_use]
    pub fn routing_key(&self, docname: &str) -> RoutingKey {
        RoutingKey(sha256_parts(&[
            &self.encrypted_docname(docname),
            &self.pubkey_hash,
        ]))
    }

    /// Verify and decrypt the block of `docname`.
    ///
    /// # Errors
    /// Any [`verify`] error, [`BlockError::Decrypt`] or
    /// [`BlockError::BadHeader`].
    pub fn decode(&self, docname: &str, block: &[u8]) -> Result<(DataFlags, Vec<u8>), BlockError> {
        let rk = self.routing_key(docname);
        verify(&rk, block)?;
        let ehd = &block[EHD_OFF..NONCE_OFF];
        let data_key = hmac(&self.crypto_key, &[DATA_DOMAIN, ehd]);
        let mut buf = block[CIPHER_OFF..CIPHER_OFF + PLAIN_LEN].to_vec();
        let tag = &block[CIPHER_OFF + PLAIN_LEN..SIG_OFF];
        ChaCha20Poly1305::new(Key::from_slice(&data_key))
            .decrypt_in_place_detached(
                Nonce::from_slice(&block[NONCE_OFF..CIPHER_OFF]),
                &[],
                &mut buf,
                Tag::from_slice(tag),
            )
            .map_err(|_| BlockError::Decrypt)?;
        let flags = match buf[0] {
            0 => false,
            1 => true,
            _ => return Err(BlockError::BadHeader("unknown SSK flags")),
        };
        let codec =
            Codec::from_id(buf[1]).ok_or(BlockError::BadHeader("unknown compression codec"))?;
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if len > PAYLOAD_LEN {
            return Err(BlockError::BadHeader("SSK data length exceeds the payload"));
        }
        buf.truncate(HEADER_LEN + len);
        buf.drain(..HEADER_LEN);
        Ok((
            DataFlags {
                metadata: flags,
                codec,
            },
            buf,
        ))
    }
}

/// The private (insert) half of an SSK: the signing key plus the crypto key.
#[derive(Clone)]
pub struct SskPrivate {
    signing: SigningKey,
    /// Key that hides document names and encrypts data.
    pub crypto_key: [u8; 32],
}

impl std::fmt::Debug for SskPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "SskPrivate")
    }
}

impl PartialEq for SskPrivate {
    fn eq(&self, other: &Self) -> bool {
        self.signing.to_bytes() == other.signing.to_bytes() && self.crypto_key == other.crypto_key
    }
}
impl Eq for SskPrivate {}

impl SskPrivate {
    /// A fresh random keypair.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut crypto_key = [0u8; 32];
        rng.fill_bytes(&mut crypto_key);
        SskPrivate {
            signing: SigningKey::generate(rng),
            crypto_key,
        }
    }

    /// Rebuild from the 32-byte Ed25519 seed and crypto key in an insert URI.
    #[must_use]
    pub fn from_parts(seed: [u8; 32], crypto_key: [u8; 32]) -> Self {
        SskPrivate {
            signing: SigningKey::from_bytes(&seed),
            crypto_key,
        }
    }

    /// The KSK keypair derived from `keyword`: anyone who knows the keyword
    /// can read and (first writer wins) write it.
    #[must_use]
    pub fn from_keyword(keyword: &str) -> Self {
        let seed = sha256_parts(&[KSK_SEED_DOMAIN, keyword.as_bytes()]);
        let crypto_key = sha256_parts(&[KSK_CRYPTO_DOMAIN, keyword.as_bytes()]);
        Self::from_parts(seed, crypto_key)
    }

    /// The Ed25519 seed (what an insert URI carries).
    #[must_use]
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The matching request key.
    #[must_use]
    pub fn public(&self) -> SskPublic {
        SskPublic {
            pubkey_hash: sha256(self.signing.verifying_key().as_bytes()),
            crypto_key: self.crypto_key,
        }
    }

    /// Encrypt and sign `data` (≤ 1 KiB) as document `docname`.
    ///
    /// # Errors
    /// [`BlockError::TooLarge`] if `data` exceeds [`PAYLOAD_LEN`].
    pub fn encode(
        &self,
        docname: &str,
        data: &[u8],
        flags: DataFlags,
    ) -> Result<(RoutingKey, Vec<u8>), BlockError> {
        if data.len() > PAYLOAD_LEN {
            return Err(BlockError::TooLarge {
                kind: "SSK",
                got: data.len(),
                max: PAYLOAD_LEN,
            });
        }
        let public = self.public();
        let ehd = public.encrypted_docname(docname);
        let data_key = hmac(&self.crypto_key, &[DATA_DOMAIN, &ehd]);
        let mut plain = Vec::with_capacity(CIPHER_LEN);
        plain.push(u8::from(flags.metadata));
        plain.push(flags.codec.id());
        let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(data);
        plain.resize(PLAIN_LEN, 0);
        let nonce_full = hmac(&data_key, &[&plain]);
        let nonce = &nonce_full[..12];
        let tag = ChaCha20Poly1305::new(Key::from_slice(&data_key))
            .encrypt_in_place_detached(Nonce::from_slice(nonce), &[], &mut plain)
            .map_err(|_| BlockError::Decrypt)?;
        plain.extend_from_slice(&tag);

        let mut block = Vec::with_capacity(BLOCK_LEN);
        block.extend_from_slice(self.signing.verifying_key().as_bytes());
        block.extend_from_slice(&ehd);
        block.extend_from_slice(nonce);
        block.extend_from_slice(&plain);
        let sig = self.signing.sign(&signed_message(&block[EHD_OFF..]));
        block.extend_from_slice(&sig.to_bytes());
        Ok((public.routing_key(docname), block))
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIG_DOMAIN.len() + body.len());
    m.extend_from_slice(SIG_DOMAIN);
    m.extend_from_slice(body);
    m
}

/// Check an SSK block against its routing key without the crypto key: the
/// public key must hash into the routing key together with E(docname), and
/// the signature must verify.
///
/// # Errors
/// [`BlockError::WrongLength`], [`BlockError::HashMismatch`],
/// [`BlockError::WrongPublicKey`] or [`BlockError::BadSignature`].
pub fn verify(routing_key: &RoutingKey, block: &[u8]) -> Result<(), BlockError> {
    if block.len() != BLOCK_LEN {
        return Err(BlockError::WrongLength {
            kind: "SSK",
            got: block.len(),
            want: BLOCK_LEN,
        });
    }
    let pubkey = &block[PUB_OFF..EHD_OFF];
    let ehd = &block[EHD_OFF..NONCE_OFF];
    if sha256_parts(&[ehd, &sha256(pubkey)]) != routing_key.0 {
        return Err(BlockError::HashMismatch);
    }
    let mut pk = [0u8; 32];
    pk.copy_from_slice(pubkey);
    let vk = VerifyingKey::from_bytes(&pk).map_err(|_| BlockError::WrongPublicKey)?;
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&block[SIG_OFF..]);
    let sig = Signature::from_bytes(&sig);
    vk.verify_strict(&signed_message(&block[EHD_OFF..SIG_OFF]), &sig)
        .map_err(|_| BlockError::BadSignature)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn round_trip() {
        let k = SskPrivate::generate(&mut OsRng);
        let flags = DataFlags {
            metadata: true,
            codec: Codec::Zstd,
        };
        let (rk, block) = k.encode("doc", b"hello", flags).unwrap();
        assert_eq!(block.len(), BLOCK_LEN);
        assert_eq!(rk, k.public().routing_key("doc"));
        verify(&rk, &block).unwrap();
        let (f, data) = k.public().decode("doc", &block).unwrap();
        assert_eq!(f, flags);
        assert_eq!(data, b"hello");
        // Another docname gives another routing key.
        assert_ne!(rk, k.public().routing_key("doc2"));
    }

    #[test]
    fn forged_signature_rejected() {
        let k = SskPrivate::generate(&mut OsRng);
        let (rk, mut block) = k.encode("doc", b"hello", DataFlags::default()).unwrap();
        block[CIPHER_OFF + 3] ^= 0x40;
        assert_eq!(verify(&rk, &block), Err(BlockError::BadSignature));
        let (rk, mut block) = k.encode("doc", b"hello", DataFlags::default()).unwrap();
        block[SIG_OFF + 1] ^= 1;
        assert_eq!(verify(&rk, &block), Err(BlockError::BadSignature));
    }

    #[test]
    fn other_signer_cannot_write_into_subspace() {
        let owner = SskPrivate::generate(&mut OsRng);
        let thief = SskPrivate::from_parts([9; 32], owner.crypto_key);
        let (_, block) = thief.encode("doc", b"evil", DataFlags::default()).unwrap();
        let rk = owner.public().routing_key("doc");
        assert_eq!(verify(&rk, &block), Err(BlockError::HashMismatch));
    }

    #[test]
    fn ksk_is_deterministic() {
        let a = SskPrivate::from_keyword("hello");
        let b = SskPrivate::from_keyword("hello");
        assert_eq!(a, b);
        assert_ne!(a.public(), SskPrivate::from_keyword("hellp").public());
    }

    #[test]
    fn too_large() {
        let k = SskPrivate::generate(&mut OsRng);
        assert!(k
            .encode("d", &[0; PAYLOAD_LEN + 1], DataFlags::default())
            .is_err());
        k.encode("d", &[0; PAYLOAD_LEN], DataFlags::default())
            .unwrap();
    }
}
