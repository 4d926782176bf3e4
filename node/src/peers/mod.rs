//! The peer manager: the node's driver of the link crate's peer policy
//! ([`lichen_link::policy`]) and, through it, of the routing core
//! (`lichen_routing::Node`, the code the simulator runs), with real
//! sockets, real time and OS randomness.
//!
//! It implements the context layer's view of the network
//! ([`crate::node::Network`], [`crate::node::Peers`]); the runtime puts it
//! in `Node::peers`, so nothing below this layer names it.
//!
//! One task owns the policy ([`driver`]). It reads the time from the
//! node's clock ([`crate::util::clock::Clock`], passed in), so a test can
//! drive the policy's deadlines. Links feed it
//! `(PeerId, LinkEvent)`; local fetches and inserts come in as commands
//! with a reply channel; the policy's outputs go out: `Send` to the link's
//! queue (bounded in bytes, 8 MiB; dropped only when that is full, and the
//! routing layer's timeouts treat it as loss), `StoreBlock` to the store
//! writer ([`store`]), `Dial` to a new link task, `Close` to a link close,
//! `SavePeers` to the saver. Every rule about which links are kept
//! (admission, bans, backoff, duplicate links, the hello, the first
//! announcement) is the policy's; this module only carries them out.
//!
//! Remembered peers live in `peers.sealed` ([`lichen_link::peerlist`], read
//! and written by `file`): friends and the opennet peers this node dialed
//! or that sent their noderef after dialing it. One saver task writes it
//! (atomic rename), at once when an entry is added or removed, otherwise
//! every [`lichen_link::policy::SAVE_EVERY`] when only `last_seen`
//! changed, and at shutdown.
//!
//! Not yet: location swaps persisted to the identity.

mod driver;
pub mod fcp;
mod file;
mod portmap;
mod punch;
mod store;
#[cfg(test)]
mod tests;

pub use crate::node::AddFriendError;
pub use lichen_link::policy::{identity_of, PeerInfo, Reachability, Reachable, SAVE_EVERY};

use crate::node::{Fetched, Inserted, NetFuture, Network, Peers, Stopped};
use crate::util::clock::{Clock, SystemClock};

use lichen_link::peerlist::PeerList;
use lichen_link::{Bandwidth, LinkConfig, LinkError, NodeKeys, NodeRef};
use lichen_routing::{InsertOutcome, Key, KeyKind, Location, RequestOutcome};
use lichen_store::BlockStore;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

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
    pub noderef: Option<lichen_routing::NoderefBytes>,
    /// Directory of `peers.sealed` (None: peers are not remembered).
    pub peer_dir: Option<PathBuf>,
    /// What the peer file is sealed under.
    pub vault: crate::vault::Vault,
    /// Most opennet peers remembered.
    pub max_remembered: usize,
    /// Opennet seed nodes, dialed while the node has no peer.
    pub seeds: Vec<(NodeRef, lichen_routing::NoderefBytes)>,
    /// How own requests use tunnels (`hops` 0: none; `[anonymity]
    /// tunnel_hops`).
    pub tunnels: lichen_routing::TunnelConfig,
    /// Loopback addresses count as many sources for the per-range limit
    /// on inbound handshakes (`[network] loopback_sources`, tests).
    pub loopback_sources: bool,
    /// The node listens on every interface and cannot know its address:
    /// its noderef names the public address peers' dial-backs reached
    /// (`PeerPolicy::noderef_address`) once two of them agree.
    pub auto_address: bool,
    /// Ask the home router to forward the peer port, for this lease
    /// (`[network] port_mapping`; [`portmap`]); tried only when the node
    /// listens on an unspecified or private IPv4 address.
    pub port_mapping: Option<std::time::Duration>,
}

impl std::fmt::Debug for PeerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSetup")
            .field("opennet", &self.opennet)
            .finish_non_exhaustive()
    }
}

/// A request of the node's user to the driving task.
enum Cmd {
    /// A fetch for this node's user ([`FetchOpts`]: store first, keep).
    Fetch(Key, KeyKind, FetchOpts, oneshot::Sender<RequestOutcome>),
    Insert(Key, KeyKind, Vec<u8>, oneshot::Sender<InsertOutcome>),
    Connect(NodeRef, Option<lichen_routing::NoderefBytes>),
    PeerCount(oneshot::Sender<usize>),
    AddFriend(
        NodeRef,
        lichen_routing::NoderefBytes,
        oneshot::Sender<Result<PeerInfo, lichen_link::policy::AddFriendError>>,
    ),
    Remove(String, oneshot::Sender<Option<PeerInfo>>),
    List(oneshot::Sender<Vec<PeerInfo>>),
    Invite(
        std::time::Duration,
        oneshot::Sender<Result<lichen_link::Invitation, lichen_link::policy::InviteError>>,
    ),
    Redeem(
        lichen_link::Invitation,
        oneshot::Sender<Result<PeerInfo, AddFriendError>>,
    ),
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
    /// What peers' dial-backs said, copied by the driving task every
    /// `RECONNECT_TICK`.
    reach: Arc<Mutex<Reachability>>,
    /// The address the node's noderef names now.
    advertised: Arc<Mutex<Option<std::net::SocketAddr>>>,
    /// The port mapping the router granted ([`portmap`]).
    mapped: portmap::Shared,
    /// [`PeerSetup::auto_address`]: the first address is a stand-in.
    auto_address: bool,
    /// Cancelled once the manager has stopped and the peer file is written.
    stopped: CancellationToken,
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

impl PeerManager {
    /// Start the manager on the system clock: see
    /// [`PeerManager::start_with_clock`].
    #[must_use]
    pub fn start(setup: PeerSetup, listener: TcpListener, shutdown: CancellationToken) -> Self {
        Self::start_with_clock(setup, listener, shutdown, Arc::new(SystemClock))
    }

