//! The peer manager: accepts and initiates links and drives
//! `lichen_routing::Node` (the code the simulator runs) with real time and
//! OS randomness.
//!
//! One task owns the routing node. Links feed it `(PeerId, LinkEvent)`;
//! local fetches and inserts come in as commands with a reply channel; the
//! routing node's actions go out: `Send` to the link's bounded queue
//! (dropped when full: the routing layer's timeouts treat it as loss),
//! `StoreBlock` into the store's Store/Cache spaces, `Connect` to a new
//! link task, `Disconnect` to a link close.
//!
//! ```text
//! link up ──► both sides send LocationChanged{own location} as a hello
//! hello  ──► add_peer / accept_opennet_peer, then messages go to routing
//! ```
//!
//! Not yet: darknet friend lists (every handshaking node is accepted),
//! peer persistence, backoff of misbehaving addresses, location swaps
//! persisted to the identity.

use super::bandwidth::Bandwidth;
use super::error::LinkError;
use super::keys::NodeKeys;
use super::link::{Link, LinkConfig, LinkEvent, LinkSender};
use super::noderef::NodeRef;
use lichen_crypto::{BlockKind, RoutingKey};
use lichen_routing::{
    Action, BlockSource, InsertOutcome, Key, KeyKind, LocalRequest, Location, Message, PeerId,
    RequestId, RequestOutcome,
};
use lichen_store::{BlockStore, Origin, Space};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
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
    /// Accept strangers (opennet).
    pub opennet: bool,
    /// This node's noderef bytes (for opennet announcements and folding).
    pub noderef: Option<Vec<u8>>,
}

impl std::fmt::Debug for PeerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSetup")
            .field("opennet", &self.opennet)
            .finish_non_exhaustive()
    }
}

enum Cmd {
    /// The bool: look at the local store first (false: FCP `IgnoreDS`).
    Fetch(Key, KeyKind, bool, oneshot::Sender<RequestOutcome>),
    Insert(Key, KeyKind, Vec<u8>, oneshot::Sender<InsertOutcome>),
    Connect(NodeRef),
    PeerCount(oneshot::Sender<usize>),
}

/// A handle on a running peer manager.
#[derive(Clone, Debug)]
pub struct PeerManager {
    cmd: mpsc::Sender<Cmd>,
    /// The routing node's peer count, updated by the driving task.
    connected: Arc<AtomicUsize>,
}

fn kind_of(k: KeyKind) -> BlockKind {
    match k {
        KeyKind::Chk => BlockKind::Chk,
        KeyKind::Ssk => BlockKind::Ssk,
    }
}

/// Verifies blocks for the routing node with `lichen_crypto`.
fn verify(key: &Key, kind: KeyKind, block: &[u8]) -> bool {
    lichen_crypto::verify_block(kind_of(kind), &RoutingKey(key.0), block).is_ok()
}

struct StoreSource<'a>(&'a dyn BlockStore);

impl BlockSource for StoreSource<'_> {
    fn get(&mut self, key: &Key, kind: KeyKind) -> Option<Vec<u8>> {
        self.0
            .get(Origin::Remote, kind_of(kind), &RoutingKey(key.0))
            .ok()
            .flatten()
            .map(|f| f.block)
    }
}

impl PeerManager {
    /// Start the manager: accept links on `listener` until `shutdown`.
    #[must_use]
    pub fn start(setup: PeerSetup, listener: TcpListener, shutdown: CancellationToken) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (link_tx, link_rx) = mpsc::channel(64);
        tokio::spawn(accept_loop(
            listener,
            setup.clone(),
            link_tx.clone(),
            shutdown.clone(),
        ));
        let connected = Arc::new(AtomicUsize::new(0));
        tokio::spawn(drive(
            setup,
            cmd_rx,
            link_tx,
            link_rx,
            shutdown,
            connected.clone(),
        ));
        PeerManager {
            cmd: cmd_tx,
            connected,
        }
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

    /// Fetch a block through the network (the store is looked at first).
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn fetch(&self, key: Key, kind: KeyKind) -> Result<RequestOutcome, LinkError> {
        self.fetch_with(key, kind, true).await
    }

    /// Fetch a block through the network without looking at the local
    /// store (FCP `IgnoreDS`).
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn fetch_from_network(
        &self,
        key: Key,
        kind: KeyKind,
    ) -> Result<RequestOutcome, LinkError> {
        self.fetch_with(key, kind, false).await
    }

