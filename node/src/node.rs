//! The node's shared context: configuration, identity, store, request
//! queue, the table of inserts waiting to be pushed, the network and the
//! clock.
//! The front ends (FCP server, gateway, peer driver), the jobs and the
//! operations all take it; it owns none of their parts (the FCP server
//! owns its connections' hub).
//!
//! The one import above this layer is the peer manager's type (the
//! `peers` field, which the peer driver's FCP commands read): the
//! operations and jobs reach the network only through [`Network`].

use crate::config::Config;
use crate::identity::Identity;
use crate::peers::PeerManager;
use crate::pushes::Pushes;
use crate::requests::Requests;
use crate::util::clock::{Clock, SystemClock};
use lichen_routing::{InsertOutcome, Key, KeyKind, RequestOutcome};
use lichen_store::{BlockStore, Budgets, OpenOutcome, SledStore, StoreConfig, StoreSecret};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

pub(crate) use crate::util::clock::now_ms;

/// The network as operations and jobs use it: fetch and insert one block.
/// The peer manager implements it.
pub(crate) trait Network: Sync {
    /// Fetch a block for this node's user: `local_first` looks in the
    /// stores first (false: FCP `IgnoreDS`), `keep` keeps a block found in
    /// the network in the private client cache. `Err` when the network
    /// has stopped.
    fn fetch(
        &self,
        key: Key,
        kind: KeyKind,
        local_first: bool,
        keep: bool,
    ) -> impl Future<Output = Result<RequestOutcome, ()>> + Send;

    /// Insert a block into the network. `Err` when the network has stopped.
    fn insert(
        &self,
        key: Key,
        kind: KeyKind,
        block: Vec<u8>,
    ) -> impl Future<Output = Result<InsertOutcome, ()>> + Send;
}

impl Network for PeerManager {
    async fn fetch(
        &self,
        key: Key,
        kind: KeyKind,
        local_first: bool,
        keep: bool,
    ) -> Result<RequestOutcome, ()> {
        let opts = crate::peers::FetchOpts { local_first, keep };
        self.fetch_with(key, kind, opts).await.map_err(|_| ())
    }

    async fn insert(&self, key: Key, kind: KeyKind, block: Vec<u8>) -> Result<InsertOutcome, ()> {
        PeerManager::insert(self, key, kind, block)
            .await
            .map_err(|_| ())
    }
}

/// Everything the node's services share.
#[derive(Debug)]
pub struct Node {
    /// Effective configuration.
    pub(crate) config: Config,
    /// Data directory.
    pub(crate) data_dir: PathBuf,
    /// Node identity.
    pub(crate) identity: Identity,
    /// The datastore.
    pub(crate) store: Arc<dyn BlockStore>,
    /// FCP requests (connection, reboot and forever persistence).
    pub(crate) requests: Requests,
    /// Inserts made without peers, waiting to be pushed into the network.
    pub(crate) pushes: Pushes,
    /// The node's wall clock.
    pub(crate) clock: Arc<dyn Clock>,
    /// When the node started (ms since epoch).
    pub(crate) started_ms: u64,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// The peer manager, once the network is started (`run`); unset for a
    /// node without a network (tests that open a node directly).
    pub(crate) peers: OnceLock<PeerManager>,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Identity problem.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Store problem.
    #[error("datastore: {0}")]
    Store(#[from] lichen_store::StoreError),
    /// Data directory or other I/O problem.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl Node {
    /// Open everything in the data directory: identity (created on first
    /// start), store (moved aside and rebuilt if corrupt), persistent
    /// requests.
    ///
    /// # Errors
    /// [`StartError`] naming what failed.
    pub fn open(config: Config) -> Result<Arc<Node>, StartError> {
        let data_dir = config.data_dir()?;
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::Io {
            what: format!("cannot create data directory {}", data_dir.display()),
            source,
        })?;
        let (identity, created) = Identity::load_or_create(&data_dir)?;
        if created {
            tracing::info!("created a new node identity");
        }
        let store = open_store(&data_dir, &config, &identity)?;
        let tmp = data_dir.join("tmp");
        // Leftover spool files from a previous run belong to nobody.
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|source| StartError::Io {
            what: format!("cannot create {}", tmp.display()),
            source,
        })?;
        let requests = Requests::open(&data_dir).map_err(|source| StartError::Io {
            what: "cannot open the persistent request queue".into(),
            source,
        })?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let pushes = Pushes::open_with(&data_dir, identity.store_secret, clock.clone()).map_err(
            |source| StartError::Io {
                what: "cannot open the list of inserts waiting to be pushed".into(),
                source,
            },
        )?;
        Ok(Arc::new(Node {
            config,
            data_dir,
            identity,
            store,
            requests,
            pushes,
            started_ms: clock.now_ms(),
            clock,
            shutdown: CancellationToken::new(),
            peers: OnceLock::new(),
        }))
    }

    /// Peers connected now (0 without a network).
    #[must_use]
    pub(crate) fn peer_count(&self) -> usize {
        self.peers.get().map_or(0, PeerManager::connected)
    }

    /// The network, when it is started and has peers.
    #[must_use]
    pub(crate) fn network(&self) -> Option<&(impl Network + '_)> {
        self.peers.get().filter(|p| p.connected() > 0)
    }

    /// Directory for temporary spool files (emptied at start).
    #[must_use]
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// A fresh temporary file path.
    #[must_use]
    pub(crate) fn tmp_path(&self, prefix: &str) -> PathBuf {
        let n: u64 = rand::random();
        self.tmp_dir().join(format!("{prefix}-{n:016x}"))
    }
}

fn open_store(
    data_dir: &Path,
    config: &Config,
    identity: &Identity,
) -> Result<Arc<dyn BlockStore>, StartError> {
    let budgets = Budgets {
        store: config.store.store_bytes,
        cache: config.store.cache_bytes,
        client: config.store.client_cache_bytes,
    };
    let mut sc = StoreConfig::new(
        budgets,
        identity.location,
        StoreSecret::from_bytes(identity.store_secret),
    );
    // Blocks are read once per request and verified anyway; the OS page
    // cache serves repeats. A small sled cache keeps the node's RSS low.
    sc.sled_cache_bytes = 16 << 20;
    let (store, report) = SledStore::open(&data_dir.join("store"), &sc)?;
    if let OpenOutcome::Recreated { .. } = report.outcome {
        tracing::warn!("the datastore was corrupt: moved it aside and started an empty one (it is a cache; identity and requests are kept)");
    }
    Ok(Arc::new(store))
}
