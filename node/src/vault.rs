//! Everything the node keeps on disk about what its user did is sealed
//! under one key, the *vault key*: persistent request records, their
//! uploads and results, inserts waiting to be pushed, the peer list and
//! temporary spools. The vault key itself lives in the identity file,
//! sealed under a key file beside it or under a passphrase that never
//! touches the disk (`crate::identity`, `docs/store.md`).
//!
//! Two kinds of sealed things:
//! - *records* (small, rewritten whole): `"LSR1"` ‖ nonce (24 B) ‖
//!   XChaCha20-Poly1305(record key, nonce, plaintext, aad = purpose);
//!   the record key is HMAC-SHA256(vault key, `"record"` ‖ purpose).
//!   Authenticated: a damaged or foreign record is an error, never
//!   garbage.
//! - *files* (large, written once as a stream, read from any offset):
//!   `"LSF1"` ‖ file nonce (16 B) ‖ ChaCha20(file key, zero IV, data);
//!   the file key is HMAC-SHA256(vault key, `"file"` ‖ file nonce), so
//!   every file has its own key and no keystream is ever reused. Not
//!   authenticated (seekable): the data in them is either verified later
//!   (an insert's blocks) or was verified when fetched.

use crate::sealed::{FileSeal, SealKey};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use zeroize::Zeroizing;

const RECORD_MAGIC: &[u8; 4] = b"LSR1";
const FILE_MAGIC: &[u8; 4] = b"LSF1";
const RECORD_NONCE: usize = 24;
const FILE_NONCE: usize = 16;
/// Bytes before a sealed file's data.
pub(crate) const FILE_HEADER: u64 = (FILE_MAGIC.len() + FILE_NONCE) as u64;