    async fn fetch_with(
        &self,
        key: Key,
        kind: KeyKind,
        local_first: bool,
    ) -> Result<RequestOutcome, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Fetch(key, kind, local_first, tx))
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

    /// Connect to a node (a friend, or a seed).
    ///
    /// # Errors
    /// [`LinkError::Closed`] if the manager has stopped.
    pub async fn connect(&self, noderef: NodeRef) -> Result<(), LinkError> {
        self.cmd
            .send(Cmd::Connect(noderef))
            .await
            .map_err(|_| LinkError::Closed)
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

async fn accept_loop(
    listener: TcpListener,
    setup: PeerSetup,
    links: mpsc::Sender<Link>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let setup = setup.clone();
        let links = links.clone();
        tokio::spawn(async move {
            match Link::accept(stream, &setup.keys, &setup.link, setup.bandwidth.clone()).await {
                Ok(l) => {
                    let _ = links.send(l).await;
                }
                Err(e) => tracing::debug!(error = %e, "inbound handshake failed"),
            }
        });
    }
}

fn spawn_connect(setup: &PeerSetup, noderef: NodeRef, links: mpsc::Sender<Link>) {
    let setup = setup.clone();
    tokio::spawn(async move {
        match Link::connect_noderef(&noderef, &setup.keys, &setup.link, setup.bandwidth.clone())
            .await
        {
            Ok(l) => {
                let _ = links.send(l).await;
            }
            Err(e) => tracing::debug!(error = %e, "outbound link failed"),
        }
    });
}

struct PeerState {
    sender: LinkSender,
    remote: [u8; 32],
    /// Added to the routing node (after the hello).
    routed: bool,
}

enum Waiter {
    Fetch(Key, KeyKind, oneshot::Sender<RequestOutcome>),
    Insert(oneshot::Sender<InsertOutcome>),
}

