//! Metadata documents: what a URI points at when it is not plain data.
//!
//! Encoding (full description and test vectors in `docs/metadata.md`): a
//! CBOR array `[version, body]`, `version` = [`METADATA_VERSION`], `body` an
//! externally tagged map (`{"redirect": {...}}`, `{"splitfile": {...}}`, ...).
//! The version is read first (the body is skipped), so a future version is
//! reported as [`MetadataError::UnsupportedVersion`] rather than as garbage.
//!
//! Decoding is hostile-input safe: the input length is bounded before
//! parsing, CBOR nesting is bounded ([`MAX_CBOR_NESTING`]), byte strings are
//! read in chunks (no allocation sized by a declared length) and every
//! document is [validated](Metadata::validate) before anyone acts on its
//! counts.

use lichen_crypto::chk::{self, ChkKey};
use lichen_crypto::{Codec, DataFlags, RoutingKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version written in the envelope.
pub const METADATA_VERSION: u8 = 1;
/// Largest metadata document accepted (encoded, after decompression):
/// enough for the block list of a ~16 GiB splitfile.
pub const MAX_METADATA_LEN: usize = 64 * 1024 * 1024;
/// Deepest CBOR nesting accepted.
pub const MAX_CBOR_NESTING: usize = 64;
/// Deepest manifest nesting accepted (directories inside directories).
pub const MAX_MANIFEST_DEPTH: usize = 16;
/// Most data blocks in a segment.
pub const MAX_SEGMENT_DATA: u16 = 128;
/// Most check blocks in a segment.
pub const MAX_SEGMENT_CHECK: u16 = 128;
/// Bytes of one block reference in [`Segment::keys`]: routing key ||
/// crypto key.
pub const KEY_REF_LEN: usize = 64;
/// Longest MIME type accepted.
pub const MAX_MIME_LEN: usize = 256;
/// Longest manifest entry name accepted.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest redirect target accepted.
pub const MAX_TARGET_LEN: usize = lichen_crypto::uri::MAX_URI_LEN;

/// Why a metadata document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Not valid CBOR, or not the shape of a metadata document.
    #[error("metadata is not a valid CBOR document: {0}")]
    Cbor(String),
    /// A version this code does not know.
    #[error("metadata version {0} is not supported (this node reads version 1)")]
    UnsupportedVersion(u64),
    /// Longer than [`MAX_METADATA_LEN`].
    #[error("metadata document has {got} bytes, at most {max} accepted")]
    TooLarge {
        /// Length found.
        got: usize,
        /// Maximum.
        max: usize,
    },
    /// Well-formed CBOR with contents that do not make sense.
    #[error("invalid metadata: {0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, MetadataError> {
    Err(MetadataError::Invalid(msg.into()))
}

/// A metadata document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Metadata {
    /// Points at another URI (a CHK holding the data or more metadata).
    Redirect(Redirect),
    /// Small data carried in the metadata itself (a manifest's small
    /// files; a small file with a MIME type).
    Inline(Inline),
    /// A document split over many CHK blocks.
    Splitfile(Splitfile),
    /// A directory: name → entry.
    Manifest(Manifest),
}

/// Redirect to another URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// Target URI (printed form, may carry meta-strings).
    pub target: String,
    /// MIME type of the final document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// Size of the final document, if known (lets a fetch refuse a too big
    /// document before following the redirect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of the final document (manifests: detects unchanged files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Hash>,
}

/// Data carried inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inline {
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// Codec of `data` ([`Codec::id`]).
    pub codec: u8,
    /// Size of the document after decompression.
    pub size: u64,
    /// The (possibly compressed) bytes.
    #[serde(with = "bytes")]
    pub data: Vec<u8>,
    /// SHA-256 of the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Hash>,
}

