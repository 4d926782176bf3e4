//! The thin tokio driver of a link: the handshake loop, then a reader task
//! and a writer task sharing the [`Transport`] behind a mutex that is held
//! only while sealing or opening one frame (never across an `.await`).
//!
//! - Backpressure: the send queue is bounded in bytes
//!   ([`LinkConfig::send_queue_bytes`], counting each block's length), not
//!   in messages: a queue of 64 messages overflowed under a few dozen
//!   routed fetches, and every dropped reply cost a request its accept
//!   timeout. [`LinkSender::send`] waits when it is full,
//!   [`LinkSender::try_send`] fails with [`LinkError::QueueFull`]. Incoming messages go into a
//!   bounded channel too; while it is full the reader stops reading, and
//!   TCP pushes back on the peer.
//! - Bandwidth: every byte written takes upload tokens, every byte read
//!   takes download tokens, from node-wide [`Bandwidth`] buckets.
//! - Keepalive: the writer sends `Ping` after [`LinkConfig::keepalive`]
//!   without traffic; the reader gives up after
//!   [`LinkConfig::idle_timeout`] without a frame.
//! - Any peer error (see [`LinkError::is_peer_fault`]) ends the link; the
//!   last event is always [`LinkEvent::Closed`].

use super::bandwidth::Bandwidth;
use super::error::LinkError;
use super::frame::LinkMessage;
use super::handshake::{Handshake, HsAction};
use super::keys::NodeKeys;
use super::noderef::NodeRef;
use super::sockets::canonical;
use super::transport::{Opened, RekeyPolicy, Transport};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Link settings.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Bytes (block lengths plus a fixed cost per message) queued for
    /// sending before senders wait. One message is always accepted into an
    /// empty queue, whatever its size.
    pub send_queue_bytes: usize,
    /// Messages received and not yet taken before the reader stops reading.
    pub recv_queue: usize,
    /// Send a `Ping` after this long without sending.
    pub keepalive: Duration,
    /// Close the link after this long without receiving a frame.
    pub idle_timeout: Duration,
    /// Time allowed for TCP connect plus the handshake.
    pub handshake_timeout: Duration,
    /// When to rekey.
    pub rekey: RekeyPolicy,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            send_queue_bytes: 8 << 20,
            recv_queue: 256,
            keepalive: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            rekey: RekeyPolicy::default(),
        }
    }
}

/// What a link delivers.
#[derive(Debug)]
pub enum LinkEvent {
    /// A routing message from the peer.
    Message(lichen_routing::Message),
    /// The link ended; [`LinkError::Closed`] for a clean close. Always the
    /// last event.
    Closed(LinkError),
}

/// Fixed cost of one queued message, beside any block it carries.
const MESSAGE_COST: usize = 256;

/// What a queued message counts against [`LinkConfig::send_queue_bytes`].
fn queue_cost(msg: &LinkMessage) -> usize {
    use lichen_routing::Message as M;
    match msg {
        LinkMessage::Routing(
            M::DataFound { block, .. } | M::InsertData { block, .. } | M::Collision { block, .. },
        ) => MESSAGE_COST + block.len(),
        _ => MESSAGE_COST,
    }
}

/// The send queue: a channel bounded by the bytes it holds.
#[derive(Debug)]
struct SendQueue {
    tx: mpsc::UnboundedSender<(LinkMessage, usize)>,
    bytes: AtomicUsize,
    limit: usize,
    space: Notify,
    /// Bytes written to the socket since the link came up (after the
    /// handshake: sealed records, padding included).
    sent: AtomicU64,
    /// Bytes read from the socket since the link came up.
    received: AtomicU64,
}

impl SendQueue {
    fn try_push(&self, msg: LinkMessage) -> Result<(), LinkError> {
        let cost = queue_cost(&msg);
        let limit = self.limit;
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b == 0 || b.saturating_add(cost) <= limit).then_some(b + cost)
            })
            .map_err(|_| LinkError::QueueFull)?;
        self.tx.send((msg, cost)).map_err(|_| {
            self.bytes.fetch_sub(cost, Ordering::AcqRel);
            LinkError::Closed
        })
    }

    /// The writer took a message off the queue.
    fn taken(&self, cost: usize) {
        self.bytes.fetch_sub(cost, Ordering::AcqRel);
        self.space.notify_waiters();
    }
}

/// The writer's end of the send queue.
struct QueueReader {
    rx: mpsc::UnboundedReceiver<(LinkMessage, usize)>,
    queue: Arc<SendQueue>,
}

