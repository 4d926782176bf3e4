//! The crate's one error type.

use lichen_crypto::BlockError;
use std::path::PathBuf;
use thiserror::Error;

/// Why a store operation failed.
///
/// A block that is missing or that fails verification on read is *not* an
/// error: reads answer `Ok(None)` for both (a bad block is deleted first).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The block offered to `put` does not verify against its routing key
    /// (wrong length, hash mismatch, bad SSK signature). Nothing was stored.
    #[error("refusing to store a block that does not verify: {0}")]
    InvalidBlock(#[from] BlockError),
    /// The store was created with a different secret (for example the node
    /// was started with the wrong passphrase). Nothing was changed on disk:
    /// the caller should ask again rather than discard the store.
    #[error("the store at {path} was created with a different secret (wrong passphrase?)")]
    WrongSecret {
        /// Store directory (empty for an in-memory store).
        path: PathBuf,
    },
    /// The store was written by an unknown (newer) format version. `SledStore::open`
    /// treats this like corruption: the directory is moved aside.
    #[error("the store has unsupported format version {found:?}")]
    UnsupportedFormat {
        /// The format record found.
        found: Vec<u8>,
    },
    /// A metadata name or value is not acceptable.
    #[error("invalid metadata entry: {0}")]
    InvalidMetadata(&'static str),
    /// sled reported an error during normal operation.
    #[error("sled error while trying to {context}: {source}")]
    Sled {
        /// What the store was doing.
        context: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A filesystem operation around the store failed (opening, moving a
    /// corrupt store aside).
    #[error("I/O error while trying to {context} ({path}): {source}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn sled(context: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
        move |source| StoreError::Sled { context, source }
    }
}
