//! Error types of inserts and fetches, with their FCP codes.

use crate::io::{SinkError, SourceError};
use crate::metadata::MetadataError;
use lichen_crypto::{BlockError, FreenetUri, UriError};

/// Why a fetch failed. [`FetchError::fcp_code`] gives the FCP `GetFailed`
/// code (fred's `FetchExceptionMode`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URI cannot be fetched (insert-only form, Freenet CHK, ...). FCP 20.
    #[error("invalid URI: {0}")]
    InvalidUri(String),
    /// The top block of the document was not found. FCP 13.
    #[error("data not found")]
    DataNotFound,
    /// The request could not be routed. FCP 14.
    #[error("route not found")]
    RouteNotFound,
    /// Downstream overload. FCP 15.
    #[error("rejected: overload")]
    Overload,
    /// The key failed recently. FCP 30.
    #[error("recently failed")]
    RecentlyFailed,
    /// Cancelled by the caller. FCP 25.
    #[error("cancelled")]
    Cancelled,
    /// A block was found but does not decrypt under its URI's key. FCP 6.
    #[error("block found but cannot be decoded: {0}")]
    BlockDecode(BlockError),
    /// The metadata is malformed or hostile. FCP 4.
    #[error("{0}")]
    InvalidMetadata(#[from] MetadataError),
    /// Too many redirects / metadata levels / manifest steps (a cycle or a
    /// hostile chain). FCP 9.
    #[error("too much recursion: more than {limit} metadata steps")]
    TooMuchRecursion {
        /// The bound that was hit.
        limit: usize,
    },
    /// The URI has path components left over after reaching a file (one
    /// left-over component is accepted as a file name). FCP 11.
    #[error("too many path components: {0:?} left after reaching a file")]
    TooManyPathComponents(Vec<String>),
    /// The URI names a directory without a default document. FCP 24.
    #[error("not enough path components: the directory has no default document")]
    NotEnoughPathComponents,
    /// The manifest has no entry by this name. FCP 10.
    #[error("{0:?} not found in the manifest")]
    NotInManifest(String),
    /// The document is larger than the caller's `max_size`. FCP 21.
    #[error("document is {size} bytes, more than the {max} allowed")]
    TooBig {
        /// Declared size.
        size: u64,
        /// The caller's limit.
        max: u64,
    },
    /// A metadata document is larger than we accept. FCP 22.
    #[error("metadata is {size} bytes, more than the {max} accepted")]
    TooBigMetadata {
        /// Declared size.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// Too few blocks of a segment could be fetched. FCP 28.
    #[error("not enough blocks to rebuild segment {segment}: have {have} of the {needed} needed ({total} in the segment)")]
    NotEnoughBlocks {
        /// Segment index.
        segment: usize,
        /// Valid blocks obtained.
        have: usize,
        /// Blocks needed (the segment's data block count).
        needed: usize,
        /// Blocks in the segment.
        total: usize,
    },
    /// Reed-Solomon decoding or decompression failed, or the reassembled
    /// size is wrong. FCP 35.
    #[error("splitfile decode failed: {0}")]
    SplitfileDecode(String),
    /// The reassembled document does not match the SHA-256 in its
    /// metadata. FCP 34.
    #[error("content hash mismatch: the reassembled document is not the one described")]
    HashMismatch,
    /// A newer edition of the USK exists. FCP 27 (HTTP 301).
    #[error("permanent redirect to a newer edition")]
    PermanentRedirect {
        /// The URI to fetch instead.
        new_uri: Box<FreenetUri>,
    },
    /// Writing the output failed. FCP 12.
    #[error("writing the output failed: {0}")]
    Write(#[from] std::io::Error),
    /// The block source failed in a way that is not "not found". FCP 17.
    #[error("internal error: {0}")]
    Internal(String),
}

impl FetchError {
    /// The FCP `GetFailed` code.
    #[must_use]
    pub fn fcp_code(&self) -> u16 {
        match self {
            FetchError::InvalidUri(_) => 20,
            FetchError::DataNotFound => 13,
            FetchError::RouteNotFound => 14,
            FetchError::Overload => 15,
            FetchError::RecentlyFailed => 30,
            FetchError::Cancelled => 25,
            FetchError::BlockDecode(_) => 6,
            FetchError::InvalidMetadata(_) => 4,
            FetchError::TooMuchRecursion { .. } => 9,
            FetchError::TooManyPathComponents(_) => 11,
            FetchError::NotEnoughPathComponents => 24,
            FetchError::NotInManifest(_) => 10,
            FetchError::TooBig { .. } => 21,
            FetchError::TooBigMetadata { .. } => 22,
            FetchError::NotEnoughBlocks { .. } => 28,
            FetchError::SplitfileDecode(_) => 35,
            FetchError::HashMismatch => 34,
            FetchError::PermanentRedirect { .. } => 27,
            FetchError::Write(_) => 12,
            FetchError::Internal(_) => 17,
        }
    }

    /// True if retrying later may succeed (network conditions), false if
    /// the document or URI itself is at fault.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            FetchError::DataNotFound
                | FetchError::RouteNotFound
                | FetchError::Overload
                | FetchError::RecentlyFailed
                | FetchError::NotEnoughBlocks { .. }
        )
    }
}