impl QueueReader {
    async fn next(&mut self) -> Option<LinkMessage> {
        let (m, cost) = self.rx.recv().await?;
        self.queue.taken(cost);
        Some(m)
    }

    /// The next queued message, if one is there now.
    fn try_next(&mut self) -> Option<LinkMessage> {
        let (m, cost) = self.rx.try_recv().ok()?;
        self.queue.taken(cost);
        Some(m)
    }
}

/// The reader asks the socket for at least this much room per read.
const READ_CHUNK: usize = 64 << 10;

/// The writer seals what is queued into one buffer up to about this many
/// bytes (plus the last frame) and writes it at once: fewer system calls
/// and wake-ups at both ends when a link is busy. The buffer is kept, so
/// its size stays bounded by this.
const WRITE_BATCH: usize = 256 << 10;

/// A cloneable handle to send on a link.
#[derive(Clone, Debug)]
pub struct LinkSender {
    queue: Arc<SendQueue>,
    cancel: CancellationToken,
}

impl LinkSender {
    /// Bytes sent and received on this link's socket since it came up
    /// (encrypted records, padding included; the handshake not counted).
    #[must_use]
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.queue.sent.load(Ordering::Relaxed),
            self.queue.received.load(Ordering::Relaxed),
        )
    }

    /// Queue a routing message, waiting while the queue is full.
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the link has ended.
    pub async fn send(&self, msg: lichen_routing::Message) -> Result<(), LinkError> {
        let msg = LinkMessage::Routing(msg);
        loop {
            let space = self.queue.space.notified();
            tokio::pin!(space);
            // Registered before the check, so a wake-up between the two is
            // not lost.
            space.as_mut().enable();
            match self.queue.try_push(msg.clone()) {
                Err(LinkError::QueueFull) => {}
                other => return other,
            }
            tokio::select! {
                () = space => {}
                () = self.cancel.cancelled() => return Err(LinkError::Closed),
            }
        }
    }

    /// Queue a routing message without waiting.
    ///
    /// # Errors
    /// [`LinkError::QueueFull`] (backpressure: the peer or the upload limit
    /// is slower than the sender) or [`LinkError::Closed`].
    pub fn try_send(&self, msg: lichen_routing::Message) -> Result<(), LinkError> {
        if self.cancel.is_cancelled() {
            return Err(LinkError::Closed);
        }
        self.queue.try_push(LinkMessage::Routing(msg))
    }

    /// Close the link (a `Close` frame is sent if possible).
    pub fn close(&self) {
        self.cancel.cancel();
    }

    /// Whether the link has ended or is closing.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.cancel.is_cancelled() || self.queue.tx.is_closed()
    }
}

