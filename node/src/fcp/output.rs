//! Writing to an FCP connection: its writer task, and the writers a fetch
//! streams a document's data into (`AllData` as it is decoded,
//! `ReturnType=chunked` `DataChunk`s).

use super::common::{
    Out, ReadSeal, DATA_CHUNKS_QUEUED, DATA_CHUNK_MAX, MID_MESSAGE_TIMEOUT, STREAM_CHUNKS,
    WRITE_TIMEOUT,
};
use super::hub::Hub;
use super::messages::{all_data_header, terminal};
use crate::ops::StreamOpen;
use crate::requests::{Outcome, Request, Scope};
use crate::util::blocking;
use lichen_fcp::replies as rep;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

pub(super) async fn writer(
    wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Out>,
    close: CancellationToken,
) {
    let mut wr = BufWriter::with_capacity(256 * 1024, wr);
    loop {
        let out = tokio::select! {
            biased;
            o = rx.recv() => match o { Some(o) => o, None => break },
            () = close.cancelled() => {
                // Flush what is already queued (e.g. a fatal ProtocolError).
                match rx.try_recv() { Ok(o) => o, Err(_) => break }
            }
        };
        let res = match out {
            Out::Stream { header, len, data } => {
                stream_out(&mut wr, &header, len, data, &close).await
            }
            out => tokio::time::timeout(WRITE_TIMEOUT, write_out(&mut wr, out, &rx))
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
        };
        if let Err(e) = res {
            tracing::debug!("FCP connection closed while writing: {e}");
            close.cancel();
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), wr.flush()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), wr.shutdown()).await;
}

async fn write_out(
    wr: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    out: Out,
    rx: &mpsc::Receiver<Out>,
) -> std::io::Result<()> {
    match out {
        Out::Msg(bytes) | Out::Chunk { bytes, .. } => wr.write_all(&bytes).await?,
        Out::File {
            header,
            path,
            len,
            remove,
            seal,
        } => {
            wr.write_all(&header).await?;
            // 1 MiB reads: `tokio::io::copy` alone reads a file 8 KiB per
            // blocking-pool round trip.
            let f: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match seal {
                ReadSeal::Plain => Box::new(tokio::fs::File::open(&path).await?),
                ReadSeal::Known(s) => Box::new(s.open(&path).await?),
                ReadSeal::FromHeader(v) => Box::new(v.seal_of(&path).await?.open(&path).await?),
            };
            let mut rd = tokio::io::BufReader::with_capacity(1 << 20, f.take(len));
            let copied = tokio::io::copy_buf(&mut rd, wr).await?;
            if remove {
                let _ = tokio::fs::remove_file(&path).await;
            }
            if copied != len {
                return Err(std::io::Error::other("result file shrank"));
            }
        }
        Out::Stream { .. } => return Err(std::io::Error::other("a stream is not a message")),
    }
    if rx.is_empty() {
        wr.flush().await?;
    }
    Ok(())
}

/// Write a streamed message: the header, then the chunks as they come.
/// Each write may stall at most [`WRITE_TIMEOUT`] (the client is not
/// reading), each chunk at most [`MID_MESSAGE_TIMEOUT`]; a stream that ends
/// short (the fetch failed) is an error, and the connection closes.
async fn stream_out(
    wr: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    header: &[u8],
    len: u64,
    mut data: mpsc::Receiver<Vec<u8>>,
    close: &CancellationToken,
) -> std::io::Result<()> {
    let stalled = |_| std::io::Error::from(std::io::ErrorKind::TimedOut);
    tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(header))
        .await
        .map_err(stalled)??;
    let mut sent = 0u64;
    loop {
        let chunk = tokio::select! {
            c = tokio::time::timeout(MID_MESSAGE_TIMEOUT, data.recv()) => c.map_err(stalled)?,
            () = close.cancelled() => return Err(std::io::Error::other("connection closing")),
        };
        let Some(chunk) = chunk else { break };
        sent += chunk.len() as u64;
        if sent > len {
            return Err(std::io::Error::other("stream longer than announced"));
        }
        tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&chunk))
            .await
            .map_err(stalled)??;
    }
    if sent != len {
        return Err(std::io::Error::other(
            "the fetch failed after its data began",
        ));
    }
    tokio::time::timeout(WRITE_TIMEOUT, wr.flush())
        .await
        .map_err(stalled)?
}

/// The fetch's end of an [`Out::Stream`]: each write becomes one chunk,
/// handed over with backpressure (the fetch runs on a blocking thread).
struct StreamWriter {
    tx: mpsc::Sender<Vec<u8>>,
}

impl StreamWriter {
    fn send(&self, chunk: Vec<u8>) -> std::io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        blocking::wait(self.tx.send(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the FCP connection closed")
        })
    }
}

impl std::io::Write for StreamWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.send(b.to_vec())?;
        Ok(b.len())
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let mut chunk = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
        for b in bufs {
            chunk.extend_from_slice(b);
        }
        let n = chunk.len();
        self.send(chunk)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fetch's end of a `ReturnType=chunked` get: what it writes goes to
