//! Node references: what a user pastes to a friend, what a seed list holds,
//! and what opennet announcements and path-folding offers carry (as bytes,
//! in `lichen_routing::NodeRef::address`).
//!
//! Text form: `lichen-noderef-v1:` followed by Freenet base64 (URL-safe,
//! no padding) of the binary form. Binary form: CBOR
//! `{"body": bytes, "sig": bytes(64)}` where `body` is the CBOR of
//! `{"version": 2, "addresses", "static_key", "identity_key", "location"?}`
//! and `sig` is Ed25519 by `identity_key` over
//! `"lichen-noderef-v2" || body`. Signing the exact body bytes avoids any
//! canonical-encoding question, and covers every field a noderef claims.
//! The identity key must be the static key's own ([`keys`](super::keys):
//! the same secret scalar, checked with [`static_key_of`]), so only the
//! holder of the static secret can say where it listens: nobody can
//! re-sign another node's static key with other addresses or another
//! location. See `docs/wire.md`.

use super::error::NoderefError;
use super::keys::{static_key_of, NodeKeys};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Prefix of the text form.
pub const PREFIX: &str = "lichen-noderef-v1:";
/// Domain tag of the signature.
const SIG_TAG: &[u8] = b"lichen-noderef-v2";
/// Noderef format version this node writes and accepts (1: the identity
/// key was not bound to the static key).
pub const VERSION: u32 = 2;
/// Largest binary noderef accepted (the routing layer caps opaque
/// noderef bytes at 2 KiB).
pub const MAX_BYTES: usize = 2048;
/// Most addresses in one noderef.
pub const MAX_ADDRESSES: usize = 8;

/// Most noderefs [`sim_cache_verified`] remembers (then it starts again).
const VERIFIED_CAP: usize = 1 << 22;

std::thread_local! {
    /// Noderefs [`NodeRef::from_bytes`] verified on this thread, by
    /// SHA-256 of their bytes (None: no cache, the node's case).
    static VERIFIED: std::cell::RefCell<Option<std::collections::HashMap<[u8; 32], std::sync::Arc<NodeRef>>>> =
        const { std::cell::RefCell::new(None) };
}

/// **Simulator-only** (`lichen-sim`): with `on`, [`NodeRef::from_bytes`]
/// on this thread remembers each noderef it verified, by SHA-256 of its
/// bytes, and returns the same bytes' result again without parsing and
/// verifying them (a pure function of the bytes: nothing it decides
/// changes). A simulator runs many nodes that verify the same noderefs
/// over and over; a node verifies each noderef it meets once or twice, and
/// never turns this on. Off clears the cache.
#[doc(hidden)]
pub fn sim_cache_verified(on: bool) {
    VERIFIED.with(|c| {
        let mut c = c.borrow_mut();
        match (on, c.is_some()) {
            (true, false) => *c = Some(std::collections::HashMap::new()),
            (false, _) => *c = None,
            (true, true) => {}
        }
    });
}

/// A verified node reference.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeRef {
    /// Format version.
    pub version: u32,
    /// Where the node listens for links.
    pub addresses: Vec<SocketAddr>,
    /// X25519 static key: the responder key of the Noise XK handshake.
    pub static_key: [u8; 32],
    /// Ed25519 key that signed this noderef.
    pub identity_key: [u8; 32],
    /// The node's location when the noderef was made (darknet nodes swap
    /// locations, so this is a hint).
    pub location: Option<u64>,
}

impl std::fmt::Debug for NodeRef {
    // Addresses and keys identify a node: keep them out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "NodeRef")
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    version: u32,
    addresses: Vec<String>,
    #[serde(with = "serde_bytes")]
    static_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    identity_key: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    location: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Outer {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
}

fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing plain structs into a Vec cannot fail.
    let _ = ciborium::into_writer(v, &mut out);
    out
}

fn key32(v: &[u8]) -> Result<[u8; 32], NoderefError> {
    <[u8; 32]>::try_from(v).map_err(|_| NoderefError::Malformed("key is not 32 bytes".into()))
}

impl NodeRef {
    /// This node's noderef.
    #[must_use]
    pub fn new(keys: &NodeKeys, addresses: Vec<SocketAddr>, location: Option<u64>) -> Self {
        NodeRef {
            version: VERSION,
            addresses,
            static_key: keys.static_public(),
            identity_key: keys.identity().to_bytes(),
            location,
        }
    }

    /// The signed binary form, signed with `keys` (which must be the keys
    /// this noderef names, or it will not verify).
    #[must_use]
    pub fn to_bytes(&self, keys: &NodeKeys) -> Vec<u8> {
        let body = cbor(&Body {
            version: self.version,
            addresses: self.addresses.iter().map(ToString::to_string).collect(),
            static_key: self.static_key.to_vec(),
            identity_key: self.identity_key.to_vec(),
            location: self.location,
        });
        let mut signed = SIG_TAG.to_vec();
        signed.extend_from_slice(&body);
        let sig = keys.sign(&signed).to_bytes().to_vec();
        cbor(&Outer { body, sig })
    }