/// How long a connection attempt to one of a noderef's addresses runs
/// before the next address is tried beside it
/// ([`Link::connect_noderef`]; RFC 8305's "connection attempt delay").
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// `addrs` in their order, the address families taking turns from the
/// first one's (RFC 8305, section 4).
pub(crate) fn family_turns(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut same, mut other): (VecDeque<SocketAddr>, VecDeque<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv6() == first.is_ipv6());
    let mut out = Vec::with_capacity(addrs.len());
    loop {
        match (same.pop_front(), other.pop_front()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// An established link.
#[derive(Debug)]
pub struct Link {
    remote_static: [u8; 32],
    /// The address of the other end (None: a link over a stream that is
    /// no TCP connection, in tests).
    remote_addr: Option<SocketAddr>,
    /// This end's address, on a link this node opened (None otherwise).
    local_addr: Option<SocketAddr>,
    sender: LinkSender,
    events: mpsc::Receiver<LinkEvent>,
}

/// Run the handshake over `stream`. Returns the transport, the peer's
/// static key and any bytes read past the handshake.
async fn run_handshake<S>(
    stream: &mut S,
    mut hs: Handshake,
    cfg: &LinkConfig,
) -> Result<(Transport, [u8; 32], Vec<u8>), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let (n, act) = hs.step(&buf)?;
        buf.drain(..n);
        match act {
            HsAction::Send(b) => stream.write_all(&b).await?,
            HsAction::NeedMore => {
                let k = stream.read(&mut chunk).await?;
                if k == 0 {
                    return Err(if buf.is_empty() {
                        LinkError::HandshakeClosed
                    } else {
                        LinkError::Truncated
                    });
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            HsAction::Finished => break,
        }
    }
    stream.flush().await?;
    let (t, remote) = hs.finish(cfg.rekey)?;
    Ok((t, remote, buf))
}

impl Link {
    /// Connect to `addr` and handshake as initiator, expecting the
    /// responder's static key `remote_static`.
    ///
    /// # Errors
    /// I/O, [`LinkError::Timeout`], [`LinkError::Handshake`] (wrong key).
    pub async fn connect(
        addr: SocketAddr,
        keys: &NodeKeys,
        remote_static: &[u8; 32],
        cfg: &LinkConfig,
        bandwidth: Arc<Bandwidth>,
    ) -> Result<Link, LinkError> {
        let fut = async {
            let stream = TcpStream::connect(addr).await?;
            Link::initiate(stream, keys, remote_static, cfg, bandwidth).await
        };
        tokio::time::timeout(cfg.handshake_timeout, fut)
            .await
            .map_err(|_| LinkError::Timeout)?
    }

    /// Handshake as initiator, expecting `remote_static`, over a TCP
    /// connection already open (dialed, or a hole punch's, whichever
    /// end's SYN came first).
    ///
    /// # Errors
    /// I/O, [`LinkError::Timeout`], [`LinkError::Handshake`] (wrong key).
    pub async fn initiate(
        mut stream: TcpStream,
        keys: &NodeKeys,
        remote_static: &[u8; 32],
        cfg: &LinkConfig,
        bandwidth: Arc<Bandwidth>,
    ) -> Result<Link, LinkError> {
        let hs = Handshake::initiator(keys, remote_static)?;
        let _ = stream.set_nodelay(true);
        let addr = stream.peer_addr().ok().map(canonical);
        let local = stream.local_addr().ok().map(canonical);
        let (t, remote, rest) =
            tokio::time::timeout(cfg.handshake_timeout, run_handshake(&mut stream, hs, cfg))
                .await
                .map_err(|_| LinkError::Timeout)??;
        let mut link = Link::spawn(stream, t, remote, rest, cfg, bandwidth);
        link.remote_addr = addr;
        link.local_addr = local;
        Ok(link)
    }

    /// Connect to the node a noderef names, at any of its addresses, as
    /// happy eyeballs do (RFC 8305): the addresses in the noderef's order
    /// with the families taking turns (an IPv6 address, then an IPv4 one,
    /// ...), each attempt started [`ATTEMPT_DELAY`] after the one before
    /// or as soon as it fails; the first handshake done wins and the
    /// others are dropped. A noderef that names an address this host
    /// cannot reach (no IPv6 route, a dead port) costs one delay, not a
    /// connect timeout.
    ///
    /// # Errors
    /// The last error when every address failed; [`LinkError::Closed`]
    /// for a noderef without addresses.
    pub async fn connect_noderef(
        noderef: &NodeRef,
        keys: &NodeKeys,
        cfg: &LinkConfig,
        bandwidth: Arc<Bandwidth>,
    ) -> Result<Link, LinkError> {
        let order = family_turns(&noderef.addresses);
        let mut attempts = tokio::task::JoinSet::new();
        let mut next = 0;
        let mut last = LinkError::Closed;
        loop {
            if let Some(&addr) = order.get(next) {
                next += 1;
                let (keys, cfg, bw) = (keys.clone(), cfg.clone(), bandwidth.clone());
                let remote = noderef.static_key;
                attempts.spawn(async move {
                    let r = Link::connect(addr, &keys, &remote, &cfg, bw).await;
                    (addr, r)
                });
            }
            if attempts.is_empty() {
                return Err(last);
            }
            let more = next < order.len();
            tokio::select! {
                done = attempts.join_next() => match done {
                    Some(Ok((_, Ok(link)))) => return Ok(link),
                    Some(Ok((addr, Err(e)))) => {
                        tracing::debug!(%addr, error = %e, "link connect failed");
                        last = e;
                    }
                    Some(Err(e)) => last = LinkError::Io(std::io::Error::other(e)),
                    None => {}
                },
                () = tokio::time::sleep(ATTEMPT_DELAY), if more => {}
            }
        }
    }

    /// Handshake as responder on an accepted connection.
    ///
    /// # Errors
    /// I/O, [`LinkError::Timeout`], [`LinkError::Handshake`] (garbage).
    pub async fn accept(
        mut stream: TcpStream,
        keys: &NodeKeys,
        cfg: &LinkConfig,
        bandwidth: Arc<Bandwidth>,
    ) -> Result<Link, LinkError> {
        let _ = stream.set_nodelay(true);
        let peer_addr = stream.peer_addr().ok().map(canonical);
        let hs = Handshake::responder(keys)?;
        let (t, remote, rest) =
            tokio::time::timeout(cfg.handshake_timeout, run_handshake(&mut stream, hs, cfg))
                .await
                .map_err(|_| LinkError::Timeout)??;
        let mut link = Link::spawn(stream, t, remote, rest, cfg, bandwidth);
        link.remote_addr = peer_addr;
        Ok(link)
    }

    /// Dial a peer back (a [`crate::policy::Output::Probe`]): connect to
    /// `addr` and run the initiator's side of the handshake against
    /// `remote_static` with a throwaway key, until the responder's second
    /// message has been read, which only the holder of `remote_static`'s
    /// secret can write; then hang up before the third, so no link comes
    /// of it (the other side sees a handshake cut short). Whether that
    /// worked within `timeout`.
    pub async fn dial_back(addr: SocketAddr, remote_static: &[u8; 32], timeout: Duration) -> bool {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        let keys = NodeKeys::from_static_secret(secret);
        let Ok(mut hs) = Handshake::initiator(&keys, remote_static) else {
            return false;
        };
        let fut = async {
            let mut stream = TcpStream::connect(addr).await?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 512];
            let mut sent = 0;
            loop {
                let (n, act) = hs.step(&buf)?;
                buf.drain(..n);
                match act {
                    // The third message: the second was read and good.
                    HsAction::Send(_) if sent == 1 => return Ok(true),
                    HsAction::Send(b) => {
                        stream.write_all(&b).await?;
                        sent += 1;
                    }
                    HsAction::NeedMore => {
                        let k = stream.read(&mut chunk).await?;
                        if k == 0 {
                            return Ok(false);
                        }
                        buf.extend_from_slice(&chunk[..k]);
                    }
                    HsAction::Finished => return Ok(false),
                }
            }
        };
        matches!(
            tokio::time::timeout(timeout, fut).await,
            Ok(Ok::<bool, LinkError>(true))
        )
    }

    /// Start the reader and writer tasks over an established transport.
    pub fn spawn<S>(
        stream: S,
        transport: Transport,
        remote_static: [u8; 32],
        leftover: Vec<u8>,
        cfg: &LinkConfig,
        bandwidth: Arc<Bandwidth>,
    ) -> Link
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        let transport = Arc::new(Mutex::new(transport));
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(SendQueue {
            tx,
            bytes: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            // Records read along with the handshake's last message.
            received: AtomicU64::new(leftover.len() as u64),
            limit: cfg.send_queue_bytes,
            space: Notify::new(),
        });
        let (ev_tx, ev_rx) = mpsc::channel(cfg.recv_queue.max(1));
        let cancel = CancellationToken::new();
        let writer_error = Arc::new(Mutex::new(None));
        tokio::spawn(writer(
            w,
            QueueReader {
                rx,
                queue: queue.clone(),
            },
            transport.clone(),
            cfg.keepalive,
            bandwidth.clone(),
            cancel.clone(),
            writer_error.clone(),
        ));
        tokio::spawn(reader(
            r,
            leftover,
            ReaderCtx {
                transport,
                events: ev_tx,
                pong: queue.clone(),
                idle: cfg.idle_timeout,
                bandwidth,
                cancel: cancel.clone(),
                writer_error,
            },
        ));
        Link {
            remote_static,
            remote_addr: None,
            local_addr: None,
            sender: LinkSender { queue, cancel },
            events: ev_rx,
        }
    }

    /// This end's address, on a link this node opened by dialing (None
    /// for one it accepted, or spawned over another kind of stream).
    #[must_use]
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The address of the other end of the connection (None for a link
    /// spawned over another kind of stream).
    #[must_use]
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The peer's authenticated X25519 static key.
    #[must_use]
    pub fn remote_static(&self) -> [u8; 32] {
        self.remote_static
    }

    /// A handle for sending.
    #[must_use]
    pub fn sender(&self) -> LinkSender {
        self.sender.clone()
    }

    /// The next event; `None` after [`LinkEvent::Closed`] was delivered.
    pub async fn recv(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }

    /// Split into the sending handle and the event stream.
    #[must_use]
    pub fn into_parts(self) -> (LinkSender, mpsc::Receiver<LinkEvent>) {
        (self.sender, self.events)
    }

    /// Close the link.
    pub fn close(&self) {
        self.sender.close();
    }
}

fn lock(t: &Mutex<Transport>) -> std::sync::MutexGuard<'_, Transport> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn writer<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: QueueReader,
    transport: Arc<Mutex<Transport>>,
    keepalive: Duration,
    bandwidth: Arc<Bandwidth>,
    cancel: CancellationToken,
    error: Arc<Mutex<Option<LinkError>>>,
) {
    let mut nonce: u64 = rand::random();
    let mut wire = Vec::new();
    let result: Result<(), LinkError> = async {
        loop {
            let deadline = Instant::now() + keepalive;
            let msg = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    // Best effort: tell the peer.
                    let wire = lock(&transport).seal(&LinkMessage::Close)?;
                    let _ = tokio::time::timeout(Duration::from_secs(1), w.write_all(&wire)).await;
                    return Ok(());
                }
                m = rx.next() => match m {
                    Some(m) => m,
                    None => return Ok(()),
                },
                () = tokio::time::sleep_until(deadline) => {
                    nonce = nonce.wrapping_add(1);
                    LinkMessage::Ping { nonce }
                }
            };
            wire.clear();
            {
                let mut t = lock(&transport);
                t.seal_into(&msg, &mut wire)?;
                while wire.len() < WRITE_BATCH {
                    let Some(more) = rx.try_next() else { break };
                    t.seal_into(&more, &mut wire)?;
                }
            }
            bandwidth.upload.take(wire.len()).await;
            tokio::select! {
                r = w.write_all(&wire) => r?,
                () = cancel.cancelled() => return Ok(()),
            }
            rx.queue
                .sent
                .fetch_add(wire.len() as u64, Ordering::Relaxed);
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "link writer ended");
        *error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
    }
    let _ = w.shutdown().await;
    cancel.cancel();
}