/// A document split into segments of CHK blocks with Reed-Solomon checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splitfile {
    /// Size of the document (after decompression).
    pub size: u64,
    /// Size of the stored (compressed) stream: the concatenated data
    /// blocks truncated to this length.
    pub compressed_size: u64,
    /// Codec of the stored stream ([`Codec::id`]).
    pub codec: u8,
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// SHA-256 of the document, checked after reassembly.
    pub sha256: Hash,
    /// The reassembled document is itself a metadata document
    /// (multi-level metadata).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metadata: bool,
    /// Segments in order.
    pub segments: Vec<Segment>,
}

/// One segment: `data` data blocks followed by `check` Reed-Solomon
/// recovery blocks; any `data` of them rebuild the segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Number of data blocks (1..=128).
    pub data: u16,
    /// Number of check blocks (1..=128).
    pub check: u16,
    /// `(data + check)` block references of [`KEY_REF_LEN`] bytes each:
    /// routing key (32) || crypto key (32), data blocks first.
    #[serde(with = "bytes")]
    pub keys: Vec<u8>,
}

impl Segment {
    /// Total blocks in the segment.
    #[must_use]
    pub fn total(&self) -> usize {
        usize::from(self.data) + usize::from(self.check)
    }

    /// The CHK key of block `i` (data blocks first), or `None` if out of
    /// range.
    #[must_use]
    pub fn key(&self, i: usize) -> Option<ChkKey> {
        let r = self.keys.get(i * KEY_REF_LEN..(i + 1) * KEY_REF_LEN)?;
        let mut rk = [0u8; 32];
        let mut ck = [0u8; 32];
        rk.copy_from_slice(&r[..32]);
        ck.copy_from_slice(&r[32..]);
        Some(ChkKey {
            routing_key: RoutingKey(rk),
            crypto_key: ck,
            flags: DataFlags::default(),
        })
    }
}

/// A directory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Entry served when the URI names the directory itself (usually
    /// `index.html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Entries by name (one path component each); a nested directory is a
    /// [`Metadata::Manifest`].
    pub entries: BTreeMap<String, Metadata>,
}

