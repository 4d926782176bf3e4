//! Error types of inserts and fetches, and [`ErrorKind`]: who is at fault.
//!
//! The kinds are this crate's and the node's one vocabulary of failure:
//! the node maps a kind (with the error's variant where FCP tells cases
//! of one kind apart) to the FCP `GetFailed` / `PutFailed` code in one
//! place, and a kind to an HTTP status in one other (`docs/architecture.md`,
//! "Errors"). Nothing here knows FCP numbers.
//!
//! Names the requester gave (URIs, paths, file names) are held as
//! [`Sensitive`]: `Display` shows `[scrubbed]` in their place, so an error
//! may be logged; [`FetchError::describe`] and [`InsertError::describe`]
//! give the whole text for the requester who gave them.

use crate::io::{SinkError, SourceError};
use crate::metadata::MetadataError;
use lichen_crypto::{BlockError, FreenetUri, UriError};
use lichen_safelog::Sensitive;

/// Who is at fault when a fetch or an insert fails, and so what can help:
/// the requester changing the request, the network at another time, or
/// the node's operator. Models: arti's `tor_error::ErrorKind`, rustls's
/// `PeerMisbehaved` / `PeerIncompatible`.
///
/// Not `non_exhaustive`: a new kind must be placed in the node's FCP and
/// HTTP mappings, whose matches name every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The requester's URI cannot be parsed, or cannot be used for this
    /// operation (an insert URI to fetch, a request URI to insert to, a
    /// key type Lichen cannot decode, a bad file name in a site).
    BadUri,
    /// The URI's path goes on past a file.
    BadPath,
    /// The site has nothing under the URI's path: no such file, or a
    /// folder without a default document.
    NotInSite,
    /// Larger than a limit: the requester's maximum size, the metadata
    /// this node accepts, or the room it has to hold an insert.
    TooBig,
    /// The key already holds different data (SSKs, KSKs and USK editions
    /// are written once).
    Collision,
    /// The requester cancelled.
    Cancelled,
    /// The document is damaged or hostile (its inserter, or whoever
    /// altered it, is at fault): metadata that does not parse, a block
    /// that does not decrypt, a redirect cycle, a hash that does not
    /// match, segments that do not decode.
    BadContent,
    /// A newer edition of the USK exists: the requester should follow it.
    NewerEdition,
    /// The data was not found in the network: no peer had it, not enough
    /// of its blocks, or the key failed there recently.
    NotFound,
    /// The request could not be routed (too few peers).
    RouteNotFound,
    /// Peers were overloaded or timed out.
    Overloaded,
    /// This node's disk or store failed (writing the output, reading the
    /// upload, flushing or recording an insert).
    LocalDisk,
    /// This node is shutting down.
    ShuttingDown,
    /// A bug in Lichen.
    Internal,
}

/// Who a failure's [`ErrorKind`] blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The requester: a different request can succeed.
    Requester,
    /// The document: whoever inserted or altered it.
    Content,
    /// The network: the same request may succeed later.
    Network,
    /// This node: its disk, its state, or a bug.
    Node,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::BadUri,
        ErrorKind::BadPath,
        ErrorKind::NotInSite,
        ErrorKind::TooBig,
        ErrorKind::Collision,
        ErrorKind::Cancelled,
        ErrorKind::BadContent,
        ErrorKind::NewerEdition,
        ErrorKind::NotFound,
        ErrorKind::RouteNotFound,
        ErrorKind::Overloaded,
        ErrorKind::LocalDisk,
        ErrorKind::ShuttingDown,
        ErrorKind::Internal,
    ];

    /// Who is at fault.
    #[must_use]
    pub fn fault(self) -> Fault {
        match self {
            ErrorKind::BadUri
            | ErrorKind::BadPath
            | ErrorKind::NotInSite
            | ErrorKind::TooBig
            | ErrorKind::Collision
            | ErrorKind::Cancelled
            | ErrorKind::NewerEdition => Fault::Requester,
            ErrorKind::BadContent => Fault::Content,
            ErrorKind::NotFound | ErrorKind::RouteNotFound | ErrorKind::Overloaded => {
                Fault::Network
            }
            ErrorKind::LocalDisk | ErrorKind::ShuttingDown | ErrorKind::Internal => Fault::Node,
        }
    }

    /// True if the same request may succeed later (the network is at
    /// fault), false if the request, the document or the node must change.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        self.fault() == Fault::Network
    }
}

