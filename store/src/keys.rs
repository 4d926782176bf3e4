//! Key material: salted index keys and at-rest encryption of blocks.
//!
//! Everything here is derived from the per-node [`StoreSecret`] with
//! HMAC-SHA256 under distinct domain strings:
//!
//! ```text
//! index key  = HMAC(secret, "lichen-store/v1/index"  || kind tag || routing key)
//! rk mask    = HMAC(secret, "lichen-store/v1/rk-mask" || index key)
//! block key  = HMAC(secret, "lichen-store/v1/block"  || index key)
//! check      = HMAC(secret, "lichen-store/v1/check")
//! stored     = nonce (12 random bytes) || ChaCha20(block key, nonce, block)
//! ```
//!
//! Why blocks are encrypted again at rest: a CHK routing key *is*
//! SHA-256(block), and an SSK routing key is a hash of bytes inside the block,
//! so storing blocks as they are would let anyone holding the disk recompute
//! every routing key and defeat the salted index. ChaCha20 (no MAC) suffices:
//! integrity comes from re-verifying the decrypted block against its routing
//! key on every read.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use hmac::{Hmac, Mac};
use lichen_crypto::{BlockKind, RoutingKey};
use rand::RngCore;
use sha2::Sha256;

/// Length of the random nonce stored in front of each encrypted block.
pub(crate) const NONCE_LEN: usize = 12;

/// The per-node secret that salts index keys and encrypts blocks at rest.
///
/// Keep it off the disk the store lives on if the disk may be seized (the
/// node can derive it from a passphrase). Its `Debug` form is scrubbed.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreSecret([u8; 32]);

impl StoreSecret {
    /// Wrap 32 secret bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        StoreSecret(bytes)
    }

    /// A fresh random secret from the operating system's generator.
    #[must_use]
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        StoreSecret(b)
    }

    /// The secret bytes (for the node to persist or wrap under a passphrase).
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for StoreSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "StoreSecret")
    }
}

/// Salted index key of one block (the same in every space).
pub(crate) type IndexKey = [u8; 32];

/// Pre-keyed HMAC state; cloning it is cheaper than re-keying.
#[derive(Clone)]
pub(crate) struct Keys {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "Keys")
    }
}

impl Keys {
    pub(crate) fn new(secret: &StoreSecret) -> Self {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Keys { mac }
    }

    fn prf(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = self.mac.clone();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    pub(crate) fn index_key(&self, kind: BlockKind, key: &RoutingKey) -> IndexKey {
        self.prf(&[b"lichen-store/v1/index", &[kind.tag()], &key.0])
    }

    pub(crate) fn check_value(&self) -> [u8; 32] {
        self.prf(&[b"lichen-store/v1/check"])
    }

    /// The name of the index record of `ik` in the space tagged `space`:
    /// the key of the record does not say which space it is in.
    pub(crate) fn record_id(&self, space: u8, ik: &IndexKey) -> [u8; 32] {
        self.prf(&[b"lichen-store/v3/record", &[space], ik])
    }

    /// Encrypt or decrypt (in place) an index record's payload under its
    /// random `nonce`.
    pub(crate) fn index_cipher(&self, nonce: &[u8; NONCE_LEN], buf: &mut [u8]) {
        let key = self.prf(&[b"lichen-store/v3/index-value"]);
        ChaCha20::new(&key.into(), nonce.into()).apply_keystream(buf);
    }

    /// XOR `rk` with a mask only the secret holder can compute (format 2's
    /// index records; read once, to migrate them).
    pub(crate) fn mask_rk(&self, ik: &IndexKey, rk: &[u8; 32]) -> [u8; 32] {
        let mask = self.prf(&[b"lichen-store/v1/rk-mask", ik]);
        let mut out = [0u8; 32];
        for (o, (a, b)) in out.iter_mut().zip(mask.iter().zip(rk.iter())) {
            *o = a ^ b;
        }
        out
    }

    /// Encrypt `block` for storage: `nonce || ciphertext`, one allocation.
    pub(crate) fn seal(&self, ik: &IndexKey, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_LEN + block.len());
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(block);
        self.cipher(ik, &nonce)
            .apply_keystream(&mut out[NONCE_LEN..]);
        out
    }

    /// Decrypt a stored value; `None` if it is too short to hold a nonce.
    pub(crate) fn open(&self, ik: &IndexKey, stored: &[u8]) -> Option<Vec<u8>> {
        let (nonce, ct) = stored.split_at_checked(NONCE_LEN)?;
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        let mut out = ct.to_vec();
        self.cipher(ik, &n).apply_keystream(&mut out);
        Some(out)
    }

    fn cipher(&self, ik: &IndexKey, nonce: &[u8; NONCE_LEN]) -> ChaCha20 {
        let key = self.prf(&[b"lichen-store/v1/block", ik]);
        ChaCha20::new(&key.into(), nonce.into())
    }
}

/// Circular distance between two locations on the 2^64 circle.
#[must_use]
pub fn circular_distance(a: u64, b: u64) -> u64 {
    let d = a.wrapping_sub(b);
    d.min(d.wrapping_neg())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_wraps() {
        assert_eq!(circular_distance(0, u64::MAX), 1);
        assert_eq!(circular_distance(u64::MAX, 0), 1);
        assert_eq!(circular_distance(10, 4), 6);
        assert_eq!(circular_distance(0, 1 << 63), 1 << 63);
    }

    #[test]
    fn seal_open_round_trip_and_differs() {
        let k = Keys::new(&StoreSecret::from_bytes([7; 32]));
        let ik = k.index_key(BlockKind::Chk, &RoutingKey([1; 32]));
        let block = vec![0xAB; 100];
        let s = k.seal(&ik, &block);
        assert_ne!(&s[NONCE_LEN..], &block[..]);
        assert_eq!(k.open(&ik, &s), Some(block));
        let other = Keys::new(&StoreSecret::from_bytes([8; 32]));
        assert_ne!(other.index_key(BlockKind::Chk, &RoutingKey([1; 32])), ik);
        assert_ne!(k.index_key(BlockKind::Ssk, &RoutingKey([1; 32])), ik);
    }

    #[test]
    fn secret_debug_is_scrubbed() {
        assert_eq!(
            format!("{:?}", StoreSecret::from_bytes([1; 32])),
            "StoreSecret([scrubbed])"
        );
    }
}