impl From<UriError> for FetchError {
    fn from(e: UriError) -> Self {
        FetchError::InvalidUri(e.to_string())
    }
}

impl From<SourceError> for FetchError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::NotFound => FetchError::DataNotFound,
            SourceError::RouteNotFound => FetchError::RouteNotFound,
            SourceError::RecentlyFailed => FetchError::RecentlyFailed,
            SourceError::Overload => FetchError::Overload,
            SourceError::Cancelled => FetchError::Cancelled,
            SourceError::Other(s) => FetchError::Internal(s),
        }
    }
}

/// Why an insert failed. [`InsertError::fcp_code`] gives the FCP
/// `PutFailed` code (fred's `InsertExceptionMode`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InsertError {
    /// The target URI cannot be inserted to (a request URI, ...). FCP 1.
    #[error("invalid insert URI: {0}")]
    InvalidUri(String),
    /// Reading the document failed. FCP 2.
    #[error("reading the document failed: {0}")]
    Read(#[from] std::io::Error),
    /// An SSK/KSK/USK slot already holds different data. FCP 9.
    #[error("collision: the key already holds different data")]
    Collision,
    /// The insert could not be routed. FCP 5.
    #[error("route not found")]
    RouteNotFound,
    /// Downstream overload. FCP 4.
    #[error("rejected: overload")]
    Overload,
    /// Cancelled. FCP 10.
    #[error("cancelled")]
    Cancelled,
    /// A site has a bad file name or conflicting paths. FCP 1.
    #[error("invalid site: {0}")]
    InvalidSite(String),
    /// The document is too large for the metadata limits. FCP 14.
    #[error("document too large: {0}")]
    TooBig(String),
    /// The sink or an encoder failed. FCP 3.
    #[error("internal error: {0}")]
    Internal(String),
}

impl InsertError {
    /// The FCP `PutFailed` code.
    #[must_use]
    pub fn fcp_code(&self) -> u16 {
        match self {
            InsertError::InvalidUri(_) | InsertError::InvalidSite(_) => 1,
            InsertError::Read(_) => 2,
            InsertError::Internal(_) => 3,
            InsertError::Overload => 4,
            InsertError::RouteNotFound => 5,
            InsertError::Collision => 9,
            InsertError::Cancelled => 10,
            InsertError::TooBig(_) => 14,
        }
    }
}

impl From<SinkError> for InsertError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Collision => InsertError::Collision,
            SinkError::RouteNotFound => InsertError::RouteNotFound,
            SinkError::Overload => InsertError::Overload,
            SinkError::Cancelled => InsertError::Cancelled,
            SinkError::Other(s) => InsertError::Internal(s),
        }
    }
}

impl From<BlockError> for InsertError {
    fn from(e: BlockError) -> Self {
        InsertError::Internal(e.to_string())
    }
}
