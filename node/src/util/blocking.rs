//! The bridges between the node's async tasks and the client library's
//! blocking work, written once.
//!
//! - [`run`]: an async task runs a client-library future on a blocking
//!   thread of the runtime (the client encodes, decodes and reads files
//!   synchronously between its awaits, which must not stall the runtime's
//!   workers).
//! - [`wait`]: code on such a blocking thread waits for an async channel
//!   operation (a streamed upload's next chunk, room in a connection's
//!   queue).
//! - [`UploadStream`]: the receiving end of a direct upload as a blocking
//!   `Read`, built on [`wait`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio_util::bytes::Bytes;

/// Run the future `make` returns on a blocking thread of the current
/// runtime and wait for its output. `make` runs on that thread, so the
/// future need not be `Send`.
///
/// # Errors
/// The blocking task panicked or the runtime is shutting down.
pub(crate) async fn run<F, Fut, T>(make: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    spawn(make).await
}

/// [`run`], started at once: the handle gives the output.
pub(crate) fn spawn<F, Fut, T>(make: F) -> tokio::task::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(make()))
}

/// On a blocking thread that [`run`] started, wait for `fut` (a channel
/// send or receive, a semaphore).
pub(crate) fn wait<F: Future>(fut: F) -> F::Output {
    // `unconstrained`: this thread is inside the runtime's `block_on`,
    // whose cooperative budget would never be refilled here, so a budgeted
    // channel would report Pending forever (a busy loop).
    futures::executor::block_on(tokio::task::unconstrained(fut))
}

/// The receiving end of a direct upload: `len` bytes in chunks, in order.
/// Taken once (the insert reads it); clones share it.
#[derive(Debug, Clone)]
pub struct UploadStream {
    rx: Arc<Mutex<Option<tokio::sync::mpsc::Receiver<Bytes>>>>,
    /// Bytes announced (`DataLength`).
    pub len: u64,
}

impl UploadStream {
    /// A stream of `len` bytes fed through `rx`.
    #[must_use]
    pub fn new(rx: tokio::sync::mpsc::Receiver<Bytes>, len: u64) -> Self {
        UploadStream {
            rx: Arc::new(Mutex::new(Some(rx))),
            len,
        }
    }

    /// A blocking reader of the bytes (`None` if already taken). It reads
    /// an error if the stream ends short (the connection went away).
    pub(crate) fn reader(&self) -> Option<UploadReader> {
        let rx = self.rx.lock().ok()?.take()?;
        Some(UploadReader {
            rx,
            chunk: Bytes::new(),
            pos: 0,
            left: self.len,
        })
    }
}

/// [`UploadStream`] as a `Read` (for a blocking thread: it waits for the
/// next chunk).
pub(crate) struct UploadReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
    pos: usize,
    left: u64,
}

impl std::io::Read for UploadReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.left == 0 {
                return Ok(0);
            }
            match wait(self.rx.recv()) {
                Some(c) if c.len() as u64 <= self.left => {
                    self.left -= c.len() as u64;
                    self.chunk = c;
                    self.pos = 0;
                }
                Some(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the upload is longer than its DataLength",
                    ))
                }
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the upload ended before its DataLength (connection closed?)",
                    ))
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn an_upload_stream_reads_whole_and_refuses_short_or_long_ones() {
        let read_all = |chunks: Vec<&'static [u8]>, len: u64| {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            for c in chunks {
                tx.try_send(Bytes::from_static(c)).unwrap();
            }
            drop(tx);
            let s = UploadStream::new(rx, len);
            let mut out = Vec::new();
            let r = s.reader().unwrap().read_to_end(&mut out).map(|_| out);
            assert!(s.reader().is_none(), "read once only");
            r
        };
        assert_eq!(read_all(vec![b"abc", b"", b"defg"], 7).unwrap(), b"abcdefg");
        assert_eq!(read_all(vec![], 0).unwrap(), b"");
        // The connection went away half-way.
        let e = read_all(vec![b"abc"], 7).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        // More than DataLength.
        let e = read_all(vec![b"abc", b"defgh"], 7).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_gives_back_the_future_output() {
        assert_eq!(run(|| async { 6 * 7 }).await.unwrap(), 42);
    }
}
