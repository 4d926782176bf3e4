//! Freenet-style key URIs.
//!
//! ```text
//! uri   = [ "freenet:" ] key *( "/" meta )
//! key   = "CHK@" [ rk "," ck "," extra ]        ; bare "CHK@" = insert, key from content
//!       | "SSK@" k "," ck "," extra "/" docname ; k = pubkey hash (request) or Ed25519 seed (insert)
//!       | "SSK@"                                 ; insert under a fresh random SSK
//!       | "KSK@" keyword
//!       | "USK@" k "," ck "," extra "/" site "/" edition
//! ```
//!
//! Binary fields use Freenet's base64 ([`crate::b64`]). Document names,
//! keywords and meta-strings are percent-decoded when parsed and
//! percent-encoded (only where needed) when printed. Full grammar and test
//! vectors: `docs/formats.md`.

use crate::chk::{self, ChkKey};
use crate::ssk::{self, SskPrivate, SskPublic};
use crate::{b64, BlockError, RoutingKey, UriError};
use std::fmt;

/// Longest URI accepted, in bytes.
pub const MAX_URI_LEN: usize = 16 * 1024;
/// Longest extra field accepted, in bytes.
const MAX_EXTRA_LEN: usize = 32;

/// The key part of an SSK or USK: either the public hash (request URI) or
/// the private seed (insert URI).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SskKey {
    /// Request URI: anyone may read.
    Public(SskPublic),
    /// Insert URI: carries the private key.
    Private(SskPrivate),
}

impl SskKey {
    /// The request half.
    #[must_use]
    pub fn public(&self) -> SskPublic {
        match self {
            SskKey::Public(p) => *p,
            SskKey::Private(k) => k.public(),
        }
    }

    /// The private half, if this is an insert key.
    #[must_use]
    pub fn private(&self) -> Option<&SskPrivate> {
        match self {
            SskKey::Public(_) => None,
            SskKey::Private(k) => Some(k),
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SskKey::Public(p) => write!(
                f,
                "{},{},{}",
                b64::encode(&p.pubkey_hash),
                b64::encode(&p.crypto_key),
                b64::encode(&ssk::EXTRA_REQUEST)
            ),
            SskKey::Private(k) => write!(
                f,
                "{},{},{}",
                b64::encode(&k.seed()),
                b64::encode(&k.crypto_key),
                b64::encode(&ssk::EXTRA_INSERT)
            ),
        }
    }
}

/// What a URI names.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KeyUri {
    /// A content-hash key. The extra field is kept as written so that URIs
    /// from other software still parse; [`KeyUri::chk_key`] interprets it.
    Chk {
        /// Routing key.
        routing_key: RoutingKey,
        /// Decryption key.
        crypto_key: [u8; 32],
        /// Raw extra field.
        extra: Vec<u8>,
    },
    /// `CHK@` with no key: an insert whose key is computed from the content.
    ChkInsert,
    /// `SSK@` with no key: an insert under a freshly generated SSK.
    SskInsertNew,
    /// A document in a signed subspace.
    Ssk {
        /// Request or insert key.
        key: SskKey,
        /// Document name (may be empty in a key printed by GenerateSSK).
        docname: String,
    },
    /// A keyword key.
    Ksk {
        /// The keyword.
        keyword: String,
    },
    /// An edition of an updatable site.
    Usk {
        /// Request or insert key.
        key: SskKey,
        /// Site name.
        site: String,
        /// Edition number; negative means "search for editions after |n|".
        edition: i64,
    },
}

impl KeyUri {
    /// Interpret a CHK URI as a [`ChkKey`].
    ///
    /// # Errors
    /// [`BlockError::WrongKey`] if this is not a CHK with a key, or
    /// [`BlockError::BadHeader`] if the extra field is not Lichen's.
    pub fn chk_key(&self) -> Result<ChkKey, BlockError> {
        match self {
            KeyUri::Chk {
                routing_key,
                crypto_key,
                extra,
            } => Ok(ChkKey {
                routing_key: *routing_key,
                crypto_key: *crypto_key,
                flags: chk::parse_extra(extra)?,
            }),
            _ => Err(BlockError::WrongKey("not a CHK request URI")),
        }
    }

