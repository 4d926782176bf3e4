//! The peer manager: accepts and initiates links and drives
//! `lichen_routing::Node` (the code the simulator runs) with real time and
//! OS randomness.
//!
//! One task owns the routing node. Links feed it `(PeerId, LinkEvent)`;
//! local fetches and inserts come in as commands with a reply channel; the
//! routing node's actions go out: `Send` to the link's queue (bounded in
//! bytes, 8 MiB; dropped only when that is full, and the routing layer's
//! timeouts treat it as loss),
//! `StoreBlock` into the store's Store/Cache spaces, `Connect` to a new
//! link task, `Disconnect` to a link close.
//!
//! ```text
//! link up ──► darknet: a link from a node that is not a friend is closed
//!             both sides send LocationChanged{own location} as a hello
//! hello  ──► add_peer (friends, darknet) / accept_opennet_peer, then
//!             messages go to routing; a dialed peer is remembered.
//!             Full, a node that dialed us is kept as a seed client
//!             (accept_seed_client: one announcement routed, then closed)
//! tick   ──► redial remembered peers that are not connected (backing off)
//! ```
//!
//! Remembered peers live in `peers.toml` ([`super::peerlist`]): friends and
//! the opennet peers this node dialed. One saver task writes it (atomic
//! rename), at once when an entry is added or removed, otherwise every
//! [`SAVE_EVERY`] when only `last_seen` changed, and at shutdown.
//!
//! A peer the routing core disconnects for misbehaviour (over
//! `misbehaviour_limit` offences) is banned by its static key for [`BAN`]:
//! its links are closed before the hello, it is not dialed, and an opennet
//! entry for it is forgotten. Bans live in memory only.
//!
//! On opennet the dialing side sends its signed noderef (`Noderef`) right
//! after its hello; the dialed side checks that it names the link's static
//! key and remembers the peer as if it had dialed it.
//!
//! Not yet: location swaps persisted to the identity.

use super::bandwidth::Bandwidth;
use super::error::LinkError;
use super::keys::NodeKeys;
use super::link::{Link, LinkConfig, LinkEvent, LinkSender};
use super::noderef::NodeRef;
use super::peerlist::{Added, PeerKind, PeerList};
use lichen_crypto::{BlockKind, RoutingKey};
use lichen_routing::{
    Action, BlockSource, InsertOutcome, Key, KeyKind, LocalRequest, Location, Message, PeerId,
    RequestId, RequestOutcome,
};
use lichen_store::{BlockStore, Origin, Space};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How often remembered peers that are not connected are looked at.
const RECONNECT_TICK: Duration = Duration::from_secs(1);
/// First retry delay after a failed connection; doubles per failure.
const RETRY_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay for a friend.
const FRIEND_RETRY_MAX: Duration = Duration::from_secs(120);
/// Longest retry delay for a remembered opennet peer.
const OPENNET_RETRY_MAX: Duration = Duration::from_secs(600);
/// A friend the routing core dropped is not redialed for this long.
const DROPPED_RETRY: Duration = Duration::from_secs(30);
/// A link that lived less than this was probably closed by a full node.
const SHORT_LINK: Duration = Duration::from_secs(60);
/// A peer disconnected for misbehaviour is refused (and not dialed) this
/// long, friend or not.
const BAN: Duration = Duration::from_secs(30 * 60);
/// Most banned keys remembered (the oldest ban goes first).
const MAX_BANNED: usize = 4096;
/// `last_seen` changes are written at most this often.
pub const SAVE_EVERY: Duration = Duration::from_secs(60);
/// Two links to the same node that came up within this window are a
/// simultaneous dial: both sides keep the one dialed by the node with the
/// smaller static key. A second link after it replaces the first (the
/// other side restarted, or saw the old one die).
const RACE_WINDOW: Duration = Duration::from_secs(5);

/// What the peer manager needs.
#[derive(Clone)]
pub struct PeerSetup {
    /// The node's link keys.
    pub keys: NodeKeys,
    /// The node's location.
    pub location: Location,
    /// The node's store (shared spaces for routing, client cache for local
    /// results).
    pub store: Arc<dyn BlockStore>,
    /// Link settings.
    pub link: LinkConfig,
    /// Node-wide bandwidth limits.
    pub bandwidth: Arc<Bandwidth>,
    /// Routing settings.
    pub routing: lichen_routing::Config,
    /// Accept strangers (opennet). Off: only friends' links are accepted.
    pub opennet: bool,
    /// This node's noderef bytes (for opennet announcements and folding).
    pub noderef: Option<Vec<u8>>,
    /// Directory of `peers.toml` (None: peers are not remembered).
    pub peer_dir: Option<PathBuf>,
    /// Most opennet peers remembered.
    pub max_remembered: usize,
}

impl std::fmt::Debug for PeerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSetup")
            .field("opennet", &self.opennet)
            .finish_non_exhaustive()
    }
}

/// One peer, for `ListPeers` and `lichen peers`.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Short public name: Freenet base64 of the first 16 bytes of
    /// SHA-256(static key).
    pub identity: String,
    /// Friend or opennet.
    pub kind: PeerKind,
    /// A link is up and the routing core has the peer.
    pub connected: bool,
    /// Location (last announced by the peer, or the noderef's hint).
    pub location: Option<u64>,
    /// Noderef text, when known (remembered peers).
    pub noderef: Option<String>,
    /// Addresses from the noderef (empty when unknown).
    pub addresses: Vec<SocketAddr>,
    /// When a link last came up (ms since the epoch; 0: never or unknown).
    pub last_seen: u64,
}

impl std::fmt::Debug for PeerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerInfo")
            .field("kind", &self.kind)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// The public short name of a node's static key.
#[must_use]
pub fn identity_of(static_key: &[u8; 32]) -> String {
    lichen_crypto::b64::encode(&lichen_crypto::sha256(static_key)[..16])
}

/// Why a friend could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddFriendError {
    /// The noderef is this node's own.
    #[error("that is this node's own noderef")]
    Myself,
    /// Already a friend.
    #[error("that node is already a friend")]
    Duplicate,
    /// The friend list is full.
    #[error("cannot add a friend: {0}")]
    Full(String),
    /// The manager has stopped.
    #[error("the network is not running")]
    Stopped,
}

enum Cmd {
    /// A fetch for this node's user ([`FetchOpts`]: store first, keep).
    Fetch(Key, KeyKind, FetchOpts, oneshot::Sender<RequestOutcome>),
    Insert(Key, KeyKind, Vec<u8>, oneshot::Sender<InsertOutcome>),
    Connect(NodeRef, Option<Vec<u8>>),
    PeerCount(oneshot::Sender<usize>),
    AddFriend(
        NodeRef,
        Vec<u8>,
        oneshot::Sender<Result<PeerInfo, AddFriendError>>,
    ),
    Remove(String, oneshot::Sender<Option<PeerInfo>>),
    List(oneshot::Sender<Vec<PeerInfo>>),
}

/// A handle on a running peer manager.
#[derive(Clone, Debug)]
pub struct PeerManager {
    cmd: mpsc::Sender<Cmd>,
    /// The routing node's peer count, updated by the driving task.
    connected: Arc<AtomicUsize>,
    /// The routing node's counters, copied by the driving task after
    /// every step.
    stats: Arc<Mutex<lichen_routing::Stats>>,
    /// Cancelled once the manager has stopped and the peer file is written.
    stopped: CancellationToken,
}