/// A SHA-256 digest, encoded as a CBOR byte string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hash(#[serde(with = "bytes32")] pub [u8; 32]);

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl Metadata {
    /// Encode as CBOR (`[1, body]`).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail and every type here serialises.
        let _ = ciborium::into_writer(&(METADATA_VERSION, self), &mut out);
        out
    }

    /// Decode and [validate](Metadata::validate) a document.
    ///
    /// # Errors
    /// [`MetadataError`] naming what is wrong; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetadataError> {
        if bytes.len() > MAX_METADATA_LEN {
            return Err(MetadataError::TooLarge {
                got: bytes.len(),
                max: MAX_METADATA_LEN,
            });
        }
        let (version, _): (u64, serde::de::IgnoredAny) =
            ciborium::de::from_reader_with_recursion_limit(bytes, MAX_CBOR_NESTING)
                .map_err(|e| MetadataError::Cbor(e.to_string()))?;
        if version != u64::from(METADATA_VERSION) {
            return Err(MetadataError::UnsupportedVersion(version));
        }
        let (_, m): (u8, Metadata) =
            ciborium::de::from_reader_with_recursion_limit(bytes, MAX_CBOR_NESTING)
                .map_err(|e| MetadataError::Cbor(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// The MIME type this document declares, if any.
    #[must_use]
    pub fn mime(&self) -> Option<&str> {
        match self {
            Metadata::Redirect(r) => r.mime.as_deref(),
            Metadata::Inline(i) => i.mime.as_deref(),
            Metadata::Splitfile(s) => s.mime.as_deref(),
            Metadata::Manifest(_) => None,
        }
    }

    /// Check every count, length and name.
    ///
    /// # Errors
    /// [`MetadataError::Invalid`].
    pub fn validate(&self) -> Result<(), MetadataError> {
        self.validate_at(0)
    }

    fn validate_at(&self, depth: usize) -> Result<(), MetadataError> {
        check_mime(self.mime())?;
        match self {
            Metadata::Redirect(r) => {
                if r.target.is_empty() || r.target.len() > MAX_TARGET_LEN {
                    return invalid("redirect target is empty or too long");
                }
                Ok(())
            }
            Metadata::Inline(i) => {
                let codec = codec_of(i.codec)?;
                if codec == Codec::None && i.size != i.data.len() as u64 {
                    return invalid("inline size does not match its data");
                }
                Ok(())
            }
            Metadata::Splitfile(s) => s.validate(),
            Metadata::Manifest(m) => {
                if depth >= MAX_MANIFEST_DEPTH {
                    return invalid("manifests nested too deeply");
                }
                if let Some(d) = &m.default {
                    check_name(d)?;
                }
                for (name, e) in &m.entries {
                    check_name(name)?;
                    e.validate_at(depth + 1)?;
                }
                Ok(())
            }
        }
    }
}

impl Splitfile {
    /// Check segment counts, key lengths and sizes against each other.
    ///
    /// # Errors
    /// [`MetadataError::Invalid`].
    pub fn validate(&self) -> Result<(), MetadataError> {
        let codec = codec_of(self.codec)?;
        if codec == Codec::None && self.size != self.compressed_size {
            return invalid("uncompressed splitfile with size != compressed size");
        }
        if self.segments.is_empty() {
            return invalid("splitfile without segments");
        }
        let mut data_blocks: u64 = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.data == 0 || seg.data > MAX_SEGMENT_DATA {
                return invalid(format!(
                    "segment {i} has {} data blocks (1..={MAX_SEGMENT_DATA} allowed)",
                    seg.data
                ));
            }
            if seg.check == 0 || seg.check > MAX_SEGMENT_CHECK {
                return invalid(format!(
                    "segment {i} has {} check blocks (1..={MAX_SEGMENT_CHECK} allowed)",
                    seg.check
                ));
            }
            if seg.keys.len() != seg.total() * KEY_REF_LEN {
                return invalid(format!(
                    "segment {i} lists {} key bytes for {} blocks",
                    seg.keys.len(),
                    seg.total()
                ));
            }
            data_blocks += u64::from(seg.data);
        }
        let block = chk::PAYLOAD_LEN as u64;
        let capacity = data_blocks * block;
        if self.compressed_size > capacity || self.compressed_size + block <= capacity {
            return invalid(format!(
                "compressed size {} does not match {data_blocks} data blocks",
                self.compressed_size
            ));
        }
        Ok(())
    }

    /// Data blocks (what a fetch needs) and all blocks.
    #[must_use]
    pub fn block_counts(&self) -> (u64, u64) {
        self.segments.iter().fold((0, 0), |(d, t), s| {
            (d + u64::from(s.data), t + s.total() as u64)
        })
    }
}

pub(crate) fn codec_of(id: u8) -> Result<Codec, MetadataError> {
    Codec::from_id(id).ok_or_else(|| MetadataError::Invalid(format!("unknown codec {id}")))
}

fn check_mime(m: Option<&str>) -> Result<(), MetadataError> {
    match m {
        Some(m) if m.len() > MAX_MIME_LEN || m.chars().any(char::is_control) => {
            invalid("MIME type too long or has control characters")
        }
        _ => Ok(()),
    }
}

fn check_name(n: &str) -> Result<(), MetadataError> {
    if n.is_empty()
        || n.len() > MAX_NAME_LEN
        || n == "."
        || n == ".."
        || n.contains('/')
        || n.chars().any(char::is_control)
    {
        // The name itself stays out of the message: it names what was
        // fetched or inserted, and errors may be logged.
        return invalid(
            "a manifest entry name is empty, '.' or '..', too long, or has a '/' or control characters",
        );
    }
    Ok(())
}

/// `Vec<u8>` as a CBOR byte string (serde would write an array of ints).
mod bytes {
    use serde::{de, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Visitor)
    }

    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
}

/// `[u8; 32]` as a 32-byte CBOR byte string.
mod bytes32 {
    use serde::{de, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        d.deserialize_bytes(Visitor)
    }

    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = [u8; 32];
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a 32-byte string")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<[u8; 32], E> {
            <[u8; 32]>::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
        }
    }
}