struct ReaderCtx {
    transport: Arc<Mutex<Transport>>,
    events: mpsc::Sender<LinkEvent>,
    pong: Arc<SendQueue>,
    idle: Duration,
    bandwidth: Arc<Bandwidth>,
    cancel: CancellationToken,
    writer_error: Arc<Mutex<Option<LinkError>>>,
}

async fn reader<R: AsyncRead + Unpin>(mut r: R, mut buf: Vec<u8>, ctx: ReaderCtx) {
    let result = read_loop(&mut r, &mut buf, &ctx).await;
    let err = match result {
        Ok(()) => ctx
            .writer_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or(LinkError::Closed),
        Err(e) => e,
    };
    if !matches!(err, LinkError::Closed) {
        tracing::debug!(error = %err, "link ended");
    }
    ctx.cancel.cancel();
    let _ = ctx.events.send(LinkEvent::Closed(err)).await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    ctx: &ReaderCtx,
) -> Result<(), LinkError> {
    let mut last_frame = Instant::now();
    loop {
        // Deliver every complete frame in the buffer, then keep only the
        // partial one (a single move per read, not one per frame).
        let mut start = 0;
        loop {
            let opened = lock(&ctx.transport).open(&buf[start..])?;
            let Some((n, opened)) = opened else { break };
            start += n;
            last_frame = Instant::now();
            let msg = match opened {
                Opened::Message(m) => m,
                Opened::Unknown(e) => {
                    tracing::debug!(error = %e, "skipped a frame this version cannot decode");
                    continue;
                }
            };
            match msg {
                LinkMessage::Routing(m) => {
                    tokio::select! {
                        r = ctx.events.send(LinkEvent::Message(m)) => {
                            if r.is_err() {
                                // Nobody listens any more: close.
                                return Ok(());
                            }
                        }
                        () = ctx.cancel.cancelled() => return Ok(()),
                    }
                }
                LinkMessage::Ping { nonce } => {
                    // A full queue already carries traffic: drop the pong.
                    let _ = ctx.pong.try_push(LinkMessage::Pong { nonce });
                }
                LinkMessage::Close => return Ok(()),
                LinkMessage::Pong { .. } | LinkMessage::Rekey => {}
            }
        }
        buf.drain(..start);
        buf.reserve(READ_CHUNK);
        let n = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Ok(()),
            n = r.read_buf(buf) => n?,
            () = tokio::time::sleep_until(last_frame + ctx.idle) => return Err(LinkError::Timeout),
        };
        ctx.pong.received.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            return Err(if buf.is_empty() {
                LinkError::Closed
            } else {
                LinkError::Truncated
            });
        }
        ctx.bandwidth.download.take(n).await;
    }
}