/// Verifies blocks for the routing node with `lichen_crypto`.
fn verify(key: &Key, kind: KeyKind, block: &[u8]) -> bool {
    lichen_crypto::verify_block(BlockKind::from(kind), &RoutingKey(key.0), block).is_ok()
}

/// Blocks waiting for the store writer (32 KiB each: at most 16 MiB).
const STORE_QUEUE: usize = 512;
/// Most blocks the store writer puts in one batch.
const STORE_BATCH: usize = 128;

/// A verified block for the store writer.
struct ToStore {
    space: Space,
    kind: BlockKind,
    key: RoutingKey,
    block: Vec<u8>,
}

/// Blocks of the shared spaces (store, cache) handed to the store writer
/// and not written yet: served to peers from here meanwhile, so a request
/// right behind an insert finds what the insert left.
type Unwritten = Arc<Mutex<HashMap<(BlockKind, RoutingKey), Vec<u8>>>>;

/// The store writer: a thread that puts the blocks the routing core asks
/// to keep, in batches (one sled batch per space and round, where a put per
/// block cost two log writes each), so the routing task never waits for
/// the disk. A full queue drops the block: caching is best effort.
fn spawn_store_writer(
    store: Arc<dyn BlockStore>,
    unwritten: Unwritten,
) -> Option<std::sync::mpsc::SyncSender<ToStore>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<ToStore>(STORE_QUEUE);
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < STORE_BATCH {
                    match rx.try_recv() {
                        Ok(b) => batch.push(b),
                        Err(_) => break,
                    }
                }
                let done: Vec<(BlockKind, RoutingKey)> = batch
                    .iter()
                    .filter(|b| b.space != Space::Client)
                    .map(|b| (b.kind, b.key))
                    .collect();
                write_batch(store.as_ref(), batch);
                let mut u = unwritten
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for k in &done {
                    u.remove(k);
                }
            }
        })
        .ok()
        .map(|_| tx)
}

fn write_batch(store: &dyn BlockStore, batch: Vec<ToStore>) {
    let mut chk: HashMap<Space, Vec<(RoutingKey, Vec<u8>)>> = HashMap::new();
    for b in batch {
        if b.kind == BlockKind::Chk {
            chk.entry(b.space).or_default().push((b.key, b.block));
        } else if let Err(e) = store
            .unchecked()
            .put_trusted(b.space, b.kind, &b.key, &b.block)
        {
            tracing::warn!(error = %e, "could not store a block");
        }
    }
    for (space, blocks) in chk {
        match store.unchecked().put_trusted_chk_batch(space, &blocks) {
            Err(e) => tracing::warn!(error = %e, "could not store {} blocks", blocks.len()),
            Ok(o) => tracing::trace!(?space, stored = o.len(), "stored blocks"),
        }
    }
}

/// Where the peer manager keeps blocks: the store writer, or (if its
/// thread could not start) the store directly.
struct Keeper {
    store: Arc<dyn BlockStore>,
    writer: Option<std::sync::mpsc::SyncSender<ToStore>>,
    unwritten: Unwritten,
}

impl Keeper {
    fn new(store: Arc<dyn BlockStore>) -> Self {
        let unwritten = Unwritten::default();
        Keeper {
            writer: spawn_store_writer(store.clone(), unwritten.clone()),
            store,
            unwritten,
        }
    }

    fn unwritten(&self) -> std::sync::MutexGuard<'_, HashMap<(BlockKind, RoutingKey), Vec<u8>>> {
        self.unwritten
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keep a block the routing core verified (never blocks).
    fn keep(&self, space: Space, kind: BlockKind, key: RoutingKey, block: Vec<u8>) {
        let Some(w) = &self.writer else {
            let _ = self
                .store
                .unchecked()
                .put_trusted(space, kind, &key, &block);
            return;
        };
        // Never the client cache: peers must not see what we fetched.
        let shared = space != Space::Client;
        if shared {
            self.unwritten().insert((kind, key), block.clone());
        }
        if let Err(std::sync::mpsc::TrySendError::Full(_)) = w.try_send(ToStore {
            space,
            kind,
            key,
            block,
        }) {
            tracing::debug!("store writer busy: a block was not cached");
            if shared {
                self.unwritten().remove(&(kind, key));
            }
        }
    }
}

/// What peers may be served: the shared spaces of the store, and shared
/// blocks still on their way to it.
struct StoreSource<'a>(&'a dyn BlockStore, &'a Keeper);

impl BlockSource for StoreSource<'_> {
    fn get(&mut self, key: &Key, kind: KeyKind) -> Option<Vec<u8>> {
        let (kind, key) = (BlockKind::from(kind), RoutingKey(key.0));
        if let Some(b) = self.1.unwritten().get(&(kind, key)) {
            return Some(b.clone());
        }
        self.0
            .get(Origin::Remote, kind, &key)
            .ok()
            .flatten()
            .map(|f| f.block)
    }
}

