//! The FCP 2.0 server: one task per connection reading with the
//! `lichen-fcp` decoder, one writer task per connection, requests run as
//! their own tasks and report through the [`Hub`].
//!
//! # Protocol flow
//!
//! ```text
//! accept (loopback or allow-listed, at most fcp.max_connections at once)
//!   reader: bytes -> Decoder -> Session (hello rule, collisions) -> dispatch
//!           big payloads are spooled to <data>/tmp as they arrive
//!   requests: spawned; progress and results go to every connection that
//!           should see them (its own connection, the client's connections
//!           for persistent requests, WatchGlobal connections for global ones)
//!   writer: a bounded queue; a client that stops reading is disconnected
//!           when the queue is full or a write stalls for WRITE_TIMEOUT
//! ```

use crate::config::client_allowed;
use crate::engine::{self, GetSpec, PutData, PutSpec, SiteFile};
use crate::node::{now_ms, Node};
use crate::requests::{Outcome, Progress, Request, Scope, State};
use crate::sealed::SealKey;
use lichen_crypto::ssk::SskPrivate;
use lichen_crypto::uri::{KeyUri, SskKey};
use lichen_crypto::FreenetUri;
use lichen_fcp::client::{
    ClientGet, ClientMessage, ClientPut, Persistence, ReturnType, UploadFrom,
};
use lichen_fcp::codec::Message;
use lichen_fcp::dda::{file_hash_salt, DdaChallenge};
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::session::Action;
use lichen_fcp::{
    Decoder, Event, FetchErrorCode, Fields, InsertErrorCode, Limits, ProtocolErrorCode, Session,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Messages queued for one connection before it counts as not reading.
const QUEUE: usize = 1024;
/// A write that makes no progress for this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// A message that stalls half-way for this long closes the connection.
const MID_MESSAGE_TIMEOUT: Duration = Duration::from_secs(300);
/// Payloads up to this size are buffered in memory; larger ones stream to disk.
const INLINE_LIMIT: u64 = 256 * 1024;
/// Chunks (about a segment, 4 MiB, each) of a streamed `AllData` queued
/// between the fetch and the connection's writer.
const STREAM_CHUNKS: usize = 4;
/// Largest `DataChunk` of a `ReturnType=chunked` get.
const DATA_CHUNK_MAX: usize = 1 << 20;
/// `DataChunk`s of one get queued for its connection and not yet written:
/// a client that reads slowly slows the fetch, with at most 4 MiB waiting.
const DATA_CHUNKS_QUEUED: usize = 4;

/// Something to send on a connection.
#[derive(Debug)]
pub enum Out {
    /// Bytes of a complete message.
    Msg(Vec<u8>),
    /// A message header followed by the contents of a file.
    File {
        /// Header bytes (ending in `Data\n`).
        header: Vec<u8>,
        /// File whose bytes follow.
        path: PathBuf,
        /// Bytes to send.
        len: u64,
        /// Delete the file afterwards.
        remove: bool,
        /// The file is sealed under this key ([`crate::sealed`]).
        seal: Option<SealKey>,
    },
    /// A `DataChunk` message; `_room` is the get's queue place, given back
    /// once the chunk is written (or dropped with the connection).
    Chunk {
        /// The whole message, header and data.
        bytes: Vec<u8>,
        /// Held until written.
        _room: tokio::sync::OwnedSemaphorePermit,
    },
    /// A message header followed by `len` bytes that arrive on `data` as a
    /// fetch decodes them. If `data` closes early the connection is
    /// closed: the message cannot be finished.
    Stream {
        /// Header bytes (ending in `Data\n`).
        header: Vec<u8>,
        /// Bytes announced in the header.
        len: u64,
        /// The bytes, in order.
        data: mpsc::Receiver<Vec<u8>>,
    },
}

#[derive(Debug)]
struct ConnEntry {
    tx: mpsc::Sender<Out>,
    client: Option<String>,
    watch_global: bool,
    close: CancellationToken,
}

/// The live connections, for delivering request messages.
#[derive(Debug, Default)]
pub struct Hub {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, ConnEntry>>,
}

impl Hub {
    fn register(&self, tx: mpsc::Sender<Out>, close: CancellationToken) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut m) = self.conns.lock() {
            m.insert(
                id,
                ConnEntry {
                    tx,
                    client: None,
                    watch_global: false,
                    close,
                },
            );
        }
        id
    }

    fn unregister(&self, id: u64) {
        if let Ok(mut m) = self.conns.lock() {
            m.remove(&id);
        }
    }

    fn update(&self, id: u64, client: Option<String>, watch_global: bool) {
        if let Ok(mut m) = self.conns.lock() {
            if let Some(c) = m.get_mut(&id) {
                c.client = client;
                c.watch_global = watch_global;
            }
        }
    }

    /// Number of open connections.
    #[must_use]
    pub fn len(&self) -> usize {
        self.conns.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no connection is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Send to one connection (see [`Hub::send_to`]).
    pub fn send_to_conn(&self, id: u64, out: Out) {
        self.send_to(id, out);
    }

    /// Send to one connection; false if it is gone. A full queue means
    /// the client stopped reading: it is disconnected rather than buffered
    /// without bound.
    fn send_to(&self, id: u64, out: Out) -> bool {
        let Ok(m) = self.conns.lock() else {
            return false;
        };
        let Some(c) = m.get(&id) else { return false };
        if c.tx.try_send(out).is_err() {
            tracing::debug!("FCP connection {id} is not reading its replies; closing it");
            c.close.cancel();
            return false;
        }
        true
    }

    /// Send a progress message: dropped for a connection whose queue is
    /// half full (a slow reader misses progress, never a result).
    pub fn deliver_progress(&self, req: &Request, msg: &Message) {
        let bytes = msg.encode();
        for id in self.audience(req) {
            let Ok(m) = self.conns.lock() else { return };
            if let Some(c) = m.get(&id) {
                if c.tx.capacity() > QUEUE / 2 {
                    let _ = c.tx.try_send(Out::Msg(bytes.clone()));
                }
            }
        }
    }

    /// The connections that should see a request's messages.
    fn audience(&self, req: &Request) -> Vec<u64> {
        let Ok(m) = self.conns.lock() else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = m
            .iter()
            .filter(|(id, c)| match &req.scope {
                Scope::Connection(owner) => *id == owner,
                Scope::Global => c.watch_global || req_origin(req) == Some(**id),
                Scope::Client(name) => c.client.as_deref() == Some(name.as_str()),
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Send a message to everyone who should see `req`'s messages.
    pub fn deliver(&self, req: &Request, msg: &Message) {
        let bytes = msg.encode();
        for id in self.audience(req) {
            self.send_to(id, Out::Msg(bytes.clone()));
        }
    }
}

fn req_origin(req: &Request) -> Option<u64> {
    req.header
        .get("X-Lichen-Origin")
        .and_then(|s| s.parse().ok())
}

/// Run the FCP server until the node shuts down.
///
/// # Errors
/// The listener could not be bound.
pub async fn serve(node: Arc<Node>, listener: TcpListener) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(node.config.fcp.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            () = node.shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("FCP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !client_allowed(peer.ip(), &node.config.fcp.allowed_hosts) {
            tracing::debug!("refused FCP client {peer}: not in fcp.allowed_hosts");
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!("too many FCP connections; refusing one");
            let mut s = stream;
            let msg = rep::ProtocolError::new(
                ProtocolErrorCode::InternalError,
                Some("too many connections".into()),
            )
            .to_message()
            .encode();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&msg)).await;
            });
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            connection(node, stream).await;
        });
    }
}

