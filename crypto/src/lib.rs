#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub)]

pub mod b64;
pub mod chk;
mod error;
pub mod ssk;
pub mod uri;

pub use error::{BlockError, UriError};
pub use uri::{FreenetUri, KeyUri};

use sha2::{Digest, Sha256};

/// SHA-256 of `data`.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of the concatenation of `parts`, each prefixed by nothing: callers
/// pass a domain-separation tag as the first part.
#[must_use]
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The key a block is routed and stored under: SHA-256 of the encrypted CHK
/// block, or SHA-256(E(docname) || SHA-256(pubkey)) for an SSK.
///
/// Its `Debug` form is scrubbed so a routing key never reaches a log by
/// accident; use [`RoutingKey::to_b64`] deliberately (at debug level only).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoutingKey(pub [u8; 32]);

impl RoutingKey {
    /// The key's location on the routing circle: the first 8 bytes of the
    /// routing key read big-endian, as a fraction of 2^64.
    #[must_use]
    pub fn location(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }

    /// Freenet-alphabet base64 of the key (for debug logs and tests).
    #[must_use]
    pub fn to_b64(&self) -> String {
        b64::encode(&self.0)
    }
}

impl std::fmt::Debug for RoutingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        lichen_safelog::redacted_debug(f, "RoutingKey")
    }
}

/// The two kinds of block that travel the network. Both have a fixed size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockKind {
    /// Content-hash key block: 32 KiB of payload.
    Chk,
    /// Signed-subspace key block: 1 KiB of payload, signed.
    Ssk,
}

impl BlockKind {
    /// The exact size in bytes of a block of this kind.
    #[must_use]
    pub const fn block_len(self) -> usize {
        match self {
            BlockKind::Chk => chk::BLOCK_LEN,
            BlockKind::Ssk => ssk::BLOCK_LEN,
        }
    }

    /// One-byte tag used in wire and disk formats.
    #[must_use]
    pub const fn tag(self) -> u8 {
        match self {
            BlockKind::Chk => 1,
            BlockKind::Ssk => 2,
        }
    }

    /// Inverse of [`BlockKind::tag`].
    #[must_use]
    pub const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(BlockKind::Chk),
            2 => Some(BlockKind::Ssk),
            _ => None,
        }
    }
}

/// Check that `block` is a well-formed block of `kind` stored under `key`,
/// without any decryption key. This is what every node calls before it
/// stores or forwards a block.
///
/// # Errors
/// [`BlockError::WrongLength`], [`BlockError::HashMismatch`] (CHK),
/// [`BlockError::BadSignature`] / [`BlockError::HashMismatch`] (SSK).
pub fn verify_block(kind: BlockKind, key: &RoutingKey, block: &[u8]) -> Result<(), BlockError> {
    match kind {
        BlockKind::Chk => chk::verify(key, block),
        BlockKind::Ssk => ssk::verify(key, block),
    }
}

/// Compression codec recorded with a block or document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Stored as is.
    None,
    /// zstd.
    Zstd,
}

impl Codec {
    /// Numeric codec id used in URIs and blocks.
    #[must_use]
    pub const fn id(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd => 1,
        }
    }

    /// Inverse of [`Codec::id`].
    #[must_use]
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(Codec::None),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// What a block's payload holds, recorded inside (SSK) or beside (CHK URI
/// extra) the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DataFlags {
    /// The payload is a metadata document, not user data.
    pub metadata: bool,
    /// Compression applied to the document this block belongs to.
    pub codec: Codec,
}

impl Default for DataFlags {
    fn default() -> Self {
        DataFlags {
            metadata: false,
            codec: Codec::None,
        }
    }
}