/// A passphrase (held in memory only, wiped when dropped).
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// The passphrase's bytes (for the key derivation).
    #[must_use]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// A passphrase; `None` if it is empty (after removing one trailing
    /// newline, as a file written by `echo` has).
    #[must_use]
    pub fn new(mut text: String) -> Option<Self> {
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        (!text.is_empty()).then(|| Passphrase(Zeroizing::new(text)))
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// The key everything at rest is sealed under (in memory only).
#[derive(Clone)]
pub struct Vault {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

/// A sealed record could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unsealed {
    /// Not a sealed record at all (no magic).
    #[error("not a sealed record")]
    NotSealed,
    /// Sealed under another key, or damaged.
    #[error("sealed under another key, or damaged")]
    Damaged,
}

impl Vault {
    /// A vault over `key`.
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        Vault {
            key: Zeroizing::new(key),
        }
    }

    /// HMAC-SHA256(vault key, label ‖ data).
    fn derive(&self, label: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
        let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..]) else {
            unreachable!("HMAC takes keys of any length")
        };
        m.update(label);
        m.update(&[0]);
        m.update(data);
        Zeroizing::new(m.finalize().into_bytes().into())
    }

    /// Seal a record for `purpose` (a short label such as `"request"`,
    /// bound into the ciphertext: a record cannot be passed off as one
    /// of another purpose).
    #[must_use]
    pub(crate) fn seal(&self, purpose: &str, plain: &[u8]) -> Vec<u8> {
        let key = self.derive(b"record", purpose.as_bytes());
        let cipher = XChaCha20Poly1305::new(key.as_ref().into());
        let nonce: [u8; RECORD_NONCE] = rand::random();
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: purpose.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(4 + RECORD_NONCE + sealed.len());
        out.extend_from_slice(RECORD_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Open a record sealed by [`Vault::seal`] for the same purpose.
    ///
    /// # Errors
    /// [`Unsealed`].
    pub(crate) fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, Unsealed> {
        let rest = sealed
            .strip_prefix(RECORD_MAGIC)
            .ok_or(Unsealed::NotSealed)?;
        if rest.len() < RECORD_NONCE + 16 {
            return Err(Unsealed::Damaged);
        }
        let (nonce, ct) = rest.split_at(RECORD_NONCE);
        let key = self.derive(b"record", purpose.as_bytes());
        XChaCha20Poly1305::new(key.as_ref().into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| Unsealed::Damaged)
    }

    /// A file name for `parts` that only this vault can compute (URL-safe
    /// base64 of 16 bytes of HMAC): records are found again by what they
    /// are without the name saying it.
    #[must_use]
    pub(crate) fn name(&self, purpose: &str, parts: &[&[u8]]) -> String {
        let mut data = Vec::new();
        for p in parts {
            data.extend_from_slice(&(p.len() as u64).to_be_bytes());
            data.extend_from_slice(p);
        }
        let h = self.derive(format!("name/{purpose}").as_bytes(), &data);
        lichen_crypto::b64::encode(&h[..16])
    }

    fn file_key(&self, nonce: &[u8]) -> SealKey {
        SealKey::from_bytes(*self.derive(b"file", nonce))
    }

    /// Start a sealed file: its header and key.
    #[must_use]
    pub(crate) fn new_file(&self) -> FileSeal {
        let nonce: [u8; FILE_NONCE] = rand::random();
        let mut header = Vec::with_capacity(FILE_HEADER as usize);
        header.extend_from_slice(FILE_MAGIC);
        header.extend_from_slice(&nonce);
        FileSeal {
            header,
            key: self.file_key(&nonce),
        }
    }

    /// The key of a sealed file, from its header.
    ///
    /// # Errors
    /// `InvalidData` if `header` is not a sealed file's header.
    fn file_key_from_header(&self, header: &[u8]) -> std::io::Result<SealKey> {
        match header.strip_prefix(FILE_MAGIC) {
            Some(nonce) if nonce.len() == FILE_NONCE => Ok(self.file_key(nonce)),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a sealed file",
            )),
        }
    }

    /// The seal of the existing sealed file at `path` (from its header).
    ///
    /// # Errors
    /// I/O errors; `InvalidData` if the file is not sealed.
    pub(crate) async fn seal_of(&self, path: &Path) -> std::io::Result<FileSeal> {
        use tokio::io::AsyncReadExt;
        let mut f = tokio::fs::File::open(path).await?;
        let mut header = [0u8; FILE_HEADER as usize];
        f.read_exact(&mut header).await?;
        Ok(FileSeal {
            key: self.file_key_from_header(&header)?,
            header: header.to_vec(),
        })
    }

    /// Seal `data` whole into a new file at `path` (created, mode 0600).
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) async fn write_file(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        let seal = self.new_file();
        let mut out = seal.header.clone();
        let start = out.len();
        out.extend_from_slice(data);
        seal.key.open_in_place(0, &mut out[start..]);
        tokio::fs::write(path, &out).await
    }

    /// Seal a plain file in place (a file of an earlier version): a
    /// sealed copy beside it, synced, renamed over it. A file already
    /// sealed is left as it is.
    ///
    /// # Errors
    /// I/O errors; the plain file is then unchanged.
    pub(crate) fn seal_file_in_place(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut src = std::fs::File::open(path)?;
        let mut head = [0u8; 4];
        if src.read_exact(&mut head).is_ok() && &head == FILE_MAGIC {
            return Ok(());
        }
        src.seek(SeekFrom::Start(0))?;
        let tmp = path.with_extension("sealing");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let out = opts.open(&tmp)?;
        let mut w = self.new_file().writer(std::io::BufWriter::new(out))?;
        std::io::copy(&mut src, &mut w)?;
        w.flush()?;
        drop(w);
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Read a sealed file from data offset `offset` (blocking).
    ///
    /// # Errors
    /// I/O errors; `InvalidData` if the file is not sealed.
    pub(crate) fn read_file_at(
        &self,
        path: &Path,
        offset: u64,
    ) -> std::io::Result<SealedSyncReader<std::fs::File>> {
        let mut f = std::fs::File::open(path)?;
        let mut header = [0u8; FILE_HEADER as usize];
        f.read_exact(&mut header)?;
        let key = self.file_key_from_header(&header)?;
        f.seek(SeekFrom::Start(FILE_HEADER + offset))?;
        Ok(SealedSyncReader {
            inner: f,
            key,
            offset,
        })
    }
}