    /// The SSK (public key, document name) this URI maps to: SSKs directly,
    /// KSKs by derivation, USKs as `site-edition`.
    #[must_use]
    pub fn ssk_target(&self) -> Option<(SskPublic, String)> {
        match self {
            KeyUri::Ssk { key, docname } => Some((key.public(), docname.clone())),
            KeyUri::Ksk { keyword } => {
                Some((SskPrivate::from_keyword(keyword).public(), keyword.clone()))
            }
            KeyUri::Usk { key, site, edition } => {
                Some((key.public(), usk_docname(site, edition.unsigned_abs())))
            }
            _ => None,
        }
    }

    /// The private key and document name to insert this URI's block with.
    #[must_use]
    pub fn ssk_insert_target(&self) -> Option<(SskPrivate, String)> {
        match self {
            KeyUri::Ssk {
                key: SskKey::Private(k),
                docname,
            } => Some((k.clone(), docname.clone())),
            KeyUri::Ksk { keyword } => Some((SskPrivate::from_keyword(keyword), keyword.clone())),
            KeyUri::Usk {
                key: SskKey::Private(k),
                site,
                edition,
            } => Some((k.clone(), usk_docname(site, edition.unsigned_abs()))),
            _ => None,
        }
    }
}

/// The SSK document name that holds edition `edition` of USK site `site`.
#[must_use]
pub fn usk_docname(site: &str, edition: u64) -> String {
    format!("{site}-{edition}")
}

/// A parsed URI: a key plus the meta-strings (path inside a manifest, or a
/// file name) after it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FreenetUri {
    /// The key.
    pub key: KeyUri,
    /// Path components after the key (already percent-decoded).
    pub meta: Vec<String>,
}

impl FreenetUri {
    /// Parse a URI. Accepts an optional `freenet:` prefix and leading `/`.
    ///
    /// # Errors
    /// A [`UriError`] naming what is wrong.
    pub fn parse(input: &str) -> Result<Self, UriError> {
        if input.len() > MAX_URI_LEN {
            return Err(UriError::TooLong(input.len()));
        }
        let mut s = input.trim_matches(|c: char| c.is_ascii_whitespace());
        if let Some(rest) = s
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("freenet:"))
            .and_then(|_| s.get(8..))
        {
            s = rest;
        }
        let s = s.trim_start_matches('/');
        let (ty, rest) = s.split_once('@').ok_or(UriError::NoAt)?;
        let mut parts = rest.split('/');
        let keypart = parts.next().unwrap_or("");
        let mut path: Vec<String> = Vec::new();
        for p in parts {
            path.push(percent_decode(p)?);
        }
        // A trailing slash yields one empty component; drop it for CHKs and
        // meta-strings, but keep it as an (empty) SSK document name.
        let key = match ty.to_ascii_uppercase().as_str() {
            "CHK" => {
                if keypart.is_empty() {
                    KeyUri::ChkInsert
                } else {
                    let (rk, ck, extra) = split_key("CHK", keypart)?;
                    KeyUri::Chk {
                        routing_key: RoutingKey(rk),
                        crypto_key: ck,
                        extra,
                    }
                }
            }
            "SSK" => {
                if keypart.is_empty() {
                    KeyUri::SskInsertNew
                } else {
                    let key = ssk_key(keypart)?;
                    if path.is_empty() {
                        return Err(UriError::MissingDocName("SSK"));
                    }
                    let docname = path.remove(0);
                    KeyUri::Ssk { key, docname }
                }
            }
            "KSK" => {
                let keyword = percent_decode(keypart)?;
                if keyword.is_empty() {
                    return Err(UriError::EmptyKeyword);
                }
                KeyUri::Ksk { keyword }
            }
            "USK" => {
                let key = ssk_key(keypart)?;
                if path.is_empty() || path[0].is_empty() {
                    return Err(UriError::MissingDocName("USK"));
                }
                let site = path.remove(0);
                let ed = if path.is_empty() {
                    String::new()
                } else {
                    path.remove(0)
                };
                let edition = ed.parse::<i64>().map_err(|_| UriError::BadEdition(ed))?;
                KeyUri::Usk { key, site, edition }
            }
            _ => return Err(UriError::UnknownType(ty.chars().take(16).collect())),
        };
        if path.last().is_some_and(String::is_empty) {
            path.pop();
        }
        for p in &path {
            if p == ".." || p == "." || p.is_empty() {
                return Err(UriError::BadComponent(p.clone()));
            }
        }
        Ok(FreenetUri { key, meta: path })
    }

    /// A URI without meta-strings.
    #[must_use]
    pub fn new(key: KeyUri) -> Self {
        FreenetUri {
            key,
            meta: Vec::new(),
        }
    }

    /// The same URI with `name` appended as a meta-string.
    #[must_use]
    pub fn with_meta(mut self, name: &str) -> Self {
        self.meta.push(name.to_owned());
        self
    }

    /// The request URI for an insert URI (SSK/USK private key replaced by
    /// the public key hash); other URIs are returned unchanged.
    #[must_use]
    pub fn to_request(&self) -> FreenetUri {
        let key = match &self.key {
            KeyUri::Ssk { key, docname } => KeyUri::Ssk {
                key: SskKey::Public(key.public()),
                docname: docname.clone(),
            },
            KeyUri::Usk { key, site, edition } => KeyUri::Usk {
                key: SskKey::Public(key.public()),
                site: site.clone(),
                edition: *edition,
            },
            k => k.clone(),
        };
        FreenetUri {
            key,
            meta: self.meta.clone(),
        }
    }

    /// For a USK, the same URI at another edition.
    #[must_use]
    pub fn with_edition(&self, new_edition: i64) -> FreenetUri {
        let mut u = self.clone();
        if let KeyUri::Usk { edition, .. } = &mut u.key {
            *edition = new_edition;
        }
        u
    }
}

