//! A fetched document's file: sealed on disk, written by the fetch while
//! responses read it ([`Doc`]), and the state of the job that writes it
//! ([`JobState`]).

use crate::sealed::{SealKey, SealedWriter};
use axum::body::Body;
use axum::http::StatusCode;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

/// A fetched document in a sealed temporary file, written from its first
/// byte on while the fetch runs, and deleted when the last handle goes
/// (the job's, or that of a response still sending it).
#[derive(Debug)]
pub(super) struct DocFile {
    /// Sealed under `key` (see [`crate::sealed`]).
    pub(super) path: PathBuf,
    pub(super) key: SealKey,
    pub(super) mime: String,
    pub(super) size: u64,
}

impl DocFile {
    /// The whole document, decrypted (a finished job's).
    pub(super) async fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let mut b = tokio::fs::read(&self.path).await?;
        self.key.open_in_place(0, &mut b);
        Ok(b)
    }
}

impl Drop for DocFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The part of a running job's document already on disk.
#[derive(Debug, Clone)]
pub(super) struct Streamed {
    pub(super) file: Arc<DocFile>,
    /// Bytes written so far, in order from the first.
    pub(super) written: u64,
}

/// Seals what the fetch decodes into the job's file and tells the job's
/// watchers how far it has got.
pub(super) struct PublishingWriter {
    inner: SealedWriter<std::fs::File>,
    tx: watch::Sender<JobState>,
    written: u64,
}

impl PublishingWriter {
    /// A writer sealing into `file` under `key` and publishing to `tx`.
    pub(super) fn new(file: std::fs::File, key: &SealKey, tx: watch::Sender<JobState>) -> Self {
        PublishingWriter {
            inner: SealedWriter::new(file, key),
            tx,
            written: 0,
        }
    }
}

impl std::io::Write for PublishingWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(b)])
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = self.inner.write_vectored(bufs)?;
        self.written += n as u64;
        let w = self.written;
        self.tx.send_modify(|s| {
            if let JobState::Running {
                streamed: Some(st), ..
            } = s
            {
                st.written = w;
            }
        });
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Why a fetch failed, as the gateway answers it.
#[derive(Debug, Clone)]
pub(super) struct JobError {
    pub(super) status: StatusCode,
    pub(super) title: &'static str,
    pub(super) detail: String,
    /// A newer USK edition to redirect to.
    pub(super) redirect: Option<String>,
}

/// Where a fetch is.
#[derive(Debug, Clone)]
pub(super) enum JobState {
    /// Blocks done and needed; once the document is found, its file as it
    /// is written.
    Running {
        done: u64,
        needed: u64,
        streamed: Option<Streamed>,
    },
    Done(Arc<DocFile>),
    Failed(Arc<JobError>),
}

/// A document to serve: its file, finished or still being written, and
/// the job that writes it.
pub(super) struct Doc {
    pub(super) file: Arc<DocFile>,
    pub(super) job: watch::Receiver<JobState>,
}

impl Doc {
    /// Wait until more than `pos` bytes may be read (while the fetch runs,
    /// all but the last byte written: a response never ends before the
    /// fetch has succeeded). Returns how many may be read.
    async fn readable_past(&mut self, pos: u64) -> std::io::Result<u64> {
        loop {
            let n = match &*self.job.borrow_and_update() {
                JobState::Running {
                    streamed: Some(s), ..
                } => s.written.min(self.file.size.saturating_sub(1)),
                JobState::Running { .. } => 0,
                JobState::Done(_) => self.file.size,
                JobState::Failed(e) => {
                    return Err(std::io::Error::other(format!(
                        "the fetch failed: {}",
                        e.title
                    )))
                }
            };
            if n > pos || n == self.file.size {
                return Ok(n);
            }
            if self.job.changed().await.is_err() {
                return Err(std::io::Error::other("the fetch ended"));
            }
        }
    }