/// An error that says who is at fault (arti's `HasKind`).
pub trait HasKind {
    /// The kind of failure.
    fn kind(&self) -> ErrorKind;
}

/// Why a fetch failed (the cases of fred's `FetchExceptionMode` that
/// Lichen meets); [`HasKind::kind`] says who is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URI cannot be fetched (insert-only form, Freenet CHK, ...).
    #[error("invalid URI: {0}")]
    InvalidUri(Sensitive<String>),
    /// The top block of the document was not found.
    #[error("data not found")]
    DataNotFound,
    /// The request could not be routed.
    #[error("route not found")]
    RouteNotFound,
    /// Downstream overload.
    #[error("rejected: overload")]
    Overload,
    /// The key failed recently.
    #[error("recently failed")]
    RecentlyFailed,
    /// Cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// A block was found but does not decrypt under its URI's key.
    #[error("block found but cannot be decoded: {0}")]
    BlockDecode(BlockError),
    /// The metadata is malformed or hostile.
    #[error("{0}")]
    InvalidMetadata(#[from] MetadataError),
    /// Too many redirects / metadata levels / manifest steps (a cycle or a
    /// hostile chain).
    #[error("too much recursion: more than {limit} metadata steps")]
    TooMuchRecursion {
        /// The bound that was hit.
        limit: usize,
    },
    /// The URI has path components left over after reaching a file (one
    /// left-over component is accepted as a file name).
    #[error("too many path components: {0:?} left after reaching a file")]
    TooManyPathComponents(Sensitive<Vec<String>>),
    /// The URI names a directory without a default document.
    #[error("not enough path components: the directory has no default document")]
    NotEnoughPathComponents,
    /// The manifest has no entry by this name.
    #[error("{0:?} not found in the manifest")]
    NotInManifest(Sensitive<String>),
    /// The document is larger than the caller's `max_size`.
    #[error("document is {size} bytes, more than the {max} allowed")]
    TooBig {
        /// Declared size.
        size: u64,
        /// The caller's limit.
        max: u64,
    },
    /// A metadata document is larger than we accept.
    #[error("metadata is {size} bytes, more than the {max} accepted")]
    TooBigMetadata {
        /// Declared size.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// Too few blocks of a segment could be fetched.
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
    /// size is wrong.
    #[error("splitfile decode failed: {0}")]
    SplitfileDecode(String),
    /// The reassembled document does not match the SHA-256 in its
    /// metadata.
    #[error("content hash mismatch: the reassembled document is not the one described")]
    HashMismatch,
    /// A newer edition of the USK exists.
    #[error("permanent redirect to a newer edition")]
    PermanentRedirect {
        /// The URI to fetch instead.
        new_uri: Box<FreenetUri>,
    },
    /// Writing the output failed.
    #[error("writing the output failed: {0}")]
    Write(#[from] std::io::Error),
    /// The block source failed in a way that is not "not found".
    #[error("internal error: {0}")]
    Internal(String),
}

impl HasKind for FetchError {
    fn kind(&self) -> ErrorKind {
        match self {
            FetchError::InvalidUri(_) => ErrorKind::BadUri,
            FetchError::TooManyPathComponents(_) => ErrorKind::BadPath,
            FetchError::NotEnoughPathComponents | FetchError::NotInManifest(_) => {
                ErrorKind::NotInSite
            }
            FetchError::TooBig { .. } | FetchError::TooBigMetadata { .. } => ErrorKind::TooBig,
            FetchError::Cancelled => ErrorKind::Cancelled,
            FetchError::BlockDecode(_)
            | FetchError::InvalidMetadata(_)
            | FetchError::TooMuchRecursion { .. }
            | FetchError::SplitfileDecode(_)
            | FetchError::HashMismatch => ErrorKind::BadContent,
            FetchError::PermanentRedirect { .. } => ErrorKind::NewerEdition,
            FetchError::DataNotFound
            | FetchError::RecentlyFailed
            | FetchError::NotEnoughBlocks { .. } => ErrorKind::NotFound,
            FetchError::RouteNotFound => ErrorKind::RouteNotFound,
            FetchError::Overload => ErrorKind::Overloaded,
            FetchError::Write(_) => ErrorKind::LocalDisk,
            FetchError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl FetchError {
    /// The whole message with the names it holds shown, for the requester
    /// who gave them (an FCP reply, the gateway's page); never for a log
    /// (`Display` scrubs them).
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            FetchError::InvalidUri(s) => format!("invalid URI: {}", s.expose()),
            FetchError::TooManyPathComponents(p) => format!(
                "too many path components: {:?} left after reaching a file",
                p.expose()
            ),
            FetchError::NotInManifest(n) => format!("{:?} not found in the manifest", n.expose()),
            e => e.to_string(),
        }
    }

    /// True if retrying later may succeed (network conditions), false if
    /// the document or URI itself is at fault.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

impl From<UriError> for FetchError {
    fn from(e: UriError) -> Self {
        FetchError::InvalidUri(e.to_string().into())
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

/// Why an insert failed (the cases of fred's `InsertExceptionMode` that
/// Lichen meets); [`HasKind::kind`] says who is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InsertError {
    /// The target URI cannot be inserted to (a request URI, ...).
    #[error("invalid insert URI: {0}")]
    InvalidUri(Sensitive<String>),
    /// Reading the document failed.
    #[error("reading the document failed: {0}")]
    Read(#[from] std::io::Error),
    /// An SSK/KSK/USK slot already holds different data.
    #[error("collision: the key already holds different data")]
    Collision,
    /// The insert could not be routed.
    #[error("route not found")]
    RouteNotFound,
    /// Downstream overload.
    #[error("rejected: overload")]
    Overload,
    /// Cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A site has a bad file name or conflicting paths.
    #[error("invalid site: {0}")]
    InvalidSite(Sensitive<String>),
    /// The document is too large for the metadata limits.
    #[error("document too large: {0}")]
    TooBig(String),
    /// This node could not read or keep the data (its store, its records
    /// of inserts waiting for peers, an upload it holds).
    #[error("{0}")]
    Local(String),
    /// The sink or an encoder failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl HasKind for InsertError {
    fn kind(&self) -> ErrorKind {
        match self {
            InsertError::InvalidUri(_) | InsertError::InvalidSite(_) => ErrorKind::BadUri,
            InsertError::Read(_) | InsertError::Local(_) => ErrorKind::LocalDisk,
            InsertError::Collision => ErrorKind::Collision,
            InsertError::RouteNotFound => ErrorKind::RouteNotFound,
            InsertError::Overload => ErrorKind::Overloaded,
            InsertError::Cancelled => ErrorKind::Cancelled,
            InsertError::TooBig(_) => ErrorKind::TooBig,
            InsertError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl InsertError {
    /// The whole message with the names it holds shown, for the requester
    /// who gave them (an FCP reply, the gateway's page); never for a log
    /// (`Display` scrubs them).
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            InsertError::InvalidUri(s) => format!("invalid insert URI: {}", s.expose()),
            InsertError::InvalidSite(s) => format!("invalid site: {}", s.expose()),
            e => e.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_scrubs_the_names_and_describe_shows_them() {
        let cases: Vec<(String, String)> = vec![
            {
                let e = FetchError::NotInManifest(String::from("secret-page.html").into());
                (e.to_string(), e.describe())
            },
            {
                let e = FetchError::TooManyPathComponents(
                    vec![String::from("secret-page.html"), String::from("x")].into(),
                );
                (e.to_string(), e.describe())
            },
            {
                let e = FetchError::from(UriError::BadComponent("secret-page.html".into()));
                (e.to_string(), e.describe())
            },
            {
                let e = InsertError::InvalidSite(
                    String::from("\"secret-page.html\" is both a file and a directory").into(),
                );
                (e.to_string(), e.describe())
            },
            {
                let e = InsertError::InvalidUri(String::from("secret-page.html").into());
                (e.to_string(), e.describe())
            },
        ];
        for (shown, described) in cases {
            assert!(!shown.contains("secret-page"), "{shown}");
            assert!(shown.contains(lichen_safelog::SCRUBBED), "{shown}");
            assert!(described.contains("secret-page.html"), "{described}");
        }
        assert_eq!(
            FetchError::NotInManifest(String::from("a.html").into()).describe(),
            "\"a.html\" not found in the manifest"
        );
        // Errors without names describe themselves as they display.
        assert_eq!(FetchError::DataNotFound.describe(), "data not found");
    }

    #[test]
    fn kinds_are_listed_once_and_only_the_network_is_retried() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(seen.insert(*k), "{k:?} twice");
            assert_eq!(k.is_retryable(), k.fault() == Fault::Network, "{k:?}");
        }
        assert_eq!(ErrorKind::ALL.len(), 14);
        assert!(FetchError::RecentlyFailed.is_retryable());
        assert!(!FetchError::HashMismatch.is_retryable());
        assert_eq!(InsertError::Local("x".into()).kind(), ErrorKind::LocalDisk);
    }
}