impl PeerManager {
    /// Start the manager: accept links on `listener` until `shutdown`.
    /// Remembered peers are loaded from `setup.peer_dir` (problems are
    /// logged, never fatal) and dialed.
    #[must_use]
    pub fn start(setup: PeerSetup, listener: TcpListener, shutdown: CancellationToken) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (link_tx, link_rx) = mpsc::channel(64);
        let list = match &setup.peer_dir {
            Some(dir) => {
                let loaded = PeerList::load(dir, setup.max_remembered);
                for w in &loaded.warnings {
                    tracing::warn!("{w}");
                }
                let friends = loaded.list.friend_count();
                tracing::info!(
                    "{} remembered peer(s), {friends} of them friends",
                    loaded.list.entries().len()
                );
                loaded.list
            }
            None => PeerList::new(setup.max_remembered),
        };
        tokio::spawn(accept_loop(
            listener,
            setup.clone(),
            link_tx.clone(),
            shutdown.clone(),
        ));
        let connected = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Mutex::new(lichen_routing::Stats::default()));
        let stopped = CancellationToken::new();
        let (save_tx, save_rx) = mpsc::unbounded_channel();
        let saver = tokio::spawn(saver(setup.peer_dir.clone(), save_rx));
        let done = stopped.clone();
        let drive_task = tokio::spawn(drive(
            setup,
            list,
            cmd_rx,
            link_tx,
            link_rx,
            shutdown,
            (connected.clone(), stats.clone()),
            save_tx,
        ));
        tokio::spawn(async move {
            let _ = drive_task.await;
            let _ = saver.await;
            done.cancel();
        });
        PeerManager {
            cmd: cmd_tx,
            connected,
            stats,
            stopped,
        }
    }

    /// The routing node's counters after its last step (invalid blocks,
    /// offences, ...: `lichen_routing::Stats`).
    #[must_use]
    pub fn stats(&self) -> lichen_routing::Stats {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Wait until the manager has stopped (after shutdown) and the peer
    /// file has been written.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }

    /// Peers the routing node had after its last step (no round trip to
    /// the driving task; 0 once it has stopped).
    #[must_use]
    pub fn connected(&self) -> usize {
        if self.cmd.is_closed() {
            0
        } else {
            self.connected.load(Ordering::Relaxed)
        }
    }

    /// Fetch a block through the network (the store is looked at first,
    /// and a block found is kept in the client cache).
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn fetch(&self, key: Key, kind: KeyKind) -> Result<RequestOutcome, LinkError> {
        self.fetch_with(key, kind, FetchOpts::default()).await
    }

    /// Fetch a block for this node's user, as `opts` says.
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn fetch_with(
        &self,
        key: Key,
        kind: KeyKind,
        opts: FetchOpts,
    ) -> Result<RequestOutcome, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Fetch(key, kind, opts, tx))
            .await
            .map_err(|_| LinkError::Closed)?;
        rx.await.map_err(|_| LinkError::Closed)
    }

    /// Insert a block into the network.
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn insert(
        &self,
        key: Key,
        kind: KeyKind,
        block: Vec<u8>,
    ) -> Result<InsertOutcome, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Insert(key, kind, block, tx))
            .await
            .map_err(|_| LinkError::Closed)?;
        rx.await.map_err(|_| LinkError::Closed)
    }

    /// Connect to a node once (not remembered).
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn connect(&self, noderef: NodeRef) -> Result<(), LinkError> {
        self.cmd
            .send(Cmd::Connect(noderef, None))
            .await
            .map_err(|_| LinkError::Closed)
    }

    /// Connect to a node whose signed noderef bytes are known (a seed): on
    /// opennet it is remembered once the link is up.
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn connect_remembered(
        &self,
        noderef: NodeRef,
        bytes: Vec<u8>,
    ) -> Result<(), LinkError> {
        self.cmd
            .send(Cmd::Connect(noderef, Some(bytes)))
            .await
            .map_err(|_| LinkError::Closed)
    }

    /// Add a friend (darknet peer): remembered, dialed now and whenever
    /// the link is down, and accepted on a darknet node.
    ///
    /// # Errors
    /// [`AddFriendError`].
    pub async fn add_friend(
        &self,
        noderef: NodeRef,
        bytes: Vec<u8>,
    ) -> Result<PeerInfo, AddFriendError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::AddFriend(noderef, bytes, tx))
            .await
            .map_err(|_| AddFriendError::Stopped)?;
        rx.await.map_err(|_| AddFriendError::Stopped)?
    }

    /// Forget a peer (by identity, or by an address of its noderef) and
    /// close its link. `None`: no such peer.
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn remove(&self, which: &str) -> Result<Option<PeerInfo>, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Remove(which.to_string(), tx))
            .await
            .map_err(|_| LinkError::Closed)?;
        rx.await.map_err(|_| LinkError::Closed)
    }

    /// Remembered and connected peers: friends first.
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn list(&self) -> Result<Vec<PeerInfo>, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::List(tx))
            .await
            .map_err(|_| LinkError::Closed)?;
        rx.await.map_err(|_| LinkError::Closed)
    }

    /// Number of peers the routing node has.
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn peer_count(&self) -> Result<usize, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::PeerCount(tx))
            .await
            .map_err(|_| LinkError::Closed)?;
        rx.await.map_err(|_| LinkError::Closed)
    }
}

/// Writes peer-file snapshots in order, the latest of a burst only.
async fn saver(dir: Option<PathBuf>, mut rx: mpsc::UnboundedReceiver<PeerList>) {
    while let Some(mut list) = rx.recv().await {
        while let Ok(newer) = rx.try_recv() {
            list = newer;
        }
        let Some(dir) = dir.clone() else { continue };
        let r = tokio::task::spawn_blocking(move || list.save(&dir)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot save the peer list: {e}"),
            Err(e) => tracing::warn!("cannot save the peer list: {e}"),
        }
    }
}

/// A link that came up, or a dial that failed.
enum NewLink {
    Up(Link, Option<Dialed>),
    Failed([u8; 32]),
}

/// What we dialed: the noderef, and its signed bytes when known.
struct Dialed {
    noderef: NodeRef,
    bytes: Option<Vec<u8>>,
}

/// Inbound handshakes under way at once. Each holds a socket and a task
/// for up to the handshake timeout and costs Diffie-Hellman work; beyond
/// this, new connections are closed at once, so a flood of half-open
/// connections cannot grow without bound (legitimate peers dial again).
pub(crate) const MAX_INBOUND_HANDSHAKES: usize = 64;

/// Inbound handshakes under way at once from one address, so one host
/// cannot take every slot. Loopback is exempt: a testnet's nodes all dial
/// from 127.0.0.1.
pub(crate) const MAX_HANDSHAKES_PER_ADDRESS: usize = 8;

/// The slots for inbound handshakes: [`MAX_INBOUND_HANDSHAKES`] in all,
/// [`MAX_HANDSHAKES_PER_ADDRESS`] per address.
#[derive(Debug, Default)]
struct HandshakeSlots {
    by_address: Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// One handshake's slot, given back when dropped.
struct HandshakeSlot {
    slots: Arc<HandshakeSlots>,
    ip: std::net::IpAddr,
}

impl HandshakeSlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<std::net::IpAddr, usize>> {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a handshake from `ip`, if one is free.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<HandshakeSlot> {
        let mut m = self.lock();
        let total: usize = m.values().sum();
        let here = m.get(&ip).copied().unwrap_or(0);
        let per_address_full = !ip.is_loopback() && here >= MAX_HANDSHAKES_PER_ADDRESS;
        if total >= MAX_INBOUND_HANDSHAKES || per_address_full {
            return None;
        }
        m.insert(ip, here + 1);
        Some(HandshakeSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut m = self.slots.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    setup: PeerSetup,
    links: mpsc::Sender<NewLink>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(HandshakeSlots::default());
    let mut refused: u64 = 0;
    loop {
        let (stream, from) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let Some(slot) = slots.take(from.ip()) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::info!(
                    refused,
                    "inbound handshakes at their limit ({MAX_INBOUND_HANDSHAKES}, \
                     {MAX_HANDSHAKES_PER_ADDRESS} per address): connections closed"
                );
            }
            drop(stream);
            continue;
        };
        let setup = setup.clone();
        let links = links.clone();
        tokio::spawn(async move {
            let link =
                Link::accept(stream, &setup.keys, &setup.link, setup.bandwidth.clone()).await;
            drop(slot);
            match link {
                Ok(l) => {
                    let _ = links.send(NewLink::Up(l, None)).await;
                }
                Err(e) => tracing::debug!(error = %e, "inbound handshake failed"),
            }
        });
    }
}

fn spawn_connect(
    setup: &PeerSetup,
    noderef: NodeRef,
    bytes: Option<Vec<u8>>,
    links: mpsc::Sender<NewLink>,
) {
    let setup = setup.clone();
    tokio::spawn(async move {
        match Link::connect_noderef(&noderef, &setup.keys, &setup.link, setup.bandwidth.clone())
            .await
        {
            Ok(l) => {
                let _ = links
                    .send(NewLink::Up(l, Some(Dialed { noderef, bytes })))
                    .await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "outbound link failed");
                let _ = links.send(NewLink::Failed(noderef.static_key)).await;
            }
        }
    });
}

struct PeerState {
    sender: LinkSender,
    remote: [u8; 32],
    /// Added to the routing node (after the hello).
    routed: bool,
    /// We dialed it (with this noderef); None: it dialed us.
    dialed: Option<Dialed>,
    /// When the link came up.
    since: Instant,
    /// Last location the peer announced.
    location: Option<u64>,
    /// Kept only to route its announcement (we are full); not a peer.
    seed_client: bool,
}

/// How a fetch for this node's user uses the node's own storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOpts {
    /// Look in the stores and caches first (false: FCP `IgnoreDS`).
    pub local_first: bool,
    /// Keep a block found in the network in the private client cache
    /// (FCP `WriteToClientCache`; never the shared spaces either way).
    pub keep: bool,
}

