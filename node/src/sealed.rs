//! Sealed temporary files: fetched documents waiting in `<data>/tmp` to be
//! sent (gateway results, FCP results that were not streamed) are written
//! encrypted under a random key that lives only in memory, so what the node
//! fetched cannot be read back from its disk, during or after the wait (or
//! after a crash that left the file behind).
//!
//! ChaCha20 with a fresh random key per file and a zero nonce (a key is
//! never reused, so neither is a keystream); seekable, so a byte range is
//! read without decrypting what comes before it. No MAC: the file is
//! written and read back by the same process within minutes, and the
//! document was authenticated when it was fetched.

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// The in-memory key of one sealed file.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// A fresh random key.
    #[must_use]
    pub(crate) fn random() -> Self {
        SealKey(rand::random())
    }

    /// A key given by the caller (derived from the vault, `crate::vault`).
    #[must_use]
    pub(crate) fn from_bytes(key: [u8; 32]) -> Self {
        SealKey(key)
    }

    /// The keystream positioned at byte `offset` of the file.
    fn cipher_at(&self, offset: u64) -> ChaCha20 {
        let mut c = ChaCha20::new(&self.0.into(), &[0u8; 12].into());
        c.seek(offset);
        c
    }

    /// Encrypt bytes to be written at offset `offset` of the file (after
    /// any header), in place.
    pub(crate) fn seal_in_place(&self, offset: u64, buf: &mut [u8]) {
        self.cipher_at(offset).apply_keystream(buf);
    }

    /// Decrypt bytes read from offset `offset` of the file, in place.
    pub(crate) fn open_in_place(&self, offset: u64, buf: &mut [u8]) {
        self.cipher_at(offset).apply_keystream(buf);
    }
}

/// How a file the node writes is sealed: under an in-memory key (a
/// temporary file, `header` empty) or under a key derived from the vault
/// and the file's own header (a file that must outlive the process,
/// [`crate::vault::Vault::new_file`]).
#[derive(Clone, Debug)]
pub(crate) struct FileSeal {
    /// Written before the sealed data.
    pub(crate) header: Vec<u8>,
    /// The data's key.
    pub(crate) key: SealKey,
}

impl FileSeal {
    /// A temporary file's seal: a fresh in-memory key, no header.
    #[must_use]
    pub(crate) fn ephemeral() -> Self {
        FileSeal {
            header: Vec::new(),
            key: SealKey::random(),
        }
    }

    /// Open the sealed file at `path` for reading from its first byte.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) async fn open(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<SealedReader<tokio::fs::File>> {
        use tokio::io::AsyncSeekExt;
        let mut f = tokio::fs::File::open(path).await?;
        f.seek(std::io::SeekFrom::Start(self.header.len() as u64))
            .await?;
        Ok(SealedReader::new(f, self.key.clone(), 0))
    }

    /// Start writing a sealed file into `inner` (new and empty): the
    /// header, then everything written through the returned writer.
    ///
    /// # Errors
    /// I/O errors writing the header.
    pub(crate) fn writer<W: Write>(&self, mut inner: W) -> std::io::Result<SealedWriter<W>> {
        inner.write_all(&self.header)?;
        Ok(SealedWriter::new(inner, &self.key))
    }
}

/// Encrypts everything written through it into `inner`, from offset 0.
pub(crate) struct SealedWriter<W> {
    inner: W,
    cipher: ChaCha20,
    buf: Vec<u8>,
}

impl<W> std::fmt::Debug for SealedWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedWriter")
    }
}

impl<W: Write> SealedWriter<W> {
    /// Seal what is written to `inner` (a new, empty file) under `key`.
    pub(crate) fn new(inner: W, key: &SealKey) -> Self {
        SealedWriter {
            inner,
            cipher: key.cipher_at(0),
            buf: Vec::new(),
        }
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(b)])
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        // All or nothing: the keystream has moved on once applied.
        self.buf.clear();
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        self.cipher.apply_keystream(&mut self.buf);
        self.inner.write_all(&self.buf)?;
        Ok(self.buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts what `inner` (positioned at `offset` of a sealed file) reads.
#[derive(Debug)]
pub(crate) struct SealedReader<R> {
    inner: R,
    key: SealKey,
    offset: u64,
}

impl<R> SealedReader<R> {
    /// Read a sealed file from `offset` (where `inner` already is).
    pub(crate) fn new(inner: R, key: SealKey, offset: u64) -> Self {
        SealedReader { inner, key, offset }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SealedReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &mut buf.filled_mut()[before..];
                this.key.open_in_place(this.offset, new);
                this.offset += new.len() as u64;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    #[tokio::test]
    async fn sealed_files_hold_no_plaintext_and_read_back_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let key = SealKey::random();
        let mut w = SealedWriter::new(std::fs::File::create(&path).unwrap(), &key);
        w.write_all(&data[..1000]).unwrap();
        let parts = [
            std::io::IoSlice::new(&data[1000..5000]),
            std::io::IoSlice::new(&data[5000..]),
        ];
        assert_eq!(w.write_vectored(&parts).unwrap(), data.len() - 1000);
        w.flush().unwrap();
        drop(w);

        let disk = std::fs::read(&path).unwrap();
        assert_eq!(disk.len(), data.len());
        assert!(disk.chunks(32).zip(data.chunks(32)).all(|(a, b)| a != b));

        for start in [0u64, 1, 63, 64, 65, 4097, 199_999] {
            let mut f = tokio::fs::File::open(&path).await.unwrap();
            f.seek(std::io::SeekFrom::Start(start)).await.unwrap();
            let mut r = SealedReader::new(f, key.clone(), start);
            let mut out = Vec::new();
            r.read_to_end(&mut out).await.unwrap();
            assert_eq!(
                out,
                &data[usize::try_from(start).unwrap()..],
                "from {start}"
            );
        }
        // Another key reads garbage.
        let mut whole = disk.clone();
        SealKey::random().open_in_place(0, &mut whole);
        assert_ne!(whole, data);
        let mut back = disk;
        key.open_in_place(0, &mut back);
        assert_eq!(back, data);
    }
}