    /// Start the manager: accept links on `listener` until `shutdown`,
    /// reading the time from `clock` (the node's). Remembered peers are
    /// loaded from `setup.peer_dir` (problems are logged, never fatal) and
    /// dialed.
    #[must_use]
    pub(crate) fn start_with_clock(
        setup: PeerSetup,
        listener: TcpListener,
        shutdown: CancellationToken,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (link_tx, link_rx) = mpsc::channel(64);
        let list = match &setup.peer_dir {
            Some(dir) => {
                let loaded = file::load(dir, setup.max_remembered, &setup.vault);
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
        // Peers dial back the port others dial: the noderef's (a port
        // forward may map another), else the one listened on.
        let advertised = setup
            .noderef
            .as_ref()
            .and_then(|b| NodeRef::from_bytes(b).ok())
            .and_then(|r| r.addresses.first().copied());
        let listen_port = advertised
            .map(|a| a.port())
            .or_else(|| listener.local_addr().ok().map(|a| a.port()));
        let advertised = Arc::new(Mutex::new(advertised));
        let mapped = portmap::Shared::default();
        let mapper = start_port_mapping(&setup, &listener, &mapped, &shutdown);
        let punches = punch::Punches::new(listener.local_addr().ok().map(|a| a.port()));
        let loopback_net = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        tokio::spawn(driver::accept_loop(
            listener,
            setup.clone(),
            link_tx.clone(),
            shutdown.clone(),
            punches.clone(),
        ));
        let connected = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Mutex::new(lichen_routing::Stats::default()));
        let reach = Arc::new(Mutex::new(Reachability::default()));
        let stopped = CancellationToken::new();
        let (save_tx, save_rx) = mpsc::unbounded_channel();
        let saver = tokio::spawn(driver::saver(
            setup.peer_dir.clone(),
            setup.vault.clone(),
            save_rx,
        ));
        let done = stopped.clone();
        let channels = driver::Channels {
            cmds: cmd_rx,
            link_tx,
            new_links: link_rx,
            connected: connected.clone(),
            stats: stats.clone(),
            save: save_tx,
            reach: reach.clone(),
            listen_port,
            advertised: advertised.clone(),
            mapped: mapped.clone(),
            punches,
            loopback_net,
        };
        let auto_address = setup.auto_address;
        let drive_task = tokio::spawn(driver::drive(setup, list, channels, clock, shutdown));
        tokio::spawn(async move {
            let _ = drive_task.await;
            let _ = saver.await;
            // The port mapping removed from the router.
            if let Some(m) = mapper {
                let _ = m.await;
            }
            done.cancel();
        });
        PeerManager {
            cmd: cmd_tx,
            connected,
            stats,
            reach,
            advertised,
            mapped,
            auto_address,
            stopped,
        }
    }

    /// The port mapping the home router granted, if any ([`portmap`]).
    #[must_use]
    pub(crate) fn port_mapping(&self) -> Option<crate::status::PortMapping> {
        *self
            .mapped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Whether peers can open links to this node, as their dial-backs
    /// said at the driving task's last tick (at most a second ago).
    #[must_use]
    pub fn reachability(&self) -> Reachability {
        *self
            .reach
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The address the node's noderef names now (it follows the public
    /// address peers reached when [`PeerSetup::auto_address`] is set).
    #[must_use]
    pub fn advertised_address(&self) -> Option<std::net::SocketAddr> {
        *self
            .advertised
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Add a friend (darknet peer): remembered, dialed now and whenever
    /// the link is down, and accepted on a darknet node.
    ///
    /// # Errors
    /// [`AddFriendError`].
    pub async fn add_friend(
        &self,
        noderef: NodeRef,
        bytes: lichen_routing::NoderefBytes,
    ) -> Result<PeerInfo, AddFriendError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::AddFriend(noderef, bytes, tx))
            .await
            .map_err(|_| AddFriendError::Stopped)?;
        Ok(rx.await.map_err(|_| AddFriendError::Stopped)??)
    }

    /// Make an invitation ([`lichen_link::invitation`]) valid for
    /// `valid`.
    ///
    /// # Errors
    /// [`lichen_link::policy::InviteError`]; [`LinkError::Closed`] if the
    /// manager has stopped.
    pub async fn invite(
        &self,
        valid: std::time::Duration,
    ) -> Result<Result<lichen_link::Invitation, lichen_link::policy::InviteError>, LinkError> {
        // Listening on every interface, the noderef names 127.0.0.1 until
        // peers or the router said where the node is: no use to a friend.
        let stand_in = self
            .advertised_address()
            .is_none_or(|a| a.ip().is_loopback() || a.ip().is_unspecified());
        if self.auto_address && stand_in {
            return Ok(Err(lichen_link::policy::InviteError::AddressUnknown));
        }
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Invite(valid, tx))
            .await
            .map_err(|_| LinkError::Closed)?;
        rx.await.map_err(|_| LinkError::Closed)
    }

    /// Use an invitation: dial the inviting node, present its token, and
    /// remember it as a friend (it remembers this node too). Waits for
    /// the answer, at most [`lichen_link::policy::REDEEM_WINDOW`].
    ///
    /// # Errors
    /// [`AddFriendError`]: refused at once (this node's own, already a
    /// friend), or by the inviting node or the network
    /// ([`AddFriendError::InvitationRefused`]).
    pub async fn redeem(&self, inv: lichen_link::Invitation) -> Result<PeerInfo, AddFriendError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Redeem(inv, tx))
            .await
            .map_err(|_| AddFriendError::Stopped)?;
        match tokio::time::timeout(lichen_link::policy::REDEEM_WINDOW, rx).await {
            Ok(r) => r.map_err(|_| AddFriendError::Stopped)?,
            Err(_) => Err(AddFriendError::InvitationRefused),
        }
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

impl Network for PeerManager {
    fn fetch(&self, key: Key, kind: KeyKind, local_first: bool, keep: bool) -> Fetched<'_> {
        let opts = FetchOpts { local_first, keep };
        Box::pin(async move { self.fetch_with(key, kind, opts).await.map_err(|_| Stopped) })
    }

