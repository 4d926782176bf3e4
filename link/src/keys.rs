//! The node's link keys, derived from its identity so the identity file
//! format does not change: the X25519 static key is the identity's
//! `static_secret`; the Ed25519 key that signs noderefs is derived from it
//! as `SHA-256("lichen-noderef-signing-v1" || static_secret)`.

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};

/// Domain tag of the signing-key derivation.
const SIGNING_TAG: &[u8] = b"lichen-noderef-signing-v1";

/// A node's link keys. `Debug` prints only the public keys' first bytes.
#[derive(Clone)]
pub struct NodeKeys {
    static_secret: [u8; 32],
    static_public: [u8; 32],
    signing: SigningKey,
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

impl NodeKeys {
    /// Keys from a raw static secret.
    #[must_use]
    pub fn from_static_secret(static_secret: [u8; 32]) -> Self {
        let seed: [u8; 32] = Sha256::new()
            .chain_update(SIGNING_TAG)
            .chain_update(static_secret)
            .finalize()
            .into();
        NodeKeys {
            static_public: x25519_public(&static_secret),
            static_secret,
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The X25519 static public key (what initiators must know).
    #[must_use]
    pub fn static_public(&self) -> [u8; 32] {
        self.static_public
    }

    /// The X25519 static secret (for the Noise builder only).
    pub(crate) fn static_secret(&self) -> &[u8; 32] {
        &self.static_secret
    }

    /// The Ed25519 signing key of noderefs.
    #[must_use]
    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_distinct() {
        let a = NodeKeys::from_static_secret([7; 32]);
        let b = NodeKeys::from_static_secret([7; 32]);
        let c = NodeKeys::from_static_secret([8; 32]);
        assert_eq!(a.static_public(), b.static_public());
        assert_eq!(a.signing().to_bytes(), b.signing().to_bytes());
        assert_ne!(a.static_public(), c.static_public());
        assert_ne!(a.static_public(), [0; 32]);
        assert_eq!(format!("{a:?}"), "NodeKeys([scrubbed])");
    }
}