/// Restart the forever-persistent requests that had not finished.
pub fn resume(node: &Arc<Node>) {
    for req in node.requests.unfinished() {
        let parsed = ClientMessage::parse_header(&req.header, data_len(&req.header));
        match parsed {
            Ok(msg) => {
                tracing::info!("resuming a persistent request");
                start_request(node, req, msg, None);
            }
            Err(e) => tracing::warn!("cannot resume a persistent request: {}", e.extra),
        }
    }
}

fn data_len(header: &Message) -> Option<u64> {
    header.get("DataLength").and_then(|v| v.trim().parse().ok())
}

struct Conn {
    node: Arc<Node>,
    id: u64,
    session: Arc<Mutex<Session>>,
}

#[allow(clippy::large_enum_variant)] // one per connection
enum Upload {
    Idle,
    Spool {
        msg: Box<ClientMessage>,
        header: Message,
        path: PathBuf,
        file: BufWriter<tokio::fs::File>,
    },
    /// A direct ClientPut whose insert already runs, reading the payload
    /// from this channel as it arrives.
    Stream(mpsc::Sender<tokio_util::bytes::Bytes>),
    Discard,
}

/// A request's payload: spooled to a file, or streamed to the request.
enum Payload {
    Spooled(PathBuf),
    Streaming(engine::UploadStream),
}

/// Chunks of a streamed upload queued for the insert.
const UPLOAD_CHUNKS: usize = 16;

async fn connection(node: Arc<Node>, stream: TcpStream) {
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(QUEUE);
    let close = CancellationToken::new();
    let id = node.hub.register(tx, close.clone());
    let writer = tokio::spawn(writer(wr, rx, close.clone()));
    let mut rnd = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rnd);
    let hello = rep::NodeHello::lichen(
        rep::connection_identifier(rnd),
        vec![("ZSTD".to_string(), 0)],
    );
    let conn = Conn {
        node: node.clone(),
        id,
        session: Arc::new(Mutex::new(Session::new(hello))),
    };
    let mut dec = Decoder::new(Limits {
        max_data_length: node.config.fcp.max_upload_bytes,
        inline_data_limit: INLINE_LIMIT,
        ..Limits::default()
    });
    let mut upload = Upload::Idle;
    let mut buf = vec![0u8; 64 * 1024];
    'outer: loop {
        let idle = dec.is_idle() && matches!(upload, Upload::Idle);
        let read = async {
            if idle {
                rd.read(&mut buf).await
            } else {
                match tokio::time::timeout(MID_MESSAGE_TIMEOUT, rd.read(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::other("stalled mid-message")),
                }
            }
        };
        let n = tokio::select! {
            () = close.cancelled() => break,
            () = node.shutdown.cancelled() => break,
            r = read => match r { Ok(0) | Err(_) => break, Ok(n) => n },
        };
        dec.feed(&buf[..n]);
        loop {
            match dec.next_event() {
                Ok(None) => break,
                Ok(Some(ev)) => {
                    if !conn.on_event(ev, &mut upload).await {
                        break 'outer;
                    }
                }
                Err(e) => {
                    let action = lock(&conn.session).handle_decode_error(&e);
                    if !conn.act(action).await {
                        break 'outer;
                    }
                    if e.is_fatal() {
                        break 'outer;
                    }
                }
            }
        }
    }
    if let Upload::Spool { path, .. } = upload {
        let _ = tokio::fs::remove_file(path).await;
    }
    node.hub.unregister(id);
    crate::usk::connection_closed(id);
    // Connection-scoped requests die with their connection.
    for req in node.requests.list(&[Scope::Connection(id)]) {
        node.requests.remove(&req.scope, &req.identifier);
    }
    close.cancel();
    let _ = writer.await;
}

