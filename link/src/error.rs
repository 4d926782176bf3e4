//! Errors of the link layer, split by who is at fault (rustls style):
//! the peer ([`LinkError::is_peer_fault`]) or our side / the network.

/// Why a noderef could not be parsed or verified.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoderefError {
    /// The text does not start with `lichen-noderef-v1:`.
    #[error("not a Lichen noderef (expected the prefix `lichen-noderef-v1:`)")]
    MissingPrefix,
    /// The text or the encoded bytes exceed the size limit.
    #[error("noderef too large ({0} bytes)")]
    TooLarge(usize),
    /// The part after the prefix is not valid base64.
    #[error("noderef is not valid base64 (was it cut when pasted?)")]
    BadBase64,
    /// The bytes are not the expected CBOR structure.
    #[error("noderef is malformed: {0}")]
    Malformed(String),
    /// A version this node does not speak (1: made by a Lichen from before
    /// noderefs were bound to the static key; ask for a new one).
    #[error("noderef version {0} is not supported (this node reads version 2; ask its owner for a new noderef)")]
    UnsupportedVersion(u32),
    /// The noderef lists no address.
    #[error("noderef has no address")]
    NoAddress,
    /// An address is not `ip:port`.
    #[error("noderef address {0:?} is not ip:port")]
    BadAddress(String),
    /// The identity key is not a valid Ed25519 point.
    #[error("noderef identity key is invalid")]
    BadIdentityKey,
    /// The identity key is not the static key's own (the same secret
    /// scalar): someone else signed for that static key.
    #[error("noderef identity key does not belong to its static key (forged)")]
    KeyMismatch,
    /// The signature does not verify under the identity key.
    #[error("noderef signature does not verify (edited or damaged)")]
    BadSignature,
}

/// Why a link failed. Every variant ends the link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Socket error.
    #[error("link I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The connection closed in the middle of a handshake message or frame.
    #[error("connection closed mid-message")]
    Truncated,
    /// The peer closed the connection during the handshake: the noderef
    /// dialed named a wrong static key, or the peer is a node of link
    /// version 1 (which closes on a handshake payload).
    #[error("the peer closed the connection during the handshake (a wrong key in its noderef, or an older Lichen)")]
    HandshakeClosed,
    /// The handshake failed: wrong responder key, garbage, or a replay.
    #[error("link handshake failed: {0}")]
    Handshake(String),
    /// The peer speaks another link version (told in the handshake).
    /// Not a fault: it is an older or newer node, and cannot link to this
    /// one until one of them is upgraded.
    #[error(
        "the peer speaks link version {theirs}, this node {ours}: one of them must be upgraded"
    )]
    Version {
        /// This node's link version.
        ours: u8,
        /// The peer's.
        theirs: u8,
    },
    /// A record length (in its sealed header) that no honest peer sends.
    #[error("bad record length {0}")]
    BadFrameLength(usize),
    /// A record failed authentication (garbage, a replayed or reordered
    /// record: the Noise nonce no longer matches).
    #[error("record failed to decrypt")]
    Decrypt,
    /// A decrypted header or body is not the size it must be.
    #[error("bad padding in record")]
    BadPadding,
    /// The frame's CBOR could not be decoded.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// The envelope carries a version this node does not speak.
    #[error("unsupported message version {0}")]
    UnsupportedVersion(u64),
    /// A message to send does not fit in the largest frame.
    #[error("message of {0} bytes does not fit in one frame")]
    MessageTooLarge(usize),
    /// The peer was silent for longer than the idle timeout, or the
    /// handshake took too long.
    #[error("link timed out")]
    Timeout,
    /// The send queue is full (backpressure).
    #[error("link send queue full")]
    QueueFull,
    /// The link is closed (locally, or the peer closed cleanly).
    #[error("link closed")]
    Closed,
    /// Our own Noise setup failed (a bug or a bad local key).
    #[error("noise setup: {0}")]
    Setup(String),
}

impl LinkError {
    /// Whether the peer misbehaved (sent something no honest node sends):
    /// the caller should disconnect and back the peer off.
    #[must_use]
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            LinkError::Handshake(_)
                | LinkError::BadFrameLength(_)
                | LinkError::Decrypt
                | LinkError::BadPadding
                | LinkError::Decode(_)
                | LinkError::UnsupportedVersion(_)
        )
    }
}