    /// The text form a user pastes.
    #[must_use]
    pub fn to_text(&self, keys: &NodeKeys) -> String {
        format!(
            "{PREFIX}{}",
            lichen_crypto::b64::encode(&self.to_bytes(keys))
        )
    }

    /// Parse and verify the binary form.
    ///
    /// # Errors
    /// [`NoderefError`]; never panics, whatever the bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NoderefError> {
        Self::from_bytes_shared(bytes).map(std::sync::Arc::unwrap_or_clone)
    }

    /// [`NodeRef::from_bytes`], shared: in the simulator (see
    /// [`sim_cache_verified`]) every list and link that holds the same
    /// noderef holds one copy of it.
    ///
    /// # Errors
    /// [`NoderefError`]; never panics, whatever the bytes.
    pub fn from_bytes_shared(bytes: &[u8]) -> Result<std::sync::Arc<Self>, NoderefError> {
        if !VERIFIED.with(|c| c.borrow().is_some()) {
            return Self::verify_bytes(bytes).map(std::sync::Arc::new);
        }
        let digest = lichen_crypto::sha256(bytes);
        if let Some(r) =
            VERIFIED.with(|c| c.borrow().as_ref().and_then(|m| m.get(&digest).cloned()))
        {
            return Ok(r);
        }
        let r = std::sync::Arc::new(Self::verify_bytes(bytes)?);
        VERIFIED.with(|c| {
            if let Some(m) = c.borrow_mut().as_mut() {
                if m.len() >= VERIFIED_CAP {
                    m.clear();
                }
                m.insert(digest, r.clone());
            }
        });
        Ok(r)
    }

    /// [`NodeRef::from_bytes`] without the simulator's cache.
    fn verify_bytes(bytes: &[u8]) -> Result<Self, NoderefError> {
        if bytes.len() > MAX_BYTES {
            return Err(NoderefError::TooLarge(bytes.len()));
        }
        let outer: Outer =
            ciborium::from_reader(bytes).map_err(|e| NoderefError::Malformed(e.to_string()))?;
        // One encoding only: no trailing bytes, no alternative key forms.
        if cbor(&outer) != bytes {
            return Err(NoderefError::Malformed("not in canonical form".into()));
        }
        let body: Body = ciborium::from_reader(outer.body.as_slice())
            .map_err(|e| NoderefError::Malformed(e.to_string()))?;
        if body.version != VERSION {
            return Err(NoderefError::UnsupportedVersion(body.version));
        }
        let identity_key = key32(&body.identity_key)?;
        let static_key = key32(&body.static_key)?;
        let vk =
            VerifyingKey::from_bytes(&identity_key).map_err(|_| NoderefError::BadIdentityKey)?;
        if vk.is_weak() {
            return Err(NoderefError::BadIdentityKey);
        }
        if static_key_of(&vk) != static_key {
            return Err(NoderefError::KeyMismatch);
        }
        let sig = Signature::from_slice(&outer.sig).map_err(|_| NoderefError::BadSignature)?;
        let mut signed = SIG_TAG.to_vec();
        signed.extend_from_slice(&outer.body);
        vk.verify_strict(&signed, &sig)
            .map_err(|_| NoderefError::BadSignature)?;
        if body.addresses.is_empty() {
            return Err(NoderefError::NoAddress);
        }
        if body.addresses.len() > MAX_ADDRESSES {
            return Err(NoderefError::Malformed("too many addresses".into()));
        }
        let addresses = body
            .addresses
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|_| NoderefError::BadAddress(a.chars().take(64).collect()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NodeRef {
            version: body.version,
            addresses,
            static_key,
            identity_key,
            location: body.location,
        })
    }

    /// Parse and verify the text form. Whitespace (line breaks from mail
    /// or chat) anywhere in the text is ignored.
    ///
    /// # Errors
    /// [`NoderefError`]; never panics, whatever the text.
    pub fn parse(text: &str) -> Result<Self, NoderefError> {
        // Base64 of MAX_BYTES plus prefix, with generous room for whitespace.
        if text.len() > 4 * MAX_BYTES {
            return Err(NoderefError::TooLarge(text.len()));
        }
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let rest = compact
            .strip_prefix(PREFIX)
            .ok_or(NoderefError::MissingPrefix)?;
        let bytes = lichen_crypto::b64::decode(rest).ok_or(NoderefError::BadBase64)?;
        Self::from_bytes(&bytes)
    }
}

impl std::str::FromStr for NodeRef {
    type Err = NoderefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeRef::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (NodeKeys, NodeRef) {
        let keys = NodeKeys::from_static_secret([42; 32]);
        let r = NodeRef::new(
            &keys,
            vec![
                "127.0.0.1:19002".parse().unwrap(),
                "[::1]:19002".parse().unwrap(),
            ],
            Some(0x1234_5678_9abc_def0),
        );
        (keys, r)
    }