impl std::str::FromStr for FreenetUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FreenetUri::parse(s)
    }
}

impl fmt::Display for FreenetUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            KeyUri::Chk {
                routing_key,
                crypto_key,
                extra,
            } => write!(
                f,
                "CHK@{},{},{}",
                b64::encode(&routing_key.0),
                b64::encode(crypto_key),
                b64::encode(extra)
            )?,
            KeyUri::ChkInsert => f.write_str("CHK@")?,
            KeyUri::SskInsertNew => f.write_str("SSK@")?,
            KeyUri::Ssk { key, docname } => {
                f.write_str("SSK@")?;
                key.write(f)?;
                write!(f, "/{}", percent_encode(docname))?;
            }
            KeyUri::Ksk { keyword } => write!(f, "KSK@{}", percent_encode(keyword))?,
            KeyUri::Usk { key, site, edition } => {
                f.write_str("USK@")?;
                key.write(f)?;
                write!(f, "/{}/{}", percent_encode(site), edition)?;
            }
        }
        for m in &self.meta {
            write!(f, "/{}", percent_encode(m))?;
        }
        Ok(())
    }
}

impl From<&ChkKey> for FreenetUri {
    fn from(k: &ChkKey) -> Self {
        FreenetUri::new(KeyUri::Chk {
            routing_key: k.routing_key,
            crypto_key: k.crypto_key,
            extra: k.extra(),
        })
    }
}

/// The three comma-separated fields of a key: two 32-byte keys and the extra.
type KeyFields = ([u8; 32], [u8; 32], Vec<u8>);

fn split_key(kind: &'static str, keypart: &str) -> Result<KeyFields, UriError> {
    let mut it = keypart.split(',');
    let (Some(a), Some(b), Some(c), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(UriError::MissingParts(kind));
    };
    let a = fixed32(a, "routing key")?;
    let b = fixed32(b, "crypto key")?;
    let c = b64::decode(c).ok_or(UriError::BadBase64 { field: "extra" })?;
    if c.is_empty() || c.len() > MAX_EXTRA_LEN {
        return Err(UriError::BadLength {
            field: "extra",
            got: c.len(),
            want: 5,
        });
    }
    Ok((a, b, c))
}

fn fixed32(s: &str, field: &'static str) -> Result<[u8; 32], UriError> {
    let v = b64::decode(s).ok_or(UriError::BadBase64 { field })?;
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| UriError::BadLength {
        field,
        got: v.len(),
        want: 32,
    })
}

fn ssk_key(keypart: &str) -> Result<SskKey, UriError> {
    let (k, ck, extra) = split_key("SSK", keypart)?;
    if extra.len() >= 2 && extra[1] == 1 {
        Ok(SskKey::Private(SskPrivate::from_parts(k, ck)))
    } else {
        Ok(SskKey::Public(SskPublic {
            pubkey_hash: k,
            crypto_key: ck,
        }))
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode `%XX` escapes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, UriError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex_val);
            let lo = b.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(UriError::BadEscape),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::BadEscape)
}

