//! Direct disk access (DDA): the pure parts of TestDDA and FileHash.
//!
//! # Protocol flow (fred's)
//!
//! ```text
//! client: TestDDARequest  Directory=/d WantReadDirectory=true WantWriteDirectory=true
//! node:   writes a random token into /d/<random read file>
//! node:   TestDDAReply    Directory=/d ReadFilename=/d/r… WriteFilename=/d/w… ContentToWrite=<token2>
//! client: reads /d/r…, writes <token2> into /d/w…
//! client: TestDDAResponse Directory=/d ReadContent=<token>
//! node:   reads /d/w…, deletes both files
//! node:   TestDDAComplete Directory=/d ReadDirectoryAllowed=true WriteDirectoryAllowed=true
//! ```
//!
//! Afterwards `ClientPut UploadFrom=disk` may read files under `/d` and
//! `ClientGet ReturnType=disk` may write there. Instead of TestDDA, a
//! ClientPut from disk may carry `FileHash` = base64(SHA-256(salt ‖ file)),
//! salt = [`file_hash_salt`]: proof the client can read the file itself.
//!
//! The node does the file I/O and chooses the random names and tokens (from
//! an RNG it passes in); [`crate::Session`] keeps the challenges and results.

use std::path::{Component, Path};

/// The salt of a `FileHash`: `"<ConnectionIdentifier>-<Identifier>-"`.
/// The hash is SHA-256 over the salt's UTF-8 bytes followed by the file.
pub fn file_hash_salt(connection_identifier: &str, identifier: &str) -> String {
    format!("{connection_identifier}-{identifier}-")
}

/// Decodes a `FileHash` value: standard base64 (pyFreenet) or Freenet's
/// URL-safe alphabet (`~` and `-`), padding optional. `None` unless it is a
/// 32-byte digest.
pub fn decode_file_hash(value: &str) -> Option<[u8; 32]> {
    let bytes = decode_base64(value.trim())?;
    bytes.try_into().ok()
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'~' => 62,
            b'/' | b'-' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Whether `path` lies inside `dir` (or is `dir`), comparing path
/// components lexically. Both must be absolute and contain no `..`; the
/// node canonicalises them (resolving symlinks) before asking.
pub fn path_is_within(path: &Path, dir: &Path) -> bool {
    let clean = |p: &Path| {
        p.is_absolute()
            && p.components()
                .all(|c| !matches!(c, Component::ParentDir | Component::CurDir))
    };
    clean(path) && clean(dir) && path.starts_with(dir)
}

/// A TestDDA challenge the node issued and is waiting on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdaChallenge {
    /// The directory under test, as the client named it.
    pub directory: String,
    /// Read test: the file the node wrote and the token inside it.
    pub read: Option<(String, String)>,
    /// Write test: the file the client must write and the token to write.
    pub write: Option<(String, String)>,
}

/// What a directory was proven to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DdaAccess {
    /// The node may read files under it for this client.
    pub read: bool,
    /// The node may write files under it for this client.
    pub write: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64_both_alphabets() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(
            decode_base64("-~-~").unwrap(),
            decode_base64("/+/+").unwrap()
        );
        assert!(decode_base64("a b").is_none());
        let h = [7u8; 32];
        // 32 bytes of 7 in standard base64.
        assert_eq!(
            decode_file_hash("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").unwrap(),
            h
        );
        assert!(decode_file_hash("aGVsbG8=").is_none());
    }

    #[test]
    fn within() {
        assert!(path_is_within(Path::new("/a/b/c"), Path::new("/a/b")));
        assert!(path_is_within(Path::new("/a/b"), Path::new("/a/b")));
        assert!(!path_is_within(Path::new("/a/bc"), Path::new("/a/b")));
        assert!(!path_is_within(
            Path::new("/a/b/../../etc"),
            Path::new("/a/b")
        ));
        assert!(!path_is_within(Path::new("a/b"), Path::new("a")));
    }

    #[test]
    fn salt() {
        assert_eq!(file_hash_salt("1", "2"), "1-2-");
    }
}