/// Decrypts what a blocking reader positioned at data offset `offset` of
/// a sealed file reads.
#[derive(Debug)]
pub(crate) struct SealedSyncReader<R> {
    inner: R,
    key: SealKey,
    offset: u64,
}

impl<R: Read> Read for SealedSyncReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.key.open_in_place(self.offset, &mut buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_open_only_with_their_key_and_purpose() {
        let v = Vault::new([7; 32]);
        let s = v.seal("request", b"ClientPut URI=SSK@secret");
        assert!(!s.windows(6).any(|w| w == b"secret"));
        assert_eq!(v.open("request", &s).unwrap(), b"ClientPut URI=SSK@secret");
        assert_eq!(v.open("push", &s), Err(Unsealed::Damaged));
        assert_eq!(
            Vault::new([8; 32]).open("request", &s),
            Err(Unsealed::Damaged)
        );
        assert_eq!(v.open("request", b"{\"json\":1}"), Err(Unsealed::NotSealed));
        let mut bad = s.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(v.open("request", &bad), Err(Unsealed::Damaged));
        assert_ne!(
            v.seal("request", b"x"),
            v.seal("request", b"x"),
            "fresh nonce"
        );
    }

    #[test]
    fn names_are_keyed_and_stable() {
        let a = Vault::new([1; 32]);
        let b = Vault::new([2; 32]);
        let n = a.name("request", &[b"g", b"id"]);
        assert_eq!(n, a.name("request", &[b"g", b"id"]));
        assert_ne!(n, b.name("request", &[b"g", b"id"]));
        assert_ne!(n, a.name("request", &[b"gi", b"d"]), "parts are framed");
        assert!(n
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'~' || c == b'-'));
    }

    #[tokio::test]
    async fn files_read_back_from_any_offset_and_hold_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let v = Vault::new([3; 32]);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        v.write_file(&p, &data).await.unwrap();
        let disk = std::fs::read(&p).unwrap();
        assert_eq!(disk.len() as u64, data.len() as u64 + FILE_HEADER);
        assert!(!disk.windows(64).any(|w| data.windows(64).next() == Some(w)));
        for off in [0u64, 1, 64, 99_999] {
            let mut out = Vec::new();
            v.read_file_at(&p, off)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, &data[off as usize..]);
        }
        let mut out = Vec::new();
        let seal = v.seal_of(&p).await.unwrap();
        tokio::io::AsyncReadExt::read_to_end(&mut seal.open(&p).await.unwrap(), &mut out)
            .await
            .unwrap();
        assert_eq!(out, data);
        // Another vault reads garbage; a plain file is refused.
        let mut other = Vec::new();
        Vault::new([4; 32])
            .read_file_at(&p, 0)
            .unwrap()
            .read_to_end(&mut other)
            .unwrap();
        assert_ne!(other, data);
        std::fs::write(&p, b"plain text file").unwrap();
        assert!(v.read_file_at(&p, 0).is_err());
        // An earlier version's plain file is sealed in place, once.
        v.seal_file_in_place(&p).unwrap();
        let sealed = std::fs::read(&p).unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"plain"));
        v.seal_file_in_place(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), sealed);
        let mut back = String::new();
        v.read_file_at(&p, 0)
            .unwrap()
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, "plain text file");
    }

    proptest! {
        #[test]
        fn open_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let v = Vault::new([9; 32]);
            let _ = v.open("x", &bytes);
            let mut b = RECORD_MAGIC.to_vec();
            b.extend_from_slice(&bytes);
            prop_assert!(v.open("x", &b).is_err());
        }
    }
}
