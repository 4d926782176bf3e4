//! Invitations: a friend in one paste.
//!
//! `lichen invite` prints a short text the user gives a friend over a
//! channel they trust; `lichen peers add INVITATION` on the friend's node
//! dials the inviting node, proves it holds the invitation's one-time
//! secret, and both nodes then know each other as friends (the link
//! messages are in `docs/wire.md`, "Invitations"; the policy's side in
//! [`crate::policy`]).
//!
//! Text form: `lichen-invite:` followed by Freenet base64 (URL-safe, no
//! padding) of 60 bytes for an IPv4 address, 72 for IPv6:
//!
//! ```text
//! version (1) = 1
//! token (16)          the one-time secret
//! identity key (32)   the inviting node's Ed25519 key; its static key
//!                     (the one the link handshake proves) follows from it
//! expires (4)         Unix seconds, big-endian
//! family (1) = 4 | 6, IP (4 | 16), port (2, big-endian)
//! ```
//!
//! Whoever holds the text can become the node's friend once, until it
//! expires, and learns where the node listens: it is a secret, like a
//! noderef given to a friend.

use crate::keys::static_key_of;
use crate::noderef::{NodeRef, VERSION};
use ed25519_dalek::VerifyingKey;
use std::net::{IpAddr, SocketAddr};

/// Prefix of the text form.
pub const PREFIX: &str = "lichen-invite:";
/// Format version.
const FORMAT: u8 = 1;
/// Longest text accepted (an IPv6 invitation is 110 characters).
pub const MAX_TEXT: usize = 256;

/// Why an invitation's text is not one.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvitationError {
    /// The text does not start with `lichen-invite:`.
    #[error("not a Lichen invitation (expected the prefix `lichen-invite:`)")]
    MissingPrefix,
    /// Longer than any invitation.
    #[error("invitation too long ({0} characters)")]
    TooLong(usize),
    /// Not base64, or cut short, or with bytes left over.
    #[error("invitation is damaged (was it cut when pasted?)")]
    Damaged,
    /// Another format version.
    #[error("invitation format {0} is not supported (ask for a new one)")]
    UnsupportedVersion(u8),
    /// The key is not a valid Ed25519 point.
    #[error("invitation names an invalid key")]
    BadKey,
    /// Past its expiry.
    #[error("invitation expired (ask for a new one)")]
    Expired,
}

/// A parsed invitation.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The one-time secret.
    pub token: [u8; 16],
    /// The inviting node's Ed25519 identity key.
    pub identity_key: [u8; 32],
    /// Where it listens.
    pub address: SocketAddr,
    /// Unix seconds after which it is refused.
    pub expires: u32,
}

impl std::fmt::Debug for Invitation {
    // The token is a secret; the rest identifies a node.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "Invitation")
    }
}

impl Invitation {
    /// The text form.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut b = Vec::with_capacity(72);
        b.push(FORMAT);
        b.extend_from_slice(&self.token);
        b.extend_from_slice(&self.identity_key);
        b.extend_from_slice(&self.expires.to_be_bytes());
        match self.address.ip() {
            IpAddr::V4(ip) => {
                b.push(4);
                b.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                b.push(6);
                b.extend_from_slice(&ip.octets());
            }
        }
        b.extend_from_slice(&self.address.port().to_be_bytes());
        format!("{PREFIX}{}", lichen_crypto::b64::encode(&b))
    }

    /// Parse the text form (whitespace anywhere is ignored: a pasted text
    /// may be wrapped), refusing one past `now_secs`.
    ///
    /// # Errors
    /// [`InvitationError`].
    pub fn parse(text: &str, now_secs: u64) -> Result<Self, InvitationError> {
        if text.len() > MAX_TEXT {
            return Err(InvitationError::TooLong(text.len()));
        }
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let body = compact
            .strip_prefix(PREFIX)
            .ok_or(InvitationError::MissingPrefix)?;
        let b = lichen_crypto::b64::decode(body).ok_or(InvitationError::Damaged)?;
        let inv = Self::from_bytes(&b)?;
        if u64::from(inv.expires) < now_secs {
            return Err(InvitationError::Expired);
        }
        Ok(inv)
    }

    fn from_bytes(b: &[u8]) -> Result<Self, InvitationError> {
        let (&version, rest) = b.split_first().ok_or(InvitationError::Damaged)?;
        if version != FORMAT {
            return Err(InvitationError::UnsupportedVersion(version));
        }
        let (token, rest) = take::<16>(rest)?;
        let (identity_key, rest) = take::<32>(rest)?;
        let (expires, rest) = take::<4>(rest)?;
        let (&family, rest) = rest.split_first().ok_or(InvitationError::Damaged)?;
        let (ip, rest) = match family {
            4 => {
                let (ip, rest) = take::<4>(rest)?;
                (IpAddr::from(ip), rest)
            }
            6 => {
                let (ip, rest) = take::<16>(rest)?;
                (IpAddr::from(ip), rest)
            }
            _ => return Err(InvitationError::Damaged),
        };
        let (port, rest) = take::<2>(rest)?;
        if !rest.is_empty() {
            return Err(InvitationError::Damaged);
        }
        VerifyingKey::from_bytes(&identity_key).map_err(|_| InvitationError::BadKey)?;
        Ok(Invitation {
            token,
            identity_key,
            address: SocketAddr::new(ip, u16::from_be_bytes(port)),
            expires: u32::from_be_bytes(expires),
        })
    }

    /// The static key the inviting node's link handshake proves.
    ///
    /// # Errors
    /// [`InvitationError::BadKey`] (checked by [`Invitation::parse`]).
    pub fn static_key(&self) -> Result<[u8; 32], InvitationError> {
        let k =
            VerifyingKey::from_bytes(&self.identity_key).map_err(|_| InvitationError::BadKey)?;
        Ok(static_key_of(&k))
    }

    /// What to dial: the inviting node at the invitation's address (an
    /// unsigned noderef, never stored or passed on; the node's own signed
    /// noderef comes over the link once the invitation is accepted).
    ///
    /// # Errors
    /// [`InvitationError::BadKey`].
    pub fn dial_target(&self) -> Result<NodeRef, InvitationError> {
        Ok(NodeRef {
            version: VERSION,
            addresses: vec![self.address],
            static_key: self.static_key()?,
            identity_key: self.identity_key,
            location: None,
        })
    }
}