    fn insert(&self, key: Key, kind: KeyKind, block: Vec<u8>) -> Inserted<'_> {
        Box::pin(async move {
            PeerManager::insert(self, key, kind, block)
                .await
                .map_err(|_| Stopped)
        })
    }
}

impl Peers for PeerManager {
    fn network(&self) -> &dyn Network {
        self
    }

    fn connected(&self) -> usize {
        PeerManager::connected(self)
    }

    fn stats(&self) -> lichen_routing::Stats {
        PeerManager::stats(self)
    }

    fn reachability(&self) -> Reachability {
        PeerManager::reachability(self)
    }

    fn port_mapping(&self) -> Option<crate::status::PortMapping> {
        PeerManager::port_mapping(self)
    }

    fn advertised(&self) -> Option<std::net::SocketAddr> {
        PeerManager::advertised_address(self)
    }

    fn add_friend(
        &self,
        noderef: NodeRef,
        bytes: lichen_routing::NoderefBytes,
    ) -> NetFuture<'_, Result<PeerInfo, AddFriendError>> {
        Box::pin(PeerManager::add_friend(self, noderef, bytes))
    }

    fn remove<'a>(&'a self, which: &'a str) -> NetFuture<'a, Result<Option<PeerInfo>, Stopped>> {
        Box::pin(async move { PeerManager::remove(self, which).await.map_err(|_| Stopped) })
    }

    fn invite(
        &self,
        valid: std::time::Duration,
    ) -> NetFuture<
        '_,
        Result<Result<lichen_link::Invitation, lichen_link::policy::InviteError>, Stopped>,
    > {
        Box::pin(async move { PeerManager::invite(self, valid).await.map_err(|_| Stopped) })
    }

    fn redeem(
        &self,
        inv: lichen_link::Invitation,
    ) -> NetFuture<'_, Result<PeerInfo, AddFriendError>> {
        Box::pin(PeerManager::redeem(self, inv))
    }

    fn list(&self) -> NetFuture<'_, Result<Vec<PeerInfo>, Stopped>> {
        Box::pin(async move { PeerManager::list(self).await.map_err(|_| Stopped) })
    }

    fn stopped(&self) -> NetFuture<'_, ()> {
        Box::pin(PeerManager::stopped(self))
    }
}

/// Start the port-mapping task ([`portmap`]) when `setup` asks for it
/// and the node listens where a NAT router may map its port.
fn start_port_mapping(
    setup: &PeerSetup,
    listener: &TcpListener,
    mapped: &portmap::Shared,
    shutdown: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let lease = setup.port_mapping?;
    let listen = listener.local_addr().ok()?;
    if !portmap::wanted(listen) {
        return None;
    }
    let s = portmap::PortMapSetup { listen, lease };
    Some(tokio::spawn(portmap::run(
        s,
        mapped.clone(),
        shutdown.clone(),
    )))
}