impl Default for FetchOpts {
    fn default() -> Self {
        FetchOpts {
            local_first: true,
            keep: true,
        }
    }
}

enum Waiter {
    /// A fetch; keep the block in the client cache.
    Fetch(Key, KeyKind, bool, oneshot::Sender<RequestOutcome>),
    Insert(oneshot::Sender<InsertOutcome>),
}

/// Whether a second link to the same node replaces the first (see
/// [`RACE_WINDOW`]).
fn keep_new_link(
    existing_age: Duration,
    existing_dialed: bool,
    new_dialed: bool,
    ours: &[u8; 32],
    theirs: &[u8; 32],
) -> bool {
    if existing_age > RACE_WINDOW {
        return true;
    }
    if existing_dialed == new_dialed {
        return false;
    }
    // Keep the link dialed by the node with the smaller key.
    let we_dial = ours < theirs;
    new_dialed == we_dial
}

/// Retry delay after `failures` failed attempts in a row.
fn retry_delay(failures: u32, kind: PeerKind) -> Duration {
    let max = match kind {
        PeerKind::Friend => FRIEND_RETRY_MAX,
        PeerKind::Opennet => OPENNET_RETRY_MAX,
    };
    RETRY_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(max)
}

/// The driving task's peer bookkeeping (links, remembered peers, dials).
struct Peers {
    setup: PeerSetup,
    links: BTreeMap<PeerId, PeerState>,
    by_key: HashMap<[u8; 32], PeerId>,
    list: PeerList,
    /// Dials under way.
    dialing: HashSet<[u8; 32]>,
    /// Not before this instant (after a failure or a drop).
    retry_at: HashMap<[u8; 32], Instant>,
    /// Keys refused until the instant (misbehaviour). In memory only.
    banned: HashMap<[u8; 32], Instant>,
    /// `last_seen` changed since the last save.
    dirty: bool,
    save: mpsc::UnboundedSender<PeerList>,
    link_tx: mpsc::Sender<NewLink>,
}

impl Peers {
    fn save_now(&mut self) {
        self.dirty = false;
        if self.setup.peer_dir.is_some() {
            let _ = self.save.send(self.list.clone());
        }
    }

    fn dial(&mut self, noderef: NodeRef, bytes: Option<Vec<u8>>) {
        let key = noderef.static_key;
        if key == self.setup.keys.static_public()
            || self.by_key.contains_key(&key)
            || self.is_banned(&key)
            || !self.dialing.insert(key)
        {
            return;
        }
        spawn_connect(&self.setup, noderef, bytes, self.link_tx.clone());
    }

    /// An opennet peer that dialed us sent its noderef: remember it (as
    /// if we had dialed it), if it is really that peer's and the peer was
    /// kept (not a seed client). Anything else is ignored.
    fn introduced(&mut self, pid: PeerId, bytes: &[u8]) {
        let Some(p) = self.links.get(&pid) else {
            return;
        };
        if !self.setup.opennet || p.dialed.is_some() || p.seed_client || !p.routed {
            return;
        }
        let remote = p.remote;
        match NodeRef::from_bytes(bytes) {
            Ok(r) if r.static_key == remote => {
                if self
                    .list
                    .seen(Some((&r, bytes)), &remote, crate::node::now_ms())
                {
                    tracing::debug!(peer = pid.0, "remembered a peer that connected to us");
                    self.save_now();
                }
            }
            Ok(_) => tracing::debug!(peer = pid.0, "a peer sent someone else's noderef"),
            Err(e) => tracing::debug!(peer = pid.0, error = %e, "a peer sent a bad noderef"),
        }
    }

    fn is_banned(&self, key: &[u8; 32]) -> bool {
        self.banned.get(key).is_some_and(|t| *t > Instant::now())
    }

    /// Keep `key` out for [`BAN`]: refused when it connects, not dialed,
    /// and forgotten if it was only an opennet peer.
    fn ban(&mut self, key: [u8; 32]) {
        let now = Instant::now();
        self.banned.retain(|_, t| *t > now);
        if self.banned.len() >= MAX_BANNED {
            if let Some(oldest) = self.banned.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                self.banned.remove(&oldest);
            }
        }
        self.banned.insert(key, now + BAN);
        self.retry_at.insert(key, now + BAN);
        if !self.list.is_friend(&key) && self.list.remove(&key).is_some() {
            self.save_now();
        }
    }

    /// A dial failed, or a dialed link closed before its hello.
    fn failed(&mut self, key: &[u8; 32]) {
        if self.list.failed(key, crate::node::now_ms()) {
            tracing::debug!("forgot an opennet peer that failed repeatedly");
            self.retry_at.remove(key);
            self.save_now();
        } else if let Some(e) = self.list.get(key) {
            self.retry_at
                .insert(*key, Instant::now() + retry_delay(e.failures, e.kind));
            self.dirty = true;
        }
    }

    /// Dial remembered peers that are down and due: friends always,
    /// opennet entries while the node wants peers.
    fn redial(&mut self, routed: usize) {
        let now = Instant::now();
        let mut want = self
            .setup
            .routing
            .max_peers
            .saturating_sub(routed + self.dialing.len());
        let mut due = Vec::new();
        for e in self.list.entries() {
            let key = e.key();
            if self.by_key.contains_key(&key)
                || self.dialing.contains(&key)
                || self.retry_at.get(&key).is_some_and(|t| *t > now)
            {
                continue;
            }
            if e.kind == PeerKind::Opennet {
                if !self.setup.opennet || want == 0 {
                    continue;
                }
                want -= 1;
            }
            due.push((e.noderef.clone(), e.bytes.clone()));
        }
        for (r, b) in due {
            self.dial(r, Some(b));
        }
    }

    fn info(&self, key: &[u8; 32]) -> PeerInfo {
        let entry = self.list.get(key);
        let link = self.by_key.get(key).and_then(|p| self.links.get(p));
        PeerInfo {
            identity: identity_of(key),
            kind: entry.map_or(PeerKind::Opennet, |e| e.kind),
            connected: link.is_some_and(|l| l.routed && !l.seed_client),
            location: link
                .and_then(|l| l.location)
                .or_else(|| entry.and_then(|e| e.noderef.location)),
            noderef: entry.map(super::peerlist::Entry::text),
            addresses: entry
                .map(|e| e.noderef.addresses.clone())
                .unwrap_or_default(),
            last_seen: entry.map_or(0, |e| e.last_seen),
        }
    }

    fn list_all(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .list
            .entries()
            .iter()
            .map(|e| self.info(&e.key()))
            .collect();
        for l in self.links.values() {
            if l.routed && !l.seed_client && self.list.get(&l.remote).is_none() {
                out.push(self.info(&l.remote));
            }
        }
        out
    }

    /// The peer named by an identity or by one of its noderef's addresses.
    fn find(&self, which: &str) -> Option<[u8; 32]> {
        let which = which.trim();
        self.list
            .entries()
            .iter()
            .map(super::peerlist::Entry::key)
            .chain(self.links.values().map(|l| l.remote))
            .find(|k| {
                identity_of(k) == which
                    || self
                        .list
                        .get(k)
                        .is_some_and(|e| e.noderef.addresses.iter().any(|a| a.to_string() == which))
            })
    }
}