#[allow(clippy::too_many_lines)]
async fn drive(
    setup: PeerSetup,
    mut cmds: mpsc::Receiver<Cmd>,
    link_tx: mpsc::Sender<Link>,
    mut links: mpsc::Receiver<Link>,
    shutdown: CancellationToken,
    connected: Arc<AtomicUsize>,
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
    let mut peers: BTreeMap<PeerId, PeerState> = BTreeMap::new();
    let mut by_key: HashMap<[u8; 32], PeerId> = HashMap::new();
    let mut waiters: HashMap<RequestId, Waiter> = HashMap::new();
    let mut next_peer = 1u64;
    let store = setup.store.clone();

    loop {
        let timer = node
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(start + std::time::Duration::from_millis(t)));
        tokio::select! {
            () = shutdown.cancelled() => break,
            c = cmds.recv() => {
                let Some(c) = c else { break };
                match c {
                    Cmd::Fetch(key, kind, local_first, reply) => {
                        let local = if local_first {
                            store.get(Origin::Local, kind_of(kind), &RoutingKey(key.0)).ok().flatten()
                        } else {
                            None
                        };
                        if let Some(f) = local {
                            let _ = reply.send(RequestOutcome::Found(f.block));
                        } else {
                            let id = node.handle_local_request(now(), LocalRequest::Fetch { key, kind }, &mut rng);
                            waiters.insert(id, Waiter::Fetch(key, kind, reply));
                        }
                    }
                    Cmd::Insert(key, kind, block, reply) => {
                        // The private client cache, never the shared spaces.
                        let _ = store.put(Space::Client, kind_of(kind), &RoutingKey(key.0), &block);
                        let id = node.handle_local_request(now(), LocalRequest::Insert { key, kind, block }, &mut rng);
                        waiters.insert(id, Waiter::Insert(reply));
                    }
                    Cmd::Connect(r) => spawn_connect(&setup, r, link_tx.clone()),
                    Cmd::PeerCount(reply) => { let _ = reply.send(node.peer_count()); }
                }
            }
            l = links.recv() => {
                let Some(link) = l else { break };
                let remote = link.remote_static();
                if by_key.contains_key(&remote) || remote == setup.keys.static_public() {
                    link.close();
                    continue;
                }
                let pid = PeerId(next_peer);
                next_peer += 1;
                let (sender, mut rx) = link.into_parts();
                // Hello: our location.
                let _ = sender.try_send(Message::LocationChanged { location });
                let ev = ev_tx.clone();
                tokio::spawn(async move {
                    while let Some(e) = rx.recv().await {
                        if ev.send((pid, e)).await.is_err() {
                            break;
                        }
                    }
                });
                by_key.insert(remote, pid);
                peers.insert(pid, PeerState { sender, remote, routed: false });
                tracing::debug!(peer = pid.0, "link up");
            }
            e = events.recv() => {
                let Some((pid, e)) = e else { break };
                match e {
                    LinkEvent::Message(m) => {
                        let Some(p) = peers.get_mut(&pid) else { continue };
                        if !p.routed {
                            if let Message::LocationChanged { location: l } = m {
                                p.routed = true;
                                let ok = if setup.opennet {
                                    node.accept_opennet_peer(now(), pid, l, &mut rng)
                                } else {
                                    node.add_peer(now(), pid, l, &mut rng);
                                    true
                                };
                                tracing::debug!(peer = pid.0, accepted = ok, "hello");
                                if !ok {
                                    p.sender.close();
                                } else if setup.opennet && node.peer_count() == 1 {
                                    // The first peer (a seed, or the first
                                    // node back after losing them all):
                                    // announce at once so nodes near our
                                    // location connect to us. Later
                                    // announcements are the routing core's
                                    // (while under-connected, backing off).
                                    node.handle_local_request(now(), LocalRequest::Announce, &mut rng);
                                }
                            } else {
                                tracing::debug!(peer = pid.0, "message before the hello dropped");
                            }
                        } else {
                            tracing::trace!(peer = pid.0, msg = m.name(), id = ?m.id(), "recv");
                            node.handle_message(now(), pid, m, &mut StoreSource(store.as_ref()), &mut rng);
                        }
                        // No `continue` here: the actions below (and the
                        // peer count) must follow the hello at once.
                    }
                    LinkEvent::Closed(err) => {
                        tracing::debug!(peer = pid.0, error = %err, "link down");
                        if let Some(p) = peers.remove(&pid) {
                            by_key.remove(&p.remote);
                            node.remove_peer(now(), pid, &mut rng);
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
                    if let Some(p) = peers.get(&to) {
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
                    if let Err(e) = store.put(space, kind_of(kind), &RoutingKey(key.0), &block) {
                        tracing::warn!(error = %e, "could not store a block");
                    }
                }
                Action::RequestDone { id, outcome } => {
                    if let Some(Waiter::Fetch(key, kind, reply)) = waiters.remove(&id) {
                        if let RequestOutcome::Found(b) = &outcome {
                            let _ = store.put(Space::Client, kind_of(kind), &RoutingKey(key.0), b);
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
                    Ok(r) if !by_key.contains_key(&r.static_key) => {
                        spawn_connect(&setup, r, link_tx.clone());
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "bad noderef in a connect offer"),
                },
                Action::Disconnect { peer } => {
                    if let Some(p) = peers.remove(&peer) {
                        by_key.remove(&p.remote);
                        p.sender.close();
                    }
                }
                Action::LocationChanged { location: l } => {
                    location = l;
                    for p in peers.values() {
                        let _ = p.sender.try_send(Message::LocationChanged { location: l });
                    }
                }
            }
        }
        connected.store(node.peer_count(), Ordering::Relaxed);
    }
    connected.store(0, Ordering::Relaxed);
    for p in peers.values() {
        p.sender.close();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn node(secret: u8, location: u64) -> (PeerManager, NodeRef, CancellationToken) {
        let keys = NodeKeys::from_static_secret([secret; 32]);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = NodeRef::new(&keys, vec![l.local_addr().unwrap()], Some(location));
        let store: Arc<dyn BlockStore> = Arc::new(lichen_store::MemoryStore::new(
            &lichen_store::StoreConfig::new(
                lichen_store::Budgets {
                    store: 1 << 24,
                    cache: 1 << 24,
                    client: 1 << 24,
                },
                location,
                lichen_store::StoreSecret::from_bytes([secret; 32]),
            ),
        ));
        let setup = PeerSetup {
            noderef: Some(r.to_bytes(&keys)),
            keys,
            location: Location(location),
            store,
            link: LinkConfig::default(),
            bandwidth: Arc::new(Bandwidth::unlimited()),
            // Three nodes: every hop caches, so the result does not depend
            // on the random HTL decisions (the anonymity rule is tested in
            // the routing crate).
            routing: lichen_routing::Config {
                cache_max_htl: 18,
                ..lichen_routing::Config::default()
            },
            opennet: false,
        };
        let stop = CancellationToken::new();
        (PeerManager::start(setup, l, stop.clone()), r, stop)
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

    #[tokio::test]
    async fn a_block_inserted_on_a_is_fetched_on_c_through_b() {
        let (a, _ra, sa) = node(1, 1 << 62).await;
        let (b, rb, sb) = node(2, 2 << 62).await;
        let (c, _rc, sc) = node(3, 3 << 62).await;
        a.connect(rb.clone()).await.unwrap();
        c.connect(rb).await.unwrap();
        wait_peers(&a, 1).await;
        wait_peers(&b, 2).await;
        wait_peers(&c, 1).await;
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
        sa.cancel();
        sb.cancel();
        sc.cancel();
    }
}
