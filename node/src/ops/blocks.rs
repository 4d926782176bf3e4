//! The node's block source and sink for its own user: the private client
//! cache and the store, and the network when the node has peers.
//!
//! Local inserts and fetches touch only [`Space::Client`] when writing:
//! nothing this node's user inserted or fetched lands in the shared store
//! or cache (`docs/design.md` §5), so a neighbour probing this node's
//! store learns nothing about its user.

use crate::node::{Network, Node};
use lichen_client::{BlockSink, BlockSource, SinkError, SourceError};
use lichen_crypto::{BlockKind, RoutingKey};
use lichen_routing::{InsertOutcome, Key, KeyKind, RequestOutcome};
use lichen_store::{Origin, PutOutcome, Space};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Blocks as this node's own user sees them: the private client cache,
/// then the store and cache. Writes go to the client cache only.
#[derive(Debug, Clone)]
pub(crate) struct LocalBlocks {
    node: Arc<Node>,
    /// Don't read the local client cache and stores (FCP `IgnoreDS`).
    pub(super) ignore_ds: bool,
    /// Only the local client cache and stores, not the network (FCP
    /// `DSOnly`).
    pub(super) ds_only: bool,
    /// Keep blocks fetched from the network in the client cache (FCP
    /// `WriteToClientCache`).
    pub(super) keep: bool,
    /// Blocks of this insert that are only in the client cache (no peers,
    /// or the network refused them): pushed later (`crate::jobs::push`).
    deferred: Option<Arc<Deferred>>,
}

/// The blocks of one insert that did not reach the network.
#[derive(Debug)]
pub(crate) struct Deferred {
    node: Arc<Node>,
    inner: std::sync::Mutex<DeferredInner>,
}

#[derive(Debug, Default)]
struct DeferredInner {
    blocks: Vec<(BlockKind, RoutingKey)>,
    seen: std::collections::HashSet<[u8; 32]>,
    bytes: u64,
    overflow: bool,
}

impl Deferred {
    pub(super) fn new(node: Arc<Node>) -> Self {
        Deferred {
            node,
            inner: std::sync::Mutex::default(),
        }
    }

    /// Add a block; `false` if the blocks waiting to be pushed (earlier
    /// inserts', running inserts', this one's) no longer fit the client
    /// cache: they would evict each other before being pushed.
    fn add(&self, kind: BlockKind, key: RoutingKey) -> bool {
        let Ok(mut d) = self.inner.lock() else {
            return false;
        };
        if !d.seen.insert(key.0) {
            return true;
        }
        let len = kind.block_len() as u64;
        d.bytes += len;
        d.blocks.push((kind, key));
        let pushes = &self.node.pushes;
        let in_flight = pushes.in_flight.fetch_add(len, Ordering::Relaxed) + len;
        if pushes.pending_bytes() + in_flight > self.node.config.store.client_cache_bytes {
            d.overflow = true;
        }
        !d.overflow
    }

    pub(super) fn overflowed(&self) -> bool {
        self.inner.lock().map(|d| d.overflow).unwrap_or(false)
    }

    /// Bytes of the blocks recorded so far.
    pub(super) fn bytes(&self) -> u64 {
        self.inner.lock().map(|d| d.bytes).unwrap_or(0)
    }