/// the asking connection as `DataChunk` messages of at most
/// [`DATA_CHUNK_MAX`] bytes, at most [`DATA_CHUNKS_QUEUED`] of them waiting
/// (the fetch runs on a blocking thread and waits for room). A chunk that
/// cannot be queued (the connection is gone) fails the write, so the fetch
/// stops.
struct ChunkWriter {
    hub: Arc<Hub>,
    owner: u64,
    identifier: String,
    offset: u64,
    /// Size and type, told with the first chunk.
    first: Option<(u64, String)>,
    room: Arc<Semaphore>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(b)])
    }

    /// One `DataChunk` of up to [`DATA_CHUNK_MAX`] bytes from the front of
    /// `bufs`, copied once, straight behind its header.
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = bufs
            .iter()
            .map(|b| b.len())
            .sum::<usize>()
            .min(DATA_CHUNK_MAX);
        if n == 0 {
            return Ok(0);
        }
        let gone =
            || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the FCP connection closed");
        // Room comes back as the connection's writer writes chunks, or
        // drops them when the connection ends.
        let room = blocking::wait(self.room.clone().acquire_owned()).map_err(|_| gone())?;
        let (total_length, content_type) = self.first.take().unzip();
        let header = rep::DataChunk {
            identifier: self.identifier.clone(),
            offset: self.offset,
            data_length: n as u64,
            total_length,
            content_type,
        }
        .header();
        let mut bytes = Vec::with_capacity(header.len() + n);
        bytes.extend_from_slice(&header);
        for b in bufs {
            let take = b.len().min(n + header.len() - bytes.len());
            bytes.extend_from_slice(&b[..take]);
        }
        if !self
            .hub
            .send_to(self.owner, Out::Chunk { bytes, _room: room })
        {
            return Err(gone());
        }
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// For a `ReturnType=chunked` get (always its own connection's): the data
/// goes out in `DataChunk`s as it is decoded, whether the blocks are local
/// or come from the network; `DataFound` or `GetFailed` ends it as usual.
pub(super) fn chunked_open(hub: &Arc<Hub>, req: &Arc<Request>) -> StreamOpen {
    let hub = hub.clone();
    let req = req.clone();
    Box::new(move |len, mime, _local| {
        let Scope::Connection(owner) = req.scope else {
            return None;
        };
        Some(Box::new(ChunkWriter {
            hub,
            owner,
            identifier: req.identifier.clone(),
            offset: 0,
            first: Some((len, mime.to_string())),
            room: Arc::new(Semaphore::new(DATA_CHUNKS_QUEUED)),
        }))
    })
}

/// For a direct get seen by its own connection only: once the document is
/// found and local, `DataFound` and the `AllData` header go out at once
/// and the data follows as it is decoded (no spool file, no wait for the
/// whole document). Sets `told` (the terminal messages are sent).
pub(super) fn stream_open(hub: &Arc<Hub>, req: &Arc<Request>, told: Arc<AtomicBool>) -> StreamOpen {
    let hub = hub.clone();
    let req = req.clone();
    Box::new(move |len, mime, local| {
        let Scope::Connection(owner) = req.scope else {
            return None;
        };
        if !local {
            return None;
        }
        let (tx, data) = mpsc::channel(STREAM_CHUNKS);
        told.store(true, Ordering::Relaxed);
        let found = Outcome::GetOk {
            mime: mime.to_string(),
            len,
            data: None,
        };
        let st = req.snapshot();
        let now = hub.now_ms();
        hub.send_to(owner, Out::Msg(terminal(&req, &found, &st, now).encode()));
        hub.send_to(
            owner,
            Out::Stream {
                header: all_data_header(&req, len, mime, now),
                len,
                data,
            },
        );
        Some(Box::new(StreamWriter { tx }))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: our write half (buffered, as the writer task
    /// has it) and the far end.
    async fn pair() -> (BufWriter<tokio::net::tcp::OwnedWriteHalf>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (near, _) = l.accept().await.unwrap();
        let (_, wr) = near.into_split();
        (BufWriter::new(wr), far)
    }

    #[tokio::test]
    async fn a_stream_is_written_whole_and_a_short_one_is_an_error() {
        let (mut wr, mut far) = pair().await;
        let close = CancellationToken::new();
        let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
        let feed = tokio::spawn(async move {
            for i in 0..10u8 {
                tx.send(vec![i; 1000]).await.unwrap();
            }
        });
        stream_out(&mut wr, b"AllData\nData\n", 10_000, rx, &close)
            .await
            .unwrap();
        feed.await.unwrap();
        drop(wr);
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..13], b"AllData\nData\n");
        assert_eq!(got.len(), 13 + 10_000);
        assert_eq!(got[13 + 9_999], 9);

        // The fetch fails half-way: its writer goes, the stream ends short.
        let (mut wr, _far) = pair().await;
        let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
        let mut w = StreamWriter { tx };
        let fetch = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            w.write_all(&[1; 500]).unwrap();
        });
        let e = stream_out(&mut wr, b"AllData\nData\n", 10_000, rx, &close)
            .await
            .unwrap_err();
        fetch.await.unwrap();
        assert!(e.to_string().contains("failed after its data began"), "{e}");

        // More than announced is refused too.
        let (mut wr, _far) = pair().await;
        let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
        tx.send(vec![0; 20]).await.unwrap();
        drop(tx);
        assert!(stream_out(&mut wr, b"H\n", 10, rx, &close).await.is_err());
    }

    #[tokio::test]
    async fn a_stream_writer_fails_once_the_connection_is_gone() {
        let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
        drop(rx);
        let e = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            StreamWriter { tx }.write_all(&[0; 10]).unwrap_err()
        })
        .await
        .unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