async fn writer(
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
            let f = tokio::fs::File::open(&path).await?;
            // 1 MiB reads: `tokio::io::copy` alone reads a file 8 KiB per
            // blocking-pool round trip.
            let f: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match seal {
                Some(key) => Box::new(crate::sealed::SealedReader::new(f, key, 0)),
                None => Box::new(f),
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
        // `unconstrained`: this thread is inside the runtime's `block_on`,
        // whose cooperative budget would never be refilled here, so a
        // budgeted channel would report Pending forever (a busy loop).
        futures::executor::block_on(tokio::task::unconstrained(self.tx.send(chunk))).map_err(|_| {
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
    node: Arc<Node>,
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
        // `unconstrained`: as for `StreamWriter::send`. Room comes back as
        // the connection's writer writes chunks, or drops them when the
        // connection ends.
        let room = futures::executor::block_on(tokio::task::unconstrained(
            self.room.clone().acquire_owned(),
        ))
        .map_err(|_| gone())?;
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
            .node
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
fn chunked_open(node: &Arc<Node>, req: &Arc<Request>) -> engine::StreamOpen {
    let node = node.clone();
    let req = req.clone();
    Box::new(move |len, mime, _local| {
        let Scope::Connection(owner) = req.scope else {
            return None;
        };
        Some(Box::new(ChunkWriter {
            node,
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
fn stream_open(node: &Arc<Node>, req: &Arc<Request>, told: Arc<AtomicBool>) -> engine::StreamOpen {
    let node = node.clone();
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
        node.hub
            .send_to(owner, Out::Msg(terminal(&req, &found, &st).encode()));
        node.hub.send_to(
            owner,
            Out::Stream {
                header: all_data_header(&req, len, mime),
                len,
                data,
            },
        );
        Some(Box::new(StreamWriter { tx }))
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Conn {
    fn send(&self, msg: &Message) {
        self.node.hub.send_to(self.id, Out::Msg(msg.encode()));
    }

    fn protocol_error(
        &self,
        code: ProtocolErrorCode,
        extra: &str,
        ident: Option<&str>,
        global: bool,
    ) {
        let mut e = rep::ProtocolError::new(code, Some(extra.to_string()));
        e.identifier = ident.map(str::to_string);
        e.global = global;
        self.send(&e.to_message());
    }

    /// Returns false when the connection must close.
    async fn act(&self, action: Action) -> bool {
        match action {
            Action::Reply(m) => {
                self.send(&m);
                let s = lock(&self.session);
                self.node.hub.update(
                    self.id,
                    s.client_name().map(str::to_string),
                    s.watching_global().is_some(),
                );
                true
            }
            Action::Reject { reply, close } => {
                self.send(&reply);
                !close
            }
            Action::Ignore => true,
            Action::Execute(msg) => self.execute(msg, None, None).await,
        }
    }

    async fn on_event(&self, ev: Event, upload: &mut Upload) -> bool {
        match ev {
            Event::Message(m) => {
                // Peer management is answered here (the typed parser in
                // lichen-fcp does not know these messages).
                if m.data.is_none()
                    && matches!(m.name.as_str(), "AddPeer" | "RemovePeer")
                    && lock(&self.session).hello_received()
                {
                    self.peer_message(&m).await;
                    return true;
                }
                let action = lock(&self.session).handle(&m);
                match (action, m.data) {
                    (Action::Execute(msg), Some(data)) => {
                        let path = self.node.tmp_path("upload");
                        if let Err(e) = tokio::fs::write(&path, &data).await {
                            tracing::warn!("cannot spool an upload: {e}");
                            self.release_ident(&msg);
                            self.protocol_error(
                                ProtocolErrorCode::InternalError,
                                "cannot spool upload",
                                None,
                                false,
                            );
                            return true;
                        }
                        let header = Message {
                            name: m.name,
                            fields: m.fields,
                            data: None,
                        };
                        self.execute(msg, Some(header), Some(Payload::Spooled(path)))
                            .await
                    }
                    (Action::Execute(msg), None) => {
                        let header = Message {
                            name: m.name,
                            fields: m.fields,
                            data: None,
                        };
                        self.execute(msg, Some(header), None).await
                    }
                    (a, _) => self.act(a).await,
                }
            }
            Event::Header {
                message,
                data_length,
            } => {
                let action = lock(&self.session).handle_header(&message, data_length);
                match action {
                    // A direct put that lives only as long as this
                    // connection: insert while the data arrives.
                    Action::Execute(
                        msg @ ClientMessage::ClientPut(ClientPut {
                            upload_from: UploadFrom::Direct { .. },
                            persistence: Persistence::Connection,
                            ..
                        }),
                    ) => {
                        let (tx, rx) = mpsc::channel(UPLOAD_CHUNKS);
                        *upload = Upload::Stream(tx);
                        let stream = engine::UploadStream::new(rx, data_length);
                        self.execute(msg, Some(message), Some(Payload::Streaming(stream)))
                            .await
                    }
                    Action::Execute(msg) => {
                        let path = self.node.tmp_path("upload");
                        match tokio::fs::File::create(&path).await {
                            Ok(f) => {
                                *upload = Upload::Spool {
                                    msg: Box::new(msg),
                                    header: message,
                                    path,
                                    file: BufWriter::with_capacity(1 << 20, f),
                                };
                            }
                            Err(e) => {
                                tracing::warn!("cannot spool an upload: {e}");
                                self.release_ident(&msg);
                                self.protocol_error(
                                    ProtocolErrorCode::InternalError,
                                    "cannot spool upload",
                                    None,
                                    false,
                                );
                                *upload = Upload::Discard;
                            }
                        }
                        true
                    }
                    other => {
                        *upload = Upload::Discard;
                        self.act(other).await
                    }
                }
            }
            Event::Data(chunk) => {
                if let Upload::Stream(tx) = upload {
                    // The insert gone (failed, or refused at start): the
                    // rest of the payload is read and dropped.
                    if tx.send(chunk).await.is_err() {
                        *upload = Upload::Discard;
                    }
                    return true;
                }
                if let Upload::Spool { file, .. } = upload {
                    if let Err(e) = file.write_all(&chunk).await {
                        tracing::warn!("cannot spool an upload: {e}");
                        if let Upload::Spool { msg, path, .. } =
                            std::mem::replace(upload, Upload::Discard)
                        {
                            let _ = tokio::fs::remove_file(path).await;
                            self.release_ident(&msg);
                            self.protocol_error(
                                ProtocolErrorCode::InternalError,
                                "cannot spool upload (disk full?)",
                                None,
                                false,
                            );
                        }
                    }
                }
                true
            }
            Event::DataEnd => match std::mem::replace(upload, Upload::Idle) {
                Upload::Spool {
                    msg,
                    header,
                    path,
                    mut file,
                } => {
                    if file.flush().await.is_err() {
                        let _ = tokio::fs::remove_file(&path).await;
                        self.release_ident(&msg);
                        self.protocol_error(
                            ProtocolErrorCode::InternalError,
                            "cannot spool upload",
                            None,
                            false,
                        );
                        return true;
                    }
                    drop(file);
                    self.execute(*msg, Some(header), Some(Payload::Spooled(path)))
                        .await
                }
                _ => true,
            },
        }
    }

    fn release_ident(&self, msg: &ClientMessage) {
        if let Some((id, g)) = msg.request_key() {
            lock(&self.session).release(id, g);
        }
    }

    fn scope(&self, persistence: Persistence, global: bool) -> Scope {
        if global {
            Scope::Global
        } else if persistence == Persistence::Connection {
            Scope::Connection(self.id)
        } else {
            Scope::Client(lock(&self.session).client_name().unwrap_or("").to_string())
        }
    }

    /// The queue a `Global=true` message names, else every queue this
    /// connection sees.
    fn scopes_for(&self, global: bool) -> Vec<Scope> {
        if global {
            vec![Scope::Global]
        } else {
            self.visible_scopes()
        }
    }

    fn no_such_identifier(&self, identifier: &str, global: bool) {
        self.protocol_error(
            ProtocolErrorCode::NoSuchIdentifier,
            "No such identifier",
            Some(identifier),
            global,
        );
    }

    fn visible_scopes(&self) -> Vec<Scope> {
        let s = lock(&self.session);
        let mut v = vec![
            Scope::Connection(self.id),
            Scope::Client(s.client_name().unwrap_or("").to_string()),
        ];
        if s.watching_global().is_some() {
            v.push(Scope::Global);
        }
        v
    }

    #[allow(clippy::too_many_lines)]
    async fn execute(
        &self,
        msg: ClientMessage,
        header: Option<Message>,
        upload: Option<Payload>,
    ) -> bool {
        let node = &self.node;
        match msg {
            ClientMessage::GenerateSsk(g) => {
                let k = SskPrivate::generate(&mut rand::rngs::OsRng);
                let ins = FreenetUri::new(KeyUri::Ssk {
                    key: SskKey::Private(k),
                    docname: String::new(),
                });
                let reply = rep::SskKeypair {
                    insert_uri: ins.to_string(),
                    request_uri: ins.to_request().to_string(),
                    identifier: g.identifier,
                };
                self.send(&reply.to_message());
            }
            ClientMessage::WatchGlobal(_) => {
                let s = lock(&self.session);
                node.hub.update(
                    self.id,
                    s.client_name().map(str::to_string),
                    s.watching_global().is_some(),
                );
            }
            ClientMessage::Disconnect => return false,
            ClientMessage::Shutdown => {
                tracing::info!("shutdown requested over FCP");
                node.shutdown.cancel();
                return false;
            }
            ClientMessage::GetNode(g) => {
                let mut f = Fields::new();
                f.push(
                    "identity",
                    // The identity peers see in ListPeers (a hash of the
                    // public static key; was a hash of the secret key).
                    crate::peers::identity_of(&node.identity.link_keys().static_public()),
                );
                f.push(
                    "location",
                    format!(
                        "{:.6}",
                        crate::status::location_fraction(node.identity.location)
                    ),
                );
                f.push("version", concat!("Lichen,", env!("CARGO_PKG_VERSION")));
                f.push(
                    "opennet",
                    lichen_fcp::fields::bool_str(node.config.network.opennet),
                );
                if g.with_volatile {
                    let st = node.store.stats();
                    f.push("volatile.startupTime", node.started_ms.to_string());
                    f.push("volatile.storeBytes", st.total_bytes().to_string());
                    f.push("volatile.numberOfConnected", node.peer_count().to_string());
                    if let Some(net) = node.peers.get() {
                        // Real counters of the routing core (lichen_routing::Stats).
                        let s = net.stats();
                        for (name, v) in [
                            ("badBlocks", s.bad_blocks),
                            ("misbehaviour", s.misbehaviour),
                            ("disconnectedMisbehaving", s.disconnected_misbehaving),
                            ("seedClients", s.seed_clients),
                            ("loopsRejected", s.loops_rejected),
                            ("overloadRejected", s.overload_rejected),
                            ("recentlyFailed", s.recently_failed),
                            ("coalesced", s.coalesced),
                            ("servedFromStore", s.served_from_store),
                            ("unexpectedReplies", s.unexpected_replies),
                            ("backoffWaits", s.backoff_waits),
                            ("droppedLeastUseful", s.dropped_least_useful),
                            ("insertsForked", s.inserts_forked),
                        ] {
                            f.push(format!("volatile.lichen.{name}"), v.to_string());
                        }
                    }
                }
                self.send(
                    &rep::NodeData {
                        fields: f,
                        identifier: g.identifier,
                    }
                    .to_message(),
                );
            }
            ClientMessage::ListPeers(l) => {
                for m in crate::peers::fcp::list_peers(
                    node,
                    l.identifier,
                    l.with_metadata,
                    l.with_volatile,
                )
                .await
                {
                    self.send(&m);
                }
            }
            ClientMessage::TestDdaRequest(r) => {
                self.test_dda_request(&r.directory, r.want_read, r.want_write)
                    .await
            }
            ClientMessage::TestDdaResponse(r) => {
                let pending = lock(&self.session).dda_pending(&r.directory).cloned();
                let written = match pending.as_ref().and_then(|p| p.write.as_ref()) {
                    Some((f, _)) => {
                        let c = tokio::fs::read_to_string(f).await.ok();
                        let _ = tokio::fs::remove_file(f).await;
                        c
                    }
                    None => None,
                };
                if let Some((f, _)) = pending.as_ref().and_then(|p| p.read.as_ref()) {
                    let _ = tokio::fs::remove_file(f).await;
                }
                let canonical = tokio::fs::canonicalize(&r.directory)
                    .await
                    .unwrap_or_else(|_| PathBuf::from(&r.directory));
                let reply = lock(&self.session).dda_complete(
                    &r.directory,
                    &canonical,
                    r.read_content.as_deref(),
                    written.as_deref(),
                );
                if let Some(m) = reply {
                    self.send(&m);
                }
            }
            ClientMessage::ListPersistentRequests(l) => {
                for req in node.requests.list(&self.visible_scopes()) {
                    if req.persistence == Persistence::Connection {
                        continue;
                    }
                    for m in describe(&req, false) {
                        self.send(&rep::with_list_request_identifier(
                            m,
                            l.identifier.as_deref(),
                        ));
                    }
                }
                self.send(
                    &rep::EndListPersistentRequests {
                        identifier: l.identifier,
                    }
                    .to_message(),
                );
            }
            ClientMessage::GetRequestStatus(g) => {
                let scope_list = self.scopes_for(g.global);
                let found = scope_list
                    .iter()
                    .find_map(|s| node.requests.get(s, &g.identifier));
                match found {
                    Some(req) => {
                        let msgs = describe(&req, true);
                        for m in msgs {
                            self.send(&m);
                        }
                        if let Some(Outcome::GetOk {
                            data: Some(path),
                            len,
                            mime,
                        }) = req.snapshot().outcome
                        {
                            self.send_all_data(&req, &path, len, &mime, false);
                        }
                    }
                    None => self.no_such_identifier(&g.identifier, g.global),
                }
            }
            ClientMessage::RemovePersistentRequest(r) => {
                let scopes = self.scopes_for(r.global);
                let removed = scopes
                    .iter()
                    .find_map(|s| node.requests.remove(s, &r.identifier));
                match removed {
                    Some(_) => self.send(
                        &rep::PersistentRequestRemoved {
                            identifier: r.identifier,
                            global: r.global,
                        }
                        .to_message(),
                    ),
                    None => self.no_such_identifier(&r.identifier, r.global),
                }
            }
            ClientMessage::ModifyPersistentRequest(m) => {
                let scopes = self.scopes_for(m.global);
                if scopes
                    .iter()
                    .any(|s| node.requests.contains(s, &m.identifier))
                {
                    self.send(
                        &rep::PersistentRequestModified {
                            identifier: m.identifier,
                            global: m.global,
                            client_token: m.client_token,
                            priority_class: m.priority_class,
                        }
                        .to_message(),
                    );
                } else {
                    self.no_such_identifier(&m.identifier, m.global);
                }
            }
            ClientMessage::SubscribeUsk(s) => {
                crate::usk::subscribe(node.clone(), self.id, s);
            }
            ClientMessage::UnsubscribeUsk(u) => {
                crate::usk::unsubscribe(self.id, &u.identifier);
                lock(&self.session).release(&u.identifier, false);
            }
            m @ (ClientMessage::ClientPut(_)
            | ClientMessage::ClientGet(_)
            | ClientMessage::ClientPutComplexDir(_)
            | ClientMessage::ClientPutDiskDir(_)) => {
                self.start(m, header, upload).await;
            }
            _ => {}
        }
        true
    }

    async fn test_dda_request(&self, directory: &str, want_read: bool, want_write: bool) {
        let dir = Path::new(directory);
        let token = |n: usize| -> String {
            let mut b = vec![0u8; n];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
            b.iter().map(|x| format!("{x:02x}")).collect()
        };
        let mut read = None;
        if want_read {
            let name = dir.join(format!("DDACheck-{}.tmp", token(8)));
            let content = token(16);
            if tokio::fs::write(&name, &content).await.is_err() {
                self.protocol_error(
                    ProtocolErrorCode::CouldNotCreateFile,
                    "cannot write the read-test file",
                    None,
                    false,
                );
                return;
            }
            read = Some((name.to_string_lossy().into_owned(), content));
        }
        let write = want_write.then(|| {
            (
                dir.join(format!("DDACheck-{}.tmp", token(8)))
                    .to_string_lossy()
                    .into_owned(),
                token(16),
            )
        });
        let reply = lock(&self.session).dda_challenge(DdaChallenge {
            directory: directory.to_string(),
            read,
            write,
        });
        self.send(&reply);
    }

    /// `AddPeer` / `RemovePeer` (see `peers::fcp`).
    async fn peer_message(&self, m: &Message) {
        use crate::peers::fcp as fcp_peers;
        let reply = if m.name == "AddPeer" {
            let allowed = |p: &Path| self.disk_allowed(p, false);
            fcp_peers::add_peer(&self.node, &m.fields, &allowed).await
        } else {
            fcp_peers::remove_peer(&self.node, &m.fields).await
        };
        self.send(&reply);
    }

    /// Whether this connection may read (`write == false`) or write `path`.
    fn disk_allowed(&self, path: &Path, write: bool) -> bool {
        self.node.config.fcp.allowed_dirs.iter().any(|d| {
            std::fs::canonicalize(d).is_ok_and(|d| lichen_fcp::dda::path_is_within(path, &d))
        }) || lock(&self.session).dda_allows(path, write)
    }

    async fn start(&self, msg: ClientMessage, header: Option<Message>, payload: Option<Payload>) {
        let (upload, stream) = match payload {
            Some(Payload::Spooled(p)) => (Some(p), None),
            Some(Payload::Streaming(s)) => (None, Some(s)),
            None => (None, None),
        };
        let Some((ident, global)) = msg.request_key().map(|(i, g)| (i.to_string(), g)) else {
            return;
        };
        let persistence = match &msg {
            ClientMessage::ClientPut(p) => p.persistence,
            ClientMessage::ClientGet(g) => g.persistence,
            ClientMessage::ClientPutComplexDir(d) => d.options.persistence,
            ClientMessage::ClientPutDiskDir(d) => d.options.persistence,
            _ => Persistence::Connection,
        };
        let fail = |code: ProtocolErrorCode, extra: &str| {
            lock(&self.session).release(&ident, global);
            if let Some(u) = &upload {
                let _ = std::fs::remove_file(u);
            }
            self.protocol_error(code, extra, Some(&ident), global);
        };
        // Disk access checks happen here, on the connection that asked.
        match &msg {
            ClientMessage::ClientPut(ClientPut {
                upload_from:
                    UploadFrom::Disk {
                        filename,
                        file_hash,
                    },
                identifier,
                ..
            }) => {
                let Ok(path) = tokio::fs::canonicalize(filename).await else {
                    return fail(
                        ProtocolErrorCode::FileNotFound,
                        "File not found, not a file or not readable",
                    );
                };
                if !path.is_file() {
                    return fail(ProtocolErrorCode::NotAFileError, "Filepath is not a file");
                }
                let allowed = self.disk_allowed(&path, false)
                    || match file_hash {
                        Some(h) => {
                            let salt = file_hash_salt(
                                lock(&self.session).connection_identifier(),
                                identifier,
                            );
                            file_hash_matches(&path, &salt, h).await
                        }
                        None => false,
                    };
                if !allowed {
                    return fail(ProtocolErrorCode::DirectDiskAccessDenied, "Direct Disk Access operation denied: did you send a FileHash field ? Did you use TestDDA?");
                }
            }
            ClientMessage::ClientGet(ClientGet {
                return_type: ReturnType::Disk,
                filename,
                ..
            }) => {
                let Some(f) = filename else {
                    return fail(ProtocolErrorCode::MissingField, "Missing field Filename");
                };
                let p = Path::new(f);
                let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
                let (Ok(dir), Some(name)) = (tokio::fs::canonicalize(&parent).await, p.file_name())
                else {
                    return fail(
                        ProtocolErrorCode::CouldNotCreateFile,
                        "Could not create file",
                    );
                };
                if !self.disk_allowed(&dir.join(name), true) {
                    return fail(ProtocolErrorCode::DirectDiskAccessDenied, "Direct Disk Access operation denied: did you send a FileHash field ? Did you use TestDDA?");
                }
                if dir.join(name).exists() {
                    return fail(
                        ProtocolErrorCode::DiskTargetExists,
                        "Disk target exists, refusing to overwrite for security reasons",
                    );
                }
            }
            ClientMessage::ClientPutDiskDir(d) => {
                let Ok(path) = tokio::fs::canonicalize(&d.filename).await else {
                    return fail(
                        ProtocolErrorCode::FileNotFound,
                        "File not found, not a file or not readable",
                    );
                };
                if !path.is_dir() || !self.disk_allowed(&path, false) {
                    return fail(
                        ProtocolErrorCode::DirectDiskAccessDenied,
                        "Direct Disk Access operation denied: did you use TestDDA?",
                    );
                }
            }
            ClientMessage::ClientPutComplexDir(d) => {
                for f in &d.files {
                    if let UploadFrom::Disk { filename, .. } = &f.upload_from {
                        let ok = match tokio::fs::canonicalize(filename).await {
                            Ok(p) => p.is_file() && self.disk_allowed(&p, false),
                            Err(_) => false,
                        };
                        if !ok {
                            return fail(ProtocolErrorCode::DirectDiskAccessDenied, "Direct Disk Access operation denied for a file of the site: did you use TestDDA?");
                        }
                    }
                }
            }
            _ => {}
        }
        let uri_field = match &msg {
            ClientMessage::ClientPut(p) => &p.uri,
            ClientMessage::ClientGet(g) => &g.uri,
            ClientMessage::ClientPutComplexDir(d) => &d.options.uri,
            ClientMessage::ClientPutDiskDir(d) => &d.options.uri,
            _ => return,
        };
        if let Err(e) = FreenetUri::parse(uri_field) {
            return fail(
                ProtocolErrorCode::FreenetUriParseError,
                &format!("Error parsing freenet URI: {e}"),
            );
        }
        let scope = self.scope(persistence, global);
        let mut header = header.unwrap_or_else(|| Message::new("Unknown"));
        if scope == Scope::Global {
            header.fields.set("X-Lichen-Origin", self.id.to_string());
        }
        // Forever requests keep their upload in the request directory, so
        // that it survives the restart that empties tmp/.
        let upload = match (upload, persistence) {
            (Some(u), Persistence::Forever) => {
                let dest = self
                    .node
                    .requests
                    .dir()
                    .join(format!("upload-{:016x}", rand::random::<u64>()));
                match tokio::fs::rename(&u, &dest).await {
                    Ok(()) => Some(dest),
                    Err(_) => Some(u),
                }
            }
            (u, _) => u,
        };
        let req = Arc::new(Request {
            scope: scope.clone(),
            identifier: ident.clone(),
            header,
            persistence,
            upload,
            stream,
            started_ms: now_ms(),
            cancel: CancellationToken::new(),
            state: Mutex::new(State::default()),
        });
        if !self.node.requests.insert(req.clone()) {
            lock(&self.session).release(&ident, global);
            if let Some(u) = &req.upload {
                let _ = std::fs::remove_file(u);
            }
            self.send(
                &rep::IdentifierCollision {
                    identifier: ident,
                    global,
                }
                .to_message(),
            );
            return;
        }
        start_request(&self.node, req, msg, Some(self.session.clone()));
    }
}

async fn file_hash_matches(path: &Path, salt: &str, want: &str) -> bool {
    let Some(want) = lichen_fcp::dda::decode_file_hash(want) else {
        return false;
    };
    let path = path.to_path_buf();
    let salt = salt.to_string();
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        use std::io::Read;
        let mut h = sha2::Sha256::new();
        h.update(salt.as_bytes());
        let Ok(mut f) = std::fs::File::open(&path) else {
            return false;
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(_) => return false,
            }
        }
        <[u8; 32]>::from(h.finalize()) == want
    })
    .await
    .unwrap_or(false)
}

/// The messages that describe a request: its Persistent* message (when
/// `with_persistent` or it is persistent) and its terminal message if done.
fn describe(req: &Request, with_persistent: bool) -> Vec<Message> {
    let mut out = Vec::new();
    let parsed = ClientMessage::parse_header(&req.header, data_len(&req.header));
    let st = req.snapshot();
    let global = req.global();
    if let Ok(msg) = &parsed {
        if with_persistent || req.persistence != Persistence::Connection {
            match msg {
                ClientMessage::ClientGet(g) => out.push(
                    rep::PersistentGet {
                        identifier: g.identifier.clone(),
                        uri: g.uri.clone(),
                        verbosity: g.verbosity,
                        return_type: g.return_type,
                        persistence: g.persistence,
                        filename: g.filename.clone(),
                        priority_class: g.priority_class,
                        client_token: g.client_token.clone(),
                        global,
                        started: true,
                        max_retries: g.max_retries,
                        binary_blob: g.binary_blob,
                        max_size: g.max_size,
                        real_time: g.real_time,
                    }
                    .to_message(),
                ),
                ClientMessage::ClientPut(p) => out.push(
                    rep::PersistentPut {
                        identifier: p.identifier.clone(),
                        uri: p.uri.clone(),
                        private_uri: None,
                        verbosity: p.verbosity,
                        priority_class: p.priority_class,
                        upload_from: p.upload_from.clone(),
                        persistence: p.persistence,
                        content_type: p.content_type.clone(),
                        global,
                        data_length: data_len(&req.header),
                        client_token: p.client_token.clone(),
                        started: true,
                        max_retries: p.max_retries,
                        target_filename: p.target_filename.clone(),
                        binary_blob: p.binary_blob,
                        compatibility_mode: "COMPAT_CURRENT".into(),
                        dont_compress: p.dont_compress,
                        codecs: p.codecs.clone(),
                        real_time: p.real_time,
                    }
                    .to_message(),
                ),
                ClientMessage::ClientPutComplexDir(d) => {
                    out.push(put_dir_message(&d.options, global, false, &d.files))
                }
                ClientMessage::ClientPutDiskDir(d) => {
                    out.push(put_dir_message(&d.options, global, true, &[]))
                }
                _ => {}
            }
        }
    }
    if let Some(o) = &st.outcome {
        out.push(terminal(req, o, &st));
    } else if let Some(uri) = &st.uri {
        out.push(
            rep::UriGenerated {
                identifier: req.identifier.clone(),
                global,
                uri: uri.clone(),
            }
            .to_message(),
        );
    }
    out
}

fn put_dir_message(
    o: &lichen_fcp::client::PutDirOptions,
    global: bool,
    disk: bool,
    files: &[lichen_fcp::client::DirFile],
) -> Message {
    rep::PersistentPutDir {
        identifier: o.identifier.clone(),
        uri: o.uri.clone(),
        private_uri: None,
        verbosity: o.verbosity,
        persistence: o.persistence,
        priority_class: o.priority_class,
        global,
        disk,
        compatibility_mode: "COMPAT_CURRENT".into(),
        default_name: o.default_name.clone(),
        files: files
            .iter()
            .map(|f| rep::PutDirFile {
                name: f.name.clone(),
                upload_from: f.upload_from.clone(),
                data_length: match f.upload_from {
                    UploadFrom::Direct { data_length } => Some(data_length),
                    _ => None,
                },
                content_type: f.content_type.clone(),
            })
            .collect(),
        client_token: o.client_token.clone(),
        started: true,
        max_retries: o.max_retries,
        dont_compress: o.dont_compress,
        codecs: o.codecs.clone(),
        real_time: o.real_time,
    }
    .to_message()
}

fn terminal(req: &Request, o: &Outcome, st: &State) -> Message {
    let identifier = req.identifier.clone();
    let global = req.global();
    let completion = st.completed_ms.unwrap_or_else(now_ms);
    match o {
        Outcome::PutOk {
            uri,
            in_network,
            push_error,
        } => {
            let m = rep::PutSuccessful {
                identifier,
                global,
                uri: uri.clone(),
                startup_time: req.started_ms,
                completion_time: completion,
            }
            .to_message()
            // Without peers the insert lives in this node's client cache
            // only until it is pushed. Clients that know the field tell
            // their user; others ignore it.
            .field(
                "Lichen.InNetwork",
                lichen_fcp::fields::bool_str(*in_network),
            );
            match push_error {
                // Pushing it once peers came failed: insert it again.
                Some(e) => m.field("Lichen.PushFailed", e.clone()),
                None => m,
            }
        }
        Outcome::PutErr { code, extra } => {
            let code = InsertErrorCode::from_code(*code).unwrap_or(InsertErrorCode::InternalError);
            let mut m = rep::PutFailed {
                identifier,
                global,
                code,
                extra: extra.clone(),
                expected_uri: st.uri.clone(),
            }
            .to_message();
            // fred's text for 14 speaks of 64 TB files; Lichen's reason
            // (e.g. the client cache size without peers) is what a client
            // showing CodeDescription should show.
            if let (InsertErrorCode::TooBig, Some(e)) = (code, extra) {
                m.fields.set("CodeDescription", e.clone());
            }
            m
        }
        Outcome::GetOk { mime, len, .. } => rep::DataFound {
            identifier,
            global,
            content_type: mime.clone(),
            data_length: *len,
            startup_time: req.started_ms,
            completion_time: completion,
        }
        .to_message(),
        Outcome::GetErr {
            code,
            extra,
            redirect,
        } => {
            let code = FetchErrorCode::from_code(*code).unwrap_or(FetchErrorCode::InternalError);
            let mut g = rep::GetFailed::new(identifier, global, code);
            g.extra = extra.clone();
            g.redirect_uri = redirect.clone();
            g.to_message()
        }
    }
}

impl Conn {
    fn send_all_data(&self, req: &Request, path: &Path, len: u64, mime: &str, remove: bool) {
        self.node.hub.send_to(
            self.id,
            Out::File {
                header: all_data_header(req, len, mime),
                path: path.to_path_buf(),
                len,
                remove,
                seal: None,
            },
        );
    }
}

/// The `AllData` header of a finished direct get (the data follows from a file).
fn all_data_header(req: &Request, len: u64, mime: &str) -> Vec<u8> {
    rep::AllData {
        identifier: req.identifier.clone(),
        global: req.global(),
        data_length: len,
        startup_time: req.started_ms,
        completion_time: req.snapshot().completed_ms.unwrap_or_else(now_ms),
        content_type: Some(mime.to_string()),
    }
    .header()
}

/// Spawn the task that runs a request and reports to its audience.
fn start_request(
    node: &Arc<Node>,
    req: Arc<Request>,
    msg: ClientMessage,
    session: Option<Arc<Mutex<Session>>>,
) {
    let node = node.clone();
    tokio::spawn(async move {
        let cancel = req.cancel.clone();
        let told = Arc::new(AtomicBool::new(false));
        let run = run_request(node.clone(), req.clone(), msg, told.clone());
        let outcome = tokio::select! {
            o = run => o,
            () = cancel.cancelled() => None,
            () = node.shutdown.cancelled() => None,
        };
        let Some((outcome, direct)) = outcome else {
            return; // removed, disconnected or shutting down: nobody to tell
        };
        node.requests.finish(&req, outcome.clone(), now_ms());
        let st = req.snapshot();
        if !told.load(Ordering::Relaxed) {
            node.hub.deliver(&req, &terminal(&req, &outcome, &st));
        }
        if let (Outcome::GetOk { len, mime, .. }, Some((path, seal))) = (&outcome, direct) {
            // Direct data goes straight to the audience; persistent
            // requests keep a copy for GetRequestStatus.
            let keep = req.persistence != Persistence::Connection;
            let ids = node.hub.audience(&req);
            if ids.is_empty() && !keep {
                let _ = tokio::fs::remove_file(&path).await;
            }
            let header = all_data_header(&req, *len, mime);
            let n = ids.len();
            for (i, id) in ids.into_iter().enumerate() {
                node.hub.send_to(
                    id,
                    Out::File {
                        header: header.clone(),
                        path: path.clone(),
                        len: *len,
                        remove: !keep && i + 1 == n,
                        seal: seal.clone(),
                    },
                );
            }
        }
        if req.persistence == Persistence::Connection {
            node.requests.remove(&req.scope, &req.identifier);
            if let Some(s) = session {
                lock(&s).release(&req.identifier, req.global());
            }
        }
    });
}

/// Where a put's (or a site file's) data comes from. A direct upload is
/// `offset`.. of the spooled payload; an empty direct file needs none.
async fn put_data(
    from: &UploadFrom,
    upload: Option<&Path>,
    offset: u64,
) -> Result<PutData, Outcome> {
    Ok(match from {
        UploadFrom::Direct { data_length } => match upload {
            Some(path) => PutData::File {
                path: path.to_path_buf(),
                offset,
                len: *data_length,
            },
            None if *data_length == 0 => PutData::Empty,
            None => {
                return Err(Outcome::put_err(
                    InsertErrorCode::BucketError,
                    Some("upload data lost".to_string()),
                ))
            }
        },
        UploadFrom::Disk { filename, .. } => {
            let len = tokio::fs::metadata(filename)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            PutData::File {
                path: PathBuf::from(filename),
                offset: 0,
                len,
            }
        }
        UploadFrom::Redirect { target_uri } => PutData::Redirect(target_uri.clone()),
    })
}

/// The outcome of a finished put, site or file.
fn put_outcome(out: Result<engine::PutDone, engine::Failure<InsertErrorCode>>) -> Outcome {
    match out {
        Ok(d) => Outcome::PutOk {
            uri: d.uri,
            in_network: d.in_network,
            push_error: None,
        },
        Err(f) => Outcome::PutErr {
            code: f.code.code(),
            extra: f.extra,
        },
    }
}

/// The request a background push reports to.
fn push_ref(req: &Request) -> crate::push::RequestRef {
    crate::push::RequestRef {
        scope: req.scope.clone(),
        identifier: req.identifier.clone(),
        started_ms: req.started_ms,
    }
}

/// Run one request; returns its outcome and, for direct gets, the file
/// holding the data.
async fn run_request(
    node: Arc<Node>,
    req: Arc<Request>,
    msg: ClientMessage,
    told: Arc<AtomicBool>,
) -> Option<(Outcome, Option<(PathBuf, Option<SealKey>)>)> {
    let verbosity = match &msg {
        ClientMessage::ClientPut(p) => p.verbosity,
        ClientMessage::ClientGet(g) => g.verbosity,
        ClientMessage::ClientPutComplexDir(d) => d.options.verbosity,
        ClientMessage::ClientPutDiskDir(d) => d.options.verbosity,
        _ => lichen_fcp::client::Verbosity(0),
    };
    let progress = {
        let node = node.clone();
        let req = req.clone();
        let last = Mutex::new(0u64);
        let told = told.clone();
        move |p: Progress| {
            if let Ok(mut s) = req.state.lock() {
                s.progress = p;
            }
            // Nothing may follow a streamed AllData's DataFound.
            if !verbosity.simple_progress() || told.load(Ordering::Relaxed) {
                return;
            }
            let now = now_ms();
            {
                let mut l = lock(&last);
                // At most two a second, but always the last one.
                if now.saturating_sub(*l) < 500 && p.succeeded < p.required {
                    return;
                }
                *l = now;
            }
            let m = rep::SimpleProgress {
                identifier: req.identifier.clone(),
                global: req.global(),
                total: p.total,
                required: p.required,
                failed: p.failed,
                fatally_failed: 0,
                succeeded: p.succeeded,
                last_progress: now,
                finalized_total: p.finalized,
            }
            .to_message();
            node.hub.deliver_progress(&req, &m);
        }
    };
    let uri_generated = {
        let node = node.clone();
        let req = req.clone();
        move |uri: String| {
            if let Ok(mut s) = req.state.lock() {
                if s.uri.as_deref() == Some(uri.as_str()) {
                    return;
                }
                s.uri = Some(uri.clone());
            }
            node.hub.deliver(
                &req,
                &rep::UriGenerated {
                    identifier: req.identifier.clone(),
                    global: req.global(),
                    uri,
                }
                .to_message(),
            );
        }
    };
    match msg {
        ClientMessage::ClientPut(p) => {
            let data = match &req.stream {
                Some(s) => PutData::Stream(s.clone()),
                None => match put_data(&p.upload_from, req.upload.as_deref(), 0).await {
                    Ok(d) => d,
                    Err(o) => return Some((o, None)),
                },
            };
            let spec = PutSpec {
                uri: p.uri.clone(),
                data,
                mime: p.content_type.clone(),
                dont_compress: p.dont_compress,
                chk_only: p.get_chk_only,
                target_filename: p.target_filename.clone(),
            };
            let out =
                engine::put_with(&node, spec, Some(push_ref(&req)), &uri_generated, &progress)
                    .await;
            if p.persistence == Persistence::Connection {
                if let Some(u) = &req.upload {
                    let _ = tokio::fs::remove_file(u).await;
                }
            }
            Some((put_outcome(out), None))
        }
        ClientMessage::ClientGet(g) => {
            let direct = g.return_type == ReturnType::Direct;
            let out_path = match g.return_type {
                ReturnType::Direct => Some(if req.persistence == Persistence::Forever {
                    node.requests
                        .dir()
                        .join(format!("data-{:016x}", rand::random::<u64>()))
                } else {
                    node.tmp_path("get")
                }),
                ReturnType::Disk => g.filename.as_ref().map(PathBuf::from),
                // Chunked data goes to the connection as it is decoded.
                ReturnType::None | ReturnType::Chunked => None,
            };
            // A result that only waits to be sent on this connection is
            // sealed; persistent ones must survive a restart (their files
            // are in the request directory, under the data directory).
            let seal = (direct && req.persistence == Persistence::Connection).then(SealKey::random);
            let spec = GetSpec {
                uri: g.uri.clone(),
                max_size: g.max_size,
                out: out_path.clone(),
                seal: seal.clone(),
                ds_only: g.ds_only,
                ignore_ds: g.ignore_ds,
                retries: g.max_retries,
                write_client_cache: g.write_to_client_cache,
            };
            let stream = if g.return_type == ReturnType::Chunked {
                Some(chunked_open(&node, &req))
            } else {
                (direct && matches!(req.scope, Scope::Connection(_)))
                    .then(|| stream_open(&node, &req, told.clone()))
            };
            match engine::get_streaming(&node, spec, stream, &progress).await {
                Ok(done) => {
                    let data = if direct && req.persistence != Persistence::Connection {
                        out_path.clone()
                    } else {
                        None
                    };
                    Some((
                        Outcome::GetOk {
                            mime: done.mime,
                            len: done.len,
                            data,
                        },
                        if direct && !done.streamed {
                            out_path.map(|p| (p, seal))
                        } else {
                            None
                        },
                    ))
                }
                Err(f) => {
                    if direct {
                        if let Some(p) = &out_path {
                            let _ = tokio::fs::remove_file(p).await;
                        }
                    }
                    Some((
                        Outcome::GetErr {
                            code: f.code.code(),
                            extra: f.extra,
                            redirect: f.redirect,
                        },
                        None,
                    ))
                }
            }
        }
        ClientMessage::ClientPutComplexDir(d) => {
            let mut files = Vec::new();
            for f in &d.files {
                let data =
                    match put_data(&f.upload_from, req.upload.as_deref(), f.data_offset).await {
                        Ok(d) => d,
                        Err(o) => return Some((o, None)),
                    };
                files.push(SiteFile {
                    name: f.name.clone(),
                    data,
                    mime: f.content_type.clone(),
                });
            }
            let out = engine::put_site_with(
                &node,
                &d.options.uri,
                files,
                d.options.default_name.clone(),
                Some(push_ref(&req)),
                &uri_generated,
                &progress,
            )
            .await;
            if d.options.persistence == Persistence::Connection {
                if let Some(u) = &req.upload {
                    let _ = tokio::fs::remove_file(u).await;
                }
            }
            Some((put_outcome(out), None))
        }
        ClientMessage::ClientPutDiskDir(d) => {
            let files = match engine::scan_dir(Path::new(&d.filename), d.include_hidden_files).await
            {
                Ok(f) => f,
                Err(e) => {
                    return Some((
                        Outcome::put_err(InsertErrorCode::BucketError, Some(e)),
                        None,
                    ))
                }
            };
            let out = engine::put_site_with(
                &node,
                &d.options.uri,
                files,
                d.options.default_name.clone(),
                Some(push_ref(&req)),
                &uri_generated,
                &progress,
            )
            .await;
            Some((put_outcome(out), None))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
