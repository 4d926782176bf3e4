use thiserror::Error;

/// Why a block was rejected or could not be decrypted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockError {
    /// Blocks have fixed sizes; this one does not.
    #[error("block has {got} bytes, a {kind} block has {want}")]
    WrongLength {
        /// Block kind name.
        kind: &'static str,
        /// Length received.
        got: usize,
        /// Length required.
        want: usize,
    },
    /// The routing key does not match the block's contents.
    #[error("block does not hash to its routing key")]
    HashMismatch,
    /// The public key in an SSK block does not match the URI's key hash.
    #[error("SSK block carries a public key that does not match the key hash")]
    WrongPublicKey,
    /// An SSK block's signature does not verify.
    #[error("SSK block signature does not verify")]
    BadSignature,
    /// Decryption failed: wrong crypto key or forged block.
    #[error("block does not decrypt with this key (wrong key or forged block)")]
    Decrypt,
    /// The decrypted header is malformed.
    #[error("decrypted block header is invalid: {0}")]
    BadHeader(&'static str),
    /// Data too large for one block.
    #[error("{got} bytes do not fit in one {kind} block (at most {max})")]
    TooLarge {
        /// Block kind name.
        kind: &'static str,
        /// Bytes offered.
        got: usize,
        /// Maximum payload.
        max: usize,
    },
    /// The key cannot be used for this operation (e.g. inserting with a
    /// request URI).
    #[error("{0}")]
    WrongKey(&'static str),
}

/// Why a URI could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriError {
    /// No `@` separating the key type from the key.
    #[error("not a key URI: expected TYPE@… (CHK@, SSK@, KSK@ or USK@)")]
    NoAt,
    /// Unknown key type before the `@`.
    #[error("unknown key type {0:?}: expected CHK, SSK, KSK or USK")]
    UnknownType(String),
    /// A base64 field does not decode.
    #[error("{field} is not valid Freenet base64")]
    BadBase64 {
        /// Which field.
        field: &'static str,
    },
    /// A field has the wrong length.
    #[error("{field} has {got} bytes, expected {want}")]
    BadLength {
        /// Which field.
        field: &'static str,
        /// Length found.
        got: usize,
        /// Length expected.
        want: usize,
    },
    /// The key part does not have the required comma-separated fields.
    #[error("{0} key needs routing key, crypto key and extra separated by commas")]
    MissingParts(&'static str),
    /// SSK/USK URI without a document name.
    #[error("{0} URI needs a document name after the key (…/name)")]
    MissingDocName(&'static str),
    /// USK URI without an edition number.
    #[error("USK URI needs /site/EDITION; edition {0:?} is not a number")]
    BadEdition(String),
    /// Empty KSK keyword.
    #[error("KSK URI needs a keyword")]
    EmptyKeyword,
    /// A percent escape is malformed or decodes to invalid UTF-8.
    #[error("bad percent-escape in URI path")]
    BadEscape,
    /// URI longer than we accept.
    #[error("URI is {0} bytes long; at most {max} accepted", max = crate::uri::MAX_URI_LEN)]
    TooLong(usize),
    /// A path component is not allowed (e.g. `..`).
    #[error("path component {0:?} is not allowed")]
    BadComponent(String),
}