fn take<const N: usize>(b: &[u8]) -> Result<([u8; N], &[u8]), InvitationError> {
    if b.len() < N {
        return Err(InvitationError::Damaged);
    }
    let (head, rest) = b.split_at(N);
    let mut out = [0u8; N];
    out.copy_from_slice(head);
    Ok((out, rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::NodeKeys;
    use proptest::prelude::*;

    fn sample(address: SocketAddr) -> Invitation {
        let keys = NodeKeys::from_static_secret([5; 32]);
        Invitation {
            token: [7; 16],
            identity_key: keys.identity().to_bytes(),
            address,
            expires: 2_000_000_000,
        }
    }

    #[test]
    fn round_trip_short_and_names_the_nodes_static_key() {
        for a in ["198.51.100.7:9489", "[2001:db8::1]:9489"] {
            let inv = sample(a.parse().unwrap());
            let text = inv.to_text();
            assert!(text.len() <= 110, "{} characters", text.len());
            // Wrapped when pasted: still read.
            let wrapped = format!("  {}\n{}  ", &text[..40], &text[40..]);
            assert_eq!(Invitation::parse(&wrapped, 1_900_000_000).unwrap(), inv);
            let keys = NodeKeys::from_static_secret([5; 32]);
            assert_eq!(inv.static_key().unwrap(), keys.static_public());
            assert_eq!(inv.dial_target().unwrap().addresses, vec![inv.address]);
        }
    }

    #[test]
    fn bad_texts_get_clear_errors() {
        let text = sample("198.51.100.7:9489".parse().unwrap()).to_text();
        assert_eq!(
            Invitation::parse(&text, 2_000_000_001),
            Err(InvitationError::Expired)
        );
        assert_eq!(
            Invitation::parse("lichen-noderef-v1:abc", 0),
            Err(InvitationError::MissingPrefix)
        );
        assert_eq!(
            Invitation::parse(&text[..text.len() - 3], 0),
            Err(InvitationError::Damaged)
        );
        assert_eq!(
            Invitation::parse(&format!("{text}AAAA"), 0),
            Err(InvitationError::Damaged)
        );
        assert!(matches!(
            Invitation::parse(&"x".repeat(300), 0),
            Err(InvitationError::TooLong(300))
        ));
        let mut b = lichen_crypto::b64::decode(text.strip_prefix(PREFIX).unwrap()).unwrap();
        b[0] = 2;
        let other = format!("{PREFIX}{}", lichen_crypto::b64::encode(&b));
        assert_eq!(
            Invitation::parse(&other, 0),
            Err(InvitationError::UnsupportedVersion(2))
        );
    }

    proptest! {
        /// Any text: an invitation or an error, never a panic.
        #[test]
        fn any_text_parses_or_fails_cleanly(s in ".{0,300}") {
            let _ = Invitation::parse(&s, 0);
            let _ = Invitation::parse(&format!("{PREFIX}{s}"), 0);
        }

        /// Any bytes after the prefix: the same.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let text = format!("{PREFIX}{}", lichen_crypto::b64::encode(&b));
            let _ = Invitation::parse(&text, 0);
        }
    }
}