    /// Bytes `start..start + len` as a body sent as they become readable.
    pub(super) fn body(self, start: u64, len: u64) -> Body {
        let end = start + len;
        let state = (self, None::<tokio::fs::File>, start);
        let stream = futures::stream::try_unfold(state, move |(mut doc, f, pos)| async move {
            if pos >= end {
                return Ok(None);
            }
            let upto = doc.readable_past(pos).await?.min(end);
            if upto <= pos {
                return Err(std::io::Error::other(
                    "the document is shorter than announced",
                ));
            }
            let mut f = match f {
                Some(f) => f,
                None => {
                    let mut f = tokio::fs::File::open(&doc.file.path).await?;
                    f.seek(std::io::SeekFrom::Start(pos)).await?;
                    f
                }
            };
            let want = usize::try_from(upto - pos)
                .unwrap_or(usize::MAX)
                .min(256 * 1024);
            let mut buf = vec![0u8; want];
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::other("the document file ended early"));
            }
            buf.truncate(n);
            doc.file.key.open_in_place(pos, &mut buf);
            Ok(Some((
                axum::body::Bytes::from(buf),
                (doc, Some(f), pos + n as u64),
            )))
        });
        Body::from_stream(stream)
    }

    /// The first `n` bytes (fewer if the document is shorter).
    pub(super) async fn head(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let want = (n as u64).min(self.file.size);
        if want > 0 {
            self.readable_past(want - 1).await?;
        }
        let mut f = tokio::fs::File::open(&self.file.path).await?;
        let mut buf = vec![0u8; usize::try_from(want).unwrap_or(n)];
        f.read_exact(&mut buf).await?;
        self.file.key.open_in_place(0, &mut buf);
        Ok(buf)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A job whose document is `data` (text/plain), its file created and
    /// nothing written yet; the writer the fetch would use.
    fn running_job(
        dir: &std::path::Path,
        data: &[u8],
    ) -> (Arc<DocFile>, watch::Sender<JobState>, PublishingWriter) {
        let key = SealKey::random();
        let path = dir.join("doc");
        let f = std::fs::File::create(&path).unwrap();
        let file = Arc::new(DocFile {
            path,
            key: key.clone(),
            mime: "text/plain".into(),
            size: data.len() as u64,
        });
        let (tx, _) = watch::channel(JobState::Running {
            done: 0,
            needed: 0,
            streamed: Some(Streamed {
                file: file.clone(),
                written: 0,
            }),
        });
        let w = PublishingWriter::new(f, &key, tx.clone());
        (file, tx, w)
    }

    /// Read `body` until it holds at least `n` bytes.
    async fn read_to(
        body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
        got: &mut Vec<u8>,
        n: usize,
    ) {
        use futures::StreamExt;
        while got.len() < n {
            let b = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("data in time")
                .expect("not the end")
                .unwrap();
            got.extend_from_slice(&b);
        }
    }

    #[tokio::test]
    async fn a_document_is_sent_while_its_fetch_writes_it() {
        use futures::StreamExt;
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (file, tx, mut w) = running_job(dir.path(), &data);
        let doc = Doc {
            file: file.clone(),
            job: tx.subscribe(),
        };
        let mut body = doc.body(0, data.len() as u64).into_data_stream();
        w.write_all(&data[..100_000]).unwrap();
        let mut got = Vec::new();
        read_to(&mut body, &mut got, 100_000).await;
        assert_eq!(got, data[..100_000]);
        // Nothing more is sent until more is written.
        let wait = Duration::from_millis(100);
        assert!(tokio::time::timeout(wait, body.next()).await.is_err());
        // A range that starts further on waits for its bytes too.
        let ranged = Doc {
            file: file.clone(),
            job: tx.subscribe(),
        };
        let mut ranged = ranged.body(250_000, 10).into_data_stream();
        assert!(tokio::time::timeout(wait, ranged.next()).await.is_err());
        w.write_all(&data[100_000..]).unwrap();
        let mut r = Vec::new();
        read_to(&mut ranged, &mut r, 10).await;
        assert_eq!(r, data[250_000..250_010]);
        // All but the last byte while the fetch runs: the response cannot
        // end before the fetch has succeeded.
        read_to(&mut body, &mut got, data.len() - 1).await;
        assert_eq!(got.len(), data.len() - 1);
        assert!(tokio::time::timeout(wait, body.next()).await.is_err());
        tx.send_replace(JobState::Done(file));
        read_to(&mut body, &mut got, data.len()).await;
        assert_eq!(got, data);
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn a_fetch_failing_mid_document_breaks_the_response() {
        use futures::StreamExt;
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 50_000];
        let (file, tx, mut w) = running_job(dir.path(), &data);
        let path = file.path.clone();
        let doc = Doc {
            file,
            job: tx.subscribe(),
        };
        let mut body = doc.body(0, data.len() as u64).into_data_stream();
        w.write_all(&data[..20_000]).unwrap();
        let mut got = Vec::new();
        read_to(&mut body, &mut got, 20_000).await;
        tx.send_replace(JobState::Failed(Arc::new(JobError {
            status: StatusCode::NOT_FOUND,
            title: "Not found",
            detail: String::new(),
            redirect: None,
        })));
        let end = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap();
        assert!(matches!(end, Some(Err(_))), "{end:?}");
        // The file goes with the last handle on it.
        drop(body);
        assert!(!path.exists());
    }
}