/// Escape what would change the meaning of a path component.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '/' | '?' | '#' | '\u{7f}') || c <= ' ' {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::DataFlags;

    #[test]
    fn chk_round_trip() {
        let (k, _) = chk::encode(b"hi", DataFlags::default()).unwrap();
        let uri = FreenetUri::from(&k).with_meta("file name.txt");
        let s = uri.to_string();
        assert!(s.starts_with("CHK@"));
        assert!(s.ends_with("/file%20name.txt"));
        let back = FreenetUri::parse(&s).unwrap();
        assert_eq!(back, uri);
        assert_eq!(back.key.chk_key().unwrap(), k);
        assert_eq!(FreenetUri::parse(&format!("freenet:{s}")).unwrap(), uri);
        assert_eq!(FreenetUri::parse(&format!("/{s}")).unwrap(), uri);
    }

    #[test]
    fn freenet_chk_parses_but_is_not_decodable() {
        let s = "CHK@AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,AAMC--8";
        let u = FreenetUri::parse(s).unwrap();
        assert!(u.key.chk_key().is_err());
        assert_eq!(u.to_string(), s);
    }

    #[test]
    fn ssk_insert_to_request() {
        let k = SskPrivate::from_parts([3; 32], [4; 32]);
        let ins = FreenetUri::new(KeyUri::Ssk {
            key: SskKey::Private(k.clone()),
            docname: "doc".into(),
        });
        let s = ins.to_string();
        assert!(s.contains(",AQECAAE/doc"), "{s}");
        let req = FreenetUri::parse(&s).unwrap().to_request();
        assert!(req.to_string().contains(",AQACAAE/doc"));
        assert_eq!(
            req.key.ssk_target().unwrap(),
            (k.public(), "doc".to_string())
        );
    }

    #[test]
    fn usk_parses() {
        let k = SskPrivate::from_parts([3; 32], [4; 32]).public();
        let u = FreenetUri::new(KeyUri::Usk {
            key: SskKey::Public(k),
            site: "site".into(),
            edition: 7,
        })
        .with_meta("a.html");
        let s = u.to_string();
        assert!(s.ends_with("/site/7/a.html"));
        assert_eq!(FreenetUri::parse(&s).unwrap(), u);
        assert_eq!(u.key.ssk_target().unwrap().1, "site-7");
        assert!(FreenetUri::parse(&s.replace("/7/", "/x/")).is_err());
    }

    #[test]
    fn malformed() {
        for (s, want) in [
            ("hello", UriError::NoAt),
            ("XYZ@abc", UriError::UnknownType("XYZ".into())),
            ("CHK@abc", UriError::MissingParts("CHK")),
            ("KSK@", UriError::EmptyKeyword),
            ("KSK@a%zz", UriError::BadEscape),
        ] {
            assert_eq!(FreenetUri::parse(s), Err(want), "{s}");
        }
        assert!(matches!(
            FreenetUri::parse("CHK@AAAA,AAAA,AAAA"),
            Err(UriError::BadLength { .. })
        ));
        assert!(matches!(
            FreenetUri::parse("CHK@!!,AAAA,AAAA"),
            Err(UriError::BadBase64 { .. })
        ));
        assert!(matches!(
            FreenetUri::parse("KSK@a/../b"),
            Err(UriError::BadComponent(_))
        ));
        assert!(matches!(
            FreenetUri::parse(&"K".repeat(MAX_URI_LEN + 1)),
            Err(UriError::TooLong(_))
        ));
    }

    #[test]
    fn insert_forms() {
        assert_eq!(FreenetUri::parse("CHK@").unwrap().key, KeyUri::ChkInsert);
        assert_eq!(
            FreenetUri::parse("CHK@/name.txt").unwrap().meta,
            vec!["name.txt".to_string()]
        );
        assert_eq!(FreenetUri::parse("SSK@").unwrap().key, KeyUri::SskInsertNew);
        assert_eq!(
            FreenetUri::parse("freenet:KSK@hello world").unwrap().key,
            KeyUri::Ksk {
                keyword: "hello world".into()
            }
        );
    }
}