#[allow(clippy::too_many_lines, clippy::too_many_arguments)]
async fn drive(
    setup: PeerSetup,
    list: PeerList,
    mut cmds: mpsc::Receiver<Cmd>,
    link_tx: mpsc::Sender<NewLink>,
    mut new_links: mpsc::Receiver<NewLink>,
    shutdown: CancellationToken,
    (connected, stats): (Arc<AtomicUsize>, Arc<Mutex<lichen_routing::Stats>>),
    save: mpsc::UnboundedSender<PeerList>,
) {
    let start = Instant::now();
    let now = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut rng = StdRng::from_entropy();
    let mut node = lichen_routing::Node::new(setup.routing.clone(), setup.location, verify);
    if let Some(r) = &setup.noderef {
        node.set_noderef(lichen_routing::NodeRef {
            location: setup.location,
            address: r.clone(),
        });
    }
    let mut location = setup.location;
    let (ev_tx, mut events) = mpsc::channel::<(PeerId, LinkEvent)>(1024);
    let mut waiters: HashMap<RequestId, Waiter> = HashMap::new();
    let mut next_peer = 1u64;
    let store = setup.store.clone();
    let keeper = Keeper::new(store.clone());
    let own_key = setup.keys.static_public();
    let mut ps = Peers {
        setup: setup.clone(),
        links: BTreeMap::new(),
        by_key: HashMap::new(),
        list,
        dialing: HashSet::new(),
        retry_at: HashMap::new(),
        banned: HashMap::new(),
        dirty: false,
        save,
        link_tx,
    };
    let mut tick = tokio::time::interval(RECONNECT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_save = Instant::now();

    loop {
        let timer = node
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(start + std::time::Duration::from_millis(t)));
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                ps.redial(node.peer_count());
                if ps.dirty && last_save.elapsed() >= SAVE_EVERY {
                    last_save = Instant::now();
                    ps.save_now();
                }
            }
            c = cmds.recv() => {
                let Some(c) = c else { break };
                match c {
                    Cmd::Fetch(key, kind, opts, reply) => {
                        let local = if opts.local_first {
                            store.get(Origin::Local, BlockKind::from(kind), &RoutingKey(key.0)).ok().flatten()
                        } else {
                            None
                        };
                        if let Some(f) = local {
                            let _ = reply.send(RequestOutcome::Found(f.block));
                        } else {
                            let id = node.handle_local_request(now(), LocalRequest::Fetch { key, kind }, &mut rng);
                            waiters.insert(id, Waiter::Fetch(key, kind, opts.keep, reply));
                        }
                    }
                    Cmd::Insert(key, kind, block, reply) => {
                        // The private client cache, never the shared spaces.
                        let _ = store.put(Space::Client, BlockKind::from(kind), &RoutingKey(key.0), &block);
                        let id = node.handle_local_request(now(), LocalRequest::Insert { key, kind, block }, &mut rng);
                        waiters.insert(id, Waiter::Insert(reply));
                    }
                    Cmd::Connect(r, bytes) => ps.dial(r, bytes),
                    Cmd::PeerCount(reply) => { let _ = reply.send(node.peer_count()); }
                    Cmd::AddFriend(r, bytes, reply) => {
                        let key = r.static_key;
                        let result = if key == own_key {
                            Err(AddFriendError::Myself)
                        } else {
                            match ps.list.add_friend(r.clone(), bytes.clone()) {
                                Ok(Added::AlreadyFriend) => Err(AddFriendError::Duplicate),
                                Ok(_) => {
                                    tracing::info!("added a friend");
                                    ps.save_now();
                                    ps.retry_at.remove(&key);
                                    ps.dial(r, Some(bytes));
                                    Ok(ps.info(&key))
                                }
                                Err(e) => Err(AddFriendError::Full(e)),
                            }
                        };
                        let _ = reply.send(result);
                    }
                    Cmd::Remove(which, reply) => {
                        let found = ps.find(&which).map(|key| {
                            let info = ps.info(&key);
                            if ps.list.remove(&key).is_some() {
                                ps.save_now();
                            }
                            ps.retry_at.remove(&key);
                            if let Some(pid) = ps.by_key.remove(&key) {
                                if let Some(p) = ps.links.remove(&pid) {
                                    if p.routed {
                                        node.remove_peer(now(), pid, &mut rng);
                                    }
                                    p.sender.close();
                                }
                            }
                            tracing::info!("removed a peer");
                            info
                        });
                        let _ = reply.send(found);
                    }
                    Cmd::List(reply) => { let _ = reply.send(ps.list_all()); }
                }
            }
            l = new_links.recv() => {
                let Some(l) = l else { break };
                let (link, dialed) = match l {
                    NewLink::Up(link, dialed) => (link, dialed),
                    NewLink::Failed(key) => {
                        ps.dialing.remove(&key);
                        ps.failed(&key);
                        continue;
                    }
                };
                let remote = link.remote_static();
                if dialed.is_some() {
                    ps.dialing.remove(&remote);
                }
                if remote == own_key {
                    link.close();
                    continue;
                }
                if ps.is_banned(&remote) {
                    tracing::debug!("refused a link from a peer banned for misbehaviour");
                    link.close();
                    continue;
                }
                if !setup.opennet && !ps.list.is_friend(&remote) {
                    tracing::debug!("refused a link from a node that is not a friend");
                    link.close();
                    continue;
                }
                if let Some(&old) = ps.by_key.get(&remote) {
                    let replace = ps.links.get(&old).is_none_or(|p| {
                        keep_new_link(p.since.elapsed(), p.dialed.is_some(), dialed.is_some(), &own_key, &remote)
                    });
                    if !replace {
                        tracing::debug!(peer = old.0, "second link to a peer closed");
                        link.close();
                        continue;
                    }
                    tracing::debug!(peer = old.0, "link replaced by a newer one");
                    ps.by_key.remove(&remote);
                    if let Some(p) = ps.links.remove(&old) {
                        if p.routed {
                            node.remove_peer(now(), old, &mut rng);
                        }
                        p.sender.close();
                    }
                }
                let pid = PeerId(next_peer);
                next_peer += 1;
                let (sender, mut rx) = link.into_parts();
                // Hello: our location. Opennet, when we dialed: then our
                // noderef, so the node we dialed can remember us too.
                let _ = sender.try_send(Message::LocationChanged { location });
                if let (true, Some(_), Some(own)) = (setup.opennet, &dialed, &setup.noderef) {
                    let _ = sender.try_send(Message::Noderef { noderef: own.clone() });
                }
                let ev = ev_tx.clone();
                tokio::spawn(async move {
                    while let Some(e) = rx.recv().await {
                        if ev.send((pid, e)).await.is_err() {
                            break;
                        }
                    }
                });
                ps.by_key.insert(remote, pid);
                ps.links.insert(pid, PeerState {
                    sender,
                    remote,
                    routed: false,
                    dialed,
                    since: Instant::now(),
                    location: None,
                    seed_client: false,
                });
                tracing::debug!(peer = pid.0, "link up");
            }
            e = events.recv() => {
                let Some((pid, e)) = e else { break };
                match e {
                    LinkEvent::Message(m) => {
                        let Some(p) = ps.links.get_mut(&pid) else { continue };
                        if let Message::LocationChanged { location: l } = &m {
                            p.location = Some(l.0);
                        }
                        if !p.routed {
                            if let Message::LocationChanged { location: l } = m {
                                p.routed = true;
                                let remote = p.remote;
                                let friend = ps.list.is_friend(&remote);
                                let ok = if setup.opennet && !friend {
                                    node.accept_opennet_peer(now(), pid, l, &mut rng)
                                } else {
                                    node.add_peer(now(), pid, l, &mut rng);
                                    true
                                };
                                // Full: a newcomer that dialed us may still
                                // announce through us (we may be its seed).
                                p.seed_client = !ok
                                    && setup.opennet
                                    && p.dialed.is_none()
                                    && node.accept_seed_client(now(), pid);
                                tracing::debug!(peer = pid.0, accepted = ok, seed_client = p.seed_client, "hello");
                                if p.seed_client {
                                    // Not remembered, not counted.
                                } else if !ok {
                                    p.sender.close();
                                } else {
                                    // Remember it (opennet: only nodes we
                                    // dialed, whose noderef we hold).
                                    let known = p.dialed.as_ref().and_then(|d| {
                                        d.bytes.as_ref().map(|b| (d.noderef.clone(), b.clone()))
                                    });
                                    let remember = if setup.opennet { known.as_ref() } else { None };
                                    if ps.list.seen(remember.map(|(r, b)| (r, b.as_slice())), &remote, crate::node::now_ms()) {
                                        ps.save_now();
                                    } else if ps.list.get(&remote).is_some() {
                                        ps.dirty = true;
                                    }
                                    ps.retry_at.remove(&remote);
                                    if setup.opennet && node.peer_count() == 1 {
                                        // The first peer (a seed, or the first
                                        // node back after losing them all):
                                        // announce at once so nodes near our
                                        // location connect to us. Later
                                        // announcements are the routing core's
                                        // (while under-connected, backing off).
                                        node.handle_local_request(now(), LocalRequest::Announce, &mut rng);
                                    }
                                }
                            } else {
                                tracing::debug!(peer = pid.0, "message before the hello dropped");
                            }
                        } else if let Message::Noderef { noderef } = m {
                            ps.introduced(pid, &noderef);
                        } else {
                            tracing::trace!(peer = pid.0, msg = m.name(), id = ?m.id(), "recv");
                            node.handle_message(now(), pid, m, &mut StoreSource(store.as_ref(), &keeper), &mut rng);
                        }
                        // No `continue` here: the actions below (and the
                        // peer count) must follow the hello at once.
                    }
                    LinkEvent::Closed(err) => {
                        tracing::debug!(peer = pid.0, error = %err, "link down");
                        if let Some(p) = ps.links.remove(&pid) {
                            ps.by_key.remove(&p.remote);
                            if p.routed {
                                node.remove_peer(now(), pid, &mut rng);
                                // Not redialed at once: a full node closes
                                // right after the hello, and would be
                                // dialed every tick.
                                let delay = if ps.list.is_friend(&p.remote) {
                                    RETRY_BASE
                                } else if p.since.elapsed() < SHORT_LINK {
                                    OPENNET_RETRY_MAX / 2
                                } else {
                                    DROPPED_RETRY
                                };
                                ps.retry_at.insert(p.remote, Instant::now() + delay);
                            } else if p.dialed.is_some() {
                                // Closed before its hello: refused (a
                                // darknet node that does not know us).
                                ps.failed(&p.remote);
                            }
                        }
                    }
                }
            }
            () = async {
                match timer {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                node.handle_timeout(now(), &mut rng);
            }
        }
        while let Some(a) = node.poll_action() {
            match a {
                Action::Send { to, msg } => {
                    tracing::trace!(peer = to.0, msg = msg.name(), id = ?msg.id(), "send");
                    if let Some(p) = ps.links.get(&to) {
                        if let Err(e) = p.sender.try_send(msg) {
                            tracing::debug!(peer = to.0, error = %e, "message dropped");
                        }
                    }
                }
                Action::StoreBlock {
                    space,
                    key,
                    kind,
                    block,
                } => {
                    let space = match space {
                        lichen_routing::Space::Store => Space::Store,
                        lichen_routing::Space::Cache => Space::Cache,
                    };
                    // Verified by the routing core (its contract), so a
                    // CHK is not hashed a second time on every hop.
                    keeper.keep(space, BlockKind::from(kind), RoutingKey(key.0), block);
                }
                Action::RequestDone { id, outcome } => {
                    if let Some(Waiter::Fetch(key, kind, keep, reply)) = waiters.remove(&id) {
                        if let (true, RequestOutcome::Found(b)) = (keep, &outcome) {
                            keeper.keep(
                                Space::Client,
                                BlockKind::from(kind),
                                RoutingKey(key.0),
                                b.clone(),
                            );
                        }
                        let _ = reply.send(outcome);
                    }
                }
                Action::InsertDone { id, outcome } => {
                    if let Some(Waiter::Insert(reply)) = waiters.remove(&id) {
                        let _ = reply.send(outcome);
                    }
                }
                Action::Connect { noderef } => match NodeRef::from_bytes(&noderef.address) {
                    Ok(r) => ps.dial(r, Some(noderef.address)),
                    Err(e) => tracing::debug!(error = %e, "bad noderef in a connect offer"),
                },
                Action::Disconnect { peer, why } => {
                    if let Some(p) = ps.links.remove(&peer) {
                        ps.by_key.remove(&p.remote);
                        if why == lichen_routing::Disconnect::Misbehaving {
                            tracing::info!(
                                "disconnected a misbehaving peer; it is refused for {} minutes",
                                BAN.as_secs() / 60
                            );
                            ps.ban(p.remote);
                        } else {
                            // Not redialed at once (a friend is, later).
                            ps.retry_at.insert(p.remote, Instant::now() + DROPPED_RETRY);
                        }
                        p.sender.close();
                    }
                }
                Action::LocationChanged { location: l } => {
                    location = l;
                    for p in ps.links.values() {
                        let _ = p.sender.try_send(Message::LocationChanged { location: l });
                    }
                }
            }
        }
        connected.store(node.peer_count(), Ordering::Relaxed);
        stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_from(node.stats());
    }
    connected.store(0, Ordering::Relaxed);
    for p in ps.links.values() {
        p.sender.close();
    }
    if ps.dirty {
        ps.save_now();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct TestNode {
        m: PeerManager,
        store: Arc<dyn BlockStore>,
        r: NodeRef,
        bytes: Vec<u8>,
        stop: CancellationToken,
    }

    async fn node(secret: u8, location: u64) -> TestNode {
        node_in(secret, location, None).await
    }

    /// A 16 MiB-per-space memory store.
    fn memory_store(secret: u8, location: u64) -> Arc<dyn BlockStore> {
        Arc::new(lichen_store::MemoryStore::new(
            &lichen_store::StoreConfig::new(
                lichen_store::Budgets {
                    store: 1 << 24,
                    cache: 1 << 24,
                    client: 1 << 24,
                },
                location,
                lichen_store::StoreSecret::from_bytes([secret; 32]),
            ),
        ))
    }

    async fn node_in(secret: u8, location: u64, dir: Option<PathBuf>) -> TestNode {
        node_with(secret, location, dir, false).await
    }

    async fn node_with(secret: u8, location: u64, dir: Option<PathBuf>, opennet: bool) -> TestNode {
        let keys = NodeKeys::from_static_secret([secret; 32]);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = NodeRef::new(&keys, vec![l.local_addr().unwrap()], Some(location));
        let store = memory_store(secret, location);
        let setup = PeerSetup {
            noderef: Some(r.to_bytes(&keys)),
            keys,
            location: Location(location),
            store: store.clone(),
            link: LinkConfig::default(),
            bandwidth: Arc::new(Bandwidth::unlimited()),
            // Three nodes: every hop caches, so the result does not depend
            // on the random HTL decisions (the anonymity rule is tested in
            // the routing crate).
            routing: lichen_routing::Config {
                cache_max_htl: 18,
                ..lichen_routing::Config::default()
            },
            opennet,
            peer_dir: dir,
            max_remembered: 8,
        };
        let stop = CancellationToken::new();
        let bytes = r.to_bytes(&keys_of(secret));
        TestNode {
            m: PeerManager::start(setup, l, stop.clone()),
            store,
            r,
            bytes,
            stop,
        }
    }

    fn keys_of(secret: u8) -> NodeKeys {
        NodeKeys::from_static_secret([secret; 32])
    }

    /// Make `a` and `b` friends of each other.
    async fn befriend(a: &TestNode, b: &TestNode) {
        a.m.add_friend(b.r.clone(), b.bytes.clone()).await.unwrap();
        b.m.add_friend(a.r.clone(), a.bytes.clone()).await.unwrap();
    }

    async fn wait_peers(m: &PeerManager, n: usize) {
        for _ in 0..200 {
            if m.peer_count().await.unwrap() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("peers did not connect");
    }

    #[test]
    fn handshake_slots_are_bounded_per_address_and_in_all() {
        let slots = Arc::new(HandshakeSlots::default());
        let ip = |a: u8, b: u8| std::net::IpAddr::from([10, 0, a, b]);
        // One address gets its share, no more.
        let mine: Vec<_> = (0..MAX_HANDSHAKES_PER_ADDRESS)
            .map(|_| slots.take(ip(0, 1)).unwrap())
            .collect();
        assert!(slots.take(ip(0, 1)).is_none());
        // Others still get in, up to the total.
        let mut others = Vec::new();
        for i in 0..(MAX_INBOUND_HANDSHAKES - MAX_HANDSHAKES_PER_ADDRESS) {
            let i = u8::try_from(i).unwrap();
            others.push(slots.take(ip(1, i)).unwrap());
        }
        assert!(slots.take(ip(2, 1)).is_none(), "over the total");
        // A finished handshake gives its slot back.
        drop(mine);
        assert!(slots.take(ip(0, 1)).is_some());
        drop(others);
        // Loopback has no per-address share (testnets), only the total.
        let lo = std::net::IpAddr::from([127, 0, 0, 1]);
        let held: Vec<_> = (0..MAX_INBOUND_HANDSHAKES)
            .map(|_| slots.take(lo).unwrap())
            .collect();
        assert!(slots.take(lo).is_none());
        drop(held);
        assert!(slots.lock().is_empty());
    }

    /// Connections that never finish their handshake hold at most
    /// `MAX_INBOUND_HANDSHAKES` slots: the next one is closed at once, and
    /// a real peer gets in as soon as they are gone.
    #[tokio::test]
    async fn half_open_connections_are_bounded() {
        use tokio::io::AsyncReadExt;
        let (na, nb) = (node(1, 1 << 62).await, node(2, 2 << 62).await);
        let addr = nb.r.addresses[0];
        let mut idle = Vec::new();
        for _ in 0..MAX_INBOUND_HANDSHAKES {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Let the accept loop take them all.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut byte))
            .await
            .expect("the connection over the limit was left open")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without a byte");
        drop(idle);
        befriend(&na, &nb).await;
        wait_peers(&na.m, 1).await;
        wait_peers(&nb.m, 1).await;
        for n in [&na, &nb] {
            n.stop.cancel();
        }
    }

    /// FCP `WriteToClientCache=false`: a block fetched from the network is
    /// not kept in the client cache; by default it is.
    #[tokio::test]
    async fn a_fetch_keeps_its_block_in_the_client_cache_only_if_asked() {
        let (na, nb) = (node(4, 1 << 62).await, node(5, 3 << 62).await);
        befriend(&na, &nb).await;
        wait_peers(&na.m, 1).await;
        wait_peers(&nb.m, 1).await;
        let mut keys = Vec::new();
        for text in [&b"not kept"[..], b"kept"] {
            let (chk, block) =
                lichen_crypto::chk::encode(text, lichen_crypto::DataFlags::default()).unwrap();
            na.store
                .put(Space::Store, BlockKind::Chk, &chk.routing_key, &block)
                .unwrap();
            keys.push((Key(chk.routing_key.0), block));
        }
        for ((key, block), keep) in keys.iter().zip([false, true]) {
            let opts = FetchOpts {
                local_first: true,
                keep,
            };
            let got = tokio::time::timeout(
                Duration::from_secs(30),
                nb.m.fetch_with(*key, KeyKind::Chk, opts),
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(got, RequestOutcome::Found(block.clone()));
        }
        let in_client = |k: &Key| {
            nb.store
                .contains_in(Space::Client, BlockKind::Chk, &RoutingKey(k.0))
        };
        // The store writer keeps blocks in order: once the second is in,
        // the first would be too.
        for _ in 0..250 {
            if in_client(&keys[1].0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(in_client(&keys[1].0), "the default fetch kept nothing");
        assert!(!in_client(&keys[0].0), "keep: false kept the block");
        for n in [&na, &nb] {
            n.stop.cancel();
        }
    }

    #[tokio::test]
    async fn a_block_inserted_on_a_is_fetched_on_c_through_b() {
        let (na, nb, nc) = (
            node(1, 1 << 62).await,
            node(2, 2 << 62).await,
            node(3, 3 << 62).await,
        );
        befriend(&na, &nb).await;
        befriend(&nc, &nb).await;
        let (a, b, c) = (&na.m, &nb.m, &nc.m);
        wait_peers(a, 1).await;
        wait_peers(b, 2).await;
        wait_peers(c, 1).await;
        let data = b"hello over real links".repeat(100);
        let (chk, block) =
            lichen_crypto::chk::encode(&data, lichen_crypto::DataFlags::default()).unwrap();
        let key = Key(chk.routing_key.0);
        let ins = tokio::time::timeout(
            Duration::from_secs(30),
            a.insert(key, KeyKind::Chk, block.clone()),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            matches!(
                ins,
                InsertOutcome::Success | InsertOutcome::RouteNotFound { .. }
            ),
            "{ins:?}"
        );
        let got = tokio::time::timeout(Duration::from_secs(30), c.fetch(key, KeyKind::Chk))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, RequestOutcome::Found(block));
        for n in [&na, &nb, &nc] {
            n.stop.cancel();
        }
    }

    #[tokio::test]
    async fn darknet_refuses_strangers_and_keeps_one_link_per_friend() {
        let a = node(11, 1 << 62).await;
        let b = node(12, 2 << 62).await;
        let stranger = node(13, 3 << 62).await;
        // Both add each other at once: simultaneous dials end in one link.
        befriend(&a, &b).await;
        wait_peers(&a.m, 1).await;
        wait_peers(&b.m, 1).await;
        // The stranger knows a, but a does not know it.
        stranger
            .m
            .add_friend(a.r.clone(), a.bytes.clone())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(a.m.peer_count().await.unwrap(), 1);
        assert_eq!(b.m.peer_count().await.unwrap(), 1);
        assert_eq!(stranger.m.peer_count().await.unwrap(), 0);
        let listed = a.m.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].connected && listed[0].kind == PeerKind::Friend);
        assert_eq!(listed[0].identity, identity_of(&b.r.static_key));
        // Duplicates and self are refused with typed errors.
        assert_eq!(
            a.m.add_friend(b.r.clone(), b.bytes.clone()).await,
            Err(AddFriendError::Duplicate)
        );
        assert_eq!(
            a.m.add_friend(a.r.clone(), a.bytes.clone()).await,
            Err(AddFriendError::Myself)
        );
        // Removing b closes the link; b is then refused too.
        let gone = a.m.remove(&identity_of(&b.r.static_key)).await.unwrap();
        assert!(gone.is_some());
        assert!(a.m.remove("nobody").await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(a.m.peer_count().await.unwrap(), 0);
        for n in [&a, &b, &stranger] {
            n.stop.cancel();
        }
    }

    #[tokio::test]
    async fn friends_are_written_to_the_peer_file_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = node_in(21, 1 << 62, Some(dir.path().to_owned())).await;
        let b = node(22, 2 << 62).await;
        a.m.add_friend(b.r.clone(), b.bytes.clone()).await.unwrap();
        a.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), a.m.stopped())
            .await
            .unwrap();
        let loaded = PeerList::load(dir.path(), 8);
        assert!(loaded.list.is_friend(&b.r.static_key));
        // A new manager on the same directory lists it.
        let a2 = node_in(21, 1 << 62, Some(dir.path().to_owned())).await;
        let listed = a2.m.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].kind, PeerKind::Friend);
        a2.stop.cancel();
        b.stop.cancel();
    }

    #[tokio::test]
    async fn a_misbehaving_peer_is_disconnected_and_refused_afterwards() {
        let a = node(41, 1 << 62).await;
        // A friend of a's that turns hostile: it speaks the protocol
        // (real Noise link, hello) and then sends replies to requests it
        // was never given, each an offence.
        let keys = keys_of(42);
        let r = NodeRef::new(&keys, vec!["127.0.0.1:9".parse().unwrap()], Some(2 << 62));
        a.m.add_friend(r.clone(), r.to_bytes(&keys)).await.unwrap();
        let bw = Arc::new(Bandwidth::unlimited());
        let cfg = LinkConfig::default();
        let link = Link::connect_noderef(&a.r, &keys, &cfg, bw.clone())
            .await
            .unwrap();
        let (tx, mut rx) = link.into_parts();
        tx.try_send(Message::LocationChanged {
            location: Location(2 << 62),
        })
        .unwrap();
        wait_peers(&a.m, 1).await;
        let limit = lichen_routing::Config::default().misbehaviour_limit;
        for id in 0..u64::from(limit) + 10 {
            if tx.try_send(Message::Accepted { id }).is_err() {
                break;
            }
        }
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = rx.recv().await {
                if matches!(e, LinkEvent::Closed(_)) {
                    return true;
                }
            }
            true
        })
        .await
        .unwrap();
        assert!(closed);
        assert_eq!(a.m.peer_count().await.unwrap(), 0);
        // Back at once with the same key: closed before any hello.
        let again = Link::connect_noderef(&a.r, &keys, &cfg, bw).await.unwrap();
        let (_tx2, mut rx2) = again.into_parts();
        let first = tokio::time::timeout(Duration::from_secs(10), rx2.recv())
            .await
            .unwrap();
        assert!(
            matches!(first, None | Some(LinkEvent::Closed(_))),
            "a banned peer got {first:?}"
        );
        // Still a friend (the ban ends by itself), but not connected.
        let listed = a.m.list().await.unwrap();
        assert!(listed
            .iter()
            .any(|p| p.kind == PeerKind::Friend && !p.connected));
        a.stop.cancel();
    }

    #[tokio::test]
    async fn an_opennet_node_remembers_a_peer_that_dialed_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = node_with(51, 1 << 62, Some(dir.path().to_owned()), true).await;
        let b = node_with(52, 2 << 62, None, true).await;
        b.m.connect(a.r.clone()).await.unwrap();
        wait_peers(&a.m, 1).await;
        let mut remembered = false;
        for _ in 0..100 {
            let listed = a.m.list().await.unwrap();
            if listed
                .iter()
                .any(|p| p.identity == identity_of(&b.r.static_key) && p.noderef.is_some())
            {
                remembered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(remembered, "a did not remember b");
        // It is in a's peer file: a restarted a can dial b without seeds.
        a.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), a.m.stopped())
            .await
            .unwrap();
        let loaded = PeerList::load(dir.path(), 8);
        assert!(loaded.list.get(&b.r.static_key).is_some());
        b.stop.cancel();
    }

    #[test]
    fn the_store_writer_keeps_blocks_of_every_space_and_kind() {
        let store = memory_store(5, 0);
        let chk = |n: u8| {
            let (k, b) =
                lichen_crypto::chk::encode(&[n; 100], lichen_crypto::DataFlags::default()).unwrap();
            (k.routing_key, b)
        };
        let ssk = lichen_crypto::ssk::SskPrivate::from_keyword("writer");
        let (sk, sb) = ssk
            .encode("doc", b"x", lichen_crypto::DataFlags::default())
            .unwrap();
        let keeper = Keeper::new(store.clone());
        let blocks: Vec<(Space, BlockKind, RoutingKey, Vec<u8>)> = vec![
            (Space::Cache, BlockKind::Chk, chk(1).0, chk(1).1),
            (Space::Store, BlockKind::Chk, chk(2).0, chk(2).1),
            (Space::Client, BlockKind::Chk, chk(3).0, chk(3).1),
            (Space::Cache, BlockKind::Ssk, sk, sb),
        ];
        for (space, kind, key, block) in blocks.clone() {
            keeper.keep(space, kind, key, block);
        }
        // Peers are served the shared blocks at once (written or not), and
        // never the client cache's.
        let mut src = StoreSource(store.as_ref(), &keeper);
        assert_eq!(
            src.get(&Key(blocks[0].2 .0), KeyKind::Chk),
            Some(blocks[0].3.clone())
        );
        assert_eq!(src.get(&Key(blocks[2].2 .0), KeyKind::Chk), None);
        drop(keeper); // the writer drains its queue, then stops
        for _ in 0..200 {
            if blocks
                .iter()
                .all(|(s, k, key, _)| store.contains_in(*s, *k, key))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for (space, kind, key, block) in blocks {
            assert_eq!(store.get_in(space, kind, &key).unwrap(), Some(block));
        }
    }

    #[test]
    fn simultaneous_links_resolve_the_same_way_on_both_sides() {
        let lo = [1u8; 32];
        let hi = [2u8; 32];
        let young = Duration::from_millis(10);
        // lo's view: existing = the link it dialed, new = hi's dial.
        let lo_replaces = keep_new_link(young, true, false, &lo, &hi);
        // hi's view: existing = the link it dialed, new = lo's dial.
        let hi_replaces = keep_new_link(young, true, false, &hi, &lo);
        // Both keep lo's dial: lo keeps its own, hi switches to it.
        assert!(!lo_replaces && hi_replaces);
        // Other arrival order gives the same choice.
        assert!(keep_new_link(young, false, true, &lo, &hi));
        assert!(!keep_new_link(young, false, true, &hi, &lo));
        // An old link is replaced by a new one (the peer restarted).
        assert!(keep_new_link(RACE_WINDOW * 2, true, false, &lo, &hi));
        assert_eq!(retry_delay(1, PeerKind::Friend), RETRY_BASE);
        assert_eq!(retry_delay(40, PeerKind::Friend), FRIEND_RETRY_MAX);
        assert_eq!(retry_delay(40, PeerKind::Opennet), OPENNET_RETRY_MAX);
    }
}
