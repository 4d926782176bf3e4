//! The node's link keys, derived from its identity so the identity file
//! format does not change: the X25519 static key is the identity's
//! `static_secret`; the Ed25519 key that signs noderefs is the *same*
//! scalar on the Edwards form of the curve, so its public key maps to the
//! static key (`VerifyingKey::to_montgomery`, the birational map libsodium
//! and Signal's XEdDSA use). Anyone can check that a noderef's identity
//! key belongs to its static key, and only the holder of the static
//! secret can sign for it. The signing nonces' prefix is
//! `SHA-256("lichen-noderef-signing-v2" || static_secret)`.
//!
//! Using one scalar for X25519 and Ed25519 is what XEdDSA, libsodium's
//! `crypto_sign_ed25519_sk_to_curve25519` and Tor's cross-certificates do;
//! joint security of the pair is shown by Thormarker, "On using the same
//! key pair for Ed25519 and an X25519 based KEM" (2021). The signing goes
//! through `ed25519-dalek`'s `hazmat` API (an expanded secret key built
//! from the scalar); no curve arithmetic is done here.

use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256, Sha512};
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};

/// Domain tag of the signing nonces' prefix.
const SIGNING_TAG: &[u8] = b"lichen-noderef-signing-v2";

/// A node's link keys. `Debug` prints nothing of them.
#[derive(Clone)]
pub struct NodeKeys {
    static_secret: [u8; 32],
    static_public: [u8; 32],
    identity: VerifyingKey,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "NodeKeys")
    }
}

/// The X25519 public key of `secret` (clamped as X25519 does).
#[must_use]
pub fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(mut dh) = DefaultResolver.resolve_dh(&DHChoice::Curve25519) {
        dh.set(secret);
        out.copy_from_slice(dh.pubkey());
    }
    out
}

/// The static key an identity key belongs to: the X25519 public key of
/// the same secret scalar.
#[must_use]
pub fn static_key_of(identity: &VerifyingKey) -> [u8; 32] {
    identity.to_montgomery().to_bytes()
}

/// The Ed25519 expanded key of a static secret: its clamped scalar (what
/// X25519 multiplies by) and a derived nonce prefix.
fn expanded(static_secret: &[u8; 32]) -> ExpandedSecretKey {
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(static_secret);
    let prefix = Sha256::new()
        .chain_update(SIGNING_TAG)
        .chain_update(static_secret)
        .finalize();
    bytes[32..].copy_from_slice(&prefix);
    let key = ExpandedSecretKey::from_bytes(&bytes);
    bytes.fill(0);
    key
}

impl NodeKeys {
    /// Keys from a raw static secret.
    #[must_use]
    pub fn from_static_secret(static_secret: [u8; 32]) -> Self {
        NodeKeys {
            static_public: x25519_public(&static_secret),
            identity: VerifyingKey::from(&expanded(&static_secret)),
            static_secret,
        }
    }

    /// The X25519 static public key (what initiators must know).
    #[must_use]
    pub fn static_public(&self) -> [u8; 32] {
        self.static_public
    }

    /// The X25519 static secret (for the Noise builder and the tunnel
    /// handshakes this node answers).
    #[must_use]
    pub fn static_secret(&self) -> &[u8; 32] {
        &self.static_secret
    }

    /// The Ed25519 key that signs noderefs; it maps to
    /// [`NodeKeys::static_public`] ([`static_key_of`]).
    #[must_use]
    pub fn identity(&self) -> VerifyingKey {
        self.identity
    }

    /// Sign `msg` with the identity key.
    #[must_use]
    pub fn sign(&self, msg: &[u8]) -> Signature {
        raw_sign::<Sha512>(&expanded(&self.static_secret), msg, &self.identity)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_distinct() {
        let a = NodeKeys::from_static_secret([7; 32]);
        let b = NodeKeys::from_static_secret([7; 32]);
        let c = NodeKeys::from_static_secret([8; 32]);
        assert_eq!(a.static_public(), b.static_public());
        assert_eq!(a.identity(), b.identity());
        assert_ne!(a.static_public(), c.static_public());
        assert_ne!(a.static_public(), [0; 32]);
        assert_eq!(format!("{a:?}"), "NodeKeys([scrubbed])");
    }

    #[test]
    fn the_identity_key_belongs_to_the_static_key_and_signs() {
        for s in 0..32u8 {
            let mut secret = [s; 32];
            secret[31] ^= 0x80 | s;
            let k = NodeKeys::from_static_secret(secret);
            assert_eq!(static_key_of(&k.identity()), k.static_public());
            let sig = k.sign(b"message");
            k.identity().verify_strict(b"message", &sig).unwrap();
            assert!(k.identity().verify_strict(b"other", &sig).is_err());
            let other = NodeKeys::from_static_secret([s.wrapping_add(1); 32]);
            assert_ne!(static_key_of(&other.identity()), k.static_public());
        }
    }
}