    #[test]
    fn text_round_trip() {
        let (keys, r) = sample();
        let text = r.to_text(&keys);
        assert!(text.starts_with(PREFIX));
        assert!(text.is_ascii() && !text.contains(char::is_whitespace));
        let back = NodeRef::parse(&text).unwrap();
        assert_eq!(back, r);
        // Pasted with line breaks.
        let wrapped: String = text
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i % 60 == 59).then_some('\n').into_iter().chain([c]))
            .collect();
        assert_eq!(NodeRef::parse(&wrapped).unwrap(), r);
        assert_eq!(format!("{back:?}"), "NodeRef([scrubbed])");
    }

    #[test]
    fn the_simulators_cache_gives_the_same_answers() {
        let (keys, r) = sample();
        let good = r.to_bytes(&keys);
        let forged = r.to_bytes(&NodeKeys::from_static_secret([1; 32]));
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        sim_cache_verified(true);
        for _ in 0..3 {
            assert_eq!(NodeRef::from_bytes(&good), Ok(r.clone()));
            assert_eq!(
                NodeRef::from_bytes(&forged),
                Err(NoderefError::BadSignature)
            );
            assert!(NodeRef::from_bytes(&tampered).is_err());
        }
        let cached = VERIFIED.with(|c| c.borrow().as_ref().map(|m| m.len()));
        assert_eq!(cached, Some(1), "only the good noderef is remembered");
        sim_cache_verified(false);
        assert!(VERIFIED.with(|c| c.borrow().is_none()));
        assert_eq!(NodeRef::from_bytes(&good), Ok(r));
    }

    #[test]
    fn typed_errors() {
        let (keys, r) = sample();
        assert_eq!(NodeRef::parse("hello"), Err(NoderefError::MissingPrefix));
        assert_eq!(
            NodeRef::parse("lichen-noderef-v1:!!!"),
            Err(NoderefError::BadBase64)
        );
        assert!(matches!(
            NodeRef::parse("lichen-noderef-v1:AAAA"),
            Err(NoderefError::Malformed(_))
        ));
        // Signed by someone else.
        let other = NodeKeys::from_static_secret([1; 32]);
        let forged = NodeRef::parse(&r.to_text(&other));
        assert_eq!(forged, Err(NoderefError::BadSignature));
        // No address.
        let empty = NodeRef {
            addresses: vec![],
            ..r.clone()
        };
        assert_eq!(
            NodeRef::parse(&empty.to_text(&keys)),
            Err(NoderefError::NoAddress)
        );
        for v in [1, 3] {
            let other = NodeRef {
                version: v,
                ..r.clone()
            };
            assert_eq!(
                NodeRef::parse(&other.to_text(&keys)),
                Err(NoderefError::UnsupportedVersion(v))
            );
        }
    }

    /// Someone who does not hold a node's static secret re-signs its
    /// noderef with other addresses (or another location), or names
    /// another static key, with an identity key of their own. The
    /// signature is good, but the identity key is not the static key's.
    #[test]
    fn a_noderef_signed_for_someone_elses_static_key_is_refused() {
        let (victim, r) = sample();
        let forger = NodeKeys::from_static_secret([7; 32]);
        let mine = forger.identity().to_bytes();
        let swapped_address = NodeRef {
            addresses: vec!["192.0.2.1:6666".parse().unwrap()],
            identity_key: mine,
            ..r.clone()
        };
        let swapped_location = NodeRef {
            location: Some(7),
            identity_key: mine,
            ..r.clone()
        };
        let swapped_static = NodeRef {
            static_key: NodeKeys::from_static_secret([8; 32]).static_public(),
            identity_key: mine,
            ..r.clone()
        };
        for forged in [swapped_address, swapped_location, swapped_static] {
            assert_eq!(
                NodeRef::from_bytes(&forged.to_bytes(&forger)),
                Err(NoderefError::KeyMismatch)
            );
        }
        // The victim's own identity key with the forger's signature.
        let kept = NodeRef {
            addresses: vec!["192.0.2.1:6666".parse().unwrap()],
            ..r.clone()
        };
        assert_eq!(
            NodeRef::from_bytes(&kept.to_bytes(&forger)),
            Err(NoderefError::BadSignature)
        );
        // The forger may claim its own key anywhere, and the victim its.
        let own = NodeRef::new(&forger, r.addresses.clone(), None);
        assert_eq!(NodeRef::from_bytes(&own.to_bytes(&forger)), Ok(own));
        assert_eq!(NodeRef::from_bytes(&r.to_bytes(&victim)), Ok(r));
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let (keys, r) = sample();
        let bytes = r.to_bytes(&keys);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(NodeRef::from_bytes(&b).is_err(), "flip {i}/{bit} accepted");
            }
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = NodeRef::from_bytes(&bytes);
            let text = format!("{PREFIX}{}", lichen_crypto::b64::encode(&bytes));
            let _ = NodeRef::parse(&text);
        }

        #[test]
        fn garbage_text_never_panics(s in ".{0,300}") {
            let _ = NodeRef::parse(&s);
            let _ = NodeRef::parse(&format!("{PREFIX}{s}"));
        }

        #[test]
        fn truncation_is_rejected(cut in 0usize..400) {
            let (keys, r) = sample();
            let bytes = r.to_bytes(&keys);
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(NodeRef::from_bytes(&bytes[..cut]).is_err());
        }
    }
}