    pub(super) fn take(&self) -> Vec<(BlockKind, RoutingKey)> {
        self.inner
            .lock()
            .map(|mut d| std::mem::take(&mut d.blocks))
            .unwrap_or_default()
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let bytes = self.inner.lock().map(|d| d.bytes).unwrap_or(0);
        self.node
            .pushes
            .in_flight
            .fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl LocalBlocks {
    /// Blocks of `node`.
    #[must_use]
    pub(crate) fn new(node: Arc<Node>) -> Self {
        LocalBlocks {
            node,
            ignore_ds: false,
            ds_only: false,
            keep: true,
            deferred: None,
        }
    }

    /// The same blocks, recording in `deferred` what an insert leaves only
    /// in the client cache.
    pub(super) fn tracking(node: Arc<Node>, deferred: Arc<Deferred>) -> Self {
        LocalBlocks {
            deferred: Some(deferred),
            ..LocalBlocks::new(node)
        }
    }

    /// Keep a block that did not reach the network for the push task.
    fn defer(&self, kind: BlockKind, key: RoutingKey) -> Result<(), SinkError> {
        match &self.deferred {
            Some(d) if !d.add(kind, key) => Err(SinkError::Other(
                "the insert does not fit in the client cache".into(),
            )),
            _ => Ok(()),
        }
    }
}

impl BlockSource for LocalBlocks {
    async fn fetch(&self, kind: BlockKind, key: RoutingKey) -> Result<Vec<u8>, SourceError> {
        if !self.ignore_ds {
            match self.node.store.get(Origin::Local, kind, &key) {
                Ok(Some(found)) => return Ok(found.block),
                Ok(None) => {}
                Err(e) => return Err(SourceError::Other(e.to_string())),
            }
        }
        if self.ds_only {
            return Err(SourceError::NotFound);
        }
        let Some(net) = self.node.network() else {
            // Without peers the network cannot be asked: with IgnoreDS
            // nothing was looked at, so "not found" would claim too much.
            return Err(if self.ignore_ds {
                SourceError::RouteNotFound
            } else {
                SourceError::NotFound
            });
        };
        // The peer manager puts a found block in the private client cache
        // only: nothing fetched for this node's user enters the shared
        // store or cache.
        let outcome = net
            .fetch(Key(key.0), KeyKind::from(kind), !self.ignore_ds, self.keep)
            .await;
        match outcome {
            Ok(RequestOutcome::Found(block)) => Ok(block),
            Ok(RequestOutcome::NotFound | RequestOutcome::TimedOut) => Err(SourceError::NotFound),
            Ok(RequestOutcome::RouteNotFound) => Err(SourceError::RouteNotFound),
            Ok(RequestOutcome::RecentlyFailed) => Err(SourceError::RecentlyFailed),
            Ok(RequestOutcome::Overloaded) => Err(SourceError::Overload),
            Err(_) => Err(SourceError::NotFound),
        }
    }

    /// The store verifies every block it reads.
    fn has_local(&self, kind: BlockKind, key: &RoutingKey) -> bool {
        !self.ignore_ds && self.node.store.contains(Origin::Local, kind, key)
    }

    fn fetch_local(&self, kind: BlockKind, key: &RoutingKey) -> Option<Vec<u8>> {
        if self.ignore_ds {
            return None;
        }
        // An error is reported by the `fetch` the client falls back to.
        // CHKs are not re-hashed: the client opens them with their AEAD
        // key (see `BlockSource::fetch_local`), and a block that does not
        // open sends it to `fetch`, which verifies (and deletes a bad one).
        let found = match kind {
            BlockKind::Chk => self.node.store.unchecked().read(Origin::Local, kind, key),
            BlockKind::Ssk => self.node.store.get(Origin::Local, kind, key),
        };
        Some(found.ok()??.block)
    }

    /// The client's random pause before a request: only when the request
    /// may go to the network (the client asks none for a block held
    /// locally).
    async fn pause(&self, delay: std::time::Duration) {
        if !self.ds_only && !delay.is_zero() && self.node.network().is_some() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// Tries of a network insert the routing node refused as overloaded or
/// that ended stored nowhere.
const INSERT_TRIES: u32 = 4;

impl LocalBlocks {
    /// Keep a block the client library has just encoded in the private
    /// client cache (trusted: its routing key was computed from it).
    fn store_local(
        &self,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Result<(), SinkError> {
        match self
            .node
            .store
            .unchecked()
            .put_trusted(Space::Client, kind, key, block)
        {
            Ok(PutOutcome::Collision) => Err(SinkError::Collision),
            Ok(PutOutcome::NoRoom) => Err(SinkError::Other(
                "the client cache is smaller than one block".into(),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(SinkError::Other(e.to_string())),
        }
    }
}

impl BlockSink for LocalBlocks {
    /// The client's random pause before a put: only with peers (without,
    /// the block stays local).
    async fn pause(&self, delay: std::time::Duration) {
        if !delay.is_zero() && self.node.network().is_some() {
            tokio::time::sleep(delay).await;
        }
    }

    /// With no peers, the local copy is the whole put.
    fn put_local(
        &self,
        kind: BlockKind,
        key: &RoutingKey,
        block: &[u8],
    ) -> Option<Result<(), SinkError>> {
        if self.node.network().is_some() {
            return None;
        }
        // Kept locally and recorded for the push task, exactly as `put`
        // does without peers (the record is what makes it reach the
        // network later).
        Some(
            self.store_local(kind, key, block)
                .and_then(|()| self.defer(kind, *key)),
        )
    }

    /// With no peers, a segment is one store batch.
    fn put_local_batch(
        &self,
        kind: BlockKind,
        blocks: &[(RoutingKey, Vec<u8>)],
    ) -> Option<Result<(), SinkError>> {
        if kind != BlockKind::Chk || self.node.network().is_some() {
            return None;
        }
        let r = match self
            .node
            .store
            .unchecked()
            .put_trusted_chk_batch(Space::Client, blocks)
        {
            Ok(outcomes) if outcomes.contains(&PutOutcome::NoRoom) => Err(SinkError::Other(
                "the client cache is smaller than one block".into(),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(SinkError::Other(e.to_string())),
        };
        // Recorded for the push task, as every block stored without peers.
        Some(r.and_then(|()| {
            blocks
                .iter()
                .try_for_each(|(key, _)| self.defer(kind, *key))
        }))
    }

    async fn put(&self, kind: BlockKind, key: RoutingKey, block: Vec<u8>) -> Result<(), SinkError> {
        // The local copy first: a failed network insert never loses it.
        self.store_local(kind, &key, &block)?;
        let Some(net) = self.node.network() else {
            return self.defer(kind, key);
        };
        // Only nodes that receive an insert at this HTL or below keep it.
        let store_htl = self.node.insert_store_htl();
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = net
                .insert(Key(key.0), KeyKind::from(kind), block.clone())
                .await;
            return match outcome {
                Ok(InsertOutcome::Success) => Ok(()),
                // An insert that ran out of peers at or below the storing
                // HTL is stored on the nodes it reached there: in a small
                // network that is the normal end.
                Ok(InsertOutcome::RouteNotFound { htl }) if htl <= store_htl => Ok(()),
                Ok(InsertOutcome::Collision(_)) => Err(SinkError::Collision),
                // Refused as overloaded, or ended above the storing HTL
                // (stored nowhere): tried again.
                Ok(InsertOutcome::Overloaded | InsertOutcome::RouteNotFound { .. })
                    if tries < INSERT_TRIES =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100 << tries)).await;
                    continue;
                }
                // The local copy stays; when the insert is tracked, the
                // push task sends it later.
                Ok(InsertOutcome::Overloaded | InsertOutcome::RouteNotFound { .. })
                    if self.deferred.is_some() =>
                {
                    self.defer(kind, key)
                }
                Ok(InsertOutcome::Overloaded) => Err(SinkError::Overload),
                Ok(InsertOutcome::RouteNotFound { .. }) => Err(SinkError::RouteNotFound),
                Ok(InsertOutcome::TimedOut) if self.deferred.is_some() => self.defer(kind, key),
                Ok(InsertOutcome::TimedOut) => {
                    Err(SinkError::Other("the network insert timed out".into()))
                }
                Ok(InsertOutcome::InvalidBlock) => {
                    Err(SinkError::Other("the block does not verify".into()))
                }
                // The manager stopped (shutdown): the local copy stays.
                Err(_) => self.defer(kind, key),
            };
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::peers::{self, PeerManager};
    use lichen_link as net;
    use std::path::Path;
    use std::time::Duration;

    /// A node opened in `dir` and, when `with_peer`, a bare peer (empty
    /// memory store) linked to it.
    async fn node_with_peer(dir: &Path) -> (Arc<Node>, tokio_util::sync::CancellationToken) {
        let config = crate::config::Config {
            data_dir: Some(dir.to_path_buf()),
            ..crate::config::Config::default()
        };
        let node = Node::open(config).unwrap();
        let stop = node.shutdown.clone();
        let routing = lichen_routing::Config {
            opennet: false,
            swapping: false,
            ..lichen_routing::Config::default()
        };
        let setup =
            |keys: net::NodeKeys, location: u64, store: Arc<dyn lichen_store::BlockStore>| {
                peers::PeerSetup {
                    noderef: None,
                    keys,
                    location: lichen_routing::Location(location),
                    store,
                    link: net::LinkConfig::default(),
                    bandwidth: Arc::new(net::Bandwidth::unlimited()),
                    routing: routing.clone(),
                    opennet: false,
                    peer_dir: None,
                    vault: crate::vault::Vault::new(rand::random()),
                    max_remembered: 0,
                    seeds: Vec::new(),
                    loopback_sources: false,
                    auto_address: false,
                    port_mapping: None,
                    // Two-node and line networks: no room for tunnels (routing
                    // alone is under test).
                    tunnels: lichen_routing::TunnelConfig {
                        hops: 0,
                        ..lichen_routing::TunnelConfig::default()
                    },
                }
            };
        // The bare peer.
        let pkeys = net::NodeKeys::from_static_secret([7; 32]);
        let pl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pref = net::NodeRef::new(&pkeys, vec![pl.local_addr().unwrap()], Some(1 << 63));
        let pstore: Arc<dyn lichen_store::BlockStore> = Arc::new(lichen_store::MemoryStore::new(
            &lichen_store::StoreConfig::new(
                lichen_store::Budgets {
                    store: 1 << 24,
                    cache: 1 << 24,
                    client: 1 << 24,
                },
                1 << 63,
                lichen_store::StoreSecret::from_bytes([7; 32]),
            ),
        ));
        let pbytes = pref.to_bytes(&pkeys);
        let peer = PeerManager::start(setup(pkeys, 1 << 63, pstore), pl, stop.clone());
        // The node's own manager.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let keys = node.identity.link_keys();
        let mref = net::NodeRef::new(&keys, vec![l.local_addr().unwrap()], Some(1 << 62));
        let mbytes = mref.to_bytes(&keys);
        let m = PeerManager::start(
            setup(keys, node.identity.location, node.store.clone()),
            l,
            stop.clone(),
        );
        // Darknet: friends only, both ways.
        peer.add_friend(mref, mbytes.into()).await.unwrap();
        m.add_friend(pref, pbytes.into()).await.unwrap();
        node.peers.set(m).unwrap();
        for _ in 0..250 {
            if node.network().is_some() {
                return (node, stop);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the peer did not connect");
    }

    #[tokio::test]
    async fn ignore_ds_skips_the_local_copy_and_asks_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let (node, stop) = node_with_peer(dir.path()).await;
        // A block only this node has (in its client cache).
        let (chk, block) =
            lichen_crypto::chk::encode(b"only here", lichen_crypto::DataFlags::default()).unwrap();
        let key = chk.routing_key;
        node.store
            .put(Space::Client, BlockKind::Chk, &key, &block)
            .unwrap();
        let local = LocalBlocks::new(node.clone());
        assert_eq!(local.fetch(BlockKind::Chk, key).await.unwrap(), block);
        let mut ignore = LocalBlocks::new(node.clone());
        ignore.ignore_ds = true;
        let r = tokio::time::timeout(Duration::from_secs(30), ignore.fetch(BlockKind::Chk, key))
            .await
            .unwrap();
        assert!(r.is_err(), "IgnoreDS answered from the local store");
        let mut ds_only = LocalBlocks::new(node.clone());
        ds_only.ds_only = true;
        assert!(ds_only.fetch(BlockKind::Chk, key).await.is_ok());
        stop.cancel();
    }

    #[tokio::test]
    async fn without_peers_ignore_ds_is_route_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: Some(dir.path().to_path_buf()),
            ..crate::config::Config::default()
        };
        let node = Node::open(config).unwrap();
        let mut ignore = LocalBlocks::new(node.clone());
        ignore.ignore_ds = true;
        assert!(matches!(
            ignore.fetch(BlockKind::Chk, RoutingKey([1; 32])).await,
            Err(SourceError::RouteNotFound)
        ));
        assert!(matches!(
            LocalBlocks::new(node)
                .fetch(BlockKind::Chk, RoutingKey([1; 32]))
                .await,
            Err(SourceError::NotFound)
        ));
    }

    #[tokio::test]
    async fn an_insert_stored_nowhere_is_deferred_or_reported_not_taken_as_done() {
        // Two nodes: the peer gets the insert at the top HTL and has no one
        // to pass it on to, so it ends "route not found" above the storing
        // HTL: no node kept it.
        let dir = tempfile::tempdir().unwrap();
        let (node, stop) = node_with_peer(dir.path()).await;
        let (chk, block) =
            lichen_crypto::chk::encode(b"nowhere", lichen_crypto::DataFlags::default()).unwrap();
        let key = chk.routing_key;
        let plain = LocalBlocks::new(node.clone());
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            plain.put(BlockKind::Chk, key, block.clone()),
        )
        .await
        .unwrap();
        assert!(matches!(r, Err(SinkError::RouteNotFound)), "{r:?}");
        // A tracked insert keeps it for the push task instead.
        let deferred = Arc::new(Deferred::new(node.clone()));
        let tracked = LocalBlocks::tracking(node.clone(), deferred.clone());
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            tracked.put(BlockKind::Chk, key, block),
        )
        .await
        .unwrap();
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(deferred.take(), vec![(BlockKind::Chk, key)]);
        stop.cancel();
    }

    #[test]
    fn a_test_network_stores_inserts_at_every_htl_so_none_is_stored_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let open = |test_network: bool| {
            let mut config = crate::config::Config {
                data_dir: Some(dir.path().join(format!("n{test_network}"))),
                ..crate::config::Config::default()
            };
            config.network.test_network = test_network;
            Node::open(config).unwrap()
        };
        let top = lichen_routing::Config::default().max_htl;
        assert_eq!(open(false).insert_store_htl(), top - 3);
        assert_eq!(open(true).insert_store_htl(), top);
    }
}
